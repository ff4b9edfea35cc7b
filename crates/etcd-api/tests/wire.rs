//! Bad input and hard clients through a real gRPC connection: every bad
//! request gets etcd's status and changes nothing, and the server stays
//! healthy for everyone else.

use std::time::Duration;

use drover_etcd_api::pb::etcdserverpb as etcd;
use drover_etcd_api::pb::etcdserverpb::kv_client::KvClient;
use drover_etcd_api::pb::etcdserverpb::lease_client::LeaseClient;
use drover_etcd_api::pb::etcdserverpb::watch_client::WatchClient;
use drover_etcd_api::testing::TestServer;
use drover_etcd_api::{DUPLICATE_WATCH_ID, EtcdApiConfig, INVALID_WATCH_ID};
use drover_store::embedded::EmbeddedStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// Bound on every wait for a server answer.
const ANSWER: Duration = Duration::from_secs(30);

async fn start(config: EtcdApiConfig) -> (TestServer, Channel) {
    let server = TestServer::start(EmbeddedStore::in_memory(), config)
        .await
        .unwrap();
    let channel = server.channel().await.unwrap();
    (server, channel)
}

fn kv(channel: &Channel) -> KvClient<Channel> {
    KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX)
}

fn put(key: &str, value: impl Into<Vec<u8>>) -> etcd::PutRequest {
    etcd::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn prefix(p: &str) -> etcd::RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    etcd::RangeRequest {
        key: p.into(),
        range_end: end,
        ..Default::default()
    }
}

async fn count(channel: &Channel, p: &str) -> i64 {
    kv(channel)
        .range(prefix(p))
        .await
        .unwrap()
        .into_inner()
        .count
}

#[tokio::test]
async fn oversized_requests_are_refused_with_etcds_errors_and_write_nothing() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    // Over etcd's 1.5 MiB request limit but under gRPC's frame limit: the
    // store refuses it with etcd's text.
    let err = kv(&channel)
        .put(put("big/a", vec![b'x'; 1600 * 1024]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");
    // Over the gRPC limit as well: refused by tonic before it is decoded
    // (tonic says OUT_OF_RANGE where grpc-go says RESOURCE_EXHAUSTED).
    let err = kv(&channel)
        .put(put("big/b", vec![b'x'; 3 * 1024 * 1024]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    assert_eq!(count(&channel, "big/").await, 0);
    // Just under the limit is fine.
    kv(&channel)
        .put(put("big/c", vec![b'x'; 1024 * 1024]))
        .await
        .unwrap();
    assert_eq!(count(&channel, "big/").await, 1);
}

#[tokio::test]
async fn too_many_txn_ops_and_duplicate_keys_are_refused() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let op = |i: usize| etcd::RequestOp {
        request: Some(etcd::request_op::Request::RequestPut(put(
            &format!("txn/{i}"),
            "v",
        ))),
    };
    let err = kv(&channel)
        .txn(etcd::TxnRequest {
            success: (0..129).map(op).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "etcdserver: too many operations in txn request"
    );
    let err = kv(&channel)
        .txn(etcd::TxnRequest {
            success: vec![op(1), op(1)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: duplicate key given in txn request"
    );
    let err = kv(&channel)
        .txn(etcd::TxnRequest {
            success: vec![etcd::RequestOp { request: None }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: key not found");
    assert_eq!(count(&channel, "txn/").await, 0);
    kv(&channel)
        .txn(etcd::TxnRequest {
            success: (0..128).map(op).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(count(&channel, "txn/").await, 128);
}

#[tokio::test]
async fn unknown_leases_get_etcds_answers() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let unknown = 0x1234_5678;
    let err = kv(&channel)
        .put(etcd::PutRequest {
            lease: unknown,
            ..put("lease/a", "v")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    assert_eq!(count(&channel, "lease/").await, 0);

    let mut leases = LeaseClient::new(channel.clone());
    let err = leases
        .lease_revoke(etcd::LeaseRevokeRequest { id: unknown })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: requested lease not found");
    let ttl = leases
        .lease_time_to_live(etcd::LeaseTimeToLiveRequest {
            id: unknown,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ttl.id, ttl.ttl), (unknown, -1));

    // The keep-alive stream answers TTL 0 for it and keeps going.
    let (tx, rx) = mpsc::channel(4);
    let mut answers = leases
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(etcd::LeaseKeepAliveRequest { id: unknown })
        .await
        .unwrap();
    let answer = tokio::time::timeout(ANSWER, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((answer.id, answer.ttl), (unknown, 0));
    let granted = leases
        .lease_grant(etcd::LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .unwrap()
        .into_inner();
    tx.send(etcd::LeaseKeepAliveRequest { id: granted.id })
        .await
        .unwrap();
    let answer = tokio::time::timeout(ANSWER, answers.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.id, granted.id);
    assert!(answer.ttl > 0, "{answer:?}");
    assert!(answer.header.unwrap().revision >= 1);
}

/// A watch stream driven by hand.
struct RawWatch {
    requests: mpsc::Sender<etcd::WatchRequest>,
    responses: tonic::Streaming<etcd::WatchResponse>,
}

impl RawWatch {
    async fn open(channel: &Channel) -> RawWatch {
        let (requests, rx) = mpsc::channel(16);
        let responses = WatchClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawWatch {
            requests,
            responses,
        }
    }

    async fn send(&self, request: etcd::watch_request::RequestUnion) {
        self.requests
            .send(etcd::WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }

    async fn create(&self, create: etcd::WatchCreateRequest) {
        self.send(etcd::watch_request::RequestUnion::CreateRequest(create))
            .await;
    }

    async fn next(&mut self) -> etcd::WatchResponse {
        tokio::time::timeout(ANSWER, self.responses.message())
            .await
            .expect("a watch response in time")
            .expect("the stream is healthy")
            .expect("the stream is open")
    }
}

fn watch_key(key: &str) -> etcd::WatchCreateRequest {
    etcd::WatchCreateRequest {
        key: key.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_compacted_start_revision_cancels_the_watch_with_the_compact_revision() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let mut revisions = Vec::new();
    for value in ["1", "2", "3"] {
        let done = kv(&channel)
            .put(put("c/k", value))
            .await
            .unwrap()
            .into_inner();
        revisions.push(done.header.unwrap().revision);
    }
    kv(&channel)
        .compact(etcd::CompactionRequest {
            revision: revisions[2],
            physical: false,
        })
        .await
        .unwrap();
    let mut watch = RawWatch::open(&channel).await;
    watch
        .create(etcd::WatchCreateRequest {
            start_revision: revisions[0],
            ..watch_key("c/k")
        })
        .await;
    let created = watch.next().await;
    assert!(created.created, "{created:?}");
    let canceled = watch.next().await;
    assert!(canceled.canceled, "{canceled:?}");
    assert_eq!(canceled.watch_id, created.watch_id);
    assert!(canceled.compact_revision >= revisions[2], "{canceled:?}");
    assert!(canceled.events.is_empty());

    // A read below the compaction point is etcd's OutOfRange.
    let err = kv(&channel)
        .range(etcd::RangeRequest {
            revision: revisions[0],
            ..prefix("c/")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[tokio::test]
async fn watch_ids_cancels_and_progress_requests_follow_etcd() {
    use etcd::watch_request::RequestUnion;
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let mut watch = RawWatch::open(&channel).await;
    watch
        .create(etcd::WatchCreateRequest {
            watch_id: 7,
            ..watch_key("w/a")
        })
        .await;
    let created = watch.next().await;
    assert_eq!(
        (created.watch_id, created.created, created.canceled),
        (7, true, false)
    );
    // The same id again is refused on the stream, which stays open.
    watch
        .create(etcd::WatchCreateRequest {
            watch_id: 7,
            ..watch_key("w/b")
        })
        .await;
    let refused = watch.next().await;
    assert_eq!(refused.watch_id, INVALID_WATCH_ID);
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, DUPLICATE_WATCH_ID);

    let written = kv(&channel)
        .put(put("w/a", "1"))
        .await
        .unwrap()
        .into_inner();
    let revision = written.header.unwrap().revision;
    let event = watch.next().await;
    assert_eq!(event.watch_id, 7);
    assert_eq!(event.events.len(), 1);
    assert_eq!(event.events[0].kv.as_ref().unwrap().mod_revision, revision);

    watch
        .send(RequestUnion::ProgressRequest(etcd::WatchProgressRequest {}))
        .await;
    let progress = watch.next().await;
    assert_eq!(progress.watch_id, INVALID_WATCH_ID);
    assert!(progress.events.is_empty());
    assert!(progress.header.unwrap().revision >= revision);

    watch
        .send(RequestUnion::CancelRequest(etcd::WatchCancelRequest {
            watch_id: 7,
        }))
        .await;
    let canceled = watch.next().await;
    assert_eq!((canceled.watch_id, canceled.canceled), (7, true));
    // After the cancel, writes reach nobody: the next answer on the stream
    // is the new watch's.
    kv(&channel).put(put("w/a", "2")).await.unwrap();
    watch.create(watch_key("w/c")).await;
    let next = watch.next().await;
    assert!(next.created, "{next:?}");
    assert_ne!(next.watch_id, 7);
}

#[tokio::test]
async fn large_responses_are_fragmented_when_asked() {
    let config = EtcdApiConfig {
        fragment_bytes: 2_000,
        ..EtcdApiConfig::default()
    };
    let (_server, channel) = start(config).await;
    let mut watch = RawWatch::open(&channel).await;
    watch
        .create(etcd::WatchCreateRequest {
            key: b"f/".to_vec(),
            range_end: b"f0".to_vec(),
            fragment: true,
            ..Default::default()
        })
        .await;
    assert!(watch.next().await.created);
    let ops = (0..10)
        .map(|i| etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestPut(put(
                &format!("f/{i}"),
                vec![b'v'; 500],
            ))),
        })
        .collect();
    kv(&channel)
        .txn(etcd::TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut parts = Vec::new();
    loop {
        let part = watch.next().await;
        let more = part.fragment;
        parts.push(part);
        if !more || parts.len() > 10 {
            break;
        }
    }
    assert!(
        parts.len() > 1,
        "one txn's events came in {} part(s)",
        parts.len()
    );
    assert!(!parts.last().unwrap().fragment);
    let keys: Vec<Vec<u8>> = parts
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.kv.as_ref().unwrap().key.clone()))
        .collect();
    let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("f/{i}").into_bytes()).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn a_client_that_never_reads_its_watch_gets_it_canceled() {
    let config = EtcdApiConfig {
        watch_buffer: 2,
        watch_send_timeout: Duration::from_millis(300),
        ..EtcdApiConfig::default()
    };
    let (_server, channel) = start(config).await;
    let mut watch = RawWatch::open(&channel).await;
    watch
        .create(etcd::WatchCreateRequest {
            key: b"s/".to_vec(),
            range_end: b"s0".to_vec(),
            ..Default::default()
        })
        .await;
    let created = watch.next().await;
    // Far more than the stream's buffers and HTTP/2 windows hold, while the
    // client reads nothing.
    let value = vec![b'x'; 64 * 1024];
    for i in 0..200 {
        kv(&channel)
            .put(put(&format!("s/{i}"), value.clone()))
            .await
            .unwrap();
    }
    // The server stays responsive for everyone else meanwhile.
    assert_eq!(count(&channel, "s/").await, 200);
    // The puts may all be answered before the server's send has waited out
    // its timeout: keep not reading for a good while longer than that.
    tokio::time::sleep(5 * Duration::from_millis(300)).await;
    // Now the client reads: what was queued, then the cancel with a reason,
    // never all 200 events.
    let mut events = 0;
    let canceled = loop {
        let response = watch.next().await;
        assert_eq!(response.watch_id, created.watch_id);
        events += response.events.len();
        if response.canceled {
            break response;
        }
        assert!(events < 200, "every event was kept for the stuck client");
    };
    assert!(
        canceled
            .cancel_reason
            .contains("did not read its watch stream"),
        "{canceled:?}"
    );
    assert!(events < 200, "{events}");
}

/// A codec that sends and receives raw bytes, to put malformed protobuf on
/// the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn malformed_protobuf_is_refused_and_changes_nothing() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let garbage: [&[u8]; 3] = [
        // A length-delimited key field claiming more bytes than follow.
        &[0x0a, 0x7f, b'k'],
        // A field with an invalid wire type.
        &[0x0f, 0x01],
        // A varint that never ends.
        &[
            0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
    ];
    for bytes in garbage {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(bytes.to_vec()),
                tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Internal, "{bytes:?}: {err:?}");
    }
    // Nothing was written and the server still answers.
    let all = kv(&channel)
        .range(etcd::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.count, 0);
}

#[tokio::test]
async fn etcd_34_features_reach_the_store_through_the_wire() {
    use etcd::compare::{CompareResult, CompareTarget, TargetUnion};
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    kv(&channel).put(put("n/a", "1")).await.unwrap();
    kv(&channel).put(put("n/b", "1")).await.unwrap();
    // A range compare holds only if it holds for every key in the range;
    // a nested txn runs its own branch in the same revision.
    let every_value_is_1 = etcd::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Value as i32,
        key: b"n/".to_vec(),
        range_end: b"n0".to_vec(),
        target_union: Some(TargetUnion::Value(b"1".to_vec())),
    };
    let nested = etcd::TxnRequest {
        compare: vec![etcd::Compare {
            key: b"n/zzz".to_vec(),
            target: CompareTarget::Create as i32,
            target_union: Some(TargetUnion::CreateRevision(0)),
            ..Default::default()
        }],
        success: vec![etcd::RequestOp {
            request: Some(etcd::request_op::Request::RequestPut(put("n/c", "nested"))),
        }],
        failure: vec![],
    };
    let done = kv(&channel)
        .txn(etcd::TxnRequest {
            compare: vec![every_value_is_1],
            success: vec![etcd::RequestOp {
                request: Some(etcd::request_op::Request::RequestTxn(nested)),
            }],
            failure: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.succeeded);
    match &done.responses[0].response {
        Some(etcd::response_op::Response::ResponseTxn(inner)) => {
            assert!(inner.succeeded);
            assert_eq!(inner.responses.len(), 1);
        }
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    assert_eq!(count(&channel, "n/").await, 3);

    // ignore_value keeps the value; on a missing key it is etcd's error.
    kv(&channel)
        .put(etcd::PutRequest {
            ignore_value: true,
            ..put("n/a", "")
        })
        .await
        .unwrap();
    let a = kv(&channel)
        .range(etcd::RangeRequest {
            key: b"n/a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (a.kvs[0].value.as_slice(), a.kvs[0].version),
        (&b"1"[..], 2)
    );
    let err = kv(&channel)
        .put(etcd::PutRequest {
            ignore_value: true,
            ..put("n/missing", "")
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: key not found");
    let err = kv(&channel)
        .put(etcd::PutRequest {
            ignore_value: true,
            ..put("n/a", "x")
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: value is provided");

    // Revision filters.
    let filtered = kv(&channel)
        .range(etcd::RangeRequest {
            min_mod_revision: a.kvs[0].mod_revision,
            ..prefix("n/")
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<&[u8]> = filtered.kvs.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"n/a"[..]]);

    // A chosen lease id; the same id again is etcd's "lease already exists".
    let mut leases = LeaseClient::new(channel.clone());
    let chosen = 0x7777;
    let granted = leases
        .lease_grant(etcd::LeaseGrantRequest {
            ttl: 60,
            id: chosen,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.id, chosen);
    let err = leases
        .lease_grant(etcd::LeaseGrantRequest {
            ttl: 60,
            id: chosen,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "etcdserver: lease already exists");
    let listed = leases
        .lease_leases(etcd::LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.leases.iter().any(|l| l.id == chosen), "{listed:?}");
}

#[tokio::test]
async fn watch_filters_leave_out_what_was_asked() {
    let (_server, channel) = start(EtcdApiConfig::default()).await;
    let mut watch = RawWatch::open(&channel).await;
    watch
        .create(etcd::WatchCreateRequest {
            filters: vec![etcd::watch_create_request::FilterType::Noput as i32],
            ..watch_key("nf/k")
        })
        .await;
    assert!(watch.next().await.created);
    kv(&channel).put(put("nf/k", "1")).await.unwrap();
    kv(&channel)
        .delete_range(etcd::DeleteRangeRequest {
            key: b"nf/k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let only = watch.next().await;
    assert_eq!(only.events.len(), 1, "{only:?}");
    assert_eq!(
        only.events[0].r#type,
        drover_etcd_api::pb::mvccpb::event::EventType::Delete as i32
    );
}
