use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, StoreError, StoreStatus, Txn, TxnResponse, Watch, WatchBatch,
};

/// The store port. Implemented by the embedded backend and by the etcd
/// adapter; every controller is generic over it.
///
/// Semantics are etcd v3's (see the crate docs). Every method validates its
/// request first and changes nothing when it returns an error.
pub trait Store: Clone + Send + Sync + 'static {
    /// A short name for logs and `GetInfo` ("embedded", "etcd").
    fn backend_name(&self) -> &'static str;

    /// Range read.
    fn get(&self, req: Get) -> impl Future<Output = Result<GetResponse>> + Send;

    /// Put one key.
    fn put(&self, req: Put) -> impl Future<Output = Result<PutResponse>> + Send;

    /// Delete one key or a range.
    fn delete(&self, req: Delete) -> impl Future<Output = Result<DeleteResponse>> + Send;

    /// Atomic compare-and-then-ops.
    fn txn(&self, req: Txn) -> impl Future<Output = Result<TxnResponse>> + Send;

    /// Watch a key or range from a revision. A start revision below the
    /// compaction point yields one `Err(StoreError::Compacted)` item, then the
    /// stream ends; callers re-list and watch again.
    fn watch(&self, req: Watch) -> impl Future<Output = Result<WatchStream>> + Send;

    /// Grant a lease with a TTL in seconds.
    fn lease_grant(&self, ttl_secs: i64) -> impl Future<Output = Result<LeaseGrant>> + Send;

    /// Grant a lease with a client-chosen id (etcd's `LeaseGrant` with an
    /// `ID`): 0 lets the store choose (as [`Store::lease_grant`]); an id in
    /// use is [`StoreError::LeaseExists`]. As etcd, any other id, negative
    /// ones included, is accepted.
    fn lease_grant_with_id(
        &self,
        id: LeaseId,
        ttl_secs: i64,
    ) -> impl Future<Output = Result<LeaseGrant>> + Send;

    /// The ids of every live lease (etcd's `LeaseLeases`), in no particular
    /// order.
    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseId>>> + Send;

    /// Revision, compaction point and database size (etcd's
    /// `Maintenance.Status`).
    fn status(&self) -> impl Future<Output = Result<StoreStatus>> + Send;

    /// Renew a lease once; returns the TTL it was renewed to, in seconds.
    /// An expired or unknown lease is `Err(StoreError::LeaseNotFound)`.
    fn lease_keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<i64>> + Send;

    /// Revoke a lease, deleting its keys in one revision.
    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// Remaining TTL and attached keys of a lease.
    fn lease_time_to_live(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<LeaseTimeToLive>> + Send;

    /// Discard history older than `revision`, as etcd does: reads and watches
    /// at `revision` still work (without older `prev_kv`s), those below it fail
    /// with [`StoreError::Compacted`].
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send;

    /// The store's current revision.
    fn current_revision(&self) -> impl Future<Output = Result<Revision>> + Send;
}

/// A stream of [`WatchBatch`]es. Dropping it cancels the watch in the backend.
///
/// Backends create it with [`WatchStream::channel`], feed the sender from a
/// task, and stop that task when [`WatchSender::cancelled`] fires.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<WatchBatch>>,
    progress: Arc<Notify>,
    _cancel_on_drop: DropGuard,
}

/// The backend's side of a [`WatchStream`].
#[derive(Debug, Clone)]
pub struct WatchSender {
    tx: mpsc::Sender<Result<WatchBatch>>,
    cancel: CancellationToken,
    progress: Arc<Notify>,
}

impl WatchStream {
    /// A connected pair with room for `capacity` undelivered batches.
    pub fn channel(capacity: usize) -> (WatchSender, WatchStream) {
        let (tx, rx) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        let progress = Arc::new(Notify::new());
        (
            WatchSender {
                tx,
                cancel: cancel.clone(),
                progress: progress.clone(),
            },
            WatchStream {
                rx,
                progress,
                _cancel_on_drop: cancel.drop_guard(),
            },
        )
    }

    /// Ask the backend for a progress notification now (etcd's
    /// `WatchProgressRequest`): an empty [`WatchBatch`] whose revision R
    /// says every event in the range up to R was delivered before it. It
    /// comes after whatever the watch still has to deliver.
    /// `Err(StoreError::Closed)` once the watch has ended.
    pub fn request_progress(&self) -> Result<()> {
        if self.rx.is_closed() {
            return Err(StoreError::Closed);
        }
        self.progress.notify_one();
        Ok(())
    }

    /// The next batch; `None` once the watch has ended.
    pub async fn next_batch(&mut self) -> Option<Result<WatchBatch>> {
        self.rx.recv().await
    }
}

impl WatchSender {
    /// Deliver a batch or an error; `Err(StoreError::Closed)` when the
    /// receiver is gone.
    pub async fn send(&self, item: Result<WatchBatch>) -> Result<()> {
        self.tx.send(item).await.map_err(|_| StoreError::Closed)
    }

    /// Resolves when the receiving [`WatchStream`] was dropped.
    pub async fn cancelled(&self) {
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            _ = self.tx.closed() => {}
        }
    }

    /// Resolves when the consumer asked for a progress notification
    /// ([`WatchStream::request_progress`]); requests made while nobody
    /// waits are kept (several count as one).
    pub async fn progress_requested(&self) {
        self.progress.notified().await
    }

    /// True once the receiver is gone.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }
}

impl futures::Stream for WatchStream {
    type Item = Result<WatchBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
