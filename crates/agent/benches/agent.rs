//! Agent benchmark: `orchestrator agent` as a real process on a real
//! `orchestrator serve` (embedded store, durable), driven through the
//! served etcd API as any controller would.
//!
//! `cargo xtask bench agent` builds both with the bench profile, starts the
//! server and sets `DROVER_ORCHESTRATOR_ENDPOINTS` and
//! `DROVER_ORCHESTRATOR_BIN`. Rows:
//! - pod start latency: from the intent's write to its reality record
//!   (launched) and to passing health in the store, p50/p99, over
//!   `DROVER_BENCH_PODS` (default 200) pods of a trivial process
//!   (`sleep`), written 20 a second on one agent (process-alive health, so
//!   the 1 s probe period bounds the health row);
//! - the agent's RSS and CPU share over 5 s of steady state with half of
//!   the pods running, and with all of them;
//! - crash detection: a pod's process SIGKILLed -> reality crash-looping,
//!   -> health critical in the store, and -> running again (after the
//!   manifest's default 1 s restart backoff), over 10 pods;
//! - hollow nodes: `DROVER_BENCH_HOLLOW_NODES` (default 1000; 0 skips)
//!   hollow nodes started in one `orchestrator agent --hollow N` process:
//!   the time from its start to each `nodes/<name>` record (p50/p99/max;
//!   the max is when all were registered), then, with every node idle,
//!   that process's RSS and CPU share over 10 s, and the store process's
//!   CPU share over the same window (`DROVER_ORCHESTRATOR_PID`, set by
//!   `cargo xtask bench agent`).
//!
//! Targets (issue #10): p99 intent -> reality under 250 ms; RSS under
//! 30 MiB with 100 pods. The table is printed and written to
//! `target/bench/agent.md` (or `DROVER_BENCH_DIR`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drover_health::HealthState;
use drover_ids::NodeId;
use drover_manifest::{IntentStore, LaunchStatus, Launchable, Manifest, Reality};
use drover_store::{EventKind, Store, Watch};
use drover_store_etcd::{EtcdConfig, EtcdStore};
use hdrhistogram::Histogram;
use tokio::time::Instant;

const NODE: &str = "bench-node";
/// Intents written per second.
const RATE: u32 = 20;
const CRASHES: usize = 10;
const PATIENCE: Duration = Duration::from_secs(60);
/// The hollow nodes' names: `<HOLLOW>-<i>`.
const HOLLOW: &str = "bench-hollow";
/// How long all hollow nodes may take to register.
const HOLLOW_PATIENCE: Duration = Duration::from_secs(300);
/// The steady-state CPU sampling window of the hollow phase.
const HOLLOW_WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

/// What the bench saw per pod, from the store's watch.
#[derive(Default)]
struct Seen {
    written: HashMap<String, Instant>,
    launched: HashMap<String, Instant>,
    passing: HashMap<String, Instant>,
    critical: HashMap<String, Instant>,
    crash_reported: HashMap<String, Instant>,
    restarted: HashMap<String, Instant>,
    /// Hollow nodes' first node record.
    registered: HashMap<String, Instant>,
}

async fn run() {
    let (Ok(endpoint), Ok(binary)) = (
        std::env::var("DROVER_ORCHESTRATOR_ENDPOINTS"),
        std::env::var("DROVER_ORCHESTRATOR_BIN"),
    ) else {
        println!(
            "set DROVER_ORCHESTRATOR_ENDPOINTS and DROVER_ORCHESTRATOR_BIN (`cargo xtask bench agent` does)"
        );
        return;
    };
    let pods: usize = env_count("DROVER_BENCH_PODS", 200).max(2);
    let hollow_nodes = env_count("DROVER_BENCH_HOLLOW_NODES", 1000);
    let bench_dir = std::env::var_os("DROVER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let data = tempfile::Builder::new()
        .prefix("agent-")
        .tempdir_in(&bench_dir)
        .expect("agent data dir");
    let store = EtcdStore::connect([endpoint.clone()], EtcdConfig::default())
        .await
        .expect("connect to the orchestrator");
    let node: NodeId = NODE.parse().unwrap();
    let mut agent = spawn_agent(
        &binary,
        &[NODE, "--endpoints", &endpoint, "--stop-pods-on-exit"],
        data.path(),
    );
    let agent_pid = agent.id().expect("agent pid") as i32;

    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Seen::default()));
    let follower = tokio::spawn(follow(store.clone(), seen.clone()));
    let intents = IntentStore::new(store.clone());
    let manifests: Vec<Manifest> = (0..pods)
        .map(|i| {
            Manifest::builder(format!("p{i}"))
                .launchable("main", Launchable::process(["/bin/sleep", "3600"]))
                .termination_grace_period(Duration::from_secs(1))
                .build()
                .unwrap()
        })
        .collect();

    let mut usage = Vec::new();
    for half in [&manifests[..pods / 2], &manifests[pods / 2..]] {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        for m in half {
            tick.tick().await;
            seen.lock()
                .written
                .insert(m.id().to_string(), Instant::now());
            intents.put(&node, m.id(), m).await.expect("write intent");
        }
        let running = seen.lock().written.len();
        wait_for(&seen, "every pod passing", |s| s.passing.len() >= running).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        usage.push((
            running,
            sample_usage(agent_pid, Duration::from_secs(5)).await,
        ));
    }

    // Crashes: SIGKILL the main process of a few pods.
    for m in manifests.iter().take(CRASHES) {
        let pid = recorded_pid(
            &data
                .path()
                .join("pods")
                .join(m.id().as_str())
                .join("main.pid"),
        );
        seen.lock()
            .written
            .insert(format!("crash:{}", m.id()), Instant::now());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(&seen, "every crash restarted", |s| {
        s.restarted.len() >= CRASHES
    })
    .await;

    for m in &manifests {
        intents.delete(&node, m.id()).await.expect("delete intent");
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(PATIENCE, agent.wait()).await;
    let hollow = if hollow_nodes > 0 {
        Some(hollow_phase(&binary, &endpoint, data.path(), hollow_nodes, &seen).await)
    } else {
        None
    };
    follower.abort();

    let seen = seen.lock();
    let since = |to: &HashMap<String, Instant>, prefix: &str| {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for (pod, at) in to {
            if let Some(written) = seen.written.get(&format!("{prefix}{pod}")) {
                h.record(at.saturating_duration_since(*written).as_micros().max(1) as u64)
                    .unwrap();
            }
        }
        h
    };
    let reality = since(&seen.launched, "");
    let health = since(&seen.passing, "");
    let detect = since(&seen.critical, "crash:");
    let reported = since(&seen.crash_reported, "crash:");
    let restart = since(&seen.restarted, "crash:");
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut out = String::new();
    writeln!(
        out,
        "# Agent benchmark: `orchestrator agent` on `orchestrator serve` (embedded, durable)\n"
    )
    .unwrap();
    writeln!(out, "{pods} pods (`sleep`, process-alive health, 1 s probe period) written {RATE}/s to one agent; {CRASHES} crashes.\n").unwrap();
    writeln!(out, "| row | n | p50 | p99 | max |").unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|").unwrap();
    for (row, h) in [
        ("intent -> reality launched", &reality),
        ("intent -> health passing", &health),
        ("SIGKILL -> reality crash-looping", &reported),
        ("SIGKILL -> health critical", &detect),
        ("SIGKILL -> restarted (1 s restart backoff)", &restart),
    ] {
        writeln!(
            out,
            "| {row} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n| pods running | agent RSS | agent CPU (share of one core) |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|").unwrap();
    for (running, (rss, cpu)) in &usage {
        writeln!(
            out,
            "| {running} | {:.1} MiB | {:.1}% |",
            *rss as f64 / (1 << 20) as f64,
            cpu * 100.0
        )
        .unwrap();
    }
    let p99 = ms(&reality, 0.99);
    let rss_100 = usage
        .iter()
        .find(|(running, _)| *running >= 100)
        .map(|(_, (rss, _))| *rss as f64 / (1 << 20) as f64);
    writeln!(
        out,
        "\nTargets: p99 intent -> reality < 250 ms: {} ({p99:.1} ms); RSS < 30 MiB with 100 pods: {}",
        if p99 < 250.0 { "met" } else { "NOT met" },
        match rss_100 {
            Some(rss) if rss < 30.0 => format!("met ({rss:.1} MiB)"),
            Some(rss) => format!("NOT met ({rss:.1} MiB)"),
            None => "not measured (fewer than 100 pods)".into(),
        }
    )
    .unwrap();
    if let Some(hollow) = &hollow {
        let registered = since(&seen.registered, "");
        writeln!(
            out,
            "\n## Hollow nodes: {hollow_nodes} in one `orchestrator agent --hollow {hollow_nodes}` process\n"
        )
        .unwrap();
        writeln!(out, "| row | n | p50 | p99 | max |").unwrap();
        writeln!(out, "|---|---:|---:|---:|---:|").unwrap();
        writeln!(
            out,
            "| process start -> nodes/<name> written | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            registered.len(),
            ms(&registered, 0.5),
            ms(&registered, 0.99),
            registered.max() as f64 / 1000.0
        )
        .unwrap();
        writeln!(
            out,
            "\n| hollow nodes, idle ({} s) | hollow RSS | hollow CPU (share of one core) | store CPU (`orchestrator serve`) |",
            HOLLOW_WINDOW.as_secs()
        )
        .unwrap();
        writeln!(out, "|---:|---:|---:|---:|").unwrap();
        let (rss, cpu) = hollow.process;
        writeln!(
            out,
            "| {hollow_nodes} | {:.1} MiB | {:.1}% | {} |",
            rss as f64 / (1 << 20) as f64,
            cpu * 100.0,
            hollow.store_cpu.map_or(
                "not measured (no DROVER_ORCHESTRATOR_PID)".into(),
                |cpu| format!("{:.1}%", cpu * 100.0)
            )
        )
        .unwrap();
    }
    println!("\n{out}");
    let file = bench_dir.join("agent.md");
    std::fs::write(&file, &out).expect("write agent.md");
    println!("written to {}", file.display());
}

fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// What the hollow phase measured besides registrations.
struct HollowUsage {
    /// The hollow process's RSS (bytes) and CPU share, all nodes idle.
    process: (u64, f64),
    /// The store process's CPU share over the same window.
    store_cpu: Option<f64>,
}

/// Starts `nodes` hollow nodes in one process, waits until all registered
/// (the watch in [`follow`] records when), samples that process and the
/// store while the nodes idle, and stops it.
async fn hollow_phase(
    binary: &str,
    endpoint: &str,
    data: &Path,
    nodes: usize,
    seen: &parking_lot::Mutex<Seen>,
) -> HollowUsage {
    let store_pid: Option<i32> = std::env::var("DROVER_ORCHESTRATOR_PID")
        .ok()
        .and_then(|pid| pid.parse().ok());
    seen.lock()
        .written
        .extend((0..nodes).map(|i| (format!("{HOLLOW}-{i}"), Instant::now())));
    let mut hollow = spawn_agent(
        binary,
        &[
            HOLLOW,
            "--endpoints",
            endpoint,
            "--hollow",
            &nodes.to_string(),
        ],
        &data.join("hollow"),
    );
    let pid = hollow.id().expect("hollow pid") as i32;
    wait_within(seen, "every hollow node registered", HOLLOW_PATIENCE, |s| {
        s.registered.len() >= nodes
    })
    .await;
    // Past the start: every node's first keep-alive round and intent watch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (process, store) = tokio::join!(sample_usage(pid, HOLLOW_WINDOW), async {
        match store_pid {
            Some(pid) => Some(sample_usage(pid, HOLLOW_WINDOW).await.1),
            None => None,
        }
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(PATIENCE, hollow.wait()).await;
    HollowUsage {
        process,
        store_cpu: store,
    }
}

/// Records, from a watch of the whole key space from now, when each pod's
/// reality and health changed.
async fn follow(store: EtcdStore, seen: std::sync::Arc<parking_lot::Mutex<Seen>>) {
    let keys = drover_store::keys::Keys::default();
    let mut watch = store
        .watch(Watch::prefix(keys.prefix().to_owned()))
        .await
        .expect("watch");
    while let Some(batch) = watch.next_batch().await {
        let Ok(batch) = batch else { return };
        let now = Instant::now();
        for event in batch.events {
            if event.kind != EventKind::Put {
                continue;
            }
            let kv = &event.kv;
            let mut seen = seen.lock();
            if let Some(node) = keys.parse_node(&kv.key) {
                if node.as_str().starts_with(HOLLOW) {
                    seen.registered.entry(node.to_string()).or_insert(now);
                }
            } else if let Some((_, pod)) = keys.parse_reality(&kv.key) {
                let Ok(reality) = Reality::from_json(&kv.value) else {
                    continue;
                };
                let pod = pod.to_string();
                match reality.status {
                    LaunchStatus::Launched if reality.restarts > 0 => {
                        seen.restarted.entry(pod).or_insert(now);
                    }
                    LaunchStatus::Launched => {
                        seen.launched.entry(pod).or_insert(now);
                    }
                    LaunchStatus::CrashLooping => {
                        seen.crash_reported.entry(pod).or_insert(now);
                    }
                    _ => {}
                }
            } else if let Some((pod, _)) = keys.parse_health(&kv.key) {
                let Ok(result) = drover_health::HealthResult::from_json(&kv.value) else {
                    continue;
                };
                let pod = pod.to_string();
                match result.state {
                    HealthState::Passing => {
                        seen.passing.entry(pod).or_insert(now);
                    }
                    HealthState::Critical if seen.written.contains_key(&format!("crash:{pod}")) => {
                        seen.critical.entry(pod).or_insert(now);
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn wait_for(seen: &parking_lot::Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    wait_within(seen, what, PATIENCE, done).await;
}

async fn wait_within(
    seen: &parking_lot::Mutex<Seen>,
    what: &str,
    patience: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + patience;
    while !done(&seen.lock()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn recorded_pid(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no recorded pid in {}", file.display()))
}

/// The process's RSS (bytes) and the share of one core it used over
/// `window`.
async fn sample_usage(pid: i32, window: Duration) -> (u64, f64) {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime: fields 14 and 15, i.e. 11 and 12 after the state.
        field(11) + field(12)
    };
    let hz = 100.0; // USER_HZ on Linux
    let (before, started) = (ticks(), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (ticks() - before) as f64 / hz / started.elapsed().as_secs_f64();
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (rss_kib * 1024, cpu)
}

/// `orchestrator agent --node <args...> --data-dir <data>`, quiet, killed
/// when dropped.
fn spawn_agent(
    binary: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    data: &std::path::Path,
) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .args(["agent", "--node"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start orchestrator agent")
}
