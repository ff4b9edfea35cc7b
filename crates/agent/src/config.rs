//! The agent's configuration and what it detects about its machine.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use drover_ids::NodeId;
use drover_store::keys::Keys;

/// Lease TTL of the node registration (seconds): a dead agent's node record
/// and health results vanish this long after its last keep-alive.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 10;
/// Restart backoff cap (kubelet's 5 minutes).
pub const DEFAULT_RESTART_CAP: Duration = Duration::from_secs(300);
/// A launchable that ran this long has its restart backoff reset
/// (kubelet's 10 minutes).
pub const DEFAULT_RESTART_RESET: Duration = Duration::from_secs(600);
/// How often health is probed. p2 polls every second and the kubelet every
/// ten: Drover probes every second because a probe is cheap (one local
/// connection) and results are written only when they change, so a fast
/// period costs no store writes and detects a hung pod within the failure
/// threshold (3 s).
pub const DEFAULT_PROBE_PERIOD: Duration = Duration::from_secs(1);
/// A probe not answered within this is a failure (the kubelet's 1 s).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failures before a passing pod is reported critical (kubelet: 3).
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Consecutive successes before a failing pod is reported passing.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;
/// Largest size of a pod's log file before it is rotated.
pub const DEFAULT_LOG_BYTES: u64 = 8 << 20;
/// Largest artifact the agent downloads.
pub const DEFAULT_ARTIFACT_MAX_BYTES: u64 = 4 << 30;
/// Longest an artifact download may take.
pub const DEFAULT_ARTIFACT_TIMEOUT: Duration = Duration::from_secs(600);

pub use drover_manifest::Capacity;

/// What this machine has: its available parallelism and `/proc/meminfo`'s
/// `MemTotal`.
pub fn detect_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    Capacity {
        millicpus: cpus * 1000,
        memory_bytes,
    }
}

/// Health probing: period, timeout and thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            period: DEFAULT_PROBE_PERIOD,
            timeout: DEFAULT_PROBE_TIMEOUT,
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
        }
    }
}

/// Whether pods run in cgroup v2 subtrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Use cgroups when the agent can create a subtree, else process groups.
    #[default]
    Auto,
    /// Process groups only.
    Off,
}

/// Everything an agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node this agent runs.
    pub node: NodeId,
    /// Where pod homes, logs and the agent's identity live.
    pub data_dir: PathBuf,
    /// Labels applied to `labels/node/<node>` (other labels are kept).
    pub labels: BTreeMap<String, String>,
    /// What the node offers; detected from the machine when `None`.
    pub capacity: Option<Capacity>,
    /// The address recorded in the node record (for operators).
    pub address: String,
    /// TTL of the registration lease, in seconds.
    pub lease_ttl_secs: i64,
    /// The key layout.
    pub keys: Keys,
    /// Restart backoff cap.
    pub restart_cap: Duration,
    /// Running this long resets a launchable's restart backoff.
    pub restart_reset: Duration,
    /// Health probing.
    pub probe: ProbeConfig,
    /// cgroup use.
    pub cgroups: CgroupMode,
    /// Largest log file before rotation.
    pub log_bytes: u64,
    /// Largest artifact downloaded; a larger one fails its pod.
    pub artifact_max_bytes: u64,
    /// Longest an artifact download may take.
    pub artifact_timeout: Duration,
    /// PEM files of certificate authorities trusted for `https://`
    /// artifacts besides the system's (private artifact servers).
    pub artifact_ca_files: Vec<PathBuf>,
}

impl AgentConfig {
    /// Defaults for `node` with its data in `data_dir`.
    pub fn new(node: NodeId, data_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node,
            data_dir: data_dir.into(),
            labels: BTreeMap::new(),
            capacity: None,
            address: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            lease_ttl_secs: DEFAULT_LEASE_TTL_SECS,
            keys: Keys::default(),
            restart_cap: DEFAULT_RESTART_CAP,
            restart_reset: DEFAULT_RESTART_RESET,
            probe: ProbeConfig::default(),
            cgroups: CgroupMode::default(),
            log_bytes: DEFAULT_LOG_BYTES,
            artifact_max_bytes: DEFAULT_ARTIFACT_MAX_BYTES,
            artifact_timeout: DEFAULT_ARTIFACT_TIMEOUT,
            artifact_ca_files: Vec::new(),
        }
    }

    /// Where downloaded artifacts are kept, by digest.
    pub fn artifact_cache(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    /// Where pod `pod`'s home is.
    pub fn pod_home(&self, pod: &drover_manifest::PodId) -> PathBuf {
        self.data_dir.join("pods").join(pod.as_str())
    }
}
