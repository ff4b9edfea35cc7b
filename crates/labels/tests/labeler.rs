//! The store-backed Labeler, against the embedded store and (when
//! `DROVER_ETCD_ENDPOINTS` is set) a real etcd.
#![cfg(feature = "store")]

use std::collections::BTreeMap;
use std::time::Duration;

use drover_labels::{LabelError, LabelType, Labeler, Labels, MatchEvent, Selector};
use drover_store::embedded::EmbeddedStore;
use drover_store::keys::{KeyError, Keys};
use drover_store::testing::{FaultyStore, count_under, value_at};
use drover_store::{Compare, CompareOp, Delete, Get, Put, Store, StoreError, Txn, TxnOp};

/// Generous bound on one awaited event; only catches hangs.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn l(pairs: &[(&str, &str)]) -> Labels {
    Labels::try_from_pairs(pairs.iter().copied()).unwrap()
}

fn sel(text: &str) -> Selector {
    text.parse().unwrap()
}

/// Replaces the labels of node `id`.
async fn set_node<S: Store>(labeler: &Labeler<S>, id: &str, pairs: &[(&str, &str)]) {
    labeler
        .set_all(LabelType::Node, id, &l(pairs))
        .await
        .unwrap();
}

async fn next_event<S: Store>(w: &mut drover_labels::MatchWatch<S>) -> MatchEvent {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("a watch event in time")
        .expect("a watch event, not an error")
}

async fn next_error<S: Store>(w: &mut drover_labels::MatchWatch<S>) -> LabelError {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("a watch error in time")
        .expect_err("an error, not an event")
}

// ---------------------------------------------------------------- scenarios

async fn set_get_remove<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let ty = LabelType::Node;
    assert_eq!(labeler.get(ty, "n1").await.unwrap(), Labels::new());
    assert_eq!(
        labeler.get_versioned(ty, "n1").await.unwrap().mod_revision,
        0
    );

    assert_eq!(
        labeler.set(ty, "n1", "zone", "a").await.unwrap(),
        l(&[("zone", "a")])
    );
    let after = labeler
        .set(ty, "n1", "example.com/tier", "web")
        .await
        .unwrap();
    assert_eq!(after, l(&[("zone", "a"), ("example.com/tier", "web")]));
    assert_eq!(labeler.get(ty, "n1").await.unwrap(), after);

    // Stored as a JSON map under labels/node/<id>.
    let key = keys.labels(ty, "n1").unwrap();
    let raw = value_at(&store, &key).await.expect("stored");
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        r#"{"example.com/tier":"web","zone":"a"}"#
    );

    // Setting the same value writes nothing.
    let before = labeler.get_versioned(ty, "n1").await.unwrap().mod_revision;
    labeler.set(ty, "n1", "zone", "a").await.unwrap();
    assert_eq!(
        labeler.get_versioned(ty, "n1").await.unwrap().mod_revision,
        before
    );

    assert_eq!(
        labeler.remove(ty, "n1", "zone").await.unwrap(),
        l(&[("example.com/tier", "web")])
    );
    labeler.remove(ty, "n1", "not-there").await.unwrap();
    // Removing the last label deletes the key.
    labeler.remove(ty, "n1", "example.com/tier").await.unwrap();
    assert_eq!(value_at(&store, &key).await, None);

    set_node(&labeler, "n2", &[("a", "1"), ("b", "2")]).await;
    labeler.remove_all(ty, "n2").await.unwrap();
    assert_eq!(labeler.get(ty, "n2").await.unwrap(), Labels::new());
    assert_eq!(count_under(&store, &keys.labels_prefix()).await, 0);

    // Pod ids are <node>/<pod>.
    labeler
        .set(LabelType::Pod, "n1/web", "rc", "rc-1")
        .await
        .unwrap();
    let pod_key = keys.pod_labels(&"n1".parse().unwrap(), &"web".parse().unwrap());
    assert!(value_at(&store, &pod_key).await.is_some());
}

async fn list_and_match<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store, keys);
    let ty = LabelType::Node;
    set_node(&labeler, "n1", &[("zone", "a"), ("tier", "web")]).await;
    set_node(&labeler, "n2", &[("zone", "b"), ("tier", "web")]).await;
    set_node(&labeler, "n3", &[("zone", "a")]).await;
    labeler.set(LabelType::Rc, "n1", "zone", "a").await.unwrap();
    labeler
        .set(LabelType::Pod, "n1/p", "zone", "a")
        .await
        .unwrap();

    let all = labeler.list(ty).await.unwrap();
    assert_eq!(all.objects.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    assert!(all.revision > 0);
    let ids =
        |listing: drover_labels::LabelListing| listing.objects.into_keys().collect::<Vec<_>>();
    assert_eq!(
        ids(labeler.matches(ty, &sel("zone=a")).await.unwrap()),
        ["n1", "n3"]
    );
    assert_eq!(
        ids(labeler.matches(ty, &sel("zone=a,tier")).await.unwrap()),
        ["n1"]
    );
    assert_eq!(
        ids(labeler.matches(ty, &sel("!tier")).await.unwrap()),
        ["n3"]
    );
    assert!(
        labeler
            .matches(ty, &Selector::nothing())
            .await
            .unwrap()
            .objects
            .is_empty()
    );
    assert_eq!(
        ids(labeler
            .matches(LabelType::Pod, &sel("zone=a"))
            .await
            .unwrap()),
        ["n1/p"]
    );
    assert_eq!(ids(labeler.list(LabelType::Rc).await.unwrap()), ["n1"]);
    assert!(
        labeler
            .list(LabelType::Replication)
            .await
            .unwrap()
            .objects
            .is_empty()
    );
}

async fn bad_input_changes_nothing<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let ty = LabelType::Node;
    assert!(matches!(
        labeler.set(ty, "n1", "bad key", "v").await,
        Err(LabelError::InvalidKey { ref key, .. }) if key == "bad key"
    ));
    assert!(matches!(
        labeler.set(ty, "n1", "k", "bad/value").await,
        Err(LabelError::InvalidValue { ref value, .. }) if value == "bad/value"
    ));
    assert!(matches!(
        labeler.set_txn(ty, "n1", "", "v").await,
        Err(LabelError::InvalidKey { .. })
    ));
    for (ty, id) in [
        (LabelType::Node, ""),
        (LabelType::Node, "a/b"),
        (LabelType::Pod, "no-slash"),
        (LabelType::Pod, "n1/"),
        (LabelType::Rc, "rc\n1"),
    ] {
        let err = labeler.set(ty, id, "k", "v").await.unwrap_err();
        assert!(
            matches!(
                err,
                LabelError::InvalidTarget(KeyError::InvalidSegment { .. })
            ),
            "{ty} {id:?}: {err:?}"
        );
        let one = l(&[("k", "v")]);
        let results = [
            labeler.get(ty, id).await.map(|_| ()),
            labeler.get_versioned(ty, id).await.map(|_| ()),
            labeler.remove(ty, id, "k").await.map(|_| ()),
            labeler.remove_all(ty, id).await,
            labeler.set_all(ty, id, &one).await.map(|_| ()),
            labeler.set_txn(ty, id, "k", "v").await.map(|_| ()),
            labeler.set_all_txn(ty, id, &one).await.map(|_| ()),
            labeler.remove_txn(ty, id, "k").await.map(|_| ()),
            labeler.remove_all_txn(ty, id).await.map(|_| ()),
        ];
        for (i, result) in results.into_iter().enumerate() {
            assert!(
                matches!(
                    result,
                    Err(LabelError::InvalidTarget(KeyError::InvalidSegment { .. }))
                ),
                "call {i} on {ty} {id:?}: {result:?}"
            );
        }
    }
    let err = Labeler::with_keys(store.clone(), keys.clone())
        .set_all(ty, "n1", &Labels::new())
        .await;
    assert!(
        err.is_ok(),
        "an empty label set on an absent object is a no-op"
    );
    assert_eq!(
        count_under(&store, keys.prefix()).await,
        0,
        "nothing was written"
    );
}

async fn corrupt_records_are_errors<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let ty = LabelType::Node;
    labeler.set(ty, "good", "zone", "a").await.unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("json", b"not json"),
        ("array", b"[\"a\"]"),
        ("number-value", br#"{"zone":1}"#),
        ("invalid-label", br#"{"bad key":"a"}"#),
    ];
    for (id, value) in cases {
        let key = keys.labels(ty, id).unwrap();
        store.put(Put::new(key.as_str(), value)).await.unwrap();
        assert!(
            matches!(labeler.get(ty, id).await, Err(LabelError::Corrupt { key: ref k, .. }) if *k == key),
            "{id}"
        );
        // A write never replaces what it could not read.
        assert!(matches!(
            labeler.set(ty, id, "zone", "b").await,
            Err(LabelError::Corrupt { .. })
        ));
        assert_eq!(value_at(&store, &key).await.as_deref(), Some(value));
        // A list containing it fails rather than returning a partial set.
        assert!(matches!(
            labeler.list(ty).await,
            Err(LabelError::Corrupt { .. })
        ));
        assert!(matches!(
            labeler.matches(ty, &sel("zone=a")).await,
            Err(LabelError::Corrupt { .. })
        ));
        store.delete(Delete::key(key.as_str())).await.unwrap();
    }
    assert_eq!(labeler.list(ty).await.unwrap().objects.len(), 1);

    // A watch whose first listing holds a corrupt record reports it, and
    // lists again on the next call.
    let bad = keys.labels(ty, "bad").unwrap();
    store.put(Put::new(bad.as_str(), "garbage")).await.unwrap();
    let mut w = labeler.watch_matches(ty, sel("zone=a"));
    let err = next_error(&mut w).await;
    assert!(
        matches!(err, LabelError::Corrupt { ref key, .. } if *key == bad),
        "{err:?}"
    );
    assert!(w.current().is_empty(), "nothing reported yet");
    store.delete(Delete::key(bad.as_str())).await.unwrap();
    match next_event(&mut w).await {
        MatchEvent::Initial { matches, .. } => {
            assert_eq!(matches.keys().collect::<Vec<_>>(), ["good"]);
        }
        other => panic!("{other:?}"),
    }
}

async fn concurrent_writers_all_land<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store, keys).with_max_attempts(64);
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let labeler = labeler.clone();
            tokio::spawn(async move {
                labeler
                    .set(LabelType::Node, "n1", &format!("k{i}"), &format!("v{i}"))
                    .await
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    let got = labeler.get(LabelType::Node, "n1").await.unwrap();
    let want: BTreeMap<String, String> = (0..10)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    assert_eq!(got.into_map(), want);
}

async fn txn_composition_is_fenced<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let lock = keys.lock("rc", "rc-1").unwrap();
    let intent = keys.intent(&"n1".parse().unwrap(), &"web".parse().unwrap());
    store.put(Put::new(lock.as_str(), "farm-1")).await.unwrap();
    let lock_rev = store.get(Get::key(lock.as_str())).await.unwrap().kvs[0].create_revision;
    let holds_lock = Compare::create_revision(lock.as_str(), CompareOp::Equal, lock_rev);

    // Intent and pod label commit together, guarded by the lock.
    let write = labeler
        .set_txn(
            LabelType::Pod,
            "n1/web",
            "replication_controller_id",
            "rc-1",
        )
        .await
        .unwrap();
    assert_eq!(write.labels, l(&[("replication_controller_id", "rc-1")]));
    assert_eq!(write.compares.len(), 1);
    let txn = write.add_to(
        Txn::new()
            .when([holds_lock.clone()])
            .and_then([TxnOp::Put(Put::new(intent.as_str(), "manifest"))]),
    );
    assert!(store.txn(txn).await.unwrap().succeeded);
    assert_eq!(
        labeler.get(LabelType::Pod, "n1/web").await.unwrap(),
        l(&[("replication_controller_id", "rc-1")])
    );

    // A concurrent label change between read and commit fails the txn.
    let stale = labeler
        .remove_all_txn(LabelType::Pod, "n1/web")
        .await
        .unwrap();
    labeler
        .set(LabelType::Pod, "n1/web", "other", "x")
        .await
        .unwrap();
    let txn = stale.add_to(Txn::new().when([holds_lock.clone()]));
    assert!(!store.txn(txn).await.unwrap().succeeded);
    assert_eq!(
        labeler.get(LabelType::Pod, "n1/web").await.unwrap(),
        l(&[("replication_controller_id", "rc-1"), ("other", "x")])
    );

    // Once the lock is lost, nothing is written: intent and labels stay.
    store.delete(Delete::key(lock.as_str())).await.unwrap();
    let cleanup = labeler
        .remove_all_txn(LabelType::Pod, "n1/web")
        .await
        .unwrap();
    let txn = cleanup.add_to(
        Txn::new()
            .when([holds_lock])
            .and_then([TxnOp::Delete(Delete::key(intent.as_str()))]),
    );
    assert!(!store.txn(txn).await.unwrap().succeeded);
    assert!(value_at(&store, &intent).await.is_some());
    assert_eq!(
        labeler.get(LabelType::Pod, "n1/web").await.unwrap().len(),
        2
    );

    // A txn for a write that changes nothing has guards but no ops.
    let noop = labeler
        .set_txn(LabelType::Pod, "n1/web", "other", "x")
        .await
        .unwrap();
    assert!(noop.ops.is_empty());
    assert_eq!(noop.compares.len(), 1);
}

async fn watch_matches_reports_diffs<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let ty = LabelType::Node;
    set_node(&labeler, "n1", &[("zone", "a"), ("tier", "web")]).await;
    set_node(&labeler, "n2", &[("zone", "b"), ("tier", "web")]).await;
    let mut w = labeler.watch_matches(ty, sel("tier=web,zone in (a,c)"));
    match next_event(&mut w).await {
        MatchEvent::Initial { revision, matches } => {
            assert!(revision > 0);
            assert_eq!(
                matches,
                BTreeMap::from([("n1".to_owned(), l(&[("zone", "a"), ("tier", "web")]))])
            );
        }
        other => panic!("{other:?}"),
    }
    // A non-matching change produces nothing; the next matching one is next.
    labeler.set(ty, "n2", "rack", "r1").await.unwrap();
    set_node(&labeler, "n3", &[("zone", "c"), ("tier", "web")]).await;
    assert!(matches!(next_event(&mut w).await, MatchEvent::Added { ref id, .. } if id == "n3"));
    labeler.set(ty, "n1", "rack", "r9").await.unwrap();
    match next_event(&mut w).await {
        MatchEvent::Changed { id, labels, .. } => {
            assert_eq!(id, "n1");
            assert_eq!(labels.get("rack"), Some("r9"));
        }
        other => panic!("{other:?}"),
    }
    labeler.set(ty, "n1", "tier", "db").await.unwrap();
    assert!(matches!(next_event(&mut w).await, MatchEvent::Removed { ref id, .. } if id == "n1"));
    labeler.set(ty, "n2", "zone", "a").await.unwrap();
    assert!(matches!(next_event(&mut w).await, MatchEvent::Added { ref id, .. } if id == "n2"));
    labeler.remove_all(ty, "n3").await.unwrap();
    assert!(matches!(next_event(&mut w).await, MatchEvent::Removed { ref id, .. } if id == "n3"));
    // Other label types under the same store do not leak in.
    labeler
        .set(LabelType::Rc, "n9", "tier", "web")
        .await
        .unwrap();
    labeler.set(LabelType::Rc, "n9", "zone", "a").await.unwrap();
    // A corrupt record is reported and the watch goes on.
    let bad = keys.labels(ty, "n4").unwrap();
    store.put(Put::new(bad.as_str(), "garbage")).await.unwrap();
    let err = next_error(&mut w).await;
    assert!(
        matches!(err, LabelError::Corrupt { ref key, .. } if *key == bad),
        "{err:?}"
    );
    set_node(&labeler, "n5", &[("zone", "a"), ("tier", "web")]).await;
    assert!(matches!(next_event(&mut w).await, MatchEvent::Added { ref id, .. } if id == "n5"));
    assert_eq!(w.current().keys().collect::<Vec<_>>(), ["n2", "n5"]);
}

async fn watch_feeds_an_index<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store, keys);
    let ty = LabelType::Node;
    for i in 0..20 {
        let zone = ["a", "b", "c"][i % 3];
        labeler
            .set_all(
                ty,
                &format!("n{i}"),
                &l(&[("zone", zone), ("cpus", &(i * 4).to_string())]),
            )
            .await
            .unwrap();
    }
    let mut index = drover_labels::LabelIndex::new();
    let mut w = labeler.watch_matches(ty, Selector::everything());
    index.apply(next_event(&mut w).await);
    assert_eq!(index.len(), 20);
    labeler.set(ty, "n1", "zone", "c").await.unwrap();
    labeler.remove_all(ty, "n2").await.unwrap();
    labeler.set(ty, "n20", "zone", "a").await.unwrap();
    for _ in 0..3 {
        index.apply(next_event(&mut w).await);
    }
    for text in ["zone=c", "zone in (a,b),cpus>30", "!cpus", "cpus<8"] {
        let selector = sel(text);
        let mut from_index: Vec<String> = index.select(&selector).into_iter().cloned().collect();
        from_index.sort();
        let from_store: Vec<String> = labeler
            .matches(ty, &selector)
            .await
            .unwrap()
            .objects
            .into_keys()
            .collect();
        assert_eq!(from_index, from_store, "{text}");
    }
}

/// Compacting a shared etcd would break other tests' reads, so this runs on
/// the embedded store only.
async fn watch_relists_after_compaction<S: Store>(store: S, keys: Keys) {
    let labeler = Labeler::with_keys(store.clone(), keys.clone());
    let ty = LabelType::Node;
    labeler.set(ty, "n1", "tier", "web").await.unwrap();
    labeler.set(ty, "n2", "tier", "web").await.unwrap();
    labeler.set(ty, "n4", "tier", "web").await.unwrap();
    let mut w = labeler.watch_matches(ty, sel("tier=web"));
    assert!(
        matches!(next_event(&mut w).await, MatchEvent::Initial { ref matches, .. } if matches.len() == 3)
    );
    // The watch itself starts on the next call; history before it goes away.
    labeler.remove_all(ty, "n1").await.unwrap();
    labeler.set(ty, "n2", "zone", "a").await.unwrap();
    labeler.set(ty, "n3", "tier", "web").await.unwrap();
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(next_event(&mut w).await);
    }
    let summary: Vec<_> = events
        .iter()
        .map(|e| match e {
            MatchEvent::Added { id, revision, .. } => ("added", id.as_str(), *revision),
            MatchEvent::Changed { id, revision, .. } => ("changed", id.as_str(), *revision),
            MatchEvent::Removed { id, revision } => ("removed", id.as_str(), *revision),
            MatchEvent::Initial { .. } => panic!("one Initial only"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("removed", "n1", rev),
            ("changed", "n2", rev),
            ("added", "n3", rev)
        ]
    );
    // And it keeps watching after the re-list.
    labeler.remove(ty, "n4", "tier").await.unwrap();
    assert!(matches!(next_event(&mut w).await, MatchEvent::Removed { ref id, .. } if id == "n4"));
}

async fn lost_races_give_up_with_conflict<S: Store>(store: S, keys: Keys) {
    let key = keys.labels(LabelType::Node, "n1").unwrap();
    // A rival writer changes the key right before every txn, so every CAS
    // loses (exercises the bounded retry).
    let rival = FaultyStore::new(store.clone());
    rival
        .faults
        .rival_put_before_txn(Some(Put::new(key.as_str(), r#"{"rival":"wins"}"#)));
    let labeler = Labeler::with_keys(rival, keys).with_max_attempts(3);
    match labeler.set(LabelType::Node, "n1", "zone", "a").await {
        Err(LabelError::Conflict { key: k, attempts }) => {
            assert_eq!(k, key);
            assert_eq!(attempts, 3);
        }
        other => panic!("{other:?}"),
    }
    // Only the rival's value is there: the lost writes changed nothing.
    assert_eq!(
        value_at(&store, &key).await.as_deref(),
        Some(&br#"{"rival":"wins"}"#[..])
    );
}

async fn store_failures_are_errors_not_empty(keys: Keys) {
    let store = EmbeddedStore::in_memory();
    let labeler = Labeler::with_keys(store.clone(), keys);
    labeler
        .set(LabelType::Node, "n1", "zone", "a")
        .await
        .unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        labeler.list(LabelType::Node).await,
        Err(LabelError::Store {
            source: StoreError::Closed,
            ..
        })
    ));
    assert!(matches!(
        labeler.get(LabelType::Node, "n1").await,
        Err(LabelError::Store { .. })
    ));
    let mut w = labeler.watch_matches(LabelType::Node, Selector::everything());
    assert!(matches!(w.next().await, Err(LabelError::Store { .. })));
}

// ------------------------------------------------------------ test wiring

drover_store_etcd::on_both_backends!(
    set_get_remove,
    list_and_match,
    bad_input_changes_nothing,
    corrupt_records_are_errors,
    concurrent_writers_all_land,
    txn_composition_is_fenced,
    watch_matches_reports_diffs,
    watch_feeds_an_index,
    lost_races_give_up_with_conflict,
);

#[tokio::test]
async fn embedded_watch_relists_after_compaction() {
    watch_relists_after_compaction(EmbeddedStore::in_memory(), Keys::default()).await
}

#[tokio::test]
async fn embedded_store_failures_are_errors_not_empty() {
    store_failures_are_errors_not_empty(Keys::default()).await
}
