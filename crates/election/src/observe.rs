//! [`Observer`]: a trustworthy stream of an election's leadership.
//!
//! It follows the prefix with [`drover_store::reflector`]: a listing at one
//! revision, then a watch from the next, so it sees every change exactly once
//! and in order; a broken stream resumes from the last revision seen, and
//! after a compaction it lists again and reports the state it finds. It
//! never reports a leader it did not read, and it reports
//! [`Observation::NoLeader`] when the election is empty.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use drover_store::reflector::{Codec, Reflector, ReflectorError, ReflectorEvent};
use drover_store::{KeyValue, Revision, Store};
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

/// Election candidates for a [`Reflector`]: every key under the prefix is a
/// candidate, kept whole (its create revision orders it).
struct CandidateCodec;

impl Codec for CandidateCodec {
    type Id = Vec<u8>;
    type Value = KeyValue;
    type Error = Infallible;

    fn id(&self, key: &[u8]) -> std::result::Result<Vec<u8>, Infallible> {
        Ok(key.to_vec())
    }

    fn decode(&self, kv: &KeyValue) -> std::result::Result<(Vec<u8>, KeyValue), Infallible> {
        Ok((kv.key.clone(), kv.clone()))
    }
}

/// The candidates of one election, ordered by create revision.
#[derive(Default)]
struct Candidates {
    by_order: BTreeMap<(Revision, Vec<u8>), KeyValue>,
    create_of: HashMap<Vec<u8>, Revision>,
}

impl Candidates {
    fn from_list(kvs: impl IntoIterator<Item = KeyValue>) -> Self {
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

/// Follows the election through a reflector (list, then watch; re-list after
/// a compaction) and sends the state after each complete revision, never a
/// state in the middle of one (a txn or a lease expiry changes several keys
/// at once), and only when it changed.
async fn observe<S: Store>(store: S, prefix: String, tx: mpsc::Sender<Result<Observation>>) {
    let mut reflector = Reflector::prefix(store, prefix.as_str(), CandidateCodec);
    let mut candidates = Candidates::default();
    let mut last: Option<Observation> = None;
    loop {
        let event = tokio::select! {
            _ = tx.closed() => return,
            event = reflector.next() => event,
        };
        match event {
            Ok(ReflectorEvent::Initial { objects, .. })
            | Ok(ReflectorEvent::Restarted { objects, .. }) => {
                candidates = Candidates::from_list(objects.into_values());
            }
            Ok(ReflectorEvent::Applied { object, .. }) => candidates.put(object),
            Ok(ReflectorEvent::Deleted { id, .. }) => candidates.delete(&id),
            Err(ReflectorError::Corrupt { source, .. }) => match source {},
            Err(ReflectorError::Store { source, .. }) if source.is_retryable() => {
                // The reflector retried already; it resumes from the last
                // revision delivered on the next call.
                tracing::debug!(error = %source, "observe interrupted; resuming");
                continue;
            }
            Err(ReflectorError::Store { source, .. }) => {
                // Not retryable (store shut down, invalid prefix): hand it to
                // the consumer and stop.
                let _ = tx.send(Err(ElectionError::Store(source))).await;
                return;
            }
        }
        if !reflector.revision_complete() {
            continue;
        }
        let now = candidates.state(&prefix);
        if last.as_ref() == Some(&now) {
            continue;
        }
        last = Some(now.clone());
        if tx.send(Ok(now)).await.is_err() {
            return;
        }
    }
}
