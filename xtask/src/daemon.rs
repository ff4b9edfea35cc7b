//! The servers xtask runs in the background (etcd, the orchestrator): a child
//! process whose data and log live in a temporary directory.
//!
//! [`Daemon`] is a guard: dropping it stops the process (SIGTERM, a bounded
//! wait, then SIGKILL) and deletes its directory, on success, on error and on
//! Ctrl-C alike.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

use crate::signals;

/// How long a daemon may take to exit after SIGTERM before it is killed
/// (the orchestrator drains requests for up to 10 s by default).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between readiness checks, and between exit checks when stopping.
const POLL: Duration = Duration::from_millis(50);

/// A running background server; stopped and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct Daemon {
    name: &'static str,
    child: Option<Child>,
    dir: Option<TempDir>,
}

impl Daemon {
    /// Make a temporary directory `drover-<name>-*` under `parent` (the
    /// system temp dir when `None`), let `command` build the command line
    /// given that directory, and start it with its stdout and stderr going to
    /// `<dir>/<name>.log`.
    pub(crate) fn spawn(
        name: &'static str,
        parent: Option<&Path>,
        command: impl FnOnce(&Path) -> Command,
    ) -> Result<Daemon> {
        let prefix = format!("drover-{name}-");
        let dir = match parent {
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                tempfile::Builder::new().prefix(&prefix).tempdir_in(parent)
            }
            None => tempfile::Builder::new().prefix(&prefix).tempdir(),
        }
        .with_context(|| format!("creating {name}'s temporary directory"))?;
        let log = File::create(log_path(dir.path(), name))
            .with_context(|| format!("creating {name}.log"))?;
        let mut cmd = command(dir.path());
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        println!("$ {}", crate::cmd::display(&cmd));
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        signals::register(child.id());
        Ok(Daemon {
            name,
            child: Some(child),
            dir: Some(dir),
        })
    }

    /// The daemon's process id (for benchmarks that read its CPU use).
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("present until drop").id()
    }

    /// The daemon's temporary directory (its log is `<name>.log` in it).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// How the process ended, once it has (it is reaped then).
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Everything the daemon logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(log_path(self.dir(), self.name)).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Poll `ready` until it gives a value, for at most `timeout`. Fails if
    /// the process exits first, on Ctrl-C, or on timeout; the error carries
    /// the end of the log.
    pub(crate) fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Daemon) -> Option<T>,
    ) -> Result<T> {
        // Counted polls: xtask has no clock that tests could pause, and
        // needs none (a slow poll only makes the bound longer).
        let polls = timeout.as_millis() / POLL.as_millis();
        let mut polled = 0;
        let waited = loop {
            if signals::interrupted() {
                break Err(anyhow::anyhow!("interrupted"));
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                break Err(anyhow::anyhow!(
                    "{} exited during startup ({status})",
                    self.name
                ));
            }
            if let Some(value) = ready(self) {
                break Ok(value);
            }
            if polled >= polls {
                break Err(anyhow::anyhow!("not {what} within {timeout:?}"));
            }
            polled += 1;
            std::thread::sleep(POLL);
        };
        waited.map_err(|e| {
            e.context(format!(
                "{} did not become {what}; last lines of its log:\n{}",
                self.name,
                self.log_tail(30)
            ))
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(self.name, &mut child);
            signals::unregister(child.id());
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!(
                    "warning: could not remove {}'s directory {}: {e}",
                    self.name,
                    path.display()
                );
            }
        }
    }
}

/// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL; always reaps.
fn stop(name: &str, child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    // Not reaped yet, so the pid is still this child's.
    signals::terminate(child.id());
    for _ in 0..STOP_TIMEOUT.as_millis() / POLL.as_millis() {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(POLL);
    }
    eprintln!("warning: {name} still running {STOP_TIMEOUT:?} after SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

fn log_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_waits_and_cleans_up() {
        let parent = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::spawn("sleeper", Some(parent.path()), |dir| {
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                &format!("echo ready in {}; exec sleep 600", dir.display()),
            ]);
            cmd
        })
        .unwrap();
        let dir = daemon.dir().to_path_buf();
        let line = daemon
            .wait_until("ready", Duration::from_secs(30), |d| {
                d.log()
                    .lines()
                    .find(|l| l.starts_with("ready"))
                    .map(String::from)
            })
            .unwrap();
        assert_eq!(line, format!("ready in {}", dir.display()));
        drop(daemon);
        assert!(!dir.exists(), "directory removed on drop");
    }

    #[test]
    fn early_exit_fails_the_wait_with_the_log() {
        let mut daemon = Daemon::spawn("quitter", None, |_| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo bad flag; exit 2"]);
            cmd
        })
        .unwrap();
        let err = daemon
            .wait_until("ready", Duration::from_secs(30), |_| None::<()>)
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("quitter exited during startup"), "{msg}");
        assert!(msg.contains("bad flag"), "{msg}");
    }
}
