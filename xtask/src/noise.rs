//! A background writer that keeps the shared test etcd busy for the whole
//! `cargo xtask test` run.
//!
//! Tests share one etcd, so a test that assumes nobody else writes between
//! two of its calls ("the next revision is mine", "the revision did not
//! move") is wrong, yet passes whenever it happens to run alone. With this
//! writer bumping the revision every few milliseconds, such a test fails on
//! (nearly) every run instead of once in a while on a busy machine.
//!
//! The writer talks to etcd's JSON gateway (`/v3/kv/...`, on the client
//! port) over plain HTTP/1.0, so xtask needs no gRPC client. It writes only
//! under [`NOISE_PREFIX`], cycles through a fixed set of keys (so etcd's
//! size stays bounded), and mixes puts, range deletes and txns.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// Every key the writer touches starts with this.
pub(crate) const NOISE_PREFIX: &str = "/xtask-noise/";

/// Writer threads: concurrent requests let etcd batch them into one fsync,
/// so the revision moves faster than one client's round trips allow.
const THREADS: u32 = 4;

/// Distinct keys per thread; the writer cycles through them.
const KEYS_PER_THREAD: u64 = 16;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A running background writer; [`Noise::stop`] ends it and reports.
#[derive(Debug)]
pub(crate) struct Noise {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    started: std::time::SystemTime,
}

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: parking_lot::Mutex<Option<String>>,
}

/// What the writer did, for the end-of-run summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoiseReport {
    pub(crate) writes: u64,
    pub(crate) failures: u64,
    pub(crate) seconds: u64,
    pub(crate) first_error: Option<String>,
}

impl std::fmt::Display for NoiseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.writes / self.seconds.max(1);
        write!(
            f,
            "background writer: {} writes under {NOISE_PREFIX} in {} s (~{rate}/s), {} failed",
            self.writes, self.seconds, self.failures
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first failure: {e})")?;
        }
        Ok(())
    }
}

impl Noise {
    /// Start writing to the etcd at `endpoint` (`http://host:port`) at about
    /// `rate` writes per second in total (0 disables the writer).
    pub(crate) fn start(endpoint: &str, rate: u32) -> Result<Noise> {
        let addr: SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("parsing etcd's client address {endpoint:?}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::new();
        if rate > 0 {
            let pause = Duration::from_secs(1) * THREADS / rate;
            for thread in 0..THREADS {
                let stop = stop.clone();
                let counters = counters.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("xtask-noise-{thread}"))
                    .spawn(move || write_loop(addr, thread, pause, &stop, &counters))
                    .context("starting a background writer thread")?;
                threads.push(handle);
            }
        }
        Ok(Noise {
            stop,
            counters,
            threads,
            started: std::time::SystemTime::now(),
        })
    }

    /// Stop the writer (waiting for in-flight requests) and report.
    pub(crate) fn stop(mut self) -> NoiseReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        NoiseReport {
            writes: self.counters.ok.load(Ordering::SeqCst),
            failures: self.counters.failed.load(Ordering::SeqCst),
            seconds: self.started.elapsed().unwrap_or_default().as_secs(),
            first_error: self.counters.first_error.lock().clone(),
        }
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn write_loop(addr: SocketAddr, thread: u32, pause: Duration, stop: &AtomicBool, c: &Counters) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) && !crate::signals::interrupted() {
        let (path, body) = request(thread, n);
        match post(addr, path, &body) {
            Ok(()) => {
                c.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                c.first_error
                    .lock()
                    .get_or_insert_with(|| format!("{path}: {e:#}"));
                // A failing etcd (e.g. at shutdown) is not hammered.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        n += 1;
        std::thread::sleep(pause);
    }
}

/// The `n`th request of `thread`: mostly puts, every 8th a range delete of
/// the thread's keys, every 8th (offset) a txn that puts two keys at once.
fn request(thread: u32, n: u64) -> (&'static str, String) {
    let dir = format!("{NOISE_PREFIX}{thread}/");
    let key = |i: u64| format!("{dir}{:02}", i % KEYS_PER_THREAD);
    let put = |k: &str| {
        format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(k.as_bytes()),
            base64(n.to_string().as_bytes())
        )
    };
    match n % 8 {
        3 => {
            // [dir, dir with its last byte incremented): the thread's keys.
            let mut end = dir.clone().into_bytes();
            *end.last_mut().expect("non-empty") += 1;
            let body = format!(
                r#"{{"key":"{}","range_end":"{}"}}"#,
                base64(dir.as_bytes()),
                base64(&end)
            );
            ("/v3/kv/deleterange", body)
        }
        7 => {
            let (a, b) = (key(n), key(n + 1));
            let body = format!(
                r#"{{"compare":[{{"key":"{}","target":"VERSION","result":"GREATER","version":"-1"}}],"success":[{{"request_put":{}}},{{"request_put":{}}}]}}"#,
                base64(a.as_bytes()),
                put(&a),
                put(&b)
            );
            ("/v3/kv/txn", body)
        }
        _ => ("/v3/kv/put", put(&key(n))),
    }
}

/// POST a JSON body to etcd's gateway; Ok on HTTP 200.
fn post(addr: SocketAddr, path: &str, body: &str) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.starts_with("HTTP/1.") && status.contains(" 200 "),
        "etcd answered {status:?}: {}",
        response.split("\r\n\r\n").nth(1).unwrap_or_default()
    );
    Ok(())
}

/// Standard base64 with padding (the gateway's encoding of `bytes` fields).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn requests_stay_under_the_noise_prefix_and_mix_kinds() {
        let mut paths = std::collections::BTreeSet::new();
        for n in 0..16 {
            let (path, body) = request(2, n);
            paths.insert(path);
            assert!(body.contains(&base64(format!("{NOISE_PREFIX}2/").as_bytes())[..12]));
        }
        assert_eq!(
            paths.into_iter().collect::<Vec<_>>(),
            ["/v3/kv/deleterange", "/v3/kv/put", "/v3/kv/txn"]
        );
    }

    /// Starts a real etcd (skipped where etcd is not installed, unless
    /// DROVER_REQUIRE_ETCD=1) and checks the writer really moves its revision.
    #[test]
    fn writer_moves_a_real_etcd_revision_and_reports() {
        let parent = tempfile::tempdir().unwrap();
        let Some(etcd) = crate::etcd::tests::start_for_test(parent.path()) else {
            return;
        };
        let noise = Noise::start(etcd.endpoint(), 200).unwrap();
        // Bounded: at most 20 s for 20 writes at 200/s.
        let deadline = std::time::SystemTime::now() + Duration::from_secs(20);
        while noise.counters.ok.load(Ordering::SeqCst) < 20
            && std::time::SystemTime::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let report = noise.stop();
        assert!(report.writes >= 20, "{report}");
        assert_eq!(report.failures, 0, "{report}");
    }
}
