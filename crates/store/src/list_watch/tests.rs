use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{KvChange, KvMirror, ListWatch, ListWatchEvent, RetryPolicy};
use crate::embedded::EmbeddedStore;
use crate::{
    Delete, DeleteResponse, Event, EventKind, Get, GetResponse, KeyRange, KeyValue, LeaseGrant,
    LeaseId, LeaseTimeToLive, Put, PutResponse, Result, Revision, Store, StoreError, Txn, TxnOp,
    TxnResponse, Watch, WatchStream,
};

const PREFIX: &str = "/lw/";

fn key(name: &str) -> Vec<u8> {
    format!("{PREFIX}{name}").into_bytes()
}

async fn put<S: Store>(store: &S, name: &str, value: &str) -> Revision {
    store
        .put(Put::new(key(name), value))
        .await
        .unwrap()
        .revision
}

async fn delete<S: Store>(store: &S, name: &str) -> Revision {
    store.delete(Delete::key(key(name))).await.unwrap().revision
}

/// Keys and values of a snapshot, for compact assertions.
fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key_str().into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn unavailable(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("injected: {what}"),
        source: None,
    }
}

/// Expects a `Changed` event and returns it.
async fn next_change<S: Store>(lw: &mut ListWatch<S>) -> Event {
    match lw.next().await.unwrap() {
        ListWatchEvent::Changed(event) => event,
        other => panic!("expected a change, got {other:?}"),
    }
}

// ------------------------------------------------------ a store with faults

#[derive(Debug, Default)]
struct Faults {
    /// Fail this many `get`s (next ones) with `Unavailable`.
    failing_gets: u32,
    get_calls: u32,
    watch_calls: u32,
    /// Each watch stream delivers this many batches, then ends (or fails
    /// with `Unavailable` when `end_with_error`).
    batches_per_stream: Option<usize>,
    end_with_error: bool,
}

/// An embedded store whose reads and watches fail as told.
#[derive(Clone, Debug)]
struct Faulty {
    inner: EmbeddedStore,
    faults: Arc<Mutex<Faults>>,
}

impl Faulty {
    fn new(faults: Faults) -> Self {
        Faulty {
            inner: EmbeddedStore::in_memory(),
            faults: Arc::new(Mutex::new(faults)),
        }
    }
}

impl Store for Faulty {
    fn backend_name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, req: Get) -> Result<GetResponse> {
        {
            let mut f = self.faults.lock();
            f.get_calls += 1;
            if f.failing_gets > 0 {
                f.failing_gets -= 1;
                return Err(unavailable("get"));
            }
        }
        self.inner.get(req).await
    }
    fn put(&self, req: Put) -> impl Future<Output = Result<PutResponse>> + Send {
        self.inner.put(req)
    }
    fn delete(&self, req: Delete) -> impl Future<Output = Result<DeleteResponse>> + Send {
        self.inner.delete(req)
    }
    fn txn(&self, req: Txn) -> impl Future<Output = Result<TxnResponse>> + Send {
        self.inner.txn(req)
    }
    async fn watch(&self, req: Watch) -> Result<WatchStream> {
        let (limit, end_with_error) = {
            let mut f = self.faults.lock();
            f.watch_calls += 1;
            (f.batches_per_stream, f.end_with_error)
        };
        let mut inner = self.inner.watch(req).await?;
        let Some(limit) = limit else {
            return Ok(inner);
        };
        let (tx, stream) = WatchStream::channel(4);
        tokio::spawn(async move {
            for _ in 0..limit {
                let item = tokio::select! {
                    _ = tx.cancelled() => return,
                    item = inner.next_batch() => item,
                };
                let Some(item) = item else { return };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
            if end_with_error {
                let _ = tx.send(Err(unavailable("watch stream"))).await;
            }
            // Dropping `tx` ends the stream.
        });
        Ok(stream)
    }
    fn lease_grant(&self, ttl: i64) -> impl Future<Output = Result<LeaseGrant>> + Send {
        self.inner.lease_grant(ttl)
    }
    fn lease_grant_with_id(
        &self,
        id: LeaseId,
        ttl: i64,
    ) -> impl Future<Output = Result<LeaseGrant>> + Send {
        self.inner.lease_grant_with_id(id, ttl)
    }
    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseId>>> + Send {
        self.inner.lease_list()
    }
    fn status(&self) -> impl Future<Output = Result<crate::StoreStatus>> + Send {
        self.inner.status()
    }
    fn lease_keep_alive(&self, id: LeaseId) -> impl Future<Output = Result<i64>> + Send {
        self.inner.lease_keep_alive(id)
    }
    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = Result<()>> + Send {
        self.inner.lease_revoke(id)
    }
    fn lease_time_to_live(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = Result<LeaseTimeToLive>> + Send {
        self.inner.lease_time_to_live(id)
    }
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<()>> + Send {
        self.inner.compact(revision)
    }
    fn current_revision(&self) -> impl Future<Output = Result<Revision>> + Send {
        self.inner.current_revision()
    }
}

/// A store holding one key whose next `failures` lists fail, and a
/// list-watch on it that tries `max_attempts` times, waiting 100 ms after
/// the first failure and doubling.
async fn failing_lists(failures: u32, max_attempts: u32) -> (Faulty, ListWatch<Faulty>) {
    let store = Faulty::new(Faults {
        failing_gets: failures,
        ..Faults::default()
    });
    put(&store, "a", "1").await;
    let policy = RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
    let lw = ListWatch::prefix(store.clone(), PREFIX).with_retry(policy);
    (store, lw)
}

// ------------------------------------------------------------------- tests

#[tokio::test(start_paused = true)]
async fn lists_then_delivers_every_change_in_order() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    let listed_at = put(&store, "b", "1").await;
    store.put(Put::new("/other/x", "1")).await.unwrap();

    let mut lw = ListWatch::prefix(store.clone(), PREFIX);
    assert_eq!(lw.revision(), 0);
    match lw.next().await.unwrap() {
        ListWatchEvent::Listed { revision, kvs } => {
            assert!(revision > listed_at, "the list sees the latest write");
            assert_eq!(
                pairs(&kvs),
                [("/lw/a".into(), "1".into()), ("/lw/b".into(), "1".into())]
            );
        }
        other => panic!("{other:?}"),
    }

    let r1 = put(&store, "c", "1").await;
    store.put(Put::new("/other/y", "1")).await.unwrap();
    let r2 = put(&store, "a", "2").await;
    let r3 = delete(&store, "b").await;
    // One txn: two events at one revision, delivered one by one.
    let r4 = store
        .txn(Txn::new().and_then([
            TxnOp::Put(Put::new(key("d"), "1")),
            TxnOp::Delete(Delete::key(key("c"))),
        ]))
        .await
        .unwrap()
        .revision;

    let mut seen = Vec::new();
    for _ in 0..5 {
        let event = next_change(&mut lw).await;
        assert_eq!(
            lw.revision(),
            event.kv.mod_revision,
            "delivered, not received"
        );
        seen.push((
            event.kind,
            event.kv.key_str().into_owned(),
            event.kv.mod_revision,
        ));
        if event.kv.key == key("a") {
            let prev = event.prev_kv.expect("watched with prev_kv");
            assert_eq!(prev.value, b"1");
        }
    }
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/lw/c".into(), r1),
            (EventKind::Put, "/lw/a".into(), r2),
            (EventKind::Delete, "/lw/b".into(), r3),
            (EventKind::Put, "/lw/d".into(), r4),
            (EventKind::Delete, "/lw/c".into(), r4),
        ]
    );
    assert_eq!(lw.revision(), r4);
}

#[tokio::test(start_paused = true)]
async fn compaction_between_list_and_watch_restarts_with_the_current_set() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    put(&store, "b", "1").await;
    let mut lw = ListWatch::new(store.clone(), KeyRange::Prefix(key("")));
    let listed_at = lw.next().await.unwrap().revision();

    // The watch opens on the next call; the history it needs goes away first.
    put(&store, "c", "1").await;
    delete(&store, "a").await;
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();

    match lw.next().await.unwrap() {
        ListWatchEvent::Restarted { revision, kvs } => {
            assert_eq!(revision, now);
            assert!(revision > listed_at);
            assert_eq!(
                pairs(&kvs),
                [("/lw/b".into(), "1".into()), ("/lw/c".into(), "1".into())]
            );
        }
        other => panic!("expected a re-list, got {other:?}"),
    }
    // And it goes on watching from after the re-list, without repeats.
    let r = put(&store, "e", "1").await;
    let event = next_change(&mut lw).await;
    assert_eq!((event.kv.key, event.kv.mod_revision), (key("e"), r));
}

#[tokio::test(start_paused = true)]
async fn mirror_diffs_a_relist_after_compaction() {
    let store = EmbeddedStore::in_memory();
    put(&store, "gone", "1").await;
    put(&store, "changed", "1").await;
    put(&store, "same", "1").await;
    let mut lw = ListWatch::prefix(store.clone(), PREFIX);
    let mut mirror = KvMirror::new();
    let initial = mirror.apply(&lw.next().await.unwrap());
    assert_eq!(initial.len(), 3);
    assert!(initial.iter().all(|c| matches!(c, KvChange::Added { .. })));

    // While the watch is compacted away: one key deleted, one changed, one added.
    delete(&store, "gone").await;
    put(&store, "changed", "2").await;
    put(&store, "added", "1").await;
    let now = store.current_revision().await.unwrap();
    store.compact(now).await.unwrap();

    let restarted = lw.next().await.unwrap();
    assert!(matches!(restarted, ListWatchEvent::Restarted { .. }));
    let summary: Vec<_> = mirror
        .apply(&restarted)
        .into_iter()
        .map(|c| match c {
            KvChange::Added { kv, revision } => {
                ("added", kv.key_str().into_owned(), None, kv.value, revision)
            }
            KvChange::Modified { prev, kv, revision } => (
                "modified",
                kv.key_str().into_owned(),
                Some(prev.value),
                kv.value,
                revision,
            ),
            KvChange::Deleted { prev, revision } => (
                "deleted",
                prev.key_str().into_owned(),
                Some(prev.value),
                Vec::new(),
                revision,
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "deleted",
                "/lw/gone".into(),
                Some(b"1".to_vec()),
                vec![],
                now
            ),
            ("added", "/lw/added".into(), None, b"1".to_vec(), now),
            (
                "modified",
                "/lw/changed".into(),
                Some(b"1".to_vec()),
                b"2".to_vec(),
                now
            ),
        ]
    );
    assert_eq!(mirror.revision(), now);
    let held: Vec<_> = mirror.iter().map(|kv| kv.key_str().into_owned()).collect();
    assert_eq!(held, ["/lw/added", "/lw/changed", "/lw/same"]);

    // The mirror keeps following the watch after the re-list.
    let r = delete(&store, "same").await;
    let changes = mirror.apply(&lw.next().await.unwrap());
    assert!(
        matches!(&changes[..], [KvChange::Deleted { prev, revision }] if prev.key == key("same") && *revision == r),
        "{changes:?}"
    );
    assert_eq!(mirror.len(), 2);
}

#[test]
fn mirror_applies_single_events() {
    let kv = |name: &str, value: &str, rev: Revision| KeyValue {
        key: key(name),
        value: value.into(),
        create_revision: 2,
        mod_revision: rev,
        version: 1,
        lease: 0,
    };
    let changed = |kind, kv: KeyValue| {
        ListWatchEvent::Changed(Event {
            kind,
            kv,
            prev_kv: None,
        })
    };
    let mut mirror = KvMirror::new();
    assert!(mirror.is_empty());
    let added = mirror.apply(&changed(EventKind::Put, kv("a", "1", 3)));
    assert_eq!(
        added,
        [KvChange::Added {
            kv: kv("a", "1", 3),
            revision: 3
        }]
    );
    let modified = mirror.apply(&changed(EventKind::Put, kv("a", "2", 4)));
    assert_eq!(
        modified,
        [KvChange::Modified {
            prev: kv("a", "1", 3),
            kv: kv("a", "2", 4),
            revision: 4
        }]
    );
    assert_eq!(modified[0].key(), key("a"));
    // A delete carries the key only; the change reports what was held.
    let deleted = mirror.apply(&changed(EventKind::Delete, kv("a", "", 5)));
    assert_eq!(
        deleted,
        [KvChange::Deleted {
            prev: kv("a", "2", 4),
            revision: 5
        }]
    );
    assert_eq!(deleted[0].revision(), 5);
    // Deleting a key the mirror never had changes nothing.
    assert!(
        mirror
            .apply(&changed(EventKind::Delete, kv("b", "", 6)))
            .is_empty()
    );
    assert!(mirror.is_empty());
    assert_eq!(mirror.revision(), 6);
    assert_eq!(mirror.get(&key("a")), None);
}

#[tokio::test(start_paused = true)]
async fn retryable_list_failures_are_retried_with_backoff() {
    let (store, mut lw) = failing_lists(2, 3).await;
    let started = Instant::now();
    let event = lw.next().await.unwrap();
    assert!(matches!(event, ListWatchEvent::Listed { ref kvs, .. } if kvs.len() == 1));
    assert_eq!(store.faults.lock().get_calls, 3);
    // Waited 100 ms, then 200 ms, on the (paused) tokio clock.
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_return_the_error_and_the_next_call_resumes() {
    let (store, mut lw) = failing_lists(3, 2).await;
    let err = lw.next().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(store.faults.lock().get_calls, 2);
    // A fresh budget: the third get fails, the fourth lists.
    assert!(matches!(
        lw.next().await.unwrap(),
        ListWatchEvent::Listed { .. }
    ));
    assert_eq!(store.faults.lock().get_calls, 4);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_errors_are_returned_at_once() {
    let store = Faulty::new(Faults::default());
    let mut lw = ListWatch::prefix(store.clone(), PREFIX);
    store.inner.close().await.unwrap();
    assert!(matches!(lw.next().await, Err(StoreError::Closed)));
    assert_eq!(store.faults.lock().get_calls, 1);
    assert!(matches!(lw.next().await, Err(StoreError::Closed)));
    assert_eq!(store.faults.lock().get_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn ended_or_failed_streams_are_reopened_without_gaps() {
    for end_with_error in [false, true] {
        let store = Faulty::new(Faults {
            batches_per_stream: Some(1),
            end_with_error,
            ..Faults::default()
        });
        let mut lw = ListWatch::prefix(store.clone(), PREFIX);
        assert!(matches!(
            lw.next().await.unwrap(),
            ListWatchEvent::Listed { .. }
        ));
        let (mut want, mut got) = (Vec::new(), Vec::new());
        // Writes land while streams are open and while they are down.
        for (round, writes) in [1, 2, 1, 3].into_iter().enumerate() {
            for i in 0..writes {
                want.push(put(&store, &format!("k{round}-{i}"), "1").await);
            }
            for _ in 0..writes {
                got.push(next_change(&mut lw).await.kv.mod_revision);
            }
        }
        assert_eq!(got, want, "end_with_error={end_with_error}");
        // Several streams were needed, each resuming after the last event.
        assert!(store.faults.lock().watch_calls >= 3);
    }
}

#[tokio::test(start_paused = true)]
async fn reset_lists_again() {
    let store = EmbeddedStore::in_memory();
    put(&store, "a", "1").await;
    let mut lw = ListWatch::prefix(store.clone(), PREFIX);
    assert!(matches!(
        lw.next().await.unwrap(),
        ListWatchEvent::Listed { .. }
    ));
    put(&store, "b", "1").await;
    lw.reset();
    match lw.next().await.unwrap() {
        ListWatchEvent::Listed { kvs, .. } => assert_eq!(kvs.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let waits: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
    assert_eq!(waits, [100, 200, 400, 500, 500]);
    assert_eq!(policy.backoff(u32::MAX), Duration::from_millis(500));
}
