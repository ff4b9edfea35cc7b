//! Request validation shared by every backend, so that both reject the same
//! requests with the same [`StoreError`] before anything is written.
//!
//! Sizes approximate etcd's encoded request size: key and value bytes plus a
//! small per-field overhead. etcd's own check (on the raft entry) may differ by
//! a few bytes at the boundary; the etcd adapter maps the server's error to the
//! same variant, so callers see one error either way.

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
        }
}

fn check_op(op: &TxnOp) -> Result<()> {
    match op {
        TxnOp::Get(g) => validate_get(g),
        TxnOp::Put(p) => check_key(&p.key),
        TxnOp::Delete(d) => check_range(&d.range),
    }
}

/// Validate a range read.
pub fn validate_get(get: &Get) -> Result<()> {
    check_range(&get.range)?;
    if get.limit < 0 {
        return Err(StoreError::InvalidArgument(format!(
            "limit must not be negative, got {}",
            get.limit
        )));
    }
    if get.revision < 0 {
        return Err(StoreError::InvalidArgument(format!(
            "revision must not be negative, got {}",
            get.revision
        )));
    }
    check_size(get_size(get))
}

/// Validate a put.
pub fn validate_put(put: &Put) -> Result<()> {
    check_key(&put.key)?;
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

/// Validate a txn: op counts per list, sizes, and that no branch writes one
/// key twice (etcd: "duplicate key given in txn request").
pub fn validate_txn(txn: &Txn) -> Result<()> {
    for len in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
        if len > MAX_TXN_OPS {
            return Err(StoreError::TooManyOps {
                ops: len,
                limit: MAX_TXN_OPS,
            });
        }
    }
    for compare in &txn.compares {
        check_key(&compare.key)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        check_op(op)?;
    }
    check_branch_keys(&txn.success)?;
    check_branch_keys(&txn.failure)?;
    let size = txn.compares.iter().map(compare_size).sum::<usize>()
        + txn
            .success
            .iter()
            .chain(&txn.failure)
            .map(op_size)
            .sum::<usize>();
    check_size(size)
}

fn check_branch_keys(ops: &[TxnOp]) -> Result<()> {
    let mut puts: Vec<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::Put(p) => Some(p.key.as_slice()),
            _ => None,
        })
        .collect();
    puts.sort_unstable();
    if let Some(w) = puts.windows(2).find(|w| w[0] == w[1]) {
        return Err(duplicate(w[0]));
    }
    let deletes = ops.iter().filter_map(|op| match op {
        TxnOp::Delete(d) => Some(&d.range),
        _ => None,
    });
    for range in deletes {
        if let Some(key) = puts.iter().find(|k| range.contains(k)) {
            return Err(duplicate(key));
        }
    }
    Ok(())
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
