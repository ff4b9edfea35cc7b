//! Health probing of one pod and the writes of its results.
//!
//! The probe follows the manifest's `status` stanza: a GET of `status.path`
//! on `status.port` of 127.0.0.1, over HTTPS (p2's default) or plain HTTP
//! when `status.http` is set (2xx passing, anything else or no answer
//! within the timeout a failure), and without a stanza whether every
//! launchable's process runs. HTTPS probes do not verify the pod's
//! certificate (pods serve self-signed ones on loopback; the kubelet does
//! the same): they check that TLS and the endpoint answer, and that the
//! handshake is signed by the certificate served. A pod whose processes
//! are not all running is critical at once; otherwise the reported state
//! changes after `failure_threshold` failures or `success_threshold`
//! successes in a row. Results are written
//! to `health/<pod>/<node>` with the agent's lease, only when the state
//! changes, at most [`BURST`] writes at once and [`REFILL`] apart on
//! average (p2's flap damping: 4 a minute, burst 16); a pod that flaps past
//! that is reported `unknown` until the budget allows its real state again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use drover_health::{HealthResult, HealthState, HealthStore};
use drover_ids::NodeId;
use drover_manifest::{PodId, Probe, StatusCheck};
use drover_store::{LeaseId, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::rustls;

use crate::config::ProbeConfig;
use crate::supervisor::LaunchState;

/// Health writes a pod may make at once.
pub const BURST: u32 = 16;
/// One more write is allowed this long after the last.
pub const REFILL: Duration = Duration::from_secs(15);

/// What to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Http {
        port: u16,
        path: String,
        tls: bool,
    },
    Tcp {
        port: u16,
    },
    /// `command` run in `dir` with exactly `env`.
    Exec {
        command: Vec<String>,
        env: BTreeMap<String, String>,
        dir: PathBuf,
    },
    ProcessAlive,
}

impl Check {
    /// The probe of a pod's `status` stanza; an exec probe runs in the
    /// pod's home with the pod's environment.
    pub(crate) fn of(
        status: Option<&StatusCheck>,
        env: impl FnOnce() -> BTreeMap<String, String>,
        home: &Path,
    ) -> Check {
        match status.map(|s| &s.probe) {
            Some(Probe::Http {
                port, path, http, ..
            }) => Check::Http {
                port: *port,
                path: path.clone(),
                tls: !http,
            },
            Some(Probe::Tcp { port, .. }) => Check::Tcp { port: *port },
            Some(Probe::Exec { command }) => Check::Exec {
                command: command.clone(),
                env: env(),
                dir: home.to_owned(),
            },
            None => Check::ProcessAlive,
        }
    }
}

impl ProbeConfig {
    /// These defaults with what the pod's `status` stanza sets instead.
    pub(crate) fn for_status(self, status: Option<&StatusCheck>) -> ProbeConfig {
        let Some(s) = status else { return self };
        ProbeConfig {
            period: s.period.unwrap_or(self.period),
            timeout: s.timeout.unwrap_or(self.timeout),
            failure_threshold: s.failure_threshold.unwrap_or(self.failure_threshold),
            success_threshold: s.success_threshold.unwrap_or(self.success_threshold),
        }
    }
}

/// One probe: passing or not, with output for humans.
pub(crate) async fn probe(check: &Check, timeout: Duration) -> (bool, String) {
    match check {
        Check::ProcessAlive => (true, "processes running".into()),
        Check::Http { port, path, tls } => {
            let scheme = if *tls { "https" } else { "http" };
            let what = format!("GET {scheme}://127.0.0.1:{port}{path}");
            match tokio::time::timeout(timeout, get(*port, path, *tls)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    (true, format!("{what}: {status}"))
                }
                Ok(Ok(status)) => (false, format!("{what}: {status}")),
                Ok(Err(e)) => (false, format!("{what}: {e}")),
                Err(_) => (false, format!("{what} timed out after {timeout:?}")),
            }
        }
        Check::Tcp { port } => {
            let what = format!("connect to 127.0.0.1:{port}");
            match tokio::time::timeout(timeout, TcpStream::connect(("127.0.0.1", *port))).await {
                Ok(Ok(_)) => (true, format!("{what}: accepted")),
                Ok(Err(e)) => (false, format!("{what}: {e}")),
                Err(_) => (false, format!("{what} timed out after {timeout:?}")),
            }
        }
        Check::Exec { command, env, dir } => exec(command, env, dir, timeout).await,
    }
}

/// Most of an exec probe's output kept for the health record.
const EXEC_OUTPUT_BYTES: usize = 1024;

/// Runs an exec probe: exit 0 passes. Its output (stdout, then stderr, cut
/// to [`EXEC_OUTPUT_BYTES`]) is the result's output. A probe that outlives
/// `timeout` fails, and its process group is killed.
async fn exec(
    command: &[String],
    env: &BTreeMap<String, String>,
    dir: &Path,
    timeout: Duration,
) -> (bool, String) {
    let what = format!("exec {}", command.join(" "));
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return (false, format!("{what}: {e}")),
    };
    let pid = child.id();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let run = async {
        // Both pipes are drained to the end, so a chatty probe never blocks
        // on a full pipe; only the head is kept.
        let (out, err, status) = tokio::join!(head_of(stdout), head_of(stderr), child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((out, err, Ok(status))) => {
            let mut output = format!("{what}: {status}");
            for text in [out, err] {
                let text = text.trim();
                if !text.is_empty() {
                    output.push('\n');
                    output.push_str(text);
                }
            }
            (status.success(), output)
        }
        Ok((_, _, Err(e))) => (false, format!("{what}: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                // The probe and whatever it started; the child itself is
                // killed and reaped on drop.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            (false, format!("{what} timed out after {timeout:?}"))
        }
    }
}

/// The first [`EXEC_OUTPUT_BYTES`] of a pipe, read to its end.
async fn head_of<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = EXEC_OUTPUT_BYTES.saturating_sub(head.len());
        head.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status code of `GET path` on the loopback port, over TLS or not.
async fn get(port: u16, path: &str, tls: bool) -> std::io::Result<u16> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    if !tls {
        return status_of(tcp, port, path).await;
    }
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let stream = tls_connector().connect(name, tcp).await?;
    status_of(stream, port, path).await
}

/// One client configuration for every HTTPS probe.
fn tls_connector() -> tokio_rustls::TlsConnector {
    use std::sync::{Arc, OnceLock};
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// Accepts whatever certificate the pod serves, but checks that the
/// handshake is signed by it (see the module docs for why).
#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends `GET path` as HTTP/1.0 with `Connection: close` (the answer ends
/// with the connection) and reads only the status line: all a probe needs.
async fn status_of<T>(mut stream: T, port: u16, path: &str) -> std::io::Result<u16>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP status line: {line:?}"),
        )),
    }
}

/// Turns probe outcomes into the state to report, with thresholds.
#[derive(Debug)]
pub(crate) struct Thresholds {
    config: ProbeConfig,
    state: HealthState,
    streak: u32,
}

impl Thresholds {
    pub(crate) fn new(config: ProbeConfig) -> Self {
        Thresholds {
            config,
            state: HealthState::Unknown,
            streak: 0,
        }
    }

    /// The state after one probe. `running`: every process runs (when not,
    /// critical at once, whatever the probe says).
    pub(crate) fn observe(&mut self, running: bool, passed: bool) -> HealthState {
        if !running {
            self.state = HealthState::Critical;
            self.streak = 0;
            return self.state;
        }
        let target = if passed {
            HealthState::Passing
        } else {
            HealthState::Critical
        };
        if target == self.state {
            self.streak = 0;
            return self.state;
        }
        self.streak += 1;
        let needed = match (self.state, target) {
            // The first verdict counts at once.
            (HealthState::Unknown, _) => 1,
            (_, HealthState::Passing) => self.config.success_threshold,
            _ => self.config.failure_threshold,
        };
        if self.streak >= needed.max(1) {
            self.state = target;
            self.streak = 0;
        }
        self.state
    }
}

/// p2's flap damping as a token bucket on the tokio clock.
#[derive(Debug)]
pub(crate) struct WriteBudget {
    tokens: u32,
    refilled: Instant,
}

impl WriteBudget {
    pub(crate) fn new() -> Self {
        WriteBudget {
            tokens: BURST,
            refilled: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let gained = (self.refilled.elapsed().as_secs_f64() / REFILL.as_secs_f64()) as u32;
        if gained > 0 {
            self.tokens = (self.tokens + gained).min(BURST);
            self.refilled += REFILL * gained;
            if self.tokens == BURST {
                self.refilled = Instant::now();
            }
        }
    }

    /// Takes a write; `false` when the budget is spent.
    pub(crate) fn take(&mut self) -> bool {
        self.refill();
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// True when only the last write is left (kept to report `unknown`).
    pub(crate) fn last_one(&mut self) -> bool {
        self.refill();
        self.tokens == 1
    }
}

/// Probes `pod` every period and writes changes, until `stop`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn probe_loop<S: Store>(
    health: HealthStore<S>,
    pod: PodId,
    node: NodeId,
    check: Check,
    config: ProbeConfig,
    mut states: Vec<watch::Receiver<LaunchState>>,
    lease: watch::Receiver<LeaseId>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut thresholds = Thresholds::new(config);
    let mut budget = WriteBudget::new();
    let mut written: Option<(HealthState, LeaseId)> = None;
    // Nothing is reported while the pod starts: a launching pod has no
    // health yet (readers see it missing, i.e. unknown), not a critical one;
    // one that has not run after `failure_threshold` periods is critical.
    let mut started = false;
    let mut waited = 0u32;
    let mut ticker = tokio::time::interval(config.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Every period, and at once when a launchable starts or stops: a
        // crash is critical without waiting for the next tick.
        let ticked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => true,
            _ = any_change(&mut states) => false,
        };
        let alive = states.iter().all(|rx| rx.borrow().is_running());
        started |= alive;
        if !started {
            waited += u32::from(ticked);
            if waited <= config.failure_threshold {
                continue;
            }
        }
        let (passed, output) = if alive {
            probe(&check, config.timeout).await
        } else {
            (false, "not every process of the pod is running".to_owned())
        };
        let state = thresholds.observe(alive, passed);
        let lease_id = *lease.borrow();
        if written == Some((state, lease_id)) {
            continue;
        }
        let (state, output) = if budget.last_one() && written.map(|w| w.0) != Some(state) {
            (
                HealthState::Unknown,
                format!("health flapping: writes throttled (last probe: {output})"),
            )
        } else {
            (state, output)
        };
        if written == Some((state, lease_id)) || !budget.take() {
            continue;
        }
        let result = match HealthResult::new(
            pod.as_str(),
            node.as_str(),
            state,
            output,
            SystemTime::now(),
        ) {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, %pod, "cannot build a health result");
                continue;
            }
        };
        match health.put_health(&result, lease_id).await {
            Ok(_) => {
                tracing::debug!(%pod, %state, "health written");
                written = Some((state, lease_id));
            }
            Err(e) => {
                tracing::warn!(error = %e, %pod, "writing health failed; retrying at the next probe")
            }
        }
    }
}

/// Resolves when any launchable's state changes; never once a supervisor
/// is gone (the pod is stopping: the loop's stop token ends it).
async fn any_change(states: &mut [watch::Receiver<LaunchState>]) {
    if states.is_empty() {
        return std::future::pending().await;
    }
    let changes = states.iter_mut().map(|rx| Box::pin(rx.changed()));
    let (changed, _, _) = futures::future::select_all(changes).await;
    if changed.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_need_streaks_except_for_the_first_verdict_and_dead_processes() {
        let mut t = Thresholds::new(ProbeConfig::default());
        assert_eq!(t.observe(true, true), HealthState::Passing);
        assert_eq!(t.observe(true, false), HealthState::Passing);
        assert_eq!(t.observe(true, false), HealthState::Passing);
        assert_eq!(
            t.observe(true, false),
            HealthState::Critical,
            "third failure in a row"
        );
        assert_eq!(
            t.observe(true, true),
            HealthState::Passing,
            "one success suffices"
        );
        assert_eq!(t.observe(true, false), HealthState::Passing);
        assert_eq!(
            t.observe(true, true),
            HealthState::Passing,
            "the streak broke"
        );
        assert_eq!(
            t.observe(false, true),
            HealthState::Critical,
            "dead process: at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_write_budget_allows_a_burst_then_one_per_refill() {
        let mut budget = WriteBudget::new();
        for _ in 0..BURST {
            assert!(budget.take());
        }
        assert!(!budget.take());
        tokio::time::advance(REFILL).await;
        assert!(budget.take());
        assert!(!budget.take());
        tokio::time::advance(REFILL * (BURST + 5)).await;
        for _ in 0..BURST {
            assert!(budget.take());
        }
        assert!(!budget.take(), "the bucket never holds more than the burst");
    }

    #[tokio::test]
    async fn https_probes_accept_a_self_signed_certificate_and_read_the_status() {
        use std::sync::Arc;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for code in ["204 No Content", "500 Internal Server Error"] {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut s = acceptor.accept(tcp).await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                s.shutdown().await.unwrap();
            }
            // A plain-HTTP answer where TLS is expected fails the probe.
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
        });
        let check = Check::of(
            Some(&StatusCheck::port(port)),
            BTreeMap::new,
            Path::new("/"),
        );
        assert!(
            matches!(check, Check::Http { tls: true, .. }),
            "https is the default"
        );
        let timeout = Duration::from_secs(5);
        let (ok, output) = probe(&check, timeout).await;
        assert!(
            ok && output.contains("https://") && output.contains("204"),
            "{output}"
        );
        let (ok, output) = probe(&check, timeout).await;
        assert!(!ok && output.contains("500"), "{output}");
        let (ok, output) = probe(&check, timeout).await;
        assert!(!ok, "{output}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn http_probes_read_the_status_code_and_fail_on_refusal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        let check = Check::Http {
            port,
            path: "/_status".into(),
            tls: false,
        };
        let timeout = Duration::from_secs(5);
        let (ok, output) = probe(&check, timeout).await;
        assert!(ok, "{output}");
        let (ok, output) = probe(&check, timeout).await;
        assert!(!ok && output.contains("503"), "{output}");
        server.await.unwrap();
        let (ok, output) = probe(&check, timeout).await;
        assert!(!ok && output.contains("refused"), "{output}");
    }

    #[tokio::test]
    async fn tcp_probes_pass_while_the_port_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let check = Check::Tcp {
            port: listener.local_addr().unwrap().port(),
        };
        let (ok, output) = probe(&check, Duration::from_secs(5)).await;
        assert!(ok && output.contains("accepted"), "{output}");
        drop(listener);
        let (ok, output) = probe(&check, Duration::from_secs(5)).await;
        assert!(!ok && output.contains("refused"), "{output}");
    }

    #[tokio::test]
    async fn exec_probes_follow_the_exit_status_with_the_pods_environment() {
        let dir = tempfile::tempdir().unwrap();
        let exec = |script: &str| Check::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("POD_ID".to_owned(), "web".to_owned())]),
            dir: dir.path().to_owned(),
        };
        let timeout = Duration::from_secs(5);
        let (ok, output) = probe(&exec(r#"test "$POD_ID" = web && pwd"#), timeout).await;
        assert!(ok, "{output}");
        let here = dir.path().canonicalize().unwrap();
        assert!(
            output.contains(here.to_str().unwrap()),
            "runs in the pod's home: {output}"
        );
        let (ok, output) = probe(&exec("echo sick >&2; exit 3"), timeout).await;
        assert!(
            !ok && output.contains("exit status: 3") && output.contains("sick"),
            "{output}"
        );
        // Only the head of a long output is kept, and the probe is not
        // stalled by a full pipe.
        let (ok, output) = probe(&exec("head -c 1000000 /dev/zero | tr '\\0' x"), timeout).await;
        assert!(
            ok && output.len() < 2 * EXEC_OUTPUT_BYTES,
            "{}",
            output.len()
        );
        let (ok, output) = probe(
            &Check::Exec {
                command: vec!["/no/such/probe".into()],
                env: BTreeMap::new(),
                dir: dir.path().to_owned(),
            },
            timeout,
        )
        .await;
        assert!(!ok && output.contains("/no/such/probe"), "{output}");
    }

    #[tokio::test]
    async fn exec_probes_past_their_timeout_fail_and_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let check = Check::Exec {
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
            ],
            env: BTreeMap::new(),
            dir: dir.path().to_owned(),
        };
        let (ok, output) = probe(&check, Duration::from_millis(300)).await;
        assert!(!ok && output.contains("timed out"), "{output}");
        let sleeper: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILLed with its group; gone once reaped by init (bounded wait).
        let gone = (0..200).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat"));
            let gone = stat.map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            });
            if !gone {
                std::thread::sleep(Duration::from_millis(10));
            }
            gone
        });
        assert!(gone, "the probe's child {sleeper} outlived the timeout");
    }

    #[test]
    fn the_manifest_sets_probe_timing_over_the_agents_defaults() {
        let defaults = ProbeConfig::default();
        assert_eq!(defaults.for_status(None), defaults);
        assert_eq!(defaults.for_status(Some(&StatusCheck::tcp(80))), defaults);
        let status = StatusCheck {
            period: Some(Duration::from_secs(7)),
            failure_threshold: Some(9),
            ..StatusCheck::tcp(80)
        };
        assert_eq!(
            defaults.for_status(Some(&status)),
            ProbeConfig {
                period: Duration::from_secs(7),
                failure_threshold: 9,
                ..defaults
            }
        );
    }
}
