//! `orchestrator agent` as a real process on `orchestrator serve`, reached
//! over the wire through the served etcd API: intent in, a real process
//! out, reality and health back in the store; a second agent for the node
//! refused; SIGTERM stops the agent (and, with --stop-pods-on-exit, its
//! pods).

// Each test binary uses a different part of the shared harness.
#[allow(dead_code)]
mod support;

use std::process::Stdio;
use std::time::Duration;

use drover_health::{HealthState, HealthStore};
use drover_ids::NodeId;
use drover_manifest::{IntentStore, LaunchStatus, Manifest, RealityStore};
use support::{BIN, Server, run_to_exit};
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(20);

/// The shared poll-until helper, within [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    drover_store::testing::eventually(what, PATIENCE, check).await
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// `orchestrator agent` for `node` on the server at `url`, stopping its
/// pods when it exits, with its data in `data`.
fn spawn_agent(
    url: &str,
    node: &str,
    data: &std::path::Path,
    extra: &[&str],
) -> tokio::process::Child {
    Command::new(BIN)
        .args([
            "agent",
            "--node",
            node,
            "--endpoints",
            url,
            "--stop-pods-on-exit",
        ])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// SIGTERM to an agent, which must exit successfully.
async fn stop_agent(mut agent: tokio::process::Child) {
    let agent_pid = agent.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &agent_pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(PATIENCE, agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_runs_intent_through_a_served_store() {
    let server = Server::start(&["--memory"]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let pid_file = dir.path().join("pid");
    let url = server.url();
    let agent = spawn_agent(&url, "edge-1", &data, &["--labels", "zone=a"]);

    let store = server.etcd_client().await;
    let node: NodeId = "edge-1".parse().unwrap();
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let sleeper = Manifest::builder("sleeper")
        .process("main", ["/bin/sh", "-c", script.as_str()])
        .build()
        .unwrap();
    IntentStore::new(store.clone())
        .put(&node, sleeper.id(), &sleeper)
        .await
        .unwrap();
    let realities = RealityStore::new(store.clone());
    let reality = eventually("reality", || async {
        realities
            .get(&node, sleeper.id())
            .await
            .unwrap()
            .filter(|r| r.sha == sleeper.sha())
    })
    .await;
    assert_eq!(reality.status, LaunchStatus::Launched);
    let health = HealthStore::new(store.clone());
    eventually("health passing", || async {
        let result = health.node_health("sleeper", "edge-1").await.unwrap()?;
        (result.state == HealthState::Passing).then_some(())
    })
    .await;
    let pid: i32 = eventually("the pod's pid", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    assert!(alive(pid));

    // Another agent for the same node is refused, clearly.
    let other = dir.path().join("other");
    let other = other.to_str().unwrap();
    let (status, stderr) = run_to_exit(&[
        "agent",
        "--node",
        "edge-1",
        "--endpoints",
        &url,
        "--data-dir",
        other,
    ])
    .await;
    assert!(!status.success());
    assert!(
        stderr.contains("node edge-1 is already registered by another live agent"),
        "{stderr}"
    );

    // SIGTERM: the agent stops its pods (as asked) and exits cleanly.
    stop_agent(agent).await;
    assert!(!alive(pid), "the pod stopped with the agent");
    server.signal("TERM");
    server.wait_success().await;
}

/// Bad flags are refused before anything connects, naming the flag.
#[tokio::test]
async fn bad_agent_flags_are_refused_with_the_flag_named() {
    for (args, names) in [
        (&["--node", "N_1"][..], "--node"),
        (&["--node", "n1", "--labels", "zone"][..], "--labels"),
        (&["--node", "n1", "--labels", "bad key=v"][..], "--labels"),
        (
            &["--node", "n1", "--max-log-size", "12x"][..],
            "--max-log-size",
        ),
        (&["--node", "n1", "--lease-ttl", "soon"][..], "--lease-ttl"),
    ] {
        let mut argv = vec!["agent", "--endpoints", "http://127.0.0.1:1"];
        argv.extend_from_slice(args);
        let (status, stderr) = run_to_exit(&argv).await;
        assert!(!status.success(), "{argv:?} was accepted");
        assert!(stderr.contains(names), "{argv:?}: {stderr}");
    }
}

/// An agent killed with SIGKILL and started again on its data directory
/// takes its node back at once and adopts the pod it left running: same
/// process, no second start; deleting the intent then stops that process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_restarted_adopts_its_running_pods() {
    let server = Server::start(&["--memory"]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent");
    let starts = dir.path().join("starts");
    let url = server.url();
    let mut agent = spawn_agent(&url, "edge-2", &data, &[]);
    let store = server.etcd_client().await;
    let node: NodeId = "edge-2".parse().unwrap();
    let script = format!("echo $$ >> {}; exec sleep 600", starts.display());
    let sleeper = Manifest::builder("sleeper")
        .process("main", ["/bin/sh", "-c", script.as_str()])
        .build()
        .unwrap();
    let intents = IntentStore::new(store.clone());
    intents.put(&node, sleeper.id(), &sleeper).await.unwrap();
    let realities = RealityStore::new(store.clone());
    realities_since(&realities, &node, &sleeper, 0).await;
    let pid: i32 = eventually("the pod's pid", || async {
        std::fs::read_to_string(&starts).ok()?.trim().parse().ok()
    })
    .await;

    agent.kill().await.unwrap();
    let registered = node_record_revision(&store, &node, 0).await;
    let agent = spawn_agent(&url, "edge-2", &data, &[]);
    // The new run registers (a new node record), then reports the pod again
    // (a reality record newer than that) without starting it.
    let again = node_record_revision(&store, &node, registered).await;
    realities_since(&realities, &node, &sleeper, again).await;
    assert!(alive(pid), "the pod survived the agent's SIGKILL");
    assert_eq!(
        std::fs::read_to_string(&starts).unwrap().lines().count(),
        1,
        "adopted, not restarted"
    );

    intents.delete(&node, sleeper.id()).await.unwrap();
    eventually("the adopted pod stopped", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    // An orderly stop this time: the agent removes its (empty) cgroup subtree.
    stop_agent(agent).await;
    server.signal("TERM");
    server.wait_success().await;
}

/// Waits for the node record to be written after `after`; returns its
/// revision.
async fn node_record_revision(
    store: &drover_store_etcd::EtcdStore,
    node: &NodeId,
    after: i64,
) -> i64 {
    use drover_store::{Get, Store};
    let key = drover_store::keys::Keys::default().node(node);
    eventually("a newer node record", || async {
        let kv = store.get(Get::key(key.as_str())).await.unwrap();
        kv.kvs
            .first()
            .map(|kv| kv.mod_revision)
            .filter(|rev| *rev > after)
    })
    .await
}

/// Waits for a reality record of `manifest`, launched, written after
/// `after` (a store revision); returns its revision.
async fn realities_since(
    realities: &RealityStore<drover_store_etcd::EtcdStore>,
    node: &NodeId,
    manifest: &Manifest,
    after: i64,
) -> i64 {
    use drover_store::{Get, Store};
    let key = realities.key(node, manifest.id());
    eventually("a newer reality record", || async {
        let kv = realities.store().get(Get::key(key.as_str())).await.unwrap();
        let kv = kv.kvs.first()?;
        let reality = drover_manifest::Reality::from_json(&kv.value).ok()?;
        (reality.sha == manifest.sha()
            && reality.status == LaunchStatus::Launched
            && kv.mod_revision > after)
            .then_some(kv.mod_revision)
    })
    .await
}

/// The record at `key`, once it exists.
async fn value_of(store: &drover_store_etcd::EtcdStore, key: &str) -> Vec<u8> {
    eventually(key, || async {
        drover_store::testing::value_at(store, key).await
    })
    .await
}

/// An agent started with nothing but `--config FILE` takes every setting
/// from the file: its node registers at the file's store with the file's
/// address, capacity and labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_from_its_config_file_alone() {
    let server = Server::start(&["--memory"]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "node: edge-3\n\
             endpoints: [{url}]\n\
             data_dir: {data}\n\
             labels: {{ zone: b, tier: web }}\n\
             address: 10.9.8.7\n\
             stop_pods_on_exit: true\n\
             lease_ttl: 5s\n\
             probe: {{ period: 2s, failure_threshold: 2 }}\n\
             capacity: {{ cpus: 3, memory: 1G }}\n",
            url = server.url(),
            data = dir.path().join("agent").display(),
        ),
    )
    .unwrap();
    let agent = Command::new(BIN)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let store = server.etcd_client().await;
    let keys = drover_store::keys::Keys::default();
    let node: NodeId = "edge-3".parse().unwrap();
    let record = value_of(&store, &keys.node(&node)).await;
    let record = drover_agent::NodeRecord::from_json(&record).unwrap();
    assert_eq!(record.address, "10.9.8.7");
    assert_eq!(
        record.capacity,
        drover_agent::Capacity {
            millicpus: 3000,
            memory_bytes: 1 << 30
        }
    );
    let labels_key = keys
        .labels(drover_store::keys::LabelType::Node, "edge-3")
        .unwrap();
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&value_of(&store, &labels_key).await).unwrap();
    assert_eq!(labels.get("zone").map(String::as_str), Some("b"));
    assert_eq!(labels.get("tier").map(String::as_str), Some("web"));

    stop_agent(agent).await;
    server.signal("TERM");
    server.wait_success().await;
}

/// A config file with an unknown key, a missing file, and a node named
/// nowhere are refused before anything connects, each named on stderr.
#[tokio::test]
async fn bad_agent_config_files_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad-key.yaml");
    std::fs::write(
        &bad_key,
        "node: n1\nendpoints: [http://127.0.0.1:1]\nlease_tll: 10s\n",
    )
    .unwrap();
    let bad_key = bad_key.to_str().unwrap();
    let (status, stderr) = run_to_exit(&["agent", "--config", bad_key]).await;
    assert!(!status.success(), "an unknown key was accepted");
    assert!(stderr.contains("lease_tll"), "{stderr}");
    assert!(stderr.contains("lease_ttl"), "the accepted keys: {stderr}");
    assert!(stderr.contains(bad_key), "{stderr}");

    let absent = dir.path().join("absent.yaml");
    let absent = absent.to_str().unwrap();
    let (status, stderr) = run_to_exit(&["agent", "--config", absent]).await;
    assert!(!status.success(), "a missing file was accepted");
    assert!(stderr.contains(absent), "{stderr}");

    let no_node = dir.path().join("no-node.yaml");
    std::fs::write(&no_node, "endpoints: [http://127.0.0.1:1]\n").unwrap();
    let (status, stderr) = run_to_exit(&["agent", "--config", no_node.to_str().unwrap()]).await;
    assert!(!status.success(), "an agent without a node was accepted");
    assert!(stderr.contains("--node"), "{stderr}");
}

/// `orchestrator agent --node P --hollow N` registers N hollow nodes,
/// P-0 .. P-(N-1), from one process, with the agent's flags (labels) on
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hollow_registers_n_nodes_in_one_process() {
    let server = Server::start(&["--memory"]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = spawn_agent(
        &server.url(),
        "sim",
        &dir.path().join("hollow"),
        &["--hollow", "5", "--labels", "kind=hollow"],
    );
    let store = server.etcd_client().await;
    let keys = drover_store::keys::Keys::default();
    eventually("5 node records", || async {
        (drover_store::testing::count_under(&store, &keys.nodes_prefix()).await == 5).then_some(())
    })
    .await;
    for i in 0..5 {
        let node: NodeId = format!("sim-{i}").parse().unwrap();
        assert!(
            drover_store::testing::value_at(&store, &keys.node(&node))
                .await
                .is_some(),
            "{node} is not registered"
        );
        let labels_key = keys
            .labels(drover_store::keys::LabelType::Node, node.as_str())
            .unwrap();
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_slice(&value_of(&store, &labels_key).await).unwrap();
        assert_eq!(labels.get("kind").map(String::as_str), Some("hollow"));
    }
    stop_agent(agent).await;
    server.signal("TERM");
    server.wait_success().await;
}
