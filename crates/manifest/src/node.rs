//! The node record, `nodes/<node>`: what a node's agent announces (bound to
//! its lease, so the record vanishes with the agent) and what schedulers
//! read (its capacity). Written by the agent, read by the RC farm.

use serde::{Deserialize, Serialize};

/// What a node offers to pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPUs, in thousandths.
    pub millicpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// The value of `nodes/<node>`, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    /// Where the node is reachable (informational).
    pub address: String,
    /// The agent's version.
    pub agent_version: String,
    /// Identifies the agent instance (persisted in its data directory).
    pub agent_id: String,
    /// What the node offers to pods.
    pub capacity: Capacity,
    /// When the agent started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl NodeRecord {
    /// The stored JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node record always serializes")
    }

    /// Parses the stored JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_fields() {
        let record = NodeRecord {
            address: "10.0.0.1".into(),
            agent_version: "0.1.0".into(),
            agent_id: "a1".into(),
            capacity: Capacity {
                millicpus: 2000,
                memory_bytes: 4 << 30,
            },
            started_at_ms: 1,
        };
        assert_eq!(NodeRecord::from_json(&record.to_json()).unwrap(), record);
        assert!(NodeRecord::from_json(br#"{"address":"x","bogus":1}"#).is_err());
    }
}
