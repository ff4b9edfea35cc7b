//! Persistence in a redb database inside the data directory.
//!
//! Why redb: it is pure Rust (no C toolchain, unlike RocksDB or LMDB
//! bindings), keeps everything in one file, and its commits are ACID with a
//! real fsync (`Durability::Immediate`) over copy-on-write B-trees, so a
//! crash or `kill -9` at any point leaves the last committed transaction
//! intact: exactly the guarantee acknowledged writes need, without a
//! hand-written log format. It is actively maintained.
//!
//! Layout (one file, `drover.redb`):
//! - `versions`: (revision, sub-revision) -> key + put or tombstone. Every
//!   version the MVCC index retains, so a restart rebuilds the same index and
//!   the same watch history (the whole retained window, not just the current
//!   state). Compaction deletes the versions it drops.
//! - `leases`: lease id -> granted TTL. Deadlines are not stored: a restart
//!   gives every lease its full TTL, as etcd does on a leader change.
//! - `meta`: current revision, compact revision, next lease id.
//!
//! A group commit is made durable by the write-ahead log in front of the
//! database (`drover.wal`, see [`super::wal`]): appended there and synced,
//! then applied to the database without a sync. `commit` returns only after
//! the log's sync, and only then are the writes acknowledged and made
//! visible. When the log is full the commit is a durable database commit (a
//! checkpoint) that also advances `wal_generation`, so that the log starts
//! over; opening replays the log's records of the current generation.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::mvcc::Version;
use super::state::Journal;
use super::wal::Wal;
use crate::{KeyValue, LeaseId, Revision, StoreError};

const VERSIONS: TableDefinition<'static, (i64, u32), &[u8]> = TableDefinition::new("versions");
const LEASES: TableDefinition<'static, i64, i64> = TableDefinition::new("leases");
const META: TableDefinition<'static, &str, i64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compact_revision";
const META_NEXT_LEASE: &str = "next_lease_id";
/// Which records of the write-ahead log follow the database's last durable
/// commit.
const META_WAL_GENERATION: &str = "wal_generation";

pub(crate) const FILE_NAME: &str = "drover.redb";

const TAG_TOMBSTONE: u8 = 0;
const TAG_PUT: u8 = 1;

fn storage(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Storage {
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Storage {
        message: format!("corrupt database: {what}"),
        source: None,
    }
}

/// Everything a restart needs to rebuild the in-memory state.
#[derive(Debug)]
pub(crate) struct Restored {
    /// Retained versions in (revision, sub-revision) order.
    pub(crate) versions: Vec<(Vec<u8>, Version)>,
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    pub(crate) next_lease_id: LeaseId,
    pub(crate) leases: Vec<(LeaseId, i64)>,
}

/// Meta values written with every commit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    pub(crate) next_lease_id: LeaseId,
}

#[derive(Debug)]
pub(crate) struct Durable {
    db: Database,
    path: PathBuf,
    /// Commits run one at a time (one commit job); the lock is uncontended.
    wal: Mutex<Wal>,
    /// Tests make commits fail to check what a storage failure does.
    #[cfg(test)]
    pub(crate) fail_commits: std::sync::atomic::AtomicBool,
    /// While set, commits wait before writing (tests: a slow disk).
    #[cfg(test)]
    pub(crate) hold_commits: std::sync::atomic::AtomicBool,
    /// Commits begun, so tests can tell when one is under way.
    #[cfg(test)]
    pub(crate) commits_started: std::sync::atomic::AtomicU64,
}

impl Durable {
    /// Open (or create) the database in `dir` with a write-ahead log of
    /// `wal_bytes`, replay the log and read everything back.
    pub(crate) fn open(
        dir: &Path,
        fresh_lease_id: LeaseId,
        wal_bytes: u64,
    ) -> Result<(Durable, Restored), StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage(format!("cannot create data directory {}", dir.display()), e))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| storage(format!("cannot open database {}", path.display()), e))?;
        // Create the tables so that reads of a fresh database find them.
        write(&db, &path, Durability::Immediate, |txn| {
            txn.open_table(VERSIONS)?;
            txn.open_table(LEASES)?;
            txn.open_table(META)?;
            Ok(())
        })?;
        let generation = read_generation(&db)
            .map_err(|e| storage(format!("read of {} failed", path.display()), e))?;
        let (mut wal, replay) = Wal::open(dir, wal_bytes, generation)?;
        if !replay.is_empty() {
            // One durable commit of everything the log held (a checkpoint),
            // so the log starts over.
            let meta = replay.last().expect("not empty").meta;
            write(&db, &path, Durability::Immediate, |txn| {
                for batch in &replay {
                    apply(txn, &batch.journal, batch.meta)?;
                }
                txn.open_table(META)?
                    .insert(META_WAL_GENERATION, generation as i64 + 1)?;
                Ok(())
            })?;
            wal.restart(generation + 1);
            tracing::info!(
                batches = replay.len(),
                revision = meta.revision,
                "replayed the write-ahead log"
            );
        }
        let durable = Durable {
            db,
            path,
            wal: Mutex::new(wal),
            #[cfg(test)]
            fail_commits: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            hold_commits: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            commits_started: std::sync::atomic::AtomicU64::new(0),
        };
        let restored = durable.read_all(fresh_lease_id)?;
        Ok((durable, restored))
    }

    fn read_all(&self, fresh_lease_id: LeaseId) -> Result<Restored, StoreError> {
        let message = || format!("read of {} failed", self.path.display());
        let read = || -> Result<Restored, redb::Error> {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let get = |name: &str| -> Result<Option<i64>, redb::Error> {
                Ok(meta.get(name)?.map(|v| v.value()))
            };
            let revision = get(META_REVISION)?.unwrap_or(1);
            let compacted = get(META_COMPACTED)?.unwrap_or(0);
            let next_lease_id = get(META_NEXT_LEASE)?.unwrap_or(fresh_lease_id);
            let mut leases = Vec::new();
            for row in txn.open_table(LEASES)?.iter()? {
                let (id, ttl) = row?;
                leases.push((id.value(), ttl.value()));
            }
            let mut versions = Vec::new();
            for row in txn.open_table(VERSIONS)?.iter()? {
                let (at, bytes) = row?;
                let (rev, sub) = at.value();
                // Decoded below, outside redb's error type; the raw row sits
                // in the key slot until then.
                versions.push((bytes.value().to_vec(), Version { rev, sub, kv: None }));
            }
            Ok(Restored {
                versions,
                revision,
                compacted,
                next_lease_id,
                leases,
            })
        };
        let mut restored = read().map_err(|e| storage(message(), e))?;
        // Decode the raw rows (stashed in the key slot above).
        for (raw, version) in &mut restored.versions {
            let (key, kv) = decode(raw, version.rev)?;
            *raw = key;
            version.kv = kv;
        }
        Ok(restored)
    }

    /// Persist one group commit durably: in the log, or, when the log is
    /// full, by a checkpoint.
    pub(crate) fn commit(&self, journal: &Journal, meta: Meta) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering::SeqCst;
            self.commits_started.fetch_add(1, SeqCst);
            while self.hold_commits.load(SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        #[cfg(test)]
        if self.fail_commits.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(storage(
                "injected commit failure",
                std::io::Error::other("injected by a test"),
            ));
        }
        let mut wal = self.wal.lock();
        if wal.append(journal, meta)? {
            // Durable in the log: the database catches up without a sync.
            return write(&self.db, &self.path, Durability::None, |txn| {
                apply(txn, journal, meta)
            });
        }
        let next = wal.generation() + 1;
        write(&self.db, &self.path, Durability::Immediate, |txn| {
            apply(txn, journal, meta)?;
            txn.open_table(META)?
                .insert(META_WAL_GENERATION, next as i64)?;
            Ok(())
        })?;
        wal.restart(next);
        Ok(())
    }
}

fn write(
    db: &Database,
    path: &Path,
    durability: Durability,
    f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
) -> Result<(), StoreError> {
    let message = || format!("write to {} failed", path.display());
    let mut txn = db.begin_write().map_err(|e| storage(message(), e))?;
    txn.set_durability(durability)
        .map_err(|e| storage(message(), e))?;
    f(&txn).map_err(|e| storage(message(), e))?;
    txn.commit().map_err(|e| storage(message(), e))
}

/// One group commit's effects on the tables: row inserts and removals only,
/// so applying it again (a log replay) changes nothing.
fn apply(txn: &redb::WriteTransaction, journal: &Journal, meta: Meta) -> Result<(), redb::Error> {
    {
        let mut versions = txn.open_table(VERSIONS)?;
        for (at, row) in journal.version_rows() {
            versions.insert(at, row)?;
        }
        for at in &journal.removed {
            versions.remove(*at)?;
        }
    }
    {
        let mut leases = txn.open_table(LEASES)?;
        for (id, ttl) in &journal.granted {
            leases.insert(*id, *ttl)?;
        }
        for id in &journal.revoked {
            leases.remove(*id)?;
        }
    }
    let mut table = txn.open_table(META)?;
    table.insert(META_REVISION, meta.revision)?;
    table.insert(META_COMPACTED, meta.compacted)?;
    table.insert(META_NEXT_LEASE, meta.next_lease_id)?;
    Ok(())
}

fn read_generation(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    Ok(meta
        .get(META_WAL_GENERATION)?
        .map_or(0, |v| v.value().max(0) as u64))
}

/// `[key len: u32 LE][key][tag]` then, for a put,
/// `[create_revision][version][lease]` (i64 LE each) and the value.
pub(crate) fn encode(key: &[u8], kv: Option<&KeyValue>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    match kv {
        None => out.push(TAG_TOMBSTONE),
        Some(kv) => {
            out.push(TAG_PUT);
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            out.extend_from_slice(&kv.version.to_le_bytes());
            out.extend_from_slice(&kv.lease.to_le_bytes());
            out.extend_from_slice(&kv.value);
        }
    }
}

fn decode(bytes: &[u8], rev: Revision) -> Result<(Vec<u8>, Option<KeyValue>), StoreError> {
    let take = |bytes: &[u8], n: usize| -> Result<(Vec<u8>, usize), StoreError> {
        bytes
            .get(..n)
            .map(|b| (b.to_vec(), n))
            .ok_or_else(|| corrupt("truncated version row"))
    };
    let (len, _) = take(bytes, 4)?;
    let key_len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let rest = &bytes[4..];
    let (key, _) = take(rest, key_len)?;
    let rest = &rest[key_len..];
    match rest.first() {
        Some(&TAG_TOMBSTONE) => Ok((key, None)),
        Some(&TAG_PUT) => {
            let rest = &rest[1..];
            let (nums, _) = take(rest, 24)?;
            let num = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&nums[i * 8..i * 8 + 8]);
                i64::from_le_bytes(b)
            };
            let kv = KeyValue {
                key: key.clone(),
                value: rest[24..].to_vec(),
                create_revision: num(0),
                mod_revision: rev,
                version: num(1),
                lease: num(2),
            };
            Ok((key, Some(kv)))
        }
        _ => Err(corrupt("unknown version tag")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: b"value".to_vec(),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 77,
        };
        let mut buf = Vec::new();
        encode(b"k", Some(&kv), &mut buf);
        assert_eq!(decode(&buf, 9).unwrap(), (b"k".to_vec(), Some(kv)));
        buf.clear();
        encode(b"gone", None, &mut buf);
        assert_eq!(decode(&buf, 9).unwrap(), (b"gone".to_vec(), None));
        assert!(decode(&buf[..3], 9).is_err());
    }

    #[test]
    fn commits_are_read_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, restored) = Durable::open(dir.path(), 5, 1 << 16).unwrap();
        assert_eq!(
            (
                restored.revision,
                restored.compacted,
                restored.next_lease_id
            ),
            (1, 0, 5)
        );
        let mut journal = Journal::new(true);
        let kv = KeyValue {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            lease: 5,
        };
        journal.record_version(2, 0, b"a", Some(&kv));
        journal.granted.push((5, 30));
        let meta = Meta {
            revision: 2,
            compacted: 0,
            next_lease_id: 6,
        };
        durable.commit(&journal, meta).unwrap();
        drop(durable);
        let (_durable, restored) = Durable::open(dir.path(), 1, 1 << 16).unwrap();
        assert_eq!(restored.revision, 2);
        assert_eq!(restored.next_lease_id, 6);
        assert_eq!(restored.leases, vec![(5, 30)]);
        assert_eq!(
            restored.versions,
            vec![(
                b"a".to_vec(),
                Version {
                    rev: 2,
                    sub: 0,
                    kv: Some(kv)
                }
            )]
        );
    }

    fn put_journal(rev: i64, key: &str, value: &str) -> (Journal, Meta, KeyValue) {
        let kv = KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        };
        let mut journal = Journal::new(true);
        journal.record_version(rev, 0, key.as_bytes(), Some(&kv));
        let meta = Meta {
            revision: rev,
            compacted: 0,
            next_lease_id: 9,
        };
        (journal, meta, kv)
    }

    fn restored_keys(restored: &Restored) -> Vec<(Vec<u8>, i64)> {
        restored
            .versions
            .iter()
            .map(|(key, v)| (key.clone(), v.rev))
            .collect()
    }

    /// A power loss after the log's sync loses the database's unsynced
    /// commits: here the database file is put back as it was before them.
    /// Everything acknowledged comes back from the log.
    #[test]
    fn commits_only_in_the_log_are_replayed_after_the_database_lost_them() {
        let dir = tempfile::tempdir().unwrap();
        let db_file = dir.path().join(FILE_NAME);
        let (durable, _) = Durable::open(dir.path(), 1, 1 << 16).unwrap();
        drop(durable);
        let before = std::fs::read(&db_file).unwrap();
        let (durable, _) = Durable::open(dir.path(), 1, 1 << 16).unwrap();
        for rev in 2..=4 {
            let (journal, meta, _) = put_journal(rev, &format!("k{rev}"), "v");
            durable.commit(&journal, meta).unwrap();
        }
        drop(durable);
        std::fs::write(&db_file, &before).unwrap();
        let (durable, restored) = Durable::open(dir.path(), 1, 1 << 16).unwrap();
        assert_eq!(restored.revision, 4);
        assert_eq!(
            restored_keys(&restored),
            vec![
                (b"k2".to_vec(), 2),
                (b"k3".to_vec(), 3),
                (b"k4".to_vec(), 4)
            ]
        );
        // The replay was a checkpoint: the log starts over, and a later
        // commit lands after the replayed ones.
        let (journal, meta, _) = put_journal(5, "k5", "v");
        durable.commit(&journal, meta).unwrap();
        drop(durable);
        let (_, restored) = Durable::open(dir.path(), 1, 1 << 16).unwrap();
        assert_eq!(restored.revision, 5);
        assert_eq!(restored.versions.len(), 4);
    }

    /// With a log too small for most batches, commits checkpoint and the log
    /// wraps many times; every commit is read back, in order.
    #[test]
    fn a_small_log_checkpoints_and_wraps_without_losing_or_replaying_stale_records() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, _) = Durable::open(dir.path(), 1, 256).unwrap();
        for rev in 2..=60 {
            let value = "v".repeat((rev as usize * 7) % 90);
            let (journal, meta, _) = put_journal(rev, "k", &value);
            durable.commit(&journal, meta).unwrap();
        }
        drop(durable);
        let (_, restored) = Durable::open(dir.path(), 1, 256).unwrap();
        assert_eq!(restored.revision, 60);
        let revs: Vec<i64> = restored.versions.iter().map(|(_, v)| v.rev).collect();
        assert_eq!(revs, (2..=60).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #[test]
        fn any_row_round_trips(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
            numbers in (1i64..1 << 40, 1i64..1 << 20, 0i64..i64::MAX),
            rev in 1i64..1 << 40,
            tombstone in proptest::prelude::any::<bool>(),
        ) {
            let kv = (!tombstone).then(|| KeyValue {
                key: key.clone(),
                value,
                create_revision: numbers.0,
                mod_revision: rev,
                version: numbers.1,
                lease: numbers.2,
            });
            let mut buf = Vec::new();
            encode(&key, kv.as_ref(), &mut buf);
            proptest::prop_assert_eq!(decode(&buf, rev).unwrap(), (key, kv));
        }

        #[test]
        fn garbage_rows_are_errors_not_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = decode(&bytes, 1);
        }
    }
}
