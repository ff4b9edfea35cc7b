//! The store's whole in-memory state (MVCC index + leases) and the write
//! write operations applied to it, recording what to persist.

use tokio::time::Instant;

use std::ops::Range;

use super::durable;
use super::leases::Leases;
use super::mvcc::Mvcc;
use crate::{
    Delete, EventKind, KeyValue, LeaseGrant, LeaseId, Result, Revision, StoreError, Txn, TxnOp,
    TxnResponse,
};

/// What one group commit must persist, collected while the batch's writes
/// are applied.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    enabled: bool,
    /// New versions' rows, encoded back to back (no copy of each key and
    /// value to encode later).
    rows: Vec<u8>,
    /// New versions, in (revision, sub-revision) order: where their rows
    /// are in `rows`.
    pub(crate) versions: Vec<((Revision, u32), Range<usize>)>,
    /// Versions dropped by compaction.
    pub(crate) removed: Vec<(Revision, u32)>,
    pub(crate) granted: Vec<(LeaseId, i64)>,
    pub(crate) revoked: Vec<LeaseId>,
    /// Set when the compaction point moved.
    pub(crate) compacted: bool,
}

impl Journal {
    /// A journal that records (`enabled`) or ignores everything (in memory).
    pub(crate) fn new(enabled: bool) -> Self {
        Journal {
            enabled,
            ..Journal::default()
        }
    }

    /// Record a new version: a put (`kv`) or a tombstone of `key`.
    pub(crate) fn record_version(
        &mut self,
        rev: Revision,
        sub: u32,
        key: &[u8],
        kv: Option<&KeyValue>,
    ) {
        let start = self.rows.len();
        durable::encode(key, kv, &mut self.rows);
        self.versions.push(((rev, sub), start..self.rows.len()));
    }

    /// Record a version whose row is already encoded (read back from the
    /// write-ahead log).
    pub(crate) fn push_row(&mut self, rev: Revision, sub: u32, row: &[u8]) {
        let start = self.rows.len();
        self.rows.extend_from_slice(row);
        self.versions.push(((rev, sub), start..self.rows.len()));
    }

    /// The recorded versions as ((revision, sub-revision), row).
    pub(crate) fn version_rows(&self) -> impl Iterator<Item = ((Revision, u32), &[u8])> {
        self.versions
            .iter()
            .map(|(at, range)| (*at, &self.rows[range.clone()]))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.versions.is_empty()
            && self.removed.is_empty()
            && self.granted.is_empty()
            && self.revoked.is_empty()
            && !self.compacted
    }
}

/// Which of etcd's txn checks a pass runs.
#[derive(Clone, Copy, Debug)]
enum Pass {
    Puts(PutChecks),
    Reads,
}

/// The order of a put's two checks: etcd's `Put` checks the lease, then
/// the key; its txn applier the key, then the lease.
#[derive(Clone, Copy, Debug)]
enum PutChecks {
    LeaseFirst,
    TxnOrder,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) mvcc: Mvcc,
    pub(crate) leases: Leases,
}

impl State {
    /// Apply a validated txn: compares against the latest applied state,
    /// then the chosen branch as one revision. Fails without writing when a
    /// put names an unknown lease or a read names a bad revision.
    pub(crate) fn txn(&mut self, txn: &Txn, journal: &mut Journal) -> Result<TxnResponse> {
        self.txn_checked(txn, journal, PutChecks::TxnOrder)
    }

    /// A single put (sent as a txn of one op): etcd checks its lease before
    /// its key, the other way round from puts in a txn.
    pub(crate) fn single_put(&mut self, txn: &Txn, journal: &mut Journal) -> Result<TxnResponse> {
        self.txn_checked(txn, journal, PutChecks::LeaseFirst)
    }

    fn txn_checked(
        &mut self,
        txn: &Txn,
        journal: &mut Journal,
        order: PutChecks,
    ) -> Result<TxnResponse> {
        let path = self.mvcc.txn_path(txn);
        let succeeded = path.first().copied().unwrap_or(true);
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // As etcd 3.4's applier: first every put on the chosen path, then
        // every read, each in op order.
        self.check_branch(ops, &mut path.iter().skip(1).copied(), Pass::Puts(order))?;
        self.check_branch(ops, &mut path.iter().skip(1).copied(), Pass::Reads)?;
        let (responses, revision) = self.apply(ops, &path[1..], journal);
        Ok(TxnResponse {
            revision,
            succeeded,
            responses,
        })
    }

    /// One of etcd's checks of the ops that will run, nested txns included:
    /// puts name an existing key (when keeping its value or lease) and a
    /// live lease; reads name a readable revision.
    fn check_branch(
        &self,
        ops: &[TxnOp],
        path: &mut impl Iterator<Item = bool>,
        pass: Pass,
    ) -> Result<()> {
        for op in ops {
            match (op, pass) {
                (TxnOp::Get(g), Pass::Reads) => self.mvcc.check_txn_read(g)?,
                (TxnOp::Put(p), Pass::Puts(order)) => {
                    let lease = || {
                        if p.lease != 0 && !self.leases.contains(p.lease) {
                            return Err(StoreError::LeaseNotFound(p.lease));
                        }
                        Ok(())
                    };
                    let key = || {
                        if (p.ignore_value || p.ignore_lease)
                            && self.mvcc.current_kv(&p.key).is_none()
                        {
                            return Err(StoreError::KeyNotFound {
                                key: String::from_utf8_lossy(&p.key).into_owned(),
                            });
                        }
                        Ok(())
                    };
                    match order {
                        PutChecks::LeaseFirst => lease().and_then(|()| key())?,
                        PutChecks::TxnOrder => key().and_then(|()| lease())?,
                    }
                }
                (TxnOp::Txn(nested), _) => {
                    let succeeded = path.next().unwrap_or(false);
                    let branch = if succeeded {
                        &nested.success
                    } else {
                        &nested.failure
                    };
                    self.check_branch(branch, path, pass)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply(
        &mut self,
        ops: &[TxnOp],
        path: &[bool],
        journal: &mut Journal,
    ) -> (Vec<crate::TxnOpResponse>, Revision) {
        let before = self.mvcc.current();
        let (responses, revision) = self.mvcc.apply(ops, path);
        if revision == before {
            return (responses, revision);
        }
        let Some(logged) = self.mvcc.last_logged() else {
            return (responses, revision);
        };
        for (sub, event) in logged.events.iter().enumerate() {
            let key = &event.kv.key;
            if let Some(prev) = &event.prev_kv
                && prev.lease != 0
                && prev.lease != event.kv.lease
            {
                self.leases.detach(prev.lease, key);
            }
            let kv = (event.kind == EventKind::Put).then_some(&event.kv);
            if let Some(kv) = kv
                && kv.lease != 0
            {
                self.leases.attach(kv.lease, key);
            }
            if journal.enabled {
                journal.record_version(revision, sub as u32, key, kv);
            }
        }
        (responses, revision)
    }

    /// Grant a lease (`id` 0: choose the id).
    pub(crate) fn grant(
        &mut self,
        id: LeaseId,
        ttl: i64,
        now: Instant,
        journal: &mut Journal,
    ) -> Result<LeaseGrant> {
        let grant = self.leases.grant_with_id(id, ttl, now)?;
        if journal.enabled {
            journal.granted.push((grant.id, grant.ttl));
        }
        Ok(grant)
    }

    /// Revoke a lease, deleting its keys in one revision (none if it has no
    /// keys).
    pub(crate) fn revoke(&mut self, id: LeaseId, journal: &mut Journal) -> Result<()> {
        let lease = self
            .leases
            .remove(id)
            .ok_or(StoreError::LeaseNotFound(id))?;
        let ops: Vec<TxnOp> = lease
            .keys
            .into_iter()
            .map(|k| TxnOp::Delete(Delete::key(k)))
            .collect();
        self.apply(&ops, &[], journal);
        if journal.enabled {
            journal.revoked.push(id);
        }
        Ok(())
    }

    /// Revoke every lease whose deadline passed; each gets its own revision.
    pub(crate) fn expire(&mut self, now: Instant, journal: &mut Journal) {
        for id in self.leases.expired(now) {
            tracing::debug!(lease = format_args!("{id:x}"), "lease expired");
            // Cannot fail: the id was just listed.
            let _ = self.revoke(id, journal);
        }
    }

    pub(crate) fn compact(&mut self, revision: Revision, journal: &mut Journal) -> Result<()> {
        let removed = self.mvcc.compact(revision)?;
        if journal.enabled {
            journal.removed.extend(removed);
            journal.compacted = true;
        }
        Ok(())
    }

    /// Keep `window` revisions of history, compacting in steps of an eighth
    /// of the window so that compaction does not run on every write.
    pub(crate) fn auto_compact(&mut self, window: Option<u64>, journal: &mut Journal) {
        let Some(window) = window else { return };
        let window = i64::try_from(window).unwrap_or(i64::MAX);
        let target = self.mvcc.current().saturating_sub(window);
        let step = (window / 8).max(1);
        if target >= self.mvcc.compacted().saturating_add(step)
            && let Err(error) = self.compact(target, journal)
        {
            tracing::warn!(%error, target, "automatic compaction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compare, CompareOp, Get, Put, TxnOpResponse};

    fn state() -> State {
        State {
            mvcc: Mvcc::new(),
            leases: Leases::new(1, 1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expiry_deletes_attached_keys_in_one_revision() {
        let mut s = state();
        let mut j = Journal::new(true);
        let now = Instant::now();
        let lease = s.grant(0, 5, now, &mut j).unwrap();
        let txn = Txn::new().and_then([
            Put::new("a", "1").with_lease(lease.id).into(),
            Put::new("b", "1").with_lease(lease.id).into(),
            Put::new("c", "1").into(),
        ]);
        assert_eq!(s.txn(&txn, &mut j).unwrap().revision, 2);
        // Re-putting without a lease detaches the key.
        s.txn(&Txn::new().and_then([Put::new("b", "2").into()]), &mut j)
            .unwrap();
        s.expire(now + std::time::Duration::from_secs(4), &mut j);
        assert_eq!(s.mvcc.current(), 3);
        s.expire(now + std::time::Duration::from_secs(5), &mut j);
        assert_eq!(s.mvcc.current(), 4);
        let logged = s.mvcc.last_logged().unwrap();
        assert_eq!(logged.events.len(), 1);
        assert_eq!(logged.events[0].kv.key, b"a");
        s.mvcc.publish();
        let left = s.mvcc.range(&Get::prefix(""), s.mvcc.visible()).unwrap();
        let keys: Vec<_> = left.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(j.revoked, vec![lease.id]);
        assert_eq!(j.versions.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_put_with_an_unknown_lease_fails_the_whole_txn() {
        let mut s = state();
        let mut j = Journal::new(false);
        let txn = Txn::new().and_then([
            Put::new("a", "1").into(),
            Put::new("b", "1").with_lease(99).into(),
        ]);
        assert!(matches!(
            s.txn(&txn, &mut j),
            Err(StoreError::LeaseNotFound(99))
        ));
        assert_eq!(s.mvcc.current(), 1);
        // The failure branch is the one checked when compares fail.
        let txn = Txn::new()
            .when([Compare::version("a", CompareOp::Greater, 0)])
            .and_then([Put::new("b", "1").with_lease(99).into()])
            .or_else([Get::key("a").into()]);
        let resp = s.txn(&txn, &mut j).unwrap();
        assert!(!resp.succeeded);
        assert_eq!(
            resp.revision, 1,
            "a read-only txn does not bump the revision"
        );
        assert!(matches!(&resp.responses[0], TxnOpResponse::Get(g) if g.count == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn auto_compaction_keeps_the_window() {
        let mut s = state();
        let mut j = Journal::new(true);
        for i in 0..40 {
            s.txn(
                &Txn::new().and_then([Put::new("k", format!("{i}")).into()]),
                &mut j,
            )
            .unwrap();
            s.auto_compact(Some(16), &mut j);
        }
        assert_eq!(s.mvcc.current(), 41);
        let compacted = s.mvcc.compacted();
        assert!((41 - 16 - 2..=41 - 16).contains(&compacted), "{compacted}");
        assert!(!j.removed.is_empty());
    }
}
