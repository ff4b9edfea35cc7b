use std::time::Duration;

use drover_store::{LeaseId, Revision, StoreError};

use crate::term::TermEnd;

/// Result alias for this crate.
pub type Result<T, E = ElectionError> = std::result::Result<T, E>;

/// Every failure of the election crate: store failures, lost leadership, and
/// invalid configuration (each naming what is wrong).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// The store failed; see [`StoreError::is_retryable`].
    #[error("store operation failed")]
    Store(#[from] StoreError),

    /// A fenced operation found that the term's candidate key is gone or was
    /// re-created: this process no longer leads.
    #[error("not the leader of {prefix:?} any more (term {token})")]
    NotLeader { prefix: String, token: Revision },

    /// The term already ended locally, so nothing was sent to the store.
    #[error("term {token} has ended: {reason}")]
    TermEnded { token: Revision, reason: TermEnd },

    /// The candidate's lease was lost while campaigning.
    #[error("lease {lease:x} was lost while campaigning")]
    LeaseLost { lease: LeaseId },

    /// The candidate key was deleted (by someone else) while campaigning.
    #[error("candidate key {key:?} was deleted while campaigning")]
    CandidacyLost { key: String },

    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,

    /// The elector lost leadership and is configured to treat that as fatal.
    #[error("leadership lost ({reason}) and the elector treats loss as fatal")]
    LeadershipLost { reason: TermEnd },

    /// An election name is not a valid key segment.
    #[error("invalid election name")]
    InvalidKey(#[from] drover_store::keys::KeyError),

    /// An election name or prefix is unusable.
    #[error("invalid election name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A duration that must be positive is zero.
    #[error("{field} must be positive")]
    NonPositiveDuration { field: &'static str },

    /// The lease duration is not a whole number of seconds (store leases
    /// have whole-second TTLs).
    #[error("lease_duration must be a whole number of seconds, got {0:?}")]
    LeaseDurationNotWholeSeconds(Duration),

    /// The lease duration is longer than a store lease may live.
    #[error(
        "lease_duration {lease_duration:?} is longer than the store's maximum lease TTL ({max:?})"
    )]
    LeaseDurationTooLong {
        lease_duration: Duration,
        max: Duration,
    },

    /// `renew_deadline` must be shorter than `lease_duration`.
    #[error(
        "renew_deadline ({renew_deadline:?}) must be shorter than lease_duration ({lease_duration:?})"
    )]
    RenewDeadlineNotShorter {
        renew_deadline: Duration,
        lease_duration: Duration,
    },

    /// `retry_period * jitter_factor` must be shorter than `renew_deadline`.
    #[error(
        "retry_period ({retry_period:?}) times jitter_factor ({jitter_factor}) must be shorter \
         than renew_deadline ({renew_deadline:?})"
    )]
    RetryPeriodTooLong {
        retry_period: Duration,
        jitter_factor: f64,
        renew_deadline: Duration,
    },

    /// The jitter factor is negative, NaN or infinite.
    #[error("jitter_factor must be a finite number >= 0, got {0}")]
    InvalidJitterFactor(f64),

    /// The identity is empty.
    #[error("identity must not be empty")]
    EmptyIdentity,

    /// A duration string could not be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration { input: String, reason: &'static str },

    /// A key of a configuration map has an invalid value.
    #[error("config key {key:?} has an invalid value")]
    InvalidConfigValue {
        key: String,
        #[source]
        source: Box<ElectionError>,
    },

    /// A configuration map holds a key this crate does not know.
    #[error("unknown config key {0:?}")]
    UnknownConfigKey(String),

    /// A bucket set must have at least one bucket.
    #[error("bucket count must be at least 1")]
    ZeroBuckets,

    /// A bucket count is not a number.
    #[error("bucket count {0:?} is not a positive integer")]
    InvalidBucketCount(String),

    /// A static ordinal must be smaller than the bucket count.
    #[error("ordinal {ordinal} is out of range for {buckets} buckets")]
    OrdinalOutOfRange { ordinal: u32, buckets: u32 },

    /// `Elector::run` was called while another `run` of the same elector is
    /// active.
    #[error("the elector is already running")]
    AlreadyRunning,

    /// The elector was built without leader work.
    #[error("the elector needs leader work: call on_started_leading")]
    MissingLeaderWork,

    /// Health check: this process believes it leads, but its term's
    /// `valid_until` has passed (the elector is wedged).
    #[error("believes it leads term {token}, but the term's validity ended {overdue:?} ago")]
    LeadingPastValidity { token: Revision, overdue: Duration },
}

impl ElectionError {
    /// True for failures that may succeed when retried (store unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            ElectionError::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}
