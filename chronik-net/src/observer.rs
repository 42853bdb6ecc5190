//! A window onto the engine for checkers that live outside the node: the
//! simulator feeds every node's events into one shared checker (one leader
//! per term, committed entries never change, apply exactly once in order).
//! Production nodes run without one.

use chronik_core::{Event, GroupStatus, NodeId};

/// Receives what a node's engine reports, synchronously, on the driver task.
/// Implementations must be cheap and must not block: they run inline with
/// the Raft loop.
pub trait EngineObserver: Send + Sync {
    /// The node recovered these groups and is about to apply anything else.
    fn on_start(&self, node: NodeId, groups: &[GroupStatus]);
    /// One engine event, in the order the engine produced it. With an
    /// observer the engine also reports every applied entry.
    fn on_event(&self, node: NodeId, event: &Event);
}
