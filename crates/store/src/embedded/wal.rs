//! The write-ahead log in front of the database: what makes a group commit
//! durable with one small append and one `fdatasync`.
//!
//! Why: a durable redb commit rewrites the B-tree pages a batch touched and
//! syncs them (on a virtual disk about 270-500 µs for a one-key batch); an
//! append of the same batch to a preallocated file and an `fdatasync` costs
//! about 130 µs. etcd makes its writes durable the same way (a WAL synced per
//! batch, its bbolt backend committed in the background), so this is what
//! lets a single writer through the served etcd API match etcd.
//!
//! How: each group commit is appended here as one record and synced; only
//! then is it applied to the database with [`redb::Durability::None`] (in
//! the page cache, not synced) and acknowledged. When the log is full, the
//! next commit is a durable database commit instead (a checkpoint), which
//! also moves the database's WAL generation on: from then on the log is
//! rewritten from its start, and records of older generations left behind
//! in it are never replayed. On open, every record of the database's current
//! generation is applied again, in order, up to the first one that is torn,
//! zeroed or of another generation. Replaying a record the database already
//! holds is harmless: every effect of a batch is an insert or a removal of
//! whole rows, and replaying all of them in order ends in the state after
//! the last one.
//!
//! Record layout (little endian): `[payload length: u32][crc32 of the
//! generation and the payload: u32][generation: u64][payload]`, the payload
//! being a group commit's meta values and journal (see [`encode_batch`]).
//! The file is created at its full size (sparse), so appends do not grow it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::durable::Meta;
use super::state::Journal;
use crate::StoreError;

/// The log's file name in the data directory.
pub(crate) const FILE_NAME: &str = "drover.wal";

const HEADER: usize = 4 + 4 + 8;

/// The default log size: a checkpoint every 64 MiB of log (about 200,000
/// one-key batches).
pub const DEFAULT_WAL_BYTES: u64 = 64 << 20;

fn io_error(message: String, source: std::io::Error) -> StoreError {
    StoreError::Storage {
        message,
        source: Some(Box::new(source)),
    }
}

/// The open log: where the next record goes and its generation.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    size: u64,
    /// Where the next record is written.
    offset: u64,
    generation: u64,
    /// Reused for encoding, so an append allocates nothing in steady state.
    buffer: Vec<u8>,
}

/// One group commit read back from the log.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) journal: Journal,
    pub(crate) meta: Meta,
}

impl Wal {
    /// Opens (or creates) the log in `dir` with room for `size` bytes, and
    /// reads back the records of `generation`, which the next append
    /// follows.
    pub(crate) fn open(
        dir: &Path,
        size: u64,
        generation: u64,
    ) -> Result<(Wal, Vec<Batch>), StoreError> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(format!("cannot open the log {}", path.display()), e))?;
        let mut contents = Vec::new();
        (&file)
            .read_to_end(&mut contents)
            .map_err(|e| io_error(format!("cannot read the log {}", path.display()), e))?;
        let (batches, end) = read_records(&contents, generation)?;
        let size = size.max(contents.len() as u64).max(HEADER as u64 * 2);
        if (contents.len() as u64) < size {
            file.set_len(size)
                .map_err(|e| io_error(format!("cannot size the log {}", path.display()), e))?;
            file.sync_all()
                .map_err(|e| io_error(format!("cannot sync the log {}", path.display()), e))?;
        }
        let wal = Wal {
            file,
            path,
            size,
            offset: end as u64,
            generation,
            buffer: Vec::new(),
        };
        Ok((wal, batches))
    }

    /// The generation records are written with.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Appends one group commit and syncs it. `Ok(false)`: it does not fit
    /// in what is left of the log, nothing was written, and the caller
    /// checkpoints instead.
    pub(crate) fn append(&mut self, journal: &Journal, meta: Meta) -> Result<bool, StoreError> {
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; HEADER]);
        encode_batch(journal, meta, &mut self.buffer);
        let payload = self.buffer.len() - HEADER;
        if self.offset + self.buffer.len() as u64 > self.size || payload > u32::MAX as usize {
            return Ok(false);
        }
        let generation = self.generation.to_le_bytes();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&generation);
        crc.update(&self.buffer[HEADER..]);
        self.buffer[0..4].copy_from_slice(&(payload as u32).to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        self.buffer[8..16].copy_from_slice(&generation);
        let message = || format!("cannot append to the log {}", self.path.display());
        self.file
            .write_all_at(&self.buffer, self.offset)
            .map_err(|e| io_error(message(), e))?;
        self.file.sync_data().map_err(|e| io_error(message(), e))?;
        self.offset += self.buffer.len() as u64;
        Ok(true)
    }

    /// After a checkpoint that moved the database to `generation`: write
    /// from the start of the log again.
    pub(crate) fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.offset = 0;
    }
}

/// The records of `generation` at the start of `contents`, and where they
/// end: stops at the first record that is zeroed, torn, corrupt or of
/// another generation (all of which mean "never acknowledged" or "already
/// checkpointed").
fn read_records(contents: &[u8], generation: u64) -> Result<(Vec<Batch>, usize), StoreError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while let Some(header) = contents.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let record_generation = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if len == 0 || record_generation != generation {
            break;
        }
        let Some(payload) = contents.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..16]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        // A record whose checksum holds but which does not decode was
        // written wrong: that is corruption, not a torn tail.
        batches.push(decode_batch(payload)?);
        at += HEADER + len;
    }
    Ok((batches, at))
}

/// `[revision][compacted][next lease id]` (i64 each), then the versions
/// (`[count: u32]`, each `[revision: i64][sub: u32][row length: u32][row]`),
/// the removed versions (`[count]`, each `[revision][sub]`), the granted
/// leases (`[count]`, each `[id: i64][ttl: i64]`) and the revoked ones
/// (`[count]`, each `[id]`).
pub(crate) fn encode_batch(journal: &Journal, meta: Meta, out: &mut Vec<u8>) {
    for n in [meta.revision, meta.compacted, meta.next_lease_id] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let count = |n: usize, out: &mut Vec<u8>| out.extend_from_slice(&(n as u32).to_le_bytes());
    count(journal.versions.len(), out);
    for ((rev, sub), row) in journal.version_rows() {
        out.extend_from_slice(&rev.to_le_bytes());
        out.extend_from_slice(&sub.to_le_bytes());
        out.extend_from_slice(&(row.len() as u32).to_le_bytes());
        out.extend_from_slice(row);
    }
    count(journal.removed.len(), out);
    for (rev, sub) in &journal.removed {
        out.extend_from_slice(&rev.to_le_bytes());
        out.extend_from_slice(&sub.to_le_bytes());
    }
    count(journal.granted.len(), out);
    for (id, ttl) in &journal.granted {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&ttl.to_le_bytes());
    }
    count(journal.revoked.len(), out);
    for id in &journal.revoked {
        out.extend_from_slice(&id.to_le_bytes());
    }
}

/// Reads what [`encode_batch`] wrote; an error names what is malformed.
pub(crate) fn decode_batch(bytes: &[u8]) -> Result<Batch, StoreError> {
    let mut reader = Reader { bytes, at: 0 };
    let meta = Meta {
        revision: reader.i64()?,
        compacted: reader.i64()?,
        next_lease_id: reader.i64()?,
    };
    let mut journal = Journal::new(true);
    for _ in 0..reader.u32()? {
        let rev = reader.i64()?;
        let sub = reader.u32()?;
        let len = reader.u32()? as usize;
        journal.push_row(rev, sub, reader.take(len)?);
    }
    for _ in 0..reader.u32()? {
        journal.removed.push((reader.i64()?, reader.u32()?));
    }
    for _ in 0..reader.u32()? {
        journal.granted.push((reader.i64()?, reader.i64()?));
    }
    for _ in 0..reader.u32()? {
        journal.revoked.push(reader.i64()?);
    }
    if reader.at != bytes.len() {
        return Err(malformed("trailing bytes after a batch"));
    }
    Ok(Batch { journal, meta })
}

fn malformed(what: &str) -> StoreError {
    StoreError::Storage {
        message: format!("corrupt log record: {what}"),
        source: None,
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], StoreError> {
        let taken = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| malformed("truncated batch"))?;
        self.at += n;
        Ok(taken)
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::KeyValue;

    fn journal_of(puts: &[(i64, &str, &str)], removed: &[(i64, u32)]) -> Journal {
        let mut journal = Journal::new(true);
        for (rev, key, value) in puts {
            let kv = KeyValue {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                create_revision: *rev,
                mod_revision: *rev,
                version: 1,
                lease: 0,
            };
            journal.record_version(*rev, 0, key.as_bytes(), Some(&kv));
        }
        journal.removed.extend_from_slice(removed);
        journal
    }

    fn meta(revision: i64) -> Meta {
        Meta {
            revision,
            compacted: 0,
            next_lease_id: 7,
        }
    }

    fn rows(journal: &Journal) -> Vec<((i64, u32), Vec<u8>)> {
        journal
            .version_rows()
            .map(|(at, row)| (at, row.to_vec()))
            .collect()
    }

    #[test]
    fn appended_batches_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, none) = Wal::open(dir.path(), 4096, 3).unwrap();
        assert!(none.is_empty());
        assert!(
            wal.append(&journal_of(&[(2, "a", "1")], &[]), meta(2))
                .unwrap()
        );
        assert!(
            wal.append(&journal_of(&[(3, "b", "2")], &[(2, 0)]), meta(3))
                .unwrap()
        );
        drop(wal);
        let (_, batches) = Wal::open(dir.path(), 4096, 3).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].meta.revision, 2);
        assert_eq!(
            rows(&batches[1].journal),
            rows(&journal_of(&[(3, "b", "2")], &[]))
        );
        assert_eq!(batches[1].journal.removed, vec![(2, 0)]);
    }

    #[test]
    fn a_full_log_refuses_the_append_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 128, 1).unwrap();
        let big = "v".repeat(200);
        assert!(
            !wal.append(&journal_of(&[(2, "a", &big)], &[]), meta(2))
                .unwrap()
        );
        assert!(
            wal.append(&journal_of(&[(2, "a", "1")], &[]), meta(2))
                .unwrap()
        );
        drop(wal);
        let (_, batches) = Wal::open(dir.path(), 128, 1).unwrap();
        assert_eq!(batches.len(), 1);
    }

    #[test]
    fn records_of_an_older_generation_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 1).unwrap();
        for rev in 2..6 {
            wal.append(&journal_of(&[(rev, "k", "old")], &[]), meta(rev))
                .unwrap();
        }
        // A checkpoint moved the database to generation 2; one new record
        // overwrites the first old one, the three after it stay in the file.
        wal.restart(2);
        wal.append(&journal_of(&[(6, "k", "new")], &[]), meta(6))
            .unwrap();
        drop(wal);
        let (_, batches) = Wal::open(dir.path(), 4096, 2).unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].meta.revision, 6);
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 4096, 1).unwrap();
        for rev in 2..5 {
            wal.append(&journal_of(&[(rev, "k", "v")], &[]), meta(rev))
                .unwrap();
        }
        let end = wal.offset as usize;
        drop(wal);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte in the last record's payload: its checksum fails.
        bytes[end - 3] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut wal, batches) = Wal::open(dir.path(), 4096, 1).unwrap();
        assert_eq!(batches.len(), 2, "the records before the bad one");
        // The next append overwrites the bad record.
        wal.append(&journal_of(&[(4, "k", "again")], &[]), meta(4))
            .unwrap();
        drop(wal);
        let (_, batches) = Wal::open(dir.path(), 4096, 1).unwrap();
        assert_eq!(batches.len(), 3);
    }

    #[test]
    fn a_record_with_a_valid_checksum_that_does_not_decode_is_an_error() {
        let mut payload = Vec::new();
        encode_batch(&journal_of(&[(2, "a", "1")], &[]), meta(2), &mut payload);
        payload.push(0);
        let mut record = Vec::new();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&1u64.to_le_bytes());
        crc.update(&payload);
        record.extend_from_slice(&crc.finalize().to_le_bytes());
        record.extend_from_slice(&1u64.to_le_bytes());
        record.extend_from_slice(&payload);
        let error = read_records(&record, 1).unwrap_err();
        assert!(error.to_string().contains("trailing bytes"), "{error}");
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            puts in proptest::collection::vec((1i64..1 << 40, "[a-z/]{1,12}", "[ -~]{0,40}"), 0..8),
            removed in proptest::collection::vec((1i64..1 << 40, 0u32..4), 0..4),
            granted in proptest::collection::vec((1i64..i64::MAX, 1i64..1 << 20), 0..3),
            revoked in proptest::collection::vec(1i64..i64::MAX, 0..3),
            revision in 1i64..1 << 40,
        ) {
            let puts: Vec<(i64, &str, &str)> =
                puts.iter().map(|(r, k, v)| (*r, k.as_str(), v.as_str())).collect();
            let mut journal = journal_of(&puts, &removed);
            journal.granted = granted.clone();
            journal.revoked = revoked.clone();
            let mut bytes = Vec::new();
            encode_batch(&journal, meta(revision), &mut bytes);
            let batch = decode_batch(&bytes).unwrap();
            prop_assert_eq!(batch.meta.revision, revision);
            prop_assert_eq!(rows(&batch.journal), rows(&journal));
            prop_assert_eq!(&batch.journal.removed, &removed);
            prop_assert_eq!(&batch.journal.granted, &granted);
            prop_assert_eq!(&batch.journal.revoked, &revoked);
        }

        #[test]
        fn garbage_logs_are_errors_or_short_replays_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
            generation in 0u64..3,
        ) {
            let _ = read_records(&bytes, generation);
            let _ = decode_batch(&bytes);
        }
    }
}
