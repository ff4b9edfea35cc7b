//! Drover's node agent: turns its node's intent into supervised,
//! health-checked processes and reports reality.
//!
//! An [`Agent`] registers its node (`nodes/<node>`, bound to its lease,
//! refused while another live agent holds the name), applies its node
//! labels, follows `intent/<node>/` through the shared reflector and runs
//! one reconcile per pod on the shared controller runtime (so one slow pod
//! never blocks another, and triggers for one pod merge). A reconcile
//! re-reads the pod's reality and takes one [`plan::Step`]: launch, replace
//! (a new manifest SHA), stop (intent deleted), report, or forget a stale
//! record. A failed or empty read never stops a running pod: only the
//! reflector's consistent listing or a delete event removes an intent.
//!
//! Each launchable runs under a supervisor ([`supervisor`]) through the
//! [`Processes`] port: real processes ([`OsProcesses`]: a cgroup v2 subtree
//! per launchable when the agent can create one, else a process group;
//! SIGTERM, the manifest's grace period, then SIGKILL), with its restart
//! policy and a doubling backoff from the manifest's `restart_backoff` to a
//! cap. Health is probed per pod and written to `health/<pod>/<node>` with
//! the agent's lease, only on change, with flap damping ([`health`]).
//!
//! ```no_run
//! use drover_agent::{Agent, AgentConfig};
//! use drover_store::embedded::EmbeddedStore;
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedStore::in_memory();
//! let config = AgentConfig::new("node-1".parse()?, "/var/lib/drover-agent");
//! let shutdown = CancellationToken::new();
//! Agent::new(store, config).run(shutdown).await?;
//! # Ok(()) }
//! ```

mod agent;
mod artifact;
pub mod config;
mod error;
pub mod health;
pub mod hollow;
pub mod logs;
pub mod node;
pub mod plan;
mod pod;
pub mod process;
pub mod supervisor;

pub use agent::Agent;
pub use config::{AgentConfig, Capacity, CgroupMode, ProbeConfig};
pub use error::{AgentError, Result};
pub use hollow::{HollowProcesses, run_hollow};
pub use node::NodeRecord;
pub use process::{LaunchSpec, OsProcesses, Processes, Running};
