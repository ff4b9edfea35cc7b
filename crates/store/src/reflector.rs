//! A typed reflector: [`ListWatch`] plus a [`Codec`] from key-value to
//! `(id, T)`, typed events and a shared read-only [`Cache`].
//!
//! Every Drover component that follows a key range (label matches, a pod's
//! health, election candidates, bucket members, a controller's watched
//! types) stands on this one loop:
//!
//! - the first [`Reflector::next`] lists the range and yields
//!   [`ReflectorEvent::Initial`] with every object; the [`Cache`] becomes
//!   ready at that moment ([`Cache::wait_until_ready`]);
//! - then one [`ReflectorEvent::Applied`] (created or rewritten) or
//!   [`ReflectorEvent::Deleted`] per changed key, in revision order;
//! - when the resume revision was compacted, [`ListWatch`] re-lists: the
//!   differences to what was reported come as `Applied`/`Deleted` events
//!   (so a consumer applying events stays exact), followed by
//!   [`ReflectorEvent::Restarted`] with the whole relisted snapshot (for a
//!   consumer that prefers to resync everything after a gap).
//!
//! **Corrupt records** are decided here, once for every user: a record the
//! codec cannot decode is *surfaced*, never silently dropped, as
//! [`ReflectorError::Corrupt`] naming the key, and the reflector goes on:
//! - in the first listing, nothing has been reported yet, so `next` returns
//!   the error and the following call lists again (the cache stays not
//!   ready: a half-read range must not look complete);
//! - in a later change (or a re-list), `next` returns the error in that
//!   change's place and the cache keeps the object's last good value; the
//!   following calls go on with the next change.
//!
//! The consumer that receives the error logs it (it is the one that knows
//! what the object is for). Store failures that outlast [`ListWatch`]'s
//! retries come as [`ReflectorError::Store`]; calling `next` again resumes
//! from the last revision delivered.
//!
//! ```
//! use std::convert::Infallible;
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::reflector::{Codec, Reflector, ReflectorEvent};
//! use drover_store::{KeyValue, Put, Store};
//!
//! /// `/drover/nodes/<id>` -> its value as text.
//! struct Nodes;
//! impl Codec for Nodes {
//!     type Id = String;
//!     type Value = String;
//!     type Error = Infallible;
//!     fn id(&self, key: &[u8]) -> Result<String, Infallible> {
//!         Ok(String::from_utf8_lossy(&key[b"/drover/nodes/".len()..]).into_owned())
//!     }
//!     fn decode(&self, kv: &KeyValue) -> Result<(String, String), Infallible> {
//!         Ok((self.id(&kv.key)?, String::from_utf8_lossy(&kv.value).into_owned()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedStore::in_memory();
//! store.put(Put::new("/drover/nodes/n1", "up")).await?;
//! let mut nodes = Reflector::prefix(store.clone(), "/drover/nodes/", Nodes);
//! let cache = nodes.cache(); // cheap to clone, read-only
//!
//! assert!(matches!(nodes.next().await?, ReflectorEvent::Initial { objects, .. } if objects.len() == 1));
//! cache.wait_until_ready().await;
//! store.put(Put::new("/drover/nodes/n2", "up")).await?;
//! assert!(matches!(nodes.next().await?, ReflectorEvent::Applied { id, prev: None, .. } if id == "n2"));
//! assert_eq!(cache.get(&"n2".to_owned()).as_deref(), Some("up"));
//! assert_eq!(cache.len(), 2);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use crate::list_watch::{KvChange, KvMirror, ListWatch, ListWatchEvent};
use crate::{KeyRange, KeyValue, Revision, Store, StoreError};

/// Turns a stored record into a typed object.
pub trait Codec: Send + Sync + 'static {
    /// The object's identity (from its key).
    type Id: Clone + Ord + fmt::Debug + Send + Sync + 'static;
    /// The decoded object.
    type Value: Clone + fmt::Debug + Send + Sync + 'static;
    /// Why a record is corrupt (naming what is wrong).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The id of the object stored at `key` (also used for deletions,
    /// whose value is gone).
    fn id(&self, key: &[u8]) -> Result<Self::Id, Self::Error>;

    /// Decodes a record into its id and object.
    fn decode(&self, kv: &KeyValue) -> Result<(Self::Id, Self::Value), Self::Error>;
}

/// What [`Reflector::next`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReflectorEvent<I, T> {
    /// The first snapshot: every object at `revision`.
    Initial {
        revision: Revision,
        objects: BTreeMap<I, T>,
    },
    /// An object was created (`prev: None`) or rewritten (`prev`: the value
    /// the cache held; it may equal `object`).
    Applied {
        id: I,
        object: T,
        prev: Option<T>,
        revision: Revision,
    },
    /// An object is gone; `last` is what the cache held (`None` when its
    /// record never decoded).
    Deleted {
        id: I,
        last: Option<T>,
        revision: Revision,
    },
    /// After a compaction gap: the range was listed again at `revision` and
    /// the differences were yielded just before this; `objects` is the whole
    /// snapshot.
    Restarted {
        revision: Revision,
        objects: BTreeMap<I, T>,
    },
}

impl<I, T> ReflectorEvent<I, T> {
    /// The revision this event brings the consumer to.
    pub fn revision(&self) -> Revision {
        match self {
            ReflectorEvent::Initial { revision, .. }
            | ReflectorEvent::Applied { revision, .. }
            | ReflectorEvent::Deleted { revision, .. }
            | ReflectorEvent::Restarted { revision, .. } => *revision,
        }
    }
}

/// A failure of [`Reflector::next`]; the reflector stays usable (see the
/// [module docs](self)).
#[derive(Debug, thiserror::Error)]
pub enum ReflectorError<E: std::error::Error + 'static> {
    /// The store failed beyond [`ListWatch`]'s retries.
    #[error("reflecting {range}: store failure")]
    Store {
        range: String,
        #[source]
        source: StoreError,
    },
    /// The record at `key` does not decode.
    #[error("reflecting {key}: corrupt record")]
    Corrupt {
        key: String,
        #[source]
        source: E,
    },
}

struct CacheState<I, T> {
    objects: BTreeMap<I, T>,
    revision: Revision,
}

struct CacheShared<I, T> {
    state: RwLock<CacheState<I, T>>,
    ready: watch::Sender<bool>,
}

/// A reflector's objects, shared read-only: cheap to clone, every clone sees
/// the reflector's latest state.
pub struct Cache<I, T> {
    shared: Arc<CacheShared<I, T>>,
}

impl<I, T> Clone for Cache<I, T> {
    fn clone(&self) -> Self {
        Cache {
            shared: self.shared.clone(),
        }
    }
}

impl<I: fmt::Debug, T> fmt::Debug for Cache<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.read();
        f.debug_struct("Cache")
            .field("objects", &state.objects.len())
            .field("revision", &state.revision)
            .field("ready", &*self.shared.ready.borrow())
            .finish()
    }
}

impl<I: Ord + Clone, T: Clone> Cache<I, T> {
    fn new() -> Self {
        Cache {
            shared: Arc::new(CacheShared {
                state: RwLock::new(CacheState {
                    objects: BTreeMap::new(),
                    revision: 0,
                }),
                ready: watch::Sender::new(false),
            }),
        }
    }

    /// One object, `None` when absent.
    pub fn get(&self, id: &I) -> Option<T> {
        self.shared.state.read().objects.get(id).cloned()
    }

    /// Every object, as of [`Cache::revision`].
    pub fn snapshot(&self) -> BTreeMap<I, T> {
        self.shared.state.read().objects.clone()
    }

    /// Every id, in order.
    pub fn ids(&self) -> Vec<I> {
        self.shared.state.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.shared.state.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The store revision the cache reflects (0 before the first listing).
    pub fn revision(&self) -> Revision {
        self.shared.state.read().revision
    }

    /// True once the first listing was reflected completely.
    pub fn is_ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Resolves once the first listing was reflected completely (at once if
    /// it was). Pending forever if the reflector is dropped before that.
    pub async fn wait_until_ready(&self) {
        let mut ready = self.shared.ready.subscribe();
        if ready.wait_for(|ready| *ready).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn replace(&self, objects: BTreeMap<I, T>, revision: Revision) {
        {
            let mut state = self.shared.state.write();
            state.objects = objects;
            state.revision = revision;
        }
        self.shared.ready.send_replace(true);
    }

    fn put(&self, id: I, object: T) -> Option<T> {
        self.shared.state.write().objects.insert(id, object)
    }

    fn remove(&self, id: &I) -> Option<T> {
        self.shared.state.write().objects.remove(id)
    }

    fn advance(&self, revision: Revision) {
        let mut state = self.shared.state.write();
        state.revision = state.revision.max(revision);
    }
}

type Item<C> = Result<
    ReflectorEvent<<C as Codec>::Id, <C as Codec>::Value>,
    ReflectorError<<C as Codec>::Error>,
>;

/// Reflects a key range into typed objects. See the [module docs](self).
///
/// Cancel-safe: dropping a pending [`Reflector::next`] loses nothing.
pub struct Reflector<S, C: Codec> {
    list_watch: ListWatch<S>,
    codec: C,
    /// The raw records seen, to diff re-lists against.
    mirror: KvMirror,
    cache: Cache<C::Id, C::Value>,
    pending: VecDeque<Item<C>>,
}

impl<S: Store, C: Codec> fmt::Debug for Reflector<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflector")
            .field(
                "range",
                &String::from_utf8_lossy(self.list_watch.range().start()),
            )
            .field("cache", &self.cache)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<S: Store, C: Codec> Reflector<S, C> {
    /// Reflects `range` through `codec`.
    pub fn new(store: S, range: KeyRange, codec: C) -> Self {
        Self::from_list_watch(ListWatch::new(store, range), codec)
    }

    /// Reflects every key starting with `prefix`.
    pub fn prefix(store: S, prefix: impl Into<Vec<u8>>, codec: C) -> Self {
        Self::new(store, KeyRange::Prefix(prefix.into()), codec)
    }

    /// Reflects what `list_watch` follows (e.g. with its own retry policy).
    pub fn from_list_watch(list_watch: ListWatch<S>, codec: C) -> Self {
        Reflector {
            list_watch,
            codec,
            mirror: KvMirror::new(),
            cache: Cache::new(),
            pending: VecDeque::new(),
        }
    }

    /// The shared read-only view of the reflected objects.
    pub fn cache(&self) -> Cache<C::Id, C::Value> {
        self.cache.clone()
    }

    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The revision delivered so far (0 before the first listing).
    pub fn revision(&self) -> Revision {
        self.list_watch.revision()
    }

    /// True when every change of the revision last delivered has been
    /// yielded: the reflected state is not in the middle of a txn or a lease
    /// expiry that changed several keys at once.
    pub fn revision_complete(&self) -> bool {
        self.pending.is_empty() && self.list_watch.revision_complete()
    }

    /// Starts over: the next call lists afresh and yields
    /// [`ReflectorEvent::Initial`].
    pub fn reset(&mut self) {
        self.pending.clear();
        self.list_watch.reset();
    }

    /// The next event (see the [module docs](self)).
    pub async fn next(&mut self) -> Item<C> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return item;
            }
            let event = self
                .list_watch
                .next()
                .await
                .map_err(|source| ReflectorError::Store {
                    range: String::from_utf8_lossy(self.list_watch.range().start()).into_owned(),
                    source,
                })?;
            match &event {
                ListWatchEvent::Listed { revision, kvs } => {
                    let mut objects = BTreeMap::new();
                    for kv in kvs {
                        match self.codec.decode(kv) {
                            Ok((id, object)) => {
                                objects.insert(id, object);
                            }
                            Err(source) => {
                                // Nothing was reported yet: list again next time.
                                self.list_watch.reset();
                                return Err(ReflectorError::Corrupt {
                                    key: kv.key_str().into_owned(),
                                    source,
                                });
                            }
                        }
                    }
                    self.mirror = KvMirror::new();
                    self.mirror.apply(&event);
                    self.cache.replace(objects.clone(), *revision);
                    return Ok(ReflectorEvent::Initial {
                        revision: *revision,
                        objects,
                    });
                }
                ListWatchEvent::Restarted { revision, .. } => {
                    for change in self.mirror.apply(&event) {
                        self.apply(change);
                    }
                    self.cache.advance(*revision);
                    self.pending.push_back(Ok(ReflectorEvent::Restarted {
                        revision: *revision,
                        objects: self.cache.snapshot(),
                    }));
                }
                ListWatchEvent::Changed(change) => {
                    let revision = change.kv.mod_revision;
                    for change in self.mirror.apply(&event) {
                        self.apply(change);
                    }
                    self.cache.advance(revision);
                }
            }
        }
    }

    /// Queues the typed event (or the corrupt-record error) of one key's
    /// change and applies it to the cache.
    fn apply(&mut self, change: KvChange) {
        let revision = change.revision();
        let item = match change {
            KvChange::Added { kv, .. } | KvChange::Modified { kv, .. } => {
                match self.codec.decode(&kv) {
                    Ok((id, object)) => {
                        let prev = self.cache.put(id.clone(), object.clone());
                        Ok(ReflectorEvent::Applied {
                            id,
                            object,
                            prev,
                            revision,
                        })
                    }
                    Err(source) => Err(ReflectorError::Corrupt {
                        key: kv.key_str().into_owned(),
                        source,
                    }),
                }
            }
            KvChange::Deleted { prev, .. } => match self.codec.id(&prev.key) {
                Ok(id) => {
                    let last = self.cache.remove(&id);
                    Ok(ReflectorEvent::Deleted { id, last, revision })
                }
                Err(source) => Err(ReflectorError::Corrupt {
                    key: prev.key_str().into_owned(),
                    source,
                }),
            },
        };
        self.pending.push_back(item);
    }
}

#[cfg(test)]
mod tests;
