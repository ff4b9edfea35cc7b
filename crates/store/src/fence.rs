//! [`Fence`]: the compares that make a write happen only while its writer
//! still owns something; [`watch_ownership`], the monitor that says when
//! that ownership ended; and [`Ownership`], the two together with a scope,
//! which a [`crate::lock::Lock`] and an election term are each built on.
//!
//! Ownership in Drover is a key bound to a lease: an election candidate key
//! (`election/<name>/<lease hex>`) or a lock (`locks/<kind>/<id>`, see
//! [`crate::lock`]). Its **fencing token** is the key's create revision,
//! which only grows across the store. A fenced txn compares that the key
//! still exists with that create revision *and* that lease, so the store
//! itself refuses the write once ownership is gone, however late a paused
//! process wakes up. A lease alone is not enough: the holder's clock cannot
//! tell it when the store expired the lease.
//!
//! ```
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::fence::Fence;
//! use drover_store::{Delete, Put, Store, Txn};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EmbeddedStore::in_memory();
//! let owned = store.put(Put::new("/drover/locks/rc/web", "farm-1")).await?;
//! let fence = Fence::new("/drover/locks/rc/web", owned.revision, 0);
//!
//! let write = Txn::new().fenced(&fence).and_then([Put::new("/drover/intent/n1/web", "m").into()]);
//! assert!(store.txn(write.clone()).await?.succeeded);
//!
//! store.delete(Delete::key("/drover/locks/rc/web")).await?; // ownership gone
//! assert!(!store.txn(write).await?.succeeded);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::lease::LeaseView;
use crate::{
    Compare, CompareOp, Delete, EventKind, Get, LeaseId, Revision, Store, StoreError, Txn, TxnOp,
    Watch,
};

/// How the key-gone monitor retries a failed watch or check.
const MONITOR_BACKOFF: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1));

/// Ownership of a key: it exists with create revision `token`, bound to
/// `lease`. Any txn can carry it ([`Txn::fenced`], [`Fence::guard`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    key: String,
    token: Revision,
    lease: LeaseId,
}

impl Fence {
    /// Ownership of `key`, created at revision `token`, bound to `lease`
    /// (0: a key without a lease).
    pub fn new(key: impl Into<String>, token: Revision, lease: LeaseId) -> Self {
        Fence {
            key: key.into(),
            token,
            lease,
        }
    }

    /// The owned key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: the key's create revision. Hand it to external
    /// systems, which must reject writes carrying a smaller token than one
    /// they have already seen.
    pub fn token(&self) -> Revision {
        self.token
    }

    /// The lease the key is bound to.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The compares that hold only while the key exists with this create
    /// revision and lease.
    pub fn compares(&self) -> Vec<Compare> {
        vec![
            Compare::create_revision(self.key.clone(), CompareOp::Equal, self.token),
            Compare::lease(self.key.clone(), CompareOp::Equal, self.lease),
        ]
    }

    /// `txn` with this fence's compares added.
    pub fn guard(&self, txn: Txn) -> Txn {
        txn.when(self.compares())
    }

    /// A txn that runs `ops` only while this ownership lasts (the store
    /// decides, atomically). Extend it with more compares or an else-branch
    /// if needed.
    pub fn txn(&self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.guard(Txn::new()).and_then(ops)
    }

    /// A txn that deletes the key if it still has this create revision (a
    /// release that never deletes a successor's key).
    pub fn release_txn(&self) -> Txn {
        Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                self.token,
            )])
            .and_then([Delete::key(self.key.clone()).into()])
    }
}

impl Txn {
    /// This txn, run only while `fence`'s ownership lasts.
    pub fn fenced(self, fence: &Fence) -> Txn {
        fence.guard(self)
    }
}

/// How ownership was lost, as [`watch_ownership`] saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnershipLoss {
    /// The lease's keep-alive loop declared the lease lost.
    LeaseLost,
    /// The lease's `valid_until` passed without a renewal: the store could
    /// expire it from now on.
    ValidityExpired,
    /// The key was deleted or re-created under another create revision.
    KeyDeleted,
}

impl fmt::Display for OwnershipLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OwnershipLoss::LeaseLost => "the lease was lost",
            OwnershipLoss::ValidityExpired => "the lease's validity expired without a renewal",
            OwnershipLoss::KeyDeleted => "the owned key was deleted",
        })
    }
}

/// Why an ownership ended: a lock's or a term's own reasons, which include
/// the three ways ownership is lost.
pub trait EndReason: Copy + fmt::Display + From<OwnershipLoss> + Send + Sync + 'static {
    /// The reason recorded when every handle was dropped.
    const DROPPED: Self;
}

/// Held ownership of a fenced key: the [`Fence`], the lease's validity, and
/// a scope cancelled at the first end, whose reason is kept. A monitor task
/// ends it (with the [`OwnershipLoss`] as reason) when the lease is lost,
/// its validity passes without a renewal, or the key goes; the owner ends
/// it for its own reasons (released, resigned...). Dropping it stops the
/// monitor and ends it as [`EndReason::DROPPED`]; nothing is written to the
/// store either way.
pub struct Ownership<E: EndReason> {
    fence: Fence,
    lease: LeaseView,
    scope: CancellationToken,
    end: Arc<Mutex<Option<E>>>,
    monitor: JoinHandle<()>,
}

impl<E: EndReason> fmt::Debug for Ownership<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ownership")
            .field("key", &self.fence.key())
            .field("token", &self.fence.token())
            .field("lease", &format_args!("{:x}", self.lease.id()))
            .field("valid_until", &self.valid_until())
            .field("ended", &self.end_reason().map(|e| e.to_string()))
            .finish()
    }
}

impl<E: EndReason> Ownership<E> {
    /// Starts holding `fence` on `lease`, owned as of revision `confirmed`,
    /// with the monitor running in `span` (which names the owner).
    pub fn start<S: Store>(
        store: S,
        fence: Fence,
        lease: LeaseView,
        confirmed: Revision,
        span: tracing::Span,
    ) -> Self {
        let scope = CancellationToken::new();
        let end = Arc::new(Mutex::new(None));
        let monitor = tokio::spawn({
            let (fence, lease, scope, end) =
                (fence.clone(), lease.clone(), scope.clone(), end.clone());
            async move {
                let reason = tokio::select! {
                    _ = scope.cancelled() => return,
                    loss = watch_ownership(&store, &fence, confirmed, &lease) => E::from(loss),
                };
                tracing::info!(%reason, "ownership lost");
                end_ownership(&end, &scope, reason);
            }
            .instrument(span)
        });
        Ownership {
            fence,
            lease,
            scope,
            end,
            monitor,
        }
    }

    /// The owned key, its token and lease.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The lease the key is bound to.
    pub fn lease(&self) -> &LeaseView {
        &self.lease
    }

    /// The lease's conservative validity; the scope is cancelled when it
    /// passes.
    pub fn valid_until(&self) -> Instant {
        self.lease.valid_until()
    }

    /// True while not ended and `valid_until` is in the future.
    pub fn is_valid(&self) -> bool {
        self.end_reason().is_none() && self.lease.is_valid()
    }

    /// Cancelled when the ownership ends.
    pub fn scope(&self) -> &CancellationToken {
        &self.scope
    }

    /// Why it ended, or `None` while it lasts.
    pub fn end_reason(&self) -> Option<E> {
        *self.end.lock()
    }

    /// Ends it locally (the first reason is kept) and cancels the scope.
    pub fn end(&self, reason: E) {
        end_ownership(&self.end, &self.scope, reason);
    }

    /// `None` while it lasts, else why it ended; a validity that passed
    /// ends it first (so a caller never writes on a timer the monitor has
    /// not seen yet).
    pub fn check_live(&self) -> Option<E> {
        if self.end_reason().is_none() && Instant::now() >= self.valid_until() {
            self.end(OwnershipLoss::ValidityExpired.into());
        }
        self.end_reason()
    }
}

impl<E: EndReason> Drop for Ownership<E> {
    fn drop(&mut self) {
        self.monitor.abort();
        self.end(E::DROPPED);
    }
}

/// Records why an ownership ended, keeping the first reason, then cancels
/// its scope.
fn end_ownership<E>(slot: &Mutex<Option<E>>, scope: &CancellationToken, reason: E) {
    slot.lock().get_or_insert(reason);
    scope.cancel();
}

/// Resolves at the first sign that `fence`'s ownership is over: the lease is
/// lost, its validity passed (before the store could expire it), or the key
/// is gone (watched from `confirmed + 1`, where `confirmed` is a revision at
/// which the key was known to be owned). Store failures are retried; the
/// validity timer bounds how long a hung store can hide a loss.
pub async fn watch_ownership<S: Store>(
    store: &S,
    fence: &Fence,
    confirmed: Revision,
    lease: &LeaseView,
) -> OwnershipLoss {
    tokio::select! {
        _ = lease.lost().cancelled() => OwnershipLoss::LeaseLost,
        _ = lease.validity_passed() => OwnershipLoss::ValidityExpired,
        _ = key_gone(store, fence, confirmed) => OwnershipLoss::KeyDeleted,
    }
}

/// Resolves once the fenced key no longer exists with its create revision.
/// Retries store failures with backoff; never returns otherwise.
pub async fn key_gone<S: Store>(store: &S, fence: &Fence, confirmed: Revision) {
    let mut from = confirmed;
    let mut backoff = Backoff::new(MONITOR_BACKOFF);
    loop {
        match watch_until_gone(store, fence, from + 1).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, key = %fence.key, "ownership watch interrupted; re-checking")
            }
        }
        // Re-check the key, then watch again from the revision of the check.
        loop {
            match store.get(Get::key(fence.key.as_str())).await {
                Ok(got) => {
                    match got.first() {
                        Some(kv) if kv.create_revision == fence.token => {}
                        _ => return,
                    }
                    from = got.revision;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, key = %fence.key, "ownership check failed; retrying");
                    backoff.wait().await;
                }
            }
        }
        backoff.wait().await;
    }
}

/// Watches the key from `start`; `Ok` at its deletion (or re-creation under
/// another create revision), `Err` when the watch fails or ends.
async fn watch_until_gone<S: Store>(
    store: &S,
    fence: &Fence,
    start: Revision,
) -> Result<(), StoreError> {
    let mut stream = store
        .watch(Watch::key(fence.key.as_str()).from_revision(start))
        .await?;
    while let Some(batch) = stream.next_batch().await {
        for event in batch?.events {
            match event.kind {
                EventKind::Delete => return Ok(()),
                EventKind::Put if event.kv.create_revision != fence.token => return Ok(()),
                EventKind::Put => {}
            }
        }
    }
    Err(StoreError::Closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::EmbeddedStore;
    use crate::{Put, TxnOpResponse};

    #[tokio::test]
    async fn a_fenced_txn_fails_once_the_key_is_recreated_or_rebound() {
        let store = EmbeddedStore::in_memory();
        let put = store.put(Put::new("/l/k", "a")).await.unwrap();
        let fence = Fence::new("/l/k", put.revision, 0);
        let write = fence.txn([Put::new("/l/data", "1").into()]);
        assert!(store.txn(write.clone()).await.unwrap().succeeded);

        // Same key, new create revision: another owner.
        store.delete(Delete::key("/l/k")).await.unwrap();
        store.put(Put::new("/l/k", "b")).await.unwrap();
        assert!(!store.txn(write).await.unwrap().succeeded);

        // Same create revision, another lease: not this ownership either.
        let lease = store.lease_grant(10).await.unwrap();
        let now = store.get(Get::key("/l/k")).await.unwrap();
        let rebound = Fence::new("/l/k", now.kvs[0].create_revision, 0);
        store
            .put(Put::new("/l/k", "b").with_lease(lease.id))
            .await
            .unwrap();
        assert!(
            !store
                .txn(rebound.txn([Put::new("/l/data", "2").into()]))
                .await
                .unwrap()
                .succeeded
        );
    }

    #[tokio::test]
    async fn release_never_deletes_a_successors_key() {
        let store = EmbeddedStore::in_memory();
        let first = store.put(Put::new("/l/k", "a")).await.unwrap();
        let fence = Fence::new("/l/k", first.revision, 0);
        store.delete(Delete::key("/l/k")).await.unwrap();
        store.put(Put::new("/l/k", "successor")).await.unwrap();
        let released = store.txn(fence.release_txn()).await.unwrap();
        assert!(!released.succeeded);
        let got = store.get(Get::key("/l/k")).await.unwrap();
        assert_eq!(got.kvs[0].value, b"successor");
        assert!(matches!(
            released.responses.first(),
            None | Some(TxnOpResponse::Get(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn key_gone_resolves_on_delete_only() {
        let store = EmbeddedStore::in_memory();
        let put = store.put(Put::new("/l/k", "a")).await.unwrap();
        let fence = Fence::new("/l/k", put.revision, 0);
        let watcher = tokio::spawn({
            let (store, fence) = (store.clone(), fence.clone());
            async move { key_gone(&store, &fence, put.revision).await }
        });
        // Rewriting the value keeps the create revision: still owned.
        store.put(Put::new("/l/k", "b")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!watcher.is_finished());
        store.delete(Delete::key("/l/k")).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("key_gone resolves after the delete")
            .unwrap();
    }
}
