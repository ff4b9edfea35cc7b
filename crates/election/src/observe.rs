//! [`Observer`]: a trustworthy stream of an election's leadership.
//!
//! It lists the prefix at one revision and watches it from the next, so it
//! sees every change exactly once and in order. After a gap (compaction, a
//! broken stream) it lists again and reports the state it finds: it never
//! reports a leader it did not read, and it reports [`Observation::NoLeader`]
//! when the election is empty.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use drover_store::{EventKind, Get, KeyValue, Revision, Store, StoreError, Watch, WatchStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::election::LeaderInfo;
use crate::{ElectionError, Result};

/// One observed state of an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// This candidate leads (with its current value and fencing token).
    Leader(LeaderInfo),
    /// No candidate is left.
    NoLeader,
}

impl Observation {
    /// The leader, if any.
    pub fn leader(&self) -> Option<&LeaderInfo> {
        match self {
            Observation::Leader(info) => Some(info),
            Observation::NoLeader => None,
        }
    }
}

/// Leadership changes of one election, as a [`futures::Stream`] (or with
/// [`Observer::next`]). The first item is the state at subscription time.
/// Store failures that can heal are retried inside; a store that is closed
/// ends the stream after one `Err` item. Dropping the observer stops its
/// watch.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::Receiver<Result<Observation>>,
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Observer {
    pub(crate) fn spawn<S: Store>(store: S, prefix: String) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::debug_span!("observe", prefix = %prefix);
        let task = tokio::spawn(observe(store, prefix, tx).instrument(span));
        Observer { rx, task }
    }

    /// The next change; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<Observation>> {
        self.rx.recv().await
    }
}

impl futures::Stream for Observer {
    type Item = Result<Observation>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The candidates of one election, ordered by create revision.
#[derive(Default)]
struct Candidates {
    by_order: BTreeMap<(Revision, Vec<u8>), KeyValue>,
    create_of: HashMap<Vec<u8>, Revision>,
}

impl Candidates {
    fn from_list(kvs: Vec<KeyValue>) -> Self {
        let mut c = Candidates::default();
        for kv in kvs {
            c.put(kv);
        }
        c
    }

    fn put(&mut self, kv: KeyValue) {
        if let Some(old) = self.create_of.insert(kv.key.clone(), kv.create_revision) {
            self.by_order.remove(&(old, kv.key.clone()));
        }
        self.by_order
            .insert((kv.create_revision, kv.key.clone()), kv);
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.create_of.remove(key) {
            self.by_order.remove(&(old, key.to_vec()));
        }
    }

    fn state(&self, prefix: &str) -> Observation {
        match self.by_order.values().next() {
            Some(kv) => Observation::Leader(LeaderInfo::from_kv(prefix, kv)),
            None => Observation::NoLeader,
        }
    }
}

enum Gap {
    /// The receiver is gone: stop.
    Closed,
    /// The watch stream ended: re-list after a pause.
    StreamEnded,
    /// The store failed: re-list after a pause if retryable.
    Retry(StoreError),
}

async fn observe<S: Store>(store: S, prefix: String, tx: mpsc::Sender<Result<Observation>>) {
    let mut last: Option<Observation> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match observe_once(&store, &prefix, &tx, &mut last, &mut backoff).await {
            Gap::Closed => return,
            Gap::Retry(StoreError::Compacted { .. }) => {
                tracing::debug!("watch compacted; listing again");
                continue;
            }
            Gap::StreamEnded => tracing::debug!("watch ended; listing again"),
            Gap::Retry(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "observe interrupted; listing again");
            }
            Gap::Retry(e) => {
                // Not retryable (store shut down, invalid prefix): hand it to
                // the consumer and stop.
                let _ = tx.send(Err(ElectionError::Store(e))).await;
                return;
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn emit(
    tx: &mpsc::Sender<Result<Observation>>,
    last: &mut Option<Observation>,
    now: Observation,
) -> std::result::Result<(), Gap> {
    if last.as_ref() == Some(&now) {
        return Ok(());
    }
    *last = Some(now.clone());
    tx.send(Ok(now)).await.map_err(|_| Gap::Closed)
}

async fn observe_once<S: Store>(
    store: &S,
    prefix: &str,
    tx: &mpsc::Sender<Result<Observation>>,
    last: &mut Option<Observation>,
    backoff: &mut Duration,
) -> Gap {
    let listed = match store.get(Get::prefix(prefix)).await {
        Ok(listed) => listed,
        Err(e) => return Gap::Retry(e),
    };
    let mut candidates = Candidates::from_list(listed.kvs);
    if let Err(gap) = emit(tx, last, candidates.state(prefix)).await {
        return gap;
    }
    let mut stream: WatchStream = match store
        .watch(Watch::prefix(prefix).from_revision(listed.revision + 1))
        .await
    {
        Ok(s) => s,
        Err(e) => return Gap::Retry(e),
    };
    *backoff = FIRST_BACKOFF;
    loop {
        let batch = tokio::select! {
            _ = tx.closed() => return Gap::Closed,
            b = stream.next_batch() => b,
        };
        let batch = match batch {
            Some(Ok(batch)) => batch,
            Some(Err(e)) => return Gap::Retry(e),
            None => return Gap::StreamEnded,
        };
        // Report the state after each revision, never a state in the middle
        // of one (a txn or a lease expiry changes several keys at once).
        let mut events = batch.events.into_iter().peekable();
        while let Some(event) = events.next() {
            let revision = event.kv.mod_revision;
            match event.kind {
                EventKind::Put => candidates.put(event.kv),
                EventKind::Delete => candidates.delete(&event.kv.key),
            }
            let revision_done = events
                .peek()
                .is_none_or(|next| next.kv.mod_revision != revision);
            if revision_done && let Err(gap) = emit(tx, last, candidates.state(prefix)).await {
                return gap;
            }
        }
    }
}
