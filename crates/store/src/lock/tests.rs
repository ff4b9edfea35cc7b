//! Lock behaviour with paused time on the embedded store; the cases shared
//! with etcd are in the conformance suite (`testing::suite::lock`).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;
use crate::embedded::EmbeddedStore;
use crate::lease::LeaseConfig;

#[tokio::test(start_paused = true)]
async fn bad_ids_are_refused_and_nothing_is_written() {
    let store = EmbeddedStore::in_memory();
    let lease = Lease::grant(store.clone(), LeaseConfig::new(5))
        .await
        .unwrap();
    let err = Lock::try_acquire(store.clone(), &Keys::default(), "rc", "a/b", &lease, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidArgument(ref m) if m.contains("lock id")),
        "{err}"
    );
    assert_eq!(store.get(Get::prefix("/")).await.unwrap().count, 0);
}

#[tokio::test(start_paused = true)]
async fn the_same_lease_gets_its_lock_back_with_its_token() {
    let store = EmbeddedStore::in_memory();
    let keys = Keys::default();
    let lease = Lease::grant(store.clone(), LeaseConfig::new(5))
        .await
        .unwrap();
    let first = Lock::try_acquire(store.clone(), &keys, "rc", "web", &lease, "x")
        .await
        .unwrap()
        .unwrap();
    let again = Lock::try_acquire(store.clone(), &keys, "rc", "web", &lease, "x")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token(), first.token());
    assert_eq!(again.fence(), first.fence());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_fails_when_its_own_lease_is_lost() {
    let store = EmbeddedStore::in_memory();
    let keys = Keys::default();
    let holder = Lease::grant(store.clone(), LeaseConfig::new(30))
        .await
        .unwrap();
    let _held = Lock::try_acquire(store.clone(), &keys, "rc", "web", &holder, "a")
        .await
        .unwrap()
        .unwrap();
    let waiter = Lease::grant(store.clone(), LeaseConfig::new(2))
        .await
        .unwrap();
    let id = waiter.id();
    let acquiring = Lock::acquire(store.clone(), &keys, "rc", "web", &waiter, "b");
    let _ = waiter.orphan();
    let err = tokio::time::timeout(Duration::from_secs(10), acquiring)
        .await
        .expect("the waiter gives up once its lease lapsed")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseNotFound(l) if l == id),
        "{err}"
    );
}

/// One fenced write that the store accepted.
#[derive(Clone, Debug)]
struct Write {
    revision: Revision,
    token: Revision,
    who: usize,
}

/// Two (or three) lockers compete for one lock. Each, while holding it,
/// writes with the raw fenced txn (bypassing the local validity check, as a
/// process that was paused would) and, at a random point, pauses: its
/// keep-alives stop (the lease is orphaned) and it sleeps past the TTL
/// before writing again. Across seeded runs, the writes the store accepted
/// never overlap: in store order tokens never go back and each token has one
/// writer; and some paused holders were refused.
#[tokio::test(start_paused = true)]
async fn two_lockers_never_both_hold() {
    let mut refused_total = 0;
    let mut holds_total = 0;
    for seed in 0..32u64 {
        let (holds, refused) = lock_run(seed).await;
        holds_total += holds;
        refused_total += refused;
    }
    assert!(
        holds_total > 32 * 2,
        "the lock changed hands: {holds_total}"
    );
    assert!(
        refused_total > 0,
        "some paused holders woke up and were refused"
    );
}

async fn lock_run(seed: u64) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let store = EmbeddedStore::in_memory();
    let keys = Keys::default();
    let history = Arc::new(Mutex::new(Vec::<Write>::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let lockers = rng.gen_range(2..=3);
    let mut tasks = Vec::new();
    for who in 0..lockers {
        let (store, keys, history, refused) = (
            store.clone(),
            keys.clone(),
            history.clone(),
            refused.clone(),
        );
        let mut rng = StdRng::seed_from_u64(seed * 31 + who as u64);
        tasks.push(tokio::spawn(async move {
            for _round in 0..4 {
                let lease = Lease::grant(store.clone(), LeaseConfig::new(2))
                    .await
                    .unwrap();
                let lock = Lock::acquire(store.clone(), &keys, "rc", "shared", &lease, "x")
                    .await
                    .unwrap();
                let pause_at = rng.gen_range(0..8u32);
                let mut paused = false;
                for n in 0..8u32 {
                    if n == pause_at && rng.gen_bool(0.6) {
                        paused = true;
                        break;
                    }
                    let txn = lock
                        .fence()
                        .txn([Put::new(format!("/data/{who}"), n.to_string()).into()]);
                    let r = store.txn(txn).await.unwrap();
                    assert!(r.succeeded, "a live holder's fenced write succeeds");
                    history.lock().push(Write {
                        revision: r.revision,
                        token: lock.token(),
                        who,
                    });
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
                }
                if paused {
                    // Keep-alives stop; the process sleeps past its lease,
                    // deaf to the scope, then writes as if it still held it.
                    let _ = lease.orphan();
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(2500..6000))).await;
                    assert!(lock.scope().is_cancelled());
                    let txn = lock
                        .fence()
                        .txn([Put::new(format!("/data/{who}"), "late").into()]);
                    let r = store.txn(txn).await.unwrap();
                    if r.succeeded {
                        history.lock().push(Write {
                            revision: r.revision,
                            token: lock.token(),
                            who,
                        });
                    } else {
                        *refused.lock() += 1;
                    }
                    assert!(lock.commit_fenced([]).await.is_err(), "refused locally");
                } else {
                    lock.release().await.unwrap();
                    lease.revoke().await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(600), task)
            .await
            .expect("lockers finish")
            .unwrap();
    }
    let mut writes = history.lock().clone();
    writes.sort_by_key(|w| w.revision);
    let mut holds = usize::from(!writes.is_empty());
    for pair in writes.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.token >= a.token,
            "seed {seed}: split brain: {b:?} (token {}) after {a:?}",
            b.token
        );
        assert!(
            b.token != a.token || b.who == a.who,
            "seed {seed}: token {} written by {} and {}",
            a.token,
            a.who,
            b.who
        );
        if b.token != a.token {
            holds += 1;
        }
    }
    let refused = *refused.lock();
    (holds, refused)
}
