//! Conformance cases: watches.

use std::collections::HashMap;

use super::util::*;
use crate::{Compare, Delete, EventKind, KeyRange, Put, Result, Store, StoreError, Txn, Watch};

/// A key watch from "now" sees later puts and deletes with their revisions.
pub async fn case_watch_key_put_and_delete<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    put(store, &k, "before").await?;
    let mut watch = store.watch(Watch::key(k.as_str())).await?;
    // A sibling with the key as prefix must not show up in a key watch.
    put(store, &key(prefix, "ab"), "sibling").await?;
    let r1 = put(store, &k, "v1").await?;
    let r2 = store.delete(Delete::key(k.as_str())).await?.revision;
    let events = next_events(&mut watch, 2).await?;
    assert_event(&events[0], EventKind::Put, &k, "v1");
    assert_eq!(events[0].kv.mod_revision, r1);
    assert_eq!(events[0].kv.version, 2);
    assert_eq!(events[0].prev_kv, None, "no prev_kv unless asked");
    assert_event(&events[1], EventKind::Delete, &k, "");
    assert_eq!(events[1].kv.mod_revision, r2);
    Ok(())
}

/// A watch from a past revision replays history in order, with prev_kv.
pub async fn case_watch_replay_with_prev_kv<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "v1").await?;
    let r2 = put(store, &k, "v2").await?;
    let r3 = store.delete(Delete::key(k.as_str())).await?.revision;
    let r4 = put(store, &k, "v3").await?;
    let mut watch = store
        .watch(Watch::key(k.as_str()).from_revision(r1).with_prev_kv())
        .await?;
    let events = next_events(&mut watch, 4).await?;
    assert_event(&events[0], EventKind::Put, &k, "v1");
    assert_eq!(events[0].prev_kv, None, "first version has no previous");
    assert_eq!(
        (
            events[0].kv.create_revision,
            events[0].kv.mod_revision,
            events[0].kv.version
        ),
        (r1, r1, 1)
    );
    assert_event(&events[1], EventKind::Put, &k, "v2");
    assert_eq!(events[1].kv.mod_revision, r2);
    let prev = events[1].prev_kv.as_ref().expect("prev of v2");
    assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"v1"[..], r1));
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.mod_revision, r3);
    let prev = events[2].prev_kv.as_ref().expect("prev of the delete");
    assert_eq!(prev.value, b"v2");
    assert_event(&events[3], EventKind::Put, &k, "v3");
    assert_eq!(
        (events[3].kv.create_revision, events[3].kv.version),
        (r4, 1),
        "re-created key"
    );
    assert_eq!(events[3].prev_kv, None, "re-created key has no previous");
    // Starting mid-history skips the earlier events.
    let mut later = store
        .watch(Watch::key(k.as_str()).from_revision(r2 + 1))
        .await?;
    let events = next_events(&mut later, 2).await?;
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[1].kv.mod_revision, r4);
    Ok(())
}

/// A prefix watch sees only keys under the prefix.
pub async fn case_watch_prefix_ignores_other_keys<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let mut watch = store.watch(Watch::prefix(key(prefix, "dir/"))).await?;
    put(store, &key(prefix, "other"), "x").await?;
    put(store, &key(prefix, "dirx"), "x").await?;
    put(store, &key(prefix, "dir"), "x").await?;
    put(store, &key(prefix, "dir/a"), "1").await?;
    put(store, &key(prefix, "dir/b/c"), "2").await?;
    store.delete(Delete::key(key(prefix, "other"))).await?;
    store.delete(Delete::key(key(prefix, "dir/a"))).await?;
    let events = next_events(&mut watch, 3).await?;
    assert_event(&events[0], EventKind::Put, &key(prefix, "dir/a"), "1");
    assert_event(&events[1], EventKind::Put, &key(prefix, "dir/b/c"), "2");
    assert_event(&events[2], EventKind::Delete, &key(prefix, "dir/a"), "");
    Ok(())
}

/// A `[start, end)` watch sees exactly its range.
pub async fn case_watch_range<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let mut watch = store
        .watch(Watch {
            range: KeyRange::Range {
                start: key(prefix, "b").into_bytes(),
                end: key(prefix, "d").into_bytes(),
            },
            ..Watch::key("unused")
        })
        .await?;
    for name in ["a", "b", "c", "d", "bz"] {
        put(store, &key(prefix, name), name).await?;
    }
    let events = next_events(&mut watch, 3).await?;
    let names: Vec<String> = events.iter().map(|e| e.kv.key_str().into_owned()).collect();
    assert_eq!(names, ["b", "c", "bz"].map(|n| key(prefix, n)).to_vec());
    Ok(())
}

/// A watch with start revision 0 sees only changes after it was created.
pub async fn case_watch_from_now<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    put(store, &k, "old").await?;
    let mut watch = store.watch(Watch::prefix(prefix)).await?;
    let r = put(store, &k, "new").await?;
    let events = next_events(&mut watch, 1).await?;
    assert_event(&events[0], EventKind::Put, &k, "new");
    assert_eq!(events[0].kv.mod_revision, r);
    Ok(())
}

/// A txn's events share one revision and arrive in one batch.
pub async fn case_watch_txn_is_one_batch<S: Store>(store: &S, prefix: &str) -> Result<()> {
    put(store, &key(prefix, "gone"), "x").await?;
    let mut watch = store.watch(Watch::prefix(prefix)).await?;
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(key(prefix, "a"))])
                .and_then([
                    Put::new(key(prefix, "a"), "1").into(),
                    Put::new(key(prefix, "b"), "2").into(),
                    Delete::key(key(prefix, "gone")).into(),
                    Put::new(key(prefix, "c"), "3").into(),
                ]),
        )
        .await?;
    let batch = next_batch(&mut watch).await?;
    check_batch(&batch);
    assert_eq!(batch.events.len(), 4, "one txn, one batch: {batch:#?}");
    assert!(
        batch
            .events
            .iter()
            .all(|e| e.kv.mod_revision == resp.revision)
    );
    let kinds: Vec<EventKind> = batch.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Put,
            EventKind::Put,
            EventKind::Delete,
            EventKind::Put
        ],
        "events in the txn's op order"
    );
    Ok(())
}

/// A watch from a compacted revision yields `Compacted`, then ends.
pub async fn case_watch_compacted<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "v1").await?;
    let r2 = put(store, &k, "v2").await?;
    let _r3 = put(store, &k, "v3").await?;
    super::compact_own_history(store, r2).await?;
    let mut watch = store
        .watch(Watch::key(k.as_str()).from_revision(r1))
        .await?;
    match tokio::time::timeout(WAIT, watch.next_batch()).await {
        Ok(Some(Err(StoreError::Compacted {
            requested,
            compact_revision,
        }))) => {
            assert_eq!(requested, r1);
            assert!(compact_revision >= r2);
        }
        other => panic!("expected a Compacted item, got {other:?}"),
    }
    match tokio::time::timeout(WAIT, watch.next_batch()).await {
        Ok(None) => {}
        other => panic!("expected the watch to end after Compacted, got {other:?}"),
    }
    // Watching from after the compaction point works.
    let mut ok = store
        .watch(Watch::key(k.as_str()).from_revision(r2 + 1))
        .await?;
    let events = next_events(&mut ok, 1).await?;
    assert_event(&events[0], EventKind::Put, &k, "v3");
    Ok(())
}

/// 2,000 puts from 8 concurrent writers reach one watch in revision order,
/// with no gap and no duplicate.
pub async fn case_watch_many_events<S: Store>(store: &S, prefix: &str) -> Result<()> {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 250;
    let start = store.current_revision().await?;
    let mut watch = store
        .watch(Watch::prefix(prefix).from_revision(start + 1))
        .await?;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let k = key(prefix, &format!("w{w}"));
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                store.put(Put::new(k.as_str(), i.to_string())).await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    // Read concurrently with the writers, so slow delivery is exercised too.
    let mut next_value: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut last_revision = start;
    let mut total = 0;
    while total < WRITERS * PER_WRITER {
        let batch = next_batch(&mut watch).await?;
        check_batch(&batch);
        for e in batch.events {
            assert_eq!(e.kind, EventKind::Put);
            assert!(
                e.kv.mod_revision > last_revision,
                "revision {} after {last_revision}: out of order or duplicate",
                e.kv.mod_revision
            );
            last_revision = e.kv.mod_revision;
            let expected = next_value.entry(e.kv.key.clone()).or_insert(0);
            assert_eq!(
                e.kv.value,
                expected.to_string().into_bytes(),
                "gap or duplicate on {}",
                e.kv.key_str()
            );
            assert_eq!(e.kv.version, *expected as i64 + 1);
            *expected += 1;
            total += 1;
        }
    }
    for w in writers {
        w.await.expect("writer panicked")?;
    }
    assert_eq!(total, WRITERS * PER_WRITER);
    assert!(next_value.values().all(|&n| n == PER_WRITER));
    Ok(())
}

/// Dropping watches (many, with undelivered events) disturbs neither writes
/// nor other watches.
pub async fn case_watch_drop_stops_it<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let mut keeper = store.watch(Watch::key(k.as_str())).await?;
    for round in 0..20 {
        let dropped = store.watch(Watch::prefix(prefix)).await?;
        put(store, &key(prefix, &format!("noise{round}")), "x").await?;
        drop(dropped);
    }
    // Watches dropped while events are undelivered.
    let mut undelivered = Vec::new();
    for _ in 0..20 {
        undelivered.push(store.watch(Watch::prefix(prefix).from_revision(1)).await?);
    }
    drop(undelivered);
    let r = put(store, &k, "after").await?;
    let events = next_events(&mut keeper, 1).await?;
    assert_event(&events[0], EventKind::Put, &k, "after");
    assert_eq!(events[0].kv.mod_revision, r);
    // Writes keep working, and a new watch replays them.
    for i in 0..50 {
        put(store, &key(prefix, &format!("more{i}")), "x").await?;
    }
    let mut fresh = store.watch(Watch::key(k.as_str()).from_revision(r)).await?;
    let events = next_events(&mut fresh, 1).await?;
    assert_eq!(events[0].kv.mod_revision, r);
    Ok(())
}

/// Several watches on overlapping ranges each get every matching event.
pub async fn case_watch_fan_out<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "x/a");
    let mut by_key = store.watch(Watch::key(k.as_str())).await?;
    let mut by_prefix = store.watch(Watch::prefix(key(prefix, "x/"))).await?;
    let mut by_outer = store.watch(Watch::prefix(prefix).with_prev_kv()).await?;
    let r1 = put(store, &k, "1").await?;
    let r2 = put(store, &k, "2").await?;
    for w in [&mut by_key, &mut by_prefix, &mut by_outer] {
        let events = next_events(w, 2).await?;
        assert_eq!(
            (events[0].kv.mod_revision, events[1].kv.mod_revision),
            (r1, r2)
        );
    }
    Ok(())
}

/// A watch nobody reads while 1,000 events happen still delivers all of
/// them, in order, once read (the store buffers or catches up from history).
pub async fn case_watch_slow_consumer_catches_up<S: Store>(store: &S, prefix: &str) -> Result<()> {
    const EVENTS: usize = 1000;
    let mut watch = store.watch(Watch::prefix(prefix).with_prev_kv()).await?;
    let k = key(prefix, "a");
    let mut revisions = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        revisions.push(put(store, &k, &i.to_string()).await?);
    }
    let events = next_events(&mut watch, EVENTS).await?;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.kv.mod_revision, revisions[i], "event {i} out of order");
        assert_eq!(e.kv.value, i.to_string().into_bytes());
        let prev = e.prev_kv.as_ref().map(|p| p.value.clone());
        let expected_prev = i.checked_sub(1).map(|p| p.to_string().into_bytes());
        assert_eq!(prev, expected_prev, "prev_kv of event {i}");
    }
    Ok(())
}

/// A watch from a future revision waits: it delivers nothing before that
/// revision and everything from it.
pub async fn case_watch_from_future_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let first = put(store, &k, "0").await?;
    let mut watch = store
        .watch(Watch::key(k.as_str()).from_revision(first + 3))
        .await?;
    let mut revisions = Vec::new();
    for i in 1..=6 {
        revisions.push(put(store, &k, &i.to_string()).await?);
    }
    // On a shared etcd other writers use revisions too: expect the puts at
    // or after the start revision.
    let want: Vec<_> = revisions.into_iter().filter(|r| *r >= first + 3).collect();
    let events = next_events(&mut watch, want.len()).await?;
    let got: Vec<_> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(got, want);
    Ok(())
}

/// `without_puts` / `without_deletes` leave those events out (etcd's NOPUT
/// and NODELETE), also when replaying history.
pub async fn case_watch_filters<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let start = store.current_revision().await? + 1;
    let mut no_puts = store
        .watch(Watch::prefix(prefix).from_revision(start).without_puts())
        .await?;
    let mut no_deletes = store.watch(Watch::prefix(prefix).without_deletes()).await?;
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    let pa = put(store, &a, "1").await?;
    let da = store.delete(Delete::key(a.as_str())).await?.revision;
    let pb = put(store, &b, "2").await?;
    let db = store.delete(Delete::key(b.as_str())).await?.revision;
    let deletes = next_events(&mut no_puts, 2).await?;
    assert!(
        deletes.iter().all(|e| e.kind == EventKind::Delete),
        "{deletes:#?}"
    );
    assert_eq!(
        (deletes[0].kv.mod_revision, deletes[1].kv.mod_revision),
        (da, db)
    );
    let puts = next_events(&mut no_deletes, 2).await?;
    assert!(puts.iter().all(|e| e.kind == EventKind::Put), "{puts:#?}");
    assert_eq!((puts[0].kv.mod_revision, puts[1].kv.mod_revision), (pa, pb));
    // Nothing else came in between: the next event of each is the sentinel's.
    let sentinel = key(prefix, "sentinel");
    let ps = put(store, &sentinel, "s").await?;
    let ds = store.delete(Delete::key(sentinel.as_str())).await?.revision;
    let next = next_events(&mut no_puts, 1).await?;
    assert_eq!(
        (next[0].kind, next[0].kv.mod_revision),
        (EventKind::Delete, ds)
    );
    let next = next_events(&mut no_deletes, 1).await?;
    assert_eq!(
        (next[0].kind, next[0].kv.mod_revision),
        (EventKind::Put, ps)
    );
    // A replay from history is filtered too.
    let mut replay = store
        .watch(
            Watch::prefix(prefix)
                .from_revision(start)
                .without_deletes()
                .with_prev_kv(),
        )
        .await?;
    let replayed = next_events(&mut replay, 3).await?;
    let revisions: Vec<_> = replayed.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, vec![pa, pb, ps]);
    Ok(())
}

/// The next batch that is a progress notification (no events), skipping
/// event batches; at most `max_batches` batches.
async fn next_progress(
    watch: &mut crate::WatchStream,
    max_batches: usize,
) -> Result<crate::WatchBatch> {
    for _ in 0..max_batches {
        let batch = next_batch(watch).await?;
        if batch.events.is_empty() {
            return Ok(batch);
        }
    }
    panic!("no progress notification within {max_batches} batches");
}

/// `request_progress` yields an empty batch whose revision covers every
/// event delivered before it, for a busy and for a quiet range.
pub async fn case_watch_request_progress<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let mut busy = store.watch(Watch::prefix(prefix)).await?;
    let r = put(store, &k, "1").await?;
    let events = next_events(&mut busy, 1).await?;
    assert_eq!(events[0].kv.mod_revision, r);
    busy.request_progress()?;
    let progress = next_progress(&mut busy, 1).await?;
    assert!(
        progress.revision >= r,
        "progress {progress:?} before event {r}"
    );
    // A quiet range created after the put still reports progress at or
    // after it.
    let mut quiet = store.watch(Watch::prefix(key(prefix, "quiet/"))).await?;
    quiet.request_progress()?;
    let progress = next_progress(&mut quiet, 1).await?;
    assert!(progress.revision >= r, "{progress:?} vs {r}");
    // Requests repeat; the watch keeps delivering events afterwards.
    busy.request_progress()?;
    let again = next_progress(&mut busy, 1).await?;
    assert!(again.revision >= progress.revision.min(r));
    let r2 = put(store, &k, "2").await?;
    let events = next_events(&mut busy, 1).await?;
    assert_eq!(events[0].kv.mod_revision, r2);
    Ok(())
}
