//! Conformance cases: transactions and compares.

use std::collections::HashSet;

use super::util::*;
use crate::{
    Compare, CompareOp, CompareTarget, Delete, Get, MAX_TXN_OPS, Put, Result, Store, StoreError,
    Txn, TxnOp, TxnOpResponse,
};

/// Runs a txn that only compares, returning whether the compares held.
async fn holds<S: Store>(store: &S, compare: Compare) -> Result<bool> {
    Ok(store.txn(Txn::new().when([compare])).await?.succeeded)
}

/// Asserts every `(op, target, expected)` against `k`.
async fn check_compares<S: Store>(
    store: &S,
    k: &str,
    cases: Vec<(CompareOp, CompareTarget, bool)>,
) -> Result<()> {
    for (op, target, expected) in cases {
        let c = Compare::new(k, op, target.clone());
        assert_eq!(
            holds(store, c).await?,
            expected,
            "compare {op:?} {target:?} on {k}"
        );
    }
    Ok(())
}

/// Value compares: every op, byte-wise ordering.
pub async fn case_txn_compare_value<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    put(store, &k, "b").await?;
    use CompareOp::*;
    let v = |s: &str| CompareTarget::Value(s.as_bytes().to_vec());
    check_compares(
        store,
        &k,
        vec![
            (Equal, v("b"), true),
            (Equal, v("a"), false),
            (NotEqual, v("a"), true),
            (NotEqual, v("b"), false),
            (Greater, v("a"), true),
            (Greater, v("b"), false),
            (Greater, v("c"), false),
            (Less, v("c"), true),
            (Less, v("b"), false),
            (Less, v("a"), false),
            // Byte-wise: "b" > "ab", "b" < "ba".
            (Greater, v("ab"), true),
            (Less, v("ba"), true),
        ],
    )
    .await
}

/// Version compares.
pub async fn case_txn_compare_version<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    put(store, &k, "1").await?;
    put(store, &k, "2").await?;
    use CompareOp::*;
    use CompareTarget::Version;
    check_compares(
        store,
        &k,
        vec![
            (Equal, Version(2), true),
            (Equal, Version(1), false),
            (NotEqual, Version(1), true),
            (NotEqual, Version(2), false),
            (Greater, Version(1), true),
            (Greater, Version(2), false),
            (Less, Version(3), true),
            (Less, Version(2), false),
        ],
    )
    .await
}

/// Create-revision compares.
pub async fn case_txn_compare_create_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let c = put(store, &k, "1").await?;
    put(store, &k, "2").await?;
    use CompareOp::*;
    use CompareTarget::CreateRevision as Cr;
    check_compares(
        store,
        &k,
        vec![
            (Equal, Cr(c), true),
            (Equal, Cr(c + 1), false),
            (NotEqual, Cr(c + 1), true),
            (NotEqual, Cr(c), false),
            (Greater, Cr(c - 1), true),
            (Greater, Cr(c), false),
            (Less, Cr(c + 1), true),
            (Less, Cr(c), false),
        ],
    )
    .await
}

/// Mod-revision compares.
pub async fn case_txn_compare_mod_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    put(store, &k, "1").await?;
    let m = put(store, &k, "2").await?;
    use CompareOp::*;
    use CompareTarget::ModRevision as Mr;
    check_compares(
        store,
        &k,
        vec![
            (Equal, Mr(m), true),
            (Equal, Mr(m - 1), false),
            (NotEqual, Mr(m - 1), true),
            (NotEqual, Mr(m), false),
            (Greater, Mr(m - 1), true),
            (Greater, Mr(m), false),
            (Less, Mr(m + 1), true),
            (Less, Mr(m), false),
        ],
    )
    .await
}

/// Lease compares, with and without a lease.
pub async fn case_txn_compare_lease<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = store.lease_grant(60).await?.id;
    let leased = key(prefix, "leased");
    let plain = key(prefix, "plain");
    store
        .put(Put::new(leased.as_str(), "v").with_lease(lease))
        .await?;
    put(store, &plain, "v").await?;
    use CompareOp::*;
    use CompareTarget::Lease;
    check_compares(
        store,
        &leased,
        vec![
            (Equal, Lease(lease), true),
            (Equal, Lease(0), false),
            (NotEqual, Lease(0), true),
            (NotEqual, Lease(lease), false),
            (Greater, Lease(lease - 1), true),
            (Less, Lease(lease + 1), true),
        ],
    )
    .await?;
    check_compares(
        store,
        &plain,
        vec![(Equal, Lease(0), true), (Equal, Lease(lease), false)],
    )
    .await?;
    store.lease_revoke(lease).await
}

/// A missing key compares as version/create/mod revision/lease 0, and fails
/// every value compare.
pub async fn case_txn_compare_missing_key<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "missing");
    use CompareOp::*;
    use CompareTarget::*;
    let v = |s: &str| Value(s.as_bytes().to_vec());
    check_compares(
        store,
        &k,
        vec![
            (Equal, Version(0), true),
            (Greater, Version(0), false),
            (Equal, CreateRevision(0), true),
            (Less, ModRevision(1), true),
            (Equal, ModRevision(0), true),
            (Equal, Lease(0), true),
            (Equal, v(""), false),
            (NotEqual, v("x"), false),
            (Greater, v(""), false),
            (Less, v("z"), false),
        ],
    )
    .await?;
    assert!(holds(store, Compare::absent(k.as_str())).await?);
    put(store, &k, "now").await?;
    assert!(!holds(store, Compare::absent(k.as_str())).await?);
    Ok(())
}

/// All compares must hold (AND).
pub async fn case_txn_compares_are_anded<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let a = key(prefix, "a");
    let b = key(prefix, "b");
    put(store, &a, "1").await?;
    put(store, &b, "2").await?;
    let ok = Compare::value(a.as_str(), CompareOp::Equal, "1");
    let also_ok = Compare::value(b.as_str(), CompareOp::Equal, "2");
    let bad = Compare::value(b.as_str(), CompareOp::Equal, "x");
    assert!(
        store
            .txn(Txn::new().when([ok.clone(), also_ok]))
            .await?
            .succeeded
    );
    assert!(!store.txn(Txn::new().when([ok, bad])).await?.succeeded);
    Ok(())
}

/// The success branch's writes share one revision: the txn's revision.
pub async fn case_txn_success_is_one_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (a, b, c, d) = (
        key(prefix, "a"),
        key(prefix, "b"),
        key(prefix, "c"),
        key(prefix, "d"),
    );
    let before = put(store, &d, "to-delete").await?;
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(a.as_str())])
                .and_then([
                    Put::new(a.as_str(), "1").into(),
                    Put::new(b.as_str(), "2").with_prev_kv().into(),
                    Put::new(c.as_str(), "3").into(),
                    Delete::key(d.as_str()).with_prev_kv().into(),
                ])
                .or_else([Get::key(a.as_str()).into()]),
        )
        .await?;
    assert!(resp.succeeded);
    assert!(resp.revision > before);
    assert_eq!(resp.responses.len(), 4);
    for r in &resp.responses[..3] {
        match r {
            TxnOpResponse::Put(p) => assert_eq!(p.revision, resp.revision),
            other => panic!("expected a put response, got {other:?}"),
        }
    }
    match &resp.responses[3] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kvs[0].value, b"to-delete");
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    let got = store.get(Get::prefix(prefix)).await?;
    assert_eq!(keys_of(&got.kvs), vec![a, b, c]);
    assert!(
        got.kvs
            .iter()
            .all(|kv| kv.mod_revision == resp.revision && kv.create_revision == resp.revision)
    );
    Ok(())
}

/// A failed compare runs the failure branch and returns its results; the
/// success branch writes nothing.
pub async fn case_txn_failure_branch<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lock = key(prefix, "lock");
    let other = key(prefix, "other");
    let r = put(store, &lock, "holder-1").await?;
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(lock.as_str())])
                .and_then([
                    Put::new(lock.as_str(), "holder-2").into(),
                    Put::new(other.as_str(), "x").into(),
                ])
                .or_else([Get::key(lock.as_str()).into()]),
        )
        .await?;
    assert!(!resp.succeeded);
    assert_eq!(resp.responses.len(), 1);
    match &resp.responses[0] {
        TxnOpResponse::Get(g) => {
            assert_eq!(g.kvs[0].value, b"holder-1");
            assert_eq!(g.kvs[0].mod_revision, r);
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    assert_eq!(
        get_one(store, &lock).await?.expect("lock").value,
        b"holder-1"
    );
    assert_eq!(get_one(store, &other).await?, None);
    // Writes in the failure branch happen.
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(lock.as_str())])
                .or_else([Put::new(other.as_str(), "from-failure").into()]),
        )
        .await?;
    assert!(!resp.succeeded);
    let kv = get_one(store, &other).await?.expect("failure branch wrote");
    assert_eq!(kv.mod_revision, resp.revision);
    Ok(())
}

/// Ops in a branch run in order: a get after a put sees the put.
pub async fn case_txn_ops_see_earlier_ops<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let a = key(prefix, "a");
    put(store, &a, "old").await?;
    let resp = store
        .txn(Txn::new().and_then([
            Get::key(a.as_str()).into(),
            Put::new(a.as_str(), "new").into(),
            Get::key(a.as_str()).into(),
        ]))
        .await?;
    let values: Vec<Vec<u8>> = resp
        .responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs[0].value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec![b"old".to_vec(), b"new".to_vec()]);
    Ok(())
}

/// An empty txn succeeds with no results.
pub async fn case_txn_empty<S: Store>(store: &S, _prefix: &str) -> Result<()> {
    let before = store.current_revision().await?;
    let resp = store.txn(Txn::new()).await?;
    assert!(resp.succeeded);
    assert!(resp.responses.is_empty());
    assert!(resp.revision >= before);
    Ok(())
}

/// One branch may not write a key twice; the same key in both branches, or
/// read and written, is fine.
pub async fn case_txn_duplicate_keys<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let a = key(prefix, "a");
    let dup = |e: &StoreError| matches!(e, StoreError::DuplicateKey { .. });
    expect_err(
        "two puts of one key",
        store
            .txn(Txn::new().and_then([
                Put::new(a.as_str(), "1").into(),
                Put::new(a.as_str(), "2").into(),
            ]))
            .await,
        dup,
    );
    expect_err(
        "a put under a deleted prefix",
        store
            .txn(Txn::new().and_then([
                Put::new(a.as_str(), "1").into(),
                Delete::prefix(prefix).into(),
            ]))
            .await,
        dup,
    );
    assert_eq!(
        get_one(store, &a).await?,
        None,
        "rejected txns wrote nothing"
    );
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(a.as_str())])
                .and_then([
                    Put::new(a.as_str(), "s").into(),
                    Get::key(a.as_str()).into(),
                ])
                .or_else([Put::new(a.as_str(), "f").into()]),
        )
        .await?;
    assert!(resp.succeeded);
    assert_eq!(get_one(store, &a).await?.expect("written").value, b"s");
    Ok(())
}

/// 129 ops in a branch are `TooManyOps` and write nothing; 128 pass.
pub async fn case_txn_too_many_ops<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| Put::new(key(prefix, &format!("k{i:03}")), "v").into())
            .collect()
    };
    match store.txn(Txn::new().and_then(ops(MAX_TXN_OPS + 1))).await {
        Err(StoreError::TooManyOps { ops, limit }) => {
            assert_eq!((ops, limit), (MAX_TXN_OPS + 1, MAX_TXN_OPS))
        }
        other => panic!("expected TooManyOps, got {other:?}"),
    }
    let compares: Vec<Compare> = (0..=MAX_TXN_OPS)
        .map(|i| Compare::absent(key(prefix, &format!("c{i}"))))
        .collect();
    expect_err(
        "129 compares",
        store.txn(Txn::new().when(compares)).await,
        |e| matches!(e, StoreError::TooManyOps { .. }),
    );
    assert_eq!(store.get(Get::prefix(prefix)).await?.count, 0);
    let resp = store.txn(Txn::new().and_then(ops(MAX_TXN_OPS))).await?;
    assert!(resp.succeeded);
    assert_eq!(
        store.get(Get::prefix(prefix).count_only()).await?.count,
        128
    );
    Ok(())
}

/// 16 tasks x 25 increments of one counter with mod-revision CAS retry loops
/// lose no increment.
pub async fn case_txn_cas_contention<S: Store>(store: &S, prefix: &str) -> Result<()> {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 25;
    const MAX_ATTEMPTS: usize = 10_000;
    let counter = key(prefix, "counter");
    put(store, &counter, "0").await?;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let counter = counter.clone();
        handles.push(tokio::spawn(async move {
            let mut attempts = 0;
            let mut seen = HashSet::new();
            for _ in 0..INCREMENTS {
                loop {
                    attempts += 1;
                    assert!(attempts < MAX_ATTEMPTS, "CAS made no progress");
                    let kv = get_one(&store, &counter).await?.expect("counter");
                    let n: u64 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                    let resp = store
                        .txn(
                            Txn::new()
                                .when([Compare::mod_revision(
                                    counter.as_str(),
                                    CompareOp::Equal,
                                    kv.mod_revision,
                                )])
                                .and_then([Put::new(counter.as_str(), (n + 1).to_string()).into()]),
                        )
                        .await?;
                    if resp.succeeded {
                        seen.insert(n + 1);
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, StoreError>(seen)
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        let seen = h.await.expect("task panicked")?;
        for n in seen {
            assert!(all.insert(n), "two tasks both wrote {n}");
        }
    }
    let expected = (TASKS * INCREMENTS) as u64;
    let kv = get_one(store, &counter).await?.expect("counter");
    assert_eq!(kv.value, expected.to_string().into_bytes());
    assert_eq!(kv.version, expected as i64 + 1);
    assert_eq!(all, (1..=expected).collect::<HashSet<_>>());
    Ok(())
}

/// Reads in a branch see the writes before them (and only those): a get
/// before the first write reads the old revision, a get after a put or a
/// delete reads the txn's own revision.
pub async fn case_txn_get_after_put_and_delete<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    let before = put(store, &a, "old").await?;
    put(store, &b, "doomed").await?;
    let resp = store
        .txn(Txn::new().and_then([
            Get::prefix(prefix).into(),
            Put::new(a.as_str(), "new").into(),
            Get::key(a.as_str()).into(),
            Delete::key(b.as_str()).into(),
            Put::new(c.as_str(), "born").into(),
            Get::prefix(prefix).into(),
        ]))
        .await?;
    assert!(resp.succeeded);
    let gets: Vec<&crate::GetResponse> = resp
        .responses
        .iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(gets.len(), 3);
    assert_eq!(gets[0].count, 2);
    assert!(
        gets[0].revision < resp.revision && gets[0].revision > before,
        "a read before the first write is at the old revision: {:?} vs {}",
        gets[0],
        resp.revision
    );
    let a_now = &gets[1].kvs[0];
    assert_eq!(a_now.value, b"new");
    assert_eq!((a_now.mod_revision, a_now.version), (resp.revision, 2));
    assert_eq!(a_now.create_revision, before);
    assert_eq!(gets[1].revision, resp.revision);
    assert_eq!(keys_of(&gets[2].kvs), vec![a.clone(), c.clone()]);
    assert_eq!(gets[2].kvs[1].create_revision, resp.revision);
    // A read in the txn may not name the txn's own, not yet written
    // revision. That revision is only known in advance when nobody else
    // writes in between: on a shared store, try until one attempt names the
    // next revision before anyone else takes it. When someone did, the read
    // names an existing revision and the txn runs, which is right too.
    const ATTEMPTS: usize = 200;
    let mut expected_a = b"new".to_vec();
    let mut rejected = false;
    for attempt in 0..ATTEMPTS {
        let future = store.current_revision().await? + 1;
        let value = format!("attempt-{attempt}");
        let result = store
            .txn(Txn::new().and_then([
                Put::new(a.as_str(), value.as_str()).into(),
                Get::key(a.as_str()).at_revision(future).into(),
            ]))
            .await;
        match result {
            Err(StoreError::FutureRevision { requested, .. }) => {
                // (`current` is not checked: etcd does not report it, the
                // adapter asks afterwards, when others may have written.)
                assert_eq!(requested, future);
                rejected = true;
                break;
            }
            Ok(resp) => {
                assert!(
                    resp.revision > future,
                    "the txn ran although its read named its own revision {future}: {resp:?}"
                );
                expected_a = value.into_bytes();
            }
            Err(e) => return Err(e),
        }
    }
    assert!(
        rejected,
        "in {ATTEMPTS} attempts no read of the txn's own revision was rejected"
    );
    assert_eq!(
        get_one(store, &a).await?.expect("a").value,
        expected_a,
        "the rejected txn wrote nothing"
    );
    Ok(())
}

/// A compare with a range end holds only if it holds for every key in the
/// range; an empty range compares like one missing key; `[0]` means every
/// key from `key` on.
pub async fn case_txn_compare_range<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (a, b, c) = (key(prefix, "r/a"), key(prefix, "r/b"), key(prefix, "r/c"));
    put(store, &a, "x").await?;
    put(store, &b, "x").await?;
    let rb = put(store, &b, "x").await?;
    use CompareOp::*;
    let over_a_to_c = |cmp: Compare| cmp.with_range_end(c.as_bytes().to_vec());
    assert!(holds(store, over_a_to_c(Compare::value(a.as_str(), Equal, "x"))).await?);
    assert!(holds(store, over_a_to_c(Compare::version(a.as_str(), Greater, 0))).await?);
    assert!(
        !holds(store, over_a_to_c(Compare::version(a.as_str(), Equal, 1))).await?,
        "b has version 2"
    );
    assert!(
        holds(
            store,
            over_a_to_c(Compare::mod_revision(a.as_str(), Less, rb + 1))
        )
        .await?
    );
    put(store, &c, "y").await?;
    let all = |cmp: Compare| cmp.over_prefix();
    assert!(!holds(store, all(Compare::value(key(prefix, "r/"), Equal, "x"))).await?);
    assert!(holds(store, all(Compare::value(key(prefix, "r/"), NotEqual, "z"))).await?);
    // The end is exclusive: c is outside [a, c).
    assert!(holds(store, over_a_to_c(Compare::value(a.as_str(), Equal, "x"))).await?);
    // An empty range: numbers compare as 0, values fail.
    let none = key(prefix, "none/");
    assert!(holds(store, all(Compare::version(none.as_str(), Equal, 0))).await?);
    assert!(holds(store, all(Compare::absent(none.as_str()))).await?);
    assert!(!holds(store, all(Compare::value(none.as_str(), NotEqual, "q"))).await?);
    // A range end before the key is an empty range too.
    assert!(
        holds(
            store,
            Compare::version(c.as_str(), Equal, 0).with_range_end(a.as_bytes().to_vec())
        )
        .await?
    );
    // From b on, every key (here and elsewhere on a shared store) exists,
    // but b's own mod revision is not below rb.
    let from_b = |cmp: Compare| cmp.with_range_end(vec![0]);
    assert!(
        holds(
            store,
            from_b(Compare::create_revision(b.as_str(), Greater, 0))
        )
        .await?
    );
    assert!(!holds(store, from_b(Compare::mod_revision(b.as_str(), Less, rb))).await?);
    // Range compares guard writes like single-key ones.
    let resp = store
        .txn(
            Txn::new()
                .when([all(Compare::value(key(prefix, "r/"), Greater, "w"))])
                .and_then([Put::new(key(prefix, "guarded"), "yes").into()]),
        )
        .await?;
    assert!(resp.succeeded);
    assert_eq!(
        get_one(store, &key(prefix, "guarded"))
            .await?
            .expect("written")
            .value,
        b"yes"
    );
    Ok(())
}

/// Nested txns (etcd 3.3+): every compare on the chosen path sees the
/// store before the txn, the chosen branches run in op order in one
/// revision, and the responses nest.
pub async fn case_txn_nested<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (cfg, x, y, lock) = (
        key(prefix, "cfg"),
        key(prefix, "x"),
        key(prefix, "y"),
        key(prefix, "lock"),
    );
    put(store, &cfg, "on").await?;
    let inner = Txn::new()
        .when([Compare::value(cfg.as_str(), CompareOp::Equal, "on")])
        .and_then([
            Put::new(x.as_str(), "then").into(),
            Get::key(x.as_str()).into(),
        ])
        .or_else([Put::new(y.as_str(), "else").into()]);
    let resp = store
        .txn(Txn::new().when([Compare::absent(lock.as_str())]).and_then([
            // Written before the nested compare, which still sees "on".
            Put::new(cfg.as_str(), "off").into(),
            inner.clone().into(),
            Get::prefix(prefix).into(),
            Put::new(lock.as_str(), "held").into(),
        ]))
        .await?;
    assert!(resp.succeeded);
    assert_eq!(resp.responses.len(), 4);
    let TxnOpResponse::Txn(nested) = &resp.responses[1] else {
        panic!(
            "expected a nested txn response, got {:?}",
            resp.responses[1]
        );
    };
    assert!(
        nested.succeeded,
        "nested compares see the store before the txn"
    );
    assert_eq!(nested.revision, resp.revision);
    assert_eq!(nested.responses.len(), 2);
    match (&nested.responses[0], &nested.responses[1]) {
        (TxnOpResponse::Put(p), TxnOpResponse::Get(g)) => {
            assert_eq!(p.revision, resp.revision);
            assert_eq!(g.kvs[0].value, b"then");
            assert_eq!(g.kvs[0].mod_revision, resp.revision);
        }
        other => panic!("unexpected nested responses {other:?}"),
    }
    let TxnOpResponse::Get(after) = &resp.responses[2] else {
        panic!("expected a get response, got {:?}", resp.responses[2]);
    };
    assert_eq!(keys_of(&after.kvs), vec![cfg.clone(), x.clone()]);
    let now = store.get(Get::prefix(prefix)).await?;
    assert_eq!(
        keys_of(&now.kvs),
        vec![cfg.clone(), lock.clone(), x.clone()]
    );
    assert!(
        now.kvs
            .iter()
            .skip(1)
            .all(|kv| kv.mod_revision == resp.revision)
    );
    assert_eq!(now.kvs[0].mod_revision, resp.revision);

    // The outer failure branch, a nested else, and a third level.
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(lock.as_str())])
                .and_then([Put::new(key(prefix, "never"), "1").into()])
                .or_else([
                    inner.clone().into(),
                    Txn::new()
                        .when([Compare::version(lock.as_str(), CompareOp::Equal, 1)])
                        .and_then([Txn::new()
                            .and_then([Delete::key(lock.as_str()).with_prev_kv().into()])
                            .into()])
                        .into(),
                ]),
        )
        .await?;
    assert!(!resp.succeeded);
    let TxnOpResponse::Txn(first) = &resp.responses[0] else {
        panic!("{:?}", resp.responses);
    };
    assert!(!first.succeeded, "cfg is off now: the nested else runs");
    assert!(matches!(&first.responses[0], TxnOpResponse::Put(p) if p.revision == resp.revision));
    let TxnOpResponse::Txn(second) = &resp.responses[1] else {
        panic!("{:?}", resp.responses);
    };
    assert!(second.succeeded);
    let TxnOpResponse::Txn(third) = &second.responses[0] else {
        panic!("{:?}", second.responses);
    };
    assert!(third.succeeded, "no compares hold trivially");
    assert!(
        matches!(&third.responses[0], TxnOpResponse::Delete(d) if d.deleted == 1 && d.prev_kvs[0].value == b"held")
    );
    assert_eq!(
        get_one(store, &y)
            .await?
            .expect("else wrote y")
            .mod_revision,
        resp.revision
    );
    assert_eq!(get_one(store, &lock).await?, None);
    assert_eq!(get_one(store, &key(prefix, "never")).await?, None);

    // Then and else of one nested txn may write the same key.
    let both = Txn::new().and_then([Txn::new()
        .when([Compare::absent(x.as_str())])
        .and_then([Put::new(y.as_str(), "then").into()])
        .or_else([Put::new(y.as_str(), "else2").into()])
        .into()]);
    assert!(store.txn(both).await?.succeeded);
    assert_eq!(get_one(store, &y).await?.expect("y").value, b"else2");
    Ok(())
}

/// Bad nested txns are rejected like flat ones and write nothing: overlapping
/// writes of siblings, too many ops along a path, an unknown lease or a
/// missing key for a keeping put on the chosen path, a future read.
pub async fn case_txn_nested_bad_requests<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    let nested_put = |k: &str| -> TxnOp { Txn::new().and_then([Put::new(k, "v").into()]).into() };
    let dup = |e: &StoreError| matches!(e, StoreError::DuplicateKey { .. });
    expect_err(
        "sibling nested txns writing one key",
        store
            .txn(Txn::new().and_then([nested_put(&a), nested_put(&a)]))
            .await,
        dup,
    );
    expect_err(
        "a nested put under an outer delete",
        store
            .txn(Txn::new().and_then([Delete::prefix(prefix).into(), nested_put(&a)]))
            .await,
        dup,
    );
    let many: Vec<TxnOp> = (0..MAX_TXN_OPS)
        .map(|i| Put::new(key(prefix, &format!("k{i:03}")), "v").into())
        .collect();
    expect_err(
        "a nested txn over what its parent left",
        store
            .txn(Txn::new().and_then([
                Txn::new().and_then(many).into(),
                Put::new(b.as_str(), "v").into(),
            ]))
            .await,
        |e| matches!(e, StoreError::TooManyOps { .. }),
    );
    expect_err(
        "an unknown lease on the nested path",
        store
            .txn(
                Txn::new().and_then([
                    Put::new(b.as_str(), "v").into(),
                    Txn::new()
                        .and_then([Put::new(a.as_str(), "v").with_lease(UNKNOWN_LEASE).into()])
                        .into(),
                ]),
            )
            .await,
        |e| matches!(e, StoreError::LeaseNotFound(_)),
    );
    expect_err(
        "a keeping put of a missing key on the nested path",
        store
            .txn(
                Txn::new().and_then([
                    Put::new(b.as_str(), "v").into(),
                    Txn::new()
                        .and_then([Put::new(a.as_str(), "").ignoring_value().into()])
                        .into(),
                ]),
            )
            .await,
        |e| matches!(e, StoreError::KeyNotFound { .. }),
    );
    let future = store.current_revision().await? + 1_000_000;
    expect_err(
        "a future read on the nested path",
        store
            .txn(
                Txn::new().and_then([
                    Put::new(b.as_str(), "v").into(),
                    Txn::new()
                        .and_then([Get::key(a.as_str()).at_revision(future).into()])
                        .into(),
                ]),
            )
            .await,
        |e| matches!(e, StoreError::FutureRevision { requested, .. } if *requested == future),
    );
    assert_eq!(
        store.get(Get::prefix(prefix)).await?.count,
        0,
        "nothing written"
    );
    // Off the chosen path nothing is checked (as etcd): the unknown lease
    // sits in the nested else, which does not run.
    let resp = store
        .txn(
            Txn::new().and_then([Txn::new()
                .and_then([Put::new(a.as_str(), "ok").into()])
                .or_else([Put::new(a.as_str(), "v").with_lease(UNKNOWN_LEASE).into()])
                .into()]),
        )
        .await?;
    assert!(resp.succeeded);
    assert_eq!(get_one(store, &a).await?.expect("a").value, b"ok");
    Ok(())
}
