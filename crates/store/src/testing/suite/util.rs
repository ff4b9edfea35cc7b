//! Helpers shared by the conformance cases.

use std::future::Future;
use std::time::Duration;

use crate::{
    Event, EventKind, Get, KeyValue, LeaseId, Put, Result, Revision, Store, StoreError, WatchBatch,
    WatchStream,
};

/// Upper bound for anything a case waits for (lease expiry on etcd happens
/// within TTL + ~0.5 s; paused time makes these waits instant).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A lease id no store has granted (etcd grants ids from a random-ish
/// member-derived counter; this one is far from any).
pub(crate) const UNKNOWN_LEASE: LeaseId = 0x7eed_beef_0000_0001;

pub(crate) fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// [`crate::testing::eventually`] within [`WAIT`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::testing::eventually(what, WAIT, check).await
}

pub(crate) async fn get_one<S: Store>(store: &S, k: &str) -> Result<Option<KeyValue>> {
    Ok(store.get(Get::key(k)).await?.kvs.into_iter().next())
}

pub(crate) async fn put<S: Store>(store: &S, k: &str, v: &str) -> Result<Revision> {
    Ok(store.put(Put::new(k, v)).await?.revision)
}

/// The next batch, failing the case after [`WAIT`].
pub(crate) async fn next_batch(watch: &mut WatchStream) -> Result<WatchBatch> {
    match tokio::time::timeout(WAIT, watch.next_batch()).await {
        Ok(Some(batch)) => batch,
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch batch within {WAIT:?}"),
    }
}

/// Collects exactly `n` events (failing on more in the last batch), checking
/// that every batch is non-empty and its header revision covers its events.
pub(crate) async fn next_events(watch: &mut WatchStream, n: usize) -> Result<Vec<Event>> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let batch = next_batch(watch).await?;
        check_batch(&batch);
        events.extend(batch.events);
    }
    assert_eq!(events.len(), n, "more events than expected: {events:#?}");
    Ok(events)
}

pub(crate) fn check_batch(batch: &WatchBatch) {
    assert!(!batch.events.is_empty(), "empty watch batch: {batch:?}");
    for e in &batch.events {
        assert!(
            batch.revision >= e.kv.mod_revision,
            "batch revision {} below an event's revision {}",
            batch.revision,
            e.kv.mod_revision
        );
    }
}

pub(crate) fn assert_event(e: &Event, kind: EventKind, k: &str, value: &str) {
    assert_eq!(e.kind, kind, "event kind of {e:?}");
    assert_eq!(e.kv.key, k.as_bytes(), "event key of {e:?}");
    assert_eq!(e.kv.value, value.as_bytes(), "event value of {e:?}");
}

/// Asserts that a watch sees nothing before `sentinel` is written: writes
/// `sentinel` and checks it is the first event.
pub(crate) async fn assert_quiet_until<S: Store>(
    store: &S,
    watch: &mut WatchStream,
    sentinel: &str,
) -> Result<()> {
    let rev = put(store, sentinel, "sentinel").await?;
    let batch = next_batch(watch).await?;
    check_batch(&batch);
    assert_eq!(
        batch.events[0].kv.key,
        sentinel.as_bytes(),
        "expected no events before the sentinel, got {:#?}",
        batch.events
    );
    assert_eq!(batch.events[0].kv.mod_revision, rev);
    Ok(())
}

pub(crate) fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| kv.key_str().into_owned()).collect()
}

/// Waits until the store no longer knows `lease` (expiry).
pub(crate) async fn wait_lease_gone<S: Store>(store: &S, lease: LeaseId) {
    eventually("the lease to expire", || async {
        match store.lease_time_to_live(lease).await {
            Err(StoreError::LeaseNotFound(_)) => Some(()),
            Ok(_) => None,
            Err(e) => panic!("lease_time_to_live failed: {e:?}"),
        }
    })
    .await
}

pub(crate) fn expect_err<T: std::fmt::Debug>(
    what: &str,
    r: Result<T>,
    ok: impl Fn(&StoreError) -> bool,
) {
    match r {
        Err(e) if ok(&e) => {}
        other => panic!("{what}: unexpected result {other:?}"),
    }
}

/// Puts `k` attached to `lease`; returns the put's revision.
pub(crate) async fn put_leased<S: Store>(
    store: &S,
    k: &str,
    v: &str,
    lease: LeaseId,
) -> Result<Revision> {
    Ok(store.put(Put::new(k, v).with_lease(lease)).await?.revision)
}
