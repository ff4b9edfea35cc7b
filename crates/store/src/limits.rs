//! Request validation shared by every backend, so that both reject the same
//! requests with the same [`StoreError`] before anything is written.
//!
//! Sizes approximate etcd's encoded request size: key and value bytes plus a
//! small per-field overhead. etcd's own check (on the raft entry) may differ by
//! a few bytes at the boundary; the etcd adapter maps the server's error to the
//! same variant, so callers see one error either way.

use std::collections::BTreeSet;

use crate::{
    Compare, CompareTarget, Delete, Get, KeyRange, MAX_REQUEST_BYTES, MAX_TXN_OPS, Put, Result,
    StoreError, Txn, TxnOp, Watch,
};

/// Per-field protobuf framing (tag + length varint), rounded up.
const FIELD_OVERHEAD: usize = 8;

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidArgument("key is not provided".into()));
    }
    Ok(())
}

fn check_range(range: &KeyRange) -> Result<()> {
    match range {
        KeyRange::Key(k) => check_key(k),
        // The empty prefix means "every key", as etcd's `\0` range end.
        KeyRange::Prefix(_) => Ok(()),
        KeyRange::Range { start, end } => {
            check_key(start)?;
            // `\0` is etcd's "every key from `start` on", not an upper bound.
            if !end.is_empty() && end.as_slice() != [0] && end.as_slice() <= start.as_slice() {
                return Err(StoreError::InvalidArgument(format!(
                    "range end {:?} must be greater than its start {:?}",
                    String::from_utf8_lossy(end),
                    String::from_utf8_lossy(start)
                )));
            }
            Ok(())
        }
    }
}

fn range_size(range: &KeyRange) -> usize {
    range.start().len() + range.etcd_range_end().len() + 2 * FIELD_OVERHEAD
}

fn check_size(size: usize) -> Result<()> {
    if size > MAX_REQUEST_BYTES {
        return Err(StoreError::RequestTooLarge {
            size,
            limit: MAX_REQUEST_BYTES,
        });
    }
    Ok(())
}

fn get_size(get: &Get) -> usize {
    range_size(&get.range) + 6 * FIELD_OVERHEAD
}

fn put_size(put: &Put) -> usize {
    put.key.len() + put.value.len() + 4 * FIELD_OVERHEAD
}

fn delete_size(delete: &Delete) -> usize {
    range_size(&delete.range) + FIELD_OVERHEAD
}

fn compare_size(compare: &Compare) -> usize {
    let target = match &compare.target {
        CompareTarget::Value(v) => v.len(),
        _ => FIELD_OVERHEAD,
    };
    compare.key.len() + target + 3 * FIELD_OVERHEAD
}

fn op_size(op: &TxnOp) -> usize {
    FIELD_OVERHEAD
        + match op {
            TxnOp::Get(g) => get_size(g),
            TxnOp::Put(p) => put_size(p),
            TxnOp::Delete(d) => delete_size(d),
            TxnOp::Txn(t) => txn_size(t),
        }
}

fn check_op(op: &TxnOp) -> Result<()> {
    match op {
        TxnOp::Get(g) => validate_get(g),
        TxnOp::Put(p) => check_put_fields(p),
        TxnOp::Delete(d) => check_range(&d.range),
        TxnOp::Txn(t) => check_txn_request(t, MAX_TXN_OPS),
    }
}

/// etcd's put checks, in its order: a key, and no value or lease next to
/// the flags that keep the current ones.
fn check_put_fields(put: &Put) -> Result<()> {
    check_key(&put.key)?;
    let key = || String::from_utf8_lossy(&put.key).into_owned();
    if put.ignore_value && !put.value.is_empty() {
        return Err(StoreError::ValueProvided { key: key() });
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(StoreError::LeaseProvided { key: key() });
    }
    Ok(())
}

fn check_not_negative(what: &str, value: i64) -> Result<()> {
    if value < 0 {
        return Err(StoreError::InvalidArgument(format!(
            "{what} must not be negative, got {value}"
        )));
    }
    Ok(())
}

/// Validate a range read.
pub fn validate_get(get: &Get) -> Result<()> {
    check_range(&get.range)?;
    check_not_negative("limit", get.limit)?;
    check_not_negative("revision", get.revision)?;
    check_not_negative("min_create_revision", get.min_create_revision)?;
    check_not_negative("max_create_revision", get.max_create_revision)?;
    check_not_negative("min_mod_revision", get.min_mod_revision)?;
    check_not_negative("max_mod_revision", get.max_mod_revision)?;
    check_size(get_size(get))
}

/// Validate a put.
pub fn validate_put(put: &Put) -> Result<()> {
    check_put_fields(put)?;
    check_size(put_size(put))
}

/// Validate a delete.
pub fn validate_delete(delete: &Delete) -> Result<()> {
    check_range(&delete.range)?;
    check_size(delete_size(delete))
}

/// Validate a watch request.
pub fn validate_watch(watch: &Watch) -> Result<()> {
    check_range(&watch.range)?;
    if watch.start_revision < 0 {
        return Err(StoreError::InvalidArgument(format!(
            "watch start revision must not be negative, got {}",
            watch.start_revision
        )));
    }
    Ok(())
}

/// Validate a txn as etcd does (v3rpc `checkTxnRequest` and
/// `checkIntervals`): op counts, keys and put fields, sizes, and overlapping
/// writes.
///
/// Op counts: the longest of a txn's compare, success and failure lists
/// must fit the limit, and a nested txn's longest list must fit what its
/// ancestors left of it (the counts along a path add up to at most
/// [`MAX_TXN_OPS`]).
///
/// Overlapping writes ([`StoreError::DuplicateKey`]): within one branch no
/// key may be put twice, or put and deleted, counting the writes of nested
/// txns in that branch too. The then and else branches of one nested txn
/// exclude each other, so they may put the same key.
pub fn validate_txn(txn: &Txn) -> Result<()> {
    check_txn_request(txn, MAX_TXN_OPS)?;
    check_intervals(&txn.success)?;
    check_intervals(&txn.failure)?;
    check_size(txn_size(txn))
}

fn check_txn_request(txn: &Txn, budget: usize) -> Result<()> {
    let longest = txn
        .compares
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if longest > budget {
        return Err(StoreError::TooManyOps {
            ops: MAX_TXN_OPS - budget + longest,
            limit: MAX_TXN_OPS,
        });
    }
    for compare in &txn.compares {
        check_key(&compare.key)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Txn(nested) => check_txn_request(nested, budget - longest)?,
            other => check_op(other)?,
        }
    }
    Ok(())
}

fn txn_size(txn: &Txn) -> usize {
    txn.compares
        .iter()
        .map(|c| compare_size(c) + c.range_end.len())
        .sum::<usize>()
        + txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(op_size)
            .sum::<usize>()
}

/// The puts and deletes of one branch, nested txns included.
type Writes<'a> = (BTreeSet<&'a [u8]>, Vec<&'a KeyRange>);

fn deleted(dels: &[&KeyRange], key: &[u8]) -> bool {
    dels.iter().any(|range| range.contains(key))
}

/// etcd's `checkIntervals`: this level's deletes first, then each nested
/// txn's writes against what came before, then this level's puts.
fn check_intervals(ops: &[TxnOp]) -> Result<Writes<'_>> {
    let mut dels: Vec<&KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Delete(d) => Some(&d.range),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let TxnOp::Txn(nested) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&nested.success)?;
        let (puts_else, dels_else) = check_intervals(&nested.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(duplicate(key));
            }
            puts.insert(key);
        }
        for key in &puts_else {
            // Then and else exclude each other: a key of both is fine.
            if (puts.contains(key) && !puts_then.contains(key)) || deleted(&dels, key) {
                return Err(duplicate(key));
            }
            puts.insert(key);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let TxnOp::Put(put) = op else { continue };
        let key = put.key.as_slice();
        if puts.contains(key) || deleted(&dels, key) {
            return Err(duplicate(key));
        }
        puts.insert(key);
    }
    Ok((puts, dels))
}

fn duplicate(key: &[u8]) -> StoreError {
    StoreError::DuplicateKey {
        key: String::from_utf8_lossy(key).into_owned(),
    }
}

/// Validate a lease TTL (seconds).
pub fn validate_lease_ttl(ttl: i64) -> Result<()> {
    if ttl > crate::MAX_LEASE_TTL_SECS {
        return Err(StoreError::LeaseTtlTooLarge { ttl });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_put_is_rejected_with_sizes() {
        let put = Put::new("k", vec![0u8; MAX_REQUEST_BYTES]);
        match validate_put(&put) {
            Err(StoreError::RequestTooLarge { size, limit }) => {
                assert!(size > limit);
                assert_eq!(limit, MAX_REQUEST_BYTES);
            }
            other => panic!("expected RequestTooLarge, got {other:?}"),
        }
        assert!(validate_put(&Put::new("k", vec![0u8; 1024 * 1024])).is_ok());
    }

    #[test]
    fn txn_op_limits_apply_per_list() {
        let ops = |n: usize| (0..n).map(|i| TxnOp::Put(Put::new(format!("k{i}"), "v")));
        assert!(validate_txn(&Txn::new().and_then(ops(128)).or_else(ops(128))).is_ok());
        assert!(matches!(
            validate_txn(&Txn::new().and_then(ops(129))),
            Err(StoreError::TooManyOps {
                ops: 129,
                limit: 128
            })
        ));
    }

    #[test]
    fn duplicate_writes_in_one_branch_are_rejected() {
        let txn = Txn::new().and_then([Put::new("a", "1").into(), Put::new("a", "2").into()]);
        assert!(matches!(validate_txn(&txn), Err(StoreError::DuplicateKey { key }) if key == "a"));
        let txn = Txn::new().and_then([Put::new("p/a", "1").into(), Delete::prefix("p/").into()]);
        assert!(matches!(
            validate_txn(&txn),
            Err(StoreError::DuplicateKey { .. })
        ));
        // The same key in different branches is fine.
        let txn = Txn::new()
            .and_then([Put::new("a", "1").into()])
            .or_else([Put::new("a", "2").into()]);
        assert!(validate_txn(&txn).is_ok());
    }

    #[test]
    fn nested_txns_follow_etcds_overlap_rules() {
        let put = |k: &str| TxnOp::Put(Put::new(k, "v"));
        let nested = |then: Vec<TxnOp>, otherwise: Vec<TxnOp>| {
            TxnOp::Txn(Txn::new().and_then(then).or_else(otherwise))
        };
        let ok = |ops: Vec<TxnOp>| validate_txn(&Txn::new().and_then(ops));
        // Then and else of one nested txn may put the same key.
        assert!(ok(vec![nested(vec![put("a")], vec![put("a")])]).is_ok());
        // Siblings may not, nor a nested put and an outer put or delete.
        let dup = |r: Result<()>| matches!(r, Err(StoreError::DuplicateKey { key }) if key == "a");
        assert!(dup(ok(vec![
            nested(vec![put("a")], vec![]),
            nested(vec![put("a")], vec![])
        ])));
        assert!(dup(ok(vec![put("a"), nested(vec![put("a")], vec![])])));
        assert!(dup(ok(vec![nested(vec![], vec![put("a")]), put("a")])));
        assert!(dup(ok(vec![
            Delete::key("a").into(),
            nested(vec![put("a")], vec![])
        ])));
        assert!(dup(ok(vec![
            nested(vec![Delete::key("a").into()], vec![]),
            put("a")
        ])));
        // A put in the else branch and the same key in an earlier sibling.
        assert!(dup(ok(vec![
            nested(vec![put("a")], vec![]),
            nested(vec![], vec![put("a")])
        ])));
        // Deletes may overlap deletes.
        assert!(
            ok(vec![
                Delete::key("a").into(),
                nested(vec![Delete::prefix("").into()], vec![])
            ])
            .is_ok()
        );
    }

    #[test]
    fn nested_op_counts_add_up_along_a_path() {
        let ops = |n: usize| (0..n).map(|i| TxnOp::Put(Put::new(format!("k{i}"), "v")));
        let inner = |n: usize| TxnOp::Txn(Txn::new().and_then(ops(n)));
        // 2 outer ops leave 126 for a nested txn.
        let txn = Txn::new().and_then([inner(126), Get::key("x").into()]);
        assert!(validate_txn(&txn).is_ok());
        let txn = Txn::new().and_then([inner(127), Get::key("x").into()]);
        assert!(matches!(
            validate_txn(&txn),
            Err(StoreError::TooManyOps {
                ops: 129,
                limit: 128
            })
        ));
        // Bad requests inside a nested txn are found too.
        let txn = Txn::new().and_then([TxnOp::Txn(Txn::new().or_else([Put::new("", "v").into()]))]);
        assert!(matches!(
            validate_txn(&txn),
            Err(StoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn empty_keys_are_invalid() {
        assert!(matches!(
            validate_put(&Put::new("", "v")),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            validate_get(&Get::key("")),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(validate_get(&Get::prefix("")).is_ok());
    }

    #[test]
    fn a_nul_range_end_means_from_the_key_on() {
        let from_key = |start: &str| {
            Get::new(KeyRange::Range {
                start: start.as_bytes().to_vec(),
                end: vec![0],
            })
        };
        assert!(validate_get(&from_key("a")).is_ok());
        assert!(validate_get(&from_key("\0")).is_ok());
        let backwards = Get::new(KeyRange::Range {
            start: b"b".to_vec(),
            end: b"a".to_vec(),
        });
        assert!(matches!(
            validate_get(&backwards),
            Err(StoreError::InvalidArgument(_))
        ));
    }
}
