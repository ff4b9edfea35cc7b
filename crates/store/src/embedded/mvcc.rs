//! The in-memory MVCC index: every retained version of every key, plus a log
//! of the events of each retained revision for watchers.
//!
//! Revisions above `visible` exist only while they are being committed;
//! public reads and watchers never look past `visible`, so nothing that is
//! not yet durable can be observed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use crate::{
    Compare, CompareOp, CompareTarget, DeleteResponse, Event, EventKind, Get, GetResponse,
    KeyRange, KeyValue, PutResponse, Revision, SortOrder, SortTarget, StoreError, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};

/// One version of a key: a put (`Some`) or a delete tombstone (`None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) rev: Revision,
    /// Position of the change within its revision (etcd's sub-revision).
    pub(crate) sub: u32,
    pub(crate) kv: Option<KeyValue>,
}

/// The events of one revision, in sub-revision order, each with its prev_kv.
#[derive(Clone, Debug)]
pub(crate) struct LoggedRevision {
    pub(crate) rev: Revision,
    pub(crate) events: Vec<Event>,
}

/// The keys a get, delete or watch addresses, with etcd's conventions for
/// range ends: an empty end is a single key, `\0` is "no upper bound".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeySpan {
    start: Vec<u8>,
    end: SpanEnd,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SpanEnd {
    Single,
    Before(Vec<u8>),
    Unbounded,
}

impl KeySpan {
    pub(crate) fn new(range: &KeyRange) -> Self {
        let end_of = |end: Vec<u8>| {
            if end == [0] {
                SpanEnd::Unbounded
            } else {
                SpanEnd::Before(end)
            }
        };
        match range {
            KeyRange::Key(k) => KeySpan {
                start: k.clone(),
                end: SpanEnd::Single,
            },
            KeyRange::Prefix(p) => KeySpan {
                start: p.clone(),
                end: end_of(crate::prefix_end(p)),
            },
            KeyRange::Range { start, end } if end.is_empty() => KeySpan {
                start: start.clone(),
                end: SpanEnd::Single,
            },
            KeyRange::Range { start, end } => KeySpan {
                start: start.clone(),
                end: end_of(end.clone()),
            },
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match &self.end {
            SpanEnd::Single => key == self.start.as_slice(),
            SpanEnd::Before(end) => key >= self.start.as_slice() && key < end.as_slice(),
            SpanEnd::Unbounded => key >= self.start.as_slice(),
        }
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let start = Bound::Included(self.start.as_slice());
        match &self.end {
            SpanEnd::Single => (start, Bound::Included(self.start.as_slice())),
            SpanEnd::Before(end) => (start, Bound::Excluded(end.as_slice())),
            SpanEnd::Unbounded => (start, Bound::Unbounded),
        }
    }
}

/// The version of `history` in effect at `rev`, if any.
fn version_at(history: &[Version], rev: Revision) -> Option<&Version> {
    let n = history.partition_point(|v| v.rev <= rev);
    n.checked_sub(1).map(|i| &history[i])
}

fn live_at(history: &[Version], rev: Revision) -> Option<&KeyValue> {
    version_at(history, rev).and_then(|v| v.kv.as_ref())
}

fn compare_op_holds(ord: std::cmp::Ordering, op: CompareOp) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Equal => ord == Equal,
        CompareOp::NotEqual => ord != Equal,
        CompareOp::Greater => ord == Greater,
        CompareOp::Less => ord == Less,
    }
}

/// One compare against one key's state (`None`: the key does not exist,
/// which fails every value compare and reads 0 for every number).
fn compare_kv(compare: &Compare, kv: Option<&KeyValue>) -> bool {
    let ord = match (&compare.target, kv) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::Version(n), kv) => kv.map_or(0, |kv| kv.version).cmp(n),
        (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(r),
        (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(r),
        (CompareTarget::Lease(l), kv) => kv.map_or(0, |kv| kv.lease).cmp(l),
    };
    compare_op_holds(ord, compare.op)
}

/// Gives every nested txn response the outer txn's revision.
fn set_nested_revision(responses: &mut [TxnOpResponse], revision: Revision) {
    for r in responses {
        if let TxnOpResponse::Txn(t) = r {
            t.revision = revision;
            set_nested_revision(&mut t.responses, revision);
        }
    }
}

/// The MVCC index.
#[derive(Debug, Default)]
pub(crate) struct Mvcc {
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// Events of every revision at or above `compacted`, oldest first.
    log: VecDeque<LoggedRevision>,
    /// Last applied revision (may be ahead of `visible` during a commit).
    current: Revision,
    /// Last revision that is durable and may be read.
    visible: Revision,
    /// etcd's compact revision: reads and watches below it fail.
    compacted: Revision,
}

impl Mvcc {
    /// An empty store: revision 1, as etcd.
    pub(crate) fn new() -> Self {
        Mvcc {
            current: 1,
            visible: 1,
            ..Mvcc::default()
        }
    }

    pub(crate) fn current(&self) -> Revision {
        self.current
    }

    pub(crate) fn visible(&self) -> Revision {
        self.visible
    }

    pub(crate) fn compacted(&self) -> Revision {
        self.compacted
    }

    /// Publish every applied revision to readers (after it became durable).
    pub(crate) fn publish(&mut self) {
        self.visible = self.current;
    }

    /// Publish the applied revisions up to `revision` (a durable commit
    /// while later revisions are still being committed).
    pub(crate) fn publish_to(&mut self, revision: Revision) {
        debug_assert!(revision <= self.current);
        self.visible = self.visible.max(revision.min(self.current));
    }

    /// Check a read revision against the store's current (or visible)
    /// revision `current` and the compaction point.
    pub(crate) fn check_read_revision(
        &self,
        requested: Revision,
        current: Revision,
    ) -> crate::Result<()> {
        if requested > current {
            return Err(StoreError::FutureRevision { requested, current });
        }
        if requested != 0 && requested < self.compacted {
            return Err(StoreError::Compacted {
                requested,
                compact_revision: self.compacted,
            });
        }
        Ok(())
    }

    /// A range read as of `current` (the visible revision for public reads).
    pub(crate) fn range(&self, get: &Get, current: Revision) -> crate::Result<GetResponse> {
        self.check_read_revision(get.revision, current)?;
        Ok(self.range_unchecked(get, current))
    }

    fn range_unchecked(&self, get: &Get, current: Revision) -> GetResponse {
        let at = if get.revision == 0 {
            current
        } else {
            get.revision
        };
        let span = KeySpan::new(&get.range);
        let live = self
            .keys
            .range::<[u8], _>(span.bounds())
            .filter_map(|(_, history)| live_at(history, at));
        let mut resp = GetResponse {
            revision: current,
            ..GetResponse::default()
        };
        if get.count_only {
            resp.count = live.count() as i64;
            return resp;
        }
        // As etcd: `count` is the whole range, the filters apply after it.
        let mut kvs = Vec::new();
        for kv in live {
            resp.count += 1;
            if get.passes_filters(kv) {
                kvs.push(kv.clone());
            }
        }
        sort_kvs(&mut kvs, get.sort_target, get.sort_order);
        if get.limit > 0 && kvs.len() > get.limit as usize {
            kvs.truncate(get.limit as usize);
            resp.more = true;
        }
        if get.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        resp.kvs = kvs;
        resp
    }

    /// Roughly how many bytes the retained versions take (keys, values and
    /// per-version metadata), for the store's status.
    pub(crate) fn size_estimate(&self) -> u64 {
        const PER_VERSION: u64 = 48;
        self.keys
            .iter()
            .map(|(key, history)| {
                history
                    .iter()
                    .map(|v| {
                        key.len() as u64
                            + v.kv.as_ref().map_or(0, |kv| kv.value.len() as u64)
                            + PER_VERSION
                    })
                    .sum::<u64>()
            })
            .sum()
    }

    /// The latest applied state of `key` (what a write sees).
    pub(crate) fn current_kv(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys.get(key).and_then(|h| live_at(h, self.current))
    }

    /// The state of `key` that readers see.
    pub(crate) fn visible_kv(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys.get(key).and_then(|h| live_at(h, self.visible))
    }

    /// Evaluate one txn compare against the latest applied state, as etcd:
    /// a missing key has 0 for every number and fails every value compare.
    pub(crate) fn compare_holds(&self, compare: &Compare) -> bool {
        self.compare_holds_at(compare, self.current)
    }

    fn compare_holds_at(&self, compare: &Compare, rev: Revision) -> bool {
        if compare.range_end.is_empty() {
            let kv = self.keys.get(&compare.key).and_then(|h| live_at(h, rev));
            return compare_kv(compare, kv);
        }
        // As etcd: every key in the range must satisfy the compare; an
        // empty range compares like one missing key.
        let end = &compare.range_end;
        if end.as_slice() != [0] && end.as_slice() <= compare.key.as_slice() {
            return compare_kv(compare, None);
        }
        let span = KeySpan::new(&KeyRange::Range {
            start: compare.key.clone(),
            end: end.clone(),
        });
        let mut kvs = self
            .keys
            .range::<[u8], _>(span.bounds())
            .filter_map(|(_, h)| live_at(h, rev))
            .peekable();
        if kvs.peek().is_none() {
            return compare_kv(compare, None);
        }
        kvs.all(|kv| compare_kv(compare, Some(kv)))
    }

    /// The chosen branch of `txn` and of every nested txn on it, in the
    /// order etcd lists them (depth first): all compares see the state
    /// before the txn writes anything.
    pub(crate) fn txn_path(&self, txn: &Txn) -> Vec<bool> {
        let mut path = Vec::new();
        self.push_path(txn, &mut path);
        path
    }

    fn push_path(&self, txn: &Txn, path: &mut Vec<bool>) {
        let succeeded = txn.compares.iter().all(|c| self.compare_holds(c));
        path.push(succeeded);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        for op in ops {
            if let TxnOp::Txn(nested) = op {
                self.push_path(nested, path);
            }
        }
    }

    /// Serve a txn whose branches only read, at the visible revision,
    /// without the write path: it sees every acknowledged write and nothing else.
    /// `None` if the txn writes.
    pub(crate) fn read_only_txn(&self, txn: &Txn) -> Option<crate::Result<TxnResponse>> {
        let reads_only = |ops: &[TxnOp]| ops.iter().all(|op| matches!(op, TxnOp::Get(_)));
        if !reads_only(&txn.success) || !reads_only(&txn.failure) {
            return None;
        }
        let at = self.visible;
        let succeeded = txn.compares.iter().all(|c| self.compare_holds_at(c, at));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            if let TxnOp::Get(get) = op {
                match self.range(get, at) {
                    Ok(resp) => responses.push(TxnOpResponse::Get(resp)),
                    Err(error) => return Some(Err(error)),
                }
            }
        }
        Some(Ok(TxnResponse {
            revision: at,
            succeeded,
            responses,
        }))
    }

    /// Reject a txn read naming a future or compacted revision, before
    /// anything is written (as etcd checks txn requests up front).
    pub(crate) fn check_txn_read(&self, get: &Get) -> crate::Result<()> {
        self.check_read_revision(get.revision, self.current)
    }

    /// Apply a validated, checked list of ops; all writes share one new
    /// revision. Returns the responses and the revision after the ops. The
    /// events of the new revision (if any) are the last logged revision.
    ///
    /// `path` is the rest of [`Mvcc::txn_path`] after the outer txn's own
    /// entry: which branch each nested txn runs, depth first.
    pub(crate) fn apply(&mut self, ops: &[TxnOp], path: &[bool]) -> (Vec<TxnOpResponse>, Revision) {
        let rev = self.current + 1;
        let mut events: Vec<Event> = Vec::new();
        let mut path = path.iter().copied();
        let mut responses = self.apply_ops(ops, &mut path, rev, &mut events);
        if events.is_empty() {
            set_nested_revision(&mut responses, self.current);
            return (responses, self.current);
        }
        set_nested_revision(&mut responses, rev);
        self.current = rev;
        self.log.push_back(LoggedRevision { rev, events });
        (responses, rev)
    }

    fn apply_ops(
        &mut self,
        ops: &[TxnOp],
        path: &mut impl Iterator<Item = bool>,
        rev: Revision,
        events: &mut Vec<Event>,
    ) -> Vec<TxnOpResponse> {
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let now = if events.is_empty() { self.current } else { rev };
            match op {
                TxnOp::Get(g) => responses.push(TxnOpResponse::Get(self.range_unchecked(g, now))),
                TxnOp::Put(p) => {
                    let prev = self.keys.get(&p.key).and_then(|h| live_at(h, now)).cloned();
                    // `ignore_*` puts were checked to name an existing key.
                    let value = match (&prev, p.ignore_value) {
                        (Some(prev), true) => prev.value.clone(),
                        _ => p.value.clone(),
                    };
                    let lease = match (&prev, p.ignore_lease) {
                        (Some(prev), true) => prev.lease,
                        _ => p.lease,
                    };
                    let kv = KeyValue {
                        key: p.key.clone(),
                        value,
                        create_revision: prev.as_ref().map_or(rev, |kv| kv.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |kv| kv.version + 1),
                        lease,
                    };
                    let version = Version {
                        rev,
                        sub: events.len() as u32,
                        kv: Some(kv.clone()),
                    };
                    // Look up first: `entry` would copy the key every time.
                    match self.keys.get_mut(&p.key) {
                        Some(history) => history.push(version),
                        None => {
                            self.keys.insert(p.key.clone(), vec![version]);
                        }
                    }
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev.clone(),
                    });
                    responses.push(TxnOpResponse::Put(PutResponse {
                        revision: rev,
                        prev_kv: if p.prev_kv { prev } else { None },
                    }));
                }
                TxnOp::Txn(nested) => {
                    let succeeded = path.next().unwrap_or(false);
                    let branch = if succeeded {
                        &nested.success
                    } else {
                        &nested.failure
                    };
                    let responses_of_nested = self.apply_ops(branch, path, rev, events);
                    responses.push(TxnOpResponse::Txn(TxnResponse {
                        // Set to the outer txn's revision at the end.
                        revision: 0,
                        succeeded,
                        responses: responses_of_nested,
                    }));
                }
                TxnOp::Delete(d) => {
                    let span = KeySpan::new(&d.range);
                    let victims: Vec<KeyValue> = self
                        .keys
                        .range::<[u8], _>(span.bounds())
                        .filter_map(|(_, h)| live_at(h, now).cloned())
                        .collect();
                    for prev in &victims {
                        if let Some(history) = self.keys.get_mut(&prev.key) {
                            history.push(Version {
                                rev,
                                sub: events.len() as u32,
                                kv: None,
                            });
                        }
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: prev.key.clone(),
                                mod_revision: rev,
                                ..KeyValue::default()
                            },
                            prev_kv: Some(prev.clone()),
                        });
                    }
                    responses.push(TxnOpResponse::Delete(DeleteResponse {
                        revision: if events.is_empty() { self.current } else { rev },
                        deleted: victims.len() as i64,
                        prev_kvs: if d.prev_kv { victims } else { Vec::new() },
                    }));
                }
            }
        }
        responses
    }

    /// The last logged revision (the one `apply` just wrote, if it wrote).
    pub(crate) fn last_logged(&self) -> Option<&LoggedRevision> {
        self.log.back()
    }

    /// Discard history below `target` (etcd's compaction): every version
    /// older than `target` goes, except each key's latest version at or below
    /// `target` when that is a put (reads at `target` still see it). Returns
    /// the removed versions as (revision, sub-revision).
    pub(crate) fn compact(&mut self, target: Revision) -> crate::Result<Vec<(Revision, u32)>> {
        if target <= self.compacted {
            return Err(StoreError::Compacted {
                requested: target,
                compact_revision: self.compacted,
            });
        }
        if target > self.current {
            return Err(StoreError::FutureRevision {
                requested: target,
                current: self.current,
            });
        }
        // Only keys written since the last compaction can hold versions to
        // drop: older keys were already reduced to one retained put.
        let mut candidates = BTreeSet::new();
        for entry in &self.log {
            if entry.rev > target {
                break;
            }
            candidates.extend(entry.events.iter().map(|e| e.kv.key.clone()));
        }
        let mut removed = Vec::new();
        for key in candidates {
            let Some(history) = self.keys.get_mut(&key) else {
                continue;
            };
            let latest = history.partition_point(|v| v.rev <= target);
            let mut i = 0;
            history.retain(|v| {
                let keep = v.rev >= target || (i + 1 == latest && v.kv.is_some());
                if !keep {
                    removed.push((v.rev, v.sub));
                }
                i += 1;
                keep
            });
            if history.is_empty() {
                self.keys.remove(&key);
            }
        }
        while self.log.front().is_some_and(|e| e.rev < target) {
            self.log.pop_front();
        }
        // The versions preceding the changes at `target` are gone now, so
        // their events lose prev_kv, exactly as they do after a restart.
        if let Some(front) = self.log.front_mut().filter(|e| e.rev == target) {
            for event in &mut front.events {
                event.prev_kv = None;
            }
        }
        self.compacted = target;
        Ok(removed)
    }

    /// Events matching `span` from revision `from` up to `upto`, whole
    /// revisions only, stopping after the revision that reaches `max_events`.
    /// Returns the events and the next revision to read from.
    pub(crate) fn watch_events(
        &self,
        span: &KeySpan,
        from: Revision,
        upto: Revision,
        max_events: usize,
        prev_kv: bool,
    ) -> crate::Result<(Vec<Event>, Revision)> {
        if from < self.compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compact_revision: self.compacted,
            });
        }
        if from > upto {
            return Ok((Vec::new(), from));
        }
        let mut out = Vec::new();
        let start = self.log.partition_point(|e| e.rev < from);
        for entry in self.log.range(start..) {
            if entry.rev > upto {
                break;
            }
            for event in entry.events.iter().filter(|e| span.contains(&e.kv.key)) {
                let mut event = event.clone();
                if !prev_kv {
                    event.prev_kv = None;
                }
                out.push(event);
            }
            if out.len() >= max_events && entry.rev < upto {
                return Ok((out, entry.rev + 1));
            }
        }
        Ok((out, upto + 1))
    }

    /// Keys whose visible version is attached to a lease, with the lease.
    pub(crate) fn leased_keys(&self) -> impl Iterator<Item = (&[u8], crate::LeaseId)> {
        self.keys.iter().filter_map(|(k, h)| {
            live_at(h, self.current)
                .filter(|kv| kv.lease != 0)
                .map(|kv| (k.as_slice(), kv.lease))
        })
    }

    /// Rebuild the index from persisted versions in (revision, sub-revision)
    /// order, as written.
    pub(crate) fn restore(
        rows: impl IntoIterator<Item = (Vec<u8>, Version)>,
        current: Revision,
        compacted: Revision,
    ) -> Self {
        let mut mvcc = Mvcc {
            current,
            visible: current,
            compacted,
            ..Mvcc::default()
        };
        for (key, version) in rows {
            let history = mvcc.keys.entry(key.clone()).or_default();
            let prev = history.last().and_then(|v| v.kv.clone());
            let rev = version.rev;
            let event = match &version.kv {
                Some(kv) => Event {
                    kind: EventKind::Put,
                    kv: kv.clone(),
                    prev_kv: prev,
                },
                None => Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key,
                        mod_revision: rev,
                        ..KeyValue::default()
                    },
                    prev_kv: prev,
                },
            };
            history.push(version);
            if rev >= compacted {
                match mvcc.log.back_mut() {
                    Some(last) if last.rev == rev => last.events.push(event),
                    _ => mvcc.log.push_back(LoggedRevision {
                        rev,
                        events: vec![event],
                    }),
                }
            }
        }
        mvcc
    }
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    if target == SortTarget::Key && order == SortOrder::Ascend {
        return; // already in key order
    }
    let key = |kv: &KeyValue, other: &KeyValue| match target {
        SortTarget::Key => kv.key.cmp(&other.key),
        SortTarget::Version => kv.version.cmp(&other.version),
        SortTarget::CreateRevision => kv.create_revision.cmp(&other.create_revision),
        SortTarget::ModRevision => kv.mod_revision.cmp(&other.mod_revision),
        SortTarget::Value => kv.value.cmp(&other.value),
    };
    match order {
        SortOrder::Ascend => kvs.sort_by(key),
        SortOrder::Descend => kvs.sort_by(|a, b| key(b, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Delete, Put};

    fn put(m: &mut Mvcc, k: &str, v: &str) -> Revision {
        m.apply(&[TxnOp::Put(Put::new(k, v))], &[]).1
    }

    fn get(m: &Mvcc, g: Get) -> GetResponse {
        m.range(&g, m.current()).unwrap()
    }

    #[test]
    fn revisions_versions_and_create_revisions_follow_etcd() {
        let mut m = Mvcc::new();
        assert_eq!(m.current(), 1);
        assert_eq!(put(&mut m, "a", "1"), 2);
        assert_eq!(put(&mut m, "a", "2"), 3);
        let kv = get(&m, Get::key("a")).kvs[0].clone();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        let (_, rev) = m.apply(&[TxnOp::Delete(Delete::key("a"))], &[]);
        assert_eq!(rev, 4);
        // Deleting nothing does not bump the revision.
        assert_eq!(m.apply(&[TxnOp::Delete(Delete::key("a"))], &[]).1, 4);
        assert_eq!(put(&mut m, "a", "3"), 5);
        let kv = get(&m, Get::key("a")).kvs[0].clone();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
        // Reads at past revisions see the past.
        assert_eq!(get(&m, Get::key("a").at_revision(2)).kvs[0].value, b"1");
        assert!(get(&m, Get::key("a").at_revision(4)).kvs.is_empty());
        assert!(get(&m, Get::key("a").at_revision(1)).kvs.is_empty());
        assert!(matches!(
            m.range(&Get::key("a").at_revision(6), m.current()),
            Err(StoreError::FutureRevision {
                requested: 6,
                current: 5
            })
        ));
    }

    #[test]
    fn one_txn_writes_one_revision_and_reads_its_own_writes() {
        let mut m = Mvcc::new();
        put(&mut m, "p/x", "old");
        let (resps, rev) = m.apply(
            &[
                TxnOp::Put(Put::new("p/a", "1")),
                TxnOp::Get(Get::prefix("p/")),
                TxnOp::Delete(Delete::key("p/x").with_prev_kv()),
            ],
            &[],
        );
        assert_eq!(rev, 3);
        match &resps[1] {
            TxnOpResponse::Get(g) => assert_eq!(g.count, 2),
            other => panic!("{other:?}"),
        }
        match &resps[2] {
            TxnOpResponse::Delete(d) => assert_eq!(d.prev_kvs[0].value, b"old"),
            other => panic!("{other:?}"),
        }
        let logged = m.last_logged().unwrap();
        assert_eq!(logged.rev, 3);
        assert_eq!(logged.events.len(), 2);
        assert_eq!(logged.events[1].kind, EventKind::Delete);
        assert_eq!(logged.events[1].kv.mod_revision, 3);
    }

    #[test]
    fn range_limit_count_sort_and_filters() {
        let mut m = Mvcc::new();
        for (k, v) in [("r/c", "1"), ("r/a", "3"), ("r/b", "2"), ("s", "x")] {
            put(&mut m, k, v);
        }
        let r = get(&m, Get::prefix("r/").with_limit(2));
        assert_eq!((r.count, r.more, r.kvs.len()), (3, true, 2));
        assert_eq!(r.kvs[0].key, b"r/a");
        let r = get(
            &m,
            Get::prefix("r/").sorted(SortTarget::Value, SortOrder::Descend),
        );
        let values: Vec<_> = r.kvs.iter().map(|kv| kv.value.clone()).collect();
        assert_eq!(values, vec![b"3".to_vec(), b"2".to_vec(), b"1".to_vec()]);
        let r = get(
            &m,
            Get::prefix("r/").sorted(SortTarget::CreateRevision, SortOrder::Descend),
        );
        assert_eq!(r.kvs[0].key, b"r/b");
        let r = get(&m, Get::prefix("r/").with_max_create_revision(3));
        assert_eq!((r.count, r.kvs.len()), (3, 2));
        let r = get(&m, Get::prefix("r/").count_only());
        assert_eq!((r.count, r.kvs.len()), (3, 0));
        let r = get(&m, Get::prefix("r/").keys_only());
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
        let r = get(&m, Get::prefix(""));
        assert_eq!(r.count, 4);
        let r = get(
            &m,
            Get::new(KeyRange::Range {
                start: b"r/b".to_vec(),
                end: vec![0],
            }),
        );
        assert_eq!(r.count, 3); // r/b, r/c, s
    }

    #[test]
    fn compares_treat_missing_keys_as_etcd() {
        let mut m = Mvcc::new();
        assert!(m.compare_holds(&Compare::absent("k")));
        assert!(!m.compare_holds(&Compare::value("k", CompareOp::NotEqual, "x")));
        assert!(m.compare_holds(&Compare::version("k", CompareOp::Less, 1)));
        put(&mut m, "k", "b");
        assert!(m.compare_holds(&Compare::value("k", CompareOp::Greater, "a")));
        assert!(m.compare_holds(&Compare::value("k", CompareOp::Less, "c")));
        assert!(m.compare_holds(&Compare::mod_revision("k", CompareOp::Equal, 2)));
        assert!(!m.compare_holds(&Compare::absent("k")));
        assert!(m.compare_holds(&Compare::lease("k", CompareOp::Equal, 0)));
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_compact_revision_need() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1"); // 2
        put(&mut m, "a", "2"); // 3
        put(&mut m, "b", "1"); // 4
        m.apply(&[TxnOp::Delete(Delete::key("b"))], &[]); // 5
        put(&mut m, "c", "1"); // 6
        let removed = m.compact(5).unwrap();
        // a@2 superseded, b@4 superseded; b's tombstone at 5 is kept (rev == 5).
        assert_eq!(removed, vec![(2, 0), (4, 0)]);
        assert_eq!(get(&m, Get::key("a").at_revision(5)).kvs[0].value, b"2");
        assert!(matches!(
            m.range(&Get::key("a").at_revision(4), 6),
            Err(StoreError::Compacted {
                requested: 4,
                compact_revision: 5
            })
        ));
        assert!(matches!(m.compact(5), Err(StoreError::Compacted { .. })));
        assert!(matches!(
            m.compact(7),
            Err(StoreError::FutureRevision { .. })
        ));
        let removed = m.compact(6).unwrap();
        assert_eq!(removed, vec![(5, 0)]);
        assert_eq!(get(&m, Get::prefix("")).count, 2);
        // The watch log starts at the compact revision.
        let span = KeySpan::new(&KeyRange::Prefix(Vec::new()));
        assert!(m.watch_events(&span, 5, 6, 100, false).is_err());
        let (events, next) = m.watch_events(&span, 6, 6, 100, false).unwrap();
        assert_eq!((events.len(), next), (1, 7));
    }

    #[test]
    fn watch_events_never_split_a_revision() {
        let mut m = Mvcc::new();
        m.apply(
            &[
                TxnOp::Put(Put::new("a", "1")),
                TxnOp::Put(Put::new("b", "1")),
            ],
            &[],
        ); // 2
        put(&mut m, "c", "1"); // 3
        let span = KeySpan::new(&KeyRange::Prefix(Vec::new()));
        let (events, next) = m.watch_events(&span, 0, 3, 1, true).unwrap();
        assert_eq!((events.len(), next), (2, 3));
        let (events, next) = m.watch_events(&span, next, 3, 1, true).unwrap();
        assert_eq!((events.len(), next), (1, 4));
        let (events, next) = m.watch_events(&span, next, 3, 1, true).unwrap();
        assert_eq!((events.len(), next), (0, 4));
    }

    #[test]
    fn unpublished_revisions_are_invisible() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        assert_eq!(m.visible(), 1);
        assert!(m.range(&Get::key("a"), m.visible()).unwrap().kvs.is_empty());
        assert!(m.visible_kv(b"a").is_none());
        m.publish();
        assert_eq!(m.visible_kv(b"a").unwrap().value, b"1");
    }

    #[test]
    fn restore_rebuilds_the_same_index_and_log() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        put(&mut m, "a", "2");
        m.apply(&[TxnOp::Delete(Delete::prefix(""))], &[]);
        put(&mut m, "b", "1");
        m.compact(3).unwrap();
        let rows: Vec<(Vec<u8>, Version)> = {
            let mut rows: Vec<_> = m
                .keys
                .iter()
                .flat_map(|(k, h)| h.iter().map(move |v| (k.clone(), v.clone())))
                .collect();
            rows.sort_by_key(|(_, v)| (v.rev, v.sub));
            rows
        };
        let r = Mvcc::restore(rows, m.current(), m.compacted());
        assert_eq!(r.keys, m.keys);
        let span = KeySpan::new(&KeyRange::Prefix(Vec::new()));
        assert_eq!(
            r.watch_events(&span, 3, 5, 100, true).unwrap(),
            m.watch_events(&span, 3, 5, 100, true).unwrap()
        );
    }

    mod model {
        //! The index against a naive model: a full snapshot per revision.
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            Put(u8, u8),
            DeletePrefix(u8),
            Compact,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u8..6, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
                1 => (0u8..3).prop_map(Op::DeletePrefix),
                1 => Just(Op::Compact),
            ]
        }

        fn key(k: u8) -> Vec<u8> {
            format!("{}/{}", k % 3, k).into_bytes()
        }

        proptest! {
            #[test]
            fn reads_at_every_retained_revision_match_snapshots(ops in proptest::collection::vec(op(), 1..60)) {
                let mut m = Mvcc::new();
                // snapshots[rev] = key -> (value, create, mod, version)
                let mut snapshots: BTreeMap<Revision, BTreeMap<Vec<u8>, KeyValue>> = BTreeMap::new();
                snapshots.insert(1, BTreeMap::new());
                for op in ops {
                    let mut snap = snapshots[&m.current()].clone();
                    match op {
                        Op::Put(k, v) => {
                            let rev = m.apply(&[TxnOp::Put(Put::new(key(k), vec![v]))], &[]).1;
                            let prev = snap.get(&key(k)).cloned();
                            snap.insert(key(k), KeyValue {
                                key: key(k),
                                value: vec![v],
                                create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                                mod_revision: rev,
                                version: prev.map_or(1, |p| p.version + 1),
                                lease: 0,
                            });
                            snapshots.insert(rev, snap);
                        }
                        Op::DeletePrefix(p) => {
                            let prefix = format!("{p}/").into_bytes();
                            let before = m.current();
                            let rev = m.apply(&[TxnOp::Delete(Delete::prefix(prefix.clone()))], &[]).1;
                            snap.retain(|k, _| !k.starts_with(&prefix));
                            prop_assert_eq!(rev > before, snap.len() < snapshots[&before].len());
                            snapshots.insert(rev, snap);
                        }
                        Op::Compact => {
                            let target = ((m.compacted() + m.current() + 1) / 2).max(m.compacted() + 1);
                            if target <= m.current() {
                                m.compact(target).unwrap();
                            }
                        }
                    }
                }
                m.publish();
                for (&rev, snap) in &snapshots {
                    let got = m.range(&Get::prefix("").at_revision(rev), m.visible());
                    if rev < m.compacted() {
                        let is_compacted = matches!(got, Err(StoreError::Compacted { .. }));
                        prop_assert!(is_compacted);
                        continue;
                    }
                    let got = got.unwrap();
                    let want: Vec<KeyValue> = snap.values().cloned().collect();
                    prop_assert_eq!(&got.kvs, &want, "at revision {}", rev);
                }
                // The watch log replays every retained revision's changes.
                let span = KeySpan::new(&KeyRange::Prefix(Vec::new()));
                let from = m.compacted().max(2);
                let (events, _) = m.watch_events(&span, from, m.visible(), usize::MAX, false).unwrap();
                let revs: std::collections::BTreeSet<_> = events.iter().map(|e| e.kv.mod_revision).collect();
                let want: std::collections::BTreeSet<_> = snapshots.keys().copied().filter(|&r| r >= from).collect();
                prop_assert_eq!(revs, want);
            }
        }
    }
}
