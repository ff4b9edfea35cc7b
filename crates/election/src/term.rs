//! [`Term`]: one period of leadership, with its fencing token, its lease and
//! a cancellation scope that fires before the store could expire the lease.

use std::fmt;
use std::sync::Arc;

use drover_store::fence::{EndReason, Fence, Ownership, OwnershipLoss};
use drover_store::lease::LeaseView;
use drover_store::{Compare, KeyValue, LeaseId, Revision, Store, Txn, TxnOp, TxnResponse};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::election::{LeaderInfo, proclaim_fenced};
use crate::{ElectionError, Result};

/// Why a [`Term`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TermEnd {
    /// The lease's keep-alive loop declared the lease lost.
    LeaseLost,
    /// The term's `valid_until` passed without a renewal.
    ValidityExpired,
    /// The candidate key was deleted or replaced (another process resigned
    /// it, or an operator removed it).
    KeyDeleted,
    /// [`Term::resign`] was called.
    Resigned,
    /// The elector's term limit was reached.
    TermLimit,
    /// The elector was shut down.
    Shutdown,
    /// Every handle of the term was dropped.
    Dropped,
}

impl TermEnd {
    /// True for an involuntary end: the lease, its validity or the key was
    /// lost (what [`crate::OnLoss::Fatal`] turns into an error), as opposed
    /// to resigning, a term limit or a shutdown.
    pub fn is_loss(self) -> bool {
        matches!(
            self,
            TermEnd::LeaseLost | TermEnd::ValidityExpired | TermEnd::KeyDeleted | TermEnd::Dropped
        )
    }
}

impl fmt::Display for TermEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TermEnd::LeaseLost => "the lease was lost",
            TermEnd::ValidityExpired => "the term's validity expired without a renewal",
            TermEnd::KeyDeleted => "the candidate key was deleted",
            TermEnd::Resigned => "resigned",
            TermEnd::TermLimit => "the term limit was reached",
            TermEnd::Shutdown => "the elector shut down",
            TermEnd::Dropped => "the term was dropped",
        })
    }
}

/// One term of leadership.
///
/// A term is a cheap, cloneable handle. It carries
/// - the **fencing token** ([`Term::token`]): the candidate key's create
///   revision, unique per term and increasing across terms of one election
///   (and across the whole store);
/// - the **cancellation scope** ([`Term::cancellation`]): fired when the lease
///   is lost, when `valid_until` passes without a renewal (before the store
///   could expire the lease), when the candidate key disappears, or when the
///   term is resigned or ended by the elector;
/// - **fenced writes** ([`Term::guard`], [`Term::fenced_txn`],
///   [`Term::commit_fenced`]): transactions that the store refuses once the
///   candidate key is gone, so a paused leader that wakes up late cannot
///   write.
#[derive(Clone)]
pub struct Term<S: Store> {
    inner: Arc<TermInner<S>>,
}

struct TermInner<S: Store> {
    store: S,
    prefix: String,
    ownership: Ownership<TermEnd>,
    /// The candidate key as this term last wrote it.
    record: Mutex<KeyValue>,
    started_at: Instant,
}

impl<S: Store> fmt::Debug for Term<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Term")
            .field("key", &self.inner.ownership.fence().key())
            .field("token", &self.inner.ownership.fence().token())
            .field(
                "lease",
                &format_args!("{:x}", self.inner.ownership.lease().id()),
            )
            .field("valid_until", &self.valid_until())
            .field("ended", &self.end_reason())
            .finish()
    }
}

impl<S: Store> Term<S> {
    /// Starts a term whose leadership was confirmed at `confirmed_revision`.
    pub(crate) fn start(
        store: S,
        prefix: String,
        record: KeyValue,
        lease: LeaseView,
        confirmed_revision: Revision,
    ) -> Self {
        let key = record.key_str().into_owned();
        let token = record.create_revision;
        let fence = Fence::new(key.clone(), token, lease.id());
        let span = tracing::debug_span!("term_monitor", key = %key, token);
        let ownership = Ownership::start(store.clone(), fence, lease, confirmed_revision, span);
        Term {
            inner: Arc::new(TermInner {
                store,
                prefix,
                ownership,
                record: Mutex::new(record),
                started_at: Instant::now(),
            }),
        }
    }

    /// The fencing token: the candidate key's create revision. Hand it to
    /// external systems, which must reject writes carrying a smaller token
    /// than one they have already seen.
    pub fn token(&self) -> Revision {
        self.inner.ownership.fence().token()
    }

    /// The term's ownership of its candidate key, for [`Txn::fenced`] on
    /// any txn (the same [`Fence`] locks use).
    pub fn fence(&self) -> &Fence {
        self.inner.ownership.fence()
    }

    /// The candidate key (`<prefix><lease id in hex>`).
    pub fn key(&self) -> &str {
        self.inner.ownership.fence().key()
    }

    /// The election prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The lease the candidate key is bound to.
    pub fn lease_id(&self) -> LeaseId {
        self.inner.ownership.lease().id()
    }

    /// The store this term writes to.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// When the term started (leadership was confirmed).
    pub fn started_at(&self) -> Instant {
        self.inner.started_at
    }

    /// Until when this process certainly leads: the lease's conservative
    /// validity (send time of the last acknowledged keep-alive + TTL - safety
    /// margin). The term's scope is cancelled when it passes.
    pub fn valid_until(&self) -> Instant {
        self.inner.ownership.valid_until()
    }

    /// True while the term has not ended and `valid_until` is in the future.
    pub fn is_valid(&self) -> bool {
        self.inner.ownership.is_valid()
    }

    /// The term's cancellation scope: cancelled when the term ends. Run
    /// leader work under it (or under a child token).
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.ownership.scope().clone()
    }

    /// Resolves when the term has ended.
    pub async fn cancelled(&self) {
        self.inner.ownership.scope().cancelled().await
    }

    /// True once the term has ended.
    pub fn is_cancelled(&self) -> bool {
        self.inner.ownership.scope().is_cancelled()
    }

    /// Why the term ended, or `None` while it lasts.
    pub fn end_reason(&self) -> Option<TermEnd> {
        self.inner.ownership.end_reason()
    }

    /// Ends the term locally (cancels its scope) without touching the store.
    pub fn end(&self, reason: TermEnd) {
        self.inner.ownership.end(reason);
    }

    /// This term as the election's leader record.
    pub fn info(&self) -> LeaderInfo {
        LeaderInfo::from_kv(&self.inner.prefix, &self.inner.record.lock())
    }

    /// The compares that hold only while this term's candidate key exists
    /// with this term's create revision and lease ([`Fence::compares`]). Add
    /// them to any txn whose writes must only happen "as leader".
    pub fn guard(&self) -> Vec<Compare> {
        self.inner.ownership.fence().compares()
    }

    /// A txn that runs `ops` only while this term leads (the store decides,
    /// atomically). Extend it with more compares or an else-branch if needed.
    pub fn fenced_txn(&self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.inner.ownership.fence().txn(ops)
    }

    /// Runs `ops` as leader: refused locally once the term has ended
    /// ([`ElectionError::TermEnded`]), and by the store once the candidate key
    /// is gone ([`ElectionError::NotLeader`], which also ends the term).
    pub async fn commit_fenced(&self, ops: impl IntoIterator<Item = TxnOp>) -> Result<TxnResponse> {
        self.check_live()?;
        let response = self.inner.store.txn(self.fenced_txn(ops)).await?;
        if !response.succeeded {
            self.end(TermEnd::KeyDeleted);
            return Err(self.not_leader());
        }
        Ok(response)
    }

    /// Replaces the leader's value (what observers and `etcdctl elect -l`
    /// see), keeping the key's create revision and lease.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = value.into();
        self.check_live()?;
        let written = proclaim_fenced(
            &self.inner.store,
            &self.inner.prefix,
            self.inner.ownership.fence(),
            value.clone(),
        )
        .await;
        let revision = match written {
            Ok(revision) => revision,
            Err(e @ ElectionError::NotLeader { .. }) => {
                self.end(TermEnd::KeyDeleted);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut record = self.inner.record.lock();
        record.value = value;
        record.mod_revision = revision;
        record.version += 1;
        Ok(())
    }

    /// Gives up leadership: deletes the candidate key if it is still this
    /// term's (waking the next candidate at once) and ends the term. Calling
    /// it after the term ended for another reason still removes the key.
    pub async fn resign(&self) -> Result<()> {
        self.end(TermEnd::Resigned);
        self.inner
            .store
            .txn(self.inner.ownership.fence().release_txn())
            .await?;
        Ok(())
    }

    fn check_live(&self) -> Result<()> {
        match self.inner.ownership.check_live() {
            Some(reason) => Err(ElectionError::TermEnded {
                token: self.token(),
                reason,
            }),
            None => Ok(()),
        }
    }

    fn not_leader(&self) -> ElectionError {
        ElectionError::NotLeader {
            prefix: self.inner.prefix.clone(),
            token: self.token(),
        }
    }
}

impl EndReason for TermEnd {
    const DROPPED: Self = TermEnd::Dropped;
}

impl From<OwnershipLoss> for TermEnd {
    fn from(loss: OwnershipLoss) -> Self {
        match loss {
            OwnershipLoss::LeaseLost => TermEnd::LeaseLost,
            OwnershipLoss::ValidityExpired => TermEnd::ValidityExpired,
            OwnershipLoss::KeyDeleted => TermEnd::KeyDeleted,
        }
    }
}
