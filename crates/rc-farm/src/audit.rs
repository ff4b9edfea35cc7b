//! Audit records, `audit/<ulid>`: who changed what of an RC, with the
//! before and after. Every change users make (create, update, retarget,
//! scale, enable, disable, transfer, delete) and every placement change the
//! farm makes (schedule, unschedule) appends one, in the same txn as the
//! change, so an audit record exists exactly when its change committed.
//! ULIDs sort by time, so a prefix listing reads them in order.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What an audit record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// The RC was created.
    Create,
    /// Its manifest, labels, pod labels or placement changed.
    Update,
    /// Its node selector changed.
    Retarget,
    /// Its replica count changed.
    Scale,
    /// It was enabled.
    Enable,
    /// It was disabled.
    Disable,
    /// Replicas moved from one RC to another, in one txn.
    Transfer,
    /// A delete was asked (the farm unschedules, then removes the record).
    Delete,
    /// The farm removed the record after its last pod.
    Deleted,
    /// The farm wrote the RC's intent on nodes.
    Schedule,
    /// The farm deleted the RC's intent from nodes.
    Unschedule,
    /// The farm rewrote the RC's intent on nodes with a changed manifest.
    Replace,
}

impl AuditAction {
    /// The name used in records and tables (`create`, `scale`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Update => "update",
            AuditAction::Retarget => "retarget",
            AuditAction::Scale => "scale",
            AuditAction::Enable => "enable",
            AuditAction::Disable => "disable",
            AuditAction::Transfer => "transfer",
            AuditAction::Delete => "delete",
            AuditAction::Deleted => "deleted",
            AuditAction::Schedule => "schedule",
            AuditAction::Unschedule => "unschedule",
            AuditAction::Replace => "replace",
        }
    }
}

/// A ULID for `now`, after every ULID this process made before (ULIDs of
/// one millisecond would otherwise sort at random).
fn next_ulid(now: SystemTime) -> String {
    static GENERATOR: parking_lot::Mutex<ulid::Generator> =
        parking_lot::Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock();
    generator
        .generate_from_datetime(now)
        .unwrap_or_else(|_| ulid::Ulid::from_datetime(now))
        .to_string()
        .to_lowercase()
}

/// One audit record (stored as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The record's ULID (its key segment): sorts by time.
    pub id: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who: the API caller's identity, or `farm:<id>` for the farm.
    pub who: String,
    /// What kind of change.
    pub action: AuditAction,
    /// The RCs it concerns (two for a transfer).
    pub rcs: Vec<String>,
    /// What it was (the stored RC record, or the nodes), when there was
    /// something before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    /// What it became.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

impl AuditRecord {
    /// A new record stamped now, with a fresh ULID.
    pub fn new(
        who: &str,
        action: AuditAction,
        rcs: Vec<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> AuditRecord {
        let now = SystemTime::now();
        AuditRecord {
            id: next_ulid(now),
            at_ms: now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            who: who.to_owned(),
            action,
            rcs,
            before,
            after,
        }
    }

    /// The stored JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit record serializes")
    }

    /// Reads a stored record.
    pub fn from_json(bytes: &[u8]) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// True when the record concerns `rc`.
    pub fn concerns(&self, rc: &str) -> bool {
        self.rcs.iter().any(|r| r == rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_their_ids_sort_by_time() {
        let a = AuditRecord::new(
            "alice",
            AuditAction::Scale,
            vec!["web".into()],
            Some(serde_json::json!({"replicas_desired": 1})),
            Some(serde_json::json!({"replicas_desired": 3})),
        );
        assert_eq!(AuditRecord::from_json(&a.to_json()).unwrap(), a);
        assert!(a.concerns("web") && !a.concerns("db"));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = AuditRecord::new("bob", AuditAction::Delete, vec!["web".into()], None, None);
        assert!(a.id < b.id, "{} < {}", a.id, b.id);
        // A valid key segment: lowercase alphanumerics.
        assert!(
            a.id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(
            serde_json::to_value(AuditAction::Unschedule).unwrap(),
            serde_json::json!(AuditAction::Unschedule.as_str())
        );
    }
}
