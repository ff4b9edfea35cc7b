//! [`RuntimeMetrics`]: what a controller reports, on Drover's metrics facade
//! (`drover-metrics`), labelled by controller name.
//!
//! - `drover_runtime_reconciles_total{controller, result="ok"|"error"}`
//! - `drover_runtime_reconcile_duration_seconds{controller}`
//! - `drover_runtime_queue_depth{controller}`: keys waiting to run
//! - `drover_runtime_in_flight{controller}`: reconciles running

use std::time::Duration;

use drover_metrics::{
    Buckets, CounterFamily, GaugeFamily, HistogramFamily, MetricsRegistry, ObserveDuration,
};

type ControllerLabel = [(&'static str, String); 1];
type ResultLabel = [(&'static str, String); 2];

/// A controller's metric families (shared by every controller given the
/// same registry; each reports under its own `controller` label).
#[derive(Debug)]
pub struct RuntimeMetrics {
    reconciles: CounterFamily<ResultLabel>,
    durations: HistogramFamily<ControllerLabel>,
    queue_depth: GaugeFamily<ControllerLabel>,
    in_flight: GaugeFamily<ControllerLabel>,
}

fn controller(name: &str) -> ControllerLabel {
    [("controller", name.to_owned())]
}

fn result(name: &str, ok: bool) -> ResultLabel {
    [
        ("controller", name.to_owned()),
        ("result", if ok { "ok" } else { "error" }.to_owned()),
    ]
}

impl RuntimeMetrics {
    /// Registers the runtime's families in `registry`.
    pub fn new(registry: &MetricsRegistry) -> Self {
        RuntimeMetrics {
            reconciles: registry.counter_family(
                "drover_runtime_reconciles",
                "Reconciles finished, by controller and result (ok or error)",
            ),
            durations: registry.histogram_family(
                "drover_runtime_reconcile_duration_seconds",
                "Time one reconcile took, by controller",
                &Buckets::latency(),
            ),
            queue_depth: registry.gauge_family(
                "drover_runtime_queue_depth",
                "Keys waiting to be reconciled, by controller",
            ),
            in_flight: registry.gauge_family(
                "drover_runtime_in_flight",
                "Reconciles running, by controller",
            ),
        }
    }

    pub(crate) fn finished(&self, name: &str, ok: bool, took: Duration) {
        self.reconciles.get_or_create(&result(name, ok)).inc();
        self.durations
            .get_or_create(&controller(name))
            .observe_duration(took);
    }

    pub(crate) fn set_depth(&self, name: &str, depth: usize, in_flight: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_depth
            .get_or_create(&controller(name))
            .set(gauge(depth));
        self.in_flight
            .get_or_create(&controller(name))
            .set(gauge(in_flight));
    }

    /// Reconciles of controller `name` that finished ok (`ok = true`) or
    /// with an error, so far.
    pub fn reconciles(&self, name: &str, ok: bool) -> u64 {
        self.reconciles.get_or_create(&result(name, ok)).get()
    }

    /// Keys of controller `name` waiting to run, as last reported.
    pub fn queue_depth(&self, name: &str) -> i64 {
        self.queue_depth.get_or_create(&controller(name)).get()
    }
}
