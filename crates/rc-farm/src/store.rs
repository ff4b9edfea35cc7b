//! [`RcStore`]: the RC records (`rcs/<id>`) as users change them, every
//! change a compare-and-swap txn that appends its audit record, and the
//! reads of statuses (`status/rc/<id>`) and audit records (`audit/`).
//!
//! ```
//! use drover_rc_farm::RcSpec;
//! use drover_rc_farm::store::RcStore;
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::keys::Keys;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rcs = RcStore::new(EmbeddedStore::in_memory(), Keys::default());
//! let web = RcSpec::from_yaml(
//!     "id: web\nreplicas_desired: 2\nnode_selector: ''\nmanifest:\n  id: web\n  launchables: { s: { type: process, command: /bin/web } }\n",
//! )?;
//! rcs.create(&web, "alice").await?;
//! let scaled = rcs.scale(&web.id, 5, "alice").await?;
//! assert_eq!(scaled.spec.replicas_desired, 5);
//! // A delete above 0 replicas is refused unless forced.
//! assert!(rcs.delete(&web.id, false, "alice").await.is_err());
//! let audit = rcs.audit(Some(&web.id), 10).await?;
//! let actions: Vec<&str> = audit.iter().map(|r| r.action.as_str()).collect();
//! assert_eq!(actions, ["create", "scale"]);
//! # Ok(()) }
//! ```

use drover_ids::RcId;
use drover_labels::Selector;
use drover_store::keys::Keys;
use drover_store::reflector::Codec;
use drover_store::{
    Compare, CompareOp, Get, KeyValue, Put, Revision, SortOrder, SortTarget, Store, StoreError,
    Txn, TxnOp,
};

use crate::audit::{AuditAction, AuditRecord};
use crate::rc::{RcError, RcSpec};
use crate::status::RcStatus;

/// The kind segment of the RC status keys (`status/rc/<id>`).
pub const STATUS_KIND: &str = "rc";

/// How many compare-and-swap attempts a change makes before giving up with
/// [`RcError::Conflict`].
const CAS_ATTEMPTS: u32 = 8;

type Result<T> = std::result::Result<T, RcError>;

/// An RC record as stored, with its revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRc {
    /// The record.
    pub spec: RcSpec,
    /// The key's mod revision (what an update's compare-and-swap names).
    pub revision: Revision,
    /// The key's create revision.
    pub created_revision: Revision,
}

/// Reads and changes RC records; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct RcStore<S> {
    store: S,
    keys: Keys,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> RcError {
    let context = context.into();
    move |source| RcError::Store { context, source }
}

fn precondition(id: &RcId, reason: impl Into<String>) -> RcError {
    RcError::FailedPrecondition {
        id: id.to_string(),
        reason: reason.into(),
    }
}

/// The record's JSON, for audit records' before and after.
fn audit_value(spec: &RcSpec) -> serde_json::Value {
    serde_json::from_slice(&spec.to_json()).expect("an RC record is JSON")
}

impl<S: Store> RcStore<S> {
    /// The RC records of the key layout `keys` in `store`.
    pub fn new(store: S, keys: Keys) -> Self {
        RcStore { store, keys }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// `status/rc/`: every RC's status.
    pub fn status_prefix(&self) -> String {
        self.keys
            .status_kind_prefix(STATUS_KIND)
            .expect("a constant, valid key segment")
    }

    /// A reflector of every RC's status (a watch of status changes).
    pub fn status_reflector(&self) -> drover_store::reflector::Reflector<S, StatusCodec> {
        drover_store::reflector::Reflector::prefix(
            self.store.clone(),
            self.status_prefix(),
            StatusCodec::new(self.keys.clone()),
        )
    }

    /// A reflector of every RC record.
    pub fn rc_reflector(&self) -> drover_store::reflector::Reflector<S, RcCodec> {
        drover_store::reflector::Reflector::prefix(
            self.store.clone(),
            self.keys.rcs_prefix(),
            RcCodec::new(self.keys.clone()),
        )
    }

    fn rc_key(&self, id: &RcId) -> String {
        self.keys
            .rc(id.as_ref())
            .expect("an RcId is a valid key segment")
    }

    fn status_key(&self, id: &RcId) -> String {
        self.keys
            .status(STATUS_KIND, id.as_ref())
            .expect("an RcId is a valid key segment")
    }

    /// The op that appends `record`.
    pub fn audit_op(&self, record: &AuditRecord) -> TxnOp {
        let key = self
            .keys
            .audit(&record.id)
            .expect("a ULID is a valid key segment");
        TxnOp::Put(Put::new(key, record.to_json()))
    }

    /// The op that writes `status` of `id`.
    pub fn status_op(&self, id: &RcId, status: &RcStatus) -> TxnOp {
        TxnOp::Put(Put::new(self.status_key(id), status.to_json()))
    }

    /// The ops that remove the RC's record and status (the farm's last
    /// write of a deleted RC).
    pub fn remove_ops(&self, id: &RcId) -> [TxnOp; 2] {
        [
            TxnOp::Delete(drover_store::Delete::key(self.rc_key(id))),
            TxnOp::Delete(drover_store::Delete::key(self.status_key(id))),
        ]
    }

    fn decode(kv: &KeyValue) -> Result<StoredRc> {
        let spec = RcSpec::from_json(&kv.value).map_err(|e| RcError::Corrupt {
            key: kv.key_str().into_owned(),
            reason: e.to_string(),
        })?;
        Ok(StoredRc {
            spec,
            revision: kv.mod_revision,
            created_revision: kv.create_revision,
        })
    }

    /// Creates `spec` if no RC has its id. Refuses a record marked deleting.
    pub async fn create(&self, spec: &RcSpec, who: &str) -> Result<StoredRc> {
        if spec.deleting {
            return Err(precondition(&spec.id, "a new RC cannot be deleting"));
        }
        let key = self.rc_key(&spec.id);
        let audit = AuditRecord::new(
            who,
            AuditAction::Create,
            vec![spec.id.to_string()],
            None,
            Some(audit_value(spec)),
        );
        let response = self
            .store
            .txn(Txn::new().when([Compare::absent(key.clone())]).and_then([
                TxnOp::Put(Put::new(key, spec.to_json())),
                self.audit_op(&audit),
            ]))
            .await
            .map_err(store_err(format!("creating RC {}", spec.id)))?;
        if !response.succeeded {
            return Err(RcError::AlreadyExists {
                id: spec.id.to_string(),
            });
        }
        Ok(StoredRc {
            spec: spec.clone(),
            revision: response.revision,
            created_revision: response.revision,
        })
    }

    /// The RC `id`, if it exists.
    pub async fn get(&self, id: &RcId) -> Result<Option<StoredRc>> {
        let response = self
            .store
            .get(Get::key(self.rc_key(id)))
            .await
            .map_err(store_err(format!("reading RC {id}")))?;
        response.first().map(Self::decode).transpose()
    }

    /// The RCs whose labels `selector` matches, in id order. A corrupt
    /// record fails the listing (naming its key) rather than hiding an RC.
    pub async fn list(&self, selector: &Selector) -> Result<Vec<StoredRc>> {
        let response = self
            .store
            .get(Get::prefix(self.keys.rcs_prefix()))
            .await
            .map_err(store_err("listing RCs"))?;
        let mut rcs = Vec::new();
        for kv in &response.kvs {
            let rc = Self::decode(kv)?;
            if selector.matches(&rc.spec.labels) {
                rcs.push(rc);
            }
        }
        Ok(rcs)
    }

    /// Reads the RC, lets `change` edit it (or refuse), and writes it back
    /// if it changed, compare-and-swap on its mod revision, with an audit
    /// record of `action` (or of what `action` returns for the change).
    /// Retries when someone else wrote in between; `expected` pins the
    /// revision the caller read (no retry then: a mismatch is refused).
    async fn modify(
        &self,
        id: &RcId,
        who: &str,
        expected: Option<Revision>,
        change: impl Fn(&mut RcSpec) -> Result<AuditAction>,
    ) -> Result<StoredRc> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self
                .get(id)
                .await?
                .ok_or_else(|| RcError::NotFound { id: id.to_string() })?;
            if let Some(expected) = expected
                && expected != current.revision
            {
                return Err(precondition(
                    id,
                    format!(
                        "the RC changed since revision {expected} (now {})",
                        current.revision
                    ),
                ));
            }
            let mut spec = current.spec.clone();
            let action = change(&mut spec)?;
            if spec == current.spec {
                return Ok(current);
            }
            let key = self.rc_key(id);
            let audit = AuditRecord::new(
                who,
                action,
                vec![id.to_string()],
                Some(audit_value(&current.spec)),
                Some(audit_value(&spec)),
            );
            let response = self
                .store
                .txn(
                    Txn::new()
                        .when([Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            current.revision,
                        )])
                        .and_then([
                            TxnOp::Put(Put::new(key, spec.to_json())),
                            self.audit_op(&audit),
                        ]),
                )
                .await
                .map_err(store_err(format!("writing RC {id}")))?;
            if response.succeeded {
                return Ok(StoredRc {
                    spec,
                    revision: response.revision,
                    created_revision: current.created_revision,
                });
            }
            if expected.is_some() {
                return Err(precondition(id, "the RC changed meanwhile"));
            }
        }
        Err(RcError::Conflict {
            id: id.to_string(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Replaces the RC's definition with `spec` (same id). The replica count
    /// and the disabled flag are taken from `spec` too. With `expected`,
    /// only if the record is still at that revision. A changed manifest is
    /// written to the RC's pods by its farm, all at once (use a rolling
    /// update to change them a few at a time).
    pub async fn update(
        &self,
        spec: &RcSpec,
        expected: Option<Revision>,
        who: &str,
    ) -> Result<StoredRc> {
        self.modify(&spec.id, who, expected, |current| {
            if current.deleting {
                return Err(precondition(&spec.id, "is being deleted"));
            }
            if spec.deleting {
                return Err(precondition(&spec.id, "deleting is set by a delete"));
            }
            let action = if current.node_selector != spec.node_selector {
                AuditAction::Retarget
            } else if current.replicas_desired != spec.replicas_desired {
                AuditAction::Scale
            } else {
                AuditAction::Update
            };
            *current = spec.clone();
            Ok(action)
        })
        .await
    }

    /// Sets the RC's replica count.
    pub async fn scale(&self, id: &RcId, replicas: u32, who: &str) -> Result<StoredRc> {
        if replicas > crate::rc::MAX_REPLICAS {
            return Err(RcError::Invalid {
                field: "replicas_desired".to_owned(),
                reason: format!(
                    "{replicas} is not between 0 and {}",
                    crate::rc::MAX_REPLICAS
                ),
            });
        }
        self.modify(id, who, None, |rc| {
            if rc.deleting && replicas > 0 {
                return Err(precondition(id, "is being deleted"));
            }
            rc.replicas_desired = replicas;
            Ok(AuditAction::Scale)
        })
        .await
    }

    /// Enables or disables the RC (a disabled RC's farm leaves its pods
    /// alone).
    pub async fn set_disabled(&self, id: &RcId, disabled: bool, who: &str) -> Result<StoredRc> {
        self.modify(id, who, None, |rc| {
            rc.disabled = disabled;
            Ok(if disabled {
                AuditAction::Disable
            } else {
                AuditAction::Enable
            })
        })
        .await
    }

    /// Asks for the RC's deletion: its farm unschedules every pod, then
    /// removes the record. Refused above 0 replicas unless `force` (which
    /// scales it to 0 in the same write). A deleting RC is enabled, so that
    /// its pods do go.
    pub async fn delete(&self, id: &RcId, force: bool, who: &str) -> Result<StoredRc> {
        self.modify(id, who, None, |rc| {
            if rc.replicas_desired > 0 && !force {
                return Err(precondition(
                    id,
                    format!(
                        "has {} replicas desired: scale it to 0 first, or force the delete",
                        rc.replicas_desired
                    ),
                ));
            }
            rc.replicas_desired = 0;
            rc.deleting = true;
            rc.disabled = false;
            Ok(AuditAction::Delete)
        })
        .await
    }

    /// Moves `count` replicas from `from` to `to` in one txn (both records
    /// compare-and-swapped), e.g. to shift capacity between an old and a new
    /// version without the total ever changing.
    pub async fn transfer(
        &self,
        from: &RcId,
        to: &RcId,
        count: u32,
        who: &str,
    ) -> Result<(StoredRc, StoredRc)> {
        if from == to {
            return Err(RcError::Invalid {
                field: "to".to_owned(),
                reason: "must differ from the source RC".to_owned(),
            });
        }
        let missing = |id: &RcId| RcError::NotFound { id: id.to_string() };
        for _ in 0..CAS_ATTEMPTS {
            let source = self.get(from).await?.ok_or_else(|| missing(from))?;
            let target = self.get(to).await?.ok_or_else(|| missing(to))?;
            if source.spec.deleting || target.spec.deleting {
                let id = if source.spec.deleting { from } else { to };
                return Err(precondition(id, "is being deleted"));
            }
            if source.spec.replicas_desired < count {
                return Err(precondition(
                    from,
                    format!(
                        "has {} replicas desired, fewer than the {count} to transfer",
                        source.spec.replicas_desired
                    ),
                ));
            }
            let added = target.spec.replicas_desired.saturating_add(count);
            if added > crate::rc::MAX_REPLICAS {
                return Err(precondition(
                    to,
                    "would exceed the most replicas an RC may ask for",
                ));
            }
            let mut new_source = source.spec.clone();
            new_source.replicas_desired -= count;
            let mut new_target = target.spec.clone();
            new_target.replicas_desired = added;
            let audit = AuditRecord::new(
                who,
                AuditAction::Transfer,
                vec![from.to_string(), to.to_string()],
                Some(serde_json::json!({
                    from.as_ref(): source.spec.replicas_desired,
                    to.as_ref(): target.spec.replicas_desired,
                })),
                Some(serde_json::json!({
                    from.as_ref(): new_source.replicas_desired,
                    to.as_ref(): new_target.replicas_desired,
                })),
            );
            let (from_key, to_key) = (self.rc_key(from), self.rc_key(to));
            let response = self
                .store
                .txn(
                    Txn::new()
                        .when([
                            Compare::mod_revision(
                                from_key.clone(),
                                CompareOp::Equal,
                                source.revision,
                            ),
                            Compare::mod_revision(
                                to_key.clone(),
                                CompareOp::Equal,
                                target.revision,
                            ),
                        ])
                        .and_then([
                            TxnOp::Put(Put::new(from_key, new_source.to_json())),
                            TxnOp::Put(Put::new(to_key, new_target.to_json())),
                            self.audit_op(&audit),
                        ]),
                )
                .await
                .map_err(store_err(format!(
                    "transferring replicas from {from} to {to}"
                )))?;
            if response.succeeded {
                return Ok((
                    StoredRc {
                        spec: new_source,
                        revision: response.revision,
                        created_revision: source.created_revision,
                    },
                    StoredRc {
                        spec: new_target,
                        revision: response.revision,
                        created_revision: target.created_revision,
                    },
                ));
            }
        }
        Err(RcError::Conflict {
            id: from.to_string(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// The RC's status as its farm last wrote it.
    pub async fn status(&self, id: &RcId) -> Result<Option<RcStatus>> {
        let key = self.status_key(id);
        let response = self
            .store
            .get(Get::key(key.clone()))
            .await
            .map_err(store_err(format!("reading the status of RC {id}")))?;
        response
            .first()
            .map(|kv| {
                RcStatus::from_json(&kv.value).map_err(|e| RcError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The newest `limit` audit records (about `rc`, if given), oldest
    /// first. Records that do not decode are skipped: the audit trail is
    /// for reading, and one bad record must not hide the others.
    pub async fn audit(&self, rc: Option<&RcId>, limit: usize) -> Result<Vec<AuditRecord>> {
        let response = self
            .store
            .get(Get::prefix(self.keys.audit_prefix()).sorted(SortTarget::Key, SortOrder::Descend))
            .await
            .map_err(store_err("reading audit records"))?;
        let mut records: Vec<AuditRecord> = response
            .kvs
            .iter()
            .filter_map(|kv| AuditRecord::from_json(&kv.value).ok())
            .filter(|r| rc.is_none_or(|id| r.concerns(id.as_ref())))
            .take(limit)
            .collect();
        records.reverse();
        Ok(records)
    }
}

/// Decodes `rcs/<id>` records for a reflector. A record that does not
/// decode is an [`RcRecord::Invalid`] of its id rather than a corrupt
/// record, so one bad record (written around the API) never keeps a farm
/// from listing the others; its status says why it is not managed.
#[derive(Clone, Debug)]
pub struct RcCodec {
    keys: Keys,
}

impl RcCodec {
    /// The codec of the RC records under `keys`.
    pub fn new(keys: Keys) -> Self {
        RcCodec { keys }
    }
}

/// An RC record as a farm sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcRecord {
    /// A valid record at its mod revision.
    Valid {
        /// The record.
        spec: Box<RcSpec>,
        /// Its mod revision.
        revision: Revision,
    },
    /// A record that does not decode.
    Invalid {
        /// Why.
        reason: String,
    },
}

impl Codec for RcCodec {
    type Id = RcId;
    type Value = RcRecord;
    type Error = RcError;

    fn id(&self, key: &[u8]) -> Result<RcId> {
        self.keys
            .parse_rc(key)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| RcError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "not an RC key of the layout".to_owned(),
            })
    }

    fn decode(&self, kv: &KeyValue) -> Result<(RcId, RcRecord)> {
        let id = self.id(&kv.key)?;
        let record = match RcSpec::from_json(&kv.value) {
            Ok(spec) if spec.id == id => RcRecord::Valid {
                spec: Box::new(spec),
                revision: kv.mod_revision,
            },
            Ok(spec) => RcRecord::Invalid {
                reason: format!("the record is for RC {}", spec.id),
            },
            Err(e) => RcRecord::Invalid {
                reason: e.to_string(),
            },
        };
        Ok((id, record))
    }
}

/// Decodes `status/rc/<id>` records for a reflector (what `rc watch`
/// follows). Reflect [`RcStore::status_prefix`].
#[derive(Clone, Debug)]
pub struct StatusCodec {
    keys: Keys,
}

impl StatusCodec {
    /// The codec of the RC statuses under `keys`.
    pub fn new(keys: Keys) -> Self {
        StatusCodec { keys }
    }
}

impl Codec for StatusCodec {
    type Id = RcId;
    type Value = RcStatus;
    type Error = RcError;

    fn id(&self, key: &[u8]) -> Result<RcId> {
        self.keys
            .parse_status(key)
            .filter(|(kind, _)| *kind == STATUS_KIND)
            .and_then(|(_, id)| id.parse().ok())
            .ok_or_else(|| RcError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "not an RC status key of the layout".to_owned(),
            })
    }

    fn decode(&self, kv: &KeyValue) -> Result<(RcId, RcStatus)> {
        let id = self.id(&kv.key)?;
        let status = RcStatus::from_json(&kv.value).map_err(|e| RcError::Corrupt {
            key: kv.key_str().into_owned(),
            reason: e.to_string(),
        })?;
        Ok((id, status))
    }
}
