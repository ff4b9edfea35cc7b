//! Test support shared by every backend and every crate that tests against a
//! store: the conformance suite, the real-etcd environment contract, and
//! [`FaultyStore`], the one fault-injecting store wrapper.
//!
//! Enabled with the `testing` feature (in dev-dependencies).

mod env;
mod faulty;
pub mod suite;

pub use faulty::{Faults, FaultyStore};

pub use env::{ETCD_ENDPOINTS_VAR, REQUIRE_ETCD_VAR, etcd_endpoints, unique_prefix};

use std::future::Future;
use std::time::Duration;

use crate::{Get, Store};

/// How often [`eventually`] checks.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `check` every [`POLL`] until it returns `Some`, and returns that;
/// panics naming `what` if `within` passes first. For tests that wait on a
/// store or on processes (on the tokio clock, so paused time skips ahead).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// How many keys start with `prefix` (a count-only get). Panics on a store
/// error: for tests' "nothing was written" checks.
pub async fn count_under<S: Store>(store: &S, prefix: &str) -> i64 {
    store
        .get(Get::prefix(prefix).count_only())
        .await
        .expect("count the keys under a prefix")
        .count
}

/// The value stored at `key`, `None` when it is absent. Panics on a store
/// error: for tests that check what a component wrote.
pub async fn value_at<S: Store>(store: &S, key: &str) -> Option<Vec<u8>> {
    let resp = store.get(Get::key(key)).await.expect("read one key");
    resp.first().map(|kv| kv.value.clone())
}
