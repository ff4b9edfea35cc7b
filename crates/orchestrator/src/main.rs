//! `orchestrator`: Drover's control plane (`serve`) and a small CLI client
//! (`info`, `rc ...`). Thin by design: the logic lives in the library
//! crates; this binary parses arguments, picks a store, and wires the gRPC
//! services.

mod agent;
mod agent_config;
mod cli;
mod farm;
mod info;
mod metrics;
mod rc;
mod serve;
mod system;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};

/// The served etcd API allocates per request (protobuf messages, HTTP/2
/// frames, journal rows); under glibc's allocator that was a fifth of the
/// server's CPU at 64 concurrent writers. mimalloc's thread-local free lists
/// make those allocations cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, &cli.log) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Hollow(args) => agent::run_hollow(args).await,
            Command::Info(args) => info::run(args).await,
            Command::Rc(args) => rc::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Plain stderr, not the log: it must reach the user even with
            // logging filtered off, and exactly once.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so `orchestrator info`'s stdout stays clean.
fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}
