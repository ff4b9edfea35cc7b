//! `orchestrator rc ...`: a client of `RcService`. Each subcommand is one
//! call (`watch` a stream); answers are checked (`TryFrom`) and printed as
//! tables for people or as JSON or YAML for programs. A refused call prints
//! the server's message and exits non-zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use comfy_table::{Table, TableComponent};
use drover_api::RcInfo;
use drover_api::pb::orchestrator::v1 as pb;
use drover_api::pb::orchestrator::v1::rc_service_client::RcServiceClient;
use drover_api::rc::RcWatchEvent;
use drover_rc_farm::audit::AuditRecord;
use drover_rc_farm::scheduler::Strategy;
use drover_rc_farm::status::RcStatus;
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::{OutputFormat, RcArgs, RcCommand};

pub(crate) async fn run(args: RcArgs) -> anyhow::Result<()> {
    let RcArgs {
        client,
        output,
        command,
    } = args;
    // Read the file before connecting: a typo in its name fails without a
    // round trip, and stdin is read once whatever happens next.
    let yaml = match &command {
        RcCommand::Create { file } | RcCommand::Update { file, .. } => {
            Some(read_rc_file(file).await?)
        }
        _ => None,
    };
    let channel = crate::tls::connect(&client).await?;
    let rc = Client {
        client: RcServiceClient::new(channel),
        server: client.server,
    };
    let out = Printer { format: output };
    match command {
        RcCommand::Create { .. } => {
            let yaml = yaml.unwrap_or_default();
            let info: RcInfo = rc
                .call("CreateRc", |mut c| async move {
                    c.create_rc(pb::CreateRcRequest { yaml }).await
                })
                .await?;
            out.rc_changed(&info, &format!("created (revision {})", info.revision))
        }
        RcCommand::Update { revision, .. } => {
            let yaml = yaml.unwrap_or_default();
            let info: RcInfo = rc
                .call("UpdateRc", |mut c| async move {
                    c.update_rc(pb::UpdateRcRequest {
                        yaml,
                        // 0: no pin (revisions start at 1).
                        expected_revision: revision.unwrap_or(0),
                    })
                    .await
                })
                .await?;
            out.rc_changed(&info, &format!("updated (revision {})", info.revision))
        }
        RcCommand::Get { id } => {
            let info: RcInfo = rc
                .call("GetRc", |mut c| async move {
                    c.get_rc(pb::GetRcRequest { id }).await
                })
                .await?;
            out.rc_detail(&info)
        }
        RcCommand::List { selector } => {
            let rcs: Vec<RcInfo> = rc
                .call("ListRcs", |mut c| async move {
                    c.list_rcs(pb::ListRcsRequest { selector }).await
                })
                .await?;
            out.rc_list(&rcs)
        }
        RcCommand::Scale { id, replicas } => {
            let info: RcInfo = rc
                .call("ScaleRc", |mut c| async move {
                    c.scale_rc(pb::ScaleRcRequest { id, replicas }).await
                })
                .await?;
            out.rc_changed(
                &info,
                &format!(
                    "scaled to {} (revision {})",
                    info.spec.replicas_desired, info.revision
                ),
            )
        }
        RcCommand::Enable { id } => {
            let info: RcInfo = rc
                .call("EnableRc", |mut c| async move {
                    c.enable_rc(pb::EnableRcRequest { id }).await
                })
                .await?;
            out.rc_changed(&info, &format!("enabled (revision {})", info.revision))
        }
        RcCommand::Disable { id } => {
            let info: RcInfo = rc
                .call("DisableRc", |mut c| async move {
                    c.disable_rc(pb::DisableRcRequest { id }).await
                })
                .await?;
            out.rc_changed(&info, &format!("disabled (revision {})", info.revision))
        }
        RcCommand::Delete { id, force } => {
            let info: RcInfo = rc
                .call("DeleteRc", |mut c| async move {
                    c.delete_rc(pb::DeleteRcRequest { id, force }).await
                })
                .await?;
            out.rc_changed(
                &info,
                &format!(
                    "marked for deletion (revision {}): its farm removes its pods, then the RC",
                    info.revision
                ),
            )
        }
        RcCommand::Transfer { from, to, count } => {
            let (from, to): (RcInfo, RcInfo) = rc
                .call("TransferReplicas", |mut c| async move {
                    c.transfer_replicas(pb::TransferReplicasRequest {
                        from_id: from,
                        to_id: to,
                        count,
                    })
                    .await
                })
                .await?;
            out.transferred(count, &from, &to)
        }
        RcCommand::Audit { id, limit } => {
            let records: Vec<AuditRecord> = rc
                .call("ListAudit", |mut c| async move {
                    c.list_audit(pb::ListAuditRequest {
                        rc_id: id.unwrap_or_default(),
                        limit: limit.unwrap_or(0),
                    })
                    .await
                })
                .await?;
            out.audit(&records)
        }
        RcCommand::Watch { id } => rc.watch(id.unwrap_or_default(), &out).await,
    }
}

/// The RC's YAML from a file, or from standard input for `-`.
async fn read_rc_file(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        // std's blocking read on a blocking thread: tokio's own stdin is
        // the same underneath, behind a feature the workspace does not need.
        let read = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()));
        return read
            .await
            .context("reading standard input")?
            .context("-f -: reading the RC from standard input");
    }
    tokio::fs::read_to_string(file)
        .await
        .with_context(|| format!("-f: reading {}", file.display()))
}

/// A connected `RcService` client and the address it was given (for
/// messages).
struct Client {
    client: RcServiceClient<Channel>,
    server: String,
}

impl Client {
    /// Makes one call and checks its answer. A refusal becomes an error
    /// carrying the server's code and message as they are (they name the
    /// field at fault).
    async fn call<R, T, F, Fut>(&self, method: &str, call: F) -> anyhow::Result<T>
    where
        F: FnOnce(RcServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
        T: TryFrom<R, Error = drover_api::ProtocolError>,
    {
        let response = call(self.client.clone())
            .await
            .map_err(|status| refused(method, &status))?;
        T::try_from(response.into_inner())
            .with_context(|| format!("{} sent an invalid {method} response", self.server))
    }

    /// Prints the statuses, then each change, until Ctrl-C (a success) or
    /// until the server ends the stream (a failure: the watch stopped).
    async fn watch(self, id: String, out: &Printer) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        let mut stream = client
            .watch_rcs(pb::WatchRcsRequest { id })
            .await
            .map_err(|status| refused("WatchRcs", &status))?
            .into_inner();
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                interrupted = tokio::signal::ctrl_c() => {
                    interrupted.context("waiting for Ctrl-C")?;
                    return Ok(());
                }
            };
            let Some(message) = message.map_err(|status| refused("WatchRcs", &status))? else {
                anyhow::bail!("{} ended the watch", self.server);
            };
            let event = RcWatchEvent::try_from(message)
                .with_context(|| format!("{} sent an invalid WatchRcs message", self.server))?;
            out.watch_event(&event)?;
        }
    }
}

/// The error of a call the server refused or could not make.
fn refused(method: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{method}: {:?}: {}", status.code(), status.message())
}

// ---------------------------------------------------------------------------
// What is printed.

/// An RC as `-o json|yaml` prints it: the fields of `orchestrator.v1.Rc`.
#[derive(Serialize)]
struct RcView<'a> {
    spec: SpecView<'a>,
    revision: i64,
    created_revision: i64,
    status: Option<&'a RcStatus>,
}

#[derive(Serialize)]
struct SpecView<'a> {
    id: &'a str,
    labels: BTreeMap<&'a str, &'a str>,
    replicas_desired: u32,
    node_selector: String,
    pod_labels: &'a BTreeMap<String, String>,
    disabled: bool,
    deleting: bool,
    placement: PlacementView<'a>,
    manifest_sha: String,
    manifest_yaml: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct PlacementView<'a> {
    spread_by: Option<&'a str>,
    strategy: &'static str,
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Spread => "spread",
        Strategy::BinPack => "bin-pack",
    }
}

impl<'a> RcView<'a> {
    fn of(info: &'a RcInfo) -> Self {
        let spec = &info.spec;
        RcView {
            spec: SpecView {
                id: spec.id.as_ref(),
                labels: spec.labels.iter().collect(),
                replicas_desired: spec.replicas_desired,
                node_selector: spec.node_selector.to_string(),
                pod_labels: &spec.pod_labels,
                disabled: spec.disabled,
                deleting: spec.deleting,
                placement: PlacementView {
                    spread_by: spec.placement.spread_by.as_deref(),
                    strategy: strategy_name(spec.placement.strategy),
                },
                manifest_sha: spec.manifest.sha().to_string(),
                manifest_yaml: String::from_utf8_lossy(spec.manifest.raw_bytes()),
            },
            revision: info.revision,
            created_revision: info.created_revision,
            status: info.status.as_ref(),
        }
    }
}

/// One `watch` event as `-o json|yaml` prints it.
#[derive(Serialize)]
struct EventView<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    revision: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a RcStatus>,
}

impl<'a> EventView<'a> {
    fn of(event: &'a RcWatchEvent) -> Self {
        match event {
            RcWatchEvent::Existing {
                id,
                status,
                revision,
            } => EventView {
                kind: "existing",
                id: Some(id.as_ref()),
                revision: *revision,
                status: Some(status),
            },
            RcWatchEvent::Synced { revision } => EventView {
                kind: "synced",
                id: None,
                revision: *revision,
                status: None,
            },
            RcWatchEvent::Updated {
                id,
                status,
                revision,
            } => EventView {
                kind: "updated",
                id: Some(id.as_ref()),
                revision: *revision,
                status: Some(status),
            },
            RcWatchEvent::Deleted { id, revision } => EventView {
                kind: "deleted",
                id: Some(id.as_ref()),
                revision: *revision,
                status: None,
            },
        }
    }
}

/// Prints in the chosen format. Tables and sentences go to stdout; so do
/// JSON and YAML, and nothing else does, so they can be piped.
struct Printer {
    format: OutputFormat,
}

impl Printer {
    /// `value` as JSON or YAML; `None` for the table format.
    fn machine<T: Serialize>(&self, value: &T) -> anyhow::Result<Option<String>> {
        Ok(match self.format {
            OutputFormat::Table => None,
            OutputFormat::Json => Some(serde_json::to_string_pretty(value)? + "\n"),
            OutputFormat::Yaml => Some(serde_yaml_ng::to_string(value)?),
        })
    }

    fn print(&self, text: &str) {
        print!("{text}");
    }

    fn rc_changed(&self, info: &RcInfo, what: &str) -> anyhow::Result<()> {
        match self.machine(&RcView::of(info))? {
            Some(text) => self.print(&text),
            None => println!("rc {} {what}", info.spec.id),
        }
        Ok(())
    }

    fn rc_detail(&self, info: &RcInfo) -> anyhow::Result<()> {
        match self.machine(&RcView::of(info))? {
            Some(text) => self.print(&text),
            None => self.print(&render_detail(info)),
        }
        Ok(())
    }

    fn rc_list(&self, rcs: &[RcInfo]) -> anyhow::Result<()> {
        let views: Vec<RcView<'_>> = rcs.iter().map(RcView::of).collect();
        match self.machine(&views)? {
            Some(text) => self.print(&text),
            None if rcs.is_empty() => println!("no replication controllers"),
            None => self.print(&render_list(rcs)),
        }
        Ok(())
    }

    fn transferred(&self, count: u32, from: &RcInfo, to: &RcInfo) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct Transfer<'a> {
            from: RcView<'a>,
            to: RcView<'a>,
        }
        let view = Transfer {
            from: RcView::of(from),
            to: RcView::of(to),
        };
        match self.machine(&view)? {
            Some(text) => self.print(&text),
            None => println!(
                "moved {count} replicas from {} (now {}) to {} (now {})",
                from.spec.id, from.spec.replicas_desired, to.spec.id, to.spec.replicas_desired
            ),
        }
        Ok(())
    }

    fn audit(&self, records: &[AuditRecord]) -> anyhow::Result<()> {
        match self.machine(&records)? {
            Some(text) => self.print(&text),
            None if records.is_empty() => println!("no audit records"),
            None => self.print(&render_audit(records)),
        }
        Ok(())
    }

    /// One line per event (JSON: one object per line; YAML: one document
    /// each), flushed at once, so a pipe sees each change as it happens.
    fn watch_event(&self, event: &RcWatchEvent) -> anyhow::Result<()> {
        let view = EventView::of(event);
        match self.format {
            OutputFormat::Json => println!("{}", serde_json::to_string(&view)?),
            OutputFormat::Yaml => print!("---\n{}", serde_yaml_ng::to_string(&view)?),
            OutputFormat::Table => match render_event(event) {
                Some(line) => println!("{line}"),
                // Not a status: said on stderr, so stdout stays one line
                // per status.
                None => eprintln!(
                    "(statuses as of revision {}; changes follow until Ctrl-C)",
                    event_revision(event)
                ),
            },
        }
        use std::io::Write;
        std::io::stdout().flush().context("writing to stdout")
    }
}

fn event_revision(event: &RcWatchEvent) -> i64 {
    match event {
        RcWatchEvent::Existing { revision, .. }
        | RcWatchEvent::Synced { revision }
        | RcWatchEvent::Updated { revision, .. }
        | RcWatchEvent::Deleted { revision, .. } => *revision,
    }
}

/// A borderless table, columns two spaces apart (as `kubectl get`).
fn table() -> Table {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    for component in [TableComponent::LeftBorder, TableComponent::RightBorder] {
        table.remove_style(component);
    }
    table
}

/// The table's text, each line without trailing blanks.
fn finish(table: &mut Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

fn map_text<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let text: Vec<String> = pairs.map(|(k, v)| format!("{k}={v}")).collect();
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.join(",")
    }
}

fn state_text(info: &RcInfo) -> &'static str {
    if info.spec.deleting {
        "deleting"
    } else if info.spec.disabled {
        "disabled"
    } else {
        "enabled"
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn render_list(rcs: &[RcInfo]) -> String {
    let mut t = table();
    t.set_header(vec![
        "ID", "DESIRED", "CURRENT", "READY", "HEALTHY", "STATE", "SELECTOR", "LABELS", "REVISION",
    ]);
    for info in rcs {
        let counts = match &info.status {
            Some(s) => [s.current, s.ready, s.healthy].map(|n| n.to_string()),
            None => ["-", "-", "-"].map(str::to_owned),
        };
        let selector = info.spec.node_selector.to_string();
        let [current, ready, healthy] = counts;
        t.add_row(vec![
            info.spec.id.to_string(),
            info.spec.replicas_desired.to_string(),
            current,
            ready,
            healthy,
            state_text(info).to_owned(),
            if selector.is_empty() {
                "(every node)".to_owned()
            } else {
                selector
            },
            map_text(info.spec.labels.iter()),
            info.revision.to_string(),
        ]);
    }
    finish(&mut t)
}

fn render_detail(info: &RcInfo) -> String {
    let spec = &info.spec;
    let mut t = table();
    let selector = spec.node_selector.to_string();
    let mut rows: Vec<(&str, String)> = vec![
        ("id", spec.id.to_string()),
        ("state", state_text(info).to_owned()),
        ("replicas desired", spec.replicas_desired.to_string()),
        (
            "node selector",
            if selector.is_empty() {
                "(every node)".to_owned()
            } else {
                selector
            },
        ),
        ("labels", map_text(spec.labels.iter())),
        (
            "pod labels",
            map_text(
                spec.pod_labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            ),
        ),
        (
            "placement",
            match &spec.placement.spread_by {
                Some(by) => format!("spread by {by}, {}", strategy_name(spec.placement.strategy)),
                None => strategy_name(spec.placement.strategy).to_owned(),
            },
        ),
        ("pod", spec.manifest.id().to_string()),
        ("manifest sha", spec.manifest.sha().to_string()),
        ("revision", info.revision.to_string()),
        ("created revision", info.created_revision.to_string()),
    ];
    match &info.status {
        None => rows.push(("status", "none yet: no farm has reported on it".to_owned())),
        Some(s) => {
            rows.push((
                "replicas",
                format!(
                    "{} desired, {} current, {} ready, {} healthy",
                    s.desired, s.current, s.ready, s.healthy
                ),
            ));
            for c in &s.conditions {
                let mark = if c.ok { "yes" } else { "no" };
                let reason = if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.reason)
                };
                rows.push(("condition", format!("{} {mark}{reason}", c.kind)));
            }
            if let Some(err) = &s.last_error {
                rows.push(("last error", err.clone()));
            }
            rows.push(("owner", format!("{} (token {})", s.owner, s.token)));
            rows.push((
                "status of",
                format!(
                    "revision {}, written {}",
                    s.observed_revision,
                    rfc3339(s.updated_at_ms)
                ),
            ));
        }
    }
    for (name, value) in rows {
        t.add_row(vec![format!("{name}:"), value]);
    }
    finish(&mut t)
}

/// What an audit record changed, in a few words: the top-level fields whose
/// values differ, with their values shortened.
fn change_summary(record: &AuditRecord) -> String {
    fn short(value: Option<&serde_json::Value>) -> String {
        let text = match value {
            None => "-".to_owned(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let text = text.replace('\n', " ");
        if text.chars().count() > 32 {
            format!("{}...", text.chars().take(29).collect::<String>())
        } else {
            text
        }
    }
    match (&record.before, &record.after) {
        (None, Some(_)) => "created".to_owned(),
        (Some(_), None) => "removed".to_owned(),
        (Some(serde_json::Value::Object(before)), Some(serde_json::Value::Object(after))) => {
            let keys: std::collections::BTreeSet<&String> =
                before.keys().chain(after.keys()).collect();
            let changes: Vec<String> = keys
                .into_iter()
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| format!("{k}: {} -> {}", short(before.get(k)), short(after.get(k))))
                .collect();
            if changes.is_empty() {
                "no change".to_owned()
            } else {
                changes.join("; ")
            }
        }
        _ => "-".to_owned(),
    }
}

fn render_audit(records: &[AuditRecord]) -> String {
    let mut t = table();
    t.set_header(vec!["AT", "WHO", "ACTION", "RCS", "CHANGE"]);
    for r in records {
        t.add_row(vec![
            rfc3339(r.at_ms),
            r.who.clone(),
            r.action.as_str().to_owned(),
            r.rcs.join(","),
            change_summary(r),
        ]);
    }
    finish(&mut t)
}

/// A status event as one line; `None` for the SYNCED marker.
fn render_event(event: &RcWatchEvent) -> Option<String> {
    let line = |kind: &str, id: &str, s: &RcStatus| {
        let mut line = format!(
            "{kind:<8} {id}  desired={} current={} ready={} healthy={}",
            s.desired, s.current, s.ready, s.healthy
        );
        let failing: Vec<&str> = s
            .conditions
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.kind.as_str())
            .collect();
        if !failing.is_empty() {
            line.push_str(&format!(" not:{}", failing.join(",")));
        }
        if let Some(err) = &s.last_error {
            line.push_str(&format!(" error={err:?}"));
        }
        line
    };
    match event {
        RcWatchEvent::Existing { id, status, .. } => Some(line("existing", id.as_ref(), status)),
        RcWatchEvent::Updated { id, status, .. } => Some(line("updated", id.as_ref(), status)),
        RcWatchEvent::Deleted { id, .. } => Some(format!("{:<8} {id}", "deleted")),
        RcWatchEvent::Synced { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_rc_farm::RcSpec;
    use drover_rc_farm::audit::AuditAction;
    use drover_rc_farm::status::Condition;

    fn info(id: &str, status: Option<RcStatus>) -> RcInfo {
        let yaml = format!(
            "id: {id}\nlabels: {{ team: shop }}\nreplicas_desired: 3\nnode_selector: zone=a\n\
             manifest:\n  id: {id}\n  launchables: {{ s: {{ type: process, command: /bin/x }} }}\n"
        );
        RcInfo {
            spec: RcSpec::from_yaml(&yaml).unwrap(),
            revision: 12,
            created_revision: 4,
            status,
        }
    }

    fn status() -> RcStatus {
        RcStatus {
            desired: 3,
            current: 3,
            ready: 2,
            healthy: 1,
            conditions: vec![Condition {
                kind: "Ready".into(),
                ok: false,
                reason: "1 of 3 passing".into(),
            }],
            last_error: None,
            owner: "farm-a".into(),
            token: 9,
            observed_revision: 12,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_list_is_a_borderless_table_with_a_dash_for_unreported_counts() {
        let text = render_list(&[info("db", None), info("web", Some(status()))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[0]),
            [
                "ID", "DESIRED", "CURRENT", "READY", "HEALTHY", "STATE", "SELECTOR", "LABELS",
                "REVISION"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "db",
                "3",
                "-",
                "-",
                "-",
                "enabled",
                "zone=a",
                "team=shop",
                "12"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            [
                "web",
                "3",
                "3",
                "2",
                "1",
                "enabled",
                "zone=a",
                "team=shop",
                "12"
            ]
        );
        assert!(
            lines
                .iter()
                .all(|l| !l.starts_with(' ') && !l.ends_with(' '))
        );
    }

    #[test]
    fn detail_shows_the_status_and_its_conditions() {
        let text = render_detail(&info("web", Some(status())));
        assert!(text.contains("replicas desired:  3"), "{text}");
        assert!(
            text.contains("3 desired, 3 current, 2 ready, 1 healthy"),
            "{text}"
        );
        assert!(text.contains("Ready no: 1 of 3 passing"), "{text}");
        assert!(text.contains("1970-01-01T00:00:00Z"), "{text}");
        let bare = render_detail(&info("web", None));
        assert!(bare.contains("no farm has reported"), "{bare}");
    }

    #[test]
    fn audit_changes_are_summarised_by_field() {
        let record = |before, after| AuditRecord {
            id: "01".into(),
            at_ms: 0,
            who: "CN=alice".into(),
            action: AuditAction::Scale,
            rcs: vec!["web".into()],
            before,
            after,
        };
        let scaled = record(
            Some(serde_json::json!({"id": "web", "replicas_desired": 1})),
            Some(serde_json::json!({"id": "web", "replicas_desired": 5})),
        );
        assert_eq!(change_summary(&scaled), "replicas_desired: 1 -> 5");
        assert_eq!(
            change_summary(&record(None, Some(serde_json::json!({})))),
            "created"
        );
        let long = record(
            Some(serde_json::json!({"manifest": "a".repeat(100)})),
            Some(serde_json::json!({"manifest": "b"})),
        );
        assert_eq!(
            change_summary(&long),
            format!("manifest: {}... -> b", "a".repeat(29))
        );
        let text = render_audit(&[scaled]);
        assert!(text.starts_with("AT"), "{text}");
        assert!(text.contains("CN=alice"), "{text}");
    }

    #[test]
    fn watch_lines_name_the_rc_and_its_counts() {
        let web: drover_ids::RcId = "web".parse().unwrap();
        let line = render_event(&RcWatchEvent::Updated {
            id: web.clone(),
            status: status(),
            revision: 3,
        })
        .unwrap();
        assert_eq!(
            line,
            "updated  web  desired=3 current=3 ready=2 healthy=1 not:Ready"
        );
        assert_eq!(
            render_event(&RcWatchEvent::Deleted {
                id: web,
                revision: 4
            })
            .unwrap(),
            "deleted  web"
        );
        assert!(render_event(&RcWatchEvent::Synced { revision: 2 }).is_none());
    }

    #[test]
    fn machine_output_mirrors_the_api_message() {
        let rc = info("web", Some(status()));
        let json: serde_json::Value = serde_json::to_value(RcView::of(&rc)).unwrap();
        assert_eq!(json["spec"]["id"], "web");
        assert_eq!(json["spec"]["replicas_desired"], 3);
        assert_eq!(json["spec"]["labels"]["team"], "shop");
        assert_eq!(json["spec"]["placement"]["strategy"], "spread");
        assert_eq!(json["revision"], 12);
        assert_eq!(json["status"]["healthy"], 1);
        assert_eq!(
            json["spec"]["manifest_sha"],
            rc.spec.manifest.sha().to_string()
        );
    }
}
