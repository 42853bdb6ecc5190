//! Partition rebalancing: how unbalanced the cluster is, and the plan
//! that fixes it. Pure: metadata in, a plan out.
//!
//! The metadata leader plans from applied metadata (see
//! [`ClusterView::from_metadata`]) and records the plan in the metadata
//! group; partition leaders carry out its replica moves with the same
//! joint-consensus steps a node removal uses. A plan never lowers a
//! partition's in-sync replicas: only fully in-sync partitions move, and a
//! move drops its old replica only once the new one is in the ISR.
//!
//! ```
//! use chronik_core::rebalance::{plan, ClusterView, NodeView, PartitionView, PlanLimits};
//! use chronik_core::PartitionId;
//!
//! // Three nodes hold two partitions of replication 3; node 4 is new.
//! let nodes = (1..=4).map(|id| NodeView { id, rack: None }).collect();
//! let partitions = (0..2)
//!     .map(|p| PartitionView {
//!         partition: PartitionId::new("t", p),
//!         group: u64::from(p) + 1,
//!         replicas: vec![1, 2, 3],
//!         preferred_leader: 1 + u64::from(p),
//!         isr: vec![1, 2, 3],
//!         min_insync_replicas: 2,
//!         bytes: 1 << 20,
//!         frozen: false,
//!     })
//!     .collect();
//! let view = ClusterView { nodes, partitions };
//! let p = plan(&view, PlanLimits { imbalance_threshold: 0.2, max_moves: 10 });
//! assert_eq!(p.moves.len(), 1, "6 replicas over 4 nodes: one move gives 2, 2, 1, 1");
//! assert_eq!(p.moves[0].to, 4);
//! ```

mod imbalance;
mod planner;
mod view;

pub use imbalance::{allowed_spread, lower_bound_moves, ratio, Imbalance};
pub use planner::{plan, LeaderChange, Plan, PlanLimits, PlannedMove};
pub use view::{ClusterView, NodeView, PartitionView};

/// When and how the metadata leader rebalances (`[engine.rebalance]`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebalanceConfig {
    /// Rebalance on its own: every `check_interval_ms`, and at once after a
    /// node joins or leaves.
    pub enabled: bool,
    pub check_interval_ms: u64,
    /// A dimension (replicas, leaders or bytes per node) is unbalanced when
    /// `(max - min) / mean` exceeds this.
    pub imbalance_threshold: f64,
    /// Replica moves in flight at once, cluster-wide.
    pub max_concurrent_moves: u32,
    /// A move whose new replica has not joined the ISR by then is rolled
    /// back (the new replica removed, placement unchanged).
    pub migration_timeout_ms: u64,
    /// The catch-up rate a plan's duration estimate assumes.
    pub estimate_bytes_per_sec: u64,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig {
            enabled: true,
            check_interval_ms: 60_000,
            imbalance_threshold: 0.2,
            max_concurrent_moves: 3,
            migration_timeout_ms: 300_000,
            estimate_bytes_per_sec: 50 * 1024 * 1024,
        }
    }
}

impl RebalanceConfig {
    /// Names the first bad field.
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(crate::error::ConfigError::InvalidField {
                field,
                reason: reason.into(),
            })
        };
        if !(self.imbalance_threshold.is_finite() && self.imbalance_threshold >= 0.0) {
            return bad(
                "rebalance.imbalance_threshold",
                "must be a finite number, 0 or more",
            );
        }
        if self.max_concurrent_moves == 0 {
            return bad("rebalance.max_concurrent_moves", "must be at least 1");
        }
        if self.check_interval_ms == 0 {
            return bad("rebalance.check_interval_ms", "must be at least 1");
        }
        if self.migration_timeout_ms == 0 {
            return bad("rebalance.migration_timeout_ms", "must be at least 1");
        }
        if self.estimate_bytes_per_sec == 0 {
            return bad("rebalance.estimate_bytes_per_sec", "must be at least 1");
        }
        Ok(())
    }

    /// Plan limits for a plan of at most `max_moves` moves.
    pub fn limits(&self, max_moves: usize) -> PlanLimits {
        PlanLimits {
            imbalance_threshold: self.imbalance_threshold,
            max_moves,
        }
    }
}

#[cfg(test)]
mod tests;
