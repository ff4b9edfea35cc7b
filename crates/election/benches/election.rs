//! Leader-election benchmark: graceful handover and crash failover, Drover's
//! elector side by side with etcd's own clients on the same etcd, and on the
//! embedded store.
//!
//! `cargo xtask bench election` runs it with `DROVER_ETCD_ENDPOINTS` set to
//! a private etcd. Without it only the embedded backend is measured.
//!
//! - Graceful handover: the leader resigns (Drover: its elector shuts down
//!   with release-on-cancel; `etcdctl elect`: SIGINT) -> the next
//!   candidate's started-leading fires (etcdctl: it prints its key).
//! - Crash failover on etcd, against real processes killed with SIGKILL,
//!   interleaved sample by sample in one run:
//!   - Drover: a leader in a child process (this binary re-executed, see
//!     `support::child`) with a candidate waiting in this process; the time
//!     until the waiting candidate's started-leading.
//!   - etcdctl (the baseline): `etcdctl lease keep-alive` keeping a lease
//!     with one key; the time until a watch sees the key's DELETE, i.e. what
//!     etcd itself allows (no successor may lead before that key is gone).
//!
//!   Both are measured past the last acknowledged keep-alive (when the
//!   killed process's line for it was read) + TTL, each process killed right
//!   after one (so no renewal is in flight). etcd 3.4 deletes lapsed leases
//!   in a sweep every 500 ms (`lessor.runLoop`), so most of that time is the
//!   wait for the next sweep, set only by where the expiry falls between
//!   two sweeps. The bench locates the sweeps from the deletions it sees and
//!   times each kill so that both rows get the same spread of expiry phases
//!   (an unplanned sequence of samples locks onto one phase: anywhere from
//!   about 0 to 500 ms for every sample). It also reports the time past the
//!   sweep (phase removed), the difference drover - etcdctl and a verdict
//!   against the 20 ms target.
//! - Crash failover on the embedded store, whose process is the bench's own:
//!   the leader's store view freezes (nothing it sends reaches the store),
//!   measured past TTL beside a bare lease left to lapse on the same store.
//!
//! `DROVER_BENCH_HANDOVERS` (default 200) and `DROVER_BENCH_CRASHES`
//! (default 8) set the sample counts (per row).

#[path = "../tests/common/support.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use drover_election::{Election, ElectorConfig, Term};
use drover_store::Store;
use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
use drover_store::{EventKind, Put, Watch};
use drover_store_etcd::EtcdStore;
use hdrhistogram::Histogram;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{Candidate, Ev, FaultyStore, spawn_candidate_with};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};

const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(250);

fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match support::child::prefix() {
        // Re-executed by `drover_sigkill` as the leader to be killed.
        Some(prefix) => rt.block_on(run_child(prefix)),
        None => rt.block_on(run()),
    }
}

/// The child leader of a SIGKILL sample: leads on the bench's etcd and holds
/// its term until killed (it exits by itself after a minute).
async fn run_child(prefix: String) {
    let endpoints = drover_store::testing::etcd_endpoints().expect("the parent's etcd");
    let etcd = EtcdStore::connect(&endpoints, Default::default())
        .await
        .expect("connect to etcd");
    support::child::run(
        etcd,
        &prefix,
        bench_config("child"),
        |term: Term<EtcdStore>| async move { term.cancelled().await },
        Duration::from_secs(60),
    )
    .await;
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("/bench/election/{}-{nanos}/{name}/", std::process::id())
}

async fn run() {
    let handovers = env_count("DROVER_BENCH_HANDOVERS", 200).max(2);
    let crashes = env_count("DROVER_BENCH_CRASHES", 8).max(1);
    println!(
        "election benchmark: {handovers} graceful handovers, {crashes} crash failovers per row"
    );
    println!("(lease TTL {TTL:?}, renew deadline {RENEW:?}, retry period {RETRY:?})\n");

    let mut handover_rows = Vec::new();
    let mut crash_rows = Vec::new();
    let mut kill_rows = None;

    // The embedded store, durable in a data directory (as `serve` runs it).
    let base = std::env::var("DROVER_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = base.join(format!("election-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let embedded = EmbeddedStore::open(&dir, EmbeddedConfig::default())
        .await
        .expect("open the embedded store");
    handover_rows.push((
        "embedded",
        "drover elector",
        drover_handovers(embedded.clone(), handovers).await,
    ));
    crash_rows.push((
        "embedded",
        drover_crash_failovers(embedded.clone(), crashes).await,
        bare_lease_expiries(&embedded, crashes).await,
    ));
    let _ = embedded.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    match drover_store::testing::etcd_endpoints() {
        Some(endpoints) => {
            let etcd = EtcdStore::connect(&endpoints, Default::default())
                .await
                .expect("connect to etcd");
            handover_rows.push((
                "etcd",
                "drover elector",
                drover_handovers(etcd.clone(), handovers).await,
            ));
            handover_rows.push((
                "etcd",
                "etcdctl elect",
                etcdctl_handovers(&etcd, &endpoints, handovers).await,
            ));
            kill_rows = Some(sigkill_failovers(&etcd, &endpoints, crashes).await);
        }
        None => {
            println!("(no etcd: set DROVER_ETCD_ENDPOINTS or use `cargo xtask bench election`)\n")
        }
    }

    println!("graceful handover: leader resigns -> next candidate's started-leading");
    println!(
        "{:<9} {:<15} {:>6} {:>9} {:>9} {:>9}",
        "backend", "candidate", "n", "p50 ms", "p99 ms", "max ms"
    );
    for (backend, who, h) in &handover_rows {
        println!(
            "{backend:<9} {who:<15} {:>6} {:>9.2} {:>9.2} {:>9.2}",
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    let drover_etcd = handover_rows
        .iter()
        .find(|(b, w, _)| *b == "etcd" && *w == "drover elector");
    let etcdctl = handover_rows.iter().find(|(_, w, _)| *w == "etcdctl elect");
    if let (Some((_, _, d)), Some((_, _, e))) = (drover_etcd, etcdctl) {
        let p50 = d.value_at_quantile(0.5) as f64 / e.value_at_quantile(0.5).max(1) as f64;
        let p99 = d.value_at_quantile(0.99) as f64 / e.value_at_quantile(0.99).max(1) as f64;
        println!(
            "ratio drover/etcdctl on etcd: p50 {p50:.2}x, p99 {p99:.2}x (below 1 = Drover faster)"
        );
        let p99_ms = ms(d.value_at_quantile(0.99));
        println!(
            "target: handover p99 < 20 ms on etcd ({}) and no slower than etcdctl ({})",
            verdict(p99_ms < 20.0),
            verdict(p99 <= 1.0)
        );
    }

    println!(
        "\ncrash failover, in-process store: leader frozen (nothing it sends reaches the store) \
         -> next candidate's started-leading"
    );
    println!(
        "{:<9} {:>4} {:>15} {:>15} {:>14} {:>14} {:>20} {:>20} {:>20}",
        "backend",
        "n",
        "from crash p50",
        "from crash max",
        "past TTL p50",
        "past TTL max",
        "past own expiry p50",
        "past key DELETE p50",
        "past key DELETE max"
    );
    for (backend, c, bare) in &crash_rows {
        println!(
            "{backend:<9} {:>4} {:>12.0} ms {:>12.0} ms {:>11.1} ms {:>11.1} ms {:>17.1} ms {:>17.1} ms {:>17.1} ms",
            c.from_crash.len(),
            ms(c.from_crash.value_at_quantile(0.5)),
            ms(c.from_crash.max()),
            c.past_ttl.p50(),
            c.past_ttl.max(),
            c.past_ttl.p50() - bare.p50(),
            c.past_delete.p50(),
            c.past_delete.max()
        );
    }
    println!(
        "bare lease expiry (peer baseline, same store, same run): lease renewed once, then left alone\n\
         -> a watch sees its key's DELETE"
    );
    println!(
        "{:<9} {:>4} {:>14} {:>14}",
        "backend", "n", "past TTL p50", "past TTL max"
    );
    for (backend, _, bare) in &crash_rows {
        println!(
            "{backend:<9} {:>4} {:>11.1} ms {:>11.1} ms",
            bare.len(),
            bare.p50(),
            bare.max()
        );
    }
    println!(
        "(past TTL = from the send of the last acknowledged keep-alive + TTL; \
         past own expiry = failover past TTL p50 - bare expiry past TTL p50 on that backend;\n \
         past key DELETE = per crash, from an independent watch seeing the crashed leader's key deleted\n \
         by the store to the next candidate's started-leading)"
    );
    for (backend, c, bare) in &crash_rows {
        let vs_bare = c.past_ttl.p50() - bare.p50();
        println!(
            "target: {backend} failover within 200 ms of the store's own key deletion: \
             paired max {:.1} ms ({}); vs the bare lease p50 {vs_bare:.1} ms ({})",
            c.past_delete.max(),
            verdict(c.past_delete.max() <= 200.0),
            verdict(vs_bare <= 200.0)
        );
        println!(
            "target: {backend} failover within TTL + 200 ms of the last keep-alive: max {:.1} ms past TTL ({})",
            c.past_ttl.max(),
            verdict(c.past_ttl.max() <= 200.0)
        );
    }
    if let Some(rows) = &kill_rows {
        print_sigkill(rows);
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn bench_config(name: &str) -> ElectorConfig {
    ElectorConfig::default()
        .with_timing(TTL, RENEW, RETRY)
        .with_identity(name)
}

fn spawn<S: Store>(store: &S, prefix: &str, name: &str, tx: &support::EventsTx) -> Candidate<S> {
    spawn_candidate_with(
        store.clone(),
        prefix,
        name,
        bench_config(name),
        tx.clone(),
        |term: Term<S>| async move { term.cancelled().await },
    )
}

/// Waits for `who`'s started-leading event; returns when it fired.
async fn started(events: &mut support::Events, who: &str) -> Instant {
    let (at, _) = support::next_event(
        events,
        Duration::from_secs(30),
        |e| matches!(e, Ev::Started { who: w, .. } if w == who),
    )
    .await
    .unwrap_or_else(|| panic!("{who} never started leading"));
    at
}

/// Waits until the election has `n` candidates (the waiter is queued),
/// then lets the waiter settle into its watch, so each handover measures a
/// steady-state waiter (the same for both candidates).
async fn queued<S: Store>(election: &Election<S>, n: usize) {
    for _ in 0..10_000 {
        if election.candidates().await.map(|c| c.len()).unwrap_or(0) >= n {
            sleep(SETTLE).await;
            return;
        }
        sleep(Duration::from_millis(2)).await;
    }
    panic!("candidate never queued");
}

const SETTLE: Duration = Duration::from_millis(100);

async fn drover_handovers<S: Store>(store: S, n: usize) -> Histogram<u64> {
    let prefix = unique("handover");
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut leader = spawn(&store, &prefix, "c0", &tx);
    started(&mut rx, "c0").await;
    let mut waiter = spawn(&store, &prefix, "c1", &tx);
    queued(&election, 2).await;
    let mut h = histogram();
    for i in 0..n {
        let next = format!("c{}", i + 1);
        let resigned = Instant::now();
        leader.shutdown.cancel();
        let at = started(&mut rx, &next).await;
        h.record((at - resigned).as_micros().max(1) as u64).unwrap();
        leader.run.await.unwrap().unwrap();
        leader = waiter;
        waiter = spawn(&store, &prefix, &format!("c{}", i + 2), &tx);
        queued(&election, 2).await;
    }
    for c in [leader, waiter] {
        c.shutdown.cancel();
        c.run.await.unwrap().unwrap();
    }
    h
}

/// Signed milliseconds (a sample may land before the TTL mark).
#[derive(Default)]
struct Millis(Vec<f64>);

impl Millis {
    /// Records `at - mark`, negative when `at` came first.
    fn record_since(&mut self, mark: Instant, at: Instant) {
        self.0.push(if at >= mark {
            (at - mark).as_secs_f64() * 1000.0
        } else {
            -((mark - at).as_secs_f64() * 1000.0)
        });
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn p50(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

struct Crashes {
    from_crash: Histogram<u64>,
    past_ttl: Millis,
    /// From an independent watch seeing the crashed leader's key DELETE
    /// (the store's own expiry of that very lease) to the next candidate's
    /// started-leading: Drover's share, paired per sample.
    past_delete: Millis,
}

/// Forwards every DELETE under `prefix` (key, when seen) from a watch on the
/// raw store, which no fault touches.
async fn watch_deletes<S: Store>(
    store: &S,
    prefix: &str,
) -> mpsc::UnboundedReceiver<(Vec<u8>, Instant)> {
    let mut watch = store
        .watch(Watch::prefix(prefix.as_bytes()))
        .await
        .expect("watch the election prefix");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(batch)) = watch.next_batch().await {
            let at = Instant::now();
            for e in batch.events {
                if e.kind == EventKind::Delete && tx.send((e.kv.key, at)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn drover_crash_failovers<S: Store>(store: S, n: usize) -> Crashes {
    let prefix = unique("crash");
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut crashes = Crashes {
        from_crash: histogram(),
        past_ttl: Millis::default(),
        past_delete: Millis::default(),
    };
    let mut deletes = watch_deletes(&store, &prefix).await;
    let faulty = FaultyStore::new(store.clone());
    let mut leader = spawn(&faulty, &prefix, "c0", &tx);
    started(&mut rx, "c0").await;
    for i in 0..n {
        let next = format!("c{}", i + 1);
        let waiter = spawn(&FaultyStore::new(store.clone()), &prefix, &next, &tx);
        queued(&election, 2).await;
        // Let a few keep-alives pass so the crash lands mid-interval.
        sleep(Duration::from_millis(300 + 97 * i as u64 % 250)).await;
        let term = leader.elector.current_term().expect("the leader leads");
        leader.elector.election().store().faults.freeze(true);
        leader.run.abort();
        let crashed = Instant::now();
        let at = started(&mut rx, &next).await;
        crashes
            .from_crash
            .record((at - crashed).as_micros().max(1) as u64)
            .unwrap();
        // The lease's validity is `last acknowledged send + TTL - (TTL -
        // renew deadline)`, so the last send was `valid_until - renew`.
        let last_send = term.valid_until() - RENEW;
        crashes.past_ttl.record_since(last_send + TTL, at);
        let deleted = timeout(Duration::from_secs(10), async {
            loop {
                match deletes.recv().await {
                    Some((key, seen)) if key == term.key().as_bytes() => return seen,
                    Some(_) => continue,
                    None => panic!("the delete watch ended"),
                }
            }
        })
        .await
        .expect("the crashed leader's key was deleted");
        crashes.past_delete.record_since(deleted, at);
        leader = waiter;
    }
    leader.shutdown.cancel();
    let _ = timeout(Duration::from_secs(10), leader.run).await;
    crashes
}

/// The store's own expiry with no elector involved: per sample a lease with
/// the election's TTL and one key, renewed once (at offsets spread over
/// etcd's sweep interval), then left to lapse; returns the time from
/// `renewal send + TTL` until a watch sees the key's DELETE.
async fn bare_lease_expiries<S: Store>(store: &S, n: usize) -> Millis {
    let prefix = unique("bare-expiry");
    let ttl_secs = TTL.as_secs() as i64;
    let mut past = Millis::default();
    for i in 0..n {
        let key = format!("{prefix}k{i}");
        let lease = store.lease_grant(ttl_secs).await.expect("grant a lease");
        assert_eq!(lease.ttl, ttl_secs, "the store granted a different TTL");
        let put = store
            .put(Put::new(key.as_bytes(), "bare").with_lease(lease.id))
            .await
            .expect("put the leased key");
        let mut watch = store
            .watch(Watch::key(key.as_bytes()).from_revision(put.revision + 1))
            .await
            .expect("watch the leased key");
        // Each sample starts just after the previous deletion, i.e. just
        // after a store sweep; spreading the renewal evenly over etcd's
        // 500 ms lessor sweep interval samples every expiry phase instead of
        // one fixed phase.
        sleep(Duration::from_millis(300 + (500 * i / n) as u64)).await;
        let sent = Instant::now();
        store
            .lease_keep_alive(lease.id)
            .await
            .expect("renew the lease once");
        let deleted = timeout(TTL + Duration::from_secs(10), async {
            while let Some(batch) = watch.next_batch().await {
                let batch = batch.expect("watch batch");
                if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                    return Instant::now();
                }
            }
            panic!("the watch ended before the key was deleted");
        })
        .await
        .expect("the store deletes the lapsed lease's key within TTL + 10 s");
        past.record_since(sent + TTL, deleted);
    }
    past
}

// ---- etcdctl elect ----

struct Etcdctl {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Etcdctl {
    fn spawn(endpoints: &[String], name: &str, value: &str) -> Etcdctl {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["elect", name, value])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcdctl is on PATH");
        let stdout = child.stdout.take().expect("stdout");
        Etcdctl {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Resolves when etcdctl prints its key: it was elected.
    async fn elected(&mut self) -> Instant {
        let line = timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("etcdctl elected in time")
            .expect("read etcdctl output")
            .expect("etcdctl output");
        let at = Instant::now();
        assert!(!line.is_empty());
        at
    }

    fn interrupt(&self) {
        let pid = self.child.id().expect("etcdctl is running");
        kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT etcdctl");
    }

    async fn wait(mut self) {
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

async fn etcdctl_handovers(store: &EtcdStore, endpoints: &[String], n: usize) -> Histogram<u64> {
    let prefix = unique("etcdctl");
    let name = prefix.strip_suffix('/').unwrap().to_owned();
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let mut leader = Etcdctl::spawn(endpoints, &name, "p0");
    leader.elected().await;
    let mut waiter = Etcdctl::spawn(endpoints, &name, "p1");
    queued(&election, 2).await;
    let mut h = histogram();
    for i in 0..n {
        let resigned = Instant::now();
        leader.interrupt();
        let at = waiter.elected().await;
        h.record((at - resigned).as_micros().max(1) as u64).unwrap();
        leader.wait().await;
        leader = waiter;
        waiter = Etcdctl::spawn(endpoints, &name, &format!("p{}", i + 2));
        queued(&election, 2).await;
    }
    leader.interrupt();
    waiter.interrupt();
    leader.wait().await;
    waiter.wait().await;
    h
}

// ---- crash failover on etcd: real processes, SIGKILL ----

/// etcd's lessor looks for expired leases every 500 ms (`runLoop` in etcd
/// 3.4's lease/lessor.go), so a lapsed lease is deleted at the first sweep
/// after its expiry, plus a raft round for the revoke.
const SWEEP: Duration = Duration::from_millis(500);

/// Sweep waits closer than this to a sweep are not aimed at: there the
/// prediction could name the wrong sweep.
const SWEEP_GUARD: Duration = Duration::from_millis(40);

/// How far a sample's sweep wait may miss its aim before the sample is
/// taken again (etcdctl) or the next keep-alive is tried (Drover).
const AIM_TOLERANCE: Duration = Duration::from_millis(25);

/// The Drover child is killed after about this many keep-alives (about a
/// second), so its lease is granted that long before the aimed ack.
const AIM_ACKS: u32 = 4;

/// Where etcd's expiry sweeps fall: every [`SWEEP`] from the two latest
/// lease deletions a watch saw, averaged (each lags its sweep by the
/// revoke's raft round; the rows alternate, so each sample is placed
/// against one deletion of each row, and only recent ones, which keeps the
/// slow drift of etcd's `time.After` loop out).
struct Sweeps {
    seen: Instant,
    before: Option<Instant>,
}

impl Sweeps {
    fn new(seen: Instant) -> Sweeps {
        Sweeps { seen, before: None }
    }

    /// A lease deletion was seen at `at`.
    fn saw(&mut self, at: Instant) {
        self.before = Some(self.seen);
        self.seen = at;
    }

    /// A sweep: the latest deletion moved halfway to the phase of the one
    /// before.
    fn reference(&self) -> Instant {
        let Some(before) = self.before else {
            return self.seen;
        };
        let apart =
            (self.seen.saturating_duration_since(before).as_nanos() % SWEEP.as_nanos()) as u64;
        let apart = Duration::from_nanos(apart);
        if apart < SWEEP / 2 {
            self.seen - apart / 2
        } else {
            self.seen + (SWEEP - apart) / 2
        }
    }

    /// The first predicted sweep at or after `at`.
    fn next_after(&self, at: Instant) -> Instant {
        let mut sweep = self.reference();
        while sweep > at {
            sweep -= SWEEP;
        }
        let periods = (at - sweep).as_nanos().div_ceil(SWEEP.as_nanos());
        sweep + SWEEP * periods as u32
    }

    /// How long after `expiry` the sweep that deletes the lease comes.
    fn wait(&self, expiry: Instant) -> Duration {
        self.next_after(expiry) - expiry
    }

    /// The first time after `not_before` at which a keep-alive leaves its
    /// lease's expiry `wait` before a sweep.
    fn ack_time_for(&self, wait: Duration, not_before: Instant) -> Instant {
        self.next_after(not_before + TTL + wait) - wait - TTL
    }
}

/// The sweep wait sample `i` of `n` aims at: spread evenly between the
/// guards, the same for both rows, so both see every expiry phase.
fn aimed_wait(i: usize, n: usize) -> Duration {
    let span = SWEEP - 2 * SWEEP_GUARD;
    SWEEP_GUARD + span.mul_f64((i as f64 + 0.5) / n as f64)
}

fn misses(sweeps: &Sweeps, ack: Instant, aim: Duration) -> Duration {
    let wait = sweeps.wait(ack + TTL);
    wait.abs_diff(aim)
}

/// One row of SIGKILL samples, each relative to the last acknowledged
/// keep-alive (when its line was read from the killed process) + TTL.
#[derive(Default)]
struct KillRow {
    /// Until the event (Drover: the survivor's started-leading; etcdctl:
    /// the key's DELETE).
    past_ttl: Millis,
    /// Until the predicted sweep that expires the lease: etcd's share,
    /// set by where the expiry falls between two sweeps.
    sweep_wait: Millis,
    /// From that sweep to the event: `past_ttl - sweep_wait`.
    past_sweep: Millis,
    /// Drover only: from the key's DELETE (an independent watch) to the
    /// survivor's started-leading.
    past_delete: Millis,
}

impl KillRow {
    fn record(&mut self, sweeps: &Sweeps, last_ack: Instant, event: Instant) {
        let expiry = last_ack + TTL;
        let sweep = sweeps.next_after(expiry);
        self.past_ttl.record_since(expiry, event);
        self.sweep_wait.record_since(expiry, sweep);
        self.past_sweep.record_since(sweep, event);
    }
}

struct KillRows {
    drover: KillRow,
    etcdctl: KillRow,
}

/// Crash failover against real SIGKILLed processes, interleaved sample by
/// sample so both rows share the machine's state: a Drover leader in a child
/// process (this binary re-executed) with an in-process survivor waiting,
/// and an `etcdctl lease keep-alive` process keeping a leased key. Each is
/// killed right after an acknowledged keep-alive timed to leave its expiry
/// an aimed wait before etcd's next sweep (the same aims for both rows).
async fn sigkill_failovers(etcd: &EtcdStore, endpoints: &[String], n: usize) -> KillRows {
    let mut sweeps = Sweeps::new(first_sweep(etcd).await);
    let mut rows = KillRows {
        drover: KillRow::default(),
        etcdctl: KillRow::default(),
    };
    // Learned per process kind: from the start signal to the aimed ack.
    let mut drover_lag = Duration::from_millis(10);
    let mut etcdctl_lag = Duration::from_millis(30);
    for i in 0..n {
        let aim = aimed_wait(i, n);
        drover_sigkill(etcd, &mut sweeps, &mut rows.drover, aim, &mut drover_lag, i).await;
        etcdctl_sigkill(
            etcd,
            endpoints,
            &mut sweeps,
            &mut rows.etcdctl,
            aim,
            &mut etcdctl_lag,
            i,
        )
        .await;
    }
    rows
}

/// Watches `key` from `revision` until it is deleted; returns when.
async fn deleted(store: &EtcdStore, key: &str, revision: drover_store::Revision) -> Instant {
    let mut watch = store
        .watch(Watch::key(key.as_bytes()).from_revision(revision))
        .await
        .expect("watch the leased key");
    timeout(TTL + Duration::from_secs(10), async {
        while let Some(batch) = watch.next_batch().await {
            let batch = batch.expect("watch batch");
            if batch.events.iter().any(|e| e.kind == EventKind::Delete) {
                return Instant::now();
            }
        }
        panic!("the watch ended before the key was deleted");
    })
    .await
    .expect("etcd deletes the lapsed lease's key within TTL + 10 s")
}

/// Locates etcd's sweep: a 1 s lease with a key, left to lapse.
async fn first_sweep(etcd: &EtcdStore) -> Instant {
    let key = format!("{}k", unique("sweep"));
    let lease = etcd.lease_grant(1).await.expect("grant a lease");
    let put = etcd
        .put(Put::new(key.as_bytes(), "sweep").with_lease(lease.id))
        .await
        .expect("put the leased key");
    deleted(etcd, &key, put.revision + 1).await
}

/// A Drover leader in a child process, SIGKILLed right after an
/// acknowledged keep-alive; the event is the waiting candidate's
/// started-leading.
async fn drover_sigkill(
    etcd: &EtcdStore,
    sweeps: &mut Sweeps,
    row: &mut KillRow,
    aim: Duration,
    lag: &mut Duration,
    i: usize,
) {
    let prefix = unique(&format!("sigkill-{i}"));
    let election = Election::with_prefix(etcd.clone(), prefix.as_str()).unwrap();
    let mut deletes = watch_deletes(etcd, &prefix).await;
    let mut leader = support::child::ChildCandidate::spawn(&[], &prefix);
    leader.ready(Duration::from_secs(30)).await;
    // The child's keep-alives follow its grant every retry period: say go
    // so that the AIM_ACKS-th lands on the aim.
    let soon = Instant::now() + Duration::from_millis(50) + RETRY * AIM_ACKS + *lag;
    let go_at = sweeps.ack_time_for(aim, soon) - RETRY * AIM_ACKS - *lag;
    tokio::time::sleep_until(go_at).await;
    let go = Instant::now();
    leader.go().await;
    let term = leader.leading(Duration::from_secs(30)).await;
    let term_key = term.key.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Fencing: once it leads, the survivor reads the killed leader's key,
    // which etcd must have deleted by then.
    let (fence_tx, mut fence_rx) = mpsc::unbounded_channel();
    let survivor = spawn_candidate_with(
        etcd.clone(),
        &prefix,
        "survivor",
        bench_config("survivor"),
        tx.clone(),
        move |term: Term<EtcdStore>| {
            let (key, fence_tx) = (term_key.clone(), fence_tx.clone());
            async move {
                let old = term.store().get(drover_store::Get::key(key.as_str())).await;
                let _ = fence_tx.send(old.map(|got| got.kvs.is_empty()));
                term.cancelled().await
            }
        },
    );
    queued(&election, 2).await;
    // The first keep-alive close enough to the aim (or, after a bounded
    // number, whichever comes), taken only while it is fresh: no later
    // renewal can be in flight then.
    let mut acks = 0;
    let mut chosen;
    loop {
        chosen = leader.next_keep_alive(Duration::from_secs(5)).await;
        acks += 1;
        let fresh = chosen.elapsed() < RETRY / 4;
        let close = misses(sweeps, chosen, aim) <= AIM_TOLERANCE;
        if acks == AIM_ACKS as usize {
            *lag = (chosen - go).saturating_sub(RETRY * AIM_ACKS);
        }
        let settled = !sweeps_too_close(sweeps, chosen) && (close || acks >= 4 * AIM_ACKS as usize);
        if fresh && (settled || acks >= 8 * AIM_ACKS as usize) {
            break;
        }
    }
    let last_ack = leader.kill().await.unwrap_or(chosen).max(chosen);
    let at = started(&mut rx, "survivor").await;
    let gone = timeout(Duration::from_secs(10), async {
        loop {
            match deletes.recv().await {
                Some((k, seen)) if k == term.key.as_bytes() => return seen,
                Some(_) => continue,
                None => panic!("the delete watch ended"),
            }
        }
    })
    .await
    .expect("the killed leader's key was deleted");
    let fenced = timeout(Duration::from_secs(10), fence_rx.recv())
        .await
        .expect("the survivor's work ran")
        .expect("the survivor's work reported");
    assert!(
        fenced.expect("read the killed leader's key"),
        "the survivor led while the killed leader's key still existed"
    );
    row.record(sweeps, last_ack, at);
    row.past_delete.record_since(gone, at);
    sweeps.saw(gone);
    survivor.shutdown.cancel();
    survivor.run.await.unwrap().unwrap();
}

/// True if a keep-alive at `ack` leaves the expiry within [`SWEEP_GUARD`]
/// of a predicted sweep.
fn sweeps_too_close(sweeps: &Sweeps, ack: Instant) -> bool {
    let wait = sweeps.wait(ack + TTL);
    wait < SWEEP_GUARD || SWEEP - wait < SWEEP_GUARD
}

/// `etcdctl lease keep-alive` on a lease with one key, SIGKILLed right after
/// its first acknowledged keep-alive; the event is the key's DELETE.
async fn etcdctl_sigkill(
    etcd: &EtcdStore,
    endpoints: &[String],
    sweeps: &mut Sweeps,
    row: &mut KillRow,
    aim: Duration,
    lag: &mut Duration,
    i: usize,
) {
    let key = format!("{}k", unique(&format!("etcdctl-sigkill-{i}")));
    let lease = etcd
        .lease_grant(TTL.as_secs() as i64)
        .await
        .expect("grant a lease");
    let put = etcd
        .put(Put::new(key.as_bytes(), "etcdctl").with_lease(lease.id))
        .await
        .expect("put the leased key");
    let gone = tokio::spawn({
        let (etcd, key) = (etcd.clone(), key.clone());
        async move { deleted(&etcd, &key, put.revision + 1).await }
    });
    // etcdctl sends its first keep-alive as it starts: start it so that
    // this one lands on the aim; a start that misses is taken again (the
    // lease is still alive, renewed by the missed one).
    let mut last_ack = None;
    for _ in 0..8 {
        let spawn_at =
            sweeps.ack_time_for(aim, Instant::now() + *lag + Duration::from_millis(20)) - *lag;
        tokio::time::sleep_until(spawn_at).await;
        let spawned = Instant::now();
        let mut keeper = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["lease", "keep-alive", &format!("{:x}", lease.id)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcdctl is on PATH");
        let mut lines = support::child::stamped_lines(keeper.stdout.take().expect("stdout"));
        let ack = timeout(Duration::from_secs(5), async {
            while let Some((at, line)) = lines.recv().await {
                if line.contains("keepalived") {
                    return at;
                }
            }
            panic!("etcdctl exited without keeping the lease alive");
        })
        .await
        .expect("etcdctl keeps the lease alive");
        keeper.start_kill().expect("SIGKILL etcdctl");
        keeper.wait().await.expect("reap etcdctl");
        let mut ack = ack;
        while let Some((at, line)) = lines.recv().await {
            if line.contains("keepalived") {
                ack = at;
            }
        }
        *lag = ack - spawned;
        if misses(sweeps, ack, aim) <= AIM_TOLERANCE {
            last_ack = Some(ack);
            break;
        }
        last_ack = Some(ack);
    }
    let last_ack = last_ack.expect("etcdctl kept the lease alive");
    let gone = gone.await.expect("the delete watch");
    row.record(sweeps, last_ack, gone);
    sweeps.saw(gone);
}

fn print_sigkill(rows: &KillRows) {
    println!(
        "\ncrash failover on etcd: a real process SIGKILLed right after an acknowledged keep-alive\n\
         drover: a leader in a child process -> the waiting candidate's started-leading\n\
         etcdctl: `etcdctl lease keep-alive` holding a leased key -> a watch sees the key's DELETE"
    );
    println!(
        "{:<26} {:>4} {:>14} {:>14} {:>16} {:>16} {:>16} {:>18} {:>18}",
        "row",
        "n",
        "past TTL p50",
        "past TTL max",
        "sweep wait p50",
        "past sweep p50",
        "past sweep max",
        "past DELETE p50",
        "past DELETE max"
    );
    for (name, row) in [
        ("drover elector (SIGKILL)", &rows.drover),
        ("etcdctl lease keep-alive", &rows.etcdctl),
    ] {
        let (delete_p50, delete_max) = if row.past_delete.len() > 0 {
            (
                format!("{:.1} ms", row.past_delete.p50()),
                format!("{:.1} ms", row.past_delete.max()),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{name:<26} {:>4} {:>11.1} ms {:>11.1} ms {:>13.1} ms {:>13.1} ms {:>13.1} ms {delete_p50:>18} {delete_max:>18}",
            row.past_ttl.len(),
            row.past_ttl.p50(),
            row.past_ttl.max(),
            row.sweep_wait.p50(),
            row.past_sweep.p50(),
            row.past_sweep.max(),
        );
    }
    println!(
        "(past TTL = from the last acknowledged keep-alive (when its line was read from the killed process) + TTL;\n \
         sweep wait = from there to etcd's next expiry sweep (every 500 ms, located from the deletions seen):\n \
         where the expiry falls between two sweeps, which no client controls, aimed the same for both rows;\n \
         past sweep = past TTL - sweep wait; past DELETE = from an independent watch seeing the killed\n \
         leader's key deleted to the survivor's started-leading (two watch streams: can be slightly negative))"
    );
    let raw = rows.drover.past_ttl.p50() - rows.etcdctl.past_ttl.p50();
    let p50 = rows.drover.past_sweep.p50() - rows.etcdctl.past_sweep.p50();
    let max = rows.drover.past_sweep.max() - rows.etcdctl.past_sweep.max();
    println!(
        "difference drover - etcdctl: past sweep p50 {p50:+.1} ms, max {max:+.1} ms; past TTL p50 {raw:+.1} ms \
         (also moves with the samples' sweep phases, aimed {:.0} ms apart)",
        (SWEEP - 2 * SWEEP_GUARD).as_secs_f64() * 1000.0 / rows.drover.past_ttl.len().max(1) as f64
    );
    println!(
        "target: drover crash failover within 20 ms of what etcd allows (etcdctl, same run), \
         past sweep p50 difference: {}",
        verdict(p50 <= 20.0)
    );
}
