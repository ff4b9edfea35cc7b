//! The store port: the one abstraction every Drover controller, agent and
//! library writes through.
//!
//! It has the semantics of etcd v3 because etcd is the production engine: one
//! global revision; keys carrying `create_revision`, `mod_revision`, `version`
//! and `lease`; ranges at past revisions; atomic transactions with compares;
//! ordered, gap-free watches with an explicit [`StoreError::Compacted`] error;
//! and leases whose expiry deletes every attached key in one revision.
//!
//! Backends:
//! - [`embedded::EmbeddedStore`]: in-process MVCC, durable in a data directory
//!   (or purely in memory for tests). The default for `orchestrator serve`.
//! - `drover-store-etcd`: the same port on a real etcd cluster.
//!
//! Both pass one conformance suite (`testing::suite`, behind the `testing` feature).
//!
//! ```
//! use drover_store::{embedded::EmbeddedStore, Store, Put, Get};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EmbeddedStore::in_memory();
//! store.put(Put::new("/drover/rcs/web", "replicas: 3")).await?;
//! let got = store.get(Get::key("/drover/rcs/web")).await?;
//! assert_eq!(got.kvs[0].value, b"replicas: 3");
//! # Ok(()) }
//! ```

mod error;
mod model;
mod port;

pub mod backoff;
pub mod embedded;
pub mod fence;
pub mod keys;
pub mod lease;
pub mod limits;
pub mod list_watch;
pub mod lock;
pub mod metered;
pub mod reflector;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Result, StoreError};
pub use model::*;
pub use port::{Store, WatchSender, WatchStream};

/// etcd's default `--max-request-bytes`: 1.5 MiB. Both backends reject larger
/// requests with [`StoreError::RequestTooLarge`].
pub const MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// etcd's default `--max-txn-ops`: each of a txn's compare, success and
/// failure lists may hold at most this many entries.
pub const MAX_TXN_OPS: usize = 128;

/// etcd's upper bound on a lease TTL, in seconds.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
