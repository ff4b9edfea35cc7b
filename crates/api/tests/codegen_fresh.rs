//! The committed generated code must match what `proto/` generates now, and
//! the committed descriptor set must describe the services we serve.

use prost::Message;

#[test]
fn committed_code_matches_the_protos() {
    let root = drover_api_codegen::workspace_root();
    if let Err(e) = drover_api_codegen::check_one(&root, &drover_api_codegen::ORCHESTRATOR) {
        panic!("{e}");
    }
}

#[test]
fn descriptor_set_decodes_and_describes_system_service() {
    let fds = prost_types::FileDescriptorSet::decode(drover_api::pb::FILE_DESCRIPTOR_SET)
        .expect("FILE_DESCRIPTOR_SET is a valid FileDescriptorSet");
    let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"orchestrator/v1/system.proto"),
        "files: {names:?}"
    );
    // Imports are included, so reflection clients can resolve every type.
    assert!(
        names.contains(&"google/protobuf/duration.proto"),
        "files: {names:?}"
    );
    let system = fds
        .file
        .iter()
        .find(|f| f.name() == "orchestrator/v1/system.proto")
        .unwrap();
    assert_eq!(system.package(), "orchestrator.v1");
    let service = system
        .service
        .iter()
        .find(|s| s.name() == "SystemService")
        .expect("SystemService is declared");
    let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    assert_eq!(methods, ["GetInfo"]);
    // Source info is kept so reflection shows the proto comments.
    assert!(system.source_code_info.is_some());
}
