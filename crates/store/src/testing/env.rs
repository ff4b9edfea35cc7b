//! How tests find a real etcd.
//!
//! `cargo xtask test` starts a throwaway etcd on loopback ports and sets
//! [`ETCD_ENDPOINTS_VAR`] and [`REQUIRE_ETCD_VAR`]. A plain `cargo test`
//! without etcd skips the real-etcd tests with a message; under
//! `cargo xtask test` a missing etcd fails them loudly instead.

use std::sync::atomic::{AtomicU64, Ordering};

/// Comma-separated etcd endpoints, e.g. `http://127.0.0.1:23790`.
pub const ETCD_ENDPOINTS_VAR: &str = "DROVER_ETCD_ENDPOINTS";

/// When `1`, a missing [`ETCD_ENDPOINTS_VAR`] is a test failure, not a skip.
pub const REQUIRE_ETCD_VAR: &str = "DROVER_REQUIRE_ETCD";

/// The etcd endpoints to test against, or `None` to skip (printing why).
///
/// # Panics
/// When [`REQUIRE_ETCD_VAR`] is `1` and no endpoints are configured.
pub fn etcd_endpoints() -> Option<Vec<String>> {
    let endpoints: Vec<String> = std::env::var(ETCD_ENDPOINTS_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if !endpoints.is_empty() {
        return Some(endpoints);
    }
    if std::env::var(REQUIRE_ETCD_VAR).as_deref() == Ok("1") {
        panic!(
            "{REQUIRE_ETCD_VAR}=1 but {ETCD_ENDPOINTS_VAR} is not set: \
             run the tests through `cargo xtask test`, which starts etcd"
        );
    }
    eprintln!("skipping real-etcd test: {ETCD_ENDPOINTS_VAR} is not set (use `cargo xtask test`)");
    None
}

/// A key prefix no other test (in this or another process) uses, so tests can
/// share one etcd: `/t/<pid>-<nanos>-<counter>/<name>/`.
pub fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/t/{}-{nanos}-{n}/{name}/", std::process::id())
}
