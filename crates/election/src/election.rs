//! [`Election`]: campaign, leader and observe on one election prefix, in
//! etcd's `clientv3/concurrency` key layout.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use drover_store::backoff::{Backoff, BackoffPolicy};
use drover_store::fence::Fence;
use drover_store::lease::{Lease, LeaseView};
use drover_store::{
    Compare, CompareOp, EventKind, Get, KeyValue, LeaseId, Put, Revision, SortOrder, SortTarget,
    Store, StoreError, Txn, TxnOpResponse, Watch,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::observe::Observer;
use crate::term::Term;
use crate::{ElectionError, Result};

/// The current leader of an election (or a candidate): its key, lease,
/// value and fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The full candidate key.
    pub key: String,
    /// The candidate's id: the key without the election prefix (the lease id
    /// in lowercase hex for Drover and etcd candidates).
    pub id: String,
    /// The lease the key is bound to.
    pub lease: LeaseId,
    /// The proclaimed value (an elector's identity by default).
    pub value: Vec<u8>,
    /// The fencing token: the key's create revision.
    pub token: Revision,
    /// The revision of the key's last write (its creation or the latest
    /// proclaim).
    pub mod_revision: Revision,
    /// How many times the key was written since it was created (1 after
    /// creation, as etcd counts).
    pub version: i64,
}

impl LeaderInfo {
    pub(crate) fn from_kv(prefix: &str, kv: &KeyValue) -> Self {
        let key = kv.key_str().into_owned();
        let id = key.strip_prefix(prefix).unwrap_or(&key).to_owned();
        LeaderInfo {
            key,
            id,
            lease: kv.lease,
            value: kv.value.clone(),
            token: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
        }
    }

    /// The candidate key as the store would return it.
    pub fn to_kv(&self) -> KeyValue {
        KeyValue {
            key: self.key.clone().into_bytes(),
            value: self.value.clone(),
            create_revision: self.token,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }

    /// The value as UTF-8, lossily.
    pub fn value_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// One election: every key under its prefix is a candidate, and the key with
/// the smallest create revision leads.
///
/// The layout is etcd's `clientv3/concurrency` election: a candidate's key is
/// `<prefix><lease id in lowercase hex>`, bound to its lease. A Drover
/// candidate and a Go (or `etcdctl elect`) candidate on the same prefix
/// therefore exclude each other.
#[derive(Clone)]
pub struct Election<S: Store> {
    store: S,
    prefix: String,
}

impl<S: Store> fmt::Debug for Election<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Election")
            .field("prefix", &self.prefix)
            .field("backend", &self.store.backend_name())
            .finish()
    }
}

/// How campaigns and terms retry a failed store call: 50 ms doubling to 1 s.
pub(crate) const STORE_RETRY: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1));

impl<S: Store> Election<S> {
    /// An election on a raw key prefix, used exactly as given: candidate keys
    /// are `<prefix><lease hex>`. `etcdctl elect NAME` (and Go's
    /// `concurrency.NewElection(s, NAME)`) use the prefix `NAME/`, so
    /// `Election::with_prefix(store, "NAME/")` joins their election.
    pub fn with_prefix(store: S, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(ElectionError::InvalidName {
                name: prefix,
                reason: "the election prefix must not be empty",
            });
        }
        Ok(Election { store, prefix })
    }

    /// An election named `name` under Drover's key layout
    /// (`<root>election/<name>/`).
    pub fn named(store: S, keys: &drover_store::keys::Keys, name: &str) -> Result<Self> {
        Election::with_prefix(store, keys.election_prefix(name)?)
    }

    /// The election prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The candidate key for a lease: `<prefix><lease id in lowercase hex>`.
    pub fn candidate_key(&self, lease: LeaseId) -> String {
        drover_store::keys::election::lease_key(&self.prefix, lease)
    }

    /// Campaigns with `lease` until this candidate leads, and returns the
    /// term. See [`Election::campaign_until`].
    pub async fn campaign<L: Store>(
        &self,
        lease: &Lease<L>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Term<S>> {
        self.campaign_until(lease, value, &CancellationToken::new())
            .await
    }

    /// Campaigns with `lease` until this candidate leads or `cancel` fires.
    ///
    /// The candidate key is created bound to the lease (or, if it exists
    /// already, kept and its value updated, as etcd does). While waiting, the
    /// candidate watches only its predecessor (the newest older key, so a
    /// resignation wakes exactly one waiter) and its own key and lease: if
    /// the lease is lost it returns [`ElectionError::LeaseLost`], if the key
    /// disappears [`ElectionError::CandidacyLost`], never a term it does not
    /// hold. Leadership is confirmed atomically (own key present with its
    /// create revision and lease, no older key) and with the lease still
    /// locally valid.
    ///
    /// On cancellation (or if the future is dropped) the candidate key is
    /// withdrawn.
    pub async fn campaign_until<L: Store>(
        &self,
        lease: &Lease<L>,
        value: impl Into<Vec<u8>>,
        cancel: &CancellationToken,
    ) -> Result<Term<S>> {
        self.campaign_with_view(LeaseView::of(lease), value.into(), cancel)
            .await
    }

    /// [`Election::campaign_until`] on a lease's view, for tasks that do not
    /// own the lease handle.
    pub async fn campaign_with_view(
        &self,
        view: LeaseView,
        value: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<Term<S>> {
        let (record, confirmed) = self.lead(&view, value, cancel).await?;
        Ok(Term::start(
            self.store.clone(),
            self.prefix.clone(),
            record,
            view,
            confirmed,
        ))
    }

    /// Campaigns for a lease a remote client keeps alive, until it leads or
    /// `cancel` fires, and returns its leader record without starting a
    /// [`Term`]: the leader is the remote process, which holds leadership
    /// through its lease and key (the etcd API's Election and Lock services
    /// campaign this way). Ownership ends only when the store refuses the
    /// lease or deletes the key ([`LeaseView::kept_alive_elsewhere`]).
    pub async fn campaign_for_remote_lease(
        &self,
        lease: LeaseId,
        value: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<LeaderInfo> {
        let view = LeaseView::kept_alive_elsewhere(lease);
        let (record, _) = self.lead(&view, value, cancel).await?;
        Ok(LeaderInfo::from_kv(&self.prefix, &record))
    }

    /// Creates the candidate key and waits until it leads: the key as
    /// written and the revision at which leadership was confirmed. The key
    /// is withdrawn on cancellation, or if the future is dropped.
    async fn lead(
        &self,
        view: &LeaseView,
        value: Vec<u8>,
        cancel: &CancellationToken,
    ) -> Result<(KeyValue, Revision)> {
        let key = self.candidate_key(view.id());
        let span = tracing::debug_span!("campaign", prefix = %self.prefix, key = %key);
        async {
            if !view.is_valid() {
                return Err(ElectionError::LeaseLost { lease: view.id() });
            }
            let record = self.create_candidate(&key, &value, view.id()).await?;
            let token = record.create_revision;
            let mut withdraw = WithdrawOnDrop {
                store: Some(self.store.clone()),
                key: key.clone(),
                token,
            };
            match self.wait_to_lead(&key, token, view, cancel).await {
                Ok(confirmed) => {
                    withdraw.disarm();
                    tracing::debug!(token, "leading");
                    Ok((record, confirmed))
                }
                Err(ElectionError::Cancelled) => {
                    withdraw.disarm();
                    // Best effort: a failed withdrawal leaves a key that
                    // expires with the lease.
                    if let Err(e) = withdraw_candidate(&self.store, &key, token).await {
                        tracing::warn!(error = %e, "could not withdraw the candidate key");
                    }
                    Err(ElectionError::Cancelled)
                }
                Err(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    /// Creates the candidate key (or adopts an existing one) and returns it
    /// as written.
    async fn create_candidate(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<KeyValue> {
        let txn = Txn::new()
            .when([Compare::absent(key)])
            .and_then([Put::new(key, value).with_lease(lease).into()])
            .or_else([Get::key(key).into()]);
        let response = match self.store.txn(txn).await {
            Ok(r) => r,
            Err(StoreError::LeaseNotFound(_)) => return Err(ElectionError::LeaseLost { lease }),
            Err(e) => return Err(e.into()),
        };
        if response.succeeded {
            return Ok(KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.to_vec(),
                create_revision: response.revision,
                mod_revision: response.revision,
                version: 1,
                lease,
            });
        }
        let existing = match response.responses.first() {
            Some(TxnOpResponse::Get(got)) => got.first().cloned(),
            _ => None,
        };
        let Some(existing) = existing else {
            // Deleted between the compare and the read cannot happen inside
            // one txn; treat an odd response as a lost candidacy.
            return Err(ElectionError::CandidacyLost {
                key: key.to_owned(),
            });
        };
        if existing.lease != lease {
            return Err(ElectionError::CandidacyLost {
                key: key.to_owned(),
            });
        }
        if existing.value == value {
            return Ok(existing);
        }
        let txn = Txn::new()
            .when([Compare::create_revision(
                key,
                CompareOp::Equal,
                existing.create_revision,
            )])
            .and_then([Put::new(key, value).with_lease(lease).into()]);
        let response = self.store.txn(txn).await?;
        if !response.succeeded {
            return Err(ElectionError::CandidacyLost {
                key: key.to_owned(),
            });
        }
        Ok(KeyValue {
            value: value.to_vec(),
            mod_revision: response.revision,
            version: existing.version + 1,
            ..existing
        })
    }

    /// Waits until no older candidate is left; returns the revision at which
    /// leadership was confirmed.
    async fn wait_to_lead(
        &self,
        key: &str,
        token: Revision,
        lease: &LeaseView,
        cancel: &CancellationToken,
    ) -> Result<Revision> {
        let mut backoff = Backoff::new(STORE_RETRY);
        loop {
            if cancel.is_cancelled() {
                return Err(ElectionError::Cancelled);
            }
            // One atomic read: is my key still mine, and who is just ahead?
            let probe = Txn::new()
                .fenced(&Fence::new(key, token, lease.id()))
                .and_then([Get::prefix(self.prefix.as_str())
                    .sorted(SortTarget::CreateRevision, SortOrder::Descend)
                    .with_max_create_revision(token - 1)
                    .with_limit(1)
                    .keys_only()
                    .into()]);
            let response = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ElectionError::Cancelled),
                _ = lease.lost().cancelled() => return Err(ElectionError::LeaseLost { lease: lease.id() }),
                r = self.store.txn(probe) => r,
            };
            let response = match response {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "campaign probe failed; retrying");
                    self.pause(backoff.next_delay(), lease, cancel).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !response.succeeded {
                return Err(if lease.lost().is_cancelled() {
                    ElectionError::LeaseLost { lease: lease.id() }
                } else {
                    ElectionError::CandidacyLost {
                        key: key.to_owned(),
                    }
                });
            }
            let predecessor = match response.responses.first() {
                Some(TxnOpResponse::Get(got)) => got.first().map(|kv| kv.key.clone()),
                _ => None,
            };
            let Some(predecessor) = predecessor else {
                if !lease.is_valid() {
                    return Err(ElectionError::LeaseLost { lease: lease.id() });
                }
                return Ok(response.revision);
            };
            tracing::trace!(predecessor = %String::from_utf8_lossy(&predecessor), "waiting");
            let outcome = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ElectionError::Cancelled),
                _ = lease.lost().cancelled() => return Err(ElectionError::LeaseLost { lease: lease.id() }),
                _ = lease.validity_passed() => {
                    return Err(ElectionError::LeaseLost { lease: lease.id() })
                }
                o = self.wait_for_change(predecessor, key, response.revision + 1) => o,
            };
            match outcome {
                Ok(Change::PredecessorGone) => backoff.reset(),
                Ok(Change::OwnKeyGone) => {
                    return Err(ElectionError::CandidacyLost {
                        key: key.to_owned(),
                    });
                }
                Err(e) => {
                    // Compacted, a broken stream or an unreachable store:
                    // probe again (the probe re-validates everything).
                    tracing::debug!(error = %e, "campaign watch interrupted; probing again");
                    self.pause(backoff.next_delay(), lease, cancel).await?;
                }
            }
        }
    }

    async fn pause(
        &self,
        delay: Duration,
        lease: &LeaseView,
        cancel: &CancellationToken,
    ) -> Result<()> {
        tokio::select! {
            _ = cancel.cancelled() => Err(ElectionError::Cancelled),
            _ = lease.lost().cancelled() => Err(ElectionError::LeaseLost { lease: lease.id() }),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Watches the predecessor and the own key from `start` until either is
    /// deleted.
    async fn wait_for_change(
        &self,
        predecessor: Vec<u8>,
        own: &str,
        start: Revision,
    ) -> std::result::Result<Change, StoreError> {
        let mut pred = self
            .store
            .watch(Watch::key(predecessor).from_revision(start))
            .await?;
        let mut mine = self
            .store
            .watch(Watch::key(own).from_revision(start))
            .await?;
        loop {
            tokio::select! {
                batch = pred.next_batch() => {
                    let batch = batch.ok_or(StoreError::Closed)??;
                    if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                        return Ok(Change::PredecessorGone);
                    }
                }
                batch = mine.next_batch() => {
                    let batch = batch.ok_or(StoreError::Closed)??;
                    if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                        return Ok(Change::OwnKeyGone);
                    }
                }
            }
        }
    }

    /// The current leader (the oldest candidate), or `None`.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>> {
        Ok(self.leader_at_revision().await?.0)
    }

    /// The current leader (or `None`) and the store revision it was read at,
    /// from which a watch continues without missing a change.
    pub async fn leader_at_revision(&self) -> Result<(Option<LeaderInfo>, Revision)> {
        let got = self
            .store
            .get(
                Get::prefix(self.prefix.as_str())
                    .sorted(SortTarget::CreateRevision, SortOrder::Ascend)
                    .with_limit(1),
            )
            .await?;
        let leader = got.first().map(|kv| LeaderInfo::from_kv(&self.prefix, kv));
        Ok((leader, got.revision))
    }

    /// Every candidate, leader first.
    pub async fn candidates(&self) -> Result<Vec<LeaderInfo>> {
        let got = self
            .store
            .get(
                Get::prefix(self.prefix.as_str())
                    .sorted(SortTarget::CreateRevision, SortOrder::Ascend),
            )
            .await?;
        Ok(got
            .kvs
            .iter()
            .map(|kv| LeaderInfo::from_kv(&self.prefix, kv))
            .collect())
    }

    /// A stream of leadership changes from one prefix watch: the current
    /// state first, then every change ([`crate::Observation`]).
    pub fn observe(&self) -> Observer {
        Observer::spawn(self.store.clone(), self.prefix.clone())
    }

    /// Replaces the value of the candidate `fence` names without holding its
    /// [`Term`] (etcd's `Proclaim` with a leader key from an earlier
    /// campaign). Returns the revision of the write, or
    /// [`ElectionError::NotLeader`] once that key is gone or belongs to
    /// another candidacy or lease.
    pub async fn proclaim_as(&self, fence: &Fence, value: impl Into<Vec<u8>>) -> Result<Revision> {
        proclaim_fenced(&self.store, &self.prefix, fence, value.into()).await
    }

    /// Deletes the candidate key `fence` names if it still has the fence's
    /// create revision, so it never removes a successor (etcd's `Resign`
    /// with a leader key). A key that is gone already is not an error.
    /// Returns the revision of the answer.
    pub async fn resign_as(&self, fence: &Fence) -> Result<Revision> {
        Ok(self.store.txn(fence.release_txn()).await?.revision)
    }
}

/// Puts `value` on the fenced candidate key, keeping its lease; the write's
/// revision, or [`ElectionError::NotLeader`].
pub(crate) async fn proclaim_fenced<S: Store>(
    store: &S,
    prefix: &str,
    fence: &Fence,
    value: Vec<u8>,
) -> Result<Revision> {
    let put = Put::new(fence.key(), value).with_lease(fence.lease());
    let response = store.txn(fence.txn([put.into()])).await?;
    if !response.succeeded {
        return Err(ElectionError::NotLeader {
            prefix: prefix.to_owned(),
            token: fence.token(),
        });
    }
    Ok(response.revision)
}

enum Change {
    PredecessorGone,
    OwnKeyGone,
}

/// Deletes a candidate key if it still has the given create revision.
pub(crate) async fn withdraw_candidate<S: Store>(
    store: &S,
    key: &str,
    token: Revision,
) -> std::result::Result<(), StoreError> {
    // Release compares the create revision only; the lease does not matter.
    let release = Fence::new(key, token, 0).release_txn();
    store.txn(release).await.map(|_| ())
}

/// Withdraws the candidate key in the background if a campaign future is
/// dropped while waiting.
struct WithdrawOnDrop<S: Store> {
    store: Option<S>,
    key: String,
    token: Revision,
}

impl<S: Store> WithdrawOnDrop<S> {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl<S: Store> Drop for WithdrawOnDrop<S> {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        let token = self.token;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = withdraw_candidate(&store, &key, token).await {
                    tracing::warn!(error = %e, key = %key, "could not withdraw a dropped campaign's key");
                }
            });
        }
    }
}
