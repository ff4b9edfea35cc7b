//! YAML text to the typed manifest, collecting every problem with its path.

use std::collections::BTreeMap;
use std::time::Duration;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser, ScanError};

use crate::error::{FieldError, FieldErrorKind as Kind, ManifestError};
use crate::id::{LaunchableId, PodId, truncate};
use crate::model::{
    Artifact, DEFAULT_ENTRY_POINT, DEFAULT_RESTART_BACKOFF, DEFAULT_STATUS_PATH,
    DEFAULT_TERMINATION_GRACE_PERIOD, LAUNCHABLE_TYPES, Launchable, LaunchableKind, MAX_DURATION,
    MAX_PROBE_INTERVAL, MAX_PROBE_THRESHOLD, MIN_PROBE_PERIOD, Probe, Process, ResourceLimits,
    RestartPolicy, StatusCheck,
};
use crate::units::{ByteSize, Cpus, parse_duration};

/// The deepest nesting of mappings and lists accepted. Manifests need a
/// handful of levels (`config` a few more); the bound keeps recursion in the
/// parser, the mapper and `Drop` far from the stack's limit on hostile input.
pub const MAX_NESTING_DEPTH: usize = 64;

type Node<'a> = MarkedYaml<'a>;

/// A validated manifest's typed fields.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) id: PodId,
    pub(crate) run_as: Option<String>,
    pub(crate) launchables: BTreeMap<LaunchableId, Launchable>,
    pub(crate) config: serde_json::Map<String, serde_json::Value>,
    pub(crate) status: Option<StatusCheck>,
    pub(crate) resource_limits: ResourceLimits,
    pub(crate) termination_grace_period: Duration,
    pub(crate) labels: BTreeMap<String, String>,
}

pub(crate) fn parse(text: &str) -> Result<Spec, ManifestError> {
    prescan(text)?;
    let docs = MarkedYaml::load_from_str(text).map_err(|e| scan_error(&e))?;
    let Some(root) = docs.first() else {
        return Err(ManifestError::Invalid(vec![FieldError {
            path: String::new(),
            kind: Kind::Missing,
            message: "the manifest is empty".into(),
            location: None,
        }]));
    };
    let mut ctx = Ctx::default();
    let spec = document(&mut ctx, root);
    match spec {
        Some(spec) if ctx.errors.is_empty() => Ok(spec),
        _ => {
            debug_assert!(
                !ctx.errors.is_empty(),
                "a rejected manifest names a problem"
            );
            // Checks run field by field; users read top to bottom.
            ctx.errors
                .sort_by_key(|e| e.location.unwrap_or((usize::MAX, 0)));
            Err(ManifestError::Invalid(ctx.errors))
        }
    }
}

fn scan_error(e: &ScanError) -> ManifestError {
    ManifestError::Yaml {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_string(),
    }
}

/// One pass over the events before building the tree: rejects excessive
/// nesting (building and dropping the tree recurse) and a second document.
fn prescan(text: &str) -> Result<(), ManifestError> {
    let mut depth = 0usize;
    let mut documents = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| scan_error(&e))?;
        let at = |message: String| ManifestError::Yaml {
            line: span.start.line(),
            column: span.start.col() + 1,
            message,
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(at(format!(
                        "nesting deeper than {MAX_NESTING_DEPTH} levels"
                    )));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(at(
                        "a manifest is one YAML document, found a second one".into()
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Default)]
struct Ctx {
    errors: Vec<FieldError>,
}

impl Ctx {
    fn report(&mut self, path: &str, at: &Node<'_>, kind: Kind, message: impl Into<String>) {
        let start = at.span.start;
        self.errors.push(FieldError {
            path: path.to_string(),
            kind,
            message: message.into(),
            location: (start.line() > 0).then(|| (start.line(), start.col() + 1)),
        });
    }

    fn wrong_type(&mut self, path: &str, at: &Node<'_>, expected: &str) {
        let found = describe(at);
        self.report(
            path,
            at,
            Kind::WrongType,
            format!("must be {expected}, found {found}"),
        );
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn describe(node: &Node<'_>) -> &'static str {
    match &node.data {
        YamlData::Value(Scalar::Null) => "null",
        YamlData::Value(Scalar::Boolean(_)) => "a boolean",
        YamlData::Value(Scalar::Integer(_)) => "an integer",
        YamlData::Value(Scalar::FloatingPoint(_)) => "a float",
        YamlData::Value(Scalar::String(_)) | YamlData::Representation(..) => "a string",
        YamlData::Sequence(_) => "a list",
        YamlData::Mapping(_) => "a mapping",
        YamlData::Tagged(..) => "a tagged value (YAML tags are not supported)",
        YamlData::Alias(_) => "an unresolved alias",
        YamlData::BadValue => "a value that does not match its tag",
    }
}

fn is_null(node: &Node<'_>) -> bool {
    matches!(node.data, YamlData::Value(Scalar::Null))
}

/// The fields of a mapping that stands for a struct; unknown fields are
/// reported (a typo must not silently drop a setting), null values count as absent.
struct Fields<'n, 'a> {
    entries: Vec<(&'n str, &'n Node<'a>)>,
}

impl<'n, 'a> Fields<'n, 'a> {
    fn get(&self, name: &str) -> Option<&'n Node<'a>> {
        self.entries
            .iter()
            .find(|(key, value)| *key == name && !is_null(value))
            .map(|(_, value)| *value)
    }
}

/// The entries of a mapping whose keys must be strings.
fn entries<'n, 'a>(
    ctx: &mut Ctx,
    path: &str,
    node: &'n Node<'a>,
) -> Option<Vec<(&'n str, &'n Node<'a>, &'n Node<'a>)>> {
    let YamlData::Mapping(mapping) = &node.data else {
        ctx.wrong_type(path, node, "a mapping");
        return None;
    };
    let mut out = Vec::with_capacity(mapping.len());
    for (key, value) in mapping {
        match &key.data {
            YamlData::Value(Scalar::String(name)) => out.push((name.as_ref(), key, value)),
            _ => ctx.report(
                path,
                key,
                Kind::WrongType,
                format!("keys must be strings, found {}", describe(key)),
            ),
        }
    }
    Some(out)
}

fn fields<'n, 'a>(
    ctx: &mut Ctx,
    path: &str,
    node: &'n Node<'a>,
    known: &[&str],
) -> Option<Fields<'n, 'a>> {
    fields_checked(ctx, path, node, Some(known))
}

/// As [`fields`]; with `known` = `None` every field is accepted.
fn fields_checked<'n, 'a>(
    ctx: &mut Ctx,
    path: &str,
    node: &'n Node<'a>,
    known: Option<&[&str]>,
) -> Option<Fields<'n, 'a>> {
    let entries = entries(ctx, path, node)?;
    let mut kept = Vec::with_capacity(entries.len());
    for (name, key, value) in entries {
        let Some(known) = known else {
            kept.push((name, value));
            continue;
        };
        if known.contains(&name) {
            kept.push((name, value));
        } else {
            ctx.report(
                &join(path, name),
                key,
                Kind::UnknownField,
                format!("unknown field; expected one of: {}", known.join(", ")),
            );
        }
    }
    Some(Fields { entries: kept })
}

fn string<'n>(ctx: &mut Ctx, path: &str, node: &'n Node<'_>) -> Option<&'n str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.as_ref()),
        _ => {
            ctx.wrong_type(path, node, "a string");
            None
        }
    }
}

/// A string, or an integer or boolean read as its decimal/`true` spelling,
/// for values that are strings to the program (env, args, labels) but that
/// users naturally write unquoted (`PORT: 8080`). Floats are refused: YAML
/// would not preserve their spelling (`1.10` would become `1.1`).
fn stringish(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<String> {
    let value = match &node.data {
        YamlData::Value(Scalar::String(s)) => s.to_string(),
        YamlData::Value(Scalar::Integer(i)) => i.to_string(),
        YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
        _ => {
            ctx.wrong_type(path, node, "a string (quote numbers like \"1.5\")");
            return None;
        }
    };
    if value.contains('\0') {
        ctx.report(path, node, Kind::InvalidValue, "must not contain NUL bytes");
        return None;
    }
    Some(value)
}

fn boolean(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<bool> {
    match &node.data {
        YamlData::Value(Scalar::Boolean(b)) => Some(*b),
        _ => {
            ctx.wrong_type(path, node, "a boolean (true or false)");
            None
        }
    }
}

fn port(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<u16> {
    match &node.data {
        YamlData::Value(Scalar::Integer(i)) => match u16::try_from(*i) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                ctx.report(
                    path,
                    node,
                    Kind::InvalidValue,
                    format!("{i} is not a TCP port (1 to 65535)"),
                );
                None
            }
        },
        _ => {
            ctx.wrong_type(path, node, "a port number");
            None
        }
    }
}

fn duration(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<Duration> {
    let text = match &node.data {
        YamlData::Value(Scalar::String(s)) => s.as_ref(),
        YamlData::Value(Scalar::Integer(_) | Scalar::FloatingPoint(_)) => {
            ctx.report(
                path,
                node,
                Kind::InvalidDuration,
                "has no unit; write e.g. \"30s\", \"2m\" or \"500ms\"",
            );
            return None;
        }
        _ => {
            ctx.wrong_type(path, node, "a duration such as \"30s\"");
            return None;
        }
    };
    match parse_duration(text) {
        Ok(d) if d <= MAX_DURATION => Some(d),
        Ok(_) => {
            ctx.report(
                path,
                node,
                Kind::InvalidDuration,
                format!("{text:?} is longer than the 24h maximum"),
            );
            None
        }
        Err(message) => {
            ctx.report(path, node, Kind::InvalidDuration, message);
            None
        }
    }
}

fn non_empty<'n>(ctx: &mut Ctx, path: &str, node: &'n Node<'_>) -> Option<&'n str> {
    let s = string(ctx, path, node)?;
    if s.trim().is_empty() {
        ctx.report(path, node, Kind::Empty, "must not be empty");
        return None;
    }
    if s.contains('\0') {
        ctx.report(path, node, Kind::InvalidValue, "must not contain NUL bytes");
        return None;
    }
    Some(s)
}

const MANIFEST_FIELDS: [&str; 10] = [
    "id",
    "run_as",
    "launchables",
    "config",
    "status_port",
    "status_http",
    "status",
    "resource_limits",
    "termination_grace_period",
    "labels",
];

fn document(ctx: &mut Ctx, root: &Node<'_>) -> Option<Spec> {
    if is_null(root) {
        ctx.report("", root, Kind::Missing, "the manifest is empty");
        return None;
    }
    let f = fields(ctx, "", root, &MANIFEST_FIELDS)?;

    let id = match f.get("id") {
        None => {
            ctx.report("id", root, Kind::Missing, "is required");
            None
        }
        Some(node) => string(ctx, "id", node).and_then(|id| match PodId::new(id) {
            Ok(id) => Some(id),
            Err(err) => {
                ctx.report("id", node, Kind::InvalidId, err.reason);
                None
            }
        }),
    };

    let run_as = f.get("run_as").and_then(|node| {
        let user = string(ctx, "run_as", node)?;
        match check_user(user) {
            Ok(()) => Some(user.to_string()),
            Err(message) => {
                ctx.report("run_as", node, Kind::InvalidValue, message);
                None
            }
        }
    });

    let launchables = match f.get("launchables") {
        None => {
            ctx.report("launchables", root, Kind::Missing, "is required");
            None
        }
        Some(node) => launchables(ctx, node),
    };

    let config = f
        .get("config")
        .and_then(|node| match json(ctx, "config", node, 1)? {
            serde_json::Value::Object(map) => Some(map),
            _ => {
                ctx.wrong_type("config", node, "a mapping");
                None
            }
        })
        .unwrap_or_default();

    let status = status(ctx, &f, root);

    let resource_limits = f
        .get("resource_limits")
        .map(|node| resource_limits(ctx, node))
        .unwrap_or_default();

    let termination_grace_period = f
        .get("termination_grace_period")
        .map_or(Some(DEFAULT_TERMINATION_GRACE_PERIOD), |node| {
            duration(ctx, "termination_grace_period", node)
        });

    let labels = f
        .get("labels")
        .and_then(|node| labels(ctx, node))
        .unwrap_or_default();

    let id = id?;
    // Writing the default out is the same manifest as leaving it out.
    let run_as = run_as.filter(|user| user != id.as_str());
    Some(Spec {
        id,
        run_as,
        launchables: launchables?,
        config,
        status: status?,
        resource_limits,
        termination_grace_period: termination_grace_period?,
        labels,
    })
}

/// POSIX portable user names: letters, digits, `.`, `_`, `-`, not starting with `-`.
fn check_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a user name (1 to 32 of letters, digits, '.', '_', '-'; not starting with '-')",
            truncate(user)
        ))
    }
}

fn launchables(ctx: &mut Ctx, node: &Node<'_>) -> Option<BTreeMap<LaunchableId, Launchable>> {
    let entries = entries(ctx, "launchables", node)?;
    if entries.is_empty() {
        ctx.report(
            "launchables",
            node,
            Kind::Empty,
            "must define at least one launchable",
        );
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, key, value) in entries {
        let path = join("launchables", name);
        let id = match LaunchableId::new(name) {
            Ok(id) => Some(id),
            Err(err) => {
                ctx.report(&path, key, Kind::InvalidId, err.reason);
                None
            }
        };
        let launchable = launchable(ctx, &path, value);
        match (id, launchable) {
            (Some(id), Some(launchable)) => {
                out.insert(id, launchable);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

const COMMON_FIELDS: [&str; 4] = ["type", "restart_policy", "restart_backoff", "env"];
const PROCESS_FIELDS: [&str; 3] = ["command", "args", "working_dir"];
const ARTIFACT_FIELDS: [&str; 3] = ["location", "sha256", "entry_point"];

fn launchable(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<Launchable> {
    let YamlData::Mapping(mapping) = &node.data else {
        ctx.wrong_type(path, node, "a mapping");
        return None;
    };
    // The type decides which other fields exist, so read it first.
    let type_path = join(path, "type");
    let type_node = mapping
        .iter()
        .find(|(k, v)| {
            matches!(&k.data, YamlData::Value(Scalar::String(s)) if s == "type") && !is_null(v)
        })
        .map(|(_, v)| v);
    let type_name = match type_node {
        None => {
            ctx.report(
                &type_path,
                node,
                Kind::Missing,
                format!("is required; one of: {}", LAUNCHABLE_TYPES.join(", ")),
            );
            None
        }
        Some(t) => match string(ctx, &type_path, t)? {
            name if LAUNCHABLE_TYPES.contains(&name) => Some(name),
            name => {
                ctx.report(
                    &type_path,
                    t,
                    Kind::UnknownType,
                    format!(
                        "unknown launchable type {:?}; accepted types: {}",
                        truncate(name),
                        LAUNCHABLE_TYPES.join(", ")
                    ),
                );
                None
            }
        },
    };
    let mut known: Vec<&str> = COMMON_FIELDS.to_vec();
    match type_name {
        Some("process") => known.extend(PROCESS_FIELDS),
        Some("artifact") => known.extend(ARTIFACT_FIELDS),
        _ => {}
    }
    // Which fields exist depends on the type: without a valid one, only the
    // type itself is reported.
    let f = fields_checked(ctx, path, node, type_name.is_some().then_some(&known[..]))?;

    let restart_policy = match f.get("restart_policy") {
        None => Some(RestartPolicy::default()),
        Some(n) => {
            let p = join(path, "restart_policy");
            string(ctx, &p, n).and_then(|s| {
                let policy = RestartPolicy::parse(s);
                if policy.is_none() {
                    ctx.report(
                        &p,
                        n,
                        Kind::InvalidValue,
                        format!(
                            "unknown restart policy {:?}; accepted: {}",
                            truncate(s),
                            RestartPolicy::NAMES.join(", ")
                        ),
                    );
                }
                policy
            })
        }
    };
    let restart_backoff = f
        .get("restart_backoff")
        .map_or(Some(DEFAULT_RESTART_BACKOFF), |n| {
            duration(ctx, &join(path, "restart_backoff"), n)
        });
    let env = match f.get("env") {
        None => Some(BTreeMap::new()),
        Some(n) => env(ctx, &join(path, "env"), n),
    };

    let kind = match type_name? {
        "process" => process(ctx, path, &f, node).map(LaunchableKind::Process),
        _ => artifact(ctx, path, &f, node).map(LaunchableKind::Artifact),
    };
    Some(Launchable {
        kind: kind?,
        restart_policy: restart_policy?,
        restart_backoff: restart_backoff?,
        env: env?,
    })
}

fn required<'n, 'a>(
    ctx: &mut Ctx,
    f: &Fields<'n, 'a>,
    path: &str,
    name: &str,
    parent: &Node<'_>,
) -> Option<&'n Node<'a>> {
    let node = f.get(name);
    if node.is_none() {
        ctx.report(&join(path, name), parent, Kind::Missing, "is required");
    }
    node
}

fn process(ctx: &mut Ctx, path: &str, f: &Fields<'_, '_>, parent: &Node<'_>) -> Option<Process> {
    let command = required(ctx, f, path, "command", parent)
        .and_then(|n| non_empty(ctx, &join(path, "command"), n).map(str::to_string));
    let args = match f.get("args") {
        None => Some(Vec::new()),
        Some(n) => {
            let p = join(path, "args");
            match &n.data {
                YamlData::Sequence(items) => {
                    let args: Vec<_> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| stringish(ctx, &format!("{p}[{i}]"), item))
                        .collect();
                    args.into_iter().collect::<Option<Vec<_>>>()
                }
                _ => {
                    ctx.wrong_type(&p, n, "a list of strings");
                    None
                }
            }
        }
    };
    let working_dir = match f.get("working_dir") {
        None => Some(None),
        Some(n) => non_empty(ctx, &join(path, "working_dir"), n).map(|s| Some(s.to_string())),
    };
    Some(Process {
        command: command?,
        args: args?,
        working_dir: working_dir?,
    })
}

fn artifact(ctx: &mut Ctx, path: &str, f: &Fields<'_, '_>, parent: &Node<'_>) -> Option<Artifact> {
    let location = required(ctx, f, path, "location", parent).and_then(|n| {
        let p = join(path, "location");
        let location = non_empty(ctx, &p, n)?;
        match check_location(location) {
            Ok(()) => Some(location.to_string()),
            Err(message) => {
                ctx.report(&p, n, Kind::InvalidValue, message);
                None
            }
        }
    });
    let sha256 = required(ctx, f, path, "sha256", parent).and_then(|n| {
        let p = join(path, "sha256");
        let YamlData::Value(Scalar::String(digest)) = &n.data else {
            ctx.wrong_type(
                &p,
                n,
                "a string of 64 hex digits (quote it if YAML reads it as a number)",
            );
            return None;
        };
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(digest.to_ascii_lowercase())
        } else {
            ctx.report(
                &p,
                n,
                Kind::InvalidDigest,
                format!(
                    "{:?} is not a sha256 digest (64 hex digits)",
                    truncate(digest)
                ),
            );
            None
        }
    });
    let entry_point = match f.get("entry_point") {
        None => Some(DEFAULT_ENTRY_POINT.to_string()),
        Some(n) => {
            let p = join(path, "entry_point");
            non_empty(ctx, &p, n).and_then(|entry| {
                let escapes = entry.starts_with('/') || entry.split('/').any(|part| part == "..");
                if escapes {
                    ctx.report(
                        &p,
                        n,
                        Kind::InvalidValue,
                        "must be a relative path inside the artifact (no leading '/', no '..')",
                    );
                    None
                } else {
                    Some(entry.to_string())
                }
            })
        }
    };
    Some(Artifact {
        location: location?,
        sha256: sha256?,
        entry_point: entry_point?,
    })
}

fn check_location(location: &str) -> Result<(), String> {
    if location
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not contain whitespace or control characters".into());
    }
    let rest = ["https://", "http://", "file://"]
        .iter()
        .find_map(|scheme| location.strip_prefix(scheme).map(|rest| (*scheme, rest)));
    match rest {
        Some(("file://", rest)) if rest.starts_with('/') && rest.len() > 1 => Ok(()),
        Some(("file://", _)) => Err("a file:// location needs an absolute path (file:///…)".into()),
        Some((_, rest)) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(format!("{:?} has no host", truncate(location))),
        None => Err(format!(
            "{:?} is not an http://, https:// or file:// URL",
            truncate(location)
        )),
    }
}

fn env(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<BTreeMap<String, String>> {
    let entries = entries(ctx, path, node)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, key, value) in entries {
        let p = join(path, name);
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            ctx.report(
                &p,
                key,
                Kind::InvalidValue,
                "is not an environment variable name (letters, digits and '_', not starting with a digit)",
            );
            ok = false;
        }
        match stringish(ctx, &p, value) {
            Some(v) => {
                out.insert(name.to_string(), v);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// The keys of the `status` stanza.
const STATUS_FIELDS: [&str; 10] = [
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
];

fn status(ctx: &mut Ctx, f: &Fields<'_, '_>, root: &Node<'_>) -> Option<Option<StatusCheck>> {
    let mut ok = true;
    let short_port = f
        .get("status_port")
        .map(|n| (n, port(ctx, "status_port", n)));
    let short_http = f
        .get("status_http")
        .map(|n| (n, boolean(ctx, "status_http", n)));
    let nested = f.get("status");
    let s = match nested {
        Some(node) => match fields(ctx, "status", node, &STATUS_FIELDS) {
            Some(s) => Some(s),
            None => return None,
        },
        None => None,
    };
    let get = |name: &str| s.as_ref().and_then(|s| s.get(name));
    let nested_port = get("port").map(|n| (n, port(ctx, "status.port", n)));
    let http = get("http").map(|n| (n, boolean(ctx, "status.http", n)));
    let localhost_only = get("localhost_only").map(|n| boolean(ctx, "status.localhost_only", n));
    let tcp = get("tcp").map(|n| (n, boolean(ctx, "status.tcp", n)));
    let path = get("path").map(|n| {
        (
            n,
            non_empty(ctx, "status.path", n).and_then(|p| {
                if p.starts_with('/') {
                    Some(p.to_string())
                } else {
                    ctx.report(
                        "status.path",
                        n,
                        Kind::InvalidValue,
                        format!("{:?} must start with '/'", truncate(p)),
                    );
                    None
                }
            }),
        )
    });
    let exec = get("exec").map(|n| (n, exec_command(ctx, n)));
    let period = get("period").map(|n| probe_interval(ctx, "status.period", n, MIN_PROBE_PERIOD));
    let timeout =
        get("timeout").map(|n| probe_interval(ctx, "status.timeout", n, Duration::from_millis(1)));
    let failure_threshold =
        get("failure_threshold").map(|n| probe_threshold(ctx, "status.failure_threshold", n));
    let success_threshold =
        get("success_threshold").map(|n| probe_threshold(ctx, "status.success_threshold", n));

    if let (Some((n, _)), Some(_)) = (short_port, nested_port) {
        ctx.report(
            "status_port",
            n,
            Kind::Conflict,
            "conflicts with status.port; set the port in one place",
        );
        ok = false;
    }
    if let (Some((n, _)), Some(_)) = (short_http, http) {
        ctx.report(
            "status_http",
            n,
            Kind::Conflict,
            "conflicts with status.http; set it in one place",
        );
        ok = false;
    }
    let http = http.or(short_http);
    let port = nested_port.or(short_port);
    let is_tcp = matches!(tcp, Some((_, Some(true))));
    // Each probe kind takes its own fields; a field of another kind is a
    // contradiction, not something to ignore.
    if let Some((exec_node, _)) = exec {
        let others = [
            ("status.port", port.map(|(n, _)| n)),
            ("status.path", path.as_ref().map(|(n, _)| *n)),
            ("status.http", http.map(|(n, _)| n)),
            ("status.tcp", tcp.map(|(n, _)| n)),
            ("status.localhost_only", get("localhost_only")),
        ];
        for (name, node) in others {
            if node.is_some() {
                ctx.report(
                    "status.exec",
                    exec_node,
                    Kind::Conflict,
                    format!(
                        "conflicts with {name}: an exec probe runs a command and probes no port"
                    ),
                );
                ok = false;
            }
        }
    }
    if is_tcp {
        for (name, node) in [
            ("status.path", path.as_ref().map(|(n, _)| *n)),
            ("status.http", http.map(|(n, _)| n)),
        ] {
            if let Some(node) = node {
                ctx.report(
                    name,
                    node,
                    Kind::Conflict,
                    "conflicts with status.tcp: a TCP probe only connects",
                );
                ok = false;
            }
        }
    }

    let anything_set = nested.is_some() || short_http.is_some();
    if !anything_set && short_port.is_none() {
        return ok.then_some(None);
    }
    let probe = if let Some((_, command)) = exec {
        Probe::Exec { command: command? }
    } else {
        let Some((_, port)) = port else {
            ctx.report(
                "status.port",
                nested.unwrap_or(root),
                Kind::Missing,
                "is required when a status check is configured (or give status.exec)",
            );
            return None;
        };
        let localhost_only = localhost_only.unwrap_or(Some(false))?;
        if is_tcp {
            Probe::Tcp {
                port: port?,
                localhost_only,
            }
        } else {
            Probe::Http {
                port: port?,
                path: path.map_or_else(|| Some(DEFAULT_STATUS_PATH.into()), |(_, p)| p)?,
                http: http.map_or(Some(false), |(_, h)| h)?,
                localhost_only,
            }
        }
    };
    tcp.map_or(Some(false), |(_, t)| t)?;
    let check = StatusCheck {
        probe,
        period: optional(period)?,
        timeout: optional(timeout)?,
        failure_threshold: optional(failure_threshold)?,
        success_threshold: optional(success_threshold)?,
    };
    ok.then_some(Some(check))
}

/// An optional field's outcome: absent is `Some(None)`, present but
/// invalid (already reported) is `None`.
fn optional<T>(field: Option<Option<T>>) -> Option<Option<T>> {
    field.map_or(Some(None), |value| value.map(Some))
}

/// `status.exec`: a non-empty list of strings, the program first.
fn exec_command(ctx: &mut Ctx, node: &Node<'_>) -> Option<Vec<String>> {
    let p = "status.exec";
    let YamlData::Sequence(items) = &node.data else {
        ctx.wrong_type(p, node, "a list: the program, then its arguments");
        return None;
    };
    if items.is_empty() {
        ctx.report(p, node, Kind::Empty, "must name the program to run");
        return None;
    }
    let command: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, item)| stringish(ctx, &format!("{p}[{i}]"), item))
        .collect();
    let command = command.into_iter().collect::<Option<Vec<_>>>()?;
    if command[0].trim().is_empty() {
        ctx.report(p, &items[0], Kind::Empty, "the program must not be empty");
        return None;
    }
    Some(command)
}

fn probe_interval(ctx: &mut Ctx, path: &str, node: &Node<'_>, min: Duration) -> Option<Duration> {
    let d = duration(ctx, path, node)?;
    if d < min || d > MAX_PROBE_INTERVAL {
        ctx.report(
            path,
            node,
            Kind::InvalidDuration,
            format!(
                "must be between {} and {}",
                crate::units::format_duration(min),
                crate::units::format_duration(MAX_PROBE_INTERVAL)
            ),
        );
        return None;
    }
    Some(d)
}

fn probe_threshold(ctx: &mut Ctx, path: &str, node: &Node<'_>) -> Option<u32> {
    match &node.data {
        YamlData::Value(Scalar::Integer(i)) => match u32::try_from(*i) {
            Ok(n) if (1..=MAX_PROBE_THRESHOLD).contains(&n) => Some(n),
            _ => {
                ctx.report(
                    path,
                    node,
                    Kind::InvalidValue,
                    format!("{i} is out of range (1 to {MAX_PROBE_THRESHOLD})"),
                );
                None
            }
        },
        _ => {
            ctx.wrong_type(path, node, "a whole number");
            None
        }
    }
}

fn resource_limits(ctx: &mut Ctx, node: &Node<'_>) -> ResourceLimits {
    let Some(f) = fields(ctx, "resource_limits", node, &["cpus", "memory"]) else {
        return ResourceLimits::default();
    };
    let cpus = f.get("cpus").and_then(|n| {
        let p = "resource_limits.cpus";
        let parsed = match &n.data {
            YamlData::Value(Scalar::Integer(i)) => Cpus::parse(&i.to_string()),
            YamlData::Value(Scalar::FloatingPoint(x)) => Cpus::from_f64(x.0),
            YamlData::Value(Scalar::String(s)) => Cpus::parse(s),
            _ => {
                ctx.wrong_type(p, n, "a number of CPUs");
                return None;
            }
        };
        parsed
            .map_err(|message| ctx.report(p, n, Kind::InvalidSize, message))
            .ok()
    });
    let memory = f.get("memory").and_then(|n| {
        let p = "resource_limits.memory";
        let parsed = match &n.data {
            YamlData::Value(Scalar::Integer(i)) => ByteSize::parse(&i.to_string()),
            YamlData::Value(Scalar::String(s)) => ByteSize::parse(s),
            _ => {
                ctx.wrong_type(p, n, "a size such as \"512M\"");
                return None;
            }
        };
        match parsed {
            Ok(size) if size.as_u64() > 0 => Some(size),
            Ok(_) => {
                ctx.report(p, n, Kind::InvalidSize, "must be more than 0 bytes");
                None
            }
            Err(message) => {
                ctx.report(p, n, Kind::InvalidSize, message);
                None
            }
        }
    });
    ResourceLimits { cpus, memory }
}

fn labels(ctx: &mut Ctx, node: &Node<'_>) -> Option<BTreeMap<String, String>> {
    let entries = entries(ctx, "labels", node)?;
    let mut out = BTreeMap::new();
    for (name, key, value) in entries {
        let p = join("labels", name);
        if let Err(message) = check_label_key(name) {
            ctx.report(&p, key, Kind::InvalidValue, message);
            continue;
        }
        let Some(value_text) = stringish(ctx, &p, value) else {
            continue;
        };
        if let Err(message) = check_label_value(&value_text) {
            ctx.report(&p, value, Kind::InvalidValue, message);
            continue;
        }
        out.insert(name.to_string(), value_text);
    }
    Some(out)
}

/// Label keys and values follow the one Kubernetes grammar of `drover-labels`,
/// so a label a manifest accepts is one a selector can name.
fn check_label_key(key: &str) -> Result<(), String> {
    drover_labels::name::validate_key(key).map_err(|reason| {
        format!(
            "{:?} is not a label key ([prefix/]name): {reason}",
            truncate(key)
        )
    })
}

fn check_label_value(value: &str) -> Result<(), String> {
    drover_labels::name::validate_value(value)
        .map_err(|reason| format!("{:?} is not a label value: {reason}", truncate(value)))
}

/// `config` as a JSON value: string keys, finite numbers, no tags, so that it
/// has one canonical form and can be written to the pod as YAML or JSON.
fn json(ctx: &mut Ctx, path: &str, node: &Node<'_>, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value;
    // Aliases can nest deeper than the text does; bound the recursion here too.
    if depth > MAX_NESTING_DEPTH {
        ctx.report(
            path,
            node,
            Kind::InvalidValue,
            format!("nests deeper than {MAX_NESTING_DEPTH} levels"),
        );
        return None;
    }
    match &node.data {
        YamlData::Value(Scalar::Null) => Some(Value::Null),
        YamlData::Value(Scalar::Boolean(b)) => Some(Value::Bool(*b)),
        YamlData::Value(Scalar::Integer(i)) => Some(Value::from(*i)),
        YamlData::Value(Scalar::FloatingPoint(x)) => {
            let number = serde_json::Number::from_f64(x.0);
            if number.is_none() {
                ctx.report(
                    path,
                    node,
                    Kind::InvalidValue,
                    "must be a finite number (.nan and .inf have no canonical form)",
                );
            }
            number.map(Value::Number)
        }
        YamlData::Value(Scalar::String(s)) => Some(Value::String(s.to_string())),
        YamlData::Sequence(items) => {
            let items: Vec<_> = items
                .iter()
                .enumerate()
                .map(|(i, item)| json(ctx, &format!("{path}[{i}]"), item, depth + 1))
                .collect();
            items
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }
        YamlData::Mapping(_) => {
            let entries = entries(ctx, path, node)?;
            let mut map = serde_json::Map::new();
            let mut ok = true;
            for (name, _, value) in entries {
                match json(ctx, &join(path, name), value, depth + 1) {
                    Some(v) => {
                        map.insert(name.to_string(), v);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(Value::Object(map))
        }
        _ => {
            ctx.wrong_type(path, node, "plain data");
            None
        }
    }
}
