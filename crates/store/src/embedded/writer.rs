//! The single writer task: group commit and lease expiry.
//!
//! It drains every queued write request, applies them in order to the
//! in-memory state (new revisions stay invisible to readers), persists the
//! whole batch in one durable redb transaction, then publishes the new
//! revision and acknowledges every request. Concurrent writers therefore
//! share one fsync.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::Core;
use super::durable::{Durable, Meta};
use super::state::{Journal, State};
use crate::{LeaseGrant, LeaseId, Result, Revision, StoreError, Txn, TxnResponse};

#[derive(Debug)]
pub(crate) enum WriteOp {
    Txn(Txn),
    LeaseGrant(i64),
    LeaseRevoke(LeaseId),
    Compact(Revision),
    /// Nothing; answered once everything queued before it (and every lease
    /// expiry due by then) is durable and visible.
    Barrier,
    /// Finish what is queued before it, then stop.
    Close,
}

#[derive(Debug)]
pub(crate) enum WriteReply {
    Txn(TxnResponse),
    Lease(LeaseGrant),
    Done,
}

#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) op: WriteOp,
    pub(crate) reply: oneshot::Sender<Result<WriteReply>>,
}

pub(crate) struct Writer {
    pub(crate) core: Arc<Core>,
    pub(crate) requests: mpsc::UnboundedReceiver<Request>,
    pub(crate) durable: Option<Arc<Durable>>,
    pub(crate) visible: watch::Sender<Revision>,
    /// Set after a failed commit: the in-memory state is then ahead of the
    /// disk, so every later write is refused (etcd stops on a backend
    /// failure too).
    pub(crate) failure: Option<String>,
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Writer {
    pub(crate) async fn run(mut self) {
        let max_batch = self.core.config.max_group_commit.max(1);
        loop {
            // After a failed commit nothing can expire durably any more, and
            // an expired lease left in the table would wake the writer at
            // once, forever: only requests wake it then.
            let wake = match self.failure {
                None => self.core.state.read().leases.earliest_deadline(),
                Some(_) => None,
            };
            #[cfg(test)]
            self.core
                .writer_wakeups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let first = tokio::select! {
                biased;
                request = self.requests.recv() => match request {
                    Some(request) => Some(request),
                    None => break, // every store handle is gone
                },
                () = sleep_until_opt(wake) => None,
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < max_batch {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if self.process(batch).await {
                break;
            }
        }
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            let _ = request.reply.send(Err(StoreError::Closed));
        }
        tracing::debug!("embedded store writer stopped");
    }

    /// Apply, persist, publish and acknowledge one batch. Returns true when
    /// the batch asked the writer to stop.
    async fn process(&mut self, batch: Vec<Request>) -> bool {
        if let Some(failure) = &self.failure {
            let mut closing = false;
            for request in batch {
                closing |= matches!(request.op, WriteOp::Close);
                let _ = request.reply.send(Err(failed(failure)));
            }
            return closing;
        }
        let now = Instant::now();
        let mut journal = Journal::new(self.durable.is_some());
        let mut replies = Vec::with_capacity(batch.len());
        let mut closing = false;
        let meta = {
            let mut state = self.core.state.write();
            state.expire(now, &mut journal);
            for request in batch {
                let result = if closing {
                    Err(StoreError::Closed)
                } else {
                    apply(&mut state, request.op, now, &mut journal, &mut closing)
                };
                replies.push((request.reply, result));
            }
            state.auto_compact(self.core.config.history_window, &mut journal);
            Meta {
                revision: state.mvcc.current(),
                compacted: state.mvcc.compacted(),
                next_lease_id: state.leases.next_id(),
            }
        };
        if let Some(durable) = self.durable.clone().filter(|_| !journal.is_empty()) {
            let outcome = tokio::task::spawn_blocking(move || durable.commit(&journal, meta)).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(join) => Some(StoreError::Storage {
                    message: "group commit task failed".into(),
                    source: Some(Box::new(join)),
                }),
            };
            if let Some(error) = error {
                tracing::error!(%error, "group commit failed; refusing further writes");
                let message = error.to_string();
                let mut error = Some(error);
                for (reply, _) in replies {
                    let _ = reply.send(Err(error.take().unwrap_or_else(|| failed(&message))));
                }
                self.failure = Some(message);
                return closing;
            }
        }
        self.core.state.write().mvcc.publish();
        self.visible.send_if_modified(|visible| {
            let changed = *visible != meta.revision;
            *visible = meta.revision;
            changed
        });
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        closing
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
        WriteOp::LeaseGrant(ttl) => Ok(WriteReply::Lease(state.grant(ttl, now, journal))),
        WriteOp::LeaseRevoke(id) => state.revoke(id, journal).map(|()| WriteReply::Done),
        WriteOp::Compact(revision) => state.compact(revision, journal).map(|()| WriteReply::Done),
        WriteOp::Barrier => Ok(WriteReply::Done),
        WriteOp::Close => {
            *closing = true;
            Ok(WriteReply::Done)
        }
    }
}
