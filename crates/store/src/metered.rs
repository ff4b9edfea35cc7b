//! [`Metered`]: any [`Store`] with its requests counted and timed through
//! Drover's metrics facade, so both backends are measured the same way
//! without either of them knowing.
//!
//! Exported families (names as scraped; see ARCHITECTURE.md, Observability):
//! - `drover_store_requests_total{op, backend, result}`: every completed
//!   call, `result` is `ok` or `error`. Lease keep-alives sent and failed
//!   are `op="lease_keep_alive"`.
//! - `drover_store_request_duration_seconds{op, backend}`: the latency of
//!   every completed call, on tokio's clock.
//! - `drover_store_watch_streams_open{backend}`: watch streams created and
//!   not yet dropped.
//!
//! A call whose future is dropped before it completes is not counted.
//!
//! ```
//! use drover_metrics::MetricsRegistry;
//! use drover_store::{embedded::EmbeddedStore, metered::Metered, Get, Put, Store};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_store::StoreError> {
//! let registry = MetricsRegistry::new();
//! let store = Metered::new(EmbeddedStore::in_memory(), &registry);
//! store.put(Put::new("/drover/rcs/web", "replicas: 3")).await?;
//! store.get(Get::key("/drover/rcs/web")).await?;
//! let text = registry.encode().unwrap();
//! assert!(text.contains(r#"drover_store_requests_total{op="put",backend="embedded",result="ok"} 1"#));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use drover_metrics::{
    Buckets, CounterFamily, Gauge, GaugeFamily, HistogramFamily, MetricsRegistry, ObserveDuration,
};
use tokio::time::Instant;

use crate::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, Store, StoreStatus, Txn, TxnResponse, Watch, WatchStream,
};

/// `op`, `backend`, `result`.
type RequestLabels = [(&'static str, &'static str); 3];
/// `op`, `backend`.
type OpLabels = [(&'static str, &'static str); 2];
/// `backend`.
type BackendLabel = [(&'static str, &'static str); 1];

/// A [`Store`] that measures every call to the store it wraps. Cloning is
/// cheap and clones share their metrics.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<StoreMetrics>,
}

#[derive(Debug)]
struct StoreMetrics {
    requests: CounterFamily<RequestLabels>,
    duration: HistogramFamily<OpLabels>,
    watch_streams_open: GaugeFamily<BackendLabel>,
}

impl<S: Store> Metered<S> {
    /// Wraps `inner`, registering the store families into `registry` (or
    /// reusing them when another store registered them already: the
    /// `backend` label tells stores of different backends apart).
    pub fn new(inner: S, registry: &MetricsRegistry) -> Self {
        let metrics = StoreMetrics {
            requests: registry.counter_family(
                "drover_store_requests",
                "Store calls completed, by operation, backend and result (ok or error)",
            ),
            duration: registry.histogram_family(
                "drover_store_request_duration_seconds",
                "Latency of completed store calls, by operation and backend",
                &Buckets::latency(),
            ),
            watch_streams_open: registry.gauge_family(
                "drover_store_watch_streams_open",
                "Watch streams created and not yet dropped, by backend",
            ),
        };
        Metered {
            inner,
            metrics: Arc::new(metrics),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs one call of `op` and records its outcome and latency.
    async fn measure<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        let backend = self.inner.backend_name();
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .requests
            .get_or_create(&[("op", op), ("backend", backend), ("result", outcome)])
            .inc();
        self.metrics
            .duration
            .get_or_create(&[("op", op), ("backend", backend)])
            .observe_duration(started.elapsed());
        result
    }
}

/// Counts one open watch stream while alive (attached to the stream).
struct OpenWatch(Gauge);

impl OpenWatch {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        OpenWatch(gauge)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S: Store> Store for Metered<S> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    async fn get(&self, req: Get) -> Result<GetResponse> {
        self.measure("get", self.inner.get(req)).await
    }

    async fn put(&self, req: Put) -> Result<PutResponse> {
        self.measure("put", self.inner.put(req)).await
    }

    async fn delete(&self, req: Delete) -> Result<DeleteResponse> {
        self.measure("delete", self.inner.delete(req)).await
    }

    async fn txn(&self, req: Txn) -> Result<TxnResponse> {
        self.measure("txn", self.inner.txn(req)).await
    }

    async fn watch(&self, req: Watch) -> Result<WatchStream> {
        let stream = self.measure("watch", self.inner.watch(req)).await?;
        let gauge = self
            .metrics
            .watch_streams_open
            .get_or_create_owned(&[("backend", self.inner.backend_name())]);
        Ok(stream.attach(OpenWatch::new(gauge)))
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant> {
        self.measure("lease_grant", self.inner.lease_grant(ttl_secs))
            .await
    }

    async fn lease_grant_with_id(&self, id: LeaseId, ttl_secs: i64) -> Result<LeaseGrant> {
        self.measure(
            "lease_grant_with_id",
            self.inner.lease_grant_with_id(id, ttl_secs),
        )
        .await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.measure("lease_list", self.inner.lease_list()).await
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.measure("status", self.inner.status()).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.measure("lease_keep_alive", self.inner.lease_keep_alive(id))
            .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.measure("lease_revoke", self.inner.lease_revoke(id))
            .await
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.measure("lease_time_to_live", self.inner.lease_time_to_live(id))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.measure("compact", self.inner.compact(revision)).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.measure("current_revision", self.inner.current_revision())
            .await
    }
}

#[cfg(test)]
mod tests;
