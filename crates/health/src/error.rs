/// Result alias for this crate.
pub type Result<T, E = HealthError> = std::result::Result<T, E>;

/// Every failure of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// A health state string is not one of passing, warning, unknown, critical.
    #[error("unknown health state {input:?}: expected one of passing, warning, unknown, critical")]
    UnknownState { input: String },

    /// A pod or node id cannot name a health key.
    #[error("invalid {field} id {id:?}: {reason}")]
    InvalidId {
        /// `"pod"` or `"node"`.
        field: &'static str,
        id: String,
        reason: String,
    },

    /// `observed_at` is before 1970 or after 9999-12-31, outside RFC 3339.
    #[error("observed_at is outside the years 1970..=9999")]
    TimestampOutOfRange,

    /// A result belongs to another pod than the aggregate it was added to.
    #[error("health result for pod {found:?} given to the aggregate of pod {expected:?}")]
    PodMismatch {
        expected: drover_ids::PodId,
        found: drover_ids::PodId,
    },

    /// Two results for the same node were given at once.
    #[error("two health results for node {node:?}")]
    DuplicateNode { node: drover_ids::NodeId },

    /// A health record is not valid JSON of the expected shape.
    #[error("malformed health record: {source}")]
    Decode {
        #[source]
        source: serde_json::Error,
    },

    /// The store failed; nothing is known about health.
    #[cfg(feature = "store")]
    #[error("store operation on {context} failed")]
    Store {
        context: String,
        #[source]
        source: drover_store::StoreError,
    },

    /// A stored health record is unreadable or does not belong at its key.
    #[cfg(feature = "store")]
    #[error("stored health at {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}
