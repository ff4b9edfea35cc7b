//! Drover's gRPC API: the code generated from `proto/` ([`pb`]), domain
//! types with validated conversions from and to it ([`SystemInfo`], and the
//! replication controllers' in [`rc`]), the services that are more than
//! wiring ([`RcApi`]), and the one table that turns errors into
//! [`tonic::Status`] ([`to_status`]).
//!
//! Messages received from the wire are untrusted: they become domain types
//! only through `TryFrom`, which names the first missing or invalid field in a
//! [`ProtocolError`]. Sending is infallible (`From`).
//!
//! ```
//! use std::time::Duration;
//! use drover_api::{pb, to_status, ApiError, ProtocolError, StoreInfo, StoreLocation, SystemInfo};
//!
//! let info = SystemInfo {
//!     version: "0.1.0".into(),
//!     store: StoreInfo {
//!         backend: "embedded".into(),
//!         revision: 1,
//!         location: StoreLocation::InMemory,
//!     },
//!     uptime: Duration::from_secs(5),
//!     caller: None,
//! };
//! let wire = pb::orchestrator::v1::GetInfoResponse::from(info.clone());
//! assert_eq!(SystemInfo::try_from(wire).unwrap(), info);
//!
//! // A response without its store is rejected, naming the field.
//! let broken = pb::orchestrator::v1::GetInfoResponse { version: "0.1.0".into(), ..Default::default() };
//! let err = SystemInfo::try_from(broken).unwrap_err();
//! assert_eq!(err, ProtocolError::Missing("store".into()));
//!
//! // Every error a service returns goes through one table.
//! let status = to_status(&ApiError::from(err));
//! assert_eq!(status.code(), tonic::Code::InvalidArgument);
//! assert_eq!(status.message(), "missing field `store`");
//! ```

mod caller;
mod error;
pub mod rc;
mod rc_api;
mod system;

pub use caller::{Caller, CertificateIdentity, Identity, identify_caller};
pub use error::{ApiError, ProtocolError, to_status};
pub use rc::RcInfo;
pub use rc_api::{RcApi, WatchRcsStream, audit_identity};
pub use system::{StoreInfo, StoreLocation, SystemInfo};

/// Code generated from `proto/` by `cargo xtask codegen`; do not edit.
#[rustfmt::skip]
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
pub mod pb {
    /// Package `orchestrator`.
    pub mod orchestrator {
        /// Package `orchestrator.v1`.
        pub mod v1 {
            include!("generated/orchestrator.v1.rs");
        }
    }

    /// The encoded `google.protobuf.FileDescriptorSet` of every proto in
    /// `proto/` and its imports (with source comments), for gRPC server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor_set.bin");
}
