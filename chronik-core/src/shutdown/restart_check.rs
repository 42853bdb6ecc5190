//! Whether a node may be restarted now without making anything
//! unavailable: the question an operator asks before each step of a
//! rolling restart.

use crate::metadata::MetadataState;
use crate::{NodeId, PartitionId};
use std::collections::BTreeSet;

/// The answer of [`restart_check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartCheck {
    pub node: NodeId,
    /// Restarting the node now keeps every group it is part of writable.
    pub safe: bool,
    /// Why not, one line per problem (empty when safe).
    pub reasons: Vec<String>,
    /// Partitions with a replica on the node.
    pub partitions: usize,
}

/// Whether `node` can be stopped now: every partition it hosts keeps
/// `min_insync_replicas` in-sync replicas and a Raft majority on other
/// nodes, no replica move or membership change involves it, and the
/// metadata group keeps a majority of `metadata_voters` among the `alive`
/// nodes (those the metadata leader hears from).
///
/// The ISR is the metadata leader's last word on which replicas are in
/// sync: a node just restarted counts once its replicas rejoined the ISR,
/// which is what a rolling restart waits for between nodes.
pub fn restart_check(
    metadata: &MetadataState,
    node: NodeId,
    metadata_voters: &[NodeId],
    alive: &BTreeSet<NodeId>,
) -> Result<RestartCheck, crate::Error> {
    if metadata.was_removed(node) {
        return Err(crate::Error::NodeRemoved { node });
    }
    if metadata.node(node).is_none() {
        return Err(crate::Error::UnknownNode { node });
    }
    let mut reasons = Vec::new();
    if let Some(change) = metadata.membership_in_flight() {
        reasons.push(format!("a membership change is in flight: {change}"));
    }
    let others: Vec<NodeId> = metadata_voters
        .iter()
        .copied()
        .filter(|v| *v != node && alive.contains(v))
        .collect();
    let majority = metadata_voters.len() / 2 + 1;
    if metadata_voters.contains(&node) && others.len() < majority {
        reasons.push(format!(
            "metadata group: {} live voters besides node {node} ({others:?}), {majority} needed for a majority of {metadata_voters:?}",
            others.len()
        ));
    }
    let mut partitions = 0;
    for topic in metadata.topics() {
        for p in &topic.partitions {
            let moving = p.moving.filter(|m| m.from == node || m.to == node);
            if !p.replicas.contains(&node) && moving.is_none() {
                continue;
            }
            partitions += 1;
            let name = PartitionId::new(topic.name.clone(), p.partition);
            if let Some(m) = moving {
                reasons.push(format!(
                    "{name}: its replica is moving from node {} to node {}",
                    m.from, m.to
                ));
                continue;
            }
            let in_sync: Vec<NodeId> = p
                .isr
                .iter()
                .copied()
                .filter(|n| *n != node && p.replicas.contains(n) && alive.contains(n))
                .collect();
            let needed = (topic.min_insync_replicas as usize).max(p.replicas.len() / 2 + 1);
            if in_sync.len() < needed {
                reasons.push(format!(
                    "{name}: {} in-sync replicas besides node {node} ({in_sync:?}; ISR {:?}, replicas {:?}), {needed} needed (min_insync_replicas {}, majority {})",
                    in_sync.len(),
                    p.isr,
                    p.replicas,
                    topic.min_insync_replicas,
                    p.replicas.len() / 2 + 1,
                ));
            }
        }
    }
    Ok(RestartCheck {
        node,
        safe: reasons.is_empty(),
        reasons,
        partitions,
    })
}
