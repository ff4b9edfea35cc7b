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

use crate::{Get, Store};

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
