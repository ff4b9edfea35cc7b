//! End-to-end: the real `orchestrator` binary, spawned as a process, talked
//! to over real gRPC (tonic clients, and Python's grpcio when available).

use std::net::SocketAddr;

use drover_api::StoreLocation;
use tokio::process::Command;
use tokio::time::timeout;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

// Each test binary uses a different part of the shared harness.
#[allow(dead_code)]
mod support;
use support::*;

/// A health watch on the server (the client is returned to keep it open).
async fn watch_health(
    server: &Server,
) -> (
    HealthClient<tonic::transport::Channel>,
    tonic::Streaming<HealthCheckResponse>,
) {
    let mut health = HealthClient::new(channel(&server.url()).await);
    let watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    (health, watch)
}

/// The next status a health watch reports.
async fn next_status(watch: &mut tonic::Streaming<HealthCheckResponse>) -> ServingStatus {
    watch.message().await.unwrap().unwrap().status()
}

async fn health_status(url: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(url).await);
    let response = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

async fn reflect(url: &str, request: MessageRequest) -> MessageResponse {
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    responses
        .message()
        .await
        .unwrap()
        .expect("one reflection response")
        .message_response
        .expect("a reflection answer")
}

/// Everything a client can see on a healthy server, for any store.
async fn assert_serves_the_api(server: &Server) {
    let url = server.url();
    assert_eq!(health_status(&url, "").await, ServingStatus::Serving);
    assert_eq!(
        health_status(&url, "orchestrator.v1.SystemService").await,
        ServingStatus::Serving
    );

    let MessageResponse::ListServicesResponse(list) =
        reflect(&url, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "orchestrator.v1.SystemService",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }

    // Reflection serves the descriptor of our service, with its imports, so
    // tools like grpcurl can call it without the .proto files.
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        &url,
        MessageRequest::FileContainingSymbol("orchestrator.v1.SystemService".into()),
    )
    .await
    else {
        panic!("expected file descriptors");
    };
    use prost::Message;
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap()
                .name()
                .to_string()
        })
        .collect();
    assert!(
        names.contains(&"orchestrator/v1/system.proto".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn memory_store_serves_info_health_reflection_then_stops_cleanly_on_sigterm() {
    let server = Server::start_with(&["--memory"], &["--no-farm"]).await;
    let info = server.info().await;
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.store.backend, "embedded");
    assert_eq!(info.store.location, StoreLocation::InMemory);
    assert_eq!(info.store.revision, 1, "a fresh store is at revision 1");
    assert_serves_the_api(&server).await;

    // A watcher sees NOT_SERVING before the server goes away.
    let (health, mut watch) = watch_health(&server).await;
    let first = watch.message().await.unwrap().expect("a first status");
    assert_eq!(first.status(), ServingStatus::Serving);
    server.signal("TERM");
    let next = timeout(EXIT_TIMEOUT, watch.message())
        .await
        .expect("a status change after SIGTERM")
        .unwrap()
        .expect("NOT_SERVING before the stream ends");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    drop(health);

    let log = server.wait_success().await;
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("gRPC server stopped"), "{log}");
    assert!(log.contains("embedded store closed"), "{log}");
}

#[tokio::test]
async fn a_stream_left_open_is_cut_after_the_shutdown_grace() {
    let server = Server::start_with(&["--memory"], &["--shutdown-grace", "500ms"]).await;
    let (_health, mut watch) = watch_health(&server).await;
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    server.signal("TERM");
    // The watch stays open, so only the grace period ends the server.
    let log = server.wait_success().await;
    assert!(log.contains("after the shutdown grace period"), "{log}");
    assert!(log.contains("embedded store closed"), "{log}");
    drop(watch);
}

#[tokio::test]
async fn a_second_signal_skips_the_shutdown_grace() {
    let server = Server::start_with(&["--memory"], &["--shutdown-grace", "1h"]).await;
    let (_health, mut watch) = watch_health(&server).await;
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    server.signal("TERM");
    // NOT_SERVING proves the first signal was handled before the second.
    assert_eq!(next_status(&mut watch).await, ServingStatus::NotServing);
    server.signal("INT");
    let log = server.wait_success().await;
    assert!(log.contains("second signal"), "{log}");
    assert!(log.contains("embedded store closed"), "{log}");
    drop(watch);
}

#[tokio::test]
async fn data_dir_store_reports_its_dir_and_revision_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir_arg = data_dir.to_str().unwrap();

    let server = Server::start_with(&["--data-dir", data_dir_arg], &["--no-farm"]).await;
    let info = server.info().await;
    assert_eq!(info.store.backend, "embedded");
    assert_eq!(
        info.store.location,
        StoreLocation::DataDir(data_dir.clone())
    );
    assert_eq!(info.store.revision, 1);
    assert_serves_the_api(&server).await;
    assert!(data_dir.is_dir(), "the data dir was created");
    server.signal("INT");
    let log = server.wait_success().await;
    assert!(log.contains("embedded store closed"), "{log}");

    // The same directory opens again after a clean stop.
    let again = Server::start_with(&["--data-dir", data_dir_arg], &["--no-farm"]).await;
    assert_eq!(again.info().await.store.revision, 1);
    again.signal("TERM");
    again.wait_success().await;
}

#[tokio::test]
async fn etcd_store_serves_the_same_api() {
    let Some(endpoints) = drover_store::testing::etcd_endpoints() else {
        return;
    };
    let joined = endpoints.join(",");
    let server = Server::start(&["--etcd-endpoints", &joined]).await;
    let info = server.info().await;
    assert_eq!(info.store.backend, "etcd");
    assert_eq!(info.store.location, StoreLocation::Etcd { endpoints });
    // A shared etcd has seen other writes: only the lower bound is known.
    assert!(info.store.revision >= 1, "{info:?}");
    assert_serves_the_api(&server).await;
    let later = server.info().await;
    assert!(later.store.revision >= info.store.revision);
    // The etcd backend is measured by the same wrapper.
    let scraped = scrape(&server).await;
    let revision = [
        ("op", "current_revision"),
        ("backend", "etcd"),
        ("result", "ok"),
    ];
    assert!(sample(&scraped, "drover_store_requests_total", &revision) >= 2.0);
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error() {
    let url = unused_local_url();
    let (status, stderr) =
        run_to_exit(&["serve", "--listen", "127.0.0.1:0", "--etcd-endpoints", &url]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("connecting to etcd at {url}")),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[tokio::test]
async fn info_subcommand_prints_the_servers_answer() {
    let server = Server::start(&["--memory"]).await;
    let output = Command::new(BIN)
        .args(["info", "--server", &server.url()])
        .env("RUST_LOG", "warn")
        .output();
    let output = timeout(EXIT_TIMEOUT, output).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains(&format!("version:  {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    assert!(
        stdout.contains("store:    embedded (in memory)"),
        "{stdout}"
    );
    assert!(stdout.contains("revision: 1"), "{stdout}");
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn info_subcommand_fails_clearly_without_a_server() {
    let url = unused_local_url();
    let output = Command::new(BIN)
        .args(["info", "--server", &url])
        .env("RUST_LOG", "off")
        .output();
    let output = timeout(EXIT_TIMEOUT, output).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("connecting to {url}")), "{stderr}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let server = Server::start_with(&["--memory"], &["--log-format", "json"]).await;
    server.signal("TERM");
    let log = server.wait_success().await;
    let mut saw_listening = false;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let message = value["fields"]["message"].as_str().unwrap_or_default();
        saw_listening |= message.starts_with("listening on 127.0.0.1:");
    }
    assert!(saw_listening, "{log}");
}

#[tokio::test]
async fn conflicting_store_flags_are_rejected_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("never-created");
    let (status, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--memory",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--memory"), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert!(!data_dir.exists(), "nothing was created");

    let (status, stderr) = run_to_exit(&["serve", "--listen", "not-an-address", "--memory"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&["serve", "--listen", &addr, "--memory"]).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("binding {addr}")), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn an_unusable_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the data directory should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let (status, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("opening the embedded store in {}", file.display())),
        "{stderr}"
    );
}

/// A real client in another language: Python's grpcio with stubs generated
/// from `proto/` by grpc_tools.
#[tokio::test]
async fn python_client_calls_get_info() {
    let server = Server::start_with(&["--memory"], &["--no-farm"]).await;
    let Some(answer) = run_python_client("get_info.py", &server, &[]).await else {
        return;
    };
    assert_eq!(answer["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(answer["store"]["backend"], "embedded");
    assert_eq!(answer["store"]["revision"], "1");
    assert!(answer["store"]["inMemory"].is_object(), "{answer}");
    server.signal("TERM");
    server.wait_success().await;
}

/// The store conformance suite through etcd's v3 API served by the real
/// binary: one `orchestrator serve --memory` for every case, reached by
/// `drover-store-etcd` exactly as an agent would reach it.
mod etcd_api_conformance {
    drover_store::conformance_tests! {
        time = real,
        one_test = conformance_suite_through_the_served_etcd_api,
        setup = {
            let server = super::Server::start(&["--memory"]).await;
            let store = server.etcd_client().await;
            (store, server)
        },
    }
}

#[tokio::test]
async fn no_etcd_api_turns_the_etcd_services_off() {
    let server = Server::start_with(&["--memory"], &["--no-etcd-api"]).await;
    let mut kv =
        drover_etcd_api::pb::etcdserverpb::kv_client::KvClient::new(channel(&server.url()).await);
    let err = kv
        .range(drover_etcd_api::pb::etcdserverpb::RangeRequest {
            key: b"/drover/".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // orchestrator.v1 is still served.
    assert_eq!(server.info().await.store.backend, "embedded");
    server.signal("TERM");
    server.wait_success().await;
}

/// The proxy mode: the same suite through the etcd API of an
/// `orchestrator serve --etcd-endpoints` in front of the run's real etcd.
mod etcd_api_proxy_conformance {
    drover_store::conformance_tests! {
        time = real,
        one_test = conformance_suite_through_the_served_etcd_api_proxying_to_etcd,
        setup = {
            let Some(endpoints) = drover_store::testing::etcd_endpoints() else { return };
            let endpoints = endpoints.join(",");
            let server = super::Server::start(&["--etcd-endpoints", &endpoints]).await;
            let store = server.etcd_client().await;
            (store, server)
        },
    }
}

/// `GET path` over HTTP/1.1 on loopback: status, content type and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = timeout(START_TIMEOUT, sender.send_request(request))
        .await
        .expect("a /metrics answer in time")
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    drop(sender);
    connection.abort();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// A scrape of the server's /metrics, parsed.
async fn scrape(server: &Server) -> drover_metrics::testing::prometheus_parse::Scrape {
    let addr = server.metrics_addr().expect("a 'serving metrics at' line");
    let (status, content_type, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, drover_metrics::CONTENT_TYPE);
    drover_metrics::testing::parse(&body)
}

/// The value of one sample, 0 when absent (a family gets a sample only
/// once its labels have been seen).
fn sample(
    scrape: &drover_metrics::testing::prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> f64 {
    drover_metrics::testing::value(scrape, metric, labels).unwrap_or(0.0)
}

const SYSTEM_SERVICE: &str = "orchestrator.v1.SystemService";

/// gRPC calls and the store requests behind them show up in a scrape of
/// the real binary's /metrics, with their status codes.
#[tokio::test]
async fn metrics_count_grpc_calls_and_store_requests() {
    let server = Server::start(&["--memory"]).await;
    let before = scrape(&server).await;
    for _ in 0..3 {
        server.info().await;
    }
    // A health check of an unknown service answers NOT_FOUND.
    let mut health = HealthClient::new(channel(&server.url()).await);
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let after = scrape(&server).await;

    let moved = |metric: &str, labels: &[(&str, &str)]| {
        sample(&after, metric, labels) - sample(&before, metric, labels)
    };
    let get_info = [("service", SYSTEM_SERVICE), ("method", "GetInfo")];
    let ok = [get_info[0], get_info[1], ("code", "OK")];
    assert_eq!(moved("drover_grpc_server_handled_total", &ok), 3.0);
    assert_eq!(
        moved("drover_grpc_server_handling_seconds_count", &get_info),
        3.0
    );
    let not_found = [
        ("service", "grpc.health.v1.Health"),
        ("method", "Check"),
        ("code", "NotFound"),
    ];
    assert_eq!(moved("drover_grpc_server_handled_total", &not_found), 1.0);
    // GetInfo reads the store's revision once per call.
    let revision = [
        ("op", "current_revision"),
        ("backend", "embedded"),
        ("result", "ok"),
    ];
    assert_eq!(moved("drover_store_requests_total", &revision), 3.0);

    let (status, _, _) = http_get(server.metrics_addr().unwrap(), "/nope").await;
    assert_eq!(status, 404);
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let server = Server::start_with(&["--memory"], &["--metrics-listen", "off"]).await;
    assert_eq!(server.metrics_addr(), None);
    server.info().await;
    server.signal("TERM");
    let log = server.wait_success().await;
    assert!(log.contains("metrics endpoint off"), "{log}");
}

#[tokio::test]
async fn a_taken_metrics_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
        "--memory",
    ])
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("binding the metrics address {addr}")),
        "{stderr}"
    );
    drop(taken);
}
