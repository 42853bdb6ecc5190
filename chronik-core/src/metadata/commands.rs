//! The replicated commands of the metadata group and what applying them
//! reports.

use super::*;

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
    /// Starts a rebalance run: `leaders_now` take effect at once, the moves
    /// run at most `max_concurrent_moves` at a time (cluster-wide), and
    /// `leaders_after` once every move is over. Refused while a membership
    /// change or another run is in flight.
    StartRebalance {
        trigger: String,
        max_concurrent_moves: u32,
        /// (group, from, to, bytes)
        moves: Vec<(GroupId, NodeId, NodeId, u64)>,
        leaders_now: Vec<crate::metadata::PlannedLeader>,
        leaders_after: Vec<crate::metadata::PlannedLeader>,
    },
    /// Starts no more moves of the run in flight (moves in flight finish).
    CancelRebalance {
        reason: String,
    },
    /// A planned move that can no longer start (its partition changed).
    SkipPlannedMove {
        group: GroupId,
        reason: String,
    },
    /// Undoes a move in flight: the partition's leader removes the new
    /// replica (a move whose new replica was already promoted finishes).
    RollBackReplicaMove {
        group: GroupId,
        from: NodeId,
        to: NodeId,
        reason: String,
    },
    /// The rolled-back replica is out of the group's configuration: the
    /// placement is as before the move.
    AbortReplicaMove {
        group: GroupId,
        from: NodeId,
        to: NodeId,
    },
    /// Puts a node into maintenance (`on`) or takes it out: a node in
    /// maintenance stays a voter and a replica, but hands every leadership
    /// it holds to an in-sync peer and takes none back while a peer can
    /// lead (operators drain a node this way before taking it down).
    SetMaintenance {
        node: NodeId,
        on: bool,
    },
    /// Partition sizes a node measured on the partitions it leads.
    ReportSizes {
        sizes: Vec<(GroupId, u64)>,
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

impl MetadataCommand {
    /// A stable snake_case name of the command's kind: a metric label and
    /// a log field, never parsed back.
    pub fn op_name(&self) -> &'static str {
        match self {
            MetadataCommand::Bootstrap { .. } => "bootstrap",
            MetadataCommand::RegisterNode { .. } => "register_node",
            MetadataCommand::CreateTopic { .. } => "create_topic",
            MetadataCommand::DeleteTopic { .. } => "delete_topic",
            MetadataCommand::BeginMembershipChange { .. } => "begin_membership_change",
            MetadataCommand::FinishMembershipChange { .. } => "finish_membership_change",
            MetadataCommand::BeginReplicaMove { .. } => "begin_replica_move",
            MetadataCommand::FinishReplicaMove { .. } => "finish_replica_move",
            MetadataCommand::StartRebalance { .. } => "start_rebalance",
            MetadataCommand::CancelRebalance { .. } => "cancel_rebalance",
            MetadataCommand::SkipPlannedMove { .. } => "skip_planned_move",
            MetadataCommand::RollBackReplicaMove { .. } => "roll_back_replica_move",
            MetadataCommand::AbortReplicaMove { .. } => "abort_replica_move",
            MetadataCommand::SetMaintenance { .. } => "set_maintenance",
            MetadataCommand::ReportSizes { .. } => "report_sizes",
            MetadataCommand::UpdateIsr { .. } => "update_isr",
        }
    }
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
        group: GroupId,
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
    SizesReported {
        partitions: usize,
    },
    MaintenanceSet {
        node: NodeId,
        on: bool,
    },
    RebalanceStarted {
        run: u64,
        moves: usize,
    },
    RebalanceCancelled {
        run: u64,
    },
    PlannedMoveSkipped {
        group: GroupId,
    },
    ReplicaMoveRollingBack {
        partition: PartitionId,
        group: GroupId,
        from: NodeId,
        to: NodeId,
        /// The ISR without the replica moving in.
        isr: Vec<NodeId>,
        min_insync_replicas: u32,
        reason: String,
    },
    ReplicaMoveRolledBack {
        partition: PartitionId,
        group: GroupId,
        from: NodeId,
        to: NodeId,
        /// The ISR without the removed replica.
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
