//! Drover's controller runtime: the loop every controller (the agent, the
//! RC farm, replications) runs, so that each controller is only a
//! [`Reconciler`] (a pure planning core plus a thin shell that reads and
//! writes the store).
//!
//! A [`Controller`] owns a work queue keyed by object id and guarantees:
//! - **merged triggers**: any number of triggers of a key waiting to run
//!   make one reconcile;
//! - **one reconcile per key at a time**: a trigger that arrives while the
//!   key's reconcile runs makes it run once more after it;
//! - **bounded concurrency** across keys ([`Controller::concurrency`]);
//! - **requeue after a delay** ([`Action::RequeueAfter`]);
//! - **per-key error backoff that resets on success** (the workspace's one
//!   [`drover_store::backoff::Backoff`], per key): a failing key is retried
//!   after a growing delay and not run earlier by new triggers; other keys
//!   are unaffected;
//! - **readiness gating**: nothing is reconciled before every watched
//!   reflector's cache listed its range ([`Controller::watch`]) and every
//!   extra gate resolved ([`Controller::ready_when`]); triggers received
//!   meanwhile are queued;
//! - **event mapping**: each watched reflector's events are mapped to the
//!   keys they concern, so a change of another type (a node's labels)
//!   triggers the objects it affects (the RCs selecting that node);
//! - **a periodic resync** as a safety net ([`Controller::resync`]);
//! - **drain on shutdown**: when the [`CancellationToken`] passed to
//!   [`Controller::run`] fires (a shutdown, or the end of an election term's
//!   or a lock's scope), no reconcile starts any more, those in flight are
//!   awaited (their [`Context::shutdown`] fires too) and `run` returns;
//! - **observability**: each reconcile runs in a `reconcile` span with the
//!   key, inside the `controller` span with its name; reconciles, errors,
//!   durations, queue depth and in-flight count go to [`RuntimeMetrics`].
//!
//! The runtime knows nothing about what it reconciles: no key layout, no
//! record type, no backend. It is generic over [`drover_store::Store`].
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use drover_runtime::{Action, Context, Controller, Reconciler};
//! use drover_store::embedded::EmbeddedStore;
//! use drover_store::reflector::{Codec, Reflector, ReflectorEvent};
//! use drover_store::{KeyValue, Put, Store};
//! use parking_lot::Mutex;
//! use tokio_util::sync::CancellationToken;
//!
//! /// `/drover/rcs/<id>` -> its record as text.
//! struct Rcs;
//! impl Codec for Rcs {
//!     type Id = String;
//!     type Value = String;
//!     type Error = Infallible;
//!     fn id(&self, key: &[u8]) -> Result<String, Infallible> {
//!         Ok(String::from_utf8_lossy(&key[b"/drover/rcs/".len()..]).into_owned())
//!     }
//!     fn decode(&self, kv: &KeyValue) -> Result<(String, String), Infallible> {
//!         Ok((self.id(&kv.key)?, String::from_utf8_lossy(&kv.value).into_owned()))
//!     }
//! }
//!
//! /// Records what it reconciled; a real controller plans and writes here.
//! struct Seen(Arc<Mutex<Vec<String>>>, CancellationToken);
//! impl Reconciler<EmbeddedStore> for Seen {
//!     type Key = String;
//!     type Error = Infallible;
//!     async fn reconcile(&self, key: &String, _ctx: &Context<EmbeddedStore>) -> Result<Action, Infallible> {
//!         self.0.lock().push(key.clone());
//!         self.1.cancel(); // stop after the first, for this example
//!         Ok(Action::Done)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedStore::in_memory();
//! store.put(Put::new("/drover/rcs/web", "replicas: 3")).await?;
//! let rcs = Reflector::prefix(store.clone(), "/drover/rcs/", Rcs);
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let shutdown = CancellationToken::new();
//!
//! Controller::new("rc-farm", store, Seen(seen.clone(), shutdown.clone()))
//!     .concurrency(4)
//!     .watch(rcs, |event: &ReflectorEvent<String, String>| match event {
//!         ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
//!             objects.keys().cloned().collect()
//!         }
//!         ReflectorEvent::Applied { id, .. } | ReflectorEvent::Deleted { id, .. } => vec![id.clone()],
//!     })
//!     .run(shutdown)
//!     .await?;
//! assert_eq!(*seen.lock(), ["web"]);
//! # Ok(()) }
//! ```

mod controller;
mod error;
mod metrics;
mod queue;

pub use controller::{Action, Context, Controller, Reconciler, Trigger};
pub use error::{Result, RuntimeError};
pub use metrics::RuntimeMetrics;
pub use tokio_util::sync::CancellationToken;
