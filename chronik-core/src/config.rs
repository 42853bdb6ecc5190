//! Engine configuration, validated once at construction.

use crate::error::ConfigError;
use crate::types::{NodeId, NodeInfo};

/// Everything an [`crate::Engine`] needs to know up front. Defaults suit a
/// LAN cluster with a 100 ms tick; tests shrink the thresholds.
///
/// The tuning fields are what a node's config file holds under `[engine]`
/// (serde, every field optional, unknown ones refused); identity (node id,
/// cluster, seed, join) comes from the node's own settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// This node. Must appear in `initial_cluster` when bootstrapping.
    #[serde(skip)]
    pub node_id: NodeId,
    /// The members of the metadata group at bootstrap. Every node of a new
    /// cluster must be given the same list.
    #[serde(skip)]
    pub initial_cluster: Vec<NodeInfo>,
    /// Seeds every random choice the engine makes (election jitter).
    #[serde(skip)]
    pub seed: u64,
    /// Tells this start of the node from its earlier ones: any value no
    /// earlier start used (the driver takes its boot time in ns). ReadIndex
    /// contexts carry it with the node id, so that a leader never takes a
    /// round of this node for one of another node (raft-rs drops a request
    /// whose context is already pending: the round would wait out its
    /// whole timeout) nor answers this start with a round an earlier start
    /// asked before it went down (a read index older than the read).
    #[serde(skip)]
    pub incarnation: u64,
    /// Length of one Raft tick.
    pub tick_interval_ms: u64,
    /// Ticks without a heartbeat before a follower campaigns; the actual
    /// timeout is drawn in `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats. Must be below `election_ticks`.
    pub heartbeat_ticks: usize,
    /// Compact a group's log behind a snapshot once this many applied
    /// entries sit in memory.
    pub log_compact_threshold_entries: u64,
    /// ... or once this many bytes of applied entries do, whichever comes
    /// first: keeps a group's in-memory log bounded with large entries.
    pub log_compact_threshold_bytes: u64,
    /// Upper bound of bytes of entries in one append message.
    pub max_size_per_msg_bytes: u64,
    /// Upper bound of append messages in flight per follower.
    pub max_inflight_msgs: usize,
    /// Proposals per group waiting for commit before new ones get `Busy`.
    pub pending_proposals_max: usize,
    /// Largest record accepted by `produce`.
    pub record_size_max_bytes: usize,
    /// Most records in one `produce`.
    pub produce_records_max: usize,
    /// Most partitions in one topic.
    pub topic_partitions_max: u32,
    /// Emit an [`crate::Event::EntryApplied`] for every applied entry. Costs a
    /// little per entry; the test harnesses turn it on for their checkers.
    #[serde(skip)]
    pub emit_apply_events: bool,
    /// A partition replica stays in sync while it lags the leader by at most
    /// this many entries...
    pub isr_max_lag_entries: u64,
    /// ... and caught up with the leader within this many milliseconds.
    pub isr_max_lag_ms: u64,
    /// How long a ReadIndex read may wait for its confirmation and for the
    /// local state to catch up before it fails with a retriable error.
    pub read_timeout_ms: u64,
    /// Serve leader ReadIndex reads from the leader's lease instead of a
    /// heartbeat round (raft-rs `ReadOnlyOption::LeaseBased`). Saves a round
    /// trip per read batch, but is only linearizable if clocks advance at
    /// nearly the same rate on every node: a leader trusts its lease for an
    /// election timeout after the quorum last heard from it, so a node whose
    /// clock runs slow by more than the gap between that timeout and a
    /// follower's randomized one could serve a stale read. Off by default.
    pub lease_reads: bool,
    /// Idle partition groups stop ticking and heartbeating until there is
    /// something to do (quiescence): an idle node hosting thousands of
    /// partitions then costs almost nothing. Leader failure is still
    /// detected within an election timeout: nodes ping each other, and a
    /// quiesced follower whose leader's node goes silent wakes and elects.
    /// Has no effect with `lease_reads` (a lease relies on the leader
    /// ticking).
    pub quiesce_idle_groups: bool,
    /// The rebalancer (`[engine.rebalance]`).
    pub rebalance: crate::rebalance::RebalanceConfig,
    /// This node joins an existing cluster: it starts with an empty
    /// metadata configuration and waits for the metadata leader to add it
    /// (as a learner first). `initial_cluster` then lists the members it
    /// was told about, to accept their messages; it is never bootstrapped.
    #[serde(skip)]
    pub join: bool,
}

impl Default for EngineConfig {
    /// The defaults, for no node yet: set the identity before use.
    fn default() -> Self {
        EngineConfig::new(0, Vec::new())
    }
}

impl EngineConfig {
    /// A config with sane defaults for the given node and cluster.
    pub fn new(node_id: NodeId, initial_cluster: Vec<NodeInfo>) -> Self {
        EngineConfig {
            node_id,
            initial_cluster,
            seed: node_id,
            incarnation: 0,
            tick_interval_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            log_compact_threshold_entries: 10_000,
            log_compact_threshold_bytes: 16 * 1024 * 1024,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            pending_proposals_max: 10_000,
            record_size_max_bytes: 1024 * 1024,
            produce_records_max: 10_000,
            topic_partitions_max: 10_000,
            emit_apply_events: false,
            isr_max_lag_entries: 10_000,
            isr_max_lag_ms: 10_000,
            read_timeout_ms: 5_000,
            lease_reads: false,
            quiesce_idle_groups: true,
            rebalance: crate::rebalance::RebalanceConfig::default(),
            join: false,
        }
    }

    /// Checks every field; names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |field: &'static str, reason: String| Err(ConfigError::InvalidField { field, reason });
        if self.node_id == 0 {
            return bad("node_id", "must be at least 1 (0 means no node)".into());
        }
        if self.initial_cluster.is_empty() && !self.join {
            return bad("initial_cluster", "must list at least one node".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut addrs = std::collections::BTreeSet::new();
        for n in &self.initial_cluster {
            if n.id == 0 {
                return bad("initial_cluster", "node id 0 is reserved".into());
            }
            if !ids.insert(n.id) {
                return bad(
                    "initial_cluster",
                    format!("node id {} is listed twice", n.id),
                );
            }
            if let Some(Err(reason)) = n.rack.as_deref().map(crate::metadata::validate_rack) {
                return bad("initial_cluster", format!("node {}: {reason}", n.id));
            }
            for a in [&n.peer_addr, &n.client_addr] {
                if let Err(reason) = crate::metadata::validate_addr(a) {
                    return bad("initial_cluster", format!("node {}: {reason}", n.id));
                }
                if !addrs.insert(a.clone()) {
                    return bad("initial_cluster", format!("address {a} is listed twice"));
                }
            }
        }
        if !self.join && !ids.contains(&self.node_id) {
            return bad(
                "node_id",
                format!("node {} is not in initial_cluster", self.node_id),
            );
        }
        if self.tick_interval_ms == 0 {
            return bad("tick_interval_ms", "must be at least 1".into());
        }
        if self.heartbeat_ticks == 0 {
            return bad("heartbeat_ticks", "must be at least 1".into());
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return bad(
                "election_ticks",
                format!("must exceed heartbeat_ticks ({})", self.heartbeat_ticks),
            );
        }
        if self.log_compact_threshold_entries == 0 {
            return bad("log_compact_threshold_entries", "must be at least 1".into());
        }
        if self.log_compact_threshold_bytes == 0 {
            return bad("log_compact_threshold_bytes", "must be at least 1".into());
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs", "must be at least 1".into());
        }
        if self.pending_proposals_max == 0 {
            return bad("pending_proposals_max", "must be at least 1".into());
        }
        if self.record_size_max_bytes == 0 {
            return bad("record_size_max_bytes", "must be at least 1".into());
        }
        if self.produce_records_max == 0 {
            return bad("produce_records_max", "must be at least 1".into());
        }
        if self.topic_partitions_max == 0 {
            return bad("topic_partitions_max", "must be at least 1".into());
        }
        if self.isr_max_lag_entries == 0 {
            return bad("isr_max_lag_entries", "must be at least 1".into());
        }
        if self.isr_max_lag_ms < self.tick_interval_ms * self.election_ticks as u64 {
            return bad(
                "isr_max_lag_ms",
                format!(
                    "must be at least one election timeout ({} ms): a replica is only seen catching up once per tick",
                    self.tick_interval_ms * self.election_ticks as u64
                ),
            );
        }
        if self.read_timeout_ms < self.tick_interval_ms {
            return bad(
                "read_timeout_ms",
                format!("must be at least one tick ({} ms)", self.tick_interval_ms),
            );
        }
        self.rebalance.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            client_addr: format!("127.0.0.1:{}", 9000 + id),
            peer_addr: format!("127.0.0.1:{}", 9100 + id),
            rack: None,
        }
    }

    #[test]
    fn default_config_is_valid() {
        let c = EngineConfig::new(1, vec![node(1), node(2), node(3)]);
        c.validate().expect("valid");
    }

    #[test]
    fn bad_fields_are_named() {
        let base = EngineConfig::new(1, vec![node(1), node(2)]);
        type Mutation = Box<dyn Fn(&mut EngineConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("node_id", Box::new(|c| c.node_id = 0)),
            ("node_id", Box::new(|c| c.node_id = 7)),
            ("initial_cluster", Box::new(|c| c.initial_cluster.clear())),
            (
                "initial_cluster",
                Box::new(|c| c.initial_cluster.push(node(2))),
            ),
            (
                "initial_cluster",
                Box::new(|c| c.initial_cluster[1].peer_addr = "nonsense".into()),
            ),
            (
                "initial_cluster",
                Box::new(|c| {
                    c.initial_cluster[1].peer_addr = c.initial_cluster[0].peer_addr.clone()
                }),
            ),
            ("tick_interval_ms", Box::new(|c| c.tick_interval_ms = 0)),
            ("election_ticks", Box::new(|c| c.election_ticks = 2)),
            ("heartbeat_ticks", Box::new(|c| c.heartbeat_ticks = 0)),
            (
                "isr_max_lag_entries",
                Box::new(|c| c.isr_max_lag_entries = 0),
            ),
            ("isr_max_lag_ms", Box::new(|c| c.isr_max_lag_ms = 10)),
            ("read_timeout_ms", Box::new(|c| c.read_timeout_ms = 0)),
        ];
        for (field, mutate) in cases {
            let mut c = base.clone();
            mutate(&mut c);
            match c.validate() {
                Err(ConfigError::InvalidField { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected error on {field}, got {other:?}"),
            }
        }
    }
}
