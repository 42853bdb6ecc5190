//! `testing::Cluster`: N engines over an in-memory network and in-memory
//! disks, driven by a seeded RNG, like quinn-proto's `Pair` for many nodes.
//!
//! The network can lose, delay (and so reorder), duplicate and partition
//! messages; disks complete persist batches in order after a random delay,
//! and a crash loses every batch not yet completed. A [`Checker`] watches
//! every output for the Raft and partition-log invariants.

mod checker;
mod client;
mod drive;
mod network;

pub use checker::Checker;

use crate::output::{Command, Event, GroupMessage, Output, Response};
use crate::partition_log::{Appended, RecordCommand, RecordLog, RecordQuery};
use crate::persist::{DurableState, PersistBatch};
use crate::types::{GroupId, NodeId, NodeInfo, PartitionId, RequestId, Role, Time, METADATA_GROUP};
use crate::{Engine, EngineConfig, Error, MetadataCommand};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

/// How unreliable the network and disks are.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Probability that a message batch is lost.
    pub loss: f64,
    /// Probability that a message batch is delivered twice.
    pub duplicate: f64,
    /// Delivery delay range in ms; a range wider than zero reorders.
    pub delay_ms: (u64, u64),
    /// Persist (write + fsync) latency range in ms.
    pub persist_ms: (u64, u64),
}

impl Faults {
    /// A perfect network with a small fixed latency.
    pub fn none() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            delay_ms: (1, 1),
            persist_ms: (0, 0),
        }
    }
}

/// Cluster shape and timing.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: u64,
    pub seed: u64,
    pub faults: Faults,
    pub tick_interval_ms: u64,
    pub log_compact_threshold_entries: u64,
    /// Run the checker on every output (apply events, trace hash). Benches
    /// turn it off to measure the engine alone.
    pub checks: bool,
    pub isr_max_lag_ms: u64,
    pub read_timeout_ms: u64,
    pub rebalance: crate::rebalance::RebalanceConfig,
}

impl ClusterConfig {
    pub fn new(nodes: u64, seed: u64) -> Self {
        ClusterConfig {
            nodes,
            seed,
            faults: Faults::none(),
            tick_interval_ms: 10,
            log_compact_threshold_entries: 10_000,
            checks: true,
            isr_max_lag_ms: 1_000,
            read_timeout_ms: 1_000,
            rebalance: crate::rebalance::RebalanceConfig::default(),
        }
    }
}

struct SimNode {
    engine: Option<Engine>,
    /// What survived every crash so far.
    disk: DurableState,
    /// Batches handed out and not yet durable, with their completion time.
    unsynced: VecDeque<(u64, PersistBatch)>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    from: NodeId,
    to: NodeId,
}

/// What the harness remembers of a produce it sent.
#[derive(Clone, Debug)]
struct SentProduce {
    partition: PartitionId,
    records: Vec<Bytes>,
}

/// An acknowledged produce: these records hold these offsets forever.
#[derive(Clone, Debug, PartialEq)]
pub struct Acked {
    pub partition: PartitionId,
    pub base_offset: u64,
    pub records: Vec<Bytes>,
}

/// N engines, a network and disks, all in memory and seeded.
pub struct Cluster {
    config: ClusterConfig,
    infos: Vec<NodeInfo>,
    /// Nodes added with [`Cluster::add_node`]: they join, never bootstrap,
    /// knowing the members listed here.
    joined: BTreeMap<NodeId, Vec<NodeInfo>>,
    /// Nodes that reported being removed from the cluster.
    pub removed: BTreeSet<NodeId>,
    now: u64,
    /// Engines started so far (the next start's incarnation).
    starts: u64,
    rng: StdRng,
    nodes: BTreeMap<NodeId, SimNode>,
    network: BinaryHeap<Reverse<(InFlight, usize)>>,
    payloads: BTreeMap<usize, Vec<GroupMessage>>,
    next_payload: usize,
    next_seq: u64,
    /// Directed links that drop everything.
    blocked: BTreeSet<(NodeId, NodeId)>,
    next_request: RequestId,
    sent_produces: BTreeMap<RequestId, SentProduce>,
    /// Every reply received, by request id.
    pub replies: BTreeMap<RequestId, Result<Response<RecordLog>, Error>>,
    /// Every acknowledged produce, in acknowledgement order.
    pub acked: Vec<Acked>,
    /// Per partition, the offsets acknowledged so far (`max offset + 1`),
    /// as known when each outstanding fetch was sent.
    fetch_expect: BTreeMap<RequestId, (PartitionId, u64)>,
    acked_end: BTreeMap<PartitionId, u64>,
    pub checker: Checker,
    /// Raft messages sent so far, per group (delivered or not).
    pub messages_sent: BTreeMap<GroupId, u64>,
}

impl Cluster {
    /// A new cluster with a perfect network.
    pub fn new(nodes: u64, seed: u64) -> Cluster {
        Cluster::with_config(ClusterConfig::new(nodes, seed))
    }

    pub fn with_config(config: ClusterConfig) -> Cluster {
        assert!(config.nodes >= 1, "a cluster has nodes");
        let infos: Vec<NodeInfo> = (1..=config.nodes)
            .map(|id| NodeInfo {
                id,
                client_addr: format!("node{id}:9092"),
                peer_addr: format!("node{id}:9093"),
                rack: None,
            })
            .collect();
        let mut c = Cluster {
            rng: StdRng::seed_from_u64(config.seed),
            infos,
            joined: BTreeMap::new(),
            removed: BTreeSet::new(),
            now: 0,
            starts: 0,
            nodes: BTreeMap::new(),
            network: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            next_payload: 0,
            next_seq: 0,
            blocked: BTreeSet::new(),
            next_request: 1,
            sent_produces: BTreeMap::new(),
            replies: BTreeMap::new(),
            acked: Vec::new(),
            fetch_expect: BTreeMap::new(),
            acked_end: BTreeMap::new(),
            checker: Checker::default(),
            messages_sent: BTreeMap::new(),
            config,
        };
        for id in 1..=c.config.nodes {
            c.nodes.insert(
                id,
                SimNode {
                    engine: None,
                    disk: DurableState::default(),
                    unsynced: VecDeque::new(),
                },
            );
            c.start(id);
        }
        c
    }

    fn engine_config(&self, id: NodeId) -> EngineConfig {
        let members = match self.joined.get(&id) {
            Some(known) => known.clone(),
            None => self.infos[..self.config.nodes as usize].to_vec(),
        };
        let mut ec = EngineConfig::new(id, members);
        ec.join = self.joined.contains_key(&id);
        ec.seed = self.config.seed.wrapping_mul(31).wrapping_add(id);
        ec.tick_interval_ms = self.config.tick_interval_ms;
        ec.election_ticks = 10;
        ec.heartbeat_ticks = 2;
        ec.log_compact_threshold_entries = self.config.log_compact_threshold_entries;
        ec.emit_apply_events = self.config.checks;
        ec.isr_max_lag_ms = self.config.isr_max_lag_ms;
        ec.read_timeout_ms = self.config.read_timeout_ms;
        ec.rebalance = self.config.rebalance.clone();
        ec
    }

    fn start(&mut self, id: NodeId) {
        let mut cfg = self.engine_config(id);
        // Each start of a node is a new incarnation.
        self.starts += 1;
        cfg.incarnation = self.starts;
        let disk = self.nodes[&id].disk.clone();
        let engine = Engine::new_record_log(cfg, disk, Time(self.now))
            .expect("a disk written by the engine recovers");
        self.checker.on_start(&engine);
        self.nodes.get_mut(&id).expect("node exists").engine = Some(engine);
        self.drain(id);
    }

    /// Current simulated time in ms.
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.engine.is_some())
    }

    /// The engine of a running node.
    pub fn engine(&self, id: NodeId) -> Option<&Engine> {
        self.nodes.get(&id).and_then(|n| n.engine.as_ref())
    }

    /// Kills a node: everything it had not persisted is lost.
    pub fn crash(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("known node");
        n.engine = None;
        n.unsynced.clear();
    }

    /// A crashed node's WAL lost its tail to a corrupt record, as the real
    /// WAL's recovery cuts it: each group keeps its first `keep` log
    /// entries after its snapshot (the commit index no further), term and
    /// vote survive (they live in a file of their own), and every group
    /// is marked for repair.
    pub fn cut_log(&mut self, id: NodeId, keep: usize) {
        let n = self.nodes.get_mut(&id).expect("known node");
        assert!(n.engine.is_none(), "cut the log of a crashed node");
        let disk = &mut n.disk;
        for (gid, g) in disk.groups.iter_mut() {
            g.entries.truncate(keep);
            let snap = g.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
            let last = g.entries.last().map_or(snap, |e| e.index);
            g.hard_state.commit = g.hard_state.commit.min(last);
            let kept = raft::eraftpb::HardState {
                term: g.hard_state.term,
                vote: g.hard_state.vote,
                ..Default::default()
            };
            disk.repair.insert(*gid, kept);
        }
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if !self.is_up(id) {
            self.start(id);
        }
    }

    /// The node that leads `group` in the highest term any running node
    /// knows, if it is running and says so itself.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for (id, n) in &self.nodes {
            if let Some(s) = n.engine.as_ref().and_then(|e| e.group_status(group)) {
                if s.role == Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, *id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// The group id of a partition per any running node's metadata.
    pub fn group_of(&self, partition: &PartitionId) -> Option<GroupId> {
        self.nodes
            .values()
            .filter_map(|n| n.engine.as_ref())
            .find_map(|e| e.metadata().partition(partition).ok().map(|p| p.group))
    }

    /// Creates a topic through the metadata leader and waits until every
    /// partition has a leader. Returns the partition ids.
    /// Takes a node out of the harness for good (after it was removed from
    /// the cluster): it is crashed and never restarted, not even by
    /// [`Cluster::converge`].
    pub fn decommission(&mut self, id: NodeId) {
        self.crash(id);
        self.nodes.remove(&id);
    }

    /// Starts a new, empty node that joins the cluster (it waits to be
    /// added with `Command::Membership`). Returns its identity.
    pub fn add_node(&mut self) -> NodeInfo {
        let id = self.infos.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let info = NodeInfo {
            id,
            client_addr: format!("node{id}:9092"),
            peer_addr: format!("node{id}:9093"),
            rack: None,
        };
        self.infos.push(info.clone());
        self.joined.insert(id, self.infos.clone());
        self.nodes.insert(
            id,
            SimNode {
                engine: None,
                disk: DurableState::default(),
                unsynced: VecDeque::new(),
            },
        );
        self.start(id);
        info
    }
}
