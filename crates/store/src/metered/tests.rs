use std::time::Duration;

use drover_metrics::MetricsRegistry;
use drover_metrics::testing::{parse, value};

use super::*;
use crate::StoreError;
use crate::embedded::EmbeddedStore;

fn scrape(registry: &MetricsRegistry) -> drover_metrics::testing::prometheus_parse::Scrape {
    parse(&registry.encode().unwrap())
}

fn requests(registry: &MetricsRegistry, op: &str, result: &str) -> Option<f64> {
    value(
        &scrape(registry),
        "drover_store_requests_total",
        &[("op", op), ("backend", "embedded"), ("result", result)],
    )
}

fn watches_open(registry: &MetricsRegistry) -> Option<f64> {
    value(
        &scrape(registry),
        "drover_store_watch_streams_open",
        &[("backend", "embedded")],
    )
}

#[tokio::test(start_paused = true)]
async fn requests_are_counted_per_op_and_result() {
    let registry = MetricsRegistry::new();
    let store = Metered::new(EmbeddedStore::in_memory(), &registry);
    store.put(Put::new("/m/a", "1")).await.unwrap();
    store.put(Put::new("/m/b", "2")).await.unwrap();
    store.get(Get::key("/m/a")).await.unwrap();
    store.delete(Delete::key("/m/b")).await.unwrap();
    store.current_revision().await.unwrap();
    // A failed call is counted as an error.
    let err = store.lease_keep_alive(0x7357).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseNotFound(_)), "{err}");

    assert_eq!(requests(&registry, "put", "ok"), Some(2.0));
    assert_eq!(requests(&registry, "get", "ok"), Some(1.0));
    assert_eq!(requests(&registry, "delete", "ok"), Some(1.0));
    assert_eq!(requests(&registry, "current_revision", "ok"), Some(1.0));
    assert_eq!(requests(&registry, "lease_keep_alive", "error"), Some(1.0));
    assert_eq!(requests(&registry, "lease_keep_alive", "ok"), None);
    assert_eq!(requests(&registry, "get", "error"), None);
    let s = scrape(&registry);
    let count = |op| {
        value(
            &s,
            "drover_store_request_duration_seconds_count",
            &[("op", op), ("backend", "embedded")],
        )
    };
    assert_eq!(count("put"), Some(2.0));
    assert_eq!(count("lease_keep_alive"), Some(1.0));
}

/// Lease keep-alives sent and failed, as an agent's lease sees them: the
/// lease lives while kept alive, then its keep-alive fails once it expired.
#[tokio::test(start_paused = true)]
async fn lease_keep_alives_sent_and_failed() {
    let registry = MetricsRegistry::new();
    let store = Metered::new(EmbeddedStore::in_memory(), &registry);
    let lease = store.lease_grant(2).await.unwrap().id;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        store.lease_keep_alive(lease).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(store.lease_keep_alive(lease).await.is_err());
    assert_eq!(requests(&registry, "lease_grant", "ok"), Some(1.0));
    assert_eq!(requests(&registry, "lease_keep_alive", "ok"), Some(3.0));
    assert_eq!(requests(&registry, "lease_keep_alive", "error"), Some(1.0));
}

/// The lease and status calls of the etcd API are counted like the rest.
#[tokio::test(start_paused = true)]
async fn lease_listing_fixed_ids_and_status_are_counted() {
    let registry = MetricsRegistry::new();
    let store = Metered::new(EmbeddedStore::in_memory(), &registry);
    store.lease_grant_with_id(0x51, 10).await.unwrap();
    let err = store.lease_grant_with_id(0x51, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseExists(_)), "{err}");
    assert_eq!(store.lease_list().await.unwrap(), vec![0x51]);
    store.status().await.unwrap();
    assert_eq!(requests(&registry, "lease_grant_with_id", "ok"), Some(1.0));
    assert_eq!(
        requests(&registry, "lease_grant_with_id", "error"),
        Some(1.0)
    );
    assert_eq!(requests(&registry, "lease_list", "ok"), Some(1.0));
    assert_eq!(requests(&registry, "status", "ok"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn open_watch_streams_are_a_gauge_that_falls_on_drop() {
    let registry = MetricsRegistry::new();
    let store = Metered::new(EmbeddedStore::in_memory(), &registry);
    let first = store.watch(Watch::prefix("/m/")).await.unwrap();
    let mut second = store.watch(Watch::key("/m/x")).await.unwrap();
    assert_eq!(watches_open(&registry), Some(2.0));
    drop(first);
    assert_eq!(watches_open(&registry), Some(1.0));
    // The wrapped stream still delivers.
    store.put(Put::new("/m/x", "1")).await.unwrap();
    let batch = second.next_batch().await.unwrap().unwrap();
    assert_eq!(batch.events[0].kv.key, b"/m/x");
    drop(second);
    assert_eq!(watches_open(&registry), Some(0.0));
    assert_eq!(requests(&registry, "watch", "ok"), Some(2.0));
}

/// Latency is measured on tokio's clock: with time paused, an in-memory call
/// takes no time at all, and every observation lands in the first bucket.
#[tokio::test(start_paused = true)]
async fn latency_uses_the_tokio_clock() {
    let registry = MetricsRegistry::new();
    let store = Metered::new(EmbeddedStore::in_memory(), &registry);
    for i in 0..5 {
        store.put(Put::new(format!("/m/{i}"), "v")).await.unwrap();
    }
    let s = scrape(&registry);
    let labels = [("op", "put"), ("backend", "embedded")];
    assert_eq!(
        value(&s, "drover_store_request_duration_seconds_sum", &labels),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "drover_store_request_duration_seconds_count", &labels),
        Some(5.0)
    );
}

/// A durable put is acknowledged after its fsync, so its measured latency
/// (on the real clock here) is above zero.
#[tokio::test]
async fn durable_writes_have_measured_latency() {
    let dir = tempfile::tempdir().unwrap();
    let registry = MetricsRegistry::new();
    let durable = EmbeddedStore::open(dir.path(), Default::default())
        .await
        .unwrap();
    let store = Metered::new(durable, &registry);
    store.put(Put::new("/m/durable", "v")).await.unwrap();
    let sum = value(
        &scrape(&registry),
        "drover_store_request_duration_seconds_sum",
        &[("op", "put"), ("backend", "embedded")],
    )
    .unwrap();
    assert!(sum > 0.0, "{sum}");
}

/// Two stores on one registry share the families (one exposition family,
/// counts added up), and a disabled registry still leaves the store working.
#[tokio::test(start_paused = true)]
async fn stores_share_a_registry_and_disabled_is_quiet() {
    let registry = MetricsRegistry::new();
    let one = Metered::new(EmbeddedStore::in_memory(), &registry);
    let two = Metered::new(EmbeddedStore::in_memory(), &registry);
    one.get(Get::key("/m/a")).await.unwrap();
    two.get(Get::key("/m/a")).await.unwrap();
    assert_eq!(requests(&registry, "get", "ok"), Some(2.0));
    let text = registry.encode().unwrap();
    assert_eq!(
        text.matches("# TYPE drover_store_requests counter").count(),
        1
    );

    let quiet = Metered::new(EmbeddedStore::in_memory(), &MetricsRegistry::disabled());
    quiet.put(Put::new("/m/q", "v")).await.unwrap();
    assert_eq!(quiet.get(Get::key("/m/q")).await.unwrap().kvs.len(), 1);
}
