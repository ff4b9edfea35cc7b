//! [`FaultyStore`]: the one fault-injecting [`Store`] wrapper for tests.
//!
//! It delegates every call to an inner store and lets a test switch faults
//! on and off while the code under test runs: a frozen process (every
//! request hangs), stalled, failing or slow keep-alives, failing reads,
//! held watches, watch streams that end early, and a rival writer that
//! changes a key right before every txn. It also counts calls and records
//! which ranges were watched, so tests can assert how the code retried.
//!
//! ```
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::testing::FaultyStore;
//! use drover_store::{Get, Store};
//!
//! # tokio_test_block_on(async {
//! let store = FaultyStore::new(EmbeddedStore::in_memory());
//! store.faults.fail_gets(1);
//! assert!(store.get(Get::key("a")).await.unwrap_err().is_retryable());
//! assert!(store.get(Get::key("a")).await.is_ok());
//! assert_eq!(store.faults.get_calls(), 2);
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{
    Delete, DeleteResponse, Get, GetResponse, KeyRange, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, Store, StoreError, Txn, TxnResponse, Watch, WatchStream,
};

/// Faults one process can suffer, switched on and off by the test, and
/// what it asked of the store.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every request hangs (a crashed or frozen process: nothing it sends
    /// reaches the store).
    frozen: AtomicBool,
    /// Keep-alives hang (a partition between this process and the store,
    /// or a paused process whose keep-alive loop cannot run).
    stall_keep_alives: AtomicBool,
    /// Keep-alives answer with a retryable error.
    fail_keep_alives: AtomicBool,
    /// New watches hang until released (a slow watch set-up, during which
    /// the store moves on and compacts).
    hold_watches: AtomicBool,
    /// Every keep-alive answers this much later (a slow link).
    keep_alive_delay: Mutex<Duration>,
    /// The next this many `get`s fail with a retryable error.
    failing_gets: AtomicU32,
    /// The next this many `txn`s fail with a retryable error (not applied).
    failing_txns: AtomicU32,
    /// Watch streams deliver this many batches, then end (with a retryable
    /// error when the flag is set).
    watch_stream_limit: Mutex<Option<(usize, bool)>>,
    /// Put right before every txn (a rival writer that wins every race).
    rival_put: Mutex<Option<Put>>,
    get_calls: AtomicUsize,
    watch_calls: AtomicUsize,
    keep_alive_calls: AtomicUsize,
    /// What this process watched, in order.
    watched: Mutex<Vec<KeyRange>>,
    changed: Notify,
}

/// Which kind of request a gate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    KeepAlive,
    Watch,
    Other,
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("injected: {what}"),
        source: None,
    }
}

impl Faults {
    /// Every request hangs while `on` (and resumes when it is switched off).
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Keep-alives hang while `on`.
    pub fn stall_keep_alives(&self, on: bool) {
        self.stall_keep_alives.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Keep-alives fail with a retryable `Unavailable` while `on`.
    pub fn fail_keep_alives(&self, on: bool) {
        self.fail_keep_alives.store(on, Ordering::SeqCst);
    }

    /// Every keep-alive answers `delay` later (zero: no delay).
    pub fn delay_keep_alives(&self, delay: Duration) {
        *self.keep_alive_delay.lock() = delay;
    }

    /// New watches hang while `on`.
    pub fn hold_watches(&self, on: bool) {
        self.hold_watches.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// The next `count` `get`s fail with a retryable `Unavailable`.
    pub fn fail_gets(&self, count: u32) {
        self.failing_gets.store(count, Ordering::SeqCst);
    }

    /// The next `count` `txn`s fail with a retryable `Unavailable`, without
    /// reaching the store.
    pub fn fail_txns(&self, count: u32) {
        self.failing_txns.store(count, Ordering::SeqCst);
    }

    /// Watch streams opened from now on deliver `batches` batches and then
    /// end, with a retryable error when `with_error`; `None`: they run
    /// normally.
    pub fn end_watches_after(&self, batches: Option<usize>, with_error: bool) {
        *self.watch_stream_limit.lock() = batches.map(|b| (b, with_error));
    }

    /// Puts `put` right before every txn, so every compare on its key sees
    /// a value the caller did not read; `None` stops the rival.
    pub fn rival_put_before_txn(&self, put: Option<Put>) {
        *self.rival_put.lock() = put;
    }

    /// `get` calls so far (including failed ones).
    pub fn get_calls(&self) -> usize {
        self.get_calls.load(Ordering::SeqCst)
    }

    /// `watch` calls so far.
    pub fn watch_calls(&self) -> usize {
        self.watch_calls.load(Ordering::SeqCst)
    }

    /// `lease_keep_alive` calls so far (including hung and failed ones).
    pub fn keep_alive_calls(&self) -> usize {
        self.keep_alive_calls.load(Ordering::SeqCst)
    }

    /// Every range this process watched so far, in order.
    pub fn watched(&self) -> Vec<KeyRange> {
        self.watched.lock().clone()
    }

    async fn gate(&self, kind: Kind) {
        loop {
            let notified = self.changed.notified();
            let blocked = self.frozen.load(Ordering::SeqCst)
                || (kind == Kind::KeepAlive && self.stall_keep_alives.load(Ordering::SeqCst))
                || (kind == Kind::Watch && self.hold_watches.load(Ordering::SeqCst));
            if !blocked {
                break;
            }
            notified.await;
        }
        let delay = *self.keep_alive_delay.lock();
        if kind == Kind::KeepAlive && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    fn take_failing_get(&self) -> bool {
        self.failing_gets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn take_failing_txn(&self) -> bool {
        self.failing_txns
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The view one process has of a store, with injectable [`Faults`]. Clones
/// share the faults.
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    /// The switches; shared by every clone.
    pub faults: Arc<Faults>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }

    /// The wrapped store, without faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// Waits at the gate for `$kind`, then runs `$call`.
macro_rules! gated {
    ($self:ident, $kind:expr, $call:expr) => {{
        let faults = $self.faults.clone();
        let fut = $call;
        async move {
            faults.gate($kind).await;
            fut.await
        }
    }};
}

impl<S: Store> Store for FaultyStore<S> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn get(&self, req: Get) -> impl Future<Output = Result<GetResponse>> + Send {
        self.faults.get_calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.faults.take_failing_get();
        let faults = self.faults.clone();
        let fut = self.inner.get(req);
        async move {
            faults.gate(Kind::Other).await;
            if fail {
                return Err(injected("get"));
            }
            fut.await
        }
    }
    fn put(&self, req: Put) -> impl Future<Output = Result<PutResponse>> + Send {
        gated!(self, Kind::Other, self.inner.put(req))
    }
    fn delete(&self, req: Delete) -> impl Future<Output = Result<DeleteResponse>> + Send {
        gated!(self, Kind::Other, self.inner.delete(req))
    }
    fn txn(&self, req: Txn) -> impl Future<Output = Result<TxnResponse>> + Send {
        let (faults, inner) = (self.faults.clone(), self.inner.clone());
        let fail = self.faults.take_failing_txn();
        async move {
            faults.gate(Kind::Other).await;
            if fail {
                return Err(injected("txn"));
            }
            let rival = faults.rival_put.lock().clone();
            if let Some(rival) = rival {
                inner.put(rival).await?;
            }
            inner.txn(req).await
        }
    }
    fn watch(&self, req: Watch) -> impl Future<Output = Result<WatchStream>> + Send {
        self.faults.watch_calls.fetch_add(1, Ordering::SeqCst);
        self.faults.watched.lock().push(req.range.clone());
        let limit = *self.faults.watch_stream_limit.lock();
        let opened = gated!(self, Kind::Watch, self.inner.watch(req));
        async move {
            let inner = opened.await?;
            Ok(match limit {
                None => inner,
                Some((batches, with_error)) => truncated(inner, batches, with_error),
            })
        }
    }
    fn lease_grant(&self, ttl_secs: i64) -> impl Future<Output = Result<LeaseGrant>> + Send {
        gated!(self, Kind::Other, self.inner.lease_grant(ttl_secs))
    }
    fn lease_grant_with_id(
        &self,
        id: LeaseId,
        ttl_secs: i64,
    ) -> impl Future<Output = Result<LeaseGrant>> + Send {
        gated!(
            self,
            Kind::Other,
            self.inner.lease_grant_with_id(id, ttl_secs)
        )
    }
    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseId>>> + Send {
        gated!(self, Kind::Other, self.inner.lease_list())
    }
    fn status(&self) -> impl Future<Output = Result<crate::StoreStatus>> + Send {
        gated!(self, Kind::Other, self.inner.status())
    }
    fn lease_keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<i64>> + Send {
        self.faults.keep_alive_calls.fetch_add(1, Ordering::SeqCst);
        let faults = self.faults.clone();
        let fut = self.inner.lease_keep_alive(id);
        async move {
            faults.gate(Kind::KeepAlive).await;
            if faults.fail_keep_alives.load(Ordering::SeqCst) {
                return Err(injected("keep-alive failure"));
            }
            fut.await
        }
    }
    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = Result<()>> + Send {
        gated!(self, Kind::Other, self.inner.lease_revoke(id))
    }
    fn lease_time_to_live(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<LeaseTimeToLive>> + Send {
        gated!(self, Kind::Other, self.inner.lease_time_to_live(id))
    }
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send {
        gated!(self, Kind::Other, self.inner.compact(revision))
    }
    fn current_revision(&self) -> impl Future<Output = Result<Revision>> + Send {
        gated!(self, Kind::Other, self.inner.current_revision())
    }
}

/// A stream that forwards `batches` batches of `inner`, then ends (after a
/// retryable error when `with_error`).
fn truncated(mut inner: WatchStream, batches: usize, with_error: bool) -> WatchStream {
    let (tx, stream) = WatchStream::channel(4);
    tokio::spawn(async move {
        for _ in 0..batches {
            let item = tokio::select! {
                _ = tx.cancelled() => return,
                item = inner.next_batch() => item,
            };
            let Some(item) = item else { return };
            if tx.send(item).await.is_err() {
                return;
            }
        }
        if with_error {
            let _ = tx.send(Err(injected("watch stream"))).await;
        }
        // Dropping `tx` ends the stream.
    });
    stream
}
