//! Store benchmark: the same workload on the embedded backend (durable, on
//! disk) and on a real etcd, side by side in one run.
//!
//! Run it with `cargo xtask bench store`, which starts a private etcd with its
//! data on the same disk as the embedded store's and sets
//! `DROVER_ETCD_ENDPOINTS`. Without that variable only the embedded column
//! is measured. `DROVER_BENCH_SECS` sets each row's duration (default 3 s);
//! `DROVER_BENCH_REPEAT` (or `--repeat N` after `cargo bench ... --`) how
//! many times every row runs (default 3): the table shows the median of the
//! repeats, and each repeat's numbers are printed as they come.
//!
//! Fairness on a small, shared machine: both stores are open for the whole
//! run and every workload runs on both back to back (alternating which one
//! goes first from repeat to repeat), after an unmeasured warm-up of the same
//! workload, so a change in machine load hits both columns alike. Before each
//! row the disk is flushed (`sync`) and the bench pauses briefly, so that no
//! row pays for writeback left by the one before it (etcd flushes its
//! backend lazily; other processes write too). Both backends first get the
//! same heavy warm-up, so rows measure stores in steady state. Every row uses
//! the same value size on both backends.
//!
//! Rows: durable put throughput with 1 and 64 concurrent writers, put
//! latency p50/p99 (1 writer), compare-and-swap txn throughput (16 tasks
//! incrementing 8 shared counters by mod-revision CAS), and watch delivery
//! latency p50/p99 (put start to event received). The table is printed and
//! written to `target/bench/store.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
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

/// One measured quantity on both backends.
struct Row {
    name: &'static str,
    unit: &'static str,
    /// Throughputs: higher is better. Latencies: lower is better.
    higher_is_better: bool,
    embedded: f64,
    etcd: Option<f64>,
}

impl Row {
    /// How many times better the embedded store is (>1 = embedded better).
    fn advantage(&self) -> Option<f64> {
        let etcd = self.etcd?;
        if self.higher_is_better {
            Some(self.embedded / etcd)
        } else {
            Some(etcd / self.embedded)
        }
    }
}

/// Results of one backend.
#[derive(Debug, Default, Clone, Copy)]
struct Results {
    put_1: f64,
    put_64: f64,
    put_p50_us: f64,
    put_p99_us: f64,
    cas: f64,
    watch_p50_us: f64,
    watch_p99_us: f64,
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

/// The workloads, each run on both backends back to back.
#[derive(Clone, Copy, Debug)]
enum Workload {
    Put1,
    Put64,
    Cas,
    Watch,
}

const WORKLOADS: [Workload; 4] = [
    Workload::Put1,
    Workload::Put64,
    Workload::Cas,
    Workload::Watch,
];

async fn async_main() {
    let secs: f64 = std::env::var("DROVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let repeat = repeats();
    let row_time = Duration::from_secs_f64(secs);
    let bench_dir = bench_dir();
    std::fs::create_dir_all(&bench_dir).expect("create the bench directory");

    let data = tempfile::Builder::new()
        .prefix("embedded-")
        .tempdir_in(&bench_dir)
        .expect("create the embedded store's directory");
    println!("embedded store: durable, data in {}", data.path().display());
    let embedded = open_embedded(data.path()).await;
    let etcd = match std::env::var("DROVER_ETCD_ENDPOINTS") {
        Ok(endpoints) if !endpoints.trim().is_empty() => {
            let endpoints: Vec<String> =
                endpoints.split(',').map(|s| s.trim().to_string()).collect();
            println!("etcd: {}", endpoints.join(","));
            let etcd = EtcdStore::connect(endpoints, EtcdConfig::default())
                .await
                .expect("connect to etcd");
            let prefix = format!("/bench/{}-{}/", std::process::id(), nanos());
            Some((etcd, prefix))
        }
        _ => {
            println!(
                "DROVER_ETCD_ENDPOINTS is not set: measuring the embedded store only \
                 (run `cargo xtask bench store` for the side-by-side comparison)"
            );
            None
        }
    };
    let load_before = load_average();
    println!("{repeat} repeat(s) of {secs} s per row and backend; load average {load_before}");

    warm_up(&embedded, "/bench/").await;
    if let Some((etcd, prefix)) = &etcd {
        warm_up(etcd, prefix).await;
    }
    let mut embedded_runs = vec![Results::default(); repeat];
    let mut etcd_runs = vec![Results::default(); repeat];
    for r in 0..repeat {
        for workload in WORKLOADS {
            // Alternate who goes first, so that neither always runs on the
            // machine the other one just heated up.
            let etcd_first = r % 2 == 1;
            if etcd_first && let Some((etcd, prefix)) = &etcd {
                run(etcd, prefix, r, workload, row_time, &mut etcd_runs[r]).await;
            }
            run(
                &embedded,
                "/bench/",
                r,
                workload,
                row_time,
                &mut embedded_runs[r],
            )
            .await;
            if !etcd_first && let Some((etcd, prefix)) = &etcd {
                run(etcd, prefix, r, workload, row_time, &mut etcd_runs[r]).await;
            }
        }
    }
    embedded.close().await.expect("close the embedded store");
    if let Some((etcd, prefix)) = &etcd {
        etcd.delete(Delete::prefix(prefix.clone()))
            .await
            .expect("clean up bench keys");
    }
    let load_after = load_average();

    let embedded_results = Results::median(&embedded_runs);
    let etcd_results = etcd.as_ref().map(|_| Results::median(&etcd_runs));
    let per_repeat: Vec<(Results, Option<Results>)> = embedded_runs
        .iter()
        .zip(&etcd_runs)
        .map(|(e, c)| (*e, etcd.as_ref().map(|_| *c)))
        .collect();
    let table = render(
        &rows(&embedded_results, etcd_results.as_ref()),
        secs,
        &per_repeat,
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

/// Run one workload on one backend (after its own short warm-up) and record
/// it in `results`.
async fn run<S: Store>(
    store: &S,
    prefix: &str,
    repeat: usize,
    workload: Workload,
    row_time: Duration,
    results: &mut Results,
) {
    let name = store.backend_name();
    let prefix = format!("{prefix}r{repeat}/");
    settle().await;
    let tag = format!("[{name} #{}]", repeat + 1);
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

fn rows(embedded: &Results, etcd: Option<&Results>) -> Vec<Row> {
    let row = |name, unit, higher_is_better, f: fn(&Results) -> f64| Row {
        name,
        unit,
        higher_is_better,
        embedded: f(embedded),
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
    ]
}

fn render(
    table: &[Row],
    secs: f64,
    per_repeat: &[(Results, Option<Results>)],
    load: (&str, &str),
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Store benchmark: embedded (durable, on disk) vs etcd\n"
    );
    let _ = writeln!(
        out,
        "Each row runs {secs} s per backend in the same process and run, both backends \
         back to back per row, {} time(s); the table shows the median of the repeats \
         (load average {} before, {} after). \
         \"embedded advantage\" is embedded/etcd for throughputs and etcd/embedded \
         for latencies: above 1.00x the embedded store is better.\n",
        per_repeat.len(),
        load.0,
        load.1,
    );
    let _ = writeln!(
        out,
        "| workload | unit | embedded | etcd | embedded advantage |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for r in table {
        let etcd = r
            .etcd
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| "n/a".into());
        let adv = r
            .advantage()
            .map(|a| format!("{a:.2}x"))
            .unwrap_or_else(|| "n/a".into());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} |",
            r.name, r.unit, r.embedded, etcd, adv
        );
    }
    if per_repeat.len() > 1 {
        let _ = writeln!(
            out,
            "\nEach repeat (embedded advantage per row, in table order):\n"
        );
        for (i, (embedded, etcd)) in per_repeat.iter().enumerate() {
            let advantages: Vec<String> = rows(embedded, etcd.as_ref())
                .iter()
                .map(|r| {
                    r.advantage()
                        .map(|a| format!("{a:.2}x"))
                        .unwrap_or_else(|| format!("{:.0}", r.embedded))
                })
                .collect();
            let _ = writeln!(out, "- repeat {}: {}", i + 1, advantages.join(", "));
        }
    }
    if table.iter().all(|r| r.etcd.is_some()) {
        let every = table.iter().all(|r| r.advantage().unwrap_or(0.0) >= 1.0);
        let w64 = table[1].advantage().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nTargets: embedded >= etcd on every row: {}; 64-writer durable throughput >= 3x etcd: {} ({w64:.2}x).",
            if every { "met" } else { "NOT met" },
            if w64 >= 3.0 { "met" } else { "NOT met" },
        );
    }
    out
}
