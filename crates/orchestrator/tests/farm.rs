//! The RC farm of `orchestrator serve` with real agents: three (then four)
//! `orchestrator agent` processes running the example HTTP service
//! (`examples/hello`), an RC created, scaled, moved off a killed agent and
//! off a relabelled node, and deleted. Every check reads the store (or
//! the service itself), never the farm's counters; the transfer is checked
//! from the store's recorded history.

// Each test binary uses a different part of the shared harness.
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_ids::{NodeId, PodId, RcId};
use drover_labels::{LabelType, Labeler};
use drover_rc_farm::RcSpec;
use drover_rc_farm::status::RcStatus;
use drover_rc_farm::store::RcStore;
use drover_store::keys::Keys;
use drover_store::{EventKind, Get, Store, Watch};
use drover_store_etcd::EtcdStore;
use support::{AgentProcess, Server};

const PATIENCE: Duration = Duration::from_secs(60);

/// The example RC with the path of `hello.py` filled in.
fn hello_rc(replicas: u32) -> RcSpec {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let script = root.join("hello.py").canonicalize().unwrap();
    let text = std::fs::read_to_string(root.join("rc.yaml"))
        .unwrap()
        .replace("{{HELLO_PY}}", script.to_str().unwrap())
        .replace(
            "replicas_desired: 3",
            &format!("replicas_desired: {replicas}"),
        );
    RcSpec::from_yaml(&text).unwrap()
}

async fn status(rcs: &RcStore<EtcdStore>, id: &RcId) -> Option<RcStatus> {
    rcs.status(id).await.ok().flatten()
}

async fn wait_status(
    rcs: &RcStore<EtcdStore>,
    id: &RcId,
    what: &str,
    check: impl Fn(&RcStatus) -> bool,
) {
    drover_store::testing::eventually(what, PATIENCE, || async {
        status(rcs, id).await.filter(|s| check(s)).map(|_| ())
    })
    .await
}

/// Nodes holding intent for `pod`.
async fn intents(store: &EtcdStore, keys: &Keys, pod: &str) -> BTreeSet<String> {
    let listed = store.get(Get::prefix(keys.intent_prefix())).await.unwrap();
    listed
        .kvs
        .iter()
        .filter_map(|kv| keys.parse_intent(&kv.key))
        .filter(|(_, p)| p.as_ref() == pod)
        .map(|(n, _)| n.to_string())
        .collect()
}

/// What the service of the pod on `node` answers on `/`.
async fn greeting(data: PathBuf) -> Option<String> {
    let port: u16 = std::fs::read_to_string(data.join("pods/hello/port"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer.lines().last().map(str::to_owned)
}

/// Replays recorded events: the fewest healthy replicas of `pod` (intent
/// on the node and health passing there) at any revision.
fn fewest_healthy(
    keys: &Keys,
    pod: &PodId,
    start: &BTreeMap<String, bool>,
    events: &[(i64, drover_store::Event)],
) -> usize {
    let mut intent: BTreeSet<NodeId> = start.keys().map(|n| n.parse().unwrap()).collect();
    let mut passing: BTreeSet<NodeId> = start
        .iter()
        .filter(|(_, p)| **p)
        .map(|(n, _)| n.parse().unwrap())
        .collect();
    let healthy = |intent: &BTreeSet<NodeId>, passing: &BTreeSet<NodeId>| {
        intent.intersection(passing).count()
    };
    let mut fewest = healthy(&intent, &passing);
    let mut i = 0;
    while i < events.len() {
        let revision = events[i].0;
        while i < events.len() && events[i].0 == revision {
            let event = &events[i].1;
            let put = event.kind == EventKind::Put;
            if let Some((node, p)) = keys.parse_intent(&event.kv.key)
                && &p == pod
            {
                if put {
                    intent.insert(node);
                } else {
                    intent.remove(&node);
                }
            }
            if let Some((p, node)) = keys.parse_health(&event.kv.key)
                && &p == pod
            {
                let ok = put
                    && drover_health::HealthResult::from_json(&event.kv.value)
                        .is_ok_and(|r| r.state == drover_health::HealthState::Passing);
                if ok {
                    passing.insert(node);
                } else {
                    passing.remove(&node);
                }
            }
            i += 1;
        }
        fewest = fewest.min(healthy(&intent, &passing));
    }
    fewest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rc_runs_on_real_agents_through_scale_loss_transfer_and_delete() {
    let server = Server::start_with(
        &["--memory"],
        &["--lost-node-grace", "1s", "--farm-lease", "2s"],
    )
    .await;
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let data = |node: &str| -> PathBuf { dir.path().join(node) };
    let mut agents: BTreeMap<&str, AgentProcess> = BTreeMap::new();
    for (node, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
        agents.insert(node, AgentProcess::spawn(&url, node, &data(node), zone));
    }
    let store = server.etcd_client().await;
    let keys = Keys::default();
    let rcs = RcStore::new(store.clone(), keys.clone());

    let spec = hello_rc(3);
    rcs.create(&spec, "test").await.unwrap();
    wait_status(&rcs, &spec.id, "3 healthy replicas", |s| s.healthy == 3).await;
    assert_eq!(
        intents(&store, &keys, "hello").await,
        ["n1", "n2", "n3"].map(String::from).into()
    );
    // The service answers, on every node.
    for node in ["n1", "n2", "n3"] {
        let answer =
            drover_store::testing::eventually("the greeting", PATIENCE, || greeting(data(node)))
                .await;
        assert_eq!(answer, format!("hello from pod hello on node {node}"));
    }

    // Scale down (never below what is asked), then up again.
    rcs.scale(&spec.id, 2, "test").await.unwrap();
    wait_status(&rcs, &spec.id, "2 replicas", |s| {
        s.current == 2 && s.healthy == 2
    })
    .await;
    rcs.scale(&spec.id, 3, "test").await.unwrap();
    wait_status(&rcs, &spec.id, "3 healthy again", |s| {
        s.current == 3 && s.healthy == 3
    })
    .await;

    // A fourth node; then SIGKILL an agent with a replica: once its lease
    // and the grace have passed, the replica runs on the free node.
    agents.insert("n4", AgentProcess::spawn(&url, "n4", &data("n4"), "b"));
    let before = intents(&store, &keys, "hello").await;
    let victim = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| before.contains(*n))
        .unwrap();
    agents.remove(victim).unwrap().kill();
    drover_store::testing::eventually("the killed node's replica replaced", PATIENCE, || async {
        let now = intents(&store, &keys, "hello").await;
        (now.len() == 3 && !now.contains(victim)).then_some(())
    })
    .await;
    wait_status(&rcs, &spec.id, "3 healthy after the loss", |s| {
        s.healthy == 3
    })
    .await;
    // The agent comes back on its data: it stops the pod it no longer has
    // intent for (and keeps it otherwise), and its node is free again.
    agents.insert(
        victim,
        AgentProcess::spawn(
            &url,
            victim,
            &data(victim),
            if victim == "n3" { "b" } else { "a" },
        ),
    );

    // Relabel a node out of the selector: the replacement comes first, the
    // old replica goes once the new one passes, so the healthy count never
    // drops below 3 (replayed from the store's events).
    let on_now = intents(&store, &keys, "hello").await;
    let leaving = on_now.iter().find(|n| n.as_str() != "n4").unwrap().clone();
    let start = store.get(Get::prefix(keys.prefix())).await.unwrap();
    let mut start_health = BTreeMap::new();
    for node in &on_now {
        let health = store
            .get(
                Get::key(keys.health(&"hello".parse().unwrap(), &node.parse().unwrap()))
                    .at_revision(start.revision),
            )
            .await
            .unwrap();
        let passing = health.kvs.first().is_some_and(|kv| {
            drover_health::HealthResult::from_json(&kv.value)
                .is_ok_and(|r| r.state == drover_health::HealthState::Passing)
        });
        start_health.insert(node.clone(), passing);
    }
    let mut watch = store
        .watch(Watch::prefix(keys.prefix()).from_revision(start.revision + 1))
        .await
        .unwrap();
    Labeler::new(store.clone())
        .set(LabelType::Node, &leaving, "zone", "c")
        .await
        .unwrap();
    drover_store::testing::eventually("moved off the relabelled node", PATIENCE, || async {
        let now = intents(&store, &keys, "hello").await;
        (now.len() == 3 && !now.contains(&leaving)).then_some(())
    })
    .await;
    wait_status(&rcs, &spec.id, "3 healthy after the transfer", |s| {
        s.healthy == 3
    })
    .await;
    let end = store.get(Get::key("/")).await.unwrap().revision;
    let mut events = Vec::new();
    'collect: while let Some(batch) = tokio::time::timeout(PATIENCE, watch.next_batch())
        .await
        .unwrap()
    {
        let batch = batch.unwrap();
        for event in batch.events {
            let revision = event.kv.mod_revision;
            events.push((revision, event));
        }
        if batch.revision >= end {
            break 'collect;
        }
    }
    assert!(
        start_health.values().all(|p| *p),
        "all passing before: {start_health:?}"
    );
    assert_eq!(
        fewest_healthy(&keys, &"hello".parse().unwrap(), &start_health, &events),
        3,
        "the transfer went below 3 healthy replicas"
    );

    // A forced delete unschedules everything, then removes the record.
    rcs.delete(&spec.id, true, "test").await.unwrap();
    drover_store::testing::eventually("the RC gone", PATIENCE, || async {
        (rcs.get(&spec.id).await.unwrap().is_none()
            && intents(&store, &keys, "hello").await.is_empty())
        .then_some(())
    })
    .await;
    for (_, agent) in agents {
        agent.stop().await;
    }
    server.signal("TERM");
    server.wait_success().await;
}
