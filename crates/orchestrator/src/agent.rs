//! `orchestrator agent` and `orchestrator hollow`: node agents on the store
//! reached through orchestrators or etcd (`drover-store-etcd` either way).

use std::future::Future;

use anyhow::Context as _;
use drover_agent::hollow::HollowNodes;
use drover_agent::{Agent, AgentError};
use drover_store_etcd::EtcdStore;
use tokio_util::sync::CancellationToken;

use crate::agent_config::AgentSettings;
use crate::cli::{AgentArgs, HollowArgs};
use crate::serve::ShutdownSignal;

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let settings = AgentSettings::resolve(args)?;
    let AgentSettings {
        endpoints,
        config,
        stop_pods_on_exit,
        hollow,
        hollow_launch_delay,
    } = settings;
    let node = config.node.clone();
    if let Some(count) = hollow {
        tracing::info!(nodes = count, prefix = %node, endpoints = %endpoints.join(","), "hollow nodes starting");
        let nodes = HollowNodes {
            prefix: node.to_string(),
            count: count as usize,
            launch_delay: hollow_launch_delay,
        };
        return until_signal(&endpoints, |store, shutdown| {
            nodes.run(store, config, shutdown)
        })
        .await
        .context("hollow nodes");
    }
    tracing::info!(%node, endpoints = %endpoints.join(","), "agent starting");
    until_signal(&endpoints, |store, shutdown| {
        Agent::new(store, config)
            .stop_pods_on_exit(stop_pods_on_exit)
            .run(shutdown)
    })
    .await
    .with_context(|| format!("agent of node {node}"))
}

/// `orchestrator hollow`: the same run as `orchestrator agent --hollow`.
pub(crate) async fn run_hollow(args: HollowArgs) -> anyhow::Result<()> {
    run(args.into_agent_args().map_err(anyhow::Error::msg)?).await
}

/// Connects to the store at `endpoints` and runs `work` until it ends or
/// SIGINT/SIGTERM cancels its token (then waits for it to finish).
async fn until_signal<F, Fut>(endpoints: &[String], work: F) -> anyhow::Result<()>
where
    F: FnOnce(EtcdStore, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), AgentError>> + Send + 'static,
{
    let mut shutdown_signal = ShutdownSignal::install()?;
    let store = EtcdStore::connect(endpoints.to_vec(), Default::default())
        .await
        .with_context(|| format!("connecting to the store at {}", endpoints.join(",")))?;
    let shutdown = CancellationToken::new();
    let mut run = tokio::spawn(work(store, shutdown.clone()));
    let ran = tokio::select! {
        ran = &mut run => ran,
        signal = shutdown_signal.recv() => {
            tracing::info!(signal, "shutting down");
            shutdown.cancel();
            run.await
        }
    };
    Ok(ran.context("the agent task failed")??)
}
