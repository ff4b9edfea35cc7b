use std::collections::{BTreeMap, VecDeque};

use drover_store::keys::{Keys, LabelType};
use drover_store::list_watch::{KvChange, KvMirror, ListWatch, ListWatchEvent};
use drover_store::{Revision, Store};

use super::decode_kv;
use crate::error::{LabelError, Result};
use crate::index::LabelIndex;
use crate::labels::Labels;
use crate::selector::Selector;

/// A change of the set of objects a selector matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchEvent {
    /// The first event: every matching object at `revision`.
    Initial {
        revision: Revision,
        matches: BTreeMap<String, Labels>,
    },
    /// An object started matching.
    Added {
        id: String,
        labels: Labels,
        revision: Revision,
    },
    /// A matching object's labels changed and it still matches.
    Changed {
        id: String,
        labels: Labels,
        revision: Revision,
    },
    /// An object stopped matching (labels changed or removed).
    Removed { id: String, revision: Revision },
}

impl LabelIndex<String> {
    /// Applies a [`MatchEvent`], so the index mirrors what a [`MatchWatch`]
    /// reports: watch a type with [`Selector::everything`] and apply every
    /// event to keep an index of all its objects, kept current by the store.
    pub fn apply(&mut self, event: MatchEvent) {
        match event {
            MatchEvent::Initial { matches, .. } => {
                self.clear();
                for (id, labels) in matches {
                    self.insert(id, labels);
                }
            }
            MatchEvent::Added { id, labels, .. } | MatchEvent::Changed { id, labels, .. } => {
                self.insert(id, labels);
            }
            MatchEvent::Removed { id, .. } => {
                self.remove(&id);
            }
        }
    }
}

/// The matching set of a selector over one label type, kept current by a
/// store watch (no polling).
///
/// [`MatchWatch::next`] first lists the type and yields
/// [`MatchEvent::Initial`], then watches from the next revision and yields
/// one event per change of the matching set. When the watch's start
/// revision was compacted away it re-lists and yields the difference to what
/// it had reported, so a consumer applying the events always ends up with
/// the store's matching set. The list-then-watch cycle, its retries and the
/// re-list diff are [`drover_store::list_watch`]'s.
///
/// Errors: a store failure that outlasts the retries returns `Err`; the next
/// call resumes from the last revision seen (re-listing if that was
/// compacted meanwhile), so a caller can back off and call again without
/// losing changes. A corrupt record in the first listing returns
/// `Err(Corrupt)` and the next call lists again. A corrupt record in a later
/// change (or re-list) returns `Err(Corrupt)` and leaves that object's
/// reported state unchanged; the watch goes on.
#[derive(Debug)]
pub struct MatchWatch<S> {
    keys: Keys,
    selector: Selector,
    prefix: String,
    list_watch: ListWatch<S>,
    /// The raw keys seen, to diff re-lists against.
    mirror: KvMirror,
    /// What the consumer has been told matches.
    matched: BTreeMap<String, Labels>,
    pending: VecDeque<Result<MatchEvent>>,
}

impl<S: Store> MatchWatch<S> {
    pub(super) fn new(store: S, keys: Keys, label_type: LabelType, selector: Selector) -> Self {
        let prefix = keys.labels_type_prefix(label_type);
        MatchWatch {
            list_watch: ListWatch::prefix(store, prefix.as_str()),
            keys,
            selector,
            prefix,
            mirror: KvMirror::new(),
            matched: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The matching set as reported so far.
    pub fn current(&self) -> &BTreeMap<String, Labels> {
        &self.matched
    }

    /// The next event. Cancel-safe while waiting for a change.
    pub async fn next(&mut self) -> Result<MatchEvent> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            let event = self
                .list_watch
                .next()
                .await
                .map_err(|source| LabelError::Store {
                    context: self.prefix.clone(),
                    source,
                })?;
            if let ListWatchEvent::Listed { revision, kvs } = &event {
                let mut matches = BTreeMap::new();
                for kv in kvs {
                    match decode_kv(&self.keys, kv) {
                        Ok((id, labels)) if self.selector.matches(&labels) => {
                            matches.insert(id.to_owned(), labels);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            // Nothing was reported yet: list again next time.
                            self.list_watch.reset();
                            return Err(e);
                        }
                    }
                }
                self.mirror = KvMirror::new();
                self.mirror.apply(&event);
                self.matched = matches.clone();
                return Ok(MatchEvent::Initial {
                    revision: *revision,
                    matches,
                });
            }
            for change in self.mirror.apply(&event) {
                self.apply(change);
            }
        }
    }

    /// Queues the change of the matching set that one key's change makes.
    fn apply(&mut self, change: KvChange) {
        let revision = change.revision();
        let (id, now) = match &change {
            KvChange::Added { kv, .. } | KvChange::Modified { kv, .. } => {
                match decode_kv(&self.keys, kv) {
                    Ok((id, labels)) => (
                        id.to_owned(),
                        Some(labels).filter(|l| self.selector.matches(l)),
                    ),
                    Err(e) => {
                        self.pending.push_back(Err(e));
                        return;
                    }
                }
            }
            KvChange::Deleted { prev, .. } => match self.keys.parse_labels(&prev.key) {
                Some((_, id)) => (id.to_owned(), None),
                None => {
                    self.pending.push_back(Err(LabelError::Corrupt {
                        key: prev.key_str().into_owned(),
                        reason: "not a label key of the layout".to_owned(),
                    }));
                    return;
                }
            },
        };
        let event = match (self.matched.get(&id), now) {
            (None, Some(labels)) => MatchEvent::Added {
                id: id.clone(),
                labels,
                revision,
            },
            (Some(prev), Some(labels)) if *prev != labels => MatchEvent::Changed {
                id: id.clone(),
                labels,
                revision,
            },
            (Some(_), None) => MatchEvent::Removed {
                id: id.clone(),
                revision,
            },
            _ => return,
        };
        match &event {
            MatchEvent::Added { labels, .. } | MatchEvent::Changed { labels, .. } => {
                self.matched.insert(id, labels.clone());
            }
            _ => {
                self.matched.remove(&id);
            }
        }
        self.pending.push_back(Ok(event));
    }
}
