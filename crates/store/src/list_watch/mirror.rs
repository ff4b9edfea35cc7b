use std::collections::BTreeMap;

use super::ListWatchEvent;
use crate::{EventKind, KeyValue, Revision};

/// One change of a [`KvMirror`]'s content.
///
/// `revision` is the revision the mirror learned it at: the event's for a
/// watched change, the snapshot's for a difference found by a re-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvChange {
    /// A key the mirror did not have.
    Added { kv: KeyValue, revision: Revision },
    /// A key the mirror had, written again (its value may be the same).
    Modified {
        prev: KeyValue,
        kv: KeyValue,
        revision: Revision,
    },
    /// A key the mirror had is gone; `prev` is what it last held.
    Deleted { prev: KeyValue, revision: Revision },
}

impl KvChange {
    /// The key that changed.
    pub fn key(&self) -> &[u8] {
        match self {
            KvChange::Added { kv, .. } | KvChange::Modified { kv, .. } => &kv.key,
            KvChange::Deleted { prev, .. } => &prev.key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            KvChange::Added { revision, .. }
            | KvChange::Modified { revision, .. }
            | KvChange::Deleted { revision, .. } => *revision,
        }
    }
}

/// The keys a [`ListWatch`](super::ListWatch) covers, kept current by
/// applying its events, answering each with what changed.
///
/// A snapshot ([`ListWatchEvent::Listed`] or [`ListWatchEvent::Restarted`])
/// replaces the content and returns the differences: deletions first, then
/// additions and modifications, each in key order. Keys whose [`KeyValue`]
/// is unchanged produce nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvMirror {
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    revision: Revision,
}

impl KvMirror {
    pub fn new() -> Self {
        KvMirror::default()
    }

    /// Applies `event`; returns what it changed.
    pub fn apply(&mut self, event: &ListWatchEvent) -> Vec<KvChange> {
        match event {
            ListWatchEvent::Listed { revision, kvs }
            | ListWatchEvent::Restarted { revision, kvs } => self.replace(*revision, kvs),
            ListWatchEvent::Changed(event) => {
                let revision = event.kv.mod_revision;
                self.revision = self.revision.max(revision);
                let change = match event.kind {
                    EventKind::Put => match self.kvs.insert(event.kv.key.clone(), event.kv.clone())
                    {
                        None => KvChange::Added {
                            kv: event.kv.clone(),
                            revision,
                        },
                        Some(prev) => KvChange::Modified {
                            prev,
                            kv: event.kv.clone(),
                            revision,
                        },
                    },
                    EventKind::Delete => match self.kvs.remove(&event.kv.key) {
                        Some(prev) => KvChange::Deleted { prev, revision },
                        None => return Vec::new(),
                    },
                };
                vec![change]
            }
        }
    }

    fn replace(&mut self, revision: Revision, kvs: &[KeyValue]) -> Vec<KvChange> {
        self.revision = revision;
        let fresh: BTreeMap<Vec<u8>, KeyValue> =
            kvs.iter().map(|kv| (kv.key.clone(), kv.clone())).collect();
        let old = std::mem::replace(&mut self.kvs, fresh);
        let mut changes: Vec<KvChange> = old
            .iter()
            .filter(|(key, _)| !self.kvs.contains_key(*key))
            .map(|(_, prev)| KvChange::Deleted {
                prev: prev.clone(),
                revision,
            })
            .collect();
        for (key, kv) in &self.kvs {
            match old.get(key) {
                None => changes.push(KvChange::Added {
                    kv: kv.clone(),
                    revision,
                }),
                Some(prev) if prev != kv => changes.push(KvChange::Modified {
                    prev: prev.clone(),
                    kv: kv.clone(),
                    revision,
                }),
                Some(_) => {}
            }
        }
        changes
    }

    /// The value held for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.kvs.get(key)
    }

    /// Every key held, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &KeyValue> {
        self.kvs.values()
    }

    pub fn len(&self) -> usize {
        self.kvs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kvs.is_empty()
    }

    /// The revision of the last event or snapshot applied.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}
