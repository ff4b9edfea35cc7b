//! Tracing: every term runs in a `term` span carrying the election prefix and
//! the fencing token (inside a `bucket` span for buckets).

#[path = "common/support.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use drover_election::buckets::{Bucket, BucketElector, BucketSet};
use drover_election::{Election, Elector, ElectorConfig, Term};
use drover_store::embedded::EmbeddedStore;
use parking_lot::Mutex;
use tokio::time::sleep;

/// Log lines written by the subscriber, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a subscriber for this (current-thread) test.
fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

fn config(identity: &str) -> ElectorConfig {
    support::paused_timing().with_identity(identity)
}

#[tokio::test(start_paused = true)]
async fn each_term_runs_in_a_span_with_the_election_and_token() {
    let (captured, _guard) = capture();
    let store = EmbeddedStore::in_memory();
    let prefix = "/drover/election/spans/";
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let elector = Elector::builder(Election::with_prefix(store, prefix).unwrap())
        .config(config("a").with_term_limit(Duration::from_secs(2)))
        .on_started_leading({
            let tokens = tokens.clone();
            move |term: Term<EmbeddedStore>| {
                tokens.lock().push(term.token());
                async move {
                    tracing::info!("leader work");
                    term.cancelled().await;
                }
            }
        })
        .build()
        .unwrap();
    let (shutdown, run) = support::spawn_run(&elector);
    sleep(Duration::from_secs(3)).await; // two terms (term limit 2 s)
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let tokens = tokens.lock().clone();
    assert!(tokens.len() >= 2, "{tokens:?}");
    let lines = captured.lines();
    for token in tokens {
        let term_span = format!("term{{election={prefix} token={token} ");
        for message in ["started leading", "leader work", "stopped leading"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&term_span) && l.contains(message)),
                "no {message:?} in {term_span}: {lines:#?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn bucket_terms_run_in_a_span_with_the_bucket_election_and_token() {
    let (captured, _guard) = capture();
    let store = EmbeddedStore::in_memory();
    let set = BucketSet::new("ctl", "queue", 2).unwrap();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let member = BucketElector::builder(store, "/drover/election/", set)
        .config(config("m"))
        .on_promoted({
            let tokens = tokens.clone();
            move |bucket: Bucket, term: Term<EmbeddedStore>| {
                tokens.lock().push((bucket.name.clone(), term.token()));
                async move { term.cancelled().await }
            }
        })
        .build()
        .unwrap();
    let (shutdown, run) = support::spawn_run(&member);
    sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let tokens = tokens.lock().clone();
    assert_eq!(tokens.len(), 2);
    let lines = captured.lines();
    for (name, token) in tokens {
        let span = format!(
            "bucket{{bucket={name}}}:term{{election=/drover/election/{name}/ token={token} "
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&span) && l.contains("started leading")),
            "no span {span}: {lines:#?}"
        );
    }
}
