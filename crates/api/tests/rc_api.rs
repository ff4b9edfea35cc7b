//! `RcApi` in process over the in-memory embedded store: every RPC, bad
//! input (refused naming the field, changing nothing), who the audit trail
//! names, and `WatchRcs` fed by statuses written as a farm writes them.

use std::net::SocketAddr;

use drover_api::pb::orchestrator::v1 as pb;
use drover_api::pb::orchestrator::v1::rc_service_server::RcService;
use drover_api::rc::RcWatchEvent;
use drover_api::{Caller, CertificateIdentity, Identity, RcApi, RcInfo};
use drover_rc_farm::audit::{AuditAction, AuditRecord};
use drover_rc_farm::status::{Condition, RcStatus};
use drover_rc_farm::store::RcStore;
use drover_store::embedded::EmbeddedStore;
use drover_store::keys::Keys;
use drover_store::{Put, Store, Txn};
use futures::StreamExt;
use tonic::{Code, Request, Status};

fn rc_yaml(id: &str, replicas: u32, team: &str) -> String {
    format!(
        "id: {id}\nlabels: {{ team: {team} }}\nreplicas_desired: {replicas}\nnode_selector: ''\n\
         manifest:\n  id: {id}\n  launchables: {{ s: {{ type: process, command: /bin/{id} }} }}\n"
    )
}

struct Fixture {
    store: EmbeddedStore,
    api: RcApi<EmbeddedStore>,
    rcs: RcStore<EmbeddedStore>,
}

fn fixture() -> Fixture {
    let store = EmbeddedStore::in_memory();
    Fixture {
        api: RcApi::new(store.clone(), Keys::default()),
        rcs: RcStore::new(store.clone(), Keys::default()),
        store,
    }
}

const OPERATOR: &str = "CN=alice,O=ops";

/// A request from an operator with a client certificate, as
/// `identify_caller` would attach it.
fn as_operator<T>(msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request.extensions_mut().insert(Caller {
        remote_addr: Some("127.0.0.1:5000".parse().unwrap()),
        identity: Identity::Certificate(CertificateIdentity {
            subject: OPERATOR.into(),
            common_name: Some("alice".into()),
            dns_names: vec![],
        }),
    });
    request
}

/// A request without a client certificate.
fn anonymous<T>(msg: T, from: SocketAddr) -> Request<T> {
    let mut request = Request::new(msg);
    request.extensions_mut().insert(Caller {
        remote_addr: Some(from),
        identity: Identity::Anonymous,
    });
    request
}

async fn create(f: &Fixture, id: &str, replicas: u32, team: &str) -> RcInfo {
    let response = f
        .api
        .create_rc(as_operator(pb::CreateRcRequest {
            yaml: rc_yaml(id, replicas, team),
        }))
        .await
        .unwrap_or_else(|e| panic!("creating {id}: {e:?}"));
    RcInfo::try_from(response.into_inner()).unwrap()
}

async fn get(f: &Fixture, id: &str) -> Result<RcInfo, Status> {
    let response = f
        .api
        .get_rc(Request::new(pb::GetRcRequest { id: id.into() }))
        .await?;
    Ok(RcInfo::try_from(response.into_inner()).unwrap())
}

async fn list(f: &Fixture, selector: &str) -> Result<Vec<RcInfo>, Status> {
    let response = f
        .api
        .list_rcs(Request::new(pb::ListRcsRequest {
            selector: selector.into(),
        }))
        .await?;
    Ok(Vec::try_from(response.into_inner()).unwrap())
}

async fn audit(f: &Fixture, rc: &str, limit: u32) -> Vec<AuditRecord> {
    let response = f
        .api
        .list_audit(Request::new(pb::ListAuditRequest {
            rc_id: rc.into(),
            limit,
        }))
        .await
        .unwrap();
    Vec::try_from(response.into_inner()).unwrap()
}

fn ids(rcs: &[RcInfo]) -> Vec<&str> {
    rcs.iter().map(|rc| rc.spec.id.as_ref()).collect()
}

fn status(desired: u32, healthy: u32) -> RcStatus {
    RcStatus {
        desired,
        current: desired,
        ready: healthy,
        healthy,
        conditions: vec![Condition {
            kind: "Ready".into(),
            ok: healthy == desired,
            reason: String::new(),
        }],
        last_error: None,
        owner: "farm-test".into(),
        token: 7,
        observed_revision: 1,
        updated_at_ms: 1_700_000_000_000,
    }
}

/// Writes a status through the store, as the owning farm does.
async fn write_status(f: &Fixture, id: &str, status: &RcStatus) {
    let op = f.rcs.status_op(&id.parse().unwrap(), status);
    let response = f.store.txn(Txn::new().and_then([op])).await.unwrap();
    assert!(response.succeeded);
}

fn assert_field_error(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "the message names `{field}`: {status:?}"
    );
}

#[tokio::test]
async fn create_get_list_and_update_an_rc() {
    let f = fixture();
    let web = create(&f, "web", 3, "storefront").await;
    assert_eq!(web.spec.replicas_desired, 3);
    assert_eq!(web.status, None, "no farm has reported yet");
    assert!(web.revision >= 1);
    assert_eq!(web.created_revision, web.revision);
    create(&f, "db", 1, "data").await;

    let got = get(&f, "web").await.unwrap();
    assert_eq!(got, web);
    assert_eq!(ids(&list(&f, "").await.unwrap()), ["db", "web"]);
    assert_eq!(ids(&list(&f, "team=storefront").await.unwrap()), ["web"]);
    assert_eq!(ids(&list(&f, "team in (data,none)").await.unwrap()), ["db"]);
    assert!(list(&f, "team=nobody").await.unwrap().is_empty());

    // A status, once a farm wrote one, is part of get and list.
    write_status(&f, "web", &status(3, 2)).await;
    assert_eq!(get(&f, "web").await.unwrap().status, Some(status(3, 2)));
    let listed = list(&f, "").await.unwrap();
    assert_eq!(listed[0].status, None);
    assert_eq!(listed[1].status, Some(status(3, 2)));

    // Update pinned to the revision read: once, then the pin is stale.
    let yaml = rc_yaml("web", 5, "storefront").replace("''", "zone=a");
    let updated = f
        .api
        .update_rc(as_operator(pb::UpdateRcRequest {
            yaml: yaml.clone(),
            expected_revision: web.revision,
        }))
        .await
        .unwrap();
    let updated = RcInfo::try_from(updated.into_inner()).unwrap();
    assert_eq!(updated.spec.replicas_desired, 5);
    assert_eq!(updated.spec.node_selector.to_string(), "zone=a");
    assert!(updated.revision > web.revision);
    assert_eq!(updated.created_revision, web.created_revision);
    let stale = f
        .api
        .update_rc(as_operator(pb::UpdateRcRequest {
            yaml,
            expected_revision: web.revision,
        }))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    // Without a pin, the update replaces whatever is stored.
    f.api
        .update_rc(as_operator(pb::UpdateRcRequest {
            yaml: rc_yaml("web", 4, "storefront"),
            expected_revision: 0,
        }))
        .await
        .unwrap();
    assert_eq!(get(&f, "web").await.unwrap().spec.replicas_desired, 4);
    // An update of an RC that does not exist.
    let missing = f
        .api
        .update_rc(as_operator(pb::UpdateRcRequest {
            yaml: rc_yaml("nope", 1, "x"),
            expected_revision: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn scale_enable_disable_transfer_delete_and_their_audit_trail() {
    let f = fixture();
    create(&f, "old", 4, "web").await;
    create(&f, "new", 0, "web").await;

    let scaled = f
        .api
        .scale_rc(as_operator(pb::ScaleRcRequest {
            id: "old".into(),
            replicas: 5,
        }))
        .await
        .unwrap();
    assert_eq!(
        RcInfo::try_from(scaled.into_inner())
            .unwrap()
            .spec
            .replicas_desired,
        5
    );

    let disabled = f
        .api
        .disable_rc(as_operator(pb::DisableRcRequest { id: "old".into() }))
        .await
        .unwrap();
    assert!(
        RcInfo::try_from(disabled.into_inner())
            .unwrap()
            .spec
            .disabled
    );
    let enabled = f
        .api
        .enable_rc(as_operator(pb::EnableRcRequest { id: "old".into() }))
        .await
        .unwrap();
    assert!(
        !RcInfo::try_from(enabled.into_inner())
            .unwrap()
            .spec
            .disabled
    );

    let transferred = f
        .api
        .transfer_replicas(as_operator(pb::TransferReplicasRequest {
            from_id: "old".into(),
            to_id: "new".into(),
            count: 2,
        }))
        .await
        .unwrap();
    let (from, to) = <(RcInfo, RcInfo)>::try_from(transferred.into_inner()).unwrap();
    assert_eq!(
        (from.spec.replicas_desired, to.spec.replicas_desired),
        (3, 2)
    );
    let too_many = f
        .api
        .transfer_replicas(as_operator(pb::TransferReplicasRequest {
            from_id: "old".into(),
            to_id: "new".into(),
            count: 4,
        }))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::FailedPrecondition, "{too_many:?}");

    // A delete above 0 replicas needs force; forced, the RC is marked
    // deleting at 0 (its farm removes it).
    let refused = f
        .api
        .delete_rc(as_operator(pb::DeleteRcRequest {
            id: "old".into(),
            force: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("force"), "{refused:?}");
    let deleted = f
        .api
        .delete_rc(as_operator(pb::DeleteRcRequest {
            id: "old".into(),
            force: true,
        }))
        .await
        .unwrap();
    let deleted = RcInfo::try_from(deleted.into_inner()).unwrap();
    assert!(deleted.spec.deleting);
    assert_eq!(deleted.spec.replicas_desired, 0);
    // A deleting RC takes no more replicas.
    let scale_up = f
        .api
        .scale_rc(as_operator(pb::ScaleRcRequest {
            id: "old".into(),
            replicas: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(scale_up.code(), Code::FailedPrecondition, "{scale_up:?}");

    let trail = audit(&f, "old", 0).await;
    let actions: Vec<AuditAction> = trail.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Create,
            AuditAction::Scale,
            AuditAction::Disable,
            AuditAction::Enable,
            AuditAction::Transfer,
            AuditAction::Delete,
        ]
    );
    assert!(trail.iter().all(|r| r.who == OPERATOR), "{trail:?}");
    let transfer = &trail[4];
    assert_eq!(transfer.rcs, ["old", "new"]);
    assert_eq!(
        transfer.after,
        Some(serde_json::json!({"old": 3, "new": 2}))
    );
    // The newest two, oldest first; every RC's records without an id.
    let newest = audit(&f, "old", 2).await;
    assert_eq!(
        newest.iter().map(|r| r.action).collect::<Vec<_>>(),
        [AuditAction::Transfer, AuditAction::Delete]
    );
    assert_eq!(
        audit(&f, "", 0).await.len(),
        7,
        "two creates and five changes"
    );
}

#[tokio::test]
async fn an_anonymous_caller_is_recorded_by_its_address() {
    let f = fixture();
    let from: SocketAddr = "127.0.0.1:41234".parse().unwrap();
    f.api
        .create_rc(anonymous(
            pb::CreateRcRequest {
                yaml: rc_yaml("web", 1, "x"),
            },
            from,
        ))
        .await
        .unwrap();
    let trail = audit(&f, "web", 0).await;
    assert_eq!(trail[0].who, "anonymous@127.0.0.1:41234");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let f = fixture();
    create(&f, "web", 2, "x").await;
    let before = f.store.current_revision().await.unwrap();

    let without_replicas = rc_yaml("db", 1, "x").replace("replicas_desired: 1\n", "");
    let err = f
        .api
        .create_rc(as_operator(pb::CreateRcRequest {
            yaml: without_replicas,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "replicas_desired");
    let err = f
        .api
        .create_rc(as_operator(pb::CreateRcRequest {
            yaml: "id: [".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = f
        .api
        .create_rc(as_operator(pb::CreateRcRequest {
            yaml: String::new(),
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "yaml");
    let err = f
        .api
        .create_rc(as_operator(pb::CreateRcRequest {
            yaml: rc_yaml("web", 1, "x"),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = f
        .api
        .update_rc(as_operator(pb::UpdateRcRequest {
            yaml: rc_yaml("web", 1, "x").replace("''", "'zone in ('"),
            expected_revision: 0,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "node_selector");
    let err = f
        .api
        .scale_rc(as_operator(pb::ScaleRcRequest {
            id: "web".into(),
            replicas: 1_000_001,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "replicas");
    let err = f
        .api
        .scale_rc(as_operator(pb::ScaleRcRequest {
            id: "Web".into(),
            replicas: 1,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "id");
    let err = f
        .api
        .transfer_replicas(as_operator(pb::TransferReplicasRequest {
            from_id: "web".into(),
            to_id: "web".into(),
            count: 1,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "to_id");
    let err = list(&f, "team in (a,").await.unwrap_err();
    assert_field_error(&err, "selector");
    let err = get(&f, "").await.unwrap_err();
    assert_field_error(&err, "id");
    let err = get(&f, "nope").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = f
        .api
        .enable_rc(as_operator(pb::EnableRcRequest { id: "nope".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = f
        .api
        .list_audit(Request::new(pb::ListAuditRequest {
            rc_id: "-".into(),
            limit: 1,
        }))
        .await
        .unwrap_err();
    assert_field_error(&err, "rc_id");
    let err = f
        .api
        .watch_rcs(Request::new(pb::WatchRcsRequest { id: "a b".into() }))
        .await
        .err()
        .unwrap();
    assert_field_error(&err, "id");

    // Nothing was written: same revision, same record, one audit record.
    assert_eq!(f.store.current_revision().await.unwrap(), before);
    assert_eq!(get(&f, "web").await.unwrap().spec.replicas_desired, 2);
    assert_eq!(audit(&f, "", 0).await.len(), 1);
}

async fn next_event(stream: &mut drover_api::WatchRcsStream) -> RcWatchEvent {
    let message = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .expect("a watch event within 30 s")
        .expect("the stream goes on")
        .expect("no error");
    RcWatchEvent::try_from(message).unwrap()
}

async fn watch(f: &Fixture, id: &str) -> drover_api::WatchRcsStream {
    f.api
        .watch_rcs(Request::new(pb::WatchRcsRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn watch_lists_the_current_statuses_then_follows_changes() {
    let f = fixture();
    create(&f, "web", 3, "x").await;
    create(&f, "db", 1, "x").await;
    write_status(&f, "web", &status(3, 1)).await;

    let mut all = watch(&f, "").await;
    let mut only_db = watch(&f, "db").await;
    let web: drover_ids::RcId = "web".parse().unwrap();
    let db: drover_ids::RcId = "db".parse().unwrap();

    let first = next_event(&mut all).await;
    let RcWatchEvent::Existing {
        id,
        status: existing,
        revision,
    } = first
    else {
        panic!("expected the existing status first, got {first:?}");
    };
    assert_eq!((id, existing), (web.clone(), status(3, 1)));
    assert_eq!(
        next_event(&mut all).await,
        RcWatchEvent::Synced { revision }
    );
    // db has no status yet: its watch is synced at once.
    assert!(matches!(
        next_event(&mut only_db).await,
        RcWatchEvent::Synced { .. }
    ));

    // The farm reports on db, rewrites web's status unchanged (no event),
    // then changes it.
    write_status(&f, "db", &status(1, 1)).await;
    write_status(&f, "web", &status(3, 1)).await;
    write_status(&f, "web", &status(3, 3)).await;
    let event = next_event(&mut all).await;
    assert!(
        matches!(&event, RcWatchEvent::Updated { id, status: s, .. } if *id == db && *s == status(1, 1)),
        "{event:?}"
    );
    let event = next_event(&mut all).await;
    assert!(
        matches!(&event, RcWatchEvent::Updated { id, status: s, .. } if *id == web && *s == status(3, 3)),
        "{event:?}"
    );
    let event = next_event(&mut only_db).await;
    assert!(
        matches!(&event, RcWatchEvent::Updated { id, .. } if *id == db),
        "{event:?}"
    );

    // The farm removes db (record and status) after its last pod.
    let ops = f.rcs.remove_ops(&db);
    f.store.txn(Txn::new().and_then(ops)).await.unwrap();
    let event = next_event(&mut all).await;
    assert!(
        matches!(&event, RcWatchEvent::Deleted { id, .. } if *id == db),
        "{event:?}"
    );
    let event = next_event(&mut only_db).await;
    assert!(
        matches!(&event, RcWatchEvent::Deleted { id, .. } if *id == db),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_corrupt_status_ends_the_watch_with_data_loss_naming_the_key() {
    let f = fixture();
    create(&f, "web", 1, "x").await;
    let mut stream = watch(&f, "").await;
    assert!(matches!(
        next_event(&mut stream).await,
        RcWatchEvent::Synced { .. }
    ));
    let key = Keys::default().status("rc", "web").unwrap();
    f.store
        .put(Put::new(key.clone(), "not json"))
        .await
        .unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .expect("an error, then the end")
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&key), "{err:?}");
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
    // GetRc reports it the same way rather than hiding the status.
    let err = get(&f, "web").await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let f = fixture();
    create(&f, "web", 1, "x").await;
    f.store.close().await.unwrap();
    let err = get(&f, "web").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = f
        .api
        .scale_rc(as_operator(pb::ScaleRcRequest {
            id: "web".into(),
            replicas: 2,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
