use std::collections::BTreeMap;

use drover_store::keys::{Keys, LabelType};
use drover_store::reflector::{Codec, Reflector, ReflectorError, ReflectorEvent};
use drover_store::{KeyValue, Revision, Store};

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

/// Decodes `labels/<type>/<id>` records for a [`Reflector`], keyed by the
/// object id (for pods, `<node>/<pod>`). Reflect one type's prefix
/// ([`Keys::labels_type_prefix`]).
#[derive(Clone, Debug)]
pub struct LabelCodec {
    keys: Keys,
}

impl LabelCodec {
    /// The codec of the label records under the key layout `keys`.
    pub fn new(keys: Keys) -> Self {
        LabelCodec { keys }
    }
}

impl Codec for LabelCodec {
    type Id = String;
    type Value = Labels;
    type Error = LabelError;

    fn id(&self, key: &[u8]) -> Result<String> {
        match self.keys.parse_labels(key) {
            Some((_, id)) => Ok(id.to_owned()),
            None => Err(LabelError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "not a label key of the layout".to_owned(),
            }),
        }
    }

    fn decode(&self, kv: &KeyValue) -> Result<(String, Labels)> {
        decode_kv(&self.keys, kv).map(|(id, labels)| (id.to_owned(), labels))
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
/// the store's matching set. The list-then-watch cycle, its retries, the
/// re-list diff and the corrupt-record policy are
/// [`drover_store::reflector`]'s.
///
/// Errors: a store failure that outlasts the retries returns `Err`; the next
/// call resumes from the last revision seen (re-listing if that was
/// compacted meanwhile), so a caller can back off and call again without
/// losing changes. A corrupt record in the first listing returns
/// `Err(Corrupt)` and the next call lists again. A corrupt record in a later
/// change (or re-list) returns `Err(Corrupt)` and leaves that object's
/// reported state unchanged; the watch goes on.
#[derive(Debug)]
pub struct MatchWatch<S: Store> {
    selector: Selector,
    reflector: Reflector<S, LabelCodec>,
    /// What the consumer has been told matches.
    matched: BTreeMap<String, Labels>,
}

impl<S: Store> MatchWatch<S> {
    pub(super) fn new(store: S, keys: Keys, label_type: LabelType, selector: Selector) -> Self {
        let prefix = keys.labels_type_prefix(label_type);
        MatchWatch {
            reflector: Reflector::prefix(store, prefix.as_str(), LabelCodec::new(keys)),
            selector,
            matched: BTreeMap::new(),
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
            let event = self.reflector.next().await.map_err(|e| match e {
                ReflectorError::Store { range, source } => LabelError::Store {
                    context: range,
                    source,
                },
                ReflectorError::Corrupt { source, .. } => source,
            })?;
            let (id, now, revision) = match event {
                ReflectorEvent::Initial { revision, objects } => {
                    let matches: BTreeMap<String, Labels> = objects
                        .into_iter()
                        .filter(|(_, labels)| self.selector.matches(labels))
                        .collect();
                    self.matched = matches.clone();
                    return Ok(MatchEvent::Initial { revision, matches });
                }
                ReflectorEvent::Applied {
                    id,
                    object,
                    revision,
                    ..
                } => {
                    let now = Some(object).filter(|l| self.selector.matches(l));
                    (id, now, revision)
                }
                ReflectorEvent::Deleted { id, revision, .. } => (id, None, revision),
                // Its differences came just before it.
                ReflectorEvent::Restarted { .. } => continue,
            };
            if let Some(event) = self.change(id, now, revision) {
                return Ok(event);
            }
        }
    }

    /// The change of the matching set that one object's change makes.
    fn change(
        &mut self,
        id: String,
        now: Option<Labels>,
        revision: Revision,
    ) -> Option<MatchEvent> {
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
            _ => return None,
        };
        match &event {
            MatchEvent::Added { labels, .. } | MatchEvent::Changed { labels, .. } => {
                self.matched.insert(id, labels.clone());
            }
            _ => {
                self.matched.remove(&id);
            }
        }
        Some(event)
    }
}
