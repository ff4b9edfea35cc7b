//! The conformance suite: one set of cases that every [`Store`] backend must
//! pass, so the embedded backend and etcd behave alike.
//!
//! Each case is an `async fn case_xxx<S: Store>(store: &S, prefix: &str) ->
//! Result<()>` that writes only under `prefix`, asserts relations between
//! revisions (never exact values), and waits with bounded polling, so it runs
//! on a *shared* real etcd with real time as well as on the embedded backend
//! with paused time.
//!
//! [`conformance_tests!`](crate::conformance_tests) turns the whole suite into
//! one `#[tokio::test]` per case, so each backend's test file is five lines:
//!
//! ```no_run
//! // crates/<backend>/tests/conformance.rs (needs `tokio` with `macros`,
//! // `rt-multi-thread` and `test-util` in dev-dependencies, and
//! // `drover-store` with the `testing` feature)
//! drover_store::conformance_tests! {
//!     time = paused,
//!     store = drover_store::embedded::EmbeddedStore::in_memory(),
//! }
//! # fn main() {}
//! ```
//!
//! A store that needs a guard kept alive (a temporary directory) uses
//! `setup`, an expression giving `(store, guard)`; the expression may
//! `.await` and may `return` to skip a case (e.g. no etcd configured):
//!
//! ```text
//! drover_store::conformance_tests! {
//!     time = real,
//!     setup = {
//!         let Some(endpoints) = drover_store::testing::etcd_endpoints() else { return };
//!         (my_backend::EtcdStore::connect(&endpoints).await.unwrap(), ())
//!     },
//! }
//! ```
//!
//! `time = paused` runs each case on a current-thread runtime with paused
//! tokio time (for backends whose timers are tokio timers); `time = real`
//! runs it on a two-worker multi-thread runtime with the wall clock (etcd).
//!
//! Compaction is global on etcd, so cases that compact could break another
//! case's reads of old revisions. Every non-compacting case therefore
//! registers a *history hold* (a key under [`HISTORY_HOLDS`], bound to a
//! lease, whose create revision is the oldest revision the case may read),
//! and compacting cases compact only their own revisions, after waiting until
//! every hold is newer. Compacting cases take turns through
//! [`COMPACTION_LOCK`], so one never compacts what another still reads.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

use crate::{Compare, Get, KeyValue, Put, Result, Revision, Store, StoreError, Txn};

mod kv;
mod lease;
mod txn;
mod util;
mod watch;

pub use kv::*;
pub use lease::*;
pub use txn::*;
pub use watch::*;

/// Where running cases register the oldest revision they may read.
pub const HISTORY_HOLDS: &str = "/drover-conformance/history-holds/";

/// A case that runs longer than this fails (instead of hanging the run).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a hold lives if its case dies without releasing it.
const HOLD_TTL_SECS: i64 = 130;

/// How long a compacting case waits for older holds to go.
const HOLD_WAIT: Duration = Duration::from_secs(100);

/// The cases that compact (and so do not hold history themselves).
const COMPACTING: &[&str] = &["case_get_compacted_revision", "case_watch_compacted"];

/// Where compacting cases take turns (see [`COMPACTION_LOCK`]).
pub const COMPACTION_LOCK: &str = "/drover-conformance/compaction-lock";

/// A registered history hold, or the compaction lock: a key bound to a lease.
struct Hold {
    key: String,
    lease: i64,
}

async fn register_hold<S: Store>(store: &S, prefix: &str) -> Result<Hold> {
    let lease = store.lease_grant(HOLD_TTL_SECS).await?.id;
    let key = format!(
        "{HISTORY_HOLDS}{}",
        prefix.trim_matches('/').replace('/', "_")
    );
    store
        .put(Put::new(key.as_str(), "").with_lease(lease))
        .await?;
    Ok(Hold { key, lease })
}

/// Compacting cases run one at a time, so one cannot compact away the
/// revisions another still reads after its own compaction.
async fn lock_compaction<S: Store>(store: &S) -> Result<Hold> {
    let lease = store.lease_grant(HOLD_TTL_SECS).await?.id;
    let deadline = tokio::time::Instant::now() + HOLD_WAIT;
    loop {
        let taken = store
            .txn(
                Txn::new()
                    .when([Compare::absent(COMPACTION_LOCK)])
                    .and_then([Put::new(COMPACTION_LOCK, "").with_lease(lease).into()]),
            )
            .await?;
        if taken.succeeded {
            return Ok(Hold {
                key: COMPACTION_LOCK.to_owned(),
                lease,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = store.lease_revoke(lease).await;
            return Err(StoreError::InvalidArgument(format!(
                "conformance: {COMPACTION_LOCK} still taken after {HOLD_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn release_hold<S: Store>(store: &S, hold: Hold) {
    if let Err(e) = store.lease_revoke(hold.lease).await {
        eprintln!("releasing {} failed: {e}", hold.key);
    }
}

/// Compacts the store at `revision` (a revision the calling case wrote), once
/// no other running case holds history at or below it.
pub async fn compact_own_history<S: Store>(store: &S, revision: Revision) -> Result<()> {
    let deadline = tokio::time::Instant::now() + HOLD_WAIT;
    loop {
        let holds = store.get(Get::prefix(HISTORY_HOLDS)).await?;
        let blocking: Vec<&KeyValue> = holds
            .kvs
            .iter()
            .filter(|kv| kv.create_revision <= revision)
            .collect();
        if blocking.is_empty() {
            return match store.compact(revision).await {
                // Someone (another case, on a shared etcd) compacted further.
                Err(StoreError::Compacted { .. }) => Ok(()),
                other => other,
            };
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::InvalidArgument(format!(
                "conformance: {} older history holds still present after {HOLD_WAIT:?}: {:?}",
                blocking.len(),
                blocking.iter().map(|kv| kv.key_str()).collect::<Vec<_>>()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs one case under a history hold and [`CASE_TIMEOUT`], panicking with
/// the case name on failure. Called by [`conformance_tests!`](crate::conformance_tests).
pub async fn run_case<S, F, Fut>(name: &str, store: &S, prefix: &str, case: F)
where
    S: Store,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let hold = if COMPACTING.contains(&name) {
        lock_compaction(store).await
    } else {
        register_hold(store, prefix).await
    };
    let hold = hold.unwrap_or_else(|e| panic!("{name}: taking a history hold failed: {e:?}"));
    let outcome = AssertUnwindSafe(tokio::time::timeout(CASE_TIMEOUT, case()))
        .catch_unwind()
        .await;
    release_hold(store, hold).await;
    match outcome {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("{name} failed with a store error: {e:?}"),
        Ok(Err(_)) => panic!("{name} did not finish within {CASE_TIMEOUT:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A case ready to run, with its name (built by
/// [`conformance_tests!`](crate::conformance_tests)'s `one_test` form).
pub type NamedCase<'a> = (
    &'static str,
    std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
);

/// How many cases [`run_all`] runs at once.
pub const RUN_ALL_CONCURRENCY: usize = 12;

/// Runs every case, [`RUN_ALL_CONCURRENCY`] at a time, then panics naming
/// every case that failed (not only the first).
pub async fn run_all(cases: Vec<NamedCase<'_>>) {
    use futures::StreamExt;
    let total = cases.len();
    let failed: Vec<&'static str> = futures::stream::iter(cases)
        .map(|(name, case)| async move {
            match AssertUnwindSafe(case).catch_unwind().await {
                Ok(()) => None,
                Err(_) => Some(name),
            }
        })
        .buffer_unordered(RUN_ALL_CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    assert!(
        failed.is_empty(),
        "{} of {total} conformance cases failed: {failed:?}",
        failed.len()
    );
}

/// Expands into one `#[tokio::test]` per conformance case for a backend.
///
/// ```no_run
/// // tests/conformance.rs of a backend crate: one test per case.
/// mod in_memory {
///     drover_store::conformance_tests! {
///         time = paused,                  // or `real` (etcd)
///         store = drover_store::embedded::EmbeddedStore::in_memory(),
///     }
/// }
/// mod durable {
///     drover_store::conformance_tests! {
///         time = paused,
///         // `(store, guard)`: the guard lives as long as the case. The
///         // expression may `.await`, and may `return` to skip.
///         setup = {
///             let dir = tempfile::tempdir().unwrap();
///             let config = drover_store::embedded::EmbeddedConfig::default();
///             let store = drover_store::embedded::EmbeddedStore::open(dir.path(), config)
///                 .await
///                 .unwrap();
///             (store, dir)
///         },
///     }
/// }
/// # fn main() {}
/// ```
///
/// `time = real, one_test = NAME, setup = ...` instead expands into a single
/// test `NAME` that sets up one store and runs every case against it
/// concurrently (for a server process shared by all cases).
///
/// The calling crate needs `tokio` (features `macros`, `rt-multi-thread`,
/// and `test-util` for paused time). See [`crate::testing::suite`].
#[macro_export]
macro_rules! conformance_tests {
    (time = paused, store = $store:expr $(,)?) => {
        $crate::conformance_tests!(@cases (flavor = "current_thread", start_paused = true) ($store, ()));
    };
    (time = real, store = $store:expr $(,)?) => {
        $crate::conformance_tests!(@cases (flavor = "multi_thread", worker_threads = 2) ($store, ()));
    };
    (time = paused, setup = $setup:expr $(,)?) => {
        $crate::conformance_tests!(@cases (flavor = "current_thread", start_paused = true) $setup);
    };
    (time = real, setup = $setup:expr $(,)?) => {
        $crate::conformance_tests!(@cases (flavor = "multi_thread", worker_threads = 2) $setup);
    };
    // One test that runs every case concurrently against one store, for a
    // store that is expensive to start (a server process): `setup` gives
    // `(store, guard)` once.
    (time = real, one_test = $name:ident, setup = $setup:expr $(,)?) => {
        $crate::conformance_tests!(@list (@all $name $setup));
    };
    (@cases $attrs:tt $setup:expr) => {
        $crate::conformance_tests!(@list (@each $attrs $setup));
    };
    // The one list of cases, handed to the arm named by `$continuation`.
    (@list ($($continuation:tt)*)) => {
        $crate::conformance_tests!($($continuation)*;
            // kv
            case_put_then_get,
            case_get_missing_key,
            case_overwrite_bumps_version,
            case_put_prev_kv,
            case_recreate_after_delete_resets_version,
            case_delete_key_prev_kv,
            case_delete_nothing,
            case_delete_prefix,
            case_delete_range,
            case_get_prefix_and_range,
            case_get_limit_count_more,
            case_get_sorted,
            case_get_max_create_revision,
            case_get_keys_only_and_count_only,
            case_get_at_past_revision,
            case_get_future_revision,
            case_get_compacted_revision,
            case_revisions_increase,
            case_empty_key_is_invalid,
            case_request_size_limit,
            case_binary_and_empty_values,
            case_put_same_value_is_a_write,
            case_get_limit_and_count_at_past_revision,
            case_get_sorted_by_value_and_version_with_limit,
            case_delete_range_prev_kvs_in_key_order,
            case_get_revision_filters,
            case_get_serializable,
            case_get_negative_fields_are_invalid,
            case_put_ignore_value_and_lease,
            case_put_ignore_bad_requests,
            case_status,
            // txn
            case_txn_compare_value,
            case_txn_compare_version,
            case_txn_compare_create_revision,
            case_txn_compare_mod_revision,
            case_txn_compare_lease,
            case_txn_compare_missing_key,
            case_txn_compares_are_anded,
            case_txn_success_is_one_revision,
            case_txn_failure_branch,
            case_txn_ops_see_earlier_ops,
            case_txn_empty,
            case_txn_duplicate_keys,
            case_txn_too_many_ops,
            case_txn_cas_contention,
            case_txn_get_after_put_and_delete,
            case_txn_compare_range,
            case_txn_nested,
            case_txn_nested_bad_requests,
            // leases
            case_lease_grant_and_time_to_live,
            case_lease_ttl_too_large,
            case_lease_revoke_deletes_keys,
            case_lease_expiry_deletes_keys_in_one_revision,
            case_lease_keep_alive_extends,
            case_lease_keep_alive_after_expiry,
            case_lease_unknown,
            case_lease_detach_by_put,
            case_lease_move_key,
            case_lease_keep_alive_after_revoke,
            case_lease_moved_key_survives_old_lease_expiry,
            case_lease_expiry_watch_prev_kv,
            case_lease_deleted_key_leaves_the_lease,
            case_lease_handle_keeps_alive,
            case_lease_handle_lost_and_drop,
            case_lease_small_ttl_is_raised,
            case_lease_grant_with_id_and_list,
            case_lease_list_drops_expired,
            // watch
            case_watch_key_put_and_delete,
            case_watch_replay_with_prev_kv,
            case_watch_prefix_ignores_other_keys,
            case_watch_range,
            case_watch_from_now,
            case_watch_txn_is_one_batch,
            case_watch_compacted,
            case_watch_many_events,
            case_watch_drop_stops_it,
            case_watch_fan_out,
            case_watch_slow_consumer_catches_up,
            case_watch_from_future_revision,
            case_watch_filters,
            case_watch_request_progress,
        );
    };
    (@all $name:ident $setup:expr; $($case:ident),* $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, _guard) = $setup;
            let store = &store;
            let cases: ::std::vec::Vec<$crate::testing::suite::NamedCase<'_>> = ::std::vec![
                $(
                    (
                        ::core::stringify!($case),
                        ::std::boxed::Box::pin(async move {
                            let prefix = $crate::testing::unique_prefix(::core::stringify!($case));
                            $crate::testing::suite::run_case(
                                ::core::stringify!($case),
                                store,
                                &prefix,
                                || $crate::testing::suite::$case(store, &prefix),
                            )
                            .await;
                        }),
                    ),
                )*
            ];
            $crate::testing::suite::run_all(cases).await;
        }
    };
    (@each $attrs:tt $setup:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test $attrs]
            async fn $case() {
                let (store, _guard) = $setup;
                let prefix = $crate::testing::unique_prefix(::core::stringify!($case));
                $crate::testing::suite::run_case(
                    ::core::stringify!($case),
                    &store,
                    &prefix,
                    || $crate::testing::suite::$case(&store, &prefix),
                )
                .await;
            }
        )*
    };
}
