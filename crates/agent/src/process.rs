//! Where launchables run: the [`Processes`] port, and [`OsProcesses`], which
//! starts real processes, each launchable in a cgroup v2 subtree of its own
//! when the agent can create one (then a stop reaches every descendant, even
//! one that called `setsid`, and `cgroup.kill` ends them all at once), else
//! in a process group of its own.
//!
//! The reconcile and supervision logic only see the port, so it is tested
//! without processes; hollow nodes use a port whose processes are pretend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_manifest::{ByteSize, Exit, ResourceLimits};
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::config::CgroupMode;
use crate::error::{AgentError, Result};

/// How long a stop waits for SIGKILLed processes to vanish before it gives
/// up (they are in uninterruptible sleep; the kernel ends them later).
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a stop looks whether everything exited.
const STOP_POLL: Duration = Duration::from_millis(10);
/// How often the exit of an adopted process (not our child) is looked for.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// The exit of a process whose status nobody could read.
const UNKNOWN_EXIT: Exit = Exit {
    code: None,
    signal: None,
};

/// One launchable to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchSpec {
    /// `<pod>/<launchable>`, for names and logs.
    pub name: String,
    /// The program: a path, or a name looked up in `PATH`.
    pub program: String,
    pub args: Vec<String>,
    /// The whole environment of the process.
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    /// stdout and stderr are appended to this file.
    pub log_file: PathBuf,
    /// Where the started process is recorded (`<pid> <start time>`), so a
    /// restarted agent can adopt it, or end it if it may not.
    pub record_file: PathBuf,
    /// The pod's resource limits (shared by all its launchables where
    /// cgroups allow).
    pub limits: ResourceLimits,
}

/// Starts launchables.
pub trait Processes: Send + Sync + 'static {
    /// Starts `spec`; the error says why it could not. Whatever an earlier
    /// run of the agent left running for it is ended first.
    fn spawn(&self, spec: &LaunchSpec) -> Result<Box<dyn Running>>;
    /// Takes over what an earlier run of the agent started for `spec` and
    /// is still running (a restarted agent): `None` when nothing is.
    fn adopt(&self, spec: &LaunchSpec) -> Option<Box<dyn Running>> {
        let _ = spec;
        None
    }
    /// How this runtime enforces a pod's resource limits, for the reality
    /// record: `cgroup` (`cpu.max` and `memory.max` of the pod's cgroup),
    /// `rlimit` (memory as each process's `RLIMIT_DATA`; CPUs are not
    /// enforced) or `none`.
    fn limits(&self) -> &'static str;
    /// True when nothing real runs (hollow nodes): health is then whether
    /// the pretend processes run, whatever the manifest's status stanza.
    fn fakes_health(&self) -> bool {
        false
    }
}

/// A started launchable.
pub trait Running: Send + Sync {
    /// The main process's pid, when there is a real one.
    fn pid(&self) -> Option<u32>;
    /// Resolves once the launchable counts as started, which the supervisor
    /// awaits before it reports it running: at once for a real process (it
    /// runs when `spawn` returns), after their launch delay for hollow pods.
    fn started(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
    /// Resolves when the main process exited (again at once afterwards).
    fn wait(&mut self) -> BoxFuture<'_, Exit>;
    /// Ends everything the launchable started: SIGTERM, up to `grace` for
    /// it all to exit, then SIGKILL. Resolves once nothing is left.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()>;
}

/// Real processes.
#[derive(Debug)]
pub struct OsProcesses {
    /// The agent's cgroup v2 subtree, when it could create one.
    cgroups: Option<PathBuf>,
    /// The cpu and memory controllers are enabled for the pods' cgroups.
    controllers: bool,
}

impl OsProcesses {
    /// Processes for one agent: in cgroups under the agent's own cgroup
    /// (in a subtree named after `instance`, the same for every run of one
    /// agent, so a restart finds what an earlier run left) when `mode`
    /// allows and the agent may create them.
    pub fn new(mode: CgroupMode, instance: &str) -> OsProcesses {
        let cgroups = match mode {
            CgroupMode::Off => None,
            CgroupMode::Auto => match cgroup_base(instance) {
                Ok(base) => Some(base),
                Err(why) => {
                    tracing::info!(%why, "no cgroup v2 subtree; launchables run in process groups");
                    None
                }
            },
        };
        let controllers = cgroups.as_deref().is_some_and(|base| {
            let enabled = enable_controllers(base);
            if let Err(why) = &enabled {
                tracing::info!(%why, "no cpu and memory controllers; pod limits are rlimits");
            }
            enabled.is_ok()
        });
        OsProcesses {
            cgroups,
            controllers,
        }
    }

    /// The cgroup subtree launchables run in, if any.
    pub fn cgroup_base(&self) -> Option<&Path> {
        self.cgroups.as_deref()
    }
}

/// True when this process can run launchables in cgroup v2 subtrees: it
/// creates (and removes) a probe subtree to find out.
pub fn cgroup_v2_available() -> bool {
    let probe = format!("probe-{}", std::process::id());
    match cgroup_base(&probe) {
        Ok(dir) => {
            let _ = std::fs::remove_dir(&dir);
            true
        }
        Err(_) => false,
    }
}

/// `<cgroup2 mount><own cgroup>`.
fn own_cgroup() -> std::result::Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    // mountinfo: "... <mount point> ... - <fstype> <source> <options>"
    let mount = mounts
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process has no cgroup v2 membership")?;
    Ok(mount.join(own.trim_start_matches('/')))
}

/// The cpu and memory controllers for the children of `base`: enabled in
/// its parent (the agent's own cgroup: the kernel refuses that while the
/// cgroup has processes of its own, unless it is the root) and in `base`.
fn enable_controllers(base: &Path) -> std::result::Result<(), String> {
    let parent = base.parent().ok_or("the cgroup subtree has no parent")?;
    for dir in [parent, base] {
        let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let has = |c: &str| enabled.split_whitespace().any(|e| e == c);
        if has("cpu") && has("memory") {
            continue;
        }
        std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory").map_err(|e| {
            format!(
                "enabling cpu and memory in {}: {e}",
                dir.join("cgroup.subtree_control").display()
            )
        })?;
    }
    Ok(())
}

/// A cgroup period of 100 ms (the kernel's default), in microseconds.
const CPU_PERIOD_US: u64 = 100_000;

/// `cpu.max` and `memory.max` of a pod's cgroup: unset limits are `max`.
fn cgroup_limits(limits: &ResourceLimits) -> [(&'static str, String); 2] {
    let cpu = limits.cpus.map_or_else(
        || format!("max {CPU_PERIOD_US}"),
        |cpus| {
            format!(
                "{} {CPU_PERIOD_US}",
                u64::from(cpus.millis()) * CPU_PERIOD_US / 1000
            )
        },
    );
    let memory = limits
        .memory
        .map_or_else(|| "max".to_owned(), |m| m.as_u64().to_string());
    [("cpu.max", cpu), ("memory.max", memory)]
}

fn write_cgroup_limits(dir: &Path, limits: &ResourceLimits) -> std::io::Result<()> {
    for (file, value) in cgroup_limits(limits) {
        std::fs::write(dir.join(file), value)?;
    }
    Ok(())
}

/// The shell lines that start a launchable: join its cgroup (`$0` is the
/// cgroup's `cgroup.procs`), set its rlimits, then become the program.
fn trampoline(in_cgroup: bool, memory_rlimit: Option<ByteSize>) -> Option<String> {
    let mut script = Vec::new();
    if in_cgroup {
        script.push(r#"echo 0 > "$0" || exit 125"#.to_owned());
    }
    if let Some(memory) = memory_rlimit {
        // ulimit counts KiB.
        script.push(format!(
            "ulimit -d {} || exit 125",
            memory.as_u64().div_ceil(1024)
        ));
    }
    if script.is_empty() {
        return None;
    }
    script.push(r#"exec "$@""#.to_owned());
    Some(script.join("; "))
}

/// The executable `program` names: itself when it has a `/`, else the
/// first in `path` (the launchable's `PATH`), as `execvp` would pick.
fn find_program(program: &str, path: Option<&String>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let not_found = |what: String| std::io::Error::new(std::io::ErrorKind::NotFound, what);
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{program} is not an executable file"),
            ))
        } else {
            Err(not_found(format!("no such program: {program}")))
        };
    }
    path.map(String::as_str)
        .unwrap_or_default()
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| not_found(format!("{program} is not in PATH")))
}

/// `<own cgroup>/drover-<instance>`, created.
fn cgroup_base(instance: &str) -> std::result::Result<PathBuf, String> {
    let base = own_cgroup()?.join(format!("drover-{instance}"));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    if !base.join("cgroup.kill").exists() {
        return Err(format!(
            "{} has no cgroup.kill (kernel older than 5.14)",
            base.display()
        ));
    }
    Ok(base)
}

impl Drop for OsProcesses {
    fn drop(&mut self) {
        // Empty once every launchable stopped; otherwise the next run of
        // this agent ends what is left.
        if let Some(base) = &self.cgroups {
            let _ = std::fs::remove_dir(base);
        }
    }
}

impl Processes for OsProcesses {
    fn spawn(&self, spec: &LaunchSpec) -> Result<Box<dyn Running>> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .map_err(AgentError::io(format!(
                "open the log {}",
                spec.log_file.display()
            )))?;
        let log2 = log
            .try_clone()
            .map_err(AgentError::io("duplicate the log file handle"))?;
        if let Some(leftover) = Recorded::read(&spec.record_file).filter(Recorded::is_running) {
            // An earlier run's process that is not adopted: end its group
            // (its cgroup, when there is one, is ended just below).
            tracing::info!(launchable = %spec.name, pid = leftover.pid, "ending what an earlier run left");
            let _ = killpg(Pid::from_raw(leftover.pid), Signal::SIGKILL);
        }
        let cgroup = match &self.cgroups {
            Some(base) => {
                // <pod>/<launchable>: the pod's cgroup holds its limits.
                let dir = base.join(&spec.name);
                if dir.exists() {
                    // Left over from a crash of an earlier run: end it.
                    kill_cgroup(&dir);
                    let _ = std::fs::remove_dir(&dir);
                }
                let pod_dir = dir.parent().unwrap_or(base);
                std::fs::create_dir_all(pod_dir).map_err(AgentError::io(format!(
                    "create cgroup {}",
                    pod_dir.display()
                )))?;
                if self.controllers {
                    write_cgroup_limits(pod_dir, &spec.limits).map_err(AgentError::io(format!(
                        "set the limits of cgroup {}",
                        pod_dir.display()
                    )))?;
                }
                std::fs::create_dir(&dir)
                    .map_err(AgentError::io(format!("create cgroup {}", dir.display())))?;
                Some(dir)
            }
            None => None,
        };
        // Found first: behind the trampoline a missing program would be the
        // shell's exit 127, a crash loop, not a failure to start.
        let program = match find_program(&spec.program, spec.env.get("PATH")) {
            Ok(program) => program,
            Err(e) => {
                if let Some(dir) = &cgroup {
                    remove_cgroup(dir);
                }
                return Err(AgentError::Io {
                    context: format!("start {} ({})", spec.name, spec.program),
                    source: e,
                });
            }
        };
        let memory_rlimit = spec.limits.memory.filter(|_| !self.controllers);
        let mut command = match trampoline(cgroup.is_some(), memory_rlimit) {
            // The shell moves itself into the cgroup and sets the limits,
            // then becomes the program: nothing the program starts can be
            // outside them.
            Some(script) => {
                let mut command = tokio::process::Command::new("/bin/sh");
                let zeroth = cgroup
                    .as_ref()
                    .map_or_else(|| PathBuf::from("sh"), |dir| dir.join("cgroup.procs"));
                command.arg("-c").arg(script).arg(zeroth).arg(&program);
                command
            }
            None => tokio::process::Command::new(&program),
        };
        command
            .args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.working_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn().map_err(|e| {
            if let Some(dir) = &cgroup {
                remove_cgroup(dir);
            }
            AgentError::Io {
                context: format!("start {} ({})", spec.name, spec.program),
                source: e,
            }
        })?;
        let pid = child.id();
        if let Some(record) = pid.and_then(|pid| Recorded::of(pid as i32)) {
            record.write(&spec.record_file);
        }
        Ok(Box::new(OsProcess {
            child: Some(child),
            pid,
            exit: None,
            cgroup,
        }))
    }

    fn adopt(&self, spec: &LaunchSpec) -> Option<Box<dyn Running>> {
        let recorded = Recorded::read(&spec.record_file).filter(Recorded::is_running)?;
        let cgroup = self.cgroups.as_ref().map(|base| base.join(&spec.name));
        if let Some(dir) = &cgroup
            && !cgroup_pids(dir).contains(&recorded.pid)
        {
            return None;
        }
        Some(Box::new(OsProcess {
            child: None,
            pid: Some(recorded.pid as u32),
            exit: None,
            cgroup,
        }))
    }

    fn limits(&self) -> &'static str {
        if self.controllers { "cgroup" } else { "rlimit" }
    }
}

/// A started process as recorded in its record file: its pid and its
/// start time in clock ticks since boot (`/proc/<pid>/stat` field 22), which
/// tells it from a later process that got the same pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recorded {
    pid: i32,
    start: u64,
}

impl Recorded {
    fn of(pid: i32) -> Option<Recorded> {
        Some(Recorded {
            pid,
            start: proc_stat(pid)?.1,
        })
    }

    fn read(file: &Path) -> Option<Recorded> {
        let text = std::fs::read_to_string(file).ok()?;
        let mut parts = text.split_whitespace();
        Some(Recorded {
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
        })
    }

    fn write(&self, file: &Path) {
        if let Err(e) = std::fs::write(file, format!("{} {}\n", self.pid, self.start)) {
            tracing::warn!(error = %e, file = %file.display(), "recording the process failed; a restarted agent will restart it");
        }
    }

    /// The very process recorded is alive (not a zombie).
    fn is_running(&self) -> bool {
        proc_stat(self.pid).is_some_and(|(state, start)| state != 'Z' && start == self.start)
    }
}

/// A process's state letter and start time, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = ProcStat::read(Path::new(&format!("/proc/{pid}")))?;
    Some((stat.state, stat.start))
}

/// The fields of `/proc/<pid>/stat` the agent reads.
struct ProcStat {
    state: char,
    group: i32,
    /// Start time in clock ticks since boot.
    start: u64,
}

impl ProcStat {
    /// Reads `<proc dir>/stat`: "<pid> (<comm>) <state> <ppid> <pgrp> ...",
    /// the start time the 20th field after the command (which may hold
    /// spaces and parentheses, hence the last `)`).
    fn read(proc_dir: &Path) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let group = fields.nth(1)?.parse().ok()?;
        let start = fields.nth(16)?.parse().ok()?;
        Some(ProcStat {
            state,
            group,
            start,
        })
    }
}

/// A launchable's main process: started by this agent (`child`), or
/// adopted from an earlier run (no child: its exit is seen in `/proc`, its
/// status is unknown).
struct OsProcess {
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    exit: Option<Exit>,
    cgroup: Option<PathBuf>,
}

impl OsProcess {
    fn signal_all(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            // The process group: the main process and what it forked.
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
        if let Some(dir) = &self.cgroup {
            // Also whatever left the group (setsid) but not the cgroup.
            for pid in cgroup_pids(dir) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }

    /// True when nothing of the launchable is left.
    fn all_gone(&mut self) -> bool {
        if self.exit.is_none() {
            match &mut self.child {
                Some(child) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        self.exit = Some(exit_of(status));
                    }
                }
                None => {
                    let alive = self
                        .pid
                        .and_then(|pid| proc_stat(pid as i32))
                        .is_some_and(|(state, _)| state != 'Z');
                    if !alive {
                        self.exit = Some(UNKNOWN_EXIT);
                    }
                }
            }
        }
        // A process leaves its cgroup when it exits; it stays in its process
        // group as a zombie until its (new) parent reaps it, so zombies do
        // not count there.
        let rest_gone = match (&self.cgroup, self.pid) {
            (Some(dir), _) => cgroup_pids(dir).is_empty(),
            (None, Some(pid)) => !group_has_live_members(pid as i32),
            (None, None) => true,
        };
        self.exit.is_some() && rest_gone
    }

    async fn wait_gone(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.all_gone() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(STOP_POLL).await;
        }
    }
}

impl Running for OsProcess {
    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            if let Some(exit) = self.exit {
                return exit;
            }
            let exit = match &mut self.child {
                Some(child) => match child.wait().await {
                    Ok(status) => exit_of(status),
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for a launchable failed");
                        UNKNOWN_EXIT
                    }
                },
                // Adopted: not our child, so poll until it is gone.
                None => loop {
                    self.all_gone();
                    if let Some(exit) = self.exit {
                        break exit;
                    }
                    tokio::time::sleep(ADOPTED_POLL).await;
                },
            };
            self.exit = Some(exit);
            exit
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.all_gone() {
                self.signal_all(Signal::SIGTERM);
                if !self.wait_gone(grace).await {
                    if let Some(dir) = &self.cgroup {
                        kill_cgroup(dir);
                    }
                    self.signal_all(Signal::SIGKILL);
                    if !self.wait_gone(KILL_WAIT).await {
                        tracing::warn!(pid = ?self.pid, "processes survived SIGKILL; leaving them to the kernel");
                    }
                }
            }
            if let Some(dir) = self.cgroup.take() {
                remove_cgroup(&dir);
            }
        })
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    Exit {
        code: status.code(),
        signal: status.signal(),
    }
}

/// True when a process of group `pgid` runs (is not a zombie): a scan of
/// `/proc`, done only while a stop waits.
fn group_has_live_members(pgid: i32) -> bool {
    if killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        ProcStat::read(&entry.path()).is_some_and(|stat| stat.group == pgid && stat.state != 'Z')
    })
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes a launchable's (empty) cgroup, and its pod's with its last
/// launchable (removing that fails while another one runs).
fn remove_cgroup(dir: &Path) {
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::debug!(error = %e, cgroup = %dir.display(), "removing the cgroup failed");
    }
    if let Some(pod_dir) = dir.parent() {
        let _ = std::fs::remove_dir(pod_dir);
    }
}

fn kill_cgroup(dir: &Path) {
    if let Err(e) = std::fs::write(dir.join("cgroup.kill"), "1") {
        tracing::debug!(error = %e, cgroup = %dir.display(), "cgroup.kill failed; signalling its processes");
        for pid in cgroup_pids(dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_are_the_pods_quota_over_the_default_period() {
        let limits = ResourceLimits {
            cpus: Some(drover_manifest::Cpus::from_millis(1500)),
            memory: Some(ByteSize::mib(64)),
        };
        let dir = tempfile::tempdir().unwrap();
        write_cgroup_limits(dir.path(), &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), "67108864");
        // Unset: no limit (a replacement may drop one).
        write_cgroup_limits(dir.path(), &ResourceLimits::default()).unwrap();
        assert_eq!(read("cpu.max"), "max 100000");
        assert_eq!(read("memory.max"), "max");
    }

    #[test]
    fn programs_are_found_as_execvp_would() {
        let path = "/nonexistent:/bin:/usr/bin".to_owned();
        assert!(find_program("sh", Some(&path)).unwrap().ends_with("sh"));
        assert_eq!(find_program("/bin/sh", None).unwrap(), Path::new("/bin/sh"));
        let err = find_program("no-such-program-anywhere", Some(&path)).unwrap_err();
        assert!(err.to_string().contains("not in PATH"), "{err}");
        let err = find_program("/no/such/program", Some(&path)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let plain = tempfile::NamedTempFile::new().unwrap();
        let err = find_program(plain.path().to_str().unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
        assert!(find_program("sh", None).is_err(), "no PATH: nothing found");
    }

    #[test]
    fn the_trampoline_joins_the_cgroup_then_limits_then_execs() {
        assert_eq!(
            trampoline(false, None),
            None,
            "nothing to do: exec directly"
        );
        assert_eq!(
            trampoline(true, Some(ByteSize::bytes(1025))).unwrap(),
            r#"echo 0 > "$0" || exit 125; ulimit -d 2 || exit 125; exec "$@""#
        );
        assert_eq!(
            trampoline(false, Some(ByteSize::mib(1))).unwrap(),
            r#"ulimit -d 1024 || exit 125; exec "$@""#
        );
    }

    #[test]
    fn proc_stat_reads_this_process_state_group_and_start() {
        let stat = ProcStat::read(Path::new("/proc/self")).unwrap();
        assert_eq!(stat.group, nix::unistd::getpgrp().as_raw());
        assert!(matches!(stat.state, 'R' | 'S'), "{}", stat.state);
        let me = Recorded::of(std::process::id() as i32).unwrap();
        assert_eq!(me.start, stat.start);
        assert!(me.is_running());
        assert!(
            !Recorded {
                start: me.start + 1,
                ..me
            }
            .is_running(),
            "another start time: another process"
        );
    }
}
