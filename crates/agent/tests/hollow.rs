//! Hollow nodes' launch delay, on the embedded store with paused tokio
//! time: what the store shows while a pretend pod launches, and after.

use std::time::Duration;

use drover_agent::AgentConfig;
use drover_agent::hollow::HollowNodes;
use drover_health::{HealthState, HealthStore};
use drover_ids::NodeId;
use drover_manifest::{IntentStore, LaunchStatus, Manifest, RealityStore};
use drover_store::embedded::EmbeddedStore;
use drover_store::keys::Keys;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every wait is bounded by this much (paused) time.
const PATIENCE: Duration = Duration::from_secs(600);
/// Shorter than the default probe's failure threshold (3 periods of 1 s), so
/// a launching pod is reported nothing, never critical.
const LAUNCH_DELAY: Duration = Duration::from_secs(2);

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    drover_store::testing::eventually(what, PATIENCE, check).await
}

struct Hollow {
    store: EmbeddedStore,
    keys: Keys,
    shutdown: CancellationToken,
    task: JoinHandle<drover_agent::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Hollow {
    /// `count` hollow nodes `<prefix>-<i>` whose pods launch in `delay`,
    /// registered.
    async fn start(prefix: &str, count: usize, delay: Duration) -> Hollow {
        let store = EmbeddedStore::in_memory();
        let keys = Keys::default();
        let dir = tempfile::tempdir().unwrap();
        let base = AgentConfig::new(format!("{prefix}-0").parse().unwrap(), dir.path());
        let shutdown = CancellationToken::new();
        let nodes = HollowNodes {
            prefix: prefix.to_owned(),
            count,
            launch_delay: delay,
        };
        let task = tokio::spawn(nodes.run(store.clone(), base, shutdown.clone()));
        eventually("every node registered", || async {
            let registered = drover_store::testing::count_under(&store, &keys.nodes_prefix()).await;
            (registered == count as i64).then_some(())
        })
        .await;
        Hollow {
            store,
            keys,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn health(&self, node: &NodeId, pod: &str) -> Option<HealthState> {
        HealthStore::with_keys(self.store.clone(), self.keys.clone())
            .node_health(pod, node.as_str())
            .await
            .unwrap()
            .map(|r| r.state)
    }

    async fn launched(&self, node: &NodeId, pod: &Manifest) -> bool {
        RealityStore::with_keys(self.store.clone(), self.keys.clone())
            .get(node, pod.id())
            .await
            .unwrap()
            .is_some_and(|r| r.sha == pod.sha() && r.status == LaunchStatus::Launched)
    }

    fn intents(&self) -> IntentStore<EmbeddedStore> {
        IntentStore::with_keys(self.store.clone(), self.keys.clone())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn pretend_pod() -> Manifest {
    Manifest::builder("pretend")
        .process("main", ["/nonexistent/program"])
        .build()
        .unwrap()
}

/// A pod placed on a hollow node is launched at once but runs, and so
/// passes, only once the launch delay has passed; it is never reported
/// critical meanwhile.
#[tokio::test(start_paused = true)]
async fn a_hollow_pod_passes_only_after_its_launch_delay() {
    let hollow = Hollow::start("delayed", 3, LAUNCH_DELAY).await;
    let node: NodeId = "delayed-1".parse().unwrap();
    let pod = pretend_pod();
    let placed = Instant::now();
    hollow.intents().put(&node, pod.id(), &pod).await.unwrap();

    let first = eventually("a health result", || async {
        hollow.health(&node, "pretend").await
    })
    .await;
    assert_eq!(first, HealthState::Passing, "critical while launching");
    assert!(
        placed.elapsed() >= LAUNCH_DELAY,
        "passing {:?} after the intent, before the {LAUNCH_DELAY:?} launch delay",
        placed.elapsed()
    );
    assert!(hollow.launched(&node, &pod).await);

    hollow.intents().delete(&node, pod.id()).await.unwrap();
    eventually("health removed", || async {
        hollow
            .health(&node, "pretend")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    hollow.stop().await;
}

/// A pod whose intent is deleted while it launches is stopped then and
/// there: its reality goes and no health result is ever written.
#[tokio::test(start_paused = true)]
async fn a_hollow_pod_deleted_while_launching_never_runs() {
    let delay = Duration::from_secs(3600);
    let hollow = Hollow::start("slow", 1, delay).await;
    let node: NodeId = "slow-0".parse().unwrap();
    let pod = pretend_pod();
    let placed = Instant::now();
    hollow.intents().put(&node, pod.id(), &pod).await.unwrap();
    eventually("reality launched", || async {
        hollow.launched(&node, &pod).await.then_some(())
    })
    .await;

    hollow.intents().delete(&node, pod.id()).await.unwrap();
    eventually("reality removed", || async {
        let reality = RealityStore::with_keys(hollow.store.clone(), hollow.keys.clone())
            .get(&node, pod.id())
            .await
            .unwrap();
        reality.is_none().then_some(())
    })
    .await;
    assert!(
        placed.elapsed() < delay,
        "the stop waited for the launch delay"
    );
    // The launch delay passes: nothing starts, nothing is reported.
    tokio::time::sleep(delay).await;
    assert_eq!(hollow.health(&node, "pretend").await, None);
    hollow.stop().await;
}
