//! Node registration: `nodes/<node>`, bound to the agent's lease, and the
//! configured node labels.
//!
//! One live agent per node name: the record is created only if absent. An
//! agent restarted on the same data directory (same agent id) takes its
//! node back at once, without waiting for the old lease to lapse, and
//! revokes that lease; any other claimant is refused while the holder's
//! lease lives.

use std::time::{SystemTime, UNIX_EPOCH};

use drover_labels::Labeler;
use drover_store::keys::LabelType;
use drover_store::{Compare, CompareOp, Get, LeaseId, Put, Store, Txn, TxnOpResponse};

pub use drover_manifest::NodeRecord;

use crate::config::AgentConfig;
use crate::error::{AgentError, Result};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This agent's id: read from `<data dir>/agent-id`, created on first start.
pub(crate) fn agent_id(config: &AgentConfig) -> Result<String> {
    let path = config.data_dir.join("agent-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    std::fs::create_dir_all(&config.data_dir).map_err(AgentError::io(format!(
        "create the data directory {}",
        config.data_dir.display()
    )))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{:x}-{:x}", nanos, std::process::id());
    std::fs::write(&path, &id).map_err(AgentError::io(format!("write {}", path.display())))?;
    Ok(id)
}

/// Registers the node under `lease`; see the module docs for who wins.
pub(crate) async fn register<S: Store>(
    store: &S,
    config: &AgentConfig,
    record: &NodeRecord,
    lease: LeaseId,
) -> Result<()> {
    let key = config.keys.node(&config.node);
    let put = Put::new(key.as_str(), record.to_json()).with_lease(lease);
    let claim = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([put.clone().into()])
        .or_else([Get::key(key.as_str()).into()]);
    let response = store
        .txn(claim)
        .await
        .map_err(AgentError::store(format!("register node at {key}")))?;
    if response.succeeded {
        return Ok(());
    }
    let Some(TxnOpResponse::Get(got)) = response.responses.first() else {
        return Err(AgentError::Corrupt {
            key,
            message: "the registration txn answered without the record".into(),
        });
    };
    let Some(existing) = got.first() else {
        // Gone between the compare and the read cannot happen in one txn.
        return Err(AgentError::Corrupt {
            key,
            message: "the node record vanished inside a txn".into(),
        });
    };
    let holder = NodeRecord::from_json(&existing.value).map_err(|e| AgentError::Corrupt {
        key: key.clone(),
        message: e.to_string(),
    })?;
    if holder.agent_id != record.agent_id {
        return Err(AgentError::NodeTaken {
            node: config.node.clone(),
            holder: holder.agent_id,
            address: holder.address,
        });
    }
    // Our own earlier incarnation: take the record over, then end its lease
    // (and with it its stale health results).
    let take_over = Txn::new()
        .when([Compare::mod_revision(
            key.as_str(),
            CompareOp::Equal,
            existing.mod_revision,
        )])
        .and_then([put.into()]);
    let response = store
        .txn(take_over)
        .await
        .map_err(AgentError::store(format!("take over node record {key}")))?;
    if !response.succeeded {
        return Err(AgentError::NodeTaken {
            node: config.node.clone(),
            holder: "an agent that registered concurrently".into(),
            address: String::new(),
        });
    }
    if existing.lease != 0
        && existing.lease != lease
        && let Err(e) = store.lease_revoke(existing.lease).await
    {
        tracing::debug!(error = %e, lease = %format_args!("{:x}", existing.lease), "revoking the previous registration's lease failed; it will expire");
    }
    tracing::info!(node = %config.node, "took over the node from this agent's previous run");
    Ok(())
}

/// Applies the configured labels, one key at a time, keeping the others.
pub(crate) async fn apply_labels<S: Store>(store: &S, config: &AgentConfig) -> Result<()> {
    let labeler = Labeler::with_keys(store.clone(), config.keys.clone());
    for (name, value) in &config.labels {
        labeler
            .set(LabelType::Node, config.node.as_str(), name, value)
            .await
            .map_err(|source| AgentError::Labels {
                node: config.node.clone(),
                source,
            })?;
    }
    Ok(())
}
