//! Request and response types of the store port, shaped after etcd v3's API.

/// A store revision: etcd's global, monotonically increasing logical clock.
/// The first write to an empty store produces revision 2 on etcd (revision 1
/// is the empty store), and the embedded backend does the same.
pub type Revision = i64;

/// A lease id. `0` means "no lease".
pub type LeaseId = i64;

/// One key with its metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the put that created the key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last put to the key.
    pub mod_revision: Revision,
    /// Number of puts since creation; 1 after the creating put.
    pub version: i64,
    /// Attached lease, or 0.
    pub lease: LeaseId,
}

impl KeyValue {
    /// The key as UTF-8, lossily (keys in Drover's layout are always UTF-8).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }
}

/// Which keys a get, delete or watch addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key.
    Key(Vec<u8>),
    /// Every key starting with these bytes (etcd's `WithPrefix`).
    Prefix(Vec<u8>),
    /// Keys in `[start, end)`.
    Range { start: Vec<u8>, end: Vec<u8> },
}

impl KeyRange {
    /// True if `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Prefix(p) => key.starts_with(p),
            // etcd's conventions: an empty end is the single key `start`,
            // `\0` is every key from `start` on.
            KeyRange::Range { start, end } if end.is_empty() => key == start.as_slice(),
            KeyRange::Range { start, end } if end.as_slice() == [0] => key >= start.as_slice(),
            KeyRange::Range { start, end } => key >= start.as_slice() && key < end.as_slice(),
        }
    }

    /// The first key of the range (etcd's `key` field).
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) => k,
            KeyRange::Range { start, .. } => start,
        }
    }

    /// etcd's `range_end` for this range: empty for a single key, the prefix
    /// incremented for a prefix (`\0` for the empty prefix, meaning all keys).
    pub fn etcd_range_end(&self) -> Vec<u8> {
        match self {
            KeyRange::Key(_) => Vec::new(),
            KeyRange::Prefix(p) => prefix_end(p),
            KeyRange::Range { end, .. } => end.clone(),
        }
    }
}

/// The smallest key greater than every key with `prefix`, as etcd computes it.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All bytes were 0xff (or the prefix was empty): every key.
    vec![0]
}

/// Field to sort a range result by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    Ascend,
    Descend,
}

/// A range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Get {
    pub range: KeyRange,
    /// Maximum number of keys returned; 0 = no limit.
    pub limit: i64,
    /// Read at this revision; 0 = current.
    pub revision: Revision,
    pub sort_target: SortTarget,
    pub sort_order: SortOrder,
    /// Only keys whose create revision is at most this; 0 = no filter.
    pub max_create_revision: Revision,
    /// Only keys whose create revision is at least this; 0 = no filter.
    pub min_create_revision: Revision,
    /// Only keys whose mod revision is at most this; 0 = no filter.
    pub max_mod_revision: Revision,
    /// Only keys whose mod revision is at least this; 0 = no filter.
    pub min_mod_revision: Revision,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Allow a member-local read that may be stale (etcd's serializable
    /// read). The embedded store is one node: its reads are always
    /// linearizable, so the flag changes nothing there.
    pub serializable: bool,
}

impl Get {
    pub fn new(range: KeyRange) -> Self {
        Get {
            range,
            limit: 0,
            revision: 0,
            sort_target: SortTarget::Key,
            sort_order: SortOrder::Ascend,
            max_create_revision: 0,
            min_create_revision: 0,
            max_mod_revision: 0,
            min_mod_revision: 0,
            keys_only: false,
            count_only: false,
            serializable: false,
        }
    }
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Get::new(KeyRange::Key(key.into()))
    }
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Get::new(KeyRange::Prefix(prefix.into()))
    }
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }
    pub fn sorted(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort_target = target;
        self.sort_order = order;
        self
    }
    pub fn with_max_create_revision(mut self, revision: Revision) -> Self {
        self.max_create_revision = revision;
        self
    }
    pub fn with_min_create_revision(mut self, revision: Revision) -> Self {
        self.min_create_revision = revision;
        self
    }
    pub fn with_max_mod_revision(mut self, revision: Revision) -> Self {
        self.max_mod_revision = revision;
        self
    }
    pub fn with_min_mod_revision(mut self, revision: Revision) -> Self {
        self.min_mod_revision = revision;
        self
    }
    /// A serializable (possibly stale, member-local) read.
    pub fn serializable(mut self) -> Self {
        self.serializable = true;
        self
    }
    /// True if any of the revision filters is set.
    pub fn has_revision_filters(&self) -> bool {
        self.min_create_revision != 0
            || self.max_create_revision != 0
            || self.min_mod_revision != 0
            || self.max_mod_revision != 0
    }
    /// Whether `kv` passes the revision filters (as etcd: applied after the
    /// range read, so they do not change `count`).
    pub fn passes_filters(&self, kv: &KeyValue) -> bool {
        (self.max_mod_revision == 0 || kv.mod_revision <= self.max_mod_revision)
            && (self.min_mod_revision == 0 || kv.mod_revision >= self.min_mod_revision)
            && (self.max_create_revision == 0 || kv.create_revision <= self.max_create_revision)
            && (self.min_create_revision == 0 || kv.create_revision >= self.min_create_revision)
    }
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }
}

/// Result of a [`Get`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct GetResponse {
    /// The store revision the read was served at (the header revision).
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range (ignoring `limit`).
    pub count: i64,
    /// True if `limit` cut the result.
    pub more: bool,
}

impl GetResponse {
    /// The first key-value, if any (the usual single-key read).
    pub fn first(&self) -> Option<&KeyValue> {
        self.kvs.first()
    }
}

/// A put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Attach to this lease; 0 = none (detaches a previously attached lease).
    pub lease: LeaseId,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the key's current value (`value` must be empty): a write that
    /// only bumps the version or changes the lease. A missing key is
    /// [`crate::StoreError::KeyNotFound`].
    pub ignore_value: bool,
    /// Keep the key's current lease (`lease` must be 0). A missing key is
    /// [`crate::StoreError::KeyNotFound`].
    pub ignore_lease: bool,
}

impl Put {
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        }
    }
    /// Keep the key's current value (etcd's `ignore_value`).
    pub fn ignoring_value(mut self) -> Self {
        self.ignore_value = true;
        self
    }
    /// Keep the key's current lease (etcd's `ignore_lease`).
    pub fn ignoring_lease(mut self) -> Self {
        self.ignore_lease = true;
        self
    }
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = lease;
        self
    }
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Result of a [`Put`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// Revision of this write.
    pub revision: Revision,
    pub prev_kv: Option<KeyValue>,
}

/// A delete of one key or a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl Delete {
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Delete {
            range: KeyRange::Key(key.into()),
            prev_kv: false,
        }
    }
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Delete {
            range: KeyRange::Prefix(prefix.into()),
            prev_kv: false,
        }
    }
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Result of a [`Delete`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeleteResponse {
    /// The store revision after the delete (unchanged if nothing was deleted).
    pub revision: Revision,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Lease(LeaseId),
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// One txn guard, evaluated as etcd does: a missing key has version,
/// create_revision, mod_revision and lease 0, and fails every value compare.
///
/// With a `range_end` the compare covers `[key, range_end)` (`[0]` = every
/// key from `key` on) and holds only if it holds for every key in the range;
/// an empty range compares like one missing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    /// End of the compared range; empty = only `key`.
    pub range_end: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            range_end: Vec::new(),
            op,
            target,
        }
    }
    /// Compare every key in `[key, end)` (`[0]`: every key from `key` on).
    pub fn with_range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.range_end = end.into();
        self
    }
    /// Compare every key starting with `key`.
    pub fn over_prefix(mut self) -> Self {
        self.range_end = prefix_end(&self.key);
        self
    }
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Compare::new(key, op, CompareTarget::Value(value.into()))
    }
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Compare::new(key, op, CompareTarget::Version(version))
    }
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: Revision) -> Self {
        Compare::new(key, op, CompareTarget::CreateRevision(rev))
    }
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, rev: Revision) -> Self {
        Compare::new(key, op, CompareTarget::ModRevision(rev))
    }
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: LeaseId) -> Self {
        Compare::new(key, op, CompareTarget::Lease(lease))
    }
    /// The key does not exist.
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Compare::create_revision(key, CompareOp::Equal, 0)
    }
}

/// One operation inside a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Get(Get),
    Put(Put),
    Delete(Delete),
    /// A nested txn (etcd 3.3+). Its compares are evaluated, like every
    /// compare of the request, against the store before the outer txn's
    /// writes; its chosen branch runs in order with the outer ops, in the
    /// same revision.
    Txn(Txn),
}

impl From<Txn> for TxnOp {
    fn from(t: Txn) -> Self {
        TxnOp::Txn(t)
    }
}

impl From<Get> for TxnOp {
    fn from(g: Get) -> Self {
        TxnOp::Get(g)
    }
}
impl From<Put> for TxnOp {
    fn from(p: Put) -> Self {
        TxnOp::Put(p)
    }
}
impl From<Delete> for TxnOp {
    fn from(d: Delete) -> Self {
        TxnOp::Delete(d)
    }
}

/// An atomic transaction: if every compare holds, run `success`, else
/// `failure`. All writes of the chosen branch share one revision.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// Result of one txn op, in the order of the chosen branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    Get(GetResponse),
    Put(PutResponse),
    Delete(DeleteResponse),
    /// A nested txn's result; its `revision` is the outer txn's.
    Txn(TxnResponse),
}

/// Result of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// The store revision after the txn.
    pub revision: Revision,
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: LeaseId,
    /// Granted TTL in seconds (etcd raises TTLs below its minimum).
    pub ttl: i64,
}

/// The store's state as etcd's `Maintenance.Status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct StoreStatus {
    /// The current revision.
    pub revision: Revision,
    /// The compaction point (0 when nothing was compacted or the backend
    /// cannot tell; etcd does not report it, the etcd backend asks for it
    /// best effort).
    pub compact_revision: Revision,
    /// Size of the backend's database (the embedded store's file; in memory,
    /// an estimate of what it holds).
    pub db_size_bytes: i64,
    /// The part of the database in use (at most `db_size_bytes`).
    pub db_size_in_use_bytes: i64,
}

/// Remaining time of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub id: LeaseId,
    /// Remaining seconds.
    pub ttl: i64,
    /// TTL at grant time.
    pub granted_ttl: i64,
    /// Keys attached to the lease.
    pub keys: Vec<Vec<u8>>,
}

/// A watch request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub range: KeyRange,
    /// First revision to deliver; 0 = changes after the current revision.
    pub start_revision: Revision,
    /// Include each event's previous key-value.
    pub prev_kv: bool,
    /// Leave out put events (etcd's `NOPUT` filter).
    pub filter_puts: bool,
    /// Leave out delete events (etcd's `NODELETE` filter).
    pub filter_deletes: bool,
    /// Ask for periodic progress notifications: empty [`WatchBatch`]es whose
    /// revision R says every event up to R in the range was delivered (the
    /// embedded store: every `EmbeddedConfig::progress_notify_interval`;
    /// etcd: its `--experimental-watch-progress-notify-interval`).
    pub progress_notify: bool,
}

impl Watch {
    pub fn new(range: KeyRange) -> Self {
        Watch {
            range,
            start_revision: 0,
            prev_kv: false,
            filter_puts: false,
            filter_deletes: false,
            progress_notify: false,
        }
    }
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Watch::new(KeyRange::Key(key.into()))
    }
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Watch::new(KeyRange::Prefix(prefix.into()))
    }
    pub fn from_revision(mut self, revision: Revision) -> Self {
        self.start_revision = revision;
        self
    }
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
    /// Leave out put events.
    pub fn without_puts(mut self) -> Self {
        self.filter_puts = true;
        self
    }
    /// Leave out delete events.
    pub fn without_deletes(mut self) -> Self {
        self.filter_deletes = true;
        self
    }
    /// Ask for periodic progress notifications.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }
    /// Whether the filters let `kind` through.
    pub fn passes(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::Put => !self.filter_puts,
            EventKind::Delete => !self.filter_deletes,
        }
    }
}

/// Kind of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv` carries the key and the delete's
/// `mod_revision`, with an empty value, as etcd sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// A batch of events delivered by a watch, in revision order. Events of one
/// revision (one txn, one lease expiry) are never split across batches.
///
/// A batch without events is a progress notification (asked for with
/// [`Watch::progress_notify`] or [`crate::WatchStream::request_progress`]):
/// every event in the range up to `revision` was delivered before it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WatchBatch {
    /// Store revision when the batch was sent (at least every event's revision).
    pub revision: Revision,
    pub events: Vec<Event>,
}
