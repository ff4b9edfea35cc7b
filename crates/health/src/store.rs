//! Health in a [`Store`] under `health/<pod>/<node>`.
//!
//! Agents write each result as JSON bound to their lease, so a dead node's
//! results vanish with its lease and it reads as missing (unknown).

use drover_store::keys::Keys;
use drover_store::reflector::{Codec, Reflector, ReflectorError, ReflectorEvent};
use drover_store::{Delete, Get, KeyValue, LeaseId, Put, Revision, Store, StoreError};

use drover_ids::{NodeId, PodId};

use crate::aggregate::PodHealth;
use crate::error::{HealthError, Result};
use crate::result::{HealthResult, typed_id};
use crate::state::HealthState;

/// A pod's health read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodHealthSnapshot {
    pub revision: Revision,
    pub health: PodHealth,
}

/// Reads, watches and writes health results.
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use drover_health::{HealthResult, HealthState, HealthStore};
/// use drover_store::embedded::EmbeddedStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_health::HealthError> {
/// let health = HealthStore::new(EmbeddedStore::in_memory());
/// let result = HealthResult::new("web", "n1", HealthState::Passing, "200 OK", UNIX_EPOCH)?;
/// health.put_health(&result, 0).await?; // an agent passes its lease id
/// assert_eq!(health.node_state("web", "n1").await?, HealthState::Passing);
/// assert_eq!(health.node_state("web", "n2").await?, HealthState::Unknown); // missing
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HealthStore<S> {
    store: S,
    keys: Keys,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> HealthError {
    let context = context.into();
    move |source| HealthError::Store { context, source }
}

impl<S: Store> HealthStore<S> {
    /// Health under the default key prefix (`/drover/`).
    pub fn new(store: S) -> Self {
        Self::with_keys(store, Keys::default())
    }

    /// Health under the key layout `keys`.
    pub fn with_keys(store: S, keys: Keys) -> Self {
        HealthStore { store, keys }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Writes `result` under `health/<pod>/<node>`, attached to `lease`
    /// (0 = no lease; agents pass theirs so results die with the node).
    /// Nothing is written when the result is invalid or the lease is gone.
    pub async fn put_health(&self, result: &HealthResult, lease: LeaseId) -> Result<Revision> {
        let value = result.to_json()?;
        let key = self.keys.health(&result.pod, &result.node);
        let resp = self
            .store
            .put(Put::new(key.as_str(), value).with_lease(lease))
            .await
            .map_err(store_err(&key))?;
        Ok(resp.revision)
    }

    /// Deletes one node's result (a stopped pod); true if there was one.
    pub async fn remove_health(&self, pod: impl AsRef<str>, node: impl AsRef<str>) -> Result<bool> {
        let key = self
            .keys
            .health(&typed_id(pod.as_ref())?, &typed_id(node.as_ref())?);
        let resp = self
            .store
            .delete(Delete::key(key.as_str()))
            .await
            .map_err(store_err(&key))?;
        Ok(resp.deleted > 0)
    }

    /// One node's result for `pod`, `None` when missing.
    pub async fn node_health(
        &self,
        pod: impl AsRef<str>,
        node: impl AsRef<str>,
    ) -> Result<Option<HealthResult>> {
        let pod: PodId = typed_id(pod.as_ref())?;
        let key = self.keys.health(&pod, &typed_id(node.as_ref())?);
        let resp = self
            .store
            .get(Get::key(key.as_str()))
            .await
            .map_err(store_err(&key))?;
        resp.first()
            .map(|kv| decode(&self.keys, Some(&pod), kv))
            .transpose()
    }

    /// One node's state for `pod`; missing is unknown.
    pub async fn node_state(
        &self,
        pod: impl AsRef<str>,
        node: impl AsRef<str>,
    ) -> Result<HealthState> {
        Ok(HealthState::or_missing(
            self.node_health(pod, node).await?.map(|r| r.state),
        ))
    }

    /// Every node's result for `pod`, read at one revision.
    pub async fn pod_health(&self, pod: impl AsRef<str>) -> Result<PodHealthSnapshot> {
        let pod: PodId = typed_id(pod.as_ref())?;
        let prefix = self.keys.health_pod_prefix(&pod);
        let resp = self
            .store
            .get(Get::prefix(prefix.as_str()))
            .await
            .map_err(store_err(&prefix))?;
        let mut health = PodHealth::new(pod.clone())?;
        for kv in &resp.kvs {
            health.record(decode(&self.keys, Some(&pod), kv)?)?;
        }
        Ok(PodHealthSnapshot {
            revision: resp.revision,
            health,
        })
    }

    /// Watches `pod`'s health on every node (see [`HealthWatch`]).
    pub fn watch_pod(&self, pod: impl AsRef<str>) -> Result<HealthWatch<S>> {
        let pod: PodId = typed_id(pod.as_ref())?;
        let prefix = self.keys.health_pod_prefix(&pod);
        let current = PodHealth::new(pod.clone())?;
        let codec = HealthCodec {
            keys: self.keys.clone(),
            pod,
        };
        Ok(HealthWatch {
            reflector: Reflector::prefix(self.store.clone(), prefix.as_str(), codec),
            current,
        })
    }
}

/// Decodes a stored result and checks it belongs at its key.
fn decode(keys: &Keys, pod: Option<&PodId>, kv: &KeyValue) -> Result<HealthResult> {
    let key = kv.key_str().into_owned();
    let corrupt = |reason: String| HealthError::Corrupt {
        key: key.clone(),
        reason,
    };
    let Some((key_pod, key_node)) = keys.parse_health(&kv.key) else {
        return Err(corrupt("not a health key of the layout".to_owned()));
    };
    let result = HealthResult::from_json(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    if result.pod != key_pod || result.node != key_node || pod.is_some_and(|p| *p != key_pod) {
        return Err(corrupt(format!(
            "record is for pod {:?} on node {:?}",
            result.pod, result.node
        )));
    }
    Ok(result)
}

/// A change of a pod's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// The first event: every node's result at `revision`.
    Initial {
        revision: Revision,
        health: PodHealth,
    },
    /// A node reported (new or changed result).
    Updated {
        result: HealthResult,
        revision: Revision,
    },
    /// A node's result is gone (deleted, or its lease expired): it now
    /// counts as missing (unknown).
    Removed { node: NodeId, revision: Revision },
}

/// Decodes one pod's `health/<pod>/<node>` records for a [`Reflector`],
/// keyed by node.
#[derive(Debug)]
struct HealthCodec {
    keys: Keys,
    pod: PodId,
}

impl Codec for HealthCodec {
    type Id = NodeId;
    type Value = HealthResult;
    type Error = HealthError;

    fn id(&self, key: &[u8]) -> Result<NodeId> {
        match self.keys.parse_health(key) {
            Some((_, node)) => Ok(node),
            None => Err(HealthError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "not a health key of the layout".to_owned(),
            }),
        }
    }

    fn decode(&self, kv: &KeyValue) -> Result<(NodeId, HealthResult)> {
        let result = decode(&self.keys, Some(&self.pod), kv)?;
        Ok((result.node.clone(), result))
    }
}

/// Decodes every `health/<pod>/<node>` record for a [`Reflector`], keyed by
/// (pod, node): for a controller that follows the health of all its pods
/// through one watch.
#[derive(Clone, Debug)]
pub struct AllHealthCodec {
    keys: Keys,
}

impl AllHealthCodec {
    /// The codec of the health records under the key layout `keys`.
    pub fn new(keys: Keys) -> Self {
        AllHealthCodec { keys }
    }
}

impl Codec for AllHealthCodec {
    type Id = (PodId, NodeId);
    type Value = HealthResult;
    type Error = HealthError;

    fn id(&self, key: &[u8]) -> Result<(PodId, NodeId)> {
        self.keys
            .parse_health(key)
            .ok_or_else(|| HealthError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "not a health key of the layout".to_owned(),
            })
    }

    fn decode(&self, kv: &KeyValue) -> Result<((PodId, NodeId), HealthResult)> {
        let result = decode(&self.keys, None, kv)?;
        Ok(((result.pod.clone(), result.node.clone()), result))
    }
}

/// A pod's health across nodes, kept current by a store watch (no polling).
///
/// The first [`HealthWatch::next`] lists the pod and yields
/// [`HealthChange::Initial`]; later calls yield one change per result
/// written or removed. When the resume revision was compacted it re-lists
/// and yields the differences. The list-then-watch cycle, its retries, the
/// re-list diff and the corrupt-record policy are
/// [`drover_store::reflector`]'s. A store failure that outlasts the retries
/// returns `Err`, and the next call resumes from the last revision seen. A
/// corrupt record in the first listing returns `Err(Corrupt)` and the next
/// call lists again; a corrupt record later returns `Err(Corrupt)` and
/// leaves that node's state unchanged.
#[derive(Debug)]
pub struct HealthWatch<S: Store> {
    reflector: Reflector<S, HealthCodec>,
    current: PodHealth,
}

impl<S: Store> HealthWatch<S> {
    /// The pod's health as reported so far.
    pub fn current(&self) -> &PodHealth {
        &self.current
    }

    /// Declares nodes expected to report; those without a result count as
    /// missing in [`HealthWatch::current`].
    pub fn expect_nodes<N: Into<String>>(
        &mut self,
        nodes: impl IntoIterator<Item = N>,
    ) -> Result<()> {
        self.current.expect_nodes(nodes)
    }

    /// The next change. Cancel-safe while waiting for a change.
    pub async fn next(&mut self) -> Result<HealthChange> {
        loop {
            let event = self.reflector.next().await.map_err(|e| match e {
                ReflectorError::Store { range, source } => HealthError::Store {
                    context: range,
                    source,
                },
                ReflectorError::Corrupt { source, .. } => source,
            })?;
            match event {
                ReflectorEvent::Initial { revision, objects } => {
                    let pod = self.current.pod().clone();
                    let fresh = match PodHealth::from_results(pod, objects.into_values()) {
                        Ok(fresh) => fresh,
                        Err(e) => {
                            // Nothing was reported yet: list again next time.
                            self.reflector.reset();
                            return Err(e);
                        }
                    };
                    for result in fresh.results().values() {
                        self.current.record(result.clone())?;
                    }
                    return Ok(HealthChange::Initial {
                        revision,
                        health: self.current.clone(),
                    });
                }
                ReflectorEvent::Applied {
                    object: result,
                    revision,
                    ..
                } => {
                    if self.current.result(&result.node) != Some(&result) {
                        // The codec checked the pod and ids, so record succeeds.
                        self.current.record(result.clone())?;
                        return Ok(HealthChange::Updated { result, revision });
                    }
                }
                ReflectorEvent::Deleted {
                    id: node, revision, ..
                } => {
                    if self.current.forget(&node).is_some() {
                        return Ok(HealthChange::Removed { node, revision });
                    }
                }
                // Its differences came just before it.
                ReflectorEvent::Restarted { .. } => {}
            }
        }
    }
}
