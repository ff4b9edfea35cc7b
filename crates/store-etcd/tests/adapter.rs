//! Adapter behaviour beyond the shared conformance suite, on the shared etcd
//! (`DROVER_ETCD_ENDPOINTS`): typed errors from etcd's own answers, request
//! bounds on dead endpoints, keep-alive stream reuse, the crate example.

use std::time::Duration;

use drover_store::testing::{etcd_endpoints, unique_prefix};
use drover_store::{
    Compare, CompareOp, Delete, Get, KeyRange, Put, Store, StoreError, Txn, TxnOp, TxnOpResponse,
    Watch,
};
use drover_store_etcd::{EtcdConfig, EtcdStore};
use tokio::net::TcpListener;

/// A lease id etcd has never granted (ids are random 63-bit values).
const UNKNOWN_LEASE: i64 = 0x0bad_cafe_0000_0001;

/// Upper bound for calls that must fail fast rather than hang; generous, it
/// only catches hangs.
const HANG_GUARD: Duration = Duration::from_secs(30);

use drover_store_etcd::testing::shared_etcd as shared_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crate_example_runs() {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    // The crate-level example, with the test's etcd and a private key.
    let key = format!("{}rcs/web", unique_prefix("example"));
    let store = EtcdStore::connect(endpoints, EtcdConfig::default())
        .await
        .unwrap();
    store
        .put(Put::new(key.clone(), "replicas: 3"))
        .await
        .unwrap();
    let got = store.get(Get::key(key)).await.unwrap();
    assert_eq!(got.kvs[0].value, b"replicas: 3");
    assert_eq!(store.backend_name(), "etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_leases_are_lease_not_found_everywhere() {
    let Some(store) = shared_store().await else {
        return;
    };
    let prefix = unique_prefix("unknown-lease");

    let put = store
        .put(Put::new(format!("{prefix}k"), "v").with_lease(UNKNOWN_LEASE))
        .await;
    assert!(
        matches!(put, Err(StoreError::LeaseNotFound(UNKNOWN_LEASE))),
        "{put:?}"
    );
    assert!(matches!(
        store.lease_revoke(UNKNOWN_LEASE).await,
        Err(StoreError::LeaseNotFound(UNKNOWN_LEASE))
    ));
    assert!(matches!(
        store.lease_keep_alive(UNKNOWN_LEASE).await,
        Err(StoreError::LeaseNotFound(UNKNOWN_LEASE))
    ));
    assert!(matches!(
        store.lease_time_to_live(UNKNOWN_LEASE).await,
        Err(StoreError::LeaseNotFound(UNKNOWN_LEASE))
    ));
    assert_eq!(
        store.open_keep_alive_streams(),
        0,
        "a failed renewal keeps no stream"
    );

    // In a txn with a live lease and an unknown one, the error names the
    // unknown one, and nothing was written.
    let live = store.lease_grant(30).await.unwrap();
    let txn = Txn::new().and_then([
        Put::new(format!("{prefix}a"), "1")
            .with_lease(live.id)
            .into(),
        Put::new(format!("{prefix}b"), "2")
            .with_lease(UNKNOWN_LEASE)
            .into(),
    ]);
    let result = store.txn(txn).await;
    assert!(
        matches!(result, Err(StoreError::LeaseNotFound(UNKNOWN_LEASE))),
        "{result:?}"
    );
    assert_eq!(
        store.get(Get::prefix(prefix.clone())).await.unwrap().count,
        0
    );
    store.lease_revoke(live.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_revision_reports_the_current_revision() {
    let Some(store) = shared_store().await else {
        return;
    };
    let before = store.current_revision().await.unwrap();
    let requested = before + 1_000_000;
    match store.get(Get::key("/any").at_revision(requested)).await {
        Err(StoreError::FutureRevision {
            requested: r,
            current,
        }) => {
            assert_eq!(r, requested);
            assert!(
                current >= before && current < requested,
                "current {current}"
            );
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_runs_before_anything_is_sent() {
    let Some(store) = shared_store().await else {
        return;
    };
    let prefix = unique_prefix("validation");
    let before = store.current_revision().await.unwrap();

    let too_big = Put::new(
        format!("{prefix}big"),
        vec![0u8; drover_store::MAX_REQUEST_BYTES],
    );
    assert!(matches!(
        store.put(too_big).await,
        Err(StoreError::RequestTooLarge { .. })
    ));
    let dup = Txn::new().and_then([
        Put::new(format!("{prefix}d"), "1").into(),
        Put::new(format!("{prefix}d"), "2").into(),
    ]);
    assert!(
        matches!(store.txn(dup).await, Err(StoreError::DuplicateKey { key }) if key.ends_with("d"))
    );
    let many =
        Txn::new().and_then((0..129).map(|i| TxnOp::Put(Put::new(format!("{prefix}{i}"), "v"))));
    assert!(matches!(
        store.txn(many).await,
        Err(StoreError::TooManyOps { ops: 129, .. })
    ));
    assert!(matches!(
        store
            .lease_grant(drover_store::MAX_LEASE_TTL_SECS + 1)
            .await,
        Err(StoreError::LeaseTtlTooLarge { .. })
    ));
    assert!(matches!(
        store.put(Put::new("", "v")).await,
        Err(StoreError::InvalidArgument(_))
    ));
    let reversed = Get::new(KeyRange::Range {
        start: b"b".to_vec(),
        end: b"a".to_vec(),
    });
    assert!(matches!(
        store.get(reversed).await,
        Err(StoreError::InvalidArgument(_))
    ));

    assert!(store.get(Get::prefix(prefix)).await.unwrap().kvs.is_empty());
    assert!(store.current_revision().await.unwrap() >= before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_prefix_means_every_key() {
    let Some(store) = shared_store().await else {
        return;
    };
    let prefix = unique_prefix("all-keys");
    store
        .put(Put::new(format!("{prefix}k"), "v"))
        .await
        .unwrap();
    let all = store.get(Get::prefix("").count_only()).await.unwrap();
    assert!(all.count >= 1);
    let watch = store.watch(Watch::prefix("")).await;
    assert!(watch.is_ok(), "watching every key is allowed: {watch:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_one_stream_per_lease() {
    let Some(store) = shared_store().await else {
        return;
    };
    let a = store.lease_grant(20).await.unwrap();
    let b = store.lease_grant(20).await.unwrap();
    for _ in 0..5 {
        let ttl = store.lease_keep_alive(a.id).await.unwrap();
        assert!(ttl > 0 && ttl <= 20, "ttl {ttl}");
    }
    assert_eq!(store.open_keep_alive_streams(), 1);
    // Clones share the streams.
    let clone = store.clone();
    clone.lease_keep_alive(a.id).await.unwrap();
    clone.lease_keep_alive(b.id).await.unwrap();
    assert_eq!(store.open_keep_alive_streams(), 2);

    // Revoked elsewhere: the open stream answers TTL 0, which is LeaseNotFound.
    let other = EtcdStore::connect(store.endpoints().to_vec(), EtcdConfig::default())
        .await
        .unwrap();
    other.lease_revoke(a.id).await.unwrap();
    assert!(matches!(
        store.lease_keep_alive(a.id).await,
        Err(StoreError::LeaseNotFound(id)) if id == a.id
    ));
    assert_eq!(store.open_keep_alive_streams(), 1);
    store.lease_revoke(b.id).await.unwrap();
    assert_eq!(store.open_keep_alive_streams(), 0);
}

/// A renewal abandoned after its request went out (as the `Lease` handle
/// abandons a keep-alive that outlives its interval) must not leave its
/// answer behind for the next renewal: that answer is older than the next
/// request, so taking it would overstate how long the lease is valid, or
/// report a revoked lease as renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_renewal_leaves_no_stale_answer_for_the_next() {
    use futures::FutureExt;

    let Some(store) = shared_store().await else {
        return;
    };
    let lease = store.lease_grant(20).await.unwrap();
    store.lease_keep_alive(lease.id).await.unwrap(); // opens the stream
    // One poll sends the request; the answer needs a round trip.
    let abandoned = store.lease_keep_alive(lease.id).now_or_never();
    assert!(abandoned.is_none(), "no round trip completes in one poll");
    // Give the abandoned request's answer time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = EtcdStore::connect(store.endpoints().to_vec(), EtcdConfig::default())
        .await
        .unwrap();
    other.lease_revoke(lease.id).await.unwrap();
    let renewed = store.lease_keep_alive(lease.id).await;
    assert!(
        matches!(renewed, Err(StoreError::LeaseNotFound(id)) if id == lease.id),
        "a revoked lease renewed by a stale answer: {renewed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_renewals_of_one_lease_all_succeed() {
    let Some(store) = shared_store().await else {
        return;
    };
    let lease = store.lease_grant(20).await.unwrap();
    let renewals: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.lease_keep_alive(lease.id).await })
        })
        .collect();
    for renewal in renewals {
        let ttl = renewal.await.unwrap().unwrap();
        assert!(ttl > 0);
    }
    assert_eq!(store.open_keep_alive_streams(), 1);
    store.lease_revoke(lease.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_maps_every_op_response() {
    let Some(store) = shared_store().await else {
        return;
    };
    let prefix = unique_prefix("txn-responses");
    let k = |s: &str| format!("{prefix}{s}");
    store.put(Put::new(k("old"), "o")).await.unwrap();
    let lease = store.lease_grant(30).await.unwrap();
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::value(k("old"), CompareOp::Equal, "o")])
                .and_then([
                    Put::new(k("new"), "n").with_lease(lease.id).into(),
                    Get::prefix(prefix.clone()).into(),
                    Delete::key(k("old")).with_prev_kv().into(),
                ]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.responses.len(), 3);
    let TxnOpResponse::Put(put) = &resp.responses[0] else {
        panic!("{resp:?}")
    };
    assert_eq!(put.revision, resp.revision);
    let TxnOpResponse::Get(get) = &resp.responses[1] else {
        panic!("{resp:?}")
    };
    let keys: Vec<_> = get.kvs.iter().map(|kv| kv.key_str().into_owned()).collect();
    assert_eq!(keys, vec![k("new"), k("old")]);
    assert_eq!(get.kvs[0].lease, lease.id);
    let TxnOpResponse::Delete(del) = &resp.responses[2] else {
        panic!("{resp:?}")
    };
    assert_eq!(del.deleted, 1);
    assert_eq!(del.prev_kvs[0].value, b"o");
    store.lease_revoke(lease.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_endpoint_is_unavailable_not_a_hang() {
    // A port nothing listens on: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    assert_unavailable_everywhere(&endpoint).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_endpoint_is_unavailable_not_a_hang() {
    // A listener that accepts connections and never answers: the case a
    // client without its own deadline would wait on forever.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    assert_unavailable_everywhere(&endpoint).await;
    holder.abort();
}

async fn bounded<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, call)
        .await
        .expect("the call must give up on its own")
}

async fn assert_unavailable_everywhere(endpoint: &str) {
    let config = EtcdConfig::default()
        .with_connect_timeout(Duration::from_millis(300))
        .with_request_timeout(Duration::from_millis(500));
    let connect = tokio::time::timeout(HANG_GUARD, EtcdStore::connect([endpoint], config.clone()))
        .await
        .expect("connect must give up on its own");
    assert!(
        matches!(&connect, Err(e @ StoreError::Unavailable { .. }) if e.is_retryable()),
        "{connect:?}"
    );

    let store = EtcdStore::connect_lazy([endpoint], config).await.unwrap();
    let get = bounded(async { store.get(Get::key("k")).await.map(drop) }).await;
    assert!(
        matches!(get, Err(StoreError::Unavailable { .. })),
        "{get:?}"
    );
    let put = bounded(async { store.put(Put::new("k", "v")).await.map(drop) }).await;
    assert!(
        matches!(put, Err(StoreError::Unavailable { .. })),
        "{put:?}"
    );
    let txn = bounded(async { store.txn(Txn::new()).await.map(drop) }).await;
    assert!(
        matches!(txn, Err(StoreError::Unavailable { .. })),
        "{txn:?}"
    );
    let watch = bounded(async { store.watch(Watch::key("k")).await.map(drop) }).await;
    assert!(
        matches!(watch, Err(StoreError::Unavailable { .. })),
        "{watch:?}"
    );
    let grant = bounded(async { store.lease_grant(5).await.map(drop) }).await;
    assert!(
        matches!(grant, Err(StoreError::Unavailable { .. })),
        "{grant:?}"
    );
    let renew = bounded(async { store.lease_keep_alive(1).await.map(drop) }).await;
    assert!(
        matches!(renew, Err(StoreError::Unavailable { .. })),
        "{renew:?}"
    );
    let rev = bounded(async { store.current_revision().await.map(drop) }).await;
    assert!(
        matches!(rev, Err(StoreError::Unavailable { .. })),
        "{rev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_endpoints_are_invalid_arguments() {
    let none: [&str; 0] = [];
    assert!(matches!(
        EtcdStore::connect_lazy(none, EtcdConfig::default()).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        EtcdStore::connect_lazy(["http://bad host:1"], EtcdConfig::default()).await,
        Err(StoreError::InvalidArgument(_))
    ));
}

/// etcd's periodic progress notifications reach the caller as empty
/// batches. `cargo xtask test` starts etcd with a 1 s notify interval
/// (etcd's default is 10 minutes, too long for a test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_passes_etcds_notifications_through() {
    let Some(store) = shared_store().await else {
        return;
    };
    let prefix = unique_prefix("progress-notify");
    let mut watch = store
        .watch(Watch::prefix(prefix.clone()).with_progress_notify())
        .await
        .unwrap();
    let r = store
        .put(Put::new(format!("{prefix}a"), "1"))
        .await
        .unwrap()
        .revision;
    let first = tokio::time::timeout(HANG_GUARD, watch.next_batch())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.events[0].kv.mod_revision, r);
    let progress = tokio::time::timeout(HANG_GUARD, watch.next_batch())
        .await
        .expect("a progress notification (is etcd's notify interval short?)")
        .unwrap()
        .unwrap();
    assert!(progress.events.is_empty(), "{progress:?}");
    assert!(progress.revision >= r);
}
