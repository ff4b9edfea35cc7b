//! `etcdserverpb.Maintenance` (Status, Alarm) and `etcdserverpb.Cluster`
//! (MemberList): what `etcdctl endpoint status`, `endpoint health` and
//! `member list` need. A Drover orchestrator is one member, its own leader.

use std::sync::Arc;

use drover_store::Store;
use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb as etcd;
use crate::{ETCD_VERSION, RAFT_TERM, Shared};

/// The Maintenance handler.
#[derive(Debug)]
pub struct MaintenanceService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> MaintenanceService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        MaintenanceService { shared }
    }
}

#[tonic::async_trait]
impl<S: Store> etcd::maintenance_server::Maintenance for MaintenanceService<S> {
    async fn alarm(
        &self,
        request: Request<etcd::AlarmRequest>,
    ) -> Result<Response<etcd::AlarmResponse>, Status> {
        use etcd::alarm_request::AlarmAction;
        match AlarmAction::try_from(request.into_inner().action) {
            // No alarm is ever raised: the store reports space and
            // corruption failures as errors on the request that meets them.
            Ok(AlarmAction::Get) => Ok(Response::new(etcd::AlarmResponse {
                header: Some(self.shared.current_header().await?),
                alarms: Vec::new(),
            })),
            _ => Err(Status::unimplemented(
                "etcdserver: alarms cannot be raised or cleared on a Drover orchestrator",
            )),
        }
    }

    async fn status(
        &self,
        _request: Request<etcd::StatusRequest>,
    ) -> Result<Response<etcd::StatusResponse>, Status> {
        let status = self
            .shared
            .store
            .status()
            .await
            .map_err(|e| crate::to_status(&e))?;
        let header = self.shared.header(status.revision);
        let revision = u64::try_from(header.revision).unwrap_or_default();
        Ok(Response::new(etcd::StatusResponse {
            version: ETCD_VERSION.to_string(),
            db_size: status.db_size_bytes,
            leader: header.member_id,
            // There is no raft log; the revision is the closest thing to an
            // applied index that only grows.
            raft_index: revision,
            raft_term: RAFT_TERM,
            raft_applied_index: revision,
            errors: Vec::new(),
            db_size_in_use: status.db_size_in_use_bytes,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
            header: Some(header),
        }))
    }
}

/// The Cluster handler.
#[derive(Debug)]
pub struct ClusterService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> ClusterService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        ClusterService { shared }
    }
}

#[tonic::async_trait]
impl<S: Store> etcd::cluster_server::Cluster for ClusterService<S> {
    async fn member_list(
        &self,
        _request: Request<etcd::MemberListRequest>,
    ) -> Result<Response<etcd::MemberListResponse>, Status> {
        let header = self.shared.current_header().await?;
        Ok(Response::new(etcd::MemberListResponse {
            members: vec![etcd::Member {
                id: header.member_id,
                name: self.shared.config.member_name.clone(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: self.shared.config.client_urls.clone(),
                is_learner: false,
            }],
            header: Some(header),
        }))
    }
}
