//! etcd watches behind the port's [`WatchStream`], kept gap-free across
//! broken connections.
//!
//! One etcd `WatchResponse` becomes one [`WatchBatch`]: etcd never splits a
//! revision across responses (without the `fragment` option, which is not
//! used), so neither do we. The task remembers the next revision it owes the
//! caller; when the connection breaks it re-creates the watch from exactly
//! that revision, with a doubling, bounded delay between attempts, until it
//! succeeds or the caller drops the stream. If that revision was compacted
//! meanwhile, the caller gets `Compacted` and the stream ends (and re-lists),
//! even when none of the compacted revisions touched the watched keys: etcd
//! cannot tell, and guessing would risk a silent gap.

use std::time::Duration;

use drover_store::{Revision, StoreError, Watch, WatchBatch, WatchSender, WatchStream};
use etcd_client::proto::PbWatchResponse;
use etcd_client::{Client, WatchFilterType, WatchOptions, WatchRequestSender, WatchResponseStream};
use tokio::time::timeout;
use tracing::Instrument;

use crate::EtcdConfig;
use crate::convert;
use crate::error_map::{ErrorContext, map_error};

/// An established etcd watch.
pub(crate) struct Conn {
    requests: WatchRequestSender,
    answers: WatchResponseStream,
    watch_id: i64,
    /// The store revision when etcd created the watch.
    pub(crate) created_revision: Revision,
}

/// Create an etcd watch from `start_revision` (0 = after the current
/// revision) and wait for etcd to confirm it.
pub(crate) async fn establish(
    client: &Client,
    req: &Watch,
    start_revision: Revision,
    limit: Duration,
) -> Result<Conn, StoreError> {
    let ctx = ErrorContext::new("watch").revision(start_revision);
    let (key, end) = convert::etcd_range(&req.range);
    let mut options = WatchOptions::new()
        .with_range(end)
        .with_start_revision(start_revision);
    if req.prev_kv {
        options = options.with_prev_key();
    }
    if req.progress_notify {
        options = options.with_progress_notify();
    }
    let filters: Vec<WatchFilterType> = [
        (req.filter_puts, WatchFilterType::NoPut),
        (req.filter_deletes, WatchFilterType::NoDelete),
    ]
    .into_iter()
    .filter_map(|(on, filter)| on.then_some(filter))
    .collect();
    if !filters.is_empty() {
        options = options.with_filters(filters);
    }
    let attempt = async {
        let (requests, mut answers) = client
            .watch_client()
            .max_decoding_message_size(usize::MAX)
            .watch(key, Some(options))
            .await?
            .split();
        let first = answers.message().await?;
        Ok::<_, etcd_client::Error>((requests, answers, first))
    };
    let (requests, answers, first) = match timeout(limit, attempt).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(err)) => return Err(map_error(err, ctx)),
        Err(_) => {
            return Err(StoreError::Unavailable {
                message: format!("etcd watch was not created within {limit:?}"),
                source: None,
            });
        }
    };
    let Some(first) = first.map(|r| r.0) else {
        return Err(StoreError::Unavailable {
            message: String::from("etcd closed the watch stream before creating the watch"),
            source: None,
        });
    };
    if first.compact_revision != 0 {
        return Err(StoreError::Compacted {
            requested: start_revision,
            compact_revision: first.compact_revision,
        });
    }
    if first.canceled {
        return Err(StoreError::InvalidArgument(format!(
            "etcd refused the watch: {}",
            first.cancel_reason
        )));
    }
    Ok(Conn {
        requests,
        answers,
        watch_id: first.watch_id,
        created_revision: convert::header_revision(first.header.as_ref()),
    })
}

/// Start the task feeding a [`WatchStream`] from an established watch.
pub(crate) fn spawn(client: Client, config: EtcdConfig, req: Watch, conn: Conn) -> WatchStream {
    let (sender, stream) = WatchStream::channel(config.watch_buffer.max(1));
    let next_revision = if req.start_revision > 0 {
        req.start_revision
    } else {
        conn.created_revision + 1
    };
    let task = WatchTask {
        client,
        config,
        req,
        sender,
        next_revision,
    };
    let span = tracing::info_span!(
        "etcd_watch",
        key = %String::from_utf8_lossy(task.req.range.start()),
        watch_id = conn.watch_id,
    );
    tokio::spawn(task.run(conn).instrument(span));
    stream
}

struct WatchTask {
    client: Client,
    config: EtcdConfig,
    req: Watch,
    sender: WatchSender,
    /// The first revision not yet delivered to the caller.
    next_revision: Revision,
}

enum Outcome {
    /// The caller dropped the stream.
    Cancelled,
    /// The watch cannot go on; tell the caller and end the stream.
    Fatal(StoreError),
    /// The connection broke; re-create the watch from `next_revision`.
    Broken(String),
}

impl WatchTask {
    async fn run(mut self, mut conn: Conn) {
        loop {
            match self.pump(&mut conn).await {
                Outcome::Cancelled => {
                    // Best effort: tell etcd to drop the watch now rather
                    // than when it notices the closed stream.
                    let _ = timeout(
                        Duration::from_millis(100),
                        conn.requests.cancel(conn.watch_id),
                    )
                    .await;
                    return;
                }
                Outcome::Fatal(err) => {
                    let _ = timeout(
                        Duration::from_millis(100),
                        conn.requests.cancel(conn.watch_id),
                    )
                    .await;
                    let _ = self.sender.send(Err(err)).await;
                    return;
                }
                Outcome::Broken(why) => {
                    tracing::warn!(
                        next_revision = self.next_revision,
                        reason = %why,
                        "etcd watch connection broke; re-creating the watch"
                    );
                    match self.reconnect().await {
                        Some(new_conn) => conn = new_conn,
                        None => return,
                    }
                }
            }
        }
    }

    async fn pump(&mut self, conn: &mut Conn) -> Outcome {
        loop {
            let answer = tokio::select! {
                _ = self.sender.cancelled() => return Outcome::Cancelled,
                () = self.sender.progress_requested() => {
                    if let Err(err) = conn.requests.request_progress().await {
                        return Outcome::Broken(format!("asking for watch progress failed: {err}"));
                    }
                    continue;
                }
                answer = conn.answers.message() => answer,
            };
            let resp = match answer {
                Ok(Some(resp)) => resp.0,
                Ok(None) => return Outcome::Broken(String::from("etcd ended the watch stream")),
                Err(err) => {
                    let err =
                        map_error(err, ErrorContext::new("watch").revision(self.next_revision));
                    return if err.is_retryable() {
                        Outcome::Broken(err.to_string())
                    } else {
                        Outcome::Fatal(err)
                    };
                }
            };
            if let Some(outcome) = self.deliver(resp).await {
                return outcome;
            }
        }
    }

    /// Hand one etcd response to the caller; `Some` ends the pump.
    async fn deliver(&mut self, resp: PbWatchResponse) -> Option<Outcome> {
        if resp.compact_revision != 0 {
            return Some(Outcome::Fatal(StoreError::Compacted {
                requested: self.next_revision,
                compact_revision: resp.compact_revision,
            }));
        }
        if resp.canceled {
            // etcd cancels a watch on its own when, for example, the member
            // is shutting down; a reason says it is about the request itself.
            return Some(if resp.cancel_reason.is_empty() {
                Outcome::Broken(String::from("etcd canceled the watch"))
            } else {
                Outcome::Fatal(StoreError::InvalidArgument(format!(
                    "etcd canceled the watch: {}",
                    resp.cancel_reason
                )))
            });
        }
        if resp.events.is_empty() {
            // A progress notification (the creation answer was taken by
            // `establish`, and a watch without fragments gets no other
            // empty answers). Passed on as an empty batch; `next_revision`
            // stays, since etcd 3.4 may send progress ahead of events still
            // on their way, and resuming past them would lose them.
            let progress = WatchBatch {
                revision: convert::header_revision(resp.header.as_ref()),
                events: Vec::new(),
            };
            return match self.sender.send(Ok(progress)).await {
                Ok(()) => None,
                Err(_) => Some(Outcome::Cancelled),
            };
        }
        let revision = convert::header_revision(resp.header.as_ref());
        // Whole revisions already delivered are never delivered twice, even
        // if a re-created watch were to replay them.
        let events: Vec<_> = resp
            .events
            .into_iter()
            .map(convert::event)
            .filter(|e| e.kv.mod_revision >= self.next_revision)
            .collect();
        if events.is_empty() {
            return None;
        }
        let last = events
            .iter()
            .map(|e| e.kv.mod_revision)
            .max()
            .unwrap_or(self.next_revision - 1);
        self.next_revision = self.next_revision.max(last + 1);
        let batch = WatchBatch {
            revision: revision.max(last),
            events,
        };
        match self.sender.send(Ok(batch)).await {
            Ok(()) => None,
            Err(_) => Some(Outcome::Cancelled),
        }
    }

    /// Re-create the watch from `next_revision`, waiting longer after each
    /// failed attempt. `None` when the caller went away or the watch cannot
    /// be re-created (the caller has been told why).
    async fn reconnect(&mut self) -> Option<Conn> {
        let mut delay = self.config.watch_retry_min;
        loop {
            tokio::select! {
                _ = self.sender.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            match establish(
                &self.client,
                &self.req,
                self.next_revision,
                self.config.request_timeout,
            )
            .await
            {
                Ok(conn) => {
                    tracing::info!(next_revision = self.next_revision, "etcd watch re-created");
                    return Some(conn);
                }
                Err(err) if err.is_retryable() => {
                    tracing::debug!(error = %err, ?delay, "re-creating the etcd watch failed; retrying");
                    delay = (delay * 2).min(self.config.watch_retry_max);
                }
                Err(err) => {
                    let _ = self.sender.send(Err(err)).await;
                    return None;
                }
            }
        }
    }
}
