//! Ctrl-C and SIGTERM handling.
//!
//! xtask itself never dies on a signal: it forwards SIGTERM to the children it
//! registered (cargo, etcd, the orchestrator) and lets its normal control flow
//! unwind, so the `Drop` guards stop etcd and delete its data directory
//! whatever happens. A terminal's Ctrl-C already reaches the children through
//! the shared process group; forwarding again is harmless.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Install the handler; call once, first thing in `main`.
pub(crate) fn install() {
    let installed = ctrlc::set_handler(|| {
        let first = !INTERRUPTED.swap(true, Ordering::SeqCst);
        if first {
            eprintln!("\nxtask: interrupted, stopping child processes and cleaning up...");
        }
        for pid in CHILDREN.lock().iter() {
            terminate(*pid);
        }
    });
    if let Err(e) = installed {
        eprintln!("xtask: warning: cannot install the Ctrl-C handler: {e}");
    }
}

/// Send SIGTERM to `pid`. `kill(1)` instead of libc: this crate forbids
/// unsafe code. Only call it for a child that was not reaped yet, so that
/// the pid cannot belong to another process.
pub(crate) fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// True once Ctrl-C or SIGTERM was received.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Forward signals to `pid` until it is unregistered.
pub(crate) fn register(pid: u32) {
    CHILDREN.lock().push(pid);
}

pub(crate) fn unregister(pid: u32) {
    CHILDREN.lock().retain(|p| *p != pid);
}
