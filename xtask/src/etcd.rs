//! A throwaway etcd on free loopback ports, for `test` and `bench`.
//!
//! [`Etcd`] is a guard: dropping it stops etcd and deletes its data
//! directory, on success, on error and on Ctrl-C alike (see [`Daemon`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::daemon::Daemon;
use crate::signals;

/// Raft timings short enough for fast tests on one node; with them etcd's
/// minimum lease TTL is 1 s, so lease-expiry tests need not wait long.
const HEARTBEAT_MS: u32 = 10;
const ELECTION_MS: u32 = 50;
const PROGRESS_NOTIFY: &str = "1s";

/// Start attempts (a port picked as free can be taken before etcd binds it).
const START_ATTEMPTS: usize = 3;
/// How long one attempt waits for etcd to report itself healthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd; stopped and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct Etcd {
    /// Held for its `Drop`, which stops etcd.
    _daemon: Daemon,
    client_url: String,
}

impl Etcd {
    /// Start etcd with its data directory in a new temporary directory under
    /// `parent` (the system temp dir when `None`) and wait until it is healthy.
    pub(crate) fn start(parent: Option<&Path>) -> Result<Etcd> {
        let mut last_err = None;
        for attempt in 1..=START_ATTEMPTS {
            match Etcd::start_once(parent) {
                Ok(etcd) => return Ok(etcd),
                Err(e) if attempt < START_ATTEMPTS && !signals::interrupted() => {
                    eprintln!("etcd start attempt {attempt} failed, retrying: {e:#}");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt ran"))
    }

    fn start_once(parent: Option<&Path>) -> Result<Etcd> {
        let binary = crate::cmd::which("etcd").context("`etcd` is not on PATH")?;
        let [client, peer] = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let addr: SocketAddr = format!("127.0.0.1:{client}").parse()?;
        let mut daemon = Daemon::spawn("etcd", parent, |dir| {
            let mut cmd = Command::new(binary);
            cmd.args(etcd_args(&dir.join("data"), &client_url, &peer_url));
            cmd
        })?;
        daemon.wait_until("healthy", HEALTH_TIMEOUT, |_| {
            probe_health(addr).unwrap_or(false).then_some(())
        })?;
        println!("etcd is healthy at {client_url}");
        Ok(Etcd {
            _daemon: daemon,
            client_url,
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:43121`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The directory holding etcd's data and log (for tests of the guard).
    #[cfg(test)]
    fn dir(&self) -> PathBuf {
        self._daemon.dir().to_path_buf()
    }
}

/// etcd's command line: one member on loopback, fast raft timings.
fn etcd_args(data_dir: &Path, client_url: &str, peer_url: &str) -> Vec<String> {
    let data_dir: PathBuf = data_dir.to_path_buf();
    vec![
        "--name=drover-test".into(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=drover-test={peer_url}"),
        "--initial-cluster-state=new".into(),
        format!("--heartbeat-interval={HEARTBEAT_MS}"),
        format!("--election-timeout={ELECTION_MS}"),
        // Watches asking for progress notifications get one a second, so
        // tests of them need not wait etcd's default 10 minutes.
        format!("--experimental-watch-progress-notify-interval={PROGRESS_NOTIFY}"),
        "--logger=zap".into(),
    ]
}

/// Two distinct free loopback ports (held open together so they differ).
fn free_ports() -> Result<[u16; 2]> {
    let a = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    let b = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

/// `GET /health` over plain HTTP/1.0; true when etcd reports itself healthy.
fn probe_health(addr: SocketAddr) -> std::io::Result<bool> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(is_healthy_response(&response))
}

fn is_healthy_response(response: &str) -> bool {
    response.starts_with("HTTP/1.") && response.contains("\"health\":\"true\"")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_nonzero() {
        let [a, b] = free_ports().unwrap();
        assert_ne!(a, b);
        assert!(a > 0 && b > 0);
    }

    #[test]
    fn health_response_is_recognised() {
        let ok = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\"}";
        assert!(is_healthy_response(ok));
        let no_leader = "HTTP/1.0 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(!is_healthy_response(no_leader));
        assert!(!is_healthy_response(""));
    }

    /// A real etcd under `parent` for a test; `None` (with a message) where
    /// etcd is not installed, unless DROVER_REQUIRE_ETCD=1 as under `cargo
    /// xtask test`.
    pub(crate) fn start_for_test(parent: &Path) -> Option<Etcd> {
        if crate::cmd::which("etcd").is_none() {
            assert_ne!(
                std::env::var("DROVER_REQUIRE_ETCD").as_deref(),
                Ok("1"),
                "etcd is required but not on PATH"
            );
            eprintln!("skipping: etcd is not on PATH");
            return None;
        }
        Some(Etcd::start(Some(parent)).unwrap())
    }

    #[test]
    fn args_pin_loopback_and_fast_raft() {
        let args = etcd_args(Path::new("/d"), "http://127.0.0.1:1", "http://127.0.0.1:2");
        assert!(args.contains(&"--heartbeat-interval=10".to_string()));
        assert!(args.contains(&"--election-timeout=50".to_string()));
        assert!(args.contains(&"--data-dir=/d".to_string()));
        assert!(args.contains(&"--initial-cluster=drover-test=http://127.0.0.1:2".to_string()));
        assert!(
            args.iter()
                .filter(|a| a.contains("://"))
                .all(|a| a.contains("://127.0.0.1:")),
            "etcd must listen on loopback only: {args:?}"
        );
    }

    /// Starts a real etcd: skipped (with a message) where etcd is not
    /// installed, unless DROVER_REQUIRE_ETCD=1 as under `cargo xtask test`.
    #[test]
    fn guard_starts_healthy_etcd_and_cleans_up_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let Some(etcd) = start_for_test(parent.path()) else {
            return;
        };
        let dir = etcd.dir();
        assert!(dir.join("data").is_dir(), "etcd wrote its data dir");
        let addr: SocketAddr = etcd
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap();
        assert!(probe_health(addr).unwrap());
        drop(etcd);
        assert!(!dir.exists(), "data dir removed on drop");
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
            "etcd no longer listens after drop"
        );
    }
}
