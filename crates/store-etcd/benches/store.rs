//! Store benchmark: the same workload on three stores side by side in one
//! run:
//!
//! - **embedded**: the embedded backend (durable, on disk), in-process;
//! - **orchestrator**: an `orchestrator serve` process on its embedded store
//!   (durable, on disk), driven over loopback through the etcd v3 API it
//!   serves, by the same etcd client code as etcd (`EtcdStore`);
//! - **etcd**: a real etcd, through `EtcdStore`.
//!
//! Run it with `cargo xtask bench store`, which starts a private etcd and a
//! private `orchestrator serve` (built with the bench profile), both with
//! their data on the same disk as the embedded store's, and sets
//! `DROVER_ETCD_ENDPOINTS` and `DROVER_ORCHESTRATOR_ENDPOINTS`. A column
//! whose variable is unset is not measured (the embedded one always is).
//! `DROVER_BENCH_SECS` sets each row's duration (default 3 s);
//! `DROVER_BENCH_REPEAT` (or `--repeat N` after `cargo bench ... --`) how
//! many times every row runs (default 3): the table shows the median of the
//! repeats, and each repeat's numbers are printed as they come.
//!
//! Fairness on a small, shared machine: all stores are open for the whole
//! run and every workload runs on each of them back to back, after an
//! unmeasured warm-up of the same workload, so a change in machine load hits
//! every column alike. The order alternates from repeat to repeat
//! (embedded, orchestrator, etcd; then etcd, orchestrator, embedded), so
//! neither of two columns always runs on the machine the other one just
//! heated up. Before each row the disk is flushed (`sync`) and the bench
//! pauses briefly, so that no row pays for writeback left by the one before
//! it (etcd flushes its backend lazily; other processes write too). All
//! stores first get the same heavy warm-up, so rows measure stores in steady
//! state. Every row uses the same value size on every store.
//!
//! Rows: durable put throughput with 1 and 64 concurrent writers, put
//! latency p50/p99 (1 writer), compare-and-swap txn throughput (16 tasks
//! incrementing 8 shared counters by mod-revision CAS), watch delivery
//! latency p50/p99 (put start to event received), and linearizable range
//! reads: 64 tasks each reading, one request at a time, either a single
//! key (a `Get` of one of 1024 keys, in turn) or a 16-key prefix (one of 64
//! groups of 16 keys, in turn, 16 values per response), in reads per second.
//! Every value is 256 bytes.
//!
//! Then `etcdctl check perf --load=s`, `m` and `l` (each 60 s of 1 KiB puts
//! at 150, 1000 and 8000 writes/s from 50, 200 and 500 clients) run against
//! the orchestrator and against etcd, alternating which goes first: the
//! table shows etcdctl's verdict (PASS needs at least 90% of the load's rate,
//! no request slower than 500 ms, a latency standard deviation of at most
//! 100 ms and no errors) and the throughput it printed. It takes about seven
//! minutes; `DROVER_BENCH_CHECK_PERF` chooses the loads (default `s,m,l`,
//! `xl` is accepted too) and `DROVER_BENCH_CHECK_PERF=off` skips it, e.g.
//! for a quick run. It needs `etcdctl` on PATH.
//!
//! The ratio columns compare the orchestrator with etcd (the same client,
//! the same protocol: what a Drover user gains by pointing an etcd client at
//! an orchestrator) and the in-process embedded store with etcd. The table is
//! printed and written to `target/bench/store.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drover_store::embedded::{EmbeddedConfig, EmbeddedStore};
use drover_store::{Compare, CompareOp, Delete, Get, Put, Store, Txn, TxnOp, TxnOpResponse, Watch};
use drover_store_etcd::{EtcdConfig, EtcdStore};
use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Bytes per value: a small pod intent or health record.
const VALUE_SIZE: usize = 256;
/// Distinct keys each writer cycles through (bounds the key space).
const KEYS_PER_WRITER: u64 = 256;
const CAS_TASKS: usize = 16;
const CAS_COUNTERS: usize = 8;
/// Upper bound on watch samples per run, whatever the duration.
const MAX_WATCH_SAMPLES: usize = 20_000;
/// Concurrent readers in the range rows.
const READERS: usize = 64;
/// The range rows read `RANGE_GROUPS` prefixes of `RANGE_GROUP_SIZE` keys.
const RANGE_GROUPS: usize = 64;
const RANGE_GROUP_SIZE: usize = 16;
/// Upper bound on one `etcdctl check perf` run (60 s of load, then it
/// deletes what it wrote).
const CHECK_PERF_TIMEOUT: Duration = Duration::from_secs(600);

/// The stores measured, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// The embedded store, in this process.
    Embedded,
    /// `orchestrator serve` through its etcd API.
    Orchestrator,
    /// A real etcd.
    Etcd,
}

impl Column {
    fn label(self) -> &'static str {
        match self {
            Column::Embedded => "embedded",
            Column::Orchestrator => "orchestrator",
            Column::Etcd => "etcd",
        }
    }
}

/// Every column in table order, and the order of odd repeats.
const FORWARD: [Column; 3] = [Column::Embedded, Column::Orchestrator, Column::Etcd];
const BACKWARD: [Column; 3] = [Column::Etcd, Column::Orchestrator, Column::Embedded];

/// A store reached over the network with etcd's client.
struct Remote {
    store: EtcdStore,
    endpoints: Vec<String>,
    /// Every key the bench writes starts with this.
    prefix: String,
}

/// The stores under test; `None` where the endpoint variable is unset.
struct Stores {
    embedded: EmbeddedStore,
    orchestrator: Option<Remote>,
    etcd: Option<Remote>,
}

impl Stores {
    fn remote(&self, column: Column) -> Option<&Remote> {
        match column {
            Column::Embedded => None,
            Column::Orchestrator => self.orchestrator.as_ref(),
            Column::Etcd => self.etcd.as_ref(),
        }
    }

    fn has(&self, column: Column) -> bool {
        column == Column::Embedded || self.remote(column).is_some()
    }

    /// Run `workload` on `column` (if measured) into `results`.
    async fn run(
        &self,
        column: Column,
        repeat: usize,
        workload: Workload,
        row_time: Duration,
        results: &mut Results,
    ) {
        let tag = format!("[{} #{}]", column.label(), repeat + 1);
        match (column, self.remote(column)) {
            (Column::Embedded, _) => {
                run(
                    &self.embedded,
                    "/bench/",
                    &tag,
                    repeat,
                    workload,
                    row_time,
                    results,
                )
                .await;
            }
            (_, Some(remote)) => {
                let prefix = &remote.prefix;
                run(
                    &remote.store,
                    prefix,
                    &tag,
                    repeat,
                    workload,
                    row_time,
                    results,
                )
                .await;
            }
            (_, None) => {}
        }
    }
}

/// One measured quantity on every column.
struct Row {
    name: &'static str,
    unit: &'static str,
    /// Throughputs: higher is better. Latencies: lower is better.
    higher_is_better: bool,
    embedded: f64,
    orchestrator: Option<f64>,
    etcd: Option<f64>,
}

impl Row {
    /// How many times better `value` is than etcd's (>1 = better).
    fn versus_etcd(&self, value: f64) -> Option<f64> {
        let etcd = self.etcd?;
        if self.higher_is_better {
            Some(value / etcd)
        } else {
            Some(etcd / value)
        }
    }

    /// The orchestrator (served etcd API) against etcd.
    fn orchestrator_vs_etcd(&self) -> Option<f64> {
        self.versus_etcd(self.orchestrator?)
    }

    /// The in-process embedded store against etcd.
    fn embedded_vs_etcd(&self) -> Option<f64> {
        self.versus_etcd(self.embedded)
    }
}

/// Results of one column in one repeat.
#[derive(Debug, Default, Clone, Copy)]
struct Results {
    put_1: f64,
    put_64: f64,
    put_p50_us: f64,
    put_p99_us: f64,
    cas: f64,
    watch_p50_us: f64,
    watch_p99_us: f64,
    get_key: f64,
    get_prefix: f64,
}

impl Results {
    /// The per-field median of `runs`.
    fn median(runs: &[Results]) -> Results {
        let m = |f: fn(&Results) -> f64| median(runs.iter().map(f).collect());
        Results {
            put_1: m(|r| r.put_1),
            put_64: m(|r| r.put_64),
            put_p50_us: m(|r| r.put_p50_us),
            put_p99_us: m(|r| r.put_p99_us),
            cas: m(|r| r.cas),
            watch_p50_us: m(|r| r.watch_p50_us),
            watch_p99_us: m(|r| r.watch_p99_us),
            get_key: m(|r| r.get_key),
            get_prefix: m(|r| r.get_prefix),
        }
    }
}

/// Every repeat's results, per column.
#[derive(Debug, Clone)]
struct Runs {
    embedded: Vec<Results>,
    orchestrator: Vec<Results>,
    etcd: Vec<Results>,
}

impl Runs {
    fn new(repeat: usize) -> Runs {
        Runs {
            embedded: vec![Results::default(); repeat],
            orchestrator: vec![Results::default(); repeat],
            etcd: vec![Results::default(); repeat],
        }
    }

    fn of(&mut self, column: Column) -> &mut [Results] {
        match column {
            Column::Embedded => &mut self.embedded,
            Column::Orchestrator => &mut self.orchestrator,
            Column::Etcd => &mut self.etcd,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async_main());
}

/// `--repeat N` on the command line, else `DROVER_BENCH_REPEAT`, else 3.
fn repeats() -> usize {
    let mut args = std::env::args().skip(1);
    let mut from_args = None;
    while let Some(arg) = args.next() {
        if let Some(n) = arg.strip_prefix("--repeat=") {
            from_args = n.parse().ok();
        } else if arg == "--repeat" {
            from_args = args.next().and_then(|n| n.parse().ok());
        }
    }
    from_args
        .or_else(|| {
            std::env::var("DROVER_BENCH_REPEAT")
                .ok()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(3_usize)
        .max(1)
}

/// The `etcdctl check perf` loads to run: `DROVER_BENCH_CHECK_PERF`, a
/// comma-separated list of `s`, `m`, `l`, `xl`, or `off`; default `s,m,l`.
fn check_perf_loads() -> Vec<&'static str> {
    let spec = std::env::var("DROVER_BENCH_CHECK_PERF").unwrap_or_else(|_| "s,m,l".into());
    let spec = spec.trim();
    if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
        return Vec::new();
    }
    spec.split(',')
        .map(|load| {
            let load = load.trim();
            ["s", "m", "l", "xl"]
                .into_iter()
                .find(|known| *known == load)
                .unwrap_or_else(|| {
                    panic!("DROVER_BENCH_CHECK_PERF: unknown load {load:?} (s, m, l, xl or off)")
                })
        })
        .collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// The workloads, each run on every column back to back.
#[derive(Clone, Copy, Debug)]
enum Workload {
    Put1,
    Put64,
    Cas,
    Watch,
    GetKey,
    GetPrefix,
}

const WORKLOADS: [Workload; 6] = [
    Workload::Put1,
    Workload::Put64,
    Workload::Cas,
    Workload::Watch,
    Workload::GetKey,
    Workload::GetPrefix,
];

/// Connect to the comma-separated endpoints in `var`, if it is set.
async fn connect(var: &str, column: Column) -> Option<Remote> {
    let endpoints = std::env::var(var).ok()?;
    if endpoints.trim().is_empty() {
        return None;
    }
    let endpoints: Vec<String> = endpoints.split(',').map(|s| s.trim().to_string()).collect();
    println!("{}: {}", column.label(), endpoints.join(","));
    let store = EtcdStore::connect(endpoints.clone(), EtcdConfig::default())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect to {} at {}: {e}",
                column.label(),
                endpoints.join(",")
            )
        });
    let prefix = format!("/bench/{}-{}/", std::process::id(), nanos());
    Some(Remote {
        store,
        endpoints,
        prefix,
    })
}

async fn async_main() {
    let secs: f64 = std::env::var("DROVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let repeat = repeats();
    let loads = check_perf_loads();
    let row_time = Duration::from_secs_f64(secs);
    let bench_dir = bench_dir();
    std::fs::create_dir_all(&bench_dir).expect("create the bench directory");

    let data = tempfile::Builder::new()
        .prefix("embedded-")
        .tempdir_in(&bench_dir)
        .expect("create the embedded store's directory");
    println!("embedded store: durable, data in {}", data.path().display());
    let stores = Stores {
        embedded: open_embedded(data.path()).await,
        orchestrator: connect("DROVER_ORCHESTRATOR_ENDPOINTS", Column::Orchestrator).await,
        etcd: connect("DROVER_ETCD_ENDPOINTS", Column::Etcd).await,
    };
    for (column, var) in [
        (Column::Orchestrator, "DROVER_ORCHESTRATOR_ENDPOINTS"),
        (Column::Etcd, "DROVER_ETCD_ENDPOINTS"),
    ] {
        if !stores.has(column) {
            println!(
                "{var} is not set: the {} column is not measured \
                 (`cargo xtask bench store` measures every column)",
                column.label()
            );
        }
    }
    let load_before = load_average();
    println!("{repeat} repeat(s) of {secs} s per row and store; load average {load_before}");

    warm_up(&stores.embedded, "/bench/").await;
    for remote in [&stores.orchestrator, &stores.etcd].into_iter().flatten() {
        warm_up(&remote.store, &remote.prefix).await;
    }
    let mut runs = Runs::new(repeat);
    for r in 0..repeat {
        let order = if r % 2 == 0 { FORWARD } else { BACKWARD };
        for workload in WORKLOADS {
            for column in order {
                stores
                    .run(column, r, workload, row_time, &mut runs.of(column)[r])
                    .await;
            }
        }
    }
    stores
        .embedded
        .close()
        .await
        .expect("close the embedded store");
    for remote in [&stores.orchestrator, &stores.etcd].into_iter().flatten() {
        remote
            .store
            .delete(Delete::prefix(remote.prefix.clone()))
            .await
            .expect("clean up bench keys");
    }

    let mut checks = Vec::new();
    for (i, load) in loads.iter().enumerate() {
        let order = if i % 2 == 0 { FORWARD } else { BACKWARD };
        let mut check = CheckPerfRow {
            load,
            orchestrator: None,
            etcd: None,
        };
        for column in order {
            let Some(remote) = stores.remote(column) else {
                continue;
            };
            settle().await;
            let result = check_perf(column, &remote.endpoints, load).await;
            match column {
                Column::Orchestrator => check.orchestrator = Some(result),
                Column::Etcd => check.etcd = Some(result),
                Column::Embedded => unreachable!("the embedded store has no endpoint"),
            }
        }
        checks.push(check);
    }
    let load_after = load_average();

    let medians =
        |column: Column, runs: &[Results]| stores.has(column).then(|| Results::median(runs));
    let table = render(
        &Report {
            rows: rows(
                &Results::median(&runs.embedded),
                medians(Column::Orchestrator, &runs.orchestrator).as_ref(),
                medians(Column::Etcd, &runs.etcd).as_ref(),
            ),
            checks,
            secs,
            per_repeat: (0..repeat)
                .map(|r| {
                    rows(
                        &runs.embedded[r],
                        stores
                            .has(Column::Orchestrator)
                            .then_some(&runs.orchestrator[r]),
                        stores.has(Column::Etcd).then_some(&runs.etcd[r]),
                    )
                })
                .collect(),
        },
        (&load_before, &load_after),
    );
    println!("\n{table}");
    let out = bench_dir.join("store.md");
    std::fs::write(&out, &table).expect("write store.md");
    println!("written to {}", out.display());
}

async fn open_embedded(dir: &std::path::Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedConfig::default())
        .await
        .expect("open the embedded store")
}

/// Where benchmark data and reports go: `DROVER_BENCH_DIR`, else
/// `target/bench` of this workspace.
fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DROVER_BENCH_DIR") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("bench")
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Warm up connections, files and caches, and grow the data files past
/// their initial allocations, so that the rows measure a store in steady
/// state (the embedded store's history window fills, etcd's WAL and
/// backend grow the same way).
async fn warm_up<S: Store>(store: &S, prefix: &str) {
    put_throughput(store, &format!("{prefix}warm/"), 64, Duration::from_secs(1)).await;
}

/// Let the disk settle before a row: flush every dirty page in the system
/// (the other backend's deferred writes, other processes' files) and pause,
/// so that no row pays for writeback caused by the one before it.
async fn settle() {
    let synced = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status())
        .await
        .expect("sync task");
    if let Err(error) = synced {
        eprintln!("warning: running `sync` failed: {error}");
    }
    tokio::time::sleep(SETTLE).await;
}

/// Pause before each row, after flushing the disk.
const SETTLE: Duration = Duration::from_millis(500);

/// Unmeasured run of a workload before its measured run.
const ROW_WARM_UP: Duration = Duration::from_millis(300);

/// Run one workload on one store (after its own short warm-up) and record
/// it in `results`; `tag` names the column and repeat in the progress lines.
async fn run<S: Store>(
    store: &S,
    prefix: &str,
    tag: &str,
    repeat: usize,
    workload: Workload,
    row_time: Duration,
    results: &mut Results,
) {
    let prefix = format!("{prefix}r{repeat}/");
    settle().await;
    match workload {
        Workload::Put1 => {
            put_throughput(store, &format!("{prefix}p1/"), 1, ROW_WARM_UP).await;
            let (put_1, lat) = put_throughput(store, &format!("{prefix}p1/"), 1, row_time).await;
            results.put_1 = put_1;
            results.put_p50_us = lat.value_at_quantile(0.5) as f64;
            results.put_p99_us = lat.value_at_quantile(0.99) as f64;
            println!(
                "{tag} put, 1 writer: {put_1:.0}/s, p50 {} us, p99 {} us",
                results.put_p50_us, results.put_p99_us
            );
        }
        Workload::Put64 => {
            put_throughput(store, &format!("{prefix}p64/"), 64, ROW_WARM_UP).await;
            let (put_64, _) = put_throughput(store, &format!("{prefix}p64/"), 64, row_time).await;
            results.put_64 = put_64;
            println!("{tag} put, 64 writers: {put_64:.0}/s");
        }
        Workload::Cas => {
            cas_throughput(store, &format!("{prefix}cas-warm/"), ROW_WARM_UP).await;
            let cas = cas_throughput(store, &format!("{prefix}cas/"), row_time).await;
            results.cas = cas;
            println!("{tag} CAS txn, {CAS_TASKS} tasks: {cas:.0}/s");
        }
        Workload::Watch => {
            watch_latency(store, &format!("{prefix}watch-warm/"), ROW_WARM_UP).await;
            let watch = watch_latency(store, &format!("{prefix}watch/"), row_time).await;
            results.watch_p50_us = watch.value_at_quantile(0.5) as f64;
            results.watch_p99_us = watch.value_at_quantile(0.99) as f64;
            println!(
                "{tag} watch delivery p50 {} us, p99 {} us ({} samples)",
                results.watch_p50_us,
                results.watch_p99_us,
                watch.len()
            );
        }
        Workload::GetKey | Workload::GetPrefix => {
            let prefix = format!("{prefix}range/");
            seed_range_keys(store, &prefix).await;
            let by_prefix = matches!(workload, Workload::GetPrefix);
            read_throughput(store, &prefix, by_prefix, ROW_WARM_UP).await;
            let reads = read_throughput(store, &prefix, by_prefix, row_time).await;
            if by_prefix {
                results.get_prefix = reads;
                println!(
                    "{tag} {RANGE_GROUP_SIZE}-key prefix reads, {READERS} readers: {reads:.0}/s"
                );
            } else {
                results.get_key = reads;
                println!("{tag} single-key reads, {READERS} readers: {reads:.0}/s");
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// `writers` tasks putting as fast as they can for `time`; returns puts per
/// second and the latency histogram (µs) of every put.
async fn put_throughput<S: Store>(
    store: &S,
    prefix: &str,
    writers: usize,
    time: Duration,
) -> (f64, Histogram<u64>) {
    let value = vec![b'x'; VALUE_SIZE];
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        let prefix = format!("{prefix}w{w}/");
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                let key = format!("{prefix}{}", n % KEYS_PER_WRITER);
                let t0 = Instant::now();
                store
                    .put(Put::new(key, value.clone()))
                    .await
                    .expect("put failed during the benchmark");
                hist.record(micros(t0.elapsed())).expect("record");
                n += 1;
            }
            hist
        }));
    }
    let mut all = histogram();
    for task in tasks {
        all.add(task.await.expect("writer task")).expect("merge");
    }
    let elapsed = start.elapsed().as_secs_f64();
    (all.len() as f64 / elapsed, all)
}

/// `CAS_TASKS` tasks incrementing `CAS_COUNTERS` shared counters with
/// read / compare-mod-revision-and-put, retrying on conflict. Returns
/// committed increments per second, after checking none was lost.
async fn cas_throughput<S: Store>(store: &S, prefix: &str, time: Duration) -> f64 {
    for c in 0..CAS_COUNTERS {
        store
            .put(Put::new(format!("{prefix}{c}"), "0"))
            .await
            .expect("seed counter");
    }
    let start = Instant::now();
    let deadline = start + time;
    let committed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(CAS_TASKS);
    for t in 0..CAS_TASKS {
        let store = store.clone();
        let key = format!("{prefix}{}", t % CAS_COUNTERS);
        let committed = Arc::clone(&committed);
        tasks.push(tokio::spawn(async move {
            let first = store
                .get(Get::key(key.clone()))
                .await
                .expect("read counter");
            let mut current = first.first().expect("seeded counter").clone();
            while Instant::now() < deadline {
                let n: u64 = std::str::from_utf8(&current.value)
                    .expect("utf-8 counter")
                    .parse()
                    .expect("numeric counter");
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        current.mod_revision,
                    )])
                    .and_then([TxnOp::Put(Put::new(key.clone(), (n + 1).to_string()))])
                    .or_else([TxnOp::Get(Get::key(key.clone()))]);
                let resp = store.txn(txn).await.expect("CAS txn");
                if resp.succeeded {
                    committed.fetch_add(1, Ordering::Relaxed);
                    current.value = (n + 1).to_string().into_bytes();
                    current.mod_revision = resp.revision;
                } else {
                    match resp.responses.first() {
                        Some(TxnOpResponse::Get(g)) => {
                            current = g.first().expect("counter exists").clone();
                        }
                        other => panic!("failure branch returned {other:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("CAS task");
    }
    let elapsed = start.elapsed().as_secs_f64();
    // No lost update: the counters add up to the committed increments.
    let got = store.get(Get::prefix(prefix)).await.expect("read counters");
    let total: u64 = got
        .kvs
        .iter()
        .map(|kv| {
            std::str::from_utf8(&kv.value)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let committed = committed.load(Ordering::Relaxed);
    assert_eq!(total, committed, "CAS lost or invented increments");
    committed as f64 / elapsed
}

/// One writer, one watcher: put key `i`, wait until the watcher has seen it,
/// repeat. Latency is from the start of the put to the event's arrival.
async fn watch_latency<S: Store>(store: &S, prefix: &str, time: Duration) -> Histogram<u64> {
    let mut stream = store
        .watch(Watch::prefix(prefix))
        .await
        .expect("start watch");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<(u64, Instant)>(16);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = Arc::clone(&stop);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Some(batch) = stream.next_batch().await else {
                    break;
                };
                let at = Instant::now();
                for event in batch.expect("watch error").events {
                    let key = event.kv.key_str();
                    let seq: u64 = key[prefix.len()..].parse().expect("numeric key");
                    if seen_tx.send((seq, at)).await.is_err() {
                        return;
                    }
                }
            }
        })
    };
    let mut hist = histogram();
    let value = vec![b'w'; VALUE_SIZE];
    let deadline = Instant::now() + time;
    let mut seq: u64 = 0;
    while Instant::now() < deadline && (seq as usize) < MAX_WATCH_SAMPLES {
        let t0 = Instant::now();
        store
            .put(Put::new(format!("{prefix}{seq}"), value.clone()))
            .await
            .expect("put");
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("watch event within 10 s")
                .expect("watcher alive");
            if got == seq {
                hist.record(micros(at - t0)).expect("record");
                break;
            }
        }
        seq += 1;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.abort();
    hist
}

/// The key of member `i` of range group `group`.
fn range_key(prefix: &str, group: usize, i: usize) -> String {
    format!("{prefix}{group:02}/{i:02}")
}

/// Write the `RANGE_GROUPS` x `RANGE_GROUP_SIZE` keys the range rows read,
/// one writer per group (unmeasured).
async fn seed_range_keys<S: Store>(store: &S, prefix: &str) {
    let value = vec![b'r'; VALUE_SIZE];
    let mut tasks = Vec::with_capacity(RANGE_GROUPS);
    for group in 0..RANGE_GROUPS {
        let store = store.clone();
        let prefix = prefix.to_string();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..RANGE_GROUP_SIZE {
                store
                    .put(Put::new(range_key(&prefix, group, i), value.clone()))
                    .await
                    .expect("seed a range key");
            }
        }));
    }
    for task in tasks {
        task.await.expect("seeding task");
    }
}

/// `READERS` tasks reading, one linearizable request at a time, for `time`:
/// single keys (each task walks all the keys, starting at its own) or, with
/// `by_prefix`, whole groups of `RANGE_GROUP_SIZE` keys. Returns requests
/// per second, after checking every answer has what was seeded.
async fn read_throughput<S: Store>(
    store: &S,
    prefix: &str,
    by_prefix: bool,
    time: Duration,
) -> f64 {
    let start = Instant::now();
    let deadline = start + time;
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(READERS);
    for r in 0..READERS {
        let store = store.clone();
        let prefix = prefix.to_string();
        let done = Arc::clone(&done);
        tasks.push(tokio::spawn(async move {
            let mut n = r * RANGE_GROUP_SIZE;
            while Instant::now() < deadline {
                if by_prefix {
                    let group = n % RANGE_GROUPS;
                    let got = store
                        .get(Get::prefix(format!("{prefix}{group:02}/")))
                        .await
                        .expect("prefix read");
                    assert_eq!(got.kvs.len(), RANGE_GROUP_SIZE, "a whole group");
                } else {
                    let key = n % (RANGE_GROUPS * RANGE_GROUP_SIZE);
                    let key = range_key(&prefix, key / RANGE_GROUP_SIZE, key % RANGE_GROUP_SIZE);
                    let got = store.get(Get::key(key)).await.expect("key read");
                    assert_eq!(got.kvs.len(), 1, "a seeded key");
                }
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("reader task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `etcdctl check perf` at one load, against each server.
struct CheckPerfRow {
    load: &'static str,
    orchestrator: Option<CheckPerf>,
    etcd: Option<CheckPerf>,
}

/// What one `etcdctl check perf` run printed.
#[derive(Debug, Clone)]
struct CheckPerf {
    /// etcdctl's final verdict was PASS (and it exited 0).
    passed: bool,
    /// The figure of its "Throughput is N writes/s" (or "too low") line.
    throughput: Option<u64>,
    /// Its failed checks, or why it gave no verdict.
    problems: Vec<String>,
}

impl CheckPerf {
    fn cell(&self) -> String {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        match self.throughput {
            Some(t) => format!("{verdict}, {t} writes/s"),
            None => verdict.to_string(),
        }
    }
}

/// Run `etcdctl check perf --load=<load>` against `endpoints` and parse what
/// it printed. The child is killed if it outlives `CHECK_PERF_TIMEOUT` or
/// the bench.
async fn check_perf(column: Column, endpoints: &[String], load: &str) -> CheckPerf {
    let mut cmd = tokio::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["check", "perf", &format!("--load={load}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    println!(
        "[{}] etcdctl check perf --load={load} (about a minute)...",
        column.label()
    );
    let output = tokio::time::timeout(CHECK_PERF_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("etcdctl check perf ran longer than {CHECK_PERF_TIMEOUT:?}"))
        .expect("run etcdctl (is it on PATH? DROVER_BENCH_CHECK_PERF=off skips check perf)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut result = parse_check_perf(&stdout, output.status.success());
    if result.problems.is_empty() && !result.passed {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        result.problems.push(format!(
            "no verdict ({}): {}",
            output.status,
            last.unwrap_or("nothing on stderr").trim()
        ));
    }
    println!(
        "[{}] check perf --load={load}: {}{}",
        column.label(),
        result.cell(),
        if result.problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", result.problems.join("; "))
        }
    );
    result
}

/// The verdict, throughput and failed checks in `etcdctl check perf`'s
/// output, e.g. "PASS: Throughput is 150 writes/s" or "FAIL: Throughput too
/// low: 7012 writes/s", "Slowest request took too long: 0.61s", then "PASS"
/// or "FAIL" alone. Its progress bar redraws with carriage returns.
fn parse_check_perf(stdout: &str, exited_ok: bool) -> CheckPerf {
    let mut verdict = None;
    let mut throughput = None;
    let mut problems = Vec::new();
    for line in stdout.split(['\n', '\r']).map(str::trim) {
        match line {
            "PASS" => verdict = Some(true),
            "FAIL" => verdict = Some(false),
            _ => {}
        }
        if line.contains("Throughput")
            && let Some(figure) = line.strip_suffix(" writes/s")
        {
            throughput = figure.rsplit(' ').next().and_then(|n| n.parse().ok());
        }
        if line.starts_with("FAIL:") || line.contains("too long") {
            problems.push(line.to_string());
        }
    }
    CheckPerf {
        passed: verdict == Some(true) && exited_ok,
        throughput,
        problems,
    }
}

fn rows(embedded: &Results, orchestrator: Option<&Results>, etcd: Option<&Results>) -> Vec<Row> {
    let row = |name, unit, higher_is_better, f: fn(&Results) -> f64| Row {
        name,
        unit,
        higher_is_better,
        embedded: f(embedded),
        orchestrator: orchestrator.map(f),
        etcd: etcd.map(f),
    };
    vec![
        row("durable put throughput, 1 writer", "puts/s", true, |r| {
            r.put_1
        }),
        row("durable put throughput, 64 writers", "puts/s", true, |r| {
            r.put_64
        }),
        row("put latency p50, 1 writer", "µs", false, |r| r.put_p50_us),
        row("put latency p99, 1 writer", "µs", false, |r| r.put_p99_us),
        row(
            "CAS txn throughput, 16 tasks / 8 counters",
            "commits/s",
            true,
            |r| r.cas,
        ),
        row(
            "watch delivery latency p50 (put → event)",
            "µs",
            false,
            |r| r.watch_p50_us,
        ),
        row(
            "watch delivery latency p99 (put → event)",
            "µs",
            false,
            |r| r.watch_p99_us,
        ),
        row(
            "range reads (linearizable), single key, 64 readers",
            "reads/s",
            true,
            |r| r.get_key,
        ),
        row(
            "range reads (linearizable), 16-key prefix, 64 readers",
            "reads/s",
            true,
            |r| r.get_prefix,
        ),
    ]
}

/// Everything the report shows.
struct Report {
    /// Medians of the repeats.
    rows: Vec<Row>,
    checks: Vec<CheckPerfRow>,
    secs: f64,
    /// Each repeat's rows.
    per_repeat: Vec<Vec<Row>>,
}

fn ratio(r: Option<f64>) -> String {
    r.map(|a| format!("{a:.2}x"))
        .unwrap_or_else(|| "n/a".into())
}

fn value(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "n/a".into())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn render(report: &Report, load: (&str, &str)) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Store benchmark: embedded (in-process), orchestrator (served etcd API), etcd\n"
    );
    let _ = writeln!(
        out,
        "Each row runs {} s per store in the same process and run, the stores back to back \
         per row, {} time(s); the table shows the median of the repeats (load average {} \
         before, {} after). \"embedded\" is the embedded store (durable, on disk) inside the \
         bench process; \"orchestrator\" is `orchestrator serve` on its embedded store \
         (durable, on disk), reached over loopback through the etcd v3 API it serves; \
         \"etcd\" is a private one-member etcd. Both servers are driven by the same etcd \
         client code (`EtcdStore`). \"X vs etcd\" is X/etcd for throughputs and etcd/X for \
         latencies: above 1.00x X is better.\n",
        report.secs,
        report.per_repeat.len(),
        load.0,
        load.1,
    );
    let _ = writeln!(
        out,
        "| workload | unit | embedded | orchestrator | etcd | orchestrator vs etcd | embedded vs etcd |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            r.name,
            r.unit,
            r.embedded,
            value(r.orchestrator),
            value(r.etcd),
            ratio(r.orchestrator_vs_etcd()),
            ratio(r.embedded_vs_etcd()),
        );
    }
    for c in &report.checks {
        let cell = |p: &Option<CheckPerf>| p.as_ref().map_or("n/a".into(), CheckPerf::cell);
        let throughput = |p: &Option<CheckPerf>| p.as_ref().and_then(|p| p.throughput);
        let vs = match (throughput(&c.orchestrator), throughput(&c.etcd)) {
            (Some(o), Some(e)) if e > 0 => Some(o as f64 / e as f64),
            _ => None,
        };
        let _ = writeln!(
            out,
            "| `etcdctl check perf --load={}` | verdict, writes/s | n/a | {} | {} | {} | n/a |",
            c.load,
            cell(&c.orchestrator),
            cell(&c.etcd),
            ratio(vs),
        );
    }
    let problems: Vec<String> = report
        .checks
        .iter()
        .flat_map(|c| {
            [("orchestrator", &c.orchestrator), ("etcd", &c.etcd)]
                .into_iter()
                .filter_map(move |(who, p)| {
                    let p = p.as_ref()?;
                    (!p.problems.is_empty()).then(|| {
                        format!("- `--load={}` on {who}: {}", c.load, p.problems.join("; "))
                    })
                })
        })
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "\nFailed `check perf` checks:\n\n{}",
            problems.join("\n")
        );
    }
    if report.per_repeat.len() > 1 {
        let _ = writeln!(
            out,
            "\nEach repeat (orchestrator vs etcd / embedded vs etcd, per row in table order):\n"
        );
        for (i, rows) in report.per_repeat.iter().enumerate() {
            let cells: Vec<String> = rows
                .iter()
                .map(|r| {
                    format!(
                        "{} / {}",
                        ratio(r.orchestrator_vs_etcd()),
                        ratio(r.embedded_vs_etcd())
                    )
                })
                .collect();
            let _ = writeln!(out, "- repeat {}: {}", i + 1, cells.join(", "));
        }
    }
    render_targets(&mut out, report);
    out
}

/// The targets of the issues that asked for the columns.
fn render_targets(out: &mut String, report: &Report) {
    let rows = &report.rows;
    let (put_64, cas) = (&rows[1], &rows[4]);
    if rows
        .iter()
        .all(|r| r.orchestrator.is_some() && r.etcd.is_some())
    {
        let mut behind: Vec<String> = rows
            .iter()
            .filter(|r| r.orchestrator_vs_etcd().unwrap_or(0.0) < 1.0)
            .map(|r| r.name.to_string())
            .collect();
        // check perf throughput is capped by its load's rate: a server
        // matches etcd when it passes, or fails no worse than etcd.
        for c in &report.checks {
            if let (Some(o), Some(e)) = (&c.orchestrator, &c.etcd) {
                let matches = o.passed || (!e.passed && o.throughput >= e.throughput);
                if !matches {
                    behind.push(format!("check perf --load={}", c.load));
                }
            }
        }
        let w64 = put_64.orchestrator_vs_etcd().unwrap_or(0.0);
        let cas_x = cas.orchestrator_vs_etcd().unwrap_or(0.0);
        let _ = write!(
            out,
            "\nTargets, orchestrator vs etcd: at least etcd on every row: {}{}; \
             64-writer durable puts >= 2x etcd: {} ({w64:.2}x); \
             CAS txns >= 2x etcd: {} ({cas_x:.2}x)",
            met(behind.is_empty()),
            if behind.is_empty() {
                String::new()
            } else {
                format!(" (behind: {})", behind.join(", "))
            },
            met(w64 >= 2.0),
            met(cas_x >= 2.0),
        );
        let large = report.checks.iter().find(|c| c.load == "l");
        match large.map(|c| (&c.orchestrator, &c.etcd)) {
            Some((Some(o), Some(e))) => {
                let verdict = match (o.passed, e.passed) {
                    (true, _) => "met",
                    (false, true) => "not required (etcd passes it, the orchestrator does not)",
                    (false, false) => "NOT met",
                };
                let _ = writeln!(
                    out,
                    "; passes `check perf --load=l` where etcd fails: {verdict} \
                     (orchestrator {}, etcd {}).",
                    o.cell(),
                    e.cell()
                );
            }
            _ => {
                let _ = writeln!(out, "; `check perf --load=l` was not run.");
            }
        }
    }
    if rows.iter().all(|r| r.etcd.is_some()) {
        let every = rows
            .iter()
            .all(|r| r.embedded_vs_etcd().unwrap_or(0.0) >= 1.0);
        let w64 = put_64.embedded_vs_etcd().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nTargets, embedded vs etcd: embedded >= etcd on every row: {}; \
             64-writer durable throughput >= 3x etcd: {} ({w64:.2}x).",
            met(every),
            met(w64 >= 3.0),
        );
    }
}
