//! The Drover store port on a real etcd v3 cluster.
//!
//! [`EtcdStore`] implements [`drover_store::Store`] with etcd-client. It is
//! the twin of the embedded backend: both pass one conformance suite and
//! reject bad requests with the same [`StoreError`]s, because requests are
//! checked with [`drover_store::limits`] before they are sent and every etcd
//! error is mapped onto a typed error (`RequestTooLarge`, `TooManyOps`,
//! `LeaseNotFound`, `Compacted` with the compact revision, `FutureRevision`
//! with the current revision, ...).
//!
//! What the adapter adds to etcd-client:
//! - every call is bounded by [`EtcdConfig::request_timeout`]: a dead
//!   endpoint gives a retryable `StoreError::Unavailable`, never a hang;
//! - watches survive broken connections without gaps: the watch is
//!   re-created from the first undelivered revision (or ends with
//!   `Compacted` if that revision is gone);
//! - single lease renewals reuse one keep-alive stream per lease.
//!
//! ```no_run
//! use drover_store::{Get, Put, Store};
//! use drover_store_etcd::{EtcdConfig, EtcdStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), drover_store::StoreError> {
//! let store = EtcdStore::connect(["http://127.0.0.1:2379"], EtcdConfig::default()).await?;
//! store.put(Put::new("/drover/rcs/web", "replicas: 3")).await?;
//! let got = store.get(Get::key("/drover/rcs/web")).await?;
//! assert_eq!(got.kvs[0].value, b"replicas: 3");
//! # Ok(()) }
//! ```
//!
//! Nothing hangs on an unreachable cluster; this runs without etcd:
//!
//! ```
//! use std::time::Duration;
//! use drover_store_etcd::{EtcdConfig, EtcdStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Nothing listens on port 1: connecting fails fast, with a retryable error.
//! let config = EtcdConfig::default().with_connect_timeout(Duration::from_millis(200));
//! let err = EtcdStore::connect(["http://127.0.0.1:1"], config).await.unwrap_err();
//! assert!(err.is_retryable(), "{err}");
//! # }
//! ```
//!
//! The `testing` feature adds `testing::PrivateEtcd` (an etcd process
//! owned by one test) and `testing::FaultProxy` (a loopback proxy that can
//! cut connections), for tests that restart or isolate etcd.

mod config;
mod convert;
mod error_map;
mod keepalive;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use drover_store::limits;
use drover_store::{
    Delete, DeleteResponse, Get, GetResponse, LeaseGrant, LeaseId, LeaseTimeToLive, Put,
    PutResponse, Result, Revision, Store, StoreError, StoreStatus, Txn, TxnOp, TxnResponse, Watch,
    WatchStream,
};
use etcd_client::{Client, ConnectOptions, LeaseTimeToLiveOptions};

pub use config::{EtcdConfig, EtcdTls};
use error_map::{ErrorContext, map_error};
use keepalive::KeepAlives;

/// etcd's own limit on a response is 2 GiB; tonic's default of 4 MiB would
/// fail large ranges that etcd serves fine.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

/// The store port on etcd. Cheap to clone: clones share the connection, the
/// keep-alive streams and the configuration.
#[derive(Clone, Debug)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    endpoints: Vec<String>,
    keep_alives: KeepAlives,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config)
            .field("keep_alives", &self.keep_alives)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to an etcd cluster and check that it answers within
    /// [`EtcdConfig::connect_timeout`] (else `StoreError::Unavailable`).
    pub async fn connect<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        config: EtcdConfig,
    ) -> Result<Self> {
        let store = Self::connect_lazy(endpoints, config).await?;
        let limit = store.inner.config.connect_timeout;
        match tokio::time::timeout(limit, store.fetch_revision()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(err)) => Err(match map_error(err, ErrorContext::new("connect")) {
                StoreError::Unavailable { message, source } => StoreError::Unavailable {
                    message: format!("cannot reach etcd at {}: {message}", store.endpoints_text()),
                    source,
                },
                other => other,
            }),
            Err(_) => Err(StoreError::Unavailable {
                message: format!(
                    "cannot reach etcd at {} within {limit:?}",
                    store.endpoints_text()
                ),
                source: None,
            }),
        }
    }

    /// Set up a connection without contacting etcd; the first call connects.
    /// Fails only on malformed endpoints.
    pub async fn connect_lazy<E: AsRef<str>>(
        endpoints: impl IntoIterator<Item = E>,
        config: EtcdConfig,
    ) -> Result<Self> {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .map(|e| e.as_ref().trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(String::from(
                "no etcd endpoints given",
            )));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(config.keep_alive_interval, config.keep_alive_timeout)
            // etcd answers pings on idle connections with GOAWAY
            // ("too_many_pings") unless its server permits them.
            .with_keep_alive_while_idle(false)
            // A member cut off from its leader fails requests and ends watch
            // streams ("no leader") instead of stalling them, so watches are
            // re-created on a healthy member.
            .with_require_leader(true);
        let options = match &config.tls {
            Some(tls) => options.with_tls(tls.to_tonic()),
            None => options,
        };
        let client =
            Client::connect(&endpoints, Some(options))
                .await
                .map_err(|e| match map_error(e, ErrorContext::new("connect")) {
                    StoreError::Unavailable { message, source } => StoreError::Unavailable {
                        message: format!(
                            "cannot connect to etcd at {}: {message}",
                            endpoints.join(",")
                        ),
                        source,
                    },
                    other => other,
                })?;
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                config,
                endpoints,
                keep_alives: KeepAlives::default(),
            }),
        })
    }

    /// The configuration this store was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Lease keep-alive streams currently held open (one per lease renewed
    /// recently through [`Store::lease_keep_alive`]).
    pub fn open_keep_alive_streams(&self) -> usize {
        self.inner.keep_alives.open_streams()
    }

    fn endpoints_text(&self) -> String {
        self.inner.endpoints.join(",")
    }

    fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// Run one etcd call within the request timeout and map its error.
    async fn call<T>(
        &self,
        ctx: ErrorContext,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout(), fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.complete_error(map_error(err, ctx)).await),
            Err(_) => Err(StoreError::Unavailable {
                message: format!(
                    "etcd {} at {} timed out after {:?}",
                    ctx.op,
                    self.endpoints_text(),
                    self.request_timeout()
                ),
                source: None,
            }),
        }
    }

    /// etcd's "compacted" and "future revision" errors do not carry the
    /// revisions the typed errors report; ask etcd for them.
    async fn complete_error(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::Compacted {
                requested,
                compact_revision: 0,
            } => StoreError::Compacted {
                requested,
                compact_revision: self.probe_compact_revision(requested).await,
            },
            StoreError::FutureRevision {
                requested,
                current: 0,
            } => {
                let current =
                    tokio::time::timeout(self.request_timeout(), self.fetch_revision()).await;
                StoreError::FutureRevision {
                    requested,
                    current: current.ok().and_then(|r| r.ok()).unwrap_or_default(),
                }
            }
            other => other,
        }
    }

    /// The compaction point, learnt the only way etcd tells it: a watch from
    /// a compacted revision is canceled with the compact revision. Falls back
    /// to `requested` (a lower bound) if etcd does not answer in time.
    async fn probe_compact_revision(&self, requested: Revision) -> Revision {
        let probe = Watch::key(vec![0u8]).from_revision(requested.max(1));
        let limit = self.request_timeout();
        let answer = async {
            match watch::establish(&self.inner.client, &probe, probe.start_revision, limit).await {
                Err(StoreError::Compacted {
                    compact_revision, ..
                }) => Some(compact_revision),
                Ok(conn) => {
                    let mut stream = watch::spawn(
                        self.inner.client.clone(),
                        self.inner.config.clone(),
                        probe.clone(),
                        conn,
                    );
                    match stream.next_batch().await {
                        Some(Err(StoreError::Compacted {
                            compact_revision, ..
                        })) => Some(compact_revision),
                        _ => None,
                    }
                }
                Err(_) => None,
            }
        };
        tokio::time::timeout(limit, answer)
            .await
            .ok()
            .flatten()
            .unwrap_or(requested)
    }

    /// The header revision of a minimal linearizable read.
    async fn fetch_revision(&self) -> Result<Revision, etcd_client::Error> {
        let options = etcd_client::GetOptions::new().with_count_only();
        let resp = self
            .inner
            .client
            .kv_client()
            .get(vec![0u8], Some(options))
            .await?;
        Ok(convert::header_revision(resp.0.header.as_ref()))
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.inner
            .client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// A txn failed because one of its reads asked for a compacted or future
    /// revision; etcd does not say which read, so name the one in the branch
    /// that ran (asking etcd which branch that is only when it matters).
    async fn txn_read_revision_error(&self, txn: &Txn, err: StoreError) -> StoreError {
        let bad: Box<dyn Fn(Revision) -> bool + Send + Sync> = match &err {
            StoreError::FutureRevision {
                requested: 0,
                current,
            } => {
                let current = *current;
                Box::new(move |rev| rev > current)
            }
            StoreError::Compacted {
                requested: 0,
                compact_revision,
            } => {
                let compacted = *compact_revision;
                Box::new(move |rev| rev > 0 && rev < compacted)
            }
            _ => return err,
        };
        let requested = match (
            first_bad_read(&txn.success, &bad),
            first_bad_read(&txn.failure, &bad),
        ) {
            (Some(rev), None) | (None, Some(rev)) => rev,
            (Some(a), Some(b)) if a == b => a,
            (Some(a), Some(b)) => {
                if self.compares_hold(txn).await == Some(false) {
                    b
                } else {
                    a
                }
            }
            // The revision learnt afterwards moved past the bad read (others
            // wrote meanwhile): the highest read is future if any is, the
            // lowest compacted if any is.
            (None, None) => {
                let reads: Vec<Revision> = flatten(&txn.success)
                    .into_iter()
                    .chain(flatten(&txn.failure))
                    .filter_map(|op| match op {
                        TxnOp::Get(g) if g.revision > 0 => Some(g.revision),
                        _ => None,
                    })
                    .collect();
                match &err {
                    StoreError::FutureRevision { .. } => reads.iter().copied().max(),
                    _ => reads.iter().copied().min(),
                }
                .unwrap_or_default()
            }
        };
        match err {
            StoreError::FutureRevision { current, .. } => {
                StoreError::FutureRevision { requested, current }
            }
            StoreError::Compacted {
                compact_revision, ..
            } => StoreError::Compacted {
                requested,
                compact_revision,
            },
            other => other,
        }
    }

    /// Whether a txn's compares hold now (`None` if etcd does not say), by
    /// a txn of the same compares and no ops, which writes nothing.
    async fn compares_hold(&self, txn: &Txn) -> Option<bool> {
        let probe = etcd_client::Txn::new().when(
            txn.compares
                .iter()
                .map(convert::compare)
                .collect::<Vec<_>>(),
        );
        match tokio::time::timeout(self.request_timeout(), self.kv().txn(probe)).await {
            Ok(Ok(resp)) => Some(resp.succeeded()),
            _ => None,
        }
    }

    /// Which lease a txn's "lease not found" is about. etcd checks the puts
    /// of the branch that runs, in order, and does not name the lease: find
    /// the first unknown lease of that branch.
    async fn missing_txn_lease(&self, txn: &Txn) -> LeaseId {
        let leases_of = |ops: &[TxnOp]| -> Vec<LeaseId> {
            flatten(ops)
                .into_iter()
                .filter_map(|op| match op {
                    TxnOp::Put(p) if p.lease != 0 => Some(p.lease),
                    _ => None,
                })
                .collect()
        };
        let (success, failure) = (leases_of(&txn.success), leases_of(&txn.failure));
        let mut distinct: Vec<LeaseId> = success.iter().chain(&failure).copied().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() <= 1 {
            return distinct.first().copied().unwrap_or_default();
        }
        let mut missing = Vec::new();
        for id in distinct {
            if let Err(StoreError::LeaseNotFound(_)) = self.lease_time_to_live(id).await {
                missing.push(id);
            }
        }
        let first_missing = |ids: &[LeaseId]| ids.iter().copied().find(|id| missing.contains(id));
        match (first_missing(&success), first_missing(&failure)) {
            (Some(a), None) | (None, Some(a)) => a,
            (Some(a), Some(b)) if a == b => a,
            (Some(a), Some(b)) => {
                if self.compares_hold(txn).await == Some(false) {
                    b
                } else {
                    a
                }
            }
            (None, None) => success
                .first()
                .or(failure.first())
                .copied()
                .unwrap_or_default(),
        }
    }
}

/// The ops of a branch and of every branch of its nested txns, depth first
/// (which of them run is etcd's business; error attribution looks at all).
fn flatten(ops: &[TxnOp]) -> Vec<&TxnOp> {
    let mut all = Vec::with_capacity(ops.len());
    for op in ops {
        all.push(op);
        if let TxnOp::Txn(t) = op {
            all.extend(flatten(&t.success));
            all.extend(flatten(&t.failure));
        }
    }
    all
}

/// Every put of `ops` that keeps the current value or lease (so needs an
/// existing key).
fn keeping_puts(ops: &[TxnOp]) -> Vec<&[u8]> {
    flatten(ops)
        .into_iter()
        .filter_map(|op| match op {
            TxnOp::Put(p) if p.ignore_value || p.ignore_lease => Some(p.key.as_slice()),
            _ => None,
        })
        .collect()
}

/// etcd's put errors do not name the key; a single put knows it.
fn name_key(err: StoreError, key: &str) -> StoreError {
    match err {
        StoreError::KeyNotFound { key: k } if k.is_empty() => {
            StoreError::KeyNotFound { key: key.into() }
        }
        StoreError::ValueProvided { key: k } if k.is_empty() => {
            StoreError::ValueProvided { key: key.into() }
        }
        StoreError::LeaseProvided { key: k } if k.is_empty() => {
            StoreError::LeaseProvided { key: key.into() }
        }
        other => other,
    }
}

impl EtcdStore {
    /// Which key a txn's "key not found" is about: etcd does not say, so
    /// name the first keeping put whose key is missing now (best effort).
    async fn missing_txn_key(&self, txn: &Txn) -> String {
        let candidates: Vec<&[u8]> = keeping_puts(&txn.success)
            .into_iter()
            .chain(keeping_puts(&txn.failure))
            .collect();
        for key in &candidates {
            if let Ok(resp) = self.get(Get::key(key.to_vec()).count_only()).await
                && resp.count == 0
            {
                return String::from_utf8_lossy(key).into_owned();
            }
        }
        candidates
            .first()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default()
    }
}

/// The revision of the first get in `ops` that `bad` rejects.
fn first_bad_read(ops: &[TxnOp], bad: impl Fn(Revision) -> bool) -> Option<Revision> {
    flatten(ops).into_iter().find_map(|op| match op {
        TxnOp::Get(g) if bad(g.revision) => Some(g.revision),
        _ => None,
    })
}

fn put_size(put: &Put) -> usize {
    put.key.len() + put.value.len()
}

impl Store for EtcdStore {
    fn backend_name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, req: Get) -> Result<GetResponse> {
        limits::validate_get(&req)?;
        let (key, options) = convert::get_options(&req);
        let ctx = ErrorContext::new("get").revision(req.revision);
        let resp = self.call(ctx, self.kv().get(key, Some(options))).await?;
        Ok(convert::get_response(resp.0, 0))
    }

    async fn put(&self, req: Put) -> Result<PutResponse> {
        limits::validate_put(&req)?;
        let options = convert::put_options(&req);
        let ctx = ErrorContext::new("put")
            .lease(req.lease)
            .size(put_size(&req));
        let key = String::from_utf8_lossy(&req.key).into_owned();
        let resp = self
            .call(ctx, self.kv().put(req.key, req.value, Some(options)))
            .await
            .map_err(|e| name_key(e, &key))?;
        Ok(convert::put_response(resp.0, 0))
    }

    async fn delete(&self, req: Delete) -> Result<DeleteResponse> {
        limits::validate_delete(&req)?;
        let (key, options) = convert::delete_options(&req);
        let resp = self
            .call(
                ErrorContext::new("delete"),
                self.kv().delete(key, Some(options)),
            )
            .await?;
        Ok(convert::delete_response(resp.0, 0))
    }

    async fn txn(&self, req: Txn) -> Result<TxnResponse> {
        limits::validate_txn(&req)?;
        let txn = convert::txn(&req);
        let size = flatten(&req.success)
            .into_iter()
            .chain(flatten(&req.failure))
            .map(|op| match op {
                TxnOp::Put(p) => put_size(p),
                TxnOp::Get(g) => g.range.start().len(),
                TxnOp::Delete(d) => d.range.start().len(),
                TxnOp::Txn(_) => 0,
            })
            .sum();
        let ctx = ErrorContext::new("txn").size(size);
        let resp = match self.call(ctx, self.kv().txn(txn)).await {
            Ok(resp) => resp.0,
            Err(StoreError::LeaseNotFound(_)) => {
                return Err(StoreError::LeaseNotFound(
                    self.missing_txn_lease(&req).await,
                ));
            }
            Err(StoreError::KeyNotFound { .. }) => {
                return Err(StoreError::KeyNotFound {
                    key: self.missing_txn_key(&req).await,
                });
            }
            Err(err) => return Err(self.txn_read_revision_error(&req, err).await),
        };
        let revision = convert::header_revision(resp.header.as_ref());
        Ok(convert::txn_response(resp, revision))
    }

    async fn watch(&self, req: Watch) -> Result<WatchStream> {
        limits::validate_watch(&req)?;
        let client = self.inner.client.clone();
        let config = self.inner.config.clone();
        match watch::establish(&client, &req, req.start_revision, config.request_timeout).await {
            Ok(conn) => Ok(watch::spawn(client, config, req, conn)),
            // The port reports a compacted start revision through the stream.
            Err(err @ StoreError::Compacted { .. }) => {
                let (sender, stream) = WatchStream::channel(1);
                let _ = sender.send(Err(err)).await;
                Ok(stream)
            }
            Err(err) => Err(err),
        }
    }

    async fn lease_grant(&self, ttl_secs: i64) -> Result<LeaseGrant> {
        self.lease_grant_with_id(0, ttl_secs).await
    }

    async fn lease_grant_with_id(&self, id: LeaseId, ttl_secs: i64) -> Result<LeaseGrant> {
        limits::validate_lease_ttl(ttl_secs)?;
        let ctx = ErrorContext::new("lease grant").ttl(ttl_secs).lease(id);
        let options = etcd_client::LeaseGrantOptions::new().with_id(id);
        let resp = self
            .call(
                ctx,
                self.inner
                    .client
                    .lease_client()
                    .grant(ttl_secs, Some(options)),
            )
            .await?;
        Ok(LeaseGrant {
            id: resp.id(),
            ttl: resp.ttl(),
        })
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        let resp = self
            .call(
                ErrorContext::new("lease list"),
                self.inner.client.lease_client().leases(),
            )
            .await?;
        Ok(resp.leases().iter().map(|l| l.id()).collect())
    }

    async fn status(&self) -> Result<StoreStatus> {
        let resp = self
            .call(
                ErrorContext::new("status"),
                self.inner.client.maintenance_client().status(),
            )
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        // etcd's status does not report the compaction point: a read at
        // revision 1 fails only when history was compacted, and that error
        // is completed with the compact revision (best effort).
        let compact_revision = match self
            .get(Get::key(vec![0u8]).at_revision(1).count_only())
            .await
        {
            Err(StoreError::Compacted {
                compact_revision, ..
            }) => compact_revision,
            _ => 0,
        };
        Ok(StoreStatus {
            revision,
            compact_revision,
            db_size_bytes: resp.db_size(),
            db_size_in_use_bytes: resp.raft_used_db_size(),
        })
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner
            .keep_alives
            .renew(&self.inner.client, id, self.request_timeout())
            .await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.keep_alives.forget(id);
        let ctx = ErrorContext::new("lease revoke").lease(id);
        self.call(ctx, self.inner.client.lease_client().revoke(id))
            .await
            .map(drop)
    }

    async fn lease_time_to_live(&self, id: LeaseId) -> Result<LeaseTimeToLive> {
        let ctx = ErrorContext::new("lease time-to-live").lease(id);
        let options = LeaseTimeToLiveOptions::new().with_keys();
        let resp = self
            .call(
                ctx,
                self.inner
                    .client
                    .lease_client()
                    .time_to_live(id, Some(options)),
            )
            .await?;
        // etcd answers an unknown or expired lease with TTL -1, not an error.
        if resp.ttl() < 0 {
            return Err(StoreError::LeaseNotFound(id));
        }
        Ok(LeaseTimeToLive {
            id,
            ttl: resp.ttl(),
            granted_ttl: resp.granted_ttl(),
            keys: resp.keys().to_vec(),
        })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let ctx = ErrorContext::new("compact").revision(revision);
        self.call(ctx, self.kv().compact(revision, None))
            .await
            .map(drop)
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.call(ErrorContext::new("current revision"), self.fetch_revision())
            .await
    }
}
