//! etcd's v3 gRPC API served over any Drover [`Store`].
//!
//! `orchestrator serve` owns the store (the embedded one, or a connection to
//! etcd) and serves this API next to `orchestrator.v1` on its one port, so
//! every other process reaches the store with an ordinary etcd client:
//! `etcdctl`, Go's `clientv3`, the Rust `etcd-client` (and through it
//! `drover-store-etcd`).
//!
//! Served: `KV` (Range with every option, Put, DeleteRange, Txn, Compact),
//! `Watch` (many watches per stream), `Lease` (grant, revoke, keep-alive,
//! time-to-live, list), `Maintenance` (Status, Alarm), `Cluster`
//! (MemberList), and etcd's `Election` (campaign, proclaim, leader, observe,
//! resign) and `Lock` (lock, unlock) on `drover-election`, so any language
//! with generated stubs can run an election through Drover. Everything else
//! (auth, membership changes, snapshots) answers `UNIMPLEMENTED`.
//!
//! Every service is generic over `S: Store`: it translates wire messages
//! into the store port's requests and the port's answers and errors back
//! into etcd's messages, statuses and exact error texts ([`to_status`]), so
//! etcd clients map them to their own typed errors.
//!
//! ```
//! use drover_etcd_api::{EtcdApi, EtcdApiConfig, MemberIdentity, pb::etcdserverpb as etcd};
//! use drover_etcd_api::pb::etcdserverpb::kv_server::Kv;
//! use drover_store::embedded::EmbeddedStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tonic::Status> {
//! let api = EtcdApi::new(EmbeddedStore::in_memory(), MemberIdentity::random(), EtcdApiConfig::default());
//! let kv = api.kv_service();
//! kv.put(tonic::Request::new(etcd::PutRequest {
//!     key: b"/drover/rcs/web".to_vec(),
//!     value: b"replicas: 3".to_vec(),
//!     ..Default::default()
//! }))
//! .await?;
//! let got = kv
//!     .range(tonic::Request::new(etcd::RangeRequest {
//!         key: b"/drover/".to_vec(),
//!         range_end: b"/drover0".to_vec(),
//!         ..Default::default()
//!     }))
//!     .await?
//!     .into_inner();
//! assert_eq!(got.count, 1);
//! assert_eq!(got.kvs[0].value, b"replicas: 3");
//! let header = got.header.expect("every answer has a header");
//! assert_eq!(header.member_id, api.identity().member_id);
//! assert!(header.revision >= 2);
//!
//! // Errors carry etcd's codes and texts.
//! let err = kv.put(tonic::Request::new(etcd::PutRequest::default())).await.unwrap_err();
//! assert_eq!(err.code(), tonic::Code::InvalidArgument);
//! assert_eq!(err.message(), "etcdserver: key is not provided");
//! # Ok(()) }
//! ```

mod convert;
mod election;
mod error;
mod identity;
mod kv;
mod lease;
mod maintenance;
mod status;
#[cfg(feature = "testing")]
pub mod testing;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use drover_store::Store;

pub use election::{
    DEFAULT_SESSION_TTL, ELECTION_SESSION_EXPIRED, ElectionService, LockService,
    MISSING_LEADER_KEY, MUTEX_SESSION_EXPIRED, NO_LEADER, NOT_LEADER,
};
pub use error::EtcdApiError;
pub use identity::{IDENTITY_FILE, MemberIdentity};
pub use kv::KvService;
pub use lease::LeaseService;
pub use maintenance::{ClusterService, MaintenanceService};
pub use status::to_status;
pub use watch::{DUPLICATE_WATCH_ID, INVALID_WATCH_ID, WatchService};

use pb::etcdserverpb::ResponseHeader;
use pb::etcdserverpb::cluster_server::ClusterServer;
use pb::etcdserverpb::kv_server::KvServer;
use pb::etcdserverpb::lease_server::LeaseServer;
use pb::etcdserverpb::maintenance_server::MaintenanceServer;
use pb::etcdserverpb::watch_server::WatchServer;
use pb::v3electionpb::election_server::ElectionServer;
use pb::v3lockpb::lock_server::LockServer;

/// The etcd server version reported by `Maintenance.Status`: the API level
/// whose semantics are served (3.5 clients use nothing newer).
pub const ETCD_VERSION: &str = "3.5.0";

/// The largest request message accepted: etcd's request limit plus the
/// 512 KiB it allows for gRPC framing. Larger messages are refused by gRPC
/// itself (`RESOURCE_EXHAUSTED`); those between the two limits reach the
/// store and get etcd's "request is too large".
pub const MAX_RECEIVE_BYTES: usize = drover_store::MAX_REQUEST_BYTES + 512 * 1024;

/// The raft term reported in every header: a Drover orchestrator is a single
/// member that never changes leader.
pub const RAFT_TERM: u64 = 1;

/// Tunables of the served API.
#[derive(Debug, Clone)]
pub struct EtcdApiConfig {
    /// Watch responses buffered per watch stream before the server waits for
    /// the client to read.
    pub watch_buffer: usize,
    /// How long a watch may wait for its client to read before it is
    /// canceled (with a reason), so a stuck client cannot make the server
    /// hold ever more events.
    pub watch_send_timeout: Duration,
    /// Watches that asked for `fragment` get responses larger than this
    /// split into several.
    pub fragment_bytes: usize,
    /// The member's name in `MemberList` and `endpoint status`.
    pub member_name: String,
    /// The URLs clients reach this member at, for `MemberList`.
    pub client_urls: Vec<String>,
}

impl Default for EtcdApiConfig {
    fn default() -> Self {
        EtcdApiConfig {
            watch_buffer: 128,
            watch_send_timeout: Duration::from_secs(30),
            fragment_bytes: drover_store::MAX_REQUEST_BYTES,
            member_name: String::from("drover"),
            client_urls: Vec::new(),
        }
    }
}

/// The etcd v3 API over one store: hands out the tonic services.
#[derive(Debug)]
pub struct EtcdApi<S: Store> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> Clone for EtcdApi<S> {
    fn clone(&self) -> Self {
        EtcdApi {
            shared: self.shared.clone(),
        }
    }
}

/// What every service of one [`EtcdApi`] shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub(crate) store: S,
    pub(crate) identity: MemberIdentity,
    pub(crate) config: EtcdApiConfig,
}

impl<S: Store> Shared<S> {
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }

    /// A header at the store's current revision, for answers whose store
    /// call reports none (leases, status).
    pub(crate) async fn current_header(&self) -> Result<ResponseHeader, tonic::Status> {
        let revision = self
            .store
            .current_revision()
            .await
            .map_err(|e| to_status(&e))?;
        Ok(self.header(revision))
    }
}

impl<S: Store> EtcdApi<S> {
    /// The API over `store`, answering as the member `identity`.
    pub fn new(store: S, identity: MemberIdentity, config: EtcdApiConfig) -> Self {
        EtcdApi {
            shared: Arc::new(Shared {
                store,
                identity,
                config,
            }),
        }
    }

    /// The member and cluster ids in every response header.
    pub fn identity(&self) -> &MemberIdentity {
        &self.shared.identity
    }

    /// The store served.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// A response header at `revision`, as every service sends it (for
    /// services built on this crate).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        self.shared.header(revision)
    }

    /// A response header at the store's current revision.
    pub async fn current_header(&self) -> Result<ResponseHeader, tonic::Status> {
        self.shared.current_header().await
    }

    /// The `etcdserverpb.KV` handler.
    pub fn kv_service(&self) -> KvService<S> {
        KvService::new(self.shared.clone())
    }

    /// The `etcdserverpb.KV` service, with etcd's message size limit.
    pub fn kv_server(&self) -> KvServer<KvService<S>> {
        KvServer::new(self.kv_service())
            .max_decoding_message_size(MAX_RECEIVE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// The `etcdserverpb.Watch` service.
    pub fn watch_server(&self) -> WatchServer<WatchService<S>> {
        WatchServer::new(WatchService::new(self.shared.clone()))
            .max_decoding_message_size(MAX_RECEIVE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// The `etcdserverpb.Lease` service.
    pub fn lease_server(&self) -> LeaseServer<LeaseService<S>> {
        LeaseServer::new(LeaseService::new(self.shared.clone()))
            .max_decoding_message_size(MAX_RECEIVE_BYTES)
    }

    /// The `etcdserverpb.Maintenance` service.
    pub fn maintenance_server(&self) -> MaintenanceServer<MaintenanceService<S>> {
        MaintenanceServer::new(MaintenanceService::new(self.shared.clone()))
    }

    /// The `etcdserverpb.Cluster` service.
    pub fn cluster_server(&self) -> ClusterServer<ClusterService<S>> {
        ClusterServer::new(ClusterService::new(self.shared.clone()))
    }

    /// The `v3electionpb.Election` service.
    pub fn election_server(&self) -> ElectionServer<ElectionService<S>> {
        ElectionServer::new(ElectionService::new(self.shared.clone()))
            .max_decoding_message_size(MAX_RECEIVE_BYTES)
    }

    /// The `v3lockpb.Lock` service.
    pub fn lock_server(&self) -> LockServer<LockService<S>> {
        LockServer::new(LockService::new(self.shared.clone()))
            .max_decoding_message_size(MAX_RECEIVE_BYTES)
    }

    /// Every service of this crate on one tonic router (for tests and simple
    /// servers; `orchestrator serve` adds them to its own router).
    pub fn into_router(self) -> tonic::service::Routes {
        let mut routes = tonic::service::RoutesBuilder::default();
        routes
            .add_service(self.kv_server())
            .add_service(self.watch_server())
            .add_service(self.lease_server())
            .add_service(self.maintenance_server())
            .add_service(self.cluster_server())
            .add_service(self.election_server())
            .add_service(self.lock_server());
        routes.routes()
    }
}

/// Code generated from `proto/etcd/` by `cargo xtask codegen`; do not edit.
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
    /// etcd's `etcdserverpb`: KV, Watch, Lease, Cluster, Maintenance.
    pub mod etcdserverpb {
        include!("generated/etcdserverpb.rs");
    }
    /// etcd's `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        include!("generated/mvccpb.rs");
    }
    /// etcd's `v3electionpb`: the Election service.
    pub mod v3electionpb {
        include!("generated/v3electionpb.rs");
    }
    /// etcd's `v3lockpb`: the Lock service.
    pub mod v3lockpb {
        include!("generated/v3lockpb.rs");
    }

    /// The encoded `google.protobuf.FileDescriptorSet` of `proto/etcd/`, for
    /// gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor_set.bin");
}
