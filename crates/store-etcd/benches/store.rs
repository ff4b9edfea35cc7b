//! Store benchmark: the same workload on the embedded backend (durable, on
//! disk) and on a real etcd, side by side in one run.
//!
//! Run it with `cargo xtask bench store`, which starts a private etcd with its
//! data on the same disk as the embedded store's and sets
//! `DROVER_ETCD_ENDPOINTS`. Without that variable only the embedded column
//! is measured. `DROVER_BENCH_SECS` sets each row's duration (default 3 s).
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async_main());
}

async fn async_main() {
    let secs: f64 = std::env::var("DROVER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let row_time = Duration::from_secs_f64(secs);
    let bench_dir = bench_dir();
    std::fs::create_dir_all(&bench_dir).expect("create the bench directory");

    let data = tempfile::Builder::new()
        .prefix("embedded-")
        .tempdir_in(&bench_dir)
        .expect("create the embedded store's directory");
    println!("embedded store: durable, data in {}", data.path().display());
    let embedded = open_embedded(data.path()).await;
    let embedded_results = run_all(&embedded, "/bench/", row_time).await;
    embedded.close().await.expect("close the embedded store");

    let etcd_results = match std::env::var("DROVER_ETCD_ENDPOINTS") {
        Ok(endpoints) if !endpoints.trim().is_empty() => {
            let endpoints: Vec<String> =
                endpoints.split(',').map(|s| s.trim().to_string()).collect();
            println!("etcd: {}", endpoints.join(","));
            let etcd = EtcdStore::connect(endpoints, EtcdConfig::default())
                .await
                .expect("connect to etcd");
            let prefix = format!("/bench/{}-{}/", std::process::id(), nanos());
            let results = run_all(&etcd, &prefix, row_time).await;
            etcd.delete(Delete::prefix(prefix))
                .await
                .expect("clean up bench keys");
            Some(results)
        }
        _ => {
            println!(
                "DROVER_ETCD_ENDPOINTS is not set: measuring the embedded store only \
                 (run `cargo xtask bench store` for the side-by-side comparison)"
            );
            None
        }
    };

    let table = render(&rows(&embedded_results, etcd_results.as_ref()), secs);
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

async fn run_all<S: Store>(store: &S, prefix: &str, row_time: Duration) -> Results {
    let name = store.backend_name();
    // Warm up connections, files and caches.
    put_throughput(
        store,
        &format!("{prefix}warm/"),
        4,
        Duration::from_millis(300),
    )
    .await;

    let (put_1, lat) = put_throughput(store, &format!("{prefix}p1/"), 1, row_time).await;
    println!("[{name}] put, 1 writer: {put_1:.0}/s");
    let (put_64, _) = put_throughput(store, &format!("{prefix}p64/"), 64, row_time).await;
    println!("[{name}] put, 64 writers: {put_64:.0}/s");
    let cas = cas_throughput(store, &format!("{prefix}cas/"), row_time).await;
    println!("[{name}] CAS txn, {CAS_TASKS} tasks: {cas:.0}/s");
    let watch = watch_latency(store, &format!("{prefix}watch/"), row_time).await;
    println!(
        "[{name}] watch delivery p50 {} us, p99 {} us ({} samples)",
        watch.value_at_quantile(0.5),
        watch.value_at_quantile(0.99),
        watch.len()
    );
    Results {
        put_1,
        put_64,
        put_p50_us: lat.value_at_quantile(0.5) as f64,
        put_p99_us: lat.value_at_quantile(0.99) as f64,
        cas,
        watch_p50_us: watch.value_at_quantile(0.5) as f64,
        watch_p99_us: watch.value_at_quantile(0.99) as f64,
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

fn render(rows: &[Row], secs: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Store benchmark: embedded (durable, on disk) vs etcd\n"
    );
    let _ = writeln!(
        out,
        "Each row runs {secs} s per backend in the same process and run. \
         \"embedded advantage\" is embedded/etcd for throughputs and etcd/embedded \
         for latencies: above 1.00x the embedded store is better.\n"
    );
    let _ = writeln!(
        out,
        "| workload | unit | embedded | etcd | embedded advantage |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for r in rows {
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
    if rows.iter().all(|r| r.etcd.is_some()) {
        let every = rows.iter().all(|r| r.advantage().unwrap_or(0.0) >= 1.0);
        let w64 = rows[1].advantage().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "\nTargets: embedded >= etcd on every row: {}; 64-writer durable throughput >= 3x etcd: {} ({w64:.2}x).",
            if every { "met" } else { "NOT met" },
            if w64 >= 3.0 { "met" } else { "NOT met" },
        );
    }
    out
}
