//! Writes: applied in place by the caller, persisted by a commit job in
//! pipelined group commits.
//!
//! A write request is applied by the task that makes it, at once and in
//! order (under the write-queue lock, then the state lock): the new revision
//! stays invisible to readers, and what to persist goes into the pending
//! journal. A commit job on a blocking thread (started when something is
//! pending and no job runs) takes everything pending as one batch, persists
//! it in one durable redb transaction, then publishes the batch's revisions
//! and acknowledges its requests, and goes on with the next batch if one
//! accumulated meanwhile. While that fsync runs, callers keep applying the
//! next batch. So concurrent writers share one fsync, the disk never idles
//! while writes wait, and a write costs two thread hops (caller → commit job
//! → caller) instead of a round trip through a writer task. (A blocking
//! task, not a thread of its own: tokio's paused test clock then knows not
//! to jump ahead while a commit runs.)
//!
//! Invariants: nothing is visible or acknowledged before its commit is
//! durable; batches reach the disk one at a time, in order; a failed commit
//! fails its own batch and everything applied after it (which built on it),
//! then every later write is refused (the memory state is ahead of the disk).
//!
//! In memory there is nothing to persist: a write is published and answered
//! as soon as it is applied. A small task revokes expired leases on the
//! tokio clock (so paused-time tests work); every write also revokes the
//! leases due by then before it applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::Core;
use super::durable::{Durable, Meta};
use super::state::{Journal, State};
use crate::{LeaseGrant, LeaseId, Result, Revision, StoreError, Txn, TxnResponse};

#[derive(Debug)]
pub(crate) enum WriteOp {
    Txn(Txn),
    /// A single put, as a txn of that one op (etcd checks it differently).
    SinglePut(Txn),
    /// Grant a lease; `id` 0 lets the store choose.
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke(LeaseId),
    Compact(Revision),
    /// Nothing; answered once everything applied before it (and every lease
    /// expiry due by then) is durable and visible.
    Barrier,
    /// Finish what was applied before it; refuse everything after it.
    Close,
}

#[derive(Debug)]
pub(crate) enum WriteReply {
    Txn(TxnResponse),
    Lease(LeaseGrant),
    Done,
}

type ReplySender = oneshot::Sender<Result<WriteReply>>;
type Reply = (ReplySender, Result<WriteReply>);

/// Requests applied in memory whose commit has not started yet.
#[derive(Debug)]
struct Pending {
    journal: Journal,
    replies: Vec<Reply>,
    /// Meta values after the last applied request.
    meta: Meta,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.replies.is_empty() && self.journal.is_empty()
    }
}

#[derive(Debug)]
struct Queue {
    pending: Pending,
    /// Set after a failed commit: every later write is refused with it.
    failure: Option<String>,
    /// A close was applied: later writes are refused with `Closed`.
    closing: bool,
    /// The database; taken on shutdown (a running job keeps its own handle
    /// until it has committed everything pending).
    durable: Option<Arc<Durable>>,
    /// A commit job is running (it takes whatever becomes pending).
    committing: bool,
    /// The store shut down: the last commit job ends every watch.
    stopped: bool,
}

/// The write path's shared state.
#[derive(Debug)]
pub(crate) struct Writes {
    queue: Mutex<Queue>,
    /// Commit jobs that still hold the database.
    jobs: AtomicUsize,
    /// Notified when a commit job ends.
    job_ended: Notify,
    /// Wakes callers waiting for room in a full batch.
    room: Notify,
    /// Wakes the expiry task when a lease was granted (an earlier deadline).
    pub(crate) granted: Notify,
    /// Taken when the store shuts down, which ends every watcher.
    visible: Mutex<Option<watch::Sender<Revision>>>,
    durable: bool,
    max_batch: usize,
}

impl Writes {
    pub(crate) fn new(
        visible: watch::Sender<Revision>,
        durable: Option<Arc<Durable>>,
        max_batch: usize,
        meta: Meta,
    ) -> Self {
        let is_durable = durable.is_some();
        Writes {
            queue: Mutex::new(Queue {
                pending: Pending {
                    journal: Journal::new(is_durable),
                    replies: Vec::new(),
                    meta,
                },
                failure: None,
                closing: false,
                durable,
                committing: false,
                stopped: false,
            }),
            jobs: AtomicUsize::new(0),
            job_ended: Notify::new(),
            room: Notify::new(),
            granted: Notify::new(),
            visible: Mutex::new(Some(visible)),
            durable: is_durable,
            max_batch: max_batch.max(1),
        }
    }

    /// True after a failed commit.
    pub(crate) fn failed(&self) -> bool {
        self.queue.lock().failure.is_some()
    }

    /// Shut down: no new commit jobs; the running one (if any) finishes
    /// what is pending, then ends every watch.
    pub(crate) fn stop(&self) {
        let idle = {
            let mut queue = self.queue.lock();
            queue.stopped = true;
            queue.durable = None;
            !queue.committing
        };
        if idle {
            self.release_watchers();
        }
    }

    /// Wait until no commit job holds the database any more.
    pub(crate) async fn jobs_ended(&self) {
        loop {
            let ended = self.job_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.jobs.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }

    /// End every watch (the store shut down).
    pub(crate) fn release_watchers(&self) {
        self.visible.lock().take();
    }

    fn notify_watchers(&self, revision: Revision) {
        if let Some(visible) = &*self.visible.lock() {
            visible.send_if_modified(|visible| {
                let changed = *visible < revision;
                *visible = (*visible).max(revision);
                changed
            });
        }
    }

    fn publish(&self, core: &Core, revision: Revision, replies: Vec<Reply>) {
        core.state.write().mvcc.publish_to(revision);
        self.notify_watchers(revision);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
}

fn meta_of(state: &State) -> Meta {
    Meta {
        revision: state.mvcc.current(),
        compacted: state.mvcc.compacted(),
        next_lease_id: state.leases.next_id(),
    }
}

impl Core {
    /// Apply `op` now; the reply comes once it is durable and visible.
    pub(crate) async fn write(self: &Arc<Self>, mut op: WriteOp) -> Result<WriteReply> {
        loop {
            let room = self.writes.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_apply(Some(op)) {
                Ok((Some(reply), leader)) => {
                    if let Some(durable) = leader {
                        self.lead_commit(durable);
                    }
                    return reply.await.map_err(|_| StoreError::Closed)?;
                }
                Ok((None, _)) => unreachable!("an op always gets a reply"),
                Err(full) => {
                    op = full;
                    room.await;
                }
            }
        }
    }

    /// Revoke the leases due by now (the expiry task).
    fn expire_due(self: &Arc<Self>) {
        if let Ok((_, Some(durable))) = self.try_apply(None) {
            let core = self.clone();
            tokio::task::spawn_blocking(move || commit_job(core, durable, None));
        }
    }

    /// Commit the batch this caller started. On a multi-threaded runtime
    /// the caller commits it in place (`block_in_place`: no thread hop for
    /// it, its followers are woken by it) and hands any batch that piled up
    /// meanwhile to a blocking task, so that it waits for one fsync only.
    /// On a current-thread runtime (tests) the commit runs on a blocking
    /// task.
    fn lead_commit(self: &Arc<Self>, durable: Arc<Durable>) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let core = self.clone();
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(move || commit_job(core, durable, Some(1)));
            }
            Ok(_) => {
                tokio::task::spawn_blocking(move || commit_job(core, durable, None));
            }
            // Polled outside tokio: nowhere else to commit.
            Err(_) => commit_job(core, durable, None),
        }
    }

    /// Apply `op` (or only the due lease expiries) to the state. Gives the
    /// op back when the pending batch is full. With the database when the
    /// caller must start a commit job (nothing was committing).
    #[allow(clippy::type_complexity)]
    fn try_apply(
        self: &Arc<Self>,
        op: Option<WriteOp>,
    ) -> std::result::Result<
        (
            Option<oneshot::Receiver<Result<WriteReply>>>,
            Option<Arc<Durable>>,
        ),
        WriteOp,
    > {
        let writes = &self.writes;
        let mut queue = writes.queue.lock();
        let Some(op) = op else {
            if queue.failure.is_none() && !queue.closing {
                let mut state = self.state.write();
                let queue = &mut *queue;
                state.expire(Instant::now(), &mut queue.pending.journal);
                return Ok((None, self.finish_apply(&mut state, queue)));
            }
            return Ok((None, None));
        };
        let (reply, answer) = oneshot::channel();
        if let Some(failure) = &queue.failure {
            let _ = reply.send(Err(failed(failure)));
            return Ok((Some(answer), None));
        }
        if queue.closing {
            let _ = reply.send(Err(StoreError::Closed));
            return Ok((Some(answer), None));
        }
        if queue.pending.replies.len() >= writes.max_batch {
            return Err(op);
        }
        let granted = matches!(op, WriteOp::LeaseGrant { .. });
        let now = Instant::now();
        let mut state = self.state.write();
        let queue = &mut *queue;
        state.expire(now, &mut queue.pending.journal);
        let result = apply(
            &mut state,
            op,
            now,
            &mut queue.pending.journal,
            &mut queue.closing,
        );
        queue.pending.replies.push((reply, result));
        let leader = self.finish_apply(&mut state, queue);
        drop(state);
        if granted {
            writes.granted.notify_one();
        }
        Ok((Some(answer), leader))
    }

    /// After applying: compact, then hand the batch on (in memory: publish
    /// and answer it at once). Returns the database when nothing was
    /// committing: the caller then starts the commit job.
    fn finish_apply(&self, state: &mut State, queue: &mut Queue) -> Option<Arc<Durable>> {
        state.auto_compact(self.config.history_window, &mut queue.pending.journal);
        queue.pending.meta = meta_of(state);
        if self.writes.durable {
            if !queue.pending.is_empty()
                && !queue.committing
                && let Some(durable) = queue.durable.clone()
            {
                queue.committing = true;
                self.writes.jobs.fetch_add(1, Ordering::SeqCst);
                return Some(durable);
            }
            return None;
        }
        state.mvcc.publish();
        self.writes.notify_watchers(state.mvcc.visible());
        queue.pending.journal = Journal::new(false);
        for (reply, result) in queue.pending.replies.drain(..) {
            let _ = reply.send(result);
        }
        None
    }
}

/// A commit job: persist pending batches one at a time, in order, until
/// nothing is pending, or after `max_batches` hand what is left to a
/// blocking task.
fn commit_job(core: Arc<Core>, durable: Arc<Durable>, max_batches: Option<usize>) {
    let writes = &core.writes;
    let mut batches = 0;
    let release = loop {
        let batch = {
            let mut queue = writes.queue.lock();
            if queue.pending.is_empty() {
                queue.committing = false;
                break queue.stopped;
            }
            if max_batches.is_some_and(|max| batches >= max) {
                // Still committing: the new job takes over.
                writes.jobs.fetch_add(1, Ordering::SeqCst);
                let (core, durable) = (core.clone(), durable.clone());
                tokio::task::spawn_blocking(move || commit_job(core, durable, None));
                break false;
            }
            batches += 1;
            let fresh = Pending {
                journal: Journal::new(true),
                replies: Vec::with_capacity(queue.pending.replies.len()),
                meta: queue.pending.meta,
            };
            std::mem::replace(&mut queue.pending, fresh)
        };
        writes.room.notify_waiters();
        let outcome = if batch.journal.is_empty() {
            Ok(())
        } else {
            durable.commit(&batch.journal, batch.meta)
        };
        match outcome {
            Ok(()) => writes.publish(&core, batch.meta.revision, batch.replies),
            Err(error) => {
                tracing::error!(%error, "group commit failed; refusing further writes");
                let message = error.to_string();
                let later = {
                    let mut queue = writes.queue.lock();
                    queue.failure = Some(message.clone());
                    queue.replies_only()
                };
                let mut error = Some(error);
                for (reply, _) in batch.replies.into_iter().chain(later) {
                    let _ = reply.send(Err(error.take().unwrap_or_else(|| failed(&message))));
                }
            }
        }
    };
    drop(durable);
    if release {
        writes.release_watchers();
    }
    writes.jobs.fetch_sub(1, Ordering::SeqCst);
    writes.job_ended.notify_waiters();
}

impl Queue {
    /// Everything pending, to be failed: its journal is dropped.
    fn replies_only(&mut self) -> Vec<Reply> {
        self.pending.journal = Journal::new(true);
        std::mem::take(&mut self.pending.replies)
    }
}

/// The expiry task: revoke leases when their deadlines pass.
pub(crate) async fn expiry_loop(core: Arc<Core>) {
    loop {
        // After a failed commit nothing can expire durably any more, and an
        // expired lease left in the table would wake this task at once,
        // forever: it waits for nothing then.
        let wake = if core.writes.failed() {
            None
        } else {
            core.state.read().leases.earliest_deadline()
        };
        #[cfg(test)]
        core.writer_wakeups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            () = sleep_until_opt(wake) => core.expire_due(),
            () = core.writes.granted.notified() => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn failed(message: &str) -> StoreError {
    StoreError::Storage {
        message: format!("store stopped accepting writes after a failed commit: {message}"),
        source: None,
    }
}

fn apply(
    state: &mut State,
    op: WriteOp,
    now: Instant,
    journal: &mut Journal,
    closing: &mut bool,
) -> Result<WriteReply> {
    match op {
        WriteOp::Txn(txn) => state.txn(&txn, journal).map(WriteReply::Txn),
        WriteOp::SinglePut(txn) => state.single_put(&txn, journal).map(WriteReply::Txn),
        WriteOp::LeaseGrant { id, ttl } => {
            state.grant(id, ttl, now, journal).map(WriteReply::Lease)
        }
        WriteOp::LeaseRevoke(id) => state.revoke(id, journal).map(|()| WriteReply::Done),
        WriteOp::Compact(revision) => state.compact(revision, journal).map(|()| WriteReply::Done),
        WriteOp::Barrier => Ok(WriteReply::Done),
        WriteOp::Close => {
            *closing = true;
            Ok(WriteReply::Done)
        }
    }
}
