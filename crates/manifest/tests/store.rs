//! Intent and reality in the store, against the embedded store and (when
//! `DROVER_ETCD_ENDPOINTS` is set) a real etcd.
#![cfg(feature = "store")]

use std::time::Duration;

use drover_ids::{NodeId, PodId};
use drover_manifest::{
    IntentStore, LaunchStatus, Manifest, ManifestError, PodCodec, PodRecord, PodStore, Reality,
    RealityStore,
};
use drover_store::embedded::EmbeddedStore;
use drover_store::fence::Fence;
use drover_store::keys::Keys;
use drover_store::reflector::{Reflector, ReflectorError, ReflectorEvent};
use drover_store::testing::{count_under, value_at};
use drover_store::{Delete, Put, Store, StoreError, Txn};

/// Generous bound on one awaited event; only catches hangs.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn node(id: &str) -> NodeId {
    id.parse().unwrap()
}

fn pod(id: &str) -> PodId {
    id.parse().unwrap()
}

/// A manifest of pod `id`; `arg` tells versions apart (another SHA).
fn manifest(id: &str, arg: &str) -> Manifest {
    Manifest::builder(id)
        .process("main", ["/bin/run", arg])
        .build()
        .unwrap()
}

type Event<R> = ReflectorEvent<(NodeId, PodId), R>;

async fn next_event<S: Store, R: PodRecord>(r: &mut Reflector<S, PodCodec<R>>) -> Event<R> {
    tokio::time::timeout(HANG_GUARD, r.next())
        .await
        .expect("an event in time")
        .expect("an event, not an error")
}

async fn next_error<S: Store, R: PodRecord>(
    r: &mut Reflector<S, PodCodec<R>>,
) -> ReflectorError<ManifestError> {
    tokio::time::timeout(HANG_GUARD, r.next())
        .await
        .expect("an error in time")
        .expect_err("an error, not an event")
}

// ---------------------------------------------------------------- scenarios

async fn intents_are_written_read_listed_and_deleted<S: Store>(store: S, keys: Keys) {
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let (n1, n2, n10) = (node("n1"), node("n2"), node("n10"));
    let (web, db) = (manifest("web", "v1"), manifest("db", "v1"));
    for (n, m) in [(&n1, &web), (&n1, &db), (&n2, &web), (&n10, &web)] {
        intents.put(n, m.id(), m).await.unwrap();
    }

    // Stored as the manifest's bytes, as given.
    let key = keys.intent(&n1, web.id());
    assert_eq!(intents.key(&n1, web.id()), key);
    assert_eq!(
        value_at(&store, &key).await.as_deref(),
        Some(web.raw_bytes())
    );
    let got = intents.get(&n1, web.id()).await.unwrap().unwrap();
    assert_eq!(got, web);
    assert_eq!(got.raw_bytes(), web.raw_bytes());
    assert_eq!(intents.get(&n2, db.id()).await.unwrap(), None);

    // n1's intents, and not n10's (a node prefix is not a string prefix).
    let listing = intents.list_node(&n1).await.unwrap();
    assert!(listing.revision > 0);
    assert_eq!(
        listing.records.keys().cloned().collect::<Vec<_>>(),
        [(n1.clone(), pod("db")), (n1.clone(), pod("web"))]
    );
    assert_eq!(listing.records[&(n1.clone(), pod("db"))], db);
    let all = intents.list().await.unwrap();
    assert_eq!(all.records.len(), 4);
    assert_eq!(all.records[&(n10.clone(), pod("web"))], web);

    // Rewrite, then delete.
    let v2 = manifest("web", "v2");
    intents.put(&n1, v2.id(), &v2).await.unwrap();
    assert_eq!(
        intents.get(&n1, web.id()).await.unwrap().unwrap().sha(),
        v2.sha()
    );
    assert!(intents.delete(&n1, web.id()).await.unwrap());
    assert!(!intents.delete(&n1, web.id()).await.unwrap());
    assert_eq!(intents.get(&n1, web.id()).await.unwrap(), None);
    assert_eq!(intents.list_node(&n1).await.unwrap().records.len(), 1);
}

async fn realities_are_written_read_listed_and_deleted<S: Store>(store: S, keys: Keys) {
    let realities = RealityStore::with_keys(store.clone(), keys.clone());
    let (n1, n2) = (node("n1"), node("n2"));
    let (v1, v2) = (manifest("web", "v1"), manifest("web", "v2"));
    realities
        .put(&n1, v1.id(), &Reality::launched(&v1))
        .await
        .unwrap();
    realities
        .put(&n2, v1.id(), &Reality::failed(&v1))
        .await
        .unwrap();

    let key = keys.reality(&n1, v1.id());
    let stored: serde_json::Value =
        serde_json::from_slice(&value_at(&store, &key).await.unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"sha": v1.sha().to_string(), "status": "launched"})
    );

    let on_n1 = realities.get(&n1, v1.id()).await.unwrap().unwrap();
    assert!(on_n1.runs(&v1) && !on_n1.runs(&v2));
    let on_n2 = realities.get(&n2, v1.id()).await.unwrap().unwrap();
    assert_eq!(on_n2.status, LaunchStatus::Failed);
    assert!(!on_n2.runs(&v1));
    assert_eq!(realities.get(&n1, &pod("db")).await.unwrap(), None);

    let all = realities.list().await.unwrap();
    assert_eq!(
        all.records,
        [
            ((n1.clone(), pod("web")), Reality::launched(&v1)),
            ((n2.clone(), pod("web")), Reality::failed(&v1)),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(realities.list_node(&n2).await.unwrap().records.len(), 1);
    assert!(realities.delete(&n2, v1.id()).await.unwrap());
    assert!(realities.list_node(&n2).await.unwrap().records.is_empty());
}

async fn bad_input_changes_nothing<S: Store>(store: S, keys: Keys) {
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let web = manifest("web", "v1");
    // A manifest can only be its own pod's intent.
    let err = intents
        .put(&node("n1"), &pod("db"), &web)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManifestError::PodMismatch { ref pod, ref manifest } if pod == "db" && manifest == "web"),
        "{err:?}"
    );
    assert!(matches!(
        intents.put_op(&node("n1"), &pod("db"), &web),
        Err(ManifestError::PodMismatch { .. })
    ));
    // Ids outside the grammar cannot be made, so cannot name a record.
    assert_eq!(NodeId::new("N1").unwrap_err().field, "node");
    assert_eq!(PodId::new("we/b").unwrap_err().field, "pod");
    assert_eq!(
        count_under(&store, keys.prefix()).await,
        0,
        "nothing was written"
    );
}

async fn corrupt_records_are_errors_naming_the_key<S: Store>(store: S, keys: Keys) {
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let realities = RealityStore::with_keys(store.clone(), keys.clone());
    let n1 = node("n1");
    let db = manifest("db", "v1");
    let intent_cases: [(&str, &[u8]); 3] = [
        ("garbage", b": : not yaml ["),
        ("invalid", b"id: invalid\nlaunchables: {}\n"),
        ("misplaced", db.raw_bytes()),
    ];
    for (id, value) in intent_cases {
        let key = keys.intent(&n1, &pod(id));
        store.put(Put::new(key.as_str(), value)).await.unwrap();
        let err = intents.get(&n1, &pod(id)).await.unwrap_err();
        assert!(
            matches!(err, ManifestError::Corrupt { key: ref k, .. } if *k == key),
            "{id}: {err:?}"
        );
        if id == "misplaced" {
            assert!(err.to_string().contains("manifest of pod db"), "{err}");
        }
        assert!(matches!(
            intents.list_node(&n1).await,
            Err(ManifestError::Corrupt { key: ref k, .. }) if *k == key
        ));
        store.delete(Delete::key(key.as_str())).await.unwrap();
    }
    let sha = db.sha();
    let reality_cases = [
        ("garbage", "{".to_owned()),
        ("bad-sha", r#"{"sha":"00","status":"launched"}"#.to_owned()),
        ("bad-status", format!(r#"{{"sha":"{sha}","status":"up"}}"#)),
    ];
    for (id, value) in reality_cases {
        let key = keys.reality(&n1, &pod(id));
        store.put(Put::new(key.as_str(), value)).await.unwrap();
        assert!(matches!(
            realities.get(&n1, &pod(id)).await,
            Err(ManifestError::Corrupt { key: ref k, .. }) if *k == key
        ));
        assert!(matches!(
            realities.list().await,
            Err(ManifestError::Corrupt { key: ref k, .. }) if *k == key
        ));
        store.delete(Delete::key(key.as_str())).await.unwrap();
    }

    // A key whose node segment is not an id is not one of the layout.
    let stray = format!("{}Node_1/web", keys.intent_prefix());
    store
        .put(Put::new(stray.as_str(), db.raw_bytes()))
        .await
        .unwrap();
    let err = intents.list().await.unwrap_err();
    assert!(
        matches!(err, ManifestError::Corrupt { ref key, ref reason } if *key == stray && reason.contains("not a key of the layout's intent section")),
        "{err:?}"
    );
    store.delete(Delete::key(stray.as_str())).await.unwrap();
    assert!(intents.list().await.unwrap().records.is_empty());
    assert!(realities.list().await.unwrap().records.is_empty());
}

async fn a_node_reflector_follows_its_intents<S: Store>(store: S, keys: Keys) {
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let (n1, n2) = (node("n1"), node("n2"));
    let web = manifest("web", "v1");
    intents.put(&n1, web.id(), &web).await.unwrap();
    let mut reflector = intents.node_reflector(&n1);
    let cache = reflector.cache();
    match next_event(&mut reflector).await {
        ReflectorEvent::Initial { objects, revision } => {
            assert!(revision > 0);
            assert_eq!(
                objects.into_iter().collect::<Vec<_>>(),
                [((n1.clone(), pod("web")), web.clone())]
            );
        }
        other => panic!("{other:?}"),
    }

    // Another node's intent is not n1's business.
    let db = manifest("db", "v1");
    intents.put(&n2, db.id(), &db).await.unwrap();
    intents.put(&n1, db.id(), &db).await.unwrap();
    match next_event(&mut reflector).await {
        ReflectorEvent::Applied {
            id, object, prev, ..
        } => {
            assert_eq!(id, (n1.clone(), pod("db")));
            assert_eq!((object, prev), (db.clone(), None));
        }
        other => panic!("{other:?}"),
    }
    let v2 = manifest("web", "v2");
    intents.put(&n1, v2.id(), &v2).await.unwrap();
    match next_event(&mut reflector).await {
        ReflectorEvent::Applied {
            id, object, prev, ..
        } => {
            assert_eq!(id, (n1.clone(), pod("web")));
            assert_eq!(object.sha(), v2.sha());
            assert_eq!(prev.map(|m| m.sha()), Some(web.sha()));
        }
        other => panic!("{other:?}"),
    }

    // A corrupt record is reported naming its key, and the reflector goes on.
    let bad = keys.intent(&n1, &pod("bad"));
    store.put(Put::new(bad.as_str(), "{")).await.unwrap();
    match next_error(&mut reflector).await {
        ReflectorError::Corrupt { key, source } => {
            assert_eq!(key, bad);
            assert!(matches!(source, ManifestError::Corrupt { key: ref k, .. } if *k == bad));
        }
        other => panic!("{other:?}"),
    }
    intents.delete(&n1, db.id()).await.unwrap();
    match next_event(&mut reflector).await {
        ReflectorEvent::Deleted { id, last, .. } => {
            assert_eq!(id, (n1.clone(), pod("db")));
            assert_eq!(last, Some(db.clone()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cache.get(&(n1.clone(), pod("web"))).map(|m| m.sha()),
        Some(v2.sha())
    );
    assert_eq!(cache.get(&(n2.clone(), pod("db"))), None);
}

async fn a_reflector_follows_every_nodes_reality<S: Store>(store: S, keys: Keys) {
    let realities = RealityStore::with_keys(store.clone(), keys.clone());
    let web = manifest("web", "v1");
    let mut reflector = realities.reflector();
    assert!(matches!(
        next_event(&mut reflector).await,
        ReflectorEvent::Initial { ref objects, .. } if objects.is_empty()
    ));
    for n in ["n1", "n2"] {
        realities
            .put(&node(n), web.id(), &Reality::launched(&web))
            .await
            .unwrap();
        match next_event(&mut reflector).await {
            ReflectorEvent::Applied { id, object, .. } => {
                assert_eq!(id, (node(n), pod("web")));
                assert!(object.runs(&web));
            }
            other => panic!("{other:?}"),
        }
    }
    realities.delete(&node("n1"), web.id()).await.unwrap();
    assert!(matches!(
        next_event(&mut reflector).await,
        ReflectorEvent::Deleted { ref id, .. } if *id == (node("n1"), pod("web"))
    ));
}

async fn writes_compose_into_fenced_txns<S: Store>(store: S, keys: Keys) {
    let intents = IntentStore::with_keys(store.clone(), keys.clone());
    let lock = keys.lock("rc", "rc-1").unwrap();
    let owned = store.put(Put::new(lock.as_str(), "farm-1")).await.unwrap();
    let fence = Fence::new(lock.as_str(), owned.revision, 0);
    let (n1, web) = (node("n1"), manifest("web", "v1"));

    let write = Txn::new()
        .fenced(&fence)
        .and_then([intents.put_op(&n1, web.id(), &web).unwrap().into()]);
    assert!(store.txn(write).await.unwrap().succeeded);
    assert_eq!(intents.get(&n1, web.id()).await.unwrap(), Some(web.clone()));

    // Ownership gone: neither the rewrite nor the removal happens.
    store.delete(Delete::key(lock.as_str())).await.unwrap();
    let v2 = manifest("web", "v2");
    let rewrite = Txn::new()
        .fenced(&fence)
        .and_then([intents.put_op(&n1, v2.id(), &v2).unwrap().into()]);
    assert!(!store.txn(rewrite).await.unwrap().succeeded);
    let remove = Txn::new()
        .fenced(&fence)
        .and_then([intents.delete_op(&n1, web.id()).into()]);
    assert!(!store.txn(remove).await.unwrap().succeeded);
    assert_eq!(
        intents.get(&n1, web.id()).await.unwrap().map(|m| m.sha()),
        Some(web.sha())
    );
}

#[tokio::test]
async fn embedded_store_failures_are_errors_not_empty() {
    let store = EmbeddedStore::in_memory();
    let intents: PodStore<_, Manifest> = IntentStore::new(store.clone());
    let web = manifest("web", "v1");
    intents.put(&node("n1"), web.id(), &web).await.unwrap();
    store.close().await.unwrap();
    for result in [
        intents.get(&node("n1"), web.id()).await.map(|_| ()),
        intents.list().await.map(|_| ()),
        intents.list_node(&node("n1")).await.map(|_| ()),
        intents.put(&node("n1"), web.id(), &web).await.map(|_| ()),
        intents.delete(&node("n1"), web.id()).await.map(|_| ()),
    ] {
        assert!(
            matches!(
                result,
                Err(ManifestError::Store {
                    source: StoreError::Closed,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}

// ------------------------------------------------------------ test wiring

drover_store_etcd::on_both_backends!(
    intents_are_written_read_listed_and_deleted,
    realities_are_written_read_listed_and_deleted,
    bad_input_changes_nothing,
    corrupt_records_are_errors_naming_the_key,
    a_node_reflector_follows_its_intents,
    a_reflector_follows_every_nodes_reality,
    writes_compose_into_fenced_txns,
);
