//! Make sure the tools the tests need are installed.
//!
//! A fresh machine has the Rust toolchain, gcc, python3 and apt, nothing else.
//! The tests need `protoc` (etcd-client's build script runs it), `etcd` and
//! `etcdctl` (the real store the conformance suite runs against) and a Python
//! with grpcio, grpcio-tools and protobuf (the cross-language end-to-end
//! tests generate Python stubs from `proto/` and call the server). As root we
//! install what is missing with apt; otherwise we say exactly what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Environment variable naming a Python interpreter that can import `grpc`,
/// `grpc_tools` and `google.protobuf`; set by `cargo xtask test` for the
/// cross-language end-to-end tests.
pub(crate) const PYTHON_VAR: &str = "DROVER_PYTHON";

/// Debian packages that give a usable Python gRPC runtime. They install for
/// the system interpreter, `/usr/bin/python3`.
const PYTHON_APT_PACKAGES: &[&str] = &["python3-grpcio", "python3-protobuf", "python3-grpc-tools"];
/// The same from PyPI, where apt has none.
const PYTHON_PIP_PACKAGES: &[&str] = &["grpcio", "grpcio-tools", "protobuf"];
/// What the cross-language tests import.
const PYTHON_PROBE: &str = "import grpc, grpc_tools, google.protobuf";

/// What the tests found installed.
#[derive(Debug)]
pub(crate) struct Tools {
    /// A Python that imports `grpc`, `grpc_tools` and `google.protobuf`, when
    /// asked for.
    pub(crate) python: Option<PathBuf>,
}

/// A binary the tests need and the Debian packages that provide it.
#[derive(Debug, Clone, Copy)]
struct Requirement {
    binary: &'static str,
    packages: &'static [&'static str],
    why: &'static str,
}

const BINARIES: &[Requirement] = &[
    Requirement {
        binary: "protoc",
        // libprotobuf-dev holds the well-known types (google/protobuf/*.proto)
        // that etcd's protos import; protobuf-compiler only recommends it, so
        // `--no-install-recommends` would leave protoc unable to compile them.
        packages: &["protobuf-compiler", "libprotobuf-dev"],
        why: "etcd-client's build script compiles etcd's protos",
    },
    Requirement {
        binary: "etcd",
        packages: &["etcd-server"],
        why: "the real etcd the store conformance suite runs against",
    },
    Requirement {
        binary: "etcdctl",
        packages: &["etcd-client"],
        why: "etcd health checks and election interop tests",
    },
];

/// Which tools a command needs; `protoc` is always needed (every build of
/// the workspace compiles etcd-client).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    /// `etcd` and `etcdctl`.
    pub(crate) etcd: bool,
    /// A Python with grpcio, grpcio-tools and protobuf.
    pub(crate) python: bool,
}

impl Needs {
    /// Everything: what the tests need.
    pub(crate) const ALL: Needs = Needs {
        etcd: true,
        python: true,
    };
}

/// Check for the tools in `needs`; install missing ones when root; fail
/// otherwise.
pub(crate) fn ensure(needs: Needs) -> Result<Tools> {
    let wanted: Vec<Requirement> = BINARIES
        .iter()
        .copied()
        .filter(|r| needs.etcd || r.binary == "protoc")
        .collect();
    let missing_bins: Vec<Requirement> = wanted
        .iter()
        .copied()
        .filter(|r| !binary_present(r.binary))
        .collect();
    let need_python = needs.python;
    let python = grpc_python();
    let python_missing = need_python && python.is_none();

    for r in &wanted {
        if !missing_bins.iter().any(|m| m.binary == r.binary) {
            println!("found {:<8} {}", r.binary, describe(r.binary));
        }
    }
    if let Some(py) = python.as_ref().filter(|_| need_python) {
        println!("found python with grpcio + grpc_tools: {}", py.display());
    }
    if missing_bins.is_empty() && !python_missing {
        return Ok(Tools { python });
    }

    let mut packages: Vec<&str> = missing_bins
        .iter()
        .flat_map(|r| r.packages.iter().copied())
        .collect();
    for r in &missing_bins {
        println!(
            "missing {:<8} ({}; Debian packages {})",
            r.binary,
            r.why,
            r.packages.join(" ")
        );
    }
    if python_missing {
        println!(
            "missing a python3 with grpcio, grpcio-tools and protobuf (cross-language tests; Debian packages {})",
            PYTHON_APT_PACKAGES.join(" ")
        );
        packages.extend(PYTHON_APT_PACKAGES);
    }

    if !is_root() {
        bail!(
            "missing tools; install them and retry:\n    sudo apt-get update && sudo apt-get install -y {}\n\
             (or run `cargo xtask test` as root, which installs them)",
            packages.join(" ")
        );
    }
    if cmd::which("apt-get").is_none() {
        bail!(
            "missing tools and no apt-get to install them: install the equivalent of the Debian packages {}",
            packages.join(" ")
        );
    }

    cmd::header("installing missing tools with apt");
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    cmd::run(apt_env(&mut update))?;

    // Prefer apt for Python's gRPC; fall back to pip only where the
    // distribution has no such package.
    let (apt_python, pip_python): (Vec<&str>, Vec<&str>) = if python_missing {
        if PYTHON_APT_PACKAGES.iter().all(|p| apt_has_candidate(p)) {
            (PYTHON_APT_PACKAGES.to_vec(), Vec::new())
        } else {
            (Vec::new(), PYTHON_PIP_PACKAGES.to_vec())
        }
    } else {
        (Vec::new(), Vec::new())
    };
    let apt_packages: Vec<&str> = missing_bins
        .iter()
        .flat_map(|r| r.packages.iter().copied())
        .chain(apt_python)
        .collect();
    if !apt_packages.is_empty() {
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&apt_packages);
        cmd::run(apt_env(&mut install))?;
    }
    if !pip_python.is_empty() {
        let py = cmd::which("python3").context("no python3 on PATH")?;
        let mut pip = Command::new(py);
        pip.args(["-m", "pip", "install", "--quiet"])
            .args(&pip_python);
        cmd::run(&mut pip)?;
    }

    for r in &missing_bins {
        if !binary_present(r.binary) {
            bail!(
                "{} is still missing after installing {}",
                r.binary,
                r.packages.join(" ")
            );
        }
    }
    let python = grpc_python();
    if need_python {
        let py = python
            .as_ref()
            .with_context(|| format!("no python3 can `{PYTHON_PROBE}` after installing them"))?;
        println!("python with grpcio + grpc_tools: {}", py.display());
    }
    Ok(Tools { python })
}

fn apt_env(cmd: &mut Command) -> &mut Command {
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
}

fn binary_present(name: &str) -> bool {
    if name == "protoc" {
        return protoc_present();
    }
    cmd::which(name).is_some()
}

/// protoc is usable for etcd-client only together with the well-known types
/// it imports: either `PROTOC` (and `PROTOC_INCLUDE` when set) or Debian's
/// protoc plus `/usr/include/google/protobuf`.
fn protoc_present() -> bool {
    let well_known = |include: &Path| include.join("google/protobuf/descriptor.proto").is_file();
    if let Some(p) = std::env::var_os("PROTOC") {
        let include_ok =
            std::env::var_os("PROTOC_INCLUDE").is_none_or(|dir| well_known(Path::new(&dir)));
        return Path::new(&p).is_file() && include_ok;
    }
    cmd::which("protoc").is_some() && well_known(Path::new("/usr/include"))
}

/// `name`'s path and first line of `--version`, for the log.
fn describe(name: &str) -> String {
    let path = cmd::which(name)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // etcdctl (API v3) has a `version` subcommand instead of a flag.
    let flag = if name == "etcdctl" {
        "version"
    } else {
        "--version"
    };
    let version = Command::new(name)
        .arg(flag)
        .env("ETCDCTL_API", "3")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    format!("{path} ({version})")
}

/// The first of `$DROVER_PYTHON`, `python3` on PATH and the system
/// `/usr/bin/python3` that can import grpc, grpc_tools and protobuf (apt
/// installs for the system interpreter, which may differ from a pyenv or venv
/// python3 on PATH).
fn grpc_python() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(PYTHON_VAR) {
        candidates.push(p.into());
    }
    candidates.extend(cmd::which("python3"));
    candidates.push("/usr/bin/python3".into());
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", PYTHON_PROBE])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// True if apt knows an installable version of `package`.
fn apt_has_candidate(package: &str) -> bool {
    let Ok(out) = Command::new("apt-cache").args(["policy", package]).output() else {
        return false;
    };
    parse_apt_candidate(&String::from_utf8_lossy(&out.stdout)).is_some()
}

/// The `Candidate:` version in `apt-cache policy` output, if any.
fn parse_apt_candidate(policy: &str) -> Option<&str> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
}

/// True when running as uid 0 (read from procfs: no libc, no unsafe).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_uid(&s))
        == Some(0)
}

fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1) // effective uid
        .and_then(|u| u.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_candidate_is_parsed() {
        let present =
            "python3-grpcio:\n  Installed: (none)\n  Candidate: 1.51.1-3+b1\n  Version table:\n";
        assert_eq!(parse_apt_candidate(present), Some("1.51.1-3+b1"));
        let absent = "foo:\n  Installed: (none)\n  Candidate: (none)\n";
        assert_eq!(parse_apt_candidate(absent), None);
        assert_eq!(parse_apt_candidate(""), None);
    }

    #[test]
    fn effective_uid_is_parsed() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_uid(status), Some(0));
        assert_eq!(parse_uid("Uid:\t5\t7\t7\t7\n"), Some(7));
        assert_eq!(parse_uid("Name:\tx\n"), None);
    }
}
