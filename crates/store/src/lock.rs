//! [`Lock`]: lease-bound, fenced ownership of one thing (an RC, a
//! replication), held at `locks/<kind>/<id>`.
//!
//! A lock is the key `locks/<kind>/<id>` created bound to the holder's lease.
//! Like an election term it carries
//! - a **fencing token** ([`Lock::token`]): the key's create revision;
//! - a **scope** ([`Lock::scope`]): a [`CancellationToken`] cancelled when
//!   the lock ends: the lease is lost, the lease's `valid_until` (send time
//!   of the last acknowledged keep-alive + TTL − safety margin) passes
//!   without a renewal, so *before* the store could expire the lease, the
//!   key is deleted, or the lock is released or dropped;
//! - **fenced writes** ([`Lock::fence`], [`Lock::commit_fenced`]): txns the
//!   store refuses once the key is gone, so a holder that was paused past
//!   its lease cannot write.
//!
//! Many locks can share one lease (a farm holds all its RCs on one lease).
//! Dropping a [`Lock`] ends its scope locally; the key stays until
//! [`Lock::release`] deletes it or the lease ends.
//!
//! ```
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::keys::Keys;
//! use drover_store::lease::{Lease, LeaseConfig};
//! use drover_store::lock::Lock;
//! use drover_store::Put;
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EmbeddedStore::in_memory();
//! let keys = Keys::default();
//! let lease = Lease::grant(store.clone(), LeaseConfig::new(5)).await?;
//! let lock = Lock::try_acquire(store.clone(), &keys, "rc", "web", &lease, "farm-1")
//!     .await?
//!     .expect("nobody holds it");
//! // A holder on another lease is refused while the first holds it (the
//! // same lease would get the lock back: one farm, one lease).
//! let other = Lease::grant(store.clone(), LeaseConfig::new(5)).await?;
//! assert!(Lock::try_acquire(store.clone(), &keys, "rc", "web", &other, "farm-2").await?.is_none());
//!
//! lock.commit_fenced([Put::new("/drover/intent/n1/web", "manifest").into()]).await?;
//! lock.release().await?;
//! assert!(lock.scope().is_cancelled());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::fence::{EndReason, Fence, Ownership, OwnershipLoss};
use crate::keys::Keys;
use crate::lease::{Lease, LeaseView};
use crate::{
    Compare, CompareOp, EventKind, Get, Put, Result, Revision, Store, StoreError, Txn, TxnOp,
    TxnOpResponse, TxnResponse, Watch,
};

/// How [`Lock::acquire`] retries store failures while waiting.
const WAIT_BACKOFF: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1));

/// Why a [`Lock`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockEnd {
    /// The lease's keep-alive loop declared the lease lost.
    LeaseLost,
    /// The lease's `valid_until` passed without a renewal.
    ValidityExpired,
    /// The lock key was deleted or replaced.
    KeyDeleted,
    /// [`Lock::release`] was called.
    Released,
    /// Every handle of the lock was dropped.
    Dropped,
}

impl LockEnd {
    /// True for an involuntary end (the lock was lost, not given up).
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            LockEnd::LeaseLost | LockEnd::ValidityExpired | LockEnd::KeyDeleted
        )
    }
}

impl EndReason for LockEnd {
    const DROPPED: Self = LockEnd::Dropped;
}

impl From<OwnershipLoss> for LockEnd {
    fn from(loss: OwnershipLoss) -> Self {
        match loss {
            OwnershipLoss::LeaseLost => LockEnd::LeaseLost,
            OwnershipLoss::ValidityExpired => LockEnd::ValidityExpired,
            OwnershipLoss::KeyDeleted => LockEnd::KeyDeleted,
        }
    }
}

impl fmt::Display for LockEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockEnd::LeaseLost => "the lease was lost",
            LockEnd::ValidityExpired => "the lease's validity expired without a renewal",
            LockEnd::KeyDeleted => "the lock key was deleted",
            LockEnd::Released => "released",
            LockEnd::Dropped => "dropped",
        })
    }
}

/// A held lock. Cheap to clone; see the [module docs](self).
#[derive(Clone)]
pub struct Lock<S: Store> {
    inner: Arc<LockInner<S>>,
}

struct LockInner<S: Store> {
    store: S,
    ownership: Ownership<LockEnd>,
}

impl<S: Store> fmt::Debug for Lock<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("key", &self.key())
            .field("token", &self.token())
            .field(
                "lease",
                &format_args!("{:x}", self.inner.ownership.lease().id()),
            )
            .field("valid_until", &self.valid_until())
            .field("ended", &self.end_reason())
            .finish()
    }
}

impl<S: Store> Lock<S> {
    /// Takes `locks/<kind>/<id>` for `lease` if nobody holds it; `None` when
    /// another lease holds it. A key already held by this same lease is
    /// taken over (with its original token), so a holder that restarts its
    /// work on the same lease gets its lock back.
    pub async fn try_acquire<L: Store>(
        store: S,
        keys: &Keys,
        kind: &str,
        id: &str,
        lease: &Lease<L>,
        holder: impl Into<Vec<u8>>,
    ) -> Result<Option<Self>> {
        let key = keys.lock(kind, id)?;
        let view = LeaseView::of(lease);
        Ok(
            match Self::attempt(&store, &key, &view, holder.into()).await? {
                Attempt::Won { token, revision } => Some(Self::start(
                    store,
                    Fence::new(key, token, view.id()),
                    view,
                    revision,
                )),
                Attempt::Held { .. } => None,
            },
        )
    }

    /// Takes `locks/<kind>/<id>` for `lease`, waiting while another lease
    /// holds it (woken by the key's deletion, not by polling). Fails with
    /// [`StoreError::LeaseNotFound`] when `lease` is lost while waiting,
    /// and with a non-retryable store error at once; retryable errors are
    /// retried with backoff. Drop the future to stop waiting. The future
    /// does not borrow `lease`.
    pub fn acquire<L: Store>(
        store: S,
        keys: &Keys,
        kind: &str,
        id: &str,
        lease: &Lease<L>,
        holder: impl Into<Vec<u8>>,
    ) -> impl Future<Output = Result<Self>> + Send + 'static {
        let key = keys.lock(kind, id);
        let view = LeaseView::of(lease);
        let holder = holder.into();
        async move { Self::acquire_key(store, key?, view, holder).await }
    }

    async fn acquire_key(store: S, key: String, view: LeaseView, holder: Vec<u8>) -> Result<Self> {
        let mut backoff = Backoff::new(WAIT_BACKOFF);
        let span = tracing::debug_span!("lock_acquire", key = %key, lease = %format_args!("{:x}", view.id()));
        async {
            loop {
                let lost = || StoreError::LeaseNotFound(view.id());
                if !view.is_valid() {
                    return Err(lost());
                }
                let held_at = match Self::attempt(&store, &key, &view, holder.clone()).await {
                    Ok(Attempt::Won { token, revision }) => {
                        let fence = Fence::new(key.clone(), token, view.id());
                        return Ok(Self::start(store.clone(), fence, view.clone(), revision));
                    }
                    Ok(Attempt::Held { revision }) => revision,
                    Err(e) if e.is_retryable() => {
                        tracing::debug!(error = %e, "lock attempt failed; retrying");
                        backoff.wait().await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                tracing::trace!("held by another lease; waiting for its deletion");
                let deleted = tokio::select! {
                    _ = view.lost().cancelled() => return Err(lost()),
                    _ = view.validity_passed() => return Err(lost()),
                    d = wait_deleted(&store, &key, held_at + 1) => d,
                };
                match deleted {
                    Ok(()) => backoff.reset(),
                    Err(e) => {
                        tracing::debug!(error = %e, "lock watch interrupted; trying again");
                        backoff.wait().await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One atomic attempt: create the key if absent, else read it.
    async fn attempt(store: &S, key: &str, lease: &LeaseView, holder: Vec<u8>) -> Result<Attempt> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([Put::new(key, holder).with_lease(lease.id()).into()])
            .or_else([Get::key(key).into()]);
        let response = store.txn(txn).await?;
        if response.succeeded {
            return Ok(Attempt::Won {
                token: response.revision,
                revision: response.revision,
            });
        }
        match response.responses.first() {
            Some(TxnOpResponse::Get(got)) => match got.first() {
                Some(kv) if kv.lease == lease.id() && lease.id() != 0 => Ok(Attempt::Won {
                    token: kv.create_revision,
                    revision: response.revision,
                }),
                Some(_) => Ok(Attempt::Held {
                    revision: response.revision,
                }),
                // Deleted between the compare and the read cannot happen
                // in one txn; treat it as held and look again.
                None => Ok(Attempt::Held {
                    revision: response.revision,
                }),
            },
            _ => Err(StoreError::InvalidArgument(format!(
                "lock txn on {key} answered without the read it asked for"
            ))),
        }
    }

    fn start(store: S, fence: Fence, lease: LeaseView, confirmed: Revision) -> Self {
        let span = tracing::debug_span!("lock", key = %fence.key(), token = fence.token());
        let ownership = Ownership::start(store.clone(), fence, lease, confirmed, span);
        Lock {
            inner: Arc::new(LockInner { store, ownership }),
        }
    }

    /// The ownership this lock holds, for [`Txn::fenced`].
    pub fn fence(&self) -> &Fence {
        self.inner.ownership.fence()
    }

    /// The fencing token: the lock key's create revision.
    pub fn token(&self) -> Revision {
        self.inner.ownership.fence().token()
    }

    /// The lock key (`locks/<kind>/<id>` under the layout's prefix).
    pub fn key(&self) -> &str {
        self.inner.ownership.fence().key()
    }

    /// The store this lock lives in.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// Until when the lock is certainly held: the lease's conservative
    /// validity. The scope is cancelled when it passes.
    pub fn valid_until(&self) -> Instant {
        self.inner.ownership.valid_until()
    }

    /// True while the lock has not ended and `valid_until` is in the future.
    pub fn is_valid(&self) -> bool {
        self.inner.ownership.is_valid()
    }

    /// The lock's scope: cancelled when the lock ends. Run the owner's work
    /// under it (or under a child token).
    pub fn scope(&self) -> CancellationToken {
        self.inner.ownership.scope().clone()
    }

    /// Why the lock ended, or `None` while it is held.
    pub fn end_reason(&self) -> Option<LockEnd> {
        self.inner.ownership.end_reason()
    }

    /// Runs `ops` as the holder: refused locally once the lock has ended, and
    /// by the store once the key is gone (which also ends the lock). Both
    /// refusals are [`StoreError::LockLost`].
    pub async fn commit_fenced(&self, ops: impl IntoIterator<Item = TxnOp>) -> Result<TxnResponse> {
        self.check_live()?;
        let response = self
            .inner
            .store
            .txn(self.inner.ownership.fence().txn(ops))
            .await?;
        if !response.succeeded {
            self.end(LockEnd::KeyDeleted);
            return Err(self.lost());
        }
        Ok(response)
    }

    /// Gives the lock up: deletes the key if it is still this lock's and ends
    /// the scope. Releasing a lock that ended for another reason still
    /// removes its key if it is there.
    pub async fn release(&self) -> Result<()> {
        self.end(LockEnd::Released);
        self.inner
            .store
            .txn(self.inner.ownership.fence().release_txn())
            .await?;
        Ok(())
    }

    fn end(&self, reason: LockEnd) {
        self.inner.ownership.end(reason);
    }

    fn check_live(&self) -> Result<()> {
        match self.inner.ownership.check_live() {
            Some(_) => Err(self.lost()),
            None => Ok(()),
        }
    }

    fn lost(&self) -> StoreError {
        StoreError::LockLost {
            key: self.inner.ownership.fence().key().to_owned(),
            token: self.inner.ownership.fence().token(),
            reason: self.end_reason().unwrap_or(LockEnd::KeyDeleted),
        }
    }
}

enum Attempt {
    /// This lease holds the key, created at `token`; owned as of `revision`.
    Won { token: Revision, revision: Revision },
    /// Another lease holds it as of `revision`.
    Held { revision: Revision },
}

/// Watches `key` from `start` until it is deleted.
async fn wait_deleted<S: Store>(store: &S, key: &str, start: Revision) -> Result<()> {
    let mut stream = store.watch(Watch::key(key).from_revision(start)).await?;
    while let Some(batch) = stream.next_batch().await {
        if batch?.events.iter().any(|e| e.kind == EventKind::Delete) {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable {
        message: format!("the store ended the watch of {key}"),
        source: None,
    })
}

#[cfg(test)]
mod tests;
