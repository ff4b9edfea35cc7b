//! Behaviour of the embedded store through the port (in memory and on disk).
//! The backend-agnostic conformance suite lives in `testing::suite`.

use std::time::Duration;

use super::*;
use crate::{Compare, CompareOp, EventKind, KeyRange, WatchBatch};

async fn next(watch: &mut WatchStream) -> WatchBatch {
    tokio::time::timeout(Duration::from_secs(5), watch.next_batch())
        .await
        .expect("watch batch in time")
        .expect("watch still open")
        .expect("watch batch, not an error")
}

/// An on-disk store in `dir` with the default configuration.
async fn open_default(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap()
}

/// The disk half of an on-disk store, whose fault switches the tests flip.
fn durable_of(store: &EmbeddedStore) -> Arc<Durable> {
    store
        .shared
        .durable
        .as_ref()
        .and_then(|d| d.upgrade())
        .unwrap()
}

/// Turns one of the disk's fault switches on or off.
fn switch(flag: &std::sync::atomic::AtomicBool, on: bool) {
    flag.store(on, std::sync::atomic::Ordering::SeqCst);
}

#[track_caller]
fn assert_storage_error<T: std::fmt::Debug>(result: Result<T>) {
    assert!(
        matches!(result, Err(StoreError::Storage { .. })),
        "expected a storage error, got {result:?}"
    );
}

/// Puts `key` attached to `lease`.
async fn put_leased(store: &EmbeddedStore, key: &str, value: &str, lease: LeaseId) {
    store
        .put(Put::new(key, value).with_lease(lease))
        .await
        .unwrap();
}

#[tokio::test]
async fn first_write_is_revision_two_and_txn_writes_share_one_revision() {
    let store = EmbeddedStore::in_memory();
    assert_eq!(store.current_revision().await.unwrap(), 1);
    assert_eq!(store.put(Put::new("a", "1")).await.unwrap().revision, 2);
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::value("a", CompareOp::Equal, "1")])
                .and_then([
                    Put::new("b", "1").into(),
                    Put::new("c", "1").into(),
                    Get::prefix("").into(),
                ]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 3);
    let TxnOpResponse::Get(all) = &resp.responses[2] else {
        panic!("{:?}", resp.responses[2])
    };
    assert_eq!(all.count, 3);
    assert!(all.kvs[1..].iter().all(|kv| kv.mod_revision == 3));
    // Deleting nothing does not bump the revision.
    let deleted = store.delete(Delete::key("zzz")).await.unwrap();
    assert_eq!((deleted.deleted, deleted.revision), (0, 3));
    let deleted = store
        .delete(Delete::prefix("").with_prev_kv())
        .await
        .unwrap();
    assert_eq!(
        (deleted.deleted, deleted.revision, deleted.prev_kvs.len()),
        (3, 4, 3)
    );
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_anything_is_written() {
    let store = EmbeddedStore::in_memory();
    assert!(matches!(
        store.put(Put::new("", "v")).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.put(Put::new("k", "v").with_lease(12345)).await,
        Err(StoreError::LeaseNotFound(12345))
    ));
    assert!(matches!(
        store.lease_grant(crate::MAX_LEASE_TTL_SECS + 1).await,
        Err(StoreError::LeaseTtlTooLarge { .. })
    ));
    assert!(matches!(
        store.get(Get::key("k").at_revision(5)).await,
        Err(StoreError::FutureRevision {
            requested: 5,
            current: 1
        })
    ));
    assert_eq!(store.current_revision().await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn lease_expiry_deletes_keys_in_one_revision_seen_by_watchers() {
    let store = EmbeddedStore::in_memory();
    let lease = store.lease_grant(5).await.unwrap();
    assert_eq!(lease.ttl, 5);
    let short = store.lease_grant(0).await.unwrap();
    assert_eq!(short.ttl, 1, "raised to the minimum TTL");
    put_leased(&store, "l/a", "1", lease.id).await;
    put_leased(&store, "l/b", "1", lease.id).await;
    store.put(Put::new("l/c", "1")).await.unwrap();
    let ttl = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(ttl.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
    assert_eq!((ttl.granted_ttl, ttl.ttl), (5, 5));
    let mut watch = store
        .watch(Watch::prefix("l/").with_prev_kv())
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(matches!(
        store.lease_keep_alive(short.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(store.lease_time_to_live(lease.id).await.unwrap().ttl, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let batch = next(&mut watch).await;
    assert_eq!(batch.events.len(), 2);
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    let rev = batch.events[0].kv.mod_revision;
    assert!(batch.events.iter().all(|e| e.kv.mod_revision == rev));
    assert_eq!(batch.events[0].prev_kv.as_ref().unwrap().lease, lease.id);
    let left = store.get(Get::prefix("l/")).await.unwrap();
    assert_eq!(left.count, 1);
    assert!(matches!(
        store.lease_keep_alive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        store.lease_revoke(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn keep_alive_postpones_expiry() {
    let store = EmbeddedStore::in_memory();
    let lease = store.lease_grant(4).await.unwrap();
    put_leased(&store, "k", "v", lease.id).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), 4);
    }
    assert_eq!(store.get(Get::key("k")).await.unwrap().count, 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(store.get(Get::key("k")).await.unwrap().count, 0);
}

#[tokio::test]
async fn revoke_deletes_keys_and_detached_keys_survive() {
    let store = EmbeddedStore::in_memory();
    let lease = store.lease_grant(60).await.unwrap();
    put_leased(&store, "a", "1", lease.id).await;
    put_leased(&store, "b", "1", lease.id).await;
    // A put with lease 0 detaches.
    store.put(Put::new("b", "2")).await.unwrap();
    let before = store.current_revision().await.unwrap();
    store.lease_revoke(lease.id).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), before + 1);
    let left = store.get(Get::prefix("")).await.unwrap();
    assert_eq!(left.kvs.len(), 1);
    assert_eq!(left.kvs[0].key, b"b");
}

#[tokio::test]
async fn watch_catches_up_from_history_and_reports_compaction() {
    let store = EmbeddedStore::in_memory();
    for i in 0..5 {
        store.put(Put::new("w/k", format!("{i}"))).await.unwrap();
    }
    // Revisions 2..=6 hold the five puts.
    let mut watch = store
        .watch(Watch::key("w/k").from_revision(3).with_prev_kv())
        .await
        .unwrap();
    let mut revisions = Vec::new();
    while revisions.len() < 4 {
        let batch = next(&mut watch).await;
        for event in batch.events {
            assert_eq!(
                event.prev_kv.unwrap().mod_revision,
                event.kv.mod_revision - 1
            );
            revisions.push(event.kv.mod_revision);
        }
    }
    assert_eq!(revisions, vec![3, 4, 5, 6]);
    store.compact(5).await.unwrap();
    let mut old = store
        .watch(Watch::key("w/k").from_revision(4))
        .await
        .unwrap();
    let item = tokio::time::timeout(Duration::from_secs(5), old.next_batch())
        .await
        .unwrap();
    assert!(matches!(
        item,
        Some(Err(StoreError::Compacted {
            requested: 4,
            compact_revision: 5
        }))
    ));
    assert!(
        old.next_batch().await.is_none(),
        "the stream ends after Compacted"
    );
    // Reads at the compact revision still work, below it they fail.
    assert_eq!(
        store.get(Get::key("w/k").at_revision(5)).await.unwrap().kvs[0].value,
        b"3"
    );
    assert!(matches!(
        store.get(Get::key("w/k").at_revision(4)).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn a_slow_watcher_does_not_block_writers_and_misses_nothing() {
    let store = EmbeddedStore::in_memory_with(EmbeddedConfig::default().with_watch_buffer(1));
    let mut watch = store.watch(Watch::prefix("s/")).await.unwrap();
    for i in 0..200 {
        tokio::time::timeout(
            Duration::from_secs(5),
            store.put(Put::new(format!("s/{}", i % 7), "v")),
        )
        .await
        .expect("writers never wait for watchers")
        .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.extend(
            next(&mut watch)
                .await
                .events
                .into_iter()
                .map(|e| e.kv.mod_revision),
        );
    }
    assert_eq!(seen, (2..202).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_lagging_watcher_whose_history_was_compacted_gets_compacted() {
    let store = EmbeddedStore::in_memory_with(EmbeddedConfig::default().with_watch_buffer(1));
    let mut watch = store.watch(Watch::prefix("c/")).await.unwrap();
    for i in 0..20 {
        store.put(Put::new("c/k", format!("{i}"))).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    let mut outcome = None;
    for _ in 0..25 {
        match tokio::time::timeout(Duration::from_secs(5), watch.next_batch())
            .await
            .unwrap()
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                outcome = Some(e);
                break;
            }
            None => break,
        }
    }
    assert!(
        matches!(outcome, Some(StoreError::Compacted { compact_revision, .. }) if compact_revision == current)
    );
}

#[tokio::test]
async fn watch_from_zero_sees_only_later_changes_and_ranges_filter() {
    let store = EmbeddedStore::in_memory();
    store.put(Put::new("r/a", "old")).await.unwrap();
    let range = KeyRange::Range {
        start: b"r/a".to_vec(),
        end: b"r/c".to_vec(),
    };
    let mut watch = store
        .watch(Watch {
            range,
            ..Watch::key("unused")
        })
        .await
        .unwrap();
    store
        .txn(Txn::new().and_then([
            Put::new("r/a", "1").into(),
            Put::new("r/c", "1").into(),
            Put::new("r/b", "1").into(),
        ]))
        .await
        .unwrap();
    let batch = next(&mut watch).await;
    let keys: Vec<_> = batch.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, vec![b"r/a".to_vec(), b"r/b".to_vec()]);
    assert!(batch.events[0].prev_kv.is_none(), "prev_kv only when asked");
    assert_eq!(batch.revision, 3);
}

#[tokio::test]
async fn dropping_a_watch_stops_its_task() {
    let store = EmbeddedStore::in_memory();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let watch = store.watch(Watch::prefix("d/")).await.unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    drop(watch);
    for _ in 0..100 {
        if metrics.num_alive_tasks() == baseline {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), baseline);
}

#[tokio::test]
async fn close_flushes_and_refuses_later_calls() {
    let store = EmbeddedStore::in_memory();
    let mut watch = store.watch(Watch::prefix("")).await.unwrap();
    store.put(Put::new("k", "v")).await.unwrap();
    store.close().await.unwrap();
    assert!(matches!(
        store.put(Put::new("k", "v")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.get(Get::key("k")).await,
        Err(StoreError::Closed)
    ));
    // The watch delivers what happened, then ends.
    assert_eq!(next(&mut watch).await.events.len(), 1);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next_batch())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn automatic_compaction_keeps_the_configured_window() {
    let store =
        EmbeddedStore::in_memory_with(EmbeddedConfig::default().with_history_window(Some(8)));
    for i in 0..30 {
        store.put(Put::new("a", format!("{i}"))).await.unwrap();
    }
    let current = store.current_revision().await.unwrap();
    assert!(
        store
            .get(Get::key("a").at_revision(current - 8))
            .await
            .is_ok()
    );
    assert!(matches!(
        store.get(Get::key("a").at_revision(2)).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn reopening_a_data_dir_restores_keys_history_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    store.put(Put::new("a", "1")).await.unwrap();
    store.put(Put::new("a", "2")).await.unwrap();
    store.put(Put::new("b", "1")).await.unwrap();
    store.delete(Delete::key("b")).await.unwrap();
    store.compact(3).await.unwrap();
    store.close().await.unwrap();

    let store = open_default(&dir).await;
    assert_eq!(store.current_revision().await.unwrap(), 5);
    let a = store.get(Get::key("a")).await.unwrap().kvs[0].clone();
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"2"[..], 2, 3, 2)
    );
    assert_eq!(
        store.get(Get::key("b").at_revision(4)).await.unwrap().count,
        1
    );
    assert!(matches!(
        store.get(Get::key("a").at_revision(2)).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = store
        .watch(Watch::prefix("").from_revision(4))
        .await
        .unwrap();
    let batch = next(&mut watch).await;
    let kinds: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.kind, e.kv.mod_revision))
        .collect();
    assert_eq!(kinds, vec![(EventKind::Put, 4), (EventKind::Delete, 5)]);
    assert_eq!(store.put(Put::new("c", "1")).await.unwrap().revision, 6);
    store.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_writers_share_group_commits_and_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..10 {
                revisions.push(
                    store
                        .put(Put::new(format!("g/{w}/{i}"), "v"))
                        .await
                        .unwrap()
                        .revision,
                );
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (2..162).collect::<Vec<_>>(),
        "one revision per put, no gaps"
    );
    assert_eq!(store.get(Get::prefix("g/")).await.unwrap().count, 160);
}

#[tokio::test]
async fn a_failed_commit_is_never_acknowledged_or_visible_and_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    store.put(Put::new("a", "1")).await.unwrap();
    let mut watch = store.watch(Watch::prefix("")).await.unwrap();
    let durable = durable_of(&store);
    switch(&durable.fail_commits, true);
    let failed = store.put(Put::new("a", "2")).await;
    let Err(StoreError::Storage { source, .. }) = failed else {
        panic!("expected a storage error, got {failed:?}")
    };
    assert!(source.is_some(), "the storage error carries its source");
    // Nothing of the failed batch is visible to reads or watches.
    assert_eq!(store.current_revision().await.unwrap(), 2);
    assert_eq!(store.get(Get::key("a")).await.unwrap().kvs[0].value, b"1");
    let pending = tokio::time::timeout(Duration::from_millis(200), watch.next_batch()).await;
    assert!(
        pending.is_err(),
        "no watch event for an uncommitted write: {pending:?}"
    );
    // The memory state is ahead of the disk now: later writes are refused
    // even once the disk works again.
    switch(&durable.fail_commits, false);
    assert_storage_error(store.put(Put::new("b", "1")).await);
    drop(durable);
    // Closing reports that the store could not persist everything, and
    // closes it all the same.
    assert_storage_error(store.close().await);
    assert!(matches!(
        store.get(Get::key("a")).await,
        Err(StoreError::Closed)
    ));
    let reopened = open_default(&dir).await;
    assert_eq!(reopened.current_revision().await.unwrap(), 2);
    assert_eq!(reopened.put(Put::new("b", "1")).await.unwrap().revision, 3);
}

#[tokio::test(start_paused = true)]
async fn a_writer_stopped_by_a_failed_commit_waits_instead_of_spinning_on_expired_leases() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    let lease = store.lease_grant(1).await.unwrap();
    put_leased(&store, "k", "v", lease.id).await;
    let durable = durable_of(&store);
    switch(&durable.fail_commits, true);
    assert_storage_error(store.put(Put::new("other", "v")).await);
    // The lease's deadline passes while the writer refuses writes.
    tokio::time::advance(Duration::from_secs(2)).await;
    let wakeups = || {
        store
            .shared
            .core
            .writer_wakeups
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = wakeups();
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert!(
        wakeups() <= before + 1,
        "the writer spun {} times with nothing to do",
        wakeups() - before
    );
    // It still answers requests (with the storage failure) and closes.
    assert_storage_error(store.put(Put::new("other", "v")).await);
    drop(durable);
    assert_storage_error(store.close().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stalled_watchers_neither_block_nor_starve_durable_writers() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::default().with_watch_buffer(1);
    let store = EmbeddedStore::open(dir.path(), config).await.unwrap();
    // Watchers that never read: each fills its one-batch buffer and waits.
    let mut stalled = Vec::new();
    for i in 0..64 {
        let watch = if i % 2 == 0 {
            Watch::prefix("m/")
        } else {
            Watch::prefix("m/").with_prev_kv().from_revision(1)
        };
        stalled.push(store.watch(watch).await.unwrap());
    }
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..50 {
                    store
                        .put(Put::new(format!("m/{w}"), format!("{i}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("writers finish while every watcher is stalled")
            .unwrap();
    }
    assert_eq!(store.current_revision().await.unwrap(), 401);
    // A stalled watcher still gets everything, in order, once it reads.
    let mut seen = Vec::new();
    while seen.len() < 400 {
        seen.extend(
            next(&mut stalled[1])
                .await
                .events
                .into_iter()
                .map(|e| e.kv.mod_revision),
        );
    }
    assert_eq!(seen, (2..402).collect::<Vec<_>>());
    drop(stalled);
    tokio::time::timeout(Duration::from_secs(30), store.close())
        .await
        .expect("close does not wait for stalled watchers")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_concurrent_writes_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..10_000 {
                    let key = format!("c/{w}/{i:05}");
                    match store.put(Put::new(key.clone(), "v")).await {
                        Ok(resp) => acked.push((key, resp.revision)),
                        Err(StoreError::Closed) => break,
                        Err(e) => panic!("unexpected error {e:?}"),
                    }
                }
                acked
            })
        })
        .collect();
    // Let the writers get going, then close under them.
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.current_revision().await.unwrap() < 200 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the writers make progress");
    tokio::time::timeout(Duration::from_secs(30), store.close())
        .await
        .expect("close finishes under concurrent writers")
        .unwrap();
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    assert!(acked.len() >= 199);
    let reopened = open_default(&dir).await;
    for (key, revision) in &acked {
        let kv = reopened.get(Get::key(key.as_str())).await.unwrap();
        assert_eq!(
            kv.kvs.first().map(|kv| kv.mod_revision),
            Some(*revision),
            "acknowledged {key} lost by close"
        );
    }
    assert_eq!(
        reopened.get(Get::prefix("c/")).await.unwrap().count as usize,
        acked.len(),
        "nothing that was refused got written"
    );
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn closing_twice_or_from_two_clones_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    store.put(Put::new("k", "v")).await.unwrap();
    let clone = store.clone();
    let (a, b) = tokio::join!(store.close(), clone.close());
    a.unwrap();
    b.unwrap();
    store.close().await.unwrap();
    let reopened = open_default(&dir).await;
    assert_eq!(reopened.get(Get::key("k")).await.unwrap().count, 1);
    reopened.close().await.unwrap();
}

/// Wait (bounded) until `done` holds, yielding to the store's tasks.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A durable store with one put done, the write of `b` committing (held at
/// the disk) and the write of `c` applied behind it, waiting for its turn.
async fn store_with_a_commit_in_flight_and_one_queued() -> (
    tempfile::TempDir,
    EmbeddedStore,
    Arc<Durable>,
    tokio::task::JoinHandle<Result<PutResponse>>,
    tokio::task::JoinHandle<Result<PutResponse>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(&dir).await;
    store.put(Put::new("a", "1")).await.unwrap();
    let durable = durable_of(&store);
    let started = || {
        durable
            .commits_started
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let before = started();
    switch(&durable.hold_commits, true);
    let b = tokio::spawn({
        let store = store.clone();
        async move { store.put(Put::new("b", "1")).await }
    });
    wait_until("b's commit started", || started() == before + 1).await;
    let c = tokio::spawn({
        let store = store.clone();
        async move { store.put(Put::new("c", "1")).await }
    });
    wait_until("c is applied", || {
        store.shared.core.state.read().mvcc.current() == 4
    })
    .await;
    // Neither is visible or acknowledged while b's commit is running, and c
    // waits for b's commit instead of committing beside it.
    assert_eq!(store.current_revision().await.unwrap(), 2);
    assert_eq!(store.get(Get::prefix("")).await.unwrap().count, 1);
    assert!(!b.is_finished() && !c.is_finished());
    assert_eq!(started(), before + 1, "one commit at a time");
    (dir, store, durable, b, c)
}

// Multi-threaded: the first writer commits in place (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_applied_during_a_commit_are_committed_after_it_in_order() {
    commits_in_order().await;
}

// Current-thread: commits run on blocking tasks.
#[tokio::test]
async fn writes_applied_during_a_blocking_task_commit_are_committed_after_it() {
    commits_in_order().await;
}

async fn commits_in_order() {
    let (dir, store, durable, b, c) = store_with_a_commit_in_flight_and_one_queued().await;
    switch(&durable.hold_commits, false);
    assert_eq!(b.await.unwrap().unwrap().revision, 3);
    assert_eq!(c.await.unwrap().unwrap().revision, 4);
    assert_eq!(store.current_revision().await.unwrap(), 4);
    drop(durable);
    store.close().await.unwrap();
    let reopened = open_default(&dir).await;
    assert_eq!(reopened.current_revision().await.unwrap(), 4);
    assert_eq!(reopened.get(Get::prefix("")).await.unwrap().count, 3);
}

// Multi-threaded: the first writer commits in place (`block_in_place`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_also_fails_the_writes_applied_behind_it() {
    let (dir, store, durable, b, c) = store_with_a_commit_in_flight_and_one_queued().await;
    switch(&durable.fail_commits, true);
    switch(&durable.hold_commits, false);
    assert!(matches!(
        b.await.unwrap(),
        Err(StoreError::Storage {
            source: Some(_),
            ..
        })
    ));
    // c built on b's state, so it is never acknowledged either.
    assert_storage_error(c.await.unwrap());
    assert_eq!(store.current_revision().await.unwrap(), 2);
    assert_eq!(store.get(Get::prefix("")).await.unwrap().count, 1);
    drop(durable);
    assert!(store.close().await.is_err());
    let reopened = open_default(&dir).await;
    assert_eq!(reopened.current_revision().await.unwrap(), 2);
    assert_eq!(reopened.get(Get::prefix("")).await.unwrap().count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_beyond_a_full_batch_wait_unapplied_for_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedConfig::default().with_max_group_commit(1);
    let store = EmbeddedStore::open(dir.path(), config).await.unwrap();
    let durable = durable_of(&store);
    let hold = |on: bool| switch(&durable.hold_commits, on);
    let started = || {
        durable
            .commits_started
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let current = || store.shared.core.state.read().mvcc.current();
    hold(true);
    let put = |key: &'static str| {
        let store = store.clone();
        tokio::spawn(async move { store.put(Put::new(key, "v")).await })
    };
    let a = put("a");
    wait_until("a's commit started", || started() == 1).await;
    let b = put("b");
    wait_until("b is applied", || current() == 3).await;
    // The pending batch (b) is full: c waits without being applied.
    let c = put("c");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(current(), 3, "c was applied beyond the batch limit");
    assert!(!c.is_finished());
    hold(false);
    let revisions = [
        a.await.unwrap().unwrap().revision,
        b.await.unwrap().unwrap().revision,
        c.await.unwrap().unwrap().revision,
    ];
    assert_eq!(revisions, [2, 3, 4]);
    assert_eq!(store.get(Get::prefix("")).await.unwrap().count, 3);
    drop(durable);
    store.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn progress_notify_reports_quiet_watches_every_interval() {
    let interval = Duration::from_secs(7);
    let store = EmbeddedStore::in_memory_with(
        EmbeddedConfig::default().with_progress_notify_interval(interval),
    );
    let mut notified = store
        .watch(Watch::prefix("/p/").with_progress_notify())
        .await
        .unwrap();
    let mut plain = store.watch(Watch::prefix("/p/")).await.unwrap();
    let r = store.put(Put::new("/p/a", "1")).await.unwrap().revision;
    assert_eq!(next(&mut notified).await.events[0].kv.mod_revision, r);
    assert_eq!(next(&mut plain).await.events[0].kv.mod_revision, r);
    // Others write elsewhere; the watched range stays quiet.
    let elsewhere = store.put(Put::new("/q/b", "2")).await.unwrap().revision;
    let started = tokio::time::Instant::now();
    let progress = tokio::time::timeout(3 * interval, notified.next_batch())
        .await
        .expect("a progress notification within the interval")
        .unwrap()
        .unwrap();
    assert!(progress.events.is_empty(), "{progress:?}");
    assert_eq!(
        progress.revision, elsewhere,
        "everything up to now was delivered"
    );
    assert!(started.elapsed() <= 2 * interval);
    // A watch that did not ask gets nothing.
    assert!(
        tokio::time::timeout(3 * interval, plain.next_batch())
            .await
            .is_err(),
        "no progress notifications unless asked"
    );
}

#[tokio::test(start_paused = true)]
async fn progress_of_a_watch_from_a_future_revision_stays_below_its_start() {
    let store = EmbeddedStore::in_memory();
    let now = store.put(Put::new("/f/a", "1")).await.unwrap().revision;
    let mut watch = store
        .watch(Watch::prefix("/f/").from_revision(now + 10))
        .await
        .unwrap();
    watch.request_progress().unwrap();
    let progress = next(&mut watch).await;
    assert!(progress.events.is_empty());
    assert_eq!(progress.revision, now);
    drop(store);
}
