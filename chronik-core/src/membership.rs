//! Cluster membership changes: the rules that decide whether a change is
//! safe, and the step function that walks an accepted change through Raft's
//! joint consensus. Pure: values in, values out.
//!
//! A change is recorded in the metadata group when accepted
//! ([`crate::MetadataCommand::BeginMembershipChange`]) and cleared when done,
//! so at most one is in flight and a new metadata leader resumes an
//! interrupted one: [`next_step`] derives what to do next from the recorded
//! change and the Raft configuration alone, including after a crash between
//! entering and leaving a joint configuration.
//!
//! Adding node N: N joins as a learner and catches up (a snapshot, then the
//! log), is promoted through a joint configuration (`C_old` + `C_old ∪ {N}`),
//! which is left once committed. Removing N: leadership first moves away if
//! N leads, then the joint configuration `C_old` + `C_old \ {N}`, then leave.

use crate::error::Error;
use crate::metadata::{validate_addr, MetadataState};
use crate::types::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A requested change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MembershipChange {
    Add(NodeInfo),
    Remove(NodeId),
}

impl MembershipChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            MembershipChange::Add(n) => n.id,
            MembershipChange::Remove(id) => *id,
        }
    }
}

impl std::fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipChange::Add(n) => write!(f, "add node {} ({})", n.id, n.peer_addr),
            MembershipChange::Remove(id) => write!(f, "remove node {id}"),
        }
    }
}

/// The metadata group's Raft configuration, as the deciding node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfView {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration; non-empty while joint.
    pub outgoing: BTreeSet<NodeId>,
}

impl ConfView {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node)
            || self.learners.contains(&node)
            || self.outgoing.contains(&node)
    }
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// Checks a requested change against the applied metadata, the Raft
/// configuration and the voters the leader has heard from recently
/// (`alive`). Refuses with a typed error; nothing changes either way.
pub fn validate(
    change: &MembershipChange,
    metadata: &MetadataState,
    conf: &ConfView,
    alive: &BTreeSet<NodeId>,
) -> Result<(), Error> {
    if let Some(c) = metadata.membership_in_flight() {
        return Err(Error::ChangeInProgress {
            change: c.to_string(),
        });
    }
    if conf.is_joint() {
        return Err(Error::ChangeInProgress {
            change: "leaving a joint configuration".into(),
        });
    }
    let alive_voters = conf.voters.intersection(alive).count();
    match change {
        MembershipChange::Add(node) => {
            if node.id == 0 {
                return Err(Error::invalid("node id 0 is reserved"));
            }
            for a in [&node.peer_addr, &node.client_addr] {
                validate_addr(a).map_err(Error::invalid)?;
            }
            if let Some(rack) = &node.rack {
                crate::metadata::validate_rack(rack).map_err(Error::invalid)?;
            }
            if node.peer_addr == node.client_addr {
                return Err(Error::invalid(format!(
                    "node {} uses {} for both peer and client traffic",
                    node.id, node.peer_addr
                )));
            }
            if metadata.node(node.id).is_some() || conf.contains(node.id) {
                return Err(Error::NodeExists { node: node.id });
            }
            if metadata.was_removed(node.id) {
                return Err(Error::invalid(format!(
                    "node id {} belonged to a removed node; ids are never reused",
                    node.id
                )));
            }
            for other in metadata.nodes() {
                for a in [&node.peer_addr, &node.client_addr] {
                    if *a == other.peer_addr || *a == other.client_addr {
                        return Err(Error::AddressInUse {
                            addr: a.clone(),
                            node: other.id,
                        });
                    }
                }
            }
            // Joint consensus needs a majority of the old voters and of the
            // new ones (counting the new node, which will have caught up).
            let need_old = majority(conf.voters.len());
            let need_new = majority(conf.voters.len() + 1);
            if alive_voters < need_old || alive_voters + 1 < need_new {
                return Err(Error::QuorumAtRisk {
                    node: node.id,
                    alive: alive_voters as u32,
                    needed: need_new.max(need_old) as u32,
                });
            }
            Ok(())
        }
        MembershipChange::Remove(id) => {
            if metadata.node(*id).is_none() {
                return Err(Error::UnknownNode { node: *id });
            }
            metadata.check_replicas_can_move_off(*id)?;
            if !conf.voters.contains(id) {
                // A learner (a join that never finished) leaves at once.
                return Ok(());
            }
            let remaining: BTreeSet<NodeId> =
                conf.voters.iter().copied().filter(|v| v != id).collect();
            if remaining.is_empty() {
                return Err(Error::QuorumAtRisk {
                    node: *id,
                    alive: 0,
                    needed: 1,
                });
            }
            let alive_remaining = remaining.intersection(alive).count();
            let need_new = majority(remaining.len());
            let need_old = majority(conf.voters.len());
            if alive_remaining < need_new || alive_voters < need_old {
                return Err(Error::QuorumAtRisk {
                    node: *id,
                    alive: alive_remaining as u32,
                    needed: need_new as u32,
                });
            }
            Ok(())
        }
    }
}

/// What the metadata leader does next for the change in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add the node as a learner (after compacting the metadata log, so it
    /// starts from a snapshot that carries the configuration).
    AddLearner(NodeId),
    /// Wait: the learner is still catching up.
    AwaitCatchUp(NodeId),
    /// Enter the joint configuration that promotes or removes the node.
    EnterJoint {
        promote: Option<NodeId>,
        remove: Option<NodeId>,
    },
    /// Remove a node that is only a learner (no joint step needed).
    RemoveLearner(NodeId),
    /// Leave the joint configuration (committed joint entry seen).
    LeaveJoint,
    /// The leader is being removed: hand leadership to this voter first.
    TransferLeadership(NodeId),
    /// The leaving node still hosts partition replicas: move them to other
    /// nodes first (one partition at a time).
    MoveReplicasOff(NodeId),
    /// Record the change as done in metadata.
    Finish,
    /// A rolled-back move's new replica is out of the configuration:
    /// record the move as undone.
    Abort,
}

/// The next step of `change`, given the configuration, this (leading) node,
/// whether a learner being added has caught up, the most caught-up other
/// voter (for a leadership transfer), and whether a node being removed
/// still hosts partition replicas.
pub fn next_step(
    change: &MembershipChange,
    conf: &ConfView,
    me: NodeId,
    learner_caught_up: bool,
    best_other_voter: Option<NodeId>,
    hosts_replicas: bool,
) -> Option<Step> {
    if conf.is_joint() {
        return Some(Step::LeaveJoint);
    }
    if let MembershipChange::Remove(id) = change {
        if hosts_replicas {
            return Some(Step::MoveReplicasOff(*id));
        }
    }
    match change {
        MembershipChange::Add(n) => {
            let id = n.id;
            if conf.voters.contains(&id) {
                Some(Step::Finish)
            } else if conf.learners.contains(&id) {
                if learner_caught_up {
                    Some(Step::EnterJoint {
                        promote: Some(id),
                        remove: None,
                    })
                } else {
                    Some(Step::AwaitCatchUp(id))
                }
            } else {
                Some(Step::AddLearner(id))
            }
        }
        MembershipChange::Remove(id) => {
            if conf.learners.contains(id) {
                Some(Step::RemoveLearner(*id))
            } else if !conf.voters.contains(id) {
                Some(Step::Finish)
            } else if *id == me {
                best_other_voter.map(Step::TransferLeadership)
            } else {
                Some(Step::EnterJoint {
                    promote: None,
                    remove: Some(*id),
                })
            }
        }
    }
}

/// The next step of moving a partition replica (`mv`), on the partition's
/// leader `me`: `to` joins the group as a learner, catches up and joins the
/// ISR (`learner_in_sync`), then one joint configuration promotes it and
/// removes `from` (leadership moves first if `from` leads), and the move is
/// recorded as finished. A move rolling back removes the learner instead,
/// unless it was already promoted: then it finishes.
pub fn next_move_step(
    mv: crate::metadata::ReplicaMove,
    conf: &ConfView,
    me: NodeId,
    learner_in_sync: bool,
    best_other_voter: Option<NodeId>,
) -> Step {
    let (from, to) = (mv.from, mv.to);
    if conf.is_joint() {
        return Step::LeaveJoint;
    }
    if conf.voters.contains(&to) && !conf.contains(from) {
        return Step::Finish;
    }
    if conf.voters.contains(&to) {
        // Promoted without removing `from` (not a step this function
        // takes, but a configuration it may inherit): remove it now.
        return Step::EnterJoint {
            promote: None,
            remove: Some(from),
        };
    }
    if mv.rolling_back {
        return if conf.learners.contains(&to) {
            Step::RemoveLearner(to)
        } else {
            Step::Abort
        };
    }
    if !conf.learners.contains(&to) {
        return Step::AddLearner(to);
    }
    if !learner_in_sync {
        return Step::AwaitCatchUp(to);
    }
    if from == me {
        if let Some(other) = best_other_voter {
            return Step::TransferLeadership(other);
        }
    }
    Step::EnterJoint {
        promote: Some(to),
        remove: Some(from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataCommand;
    use proptest::prelude::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            client_addr: format!("10.0.0.{id}:9092"),
            peer_addr: format!("10.0.0.{id}:9093"),
            rack: None,
        }
    }

    fn metadata(n: u64) -> MetadataState {
        let mut s = MetadataState::new();
        s.apply(
            1,
            MetadataCommand::Bootstrap {
                nodes: (1..=n).map(node).collect(),
            },
        )
        .expect("bootstrap");
        s
    }

    fn conf(voters: &[NodeId]) -> ConfView {
        ConfView {
            voters: voters.iter().copied().collect(),
            ..Default::default()
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn adds_are_refused_for_duplicates_and_bad_addresses() {
        let md = metadata(3);
        let c = conf(&[1, 2, 3]);
        let alive = set(&[1, 2, 3]);
        let ok = |n: NodeInfo| validate(&MembershipChange::Add(n), &md, &c, &alive);
        assert!(ok(node(4)).is_ok());
        assert_eq!(ok(node(2)), Err(Error::NodeExists { node: 2 }));
        let mut dup_addr = node(4);
        dup_addr.peer_addr = node(1).client_addr;
        assert!(matches!(
            ok(dup_addr),
            Err(Error::AddressInUse { node: 1, .. })
        ));
        let mut bad = node(4);
        bad.peer_addr = String::new();
        assert!(matches!(ok(bad), Err(Error::InvalidRequest { .. })));
        let mut same = node(4);
        same.client_addr = same.peer_addr.clone();
        assert!(matches!(ok(same), Err(Error::InvalidRequest { .. })));
        assert!(matches!(ok(node(0)), Err(Error::InvalidRequest { .. })));
    }

    #[test]
    fn removes_keep_a_live_quorum() {
        let md = metadata(3);
        let c = conf(&[1, 2, 3]);
        let rm =
            |id, alive: &[NodeId]| validate(&MembershipChange::Remove(id), &md, &c, &set(alive));
        assert!(rm(3, &[1, 2, 3]).is_ok());
        assert!(
            rm(3, &[1, 2]).is_ok(),
            "removing the dead node keeps 2 of 2"
        );
        assert!(
            matches!(rm(1, &[1, 2]), Err(Error::QuorumAtRisk { .. })),
            "2 and 3 left, 3 dead"
        );
        assert_eq!(rm(9, &[1, 2, 3]), Err(Error::UnknownNode { node: 9 }));
        let one = metadata(1);
        assert!(matches!(
            validate(&MembershipChange::Remove(1), &one, &conf(&[1]), &set(&[1])),
            Err(Error::QuorumAtRisk { .. })
        ));
    }

    #[test]
    fn one_change_at_a_time() {
        let mut md = metadata(3);
        md.apply(
            2,
            MetadataCommand::BeginMembershipChange {
                change: MembershipChange::Add(node(4)),
            },
        )
        .expect("begin");
        let r = validate(
            &MembershipChange::Add(node(5)),
            &md,
            &conf(&[1, 2, 3]),
            &set(&[1, 2, 3]),
        );
        assert!(matches!(r, Err(Error::ChangeInProgress { .. })));
        let mut joint = conf(&[1, 2, 3]);
        joint.outgoing = set(&[1, 2]);
        let r = validate(
            &MembershipChange::Remove(3),
            &metadata(3),
            &joint,
            &set(&[1, 2, 3]),
        );
        assert!(matches!(r, Err(Error::ChangeInProgress { .. })));
    }

    #[test]
    fn nodes_hosting_replicas_are_refused_only_if_their_replicas_cannot_move() {
        let mut md = metadata(3);
        let create = |name: &str, rf: u32| MetadataCommand::CreateTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: rf,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        };
        md.apply(2, create("t", 1)).expect("create");
        let host = md.partitions().next().expect("one").1.replicas[0];
        let c = conf(&[1, 2, 3]);
        let alive = set(&[1, 2, 3]);
        let r = validate(&MembershipChange::Remove(host), &md, &c, &alive);
        assert_eq!(
            r,
            Ok(()),
            "a replication factor of 1 leaves two nodes to move to"
        );
        md.apply(3, create("full", 3)).expect("create");
        let r = validate(&MembershipChange::Remove(host), &md, &c, &alive);
        assert!(matches!(r, Err(Error::InvalidRequest { .. })), "{r:?}");
    }

    #[test]
    fn replicas_move_off_before_a_node_leaves() {
        let rm = MembershipChange::Remove(1);
        assert_eq!(
            next_step(&rm, &conf(&[1, 2, 3]), 2, false, None, true),
            Some(Step::MoveReplicasOff(1))
        );
        assert_eq!(
            next_step(&rm, &conf(&[1, 2, 3]), 2, false, None, false),
            Some(Step::EnterJoint {
                promote: None,
                remove: Some(1)
            })
        );
    }

    fn mv(from: NodeId, to: NodeId) -> crate::metadata::ReplicaMove {
        crate::metadata::ReplicaMove {
            from,
            to,
            rolling_back: false,
        }
    }

    #[test]
    fn rolled_back_moves_remove_the_learner_unless_it_was_promoted() {
        let back = crate::metadata::ReplicaMove {
            rolling_back: true,
            ..mv(3, 4)
        };
        let mut l = conf(&[1, 2, 3]);
        l.learners.insert(4);
        assert_eq!(
            next_move_step(back, &l, 1, true, Some(2)),
            Step::RemoveLearner(4)
        );
        assert_eq!(
            next_move_step(back, &conf(&[1, 2, 3]), 1, true, Some(2)),
            Step::Abort
        );
        // Promoted before the rollback arrived: the move finishes.
        let joint = ConfView {
            voters: set(&[1, 2, 4]),
            learners: BTreeSet::new(),
            outgoing: set(&[1, 2, 3]),
        };
        assert_eq!(
            next_move_step(back, &joint, 1, true, None),
            Step::LeaveJoint
        );
        assert_eq!(
            next_move_step(back, &conf(&[1, 2, 4]), 1, true, None),
            Step::Finish
        );
    }

    #[test]
    fn moves_promote_the_new_replica_and_drop_the_old_in_one_joint_step() {
        let c = conf(&[1, 2, 3]);
        assert_eq!(
            next_move_step(mv(3, 4), &c, 1, false, Some(2)),
            Step::AddLearner(4)
        );
        let mut l = c.clone();
        l.learners.insert(4);
        assert_eq!(
            next_move_step(mv(3, 4), &l, 1, false, Some(2)),
            Step::AwaitCatchUp(4)
        );
        assert_eq!(
            next_move_step(mv(3, 4), &l, 1, true, Some(2)),
            Step::EnterJoint {
                promote: Some(4),
                remove: Some(3)
            }
        );
        assert_eq!(
            next_move_step(mv(1, 4), &l, 1, true, Some(2)),
            Step::TransferLeadership(2),
            "a leaving leader hands over first"
        );
        let joint = ConfView {
            voters: set(&[1, 2, 4]),
            learners: BTreeSet::new(),
            outgoing: set(&[1, 2, 3]),
        };
        assert_eq!(
            next_move_step(mv(3, 4), &joint, 1, true, None),
            Step::LeaveJoint
        );
        assert_eq!(
            next_move_step(mv(3, 4), &conf(&[1, 2, 4]), 1, true, None),
            Step::Finish
        );
    }

    #[test]
    fn steps_walk_through_joint_consensus_and_resume_anywhere() {
        let add = MembershipChange::Add(node(4));
        let c = conf(&[1, 2, 3]);
        assert_eq!(
            next_step(&add, &c, 1, false, None, false),
            Some(Step::AddLearner(4))
        );
        let mut learner = c.clone();
        learner.learners.insert(4);
        assert_eq!(
            next_step(&add, &learner, 1, false, None, false),
            Some(Step::AwaitCatchUp(4))
        );
        assert_eq!(
            next_step(&add, &learner, 1, true, None, false),
            Some(Step::EnterJoint {
                promote: Some(4),
                remove: None
            })
        );
        // A crash in the joint configuration: the next leader leaves it.
        let joint = ConfView {
            voters: set(&[1, 2, 3, 4]),
            learners: BTreeSet::new(),
            outgoing: set(&[1, 2, 3]),
        };
        assert_eq!(
            next_step(&add, &joint, 2, false, None, false),
            Some(Step::LeaveJoint)
        );
        assert_eq!(
            next_step(&add, &conf(&[1, 2, 3, 4]), 2, false, None, false),
            Some(Step::Finish)
        );

        let rm = MembershipChange::Remove(1);
        assert_eq!(
            next_step(&rm, &c, 1, false, Some(2), false),
            Some(Step::TransferLeadership(2)),
            "the leader hands over before removing itself"
        );
        assert_eq!(
            next_step(&rm, &c, 2, false, None, false),
            Some(Step::EnterJoint {
                promote: None,
                remove: Some(1)
            })
        );
        assert_eq!(
            next_step(&rm, &conf(&[2, 3]), 2, false, None, false),
            Some(Step::Finish)
        );
        let mut l = conf(&[2, 3]);
        l.learners.insert(1);
        assert_eq!(
            next_step(&rm, &l, 2, false, None, false),
            Some(Step::RemoveLearner(1))
        );
    }

    /// The naive reference: a removal is safe iff a majority of the old
    /// voters and a majority of the new voters are alive.
    fn reference_remove_ok(
        voters: &BTreeSet<NodeId>,
        alive: &BTreeSet<NodeId>,
        id: NodeId,
    ) -> bool {
        let new: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
        let live = |s: &BTreeSet<NodeId>| s.iter().filter(|v| alive.contains(v)).count();
        voters.contains(&id)
            && !new.is_empty()
            && live(voters) * 2 > voters.len()
            && live(&new) * 2 > new.len()
    }

    proptest! {
        #[test]
        fn removal_rule_matches_the_reference(
            n in 1u64..8,
            alive_mask in 0u8..=255,
            target in 1u64..8,
        ) {
            let md = metadata(n);
            let voters: BTreeSet<NodeId> = (1..=n).collect();
            let alive: BTreeSet<NodeId> = (1..=n).filter(|i| alive_mask & (1 << i) != 0).collect();
            let c = ConfView { voters: voters.clone(), ..Default::default() };
            let got = validate(&MembershipChange::Remove(target), &md, &c, &alive);
            if target > n {
                prop_assert_eq!(got, Err(Error::UnknownNode { node: target }));
            } else {
                prop_assert_eq!(got.is_ok(), reference_remove_ok(&voters, &alive, target), "{:?}", got);
            }
        }

        #[test]
        fn add_rule_matches_the_reference(n in 1u64..8, alive_mask in 0u8..=255) {
            let md = metadata(n);
            let voters: BTreeSet<NodeId> = (1..=n).collect();
            let alive: BTreeSet<NodeId> = (1..=n).filter(|i| alive_mask & (1 << i) != 0).collect();
            let c = ConfView { voters: voters.clone(), ..Default::default() };
            let got = validate(&MembershipChange::Add(node(20)), &md, &c, &alive);
            let live = alive.len();
            let ok = live * 2 > voters.len() && (live + 1) * 2 > voters.len() + 1;
            prop_assert_eq!(got.is_ok(), ok, "{:?}", got);
        }
    }
}
