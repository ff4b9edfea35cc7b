//! The typed parts of a manifest.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::units::{ByteSize, Cpus};

/// Restart backoff when a launchable does not set `restart_backoff`.
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Grace period when a manifest does not set `termination_grace_period`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// The longest `termination_grace_period` or `restart_backoff` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Status check path when `status.path` is not set.
pub const DEFAULT_STATUS_PATH: &str = "/_status";
/// Entry point of an artifact when `entry_point` is not set (p2's hoist layout).
pub const DEFAULT_ENTRY_POINT: &str = "bin/launch";

/// One program of a pod: what to run plus how to supervise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launchable {
    /// What to run.
    pub kind: LaunchableKind,
    /// When to restart it after it exits.
    pub restart_policy: RestartPolicy,
    /// How long to wait before restarting it.
    pub restart_backoff: Duration,
    /// Environment variables set for it, on top of those the agent provides.
    pub env: BTreeMap<String, String>,
}

impl Launchable {
    /// A `process` launchable running `argv[0]` with the rest as arguments,
    /// with default supervision (restart always, 1 s backoff, no extra env).
    /// An empty `argv` yields an empty command, which validation rejects.
    pub fn process<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = argv.into_iter().map(Into::into);
        let command = argv.next().unwrap_or_default();
        Self::with_kind(LaunchableKind::Process(Process {
            command,
            args: argv.collect(),
            working_dir: None,
        }))
    }

    /// An `artifact` launchable: the tarball at `location`, checked against
    /// `sha256` (64 hex digits), started through `bin/launch`.
    pub fn artifact(location: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self::with_kind(LaunchableKind::Artifact(Artifact {
            location: location.into(),
            sha256: sha256.into(),
            entry_point: DEFAULT_ENTRY_POINT.into(),
        }))
    }

    fn with_kind(kind: LaunchableKind) -> Self {
        Self {
            kind,
            restart_policy: RestartPolicy::default(),
            restart_backoff: DEFAULT_RESTART_BACKOFF,
            env: BTreeMap::new(),
        }
    }

    /// Sets an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the restart policy.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart_policy = policy;
        self
    }

    /// Sets the restart backoff.
    pub fn restart_backoff(mut self, backoff: Duration) -> Self {
        self.restart_backoff = backoff;
        self
    }

    /// Sets the working directory of a `process` launchable (no effect on others).
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        if let LaunchableKind::Process(process) = &mut self.kind {
            process.working_dir = Some(dir.into());
        }
        self
    }

    /// The launchable's `type` as written in YAML.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The process stanza, when this is a `process` launchable.
    pub fn as_process(&self) -> Option<&Process> {
        match &self.kind {
            LaunchableKind::Process(process) => Some(process),
            LaunchableKind::Artifact(_) => None,
        }
    }

    /// The artifact stanza, when this is an `artifact` launchable.
    pub fn as_artifact(&self) -> Option<&Artifact> {
        match &self.kind {
            LaunchableKind::Artifact(artifact) => Some(artifact),
            LaunchableKind::Process(_) => None,
        }
    }
}

/// The launchable types, selected by the stanza's `type` field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaunchableKind {
    /// `type: process`: run a command found on the node.
    Process(Process),
    /// `type: artifact`: download, verify and unpack a tarball, then run its entry point.
    Artifact(Artifact),
}

/// The accepted values of a launchable's `type`.
pub const LAUNCHABLE_TYPES: [&str; 2] = ["process", "artifact"];

impl LaunchableKind {
    /// The `type` as written in YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            LaunchableKind::Process(_) => "process",
            LaunchableKind::Artifact(_) => "artifact",
        }
    }
}

/// A `process` launchable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// The program to run: an absolute path, or a name looked up in `PATH`.
    pub command: String,
    /// Its arguments (not including the program itself).
    pub args: Vec<String>,
    /// The directory it starts in; the agent's choice (the pod's home) when unset.
    pub working_dir: Option<String>,
}

/// An `artifact` launchable (p2's hoist launchable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Where to download the tarball: an `http://`, `https://` or `file://` URL.
    pub location: String,
    /// SHA-256 of the tarball, 64 lowercase hex digits (normalised from any case).
    pub sha256: String,
    /// Path inside the unpacked tarball of the program to run (default `bin/launch`).
    pub entry_point: String,
}

/// When the agent restarts a launchable that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Restart after every exit (the default: pods are services).
    #[default]
    Always,
    /// Never restart.
    Never,
    /// Restart only after an exit with a non-zero status or a signal.
    OnFailure,
}

impl RestartPolicy {
    /// The accepted spellings, in YAML.
    pub const NAMES: [&'static str; 3] = ["always", "never", "on-failure"];

    /// The spelling in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(RestartPolicy::Always),
            "never" => Some(RestartPolicy::Never),
            "on-failure" => Some(RestartPolicy::OnFailure),
            _ => None,
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the agent checks the pod's health: what it probes ([`Probe`]) and,
/// when set, how often and how patiently (unset: the agent's defaults).
///
/// Written as `status: {port, path, http, localhost_only}` (an HTTP(S)
/// GET), `status: {port, tcp: true}` (a TCP connect) or `status: {exec:
/// [program, args...]}` (a command in the pod's environment; exit 0 is
/// passing), each with optional `period`, `timeout`, `failure_threshold`
/// and `success_threshold`. p2's shorthands `status_port` and
/// `status_http` give the same manifest (and SHA) as the nested spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCheck {
    /// What is probed.
    pub probe: Probe,
    /// Time between probes.
    pub period: Option<Duration>,
    /// A probe not answered within this is a failure.
    pub timeout: Option<Duration>,
    /// Consecutive failures before a passing pod is reported critical.
    pub failure_threshold: Option<u32>,
    /// Consecutive successes before a failing pod is reported passing.
    pub success_threshold: Option<u32>,
}

/// What a [`StatusCheck`] probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A GET of `path` on `port` (2xx is passing).
    Http {
        /// TCP port of the endpoint.
        port: u16,
        /// HTTP path of the endpoint (default `/_status`).
        path: String,
        /// Plain HTTP instead of HTTPS.
        http: bool,
        /// The endpoint listens on loopback only.
        localhost_only: bool,
    },
    /// A TCP connection to `port` (accepted is passing).
    Tcp {
        /// The port connected to.
        port: u16,
        /// The port listens on loopback only.
        localhost_only: bool,
    },
    /// A command run in the pod's home with the pod's environment (exit 0
    /// is passing).
    Exec {
        /// The program and its arguments.
        command: Vec<String>,
    },
}

/// Smallest probe period a manifest may ask for.
pub const MIN_PROBE_PERIOD: Duration = Duration::from_millis(100);
/// Longest probe period or timeout a manifest may ask for.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(3600);
/// Largest failure or success threshold a manifest may ask for.
pub const MAX_PROBE_THRESHOLD: u32 = 1000;

impl StatusCheck {
    /// An HTTPS GET of the default path on `port`, on any address, with the
    /// agent's timing.
    pub fn port(port: u16) -> Self {
        Self::of(Probe::Http {
            port,
            path: DEFAULT_STATUS_PATH.into(),
            http: false,
            localhost_only: false,
        })
    }

    /// A TCP connect to `port`, with the agent's timing.
    pub fn tcp(port: u16) -> Self {
        Self::of(Probe::Tcp {
            port,
            localhost_only: false,
        })
    }

    /// `command` (program and arguments) run as the probe, with the agent's timing.
    pub fn exec(command: Vec<String>) -> Self {
        Self::of(Probe::Exec { command })
    }

    /// `probe` with the agent's timing.
    pub fn of(probe: Probe) -> Self {
        Self {
            probe,
            period: None,
            timeout: None,
            failure_threshold: None,
            success_threshold: None,
        }
    }

    /// The port probed, for HTTP and TCP probes.
    pub fn port_number(&self) -> Option<u16> {
        match &self.probe {
            Probe::Http { port, .. } | Probe::Tcp { port, .. } => Some(*port),
            Probe::Exec { .. } => None,
        }
    }
}

/// Resource limits applied to the whole pod; unset means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceLimits {
    /// CPU quota.
    pub cpus: Option<Cpus>,
    /// Memory limit.
    pub memory: Option<ByteSize>,
}

impl ResourceLimits {
    /// Neither limit is set.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none()
    }
}
