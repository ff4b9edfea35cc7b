//! etcd errors onto [`StoreError`], so callers of either backend see one set
//! of typed errors.
//!
//! etcd reports its errors as gRPC statuses whose messages are fixed strings
//! (etcd's `api/v3rpc/rpctypes`). The codes alone are ambiguous (`OutOfRange`
//! is both "compacted" and "future revision"), so the message decides.

use drover_store::{LeaseId, MAX_REQUEST_BYTES, MAX_TXN_OPS, Revision, StoreError};
use etcd_client::Error as EtcdError;
use tonic::Code;

/// What the failed request was about, for the fields of the typed error.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErrorContext {
    /// Short operation name for messages ("get", "txn", "lease keep-alive").
    pub(crate) op: &'static str,
    /// The lease the request used (for `LeaseNotFound`).
    pub(crate) lease: Option<LeaseId>,
    /// The revision the request asked for (for `Compacted` / `FutureRevision`).
    pub(crate) revision: Revision,
    /// The request's estimated size (for `RequestTooLarge`).
    pub(crate) size: usize,
    /// The TTL the request asked for (for `LeaseTtlTooLarge`).
    pub(crate) ttl: i64,
}

impl ErrorContext {
    pub(crate) fn new(op: &'static str) -> Self {
        ErrorContext {
            op,
            ..ErrorContext::default()
        }
    }
    pub(crate) fn lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }
    pub(crate) fn revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }
    pub(crate) fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }
    pub(crate) fn ttl(mut self, ttl: i64) -> Self {
        self.ttl = ttl;
        self
    }
}

// etcd's error descriptions (rpctypes), matched as substrings so a prefix
// added by a proxy or a newer server does not break the mapping.
const MSG_REQUEST_TOO_LARGE: &str = "request is too large";
const MSG_TOO_MANY_OPS: &str = "too many operations in txn request";
const MSG_DUPLICATE_KEY: &str = "duplicate key given in txn request";
const MSG_LEASE_NOT_FOUND: &str = "requested lease not found";
const MSG_COMPACTED: &str = "required revision has been compacted";
const MSG_FUTURE_REV: &str = "required revision is a future revision";
const MSG_TTL_TOO_LARGE: &str = "too large lease TTL";
const MSG_NO_SPACE: &str = "database space exceeded";
const MSG_CORRUPT: &str = "corrupt cluster";
const MSG_NOT_LEADER: &str = "not leader";
const MSG_EMPTY_KEY: &str = "key is not provided";
const MSG_KEY_NOT_FOUND: &str = "etcdserver: key not found";
const MSG_VALUE_PROVIDED: &str = "value is provided";
const MSG_LEASE_PROVIDED: &str = "lease is provided";
const MSG_LEASE_EXISTS: &str = "lease already exists";

/// Map an etcd-client error. `Compacted` and `FutureRevision` come back with
/// `compact_revision` / `current` set to 0 when etcd did not say; the store
/// fills them in (see `EtcdStore::complete_error`).
pub(crate) fn map_error(err: EtcdError, ctx: ErrorContext) -> StoreError {
    match err {
        EtcdError::GRpcStatus(status) => map_status(status, ctx),
        EtcdError::TransportError(e) => unavailable(ctx, "transport error", e),
        EtcdError::IoError(e) => unavailable(ctx, "i/o error", e),
        // The client's request channel to a stream closed: the stream died.
        EtcdError::WatchError(msg) | EtcdError::LeaseKeepAliveError(msg) => {
            if ctx.lease.is_some() && msg.contains("lease not found") {
                StoreError::LeaseNotFound(ctx.lease.unwrap_or_default())
            } else {
                StoreError::Unavailable {
                    message: format!("etcd {}: stream closed: {msg}", ctx.op),
                    source: None,
                }
            }
        }
        EtcdError::InvalidArgs(msg) | EtcdError::EndpointError(msg) => {
            StoreError::InvalidArgument(format!("etcd {}: {msg}", ctx.op))
        }
        EtcdError::InvalidUri(e) => {
            StoreError::InvalidArgument(format!("invalid etcd endpoint: {e}"))
        }
        other => StoreError::Unavailable {
            message: format!("etcd {}: {other}", ctx.op),
            source: Some(Box::new(other)),
        },
    }
}

fn unavailable(
    ctx: ErrorContext,
    what: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Unavailable {
        message: format!("etcd {}: {what}: {source}", ctx.op),
        source: Some(Box::new(source)),
    }
}

fn map_status(status: tonic::Status, ctx: ErrorContext) -> StoreError {
    let msg = status.message();
    if msg.contains(MSG_REQUEST_TOO_LARGE) {
        return StoreError::RequestTooLarge {
            size: ctx.size.max(MAX_REQUEST_BYTES + 1),
            limit: MAX_REQUEST_BYTES,
        };
    }
    if msg.contains(MSG_TOO_MANY_OPS) {
        return StoreError::TooManyOps {
            ops: MAX_TXN_OPS + 1,
            limit: MAX_TXN_OPS,
        };
    }
    if msg.contains(MSG_DUPLICATE_KEY) {
        // Validation catches duplicates first; etcd does not name the key.
        return StoreError::DuplicateKey {
            key: String::from("<unknown>"),
        };
    }
    if msg.contains(MSG_LEASE_NOT_FOUND) {
        return StoreError::LeaseNotFound(ctx.lease.unwrap_or_default());
    }
    if msg.contains(MSG_COMPACTED) {
        return StoreError::Compacted {
            requested: ctx.revision,
            compact_revision: 0,
        };
    }
    if msg.contains(MSG_FUTURE_REV) {
        return StoreError::FutureRevision {
            requested: ctx.revision,
            current: 0,
        };
    }
    if msg.contains(MSG_TTL_TOO_LARGE) {
        return StoreError::LeaseTtlTooLarge { ttl: ctx.ttl };
    }
    if msg.contains(MSG_NO_SPACE) || msg.contains(MSG_CORRUPT) || status.code() == Code::DataLoss {
        return StoreError::Storage {
            message: format!("etcd {}: {msg}", ctx.op),
            source: Some(Box::new(status)),
        };
    }
    // etcd does not name the key: the store fills it in where it knows it.
    if msg.contains(MSG_KEY_NOT_FOUND) {
        return StoreError::KeyNotFound { key: String::new() };
    }
    if msg.contains(MSG_VALUE_PROVIDED) {
        return StoreError::ValueProvided { key: String::new() };
    }
    if msg.contains(MSG_LEASE_PROVIDED) {
        return StoreError::LeaseProvided { key: String::new() };
    }
    if msg.contains(MSG_LEASE_EXISTS) {
        return StoreError::LeaseExists(ctx.lease.unwrap_or_default());
    }
    if msg.contains(MSG_EMPTY_KEY) {
        return StoreError::InvalidArgument(String::from("key is not provided"));
    }
    match status.code() {
        // Leader changes, timeouts, lost connections, overload: retry later.
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::Unknown
        | Code::Internal
        | Code::ResourceExhausted => StoreError::Unavailable {
            message: format!("etcd {}: {msg}", ctx.op),
            source: Some(Box::new(status)),
        },
        Code::FailedPrecondition if msg.contains(MSG_NOT_LEADER) => StoreError::Unavailable {
            message: format!("etcd {}: {msg}", ctx.op),
            source: Some(Box::new(status)),
        },
        _ => StoreError::InvalidArgument(format!(
            "etcd {} rejected the request ({:?}): {msg}",
            ctx.op,
            status.code()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> EtcdError {
        EtcdError::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn etcd_messages_map_to_typed_errors() {
        let ctx = ErrorContext::new("test")
            .lease(7)
            .revision(5)
            .size(2_000_000)
            .ttl(99);
        type Check = fn(&StoreError) -> bool;
        let cases: Vec<(EtcdError, Check)> = vec![
            (
                status(Code::InvalidArgument, "etcdserver: request is too large"),
                |e| matches!(e, StoreError::RequestTooLarge { size: 2_000_000, limit } if *limit == MAX_REQUEST_BYTES),
            ),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: too many operations in txn request",
                ),
                |e| matches!(e, StoreError::TooManyOps { limit, .. } if *limit == MAX_TXN_OPS),
            ),
            (
                status(
                    Code::InvalidArgument,
                    "etcdserver: duplicate key given in txn request",
                ),
                |e| matches!(e, StoreError::DuplicateKey { .. }),
            ),
            (
                status(Code::NotFound, "etcdserver: requested lease not found"),
                |e| matches!(e, StoreError::LeaseNotFound(7)),
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision has been compacted",
                ),
                |e| matches!(e, StoreError::Compacted { requested: 5, .. }),
            ),
            (
                status(
                    Code::OutOfRange,
                    "etcdserver: mvcc: required revision is a future revision",
                ),
                |e| matches!(e, StoreError::FutureRevision { requested: 5, .. }),
            ),
            (
                status(Code::OutOfRange, "etcdserver: too large lease TTL"),
                |e| matches!(e, StoreError::LeaseTtlTooLarge { ttl: 99 }),
            ),
            (
                status(Code::InvalidArgument, "etcdserver: key is not provided"),
                |e| matches!(e, StoreError::InvalidArgument(_)),
            ),
            (
                status(Code::InvalidArgument, "etcdserver: key not found"),
                |e| matches!(e, StoreError::KeyNotFound { .. }),
            ),
            (
                status(Code::InvalidArgument, "etcdserver: value is provided"),
                |e| matches!(e, StoreError::ValueProvided { .. }),
            ),
            (
                status(Code::InvalidArgument, "etcdserver: lease is provided"),
                |e| matches!(e, StoreError::LeaseProvided { .. }),
            ),
            (
                status(Code::FailedPrecondition, "etcdserver: lease already exists"),
                |e| matches!(e, StoreError::LeaseExists(7)),
            ),
            (
                status(Code::Unavailable, "etcdserver: leader changed"),
                |e| matches!(e, StoreError::Unavailable { .. }) && e.is_retryable(),
            ),
            (
                status(Code::Unavailable, "etcdserver: request timed out"),
                |e| e.is_retryable(),
            ),
            (
                status(Code::FailedPrecondition, "etcdserver: not leader"),
                |e| e.is_retryable(),
            ),
            (
                status(Code::ResourceExhausted, "etcdserver: too many requests"),
                |e| e.is_retryable(),
            ),
            (
                status(
                    Code::ResourceExhausted,
                    "etcdserver: mvcc: database space exceeded",
                ),
                |e| matches!(e, StoreError::Storage { .. }) && !e.is_retryable(),
            ),
            (
                status(Code::PermissionDenied, "etcdserver: permission denied"),
                |e| matches!(e, StoreError::InvalidArgument(m) if m.contains("permission denied")),
            ),
            (
                EtcdError::LeaseKeepAliveError("lease not found".into()),
                |e| matches!(e, StoreError::LeaseNotFound(7)),
            ),
            (EtcdError::WatchError("channel closed".into()), |e| {
                e.is_retryable()
            }),
            (
                EtcdError::IoError(std::io::Error::other("connection reset")),
                |e| e.is_retryable(),
            ),
        ];
        for (err, check) in cases {
            let shown = format!("{err}");
            let mapped = map_error(err, ctx);
            assert!(check(&mapped), "{shown} mapped to {mapped:?}");
        }
    }
}
