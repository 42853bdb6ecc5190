//! A window onto the engine for checkers that live outside the node: the
//! simulator feeds every node's events into one shared checker (one leader
//! per term, committed entries never change, apply exactly once in order,
//! what was reported durable survives a crash, metadata equal at equal
//! applied index). Production nodes run without one.

use chronik_core::{Event, GroupStatus, MetadataState, NodeId, PersistBatch};

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
}
