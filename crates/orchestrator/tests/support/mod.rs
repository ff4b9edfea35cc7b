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

    /// `drover-store-etcd` connected to the served etcd API, as an agent
    /// would be.
    pub(crate) async fn etcd_client(&self) -> drover_store_etcd::EtcdStore {
        drover_store_etcd::EtcdStore::connect(
            [self.url()],
            drover_store_etcd::EtcdConfig::default(),
        )
        .await
        .expect("connecting to the orchestrator's etcd API")
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

/// `etcdctl` (v3 API) against one endpoint, with any global flags (TLS).
#[derive(Clone)]
pub(crate) struct Etcdctl {
    global: Vec<String>,
}

impl Etcdctl {
    /// etcdctl for `endpoint`, or `None` (with a message) when etcdctl is
    /// not installed and the run does not require it (`cargo xtask test`
    /// does).
    ///
    /// Give plain endpoints as `HOST:PORT`, as etcd's docs do: etcdctl 3.4's
    /// `endpoint status` sends an `http://` endpoint whole as the HTTP/2
    /// `:authority`, which grpc-go servers accept and hyper's h2 refuses
    /// (`PROTOCOL_ERROR`).
    pub(crate) fn at(endpoint: &str) -> Option<Etcdctl> {
        let installed = std::process::Command::new("etcdctl")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var(drover_store::testing::REQUIRE_ETCD_VAR).as_deref() == Ok("1") {
                panic!("etcdctl is required under `cargo xtask test`");
            }
            eprintln!("skipping: etcdctl is not installed");
            return None;
        }
        Some(Etcdctl {
            global: vec![
                "--endpoints".into(),
                endpoint.into(),
                "--command-timeout=20s".into(),
            ],
        })
    }

    /// The same etcdctl with more global flags (`--cacert ...`).
    pub(crate) fn with_flags(mut self, flags: &[&str]) -> Etcdctl {
        self.global.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("etcdctl");
        command
            .args(&self.global)
            .args(args)
            .env("ETCDCTL_API", "3")
            .kill_on_drop(true);
        command
    }

    /// Runs one command to completion (bounded).
    pub(crate) async fn run(&self, args: &[&str]) -> std::process::Output {
        self.run_with_input(args, "").await
    }

    /// Runs one command with `input` on its stdin (e.g. `txn`).
    pub(crate) async fn run_with_input(&self, args: &[&str], input: &str) -> std::process::Output {
        self.run_bounded(args, input, START_TIMEOUT).await
    }

    /// Runs one long command (`check perf` writes for a minute), bounded.
    pub(crate) async fn run_within(&self, bound: Duration, args: &[&str]) -> std::process::Output {
        self.run_bounded(args, "", bound).await
    }

    async fn run_bounded(
        &self,
        args: &[&str],
        input: &str,
        bound: Duration,
    ) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning etcdctl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        timeout(bound, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("etcdctl {args:?} did not finish in {bound:?}"))
            .expect("running etcdctl")
    }

    /// Runs one command that must succeed; its stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        stdout_of(&self.run(args).await)
    }

    /// Starts a command that keeps running (`watch`, `lock`, `elect`),
    /// reading its stdout line by line.
    pub(crate) fn spawn(&self, args: &[&str]) -> EtcdctlProcess {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning etcdctl");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        forward_lines(child.stdout.take().unwrap(), tx.clone());
        forward_lines(child.stderr.take().unwrap(), tx);
        EtcdctlProcess {
            child,
            lines,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

fn forward_lines(
    output: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut lines = BufReader::new(output).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

/// A running etcdctl command; killed when dropped.
pub(crate) struct EtcdctlProcess {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    args: Vec<String>,
}

impl EtcdctlProcess {
    /// The next line it printed (stdout or stderr), waiting (bounded); `None`
    /// once it exited and everything was read.
    pub(crate) async fn next_line(&mut self) -> Option<String> {
        timeout(START_TIMEOUT, self.lines.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "etcdctl {:?} printed nothing in {START_TIMEOUT:?}",
                    self.args
                )
            })
    }

    /// The next `n` lines, which must come.
    pub(crate) async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut lines = Vec::with_capacity(n);
        for _ in 0..n {
            let line = self.next_line().await;
            lines.push(
                line.unwrap_or_else(|| panic!("etcdctl {:?} exited after {lines:?}", self.args)),
            );
        }
        lines
    }

    /// Whatever it printed so far, without waiting.
    pub(crate) fn printed_so_far(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }

    /// Sends `signal` (e.g. "INT") and waits (bounded) for the exit.
    pub(crate) async fn stop(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().expect("etcdctl is running");
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success());
        timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("etcdctl {:?} ignored SIG{signal}", self.args))
            .unwrap()
    }

    /// Waits (bounded) for it to exit on its own.
    pub(crate) async fn exited(mut self) -> (ExitStatus, Vec<String>) {
        let status = timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("etcdctl {:?} did not exit", self.args))
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(Some(line)) = timeout(EXIT_TIMEOUT, self.lines.recv()).await {
            rest.push(line);
        }
        (status, rest)
    }
}

/// The stdout of a command that must have succeeded.
pub(crate) fn stdout_of(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The first Python that has grpcio and grpcio-tools: `$DROVER_PYTHON`, then
/// `python3` on PATH, then the system one (where Debian's python3-grpcio and
/// python3-grpc-tools install, which a pyenv `python3` on PATH does not see).
/// `None` (with a message) when there is none and the run does not require
/// one (`cargo xtask test` does).
pub(crate) fn python_with_grpc() -> Option<String> {
    let candidates = std::env::var("DROVER_PYTHON")
        .ok()
        .into_iter()
        .chain(["python3".to_string(), "/usr/bin/python3".to_string()]);
    let found = candidates.into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import grpc, grpc_tools"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        if std::env::var(drover_store::testing::REQUIRE_ETCD_VAR).as_deref() == Ok("1") {
            panic!(
                "a python3 with grpcio and grpcio-tools is required under `cargo xtask test` \
                 (tried $DROVER_PYTHON, python3 on PATH, /usr/bin/python3)"
            );
        }
        eprintln!("skipping the Python client test: no python3 can `import grpc, grpc_tools`");
    }
    found
}

/// Runs `tests/python/<script>` (which generates its stubs from `proto/`)
/// against `server` with `args`, and returns the JSON it printed; `None`
/// when no Python with gRPC is available (see [`python_with_grpc`]).
pub(crate) async fn run_python_client(
    script: &str,
    server: &Server,
    args: &[&str],
) -> Option<serde_json::Value> {
    let python = python_with_grpc()?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(&python)
        .arg(root.join("tests/python").join(script))
        .args(["--proto-dir", root.join("proto").to_str().unwrap()])
        .args(["--server", &server.addr.to_string()])
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = timeout(START_TIMEOUT, output)
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in {START_TIMEOUT:?}"))
        .expect("running python");
    assert!(output.status.success(), "{script}: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    Some(
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}")),
    )
}

/// A real `orchestrator agent` process for `node` (labelled `zone=<zone>`,
/// a 2 s lease, pods stopped when it exits), its data in `data`.
pub(crate) struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    pub(crate) fn spawn(url: &str, node: &str, data: &std::path::Path, zone: &str) -> AgentProcess {
        let child = Command::new(BIN)
            .args(["agent", "--node", node, "--endpoints", url])
            .args(["--lease-ttl", "2s", "--stop-pods-on-exit"])
            .args(["--labels", &format!("zone={zone}")])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning an agent");
        AgentProcess { child }
    }

    fn send(&self, signal: &str) {
        let pid = self.child.id().expect("a running agent").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGKILL: the agent dies without a word; its pods keep running.
    pub(crate) fn kill(mut self) {
        self.send("KILL");
        let _ = self.child.start_kill();
    }

    /// SIGTERM, and the agent must exit successfully (stopping its pods).
    pub(crate) async fn stop(mut self) {
        self.send("TERM");
        let status = timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .expect("the agent exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
}
