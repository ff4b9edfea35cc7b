//! Port requests to etcd-client requests, and etcd responses back.
//!
//! Responses are taken apart by value (etcd-client's `pub-response-field`),
//! so keys and values move into the port's types without a copy.

use drover_store::{
    Compare, CompareOp, CompareTarget, Delete, DeleteResponse, Event, EventKind, Get, GetResponse,
    KeyRange, KeyValue, Put, PutResponse, Revision, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use etcd_client::proto::{
    PbDeleteResponse, PbEvent, PbKeyValue, PbPutResponse, PbRangeResponse, PbResponseHeader,
    PbTxnOpResponse, PbTxnResponse,
};

/// etcd's `(key, range_end)` for a range. etcd rejects an empty key, so the
/// empty prefix ("every key") is sent as etcd's own spelling, `("\0", "\0")`.
pub(crate) fn etcd_range(range: &KeyRange) -> (Vec<u8>, Vec<u8>) {
    match range {
        KeyRange::Prefix(p) if p.is_empty() => (vec![0], vec![0]),
        other => (other.start().to_vec(), other.etcd_range_end()),
    }
}

fn sort_target(target: SortTarget) -> etcd_client::SortTarget {
    match target {
        SortTarget::Key => etcd_client::SortTarget::Key,
        SortTarget::Version => etcd_client::SortTarget::Version,
        SortTarget::CreateRevision => etcd_client::SortTarget::Create,
        SortTarget::ModRevision => etcd_client::SortTarget::Mod,
        SortTarget::Value => etcd_client::SortTarget::Value,
    }
}

fn sort_order(order: SortOrder) -> etcd_client::SortOrder {
    match order {
        SortOrder::Ascend => etcd_client::SortOrder::Ascend,
        SortOrder::Descend => etcd_client::SortOrder::Descend,
    }
}

/// The key and options of a range request. Ascending by key is etcd's
/// natural order: etcd-client sends it as "no sort", which lets the server
/// stop after `limit` keys instead of sorting the whole range.
pub(crate) fn get_options(get: &Get) -> (Vec<u8>, etcd_client::GetOptions) {
    let (key, end) = etcd_range(&get.range);
    let mut options = etcd_client::GetOptions::new()
        .with_range(end)
        .with_limit(get.limit)
        .with_revision(get.revision)
        .with_sort(sort_target(get.sort_target), sort_order(get.sort_order))
        .with_max_create_revision(get.max_create_revision)
        .with_min_create_revision(get.min_create_revision)
        .with_max_mod_revision(get.max_mod_revision)
        .with_min_mod_revision(get.min_mod_revision);
    if get.serializable {
        options = options.with_serializable();
    }
    if get.keys_only {
        options = options.with_keys_only();
    }
    if get.count_only {
        options = options.with_count_only();
    }
    (key, options)
}

pub(crate) fn put_options(put: &Put) -> etcd_client::PutOptions {
    let mut options = etcd_client::PutOptions::new().with_lease(put.lease);
    if put.prev_kv {
        options = options.with_prev_key();
    }
    if put.ignore_value {
        options = options.with_ignore_value();
    }
    if put.ignore_lease {
        options = options.with_ignore_lease();
    }
    options
}

pub(crate) fn delete_options(delete: &Delete) -> (Vec<u8>, etcd_client::DeleteOptions) {
    let (key, end) = etcd_range(&delete.range);
    let mut options = etcd_client::DeleteOptions::new().with_range(end);
    if delete.prev_kv {
        options = options.with_prev_key();
    }
    (key, options)
}

fn compare_op(op: CompareOp) -> etcd_client::CompareOp {
    match op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
        CompareOp::Less => etcd_client::CompareOp::Less,
    }
}

pub(crate) fn compare(c: &Compare) -> etcd_client::Compare {
    let key = c.key.clone();
    let op = compare_op(c.op);
    let compare = match &c.target {
        CompareTarget::Value(v) => etcd_client::Compare::value(key, op, v.clone()),
        CompareTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
        CompareTarget::Lease(l) => etcd_client::Compare::lease(key, op, *l),
    };
    if c.range_end.is_empty() {
        compare
    } else {
        compare.with_range(c.range_end.clone())
    }
}

/// A port txn as an etcd-client txn (nested txns included).
pub(crate) fn txn(t: &Txn) -> etcd_client::Txn {
    etcd_client::Txn::new()
        .when(t.compares.iter().map(compare).collect::<Vec<_>>())
        .and_then(t.success.iter().map(txn_op).collect::<Vec<_>>())
        .or_else(t.failure.iter().map(txn_op).collect::<Vec<_>>())
}

pub(crate) fn txn_op(op: &TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Get(g) => {
            let (key, options) = get_options(g);
            etcd_client::TxnOp::get(key, Some(options))
        }
        TxnOp::Put(p) => {
            etcd_client::TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p)))
        }
        TxnOp::Delete(d) => {
            let (key, options) = delete_options(d);
            etcd_client::TxnOp::delete(key, Some(options))
        }
        TxnOp::Txn(t) => etcd_client::TxnOp::txn(txn(t)),
    }
}

pub(crate) fn header_revision(header: Option<&PbResponseHeader>) -> Revision {
    header.map(|h| h.revision).unwrap_or_default()
}

pub(crate) fn key_value(kv: PbKeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

pub(crate) fn get_response(resp: PbRangeResponse, fallback_revision: Revision) -> GetResponse {
    GetResponse {
        revision: revision_or(resp.header.as_ref(), fallback_revision),
        kvs: resp.kvs.into_iter().map(key_value).collect(),
        count: resp.count,
        more: resp.more,
    }
}

pub(crate) fn put_response(resp: PbPutResponse, fallback_revision: Revision) -> PutResponse {
    PutResponse {
        revision: revision_or(resp.header.as_ref(), fallback_revision),
        prev_kv: resp.prev_kv.map(key_value),
    }
}

pub(crate) fn delete_response(
    resp: PbDeleteResponse,
    fallback_revision: Revision,
) -> DeleteResponse {
    DeleteResponse {
        revision: revision_or(resp.header.as_ref(), fallback_revision),
        deleted: resp.deleted,
        prev_kvs: resp.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// A header's revision; responses nested in a txn may carry none, and then
/// take the txn's.
fn revision_or(header: Option<&PbResponseHeader>, fallback: Revision) -> Revision {
    match header.map(|h| h.revision) {
        Some(rev) if rev > 0 => rev,
        _ => fallback,
    }
}

/// A txn response; nested ones carry no header revision of their own in
/// etcd and get the outer txn's.
pub(crate) fn txn_response(resp: PbTxnResponse, txn_revision: Revision) -> TxnResponse {
    TxnResponse {
        revision: txn_revision,
        succeeded: resp.succeeded,
        responses: resp
            .responses
            .into_iter()
            .filter_map(|op| op.response)
            .filter_map(|op| txn_op_response(op, txn_revision))
            .collect(),
    }
}

/// One txn op response.
pub(crate) fn txn_op_response(
    resp: PbTxnOpResponse,
    txn_revision: Revision,
) -> Option<TxnOpResponse> {
    match resp {
        PbTxnOpResponse::ResponseRange(r) => {
            Some(TxnOpResponse::Get(get_response(r, txn_revision)))
        }
        PbTxnOpResponse::ResponsePut(p) => Some(TxnOpResponse::Put(put_response(p, txn_revision))),
        PbTxnOpResponse::ResponseDeleteRange(d) => {
            Some(TxnOpResponse::Delete(delete_response(d, txn_revision)))
        }
        PbTxnOpResponse::ResponseTxn(t) => Some(TxnOpResponse::Txn(txn_response(t, txn_revision))),
    }
}

pub(crate) fn event(ev: PbEvent) -> Event {
    // mvccpb.Event_EventType: PUT = 0, DELETE = 1.
    let kind = if ev.r#type == 1 {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    Event {
        kind,
        kv: ev.kv.map(key_value).unwrap_or_default(),
        prev_kv: ev.prev_kv.map(key_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_prefix_is_every_key_in_etcd_spelling() {
        assert_eq!(
            etcd_range(&KeyRange::Prefix(Vec::new())),
            (vec![0], vec![0])
        );
        assert_eq!(
            etcd_range(&KeyRange::Prefix(b"a/".to_vec())),
            (b"a/".to_vec(), b"a0".to_vec())
        );
        assert_eq!(
            etcd_range(&KeyRange::Key(b"k".to_vec())),
            (b"k".to_vec(), Vec::new())
        );
        assert_eq!(
            etcd_range(&KeyRange::Range {
                start: b"a".to_vec(),
                end: b"c".to_vec()
            }),
            (b"a".to_vec(), b"c".to_vec())
        );
    }

    #[test]
    fn events_keep_kind_metadata_and_prev_kv() {
        let kv = PbKeyValue {
            key: b"k".to_vec(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: 9,
            version: 0,
            lease: 0,
        };
        let prev = PbKeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 3,
            mod_revision: 4,
            version: 2,
            lease: 5,
        };
        let ev = event(PbEvent {
            r#type: 1,
            kv: Some(kv),
            prev_kv: Some(prev),
        });
        assert_eq!(ev.kind, EventKind::Delete);
        assert_eq!(ev.kv.mod_revision, 9);
        let prev = ev.prev_kv.expect("prev kv");
        assert_eq!(
            (prev.version, prev.lease, prev.value.as_slice()),
            (2, 5, &b"v"[..])
        );
    }
}
