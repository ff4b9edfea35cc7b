//! The replication controller record, `rcs/<id>`: as operators write it
//! (YAML, the manifest nested) and as it is stored (JSON, the manifest's
//! own bytes so its SHA is the one the operator wrote).
//!
//! ```yaml
//! id: web
//! labels: { team: storefront }   # the RC's own labels (list and farm partitions select on them)
//! replicas_desired: 3        # required: p2's failsafe against mass unscheduling
//! node_selector: zone in (a,b)
//! pod_labels: { tier: web }
//! disabled: false
//! placement: { spread_by: zone, strategy: spread }   # or bin-pack
//! manifest:
//!   id: web
//!   launchables: { server: { type: process, command: /usr/bin/web } }
//! ```
//!
//! Every problem is an [`RcError::Invalid`] naming the field; unknown
//! fields are refused, as in manifests.

use std::collections::BTreeMap;

use drover_ids::RcId;
use drover_labels::{Labels, Selector};
use drover_manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::scheduler::Strategy;

/// The most replicas one RC may ask for.
pub const MAX_REPLICAS: u32 = 1_000_000;

/// The label every pod of an RC carries, with the RC's id.
pub const RC_ID_LABEL: &str = "replication_controller_id";

/// What can be wrong with an RC record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RcError {
    /// A field is missing or invalid.
    #[error("invalid replication controller: {field}: {reason}")]
    Invalid {
        /// The field's path, e.g. `replicas_desired` or `manifest.launchables`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text is not YAML (or JSON) of a mapping with the known fields.
    #[error("invalid replication controller: {0}")]
    Syntax(String),
    /// No RC has this id.
    #[error("replication controller {id} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// An RC with this id exists already.
    #[error("replication controller {id} already exists")]
    AlreadyExists {
        /// The id.
        id: String,
    },
    /// The change was refused as the RC stands (a delete above 0 replicas,
    /// an update of a stale revision, a change of an RC being deleted, a
    /// transfer of more replicas than there are).
    #[error("replication controller {id}: {reason}")]
    FailedPrecondition {
        /// The RC.
        id: String,
        /// Why.
        reason: String,
    },
    /// Concurrent writers kept changing the record; nothing was written.
    #[error("replication controller {id} kept changing under {attempts} attempts; retry")]
    Conflict {
        /// The RC.
        id: String,
        /// How many compare-and-swap attempts were made.
        attempts: u32,
    },
    /// A stored record does not decode.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The farm's controller could not run.
    #[error("controller runtime")]
    Runtime {
        /// Why.
        #[source]
        source: drover_runtime::RuntimeError,
    },
    /// The farm's election failed or is misconfigured.
    #[error("election: {context}")]
    Election {
        /// What was being done.
        context: String,
        /// The election's error.
        #[source]
        source: drover_election::ElectionError,
    },
    /// The store failed.
    #[error("store: {context}")]
    Store {
        /// What was being done.
        context: String,
        /// The store's error.
        #[source]
        source: drover_store::StoreError,
    },
}

/// How new replicas are placed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementPolicy {
    /// Spread replicas evenly over the values of this node label.
    pub spread_by: Option<String>,
    /// Least- or most-allocated nodes first.
    pub strategy: Strategy,
}

/// A replication controller: keep `replicas_desired` copies of `manifest`
/// on the nodes `node_selector` matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcSpec {
    /// Its id (`rcs/<id>`).
    pub id: RcId,
    /// The RC's own labels: `rc list` selectors and farm partitions match
    /// them.
    pub labels: Labels,
    /// The pod it keeps copies of.
    pub manifest: Manifest,
    /// Which nodes it may use.
    pub node_selector: Selector,
    /// Labels set on each of its pods (besides [`RC_ID_LABEL`]).
    pub pod_labels: BTreeMap<String, String>,
    /// How many copies.
    pub replicas_desired: u32,
    /// A disabled RC is left alone by its farm: nothing is added or removed.
    pub disabled: bool,
    /// How new replicas are placed.
    pub placement: PlacementPolicy,
    /// Set by a delete: the farm unschedules every pod, then removes the
    /// record. Not writable by operators.
    pub deleting: bool,
}

/// The record as written by operators: the manifest as a nested mapping
/// (or its YAML text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    manifest: Option<serde_yaml_ng::Value>,
    node_selector: Option<String>,
    #[serde(default)]
    pod_labels: BTreeMap<String, String>,
    replicas_desired: Option<i64>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    placement: WrittenPlacement,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WrittenPlacement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spread_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    strategy: Option<String>,
}

/// The stored record: the manifest as its raw bytes (text).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    manifest: String,
    node_selector: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pod_labels: BTreeMap<String, String>,
    replicas_desired: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
    #[serde(default)]
    placement: WrittenPlacement,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleting: bool,
}

fn invalid(field: impl Into<String>, reason: impl ToString) -> RcError {
    RcError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

impl RcSpec {
    /// Reads an RC as an operator writes it.
    pub fn from_yaml(text: &str) -> Result<RcSpec, RcError> {
        let written: Written =
            serde_yaml_ng::from_str(text).map_err(|e| RcError::Syntax(e.to_string()))?;
        let manifest_text = match written.manifest {
            None => return Err(invalid("manifest", "is required")),
            Some(serde_yaml_ng::Value::String(text)) => text,
            Some(mapping @ serde_yaml_ng::Value::Mapping(_)) => {
                serde_yaml_ng::to_string(&mapping).map_err(|e| invalid("manifest", e))?
            }
            Some(_) => return Err(invalid("manifest", "must be a mapping (the pod manifest)")),
        };
        RcSpec::checked(
            written.id,
            written.labels,
            &manifest_text,
            written.node_selector,
            written.pod_labels,
            written.replicas_desired,
            written.disabled,
            written.placement,
            false,
        )
    }

    /// Reads the stored record ([`RcSpec::to_json`]).
    pub fn from_json(bytes: &[u8]) -> Result<RcSpec, RcError> {
        let stored: Stored =
            serde_json::from_slice(bytes).map_err(|e| RcError::Syntax(e.to_string()))?;
        RcSpec::checked(
            Some(stored.id),
            stored.labels,
            &stored.manifest,
            Some(stored.node_selector),
            stored.pod_labels,
            Some(stored.replicas_desired),
            stored.disabled,
            stored.placement,
            stored.deleting,
        )
    }

    /// The stored record: compact JSON, the manifest's own bytes inside.
    pub fn to_json(&self) -> Vec<u8> {
        let stored = Stored {
            id: self.id.to_string(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            manifest: String::from_utf8_lossy(self.manifest.raw_bytes()).into_owned(),
            node_selector: self.node_selector.to_string(),
            pod_labels: self.pod_labels.clone(),
            replicas_desired: i64::from(self.replicas_desired),
            disabled: self.disabled,
            placement: WrittenPlacement {
                spread_by: self.placement.spread_by.clone(),
                strategy: Some(
                    match self.placement.strategy {
                        Strategy::Spread => "spread",
                        Strategy::BinPack => "bin-pack",
                    }
                    .to_owned(),
                ),
            },
            deleting: self.deleting,
        };
        serde_json::to_vec(&stored).expect("an RC record serializes")
    }

    #[allow(clippy::too_many_arguments)]
    fn checked(
        id: Option<String>,
        labels: BTreeMap<String, String>,
        manifest: &str,
        node_selector: Option<String>,
        pod_labels: BTreeMap<String, String>,
        replicas_desired: Option<i64>,
        disabled: bool,
        placement: WrittenPlacement,
        deleting: bool,
    ) -> Result<RcSpec, RcError> {
        let id: RcId = id
            .ok_or_else(|| invalid("id", "is required"))?
            .parse()
            .map_err(|e| invalid("id", e))?;
        let replicas_desired = match replicas_desired {
            None => {
                return Err(invalid(
                    "replicas_desired",
                    "is required (an RC without it could unschedule every pod)",
                ));
            }
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_REPLICAS)
                .ok_or_else(|| {
                    invalid(
                        "replicas_desired",
                        format!("{n} is not between 0 and {MAX_REPLICAS}"),
                    )
                })?,
        };
        let labels = Labels::try_from_pairs(labels).map_err(|e| invalid("labels", e))?;
        let manifest = Manifest::from_yaml(manifest).map_err(|e| invalid("manifest", e))?;
        let node_selector: Selector = node_selector
            .ok_or_else(|| invalid("node_selector", "is required (\"\" selects every node)"))?
            .parse()
            .map_err(|e| invalid("node_selector", e))?;
        for (key, value) in &pod_labels {
            let field = format!("pod_labels.{key}");
            drover_labels::name::validate_key(key).map_err(|e| invalid(&field, e))?;
            drover_labels::name::validate_value(value).map_err(|e| invalid(&field, e))?;
            if key == RC_ID_LABEL {
                return Err(invalid(field, "is set by the RC itself (to its id)"));
            }
        }
        if let Some(key) = &placement.spread_by {
            drover_labels::name::validate_key(key)
                .map_err(|e| invalid("placement.spread_by", e))?;
        }
        let strategy = match placement.strategy.as_deref() {
            None | Some("spread") => Strategy::Spread,
            Some("bin-pack") => Strategy::BinPack,
            Some(other) => {
                return Err(invalid(
                    "placement.strategy",
                    format!("{other:?} is not spread or bin-pack"),
                ));
            }
        };
        Ok(RcSpec {
            id,
            labels,
            manifest,
            node_selector,
            pod_labels,
            replicas_desired,
            disabled,
            placement: PlacementPolicy {
                spread_by: placement.spread_by,
                strategy,
            },
            deleting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "
id: web
replicas_desired: 3
node_selector: zone in (a,b)
pod_labels: { tier: web }
placement: { spread_by: zone, strategy: bin-pack }
manifest:
  id: web
  launchables: { server: { type: process, command: /usr/bin/web } }
";

    #[test]
    fn an_operators_rc_is_read_and_round_trips_through_its_stored_form() {
        let rc = RcSpec::from_yaml(WEB).unwrap();
        assert_eq!(rc.id.as_ref(), "web");
        assert_eq!(rc.replicas_desired, 3);
        assert_eq!(rc.node_selector, "zone in (a,b)".parse().unwrap());
        assert_eq!(rc.pod_labels["tier"], "web");
        assert_eq!(rc.placement.spread_by.as_deref(), Some("zone"));
        assert_eq!(rc.placement.strategy, Strategy::BinPack);
        assert!(!rc.disabled);
        let stored = rc.to_json();
        let again = RcSpec::from_json(&stored).unwrap();
        assert_eq!(again, rc);
        assert_eq!(again.manifest.sha(), rc.manifest.sha());
        // The manifest may also be given as its YAML text: same manifest.
        let as_text = WEB.replace(
            "manifest:\n  id: web\n  launchables: { server: { type: process, command: /usr/bin/web } }",
            "manifest: |\n  id: web\n  launchables: { server: { type: process, command: /usr/bin/web } }",
        );
        assert_eq!(RcSpec::from_yaml(&as_text).unwrap().manifest, rc.manifest);
    }

    #[test]
    fn the_example_rc_is_valid() {
        let text = include_str!("../../../examples/hello/rc.yaml")
            .replace("{{HELLO_PY}}", "/srv/hello/hello.py");
        let rc = RcSpec::from_yaml(&text).unwrap();
        assert_eq!(rc.id.as_ref(), "hello");
        assert_eq!(rc.replicas_desired, 3);
        assert_eq!(rc.labels.get("app"), Some("hello"));
        assert!(rc.manifest.resource_limits().memory.is_some());
    }

    #[test]
    fn operators_cannot_mark_a_record_deleting() {
        let err = RcSpec::from_yaml(&format!("{WEB}deleting: true\n")).unwrap_err();
        assert!(
            matches!(err, RcError::Syntax(ref m) if m.contains("deleting")),
            "{err}"
        );
    }

    #[test]
    fn bad_records_name_the_field() {
        for (edit, field) in [
            (("replicas_desired: 3\n", ""), "replicas_desired"),
            (
                ("replicas_desired: 3", "replicas_desired: -1"),
                "replicas_desired",
            ),
            (
                ("replicas_desired: 3", "replicas_desired: 1000001"),
                "replicas_desired",
            ),
            (("id: web\nreplicas", "id: Web_1\nreplicas"), "id"),
            (("node_selector: zone in (a,b)\n", ""), "node_selector"),
            (("zone in (a,b)", "zone in (a,"), "node_selector"),
            (("tier: web", "'bad key': web"), "pod_labels.bad key"),
            (
                ("tier: web", "replication_controller_id: x"),
                "pod_labels.replication_controller_id",
            ),
            (
                ("strategy: bin-pack", "strategy: random"),
                "placement.strategy",
            ),
            (
                ("spread_by: zone", "spread_by: 'no spaces'"),
                "placement.spread_by",
            ),
            (
                ("command: /usr/bin/web", "commnd: /usr/bin/web"),
                "manifest",
            ),
        ] {
            let yaml = WEB.replacen(edit.0, edit.1, 1);
            assert_ne!(yaml, WEB, "{edit:?} must change the record");
            match RcSpec::from_yaml(&yaml) {
                Err(RcError::Invalid { field: got, reason }) => {
                    assert_eq!(got, field, "{edit:?}: {reason}");
                }
                other => panic!("{edit:?}: {other:?}"),
            }
        }
        let err = RcSpec::from_yaml(&format!("{WEB}replicas: 3\n")).unwrap_err();
        assert!(
            matches!(err, RcError::Syntax(ref m) if m.contains("replicas")),
            "{err}"
        );
        assert!(matches!(RcSpec::from_json(b"{"), Err(RcError::Syntax(_))));
    }
}
