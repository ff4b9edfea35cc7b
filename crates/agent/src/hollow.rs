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
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::AgentConfig;
use crate::error::Result;
use crate::process::{LaunchSpec, Processes, Running};

/// Pretend processes: started at once, running until stopped.
#[derive(Debug, Default)]
pub struct HollowProcesses;

struct HollowRunning {
    stopped: CancellationToken,
}

impl Processes for HollowProcesses {
    fn spawn(&self, _spec: &LaunchSpec) -> Result<Box<dyn Running>> {
        Ok(Box::new(HollowRunning {
            stopped: CancellationToken::new(),
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
    let processes: Arc<dyn Processes> = Arc::new(HollowProcesses);
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..count {
        let node = format!("{prefix}-{i}").parse().map_err(|e| {
            crate::AgentError::Config(format!("hollow node name {prefix}-{i}: {e}"))
        })?;
        let mut config = base.clone();
        config.node = node;
        config.data_dir = base.data_dir.join(i.to_string());
        let agent =
            Agent::with_processes(store.clone(), config, processes.clone()).stop_pods_on_exit(true);
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
