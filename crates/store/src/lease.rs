//! [`Lease`]: a store lease kept alive in the background, with a
//! conservative local view of how long it is certainly still valid.
//!
//! The store expires a lease `ttl` after it last *received* a keep-alive. The
//! client only knows when it *sent* one, which is earlier, so the store's
//! deadline is never earlier than `send time + ttl`. [`Lease::valid_until`] is
//! that bound minus a safety margin (for clock-rate differences and the time a
//! caller needs to act on it):
//!
//! ```text
//! valid_until = send time of the last acknowledged keep-alive + returned TTL - safety margin
//! ```
//!
//! The background task renews every `keep_alive_interval` (default TTL/3,
//! like etcd's `clientv3`), retries failed renewals, and declares the lease
//! *lost* (firing [`Lease::lost_token`]) when
//! - the store answers [`StoreError::LeaseNotFound`] (or is closed),
//! - `valid_until` passes without a successful renewal: a timer, so a hung
//!   store still makes `lost` fire before the store could expire the lease,
//! - the lease is revoked or dropped.
//!
//! [`Lease::orphan`] stops the keep-alives without revoking: the lease lapses
//! in the store after its TTL (for holders that want their keys to outlive a
//! clean exit), and `lost` still fires at `valid_until`.
//! [`Lease::keep_alive_stats`] and [`Lease::subscribe_keep_alives`] report
//! the round trip of each acknowledged keep-alive, for metrics.
//!
//! Only tokio time is used, so tests run with paused time.
//!
//! ```
//! use std::time::Duration;
//! use drover_store::{embedded::EmbeddedStore, lease::{Lease, LeaseConfig}, Put, Store};
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EmbeddedStore::in_memory();
//! let lease = Lease::grant(store.clone(), LeaseConfig::new(2)).await?;
//! store.put(Put::new("/drover/nodes/n1", "up").with_lease(lease.id())).await?;
//!
//! // Long past the TTL, the background task has kept it alive.
//! tokio::time::sleep(Duration::from_secs(10)).await;
//! assert!(lease.is_valid());
//!
//! lease.revoke().await?; // deletes /drover/nodes/n1
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::{Backoff, BackoffPolicy};
use crate::{LeaseId, Result, Store, StoreError};

/// The smallest default safety margin.
const MIN_DEFAULT_MARGIN: Duration = Duration::from_millis(100);

/// The first delay before retrying a failed keep-alive; doubles up to the
/// keep-alive interval.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// How a [`Lease`] is granted and kept alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Requested TTL in seconds (the store may grant more, e.g. etcd's
    /// minimum; never less).
    pub ttl_secs: i64,
    /// Time between keep-alives; `None` = a third of the granted TTL.
    pub keep_alive_interval: Option<Duration>,
    /// Subtracted from the store's deadline to get [`Lease::valid_until`]:
    /// room for clock-rate differences between client and store, and for the
    /// holder to stop acting before the store could expire the lease.
    /// [`LeaseConfig::new`] sets `max(ttl / 10, 100 ms)`.
    pub safety_margin: Duration,
}

impl LeaseConfig {
    /// A config with the default interval (TTL/3) and margin
    /// (`max(ttl / 10, 100 ms)`).
    pub fn new(ttl_secs: i64) -> Self {
        let ttl = Duration::from_secs(ttl_secs.max(0).unsigned_abs());
        LeaseConfig {
            ttl_secs,
            keep_alive_interval: None,
            safety_margin: (ttl / 10).max(MIN_DEFAULT_MARGIN),
        }
    }

    pub fn with_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    pub fn with_safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// Checks the config against a TTL (requested or granted).
    fn validate(&self, ttl_secs: i64) -> Result<()> {
        if ttl_secs <= 0 {
            return Err(StoreError::InvalidArgument(format!(
                "lease ttl_secs must be positive, got {ttl_secs}"
            )));
        }
        crate::limits::validate_lease_ttl(ttl_secs)?;
        let ttl = secs(ttl_secs);
        if self.safety_margin >= ttl {
            return Err(StoreError::InvalidArgument(format!(
                "lease safety_margin {:?} must be shorter than the TTL {ttl:?}",
                self.safety_margin
            )));
        }
        if let Some(interval) = self.keep_alive_interval
            && (interval.is_zero() || interval >= ttl - self.safety_margin)
        {
            return Err(StoreError::InvalidArgument(format!(
                "lease keep_alive_interval {interval:?} must be positive and shorter than \
                 the TTL minus the safety margin ({:?})",
                ttl - self.safety_margin
            )));
        }
        Ok(())
    }
}

/// Why a [`Lease`] was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// The store no longer knows the lease (it expired there).
    NotFound,
    /// No keep-alive succeeded before `valid_until`.
    Expired,
    /// The store was shut down.
    StoreClosed,
    /// [`Lease::revoke`] was called or the handle was dropped.
    Revoked,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::NotFound => "the store no longer knows the lease",
            LostReason::Expired => "no keep-alive succeeded before the lease's deadline",
            LostReason::StoreClosed => "the store was closed",
            LostReason::Revoked => "the lease was revoked",
        })
    }
}

/// The acknowledged keep-alives of a [`Lease`] so far, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepAliveStats {
    /// Keep-alives the store acknowledged since the grant.
    pub acknowledged: u64,
    /// Round trip (send to answer) of the latest acknowledged keep-alive;
    /// `None` before the first.
    pub last_rtt: Option<Duration>,
}

/// State shared by the handle and its keep-alive task.
#[derive(Debug)]
struct Shared {
    id: LeaseId,
    validity: watch::Sender<Instant>,
    keep_alives: watch::Sender<KeepAliveStats>,
    lost: CancellationToken,
    lost_reason: Mutex<Option<LostReason>>,
}

impl Shared {
    /// Marks the lease lost (first reason wins) and fires the token.
    fn mark_lost(&self, reason: LostReason) {
        {
            let mut slot = self.lost_reason.lock();
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        self.lost.cancel();
    }
}

/// A lease kept alive in the background until revoked, dropped or lost.
///
/// Dropping the handle revokes the lease in the background (best effort).
pub struct Lease<S: Store> {
    store: S,
    shared: Arc<Shared>,
    ttl: Duration,
    /// Stops the keep-alive task (revoke/drop).
    stop: CancellationToken,
    /// Stops renewing but keeps the expiry timer ([`Lease::orphan`]).
    orphaned: CancellationToken,
    revoked: bool,
}

impl<S: Store> fmt::Debug for Lease<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &format_args!("{:x}", self.shared.id))
            .field("backend", &self.store.backend_name())
            .field("ttl", &self.ttl)
            .field("valid_until", &*self.shared.validity.borrow())
            .field("lost", &self.lost_reason())
            .finish()
    }
}

impl<S: Store> Lease<S> {
    /// Grants a lease and starts keeping it alive. Must be called inside a
    /// tokio runtime.
    pub async fn grant(store: S, config: LeaseConfig) -> Result<Self> {
        config.validate(config.ttl_secs)?;
        let sent = Instant::now();
        let grant = store.lease_grant(config.ttl_secs).await?;
        // A store never grants less than asked (etcd only raises TTLs), but
        // the handle must stay correct if one did.
        if let Err(e) = config.validate(grant.ttl) {
            let _ = store.lease_revoke(grant.id).await;
            return Err(e);
        }
        let ttl = secs(grant.ttl);
        let interval = config.keep_alive_interval.unwrap_or(ttl / 3);
        let valid_until = sent + ttl - config.safety_margin;
        let shared = Arc::new(Shared {
            id: grant.id,
            validity: watch::Sender::new(valid_until),
            keep_alives: watch::Sender::new(KeepAliveStats::default()),
            lost: CancellationToken::new(),
            lost_reason: Mutex::new(None),
        });
        let stop = CancellationToken::new();
        let orphaned = CancellationToken::new();
        let span = tracing::info_span!("lease", lease = %format_args!("{:x}", grant.id));
        span.in_scope(|| {
            tracing::debug!(ttl = grant.ttl, ?interval, margin = ?config.safety_margin, "lease granted")
        });
        let task = KeepAlive {
            store: store.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
            orphaned: orphaned.clone(),
            interval,
            margin: config.safety_margin,
        };
        tokio::spawn(task.run().instrument(span));
        Ok(Lease {
            store,
            shared,
            ttl,
            stop,
            orphaned,
            revoked: false,
        })
    }

    /// The lease id, for [`crate::Put::with_lease`] and compares.
    pub fn id(&self) -> LeaseId {
        self.shared.id
    }

    /// The TTL the store granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The store this lease lives in.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Until when the lease is certainly alive in the store (conservative:
    /// the send time of the last acknowledged keep-alive + TTL - margin).
    pub fn valid_until(&self) -> Instant {
        *self.shared.validity.borrow()
    }

    /// True while the lease is not lost and `valid_until` is in the future.
    pub fn is_valid(&self) -> bool {
        !self.shared.lost.is_cancelled() && Instant::now() < self.valid_until()
    }

    /// A token that is cancelled when the lease is lost (or revoked/dropped).
    /// Scope work that must stop with the lease to it.
    pub fn lost_token(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// Resolves when the lease is lost (or revoked/dropped).
    pub async fn lost(&self) {
        self.shared.lost.cancelled().await
    }

    /// Why the lease was lost, or `None` while it is held.
    pub fn lost_reason(&self) -> Option<LostReason> {
        *self.shared.lost_reason.lock()
    }

    /// Follows `valid_until` as keep-alives succeed (for metrics and
    /// watchdogs).
    pub fn subscribe_validity(&self) -> watch::Receiver<Instant> {
        self.shared.validity.subscribe()
    }

    /// The acknowledged keep-alives so far and the latest round trip.
    pub fn keep_alive_stats(&self) -> KeepAliveStats {
        *self.shared.keep_alives.borrow()
    }

    /// Round trip of the latest acknowledged keep-alive (`None` before the
    /// first).
    pub fn last_keep_alive_rtt(&self) -> Option<Duration> {
        self.keep_alive_stats().last_rtt
    }

    /// Follows [`Lease::keep_alive_stats`]: changes at every acknowledged
    /// keep-alive (a slow reader sees the latest; `acknowledged` counts what
    /// it skipped). Ends when the lease handle and its task are gone.
    pub fn subscribe_keep_alives(&self) -> watch::Receiver<KeepAliveStats> {
        self.shared.keep_alives.subscribe()
    }

    /// Stops the keep-alives without revoking the lease: it lapses in the
    /// store after its TTL, keeping its keys until then (e.g. an elector that
    /// must not hand over at shutdown). Observers of [`Lease::lost_token`]
    /// and [`Lease::subscribe_validity`] still see the lease end, as
    /// [`LostReason::Expired`] at the current `valid_until`, before the store
    /// could expire it. Returns the lease id.
    pub fn orphan(mut self) -> LeaseId {
        // Drop must neither revoke nor fire `lost` early.
        self.revoked = true;
        self.orphaned.cancel();
        tracing::debug!(lease = %format_args!("{:x}", self.shared.id), "lease orphaned; it lapses after its TTL");
        self.shared.id
    }

    /// Stops the keep-alives and revokes the lease, deleting its keys.
    ///
    /// A lease the store no longer knows (it expired) counts as revoked:
    /// the result, a lease that is gone, is the same.
    pub async fn revoke(mut self) -> Result<()> {
        self.revoked = true;
        self.stop.cancel();
        self.shared.mark_lost(LostReason::Revoked);
        match self.store.lease_revoke(self.shared.id).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl<S: Store> Drop for Lease<S> {
    fn drop(&mut self) {
        if self.revoked {
            return;
        }
        self.stop.cancel();
        let already_lost = self.shared.lost.is_cancelled();
        self.shared.mark_lost(LostReason::Revoked);
        if already_lost {
            return;
        }
        // Best effort: without a runtime the lease simply expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let id = self.shared.id;
            let span = tracing::info_span!("lease", lease = %format_args!("{id:x}"));
            handle.spawn(
                async move {
                    match store.lease_revoke(id).await {
                        Ok(()) | Err(StoreError::LeaseNotFound(_)) => {
                            tracing::debug!("dropped lease revoked")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "revoking a dropped lease failed; it will expire")
                        }
                    }
                }
                .instrument(span),
            );
        }
    }
}

/// The background keep-alive loop of one lease.
struct KeepAlive<S> {
    store: S,
    shared: Arc<Shared>,
    stop: CancellationToken,
    orphaned: CancellationToken,
    interval: Duration,
    margin: Duration,
}

enum Attempt {
    Renewed,
    Failed,
    Lost(LostReason),
    Stopped,
    Orphaned,
}

impl<S: Store> KeepAlive<S> {
    async fn run(self) {
        let mut next = Instant::now() + self.interval;
        let mut retry = Backoff::new(BackoffPolicy::new(
            FIRST_RETRY_DELAY,
            self.interval.max(FIRST_RETRY_DELAY),
        ));
        loop {
            let deadline = *self.shared.validity.borrow();
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    self.lose(LostReason::Expired);
                    return;
                }
                _ = self.orphaned.cancelled() => return self.lapse().await,
                _ = tokio::time::sleep_until(next) => {}
            }
            match self.attempt(deadline).await {
                Attempt::Renewed => {
                    retry.reset();
                    next = Instant::now() + self.interval;
                }
                Attempt::Failed => {
                    next = Instant::now() + retry.next_delay();
                }
                Attempt::Lost(reason) => {
                    self.lose(reason);
                    return;
                }
                Attempt::Stopped => return,
                Attempt::Orphaned => return self.lapse().await,
            }
        }
    }

    /// Orphaned: no more renewals; the lease ends locally at `valid_until`.
    async fn lapse(&self) {
        let deadline = *self.shared.validity.borrow();
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!("orphaned lease reached its deadline");
                self.shared.mark_lost(LostReason::Expired);
            }
        }
    }

    /// One keep-alive, bounded by the interval (a hung request is abandoned
    /// and retried) and by the current deadline.
    async fn attempt(&self, deadline: Instant) -> Attempt {
        let sent = Instant::now();
        let result = tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Attempt::Stopped,
            // An answer after orphaning is ignored: the store may have
            // renewed, but `valid_until` stays conservative.
            _ = self.orphaned.cancelled() => return Attempt::Orphaned,
            _ = tokio::time::sleep_until(deadline) => return Attempt::Lost(LostReason::Expired),
            r = tokio::time::timeout(self.interval, self.store.lease_keep_alive(self.shared.id)) => r,
        };
        match result {
            Ok(Ok(ttl)) if ttl > 0 => {
                let rtt = sent.elapsed();
                self.shared.keep_alives.send_modify(|stats| {
                    stats.acknowledged += 1;
                    stats.last_rtt = Some(rtt);
                });
                let until = sent + secs(ttl).saturating_sub(self.margin);
                self.shared.validity.send_if_modified(|current| {
                    if until > *current {
                        *current = until;
                        true
                    } else {
                        false
                    }
                });
                tracing::trace!(ttl, ?rtt, "lease renewed");
                Attempt::Renewed
            }
            // etcd's keep-alive stream reports a gone lease as TTL 0.
            Ok(Ok(_)) | Ok(Err(StoreError::LeaseNotFound(_))) => {
                Attempt::Lost(LostReason::NotFound)
            }
            Ok(Err(StoreError::Closed)) => Attempt::Lost(LostReason::StoreClosed),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lease keep-alive failed; retrying");
                Attempt::Failed
            }
            Err(_elapsed) => {
                tracing::warn!(timeout = ?self.interval, "lease keep-alive timed out; retrying");
                Attempt::Failed
            }
        }
    }

    fn lose(&self, reason: LostReason) {
        tracing::warn!(%reason, "lease lost");
        self.shared.mark_lost(reason);
    }
}

/// What a holder of ownership (an election term, a [`crate::lock::Lock`])
/// needs from a lease: its id, its validity and its loss signal. Cheap to
/// clone; it does not keep the lease alive, and it works with a lease on any
/// store type (wrappers included).
#[derive(Clone, Debug)]
pub struct LeaseView {
    id: LeaseId,
    validity: watch::Receiver<Instant>,
    lost: CancellationToken,
}

impl LeaseView {
    /// A view of `lease`.
    pub fn of<L: Store>(lease: &Lease<L>) -> Self {
        LeaseView {
            id: lease.id(),
            validity: lease.subscribe_validity(),
            lost: lease.lost_token(),
        }
    }

    /// A view of a lease this process does not keep alive: a remote client
    /// grants it and sends its keep-alives (the etcd API's Election and Lock
    /// services campaign with their caller's lease, as etcd's do).
    ///
    /// Nothing here knows when it expires, so the view is valid until the
    /// store says otherwise: ownership held with it ends only when the store
    /// refuses the lease or deletes the keys bound to it, never by a local
    /// timer. Use [`LeaseView::of`] whenever this process holds the lease.
    pub fn kept_alive_elsewhere(id: LeaseId) -> Self {
        // Far enough never to fire, near enough for every clock to add.
        const UNKNOWN_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let (_, validity) = watch::channel(Instant::now() + UNKNOWN_EXPIRY);
        LeaseView {
            id,
            validity,
            lost: CancellationToken::new(),
        }
    }

    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The lease's [`Lease::valid_until`].
    pub fn valid_until(&self) -> Instant {
        *self.validity.borrow()
    }

    /// True while the lease is not lost and `valid_until` is in the future.
    pub fn is_valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < self.valid_until()
    }

    /// The lease's [`Lease::lost_token`].
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Resolves once `valid_until` has passed without being extended: the
    /// instant after which the store could expire the lease. A timer, so it
    /// fires even when the store hangs.
    pub async fn validity_passed(&self) {
        let mut validity = self.validity.clone();
        loop {
            let until = *validity.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {
                    if *validity.borrow() <= until {
                        return;
                    }
                }
                changed = validity.changed() => {
                    if changed.is_err() {
                        // The lease is gone: nothing can extend the validity.
                        tokio::time::sleep_until(until).await;
                        return;
                    }
                }
            }
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0).unsigned_abs())
}

#[cfg(test)]
mod tests;
