//! The election's behaviour against a real etcd, including interop with
//! `etcdctl elect` (etcd's Go `clientv3/concurrency` election).
//!
//! Skipped with a message when `DROVER_ETCD_ENDPOINTS` is unset (and failing
//! when `DROVER_REQUIRE_ETCD=1`). Real time: every wait is bounded, nothing
//! asserts how long something took.

#[path = "common/support.rs"]
mod support;

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_election::{Election, ElectionError, ElectorConfig, Observation, Term, TermEnd};
use drover_store::testing::unique_prefix;
use drover_store::{Compare, CompareOp, Get, Put, Store, Txn};
use drover_store_etcd::EtcdStore;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};

/// Lease 2 s, renew deadline 1 s, retry period 250 ms (etcd's minimum TTL
/// on the dev server is 1 s).
fn config() -> ElectorConfig {
    ElectorConfig::default().with_timing(
        Duration::from_secs(2),
        Duration::from_secs(1),
        Duration::from_millis(250),
    )
}

use drover_store_etcd::testing::shared_etcd as etcd;

#[tokio::test]
async fn etcd_one_leader_and_immediate_handover() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("one-leader");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut candidates, max_active) =
        spawn_exclusive_candidates(&store, &prefix, 3, config(), &tx);
    for _ in 0..3 {
        next_event(&mut rx, Duration::from_secs(15), is_started)
            .await
            .expect("someone leads");
        sleep(Duration::from_millis(300)).await;
        let leaders = leaders(&candidates);
        assert_eq!(leaders.len(), 1, "{leaders:?}");
        let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
        let leader = election.leader().await.unwrap().unwrap();
        assert_eq!(leader.value_str(), leaders[0]);
        stop_the_leader(&mut candidates).await;
    }
    assert_eq!(max_active.load(Ordering::SeqCst), 1);
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    assert_eq!(election.leader().await.unwrap(), None, "everyone resigned");
}

#[tokio::test]
async fn etcd_failover_after_a_crash() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("crash");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a_store = FaultyStore::new(store.clone());
    let a = spawn_candidate(a_store.clone(), &prefix, "a", config(), tx.clone());
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .expect("a leads");
    let b = spawn_candidate(store.clone(), &prefix, "b", config(), tx.clone());
    sleep(Duration::from_millis(500)).await;
    assert!(!b.elector.is_leader());
    a_store.faults.freeze(true);
    a.run.abort();
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b takes over once a's lease expires");
    assert!(b.elector.is_leader());
    b.stop().await;
}

#[tokio::test]
async fn etcd_paused_leader_cannot_write_after_waking() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("paused");
    let data = unique_prefix("paused-data");
    let history = History::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (outcome_tx, mut outcome_rx) = mpsc::unbounded_channel();
    let a_store = FaultyStore::new(store.clone());
    let a = {
        let (faults, history, data) = (a_store.faults.clone(), history.clone(), data.clone());
        spawn_candidate_with(
            a_store.clone(),
            &prefix,
            "a",
            config().with_drain_timeout(Duration::from_secs(10)),
            tx.clone(),
            move |term: Term<FaultyStore<EtcdStore>>| {
                let (faults, history, data) = (faults.clone(), history.clone(), data.clone());
                let outcome_tx = outcome_tx.clone();
                async move {
                    let put = Put::new(format!("{data}a-before"), "x");
                    let r = term.commit_fenced([put.into()]).await.unwrap();
                    history.record(r.revision, term.token(), "a");
                    // The process pauses: no keep-alives, work blocked.
                    faults.stall_keep_alives(true);
                    sleep(Duration::from_secs(4)).await;
                    faults.stall_keep_alives(false);
                    let late = Put::new(format!("{data}a-late"), "x");
                    let raw = term
                        .store()
                        .txn(term.fenced_txn([late.into()]))
                        .await
                        .unwrap();
                    if raw.succeeded {
                        history.record(raw.revision, term.token(), "a");
                    }
                    let _ =
                        outcome_tx.send((raw.succeeded, term.is_cancelled(), term.end_reason()));
                }
            },
        )
    };
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .unwrap();
    let b = {
        let (history, data) = (history.clone(), data.clone());
        spawn_candidate_with(
            store.clone(),
            &prefix,
            "b",
            config(),
            tx.clone(),
            move |term: Term<EtcdStore>| {
                let (history, data) = (history.clone(), data.clone());
                async move {
                    for n in 0..20 {
                        let put = Put::new(format!("{data}b-{n}"), "x");
                        match term.commit_fenced([put.into()]).await {
                            Ok(r) => history.record(r.revision, term.token(), "b"),
                            Err(_) => return,
                        }
                        sleep(Duration::from_millis(50)).await;
                    }
                    term.cancelled().await;
                }
            },
        )
    };
    next_event(&mut rx, Duration::from_secs(15), |e| started_by(e, "b"))
        .await
        .expect("b leads while a is paused");
    let (succeeded, cancelled, reason) = timeout(Duration::from_secs(15), outcome_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!succeeded, "the woken leader's fenced write must fail");
    assert!(cancelled, "its term's scope fired");
    assert!(
        matches!(
            reason,
            Some(TermEnd::LeaseLost | TermEnd::ValidityExpired | TermEnd::KeyDeleted)
        ),
        "{reason:?}"
    );
    let terms = history.check_no_overlap().unwrap();
    assert_eq!(terms, 2);
    a.shutdown.cancel();
    b.shutdown.cancel();
    a.run.await.unwrap().unwrap();
    b.run.await.unwrap().unwrap();
}

#[tokio::test]
async fn etcd_a_waiter_whose_lease_expired_never_wins() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("zombie");
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let leader_lease = grant_lease(&store, 2).await;
    let term = election.campaign(&leader_lease, "leader").await.unwrap();
    let waiter_store = FaultyStore::new(store.clone());
    let waiter_election = Election::with_prefix(waiter_store.clone(), prefix.as_str()).unwrap();
    let waiter_lease = grant_lease(&waiter_store, 2).await;
    let campaign = tokio::spawn(async move {
        let r = waiter_election.campaign(&waiter_lease, "waiter").await;
        (r.map(|t| t.token()), waiter_lease)
    });
    sleep(Duration::from_millis(300)).await;
    waiter_store.faults.stall_keep_alives(true);
    sleep(Duration::from_secs(4)).await;
    term.resign().await.unwrap();
    let (result, _lease) = timeout(Duration::from_secs(10), campaign)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(ElectionError::LeaseLost { .. })),
        "{result:?}"
    );
    assert_eq!(election.leader().await.unwrap(), None);
}

#[tokio::test]
async fn etcd_observe_proclaim_resign() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("observe");
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let mut observer = election.observe();
    let first = timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Observation::NoLeader);
    let lease = grant_lease(&store, 5).await;
    let term = election.campaign(&lease, "v1").await.unwrap();
    let seen = timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.leader().unwrap().token, term.token());
    term.proclaim("v2").await.unwrap();
    let seen = timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen.leader().unwrap().value, b"v2");
    term.resign().await.unwrap();
    let seen = timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen, Observation::NoLeader);
    let put = Put::new(format!("{prefix}after"), "x");
    assert!(term.commit_fenced([put.into()]).await.is_err());
    assert_eq!(
        store
            .get(Get::key(format!("{prefix}after")))
            .await
            .unwrap()
            .count,
        0
    );
}

// ---- interop with etcdctl elect ----

/// `etcdctl elect` as a child process; its stdout lines are read as they
/// come.
struct Etcdctl {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Etcdctl {
    fn spawn(endpoints: &[String], args: &[&str]) -> Etcdctl {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcdctl is on PATH");
        let stdout = child.stdout.take().unwrap();
        Etcdctl {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next (key, value) pair etcdctl prints, within `within`.
    async fn next_pair(&mut self, within: Duration) -> Option<(String, String)> {
        timeout(within, async {
            let key = self.lines.next_line().await.ok()??;
            let value = self.lines.next_line().await.ok()??;
            Some((key, value))
        })
        .await
        .ok()
        .flatten()
    }

    /// SIGINT: etcdctl resigns and exits.
    async fn interrupt(&mut self) {
        if let Some(pid) = self.child.id() {
            let status = Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status()
                .await
                .unwrap();
            assert!(status.success());
        }
        let _ = timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// etcdctl's election name for a unique prefix (`etcdctl elect NAME` uses
/// `NAME/`).
fn etcdctl_name(prefix: &str) -> &str {
    prefix.strip_suffix('/').unwrap()
}

#[tokio::test]
async fn etcdctl_listen_shows_a_drover_leaders_value() {
    let Some(store) = etcd().await else {
        return;
    };
    let endpoints = store.endpoints().to_vec();
    let prefix = unique_prefix("interop-listen");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let drover = spawn_candidate(store.clone(), &prefix, "drover-leader-1", config(), tx);
    next_event(&mut rx, Duration::from_secs(10), is_started)
        .await
        .unwrap();
    let term = drover.elector.current_term().unwrap();
    let mut listen = Etcdctl::spawn(&endpoints, &["elect", "-l", etcdctl_name(&prefix)]);
    let (key, value) = listen
        .next_pair(Duration::from_secs(10))
        .await
        .expect("etcdctl elect -l prints the leader");
    assert_eq!(key, term.key());
    assert_eq!(value, "drover-leader-1");
    // A proclaimed value shows up too.
    term.proclaim("proclaimed-by-drover").await.unwrap();
    let (_, value) = listen.next_pair(Duration::from_secs(10)).await.unwrap();
    assert_eq!(value, "proclaimed-by-drover");
    listen.interrupt().await;
    drover.stop().await;
}

#[tokio::test]
async fn etcdctl_and_drover_candidates_exclude_each_other() {
    let Some(store) = etcd().await else {
        return;
    };
    let endpoints = store.endpoints().to_vec();
    let prefix = unique_prefix("interop-exclude");
    let name = etcdctl_name(&prefix);

    // 1. etcdctl leads; Drover waits until it resigns.
    let mut go = Etcdctl::spawn(&endpoints, &["elect", name, "go-candidate"]);
    let (go_key, go_value) = go
        .next_pair(Duration::from_secs(10))
        .await
        .expect("etcdctl is elected in an empty election");
    assert!(go_key.starts_with(&prefix));
    assert_eq!(go_value, "go-candidate");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let drover = spawn_candidate(store.clone(), &prefix, "drover", config(), tx);
    let early = next_event(&mut rx, Duration::from_secs(3), is_started).await;
    assert!(early.is_none(), "drover must not lead while etcdctl does");
    let seen = drover
        .elector
        .leader()
        .expect("drover observes the Go leader");
    assert_eq!(seen.key, go_key);
    go.interrupt().await;
    next_event(&mut rx, Duration::from_secs(10), is_started)
        .await
        .expect("drover leads once etcdctl resigned");

    // 2. Drover leads; a new etcdctl candidate is not elected until Drover
    // resigns.
    let mut go2 = Etcdctl::spawn(&endpoints, &["elect", name, "go-second"]);
    assert!(
        go2.next_pair(Duration::from_secs(3)).await.is_none(),
        "etcdctl must not be elected while drover leads"
    );
    assert!(drover.elector.is_leader());
    drover.stop().await;
    let (_, value) = go2
        .next_pair(Duration::from_secs(10))
        .await
        .expect("etcdctl is elected once drover resigned");
    assert_eq!(value, "go-second");
    go2.interrupt().await;
}

#[tokio::test]
async fn etcd_buckets_balance_on_one_lease_per_member() {
    use drover_election::buckets::{Bucket, BucketElector, BucketSet};
    let Some(store) = etcd().await else {
        return;
    };
    let root = unique_prefix("buckets");
    let set = BucketSet::new("ctl", "queue", 5).unwrap();
    let mut members = Vec::new();
    for name in ["a", "b"] {
        let elector = BucketElector::builder(store.clone(), root.as_str(), set.clone())
            .config(config().with_identity(name))
            .on_promoted(|_bucket: Bucket, term: Term<EtcdStore>| async move {
                term.cancelled().await;
            })
            .build()
            .unwrap();
        let (shutdown, run) = spawn_run(&elector);
        members.push((elector, shutdown, run));
        sleep(Duration::from_secs(1)).await;
    }
    // Bounded wait for the balanced state: 3 + 2 of 5 buckets.
    let mut counts = Vec::new();
    for _ in 0..50 {
        counts = members.iter().map(|(e, _, _)| e.owned().len()).collect();
        if counts.iter().sum::<usize>() == 5 && counts.iter().all(|c| *c <= 3) {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counts.iter().sum::<usize>(), 5, "{counts:?}");
    assert!(counts.iter().all(|c| *c <= 3), "{counts:?}");
    for (elector, _, _) in &members {
        let owned = elector.owned();
        let leases: Vec<_> = owned
            .iter()
            .map(|b| elector.term(b.index).unwrap().lease_id())
            .collect();
        assert!(
            leases.windows(2).all(|w| w[0] == w[1]),
            "one lease per member"
        );
    }
    for (_, shutdown, _) in &members {
        shutdown.cancel();
    }
    for (_, _, run) in members {
        run.await.unwrap().unwrap();
    }
    let left = store.get(Get::prefix(root.as_str())).await.unwrap();
    assert_eq!(left.count, 0, "everything released");
}

#[tokio::test]
async fn etcd_term_limit_rotates_leaders_and_stopped_leading_only_for_leaders() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("term-limit");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let limited = config().with_term_limit(Duration::from_secs(1));
    let a = spawn_candidate(store.clone(), &prefix, "a", limited.clone(), tx.clone());
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .expect("a leads");
    let b = spawn_candidate(store.clone(), &prefix, "b", limited, tx.clone());
    let mut order = vec!["a".to_owned()];
    for _ in 0..4 {
        let (_, ev) = next_event(&mut rx, Duration::from_secs(10), is_started)
            .await
            .expect("the next term starts");
        let Ev::Started { who, .. } = ev else {
            unreachable!()
        };
        order.push(who);
    }
    assert_eq!(order, ["a", "b", "a", "b", "a"]);
    for c in [a, b] {
        c.stop().await;
    }

    // A candidate that never led reports no stopped-leading.
    let prefix = unique_prefix("never-led");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let leader = spawn_candidate(store.clone(), &prefix, "leader", config(), tx.clone());
    next_event(&mut rx, Duration::from_secs(10), |e| {
        started_by(e, "leader")
    })
    .await
    .expect("leader leads");
    let waiter = spawn_candidate(store.clone(), &prefix, "waiter", config(), tx.clone());
    sleep(Duration::from_millis(500)).await;
    waiter.stop().await;
    leader.stop().await;
    let mut stopped = Vec::new();
    while let Ok((_, ev)) = rx.try_recv() {
        if let Ev::Stopped { who, .. } = ev {
            stopped.push(who);
        }
    }
    assert_eq!(stopped, ["leader"]);
}

#[tokio::test]
async fn etcd_reenters_the_election_after_losing_leadership() {
    let Some(store) = etcd().await else {
        return;
    };
    reenters_after_losing_leadership(store, &unique_prefix("reenter"), config()).await;
}

/// Without release on cancel the stopped leader's lease is orphaned, not
/// revoked: its key stays until etcd expires the lease, then the next
/// candidate leads.
#[tokio::test]
async fn etcd_without_release_on_cancel_the_key_lapses_with_the_lease() {
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("no-release");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(
        store.clone(),
        &prefix,
        "a",
        config().with_release_on_cancel(false),
        tx.clone(),
    );
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "a"))
        .await
        .expect("a leads");
    let b = spawn_candidate(store.clone(), &prefix, "b", config(), tx.clone());
    sleep(Duration::from_millis(300)).await;
    a.stop().await;
    let election = Election::with_prefix(store.clone(), prefix.as_str()).unwrap();
    let lingering = election.leader().await.unwrap().expect("a's key lingers");
    assert_eq!(lingering.value_str(), "a");
    assert!(!b.elector.is_leader());
    next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b leads once etcd expired a's lease");
    let candidates = election.candidates().await.unwrap();
    assert!(
        candidates.iter().all(|c| c.key != lingering.key),
        "a's key expired with its lease: {candidates:?}"
    );
    b.stop().await;
}

const SIGKILL_TEST: &str = "a_sigkilled_leader_process_is_replaced_and_its_term_stays_fenced";

/// The leader is a real process killed with SIGKILL (no resign, no revoke):
/// the survivor takes over once etcd expires the lease, with a larger token,
/// and a write guarded by the dead leader's term is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_process_is_replaced_and_its_term_stays_fenced() {
    if let Some(prefix) = child::prefix() {
        return run_child_candidate(&prefix).await;
    }
    let Some(store) = etcd().await else {
        return;
    };
    let prefix = unique_prefix("sigkill");
    let (leader, child_term) = child::ChildCandidate::lead(
        &[SIGKILL_TEST, "--exact", "--nocapture"],
        &prefix,
        Duration::from_secs(20),
    )
    .await;
    let child::ChildTerm {
        token: child_token,
        lease: child_lease,
        key: child_key,
    } = child_term;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let survivor = spawn_candidate(store.clone(), &prefix, "survivor", config(), tx);
    sleep(Duration::from_millis(500)).await;
    assert!(!survivor.elector.is_leader(), "the live child still leads");

    leader.kill().await; // SIGKILL: no resign, no revoke.
    let (_, started) = next_event(&mut rx, Duration::from_secs(15), |ev| {
        started_by(ev, "survivor")
    })
    .await
    .expect("the survivor leads once etcd expires the killed leader's lease");
    let Ev::Started { token, .. } = started else {
        unreachable!()
    };
    assert!(
        token > child_token,
        "fencing tokens grow: {token} > {child_token}"
    );

    // What the killed leader would send if it came back: refused.
    let fenced = Txn::new()
        .when([
            Compare::create_revision(child_key.as_str(), CompareOp::Equal, child_token),
            Compare::lease(child_key.as_str(), CompareOp::Equal, child_lease),
        ])
        .and_then([Put::new(
            format!("{}work", prefix.trim_end_matches('/')),
            "from the dead leader",
        )
        .into()]);
    assert!(!store.txn(fenced).await.unwrap().succeeded);
    assert!(
        store
            .get(Get::key(child_key.as_str()))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    survivor.stop().await;
}

/// The child's side: lead, announce the term, write fenced until killed
/// (bounded: it gives up after 60 s if nobody kills it).
async fn run_child_candidate(prefix: &str) {
    let store = etcd().await.expect("the child needs the parent's etcd");
    child::run(
        store,
        prefix,
        config(),
        |term: Term<EtcdStore>| async move {
            // Outside the election prefix: keys under it are candidates.
            let key = format!("{}work", term.prefix().trim_end_matches('/'));
            while !term.is_cancelled() {
                let _ = term
                    .commit_fenced([Put::new(key.as_str(), "child").into()])
                    .await;
                sleep(Duration::from_millis(100)).await;
            }
        },
        Duration::from_secs(60),
    )
    .await;
}
