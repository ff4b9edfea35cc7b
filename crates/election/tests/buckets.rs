//! Bucket ownership on the embedded backend with paused time.

#[path = "common/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_election::buckets::{Bucket, BucketElector, BucketSet};
use drover_election::{
    ElectionError, ElectorConfig, OnLoss, RegistryMetrics, Term, TermEnd, TermSummary,
};
use drover_metrics::MetricsRegistry;
use drover_store::embedded::EmbeddedStore;
use drover_store::{Get, Put, Store};
use parking_lot::Mutex;
use support::FaultyStore;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

const ROOT: &str = "/drover/election/";

fn config(identity: &str) -> ElectorConfig {
    support::paused_timing().with_identity(identity)
}

/// Who holds which bucket, according to the members' own work scopes; under
/// `DEMOTED + index`, why each of the bucket's terms ended.
type Holders = Arc<Mutex<HashMap<u32, Vec<String>>>>;
const DEMOTED: u32 = 1_000_000;

struct Member<S: Store> {
    elector: BucketElector<S>,
    shutdown: CancellationToken,
    run: JoinHandle<drover_election::Result<()>>,
}

impl<S: Store> Member<S> {
    /// Shuts the member down and checks that `run` returned `Ok`.
    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap().unwrap();
    }
}

fn spawn_member<S: Store>(store: S, set: &BucketSet, name: &str, holders: &Holders) -> Member<S> {
    spawn_member_with(store, set, config(name), holders)
}

fn spawn_member_with<S: Store>(
    store: S,
    set: &BucketSet,
    config: ElectorConfig,
    holders: &Holders,
) -> Member<S> {
    let holders = holders.clone();
    let who = config.identity.clone();
    let released = holders.clone();
    let elector = BucketElector::builder(store, ROOT, set.clone())
        .config(config)
        .on_promoted(move |bucket: Bucket, term: Term<S>| {
            let (holders, who) = (holders.clone(), who.clone());
            async move {
                holders
                    .lock()
                    .entry(bucket.index)
                    .or_default()
                    .push(who.clone());
                // Fenced work in the bucket proves the term is real.
                let put = Put::new(format!("/work/{}", bucket.name), who.clone());
                let _ = term.commit_fenced([put.into()]).await;
                term.cancelled().await;
                holders
                    .lock()
                    .entry(bucket.index)
                    .or_default()
                    .retain(|h| *h != who);
            }
        })
        .on_demoted(move |bucket: &Bucket, summary: &TermSummary| {
            released
                .lock()
                .entry(DEMOTED + bucket.index)
                .or_default()
                .push(format!("{:?}", summary.reason));
        })
        .build()
        .unwrap();
    let (shutdown, run) = support::spawn_run(&elector);
    Member {
        elector,
        shutdown,
        run,
    }
}

/// Every bucket has at most one holder (and, when `all`, exactly one).
fn assert_exclusive(holders: &Holders, n: u32, all: bool) {
    let holders = holders.lock();
    for i in 0..n {
        let h = holders.get(&i).map(Vec::len).unwrap_or(0);
        assert!(h <= 1, "bucket {i} held by {:?}", holders.get(&i));
        if all {
            assert_eq!(h, 1, "bucket {i} is held");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn one_member_holds_every_bucket_on_one_lease() {
    let store = EmbeddedStore::in_memory();
    let set = BucketSet::new("ctl", "queue", 12).unwrap();
    let holders = Holders::default();
    let a = spawn_member(store.clone(), &set, "a", &holders);
    sleep(Duration::from_secs(2)).await;
    let owned = a.elector.owned();
    assert_eq!(owned.len(), 12, "no cap of 10 buckets");
    assert_exclusive(&holders, 12, true);
    let leases: Vec<_> = owned
        .iter()
        .map(|b| a.elector.term(b.index).unwrap().lease_id())
        .collect();
    assert!(leases.windows(2).all(|w| w[0] == w[1]), "one shared lease");
    for i in 0..50 {
        let key = format!("ns/obj-{i}");
        assert!(a.elector.owns(&key));
    }
    // Each bucket's election lives at `<root><bucket name>/`.
    let b0 = set.bucket(0).unwrap();
    let got = store
        .get(Get::prefix(format!("{ROOT}{}/", b0.name)))
        .await
        .unwrap();
    assert_eq!(got.kvs[0].value, b"a");
    assert_eq!(got.kvs[0].lease, leases[0]);

    a.stop().await;
    // Released on shutdown: no candidate or member key is left.
    assert_eq!(store.get(Get::prefix(ROOT)).await.unwrap().count, 0);
}

#[tokio::test(start_paused = true)]
async fn buckets_balance_as_members_join_and_leave() {
    let store = EmbeddedStore::in_memory();
    let n = 7;
    let set = BucketSet::new("ctl", "queue", n).unwrap();
    let holders = Holders::default();
    let mut members = vec![spawn_member(store.clone(), &set, "a", &holders)];
    sleep(Duration::from_secs(2)).await;
    assert_eq!(members[0].elector.owned().len(), n as usize);
    for name in ["b", "c"] {
        members.push(spawn_member(store.clone(), &set, name, &holders));
        // While they rebalance, no bucket ever has two holders.
        for _ in 0..20 {
            sleep(Duration::from_millis(100)).await;
            assert_exclusive(&holders, n, false);
        }
        let share = (n as usize).div_ceil(members.len());
        let counts: Vec<usize> = members.iter().map(|m| m.elector.owned().len()).collect();
        assert!(
            counts.iter().all(|c| *c <= share),
            "{counts:?} share {share}"
        );
        assert_eq!(counts.iter().sum::<usize>(), n as usize, "{counts:?}");
        assert_exclusive(&holders, n, true);
        for m in &members {
            assert_eq!(m.elector.members(), members.len());
        }
    }
    // Every work key is owned by exactly one member.
    for i in 0..100 {
        let key = format!("ns/obj-{i}");
        let owners = members.iter().filter(|m| m.elector.owns(&key)).count();
        assert_eq!(owners, 1, "{key}");
    }
    // A member leaves gracefully: the others take its buckets at once.
    let gone = members.remove(0);
    gone.stop().await;
    sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = members.iter().map(|m| m.elector.owned().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), n as usize, "{counts:?}");
    assert!(
        counts.iter().all(|c| *c <= (n as usize).div_ceil(2)),
        "{counts:?}"
    );
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_crashed_members_buckets_fail_over_within_the_ttl() {
    let shared = EmbeddedStore::in_memory();
    let n = 4;
    let set = BucketSet::new("ctl", "queue", n).unwrap();
    let holders = Holders::default();
    let a = spawn_member(shared.clone(), &set, "a", &holders);
    sleep(Duration::from_secs(1)).await;
    let b_store = FaultyStore::new(shared.clone());
    let b = spawn_member(b_store.clone(), &set, "b", &holders);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(a.elector.owned().len(), 2);
    assert_eq!(b.elector.owned().len(), 2);

    b_store.faults.freeze(true);
    b.run.abort();
    // b's lease (3 s) expires; a takes all buckets back.
    sleep(Duration::from_millis(3500)).await;
    assert_eq!(a.elector.owned().len(), n as usize);
    assert_eq!(a.elector.members(), 1);
    a.stop().await;
}

#[tokio::test]
async fn bucket_elector_rejects_bad_config() {
    let set = BucketSet::new("ctl", "queue", 2).unwrap();
    let store = EmbeddedStore::in_memory();
    let built = BucketElector::builder(store.clone(), ROOT, set.clone())
        .config(config(""))
        .on_promoted(|_b: Bucket, _t: Term<EmbeddedStore>| async {})
        .build();
    assert!(matches!(built, Err(ElectionError::EmptyIdentity)));
    let built = BucketElector::builder(store, ROOT, set)
        .config(config("a"))
        .build();
    assert!(matches!(built, Err(ElectionError::MissingLeaderWork)));
}

/// The term limit applies per bucket: a held bucket is resigned at the limit
/// and the member waiting for it takes over; the two alternate.
#[tokio::test(start_paused = true)]
async fn the_term_limit_rotates_each_bucket_between_members() {
    let store = EmbeddedStore::in_memory();
    let set = BucketSet::new("ctl", "queue", 1).unwrap();
    let holders = Holders::default();
    let limited = |name: &str| config(name).with_term_limit(Duration::from_secs(4));
    let a = spawn_member_with(store.clone(), &set, limited("a"), &holders);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(a.elector.owned().len(), 1);
    let b = spawn_member_with(store.clone(), &set, limited("b"), &holders);
    let mut order = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..40 {
        sleep(Duration::from_millis(500)).await;
        assert_exclusive(&holders, 1, false);
        for (name, m) in [("a", &a), ("b", &b)] {
            if let Some(term) = m.elector.term(0)
                && tokens.last() != Some(&term.token())
            {
                order.push(name);
                tokens.push(term.token());
            }
        }
    }
    // 20 s at a 4 s limit: at least four hand-overs, strictly alternating.
    assert!(order.len() >= 5, "{order:?}");
    assert!(order.windows(2).all(|w| w[0] != w[1]), "{order:?}");
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    let reasons = holders.lock().get(&DEMOTED).cloned().unwrap_or_default();
    assert!(
        reasons
            .iter()
            .all(|r| *r == format!("{:?}", TermEnd::TermLimit)),
        "{reasons:?}"
    );
    for m in [a, b] {
        m.stop().await;
    }
}

/// With loss fatal, losing a held bucket (here: the shared lease, when the
/// keep-alives stall) gives up every bucket and ends `run` with an error;
/// the other member takes over.
#[tokio::test(start_paused = true)]
async fn fatal_loss_ends_the_bucket_elector_and_the_other_member_takes_over() {
    let shared = EmbeddedStore::in_memory();
    let n = 4;
    let set = BucketSet::new("ctl", "queue", n).unwrap();
    let holders = Holders::default();
    let a_store = FaultyStore::new(shared.clone());
    let a = spawn_member_with(
        a_store.clone(),
        &set,
        config("a").with_on_loss(OnLoss::Fatal),
        &holders,
    );
    sleep(Duration::from_secs(1)).await;
    let b = spawn_member(shared.clone(), &set, "b", &holders);
    sleep(Duration::from_secs(2)).await;
    assert_eq!(a.elector.owned().len(), 2);

    a_store.faults.stall_keep_alives(true);
    let result = tokio::time::timeout(Duration::from_secs(10), a.run)
        .await
        .expect("run ends")
        .unwrap();
    assert!(
        matches!(
            result,
            Err(ElectionError::LeadershipLost {
                reason: TermEnd::LeaseLost | TermEnd::ValidityExpired
            })
        ),
        "{result:?}"
    );
    assert!(a.elector.owned().is_empty());
    sleep(Duration::from_secs(4)).await;
    assert_eq!(b.elector.owned().len(), n as usize);
    assert_exclusive(&holders, n, true);
    b.stop().await;
}

/// Without fatal loss (the default), a member whose lease was lost starts
/// over with a new lease and gets its share again.
#[tokio::test(start_paused = true)]
async fn a_member_that_lost_its_lease_rejoins_with_a_new_one() {
    let shared = EmbeddedStore::in_memory();
    let n = 4;
    let set = BucketSet::new("ctl", "queue", n).unwrap();
    let holders = Holders::default();
    let a_store = FaultyStore::new(shared.clone());
    let a = spawn_member(a_store.clone(), &set, "a", &holders);
    sleep(Duration::from_secs(1)).await;
    let b = spawn_member(shared.clone(), &set, "b", &holders);
    sleep(Duration::from_secs(2)).await;
    let old_term = a.elector.term(a.elector.owned()[0].index).unwrap();

    a_store.faults.stall_keep_alives(true);
    tokio::time::timeout(Duration::from_secs(5), old_term.cancelled())
        .await
        .expect("the term ends with the lease");
    assert!(
        matches!(
            old_term.end_reason(),
            Some(TermEnd::LeaseLost | TermEnd::ValidityExpired)
        ),
        "{:?}",
        old_term.end_reason()
    );
    a_store.faults.stall_keep_alives(false);
    sleep(Duration::from_secs(8)).await;
    assert_eq!(a.elector.owned().len(), 2);
    assert_eq!(b.elector.owned().len(), 2);
    let new_lease = a
        .elector
        .term(a.elector.owned()[0].index)
        .unwrap()
        .lease_id();
    assert_ne!(new_lease, old_term.lease_id());
    assert!(!a.run.is_finished());
    assert_exclusive(&holders, n, true);
    a.shutdown.cancel();
    b.shutdown.cancel();
    a.run.await.unwrap().unwrap();
    b.run.await.unwrap().unwrap();
}

/// Buckets report each held bucket's term (leadership, token, acquire
/// latency) and the shared lease's keep-alive round trips.
#[tokio::test(start_paused = true)]
async fn bucket_metrics_count_terms_and_keep_alives() {
    let shared = EmbeddedStore::in_memory();
    let view = FaultyStore::new(shared);
    view.faults.delay_keep_alives(Duration::from_millis(30));
    let set = BucketSet::new("ctl", "queue", 3).unwrap();
    let registry = MetricsRegistry::new();
    let metrics = Arc::new(RegistryMetrics::new(&registry));
    let member =
        BucketElector::builder(view, ROOT, set)
            .config(config("m"))
            .metrics(metrics.clone())
            .on_promoted(
                |_b: Bucket, term: Term<FaultyStore<EmbeddedStore>>| async move {
                    term.cancelled().await
                },
            )
            .build()
            .unwrap();
    let (shutdown, run) = support::spawn_run(&member);
    sleep(Duration::from_secs(2)).await;
    let held = metrics.snapshot();
    assert!(held.is_leader);
    assert_eq!(held.terms, 3);
    let tokens: Vec<i64> = (0..3).map(|i| member.term(i).unwrap().token()).collect();
    assert!(tokens.contains(&held.last_token), "{held:?} {tokens:?}");
    assert!(held.keep_alives >= 2, "{held:?}");
    assert_eq!(held.last_keep_alive_rtt, Duration::from_millis(30));
    // Exported per bucket: each bucket's election leads, with one term.
    let scrape = drover_metrics::testing::parse(&registry.encode().unwrap());
    for i in 0..3 {
        let election = member.term(i).unwrap().prefix().to_string();
        let exported =
            |name| drover_metrics::testing::value(&scrape, name, &[("election", &election)]);
        assert_eq!(
            exported("drover_election_is_leader"),
            Some(1.0),
            "{election}"
        );
        assert_eq!(
            exported("drover_election_terms_total"),
            Some(1.0),
            "{election}"
        );
    }
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(!metrics.snapshot().is_leader);
}
