//! The RC farm every `orchestrator serve` runs (unless `--no-farm`): its
//! flags, and its start and stop beside the gRPC server.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use drover_labels::Selector;
use drover_manifest::units::parse_flag_duration;
use drover_metrics::MetricsRegistry;
use drover_rc_farm::{Farm, FarmConfig};
use drover_store::Store;
use drover_store::keys::Keys;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The replication controller farm.
#[derive(Debug, Args)]
pub(crate) struct FarmArgs {
    /// Run no RC farm in this process (another orchestrator's farm owns the
    /// RCs).
    #[arg(long)]
    pub(crate) no_farm: bool,

    /// This farm's identity in audit records and RC statuses
    /// [default: HOSTNAME-PID].
    #[arg(long, value_name = "ID")]
    pub(crate) farm_id: Option<String>,

    /// The farm's lease: a dead farm's RCs are re-owned by the others this
    /// long after its last renewal. Whole seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_flag_duration)]
    pub(crate) farm_lease: Duration,

    /// How long the pods of a node whose agent went away are waited for
    /// before they are replaced on other nodes.
    #[arg(long, value_name = "DURATION", default_value = LOST_NODE_GRACE_DEFAULT, value_parser = parse_flag_duration)]
    pub(crate) lost_node_grace: Duration,

    /// Manage only RCs whose labels match: NAME=SELECTOR, e.g.
    /// `web=tier=web`. Farms with different partition names share no RCs.
    #[arg(long, value_name = "NAME=SELECTOR")]
    pub(crate) farm_partition: Option<String>,

    /// How many buckets RCs hash onto; every farm must use the same number.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub(crate) farm_buckets: u32,
}

/// `drover_rc_farm::DEFAULT_LOST_NODE_GRACE` as a flag value (a test keeps them equal).
const LOST_NODE_GRACE_DEFAULT: &str = "30s";

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "orchestrator".to_owned())
}

impl FarmArgs {
    /// The farm's configuration, or `None` with `--no-farm`.
    pub(crate) fn config(
        &self,
        keys: Keys,
        metrics: &MetricsRegistry,
    ) -> anyhow::Result<Option<FarmConfig>> {
        if self.no_farm {
            return Ok(None);
        }
        let id = self
            .farm_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
        let mut config = FarmConfig::new(id, keys);
        config.lease = self.farm_lease;
        config.lost_node_grace = self.lost_node_grace;
        config.buckets = self.farm_buckets;
        config.metrics = metrics.clone();
        if let Some(partition) = &self.farm_partition {
            let (name, selector) = partition
                .split_once('=')
                .context("--farm-partition: expected NAME=SELECTOR")?;
            let selector: Selector = selector
                .parse()
                .with_context(|| format!("--farm-partition: selector {selector:?}"))?;
            config.partition = Some((name.to_owned(), selector));
        }
        Ok(Some(config))
    }
}

/// A running farm.
pub(crate) struct RunningFarm {
    stop: CancellationToken,
    task: JoinHandle<Result<(), drover_rc_farm::RcError>>,
}

impl RunningFarm {
    /// Starts the farm on `store`.
    pub(crate) fn start<S: Store>(store: S, config: FarmConfig) -> RunningFarm {
        tracing::info!(farm = %config.id, lease = ?config.lease, grace = ?config.lost_node_grace, "starting the RC farm");
        let stop = CancellationToken::new();
        let task = tokio::spawn(Farm::new(store, config).run(stop.clone()));
        RunningFarm { stop, task }
    }

    /// Stops it: its buckets are released after in-flight reconciles
    /// drained, so other farms take its RCs over at once.
    pub(crate) async fn stop(self, grace: Duration) {
        self.stop.cancel();
        match tokio::time::timeout(grace, self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!("RC farm stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "RC farm failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "RC farm task panicked"),
            Err(_) => tracing::warn!(?grace, "RC farm did not stop in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_rc_farm::DEFAULT_LOST_NODE_GRACE;

    #[test]
    fn the_grace_flag_default_is_the_library_default() {
        assert_eq!(
            parse_flag_duration(LOST_NODE_GRACE_DEFAULT).unwrap(),
            DEFAULT_LOST_NODE_GRACE
        );
    }
}
