//! The metadata state machine, replicated by the metadata group on every
//! node: registered nodes, topics, partitions with their replica assignment,
//! preferred leader and ISR.
//!
//! Every change is a [`MetadataCommand`] committed through the metadata group,
//! so every node applies the same commands in the same order and holds equal
//! state at equal applied indexes. `apply` depends only on the replicated
//! state (never on local config), which is what keeps replicas identical.

mod apply;
mod commands;
mod events;
mod placement;
mod rebalance;
mod validation;

pub use commands::{MetadataCommand, MetadataResponse};
pub use placement::place_partitions;
pub use rebalance::{MoveState, PlannedLeader, RebalanceRun, RunMove};
pub use validation::{validate_addr, validate_rack, validate_topic_name};

use crate::error::Error;
use crate::types::{GroupId, NodeId, NodeInfo, PartitionId, METADATA_GROUP};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hard cap on partitions per topic, enforced at apply time as well so a
/// command that slipped past a leader with a looser config stays harmless.
pub const TOPIC_PARTITIONS_HARD_MAX: u32 = 100_000;

/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// One partition's placement. Invariants: `replicas` is non-empty with no
/// duplicates; `preferred_leader` and every ISR member are replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub partition: u32,
    /// The Raft group replicating this partition.
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
    pub preferred_leader: NodeId,
    pub isr: Vec<NodeId>,
    /// A replica being moved to another node, if any (one at a time per
    /// partition): `to` hosts a learner until the move finishes, and joins
    /// the ISR once in sync (the move waits for that).
    pub moving: Option<ReplicaMove>,
}

impl PartitionMeta {
    /// The nodes that may be in the ISR: the replicas, and a replica moving
    /// in (unless its move is rolling back).
    pub fn isr_candidates(&self) -> Vec<NodeId> {
        let mut c = self.replicas.clone();
        if let Some(m) = self.moving.filter(|m| !m.rolling_back) {
            c.push(m.to);
        }
        c
    }
}

/// A partition replica moving from one node to another.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub from: NodeId,
    pub to: NodeId,
    /// The move is being undone: the partition's leader removes the new
    /// replica (or, if it was already promoted, finishes the move).
    pub rolling_back: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub replication_factor: u32,
    pub min_insync_replicas: u32,
    pub unclean_leader_election: bool,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionMeta>,
}

/// The metadata group's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    bootstrapped: bool,
    nodes: BTreeMap<NodeId, NodeInfo>,
    topics: BTreeMap<String, TopicMeta>,
    /// Next id handed to a new partition group; ids below it that are not in
    /// `topics` belong to deleted partitions.
    next_group_id: GroupId,
    applied_index: u64,
    /// ISR changes applied since the cluster began (replicated counters).
    isr_shrinks: u64,
    isr_expands: u64,
    /// The membership change in flight, if any (at most one).
    membership: Option<crate::membership::MembershipChange>,
    /// Ids of removed nodes: never reused.
    removed: std::collections::BTreeSet<NodeId>,
    /// The latest rebalance run.
    rebalance: Option<RebalanceRun>,
    /// Bytes per partition replica, as partition leaders last reported
    /// them (the rebalancer's bytes dimension).
    sizes: BTreeMap<GroupId, u64>,
    /// Nodes in maintenance: no leadership goes to them while a peer can
    /// take it.
    maintenance: std::collections::BTreeSet<NodeId>,
}

impl MetadataState {
    pub fn new() -> Self {
        MetadataState {
            next_group_id: METADATA_GROUP + 1,
            ..Default::default()
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Records that an entry without a metadata command was applied, so the
    /// applied index matches Raft's on every replica.
    pub(crate) fn note_applied_index(&mut self, index: u64) {
        self.applied_index = self.applied_index.max(index);
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.bootstrapped
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// The placement of one partition, or why there is none.
    pub fn partition(&self, id: &PartitionId) -> Result<&PartitionMeta, Error> {
        let topic = self
            .topics
            .get(&id.topic)
            .ok_or_else(|| Error::UnknownTopic {
                topic: id.topic.clone(),
            })?;
        topic
            .partitions
            .get(id.partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                partition: id.clone(),
            })
    }

    /// Every partition with its id, in topic then partition order.
    pub fn partitions(&self) -> impl Iterator<Item = (PartitionId, &PartitionMeta)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (PartitionId::new(t.name.clone(), p.partition), p))
        })
    }

    /// Every live partition group with its topic, by group id: one pass,
    /// for callers that look many groups up (`partition_of_group` scans).
    pub fn partitions_by_group(&self) -> BTreeMap<GroupId, (&TopicMeta, &PartitionMeta)> {
        self.topics
            .values()
            .flat_map(|t| t.partitions.iter().map(move |p| (p.group, (t, p))))
            .collect()
    }

    /// [`MetadataState::is_deleted_group`] against an index built by
    /// [`MetadataState::partitions_by_group`].
    pub fn is_deleted_group_in(
        &self,
        live: &BTreeMap<GroupId, (&TopicMeta, &PartitionMeta)>,
        group: GroupId,
    ) -> bool {
        group != METADATA_GROUP && group < self.next_group_id && !live.contains_key(&group)
    }

    /// The partition a live group replicates, with its topic.
    pub fn partition_of_group(&self, group: GroupId) -> Option<(&TopicMeta, &PartitionMeta)> {
        self.topics.values().find_map(|t| {
            t.partitions
                .iter()
                .find(|p| p.group == group)
                .map(|p| (t, p))
        })
    }

    /// Bytes per partition replica as last reported by their leaders.
    pub fn partition_sizes(&self) -> &BTreeMap<GroupId, u64> {
        &self.sizes
    }

    /// The membership change in flight.
    pub fn membership_in_flight(&self) -> Option<&crate::membership::MembershipChange> {
        self.membership.as_ref()
    }

    /// Every removed node id.
    pub fn removed_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.removed.iter().copied()
    }

    /// Whether `node` is in maintenance (see
    /// [`MetadataCommand::SetMaintenance`]).
    pub fn in_maintenance(&self, node: NodeId) -> bool {
        self.maintenance.contains(&node)
    }

    /// Every node in maintenance.
    pub fn maintenance_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.maintenance.iter().copied()
    }

    /// Whether `node` was removed from the cluster.
    pub fn was_removed(&self, node: NodeId) -> bool {
        self.removed.contains(&node)
    }

    /// Nodes that may host new replicas: registered, not joining or leaving.
    pub fn placeable_nodes(&self) -> Vec<NodeId> {
        let busy = self.membership.as_ref().map(|c| c.node());
        self.nodes
            .keys()
            .copied()
            .filter(|n| Some(*n) != busy)
            .collect()
    }

    /// Refuses removing `node` if some replica it hosts has nowhere to go.
    pub fn check_replicas_can_move_off(&self, node: NodeId) -> Result<(), Error> {
        let others = self
            .placeable_nodes()
            .into_iter()
            .filter(|n| *n != node)
            .collect::<Vec<_>>();
        for (pid, p) in self.partitions() {
            if p.replicas.contains(&node) && !others.iter().any(|n| !p.replicas.contains(n)) {
                return Err(Error::invalid(format!(
                    "node {node} hosts a replica of {pid}, and no other node can take it (replication factor {} with {} other nodes)",
                    p.replicas.len(),
                    others.len()
                )));
            }
        }
        Ok(())
    }

    /// The node with the fewest replicas that may take a replica of
    /// `group` instead of `from` (never `from`, never a current replica).
    pub fn move_target(&self, group: GroupId, from: NodeId) -> Option<NodeId> {
        let (_, p) = self.partition_of_group(group)?;
        let load = |n: NodeId| {
            self.partitions()
                .filter(|(_, q)| q.replicas.contains(&n))
                .count()
        };
        self.placeable_nodes()
            .into_iter()
            .filter(|n| *n != from && !p.replicas.contains(n))
            .min_by_key(|n| (load(*n), *n))
    }

    fn partition_mut(&mut self, group: GroupId) -> (PartitionId, &mut PartitionMeta) {
        self.partition_of_group_mut(group)
            .expect("validated: the group has a partition")
    }

    /// (shrinks, expands) of ISRs applied since the cluster began.
    pub fn isr_change_counts(&self) -> (u64, u64) {
        (self.isr_shrinks, self.isr_expands)
    }

    /// True if `group` was allocated to a partition that no longer exists.
    pub fn is_deleted_group(&self, group: GroupId) -> bool {
        group != METADATA_GROUP
            && group < self.next_group_id
            && !self.partitions().any(|(_, p)| p.group == group)
    }
    /// Serialized state for a snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing metadata cannot fail")
    }

    /// State from a snapshot taken at `index`.
    pub fn restore(index: u64, data: &[u8]) -> Result<MetadataState, String> {
        let mut s: MetadataState =
            postcard::from_bytes(data).map_err(|e| format!("metadata snapshot: {e}"))?;
        s.applied_index = index;
        if crate::planted::active(crate::planted::Bug::MetadataSnapshotLosesIsr) {
            // Planted bug (simulation builds only): the ISR is not restored.
            for p in s.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.isr = p.replicas.clone();
            }
        }
        s.debug_check_invariants();
        Ok(s)
    }

    fn debug_check_invariants(&self) {
        // The planted ISR bug breaks these on purpose: the simulator's own
        // checker, not this assertion, must be what catches it.
        if !cfg!(debug_assertions)
            || crate::planted::active(crate::planted::Bug::IsrKeepsMovedReplica)
        {
            return;
        }
        for t in self.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                debug_assert_eq!(p.partition as usize, i, "partition numbers are dense");
                debug_assert!(!p.replicas.is_empty(), "a partition has replicas");
                debug_assert!(p.group < self.next_group_id, "group ids are allocated");
                debug_assert!(
                    p.replicas.contains(&p.preferred_leader),
                    "preferred leader is a replica"
                );
                debug_assert!(
                    p.isr.iter().all(|n| p.isr_candidates().contains(n)),
                    "ISR is a subset of the replicas (and a replica moving in)"
                );
                debug_assert!(!p.isr.is_empty(), "an ISR holds at least its leader");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            client_addr: format!("10.0.0.{id}:9092"),
            peer_addr: format!("10.0.0.{id}:9093"),
            rack: None,
        }
    }

    fn cluster(n: u64) -> MetadataState {
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

    fn create(name: &str, partitions: u32, rf: u32) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }

    #[test]
    fn refused_commands_change_nothing_but_the_applied_index() {
        let mut s = cluster(3);
        s.apply(2, create("a", 2, 3)).expect("create");
        let before = s.clone();
        let bad = [
            create("a", 1, 1),
            create("", 1, 1),
            create("a/b", 1, 1),
            create("b", 0, 1),
            create("b", 1, 4),
            create("b", 1, 0),
            MetadataCommand::CreateTopic {
                name: "b".into(),
                partitions: 1,
                replication_factor: 2,
                min_insync_replicas: 3,
                unclean_leader_election: false,
            },
            MetadataCommand::DeleteTopic { name: "zz".into() },
            MetadataCommand::RegisterNode {
                node: NodeInfo {
                    id: 9,
                    client_addr: "10.0.0.1:9092".into(),
                    peer_addr: "x:1".into(),
                    rack: None,
                },
            },
            MetadataCommand::RegisterNode {
                node: NodeInfo {
                    id: 1,
                    client_addr: "h:1".into(),
                    peer_addr: "h:2".into(),
                    rack: None,
                },
            },
            MetadataCommand::RegisterNode {
                node: NodeInfo {
                    id: 9,
                    client_addr: "nonsense".into(),
                    peer_addr: "h:2".into(),
                    rack: None,
                },
            },
        ];
        for (i, cmd) in bad.into_iter().enumerate() {
            let index = 3 + i as u64;
            assert!(
                s.apply(index, cmd.clone()).is_err(),
                "{cmd:?} must be refused"
            );
            let mut expected = before.clone();
            expected.applied_index = index;
            assert_eq!(s, expected, "{cmd:?} changed state");
        }
    }

    #[test]
    fn a_topic_wider_than_the_placeable_nodes_is_refused_during_a_membership_change() {
        let mut s = cluster(3);
        s.apply(
            2,
            MetadataCommand::BeginMembershipChange {
                change: crate::membership::MembershipChange::Remove(3),
            },
        )
        .expect("begin removal");
        let before = s.clone();
        // Three nodes are registered but node 3 is leaving: placement can
        // use two of them, so a replication factor of 3 must be refused
        // here, not panic inside placement.
        let err = s.apply(3, create("wide", 1, 3)).expect_err("refused");
        assert!(
            matches!(
                err,
                Error::NotEnoughNodes {
                    requested: 3,
                    available: 2
                }
            ),
            "{err:?}"
        );
        let mut expected = before;
        expected.applied_index = 3;
        assert_eq!(s, expected);
        s.apply(4, create("narrow", 1, 2))
            .expect("fits the placeable nodes");
    }

    fn isr(group: GroupId, leader: NodeId, expected: &[NodeId], isr: &[NodeId]) -> MetadataCommand {
        MetadataCommand::UpdateIsr {
            group,
            leader,
            expected: expected.to_vec(),
            isr: isr.to_vec(),
            reason: "test".into(),
        }
    }

    #[test]
    fn isr_updates_are_compare_and_set_and_keep_the_leader() {
        let mut s = cluster(3);
        s.apply(2, create("a", 1, 3)).expect("create");
        let p = PartitionId::new("a", 0);
        let g = s.partition(&p).expect("exists").group;
        let before = s.clone();
        let bad = [
            isr(g + 7, 1, &[1, 2, 3], &[1, 2]), // no such group
            isr(g, 1, &[1, 2], &[1]),           // stale expectation
            isr(g, 1, &[1, 2, 3], &[2, 3]),     // leader dropped
            isr(g, 9, &[1, 2, 3], &[9]),        // leader not a replica
            isr(g, 1, &[1, 2, 3], &[1, 1]),     // duplicate
            isr(g, 1, &[1, 2, 3], &[1, 4]),     // not a replica
        ];
        for (i, cmd) in bad.into_iter().enumerate() {
            let index = 3 + i as u64;
            assert!(
                s.apply(index, cmd.clone()).is_err(),
                "{cmd:?} must be refused"
            );
            let mut expected = before.clone();
            expected.applied_index = index;
            assert_eq!(s, expected, "{cmd:?} changed state");
        }
        s.apply(20, isr(g, 1, &[1, 2, 3], &[1, 3])).expect("shrink");
        assert_eq!(s.partition(&p).expect("exists").isr, vec![1, 3]);
        assert_eq!(s.isr_change_counts(), (1, 0));
        // A replica outside the ISR may not lead it back in: unclean.
        assert!(s.apply(21, isr(g, 2, &[1, 3], &[2, 3])).is_err());
        s.apply(22, isr(g, 1, &[1, 3], &[1, 2, 3])).expect("expand");
        assert_eq!(s.isr_change_counts(), (1, 1));
        // A duplicate of an applied change is stale.
        assert!(s.apply(23, isr(g, 1, &[1, 3], &[1, 2, 3])).is_err());
    }

    #[test]
    fn unclean_topics_let_an_out_of_sync_leader_take_the_isr() {
        let mut s = cluster(3);
        s.apply(
            2,
            MetadataCommand::CreateTopic {
                name: "u".into(),
                partitions: 1,
                replication_factor: 3,
                min_insync_replicas: 1,
                unclean_leader_election: true,
            },
        )
        .expect("create");
        let g = s
            .partition(&PartitionId::new("u", 0))
            .expect("exists")
            .group;
        s.apply(3, isr(g, 1, &[1, 2, 3], &[1])).expect("shrink");
        s.apply(4, isr(g, 2, &[1], &[2])).expect("unclean takeover");
        assert_eq!(
            s.partition(&PartitionId::new("u", 0)).expect("exists").isr,
            vec![2]
        );
    }

    #[test]
    fn group_ids_are_never_reused() {
        let mut s = cluster(3);
        s.apply(2, create("a", 2, 1)).expect("create");
        let groups: Vec<GroupId> = s.partitions().map(|(_, p)| p.group).collect();
        assert_eq!(groups, vec![1, 2]);
        s.apply(3, MetadataCommand::DeleteTopic { name: "a".into() })
            .expect("delete");
        assert!(s.is_deleted_group(1));
        s.apply(4, create("a", 1, 1)).expect("re-create");
        assert_eq!(
            s.partition(&PartitionId::new("a", 0))
                .expect("exists")
                .group,
            3
        );
        assert!(!s.is_deleted_group(3));
        assert!(!s.is_deleted_group(4), "not yet allocated");
    }

    #[test]
    fn bootstrap_applies_once() {
        let mut s = cluster(3);
        let r = s
            .apply(
                2,
                MetadataCommand::Bootstrap {
                    nodes: vec![node(7)],
                },
            )
            .expect("no-op");
        assert_eq!(r, MetadataResponse::Bootstrapped { nodes: vec![] });
        assert_eq!(s.nodes().count(), 3);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut s = cluster(3);
        s.apply(2, create("a", 3, 2)).expect("create");
        let back = MetadataState::restore(2, &s.snapshot()).expect("restore");
        assert_eq!(back, s);
        assert!(MetadataState::restore(2, b"\xff\xff").is_err());
    }

    #[test]
    fn addresses_are_checked() {
        assert!(validate_addr("127.0.0.1:9092").is_ok());
        assert!(validate_addr("[::1]:9092").is_ok());
        assert!(validate_addr("host:0").is_err());
        assert!(validate_addr(":9092").is_err());
        assert!(validate_addr("host").is_err());
        assert!(validate_addr("host:port").is_err());
    }
}
