//! One pod on this node: its home, its launchables' supervisors, the reality
//! they add up to, and its stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drover_manifest::{LaunchStatus, LaunchableId, LaunchableKind, Manifest, PodId, Reality};
use drover_store::backoff::BackoffPolicy;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::error::{AgentError, Result};
use crate::process::{LaunchSpec, Processes};
use crate::supervisor::{LaunchState, Supervision, supervise};

/// A pod the agent runs: one supervisor task per launchable.
pub(crate) struct PodRunner {
    pub(crate) manifest: Manifest,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    states: Vec<watch::Receiver<LaunchState>>,
    limits: &'static str,
}

impl std::fmt::Debug for PodRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRunner")
            .field("pod", self.manifest.id())
            .field("sha", &self.manifest.sha().to_string())
            .finish_non_exhaustive()
    }
}

impl PodRunner {
    /// Installs `manifest` (its home and config file) and starts its
    /// launchables. With `adopt`, launchables an earlier run of the agent
    /// started for this very manifest (its SHA is recorded in the home) and
    /// that still run are taken over instead of restarted. `changed` is
    /// called whenever a launchable's state changes.
    pub(crate) fn start(
        processes: Arc<dyn Processes>,
        config: &AgentConfig,
        manifest: Manifest,
        entry_points: BTreeMap<LaunchableId, PathBuf>,
        adopt: bool,
        changed: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<PodRunner> {
        let pod = manifest.id().clone();
        let home = config.pod_home(&pod);
        let sha_file = home.join("manifest.sha");
        let adopt = adopt
            && std::fs::read_to_string(&sha_file)
                .is_ok_and(|sha| sha.trim() == manifest.sha().to_string());
        let logs = home.join("logs");
        std::fs::create_dir_all(&logs).map_err(AgentError::io(format!(
            "create the pod home {}",
            home.display()
        )))?;
        let config_path = home.join(CONFIG_FILE);
        std::fs::write(&config_path, manifest.config_yaml()).map_err(AgentError::io(format!(
            "write the pod config {}",
            config_path.display()
        )))?;
        std::fs::write(&sha_file, manifest.sha().to_string())
            .map_err(AgentError::io(format!("write {}", sha_file.display())))?;
        let stop = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(
            crate::logs::rotate_loop(logs.clone(), config.log_bytes, stop.clone())
                .in_current_span(),
        )];
        let mut states = Vec::new();
        for (id, launchable) in manifest.launchables() {
            let root = home.join(id.as_str());
            std::fs::create_dir_all(&root)
                .map_err(AgentError::io(format!("create {}", root.display())))?;
            let mut env = pod_env(config, &manifest);
            env.insert("LAUNCHABLE_ID".to_owned(), id.as_str().to_owned());
            env.insert("LAUNCHABLE_ROOT".to_owned(), root.display().to_string());
            env.extend(launchable.env.clone());
            let (program, args, working_dir) = match &launchable.kind {
                LaunchableKind::Process(process) => (
                    process.command.clone(),
                    process.args.clone(),
                    process
                        .working_dir
                        .as_ref()
                        .map_or_else(|| root.clone(), Into::into),
                ),
                // Artifacts: installed by the agent before the pod starts
                // (none for pretend processes, which run nothing).
                _ => (
                    entry_points
                        .get(id)
                        .map(|entry| entry.display().to_string())
                        .unwrap_or_default(),
                    Vec::new(),
                    root.clone(),
                ),
            };
            let spec = LaunchSpec {
                name: format!("{pod}/{id}"),
                program,
                args,
                env,
                working_dir,
                log_file: logs.join(format!("{id}.log")),
                record_file: home.join(format!("{id}.pid")),
                limits: *manifest.resource_limits(),
            };
            let supervision = Supervision {
                policy: launchable.restart_policy,
                backoff: BackoffPolicy::new(
                    launchable.restart_backoff,
                    config.restart_cap.max(launchable.restart_backoff),
                ),
                reset_after: config.restart_reset,
                grace: manifest.termination_grace_period(),
            };
            let (tx, rx) = watch::channel(LaunchState {
                status: LaunchStatus::Launched,
                restarts: 0,
                last_exit: None,
                reason: None,
                since_ms: 0,
                pid: None,
                running: false,
            });
            let mut follow = rx.clone();
            let changed = changed.clone();
            let stopped = stop.clone();
            tasks.push(tokio::spawn(
                async move {
                    // Reports changes until the supervisor is gone.
                    while tokio::select! {
                        r = follow.changed() => r.is_ok(),
                        _ = stopped.cancelled() => false,
                    } {
                        changed();
                    }
                }
                .in_current_span(),
            ));
            let processes = processes.clone();
            let token = stop.clone();
            tasks.push(tokio::spawn(
                supervise(processes, spec, supervision, adopt, tx, token).in_current_span(),
            ));
            states.push(rx);
        }
        let limits = if manifest.resource_limits().is_empty() {
            "none"
        } else {
            processes.limits()
        };
        Ok(PodRunner {
            manifest,
            stop,
            tasks,
            states,
            limits,
        })
    }

    /// The launchables' current states.
    pub(crate) fn states(&self) -> Vec<LaunchState> {
        self.states.iter().map(|rx| rx.borrow().clone()).collect()
    }

    /// Followers of the launchables' states (for the pod's probe loop).
    pub(crate) fn state_receivers(&self) -> Vec<watch::Receiver<LaunchState>> {
        self.states.clone()
    }

    /// The reality record the launchables add up to: failed if any failed,
    /// else crash-looping if any is, else exited if all exited, else
    /// launched.
    pub(crate) fn reality(&self) -> Reality {
        aggregate(&self.manifest, &self.states(), self.limits)
    }

    /// Stops every launchable (each with the manifest's grace period) and
    /// waits for them.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub(crate) fn aggregate(manifest: &Manifest, states: &[LaunchState], limits: &str) -> Reality {
    let worst = |status: LaunchStatus| states.iter().find(|s| s.status == status);
    let (status, reason) = if let Some(s) = worst(LaunchStatus::Failed) {
        (LaunchStatus::Failed, s.reason.clone())
    } else if let Some(s) = worst(LaunchStatus::CrashLooping) {
        (LaunchStatus::CrashLooping, s.reason.clone())
    } else if !states.is_empty() && states.iter().all(|s| s.status == LaunchStatus::Exited) {
        (
            LaunchStatus::Exited,
            states.iter().find_map(|s| s.reason.clone()),
        )
    } else {
        (LaunchStatus::Launched, None)
    };
    let latest = states.iter().max_by_key(|s| s.since_ms);
    Reality {
        restarts: states.iter().map(|s| s.restarts).sum(),
        last_exit: states
            .iter()
            .filter(|s| s.last_exit.is_some())
            .max_by_key(|s| s.since_ms)
            .and_then(|s| s.last_exit),
        reason,
        since_ms: latest.map(|s| s.since_ms).filter(|ms| *ms > 0),
        limits: Some(limits.to_owned()),
        ..Reality::new(manifest.sha(), status)
    }
}

/// The environment every process of the pod gets (launchables add their
/// own id, root and `env`): p2's variables, and the agent's `PATH` so that
/// commands are found as in a shell.
pub(crate) fn pod_env(config: &AgentConfig, manifest: &Manifest) -> BTreeMap<String, String> {
    let home = config.pod_home(manifest.id());
    let mut env = BTreeMap::new();
    if let Some(path) = std::env::var_os("PATH") {
        env.insert("PATH".to_owned(), path.to_string_lossy().into_owned());
    }
    for (name, value) in [
        ("POD_ID", manifest.id().as_str().to_owned()),
        ("POD_HOME", home.display().to_string()),
        ("HOME", home.display().to_string()),
        ("CONFIG_PATH", home.join(CONFIG_FILE).display().to_string()),
        ("NODE_ID", config.node.as_str().to_owned()),
        ("MANIFEST_SHA", manifest.sha().to_string()),
    ] {
        env.insert(name.to_owned(), value);
    }
    env
}

/// The pod's `config`, as YAML, in its home.
const CONFIG_FILE: &str = "config.yaml";

/// Removes a stopped pod's home.
pub(crate) fn uninstall(config: &AgentConfig, pod: &PodId) -> Result<()> {
    let home = config.pod_home(pod);
    match std::fs::remove_dir_all(&home) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::Io {
            context: format!("remove the pod home {}", home.display()),
            source: e,
        }),
    }
}
