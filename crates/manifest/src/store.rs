//! Intent and reality in a [`Store`] (feature `store`).
//!
//! | key | value | written by |
//! |---|---|---|
//! | `intent/<node>/<pod>` | the manifest's bytes as given ([`Manifest::raw_bytes`]) | controllers, users |
//! | `reality/<node>/<pod>` | a [`Reality`] as JSON | the node's agent |
//!
//! [`IntentStore`] and [`RealityStore`] (one generic [`PodStore`]) read,
//! write, delete and list these records with typed ids, and hand out the
//! writes as operations for a caller's own (fenced) txn. [`IntentCodec`]
//! and [`RealityCodec`] decode them for a [`Reflector`], which is how a
//! controller or an agent follows them: list, then watch, with
//! [`drover_store::reflector`]'s corrupt-record policy. No caller decodes
//! these keys by hand.
//!
//! A record is corrupt ([`ManifestError::Corrupt`], naming the key) when
//! its value does not decode, when an intent's manifest is for another pod
//! than its key names, or when its key is not one of the layout (a node or
//! pod segment outside the id grammar). Listings fail on a corrupt record
//! rather than leave it out: a controller must never act on a partial read.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use drover_ids::{NodeId, PodId};
use drover_store::keys::Keys;
use drover_store::reflector::{Codec, Reflector};
use drover_store::{Delete, Get, KeyValue, Put, Revision, Store, StoreError};

use crate::{Manifest, ManifestError, ManifestSha, NodeRecord, Reality};

type Result<T, E = ManifestError> = std::result::Result<T, E>;

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Manifest {}
    impl Sealed for crate::Reality {}
}

/// A record kept per node and pod: an intent ([`Manifest`]) or a
/// [`Reality`]. Sealed: the key layout has these two sections.
pub trait PodRecord: sealed::Sealed + Clone + fmt::Debug + Send + Sync + 'static {
    /// The section's name in messages: `intent` or `reality`.
    const SECTION: &'static str;

    /// `<section>/<node>/<pod>`.
    fn key(keys: &Keys, node: &NodeId, pod: &PodId) -> String;

    /// `<section>/`.
    fn prefix(keys: &Keys) -> String;

    /// `<section>/<node>/`.
    fn node_prefix(keys: &Keys, node: &NodeId) -> String;

    /// `<section>/<node>/<pod>` back to its ids.
    fn parse_key(keys: &Keys, key: &[u8]) -> Option<(NodeId, PodId)>;

    /// Checks that this record may be stored for `pod`.
    fn check(&self, pod: &PodId) -> Result<()>;

    /// The stored value.
    fn encode(&self) -> Vec<u8>;

    /// Decodes the value stored for `pod`; the error says what is wrong.
    fn decode(pod: &PodId, value: &[u8]) -> Result<Self, String>;
}

impl PodRecord for Manifest {
    const SECTION: &'static str = "intent";

    fn key(keys: &Keys, node: &NodeId, pod: &PodId) -> String {
        keys.intent(node, pod)
    }

    fn prefix(keys: &Keys) -> String {
        keys.intent_prefix()
    }

    fn node_prefix(keys: &Keys, node: &NodeId) -> String {
        keys.intent_node_prefix(node)
    }

    fn parse_key(keys: &Keys, key: &[u8]) -> Option<(NodeId, PodId)> {
        keys.parse_intent(key)
    }

    fn check(&self, pod: &PodId) -> Result<()> {
        if self.id() == pod {
            Ok(())
        } else {
            Err(ManifestError::PodMismatch {
                pod: pod.clone(),
                manifest: self.id().clone(),
            })
        }
    }

    fn encode(&self) -> Vec<u8> {
        self.raw_bytes().to_vec()
    }

    fn decode(pod: &PodId, value: &[u8]) -> Result<Self, String> {
        let manifest = Manifest::from_yaml(value).map_err(|e| e.to_string())?;
        if manifest.id() != pod {
            return Err(format!("holds the manifest of pod {}", manifest.id()));
        }
        Ok(manifest)
    }
}

impl PodRecord for Reality {
    const SECTION: &'static str = "reality";

    fn key(keys: &Keys, node: &NodeId, pod: &PodId) -> String {
        keys.reality(node, pod)
    }

    fn prefix(keys: &Keys) -> String {
        keys.reality_prefix()
    }

    fn node_prefix(keys: &Keys, node: &NodeId) -> String {
        keys.reality_node_prefix(node)
    }

    fn parse_key(keys: &Keys, key: &[u8]) -> Option<(NodeId, PodId)> {
        keys.parse_reality(key)
    }

    fn check(&self, _pod: &PodId) -> Result<()> {
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        self.to_json()
    }

    fn decode(_pod: &PodId, value: &[u8]) -> Result<Self, String> {
        Reality::from_json(value).map_err(|e| e.to_string())
    }
}

/// The pod records of some nodes, read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodListing<R> {
    /// The store revision of the read.
    pub revision: Revision,
    /// (node, pod) -> record, in node then pod order.
    pub records: BTreeMap<(NodeId, PodId), R>,
}

/// Decodes `intent/<node>/<pod>` or `reality/<node>/<pod>` records for a
/// [`Reflector`], keyed by (node, pod).
pub struct PodCodec<R> {
    keys: Keys,
    record: PhantomData<fn() -> R>,
}

/// Decodes intent records: (node, pod) -> [`Manifest`].
pub type IntentCodec = PodCodec<Manifest>;

/// Decodes reality records: (node, pod) -> [`Reality`].
pub type RealityCodec = PodCodec<Reality>;

impl<R: PodRecord> PodCodec<R> {
    /// The codec of the records under the key layout `keys`.
    pub fn new(keys: Keys) -> Self {
        PodCodec {
            keys,
            record: PhantomData,
        }
    }
}

impl<R> Clone for PodCodec<R> {
    fn clone(&self) -> Self {
        PodCodec {
            keys: self.keys.clone(),
            record: PhantomData,
        }
    }
}

impl<R: PodRecord> fmt::Debug for PodCodec<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodCodec")
            .field("section", &R::SECTION)
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

fn corrupt(key: &[u8], reason: String) -> ManifestError {
    ManifestError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

impl<R: PodRecord> Codec for PodCodec<R> {
    type Id = (NodeId, PodId);
    type Value = R;
    type Error = ManifestError;

    fn id(&self, key: &[u8]) -> Result<(NodeId, PodId)> {
        R::parse_key(&self.keys, key).ok_or_else(|| {
            corrupt(
                key,
                format!("not a key of the layout's {} section", R::SECTION),
            )
        })
    }

    fn decode(&self, kv: &KeyValue) -> Result<((NodeId, PodId), R)> {
        let (node, pod) = self.id(&kv.key)?;
        let record = R::decode(&pod, &kv.value).map_err(|reason| corrupt(&kv.key, reason))?;
        Ok(((node, pod), record))
    }
}

/// An intent record as its readers need it: a manifest to run, or one that
/// does not validate (written around the API, e.g. with `etcdctl`), which
/// must fail only its own pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// A valid manifest.
    Valid(Box<Manifest>),
    /// Stored bytes that are not a valid manifest of the key's pod.
    Invalid {
        /// SHA-256 of the stored bytes, so readers can tell which write
        /// the verdict is about.
        sha: ManifestSha,
        /// Why it is not valid.
        reason: String,
    },
}

impl Intent {
    /// The manifest's SHA, or the stored bytes' for an invalid record.
    pub fn sha(&self) -> ManifestSha {
        match self {
            Intent::Valid(manifest) => manifest.sha(),
            Intent::Invalid { sha, .. } => *sha,
        }
    }
}

/// [`IntentCodec`], except that a value that does not decode is an
/// [`Intent::Invalid`] of its pod rather than a corrupt record: a reflector
/// refuses to list a range holding a corrupt record, and one bad intent
/// must not stop a node's agent or a farm from reading the others.
#[derive(Clone, Debug)]
pub struct TolerantIntentCodec(IntentCodec);

impl TolerantIntentCodec {
    /// The codec of the intent records under `keys`.
    pub fn new(keys: Keys) -> Self {
        TolerantIntentCodec(IntentCodec::new(keys))
    }
}

impl Codec for TolerantIntentCodec {
    type Id = (NodeId, PodId);
    type Value = Intent;
    type Error = ManifestError;

    fn id(&self, key: &[u8]) -> Result<(NodeId, PodId)> {
        self.0.id(key)
    }

    fn decode(&self, kv: &KeyValue) -> Result<((NodeId, PodId), Intent)> {
        let id = self.0.id(&kv.key)?;
        Ok(match self.0.decode(kv) {
            Ok((_, manifest)) => (id, Intent::Valid(Box::new(manifest))),
            Err(e) => {
                use sha2::Digest;
                let sha = ManifestSha::from_bytes(sha2::Sha256::digest(&kv.value).into());
                let reason = match e {
                    ManifestError::Corrupt { reason, .. } => reason,
                    other => other.to_string(),
                };
                (id, Intent::Invalid { sha, reason })
            }
        })
    }
}

/// Decodes `nodes/<node>` records ([`NodeRecord`]) for a [`Reflector`],
/// keyed by node: what a scheduler follows to know which nodes are live and
/// what they offer.
#[derive(Clone, Debug)]
pub struct NodeCodec {
    keys: Keys,
}

impl NodeCodec {
    /// The codec of the node records under the key layout `keys`.
    pub fn new(keys: Keys) -> Self {
        NodeCodec { keys }
    }
}

impl Codec for NodeCodec {
    type Id = NodeId;
    type Value = NodeRecord;
    type Error = ManifestError;

    fn id(&self, key: &[u8]) -> Result<NodeId> {
        self.keys
            .parse_node(key)
            .ok_or_else(|| corrupt(key, "not a node key of the layout".to_owned()))
    }

    fn decode(&self, kv: &KeyValue) -> Result<(NodeId, NodeRecord)> {
        let node = self.id(&kv.key)?;
        let record =
            NodeRecord::from_json(&kv.value).map_err(|e| corrupt(&kv.key, e.to_string()))?;
        Ok((node, record))
    }
}

/// Reads, writes, deletes, lists and watches one kind of pod record.
///
/// ```
/// use drover_ids::NodeId;
/// use drover_manifest::{IntentStore, Manifest, Reality, RealityStore};
/// use drover_store::embedded::EmbeddedStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = EmbeddedStore::in_memory();
/// let (intents, realities) = (IntentStore::new(store.clone()), RealityStore::new(store));
/// let node: NodeId = "n1".parse()?;
/// let web = Manifest::builder("web").process("web", ["/bin/web"]).build()?;
///
/// intents.put(&node, web.id(), &web).await?; // a controller: run web on n1
/// let wanted = intents.list_node(&node).await?; // the agent of n1
/// assert_eq!(wanted.records.len(), 1);
/// realities.put(&node, web.id(), &Reality::launched(&web)).await?;
///
/// let reality = realities.get(&node, web.id()).await?.unwrap();
/// assert!(reality.runs(&intents.get(&node, web.id()).await?.unwrap()));
/// # Ok(()) }
/// ```
pub struct PodStore<S, R> {
    store: S,
    keys: Keys,
    record: PhantomData<fn() -> R>,
}

/// Intent: which manifest should run on which node.
pub type IntentStore<S> = PodStore<S, Manifest>;

/// Reality: what each node's agent launched.
pub type RealityStore<S> = PodStore<S, Reality>;

impl<S: Clone, R> Clone for PodStore<S, R> {
    fn clone(&self) -> Self {
        PodStore {
            store: self.store.clone(),
            keys: self.keys.clone(),
            record: PhantomData,
        }
    }
}

impl<S, R: PodRecord> fmt::Debug for PodStore<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodStore")
            .field("section", &R::SECTION)
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

fn store_err(context: &str) -> impl FnOnce(StoreError) -> ManifestError + '_ {
    move |source| ManifestError::Store {
        context: context.to_owned(),
        source,
    }
}

impl<S: Store, R: PodRecord> PodStore<S, R> {
    /// The records under the default key prefix (`/drover/`).
    pub fn new(store: S) -> Self {
        Self::with_keys(store, Keys::default())
    }

    /// The records under the key layout `keys`.
    pub fn with_keys(store: S, keys: Keys) -> Self {
        PodStore {
            store,
            keys,
            record: PhantomData,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The codec of these records, for a [`Reflector`] of one's own.
    pub fn codec(&self) -> PodCodec<R> {
        PodCodec::new(self.keys.clone())
    }

    /// The key of `pod`'s record on `node`.
    pub fn key(&self, node: &NodeId, pod: &PodId) -> String {
        R::key(&self.keys, node, pod)
    }

    /// The write of `record` for `pod` on `node`, to commit in the caller's
    /// own txn (e.g. one fenced by a lock: [`drover_store::Txn::fenced`]).
    /// An intent's manifest must be `pod`'s own.
    pub fn put_op(&self, node: &NodeId, pod: &PodId, record: &R) -> Result<Put> {
        record.check(pod)?;
        Ok(Put::new(self.key(node, pod), record.encode()))
    }

    /// The deletion of `pod`'s record on `node`, for the caller's own txn.
    pub fn delete_op(&self, node: &NodeId, pod: &PodId) -> Delete {
        Delete::key(self.key(node, pod))
    }

    /// Writes `record` for `pod` on `node`. Nothing is written when an
    /// intent's manifest is another pod's.
    pub async fn put(&self, node: &NodeId, pod: &PodId, record: &R) -> Result<Revision> {
        let put = self.put_op(node, pod, record)?;
        let key = self.key(node, pod);
        let resp = self.store.put(put).await.map_err(store_err(&key))?;
        Ok(resp.revision)
    }

    /// `pod`'s record on `node`, `None` when there is none.
    pub async fn get(&self, node: &NodeId, pod: &PodId) -> Result<Option<R>> {
        let key = self.key(node, pod);
        let resp = self
            .store
            .get(Get::key(key.as_str()))
            .await
            .map_err(store_err(&key))?;
        let codec = self.codec();
        resp.first()
            .map(|kv| codec.decode(kv).map(|(_, record)| record))
            .transpose()
    }

    /// Deletes `pod`'s record on `node`; true if there was one.
    pub async fn delete(&self, node: &NodeId, pod: &PodId) -> Result<bool> {
        let key = self.key(node, pod);
        let resp = self
            .store
            .delete(self.delete_op(node, pod))
            .await
            .map_err(store_err(&key))?;
        Ok(resp.deleted > 0)
    }

    /// Every record of `node`, read at one revision.
    pub async fn list_node(&self, node: &NodeId) -> Result<PodListing<R>> {
        self.list_prefix(R::node_prefix(&self.keys, node)).await
    }

    /// Every record of every node, read at one revision.
    pub async fn list(&self) -> Result<PodListing<R>> {
        self.list_prefix(R::prefix(&self.keys)).await
    }

    async fn list_prefix(&self, prefix: String) -> Result<PodListing<R>> {
        let resp = self
            .store
            .get(Get::prefix(prefix.as_str()))
            .await
            .map_err(store_err(&prefix))?;
        let codec = self.codec();
        let records = resp
            .kvs
            .iter()
            .map(|kv| codec.decode(kv))
            .collect::<Result<_>>()?;
        Ok(PodListing {
            revision: resp.revision,
            records,
        })
    }

    /// A reflector of `node`'s records (what a node agent follows).
    pub fn node_reflector(&self, node: &NodeId) -> Reflector<S, PodCodec<R>> {
        Reflector::prefix(
            self.store.clone(),
            R::node_prefix(&self.keys, node),
            self.codec(),
        )
    }

    /// A reflector of every node's records (what a controller follows).
    pub fn reflector(&self) -> Reflector<S, PodCodec<R>> {
        Reflector::prefix(self.store.clone(), R::prefix(&self.keys), self.codec())
    }
}
