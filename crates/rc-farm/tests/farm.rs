//! The farm end to end in one process: real agents (hollow processes, the
//! agent's real code otherwise) on the embedded store and on a real etcd.
//! Every check reads the store, never the farm's own counters.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use drover_agent::{Agent, AgentConfig, Capacity, HollowProcesses};
use drover_ids::{NodeId, RcId};
use drover_labels::{LabelType, Labeler};
use drover_rc_farm::audit::AuditAction;
use drover_rc_farm::store::RcStore;
use drover_rc_farm::{Farm, FarmConfig, RcSpec};
use drover_store::keys::Keys;
use drover_store::testing::FaultyStore;
use drover_store::{Get, Put, Store};
use drover_store_etcd::on_both_backends;
use tokio_util::sync::CancellationToken;

/// How long a condition may take before the test fails (a bound on the
/// loop, not a timing assertion: conditions hold in milliseconds).
const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster<S: Store> {
    store: S,
    keys: Keys,
    dir: tempfile::TempDir,
    nodes: BTreeMap<String, CancellationToken>,
    farms: BTreeMap<String, CancellationToken>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<S: Store> Cluster<S> {
    fn new(store: S, keys: Keys) -> Self {
        Cluster {
            store,
            keys,
            dir: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            farms: BTreeMap::new(),
            tasks: Vec::new(),
        }
    }

    fn rcs(&self) -> RcStore<S> {
        RcStore::new(self.store.clone(), self.keys.clone())
    }

    fn start_node(&mut self, name: &str, zone: &str) {
        let node: NodeId = name.parse().unwrap();
        let mut config = AgentConfig::new(node, self.dir.path().join(name));
        config.keys = self.keys.clone();
        config.lease_ttl_secs = 2;
        config.labels = [("zone".to_owned(), zone.to_owned())].into();
        config.capacity = Some(Capacity {
            millicpus: 4000,
            memory_bytes: 8 << 30,
        });
        let agent = Agent::with_processes(
            self.store.clone(),
            config,
            std::sync::Arc::new(HollowProcesses::default()),
        )
        .stop_pods_on_exit(true);
        let stop = CancellationToken::new();
        let run = agent.run(stop.clone());
        self.tasks.push(tokio::spawn(async move {
            run.await.unwrap();
        }));
        self.nodes.insert(name.to_owned(), stop);
    }

    fn stop_node(&mut self, name: &str) {
        self.nodes.remove(name).unwrap().cancel();
    }

    fn start_farm(&mut self, id: &str, grace: Duration) {
        self.start_farm_on(self.store.clone(), id, grace);
    }

    /// A farm on its own view of the store (e.g. with faults).
    fn start_farm_on<T: Store>(&mut self, store: T, id: &str, grace: Duration) {
        let mut config = FarmConfig::new(id, self.keys.clone());
        config.lease = Duration::from_secs(2);
        config.lost_node_grace = grace;
        let farm = Farm::new(store, config);
        let stop = CancellationToken::new();
        let run = farm.run(stop.clone());
        self.tasks.push(tokio::spawn(async move {
            run.await.unwrap();
        }));
        self.farms.insert(id.to_owned(), stop);
    }

    /// Nodes holding intent for `pod`, in order.
    async fn intents(&self, pod: &str) -> Vec<String> {
        let listed = self
            .store
            .get(Get::prefix(self.keys.intent_prefix()))
            .await
            .unwrap();
        listed
            .kvs
            .iter()
            .filter_map(|kv| self.keys.parse_intent(&kv.key))
            .filter(|(_, p)| p.as_ref() == pod)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    async fn stop(mut self) {
        for (_, stop) in std::mem::take(&mut self.farms) {
            stop.cancel();
        }
        for (_, stop) in std::mem::take(&mut self.nodes) {
            stop.cancel();
        }
        for task in self.tasks.drain(..) {
            tokio::time::timeout(PATIENCE, task).await.unwrap().unwrap();
        }
    }
}

/// The shared poll-until helper, as a yes/no condition within [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    drover_store::testing::eventually(what, PATIENCE, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

fn web(replicas: u32, selector: &str) -> RcSpec {
    RcSpec::from_yaml(&format!(
        "id: web\nreplicas_desired: {replicas}\nnode_selector: '{selector}'\npod_labels: {{ tier: web }}\nplacement: {{ spread_by: zone }}\nmanifest:\n  id: web\n  launchables: {{ s: {{ type: process, command: /bin/sleep, args: ['1000'] }} }}\n"
    ))
    .unwrap()
}

async fn status_is<S: Store>(
    cluster: &Cluster<S>,
    id: &RcId,
    check: impl Fn(&drover_rc_farm::status::RcStatus) -> bool,
) -> bool {
    cluster
        .rcs()
        .status(id)
        .await
        .unwrap()
        .is_some_and(|s| check(&s))
}

async fn scales_up_and_down_and_deletes<S: Store>(store: S, keys: Keys) {
    let mut cluster = Cluster::new(store, keys);
    for (node, zone) in [
        ("n1", "a"),
        ("n2", "a"),
        ("n3", "b"),
        ("n4", "b"),
        ("n5", "c"),
    ] {
        cluster.start_node(node, zone);
    }
    cluster.start_farm("farm-1", Duration::from_secs(30));
    let rcs = cluster.rcs();
    let spec = web(2, "zone in (a,b)");
    rcs.create(&spec, "test").await.unwrap();
    eventually("2 healthy replicas", || {
        status_is(&cluster, &spec.id, |s| s.healthy == 2 && s.current == 2)
    })
    .await;
    let nodes = cluster.intents("web").await;
    assert_eq!(nodes.len(), 2);
    // Spread by zone: one in a, one in b; never n5 (zone c).
    assert!(nodes.iter().any(|n| n == "n1" || n == "n2"), "{nodes:?}");
    assert!(nodes.iter().any(|n| n == "n3" || n == "n4"), "{nodes:?}");
    // Pod labels name the RC.
    let labeler = Labeler::with_keys(cluster.store.clone(), cluster.keys.clone());
    for node in &nodes {
        let labels = labeler
            .get(LabelType::Pod, &format!("{node}/web"))
            .await
            .unwrap();
        assert_eq!(labels.get("replication_controller_id"), Some("web"));
        assert_eq!(labels.get("tier"), Some("web"));
    }

    rcs.scale(&spec.id, 4, "test").await.unwrap();
    eventually("4 healthy replicas", || {
        status_is(&cluster, &spec.id, |s| s.healthy == 4 && s.desired == 4)
    })
    .await;
    let mut nodes = cluster.intents("web").await;
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3", "n4"]);
    // Asking for more than the matching nodes: a shortfall, reported.
    rcs.scale(&spec.id, 5, "test").await.unwrap();
    eventually("a shortfall in the status", || {
        status_is(&cluster, &spec.id, |s| {
            s.condition("Scheduled").is_some_and(|c| !c.ok) && s.desired == 5
        })
    })
    .await;
    assert_eq!(cluster.intents("web").await.len(), 4);

    rcs.scale(&spec.id, 1, "test").await.unwrap();
    eventually("1 replica", || async {
        cluster.intents("web").await.len() == 1
    })
    .await;
    rcs.delete(&spec.id, true, "test").await.unwrap();
    eventually("the RC and its pods gone", || async {
        cluster.intents("web").await.is_empty() && rcs.get(&spec.id).await.unwrap().is_none()
    })
    .await;
    assert!(rcs.status(&spec.id).await.unwrap().is_none());
    let actions: Vec<AuditAction> = rcs
        .audit(Some(&spec.id), 1000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.action)
        .collect();
    for expected in [
        AuditAction::Create,
        AuditAction::Schedule,
        AuditAction::Scale,
        AuditAction::Unschedule,
        AuditAction::Delete,
        AuditAction::Deleted,
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    assert_eq!(actions.last(), Some(&AuditAction::Deleted));
    cluster.stop().await;
}

async fn replaces_lost_nodes_and_moves_off_ineligible_ones<S: Store>(store: S, keys: Keys) {
    let mut cluster = Cluster::new(store, keys);
    for (node, zone) in [("n1", "a"), ("n2", "a"), ("n3", "a")] {
        cluster.start_node(node, zone);
    }
    cluster.start_farm("farm-1", Duration::from_millis(500));
    let rcs = cluster.rcs();
    let spec = web(2, "zone=a");
    rcs.create(&spec, "test").await.unwrap();
    eventually("2 healthy", || {
        status_is(&cluster, &spec.id, |s| s.healthy == 2)
    })
    .await;
    let before = cluster.intents("web").await;

    // Lose a node: its pod is replaced on the free one after the grace.
    let lost = before[0].clone();
    cluster.stop_node(&lost);
    eventually("the lost node's pod replaced", || async {
        let now = cluster.intents("web").await;
        now.len() == 2 && !now.contains(&lost)
    })
    .await;
    eventually("2 healthy again", || {
        status_is(&cluster, &spec.id, |s| s.healthy == 2)
    })
    .await;

    // A node leaves the selector: a replacement comes first, the old pod
    // goes only once the replacement passes.
    cluster.start_node("n4", "a");
    let leaving = cluster.intents("web").await[0].clone();
    let labeler = Labeler::with_keys(cluster.store.clone(), cluster.keys.clone());
    labeler
        .set(LabelType::Node, &leaving, "zone", "b")
        .await
        .unwrap();
    eventually("moved off the relabelled node", || async {
        let now = cluster.intents("web").await;
        now.len() == 2 && !now.contains(&leaving)
    })
    .await;
    // From the store's history: when the old pod was unscheduled, its
    // replacement was already passing.
    let audit = cluster
        .store
        .get(Get::prefix(cluster.keys.audit_prefix()))
        .await
        .unwrap();
    let unscheduled = audit
        .kvs
        .iter()
        .find(|kv| {
            let record = drover_rc_farm::audit::AuditRecord::from_json(&kv.value).unwrap();
            record.action == AuditAction::Unschedule
                && record.after.as_ref().unwrap()["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n == leaving.as_str())
        })
        .expect("an unschedule of the relabelled node");
    let replacement = cluster
        .intents("web")
        .await
        .into_iter()
        .find(|n| !before.contains(n) || n == "n4")
        .unwrap();
    let health_then = cluster
        .store
        .get(
            Get::key(
                cluster
                    .keys
                    .health(&"web".parse().unwrap(), &replacement.parse().unwrap()),
            )
            .at_revision(unscheduled.mod_revision - 1),
        )
        .await
        .unwrap();
    let result = drover_health::HealthResult::from_json(&health_then.kvs[0].value).unwrap();
    assert_eq!(result.state, drover_health::HealthState::Passing);

    // Failsafe: when no node matches any more, nothing is removed.
    for node in ["n1", "n2", "n3", "n4"] {
        labeler
            .set(LabelType::Node, node, "zone", "z")
            .await
            .unwrap();
    }
    eventually("the status sees no eligible node", || {
        status_is(&cluster, &spec.id, |s| {
            s.condition("Scheduled").is_some_and(|c| !c.ok)
        })
    })
    .await;
    assert_eq!(cluster.intents("web").await.len(), 2);
    cluster.stop().await;
}

async fn bad_records_and_store_errors_change_nothing<S: Store>(store: S, keys: Keys) {
    let faulty = FaultyStore::new(store.clone());
    let mut cluster = Cluster::new(store, keys);
    cluster.start_node("n1", "a");
    cluster.start_node("n2", "a");
    // A record written around the API, without replicas_desired: never
    // managed, its status says why, and it does not stop the others.
    let bad_id: RcId = "bad".parse().unwrap();
    cluster
        .store
        .put(Put::new(
            cluster.keys.rc("bad").unwrap(),
            r#"{"id":"bad","manifest":"id: bad\nlaunchables: {s: {type: process, command: /bin/x}}\n","node_selector":""}"#,
        ))
        .await
        .unwrap();
    cluster.start_farm_on(faulty.clone(), "farm-1", Duration::from_secs(30));
    eventually("the bad record's status names the problem", || {
        status_is(&cluster, &bad_id, |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("replicas_desired"))
        })
    })
    .await;
    assert!(cluster.intents("bad").await.is_empty());

    // Store errors during reconciles: retried with backoff, nothing lands
    // while they last, and the RC converges once they stop.
    faulty.faults.fail_txns(5);
    let spec = web(2, "zone=a");
    cluster.rcs().create(&spec, "test").await.unwrap();
    eventually("2 healthy despite the failed txns", || {
        status_is(&cluster, &spec.id, |s| {
            s.healthy == 2 && s.last_error.is_none()
        })
    })
    .await;
    cluster.stop().await;
}

/// A farm that starts while no node record is readable (every agent gone,
/// or a store that lost them) keeps the pods it finds: with no live node
/// matching, nothing is removed, even past the lost-node grace.
async fn an_empty_node_listing_removes_nothing<S: Store>(store: S, keys: Keys) {
    let mut cluster = Cluster::new(store, keys);
    let spec = web(2, "zone=a");
    let rcs = cluster.rcs();
    rcs.create(&spec, "test").await.unwrap();
    // Two pods of the RC from an earlier farm, on nodes that are not there.
    let labeler = Labeler::with_keys(cluster.store.clone(), cluster.keys.clone());
    for node in ["n1", "n2"] {
        let node: NodeId = node.parse().unwrap();
        cluster
            .store
            .put(Put::new(
                cluster.keys.intent(&node, spec.manifest.id()),
                spec.manifest.raw_bytes().to_vec(),
            ))
            .await
            .unwrap();
        labeler
            .set(
                LabelType::Pod,
                &format!("{node}/web"),
                "replication_controller_id",
                "web",
            )
            .await
            .unwrap();
    }
    cluster.start_farm("farm-1", Duration::from_millis(100));
    eventually("the farm reports the RC", || {
        status_is(&cluster, &spec.id, |s| s.current == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut nodes = cluster.intents("web").await;
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"]);
    cluster.stop().await;
}

/// An updated manifest is written to every pod of the RC; an RC labelled
/// outside a farm's partition is left to another farm.
async fn updates_reach_the_pods_and_partitions_split_rcs<S: Store>(store: S, keys: Keys) {
    let mut cluster = Cluster::new(store, keys);
    for node in ["n1", "n2", "n3"] {
        cluster.start_node(node, "a");
    }
    // Partition "shop": RCs labelled team=shop only.
    let mut config = FarmConfig::new("farm-shop", cluster.keys.clone());
    config.lease = Duration::from_secs(2);
    config.partition = Some(("shop".to_owned(), "team=shop".parse().unwrap()));
    let stop = CancellationToken::new();
    let run = Farm::new(cluster.store.clone(), config).run(stop.clone());
    cluster
        .tasks
        .push(tokio::spawn(async move { run.await.unwrap() }));
    cluster.farms.insert("farm-shop".to_owned(), stop);

    let rcs = cluster.rcs();
    let mut shop = web(2, "zone=a");
    shop.labels = drover_labels::Labels::try_from_pairs([("team", "shop")]).unwrap();
    rcs.create(&shop, "test").await.unwrap();
    let mut blog = RcSpec::from_yaml(
        "id: blog\nlabels: { team: blog }\nreplicas_desired: 1\nnode_selector: ''\nmanifest:\n  id: blog\n  launchables: { s: { type: process, command: /bin/sleep, args: ['1000'] } }\n",
    )
    .unwrap();
    rcs.create(&blog, "test").await.unwrap();
    eventually("the shop RC healthy", || {
        status_is(&cluster, &shop.id, |s| s.healthy == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        cluster.intents("blog").await.is_empty(),
        "not this farm's partition"
    );
    assert!(cluster.rcs().status(&blog.id).await.unwrap().is_none());

    // An updated manifest reaches both pods, and they run it.
    let mut updated = shop.clone();
    updated.manifest = drover_manifest::Manifest::from_yaml(
        "id: web\nlaunchables: { s: { type: process, command: /bin/sleep, args: ['2000'] } }\n",
    )
    .unwrap();
    rcs.update(&updated, None, "test").await.unwrap();
    eventually("both pods run the new manifest", || async {
        let realities =
            drover_manifest::RealityStore::with_keys(cluster.store.clone(), cluster.keys.clone());
        let mut running = 0;
        for node in cluster.intents("web").await {
            if realities
                .get(&node.parse().unwrap(), updated.manifest.id())
                .await
                .unwrap()
                .is_some_and(|r| r.sha == updated.manifest.sha())
            {
                running += 1;
            }
        }
        running == 2
    })
    .await;
    eventually("healthy on the new manifest", || {
        status_is(&cluster, &shop.id, |s| s.healthy == 2)
    })
    .await;
    let audit = rcs.audit(Some(&shop.id), 100).await.unwrap();
    assert!(
        audit.iter().any(|r| r.action == AuditAction::Replace),
        "{audit:?}"
    );

    // The other partition's farm takes the blog RC.
    blog.replicas_desired = 1;
    let mut config = FarmConfig::new("farm-blog", cluster.keys.clone());
    config.lease = Duration::from_secs(2);
    config.partition = Some(("blog".to_owned(), "team=blog".parse().unwrap()));
    let stop = CancellationToken::new();
    let run = Farm::new(cluster.store.clone(), config).run(stop.clone());
    cluster
        .tasks
        .push(tokio::spawn(async move { run.await.unwrap() }));
    cluster.farms.insert("farm-blog".to_owned(), stop);
    eventually("the blog RC placed by its farm", || {
        status_is(&cluster, &blog.id, |s| {
            s.healthy == 1 && s.owner == "farm-blog"
        })
    })
    .await;
    cluster.stop().await;
}

on_both_backends!(
    updates_reach_the_pods_and_partitions_split_rcs,
    scales_up_and_down_and_deletes,
    replaces_lost_nodes_and_moves_off_ineligible_ones,
    bad_records_and_store_errors_change_nothing,
    an_empty_node_listing_removes_nothing,
);
