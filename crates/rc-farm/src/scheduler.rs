//! Where a replication controller's new pods go: the [`Scheduler`] port and
//! [`DefaultScheduler`], pure functions of a [`Nodes`] view.
//!
//! A node is eligible for a pod when it is live (its agent holds its
//! registration), its labels match the RC's node selector, it does not
//! already have intent for this pod id (an RC's replicas share one pod id,
//! so a node holds at most one of them), and what it has left fits the
//! pod's resource limits (capacity minus the limits of the pods intended
//! on it; a pod without limits always fits). Eligible nodes are ranked by
//! topology spread (fewest of the RC's pods in the node's domain, e.g. its
//! `zone`), then by allocation after placing the pod (least-allocated
//! spreads load, most-allocated bin-packs), then by node id, so a decision
//! is deterministic. Nodes are found through a [`LabelIndex`], never by
//! scanning every node per decision.

use std::collections::{BTreeMap, BTreeSet};

use drover_ids::NodeId;
use drover_labels::{LabelIndex, Labels, Selector};

/// CPU and memory, as capacities, allocations or a pod's needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
}

impl Resources {
    /// `millicpus` and `memory_bytes`.
    pub const fn new(millicpus: u64, memory_bytes: u64) -> Resources {
        Resources {
            millicpus,
            memory_bytes,
        }
    }

    /// The sum, saturating.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_add(other.millicpus),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// The difference, saturating at zero.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            millicpus: self.millicpus.saturating_sub(other.millicpus),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }

    fn fits_within(self, capacity: Resources) -> bool {
        self.millicpus <= capacity.millicpus && self.memory_bytes <= capacity.memory_bytes
    }

    /// The larger of the CPU and memory shares of `capacity` used, in
    /// millionths (a resource with no capacity counts as unused).
    fn share_of(self, capacity: Resources) -> u64 {
        let share = |used: u64, total: u64| {
            if total == 0 {
                0
            } else {
                (u128::from(used) * 1_000_000 / u128::from(total)) as u64
            }
        };
        share(self.millicpus, capacity.millicpus)
            .max(share(self.memory_bytes, capacity.memory_bytes))
    }
}

/// What the scheduler knows of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The agent holds the node's registration.
    pub live: bool,
    /// What the node offers.
    pub capacity: Resources,
    /// The resource limits of the pods intended on it.
    pub allocated: Resources,
}

/// The nodes, their labels and their allocations: the scheduler's view,
/// kept up to date from watches by the farm.
#[derive(Debug, Default)]
pub struct Nodes {
    index: LabelIndex<NodeId>,
    info: BTreeMap<NodeId, NodeInfo>,
}

impl Nodes {
    /// No nodes.
    pub fn new() -> Nodes {
        Nodes::default()
    }

    /// Adds or replaces `node`.
    pub fn upsert(&mut self, node: NodeId, labels: Labels, info: NodeInfo) {
        self.index.insert(node.clone(), labels);
        self.info.insert(node, info);
    }

    /// What is known of `node`, to change its liveness, capacity or
    /// allocation (its labels change through [`Nodes::upsert`], which
    /// re-indexes them).
    pub fn info_mut(&mut self, node: &NodeId) -> Option<&mut NodeInfo> {
        self.info.get_mut(node)
    }

    /// Every node, in id order.
    pub fn ids(&self) -> impl Iterator<Item = &NodeId> {
        self.info.keys()
    }

    /// Forgets `node`.
    pub fn remove(&mut self, node: &NodeId) {
        self.index.remove(node);
        self.info.remove(node);
    }

    /// What is known of `node`.
    pub fn get(&self, node: &NodeId) -> Option<(&Labels, &NodeInfo)> {
        Some((self.index.get(node)?, self.info.get(node)?))
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.info.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }

    /// The nodes `selector` matches, live or not.
    pub fn select(&self, selector: &Selector) -> Vec<&NodeId> {
        self.index.select(selector)
    }
}

/// How eligible nodes are preferred after topology spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// The least allocated node first: spreads load (the default).
    #[default]
    Spread,
    /// The most allocated node that fits first: packs pods onto few nodes.
    BinPack,
}

/// A request to place `count` more replicas of one RC's pod.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Nodes the RC may use.
    pub selector: &'a Selector,
    /// The pod's resource limits.
    pub needs: Resources,
    /// How many more replicas to place.
    pub count: usize,
    /// Nodes that already have intent for this pod id (from this RC or
    /// any other writer): never chosen.
    pub occupied: &'a BTreeSet<NodeId>,
    /// Nodes the RC's replicas run on now, for topology spread.
    pub current: &'a [NodeId],
    /// Spread replicas evenly over the values of this node label.
    pub spread_by: Option<&'a str>,
    /// Least- or most-allocated first.
    pub strategy: Strategy,
}

/// The scheduler's answer: the chosen nodes, best first, and, when fewer
/// than asked could be placed, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// One node per placed replica.
    pub nodes: Vec<NodeId>,
    /// Why the rest could not be placed (`None` when all were).
    pub shortfall: Option<Shortfall>,
}

/// Why replicas were left unplaced: the count of nodes the selector
/// matched and what ruled each out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shortfall {
    /// Replicas not placed.
    pub unplaced: usize,
    /// Nodes the selector matches.
    pub matched: usize,
    /// Of those, not live.
    pub not_live: usize,
    /// Of those, already holding this pod.
    pub occupied: usize,
    /// Of those, without room for the pod's limits.
    pub full: usize,
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} replica(s) could not be placed: the selector matches {} node(s); {} not live, {} already run this pod, {} lack capacity",
            self.unplaced, self.matched, self.not_live, self.occupied, self.full
        )
    }
}

/// Chooses nodes for new replicas.
pub trait Scheduler: Send + Sync + 'static {
    /// Up to `request.count` distinct eligible nodes, best first.
    fn place(&self, nodes: &Nodes, request: &Request<'_>) -> Placement;
}

/// Eligibility, topology spread, then least- or most-allocated, then node
/// id (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultScheduler;

impl Scheduler for DefaultScheduler {
    fn place(&self, nodes: &Nodes, request: &Request<'_>) -> Placement {
        let mut shortfall = Shortfall::default();
        let domain = |node: &NodeId| -> Option<String> {
            let labels = nodes.index.get(node)?;
            Some(
                labels
                    .get(request.spread_by?)
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        // Candidates with their allocation, updated as pods are placed.
        let mut candidates: Vec<(NodeId, Resources, Resources)> = Vec::new();
        for node in nodes.select(request.selector) {
            shortfall.matched += 1;
            let Some(info) = nodes.info.get(node) else {
                continue;
            };
            if !info.live {
                shortfall.not_live += 1;
            } else if request.occupied.contains(node) {
                shortfall.occupied += 1;
            } else if !info
                .allocated
                .plus(request.needs)
                .fits_within(info.capacity)
            {
                shortfall.full += 1;
            } else {
                candidates.push((node.clone(), info.allocated, info.capacity));
            }
        }
        let mut per_domain: BTreeMap<String, usize> = BTreeMap::new();
        if request.spread_by.is_some() {
            for node in request.current {
                if let Some(d) = domain(node) {
                    *per_domain.entry(d).or_default() += 1;
                }
            }
        }
        let mut chosen = Vec::with_capacity(request.count.min(candidates.len()));
        while chosen.len() < request.count && !candidates.is_empty() {
            let score = |(node, allocated, capacity): &(NodeId, Resources, Resources)| {
                let spread = domain(node).map_or(0, |d| per_domain.get(&d).copied().unwrap_or(0));
                let share = allocated.plus(request.needs).share_of(*capacity);
                let fill = match request.strategy {
                    Strategy::Spread => share,
                    Strategy::BinPack => 1_000_000u64.saturating_sub(share),
                };
                (spread, fill)
            };
            let best = (0..candidates.len())
                .min_by(|&a, &b| {
                    score(&candidates[a])
                        .cmp(&score(&candidates[b]))
                        .then_with(|| candidates[a].0.cmp(&candidates[b].0))
                })
                .expect("candidates is not empty");
            let (node, _, _) = candidates.swap_remove(best);
            if let Some(d) = domain(&node) {
                *per_domain.entry(d).or_default() += 1;
            }
            chosen.push(node);
        }
        let unplaced = request.count - chosen.len();
        Placement {
            nodes: chosen,
            shortfall: (unplaced > 0).then_some(Shortfall {
                unplaced,
                ..shortfall
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn node(id: &str) -> NodeId {
        id.parse().unwrap()
    }

    fn nodes(specs: &[(&str, &str, bool, Resources, Resources)]) -> Nodes {
        let mut nodes = Nodes::new();
        for (id, zone, live, capacity, allocated) in specs {
            nodes.upsert(
                node(id),
                Labels::try_from_pairs([("zone", *zone), ("role", "web")]).unwrap(),
                NodeInfo {
                    live: *live,
                    capacity: *capacity,
                    allocated: *allocated,
                },
            );
        }
        nodes
    }

    fn request<'a>(
        selector: &'a Selector,
        occupied: &'a BTreeSet<NodeId>,
        current: &'a [NodeId],
        count: usize,
    ) -> Request<'a> {
        Request {
            selector,
            needs: Resources::new(500, GIB),
            count,
            occupied,
            current,
            spread_by: None,
            strategy: Strategy::Spread,
        }
    }

    const BIG: Resources = Resources::new(4000, 8 * GIB);

    #[test]
    fn only_live_matching_unoccupied_nodes_with_room_are_chosen() {
        let nodes = nodes(&[
            ("a", "z1", true, BIG, Resources::new(0, 0)),
            ("b", "z1", false, BIG, Resources::new(0, 0)),
            ("c", "z2", true, BIG, Resources::new(3800, 0)),
            ("d", "z2", true, BIG, Resources::new(0, 0)),
            ("e", "z3", true, BIG, Resources::new(0, 0)),
        ]);
        let selector: Selector = "zone in (z1,z2)".parse().unwrap();
        let occupied = BTreeSet::from([node("d")]);
        let placement = DefaultScheduler.place(&nodes, &request(&selector, &occupied, &[], 3));
        assert_eq!(placement.nodes, [node("a")]);
        let shortfall = placement.shortfall.unwrap();
        assert_eq!(
            shortfall,
            Shortfall {
                unplaced: 2,
                matched: 4,
                not_live: 1,
                occupied: 1,
                full: 1,
            }
        );
        assert!(
            shortfall.to_string().contains("matches 4 node(s)"),
            "{shortfall}"
        );
    }

    #[test]
    fn least_allocated_spreads_and_most_allocated_packs() {
        let nodes = nodes(&[
            ("a", "z", true, BIG, Resources::new(2000, 0)),
            ("b", "z", true, BIG, Resources::new(0, 0)),
            ("c", "z", true, BIG, Resources::new(1000, 6 * GIB)),
        ]);
        let selector = Selector::everything();
        let none = BTreeSet::new();
        let spread = DefaultScheduler.place(&nodes, &request(&selector, &none, &[], 3));
        assert_eq!(spread.nodes, [node("b"), node("a"), node("c")]);
        assert_eq!(spread.shortfall, None);
        let mut pack = request(&selector, &none, &[], 1);
        pack.strategy = Strategy::BinPack;
        // c is the fullest (memory 7/8 after placement).
        assert_eq!(DefaultScheduler.place(&nodes, &pack).nodes, [node("c")]);
    }

    #[test]
    fn topology_spread_counts_current_replicas_and_each_placement() {
        let free = Resources::new(0, 0);
        let nodes = nodes(&[
            ("a1", "a", true, BIG, free),
            ("a2", "a", true, BIG, free),
            ("a3", "a", true, BIG, free),
            ("b1", "b", true, BIG, free),
            ("b2", "b", true, BIG, free),
            ("c1", "c", true, BIG, free),
        ]);
        let selector = Selector::everything();
        let current = [node("a1")];
        let occupied = BTreeSet::from([node("a1")]);
        let mut req = request(&selector, &occupied, &current, 4);
        req.spread_by = Some("zone");
        let placed = DefaultScheduler.place(&nodes, &req).nodes;
        // b and c are empty: one each first, then a (1 already) vs b/c (1).
        assert_eq!(placed, [node("b1"), node("c1"), node("a2"), node("b2")]);
    }

    #[test]
    fn pods_without_limits_fit_anywhere_and_ties_break_by_node_id() {
        let nodes = nodes(&[
            ("n2", "z", true, Resources::default(), Resources::default()),
            ("n1", "z", true, Resources::default(), Resources::default()),
        ]);
        let selector = Selector::everything();
        let none = BTreeSet::new();
        let mut req = request(&selector, &none, &[], 2);
        req.needs = Resources::default();
        assert_eq!(
            DefaultScheduler.place(&nodes, &req).nodes,
            [node("n1"), node("n2")]
        );
    }

    proptest::proptest! {
        /// Whatever the nodes: chosen nodes are distinct, eligible, at most
        /// as many as asked, and a shortfall is reported exactly when fewer
        /// were placed.
        #[test]
        fn placements_are_distinct_eligible_and_accounted(
            specs in proptest::collection::vec(
                (0u8..4, proptest::bool::ANY, 0u64..5000, 0u64..8, proptest::bool::ANY),
                0..30,
            ),
            count in 0usize..40,
            spread in proptest::bool::ANY,
        ) {
            let mut nodes = Nodes::new();
            let mut occupied = BTreeSet::new();
            for (i, (zone, live, cpu_used, mem_used, taken)) in specs.iter().enumerate() {
                let id = node(&format!("n{i}"));
                if *taken {
                    occupied.insert(id.clone());
                }
                nodes.upsert(
                    id,
                    Labels::try_from_pairs([("zone", format!("z{zone}"))]).unwrap(),
                    NodeInfo {
                        live: *live,
                        capacity: BIG,
                        allocated: Resources::new(*cpu_used, mem_used * GIB),
                    },
                );
            }
            let selector: Selector = "zone notin (z3)".parse().unwrap();
            let mut req = request(&selector, &occupied, &[], count);
            req.spread_by = spread.then_some("zone");
            let placement = DefaultScheduler.place(&nodes, &req);
            let distinct: BTreeSet<_> = placement.nodes.iter().collect();
            proptest::prop_assert_eq!(distinct.len(), placement.nodes.len());
            proptest::prop_assert!(placement.nodes.len() <= count);
            for chosen in &placement.nodes {
                let (labels, info) = nodes.get(chosen).unwrap();
                proptest::prop_assert!(selector.matches(labels));
                proptest::prop_assert!(info.live && !occupied.contains(chosen));
                proptest::prop_assert!(info.allocated.plus(req.needs).fits_within(info.capacity));
            }
            match placement.shortfall {
                None => proptest::prop_assert_eq!(placement.nodes.len(), count),
                Some(s) => proptest::prop_assert_eq!(s.unplaced, count - placement.nodes.len()),
            }
        }
    }
}
