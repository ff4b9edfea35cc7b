//! Shared test support: an elector harness that records lifecycle events,
//! and a history checker for fenced writes (the fault-injecting store is
//! drover-store's `testing::FaultyStore`).
#![allow(dead_code, unreachable_pub)] // each test binary uses a subset; items are shared by path

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_election::{Election, Elector, ElectorConfig, Term, TermEnd, TermSummary};
use drover_store::{Revision, Store};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use drover_store::testing::FaultyStore;

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

/// A leader in a child process, for crashes with real signals: the test or
/// bench binary re-executes itself with [`child::PREFIX_VAR`] set, and that
/// process runs [`child::run`] instead of its usual body. It campaigns when
/// the parent says `GO` on its stdin (so the parent chooses when its lease is
/// granted), prints its term once it leads and a line per acknowledged
/// keep-alive, and the parent kills it with SIGKILL: no resign, no revoke,
/// no goodbye, exactly like a crashed machine.
pub mod child {
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::Duration;

    use drover_election::{Election, ElectionMetrics, Elector, ElectorConfig, Term};
    use drover_store::Store;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::process::{Child, ChildStdout, Command};
    use tokio::sync::mpsc;
    use tokio::time::{Instant, timeout};

    /// Set in the child: the election prefix it campaigns in.
    pub const PREFIX_VAR: &str = "DROVER_ELECTION_CHILD_PREFIX";
    const READY: &str = "CHILD READY";
    const GO: &str = "GO";
    const LEADING: &str = "CHILD LEADING ";
    const KEEP_ALIVE: &str = "CHILD KEEPALIVE";

    /// The prefix to campaign in when this process is a child candidate.
    pub fn prefix() -> Option<String> {
        std::env::var(PREFIX_VAR).ok()
    }

    /// A process's output lines, each stamped when it was read (by a task
    /// of its own, so a busy reader does not make lines look late). Ends at
    /// the process's end of output.
    pub fn stamped_lines(stdout: ChildStdout) -> mpsc::UnboundedReceiver<(Instant, String)> {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The child's term, as it announced it.
    #[derive(Clone, Debug)]
    pub struct ChildTerm {
        pub token: i64,
        pub lease: i64,
        pub key: String,
    }

    /// A child candidate process (killed when dropped).
    pub struct ChildCandidate {
        child: Child,
        lines: mpsc::UnboundedReceiver<(Instant, String)>,
    }

    impl ChildCandidate {
        /// Re-executes this binary with `args` as a candidate in `prefix`;
        /// it waits for [`ChildCandidate::go`].
        pub fn spawn(args: &[&str], prefix: &str) -> ChildCandidate {
            let mut child = Command::new(std::env::current_exe().expect("own executable"))
                .args(args)
                .env(PREFIX_VAR, prefix)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("re-run this binary as a child candidate");
            let lines = stamped_lines(child.stdout.take().expect("piped stdout"));
            ChildCandidate { child, lines }
        }

        /// Waits (at most `within`) until the child is connected and waits
        /// for [`ChildCandidate::go`].
        pub async fn ready(&mut self, within: Duration) {
            timeout(within, async {
                while let Some((_, line)) = self.lines.recv().await {
                    if line == READY {
                        return;
                    }
                }
                panic!("the child exited before it was ready");
            })
            .await
            .expect("the child is ready in time");
        }

        /// Lets the child grant its lease and campaign.
        pub async fn go(&mut self) {
            let stdin = self.child.stdin.as_mut().expect("piped stdin");
            stdin
                .write_all(format!("{GO}\n").as_bytes())
                .await
                .expect("tell the child to go");
            stdin.flush().await.expect("tell the child to go");
        }

        /// Waits (at most `within`) until the child leads.
        pub async fn leading(&mut self, within: Duration) -> ChildTerm {
            let leading = timeout(within, async {
                while let Some((_, line)) = self.lines.recv().await {
                    if let Some(rest) = line.strip_prefix(LEADING) {
                        return rest.to_owned();
                    }
                }
                panic!("the child exited without leading");
            })
            .await
            .expect("the child leads in time");
            let mut fields = leading.split(' ');
            ChildTerm {
                token: fields.next().unwrap().parse().unwrap(),
                lease: fields.next().unwrap().parse().unwrap(),
                key: fields.next().unwrap().to_owned(),
            }
        }

        /// Starts a child candidate in `prefix` and waits (at most `within`)
        /// until it leads.
        pub async fn lead(
            args: &[&str],
            prefix: &str,
            within: Duration,
        ) -> (ChildCandidate, ChildTerm) {
            let mut child = ChildCandidate::spawn(args, prefix);
            child.ready(within).await;
            child.go().await;
            let term = child.leading(within).await;
            (child, term)
        }

        /// Waits (at most `within`) for the child's next acknowledged
        /// keep-alive; returns when its line was read.
        pub async fn next_keep_alive(&mut self, within: Duration) -> Instant {
            timeout(within, async {
                while let Some((at, line)) = self.lines.recv().await {
                    if line.starts_with(KEEP_ALIVE) {
                        return at;
                    }
                }
                panic!("the child exited");
            })
            .await
            .expect("the child keeps its lease alive")
        }

        /// SIGKILL, then reap the process. Returns when the line of the last
        /// keep-alive it acknowledged, if any, was read, among those not yet
        /// taken by [`ChildCandidate::next_keep_alive`].
        pub async fn kill(mut self) -> Option<Instant> {
            self.child.start_kill().expect("SIGKILL the child");
            self.child.wait().await.expect("reap the child");
            let mut last = None;
            while let Some((at, line)) = self.lines.recv().await {
                if line.starts_with(KEEP_ALIVE) {
                    last = Some(at);
                }
            }
            last
        }
    }

    /// Prints a line per acknowledged keep-alive (stdout is line-buffered).
    struct PrintKeepAlives;

    impl ElectionMetrics for PrintKeepAlives {
        fn keep_alive_rtt(&self, _election: &str, _rtt: Duration) {
            println!("{KEEP_ALIVE}");
        }
    }

    /// The child's side: waits for `GO`, campaigns in `prefix`, announces
    /// its term, runs `work` in it and exits after `lifetime` if nobody
    /// killed it.
    pub async fn run<S, F, Fut>(
        store: S,
        prefix: &str,
        config: ElectorConfig,
        work: F,
        lifetime: Duration,
    ) where
        S: Store,
        F: Fn(Term<S>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        println!("{READY}");
        let said = timeout(
            lifetime,
            tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            }),
        )
        .await;
        if !matches!(said, Ok(Ok(Ok(ref line))) if line.trim_end() == GO) {
            return;
        }
        let work = Arc::new(work);
        let elector = Elector::builder(Election::with_prefix(store, prefix).unwrap())
            .config(config.with_identity("child"))
            .metrics(Arc::new(PrintKeepAlives))
            .on_started_leading(move |term: Term<S>| {
                println!(
                    "{LEADING}{} {} {}",
                    term.token(),
                    term.lease_id(),
                    term.key()
                );
                work(term)
            })
            .build()
            .unwrap();
        let (_shutdown, _run) = super::spawn_run(&elector);
        tokio::time::sleep(lifetime).await;
    }
}
