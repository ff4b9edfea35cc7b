//! [`BucketElector`]: balanced bucket ownership on one shared lease.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_store::backoff::{Backoff, BackoffPolicy};
use drover_store::lease::Lease;
use drover_store::reflector::{Codec, Reflector, ReflectorError};
use drover_store::{KeyValue, Put, Store};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::{Bucket, BucketSet, fair_share, fnv1a, mix};
use crate::config::{ElectorConfig, OnLoss};
use crate::election::Election;
use crate::elector::TermSummary;
use crate::leading::{grant_lease, lead_term, let_go};
use crate::metrics::{ElectionMetrics, NoMetrics};
use crate::term::{Term, TermEnd};
use crate::{ElectionError, Result};
use drover_store::lease::LeaseView;

type BucketWork<S> = Arc<dyn Fn(Bucket, Term<S>) -> BoxFuture<'static, ()> + Send + Sync>;
type ReleasedHook = Arc<dyn Fn(&Bucket, &TermSummary) + Send + Sync>;

/// Builds a [`BucketElector`].
pub struct BucketElectorBuilder<S: Store> {
    store: S,
    root: String,
    set: BucketSet,
    config: ElectorConfig,
    work: Option<BucketWork<S>>,
    released: Option<ReleasedHook>,
    metrics: Arc<dyn ElectionMetrics>,
}

impl<S: Store> fmt::Debug for BucketElectorBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketElectorBuilder")
            .field("root", &self.root)
            .field("buckets", &self.set.count())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store> BucketElectorBuilder<S> {
    /// Every knob of the single elector applies, per bucket: timing,
    /// identity, drain timeout, release on cancel, the term limit (each held
    /// bucket is resigned when its term reaches the limit, so a member
    /// waiting for it takes over; this member may win it again when nobody
    /// waits), and on-loss ([`crate::OnLoss::Fatal`]: an involuntary loss of
    /// any held bucket, including the shared lease's, releases every bucket
    /// and ends `run` with [`ElectionError::LeadershipLost`]).
    pub fn config(mut self, config: ElectorConfig) -> Self {
        self.config = config;
        self
    }

    /// The work for one held bucket (required), started in its own task when
    /// the bucket is won; it must stop when the term's scope is cancelled.
    pub fn on_promoted<F, Fut>(mut self, work: F) -> Self
    where
        F: Fn(Bucket, Term<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.work = Some(Arc::new(move |bucket, term| Box::pin(work(bucket, term))));
        self
    }

    /// Called after a held bucket's work drained (the bucket was yielded,
    /// lost or released at shutdown).
    pub fn on_demoted<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Bucket, &TermSummary) + Send + Sync + 'static,
    {
        self.released = Some(Arc::new(hook));
        self
    }

    /// Where measurements go: per bucket (labelled with the bucket's
    /// election prefix) leadership, terms and acquire latency; the shared
    /// lease's keep-alive round trips under the membership prefix.
    pub fn metrics(mut self, metrics: Arc<dyn ElectionMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<BucketElector<S>> {
        self.config.validate()?;
        let work = self.work.ok_or(ElectionError::MissingLeaderWork)?;
        let members_prefix = format!("{}{}.members/", self.root, self.set.group());
        let elections = self
            .set
            .buckets()
            .map(|b| Election::with_prefix(self.store.clone(), format!("{}{}/", self.root, b.name)))
            .collect::<Result<Vec<_>>>()?;
        Ok(BucketElector {
            inner: Arc::new(Inner {
                store: self.store,
                set: self.set,
                elections,
                members_prefix,
                config: self.config,
                work,
                released: self.released,
                metrics: self.metrics,
                held: Mutex::new(HashMap::new()),
                members: Mutex::new(0),
                running: AtomicBool::new(false),
            }),
        })
    }
}

/// Campaigns for the buckets of a [`BucketSet`] and holds at most
/// `ceil(N / members)` of them, on one lease shared by all buckets.
///
/// Each bucket is an ordinary [`Election`] (`<root><bucket name>/`), so each
/// held bucket has its own [`Term`] and fencing token. Members register
/// `<root><group>.members/<lease hex>` under the shared lease; when members
/// join, a member over its share resigns its extra buckets (after their work
/// drained), and members under their share campaign for the rest.
#[derive(Clone)]
pub struct BucketElector<S: Store> {
    inner: Arc<Inner<S>>,
}

struct Inner<S: Store> {
    store: S,
    set: BucketSet,
    elections: Vec<Election<S>>,
    members_prefix: String,
    config: ElectorConfig,
    work: BucketWork<S>,
    released: Option<ReleasedHook>,
    metrics: Arc<dyn ElectionMetrics>,
    held: Mutex<HashMap<u32, Term<S>>>,
    members: Mutex<usize>,
    running: AtomicBool,
}

impl<S: Store> fmt::Debug for BucketElector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketElector")
            .field("identity", &self.inner.config.identity)
            .field("buckets", &self.inner.set.count())
            .field("held", &self.owned().len())
            .finish()
    }
}

/// Why an epoch (the life of one shared lease) ended.
enum EpochEnd {
    Shutdown,
    LeaseLost,
    /// A held bucket was lost and loss is fatal.
    Fatal(TermEnd),
}

enum Slot {
    Idle { not_before: Instant },
    Campaigning { cancel: CancellationToken },
    Leading { stop: CancellationToken },
    Releasing,
}

enum Event<S: Store> {
    /// A campaign won, after this long.
    Won(u32, Term<S>, Duration),
    CampaignEnded(u32, ElectionError),
    Released(u32, TermSummary),
}

impl<S: Store> BucketElector<S> {
    /// A builder for `set`, with each bucket's election under `root` (a raw
    /// key prefix such as `Keys::elections_prefix()`).
    pub fn builder(store: S, root: impl Into<String>, set: BucketSet) -> BucketElectorBuilder<S> {
        BucketElectorBuilder {
            store,
            root: root.into(),
            set,
            config: ElectorConfig::default(),
            work: None,
            released: None,
            metrics: Arc::new(NoMetrics),
        }
    }

    /// The bucket set.
    pub fn set(&self) -> &BucketSet {
        &self.inner.set
    }

    /// This member's identity.
    pub fn identity(&self) -> &str {
        &self.inner.config.identity
    }

    /// Buckets held now (terms not ended and valid), in index order.
    pub fn owned(&self) -> Vec<Bucket> {
        let held = self.inner.held.lock();
        let mut owned: Vec<Bucket> = held
            .iter()
            .filter(|(_, t)| t.is_valid())
            .filter_map(|(i, _)| self.inner.set.bucket(*i))
            .collect();
        owned.sort_by_key(|b| b.index);
        owned
    }

    /// The term of a held bucket (for fenced writes).
    pub fn term(&self, index: u32) -> Option<Term<S>> {
        self.inner
            .held
            .lock()
            .get(&index)
            .filter(|t| t.is_valid())
            .cloned()
    }

    /// True if this member holds the bucket that owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.term(self.inner.set.owner(key).index).is_some()
    }

    /// Members seen in the membership prefix (including this one).
    pub fn members(&self) -> usize {
        *self.inner.members.lock()
    }

    /// Runs until `shutdown` fires. Buckets are released after their work
    /// drained when `release_on_cancel` is set; otherwise they lapse with
    /// the lease.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        if self.inner.running.swap(true, Ordering::SeqCst) {
            return Err(ElectionError::AlreadyRunning);
        }
        let span = tracing::info_span!(
            "buckets",
            group = %self.inner.set.group(),
            identity = %self.inner.config.identity
        );
        let result = self.run_epochs(shutdown).instrument(span).await;
        self.inner.held.lock().clear();
        self.inner.running.store(false, Ordering::SeqCst);
        result
    }

    /// One epoch per lease: runs until the lease is lost (then starts over),
    /// shutdown, or a fatal loss.
    async fn run_epochs(&self, shutdown: CancellationToken) -> Result<()> {
        let config = &self.inner.config;
        let label: Arc<str> = Arc::from(self.inner.members_prefix.as_str());
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let granted = grant_lease(
                &self.inner.store,
                config,
                &self.inner.metrics,
                &label,
                &shutdown,
            )
            .await;
            let lease = match granted {
                Ok(Some(lease)) => lease,
                Ok(None) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "granting the bucket lease failed; retrying");
                    self.pause(&shutdown).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let member_key = format!("{}{:x}", self.inner.members_prefix, lease.id());
            let registered = self
                .inner
                .store
                .put(Put::new(member_key, config.identity.as_bytes()).with_lease(lease.id()))
                .await;
            if let Err(e) = registered {
                let_go(lease, false).await;
                if e.is_retryable() || matches!(e, drover_store::StoreError::LeaseNotFound(_)) {
                    tracing::warn!(error = %e, "registering as a member failed; retrying");
                    self.pause(&shutdown).await;
                    continue;
                }
                return Err(e.into());
            }
            match self.epoch(&lease, &shutdown).await {
                EpochEnd::LeaseLost => let_go(lease, false).await,
                EpochEnd::Shutdown => {
                    // Without release on cancel, held buckets' keys linger
                    // until the lease lapses.
                    let_go(lease, !config.release_on_cancel).await;
                    return Ok(());
                }
                EpochEnd::Fatal(reason) => {
                    let_go(lease, false).await;
                    return Err(ElectionError::LeadershipLost { reason });
                }
            }
        }
    }

    async fn pause(&self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(self.inner.config.jittered_retry()) => {}
        }
    }

    /// Manages the buckets while `lease` lives.
    async fn epoch(&self, lease: &Lease<S>, shutdown: &CancellationToken) -> EpochEnd {
        let inner = &self.inner;
        let n = inner.set.count();
        let (members_tx, mut members_rx) = watch::channel(1usize);
        let counter = tokio::spawn(
            count_members(
                inner.store.clone(),
                inner.members_prefix.clone(),
                members_tx,
            )
            .in_current_span(),
        );
        let _counter = AbortOnDropHandle::new(counter);
        let (events_tx, mut events_rx) = mpsc::channel::<Event<S>>(n as usize * 2 + 4);
        let mut slots: Vec<Slot> = (0..n)
            .map(|_| Slot::Idle {
                not_before: Instant::now(),
            })
            .collect();
        let lost = lease.lost_token();
        let mut stopping = false;
        let mut fatal = None;
        loop {
            let members = (*members_rx.borrow_and_update()).max(1);
            *inner.members.lock() = members;
            let giving_up = stopping || fatal.is_some();
            if giving_up || lost.is_cancelled() {
                for slot in slots.iter_mut() {
                    match slot {
                        Slot::Campaigning { cancel } => cancel.cancel(),
                        // Held buckets are given up on shutdown or a fatal
                        // loss; when the lease was lost, their terms end by
                        // themselves (and report why).
                        Slot::Leading { stop } if giving_up => {
                            stop.cancel();
                            *slot = Slot::Releasing;
                        }
                        _ => {}
                    }
                }
                let busy = slots.iter().any(|s| !matches!(s, Slot::Idle { .. }));
                if !busy {
                    return match fatal {
                        Some(reason) => EpochEnd::Fatal(reason),
                        None if stopping => EpochEnd::Shutdown,
                        None => EpochEnd::LeaseLost,
                    };
                }
            } else {
                self.rebalance(&mut slots, members, lease, &events_tx);
            }
            let wake = slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Idle { not_before } if *not_before > Instant::now() => Some(*not_before),
                    _ => None,
                })
                .min();
            tokio::select! {
                _ = shutdown.cancelled(), if !stopping => stopping = true,
                _ = lost.cancelled(), if !lost.is_cancelled() => {
                    tracing::warn!("bucket lease lost; releasing every bucket");
                }
                changed = members_rx.changed() => {
                    if changed.is_err() {
                        // The counter stopped (cannot happen while we hold
                        // its handle); keep the last count.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                _ = sleep_until_opt(wake) => {}
                event = events_rx.recv() => {
                    let Some(event) = event else { continue };
                    if let Some(reason) = self.apply(event, &mut slots, &events_tx, shutdown)
                        && fatal.is_none()
                        && !stopping
                    {
                        tracing::error!(%reason, "lost a bucket and loss is fatal; releasing every bucket");
                        fatal = Some(reason);
                    }
                }
            }
        }
    }

    /// Applies one event to the slots; returns the reason of a held
    /// bucket's loss if loss is fatal.
    fn apply(
        &self,
        event: Event<S>,
        slots: &mut [Slot],
        events: &mpsc::Sender<Event<S>>,
        shutdown: &CancellationToken,
    ) -> Option<TermEnd> {
        let inner = &self.inner;
        match event {
            Event::Won(i, term, latency) => {
                let stop = CancellationToken::new();
                let bucket = inner.set.bucket(i)?;
                tracing::info!(bucket = %bucket, token = term.token(), "promoted");
                let label = inner.elections[i as usize].prefix();
                inner.metrics.acquire_latency(label, latency);
                inner.metrics.set_leader(label, true);
                inner.metrics.term_started(label, term.token());
                inner.held.lock().insert(i, term.clone());
                slots[i as usize] = Slot::Leading { stop: stop.clone() };
                let task = lead_bucket(
                    inner.clone(),
                    bucket.clone(),
                    term,
                    stop,
                    shutdown.clone(),
                    events.clone(),
                );
                tokio::spawn(task.instrument(tracing::info_span!("bucket", bucket = %bucket)));
                None
            }
            Event::CampaignEnded(i, e) => {
                let retry = match e {
                    ElectionError::Cancelled | ElectionError::LeaseLost { .. } => Duration::ZERO,
                    other => {
                        tracing::warn!(bucket = i, error = %other, "bucket campaign failed; retrying");
                        inner.config.jittered_retry()
                    }
                };
                slots[i as usize] = Slot::Idle {
                    not_before: Instant::now() + retry,
                };
                None
            }
            Event::Released(i, summary) => {
                inner.held.lock().remove(&i);
                if let (Some(hook), Some(bucket)) = (&inner.released, inner.set.bucket(i)) {
                    hook(&bucket, &summary);
                }
                slots[i as usize] = Slot::Idle {
                    not_before: Instant::now(),
                };
                (summary.reason.is_loss() && inner.config.on_loss == OnLoss::Fatal)
                    .then_some(summary.reason)
            }
        }
    }

    /// Holds at most the fair share: yields extras, withdraws waiting
    /// campaigns at the share, campaigns below it.
    fn rebalance(
        &self,
        slots: &mut [Slot],
        members: usize,
        lease: &Lease<S>,
        events: &mpsc::Sender<Event<S>>,
    ) {
        let inner = &self.inner;
        let share = fair_share(inner.set.count(), members) as usize;
        let leading: Vec<u32> = (0..slots.len() as u32)
            .filter(|i| matches!(slots[*i as usize], Slot::Leading { .. }))
            .collect();
        if leading.len() > share {
            // Yield the buckets this member likes least (rendezvous order),
            // so which member keeps which bucket is stable.
            let mut ranked = leading.clone();
            ranked.sort_by_key(|i| self.affinity(*i));
            for i in ranked.iter().take(leading.len() - share) {
                if let Slot::Leading { stop } = &slots[*i as usize] {
                    tracing::info!(
                        bucket = i,
                        members,
                        share,
                        "yielding a bucket above the fair share"
                    );
                    stop.cancel();
                }
                slots[*i as usize] = Slot::Releasing;
            }
        }
        let holding = slots
            .iter()
            .filter(|s| matches!(s, Slot::Leading { .. }))
            .count();
        let now = Instant::now();
        for (i, slot) in slots.iter_mut().enumerate() {
            match slot {
                Slot::Campaigning { cancel } if holding >= share => cancel.cancel(),
                Slot::Idle { not_before } if holding < share && *not_before <= now => {
                    let cancel = CancellationToken::new();
                    let election = inner.elections[i].clone();
                    let value = inner.config.identity.clone();
                    let index = i as u32;
                    let events = events.clone();
                    let campaign_cancel = cancel.clone();
                    let view = LeaseView::of(lease);
                    tokio::spawn(
                        async move {
                            let started = Instant::now();
                            let result = election
                                .campaign_with_view(view, value.into_bytes(), &campaign_cancel)
                                .await;
                            let event = match result {
                                Ok(term) => Event::Won(index, term, started.elapsed()),
                                Err(e) => Event::CampaignEnded(index, e),
                            };
                            let _ = events.send(event).await;
                        }
                        .in_current_span(),
                    );
                    *slot = Slot::Campaigning { cancel };
                }
                _ => {}
            }
        }
    }

    /// Rendezvous weight of (this member, bucket): higher = keep longer.
    fn affinity(&self, index: u32) -> u64 {
        let mut key = self.inner.config.identity.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&index.to_be_bytes());
        mix(fnv1a(&key))
    }
}

/// Leads one held bucket until its term ends or it is told to stop (a
/// yield, or shutdown), then reports the drained term.
async fn lead_bucket<S: Store>(
    inner: Arc<Inner<S>>,
    bucket: Bucket,
    term: Term<S>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    events: mpsc::Sender<Event<S>>,
) {
    let work = (inner.work)(bucket.clone(), term.clone());
    let stopped = async {
        stop.cancelled().await;
        if shutdown.is_cancelled() {
            TermEnd::Shutdown
        } else {
            TermEnd::Resigned
        }
    };
    let label = inner.elections[bucket.index as usize].prefix();
    let ended = || inner.metrics.set_leader(label, false);
    let summary = lead_term(&term, work, stopped, ended, &inner.config).await;
    let _ = events.send(Event::Released(bucket.index, summary)).await;
}

/// Membership keys for a [`Reflector`]: one member per key; values unused.
struct MemberCodec;

impl Codec for MemberCodec {
    type Id = Vec<u8>;
    type Value = ();
    type Error = Infallible;

    fn id(&self, key: &[u8]) -> std::result::Result<Vec<u8>, Infallible> {
        Ok(key.to_vec())
    }

    fn decode(&self, kv: &KeyValue) -> std::result::Result<(Vec<u8>, ()), Infallible> {
        Ok((kv.key.clone(), ()))
    }
}

/// How long the member count waits after a store failure that outlasted the
/// reflector's own retries.
const MEMBERS_BACKOFF: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(50), Duration::from_secs(1));

/// Keeps `tx` set to the number of keys under the membership prefix, after
/// each complete revision. A store failure is logged and retried (the count
/// keeps its last value meanwhile); the reflector resumes without a gap.
async fn count_members<S: Store>(store: S, prefix: String, tx: watch::Sender<usize>) {
    let mut members = Reflector::prefix(store, prefix.as_str(), MemberCodec);
    let cache = members.cache();
    let mut backoff = Backoff::new(MEMBERS_BACKOFF);
    loop {
        match members.next().await {
            Ok(_) => backoff.reset(),
            Err(ReflectorError::Corrupt { source, .. }) => match source {},
            Err(ReflectorError::Store { source, .. }) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    error = %source,
                    retry_in_ms = delay.as_millis() as u64,
                    "watching bucket members failed; the count keeps its last value"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        if members.revision_complete() {
            tx.send_replace(cache.len());
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
