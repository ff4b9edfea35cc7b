//! [`Farm`]: the shell that runs the RC cores on the controller runtime.
//!
//! - **Ownership.** RCs hash onto the buckets of a
//!   [`drover_election::buckets::BucketSet`]; every farm campaigns for
//!   buckets on one lease and holds at most `ceil(N / farms)` of them, so
//!   RCs spread over live farms, and a dead farm's buckets (its RCs) are
//!   won by the others once its lease is gone. Each held bucket is an
//!   election term whose fencing token guards every write.
//! - **Watches.** One [`World`] per farm, fed by reflectors of RC records,
//!   node records, node labels, intent, pod labels, reality and health; each
//!   event queues the RCs it concerns. Nothing runs before every cache is
//!   ready; a periodic resync is only a safety net.
//! - **Reconcile** (one RC at a time, per-RC backoff from the runtime): skip
//!   RCs whose bucket this farm does not hold; wait while the RC's own
//!   writes are not yet seen (expectations); decide; write the intents, pod
//!   labels and an audit record in txns fenced by the bucket's term, under
//!   the store's op limit; then the status. A lost term cancels the work at
//!   once and the store refuses its writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_election::buckets::{Bucket, BucketElector, BucketSet};
use drover_election::{ElectionError, ElectorConfig, Term};
use drover_health::AllHealthCodec;
use drover_ids::{NodeId, RcId};
use drover_labels::{LabelCodec, LabelType, Labeler, Labels, Selector};
use drover_manifest::{ManifestSha, NodeCodec, RealityCodec, TolerantIntentCodec};
use drover_metrics::MetricsRegistry;
use drover_runtime::{Action, Context, Controller, Reconciler};
use drover_store::keys::Keys;
use drover_store::reflector::Reflector;
use drover_store::{Delete, Put, Store, TxnOp};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::audit::{AuditAction, AuditRecord};
use crate::decide::{Decision, decide};
use crate::rc::{RC_ID_LABEL, RcError, RcSpec};
use crate::scheduler::{DefaultScheduler, Scheduler};
use crate::status::{Condition, RcStatus};
use crate::store::{RcRecord, RcStore};
use crate::world::{Observed, World};

/// Pods changed per txn: two ops each (intent and pod labels) plus up to
/// three audit records stays under the store's 128-op limit.
pub const PODS_PER_TXN: usize = 60;

/// How a farm runs.
#[derive(Clone, Debug)]
pub struct FarmConfig {
    /// This farm's identity (in audit records, statuses and its election
    /// candidates).
    pub id: String,
    /// The key layout.
    pub keys: Keys,
    /// How many buckets RCs hash onto (more buckets spread RCs more evenly
    /// over farms; every farm must use the same number).
    pub buckets: u32,
    /// The farm's lease: a dead farm's RCs are re-owned this long after its
    /// last renewal (plus the store's expiry sweep).
    pub lease: Duration,
    /// How long pods on a node whose agent went away (its record vanished)
    /// count before they are replaced elsewhere. See
    /// [`DEFAULT_LOST_NODE_GRACE`].
    pub lost_node_grace: Duration,
    /// Only RCs whose labels this selector matches; farms with different
    /// partitions share no RCs (and elect in separate bucket sets).
    pub partition: Option<(String, Selector)>,
    /// RCs reconciled at once.
    pub concurrency: usize,
    /// How often every RC is queued anyway (a safety net).
    pub resync: Duration,
    /// Where metrics go.
    pub metrics: MetricsRegistry,
}

/// The default grace before a lost node's pods are replaced: 30 s.
///
/// A node's record already outlives its agent by the agent's lease TTL,
/// so by the time a node counts as lost it has been silent for that long.
/// Kubernetes then waits 300 s more: five minutes at reduced capacity for
/// every dead machine. Nomad replaces at once: an agent restart or a short
/// partition (whose pods keep running, since agents never stop pods when
/// the control plane is unreachable) then runs two copies and churns. Thirty
/// seconds covers an agent restart or upgrade and a brief partition, and
/// keeps the capacity dip of a real loss short.
pub const DEFAULT_LOST_NODE_GRACE: Duration = Duration::from_secs(30);

impl FarmConfig {
    /// Defaults: 16 buckets, a 10 s lease, [`DEFAULT_LOST_NODE_GRACE`],
    /// every RC, 16 at once, a resync every 5 minutes, no metrics.
    pub fn new(id: impl Into<String>, keys: Keys) -> FarmConfig {
        FarmConfig {
            id: id.into(),
            keys,
            buckets: 16,
            lease: Duration::from_secs(10),
            lost_node_grace: DEFAULT_LOST_NODE_GRACE,
            partition: None,
            concurrency: 16,
            resync: Duration::from_secs(300),
            metrics: MetricsRegistry::disabled(),
        }
    }
}

/// An intent the farm wrote: node -> the SHA written (`None`: deleted).
type Written = (NodeId, Option<ManifestSha>);

/// What one RC's own writes must have become before it is decided again.
#[derive(Clone, Debug)]
struct Expectation {
    intents: Vec<Written>,
    /// When to stop waiting (a write whose event never came).
    until: Instant,
}

/// How long a farm waits to see its own writes before it decides anyway.
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A replication controller farm; see the [module docs](self).
pub struct Farm<S: Store> {
    store: S,
    config: FarmConfig,
    scheduler: Arc<dyn Scheduler>,
}

impl<S: Store> std::fmt::Debug for Farm<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Farm")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Farm<S> {
    /// A farm with the default scheduler.
    pub fn new(store: S, config: FarmConfig) -> Self {
        Farm {
            store,
            config,
            scheduler: Arc::new(DefaultScheduler),
        }
    }

    /// Places new replicas with `scheduler` instead.
    pub fn with_scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Runs until `shutdown`: campaigns for buckets and reconciles the RCs
    /// of the held ones. Held buckets are released (after their work
    /// drained) on shutdown, so other farms take over at once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RcError> {
        let span = tracing::info_span!("farm", farm = %self.config.id);
        self.run_in_span(shutdown).instrument(span).await
    }

    async fn run_in_span(self, shutdown: CancellationToken) -> Result<(), RcError> {
        let config = self.config;
        let keys = config.keys.clone();
        let store = self.store;
        let election = |context: &str| {
            let context = context.to_owned();
            move |source| RcError::Election { context, source }
        };
        let queue = match &config.partition {
            Some((name, _)) => name.as_str(),
            None => "all",
        };
        let set = BucketSet::new("rc-farm", queue, config.buckets)
            .map_err(election("the farm's partition name"))?;
        let world = Arc::new(Mutex::new(World::new(Instant::now())));
        let held: Arc<Mutex<HashMap<u32, Term<S>>>> = Arc::default();
        let reconciler = FarmReconciler {
            farm: config.id.clone(),
            rcs: RcStore::new(store.clone(), keys.clone()),
            labeler: Labeler::with_keys(store.clone(), keys.clone()),
            world: world.clone(),
            set: set.clone(),
            held: held.clone(),
            partition: config.partition.as_ref().map(|(_, s)| s.clone()),
            scheduler: self.scheduler,
            grace: config.lost_node_grace,
            expectations: Mutex::default(),
            statuses: Mutex::default(),
        };
        let controller = {
            let (w1, w2, w3, w4, w5, w6, w7) = (
                world.clone(),
                world.clone(),
                world.clone(),
                world.clone(),
                world.clone(),
                world.clone(),
                world.clone(),
            );
            let resync_world = world.clone();
            Controller::new("rc-farm", store.clone(), reconciler)
                .concurrency(config.concurrency.max(1))
                .metrics(&config.metrics)
                .resync(config.resync, move || resync_world.lock().rc_ids())
                .watch(
                    RcStore::new(store.clone(), keys.clone()).rc_reflector(),
                    move |e| w1.lock().apply_rc(e),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.nodes_prefix(),
                        NodeCodec::new(keys.clone()),
                    ),
                    move |e| w2.lock().apply_node(e, Instant::now()),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.labels_type_prefix(LabelType::Node),
                        LabelCodec::new(keys.clone()),
                    ),
                    move |e| w3.lock().apply_node_labels(e),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.intent_prefix(),
                        TolerantIntentCodec::new(keys.clone()),
                    ),
                    move |e| w4.lock().apply_intent(e),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.labels_type_prefix(LabelType::Pod),
                        LabelCodec::new(keys.clone()),
                    ),
                    move |e| w5.lock().apply_pod_labels(e),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.reality_prefix(),
                        RealityCodec::new(keys.clone()),
                    ),
                    move |e| w6.lock().apply_reality(e),
                )
                .watch(
                    Reflector::prefix(
                        store.clone(),
                        keys.health_prefix(),
                        AllHealthCodec::new(keys.clone()),
                    ),
                    move |e| w7.lock().apply_health(e),
                )
        };
        let trigger = controller.trigger();
        let elector = {
            let (world, set, held) = (world.clone(), set.clone(), held.clone());
            BucketElector::builder(
                store.clone(),
                keys.elections_prefix(),
                set.clone(),
            )
            .config(
                ElectorConfig::default()
                    .with_identity(config.id.clone())
                    .with_timing(
                        config.lease,
                        config.lease.mul_f64(2.0 / 3.0),
                        (config.lease / 5).max(Duration::from_millis(100)),
                    )
                    .with_release_on_cancel(true),
            )
            .metrics(Arc::new(drover_election::RegistryMetrics::new(
                &config.metrics,
            )))
            .on_promoted(move |bucket: Bucket, term: Term<S>| {
                let (world, held, trigger) = (world.clone(), held.clone(), trigger.clone());
                async move {
                    tracing::info!(bucket = %bucket, token = term.token(), "bucket won");
                    held.lock().insert(bucket.index, term.clone());
                    let mine: Vec<RcId> = world
                        .lock()
                        .rc_ids()
                        .into_iter()
                        .filter(|id| bucket.has(id.as_ref()))
                        .collect();
                    for id in mine {
                        if !trigger.send(id).await {
                            break;
                        }
                    }
                    term.cancelled().await;
                    held.lock().remove(&bucket.index);
                    tracing::info!(bucket = %bucket, reason = ?term.end_reason(), "bucket lost");
                }
            })
            .build()
            .map_err(election("building the farm's elector"))?
        };
        let work = shutdown.child_token();
        let controller_task = tokio::spawn(controller.run(work.clone()).in_current_span());
        let elected = elector.run(shutdown.clone()).await;
        work.cancel();
        let ran = controller_task.await;
        elected.map_err(|source| RcError::Election {
            context: "the farm's bucket election ended".to_owned(),
            source,
        })?;
        match ran {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(RcError::Runtime { source }),
            // A panic in a reconcile is a bug: let it surface as one.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

/// The reconcile of one RC.
struct FarmReconciler<S: Store> {
    farm: String,
    rcs: RcStore<S>,
    labeler: Labeler<S>,
    world: Arc<Mutex<World>>,
    set: BucketSet,
    held: Arc<Mutex<HashMap<u32, Term<S>>>>,
    partition: Option<Selector>,
    scheduler: Arc<dyn Scheduler>,
    grace: Duration,
    expectations: Mutex<HashMap<RcId, Expectation>>,
    /// The status this farm last wrote per RC (written again only on change).
    statuses: Mutex<HashMap<RcId, RcStatus>>,
}

/// One pod change.
#[derive(Clone, Debug)]
enum PodWrite {
    Schedule(NodeId),
    Unschedule(NodeId),
    Replace(NodeId),
}

/// What the reconcile found to do, decided under the world's lock.
enum Step {
    Nothing,
    Invalid(String),
    Wait(Duration),
    Act {
        spec: Box<RcSpec>,
        revision: i64,
        writes: Vec<PodWrite>,
        remove_record: bool,
        status: RcStatus,
        requeue: Option<Duration>,
    },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn condition(kind: &str, ok: bool, reason: impl Into<String>) -> Condition {
    Condition {
        kind: kind.to_owned(),
        ok,
        reason: reason.into(),
    }
}

/// The RC's status from what was observed and decided.
fn status_of(spec: &RcSpec, observed: &Observed, decision: &Decision, grace: Duration) -> RcStatus {
    let current = observed.pods.len() as u32;
    let mut conditions = vec![
        match &decision.shortfall {
            Some(s) => condition(
                "Scheduled",
                false,
                format!(
                    "{} replicas have no node: of {} nodes matching, {} are not live, {} already run the pod, {} have no room",
                    s.unplaced, s.matched, s.not_live, s.occupied, s.full
                ),
            ),
            None => condition("Scheduled", true, ""),
        },
        condition(
            "Ready",
            observed.healthy >= spec.replicas_desired,
            format!("{} of {} healthy", observed.healthy, spec.replicas_desired),
        ),
    ];
    let lost: Vec<String> = observed
        .pods
        .iter()
        .filter(|p| p.lost_for.is_some_and(|d| d < grace))
        .map(|p| p.node.to_string())
        .collect();
    if !lost.is_empty() {
        conditions.push(condition(
            "NodesLost",
            false,
            format!("replaced after {grace:?} unless back: {}", lost.join(",")),
        ));
    }
    if spec.disabled {
        conditions.push(condition(
            "Disabled",
            true,
            "the farm leaves its pods alone",
        ));
    }
    if spec.deleting {
        conditions.push(condition(
            "Deleting",
            true,
            format!("{current} pods left to unschedule"),
        ));
    }
    RcStatus {
        desired: spec.replicas_desired,
        current,
        ready: observed.ready,
        healthy: observed.healthy,
        conditions,
        ..RcStatus::default()
    }
}

impl<S: Store> FarmReconciler<S> {
    /// `None` once the RC's writes in flight are all visible in the world
    /// (or waited for too long), else how long to wait at most.
    fn pending_writes(&self, world: &World, rc: &RcSpec, now: Instant) -> Option<Duration> {
        let mut expectations = self.expectations.lock();
        let expectation = expectations.get(&rc.id)?;
        if now >= expectation.until {
            tracing::warn!(rc = %rc.id, "own writes not seen in time; deciding anyway");
            expectations.remove(&rc.id);
            return None;
        }
        let observed = world.observe(rc, now);
        let seen = |(node, want): &Written| match want {
            // Written: the pod is the RC's, with the manifest written (or
            // any, if the RC changed meanwhile).
            Some(sha) => {
                observed.pods.iter().any(|p| &p.node == node)
                    && (*sha != rc.manifest.sha() || !observed.stale.contains(node))
            }
            // Deleted: no intent of the pod id there at all.
            None => {
                !observed.pods.iter().any(|p| &p.node == node) && !observed.occupied.contains(node)
            }
        };
        if expectation.intents.iter().all(seen) {
            expectations.remove(&rc.id);
            None
        } else {
            Some(expectation.until - now)
        }
    }

    fn step(&self, id: &RcId, now: Instant) -> Step {
        let world = self.world.lock();
        let (spec, revision) = match world.rc(id) {
            None => return Step::Nothing,
            Some(RcRecord::Invalid { reason }) => return Step::Invalid(reason.clone()),
            Some(RcRecord::Valid { spec, revision }) => (spec.clone(), *revision),
        };
        if let Some(partition) = &self.partition
            && !partition.matches(&spec.labels)
        {
            return Step::Nothing;
        }
        if let Some(wait) = self.pending_writes(&world, &spec, now) {
            return Step::Wait(wait);
        }
        let observed = world.observe(&spec, now);
        let mut requeue = World::next_grace_end(&observed, self.grace);
        let (decision, writes, remove_record) = if spec.deleting {
            let writes: Vec<PodWrite> = observed
                .pods
                .iter()
                .map(|p| PodWrite::Unschedule(p.node.clone()))
                .collect();
            let done = writes.is_empty();
            (Decision::default(), writes, done)
        } else {
            let decision = decide(
                &spec,
                &observed.pods,
                world.nodes(),
                &observed.occupied,
                self.scheduler.as_ref(),
                self.grace,
            );
            let mut writes: Vec<PodWrite> = decision
                .schedule
                .iter()
                .cloned()
                .map(PodWrite::Schedule)
                .collect();
            writes.extend(
                decision
                    .unschedule
                    .iter()
                    .cloned()
                    .map(PodWrite::Unschedule),
            );
            if !spec.disabled {
                writes.extend(
                    observed
                        .stale
                        .iter()
                        .filter(|n| !decision.unschedule.contains(n))
                        .cloned()
                        .map(PodWrite::Replace),
                );
            }
            (decision, writes, false)
        };
        if spec.disabled {
            requeue = None;
        }
        let status = status_of(&spec, &observed, &decision, self.grace);
        Step::Act {
            spec,
            revision,
            writes,
            remove_record,
            status,
            requeue,
        }
    }

    /// The ops of a batch of pod writes, and the audit records for it.
    fn ops(
        &self,
        spec: &RcSpec,
        batch: &[PodWrite],
        term: &Term<S>,
    ) -> Result<(Vec<TxnOp>, Vec<Written>), RcError> {
        let pod = spec.manifest.id();
        let keys = self.rcs.keys();
        let mut labels = Labels::try_from_pairs(
            spec.pod_labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| RcError::Invalid {
            field: "pod_labels".to_owned(),
            reason: e.to_string(),
        })?;
        labels
            .insert(RC_ID_LABEL, spec.id.as_ref())
            .map_err(|e| RcError::Invalid {
                field: "id".to_owned(),
                reason: e.to_string(),
            })?;
        let label_err = |e: drover_labels::LabelError| RcError::Invalid {
            field: "pod_labels".to_owned(),
            reason: e.to_string(),
        };
        let mut ops = Vec::with_capacity(batch.len() * 2 + 3);
        let mut expected = Vec::with_capacity(batch.len());
        let mut audited: Vec<(AuditAction, Vec<String>)> = Vec::new();
        let mut note = |action: AuditAction, node: &NodeId| match audited
            .iter_mut()
            .find(|(a, _)| *a == action)
        {
            Some((_, nodes)) => nodes.push(node.to_string()),
            None => audited.push((action, vec![node.to_string()])),
        };
        for write in batch {
            match write {
                PodWrite::Schedule(node) | PodWrite::Replace(node) => {
                    ops.push(TxnOp::Put(Put::new(
                        keys.intent(node, pod),
                        spec.manifest.raw_bytes().to_vec(),
                    )));
                    if let PodWrite::Schedule(_) = write {
                        ops.push(
                            self.labeler
                                .put_op(LabelType::Pod, &format!("{node}/{pod}"), &labels)
                                .map_err(label_err)?,
                        );
                        note(AuditAction::Schedule, node);
                    } else {
                        note(AuditAction::Replace, node);
                    }
                    expected.push((node.clone(), Some(spec.manifest.sha())));
                }
                PodWrite::Unschedule(node) => {
                    ops.push(TxnOp::Delete(Delete::key(keys.intent(node, pod))));
                    ops.push(
                        self.labeler
                            .delete_op(LabelType::Pod, &format!("{node}/{pod}"))
                            .map_err(label_err)?,
                    );
                    note(AuditAction::Unschedule, node);
                    expected.push((node.clone(), None));
                }
            }
        }
        for (action, nodes) in audited {
            let record = AuditRecord::new(
                &format!("farm:{}", self.farm),
                action,
                vec![spec.id.to_string()],
                None,
                Some(serde_json::json!({
                    "nodes": nodes,
                    "sha": spec.manifest.sha().to_string(),
                    "token": term.token(),
                })),
            );
            ops.push(self.rcs.audit_op(&record));
        }
        Ok((ops, expected))
    }

    /// Commits `ops` fenced by `term`, giving up at once when the term ends.
    async fn commit(&self, term: &Term<S>, ops: Vec<TxnOp>) -> Result<Option<i64>, RcError> {
        tokio::select! {
            biased;
            () = term.cancelled() => Ok(None),
            committed = term.commit_fenced(ops) => match committed {
                Ok(response) => Ok(Some(response.revision)),
                Err(ElectionError::NotLeader { .. } | ElectionError::TermEnded { .. }) => Ok(None),
                Err(ElectionError::Store(source)) => Err(RcError::Store {
                    context: "fenced write".to_owned(),
                    source,
                }),
                Err(source) => Err(RcError::Election {
                    context: "fenced write".to_owned(),
                    source,
                }),
            },
        }
    }

    async fn write_status(
        &self,
        term: &Term<S>,
        id: &RcId,
        mut status: RcStatus,
        revision: i64,
        last_error: Option<String>,
    ) -> Result<(), RcError> {
        status.owner = self.farm.clone();
        status.token = term.token();
        status.observed_revision = revision;
        status.last_error = last_error;
        status.updated_at_ms = now_ms();
        if self
            .statuses
            .lock()
            .get(id)
            .is_some_and(|last| last.same_as(&status))
        {
            return Ok(());
        }
        if self
            .commit(term, vec![self.rcs.status_op(id, &status)])
            .await?
            .is_some()
        {
            self.statuses.lock().insert(id.clone(), status);
        }
        Ok(())
    }
}

impl<S: Store> Reconciler<S> for FarmReconciler<S> {
    type Key = RcId;
    type Error = RcError;

    async fn reconcile(&self, id: &RcId, _ctx: &Context<S>) -> Result<Action, RcError> {
        let bucket = self.set.owner(id.as_ref()).index;
        let Some(term) = self
            .held
            .lock()
            .get(&bucket)
            .filter(|t| t.is_valid())
            .cloned()
        else {
            self.expectations.lock().remove(id);
            self.statuses.lock().remove(id);
            return Ok(Action::Done);
        };
        let span = tracing::debug_span!("rc", rc = %id, token = term.token());
        async {
            match self.step(id, Instant::now()) {
                Step::Nothing => {
                    self.expectations.lock().remove(id);
                    Ok(Action::Done)
                }
                Step::Wait(wait) => Ok(Action::RequeueAfter(wait)),
                Step::Invalid(reason) => {
                    tracing::warn!(reason, "RC record is invalid; not managed");
                    self.write_status(&term, id, RcStatus::default(), 0, Some(reason))
                        .await?;
                    Ok(Action::Done)
                }
                Step::Act {
                    spec,
                    revision,
                    writes,
                    remove_record,
                    status,
                    requeue,
                } => {
                    for batch in writes.chunks(PODS_PER_TXN) {
                        let (ops, expected) = self.ops(&spec, batch, &term)?;
                        match self.commit(&term, ops).await {
                            Ok(Some(_)) => {
                                let mut expectations = self.expectations.lock();
                                let entry =
                                    expectations
                                        .entry(id.clone())
                                        .or_insert_with(|| Expectation {
                                            intents: Vec::new(),
                                            until: Instant::now() + EXPECTATION_TIMEOUT,
                                        });
                                entry.intents.extend(expected);
                            }
                            Ok(None) => return Ok(Action::Done),
                            Err(e) => {
                                let message = e.to_string();
                                let _ = self
                                    .write_status(
                                        &term,
                                        id,
                                        status.clone(),
                                        revision,
                                        Some(message),
                                    )
                                    .await;
                                return Err(e);
                            }
                        }
                    }
                    if !writes.is_empty() {
                        tracing::debug!(writes = writes.len(), "pods written");
                    }
                    if remove_record {
                        let record = AuditRecord::new(
                            &format!("farm:{}", self.farm),
                            AuditAction::Deleted,
                            vec![id.to_string()],
                            Some(serde_json::from_slice(&spec.to_json()).unwrap_or_default()),
                            None,
                        );
                        let mut ops: Vec<TxnOp> = self.rcs.remove_ops(id).into();
                        ops.push(self.rcs.audit_op(&record));
                        if self.commit(&term, ops).await?.is_some() {
                            tracing::info!("RC deleted");
                            self.statuses.lock().remove(id);
                        }
                        return Ok(Action::Done);
                    }
                    self.write_status(&term, id, status, revision, None).await?;
                    Ok(match requeue {
                        Some(after) => Action::RequeueAfter(after),
                        None => Action::Done,
                    })
                }
            }
        }
        .instrument(span)
        .await
    }
}
