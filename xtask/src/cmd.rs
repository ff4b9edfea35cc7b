//! Running commands: headers, echoing, signal forwarding, PATH lookup.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use crate::signals;

/// Print a section header that stands out in long CI logs.
pub(crate) fn header(title: &str) {
    println!("\n==================== {title} ====================");
}

/// A `cargo` command, using the same cargo that runs xtask.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// The command line of `cmd`, for echoing.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let program = parts[0].rsplit('/').next().unwrap_or_default().to_string();
    parts[0] = program;
    parts.join(" ")
}

/// Run `cmd` with inherited output and no stdin; fail unless it exits 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    signals::register(child.id());
    let status = child.wait();
    signals::unregister(child.id());
    let status = status.with_context(|| format!("waiting for `{line}`"))?;
    if signals::interrupted() {
        bail!("interrupted during `{line}`");
    }
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run `cmd` and capture its output (any exit status).
pub(crate) fn capture(cmd: &mut Command) -> Result<Output> {
    let line = display(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))
}

/// The first executable named `name` on PATH.
pub(crate) fn which(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    let name = name.as_ref();
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_program_name_and_args() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.args(["nextest", "run", "--workspace"]);
        assert_eq!(display(&cmd), "cargo nextest run --workspace");
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some(), "every Unix has sh on PATH");
        assert!(which("drover-no-such-tool-xyz").is_none());
    }
}
