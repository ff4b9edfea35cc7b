//! Conformance cases: leases and the [`crate::lease::Lease`] handle.

use std::time::Duration;

use super::util::*;
use crate::lease::{Lease, LeaseConfig, LostReason};
use crate::{EventKind, Get, MAX_LEASE_TTL_SECS, Put, Result, Store, StoreError, Txn, Watch};

/// Grant returns a positive id and at least the requested TTL;
/// time-to-live reports it and the attached keys.
pub async fn case_lease_grant_and_time_to_live<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let grant = store.lease_grant(30).await?;
    assert!(grant.id > 0);
    assert!(grant.ttl >= 30);
    let ttl = store.lease_time_to_live(grant.id).await?;
    assert_eq!(ttl.id, grant.id);
    assert_eq!(ttl.granted_ttl, grant.ttl);
    assert!(ttl.ttl > 0 && ttl.ttl <= grant.ttl, "{ttl:?}");
    assert!(ttl.keys.is_empty());
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    put_leased(store, &a, "1", grant.id).await?;
    put_leased(store, &b, "2", grant.id).await?;
    let mut keys = store.lease_time_to_live(grant.id).await?.keys;
    keys.sort();
    assert_eq!(keys, vec![a.clone().into_bytes(), b.into_bytes()]);
    assert_eq!(
        get_one(store, &a).await?.expect("leased key").lease,
        grant.id
    );
    // Two grants never share an id.
    let other = store.lease_grant(30).await?;
    assert_ne!(other.id, grant.id);
    store.lease_revoke(other.id).await?;
    store.lease_revoke(grant.id).await
}

/// A TTL above etcd's maximum is `LeaseTtlTooLarge`.
pub async fn case_lease_ttl_too_large<S: Store>(store: &S, _prefix: &str) -> Result<()> {
    expect_err(
        "grant above the max TTL",
        store.lease_grant(MAX_LEASE_TTL_SECS + 1).await,
        |e| matches!(e, StoreError::LeaseTtlTooLarge { .. }),
    );
    Ok(())
}

/// Revoking deletes every attached key in one revision, seen by a watch.
pub async fn case_lease_revoke_deletes_keys<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = store.lease_grant(60).await?.id;
    for name in ["a", "b", "c"] {
        put_leased(store, &key(prefix, name), name, lease).await?;
    }
    put(store, &key(prefix, "free"), "no lease").await?;
    let start = store.current_revision().await?;
    let mut watch = store
        .watch(
            Watch::prefix(prefix)
                .from_revision(start + 1)
                .with_prev_kv(),
        )
        .await?;
    store.lease_revoke(lease).await?;
    let got = store.get(Get::prefix(prefix)).await?;
    assert_eq!(keys_of(&got.kvs), vec![key(prefix, "free")]);
    let batch = next_batch(&mut watch).await?;
    check_batch(&batch);
    assert_eq!(
        batch.events.len(),
        3,
        "all deletes in one batch: {batch:#?}"
    );
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    let rev = batch.events[0].kv.mod_revision;
    assert!(batch.events.iter().all(|e| e.kv.mod_revision == rev));
    for e in &batch.events {
        let prev = e.prev_kv.as_ref().expect("prev_kv of a revoke's delete");
        assert_eq!(prev.key, e.kv.key);
        assert_eq!(prev.lease, lease);
        assert!(
            e.kv.key_str()
                .ends_with(&*String::from_utf8_lossy(&prev.value))
        );
    }
    expect_err(
        "time_to_live of a revoked lease",
        store.lease_time_to_live(lease).await,
        |e| matches!(e, StoreError::LeaseNotFound(id) if *id == lease),
    );
    expect_err("revoke twice", store.lease_revoke(lease).await, |e| {
        matches!(e, StoreError::LeaseNotFound(_))
    });
    Ok(())
}

/// Expiry deletes every attached key atomically, in one revision, and a
/// watch sees the deletes together.
pub async fn case_lease_expiry_deletes_keys_in_one_revision<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let grant = store.lease_grant(1).await?;
    for name in ["a", "b", "c"] {
        put_leased(store, &key(prefix, name), name, grant.id).await?;
    }
    let start = store.current_revision().await?;
    let mut watch = store
        .watch(Watch::prefix(prefix).from_revision(start + 1))
        .await?;
    wait_lease_gone(store, grant.id).await;
    assert_eq!(store.get(Get::prefix(prefix)).await?.count, 0);
    let batch = next_batch(&mut watch).await?;
    check_batch(&batch);
    assert_eq!(
        batch.events.len(),
        3,
        "all deletes in one batch: {batch:#?}"
    );
    assert!(batch.events.iter().all(|e| e.kind == EventKind::Delete));
    let rev = batch.events[0].kv.mod_revision;
    assert!(rev > start);
    assert!(batch.events.iter().all(|e| e.kv.mod_revision == rev));
    Ok(())
}

/// Keep-alives renew the lease beyond its TTL.
pub async fn case_lease_keep_alive_extends<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let grant = store.lease_grant(2).await?;
    let k = key(prefix, "a");
    put_leased(store, &k, "v", grant.id).await?;
    // 8 x 500 ms = twice the TTL.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ttl = store.lease_keep_alive(grant.id).await?;
        assert_eq!(ttl, grant.ttl);
    }
    assert!(
        get_one(store, &k).await?.is_some(),
        "kept-alive key expired"
    );
    let left = store.lease_time_to_live(grant.id).await?;
    assert!(left.ttl > 0);
    store.lease_revoke(grant.id).await
}

/// Keep-alive of an expired lease is `LeaseNotFound`, as is any use of it.
pub async fn case_lease_keep_alive_after_expiry<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let grant = store.lease_grant(1).await?;
    wait_lease_gone(store, grant.id).await;
    let not_found = |e: &StoreError| matches!(e, StoreError::LeaseNotFound(id) if *id == grant.id);
    expect_err(
        "keep-alive",
        store.lease_keep_alive(grant.id).await,
        not_found,
    );
    expect_err(
        "put with the expired lease",
        store
            .put(Put::new(key(prefix, "a"), "v").with_lease(grant.id))
            .await,
        not_found,
    );
    assert_eq!(get_one(store, &key(prefix, "a")).await?, None);
    Ok(())
}

/// Unknown leases: put (plain or in a txn) is `LeaseNotFound` and writes
/// nothing; keep-alive, revoke and time-to-live are `LeaseNotFound`.
pub async fn case_lease_unknown<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let not_found = |e: &StoreError| matches!(e, StoreError::LeaseNotFound(_));
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    expect_err(
        "put",
        store
            .put(Put::new(a.as_str(), "v").with_lease(UNKNOWN_LEASE))
            .await,
        not_found,
    );
    expect_err(
        "txn put",
        store
            .txn(Txn::new().and_then([
                Put::new(b.as_str(), "v").into(),
                Put::new(a.as_str(), "v").with_lease(UNKNOWN_LEASE).into(),
            ]))
            .await,
        not_found,
    );
    assert_eq!(
        store.get(Get::prefix(prefix)).await?.count,
        0,
        "nothing written"
    );
    expect_err(
        "keep-alive",
        store.lease_keep_alive(UNKNOWN_LEASE).await,
        not_found,
    );
    expect_err("revoke", store.lease_revoke(UNKNOWN_LEASE).await, not_found);
    expect_err(
        "time-to-live",
        store.lease_time_to_live(UNKNOWN_LEASE).await,
        not_found,
    );
    Ok(())
}

/// A put without a lease detaches the key from its lease.
pub async fn case_lease_detach_by_put<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = store.lease_grant(60).await?.id;
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    put_leased(store, &a, "1", lease).await?;
    put_leased(store, &b, "1", lease).await?;
    store.put(Put::new(a.as_str(), "2")).await?;
    assert_eq!(get_one(store, &a).await?.expect("a").lease, 0);
    let keys = store.lease_time_to_live(lease).await?.keys;
    assert_eq!(keys, vec![b.clone().into_bytes()]);
    store.lease_revoke(lease).await?;
    assert!(
        get_one(store, &a).await?.is_some(),
        "detached key survives revoke"
    );
    assert_eq!(get_one(store, &b).await?, None);
    Ok(())
}

/// Moving a key to another lease: only the new lease deletes it.
pub async fn case_lease_move_key<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let first = store.lease_grant(60).await?.id;
    let second = store.lease_grant(60).await?.id;
    let a = key(prefix, "a");
    put_leased(store, &a, "1", first).await?;
    put_leased(store, &a, "2", second).await?;
    store.lease_revoke(first).await?;
    assert_eq!(get_one(store, &a).await?.expect("moved").lease, second);
    store.lease_revoke(second).await?;
    assert_eq!(get_one(store, &a).await?, None);
    Ok(())
}

/// The [`Lease`] handle keeps a 1 s lease alive over several TTLs, and its
/// revoke deletes the keys.
pub async fn case_lease_handle_keeps_alive<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = Lease::grant(store.clone(), LeaseConfig::new(1)).await?;
    let k = key(prefix, "a");
    put_leased(store, &k, "v", lease.id()).await?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(lease.is_valid(), "{lease:?}");
    assert_eq!(lease.lost_reason(), None);
    assert!(get_one(store, &k).await?.is_some());
    let token = lease.lost_token();
    let id = lease.id();
    lease.revoke().await?;
    assert!(token.is_cancelled());
    assert_eq!(get_one(store, &k).await?, None);
    expect_err(
        "time-to-live after revoke",
        store.lease_time_to_live(id).await,
        |e| matches!(e, StoreError::LeaseNotFound(_)),
    );
    Ok(())
}

/// The [`Lease`] handle notices a lease revoked behind its back, and dropping
/// a handle revokes its lease.
pub async fn case_lease_handle_lost_and_drop<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = Lease::grant(store.clone(), LeaseConfig::new(3)).await?;
    store.lease_revoke(lease.id()).await?;
    tokio::time::timeout(WAIT, lease.lost())
        .await
        .expect("the handle noticed the revoke");
    assert!(matches!(
        lease.lost_reason(),
        Some(LostReason::NotFound | LostReason::Expired)
    ));
    assert!(!lease.is_valid());
    lease.revoke().await?;

    let dropped = Lease::grant(store.clone(), LeaseConfig::new(30)).await?;
    let id = dropped.id();
    let k = key(prefix, "b");
    put_leased(store, &k, "v", id).await?;
    drop(dropped);
    eventually("the dropped lease's key to go", || async {
        get_one(store, &k)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    Ok(())
}

/// TTLs below the store's minimum (etcd: 1 s by default) are raised, never
/// refused.
pub async fn case_lease_small_ttl_is_raised<S: Store>(store: &S, _prefix: &str) -> Result<()> {
    for ttl in [0, -5] {
        let grant = store.lease_grant(ttl).await?;
        assert!(grant.ttl >= 1, "TTL {ttl} granted as {}", grant.ttl);
        assert_eq!(
            store.lease_time_to_live(grant.id).await?.granted_ttl,
            grant.ttl
        );
        store.lease_revoke(grant.id).await?;
    }
    Ok(())
}

/// A revoked lease is gone for every call: keep-alive, time-to-live,
/// another revoke and a put with it are `LeaseNotFound`.
pub async fn case_lease_keep_alive_after_revoke<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let id = store.lease_grant(60).await?.id;
    assert!(store.lease_keep_alive(id).await? >= 60);
    store.lease_revoke(id).await?;
    let not_found = |e: &StoreError| matches!(e, StoreError::LeaseNotFound(l) if *l == id);
    expect_err("keep-alive", store.lease_keep_alive(id).await, not_found);
    expect_err(
        "time-to-live",
        store.lease_time_to_live(id).await,
        not_found,
    );
    expect_err("revoke", store.lease_revoke(id).await, not_found);
    expect_err(
        "put",
        store
            .put(Put::new(key(prefix, "a"), "v").with_lease(id))
            .await,
        not_found,
    );
    assert_eq!(get_one(store, &key(prefix, "a")).await?, None);
    Ok(())
}

/// A key moved to another lease leaves the first lease's key list, and the
/// first lease's expiry leaves it alone.
pub async fn case_lease_moved_key_survives_old_lease_expiry<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let short = store.lease_grant(1).await?.id;
    let long = store.lease_grant(60).await?.id;
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    put_leased(store, &a, "1", short).await?;
    put_leased(store, &b, "1", short).await?;
    put_leased(store, &a, "2", long).await?;
    assert_eq!(
        store.lease_time_to_live(short).await?.keys,
        vec![b.clone().into_bytes()]
    );
    assert_eq!(
        store.lease_time_to_live(long).await?.keys,
        vec![a.clone().into_bytes()]
    );
    wait_lease_gone(store, short).await;
    eventually("b to be deleted by the expiry", || async {
        get_one(store, &b)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let moved = get_one(store, &a).await?.expect("the moved key survives");
    assert_eq!((moved.value.as_slice(), moved.lease), (&b"2"[..], long));
    store.lease_revoke(long).await
}

/// The delete events of a lease expiry carry prev_kv (value and lease) when
/// asked, like any other delete.
pub async fn case_lease_expiry_watch_prev_kv<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let lease = store.lease_grant(1).await?.id;
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    let put_rev = store
        .txn(Txn::new().and_then([
            Put::new(a.as_str(), "va").with_lease(lease).into(),
            Put::new(b.as_str(), "vb").with_lease(lease).into(),
        ]))
        .await?
        .revision;
    let mut watch = store
        .watch(
            Watch::prefix(prefix)
                .from_revision(put_rev + 1)
                .with_prev_kv(),
        )
        .await?;
    wait_lease_gone(store, lease).await;
    let events = next_events(&mut watch, 2).await?;
    for (event, (k, v)) in events.iter().zip([(&a, "va"), (&b, "vb")]) {
        assert_eq!(event.kind, EventKind::Delete);
        assert_eq!(event.kv.key, k.as_bytes());
        assert!(event.kv.value.is_empty());
        let prev = event.prev_kv.as_ref().expect("prev_kv of an expiry delete");
        assert_eq!((prev.value.as_slice(), prev.lease), (v.as_bytes(), lease));
        assert_eq!(prev.mod_revision, put_rev);
    }
    Ok(())
}

/// Deleting a leased key takes it off the lease: recreated without a lease,
/// it survives the lease's revoke.
pub async fn case_lease_deleted_key_leaves_the_lease<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let lease = store.lease_grant(60).await?.id;
    let (a, b) = (key(prefix, "a"), key(prefix, "b"));
    put_leased(store, &a, "1", lease).await?;
    put_leased(store, &b, "1", lease).await?;
    store.delete(crate::Delete::key(a.as_str())).await?;
    assert_eq!(
        store.lease_time_to_live(lease).await?.keys,
        vec![b.clone().into_bytes()]
    );
    store.put(Put::new(a.as_str(), "2")).await?;
    store.lease_revoke(lease).await?;
    let survivor = get_one(store, &a)
        .await?
        .expect("a, recreated without the lease");
    assert_eq!((survivor.value.as_slice(), survivor.lease), (&b"2"[..], 0));
    assert_eq!(get_one(store, &b).await?, None);
    Ok(())
}

/// A lease id derived from the case's unique prefix, so that cases on a
/// shared etcd do not pick the same one.
fn chosen_lease_id(prefix: &str) -> crate::LeaseId {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    prefix.hash(&mut hasher);
    // Positive and far from the small ids stores hand out themselves.
    ((hasher.finish() >> 2) as i64) | (1 << 60)
}

/// A client-chosen lease id is granted as asked; an id in use is
/// `LeaseExists` and changes nothing; 0 lets the store choose; negative ids
/// are accepted (as etcd does); `lease_list` lists them until revoked.
pub async fn case_lease_grant_with_id_and_list<S: Store>(store: &S, prefix: &str) -> Result<()> {
    let id = chosen_lease_id(prefix);
    let grant = store.lease_grant_with_id(id, 30).await?;
    assert_eq!(grant.id, id);
    assert!(grant.ttl >= 30);
    let k = key(prefix, "a");
    put_leased(store, &k, "v", id).await?;
    expect_err(
        "granting an id in use",
        store.lease_grant_with_id(id, 600).await,
        |e| matches!(e, StoreError::LeaseExists(x) if *x == id),
    );
    let ttl = store.lease_time_to_live(id).await?;
    assert_eq!(
        ttl.granted_ttl, grant.ttl,
        "the failed grant changed nothing"
    );
    assert_eq!(ttl.keys, vec![k.clone().into_bytes()]);
    let auto = store.lease_grant_with_id(0, 30).await?;
    assert!(auto.id != 0 && auto.id != id);
    let negative = store.lease_grant_with_id(-id, 30).await?;
    assert_eq!(negative.id, -id);
    assert_eq!(store.lease_time_to_live(-id).await?.id, -id);
    let too_long = id ^ 0x55;
    expect_err(
        "a chosen id with a TTL over the limit",
        store
            .lease_grant_with_id(too_long, MAX_LEASE_TTL_SECS + 1)
            .await,
        |e| matches!(e, StoreError::LeaseTtlTooLarge { .. }),
    );
    let listed = store.lease_list().await?;
    for want in [id, auto.id, -id] {
        assert!(listed.contains(&want), "{want:x} missing from {listed:x?}");
    }
    assert!(
        !listed.contains(&too_long),
        "a rejected grant is not listed"
    );
    for lease in [id, auto.id, -id] {
        store.lease_revoke(lease).await?;
    }
    let listed = store.lease_list().await?;
    for gone in [id, auto.id, -id] {
        assert!(!listed.contains(&gone), "revoked {gone:x} still listed");
    }
    assert_eq!(get_one(store, &k).await?, None, "revoking deleted the key");
    // A revoked id may be granted again.
    assert_eq!(store.lease_grant_with_id(id, 5).await?.id, id);
    store.lease_revoke(id).await
}

/// An expired lease leaves the list.
pub async fn case_lease_list_drops_expired<S: Store>(store: &S, _prefix: &str) -> Result<()> {
    let grant = store.lease_grant(1).await?;
    assert!(store.lease_list().await?.contains(&grant.id));
    wait_lease_gone(store, grant.id).await;
    assert!(!store.lease_list().await?.contains(&grant.id));
    Ok(())
}
