//! The metadata state machine, replicated by the metadata group on every
//! node: registered nodes, topics, partitions with their replica assignment,
//! preferred leader and ISR.
//!
//! Every change is a [`MetadataCommand`] committed through the metadata group,
//! so every node applies the same commands in the same order and holds equal
//! state at equal applied indexes. `apply` depends only on the replicated
//! state (never on local config), which is what keeps replicas identical.

mod placement;

pub use placement::place_partitions;

use crate::error::Error;
use crate::types::{GroupId, NodeId, NodeInfo, PartitionId, METADATA_GROUP};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hard cap on partitions per topic, enforced at apply time as well so a
/// command that slipped past a leader with a looser config stays harmless.
pub const TOPIC_PARTITIONS_HARD_MAX: u32 = 100_000;

/// Longest topic name (Kafka's limit).
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// A replicated change to cluster metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Registers the initial members. Applies once per cluster; later copies
    /// (from a second leader of a young cluster) are no-ops.
    Bootstrap {
        nodes: Vec<NodeInfo>,
    },
    /// Registers one node. Idempotent for an identical record.
    RegisterNode {
        node: NodeInfo,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        min_insync_replicas: u32,
        /// Let a replica outside the ISR lead (and take the ISR over)
        /// when no in-sync replica can. Off: such a partition stays
        /// unavailable until an in-sync replica returns.
        unclean_leader_election: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// Starts a membership change (validated by the metadata leader against
    /// the live configuration first). An added node is registered at once
    /// (peers need its address) but gets no new replicas until it is done.
    BeginMembershipChange {
        change: crate::membership::MembershipChange,
    },
    /// Ends the change in flight, which must be `change`. A removed node is
    /// unregistered, and its id is never accepted again.
    FinishMembershipChange {
        change: crate::membership::MembershipChange,
    },
    /// Starts moving a partition's replica from one node to another.
    BeginReplicaMove {
        group: GroupId,
        from: NodeId,
        to: NodeId,
    },
    /// The moved replica is a voter and the old one is out of the group's
    /// configuration: `to` replaces `from` in the replicas (and the ISR).
    FinishReplicaMove {
        group: GroupId,
        from: NodeId,
        to: NodeId,
    },
    /// A partition leader's new ISR. Applies only if the ISR is still
    /// `expected` (compare-and-set: a deposed leader's late proposal, or a
    /// duplicate, changes nothing).
    UpdateIsr {
        group: GroupId,
        leader: NodeId,
        expected: Vec<NodeId>,
        isr: Vec<NodeId>,
        reason: String,
    },
}

/// What an applied [`MetadataCommand`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataResponse {
    Bootstrapped {
        nodes: Vec<NodeId>,
    },
    NodeRegistered {
        node: NodeId,
    },
    TopicCreated {
        topic: TopicMeta,
    },
    TopicDeleted {
        name: String,
    },
    MembershipChangeStarted {
        change: crate::membership::MembershipChange,
    },
    ReplicaMoveStarted {
        partition: PartitionId,
        from: NodeId,
        to: NodeId,
    },
    ReplicaMoveFinished {
        partition: PartitionId,
        group: GroupId,
        from: NodeId,
        to: NodeId,
        /// The ISR after the move (the new replica replaces the old).
        isr: Vec<NodeId>,
        min_insync_replicas: u32,
    },
    MembershipChangeFinished {
        change: crate::membership::MembershipChange,
    },
    IsrUpdated {
        partition: PartitionId,
        group: GroupId,
        isr: Vec<NodeId>,
        min_insync_replicas: u32,
        reason: String,
    },
}

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
    /// partition): `to` hosts a learner until the move finishes.
    pub moving: Option<ReplicaMove>,
}

/// A partition replica moving from one node to another.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaMove {
    pub from: NodeId,
    pub to: NodeId,
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
}

/// Checks a `host:port` address: non-empty host, numeric port.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} is not host:port"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("address {addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?} has no valid port")),
    }
}

/// Checks a topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > TOPIC_NAME_MAX_LEN {
        return Err(Error::invalid(format!(
            "topic name must be 1 to {TOPIC_NAME_MAX_LEN} characters"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid("topic name cannot be '.' or '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(format!(
            "topic name {name:?} has invalid character {c:?}; allowed: A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
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

    /// The partition a live group replicates, with its topic.
    pub fn partition_of_group(&self, group: GroupId) -> Option<(&TopicMeta, &PartitionMeta)> {
        self.topics.values().find_map(|t| {
            t.partitions
                .iter()
                .find(|p| p.group == group)
                .map(|p| (t, p))
        })
    }

    /// The membership change in flight.
    pub fn membership_in_flight(&self) -> Option<&crate::membership::MembershipChange> {
        self.membership.as_ref()
    }

    /// Every removed node id.
    pub fn removed_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.removed.iter().copied()
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
        self.topics
            .values_mut()
            .find_map(|t| {
                let name = t.name.clone();
                t.partitions
                    .iter_mut()
                    .find(|p| p.group == group)
                    .map(|p| (PartitionId::new(name, p.partition), p))
            })
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

    /// Checks a command against the current state without applying it. The
    /// leader calls this before proposing; `apply` repeats the state checks
    /// because other commands may commit in between.
    pub fn validate(&self, cmd: &MetadataCommand) -> Result<(), Error> {
        match cmd {
            MetadataCommand::Bootstrap { nodes } => {
                for n in nodes {
                    validate_node(n)?;
                }
                Ok(())
            }
            MetadataCommand::RegisterNode { node } => {
                validate_node(node)?;
                if let Some(existing) = self.nodes.get(&node.id) {
                    if existing != node {
                        return Err(Error::invalid(format!(
                            "node {} is already registered with other addresses",
                            node.id
                        )));
                    }
                }
                if let Some(other) = self.nodes.values().find(|n| {
                    n.id != node.id
                        && (n.peer_addr == node.peer_addr
                            || n.client_addr == node.client_addr
                            || n.peer_addr == node.client_addr
                            || n.client_addr == node.peer_addr)
                }) {
                    return Err(Error::invalid(format!(
                        "an address of node {} is already used by node {}",
                        node.id, other.id
                    )));
                }
                Ok(())
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync_replicas,
                unclean_leader_election: _,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(Error::TopicExists {
                        topic: name.clone(),
                    });
                }
                if *partitions == 0 || *partitions > TOPIC_PARTITIONS_HARD_MAX {
                    return Err(Error::invalid(format!(
                        "partition count must be 1 to {TOPIC_PARTITIONS_HARD_MAX}"
                    )));
                }
                if *replication_factor == 0 {
                    return Err(Error::invalid("replication factor must be at least 1"));
                }
                // Placement skips a node whose membership change is in
                // flight, so validate against the same set: counting it let
                // a topic as wide as the cluster through here and then
                // panicked placement on every node that applied it (found by
                // the metadata_apply fuzz target).
                let available = self.placeable_nodes().len() as u32;
                if *replication_factor > available {
                    return Err(Error::NotEnoughNodes {
                        requested: *replication_factor,
                        available,
                    });
                }
                if *min_insync_replicas == 0 || min_insync_replicas > replication_factor {
                    return Err(Error::invalid(format!(
                        "min_insync_replicas must be 1 to the replication factor ({replication_factor})"
                    )));
                }
                Ok(())
            }
            MetadataCommand::DeleteTopic { name } => {
                if !self.topics.contains_key(name) {
                    return Err(Error::UnknownTopic {
                        topic: name.clone(),
                    });
                }
                Ok(())
            }
            MetadataCommand::BeginMembershipChange { change } => {
                use crate::membership::MembershipChange;
                if let Some(c) = &self.membership {
                    return Err(Error::ChangeInProgress {
                        change: c.to_string(),
                    });
                }
                match change {
                    MembershipChange::Add(node) => {
                        validate_node(node)?;
                        if self.nodes.contains_key(&node.id) {
                            return Err(Error::NodeExists { node: node.id });
                        }
                        if self.removed.contains(&node.id) {
                            return Err(Error::invalid(format!(
                                "node id {} belonged to a removed node; ids are never reused",
                                node.id
                            )));
                        }
                        for other in self.nodes.values() {
                            for a in [&node.peer_addr, &node.client_addr] {
                                if *a == other.peer_addr || *a == other.client_addr {
                                    return Err(Error::AddressInUse {
                                        addr: a.clone(),
                                        node: other.id,
                                    });
                                }
                            }
                        }
                    }
                    MembershipChange::Remove(id) => {
                        if !self.nodes.contains_key(id) {
                            return Err(Error::UnknownNode { node: *id });
                        }
                        self.check_replicas_can_move_off(*id)?;
                        if self.nodes.len() == 1 {
                            return Err(Error::QuorumAtRisk {
                                node: *id,
                                alive: 0,
                                needed: 1,
                            });
                        }
                    }
                }
                Ok(())
            }
            MetadataCommand::BeginReplicaMove { group, from, to } => {
                let (_, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                if let Some(m) = p.moving {
                    return Err(Error::invalid(format!(
                        "group {group} is already moving a replica from node {} to node {}",
                        m.from, m.to
                    )));
                }
                if !p.replicas.contains(from) {
                    return Err(Error::invalid(format!(
                        "node {from} is not a replica of group {group}"
                    )));
                }
                if p.replicas.contains(to) {
                    return Err(Error::invalid(format!(
                        "node {to} is already a replica of group {group}"
                    )));
                }
                if !self.nodes.contains_key(to) {
                    return Err(Error::UnknownNode { node: *to });
                }
                if self.membership.as_ref().is_some_and(|c| c.node() == *to) {
                    return Err(Error::invalid(format!(
                        "node {to} is joining or leaving; it takes no replicas"
                    )));
                }
                Ok(())
            }
            MetadataCommand::FinishReplicaMove { group, from, to } => {
                let (_, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                if p.moving
                    != Some(ReplicaMove {
                        from: *from,
                        to: *to,
                    })
                {
                    return Err(Error::invalid(format!(
                        "group {group} is not moving a replica from node {from} to node {to}"
                    )));
                }
                Ok(())
            }
            MetadataCommand::FinishMembershipChange { change } => {
                if self.membership.as_ref() != Some(change) {
                    return Err(Error::invalid(format!(
                        "membership change {change} is not the one in flight ({:?})",
                        self.membership.as_ref().map(|c| c.to_string())
                    )));
                }
                Ok(())
            }
            MetadataCommand::UpdateIsr {
                group,
                leader,
                expected,
                isr,
                reason: _,
            } => {
                let (topic, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                if p.isr != *expected {
                    return Err(Error::invalid(format!(
                        "stale ISR update for group {group}: ISR is {:?}, not {expected:?}",
                        p.isr
                    )));
                }
                if !p.replicas.contains(leader) {
                    return Err(Error::invalid(format!(
                        "leader {leader} is not a replica of group {group}"
                    )));
                }
                if !isr.contains(leader) {
                    return Err(Error::invalid("the leader must be in its ISR"));
                }
                if !p.isr.contains(leader) && !topic.unclean_leader_election {
                    return Err(Error::invalid(format!(
                        "leader {leader} is not in the ISR {:?} and topic {} does not allow unclean leader election",
                        p.isr, topic.name
                    )));
                }
                let mut seen = std::collections::BTreeSet::new();
                for n in isr {
                    if !p.replicas.contains(n) || !seen.insert(*n) {
                        return Err(Error::invalid(format!(
                            "ISR {isr:?} must be distinct replicas of {:?}",
                            p.replicas
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Applies a committed command at `index`. A command that fails
    /// validation changes nothing but the applied index, identically on
    /// every replica.
    pub fn apply(&mut self, index: u64, cmd: MetadataCommand) -> Result<MetadataResponse, Error> {
        debug_assert!(index > self.applied_index, "metadata apply out of order");
        self.applied_index = index;
        self.validate(&cmd)?;
        let response = match cmd {
            MetadataCommand::Bootstrap { nodes } => {
                if self.bootstrapped {
                    return Ok(MetadataResponse::Bootstrapped { nodes: vec![] });
                }
                self.bootstrapped = true;
                let mut ids = Vec::new();
                for n in nodes {
                    ids.push(n.id);
                    self.nodes.insert(n.id, n);
                }
                MetadataResponse::Bootstrapped { nodes: ids }
            }
            MetadataCommand::RegisterNode { node } => {
                let id = node.id;
                self.nodes.insert(id, node);
                MetadataResponse::NodeRegistered { node: id }
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync_replicas,
                unclean_leader_election,
            } => {
                let nodes: Vec<NodeId> = self.placeable_nodes();
                let existing: Vec<&PartitionMeta> = self
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.iter())
                    .collect();
                let placed = place_partitions(&nodes, &existing, partitions, replication_factor);
                let mut metas = Vec::with_capacity(placed.len());
                for (p, replicas) in placed.into_iter().enumerate() {
                    let group = self.next_group_id;
                    self.next_group_id += 1;
                    metas.push(PartitionMeta {
                        moving: None,
                        partition: p as u32,
                        group,
                        preferred_leader: replicas[0],
                        isr: replicas.clone(),
                        replicas,
                    });
                }
                let topic = TopicMeta {
                    name: name.clone(),
                    replication_factor,
                    min_insync_replicas,
                    unclean_leader_election,
                    partitions: metas,
                };
                self.topics.insert(name, topic.clone());
                MetadataResponse::TopicCreated { topic }
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.remove(&name);
                MetadataResponse::TopicDeleted { name }
            }
            MetadataCommand::BeginMembershipChange { change } => {
                if let crate::membership::MembershipChange::Add(node) = &change {
                    self.nodes.insert(node.id, node.clone());
                }
                tracing::info!(%change, "membership change started");
                self.membership = Some(change.clone());
                MetadataResponse::MembershipChangeStarted { change }
            }
            MetadataCommand::BeginReplicaMove { group, from, to } => {
                let (partition, p) = self.partition_mut(group);
                p.moving = Some(ReplicaMove { from, to });
                tracing::info!(%partition, from, to, "replica move started");
                MetadataResponse::ReplicaMoveStarted {
                    partition,
                    from,
                    to,
                }
            }
            MetadataCommand::FinishReplicaMove { group, from, to } => {
                let min_insync_replicas = self
                    .partition_of_group(group)
                    .map_or(1, |(t, _)| t.min_insync_replicas);
                let (partition, p) = self.partition_mut(group);
                for r in p.replicas.iter_mut() {
                    if *r == from {
                        *r = to;
                    }
                }
                if p.preferred_leader == from {
                    p.preferred_leader = to;
                }
                // The new replica was promoted once caught up.
                if !crate::planted::active(crate::planted::Bug::IsrKeepsMovedReplica) {
                    p.isr.retain(|n| *n != from);
                }
                p.isr.push(to);
                p.moving = None;
                tracing::info!(%partition, from, to, "replica move finished");
                MetadataResponse::ReplicaMoveFinished {
                    partition,
                    group,
                    from,
                    to,
                    isr: p.isr.clone(),
                    min_insync_replicas,
                }
            }
            MetadataCommand::FinishMembershipChange { change } => {
                if let crate::membership::MembershipChange::Remove(id) = &change {
                    self.nodes.remove(id);
                    self.removed.insert(*id);
                }
                tracing::info!(%change, "membership change finished");
                self.membership = None;
                MetadataResponse::MembershipChangeFinished { change }
            }
            MetadataCommand::UpdateIsr {
                group, isr, reason, ..
            } => {
                let (topic, min_insync_replicas, p) = self
                    .topics
                    .values_mut()
                    .find_map(|t| {
                        let (name, min) = (t.name.clone(), t.min_insync_replicas);
                        t.partitions
                            .iter_mut()
                            .find(|p| p.group == group)
                            .map(|p| (name, min, p))
                    })
                    .expect("validated: the group has a partition");
                let partition = PartitionId::new(topic, p.partition);
                if isr.iter().any(|n| !p.isr.contains(n)) {
                    self.isr_expands += 1;
                }
                if p.isr.iter().any(|n| !isr.contains(n)) {
                    self.isr_shrinks += 1;
                }
                tracing::info!(%partition, from = ?p.isr, to = ?isr, %reason, "ISR changed");
                p.isr = isr.clone();
                MetadataResponse::IsrUpdated {
                    partition,
                    group,
                    isr,
                    min_insync_replicas,
                    reason,
                }
            }
        };
        self.debug_check_invariants();
        Ok(response)
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
                    p.isr.iter().all(|n| p.replicas.contains(n)),
                    "ISR is a subset of the replicas"
                );
                debug_assert!(!p.isr.is_empty(), "an ISR holds at least its leader");
            }
        }
    }
}

fn validate_node(n: &NodeInfo) -> Result<(), Error> {
    if n.id == 0 {
        return Err(Error::invalid("node id 0 is reserved"));
    }
    validate_addr(&n.peer_addr).map_err(Error::invalid)?;
    validate_addr(&n.client_addr).map_err(Error::invalid)?;
    if n.peer_addr == n.client_addr {
        return Err(Error::invalid(format!(
            "node {} uses {} for both peer and client traffic",
            n.id, n.peer_addr
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            client_addr: format!("10.0.0.{id}:9092"),
            peer_addr: format!("10.0.0.{id}:9093"),
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
                },
            },
            MetadataCommand::RegisterNode {
                node: NodeInfo {
                    id: 1,
                    client_addr: "h:1".into(),
                    peer_addr: "h:2".into(),
                },
            },
            MetadataCommand::RegisterNode {
                node: NodeInfo {
                    id: 9,
                    client_addr: "nonsense".into(),
                    peer_addr: "h:2".into(),
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
