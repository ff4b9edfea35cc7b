//! Wire messages to store requests and store answers to wire messages.
//!
//! Requests from the wire are untrusted: every enum value and oneof is
//! checked here, and everything else is checked by the store's own
//! validation (`drover_store::limits`), so a bad request changes nothing.

use drover_store::{
    Compare, CompareOp, CompareTarget, Delete, DeleteResponse, Event, EventKind, Get, GetResponse,
    KeyRange, KeyValue, Put, PutResponse, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tonic::Status;

use crate::pb::etcdserverpb as etcd;
use crate::pb::mvccpb;
use crate::status::{INVALID_SORT_OPTION, KEY_NOT_FOUND};

/// etcd's `(key, range_end)` pair: an empty end is the single key, `\0` is
/// "every key from `key` on", anything else is `[key, range_end)`.
pub(crate) fn key_range(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
    if range_end.is_empty() {
        KeyRange::Key(key)
    } else {
        KeyRange::Range {
            start: key,
            end: range_end,
        }
    }
}

pub(crate) fn get(req: etcd::RangeRequest) -> Result<Get, Status> {
    use etcd::range_request::{SortOrder as WireOrder, SortTarget as WireTarget};
    let order = WireOrder::try_from(req.sort_order)
        .map_err(|_| Status::invalid_argument(INVALID_SORT_OPTION))?;
    let target = WireTarget::try_from(req.sort_target)
        .map_err(|_| Status::invalid_argument(INVALID_SORT_OPTION))?;
    let mut get = Get::new(key_range(req.key, req.range_end));
    get.limit = req.limit;
    get.revision = req.revision;
    // etcd sorts ascending when only a target is given, and results come
    // in key order anyway, so NONE is ASCEND.
    get.sort_order = match order {
        WireOrder::None | WireOrder::Ascend => SortOrder::Ascend,
        WireOrder::Descend => SortOrder::Descend,
    };
    get.sort_target = match target {
        WireTarget::Key => SortTarget::Key,
        WireTarget::Version => SortTarget::Version,
        WireTarget::Create => SortTarget::CreateRevision,
        WireTarget::Mod => SortTarget::ModRevision,
        WireTarget::Value => SortTarget::Value,
    };
    get.max_create_revision = req.max_create_revision;
    get.min_create_revision = req.min_create_revision;
    get.max_mod_revision = req.max_mod_revision;
    get.min_mod_revision = req.min_mod_revision;
    get.serializable = req.serializable;
    get.keys_only = req.keys_only;
    get.count_only = req.count_only;
    Ok(get)
}

pub(crate) fn put(req: etcd::PutRequest) -> Put {
    let mut put = Put::new(req.key, req.value).with_lease(req.lease);
    put.prev_kv = req.prev_kv;
    put.ignore_value = req.ignore_value;
    put.ignore_lease = req.ignore_lease;
    put
}

pub(crate) fn delete(req: etcd::DeleteRangeRequest) -> Delete {
    Delete {
        range: key_range(req.key, req.range_end),
        prev_kv: req.prev_kv,
    }
}

fn compare(c: etcd::Compare) -> Result<Compare, Status> {
    use etcd::compare::{CompareResult, CompareTarget as WireTarget, TargetUnion};
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: unknown compare result {}",
                c.result
            )));
        }
    };
    // etcd reads the union member the target names; a missing or different
    // member compares against the target's zero value.
    let number =
        |want: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match WireTarget::try_from(c.target) {
        Ok(WireTarget::Version) => CompareTarget::Version(number(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(WireTarget::Create) => CompareTarget::CreateRevision(number(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(WireTarget::Mod) => CompareTarget::ModRevision(number(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(WireTarget::Lease) => CompareTarget::Lease(number(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Ok(WireTarget::Value) => CompareTarget::Value(match c.target_union {
            Some(TargetUnion::Value(v)) => v,
            _ => Vec::new(),
        }),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "etcdserver: unknown compare target {}",
                c.target
            )));
        }
    };
    Ok(Compare::new(c.key, op, target).with_range_end(c.range_end))
}

fn txn_op(op: etcd::RequestOp) -> Result<TxnOp, Status> {
    use etcd::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(TxnOp::Get(get(r)?)),
        Some(Request::RequestPut(p)) => Ok(TxnOp::Put(put(p))),
        Some(Request::RequestDeleteRange(d)) => Ok(TxnOp::Delete(delete(d))),
        Some(Request::RequestTxn(t)) => Ok(TxnOp::Txn(txn(t)?)),
        // etcd answers an empty op this way.
        None => Err(Status::invalid_argument(KEY_NOT_FOUND)),
    }
}

pub(crate) fn txn(req: etcd::TxnRequest) -> Result<Txn, Status> {
    Ok(Txn {
        compares: req
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: req
            .success
            .into_iter()
            .map(txn_op)
            .collect::<Result<_, _>>()?,
        failure: req
            .failure
            .into_iter()
            .map(txn_op)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn key_value(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub(crate) fn event(e: Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put,
            EventKind::Delete => mvccpb::event::EventType::Delete,
        } as i32,
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

/// Builds responses with this server's header.
pub(crate) trait Headers {
    fn header_at(&self, revision: i64) -> etcd::ResponseHeader;

    fn range_response(&self, r: GetResponse) -> etcd::RangeResponse {
        etcd::RangeResponse {
            header: Some(self.header_at(r.revision)),
            kvs: r.kvs.into_iter().map(key_value).collect(),
            more: r.more,
            count: r.count,
        }
    }

    fn put_response(&self, r: PutResponse) -> etcd::PutResponse {
        etcd::PutResponse {
            header: Some(self.header_at(r.revision)),
            prev_kv: r.prev_kv.map(key_value),
        }
    }

    fn delete_response(&self, r: DeleteResponse) -> etcd::DeleteRangeResponse {
        etcd::DeleteRangeResponse {
            header: Some(self.header_at(r.revision)),
            deleted: r.deleted,
            prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
        }
    }

    fn txn_response(&self, r: TxnResponse) -> etcd::TxnResponse {
        use etcd::response_op::Response;
        let responses = r
            .responses
            .into_iter()
            .map(|op| etcd::ResponseOp {
                response: Some(match op {
                    TxnOpResponse::Get(g) => Response::ResponseRange(self.range_response(g)),
                    TxnOpResponse::Put(p) => Response::ResponsePut(self.put_response(p)),
                    TxnOpResponse::Delete(d) => {
                        Response::ResponseDeleteRange(self.delete_response(d))
                    }
                    TxnOpResponse::Txn(t) => Response::ResponseTxn(self.txn_response(t)),
                }),
            })
            .collect();
        etcd::TxnResponse {
            header: Some(self.header_at(r.revision)),
            succeeded: r.succeeded,
            responses,
        }
    }
}

impl<S: drover_store::Store> Headers for crate::Shared<S> {
    fn header_at(&self, revision: i64) -> etcd::ResponseHeader {
        self.header(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_ends_follow_etcds_conventions() {
        assert_eq!(
            key_range(b"a".to_vec(), vec![]),
            KeyRange::Key(b"a".to_vec())
        );
        let from = key_range(b"a".to_vec(), vec![0]);
        assert!(from.contains(b"a") && from.contains(b"zzz") && !from.contains(b"\x00"));
        let span = key_range(b"a".to_vec(), b"c".to_vec());
        assert!(span.contains(b"b") && !span.contains(b"c"));
    }

    #[test]
    fn unknown_enum_values_are_rejected_as_etcd_does() {
        let err = get(etcd::RangeRequest {
            key: b"a".to_vec(),
            sort_order: 7,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.message(), "etcdserver: invalid sort option");
        let err = txn(etcd::TxnRequest {
            success: vec![etcd::RequestOp { request: None }],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.message(), "etcdserver: key not found");
    }

    #[test]
    fn compares_read_the_union_member_their_target_names() {
        use etcd::compare::{CompareResult, CompareTarget as T, TargetUnion};
        let c = compare(etcd::Compare {
            result: CompareResult::Greater as i32,
            target: T::Mod as i32,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::ModRevision(5)),
            range_end: vec![],
        })
        .unwrap();
        assert_eq!(c, Compare::mod_revision("k", CompareOp::Greater, 5));
        let c = compare(etcd::Compare {
            target: T::Version as i32,
            key: b"k".to_vec(),
            target_union: Some(TargetUnion::Value(b"x".to_vec())),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c, Compare::version("k", CompareOp::Equal, 0));
    }
}
