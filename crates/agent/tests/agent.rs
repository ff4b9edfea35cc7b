//! The agent end to end: real processes (`drover-test-pod`), on the
//! embedded store and on a real etcd. What happened is read from the store
//! and from files the pods write, never from the agent's own counters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_agent::{Agent, AgentConfig, AgentError, ProbeConfig};
use drover_health::{HealthState, HealthStore};
use drover_ids::NodeId;
use drover_manifest::{IntentStore, LaunchStatus, Manifest, Probe, RealityStore, StatusCheck};
use drover_store::keys::Keys;
use drover_store::{Get, Store};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TEST_POD: &str = env!("CARGO_BIN_EXE_drover-test-pod");
/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(20);

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the agent stops")
            .unwrap()
            .unwrap();
    }
}

fn config(node: &NodeId, dir: &Path, keys: &Keys) -> AgentConfig {
    let mut config = AgentConfig::new(node.clone(), dir);
    config.keys = keys.clone();
    config.lease_ttl_secs = 5;
    config.probe = ProbeConfig {
        period: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        failure_threshold: 3,
        success_threshold: 1,
    };
    config
}

fn start<S: Store>(store: &S, config: AgentConfig) -> Running {
    // The agent's logs, shown when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("drover_agent=debug,drover_runtime=debug,info")
        .try_init();
    let shutdown = CancellationToken::new();
    let agent = Agent::new(store.clone(), config).stop_pods_on_exit(true);
    let task = tokio::spawn(agent.run(shutdown.clone()));
    Running { shutdown, task }
}

/// The shared poll-until helper, within [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    drover_store::testing::eventually(what, PATIENCE, check).await
}

fn pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purpose: check /proc's state too.
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Files {
    _dir: tempfile::TempDir,
    data: PathBuf,
    starts: PathBuf,
    pids: PathBuf,
    env: PathBuf,
    unhealthy: PathBuf,
}

impl Drop for Files {
    /// Whatever happened to the test, no pod process outlives it.
    fn drop(&mut self) {
        for pid in pids(&self.pids) {
            let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    Files {
        data: root.join("agent"),
        starts: root.join("starts"),
        pids: root.join("pids"),
        env: root.join("env"),
        unhealthy: root.join("unhealthy"),
        _dir: dir,
    }
}

fn test_pod(f: &Files, extra: &[&str]) -> Vec<String> {
    let mut argv = vec![
        TEST_POD.to_owned(),
        "--starts-file".into(),
        f.starts.display().to_string(),
        "--pids-file".into(),
        f.pids.display().to_string(),
        "--env-file".into(),
        f.env.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

async fn reality_of<S: Store>(
    store: &S,
    keys: &Keys,
    node: &NodeId,
    pod: &str,
) -> Option<drover_manifest::Reality> {
    RealityStore::with_keys(store.clone(), keys.clone())
        .get(node, &pod.parse().unwrap())
        .await
        .unwrap()
}

async fn health_of<S: Store>(
    store: &S,
    keys: &Keys,
    node: &NodeId,
    pod: &str,
) -> Option<HealthState> {
    HealthStore::with_keys(store.clone(), keys.clone())
        .node_health(pod, node.as_str())
        .await
        .unwrap()
        .map(|r| r.state)
}

/// Install, a new SHA restarts, delete stops and uninstalls; reality and
/// health follow in the store; the pod gets p2's environment.
async fn intent_drives_processes<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n1".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let port = free_port();
    let port_arg = port.to_string();
    let v1 = Manifest::builder("web")
        .process("server", test_pod(&f, &["--status-port", &port_arg]))
        .status(StatusCheck::of(Probe::Http {
            port,
            path: "/_status".into(),
            http: true,
            localhost_only: false,
        }))
        .config("greeting", "hello".into())
        .build()
        .unwrap();
    intents.put(&node, v1.id(), &v1).await.unwrap();
    let reality = eventually("reality of v1", || async {
        reality_of(&store, &keys, &node, "web")
            .await
            .filter(|r| r.sha == v1.sha())
    })
    .await;
    assert_eq!(reality.status, LaunchStatus::Launched);
    eventually("health passing", || async {
        (health_of(&store, &keys, &node, "web").await == Some(HealthState::Passing)).then_some(())
    })
    .await;
    let first = eventually("v1 started", || async { pids(&f.starts).first().copied() }).await;
    let env = std::fs::read_to_string(&f.env).unwrap();
    let home = f.data.join("pods/web");
    for expected in [
        "POD_ID=web".to_owned(),
        format!("POD_HOME={}", home.display()),
        format!("CONFIG_PATH={}", home.join("config.yaml").display()),
        "LAUNCHABLE_ID=server".to_owned(),
        format!("LAUNCHABLE_ROOT={}", home.join("server").display()),
    ] {
        assert!(
            env.lines().any(|l| l == expected),
            "{expected} missing from\n{env}"
        );
    }
    assert!(
        std::fs::read_to_string(home.join("config.yaml"))
            .unwrap()
            .contains("hello")
    );

    // A new SHA: the old process stops, the new one starts.
    let v2 = Manifest::builder("web")
        .process(
            "server",
            test_pod(&f, &["--status-port", &port_arg, "--children", "1"]),
        )
        .status(StatusCheck::of(Probe::Http {
            port,
            path: "/_status".into(),
            http: true,
            localhost_only: false,
        }))
        .build()
        .unwrap();
    intents.put(&node, v2.id(), &v2).await.unwrap();
    eventually("reality of v2", || async {
        reality_of(&store, &keys, &node, "web")
            .await
            .filter(|r| r.sha == v2.sha() && r.status == LaunchStatus::Launched)
    })
    .await;
    assert!(!alive(first), "v1's process stopped");
    eventually("v2 started", || async {
        (pids(&f.starts).len() >= 2).then_some(())
    })
    .await;
    assert_eq!(pids(&f.starts).len(), 2, "exactly one more start");

    // Deleted: everything stops, reality and health go, the home is removed.
    intents.delete(&node, v2.id()).await.unwrap();
    eventually("reality deleted", || async {
        reality_of(&store, &keys, &node, "web")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(health_of(&store, &keys, &node, "web").await, None);
    for pid in pids(&f.pids) {
        assert!(!alive(pid), "pid {pid} survived the uninstall");
    }
    assert!(!home.exists(), "the pod home is removed");
    agent.stop().await;
}

/// A pod that ignores SIGTERM, with children and a grandchild that left
/// the process group, is gone after its grace period.
async fn stop_kills_everything_after_the_grace_period<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n2".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let stubborn = Manifest::builder("stubborn")
        .process(
            "main",
            test_pod(
                &f,
                &["--ignore-sigterm", "--children", "2", "--setsid-grandchild"],
            ),
        )
        .termination_grace_period(Duration::from_millis(500))
        .build()
        .unwrap();
    intents.put(&node, stubborn.id(), &stubborn).await.unwrap();
    eventually("all four processes", || async {
        (pids(&f.pids).len() == 4).then_some(())
    })
    .await;
    let cgroups = drover_agent::process::cgroup_v2_available();
    let started = tokio::time::Instant::now();
    intents.delete(&node, stubborn.id()).await.unwrap();
    eventually("reality deleted", || async {
        reality_of(&store, &keys, &node, "stubborn")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited the grace period"
    );
    let all = pids(&f.pids);
    let grandchild = *all.last().unwrap();
    for pid in &all[..3] {
        assert!(!alive(*pid), "pid {pid} survived");
    }
    if cgroups {
        assert!(
            !alive(grandchild),
            "the setsid grandchild escaped the cgroup"
        );
    } else {
        // Without a cgroup nothing can find it: the documented limit.
        let _ = kill(Pid::from_raw(grandchild), nix::sys::signal::Signal::SIGKILL);
    }
    agent.stop().await;
}

/// A crashing pod is restarted after a growing backoff, and reality says
/// it is crash-looping with its exit status.
async fn crashes_restart_with_growing_backoff<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n3".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let launchable = drover_manifest::Launchable::process(test_pod(
        &f,
        &["--exit-after", "50ms", "--exit-code", "3"],
    ))
    .restart_backoff(Duration::from_millis(100));
    let crasher = Manifest::builder("crasher")
        .launchable("main", launchable)
        .build()
        .unwrap();
    intents.put(&node, crasher.id(), &crasher).await.unwrap();
    eventually("four starts", || async {
        (pids(&f.starts).len() >= 4).then_some(())
    })
    .await;
    let reality = eventually("three restarts reported", || async {
        reality_of(&store, &keys, &node, "crasher")
            .await
            .filter(|r| r.restarts >= 3)
    })
    .await;
    assert_eq!(reality.last_exit.and_then(|e| e.code), Some(3));
    let times: Vec<u64> = std::fs::read_to_string(&f.starts)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(times.len() >= 4, "{times:?}");
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // At least 50 ms of running plus 100, 200, 400 ms of backoff: lower
    // bounds only (a loaded machine may lengthen any gap, never shorten it).
    assert!(
        gaps[0] >= 150 && gaps[1] >= 250 && gaps[2] >= 450,
        "backoff grows: {gaps:?}"
    );
    intents.delete(&node, crasher.id()).await.unwrap();
    agent.stop().await;
}

/// The status endpoint's answers become health in the store, after the
/// failure threshold.
async fn health_transitions_reach_the_store<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n4".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let port = free_port();
    let unhealthy = f.unhealthy.display().to_string();
    let pod = Manifest::builder("checked")
        .process(
            "main",
            test_pod(
                &f,
                &[
                    "--status-port",
                    &port.to_string(),
                    "--unhealthy-if",
                    &unhealthy,
                ],
            ),
        )
        .status(StatusCheck::of(Probe::Http {
            port,
            path: "/_status".into(),
            http: true,
            localhost_only: false,
        }))
        .build()
        .unwrap();
    intents.put(&node, pod.id(), &pod).await.unwrap();
    let health = |want: HealthState| {
        let (store, keys, node) = (store.clone(), keys.clone(), node.clone());
        async move {
            eventually(&format!("health {want}"), || async {
                (health_of(&store, &keys, &node, "checked").await == Some(want)).then_some(())
            })
            .await
        }
    };
    health(HealthState::Passing).await;
    std::fs::write(&f.unhealthy, "").unwrap();
    health(HealthState::Critical).await;
    std::fs::remove_file(&f.unhealthy).unwrap();
    health(HealthState::Passing).await;
    // The result is bound to the agent's lease.
    let key = keys.health(&"checked".parse().unwrap(), &node);
    let kv = store.get(Get::key(key.as_str())).await.unwrap();
    assert_ne!(kv.kvs[0].lease, 0, "health is bound to the agent's lease");
    intents.delete(&node, pod.id()).await.unwrap();
    agent.stop().await;
}

/// A second agent claiming a live node is refused; the same agent
/// restarted on its data directory takes its node back at once.
async fn one_live_agent_per_node<S: Store>(store: S, keys: Keys) {
    let (f, other) = (files(), files());
    let node: NodeId = "n5".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let node_key = keys.node(&node);
    eventually("registered", || async {
        (store.get(Get::key(node_key.as_str())).await.unwrap().count == 1).then_some(())
    })
    .await;
    let refused = Agent::new(store.clone(), config(&node, &other.data, &keys))
        .run(CancellationToken::new())
        .await;
    match refused {
        Err(AgentError::NodeTaken { node: taken, .. }) => assert_eq!(taken, node),
        other => panic!("a second agent must be refused, got {other:?}"),
    }
    // The first agent's crash (its task aborted: no revoke) and restart.
    agent.task.abort();
    let _ = agent.task.await;
    let again = start(&store, config(&node, &f.data, &keys));
    eventually("registered again", || async {
        let kv = store.get(Get::key(node_key.as_str())).await.unwrap();
        let record = drover_agent::NodeRecord::from_json(&kv.kvs.first()?.value).ok()?;
        (!again.task.is_finished()).then_some(record)
    })
    .await;
    again.stop().await;
}

/// TCP and exec probes: a TCP probe passes only while the pod listens; an
/// exec probe runs with the pod's environment, in its home, and follows
/// what the command says.
async fn tcp_and_exec_probes_reach_the_store<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n7".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let health = |pod: &'static str, want: HealthState| {
        let (store, keys, node) = (store.clone(), keys.clone(), node.clone());
        async move {
            eventually(&format!("{pod} health {want}"), || async {
                (health_of(&store, &keys, &node, pod).await == Some(want)).then_some(())
            })
            .await
        }
    };
    let port = free_port();
    let listening = Manifest::builder("tcp-listening")
        .process("main", test_pod(&f, &["--status-port", &port.to_string()]))
        .status(StatusCheck::tcp(port))
        .build()
        .unwrap();
    // Runs, but nothing listens on the port it is checked on.
    let deaf = Manifest::builder("tcp-deaf")
        .process("main", test_pod(&f, &[]))
        .status(StatusCheck::tcp(free_port()))
        .build()
        .unwrap();
    let exec = Manifest::builder("exec-checked")
        .process("main", test_pod(&f, &[]))
        .status(StatusCheck {
            failure_threshold: Some(1),
            ..StatusCheck::exec(vec![
                "/bin/sh".into(),
                "-c".into(),
                r#"test "$PWD" = "$POD_HOME" && test ! -e "$POD_HOME/unhealthy""#.into(),
            ])
        })
        .build()
        .unwrap();
    for pod in [&listening, &deaf, &exec] {
        intents.put(&node, pod.id(), pod).await.unwrap();
    }
    health("tcp-listening", HealthState::Passing).await;
    health("tcp-deaf", HealthState::Critical).await;
    health("exec-checked", HealthState::Passing).await;
    let marker = f.data.join("pods/exec-checked/unhealthy");
    std::fs::write(&marker, "").unwrap();
    health("exec-checked", HealthState::Critical).await;
    let output = HealthStore::with_keys(store.clone(), keys.clone())
        .node_health("exec-checked", node.as_str())
        .await
        .unwrap()
        .unwrap()
        .output;
    assert!(
        output.contains("exec /bin/sh") && output.contains("exit status: 1"),
        "{output}"
    );
    std::fs::remove_file(&marker).unwrap();
    health("exec-checked", HealthState::Passing).await;
    for pod in [&listening, &deaf, &exec] {
        intents.delete(&node, pod.id()).await.unwrap();
    }
    agent.stop().await;
}

/// Serves `body` for every request on a loopback port, over TLS when an
/// acceptor is given; counts the requests.
fn serve_bytes(
    body: Vec<u8>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (
    u16,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    JoinHandle<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (body, tls) = (body.clone(), tls.clone());
            tokio::spawn(async move {
                async fn answer<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                    mut s: T,
                    body: &[u8],
                ) -> std::io::Result<()> {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut buf).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let header = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    s.write_all(header.as_bytes()).await?;
                    s.write_all(body).await?;
                    s.shutdown().await
                }
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(s) => answer(s, &body).await,
                        Err(e) => Err(e),
                    },
                    None => answer(tcp, &body).await,
                };
            });
        }
    });
    (port, requests, server)
}

/// A tar.gz whose `bin/launch` runs the test pod with `argv`.
fn artifact_of(argv: &[String]) -> (Vec<u8>, String) {
    use sha2::Digest;
    let quoted: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("#!/bin/sh\nexec {} \"$@\"\n", quoted.join(" "));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(script.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    builder
        .append_data(&mut header, "bin/launch", script.as_bytes())
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &builder.into_inner().unwrap()).unwrap();
    let bytes = gz.finish().unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    (bytes, digest)
}

/// Artifact launchables over http, https (a private CA) and file://: each
/// verified and unpacked, its entry point run with the launchable's root;
/// the cache serves a second pod with the same digest; a digest mismatch
/// fails only its pod, with the reason in its reality.
async fn artifacts_are_fetched_verified_and_run<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n8".parse().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca_file = f.data.with_file_name("ca.pem");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let mut cfg = config(&node, &f.data, &keys);
    cfg.artifact_ca_files = vec![ca_file];
    let agent = start(&store, cfg);
    let intents = IntentStore::with_keys(store.clone(), keys.clone());

    let (bytes, digest) = artifact_of(&test_pod(&f, &[]));
    let (http_port, http_requests, http_server) = serve_bytes(bytes.clone(), None);
    let tls = {
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    };
    // Another artifact (another digest) for the https and file cases.
    let (other, other_digest) = artifact_of(&test_pod(&f, &["--exit-code", "0"]));
    let (https_port, https_requests, https_server) = serve_bytes(other.clone(), Some(tls));
    let local = f.data.with_file_name("app.tar.gz");
    std::fs::write(&local, &bytes).unwrap();

    let pod = |name: &str, location: String, sha: &str| {
        Manifest::builder(name)
            .launchable("app", drover_manifest::Launchable::artifact(location, sha))
            .build()
            .unwrap()
    };
    let over_http = pod(
        "over-http",
        format!("http://127.0.0.1:{http_port}/app.tar.gz"),
        &digest,
    );
    let over_https = pod(
        "over-https",
        format!("https://127.0.0.1:{https_port}/app.tar.gz"),
        &other_digest,
    );
    let wrong_digest = "0".repeat(64);
    let corrupt = pod(
        "corrupt",
        format!("http://127.0.0.1:{http_port}/app.tar.gz"),
        &wrong_digest,
    );
    for m in [&over_http, &over_https] {
        intents.put(&node, m.id(), m).await.unwrap();
    }
    for name in ["over-http", "over-https"] {
        eventually(&format!("{name} running and passing"), || async {
            (health_of(&store, &keys, &node, name).await == Some(HealthState::Passing))
                .then_some(())
        })
        .await;
    }
    // Both pods write one env file: whichever wrote last ran in its root.
    let env = eventually("an env file", || async {
        std::fs::read_to_string(&f.env)
            .ok()
            .filter(|e| e.contains("LAUNCHABLE_ROOT="))
    })
    .await;
    let roots = ["over-http", "over-https"].map(|p| f.data.join("pods").join(p).join("app"));
    assert!(
        roots
            .iter()
            .any(|root| env.contains(&format!("LAUNCHABLE_ROOT={}\n", root.display()))),
        "{env}"
    );
    assert!(roots.iter().all(|root| root.join("bin/launch").exists()));
    assert_eq!(https_requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Same digest from a file: served by the cache, nothing read or fetched.
    let from_file = pod("from-file", format!("file://{}", local.display()), &digest);
    std::fs::remove_file(&local).unwrap();
    intents
        .put(&node, from_file.id(), &from_file)
        .await
        .unwrap();
    eventually("from-file running", || async {
        reality_of(&store, &keys, &node, "from-file")
            .await
            .filter(|r| r.status == LaunchStatus::Launched)
    })
    .await;
    assert_eq!(http_requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A digest mismatch fails that pod alone, saying why.
    let running_before = pids(&f.pids);
    intents.put(&node, corrupt.id(), &corrupt).await.unwrap();
    let failed = eventually("corrupt failed", || async {
        reality_of(&store, &keys, &node, "corrupt")
            .await
            .filter(|r| r.status == LaunchStatus::Failed)
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains("SHA-256 mismatch") && reason.contains(&wrong_digest),
        "{reason}"
    );
    assert_eq!(failed.sha, corrupt.sha());
    assert!(
        !f.data.join("pods/corrupt/app/bin").exists(),
        "nothing unpacked"
    );
    for pid in running_before {
        assert!(alive(pid), "pod process {pid} untouched by the failure");
    }

    for m in [&over_http, &over_https, &from_file, &corrupt] {
        intents.delete(&node, m.id()).await.unwrap();
    }
    eventually("all gone", || async {
        let mut left = 0;
        for name in ["over-http", "over-https", "from-file", "corrupt"] {
            left += usize::from(reality_of(&store, &keys, &node, name).await.is_some());
        }
        (left == 0).then_some(())
    })
    .await;
    agent.stop().await;
    http_server.abort();
    https_server.abort();
}

/// A pod's memory limit is enforced (a cgroup's `memory.max` where the
/// agent could enable the controller, else `RLIMIT_DATA`) and its reality
/// says which; a pod within its limit runs; one without limits says none.
async fn memory_limits_are_enforced_and_reported<S: Store>(store: S, keys: Keys) {
    let f = files();
    let node: NodeId = "n9".parse().unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let limited = |name: &str, mib: &str| {
        Manifest::builder(name)
            .process("main", test_pod(&f, &["--allocate-mib", mib]))
            .memory(drover_manifest::ByteSize::mib(64))
            .build()
            .unwrap()
    };
    let hungry = limited("hungry", "256");
    let modest = limited("modest", "16");
    let free = Manifest::builder("free")
        .process("main", test_pod(&f, &["--allocate-mib", "16"]))
        .build()
        .unwrap();
    for m in [&hungry, &modest, &free] {
        intents.put(&node, m.id(), m).await.unwrap();
    }
    let refused = eventually("hungry refused its memory", || async {
        reality_of(&store, &keys, &node, "hungry")
            .await
            .filter(|r| r.last_exit.is_some())
    })
    .await;
    let exit = refused.last_exit.unwrap();
    match refused.limits.as_deref() {
        // Allocation refused by the rlimit: the pod's own exit status.
        Some("rlimit") => assert_eq!(exit.code, Some(3), "{refused:?}"),
        // Killed by the kernel's OOM killer in the pod's cgroup.
        Some("cgroup") => assert_eq!(exit.signal, Some(9), "{refused:?}"),
        other => panic!("limits {other:?}: {refused:?}"),
    }
    for name in ["modest", "free"] {
        eventually(&format!("{name} running"), || async {
            (health_of(&store, &keys, &node, name).await == Some(HealthState::Passing))
                .then_some(())
        })
        .await;
    }
    let modest_reality = reality_of(&store, &keys, &node, "modest").await.unwrap();
    assert_eq!(modest_reality.limits, refused.limits);
    assert_eq!(modest_reality.restarts, 0, "{modest_reality:?}");
    let free_reality = reality_of(&store, &keys, &node, "free").await.unwrap();
    assert_eq!(free_reality.limits.as_deref(), Some("none"));
    for m in [&hungry, &modest, &free] {
        intents.delete(&node, m.id()).await.unwrap();
    }
    agent.stop().await;
}

/// Bad input fails only its pod, with the reason in its reality: intent that
/// does not validate (written around the API, as `etcdctl put` would; a
/// running pod keeps running the manifest it has) and a command that does
/// not exist. Every other pod of the node runs.
async fn invalid_intent_fails_only_its_pod<S: Store>(store: S, keys: Keys) {
    use drover_store::Put;
    let f = files();
    let node: NodeId = "n10".parse().unwrap();
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let raw = |pod: &str, bytes: &'static str| {
        let key = keys.intent(&node, &pod.parse().unwrap());
        let store = store.clone();
        async move { store.put(Put::new(key.as_str(), bytes)).await.unwrap() }
    };
    // Present before the agent starts: its first listing must not stall.
    raw(
        "garbage",
        "id: garbage\nlaunchables: {main: {type: process}}\n",
    )
    .await;
    let fine = Manifest::builder("fine")
        .process("main", test_pod(&f, &[]))
        .build()
        .unwrap();
    intents.put(&node, fine.id(), &fine).await.unwrap();
    let missing = Manifest::builder("missing")
        .process("main", ["/no/such/program"])
        .build()
        .unwrap();
    intents.put(&node, missing.id(), &missing).await.unwrap();
    let agent = start(&store, config(&node, &f.data, &keys));
    eventually("fine running", || async {
        (health_of(&store, &keys, &node, "fine").await == Some(HealthState::Passing)).then_some(())
    })
    .await;
    let refused = eventually("garbage reported", || async {
        reality_of(&store, &keys, &node, "garbage").await
    })
    .await;
    assert_eq!(refused.status, LaunchStatus::Failed);
    let reason = refused.reason.unwrap_or_default();
    assert!(
        reason.contains("does not validate") && reason.contains("launchables.main.command"),
        "{reason}"
    );

    // A command that does not exist: that pod fails, saying so.
    let failed = eventually("missing reported failed", || async {
        reality_of(&store, &keys, &node, "missing")
            .await
            .filter(|r| r.status == LaunchStatus::Failed)
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("/no/such/program"), "{reason}");

    // A running pod's intent overwritten with garbage: it keeps running.
    let started = eventually("fine's start recorded", || async {
        Some(pids(&f.starts)).filter(|p| !p.is_empty())
    })
    .await;
    raw("fine", "{not yaml").await;
    let kept = eventually("fine says its intent is refused", || async {
        reality_of(&store, &keys, &node, "fine")
            .await
            .filter(|r| r.reason.is_some())
    })
    .await;
    assert_eq!(kept.sha, fine.sha(), "still the manifest it runs");
    assert_eq!(kept.status, LaunchStatus::Launched);
    assert!(kept.reason.unwrap().contains("YAML"), "names the problem");
    for pid in &started {
        assert!(alive(*pid), "{pid} kept running");
    }
    // The valid manifest again: nothing restarts, the reason goes.
    intents.put(&node, fine.id(), &fine).await.unwrap();
    eventually("fine clean again", || async {
        reality_of(&store, &keys, &node, "fine")
            .await
            .filter(|r| r.reason.is_none())
    })
    .await;
    assert_eq!(pids(&f.starts), started, "no restart");

    for pod in ["fine", "garbage", "missing"] {
        intents.delete(&node, &pod.parse().unwrap()).await.unwrap();
    }
    eventually("both gone", || async {
        let fine = reality_of(&store, &keys, &node, "fine").await;
        let garbage = reality_of(&store, &keys, &node, "garbage").await;
        let missing = reality_of(&store, &keys, &node, "missing").await;
        (fine.is_none() && garbage.is_none() && missing.is_none()).then_some(())
    })
    .await;
    agent.stop().await;
}

drover_store_etcd::on_both_backends!(
    invalid_intent_fails_only_its_pod,
    memory_limits_are_enforced_and_reported,
    artifacts_are_fetched_verified_and_run,
    tcp_and_exec_probes_reach_the_store,
    intent_drives_processes,
    stop_kills_everything_after_the_grace_period,
    crashes_restart_with_growing_backoff,
    health_transitions_reach_the_store,
    one_live_agent_per_node,
);

/// A partition longer than the lease TTL (the store sees nothing from the
/// agent): the node record and health expire with the lease, the pod keeps
/// running untouched (failed reads never stop a pod), and once the store is
/// reachable again the agent registers under a new lease and reports again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_past_the_lease_keeps_pods_running_and_re_registers() {
    use drover_store::embedded::EmbeddedStore;
    use drover_store::testing::FaultyStore;

    let inner = EmbeddedStore::in_memory();
    let store = FaultyStore::new(inner.clone());
    let keys = Keys::default();
    let f = files();
    let node: NodeId = "n6".parse().unwrap();
    let mut cfg = config(&node, &f.data, &keys);
    cfg.lease_ttl_secs = 2;
    let agent = start(&store, cfg);
    let pod = Manifest::builder("steady")
        .process("main", test_pod(&f, &[]))
        .build()
        .unwrap();
    IntentStore::new(inner.clone())
        .put(&node, pod.id(), &pod)
        .await
        .unwrap();
    eventually("health passing", || async {
        (health_of(&inner, &keys, &node, "steady").await == Some(HealthState::Passing))
            .then_some(())
    })
    .await;
    let first = eventually("started", || async { pids(&f.starts).first().copied() }).await;
    let node_key = keys.node(&node);
    let lease_of_record = |store: EmbeddedStore| {
        let key = node_key.clone();
        async move {
            store
                .get(Get::key(key.as_str()))
                .await
                .unwrap()
                .kvs
                .first()
                .map(|kv| kv.lease)
        }
    };
    let old_lease = lease_of_record(inner.clone()).await.unwrap();

    store.faults.freeze(true);
    eventually("the node record expired with the lease", || async {
        lease_of_record(inner.clone()).await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        health_of(&inner, &keys, &node, "steady").await,
        None,
        "health expired too"
    );
    assert!(alive(first), "the pod runs on through the partition");

    store.faults.freeze(false);
    let new_lease = eventually("registered again", || async {
        lease_of_record(inner.clone()).await
    })
    .await;
    assert_ne!(new_lease, old_lease);
    eventually("health reported again", || async {
        (health_of(&inner, &keys, &node, "steady").await == Some(HealthState::Passing))
            .then_some(())
    })
    .await;
    assert!(alive(first), "not restarted");
    assert_eq!(pids(&f.starts), vec![first], "started exactly once");
    IntentStore::new(inner.clone())
        .delete(&node, pod.id())
        .await
        .unwrap();
    agent.stop().await;
}

/// Hollow nodes: many agents in one process with pretend pods; all register,
/// a pod placed on one of them is reported launched and passing (whatever
/// its status stanza), and a second set with the same names is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_nodes_register_and_run_pretend_pods() {
    use drover_store::embedded::EmbeddedStore;

    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("drover_agent=debug,drover_runtime=debug,info")
        .try_init();
    let store = EmbeddedStore::in_memory();
    let keys = Keys::default();
    let f = files();
    let base = config(&"hollow-0".parse().unwrap(), &f.data, &keys);
    let shutdown = CancellationToken::new();
    let hollow = tokio::spawn(drover_agent::run_hollow(
        store.clone(),
        base.clone(),
        "hollow".to_owned(),
        20,
        shutdown.clone(),
    ));
    eventually("20 node records", || async {
        (drover_store::testing::count_under(&store, &keys.nodes_prefix()).await == 20).then_some(())
    })
    .await;
    let node: NodeId = "hollow-7".parse().unwrap();
    let pod = Manifest::builder("pretend")
        .process("main", ["/nonexistent/program"])
        .status(StatusCheck::port(free_port()))
        .build()
        .unwrap();
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    intents.put(&node, pod.id(), &pod).await.unwrap();
    let reality = eventually("reality", || async {
        reality_of(&store, &keys, &node, "pretend").await
    })
    .await;
    assert_eq!(reality.status, LaunchStatus::Launched);
    eventually("health passing", || async {
        (health_of(&store, &keys, &node, "pretend").await == Some(HealthState::Passing))
            .then_some(())
    })
    .await;
    intents.delete(&node, pod.id()).await.unwrap();
    eventually("reality deleted", || async {
        reality_of(&store, &keys, &node, "pretend")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // Other agents (another data directory) claiming the same names.
    let mut others = base;
    others.data_dir = f.data.join("others");
    let again = tokio::time::timeout(
        PATIENCE,
        drover_agent::run_hollow(
            store.clone(),
            others,
            "hollow".to_owned(),
            3,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("refused at once");
    assert!(
        matches!(again, Err(AgentError::NodeTaken { .. })),
        "{again:?}"
    );

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, hollow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
