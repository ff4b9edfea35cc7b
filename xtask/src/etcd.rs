//! A throwaway etcd on free loopback ports, for `test` and `bench`.
//!
//! [`Etcd`] is a guard: dropping it kills etcd and deletes its data
//! directory, on success, on error and on Ctrl-C alike.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::signals;

/// Raft timings short enough for fast tests on one node; with them etcd's
/// minimum lease TTL is 1 s, so lease-expiry tests need not wait long.
const HEARTBEAT_MS: u32 = 10;
const ELECTION_MS: u32 = 50;
const PROGRESS_NOTIFY: &str = "1s";

/// Start attempts (a port picked as free can be taken before etcd binds it).
const START_ATTEMPTS: usize = 3;
/// Health polls per attempt, `HEALTH_POLL` apart: about 30 s in total.
const HEALTH_POLLS: usize = 300;
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// A running etcd; killed and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct Etcd {
    child: Option<Child>,
    dir: Option<TempDir>,
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
        let dir = match parent {
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                tempfile::Builder::new()
                    .prefix("drover-etcd-")
                    .tempdir_in(parent)
            }
            None => tempfile::Builder::new().prefix("drover-etcd-").tempdir(),
        }
        .context("creating etcd's temporary directory")?;
        let [client, peer] = free_ports()?;
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let log = File::create(&log_path).context("creating etcd.log")?;

        let mut cmd = Command::new(binary);
        cmd.args(etcd_args(&dir.path().join("data"), &client_url, &peer_url))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        println!("$ {}", crate::cmd::display(&cmd));
        let child = cmd.spawn().context("starting etcd")?;
        signals::register(child.id());
        let mut etcd = Etcd {
            child: Some(child),
            dir: Some(dir),
            client_url,
        };
        etcd.wait_healthy().map_err(|e| {
            let tail = etcd.log_tail(30);
            e.context(format!(
                "etcd did not become healthy; last lines of its log:\n{tail}"
            ))
        })?;
        println!("etcd is healthy at {}", etcd.client_url);
        Ok(etcd)
    }

    /// The client URL, e.g. `http://127.0.0.1:43121`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.client_url
    }

    fn wait_healthy(&mut self) -> Result<()> {
        let addr: SocketAddr = self
            .client_url
            .trim_start_matches("http://")
            .parse()
            .context("parsing etcd's client address")?;
        for _ in 0..HEALTH_POLLS {
            if signals::interrupted() {
                bail!("interrupted");
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("etcd exited during startup ({status})");
            }
            if probe_health(addr).unwrap_or(false) {
                return Ok(());
            }
            std::thread::sleep(HEALTH_POLL);
        }
        bail!(
            "etcd at {} was not healthy within {:?}",
            self.client_url,
            HEALTH_POLL * HEALTH_POLLS as u32
        )
    }

    fn log_tail(&self, lines: usize) -> String {
        let Some(dir) = &self.dir else {
            return String::new();
        };
        let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The directory holding etcd's data and log (for tests of the guard).
    #[cfg(test)]
    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("present until drop")
            .path()
            .to_path_buf()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            signals::unregister(child.id());
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!(
                    "warning: could not remove etcd's directory {}: {e}",
                    path.display()
                );
            }
        }
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
mod tests {
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
        if crate::cmd::which("etcd").is_none() {
            assert_ne!(
                std::env::var("DROVER_REQUIRE_ETCD").as_deref(),
                Ok("1"),
                "etcd is required but not on PATH"
            );
            eprintln!("skipping: etcd is not on PATH");
            return;
        }
        let parent = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(Some(parent.path())).unwrap();
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
