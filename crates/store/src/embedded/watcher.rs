//! Watch delivery. Each watch has its own task that pulls events from the
//! retained history (the MVCC log) whenever the visible revision moves.
//!
//! Writers never wait for watchers: they only bump the visible revision. A
//! slow consumer fills its bounded stream and its task waits; when it
//! resumes it catches up from history (etcd's "unsynced" watchers), or gets
//! [`StoreError::Compacted`] if the history it needs was compacted meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::Core;
use super::mvcc::KeySpan;
use crate::{Revision, StoreError, Watch, WatchBatch, WatchSender};

/// Events per batch before a batch is cut (at a revision boundary).
const MAX_BATCH_EVENTS: usize = 1000;

pub(crate) struct Watcher {
    pub(crate) core: Arc<Core>,
    pub(crate) visible: watch::Receiver<Revision>,
    pub(crate) sender: WatchSender,
    pub(crate) span: KeySpan,
    pub(crate) next: Revision,
    /// Filters, prev_kv and progress_notify of the request.
    pub(crate) request: Watch,
}

impl Watcher {
    pub(crate) async fn run(mut self) {
        let every = self
            .core
            .config
            .progress_notify_interval
            .max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // A progress notification is owed (asked for, or the interval
        // passed without a delivery); sent once caught up.
        let mut progress_owed = false;
        let mut delivered_since_tick = false;
        loop {
            // Mark the current value seen before reading the state, so that
            // any later publish wakes us.
            self.visible.borrow_and_update();
            let collected = {
                let state = self.core.state.read();
                let upto = state.mvcc.visible();
                state
                    .mvcc
                    .watch_events(
                        &self.span,
                        self.next,
                        upto,
                        MAX_BATCH_EVENTS,
                        self.request.prev_kv,
                    )
                    .map(|(events, next)| (events, next, upto))
            };
            match collected {
                Err(error) => {
                    if matches!(error, StoreError::Compacted { .. }) {
                        tracing::debug!(next = self.next, "watcher fell behind compaction");
                    }
                    self.deliver(Err(error)).await;
                    return;
                }
                Ok((mut events, next, upto)) => {
                    self.next = next;
                    events.retain(|e| self.request.passes(e.kind));
                    if !events.is_empty() {
                        let batch = WatchBatch {
                            revision: upto,
                            events,
                        };
                        if !self.deliver(Ok(batch)).await {
                            return;
                        }
                        delivered_since_tick = true;
                    }
                    if next <= upto {
                        continue; // more history to catch up on
                    }
                    if progress_owed {
                        progress_owed = false;
                        // Everything up to `upto` was delivered (or, for a
                        // watch from a future revision, is before its start).
                        let progress = WatchBatch {
                            revision: upto.min(next - 1),
                            events: Vec::new(),
                        };
                        if !self.deliver(Ok(progress)).await {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                changed = self.visible.changed() => if changed.is_err() {
                    return; // the store shut down
                },
                () = self.sender.cancelled() => return,
                () = self.sender.progress_requested() => progress_owed = true,
                _ = ticker.tick(), if self.request.progress_notify => {
                    // As etcd: only a watch that delivered nothing lately.
                    progress_owed |= !delivered_since_tick;
                    delivered_since_tick = false;
                }
            }
        }
    }

    /// Send one item; false when the stream was dropped.
    async fn deliver(&self, item: crate::Result<WatchBatch>) -> bool {
        tokio::select! {
            sent = self.sender.send(item) => sent.is_ok(),
            () = self.sender.cancelled() => false,
        }
    }
}
