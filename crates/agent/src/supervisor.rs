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
    /// The running main process's pid, if it has one.
    pub pid: Option<u32>,
    /// The main process runs.
    pub running: bool,
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
            running: false,
        }
    }

    /// True while the main process runs.
    pub fn is_running(&self) -> bool {
        self.status == LaunchStatus::Launched && self.running
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
/// With `adopt`, first takes over the process an earlier run of the agent
/// left running for it, if there is one.
pub(crate) async fn supervise(
    processes: Arc<dyn Processes>,
    spec: LaunchSpec,
    supervision: Supervision,
    mut adopt: bool,
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
        let adopted = if std::mem::take(&mut adopt) {
            processes.adopt(&spec)
        } else {
            None
        };
        if adopted.is_some() {
            tracing::info!(launchable = %spec.name, "adopted from an earlier run of the agent");
        }
        let mut running = match adopted.map_or_else(|| processes.spawn(&spec), Ok) {
            Ok(running) => running,
            Err(e) => {
                let reason = crate::error::with_causes(&e);
                tracing::warn!(launchable = %spec.name, %reason, "start failed");
                let delay = backoff.next_delay();
                publish(&|s| {
                    s.status = LaunchStatus::Failed;
                    s.reason = Some(reason.clone());
                    s.pid = None;
                    s.running = false;
                });
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // Launching until it counts as started: not reported running yet.
        tokio::select! {
            () = running.started() => {}
            () = stop.cancelled() => {
                running.stop(supervision.grace).await;
                return;
            }
        }
        let started = Instant::now();
        let pid = running.pid();
        tracing::info!(launchable = %spec.name, ?pid, "started");
        publish(&|s| {
            s.status = LaunchStatus::Launched;
            s.reason = None;
            s.pid = pid;
            s.running = true;
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
                s.running = false;
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
            s.running = false;
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use futures::future::BoxFuture;
    use parking_lot::Mutex;

    use super::*;
    use crate::error::{AgentError, Result};
    use crate::process::Running;

    /// What the fake's next start does: fail to start, or run for a while
    /// and exit with a code.
    #[derive(Clone, Copy, Debug)]
    enum Script {
        FailToStart,
        RunFor(Duration, i32),
    }

    /// Processes that follow a script, recording when each start happened
    /// on the (paused) tokio clock.
    #[derive(Default)]
    struct Fake {
        script: Mutex<VecDeque<Script>>,
        starts: Mutex<Vec<Instant>>,
        stops: Mutex<Vec<Duration>>,
    }

    struct FakeRunning {
        exit_at: Instant,
        code: i32,
        fake: Arc<Fake>,
    }

    impl Processes for Arc<Fake> {
        fn spawn(&self, _spec: &LaunchSpec) -> Result<Box<dyn Running>> {
            self.starts.lock().push(Instant::now());
            // After the script: run "forever".
            let step = self
                .script
                .lock()
                .pop_front()
                .unwrap_or(Script::RunFor(Duration::from_secs(86_400), 0));
            match step {
                Script::FailToStart => Err(AgentError::Io {
                    context: "start fake".into(),
                    source: std::io::Error::other("no such program"),
                }),
                Script::RunFor(run, code) => Ok(Box::new(FakeRunning {
                    exit_at: Instant::now() + run,
                    code,
                    fake: self.clone(),
                })),
            }
        }
        fn limits(&self) -> &'static str {
            "none"
        }
    }

    impl Running for FakeRunning {
        fn pid(&self) -> Option<u32> {
            Some(42)
        }
        fn wait(&mut self) -> BoxFuture<'_, Exit> {
            Box::pin(async move {
                tokio::time::sleep_until(self.exit_at).await;
                Exit {
                    code: Some(self.code),
                    signal: None,
                }
            })
        }
        fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
            self.fake.stops.lock().push(grace);
            Box::pin(async {})
        }
    }

    fn spec() -> LaunchSpec {
        LaunchSpec {
            name: "web/server".into(),
            program: "/bin/true".into(),
            args: Vec::new(),
            env: Default::default(),
            working_dir: "/".into(),
            log_file: "/dev/null".into(),
            limits: Default::default(),
            record_file: "/dev/null".into(),
        }
    }

    fn supervision(policy: RestartPolicy) -> Supervision {
        Supervision {
            policy,
            backoff: BackoffPolicy::new(Duration::from_secs(1), Duration::from_secs(8)),
            reset_after: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }

    /// Runs a supervisor over `script` for `time` of paused time; returns
    /// the start times (seconds since the beginning) and the last state.
    async fn run(
        policy: RestartPolicy,
        script: &[Script],
        time: Duration,
    ) -> (Vec<f64>, LaunchState, Arc<Fake>) {
        let fake = Arc::new(Fake::default());
        fake.script.lock().extend(script.iter().copied());
        let (tx, rx) = watch::channel(LaunchState::starting());
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let task = tokio::spawn(supervise(
            Arc::new(fake.clone()),
            spec(),
            supervision(policy),
            false,
            tx,
            stop.clone(),
        ));
        tokio::time::sleep(time).await;
        let state = rx.borrow().clone();
        stop.cancel();
        task.await.unwrap();
        let starts = fake
            .starts
            .lock()
            .iter()
            .map(|t| (*t - t0).as_secs_f64())
            .collect();
        (starts, state, fake)
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_restart_after_a_doubling_backoff_up_to_the_cap() {
        let crash = Script::RunFor(Duration::from_secs(1), 2);
        let (starts, state, _) =
            run(RestartPolicy::Always, &[crash; 6], Duration::from_secs(40)).await;
        // Run 1 s, then wait 1, 2, 4, 8, 8 (the cap), 8 s.
        assert_eq!(starts, vec![0.0, 2.0, 5.0, 10.0, 19.0, 28.0, 37.0]);
        assert_eq!(state.restarts, 6);
        assert_eq!(
            state.status,
            LaunchStatus::Launched,
            "the seventh run lasts"
        );
        assert_eq!(state.last_exit.and_then(|e| e.code), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_resets_the_backoff() {
        let crash = Script::RunFor(Duration::from_secs(1), 1);
        let long = Script::RunFor(Duration::from_secs(61), 1);
        let (starts, _, _) = run(
            RestartPolicy::Always,
            &[crash, crash, long, crash],
            Duration::from_secs(80),
        )
        .await;
        // 0: crash at 1, wait 1; 2: crash at 3, wait 2; 5: runs 61 s to 66,
        // which resets the backoff: wait 1 again; 67: crash at 68, wait 2.
        assert_eq!(starts, vec![0.0, 2.0, 5.0, 67.0, 70.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn restart_policies_decide_on_the_exit_status() {
        let success = Script::RunFor(Duration::from_secs(1), 0);
        let failure = Script::RunFor(Duration::from_secs(1), 3);
        let (starts, state, _) = run(
            RestartPolicy::OnFailure,
            &[failure, success],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(starts, vec![0.0, 2.0], "restarted after the failure only");
        assert_eq!(state.status, LaunchStatus::Exited);
        assert_eq!(state.last_exit.and_then(|e| e.code), Some(0));
        let (starts, state, _) =
            run(RestartPolicy::Never, &[failure], Duration::from_secs(30)).await;
        assert_eq!(starts, vec![0.0]);
        assert_eq!(state.status, LaunchStatus::Exited);
        assert!(state.reason.unwrap().contains("exited with status 3"));
        let (starts, _, _) = run(RestartPolicy::Always, &[success], Duration::from_secs(30)).await;
        assert_eq!(starts, vec![0.0, 2.0], "always restarts even a success");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_start_is_reported_and_retried_with_backoff() {
        let (starts, _, _) = run(
            RestartPolicy::Always,
            &[Script::FailToStart, Script::FailToStart],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(starts, vec![0.0, 1.0, 3.0]);
        let (_, state, _) = run(
            RestartPolicy::Always,
            &[Script::FailToStart],
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(state.status, LaunchStatus::Failed);
        assert!(state.reason.unwrap().contains("no such program"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_uses_the_grace_period_and_ends_supervision() {
        let (starts, _, fake) = run(RestartPolicy::Always, &[], Duration::from_secs(5)).await;
        assert_eq!(starts, vec![0.0]);
        assert_eq!(*fake.stops.lock(), vec![Duration::from_secs(5)]);
    }
}
