//! The Drover pod manifest: what a pod runs, as users write it in YAML, and
//! its identity.
//!
//! The core is pure: no async runtime, no I/O, no clock, no store. It turns
//! bytes into a validated [`Manifest`], gives it an identity ([`ManifestSha`],
//! the SHA-256 of a canonical form) and writes it back out. [`Reality`] is
//! what a node's agent reports it launched (the manifest's SHA and a
//! [`LaunchStatus`]).
//!
//! With the default feature `store`, the `store` module keeps intent
//! (`intent/<node>/<pod>`: which manifest runs where) and reality
//! (`reality/<node>/<pod>`) in the Drover store with typed ids, and gives
//! controllers codecs for `drover_store::reflector::Reflector`. Without it
//! (`default-features = false`) the crate depends on neither tokio nor the
//! store.
//!
//! ```
//! use drover_manifest::{Manifest, ManifestError, RestartPolicy};
//!
//! let yaml = br#"
//! id: web
//! labels: { tier: frontend }
//! resource_limits: { cpus: 0.5, memory: 512M }
//! termination_grace_period: 1m
//! status: { port: 8080, http: true }
//! launchables:
//!   server:
//!     type: process
//!     command: /usr/bin/web
//!     args: [--port, 8080]
//!     env: { RUST_LOG: info }
//!     restart_policy: on-failure
//!     restart_backoff: 5s
//! config:
//!   greeting: hello   # handed to the pod as a file
//! "#;
//! let manifest = Manifest::from_yaml(yaml)?;
//! assert_eq!(manifest.id().as_str(), "web");
//! assert_eq!(manifest.run_as(), "web"); // defaults to the id
//! let server = manifest.launchable("server").unwrap();
//! assert_eq!(server.restart_policy, RestartPolicy::OnFailure);
//! assert_eq!(server.as_process().unwrap().args, ["--port", "8080"]);
//! assert_eq!(manifest.resource_limits().memory.unwrap().as_u64(), 512 << 20);
//!
//! // Identity ignores key order, comments, whitespace and unit spelling.
//! let same = Manifest::from_yaml(manifest.to_yaml())?;
//! assert_eq!(same.sha(), manifest.sha());
//! assert_eq!(manifest.sha().to_string().len(), 64);
//!
//! // Every problem is reported at once, with its field path.
//! let err = Manifest::from_yaml("id: Web\nlaunchables: { web: { type: process, command: '' } }")
//!     .unwrap_err();
//! let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
//! assert_eq!(paths, ["id", "launchables.web.command"]);
//! assert!(matches!(err, ManifestError::Invalid(_)));
//!
//! // Other crates and tests build manifests in code.
//! let built = Manifest::builder("web").process("web", ["/bin/web", "-v"]).build()?;
//! assert_eq!(built.launchable("web").unwrap().as_process().unwrap().command, "/bin/web");
//! # Ok::<(), ManifestError>(())
//! ```
//!
//! # The format
//!
//! | field | meaning |
//! |---|---|
//! | `id` | required; the pod id ([grammar](#ids)) |
//! | `run_as` | user the pod runs as; defaults to the id |
//! | `launchables` | required, non-empty map of launchable id to stanza (below) |
//! | `config` | free-form mapping handed to the pod as a file |
//! | `status` | the pod's health check ([`StatusCheck`]): `{port, path, http, localhost_only}` polls an HTTP(S) endpoint (`path` defaults to `/_status`, `http` (plain HTTP instead of HTTPS) and `localhost_only` to `false`); `{port, tcp: true}` connects to a port; `{exec: [program, args...]}` runs a command in the pod's environment (exit 0 is passing). Any of them may set `period` (at least `100ms`), `timeout`, `failure_threshold` and `success_threshold` (1 to 1000); unset, the agent's defaults apply |
//! | `status_port`, `status_http` | p2's shorthands for `status.port` and `status.http` (setting both spellings is a conflict) |
//! | `resource_limits` | `{cpus, memory}` for the whole pod ([units]) |
//! | `termination_grace_period` | time between the stop signal and the kill; default `30s`, at most `24h` |
//! | `labels` | labels applied to the pod (`[prefix/]name: value`, Kubernetes-style grammar) |
//!
//! A launchable stanza has a `type` and, for every type, `restart_policy`
//! (`always` (default), `never` or `on-failure`), `restart_backoff` (default
//! `1s`, at most `24h`) and `env` (a map of variable name to value).
//!
//! * `type: process`: `command` (required), `args` (list), `working_dir`.
//! * `type: artifact`: `location` (required, `http(s)://` or `file:///` URL of a
//!   tarball), `sha256` (required, 64 hex digits), `entry_point` (a relative
//!   path inside the tarball, default `bin/launch`), as p2's hoist launchables.
//!
//! Any other `type` is an error naming the accepted ones.
//!
//! Decisions, so they are not guesses:
//!
//! * **Unknown fields are errors** (`FieldErrorKind::UnknownField`, with the
//!   path and the accepted names): a misspelt `restart_polcy` must not silently
//!   run the pod with the default.
//! * A field set to `null` counts as absent.
//! * Values that are strings to the program (`env`, `args`, labels) may be
//!   written as integers or booleans (`PORT: 8080`); floats must be quoted,
//!   since YAML would not keep their spelling.
//! * Durations need a unit (`500ms`, `30s`, `2m`, `1h`, `1m 30s`); a bare
//!   number is refused. Sizes use binary units (`512M` = 512 MiB). See [`units`].
//! * `config` must be plain data: string keys, finite numbers, no YAML tags.
//! * One YAML document per manifest, nested at most [`MAX_NESTING_DEPTH`]
//!   levels, at most [`MAX_MANIFEST_BYTES`] bytes. PGP-clearsigned manifests
//!   (p2) are not supported.
//!
//! # Ids
//!
//! Pod ids and launchable ids follow one grammar, a DNS label: 1 to 63
//! characters of lowercase ASCII letters, digits and `-`, starting and ending
//! with a letter or digit. They are safe in store keys, paths and file names.
//!
//! # Identity
//!
//! [`Manifest::sha`] is the SHA-256 of [`Manifest::canonical_bytes`], compact
//! JSON with sorted keys of the typed content, defaults left out (details in
//! the `canonical` module source). Key order, comments, whitespace, quoting,
//! unit spelling (`1024M` and `1G`) and spelled-out defaults do not change it.
//! [`Manifest::raw_bytes`] keeps the bytes exactly as given, for storage.
//! Two manifests are equal (`==`) when their SHAs are.
//!
//! # Errors
//!
//! [`ManifestError::Yaml`] (with line and column) for text that is not one
//! YAML document, [`ManifestError::TooLarge`] before any parsing, and
//! [`ManifestError::Invalid`] listing every [`FieldError`] found, in document
//! order, each with a path such as `launchables.web.command`, a
//! [`FieldErrorKind`] and the line and column of the offending node.
//!
//! The YAML parser is [`saphyr`] (pure-Rust YAML 1.2, maintained; `serde_yaml`
//! is deprecated): its node positions let every field error name its line.

mod builder;
mod canonical;
mod error;
mod id;
mod model;
mod node;
mod parse;
mod reality;
#[cfg(feature = "store")]
pub mod store;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use builder::ManifestBuilder;
pub use error::{FieldError, FieldErrorKind, ManifestError};
pub use id::{IdError, LaunchableId, MAX_ID_LEN, PodId};
pub use model::{
    Artifact, DEFAULT_ENTRY_POINT, DEFAULT_RESTART_BACKOFF, DEFAULT_STATUS_PATH,
    DEFAULT_TERMINATION_GRACE_PERIOD, LAUNCHABLE_TYPES, Launchable, LaunchableKind, MAX_DURATION,
    MAX_PROBE_INTERVAL, MAX_PROBE_THRESHOLD, MIN_PROBE_PERIOD, Probe, Process, ResourceLimits,
    RestartPolicy, StatusCheck,
};
pub use node::{Capacity, NodeRecord};
pub use parse::MAX_NESTING_DEPTH;
pub use reality::{Exit, LaunchStatus, Reality};
#[cfg(feature = "store")]
pub use store::{
    Intent, IntentCodec, IntentStore, NodeCodec, PodCodec, PodListing, PodRecord, PodStore,
    RealityCodec, RealityStore, TolerantIntentCodec,
};
pub use units::{ByteSize, Cpus};

/// The largest manifest accepted, in bytes: etcd's 1.5 MiB request limit less
/// 4 KiB kept for the key (`intent/<node>/<pod>`) and the request's framing,
/// so every manifest that parses can be stored.
pub const MAX_MANIFEST_BYTES: usize = 1536 * 1024 - 4096;

/// A validated pod manifest. See the [crate docs](crate) for the format.
#[derive(Clone)]
pub struct Manifest {
    spec: parse::Spec,
    raw: Vec<u8>,
    canonical: Vec<u8>,
    sha: ManifestSha,
}

impl Manifest {
    /// Parses and validates a manifest. The bytes are kept as given.
    pub fn from_yaml(bytes: impl AsRef<[u8]>) -> Result<Self, ManifestError> {
        let bytes = bytes.as_ref();
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            // `valid` is UTF-8 up to here, so this counts characters.
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            ManifestError::Yaml {
                line,
                column,
                message: "invalid UTF-8".into(),
            }
        })?;
        let spec = parse::parse(text)?;
        let mut canonical = Vec::with_capacity(bytes.len());
        canonical::canonical_json(&canonical::tree(&view(&spec)), &mut canonical);
        let sha = ManifestSha(Sha256::digest(&canonical).into());
        Ok(Self {
            spec,
            raw: bytes.to_vec(),
            canonical,
            sha,
        })
    }

    /// Starts building a manifest in code; see [`ManifestBuilder`].
    pub fn builder(id: impl Into<String>) -> ManifestBuilder {
        ManifestBuilder::new(id)
    }

    /// The identity: SHA-256 of [`canonical_bytes`](Self::canonical_bytes).
    pub fn sha(&self) -> ManifestSha {
        self.sha
    }

    /// The bytes this manifest was parsed from, unchanged.
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The canonical form (sorted compact JSON) the SHA is computed over. It
    /// is itself a valid manifest: parsing it yields the same SHA.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }

    /// The manifest as normalised YAML: canonical units, defaults left out,
    /// fields in a fixed order. Parsing it yields the same SHA.
    pub fn to_yaml(&self) -> String {
        canonical::to_yaml(&canonical::tree(&view(&self.spec)), true)
    }

    /// The pod id.
    pub fn id(&self) -> &PodId {
        &self.spec.id
    }

    /// The user the pod runs as (the pod id unless `run_as` says otherwise).
    pub fn run_as(&self) -> &str {
        self.spec.run_as.as_deref().unwrap_or(self.spec.id.as_str())
    }

    /// The launchables, by id.
    pub fn launchables(&self) -> &BTreeMap<LaunchableId, Launchable> {
        &self.spec.launchables
    }

    /// One launchable, by id.
    pub fn launchable(&self, id: &str) -> Option<&Launchable> {
        self.spec.launchables.get(id)
    }

    /// The free-form `config` (empty when not given).
    pub fn config(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.spec.config
    }

    /// `config` as YAML text, the content of the file handed to the pod.
    pub fn config_yaml(&self) -> String {
        canonical::to_yaml(&serde_json::Value::Object(self.spec.config.clone()), false)
    }

    /// The status endpoint, when the manifest declares one.
    pub fn status(&self) -> Option<&StatusCheck> {
        self.spec.status.as_ref()
    }

    /// Resource limits (each unset when unlimited).
    pub fn resource_limits(&self) -> &ResourceLimits {
        &self.spec.resource_limits
    }

    /// Time between the stop signal and the kill.
    pub fn termination_grace_period(&self) -> Duration {
        self.spec.termination_grace_period
    }

    /// Labels to apply to the pod.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.spec.labels
    }
}

fn view(spec: &parse::Spec) -> canonical::View<'_> {
    canonical::View {
        id: spec.id.as_str(),
        run_as: spec.run_as.as_deref(),
        launchables: spec
            .launchables
            .iter()
            .map(|(id, l)| (id.as_str(), l))
            .collect(),
        config: &spec.config,
        status: spec.status.as_ref(),
        resource_limits: &spec.resource_limits,
        termination_grace_period: spec.termination_grace_period,
        labels: &spec.labels,
    }
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.sha == other.sha
    }
}

impl Eq for Manifest {}

impl std::hash::Hash for Manifest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.sha.hash(state);
    }
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("id", &self.spec.id.as_str())
            .field("sha", &self.sha)
            .field("launchables", &self.spec.launchables)
            .field("raw_len", &self.raw.len())
            .finish_non_exhaustive()
    }
}

/// A manifest's identity: SHA-256 of its canonical form. Displays and parses
/// as 64 lowercase hex digits (parsing accepts either case); serde uses the
/// same string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestSha([u8; 32]);

impl ManifestSha {
    /// The SHA from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the SHA.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ManifestSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ManifestSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestSha({self})")
    }
}

impl FromStr for ManifestSha {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, ManifestError> {
        let invalid = |reason| ManifestError::InvalidSha {
            input: s.chars().take(80).collect(),
            reason,
        };
        if s.len() != 64 {
            return Err(invalid("must be 64 hex digits"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| invalid("must contain only hex digits"))?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for ManifestSha {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ManifestSha {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
