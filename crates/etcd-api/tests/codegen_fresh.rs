//! The committed etcd code must match what `proto/etcd/` generates now, and
//! the descriptor set must describe etcd's packages and services.

use prost::Message;

#[test]
fn committed_code_matches_the_protos() {
    let root = drover_api_codegen::workspace_root();
    if let Err(e) = drover_api_codegen::check_one(&root, &drover_api_codegen::ETCD) {
        panic!("{e}");
    }
}

#[test]
fn descriptor_set_describes_etcds_services_with_etcds_names() {
    let fds = prost_types::FileDescriptorSet::decode(drover_etcd_api::pb::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET is a valid FileDescriptorSet");
    let services: Vec<(String, Vec<String>)> = fds
        .file
        .iter()
        .flat_map(|f| {
            f.service.iter().map(move |s| {
                (
                    format!("{}.{}", f.package(), s.name()),
                    s.method.iter().map(|m| m.name().to_string()).collect(),
                )
            })
        })
        .collect();
    let find = |name: &str| {
        services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{name} missing from {services:?}"))
    };
    assert_eq!(
        find("etcdserverpb.KV"),
        ["Range", "Put", "DeleteRange", "Txn", "Compact"]
    );
    assert_eq!(find("etcdserverpb.Watch"), ["Watch"]);
    assert_eq!(
        find("etcdserverpb.Lease"),
        [
            "LeaseGrant",
            "LeaseRevoke",
            "LeaseKeepAlive",
            "LeaseTimeToLive",
            "LeaseLeases"
        ]
    );
    assert_eq!(find("etcdserverpb.Cluster"), ["MemberList"]);
    assert_eq!(find("etcdserverpb.Maintenance"), ["Alarm", "Status"]);
    assert_eq!(
        find("v3electionpb.Election"),
        ["Campaign", "Proclaim", "Leader", "Observe", "Resign"]
    );
    assert_eq!(find("v3lockpb.Lock"), ["Lock", "Unlock"]);
}

/// Field numbers are the wire contract: spot-check the ones clients rely on
/// most against etcd's published numbers.
#[test]
fn field_numbers_are_etcds() {
    let fds =
        prost_types::FileDescriptorSet::decode(drover_etcd_api::pb::FILE_DESCRIPTOR_SET).unwrap();
    let field = |message: &str, name: &str| -> i32 {
        fds.file
            .iter()
            .flat_map(|f| f.message_type.iter())
            .find(|m| m.name() == message)
            .and_then(|m| m.field.iter().find(|f| f.name() == name))
            .map(|f| f.number())
            .unwrap_or_else(|| panic!("{message}.{name} missing"))
    };
    assert_eq!(field("Compare", "range_end"), 64);
    assert_eq!(field("WatchResponse", "events"), 11);
    assert_eq!(field("WatchCreateRequest", "fragment"), 8);
    assert_eq!(field("RangeRequest", "max_create_revision"), 13);
    assert_eq!(field("LeaseTimeToLiveResponse", "grantedTTL"), 4);
    assert_eq!(field("StatusResponse", "dbSizeInUse"), 9);
    assert_eq!(field("KeyValue", "lease"), 6);
}
