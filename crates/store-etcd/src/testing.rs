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
