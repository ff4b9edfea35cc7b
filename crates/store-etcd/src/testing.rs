//! Test support for code that runs against etcd (feature `testing`).
//!
//! - [`PrivateEtcd`]: an etcd process owned by one test, on free loopback
//!   ports with a temporary data directory, for tests that need an etcd no
//!   one else writes to or that stop and restart it.
//! - [`FaultProxy`]: a loopback TCP proxy in front of an etcd that can cut
//!   every connection and refuse new ones, to simulate a network partition
//!   between one client and etcd.
//! - [`TestPki`]: a throwaway CA with a server and a client certificate, as
//!   PEM files, for TLS and mutual-TLS tests.
//! - [`shared_etcd`]: a client for the etcd `cargo xtask test` runs for the
//!   whole test run, or `None` (skip) when there is none.

mod fault_proxy;
mod pki;
mod private_etcd;

pub use fault_proxy::FaultProxy;
pub use pki::{TEST_CLIENT_NAME, TestPki};
pub use private_etcd::{ETCD_BIN_VAR, PrivateEtcd};

use crate::{EtcdConfig, EtcdStore};

/// A client for the shared test etcd named by
/// [`drover_store::testing::etcd_endpoints`], or `None` when the test should
/// skip (that function panics instead under `cargo xtask test`).
///
/// # Panics
/// When the endpoints are set but etcd cannot be reached.
pub async fn shared_etcd() -> Option<EtcdStore> {
    let endpoints = drover_store::testing::etcd_endpoints()?;
    Some(
        EtcdStore::connect(endpoints, EtcdConfig::default())
            .await
            .expect("connect to the shared test etcd"),
    )
}

/// What [`on_both_backends!`](crate::on_both_backends) expands to, so the
/// calling crate needs no extra imports.
#[doc(hidden)]
pub mod __macro_support {
    pub use drover_store::embedded::EmbeddedStore;
    pub use drover_store::keys::Keys;
    pub use drover_store::testing::unique_prefix;
}

/// Runs each named `async fn NAME<S: Store>(store: S, keys: Keys)` twice:
/// in `mod embedded` on a fresh in-memory embedded store with the default
/// key layout, and in `mod etcd` on [`shared_etcd`] under a
/// [`unique_prefix`](drover_store::testing::unique_prefix) of its own (or
/// skipped when no etcd is configured), so one test body proves both
/// backends behave the same. The calling crate depends on tokio.
///
/// ```ignore
/// async fn round_trip<S: Store>(store: S, keys: Keys) { /* … */ }
/// drover_store_etcd::on_both_backends!(round_trip);
/// ```
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(
                        $crate::testing::__macro_support::EmbeddedStore::in_memory(),
                        $crate::testing::__macro_support::Keys::default(),
                    )
                    .await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = $crate::testing::shared_etcd().await else { return };
                    let keys = $crate::testing::__macro_support::Keys::new(
                        $crate::testing::__macro_support::unique_prefix(stringify!($name)),
                    )
                    .unwrap();
                    super::$name(store, keys).await
                }
            )*
        }
    };
}
