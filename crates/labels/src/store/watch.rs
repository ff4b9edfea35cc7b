use std::collections::{BTreeMap, VecDeque};

use drover_store::keys::{Keys, LabelType};
use drover_store::{Event, EventKind, Revision, Store, StoreError, Watch, WatchStream};

use super::{decode, list};
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
/// the store's matching set.
///
/// Errors: a failed store call returns `Err`; the next call resumes from
/// the last revision seen (re-listing if that was compacted meanwhile), so a
/// caller can back off and call again without losing changes. A corrupt
/// record in a watch event returns `Err(Corrupt)` and leaves that object's
/// reported state unchanged; the watch goes on.
#[derive(Debug)]
pub struct MatchWatch<S> {
    store: S,
    keys: Keys,
    label_type: LabelType,
    selector: Selector,
    prefix: String,
    /// What the consumer has been told matches.
    matched: BTreeMap<String, Labels>,
    /// Whether `Initial` was delivered.
    started: bool,
    stream: Option<WatchStream>,
    /// The revision to watch from: one past the last listed or seen change.
    next_revision: Revision,
    pending: VecDeque<Result<MatchEvent>>,
}

impl<S: Store> MatchWatch<S> {
    pub(super) fn new(store: S, keys: Keys, label_type: LabelType, selector: Selector) -> Self {
        let prefix = keys.labels_type_prefix(label_type);
        MatchWatch {
            store,
            keys,
            label_type,
            selector,
            prefix,
            matched: BTreeMap::new(),
            started: false,
            stream: None,
            next_revision: 0,
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
            if !self.started {
                self.relist().await?;
                continue;
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let watch =
                        Watch::prefix(self.prefix.as_str()).from_revision(self.next_revision);
                    let stream =
                        self.store
                            .watch(watch)
                            .await
                            .map_err(|source| LabelError::Store {
                                context: self.prefix.clone(),
                                source,
                            })?;
                    self.stream.insert(stream)
                }
            };
            match stream.next_batch().await {
                Some(Ok(batch)) => {
                    for event in &batch.events {
                        self.apply(event);
                    }
                }
                Some(Err(StoreError::Compacted {
                    requested,
                    compact_revision,
                })) => {
                    tracing::info!(
                        prefix = %self.prefix,
                        requested,
                        compact_revision,
                        "label watch start was compacted; re-listing"
                    );
                    self.stream = None;
                    self.relist().await?;
                }
                Some(Err(source)) => {
                    self.stream = None;
                    return Err(LabelError::Store {
                        context: self.prefix.clone(),
                        source,
                    });
                }
                None => {
                    self.stream = None;
                    return Err(LabelError::WatchEnded {
                        prefix: self.prefix.clone(),
                        reason: "the store ended the watch stream".to_owned(),
                    });
                }
            }
        }
    }

    /// Lists the matching set and queues `Initial` (first time) or the
    /// differences to what was reported.
    async fn relist(&mut self) -> Result<()> {
        let listing = list(&self.store, &self.keys, self.label_type, &self.selector).await?;
        let revision = listing.revision;
        if !self.started {
            self.started = true;
            self.matched = listing.objects.clone();
            self.pending.push_back(Ok(MatchEvent::Initial {
                revision,
                matches: listing.objects,
            }));
        } else {
            let old = std::mem::take(&mut self.matched);
            for (id, _) in old
                .iter()
                .filter(|(id, _)| !listing.objects.contains_key(*id))
            {
                self.pending.push_back(Ok(MatchEvent::Removed {
                    id: id.clone(),
                    revision,
                }));
            }
            for (id, labels) in &listing.objects {
                let event = match old.get(id) {
                    None => MatchEvent::Added {
                        id: id.clone(),
                        labels: labels.clone(),
                        revision,
                    },
                    Some(prev) if prev != labels => MatchEvent::Changed {
                        id: id.clone(),
                        labels: labels.clone(),
                        revision,
                    },
                    Some(_) => continue,
                };
                self.pending.push_back(Ok(event));
            }
            self.matched = listing.objects;
        }
        self.next_revision = revision + 1;
        Ok(())
    }

    fn apply(&mut self, event: &Event) {
        let revision = event.kv.mod_revision;
        self.next_revision = self.next_revision.max(revision + 1);
        let key = event.kv.key_str();
        let Some((_, id)) = self.keys.parse_labels(&event.kv.key) else {
            self.pending.push_back(Err(LabelError::Corrupt {
                key: key.into_owned(),
                reason: "not a label key of the layout".to_owned(),
            }));
            return;
        };
        let id = id.to_owned();
        let now = match event.kind {
            EventKind::Delete => None,
            EventKind::Put => match decode(&key, &event.kv.value) {
                Ok(labels) => Some(labels).filter(|l| self.selector.matches(l)),
                Err(e) => {
                    self.pending.push_back(Err(e));
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
