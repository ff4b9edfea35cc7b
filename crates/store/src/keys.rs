//! Drover's key layout, typed: every crate builds and parses store keys
//! through [`Keys`], so no one formats keys by hand.
//!
//! Under one prefix (default [`DEFAULT_PREFIX`], `/drover/`):
//!
//! | key | written by |
//! |---|---|
//! | `nodes/<node>` | agent (bound to its lease) |
//! | `intent/<node>/<pod>` | controllers, users |
//! | `reality/<node>/<pod>` | agent |
//! | `health/<pod>/<node>` | agent (bound to its lease) |
//! | `labels/<type>/<id>` (types: node, pod = `<node>/<pod>`, rc, replication) | anyone |
//! | `rcs/<id>` | users, rc-farm |
//! | `replications/<id>` | replication |
//! | `locks/<kind>/<id>` | farms, replications (bound to the holder's lease) |
//! | `election/<name>/<lease id in lowercase hex>` | election (etcd `concurrency` layout) |
//! | `audit/<id>` | controllers |
//! | `status/<kind>/<id>` (kinds: rc) | the object's owner (rc-farm) |
//!
//! Pod and node segments are typed: the methods that build them take a
//! [`PodId`] or a [`NodeId`] (`drover_ids`, the workspace's one id grammar,
//! a DNS label), so an invalid id cannot reach a key and those methods
//! cannot fail; the parsers of those keys return typed ids. The label ids of
//! nodes and pods follow the same grammar. Every other segment (rc,
//! replication, lock, election and audit ids) is checked by
//! [`validate_segment`]: non-empty, no `/`, no control characters. Parsers
//! take a full key back to its typed parts and return `None` for anything
//! that a formatter could not have produced.
//!
//! ```
//! use drover_ids::{NodeId, PodId};
//! use drover_store::keys::{Keys, Key, LabelType};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = Keys::default();
//! let (node, pod): (NodeId, PodId) = ("node-1".parse()?, "web".parse()?);
//! let k = keys.intent(&node, &pod);
//! assert_eq!(k, "/drover/intent/node-1/web");
//! assert_eq!(keys.parse_intent(&k), Some((node.clone(), pod.clone())));
//! assert_eq!(keys.intent_node_prefix(&node), "/drover/intent/node-1/");
//! assert_eq!(keys.pod_labels(&node, &pod), "/drover/labels/pod/node-1/web");
//! assert_eq!(keys.election_candidate("db", 0x694d77f5b3a4e00c)?, "/drover/election/db/694d77f5b3a4e00c");
//! assert_eq!(
//!     keys.parse("/drover/labels/pod/node-1/web"),
//!     Some(Key::Labels { label_type: LabelType::Pod, id: "node-1/web" })
//! );
//! assert_eq!(keys.parse_intent("/drover/intent/Node_1/web"), None); // not a NodeId
//! assert!(keys.rc("rc/1").is_err());
//! # Ok(()) }
//! ```

use std::fmt;
use std::str::FromStr;

pub use drover_ids::{IdError, NodeId, PodId};

use crate::{LeaseId, StoreError};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/drover/";

/// A key, prefix or segment that does not fit the layout.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key prefix is malformed.
    #[error("invalid key prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        prefix: String,
        reason: &'static str,
    },

    /// A key segment (an rc, replication, lock, election or audit id, or
    /// the layout of a label id) is malformed; `field` names it.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidSegment {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A node or pod id (here: in a label id) breaks the id grammar.
    #[error(transparent)]
    InvalidId(#[from] IdError),

    /// Lease ids in keys must be positive (etcd never grants others).
    #[error("invalid lease id {0}: must be positive")]
    InvalidLeaseId(LeaseId),

    /// A label type name that is not one of `node`, `pod`, `rc`, `replication`.
    #[error("unknown label type {0:?} (expected node, pod, rc or replication)")]
    UnknownLabelType(String),
}

impl From<KeyError> for StoreError {
    fn from(e: KeyError) -> Self {
        StoreError::InvalidArgument(e.to_string())
    }
}

/// The kind of object a label map belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelType {
    /// A node; id `<node>`.
    Node,
    /// A pod on a node; id `<node>/<pod>`.
    Pod,
    /// A replication controller; id `<rc id>`.
    Rc,
    /// A replication; id `<replication id>`.
    Replication,
}

impl LabelType {
    /// Every label type.
    pub const ALL: [LabelType; 4] = [
        LabelType::Node,
        LabelType::Pod,
        LabelType::Rc,
        LabelType::Replication,
    ];

    /// The key segment: `node`, `pod`, `rc` or `replication`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelType::Node => "node",
            LabelType::Pod => "pod",
            LabelType::Rc => "rc",
            LabelType::Replication => "replication",
        }
    }
}

impl fmt::Display for LabelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LabelType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        LabelType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| KeyError::UnknownLabelType(s.to_owned()))
    }
}

/// A full key parsed into its typed parts (pod and node ids typed, other
/// segments borrowed from the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key<'k> {
    Node {
        node: NodeId,
    },
    Intent {
        node: NodeId,
        pod: PodId,
    },
    Reality {
        node: NodeId,
        pod: PodId,
    },
    Health {
        pod: PodId,
        node: NodeId,
    },
    /// For [`LabelType::Pod`], `id` is `<node>/<pod>`.
    Labels {
        label_type: LabelType,
        id: &'k str,
    },
    Rc {
        id: &'k str,
    },
    Replication {
        id: &'k str,
    },
    Lock {
        kind: &'k str,
        id: &'k str,
    },
    ElectionCandidate {
        name: &'k str,
        lease: LeaseId,
    },
    Audit {
        id: &'k str,
    },
    Status {
        kind: &'k str,
        id: &'k str,
    },
}

/// The key layout under one prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    /// The layout under [`DEFAULT_PREFIX`].
    fn default() -> Self {
        Keys {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

const NODES: &str = "nodes/";
const INTENT: &str = "intent/";
const REALITY: &str = "reality/";
const HEALTH: &str = "health/";
const LABELS: &str = "labels/";
const RCS: &str = "rcs/";
const REPLICATIONS: &str = "replications/";
const LOCKS: &str = "locks/";
const ELECTION: &str = "election/";
const AUDIT: &str = "audit/";
const STATUS: &str = "status/";

/// Checks one key segment; `field` names it in the error.
pub fn validate_segment(field: &'static str, value: &str) -> Result<(), KeyError> {
    let reason = if value.is_empty() {
        "must not be empty"
    } else if value.contains('/') {
        "must not contain '/'"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(KeyError::InvalidSegment {
        field,
        value: value.to_owned(),
        reason,
    })
}

/// Keys of an election under a raw prefix, as etcd's `concurrency` package
/// and `etcdctl elect NAME` (prefix `NAME/`) lay them out. The election
/// crate takes any raw prefix so Go and `etcdctl` candidates can share an
/// election; [`Keys::election_prefix`] is the prefix Drover's own elections use.
pub mod election {
    use crate::LeaseId;

    /// `<prefix><lease id in lowercase hex>`: a candidate's key, as
    /// `concurrency` writes it (`fmt.Sprintf("%s%x", pfx, lease)`). Bucket
    /// membership keys use the same shape under their members prefix.
    pub fn lease_key(prefix: &str, lease: LeaseId) -> String {
        format!("{prefix}{lease:x}")
    }

    /// `<root><bucket>/`: the election of one bucket of a bucket set.
    pub fn bucket_prefix(root: &str, bucket: &str) -> String {
        format!("{root}{bucket}/")
    }

    /// `<root><group>.members/`: where the members of a bucket set register
    /// (one [`lease_key`] each, bound to the member's lease). The `.members`
    /// suffix keeps it apart from every bucket's election prefix.
    pub fn bucket_members_prefix(root: &str, group: &str) -> String {
        format!("{root}{group}.members/")
    }
}

fn is_segment(value: &str) -> bool {
    validate_segment("", value).is_ok()
}

impl Keys {
    /// The layout under `prefix`, which must start and end with `/`, have no
    /// empty segment (`//`) and no control characters.
    pub fn new(prefix: impl Into<String>) -> Result<Self, KeyError> {
        let prefix = prefix.into();
        let reason = if !prefix.starts_with('/') || !prefix.ends_with('/') {
            "must start and end with '/'"
        } else if prefix.contains("//") {
            "must not contain an empty segment ('//')"
        } else if prefix.chars().any(char::is_control) {
            "must not contain control characters"
        } else {
            return Ok(Keys { prefix });
        };
        Err(KeyError::InvalidPrefix { prefix, reason })
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn join(&self, parts: &[&str]) -> String {
        let mut key = String::with_capacity(
            self.prefix.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        key.push_str(&self.prefix);
        for part in parts {
            key.push_str(part);
        }
        key
    }

    // ---- nodes/<node> ----

    /// `nodes/<node>`.
    pub fn node(&self, node: &NodeId) -> String {
        self.join(&[NODES, node.as_str()])
    }

    /// `nodes/`: every node record.
    pub fn nodes_prefix(&self) -> String {
        self.join(&[NODES])
    }

    // ---- intent/<node>/<pod> ----

    /// `intent/<node>/<pod>`.
    pub fn intent(&self, node: &NodeId, pod: &PodId) -> String {
        self.join(&[INTENT, node.as_str(), "/", pod.as_str()])
    }

    /// `intent/`: every intent.
    pub fn intent_prefix(&self) -> String {
        self.join(&[INTENT])
    }

    /// `intent/<node>/`: every intent of one node.
    pub fn intent_node_prefix(&self, node: &NodeId) -> String {
        self.join(&[INTENT, node.as_str(), "/"])
    }

    // ---- reality/<node>/<pod> ----

    /// `reality/<node>/<pod>`.
    pub fn reality(&self, node: &NodeId, pod: &PodId) -> String {
        self.join(&[REALITY, node.as_str(), "/", pod.as_str()])
    }

    /// `reality/`: every reality record.
    pub fn reality_prefix(&self) -> String {
        self.join(&[REALITY])
    }

    /// `reality/<node>/`: every reality record of one node.
    pub fn reality_node_prefix(&self, node: &NodeId) -> String {
        self.join(&[REALITY, node.as_str(), "/"])
    }

    // ---- health/<pod>/<node> ----

    /// `health/<pod>/<node>`.
    pub fn health(&self, pod: &PodId, node: &NodeId) -> String {
        self.join(&[HEALTH, pod.as_str(), "/", node.as_str()])
    }

    /// `health/`: every health result.
    pub fn health_prefix(&self) -> String {
        self.join(&[HEALTH])
    }

    /// `health/<pod>/`: the health of one pod on every node.
    pub fn health_pod_prefix(&self, pod: &PodId) -> String {
        self.join(&[HEALTH, pod.as_str(), "/"])
    }

    // ---- labels/<type>/<id> ----

    /// `labels/<type>/<id>`. For [`LabelType::Pod`] the id is `<node>/<pod>`
    /// (see [`Keys::pod_labels`]); for the other types it is one segment.
    /// Node and pod ids must follow the id grammar ([`NodeId`], [`PodId`]).
    pub fn labels(&self, label_type: LabelType, id: &str) -> Result<String, KeyError> {
        validate_label_id(label_type, id)?;
        Ok(self.join(&[LABELS, label_type.as_str(), "/", id]))
    }

    /// `labels/pod/<node>/<pod>`.
    pub fn pod_labels(&self, node: &NodeId, pod: &PodId) -> String {
        self.join(&[
            LABELS,
            LabelType::Pod.as_str(),
            "/",
            node.as_str(),
            "/",
            pod.as_str(),
        ])
    }

    /// `labels/`: every label map.
    pub fn labels_prefix(&self) -> String {
        self.join(&[LABELS])
    }

    /// `labels/<type>/`: every label map of one type.
    pub fn labels_type_prefix(&self, label_type: LabelType) -> String {
        self.join(&[LABELS, label_type.as_str(), "/"])
    }

    // ---- rcs/<id>, replications/<id> ----

    /// `rcs/<id>`.
    pub fn rc(&self, id: &str) -> Result<String, KeyError> {
        validate_segment("rc id", id)?;
        Ok(self.join(&[RCS, id]))
    }

    /// `rcs/`: every replication controller.
    pub fn rcs_prefix(&self) -> String {
        self.join(&[RCS])
    }

    /// `replications/<id>`.
    pub fn replication(&self, id: &str) -> Result<String, KeyError> {
        validate_segment("replication id", id)?;
        Ok(self.join(&[REPLICATIONS, id]))
    }

    /// `replications/`: every replication.
    pub fn replications_prefix(&self) -> String {
        self.join(&[REPLICATIONS])
    }

    // ---- locks/<kind>/<id> ----

    /// `locks/<kind>/<id>`.
    pub fn lock(&self, kind: &str, id: &str) -> Result<String, KeyError> {
        validate_segment("lock kind", kind)?;
        validate_segment("lock id", id)?;
        Ok(self.join(&[LOCKS, kind, "/", id]))
    }

    /// `locks/`: every lock.
    pub fn locks_prefix(&self) -> String {
        self.join(&[LOCKS])
    }

    /// `locks/<kind>/`: every lock of one kind.
    pub fn locks_kind_prefix(&self, kind: &str) -> Result<String, KeyError> {
        validate_segment("lock kind", kind)?;
        Ok(self.join(&[LOCKS, kind, "/"]))
    }

    // ---- election/<name>/<lease hex> ----

    /// `election/<name>/`: the candidates of one election. This is the
    /// prefix etcd's `concurrency.NewElection(session, pfx)` uses when given
    /// `pfx` = this prefix without the trailing `/`.
    pub fn election_prefix(&self, name: &str) -> Result<String, KeyError> {
        validate_segment("election name", name)?;
        Ok(self.join(&[ELECTION, name, "/"]))
    }

    /// `election/`: every election.
    pub fn elections_prefix(&self) -> String {
        self.join(&[ELECTION])
    }

    /// `election/<name>/<lease id in lowercase hex>`: a candidate's key, as
    /// etcd's `concurrency` package writes it (`fmt.Sprintf("%s%x", pfx, lease)`).
    pub fn election_candidate(&self, name: &str, lease: LeaseId) -> Result<String, KeyError> {
        if lease <= 0 {
            return Err(KeyError::InvalidLeaseId(lease));
        }
        Ok(election::lease_key(&self.election_prefix(name)?, lease))
    }

    // ---- audit/<id> ----

    /// `audit/<id>` (a revision or a ULID).
    pub fn audit(&self, id: &str) -> Result<String, KeyError> {
        validate_segment("audit id", id)?;
        Ok(self.join(&[AUDIT, id]))
    }

    /// `audit/`: every audit record.
    pub fn audit_prefix(&self) -> String {
        self.join(&[AUDIT])
    }

    // ---- status/<kind>/<id> ----

    /// `status/<kind>/<id>`: the status of an object (e.g. an RC), written
    /// by its owner, apart from the record users write so that neither
    /// write conflicts with the other.
    pub fn status(&self, kind: &str, id: &str) -> Result<String, KeyError> {
        validate_segment("status kind", kind)?;
        validate_segment("status id", id)?;
        Ok(self.join(&[STATUS, kind, "/", id]))
    }

    /// `status/<kind>/`: the statuses of one kind of object.
    pub fn status_kind_prefix(&self, kind: &str) -> Result<String, KeyError> {
        validate_segment("status kind", kind)?;
        Ok(self.join(&[STATUS, kind, "/"]))
    }

    // ---- parsers ----

    /// The part of `key` after `prefix` + `section`, if it is UTF-8 and
    /// starts with both.
    fn rest<'k>(&self, key: &'k [u8], section: &str) -> Option<&'k str> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(section)
    }

    /// `a/b` with both parts valid segments.
    fn two(rest: &str) -> Option<(&str, &str)> {
        let (a, b) = rest.split_once('/')?;
        (is_segment(a) && is_segment(b)).then_some((a, b))
    }

    fn one(rest: &str) -> Option<&str> {
        is_segment(rest).then_some(rest)
    }

    /// `a/b` as two typed ids.
    fn two_ids<A, B>(rest: &str) -> Option<(A, B)>
    where
        A: FromStr<Err = IdError>,
        B: FromStr<Err = IdError>,
    {
        let (a, b) = rest.split_once('/')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }

    /// `nodes/<node>` -> node.
    pub fn parse_node<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<NodeId> {
        self.rest(key.as_ref(), NODES)?.parse().ok()
    }

    /// `intent/<node>/<pod>` -> (node, pod).
    pub fn parse_intent<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<(NodeId, PodId)> {
        Self::two_ids(self.rest(key.as_ref(), INTENT)?)
    }

    /// `reality/<node>/<pod>` -> (node, pod).
    pub fn parse_reality<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<(NodeId, PodId)> {
        Self::two_ids(self.rest(key.as_ref(), REALITY)?)
    }

    /// `health/<pod>/<node>` -> (pod, node).
    pub fn parse_health<K: AsRef<[u8]> + ?Sized>(&self, key: &K) -> Option<(PodId, NodeId)> {
        Self::two_ids(self.rest(key.as_ref(), HEALTH)?)
    }

    /// `labels/<type>/<id>` -> (type, id); a pod's id is `<node>/<pod>`.
    pub fn parse_labels<'k, K: AsRef<[u8]> + ?Sized>(
        &self,
        key: &'k K,
    ) -> Option<(LabelType, &'k str)> {
        let rest = self.rest(key.as_ref(), LABELS)?;
        let (ty, id) = rest.split_once('/')?;
        let ty: LabelType = ty.parse().ok()?;
        validate_label_id(ty, id).ok()?;
        Some((ty, id))
    }

    /// `rcs/<id>` -> id.
    pub fn parse_rc<'k, K: AsRef<[u8]> + ?Sized>(&self, key: &'k K) -> Option<&'k str> {
        Self::one(self.rest(key.as_ref(), RCS)?)
    }

    /// `replications/<id>` -> id.
    pub fn parse_replication<'k, K: AsRef<[u8]> + ?Sized>(&self, key: &'k K) -> Option<&'k str> {
        Self::one(self.rest(key.as_ref(), REPLICATIONS)?)
    }

    /// `locks/<kind>/<id>` -> (kind, id).
    pub fn parse_lock<'k, K: AsRef<[u8]> + ?Sized>(
        &self,
        key: &'k K,
    ) -> Option<(&'k str, &'k str)> {
        Self::two(self.rest(key.as_ref(), LOCKS)?)
    }

    /// `election/<name>/<lease hex>` -> (name, lease). Only the canonical
    /// lowercase hex without leading zeros parses, so parsing and formatting
    /// round-trip.
    pub fn parse_election_candidate<'k, K: AsRef<[u8]> + ?Sized>(
        &self,
        key: &'k K,
    ) -> Option<(&'k str, LeaseId)> {
        let (name, hex) = Self::two(self.rest(key.as_ref(), ELECTION)?)?;
        let lease = parse_lease_hex(hex)?;
        Some((name, lease))
    }

    /// `audit/<id>` -> id.
    pub fn parse_audit<'k, K: AsRef<[u8]> + ?Sized>(&self, key: &'k K) -> Option<&'k str> {
        Self::one(self.rest(key.as_ref(), AUDIT)?)
    }

    /// `status/<kind>/<id>` -> (kind, id).
    pub fn parse_status<'k, K: AsRef<[u8]> + ?Sized>(
        &self,
        key: &'k K,
    ) -> Option<(&'k str, &'k str)> {
        Self::two(self.rest(key.as_ref(), STATUS)?)
    }

    /// Any key of the layout, or `None` if the key is not one.
    pub fn parse<'k, K: AsRef<[u8]> + ?Sized>(&self, key: &'k K) -> Option<Key<'k>> {
        let key = key.as_ref();
        if let Some(node) = self.parse_node(key) {
            return Some(Key::Node { node });
        }
        if let Some((node, pod)) = self.parse_intent(key) {
            return Some(Key::Intent { node, pod });
        }
        if let Some((node, pod)) = self.parse_reality(key) {
            return Some(Key::Reality { node, pod });
        }
        if let Some((pod, node)) = self.parse_health(key) {
            return Some(Key::Health { pod, node });
        }
        if let Some((label_type, id)) = self.parse_labels(key) {
            return Some(Key::Labels { label_type, id });
        }
        if let Some(id) = self.parse_rc(key) {
            return Some(Key::Rc { id });
        }
        if let Some(id) = self.parse_replication(key) {
            return Some(Key::Replication { id });
        }
        if let Some((kind, id)) = self.parse_lock(key) {
            return Some(Key::Lock { kind, id });
        }
        if let Some((name, lease)) = self.parse_election_candidate(key) {
            return Some(Key::ElectionCandidate { name, lease });
        }
        if let Some((kind, id)) = self.parse_status(key) {
            return Some(Key::Status { kind, id });
        }
        self.parse_audit(key).map(|id| Key::Audit { id })
    }

    /// Formats a parsed key back (the inverse of [`Keys::parse`]).
    pub fn format(&self, key: &Key<'_>) -> Result<String, KeyError> {
        match *key {
            Key::Node { ref node } => Ok(self.node(node)),
            Key::Intent { ref node, ref pod } => Ok(self.intent(node, pod)),
            Key::Reality { ref node, ref pod } => Ok(self.reality(node, pod)),
            Key::Health { ref pod, ref node } => Ok(self.health(pod, node)),
            Key::Labels { label_type, id } => self.labels(label_type, id),
            Key::Rc { id } => self.rc(id),
            Key::Replication { id } => self.replication(id),
            Key::Lock { kind, id } => self.lock(kind, id),
            Key::ElectionCandidate { name, lease } => self.election_candidate(name, lease),
            Key::Audit { id } => self.audit(id),
            Key::Status { kind, id } => self.status(kind, id),
        }
    }
}

fn validate_label_id(label_type: LabelType, id: &str) -> Result<(), KeyError> {
    match label_type {
        LabelType::Pod => {
            let Some((node, pod)) = id.split_once('/') else {
                return Err(KeyError::InvalidSegment {
                    field: "pod label id",
                    value: id.to_owned(),
                    reason: "must be <node>/<pod>",
                });
            };
            validate_segment("node", node)?;
            validate_segment("pod", pod)?;
            NodeId::new(node)?;
            PodId::new(pod)?;
            Ok(())
        }
        LabelType::Node => {
            validate_segment("node", id)?;
            NodeId::new(id)?;
            Ok(())
        }
        LabelType::Rc => validate_segment("rc id", id),
        LabelType::Replication => validate_segment("replication id", id),
    }
}

/// Canonical lowercase hex of a positive lease id, no leading zeros.
fn parse_lease_hex(hex: &str) -> Option<LeaseId> {
    let canonical = !hex.is_empty()
        && !hex.starts_with('0')
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return None;
    }
    let lease = LeaseId::from_str_radix(hex, 16).ok()?;
    (lease > 0).then_some(lease)
}

#[cfg(test)]
mod tests;
