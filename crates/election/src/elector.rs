//! [`Elector`]: the loop client-go and knative users expect (campaign, lead
//! inside a cancellation scope, drain, release, campaign again), built on
//! [`Election`] terms.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_store::lease::{Lease, LeaseConfig};
use drover_store::{Revision, Store};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{ElectorConfig, OnLoss};
use crate::election::{Election, LeaderInfo};
use crate::lease_store::LeaseStore;
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

    /// Where measurements go (default: nowhere).
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
        let _observer = AbortOnDrop(observer);
        let span = tracing::info_span!(
            "elector",
            election = %self.inner.label,
            identity = %self.inner.config.identity
        );
        self.run_loop(shutdown).instrument(span).await
    }

    async fn run_loop(&self, shutdown: CancellationToken) -> Result<()> {
        let config = &self.inner.config;
        let mut lease: Option<(Lease<LeaseStore<S>>, LeaseStore<S>)> = None;
        let mut stopped_while_leading = false;
        let result = loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            // A lease that was lost (or expired locally) is replaced.
            if lease.as_ref().is_some_and(|(l, _)| !l.is_valid())
                && let Some((old, _)) = lease.take()
            {
                revoke_quietly(old).await;
            }
            let (current_lease, lease_store) = match lease.take() {
                Some(held) => held,
                None => match self.grant_lease(&shutdown).await {
                    Ok(Some(held)) => held,
                    Ok(None) => break Ok(()),
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "granting a lease failed; retrying");
                        if self.wait_retry(&shutdown).await {
                            break Ok(());
                        }
                        continue;
                    }
                    Err(e) => break Err(e),
                },
            };
            let started = Instant::now();
            let campaign = self
                .inner
                .election
                .campaign_until(&current_lease, config.identity.as_bytes(), &shutdown)
                .await;
            match campaign {
                Ok(term) => {
                    self.inner
                        .metrics
                        .acquire_latency(&self.inner.label, started.elapsed());
                    let next = self.lead(term, &shutdown).await;
                    lease = Some((current_lease, lease_store));
                    match next {
                        Ok(Next::Campaign) => {}
                        Ok(Next::Stop) => {
                            stopped_while_leading = true;
                            break Ok(());
                        }
                        Err(e) => break Err(e),
                    }
                }
                Err(ElectionError::Cancelled) => {
                    lease = Some((current_lease, lease_store));
                    break Ok(());
                }
                Err(ElectionError::LeaseLost { lease: id }) => {
                    tracing::info!(lease = %format_args!("{id:x}"), "lease lost while campaigning; campaigning with a new lease");
                    revoke_quietly(current_lease).await;
                }
                Err(ElectionError::CandidacyLost { key }) => {
                    tracing::info!(%key, "candidate key removed while campaigning; campaigning again");
                    lease = Some((current_lease, lease_store));
                    if self.wait_retry(&shutdown).await {
                        break Ok(());
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "campaign failed; retrying");
                    lease = Some((current_lease, lease_store));
                    if self.wait_retry(&shutdown).await {
                        break Ok(());
                    }
                }
                Err(e) => {
                    lease = Some((current_lease, lease_store));
                    break Err(e);
                }
            }
        };
        if let Some((held, lease_store)) = lease {
            let keep = !config.release_on_cancel && stopped_while_leading;
            if keep {
                // Let the lease lapse: the next candidate leads after the TTL.
                lease_store.orphan();
                drop(held);
            } else {
                revoke_quietly(held).await;
            }
        }
        *self.inner.current.lock() = None;
        result
    }

    /// Grants this candidate's lease; `None` if shut down first.
    async fn grant_lease(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(Lease<LeaseStore<S>>, LeaseStore<S>)>> {
        let config = &self.inner.config;
        let lease_store = LeaseStore::new(
            self.inner.election.store().clone(),
            self.inner.metrics.clone(),
            self.inner.label.clone(),
        );
        let lease_config = LeaseConfig::new(config.lease_ttl_secs())
            .with_keep_alive_interval(config.retry_period)
            .with_safety_margin(config.lease_duration - config.renew_deadline);
        tokio::select! {
            _ = shutdown.cancelled() => Ok(None),
            granted = Lease::grant(lease_store.clone(), lease_config) => {
                Ok(Some((granted?, lease_store)))
            }
        }
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
        let config = &inner.config;
        let span = tracing::info_span!(
            "term",
            token = term.token(),
            key = %term.key(),
            lease = %format_args!("{:x}", term.lease_id())
        );
        span.in_scope(|| tracing::info!("started leading"));
        *inner.current.lock() = Some(term.clone());
        inner.metrics.set_leader(&inner.label, true);
        inner.metrics.term_started(&inner.label, term.token());

        let mut work = tokio::spawn((inner.work)(term.clone()).instrument(span.clone()));
        let mut work_done = false;
        let term_limit = async {
            if config.term_limit.is_zero() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(config.term_limit).await
            }
        };
        tokio::pin!(term_limit);
        let reason = loop {
            tokio::select! {
                _ = term.cancelled() => break term.end_reason().unwrap_or(TermEnd::Dropped),
                _ = shutdown.cancelled() => break TermEnd::Shutdown,
                _ = &mut term_limit => break TermEnd::TermLimit,
                joined = &mut work, if !work_done => {
                    work_done = true;
                    if matches!(joined, Err(ref e) if e.is_panic()) {
                        span.in_scope(|| tracing::error!("leader work panicked; ending the term"));
                        break TermEnd::Resigned;
                    }
                }
            }
        };
        term.end(reason);
        let reason = term.end_reason().unwrap_or(reason);
        *inner.current.lock() = None;
        inner.metrics.set_leader(&inner.label, false);
        let duration = term.started_at().elapsed();

        // Drain: the work saw the cancellation; give it the drain timeout.
        let drained = work_done
            || match tokio::time::timeout(config.drain_timeout, &mut work).await {
                Ok(_) => true,
                Err(_) => {
                    span.in_scope(|| {
                        tracing::warn!(timeout = ?config.drain_timeout, "leader work did not drain in time; aborting it")
                    });
                    work.abort();
                    false
                }
            };

        // Release only after the work drained, so no guarded work overlaps
        // the next leader's (its writes are fenced anyway).
        let release = match reason {
            TermEnd::TermLimit | TermEnd::Resigned => true,
            TermEnd::Shutdown => config.release_on_cancel,
            _ => false,
        };
        if release && let Err(e) = term.resign().await {
            span.in_scope(
                || tracing::warn!(error = %e, "resigning failed; the key expires with the lease"),
            );
        }
        span.in_scope(|| tracing::info!(%reason, drained, "stopped leading"));
        if let Some(hook) = &inner.stopped {
            hook(&TermSummary {
                token: term.token(),
                key: term.key().to_owned(),
                reason,
                duration,
                drained,
            });
        }
        match reason {
            TermEnd::Shutdown => Ok(Next::Stop),
            TermEnd::LeaseLost
            | TermEnd::ValidityExpired
            | TermEnd::KeyDeleted
            | TermEnd::Dropped
                if config.on_loss == OnLoss::Fatal =>
            {
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

async fn revoke_quietly<S: Store>(lease: Lease<S>) {
    let id = lease.id();
    if let Err(e) = lease.revoke().await {
        tracing::debug!(error = %e, lease = %format_args!("{id:x}"), "revoking the lease failed; it will expire");
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
