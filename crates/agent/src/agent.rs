//! The agent's shell: registration under a lease, the intent reflector, one
//! reconcile per pod on the shared controller runtime, and health probing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use drover_health::HealthStore;
use drover_ids::NodeId;
use drover_manifest::{
    Intent, LaunchStatus, LaunchableId, Manifest, ManifestSha, PodId, Reality, RealityStore,
    TolerantIntentCodec,
};
use drover_runtime::{Action, Context, Controller, Reconciler, Trigger};
use drover_store::lease::{Lease, LeaseConfig};
use drover_store::reflector::{Cache, Reflector, ReflectorEvent};
use drover_store::{LeaseId, Store};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::artifact::Artifacts;
use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::health::{Check, probe_loop};
use crate::node::{NodeRecord, agent_id, apply_labels, now_ms, register};
use crate::plan::{Step, plan};
use crate::pod::{PodRunner, pod_env, uninstall};
use crate::process::{OsProcesses, Processes};

/// How many pods are reconciled at once.
const CONCURRENCY: usize = 16;

/// A node agent. Build it, then [`Agent::run`] it.
pub struct Agent<S: Store> {
    store: S,
    config: AgentConfig,
    processes: Arc<dyn Processes>,
    stop_pods_on_exit: bool,
}

impl<S: Store> std::fmt::Debug for Agent<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.config.node)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Agent<S> {
    /// An agent running real processes.
    pub fn new(store: S, config: AgentConfig) -> Self {
        let processes = Arc::new(OsProcesses::new(config.cgroups, &instance_name(&config)));
        Self::with_processes(store, config, processes)
    }

    /// An agent running launchables through `processes`.
    pub fn with_processes(store: S, config: AgentConfig, processes: Arc<dyn Processes>) -> Self {
        Agent {
            store,
            config,
            processes,
            stop_pods_on_exit: false,
        }
    }

    /// Whether [`Agent::run`] stops every pod when it returns. Off by
    /// default: pods outlive an agent restart, and the next run on the same
    /// data directory adopts them.
    pub fn stop_pods_on_exit(mut self, stop: bool) -> Self {
        self.stop_pods_on_exit = stop;
        self
    }

    /// Registers the node and runs until `shutdown`. Fails at once when
    /// another live agent holds the node.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let span = tracing::info_span!("agent", node = %self.config.node);
        self.run_in_span(shutdown).instrument(span).await
    }

    async fn run_in_span(self, shutdown: CancellationToken) -> Result<()> {
        let config = Arc::new(self.config);
        let store = self.store;
        let record = NodeRecord {
            address: config.address.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            agent_id: agent_id(&config)?,
            capacity: config
                .capacity
                .unwrap_or_else(crate::config::detect_capacity),
            started_at_ms: now_ms(),
        };
        let lease = grant(&store, &config).await?;
        register(&store, &config, &record, lease.id()).await?;
        apply_labels(&store, &config).await?;
        tracing::info!(lease = %format_args!("{:x}", lease.id()), "node registered");
        let (lease_tx, lease_rx) = watch::channel(lease.id());

        let reflector = Reflector::prefix(
            store.clone(),
            config.keys.intent_node_prefix(&config.node),
            TolerantIntentCodec::new(config.keys.clone()),
        );
        let reconciler = PodReconciler {
            config: config.clone(),
            processes: self.processes.clone(),
            cache: reflector.cache(),
            realities: RealityStore::with_keys(store.clone(), config.keys.clone()),
            health: HealthStore::with_keys(store.clone(), config.keys.clone()),
            pods: Arc::new(Mutex::new(HashMap::new())),
            probes: Arc::new(Mutex::new(HashMap::new())),
            trigger: Arc::new(Mutex::new(None)),
            lease: lease_rx,
            artifacts: Artifacts::new(&config)?,
        };
        let pods = reconciler.pods.clone();
        let probes = reconciler.probes.clone();
        let trigger_slot = reconciler.trigger.clone();
        let controller = Controller::new("agent", store.clone(), reconciler)
            .concurrency(CONCURRENCY)
            .watch(reflector, pod_ids);
        *trigger_slot.lock() = Some(controller.trigger());

        let work = shutdown.child_token();
        let controller = tokio::spawn(controller.run(work.clone()).in_current_span());
        // Keep the registration: a lost lease (a partition longer than the
        // TTL) means registering again under a new one.
        let mut lease = lease;
        let result = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                _ = lease.lost() => {
                    tracing::warn!(reason = ?lease.lost_reason(), "registration lease lost; registering again");
                    match reregister(&store, &config, &record, &shutdown).await {
                        Ok(Some(new)) => {
                            lease_tx.send_replace(new.id());
                            lease = new;
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        work.cancel();
        let ran = controller.await;
        let stopping: Vec<Probe> = probes.lock().drain().map(|(_, p)| p).collect();
        for probe in stopping {
            probe.stop().await;
        }
        if self.stop_pods_on_exit {
            let runners: Vec<PodRunner> = pods.lock().drain().map(|(_, r)| r).collect();
            for runner in runners {
                runner.stop().await;
            }
        }
        let _ = lease.revoke().await;
        result?;
        match ran {
            Ok(r) => r.map_err(AgentError::Runtime),
            Err(e) => Err(AgentError::Config(format!("controller task failed: {e}"))),
        }
    }
}

/// `<node>-<hash of the data directory>`: one per agent, stable across its
/// restarts.
fn instance_name(config: &AgentConfig) -> String {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same on every run.
    let mut hasher = std::hash::DefaultHasher::new();
    config.data_dir.hash(&mut hasher);
    format!("{}-{:016x}", config.node, hasher.finish())
}

async fn grant<S: Store>(store: &S, config: &AgentConfig) -> Result<Lease<S>> {
    Lease::grant(store.clone(), LeaseConfig::new(config.lease_ttl_secs))
        .await
        .map_err(AgentError::store("grant the registration lease"))
}

/// Registers under a new lease, retrying store failures with backoff until
/// `shutdown` (then `None`). Losing the node to another agent is an error.
async fn reregister<S: Store>(
    store: &S,
    config: &AgentConfig,
    record: &NodeRecord,
    shutdown: &CancellationToken,
) -> Result<Option<Lease<S>>> {
    let mut backoff = drover_store::backoff::Backoff::new(
        drover_store::backoff::BackoffPolicy::new(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_secs(5),
        )
        .with_jitter(),
    );
    loop {
        let attempt = async {
            let lease = grant(store, config).await?;
            register(store, config, record, lease.id()).await?;
            Ok::<_, AgentError>(lease)
        };
        match attempt.await {
            Ok(lease) => {
                tracing::info!(lease = %format_args!("{:x}", lease.id()), "node registered again");
                return Ok(Some(lease));
            }
            Err(e @ AgentError::NodeTaken { .. }) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "registering again failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// The pods an intent event concerns.
fn pod_ids(event: &ReflectorEvent<(NodeId, PodId), Intent>) -> Vec<PodId> {
    match event {
        ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
            objects.keys().map(|(_, pod)| pod.clone()).collect()
        }
        ReflectorEvent::Applied { id, .. } | ReflectorEvent::Deleted { id, .. } => {
            vec![id.1.clone()]
        }
    }
}

/// A pod's probe loop.
struct Probe {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct PodReconciler<S: Store> {
    config: Arc<AgentConfig>,
    processes: Arc<dyn Processes>,
    cache: Cache<(NodeId, PodId), Intent>,
    realities: RealityStore<S>,
    health: HealthStore<S>,
    /// Only the reconcile of a pod touches its entry (the runtime never
    /// runs two of one key), so taking it out and putting it back is safe.
    pods: Arc<Mutex<HashMap<PodId, PodRunner>>>,
    /// Each running pod's probe loop, stopped with the pod.
    probes: Arc<Mutex<HashMap<PodId, Probe>>>,
    trigger: Arc<Mutex<Option<Trigger<PodId>>>>,
    lease: watch::Receiver<LeaseId>,
    artifacts: Artifacts,
}

impl<S: Store> PodReconciler<S> {
    fn reality_error(pod: &PodId) -> impl FnOnce(drover_manifest::ManifestError) -> AgentError {
        let pod = pod.to_string();
        move |source| AgentError::Reality { pod, source }
    }

    /// Fetches and unpacks the pod's artifact launchables: their entry
    /// points. Pretend processes need none.
    async fn install_artifacts(
        &self,
        manifest: &Manifest,
    ) -> Result<BTreeMap<LaunchableId, PathBuf>> {
        let mut entry_points = BTreeMap::new();
        if self.processes.fakes_health() {
            return Ok(entry_points);
        }
        let home = self.config.pod_home(manifest.id());
        for (id, launchable) in manifest.launchables() {
            if let Some(artifact) = launchable.as_artifact() {
                let name = format!("{}/{id}", manifest.id());
                let entry = self
                    .artifacts
                    .install(&name, artifact, &home.join(id.as_str()))
                    .await?;
                entry_points.insert(id.clone(), entry);
            }
        }
        Ok(entry_points)
    }

    fn start(
        &self,
        manifest: Manifest,
        entry_points: BTreeMap<LaunchableId, PathBuf>,
        adopt: bool,
    ) -> Result<PodRunner> {
        let pod = manifest.id().clone();
        let trigger = self.trigger.lock().clone();
        let changed: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(trigger) = trigger.clone() {
                let pod = pod.clone();
                tokio::spawn(async move { trigger.send(pod).await });
            }
        });
        let runner = PodRunner::start(
            self.processes.clone(),
            &self.config,
            manifest,
            entry_points,
            adopt,
            changed,
        )?;
        Ok(runner)
    }

    fn start_probe(&self, runner: &PodRunner) -> Probe {
        let stop = CancellationToken::new();
        let pod = runner.manifest.id().clone();
        let check = if self.processes.fakes_health() {
            Check::ProcessAlive
        } else {
            Check::of(
                runner.manifest.status(),
                || pod_env(&self.config, &runner.manifest),
                &self.config.pod_home(&pod),
            )
        };
        let task = tokio::spawn(
            probe_loop(
                self.health.clone(),
                pod,
                self.config.node.clone(),
                check,
                self.config.probe.for_status(runner.manifest.status()),
                runner.state_receivers(),
                self.lease.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        Probe { stop, task }
    }

    /// Stops the pod's probe loop and waits for it, so that no health
    /// write of it lands after the record is deleted.
    async fn stop_probe(&self, pod: &PodId) {
        let probe = self.probes.lock().remove(pod);
        if let Some(probe) = probe {
            probe.stop().await;
        }
    }

    async fn stop_pod(&self, pod: &PodId, runner: PodRunner) -> Result<()> {
        runner.stop().await;
        uninstall(&self.config, pod)?;
        Ok(())
    }

    /// An intent that does not validate: nothing is started or stopped
    /// for it. A pod not running is reported failed with the reason; one
    /// running keeps running the manifest it has (a bad write must not take
    /// a service down), its reality saying why the intent is not applied.
    async fn refuse_invalid(
        &self,
        pod: &PodId,
        sha: ManifestSha,
        reason: String,
        running: Option<PodRunner>,
        reported: Option<Reality>,
    ) -> Result<Action> {
        let reason = format!("the intent does not validate: {reason}");
        let verdict = match running {
            Some(runner) => {
                let reality = Reality {
                    reason: Some(format!("{reason}; still running {}", runner.manifest.sha())),
                    ..runner.reality()
                };
                self.pods.lock().insert(pod.clone(), runner);
                reality
            }
            None => Reality {
                reason: Some(reason.clone()),
                since_ms: Some(now_ms()),
                ..Reality::new(sha, LaunchStatus::Failed)
            },
        };
        let same = reported.as_ref().is_some_and(|r| {
            (r.sha, r.status, &r.reason) == (verdict.sha, verdict.status, &verdict.reason)
        });
        if !same {
            tracing::warn!(%pod, %reason, "intent refused");
            self.realities
                .put(&self.config.node, pod, &verdict)
                .await
                .map_err(Self::reality_error(pod))?;
        }
        Ok(Action::Done)
    }

    /// Deletes the pod's health, then its reality: a reader that sees the
    /// reality gone knows the pod left nothing behind on this node.
    async fn forget(&self, pod: &PodId) -> Result<()> {
        let node = &self.config.node;
        self.health
            .remove_health(pod.as_str(), node.as_str())
            .await
            .map_err(|source| AgentError::Health {
                pod: pod.to_string(),
                source,
            })?;
        self.realities
            .delete(node, pod)
            .await
            .map_err(Self::reality_error(pod))?;
        Ok(())
    }
}

impl<S: Store> Reconciler<S> for PodReconciler<S> {
    type Key = PodId;
    type Error = AgentError;

    async fn reconcile(&self, pod: &PodId, _ctx: &Context<S>) -> Result<Action> {
        let node = &self.config.node;
        let intent = self.cache.get(&(node.clone(), pod.clone()));
        let running = self.pods.lock().remove(pod);
        // Re-read: act on the stored reality, never on a copy.
        let reported = self
            .realities
            .get(node, pod)
            .await
            .map_err(Self::reality_error(pod));
        let reported = match reported {
            Ok(r) => r,
            Err(e) => {
                if let Some(runner) = running {
                    self.pods.lock().insert(pod.clone(), runner);
                }
                return Err(e);
            }
        };
        let intent = match intent {
            Some(Intent::Invalid { sha, reason }) => {
                return self
                    .refuse_invalid(pod, sha, reason, running, reported)
                    .await;
            }
            Some(Intent::Valid(manifest)) => Some(*manifest),
            None => None,
        };
        let current = running.as_ref().map(PodRunner::reality);
        match plan(
            intent.as_ref().map(Manifest::sha),
            running.as_ref().map(|r| r.manifest.sha()),
            reported.as_ref(),
            current.as_ref(),
        ) {
            Step::Nothing => {
                if let Some(runner) = running {
                    self.pods.lock().insert(pod.clone(), runner);
                }
            }
            Step::Forget => self.forget(pod).await?,
            Step::Stop => {
                let runner = running.expect("plan stops only a running pod");
                tracing::info!(%pod, "intent deleted: stopping");
                self.stop_probe(pod).await;
                self.stop_pod(pod, runner).await?;
                self.forget(pod).await?;
            }
            Step::Launch | Step::Replace => {
                let manifest = intent.expect("plan launches only an intended pod");
                // Launching what this agent does not run: an earlier run of
                // it may have left it running (adopted), a replacement never.
                let adopt = running.is_none();
                if let Some(old) = running {
                    tracing::info!(%pod, from = %old.manifest.sha(), to = %manifest.sha(), "manifest changed: replacing");
                    self.stop_probe(pod).await;
                    old.stop().await;
                } else {
                    tracing::info!(%pod, sha = %manifest.sha(), "launching");
                }
                let entry_points = match self.install_artifacts(&manifest).await {
                    Ok(entry_points) => entry_points,
                    Err(e) => {
                        // Said in the pod's reality; retried with backoff
                        // (a server may yet serve the right bytes).
                        let failed = Reality {
                            reason: Some(e.to_string()),
                            since_ms: Some(crate::node::now_ms()),
                            ..Reality::new(manifest.sha(), LaunchStatus::Failed)
                        };
                        self.realities
                            .put(node, pod, &failed)
                            .await
                            .map_err(Self::reality_error(pod))?;
                        return Err(e);
                    }
                };
                let runner = self.start(manifest, entry_points, adopt)?;
                let reality = runner.reality();
                let probe = self.start_probe(&runner);
                self.probes.lock().insert(pod.clone(), probe);
                self.pods.lock().insert(pod.clone(), runner);
                self.realities
                    .put(node, pod, &reality)
                    .await
                    .map_err(Self::reality_error(pod))?;
            }
            Step::Report => {
                let runner = running.expect("plan reports only a running pod");
                let reality = runner.reality();
                self.pods.lock().insert(pod.clone(), runner);
                self.realities
                    .put(node, pod, &reality)
                    .await
                    .map_err(Self::reality_error(pod))?;
            }
        }
        Ok(Action::Done)
    }
}
