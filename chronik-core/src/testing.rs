//! `testing::Cluster`: N engines over an in-memory network and in-memory
//! disks, driven by a seeded RNG, like quinn-proto's `Pair` for many nodes.
//!
//! The network can lose, delay (and so reorder), duplicate and partition
//! messages; disks complete persist batches in order after a random delay,
//! and a crash loses every batch not yet completed. A [`Checker`] watches
//! every output for the Raft and partition-log invariants.

mod checker;

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
            })
            .collect();
        let mut c = Cluster {
            rng: StdRng::seed_from_u64(config.seed),
            infos,
            joined: BTreeMap::new(),
            removed: BTreeSet::new(),
            now: 0,
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
        ec
    }

    fn start(&mut self, id: NodeId) {
        let cfg = self.engine_config(id);
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

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if !self.is_up(id) {
            self.start(id);
        }
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts one direction only.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.node_ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Splits the cluster: nodes talk only within their own side.
    pub fn split(&mut self, side: &[NodeId]) {
        let ids = self.node_ids();
        for a in &ids {
            for b in &ids {
                if side.contains(a) != side.contains(b) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.config.faults = faults;
    }

    /// Sends a command to a node. If it is down the request is lost (no
    /// reply ever arrives), as it would be on a real network.
    pub fn command(&mut self, node: NodeId, command: Command<RecordLog>) -> RequestId {
        let rid = self.next_request;
        self.next_request += 1;
        if let Some(engine) = self.nodes.get_mut(&node).and_then(|n| n.engine.as_mut()) {
            engine.handle_command(Time(self.now), rid, command);
            self.drain(node);
        }
        rid
    }

    /// Produces `records` through `node`, remembering them for the checks.
    pub fn produce(
        &mut self,
        node: NodeId,
        partition: &PartitionId,
        records: Vec<Bytes>,
    ) -> RequestId {
        let rid = self.next_request;
        self.sent_produces.insert(
            rid,
            SentProduce {
                partition: partition.clone(),
                records: records.clone(),
            },
        );
        self.command(
            node,
            Command::Propose {
                partition: partition.clone(),
                command: RecordCommand::Append {
                    records,
                    timestamp_ms: self.now,
                },
            },
        )
    }

    /// Fetches through `node` (a linearizable read on the leader). A
    /// successful reply must show every record acknowledged before the
    /// fetch was sent; the checker flags a stale read otherwise.
    pub fn fetch(&mut self, node: NodeId, partition: &PartitionId, offset: u64) -> RequestId {
        self.fetch_with(node, partition, offset, crate::ReadConsistency::Leader)
    }

    /// Fetches through `node` with the given consistency. Linearizable
    /// levels are checked for stale reads; `FollowerStale` replies only for
    /// agreeing with acknowledged records.
    pub fn fetch_with(
        &mut self,
        node: NodeId,
        partition: &PartitionId,
        offset: u64,
        consistency: crate::ReadConsistency,
    ) -> RequestId {
        let end = match consistency {
            crate::ReadConsistency::FollowerStale => 0,
            _ => self.acked_end.get(partition).copied().unwrap_or(0),
        };
        self.fetch_expect
            .insert(self.next_request, (partition.clone(), end));
        self.command(
            node,
            Command::Query {
                partition: partition.clone(),
                query: RecordQuery::Fetch {
                    offset,
                    max_bytes: u64::MAX,
                },
                consistency,
            },
        )
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

    /// Processes every event due at the next point in time. Returns false if
    /// nothing is scheduled at all.
    pub fn step(&mut self) -> bool {
        let next_net = self.network.peek().map(|Reverse((f, _))| f.deliver_at);
        let next_disk = self
            .nodes
            .values()
            .filter(|n| n.engine.is_some())
            .filter_map(|n| n.unsynced.front().map(|(t, _)| *t))
            .min();
        let next_tick = self
            .nodes
            .values()
            .filter_map(|n| n.engine.as_ref().map(|e| e.poll_timeout().as_millis()))
            .min();
        let Some(t) = [next_net, next_disk, next_tick].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;

        // Disks first: a batch completes, then what waited on it is sent.
        let ids = self.node_ids();
        for id in &ids {
            loop {
                let n = self.nodes.get_mut(id).expect("known");
                let Some(engine) = n.engine.as_mut() else {
                    break;
                };
                if n.unsynced.front().is_none_or(|(at, _)| *at > now) {
                    break;
                }
                let (_, batch) = n.unsynced.pop_front().expect("checked");
                n.disk.apply_batch(&batch).unwrap_or_else(|e| {
                    panic!("node {id}: engine wrote an inconsistent batch: {e}")
                });
                engine.handle_persisted(Time(now), batch.ticket);
                self.drain(*id);
            }
        }
        while self
            .network
            .peek()
            .is_some_and(|Reverse((f, _))| f.deliver_at <= now)
        {
            let Reverse((f, key)) = self.network.pop().expect("checked");
            let Some(msgs) = self.payloads.remove(&key) else {
                continue;
            };
            if self.blocked.contains(&(f.from, f.to)) {
                continue;
            }
            if let Some(engine) = self.nodes.get_mut(&f.to).and_then(|n| n.engine.as_mut()) {
                match engine.handle_messages(Time(now), f.from, msgs) {
                    // A removed node keeps talking until it learns it was
                    // removed (a real node then stops), and a new member
                    // may talk partition business to a node whose metadata
                    // does not list it yet: refusing either is right.
                    Err(
                        crate::Error::NodeRemoved { node } | crate::Error::UnknownNode { node },
                    ) if node == f.from => {}
                    Err(e) => self
                        .checker
                        .violation(format!("node {} refused a peer batch: {e}", f.to)),
                    Ok(()) => {}
                }
                self.drain(f.to);
            }
        }
        for id in &ids {
            let due = self.nodes[id]
                .engine
                .as_ref()
                .is_some_and(|e| e.poll_timeout().as_millis() <= now);
            if due {
                self.nodes
                    .get_mut(id)
                    .and_then(|n| n.engine.as_mut())
                    .expect("checked")
                    .handle_tick(Time(now));
                self.drain(*id);
            }
        }
        true
    }

    /// Runs for `ms` of simulated time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            if !self.step() {
                self.now = end;
            }
        }
    }

    /// Runs until `pred` holds, for at most `max_ms`. Returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + max_ms;
        while self.now < end {
            if pred(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        pred(self)
    }

    /// Runs until `group` has a leader.
    pub fn elect(&mut self, group: GroupId, max_ms: u64) -> Option<NodeId> {
        self.run_until(max_ms, |c| c.leader_of(group).is_some());
        self.leader_of(group)
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

    /// Runs until some node leads `partition` and accepts produces (its
    /// metadata confirmed fresh); returns it.
    pub fn serving(&mut self, partition: &PartitionId, max_ms: u64) -> Option<NodeId> {
        let g = self.group_of(partition)?;
        let ready = |c: &Cluster| {
            c.leader_of(g).filter(|l| {
                c.engine(*l)
                    .is_some_and(|e| e.check_leader(partition).is_ok())
            })
        };
        self.run_until(max_ms, |c| ready(c).is_some());
        ready(self)
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        rf: u32,
    ) -> Result<Vec<PartitionId>, String> {
        self.create_topic_with(name, partitions, rf, 1, false)
    }

    /// Creates a topic with every option and waits for its leaders.
    pub fn create_topic_with(
        &mut self,
        name: &str,
        partitions: u32,
        rf: u32,
        min_insync_replicas: u32,
        unclean_leader_election: bool,
    ) -> Result<Vec<PartitionId>, String> {
        let leader = self
            .elect(METADATA_GROUP, 10_000)
            .ok_or("no metadata leader")?;
        self.run_until(10_000, |c| {
            c.engine(leader)
                .is_some_and(|e| e.metadata().nodes().count() as u64 == c.config.nodes)
        });
        let rid = self.command(
            leader,
            Command::Metadata(MetadataCommand::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                min_insync_replicas,
                unclean_leader_election,
            }),
        );
        self.run_until(10_000, |c| c.replies.contains_key(&rid));
        match self.replies.get(&rid) {
            Some(Ok(_)) => {}
            other => return Err(format!("create topic {name}: {other:?}")),
        }
        let ids: Vec<PartitionId> = (0..partitions).map(|p| PartitionId::new(name, p)).collect();
        for p in &ids {
            self.serving(p, 10_000)
                .ok_or(format!("no leader serving {p}"))?;
        }
        Ok(ids)
    }

    /// Executes a node's outputs: sends go on the network, persist batches
    /// on its disk queue, replies and events to the checker.
    fn drain(&mut self, id: NodeId) {
        loop {
            let Some(out) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.engine.as_mut())
                .and_then(|e| e.poll_output())
            else {
                break;
            };
            match out {
                Output::Send { to, messages } => self.send(id, to, messages),
                Output::Persist(batch) => {
                    let (lo, hi) = self.config.faults.persist_ms;
                    let lat = if hi > lo {
                        self.rng.gen_range(lo..=hi)
                    } else {
                        lo
                    };
                    let n = self.nodes.get_mut(&id).expect("known");
                    let after_prev = n.unsynced.back().map_or(0, |(t, _)| *t);
                    n.unsynced
                        .push_back(((self.now + lat).max(after_prev), batch));
                }
                Output::Reply { request_id, result } => {
                    let sent = self.sent_produces.remove(&request_id);
                    if let (
                        true,
                        Some(sent),
                        Ok(Response::Applied(Appended { base_offset, count })),
                    ) = (self.config.checks, sent, &result)
                    {
                        assert_eq!(
                            *count as usize,
                            sent.records.len(),
                            "ack counts what was sent"
                        );
                        let acked = Acked {
                            partition: sent.partition.clone(),
                            base_offset: *base_offset,
                            records: sent.records.clone(),
                        };
                        self.checker.on_ack(&acked);
                        let end = self.acked_end.entry(acked.partition.clone()).or_default();
                        *end = (*end).max(acked.base_offset + acked.records.len() as u64);
                        self.acked.push(acked);
                    }
                    if let Some((pid, end)) = self.fetch_expect.remove(&request_id) {
                        if let Ok(Response::Query(f)) = &result {
                            self.checker.on_fetch(&pid, end, f);
                        }
                    }
                    if self.config.checks {
                        self.checker.trace(id, &(request_id, result.is_ok()));
                    }
                    self.replies.insert(request_id, result);
                }
                // The record log keeps everything in memory.
                Output::StateIo { ops, .. } => match ops.into_iter().next() {
                    None => {}
                    Some(never) => match never {},
                },
                Output::Event(_) if !self.config.checks => {}
                Output::Event(ev) => {
                    self.checker.trace(id, &format_args!("{ev:?}").to_string());
                    if ev == Event::RemovedFromCluster {
                        self.removed.insert(id);
                    }
                    self.checker.on_event(id, &ev);
                }
            }
        }
        if let Some(e) = self.nodes.get(&id).and_then(|n| n.engine.as_ref()) {
            if self.config.checks {
                self.checker.on_metadata(e);
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, messages: Vec<GroupMessage>) {
        let f = self.config.faults.clone();
        if f.loss > 0.0 && self.rng.gen_bool(f.loss) {
            return;
        }
        let copies = if f.duplicate > 0.0 && self.rng.gen_bool(f.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = f.delay_ms;
            let delay = if hi > lo {
                self.rng.gen_range(lo..=hi)
            } else {
                lo
            };
            let key = self.next_payload;
            self.next_payload += 1;
            self.payloads.insert(key, messages.clone());
            self.next_seq += 1;
            self.network.push(Reverse((
                InFlight {
                    deliver_at: self.now + delay,
                    seq: self.next_seq,
                    from,
                    to,
                },
                key,
            )));
        }
    }

    /// Checks, on a healed and quiet cluster, that every acknowledged record
    /// is on every running replica at its offset and that replicas agree.
    pub fn check_acked_durable(&mut self) {
        let mut by_partition: BTreeMap<PartitionId, Vec<&Acked>> = BTreeMap::new();
        for a in &self.acked {
            by_partition.entry(a.partition.clone()).or_default().push(a);
        }
        let mut problems = Vec::new();
        for (pid, acks) in &by_partition {
            let mut reference: Option<(NodeId, Vec<Bytes>)> = None;
            for (id, n) in &self.nodes {
                let Some(e) = n.engine.as_ref() else { continue };
                let Some(log) = e.partition_state(pid) else {
                    continue;
                };
                for a in acks {
                    for (i, r) in a.records.iter().enumerate() {
                        let off = a.base_offset + i as u64;
                        if log.get(off) != Some(r) {
                            problems.push(format!(
                                "lost write: node {id} {pid} offset {off} holds {:?}, acknowledged {r:?}",
                                log.get(off)
                            ));
                        }
                    }
                }
                let all: Vec<Bytes> = (0..log.high_watermark())
                    .filter_map(|o| log.get(o).cloned())
                    .collect();
                match &reference {
                    None => reference = Some((*id, all)),
                    Some((rid, rlog)) => {
                        let common = rlog.len().min(all.len());
                        if rlog[..common] != all[..common] {
                            problems.push(format!(
                                "replicas {rid} and {id} of {pid} hold different records"
                            ));
                        }
                    }
                }
            }
        }
        for p in problems {
            self.checker.violation(p);
        }
    }

    /// Heals the network, restarts every node and runs until every group
    /// has a leader and every running replica applied everything its
    /// leader committed. Returns whether that happened within `max_ms`.
    pub fn converge(&mut self, max_ms: u64) -> bool {
        self.heal();
        self.set_faults(Faults::none());
        for id in self.node_ids() {
            self.restart(id);
        }
        self.run_until(max_ms, |c| c.is_converged())
    }

    /// Every hosted group has a leader that committed its whole log, and
    /// every running replica holds and applied exactly that log.
    pub fn is_converged(&self) -> bool {
        let mut groups: BTreeSet<GroupId> = BTreeSet::new();
        for n in self.nodes.values() {
            if let Some(e) = n.engine.as_ref() {
                groups.extend(e.groups());
            }
        }
        groups.iter().all(|g| {
            let Some(l) = self.leader_of(*g) else {
                return false;
            };
            let Some(ls) = self.engine(l).and_then(|e| e.group_status(*g)) else {
                return false;
            };
            // The leader committed its whole log (so at least one entry of
            // its own term) and every replica holds and applied all of it.
            ls.commit == ls.last_index
                && self
                    .nodes
                    .values()
                    .filter_map(|n| n.engine.as_ref())
                    .all(|e| {
                        e.group_status(*g).is_none_or(|s| {
                            s.applied == ls.commit
                                && s.commit == ls.commit
                                && s.last_index == ls.last_index
                                && s.leader == Some(l)
                        })
                    })
        })
    }
}
