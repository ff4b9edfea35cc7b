//! Valid manifests: every field read as documented, and identity (SHA) rules.

use std::time::Duration;

use drover_manifest::{
    ByteSize, Cpus, FieldErrorKind, Launchable, LaunchableKind, Manifest, ManifestError,
    ManifestSha, Probe, RestartPolicy, StatusCheck,
};
use serde_json::json;

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn full() -> String {
    format!(
        r#"# The web pod.
id: web
run_as: www-data
labels:
  tier: frontend
  example.com/team: "42"
resource_limits:
  cpus: 1.5
  memory: 1536M
termination_grace_period: 2m
status:
  port: 8443
  path: /health
  localhost_only: true
launchables:
  server:
    type: process
    command: /usr/bin/web
    args: [--port, 8080, --verbose, true]
    working_dir: /srv/web
    env:
      RUST_LOG: info
      PORT: 8080
    restart_policy: on-failure
    restart_backoff: 500ms
  assets:
    type: artifact
    location: https://artifacts.example.com/assets_1.tar.gz
    sha256: {}
    entry_point: bin/serve
    restart_policy: never
config:
  greeting: hello
  limits: {{rps: 100, burst: 1.5}}
  hosts: [a, b]
"#,
        DIGEST.to_uppercase()
    )
}

#[test]
fn every_field_is_read() {
    let m = Manifest::from_yaml(full()).unwrap();
    assert_eq!(m.id().as_str(), "web");
    assert_eq!(m.run_as(), "www-data");
    assert_eq!(m.labels()["tier"], "frontend");
    assert_eq!(m.labels()["example.com/team"], "42");
    assert_eq!(m.resource_limits().cpus, Some(Cpus::from_millis(1500)));
    assert_eq!(m.resource_limits().memory, Some(ByteSize::mib(1536)));
    assert_eq!(m.termination_grace_period(), Duration::from_secs(120));
    assert_eq!(
        m.status(),
        Some(&StatusCheck::of(Probe::Http {
            port: 8443,
            path: "/health".into(),
            http: false,
            localhost_only: true
        }))
    );
    let ids: Vec<_> = m.launchables().keys().map(|id| id.as_str()).collect();
    assert_eq!(ids, ["assets", "server"]);

    let server = m.launchable("server").unwrap();
    assert_eq!(server.type_name(), "process");
    let process = server.as_process().unwrap();
    assert_eq!(process.command, "/usr/bin/web");
    assert_eq!(process.args, ["--port", "8080", "--verbose", "true"]);
    assert_eq!(process.working_dir.as_deref(), Some("/srv/web"));
    assert_eq!(server.env["PORT"], "8080");
    assert_eq!(server.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(server.restart_backoff, Duration::from_millis(500));
    assert!(server.as_artifact().is_none());

    let assets = m.launchable("assets").unwrap();
    let LaunchableKind::Artifact(artifact) = &assets.kind else {
        panic!("assets is an artifact")
    };
    assert_eq!(
        artifact.sha256, DIGEST,
        "digests are normalised to lowercase"
    );
    assert_eq!(artifact.entry_point, "bin/serve");
    assert_eq!(
        artifact.location,
        "https://artifacts.example.com/assets_1.tar.gz"
    );
    assert_eq!(assets.restart_policy, RestartPolicy::Never);

    assert_eq!(
        serde_json::Value::Object(m.config().clone()),
        json!({"greeting": "hello", "limits": {"rps": 100, "burst": 1.5}, "hosts": ["a", "b"]})
    );
    assert_eq!(
        m.config_yaml(),
        "greeting: hello\nhosts:\n  - a\n  - b\nlimits:\n  burst: 1.5\n  rps: 100\n"
    );
}

#[test]
fn omitted_fields_take_their_defaults() {
    let m = Manifest::from_yaml("id: job\nlaunchables: {main: {type: process, command: run}}\n")
        .unwrap();
    assert_eq!(m.run_as(), "job");
    assert!(m.labels().is_empty());
    assert!(m.config().is_empty());
    assert!(m.status().is_none());
    assert!(m.resource_limits().is_empty());
    assert_eq!(m.termination_grace_period(), Duration::from_secs(30));
    let main = m.launchable("main").unwrap();
    assert_eq!(main.restart_policy, RestartPolicy::Always);
    assert_eq!(main.restart_backoff, Duration::from_secs(1));
    assert!(main.env.is_empty());
    assert!(main.as_process().unwrap().args.is_empty());
    assert_eq!(m.config_yaml(), "{}\n");

    let digest = "a".repeat(64);
    let art = Manifest::from_yaml(format!(
        "id: a\nlaunchables: {{x: {{type: artifact, location: 'file:///srv/x.tgz', sha256: {digest}}}}}\n"
    ))
    .unwrap();
    assert_eq!(
        art.launchable("x")
            .unwrap()
            .as_artifact()
            .unwrap()
            .entry_point,
        "bin/launch"
    );
}

#[test]
fn raw_bytes_are_kept_verbatim() {
    let text = full();
    let m = Manifest::from_yaml(&text).unwrap();
    assert_eq!(m.raw_bytes(), text.as_bytes());
}

#[test]
fn canonical_form_is_pinned() {
    // Changing the canonical form changes every SHA, which makes every agent
    // restart every pod: this test makes such a change deliberate. The SHA
    // was checked with `printf '%s' '<canonical>' | sha256sum`.
    let m = Manifest::from_yaml(
        "launchables:\n  web:\n    command: /bin/web   # the server\n    type: process\n    env: {B: '2', A: 1}\nid: web\nresource_limits: {memory: 1024M}\n",
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(m.canonical_bytes()).unwrap(),
        r#"{"id":"web","launchables":{"web":{"command":"/bin/web","env":{"A":"1","B":"2"},"type":"process"}},"resource_limits":{"memory":"1G"}}"#
    );
    assert_eq!(
        m.sha().to_string(),
        "6cab0a8e4e8abe092ac8fef5c395a34d3b5e32f630b3b50b4fc722b75c7f6462"
    );
}

fn sha(yaml: &str) -> ManifestSha {
    Manifest::from_yaml(yaml)
        .unwrap_or_else(|e| panic!("{yaml}: {e}"))
        .sha()
}

#[test]
fn identity_ignores_order_comments_whitespace_and_quoting() {
    let base =
        sha("id: web\nlaunchables:\n  web: {type: process, command: /bin/web, args: [a, '1']}\n");
    for same in [
        "launchables:\n  web: {args: [a, '1'], command: /bin/web, type: process}\nid: web\n",
        "# comment\nid:   \"web\"   # trailing\nlaunchables:\n    web:\n        type: 'process'\n        command: \"/bin/web\"\n        args:\n          - a\n          - 1\n\n",
        "{\"id\": \"web\", \"launchables\": {\"web\": {\"type\": \"process\", \"command\": \"/bin/web\", \"args\": [\"a\", \"1\"]}}}",
        "---\nid: web\nlaunchables:\n  web: {type: process, command: /bin/web, args: [a, 1]}\n...\n",
    ] {
        assert_eq!(sha(same), base, "{same}");
    }
}

#[test]
fn identity_ignores_unit_spelling_and_spelled_out_defaults() {
    let base = sha(
        "id: web\nresource_limits: {cpus: 0.5, memory: 1G}\nlaunchables: {web: {type: process, command: x}}\nstatus_port: 80\nstatus_http: true\n",
    );
    let same = sha(
        "id: web\nrun_as: web\nresource_limits: {cpus: 500m, memory: 1024Mi}\ntermination_grace_period: 30s\nstatus: {port: 80, http: true, path: /_status, localhost_only: false}\nlabels: {}\nconfig: {}\nlaunchables: {web: {type: process, command: x, args: [], env: {}, restart_policy: always, restart_backoff: 1000ms}}\n",
    );
    assert_eq!(same, base);
}

#[test]
fn any_change_in_meaning_changes_the_sha() {
    let base = "id: web\nlaunchables: {web: {type: process, command: x, args: [a, b]}}\n";
    let base_sha = sha(base);
    let edits = [
        ("id: web", "id: web2"),
        ("command: x", "command: y"),
        ("[a, b]", "[b, a]"),
        ("[a, b]", "[a, b, '']"),
        ("{web: {", "{other: {"),
        ("args: [a, b]", "args: [a, b], restart_policy: never"),
        ("args: [a, b]", "args: [a, b], env: {A: ''}"),
        ("args: [a, b]", "args: [a, b], working_dir: /"),
    ];
    let mut seen = std::collections::HashSet::from([base_sha]);
    for (from, to) in edits {
        let changed = base.replacen(from, to, 1);
        assert!(
            seen.insert(sha(&changed)),
            "{changed} has a SHA already seen"
        );
    }
    for extra in [
        "run_as: nobody",
        "labels: {a: b}",
        "config: {a: 1}",
        "config: {a: 1.0}",
        "config: {a: '1'}",
        "status_port: 80",
        "status: {port: 80, tcp: true}",
        "status: {exec: [check]}",
        "status: {exec: [check, '1']}",
        "status: {port: 80, period: 2s}",
        "status: {port: 80, timeout: 2s}",
        "status: {port: 80, failure_threshold: 2}",
        "status: {port: 80, success_threshold: 2}",
        "termination_grace_period: 31s",
        "resource_limits: {cpus: 1}",
        "resource_limits: {memory: 1G}",
    ] {
        assert!(seen.insert(sha(&format!("{base}{extra}\n"))), "{extra}");
    }
}

#[test]
fn to_yaml_is_normalised_and_parses_to_the_same_manifest() {
    let m = Manifest::from_yaml(full()).unwrap();
    let yaml = m.to_yaml();
    assert!(
        yaml.starts_with("id: web\nrun_as: www-data\nlabels:\n"),
        "{yaml}"
    );
    assert!(yaml.contains("  memory: 1536M\n"), "{yaml}");
    assert!(yaml.contains("termination_grace_period: 2m\n"), "{yaml}");
    assert!(!yaml.contains('#'), "comments are not kept: {yaml}");
    let again = Manifest::from_yaml(&yaml).unwrap();
    assert_eq!(again, m);
    assert_eq!(again.canonical_bytes(), m.canonical_bytes());
    assert_eq!(again.to_yaml(), yaml);
}

#[test]
fn manifests_are_equal_when_their_shas_are() {
    let a = Manifest::from_yaml("id: a\nlaunchables: {x: {type: process, command: c}}").unwrap();
    let b = Manifest::from_yaml("launchables: {x: {command: c, type: process}}\nid: a\n").unwrap();
    let c = Manifest::from_yaml("id: b\nlaunchables: {x: {type: process, command: c}}").unwrap();
    assert_eq!(a, b);
    assert_ne!(a.raw_bytes(), b.raw_bytes());
    assert_ne!(a, c);
}

#[test]
fn sha_displays_and_parses_as_hex() {
    let m = Manifest::from_yaml(full()).unwrap();
    let hex = m.sha().to_string();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(hex.parse::<ManifestSha>().unwrap(), m.sha());
    assert_eq!(hex.to_uppercase().parse::<ManifestSha>().unwrap(), m.sha());
    assert_eq!(format!("{:?}", m.sha()), format!("ManifestSha({hex})"));

    let json = serde_json::to_string(&m.sha()).unwrap();
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<ManifestSha>(&json).unwrap(), m.sha());
    assert!(serde_json::from_str::<ManifestSha>("\"abc\"").is_err());

    for (bad, reason) in [
        ("", "must be 64 hex digits"),
        (&hex[..63], "must be 64 hex digits"),
        (&format!("{hex}0"), "must be 64 hex digits"),
        (&format!("{}g", &hex[..63]), "must contain only hex digits"),
    ] {
        match bad.parse::<ManifestSha>() {
            Err(ManifestError::InvalidSha { reason: got, .. }) => assert_eq!(got, reason, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn the_builder_makes_the_same_manifest_as_yaml() {
    let built = Manifest::builder("web")
        .run_as("www-data")
        .label("tier", "frontend")
        .label("example.com/team", "42")
        .cpus(Cpus::from_millis(1500))
        .memory(ByteSize::mib(1536))
        .termination_grace_period(Duration::from_secs(120))
        .status(StatusCheck::of(Probe::Http {
            port: 8443,
            path: "/health".into(),
            http: false,
            localhost_only: true,
        }))
        .launchable(
            "server",
            Launchable::process(["/usr/bin/web", "--port", "8080", "--verbose", "true"])
                .working_dir("/srv/web")
                .env("RUST_LOG", "info")
                .env("PORT", "8080")
                .restart_policy(RestartPolicy::OnFailure)
                .restart_backoff(Duration::from_millis(500)),
        )
        .launchable(
            "assets",
            Launchable {
                kind: LaunchableKind::Artifact(drover_manifest::Artifact {
                    location: "https://artifacts.example.com/assets_1.tar.gz".into(),
                    sha256: DIGEST.into(),
                    entry_point: "bin/serve".into(),
                }),
                ..Launchable::artifact("", "")
            }
            .restart_policy(RestartPolicy::Never),
        )
        .config("greeting", json!("hello"))
        .config("limits", json!({"rps": 100, "burst": 1.5}))
        .config("hosts", json!(["a", "b"]))
        .build()
        .unwrap();
    let parsed = Manifest::from_yaml(full()).unwrap();
    assert_eq!(built.sha(), parsed.sha());
    assert_eq!(built.raw_bytes(), built.to_yaml().as_bytes());
}

#[test]
fn status_checks_of_every_kind_and_their_timing_are_read() {
    let pod = "id: web\nlaunchables: {web: {type: process, command: x}}\n";
    let read = |status: &str| {
        Manifest::from_yaml(format!("{pod}{status}\n"))
            .unwrap()
            .status()
            .cloned()
            .unwrap()
    };
    assert_eq!(
        read("status: {port: 9000, tcp: true, localhost_only: true}").probe,
        Probe::Tcp {
            port: 9000,
            localhost_only: true
        }
    );
    assert_eq!(
        read("status: {exec: [/bin/check, --deep, 3]}").probe,
        Probe::Exec {
            command: vec!["/bin/check".into(), "--deep".into(), "3".into()]
        }
    );
    let timed = read(
        "status: {port: 80, http: true, period: 5s, timeout: 500ms, failure_threshold: 5, success_threshold: 2}",
    );
    assert_eq!(timed.period, Some(Duration::from_secs(5)));
    assert_eq!(timed.timeout, Some(Duration::from_millis(500)));
    assert_eq!(timed.failure_threshold, Some(5));
    assert_eq!(timed.success_threshold, Some(2));
    assert_eq!(timed.port_number(), Some(80));
    // The shorthand and the nested spelling, with timing, are one manifest.
    assert_eq!(
        sha(&format!(
            "{pod}status_port: 80\nstatus: {{period: 1000ms}}\n"
        )),
        sha(&format!("{pod}status: {{port: 80, period: 1s}}\n"))
    );
    // tcp: false is the default HTTP(S) probe.
    assert_eq!(
        sha(&format!("{pod}status: {{port: 80, tcp: false}}\n")),
        sha(&format!("{pod}status_port: 80\n"))
    );
    let m = Manifest::from_yaml(format!(
        "{pod}status: {{exec: [check, x], period: 2s, failure_threshold: 4}}\n"
    ))
    .unwrap();
    assert_eq!(Manifest::from_yaml(m.to_yaml()).unwrap(), m);
    let built = Manifest::builder("web")
        .launchable("web", Launchable::process(["x"]))
        .status(StatusCheck {
            period: Some(Duration::from_secs(2)),
            failure_threshold: Some(4),
            ..StatusCheck::exec(vec!["check".into(), "x".into()])
        })
        .build()
        .unwrap();
    assert_eq!(built, m);
}

#[test]
fn contradictory_or_out_of_range_status_checks_are_refused() {
    let pod = "id: web\nlaunchables: {web: {type: process, command: x}}\n";
    for (status, path, kind, says) in [
        (
            "status: {exec: [c], port: 80}",
            "status.exec",
            FieldErrorKind::Conflict,
            "status.port",
        ),
        (
            "status: {exec: [c], path: /x}",
            "status.exec",
            FieldErrorKind::Conflict,
            "status.path",
        ),
        (
            "status: {exec: [c], tcp: true}",
            "status.exec",
            FieldErrorKind::Conflict,
            "status.tcp",
        ),
        (
            "status_port: 80\nstatus: {exec: [c]}",
            "status.exec",
            FieldErrorKind::Conflict,
            "status.port",
        ),
        (
            "status: {port: 80, tcp: true, path: /x}",
            "status.path",
            FieldErrorKind::Conflict,
            "TCP probe",
        ),
        (
            "status: {port: 80, tcp: true, http: true}",
            "status.http",
            FieldErrorKind::Conflict,
            "TCP probe",
        ),
        (
            "status: {exec: []}",
            "status.exec",
            FieldErrorKind::Empty,
            "program",
        ),
        (
            "status: {exec: ['']}",
            "status.exec",
            FieldErrorKind::Empty,
            "program",
        ),
        (
            "status: {exec: check}",
            "status.exec",
            FieldErrorKind::WrongType,
            "list",
        ),
        (
            "status: {tcp: true}",
            "status.port",
            FieldErrorKind::Missing,
            "required",
        ),
        (
            "status: {period: 1s}",
            "status.port",
            FieldErrorKind::Missing,
            "required",
        ),
        (
            "status: {port: 80, period: 10ms}",
            "status.period",
            FieldErrorKind::InvalidDuration,
            "between 100ms and 1h",
        ),
        (
            "status: {port: 80, period: 2h}",
            "status.period",
            FieldErrorKind::InvalidDuration,
            "between",
        ),
        (
            "status: {port: 80, timeout: 0s}",
            "status.timeout",
            FieldErrorKind::InvalidDuration,
            "between",
        ),
        (
            "status: {port: 80, period: 5}",
            "status.period",
            FieldErrorKind::InvalidDuration,
            "unit",
        ),
        (
            "status: {port: 80, failure_threshold: 0}",
            "status.failure_threshold",
            FieldErrorKind::InvalidValue,
            "1 to 1000",
        ),
        (
            "status: {port: 80, success_threshold: 1001}",
            "status.success_threshold",
            FieldErrorKind::InvalidValue,
            "1 to 1000",
        ),
        (
            "status: {port: 80, success_threshold: two}",
            "status.success_threshold",
            FieldErrorKind::WrongType,
            "whole number",
        ),
        (
            "status: {port: 80, tcp: yes please}",
            "status.tcp",
            FieldErrorKind::WrongType,
            "boolean",
        ),
        (
            "status: {port: 80, probe: tcp}",
            "status.probe",
            FieldErrorKind::UnknownField,
            "tcp",
        ),
    ] {
        let yaml = format!("{pod}{status}\n");
        let errors = match Manifest::from_yaml(&yaml) {
            Err(ManifestError::Invalid(errors)) => errors,
            other => panic!("{status}: {other:?}"),
        };
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.kind == kind && e.message.contains(says)),
            "{status}: {errors:?}"
        );
    }
}
