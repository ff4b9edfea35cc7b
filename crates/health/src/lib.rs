//! Pod health for Drover: states, results and their aggregation.
//!
//! The pure core (no tokio, no store, no IO, no clock):
//! - [`HealthState`]: `passing > warning > unknown > critical`, as an `Ord`
//!   so `max`/`min` are best/worst; parsing rejects unknown names with a
//!   typed error; a missing result is unknown, not critical.
//! - [`HealthResult`]: one node's observation of one pod (typed ids,
//!   `drover_ids`' `PodId` and `NodeId`), stored as JSON under
//!   `health/<pod>/<node>`, with a caller-supplied wall-clock time.
//! - [`PodHealth`]: per-pod aggregation: counts per state, nodes worst
//!   first, threshold checks and the replication's minimum-healthy gate,
//!   with expected-but-missing nodes counted as unknown.
//!
//! With the default feature `store`, `HealthStore` reads and watches a
//! pod's health across nodes and writes results bound to an agent's lease.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use drover_health::{HealthResult, HealthState, PodHealth};
//!
//! let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut web = PodHealth::from_results("web", [
//!     HealthResult::new("web", "n1", HealthState::Passing, "200 OK", at)?,
//!     HealthResult::new("web", "n2", HealthState::Critical, "connection refused", at)?,
//! ])?;
//! web.expect_nodes(["n1", "n2", "n3"])?; // n3 has not reported: unknown
//!
//! assert_eq!(web.state("n3"), HealthState::Unknown);
//! assert_eq!(web.worst_first()[0].node, "n2");
//! assert_eq!(web.healthy_count(HealthState::Warning), 1);
//! assert!(!web.meets_minimum(HealthState::Warning, 2));
//! assert!("fine".parse::<HealthState>().is_err());
//! # Ok::<(), drover_health::HealthError>(())
//! ```

mod aggregate;
mod error;
mod result;
mod state;
#[cfg(feature = "store")]
mod store;

pub use aggregate::{NodeState, PodHealth, StateCounts};
pub use error::{HealthError, Result};
pub use result::{HealthResult, MAX_ID_LEN};
pub use state::HealthState;
#[cfg(feature = "store")]
pub use store::{AllHealthCodec, HealthChange, HealthStore, HealthWatch, PodHealthSnapshot};
