//! Differential test: one seeded random sequence of operations applied to
//! the embedded backend and to a private etcd must give identical results,
//! and so must the same sequence sent through the etcd API an orchestrator
//! serves (drover-etcd-api over the embedded store).
//!
//! Revisions are compared relative to each store's starting revision and
//! lease ids by the order they were granted, the only things allowed to
//! differ. Everything else (values, versions, counts, `more`, txn branches,
//! prev kvs, typed errors, watch events) must match exactly.

use std::fmt::Write as _;
use std::time::Duration;

use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
use drover_store::testing::etcd_endpoints;
use drover_store::{
    Compare, CompareOp, CompareTarget, Delete, DeleteResponse, Event, EventKind, Get, GetResponse,
    KeyRange, KeyValue, LeaseId, Put, PutResponse, Revision, SortOrder, SortTarget, Store,
    StoreError, Txn, TxnOp, TxnOpResponse, TxnResponse, Watch, WatchBatch, WatchStream,
};
use drover_store_etcd::testing::PrivateEtcd;
use drover_store_etcd::{EtcdConfig, EtcdStore};
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const OPS_PER_SEED: usize = 500;
const KEYS: &[&str] = &[
    "/d/a", "/d/b", "/d/c", "/d/p/1", "/d/p/2", "/d/p/3", "/d/q", "/d/z",
];
const PREFIXES: &[&str] = &["/d/", "/d/p/", "/d/p/2", "/d/x", ""];
/// Long enough that no lease expires during a run: expiry timing is tested
/// elsewhere, here only the data model is compared.
const LEASE_TTL: i64 = 600;
const WAIT: Duration = Duration::from_secs(30);

/// One store under test, with what is needed to normalise its answers.
struct Side<S: Store> {
    store: S,
    base: Revision,
    /// Lease ids in grant order; results show the index instead.
    leases: Vec<LeaseId>,
}

impl<S: Store> Side<S> {
    async fn new(store: S) -> Self {
        let base = store.current_revision().await.expect("current revision");
        Side {
            store,
            base,
            leases: Vec::new(),
        }
    }

    fn abs(&self, rel: Revision) -> Revision {
        if rel <= 0 { rel } else { self.base + rel }
    }

    fn rel(&self, abs: Revision) -> Revision {
        if abs <= 0 { abs } else { abs - self.base }
    }

    fn lease(&self, index: Option<usize>) -> LeaseId {
        index.map_or(0, |i| self.leases[i])
    }

    fn lease_name(&self, id: LeaseId) -> String {
        match self.leases.iter().position(|l| *l == id) {
            _ if id == 0 => String::from("-"),
            Some(i) => format!("L{i}"),
            None => format!("unknown-lease-{id}"),
        }
    }

    fn kv(&self, kv: &KeyValue) -> String {
        format!(
            "{}={:?}(c{} m{} v{} {})",
            kv.key_str(),
            String::from_utf8_lossy(&kv.value),
            self.rel(kv.create_revision),
            self.rel(kv.mod_revision),
            kv.version,
            self.lease_name(kv.lease)
        )
    }

    fn kvs(&self, kvs: &[KeyValue]) -> String {
        kvs.iter()
            .map(|kv| self.kv(kv))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn get_resp(&self, r: &GetResponse) -> String {
        format!(
            "get@{} count={} more={} [{}]",
            self.rel(r.revision),
            r.count,
            r.more,
            self.kvs(&r.kvs)
        )
    }

    fn put_resp(&self, r: &PutResponse) -> String {
        format!(
            "put@{} prev={}",
            self.rel(r.revision),
            r.prev_kv
                .as_ref()
                .map_or(String::from("none"), |kv| self.kv(kv))
        )
    }

    fn delete_resp(&self, r: &DeleteResponse) -> String {
        format!(
            "delete@{} deleted={} prev=[{}]",
            self.rel(r.revision),
            r.deleted,
            self.kvs(&r.prev_kvs)
        )
    }

    fn txn_resp(&self, r: &TxnResponse) -> String {
        let mut out = format!("txn@{} succeeded={}", self.rel(r.revision), r.succeeded);
        for op in &r.responses {
            let shown = match op {
                TxnOpResponse::Get(g) => self.get_resp(g),
                TxnOpResponse::Put(p) => self.put_resp(p),
                TxnOpResponse::Delete(d) => self.delete_resp(d),
                TxnOpResponse::Txn(t) => format!("[{}]", self.txn_resp(t)),
            };
            let _ = write!(out, " | {shown}");
        }
        out
    }

    fn error(&self, e: &StoreError) -> String {
        match e {
            StoreError::Compacted {
                requested,
                compact_revision,
            } => format!(
                "Compacted(requested {}, compacted {})",
                self.rel(*requested),
                self.rel(*compact_revision)
            ),
            StoreError::FutureRevision { requested, current } => format!(
                "FutureRevision(requested {}, current {})",
                self.rel(*requested),
                self.rel(*current)
            ),
            StoreError::LeaseNotFound(id) => format!("LeaseNotFound({})", self.lease_name(*id)),
            // Messages may be worded differently; the kind must match.
            StoreError::InvalidArgument(_) => String::from("InvalidArgument"),
            other => format!("{other:?}"),
        }
    }

    fn event(&self, e: &Event) -> String {
        let kind = match e.kind {
            EventKind::Put => "PUT",
            EventKind::Delete => "DEL",
        };
        format!(
            "{kind} {} prev={}",
            self.kv(&e.kv),
            e.prev_kv
                .as_ref()
                .map_or(String::from("none"), |kv| self.kv(kv))
        )
    }

    fn show<T>(&self, r: Result<T, StoreError>, f: impl FnOnce(&Self, &T) -> String) -> String {
        match r {
            Ok(v) => f(self, &v),
            Err(e) => format!("error {}", self.error(&e)),
        }
    }

    async fn apply(&mut self, op: &Op) -> String {
        match op {
            Op::Single(spec) => match spec.to_op(self) {
                TxnOp::Put(put) => {
                    let r = self.store.put(put).await;
                    self.show(r, Self::put_resp)
                }
                TxnOp::Delete(delete) => {
                    let r = self.store.delete(delete).await;
                    self.show(r, Self::delete_resp)
                }
                TxnOp::Get(get) => {
                    let r = self.store.get(get).await;
                    self.show(r, Self::get_resp)
                }
                TxnOp::Txn(txn) => {
                    let r = self.store.txn(txn).await;
                    self.show(r, Self::txn_resp)
                }
            },
            Op::Txn {
                compares,
                success,
                failure,
            } => {
                let txn = Txn {
                    compares: compares.iter().map(|c| c.to_compare(self)).collect(),
                    success: success.iter().map(|o| o.to_op(self)).collect(),
                    failure: failure.iter().map(|o| o.to_op(self)).collect(),
                };
                let r = self.store.txn(txn).await;
                self.show(r, Self::txn_resp)
            }
            Op::Grant => match self.store.lease_grant(LEASE_TTL).await {
                Ok(g) => {
                    self.leases.push(g.id);
                    format!("granted L{} ttl={}", self.leases.len() - 1, g.ttl)
                }
                Err(e) => format!("error {}", self.error(&e)),
            },
            Op::Revoke(i) => {
                let r = self.store.lease_revoke(self.leases[*i]).await;
                self.show(r, |_, ()| String::from("revoked"))
            }
            Op::TimeToLive(i) => {
                let r = self.store.lease_time_to_live(self.leases[*i]).await;
                self.show(r, |s, t| {
                    let mut keys: Vec<_> = t
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    keys.sort();
                    format!(
                        "ttl {} granted={} keys={keys:?}",
                        s.lease_name(t.id),
                        t.granted_ttl
                    )
                })
            }
            Op::Compact(rel) => {
                let r = self.store.compact(self.abs(*rel)).await;
                self.show(r, |_, ()| String::from("compacted"))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct GetSpec {
    range: KeyRange,
    limit: i64,
    /// Relative revision; 0 = current.
    revision: Revision,
    sort: (SortTarget, SortOrder),
    max_create_revision: Revision,
    keys_only: bool,
    count_only: bool,
}

impl GetSpec {
    fn to_get<S: Store>(&self, side: &Side<S>) -> Get {
        let mut get = Get::new(self.range.clone())
            .with_limit(self.limit)
            .at_revision(side.abs(self.revision))
            .sorted(self.sort.0, self.sort.1)
            .with_max_create_revision(side.abs(self.max_create_revision));
        if self.keys_only {
            get = get.keys_only();
        }
        if self.count_only {
            get = get.count_only();
        }
        get
    }
}

#[derive(Debug, Clone)]
enum CmpTarget {
    Value(Vec<u8>),
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Lease(Option<usize>),
}

#[derive(Debug, Clone)]
struct CmpSpec {
    key: &'static str,
    op: CompareOp,
    target: CmpTarget,
}

impl CmpSpec {
    fn to_compare<S: Store>(&self, side: &Side<S>) -> Compare {
        let target = match &self.target {
            CmpTarget::Value(v) => CompareTarget::Value(v.clone()),
            CmpTarget::Version(v) => CompareTarget::Version(*v),
            CmpTarget::CreateRevision(r) => CompareTarget::CreateRevision(side.abs(*r)),
            CmpTarget::ModRevision(r) => CompareTarget::ModRevision(side.abs(*r)),
            CmpTarget::Lease(l) => CompareTarget::Lease(side.lease(*l)),
        };
        Compare::new(self.key, self.op, target)
    }
}

#[derive(Debug, Clone)]
enum OpSpec {
    Get(GetSpec),
    Put {
        key: &'static str,
        value: Vec<u8>,
        lease: Option<usize>,
        prev_kv: bool,
    },
    Delete {
        range: KeyRange,
        prev_kv: bool,
    },
}

impl OpSpec {
    fn to_op<S: Store>(&self, side: &Side<S>) -> TxnOp {
        match self {
            OpSpec::Get(g) => TxnOp::Get(g.to_get(side)),
            OpSpec::Put {
                key,
                value,
                lease,
                prev_kv,
            } => {
                let mut put = Put::new(*key, value.clone()).with_lease(side.lease(*lease));
                if *prev_kv {
                    put = put.with_prev_kv();
                }
                TxnOp::Put(put)
            }
            OpSpec::Delete { range, prev_kv } => TxnOp::Delete(Delete {
                range: range.clone(),
                prev_kv: *prev_kv,
            }),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A plain put, delete or get (not in a txn).
    Single(OpSpec),
    Txn {
        compares: Vec<CmpSpec>,
        success: Vec<OpSpec>,
        failure: Vec<OpSpec>,
    },
    Grant,
    Revoke(usize),
    TimeToLive(usize),
    Compact(Revision),
}

/// Generates operations; knows only what both stores agree on so far (the
/// number of leases and the relative revision), so both get the same ops.
struct Generator {
    rng: StdRng,
    leases: usize,
    /// Relative revision after the last op (an upper bound is enough).
    revision: Revision,
    compacted: Revision,
}

impl Generator {
    fn key(&mut self) -> &'static str {
        KEYS[self.rng.gen_range(0..KEYS.len())]
    }

    fn value(&mut self) -> Vec<u8> {
        match self.rng.gen_range(0..4) {
            0 => Vec::new(),
            1 => vec![0xff, 0x00, self.rng.r#gen()],
            _ => format!("v{}", self.rng.gen_range(0..5)).into_bytes(),
        }
    }

    fn lease(&mut self) -> Option<usize> {
        if self.leases == 0 || self.rng.gen_bool(0.6) {
            None
        } else {
            Some(self.rng.gen_range(0..self.leases))
        }
    }

    fn range(&mut self) -> KeyRange {
        match self.rng.gen_range(0..3) {
            0 => KeyRange::Key(self.key().as_bytes().to_vec()),
            1 => KeyRange::Prefix(
                PREFIXES[self.rng.gen_range(0..PREFIXES.len())]
                    .as_bytes()
                    .to_vec(),
            ),
            _ => {
                let mut a = self.key();
                let mut b = self.key();
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                if a == b {
                    // Equal bounds would be invalid; make a one-key range.
                    return KeyRange::Range {
                        start: a.as_bytes().to_vec(),
                        end: format!("{a}\0").into_bytes(),
                    };
                }
                KeyRange::Range {
                    start: a.as_bytes().to_vec(),
                    end: b.as_bytes().to_vec(),
                }
            }
        }
    }

    /// A relative revision: mostly recent, sometimes compacted or future.
    fn revision(&mut self) -> Revision {
        match self.rng.gen_range(0..10) {
            0..=3 => 0,
            4 => self.revision + self.rng.gen_range(1..3),
            5 if self.compacted > 1 => self.rng.gen_range(1..self.compacted),
            _ => self
                .rng
                .gen_range(self.compacted.max(1)..=self.revision.max(1)),
        }
    }

    fn get_spec(&mut self) -> GetSpec {
        let targets = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::CreateRevision,
            SortTarget::ModRevision,
            SortTarget::Value,
        ];
        let sort = if self.rng.gen_bool(0.5) {
            (SortTarget::Key, SortOrder::Ascend)
        } else {
            let order = if self.rng.gen_bool(0.5) {
                SortOrder::Ascend
            } else {
                SortOrder::Descend
            };
            (targets[self.rng.gen_range(0..targets.len())], order)
        };
        GetSpec {
            range: self.range(),
            limit: if self.rng.gen_bool(0.3) {
                self.rng.gen_range(1..4)
            } else {
                0
            },
            revision: self.revision(),
            sort,
            max_create_revision: if self.rng.gen_bool(0.2) {
                self.rng.gen_range(1..=self.revision.max(1))
            } else {
                0
            },
            keys_only: self.rng.gen_bool(0.15),
            count_only: self.rng.gen_bool(0.1),
        }
    }

    fn compare(&mut self) -> CmpSpec {
        let ops = [
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Greater,
            CompareOp::Less,
        ];
        let op = ops[self.rng.gen_range(0..ops.len())];
        let recent = (self.revision - self.rng.gen_range(0..6)).max(0);
        let target = match self.rng.gen_range(0..5) {
            0 => CmpTarget::Value(self.value()),
            1 => CmpTarget::Version(self.rng.gen_range(0..4)),
            2 => CmpTarget::CreateRevision(recent),
            3 => CmpTarget::ModRevision(recent),
            _ => CmpTarget::Lease(self.lease()),
        };
        CmpSpec {
            key: self.key(),
            op,
            target,
        }
    }

    fn put_spec(&mut self) -> OpSpec {
        OpSpec::Put {
            key: self.key(),
            value: self.value(),
            lease: self.lease(),
            prev_kv: self.rng.gen_bool(0.5),
        }
    }

    fn delete_spec(&mut self) -> OpSpec {
        OpSpec::Delete {
            range: self.range(),
            prev_kv: self.rng.gen_bool(0.5),
        }
    }

    fn op_spec(&mut self) -> OpSpec {
        match self.rng.gen_range(0..4) {
            0 => OpSpec::Get(self.get_spec()),
            1 => self.delete_spec(),
            _ => self.put_spec(),
        }
    }

    fn op(&mut self) -> Op {
        match self.rng.gen_range(0..100) {
            0..=29 => Op::Single(self.put_spec()),
            30..=39 => Op::Single(self.delete_spec()),
            40..=59 => Op::Single(OpSpec::Get(self.get_spec())),
            60..=84 => {
                let n_cmp = self.rng.gen_range(0..4);
                let n_ok = self.rng.gen_range(0..4);
                let n_else = self.rng.gen_range(0..3);
                Op::Txn {
                    compares: (0..n_cmp).map(|_| self.compare()).collect(),
                    success: (0..n_ok).map(|_| self.op_spec()).collect(),
                    failure: (0..n_else).map(|_| self.op_spec()).collect(),
                }
            }
            85..=89 => Op::Grant,
            90..=93 if self.leases > 0 => Op::Revoke(self.rng.gen_range(0..self.leases)),
            94..=97 if self.leases > 0 => Op::TimeToLive(self.rng.gen_range(0..self.leases)),
            98 | 99 if self.revision > self.compacted + 5 => {
                let point = self.rng.gen_range(self.compacted + 1..=self.revision - 3);
                Op::Compact(point)
            }
            _ => Op::Single(OpSpec::Get(self.get_spec())),
        }
    }
}

/// The events a watch delivered so far, one line per event.
#[derive(Default)]
struct Seen {
    lines: Vec<String>,
    last: Revision,
}

impl Seen {
    fn record<S: Store>(&mut self, side: &Side<S>, item: Result<WatchBatch, StoreError>) {
        let batch = match item {
            Ok(batch) => batch,
            Err(e) => panic!("{}: watch error {e:?}", side.store.backend_name()),
        };
        for ev in &batch.events {
            self.last = self.last.max(side.rel(ev.kv.mod_revision));
            self.lines.push(format!(
                "@{} {}",
                side.rel(ev.kv.mod_revision),
                side.event(ev)
            ));
        }
    }

    /// Take what is ready without waiting, so no buffer fills up.
    fn take_ready<S: Store>(&mut self, side: &Side<S>, watch: &mut WatchStream) {
        while let Some(Some(item)) = watch.next_batch().now_or_never() {
            self.record(side, item);
        }
    }

    /// Wait until events up to relative revision `until` arrived.
    async fn wait_until<S: Store>(
        &mut self,
        side: &Side<S>,
        watch: &mut WatchStream,
        until: Revision,
    ) {
        while self.last < until {
            let item = tokio::time::timeout(WAIT, watch.next_batch())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: watch stalled at {} of {until}",
                        side.store.backend_name(),
                        self.last
                    )
                })
                .expect("watch ended early");
            self.record(side, item);
        }
    }
}

/// The embedded store as the differential test wants it: all history kept
/// (etcd keeps it until compacted).
fn full_history_store() -> EmbeddedStore {
    EmbeddedStore::in_memory_with(EmbeddedConfig::default().with_history_window(None))
}

async fn run_seed(seed: u64) {
    run_seed_against(seed, full_history_store()).await;
}

/// The same sequence through the etcd API that `orchestrator serve` offers:
/// etcd's client talking to `drover-etcd-api` over loopback, with the
/// embedded store behind it, must agree with a real etcd too.
async fn run_seed_through_the_served_api(seed: u64) {
    let server = drover_etcd_api::testing::TestServer::start(
        full_history_store(),
        drover_etcd_api::EtcdApiConfig::default(),
    )
    .await
    .expect("serve the etcd API on loopback");
    let served = EtcdStore::connect([server.endpoint()], EtcdConfig::default())
        .await
        .expect("connect to the served etcd API");
    run_seed_against(seed, served).await;
}

/// Applies one seeded sequence to a private etcd and to `embedded_store`
/// (the embedded store, directly or through the served API).
async fn run_seed_against<E: Store>(seed: u64, embedded_store: E) {
    let etcd = PrivateEtcd::start().await.expect("start a private etcd");
    let etcd_store = EtcdStore::connect(etcd.endpoints(), EtcdConfig::default())
        .await
        .expect("connect to the private etcd");
    let mut etcd_side = Side::new(etcd_store).await;
    let mut embedded_side = Side::new(embedded_store).await;

    // Watch everything from the start with prev kvs: the full history must
    // come out the same, compactions notwithstanding (a live watch is
    // ahead of them).
    let mut etcd_watch = etcd_side
        .store
        .watch(Watch::prefix("/d/").with_prev_kv())
        .await
        .unwrap();
    let mut embedded_watch = embedded_side
        .store
        .watch(Watch::prefix("/d/").with_prev_kv())
        .await
        .unwrap();

    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        leases: 0,
        revision: 0,
        compacted: 0,
    };
    let mut log = Vec::new();
    let mut etcd_seen = Seen::default();
    let mut embedded_seen = Seen::default();
    for step in 0..OPS_PER_SEED {
        let op = generator.op();
        let from_etcd = etcd_side.apply(&op).await;
        let from_embedded = embedded_side.apply(&op).await;
        log.push(format!("{step}: {op:?}\n    -> {from_etcd}"));
        if from_etcd != from_embedded {
            let context = log[log.len().saturating_sub(8)..].join("\n");
            panic!(
                "seed {seed}, step {step}: the backends disagree\n  etcd:     {from_etcd}\n  \
                 embedded: {from_embedded}\nrecent history:\n{context}"
            );
        }
        generator.leases = etcd_side.leases.len();
        generator.revision = etcd_side.rel(etcd_side.store.current_revision().await.unwrap());
        if let (Op::Compact(point), false) = (&op, from_etcd.starts_with("error")) {
            generator.compacted = *point;
        }
        etcd_seen.take_ready(&etcd_side, &mut etcd_watch);
        embedded_seen.take_ready(&embedded_side, &mut embedded_watch);
    }

    let until = generator.revision;
    etcd_seen
        .wait_until(&etcd_side, &mut etcd_watch, until)
        .await;
    embedded_seen
        .wait_until(&embedded_side, &mut embedded_watch, until)
        .await;
    let (etcd_events, embedded_events) = (etcd_seen.lines, embedded_seen.lines);
    assert!(
        !etcd_events.is_empty(),
        "seed {seed}: the sequence wrote something"
    );
    for (i, (x, e)) in etcd_events.iter().zip(&embedded_events).enumerate() {
        assert_eq!(x, e, "seed {seed}: watch event {i} differs");
    }
    assert_eq!(
        etcd_events.len(),
        embedded_events.len(),
        "seed {seed}: watch event counts differ"
    );

    let final_etcd = etcd_side.store.get(Get::prefix("/d/")).await;
    let final_embedded = embedded_side.store.get(Get::prefix("/d/")).await;
    assert_eq!(
        etcd_side.show(final_etcd, Side::get_resp),
        embedded_side.show(final_embedded, Side::get_resp),
        "seed {seed}: final states differ"
    );
}

/// One test per seed, so seeds run in parallel and fail separately.
macro_rules! seeds {
    ($run:ident: $($name:ident = $seed:literal),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if etcd_endpoints().is_none() {
                    return;
                }
                $run($seed).await;
            }
        )*
    };
}

seeds! {
    run_seed_through_the_served_api:
    served_api_agrees_with_etcd_seed_1 = 1,
    served_api_agrees_with_etcd_seed_2 = 2,
    served_api_agrees_with_etcd_seed_3 = 3,
}

seeds! {
    run_seed:
    random_sequence_agrees_seed_1 = 1,
    random_sequence_agrees_seed_2 = 2,
    random_sequence_agrees_seed_3 = 3,
    random_sequence_agrees_seed_4 = 4,
    random_sequence_agrees_seed_5 = 5,
}
