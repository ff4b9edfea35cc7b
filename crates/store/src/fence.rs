//! [`Fence`]: the compares that make a write happen only while its writer
//! still owns something, and [`watch_ownership`], the monitor that says when
//! that ownership ended.
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
use std::time::Duration;

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

/// Records why an ownership (a lock, a term) ended, keeping the first
/// reason, then cancels its scope. Locks and election terms share it.
pub fn end_ownership<E>(
    slot: &parking_lot::Mutex<Option<E>>,
    scope: &tokio_util::sync::CancellationToken,
    reason: E,
) {
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
