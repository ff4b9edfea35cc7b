use crate::{LeaseId, Revision};

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every failure a store backend can report. Both backends map their native
/// errors onto these variants, so callers never see etcd or redb types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The request's encoded size exceeds [`crate::MAX_REQUEST_BYTES`].
    #[error("request is too large: {size} bytes exceeds the limit of {limit} bytes")]
    RequestTooLarge { size: usize, limit: usize },

    /// A txn's compare, success or failure list exceeds [`crate::MAX_TXN_OPS`].
    #[error("too many operations in txn: {ops} exceeds the limit of {limit}")]
    TooManyOps { ops: usize, limit: usize },

    /// A txn branch writes (puts or deletes) the same key twice.
    #[error("duplicate key in txn: one branch writes {key:?} more than once")]
    DuplicateKey { key: String },

    /// The lease does not exist: never granted, revoked, or expired.
    #[error("lease {0:x} not found")]
    LeaseNotFound(LeaseId),

    /// A lease with the requested id already exists.
    #[error("lease {0:x} already exists")]
    LeaseExists(LeaseId),

    /// A put with `ignore_value` or `ignore_lease` names a key that does not
    /// exist (etcd: "key not found"); nothing was written.
    #[error("key not found: {key:?} (a put that keeps the value or lease needs an existing key)")]
    KeyNotFound { key: String },

    /// A put with `ignore_value` also carries a value (etcd: "value is provided").
    #[error("value is provided: a put that keeps the current value of {key:?} must not carry one")]
    ValueProvided { key: String },

    /// A put with `ignore_lease` also names a lease (etcd: "lease is provided").
    #[error("lease is provided: a put that keeps the current lease of {key:?} must not name one")]
    LeaseProvided { key: String },

    /// The requested TTL exceeds [`crate::MAX_LEASE_TTL_SECS`].
    #[error("lease TTL {ttl}s is too large (the limit is {max}s)", max = crate::MAX_LEASE_TTL_SECS)]
    LeaseTtlTooLarge { ttl: i64 },

    /// The requested revision was compacted away; re-list at the current
    /// revision and watch from there.
    #[error("revision {requested} has been compacted (compacted up to {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },

    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future (current revision {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },

    /// The request is malformed (for example an empty key); nothing was done.
    #[error("invalid request: {0}")]
    InvalidArgument(String),

    /// The backend could not be reached or lost its connection; retryable.
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The backend's durable storage failed (disk, database file).
    #[error("storage failure: {message}")]
    Storage {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The store has been shut down.
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// True for failures that may succeed when retried unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
