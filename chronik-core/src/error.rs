//! The engine's error type: one enum for the whole client-facing boundary,
//! with structured fields so drivers can map each variant to a stable wire
//! code ([`Error::code`]) without parsing strings.

use crate::types::{GroupId, NodeId, PartitionId};

/// Why a command was refused or failed. Every refusal leaves the engine's
/// state unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node does not lead the group; `leader_hint` is the leader it
    /// last heard from, if any. Retriable against the hinted node.
    #[error("not the leader of group {group}, leader hint: {leader_hint:?}")]
    NotLeader {
        group: GroupId,
        leader_hint: Option<NodeId>,
    },
    /// The leader has not yet committed an entry of its own term, so it cannot
    /// serve linearizable reads yet (Raft thesis 6.4). Retriable shortly.
    #[error("leader of group {group} is not ready to serve reads yet")]
    LeaderNotReady { group: GroupId },
    #[error("unknown topic {topic:?}")]
    UnknownTopic { topic: String },
    #[error("unknown partition {partition}")]
    UnknownPartition { partition: PartitionId },
    #[error("topic {topic:?} already exists")]
    TopicExists { topic: String },
    #[error("unknown node {node}")]
    UnknownNode { node: NodeId },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    #[error("fetch offset {offset} is out of range [0, {high_watermark}]")]
    OffsetOutOfRange { offset: u64, high_watermark: u64 },
    /// Not enough registered nodes to place the requested replicas.
    #[error("replication factor {requested} exceeds the {available} available nodes")]
    NotEnoughNodes { requested: u32, available: u32 },
    /// Too many proposals are waiting for commit in this group; back off.
    #[error("group {group} has {pending} proposals in flight (max {max})")]
    Busy {
        group: GroupId,
        pending: usize,
        max: usize,
    },
    /// The proposal was definitely not committed (a new leader overwrote it
    /// or raft-rs refused it). Safe to retry.
    #[error("proposal in group {group} was dropped before commit")]
    ProposalDropped { group: GroupId },
    /// The proposal may or may not have been committed (a snapshot replaced
    /// the log it was in). The client must not assume either outcome.
    #[error("outcome of proposal in group {group} is unknown")]
    OutcomeUnknown { group: GroupId },
    /// A committed entry could not be decoded. Every replica skips it the
    /// same way; the proposer learns why.
    #[error("corrupt command in group {group} at index {index}: {reason}")]
    CorruptCommand {
        group: GroupId,
        index: u64,
        reason: String,
    },
    /// The group was dropped (its topic was deleted) while the request was in
    /// flight.
    #[error("group {group} was removed")]
    GroupRemoved { group: GroupId },
    /// Refused before appending: fewer in-sync replicas than the topic's
    /// `min_insync_replicas`. Nothing was written; retriable once replicas
    /// catch up.
    #[error(
        "partition {partition} has {isr} in-sync replicas, fewer than min_insync_replicas {min}"
    )]
    NotEnoughReplicas {
        partition: PartitionId,
        isr: u32,
        min: u32,
    },
    /// The records were appended and committed, but the ISR fell below
    /// `min_insync_replicas` before the acknowledgement: they are not as
    /// durable as the topic demands. Not retriable as is (a retry appends a
    /// second copy).
    #[error("partition {partition}: records appended, but the ISR fell to {isr}, below min_insync_replicas {min}, before they were acknowledged")]
    NotEnoughReplicasAfterAppend {
        partition: PartitionId,
        isr: u32,
        min: u32,
    },
    /// The records were appended and committed, but fewer than
    /// `min_insync_replicas` members of the ISR held them before the
    /// acknowledgement deadline (twice the ISR lag bound). Same code and
    /// meaning for the client as [`Error::NotEnoughReplicasAfterAppend`].
    #[error("partition {partition}: records appended, but only {holders} of the ISR {isr:?} held them within {waited_ms} ms, fewer than min_insync_replicas {min}")]
    InsyncCopiesTimedOut {
        partition: PartitionId,
        holders: u32,
        isr: Vec<NodeId>,
        min: u32,
        waited_ms: u64,
    },
    /// The partition's leader is not in its ISR and unclean leader election
    /// is off for the topic: the partition is unavailable until an in-sync
    /// replica leads again. Retriable.
    #[error("partition {partition} is unavailable: leader {leader} is not in the ISR {isr:?} and unclean leader election is off")]
    LeaderNotInSync {
        partition: PartitionId,
        leader: NodeId,
        isr: Vec<NodeId>,
    },
    /// A node with this id is already a member (or joining).
    #[error("node {node} is already a member of the cluster")]
    NodeExists { node: NodeId },
    /// Another member already uses this address.
    #[error("address {addr} is already used by node {node}")]
    AddressInUse { addr: String, node: NodeId },
    /// The change would leave too few live voters for a quorum (during the
    /// joint configuration or after it).
    #[error("changing node {node} is unsafe: {alive} live voters where {needed} are needed for a quorum")]
    QuorumAtRisk {
        node: NodeId,
        alive: u32,
        needed: u32,
    },
    /// One membership change at a time: wait for this one to finish.
    #[error("a membership change is in progress: {change}")]
    ChangeInProgress { change: String },
    /// This node was removed from the cluster; peers refuse it.
    #[error("node {node} was removed from the cluster")]
    NodeRemoved { node: NodeId },
    /// A ReadIndex read was not confirmed, or the replica did not apply far
    /// enough, within `read_timeout_ms`. Retriable.
    #[error("read of group {group} timed out")]
    ReadTimeout { group: GroupId },
    /// This replica's state did not recover from its storage (corrupt or
    /// missing data) and is being rebuilt from the leader's snapshot: it
    /// serves nothing until then. Retriable against another replica.
    #[error("replica of group {group} is rebuilding its state from a peer: {reason}")]
    ReplicaRepairing { group: GroupId, reason: String },
}

/// What went wrong, as a stable code: the same on the engine's errors, on
/// the wire (the proto enum `ErrorCode`, value for value) and in clients,
/// so no code is ever passed or matched as a string. Codes never change
/// meaning once shipped; new ones may be added, so match with a wildcard.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    NotLeader,
    LeaderNotReady,
    UnknownTopicOrPartition,
    TopicAlreadyExists,
    UnknownNode,
    /// The request itself is wrong (shape, limits): never a server fault.
    InvalidRequest,
    RecordTooLarge,
    OffsetOutOfRange,
    InvalidReplicationFactor,
    Busy,
    ProposalDropped,
    OutcomeUnknown,
    CorruptCommand,
    GroupRemoved,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
    LeaderNotAvailable,
    ReadTimeout,
    NodeAlreadyExists,
    AddressInUse,
    QuorumAtRisk,
    MembershipChangeInProgress,
    NodeRemoved,
    /// The replica's storage failed or its state is being rebuilt.
    ReplicaRepairing,
    /// The node gave no answer within the request's time limit; the
    /// request may still take effect.
    Timeout,
    /// The node is stopping and did not take the request.
    ShuttingDown,
    /// A server bug: an answer the API does not define.
    Internal,
    /// No node could be reached (raised by clients, never by a node).
    Unreachable,
    /// The caller's identity was not established: no or a refused
    /// certificate, no or an unknown token.
    Unauthenticated,
    /// The caller is known but lacks the permission the request needs.
    PermissionDenied,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::NotLeader,
        ErrorCode::LeaderNotReady,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::UnknownNode,
        ErrorCode::InvalidRequest,
        ErrorCode::RecordTooLarge,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::Busy,
        ErrorCode::ProposalDropped,
        ErrorCode::OutcomeUnknown,
        ErrorCode::CorruptCommand,
        ErrorCode::GroupRemoved,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::ReadTimeout,
        ErrorCode::NodeAlreadyExists,
        ErrorCode::AddressInUse,
        ErrorCode::QuorumAtRisk,
        ErrorCode::MembershipChangeInProgress,
        ErrorCode::NodeRemoved,
        ErrorCode::ReplicaRepairing,
        ErrorCode::Timeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Unreachable,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
    ];

    /// The code's name, for people (logs, CLI output): the proto enum
    /// value's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotLeader => "NOT_LEADER",
            ErrorCode::LeaderNotReady => "LEADER_NOT_READY",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::UnknownNode => "UNKNOWN_NODE",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::RecordTooLarge => "RECORD_TOO_LARGE",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::Busy => "BUSY",
            ErrorCode::ProposalDropped => "PROPOSAL_DROPPED",
            ErrorCode::OutcomeUnknown => "OUTCOME_UNKNOWN",
            ErrorCode::CorruptCommand => "CORRUPT_COMMAND",
            ErrorCode::GroupRemoved => "GROUP_REMOVED",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            ErrorCode::ReadTimeout => "READ_TIMEOUT",
            ErrorCode::NodeAlreadyExists => "NODE_ALREADY_EXISTS",
            ErrorCode::AddressInUse => "ADDRESS_IN_USE",
            ErrorCode::QuorumAtRisk => "QUORUM_AT_RISK",
            ErrorCode::MembershipChangeInProgress => "MEMBERSHIP_CHANGE_IN_PROGRESS",
            ErrorCode::NodeRemoved => "NODE_REMOVED",
            ErrorCode::ReplicaRepairing => "REPLICA_REPAIRING",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unreachable => "UNREACHABLE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The error's stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotLeader { .. } => ErrorCode::NotLeader,
            Error::LeaderNotReady { .. } => ErrorCode::LeaderNotReady,
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            Error::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
            Error::UnknownNode { .. } => ErrorCode::UnknownNode,
            Error::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Error::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
            Error::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            Error::NotEnoughNodes { .. } => ErrorCode::InvalidReplicationFactor,
            Error::Busy { .. } => ErrorCode::Busy,
            Error::ProposalDropped { .. } => ErrorCode::ProposalDropped,
            Error::OutcomeUnknown { .. } => ErrorCode::OutcomeUnknown,
            Error::CorruptCommand { .. } => ErrorCode::CorruptCommand,
            Error::GroupRemoved { .. } => ErrorCode::GroupRemoved,
            Error::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            Error::NotEnoughReplicasAfterAppend { .. } | Error::InsyncCopiesTimedOut { .. } => {
                ErrorCode::NotEnoughReplicasAfterAppend
            }
            Error::LeaderNotInSync { .. } => ErrorCode::LeaderNotAvailable,
            Error::ReadTimeout { .. } => ErrorCode::ReadTimeout,
            Error::NodeExists { .. } => ErrorCode::NodeAlreadyExists,
            Error::AddressInUse { .. } => ErrorCode::AddressInUse,
            Error::QuorumAtRisk { .. } => ErrorCode::QuorumAtRisk,
            Error::ChangeInProgress { .. } => ErrorCode::MembershipChangeInProgress,
            Error::NodeRemoved { .. } => ErrorCode::NodeRemoved,
            Error::ReplicaRepairing { .. } => ErrorCode::ReplicaRepairing,
        }
    }

    /// Whether the same request may succeed if retried (possibly elsewhere).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::LeaderNotReady { .. }
                | Error::Busy { .. }
                | Error::ProposalDropped { .. }
                | Error::NotEnoughReplicas { .. }
                | Error::LeaderNotInSync { .. }
                | Error::ReadTimeout { .. }
                | Error::ReplicaRepairing { .. }
        )
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidRequest {
            reason: reason.into(),
        }
    }
}

/// Why an [`crate::Engine`] could not be built from its config and recovered
/// state. Nothing is started when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid config field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("recovered state is inconsistent: {reason}")]
    InconsistentRecovery { reason: String },
    #[error("raft refused the configuration: {0}")]
    Raft(#[from] raft::Error),
}
