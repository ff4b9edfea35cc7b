//! Test support shared by every backend and every crate that tests against a
//! store: the conformance suite and the real-etcd environment contract.
//!
//! Enabled with the `testing` feature (in dev-dependencies).

mod env;
pub mod suite;

pub use env::{ETCD_ENDPOINTS_VAR, REQUIRE_ETCD_VAR, etcd_endpoints, unique_prefix};
