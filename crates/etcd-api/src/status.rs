//! The one table from store errors to etcd's gRPC statuses.
//!
//! etcd clients recognise server errors by their exact message (Go's
//! `rpctypes`, the Rust etcd-client's callers, `drover-store-etcd`), so the
//! texts and codes here are etcd's, byte for byte.

use drover_store::StoreError;
use tonic::{Code, Status};

pub(crate) const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub(crate) const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub(crate) const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub(crate) const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub(crate) const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub(crate) const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
pub(crate) const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
pub(crate) const INVALID_SORT_OPTION: &str = "etcdserver: invalid sort option";
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub(crate) const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub(crate) const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub(crate) const STOPPED: &str = "etcdserver: server stopped";

/// etcd's status for a store error: the code and exact message etcd sends
/// for the same condition, so clients map it to the same typed error.
pub fn to_status(err: &StoreError) -> Status {
    match err {
        StoreError::RequestTooLarge { .. } => Status::invalid_argument(REQUEST_TOO_LARGE),
        StoreError::TooManyOps { .. } => Status::invalid_argument(TOO_MANY_OPS),
        StoreError::DuplicateKey { .. } => Status::invalid_argument(DUPLICATE_KEY),
        StoreError::LeaseNotFound(_) => Status::not_found(LEASE_NOT_FOUND),
        StoreError::LeaseExists(_) => Status::failed_precondition(LEASE_EXISTS),
        StoreError::KeyNotFound { .. } => Status::invalid_argument(KEY_NOT_FOUND),
        StoreError::ValueProvided { .. } => Status::invalid_argument(VALUE_PROVIDED),
        StoreError::LeaseProvided { .. } => Status::invalid_argument(LEASE_PROVIDED),
        StoreError::LeaseTtlTooLarge { .. } => Status::out_of_range(LEASE_TTL_TOO_LARGE),
        StoreError::Compacted { .. } => Status::out_of_range(COMPACTED),
        StoreError::FutureRevision { .. } => Status::out_of_range(FUTURE_REV),
        StoreError::InvalidArgument(message) if message == "key is not provided" => {
            Status::invalid_argument(EMPTY_KEY)
        }
        StoreError::InvalidArgument(message) => {
            Status::invalid_argument(format!("etcdserver: {message}"))
        }
        StoreError::Unavailable { message, .. } => {
            Status::unavailable(format!("etcdserver: {message}"))
        }
        // etcd reports a corrupt backend as DATA_LOSS; clients stop retrying.
        StoreError::Storage { message, .. } => {
            Status::new(Code::DataLoss, format!("etcdserver: {message}"))
        }
        StoreError::Closed => Status::unavailable(STOPPED),
        other => Status::unknown(format!("etcdserver: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_get_etcds_codes_and_messages() {
        let cases = [
            (
                StoreError::RequestTooLarge { size: 2, limit: 1 },
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                StoreError::TooManyOps {
                    ops: 129,
                    limit: 128,
                },
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                StoreError::DuplicateKey { key: "a".into() },
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                StoreError::LeaseNotFound(7),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                StoreError::LeaseTtlTooLarge { ttl: i64::MAX },
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                StoreError::Compacted {
                    requested: 1,
                    compact_revision: 5,
                },
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                StoreError::FutureRevision {
                    requested: 9,
                    current: 5,
                },
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                StoreError::InvalidArgument("key is not provided".into()),
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                StoreError::Closed,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
            (
                StoreError::LeaseExists(3),
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                StoreError::KeyNotFound { key: "k".into() },
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                StoreError::ValueProvided { key: "k".into() },
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                StoreError::LeaseProvided { key: "k".into() },
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
        ];
        for (err, code, message) in cases {
            let status = to_status(&err);
            assert_eq!(
                (status.code(), status.message()),
                (code, message),
                "{err:?}"
            );
        }
    }
}
