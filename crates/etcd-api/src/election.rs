//! etcd's `v3electionpb.Election` and `v3lockpb.Lock` over `drover-election`.
//!
//! etcd serves these with its own `clientv3/concurrency` package on the
//! caller's lease; here a Drover [`Election`] does the campaigning, in the
//! same key layout (`<name>/<lease id in hex>`, the oldest create revision
//! leads or holds the lock). So a candidate that campaigns through this API,
//! one started by `etcdctl elect`/`etcdctl lock` (which use KV directly) and
//! a Drover elector on the prefix `<name>/` all exclude each other.
//!
//! The caller keeps its lease alive; the server only campaigns with it
//! ([`Election::campaign_for_remote_lease`], no local term or timer). A campaign or lock whose client
//! goes away is withdrawn (its key deleted), as etcd does.
//!
//! Answers follow etcd: its error texts, and the code `UNKNOWN` where etcd
//! returns a plain Go error (`election: no leader`, `election: not leader`,
//! a missing `leader` field). Where Drover is stricter it says so:
//! - a waiting campaign or lock whose key disappears (its lease expired, or
//!   someone deleted it) fails with `election: session is expired` /
//!   `mutex: session is expired` instead of reporting a leadership it does
//!   not hold;
//! - `Proclaim` also checks the leader key's lease, not only its create
//!   revision;
//! - election and lock names must be UTF-8 (Drover's keys are).

use std::sync::Arc;

use drover_election::{Election, ElectionError, Observation};
use drover_store::fence::Fence;
use drover_store::{Delete, LeaseId, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::Shared;
use crate::convert::key_value;
use crate::pb::v3electionpb as pb;
use crate::pb::v3lockpb as lockpb;
use crate::status::to_status;

/// etcd's answer when `Leader` finds no candidate.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's answer when `Proclaim` is not made by the current leader key.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's answer when `Proclaim` or `Resign` has no leader key.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";
/// A campaign whose candidate key disappeared while it waited.
pub const ELECTION_SESSION_EXPIRED: &str = "election: session is expired";
/// A lock whose key disappeared while it waited (etcd's mutex text).
pub const MUTEX_SESSION_EXPIRED: &str = "mutex: session is expired";

/// The TTL etcd's `concurrency` sessions grant when a campaign or lock
/// names no lease (lease 0): the key then lives until this lease expires,
/// since nothing keeps it alive.
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// Observe answers buffered per stream before the server waits for its
/// client to read.
const OBSERVE_BUFFER: usize = 16;

/// The Election handler: campaign, proclaim, leader, observe and resign.
#[derive(Debug)]
pub struct ElectionService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> ElectionService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        ElectionService { shared }
    }
}

/// The Lock handler: lock and unlock.
#[derive(Debug)]
pub struct LockService<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> LockService<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        LockService { shared }
    }
}

/// The election (or lock) called `name`: the prefix `<name>/`, as etcd's
/// `concurrency.NewElection` and `NewMutex` make it.
fn election_named<S: Store>(store: &S, name: Vec<u8>) -> Result<Election<S>, Status> {
    let name = String::from_utf8(name).map_err(|_| {
        Status::invalid_argument("etcdserver: election and lock names must be UTF-8")
    })?;
    Election::with_prefix(store.clone(), format!("{name}/")).map_err(|e| unknown(&e))
}

/// The caller's lease, or (for lease 0) a fresh one with etcd's session TTL
/// that nothing keeps alive, as etcd's servers do.
async fn session_lease<S: Store>(store: &S, lease: LeaseId) -> Result<LeaseId, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let granted = store
        .lease_grant(DEFAULT_SESSION_TTL)
        .await
        .map_err(|e| to_status(&e))?;
    Ok(granted.id)
}

/// Campaigns in `election` with the caller's `lease` until leading; the
/// candidate key as written. Dropping the future (the client went away)
/// withdraws it. The server keeps nothing afterwards: the caller holds
/// leadership through its lease and key, as with etcd's servers.
async fn campaign<S: Store>(
    election: &Election<S>,
    lease: LeaseId,
    value: Vec<u8>,
    expired: &'static str,
) -> Result<drover_election::LeaderInfo, Status> {
    election
        .campaign_for_remote_lease(lease, value, &CancellationToken::new())
        .await
        .map_err(|e| match e {
            ElectionError::CandidacyLost { .. } => Status::unknown(expired),
            other => election_status(&other),
        })
}

/// An election failure as etcd would answer it.
fn election_status(err: &ElectionError) -> Status {
    match err {
        ElectionError::Store(e) => to_status(e),
        ElectionError::LeaseLost { lease } => to_status(&StoreError::LeaseNotFound(*lease)),
        ElectionError::NotLeader { .. } => Status::unknown(NOT_LEADER),
        ElectionError::Cancelled => Status::cancelled("context canceled"),
        other => unknown(other),
    }
}

fn unknown(err: &ElectionError) -> Status {
    Status::unknown(err.to_string())
}

fn leader_fence(leader: Option<pb::LeaderKey>) -> Result<Fence, Status> {
    let leader = leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
    let key = String::from_utf8(leader.key)
        .map_err(|_| Status::invalid_argument("etcdserver: leader key must be UTF-8"))?;
    Ok(Fence::new(key, leader.rev, leader.lease))
}

#[tonic::async_trait]
impl<S: Store> pb::election_server::Election for ElectionService<S> {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let req = request.into_inner();
        let election = election_named(&self.shared.store, req.name.clone())?;
        let span = tracing::debug_span!("etcd_campaign", election = %election.prefix(), lease = %format_args!("{:x}", req.lease));
        async {
            let lease = session_lease(&self.shared.store, req.lease).await?;
            let leader = campaign(&election, lease, req.value, ELECTION_SESSION_EXPIRED).await?;
            Ok(Response::new(pb::CampaignResponse {
                header: Some(self.shared.current_header().await?),
                leader: Some(pb::LeaderKey {
                    name: req.name,
                    key: leader.key.into_bytes(),
                    rev: leader.token,
                    lease,
                }),
            }))
        }
        .instrument(span)
        .await
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let req = request.into_inner();
        let fence = leader_fence(req.leader.clone())?;
        let name = req.leader.map(|l| l.name).unwrap_or_default();
        let election = election_named(&self.shared.store, name)?;
        let revision = election
            .proclaim_as(&fence, req.value)
            .await
            .map_err(|e| election_status(&e))?;
        Ok(Response::new(pb::ProclaimResponse {
            header: Some(self.shared.header(revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let election = election_named(&self.shared.store, request.into_inner().name)?;
        let (leader, revision) = election
            .leader_at_revision()
            .await
            .map_err(|e| election_status(&e))?;
        let leader = leader.ok_or_else(|| Status::unknown(NO_LEADER))?;
        Ok(Response::new(pb::LeaderResponse {
            header: Some(self.shared.header(revision)),
            kv: Some(key_value(leader.to_kv())),
        }))
    }

    type ObserveStream = ReceiverStream<Result<pb::LeaderResponse, Status>>;

    /// Every leader, and every write to the leader's key, in order; nothing
    /// while no one leads (etcd never sends an empty answer).
    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let election = election_named(&self.shared.store, request.into_inner().name)?;
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let shared = self.shared.clone();
        let span = tracing::debug_span!("etcd_observe", election = %election.prefix());
        tokio::spawn(
            async move {
                let mut observer = election.observe();
                loop {
                    let next = tokio::select! {
                        _ = tx.closed() => return,
                        next = observer.next() => next,
                    };
                    let answer =
                        match next {
                            None => return,
                            Some(Ok(Observation::NoLeader)) => continue,
                            Some(Ok(Observation::Leader(leader))) => shared
                                .current_header()
                                .await
                                .map(|header| pb::LeaderResponse {
                                    header: Some(header),
                                    kv: Some(key_value(leader.to_kv())),
                                }),
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "observing the election failed");
                                Err(election_status(&e))
                            }
                        };
                    let failed = answer.is_err();
                    if tx.send(answer).await.is_err() || failed {
                        return;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let req = request.into_inner();
        let fence = leader_fence(req.leader.clone())?;
        let name = req.leader.map(|l| l.name).unwrap_or_default();
        let election = election_named(&self.shared.store, name)?;
        let revision = election
            .resign_as(&fence)
            .await
            .map_err(|e| election_status(&e))?;
        Ok(Response::new(pb::ResignResponse {
            header: Some(self.shared.header(revision)),
        }))
    }
}

#[tonic::async_trait]
impl<S: Store> lockpb::lock_server::Lock for LockService<S> {
    async fn lock(
        &self,
        request: Request<lockpb::LockRequest>,
    ) -> Result<Response<lockpb::LockResponse>, Status> {
        let req = request.into_inner();
        let mutex = election_named(&self.shared.store, req.name)?;
        let span = tracing::debug_span!("etcd_lock", lock = %mutex.prefix(), lease = %format_args!("{:x}", req.lease));
        async {
            let lease = session_lease(&self.shared.store, req.lease).await?;
            // etcd's mutex keys carry no value.
            let held = campaign(&mutex, lease, Vec::new(), MUTEX_SESSION_EXPIRED).await?;
            Ok(Response::new(lockpb::LockResponse {
                header: Some(self.shared.current_header().await?),
                key: held.key.into_bytes(),
            }))
        }
        .instrument(span)
        .await
    }

    /// Deletes the key, whatever it is, as etcd does.
    async fn unlock(
        &self,
        request: Request<lockpb::UnlockRequest>,
    ) -> Result<Response<lockpb::UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let deleted = self
            .shared
            .store
            .delete(Delete::key(key))
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(lockpb::UnlockResponse {
            header: Some(self.shared.header(deleted.revision)),
        }))
    }
}
