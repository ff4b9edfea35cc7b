//! Crash safety and restarts of the embedded store on disk.
//!
//! The SIGKILL test re-executes this test binary as a child process (selected
//! by an environment variable) that writes to a data directory with several
//! concurrent writers and prints every acknowledged put. The parent reads a
//! few hundred acknowledgements, kills the child with SIGKILL, reopens the
//! directory and checks that nothing acknowledged was lost.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
use drover_store::{Delete, EventKind, Get, LeaseId, Put, Store, StoreError, Watch};

/// Set (to a data directory) in the child process only.
const CHILD_DIR_VAR: &str = "DROVER_DURABILITY_CHILD_DIR";
/// The child's write-ahead log size, when not the default.
const CHILD_WAL_VAR: &str = "DROVER_DURABILITY_CHILD_WAL_BYTES";
/// The child's name in this binary (the libtest filter used to select it).
const CHILD_TEST: &str = "concurrent_acknowledged_puts_are_durable";
const ACKS_BEFORE_KILL: usize = 300;
const WRITERS: usize = 8;

/// An on-disk store in `dir` with the default configuration.
async fn open_default(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedConfig::default())
        .await
        .unwrap()
}

/// Puts `key` attached to `lease`.
async fn put_leased(store: &EmbeddedStore, key: &str, value: &str, lease: LeaseId) {
    store
        .put(Put::new(key, value).with_lease(lease))
        .await
        .unwrap();
}

/// Put `d/<writer>/<i>` from several writers until `limit` puts per writer
/// are done, reporting each acknowledged key and revision to `ack`.
async fn write_concurrently(
    store: &EmbeddedStore,
    per_writer: usize,
    ack: impl Fn(&str, i64) + Clone + Send + 'static,
) {
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let ack = ack.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let key = format!("d/{w}/{i:06}");
                let resp = store
                    .put(Put::new(key.clone(), format!("value {i}")))
                    .await
                    .unwrap();
                ack(&key, resp.revision);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Checks shared by both modes: every acknowledged key is there with the
/// acknowledged revision, revisions are one per put without gaps, and the
/// store takes new writes.
async fn assert_recovered(dir: &Path, acked: &BTreeMap<String, i64>) {
    let store = open_default(dir).await;
    let all = store.get(Get::prefix("d/")).await.unwrap();
    let stored: BTreeMap<String, i64> = all
        .kvs
        .iter()
        .map(|kv| (kv.key_str().into_owned(), kv.mod_revision))
        .collect();
    for (key, revision) in acked {
        assert_eq!(
            stored.get(key),
            Some(revision),
            "acknowledged put of {key} lost or changed"
        );
    }
    let current = store.current_revision().await.unwrap();
    assert_eq!(
        current,
        1 + stored.len() as i64,
        "one revision per put, nothing else"
    );
    let mut revisions: Vec<i64> = stored.values().copied().collect();
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (2..=current).collect::<Vec<_>>(),
        "no gaps, no duplicates"
    );
    let next = store.put(Put::new("after/restart", "ok")).await.unwrap();
    assert_eq!(next.revision, current + 1);
    store.close().await.unwrap();
    let reopened = open_default(dir).await;
    assert_eq!(
        reopened.get(Get::key("after/restart")).await.unwrap().count,
        1
    );
    reopened.close().await.unwrap();
}

/// In the child process: write until killed, printing `ACK <key> <revision>`
/// after each acknowledged put. Run directly: write a bounded amount, close,
/// and check everything acknowledged is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acknowledged_puts_are_durable() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        let mut config = EmbeddedConfig::default();
        if let Some(bytes) = std::env::var(CHILD_WAL_VAR)
            .ok()
            .and_then(|b| b.parse().ok())
        {
            config = config.with_wal_bytes(bytes);
        }
        let store = EmbeddedStore::open(&dir, config).await.unwrap();
        // Bounded even if the parent never kills us.
        let written = write_concurrently(&store, 20_000, |key, revision| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ACK {key} {revision}").unwrap();
            out.flush().unwrap();
        });
        tokio::time::timeout(Duration::from_secs(120), written)
            .await
            .ok();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(dir.path()).await;
    let acked = std::sync::Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
    let sink = acked.clone();
    write_concurrently(&store, 25, move |key, revision| {
        sink.lock().insert(key.to_owned(), revision);
    })
    .await;
    store.close().await.unwrap();
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), WRITERS * 25);
    assert_recovered(dir.path(), &acked).await;
}

#[tokio::test]
async fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_after_acks(dir.path(), ACKS_BEFORE_KILL, None).await;
}

/// With a write-ahead log of a few records, the child checkpoints and
/// wraps the log every few dozen commits, so kills land between a log
/// append and a checkpoint, just after one, or just after the log wrapped:
/// nothing acknowledged may be lost at any of several kill points.
#[tokio::test]
async fn sigkill_loses_no_acknowledged_write_across_log_checkpoints() {
    for acks in [150, 300, 450] {
        let dir = tempfile::tempdir().unwrap();
        sigkill_after_acks(dir.path(), acks, Some(2048)).await;
    }
}

/// Runs the writing child on `dir`, kills it with SIGKILL after `acks`
/// acknowledged puts, and checks that everything it acknowledged is there.
async fn sigkill_after_acks(dir: &Path, acks: usize, wal_bytes: Option<u64>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir);
    if let Some(bytes) = wal_bytes {
        command.env(CHILD_WAL_VAR, bytes.to_string());
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read acknowledgements on a plain thread until the child's stdout
    // closes, so the child never blocks or fails on a full or closed pipe;
    // signal once enough acks arrived. Every line read is an acknowledged
    // put, including those printed between the signal and the kill.
    let (enough_tx, enough_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue; // libtest's own output
            }
            let key = parts.next().unwrap().to_owned();
            let revision: i64 = parts.next().unwrap().parse().unwrap();
            acked.insert(key, revision);
            if acked.len() == acks {
                let _ = enough_tx.send(());
            }
        }
        acked
    });
    let enough =
        tokio::task::spawn_blocking(move || enough_rx.recv_timeout(Duration::from_secs(120)))
            .await
            .unwrap();
    // `Child::kill` is SIGKILL on unix: no destructor, no flush, no close.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let acked = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert!(
        enough.is_ok(),
        "the child stopped after {} acks",
        acked.len()
    );
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
    assert!(acked.len() >= acks);
    assert_recovered(dir, &acked).await;
}

#[tokio::test(start_paused = true)]
async fn leases_survive_a_restart_with_their_full_ttl_and_still_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_default(dir.path()).await;
    let lease = store.lease_grant(10).await.unwrap();
    let revoked = store.lease_grant(10).await.unwrap();
    put_leased(&store, "l/a", "1", lease.id).await;
    put_leased(&store, "l/b", "1", lease.id).await;
    store.put(Put::new("l/keep", "1")).await.unwrap();
    store.lease_revoke(revoked.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(store.lease_time_to_live(lease.id).await.unwrap().ttl, 2);
    store.close().await.unwrap();

    let store = open_default(dir.path()).await;
    let ttl = store.lease_time_to_live(lease.id).await.unwrap();
    assert_eq!(
        (ttl.ttl, ttl.granted_ttl),
        (10, 10),
        "full TTL again after a restart"
    );
    assert_eq!(ttl.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
    assert!(matches!(
        store.lease_time_to_live(revoked.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let fresh = store.lease_grant(5).await.unwrap();
    assert!(
        fresh.id != lease.id && fresh.id != revoked.id,
        "lease ids are not reused"
    );
    let mut watch = store.watch(Watch::prefix("l/")).await.unwrap();

    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(store.get(Get::prefix("l/")).await.unwrap().count, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next_batch())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.events.len(), 2);
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(
        batch.events[0].kv.mod_revision,
        batch.events[1].kv.mod_revision
    );
    let left = store.get(Get::prefix("l/")).await.unwrap();
    assert_eq!(left.kvs.len(), 1);
    assert_eq!(left.kvs[0].key, b"l/keep");
    store.close().await.unwrap();

    // The expiry itself was durable.
    let store = open_default(dir.path()).await;
    assert_eq!(store.get(Get::prefix("l/")).await.unwrap().count, 1);
    assert!(matches!(
        store.lease_keep_alive(lease.id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.delete(Delete::prefix("l/")).await.unwrap();
    store.close().await.unwrap();
}
