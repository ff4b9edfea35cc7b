//! End-to-end: `orchestrator rc ...` as real processes against a real
//! `orchestrator serve --memory`, and `RcService` from Python's grpcio.
//!
//! The server may run an RC farm (with no node to place pods on): a status
//! (and, for a deleted RC, the record's removal) may come from it at any
//! time, so these tests assert on what the API and the CLI do, and leave
//! statuses and farm-written audit records out of their equalities.

use std::process::{Output, Stdio};

use drover_rc_farm::status::RcStatus;
use drover_rc_farm::store::RcStore;
use drover_store::keys::Keys;
use drover_store::{Store, Txn};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

// Each test binary uses a different part of the shared harness.
#[allow(dead_code)]
mod support;
use support::*;

fn rc_yaml(id: &str, replicas: u32, team: &str) -> String {
    format!(
        "id: {id}\nlabels: {{ team: {team} }}\nreplicas_desired: {replicas}\nnode_selector: zone in (a,b)\n\
         placement: {{ spread_by: zone }}\n\
         manifest:\n  id: {id}\n  launchables: {{ s: {{ type: process, command: /bin/{id} }} }}\n"
    )
}

/// `orchestrator rc ARGS --endpoint <server>`, with `stdin` as its input.
async fn rc_with_input(server: &Server, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("rc")
        .args(args)
        .args(["--endpoint", &server.url()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning orchestrator rc");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    timeout(EXIT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("orchestrator rc {args:?} did not finish"))
        .unwrap()
}

async fn rc(server: &Server, args: &[&str]) -> Output {
    rc_with_input(server, args, "").await
}

/// The JSON a successful `rc ... -o json` printed.
async fn rc_json(server: &Server, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let output = rc(server, &args).await;
    let stdout = stdout_of(&output);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("rc {args:?}: {e}: {stdout}"))
}

/// An RC's JSON without its status, which a farm writes when it likes.
fn without_status(rc: &Value) -> Value {
    let mut rc = rc.clone();
    rc.as_object_mut().unwrap().remove("status");
    rc
}

/// The audit records users' calls made (not a farm's, `farm:ID`).
fn users_records(trail: &Value) -> Vec<Value> {
    trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["who"].as_str().unwrap().starts_with("farm:"))
        .cloned()
        .collect()
}

/// The stderr of a command that must have failed.
fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure: {output:?}");
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout when refused: {output:?}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn cli_creates_reads_changes_and_deletes_an_rc() {
    let server = Server::start(&["--memory"]).await;
    let dir = tempfile::tempdir().unwrap();
    let web_file = dir.path().join("web.yaml");
    std::fs::write(&web_file, rc_yaml("web", 3, "storefront")).unwrap();
    let web_file = web_file.to_str().unwrap();

    let created = rc_json(&server, &["create", "-f", web_file]).await;
    assert_eq!(created["spec"]["id"], "web");
    assert_eq!(created["spec"]["replicas_desired"], 3);
    assert_eq!(created["spec"]["node_selector"], "zone in (a,b)");
    assert_eq!(created["spec"]["placement"]["spread_by"], "zone");
    assert_eq!(created["status"], Value::Null);
    let created_revision = created["revision"].as_i64().unwrap();
    // From stdin, with the table output: one sentence.
    let output = rc_with_input(&server, &["create", "-f", "-"], &rc_yaml("db", 2, "data")).await;
    assert!(
        stdout_of(&output).starts_with("rc db created (revision "),
        "{output:?}"
    );

    let got = rc_json(&server, &["get", "web"]).await;
    assert_eq!(without_status(&got), without_status(&created));
    let yaml = stdout_of(&rc(&server, &["get", "web", "-o", "yaml"]).await);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(without_status(&from_yaml), without_status(&created));
    let all = rc_json(&server, &["list"]).await;
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|rc| rc["spec"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["db", "web"]);
    let selected = rc_json(&server, &["list", "-l", "team=storefront"]).await;
    assert_eq!(selected.as_array().unwrap().len(), 1);
    assert_eq!(selected[0]["spec"]["id"], "web");
    let table = stdout_of(&rc(&server, &["list"]).await);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header[..3], ["ID", "DESIRED", "CURRENT"]);
    assert!(table.lines().any(|l| l.starts_with("web ")), "{table}");

    let scaled = rc_json(&server, &["scale", "web", "5"]).await;
    assert_eq!(scaled["spec"]["replicas_desired"], 5);
    assert!(scaled["revision"].as_i64().unwrap() > created_revision);
    let disabled = rc_json(&server, &["disable", "web"]).await;
    assert_eq!(disabled["spec"]["disabled"], true);
    let enabled = rc_json(&server, &["enable", "web"]).await;
    assert_eq!(enabled["spec"]["disabled"], false);

    // An update pinned to a stale revision is refused; to the current one
    // it goes through.
    std::fs::write(web_file, rc_yaml("web", 4, "storefront")).unwrap();
    let stale = failure(
        &rc(
            &server,
            &[
                "update",
                "-f",
                web_file,
                "--revision",
                &created_revision.to_string(),
            ],
        )
        .await,
    );
    assert!(stale.contains("FailedPrecondition"), "{stale}");
    let current = enabled["revision"].as_i64().unwrap().to_string();
    let updated = rc_json(&server, &["update", "-f", web_file, "--revision", &current]).await;
    assert_eq!(updated["spec"]["replicas_desired"], 4);

    let output = rc(&server, &["transfer", "web", "db", "1"]).await;
    assert_eq!(
        stdout_of(&output),
        "moved 1 replicas from web (now 3) to db (now 3)\n"
    );

    let refused = failure(&rc(&server, &["delete", "web"]).await);
    assert!(refused.contains("FailedPrecondition"), "{refused}");
    assert!(refused.contains("force"), "{refused}");
    let deleted = rc_json(&server, &["delete", "web", "--force"]).await;
    assert_eq!(deleted["spec"]["deleting"], true);
    assert_eq!(deleted["spec"]["replicas_desired"], 0);

    let trail = users_records(&rc_json(&server, &["audit", "web"]).await);
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "create", "scale", "disable", "enable", "scale", "transfer", "delete"
        ]
    );
    for record in &trail {
        let who = record["who"].as_str().unwrap();
        assert!(who.starts_with("anonymous@127.0.0.1:"), "{who}");
    }
    let newest = rc_json(&server, &["audit", "--limit", "2"]).await;
    assert_eq!(newest.as_array().unwrap().len(), 2, "{newest}");
    let table = stdout_of(&rc(&server, &["audit", "web"]).await);
    assert!(
        table.contains("replicas_desired: 3 -> 5"),
        "the scale is summarised: {table}"
    );

    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn cli_refuses_bad_input_naming_the_field_and_exits_non_zero() {
    let server = Server::start(&["--memory"]).await;

    let without_replicas = rc_yaml("web", 3, "x").replace("replicas_desired: 3\n", "");
    let err = failure(&rc_with_input(&server, &["create", "-f", "-"], &without_replicas).await);
    assert!(err.contains("replicas_desired"), "{err}");
    assert!(err.contains("InvalidArgument"), "{err}");
    let bad_selector = rc_yaml("web", 3, "x").replace("zone in (a,b)", "zone in (a,");
    let err = failure(&rc_with_input(&server, &["create", "-f", "-"], &bad_selector).await);
    assert!(err.contains("node_selector"), "{err}");
    let err = failure(&rc(&server, &["list", "-l", "team in ("]).await);
    assert!(err.contains("selector"), "{err}");
    let err = failure(&rc(&server, &["get", "Not_An_Id"]).await);
    assert!(err.contains("invalid field `id`"), "{err}");
    let err = failure(&rc(&server, &["get", "nope"]).await);
    assert!(err.contains("NotFound"), "{err}");
    let err = failure(&rc(&server, &["scale", "nope", "2000000"]).await);
    assert!(err.contains("invalid field `replicas`"), "{err}");
    let err = failure(&rc(&server, &["create", "-f", "/nonexistent/rc.yaml"]).await);
    assert!(err.contains("/nonexistent/rc.yaml"), "{err}");
    let err = failure(&rc(&server, &["create", "-f", "-", "-o", "xml"]).await);
    assert!(err.contains("xml"), "{err}");

    // Nothing was written.
    assert_eq!(rc_json(&server, &["list"]).await, serde_json::json!([]));
    assert_eq!(rc_json(&server, &["audit"]).await, serde_json::json!([]));

    server.signal("TERM");
    server.wait_success().await;
}

/// `RcService` is served next to `SystemService`: healthy, and described by
/// reflection (so grpcurl needs no copy of rc.proto).
#[tokio::test]
async fn rc_service_is_healthy_and_reflected() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = Server::start(&["--memory"]).await;
    let mut health = HealthClient::new(channel(&server.url()).await);
    let status = health
        .check(HealthCheckRequest {
            service: "orchestrator.v1.RcService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(channel(&server.url()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "orchestrator.v1.RcService".into(),
        )),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("expected file descriptors: {answer:?}");
    };
    use prost::Message;
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert!(
        names.contains(&"orchestrator/v1/rc.proto".to_owned()),
        "{names:?}"
    );

    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn cli_without_a_server_fails_clearly() {
    let url = unused_local_url();
    let output = Command::new(BIN)
        .args(["rc", "list", "--endpoint", &url])
        .env("RUST_LOG", "off")
        .output();
    let output = timeout(EXIT_TIMEOUT, output).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("connecting to {url}")), "{stderr}");
}

/// Writes a status as the owning farm does, through the served etcd API.
async fn write_status(store: &impl Store, id: &str, status: &RcStatus) {
    let rcs = RcStore::new(store.clone(), Keys::default());
    let op = rcs.status_op(&id.parse().unwrap(), status);
    let response = store.txn(Txn::new().and_then([op])).await.unwrap();
    assert!(response.succeeded);
}

fn status(desired: u32, healthy: u32) -> RcStatus {
    RcStatus {
        desired,
        current: desired,
        ready: healthy,
        healthy,
        owner: "farm-test".into(),
        token: 1,
        observed_revision: 2,
        updated_at_ms: 1_700_000_000_000,
        ..RcStatus::default()
    }
}

#[tokio::test]
async fn cli_watch_prints_a_line_per_status_until_ctrl_c() {
    let server = Server::start(&["--memory"]).await;
    let created = rc_with_input(&server, &["create", "-f", "-"], &rc_yaml("web", 3, "x")).await;
    stdout_of(&created);
    let store = server.etcd_client().await;
    write_status(&store, "web", &status(3, 1)).await;

    let mut watch = Command::new(BIN)
        .args(["rc", "watch", "-o", "json", "--endpoint", &server.url()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = timeout(START_TIMEOUT, lines.next_line())
            .await
            .expect("a watch line in time")
            .unwrap()
            .expect("the watch goes on");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    // The initial listing: web's status (ours, or a farm's if one wrote
    // since), then the SYNCED marker.
    let mut existing = Vec::new();
    let synced = loop {
        let event = next().await;
        match event["kind"].as_str() {
            Some("existing") => existing.push(event),
            Some("synced") => break event,
            _ => panic!("before SYNCED only EXISTING events come: {event}"),
        }
    };
    assert_eq!(existing.len(), 1, "{existing:?}");
    assert_eq!(existing[0]["id"], "web");
    assert!(existing[0]["status"]["desired"].is_number());
    // Only now is the watch known to be following changes. Our write comes
    // as an UPDATED event (maybe after some of a farm's).
    write_status(&store, "web", &status(3, 3)).await;
    let updated = loop {
        let event = next().await;
        assert_eq!(event["kind"], "updated", "{event}");
        assert_eq!(event["id"], "web", "{event}");
        if event["status"]["owner"] == "farm-test" {
            break event;
        }
    };
    assert_eq!(updated["status"]["healthy"], 3);
    assert!(updated["revision"].as_i64() > synced["revision"].as_i64());

    let pid = watch.id().unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = timeout(EXIT_TIMEOUT, watch.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "Ctrl-C ends a watch successfully: {exit:?}");

    server.signal("TERM");
    server.wait_success().await;
}

/// A real client in another language: Python's grpcio with stubs generated
/// from `proto/` by grpc_tools.
#[tokio::test]
async fn python_client_creates_scales_lists_watches_and_audits_an_rc() {
    let server = Server::start(&["--memory"]).await;
    let Some(answer) = run_python_client("rc_client.py", &server, &["--rc-id", "py-web"]).await
    else {
        return;
    };
    assert_eq!(answer["created"]["id"], "py-web");
    assert_eq!(answer["created"]["replicas_desired"], 2);
    assert_eq!(answer["created"]["has_status"], false);
    assert_eq!(
        answer["created"]["manifest_sha"].as_str().unwrap().len(),
        64
    );
    assert_eq!(answer["scaled"]["replicas_desired"], 4);
    assert!(answer["scaled"]["revision"].as_i64() > answer["created"]["revision"].as_i64());
    assert_eq!(
        answer["listed"],
        serde_json::json!([{"id": "py-web", "labels": {"lang": "python"}}])
    );
    assert_eq!(answer["refused"]["code"], "INVALID_ARGUMENT");
    assert!(
        answer["refused"]["message"]
            .as_str()
            .unwrap()
            .contains("replicas_desired"),
        "{answer}"
    );
    // The initial listing: the RC's status if a farm wrote one already,
    // then SYNCED.
    let existing = answer["watch"]["existing"].as_array().unwrap();
    assert!(existing.len() <= 1, "{answer}");
    assert!(existing.iter().all(|id| id == "py-web"), "{answer}");
    assert!(answer["watch"]["synced_revision"].as_i64().unwrap() >= 1);
    let trail = users_records(&answer["audit"]);
    let actions: Vec<&str> = trail
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["AUDIT_ACTION_CREATE", "AUDIT_ACTION_SCALE"]);
    assert_eq!(trail[1]["after"]["replicas_desired"], 4);
    let who = trail[0]["who"].as_str().unwrap();
    assert!(who.starts_with("anonymous@127.0.0.1:"), "{answer}");
    server.signal("TERM");
    server.wait_success().await;
}
