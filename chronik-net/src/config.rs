//! Configuration of one node process.

use chronik_core::{EngineConfig, NodeId, NodeInfo};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `Node::start` needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Where the Raft transport listens.
    pub peer_listen: SocketAddr,
    /// Where the client and admin APIs listen.
    pub client_listen: SocketAddr,
    /// Every member of a new cluster, this node included, with the
    /// addresses peers and clients use to reach them.
    pub initial_cluster: Vec<NodeInfo>,
    /// WAL and snapshots live under `data_dir/wal`.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served over HTTP; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    pub tick_interval_ms: u64,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// How long a produce or fetch waits before answering TIMEOUT.
    pub request_timeout_ms: u64,
    pub log_compact_threshold_entries: u64,
    pub log_compact_threshold_bytes: u64,
    pub record_size_max_bytes: usize,
    /// Batches queued per peer before new ones are dropped (Raft resends).
    pub peer_queue_max: usize,
    /// Seeds the engine's RNG (election jitter). Defaults to the node id.
    pub seed: Option<u64>,
    /// Partition segment files roll past this size.
    pub segment_bytes_max: u64,
    /// Per partition: delete the oldest segments past this many bytes.
    pub retention_bytes: Option<u64>,
    /// Per partition: delete segments whose newest record is older.
    pub retention_ms: Option<u64>,
    /// A replica leaves the ISR once it lags by more entries...
    pub isr_max_lag_entries: u64,
    /// ... or has not caught up for longer than this.
    pub isr_max_lag_ms: u64,
    /// How long a ReadIndex read (leader or follower) may take.
    pub read_timeout_ms: u64,
    /// Lease-based leader reads (see `EngineConfig::lease_reads`). Off.
    pub lease_reads: bool,
    /// Client address of a member of an existing cluster: a node starting
    /// with an empty data dir asks it to add this node, then waits to be
    /// caught up. Ignored once the node has state.
    pub join: Option<String>,
}

impl NodeConfig {
    /// A config with defaults for everything but identity and addresses.
    pub fn new(
        node_id: NodeId,
        peer_listen: SocketAddr,
        client_listen: SocketAddr,
        initial_cluster: Vec<NodeInfo>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        NodeConfig {
            node_id,
            peer_listen,
            client_listen,
            initial_cluster,
            data_dir: data_dir.into(),
            metrics_listen: None,
            tick_interval_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            request_timeout_ms: 10_000,
            log_compact_threshold_entries: 10_000,
            log_compact_threshold_bytes: 16 * 1024 * 1024,
            record_size_max_bytes: 1024 * 1024,
            peer_queue_max: 1024,
            seed: None,
            segment_bytes_max: 64 * 1024 * 1024,
            retention_bytes: None,
            retention_ms: None,
            isr_max_lag_entries: 10_000,
            isr_max_lag_ms: 10_000,
            read_timeout_ms: 5_000,
            lease_reads: false,
            join: None,
        }
    }

    /// The engine's share of the config.
    pub fn engine_config(&self) -> EngineConfig {
        let mut e = EngineConfig::new(self.node_id, self.initial_cluster.clone());
        e.seed = self.seed.unwrap_or(self.node_id);
        e.tick_interval_ms = self.tick_interval_ms;
        e.election_ticks = self.election_ticks;
        e.heartbeat_ticks = self.heartbeat_ticks;
        e.log_compact_threshold_entries = self.log_compact_threshold_entries;
        e.log_compact_threshold_bytes = self.log_compact_threshold_bytes;
        e.record_size_max_bytes = self.record_size_max_bytes;
        e.isr_max_lag_entries = self.isr_max_lag_entries;
        e.isr_max_lag_ms = self.isr_max_lag_ms;
        e.read_timeout_ms = self.read_timeout_ms;
        e.lease_reads = self.lease_reads;
        e.join = self.join.is_some();
        e
    }

    /// How this node is known to others: its listen addresses.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node_id,
            peer_addr: self.peer_listen.to_string(),
            client_addr: self.client_listen.to_string(),
        }
    }
}
