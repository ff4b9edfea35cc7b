use std::path::PathBuf;

/// Failures of the etcd API crate outside a request (requests fail with
/// [`tonic::Status`]es made by [`crate::to_status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdApiError {
    /// The member identity file could not be read or written.
    #[error("{action} the member identity file {path}")]
    IdentityIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The member identity file exists but is not what this crate writes.
    #[error("the member identity file {path} is malformed")]
    IdentityMalformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
