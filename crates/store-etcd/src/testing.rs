//! Test support for code that runs against etcd (feature `testing`).
//!
//! - [`PrivateEtcd`]: an etcd process owned by one test, on free loopback
//!   ports with a temporary data directory, for tests that need an etcd no
//!   one else writes to or that stop and restart it.
//! - [`FaultProxy`]: a loopback TCP proxy in front of an etcd that can cut
//!   every connection and refuse new ones, to simulate a network partition
//!   between one client and etcd.

mod fault_proxy;
mod private_etcd;

pub use fault_proxy::FaultProxy;
pub use private_etcd::{ETCD_BIN_VAR, PrivateEtcd};
