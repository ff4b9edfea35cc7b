//! List-then-watch over a key range: the reflector pattern every Drover
//! controller builds its view of the store with.
//!
//! [`ListWatch`] lists the range at one revision, then watches from the next
//! revision, so a consumer sees a consistent snapshot followed by every
//! change after it, in revision order, never with a gap:
//!
//! - the first [`ListWatch::next`] yields [`ListWatchEvent::Listed`];
//! - then one [`ListWatchEvent::Changed`] per event of the watch;
//! - when the revision to resume from was compacted away (between the list
//!   and the watch, or while the consumer lagged), it re-lists at the current
//!   revision and yields [`ListWatchEvent::Restarted`] with the full current
//!   set, so the consumer can diff ([`KvMirror`] does that diff);
//! - a retryable failure ([`StoreError::is_retryable`], or the backend ending
//!   the watch stream) is retried with exponential backoff on the tokio clock
//!   ([`RetryPolicy`]); once the attempts are used up, and at once for any
//!   other error, `next` returns the error, and the next call resumes from
//!   the last revision delivered.
//!
//! ```
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::list_watch::{KvChange, KvMirror, ListWatch, ListWatchEvent};
//! use drover_store::{Put, Store};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EmbeddedStore::in_memory();
//! store.put(Put::new("/drover/nodes/n1", "a")).await?;
//!
//! let mut nodes = ListWatch::prefix(store.clone(), "/drover/nodes/");
//! let mut mirror = KvMirror::new();
//! let listed = nodes.next().await?;
//! assert!(matches!(&listed, ListWatchEvent::Listed { kvs, .. } if kvs.len() == 1));
//! mirror.apply(&listed);
//!
//! store.put(Put::new("/drover/nodes/n2", "b")).await?;
//! let changes = mirror.apply(&nodes.next().await?);
//! assert!(matches!(&changes[..], [KvChange::Added { kv, .. }] if kv.key == b"/drover/nodes/n2"));
//! assert_eq!(mirror.len(), 2);
//! # Ok(()) }
//! ```

mod mirror;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

use tracing::Instrument;

use crate::{
    Event, Get, KeyRange, KeyValue, Result, Revision, Store, StoreError, Watch, WatchStream,
};

pub use mirror::{KvChange, KvMirror};

/// What [`ListWatch::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListWatchEvent {
    /// The first snapshot: every key of the range at `revision`, in key order.
    Listed {
        revision: Revision,
        kvs: Vec<KeyValue>,
    },
    /// The revision to resume from was compacted away, so changes were
    /// missed: every key of the range at `revision` (in key order). Diff it
    /// against what you have; [`KvMirror::apply`] does.
    Restarted {
        revision: Revision,
        kvs: Vec<KeyValue>,
    },
    /// One change after the last snapshot, in revision order (with
    /// `prev_kv` when the store still had it).
    Changed(Event),
}

impl ListWatchEvent {
    /// The revision this event brings the consumer to.
    pub fn revision(&self) -> Revision {
        match self {
            ListWatchEvent::Listed { revision, .. }
            | ListWatchEvent::Restarted { revision, .. } => *revision,
            ListWatchEvent::Changed(event) => event.kv.mod_revision,
        }
    }
}

/// How [`ListWatch`] retries retryable failures: `max_attempts` tries in a
/// row, waiting `initial_backoff` after the first failure and doubling up to
/// `max_backoff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one step (list, watch) before the error is returned; at least 1.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure in a row (1-based).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// Where a [`ListWatch`] is in its cycle.
#[derive(Debug)]
enum Phase {
    /// List next; `restart` after a compaction (yields `Restarted`).
    List {
        restart: bool,
    },
    /// Open a watch from `next_revision`.
    Watch,
    Streaming(WatchStream),
}

/// Lists a key range, then watches it, re-listing when the watch's start was
/// compacted (see the [module docs](self)).
///
/// Cancel-safe: dropping a pending [`ListWatch::next`] loses nothing; the
/// next call picks up where the last delivered event left off.
#[derive(Debug)]
pub struct ListWatch<S> {
    store: S,
    range: KeyRange,
    retry: RetryPolicy,
    phase: Phase,
    /// Where the next watch starts: one past the last revision received.
    next_revision: Revision,
    /// The revision of the last snapshot or change handed out.
    delivered: Revision,
    /// Events of a received batch not yet handed out.
    pending: VecDeque<Event>,
    /// Retryable failures in a row of the current step.
    failures: u32,
    span: tracing::Span,
}

impl<S: Store> ListWatch<S> {
    /// Lists and watches `range` with the default [`RetryPolicy`].
    pub fn new(store: S, range: KeyRange) -> Self {
        let span = tracing::info_span!(
            "list_watch",
            backend = store.backend_name(),
            range = %String::from_utf8_lossy(range.start()),
        );
        ListWatch {
            store,
            range,
            retry: RetryPolicy::default(),
            phase: Phase::List { restart: false },
            next_revision: 0,
            delivered: 0,
            pending: VecDeque::new(),
            failures: 0,
            span,
        }
    }

    /// Lists and watches every key starting with `prefix`.
    pub fn prefix(store: S, prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(store, KeyRange::Prefix(prefix.into()))
    }

    /// Retries retryable failures as `policy` says.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = RetryPolicy {
            max_attempts: policy.max_attempts.max(1),
            ..policy
        };
        self
    }

    pub fn range(&self) -> &KeyRange {
        &self.range
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The revision the consumer has been brought to (0 before the first
    /// snapshot).
    pub fn revision(&self) -> Revision {
        self.delivered
    }

    /// Starts over: the next call lists afresh and yields
    /// [`ListWatchEvent::Listed`]. For a consumer that could not use the
    /// first snapshot (for example a corrupt record) and wants it again.
    pub fn reset(&mut self) {
        self.phase = Phase::List { restart: false };
        self.pending.clear();
        self.failures = 0;
    }

    /// The next snapshot or change. See the [module docs](self) for the
    /// sequence and for how errors are retried.
    pub async fn next(&mut self) -> Result<ListWatchEvent> {
        let span = self.span.clone();
        self.next_inner().instrument(span).await
    }

    async fn next_inner(&mut self) -> Result<ListWatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.delivered = event.kv.mod_revision;
                return Ok(ListWatchEvent::Changed(event));
            }
            let error = match &mut self.phase {
                Phase::List { restart } => {
                    let restart = *restart;
                    match self.store.get(Get::new(self.range.clone())).await {
                        Ok(resp) => {
                            self.failures = 0;
                            self.next_revision = resp.revision + 1;
                            self.phase = Phase::Watch;
                            self.delivered = resp.revision;
                            let (revision, kvs) = (resp.revision, resp.kvs);
                            return Ok(if restart {
                                ListWatchEvent::Restarted { revision, kvs }
                            } else {
                                ListWatchEvent::Listed { revision, kvs }
                            });
                        }
                        Err(e) => e,
                    }
                }
                Phase::Watch => {
                    let watch = Watch::new(self.range.clone())
                        .from_revision(self.next_revision)
                        .with_prev_kv();
                    match self.store.watch(watch).await {
                        Ok(stream) => {
                            self.phase = Phase::Streaming(stream);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Phase::Streaming(stream) => match stream.next_batch().await {
                    Some(Ok(batch)) => {
                        self.failures = 0;
                        if let Some(last) = batch.events.last() {
                            self.next_revision = self.next_revision.max(last.kv.mod_revision + 1);
                        }
                        self.pending.extend(batch.events);
                        continue;
                    }
                    Some(Err(e)) => {
                        self.phase = Phase::Watch;
                        e
                    }
                    None => {
                        self.phase = Phase::Watch;
                        StoreError::Unavailable {
                            message: format!(
                                "the store ended the watch at revision {}",
                                self.next_revision
                            ),
                            source: None,
                        }
                    }
                },
            };
            self.handle_failure(error).await?;
        }
    }

    /// Turns a failed step into a re-list (compaction), a retry after a
    /// backoff, or the error for the caller.
    async fn handle_failure(&mut self, error: StoreError) -> Result<()> {
        if let StoreError::Compacted {
            requested,
            compact_revision,
        } = error
        {
            tracing::info!(
                requested,
                compact_revision,
                "watch start was compacted; re-listing"
            );
            self.phase = Phase::List { restart: true };
            return Ok(());
        }
        if !error.is_retryable() {
            self.failures = 0;
            return Err(error);
        }
        self.failures += 1;
        if self.failures >= self.retry.max_attempts {
            self.failures = 0;
            return Err(error);
        }
        let backoff = self.retry.backoff(self.failures);
        tracing::warn!(
            error = %error,
            attempt = self.failures,
            backoff_ms = backoff.as_millis() as u64,
            "list-watch step failed; retrying"
        );
        tokio::time::sleep(backoff).await;
        Ok(())
    }
}
