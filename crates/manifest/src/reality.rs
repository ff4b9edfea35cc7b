//! What a node's agent launched: the value of `reality/<node>/<pod>`.

use serde::{Deserialize, Serialize};

use crate::{Manifest, ManifestError, ManifestSha};

/// What a node's agent reports it launched for one pod, stored as JSON at
/// `reality/<node>/<pod>`:
///
/// ```json
/// {"sha":"<the manifest's SHA, 64 hex digits>","status":"launched"}
/// ```
///
/// Intent says which manifest should run; reality says which one does, by
/// its identity ([`ManifestSha`]), so a controller knows a node has
/// converged when the SHAs match ([`Reality::runs`]). Beside the status
/// the agent reports how supervision goes: restarts, the last exit, why a
/// pod is crash-looping or failed, since when, and which resource limits
/// it could apply. Those fields are left out of the JSON when unset.
/// Unknown fields are refused (a misspelt field is a corrupt record, not a
/// silent default), so readers must learn a new field before writers send
/// it.
///
/// ```
/// use drover_manifest::{LaunchStatus, Manifest, Reality};
/// let web = Manifest::builder("web").process("web", ["/bin/web"]).build()?;
/// let reality = Reality::launched(&web);
/// assert!(reality.runs(&web));
/// assert_eq!(Reality::from_json(&reality.to_json())?, reality);
/// let newer = Manifest::builder("web").process("web", ["/bin/web", "-v"]).build()?;
/// assert!(!reality.runs(&newer)); // the node still runs the old manifest
/// assert!(!Reality { status: LaunchStatus::Failed, ..reality }.runs(&web));
/// # Ok::<(), drover_manifest::ManifestError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reality {
    /// The identity of the manifest the agent launched (or tried to).
    pub sha: ManifestSha,
    /// How the launch went.
    pub status: LaunchStatus,
    /// Restarts of the pod's launchables since this manifest was launched.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// How a launchable last exited, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<Exit>,
    /// Why the pod is crash-looping, exited or failed, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the status last changed, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// Which resource limits the agent applied: `cgroup`, `rlimit` or
    /// `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a process exited: its exit code, or the signal that ended it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    /// Which launchable exited is not recorded; the code it exited with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// How launching a pod's manifest on a node went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchStatus {
    /// The pod's launchables were started and the agent supervises them.
    Launched,
    /// A launchable keeps exiting; the agent restarts it after a growing
    /// backoff (`reason` says why it last stopped).
    CrashLooping,
    /// Every launchable exited and its restart policy keeps it stopped.
    Exited,
    /// The launch failed (for example an artifact could not be fetched);
    /// the agent retries.
    Failed,
}

impl Reality {
    /// `manifest`, launched.
    pub fn launched(manifest: &Manifest) -> Self {
        Reality::new(manifest.sha(), LaunchStatus::Launched)
    }

    /// `manifest`, whose launch failed.
    pub fn failed(manifest: &Manifest) -> Self {
        Reality::new(manifest.sha(), LaunchStatus::Failed)
    }

    /// A record of `status` for the manifest `sha`, with no details.
    pub fn new(sha: ManifestSha, status: LaunchStatus) -> Self {
        Reality {
            sha,
            status,
            restarts: 0,
            last_exit: None,
            reason: None,
            since_ms: None,
            limits: None,
        }
    }

    /// True when the node runs `manifest`: this records it launched.
    pub fn runs(&self, manifest: &Manifest) -> bool {
        self.status == LaunchStatus::Launched && self.sha == manifest.sha()
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reality record always serializes")
    }

    /// Parses the stored JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        serde_json::from_slice(bytes).map_err(|source| ManifestError::MalformedReality { source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(arg: &str) -> Manifest {
        Manifest::builder("web")
            .process("web", ["/bin/web", arg])
            .build()
            .unwrap()
    }

    #[test]
    fn json_shape_and_round_trip() {
        let m = manifest("-v");
        let reality = Reality::launched(&m);
        let json = String::from_utf8(reality.to_json()).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"sha":"{}","status":"launched"}}"#, m.sha())
        );
        assert_eq!(Reality::from_json(json.as_bytes()).unwrap(), reality);
        let failed = Reality::failed(&m);
        assert_eq!(failed.status, LaunchStatus::Failed);
        assert!(
            String::from_utf8(failed.to_json())
                .unwrap()
                .contains(r#""status":"failed""#)
        );
        assert_eq!(Reality::from_json(&failed.to_json()).unwrap(), failed);
    }

    #[test]
    fn supervision_details_round_trip_and_are_left_out_when_unset() {
        let m = manifest("-v");
        let reality = Reality {
            restarts: 3,
            last_exit: Some(Exit {
                code: Some(2),
                signal: None,
            }),
            reason: Some("exited with status 2".into()),
            since_ms: Some(1_700_000_000_000),
            limits: Some("cgroup".into()),
            ..Reality::new(m.sha(), LaunchStatus::CrashLooping)
        };
        let json = String::from_utf8(reality.to_json()).unwrap();
        assert!(json.contains(r#""status":"crash-looping""#), "{json}");
        assert!(json.contains(r#""last_exit":{"code":2}"#), "{json}");
        assert_eq!(Reality::from_json(json.as_bytes()).unwrap(), reality);
        assert!(!reality.runs(&m));
        let bare = String::from_utf8(Reality::launched(&m).to_json()).unwrap();
        assert!(
            !bare.contains("restarts") && !bare.contains("since_ms"),
            "{bare}"
        );
        assert!(Reality::from_json(br#"{"sha":"00","status":"launched","extra":1}"#).is_err());
    }

    #[test]
    fn runs_only_the_launched_manifest() {
        let (a, b) = (manifest("a"), manifest("b"));
        assert!(Reality::launched(&a).runs(&a));
        assert!(!Reality::launched(&a).runs(&b));
        assert!(!Reality::failed(&a).runs(&a));
    }

    #[test]
    fn malformed_records_are_typed_errors() {
        let sha = manifest("x").sha();
        for bad in [
            String::new(),
            "not json".to_owned(),
            "[]".to_owned(),
            format!(r#"{{"sha":"{sha}"}}"#),
            r#"{"sha":"abc","status":"launched"}"#.to_owned(),
            format!(r#"{{"sha":"{sha}","status":"running"}}"#),
            format!(r#"{{"sha":"{sha}","status":"launched","extra":1}}"#),
        ] {
            assert!(
                matches!(
                    Reality::from_json(bad.as_bytes()),
                    Err(ManifestError::MalformedReality { .. })
                ),
                "{bad:?}"
            );
        }
        let err = Reality::from_json(br#"{"sha":"abc","status":"launched"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid manifest SHA"), "{err}");
    }
}
