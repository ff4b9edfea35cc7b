//! Labels and label selectors for Drover.
//!
//! Nodes, pods, replication controllers and replications carry labels
//! (`zone=a`, `tier=web`); controllers pick objects with Kubernetes-style
//! selectors (`zone in (a,b),tier=web,!draining,cpus>8`).
//!
//! The pure core (no tokio, no store, no IO, no clock):
//! - [`Labels`]: a validated label map (Kubernetes key/value grammar).
//! - [`Selector`]: parsing with typed errors naming the byte position and
//!   what was expected, matching, a canonical [`Display`](std::fmt::Display)
//!   form that parses back to the same selector, serde as that text, and the
//!   serializable [`Selector::everything`] (`""`) and [`Selector::nothing`]
//!   ([`NOTHING`]).
//! - [`LabelIndex`]: an inverted index answering selectors over many objects
//!   without scanning them.
//!
//! With the default feature `store`, `Labeler` keeps labels in a
//! `drover_store::Store` under `labels/<type>/<id>`, as JSON maps, with
//! compare-and-swap writes, transaction-composable writes and watches of the
//! matching set.
//!
//! ```
//! use drover_labels::{Labels, Selector};
//!
//! let node = Labels::try_from_pairs([("zone", "a"), ("tier", "web")])?;
//! let sel: Selector = "zone in (a, b), tier=web, !draining".parse()?;
//! assert!(sel.matches(&node));
//! assert_eq!(sel.to_string(), "!draining,tier=web,zone in (a,b)");
//!
//! let err = Selector::parse("zone in a").unwrap_err();
//! assert_eq!(err.to_string(), "selector syntax error at byte 8: expected '(', found \"a\"");
//! # Ok::<(), drover_labels::LabelError>(())
//! ```

mod error;
mod index;
mod labels;
pub mod name;
mod selector;
#[cfg(feature = "store")]
mod store;

pub use error::{Expected, Found, LabelError, NameError, Result};
pub use index::LabelIndex;
pub use labels::{LabelLookup, Labels};
pub use selector::{NOTHING, NOTHING_KEY, Op, Requirement, Selector};
#[cfg(feature = "store")]
pub use store::{
    DEFAULT_MAX_ATTEMPTS, LabelCodec, LabelListing, LabelTxn, LabelType, Labeler, MatchEvent,
    MatchWatch, VersionedLabels,
};
