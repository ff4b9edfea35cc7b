//! [`RcApi`]: `orchestrator.v1.RcService` on any store, through
//! [`RcStore`].
//!
//! A handler converts its request (refusing bad input before anything is
//! read), makes one `RcStore` call (each change is one compare-and-swap txn
//! with its audit record, so a refused request changes nothing), and answers
//! with the record, its revision and its status. The caller named in audit
//! records is [`Caller::of`] the request.

use std::collections::VecDeque;
use std::pin::Pin;

use drover_ids::RcId;
use drover_rc_farm::RcError;
use drover_rc_farm::store::{RcStore, STATUS_KIND, StatusCodec, StoredRc};
use drover_store::keys::Keys;
use drover_store::reflector::{Reflector, ReflectorError, ReflectorEvent};
use drover_store::{KeyRange, Store};
use futures::Stream;
use tonic::{Code, Request, Response, Status};

use crate::pb::orchestrator::v1 as pb;
use crate::rc::{
    CreateRc, DeleteRc, ListAudit, ListRcs, RcInfo, RcWatchEvent, ScaleRc, TransferReplicas,
    UpdateRc, WatchRcs,
};
use crate::{ApiError, Caller, Identity, ProtocolError, to_status};

/// Serves `RcService` from the RC records of a store.
#[derive(Debug, Clone)]
pub struct RcApi<S> {
    rcs: RcStore<S>,
}

/// Who a request's changes are recorded as in the audit trail: the subject
/// of the caller's verified client certificate (mutual TLS), else
/// `anonymous@<remote address>` (the address is all the server knows of an
/// unauthenticated caller, and it tells two of them apart), else
/// `anonymous` (a request that did not come through the transport).
pub fn audit_identity(caller: Option<&Caller>) -> String {
    match caller {
        Some(Caller {
            identity: Identity::Certificate(cert),
            ..
        }) => cert.subject.clone(),
        Some(Caller {
            remote_addr: Some(addr),
            ..
        }) => format!("anonymous@{addr}"),
        _ => "anonymous".to_owned(),
    }
}

/// Turns an error into the request's status, logging it where it is
/// handled: a server-side fault as a warning, a client's mistake quietly.
fn failed(method: &'static str, err: ApiError) -> Status {
    let status = to_status(&err);
    match status.code() {
        Code::Internal | Code::Unavailable | Code::DataLoss | Code::Unknown => {
            tracing::warn!(method, error = %status.message(), "RcService call failed");
        }
        _ => tracing::debug!(method, error = %status.message(), "RcService call refused"),
    }
    status
}

/// The stream `WatchRcs` answers with.
pub type WatchRcsStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRcsResponse, Status>> + Send>>;

impl<S: Store> RcApi<S> {
    /// The RCs of the key layout `keys` in `store`.
    pub fn new(store: S, keys: Keys) -> Self {
        RcApi {
            rcs: RcStore::new(store, keys),
        }
    }

    /// A stored record with the status its farm last wrote.
    async fn with_status(&self, stored: StoredRc) -> Result<pb::Rc, ApiError> {
        let status = self.rcs.status(&stored.spec.id).await?;
        Ok(RcInfo::new(stored, status).into())
    }

    async fn get(&self, id: &RcId) -> Result<pb::Rc, ApiError> {
        let stored = self
            .rcs
            .get(id)
            .await?
            .ok_or_else(|| RcError::NotFound { id: id.to_string() })?;
        self.with_status(stored).await
    }

    async fn list(&self, request: ListRcs) -> Result<Vec<pb::Rc>, ApiError> {
        let stored = self.rcs.list(&request.selector).await?;
        // One read of every status rather than one per RC: a listing of
        // thousands of RCs stays two store reads.
        let mut statuses = self.statuses().await?;
        Ok(stored
            .into_iter()
            .map(|rc| {
                let status = statuses.remove(&rc.spec.id);
                RcInfo::new(rc, status).into()
            })
            .collect())
    }

    /// Every RC's status, by id. A status that does not decode fails the
    /// listing naming its key, rather than showing an RC as unreported.
    async fn statuses(
        &self,
    ) -> Result<std::collections::BTreeMap<RcId, drover_rc_farm::status::RcStatus>, ApiError> {
        use drover_store::reflector::Codec;
        let codec = StatusCodec::new(self.rcs.keys().clone());
        let response = self
            .rcs
            .store()
            .get(drover_store::Get::prefix(self.rcs.status_prefix()))
            .await
            .map_err(|source| RcError::Store {
                context: "listing RC statuses".to_owned(),
                source,
            })?;
        response
            .kvs
            .iter()
            .map(|kv| codec.decode(kv).map_err(ApiError::from))
            .collect()
    }

    /// The stream of `WatchRcs`: the statuses at one revision, the SYNCED
    /// marker, then each change, read from a reflector over `status/rc/`
    /// (or over the one RC's status key). Nothing runs between the client's
    /// reads: the stream is polled by the transport and dropped (with its
    /// store watch) when the client goes away.
    fn watch(&self, request: WatchRcs) -> Result<WatchRcsStream, ApiError> {
        struct State<S: Store> {
            reflector: Reflector<S, StatusCodec>,
            pending: VecDeque<RcWatchEvent>,
            failed: bool,
        }
        let codec = StatusCodec::new(self.rcs.keys().clone());
        let reflector = match &request.id {
            None => self.rcs.status_reflector(),
            Some(id) => {
                let key = self
                    .rcs
                    .keys()
                    .status(STATUS_KIND, id.as_ref())
                    .map_err(|e| ProtocolError::invalid("id", e.to_string()))?;
                Reflector::new(self.rcs.store().clone(), KeyRange::Key(key.into()), codec)
            }
        };
        let state = State {
            reflector,
            pending: VecDeque::new(),
            failed: false,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            loop {
                if state.failed {
                    return None;
                }
                if let Some(event) = state.pending.pop_front() {
                    return Some((Ok(pb::WatchRcsResponse::from(event)), state));
                }
                match state.reflector.next().await {
                    Ok(ReflectorEvent::Initial { revision, objects }) => {
                        let existing =
                            objects
                                .into_iter()
                                .map(|(id, status)| RcWatchEvent::Existing {
                                    id,
                                    status,
                                    revision,
                                });
                        state.pending.extend(existing);
                        state.pending.push_back(RcWatchEvent::Synced { revision });
                    }
                    Ok(ReflectorEvent::Applied {
                        id,
                        object,
                        prev,
                        revision,
                    }) => {
                        // A rewrite of the same status is not a change.
                        if prev.as_ref() != Some(&object) {
                            state.pending.push_back(RcWatchEvent::Updated {
                                id,
                                status: object,
                                revision,
                            });
                        }
                    }
                    Ok(ReflectorEvent::Deleted { id, revision, .. }) => {
                        state
                            .pending
                            .push_back(RcWatchEvent::Deleted { id, revision });
                    }
                    // After a compaction gap the differences came as
                    // Applied and Deleted events already.
                    Ok(ReflectorEvent::Restarted { .. }) => {}
                    Err(e) => {
                        // The stream ends with the reason; the client
                        // watches again (a corrupt status is DataLoss
                        // naming its key, a lasting store failure is
                        // Unavailable).
                        state.failed = true;
                        let err = match e {
                            ReflectorError::Store { range, source } => {
                                ApiError::Rc(RcError::Store {
                                    context: format!("watching {range}"),
                                    source,
                                })
                            }
                            ReflectorError::Corrupt { source, .. } => ApiError::Rc(source),
                        };
                        return Some((Err(failed("WatchRcs", err)), state));
                    }
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl<S: Store> pb::rc_service_server::RcService for RcApi<S> {
    async fn create_rc(
        &self,
        request: Request<pb::CreateRcRequest>,
    ) -> Result<Response<pb::CreateRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let create = CreateRc::try_from(request.into_inner())?;
            let stored = self.rcs.create(&create.spec, &who).await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::CreateRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("CreateRc", e)),
        }
    }

    async fn get_rc(
        &self,
        request: Request<pb::GetRcRequest>,
    ) -> Result<Response<pb::GetRcResponse>, Status> {
        let result = async {
            let id = RcId::try_from(request.into_inner())?;
            self.get(&id).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::GetRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("GetRc", e)),
        }
    }

    async fn list_rcs(
        &self,
        request: Request<pb::ListRcsRequest>,
    ) -> Result<Response<pb::ListRcsResponse>, Status> {
        let result = async {
            let list = ListRcs::try_from(request.into_inner())?;
            self.list(list).await
        };
        match result.await {
            Ok(rcs) => Ok(Response::new(pb::ListRcsResponse { rcs })),
            Err(e) => Err(failed("ListRcs", e)),
        }
    }

    async fn update_rc(
        &self,
        request: Request<pb::UpdateRcRequest>,
    ) -> Result<Response<pb::UpdateRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let update = UpdateRc::try_from(request.into_inner())?;
            let stored = self
                .rcs
                .update(&update.spec, update.expected_revision, &who)
                .await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::UpdateRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("UpdateRc", e)),
        }
    }

    async fn scale_rc(
        &self,
        request: Request<pb::ScaleRcRequest>,
    ) -> Result<Response<pb::ScaleRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let scale = ScaleRc::try_from(request.into_inner())?;
            let stored = self.rcs.scale(&scale.id, scale.replicas, &who).await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::ScaleRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("ScaleRc", e)),
        }
    }

    async fn enable_rc(
        &self,
        request: Request<pb::EnableRcRequest>,
    ) -> Result<Response<pb::EnableRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let id = RcId::try_from(request.into_inner())?;
            let stored = self.rcs.set_disabled(&id, false, &who).await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::EnableRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("EnableRc", e)),
        }
    }

    async fn disable_rc(
        &self,
        request: Request<pb::DisableRcRequest>,
    ) -> Result<Response<pb::DisableRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let id = RcId::try_from(request.into_inner())?;
            let stored = self.rcs.set_disabled(&id, true, &who).await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::DisableRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("DisableRc", e)),
        }
    }

    async fn delete_rc(
        &self,
        request: Request<pb::DeleteRcRequest>,
    ) -> Result<Response<pb::DeleteRcResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let delete = DeleteRc::try_from(request.into_inner())?;
            let stored = self.rcs.delete(&delete.id, delete.force, &who).await?;
            self.with_status(stored).await
        };
        match result.await {
            Ok(rc) => Ok(Response::new(pb::DeleteRcResponse { rc: Some(rc) })),
            Err(e) => Err(failed("DeleteRc", e)),
        }
    }

    async fn transfer_replicas(
        &self,
        request: Request<pb::TransferReplicasRequest>,
    ) -> Result<Response<pb::TransferReplicasResponse>, Status> {
        let who = audit_identity(Caller::of(&request));
        let result = async {
            let transfer = TransferReplicas::try_from(request.into_inner())?;
            let (from, to) = self
                .rcs
                .transfer(&transfer.from, &transfer.to, transfer.count, &who)
                .await?;
            Ok::<_, ApiError>((self.with_status(from).await?, self.with_status(to).await?))
        };
        match result.await {
            Ok((from, to)) => Ok(Response::new(pb::TransferReplicasResponse {
                from_rc: Some(from),
                to_rc: Some(to),
            })),
            Err(e) => Err(failed("TransferReplicas", e)),
        }
    }

    type WatchRcsStream = WatchRcsStream;

    async fn watch_rcs(
        &self,
        request: Request<pb::WatchRcsRequest>,
    ) -> Result<Response<Self::WatchRcsStream>, Status> {
        let stream = WatchRcs::try_from(request.into_inner())
            .map_err(ApiError::from)
            .and_then(|watch| self.watch(watch))
            .map_err(|e| failed("WatchRcs", e))?;
        Ok(Response::new(stream))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let result = async {
            let list = ListAudit::try_from(request.into_inner())?;
            Ok::<_, ApiError>(self.rcs.audit(list.rc.as_ref(), list.limit).await?)
        };
        match result.await {
            Ok(records) => Ok(Response::new(pb::ListAuditResponse {
                records: records.into_iter().map(Into::into).collect(),
            })),
            Err(e) => Err(failed("ListAudit", e)),
        }
    }
}
