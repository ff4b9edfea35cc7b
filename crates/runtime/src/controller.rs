//! [`Controller`]: runs a [`Reconciler`] over a [`WorkQueue`] fed by
//! reflectors, triggers and a periodic resync.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use drover_metrics::MetricsRegistry;
use drover_store::Store;
use drover_store::backoff::{Backoff, BackoffPolicy};
use drover_store::reflector::{Codec, Reflector, ReflectorError, ReflectorEvent};
use futures::future::{BoxFuture, join_all};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Result, RuntimeError};
use crate::metrics::RuntimeMetrics;
use crate::queue::{Finished, WorkQueue};

/// What a reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next trigger (an event, a resync).
    Done,
    /// Reconcile this key again after the delay (e.g. to check progress).
    RequeueAfter(Duration),
}

/// What one reconcile gets besides its key.
#[derive(Clone, Debug)]
pub struct Context<S> {
    store: S,
    shutdown: CancellationToken,
    failures: u32,
}

impl<S> Context<S> {
    /// The store the controller runs on.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Cancelled when the controller shuts down (or its scope, e.g. a term
    /// or a lock, ends). A long reconcile should stop at it; the runtime
    /// waits for in-flight reconciles to return.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// How many times in a row this key's reconcile failed before this one.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// The controller-specific part: bring one object's reality in line with
/// its intent.
///
/// A reconcile must be idempotent and level-based: it reads the current
/// state (from caches or the store) and acts on it, never on the event that
/// triggered it, because triggers are merged and may arrive late or twice.
pub trait Reconciler<S: Store>: Send + Sync + 'static {
    /// The object id the queue is keyed by.
    type Key: Clone + Eq + Hash + fmt::Debug + fmt::Display + Send + Sync + 'static;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reconciles `key`. An `Err` is logged and the key retried after its
    /// backoff; `Ok` resets the backoff.
    fn reconcile(
        &self,
        key: &Self::Key,
        ctx: &Context<S>,
    ) -> impl Future<Output = std::result::Result<Action, Self::Error>> + Send;
}

/// Sends keys to a running (or not yet running) controller: for triggers
/// that do not come from a reflector. Cheap to clone.
#[derive(Debug)]
pub struct Trigger<K> {
    tx: mpsc::Sender<K>,
}

impl<K> Clone for Trigger<K> {
    fn clone(&self) -> Self {
        Trigger {
            tx: self.tx.clone(),
        }
    }
}

impl<K: Send + 'static> Trigger<K> {
    /// Queues `key` to be reconciled (merged with any pending trigger).
    /// Returns false once the controller has stopped.
    pub async fn send(&self, key: K) -> bool {
        self.tx.send(key).await.is_ok()
    }
}

type WatchTask<K> = Box<dyn FnOnce(mpsc::Sender<K>) -> BoxFuture<'static, ()> + Send>;
type KeysFn<K> = Arc<dyn Fn() -> Vec<K> + Send + Sync>;

/// How long a watch task waits after a store failure that outlasted the
/// reflector's own retries.
const WATCH_BACKOFF: BackoffPolicy =
    BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(5));

/// Triggers a controller may have in flight to its queue before a reflector
/// waits for it.
const TRIGGER_BUFFER: usize = 1024;

/// A controller: a reconciler, its queue, and what feeds the queue. Built
/// with the methods below, then [`Controller::run`].
pub struct Controller<S: Store, R: Reconciler<S>> {
    name: String,
    store: S,
    reconciler: Arc<R>,
    concurrency: usize,
    backoff: BackoffPolicy,
    drain_timeout: Option<Duration>,
    resync: Option<(Duration, KeysFn<R::Key>)>,
    watches: Vec<WatchTask<R::Key>>,
    gates: Vec<BoxFuture<'static, ()>>,
    metrics: Arc<RuntimeMetrics>,
    trigger_tx: mpsc::Sender<R::Key>,
    trigger_rx: mpsc::Receiver<R::Key>,
}

impl<S: Store, R: Reconciler<S>> fmt::Debug for Controller<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .field("backoff", &self.backoff)
            .field("watches", &self.watches.len())
            .field("gates", &self.gates.len())
            .field("resync", &self.resync.as_ref().map(|(every, _)| every))
            .finish_non_exhaustive()
    }
}

impl<S: Store, R: Reconciler<S>> Controller<S, R> {
    /// A controller named `name` (the `controller` field of its spans and
    /// the label of its metrics) with concurrency 1, error backoff 100 ms
    /// doubling to 60 s with jitter, no resync, and no metrics export.
    pub fn new(name: impl Into<String>, store: S, reconciler: R) -> Self {
        let (trigger_tx, trigger_rx) = mpsc::channel(TRIGGER_BUFFER);
        Controller {
            name: name.into(),
            store,
            reconciler: Arc::new(reconciler),
            concurrency: 1,
            backoff: BackoffPolicy::new(Duration::from_millis(100), Duration::from_secs(60))
                .with_jitter(),
            drain_timeout: None,
            resync: None,
            watches: Vec::new(),
            gates: Vec::new(),
            metrics: Arc::new(RuntimeMetrics::new(&MetricsRegistry::disabled())),
            trigger_tx,
            trigger_rx,
        }
    }

    /// At most `n` reconciles at once (of different keys; one key never
    /// runs twice at once). At least 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The per-key error backoff.
    pub fn backoff(mut self, policy: BackoffPolicy) -> Self {
        self.backoff = policy;
        self
    }

    /// On shutdown, abort reconciles still running after `timeout` instead
    /// of waiting for them indefinitely.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = Some(timeout);
        self
    }

    /// Every `every`, queue every key `keys` returns (typically the ids in
    /// a reflector's cache): a safety net for a missed trigger, not the way
    /// changes are noticed.
    pub fn resync(
        mut self,
        every: Duration,
        keys: impl Fn() -> Vec<R::Key> + Send + Sync + 'static,
    ) -> Self {
        self.resync = Some((every, Arc::new(keys)));
        self
    }

    /// Reports through `registry` (see [`RuntimeMetrics`]).
    pub fn metrics(mut self, registry: &MetricsRegistry) -> Self {
        self.metrics = Arc::new(RuntimeMetrics::new(registry));
        self
    }

    /// The metric families this controller reports to.
    pub fn metrics_handle(&self) -> Arc<RuntimeMetrics> {
        self.metrics.clone()
    }

    /// A handle that queues keys from outside.
    pub fn trigger(&self) -> Trigger<R::Key> {
        Trigger {
            tx: self.trigger_tx.clone(),
        }
    }

    /// Follows `reflector` while the controller runs and queues the keys
    /// `map` finds in each event (an object's own id, or, for a watched
    /// type another controller owns, the ids it concerns: a node's label
    /// change maps to the RCs whose selector it enters or leaves). No
    /// reconcile starts before the reflector's cache is ready. Corrupt
    /// records are logged and skipped here; store failures are logged and
    /// retried with backoff.
    pub fn watch<C, M, I>(mut self, reflector: Reflector<S, C>, map: M) -> Self
    where
        C: Codec,
        M: Fn(&ReflectorEvent<C::Id, C::Value>) -> I + Send + 'static,
        I: IntoIterator<Item = R::Key> + 'static,
    {
        let cache = reflector.cache();
        self.gates
            .push(Box::pin(async move { cache.wait_until_ready().await }));
        let name = self.name.clone();
        self.watches.push(Box::new(move |tx| {
            Box::pin(follow(name, reflector, map, tx))
        }));
        self
    }

    /// No reconcile starts before `ready` resolves (besides the reflectors'
    /// caches): e.g. a lock being acquired or a dependency being up.
    pub fn ready_when(mut self, ready: impl Future<Output = ()> + Send + 'static) -> Self {
        self.gates.push(Box::pin(ready));
        self
    }

    /// Runs until `shutdown` is cancelled, then stops starting reconciles,
    /// waits for those in flight (bounded by [`Controller::drain_timeout`]
    /// if set) and returns. Run it under a term's or a lock's scope to
    /// reconcile only while leading or holding.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        if self.concurrency == 0 {
            return Err(RuntimeError::InvalidConfig {
                controller: self.name,
                field: "concurrency",
                reason: "must be at least 1".to_owned(),
            });
        }
        if let Some((every, _)) = &self.resync
            && every.is_zero()
        {
            return Err(RuntimeError::InvalidConfig {
                controller: self.name,
                field: "resync",
                reason: "the period must be positive".to_owned(),
            });
        }
        let span = tracing::info_span!("controller", controller = %self.name);
        self.run_inner(shutdown).instrument(span).await;
        Ok(())
    }

    async fn run_inner(self, shutdown: CancellationToken) {
        let Controller {
            name,
            store,
            reconciler,
            concurrency,
            backoff,
            drain_timeout,
            resync,
            watches,
            gates,
            metrics,
            trigger_tx,
            mut trigger_rx,
        } = self;
        let mut watch_tasks = JoinSet::new();
        for watch in watches {
            watch_tasks.spawn(watch(trigger_tx.clone()).in_current_span());
        }
        drop(trigger_tx);
        let mut ready = join_all(gates);
        let mut is_ready = false;
        let mut queue: WorkQueue<R::Key> = WorkQueue::new(backoff);
        let mut in_flight: JoinSet<(std::result::Result<Action, R::Error>, Duration)> =
            JoinSet::new();
        let mut running: HashMap<Id, R::Key> = HashMap::new();
        let mut resync_at = resync.as_ref().map(|(every, _)| Instant::now() + *every);
        let mut drain_deadline: Option<Instant> = None;
        // False once every trigger sender (watch tasks, Trigger handles) is
        // gone, so a closed channel is not polled in a loop.
        let mut triggers_open = true;
        loop {
            let now = Instant::now();
            let stopping = shutdown.is_cancelled();
            if is_ready && !stopping {
                while in_flight.len() < concurrency {
                    let Some(key) = queue.pop(now) else { break };
                    let ctx = Context {
                        store: store.clone(),
                        shutdown: shutdown.clone(),
                        failures: queue.failures(&key),
                    };
                    let reconciler = reconciler.clone();
                    let span =
                        tracing::info_span!("reconcile", key = %key, failures = ctx.failures);
                    let task_key = key.clone();
                    let handle = in_flight.spawn(
                        async move {
                            let started = Instant::now();
                            let result = reconciler.reconcile(&task_key, &ctx).await;
                            (result, started.elapsed())
                        }
                        .instrument(span),
                    );
                    running.insert(handle.id(), key);
                }
            }
            metrics.set_depth(&name, queue.depth(), in_flight.len());
            if stopping {
                if in_flight.is_empty() {
                    break;
                }
                if drain_deadline.is_none() {
                    tracing::info!(
                        in_flight = in_flight.len(),
                        "shutting down; draining reconciles"
                    );
                    drain_deadline = drain_timeout.map(|t| now + t);
                }
            }
            let next_due = queue
                .next_due()
                .filter(|_| is_ready && !stopping && in_flight.len() < concurrency);
            tokio::select! {
                biased;
                joined = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (id, outcome) = match joined {
                        Ok((id, outcome)) => (id, Some(outcome)),
                        Err(e) => (e.id(), None),
                    };
                    let Some(key) = running.remove(&id) else { continue };
                    let now = Instant::now();
                    let finished = match outcome {
                        Some((Ok(action), took)) => {
                            metrics.finished(&name, true, took);
                            match action {
                                Action::Done => Finished::Done,
                                Action::RequeueAfter(after) => Finished::RequeueAfter(after),
                            }
                        }
                        Some((Err(error), took)) => {
                            metrics.finished(&name, false, took);
                            let error: &(dyn std::error::Error + 'static) = &error;
                            tracing::warn!(key = %key, error, "reconcile failed");
                            Finished::Failed
                        }
                        None => {
                            metrics.finished(&name, false, Duration::ZERO);
                            tracing::error!(key = %key, "reconcile panicked or was aborted");
                            Finished::Failed
                        }
                    };
                    if let Some(delay) = queue.finish(&key, finished, now) {
                        tracing::debug!(key = %key, retry_in_ms = delay.as_millis() as u64, "backing off");
                    }
                }
                _ = shutdown.cancelled(), if !stopping => {}
                _ = sleep_until_opt(drain_deadline), if stopping => {
                    tracing::warn!(aborted = in_flight.len(), "drain timeout; aborting reconciles still running");
                    in_flight.abort_all();
                    drain_deadline = None;
                }
                _ = &mut ready, if !is_ready => {
                    is_ready = true;
                    tracing::debug!(queued = queue.depth(), "caches ready; reconciling");
                }
                key = trigger_rx.recv(), if !stopping && triggers_open => {
                    match key {
                        Some(key) => queue.add(key, Instant::now()),
                        None => triggers_open = false,
                    }
                }
                _ = sleep_until_opt(next_due), if next_due.is_some() => {}
                _ = sleep_until_opt(resync_at), if resync_at.is_some() && is_ready && !stopping => {
                    if let Some((every, keys)) = &resync {
                        let keys = keys();
                        tracing::debug!(keys = keys.len(), "resync");
                        let now = Instant::now();
                        for key in keys {
                            queue.add(key, now);
                        }
                        resync_at = Some(now + *every);
                    }
                }
            }
        }
        watch_tasks.abort_all();
        metrics.set_depth(&name, queue.depth(), 0);
        tracing::info!("controller stopped");
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Feeds the keys of `reflector`'s events into the queue until the
/// controller stops.
async fn follow<S, C, M, I, K>(
    name: String,
    mut reflector: Reflector<S, C>,
    map: M,
    tx: mpsc::Sender<K>,
) where
    S: Store,
    C: Codec,
    M: Fn(&ReflectorEvent<C::Id, C::Value>) -> I,
    I: IntoIterator<Item = K>,
{
    let mut backoff = Backoff::new(WATCH_BACKOFF);
    loop {
        match reflector.next().await {
            Ok(event) => {
                backoff.reset();
                let keys: Vec<K> = map(&event).into_iter().collect();
                for key in keys {
                    if tx.send(key).await.is_err() {
                        return;
                    }
                }
            }
            Err(ReflectorError::Corrupt { key, source }) => {
                let error: &(dyn std::error::Error + Send + Sync + 'static) = &source;
                if reflector.cache().is_ready() {
                    tracing::warn!(controller = %name, key, error, "skipping a corrupt record");
                    continue;
                }
                // The first listing is retried until it reads whole (a
                // half-read range must not look complete): not in a tight
                // loop.
                let delay = backoff.next_delay();
                tracing::warn!(
                    controller = %name,
                    key,
                    error,
                    retry_in_ms = delay.as_millis() as u64,
                    "corrupt record in the first listing; the controller stays not ready"
                );
                tokio::time::sleep(delay).await;
            }
            Err(ReflectorError::Store { range, source }) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    controller = %name,
                    range,
                    error = &source as &(dyn std::error::Error + 'static),
                    retry_in_ms = delay.as_millis() as u64,
                    "watch failed; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}
