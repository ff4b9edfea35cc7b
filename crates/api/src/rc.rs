//! Domain types of `orchestrator.v1.RcService` and their conversions.
//!
//! Requests become domain values only through `TryFrom`, which names the
//! field at fault. The RC itself travels as the YAML an operator writes
//! (`CreateRcRequest.yaml`, `UpdateRcRequest.yaml`), so its validation is
//! [`RcSpec::from_yaml`]'s, whose errors name the field inside the YAML.
//! Answers are built infallibly (`From`) and checked again on the client
//! side (`TryFrom` of the responses), as for `SystemService`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_ids::RcId;
use drover_labels::{Labels, Selector};
use drover_manifest::{Manifest, ManifestSha};
use drover_rc_farm::RcSpec;
use drover_rc_farm::audit::{AuditAction, AuditRecord};
use drover_rc_farm::rc::{MAX_REPLICAS, PlacementPolicy, RC_ID_LABEL};
use drover_rc_farm::scheduler::Strategy;
use drover_rc_farm::status::{Condition, RcStatus};
use drover_rc_farm::store::StoredRc;
use drover_store::Revision;

use crate::pb::orchestrator::v1 as pb;
use crate::{ApiError, ProtocolError};

/// `ListAuditRequest.limit` when it is 0.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// The most audit records one `ListAudit` returns: a larger limit is read
/// as this (an answer must stay well under the gRPC message limit).
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// An RC as read: its record, the record's revisions and its status (what
/// `GetRc` answers and `ListRcs` lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcInfo {
    /// The record.
    pub spec: RcSpec,
    /// The record's mod revision (what an update's expected revision names).
    pub revision: Revision,
    /// The revision that created the record.
    pub created_revision: Revision,
    /// What its farm last reported; `None` until a farm has.
    pub status: Option<RcStatus>,
}

impl RcInfo {
    /// A stored record with its status.
    pub fn new(stored: StoredRc, status: Option<RcStatus>) -> Self {
        RcInfo {
            spec: stored.spec,
            revision: stored.revision,
            created_revision: stored.created_revision,
            status,
        }
    }
}

/// `CreateRc`: the RC the operator wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateRc {
    /// The RC to create.
    pub spec: RcSpec,
}

/// `UpdateRc`: the RC's new definition, optionally pinned to the revision
/// the caller read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateRc {
    /// The new definition (its id names the RC).
    pub spec: RcSpec,
    /// Update only if the record is still at this revision.
    pub expected_revision: Option<Revision>,
}

/// `ScaleRc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleRc {
    /// The RC.
    pub id: RcId,
    /// The new replica count, at most [`MAX_REPLICAS`].
    pub replicas: u32,
}

/// `DeleteRc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRc {
    /// The RC.
    pub id: RcId,
    /// Delete even with replicas desired.
    pub force: bool,
}

/// `TransferReplicas`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReplicas {
    /// The RC that gives replicas.
    pub from: RcId,
    /// The RC that receives them (not `from`).
    pub to: RcId,
    /// How many.
    pub count: u32,
}

/// `ListRcs`: a selector over the RCs' own labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRcs {
    /// Which RCs (the empty selector matches every RC).
    pub selector: Selector,
}

/// `WatchRcs`: one RC's status, or every RC's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRcs {
    /// Only this RC; `None` for every RC.
    pub id: Option<RcId>,
}

/// `ListAudit`: the newest records, of one RC or of all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListAudit {
    /// Only the records about this RC.
    pub rc: Option<RcId>,
    /// How many, 1 to [`MAX_AUDIT_LIMIT`].
    pub limit: usize,
}

/// One message of a `WatchRcs` stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcWatchEvent {
    /// A status that existed when the watch started.
    Existing {
        /// The RC.
        id: RcId,
        /// Its status.
        status: RcStatus,
        /// The revision of the listing.
        revision: Revision,
    },
    /// Every existing status has been sent; changes follow.
    Synced {
        /// The revision of the listing.
        revision: Revision,
    },
    /// A status was written.
    Updated {
        /// The RC.
        id: RcId,
        /// Its new status.
        status: RcStatus,
        /// The revision of the write.
        revision: Revision,
    },
    /// A status was removed (its RC is gone).
    Deleted {
        /// The RC.
        id: RcId,
        /// The revision of the removal.
        revision: Revision,
    },
}

// ---------------------------------------------------------------------------
// Requests: from the wire (server side), naming the field at fault.

/// A required RC id in `field`.
fn required_id(field: &str, text: &str) -> Result<RcId, ProtocolError> {
    if text.is_empty() {
        return Err(ProtocolError::missing(field));
    }
    text.parse()
        .map_err(|e: drover_ids::IdError| ProtocolError::invalid(field, e.to_string()))
}

/// An optional RC id in `field`: empty means none.
fn optional_id(field: &str, text: &str) -> Result<Option<RcId>, ProtocolError> {
    if text.is_empty() {
        Ok(None)
    } else {
        required_id(field, text).map(Some)
    }
}

/// The RC in a request's `yaml` field. An empty text is a missing field;
/// anything else is [`RcSpec::from_yaml`]'s to judge (its errors name the
/// field inside the YAML).
fn spec_from_yaml(yaml: &str) -> Result<RcSpec, ApiError> {
    if yaml.trim().is_empty() {
        return Err(ProtocolError::missing("yaml").into());
    }
    Ok(RcSpec::from_yaml(yaml)?)
}

fn replicas(field: &str, n: u32) -> Result<u32, ProtocolError> {
    if n > MAX_REPLICAS {
        return Err(ProtocolError::invalid(
            field,
            format!("{n} is not between 0 and {MAX_REPLICAS}"),
        ));
    }
    Ok(n)
}

impl TryFrom<pb::CreateRcRequest> for CreateRc {
    type Error = ApiError;

    fn try_from(msg: pb::CreateRcRequest) -> Result<Self, ApiError> {
        Ok(CreateRc {
            spec: spec_from_yaml(&msg.yaml)?,
        })
    }
}

impl TryFrom<pb::UpdateRcRequest> for UpdateRc {
    type Error = ApiError;

    fn try_from(msg: pb::UpdateRcRequest) -> Result<Self, ApiError> {
        // 0 is "no pin": revisions start at 1.
        let expected_revision = match msg.expected_revision {
            0 => None,
            r if r < 0 => {
                return Err(ProtocolError::invalid(
                    "expected_revision",
                    format!("must be a revision (at least 1) or 0 for none, got {r}"),
                )
                .into());
            }
            r => Some(r),
        };
        Ok(UpdateRc {
            spec: spec_from_yaml(&msg.yaml)?,
            expected_revision,
        })
    }
}

impl TryFrom<pb::GetRcRequest> for RcId {
    type Error = ProtocolError;

    fn try_from(msg: pb::GetRcRequest) -> Result<Self, ProtocolError> {
        required_id("id", &msg.id)
    }
}

impl TryFrom<pb::EnableRcRequest> for RcId {
    type Error = ProtocolError;

    fn try_from(msg: pb::EnableRcRequest) -> Result<Self, ProtocolError> {
        required_id("id", &msg.id)
    }
}

impl TryFrom<pb::DisableRcRequest> for RcId {
    type Error = ProtocolError;

    fn try_from(msg: pb::DisableRcRequest) -> Result<Self, ProtocolError> {
        required_id("id", &msg.id)
    }
}

impl TryFrom<pb::ScaleRcRequest> for ScaleRc {
    type Error = ProtocolError;

    fn try_from(msg: pb::ScaleRcRequest) -> Result<Self, ProtocolError> {
        Ok(ScaleRc {
            id: required_id("id", &msg.id)?,
            replicas: replicas("replicas", msg.replicas)?,
        })
    }
}

impl TryFrom<pb::DeleteRcRequest> for DeleteRc {
    type Error = ProtocolError;

    fn try_from(msg: pb::DeleteRcRequest) -> Result<Self, ProtocolError> {
        Ok(DeleteRc {
            id: required_id("id", &msg.id)?,
            force: msg.force,
        })
    }
}

impl TryFrom<pb::TransferReplicasRequest> for TransferReplicas {
    type Error = ProtocolError;

    fn try_from(msg: pb::TransferReplicasRequest) -> Result<Self, ProtocolError> {
        let from = required_id("from_id", &msg.from_id)?;
        let to = required_id("to_id", &msg.to_id)?;
        if from == to {
            return Err(ProtocolError::invalid("to_id", "must differ from from_id"));
        }
        Ok(TransferReplicas {
            from,
            to,
            count: replicas("count", msg.count)?,
        })
    }
}

impl TryFrom<pb::ListRcsRequest> for ListRcs {
    type Error = ProtocolError;

    fn try_from(msg: pb::ListRcsRequest) -> Result<Self, ProtocolError> {
        let selector = msg
            .selector
            .parse()
            .map_err(|e: drover_labels::LabelError| {
                ProtocolError::invalid("selector", e.to_string())
            })?;
        Ok(ListRcs { selector })
    }
}

impl TryFrom<pb::WatchRcsRequest> for WatchRcs {
    type Error = ProtocolError;

    fn try_from(msg: pb::WatchRcsRequest) -> Result<Self, ProtocolError> {
        Ok(WatchRcs {
            id: optional_id("id", &msg.id)?,
        })
    }
}

impl TryFrom<pb::ListAuditRequest> for ListAudit {
    type Error = ProtocolError;

    fn try_from(msg: pb::ListAuditRequest) -> Result<Self, ProtocolError> {
        // AIP-158's page size rule: 0 is the default, and more than the cap
        // is read as the cap rather than refused.
        let limit = match usize::try_from(msg.limit) {
            Ok(0) => DEFAULT_AUDIT_LIMIT,
            Ok(n) => n.min(MAX_AUDIT_LIMIT),
            Err(_) => MAX_AUDIT_LIMIT,
        };
        Ok(ListAudit {
            rc: optional_id("rc_id", &msg.rc_id)?,
            limit,
        })
    }
}

// ---------------------------------------------------------------------------
// Answers: to the wire (infallible).

fn strategy_to_pb(strategy: Strategy) -> pb::PlacementStrategy {
    match strategy {
        Strategy::Spread => pb::PlacementStrategy::Spread,
        Strategy::BinPack => pb::PlacementStrategy::BinPack,
    }
}

impl From<RcSpec> for pb::RcSpec {
    fn from(spec: RcSpec) -> Self {
        pb::RcSpec {
            id: spec.id.to_string(),
            labels: spec.labels.into_map().into_iter().collect(),
            replicas_desired: spec.replicas_desired,
            node_selector: spec.node_selector.to_string(),
            pod_labels: spec.pod_labels.into_iter().collect(),
            disabled: spec.disabled,
            deleting: spec.deleting,
            placement: Some(pb::Placement {
                spread_by: spec.placement.spread_by.unwrap_or_default(),
                strategy: strategy_to_pb(spec.placement.strategy).into(),
            }),
            manifest_sha: spec.manifest.sha().to_string(),
            // A manifest is parsed from text, so its bytes are UTF-8.
            manifest_yaml: String::from_utf8_lossy(spec.manifest.raw_bytes()).into_owned(),
        }
    }
}

/// Milliseconds since the Unix epoch as a timestamp.
fn timestamp_from_ms(ms: u64) -> prost_types::Timestamp {
    let time = UNIX_EPOCH + Duration::from_millis(ms);
    prost_types::Timestamp::from(time)
}

impl From<RcStatus> for pb::RcStatus {
    fn from(status: RcStatus) -> Self {
        pb::RcStatus {
            desired: status.desired,
            current: status.current,
            ready: status.ready,
            healthy: status.healthy,
            conditions: status
                .conditions
                .into_iter()
                .map(|c| pb::RcCondition {
                    kind: c.kind,
                    ok: c.ok,
                    reason: c.reason,
                })
                .collect(),
            last_error: status.last_error.unwrap_or_default(),
            owner: status.owner,
            token: status.token,
            observed_revision: status.observed_revision,
            updated_at: Some(timestamp_from_ms(status.updated_at_ms)),
        }
    }
}

impl From<RcInfo> for pb::Rc {
    fn from(info: RcInfo) -> Self {
        pb::Rc {
            spec: Some(info.spec.into()),
            revision: info.revision,
            created_revision: info.created_revision,
            status: info.status.map(Into::into),
        }
    }
}

fn action_to_pb(action: AuditAction) -> pb::AuditAction {
    match action {
        AuditAction::Create => pb::AuditAction::Create,
        AuditAction::Update => pb::AuditAction::Update,
        AuditAction::Retarget => pb::AuditAction::Retarget,
        AuditAction::Scale => pb::AuditAction::Scale,
        AuditAction::Enable => pb::AuditAction::Enable,
        AuditAction::Disable => pb::AuditAction::Disable,
        AuditAction::Transfer => pb::AuditAction::Transfer,
        AuditAction::Delete => pb::AuditAction::Delete,
        AuditAction::Deleted => pb::AuditAction::Deleted,
        AuditAction::Schedule => pb::AuditAction::Schedule,
        AuditAction::Unschedule => pb::AuditAction::Unschedule,
        AuditAction::Replace => pb::AuditAction::Replace,
    }
}

impl From<AuditRecord> for pb::AuditRecord {
    fn from(record: AuditRecord) -> Self {
        let json = |value: Option<serde_json::Value>| value.map(|v| v.to_string());
        pb::AuditRecord {
            id: record.id,
            at: Some(timestamp_from_ms(record.at_ms)),
            who: record.who,
            action: action_to_pb(record.action).into(),
            rc_ids: record.rcs,
            before_json: json(record.before).unwrap_or_default(),
            after_json: json(record.after).unwrap_or_default(),
        }
    }
}

impl From<RcWatchEvent> for pb::WatchRcsResponse {
    fn from(event: RcWatchEvent) -> Self {
        use pb::watch_rcs_response::Kind;
        let (kind, id, status, revision) = match event {
            RcWatchEvent::Existing {
                id,
                status,
                revision,
            } => (Kind::Existing, id.to_string(), Some(status), revision),
            RcWatchEvent::Synced { revision } => (Kind::Synced, String::new(), None, revision),
            RcWatchEvent::Updated {
                id,
                status,
                revision,
            } => (Kind::Updated, id.to_string(), Some(status), revision),
            RcWatchEvent::Deleted { id, revision } => {
                (Kind::Deleted, id.to_string(), None, revision)
            }
        };
        pb::WatchRcsResponse {
            kind: kind.into(),
            id,
            status: status.map(Into::into),
            revision,
        }
    }
}

// ---------------------------------------------------------------------------
// Answers: from the wire (client side), naming the field at fault by its
// path from the response's root.

fn invalid(path: &str, field: &str, reason: impl ToString) -> ProtocolError {
    ProtocolError::invalid(format!("{path}.{field}"), reason.to_string())
}

/// Checks a label map: names and values in the label grammar.
fn labels_from_pb(
    path: &str,
    field: &str,
    map: std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, ProtocolError> {
    let map: BTreeMap<String, String> = map.into_iter().collect();
    for (key, value) in &map {
        let at = format!("{field}.{key}");
        drover_labels::name::validate_key(key).map_err(|e| invalid(path, &at, e))?;
        drover_labels::name::validate_value(value).map_err(|e| invalid(path, &at, e))?;
    }
    Ok(map)
}

/// An `RcSpec` message at `path` (e.g. `rc.spec`).
fn spec_from_pb(path: &str, msg: pb::RcSpec) -> Result<RcSpec, ProtocolError> {
    let id = required_id(&format!("{path}.id"), &msg.id)?;
    let labels = Labels::try_from(labels_from_pb(path, "labels", msg.labels)?)
        .map_err(|e| invalid(path, "labels", e))?;
    let replicas_desired = replicas(&format!("{path}.replicas_desired"), msg.replicas_desired)?;
    let node_selector: Selector = msg
        .node_selector
        .parse()
        .map_err(|e: drover_labels::LabelError| invalid(path, "node_selector", e))?;
    let pod_labels = labels_from_pb(path, "pod_labels", msg.pod_labels)?;
    if pod_labels.contains_key(RC_ID_LABEL) {
        return Err(invalid(
            path,
            &format!("pod_labels.{RC_ID_LABEL}"),
            "is set by the RC itself",
        ));
    }
    let placement = msg.placement.unwrap_or_default();
    let spread_by = Some(placement.spread_by).filter(|s| !s.is_empty());
    if let Some(key) = &spread_by {
        drover_labels::name::validate_key(key)
            .map_err(|e| invalid(path, "placement.spread_by", e))?;
    }
    let strategy = match pb::PlacementStrategy::try_from(placement.strategy) {
        Ok(pb::PlacementStrategy::Unspecified | pb::PlacementStrategy::Spread) => Strategy::Spread,
        Ok(pb::PlacementStrategy::BinPack) => Strategy::BinPack,
        Err(_) => {
            return Err(invalid(
                path,
                "placement.strategy",
                format!("unknown strategy {}", placement.strategy),
            ));
        }
    };
    if msg.manifest_yaml.is_empty() {
        return Err(ProtocolError::missing(format!("{path}.manifest_yaml")));
    }
    let manifest =
        Manifest::from_yaml(&msg.manifest_yaml).map_err(|e| invalid(path, "manifest_yaml", e))?;
    let sha: ManifestSha = msg
        .manifest_sha
        .parse()
        .map_err(|e| invalid(path, "manifest_sha", e))?;
    if sha != manifest.sha() {
        return Err(invalid(
            path,
            "manifest_sha",
            format!("{sha} is not the manifest's SHA ({})", manifest.sha()),
        ));
    }
    Ok(RcSpec {
        id,
        labels,
        manifest,
        node_selector,
        pod_labels,
        replicas_desired,
        disabled: msg.disabled,
        placement: PlacementPolicy {
            spread_by,
            strategy,
        },
        deleting: msg.deleting,
    })
}

/// Milliseconds since the Unix epoch of a timestamp at `path`.
fn ms_from_timestamp(path: &str, ts: prost_types::Timestamp) -> Result<u64, ProtocolError> {
    let time = SystemTime::try_from(ts).map_err(|e| ProtocolError::invalid(path, e.to_string()))?;
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ProtocolError::invalid(path, "is before 1970"))?;
    u64::try_from(since.as_millis()).map_err(|_| ProtocolError::invalid(path, "is too far ahead"))
}

/// An `RcStatus` message at `path`.
fn status_from_pb(path: &str, msg: pb::RcStatus) -> Result<RcStatus, ProtocolError> {
    let updated_at = msg
        .updated_at
        .ok_or_else(|| ProtocolError::missing(format!("{path}.updated_at")))?;
    let mut conditions = Vec::with_capacity(msg.conditions.len());
    for (i, c) in msg.conditions.into_iter().enumerate() {
        if c.kind.is_empty() {
            return Err(ProtocolError::missing(format!(
                "{path}.conditions[{i}].kind"
            )));
        }
        conditions.push(Condition {
            kind: c.kind,
            ok: c.ok,
            reason: c.reason,
        });
    }
    Ok(RcStatus {
        desired: msg.desired,
        current: msg.current,
        ready: msg.ready,
        healthy: msg.healthy,
        conditions,
        last_error: Some(msg.last_error).filter(|e| !e.is_empty()),
        owner: msg.owner,
        token: msg.token,
        observed_revision: msg.observed_revision,
        updated_at_ms: ms_from_timestamp(&format!("{path}.updated_at"), updated_at)?,
    })
}

/// An `Rc` message at `path` (e.g. `rc`, `rcs[2]`).
fn rc_from_pb(path: &str, msg: Option<pb::Rc>) -> Result<RcInfo, ProtocolError> {
    let msg = msg.ok_or_else(|| ProtocolError::missing(path))?;
    let spec = msg
        .spec
        .ok_or_else(|| ProtocolError::missing(format!("{path}.spec")))?;
    for (field, revision) in [
        ("revision", msg.revision),
        ("created_revision", msg.created_revision),
    ] {
        if revision < 1 {
            return Err(invalid(
                path,
                field,
                format!("must be at least 1, got {revision}"),
            ));
        }
    }
    Ok(RcInfo {
        spec: spec_from_pb(&format!("{path}.spec"), spec)?,
        revision: msg.revision,
        created_revision: msg.created_revision,
        status: msg
            .status
            .map(|s| status_from_pb(&format!("{path}.status"), s))
            .transpose()?,
    })
}

/// Every response that answers with one RC in its field `rc`.
macro_rules! one_rc_response {
    ($($response:ident),* $(,)?) => {$(
        impl TryFrom<pb::$response> for RcInfo {
            type Error = ProtocolError;

            fn try_from(msg: pb::$response) -> Result<Self, ProtocolError> {
                rc_from_pb("rc", msg.rc)
            }
        }
    )*};
}

one_rc_response!(
    CreateRcResponse,
    GetRcResponse,
    UpdateRcResponse,
    ScaleRcResponse,
    EnableRcResponse,
    DisableRcResponse,
    DeleteRcResponse,
);

impl TryFrom<pb::ListRcsResponse> for Vec<RcInfo> {
    type Error = ProtocolError;

    fn try_from(msg: pb::ListRcsResponse) -> Result<Self, ProtocolError> {
        msg.rcs
            .into_iter()
            .enumerate()
            .map(|(i, rc)| rc_from_pb(&format!("rcs[{i}]"), Some(rc)))
            .collect()
    }
}

impl TryFrom<pb::TransferReplicasResponse> for (RcInfo, RcInfo) {
    type Error = ProtocolError;

    fn try_from(msg: pb::TransferReplicasResponse) -> Result<Self, ProtocolError> {
        Ok((
            rc_from_pb("from_rc", msg.from_rc)?,
            rc_from_pb("to_rc", msg.to_rc)?,
        ))
    }
}

fn action_from_pb(path: &str, action: i32) -> Result<AuditAction, ProtocolError> {
    use pb::AuditAction as A;
    Ok(match A::try_from(action) {
        Ok(A::Create) => AuditAction::Create,
        Ok(A::Update) => AuditAction::Update,
        Ok(A::Retarget) => AuditAction::Retarget,
        Ok(A::Scale) => AuditAction::Scale,
        Ok(A::Enable) => AuditAction::Enable,
        Ok(A::Disable) => AuditAction::Disable,
        Ok(A::Transfer) => AuditAction::Transfer,
        Ok(A::Delete) => AuditAction::Delete,
        Ok(A::Deleted) => AuditAction::Deleted,
        Ok(A::Schedule) => AuditAction::Schedule,
        Ok(A::Unschedule) => AuditAction::Unschedule,
        Ok(A::Replace) => AuditAction::Replace,
        Ok(A::Unspecified) => return Err(ProtocolError::missing(path)),
        Err(_) => {
            return Err(ProtocolError::invalid(
                path,
                format!("unknown action {action}"),
            ));
        }
    })
}

/// An `AuditRecord` message at `path`.
fn audit_from_pb(path: &str, msg: pb::AuditRecord) -> Result<AuditRecord, ProtocolError> {
    if msg.id.is_empty() {
        return Err(ProtocolError::missing(format!("{path}.id")));
    }
    let at = msg
        .at
        .ok_or_else(|| ProtocolError::missing(format!("{path}.at")))?;
    let json = |field: &str, text: String| -> Result<Option<serde_json::Value>, ProtocolError> {
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| invalid(path, field, e))
    };
    Ok(AuditRecord {
        at_ms: ms_from_timestamp(&format!("{path}.at"), at)?,
        action: action_from_pb(&format!("{path}.action"), msg.action)?,
        before: json("before_json", msg.before_json)?,
        after: json("after_json", msg.after_json)?,
        id: msg.id,
        who: msg.who,
        rcs: msg.rc_ids,
    })
}

impl TryFrom<pb::ListAuditResponse> for Vec<AuditRecord> {
    type Error = ProtocolError;

    fn try_from(msg: pb::ListAuditResponse) -> Result<Self, ProtocolError> {
        msg.records
            .into_iter()
            .enumerate()
            .map(|(i, r)| audit_from_pb(&format!("records[{i}]"), r))
            .collect()
    }
}

impl TryFrom<pb::WatchRcsResponse> for RcWatchEvent {
    type Error = ProtocolError;

    fn try_from(msg: pb::WatchRcsResponse) -> Result<Self, ProtocolError> {
        use pb::watch_rcs_response::Kind;
        let revision = msg.revision;
        if revision < 1 {
            return Err(ProtocolError::invalid(
                "revision",
                format!("must be at least 1, got {revision}"),
            ));
        }
        let status = |status: Option<pb::RcStatus>| {
            status_from_pb(
                "status",
                status.ok_or_else(|| ProtocolError::missing("status"))?,
            )
        };
        Ok(match Kind::try_from(msg.kind) {
            Ok(Kind::Existing) => RcWatchEvent::Existing {
                id: required_id("id", &msg.id)?,
                status: status(msg.status)?,
                revision,
            },
            Ok(Kind::Synced) => RcWatchEvent::Synced { revision },
            Ok(Kind::Updated) => RcWatchEvent::Updated {
                id: required_id("id", &msg.id)?,
                status: status(msg.status)?,
                revision,
            },
            Ok(Kind::Deleted) => RcWatchEvent::Deleted {
                id: required_id("id", &msg.id)?,
                revision,
            },
            Ok(Kind::Unspecified) => return Err(ProtocolError::missing("kind")),
            Err(_) => {
                return Err(ProtocolError::invalid(
                    "kind",
                    format!("unknown kind {}", msg.kind),
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_rc_farm::RcError;
    use proptest::prelude::*;
    use prost::Message;

    pub(crate) const WEB: &str = "\
id: web
labels: { team: storefront }
replicas_desired: 3
node_selector: zone in (a,b)
pod_labels: { tier: web }
placement: { spread_by: zone, strategy: bin-pack }
manifest:
  id: web
  launchables: { server: { type: process, command: /usr/bin/web } }
";

    fn field_of(err: &ApiError) -> String {
        match err {
            ApiError::Protocol(ProtocolError::Invalid { field, .. })
            | ApiError::Protocol(ProtocolError::Missing(field)) => field.clone(),
            ApiError::Rc(RcError::Invalid { field, .. }) => field.clone(),
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_create_reads_the_operators_yaml() {
        let create = CreateRc::try_from(pb::CreateRcRequest { yaml: WEB.into() }).unwrap();
        assert_eq!(create.spec, RcSpec::from_yaml(WEB).unwrap());
    }

    #[test]
    fn bad_yaml_is_refused_naming_the_field() {
        for (yaml, field) in [
            (String::new(), "yaml"),
            ("  \n".to_owned(), "yaml"),
            (WEB.replace("replicas_desired: 3\n", ""), "replicas_desired"),
            (
                WEB.replace("replicas_desired: 3", "replicas_desired: 1000001"),
                "replicas_desired",
            ),
            (
                WEB.replace("replicas_desired: 3", "replicas_desired: -2"),
                "replicas_desired",
            ),
            (WEB.replace("zone in (a,b)", "zone in (a,"), "node_selector"),
            (WEB.replace("id: web\nlabels", "id: Web!\nlabels"), "id"),
            (
                WEB.replace("command: /usr/bin/web", "comand: /usr/bin/web"),
                "manifest",
            ),
        ] {
            let err = CreateRc::try_from(pb::CreateRcRequest { yaml: yaml.clone() }).unwrap_err();
            assert_eq!(field_of(&err), field, "{yaml}");
            let err = UpdateRc::try_from(pb::UpdateRcRequest {
                yaml: yaml.clone(),
                expected_revision: 0,
            })
            .unwrap_err();
            assert_eq!(field_of(&err), field, "{yaml}");
            let status = crate::to_status(&err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(field), "{status:?}");
        }
        // Not YAML of a mapping with known fields: a syntax error, still
        // InvalidArgument, naming the unknown field.
        let err = CreateRc::try_from(pb::CreateRcRequest {
            yaml: format!("{WEB}replicas: 3\n"),
        })
        .unwrap_err();
        assert!(matches!(err, ApiError::Rc(RcError::Syntax(_))), "{err:?}");
        let status = crate::to_status(&err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("replicas"), "{status:?}");
    }

    #[test]
    fn an_expected_revision_must_be_a_revision() {
        let err = UpdateRc::try_from(pb::UpdateRcRequest {
            yaml: WEB.into(),
            expected_revision: -1,
        })
        .unwrap_err();
        assert_eq!(field_of(&err), "expected_revision");
        let update = |expected_revision| {
            UpdateRc::try_from(pb::UpdateRcRequest {
                yaml: WEB.into(),
                expected_revision,
            })
            .unwrap()
            .expected_revision
        };
        assert_eq!(update(7), Some(7));
        assert_eq!(update(0), None, "0 pins nothing");
    }

    #[test]
    fn ids_replicas_and_selectors_are_checked_naming_the_field() {
        let field = |err: ProtocolError| match err {
            ProtocolError::Invalid { field, .. } | ProtocolError::Missing(field) => field,
        };
        let scale = |id: &str, replicas| {
            ScaleRc::try_from(pb::ScaleRcRequest {
                id: id.into(),
                replicas,
            })
        };
        assert_eq!(field(scale("", 1).unwrap_err()), "id");
        assert_eq!(field(scale("No_Good", 1).unwrap_err()), "id");
        assert_eq!(
            field(scale("web", MAX_REPLICAS + 1).unwrap_err()),
            "replicas"
        );
        assert_eq!(
            scale("web", MAX_REPLICAS).unwrap(),
            ScaleRc {
                id: "web".parse().unwrap(),
                replicas: MAX_REPLICAS
            }
        );
        let list = |selector: &str| {
            ListRcs::try_from(pb::ListRcsRequest {
                selector: selector.into(),
            })
        };
        assert_eq!(field(list("tier in (a,").unwrap_err()), "selector");
        assert_eq!(field(list("=x").unwrap_err()), "selector");
        assert!(list("").unwrap().selector.matches(&Labels::new()));
        assert!(list("team=storefront").is_ok());
        let transfer = |from: &str, to: &str, count| {
            TransferReplicas::try_from(pb::TransferReplicasRequest {
                from_id: from.into(),
                to_id: to.into(),
                count,
            })
        };
        assert_eq!(field(transfer("", "b", 1).unwrap_err()), "from_id");
        assert_eq!(field(transfer("a", "B", 1).unwrap_err()), "to_id");
        assert_eq!(field(transfer("a", "a", 1).unwrap_err()), "to_id");
        assert_eq!(
            field(transfer("a", "b", MAX_REPLICAS + 1).unwrap_err()),
            "count"
        );
        let get = RcId::try_from(pb::GetRcRequest { id: String::new() }).unwrap_err();
        assert_eq!(get, ProtocolError::missing("id"));
        let watch = WatchRcs::try_from(pb::WatchRcsRequest { id: "-x".into() }).unwrap_err();
        assert_eq!(field(watch), "id");
        assert_eq!(
            WatchRcs::try_from(pb::WatchRcsRequest { id: String::new() }).unwrap(),
            WatchRcs { id: None }
        );
        let audit = ListAudit::try_from(pb::ListAuditRequest {
            rc_id: "UPPER".into(),
            limit: 0,
        })
        .unwrap_err();
        assert_eq!(field(audit), "rc_id");
    }

    #[test]
    fn audit_limits_default_and_are_capped() {
        let limit = |limit| {
            ListAudit::try_from(pb::ListAuditRequest {
                rc_id: String::new(),
                limit,
            })
            .unwrap()
            .limit
        };
        assert_eq!(limit(0), DEFAULT_AUDIT_LIMIT);
        assert_eq!(limit(5), 5);
        assert_eq!(limit(u32::MAX), MAX_AUDIT_LIMIT);
    }

    fn status() -> RcStatus {
        RcStatus {
            desired: 3,
            current: 3,
            ready: 2,
            healthy: 1,
            conditions: vec![Condition {
                kind: "Ready".into(),
                ok: false,
                reason: "1 of 3 replicas passing".into(),
            }],
            last_error: Some("node n1: store unavailable".into()),
            owner: "farm-a".into(),
            token: 42,
            observed_revision: 17,
            updated_at_ms: 1_700_000_000_123,
        }
    }

    fn info() -> RcInfo {
        RcInfo {
            spec: RcSpec::from_yaml(WEB).unwrap(),
            revision: 17,
            created_revision: 9,
            status: Some(status()),
        }
    }

    #[test]
    fn an_rc_round_trips_through_the_wire() {
        let wire = pb::GetRcResponse {
            rc: Some(info().into()),
        };
        let bytes = wire.encode_to_vec();
        let decoded = pb::GetRcResponse::decode(bytes.as_slice()).unwrap();
        let spec = decoded.rc.as_ref().unwrap().spec.as_ref().unwrap();
        assert_eq!(spec.manifest_sha, info().spec.manifest.sha().to_string());
        assert_eq!(
            spec.placement.as_ref().unwrap().strategy,
            i32::from(pb::PlacementStrategy::BinPack)
        );
        assert_eq!(RcInfo::try_from(decoded).unwrap(), info());
        // Without a status (no farm has reported).
        let bare = RcInfo {
            status: None,
            ..info()
        };
        let wire = pb::ListRcsResponse {
            rcs: vec![info().into(), bare.clone().into()],
        };
        assert_eq!(Vec::<RcInfo>::try_from(wire).unwrap(), vec![info(), bare]);
    }

    #[test]
    fn a_broken_rc_answer_names_the_field() {
        type Breakage = fn(&mut pb::Rc);
        let cases: Vec<(Breakage, &str)> = vec![
            (|m| m.spec = None, "rcs[0].spec"),
            (|m| m.revision = 0, "rcs[0].revision"),
            (|m| m.spec.as_mut().unwrap().id.clear(), "rcs[0].spec.id"),
            (
                |m| m.spec.as_mut().unwrap().replicas_desired = MAX_REPLICAS + 1,
                "rcs[0].spec.replicas_desired",
            ),
            (
                |m| m.spec.as_mut().unwrap().node_selector = "a in (".into(),
                "rcs[0].spec.node_selector",
            ),
            (
                |m| {
                    m.spec
                        .as_mut()
                        .unwrap()
                        .pod_labels
                        .insert(RC_ID_LABEL.into(), "x".into());
                },
                "rcs[0].spec.pod_labels.replication_controller_id",
            ),
            (
                |m| {
                    m.spec
                        .as_mut()
                        .unwrap()
                        .placement
                        .as_mut()
                        .unwrap()
                        .strategy = 9
                },
                "rcs[0].spec.placement.strategy",
            ),
            (
                |m| m.spec.as_mut().unwrap().manifest_sha = "00".repeat(32),
                "rcs[0].spec.manifest_sha",
            ),
            (
                |m| m.spec.as_mut().unwrap().manifest_yaml.clear(),
                "rcs[0].spec.manifest_yaml",
            ),
            (
                |m| m.status.as_mut().unwrap().updated_at = None,
                "rcs[0].status.updated_at",
            ),
        ];
        for (break_it, expected) in cases {
            let mut rc = pb::Rc::from(info());
            break_it(&mut rc);
            let err = Vec::<RcInfo>::try_from(pb::ListRcsResponse { rcs: vec![rc] }).unwrap_err();
            let field = match err {
                ProtocolError::Invalid { field, .. } | ProtocolError::Missing(field) => field,
            };
            assert_eq!(field, expected);
        }
    }

    #[test]
    fn audit_records_and_watch_events_round_trip() {
        let record = AuditRecord::new(
            "CN=alice",
            AuditAction::Transfer,
            vec!["a".into(), "b".into()],
            Some(serde_json::json!({"a": 3, "b": 1})),
            Some(serde_json::json!({"a": 2, "b": 2})),
        );
        let wire = pb::ListAuditResponse {
            records: vec![record.clone().into()],
        };
        assert_eq!(
            Vec::<AuditRecord>::try_from(wire).unwrap(),
            vec![record.clone()]
        );
        let mut broken = pb::AuditRecord::from(record);
        broken.before_json = "{".into();
        let err = Vec::<AuditRecord>::try_from(pb::ListAuditResponse {
            records: vec![broken],
        })
        .unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Invalid { field, .. } if field == "records[0].before_json"),
            "{err:?}"
        );

        let web: RcId = "web".parse().unwrap();
        for event in [
            RcWatchEvent::Existing {
                id: web.clone(),
                status: status(),
                revision: 5,
            },
            RcWatchEvent::Synced { revision: 5 },
            RcWatchEvent::Updated {
                id: web.clone(),
                status: status(),
                revision: 6,
            },
            RcWatchEvent::Deleted {
                id: web,
                revision: 7,
            },
        ] {
            let wire = pb::WatchRcsResponse::from(event.clone());
            assert_eq!(RcWatchEvent::try_from(wire).unwrap(), event);
        }
        let err = RcWatchEvent::try_from(pb::WatchRcsResponse {
            kind: pb::watch_rcs_response::Kind::Updated.into(),
            id: "web".into(),
            status: None,
            revision: 3,
        })
        .unwrap_err();
        assert_eq!(err, ProtocolError::missing("status"));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder or the validation of an
        /// answer: a decode error, a typed protocol error, or a valid value.
        #[test]
        fn arbitrary_answers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(msg) = pb::ListRcsResponse::decode(bytes.as_slice()) {
                let _ = Vec::<RcInfo>::try_from(msg);
            }
            if let Ok(msg) = pb::ListAuditResponse::decode(bytes.as_slice()) {
                let _ = Vec::<AuditRecord>::try_from(msg);
            }
            if let Ok(msg) = pb::WatchRcsResponse::decode(bytes.as_slice()) {
                let _ = RcWatchEvent::try_from(msg);
            }
        }

        /// Arbitrary text in a request's YAML is refused with a typed error
        /// or read; never a panic.
        #[test]
        fn arbitrary_yaml_never_panics(yaml in "\\PC{0,200}") {
            let _ = CreateRc::try_from(pb::CreateRcRequest { yaml });
        }
    }
}
