//! Deterministic election tests on the embedded backend with paused time.

#[path = "common/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drover_election::{
    Election, ElectionError, Elector, ElectorConfig, OnLoss, RegistryMetrics, Term, TermEnd,
};
use drover_metrics::MetricsRegistry;
use drover_store::embedded::EmbeddedStore;
use drover_store::{Get, KeyRange, Put, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "/drover/election/test/";
const TTL: Duration = Duration::from_secs(3);

fn config() -> ElectorConfig {
    paused_timing()
}

fn stopped_count(events: &[(Instant, Ev)], name: &str) -> usize {
    events
        .iter()
        .filter(|(_, e)| matches!(e, Ev::Stopped { who, .. } if who == name))
        .count()
}

fn drain(rx: &mut Events) -> Vec<(Instant, Ev)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn exactly_one_leader_among_k_candidates() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut candidates, max_active) = spawn_exclusive_candidates(&store, PREFIX, 5, config(), &tx);
    // Hand leadership over four times; at every sample exactly one leads.
    for round in 0..4 {
        next_event(&mut rx, Duration::from_secs(10), is_started)
            .await
            .expect("someone leads");
        for _ in 0..6 {
            sleep(Duration::from_secs(1)).await;
            let leaders = leaders(&candidates);
            assert_eq!(leaders.len(), 1, "round {round}: leaders {leaders:?}");
            let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
            let leader = election.leader().await.unwrap().expect("a leader key");
            assert_eq!(leader.value_str(), leaders[0]);
            // Everyone's observer agrees.
            for c in &candidates {
                if let Some(seen) = c.elector.leader() {
                    assert_eq!(seen.token, leader.token);
                }
            }
        }
        stop_the_leader(&mut candidates).await;
    }
    assert_eq!(
        max_active.load(Ordering::SeqCst),
        1,
        "leader work never overlapped"
    );
    for c in &candidates {
        c.shutdown.cancel();
    }
    for c in candidates {
        c.run.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn failover_after_a_crash_within_the_lease_ttl() {
    let shared = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a_store = FaultyStore::new(shared.clone());
    let a = spawn_candidate(a_store.clone(), PREFIX, "a", config(), tx.clone());
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .expect("a leads first");
    let b = spawn_candidate(shared.clone(), PREFIX, "b", config(), tx.clone());
    sleep(Duration::from_secs(5)).await;
    assert!(a.elector.is_leader() && !b.elector.is_leader());

    // Crash a: nothing it sends reaches the store any more (no revoke, no
    // resign, no keep-alive), and its tasks die.
    a_store.faults.freeze(true);
    a.run.abort();
    let crashed = Instant::now();
    let (took_over, ev) = next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b takes over");
    let failover = took_over - crashed;
    assert!(
        failover <= TTL,
        "failover took {failover:?}, more than the TTL {TTL:?}"
    );
    let Ev::Started { token, .. } = ev else {
        unreachable!()
    };
    assert!(b.elector.is_leader());
    assert_eq!(b.elector.current_term().unwrap().token(), token);
    // The crashed elector's handle does not claim leadership any more.
    assert!(!a.elector.is_leader());
    assert!(a.elector.check_health(Duration::ZERO).is_ok());
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn graceful_resign_hands_over_immediately() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(store.clone(), PREFIX, "a", config(), tx.clone());
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    let b = spawn_candidate(store.clone(), PREFIX, "b", config(), tx.clone());
    sleep(Duration::from_secs(2)).await;

    let resigned = Instant::now();
    a.shutdown.cancel();
    let (at, _) = next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b leads");
    // No timer of the election (retry 500 ms, TTL 3 s) was needed: the
    // handover happened without tokio time advancing by a retry period.
    assert!(
        at - resigned < Duration::from_millis(500),
        "handover waited {:?}",
        at - resigned
    );
    a.run.await.unwrap().unwrap();
    b.stop().await;
}

#[tokio::test(start_paused = true)]
async fn without_release_on_cancel_the_next_leader_waits_for_the_lease() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(
        store.clone(),
        PREFIX,
        "a",
        config().with_release_on_cancel(false),
        tx.clone(),
    );
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    let b = spawn_candidate(store.clone(), PREFIX, "b", config(), tx.clone());
    sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    a.stop().await;
    let (at, _) = next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b leads once a's lease lapsed");
    let waited = at - stopped;
    // Not released: b waited for the store to expire a's lease (TTL after
    // its last keep-alive, i.e. more than TTL minus one keep-alive interval).
    assert!(
        waited > TTL - Duration::from_millis(500) && waited <= TTL,
        "waited {waited:?}"
    );
    b.stop().await;
}

/// Stopped-leading fires only for a process that led, and only after its
/// work drained; with release on cancel the key is deleted only after that
/// drain, so the next candidate starts after it (and long before the lease
/// could have expired).
#[tokio::test(start_paused = true)]
async fn stopped_leading_and_release_come_after_the_drain_and_only_for_leaders() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let drained_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let a = {
        let drained_at = drained_at.clone();
        spawn_candidate_with(
            store.clone(),
            PREFIX,
            "a",
            config(),
            tx.clone(),
            move |term: Term<EmbeddedStore>| {
                let drained_at = drained_at.clone();
                async move {
                    term.cancelled().await;
                    // Cleanup takes a while; stopped-leading and the
                    // release must wait for it.
                    sleep(Duration::from_millis(1500)).await;
                    *drained_at.lock() = Some(Instant::now());
                }
            },
        )
    };
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    let b = spawn_candidate(store.clone(), PREFIX, "b", config(), tx.clone());
    let c = spawn_candidate(store.clone(), PREFIX, "c", config(), tx.clone());
    sleep(Duration::from_secs(3)).await;

    // c never led: stopping it reports nothing.
    c.stop().await;
    sleep(Duration::from_secs(1)).await;
    let events = drain(&mut rx);
    assert_eq!(stopped_count(&events, "c"), 0);
    assert!(!events.iter().any(|(_, e)| started_by(e, "c")));

    let stopped = Instant::now();
    a.shutdown.cancel();
    let (stopped_at, ev) = next_event(
        &mut rx,
        Duration::from_secs(15),
        |e| matches!(e, Ev::Stopped { who, .. } if who == "a"),
    )
    .await
    .expect("a reports stopped leading");
    let drained = drained_at.lock().expect("the work drained first");
    assert!(stopped_at >= drained);
    let Ev::Stopped { summary, .. } = ev else {
        unreachable!()
    };
    assert_eq!(summary.reason, TermEnd::Shutdown);
    assert!(summary.drained);
    let (b_started, _) = next_event(&mut rx, Duration::from_secs(10), |e| started_by(e, "b"))
        .await
        .expect("b leads");
    assert!(b_started >= drained, "released only after the drain");
    assert!(
        b_started - stopped < TTL,
        "a resigned: b did not wait for a's lease to expire"
    );
    a.run.await.unwrap().unwrap();
    b.stop().await;
    // Everyone released: the election is empty.
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    assert_eq!(election.leader().await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn work_that_ignores_cancellation_is_aborted_at_the_drain_deadline() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let config = config().with_drain_timeout(Duration::from_secs(1));
    let a = spawn_candidate_with(
        store.clone(),
        PREFIX,
        "a",
        config,
        tx.clone(),
        |_term: Term<EmbeddedStore>| async move {
            sleep(Duration::from_secs(3600)).await;
        },
    );
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    a.shutdown.cancel();
    let (_, ev) = next_event(&mut rx, Duration::from_secs(5), |e| {
        matches!(e, Ev::Stopped { .. })
    })
    .await
    .expect("stopped after the drain deadline");
    let Ev::Stopped { summary, .. } = ev else {
        unreachable!()
    };
    assert!(!summary.drained);
    a.run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn term_limit_rotates_leaders() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let config = config().with_term_limit(Duration::from_secs(4));
    let a = spawn_candidate(store.clone(), PREFIX, "a", config.clone(), tx.clone());
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    let b = spawn_candidate(store.clone(), PREFIX, "b", config.clone(), tx.clone());
    let mut order = vec!["a".to_owned()];
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let (_, ev) = next_event(&mut rx, Duration::from_secs(10), is_started)
            .await
            .expect("the next term starts");
        let Ev::Started { who, token } = ev else {
            unreachable!()
        };
        order.push(who);
        tokens.push(token);
    }
    assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens increase across terms: {tokens:?}"
    );
    for c in [a, b] {
        c.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn zero_term_limit_means_unlimited() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(store.clone(), PREFIX, "a", config(), tx.clone());
    let b = spawn_candidate(store.clone(), PREFIX, "b", config(), tx.clone());
    let (_, first) = next_event(&mut rx, Duration::from_secs(5), is_started)
        .await
        .unwrap();
    sleep(Duration::from_secs(120)).await;
    let events = drain(&mut rx);
    assert!(
        !events.iter().any(|(_, e)| is_started(e)),
        "one term for two minutes, after {first:?}"
    );
    assert_eq!([&a, &b].iter().filter(|c| c.elector.is_leader()).count(), 1);
    for c in [a, b] {
        c.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reenters_the_election_after_losing_leadership() {
    reenters_after_losing_leadership(EmbeddedStore::in_memory(), PREFIX, config()).await;
}

#[tokio::test(start_paused = true)]
async fn loss_can_be_fatal() {
    let shared = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a_store = FaultyStore::new(shared.clone());
    let a = spawn_candidate(
        a_store.clone(),
        PREFIX,
        "a",
        config().with_on_loss(OnLoss::Fatal),
        tx.clone(),
    );
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();
    a_store.faults.stall_keep_alives(true);
    let result = tokio::time::timeout(Duration::from_secs(10), a.run)
        .await
        .expect("run returns")
        .unwrap();
    assert!(
        matches!(result, Err(ElectionError::LeadershipLost { .. })),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_lease_expired_never_reports_winning() {
    let shared = EmbeddedStore::in_memory();
    let election = Election::with_prefix(shared.clone(), PREFIX).unwrap();
    let leader_lease = grant_lease(&shared, 3).await;
    let term = election.campaign(&leader_lease, "leader").await.unwrap();

    let waiter_store = FaultyStore::new(shared.clone());
    let waiter_election = Election::with_prefix(waiter_store.clone(), PREFIX).unwrap();
    let waiter_lease = grant_lease(&waiter_store, 3).await;
    let campaign = tokio::spawn(async move {
        let result = waiter_election.campaign(&waiter_lease, "waiter").await;
        (result, waiter_lease)
    });
    sleep(Duration::from_secs(1)).await;
    waiter_store.faults.stall_keep_alives(true);
    sleep(Duration::from_secs(5)).await; // the waiter's lease expires
    term.resign().await.unwrap(); // the waiter's predecessor goes away
    let (result, _lease) = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("the campaign returns")
        .unwrap();
    assert!(
        matches!(result, Err(ElectionError::LeaseLost { .. })),
        "a zombie waiter must not win: {result:?}"
    );
    assert_eq!(election.leader().await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_key_is_deleted_reports_it() {
    let store = EmbeddedStore::in_memory();
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let l1 = grant_lease(&store, 5).await;
    let _term = election.campaign(&l1, "one").await.unwrap();
    let l2 = grant_lease(&store, 5).await;
    let key = election.candidate_key(l2.id());
    let waiter = {
        let election = election.clone();
        tokio::spawn(async move { election.campaign(&l2, "two").await.map(|_| ()) })
    };
    sleep(Duration::from_millis(100)).await;
    store
        .delete(drover_store::Delete::key(key.clone()))
        .await
        .unwrap();
    let result = waiter.await.unwrap();
    assert!(
        matches!(result, Err(ElectionError::CandidacyLost { key: ref k }) if *k == key),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fenced_writes_fail_once_the_term_is_over() {
    let store = EmbeddedStore::in_memory();
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let lease = grant_lease(&store, 5).await;
    let term = election.campaign(&lease, "me").await.unwrap();
    assert_eq!(term.key(), election.candidate_key(lease.id()));
    assert_eq!(term.key(), format!("{PREFIX}{:x}", lease.id()));
    let ok = term
        .commit_fenced([Put::new("/work/a", "1").into()])
        .await
        .unwrap();
    assert!(ok.succeeded);

    // A stale handle: the term is resigned elsewhere (another clone).
    let stale = term.clone();
    term.resign().await.unwrap();
    assert!(stale.is_cancelled());
    let refused = stale.commit_fenced([Put::new("/work/a", "2").into()]).await;
    assert!(matches!(refused, Err(ElectionError::TermEnded { .. })));
    // Even bypassing the local check, the store refuses the guarded txn.
    let raw = store
        .txn(stale.fenced_txn([Put::new("/work/a", "3").into()]))
        .await
        .unwrap();
    assert!(!raw.succeeded);
    let value = store.get(Get::key("/work/a")).await.unwrap();
    assert_eq!(value.kvs[0].value, b"1");

    // The next term has a larger token.
    let next = election.campaign(&lease, "me").await.unwrap();
    assert!(next.token() > term.token());
    assert_eq!(next.guard().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn proclaim_updates_the_value_and_observers_see_it() {
    let store = EmbeddedStore::in_memory();
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let mut observer = election.observe();
    expect_no_leader(&mut observer).await;
    let lease = grant_lease(&store, 5).await;
    let term = election.campaign(&lease, "v1").await.unwrap();
    let seen = expect_leader(&mut observer).await;
    assert_eq!(
        (seen.value_str().as_ref(), seen.token),
        ("v1", term.token())
    );
    assert_eq!(seen.id, format!("{:x}", lease.id()));
    term.proclaim("v2").await.unwrap();
    let seen = expect_leader(&mut observer).await;
    assert_eq!(
        (seen.value_str().as_ref(), seen.token),
        ("v2", term.token())
    );
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"v2");
    term.resign().await.unwrap();
    expect_no_leader(&mut observer).await;
    // Proclaiming after the term ended is refused.
    assert!(term.proclaim("v3").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn observer_reports_every_handover_in_order_across_a_compaction() {
    let store = EmbeddedStore::in_memory();
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let mut observer = election.observe();
    expect_no_leader(&mut observer).await;
    let l1 = grant_lease(&store, 5).await;
    let l2 = grant_lease(&store, 5).await;
    let t1 = election.campaign(&l1, "one").await.unwrap();
    let waiting = {
        let election = election.clone();
        tokio::spawn(async move {
            let t = election.campaign(&l2, "two").await.unwrap();
            (t, l2)
        })
    };
    let first = observer.next().await.unwrap().unwrap();
    assert_eq!(first.leader().unwrap().value, b"one");
    // Noise elsewhere, then compact everything: an established watch keeps
    // going (a watch set up after the compaction is covered by
    // `observer_lists_again_after_a_compacted_gap`).
    for i in 0..20 {
        store
            .put(Put::new(format!("/noise/{i}"), "x"))
            .await
            .unwrap();
    }
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();
    t1.resign().await.unwrap();
    let (t2, _l2) = waiting.await.unwrap();
    let second = observer.next().await.unwrap().unwrap();
    assert_eq!(second.leader().unwrap().value, b"two");
    assert_eq!(second.leader().unwrap().token, t2.token());
    t2.resign().await.unwrap();
    expect_no_leader(&mut observer).await;
}

#[tokio::test(start_paused = true)]
async fn cancelled_campaign_withdraws_its_key() {
    let store = EmbeddedStore::in_memory();
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let l1 = grant_lease(&store, 5).await;
    let _t1 = election.campaign(&l1, "one").await.unwrap();
    let l2 = grant_lease(&store, 5).await;
    let cancel = CancellationToken::new();
    let waiter = {
        let (election, cancel) = (election.clone(), cancel.clone());
        tokio::spawn(async move {
            election
                .campaign_until(&l2, "two", &cancel)
                .await
                .map(|_| ())
        })
    };
    sleep(Duration::from_millis(100)).await;
    assert_eq!(election.candidates().await.unwrap().len(), 2);
    cancel.cancel();
    assert!(matches!(
        waiter.await.unwrap(),
        Err(ElectionError::Cancelled)
    ));
    assert_eq!(election.candidates().await.unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn new_leader_events_arrive_in_order_and_metrics_count() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let registry = MetricsRegistry::new();
    let metrics = Arc::new(RegistryMetrics::new(&registry));
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let watcher = {
        let tx = tx.clone();
        Elector::builder(election)
            .config(config().with_identity("watcher"))
            .metrics(metrics.clone())
            .on_started_leading(|term: Term<EmbeddedStore>| async move { term.cancelled().await })
            .on_new_leader(move |leader| {
                let _ = tx.send((
                    Instant::now(),
                    Ev::NewLeader {
                        who: "watcher".into(),
                        leader: leader.map(|l| l.value_str().into_owned()),
                    },
                ));
            })
            .build()
            .unwrap()
    };
    let (watcher_stop, watcher_run) = spawn_run(&watcher);
    let (no_tx, _no_rx) = mpsc::unbounded_channel();
    sleep(Duration::from_secs(1)).await;
    let mut others = Vec::new();
    for name in ["x", "y", "z"] {
        others.push(spawn_candidate(
            store.clone(),
            PREFIX,
            name,
            config(),
            no_tx.clone(),
        ));
        sleep(Duration::from_millis(200)).await;
    }
    // The watcher leads first; then hand over x -> y -> z by shutting down.
    sleep(Duration::from_secs(1)).await;
    assert!(watcher.is_leader());
    let snapshot = metrics.snapshot();
    assert!(snapshot.is_leader);
    assert_eq!(snapshot.terms, 1);
    // The same numbers are exported, labelled by election.
    let scrape = drover_metrics::testing::parse(&registry.encode().unwrap());
    let exported = |name| drover_metrics::testing::value(&scrape, name, &[("election", PREFIX)]);
    assert_eq!(exported("drover_election_is_leader"), Some(1.0));
    assert_eq!(exported("drover_election_terms_total"), Some(1.0));
    assert_eq!(
        exported("drover_election_last_token"),
        Some(watcher.current_term().unwrap().token() as f64)
    );
    assert!(exported("drover_election_keep_alive_rtt_seconds_count") > Some(0.0));
    watcher_stop.cancel();
    watcher_run.await.unwrap().unwrap();
    assert!(!metrics.snapshot().is_leader);
    assert!(
        metrics.snapshot().keep_alives > 0,
        "keep-alive RTTs measured"
    );

    // The watcher observed itself become leader.
    let events: Vec<Option<String>> = drain(&mut rx)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Ev::NewLeader { leader, .. } => Some(leader),
            _ => None,
        })
        .collect();
    // Depending on whether the first list ran before the campaign's put, the
    // empty election may be reported first; the handover to x may be seen
    // before the watcher's observer stops.
    let named: Vec<&str> = events.iter().flatten().map(String::as_str).collect();
    assert!(
        named == ["watcher"] || named == ["watcher", "x"],
        "{events:?}"
    );
    assert!(events.iter().skip(1).all(Option::is_some), "{events:?}");

    // A fresh observer-only elector sees x, y, z in order.
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    let observer = spawn_candidate(store.clone(), PREFIX, "late", config(), tx2);
    sleep(Duration::from_secs(1)).await;
    for c in &others {
        c.shutdown.cancel();
        sleep(Duration::from_secs(1)).await;
    }
    let seen: Vec<Option<String>> = drain(&mut rx2)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Ev::NewLeader { leader, .. } => Some(leader),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        [
            Some("x".to_owned()),
            Some("y".to_owned()),
            Some("z".to_owned()),
            Some("late".to_owned())
        ]
    );
    observer.stop().await;
    for c in others {
        c.run.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_rejected_with_typed_errors() {
    let store = EmbeddedStore::in_memory();
    assert!(matches!(
        Election::with_prefix(store.clone(), ""),
        Err(ElectionError::InvalidName { .. })
    ));
    let keys = drover_store::keys::Keys::default();
    assert!(matches!(
        Election::named(store.clone(), &keys, "a/b"),
        Err(ElectionError::InvalidKey(_))
    ));
    let named = Election::named(store.clone(), &keys, "reports").unwrap();
    assert_eq!(named.prefix(), "/drover/election/reports/");
    let election = Election::with_prefix(store.clone(), PREFIX).unwrap();
    let built = Elector::builder(election.clone())
        .config(config().with_identity(""))
        .on_started_leading(|_t: Term<EmbeddedStore>| async {})
        .build();
    assert!(matches!(built, Err(ElectionError::EmptyIdentity)));
    let built = Elector::builder(election.clone()).config(config()).build();
    assert!(matches!(built, Err(ElectionError::MissingLeaderWork)));
    let built = Elector::builder(election)
        .config(config().with_timing(
            Duration::from_secs(2),
            Duration::from_secs(3),
            Duration::from_millis(100),
        ))
        .on_started_leading(|_t: Term<EmbeddedStore>| async {})
        .build();
    assert!(matches!(
        built,
        Err(ElectionError::RenewDeadlineNotShorter { .. })
    ));
    // Nothing was written.
    assert_eq!(store.get(Get::prefix("/")).await.unwrap().count, 0);
}

/// The split-brain test: leaders get paused (their keep-alives stall and
/// their work blocks, ignoring cancellation) at random, wake up after their
/// lease expired, and try to write as leader. Every fenced write is
/// recorded; across many seeded runs no two terms' writes ever overlap.
#[tokio::test(start_paused = true)]
async fn paused_leaders_never_overlap_fenced_writes() {
    let mut stale_refusals = 0;
    let mut terms_total = 0;
    for seed in 0..64u64 {
        let (terms, refusals) = split_brain_run(seed).await;
        terms_total += terms;
        stale_refusals += refusals;
    }
    assert!(
        terms_total > 64 * 2,
        "leadership changed hands: {terms_total}"
    );
    assert!(
        stale_refusals > 0,
        "some paused leaders woke up and were refused"
    );
}

async fn split_brain_run(seed: u64) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let shared = EmbeddedStore::in_memory();
    let history = History::default();
    let refusals = Arc::new(AtomicUsize::new(0));
    let (tx, _rx) = mpsc::unbounded_channel();
    let k = rng.gen_range(2..=4);
    let mut candidates = Vec::new();
    for i in 0..k {
        let store = FaultyStore::new(shared.clone());
        let name = format!("c{i}");
        // Each process pauses (a GC pause, SIGSTOP) at a random point of
        // its terms: its keep-alives stall and its work blocks, not looking
        // at the cancellation, then writes as if still leader.
        let pause_after = Duration::from_millis(rng.gen_range(200..3000));
        let pause_for = Duration::from_millis(rng.gen_range(1000..6000));
        let work = {
            let (history, refusals, faults, name) = (
                history.clone(),
                refusals.clone(),
                store.faults.clone(),
                name.clone(),
            );
            move |term: Term<FaultyStore<EmbeddedStore>>| {
                let (history, refusals, faults, name) = (
                    history.clone(),
                    refusals.clone(),
                    faults.clone(),
                    name.clone(),
                );
                async move {
                    let started = Instant::now();
                    let mut paused = false;
                    for n in 0..200u32 {
                        if !paused && started.elapsed() >= pause_after {
                            paused = true;
                            faults.stall_keep_alives(true);
                            sleep(pause_for).await; // blocked, deaf to cancellation
                            faults.stall_keep_alives(false);
                            if term.is_cancelled() {
                                // The helper refuses locally once the term ended.
                                let put = Put::new(format!("/data/{name}/late"), "w");
                                assert!(term.commit_fenced([put.into()]).await.is_err());
                            }
                        }
                        // Write as leader with the raw guard (bypassing the
                        // local validity check), as a stale process would.
                        let key = format!("/data/{name}/{n}");
                        let txn = term.fenced_txn([Put::new(key, "w").into()]);
                        match term.store().txn(txn).await {
                            Ok(r) if r.succeeded => history.record(r.revision, term.token(), &name),
                            Ok(_) => {
                                assert!(
                                    term.is_cancelled(),
                                    "{name}: refused by the store while the term's scope was still open"
                                );
                                if paused {
                                    refusals.fetch_add(1, Ordering::SeqCst);
                                }
                                return;
                            }
                            Err(_) => return,
                        }
                        if term.is_cancelled() && !paused {
                            return;
                        }
                        sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        let config = config().with_drain_timeout(Duration::from_secs(10));
        candidates.push((
            spawn_candidate_with(store, PREFIX, &name, config, tx.clone(), work),
            name,
        ));
    }
    sleep(Duration::from_secs(rng.gen_range(20..40))).await;
    for (c, _) in &candidates {
        c.shutdown.cancel();
    }
    for (c, _) in candidates {
        tokio::time::timeout(Duration::from_secs(60), c.run)
            .await
            .expect("elector stops")
            .unwrap()
            .unwrap();
    }
    let terms = history
        .check_no_overlap()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    (terms, refusals.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn each_waiter_watches_only_its_predecessor_and_its_own_key() {
    let shared = EmbeddedStore::in_memory();
    let election = Election::with_prefix(shared.clone(), PREFIX).unwrap();
    let leader_lease = grant_lease(&shared, 5).await;
    let leader = election.campaign(&leader_lease, "leader").await.unwrap();
    let mut keys = vec![leader.key().to_owned()];
    let mut waiters = Vec::new();
    for i in 0..4 {
        let view = FaultyStore::new(shared.clone());
        let lease = grant_lease(&view, 5).await;
        let own = format!("{PREFIX}{:x}", lease.id());
        let campaign = {
            let election = Election::with_prefix(view.clone(), PREFIX).unwrap();
            tokio::spawn(async move {
                let term = election.campaign(&lease, format!("w{i}")).await;
                (term, lease)
            })
        };
        sleep(Duration::from_millis(100)).await;
        let predecessor = keys.last().unwrap().clone();
        assert_eq!(
            view.faults.watched(),
            [
                KeyRange::Key(predecessor.into_bytes()),
                KeyRange::Key(own.clone().into_bytes())
            ],
            "waiter {i}"
        );
        keys.push(own);
        waiters.push((view, campaign));
    }

    leader.resign().await.unwrap();
    sleep(Duration::from_secs(1)).await;
    // The first waiter leads; the others were not woken (no new watch).
    let (first_view, first) = waiters.remove(0);
    let (term, _lease) = first.await.unwrap();
    let term = term.unwrap();
    assert_eq!(term.key(), keys[1]);
    assert!(
        first_view.faults.watched().len() > 2,
        "its term watches its key"
    );
    for (view, campaign) in &waiters {
        assert_eq!(view.faults.watched().len(), 2);
        assert!(!campaign.is_finished());
    }
    for (_, campaign) in waiters {
        campaign.abort();
    }
}

/// A gap in the observer's watch (the store compacted past it before the
/// watch was set up) makes it list again; it reports the state it read,
/// never a leader it did not see.
#[tokio::test(start_paused = true)]
async fn observer_lists_again_after_a_compacted_gap() {
    let shared = EmbeddedStore::in_memory();
    let election = Election::with_prefix(shared.clone(), PREFIX).unwrap();
    let l1 = grant_lease(&shared, 5).await;
    let l2 = grant_lease(&shared, 5).await;
    let t1 = election.campaign(&l1, "one").await.unwrap();

    let view = FaultyStore::new(shared.clone());
    view.faults.hold_watches(true);
    let mut observer = Election::with_prefix(view.clone(), PREFIX)
        .unwrap()
        .observe();
    let first = observer.next().await.unwrap().unwrap();
    assert_eq!(first.leader().unwrap().value, b"one");

    // While the observer's watch is being set up: one resigns, two leads
    // and proclaims, and history up to now is compacted away.
    t1.resign().await.unwrap();
    let t2 = election.campaign(&l2, "two").await.unwrap();
    t2.proclaim("two, proclaimed").await.unwrap();
    let rev = shared.current_revision().await.unwrap();
    shared.compact(rev).await.unwrap();
    view.faults.hold_watches(false);

    let next = tokio::time::timeout(Duration::from_secs(10), observer.next())
        .await
        .expect("the observer recovers from the compaction")
        .unwrap()
        .unwrap();
    let seen = next.leader().expect("two leads").clone();
    assert_eq!(
        (seen.value.as_slice(), seen.token),
        (b"two, proclaimed".as_slice(), t2.token())
    );
    assert!(
        view.faults
            .watched()
            .iter()
            .filter(|r| matches!(r, KeyRange::Prefix(_)))
            .count()
            >= 2,
        "it watched again after listing again"
    );
    // And it keeps following.
    t2.resign().await.unwrap();
    expect_no_leader(&mut observer).await;
}

/// Metrics: is_leader, terms and the term's token, acquire latency, and the
/// keep-alive round trip of the candidate's lease.
#[tokio::test(start_paused = true)]
async fn metrics_report_terms_acquire_latency_and_keep_alive_round_trips() {
    let shared = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(shared.clone(), PREFIX, "a", config(), tx.clone());
    next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .unwrap();

    let view = FaultyStore::new(shared.clone());
    view.faults.delay_keep_alives(Duration::from_millis(40));
    let metrics = Arc::new(RegistryMetrics::new(&MetricsRegistry::new()));
    let b = Elector::builder(Election::with_prefix(view.clone(), PREFIX).unwrap())
        .config(config().with_identity("b"))
        .metrics(metrics.clone())
        .on_started_leading(|term: Term<FaultyStore<EmbeddedStore>>| async move {
            term.cancelled().await
        })
        .build()
        .unwrap();
    let (b_stop, b_run) = spawn_run(&b);
    sleep(Duration::from_secs(2)).await;
    let waiting = metrics.snapshot();
    assert!(!waiting.is_leader);
    assert_eq!(waiting.terms, 0);
    assert!(waiting.keep_alives >= 2, "{waiting:?}");
    assert_eq!(waiting.last_keep_alive_rtt, Duration::from_millis(40));

    a.stop().await;
    sleep(Duration::from_millis(100)).await;
    let leading = metrics.snapshot();
    assert!(leading.is_leader && b.is_leader());
    assert_eq!(leading.terms, 1);
    assert_eq!(leading.last_token, b.current_term().unwrap().token());
    // b campaigned at once and waited for a's resignation, 2 s later.
    assert!(
        leading.last_acquire_latency >= Duration::from_secs(2)
            && leading.last_acquire_latency < Duration::from_millis(2100),
        "{leading:?}"
    );
    assert!(leading.transitions >= 1, "a -> b observed: {leading:?}");

    b_stop.cancel();
    b_run.await.unwrap().unwrap();
    assert!(!metrics.snapshot().is_leader);
}

/// An elector is not single-use: a second `run` while one is active is
/// refused, and after `run` returned it can run (and lead) again.
#[tokio::test(start_paused = true)]
async fn an_elector_runs_again_after_it_stopped() {
    let store = EmbeddedStore::in_memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = spawn_candidate(store.clone(), PREFIX, "a", config(), tx.clone());
    let (_, first) = next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .expect("a leads");
    assert!(matches!(
        a.elector.run(CancellationToken::new()).await,
        Err(ElectionError::AlreadyRunning)
    ));
    let elector = a.elector.clone();
    a.stop().await;
    assert!(!elector.is_leader());

    let (again, run) = spawn_run(&elector);
    let (_, second) = next_event(&mut rx, Duration::from_secs(5), |e| started_by(e, "a"))
        .await
        .expect("a leads again");
    let (Ev::Started { token: t1, .. }, Ev::Started { token: t2, .. }) = (first, second) else {
        unreachable!()
    };
    assert!(t2 > t1);
    assert!(elector.is_leader());
    again.cancel();
    run.await.unwrap().unwrap();
}

/// A term whose lease stops being renewed ends while its key still exists:
/// the old leader stops before anyone else could start.
#[tokio::test(start_paused = true)]
async fn a_term_ends_before_the_store_could_expire_its_lease() {
    let shared = EmbeddedStore::in_memory();
    let view = FaultyStore::new(shared.clone());
    let election = Election::with_prefix(view.clone(), PREFIX).unwrap();
    let lease = grant_lease(&view, 3).await;
    let term = election.campaign(&lease, "me").await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert!(term.is_valid(), "kept alive");

    view.faults.stall_keep_alives(true);
    tokio::time::timeout(Duration::from_secs(5), term.cancelled())
        .await
        .expect("the term ends by itself");
    assert!(
        matches!(
            term.end_reason(),
            Some(TermEnd::LeaseLost | TermEnd::ValidityExpired)
        ),
        "{:?}",
        term.end_reason()
    );
    let held = shared.get(Get::key(term.key())).await.unwrap();
    assert_eq!(held.count, 1, "the store still holds the key");
    assert!(matches!(
        term.commit_fenced([Put::new("/work/late", "x").into()])
            .await,
        Err(ElectionError::TermEnded { .. })
    ));

    sleep(Duration::from_secs(3)).await;
    let gone = shared.get(Get::key(term.key())).await.unwrap();
    assert_eq!(gone.count, 0, "the store expired the lease later");
}
