//! [`ElectionMetrics`]: what an elector reports, as a small trait.
//!
//! A trait instead of the `metrics` facade: users who take only this crate
//! get no global recorder and no extra dependency, and a bridge to any
//! metrics library (Prometheus, `metrics`, OpenTelemetry) is a few lines.
//! [`AtomicMetrics`] is a ready implementation that keeps the numbers in
//! memory for a status endpoint or a test.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Receives an elector's measurements. Every method has an empty default.
/// `election` is the election prefix, for labels.
pub trait ElectionMetrics: Send + Sync + 'static {
    /// Leadership of this process changed.
    fn set_leader(&self, _election: &str, _leading: bool) {}
    /// A term started; `token` is its fencing token.
    fn term_started(&self, _election: &str, _token: i64) {}
    /// The observed leader changed (to another candidate or to none).
    fn leader_transition(&self, _election: &str) {}
    /// Time from starting a campaign to leading.
    fn acquire_latency(&self, _election: &str, _latency: Duration) {}
    /// Round trip of one successful lease keep-alive.
    fn keep_alive_rtt(&self, _election: &str, _rtt: Duration) {}
}

/// Discards every measurement.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoMetrics;

impl ElectionMetrics for NoMetrics {}

/// Keeps the latest measurements in atomics. It ignores the election label:
/// use one per elector (for a bucket elector, whose buckets report under
/// their own labels, `is_leader` follows the latest bucket change and
/// `terms` counts every bucket's terms).
#[derive(Debug, Default)]
pub struct AtomicMetrics {
    leading: AtomicBool,
    terms: AtomicU64,
    last_token: AtomicI64,
    transitions: AtomicU64,
    last_acquire_nanos: AtomicU64,
    keep_alives: AtomicU64,
    last_keep_alive_rtt_nanos: AtomicU64,
}

/// A copy of [`AtomicMetrics`] at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// This process leads (gauge).
    pub is_leader: bool,
    /// Terms this process has held (counter).
    pub terms: u64,
    /// Fencing token of the latest term (gauge; 0 before the first).
    pub last_token: i64,
    /// Leader changes observed (counter).
    pub transitions: u64,
    /// Latency of the latest acquisition.
    pub last_acquire_latency: Duration,
    /// Successful keep-alives (counter).
    pub keep_alives: u64,
    /// Round trip of the latest keep-alive.
    pub last_keep_alive_rtt: Duration,
}

impl AtomicMetrics {
    pub fn new() -> Self {
        AtomicMetrics::default()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            is_leader: self.leading.load(Ordering::Relaxed),
            terms: self.terms.load(Ordering::Relaxed),
            last_token: self.last_token.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            last_acquire_latency: Duration::from_nanos(
                self.last_acquire_nanos.load(Ordering::Relaxed),
            ),
            keep_alives: self.keep_alives.load(Ordering::Relaxed),
            last_keep_alive_rtt: Duration::from_nanos(
                self.last_keep_alive_rtt_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ElectionMetrics for AtomicMetrics {
    fn set_leader(&self, _election: &str, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }
    fn term_started(&self, _election: &str, token: i64) {
        self.terms.fetch_add(1, Ordering::Relaxed);
        self.last_token.store(token, Ordering::Relaxed);
    }
    fn leader_transition(&self, _election: &str) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
    }
    fn acquire_latency(&self, _election: &str, latency: Duration) {
        self.last_acquire_nanos
            .store(nanos(latency), Ordering::Relaxed);
    }
    fn keep_alive_rtt(&self, _election: &str, rtt: Duration) {
        self.keep_alives.fetch_add(1, Ordering::Relaxed);
        self.last_keep_alive_rtt_nanos
            .store(nanos(rtt), Ordering::Relaxed);
    }
}

impl<M: ElectionMetrics + ?Sized> ElectionMetrics for std::sync::Arc<M> {
    fn set_leader(&self, election: &str, leading: bool) {
        (**self).set_leader(election, leading)
    }
    fn term_started(&self, election: &str, token: i64) {
        (**self).term_started(election, token)
    }
    fn leader_transition(&self, election: &str) {
        (**self).leader_transition(election)
    }
    fn acquire_latency(&self, election: &str, latency: Duration) {
        (**self).acquire_latency(election, latency)
    }
    fn keep_alive_rtt(&self, election: &str, rtt: Duration) {
        (**self).keep_alive_rtt(election, rtt)
    }
}
