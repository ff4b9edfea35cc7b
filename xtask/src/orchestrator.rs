//! Building the `orchestrator` binary, and a throwaway `orchestrator serve`
//! on the embedded store (durable) on a free loopback port, for `bench`.
//!
//! [`Orchestrator`] is a guard like [`crate::etcd::Etcd`]: dropping it stops
//! the server with SIGTERM (an orderly shutdown that closes the store) and
//! deletes its data directory (see [`Daemon`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::cmd;
use crate::daemon::Daemon;

/// How long the server may take to open its store and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The cargo profile to build the binary with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `dev`, in `target/debug`: quick to build.
    Dev,
    /// `bench` (release settings), in `target/release`: the profile
    /// `cargo bench` builds everything else with, so what it measures is
    /// built alike.
    Bench,
}

/// Build the `orchestrator` binary and return its path.
pub(crate) fn build(root: &Path, profile: Profile) -> Result<PathBuf> {
    let mut build = cmd::cargo();
    build.args(["build", "-p", "orchestrator"]);
    let dir = match profile {
        Profile::Dev => "debug",
        Profile::Bench => {
            build.args(["--profile", "bench"]);
            "release"
        }
    };
    cmd::run(&mut build)?;
    Ok(crate::target_dir(root).join(dir).join("orchestrator"))
}

/// A running `orchestrator serve`; stopped and its data removed on drop.
#[derive(Debug)]
pub(crate) struct Orchestrator {
    /// Held for its `Drop`, which stops the server.
    _daemon: Daemon,
    endpoint: String,
}

impl Orchestrator {
    /// Start `binary serve` with its embedded store durable in a new
    /// temporary directory under `parent`, listening on a free loopback
    /// port, and wait until it listens.
    pub(crate) fn start(binary: &Path, parent: &Path) -> Result<Orchestrator> {
        let mut daemon = Daemon::spawn("orchestrator", Some(parent), |dir| {
            let mut cmd = Command::new(binary);
            cmd.args(serve_args(&dir.join("data")));
            cmd
        })?;
        let addr = daemon.wait_until("listening", START_TIMEOUT, |d| listening_addr(&d.log()))?;
        let endpoint = format!("http://{addr}");
        println!("orchestrator is listening at {endpoint}");
        Ok(Orchestrator {
            _daemon: daemon,
            endpoint,
        })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self._daemon.pid()
    }

    /// Its gRPC (and etcd API) URL, e.g. `http://127.0.0.1:43121`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// `serve` on the embedded store in `data_dir`: the port is picked by the
/// server (it logs which), no metrics endpoint, info logs (the "listening
/// on" line) whatever `RUST_LOG` says.
fn serve_args(data_dir: &Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "off".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--log".into(),
        "info".into(),
        "--log-format".into(),
        "plain".into(),
    ]
}

/// The address in the first complete "listening on ADDR" line of `log`
/// (a line still being written could hold a truncated port).
pub(crate) fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.split_inclusive('\n').find_map(|line| {
        let line = line.strip_suffix('\n')?;
        let rest = &line[line.find("listening on ")? + "listening on ".len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_address_in_the_log() {
        let log = "2025-01-01T00:00:00Z  INFO opening store\n\
                   2025-01-01T00:00:01Z  INFO listening on 127.0.0.1:40123 addr=127.0.0.1:40123 backend=\"embedded\"\n";
        assert_eq!(
            listening_addr(log),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(listening_addr("INFO starting\n"), None);
        // A line still being written is not trusted yet.
        assert_eq!(listening_addr("INFO listening on 127.0.0.1:4"), None);
    }

    #[test]
    fn serves_on_loopback_durably_without_metrics() {
        let args = serve_args(Path::new("/b/data"));
        let after = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].as_str()
        };
        assert_eq!(args[0], "serve");
        assert_eq!(after("--listen"), "127.0.0.1:0");
        assert_eq!(after("--metrics-listen"), "off");
        assert_eq!(after("--data-dir"), "/b/data");
        assert!(!args.iter().any(|a| a == "--memory"));
    }
}
