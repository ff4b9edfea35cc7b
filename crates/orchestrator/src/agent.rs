//! `orchestrator agent` and `orchestrator hollow`: node agents on the store
//! reached through orchestrators or etcd (`drover-store-etcd` either way).

use std::future::Future;

use anyhow::Context as _;
use drover_agent::{Agent, AgentConfig, AgentError, CgroupMode};
use drover_store_etcd::EtcdStore;
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, HollowArgs};
use crate::serve::ShutdownSignal;

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(args.node.clone(), &args.data_dir);
    config.labels = args.labels.into_iter().collect();
    if let Some(address) = args.address {
        config.address = address;
    }
    config.lease_ttl_secs = args.lease_ttl.as_secs().max(1) as i64;
    config.log_bytes = args.max_log_size.as_u64();
    if args.no_cgroups {
        config.cgroups = CgroupMode::Off;
    }
    let stop_pods = args.stop_pods_on_exit;
    tracing::info!(node = %args.node, endpoints = %args.endpoints.join(","), "agent starting");
    until_signal(&args.endpoints, |store, shutdown| {
        Agent::new(store, config)
            .stop_pods_on_exit(stop_pods)
            .run(shutdown)
    })
    .await
    .with_context(|| format!("agent of node {}", args.node))
}

pub(crate) async fn run_hollow(args: HollowArgs) -> anyhow::Result<()> {
    let first = format!("{}-0", args.prefix)
        .parse()
        .map_err(|e| anyhow::anyhow!("--prefix {:?}: {e}", args.prefix))?;
    let mut config = AgentConfig::new(first, &args.data_dir);
    config.lease_ttl_secs = args.lease_ttl.as_secs().max(1) as i64;
    tracing::info!(nodes = args.nodes, prefix = %args.prefix, "hollow nodes starting");
    let (prefix, nodes) = (args.prefix.clone(), args.nodes);
    until_signal(&args.endpoints, |store, shutdown| {
        drover_agent::run_hollow(store, config, prefix, nodes, shutdown)
    })
    .await
    .context("hollow nodes")
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
