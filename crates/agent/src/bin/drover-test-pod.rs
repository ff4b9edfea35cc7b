//! `drover-test-pod`: the program the agent's tests run as a pod.
//!
//! Everything a supervision or health test needs to provoke, on flags:
//! a status endpoint whose answer a file controls, a crash after a delay,
//! a SIGTERM it ignores, children and a grandchild that left the process
//! group with `setsid` (what a stop must still kill), and records of each
//! start and of the environment it got, so a test reads what happened from
//! files rather than trusting the agent's own report.
//!
//! ```text
//! drover-test-pod --status-port 8080 --unhealthy-if /tmp/x --exit-after 2s --exit-code 3
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Serve HTTP on 127.0.0.1:PORT: 200 "ok", or 503 while the
    /// `--unhealthy-if` file exists.
    #[arg(long)]
    status_port: Option<u16>,
    /// The status endpoint answers 503 while this file exists.
    #[arg(long)]
    unhealthy_if: Option<PathBuf>,
    /// Exit after this long (humantime: `500ms`, `2s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    exit_after: Option<Duration>,
    /// The status `--exit-after` exits with.
    #[arg(long, default_value_t = 1)]
    exit_code: u8,
    /// Ignore SIGTERM (a stop must then SIGKILL).
    #[arg(long)]
    ignore_sigterm: bool,
    /// Start this many children that idle (and ignore SIGTERM too when
    /// `--ignore-sigterm` is given).
    #[arg(long, default_value_t = 0)]
    children: u32,
    /// Start a grandchild that calls `setsid` (leaving the process group).
    #[arg(long)]
    setsid_grandchild: bool,
    /// Append one line per start (`<pid> <unix ms>`) to this file.
    #[arg(long)]
    starts_file: Option<PathBuf>,
    /// Append the pid of every process this pod started (itself included)
    /// to this file, one per line.
    #[arg(long)]
    pids_file: Option<PathBuf>,
    /// Write the environment to this file (`NAME=value` lines), once.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Allocate and touch this many MiB at start; exit with status 3 when
    /// the allocation is refused (a memory limit).
    #[arg(long, value_name = "MIB")]
    allocate_mib: Option<usize>,
    /// Internal: idle forever as a child (`setsid` first when asked).
    #[arg(long, hide = true)]
    idle: bool,
    /// Internal: with `--idle`, call `setsid` first.
    #[arg(long, hide = true)]
    setsid: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.ignore_sigterm {
        // Blocked, SIGTERM stays pending forever: ignored without an unsafe
        // handler. Done before any thread or child exists, so all inherit it.
        let mut term = nix::sys::signal::SigSet::empty();
        term.add(nix::sys::signal::Signal::SIGTERM);
        term.thread_block().expect("block SIGTERM");
    }
    if let Some(file) = &args.pids_file {
        append(file, &std::process::id().to_string());
    }
    if args.idle {
        if args.setsid {
            let _ = nix::unistd::setsid();
        }
        idle();
    }
    if let Some(file) = &args.starts_file {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        append(file, &format!("{} {ms}", std::process::id()));
    }
    if let Some(file) = &args.env_file {
        let env: String = std::env::vars()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        let _ = std::fs::write(file, env);
    }
    if let Some(mib) = args.allocate_mib {
        let mut memory: Vec<u8> = Vec::new();
        if let Err(e) = memory.try_reserve_exact(mib << 20) {
            eprintln!("drover-test-pod: allocating {mib} MiB failed: {e}");
            return ExitCode::from(3);
        }
        // Touched, so it is really used (a cgroup limit counts only pages).
        memory.resize(mib << 20, 1);
        println!("drover-test-pod: holding {} MiB", memory.len() >> 20);
        std::mem::forget(memory);
    }
    let me = std::env::current_exe().expect("own path");
    let child = |setsid: bool| {
        let mut command = Command::new(&me);
        command.arg("--idle");
        if setsid {
            command.arg("--setsid");
        }
        if args.ignore_sigterm {
            command.arg("--ignore-sigterm");
        }
        if let Some(file) = &args.pids_file {
            command.arg("--pids-file").arg(file);
        }
        // Never waited for: the test checks these die with the pod.
        let _ = command.spawn();
    };
    for _ in 0..args.children {
        child(false);
    }
    if args.setsid_grandchild {
        child(true);
    }
    if let Some(port) = args.status_port {
        let unhealthy_if = args.unhealthy_if.clone();
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("drover-test-pod: cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::from(2);
            }
        };
        std::thread::spawn(move || serve(listener, unhealthy_if.as_deref()));
    }
    println!("drover-test-pod {} started", std::process::id());
    match args.exit_after {
        Some(after) => {
            std::thread::sleep(after);
            eprintln!("drover-test-pod: exiting with {} as asked", args.exit_code);
            ExitCode::from(args.exit_code)
        }
        None => idle(),
    }
}

fn idle() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Appends `line` in one `write` call: the pod's processes append to the
/// same files at once, and `O_APPEND` keeps each single write whole (a
/// formatted `writeln!` may split a line into several writes that then
/// interleave with another process's).
fn append(file: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// A minimal HTTP/1.x responder: one request per connection.
fn serve(listener: TcpListener, unhealthy_if: Option<&Path>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => continue,
        });
        // Read the request head up to its blank line.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" || line == "\n" {
                break;
            }
            line.clear();
        }
        let healthy = unhealthy_if.is_none_or(|f| !f.exists());
        let (status, body) = if healthy {
            ("200 OK", "ok\n")
        } else {
            ("503 Service Unavailable", "unhealthy\n")
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
