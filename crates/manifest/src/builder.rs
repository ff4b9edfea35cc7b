//! Building manifests in code (tests, controllers, examples).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::canonical::{self, View};
use crate::model::{DEFAULT_TERMINATION_GRACE_PERIOD, Launchable, ResourceLimits, StatusCheck};
use crate::units::{ByteSize, Cpus};
use crate::{Manifest, ManifestError};

/// Builds a [`Manifest`] in code. [`build`](Self::build) writes the manifest
/// as YAML and parses it back, so a built manifest went through exactly the
/// validation a user's file does, and its raw bytes are that YAML.
///
/// ```
/// use drover_manifest::{ByteSize, Launchable, Manifest, RestartPolicy};
///
/// let manifest = Manifest::builder("batch")
///     .launchable(
///         "job",
///         Launchable::process(["/bin/job", "--once"]).restart_policy(RestartPolicy::Never),
///     )
///     .memory(ByteSize::mib(256))
///     .label("team", "data")
///     .build()?;
/// assert_eq!(manifest.labels()["team"], "data");
/// # Ok::<(), drover_manifest::ManifestError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManifestBuilder {
    id: String,
    run_as: Option<String>,
    launchables: BTreeMap<String, Launchable>,
    config: serde_json::Map<String, serde_json::Value>,
    status: Option<StatusCheck>,
    resource_limits: ResourceLimits,
    termination_grace_period: Duration,
    labels: BTreeMap<String, String>,
}

impl ManifestBuilder {
    pub(crate) fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            run_as: None,
            launchables: BTreeMap::new(),
            config: serde_json::Map::new(),
            status: None,
            resource_limits: ResourceLimits::default(),
            termination_grace_period: DEFAULT_TERMINATION_GRACE_PERIOD,
            labels: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a `process` launchable running `argv[0]` with the
    /// rest of `argv` as arguments.
    pub fn process<I, S>(self, id: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.launchable(id, Launchable::process(argv))
    }

    /// Adds (or replaces) a launchable.
    pub fn launchable(mut self, id: impl Into<String>, launchable: Launchable) -> Self {
        self.launchables.insert(id.into(), launchable);
        self
    }

    /// Sets the user the pod runs as.
    pub fn run_as(mut self, user: impl Into<String>) -> Self {
        self.run_as = Some(user.into());
        self
    }

    /// Sets one top-level `config` entry.
    pub fn config(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.config.insert(key.into(), value);
        self
    }

    /// Declares a status endpoint.
    pub fn status(mut self, status: StatusCheck) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets the CPU limit.
    pub fn cpus(mut self, cpus: Cpus) -> Self {
        self.resource_limits.cpus = Some(cpus);
        self
    }

    /// Sets the memory limit.
    pub fn memory(mut self, memory: ByteSize) -> Self {
        self.resource_limits.memory = Some(memory);
        self
    }

    /// Sets the termination grace period.
    pub fn termination_grace_period(mut self, period: Duration) -> Self {
        self.termination_grace_period = period;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Validates and builds the manifest, reporting every problem as
    /// [`Manifest::from_yaml`] would.
    pub fn build(&self) -> Result<Manifest, ManifestError> {
        let view = View {
            id: &self.id,
            run_as: self.run_as.as_deref(),
            launchables: self
                .launchables
                .iter()
                .map(|(id, l)| (id.as_str(), l))
                .collect(),
            config: &self.config,
            status: self.status.as_ref(),
            resource_limits: &self.resource_limits,
            termination_grace_period: self.termination_grace_period,
            labels: &self.labels,
        };
        Manifest::from_yaml(canonical::to_yaml(&canonical::tree(&view), true))
    }
}
