//! Replication controllers: "keep N copies of this manifest on the nodes
//! this selector picks".
//!
//! This crate grows in the controller shape of the workspace: pure planning
//! cores (what to do, from what is intended and observed, tested without
//! IO) and, on top, the farm that owns RCs and writes intent through the
//! shared controller runtime. The cores so far:
//!
//! - [`rc`]: the RC record (`rcs/<id>`) as operators write it and as it is
//!   stored, every problem naming its field;
//! - [`scheduler`]: which eligible nodes get new replicas (selector,
//!   liveness, capacity, one replica per node, topology spread, least- or
//!   most-allocated, deterministic ties);
//! - [`replicas`]: how many replicas to add and which to remove (lost-node
//!   grace, replacement before removal for nodes that turn ineligible,
//!   ranked scale-down, never below the desired count);
//! - [`decide`]: one RC's decision from what was observed (replica states
//!   from reality and health, the plan, the scheduler, the failsafes).
//!
//! ```
//! use std::collections::BTreeSet;
//! use drover_ids::NodeId;
//! use drover_labels::{Labels, Selector};
//! use drover_rc_farm::scheduler::{
//!     DefaultScheduler, NodeInfo, Nodes, Request, Resources, Scheduler, Strategy,
//! };
//!
//! let mut nodes = Nodes::new();
//! for (id, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
//!     nodes.upsert(
//!         id.parse::<NodeId>()?,
//!         Labels::try_from_pairs([("zone", zone)])?,
//!         NodeInfo {
//!             live: true,
//!             capacity: Resources::new(2000, 4 << 30),
//!             allocated: Resources::default(),
//!         },
//!     );
//! }
//! let selector: Selector = "zone in (a,b)".parse()?;
//! let placement = DefaultScheduler.place(
//!     &nodes,
//!     &Request {
//!         selector: &selector,
//!         needs: Resources::new(500, 1 << 30),
//!         count: 2,
//!         occupied: &BTreeSet::new(),
//!         current: &[],
//!         spread_by: Some("zone"),
//!         strategy: Strategy::Spread,
//!     },
//! );
//! // One per zone.
//! let expected: Vec<NodeId> = vec!["n1".parse()?, "n3".parse()?];
//! assert_eq!(placement.nodes, expected);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
pub mod decide;
pub mod farm;
pub mod rc;
pub mod replicas;
pub mod scheduler;
pub mod status;
pub mod store;
pub mod world;

pub use farm::{DEFAULT_LOST_NODE_GRACE, Farm, FarmConfig};
pub use rc::{RcError, RcSpec};
