//! Malformed and invalid manifests: each is rejected with a typed error that
//! names the field (or line and column) and the problem.

use drover_manifest::{
    FieldError, FieldErrorKind as Kind, MAX_MANIFEST_BYTES, MAX_NESTING_DEPTH, Manifest,
    ManifestError,
};

const OK_LAUNCHABLES: &str = "launchables:\n  web: {type: process, command: /bin/web}\n";

fn field_errors(yaml: &str) -> Vec<FieldError> {
    match Manifest::from_yaml(yaml) {
        Err(ManifestError::Invalid(errors)) => {
            assert!(!errors.is_empty());
            errors
        }
        other => panic!("expected ManifestError::Invalid for\n{yaml}\ngot {other:?}"),
    }
}

/// The one error a manifest has, which must be at `path` and of `kind`.
#[track_caller]
fn only_error(yaml: &str, path: &str, kind: Kind) -> FieldError {
    let errors = field_errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!((error.path.as_str(), error.kind), (path, kind), "{error}");
    error
}

#[track_caller]
fn yaml_error(yaml: &str) -> (usize, usize, String) {
    match Manifest::from_yaml(yaml) {
        Err(ManifestError::Yaml {
            line,
            column,
            message,
        }) => (line, column, message),
        other => panic!("expected ManifestError::Yaml, got {other:?}"),
    }
}

fn with_launchable(stanza: &str) -> String {
    format!("id: pod\nlaunchables:\n  web: {stanza}\n")
}

#[test]
fn yaml_syntax_errors_carry_line_and_column() {
    let (line, column, message) =
        yaml_error("id: web\nlaunchables:\n  web:\n    type: process\n   command: x\n");
    assert_eq!((line, column), (5, 4));
    assert!(message.contains("block mapping"), "{message}");

    let (line, column, message) = yaml_error("id: web\nlaunchables:\n\tweb: {}\n");
    assert_eq!((line, column), (3, 2));
    assert!(message.contains("tabs"), "{message}");

    let (line, column, _) = yaml_error("id: web\nlaunchables: {web: {type: process}\n");
    assert_eq!((line, column), (3, 1));

    let err = Manifest::from_yaml("id: [").unwrap_err();
    assert!(
        err.to_string().starts_with("YAML syntax error at line"),
        "{err}"
    );
}

#[test]
fn duplicate_keys_are_a_yaml_error() {
    let (line, column, message) = yaml_error("id: web\nid: web\n");
    assert_eq!((line, column), (2, 1));
    assert!(message.contains("duplicated key"), "{message}");
}

#[test]
fn a_second_document_is_rejected() {
    let (line, column, message) = yaml_error(&format!("id: a\n{OK_LAUNCHABLES}---\nid: b\n"));
    assert_eq!((line, column), (4, 1));
    assert!(message.contains("one YAML document"), "{message}");
}

#[test]
fn invalid_utf8_is_a_yaml_error_at_its_position() {
    let err = Manifest::from_yaml(b"id: web\nrun_as: w\xffb\n").unwrap_err();
    match err {
        ManifestError::Yaml {
            line,
            column,
            message,
        } => assert_eq!((line, column, message.as_str()), (2, 10, "invalid UTF-8")),
        other => panic!("expected a YAML error, got {other:?}"),
    }
}

#[test]
fn alias_bombs_are_refused() {
    let mut yaml = String::from("a: &a [1,1,1,1,1,1,1,1,1,1]\n");
    for (name, prev) in ["b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f"])
    {
        let refs = vec![format!("*{prev}"); 10].join(",");
        yaml.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let (_, _, message) = yaml_error(&yaml);
    assert!(message.contains("alias expansion"), "{message}");
}

#[test]
fn nesting_is_bounded() {
    // The document is level 1 and `config` level 2.
    let nested = |levels: usize| {
        format!(
            "id: pod\n{OK_LAUNCHABLES}config: {{x: {}{}}}\n",
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    assert!(Manifest::from_yaml(nested(MAX_NESTING_DEPTH - 2)).is_ok());
    let (line, _, message) = yaml_error(&nested(MAX_NESTING_DEPTH - 1));
    assert_eq!(line, 4);
    assert!(message.contains("nesting deeper than 64"), "{message}");
    // Far deeper input is refused before any tree is built.
    assert!(matches!(
        Manifest::from_yaml("[".repeat(200_000)),
        Err(ManifestError::Yaml { .. })
    ));
}

#[test]
fn empty_documents_and_non_mappings_are_invalid() {
    for empty in ["", "# just a comment\n", "---\n", "~\n"] {
        let error = only_error(empty, "", Kind::Missing);
        assert_eq!(error.message, "the manifest is empty");
    }
    let error = only_error("- id: web\n", "", Kind::WrongType);
    assert_eq!(error.message, "must be a mapping, found a list");
    assert_eq!(
        error.to_string(),
        "(document): must be a mapping, found a list (line 1, column 1)"
    );
}

#[test]
fn missing_required_fields_are_named() {
    let errors = field_errors("run_as: web\n");
    let got: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(got, [("id", Kind::Missing), ("launchables", Kind::Missing)]);

    only_error(
        &with_launchable("{command: x}"),
        "launchables.web.type",
        Kind::Missing,
    );
    only_error(
        &with_launchable("{type: process}"),
        "launchables.web.command",
        Kind::Missing,
    );
    let errors = field_errors(&with_launchable("{type: artifact}"));
    let got: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    assert_eq!(
        got,
        [
            ("launchables.web.location", Kind::Missing),
            ("launchables.web.sha256", Kind::Missing)
        ]
    );
    // An explicit null is the same as leaving the field out.
    only_error(
        "id: ~\nlaunchables: {a: {type: process, command: x}}\n",
        "id",
        Kind::Missing,
    );
    only_error("id: pod\nlaunchables: {}\n", "launchables", Kind::Empty);
}

#[test]
fn wrong_types_name_what_was_expected_and_found() {
    let error = only_error(
        &format!("id: [web]\n{OK_LAUNCHABLES}"),
        "id",
        Kind::WrongType,
    );
    assert_eq!(error.message, "must be a string, found a list");
    assert_eq!(error.location, Some((1, 5)));

    only_error(
        "id: pod\nlaunchables: [web]\n",
        "launchables",
        Kind::WrongType,
    );
    only_error(
        &with_launchable("[process]"),
        "launchables.web",
        Kind::WrongType,
    );
    only_error(
        &with_launchable("{type: process, command: x, args: --verbose}"),
        "launchables.web.args",
        Kind::WrongType,
    );
    only_error(
        &with_launchable("{type: process, command: x, args: [[a]]}"),
        "launchables.web.args[0]",
        Kind::WrongType,
    );
    only_error(
        &with_launchable("{type: process, command: {path: x}}"),
        "launchables.web.command",
        Kind::WrongType,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status_port: '80'\n"),
        "status_port",
        Kind::WrongType,
    );
    // YAML 1.2: `yes` is a string, not a boolean.
    let error = only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status: {{port: 80, http: yes}}\n"),
        "status.http",
        Kind::WrongType,
    );
    assert_eq!(
        error.message,
        "must be a boolean (true or false), found a string"
    );
    let error = only_error(
        &with_launchable("{type: process, command: x, env: {RATIO: 1.5}}"),
        "launchables.web.env.RATIO",
        Kind::WrongType,
    );
    assert!(error.message.contains("quote numbers"), "{error}");
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}config: [a]\n"),
        "config",
        Kind::WrongType,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}labels: tier\n"),
        "labels",
        Kind::WrongType,
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let error = only_error(
        &format!("id: pod\nreplicas: 3\n{OK_LAUNCHABLES}"),
        "replicas",
        Kind::UnknownField,
    );
    assert_eq!(error.location, Some((2, 1)));
    assert!(
        error
            .message
            .starts_with("unknown field; expected one of: id, run_as, launchables"),
        "{error}"
    );

    let error = only_error(
        &with_launchable("{type: process, command: x, restart_polcy: never}"),
        "launchables.web.restart_polcy",
        Kind::UnknownField,
    );
    assert!(error.message.contains("restart_policy"), "{error}");
    // Fields of another launchable type are unknown to this one.
    let digest = "a".repeat(64);
    let error = only_error(
        &with_launchable(&format!(
            "{{type: artifact, location: 'https://x/a.tgz', sha256: {digest}, command: /bin/x}}"
        )),
        "launchables.web.command",
        Kind::UnknownField,
    );
    assert!(
        error.message.contains("entry_point") && !error.message.contains("args"),
        "{error}"
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status: {{port: 1, proto: h2}}\n"),
        "status.proto",
        Kind::UnknownField,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}resource_limits: {{disk: 1G}}\n"),
        "resource_limits.disk",
        Kind::UnknownField,
    );
}

#[test]
fn invalid_ids_are_rejected() {
    let error = only_error(
        &format!("id: Web_1\n{OK_LAUNCHABLES}"),
        "id",
        Kind::InvalidId,
    );
    assert!(error.message.contains("DNS label"), "{error}");
    only_error(
        &format!("id: {}\n{OK_LAUNCHABLES}", "a".repeat(64)),
        "id",
        Kind::InvalidId,
    );
    only_error(
        &format!("id: -web\n{OK_LAUNCHABLES}"),
        "id",
        Kind::InvalidId,
    );
    // Unquoted, 7 is an integer; ids are strings.
    only_error(&format!("id: 7\n{OK_LAUNCHABLES}"), "id", Kind::WrongType);
    assert!(Manifest::from_yaml(format!("id: '7'\n{OK_LAUNCHABLES}")).is_ok());

    let error = only_error(
        "id: pod\nlaunchables:\n  my_app: {type: process, command: x}\n",
        "launchables.my_app",
        Kind::InvalidId,
    );
    assert_eq!(error.location, Some((3, 3)));
}

#[test]
fn invalid_sizes_are_rejected() {
    let limits = |body: &str| format!("id: pod\n{OK_LAUNCHABLES}resource_limits: {body}\n");
    for (body, path) in [
        ("{memory: lots}", "resource_limits.memory"),
        ("{memory: 0}", "resource_limits.memory"),
        ("{memory: 0M}", "resource_limits.memory"),
        ("{memory: -1}", "resource_limits.memory"),
        ("{memory: 1X}", "resource_limits.memory"),
        ("{memory: 99999999T}", "resource_limits.memory"),
        ("{cpus: 0}", "resource_limits.cpus"),
        ("{cpus: -1}", "resource_limits.cpus"),
        ("{cpus: 0.0001}", "resource_limits.cpus"),
        ("{cpus: fast}", "resource_limits.cpus"),
        ("{cpus: .inf}", "resource_limits.cpus"),
        ("{cpus: 1000000}", "resource_limits.cpus"),
    ] {
        only_error(&limits(body), path, Kind::InvalidSize);
    }
    only_error(
        &limits("{memory: [1G]}"),
        "resource_limits.memory",
        Kind::WrongType,
    );
    only_error(
        &limits("{memory: 1.5}"),
        "resource_limits.memory",
        Kind::WrongType,
    );
    only_error(
        &limits("{cpus: true}"),
        "resource_limits.cpus",
        Kind::WrongType,
    );
    let error = only_error(
        &limits("{memory: 512Q}"),
        "resource_limits.memory",
        Kind::InvalidSize,
    );
    assert!(error.message.contains("K, M, G or T"), "{error}");
}

#[test]
fn invalid_durations_are_rejected() {
    let grace =
        |value: &str| format!("id: pod\n{OK_LAUNCHABLES}termination_grace_period: {value}\n");
    let error = only_error(
        &grace("30"),
        "termination_grace_period",
        Kind::InvalidDuration,
    );
    assert!(error.message.contains("has no unit"), "{error}");
    only_error(
        &grace("'30'"),
        "termination_grace_period",
        Kind::InvalidDuration,
    );
    only_error(
        &grace("soon"),
        "termination_grace_period",
        Kind::InvalidDuration,
    );
    only_error(
        &grace("-1s"),
        "termination_grace_period",
        Kind::InvalidDuration,
    );
    let error = only_error(
        &grace("25h"),
        "termination_grace_period",
        Kind::InvalidDuration,
    );
    assert!(error.message.contains("24h maximum"), "{error}");
    only_error(&grace("[30s]"), "termination_grace_period", Kind::WrongType);
    only_error(
        &with_launchable("{type: process, command: x, restart_backoff: 1.5}"),
        "launchables.web.restart_backoff",
        Kind::InvalidDuration,
    );
}

#[test]
fn bad_sha256_digests_are_rejected() {
    let artifact = |digest: &str| {
        with_launchable(&format!(
            "{{type: artifact, location: 'https://x/a.tgz', sha256: {digest}}}"
        ))
    };
    for digest in [
        "abc".to_string(),
        "a".repeat(63),
        "a".repeat(65),
        "g".repeat(64),
        format!("'{} '", "a".repeat(63)),
    ] {
        let error = only_error(
            &artifact(&digest),
            "launchables.web.sha256",
            Kind::InvalidDigest,
        );
        assert!(error.message.contains("64 hex digits"), "{error}");
    }
    // 64 digits that YAML reads as a number are not a string.
    let error = only_error(
        &artifact(&"1".repeat(64)),
        "launchables.web.sha256",
        Kind::WrongType,
    );
    assert!(error.message.contains("quote it"), "{error}");
    only_error(&artifact("[a]"), "launchables.web.sha256", Kind::WrongType);
}

#[test]
fn unknown_launchable_types_name_the_accepted_ones() {
    let error = only_error(
        &with_launchable("{type: docker, image: nginx}"),
        "launchables.web.type",
        Kind::UnknownType,
    );
    assert_eq!(
        error.message,
        "unknown launchable type \"docker\"; accepted types: process, artifact"
    );
    assert_eq!(error.location, Some((3, 15)));
}

#[test]
fn invalid_values_are_rejected() {
    let error = only_error(
        &with_launchable("{type: process, command: x, restart_policy: sometimes}"),
        "launchables.web.restart_policy",
        Kind::InvalidValue,
    );
    assert!(
        error.message.contains("always, never, on-failure"),
        "{error}"
    );
    only_error(
        &with_launchable("{type: process, command: '  '}"),
        "launchables.web.command",
        Kind::Empty,
    );
    only_error(
        &with_launchable("{type: process, command: \"a\\0b\"}"),
        "launchables.web.command",
        Kind::InvalidValue,
    );
    only_error(
        &with_launchable("{type: process, command: x, env: {1X: a}}"),
        "launchables.web.env.1X",
        Kind::InvalidValue,
    );
    let digest = "a".repeat(64);
    for location in [
        "ftp://x/a.tgz",
        "https://",
        "file://relative",
        "https://x/a b.tgz",
        "a.tgz",
    ] {
        only_error(
            &with_launchable(&format!(
                "{{type: artifact, location: '{location}', sha256: {digest}}}"
            )),
            "launchables.web.location",
            Kind::InvalidValue,
        );
    }
    for entry in ["../escape", "/bin/launch", "a/../../b"] {
        only_error(
            &with_launchable(&format!(
                "{{type: artifact, location: 'file:///a.tgz', sha256: {digest}, entry_point: '{entry}'}}"
            )),
            "launchables.web.entry_point",
            Kind::InvalidValue,
        );
    }
    only_error(
        &format!("id: pod\nrun_as: -root\n{OK_LAUNCHABLES}"),
        "run_as",
        Kind::InvalidValue,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}labels: {{-bad: x}}\n"),
        "labels.-bad",
        Kind::InvalidValue,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}labels: {{tier: 'two words'}}\n"),
        "labels.tier",
        Kind::InvalidValue,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status_port: 0\n"),
        "status_port",
        Kind::InvalidValue,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status: {{port: 70000}}\n"),
        "status.port",
        Kind::InvalidValue,
    );
    only_error(
        &format!("id: pod\n{OK_LAUNCHABLES}status: {{port: 80, path: health}}\n"),
        "status.path",
        Kind::InvalidValue,
    );
}

#[test]
fn status_spellings_must_agree() {
    let base = format!("id: pod\n{OK_LAUNCHABLES}");
    only_error(
        &format!("{base}status_port: 80\nstatus: {{port: 81}}\n"),
        "status_port",
        Kind::Conflict,
    );
    only_error(
        &format!("{base}status_port: 80\nstatus_http: true\nstatus: {{http: false}}\n"),
        "status_http",
        Kind::Conflict,
    );
    only_error(
        &format!("{base}status_http: true\n"),
        "status.port",
        Kind::Missing,
    );
    only_error(
        &format!("{base}status: {{path: /health}}\n"),
        "status.port",
        Kind::Missing,
    );
}

#[test]
fn config_must_be_plain_data() {
    let errors = field_errors(&format!(
        "id: pod\n{OK_LAUNCHABLES}config: {{1: a, b: .nan, c: !foo bar, d: [ok, .inf]}}\n"
    ));
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.kind, e.location))
        .collect();
    assert_eq!(
        got,
        [
            ("config", Kind::WrongType, Some((4, 10))),
            ("config.b", Kind::InvalidValue, Some((4, 19))),
            ("config.c", Kind::WrongType, Some((4, 28))),
            ("config.d[1]", Kind::InvalidValue, Some((4, 46))),
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_in_document_order() {
    let yaml = "\
id: Bad_Id
colour: blue
launchables:
  web:
    type: process
    command: ''
    restart_policy: sometimes
  db:
    type: docker
  Cache: {type: artifact, location: 'https://x/c.tgz', sha256: xyz}
resource_limits: {memory: lots, cpus: 0}
termination_grace_period: 30
";
    let errors = field_errors(yaml);
    let got: Vec<_> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.kind, e.location))
        .collect();
    assert_eq!(
        got,
        [
            ("id", Kind::InvalidId, Some((1, 5))),
            ("colour", Kind::UnknownField, Some((2, 1))),
            ("launchables.web.command", Kind::Empty, Some((6, 14))),
            (
                "launchables.web.restart_policy",
                Kind::InvalidValue,
                Some((7, 21))
            ),
            ("launchables.db.type", Kind::UnknownType, Some((9, 11))),
            ("launchables.Cache", Kind::InvalidId, Some((10, 3))),
            (
                "launchables.Cache.sha256",
                Kind::InvalidDigest,
                Some((10, 64))
            ),
            ("resource_limits.memory", Kind::InvalidSize, Some((11, 27))),
            ("resource_limits.cpus", Kind::InvalidSize, Some((11, 39))),
            (
                "termination_grace_period",
                Kind::InvalidDuration,
                Some((12, 27))
            ),
        ]
    );
    let message = ManifestError::Invalid(errors).to_string();
    assert!(
        message.starts_with("invalid manifest: id: \"Bad_Id\" contains 'B'"),
        "{message}"
    );
    assert!(
        message.contains("; launchables.web.command: must not be empty (line 6, column 14); "),
        "{message}"
    );
}

#[test]
fn oversized_manifests_are_refused_before_parsing() {
    let too_big = vec![b'['; MAX_MANIFEST_BYTES + 1];
    match Manifest::from_yaml(&too_big).unwrap_err() {
        ManifestError::TooLarge { size, limit } => {
            assert_eq!((size, limit), (MAX_MANIFEST_BYTES + 1, MAX_MANIFEST_BYTES))
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A manifest of exactly the limit is accepted (and fits etcd's 1.5 MiB request).
    let head = format!("id: pod\n{OK_LAUNCHABLES}config: {{blob: '");
    let tail = "'}\n";
    let pad = "x".repeat(MAX_MANIFEST_BYTES - head.len() - tail.len());
    let at_limit = format!("{head}{pad}{tail}");
    assert_eq!(at_limit.len(), MAX_MANIFEST_BYTES);
    let manifest = Manifest::from_yaml(&at_limit).unwrap();
    assert!(manifest.raw_bytes().len() + 4096 <= 1536 * 1024);
}

#[test]
fn the_builder_reports_the_same_errors() {
    let errors = Manifest::builder("Bad").build().unwrap_err();
    let got: Vec<_> = errors
        .field_errors()
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    assert_eq!(got, [("id", Kind::InvalidId), ("launchables", Kind::Empty)]);
    let errors = Manifest::builder("ok")
        .process("web", Vec::<String>::new())
        .label("bad key", "x")
        .build()
        .unwrap_err();
    let got: Vec<_> = errors
        .field_errors()
        .iter()
        .map(|e| (e.path.as_str(), e.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("labels.bad key", Kind::InvalidValue),
            ("launchables.web.command", Kind::Empty)
        ]
    );
}

#[test]
fn aliases_work_but_cannot_nest_config_past_the_limit() {
    let shared = Manifest::from_yaml(
        "id: pod\nlaunchables:\n  a: {type: process, command: x, env: &env {LOG: info}}\n  b: {type: process, command: y, env: *env}\n",
    )
    .unwrap();
    assert_eq!(shared.launchable("b").unwrap().env["LOG"], "info");

    // Each alias wraps the previous anchor in one more list: shallow text, deep value.
    let mut config = String::from("config:\n  l0: &l0 [1]\n");
    for i in 1..=MAX_NESTING_DEPTH {
        config.push_str(&format!("  l{i}: &l{i} [*l{}]\n", i - 1));
    }
    let errors = field_errors(&format!("id: pod\n{OK_LAUNCHABLES}{config}"));
    assert!(
        errors
            .iter()
            .all(|e| e.kind == Kind::InvalidValue && e.message.contains("deeper than 64")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.path.starts_with("config.l64[0]")),
        "{errors:#?}"
    );
}
