//! Behaviour that needs an etcd of its own: etcd's server-side limits,
//! compaction (global in etcd), restarts and network partitions.
//!
//! Each test starts a `PrivateEtcd` (the `etcd` binary, free loopback
//! ports, a temporary data dir). The tests run whenever real-etcd tests do
//! (`DROVER_ETCD_ENDPOINTS` set, which says etcd is installed and wanted).

use std::time::Duration;

use drover_store::testing::etcd_endpoints;
use drover_store::{
    Delete, EventKind, Get, Put, Revision, Store, StoreError, Txn, Watch, WatchStream,
};
use drover_store_etcd::testing::{FaultProxy, PrivateEtcd};
use drover_store_etcd::{EtcdConfig, EtcdStore};

/// Bound on waiting for one watch batch or one retried call.
const WAIT: Duration = Duration::from_secs(30);
/// Attempts of a call retried while etcd comes back (each bounded by the
/// request timeout).
const ATTEMPTS: usize = 100;

async fn private_etcd(args: &[&str]) -> Option<PrivateEtcd> {
    etcd_endpoints()?;
    Some(
        PrivateEtcd::start_with_args(args.iter().copied())
            .await
            .expect("start a private etcd"),
    )
}

fn fast_config() -> EtcdConfig {
    EtcdConfig::default()
        .with_connect_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(2))
        .with_watch_retry(Duration::from_millis(20), Duration::from_millis(200))
}

async fn connect(endpoints: Vec<String>) -> EtcdStore {
    EtcdStore::connect(endpoints, fast_config())
        .await
        .expect("connect")
}

/// Retry a call while it fails with a retryable error (etcd restarting).
async fn retrying<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match call().await {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => last = Some(e),
            Err(e) => panic!("non-retryable error: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("still failing after {ATTEMPTS} attempts: {last:?}");
}

/// Events as (key, kind, mod revision), read until `want` events arrived.
async fn collect(watch: &mut WatchStream, want: usize) -> Vec<(String, EventKind, Revision)> {
    let mut seen = Vec::new();
    while seen.len() < want {
        let batch = tokio::time::timeout(WAIT, watch.next_batch())
            .await
            .expect("a watch batch within the bound")
            .expect("the watch stream goes on")
            .expect("no watch error");
        assert!(!batch.events.is_empty(), "no empty batches");
        for ev in batch.events {
            assert!(ev.kv.mod_revision <= batch.revision);
            seen.push((ev.kv.key_str().into_owned(), ev.kind, ev.kv.mod_revision));
        }
    }
    assert_eq!(seen.len(), want, "no more events than written: {seen:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_side_limits_map_to_the_same_typed_errors() {
    // Limits below the port's, so requests pass validation and etcd itself
    // rejects them.
    let Some(etcd) = private_etcd(&["--max-request-bytes=1024", "--max-txn-ops=2"]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    let big = store.put(Put::new("/big", vec![7u8; 4096])).await;
    assert!(
        matches!(big, Err(StoreError::RequestTooLarge { .. })),
        "{big:?}"
    );
    let txn = Txn::new().and_then([
        Put::new("/a", "1").into(),
        Put::new("/b", "2").into(),
        Put::new("/c", "3").into(),
    ]);
    let many = store.txn(txn).await;
    assert!(
        matches!(many, Err(StoreError::TooManyOps { .. })),
        "{many:?}"
    );
    assert_eq!(
        store.get(Get::prefix("/")).await.unwrap().count,
        0,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_errors_carry_the_compact_revision() {
    let Some(etcd) = private_etcd(&[]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            store
                .put(Put::new("/c/k", format!("v{i}")))
                .await
                .unwrap()
                .revision,
        );
    }
    let point = revs[3];
    store.compact(point).await.unwrap();

    match store.get(Get::key("/c/k").at_revision(revs[1])).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => assert_eq!((requested, compact_revision), (revs[1], point)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // Reading at the compaction point itself still works, as in etcd.
    let at_point = store
        .get(Get::key("/c/k").at_revision(point))
        .await
        .unwrap();
    assert_eq!(at_point.kvs[0].value, b"v3");
    match store.compact(revs[2]).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => assert_eq!((requested, compact_revision), (revs[2], point)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let current = store.current_revision().await.unwrap();
    match store.compact(current + 10).await {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!((requested, c), (current + 10, current));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }

    let mut watch = store
        .watch(Watch::key("/c/k").from_revision(revs[0]))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, watch.next_batch())
        .await
        .unwrap();
    assert!(
        matches!(
            first,
            Some(Err(StoreError::Compacted { requested, compact_revision }))
                if requested == revs[0] && compact_revision == point
        ),
        "{first:?}"
    );
    let end = tokio::time::timeout(WAIT, watch.next_batch())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after Compacted: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_an_etcd_restart_without_gaps() {
    let Some(mut etcd) = private_etcd(&[]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    let mut watch = store
        .watch(Watch::prefix("/w/").with_prev_kv())
        .await
        .unwrap();

    let r1 = store.put(Put::new("/w/a", "1")).await.unwrap().revision;
    let r2 = store.put(Put::new("/w/b", "1")).await.unwrap().revision;
    let before = collect(&mut watch, 2).await;
    assert_eq!(
        before,
        vec![
            ("/w/a".into(), EventKind::Put, r1),
            ("/w/b".into(), EventKind::Put, r2)
        ]
    );

    etcd.restart().await.expect("restart etcd");

    // The same store keeps working for unary calls once etcd is back.
    let r3 = retrying(|| store.put(Put::new("/w/a", "2"))).await.revision;
    let r4 = retrying(|| store.delete(Delete::key("/w/b")))
        .await
        .revision;
    let txn = Txn::new().and_then([Put::new("/w/c", "1").into(), Put::new("/w/d", "1").into()]);
    let r5 = retrying(|| store.txn(txn.clone())).await.revision;
    let after = collect(&mut watch, 4).await;
    assert_eq!(
        after,
        vec![
            ("/w/a".into(), EventKind::Put, r3),
            ("/w/b".into(), EventKind::Delete, r4),
            ("/w/c".into(), EventKind::Put, r5),
            ("/w/d".into(), EventKind::Put, r5),
        ]
    );
    assert!(r1 < r2 && r2 < r3 && r3 < r4 && r4 < r5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_catches_up_on_writes_made_while_partitioned() {
    let Some(etcd) = private_etcd(&[]).await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.client_addr()).await.unwrap();
    let watcher = connect(vec![proxy.endpoint()]).await;
    let direct = connect(etcd.endpoints()).await;
    let mut watch = watcher
        .watch(Watch::prefix("/p/").with_prev_kv())
        .await
        .unwrap();

    let r1 = direct.put(Put::new("/p/a", "1")).await.unwrap().revision;
    assert_eq!(
        collect(&mut watch, 1).await,
        vec![("/p/a".into(), EventKind::Put, r1)]
    );

    proxy.cut();
    let mut written = Vec::new();
    for i in 0..5 {
        let key = format!("/p/k{i}");
        let rev = direct
            .put(Put::new(key.clone(), "v"))
            .await
            .unwrap()
            .revision;
        written.push((key, EventKind::Put, rev));
    }
    let rev = direct.delete(Delete::key("/p/a")).await.unwrap().revision;
    written.push(("/p/a".into(), EventKind::Delete, rev));
    proxy.heal();

    assert_eq!(collect(&mut watch, written.len()).await, written);
    // Unary calls through the healed path work again too.
    let got = retrying(|| watcher.get(Get::prefix("/p/"))).await;
    assert_eq!(got.count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_compaction_that_happened_while_partitioned() {
    let Some(etcd) = private_etcd(&[]).await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.client_addr()).await.unwrap();
    let watcher = connect(vec![proxy.endpoint()]).await;
    let direct = connect(etcd.endpoints()).await;
    let mut watch = watcher.watch(Watch::prefix("/q/")).await.unwrap();

    let r1 = direct.put(Put::new("/q/a", "1")).await.unwrap().revision;
    assert_eq!(
        collect(&mut watch, 1).await,
        vec![("/q/a".into(), EventKind::Put, r1)]
    );

    proxy.cut();
    direct.put(Put::new("/q/a", "2")).await.unwrap();
    let r3 = direct.put(Put::new("/q/a", "3")).await.unwrap().revision;
    direct.compact(r3).await.unwrap();
    proxy.heal();

    // The watch owed revision r1 + 1, which is gone: Compacted, then the end.
    let item = tokio::time::timeout(WAIT, watch.next_batch())
        .await
        .unwrap();
    assert!(
        matches!(
            item,
            Some(Err(StoreError::Compacted { requested, compact_revision }))
                if requested == r1 + 1 && compact_revision == r3
        ),
        "{item:?}"
    );
    assert!(
        tokio::time::timeout(WAIT, watch.next_batch())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_leases_survive_an_etcd_restart() {
    let Some(mut etcd) = private_etcd(&[]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    let lease = store.lease_grant(30).await.unwrap();
    store
        .put(Put::new("/l/k", "v").with_lease(lease.id))
        .await
        .unwrap();
    assert!(store.lease_keep_alive(lease.id).await.unwrap() > 0);

    etcd.restart().await.expect("restart etcd");

    // The open keep-alive stream broke; the renewal replaces it.
    let ttl = retrying(|| store.lease_keep_alive(lease.id)).await;
    assert!(ttl > 0 && ttl <= 30);
    assert_eq!(store.open_keep_alive_streams(), 1);
    let ttl = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(ttl.keys, vec![b"/l/k".to_vec()]);
    store.lease_revoke(lease.id).await.unwrap();
    assert_eq!(store.get(Get::key("/l/k")).await.unwrap().count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_gives_unavailable_then_recovers() {
    let Some(mut etcd) = private_etcd(&[]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    store.put(Put::new("/s/k", "v")).await.unwrap();
    etcd.stop().unwrap();
    let down = tokio::time::timeout(WAIT, store.get(Get::key("/s/k")))
        .await
        .expect("the call gives up on its own");
    assert!(
        matches!(down, Err(StoreError::Unavailable { .. })),
        "{down:?}"
    );
    etcd.restart().await.unwrap();
    let back = retrying(|| store.get(Get::key("/s/k"))).await;
    assert_eq!(back.kvs[0].value, b"v");
}

/// A gauge from etcd's Prometheus metrics (served on the client port).
async fn etcd_gauge(etcd: &PrivateEtcd, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(etcd.client_addr())
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut body))
        .await
        .expect("metrics within the bound")
        .unwrap();
    body.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("metric {name} not found"))
}

/// Poll a gauge until it equals `want` (bounded).
async fn wait_for_gauge(etcd: &PrivateEtcd, name: &str, want: f64) {
    let mut last = f64::NAN;
    for _ in 0..100 {
        last = etcd_gauge(etcd, name).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} stayed at {last}, expected {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_watch_stream_cancels_the_watch_in_etcd() {
    let Some(etcd) = private_etcd(&[]).await else {
        return;
    };
    let store = connect(etcd.endpoints()).await;
    let watcher = "etcd_debugging_mvcc_watcher_total";
    wait_for_gauge(&etcd, watcher, 0.0).await;

    let a = store.watch(Watch::prefix("/x/")).await.unwrap();
    let b = store.watch(Watch::key("/x/k")).await.unwrap();
    let mut c = store.watch(Watch::key("/x/j")).await.unwrap();
    wait_for_gauge(&etcd, watcher, 3.0).await;
    drop(a);
    drop(b);
    wait_for_gauge(&etcd, watcher, 1.0).await;

    // The remaining watch still works.
    let rev = store.put(Put::new("/x/j", "v")).await.unwrap().revision;
    assert_eq!(
        collect(&mut c, 1).await,
        vec![("/x/j".into(), EventKind::Put, rev)]
    );
    drop(c);
    wait_for_gauge(&etcd, watcher, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_gap_free_across_repeated_partitions() {
    let Some(etcd) = private_etcd(&[]).await else {
        return;
    };
    let proxy = FaultProxy::start(etcd.client_addr()).await.unwrap();
    let watcher = connect(vec![proxy.endpoint()]).await;
    let direct = connect(etcd.endpoints()).await;

    // Some history first, so the watch starts by catching up from the past.
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("/r/k{}", i % 7);
        let rev = direct
            .put(Put::new(key.clone(), format!("{i}")))
            .await
            .unwrap()
            .revision;
        written.push((key, EventKind::Put, rev));
    }
    let mut watch = watcher
        .watch(Watch::prefix("/r/").from_revision(written[0].2))
        .await
        .unwrap();

    // Writes keep coming while the watcher's connection is cut and healed
    // again and again; another key range is written too, so the revisions
    // the watch sees are not contiguous.
    let mut delivered = Vec::new();
    for i in 20..200 {
        if i % 30 == 0 {
            // Cut only once the watch is up to date, so each partition
            // interrupts it at a different revision.
            let owed = written.len() - delivered.len();
            delivered.extend(collect(&mut watch, owed).await);
            proxy.cut();
        }
        if i % 30 == 7 {
            proxy.heal();
        }
        let key = format!("/r/k{}", i % 7);
        let rev = if i % 11 == 0 {
            direct
                .delete(Delete::key(key.clone()))
                .await
                .unwrap()
                .revision
        } else {
            direct
                .put(Put::new(key.clone(), format!("{i}")))
                .await
                .unwrap()
                .revision
        };
        let deleted = i % 11 == 0;
        direct
            .put(Put::new("/other", format!("{i}")))
            .await
            .unwrap();
        // Deleting a key that does not exist writes nothing.
        if !deleted
            || written
                .iter()
                .rev()
                .find(|(k, _, _)| *k == key)
                .is_some_and(|(_, kind, _)| *kind == EventKind::Put)
        {
            let kind = if deleted {
                EventKind::Delete
            } else {
                EventKind::Put
            };
            written.push((key, kind, rev));
        }
    }
    proxy.heal();
    let owed = written.len() - delivered.len();
    delivered.extend(collect(&mut watch, owed).await);
    assert_eq!(delivered, written);
}
