//! The harness shared by the `orchestrator` binary's end-to-end tests: a
//! real `orchestrator serve` process, its log, and plain helpers.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use drover_api::SystemInfo;
use drover_api::pb::orchestrator::v1::GetInfoRequest;
use drover_api::pb::orchestrator::v1::system_service_client::SystemServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_orchestrator");
/// Generous bounds: a loaded 2-core CI machine may start slowly.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `orchestrator serve` whose log is collected.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<parking_lot::Mutex<Vec<String>>>,
    log_done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts `orchestrator serve --listen 127.0.0.1:0 <store_args>` and waits
    /// for its "listening on ADDR" line.
    pub(crate) async fn start(store_args: &[&str]) -> Server {
        Self::start_with(store_args, &[]).await
    }

    /// Metrics go to a free port too (parallel tests would collide on the
    /// default one), unless `extra` sets `--metrics-listen`.
    pub(crate) async fn start_with(store_args: &[&str], extra: &[&str]) -> Server {
        let metrics = if extra.contains(&"--metrics-listen") {
            &[][..]
        } else {
            &["--metrics-listen", "127.0.0.1:0"][..]
        };
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(metrics)
            .args(store_args)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the orchestrator binary");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let addr = timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("reading stderr") {
                log.lock().push(line.clone());
                if let Some(addr) = listening_addr(&line) {
                    return addr;
                }
            }
            panic!(
                "orchestrator exited before listening; log:\n{}",
                log.lock().join("\n")
            );
        })
        .await
        .unwrap_or_else(|_| panic!("no 'listening on' line within {START_TIMEOUT:?}"));
        // Keep draining so the child never blocks on a full pipe.
        let log_done = tokio::spawn({
            let log = log.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().push(line);
                }
            }
        });
        Server {
            child,
            addr,
            log,
            log_done,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits (bounded) for the process to exit; returns its status and log.
    pub(crate) async fn wait(mut self) -> (ExitStatus, String) {
        let status = timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("orchestrator still running after {EXIT_TIMEOUT:?}"))
            .expect("waiting for the orchestrator");
        let _ = timeout(EXIT_TIMEOUT, self.log_done).await;
        let log = self.log.lock().join("\n");
        (status, log)
    }

    /// Waits for the process to exit, which it must do successfully;
    /// returns its log.
    pub(crate) async fn wait_success(self) -> String {
        let (status, log) = self.wait().await;
        assert!(status.success(), "exit status {status:?}; log:\n{log}");
        log
    }

    /// The `/metrics` address from the "serving metrics at" line, logged
    /// before "listening on".
    pub(crate) fn metrics_addr(&self) -> Option<SocketAddr> {
        self.log.lock().iter().find_map(|line| {
            let rest = &line[line.find("serving metrics at http://")? + 26..];
            rest[..rest.find("/metrics")?].parse().ok()
        })
    }

    pub(crate) async fn info(&self) -> SystemInfo {
        let mut client = SystemServiceClient::connect(self.url()).await.unwrap();
        let response = client.get_info(GetInfoRequest {}).await.unwrap();
        SystemInfo::try_from(response.into_inner()).expect("a valid GetInfo response")
    }
}

/// A loopback URL nobody listens on: a listener is bound, then dropped.
pub(crate) fn unused_local_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}")
}

/// The address in a "listening on ADDR" log line (plain or JSON).
pub(crate) fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

pub(crate) async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

pub(crate) async fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output();
    let output = timeout(EXIT_TIMEOUT, output)
        .await
        .expect("the orchestrator exits on bad arguments")
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
