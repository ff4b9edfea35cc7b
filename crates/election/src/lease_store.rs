//! The store an elector's lease talks through: the caller's store, plus a
//! keep-alive round-trip measurement and an "orphan" switch that lets a
//! lease lapse instead of being revoked (release-on-cancel turned off).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use drover_store::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, Store, StoreError, Txn, TxnResponse, Watch, WatchStream,
};
use tokio::time::Instant;

use crate::metrics::ElectionMetrics;

#[derive(Clone)]
pub(crate) struct LeaseStore<S: Store> {
    inner: S,
    metrics: Arc<dyn ElectionMetrics>,
    label: Arc<str>,
    orphaned: Arc<AtomicBool>,
}

impl<S: Store> std::fmt::Debug for LeaseStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseStore")
            .field("backend", &self.inner.backend_name())
            .field("orphaned", &self.orphaned.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S: Store> LeaseStore<S> {
    /// A wrapper for one lease (each lease gets its own orphan switch).
    pub(crate) fn new(inner: S, metrics: Arc<dyn ElectionMetrics>, label: Arc<str>) -> Self {
        LeaseStore {
            inner,
            metrics,
            label,
            orphaned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on, keep-alives report the lease gone and revokes do
    /// nothing: the lease expires in the store after its TTL.
    pub(crate) fn orphan(&self) {
        self.orphaned.store(true, Ordering::SeqCst);
    }
}

impl<S: Store> Store for LeaseStore<S> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    fn get(&self, req: Get) -> impl Future<Output = Result<GetResponse>> + Send {
        self.inner.get(req)
    }

    fn put(&self, req: Put) -> impl Future<Output = Result<PutResponse>> + Send {
        self.inner.put(req)
    }

    fn delete(&self, req: Delete) -> impl Future<Output = Result<DeleteResponse>> + Send {
        self.inner.delete(req)
    }

    fn txn(&self, req: Txn) -> impl Future<Output = Result<TxnResponse>> + Send {
        self.inner.txn(req)
    }

    fn watch(&self, req: Watch) -> impl Future<Output = Result<WatchStream>> + Send {
        self.inner.watch(req)
    }

    fn lease_grant(&self, ttl_secs: i64) -> impl Future<Output = Result<LeaseGrant>> + Send {
        self.inner.lease_grant(ttl_secs)
    }

    fn lease_keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<i64>> + Send {
        let this = self.clone();
        async move {
            if this.orphaned.load(Ordering::SeqCst) {
                return Err(StoreError::LeaseNotFound(id));
            }
            let sent = Instant::now();
            let result = this.inner.lease_keep_alive(id).await;
            if result.is_ok() {
                this.metrics.keep_alive_rtt(&this.label, sent.elapsed());
            }
            result
        }
    }

    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        async move {
            if this.orphaned.load(Ordering::SeqCst) {
                return Ok(());
            }
            this.inner.lease_revoke(id).await
        }
    }

    fn lease_time_to_live(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<LeaseTimeToLive>> + Send {
        self.inner.lease_time_to_live(id)
    }

    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send {
        self.inner.compact(revision)
    }

    fn current_revision(&self) -> impl Future<Output = Result<Revision>> + Send {
        self.inner.current_revision()
    }
}
