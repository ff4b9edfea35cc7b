//! [`World`]: what a farm knows, kept current event by event from its
//! reflectors (RC records, node records, node labels, intent, pod labels,
//! reality, health), never by listing a tree per decision. Each `apply_*`
//! takes one reflector event and returns the RCs it concerns, which the
//! farm queues; [`World::observe`] gives one RC's inputs to
//! [`crate::decide::decide`]. No IO and no clock: the caller passes `now`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use drover_health::{HealthResult, HealthState};
use drover_ids::{NodeId, PodId, RcId};
use drover_labels::Labels;
use drover_manifest::{Intent, LaunchStatus, NodeRecord, Reality};
use drover_store::Revision;
use drover_store::reflector::ReflectorEvent;
use tokio::time::Instant;

use crate::decide::PodObservation;
use crate::rc::{RC_ID_LABEL, RcSpec};
use crate::scheduler::{NodeInfo, Nodes, Resources};
use crate::store::RcRecord;

/// What the farm knows of one pod id on one node.
#[derive(Clone, Debug, Default)]
struct PodFacts {
    /// The intent's SHA, and what it asks of the node (zero for an
    /// invalid record).
    intent: Option<(drover_manifest::ManifestSha, Resources)>,
    /// The RC the pod's labels name.
    owner: Option<RcId>,
    reality: Option<Reality>,
    health: Option<HealthState>,
}

impl PodFacts {
    fn is_empty(&self) -> bool {
        self.intent.is_none()
            && self.owner.is_none()
            && self.reality.is_none()
            && self.health.is_none()
    }
}

/// One RC's pods as the farm sees them.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The RC's pods (intent labelled with its id).
    pub pods: Vec<PodObservation>,
    /// Its pods whose intent is another manifest than the RC's.
    pub stale: Vec<NodeId>,
    /// Nodes with intent for the RC's pod id that is not the RC's.
    pub occupied: BTreeSet<NodeId>,
    /// Its pods running its manifest.
    pub ready: u32,
    /// Its ready pods whose health passes.
    pub healthy: u32,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct World {
    rcs: BTreeMap<RcId, RcRecord>,
    /// Valid RCs by the pod id of their manifest.
    rcs_by_pod: HashMap<PodId, BTreeSet<RcId>>,
    records: HashMap<NodeId, NodeRecord>,
    labels: HashMap<NodeId, Labels>,
    /// When nodes with pods lost their record (or, for nodes never seen,
    /// when the farm started).
    lost_since: HashMap<NodeId, Instant>,
    started: Instant,
    nodes: Nodes,
    pods: HashMap<PodId, BTreeMap<NodeId, PodFacts>>,
    intent_revision: Revision,
    pod_labels_revision: Revision,
}

/// The pod id and node of a pod label id (`<node>/<pod>`).
fn pod_label_id(id: &str) -> Option<(NodeId, PodId)> {
    let (node, pod) = id.split_once('/')?;
    Some((node.parse().ok()?, pod.parse().ok()?))
}

fn intent_facts(intent: &Intent) -> (drover_manifest::ManifestSha, Resources) {
    match intent {
        Intent::Valid(manifest) => {
            let limits = manifest.resource_limits();
            (
                manifest.sha(),
                Resources::new(
                    limits.cpus.map_or(0, |c| u64::from(c.millis())),
                    limits.memory.map_or(0, |m| m.as_u64()),
                ),
            )
        }
        Intent::Invalid { sha, .. } => (*sha, Resources::default()),
    }
}

impl World {
    /// Knows nothing yet; nodes never seen count as lost since `now`.
    pub fn new(now: Instant) -> World {
        World {
            rcs: BTreeMap::new(),
            rcs_by_pod: HashMap::new(),
            records: HashMap::new(),
            labels: HashMap::new(),
            lost_since: HashMap::new(),
            started: now,
            nodes: Nodes::new(),
            pods: HashMap::new(),
            intent_revision: 0,
            pod_labels_revision: 0,
        }
    }

    /// The RC record `id`.
    pub fn rc(&self, id: &RcId) -> Option<&RcRecord> {
        self.rcs.get(id)
    }

    /// Every RC id.
    pub fn rc_ids(&self) -> Vec<RcId> {
        self.rcs.keys().cloned().collect()
    }

    /// The scheduler's view of the nodes.
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }

    /// The revision up to which the farm has seen its own intent and pod
    /// label writes: an RC whose last write is newer waits (expectations).
    pub fn seen_revision(&self) -> Revision {
        self.intent_revision.min(self.pod_labels_revision)
    }

    fn rcs_of_pod(&self, pod: &PodId) -> Vec<RcId> {
        self.rcs_by_pod
            .get(pod)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// RCs with pods on `node`, and RCs whose selector matches its labels.
    fn rcs_of_node(&self, node: &NodeId, labels: &[&Labels]) -> Vec<RcId> {
        let mut ids = BTreeSet::new();
        for (pod, on_nodes) in &self.pods {
            if on_nodes.get(node).is_some_and(|f| f.intent.is_some()) {
                ids.extend(self.rcs_of_pod(pod));
            }
        }
        for (id, record) in &self.rcs {
            if let RcRecord::Valid { spec, .. } = record
                && labels.iter().any(|l| spec.node_selector.matches(*l))
            {
                ids.insert(id.clone());
            }
        }
        ids.into_iter().collect()
    }

    fn index_rc(&mut self, id: &RcId, record: &RcRecord, add: bool) {
        if let RcRecord::Valid { spec, .. } = record {
            let pod = spec.manifest.id().clone();
            let entry = self.rcs_by_pod.entry(pod.clone()).or_default();
            if add {
                entry.insert(id.clone());
            } else {
                entry.remove(id);
                if entry.is_empty() {
                    self.rcs_by_pod.remove(&pod);
                }
            }
        }
    }

    fn set_rc(&mut self, id: RcId, record: Option<RcRecord>) {
        if let Some(old) = self.rcs.remove(&id) {
            self.index_rc(&id, &old, false);
        }
        if let Some(record) = record {
            self.index_rc(&id, &record, true);
            self.rcs.insert(id, record);
        }
    }

    /// An RC record event.
    pub fn apply_rc(&mut self, event: &ReflectorEvent<RcId, RcRecord>) -> Vec<RcId> {
        match event {
            ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
                let gone: Vec<RcId> = self
                    .rcs
                    .keys()
                    .filter(|id| !objects.contains_key(*id))
                    .cloned()
                    .collect();
                for id in &gone {
                    self.set_rc(id.clone(), None);
                }
                for (id, record) in objects {
                    self.set_rc(id.clone(), Some(record.clone()));
                }
                gone.into_iter().chain(objects.keys().cloned()).collect()
            }
            ReflectorEvent::Applied { id, object, .. } => {
                self.set_rc(id.clone(), Some(object.clone()));
                vec![id.clone()]
            }
            ReflectorEvent::Deleted { id, .. } => {
                self.set_rc(id.clone(), None);
                vec![id.clone()]
            }
        }
    }

    /// Brings the scheduler's entry for `node` in line with its record,
    /// labels and intents.
    fn refresh_node(&mut self, node: &NodeId) {
        let record = self.records.get(node);
        let labels = self.labels.get(node);
        if record.is_none() && labels.is_none() {
            self.nodes.remove(node);
            return;
        }
        let allocated = self.pods.values().fold(Resources::default(), |sum, on| {
            on.get(node)
                .and_then(|f| f.intent)
                .map_or(sum, |(_, needs)| sum.plus(needs))
        });
        let info = NodeInfo {
            live: record.is_some(),
            capacity: record.map_or(Resources::default(), |r| {
                Resources::new(r.capacity.millicpus, r.capacity.memory_bytes)
            }),
            allocated,
        };
        let labels = labels.cloned().unwrap_or_default();
        let same_labels = self.nodes.get(node).is_some_and(|(l, _)| *l == labels);
        match self.nodes.info_mut(node) {
            Some(current) if same_labels => *current = info,
            _ => self.nodes.upsert(node.clone(), labels, info),
        }
    }

    fn set_record(&mut self, node: &NodeId, record: Option<NodeRecord>, now: Instant) {
        match record {
            Some(record) => {
                self.lost_since.remove(node);
                self.records.insert(node.clone(), record);
            }
            None => {
                if self.records.remove(node).is_some() {
                    self.lost_since.insert(node.clone(), now);
                }
            }
        }
        self.refresh_node(node);
    }

    /// A node record event (`nodes/<node>`, bound to the agent's lease: a
    /// deletion is the node's loss).
    pub fn apply_node(
        &mut self,
        event: &ReflectorEvent<NodeId, NodeRecord>,
        now: Instant,
    ) -> Vec<RcId> {
        let mut touched: Vec<NodeId> = Vec::new();
        match event {
            ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
                let gone: Vec<NodeId> = self
                    .records
                    .keys()
                    .filter(|n| !objects.contains_key(*n))
                    .cloned()
                    .collect();
                for node in gone {
                    self.set_record(&node, None, now);
                    touched.push(node);
                }
                for (node, record) in objects {
                    if self.records.get(node) != Some(record) {
                        self.set_record(node, Some(record.clone()), now);
                        touched.push(node.clone());
                    }
                }
            }
            ReflectorEvent::Applied { id, object, .. } => {
                self.set_record(id, Some(object.clone()), now);
                touched.push(id.clone());
            }
            ReflectorEvent::Deleted { id, .. } => {
                self.set_record(id, None, now);
                touched.push(id.clone());
            }
        }
        self.rcs_of_nodes(&touched, &[])
    }

    fn rcs_of_nodes(&self, nodes: &[NodeId], previous: &[(NodeId, Labels)]) -> Vec<RcId> {
        let mut ids = BTreeSet::new();
        for node in nodes {
            let mut labels: Vec<&Labels> = self.labels.get(node).into_iter().collect();
            labels.extend(previous.iter().filter(|(n, _)| n == node).map(|(_, l)| l));
            ids.extend(self.rcs_of_node(node, &labels));
        }
        ids.into_iter().collect()
    }

    /// A node label event (`labels/node/<node>`).
    pub fn apply_node_labels(&mut self, event: &ReflectorEvent<String, Labels>) -> Vec<RcId> {
        let mut touched: Vec<NodeId> = Vec::new();
        let mut previous: Vec<(NodeId, Labels)> = Vec::new();
        let mut set = |world: &mut World, node: NodeId, labels: Option<Labels>| {
            if let Some(old) = world.labels.remove(&node) {
                previous.push((node.clone(), old));
            }
            if let Some(labels) = labels {
                world.labels.insert(node.clone(), labels);
            }
            world.refresh_node(&node);
            touched.push(node);
        };
        match event {
            ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
                let gone: Vec<NodeId> = self
                    .labels
                    .keys()
                    .filter(|n| !objects.contains_key(n.as_ref()))
                    .cloned()
                    .collect();
                for node in gone {
                    set(self, node, None);
                }
                for (id, labels) in objects {
                    if let Ok(node) = id.parse::<NodeId>()
                        && self.labels.get(&node) != Some(labels)
                    {
                        set(self, node, Some(labels.clone()));
                    }
                }
            }
            ReflectorEvent::Applied { id, object, .. } => {
                if let Ok(node) = id.parse() {
                    set(self, node, Some(object.clone()));
                }
            }
            ReflectorEvent::Deleted { id, .. } => {
                if let Ok(node) = id.parse() {
                    set(self, node, None);
                }
            }
        }
        self.rcs_of_nodes(&touched, &previous)
    }

    /// Edits the facts of `pod` on `node`, keeping the map free of empty
    /// entries and the node's allocation current when the intent changed.
    fn edit_pod(&mut self, node: &NodeId, pod: &PodId, edit: impl FnOnce(&mut PodFacts)) {
        let on_nodes = self.pods.entry(pod.clone()).or_default();
        let facts = on_nodes.entry(node.clone()).or_default();
        let before = facts
            .intent
            .map_or(Resources::default(), |(_, needs)| needs);
        edit(facts);
        let after = facts
            .intent
            .map_or(Resources::default(), |(_, needs)| needs);
        if facts.is_empty() {
            on_nodes.remove(node);
            if on_nodes.is_empty() {
                self.pods.remove(pod);
            }
        }
        if before != after
            && let Some(info) = self.nodes.info_mut(node)
        {
            info.allocated = info.allocated.minus(before).plus(after);
        }
    }

    /// Applies a keyed event stream to one field of the pod facts: the
    /// shared shape of the intent, pod label, reality and health events.
    fn apply_pod_field<I: Clone, T: Clone>(
        &mut self,
        event: &ReflectorEvent<I, T>,
        key: impl Fn(&I) -> Option<(NodeId, PodId)>,
        set: impl Fn(&mut PodFacts, Option<&T>) -> Option<RcId>,
        current: impl Fn(&World) -> Vec<(NodeId, PodId)>,
    ) -> Vec<RcId> {
        let mut ids: BTreeSet<RcId> = BTreeSet::new();
        let mut apply = |world: &mut World, node: &NodeId, pod: &PodId, value: Option<&T>| {
            let mut previous_owner = None;
            world.edit_pod(node, pod, |facts| previous_owner = set(facts, value));
            ids.extend(previous_owner);
            ids.extend(world.rcs_of_pod(pod));
            if let Some(owner) = world
                .pods
                .get(pod)
                .and_then(|on| on.get(node))
                .and_then(|f| f.owner.clone())
            {
                ids.insert(owner);
            }
        };
        match event {
            ReflectorEvent::Initial { objects, .. } | ReflectorEvent::Restarted { objects, .. } => {
                let listed: BTreeSet<(NodeId, PodId)> = objects.keys().filter_map(&key).collect();
                for (node, pod) in current(self) {
                    if !listed.contains(&(node.clone(), pod.clone())) {
                        apply(self, &node, &pod, None);
                    }
                }
                for (id, value) in objects {
                    if let Some((node, pod)) = key(id) {
                        apply(self, &node, &pod, Some(value));
                    }
                }
            }
            ReflectorEvent::Applied { id, object, .. } => {
                if let Some((node, pod)) = key(id) {
                    apply(self, &node, &pod, Some(object));
                }
            }
            ReflectorEvent::Deleted { id, .. } => {
                if let Some((node, pod)) = key(id) {
                    apply(self, &node, &pod, None);
                }
            }
        }
        ids.into_iter().collect()
    }

    fn pods_where(&self, has: impl Fn(&PodFacts) -> bool) -> Vec<(NodeId, PodId)> {
        self.pods
            .iter()
            .flat_map(|(pod, on)| {
                on.iter()
                    .filter(|(_, f)| has(f))
                    .map(|(node, _)| (node.clone(), pod.clone()))
            })
            .collect()
    }

    /// An intent event (`intent/<node>/<pod>`).
    pub fn apply_intent(&mut self, event: &ReflectorEvent<(NodeId, PodId), Intent>) -> Vec<RcId> {
        let ids = self.apply_pod_field(
            event,
            |id| Some(id.clone()),
            |facts, intent| {
                facts.intent = intent.map(intent_facts);
                None
            },
            |world| world.pods_where(|f| f.intent.is_some()),
        );
        self.intent_revision = self.intent_revision.max(event.revision());
        ids
    }

    /// A pod label event (`labels/pod/<node>/<pod>`): which RC a pod is.
    pub fn apply_pod_labels(&mut self, event: &ReflectorEvent<String, Labels>) -> Vec<RcId> {
        let ids = self.apply_pod_field(
            event,
            |id| pod_label_id(id),
            |facts, labels| {
                let owner = labels
                    .and_then(|l| l.get(RC_ID_LABEL))
                    .and_then(|id| id.parse().ok());
                std::mem::replace(&mut facts.owner, owner)
            },
            |world| world.pods_where(|f| f.owner.is_some()),
        );
        self.pod_labels_revision = self.pod_labels_revision.max(event.revision());
        ids
    }

    /// A reality event (`reality/<node>/<pod>`).
    pub fn apply_reality(&mut self, event: &ReflectorEvent<(NodeId, PodId), Reality>) -> Vec<RcId> {
        self.apply_pod_field(
            event,
            |id| Some(id.clone()),
            |facts, reality| {
                facts.reality = reality.cloned();
                None
            },
            |world| world.pods_where(|f| f.reality.is_some()),
        )
    }

    /// A health event (`health/<pod>/<node>`).
    pub fn apply_health(
        &mut self,
        event: &ReflectorEvent<(PodId, NodeId), HealthResult>,
    ) -> Vec<RcId> {
        self.apply_pod_field(
            event,
            |(pod, node)| Some((node.clone(), pod.clone())),
            |facts, result| {
                facts.health = result.map(|r| r.state);
                None
            },
            |world| world.pods_where(|f| f.health.is_some()),
        )
    }

    /// What `rc`'s pods look like at `now`.
    pub fn observe(&self, rc: &RcSpec, now: Instant) -> Observed {
        let mut observed = Observed::default();
        let Some(on_nodes) = self.pods.get(rc.manifest.id()) else {
            return observed;
        };
        for (node, facts) in on_nodes {
            let Some((sha, _)) = facts.intent else {
                continue;
            };
            if facts.owner.as_ref() != Some(&rc.id) {
                observed.occupied.insert(node.clone());
                continue;
            }
            if sha != rc.manifest.sha() {
                observed.stale.push(node.clone());
            }
            let lost_for = (!self.records.contains_key(node)).then(|| {
                let since = self.lost_since.get(node).copied().unwrap_or(self.started);
                now.saturating_duration_since(since)
            });
            let runs_ours = facts
                .reality
                .as_ref()
                .is_some_and(|r| r.sha == rc.manifest.sha() && r.status == LaunchStatus::Launched);
            if runs_ours {
                observed.ready += 1;
                if facts.health == Some(HealthState::Passing) {
                    observed.healthy += 1;
                }
            }
            observed.pods.push(PodObservation {
                node: node.clone(),
                reality: facts.reality.clone(),
                health: facts.health,
                lost_for,
            });
        }
        observed
    }

    /// How long until the first of `rc`'s lost pods passes `grace`, if any
    /// is still within it.
    pub fn next_grace_end(observed: &Observed, grace: Duration) -> Option<Duration> {
        observed
            .pods
            .iter()
            .filter_map(|p| p.lost_for)
            .filter(|lost| *lost < grace)
            .map(|lost| grace - lost)
            .min()
    }
}
