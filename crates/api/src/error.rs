//! The errors a service can return and the one table mapping them to gRPC
//! status codes.

use std::error::Error as _;

use drover_rc_farm::RcError;
use drover_store::StoreError;
use tonic::{Code, Status};

/// A message from the wire that cannot become a domain value. Names the field
/// (dotted path from the message root) so callers know what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A required field is absent or empty.
    #[error("missing field `{0}`")]
    Missing(String),

    /// A field is present but its value is not acceptable.
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl ProtocolError {
    pub(crate) fn missing(field: impl Into<String>) -> Self {
        ProtocolError::Missing(field.into())
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtocolError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Every error a Drover gRPC service reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request was malformed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),

    /// The store refused or failed the operation.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A replication controller was invalid, or its change was refused.
    #[error(transparent)]
    Rc(#[from] RcError),
}

/// The one table from errors to gRPC status codes. Messages name what is
/// wrong and include the error's causes.
///
/// | error | code |
/// |---|---|
/// | [`ProtocolError`] (missing / invalid field) | `InvalidArgument` |
/// | `RequestTooLarge`, `TooManyOps`, `DuplicateKey`, `InvalidArgument`, `LeaseTtlTooLarge`, `KeyNotFound`, `ValueProvided`, `LeaseProvided` | `InvalidArgument` |
/// | `LeaseNotFound` | `NotFound` |
/// | `LeaseExists`, `LockLost` | `FailedPrecondition` (the state the request assumed no longer holds) |
/// | `Compacted`, `FutureRevision` | `OutOfRange` |
/// | `Unavailable`, `Closed` | `Unavailable` (retry, possibly elsewhere) |
/// | `Storage` and anything else | `Internal` |
/// | [`RcError`] `Invalid` (names the field), `Syntax` | `InvalidArgument` |
/// | `RcError::NotFound` | `NotFound` |
/// | `RcError::AlreadyExists` | `AlreadyExists` |
/// | `RcError::FailedPrecondition` | `FailedPrecondition` |
/// | `RcError::Conflict` (writers kept racing; nothing was written) | `Aborted` (retry the whole read-modify-write) |
/// | `RcError::Corrupt` (a stored record does not decode) | `DataLoss` |
/// | `RcError::Store` | the store error's row above |
pub fn to_status(err: &ApiError) -> Status {
    let code = match err {
        ApiError::Protocol(_) => Code::InvalidArgument,
        ApiError::Store(store) => store_code(store),
        ApiError::Rc(rc) => match rc {
            RcError::Invalid { .. } | RcError::Syntax(_) => Code::InvalidArgument,
            RcError::NotFound { .. } => Code::NotFound,
            RcError::AlreadyExists { .. } => Code::AlreadyExists,
            RcError::FailedPrecondition { .. } => Code::FailedPrecondition,
            RcError::Conflict { .. } => Code::Aborted,
            RcError::Corrupt { .. } => Code::DataLoss,
            RcError::Store { source, .. } => store_code(source),
            // RcError is non-exhaustive: a variant added later is reported
            // as a server fault until it gets its own row here.
            _ => Code::Internal,
        },
    };
    Status::new(code, message_with_causes(err))
}

/// The store rows of [`to_status`]'s table, shared by every error that
/// wraps a [`StoreError`], so a store failure reads the same whichever
/// service met it.
fn store_code(store: &StoreError) -> Code {
    match store {
        StoreError::RequestTooLarge { .. }
        | StoreError::TooManyOps { .. }
        | StoreError::DuplicateKey { .. }
        | StoreError::InvalidArgument(_)
        | StoreError::LeaseTtlTooLarge { .. }
        | StoreError::KeyNotFound { .. }
        | StoreError::ValueProvided { .. }
        | StoreError::LeaseProvided { .. } => Code::InvalidArgument,
        StoreError::LeaseNotFound(_) => Code::NotFound,
        StoreError::LeaseExists(_) | StoreError::LockLost { .. } => Code::FailedPrecondition,
        StoreError::Compacted { .. } | StoreError::FutureRevision { .. } => Code::OutOfRange,
        StoreError::Unavailable { .. } | StoreError::Closed => Code::Unavailable,
        StoreError::Storage { .. } => Code::Internal,
        // StoreError is non-exhaustive: a variant added later is reported
        // as a server fault until it gets its own row here.
        _ => Code::Internal,
    }
}

/// `err`, then each of its sources, joined with ": ".
fn message_with_causes(err: &ApiError) -> String {
    let mut message = err.to_string();
    // `#[error(transparent)]` forwards `source()` to the inner error's own
    // source, so this walks the causes below the displayed error.
    let mut cause = err.source();
    while let Some(inner) = cause {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        to_status(&err)
    }
}

impl From<ProtocolError> for Status {
    fn from(err: ProtocolError) -> Self {
        to_status(&ApiError::Protocol(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: StoreError) -> Status {
        to_status(&ApiError::Store(err))
    }

    #[test]
    fn client_mistakes_are_invalid_argument_and_say_what_is_wrong() {
        let cases = [
            (
                StoreError::RequestTooLarge {
                    size: 2_000_000,
                    limit: 1_572_864,
                },
                "2000000 bytes exceeds the limit of 1572864",
            ),
            (
                StoreError::TooManyOps {
                    ops: 129,
                    limit: 128,
                },
                "129 exceeds the limit of 128",
            ),
            (
                StoreError::DuplicateKey {
                    key: "/drover/rcs/web".into(),
                },
                "/drover/rcs/web",
            ),
            (
                StoreError::InvalidArgument("key is not provided".into()),
                "key is not provided",
            ),
            (StoreError::LeaseTtlTooLarge { ttl: i64::MAX }, "lease TTL"),
        ];
        for (err, needle) in cases {
            let status = status_of(err);
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(needle), "{status:?}");
        }
    }

    #[test]
    fn missing_lease_is_not_found_with_its_id() {
        let status = status_of(StoreError::LeaseNotFound(0x2a));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "lease 2a not found");
    }

    #[test]
    fn revisions_outside_history_are_out_of_range() {
        let compacted = status_of(StoreError::Compacted {
            requested: 3,
            compact_revision: 10,
        });
        assert_eq!(compacted.code(), Code::OutOfRange);
        assert!(
            compacted
                .message()
                .contains("revision 3 has been compacted")
        );
        let future = status_of(StoreError::FutureRevision {
            requested: 99,
            current: 7,
        });
        assert_eq!(future.code(), Code::OutOfRange);
        assert!(future.message().contains("99 is in the future"));
    }

    #[test]
    fn unreachable_or_closed_store_is_unavailable_with_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = status_of(StoreError::Unavailable {
            message: "etcd 127.0.0.1:2379".into(),
            source: Some(Box::new(io)),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "store unavailable: etcd 127.0.0.1:2379: connection refused"
        );
        assert_eq!(status_of(StoreError::Closed).code(), Code::Unavailable);
    }

    #[test]
    fn lost_ownership_and_taken_leases_are_failed_preconditions() {
        let lost = status_of(StoreError::LockLost {
            key: "/drover/locks/rc/web".into(),
            token: 42,
            reason: drover_store::lock::LockEnd::KeyDeleted,
        });
        assert_eq!(lost.code(), Code::FailedPrecondition);
        assert!(lost.message().contains("/drover/locks/rc/web"), "{lost:?}");
        assert_eq!(
            status_of(StoreError::LeaseExists(7)).code(),
            Code::FailedPrecondition
        );
    }

    #[test]
    fn ignore_flags_on_bad_puts_are_invalid_argument() {
        for err in [
            StoreError::KeyNotFound { key: "/k".into() },
            StoreError::ValueProvided { key: "/k".into() },
            StoreError::LeaseProvided { key: "/k".into() },
        ] {
            let status = status_of(err);
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("/k"), "{status:?}");
        }
    }

    #[test]
    fn storage_failure_is_internal() {
        let status = status_of(StoreError::Storage {
            message: "writing the database".into(),
            source: None,
        });
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "storage failure: writing the database");
    }

    #[test]
    fn rc_errors_have_their_rows() {
        let rc = |err: RcError| to_status(&ApiError::Rc(err));
        let invalid = rc(RcError::Invalid {
            field: "replicas_desired".into(),
            reason: "is required".into(),
        });
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(
            invalid.message(),
            "invalid replication controller: replicas_desired: is required"
        );
        let syntax = rc(RcError::Syntax("unknown field `replicas`".into()));
        assert_eq!(syntax.code(), Code::InvalidArgument);
        assert!(syntax.message().contains("`replicas`"), "{syntax:?}");
        let cases = [
            (RcError::NotFound { id: "web".into() }, Code::NotFound),
            (
                RcError::AlreadyExists { id: "web".into() },
                Code::AlreadyExists,
            ),
            (
                RcError::FailedPrecondition {
                    id: "web".into(),
                    reason: "has 3 replicas desired".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                RcError::Conflict {
                    id: "web".into(),
                    attempts: 8,
                },
                Code::Aborted,
            ),
            (
                RcError::Corrupt {
                    key: "/drover/rcs/web".into(),
                    reason: "not JSON".into(),
                },
                Code::DataLoss,
            ),
        ];
        for (err, code) in cases {
            let status = rc(err);
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains("web"),
                "the message names the RC: {status:?}"
            );
        }
    }

    #[test]
    fn rc_store_errors_follow_the_store_rows_with_their_cause() {
        let unavailable = to_status(&ApiError::Rc(RcError::Store {
            context: "reading RC web".into(),
            source: StoreError::Unavailable {
                message: "etcd 127.0.0.1:2379".into(),
                source: None,
            },
        }));
        assert_eq!(unavailable.code(), Code::Unavailable);
        assert_eq!(
            unavailable.message(),
            "store: reading RC web: store unavailable: etcd 127.0.0.1:2379"
        );
        let closed = to_status(&ApiError::Rc(RcError::Store {
            context: "listing RCs".into(),
            source: StoreError::Closed,
        }));
        assert_eq!(closed.code(), Code::Unavailable);
        let storage = to_status(&ApiError::Rc(RcError::Store {
            context: "writing RC web".into(),
            source: StoreError::Storage {
                message: "disk full".into(),
                source: None,
            },
        }));
        assert_eq!(storage.code(), Code::Internal);
    }

    #[test]
    fn protocol_errors_are_invalid_argument_naming_the_field() {
        let status = Status::from(ProtocolError::invalid(
            "store.revision",
            "must be at least 1",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid field `store.revision`: must be at least 1"
        );
    }
}
