//! etcd's v3 API of a real `orchestrator serve`, as real etcd clients use it:
//! `etcdctl` sessions against the embedded store and through the proxy mode
//! (`serve --etcd-endpoints` in front of the run's etcd), `etcdctl elect` and
//! `etcdctl lock` excluding each other and a Drover candidate, `etcdctl
//! check perf`, and a Python client running an election through the
//! Election and Lock services.

use std::time::Duration;

use drover_election::Election;
use drover_store::lease::{Lease, LeaseConfig, LeaseView};
use drover_store::{Get, Store};
use drover_store_etcd::EtcdStore;
use serde_json::Value;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

// Each test binary uses a different part of the shared harness.
#[allow(dead_code)]
mod support;
use support::*;

/// A server to talk to: `orchestrator serve` on a durable embedded store,
/// or in proxy mode in front of the run's etcd (`None` without one).
async fn serve(proxy: bool) -> Option<(Server, Option<tempfile::TempDir>)> {
    if proxy {
        let endpoints = drover_store::testing::etcd_endpoints()?.join(",");
        return Some((Server::start(&["--etcd-endpoints", &endpoints]).await, None));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]).await;
    Some((server, Some(dir)))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The header revision of a `-w json` answer.
fn revision_of(answer: &Value) -> i64 {
    answer["header"]["revision"]
        .as_i64()
        .expect("a header revision")
}

/// Waits (bounded) until `prefix` holds exactly `count` keys.
async fn wait_for_keys(store: &EtcdStore, prefix: &str, count: usize) {
    for _ in 0..600 {
        if store.get(Get::prefix(prefix)).await.unwrap().kvs.len() == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{prefix} never held {count} keys");
}

/// Everything an operator does with etcdctl, under the prefix `p`.
async fn etcdctl_session(etcdctl: &Etcdctl, p: &str) {
    // put / get: prefix, limit, sort, rev, keys-only, from-key, counts.
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert_eq!(
            etcdctl.ok(&["put", &format!("{p}{key}"), value]).await,
            "OK\n"
        );
    }
    let created_a = json(&etcdctl.ok(&["get", &format!("{p}a"), "-w", "json"]).await);
    let a_rev = created_a["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert_eq!(etcdctl.ok(&["put", &format!("{p}a"), "1b"]).await, "OK\n");
    assert_eq!(
        etcdctl.ok(&["get", "--prefix", p]).await,
        format!("{p}a\n1b\n{p}b\n2\n{p}c\n3\n")
    );
    let limited = json(
        &etcdctl
            .ok(&["get", "--prefix", p, "--limit", "1", "-w", "json"])
            .await,
    );
    assert_eq!(limited["count"], 3, "{limited}");
    assert_eq!(limited["more"], true, "{limited}");
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 1, "{limited}");
    let sorted = etcdctl
        .ok(&[
            "get",
            "--prefix",
            p,
            "--sort-by=KEY",
            "--order=DESCEND",
            "--keys-only",
        ])
        .await;
    assert_eq!(sorted, format!("{p}c\n\n{p}b\n\n{p}a\n\n"));
    let by_version = etcdctl
        .ok(&[
            "get",
            "--prefix",
            p,
            "--sort-by=VERSION",
            "--order=DESCEND",
            "--limit=1",
            "--keys-only",
        ])
        .await;
    assert_eq!(by_version, format!("{p}a\n\n"));
    let past = etcdctl
        .ok(&[
            "get",
            &format!("{p}a"),
            "--rev",
            &a_rev.to_string(),
            "--print-value-only",
        ])
        .await;
    assert_eq!(past, "1\n", "the value at the first put's revision");
    let from_key = etcdctl
        .ok(&[
            "get",
            &format!("{p}b"),
            "--from-key",
            "--limit=2",
            "--keys-only",
        ])
        .await;
    assert_eq!(from_key, format!("{p}b\n\n{p}c\n\n"));
    let serializable = etcdctl
        .ok(&[
            "get",
            &format!("{p}c"),
            "--consistency=s",
            "--print-value-only",
        ])
        .await;
    assert_eq!(serializable, "3\n");

    // txn from stdin, both branches.
    let txn = |compare: String| format!("{compare}\n\nput {p}t yes\n\nput {p}t no\n\n");
    let won = etcdctl
        .run_with_input(&["txn"], &txn(format!("value(\"{p}a\") = \"1b\"")))
        .await;
    assert_eq!(stdout_of(&won), "SUCCESS\n\nOK\n");
    let lost = etcdctl
        .run_with_input(
            &["txn", "-w", "json"],
            &txn(format!("mod(\"{p}a\") < \"{a_rev}\"")),
        )
        .await;
    let lost = json(&stdout_of(&lost));
    assert_eq!(
        lost.get("succeeded"),
        None,
        "the failure branch ran: {lost}"
    );
    assert_eq!(
        etcdctl
            .ok(&["get", &format!("{p}t"), "--print-value-only"])
            .await,
        "no\n"
    );

    // del, one key and a prefix.
    assert_eq!(etcdctl.ok(&["del", &format!("{p}t")]).await, "1\n");
    assert_eq!(etcdctl.ok(&["del", "--prefix", p]).await, "3\n");
    assert_eq!(etcdctl.ok(&["get", "--prefix", p]).await, "");

    // watch from a past revision with previous values, then compacted.
    let w = format!("{p}w/");
    let first = json(
        &etcdctl
            .ok(&["put", &format!("{w}a"), "1", "-w", "json"])
            .await,
    );
    let start = revision_of(&first);
    etcdctl.ok(&["put", &format!("{w}a"), "2"]).await;
    let deleted = json(&etcdctl.ok(&["del", &format!("{w}a"), "-w", "json"]).await);
    let mut watch = etcdctl.spawn(&[
        "watch",
        "--prefix",
        &w,
        "--prev-kv",
        "--rev",
        &start.to_string(),
    ]);
    let k = format!("{w}a");
    assert_eq!(
        watch.lines(13).await,
        [
            "PUT", &k, "1", "PUT", &k, "1", &k, "2", "DELETE", &k, "2", &k, "",
        ]
    );
    watch.stop("INT").await;
    let compacted_at = revision_of(&deleted);
    let compact = etcdctl.ok(&["compact", &compacted_at.to_string()]).await;
    assert_eq!(compact, format!("compacted revision {compacted_at}\n"));
    let (status, said) = etcdctl
        .spawn(&["watch", &k, "--rev", &start.to_string()])
        .exited()
        .await;
    assert!(!status.success(), "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("required revision has been compacted")),
        "{said:?}"
    );
    let old = etcdctl.run(&["get", &k, "--rev", &start.to_string()]).await;
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"));

    // Leases: grant, attach, time-to-live, keep-alive, list, revoke.
    let granted = etcdctl.ok(&["lease", "grant", "60"]).await;
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease ID granted ...")
        .to_owned();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    let leased = format!("{p}leased");
    etcdctl.ok(&["put", "--lease", &id, &leased, "v"]).await;
    let ttl = etcdctl.ok(&["lease", "timetolive", &id, "--keys"]).await;
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(
        ttl.ends_with(&format!("attached keys([{leased}])\n")),
        "{ttl}"
    );
    let kept = etcdctl.ok(&["lease", "keep-alive", "--once", &id]).await;
    assert_eq!(kept, format!("lease {id} keepalived with TTL(60)\n"));
    let list = etcdctl.ok(&["lease", "list"]).await;
    assert!(list.lines().any(|l| l == id), "{list}");
    assert_eq!(
        etcdctl.ok(&["lease", "revoke", &id]).await,
        format!("lease {id} revoked\n")
    );
    assert_eq!(
        etcdctl.ok(&["get", &leased]).await,
        "",
        "revoking deleted the key"
    );
    let gone = etcdctl.ok(&["lease", "timetolive", &id]).await;
    assert_eq!(gone, format!("lease {id} already expired\n"));
    let unknown = etcdctl.run(&["lease", "revoke", "1234abcd"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("requested lease not found"));

    // The cluster as etcdctl sees it.
    let status = json(&etcdctl.ok(&["endpoint", "status", "-w", "json"]).await);
    let member = status[0]["Status"]["header"]["member_id"].clone();
    assert!(
        status[0]["Status"]["header"]["revision"].as_i64().unwrap() > compacted_at,
        "{status}"
    );
    assert!(
        status[0]["Status"]["version"]
            .as_str()
            .unwrap()
            .starts_with("3."),
        "{status}"
    );
    let health = etcdctl.run(&["endpoint", "health"]).await;
    let said = stdout_of(&health) + &String::from_utf8_lossy(&health.stderr);
    assert!(said.contains("is healthy"), "{said}");
    let members = json(&etcdctl.ok(&["member", "list", "-w", "json"]).await);
    assert_eq!(members["header"]["member_id"], member, "{members}");
    assert_eq!(members["members"][0]["ID"], member, "{members}");
}

#[tokio::test]
async fn etcdctl_session_against_the_embedded_store() {
    let (server, _dir) = serve(false).await.unwrap();
    let Some(etcdctl) = Etcdctl::at(&server.addr.to_string()) else {
        return;
    };
    etcdctl_session(&etcdctl, "/drover/session/").await;
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn etcdctl_session_through_the_proxy_to_etcd() {
    let Some((server, _)) = serve(true).await else {
        return;
    };
    let Some(etcdctl) = Etcdctl::at(&server.addr.to_string()) else {
        return;
    };
    etcdctl_session(
        &etcdctl,
        &drover_store::testing::unique_prefix("etcdctl-session"),
    )
    .await;
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn etcdctl_reads_and_writes_through_the_orchestrator_and_its_identity_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let server = Server::start_with(&["--data-dir", data_arg], &["--no-farm"]).await;
    let Some(etcdctl) = Etcdctl::at(&server.addr.to_string()) else {
        return;
    };
    assert_eq!(
        etcdctl.ok(&["put", "/drover/rcs/web", "replicas: 3"]).await,
        "OK\n"
    );
    let got = etcdctl.ok(&["get", "--prefix", "/drover/"]).await;
    assert_eq!(got, "/drover/rcs/web\nreplicas: 3\n");
    let members = json(&etcdctl.ok(&["member", "list", "-w", "json"]).await);
    let member_id = members["members"][0]["ID"].clone();
    assert_eq!(members["header"]["member_id"], member_id, "{members}");
    assert_eq!(
        members["members"][0]["clientURLs"][0],
        server.url().as_str(),
        "{members}"
    );
    server.signal("TERM");
    server.wait_success().await;

    // Restarted on the same data: same member, same data.
    let server = Server::start(&["--data-dir", data_arg]).await;
    let etcdctl = Etcdctl::at(&server.addr.to_string()).unwrap();
    let status = json(&etcdctl.ok(&["endpoint", "status", "-w", "json"]).await);
    assert_eq!(
        status[0]["Status"]["header"]["member_id"], member_id,
        "{status}"
    );
    assert_eq!(status[0]["Status"]["leader"], member_id, "{status}");
    let got = etcdctl
        .ok(&["get", "/drover/rcs/web", "--print-value-only"])
        .await;
    assert_eq!(got, "replicas: 3\n");
    server.signal("TERM");
    server.wait_success().await;
}

/// Two etcdctl processes running `command` (`lock NAME` or `elect NAME
/// VALUE`) exclude each other, and each excludes a Drover candidate on the
/// prefix `NAME/` (and the other way round). Returns the first line each
/// holder printed (its key).
async fn etcdctl_holders_exclude_each_other_and_drover(
    etcdctl: &Etcdctl,
    store: &EtcdStore,
    name: &str,
    command: &[&str],
) {
    let prefix = format!("{name}/");
    let holds = |what: &str, line: &str| {
        assert!(
            line.starts_with(&prefix),
            "{what} printed {line:?}, not its key"
        );
    };

    // etcdctl against etcdctl.
    let mut first = etcdctl.spawn(command);
    let line = first
        .next_line()
        .await
        .expect("the first holder prints its key");
    holds("the first holder", &line);
    let mut second = etcdctl.spawn(command);
    wait_for_keys(store, &prefix, 2).await;
    assert_eq!(
        second.printed_so_far(),
        Vec::<String>::new(),
        "the second must wait"
    );
    first.stop("INT").await;
    let line = second
        .next_line()
        .await
        .expect("the second holder takes over");
    holds("the second holder", &line);

    // etcdctl against a Drover candidate, which waits...
    let election = Election::with_prefix(store.clone(), prefix.clone()).unwrap();
    let lease = Lease::grant(store.clone(), LeaseConfig::new(10))
        .await
        .unwrap();
    let campaign = tokio::spawn({
        let election = election.clone();
        let view = LeaseView::of(&lease);
        async move {
            election
                .campaign_with_view(view, b"drover".to_vec(), &CancellationToken::new())
                .await
        }
    });
    wait_for_keys(store, &prefix, 2).await;
    assert!(
        !campaign.is_finished(),
        "the Drover candidate must wait for etcdctl"
    );
    second.stop("INT").await;
    let term = timeout(START_TIMEOUT, campaign)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // ...and a Drover leader, which etcdctl waits for.
    let mut third = etcdctl.spawn(command);
    wait_for_keys(store, &prefix, 2).await;
    assert_eq!(
        third.printed_so_far(),
        Vec::<String>::new(),
        "etcdctl must wait for Drover"
    );
    term.resign().await.unwrap();
    let line = third
        .next_line()
        .await
        .expect("etcdctl takes over from Drover");
    holds("etcdctl after Drover", &line);
    third.stop("INT").await;
    wait_for_keys(store, &prefix, 0).await;
    lease.revoke().await.unwrap();
}

async fn elect_and_lock_exclude_each_other_and_drover(proxy: bool) {
    let Some((server, _dir)) = serve(proxy).await else {
        return;
    };
    let Some(etcdctl) = Etcdctl::at(&server.addr.to_string()) else {
        return;
    };
    let store = server.etcd_client().await;
    let base = drover_store::testing::unique_prefix("elect-lock");
    let lock = format!("{base}lock");
    etcdctl_holders_exclude_each_other_and_drover(&etcdctl, &store, &lock, &["lock", &lock]).await;
    let elect = format!("{base}elect");
    etcdctl_holders_exclude_each_other_and_drover(
        &etcdctl,
        &store,
        &elect,
        &["elect", &elect, "etcdctl"],
    )
    .await;

    // `elect -l` follows the leader, whoever it is.
    let mut listener = etcdctl.spawn(&["elect", "-l", &elect]);
    let mut leader = etcdctl.spawn(&["elect", &elect, "proposal"]);
    let key = leader.next_line().await.unwrap();
    assert_eq!(listener.lines(2).await, [key, "proposal".to_string()]);
    leader.stop("INT").await;
    listener.stop("INT").await;
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn etcdctl_elect_and_lock_exclude_each_other_and_drover_on_the_embedded_store() {
    elect_and_lock_exclude_each_other_and_drover(false).await;
}

#[tokio::test]
async fn etcdctl_elect_and_lock_exclude_each_other_and_drover_through_the_proxy() {
    elect_and_lock_exclude_each_other_and_drover(true).await;
}

/// `check perf` writes for 60 s, then checks and cleans up.
const CHECK_PERF_BOUND: Duration = Duration::from_secs(180);

/// `etcdctl check perf --load=s` (60 s of writes from 50 clients) must pass.
async fn check_perf_passes(proxy: bool) {
    let Some((server, _dir)) = serve(proxy).await else {
        return;
    };
    let Some(etcdctl) = Etcdctl::at(&server.addr.to_string()) else {
        return;
    };
    let prefix = drover_store::testing::unique_prefix("check-perf");
    let output = etcdctl
        .run_within(
            CHECK_PERF_BOUND,
            &["check", "perf", "--load=s", "--prefix", &prefix],
        )
        .await;
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(said.contains("PASS: Throughput"), "{said}");
    assert!(said.lines().any(|l| l.trim() == "PASS"), "{said}");
    let left = server
        .etcd_client()
        .await
        .get(Get::prefix(prefix.as_str()))
        .await
        .unwrap();
    assert!(left.kvs.is_empty(), "check perf cleans up after itself");
    server.signal("TERM");
    server.wait_success().await;
}

#[tokio::test]
async fn etcdctl_check_perf_small_passes_on_the_embedded_store() {
    check_perf_passes(false).await;
}

#[tokio::test]
async fn etcdctl_check_perf_small_passes_through_the_proxy() {
    check_perf_passes(true).await;
}

/// Another language runs an election and a lock through the Election and
/// Lock services: Python's grpcio with stubs generated from `proto/etcd/`.
#[tokio::test]
async fn python_client_runs_an_election_and_a_lock() {
    let server = Server::start(&["--memory"]).await;
    let Some(report) =
        run_python_client("election.py", &server, &["--name", "/demo/python-election"]).await
    else {
        return;
    };
    let [a, b] =
        [&report["leases"][0], &report["leases"][1]].map(|l| l.as_str().unwrap().to_owned());
    assert_eq!(report["first_key"], format!("/demo/python-election/{a}"));
    assert_eq!(report["second_key"], format!("/demo/python-election/{b}"));
    assert_eq!(report["second_waited_while_first_led"], true, "{report}");
    assert_eq!(report["leader_after_proclaim"], "alpha-2");
    assert_eq!(
        report["observed"],
        serde_json::json!(["alpha", "alpha-2", "beta"])
    );
    assert_eq!(report["leader_after_resign"], "beta");
    assert_eq!(
        report["no_leader_error"],
        serde_json::json!(["UNKNOWN", "election: no leader"])
    );
    assert_eq!(report["second_lock_waited"], true, "{report}");
    assert_eq!(
        report["lock_keys"],
        serde_json::json!([
            format!("/demo/python-election-lock/{a}"),
            format!("/demo/python-election-lock/{b}")
        ])
    );
    server.signal("TERM");
    server.wait_success().await;
}
