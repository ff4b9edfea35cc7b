//! Conformance cases: [`crate::lock::Lock`] and [`crate::fence::Fence`] on a
//! real backend (lease expiry, watches and txn compares together).

use std::time::Duration;

use super::util::*;
use crate::keys::Keys;
use crate::lease::{Lease, LeaseConfig};
use crate::lock::{Lock, LockEnd};
use crate::{Delete, Put, Result, Store, StoreError};

fn layout(prefix: &str) -> Keys {
    Keys::new(prefix).expect("unique_prefix is a valid key prefix")
}

/// A lock held by another lease is refused by `try_acquire` and awaited by
/// `acquire`, which takes it as soon as the holder releases it, with a
/// larger fencing token.
pub async fn case_lock_held_by_another_is_refused_then_awaited<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let keys = layout(prefix);
    let (a, b) = (
        Lease::grant(store.clone(), LeaseConfig::new(10)).await?,
        Lease::grant(store.clone(), LeaseConfig::new(10)).await?,
    );
    let held = Lock::try_acquire(store.clone(), &keys, "rc", "web", &a, "a")
        .await?
        .expect("a free lock is taken");
    assert!(
        Lock::try_acquire(store.clone(), &keys, "rc", "web", &b, "b")
            .await?
            .is_none(),
        "a held lock is refused"
    );
    let waiter = tokio::spawn({
        let (store, keys) = (store.clone(), keys.clone());
        async move {
            Lock::acquire(store, &keys, "rc", "web", &b, "b")
                .await
                .map(|l| (l, b))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits while a holds the lock"
    );
    assert!(held.is_valid());
    held.release().await?;
    assert_eq!(held.end_reason(), Some(LockEnd::Released));
    let (taken, b) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter takes the released lock")
        .expect("waiter task")?;
    assert!(taken.token() > held.token(), "tokens grow across holders");
    let kv = get_one(store, taken.key()).await?.expect("lock key");
    assert_eq!(kv.value, b"b");
    assert_eq!(kv.lease, b.id());
    taken.release().await?;
    a.revoke().await?;
    b.revoke().await
}

/// Deleting the lock key (an operator, or a competing release) fires the
/// scope, and every fenced write after it fails.
pub async fn case_lock_scope_fires_when_the_key_is_deleted<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let keys = layout(prefix);
    let lease = Lease::grant(store.clone(), LeaseConfig::new(10)).await?;
    let lock = Lock::try_acquire(store.clone(), &keys, "replication", "r1", &lease, "me")
        .await?
        .expect("free");
    let data = key(prefix, "data");
    lock.commit_fenced([Put::new(data.as_str(), "1").into()])
        .await?;
    let stale = lock.fence().txn([Put::new(data.as_str(), "stale").into()]);
    store.delete(Delete::key(lock.key())).await?;
    tokio::time::timeout(WAIT, lock.scope().cancelled())
        .await
        .expect("the scope fires after the key's deletion");
    assert_eq!(lock.end_reason(), Some(LockEnd::KeyDeleted));
    assert!(
        !store.txn(stale).await?.succeeded,
        "the store refuses the fenced txn"
    );
    match lock
        .commit_fenced([Put::new(data.as_str(), "2").into()])
        .await
    {
        Err(StoreError::LockLost { token, reason, .. }) => {
            assert_eq!(token, lock.token());
            assert_eq!(reason, LockEnd::KeyDeleted);
        }
        other => panic!("expected LockLost, got {other:?}"),
    }
    assert_eq!(get_one(store, &data).await?.expect("data").value, b"1");
    lease.revoke().await
}

/// A lock whose lease stops being renewed (a paused holder) ends at its
/// `valid_until`, before the store expires the lease; the fenced txn the
/// holder prepared is refused once the store did expire it.
pub async fn case_lock_scope_fires_before_the_lease_lapses<S: Store>(
    store: &S,
    prefix: &str,
) -> Result<()> {
    let keys = layout(prefix);
    let lease = Lease::grant(store.clone(), LeaseConfig::new(2)).await?;
    let lock = Lock::try_acquire(store.clone(), &keys, "rc", "lapsing", &lease, "me")
        .await?
        .expect("free");
    let stale = lock
        .fence()
        .txn([Put::new(key(prefix, "late").as_str(), "w").into()]);
    let valid_until = lock.valid_until();
    let lease_id = lease.orphan(); // keep-alives stop; nothing is revoked
    tokio::time::timeout(WAIT, lock.scope().cancelled())
        .await
        .expect("the scope fires once the lease's validity passed");
    assert!(tokio::time::Instant::now() >= valid_until);
    assert!(matches!(
        lock.end_reason(),
        Some(LockEnd::ValidityExpired | LockEnd::LeaseLost)
    ));
    // The key is still there (the store has not expired the lease yet) or
    // already gone; either way the holder stops writing. Once the store
    // expired the lease, the fenced txn fails.
    eventually("the store expires the orphaned lease", || async {
        get_one(store, lock.key())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!store.txn(stale).await?.succeeded);
    assert!(matches!(
        store.lease_revoke(lease_id).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    Ok(())
}
