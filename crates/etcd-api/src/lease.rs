//! `etcdserverpb.Lease` over the store.

use std::sync::Arc;

use drover_store::{Store, StoreError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::pb::etcdserverpb as etcd;
use crate::status::to_status;

/// Keep-alive answers buffered per stream before the server waits for the
/// client to read them (it stops reading renewals meanwhile).
const KEEP_ALIVE_BUFFER: usize = 16;

/// The Lease handler: grant, revoke, the keep-alive stream, time-to-live
/// and the lease list.
#[derive(Debug)]
pub struct LeaseService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> LeaseService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        LeaseService { shared }
    }
}

#[tonic::async_trait]
impl<S: Store> etcd::lease_server::Lease for LeaseService<S> {
    async fn lease_grant(
        &self,
        request: Request<etcd::LeaseGrantRequest>,
    ) -> Result<Response<etcd::LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        let grant = self
            .shared
            .store
            .lease_grant_with_id(req.id, req.ttl)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(etcd::LeaseGrantResponse {
            header: Some(self.shared.current_header().await?),
            id: grant.id,
            ttl: grant.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<etcd::LeaseRevokeRequest>,
    ) -> Result<Response<etcd::LeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        self.shared
            .store
            .lease_revoke(id)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(etcd::LeaseRevokeResponse {
            header: Some(self.shared.current_header().await?),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<etcd::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<etcd::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut renewals = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(next) = renewals.next().await {
                let Ok(req) = next else {
                    // The client went away or sent garbage: the stream ends.
                    break;
                };
                let answer = match shared.store.lease_keep_alive(req.id).await {
                    Ok(ttl) => Ok((req.id, ttl)),
                    // etcd answers an unknown or expired lease with TTL 0
                    // on the stream, not with an error.
                    Err(StoreError::LeaseNotFound(_)) => Ok((req.id, 0)),
                    Err(e) => Err(e),
                };
                let reply = match answer {
                    Ok((id, ttl)) => match shared.current_header().await {
                        Ok(header) => Ok(etcd::LeaseKeepAliveResponse {
                            header: Some(header),
                            id,
                            ttl,
                        }),
                        Err(status) => Err(status),
                    },
                    Err(e) => {
                        tracing::warn!(lease = req.id, "lease keep-alive failed: {e}");
                        Err(to_status(&e))
                    }
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<etcd::LeaseTimeToLiveRequest>,
    ) -> Result<Response<etcd::LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let header = self.shared.current_header().await?;
        match self.shared.store.lease_time_to_live(req.id).await {
            Ok(ttl) => Ok(Response::new(etcd::LeaseTimeToLiveResponse {
                header: Some(header),
                id: ttl.id,
                ttl: ttl.ttl,
                granted_ttl: ttl.granted_ttl,
                keys: if req.keys { ttl.keys } else { Vec::new() },
            })),
            // etcd reports a missing lease as TTL -1, not as an error.
            Err(StoreError::LeaseNotFound(_)) => Ok(Response::new(etcd::LeaseTimeToLiveResponse {
                header: Some(header),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            })),
            Err(e) => Err(to_status(&e)),
        }
    }

    async fn lease_leases(
        &self,
        _request: Request<etcd::LeaseLeasesRequest>,
    ) -> Result<Response<etcd::LeaseLeasesResponse>, Status> {
        let mut ids = self
            .shared
            .store
            .lease_list()
            .await
            .map_err(|e| to_status(&e))?;
        ids.sort_unstable();
        Ok(Response::new(etcd::LeaseLeasesResponse {
            header: Some(self.shared.current_header().await?),
            leases: ids.into_iter().map(|id| etcd::LeaseStatus { id }).collect(),
        }))
    }
}
