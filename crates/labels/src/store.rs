//! Labels kept in a [`Store`] under `labels/<type>/<id>`.
//!
//! Each labeled object is one key whose value is its labels as a JSON map
//! (`{"tier":"web","zone":"a"}`); an object without labels has no key.
//! Writes read the key, change the map and write it back in a txn guarded
//! by the key's `mod_revision` (0 when absent), retrying a bounded number of
//! times when someone else wrote in between.

mod watch;

use std::collections::BTreeMap;

use drover_store::keys::Keys;
use drover_store::{
    Compare, CompareOp, Delete, Get, KeyValue, Put, Revision, Store, StoreError, Txn, TxnOp,
};

pub use drover_store::keys::LabelType;
pub use watch::{LabelCodec, MatchEvent, MatchWatch};

use crate::error::{LabelError, Result};
use crate::labels::{Labels, check_pair};
use crate::selector::Selector;

/// How many times a write re-reads and retries after losing a CAS race.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Labels of one object with the revision they were read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedLabels {
    pub labels: Labels,
    /// `mod_revision` of the key; 0 when the object has no labels (no key).
    pub mod_revision: Revision,
}

/// All (or all matching) objects of one type, read at one revision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelListing {
    /// The store revision of the read.
    pub revision: Revision,
    /// Object id -> labels, in id order.
    pub objects: BTreeMap<String, Labels>,
}

/// A label write to commit inside the caller's own transaction: add
/// `compares` to its guards and `ops` to its success branch (or use
/// [`LabelTxn::add_to`]). The compares pin the labels to the revision they
/// were read at, so the caller's txn fails if they changed meanwhile; it
/// then re-reads and tries again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelTxn {
    pub compares: Vec<Compare>,
    /// Empty when the labels already have the requested state.
    pub ops: Vec<TxnOp>,
    /// The labels after the write.
    pub labels: Labels,
}

impl LabelTxn {
    /// `txn` with this write's guards and operations added.
    pub fn add_to(self, txn: Txn) -> Txn {
        txn.when(self.compares).and_then(self.ops)
    }
}

/// Reads, writes and watches labels in a store.
///
/// ```
/// use drover_labels::{Labeler, LabelType, Selector};
/// use drover_store::embedded::EmbeddedStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), drover_labels::LabelError> {
/// let labeler = Labeler::new(EmbeddedStore::in_memory());
/// labeler.set(LabelType::Node, "n1", "zone", "a").await?;
/// labeler.set(LabelType::Node, "n2", "zone", "b").await?;
/// let sel: Selector = "zone=a".parse()?;
/// let found = labeler.matches(LabelType::Node, &sel).await?;
/// assert_eq!(found.objects.keys().collect::<Vec<_>>(), ["n1"]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Labeler<S> {
    store: S,
    keys: Keys,
    max_attempts: u32,
}

fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> LabelError {
    let context = context.into();
    move |source| LabelError::Store { context, source }
}

/// Decodes a stored label map; `key` names it in errors.
pub(crate) fn decode(key: &str, value: &[u8]) -> Result<Labels> {
    serde_json::from_slice::<Labels>(value).map_err(|e| LabelError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn encode(labels: &Labels) -> Vec<u8> {
    serde_json::to_vec(labels).expect("a string map always serializes")
}

impl<S: Store> Labeler<S> {
    /// Labels under the default key prefix (`/drover/`).
    pub fn new(store: S) -> Self {
        Self::with_keys(store, Keys::default())
    }

    /// Labels under the key layout `keys`.
    pub fn with_keys(store: S, keys: Keys) -> Self {
        Labeler {
            store,
            keys,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Gives up a write after `attempts` lost CAS races (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn key(&self, label_type: LabelType, id: &str) -> Result<String> {
        self.keys
            .labels(label_type, id)
            .map_err(LabelError::InvalidTarget)
    }

    /// The labels of one object (empty when it has none).
    pub async fn get(&self, label_type: LabelType, id: &str) -> Result<Labels> {
        Ok(self.get_versioned(label_type, id).await?.labels)
    }

    /// The labels of one object and the `mod_revision` they were read at.
    pub async fn get_versioned(&self, label_type: LabelType, id: &str) -> Result<VersionedLabels> {
        let key = self.key(label_type, id)?;
        self.read(&key).await
    }

    async fn read(&self, key: &str) -> Result<VersionedLabels> {
        let resp = self
            .store
            .get(Get::key(key))
            .await
            .map_err(store_err(key))?;
        match resp.first() {
            Some(kv) => Ok(VersionedLabels {
                labels: decode(key, &kv.value)?,
                mod_revision: kv.mod_revision,
            }),
            None => Ok(VersionedLabels {
                labels: Labels::new(),
                mod_revision: 0,
            }),
        }
    }

    /// Every labeled object of `label_type`.
    pub async fn list(&self, label_type: LabelType) -> Result<LabelListing> {
        list(&self.store, &self.keys, label_type, &Selector::everything()).await
    }

    /// The objects of `label_type` that `selector` matches, filtered on the
    /// client after one prefix read. Objects without labels have no key and
    /// are never listed, even for selectors like `!zone`.
    pub async fn matches(
        &self,
        label_type: LabelType,
        selector: &Selector,
    ) -> Result<LabelListing> {
        list(&self.store, &self.keys, label_type, selector).await
    }

    /// Sets one label. Returns the object's labels after the write.
    pub async fn set(
        &self,
        label_type: LabelType,
        id: &str,
        key: &str,
        value: &str,
    ) -> Result<Labels> {
        check_pair(key, value)?;
        self.modify(label_type, id, |labels| {
            labels.insert(key, value).map(|_| ())
        })
        .await
    }

    /// Replaces all labels of one object (an empty set removes the key).
    pub async fn set_all(
        &self,
        label_type: LabelType,
        id: &str,
        labels: &Labels,
    ) -> Result<Labels> {
        self.modify(label_type, id, |current| {
            *current = labels.clone();
            Ok(())
        })
        .await
    }

    /// Removes one label (nothing to do when it is absent).
    pub async fn remove(&self, label_type: LabelType, id: &str, key: &str) -> Result<Labels> {
        self.modify(label_type, id, |labels| {
            labels.remove(key);
            Ok(())
        })
        .await
    }

    /// Removes every label of one object.
    pub async fn remove_all(&self, label_type: LabelType, id: &str) -> Result<()> {
        self.modify(label_type, id, |labels| {
            *labels = Labels::new();
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Read-modify-CAS with bounded retry.
    async fn modify(
        &self,
        label_type: LabelType,
        id: &str,
        change: impl Fn(&mut Labels) -> Result<()>,
    ) -> Result<Labels> {
        let key = self.key(label_type, id)?;
        for attempt in 1..=self.max_attempts {
            let write = self.prepare(&key, &change).await?;
            if write.ops.is_empty() {
                return Ok(write.labels);
            }
            let labels = write.labels.clone();
            let resp = self
                .store
                .txn(write.add_to(Txn::new()))
                .await
                .map_err(store_err(&key))?;
            if resp.succeeded {
                return Ok(labels);
            }
            tracing::debug!(%key, attempt, "label write lost a CAS race; re-reading");
        }
        Err(LabelError::Conflict {
            key,
            attempts: self.max_attempts,
        })
    }

    /// Reads `key` and returns the guarded write that applies `change`.
    async fn prepare(
        &self,
        key: &str,
        change: &impl Fn(&mut Labels) -> Result<()>,
    ) -> Result<LabelTxn> {
        let current = self.read(key).await?;
        let mut labels = current.labels.clone();
        change(&mut labels)?;
        let compares = vec![Compare::mod_revision(
            key,
            CompareOp::Equal,
            current.mod_revision,
        )];
        let ops = if labels == current.labels {
            Vec::new()
        } else if labels.is_empty() {
            vec![TxnOp::Delete(Delete::key(key))]
        } else {
            vec![TxnOp::Put(Put::new(key, encode(&labels)))]
        };
        Ok(LabelTxn {
            compares,
            ops,
            labels,
        })
    }

    /// [`Labeler::set`] as a write for the caller's txn (see [`LabelTxn`]).
    pub async fn set_txn(
        &self,
        label_type: LabelType,
        id: &str,
        key: &str,
        value: &str,
    ) -> Result<LabelTxn> {
        check_pair(key, value)?;
        let k = self.key(label_type, id)?;
        self.prepare(&k, &|labels: &mut Labels| {
            labels.insert(key, value).map(|_| ())
        })
        .await
    }

    /// [`Labeler::set_all`] as a write for the caller's txn.
    pub async fn set_all_txn(
        &self,
        label_type: LabelType,
        id: &str,
        labels: &Labels,
    ) -> Result<LabelTxn> {
        let k = self.key(label_type, id)?;
        self.prepare(&k, &|current: &mut Labels| {
            *current = labels.clone();
            Ok(())
        })
        .await
    }

    /// [`Labeler::remove`] as a write for the caller's txn.
    pub async fn remove_txn(&self, label_type: LabelType, id: &str, key: &str) -> Result<LabelTxn> {
        let k = self.key(label_type, id)?;
        self.prepare(&k, &|labels: &mut Labels| {
            labels.remove(key);
            Ok(())
        })
        .await
    }

    /// [`Labeler::remove_all`] as a write for the caller's txn.
    pub async fn remove_all_txn(&self, label_type: LabelType, id: &str) -> Result<LabelTxn> {
        let k = self.key(label_type, id)?;
        self.prepare(&k, &|labels: &mut Labels| {
            *labels = Labels::new();
            Ok(())
        })
        .await
    }

    /// Replaces an object's labels unconditionally, as one operation for a
    /// txn whose own compares decide (a controller's fenced write of the
    /// labels of an object it creates). Empty labels delete the key.
    pub fn put_op(&self, label_type: LabelType, id: &str, labels: &Labels) -> Result<TxnOp> {
        let key = self.key(label_type, id)?;
        Ok(if labels.is_empty() {
            TxnOp::Delete(Delete::key(key))
        } else {
            TxnOp::Put(Put::new(key, encode(labels)))
        })
    }

    /// Deletes an object's labels, as one operation for a txn.
    pub fn delete_op(&self, label_type: LabelType, id: &str) -> Result<TxnOp> {
        Ok(TxnOp::Delete(Delete::key(self.key(label_type, id)?)))
    }

    /// Watches the objects of `label_type` that `selector` matches: first
    /// [`MatchEvent::Initial`], then one event per change of the matching
    /// set, driven by a store watch (see [`MatchWatch`]).
    pub fn watch_matches(&self, label_type: LabelType, selector: Selector) -> MatchWatch<S> {
        MatchWatch::new(self.store.clone(), self.keys.clone(), label_type, selector)
    }
}

/// Lists `labels/<type>/` at one revision and filters by `selector`.
pub(crate) async fn list<S: Store>(
    store: &S,
    keys: &Keys,
    label_type: LabelType,
    selector: &Selector,
) -> Result<LabelListing> {
    let prefix = keys.labels_type_prefix(label_type);
    let resp = store
        .get(Get::prefix(prefix.as_str()))
        .await
        .map_err(store_err(&prefix))?;
    let mut objects = BTreeMap::new();
    for kv in &resp.kvs {
        let (id, labels) = decode_kv(keys, kv)?;
        if selector.matches(&labels) {
            objects.insert(id.to_owned(), labels);
        }
    }
    Ok(LabelListing {
        revision: resp.revision,
        objects,
    })
}

/// The object id and labels of a stored label key.
pub(crate) fn decode_kv<'k>(keys: &Keys, kv: &'k KeyValue) -> Result<(&'k str, Labels)> {
    let key = kv.key_str();
    let Some((_, id)) = keys.parse_labels(&kv.key) else {
        return Err(LabelError::Corrupt {
            key: key.into_owned(),
            reason: "not a label key of the layout".to_owned(),
        });
    };
    Ok((id, decode(&key, &kv.value)?))
}
