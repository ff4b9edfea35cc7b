//! Leader election on Drover's store port, for the embedded store and etcd
//! alike.
//!
//! - [`Election`]: etcd `clientv3/concurrency`'s election, done right. A
//!   candidate's key is `<prefix><lease id in hex>`, bound to its lease; the
//!   oldest key (smallest create revision) leads; each waiter watches only
//!   its predecessor, plus its own key and lease, so a waiter whose lease
//!   expired never reports that it won. Drover and Go/`etcdctl elect`
//!   candidates on one prefix exclude each other.
//! - [`Term`]: one term of leadership, with a **fencing token** (the key's
//!   create revision), a conservative `valid_until`, a cancellation scope
//!   that fires *before* the store could expire the lease, and fenced
//!   transactions the store refuses once leadership is gone.
//! - [`Observer`]: `Leader` / `NoLeader` events from one prefix watch; it
//!   never invents a leader after a gap.
//! - [`Elector`]: client-go's knobs and callbacks (lease duration, renew
//!   deadline, retry period, jitter, term limit, release on cancel), re-entry
//!   after loss, drain before release, a health check and metrics.
//! - [`buckets`]: knative-style sharding with balanced ownership on one
//!   shared lease (term limit and fatal-on-loss apply per bucket), and a
//!   static ordinal mode.
//!
//! Run a closure only while leader, with fenced writes:
//!
//! ```
//! use std::time::Duration;
//! use drover_election::{Election, Elector, ElectorConfig, Term};
//! use drover_store::{embedded::EmbeddedStore, Put, Store, Get};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = EmbeddedStore::in_memory();
//! let election = Election::with_prefix(store.clone(), "/drover/election/reports/")?;
//! let elector = Elector::builder(election)
//!     .config(ElectorConfig::default().with_identity("worker-1"))
//!     .on_started_leading(|term: Term<EmbeddedStore>| async move {
//!         // Leader work: every write is fenced by the term, so a stale
//!         // leader's write fails in the store.
//!         let mut n = 0u32;
//!         while !term.is_cancelled() && n < 3 {
//!             n += 1;
//!             let put = Put::new("/drover/reports/last", n.to_string());
//!             if term.commit_fenced([put.into()]).await.is_err() {
//!                 break; // leadership is gone
//!             }
//!             tokio::select! {
//!                 _ = term.cancelled() => break,
//!                 _ = tokio::time::sleep(Duration::from_secs(1)) => {}
//!             }
//!         }
//!     })
//!     .build()?;
//!
//! let shutdown = CancellationToken::new();
//! let run = tokio::spawn({
//!     let elector = elector.clone();
//!     let shutdown = shutdown.clone();
//!     async move { elector.run(shutdown).await }
//! });
//! tokio::time::sleep(Duration::from_secs(5)).await;
//! assert!(elector.is_leader());
//! shutdown.cancel();
//! run.await??;
//! let last = store.get(Get::key("/drover/reports/last")).await?;
//! assert_eq!(last.kvs[0].value, b"3");
//! # Ok(()) }
//! ```

mod config;
mod duration;
mod election;
mod elector;
mod error;
mod leading;
mod metrics;
mod observe;
mod term;

pub mod buckets;

pub use config::{ElectorConfig, LeaderElectionSettings, OnLoss, unique_identity};
pub use duration::{format_duration, parse_duration};
pub use election::{Election, LeaderInfo};
pub use elector::{Elector, ElectorBuilder, TermSummary};
pub use error::{ElectionError, Result};
pub use metrics::{ElectionMetrics, MetricsSnapshot, NoMetrics, RegistryMetrics};
pub use observe::{Observation, Observer};
pub use term::{Term, TermEnd};
