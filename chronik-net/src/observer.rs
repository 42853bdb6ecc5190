//! A window onto the engine for checkers that live outside the node: the
//! simulator feeds every node's events into one shared checker (one leader
//! per term, committed entries never change, apply exactly once in order,
//! what was reported durable survives a crash, metadata equal at equal
//! applied index). Production nodes run without one.

use chronik_core::{Event, GroupMessage, GroupStatus, MetadataState, NodeId, PersistBatch};

/// Receives what a node's engine reports, synchronously, on the driver task
/// (or the WAL task for [`EngineObserver::on_durable`]). Implementations
/// must be cheap and must not block: they run inline with the Raft loop.
pub trait EngineObserver: Send + Sync {
    /// The node recovered these groups and is about to apply anything else.
    fn on_start(&self, node: NodeId, groups: &[GroupStatus]);
    /// One engine event, in the order the engine produced it. With an
    /// observer the engine also reports every applied entry.
    fn on_event(&self, node: NodeId, event: &Event);
    /// The WAL wrote these batches, and synced them where a batch asked for
    /// it; the engine hears of it next. From now on a crash must not lose
    /// what the synced ones carry.
    fn on_durable(&self, _node: NodeId, _batches: &[PersistBatch]) {}
    /// The node's metadata after it applied up to
    /// `metadata.applied_index()` (reported once per new applied index, not
    /// for every index in between).
    fn on_metadata(&self, _node: NodeId, _metadata: &MetadataState) {}
    /// The node hands these messages to its transport for `to`. A checker
    /// can hold replies that promise durability (votes granted, appends
    /// acknowledged) to what the WAL already reported durable.
    fn on_send(&self, _node: NodeId, _to: NodeId, _messages: &[GroupMessage]) {}
    /// Whether the node should stop dead at `point`, as if it crashed
    /// there: the task that asks never runs again (nothing after the point
    /// happens) and the harness then kills and restarts the node. A
    /// simulator arms these to crash nodes at protocol steps a timed kill
    /// rarely hits. Production observers leave it `false`.
    fn crash_here(&self, _node: NodeId, _point: CrashPoint) -> bool {
        false
    }
}

/// A protocol step where a simulated node can be crashed
/// ([`EngineObserver::crash_here`]).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum CrashPoint {
    /// The WAL wrote a batch that must be synced, before the fsync.
    WalBeforeSync,
    /// A batch that records a new vote is durable, before the engine hears
    /// of it (so before the vote reply leaves).
    AfterVotePersisted,
    /// Any other batch is durable, before the messages and replies it
    /// holds back are released.
    AfterPersistBeforeRelease,
    /// A snapshot's segments are being streamed in from the leader: a chunk
    /// was just written, more are coming.
    MidSegmentStream,
    /// A snapshot's segments were streamed in from the leader, before the
    /// snapshot is installed.
    SnapshotSegmentsFetched,
    /// The metadata group's configuration is joint (a membership change is
    /// half done).
    InsideJointConfig,
    /// A partition replica was just dropped here (its topic deleted, or the
    /// replica moved away): the record of the drop is on its way to the
    /// WAL, and the files go once it is durable.
    GroupDropped,
    /// A partition snapshot's checkpoint (the sync of the segments it names
    /// and its manifest) is about to run: the node's partition IO stops
    /// dead there, the rest of the node runs on until the harness kills it.
    /// The log must not be compacted behind that snapshot yet.
    StateIoBeforeCheckpoint,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 8] = [
        CrashPoint::WalBeforeSync,
        CrashPoint::AfterVotePersisted,
        CrashPoint::AfterPersistBeforeRelease,
        CrashPoint::MidSegmentStream,
        CrashPoint::SnapshotSegmentsFetched,
        CrashPoint::InsideJointConfig,
        CrashPoint::GroupDropped,
        CrashPoint::StateIoBeforeCheckpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::WalBeforeSync => "wal-before-sync",
            CrashPoint::AfterVotePersisted => "after-vote-persisted",
            CrashPoint::AfterPersistBeforeRelease => "after-persist-before-release",
            CrashPoint::MidSegmentStream => "mid-segment-stream",
            CrashPoint::SnapshotSegmentsFetched => "snapshot-segments-fetched",
            CrashPoint::InsideJointConfig => "inside-joint-config",
            CrashPoint::GroupDropped => "group-dropped",
            CrashPoint::StateIoBeforeCheckpoint => "state-io-before-checkpoint",
        }
    }
}
