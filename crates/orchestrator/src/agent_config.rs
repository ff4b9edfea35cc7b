//! `orchestrator agent --config FILE`: the agent's settings in YAML, merged
//! with its flags (a flag given on the command line wins).
//!
//! ```yaml
//! node: edge-1
//! endpoints: [http://127.0.0.1:7400]
//! data_dir: /var/lib/drover-agent
//! labels: { zone: a, tier: web }
//! lease_ttl: 10s
//! max_log_size: 8M
//! cgroups: auto            # or off
//! probe: { period: 1s, timeout: 1s, failure_threshold: 3, success_threshold: 1 }
//! restart_cap: 5m
//! restart_reset: 10m
//! capacity: { cpus: 2, memory: 4G }
//! artifacts: { max_size: 4G, timeout: 10m, ca_files: [/etc/drover/artifacts-ca.pem] }
//! ```
//!
//! Values are read with the flags' own parsers (durations, sizes, labels,
//! node names), so a file and a flag accept exactly the same spellings.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use drover_agent::{AgentConfig, Capacity, CgroupMode};
use drover_ids::NodeId;
use drover_manifest::units::parse_flag_duration;
use drover_manifest::{ByteSize, Cpus};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::cli::{AgentArgs, check_label};

/// Where pod homes go when neither a flag nor the file says.
const DEFAULT_DATA_DIR: &str = ".drover-agent";

/// The config file as written. Every key is optional; unknown keys are
/// refused. Values are kept as text and parsed by [`AgentFile::parse`], so
/// that a bad one is reported with its key (serde's errors from inside a
/// value lose it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Option<String>,
    endpoints: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    address: Option<String>,
    lease_ttl: Option<Text>,
    stop_pods_on_exit: Option<bool>,
    cgroups: Option<Cgroups>,
    max_log_size: Option<Text>,
    hollow: Option<NonZeroU32>,
    hollow_launch_delay: Option<Text>,
    #[serde(default)]
    probe: RawProbe,
    restart_cap: Option<Text>,
    restart_reset: Option<Text>,
    #[serde(default)]
    capacity: RawCapacity,
    #[serde(default)]
    artifacts: RawArtifacts,
}

/// Artifact downloads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifacts {
    max_size: Option<Text>,
    timeout: Option<Text>,
    #[serde(default)]
    ca_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Cgroups {
    Auto,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    period: Option<Text>,
    timeout: Option<Text>,
    failure_threshold: Option<NonZeroU32>,
    success_threshold: Option<NonZeroU32>,
}

/// What the node offers to pods, instead of what the machine has.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    cpus: Option<Text>,
    memory: Option<Text>,
}

/// The config file's settings, each checked with its flag's parser.
#[derive(Debug, Default)]
pub(crate) struct AgentFile {
    node: Option<NodeId>,
    endpoints: Option<Vec<String>>,
    data_dir: Option<PathBuf>,
    labels: BTreeMap<String, String>,
    address: Option<String>,
    lease_ttl: Option<Duration>,
    stop_pods_on_exit: Option<bool>,
    cgroups: Option<Cgroups>,
    max_log_size: Option<ByteSize>,
    hollow: Option<NonZeroU32>,
    hollow_launch_delay: Option<Duration>,
    probe_period: Option<Duration>,
    probe_timeout: Option<Duration>,
    failure_threshold: Option<NonZeroU32>,
    success_threshold: Option<NonZeroU32>,
    restart_cap: Option<Duration>,
    restart_reset: Option<Duration>,
    cpus: Option<Cpus>,
    memory: Option<ByteSize>,
    artifact_max_size: Option<ByteSize>,
    artifact_timeout: Option<Duration>,
    artifact_ca_files: Vec<PathBuf>,
}

/// Everything `orchestrator agent` runs with, flags and file merged.
#[derive(Debug)]
pub(crate) struct AgentSettings {
    pub(crate) endpoints: Vec<String>,
    pub(crate) config: AgentConfig,
    pub(crate) stop_pods_on_exit: bool,
    /// Hollow nodes to run instead of one real agent.
    pub(crate) hollow: Option<u32>,
    /// How long a hollow node's pretend pod takes to count as started.
    pub(crate) hollow_launch_delay: Duration,
}

impl AgentFile {
    /// Reads and parses `path`; errors name the file, and the key of a bad
    /// setting.
    pub(crate) fn load(path: &Path) -> anyhow::Result<AgentFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the agent config file {}", path.display()))?;
        AgentFile::parse(&text)
            .map_err(|e| anyhow::anyhow!("agent config file {}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<AgentFile, String> {
        // An empty file is a document with no settings, not an error.
        let raw: RawFile = if text.trim().is_empty() {
            RawFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        let node = match raw.node {
            Some(node) => Some(node.parse().map_err(|e| format!("node: {e}"))?),
            None => None,
        };
        for (name, value) in &raw.labels {
            check_label(name, value).map_err(|e| format!("labels: {name}={value:?}: {e}"))?;
        }
        let probe_period = Text::parse(&raw.probe.period, "probe.period", parse_flag_duration)?;
        if probe_period.is_some_and(|p| p.is_zero()) {
            return Err("probe.period: must be more than 0".into());
        }
        Ok(AgentFile {
            node,
            endpoints: raw.endpoints,
            data_dir: raw.data_dir,
            labels: raw.labels,
            address: raw.address,
            lease_ttl: Text::parse(&raw.lease_ttl, "lease_ttl", parse_flag_duration)?,
            stop_pods_on_exit: raw.stop_pods_on_exit,
            cgroups: raw.cgroups,
            max_log_size: Text::parse(&raw.max_log_size, "max_log_size", ByteSize::parse)?,
            hollow: raw.hollow,
            hollow_launch_delay: Text::parse(
                &raw.hollow_launch_delay,
                "hollow_launch_delay",
                parse_flag_duration,
            )?,
            probe_period,
            probe_timeout: Text::parse(&raw.probe.timeout, "probe.timeout", parse_flag_duration)?,
            failure_threshold: raw.probe.failure_threshold,
            success_threshold: raw.probe.success_threshold,
            restart_cap: Text::parse(&raw.restart_cap, "restart_cap", parse_flag_duration)?,
            restart_reset: Text::parse(&raw.restart_reset, "restart_reset", parse_flag_duration)?,
            cpus: Text::parse(&raw.capacity.cpus, "capacity.cpus", Cpus::parse)?,
            memory: Text::parse(&raw.capacity.memory, "capacity.memory", ByteSize::parse)?,
            artifact_max_size: Text::parse(
                &raw.artifacts.max_size,
                "artifacts.max_size",
                ByteSize::parse,
            )?,
            artifact_timeout: Text::parse(
                &raw.artifacts.timeout,
                "artifacts.timeout",
                parse_flag_duration,
            )?,
            artifact_ca_files: raw.artifacts.ca_files,
        })
    }
}

impl AgentSettings {
    /// The settings of `args`, with `--config`'s file under them.
    pub(crate) fn resolve(args: AgentArgs) -> anyhow::Result<AgentSettings> {
        let file = match &args.config {
            Some(path) => AgentFile::load(path)?,
            None => AgentFile::default(),
        };
        AgentSettings::merge(args, file)
    }

    fn merge(args: AgentArgs, file: AgentFile) -> anyhow::Result<AgentSettings> {
        let node = args
            .node
            .or(file.node)
            .context("no node name: pass --node NAME or set `node:` in the --config file")?;
        let endpoints: Vec<String> = if args.endpoints.is_empty() {
            file.endpoints.unwrap_or_default()
        } else {
            args.endpoints
        }
        .into_iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
        if endpoints.is_empty() {
            anyhow::bail!(
                "no store endpoints: pass --endpoints URLS or set `endpoints:` in the --config file"
            );
        }
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let mut config = AgentConfig::new(node, data_dir);
        // The file's labels, then the flags' over them.
        config.labels = file.labels;
        config.labels.extend(args.labels);
        if let Some(address) = args.address.or(file.address) {
            config.address = address;
        }
        if let Some(ttl) = args.lease_ttl.or(file.lease_ttl) {
            config.lease_ttl_secs = ttl.as_secs().max(1) as i64;
        }
        if let Some(size) = args.max_log_size.or(file.max_log_size) {
            config.log_bytes = size.as_u64();
        }
        if args.no_cgroups || file.cgroups == Some(Cgroups::Off) {
            config.cgroups = CgroupMode::Off;
        }
        let p = &mut config.probe;
        p.period = file.probe_period.unwrap_or(p.period);
        p.timeout = file.probe_timeout.unwrap_or(p.timeout);
        p.failure_threshold = file
            .failure_threshold
            .map_or(p.failure_threshold, NonZeroU32::get);
        p.success_threshold = file
            .success_threshold
            .map_or(p.success_threshold, NonZeroU32::get);
        config.restart_cap = file.restart_cap.unwrap_or(config.restart_cap);
        config.restart_reset = file.restart_reset.unwrap_or(config.restart_reset);
        if let Some(size) = file.artifact_max_size {
            config.artifact_max_bytes = size.as_u64();
        }
        config.artifact_timeout = file.artifact_timeout.unwrap_or(config.artifact_timeout);
        config.artifact_ca_files = file.artifact_ca_files;
        if file.cpus.is_some() || file.memory.is_some() {
            // Whatever the file leaves out is what the machine has.
            let detected = drover_agent::config::detect_capacity();
            config.capacity = Some(Capacity {
                millicpus: file
                    .cpus
                    .map_or(detected.millicpus, |c| u64::from(c.millis())),
                memory_bytes: file.memory.map_or(detected.memory_bytes, ByteSize::as_u64),
            });
        }
        let hollow = args.hollow.or(file.hollow.map(NonZeroU32::get));
        let hollow_launch_delay = args.hollow_launch_delay.or(file.hollow_launch_delay);
        if hollow.is_none() && hollow_launch_delay.is_some() {
            anyhow::bail!(
                "a hollow launch delay is for hollow nodes: pass --hollow N or set `hollow:` in the --config file"
            );
        }
        Ok(AgentSettings {
            endpoints,
            config,
            stop_pods_on_exit: args.stop_pods_on_exit || file.stop_pods_on_exit == Some(true),
            hollow,
            hollow_launch_delay: hollow_launch_delay.unwrap_or_default(),
        })
    }
}

/// A scalar setting's text: `lease_ttl: 10` (a YAML integer) reads as the
/// flag `--lease-ttl 10` does.
#[derive(Debug)]
struct Text(String);

impl Text {
    /// Parses the setting `key`, if given, with its flag's parser.
    fn parse<T>(
        text: &Option<Text>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        text.as_ref()
            .map(|Text(text)| parse(text).map_err(|e| format!("{key}: {e}")))
            .transpose()
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        d.deserialize_any(TextVisitor).map(Text)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string, e.g. 10s, 8M or 0.5")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    fn args(flags: &[&str]) -> AgentArgs {
        let mut argv = vec!["orchestrator", "agent"];
        argv.extend_from_slice(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Agent(args) => args,
            other => panic!("parsed {other:?}"),
        }
    }

    fn merged(flags: &[&str], yaml: &str) -> anyhow::Result<AgentSettings> {
        AgentSettings::merge(
            args(flags),
            AgentFile::parse(yaml).map_err(anyhow::Error::msg)?,
        )
    }

    fn file_error(yaml: &str) -> String {
        AgentFile::parse(yaml).unwrap_err()
    }

    const FULL: &str = "
node: edge-1
endpoints: [http://a:7400, http://b:7400]
data_dir: /var/lib/drover
labels: { zone: a, tier: web }
address: 10.0.0.7
lease_ttl: 20s
stop_pods_on_exit: true
cgroups: off
max_log_size: 16M
probe: { period: 2s, timeout: 500ms, failure_threshold: 5, success_threshold: 2 }
restart_cap: 1m
restart_reset: 2m
capacity: { cpus: 1.5, memory: 2G }
artifacts: { max_size: 1G, timeout: 2m, ca_files: [/etc/ca.pem] }
";

    #[test]
    fn the_file_alone_gives_every_setting() {
        let s = merged(&[], FULL).unwrap();
        let c = &s.config;
        assert_eq!(c.node.as_str(), "edge-1");
        assert_eq!(s.endpoints, ["http://a:7400", "http://b:7400"]);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/drover"));
        assert_eq!(
            c.labels,
            BTreeMap::from([("tier".into(), "web".into()), ("zone".into(), "a".into())])
        );
        assert_eq!(c.address, "10.0.0.7");
        assert_eq!(c.lease_ttl_secs, 20);
        assert!(s.stop_pods_on_exit);
        assert_eq!(c.cgroups, CgroupMode::Off);
        assert_eq!(c.log_bytes, 16 << 20);
        assert_eq!(c.probe.period, Duration::from_secs(2));
        assert_eq!(c.probe.timeout, Duration::from_millis(500));
        assert_eq!(c.probe.failure_threshold, 5);
        assert_eq!(c.probe.success_threshold, 2);
        assert_eq!(c.restart_cap, Duration::from_secs(60));
        assert_eq!(c.restart_reset, Duration::from_secs(120));
        assert_eq!(
            c.capacity,
            Some(Capacity {
                millicpus: 1500,
                memory_bytes: 2 << 30
            })
        );
        assert_eq!(s.hollow, None);
        assert_eq!(c.artifact_max_bytes, 1 << 30);
        assert_eq!(c.artifact_timeout, Duration::from_secs(120));
        assert_eq!(c.artifact_ca_files, [PathBuf::from("/etc/ca.pem")]);
    }

    #[test]
    fn flags_override_the_file() {
        let s = merged(
            &[
                "--node",
                "edge-2",
                "--endpoints",
                "http://c:1",
                "--data-dir",
                "/tmp/d",
                "--labels",
                "zone=b,rack=r1",
                "--address",
                "host",
                "--lease-ttl",
                "5",
                "--max-log-size",
                "1M",
            ],
            FULL,
        )
        .unwrap();
        let c = &s.config;
        assert_eq!(c.node.as_str(), "edge-2");
        assert_eq!(s.endpoints, ["http://c:1"]);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        // Label by label: the flag's zone wins, the file's tier stays.
        assert_eq!(
            c.labels,
            BTreeMap::from([
                ("rack".into(), "r1".into()),
                ("tier".into(), "web".into()),
                ("zone".into(), "b".into()),
            ])
        );
        assert_eq!(c.address, "host");
        assert_eq!(c.lease_ttl_secs, 5);
        assert_eq!(c.log_bytes, 1 << 20);
        // Untouched by flags: still the file's.
        assert_eq!(c.probe.failure_threshold, 5);
    }

    #[test]
    fn defaults_apply_when_neither_says() {
        let s = merged(&["--node", "n1", "--endpoints", "http://a:1"], "").unwrap();
        let defaults = AgentConfig::new("n1".parse().unwrap(), DEFAULT_DATA_DIR);
        let c = &s.config;
        assert_eq!(c.data_dir, defaults.data_dir);
        assert_eq!(c.lease_ttl_secs, defaults.lease_ttl_secs);
        assert_eq!(c.log_bytes, defaults.log_bytes);
        assert_eq!(c.probe, defaults.probe);
        assert_eq!(c.restart_cap, defaults.restart_cap);
        assert_eq!(c.restart_reset, defaults.restart_reset);
        assert_eq!(c.cgroups, CgroupMode::Auto);
        assert_eq!(c.capacity, None);
        assert!(!s.stop_pods_on_exit);
        assert_eq!(s.hollow, None);
        assert!(
            merged(&["--no-cgroups"], "node: n\nendpoints: [u]")
                .unwrap()
                .config
                .cgroups
                == CgroupMode::Off
        );
    }

    #[test]
    fn a_missing_node_or_endpoint_is_named() {
        let err = merged(&["--endpoints", "http://a:1"], "").unwrap_err();
        assert!(err.to_string().contains("--node"), "{err}");
        assert!(err.to_string().contains("`node:`"), "{err}");
        let err = merged(&[], "node: n1\nendpoints: [' ']").unwrap_err();
        assert!(err.to_string().contains("--endpoints"), "{err}");
        assert!(err.to_string().contains("`endpoints:`"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_named_with_the_accepted_ones() {
        let err = file_error("node: n1\nlease_tll: 10s\n");
        assert!(err.contains("lease_tll"), "{err}");
        assert!(
            err.contains("lease_ttl") && err.contains("endpoints"),
            "{err}"
        );
        let err = file_error("probe: { perod: 1s }\n");
        assert!(err.contains("perod") && err.contains("period"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key_and_what_is_wrong() {
        for (yaml, key, why) in [
            ("lease_ttl: soon", "lease_ttl", "\"soon\""),
            ("max_log_size: 12x", "max_log_size", "unknown unit"),
            ("node: N_1", "node", "N_1"),
            ("labels: { 'bad key': v }", "labels", "bad key"),
            ("probe: { period: 0s }", "probe.period", "more than 0"),
            ("capacity: { memory: lots }", "capacity.memory", "lots"),
            (
                "artifacts: { max_size: huge }",
                "artifacts.max_size",
                "huge",
            ),
            (
                "artifacts: { timeout: later }",
                "artifacts.timeout",
                "later",
            ),
            ("artifacts: { ca_file: x }", "ca_file", "ca_files"),
            ("cgroups: sometimes", "cgroups", "sometimes"),
            (
                "probe: { failure_threshold: 0 }",
                "failure_threshold",
                "nonzero",
            ),
            (
                "probe: { timeout: [1] }",
                "probe.timeout",
                "a number or a string",
            ),
            ("capacity: { cpus: -1 }", "capacity.cpus", "-1"),
            ("hollow: 0", "hollow", "nonzero"),
            ("stop_pods_on_exit: maybe", "stop_pods_on_exit", "maybe"),
        ] {
            let err = file_error(yaml);
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(err.contains(why), "{yaml}: {err}");
        }
    }

    #[test]
    fn a_bare_number_of_seconds_reads_as_the_flag_does() {
        let s = merged(
            &[],
            "node: n\nendpoints: [u]\nlease_ttl: 7\nrestart_cap: 90",
        )
        .unwrap();
        assert_eq!(s.config.lease_ttl_secs, 7);
        assert_eq!(s.config.restart_cap, Duration::from_secs(90));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.yaml");
        let err = AgentFile::load(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
        std::fs::write(&path, "node: [").unwrap();
        let err = AgentFile::load(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
    }

    #[test]
    fn hollow_comes_from_the_flag_or_the_file() {
        assert_eq!(merged(&["--hollow", "3"], FULL).unwrap().hollow, Some(3));
        assert_eq!(
            merged(&[], &format!("{FULL}hollow: 4\n")).unwrap().hollow,
            Some(4)
        );
        let err = Cli::try_parse_from(["orchestrator", "agent", "--hollow", "0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn the_hollow_launch_delay_comes_with_hollow_nodes() {
        let s = merged(&["--hollow", "3", "--hollow-launch-delay", "2s"], FULL).unwrap();
        assert_eq!(s.hollow_launch_delay, Duration::from_secs(2));
        let s = merged(
            &[],
            &format!("{FULL}hollow: 4\nhollow_launch_delay: 500ms\n"),
        )
        .unwrap();
        assert_eq!(s.hollow_launch_delay, Duration::from_millis(500));
        assert_eq!(
            merged(&["--hollow", "3"], FULL)
                .unwrap()
                .hollow_launch_delay,
            Duration::ZERO
        );
        let err = merged(&["--hollow-launch-delay", "2s"], FULL).unwrap_err();
        assert!(err.to_string().contains("--hollow"), "{err}");
        let err = AgentFile::parse("hollow_launch_delay: later").unwrap_err();
        assert!(
            err.contains("hollow_launch_delay") && err.contains("later"),
            "{err}"
        );
    }

    #[test]
    fn orchestrator_hollow_is_agent_hollow() {
        let Command::Hollow(args) = Cli::try_parse_from([
            "orchestrator",
            "hollow",
            "--nodes",
            "5",
            "--prefix",
            "sim",
            "--endpoints",
            "http://a:1",
        ])
        .unwrap()
        .command
        else {
            panic!("not hollow")
        };
        let s =
            AgentSettings::merge(args.into_agent_args().unwrap(), AgentFile::default()).unwrap();
        assert_eq!(s.hollow, Some(5));
        assert_eq!(s.config.node.as_str(), "sim");
        assert_eq!(s.config.data_dir, PathBuf::from(".drover-hollow"));
    }
}
