//! [`ElectionMetrics`]: what an elector reports, as a small trait, and
//! [`RegistryMetrics`], its implementation on Drover's metrics facade.
//!
//! The trait stays so the crate is usable alone: a user who takes only this
//! crate can bridge to any metrics library in a few lines, or use
//! [`NoMetrics`]. The provided implementation, [`RegistryMetrics`], exports
//! through a [`drover_metrics::MetricsRegistry`] (what `orchestrator serve`
//! scrapes) and also keeps the latest values for a status endpoint or a test
//! ([`RegistryMetrics::snapshot`]).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use drover_metrics::{
    Buckets, CounterFamily, GaugeFamily, HistogramFamily, MetricsRegistry, ObserveDuration,
};

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

/// The label set of every election family: the election prefix (for a
/// bucket elector, the bucket's election prefix).
type ElectionLabel = [(&'static str, String); 1];

fn label(election: &str) -> ElectionLabel {
    [("election", election.to_string())]
}

/// Exports an elector's measurements through a [`MetricsRegistry`], labelled
/// by election (see ARCHITECTURE.md, Observability, for the names), and
/// keeps the latest values for [`RegistryMetrics::snapshot`].
///
/// Several electors may share one registry: their families are registered
/// once and told apart by the `election` label. The snapshot ignores that
/// label, so use one `RegistryMetrics` per elector if you read it (for a
/// bucket elector, whose buckets report under their own labels, `is_leader`
/// follows the latest bucket change and `terms` counts every bucket's terms).
#[derive(Debug)]
pub struct RegistryMetrics {
    is_leader: GaugeFamily<ElectionLabel>,
    terms: CounterFamily<ElectionLabel>,
    last_token: GaugeFamily<ElectionLabel>,
    transitions: CounterFamily<ElectionLabel>,
    acquire_latency: HistogramFamily<ElectionLabel>,
    keep_alive_rtt: HistogramFamily<ElectionLabel>,
    latest: Latest,
}

/// The latest values, for [`RegistryMetrics::snapshot`].
#[derive(Debug, Default)]
struct Latest {
    leading: AtomicBool,
    terms: AtomicU64,
    last_token: AtomicI64,
    transitions: AtomicU64,
    last_acquire_nanos: AtomicU64,
    keep_alives: AtomicU64,
    last_keep_alive_rtt_nanos: AtomicU64,
}

/// The latest values a [`RegistryMetrics`] saw, at one moment.
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

impl RegistryMetrics {
    /// Registers the election families into `registry` (or reuses them if
    /// another elector registered them already).
    pub fn new(registry: &MetricsRegistry) -> Self {
        RegistryMetrics {
            is_leader: registry.gauge_family(
                "drover_election_is_leader",
                "1 while this process leads the election, else 0",
            ),
            terms: registry.counter_family(
                "drover_election_terms",
                "Terms of leadership this process has started",
            ),
            last_token: registry.gauge_family(
                "drover_election_last_token",
                "Fencing token (candidate key create revision) of this process's latest term",
            ),
            transitions: registry.counter_family(
                "drover_election_leader_transitions",
                "Leader changes observed (to another candidate or to none)",
            ),
            acquire_latency: registry.histogram_family(
                "drover_election_acquire_latency_seconds",
                "Time from starting a campaign to leading",
                &Buckets::latency(),
            ),
            keep_alive_rtt: registry.histogram_family(
                "drover_election_keep_alive_rtt_seconds",
                "Round trip of each acknowledged lease keep-alive",
                &Buckets::latency(),
            ),
            latest: Latest::default(),
        }
    }

    /// The latest values, across every election this instance reported for.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let latest = &self.latest;
        MetricsSnapshot {
            is_leader: latest.leading.load(Ordering::Relaxed),
            terms: latest.terms.load(Ordering::Relaxed),
            last_token: latest.last_token.load(Ordering::Relaxed),
            transitions: latest.transitions.load(Ordering::Relaxed),
            last_acquire_latency: Duration::from_nanos(
                latest.last_acquire_nanos.load(Ordering::Relaxed),
            ),
            keep_alives: latest.keep_alives.load(Ordering::Relaxed),
            last_keep_alive_rtt: Duration::from_nanos(
                latest.last_keep_alive_rtt_nanos.load(Ordering::Relaxed),
            ),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ElectionMetrics for RegistryMetrics {
    fn set_leader(&self, election: &str, leading: bool) {
        self.is_leader
            .get_or_create(&label(election))
            .set(i64::from(leading));
        self.latest.leading.store(leading, Ordering::Relaxed);
    }
    fn term_started(&self, election: &str, token: i64) {
        let label = label(election);
        self.terms.get_or_create(&label).inc();
        self.last_token.get_or_create(&label).set(token);
        self.latest.terms.fetch_add(1, Ordering::Relaxed);
        self.latest.last_token.store(token, Ordering::Relaxed);
    }
    fn leader_transition(&self, election: &str) {
        self.transitions.get_or_create(&label(election)).inc();
        self.latest.transitions.fetch_add(1, Ordering::Relaxed);
    }
    fn acquire_latency(&self, election: &str, latency: Duration) {
        self.acquire_latency
            .get_or_create(&label(election))
            .observe_duration(latency);
        self.latest
            .last_acquire_nanos
            .store(nanos(latency), Ordering::Relaxed);
    }
    fn keep_alive_rtt(&self, election: &str, rtt: Duration) {
        self.keep_alive_rtt
            .get_or_create(&label(election))
            .observe_duration(rtt);
        self.latest.keep_alives.fetch_add(1, Ordering::Relaxed);
        self.latest
            .last_keep_alive_rtt_nanos
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
