//! `cargo xtask run`: build and start the control plane on the embedded
//! store (data in `.drover-data/`), streaming its logs until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, header};
use crate::{orchestrator, signals};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Embedded store data directory (default: `.drover-data/` in the repo).
    #[arg(long, conflicts_with = "memory")]
    data_dir: Option<PathBuf>,
    /// Keep the store in memory only (nothing survives a restart).
    #[arg(long)]
    memory: bool,
}

pub(crate) fn run(root: &Path, args: Args) -> Result<()> {
    header("run: tools");
    crate::provision::ensure(crate::provision::Needs {
        etcd: false,
        python: false,
    })?;

    header("run: build orchestrator");
    let binary = orchestrator::build(root, orchestrator::Profile::Dev)?;

    header("run: orchestrator serve");
    let mut serve = Command::new(&binary);
    serve.args(serve_args(root, &args));
    println!("$ {}", cmd::display(&serve));
    println!("(Ctrl-C to stop)");
    let mut child = serve
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    signals::register(child.id());
    let status = child.wait();
    signals::unregister(child.id());
    let status = status.context("waiting for the orchestrator")?;
    if signals::interrupted() {
        println!("orchestrator stopped ({status})");
        return Ok(());
    }
    if !status.success() {
        bail!("orchestrator exited with {status}");
    }
    Ok(())
}

fn serve_args(root: &Path, args: &Args) -> Vec<String> {
    let mut out = vec!["serve".to_string(), "--listen".into(), args.listen.clone()];
    if args.memory {
        out.push("--memory".into());
    } else {
        let dir = args
            .data_dir
            .clone()
            // The same name as `orchestrator serve`'s default data dir.
            .unwrap_or_else(|| root.join(".drover-data"));
        out.push("--data-dir".into());
        out.push(dir.display().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_embedded_store_in_repo_data_dir() {
        let args = Args {
            listen: "127.0.0.1:7400".into(),
            data_dir: None,
            memory: false,
        };
        assert_eq!(
            serve_args(Path::new("/repo"), &args),
            [
                "serve",
                "--listen",
                "127.0.0.1:7400",
                "--data-dir",
                "/repo/.drover-data"
            ]
        );
    }

    #[test]
    fn memory_mode_passes_no_data_dir() {
        let args = Args {
            listen: "127.0.0.1:9".into(),
            data_dir: None,
            memory: true,
        };
        assert_eq!(
            serve_args(Path::new("/repo"), &args),
            ["serve", "--listen", "127.0.0.1:9", "--memory"]
        );
    }
}
