//! Hollow nodes: many agents in one process whose pods are pretend (no
//! process is started; a pod "runs" until it is stopped, and its health
//! passes), for scale tests of everything above the agent: registration,
//! intent, reality and health traffic of a thousand nodes from one machine
//! (Kubernetes' kubemark does the same with hollow kubelets).

use std::sync::Arc;
use std::time::Duration;

use drover_manifest::Exit;
use drover_store::Store;
use futures::future::BoxFuture;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::AgentConfig;
use crate::error::Result;
use crate::process::{LaunchSpec, Processes, Running};

/// Pretend processes: started after a launch delay (none by default),
/// running until stopped.
#[derive(Debug, Default)]
pub struct HollowProcesses {
    launch_delay: Duration,
}

impl HollowProcesses {
    /// Pretend processes that count as started `launch_delay` after their
    /// spawn, as a real program takes a while to come up.
    pub fn with_launch_delay(launch_delay: Duration) -> Self {
        HollowProcesses { launch_delay }
    }
}

struct HollowRunning {
    stopped: CancellationToken,
    started_at: Instant,
}

impl Processes for HollowProcesses {
    fn spawn(&self, _spec: &LaunchSpec) -> Result<Box<dyn Running>> {
        Ok(Box::new(HollowRunning {
            stopped: CancellationToken::new(),
            started_at: Instant::now() + self.launch_delay,
        }))
    }

    fn limits(&self) -> &'static str {
        "none"
    }

    fn fakes_health(&self) -> bool {
        true
    }
}

impl Running for HollowRunning {
    fn pid(&self) -> Option<u32> {
        None
    }

    fn started(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep_until(self.started_at))
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            self.stopped.cancelled().await;
            Exit {
                code: None,
                signal: None,
            }
        })
    }

    fn stop(&mut self, _grace: Duration) -> BoxFuture<'_, ()> {
        self.stopped.cancel();
        Box::pin(async {})
    }
}

/// Runs `count` hollow agents on `store` until `shutdown`: nodes
/// `<prefix>-<i>`, each with its data under `<base data dir>/<i>`, the
/// rest of the configuration from `base`. Fails with the first agent that
/// fails.
pub async fn run_hollow<S: Store>(
    store: S,
    base: AgentConfig,
    prefix: String,
    count: usize,
    shutdown: CancellationToken,
) -> Result<()> {
    HollowNodes {
        prefix,
        count,
        launch_delay: Duration::ZERO,
    }
    .run(store, base, shutdown)
    .await
}

/// A set of hollow nodes: their names and how their pretend pods behave.
#[derive(Clone, Debug)]
pub struct HollowNodes {
    /// The nodes are `<prefix>-0` .. `<prefix>-<count - 1>`.
    pub prefix: String,
    pub count: usize,
    /// How long a pretend pod takes to count as started.
    pub launch_delay: Duration,
}

impl HollowNodes {
    /// Runs the nodes on `store` until `shutdown`, as [`run_hollow`] does.
    pub async fn run<S: Store>(
        self,
        store: S,
        base: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let HollowNodes {
            prefix,
            count,
            launch_delay,
        } = self;
        let processes: Arc<dyn Processes> =
            Arc::new(HollowProcesses::with_launch_delay(launch_delay));
        let mut agents = tokio::task::JoinSet::new();
        for i in 0..count {
            let node = format!("{prefix}-{i}").parse().map_err(|e| {
                crate::AgentError::Config(format!("hollow node name {prefix}-{i}: {e}"))
            })?;
            let mut config = base.clone();
            config.node = node;
            config.data_dir = base.data_dir.join(i.to_string());
            let agent = Agent::with_processes(store.clone(), config, processes.clone())
                .stop_pods_on_exit(true);
            agents.spawn(agent.run(shutdown.clone()));
        }
        let mut first_error = None;
        while let Some(done) = agents.join_next().await {
            let outcome = match done {
                Ok(outcome) => outcome,
                Err(e) => Err(crate::AgentError::Config(format!(
                    "a hollow agent task failed: {e}"
                ))),
            };
            if let Err(e) = outcome
                && first_error.is_none()
            {
                // One failed (e.g. its node name is taken): stop them all.
                shutdown.cancel();
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
