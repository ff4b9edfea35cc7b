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
