//! How many replicas an RC adds and which it removes: [`plan`], a pure
//! function of the RC's desired count and what its replicas look like.
//!
//! - A replica counts while its node is eligible (live, matching the node
//!   selector) or was lost (the agent's registration expired) less than
//!   the grace ago: a node that reboots gets its pods back, not twins.
//! - A replica on a node lost for longer than the grace is removed and
//!   replaced.
//! - A replica on a live node that no longer matches the selector is
//!   replaced first and removed only once the RC has its desired count of
//!   healthy replicas elsewhere (Nomad kills first and causes outages;
//!   Drover never does).
//! - Scaling down removes, in order: unhealthy replicas, then replicas not
//!   running yet, then the most recently started (the longest-running are
//!   the most trusted), ties by node id. It never removes below the
//!   desired count.

use std::time::Duration;

use drover_ids::NodeId;

/// What an RC's replica on one node looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// The node its intent is on.
    pub node: NodeId,
    /// Where the node stands.
    pub node_state: NodeState,
    /// What the agent reports of the pod.
    pub state: ReplicaState,
    /// When it started running (ms since the epoch), if it did.
    pub started_ms: Option<u64>,
}

/// A replica's node, as the RC sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Live and matching the node selector.
    Eligible,
    /// Live, but no longer matching the node selector.
    Ineligible,
    /// Its registration vanished this long ago.
    Lost(Duration),
}

/// A replica's pod, as its agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReplicaState {
    /// Running with the RC's manifest and its health passing.
    Healthy,
    /// Running, but its health is not passing (or not known yet).
    Unhealthy,
    /// Not running the RC's manifest (not launched yet, failed, another SHA).
    NotRunning,
}

/// What an RC does next.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New replicas to place.
    pub add: usize,
    /// Replicas to remove, by node, in the order they should go.
    pub remove: Vec<NodeId>,
}

/// The plan for an RC wanting `desired` replicas, with `replicas` as they
/// are and `lost_grace` for lost nodes (see the [module docs](self)).
pub fn plan(desired: usize, replicas: &[Replica], lost_grace: Duration) -> Plan {
    let mut counted: Vec<&Replica> = Vec::new();
    let mut expired: Vec<&Replica> = Vec::new();
    let mut ineligible: Vec<&Replica> = Vec::new();
    for replica in replicas {
        match replica.node_state {
            NodeState::Eligible => counted.push(replica),
            NodeState::Lost(for_how_long) if for_how_long < lost_grace => counted.push(replica),
            NodeState::Lost(_) => expired.push(replica),
            NodeState::Ineligible => ineligible.push(replica),
        }
    }
    let mut remove: Vec<NodeId> = expired.iter().map(|r| r.node.clone()).collect();
    if counted.len() > desired {
        counted.sort_by_key(|r| removal_rank(r));
        let excess = counted.len() - desired;
        remove.extend(counted.drain(..excess).map(|r| r.node.clone()));
    }
    let healthy = counted
        .iter()
        .filter(|r| r.state == ReplicaState::Healthy && r.node_state == NodeState::Eligible)
        .count();
    if healthy >= desired {
        ineligible.sort_by_key(|r| removal_rank(r));
        remove.extend(ineligible.iter().map(|r| r.node.clone()));
    }
    Plan {
        add: desired.saturating_sub(counted.len()),
        remove,
    }
}

/// Lower goes first: the worst state, then the most recent start (never
/// started counts as most recent), then the node id.
fn removal_rank(
    replica: &Replica,
) -> (
    std::cmp::Reverse<ReplicaState>,
    std::cmp::Reverse<u64>,
    NodeId,
) {
    (
        std::cmp::Reverse(replica.state),
        std::cmp::Reverse(replica.started_ms.unwrap_or(u64::MAX)),
        replica.node.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn replica(
        node: &str,
        node_state: NodeState,
        state: ReplicaState,
        started: Option<u64>,
    ) -> Replica {
        Replica {
            node: node.parse().unwrap(),
            node_state,
            state,
            started_ms: started,
        }
    }

    fn ids(nodes: &[NodeId]) -> Vec<&str> {
        nodes.iter().map(|n| n.as_ref()).collect()
    }

    use NodeState::*;
    use ReplicaState::*;

    #[test]
    fn scale_up_places_the_difference() {
        let replicas = [replica("a", Eligible, Healthy, Some(1))];
        assert_eq!(
            plan(3, &replicas, GRACE),
            Plan {
                add: 2,
                remove: vec![]
            }
        );
        assert_eq!(plan(0, &[], GRACE), Plan::default());
    }

    #[test]
    fn scale_down_removes_unhealthy_then_not_running_then_newest() {
        let replicas = [
            replica("old", Eligible, Healthy, Some(100)),
            replica("new", Eligible, Healthy, Some(300)),
            replica("mid", Eligible, Healthy, Some(200)),
            replica("sick", Eligible, Unhealthy, Some(50)),
            replica("pending", Eligible, NotRunning, None),
        ];
        let p = plan(2, &replicas, GRACE);
        assert_eq!(p.add, 0);
        assert_eq!(ids(&p.remove), ["pending", "sick", "new"]);
        let p = plan(1, &replicas, GRACE);
        assert_eq!(ids(&p.remove), ["pending", "sick", "new", "mid"]);
    }

    #[test]
    fn a_lost_node_is_replaced_only_after_the_grace() {
        let replicas = [
            replica("a", Eligible, Healthy, Some(1)),
            replica("gone", Lost(Duration::from_secs(10)), NotRunning, Some(1)),
        ];
        assert_eq!(
            plan(2, &replicas, GRACE),
            Plan::default(),
            "within the grace: wait"
        );
        let replicas = [
            replica("a", Eligible, Healthy, Some(1)),
            replica("gone", Lost(GRACE), NotRunning, Some(1)),
        ];
        let p = plan(2, &replicas, GRACE);
        assert_eq!((p.add, ids(&p.remove)), (1, vec!["gone"]));
    }

    #[test]
    fn an_ineligible_replica_goes_only_once_replacements_are_healthy() {
        let moving = replica("old", Ineligible, Healthy, Some(1));
        // Replacement placed first; the old one keeps serving.
        let p = plan(
            2,
            &[replica("a", Eligible, Healthy, Some(1)), moving.clone()],
            GRACE,
        );
        assert_eq!((p.add, p.remove.len()), (1, 0));
        // Replacement placed but not healthy yet: still no removal.
        let starting = replica("b", Eligible, NotRunning, None);
        let p = plan(
            2,
            &[
                replica("a", Eligible, Healthy, Some(1)),
                starting,
                moving.clone(),
            ],
            GRACE,
        );
        assert_eq!(p, Plan::default());
        // Healthy: now the old one goes.
        let p = plan(
            2,
            &[
                replica("a", Eligible, Healthy, Some(1)),
                replica("b", Eligible, Healthy, Some(2)),
                moving,
            ],
            GRACE,
        );
        assert_eq!((p.add, ids(&p.remove)), (0, vec!["old"]));
    }

    proptest::proptest! {
        /// Never below the desired count: after the plan, the replicas that
        /// count (kept or added) reach the desired count, and removals never
        /// take a counted replica below it.
        #[test]
        fn plans_never_go_below_desired(
            desired in 0usize..8,
            specs in proptest::collection::vec((0u8..4, 0u8..3, proptest::option::of(0u64..10)), 0..12),
        ) {
            let replicas: Vec<Replica> = specs
                .iter()
                .enumerate()
                .map(|(i, (node, state, started))| {
                    let node_state = match node {
                        0 => Eligible,
                        1 => Ineligible,
                        2 => Lost(Duration::from_secs(1)),
                        _ => Lost(GRACE * 2),
                    };
                    let state = [Healthy, Unhealthy, NotRunning][*state as usize];
                    replica(&format!("n{i}"), node_state, state, *started)
                })
                .collect();
            let p = plan(desired, &replicas, GRACE);
            let counts = |r: &Replica| matches!(r.node_state, Eligible) || matches!(r.node_state, Lost(d) if d < GRACE);
            let kept = replicas.iter().filter(|r| counts(r) && !p.remove.contains(&r.node)).count();
            proptest::prop_assert_eq!(kept + p.add, desired.max(kept));
            proptest::prop_assert!(kept + p.add >= desired);
            // Ineligible replicas go only when the healthy eligible ones
            // kept already reach the desired count.
            let healthy_kept = replicas
                .iter()
                .filter(|r| r.node_state == Eligible && r.state == Healthy && !p.remove.contains(&r.node))
                .count();
            for r in replicas.iter().filter(|r| r.node_state == Ineligible) {
                if p.remove.contains(&r.node) {
                    proptest::prop_assert!(healthy_kept >= desired);
                }
            }
        }
    }
}
