//! Mapping between the engine's types and the wire's.

use crate::proto;
use chronik_core::{Error, ErrorCode, GroupKind, GroupStatus, MetadataState, NodeInfo, TopicMeta};

pub fn error(e: &Error) -> proto::Error {
    let leader_hint = match e {
        Error::NotLeader { leader_hint, .. } => leader_hint.unwrap_or(0),
        _ => 0,
    };
    proto::Error {
        code: wire_code(e.code()) as i32,
        message: e.to_string(),
        leader_hint,
        retriable: e.is_retriable(),
    }
}

/// An error the driver raises itself (not the engine's).
pub fn local_error(code: ErrorCode, message: impl Into<String>, retriable: bool) -> proto::Error {
    proto::Error {
        code: wire_code(code) as i32,
        message: message.into(),
        leader_hint: 0,
        retriable,
    }
}

/// The two enums name the same codes the same way: one list maps them.
macro_rules! codes {
    ($($name:ident),* $(,)?) => {
        /// A code as the wire carries it.
        pub fn wire_code(c: ErrorCode) -> proto::ErrorCode {
            match c {
                $(ErrorCode::$name => proto::ErrorCode::$name,)*
                // Codes added to the core reach the wire once listed here
                // (a test checks every one is).
                _ => proto::ErrorCode::Internal,
            }
        }

        /// A code from the wire; `None` for one this build does not know
        /// (a newer server's) or none at all.
        pub fn code_from_wire(c: proto::ErrorCode) -> Option<ErrorCode> {
            match c {
                $(proto::ErrorCode::$name => Some(ErrorCode::$name),)*
                proto::ErrorCode::Unspecified => None,
            }
        }
    };
}

codes!(
    NotLeader,
    LeaderNotReady,
    UnknownTopicOrPartition,
    TopicAlreadyExists,
    UnknownNode,
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
    ReplicaRepairing,
    Timeout,
    ShuttingDown,
    Internal,
    Unreachable,
    Unauthenticated,
    PermissionDenied,
);

impl proto::Error {
    /// The error's code; one this build does not know reads as `INTERNAL`
    /// (its `retriable` flag still says whether to retry).
    pub fn error_code(&self) -> ErrorCode {
        code_from_wire(self.code()).unwrap_or(ErrorCode::Internal)
    }
}

/// A rack from the wire, where "" means none.
pub fn rack(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// A node from the wire.
pub fn node_from_wire(n: proto::NodeAddress) -> NodeInfo {
    NodeInfo {
        id: n.id,
        peer_addr: n.peer_addr,
        client_addr: n.client_addr,
        rack: rack(n.rack),
    }
}

pub fn node(n: &NodeInfo) -> proto::NodeAddress {
    proto::NodeAddress {
        id: n.id,
        client_addr: n.client_addr.clone(),
        peer_addr: n.peer_addr.clone(),
        rack: n.rack.clone().unwrap_or_default(),
    }
}

/// A topic as this node sees it; `leader_of(group)` is the locally known
/// leader of a hosted partition group.
pub fn topic(t: &TopicMeta, leader_of: impl Fn(u64) -> Option<u64>) -> proto::TopicInfo {
    proto::TopicInfo {
        name: t.name.clone(),
        replication_factor: t.replication_factor,
        min_insync_replicas: t.min_insync_replicas,
        unclean_leader_election: t.unclean_leader_election,
        partitions: t
            .partitions
            .iter()
            .map(|p| proto::PartitionInfo {
                partition: p.partition,
                group: p.group,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                preferred_leader: p.preferred_leader,
                leader: leader_of(p.group).unwrap_or(0),
            })
            .collect(),
    }
}

pub fn replica_lag(l: &chronik_core::ReplicaLag) -> proto::ReplicaLag {
    proto::ReplicaLag {
        node: l.node,
        matched_index: l.matched,
        lag_entries: l.lag_entries,
        lag_ms: l.lag_ms,
        in_sync: l.in_sync,
    }
}

pub fn group_status(s: &GroupStatus) -> proto::GroupStatus {
    proto::GroupStatus {
        group: s.group,
        name: match &s.kind {
            GroupKind::Metadata => "metadata".into(),
            GroupKind::Partition(p) => p.to_string(),
        },
        role: s.role.to_string(),
        term: s.term,
        leader: s.leader.unwrap_or(0),
        commit: s.commit,
        applied: s.applied,
        last_index: s.last_index,
        snapshot_index: s.snapshot_index,
        voters: s.voters.clone(),
        repairing: s
            .repairing
            .clone()
            .or_else(|| {
                s.abstaining.then(|| {
                    "log lost entries to a corrupt WAL record: not voting until caught up with the leader"
                        .to_string()
                })
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

pub fn metadata(
    md: &MetadataState,
    topics: &[String],
    leader_of: impl Fn(u64) -> Option<u64>,
) -> Result<(Vec<proto::NodeAddress>, Vec<proto::TopicInfo>), Error> {
    let nodes = md.nodes().map(node).collect();
    let mut out = Vec::new();
    if topics.is_empty() {
        out.extend(md.topics().map(|t| topic(t, &leader_of)));
    } else {
        for name in topics {
            let t = md.topic(name).ok_or_else(|| Error::UnknownTopic {
                topic: name.clone(),
            })?;
            out.push(topic(t, &leader_of));
        }
    }
    Ok((nodes, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_travels_the_wire_and_back_under_its_own_name() {
        for code in ErrorCode::ALL {
            let wire = wire_code(code);
            assert_eq!(wire.as_str_name(), code.as_str(), "{code:?}");
            assert_eq!(code_from_wire(wire), Some(code));
        }
        assert_eq!(code_from_wire(proto::ErrorCode::Unspecified), None);
    }
}
