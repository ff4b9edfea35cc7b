//! The layering check: the architecture invariants that `cargo tree` can
//! prove (see ARCHITECTURE.md).
//!
//! - The pure crates (manifest, labels, health, ids) depend on neither tokio
//!   nor the store nor the metrics facade, transitively.
//! - The metrics facade (`drover-metrics`) depends on neither tokio nor the
//!   store, transitively: any component can take it without a runtime.
//! - Only `drover-store-etcd` depends on `etcd-client` directly.
//! - Among the library and binary crates, only `drover-api`,
//!   `drover-etcd-api` (etcd's v3 API served over the store) and
//!   `orchestrator` depend directly on protobuf or tonic crates (the
//!   end-to-end `drover-tests` is a gRPC client; `drover-api-codegen` and
//!   `xtask` generate code; `drover-store-etcd` reads the `tonic::Status`
//!   inside etcd-client's errors).
//! - Controllers and the runtime see the store only through the `Store`
//!   trait: `drover-store-etcd` is at most their dev-dependency. The runtime
//!   also knows no controller's domain (manifests, labels, health, election)
//!   and no API.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cmd;

/// Pure crates: (package, directory).
const PURE: &[(&str, &str)] = &[
    ("drover-manifest", "crates/manifest"),
    ("drover-labels", "crates/labels"),
    ("drover-health", "crates/health"),
    ("drover-ids", "crates/ids"),
];
/// Nothing in a pure crate's normal dependency graph may be one of these.
const FORBIDDEN_IN_PURE: &[&str] = &["tokio", "drover-store", "drover-metrics"];

/// Crates and what their normal dependency graph must not contain
/// (dev-dependencies are not checked: tests run on etcd). The runtime and
/// the controllers are generic over `S: Store`; the metrics facade is light
/// enough for any component to take without a runtime.
const CONFINED: &[(&str, &[&str])] = &[
    ("drover-metrics", &["tokio", "drover-store"]),
    (
        "drover-runtime",
        &[
            "drover-store-etcd",
            "drover-manifest",
            "drover-labels",
            "drover-health",
            "drover-election",
            "drover-api",
        ],
    ),
    ("drover-election", &["drover-store-etcd"]),
    // The agent reaches any store through the `Store` trait (an
    // orchestrator or etcd alike), and knows nothing of elections or the
    // API's generated code.
    (
        "drover-agent",
        &[
            "drover-store-etcd",
            "drover-election",
            "drover-api",
            "drover-etcd-api",
            "tonic",
        ],
    ),
    // Replication controllers reach any store through the `Store` trait and
    // know nothing of the API's generated code (the orchestrator wires
    // them to `RcService`).
    (
        "drover-rc-farm",
        &[
            "drover-store-etcd",
            "drover-api",
            "drover-etcd-api",
            "tonic",
        ],
    ),
];

const ETCD_CLIENT: &str = "etcd-client";
const ETCD_CLIENT_OWNER: &str = "drover-store-etcd";

const GRPC_CRATES: &[&str] = &[
    "tonic",
    "tonic-prost",
    "tonic-build",
    "tonic-prost-build",
    "tonic-health",
    "tonic-reflection",
    "prost",
    "prost-types",
    "prost-build",
    "protox",
];
const GRPC_ALLOWED: &[&str] = &[
    "drover-api",
    // etcd's v3 gRPC API, served by `orchestrator serve` over any store.
    "drover-etcd-api",
    // etcd-client's errors carry `tonic::Status`: the adapter maps their codes.
    "drover-store-etcd",
    "drover-api-codegen",
    "orchestrator",
    "drover-tests",
    "xtask",
];

pub(crate) fn check(root: &Path) -> Result<()> {
    let mut violations = Vec::new();

    for (package, dir) in PURE {
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
            .with_context(|| format!("reading {dir}/Cargo.toml"))?;
        let no_default = defines_feature(&manifest, "store");
        let found = impure_dependencies(package, no_default)?;
        let flags = if no_default {
            " (--no-default-features)"
        } else {
            ""
        };
        if found.is_empty() {
            println!(
                "ok: {package}{flags} has no {}",
                FORBIDDEN_IN_PURE.join(" / ")
            );
        }
        violations.extend(
            found
                .into_iter()
                .map(|why| format!("pure crate {package}{flags} {why}")),
        );
    }

    for (package, forbidden) in CONFINED {
        let found = forbidden_dependencies(package, forbidden, false)?;
        if found.is_empty() {
            println!("ok: {package} has no {}", forbidden.join(" / "));
        }
        violations.extend(found.into_iter().map(|why| format!("{package} {why}")));
    }

    for package in workspace_members()? {
        let direct = direct_dependencies(&package)?;
        if package != ETCD_CLIENT_OWNER && direct.iter().any(|d| d == ETCD_CLIENT) {
            violations.push(format!(
                "{package} depends on {ETCD_CLIENT}; only {ETCD_CLIENT_OWNER} may"
            ));
        }
        if !GRPC_ALLOWED.contains(&package.as_str()) {
            for grpc in GRPC_CRATES {
                if direct.iter().any(|d| d == grpc) {
                    violations.push(format!(
                        "{package} depends on {grpc}; only drover-api, drover-etcd-api and orchestrator know protobuf/tonic (see xtask/src/layering.rs)"
                    ));
                }
            }
        }
    }
    println!(
        "checked direct dependencies on {ETCD_CLIENT}, protobuf/tonic crates, and controllers' on {ETCD_CLIENT_OWNER}"
    );

    if violations.is_empty() {
        println!("layering: ok");
        Ok(())
    } else {
        bail!("layering violations:\n  {}", violations.join("\n  "))
    }
}

/// The forbidden crates in `package`'s normal dependency graph, each with
/// the `cargo tree -i` path that pulls it in.
fn impure_dependencies(package: &str, no_default_features: bool) -> Result<Vec<String>> {
    forbidden_dependencies(package, FORBIDDEN_IN_PURE, no_default_features)
}

/// The `forbidden` crates in `package`'s normal dependency graph, each with
/// the `cargo tree -i` path that pulls it in.
fn forbidden_dependencies(
    package: &str,
    forbidden_crates: &[&str],
    no_default_features: bool,
) -> Result<Vec<String>> {
    let mut tree = cmd::cargo();
    tree.args(["tree", "-p", package, "-e", "normal", "--prefix", "none"]);
    if no_default_features {
        tree.arg("--no-default-features");
    }
    let names = crate_names(&stdout_of(&mut tree)?);
    let mut found = Vec::new();
    for forbidden in forbidden_crates {
        if names.iter().any(|n| n == forbidden) {
            let mut why = cmd::cargo();
            why.args(["tree", "-p", package, "-e", "normal", "-i", forbidden]);
            if no_default_features {
                why.arg("--no-default-features");
            }
            let path = stdout_of(&mut why).unwrap_or_default();
            found.push(format!("depends on {forbidden}:\n{path}"));
        }
    }
    Ok(found)
}

fn stdout_of(command: &mut std::process::Command) -> Result<String> {
    let out = cmd::capture(command)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd::display(command),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every workspace package's name.
fn workspace_members() -> Result<Vec<String>> {
    Ok(workspace_packages()?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Every workspace package's name and directory.
pub(crate) fn workspace_packages() -> Result<Vec<(String, PathBuf)>> {
    let mut tree = cmd::cargo();
    tree.args(["tree", "--workspace", "--depth", "0", "--prefix", "none"]);
    Ok(parse_packages(&stdout_of(&mut tree)?))
}

/// `(name, dir)` from `name vX.Y.Z (/path/to/dir)` lines.
fn parse_packages(tree: &str) -> Vec<(String, PathBuf)> {
    tree.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(' ')?;
            let open = rest.find('(')?;
            let close = rest.rfind(')')?;
            let dir = rest.get(open + 1..close)?;
            Some((name.to_string(), PathBuf::from(dir)))
        })
        .collect()
}

/// `package`'s direct dependencies of every kind (normal, build, dev).
fn direct_dependencies(package: &str) -> Result<Vec<String>> {
    direct_dependencies_of_kinds(package, "normal,build,dev")
}

/// `package`'s direct dependencies of the given `cargo tree -e` kinds.
fn direct_dependencies_of_kinds(package: &str, kinds: &str) -> Result<Vec<String>> {
    let mut tree = cmd::cargo();
    tree.args([
        "tree", "-p", package, "-e", kinds, "--depth", "1", "--prefix", "none",
    ]);
    let names = crate_names(&stdout_of(&mut tree)?);
    // The first line is the package itself.
    Ok(names.into_iter().skip(1).collect())
}

/// Crate names from `cargo tree --prefix none` output (`name vX.Y.Z ...`
/// per line; section headers like `[dev-dependencies]` and blanks skipped).
fn crate_names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?;
            version.starts_with('v').then(|| name.to_string())
        })
        .collect()
}

/// True if the `[features]` table of a Cargo.toml defines `feature`.
fn defines_feature(manifest: &str, feature: &str) -> bool {
    let mut in_features = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if in_features
            && let Some((key, _)) = line.split_once('=')
            && key.trim().trim_matches('"') == feature
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_skip_headers_and_blanks() {
        let tree =
            "drover-store v0.1.0 (/w/crates/store)\n\n[dev-dependencies]\ntokio v1.47.0 (*)\n";
        assert_eq!(crate_names(tree), vec!["drover-store", "tokio"]);
    }

    #[test]
    fn packages_are_parsed_with_their_directories() {
        let tree = "drover-store v0.1.0 (/w/crates/store)\n\nxtask v0.1.0 (/w/xtask)\n";
        assert_eq!(
            parse_packages(tree),
            vec![
                ("drover-store".to_string(), PathBuf::from("/w/crates/store")),
                ("xtask".to_string(), PathBuf::from("/w/xtask")),
            ]
        );
    }

    #[test]
    fn store_feature_detected_only_in_features_table() {
        let with =
            "[package]\nname = \"x\"\n[features]\ndefault = []\nstore = [\"dep:drover-store\"]\n";
        assert!(defines_feature(with, "store"));
        let without =
            "[package]\nstore = 1\n[features]\ndefault = []\n[dependencies]\nstore = \"1\"\n";
        assert!(!defines_feature(without, "store"));
    }

    /// The check does catch a violation: drover-store-etcd pulls in tokio and
    /// drover-store.
    #[test]
    fn impure_dependencies_finds_tokio_under_the_store() {
        let found = impure_dependencies("drover-store-etcd", false).unwrap();
        assert!(
            found.iter().any(|f| f.starts_with("depends on tokio"))
                && found
                    .iter()
                    .any(|f| f.starts_with("depends on drover-store")),
            "{found:?}"
        );
    }

    /// The confinement check sees normal dependencies and ignores
    /// dev-dependencies: drover-election tests on etcd (a dev-dependency)
    /// and is still confined; its store dependency is found.
    #[test]
    fn confinement_counts_normal_dependencies_only() {
        assert!(
            forbidden_dependencies("drover-election", &["drover-store-etcd"], false)
                .unwrap()
                .is_empty()
        );
        let found = forbidden_dependencies("drover-runtime", &["drover-store"], false).unwrap();
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("depends on drover-store")),
            "{found:?}"
        );
    }

    /// The real workspace obeys its own rules (runs `cargo tree`, no build).
    #[test]
    fn workspace_is_layered() {
        let root = crate::project_root();
        check(&root).unwrap();
    }
}
