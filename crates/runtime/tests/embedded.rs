//! End to end on the embedded store: real reflector events drive
//! reconciles. RCs (`rcs/<id>`, value: a zone) are reconciled against
//! nodes (`nodes/<id>`, value: the node's zone); a node moving between zones
//! must trigger exactly the RCs of the zones it left and entered.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use drover_runtime::{Action, Context, Controller, Reconciler};
use drover_store::embedded::EmbeddedStore;
use drover_store::keys::Keys;
use drover_store::reflector::{Cache, Codec, Reflector, ReflectorEvent};
use drover_store::{Delete, KeyValue, Put, Store};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// `rcs/<id>` or `nodes/<id>` -> (id, zone).
struct Zoned {
    keys: Keys,
    rcs: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a key of this type")]
struct NotOurs(String);

impl Codec for Zoned {
    type Id = String;
    type Value = String;
    type Error = NotOurs;

    fn id(&self, key: &[u8]) -> Result<String, NotOurs> {
        let id = if self.rcs {
            self.keys.parse_rc(key).map(str::to_owned)
        } else {
            self.keys.parse_node(key).map(String::from)
        };
        id.ok_or_else(|| NotOurs(String::from_utf8_lossy(key).into_owned()))
    }

    fn decode(&self, kv: &KeyValue) -> Result<(String, String), NotOurs> {
        Ok((
            self.id(&kv.key)?,
            String::from_utf8_lossy(&kv.value).into_owned(),
        ))
    }
}

/// Records, per RC, how many nodes its zone had when it was reconciled.
struct CountNodes {
    rcs: Cache<String, String>,
    nodes: Cache<String, String>,
    seen: Arc<Mutex<Vec<(String, usize)>>>,
}

impl Reconciler<EmbeddedStore> for CountNodes {
    type Key = String;
    type Error = Infallible;

    async fn reconcile(
        &self,
        rc: &String,
        _ctx: &Context<EmbeddedStore>,
    ) -> Result<Action, Infallible> {
        assert!(
            self.rcs.is_ready() && self.nodes.is_ready(),
            "ran before the caches were ready"
        );
        let Some(zone) = self.rcs.get(rc) else {
            return Ok(Action::Done); // deleted: nothing to do
        };
        let count = self
            .nodes
            .snapshot()
            .values()
            .filter(|z| **z == zone)
            .count();
        self.seen.lock().push((rc.clone(), count));
        Ok(Action::Done)
    }
}

/// RCs in any of `zones`, from the RC cache.
fn rcs_in(rcs: &Cache<String, String>, zones: &[&String]) -> Vec<String> {
    rcs.snapshot()
        .into_iter()
        .filter(|(_, zone)| zones.contains(&zone))
        .map(|(id, _)| id)
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(start_paused = true)]
async fn node_events_reconcile_the_rcs_they_concern() {
    let store = EmbeddedStore::in_memory();
    let keys = Keys::new(drover_store::testing::unique_prefix("runtime-e2e")).unwrap();
    let put = |key: String, zone: &str| {
        let store = store.clone();
        let zone = zone.to_owned();
        async move { store.put(Put::new(key, zone)).await.unwrap() }
    };
    put(keys.rc("web").unwrap(), "a").await;
    put(keys.rc("db").unwrap(), "b").await;
    put(keys.node(&"n1".parse().unwrap()), "a").await;
    put(keys.node(&"n2".parse().unwrap()), "a").await;
    put(keys.node(&"n3".parse().unwrap()), "b").await;

    let rcs = Reflector::prefix(
        store.clone(),
        keys.rcs_prefix(),
        Zoned {
            keys: keys.clone(),
            rcs: true,
        },
    );
    let nodes = Reflector::prefix(
        store.clone(),
        keys.nodes_prefix(),
        Zoned {
            keys: keys.clone(),
            rcs: false,
        },
    );
    let (rc_cache, node_cache) = (rcs.cache(), nodes.cache());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reconciler = CountNodes {
        rcs: rc_cache.clone(),
        nodes: node_cache.clone(),
        seen: seen.clone(),
    };
    let registry = drover_metrics::MetricsRegistry::new();
    let rc_lookup = rc_cache.clone();
    let controller = Controller::new("zones", store.clone(), reconciler)
        .concurrency(2)
        .metrics(&registry)
        .watch(rcs, |event: &ReflectorEvent<String, String>| match event {
            ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
                objects.keys().cloned().collect()
            }
            ReflectorEvent::Applied { id, .. } | ReflectorEvent::Deleted { id, .. } => {
                vec![id.clone()]
            }
        })
        .watch(
            nodes,
            move |event: &ReflectorEvent<String, String>| match event {
                ReflectorEvent::Initial { .. } | ReflectorEvent::Restarted { .. } => {
                    rc_lookup.ids()
                }
                ReflectorEvent::Applied { object, prev, .. } => {
                    let mut zones = vec![object];
                    zones.extend(prev.as_ref());
                    rcs_in(&rc_lookup, &zones)
                }
                ReflectorEvent::Deleted { last, .. } => {
                    rcs_in(&rc_lookup, &last.iter().collect::<Vec<_>>())
                }
            },
        );
    let metrics = controller.metrics_handle();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(controller.run(shutdown.clone()));

    let latest = || -> BTreeMap<String, usize> { seen.lock().iter().cloned().collect() };
    eventually("both RCs reconciled", || {
        latest() == BTreeMap::from([("web".to_owned(), 2), ("db".to_owned(), 1)])
    })
    .await;

    // n2 moves from zone a to zone b: both RCs are reconciled again.
    let before = seen.lock().len();
    put(keys.node(&"n2".parse().unwrap()), "b").await;
    eventually("the move reconciled both zones", || {
        latest() == BTreeMap::from([("web".to_owned(), 1), ("db".to_owned(), 2)])
    })
    .await;
    let after_move: Vec<String> = seen.lock()[before..]
        .iter()
        .map(|(rc, _)| rc.clone())
        .collect();
    assert!(after_move.contains(&"web".to_owned()) && after_move.contains(&"db".to_owned()));

    // n3 (zone b) goes away: only db is concerned.
    let before = seen.lock().len();
    store
        .delete(Delete::key(keys.node(&"n3".parse().unwrap())))
        .await
        .unwrap();
    eventually("the deletion reconciled db", || {
        latest().get("db") == Some(&1)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_delete: Vec<String> = seen.lock()[before..]
        .iter()
        .map(|(rc, _)| rc.clone())
        .collect();
    assert_eq!(after_delete, ["db"], "web is not in zone b");

    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(metrics.reconciles("zones", true), seen.lock().len() as u64);
    let scrape = registry.encode().unwrap();
    assert!(
        scrape.contains(r#"drover_runtime_reconciles_total{controller="zones",result="ok"}"#),
        "{scrape}"
    );
}
