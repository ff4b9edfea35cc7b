//! One RC's decision: what its replicas look like (from the nodes, reality
//! and health the farm observed) and which intents to write and delete.
//! Pure: [`decide`] takes what was read and returns what to do; the farm
//! writes it, fenced.

use std::collections::BTreeSet;
use std::time::Duration;

use drover_health::HealthState;
use drover_ids::NodeId;
use drover_manifest::{LaunchStatus, Reality};

use crate::rc::RcSpec;
use crate::replicas::{self, NodeState, Replica, ReplicaState};
use crate::scheduler::{Nodes, Request, Resources, Scheduler, Shortfall};

/// What the farm observed of one of the RC's pods (an intent of the RC's
/// pod id on `node`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodObservation {
    /// The node the intent is on.
    pub node: NodeId,
    /// The node's reality record for the pod.
    pub reality: Option<Reality>,
    /// The pod's health on the node.
    pub health: Option<HealthState>,
    /// How long ago the node's record vanished, when it did.
    pub lost_for: Option<Duration>,
}

/// What the RC does now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Nodes to write the RC's intent on.
    pub schedule: Vec<NodeId>,
    /// Nodes to delete the RC's intent from, in order.
    pub unschedule: Vec<NodeId>,
    /// Why fewer replicas than needed could be placed.
    pub shortfall: Option<Shortfall>,
}

/// The pod's resource limits, as the scheduler counts them.
pub fn needs(rc: &RcSpec) -> Resources {
    let limits = rc.manifest.resource_limits();
    Resources::new(
        limits.cpus.map_or(0, |c| u64::from(c.millis())),
        limits.memory.map_or(0, |m| m.as_u64()),
    )
}

/// How one observed pod counts for its RC.
pub fn replica(rc: &RcSpec, pod: &PodObservation, nodes: &Nodes) -> Replica {
    let node_state = match (pod.lost_for, nodes.get(&pod.node)) {
        (Some(for_how_long), _) => NodeState::Lost(for_how_long),
        (None, None) => NodeState::Lost(Duration::ZERO),
        (None, Some((_, info))) if !info.live => NodeState::Lost(Duration::ZERO),
        (None, Some((labels, _))) if rc.node_selector.matches(labels) => NodeState::Eligible,
        (None, Some(_)) => NodeState::Ineligible,
    };
    let runs_ours = pod
        .reality
        .as_ref()
        .filter(|r| r.sha == rc.manifest.sha() && r.status == LaunchStatus::Launched);
    let state = match (runs_ours, pod.health) {
        (None, _) => ReplicaState::NotRunning,
        (Some(_), Some(HealthState::Passing)) => ReplicaState::Healthy,
        (Some(_), _) => ReplicaState::Unhealthy,
    };
    Replica {
        node: pod.node.clone(),
        node_state,
        state,
        started_ms: runs_ours.and_then(|r| r.since_ms),
    }
}

/// The RC's decision. `occupied`: nodes with intent for the RC's pod id
/// written by someone else (never chosen). Failsafes: a disabled RC does
/// nothing; when no live node matches the selector (a farm whose node view
/// went empty, or a selector nothing matches any more) nothing is removed.
pub fn decide(
    rc: &RcSpec,
    pods: &[PodObservation],
    nodes: &Nodes,
    occupied: &BTreeSet<NodeId>,
    scheduler: &dyn Scheduler,
    lost_grace: Duration,
) -> Decision {
    if rc.disabled {
        return Decision::default();
    }
    let replicas: Vec<Replica> = pods.iter().map(|p| replica(rc, p, nodes)).collect();
    let plan = replicas::plan(rc.replicas_desired as usize, &replicas, lost_grace);
    let any_eligible = nodes
        .select(&rc.node_selector)
        .into_iter()
        .any(|n| nodes.get(n).is_some_and(|(_, info)| info.live));
    let unschedule = if any_eligible {
        plan.remove
    } else {
        Vec::new()
    };
    let mut taken: BTreeSet<NodeId> = occupied.clone();
    taken.extend(pods.iter().map(|p| p.node.clone()));
    let current: Vec<NodeId> = replicas
        .iter()
        .filter(|r| r.node_state == NodeState::Eligible && !unschedule.contains(&r.node))
        .map(|r| r.node.clone())
        .collect();
    let placement = (plan.add > 0).then(|| {
        scheduler.place(
            nodes,
            &Request {
                selector: &rc.node_selector,
                needs: needs(rc),
                count: plan.add,
                occupied: &taken,
                current: &current,
                spread_by: rc.placement.spread_by.as_deref(),
                strategy: rc.placement.strategy,
            },
        )
    });
    let (schedule, shortfall) = placement.map_or((Vec::new(), None), |p| (p.nodes, p.shortfall));
    Decision {
        schedule,
        unschedule,
        shortfall,
    }
}

#[cfg(test)]
mod tests {
    use drover_labels::Labels;
    use drover_manifest::Reality;

    use super::*;
    use crate::scheduler::{DefaultScheduler, NodeInfo};

    fn rc(replicas: u32) -> RcSpec {
        RcSpec::from_yaml(&format!(
            "id: web\nreplicas_desired: {replicas}\nnode_selector: role=web\n\
             manifest: {{id: web, launchables: {{s: {{type: process, command: /bin/web}}}}, \
             resource_limits: {{cpus: 1, memory: 1G}}}}\n"
        ))
        .unwrap()
    }

    fn node(id: &str) -> NodeId {
        id.parse().unwrap()
    }

    fn cluster(specs: &[(&str, &str, bool)]) -> Nodes {
        let mut nodes = Nodes::new();
        for (id, role, live) in specs {
            nodes.upsert(
                node(id),
                Labels::try_from_pairs([("role", *role)]).unwrap(),
                NodeInfo {
                    live: *live,
                    capacity: Resources::new(4000, 8 << 30),
                    allocated: Resources::default(),
                },
            );
        }
        nodes
    }

    fn running(rc: &RcSpec, on: &str, health: HealthState, since: u64) -> PodObservation {
        PodObservation {
            node: node(on),
            reality: Some(Reality {
                since_ms: Some(since),
                ..Reality::new(rc.manifest.sha(), LaunchStatus::Launched)
            }),
            health: Some(health),
            lost_for: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn scale_up_schedules_on_eligible_free_nodes() {
        let nodes = cluster(&[("a", "web", true), ("b", "web", true), ("c", "db", true)]);
        let rc = rc(3);
        let pods = [running(&rc, "a", HealthState::Passing, 1)];
        let d = decide(
            &rc,
            &pods,
            &nodes,
            &BTreeSet::new(),
            &DefaultScheduler,
            GRACE,
        );
        assert_eq!(d.schedule, [node("b")]);
        assert!(d.unschedule.is_empty());
        let short = d.shortfall.unwrap();
        assert_eq!((short.unplaced, short.matched, short.occupied), (1, 2, 1));
    }

    #[test]
    fn the_rcs_replica_states_come_from_reality_and_health() {
        let nodes = cluster(&[("a", "web", true), ("b", "db", true)]);
        let rc = rc(1);
        let other_sha = PodObservation {
            reality: Some(Reality::new(
                rc_with_other_manifest().manifest.sha(),
                LaunchStatus::Launched,
            )),
            ..running(&rc, "a", HealthState::Passing, 5)
        };
        assert_eq!(
            replica(&rc, &other_sha, &nodes).state,
            ReplicaState::NotRunning
        );
        let sick = running(&rc, "a", HealthState::Critical, 5);
        assert_eq!(replica(&rc, &sick, &nodes).state, ReplicaState::Unhealthy);
        let moved = running(&rc, "b", HealthState::Passing, 5);
        let r = replica(&rc, &moved, &nodes);
        assert_eq!(
            (r.node_state, r.state, r.started_ms),
            (NodeState::Ineligible, ReplicaState::Healthy, Some(5))
        );
        let gone = PodObservation {
            lost_for: Some(Duration::from_secs(3)),
            ..running(&rc, "x", HealthState::Passing, 5)
        };
        assert_eq!(
            replica(&rc, &gone, &nodes).node_state,
            NodeState::Lost(Duration::from_secs(3))
        );
    }

    fn rc_with_other_manifest() -> RcSpec {
        RcSpec::from_yaml(
            "id: web\nreplicas_desired: 1\nnode_selector: role=web\n\
             manifest: {id: web, launchables: {s: {type: process, command: /bin/other}}}\n",
        )
        .unwrap()
    }

    #[test]
    fn no_eligible_node_means_nothing_is_removed() {
        // Every node lost its role label at once (or the view is empty):
        // the replicas are ineligible, but nothing is unscheduled.
        let nodes = cluster(&[("a", "db", true), ("b", "db", true)]);
        let rc = rc(1);
        let pods = [
            running(&rc, "a", HealthState::Passing, 1),
            running(&rc, "b", HealthState::Passing, 2),
        ];
        let d = decide(
            &rc,
            &pods,
            &nodes,
            &BTreeSet::new(),
            &DefaultScheduler,
            GRACE,
        );
        assert!(d.unschedule.is_empty(), "{d:?}");
        let empty = decide(
            &rc,
            &pods,
            &Nodes::new(),
            &BTreeSet::new(),
            &DefaultScheduler,
            GRACE,
        );
        assert!(empty.unschedule.is_empty(), "{empty:?}");
    }

    #[test]
    fn a_disabled_rc_does_nothing() {
        let nodes = cluster(&[("a", "web", true)]);
        let mut rc = rc(1);
        rc.disabled = true;
        assert_eq!(
            decide(&rc, &[], &nodes, &BTreeSet::new(), &DefaultScheduler, GRACE),
            Decision::default()
        );
    }

    #[test]
    fn scale_down_and_transfer_go_through_the_plan() {
        let nodes = cluster(&[
            ("a", "web", true),
            ("b", "web", true),
            ("c", "web", true),
            ("d", "db", true),
        ]);
        let rc = rc(1);
        let pods = [
            running(&rc, "a", HealthState::Passing, 1),
            running(&rc, "b", HealthState::Passing, 2),
            running(&rc, "d", HealthState::Passing, 0),
        ];
        let d = decide(
            &rc,
            &pods,
            &nodes,
            &BTreeSet::from([node("c")]),
            &DefaultScheduler,
            GRACE,
        );
        // b is the newest: it goes; a stays healthy, so d (ineligible) goes too.
        assert_eq!(d.unschedule, [node("b"), node("d")]);
        assert!(d.schedule.is_empty());
    }
}
