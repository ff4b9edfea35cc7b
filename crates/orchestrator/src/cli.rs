//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
// Drover's one duration grammar for flags and files (humantime; a bare
// number is seconds): `10s`, `500ms`, `1m30s`, `1h`, `10`.
use drover_manifest::units::parse_flag_duration;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Drover's pod orchestration control plane"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    pub(crate) log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax, e.g. `info,drover_store=debug`.
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub(crate) log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the control plane's gRPC API.
    Serve(ServeArgs),
    /// Ask a running orchestrator what it is (SystemService/GetInfo).
    Info(InfoArgs),
    /// Replication controllers: create, read, change and follow them
    /// (RcService).
    Rc(RcArgs),
    /// Run a node agent: turn this node's intent into supervised,
    /// health-checked processes and report reality.
    Agent(AgentArgs),
    /// Run many hollow node agents in this process (pods are pretend): for
    /// scale tests of the control plane.
    Hollow(HollowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct HollowArgs {
    /// How many hollow nodes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) nodes: u32,

    /// Their names: PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "hollow")]
    pub(crate) prefix: String,

    /// The store, through orchestrators or etcd members: comma-separated
    /// client URLs.
    #[arg(long, value_name = "URLS", value_delimiter = ',', num_args = 1.., required = true)]
    pub(crate) endpoints: Vec<String>,

    /// Where the hollow nodes keep their (pretend) pod homes.
    #[arg(long, value_name = "PATH", default_value = ".drover-hollow")]
    pub(crate) data_dir: PathBuf,

    /// TTL of each node's registration lease.
    #[arg(long, default_value = "10s", value_parser = parse_flag_duration)]
    pub(crate) lease_ttl: std::time::Duration,
}

impl HollowArgs {
    /// The same run as `orchestrator agent --node PREFIX --hollow N`.
    pub(crate) fn into_agent_args(self) -> Result<AgentArgs, String> {
        let node = self
            .prefix
            .parse()
            .map_err(|e| format!("--prefix {:?}: {e}", self.prefix))?;
        Ok(AgentArgs {
            config: None,
            node: Some(node),
            endpoints: self.endpoints,
            data_dir: Some(self.data_dir),
            labels: Vec::new(),
            address: None,
            lease_ttl: Some(self.lease_ttl),
            stop_pods_on_exit: false,
            no_cgroups: false,
            max_log_size: None,
            hollow: Some(self.nodes),
            hollow_launch_delay: None,
        })
    }
}

/// Every setting but `--config` can also be given in the config file; a flag
/// given here wins over the file (for `--labels`, label by label).
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// A YAML file of agent settings: the flags' names in snake_case
    /// (`lease_ttl: 10s`), and the tunables that have no flag (probe,
    /// restart_cap, restart_reset, capacity). See README.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The node this agent runs: its name in nodes/, intent/, reality/ and
    /// health/ (with --hollow, the prefix of the hollow nodes' names).
    /// Required here or in --config.
    #[arg(long)]
    pub(crate) node: Option<drover_ids::NodeId>,

    /// The store, through orchestrators (`orchestrator serve`) or etcd
    /// members alike: comma-separated client URLs. Required here or in
    /// --config.
    #[arg(long, value_name = "URLS", value_delimiter = ',', num_args = 1..)]
    pub(crate) endpoints: Vec<String>,

    /// Pod homes, logs and the agent's identity [default: .drover-agent].
    #[arg(long, value_name = "PATH")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Node labels applied to labels/node/NODE (labels set by others are
    /// kept): comma-separated name=value pairs.
    #[arg(long, value_name = "K=V,...", value_delimiter = ',', value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,

    /// The address recorded in the node record, for operators [default:
    /// the host name].
    #[arg(long)]
    pub(crate) address: Option<String>,

    /// TTL of the registration lease: a dead agent's node record and health
    /// vanish this long after its last keep-alive [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_flag_duration)]
    pub(crate) lease_ttl: Option<std::time::Duration>,

    /// Stop every pod when the agent exits (by default pods keep running and
    /// the next run of the agent on this data directory adopts them).
    #[arg(long)]
    pub(crate) stop_pods_on_exit: bool,

    /// Run launchables in process groups even when cgroup v2 is available.
    #[arg(long)]
    pub(crate) no_cgroups: bool,

    /// Size past which a launchable's log file is rotated (one previous file
    /// is kept) [default: 8M].
    #[arg(long, value_name = "SIZE", value_parser = drover_manifest::ByteSize::parse)]
    pub(crate) max_log_size: Option<drover_manifest::ByteSize>,

    /// Run N hollow nodes (NODE-0 to NODE-(N-1)) in this process instead of
    /// one real agent: they register and report their pods launched and
    /// passing but start nothing, for scale tests of the control plane.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) hollow: Option<u32>,

    /// With --hollow: how long a pretend pod takes to count as started (its
    /// health passes after it) [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = parse_flag_duration)]
    pub(crate) hollow_launch_delay: Option<std::time::Duration>,
}

/// `name=value`, checked with the label grammar.
fn parse_label(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not name=value"))?;
    check_label(name, value).map_err(|e| format!("label {text:?}: {e}"))?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The one label check of flags and the agent's config file.
pub(crate) fn check_label(name: &str, value: &str) -> Result<(), drover_labels::LabelError> {
    drover_labels::Labels::new().insert(name, value).map(drop)
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub(crate) listen: SocketAddr,

    #[command(flatten)]
    pub(crate) store: StoreArgs,

    #[command(flatten)]
    pub(crate) tls: ServeTlsArgs,

    #[command(flatten)]
    pub(crate) etcd_tls: EtcdTlsArgs,

    #[command(flatten)]
    pub(crate) farm: crate::farm::FarmArgs,

    /// Do not serve etcd's v3 API (KV, Watch, Lease, Maintenance, Cluster)
    /// next to orchestrator.v1 on the same port.
    #[arg(long)]
    pub(crate) no_etcd_api: bool,

    /// Address of the Prometheus `/metrics` endpoint (plain HTTP: keep it on
    /// loopback or a trusted network), or `off`.
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:7401")]
    pub(crate) metrics_listen: crate::metrics::MetricsListen,

    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_flag_duration)]
    pub(crate) shutdown_grace: std::time::Duration,
}

/// Exactly one store; the embedded store in `.drover-data` (in the working directory) by default.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub(crate) struct StoreArgs {
    /// Embedded store, durable in this directory [default: .drover-data].
    #[arg(long, value_name = "PATH")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Embedded store in memory only: nothing survives a restart.
    #[arg(long)]
    pub(crate) memory: bool,

    /// An etcd cluster: comma-separated client URLs.
    #[arg(long, value_name = "URLS", value_delimiter = ',', num_args = 1..)]
    pub(crate) etcd_endpoints: Option<Vec<String>>,
}

/// TLS for everything served on the port.
#[derive(Debug, Args)]
pub(crate) struct ServeTlsArgs {
    /// Serve TLS with this certificate (chain), PEM.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, PEM.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (mutual TLS), PEM. The
    /// certificate's subject is the caller's identity.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,

    /// Serve plaintext on a non-loopback address. Whoever reaches the port
    /// controls what runs on every node, so this is refused without the flag.
    #[arg(long, conflicts_with = "tls_cert")]
    pub(crate) insecure: bool,
}

/// TLS to the etcd cluster of --etcd-endpoints (as etcdctl's flags).
#[derive(Debug, Args)]
pub(crate) struct EtcdTlsArgs {
    /// Verify etcd's certificates with this CA, PEM; implies TLS.
    #[arg(long, value_name = "PATH", requires = "etcd_endpoints")]
    pub(crate) etcd_cacert: Option<PathBuf>,

    /// Client certificate for etcd, PEM.
    #[arg(long, value_name = "PATH", requires_all = ["etcd_key", "etcd_cacert"])]
    pub(crate) etcd_cert: Option<PathBuf>,

    /// Private key of --etcd-cert, PEM.
    #[arg(long, value_name = "PATH", requires = "etcd_cert")]
    pub(crate) etcd_key: Option<PathBuf>,
}

/// The store chosen on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreChoice {
    Memory,
    DataDir(PathBuf),
    Etcd(Vec<String>),
}

/// The embedded store's default data directory, relative to the working
/// directory. `cargo xtask run`, README and .gitignore use the same name.
pub(crate) const DEFAULT_DATA_DIR: &str = ".drover-data";

impl StoreArgs {
    pub(crate) fn choice(&self) -> anyhow::Result<StoreChoice> {
        if self.memory {
            return Ok(StoreChoice::Memory);
        }
        if let Some(endpoints) = &self.etcd_endpoints {
            let endpoints: Vec<String> = endpoints
                .iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
            if endpoints.is_empty() {
                anyhow::bail!("--etcd-endpoints needs at least one URL");
            }
            return Ok(StoreChoice::Etcd(endpoints));
        }
        Ok(StoreChoice::DataDir(
            self.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        ))
    }
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// How a client command reaches an orchestrator: its address and TLS.
/// Global, so they may come before or after a subcommand
/// (`orchestrator rc --endpoint X list` or `orchestrator rc list --endpoint X`).
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// The orchestrator's gRPC address: `host:port`, `http://...`, or
    /// `https://...` (the default scheme is https with --cacert, else http).
    #[arg(
        long = "endpoint",
        visible_alias = "server",
        value_name = "ADDR",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub(crate) server: String,

    /// Verify the server's certificate with this CA, PEM; implies TLS.
    #[arg(long, value_name = "PATH", global = true)]
    pub(crate) cacert: Option<PathBuf>,

    /// Client certificate, for a server that requires one (mutual TLS), PEM.
    #[arg(long, value_name = "PATH", requires_all = ["key", "cacert"], global = true)]
    pub(crate) cert: Option<PathBuf>,

    /// Private key of --cert, PEM.
    #[arg(long, value_name = "PATH", requires = "cert", global = true)]
    pub(crate) key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RcArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,

    /// Output: readable tables, or JSON or YAML for programs.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub(crate) output: OutputFormat,

    #[command(subcommand)]
    pub(crate) command: RcCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Tables and sentences for people.
    Table,
    /// JSON (one object per line for `watch`).
    Json,
    /// YAML (one document per event for `watch`).
    Yaml,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RcCommand {
    /// Create an RC from the YAML an operator writes (see README).
    Create {
        /// The RC's YAML file; `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show one RC: its record, revision and status.
    Get {
        /// The RC's id.
        id: String,
    },
    /// List RCs with their status.
    List {
        /// Only the RCs whose labels match this selector, e.g.
        /// `team=storefront,tier in (web,api)`.
        #[arg(
            short = 'l',
            long = "selector",
            value_name = "SELECTOR",
            default_value = ""
        )]
        selector: String,
    },
    /// Replace an RC's definition with a YAML file (the id in the file
    /// names the RC; its replicas_desired and disabled apply too).
    Update {
        /// The RC's YAML file; `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Update only if the RC is still at this revision (as `rc get`
        /// showed it).
        #[arg(long, value_name = "R", value_parser = clap::value_parser!(i64).range(1..))]
        revision: Option<i64>,
    },
    /// Set an RC's replica count.
    Scale {
        /// The RC's id.
        id: String,
        /// The new replica count.
        replicas: u32,
    },
    /// Enable an RC: its farm manages its pods again.
    Enable {
        /// The RC's id.
        id: String,
    },
    /// Disable an RC: its farm leaves its pods alone.
    Disable {
        /// The RC's id.
        id: String,
    },
    /// Delete an RC: its farm unschedules its pods, then removes it.
    Delete {
        /// The RC's id.
        id: String,
        /// Delete it even with replicas desired (scales it to 0 first).
        #[arg(long)]
        force: bool,
    },
    /// Move replicas from one RC to another in one write.
    Transfer {
        /// The RC that gives replicas.
        from: String,
        /// The RC that receives them.
        to: String,
        /// How many.
        count: u32,
    },
    /// Show the audit trail (who changed what), oldest first.
    Audit {
        /// Only the records about this RC.
        id: Option<String>,
        /// How many of the newest records (the server caps it at 1000)
        /// [default: 100].
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Print a line per status change (first the current statuses) until
    /// Ctrl-C.
    Watch {
        /// Only this RC.
        id: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use drover_manifest::units::parse_flag_duration as parse_duration;

    fn rc(args: &[&str]) -> Result<RcArgs, clap::Error> {
        let mut argv = vec!["orchestrator", "rc"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Rc(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn rc_client_flags_go_before_or_after_the_subcommand() {
        let before = rc(&["--endpoint", "10.0.0.1:7400", "-o", "json", "list"]).unwrap();
        let after = rc(&["list", "--endpoint", "10.0.0.1:7400", "-o", "json"]).unwrap();
        for args in [before, after] {
            assert_eq!(args.client.server, "10.0.0.1:7400");
            assert_eq!(args.output, OutputFormat::Json);
            assert!(
                matches!(args.command, RcCommand::List { ref selector } if selector.is_empty())
            );
        }
        // `--server`, as `orchestrator info` has always called it.
        let info = match Cli::try_parse_from(["orchestrator", "info", "--server", "h:1"])
            .unwrap()
            .command
        {
            Command::Info(args) => args,
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(info.client.server, "h:1");
        let default = rc(&["get", "web"]).unwrap();
        assert_eq!(default.client.server, "127.0.0.1:7400");
        assert_eq!(default.output, OutputFormat::Table);
    }

    #[test]
    fn rc_subcommands_parse_their_arguments() {
        assert!(matches!(
            rc(&["create", "-f", "-"]).unwrap().command,
            RcCommand::Create { file } if file.as_os_str() == "-"
        ));
        assert!(matches!(
            rc(&["update", "--file", "rc.yaml", "--revision", "12"])
                .unwrap()
                .command,
            RcCommand::Update {
                revision: Some(12),
                ..
            }
        ));
        assert!(matches!(
            rc(&["scale", "web", "5"]).unwrap().command,
            RcCommand::Scale { ref id, replicas: 5 } if id == "web"
        ));
        assert!(matches!(
            rc(&["delete", "web", "--force"]).unwrap().command,
            RcCommand::Delete { force: true, .. }
        ));
        assert!(matches!(
            rc(&["transfer", "old", "new", "2"]).unwrap().command,
            RcCommand::Transfer { count: 2, .. }
        ));
        assert!(matches!(
            rc(&["audit", "--limit", "5"]).unwrap().command,
            RcCommand::Audit {
                id: None,
                limit: Some(5)
            }
        ));
        assert!(matches!(
            rc(&["list", "-l", "team=a"]).unwrap().command,
            RcCommand::List { ref selector } if selector == "team=a"
        ));
        assert!(matches!(
            rc(&["watch"]).unwrap().command,
            RcCommand::Watch { id: None }
        ));
        for bad in [
            &["scale", "web", "-1"][..],
            &["scale", "web"][..],
            &["create"][..],
            &["get", "web", "-o", "xml"][..],
            &["transfer", "a", "b"][..],
        ] {
            assert!(rc(bad).is_err(), "{bad:?}");
        }
    }

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["orchestrator", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => args,
            other => panic!("parsed {other:?}"),
        })
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn store_defaults_to_the_data_dir() {
        let args = serve(&[]).unwrap();
        assert_eq!(
            args.store.choice().unwrap(),
            StoreChoice::DataDir(PathBuf::from(DEFAULT_DATA_DIR))
        );
        assert_eq!(args.listen, "127.0.0.1:7400".parse().unwrap());
        assert!(!args.no_etcd_api, "the etcd API is served by default");
        assert!(serve(&["--no-etcd-api"]).unwrap().no_etcd_api);
    }

    #[test]
    fn shutdown_grace_reads_the_manifest_duration_grammar() {
        assert_eq!(
            serve(&["--shutdown-grace", "1m30s"])
                .unwrap()
                .shutdown_grace,
            std::time::Duration::from_secs(90)
        );
        assert_eq!(
            serve(&[]).unwrap().shutdown_grace,
            std::time::Duration::from_secs(10)
        );
        let err = serve(&["--shutdown-grace", "soon"]).unwrap_err();
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_can_be_off() {
        let default = serve(&[]).unwrap().metrics_listen;
        assert_eq!(default.0, Some("127.0.0.1:7401".parse().unwrap()));
        let off = serve(&["--metrics-listen", "off"]).unwrap().metrics_listen;
        assert_eq!(off.0, None);
        let err = serve(&["--metrics-listen", "nowhere"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn each_store_flag_selects_its_store() {
        assert_eq!(
            serve(&["--memory"]).unwrap().store.choice().unwrap(),
            StoreChoice::Memory
        );
        assert_eq!(
            serve(&["--data-dir", "/tmp/x"])
                .unwrap()
                .store
                .choice()
                .unwrap(),
            StoreChoice::DataDir("/tmp/x".into())
        );
        assert_eq!(
            serve(&["--etcd-endpoints", "http://a:1,http://b:2"])
                .unwrap()
                .store
                .choice()
                .unwrap(),
            StoreChoice::Etcd(vec!["http://a:1".into(), "http://b:2".into()])
        );
    }

    #[test]
    fn store_flags_are_mutually_exclusive() {
        for args in [
            &["--memory", "--data-dir", "x"][..],
            &["--memory", "--etcd-endpoints", "http://a:1"][..],
            &["--data-dir", "x", "--etcd-endpoints", "http://a:1"][..],
        ] {
            let err = serve(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
    }

    #[test]
    fn empty_etcd_endpoints_are_rejected() {
        let err = serve(&["--etcd-endpoints", ","])
            .unwrap()
            .store
            .choice()
            .unwrap_err();
        assert!(err.to_string().contains("--etcd-endpoints"), "{err}");
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(
            parse_duration("10s"),
            Ok(std::time::Duration::from_secs(10))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert_eq!(parse_duration("7"), Ok(std::time::Duration::from_secs(7)));
        assert!(parse_duration("ten").is_err());
        assert_eq!(
            parse_duration("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        // One grammar with manifests (humantime): days are a unit now, and
        // units combine.
        assert_eq!(
            parse_duration("5d"),
            Ok(std::time::Duration::from_secs(5 * 86_400))
        );
        assert_eq!(
            parse_duration("1m30s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration(&format!("{}m", u64::MAX / 2)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn durations_round_trip(n in 0u64..1_000_000, unit in 0usize..4) {
            let (text, expected) = match unit {
                0 => (format!("{n}ms"), std::time::Duration::from_millis(n)),
                1 => (format!("{n}s"), std::time::Duration::from_secs(n)),
                2 => (format!("{n}m"), std::time::Duration::from_secs(n * 60)),
                _ => (format!("{n}h"), std::time::Duration::from_secs(n * 3600)),
            };
            proptest::prop_assert_eq!(parse_duration(&text), Ok(expected));
        }

        /// Any text is either a duration or an error naming the input; never a panic.
        #[test]
        fn garbage_never_panics(text in "\\PC{0,12}") {
            if let Err(message) = parse_duration(&text) {
                let quoted = format!("{:?}", text.trim());
                proptest::prop_assert!(message.contains(&quoted), "{} lacks {}", message, quoted);
            }
        }
    }
}
