//! `orchestrator agent`: a node agent on the store reached through
//! orchestrators or etcd (`drover-store-etcd` either way).

use anyhow::Context as _;
use drover_agent::{Agent, AgentConfig, CgroupMode};
use tokio_util::sync::CancellationToken;

use crate::cli::{AgentArgs, HollowArgs};
use crate::serve::ShutdownSignal;

pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut shutdown_signal = ShutdownSignal::install()?;
    let store = drover_store_etcd::EtcdStore::connect(args.endpoints.clone(), Default::default())
        .await
        .with_context(|| format!("connecting to the store at {}", args.endpoints.join(",")))?;
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
    let shutdown = CancellationToken::new();
    let agent = Agent::new(store, config).stop_pods_on_exit(args.stop_pods_on_exit);
    tracing::info!(node = %args.node, endpoints = %args.endpoints.join(","), "agent starting");
    let mut run = tokio::spawn(agent.run(shutdown.clone()));
    let ran = tokio::select! {
        ran = &mut run => ran,
        signal = shutdown_signal.recv() => {
            tracing::info!(signal, "shutting down");
            shutdown.cancel();
            run.await
        }
    };
    ran.context("the agent task failed")?
        .with_context(|| format!("agent of node {}", args.node))
}

pub(crate) async fn run_hollow(args: HollowArgs) -> anyhow::Result<()> {
    let mut shutdown_signal = ShutdownSignal::install()?;
    let store = drover_store_etcd::EtcdStore::connect(args.endpoints.clone(), Default::default())
        .await
        .with_context(|| format!("connecting to the store at {}", args.endpoints.join(",")))?;
    let first = format!("{}-0", args.prefix)
        .parse()
        .map_err(|e| anyhow::anyhow!("--prefix {:?}: {e}", args.prefix))?;
    let mut config = AgentConfig::new(first, &args.data_dir);
    config.lease_ttl_secs = args.lease_ttl.as_secs().max(1) as i64;
    let shutdown = CancellationToken::new();
    tracing::info!(nodes = args.nodes, prefix = %args.prefix, "hollow nodes starting");
    let mut run = tokio::spawn(drover_agent::run_hollow(
        store,
        config,
        args.prefix.clone(),
        args.nodes,
        shutdown.clone(),
    ));
    let ran = tokio::select! {
        ran = &mut run => ran,
        signal = shutdown_signal.recv() => {
            tracing::info!(signal, "shutting down");
            shutdown.cancel();
            run.await
        }
    };
    ran.context("the hollow agents' task failed")?
        .context("hollow nodes")
}
