//! The canonical form (identity) and YAML output.
//!
//! The canonical form is the manifest's typed content as compact JSON:
//! object keys sorted by their UTF-8 bytes, no whitespace, strings escaped as
//! `serde_json` does, numbers in their shortest form. Fields holding their
//! default value are left out, units are in their canonical spelling
//! (`1G`, `0.5`, `1m 30s`), the `status_port`/`status_http` shorthands are
//! folded into `status`, and `run_as` equal to the id is dropped. So key
//! order, comments, whitespace, quoting, unit spelling and spelled-out
//! defaults never change a manifest's SHA; any change in meaning does.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use saphyr::{Mapping, Scalar, Yaml, YamlEmitter};
use serde_json::{Map, Value};

use crate::model::{
    DEFAULT_ENTRY_POINT, DEFAULT_RESTART_BACKOFF, DEFAULT_STATUS_PATH,
    DEFAULT_TERMINATION_GRACE_PERIOD, Launchable, LaunchableKind, Probe, ResourceLimits,
    RestartPolicy, StatusCheck,
};
use crate::units::format_duration;

/// A borrowed view of a manifest's content, from a parsed manifest or a builder.
pub(crate) struct View<'a> {
    pub(crate) id: &'a str,
    pub(crate) run_as: Option<&'a str>,
    pub(crate) launchables: Vec<(&'a str, &'a Launchable)>,
    pub(crate) config: &'a Map<String, Value>,
    pub(crate) status: Option<&'a StatusCheck>,
    pub(crate) resource_limits: &'a ResourceLimits,
    pub(crate) termination_grace_period: Duration,
    pub(crate) labels: &'a BTreeMap<String, String>,
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn launchable_tree(launchable: &Launchable) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), launchable.type_name().into());
    match &launchable.kind {
        LaunchableKind::Process(process) => {
            out.insert("command".into(), process.command.clone().into());
            if !process.args.is_empty() {
                out.insert("args".into(), process.args.clone().into());
            }
            if let Some(dir) = &process.working_dir {
                out.insert("working_dir".into(), dir.clone().into());
            }
        }
        LaunchableKind::Artifact(artifact) => {
            out.insert("location".into(), artifact.location.clone().into());
            out.insert("sha256".into(), artifact.sha256.clone().into());
            if artifact.entry_point != DEFAULT_ENTRY_POINT {
                out.insert("entry_point".into(), artifact.entry_point.clone().into());
            }
        }
    }
    if launchable.restart_policy != RestartPolicy::default() {
        out.insert(
            "restart_policy".into(),
            launchable.restart_policy.as_str().into(),
        );
    }
    if launchable.restart_backoff != DEFAULT_RESTART_BACKOFF {
        out.insert(
            "restart_backoff".into(),
            format_duration(launchable.restart_backoff).into(),
        );
    }
    if !launchable.env.is_empty() {
        out.insert("env".into(), string_map(&launchable.env));
    }
    Value::Object(out)
}

/// The manifest as a JSON value tree, defaults omitted.
pub(crate) fn tree(view: &View<'_>) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), view.id.into());
    if let Some(user) = view.run_as {
        out.insert("run_as".into(), user.into());
    }
    if !view.labels.is_empty() {
        out.insert("labels".into(), string_map(view.labels));
    }
    let limits = view.resource_limits;
    if !limits.is_empty() {
        let mut l = Map::new();
        if let Some(cpus) = limits.cpus {
            let number = if cpus.millis().is_multiple_of(1000) {
                Value::from(cpus.millis() / 1000)
            } else {
                Value::from(cpus.as_f64())
            };
            l.insert("cpus".into(), number);
        }
        if let Some(memory) = limits.memory {
            l.insert("memory".into(), memory.to_string().into());
        }
        out.insert("resource_limits".into(), Value::Object(l));
    }
    if view.termination_grace_period != DEFAULT_TERMINATION_GRACE_PERIOD {
        out.insert(
            "termination_grace_period".into(),
            format_duration(view.termination_grace_period).into(),
        );
    }
    if let Some(status) = view.status {
        let mut s = Map::new();
        match &status.probe {
            Probe::Http {
                port,
                path,
                http,
                localhost_only,
            } => {
                s.insert("port".into(), (*port).into());
                if path != DEFAULT_STATUS_PATH {
                    s.insert("path".into(), path.clone().into());
                }
                if *http {
                    s.insert("http".into(), true.into());
                }
                if *localhost_only {
                    s.insert("localhost_only".into(), true.into());
                }
            }
            Probe::Tcp {
                port,
                localhost_only,
            } => {
                s.insert("port".into(), (*port).into());
                s.insert("tcp".into(), true.into());
                if *localhost_only {
                    s.insert("localhost_only".into(), true.into());
                }
            }
            Probe::Exec { command } => {
                s.insert("exec".into(), command.clone().into());
            }
        }
        for (name, value) in [("period", status.period), ("timeout", status.timeout)] {
            if let Some(value) = value {
                s.insert(name.into(), format_duration(value).into());
            }
        }
        for (name, value) in [
            ("failure_threshold", status.failure_threshold),
            ("success_threshold", status.success_threshold),
        ] {
            if let Some(value) = value {
                s.insert(name.into(), value.into());
            }
        }
        out.insert("status".into(), Value::Object(s));
    }
    out.insert(
        "launchables".into(),
        Value::Object(
            view.launchables
                .iter()
                .map(|(id, l)| ((*id).to_string(), launchable_tree(l)))
                .collect(),
        ),
    );
    if !view.config.is_empty() {
        out.insert("config".into(), Value::Object(view.config.clone()));
    }
    Value::Object(out)
}

/// Compact JSON with object keys sorted, written explicitly rather than
/// relying on `serde_json::Map` being a `BTreeMap` (the `preserve_order`
/// feature, enabled by any crate in a build, would change that).
pub(crate) fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            out.extend_from_slice(value.to_string().as_bytes());
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Field order in YAML output: the order people read a manifest in. Other
/// keys (ids, env names, config) follow, sorted.
const YAML_KEY_ORDER: [&str; 28] = [
    "id",
    "run_as",
    "labels",
    "resource_limits",
    "cpus",
    "memory",
    "termination_grace_period",
    "status",
    "port",
    "path",
    "http",
    "localhost_only",
    "tcp",
    "exec",
    "period",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "launchables",
    "type",
    "command",
    "args",
    "working_dir",
    "location",
    "sha256",
    "entry_point",
    "restart_policy",
    "restart_backoff",
];

fn yaml_node(value: &Value, structural: bool) -> Yaml<'static> {
    match value {
        Value::Null => Yaml::Value(Scalar::Null),
        Value::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        Value::Number(n) => Yaml::Value(Scalar::parse_from_cow(Cow::Owned(n.to_string()))),
        Value::String(s) => Yaml::Value(Scalar::String(Cow::Owned(s.clone()))),
        Value::Array(items) => Yaml::Sequence(items.iter().map(|i| yaml_node(i, false)).collect()),
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            let rank = |key: &str| {
                structural
                    .then(|| YAML_KEY_ORDER.iter().position(|k| *k == key))
                    .flatten()
                    .unwrap_or(usize::MAX)
            };
            entries.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
            let mut mapping = Mapping::new();
            for (key, item) in entries {
                // Below these keys the names are the user's (ids, env, labels, config).
                let child_structural =
                    structural && !matches!(key.as_str(), "config" | "env" | "labels");
                mapping.insert(
                    Yaml::Value(Scalar::String(Cow::Owned(key.clone()))),
                    yaml_node(item, child_structural),
                );
            }
            Yaml::Mapping(mapping)
        }
    }
}

/// YAML text for a value tree (without the leading `---`).
pub(crate) fn to_yaml(value: &Value, structural: bool) -> String {
    let node = yaml_node(value, structural);
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter
        .dump(&node)
        .expect("writing YAML with string keys into a String cannot fail");
    let mut text = out.strip_prefix("---\n").map(str::to_string).unwrap_or(out);
    text.push('\n');
    text
}
