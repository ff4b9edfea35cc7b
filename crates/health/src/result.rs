use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_ids::{IdError, NodeId, PodId};
use serde::{Deserialize, Serialize};

use crate::error::{HealthError, Result};
use crate::state::HealthState;

/// Longest pod or node id: the workspace's one limit, from `drover_ids`.
pub use drover_ids::MAX_ID_LEN;

/// One node's health observation of one pod, as stored (JSON) under
/// `health/<pod>/<node>`:
///
/// ```json
/// {"pod":"web","node":"n1","state":"passing","output":"200 OK","observed_at":"2026-11-21T05:00:00Z"}
/// ```
///
/// The ids are typed ([`PodId`], [`NodeId`]), so a result always names a
/// valid health key; on the wire they are plain strings, and a record whose
/// id breaks the grammar does not decode (the error names the field).
/// `observed_at` is wall-clock time supplied by the caller (this crate never
/// reads a clock), serialized as RFC 3339 in UTC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredResult")]
pub struct HealthResult {
    pub pod: PodId,
    pub node: NodeId,
    pub state: HealthState,
    /// Check output for humans (HTTP status line, error text); may be empty.
    pub output: String,
    #[serde(with = "rfc3339")]
    pub observed_at: SystemTime,
}

/// The stored shape with the ids still untyped, so that a bad id is an
/// [`HealthError::InvalidId`] naming the field rather than a bare decode
/// error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredResult {
    pod: String,
    node: String,
    state: HealthState,
    #[serde(default)]
    output: String,
    #[serde(with = "rfc3339")]
    observed_at: SystemTime,
}

impl TryFrom<StoredResult> for HealthResult {
    type Error = HealthError;

    fn try_from(stored: StoredResult) -> Result<Self> {
        let result = HealthResult {
            pod: typed_id(stored.pod)?,
            node: typed_id(stored.node)?,
            state: stored.state,
            output: stored.output,
            observed_at: stored.observed_at,
        };
        result.validate()?;
        Ok(result)
    }
}

impl HealthResult {
    /// A validated result. The ids may be given as text or typed ids.
    pub fn new(
        pod: impl Into<String>,
        node: impl Into<String>,
        state: HealthState,
        output: impl Into<String>,
        observed_at: SystemTime,
    ) -> Result<Self> {
        let result = HealthResult {
            pod: typed_id(pod.into())?,
            node: typed_id(node.into())?,
            state,
            output: output.into(),
            observed_at,
        };
        result.validate()?;
        Ok(result)
    }

    /// Checks the timestamp range (the ids are valid by their types).
    pub fn validate(&self) -> Result<()> {
        check_time(self.observed_at)
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        self.validate()?;
        serde_json::to_vec(self).map_err(|source| HealthError::Decode { source })
    }

    /// Parses and validates the stored JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let stored: StoredResult =
            serde_json::from_slice(bytes).map_err(|source| HealthError::Decode { source })?;
        stored.try_into()
    }
}

/// `id` as a typed id ([`PodId`] or [`NodeId`]: the workspace's one id
/// grammar, a DNS label of at most [`MAX_ID_LEN`] characters); the error
/// names the field and keeps the rejected id.
pub(crate) fn typed_id<T>(id: impl Into<String>) -> Result<T>
where
    T: TryFrom<String, Error = IdError>,
{
    let id = id.into();
    T::try_from(id.clone()).map_err(|e| HealthError::InvalidId {
        field: e.field,
        id,
        reason: e.reason,
    })
}

/// 10000-01-01T00:00:00Z: RFC 3339 has four-digit years.
const MAX_SECS: u64 = 253_402_300_800;

fn check_time(t: SystemTime) -> Result<()> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d < Duration::from_secs(MAX_SECS) => Ok(()),
        _ => Err(HealthError::TimestampOutOfRange),
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        // humantime panics outside 1970..=9999; refuse instead.
        super::check_time(*t).map_err(serde::ser::Error::custom)?;
        s.collect_str(&humantime::format_rfc3339_nanos(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!("observed_at {text:?} is not RFC 3339 UTC: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn json_round_trip_and_shape() {
        let r = HealthResult::new(
            "web",
            "n1",
            HealthState::Passing,
            "200 OK",
            at(1_700_000_000),
        )
        .unwrap();
        let json = String::from_utf8(r.to_json().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"pod":"web","node":"n1","state":"passing","output":"200 OK","observed_at":"2023-11-14T22:13:20.000000000Z"}"#
        );
        assert_eq!(HealthResult::from_json(json.as_bytes()).unwrap(), r);
        let sub_second = HealthResult {
            observed_at: at(5) + Duration::from_nanos(123_456_789),
            ..r.clone()
        };
        assert_eq!(
            HealthResult::from_json(&sub_second.to_json().unwrap()).unwrap(),
            sub_second
        );
        // output may be omitted.
        let short =
            br#"{"pod":"web","node":"n1","state":"warning","observed_at":"2023-11-14T22:13:20Z"}"#;
        assert_eq!(HealthResult::from_json(short).unwrap().output, "");
    }

    #[test]
    fn malformed_records_are_typed_errors() {
        let cases: &[&[u8]] = &[
            b"",
            b"not json",
            b"[]",
            br#"{"pod":"web","node":"n1","state":"fine","observed_at":"2023-11-14T22:13:20Z"}"#,
            br#"{"pod":"web","node":"n1","state":"passing","observed_at":"yesterday"}"#,
            br#"{"pod":"web","node":"n1","state":"passing"}"#,
            br#"{"pod":"web","node":"n1","state":"passing","observed_at":"2023-11-14T22:13:20Z","extra":1}"#,
        ];
        for bytes in cases {
            assert!(
                matches!(
                    HealthResult::from_json(bytes),
                    Err(HealthError::Decode { .. })
                ),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let bad_pod =
            br#"{"pod":"a/b","node":"n1","state":"passing","observed_at":"2023-11-14T22:13:20Z"}"#;
        assert!(matches!(
            HealthResult::from_json(bad_pod),
            Err(HealthError::InvalidId { field: "pod", .. })
        ));
        let bad_node =
            br#"{"pod":"web","node":"N1","state":"passing","observed_at":"2023-11-14T22:13:20Z"}"#;
        assert!(matches!(
            HealthResult::from_json(bad_node),
            Err(HealthError::InvalidId { field: "node", ref id, .. }) if id == "N1"
        ));
        // Plain serde (the Deserialize impl) names the field too.
        let err = serde_json::from_slice::<HealthResult>(bad_node).unwrap_err();
        assert!(err.to_string().contains("invalid node id"), "{err}");
        let ok =
            br#"{"pod":"web","node":"n1","state":"passing","observed_at":"2023-11-14T22:13:20Z"}"#;
        let typed: HealthResult = serde_json::from_slice(ok).unwrap();
        assert_eq!(typed, HealthResult::from_json(ok).unwrap());
        assert_eq!((typed.pod.as_str(), typed.node.as_str()), ("web", "n1"));
    }

    #[test]
    fn ids_and_times_are_validated() {
        let ok = |p: &str, n: &str| HealthResult::new(p, n, HealthState::Unknown, "", at(0));
        assert!(ok("web-1", "node-7").is_ok());
        // One id grammar with manifests (drover_ids: a DNS label): dots,
        // underscores, colons and upper case are no longer ids.
        for (pod, node, field) in [
            ("web-1.a_b:c", "n", "pod"),
            ("p", "node-7.example.com", "node"),
            ("p", "Node-7", "node"),
            ("", "n", "pod"),
            ("a/b", "n", "pod"),
            ("..", "n", "pod"),
            ("p", "", "node"),
            ("p", "n 1", "node"),
            ("p", &"n".repeat(254), "node"),
        ] {
            match ok(pod, node) {
                Err(HealthError::InvalidId { field: f, .. }) => {
                    assert_eq!(f, field, "{pod:?} {node:?}")
                }
                other => panic!("{pod:?} {node:?}: {other:?}"),
            }
        }
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            HealthResult::new("p", "n", HealthState::Passing, "", before_epoch),
            Err(HealthError::TimestampOutOfRange)
        ));
        let unchecked = HealthResult {
            pod: "p".parse().unwrap(),
            node: "n".parse().unwrap(),
            state: HealthState::Passing,
            output: String::new(),
            observed_at: at(MAX_SECS),
        };
        assert!(matches!(
            unchecked.to_json(),
            Err(HealthError::TimestampOutOfRange)
        ));
        assert!(serde_json::to_string(&unchecked).is_err());
    }
}
