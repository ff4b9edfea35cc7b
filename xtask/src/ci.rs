//! `cargo xtask ci`: every check CI runs (fmt, clippy, rustdoc, layering,
//! codegen freshness), in order, then the tests.
//!
//! Each step runs even when an earlier one failed, so one CI run reports
//! every problem; the command fails if any step did.

use std::path::Path;

use anyhow::{Result, bail};

use crate::cmd::{self, header};
use crate::{codegen, layering, provision, signals, test};

pub(crate) fn run(root: &Path, with_tests: bool) -> Result<()> {
    header("ci: tools");
    // Clippy builds etcd-client, whose build script needs protoc: provision first.
    let tools = provision::ensure(provision::Needs::ALL)?;
    ensure_components()?;

    let mut failures: Vec<String> = Vec::new();
    let mut step = |name: &str, result: Result<()>| {
        if let Err(e) = result {
            eprintln!("\nci step `{name}` FAILED: {e:#}");
            failures.push(format!("{name}: {e:#}"));
        }
    };

    header("ci: cargo fmt --check");
    let mut fmt = cmd::cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("fmt", cmd::run(&mut fmt));

    if !signals::interrupted() {
        header("ci: cargo clippy");
        let mut clippy = cmd::cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        step("clippy", cmd::run(&mut clippy));
    }

    if !signals::interrupted() {
        header("ci: cargo doc (warnings denied)");
        let mut doc = cmd::cargo();
        doc.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        step("doc", cmd::run(&mut doc));
    }

    if !signals::interrupted() {
        header("ci: layering");
        step("layering", layering::check(root));
    }

    if !signals::interrupted() {
        header("ci: codegen --check");
        step("codegen", codegen::run(true));
    }

    if with_tests && !signals::interrupted() {
        step("test", test::run_with(&tools, &test::Args::default()));
    }

    if failures.is_empty() {
        header("ci: all steps passed");
        Ok(())
    } else {
        bail!(
            "{} ci step(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
    }
}

/// rustfmt and clippy ship with rustup's default profile, but a minimal
/// toolchain lacks them: add them through rustup when it is there.
fn ensure_components() -> Result<()> {
    let missing: Vec<&str> = [("fmt", "rustfmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(sub, _)| {
            let mut version = cmd::cargo();
            version.args([sub, "--version"]);
            !cmd::capture(&mut version).is_ok_and(|o| o.status.success())
        })
        .map(|(_, component)| component)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if cmd::which("rustup").is_none() {
        bail!("missing toolchain components {missing:?} and no rustup to add them");
    }
    let mut add = std::process::Command::new("rustup");
    add.args(["component", "add"]).args(&missing);
    cmd::run(&mut add)
}
