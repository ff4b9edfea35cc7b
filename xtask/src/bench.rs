//! `cargo xtask bench <store|labels|election|agent|all>`: run a benchmark, with a
//! private etcd where the benchmark measures against one.
//!
//! etcd's data directory is put under `target/bench/`, on the same disk as
//! the embedded store's bench data (`DROVER_BENCH_DIR`), so durable-write
//! numbers compare like with like. The store benchmark also gets a private
//! `orchestrator serve` (built with the bench profile, embedded store durable
//! under `target/bench/` too) and measures it through its etcd API
//! (`DROVER_ORCHESTRATOR_ENDPOINTS`).

use std::path::Path;

use anyhow::Result;

use crate::cmd::{self, header};
use crate::etcd::Etcd;
use crate::orchestrator::{self, Orchestrator};
use crate::provision;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which benchmark to run.
    #[arg(value_enum)]
    which: Which,
    /// Arguments handed to the benchmark binary, after `--`
    /// (e.g. `cargo xtask bench store -- --repeat 5`).
    #[arg(last = true)]
    bench_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    /// Embedded store, `orchestrator serve` (etcd API) and etcd, side by side
    /// (crates/store-etcd/benches/store.rs).
    Store,
    /// Label selector matching (crates/labels/benches/labels.rs).
    Labels,
    /// Leader election vs etcd's own (crates/election/benches/election.rs).
    Election,
    /// The node agent as a process on `orchestrator serve`: pod start
    /// latency, crash detection and restart, CPU and RSS; then hollow
    /// nodes: registration time, idle CPU and RSS, and the store's CPU
    /// (crates/agent/benches/agent.rs).
    Agent,
    /// All of the above, in turn.
    All,
}

/// Environment variable naming a directory for benchmark data files.
const BENCH_DIR_VAR: &str = "DROVER_BENCH_DIR";

pub(crate) fn run(root: &Path, args: Args) -> Result<()> {
    let benches = match args.which {
        Which::All => vec![Which::Store, Which::Labels, Which::Election, Which::Agent],
        one => vec![one],
    };
    provision::ensure(provision::Needs {
        etcd: true,
        python: false,
    })?;
    let bench_dir = crate::target_dir(root).join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    for which in benches {
        let (package, bench, needs_etcd, needs_orchestrator) = match which {
            Which::Store => ("drover-store-etcd", "store", true, true),
            Which::Labels => ("drover-labels", "labels", false, false),
            Which::Election => ("drover-election", "election", true, false),
            Which::Agent => ("drover-agent", "agent", false, true),
            Which::All => unreachable!("expanded above"),
        };
        header(&format!("bench: {bench}"));
        let orchestrator_binary = if needs_orchestrator {
            Some(orchestrator::build(root, orchestrator::Profile::Bench)?)
        } else {
            None
        };
        let etcd = if needs_etcd {
            Some(Etcd::start(Some(&bench_dir))?)
        } else {
            None
        };
        let orchestrator = match &orchestrator_binary {
            Some(binary) => Some(Orchestrator::start(binary, &bench_dir)?),
            None => None,
        };
        let mut cargo = cmd::cargo();
        cargo
            .args(["bench", "-p", package, "--bench", bench])
            .env(BENCH_DIR_VAR, &bench_dir);
        if !args.bench_args.is_empty() {
            cargo.arg("--").args(&args.bench_args);
        }
        if let Some(etcd) = &etcd {
            cargo.env("DROVER_ETCD_ENDPOINTS", etcd.endpoint());
        }
        if let Some(orchestrator) = &orchestrator {
            cargo.env("DROVER_ORCHESTRATOR_ENDPOINTS", orchestrator.endpoint());
            // The agent bench reads the store process's CPU use.
            cargo.env("DROVER_ORCHESTRATOR_PID", orchestrator.pid().to_string());
        }
        if let Some(binary) = &orchestrator_binary {
            // The agent bench runs `orchestrator agent` from the same build.
            cargo.env("DROVER_ORCHESTRATOR_BIN", binary);
        }
        cmd::run(&mut cargo)?;
        drop(orchestrator);
        drop(etcd);
    }
    Ok(())
}
