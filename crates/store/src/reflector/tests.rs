use std::time::Duration;

use super::*;
use crate::embedded::EmbeddedStore;
use crate::{Delete, Put, Txn};

const PREFIX: &str = "/r/";

/// `/r/<id>` -> a number; anything else is corrupt.
struct Numbers;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
struct Bad(String);

impl Codec for Numbers {
    type Id = String;
    type Value = u32;
    type Error = Bad;

    fn id(&self, key: &[u8]) -> Result<String, Bad> {
        let key = String::from_utf8_lossy(key);
        key.strip_prefix(PREFIX)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Bad(format!("{key} is not under {PREFIX}")))
    }

    fn decode(&self, kv: &KeyValue) -> Result<(String, u32), Bad> {
        let id = self.id(&kv.key)?;
        let value = std::str::from_utf8(&kv.value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Bad(format!("{id}: not a number")))?;
        Ok((id, value))
    }
}

async fn put(store: &EmbeddedStore, id: &str, value: &str) -> Revision {
    store
        .put(Put::new(format!("{PREFIX}{id}"), value))
        .await
        .unwrap()
        .revision
}

fn reflector(store: &EmbeddedStore) -> Reflector<EmbeddedStore, Numbers> {
    Reflector::prefix(store.clone(), PREFIX, Numbers)
}

fn s(id: &str) -> String {
    id.to_owned()
}

#[tokio::test(start_paused = true)]
async fn initial_then_typed_changes_and_the_cache_follows() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    let mut r = reflector(&store);
    let cache = r.cache();
    assert!(!cache.is_ready());
    let ReflectorEvent::Initial { objects, revision } = r.next().await.unwrap() else {
        panic!("first event is Initial")
    };
    assert_eq!(objects, BTreeMap::from([(s("a"), 1)]));
    assert!(cache.is_ready());
    assert_eq!(cache.revision(), revision);

    let rev = put(&store, "a", "2").await;
    assert_eq!(
        r.next().await.unwrap(),
        ReflectorEvent::Applied {
            id: s("a"),
            object: 2,
            prev: Some(1),
            revision: rev
        }
    );
    let rev = put(&store, "b", "7").await;
    assert_eq!(
        r.next().await.unwrap(),
        ReflectorEvent::Applied {
            id: s("b"),
            object: 7,
            prev: None,
            revision: rev
        }
    );
    let rev = store.delete(Delete::key("/r/a")).await.unwrap().revision;
    assert_eq!(
        r.next().await.unwrap(),
        ReflectorEvent::Deleted {
            id: s("a"),
            last: Some(2),
            revision: rev
        }
    );
    assert_eq!(cache.snapshot(), BTreeMap::from([(s("b"), 7)]));
    assert_eq!(cache.get(&s("a")), None);
    assert_eq!(cache.revision(), rev);
}

#[tokio::test(start_paused = true)]
async fn wait_until_ready_waits_for_the_first_listing() {
    let store = EmbeddedStore::in_memory();
    let mut r = reflector(&store);
    let cache = r.cache();
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.wait_until_ready().await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "not ready before the first listing");
    r.next().await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("ready after the listing")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_record_in_the_first_listing_is_surfaced_and_listed_again() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    put(&store, "b", "oops").await;
    let mut r = reflector(&store);
    match r.next().await {
        Err(ReflectorError::Corrupt { key, source }) => {
            assert_eq!(key, "/r/b");
            assert_eq!(source, Bad(s("b: not a number")));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!r.cache().is_ready(), "a half-read range is not ready");
    put(&store, "b", "2").await;
    let ReflectorEvent::Initial { objects, .. } = r.next().await.unwrap() else {
        panic!("listed again")
    };
    assert_eq!(objects.len(), 2);
    assert!(r.cache().is_ready());
}

#[tokio::test(start_paused = true)]
async fn a_later_corrupt_record_is_surfaced_and_the_cache_keeps_the_last_good_value() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    let mut r = reflector(&store);
    r.next().await.unwrap();
    put(&store, "a", "garbage").await;
    assert!(matches!(
        r.next().await,
        Err(ReflectorError::Corrupt { ref key, .. }) if key == "/r/a"
    ));
    assert_eq!(r.cache().get(&s("a")), Some(1));
    let rev = put(&store, "a", "3").await;
    assert_eq!(
        r.next().await.unwrap(),
        ReflectorEvent::Applied {
            id: s("a"),
            object: 3,
            prev: Some(1),
            revision: rev
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_compaction_gap_yields_the_differences_then_the_snapshot() {
    let store = EmbeddedStore::in_memory();
    put(&store, "keep", "1").await;
    put(&store, "gone", "2").await;
    put(&store, "changed", "3").await;
    let mut r = reflector(&store);
    r.next().await.unwrap();
    // Changes the reflector misses: the watch would start at a compacted
    // revision.
    store.delete(Delete::key("/r/gone")).await.unwrap();
    put(&store, "changed", "30").await;
    let rev = put(&store, "new", "4").await;
    store.compact(rev).await.unwrap();

    let mut events = Vec::new();
    loop {
        let event = r.next().await.unwrap();
        let done = matches!(event, ReflectorEvent::Restarted { .. });
        events.push(event);
        if done {
            break;
        }
        assert!(events.len() < 10, "bounded: {events:?}");
    }
    assert_eq!(
        events[..3],
        [
            ReflectorEvent::Deleted {
                id: s("gone"),
                last: Some(2),
                revision: rev
            },
            ReflectorEvent::Applied {
                id: s("changed"),
                object: 30,
                prev: Some(3),
                revision: rev
            },
            ReflectorEvent::Applied {
                id: s("new"),
                object: 4,
                prev: None,
                revision: rev
            },
        ]
    );
    let expected = BTreeMap::from([(s("changed"), 30), (s("keep"), 1), (s("new"), 4)]);
    assert_eq!(
        events[3],
        ReflectorEvent::Restarted {
            revision: rev,
            objects: expected.clone()
        }
    );
    assert_eq!(r.cache().snapshot(), expected);
}

#[tokio::test(start_paused = true)]
async fn revision_complete_marks_the_end_of_a_multi_key_revision() {
    let store = EmbeddedStore::in_memory();
    let mut r = reflector(&store);
    r.next().await.unwrap();
    assert!(r.revision_complete());
    store
        .txn(Txn::new().and_then([Put::new("/r/x", "1").into(), Put::new("/r/y", "2").into()]))
        .await
        .unwrap();
    r.next().await.unwrap();
    assert!(!r.revision_complete(), "y of the same txn is still to come");
    r.next().await.unwrap();
    assert!(r.revision_complete());
}
