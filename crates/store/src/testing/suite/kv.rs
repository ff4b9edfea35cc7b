//! Conformance cases: puts, gets, deletes, revisions, validation, compaction.

use super::util::*;
use crate::{
    Delete, Get, KeyRange, MAX_REQUEST_BYTES, Put, Result, SortOrder, SortTarget, Store,
    StoreError, Txn, Watch,
};

/// A put's revision is the kv's create and mod revision; version 1; no lease.
pub async fn case_put_then_get<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let resp = store.put(Put::new(k.as_str(), "v1")).await?;
    assert!(resp.revision > 1);
    assert_eq!(resp.prev_kv, None);
    let got = store.get(Get::key(k.as_str())).await?;
    assert!(
        got.revision >= resp.revision,
        "read served at an older revision"
    );
    assert_eq!(got.count, 1);
    assert!(!got.more);
    let kv = &got.kvs[0];
    assert_eq!(kv.key, k.as_bytes());
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.create_revision, resp.revision);
    assert_eq!(kv.mod_revision, resp.revision);
    assert_eq!(kv.version, 1);
    assert_eq!(kv.lease, 0);
    assert!(store.current_revision().await? >= resp.revision);
    Ok(())
}

/// A missing key reads as nothing, not an error.
pub async fn case_get_missing_key<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let got = store.get(Get::key(key(prefix, "missing"))).await?;
    assert!(got.kvs.is_empty());
    assert_eq!(got.count, 0);
    assert!(!got.more);
    assert!(got.revision > 0);
    let got = store.get(Get::prefix(key(prefix, "nothing/"))).await?;
    assert_eq!((got.kvs.len(), got.count), (0, 0));
    Ok(())
}

/// Overwrites bump version and mod revision and keep the create revision.
pub async fn case_overwrite_bumps_version<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "1").await?;
    let r2 = put(store, &k, "2").await?;
    let r3 = put(store, &k, "3").await?;
    assert!(
        r1 < r2 && r2 < r3,
        "revisions {r1} {r2} {r3} not increasing"
    );
    let kv = get_one(store, &k).await?.expect("key exists");
    assert_eq!(kv.value, b"3");
    assert_eq!(kv.version, 3);
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r3);
    Ok(())
}

/// `prev_kv` returns the previous value and metadata, and nothing for a new key.
pub async fn case_put_prev_kv<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let first = store
        .put(Put::new(k.as_str(), "old").with_prev_kv())
        .await?;
    assert_eq!(first.prev_kv, None);
    let second = store
        .put(Put::new(k.as_str(), "new").with_prev_kv())
        .await?;
    let prev = second.prev_kv.expect("previous kv returned");
    assert_eq!(prev.value, b"old");
    assert_eq!(prev.version, 1);
    assert_eq!(prev.mod_revision, first.revision);
    assert_eq!(prev.create_revision, first.revision);
    // Without the flag nothing is returned.
    let third = store.put(Put::new(k.as_str(), "newer")).await?;
    assert_eq!(third.prev_kv, None);
    Ok(())
}

/// A re-created key starts over: version 1 and a new create revision.
pub async fn case_recreate_after_delete_resets_version<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "1").await?;
    put(store, &k, "2").await?;
    let del = store.delete(Delete::key(k.as_str())).await?;
    assert_eq!(del.deleted, 1);
    assert_eq!(get_one(store, &k).await?, None);
    let r4 = put(store, &k, "again").await?;
    assert!(r4 > del.revision);
    let kv = get_one(store, &k).await?.expect("re-created");
    assert_eq!(kv.version, 1);
    assert_eq!(kv.create_revision, r4);
    assert_ne!(kv.create_revision, r1);
    Ok(())
}

/// Deleting one key returns it with `prev_kv` and removes it.
pub async fn case_delete_key_prev_kv<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r = put(store, &k, "v").await?;
    let del = store.delete(Delete::key(k.as_str()).with_prev_kv()).await?;
    assert_eq!(del.deleted, 1);
    assert!(del.revision > r);
    assert_eq!(del.prev_kvs.len(), 1);
    assert_eq!(del.prev_kvs[0].value, b"v");
    assert_eq!(del.prev_kvs[0].mod_revision, r);
    assert_eq!(get_one(store, &k).await?, None);
    // Without the flag: count only.
    put(store, &k, "v").await?;
    let del = store.delete(Delete::key(k.as_str())).await?;
    assert_eq!((del.deleted, del.prev_kvs.len()), (1, 0));
    Ok(())
}

/// Deleting nothing reports 0 and writes no event.
pub async fn case_delete_nothing<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let before = store.current_revision().await?;
    let mut watch = store
        .watch(Watch::prefix(prefix).from_revision(before + 1))
        .await?;
    let del = store
        .delete(Delete::key(key(prefix, "missing")).with_prev_kv())
        .await?;
    assert_eq!(del.deleted, 0);
    assert!(del.prev_kvs.is_empty());
    assert!(del.revision >= before);
    let del = store.delete(Delete::prefix(key(prefix, "none/"))).await?;
    assert_eq!(del.deleted, 0);
    assert_quiet_until(store, &mut watch, &key(prefix, "sentinel")).await
}

/// A prefix delete removes exactly the prefix's keys, in one revision.
pub async fn case_delete_prefix<S: Store>(store: &S, prefix: &str) -> Result<()> {
    for name in ["dir/a", "dir/b", "dir/c", "dirx", "other"] {
        put(store, &key(prefix, name), name).await?;
    }
    let start = store.current_revision().await?;
    let mut watch = store
        .watch(Watch::prefix(prefix).from_revision(start + 1))
        .await?;
    let del = store
        .delete(Delete::prefix(key(prefix, "dir/")).with_prev_kv())
        .await?;
    assert_eq!(del.deleted, 3);
    let mut prev = keys_of(&del.prev_kvs);
    prev.sort();
    assert_eq!(
        prev,
        ["dir/a", "dir/b", "dir/c"].map(|n| key(prefix, n)).to_vec()
    );
    let left = store.get(Get::prefix(prefix)).await?;
    assert_eq!(
        keys_of(&left.kvs),
        vec![key(prefix, "dirx"), key(prefix, "other")]
    );
    let events = next_events(&mut watch, 3).await?;
    assert!(events.iter().all(|e| e.kind == crate::EventKind::Delete));
    assert!(
        events.iter().all(|e| e.kv.mod_revision == del.revision),
        "one revision for the whole delete: {events:#?}"
    );
    Ok(())
}

/// A `[start, end)` delete spares `end`.
pub async fn case_delete_range<S: Store>(store: &S, prefix: &str) -> Result<()> {
    for name in ["a", "b", "c", "d"] {
        put(store, &key(prefix, name), name).await?;
    }
    let del = store
        .delete(Delete {
            range: KeyRange::Range {
                start: key(prefix, "b").into_bytes(),
                end: key(prefix, "d").into_bytes(),
            },
            prev_kv: false,
        })
        .await?;
    assert_eq!(del.deleted, 2);
    let left = store.get(Get::prefix(prefix)).await?;
    assert_eq!(keys_of(&left.kvs), vec![key(prefix, "a"), key(prefix, "d")]);
    Ok(())
}

/// Prefix and range reads return keys in ascending key order by default.
pub async fn case_get_prefix_and_range<S: Store>(store: &S, prefix: &str) -> Result<()> {
    for name in ["c", "a", "b/1", "b", "bb", "d"] {
        put(store, &key(prefix, name), name).await?;
    }
    put(
        store,
        &format!("{}x", prefix.trim_end_matches('/')),
        "sibling",
    )
    .await?;
    let all = store.get(Get::prefix(prefix)).await?;
    assert_eq!(
        keys_of(&all.kvs),
        ["a", "b", "b/1", "bb", "c", "d"]
            .map(|n| key(prefix, n))
            .to_vec()
    );
    assert_eq!(all.count, 6);
    let b = store.get(Get::prefix(key(prefix, "b"))).await?;
    assert_eq!(
        keys_of(&b.kvs),
        ["b", "b/1", "bb"].map(|n| key(prefix, n)).to_vec()
    );
    let range = store
        .get(Get::new(KeyRange::Range {
            start: key(prefix, "b").into_bytes(),
            end: key(prefix, "c").into_bytes(),
        }))
        .await?;
    assert_eq!(
        keys_of(&range.kvs),
        ["b", "b/1", "bb"].map(|n| key(prefix, n)).to_vec()
    );
    Ok(())
}

/// `limit` cuts the result; `count` still counts the whole range; `more` says so.
pub async fn case_get_limit_count_more<S: Store>(store: &S, prefix: &str) -> Result<()> {
    for i in 0..5 {
        put(store, &key(prefix, &format!("k{i}")), "v").await?;
    }
    let got = store.get(Get::prefix(prefix).with_limit(2)).await?;
    assert_eq!(
        keys_of(&got.kvs),
        vec![key(prefix, "k0"), key(prefix, "k1")]
    );
    assert_eq!(got.count, 5);
    assert!(got.more);
    let got = store.get(Get::prefix(prefix).with_limit(5)).await?;
    assert_eq!((got.kvs.len(), got.count, got.more), (5, 5, false));
    let got = store.get(Get::prefix(prefix).with_limit(50)).await?;
    assert_eq!((got.kvs.len(), got.count, got.more), (5, 5, false));
    let got = store.get(Get::prefix(prefix).with_limit(0)).await?;
    assert_eq!((got.kvs.len(), got.more), (5, false));
    Ok(())
}

/// Every sort target in both orders.
pub async fn case_get_sorted<S: Store>(store: &S, prefix: &str) -> Result<()> {
    // Created in the order a, b, c; values reverse the key order; b is
    // updated last (highest mod revision) and most often (highest version).
    put(store, &key(prefix, "a"), "3").await?;
    put(store, &key(prefix, "b"), "2").await?;
    put(store, &key(prefix, "c"), "1").await?;
    put(store, &key(prefix, "c"), "1").await?;
    put(store, &key(prefix, "b"), "2").await?;
    put(store, &key(prefix, "b"), "2").await?;
    let order = |target, order| {
        let store = store.clone();
        let prefix = prefix.to_owned();
        async move {
            let got = store
                .get(Get::prefix(prefix.as_str()).sorted(target, order))
                .await?;
            Ok::<_, StoreError>(
                got.kvs
                    .iter()
                    .map(|kv| kv.key_str().trim_start_matches(prefix.as_str()).to_owned())
                    .collect::<Vec<_>>(),
            )
        }
    };
    use SortOrder::{Ascend, Descend};
    use SortTarget::*;
    assert_eq!(order(Key, Ascend).await?, ["a", "b", "c"]);
    assert_eq!(order(Key, Descend).await?, ["c", "b", "a"]);
    assert_eq!(order(Value, Ascend).await?, ["c", "b", "a"]);
    assert_eq!(order(Value, Descend).await?, ["a", "b", "c"]);
    assert_eq!(order(CreateRevision, Ascend).await?, ["a", "b", "c"]);
    assert_eq!(order(CreateRevision, Descend).await?, ["c", "b", "a"]);
    assert_eq!(order(ModRevision, Ascend).await?, ["a", "c", "b"]);
    assert_eq!(order(ModRevision, Descend).await?, ["b", "c", "a"]);
    assert_eq!(order(Version, Ascend).await?, ["a", "c", "b"]);
    assert_eq!(order(Version, Descend).await?, ["b", "c", "a"]);
    // Sorting applies before the limit (etcd's "last created" query).
    let last = store
        .get(
            Get::prefix(prefix)
                .sorted(CreateRevision, Descend)
                .with_limit(1),
        )
        .await?;
    assert_eq!(keys_of(&last.kvs), vec![key(prefix, "c")]);
    assert_eq!(last.count, 3);
    assert!(last.more);
    Ok(())
}

/// `max_create_revision` hides keys created later (etcd election's "my
/// predecessor" query).
pub async fn case_get_max_create_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let _r1 = put(store, &key(prefix, "a"), "1").await?;
    let r2 = put(store, &key(prefix, "b"), "2").await?;
    let _r3 = put(store, &key(prefix, "c"), "3").await?;
    // Updating a key does not change its create revision.
    put(store, &key(prefix, "a"), "1b").await?;
    let got = store
        .get(Get::prefix(prefix).with_max_create_revision(r2))
        .await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "a"), key(prefix, "b")]);
    // As etcd: `count` is the size of the range before the filter.
    assert_eq!(got.count, 3);
    let pred = store
        .get(
            Get::prefix(prefix)
                .with_max_create_revision(r2 - 1)
                .sorted(SortTarget::CreateRevision, SortOrder::Descend)
                .with_limit(1),
        )
        .await?;
    assert_eq!(keys_of(&pred.kvs), vec![key(prefix, "a")]);
    Ok(())
}

/// `keys_only` drops values but keeps metadata; `count_only` returns no kvs.
pub async fn case_get_keys_only_and_count_only<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let r = put(store, &key(prefix, "a"), "value-a").await?;
    put(store, &key(prefix, "b"), "value-b").await?;
    let got = store.get(Get::prefix(prefix).keys_only()).await?;
    assert_eq!(got.kvs.len(), 2);
    assert!(got.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(got.kvs[0].mod_revision, r);
    assert_eq!(got.kvs[0].version, 1);
    let got = store.get(Get::prefix(prefix).count_only()).await?;
    assert!(got.kvs.is_empty());
    assert_eq!(got.count, 2);
    Ok(())
}

/// Reads at past revisions see the store as it was.
pub async fn case_get_at_past_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "v1").await?;
    let r2 = put(store, &k, "v2").await?;
    let r_b = put(store, &key(prefix, "b"), "b").await?;
    let r3 = store.delete(Delete::key(k.as_str())).await?.revision;
    let at = |rev| store.get(Get::key(k.as_str()).at_revision(rev));
    let kv1 = at(r1).await?.kvs;
    assert_eq!(kv1.len(), 1);
    assert_eq!((kv1[0].value.as_slice(), kv1[0].version), (&b"v1"[..], 1));
    let kv2 = at(r2).await?.kvs;
    assert_eq!((kv2[0].value.as_slice(), kv2[0].version), (&b"v2"[..], 2));
    assert_eq!(kv2[0].create_revision, r1);
    assert!(at(r3).await?.kvs.is_empty());
    assert!(at(r1 - 1).await?.kvs.is_empty(), "before creation");
    let all_at_r2 = store.get(Get::prefix(prefix).at_revision(r2)).await?;
    assert_eq!(keys_of(&all_at_r2.kvs), vec![k.clone()]);
    let all_at_rb = store.get(Get::prefix(prefix).at_revision(r_b)).await?;
    assert_eq!(all_at_rb.count, 2);
    Ok(())
}

/// A read beyond the current revision is `FutureRevision`.
pub async fn case_get_future_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let r = put(store, &key(prefix, "a"), "v").await?;
    expect_err(
        "get at a future revision",
        store
            .get(Get::key(key(prefix, "a")).at_revision(r + 1_000_000))
            .await,
        |e| matches!(e, StoreError::FutureRevision { .. }),
    );
    Ok(())
}

/// Reads below the compaction point are `Compacted`; at it, they work.
pub async fn case_get_compacted_revision<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "v1").await?;
    let r2 = put(store, &k, "v2").await?;
    super::compact_own_history(store, r2).await?;
    match store.get(Get::key(k.as_str()).at_revision(r1)).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => {
            assert_eq!(requested, r1);
            assert!(compact_revision >= r2);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let at_r2 = store.get(Get::key(k.as_str()).at_revision(r2)).await?;
    assert_eq!(at_r2.kvs[0].value, b"v2");
    let status = store.status().await?;
    assert!(status.compact_revision >= r2, "{status:?}");
    // Compaction keeps the current state.
    assert_eq!(get_one(store, &k).await?.expect("kept").version, 2);
    Ok(())
}

/// Revisions are global and increase with every write; a put's revision is
/// its kv's mod revision.
pub async fn case_revisions_increase<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let mut last = store.current_revision().await?;
    for i in 0..10 {
        let k = key(prefix, &format!("k{}", i % 3));
        let r = put(store, &k, "v").await?;
        assert!(r > last, "revision {r} after {last}");
        assert_eq!(get_one(store, &k).await?.expect("written").mod_revision, r);
        last = r;
    }
    assert!(store.current_revision().await? >= last);
    Ok(())
}

/// Empty keys are `InvalidArgument` everywhere and change nothing.
pub async fn case_empty_key_is_invalid<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let invalid = |e: &StoreError| matches!(e, StoreError::InvalidArgument(_));
    expect_err("put", store.put(Put::new("", "v")).await, invalid);
    expect_err("get", store.get(Get::key("")).await, invalid);
    expect_err("delete", store.delete(Delete::key("")).await, invalid);
    expect_err(
        "watch",
        store.watch(Watch::key("")).await.map(|_| ()),
        invalid,
    );
    let k = key(prefix, "a");
    expect_err(
        "txn put",
        store
            .txn(Txn::new().and_then([Put::new(k.as_str(), "1").into(), Put::new("", "2").into()]))
            .await,
        invalid,
    );
    expect_err(
        "txn compare",
        store
            .txn(
                Txn::new()
                    .when([crate::Compare::absent("")])
                    .and_then([Put::new(k.as_str(), "1").into()]),
            )
            .await,
        invalid,
    );
    assert_eq!(
        get_one(store, &k).await?,
        None,
        "a rejected txn wrote nothing"
    );
    Ok(())
}

/// etcd's request limit: 1 MiB passes, 1.5 MiB + 1 KiB is `RequestTooLarge`
/// and writes nothing.
pub async fn case_request_size_limit<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "big");
    let too_big = vec![b'x'; MAX_REQUEST_BYTES + 1024];
    expect_err(
        "oversized put",
        store.put(Put::new(k.as_str(), too_big.clone())).await,
        |e| matches!(e, StoreError::RequestTooLarge { .. }),
    );
    expect_err(
        "oversized txn",
        store
            .txn(Txn::new().and_then([Put::new(k.as_str(), too_big).into()]))
            .await,
        |e| matches!(e, StoreError::RequestTooLarge { .. }),
    );
    assert_eq!(get_one(store, &k).await?, None);
    let one_mib = vec![b'y'; 1024 * 1024];
    store.put(Put::new(k.as_str(), one_mib.clone())).await?;
    let kv = get_one(store, &k).await?.expect("1 MiB value stored");
    assert!(kv.value == one_mib, "1 MiB value read back differs");
    Ok(())
}

/// Values and keys are bytes: non-UTF-8 and empty values round-trip.
pub async fn case_binary_and_empty_values<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let mut k = key(prefix, "bin-").into_bytes();
    k.extend_from_slice(&[0xff, 0x00, 0xfe]);
    let value = vec![0u8, 0xff, 0x80, 0x7f];
    store.put(Put::new(k.clone(), value.clone())).await?;
    let got = store.get(Get::key(k.clone())).await?;
    assert_eq!(got.kvs[0].value, value);
    assert_eq!(got.kvs[0].key, k);
    let e = key(prefix, "empty");
    store.put(Put::new(e.as_str(), Vec::new())).await?;
    let kv = get_one(store, &e)
        .await?
        .expect("an empty value is a value");
    assert!(kv.value.is_empty());
    assert_eq!(kv.version, 1);
    Ok(())
}

/// Writing the same value again is still a write: new revision, version + 1.
pub async fn case_put_same_value_is_a_write<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "a");
    let r1 = put(store, &k, "same").await?;
    let r2 = put(store, &k, "same").await?;
    assert!(r2 > r1);
    let kv = get_one(store, &k).await?.expect("written");
    assert_eq!(
        (kv.version, kv.mod_revision, kv.create_revision),
        (2, r2, r1)
    );
    Ok(())
}

/// A limited read at a past revision counts and cuts the past, not the
/// present; the header revision is the store's current revision (as etcd).
pub async fn case_get_limit_and_count_at_past_revision<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    for name in ["a", "b", "c"] {
        put(store, &key(prefix, name), name).await?;
    }
    let past = store.current_revision().await?;
    store.delete(Delete::key(key(prefix, "b"))).await?;
    store.delete(Delete::key(key(prefix, "c"))).await?;
    let now = put(store, &key(prefix, "d"), "d").await?;

    let got = store
        .get(Get::prefix(prefix).at_revision(past).with_limit(2))
        .await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "a"), key(prefix, "b")]);
    assert_eq!((got.count, got.more), (3, true));
    assert!(
        got.revision >= now,
        "header revision is the current one: {got:?}"
    );

    let counted = store
        .get(Get::prefix(prefix).at_revision(past).count_only())
        .await?;
    assert_eq!((counted.count, counted.kvs.len()), (3, 0));
    let counted = store.get(Get::prefix(prefix).count_only()).await?;
    assert_eq!(counted.count, 2, "a and d now");
    Ok(())
}

/// Sorting by value or version happens before the limit cuts the result.
pub async fn case_get_sorted_by_value_and_version_with_limit<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    // Values and versions both run against the key order.
    for (name, value, writes) in [("a", "3", 1), ("b", "1", 3), ("c", "2", 2)] {
        for _ in 0..writes {
            put(store, &key(prefix, name), value).await?;
        }
    }
    let top = |target, order| store.get(Get::prefix(prefix).sorted(target, order).with_limit(2));
    let got = top(SortTarget::Value, SortOrder::Descend).await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "a"), key(prefix, "c")]);
    assert_eq!((got.count, got.more), (3, true));
    let got = top(SortTarget::Value, SortOrder::Ascend).await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "b"), key(prefix, "c")]);
    let got = top(SortTarget::Version, SortOrder::Descend).await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "b"), key(prefix, "c")]);
    let got = top(SortTarget::Version, SortOrder::Ascend).await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "a"), key(prefix, "c")]);
    assert!(got.more);
    Ok(())
}

/// A range delete reports its previous key-values in key order, whatever
/// the order the keys were written in, and its watch events follow it.
pub async fn case_delete_range_prev_kvs_in_key_order<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    for name in ["c", "a", "d", "b"] {
        put(store, &key(prefix, name), name).await?;
    }
    let start = store.current_revision().await?;
    let mut watch = store
        .watch(Watch::prefix(prefix).from_revision(start + 1))
        .await?;
    let del = store.delete(Delete::prefix(prefix).with_prev_kv()).await?;
    let want = ["a", "b", "c", "d"].map(|n| key(prefix, n)).to_vec();
    assert_eq!(keys_of(&del.prev_kvs), want);
    let values: Vec<&[u8]> = del.prev_kvs.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, vec![&b"a"[..], b"b", b"c", b"d"]);
    let events = next_events(&mut watch, 4).await?;
    let keys: Vec<String> = events.iter().map(|e| e.kv.key_str().into_owned()).collect();
    assert_eq!(keys, want);
    Ok(())
}

/// Mod and create revision filters keep the keys within their bounds, apply
/// after the range read (so `count` is the whole range, as etcd) and before
/// sorting and `limit` (so `more` says whether filtered keys were cut).
pub async fn case_get_revision_filters<S: Store>(store: &S, prefix: &str) -> Result<()> {
    // a: created r1, modified r4; b: r2/r2; c: r3/r3.
    let r1 = put(store, &key(prefix, "a"), "a1").await?;
    let r2 = put(store, &key(prefix, "b"), "b").await?;
    let r3 = put(store, &key(prefix, "c"), "c").await?;
    let r4 = put(store, &key(prefix, "a"), "a2").await?;
    let names = |got: &crate::GetResponse| -> Vec<String> {
        got.kvs
            .iter()
            .map(|kv| kv.key_str().trim_start_matches(prefix).to_owned())
            .collect()
    };
    let all = || Get::prefix(prefix);
    let got = store.get(all().with_min_mod_revision(r3)).await?;
    assert_eq!(names(&got), ["a", "c"]);
    assert_eq!((got.count, got.more), (3, false), "count ignores filters");
    let got = store.get(all().with_max_mod_revision(r3)).await?;
    assert_eq!(names(&got), ["b", "c"]);
    let got = store.get(all().with_min_create_revision(r2)).await?;
    assert_eq!(names(&got), ["b", "c"]);
    let got = store.get(all().with_max_create_revision(r1)).await?;
    assert_eq!(names(&got), ["a"]);
    // Bounds are inclusive and combine (AND).
    let got = store
        .get(all().with_min_create_revision(r2).with_max_mod_revision(r2))
        .await?;
    assert_eq!(names(&got), ["b"]);
    let got = store
        .get(all().with_min_mod_revision(r4).with_max_mod_revision(r4))
        .await?;
    assert_eq!(names(&got), ["a"]);
    assert_eq!(got.kvs[0].value, b"a2");
    let got = store
        .get(
            all()
                .with_min_mod_revision(r4)
                .with_max_create_revision(r1 - 1),
        )
        .await?;
    assert!(got.kvs.is_empty());
    assert_eq!((got.count, got.more), (3, false));
    // The limit cuts the filtered result; `more` only when it did.
    let got = store
        .get(all().with_min_mod_revision(r3).with_limit(2))
        .await?;
    assert_eq!(
        (names(&got), got.count, got.more),
        (vec!["a".into(), "c".into()], 3, false)
    );
    let got = store
        .get(all().with_min_mod_revision(r3).with_limit(1))
        .await?;
    assert_eq!(
        (names(&got), got.count, got.more),
        (vec!["a".into()], 3, true)
    );
    // Filters apply before sorting.
    let got = store
        .get(
            all()
                .with_max_mod_revision(r3)
                .sorted(SortTarget::ModRevision, SortOrder::Descend),
        )
        .await?;
    assert_eq!(names(&got), ["c", "b"]);
    // With count_only the count is the whole range.
    let got = store
        .get(all().with_min_mod_revision(r4).count_only())
        .await?;
    assert_eq!((got.count, got.kvs.len()), (3, 0));
    // At a past revision the filters see that revision's metadata.
    let got = store
        .get(all().at_revision(r3).with_min_mod_revision(r2))
        .await?;
    assert_eq!(names(&got), ["b", "c"]);
    Ok(())
}

/// A serializable read sees what this client wrote (one member: nothing is
/// stale) and validates like any read.
pub async fn case_get_serializable<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let r = put(store, &key(prefix, "a"), "v").await?;
    let got = store.get(Get::key(key(prefix, "a")).serializable()).await?;
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(
        (got.kvs[0].value.as_slice(), got.kvs[0].mod_revision),
        (&b"v"[..], r)
    );
    assert!(got.revision >= r);
    let got = store
        .get(
            Get::prefix(prefix)
                .serializable()
                .at_revision(r)
                .count_only(),
        )
        .await?;
    assert_eq!(got.count, 1);
    expect_err(
        "serializable read of an empty key",
        store.get(Get::key("").serializable()).await,
        |e| matches!(e, StoreError::InvalidArgument(_)),
    );
    Ok(())
}

/// Negative filters, limits or revisions are `InvalidArgument`.
pub async fn case_get_negative_fields_are_invalid<S: Store>(store: &S, prefix: &str) -> Result<()> {
    put(store, &key(prefix, "a"), "v").await?;
    let invalid =
        |e: &StoreError| matches!(e, StoreError::InvalidArgument(m) if m.contains("negative"));
    for (what, get) in [
        ("limit", Get::prefix(prefix).with_limit(-1)),
        ("revision", Get::prefix(prefix).at_revision(-1)),
        (
            "min_mod_revision",
            Get::prefix(prefix).with_min_mod_revision(-1),
        ),
        (
            "max_mod_revision",
            Get::prefix(prefix).with_max_mod_revision(-1),
        ),
        (
            "min_create_revision",
            Get::prefix(prefix).with_min_create_revision(-1),
        ),
        (
            "max_create_revision",
            Get::prefix(prefix).with_max_create_revision(-1),
        ),
    ] {
        expect_err(what, store.get(get.clone()).await, invalid);
        expect_err(
            what,
            store.txn(Txn::new().and_then([get.into()])).await,
            invalid,
        );
    }
    Ok(())
}

/// `ignore_value` and `ignore_lease` keep the key's current value or lease
/// while the put still writes (new revision, version + 1).
pub async fn case_put_ignore_value_and_lease<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let k = key(prefix, "k");
    let lease = store.lease_grant(60).await?.id;
    let r1 = store
        .put(Put::new(k.as_str(), "v1").with_lease(lease))
        .await?
        .revision;
    // Keep both: a pure "touch".
    let touched = store
        .put(
            Put::new(k.as_str(), "")
                .ignoring_value()
                .ignoring_lease()
                .with_prev_kv(),
        )
        .await?;
    assert!(touched.revision > r1);
    let prev = touched.prev_kv.expect("prev_kv asked for");
    assert_eq!((prev.value.as_slice(), prev.version), (&b"v1"[..], 1));
    let kv = get_one(store, &k).await?.expect("k");
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.lease,
            kv.version,
            kv.mod_revision,
            kv.create_revision
        ),
        (&b"v1"[..], lease, 2, touched.revision, r1)
    );
    // New value, same lease.
    store
        .put(Put::new(k.as_str(), "v2").ignoring_lease())
        .await?;
    let kv = get_one(store, &k).await?.expect("k");
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v2"[..], lease, 3)
    );
    assert_eq!(
        store.lease_time_to_live(lease).await?.keys,
        vec![k.clone().into_bytes()]
    );
    // Same value, no lease: the key leaves the lease.
    store.put(Put::new(k.as_str(), "").ignoring_value()).await?;
    let kv = get_one(store, &k).await?.expect("k");
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v2"[..], 0, 4)
    );
    assert!(store.lease_time_to_live(lease).await?.keys.is_empty());
    // In a txn, as the only write of the branch.
    let resp = store
        .txn(
            Txn::new().and_then([
                Put::new(k.as_str(), "")
                    .ignoring_value()
                    .with_lease(lease)
                    .into(),
                Get::key(k.as_str()).into(),
            ]),
        )
        .await?;
    match &resp.responses[1] {
        crate::TxnOpResponse::Get(g) => {
            assert_eq!(
                (g.kvs[0].value.as_slice(), g.kvs[0].lease),
                (&b"v2"[..], lease)
            );
        }
        other => panic!("expected a get response, got {other:?}"),
    }
    store.lease_revoke(lease).await?;
    assert_eq!(
        get_one(store, &k).await?,
        None,
        "revoking the lease deleted k"
    );
    Ok(())
}

/// Bad `ignore_*` puts change nothing: a missing key is `KeyNotFound` (also
/// in a txn, whose other writes do not happen), a value next to
/// `ignore_value` is `ValueProvided`, a lease next to `ignore_lease` is
/// `LeaseProvided`, and an unknown lease is reported before a missing key
/// (etcd's order).
pub async fn case_put_ignore_bad_requests<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let (k, missing, other) = (
        key(prefix, "k"),
        key(prefix, "missing"),
        key(prefix, "other"),
    );
    let r = put(store, &k, "v").await?;
    let not_found =
        |e: &StoreError| matches!(e, StoreError::KeyNotFound { key } if *key == missing);
    expect_err(
        "ignore_value on a missing key",
        store
            .put(Put::new(missing.as_str(), "").ignoring_value())
            .await,
        not_found,
    );
    expect_err(
        "ignore_lease on a missing key",
        store
            .put(Put::new(missing.as_str(), "x").ignoring_lease())
            .await,
        not_found,
    );
    expect_err(
        "a txn with ignore_value on a missing key",
        store
            .txn(Txn::new().and_then([
                Put::new(other.as_str(), "x").into(),
                Put::new(missing.as_str(), "").ignoring_value().into(),
            ]))
            .await,
        not_found,
    );
    expect_err(
        "ignore_value with a value",
        store.put(Put::new(k.as_str(), "x").ignoring_value()).await,
        |e| matches!(e, StoreError::ValueProvided { key } if *key == k),
    );
    expect_err(
        "ignore_lease with a lease",
        store
            .put(
                Put::new(k.as_str(), "x")
                    .ignoring_lease()
                    .with_lease(UNKNOWN_LEASE),
            )
            .await,
        |e| matches!(e, StoreError::LeaseProvided { key } if *key == k),
    );
    expect_err(
        "a txn with ignore_value and a value",
        store
            .txn(Txn::new().and_then([
                Put::new(other.as_str(), "x").into(),
                Put::new(k.as_str(), "x").ignoring_value().into(),
            ]))
            .await,
        |e| matches!(e, StoreError::ValueProvided { .. }),
    );
    expect_err(
        "unknown lease before missing key",
        store
            .put(
                Put::new(missing.as_str(), "")
                    .ignoring_value()
                    .with_lease(UNKNOWN_LEASE),
            )
            .await,
        |e| matches!(e, StoreError::LeaseNotFound(_)),
    );
    let kv = get_one(store, &k).await?.expect("k");
    assert_eq!(
        (kv.value.as_slice(), kv.version, kv.mod_revision),
        (&b"v"[..], 1, r)
    );
    assert_eq!(get_one(store, &missing).await?, None);
    assert_eq!(
        get_one(store, &other).await?,
        None,
        "the failed txns wrote nothing"
    );
    Ok(())
}

/// The status reports a revision covering every acknowledged write, a
/// compaction point not beyond it, and a non-empty database.
pub async fn case_status<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let r1 = put(store, &key(prefix, "a"), &"x".repeat(4096)).await?;
    let s1 = store.status().await?;
    assert!(s1.revision >= r1, "{s1:?} vs {r1}");
    assert!(
        s1.compact_revision >= 0 && s1.compact_revision <= s1.revision,
        "{s1:?}"
    );
    assert!(s1.db_size_bytes > 0, "{s1:?}");
    assert!(
        s1.db_size_in_use_bytes > 0 && s1.db_size_in_use_bytes <= s1.db_size_bytes,
        "{s1:?}"
    );
    let r2 = put(store, &key(prefix, "b"), "y").await?;
    let s2 = store.status().await?;
    assert!(s2.revision >= r2 && s2.revision > s1.revision.min(r2 - 1));
    assert!(s2.compact_revision >= s1.compact_revision);
    Ok(())
}
