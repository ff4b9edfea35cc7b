//! Bucket ownership on the embedded backend with paused time.

#[path = "common/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_election::buckets::{Bucket, BucketElector, BucketSet};
use drover_election::{ElectionError, ElectorConfig, Term};
use drover_store::embedded::EmbeddedStore;
use drover_store::{Get, Put, Store};
use parking_lot::Mutex;
use support::FaultyStore;
use tokio::task::JoinHandle;
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

const ROOT: &str = "/drover/election/";

fn config(identity: &str) -> ElectorConfig {
    ElectorConfig::default()
        .with_timing(
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_millis(500),
        )
        .with_identity(identity)
}

/// Who holds which bucket, according to the members' own work scopes.
type Holders = Arc<Mutex<HashMap<u32, Vec<String>>>>;

struct Member<S: Store> {
    elector: BucketElector<S>,
    shutdown: CancellationToken,
    run: JoinHandle<drover_election::Result<()>>,
}

fn spawn_member<S: Store>(store: S, set: &BucketSet, name: &str, holders: &Holders) -> Member<S> {
    let holders = holders.clone();
    let who = name.to_owned();
    let elector = BucketElector::builder(store, ROOT, set.clone())
        .config(config(name))
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
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (elector, shutdown) = (elector.clone(), shutdown.clone());
        async move { elector.run(shutdown).await }
    });
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

    a.shutdown.cancel();
    a.run.await.unwrap().unwrap();
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
    gone.shutdown.cancel();
    gone.run.await.unwrap().unwrap();
    sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = members.iter().map(|m| m.elector.owned().len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), n as usize, "{counts:?}");
    assert!(
        counts.iter().all(|c| *c <= (n as usize).div_ceil(2)),
        "{counts:?}"
    );
    for m in members {
        m.shutdown.cancel();
        m.run.await.unwrap().unwrap();
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
    a.shutdown.cancel();
    a.run.await.unwrap().unwrap();
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
