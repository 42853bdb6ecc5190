//! How unbalanced a cluster is, per dimension: `(max - min) / mean` over
//! the placeable nodes, and the spread a balanced cluster may keep.

use super::view::ClusterView;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Imbalance ratios, one per dimension. 0 is perfectly even; a cluster is
/// balanced when every ratio is at most the threshold.
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Imbalance {
    pub replicas: f64,
    pub leaders: f64,
    pub bytes: f64,
}

impl Imbalance {
    pub fn of(view: &ClusterView) -> Imbalance {
        Imbalance {
            replicas: ratio(&view.replica_counts()),
            leaders: ratio(&view.leader_counts()),
            bytes: ratio(&view.byte_counts()),
        }
    }

    /// The dimensions above `threshold`, by name.
    pub fn exceeding(&self, threshold: f64) -> Vec<&'static str> {
        [
            ("replicas", self.replicas),
            ("leaders", self.leaders),
            ("bytes", self.bytes),
        ]
        .into_iter()
        .filter(|(_, r)| *r > threshold)
        .map(|(n, _)| n)
        .collect()
    }

    pub fn worst(&self) -> f64 {
        self.replicas.max(self.leaders).max(self.bytes)
    }
}

impl std::fmt::Display for Imbalance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replicas {:.3}, leaders {:.3}, bytes {:.3}",
            self.replicas, self.leaders, self.bytes
        )
    }
}

/// `(max - min) / mean`, 0 for no nodes or nothing placed.
pub fn ratio(counts: &BTreeMap<NodeId, u64>) -> f64 {
    let (Some(max), Some(min)) = (counts.values().max(), counts.values().min()) else {
        return 0.0;
    };
    let total: u64 = counts.values().sum();
    if total == 0 {
        return 0.0;
    }
    let mean = total as f64 / counts.len() as f64;
    (max - min) as f64 / mean
}

/// The largest `max - min` a dimension of integer counts may keep: what
/// the threshold allows, but never below what the total makes unavoidable
/// (`total` not divisible by the node count leaves a spread of 1).
pub fn allowed_spread(total: u64, nodes: usize, threshold: f64) -> u64 {
    if nodes == 0 {
        return 0;
    }
    let mean = total as f64 / nodes as f64;
    let by_threshold = (threshold * mean).floor().max(0.0) as u64;
    by_threshold.max(u64::from(total % nodes as u64 != 0))
}

/// The fewest moves of one unit from a node to another that bring every
/// count within `spread`: the best window `[lo, lo + spread]` that can hold
/// the total, and the larger of the excess above it and the deficit below.
pub fn lower_bound_moves(counts: &BTreeMap<NodeId, u64>, spread: u64) -> u64 {
    let n = counts.len() as u64;
    let total: u64 = counts.values().sum();
    if n == 0 {
        return 0;
    }
    let mut best = u64::MAX;
    for lo in 0..=total / n {
        let hi = lo + spread;
        if n * lo > total || n * hi < total {
            continue;
        }
        let excess: u64 = counts.values().map(|c| c.saturating_sub(hi)).sum();
        let deficit: u64 = counts.values().map(|c| lo.saturating_sub(*c)).sum();
        best = best.min(excess.max(deficit));
    }
    if best == u64::MAX {
        0
    } else {
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: &[u64]) -> BTreeMap<NodeId, u64> {
        c.iter()
            .enumerate()
            .map(|(i, c)| (i as u64 + 1, *c))
            .collect()
    }

    #[test]
    fn ratios_and_bounds() {
        assert_eq!(ratio(&counts(&[4, 4, 4])), 0.0);
        assert_eq!(ratio(&counts(&[12, 12, 12, 0])), 12.0 / 9.0);
        assert_eq!(ratio(&counts(&[])), 0.0);
        assert_eq!(allowed_spread(36, 4, 0.2), 1, "floor(0.2 * 9)");
        assert_eq!(allowed_spread(36, 3, 0.0), 0);
        assert_eq!(allowed_spread(4, 3, 0.0), 1, "4 over 3 cannot be even");
        assert_eq!(lower_bound_moves(&counts(&[12, 12, 12, 0]), 1), 9);
        assert_eq!(lower_bound_moves(&counts(&[5, 5, 0]), 1), 3);
        assert_eq!(lower_bound_moves(&counts(&[3, 3, 3]), 0), 0);
    }
}
