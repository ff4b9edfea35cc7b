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
/// converged when the SHAs match ([`Reality::runs`]). The record is kept
/// minimal on purpose: the node agent will add what it needs as new
/// fields. Unknown fields are refused (a misspelt field is a corrupt record,
/// not a silent default), so readers must learn a new field before writers
/// send it.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reality {
    /// The identity of the manifest the agent launched (or tried to).
    pub sha: ManifestSha,
    /// How the launch went.
    pub status: LaunchStatus,
}

/// How launching a pod's manifest on a node went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchStatus {
    /// The pod's launchables were started and the agent supervises them.
    Launched,
    /// The launch failed (for example an artifact could not be fetched);
    /// the agent retries.
    Failed,
}

impl Reality {
    /// `manifest`, launched.
    pub fn launched(manifest: &Manifest) -> Self {
        Reality {
            sha: manifest.sha(),
            status: LaunchStatus::Launched,
        }
    }

    /// `manifest`, whose launch failed.
    pub fn failed(manifest: &Manifest) -> Self {
        Reality {
            sha: manifest.sha(),
            status: LaunchStatus::Failed,
        }
    }

    /// True when the node runs `manifest`: this records it launched.
    pub fn runs(&self, manifest: &Manifest) -> bool {
        self.status == LaunchStatus::Launched && self.sha == manifest.sha()
    }

    /// The stored JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a SHA and a status always serialize")
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
