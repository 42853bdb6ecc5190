//! Configuration of one node process.

use chronik_core::{EngineConfig, NodeId, NodeInfo};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything `Node::start` needs: one source for every setting and its
/// default. A node's config file is this struct (serde, unknown keys
/// refused), with the engine's tuning nested under `[engine]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Where the Raft transport listens.
    pub peer_listen: SocketAddr,
    /// Where the client and admin APIs listen.
    pub client_listen: SocketAddr,
    /// Every member of a new cluster, this node included, with the
    /// addresses peers and clients use to reach them.
    pub initial_cluster: Vec<NodeInfo>,
    /// WAL and snapshots live under `data_dir/wal`, partitions under
    /// `data_dir/partitions`.
    pub data_dir: PathBuf,
    /// Where `/metrics` is served over HTTP; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Export per-partition series (leader, ISR size, applied index, and
    /// lag per follower). Off by default: each hosted partition adds 3
    /// series and each led partition one per follower, which at thousands
    /// of partitions costs the scraper more than the node.
    pub metrics_per_partition: bool,
    /// How long a produce or fetch waits before answering TIMEOUT.
    pub request_timeout_ms: u64,
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
    /// Client address of a member of an existing cluster: a node starting
    /// with an empty data dir asks it to add this node, then waits to be
    /// caught up. Ignored once the node has state.
    pub join: Option<String>,
    /// Bytes per second this node fetches for replicas catching up through
    /// a snapshot (a replica moved here, one rebuilding its state, a
    /// follower far behind), so a rebalance never starves produce traffic.
    /// Unset: no limit.
    pub catch_up_bytes_per_sec: Option<u64>,
    /// This node's failure domain (rack, zone). The rebalancer keeps each
    /// partition's replicas spread over as many racks as they span.
    pub rack: Option<String>,
    /// Raft and engine tuning; its identity fields are set from the ones
    /// above ([`NodeConfig::engine_config`]).
    pub engine: EngineConfig,
    /// Time limits of a graceful shutdown's phases (`[shutdown]`).
    pub shutdown: chronik_core::shutdown::ShutdownConfig,
    /// Connections one client address may hold open on the client port;
    /// past it a new one is closed at once (and counted).
    pub client_connections_max: usize,
    /// Client and admin calls one client address may have in flight; past
    /// it a call is answered `BUSY` (retriable).
    pub client_in_flight_max: usize,
    /// TLS on every port (`[tls]`); `None` serves plaintext.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Authentication and authorization on the client port (`[auth]`);
    /// `None` lets every caller do anything.
    pub auth: Option<crate::auth::AuthConfig>,
}

impl Default for NodeConfig {
    /// Every default; identity and addresses are left unset (id 0, port 0,
    /// no data dir) for the caller to fill in.
    fn default() -> Self {
        let unset = SocketAddr::from(([0, 0, 0, 0], 0));
        NodeConfig {
            node_id: 0,
            peer_listen: unset,
            client_listen: unset,
            initial_cluster: Vec::new(),
            data_dir: PathBuf::new(),
            metrics_listen: None,
            metrics_per_partition: false,
            request_timeout_ms: 10_000,
            peer_queue_max: 1024,
            seed: None,
            segment_bytes_max: 64 * 1024 * 1024,
            retention_bytes: None,
            retention_ms: None,
            join: None,
            catch_up_bytes_per_sec: None,
            rack: None,
            engine: EngineConfig::default(),
            shutdown: chronik_core::shutdown::ShutdownConfig::default(),
            client_connections_max: 256,
            client_in_flight_max: 4096,
            tls: None,
            auth: None,
        }
    }
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
            ..NodeConfig::default()
        }
    }

    /// The engine's config: the tuning, with this node's identity.
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            node_id: self.node_id,
            initial_cluster: self.initial_cluster.clone(),
            seed: self.seed.unwrap_or(self.node_id),
            join: self.join.is_some(),
            ..self.engine.clone()
        }
    }

    /// Checks what the engine does not (node-level limits), then the
    /// engine's fields; names the first bad field.
    pub fn validate(&self) -> Result<(), chronik_core::ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(chronik_core::ConfigError::InvalidField {
                field,
                reason: reason.into(),
            })
        };
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be at least 1");
        }
        if self.segment_bytes_max < 4096 {
            return bad("segment_bytes_max", "must be at least 4096");
        }
        if let Some(t) = self.auth.as_ref().and_then(|a| a.node_token.as_deref()) {
            if t.trim().is_empty() || !t.trim().chars().all(|c| c.is_ascii_graphic()) {
                return bad("node_token", "must be printable ASCII");
            }
        }
        if self.client_connections_max == 0 {
            return bad("client_connections_max", "must be at least 1");
        }
        if self.client_in_flight_max == 0 {
            return bad("client_in_flight_max", "must be at least 1");
        }
        if self.peer_queue_max == 0 {
            return bad("peer_queue_max", "must be at least 1");
        }
        if self.catch_up_bytes_per_sec == Some(0) {
            return bad(
                "catch_up_bytes_per_sec",
                "must be at least 1 (leave it unset for no limit)",
            );
        }
        if let Some(Err(reason)) = self
            .rack
            .as_deref()
            .map(chronik_core::metadata::validate_rack)
        {
            return Err(chronik_core::ConfigError::InvalidField {
                field: "rack",
                reason,
            });
        }
        self.shutdown.validate()?;
        self.engine_config().validate()
    }

    /// How this node is known to others: its listen addresses.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node_id,
            peer_addr: self.peer_listen.to_string(),
            client_addr: self.client_listen.to_string(),
            rack: self.rack.clone(),
        }
    }
}
