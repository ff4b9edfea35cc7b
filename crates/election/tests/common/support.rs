//! Shared test support: a fault-injecting store wrapper, an elector harness
//! that records lifecycle events, and a history checker for fenced writes.
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset; items are shared by path

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drover_election::{Election, Elector, ElectorConfig, Term, TermEnd, TermSummary};
use drover_store::{
    Delete, DeleteResponse, Get, GetResponse, KeyRange, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Revision, Store, Txn, TxnResponse, Watch, WatchStream,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Faults one process can suffer, switched on and off by the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Keep-alives hang (a partition between this process and the store,
    /// or a paused process whose keep-alive loop cannot run).
    stall_keep_alives: AtomicBool,
    /// Every request hangs (a crashed or frozen process: nothing it sends
    /// reaches the store).
    frozen: AtomicBool,
    /// New watches hang until released (a slow watch set-up, during which
    /// the store moves on and compacts).
    hold_watches: AtomicBool,
    /// Every keep-alive answers this much later (a slow link).
    keep_alive_delay: Mutex<Duration>,
    /// What this process watched, in order.
    watched: Mutex<Vec<KeyRange>>,
    changed: Notify,
}

/// Which kind of request a gate is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    KeepAlive,
    Watch,
    Other,
}

impl Faults {
    pub fn stall_keep_alives(&self, on: bool) {
        self.stall_keep_alives.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn hold_watches(&self, on: bool) {
        self.hold_watches.store(on, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Every watch this process opened so far.
    pub fn watched(&self) -> Vec<KeyRange> {
        self.watched.lock().clone()
    }

    pub fn delay_keep_alives(&self, delay: Duration) {
        *self.keep_alive_delay.lock() = delay;
    }

    async fn gate(&self, kind: Kind) {
        loop {
            let notified = self.changed.notified();
            let blocked = self.frozen.load(Ordering::SeqCst)
                || (kind == Kind::KeepAlive && self.stall_keep_alives.load(Ordering::SeqCst))
                || (kind == Kind::Watch && self.hold_watches.load(Ordering::SeqCst));
            if !blocked {
                break;
            }
            notified.await;
        }
        let delay = *self.keep_alive_delay.lock();
        if kind == Kind::KeepAlive && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

/// The view one process has of a shared store, with injectable faults.
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    pub faults: Arc<Faults>,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

macro_rules! gated {
    ($self:ident, $kind:expr, $call:expr) => {{
        let faults = $self.faults.clone();
        let fut = $call;
        async move {
            faults.gate($kind).await;
            fut.await
        }
    }};
}

impl<S: Store> Store for FaultyStore<S> {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn get(&self, req: Get) -> impl Future<Output = drover_store::Result<GetResponse>> + Send {
        gated!(self, Kind::Other, self.inner.get(req))
    }
    fn put(&self, req: Put) -> impl Future<Output = drover_store::Result<PutResponse>> + Send {
        gated!(self, Kind::Other, self.inner.put(req))
    }
    fn delete(
        &self,
        req: Delete,
    ) -> impl Future<Output = drover_store::Result<DeleteResponse>> + Send {
        gated!(self, Kind::Other, self.inner.delete(req))
    }
    fn txn(&self, req: Txn) -> impl Future<Output = drover_store::Result<TxnResponse>> + Send {
        gated!(self, Kind::Other, self.inner.txn(req))
    }
    fn watch(&self, req: Watch) -> impl Future<Output = drover_store::Result<WatchStream>> + Send {
        self.faults.watched.lock().push(req.range.clone());
        gated!(self, Kind::Watch, self.inner.watch(req))
    }
    fn lease_grant(
        &self,
        ttl_secs: i64,
    ) -> impl Future<Output = drover_store::Result<LeaseGrant>> + Send {
        gated!(self, Kind::Other, self.inner.lease_grant(ttl_secs))
    }
    fn lease_keep_alive(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = drover_store::Result<i64>> + Send {
        gated!(self, Kind::KeepAlive, self.inner.lease_keep_alive(id))
    }
    fn lease_revoke(&self, id: LeaseId) -> impl Future<Output = drover_store::Result<()>> + Send {
        gated!(self, Kind::Other, self.inner.lease_revoke(id))
    }
    fn lease_time_to_live(
        &self,
        id: LeaseId,
    ) -> impl Future<Output = drover_store::Result<LeaseTimeToLive>> + Send {
        gated!(self, Kind::Other, self.inner.lease_time_to_live(id))
    }
    fn compact(&self, revision: Revision) -> impl Future<Output = drover_store::Result<()>> + Send {
        gated!(self, Kind::Other, self.inner.compact(revision))
    }
    fn current_revision(&self) -> impl Future<Output = drover_store::Result<Revision>> + Send {
        gated!(self, Kind::Other, self.inner.current_revision())
    }
    fn lease_grant_with_id(
        &self,
        id: LeaseId,
        ttl_secs: i64,
    ) -> impl Future<Output = drover_store::Result<LeaseGrant>> + Send {
        gated!(
            self,
            Kind::Other,
            self.inner.lease_grant_with_id(id, ttl_secs)
        )
    }
    fn lease_list(&self) -> impl Future<Output = drover_store::Result<Vec<LeaseId>>> + Send {
        gated!(self, Kind::Other, self.inner.lease_list())
    }
    fn status(
        &self,
    ) -> impl Future<Output = drover_store::Result<drover_store::StoreStatus>> + Send {
        gated!(self, Kind::Other, self.inner.status())
    }
}

/// One lifecycle event of one elector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Started { who: String, token: Revision },
    Stopped { who: String, summary: TermSummary },
    NewLeader { who: String, leader: Option<String> },
}

/// A running elector and its controls.
pub struct Candidate<S: Store> {
    pub name: String,
    pub elector: Elector<S>,
    pub shutdown: CancellationToken,
    pub run: JoinHandle<drover_election::Result<()>>,
}

impl<S: Store> Candidate<S> {
    /// Shuts the elector down and checks that `run` returned `Ok`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap().unwrap();
    }
}

/// Events from every candidate, stamped with (paused) tokio time.
pub type Events = mpsc::UnboundedReceiver<(Instant, Ev)>;
pub type EventsTx = mpsc::UnboundedSender<(Instant, Ev)>;

/// Leader work used by the harness: records the term, then waits for the
/// term's scope (like well-behaved leader work does).
pub fn spawn_candidate<S: Store>(
    store: S,
    prefix: &str,
    name: &str,
    config: ElectorConfig,
    events: EventsTx,
) -> Candidate<S> {
    spawn_candidate_with(
        store,
        prefix,
        name,
        config,
        events,
        |term: Term<S>| async move {
            term.cancelled().await;
        },
    )
}

pub fn spawn_candidate_with<S, F, Fut>(
    store: S,
    prefix: &str,
    name: &str,
    config: ElectorConfig,
    events: EventsTx,
    work: F,
) -> Candidate<S>
where
    S: Store,
    F: Fn(Term<S>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let election = Election::with_prefix(store, prefix).unwrap();
    let (started_tx, stopped_tx, leader_tx) = (events.clone(), events.clone(), events);
    let (n1, n2, n3) = (name.to_owned(), name.to_owned(), name.to_owned());
    let work = Arc::new(work);
    let elector = Elector::builder(election)
        .config(config.with_identity(name))
        .on_started_leading(move |term: Term<S>| {
            let _ = started_tx.send((
                Instant::now(),
                Ev::Started {
                    who: n1.clone(),
                    token: term.token(),
                },
            ));
            work(term)
        })
        .on_stopped_leading(move |summary| {
            let _ = stopped_tx.send((
                Instant::now(),
                Ev::Stopped {
                    who: n2.clone(),
                    summary: summary.clone(),
                },
            ));
        })
        .on_new_leader(move |leader| {
            let _ = leader_tx.send((
                Instant::now(),
                Ev::NewLeader {
                    who: n3.clone(),
                    leader: leader.map(|l| l.value_str().into_owned()),
                },
            ));
        })
        .build()
        .unwrap();
    let (shutdown, run) = spawn_run(&elector);
    Candidate {
        name: name.to_owned(),
        elector,
        shutdown,
        run,
    }
}

/// Waits (bounded, in tokio time) for the next event matching `pred`.
pub async fn next_event(
    events: &mut Events,
    within: Duration,
    pred: impl Fn(&Ev) -> bool,
) -> Option<(Instant, Ev)> {
    let deadline = Instant::now() + within;
    loop {
        let got = tokio::time::timeout_at(deadline, events.recv()).await;
        match got {
            Ok(Some((at, ev))) if pred(&ev) => return Some((at, ev)),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}

pub fn is_started(ev: &Ev) -> bool {
    matches!(ev, Ev::Started { .. })
}

pub fn started_by(ev: &Ev, name: &str) -> bool {
    matches!(ev, Ev::Started { who, .. } if who == name)
}

/// A successful fenced write: the store revision it landed at, the term's
/// token, and who wrote it.
#[derive(Clone, Debug)]
pub struct Write {
    pub revision: Revision,
    pub token: Revision,
    pub who: String,
}

/// Successful fenced writes of every leader.
#[derive(Clone, Debug, Default)]
pub struct History {
    writes: Arc<Mutex<Vec<Write>>>,
}

impl History {
    pub fn record(&self, revision: Revision, token: Revision, who: &str) {
        self.writes.lock().push(Write {
            revision,
            token,
            who: who.to_owned(),
        });
    }

    pub fn writes(&self) -> Vec<Write> {
        let mut writes = self.writes.lock().clone();
        writes.sort_by_key(|w| w.revision);
        writes
    }

    /// No two terms' fenced writes overlap: in store order, tokens never go
    /// back, and each token belongs to one writer.
    pub fn check_no_overlap(&self) -> Result<usize, String> {
        let writes = self.writes();
        let mut terms = 0;
        for pair in writes.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.token < a.token {
                return Err(format!(
                    "split brain: write at rev {} with token {} ({}) after write at rev {} with token {} ({})",
                    b.revision, b.token, b.who, a.revision, a.token, a.who
                ));
            }
            if b.token == a.token && b.who != a.who {
                return Err(format!("token {} used by {} and {}", a.token, a.who, b.who));
            }
            if b.token != a.token {
                terms += 1;
            }
        }
        Ok(if writes.is_empty() { 0 } else { terms + 1 })
    }
}

/// Re-entry after loss, on any store: `a` leads; its keep-alives stall, so
/// its term ends by itself and `b` takes over; once a's link heals, a
/// campaigns again (with a new lease) and leads after b leaves.
pub async fn reenters_after_losing_leadership<S: Store>(
    shared: S,
    prefix: &str,
    config: ElectorConfig,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a_store = FaultyStore::new(shared.clone());
    let a = spawn_candidate(a_store.clone(), prefix, "a", config.clone(), tx.clone());
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .expect("a leads");
    let b = spawn_candidate(shared, prefix, "b", config, tx.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    a_store.faults.stall_keep_alives(true);
    let (_, ev) = next_event(
        &mut rx,
        Duration::from_secs(10),
        |e| matches!(e, Ev::Stopped { who, .. } if who == "a"),
    )
    .await
    .expect("a stops leading");
    let Ev::Stopped { summary, .. } = ev else {
        unreachable!()
    };
    assert!(
        matches!(
            summary.reason,
            TermEnd::LeaseLost | TermEnd::ValidityExpired
        ),
        "{summary:?}"
    );
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b takes over");
    a_store.faults.stall_keep_alives(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!a.elector.is_leader() && b.elector.is_leader());

    b.stop().await;
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .expect("a campaigned again and leads");
    assert!(a.elector.is_leader());
    a.stop().await;
}

/// A lease of `ttl_secs` on `store`, granted or the test fails.
pub async fn grant_lease<S: Store + Clone>(
    store: &S,
    ttl_secs: i64,
) -> drover_store::lease::Lease<S> {
    drover_store::lease::Lease::grant(
        store.clone(),
        drover_store::lease::LeaseConfig::new(ttl_secs),
    )
    .await
    .unwrap()
}

/// The observer's next report, which must be that no one leads.
pub async fn expect_no_leader(observer: &mut drover_election::Observer) {
    assert_eq!(
        observer.next().await.unwrap().unwrap(),
        drover_election::Observation::NoLeader
    );
}

/// The observer's next report, which must name a leader.
pub async fn expect_leader(
    observer: &mut drover_election::Observer,
) -> drover_election::LeaderInfo {
    let drover_election::Observation::Leader(seen) = observer.next().await.unwrap().unwrap() else {
        panic!("expected a leader")
    };
    seen
}

/// `count` candidates named `c0`, `c1`, … whose leader work only waits for
/// its term to end; the returned counter holds the most that ever worked at
/// once (exactly one when leadership never overlaps).
pub fn spawn_exclusive_candidates<S: Store + Clone>(
    store: &S,
    prefix: &str,
    count: usize,
    config: ElectorConfig,
    events: &EventsTx,
) -> (Vec<Candidate<S>>, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::AtomicUsize;
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let mut candidates = Vec::new();
    for i in 0..count {
        let (active, max_active) = (active.clone(), max_active.clone());
        candidates.push(spawn_candidate_with(
            store.clone(),
            prefix,
            &format!("c{i}"),
            config.clone(),
            events.clone(),
            move |term: Term<S>| {
                let (active, max_active) = (active.clone(), max_active.clone());
                async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max_active.fetch_max(now, Ordering::SeqCst);
                    term.cancelled().await;
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ));
    }
    (candidates, max_active)
}

/// The names of the candidates that believe they lead.
pub fn leaders<S: Store>(candidates: &[Candidate<S>]) -> Vec<String> {
    candidates
        .iter()
        .filter(|c| c.elector.is_leader())
        .map(|c| c.name.clone())
        .collect()
}

/// Takes the candidate that leads out of `candidates` and stops it.
pub async fn stop_the_leader<S: Store>(candidates: &mut Vec<Candidate<S>>) {
    let leader = candidates
        .iter()
        .position(|c| c.elector.is_leader())
        .unwrap();
    candidates.remove(leader).stop().await;
}

/// The timing the paused-time tests use: lease 3 s, renew deadline 2 s,
/// retry period 500 ms.
pub fn paused_timing() -> ElectorConfig {
    ElectorConfig::default().with_timing(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(500),
    )
}

/// Something that runs until its shutdown token is cancelled: an elector
/// or a bucket member.
pub trait RunsUntilShutdown: Clone + Send + Sync + 'static {
    fn run_until(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = drover_election::Result<()>> + Send;
}

impl<S: Store> RunsUntilShutdown for Elector<S> {
    fn run_until(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = drover_election::Result<()>> + Send {
        self.run(shutdown)
    }
}

impl<S: Store> RunsUntilShutdown for drover_election::buckets::BucketElector<S> {
    fn run_until(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = drover_election::Result<()>> + Send {
        self.run(shutdown)
    }
}

/// Runs `runner` on a task; returns the token that shuts it down and the
/// task.
pub fn spawn_run<R: RunsUntilShutdown>(
    runner: &R,
) -> (CancellationToken, JoinHandle<drover_election::Result<()>>) {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (runner, shutdown) = (runner.clone(), shutdown.clone());
        async move { runner.run_until(shutdown).await }
    });
    (shutdown, run)
}
