//! Watch delivery. Each watch has its own task that pulls events from the
//! retained history (the MVCC log) whenever the visible revision moves.
//!
//! Writers never wait for watchers: they only bump the visible revision. A
//! slow consumer fills its bounded stream and its task waits; when it
//! resumes it catches up from history (etcd's "unsynced" watchers), or gets
//! [`StoreError::Compacted`] if the history it needs was compacted meanwhile.

use std::sync::Arc;

use tokio::sync::watch;

use super::Core;
use super::mvcc::KeySpan;
use crate::{Revision, StoreError, WatchBatch, WatchSender};

/// Events per batch before a batch is cut (at a revision boundary).
const MAX_BATCH_EVENTS: usize = 1000;

pub(crate) struct Watcher {
    pub(crate) core: Arc<Core>,
    pub(crate) visible: watch::Receiver<Revision>,
    pub(crate) sender: WatchSender,
    pub(crate) span: KeySpan,
    pub(crate) next: Revision,
    pub(crate) prev_kv: bool,
}

impl Watcher {
    pub(crate) async fn run(mut self) {
        loop {
            // Mark the current value seen before reading the state, so that
            // any later publish wakes us.
            self.visible.borrow_and_update();
            let collected = {
                let state = self.core.state.read();
                let upto = state.mvcc.visible();
                state
                    .mvcc
                    .watch_events(&self.span, self.next, upto, MAX_BATCH_EVENTS, self.prev_kv)
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
                Ok((events, next, upto)) => {
                    self.next = next;
                    if !events.is_empty() {
                        let batch = WatchBatch {
                            revision: upto,
                            events,
                        };
                        if !self.deliver(Ok(batch)).await {
                            return;
                        }
                    }
                    if next <= upto {
                        continue; // more history to catch up on
                    }
                }
            }
            tokio::select! {
                changed = self.visible.changed() => if changed.is_err() {
                    return; // the store shut down
                },
                () = self.sender.cancelled() => return,
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
