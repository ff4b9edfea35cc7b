use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use drover_ids::{NodeId, PodId};

use crate::error::{HealthError, Result};
use crate::result::{HealthResult, typed_id};
use crate::state::HealthState;

/// The health of one pod across nodes: the results that exist, plus the
/// nodes expected to run the pod, which count as unknown while they have
/// no result ("missing").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodHealth {
    pod: PodId,
    results: BTreeMap<NodeId, HealthResult>,
    expected: BTreeSet<NodeId>,
}

/// One node's standing in a [`PodHealth`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeState<'a> {
    pub node: &'a NodeId,
    /// [`HealthState::Unknown`] when `missing`.
    pub state: HealthState,
    /// Expected, but no result exists.
    pub missing: bool,
}

/// How many nodes are in each state. `unknown` includes the `missing` ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub passing: usize,
    pub warning: usize,
    pub unknown: usize,
    pub critical: usize,
    /// Nodes expected to report that have no result (counted in `unknown`).
    pub missing: usize,
}

impl StateCounts {
    /// All nodes.
    pub fn total(&self) -> usize {
        self.passing + self.warning + self.unknown + self.critical
    }

    /// Nodes in `state`.
    pub fn get(&self, state: HealthState) -> usize {
        match state {
            HealthState::Passing => self.passing,
            HealthState::Warning => self.warning,
            HealthState::Unknown => self.unknown,
            HealthState::Critical => self.critical,
        }
    }

    /// Nodes at `threshold` or better.
    pub fn at_least(&self, threshold: HealthState) -> usize {
        HealthState::ALL
            .into_iter()
            .filter(|s| *s >= threshold)
            .map(|s| self.get(s))
            .sum()
    }
}

impl PodHealth {
    /// No results and no expected nodes yet. The pod id may be given as
    /// text or as a [`PodId`].
    pub fn new(pod: impl Into<String>) -> Result<Self> {
        Ok(PodHealth {
            pod: typed_id(pod)?,
            results: BTreeMap::new(),
            expected: BTreeSet::new(),
        })
    }

    /// An aggregate of `results`, all of which must be for `pod` and for
    /// distinct nodes.
    pub fn from_results(
        pod: impl Into<String>,
        results: impl IntoIterator<Item = HealthResult>,
    ) -> Result<Self> {
        let mut health = PodHealth::new(pod)?;
        for r in results {
            if health.results.contains_key(&r.node) {
                return Err(HealthError::DuplicateNode { node: r.node });
            }
            health.record(r)?;
        }
        Ok(health)
    }

    pub fn pod(&self) -> &PodId {
        &self.pod
    }

    /// Declares nodes that should report; those without a result count as
    /// missing (unknown).
    pub fn expect_nodes<N: Into<String>>(
        &mut self,
        nodes: impl IntoIterator<Item = N>,
    ) -> Result<()> {
        let nodes = nodes
            .into_iter()
            .map(typed_id)
            .collect::<Result<Vec<NodeId>>>()?;
        self.expected.extend(nodes);
        Ok(())
    }

    /// Adds or replaces one node's result, returning the previous one.
    /// Nothing changes when the result is invalid or for another pod.
    pub fn record(&mut self, result: HealthResult) -> Result<Option<HealthResult>> {
        result.validate()?;
        if result.pod != self.pod {
            return Err(HealthError::PodMismatch {
                expected: self.pod.clone(),
                found: result.pod,
            });
        }
        Ok(self.results.insert(result.node.clone(), result))
    }

    /// Drops a node's result (its key was deleted or its lease expired).
    /// An expected node then counts as missing. `node` is a [`NodeId`] or
    /// its text.
    pub fn forget<N: Ord + ?Sized>(&mut self, node: &N) -> Option<HealthResult>
    where
        NodeId: Borrow<N>,
    {
        self.results.remove(node)
    }

    /// The result of `node`, if one exists.
    pub fn result<N: Ord + ?Sized>(&self, node: &N) -> Option<&HealthResult>
    where
        NodeId: Borrow<N>,
    {
        self.results.get(node)
    }

    /// Every result, by node.
    pub fn results(&self) -> &BTreeMap<NodeId, HealthResult> {
        &self.results
    }

    /// The state of `node`; unknown when it has no result.
    pub fn state<N: Ord + ?Sized>(&self, node: &N) -> HealthState
    where
        NodeId: Borrow<N>,
    {
        HealthState::or_missing(self.results.get(node).map(|r| r.state))
    }

    /// Every node with a result or expected, in node order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeState<'_>> + '_ {
        let missing = self
            .expected
            .iter()
            .filter(|n| !self.results.contains_key(*n))
            .map(|n| NodeState {
                node: n,
                state: HealthState::Unknown,
                missing: true,
            });
        let present = self.results.iter().map(|(n, r)| NodeState {
            node: n,
            state: r.state,
            missing: false,
        });
        let mut all: Vec<_> = present.chain(missing).collect();
        all.sort_by(|a, b| a.node.cmp(b.node));
        all.into_iter()
    }

    /// Nodes least healthy first (ties in node order): the order in which a
    /// replication updates nodes, so healthy ones stay up longest.
    pub fn worst_first(&self) -> Vec<NodeState<'_>> {
        let mut nodes: Vec<_> = self.nodes().collect();
        nodes.sort_by(|a, b| a.state.cmp(&b.state).then_with(|| a.node.cmp(b.node)));
        nodes
    }

    pub fn counts(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for n in self.nodes() {
            match n.state {
                HealthState::Passing => c.passing += 1,
                HealthState::Warning => c.warning += 1,
                HealthState::Unknown => c.unknown += 1,
                HealthState::Critical => c.critical += 1,
            }
            c.missing += usize::from(n.missing);
        }
        c
    }

    /// Nodes at `threshold` or better.
    pub fn healthy_count(&self, threshold: HealthState) -> usize {
        self.nodes().filter(|n| n.state >= threshold).count()
    }

    /// True when every node is at `threshold` or better (and vacuously for
    /// no nodes).
    pub fn all_at_least(&self, threshold: HealthState) -> bool {
        self.nodes().all(|n| n.state >= threshold)
    }

    /// The minimum-healthy gate of a replication: at least `min` nodes at
    /// `threshold` or better.
    pub fn meets_minimum(&self, threshold: HealthState, min: usize) -> bool {
        self.healthy_count(threshold) >= min
    }

    /// The worst state over all nodes, `None` without nodes.
    pub fn worst(&self) -> Option<HealthState> {
        self.nodes().map(|n| n.state).min()
    }

    /// The best state over all nodes, `None` without nodes.
    pub fn best(&self) -> Option<HealthState> {
        self.nodes().map(|n| n.state).max()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use HealthState::*;

    fn r(node: &str, state: HealthState) -> HealthResult {
        HealthResult::new("web", node, state, "", UNIX_EPOCH).unwrap()
    }

    fn sample() -> PodHealth {
        let mut h = PodHealth::from_results(
            "web",
            [
                r("n1", Passing),
                r("n2", Critical),
                r("n3", Warning),
                r("n4", Passing),
            ],
        )
        .unwrap();
        h.expect_nodes(["n1", "n2", "n5", "n0"]).unwrap();
        h
    }

    #[test]
    fn counts_with_missing_as_unknown() {
        let h = sample();
        let c = h.counts();
        assert_eq!(
            c,
            StateCounts {
                passing: 2,
                warning: 1,
                unknown: 2,
                critical: 1,
                missing: 2
            }
        );
        assert_eq!(c.total(), 6);
        assert_eq!(c.at_least(Warning), 3);
        assert_eq!(c.at_least(Unknown), 5);
        assert_eq!(h.state("n5"), Unknown);
        assert_eq!(h.state("never-heard-of"), Unknown);
        assert_eq!(h.state("n2"), Critical);
    }

    #[test]
    fn worst_first_order() {
        let h = sample();
        let order: Vec<_> = h
            .worst_first()
            .iter()
            .map(|n| (n.node.as_str(), n.state, n.missing))
            .collect();
        assert_eq!(
            order,
            [
                ("n2", Critical, false),
                ("n0", Unknown, true),
                ("n5", Unknown, true),
                ("n3", Warning, false),
                ("n1", Passing, false),
                ("n4", Passing, false),
            ]
        );
        assert_eq!(h.worst(), Some(Critical));
        assert_eq!(h.best(), Some(Passing));
        assert_eq!(PodHealth::new("web").unwrap().worst(), None);
    }

    #[test]
    fn thresholds_and_minimum_gate() {
        let mut h = sample();
        assert_eq!(h.healthy_count(Passing), 2);
        assert_eq!(h.healthy_count(Warning), 3);
        assert_eq!(h.healthy_count(Critical), 6);
        assert!(h.meets_minimum(Warning, 3));
        assert!(!h.meets_minimum(Warning, 4));
        assert!(!h.all_at_least(Unknown));
        assert!(h.all_at_least(Critical));
        // A missing node reporting passing raises the count; losing a
        // result lowers it again (it becomes missing, not critical).
        h.record(r("n5", Passing)).unwrap();
        assert!(h.meets_minimum(Warning, 4));
        assert_eq!(h.forget("n5").map(|r| r.state), Some(Passing));
        assert_eq!(h.state("n5"), Unknown);
        assert!(!h.meets_minimum(Warning, 4));
        assert!(PodHealth::new("web").unwrap().all_at_least(Passing));
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut h = sample();
        let before = h.clone();
        let other = HealthResult::new("db", "n1", Passing, "", UNIX_EPOCH).unwrap();
        assert!(matches!(
            h.record(other),
            Err(HealthError::PodMismatch { ref expected, ref found }) if expected == "web" && found == "db"
        ));
        // A result for an invalid node cannot be made, so cannot be recorded.
        assert!(matches!(
            HealthResult::new("web", "a/b", Passing, "", UNIX_EPOCH),
            Err(HealthError::InvalidId { field: "node", .. })
        ));
        assert!(matches!(
            h.expect_nodes(["n9", ""]),
            Err(HealthError::InvalidId { field: "node", .. })
        ));
        assert_eq!(h, before);
        assert!(matches!(
            PodHealth::from_results("web", [r("n1", Passing), r("n1", Critical)]),
            Err(HealthError::DuplicateNode { ref node }) if node == "n1"
        ));
        assert!(matches!(
            PodHealth::new("a b"),
            Err(HealthError::InvalidId { field: "pod", .. })
        ));
    }
}
