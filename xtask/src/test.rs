//! `cargo xtask test`: the one command that runs every test.
//!
//! 1. provision tools (protoc, etcd, etcdctl, a Python with grpcio);
//! 2. start a throwaway etcd on free loopback ports;
//! 3. run `cargo nextest run --workspace --no-fail-fast` and the doctests
//!    (nextest skips doctests) with `DROVER_ETCD_ENDPOINTS` and
//!    `DROVER_REQUIRE_ETCD=1`, so a real-etcd test can never silently skip;
//!    while a background writer ([`crate::noise`]) keeps that etcd busy, so
//!    a test that assumes nobody else writes fails every time;
//! 4. stop the writer and report what it did, then stop etcd and delete its
//!    data whatever happened (a `Drop` guard).

use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd::{self, header};
use crate::etcd::Etcd;
use crate::noise::Noise;
use crate::provision::{self, Tools};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Test only these packages (default: the whole workspace).
    #[arg(short = 'p', long = "package")]
    packages: Vec<String>,

    /// Writes per second the background writer adds to the shared etcd
    /// during the tests (0 turns it off).
    #[arg(long, default_value_t = DEFAULT_NOISE_RATE)]
    noise_rate: u32,
}

/// Enough that a write lands between almost any two calls of a test.
const DEFAULT_NOISE_RATE: u32 = 200;

impl Default for Args {
    fn default() -> Self {
        Args {
            packages: Vec::new(),
            noise_rate: DEFAULT_NOISE_RATE,
        }
    }
}

impl Args {
    /// `--workspace`, or `-p <package>` for each selected package.
    fn selection(&self) -> Vec<String> {
        if self.packages.is_empty() {
            return vec!["--workspace".into()];
        }
        self.packages
            .iter()
            .flat_map(|p| ["-p".to_string(), p.clone()])
            .collect()
    }

    /// The selection for `cargo test --doc`, which rejects packages without
    /// a library target; `None` when no selected package has one.
    fn doc_selection(&self) -> Result<Option<Vec<String>>> {
        if self.packages.is_empty() {
            return Ok(Some(self.selection()));
        }
        let members = crate::layering::workspace_packages()?;
        let libs: Vec<String> = self
            .packages
            .iter()
            .filter(|p| {
                members
                    .iter()
                    .any(|(name, dir)| name == *p && dir.join("src/lib.rs").is_file())
            })
            .flat_map(|p| ["-p".to_string(), p.clone()])
            .collect();
        Ok((!libs.is_empty()).then_some(libs))
    }
}

/// Run the whole test procedure, provisioning first.
pub(crate) fn run(args: &Args) -> Result<()> {
    header("test [1/3]: tools");
    let tools = provision::ensure(provision::Needs::ALL)?;
    run_with(&tools, args)
}

/// Steps 2-4, for callers (`ci`) that provisioned already.
pub(crate) fn run_with(tools: &Tools, args: &Args) -> Result<()> {
    header("test [2/3]: throwaway etcd");
    let etcd = Etcd::start(None)?;
    let noise = Noise::start(etcd.endpoint(), args.noise_rate)?;

    header("test [3/3]: cargo tests (real etcd, busy)");
    let env = TestEnv {
        etcd_endpoints: etcd.endpoint().to_string(),
        python: tools.python.as_ref().map(|p| p.display().to_string()),
    };
    let mut failures = Vec::new();
    if nextest_available() {
        let mut nextest = cmd::cargo();
        nextest
            .args(["nextest", "run", "--no-fail-fast"])
            .args(args.selection());
        if let Err(e) = cmd::run(env.apply(&mut nextest)) {
            failures.push(format!("{e:#}"));
        }
        if !crate::signals::interrupted() {
            header("doctests (nextest does not run them)");
            match args.doc_selection() {
                Ok(Some(selection)) => {
                    let mut doc = cmd::cargo();
                    doc.args(["test", "--doc"]).args(selection);
                    if let Err(e) = cmd::run(env.apply(&mut doc)) {
                        failures.push(format!("{e:#}"));
                    }
                }
                Ok(None) => println!("no library among the selected packages: no doctests"),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
    } else {
        println!("cargo-nextest is not installed; falling back to `cargo test`");
        let mut test = cmd::cargo();
        test.args(["test", "--no-fail-fast"]).args(args.selection());
        if let Err(e) = cmd::run(env.apply(&mut test)) {
            failures.push(format!("{e:#}"));
        }
    }
    let report = noise.stop();
    println!("{report}");
    if args.noise_rate > 0 && report.writes == 0 {
        failures.push(format!(
            "the background writer never wrote, so the tests did not run against a busy etcd: {report}"
        ));
    }
    drop(etcd);

    if failures.is_empty() {
        header("all tests passed");
        Ok(())
    } else {
        bail!("tests failed:\n  {}", failures.join("\n  "))
    }
}

/// The environment every test process gets.
#[derive(Debug)]
struct TestEnv {
    etcd_endpoints: String,
    python: Option<String>,
}

impl TestEnv {
    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("DROVER_ETCD_ENDPOINTS", &self.etcd_endpoints)
            .env("DROVER_REQUIRE_ETCD", "1");
        if let Some(py) = &self.python {
            cmd.env(provision::PYTHON_VAR, py);
        }
        cmd
    }
}

fn nextest_available() -> bool {
    let mut version = cmd::cargo();
    version.args(["nextest", "--version"]);
    cmd::capture(&mut version)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_workspace_by_default_and_packages_when_given() {
        assert_eq!(Args::default().selection(), ["--workspace"]);
        let args = Args {
            packages: vec!["drover-store".into(), "xtask".into()],
            noise_rate: 0,
        };
        assert_eq!(args.selection(), ["-p", "drover-store", "-p", "xtask"]);
    }

    #[test]
    fn tests_get_etcd_required_and_python() {
        let env = TestEnv {
            etcd_endpoints: "http://127.0.0.1:1234".into(),
            python: Some("/usr/bin/python3".into()),
        };
        let mut cmd = Command::new("true");
        env.apply(&mut cmd);
        let vars: Vec<(String, String)> = cmd
            .get_envs()
            .map(|(k, v)| {
                let v = v
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (k.to_string_lossy().into_owned(), v)
            })
            .collect();
        for expected in [
            ("DROVER_ETCD_ENDPOINTS", "http://127.0.0.1:1234"),
            ("DROVER_REQUIRE_ETCD", "1"),
            ("DROVER_PYTHON", "/usr/bin/python3"),
        ] {
            assert!(
                vars.iter().any(|(k, v)| k == expected.0 && v == expected.1),
                "{expected:?} missing from {vars:?}"
            );
        }
    }
}
