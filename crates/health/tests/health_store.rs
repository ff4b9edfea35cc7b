//! The store-backed health reader and writer, against the embedded store and
//! (when `DROVER_ETCD_ENDPOINTS` is set) a real etcd.
#![cfg(feature = "store")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use HealthState::*;
use drover_health::{
    HealthChange, HealthError, HealthResult, HealthState, HealthStore, HealthWatch,
};
use drover_store::embedded::EmbeddedStore;
use drover_store::keys::Keys;
use drover_store::testing::count_under;
use drover_store::{Delete, Get, LeaseId, Put, Store, StoreError};

/// Generous bound on one awaited event; only catches hangs.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn r(pod: &str, node: &str, state: HealthState, t: u64) -> HealthResult {
    HealthResult::new(pod, node, state, format!("{state} at {t}"), at(t)).unwrap()
}

/// The key of `pod`'s health on `node`.
fn health_key(keys: &Keys, pod: &str, node: &str) -> String {
    keys.health(&pod.parse().unwrap(), &node.parse().unwrap())
}

/// Writes `result` (an agent's report) under `lease` (0 = none).
async fn put<S: Store>(health: &HealthStore<S>, result: HealthResult, lease: LeaseId) {
    health.put_health(&result, lease).await.unwrap();
}

async fn next_change<S: Store>(w: &mut HealthWatch<S>) -> HealthChange {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("a health change in time")
        .expect("a health change, not an error")
}

async fn next_error<S: Store>(w: &mut HealthWatch<S>) -> HealthError {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("a watch error in time")
        .expect_err("an error, not a change")
}

// ---------------------------------------------------------------- scenarios

async fn put_and_read<S: Store>(store: S, keys: Keys) {
    let health = HealthStore::with_keys(store.clone(), keys.clone());
    put(&health, r("web", "n1", Passing, 1), 0).await;
    put(&health, r("web", "n2", Critical, 1), 0).await;
    put(&health, r("web2", "n1", Warning, 1), 0).await;

    let key = health_key(&keys, "web", "n1");
    let raw = store.get(Get::key(key.as_str())).await.unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&raw.kvs[0].value).unwrap();
    assert_eq!(stored["state"], "passing");
    assert_eq!(stored["node"], "n1");
    assert_eq!(stored["observed_at"], "2023-11-14T22:13:21.000000000Z");

    assert_eq!(
        health.node_health("web", "n1").await.unwrap(),
        Some(r("web", "n1", Passing, 1))
    );
    assert_eq!(health.node_health("web", "n3").await.unwrap(), None);
    assert_eq!(health.node_state("web", "n2").await.unwrap(), Critical);
    assert_eq!(health.node_state("web", "n3").await.unwrap(), Unknown);

    let snap = health.pod_health("web").await.unwrap();
    assert!(snap.revision > 0);
    // "web2" shares a prefix with "web" but is another pod.
    assert_eq!(
        snap.health.results().keys().collect::<Vec<_>>(),
        ["n1", "n2"]
    );
    let mut h = snap.health;
    h.expect_nodes(["n1", "n2", "n3"]).unwrap();
    let c = h.counts();
    assert_eq!((c.passing, c.critical, c.unknown, c.missing), (1, 1, 1, 1));
    assert!(h.meets_minimum(Warning, 1) && !h.meets_minimum(Warning, 2));

    // Overwrite, then remove.
    put(&health, r("web", "n2", Passing, 2), 0).await;
    assert_eq!(health.node_state("web", "n2").await.unwrap(), Passing);
    assert!(health.remove_health("web", "n2").await.unwrap());
    assert!(!health.remove_health("web", "n2").await.unwrap());
    assert_eq!(health.node_state("web", "n2").await.unwrap(), Unknown);
}

async fn results_live_and_die_with_the_lease<S: Store>(store: S, keys: Keys) {
    let health = HealthStore::with_keys(store.clone(), keys.clone());
    let lease = store.lease_grant(30).await.unwrap().id;
    put(&health, r("web", "n1", Passing, 1), lease).await;
    let key = health_key(&keys, "web", "n1");
    assert_eq!(
        store.get(Get::key(key.as_str())).await.unwrap().kvs[0].lease,
        lease
    );
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(health.node_state("web", "n1").await.unwrap(), Unknown);
    // A write under a dead lease fails and writes nothing.
    let err = health
        .put_health(&r("web", "n1", Passing, 2), lease)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HealthError::Store { source: StoreError::LeaseNotFound(id), .. } if id == lease),
        "{err:?}"
    );
    assert_eq!(count_under(&store, keys.prefix()).await, 0);
}

async fn bad_input_changes_nothing<S: Store>(store: S, keys: Keys) {
    let health = HealthStore::with_keys(store.clone(), keys.clone());
    // Results carry typed ids: one with a bad id cannot be made, so it
    // cannot be written.
    assert!(matches!(
        HealthResult::new("a/b", "n1", Passing, "", at(1)),
        Err(HealthError::InvalidId { field: "pod", ref id, .. }) if id == "a/b"
    ));
    assert!(matches!(
        HealthResult::new("web", "", Passing, "", at(1)),
        Err(HealthError::InvalidId { field: "node", .. })
    ));
    let mut bad_time = r("web", "n1", Passing, 1);
    bad_time.observed_at = UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(
        health.put_health(&bad_time, 0).await,
        Err(HealthError::TimestampOutOfRange)
    ));
    assert!(matches!(
        health.pod_health("").await,
        Err(HealthError::InvalidId { field: "pod", .. })
    ));
    assert!(matches!(
        health.node_health("web", "n 1").await,
        Err(HealthError::InvalidId { field: "node", .. })
    ));
    assert!(matches!(
        health.remove_health("we/b", "n1").await,
        Err(HealthError::InvalidId { field: "pod", .. })
    ));
    assert!(matches!(
        health.watch_pod(".."),
        Err(HealthError::InvalidId { field: "pod", .. })
    ));
    assert_eq!(
        count_under(&store, keys.prefix()).await,
        0,
        "nothing was written"
    );
}

async fn corrupt_records_are_errors<S: Store>(store: S, keys: Keys) {
    let health = HealthStore::with_keys(store.clone(), keys.clone());
    let other_node = r("web", "n9", Passing, 1).to_json().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("garbage", b"garbage"),
        ("bad-state", br#"{"pod":"web","node":"bad-state","state":"fine","observed_at":"2023-11-14T22:13:20Z"}"#),
        ("bad-id", br#"{"pod":"web","node":"Bad_Id","state":"passing","observed_at":"2023-11-14T22:13:20Z"}"#),
        ("misplaced", &other_node),
    ];
    for (node, value) in cases {
        let key = health_key(&keys, "web", node);
        store.put(Put::new(key.as_str(), value)).await.unwrap();
        assert!(
            matches!(health.node_health("web", node).await, Err(HealthError::Corrupt { key: ref k, .. }) if *k == key),
            "{node}"
        );
        assert!(matches!(
            health.node_state("web", node).await,
            Err(HealthError::Corrupt { .. })
        ));
        assert!(matches!(
            health.pod_health("web").await,
            Err(HealthError::Corrupt { .. })
        ));
        store.delete(Delete::key(key.as_str())).await.unwrap();
    }
    assert!(
        health
            .pod_health("web")
            .await
            .unwrap()
            .health
            .results()
            .is_empty()
    );

    // A watch whose first listing holds a corrupt record reports it, and
    // lists again on the next call.
    let bad = health_key(&keys, "web", "n2");
    store.put(Put::new(bad.as_str(), "{")).await.unwrap();
    put(&health, r("web", "n1", Passing, 1), 0).await;
    let mut w = health.watch_pod("web").unwrap();
    let err = next_error(&mut w).await;
    assert!(
        matches!(err, HealthError::Corrupt { ref key, .. } if *key == bad),
        "{err:?}"
    );
    assert!(w.current().results().is_empty(), "nothing reported yet");
    store.delete(Delete::key(bad.as_str())).await.unwrap();
    match next_change(&mut w).await {
        HealthChange::Initial { health, .. } => {
            assert_eq!(health.results().keys().collect::<Vec<_>>(), ["n1"]);
        }
        other => panic!("{other:?}"),
    }
}

async fn watch_follows_changes<S: Store>(store: S, keys: Keys) {
    let health = HealthStore::with_keys(store.clone(), keys.clone());
    put(&health, r("web", "n1", Passing, 1), 0).await;
    let mut w = health.watch_pod("web").unwrap();
    w.expect_nodes(["n1", "n2", "n3"]).unwrap();
    match next_change(&mut w).await {
        HealthChange::Initial { revision, health } => {
            assert!(revision > 0);
            assert_eq!(health.results().len(), 1);
            assert_eq!(health.state("n1"), Passing);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.current().counts().missing, 2);

    let lease = store.lease_grant(30).await.unwrap().id;
    put(&health, r("web", "n2", Critical, 2), lease).await;
    assert!(
        matches!(next_change(&mut w).await, HealthChange::Updated { ref result, .. } if result.node == "n2" && result.state == Critical)
    );
    // An identical rewrite is not a change; another pod is not watched.
    put(&health, r("web", "n2", Critical, 2), lease).await;
    put(&health, r("web2", "n3", Critical, 2), 0).await;
    put(&health, r("web", "n3", Warning, 3), 0).await;
    assert!(
        matches!(next_change(&mut w).await, HealthChange::Updated { ref result, .. } if result.node == "n3")
    );
    assert_eq!(w.current().healthy_count(Warning), 2);

    // The node's lease ends: its result disappears and it reads as missing.
    store.lease_revoke(lease).await.unwrap();
    assert!(
        matches!(next_change(&mut w).await, HealthChange::Removed { ref node, .. } if node == "n2")
    );
    assert_eq!(w.current().state("n2"), Unknown);
    assert_eq!(w.current().counts().missing, 1);

    // A corrupt record is reported and the watch goes on.
    let bad = health_key(&keys, "web", "n4");
    store.put(Put::new(bad.as_str(), "{")).await.unwrap();
    let err = next_error(&mut w).await;
    assert!(
        matches!(err, HealthError::Corrupt { ref key, .. } if *key == bad),
        "{err:?}"
    );
    health.remove_health("web", "n1").await.unwrap();
    assert!(
        matches!(next_change(&mut w).await, HealthChange::Removed { ref node, .. } if node == "n1")
    );
}

/// Compacting a shared etcd would break other tests' reads, so this runs on
/// the embedded store only.
#[tokio::test]
async fn embedded_watch_relists_after_compaction() {
    let store = EmbeddedStore::in_memory();
    let health = HealthStore::new(store.clone());
    put(&health, r("web", "n1", Passing, 1), 0).await;
    put(&health, r("web", "n2", Passing, 1), 0).await;
    let mut w = health.watch_pod("web").unwrap();
    assert!(matches!(
        next_change(&mut w).await,
        HealthChange::Initial { .. }
    ));
    // The watch starts on the next call; the history before it goes away.
    health.remove_health("web", "n1").await.unwrap();
    put(&health, r("web", "n2", Critical, 2), 0).await;
    put(&health, r("web", "n3", Warning, 2), 0).await;
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();
    let mut summary = Vec::new();
    for _ in 0..3 {
        summary.push(match next_change(&mut w).await {
            HealthChange::Removed { node, revision } => {
                ("removed", node.into_string(), None, revision)
            }
            HealthChange::Updated { result, revision } => (
                "updated",
                result.node.into_string(),
                Some(result.state),
                revision,
            ),
            HealthChange::Initial { .. } => panic!("one Initial only"),
        });
    }
    assert_eq!(
        summary,
        [
            ("removed", "n1".to_owned(), None, rev),
            ("updated", "n2".to_owned(), Some(Critical), rev),
            ("updated", "n3".to_owned(), Some(Warning), rev),
        ]
    );
    put(&health, r("web", "n1", Passing, 3), 0).await;
    assert!(
        matches!(next_change(&mut w).await, HealthChange::Updated { ref result, .. } if result.node == "n1")
    );
    let c = w.current().counts();
    assert_eq!((c.passing, c.warning, c.critical), (1, 1, 1));
}

#[tokio::test]
async fn embedded_store_failures_are_errors_not_missing() {
    let store = EmbeddedStore::in_memory();
    let health = HealthStore::new(store.clone());
    put(&health, r("web", "n1", Passing, 1), 0).await;
    store.close().await.unwrap();
    assert!(matches!(
        health.node_state("web", "n1").await,
        Err(HealthError::Store {
            source: StoreError::Closed,
            ..
        })
    ));
    assert!(matches!(
        health.pod_health("web").await,
        Err(HealthError::Store { .. })
    ));
    assert!(matches!(
        health.put_health(&r("web", "n1", Critical, 2), 0).await,
        Err(HealthError::Store { .. })
    ));
    let mut w = health.watch_pod("web").unwrap();
    assert!(matches!(w.next().await, Err(HealthError::Store { .. })));
}

// ------------------------------------------------------------ test wiring

drover_store_etcd::on_both_backends!(
    put_and_read,
    results_live_and_die_with_the_lease,
    bad_input_changes_nothing,
    corrupt_records_are_errors,
    watch_follows_changes,
);
