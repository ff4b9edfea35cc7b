//! Drover's one metrics facade.
//!
//! Every component that measures something (the store, elections, the gRPC
//! server, the controller runtime) registers its metric families into a
//! [`MetricsRegistry`] handed to it at construction, and
//! `orchestrator serve` encodes that registry at `/metrics`. There is no
//! hidden global: a component only exports what the registry it was given
//! exports, and [`MetricsRegistry::disabled`] (also the [`Default`]) is the
//! path for library users who do not care: the metrics still count in
//! memory, but nothing is registered or encoded.
//!
//! It stands on [`prometheus_client`], the Prometheus project's own Rust
//! client: typed metrics that are cheap atomics, label sets as plain Rust
//! values, and OpenMetrics text encoding, with no runtime and no global
//! recorder.
//!
//! Conventions for Drover's metric names (see ARCHITECTURE.md,
//! Observability):
//! - every name starts with `drover_<component>_`;
//! - durations are histograms in seconds, named `..._seconds`, using
//!   [`Buckets::latency`] unless there is a reason not to;
//! - counters are registered without `_total`: the OpenMetrics encoder
//!   appends it, so `drover_store_requests` is scraped as
//!   `drover_store_requests_total` (a name ending in `_total` is refused).
//!
//! Registering a name twice with the same metric type returns the metric
//! registered first, so two electors or two stores given one registry share
//! their families (distinguished by labels) instead of producing a
//! duplicate family in the exposition.
//!
//! ```
//! use drover_metrics::{Buckets, MetricsRegistry, ObserveDuration};
//! use std::time::Duration;
//!
//! let registry = MetricsRegistry::new();
//! // A family: one counter per label set. Label sets are any
//! // `EncodeLabelSet` value; fixed arrays of pairs need no derive.
//! let requests = registry.counter_family::<[(&'static str, &'static str); 1]>(
//!     "drover_example_requests",
//!     "Requests handled, by operation",
//! );
//! let latency = registry.histogram("drover_example_latency_seconds", "Request latency", &Buckets::latency());
//!
//! requests.get_or_create(&[("op", "get")]).inc();
//! latency.observe_duration(Duration::from_millis(3));
//!
//! let text = registry.encode().unwrap();
//! assert!(text.contains(r#"drover_example_requests_total{op="get"} 1"#));
//! assert!(text.contains("drover_example_latency_seconds_count 1"));
//! assert!(text.ends_with("# EOF\n"));
//! ```
//!
//! Label sets can also be structs deriving `EncodeLabelSet`; the derive
//! names `::prometheus_client`, so such a crate depends on
//! `prometheus-client` directly (it is a workspace dependency). Arrays of
//! `(&'static str, V)` pairs need nothing more than this crate.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

#[cfg(feature = "testing")]
pub mod testing;

/// The underlying client, for what the facade does not wrap.
pub use prometheus_client;
pub use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// A monotonically increasing count (`u64`).
pub type Counter = prometheus_client::metrics::counter::Counter;
/// A value that goes up and down (`i64`).
pub type Gauge = prometheus_client::metrics::gauge::Gauge;
/// A distribution of observations in fixed buckets.
pub type Histogram = prometheus_client::metrics::histogram::Histogram;
/// One [`Counter`] per label set `L`.
pub type CounterFamily<L> = prometheus_client::metrics::family::Family<L, Counter>;
/// One [`Gauge`] per label set `L`.
pub type GaugeFamily<L> = prometheus_client::metrics::family::Family<L, Gauge>;
/// One [`Histogram`] per label set `L`, each with the family's [`Buckets`].
pub type HistogramFamily<L> = prometheus_client::metrics::family::Family<L, Histogram, Buckets>;

/// The content type of [`MetricsRegistry::encode`]'s output, for the HTTP
/// response Prometheus scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a label set of a family must be: an encodable, hashable value.
/// Implemented for every type that qualifies, e.g.
/// `[(&'static str, &'static str); N]`, `Vec<(String, String)>` or a struct
/// deriving `EncodeLabelSet`.
pub trait LabelSet: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static {}
impl<T: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static> LabelSet for T {}

/// A registration that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The name is not a valid Prometheus metric name
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    #[error("invalid metric name {name:?}: names match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    InvalidName { name: String },

    /// A counter's name ends in `_total`, which the encoder appends itself.
    #[error(
        "counter name {name:?} ends in _total: register it without, the encoder appends _total"
    )]
    CounterSuffix { name: String },

    /// The name is already registered with a different metric type (or a
    /// family with a different label-set type).
    #[error("metric {name:?} is already registered as a different type ({existing})")]
    Conflict {
        name: String,
        existing: &'static str,
    },

    /// Encoding the registry as text failed.
    #[error("encoding metrics as text failed")]
    Encode(#[source] std::fmt::Error),

    /// Histogram bucket bounds must be finite and strictly increasing.
    #[error("invalid histogram buckets {bounds:?}: bounds must be finite and strictly increasing")]
    InvalidBuckets { bounds: Vec<f64> },
}

/// Histogram bucket upper bounds (in the metric's unit, seconds for
/// durations). Also the constructor of a [`HistogramFamily`]'s histograms.
#[derive(Clone, Debug, PartialEq)]
pub struct Buckets(Arc<[f64]>);

impl Buckets {
    /// Latency buckets for requests and round trips, in seconds: 0.5 ms
    /// doubling to 16.4 s (16 buckets). An embedded-store read lands in the
    /// first few, a fsync or an etcd round trip in the middle, a lease
    /// acquisition that waited out a TTL at the top.
    pub fn latency() -> Self {
        Buckets(
            prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16).collect(),
        )
    }

    /// Explicit upper bounds, which must be finite and strictly increasing
    /// (the `+Inf` bucket is implicit).
    pub fn explicit(bounds: impl IntoIterator<Item = f64>) -> Result<Self, MetricsError> {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let finite = bounds.iter().all(|b| b.is_finite());
        let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
        if bounds.is_empty() || !finite || !increasing {
            return Err(MetricsError::InvalidBuckets { bounds });
        }
        Ok(Buckets(bounds.into()))
    }

    /// The upper bounds.
    pub fn bounds(&self) -> &[f64] {
        &self.0
    }

    /// A new histogram with these buckets, not registered anywhere.
    pub fn histogram(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

impl prometheus_client::metrics::family::MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        self.histogram()
    }
}

/// Observing a [`Duration`] in seconds.
pub trait ObserveDuration {
    /// Records `elapsed` as seconds.
    fn observe_duration(&self, elapsed: Duration);
}

impl ObserveDuration for Histogram {
    fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }
}

/// A shared, cloneable handle on one registry of metric families. Clones
/// register into and encode the same registry.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    /// `None` for [`MetricsRegistry::disabled`].
    shared: Option<Arc<Mutex<Shared>>>,
}

#[derive(Default)]
struct Shared {
    registry: Registry,
    /// Each registered name's metric (a clone of what `registry` encodes),
    /// so a second registration of the name returns the first.
    by_name: HashMap<String, Registered>,
}

struct Registered {
    metric: Box<dyn Any + Send>,
    type_name: &'static str,
}

impl Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            None => f.write_str("MetricsRegistry(disabled)"),
            Some(shared) => {
                let shared = shared.lock();
                let mut names: Vec<&str> = shared.by_name.keys().map(String::as_str).collect();
                names.sort_unstable();
                f.debug_struct("MetricsRegistry")
                    .field("names", &names)
                    .finish()
            }
        }
    }
}

impl MetricsRegistry {
    /// A new, empty registry whose metrics are encoded by [`Self::encode`].
    pub fn new() -> Self {
        MetricsRegistry {
            shared: Some(Arc::default()),
        }
    }

    /// A handle that registers nothing: metrics made through it work (they
    /// count in memory) but are never encoded. The [`Default`].
    pub fn disabled() -> Self {
        MetricsRegistry { shared: None }
    }

    /// False for [`Self::disabled`].
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Registers the metric `make` builds under `name`, or returns the one
    /// already registered under `name` if it has the same type (`make` is
    /// then not called). `help` is the `# HELP` text.
    pub fn try_register<M>(
        &self,
        name: &str,
        help: &str,
        make: impl FnOnce() -> M,
    ) -> Result<M, MetricsError>
    where
        M: Metric + Clone,
    {
        validate_name(name)?;
        let Some(shared) = &self.shared else {
            return checked(name, make());
        };
        let mut shared = shared.lock();
        if let Some(existing) = shared.by_name.get(name) {
            return match existing.metric.downcast_ref::<M>() {
                Some(metric) => Ok(metric.clone()),
                None => Err(MetricsError::Conflict {
                    name: name.to_string(),
                    existing: existing.type_name,
                }),
            };
        }
        let metric = checked(name, make())?;
        shared.registry.register(name, help, metric.clone());
        shared.by_name.insert(
            name.to_string(),
            Registered {
                metric: Box::new(metric.clone()),
                type_name: std::any::type_name::<M>(),
            },
        );
        Ok(metric)
    }

    /// A counter under `name` (without `_total`). See [`Self::try_register`];
    /// a failed registration is logged and the metric returned is not
    /// exported (names are constants, so a test of the component catches it).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        self.register_or_detached(name, help, Counter::default)
    }

    /// A gauge under `name`.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register_or_detached(name, help, Gauge::default)
    }

    /// A histogram under `name` with `buckets`.
    pub fn histogram(&self, name: &str, help: &str, buckets: &Buckets) -> Histogram {
        self.register_or_detached(name, help, || buckets.histogram())
    }

    /// A family of counters under `name` (without `_total`), one per label set.
    pub fn counter_family<L: LabelSet>(&self, name: &str, help: &str) -> CounterFamily<L> {
        self.register_or_detached(name, help, CounterFamily::<L>::default)
    }

    /// A family of gauges under `name`, one per label set.
    pub fn gauge_family<L: LabelSet>(&self, name: &str, help: &str) -> GaugeFamily<L> {
        self.register_or_detached(name, help, GaugeFamily::<L>::default)
    }

    /// A family of histograms under `name`, one per label set, each with
    /// `buckets`.
    pub fn histogram_family<L: LabelSet>(
        &self,
        name: &str,
        help: &str,
        buckets: &Buckets,
    ) -> HistogramFamily<L> {
        self.register_or_detached(name, help, || {
            HistogramFamily::<L>::new_with_constructor(buckets.clone())
        })
    }

    fn register_or_detached<M: Metric + Clone>(
        &self,
        name: &str,
        help: &str,
        make: impl Fn() -> M,
    ) -> M {
        match self.try_register(name, help, &make) {
            Ok(metric) => metric,
            Err(error) => {
                tracing::error!(metric = name, %error, "metric not registered; it will not be exported");
                make()
            }
        }
    }

    /// The registry in the OpenMetrics text format (served with
    /// [`CONTENT_TYPE`]), ending in `# EOF`. A disabled registry encodes as
    /// just `# EOF`.
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut text = String::new();
        match &self.shared {
            Some(shared) => {
                prometheus_client::encoding::text::encode(&mut text, &shared.lock().registry)
            }
            None => prometheus_client::encoding::text::encode_eof(&mut text),
        }
        .map_err(MetricsError::Encode)?;
        Ok(text)
    }
}

/// Refuses a counter (or counter family) named `..._total`.
fn checked<M: Metric>(name: &str, metric: M) -> Result<M, MetricsError> {
    if matches!(metric.metric_type(), MetricType::Counter) && name.ends_with("_total") {
        return Err(MetricsError::CounterSuffix {
            name: name.to_string(),
        });
    }
    Ok(metric)
}

fn validate_name(name: &str) -> Result<(), MetricsError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(MetricsError::InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests;
