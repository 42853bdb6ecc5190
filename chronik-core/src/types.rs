//! Identifiers and small value types shared by every module.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A cluster node. Doubles as the raft-rs peer id in every group the node
/// belongs to, so it is never 0 (raft-rs reserves 0 for "no node").
pub type NodeId = u64;

/// A Raft group hosted by the engine. The metadata group is
/// [`METADATA_GROUP`]; partition groups get ids allocated by the metadata
/// state machine, monotonically, so an id is never reused after a delete.
pub type GroupId = u64;

/// The id of the metadata Raft group on every node.
pub const METADATA_GROUP: GroupId = 0;

/// Correlates a command with its [`crate::Output::Reply`]. Chosen by the
/// driver; the engine only echoes it back. 0 is reserved for the engine's
/// own requests.
pub type RequestId = u64;

/// Milliseconds on a monotonic clock whose epoch the driver chooses. The core
/// never reads a clock: every input carries the time it happened at.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Milliseconds since the driver's epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating.
    pub fn plus_millis(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// A topic partition: the unit of replication (one Raft group each).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    pub topic: String,
    pub partition: u32,
}

impl PartitionId {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        PartitionId {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// What a node is known by: its id and the two addresses it listens on.
/// Addresses are opaque `host:port` strings to the core.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Where clients and operators reach the node (gRPC client/admin API).
    pub client_addr: String,
    /// Where peers reach the node (Raft transport).
    pub peer_addr: String,
    /// Failure domain (rack, zone): the rebalancer keeps a partition's
    /// replicas spread over as many racks as they already span.
    #[serde(default)]
    pub rack: Option<String>,
}

/// Which state machine a group replicates. Persisted with the group so a
/// restarted engine knows what to rebuild before metadata is replayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKind {
    Metadata,
    Partition(PartitionId),
}

/// The Raft role of this node in one group, as the engine reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

impl From<raft::StateRole> for Role {
    fn from(r: raft::StateRole) -> Self {
        match r {
            raft::StateRole::Follower => Role::Follower,
            raft::StateRole::PreCandidate => Role::PreCandidate,
            raft::StateRole::Candidate => Role::Candidate,
            raft::StateRole::Leader => Role::Leader,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.write_str(s)
    }
}

/// How fresh a read must be.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Linearizable, served by the leader after a ReadIndex confirmation.
    #[default]
    Leader,
    /// Linearizable, served by any replica: it asks the leader for a read
    /// index (one heartbeat round), waits until it has applied that far,
    /// then answers from its own state.
    Follower,
    /// Whatever the replica asked has applied, at once. May miss records
    /// acknowledged elsewhere (it can lag by a whole partition or an
    /// election timeout); never returns records that are not committed.
    FollowerStale,
}

impl ReadConsistency {
    /// `leader`, `follower` or `follower-stale`.
    pub fn parse(s: &str) -> Option<ReadConsistency> {
        match s {
            "leader" => Some(ReadConsistency::Leader),
            "follower" => Some(ReadConsistency::Follower),
            "follower-stale" => Some(ReadConsistency::FollowerStale),
            _ => None,
        }
    }
}

impl fmt::Display for ReadConsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadConsistency::Leader => "leader",
            ReadConsistency::Follower => "follower",
            ReadConsistency::FollowerStale => "follower-stale",
        })
    }
}
