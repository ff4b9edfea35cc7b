//! The embedded backend: etcd v3 semantics in process, durable in a data
//! directory through [redb](https://docs.rs/redb), or purely in memory.
//!
//! # Design
//!
//! - **MVCC index in memory** (`mvcc`): every retained version of every key
//!   and the events of every retained revision. Reads take a shared lock and
//!   read at the *visible* revision.
//! - **Pipelined group commit** (`writer`): each write is applied in order
//!   by the task that makes it (new revisions stay invisible) and joins the
//!   pending batch; a committer thread persists pending batches one at a
//!   time, each in one fsync'd redb transaction, then publishes the new
//!   visible revision and acknowledges the batch. While one batch's fsync
//!   runs, the next batch accumulates. A write is acknowledged only once
//!   durable, and no read or watch can see a write before it is durable.
//!   Concurrent writers share one fsync.
//! - **Leases** (`leases`) expire on the tokio clock (so paused-time tests
//!   work); expired leases are revoked (by a timer task, and before every
//!   write), deleting their keys in one revision per lease. After a restart
//!   every lease gets its full TTL again.
//! - **Watches** (`watcher`) each run a task that pulls events from the
//!   retained history whenever the visible revision moves: writers never wait
//!   for watchers, and a slow watcher catches up from history later (or gets
//!   [`StoreError::Compacted`] if that history is gone).
//! - **History**: [`EmbeddedConfig::history_window`] revisions are retained
//!   (default [`DEFAULT_HISTORY_WINDOW`]) for reads at past revisions and
//!   watch catch-up; older history is compacted automatically. The retained
//!   history is persisted too, so after a restart watches can resume from any
//!   revision in the window.
//!
//! - **Reads** (`get`, read-only txns, `current_revision`, lease
//!   time-to-live) never go through the write path: they read the visible state
//!   under a shared lock. Keep-alives only move an in-memory deadline (etcd
//!   does not persist them either).
//! - **Storage failures**: a failed group commit fails every request of the
//!   batch with [`StoreError::Storage`] (nothing of it becomes visible), and
//!   the store then refuses all further writes, because its memory is ahead
//!   of its disk; reopening the directory recovers the last durable state.
//!
//! Compaction follows etcd exactly: after `compact(r)`, reads at revision `r`
//! or later work, reads below `r` and watches starting below `r` fail with
//! [`StoreError::Compacted`].
//!
//! ```
//! use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
//! use drover_store::{Put, Store, Watch};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_store::StoreError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default()).await?;
//! let mut watch = store.watch(Watch::prefix("/drover/nodes/")).await?;
//! let lease = store.lease_grant(10).await?;
//! store.put(Put::new("/drover/nodes/n1", "addr").with_lease(lease.id)).await?;
//! let batch = watch.next_batch().await.unwrap()?;
//! assert_eq!(batch.events[0].kv.lease, lease.id);
//! store.close().await?;
//! # Ok(()) }
//! ```

mod durable;
mod leases;
mod mvcc;
mod state;
#[cfg(test)]
mod tests;
mod wal;
mod watcher;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use crate::limits::{
    validate_delete, validate_get, validate_lease_ttl, validate_put, validate_txn, validate_watch,
};
use crate::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, Store, StoreError, StoreStatus, Txn, TxnOp, TxnOpResponse,
    TxnResponse, Watch, WatchStream,
};
use durable::Durable;
use leases::Leases;
use mvcc::{KeySpan, Mvcc};
use state::State;
use writer::{WriteOp, WriteReply, Writes};

/// Revisions of history kept by default (reads at past revisions and watch
/// catch-up reach this far back). etcd's own default is to keep everything
/// until an explicit or periodic compaction; a control plane only needs
/// enough for watchers to resume after a hiccup.
pub const DEFAULT_HISTORY_WINDOW: u64 = 10_000;

/// Settings of an [`EmbeddedStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddedConfig {
    /// Revisions of history to retain; older history is compacted
    /// automatically (in steps of an eighth of the window). `None` keeps
    /// everything until [`Store::compact`] is called.
    pub history_window: Option<u64>,
    /// Lease TTLs below this (seconds) are raised to it, as etcd's minimum
    /// TTL. Default 1.
    pub min_lease_ttl_secs: i64,
    /// Undelivered batches a watch stream buffers before its watcher waits
    /// (and later catches up from history). Default 64.
    pub watch_buffer: usize,
    /// Most write requests persisted in one group commit. Writes beyond it
    /// wait (unapplied) until the next commit starts. Default 4096.
    pub max_group_commit: usize,
    /// How often a watch created with [`crate::Watch::progress_notify`] gets
    /// a progress notification when it delivered nothing in between.
    /// Default 10 minutes, as etcd.
    pub progress_notify_interval: std::time::Duration,
    /// Size of the write-ahead log (`drover.wal`) that makes each group
    /// commit durable with one append and one `fdatasync`; when it is full
    /// the database is synced (a checkpoint) and the log starts over. A
    /// larger log means rarer checkpoints and a longer replay after a crash.
    /// Default [`DEFAULT_WAL_BYTES`] (64 MiB).
    pub wal_bytes: u64,
}

pub use wal::DEFAULT_WAL_BYTES;

/// etcd's default progress notification interval.
pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(600);

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            history_window: Some(DEFAULT_HISTORY_WINDOW),
            min_lease_ttl_secs: 1,
            watch_buffer: 64,
            max_group_commit: 4096,
            progress_notify_interval: DEFAULT_PROGRESS_NOTIFY_INTERVAL,
            wal_bytes: DEFAULT_WAL_BYTES,
        }
    }
}

impl EmbeddedConfig {
    pub fn with_wal_bytes(mut self, bytes: u64) -> Self {
        self.wal_bytes = bytes;
        self
    }

    pub fn with_history_window(mut self, window: Option<u64>) -> Self {
        self.history_window = window;
        self
    }
    pub fn with_min_lease_ttl_secs(mut self, secs: i64) -> Self {
        self.min_lease_ttl_secs = secs;
        self
    }
    pub fn with_watch_buffer(mut self, batches: usize) -> Self {
        self.watch_buffer = batches;
        self
    }
    pub fn with_max_group_commit(mut self, requests: usize) -> Self {
        self.max_group_commit = requests;
        self
    }
    pub fn with_progress_notify_interval(mut self, interval: std::time::Duration) -> Self {
        self.progress_notify_interval = interval;
        self
    }
}

/// State shared by the store handles, the commit jobs and the watchers.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) state: RwLock<State>,
    pub(crate) config: EmbeddedConfig,
    pub(crate) writes: Writes,
    closed: AtomicBool,
    /// Turns of the lease expiry loop, so tests can tell waiting from
    /// spinning.
    #[cfg(test)]
    pub(crate) writer_wakeups: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Shared {
    core: Arc<Core>,
    visible: watch::Receiver<Revision>,
    expiry: JoinHandle<()>,
    data_dir: Option<PathBuf>,
    /// Weak, so that closing the store still closes the database.
    #[cfg(test)]
    durable: Option<std::sync::Weak<Durable>>,
}

impl Shared {
    /// Stop the background work: a running commit job finishes what is
    /// pending (then every watch ends), the expiry task ends.
    fn shut_down(&self) {
        self.expiry.abort();
        self.core.writes.stop();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The embedded store. Cheap to clone; all clones share one store. The
/// store stops when [`EmbeddedStore::close`] is called or the last clone is
/// dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmbeddedStore {
    // Not derived: the state holds every key and value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("data_dir", &self.shared.data_dir)
            .field("revision", &*self.shared.visible.borrow())
            .finish_non_exhaustive()
    }
}

/// A lease id that is unlikely to collide with ids handed out before (ids
/// are also persisted, so a reopened store continues after its last id).
fn fresh_lease_id() -> LeaseId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Positive, with room to count up for centuries.
    ((nanos >> 4) as i64 & (i64::MAX >> 2)).max(1)
}

impl EmbeddedStore {
    /// A store without persistence (for tests), with default settings.
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns its lease expiry task).
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedConfig::default())
    }

    /// A store without persistence, with `config`.
    ///
    /// # Panics
    /// Outside a tokio runtime (it spawns its lease expiry task).
    pub fn in_memory_with(config: EmbeddedConfig) -> Self {
        let state = State {
            mvcc: Mvcc::new(),
            leases: Leases::new(config.min_lease_ttl_secs, fresh_lease_id()),
        };
        Self::start(state, config, None, None)
    }

    /// Open (or create) a durable store in the data directory `dir`.
    ///
    /// Rebuilds the in-memory index from the database; every persisted lease
    /// gets its full TTL from now. One directory can be open in one store at
    /// a time (a second open fails with [`StoreError::Storage`]); call
    /// [`EmbeddedStore::close`] before reopening it.
    pub async fn open(dir: impl AsRef<Path>, config: EmbeddedConfig) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let opened = {
            let dir = dir.clone();
            let wal_bytes = config.wal_bytes;
            tokio::task::spawn_blocking(move || Durable::open(&dir, fresh_lease_id(), wal_bytes))
                .await
                .map_err(|e| StoreError::Storage {
                    message: "opening the database failed".into(),
                    source: Some(Box::new(e)),
                })??
        };
        let (durable, restored) = opened;
        let now = Instant::now();
        let mut leases = Leases::new(config.min_lease_ttl_secs, restored.next_lease_id);
        for (id, ttl) in &restored.leases {
            leases.restore(*id, *ttl, now);
        }
        let mvcc = Mvcc::restore(restored.versions, restored.revision, restored.compacted);
        for (key, lease) in mvcc.leased_keys() {
            if leases.contains(lease) {
                leases.attach(lease, key);
            } else {
                tracing::warn!(key = %String::from_utf8_lossy(key), lease, "key attached to an unknown lease");
            }
        }
        tracing::info!(
            dir = %dir.display(),
            revision = mvcc.current(),
            compact_revision = mvcc.compacted(),
            leases = restored.leases.len(),
            "embedded store opened"
        );
        let state = State { mvcc, leases };
        Ok(Self::start(
            state,
            config,
            Some(Arc::new(durable)),
            Some(dir),
        ))
    }

    fn start(
        state: State,
        config: EmbeddedConfig,
        durable: Option<Arc<Durable>>,
        data_dir: Option<PathBuf>,
    ) -> Self {
        let revision = state.mvcc.visible();
        let (visible_tx, visible) = watch::channel(revision);
        let meta = durable::Meta {
            revision: state.mvcc.current(),
            compacted: state.mvcc.compacted(),
            next_lease_id: state.leases.next_id(),
        };
        #[cfg(test)]
        let weak_durable = durable.as_ref().map(Arc::downgrade);
        let writes = Writes::new(visible_tx, durable, config.max_group_commit, meta);
        let core = Arc::new(Core {
            state: RwLock::new(state),
            config,
            writes,
            closed: AtomicBool::new(false),
            #[cfg(test)]
            writer_wakeups: std::sync::atomic::AtomicU64::new(0),
        });
        let span = tracing::info_span!(
            "embedded_store",
            dir = %data_dir.as_deref().map_or_else(|| "<memory>".into(), |d| d.display().to_string())
        );
        let expiry = tokio::spawn(writer::expiry_loop(core.clone()).instrument(span));
        EmbeddedStore {
            shared: Arc::new(Shared {
                core,
                visible,
                expiry,
                data_dir,
                #[cfg(test)]
                durable: weak_durable,
            }),
        }
    }

    /// The data directory, or `None` for an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.shared.data_dir.as_deref()
    }

    /// Finish every applied write, persist it, and stop the store and all
    /// watches. Later calls on any clone fail with [`StoreError::Closed`].
    ///
    /// Fails with [`StoreError::Storage`] when the store could not persist
    /// its last writes (the final group commit failed, or an earlier failed
    /// commit had stopped it); it is closed either way.
    pub async fn close(&self) -> Result<()> {
        self.shared.core.closed.store(true, Ordering::SeqCst);
        // Answered once everything applied before it is durable (a second
        // close is answered `Closed`, which is fine too).
        let flushed = self.shared.core.write(WriteOp::Close).await;
        self.shared.shut_down();
        // The database closes when the last commit job lets go of it.
        self.shared.core.writes.jobs_ended().await;
        match flushed {
            Err(error @ StoreError::Storage { .. }) => Err(error),
            _ => Ok(()),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.core.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteReply> {
        self.check_open()?;
        self.shared.core.write(op).await
    }

    /// For an expired lease not revoked yet: wait until it is (its keys
    /// are deleted durably), then report it gone.
    async fn lease_gone<T>(&self, id: LeaseId) -> Result<T> {
        self.submit(WriteOp::Barrier).await?;
        Err(StoreError::LeaseNotFound(id))
    }

    async fn submit_txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.submit_write(WriteOp::Txn(txn)).await
    }

    async fn submit_write(&self, op: WriteOp) -> Result<TxnResponse> {
        match self.submit(op).await? {
            WriteReply::Txn(resp) => Ok(resp),
            other => Err(unexpected(other)),
        }
    }

    /// A single put or delete, as a txn of that one op.
    async fn submit_one(&self, op: TxnOp) -> Result<TxnOpResponse> {
        let (kind, write): (_, fn(Txn) -> WriteOp) = if matches!(op, TxnOp::Put(_)) {
            ("put", WriteOp::SinglePut)
        } else {
            ("delete", WriteOp::Txn)
        };
        let mut resp = self.submit_write(write(Txn::new().and_then([op]))).await?;
        resp.responses.pop().ok_or_else(|| StoreError::Storage {
            message: format!("internal error: a {kind} got no response"),
            source: None,
        })
    }
}

fn unexpected_response(op: &str, resp: TxnOpResponse) -> StoreError {
    StoreError::Storage {
        message: format!("internal error: unexpected {op} response {resp:?}"),
        source: None,
    }
}

fn unexpected(reply: WriteReply) -> StoreError {
    // The write path answers each op with its own reply kind; anything else is a
    // bug in this module, reported rather than panicking in a caller.
    StoreError::Storage {
        message: format!("internal error: unexpected write reply {reply:?}"),
        source: None,
    }
}

impl Store for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, req: Get) -> Result<GetResponse> {
        validate_get(&req)?;
        self.check_open()?;
        let state = self.shared.core.state.read();
        state.mvcc.range(&req, state.mvcc.visible())
    }

    async fn put(&self, req: Put) -> Result<PutResponse> {
        validate_put(&req)?;
        match self.submit_one(TxnOp::Put(req)).await? {
            TxnOpResponse::Put(put) => Ok(put),
            other => Err(unexpected_response("put", other)),
        }
    }

    async fn delete(&self, req: Delete) -> Result<DeleteResponse> {
        validate_delete(&req)?;
        match self.submit_one(TxnOp::Delete(req)).await? {
            TxnOpResponse::Delete(delete) => Ok(delete),
            other => Err(unexpected_response("delete", other)),
        }
    }

    async fn txn(&self, req: Txn) -> Result<TxnResponse> {
        validate_txn(&req)?;
        self.check_open()?;
        if let Some(resp) = self.shared.core.state.read().mvcc.read_only_txn(&req) {
            return resp;
        }
        self.submit_txn(req).await
    }

    async fn watch(&self, req: Watch) -> Result<WatchStream> {
        validate_watch(&req)?;
        self.check_open()?;
        let core = self.shared.core.clone();
        let (sender, stream) = WatchStream::channel(core.config.watch_buffer.max(1));
        let next = match req.start_revision {
            0 => core.state.read().mvcc.visible() + 1,
            start => start,
        };
        let watcher = watcher::Watcher {
            core,
            visible: self.shared.visible.clone(),
            sender,
            span: KeySpan::new(&req.range),
            next,
            request: req.clone(),
        };
        static WATCH_IDS: AtomicU64 = AtomicU64::new(1);
        let span = tracing::debug_span!(
            "embedded_watch",
            watch_id = WATCH_IDS.fetch_add(1, Ordering::Relaxed),
            key = %String::from_utf8_lossy(req.range.start()),
            start = next,
        );
        tokio::spawn(watcher.run().instrument(span));
        Ok(stream)
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant> {
        validate_lease_ttl(ttl_secs)?;
        self.lease_grant_with_id(0, ttl_secs).await
    }

    async fn lease_grant_with_id(&self, id: LeaseId, ttl_secs: i64) -> Result<LeaseGrant> {
        validate_lease_ttl(ttl_secs)?;
        match self
            .submit(WriteOp::LeaseGrant { id, ttl: ttl_secs })
            .await?
        {
            WriteReply::Lease(grant) => Ok(grant),
            other => Err(unexpected(other)),
        }
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.check_open()?;
        Ok(self.shared.core.state.read().leases.ids(Instant::now()))
    }

    async fn status(&self) -> Result<StoreStatus> {
        self.check_open()?;
        let (revision, compact_revision, in_memory) = {
            let state = self.shared.core.state.read();
            (
                state.mvcc.visible(),
                state.mvcc.compacted(),
                state.mvcc.size_estimate(),
            )
        };
        let in_memory = i64::try_from(in_memory).unwrap_or(i64::MAX);
        let db_size_bytes = match &self.shared.data_dir {
            Some(dir) => {
                let path = dir.join(durable::FILE_NAME);
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| StoreError::Storage {
                        message: format!("reading the size of {}", path.display()),
                        source: Some(Box::new(e)),
                    })?;
                i64::try_from(meta.len()).unwrap_or(i64::MAX)
            }
            None => in_memory,
        };
        Ok(StoreStatus {
            revision,
            compact_revision,
            db_size_bytes,
            db_size_in_use_bytes: in_memory.min(db_size_bytes),
        })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.check_open()?;
        let now = Instant::now();
        let renewed = {
            let mut state = self.shared.core.state.write();
            if state.leases.is_expiring(id, now) {
                None
            } else {
                Some(state.leases.keep_alive(id, now))
            }
        };
        match renewed {
            Some(result) => result,
            None => self.lease_gone(id).await,
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.submit(WriteOp::LeaseRevoke(id)).await.map(drop)
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        self.check_open()?;
        let now = Instant::now();
        let ttl = {
            let state = self.shared.core.state.read();
            if state.leases.is_expiring(id, now) {
                None
            } else {
                Some(state.leases.time_to_live(id, now, |key| {
                    state.mvcc.visible_kv(key).is_some_and(|kv| kv.lease == id)
                }))
            }
        };
        match ttl {
            Some(result) => result,
            None => self.lease_gone(id).await,
        }
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(WriteOp::Compact(revision)).await.map(drop)
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.check_open()?;
        Ok(self.shared.core.state.read().mvcc.visible())
    }
}
