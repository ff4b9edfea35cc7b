//! Lease handle tests: paused time on the embedded in-memory store, wrapped to
//! hang or fail keep-alives on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::time::{sleep, timeout};

use super::*;
use crate::embedded::EmbeddedStore;
use crate::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseTimeToLive, Put, PutResponse,
    Revision, Txn, TxnResponse, Watch, WatchStream,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepAliveMode {
    Pass,
    /// Never answer (a partitioned or wedged store).
    Hang,
    /// Answer with a retryable error.
    Fail,
    /// Answer after this long (a slow network or store).
    Delay(Duration),
}

/// A store that delegates to `inner` but can hang or fail keep-alives.
#[derive(Clone, Debug)]
struct Faulty<S> {
    inner: S,
    mode: Arc<Mutex<KeepAliveMode>>,
    keep_alives: Arc<AtomicUsize>,
}

impl<S: Store> Faulty<S> {
    fn new(inner: S) -> Self {
        Faulty {
            inner,
            mode: Arc::new(Mutex::new(KeepAliveMode::Pass)),
            keep_alives: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn set(&self, mode: KeepAliveMode) {
        *self.mode.lock() = mode;
    }
    fn keep_alive_calls(&self) -> usize {
        self.keep_alives.load(Ordering::SeqCst)
    }
}

impl<S: Store> Store for Faulty<S> {
    fn backend_name(&self) -> &'static str {
        "faulty"
    }
    async fn get(&self, req: Get) -> Result<GetResponse> {
        self.inner.get(req).await
    }
    async fn put(&self, req: Put) -> Result<PutResponse> {
        self.inner.put(req).await
    }
    async fn delete(&self, req: Delete) -> Result<DeleteResponse> {
        self.inner.delete(req).await
    }
    async fn txn(&self, req: Txn) -> Result<TxnResponse> {
        self.inner.txn(req).await
    }
    async fn watch(&self, req: Watch) -> Result<WatchStream> {
        self.inner.watch(req).await
    }
    async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl_secs).await
    }
    async fn lease_grant_with_id(&self, id: LeaseId, ttl_secs: i64) -> Result<LeaseGrant> {
        self.inner.lease_grant_with_id(id, ttl_secs).await
    }
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.inner.lease_list().await
    }
    async fn status(&self) -> Result<crate::StoreStatus> {
        self.inner.status().await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.keep_alives.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock();
        match mode {
            KeepAliveMode::Pass => self.inner.lease_keep_alive(id).await,
            KeepAliveMode::Hang => std::future::pending().await,
            KeepAliveMode::Delay(delay) => {
                sleep(delay).await;
                self.inner.lease_keep_alive(id).await
            }
            KeepAliveMode::Fail => Err(StoreError::Unavailable {
                message: "injected keep-alive failure".into(),
                source: None,
            }),
        }
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.inner.lease_time_to_live(id).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }
}

fn faulty() -> Faulty<EmbeddedStore> {
    Faulty::new(EmbeddedStore::in_memory())
}

/// A lease handle on `store` with the default config for `ttl_secs`.
async fn granted(store: &Faulty<EmbeddedStore>, ttl_secs: i64) -> Lease<Faulty<EmbeddedStore>> {
    Lease::grant(store.clone(), LeaseConfig::new(ttl_secs))
        .await
        .unwrap()
}

async fn put_leased<S: Store>(store: &S, key: &str, lease: LeaseId) {
    store
        .put(Put::new(key, "1").with_lease(lease))
        .await
        .unwrap();
}

async fn key_exists<S: Store>(store: &S, key: &str) -> bool {
    store.get(Get::key(key)).await.unwrap().count == 1
}

#[test]
fn default_config_uses_a_third_and_a_tenth() {
    let c = LeaseConfig::new(30);
    assert_eq!(c.keep_alive_interval, None);
    assert_eq!(c.safety_margin, Duration::from_secs(3));
    assert_eq!(
        LeaseConfig::new(1).safety_margin,
        Duration::from_millis(100)
    );
}

#[tokio::test(start_paused = true)]
async fn bad_configs_are_rejected_before_granting() {
    let store = faulty();
    for (config, what) in [
        (LeaseConfig::new(0), "ttl_secs"),
        (LeaseConfig::new(-3), "ttl_secs"),
        (
            LeaseConfig::new(2).with_safety_margin(Duration::from_secs(2)),
            "safety_margin",
        ),
        (
            LeaseConfig::new(2).with_keep_alive_interval(Duration::ZERO),
            "keep_alive_interval",
        ),
        (
            LeaseConfig::new(2)
                .with_safety_margin(Duration::from_millis(500))
                .with_keep_alive_interval(Duration::from_millis(1500)),
            "keep_alive_interval",
        ),
    ] {
        match Lease::grant(store.clone(), config.clone()).await {
            Err(StoreError::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{config:?}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(matches!(
        Lease::grant(store, LeaseConfig::new(crate::MAX_LEASE_TTL_SECS + 1)).await,
        Err(StoreError::LeaseTtlTooLarge { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn keeps_the_lease_alive_past_many_ttls() {
    let store = faulty();
    let start = Instant::now();
    let lease = granted(&store, 2).await;
    assert_eq!(lease.ttl(), Duration::from_secs(2));
    // Conservative from the start: the grant's send time + TTL - margin.
    assert!(lease.valid_until() <= start + Duration::from_secs(2) - Duration::from_millis(200));
    assert!(lease.is_valid());
    let key = "/drover/nodes/n1";
    store
        .put(Put::new(key, "up").with_lease(lease.id()))
        .await
        .unwrap();

    sleep(Duration::from_secs(20)).await;
    assert!(lease.is_valid());
    assert_eq!(lease.lost_reason(), None);
    assert!(!lease.lost_token().is_cancelled());
    assert!(
        key_exists(&store, key).await,
        "the leased key survived 10 TTLs"
    );
    assert!(lease.valid_until() > start + Duration::from_secs(20));
    // A keep-alive every TTL/3, not a busy loop.
    let calls = store.keep_alive_calls();
    assert!(
        (25..=35).contains(&calls),
        "{calls} keep-alives in 20 s at a 2/3 s interval"
    );
}

#[tokio::test(start_paused = true)]
async fn validity_follows_acknowledged_keep_alives() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    let mut validity = lease.subscribe_validity();
    let first = *validity.borrow_and_update();
    timeout(Duration::from_secs(2), validity.changed())
        .await
        .expect("a renewal within one interval")
        .unwrap();
    let renewed = *validity.borrow();
    assert!(renewed > first);
    // valid_until = send time + TTL - margin, and the send time is now or
    // earlier.
    assert!(renewed <= Instant::now() + Duration::from_secs(3) - Duration::from_millis(300));
    assert_eq!(renewed, lease.valid_until());
}

/// Proves `lost` fires before the store could expire the lease, when the store
/// stops answering keep-alives: at the moment `lost` fires, the lease is
/// still alive in the store.
#[tokio::test(start_paused = true)]
async fn a_hung_store_fires_lost_before_the_server_side_expiry() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    let key = "/drover/locks/rc/a";
    store
        .put(Put::new(key, "me").with_lease(lease.id()))
        .await
        .unwrap();
    sleep(Duration::from_secs(5)).await;
    assert!(lease.is_valid());

    store.set(KeepAliveMode::Hang);
    let hung_at = Instant::now();
    let token = lease.lost_token();
    timeout(Duration::from_secs(10), token.cancelled())
        .await
        .expect("lost fires although the store never answers");
    assert_eq!(lease.lost_reason(), Some(LostReason::Expired));
    assert!(!lease.is_valid());
    assert!(Instant::now() <= lease.valid_until() + Duration::from_millis(1));
    // The store still holds the lease and its key: the holder learned of the
    // loss before anyone else could take over.
    // (The store's remaining TTL is whole seconds, so it may read 0 here.)
    store
        .lease_time_to_live(lease.id())
        .await
        .expect("the store still has the lease");
    assert!(key_exists(&store, key).await);
    assert!(Instant::now() - hung_at < Duration::from_secs(3));

    // And the store does expire it later.
    sleep(Duration::from_secs(4)).await;
    assert!(!key_exists(&store, key).await);
    assert!(matches!(
        store.lease_time_to_live(lease.id()).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn persistent_keep_alive_errors_fire_lost_before_the_server_side_expiry() {
    let store = faulty();
    let lease = granted(&store, 2).await;
    store.set(KeepAliveMode::Fail);
    let before = store.keep_alive_calls();
    lease.lost().await;
    assert_eq!(lease.lost_reason(), Some(LostReason::Expired));
    assert!(
        store.keep_alive_calls() - before > 3,
        "failures were retried"
    );
    store
        .lease_time_to_live(lease.id())
        .await
        .expect("the store still has the lease");
}

#[tokio::test(start_paused = true)]
async fn transient_keep_alive_errors_are_retried_without_losing_the_lease() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    sleep(Duration::from_secs(1)).await;
    store.set(KeepAliveMode::Fail);
    let before = store.keep_alive_calls();
    sleep(Duration::from_millis(1500)).await;
    assert!(
        store.keep_alive_calls() - before >= 2,
        "retried while failing"
    );
    store.set(KeepAliveMode::Pass);
    sleep(Duration::from_secs(10)).await;
    assert!(lease.is_valid());
    assert_eq!(lease.lost_reason(), None);
}

#[tokio::test(start_paused = true)]
async fn a_hung_request_is_abandoned_and_retried() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    store.set(KeepAliveMode::Hang);
    // One interval (1 s) in, the first hung request starts; abandon it after
    // another interval and let the retry through.
    sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.keep_alive_calls(), 1);
    store.set(KeepAliveMode::Pass);
    sleep(Duration::from_secs(10)).await;
    assert!(lease.is_valid(), "{lease:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lease_the_store_forgot_is_lost_at_the_next_keep_alive() {
    let store = faulty();
    let lease = granted(&store, 30).await;
    store.lease_revoke(lease.id()).await.unwrap();
    timeout(Duration::from_secs(11), lease.lost())
        .await
        .expect("lost at the next keep-alive (every 10 s)");
    assert_eq!(lease.lost_reason(), Some(LostReason::NotFound));
    assert!(!lease.is_valid());
    // Closing a lost lease is not an error.
    lease.revoke().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_the_keys_and_fires_lost() {
    let store = faulty();
    let lease = granted(&store, 5).await;
    let id = lease.id();
    let token = lease.lost_token();
    put_leased(&store, "/drover/nodes/a", id).await;
    put_leased(&store, "/drover/nodes/b", id).await;
    lease.revoke().await.unwrap();
    assert!(token.is_cancelled());
    assert!(!key_exists(&store, "/drover/nodes/a").await);
    assert!(!key_exists(&store, "/drover/nodes/b").await);
    assert!(matches!(
        store.lease_time_to_live(id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let calls = store.keep_alive_calls();
    sleep(Duration::from_secs(20)).await;
    assert_eq!(
        store.keep_alive_calls(),
        calls,
        "no keep-alives after revoke"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_revokes_in_the_background() {
    let store = faulty();
    let lease = granted(&store, 60).await;
    let id = lease.id();
    let token = lease.lost_token();
    put_leased(&store, "/drover/nodes/a", id).await;
    drop(lease);
    assert!(token.is_cancelled());
    // Far less than the TTL: the revoke, not the expiry, removed the key.
    sleep(Duration::from_millis(10)).await;
    assert!(!key_exists(&store, "/drover/nodes/a").await);
    assert!(matches!(
        store.lease_time_to_live(id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn debug_output_names_the_lease_in_hex() {
    let store = faulty();
    let lease = Lease::grant(store, LeaseConfig::new(5)).await.unwrap();
    let shown = format!("{lease:?}");
    assert!(shown.contains(&format!("{:x}", lease.id())), "{shown}");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_round_trips_are_measured() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    assert_eq!(lease.keep_alive_stats(), KeepAliveStats::default());
    assert_eq!(lease.last_keep_alive_rtt(), None);
    let mut stats = lease.subscribe_keep_alives();
    store.set(KeepAliveMode::Delay(Duration::from_millis(250)));
    timeout(Duration::from_secs(2), stats.changed())
        .await
        .expect("a keep-alive within one interval")
        .unwrap();
    let seen = *stats.borrow_and_update();
    assert_eq!(seen.acknowledged, 1);
    // Paused time: the injected delay is the whole round trip.
    assert_eq!(seen.last_rtt, Some(Duration::from_millis(250)));
    assert_eq!(
        lease.last_keep_alive_rtt(),
        Some(Duration::from_millis(250))
    );

    store.set(KeepAliveMode::Pass);
    sleep(Duration::from_secs(5)).await;
    let later = lease.keep_alive_stats();
    assert!(later.acknowledged >= 5, "{later:?}");
    assert_eq!(later.last_rtt, Some(Duration::ZERO));

    // Failed keep-alives are not acknowledged round trips.
    store.set(KeepAliveMode::Fail);
    sleep(Duration::from_millis(1500)).await;
    assert_eq!(lease.keep_alive_stats(), later);
}

#[tokio::test(start_paused = true)]
async fn the_stats_stream_ends_with_the_lease() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    let mut stats = lease.subscribe_keep_alives();
    lease.revoke().await.unwrap();
    let ended = timeout(Duration::from_secs(1), async {
        while stats.changed().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "the receiver sees the sender go away");
}

/// Orphaning stops renewals without revoking: the keys stay until the store
/// expires the lease, and `lost` fires (as an expiry) before it does.
#[tokio::test(start_paused = true)]
async fn an_orphaned_lease_lapses_after_its_ttl_instead_of_being_revoked() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    let id = lease.id();
    let key = "/drover/election/x/1";
    put_leased(&store, key, id).await;
    sleep(Duration::from_secs(2)).await;
    let token = lease.lost_token();
    let validity = lease.subscribe_validity();
    let valid_until = lease.valid_until();
    let calls = store.keep_alive_calls();

    assert_eq!(lease.orphan(), id);
    // Not revoked, not lost yet: the lease is still certainly alive.
    sleep(Duration::from_millis(10)).await;
    assert!(!token.is_cancelled());
    assert!(key_exists(&store, key).await);

    token.cancelled().await;
    assert_eq!(Instant::now(), valid_until, "lost fires at the deadline");
    assert_eq!(
        *validity.borrow(),
        valid_until,
        "no renewal after orphaning"
    );
    assert_eq!(
        store.keep_alive_calls(),
        calls,
        "no keep-alive after orphaning"
    );
    assert!(
        key_exists(&store, key).await,
        "lost fires before the store expires the lease"
    );

    sleep(Duration::from_secs(3)).await;
    assert!(!key_exists(&store, key).await, "the store expired it");
    assert!(matches!(
        store.lease_time_to_live(id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
}

/// An orphaned lease whose keep-alive was in flight ignores the answer.
#[tokio::test(start_paused = true)]
async fn orphaning_abandons_an_in_flight_keep_alive() {
    let store = faulty();
    let lease = granted(&store, 3).await;
    let token = lease.lost_token();
    store.set(KeepAliveMode::Delay(Duration::from_millis(500)));
    // The first keep-alive starts at 1 s and would answer at 1.5 s.
    sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.keep_alive_calls(), 1);
    let valid_until = lease.valid_until();
    lease.orphan();
    token.cancelled().await;
    assert_eq!(Instant::now(), valid_until);
}
