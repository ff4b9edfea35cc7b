//! Drover's developer tasks, run as `cargo xtask <command>` (see
//! <https://github.com/matklad/cargo-xtask>): one binary, one module per
//! subcommand, no shell scripts to keep in sync.
//!
//! - `test`: provision tools, start a throwaway etcd, run every test.
//! - `ci`: formatting, clippy, layering checks, codegen freshness, then `test`.
//! - `run`: build and start the control plane on the embedded store.
//! - `bench`: run a benchmark against a private etcd measured in the same run.
//! - `codegen`: regenerate (or `--check`) committed generated code.

mod bench;
mod ci;
mod cmd;
mod codegen;
mod daemon;
mod etcd;
mod layering;
mod noise;
mod orchestrator;
mod provision;
mod run;
mod signals;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Drover's developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every test (unit, conformance, end-to-end, doctests) against a
    /// throwaway etcd; installs missing tools with apt when run as root.
    Test(test::Args),
    /// The CI gate: fmt, clippy, layering, codegen --check, then `test`.
    Ci {
        /// Run only the checks; `.ci/run` then runs `cargo xtask test` itself.
        #[arg(long)]
        no_test: bool,
    },
    /// Build and start `orchestrator serve` on the embedded store and stream
    /// its logs until Ctrl-C.
    Run(run::Args),
    /// Run a benchmark (store: embedded, served by an orchestrator, and etcd
    /// side by side).
    Bench(bench::Args),
    /// Regenerate committed generated code (protobuf), or check it is fresh.
    Codegen {
        /// Fail instead of writing when a generated file is stale.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::install();
    let root = project_root();
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!("error: cannot enter {}: {e}", root.display());
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Ci { no_test } => ci::run(&root, !no_test),
        Command::Run(args) => run::run(&root, args),
        Command::Bench(args) => bench::run(&root, args),
        Command::Codegen { check } => codegen::run(check),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
