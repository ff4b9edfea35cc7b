//! The lease table: TTLs, deadlines on the tokio clock, attached keys.
//!
//! Deadlines live only in memory: after a restart every lease gets its full
//! TTL again, as etcd does on a leader change.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::{LeaseGrant, LeaseId, LeaseTimeToLive, StoreError};

#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) ttl: i64,
    pub(crate) deadline: Instant,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Leases {
    map: HashMap<LeaseId, Lease>,
    next_id: LeaseId,
    min_ttl: i64,
    /// No deadline is earlier than this (`None`: no lease at all), so that
    /// the check before every write does not scan the table. Keep-alives
    /// only move deadlines later, so it stays a lower bound.
    due_from: Option<Instant>,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Leases {
    /// An empty table whose ids start at or above `next_id` (kept across
    /// restarts so that an id is never handed out twice).
    pub(crate) fn new(min_ttl: i64, next_id: LeaseId) -> Self {
        Leases {
            map: HashMap::new(),
            next_id: next_id.max(1),
            min_ttl: min_ttl.max(1),
            due_from: None,
        }
    }

    pub(crate) fn next_id(&self) -> LeaseId {
        self.next_id
    }

    /// Grant a lease; TTLs below the minimum are raised to it, as etcd does.
    /// The caller validated the TTL against the maximum.
    pub(crate) fn grant(&mut self, ttl: i64, now: Instant) -> LeaseGrant {
        let ttl = ttl.max(self.min_ttl);
        let id = self.next_free_id();
        self.restore(id, ttl, now);
        LeaseGrant { id, ttl }
    }

    /// Grant a lease with a client-chosen id (0: choose one, as
    /// [`Leases::grant`]); an id in use is [`StoreError::LeaseExists`]. Any
    /// other id is accepted, negative ones too, as etcd does.
    pub(crate) fn grant_with_id(
        &mut self,
        id: LeaseId,
        ttl: i64,
        now: Instant,
    ) -> Result<LeaseGrant, StoreError> {
        if id == 0 {
            return Ok(self.grant(ttl, now));
        }
        if self.map.contains_key(&id) {
            return Err(StoreError::LeaseExists(id));
        }
        let ttl = ttl.max(self.min_ttl);
        self.insert(id, ttl, now);
        Ok(LeaseGrant { id, ttl })
    }

    /// The next automatic id, skipping ids clients chose.
    fn next_free_id(&mut self) -> LeaseId {
        loop {
            let id = self.next_id;
            self.next_id = if id == LeaseId::MAX { 1 } else { id + 1 };
            if !self.map.contains_key(&id) {
                return id;
            }
        }
    }

    /// Every lease, in id order (expiring ones excluded: they are as good as
    /// gone).
    pub(crate) fn ids(&self, now: Instant) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self
            .map
            .iter()
            .filter(|(_, l)| l.deadline > now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Re-create a persisted lease with its full TTL from `now`.
    pub(crate) fn restore(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        self.insert(id, ttl, now);
        if id > 0 {
            self.next_id = self.next_id.max(id.saturating_add(1));
        }
    }

    fn insert(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        let deadline = now + ttl_duration(ttl);
        self.due_from = Some(self.due_from.map_or(deadline, |d| d.min(deadline)));
        self.map.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
    }

    fn live(&self, id: LeaseId, now: Instant) -> Result<&Lease, StoreError> {
        self.map
            .get(&id)
            .filter(|l| l.deadline > now)
            .ok_or(StoreError::LeaseNotFound(id))
    }

    /// True when the lease is still in the table but its deadline passed:
    /// it is about to be revoked. Callers wait for that revocation
    /// before reporting [`StoreError::LeaseNotFound`], so that "not found"
    /// always means the lease's keys are gone (as etcd).
    pub(crate) fn is_expiring(&self, id: LeaseId, now: Instant) -> bool {
        self.map.get(&id).is_some_and(|l| l.deadline <= now)
    }

    /// True while the lease exists (granted and not yet revoked).
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.map.contains_key(&id)
    }

    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64, StoreError> {
        self.live(id, now)?;
        let lease = self.map.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        lease.deadline = now + ttl_duration(lease.ttl);
        Ok(lease.ttl)
    }

    /// Remaining TTL (whole seconds, truncated as etcd reports it) and keys.
    pub(crate) fn time_to_live(
        &self,
        id: LeaseId,
        now: Instant,
        mut visible: impl FnMut(&[u8]) -> bool,
    ) -> Result<LeaseTimeToLive, StoreError> {
        let lease = self.live(id, now)?;
        Ok(LeaseTimeToLive {
            id,
            ttl: lease.deadline.saturating_duration_since(now).as_secs() as i64,
            granted_ttl: lease.ttl,
            keys: lease.keys.iter().filter(|k| visible(k)).cloned().collect(),
        })
    }

    pub(crate) fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.map.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        self.map.remove(&id)
    }

    /// Leases whose deadline passed, oldest deadline first.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<LeaseId> {
        if self.due_from.is_none_or(|from| now < from) {
            return Vec::new();
        }
        // Exact again (the leases listed here are usually revoked next; the
        // next call then scans once more and moves past them).
        self.due_from = self.earliest_deadline();
        let mut due: Vec<(Instant, LeaseId)> = self
            .map
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }

    pub(crate) fn earliest_deadline(&self) -> Option<Instant> {
        self.map.values().map(|l| l.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_expire_on_the_tokio_clock_and_keep_alive_extends_them() {
        let mut leases = Leases::new(1, 7);
        let start = Instant::now();
        let a = leases.grant(10, start);
        let b = leases.grant(0, start);
        assert_eq!((a.id, a.ttl), (7, 10));
        assert_eq!((b.id, b.ttl), (8, 1), "TTL raised to the minimum");
        assert_eq!(
            leases.earliest_deadline(),
            Some(start + Duration::from_secs(1))
        );

        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        assert_eq!(leases.expired(now), vec![b.id]);
        assert!(matches!(
            leases.keep_alive(b.id, now),
            Err(StoreError::LeaseNotFound(8))
        ));
        assert_eq!(leases.time_to_live(a.id, now, |_| true).unwrap().ttl, 4);
        assert_eq!(leases.keep_alive(a.id, now).unwrap(), 10);
        assert_eq!(leases.time_to_live(a.id, now, |_| true).unwrap().ttl, 10);

        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(leases.expired(Instant::now()), vec![b.id]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(leases.expired(Instant::now()), vec![b.id, a.id]);
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_checks_see_every_lease_due_whatever_the_grant_order() {
        let mut leases = Leases::new(1, 1);
        let start = Instant::now();
        assert!(leases.expired(start).is_empty());
        let late = leases.grant(30, start);
        assert!(leases.expired(start).is_empty());
        // A shorter lease granted later is due first.
        let early = leases.grant(5, start);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(leases.expired(Instant::now()), vec![early.id]);
        leases.remove(early.id);
        assert!(leases.expired(Instant::now()).is_empty());
        // Kept alive: due later than first granted.
        tokio::time::advance(Duration::from_secs(20)).await;
        leases.keep_alive(late.id, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(leases.expired(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(leases.expired(Instant::now()), vec![late.id]);
    }

    #[tokio::test(start_paused = true)]
    async fn attached_keys_are_reported_and_ids_never_repeat() {
        let now = Instant::now();
        let mut leases = Leases::new(1, 1);
        let a = leases.grant(5, now);
        leases.attach(a.id, b"x");
        leases.attach(a.id, b"y");
        leases.detach(a.id, b"x");
        let ttl = leases.time_to_live(a.id, now, |_| true).unwrap();
        assert_eq!(ttl.keys, vec![b"y".to_vec()]);
        assert!(leases.remove(a.id).is_some());
        assert!(!leases.contains(a.id));
        let b = leases.grant(5, now);
        assert_ne!(a.id, b.id);
        let mut restored = Leases::new(1, 1);
        restored.restore(40, 3, now);
        assert_eq!(restored.grant(3, now).id, 41);
    }
}
