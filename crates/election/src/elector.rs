//! [`Elector`]: the loop client-go and knative users expect (campaign, lead
//! inside a cancellation scope, drain, release, campaign again), built on
//! [`Election`] terms.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_store::lease::Lease;
use drover_store::{Revision, Store};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::config::{ElectorConfig, OnLoss};
use crate::election::{Election, LeaderInfo};
use crate::leading::{grant_lease, lead_term, let_go};
use crate::metrics::{ElectionMetrics, NoMetrics};
use crate::term::{Term, TermEnd};
use crate::{ElectionError, Result};

type LeaderWork<S> = Arc<dyn Fn(Term<S>) -> BoxFuture<'static, ()> + Send + Sync>;
type StoppedHook = Arc<dyn Fn(&TermSummary) + Send + Sync>;
type NewLeaderHook = Arc<dyn Fn(Option<&LeaderInfo>) + Send + Sync>;

/// What a finished term looked like, for the stopped-leading callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermSummary {
    /// The term's fencing token.
    pub token: Revision,
    /// The candidate key.
    pub key: String,
    /// Why it ended.
    pub reason: TermEnd,
    /// How long it lasted (until its scope was cancelled).
    pub duration: Duration,
    /// False if the leader work overran the drain timeout and was aborted.
    pub drained: bool,
}

/// Builds an [`Elector`].
pub struct ElectorBuilder<S: Store> {
    election: Election<S>,
    config: ElectorConfig,
    work: Option<LeaderWork<S>>,
    stopped: Option<StoppedHook>,
    new_leader: Option<NewLeaderHook>,
    metrics: Arc<dyn ElectionMetrics>,
}

impl<S: Store> fmt::Debug for ElectorBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectorBuilder")
            .field("election", &self.election)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Store> ElectorBuilder<S> {
    /// The config (default: [`ElectorConfig::default`]).
    pub fn config(mut self, config: ElectorConfig) -> Self {
        self.config = config;
        self
    }

    /// The leader work (required): started in its own task at the start of
    /// each term, with the [`Term`]. It must stop when the term's
    /// cancellation fires ([`Term::cancelled`]); it gets the config's drain
    /// timeout to finish before it is aborted. Writes made "as leader"
    /// should be fenced ([`Term::commit_fenced`]). If it returns early, the
    /// term continues until it ends for another reason.
    pub fn on_started_leading<F, Fut>(mut self, work: F) -> Self
    where
        F: Fn(Term<S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.work = Some(Arc::new(move |term| Box::pin(work(term))));
        self
    }

    /// Called after a term ended and its leader work finished (or was
    /// aborted at the drain deadline); never for a process that did not lead.
    pub fn on_stopped_leading<F>(mut self, hook: F) -> Self
    where
        F: Fn(&TermSummary) + Send + Sync + 'static,
    {
        self.stopped = Some(Arc::new(hook));
        self
    }

    /// Called, in order, each time the observed leader changes (including
    /// the first observation, and `None` when no candidate is left).
    pub fn on_new_leader<F>(mut self, hook: F) -> Self
    where
        F: Fn(Option<&LeaderInfo>) + Send + Sync + 'static,
    {
        self.new_leader = Some(Arc::new(hook));
        self
    }

    /// Where measurements go (default: nowhere). `RegistryMetrics` exports
    /// them through a `drover_metrics::MetricsRegistry`.
    pub fn metrics(mut self, metrics: Arc<dyn ElectionMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Validates the config and builds the elector.
    pub fn build(self) -> Result<Elector<S>> {
        self.config.validate()?;
        let work = self.work.ok_or(ElectionError::MissingLeaderWork)?;
        let label: Arc<str> = Arc::from(self.election.prefix());
        Ok(Elector {
            inner: Arc::new(Inner {
                election: self.election,
                config: self.config,
                work,
                stopped: self.stopped,
                new_leader: self.new_leader,
                metrics: self.metrics,
                label,
                current: Mutex::new(None),
                leader: Mutex::new(None),
                running: AtomicBool::new(false),
            }),
        })
    }
}

/// A re-entrant leader elector.
///
/// [`Elector::run`] campaigns; on winning it starts the leader work inside
/// the term's cancellation scope; when the term ends (lease lost, validity
/// passed, key deleted, term limit, shutdown) it cancels the scope, waits
/// for the work to drain (bounded), resigns if appropriate, reports
/// stopped-leading, and campaigns again (unless loss is configured fatal).
#[derive(Clone)]
pub struct Elector<S: Store> {
    inner: Arc<Inner<S>>,
}

struct Inner<S: Store> {
    election: Election<S>,
    config: ElectorConfig,
    work: LeaderWork<S>,
    stopped: Option<StoppedHook>,
    new_leader: Option<NewLeaderHook>,
    metrics: Arc<dyn ElectionMetrics>,
    label: Arc<str>,
    current: Mutex<Option<Term<S>>>,
    leader: Mutex<Option<LeaderInfo>>,
    running: AtomicBool,
}

impl<S: Store> fmt::Debug for Elector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Elector")
            .field("election", &self.inner.election)
            .field("identity", &self.inner.config.identity)
            .field("leading", &self.is_leader())
            .finish()
    }
}

/// How one term ended, for the run loop.
enum Next {
    Campaign,
    Stop,
}

impl<S: Store> Elector<S> {
    /// A builder for an elector in `election`.
    pub fn builder(election: Election<S>) -> ElectorBuilder<S> {
        ElectorBuilder {
            election,
            config: ElectorConfig::default(),
            work: None,
            stopped: None,
            new_leader: None,
            metrics: Arc::new(NoMetrics),
        }
    }

    /// This candidate's identity (its candidate key's value).
    pub fn identity(&self) -> &str {
        &self.inner.config.identity
    }

    /// The election.
    pub fn election(&self) -> &Election<S> {
        &self.inner.election
    }

    /// The config.
    pub fn config(&self) -> &ElectorConfig {
        &self.inner.config
    }

    /// True while this process holds a term that has not ended and whose
    /// `valid_until` is in the future.
    pub fn is_leader(&self) -> bool {
        self.inner
            .current
            .lock()
            .as_ref()
            .is_some_and(|t| t.is_valid())
    }

    /// The current term, while leading.
    pub fn current_term(&self) -> Option<Term<S>> {
        self.inner
            .current
            .lock()
            .as_ref()
            .filter(|t| t.is_valid())
            .cloned()
    }

    /// The leader as last observed (while [`Elector::run`] runs).
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.inner.leader.lock().clone()
    }

    /// The health check (client-go's watchdog): fails when this process
    /// still believes it leads although its term's `valid_until` passed more
    /// than `tolerance` ago, i.e. the elector is wedged and the process
    /// should be restarted.
    pub fn check_health(&self, tolerance: Duration) -> Result<()> {
        let current = self.inner.current.lock();
        let Some(term) = current.as_ref() else {
            return Ok(());
        };
        let now = Instant::now();
        let deadline = term.valid_until() + tolerance;
        if now > deadline {
            return Err(ElectionError::LeadingPastValidity {
                token: term.token(),
                overdue: now - term.valid_until(),
            });
        }
        Ok(())
    }

    /// Runs the election until `shutdown` fires (then returns `Ok`) or an
    /// unrecoverable error occurs. Only one `run` per elector at a time.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        if self.inner.running.swap(true, Ordering::SeqCst) {
            return Err(ElectionError::AlreadyRunning);
        }
        let _running = ClearOnDrop(&self.inner.running);
        // Also when the run future is dropped mid-term: nothing leads then.
        let _current = ForgetTermOnDrop(&self.inner.current);
        let observer = self.spawn_observer();
        let _observer = AbortOnDropHandle::new(observer);
        let span = tracing::info_span!(
            "elector",
            election = %self.inner.label,
            identity = %self.inner.config.identity
        );
        self.run_loop(shutdown).instrument(span).await
    }

    async fn run_loop(&self, shutdown: CancellationToken) -> Result<()> {
        let config = &self.inner.config;
        let mut lease: Option<Lease<S>> = None;
        let mut stopped_while_leading = false;
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            // A lease that was lost (or expired locally) is replaced.
            if lease.as_ref().is_some_and(|l| !l.is_valid())
                && let Some(old) = lease.take()
            {
                let_go(old, false).await;
            }
            let current_lease = match lease.take() {
                Some(held) => held,
                None => match grant_lease(
                    self.inner.election.store(),
                    config,
                    &self.inner.metrics,
                    &self.inner.label,
                    &shutdown,
                )
                .await
                {
                    Ok(Some(granted)) => granted,
                    Ok(None) => break Ok(()),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "granting a lease failed; retrying");
                        if self.wait_retry(&shutdown).await {
                            break Ok(());
                        }
                        continue;
                    }
                    Err(e) => break Err(e.into()),
                },
            };
            let started = Instant::now();
            let campaign = self
                .inner
                .election
                .campaign_until(&current_lease, config.identity.as_bytes(), &shutdown)
                .await;
            if !matches!(campaign, Err(ElectionError::LeaseLost { .. })) {
                lease = Some(current_lease);
            } else {
                let_go(current_lease, false).await;
            }
            match campaign {
                Ok(term) => {
                    self.inner
                        .metrics
                        .acquire_latency(&self.inner.label, started.elapsed());
                    match self.lead(term, &shutdown).await {
                        Ok(Next::Campaign) => {}
                        Ok(Next::Stop) => {
                            stopped_while_leading = true;
                            break Ok(());
                        }
                        Err(e) => break Err(e),
                    }
                }
                Err(ElectionError::Cancelled) => break Ok(()),
                Err(ElectionError::LeaseLost { lease: id }) => {
                    tracing::info!(lease = %format_args!("{id:x}"), "lease lost while campaigning; campaigning with a new lease");
                }
                Err(ElectionError::CandidacyLost { key }) => {
                    tracing::info!(%key, "candidate key removed while campaigning; campaigning again");
                    if self.wait_retry(&shutdown).await {
                        break Ok(());
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    if self.wait_retry(&shutdown).await {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Some(held) = lease {
            // Without release on cancel, a leader's key lingers until the
            // lease lapses: the next candidate leads after the TTL.
            let_go(held, !config.release_on_cancel && stopped_while_leading).await;
        }
        *self.inner.current.lock() = None;
        result
    }

    /// Waits a jittered retry period; true if shut down meanwhile.
    async fn wait_retry(&self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(self.inner.config.jittered_retry()) => false,
        }
    }

    /// Leads one term: runs the work, ends the term, drains, releases.
    async fn lead(&self, term: Term<S>, shutdown: &CancellationToken) -> Result<Next> {
        let inner = &self.inner;
        *inner.current.lock() = Some(term.clone());
        inner.metrics.set_leader(&inner.label, true);
        inner.metrics.term_started(&inner.label, term.token());
        let work = (inner.work)(term.clone());
        let stop = async {
            shutdown.cancelled().await;
            TermEnd::Shutdown
        };
        // Not leading from the moment the term ends, before the drain.
        let ended = || {
            *inner.current.lock() = None;
            inner.metrics.set_leader(&inner.label, false);
        };
        let summary = lead_term(&term, work, stop, ended, &inner.config).await;
        if let Some(hook) = &inner.stopped {
            hook(&summary);
        }
        match summary.reason {
            TermEnd::Shutdown => Ok(Next::Stop),
            reason if reason.is_loss() && inner.config.on_loss == OnLoss::Fatal => {
                Err(ElectionError::LeadershipLost { reason })
            }
            _ => Ok(Next::Campaign),
        }
    }

    /// Follows the election for `leader()` and the new-leader callback.
    fn spawn_observer(&self) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        let span = tracing::debug_span!("elector_observer", election = %inner.label);
        tokio::spawn(
            async move {
                let mut observer = inner.election.observe();
                let mut last: Option<Option<Revision>> = None;
                while let Some(item) = observer.next().await {
                    let observation = match item {
                        Ok(o) => o,
                        Err(e) => {
                            tracing::error!(error = %e, "observing the election failed; leader() stops updating");
                            return;
                        }
                    };
                    let leader = observation.leader().cloned();
                    let token = leader.as_ref().map(|l| l.token);
                    *inner.leader.lock() = leader.clone();
                    if last == Some(token) {
                        continue;
                    }
                    if last.is_some() {
                        inner.metrics.leader_transition(&inner.label);
                    }
                    last = Some(token);
                    if let Some(hook) = &inner.new_leader {
                        hook(leader.as_ref());
                    }
                }
            }
            .instrument(span),
        )
    }
}

struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct ForgetTermOnDrop<'a, S: Store>(&'a Mutex<Option<Term<S>>>);

impl<S: Store> Drop for ForgetTermOnDrop<'_, S> {
    fn drop(&mut self) {
        if let Some(term) = self.0.lock().take() {
            term.end(TermEnd::Dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use drover_store::embedded::EmbeddedStore;
    use drover_store::lease::LeaseConfig;

    use super::*;

    /// The health check fails once the process believes it leads past its
    /// term's `valid_until` (plus the tolerance): here the elector's loop is
    /// not running (as if its runtime were blocked) and the lease is no
    /// longer renewed, so nothing ends the belief.
    #[tokio::test(start_paused = true)]
    async fn health_fails_when_believed_leadership_outlives_its_validity() {
        let store = EmbeddedStore::in_memory();
        let election = Election::with_prefix(store.clone(), "/drover/election/health/").unwrap();
        let elector = Elector::builder(election.clone())
            .config(ElectorConfig::default().with_identity("wedged"))
            .on_started_leading(|term: Term<EmbeddedStore>| async move { term.cancelled().await })
            .build()
            .unwrap();
        assert!(elector.check_health(Duration::ZERO).is_ok(), "not leading");

        let lease = Lease::grant(store, LeaseConfig::new(3)).await.unwrap();
        let term = election.campaign(&lease, "wedged").await.unwrap();
        *elector.inner.current.lock() = Some(term.clone());
        assert!(elector.is_leader());
        assert!(elector.check_health(Duration::ZERO).is_ok());

        lease.orphan(); // no keep-alive runs any more
        let valid_until = term.valid_until();
        let tolerance = Duration::from_millis(500);
        tokio::time::sleep_until(valid_until + tolerance).await;
        assert!(!elector.is_leader(), "is_leader is conservative");
        assert!(
            elector.check_health(tolerance).is_ok(),
            "within the tolerance"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
        match elector.check_health(tolerance) {
            Err(ElectionError::LeadingPastValidity { token, overdue }) => {
                assert_eq!(token, term.token());
                assert_eq!(overdue, tolerance + Duration::from_millis(1));
            }
            other => panic!("expected LeadingPastValidity, got {other:?}"),
        }
        // Once the loop clears its belief, the check passes again.
        *elector.inner.current.lock() = None;
        assert!(elector.check_health(Duration::ZERO).is_ok());
    }
}
