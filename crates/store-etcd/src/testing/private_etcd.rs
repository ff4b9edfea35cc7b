use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use drover_store::Store;

use crate::{EtcdConfig, EtcdStore};

/// Environment variable naming the etcd binary (default: `etcd` on `PATH`).
pub const ETCD_BIN_VAR: &str = "DROVER_ETCD_BIN";

/// Attempts to reach a starting etcd before giving up (each bounded by
/// [`PROBE_TIMEOUT`] plus [`PROBE_PAUSE`]: at most about 30 s in all).
const PROBE_ATTEMPTS: u32 = 60;
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const PROBE_PAUSE: Duration = Duration::from_millis(200);
/// Fresh ports tried when etcd fails to start.
const START_ATTEMPTS: usize = 3;

/// A single-member etcd owned by one test: free loopback ports, a temporary
/// data directory, fast elections (`--heartbeat-interval=10
/// --election-timeout=50`). Killed when dropped.
///
/// [`stop`](Self::stop) kills the process (as a crash would) and
/// [`restart`](Self::restart) starts it again on the same ports and data, so
/// tests can check what survives an etcd restart.
#[derive(Debug)]
pub struct PrivateEtcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl PrivateEtcd {
    /// Start etcd and wait until it serves requests.
    ///
    /// # Errors
    /// When the binary cannot be started, exits, or does not become healthy
    /// within about 30 s (the error carries the tail of etcd's log).
    pub async fn start() -> io::Result<Self> {
        Self::start_with_args(Vec::<String>::new()).await
    }

    /// [`start`](Self::start) with extra etcd flags (kept for restarts),
    /// e.g. `--max-txn-ops=2` to provoke etcd's own limit errors.
    pub async fn start_with_args<A: Into<String>>(
        extra_args: impl IntoIterator<Item = A>,
    ) -> io::Result<Self> {
        let extra_args: Vec<String> = extra_args.into_iter().map(Into::into).collect();
        let mut last_error = None;
        // A port handed out by the OS can be taken by someone else before
        // etcd binds it; fresh ports fix that.
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::Builder::new().prefix("drover-etcd-").tempdir()?;
            let mut etcd = PrivateEtcd {
                dir,
                client_port: free_port()?,
                peer_port: free_port()?,
                extra_args: extra_args.clone(),
                child: None,
            };
            match etcd.launch().await {
                Ok(()) => return Ok(etcd),
                // Only an etcd that exited (its ports taken) is worth retrying.
                Err(err) if err.kind() == io::ErrorKind::AddrInUse => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("etcd was not started")))
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// [`endpoint`](Self::endpoint) as a list, as `EtcdStore::connect` takes.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The client socket address (for a [`super::FaultProxy`] upstream).
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// etcd's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the process is running (it may have been stopped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kill etcd (SIGKILL, as a crash) and wait for it to exit. Writes it
    /// acknowledged survive: etcd syncs its log before answering.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // The process may already be gone; reaping it is what matters.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Start etcd again on the same ports and data directory (stopping it
    /// first if it runs), and wait until it serves requests.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.launch().await
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    async fn launch(&mut self) -> io::Result<()> {
        let binary = std::env::var(ETCD_BIN_VAR).unwrap_or_else(|_| String::from("etcd"));
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&binary)
            .arg("--name=private")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=private={peer_url}"))
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=50")
            .arg("--logger=zap")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{binary}`: {e}")))?;
        self.child = Some(child);
        self.wait_healthy().await
    }

    async fn wait_healthy(&mut self) -> io::Result<()> {
        let config = EtcdConfig::default()
            .with_connect_timeout(PROBE_TIMEOUT)
            .with_request_timeout(PROBE_TIMEOUT);
        let store = EtcdStore::connect_lazy(self.endpoints(), config)
            .await
            .map_err(io::Error::other)?;
        let mut last_error = String::from("no attempt made");
        for _ in 0..PROBE_ATTEMPTS {
            if !self.is_running() {
                // Usually a port taken between choosing and binding it.
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "etcd exited during startup; log tail:\n{}",
                        log_tail(&self.log_path())
                    ),
                ));
            }
            match store.current_revision().await {
                Ok(_) => return Ok(()),
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        self.stop()?;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "etcd did not become healthy ({last_error}); log tail:\n{}",
                log_tail(&self.log_path())
            ),
        ))
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A port the OS just handed out on loopback. Another process could take it
/// before etcd binds it; etcd then fails to start and says so.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
