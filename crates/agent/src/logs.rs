//! Size-capped pod logs: a launchable appends to `<home>/logs/<id>.log`
//! through a descriptor it holds (so its output survives an agent restart),
//! and the agent rotates by copy-then-truncate: past the cap, the file is
//! copied to `<id>.log.1` (replacing the previous one) and truncated; the
//! launchable's `O_APPEND` writes then continue at the new end. Lines written
//! between the copy and the truncation are lost, the known price of
//! copy-truncate (logrotate's `copytruncate`), paid only at rotation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a pod's logs are checked against the cap.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Rotates `file` when it holds more than `cap` bytes; true if it did.
pub fn rotate_if_larger(file: &Path, cap: u64) -> std::io::Result<bool> {
    let size = match std::fs::metadata(file) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if size <= cap {
        return Ok(false);
    }
    let mut rotated = file.as_os_str().to_owned();
    rotated.push(".1");
    std::fs::copy(file, PathBuf::from(rotated))?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)?
        .set_len(0)?;
    Ok(true)
}

/// Checks every `*.log` in `dir` every [`CHECK_EVERY`] until `stop`.
pub(crate) async fn rotate_loop(dir: PathBuf, cap: u64, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                match rotate_if_larger(&path, cap) {
                    Ok(true) => tracing::debug!(log = %path.display(), "rotated"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, log = %path.display(), "rotating the log failed")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_log_past_the_cap_is_kept_once_and_appends_restart_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("main.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_if_larger(&log, 100).unwrap(), "at the cap: kept");
        writer.write_all(b"b").unwrap();
        assert!(rotate_if_larger(&log, 100).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("main.log.1")).unwrap().len(),
            101
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        // The launchable's descriptor appends at the new end, not at 101.
        writer.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"after\n");
        assert!(!rotate_if_larger(&dir.path().join("missing.log"), 1).unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_rotates_every_log_of_the_pod_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (big, small) = (dir.path().join("a.log"), dir.path().join("b.log"));
        std::fs::write(&big, [b'x'; 64]).unwrap();
        std::fs::write(&small, [b'y'; 8]).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(rotate_loop(dir.path().to_owned(), 32, stop.clone()));
        tokio::time::sleep(CHECK_EVERY / 2).await;
        assert_eq!(std::fs::metadata(&big).unwrap().len(), 0, "checked at once");
        std::fs::write(&small, [b'y'; 40]).unwrap();
        tokio::time::sleep(CHECK_EVERY).await;
        assert_eq!(
            std::fs::metadata(&small).unwrap().len(),
            0,
            "checked again a period later"
        );
        assert!(dir.path().join("b.log.1").exists());
        stop.cancel();
        task.await.unwrap();
    }
}
