//! RcStore on both backends: every change is a compare-and-swap with its
//! audit record, and refused changes change nothing.

use drover_ids::RcId;
use drover_labels::Selector;
use drover_rc_farm::audit::AuditAction;
use drover_rc_farm::store::RcStore;
use drover_rc_farm::{RcError, RcSpec};
use drover_store::Store;
use drover_store::keys::Keys;
use drover_store_etcd::on_both_backends;

fn rc(id: &str, replicas: u32, labels: &str) -> RcSpec {
    RcSpec::from_yaml(&format!(
        "id: {id}\nlabels: {{{labels}}}\nreplicas_desired: {replicas}\nnode_selector: ''\nmanifest:\n  id: {id}\n  launchables: {{ s: {{ type: process, command: /bin/{id} }} }}\n"
    ))
    .unwrap()
}

async fn changes_are_compare_and_swap_and_audited<S: Store>(store: S, keys: Keys) {
    let rcs = RcStore::new(store, keys);
    let web = rc("web", 2, "team: a");
    let created = rcs.create(&web, "alice").await.unwrap();
    assert!(matches!(
        rcs.create(&web, "bob").await,
        Err(RcError::AlreadyExists { .. })
    ));
    // An update of a stale revision is refused and changes nothing.
    let mut bigger = web.clone();
    bigger.replicas_desired = 9;
    let scaled = rcs.scale(&web.id, 3, "alice").await.unwrap();
    assert!(scaled.revision > created.revision);
    let stale = rcs.update(&bigger, Some(created.revision), "bob").await;
    assert!(
        matches!(stale, Err(RcError::FailedPrecondition { .. })),
        "{stale:?}"
    );
    assert_eq!(
        rcs.get(&web.id)
            .await
            .unwrap()
            .unwrap()
            .spec
            .replicas_desired,
        3
    );
    // A new selector is a retarget.
    let mut retargeted = scaled.spec.clone();
    retargeted.node_selector = "zone=a".parse().unwrap();
    rcs.update(&retargeted, Some(scaled.revision), "bob")
        .await
        .unwrap();

    // Delete: refused above 0 unless forced; forced scales to 0 and marks it.
    assert!(matches!(
        rcs.delete(&web.id, false, "carol").await,
        Err(RcError::FailedPrecondition { .. })
    ));
    let deleting = rcs.delete(&web.id, true, "carol").await.unwrap();
    assert!(deleting.spec.deleting);
    assert_eq!(deleting.spec.replicas_desired, 0);
    assert!(rcs.scale(&web.id, 1, "dave").await.is_err());

    let audit = rcs.audit(Some(&web.id), 100).await.unwrap();
    let actions: Vec<AuditAction> = audit.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::Create,
            AuditAction::Scale,
            AuditAction::Retarget,
            AuditAction::Delete
        ]
    );
    assert_eq!(audit[1].who, "alice");
    assert_eq!(audit[1].before.as_ref().unwrap()["replicas_desired"], 2);
    assert_eq!(audit[1].after.as_ref().unwrap()["replicas_desired"], 3);
    assert_eq!(audit[3].who, "carol");

    let missing: RcId = "nope".parse().unwrap();
    assert!(matches!(
        rcs.scale(&missing, 1, "x").await,
        Err(RcError::NotFound { .. })
    ));
}

async fn transfers_move_replicas_in_one_txn<S: Store>(store: S, keys: Keys) {
    let rcs = RcStore::new(store, keys);
    let (old, new) = (rc("v1", 5, "app: shop"), rc("v2", 0, "app: shop"));
    rcs.create(&old, "a").await.unwrap();
    rcs.create(&new, "a").await.unwrap();
    rcs.create(&rc("other", 1, "app: blog"), "a").await.unwrap();
    let (from, to) = rcs.transfer(&old.id, &new.id, 2, "a").await.unwrap();
    assert_eq!(
        (from.spec.replicas_desired, to.spec.replicas_desired),
        (3, 2)
    );
    assert_eq!(from.revision, to.revision, "one txn");
    // More than there are: refused, nothing changes.
    assert!(matches!(
        rcs.transfer(&old.id, &new.id, 4, "a").await,
        Err(RcError::FailedPrecondition { .. })
    ));
    assert_eq!(
        rcs.get(&old.id)
            .await
            .unwrap()
            .unwrap()
            .spec
            .replicas_desired,
        3
    );
    assert!(rcs.transfer(&old.id, &old.id, 1, "a").await.is_err());
    let shop: Selector = "app=shop".parse().unwrap();
    let listed: Vec<String> = rcs
        .list(&shop)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.spec.id.to_string())
        .collect();
    assert_eq!(listed, ["v1", "v2"]);
    let audit = rcs.audit(Some(&new.id), 10).await.unwrap();
    assert_eq!(audit.last().unwrap().action, AuditAction::Transfer);
    assert_eq!(audit.last().unwrap().after.as_ref().unwrap()["v2"], 2);
}

on_both_backends!(
    changes_are_compare_and_swap_and_audited,
    transfers_move_replicas_in_one_txn
);
