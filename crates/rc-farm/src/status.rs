//! An RC's status, `status/rc/<id>`: what its owning farm last saw, written
//! by that farm (fenced) apart from the record users write, so a status
//! update never conflicts with a user's compare-and-swap.

use serde::{Deserialize, Serialize};

/// One aspect of an RC's state, true or not, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// `Scheduled` (every replica has a node), `Ready` (every replica runs
    /// and passes its health check), `Disabled`, `Deleting`, `Transferring`
    /// (replicas leaving nodes that no longer match), `NodesLost` (replicas
    /// on nodes whose agent went away, within the grace).
    pub kind: String,
    /// Whether it holds.
    pub ok: bool,
    /// Why, in a sentence.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What the owning farm last saw of an RC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcStatus {
    /// The replica count asked for.
    pub desired: u32,
    /// Pods with the RC's intent.
    pub current: u32,
    /// Pods whose node reports the RC's manifest launched.
    pub ready: u32,
    /// Ready pods whose health is passing.
    pub healthy: u32,
    /// The conditions, in a fixed order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last reconcile error, cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The farm that owns the RC.
    pub owner: String,
    /// The owner's fencing token (its bucket term's).
    pub token: i64,
    /// The RC record's mod revision this status is about.
    pub observed_revision: i64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}

impl RcStatus {
    /// The stored JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a status serializes")
    }

    /// Reads a stored status.
    pub fn from_json(bytes: &[u8]) -> Result<RcStatus, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The condition `kind`, if reported.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Equal but for when it was written: nothing worth a write changed.
    pub fn same_as(&self, other: &RcStatus) -> bool {
        RcStatus {
            updated_at_ms: 0,
            ..self.clone()
        } == RcStatus {
            updated_at_ms: 0,
            ..other.clone()
        }
    }
}
