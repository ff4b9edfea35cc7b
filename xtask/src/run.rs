//! `cargo xtask run`: the whole system on one machine. `orchestrator serve`
//! on the embedded store (data in `.drover-data/`), three local node agents
//! as separate processes, and the example RC (`examples/hello`, a small
//! HTTP service) kept at three healthy replicas; then what to try next, and
//! everything runs until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::{self, header};
use crate::daemon::Daemon;
use crate::{orchestrator, signals};

/// How long the server may take to listen, and the example to converge.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Between checks while everything runs.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// Where the store, the agents' data and the logs go (default:
    /// `.drover-data/` in the repo).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the store in memory only (nothing survives a restart).
    #[arg(long)]
    memory: bool,
    /// How many local agents (nodes `local-1`..; odd ones in zone a, even
    /// ones in zone b).
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Do not create the example RC.
    #[arg(long)]
    no_example: bool,
}

pub(crate) fn run(root: &Path, args: Args) -> Result<()> {
    header("run: tools");
    crate::provision::ensure(crate::provision::Needs {
        etcd: false,
        python: false,
    })?;

    header("run: build orchestrator");
    let binary = orchestrator::build(root, orchestrator::Profile::Dev)?;
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| root.join(".drover-data"));
    let logs = data.join("logs");

    header("run: orchestrator serve");
    let mut serve = Daemon::spawn("orchestrator", Some(&logs), |_| {
        let mut command = Command::new(&binary);
        command.args(serve_args(&data, &args));
        command
    })?;
    let addr = serve.wait_until("listening", START_TIMEOUT, |d| {
        orchestrator::listening_addr(&d.log())
    })?;
    let endpoint = format!("http://{addr}");
    println!(
        "orchestrator is listening at {endpoint} (log: {})",
        serve.dir().display()
    );

    header("run: agents");
    let mut agents = Vec::new();
    for (node, zone) in nodes(args.agents) {
        let agent = Daemon::spawn("agent", Some(&logs), |_| {
            let mut command = Command::new(&binary);
            command.args(agent_args(&endpoint, &node, zone, &data));
            command
        })?;
        println!(
            "agent {node} (zone {zone}) (log: {})",
            agent.dir().display()
        );
        agents.push(agent);
    }

    let cli = |rc_args: &[&str]| {
        let mut command = Command::new(&binary);
        command.args(["rc", "--endpoint", &endpoint]).args(rc_args);
        command
    };
    if !args.no_example {
        header("run: the example RC (examples/hello)");
        let rc_file = example_rc(root, &data)?;
        let exists = cli(&["get", "hello"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?
            .success();
        if !exists {
            cmd::run(&mut cli(&["create", "-f", &rc_file.display().to_string()]))?;
        }
        wait_healthy(&mut serve, &cli)?;
        cmd::run(&mut cli(&["get", "hello"]))?;
    }

    header("run: up");
    let bin = binary.display();
    // The CLI's default endpoint is the default listen address.
    let rc = if args.listen == "127.0.0.1:7400" {
        format!("{bin} rc")
    } else {
        format!("{bin} rc --endpoint {endpoint}")
    };
    println!(
        "Try:\n\
         \x20 {rc} list\n\
         \x20 {rc} scale hello 2          # and back: rc scale hello 3\n\
         \x20 {rc} watch hello            # status changes as they happen\n\
         \x20 {rc} audit hello            # who changed what\n\
         \x20 curl http://127.0.0.1:$(cat {agents}/local-1/pods/hello/port)/\n\
         \x20 etcdctl --endpoints {addr} get --prefix /drover/intent/ --keys-only\n\
         \x20 etcdctl --endpoints {addr} get /drover/status/rc/hello\n\
         Metrics: http://127.0.0.1:7401/metrics\n\
         (Ctrl-C stops the agents, their pods and the orchestrator)",
        agents = data.join("agents").display(),
    );
    loop {
        if signals::interrupted() {
            break;
        }
        if let Some(status) = serve.exited() {
            bail!(
                "the orchestrator exited ({status}); last lines of its log:\n{}",
                serve.log_tail(30)
            );
        }
        std::thread::sleep(POLL);
    }
    // Agents first (they stop their pods), then the server.
    drop(agents);
    drop(serve);
    println!("stopped");
    Ok(())
}

/// Nodes `local-1`.. with alternating zones a and b.
fn nodes(count: usize) -> Vec<(String, &'static str)> {
    (1..=count)
        .map(|i| (format!("local-{i}"), if i % 2 == 1 { "a" } else { "b" }))
        .collect()
}

fn serve_args(data: &Path, args: &Args) -> Vec<String> {
    let mut out: Vec<String> = [
        "serve",
        "--listen",
        &args.listen,
        "--log",
        "info",
        "--log-format",
        "plain",
    ]
    .map(String::from)
    .into();
    if args.memory {
        out.push("--memory".into());
    } else {
        out.push("--data-dir".into());
        out.push(data.join("store").display().to_string());
    }
    out
}

fn agent_args(endpoint: &str, node: &str, zone: &str, data: &Path) -> Vec<String> {
    [
        "agent",
        "--node",
        node,
        "--endpoints",
        endpoint,
        "--labels",
        &format!("zone={zone}"),
        "--stop-pods-on-exit",
        "--data-dir",
        &data.join("agents").join(node).display().to_string(),
        "--log",
        "info",
        "--log-format",
        "plain",
    ]
    .map(String::from)
    .into()
}

/// `examples/hello/rc.yaml` with the absolute path of `hello.py`, written
/// into the data directory.
fn example_rc(root: &Path, data: &Path) -> Result<PathBuf> {
    let dir = root.join("examples/hello");
    let template =
        std::fs::read_to_string(dir.join("rc.yaml")).context("reading examples/hello/rc.yaml")?;
    let script = dir.join("hello.py");
    let filled = template.replace("{{HELLO_PY}}", &script.display().to_string());
    let path = data.join("hello-rc.yaml");
    std::fs::create_dir_all(data)?;
    std::fs::write(&path, filled).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Polls `rc get hello -o json` until every desired replica is healthy.
fn wait_healthy(serve: &mut Daemon, cli: &dyn Fn(&[&str]) -> Command) -> Result<()> {
    let mut last = String::new();
    serve.wait_until("running the example RC healthy", START_TIMEOUT, |_| {
        let output = cli(&["-o", "json", "get", "hello"]).output().ok()?;
        let rc: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let desired = rc["spec"]["replicas_desired"].as_u64()?;
        let healthy = rc["status"]["healthy"].as_u64().unwrap_or(0);
        let progress = format!("hello: {healthy} of {desired} replicas healthy");
        if progress != last {
            println!("{progress}");
            last = progress;
        }
        (healthy >= desired).then_some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(memory: bool) -> Args {
        Args {
            listen: "127.0.0.1:7400".into(),
            data_dir: None,
            memory,
            agents: 3,
            no_example: false,
        }
    }

    #[test]
    fn serve_keeps_its_store_under_the_data_dir_unless_in_memory() {
        let durable = serve_args(Path::new("/repo/.drover-data"), &args(false));
        assert_eq!(durable[..3], ["serve", "--listen", "127.0.0.1:7400"]);
        assert!(durable.ends_with(&["--data-dir".into(), "/repo/.drover-data/store".into()]));
        let memory = serve_args(Path::new("/repo/.drover-data"), &args(true));
        assert!(memory.contains(&"--memory".to_string()));
        assert!(!memory.contains(&"--data-dir".to_string()));
    }

    #[test]
    fn agents_get_their_own_data_and_zones() {
        assert_eq!(
            nodes(3),
            [
                ("local-1".into(), "a"),
                ("local-2".into(), "b"),
                ("local-3".into(), "a")
            ]
        );
        let agent = agent_args("http://127.0.0.1:7400", "local-2", "b", Path::new("/d"));
        let after = |flag: &str| agent[agent.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("--node"), "local-2");
        assert_eq!(after("--labels"), "zone=b");
        assert_eq!(after("--data-dir"), "/d/agents/local-2");
        assert!(agent.contains(&"--stop-pods-on-exit".to_string()));
    }

    #[test]
    fn the_example_rc_gets_the_scripts_absolute_path() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data = tempfile::tempdir().unwrap();
        let path = example_rc(&root, data.path()).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains("{{HELLO_PY}}"));
        assert!(text.contains(&root.join("examples/hello/hello.py").display().to_string()));
    }
}
