//! Supervision of one launchable: start it, wait for its exit, apply its
//! restart policy with a growing backoff, and stop it (with its grace
//! period) when told. Its state is published on a watch channel, from which
//! the pod's reality record and its process-alive health are derived.

use std::sync::Arc;
use std::time::Duration;

use drover_manifest::{Exit, LaunchStatus, RestartPolicy};
use drover_store::backoff::{Backoff, BackoffPolicy};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::node::now_ms;
use crate::process::{LaunchSpec, Processes};

/// One launchable's state, as its supervisor last published it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchState {
    pub status: LaunchStatus,
    /// Restarts since the supervisor began.
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Why it is crash-looping, exited or failed.
    pub reason: Option<String>,
    /// When `status` last changed (Unix milliseconds).
    pub since_ms: u64,
    /// The running main process, if any.
    pub pid: Option<u32>,
}

impl LaunchState {
    fn starting() -> Self {
        LaunchState {
            status: LaunchStatus::Launched,
            restarts: 0,
            last_exit: None,
            reason: None,
            since_ms: now_ms(),
            pid: None,
        }
    }

    /// True while the main process runs.
    pub fn is_running(&self) -> bool {
        self.status == LaunchStatus::Launched && self.pid.is_some()
    }
}

/// How a launchable is supervised.
#[derive(Clone, Debug)]
pub struct Supervision {
    pub policy: RestartPolicy,
    /// Backoff between restarts (from the manifest's `restart_backoff`,
    /// doubling to the agent's cap).
    pub backoff: BackoffPolicy,
    /// A run this long resets the backoff.
    pub reset_after: Duration,
    /// SIGTERM-to-SIGKILL grace on stop.
    pub grace: Duration,
}

/// Describes an exit for humans.
pub(crate) fn describe(exit: &Exit) -> String {
    match (exit.code, exit.signal) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "exited (status unknown)".into(),
    }
}

fn success(exit: &Exit) -> bool {
    exit.code == Some(0)
}

/// Runs `spec` under `supervision` until `stop` fires, then stops it.
pub(crate) async fn supervise(
    processes: Arc<dyn Processes>,
    spec: LaunchSpec,
    supervision: Supervision,
    state: watch::Sender<LaunchState>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(supervision.backoff);
    let publish = |update: &dyn Fn(&mut LaunchState)| {
        state.send_modify(|s| {
            let before = s.status;
            update(s);
            if s.status != before {
                s.since_ms = now_ms();
            }
        });
    };
    state.send_replace(LaunchState::starting());
    loop {
        if stop.is_cancelled() {
            return;
        }
        let mut running = match processes.spawn(&spec) {
            Ok(running) => running,
            Err(e) => {
                let reason = format!("{e}: {}", source_chain(&e));
                tracing::warn!(launchable = %spec.name, %reason, "start failed");
                let delay = backoff.next_delay();
                publish(&|s| {
                    s.status = LaunchStatus::Failed;
                    s.reason = Some(reason.clone());
                    s.pid = None;
                });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let started = Instant::now();
        let pid = running.pid();
        tracing::info!(launchable = %spec.name, ?pid, "started");
        publish(&|s| {
            s.status = LaunchStatus::Launched;
            s.reason = None;
            s.pid = pid;
        });
        let exit = tokio::select! {
            exit = running.wait() => exit,
            _ = stop.cancelled() => {
                running.stop(supervision.grace).await;
                tracing::info!(launchable = %spec.name, "stopped");
                return;
            }
        };
        // Whatever the main process left behind goes with it.
        running.stop(supervision.grace).await;
        let ran = started.elapsed();
        if ran >= supervision.reset_after {
            backoff.reset();
        }
        let restart = match supervision.policy {
            RestartPolicy::Always => true,
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !success(&exit),
        };
        let what = describe(&exit);
        if !restart {
            tracing::info!(launchable = %spec.name, %what, policy = %supervision.policy, "exited; not restarting");
            publish(&|s| {
                s.status = LaunchStatus::Exited;
                s.last_exit = Some(exit);
                s.reason = Some(format!("{what}; restart policy {}", supervision.policy));
                s.pid = None;
            });
            stop.cancelled().await;
            return;
        }
        let delay = backoff.next_delay();
        tracing::info!(launchable = %spec.name, %what, ?ran, ?delay, "exited; restarting after backoff");
        publish(&|s| {
            s.status = LaunchStatus::CrashLooping;
            s.restarts += 1;
            s.last_exit = Some(exit);
            s.reason = Some(format!("{what}; restarting in {delay:?}"));
            s.pid = None;
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out.join(": ")
}
