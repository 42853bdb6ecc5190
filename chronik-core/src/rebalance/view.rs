//! What the planner plans from: placeable nodes and every partition's
//! placement, ISR and size, taken from applied metadata.

use crate::metadata::MetadataState;
use crate::types::{GroupId, NodeId, PartitionId};
use std::collections::{BTreeMap, BTreeSet};

/// A node that may host replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub id: NodeId,
    /// Failure domain; replicas of a partition are kept spread over racks
    /// where racks are set.
    pub rack: Option<String>,
}

/// One partition as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: PartitionId,
    pub group: GroupId,
    pub replicas: Vec<NodeId>,
    pub preferred_leader: NodeId,
    pub isr: Vec<NodeId>,
    pub min_insync_replicas: u32,
    /// Bytes one replica holds (0 when unknown).
    pub bytes: u64,
    /// Not to be touched: a move is in flight, or a replica sits on a node
    /// that is joining or leaving. It still counts towards node loads.
    pub frozen: bool,
}

impl PartitionView {
    /// Whether every replica is in the ISR: only such partitions move, so a
    /// move (which drops the old replica only once the new one is in the
    /// ISR) never takes the in-sync count below where it started.
    pub fn fully_in_sync(&self) -> bool {
        self.replicas.iter().all(|r| self.isr.contains(r))
    }

    /// In-sync replicas above `min_insync_replicas` (negative when under).
    pub fn isr_headroom(&self) -> i64 {
        self.isr.len() as i64 - i64::from(self.min_insync_replicas)
    }

    fn racks(&self, racks: &BTreeMap<NodeId, String>) -> BTreeSet<String> {
        self.replicas
            .iter()
            .filter_map(|r| racks.get(r).cloned())
            .collect()
    }
}

/// The cluster as the planner sees it. Nodes and partitions are kept in id
/// order, so the same metadata always gives the same plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub nodes: Vec<NodeView>,
    pub partitions: Vec<PartitionView>,
}

impl ClusterView {
    /// The view of applied metadata, with each partition's size in bytes
    /// where known (keyed by group).
    pub fn from_metadata(md: &MetadataState, sizes: &BTreeMap<GroupId, u64>) -> Self {
        let placeable: BTreeSet<NodeId> = md.placeable_nodes().into_iter().collect();
        let nodes = md
            .nodes()
            .filter(|n| placeable.contains(&n.id))
            .map(|n| NodeView {
                id: n.id,
                rack: n.rack.clone(),
            })
            .collect();
        let partitions = md
            .topics()
            .flat_map(|t| {
                let placeable = &placeable;
                t.partitions.iter().map(move |p| PartitionView {
                    partition: PartitionId::new(t.name.clone(), p.partition),
                    group: p.group,
                    replicas: p.replicas.clone(),
                    preferred_leader: p.preferred_leader,
                    isr: p.isr.clone(),
                    min_insync_replicas: t.min_insync_replicas,
                    bytes: sizes.get(&p.group).copied().unwrap_or(0),
                    frozen: p.moving.is_some() || p.replicas.iter().any(|r| !placeable.contains(r)),
                })
            })
            .collect();
        ClusterView { nodes, partitions }
    }

    pub(crate) fn racks(&self) -> BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .filter_map(|n| n.rack.clone().map(|r| (n.id, r)))
            .collect()
    }

    /// Whether a replica of partition `p` may go from `from` to `to`: `to`
    /// holds none yet, and the replicas span no fewer racks afterwards.
    pub(crate) fn may_move(
        &self,
        p: &PartitionView,
        from: NodeId,
        to: NodeId,
        racks: &BTreeMap<NodeId, String>,
    ) -> bool {
        if p.replicas.contains(&to) || !p.replicas.contains(&from) {
            return false;
        }
        if racks.is_empty() {
            return true;
        }
        let before = p.racks(racks).len();
        let mut moved = p.clone();
        for r in moved.replicas.iter_mut() {
            if *r == from {
                *r = to;
            }
        }
        moved.racks(racks).len() >= before
    }

    /// Replicas per node (every placeable node listed, zero included).
    pub fn replica_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut c: BTreeMap<NodeId, u64> = self.nodes.iter().map(|n| (n.id, 0)).collect();
        for p in &self.partitions {
            for r in &p.replicas {
                if let Some(n) = c.get_mut(r) {
                    *n += 1;
                }
            }
        }
        c
    }

    /// Preferred leaderships per node.
    pub fn leader_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut c: BTreeMap<NodeId, u64> = self.nodes.iter().map(|n| (n.id, 0)).collect();
        for p in &self.partitions {
            if let Some(n) = c.get_mut(&p.preferred_leader) {
                *n += 1;
            }
        }
        c
    }

    /// Bytes of replicas per node.
    pub fn byte_counts(&self) -> BTreeMap<NodeId, u64> {
        let mut c: BTreeMap<NodeId, u64> = self.nodes.iter().map(|n| (n.id, 0)).collect();
        for p in &self.partitions {
            for r in &p.replicas {
                if let Some(n) = c.get_mut(r) {
                    *n += p.bytes;
                }
            }
        }
        c
    }

    /// Replaces `from` by `to` in partition `index`, as a finished move
    /// does (the new replica is in the ISR, and takes over the preferred
    /// leadership if the old one had it).
    pub(crate) fn apply_move(&mut self, index: usize, from: NodeId, to: NodeId) {
        let p = &mut self.partitions[index];
        for r in p.replicas.iter_mut() {
            if *r == from {
                *r = to;
            }
        }
        if p.preferred_leader == from {
            p.preferred_leader = to;
        }
        p.isr.retain(|n| *n != from);
        p.isr.push(to);
    }
}
