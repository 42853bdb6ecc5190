//! The driver: one tokio task that owns the `Engine`, feeds it time, peer
//! messages and client commands, and executes its outputs in the order
//! their contracts demand. No lock is held anywhere: the engine has exactly
//! one owner and everything else talks to it through channels.

use crate::metrics::Metrics;
use crate::observer::CrashPoint;
use crate::partition_io::{IoReport, Job, PartitionIo};
use crate::partition_store::{DiskLog, Fetch};
use crate::wal::Wal;
use chronik_core::{
    Command, Engine, Error, Event, Fetched, GroupId, GroupKind, GroupMessage, GroupStatus,
    MetadataState, NodeId, NodeInfo, Output, PartitionId, PersistBatch, RecordQuery, RequestId,
    Response, Role, StateMachine, Time, METADATA_GROUP,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Where the answer to a client command goes.
type CommandReply = oneshot::Sender<Result<Response<DiskLog>, Error>>;

/// Inputs taken per turn of the driver loop before its outputs are drained.
const INPUTS_PER_TURN_MAX: usize = 65;

/// Messages into the driver task.
pub(crate) enum DriverMsg {
    Peer {
        from: NodeId,
        /// The sender's incarnation (see `PeerBatch.incarnation`).
        incarnation: u64,
        messages: Vec<GroupMessage>,
    },
    /// Where a member this node had not heard of listens for peers, as the
    /// committed metadata of another member says (`None`: none knew yet).
    PeerResolved {
        node: NodeId,
        peer_addr: Option<String>,
    },
    /// A peer refused our messages because its metadata says this node was
    /// removed from the cluster.
    RemovedByPeer {
        by: NodeId,
    },
    /// The stream to a peer could not be opened, failed or stalled: what
    /// was queued for it is lost, so leaders stop pipelining to it and
    /// probe instead.
    PeerUnreachable {
        peer: NodeId,
    },
    Command {
        command: Command<DiskLog>,
        reply: CommandReply,
    },
    Inspect {
        reply: oneshot::Sender<Inspection>,
    },
    /// Send the metadata a lagging member misses now (metadata leader).
    ReplicateMetadata {
        to: Option<NodeId>,
        reply: oneshot::Sender<Result<chronik_core::ReplicateNow, Error>>,
    },
    /// The recent decisions about a group (oldest first).
    History {
        group: GroupId,
        reply: oneshot::Sender<Vec<crate::history::Decision>>,
    },
    /// A graceful shutdown's leadership phase starts: hand every group
    /// over and take none back.
    BeginLeaving,
    /// The groups still to hand over.
    HandOffStatus {
        reply: oneshot::Sender<Vec<chronik_core::shutdown::LedGroup>>,
    },
    /// A graceful shutdown's WAL phase: take no more input, write and sync
    /// everything handed to the WAL and to partition storage, close, stop.
    Close {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A partition snapshot arrived: its segments must be fetched from the
    /// sender before the engine may see it.
    SnapshotArrived {
        from: NodeId,
        message: GroupMessage,
    },
    /// The segments of a snapshot were fetched (bytes received, time
    /// taken) or not.
    SnapshotFetched {
        from: NodeId,
        message: GroupMessage,
        result: Result<(u64, std::time::Duration), String>,
    },
    /// Reads this node's replica directly, without a ReadIndex round: may
    /// lag the leader (what `follower-stale` reads will build on).
    ReadLocal {
        partition: PartitionId,
        offset: u64,
        max_bytes: u64,
        reply: oneshot::Sender<Result<Fetched, Error>>,
    },
}

/// A consistent look at the node's state, for status and metadata APIs.
#[derive(Clone, Debug)]
pub struct Inspection {
    pub node_id: NodeId,
    pub groups: Vec<GroupStatus>,
    pub metadata: MetadataState,
    /// Per-replica lag of the partitions this node leads.
    pub lags: BTreeMap<GroupId, Vec<chronik_core::ReplicaLag>>,
    /// The metadata group's applied configuration.
    pub membership: chronik_core::membership::ConfView,
    /// This node and the peers it heard from within two heartbeats.
    pub alive: std::collections::BTreeSet<NodeId>,
    /// The record log of each hosted partition replica.
    pub storage: BTreeMap<GroupId, LogSummary>,
}

/// A partition replica's record log at a glance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSummary {
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub size_bytes: u64,
    pub segments: u32,
}

impl Inspection {
    /// The leader this node knows for a group it hosts.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.groups
            .iter()
            .find(|g| g.group == group)
            .and_then(|g| g.leader)
    }
}

/// A handle to talk to the driver task.
#[derive(Clone)]
pub(crate) struct DriverHandle {
    pub tx: mpsc::Sender<DriverMsg>,
}

impl DriverHandle {
    /// Runs a command; the outer error means the driver is gone.
    pub async fn command(
        &self,
        command: Command<DiskLog>,
    ) -> Result<Result<Response<DiskLog>, Error>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::Command { command, reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    pub async fn read_local(
        &self,
        partition: PartitionId,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Result<Fetched, Error>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::ReadLocal {
                partition,
                offset,
                max_bytes,
                reply,
            })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    pub async fn inspect(&self) -> Result<Inspection, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::Inspect { reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    pub async fn replicate_metadata(
        &self,
        to: Option<NodeId>,
    ) -> Result<Result<chronik_core::ReplicateNow, Error>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::ReplicateMetadata { to, reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    pub async fn history(
        &self,
        group: GroupId,
    ) -> Result<Vec<crate::history::Decision>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::History { group, reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    pub async fn begin_leaving(&self) -> Result<(), DriverGone> {
        self.tx
            .send(DriverMsg::BeginLeaving)
            .await
            .map_err(|_| DriverGone { delivered: false })
    }

    pub async fn hand_off_status(
        &self,
    ) -> Result<Vec<chronik_core::shutdown::LedGroup>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::HandOffStatus { reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }

    /// Closes the driver's storage and stops it (see `DriverMsg::Close`).
    pub async fn close(&self) -> Result<Result<(), String>, DriverGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(DriverMsg::Close { reply })
            .await
            .map_err(|_| DriverGone { delivered: false })?;
        rx.await.map_err(|_| DriverGone { delivered: true })
    }
}

/// The driver stopped (shutdown or a fatal WAL error).
#[derive(Debug)]
pub(crate) struct DriverGone {
    /// The request reached the driver before it stopped: it may have taken
    /// effect (a produce proposed, then the node stopped).
    pub delivered: bool,
}

/// Bounds of the driver's queues.
pub(crate) const DRIVER_QUEUE_MAX: usize = 4096;
const WAL_QUEUE_MAX: usize = 1024;
/// Longest a snapshot's segment transfer may take before it is abandoned.
const SNAPSHOT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often the address of one unknown member is looked up at most.
const PEER_LOOKUP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Most persist batches folded into one WAL group commit.
const GROUP_COMMIT_BATCHES_MAX: usize = 256;

pub(crate) struct Driver {
    engine: Engine<DiskLog>,
    start: Instant,
    next_request: RequestId,
    pending: HashMap<RequestId, CommandReply>,
    peers: BTreeMap<NodeId, mpsc::Sender<Vec<GroupMessage>>>,
    /// Per peer: rung when it is heard from, so a sender waiting out a
    /// reconnect backoff tries again at once.
    peer_wake: BTreeMap<NodeId, Arc<tokio::sync::Notify>>,
    /// This process's incarnation, and each peer's last seen.
    incarnation: u64,
    peer_incarnations: BTreeMap<NodeId, u64>,
    peer_addrs: BTreeMap<NodeId, String>,
    wal_tx: mpsc::Sender<PersistBatch>,
    /// The WAL writer; it ends once `wal_tx` is dropped.
    wal_task: tokio::task::JoinHandle<Result<(), String>>,
    durable_rx: watch::Receiver<Result<u64, String>>,
    last_durable: u64,
    metrics: Metrics,
    peer_queue_max: usize,
    leaders: BTreeMap<GroupId, Option<NodeId>>,
    /// This node's role in each group, as last reported (elections won and
    /// lost are role transitions).
    roles: BTreeMap<GroupId, Role>,
    /// Groups that lost their leader, since when.
    leaderless_since: BTreeMap<GroupId, Instant>,
    /// The last leader each group had (kept while it has none).
    last_leader: BTreeMap<GroupId, NodeId>,
    /// Recent decisions about each hosted group, with reasons.
    history: crate::history::History,
    ready: watch::Sender<bool>,
    /// Samples engine state into gauges once a second.
    sampler: crate::metrics::refresh::Sampler,
    /// Groups whose snapshot segments are being fetched.
    fetching: std::collections::BTreeSet<GroupId>,
    self_tx: mpsc::Sender<DriverMsg>,
    segment_fetch: crate::transport::SegmentFetch,
    observer: Option<Arc<dyn crate::EngineObserver>>,
    /// Set when the node must stop (removed from the cluster).
    stop_reason: Option<String>,
    /// Client addresses to ask about members this node does not know yet
    /// besides those in its metadata: the initial members, and the member
    /// it joined through (a joiner restarted before it caught up knows no
    /// one else).
    lookup_seeds: Vec<String>,
    /// Members this node heard from without knowing their address, being
    /// looked up, and when each lookup started.
    resolving: BTreeMap<NodeId, Instant>,
    /// Removed node ids, shared with the peer service so it can tell such
    /// a node why its messages are refused.
    roster: Arc<parking_lot::RwLock<crate::transport::PeerRoster>>,
    /// The initial cluster's ids: members of the roster until metadata
    /// lists them (a new cluster has not registered anyone yet).
    initial_members: std::collections::BTreeSet<NodeId>,
    roster_seen_at: u64,
    /// With an observer only: persist tickets of batches that record a new
    /// vote, and the last (term, vote) of each group, to tell the crash
    /// points apart; and whether a group was dropped since the last check.
    vote_tickets: Vec<u64>,
    last_votes: BTreeMap<GroupId, (u64, NodeId)>,
    dropped: bool,
    /// Runs partition storage work and reads off this task.
    partition_io: PartitionIo,
    io_reports: mpsc::UnboundedReceiver<IoReport>,
    /// Direct replica reads planned while handling an input, submitted
    /// with the outputs.
    local_reads: Vec<Job>,
    /// A graceful shutdown asked the driver to close its storage and stop.
    closing: Option<oneshot::Sender<Result<(), String>>>,
}

/// What a driver is wired to besides its engine and WAL.
pub(crate) struct DriverLinks<'a> {
    pub roster: Arc<parking_lot::RwLock<crate::transport::PeerRoster>>,
    pub initial_cluster: &'a [NodeInfo],
    /// The member this node joined through, if it joined.
    pub joined_via: Option<String>,
    pub peer_queue_max: usize,
    pub self_tx: mpsc::Sender<DriverMsg>,
    pub segment_fetch: crate::transport::SegmentFetch,
    pub observer: Option<Arc<dyn crate::EngineObserver>>,
    /// Set while the node has its metadata and knows a metadata leader:
    /// what the gRPC health service reports.
    pub ready: watch::Sender<bool>,
}

impl Driver {
    pub fn new(
        engine: Engine<DiskLog>,
        wal: Wal,
        metrics: Metrics,
        links: DriverLinks<'_>,
    ) -> Self {
        let incarnation = engine.config().incarnation;
        let DriverLinks {
            roster,
            initial_cluster,
            joined_via,
            peer_queue_max,
            self_tx,
            segment_fetch,
            observer,
            ready,
        } = links;
        let (wal_tx, wal_rx) = mpsc::channel(WAL_QUEUE_MAX);
        let (durable_tx, durable_rx) = watch::channel(Ok(0));
        let wal_observer = observer.clone().map(|o| (engine.node_id(), o));
        let (reports_tx, io_reports) = mpsc::unbounded_channel();
        let partition_io = PartitionIo::start(
            segment_fetch.disk.clone(),
            segment_fetch.partitions_dir.clone(),
            reports_tx,
            metrics.clone(),
            segment_fetch.crash.clone(),
        );
        let wal_task = tokio::spawn(wal_task(
            wal,
            wal_rx,
            durable_tx,
            metrics.clone(),
            wal_observer,
        ));
        Driver {
            engine,
            start: Instant::now(),
            next_request: 1,
            pending: HashMap::new(),
            peers: BTreeMap::new(),
            peer_wake: BTreeMap::new(),
            incarnation,
            peer_incarnations: BTreeMap::new(),
            peer_addrs: initial_cluster
                .iter()
                .map(|n| (n.id, n.peer_addr.clone()))
                .collect(),
            wal_tx,
            wal_task,
            durable_rx,
            last_durable: 0,
            metrics,
            peer_queue_max,
            leaders: BTreeMap::new(),
            fetching: Default::default(),
            self_tx,
            segment_fetch,
            observer,
            stop_reason: None,
            lookup_seeds: initial_cluster
                .iter()
                .map(|n| n.client_addr.clone())
                .chain(joined_via)
                .collect(),
            resolving: BTreeMap::new(),
            roster,
            initial_members: initial_cluster.iter().map(|n| n.id).collect(),
            roster_seen_at: 0,
            vote_tickets: Vec::new(),
            last_votes: BTreeMap::new(),
            dropped: false,
            partition_io,
            io_reports,
            local_reads: Vec::new(),
            closing: None,
            roles: BTreeMap::new(),
            leaderless_since: BTreeMap::new(),
            last_leader: BTreeMap::new(),
            history: Default::default(),
            ready,
            sampler: Default::default(),
        }
    }

    /// Whether the observer crashes this node at `point` (simulation).
    fn crash_here(&self, point: CrashPoint) -> bool {
        self.observer
            .as_ref()
            .is_some_and(|o| o.crash_here(self.engine.node_id(), point))
    }

    /// Notes a batch on its way to the WAL that records a new vote.
    fn note_votes(&mut self, batch: &chronik_core::PersistBatch) {
        for u in &batch.updates {
            if let chronik_core::GroupUpdate::HardState { group, hard_state } = u {
                let now = (hard_state.term, hard_state.vote);
                if self.last_votes.insert(*group, now) != Some(now) && now.1 != 0 {
                    self.vote_tickets.push(batch.ticket);
                }
            }
        }
    }

    fn peer_addr(&self, node: NodeId) -> Option<String> {
        self.engine
            .metadata()
            .node(node)
            .map(|n| n.peer_addr.clone())
            .or_else(|| self.peer_addrs.get(&node).cloned())
    }

    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Runs until `shutdown` flips or the WAL fails. Returns why it stopped.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<DriverMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        // Apply what recovery found committed before serving anything, so
        // a restarted node answers from its recovered metadata.
        if let Some(o) = &self.observer {
            o.on_start(self.engine.node_id(), &self.engine.status());
        }
        let now = self.now();
        self.engine.handle_tick(now);
        self.drain().await;
        loop {
            let deadline = self.start
                + std::time::Duration::from_millis(self.engine.poll_timeout().as_millis());
            // Biased, for determinism under simulation (tokio's random
            // branch order is not seeded by madsim) and so that durability
            // and ticks are never starved by a flood of messages.
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                changed = self.durable_rx.changed() => {
                    if changed.is_err() {
                        return Err("WAL writer stopped".into());
                    }
                    let durable = self.durable_rx.borrow_and_update().clone();
                    match durable {
                        Ok(ticket) if ticket > self.last_durable => {
                            self.last_durable = ticket;
                            if self.observer.is_some() {
                                let voted = self.vote_tickets.iter().any(|t| *t <= ticket);
                                self.vote_tickets.retain(|t| *t > ticket);
                                let point = if voted {
                                    CrashPoint::AfterVotePersisted
                                } else {
                                    CrashPoint::AfterPersistBeforeRelease
                                };
                                if self.crash_here(point) {
                                    return std::future::pending().await;
                                }
                            }
                            let now = self.now();
                            self.engine.handle_persisted(now, ticket);
                        }
                        Ok(_) => {}
                        Err(e) => return Err(format!("WAL write failed, stopping the node: {e}")),
                    }
                }
                report = self.io_reports.recv() => {
                    let Some(r) = report else {
                        return Err("partition IO workers stopped".into());
                    };
                    let now = self.now();
                    self.engine.handle_state_io(now, r.group, r.ticket, r.result);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = self.now();
                    self.engine.handle_tick(now);
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    // Take what else is queued before draining outputs, so
                    // one persist batch covers as much as possible; client
                    // commands that arrive together enter the engine
                    // together (one ready, one persist batch and one append
                    // per follower for all of them).
                    let mut commands = Vec::new();
                    let mut next = Some(msg);
                    let mut taken = 1;
                    while let Some(m) = next.take() {
                        match m {
                            DriverMsg::Command { command, reply } => commands.push((command, reply)),
                            other => {
                                self.handle_commands(std::mem::take(&mut commands));
                                self.handle_or_crash(other).await;
                            }
                        }
                        if taken < INPUTS_PER_TURN_MAX {
                            next = rx.try_recv().ok();
                            taken += 1;
                        }
                    }
                    self.handle_commands(commands);
                }
            }
            self.drain().await;
            if self.observer.is_some() {
                let dropped = std::mem::take(&mut self.dropped);
                if (dropped && self.crash_here(CrashPoint::GroupDropped))
                    || (self.engine.membership_view().is_joint()
                        && self.crash_here(CrashPoint::InsideJointConfig))
                {
                    return std::future::pending().await;
                }
            }
            if let Some(why) = self.stop_reason.take() {
                tracing::error!("{why}");
                return Err(why);
            }
            if let Some(reply) = self.closing.take() {
                let _ = reply.send(self.close().await);
                return Ok(());
            }
        }
    }

    /// Ends the driver for a graceful shutdown: no more input is taken;
    /// the WAL writes and syncs what it was handed and closes, partition
    /// storage runs what it was handed. `Ok` once all of it is on disk.
    async fn close(self) -> Result<(), String> {
        let Driver {
            wal_tx,
            wal_task,
            partition_io,
            io_reports,
            pending,
            ..
        } = self;
        // After the drain no request waits; any that does learns the node
        // stopped with it in hand (its outcome unknown).
        drop(pending);
        drop(wal_tx);
        let wal = match wal_task.await {
            Ok(r) => r,
            Err(e) => Err(format!("WAL task failed: {e}")),
        };
        // Workers stop when their reports have nowhere to go: keep the
        // receiver until they ran what they were given.
        partition_io.close().await;
        drop(io_reports);
        wal
    }

    /// [`Driver::handle`], unless the node crashes first: a snapshot whose
    /// segments arrived is a crash point before its install.
    async fn handle_or_crash(&mut self, msg: DriverMsg) {
        if matches!(&msg, DriverMsg::SnapshotFetched { result: Ok(_), .. })
            && self.crash_here(CrashPoint::SnapshotSegmentsFetched)
        {
            return std::future::pending().await;
        }
        if matches!(&msg, DriverMsg::ReadLocal { .. }) {
            // The read is planned from the state as of now: the storage
            // work behind that state must be queued before it.
            self.drain().await;
        }
        self.handle(msg);
    }

    /// Hands client commands to the engine in one call.
    fn handle_commands(&mut self, commands: Vec<(Command<DiskLog>, CommandReply)>) {
        if commands.is_empty() {
            return;
        }
        let now = self.now();
        let mut batch = Vec::with_capacity(commands.len());
        for (command, reply) in commands {
            let id = self.next_request;
            self.next_request += 1;
            self.pending.insert(id, reply);
            batch.push((id, command));
        }
        self.engine.handle_commands(now, batch);
    }

    fn handle(&mut self, msg: DriverMsg) {
        let now = self.now();
        match msg {
            DriverMsg::Peer {
                from,
                incarnation,
                messages,
            } => {
                if self
                    .peer_incarnations
                    .insert(from, incarnation)
                    .is_some_and(|before| before != incarnation)
                {
                    // It restarted: the stream to it may still look open
                    // while everything sent on it is lost (a peer this
                    // node rarely talks to would not fill it up and so
                    // never look stalled). A new one carries on.
                    tracing::debug!(peer = from, "peer restarted; reconnecting to it");
                    self.peers.remove(&from);
                }
                if let Some(w) = self.peer_wake.get(&from) {
                    w.notify_one();
                }
                if self.peer_addr(from).is_none() {
                    // A member this node has not heard of yet (its metadata
                    // lags a membership change, a new leader even): ask the
                    // members it knows where that one listens. Never the
                    // sender's own word.
                    self.resolve_peer(from);
                }
                if let Err(e) = self.engine.handle_messages(now, from, messages) {
                    tracing::warn!(from, "refused peer messages: {e}");
                }
            }
            DriverMsg::PeerResolved { node, peer_addr } => {
                if let Some(addr) = peer_addr {
                    self.resolving.remove(&node);
                    if self.peer_addr(node).is_none() {
                        tracing::info!(
                            node,
                            %addr,
                            "learned a new member's address from the committed membership of a peer"
                        );
                        self.peer_addrs.insert(node, addr);
                    }
                }
            }
            DriverMsg::Command { command, reply } => self.handle_commands(vec![(command, reply)]),
            DriverMsg::ReadLocal {
                partition,
                offset,
                max_bytes,
                reply,
            } => {
                let result = self
                    .engine
                    .replica_state(&partition)
                    .and_then(|log| log.query(&RecordQuery::Fetch { offset, max_bytes }));
                match result {
                    Ok(Fetch::Planned(plan)) => self.local_reads.push(Job::Read {
                        plan,
                        reply: Box::new(move |r| {
                            let _ = reply.send(r);
                        }),
                    }),
                    Ok(Fetch::Read(f)) => {
                        let _ = reply.send(Ok(f));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            DriverMsg::SnapshotArrived { from, message } => {
                let group = message.group;
                if !self.fetching.insert(group) {
                    return; // one transfer per group at a time
                }
                let Some(addr) = self.peer_addr(from) else {
                    self.fetching.remove(&group);
                    return;
                };
                let fetch = self.segment_fetch.clone();
                let tx = self.self_tx.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    // Bounded: a transfer stuck on a dead peer must not
                    // block this group's next snapshot forever.
                    let result = match tokio::time::timeout(
                        SNAPSHOT_FETCH_TIMEOUT,
                        fetch.fetch((from, &addr), &message),
                    )
                    .await
                    {
                        Ok(r) => r.map(|bytes| (bytes, started.elapsed())),
                        Err(_) => Err(format!("no progress within {SNAPSHOT_FETCH_TIMEOUT:?}")),
                    };
                    let _ = tx
                        .send(DriverMsg::SnapshotFetched {
                            from,
                            message,
                            result,
                        })
                        .await;
                });
            }
            DriverMsg::SnapshotFetched {
                from,
                message,
                result,
            } => {
                self.fetching.remove(&message.group);
                match result {
                    Ok((bytes, took)) => {
                        self.metrics.snapshots_fetched.inc();
                        self.metrics.snapshot_transfer_bytes.observe(bytes as f64);
                        self.metrics
                            .snapshot_transfer_seconds
                            .observe(took.as_secs_f64());
                        if let Err(e) = self.engine.handle_messages(now, from, vec![message]) {
                            tracing::warn!(from, "refused snapshot: {e}");
                        }
                    }
                    Err(e) => tracing::warn!(
                        from,
                        group = message.group,
                        "snapshot segments not fetched: {e}"
                    ),
                }
            }
            DriverMsg::PeerUnreachable { peer } => {
                self.engine.handle_unreachable(peer);
            }
            DriverMsg::RemovedByPeer { by } => {
                self.stop_reason = Some(format!(
                    "node {} was removed from the cluster (node {by} says so); it stops serving. Its data dir cannot rejoin: start a new node with a new id and an empty data dir.",
                    self.engine.node_id()
                ));
            }
            DriverMsg::BeginLeaving => self.engine.begin_leaving(now),
            DriverMsg::HandOffStatus { reply } => {
                let _ = reply.send(self.engine.leadership_to_hand_off());
            }
            DriverMsg::Close { reply } => self.closing = Some(reply),
            DriverMsg::ReplicateMetadata { to, reply } => {
                let _ = reply.send(self.engine.replicate_metadata_now(now, to));
            }
            DriverMsg::History { group, reply } => {
                let _ = reply.send(self.history.of(group));
            }
            DriverMsg::Inspect { reply } => {
                let groups = self.engine.status();
                let lags = groups
                    .iter()
                    .filter_map(|g| Some((g.group, self.engine.replica_lags(g.group)?)))
                    .collect();
                let _ = reply.send(Inspection {
                    node_id: self.engine.node_id(),
                    groups,
                    metadata: self.engine.metadata().clone(),
                    lags,
                    membership: self.engine.membership_view(),
                    alive: self.engine.talking_nodes(),
                    storage: self.log_summaries(),
                });
            }
        }
    }

    async fn drain(&mut self) {
        let applied = self.engine.metadata().applied_index();
        if applied != self.roster_seen_at {
            self.roster_seen_at = applied;
            let md = self.engine.metadata();
            if let Some(o) = &self.observer {
                o.on_metadata(self.engine.node_id(), md);
            }
            let removed: std::collections::BTreeSet<NodeId> = md.removed_nodes().collect();
            let mut members: std::collections::BTreeSet<NodeId> =
                md.nodes().map(|n| n.id).collect();
            members.extend(self.initial_members.iter().copied());
            let stale = {
                let r = self.roster.read();
                r.removed != removed || r.members != members
            };
            if stale {
                *self.roster.write() = crate::transport::PeerRoster { removed, members };
            }
        }
        // Planned once every earlier output was submitted (see
        // `handle_or_crash`), before the outputs still queued.
        for job in std::mem::take(&mut self.local_reads) {
            self.partition_io.submit(job).await;
        }
        // Messages to one peer leave together, once per turn (one frame on
        // its stream rather than one per input).
        let mut sends: BTreeMap<NodeId, Vec<GroupMessage>> = BTreeMap::new();
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::StateIo { group, ticket, ops } => {
                    self.partition_io
                        .submit(Job::Work { group, ticket, ops })
                        .await;
                }
                Output::Reply {
                    request_id,
                    result: Ok(Response::Query(Fetch::Planned(plan))),
                } => {
                    if let Some(tx) = self.pending.remove(&request_id) {
                        let reply = Box::new(move |r: Result<Fetched, Error>| {
                            let _ = tx.send(r.map(|f| Response::Query(Fetch::Read(f))));
                        });
                        self.partition_io.submit(Job::Read { plan, reply }).await;
                    }
                }
                Output::Send { to, messages } => sends.entry(to).or_default().extend(messages),
                Output::Persist(batch) => {
                    if self.observer.is_some() {
                        self.note_votes(&batch);
                    }
                    if self.wal_tx.send(batch).await.is_err() {
                        tracing::error!("WAL writer is gone; persist batch dropped");
                    }
                }
                Output::Reply { request_id, result } => {
                    if let Ok(Response::Applied(_)) = &result {
                        self.metrics.proposals_committed.inc();
                    }
                    if let Some(tx) = self.pending.remove(&request_id) {
                        // The requester may have timed out and gone.
                        let _ = tx.send(result);
                    }
                }
                Output::Event(ev) => self.event(ev),
            }
        }
        for (to, messages) in sends {
            self.send(to, messages);
        }
        let now = self.now();
        self.sampler.maybe_refresh(&self.metrics, &self.engine, now);
        let ready = self.engine.metadata().is_bootstrapped()
            && self
                .leaders
                .get(&METADATA_GROUP)
                .copied()
                .flatten()
                .is_some();
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    fn kind_of(group: GroupId) -> &'static str {
        if group == METADATA_GROUP {
            "metadata"
        } else {
            "partition"
        }
    }

    /// Whether this node leads the metadata group: cluster-wide decisions
    /// that every node applies are logged at info on this one only.
    fn leads_metadata(&self) -> bool {
        self.roles.get(&METADATA_GROUP) == Some(&Role::Leader)
    }

    /// Counts and logs one engine event. Control-plane decisions (elections
    /// won and lost, leadership handoffs, ISR proposals, configuration and
    /// membership steps, moves) are one info line each with their reason.
    fn event(&mut self, ev: Event) {
        if let Some(o) = &self.observer {
            o.on_event(self.engine.node_id(), &ev);
        }
        match ev {
            Event::RoleChanged {
                group,
                term,
                role,
                leader,
            } => {
                let kind = Self::kind_of(group);
                let prev = self.leaders.insert(group, leader);
                if prev.flatten() != leader && leader.is_some() {
                    self.metrics.leader_changes.with_label_values(&[kind]).inc();
                }
                match leader {
                    None => {
                        self.leaderless_since
                            .entry(group)
                            .or_insert_with(Instant::now);
                    }
                    Some(_) => {
                        if let Some(since) = self.leaderless_since.remove(&group) {
                            self.metrics
                                .raft_leaderless_seconds
                                .with_label_values(&[kind])
                                .observe(since.elapsed().as_secs_f64());
                        }
                    }
                }
                let before = self.roles.insert(group, role).unwrap_or(Role::Follower);
                let me = self.engine.node_id();
                let was = self.last_leader.get(&group).copied();
                let was_text = was.map_or("none known".to_string(), |l| format!("node {l}"));
                let campaigning = |r: Role| matches!(r, Role::PreCandidate | Role::Candidate);
                if campaigning(role) && !campaigning(before) {
                    self.metrics.raft_campaigns.with_label_values(&[kind]).inc();
                    // With pre-vote on, a timed-out follower first becomes a
                    // pre-candidate; only a leadership transfer (the leader's
                    // MsgTimeoutNow) makes it a candidate at once.
                    let reason = if role == Role::Candidate && before == Role::Follower {
                        format!("asked to take over by the leader (leadership transfer from {was_text})")
                    } else {
                        format!(
                            "no leader heard within the election timeout (last leader: {was_text})"
                        )
                    };
                    tracing::info!(group, kind, term, %reason, "election started");
                    self.history.note(group, "election_started", term, reason);
                }
                match (before, role) {
                    (Role::Leader, Role::Leader) => {}
                    (_, Role::Leader) => {
                        self.metrics
                            .raft_elections_won
                            .with_label_values(&[kind])
                            .inc();
                        let reason = format!(
                            "won the election (a quorum voted for node {me}; previous leader: {was_text})"
                        );
                        tracing::info!(group, kind, term, %reason, "became leader");
                        self.history.note(group, "leader_elected", term, reason);
                    }
                    (Role::Leader, _) => {
                        let reason = format!(
                            "saw term {term}{}",
                            leader.map_or(String::new(), |l| format!(", led by node {l}"))
                        );
                        tracing::info!(group, kind, term, ?leader, %reason, "stepped down");
                        self.history.note(group, "stepped_down", term, reason);
                    }
                    (b, Role::Follower) if campaigning(b) => {
                        let reason = match leader {
                            Some(l) => format!("node {l} won term {term}"),
                            None => "no quorum of votes".to_string(),
                        };
                        tracing::info!(group, kind, term, ?leader, %reason, "election lost");
                        self.history.note(group, "election_lost", term, reason);
                    }
                    _ => tracing::debug!(group, term, %role, ?leader, "role changed"),
                }
                if let Some(l) = leader {
                    if was != Some(l) {
                        self.last_leader.insert(group, l);
                        if l != me {
                            self.history.note(
                                group,
                                "leader_changed",
                                term,
                                format!("node {l} leads term {term} (previous leader: {was_text})"),
                            );
                        }
                    }
                }
            }
            Event::GroupCreated { group, partition } => {
                tracing::info!(group, %partition, reason = "assigned by metadata", "partition replica created");
                self.history.note(
                    group,
                    "created",
                    0,
                    format!("replica of {partition} created on this node (assigned by metadata)"),
                );
            }
            Event::GroupDropped { group } => {
                tracing::info!(
                    group,
                    reason = "unassigned by metadata",
                    "partition replica dropped"
                );
                self.leaders.remove(&group);
                self.roles.remove(&group);
                self.leaderless_since.remove(&group);
                self.last_leader.remove(&group);
                self.history.forget(group);
                self.dropped = true;
            }
            Event::SnapshotInstalled { group, index, .. } => {
                self.metrics
                    .snapshots_installed
                    .with_label_values(&[Self::kind_of(group)])
                    .inc();
                self.history.note(
                    group,
                    "snapshot_installed",
                    0,
                    format!("installed the leader's snapshot at index {index} (this replica was behind the leader's log)"),
                );
                tracing::info!(
                    group,
                    index,
                    reason = "behind the leader's log",
                    "installed snapshot from leader"
                );
            }
            Event::LeadershipTransfer { group, to, reason } => {
                self.metrics
                    .leadership_transfers
                    .with_label_values(&[reason])
                    .inc();
                tracing::info!(group, to, reason, "handing leadership over");
                self.history.note(
                    group,
                    "leadership_transfer",
                    0,
                    format!("handing leadership to node {to} ({reason})"),
                );
            }
            Event::RebalanceDecision { decision, group } => {
                self.metrics
                    .rebalance_decisions
                    .with_label_values(&[decision])
                    .inc();
                let now = self.now();
                let outcome = match decision {
                    "move_started" => {
                        if let Some(g) = group {
                            self.sampler.move_started(g, now);
                        }
                        Some("started")
                    }
                    "move_finished" => Some("finished"),
                    "move_rolling_back" => Some("failed"),
                    "move_rolled_back" => Some("rolled_back"),
                    "move_skipped" => Some("skipped"),
                    _ => None,
                };
                if let Some(o) = outcome {
                    self.metrics.rebalance_moves.with_label_values(&[o]).inc();
                }
                if matches!(decision, "move_finished" | "move_rolled_back") {
                    if let Some(secs) = group.and_then(|g| self.sampler.move_ended(g, now)) {
                        self.metrics.rebalance_move_seconds.observe(secs);
                    }
                }
                if let Some(g) = group {
                    if self.leaders.contains_key(&g) {
                        self.history
                            .note(g, "move", 0, format!("replica move: {decision}"));
                    }
                }
                if self.leads_metadata() {
                    tracing::info!(decision, ?group, "rebalancing decision applied");
                } else {
                    tracing::debug!(decision, ?group, "rebalancing decision applied");
                }
            }
            Event::ConfChanged {
                group,
                voters,
                outgoing,
                learners,
            } => {
                tracing::info!(
                    group,
                    ?voters,
                    ?outgoing,
                    ?learners,
                    joint = !outgoing.is_empty(),
                    reason = "configuration change committed",
                    "configuration changed"
                );
                self.history.note(
                    group,
                    "configuration",
                    0,
                    format!(
                        "voters {voters:?}{}{}",
                        if outgoing.is_empty() {
                            String::new()
                        } else {
                            format!(" (joint with outgoing {outgoing:?})")
                        },
                        if learners.is_empty() {
                            String::new()
                        } else {
                            format!(", learners {learners:?}")
                        }
                    ),
                );
            }
            Event::SnapshotCreated { group, index } => {
                self.metrics
                    .snapshots_created
                    .with_label_values(&[Self::kind_of(group)])
                    .inc();
                if group == METADATA_GROUP {
                    self.metrics
                        .metadata_snapshot_bytes
                        .set(self.engine.metadata().snapshot().len() as i64);
                }
                tracing::debug!(group, index, "compacted log behind snapshot");
            }
            Event::IsrChanged {
                partition,
                group,
                isr,
                reason,
                ..
            } => {
                if self.leaders.contains_key(&group) {
                    self.history.note(
                        group,
                        "isr_changed",
                        0,
                        format!("ISR is now {isr:?}: {reason}"),
                    );
                }
                // Every node applies every change: counted once per node.
                for (change, why) in isr_change_labels(&reason) {
                    self.metrics
                        .isr_changes
                        .with_label_values(&[change, why])
                        .inc();
                }
                tracing::debug!(%partition, ?isr, %reason, "applied ISR change");
            }
            Event::RemovedFromCluster => {
                self.stop_reason = Some(format!(
                    "node {} was removed from the cluster (its metadata configuration no longer lists it); it stops serving. Its data dir cannot rejoin: start a new node with a new id and an empty data dir.",
                    self.engine.node_id()
                ));
            }
            // Logged by the engine, which knows the partition.
            Event::ReplicaRepairing { group, reason } => {
                self.history.note(group, "repairing", 0, reason);
            }
            // Logged by the engine with the term and index.
            Event::VotingSuspended { group } => {
                self.history.note(
                    group,
                    "voting_suspended",
                    0,
                    "log may have lost acknowledged entries (corrupt WAL record cut away): not voting until caught up".into(),
                );
            }
            Event::VotingResumed { group } => {
                self.history.note(
                    group,
                    "voting_resumed",
                    0,
                    "log holds a commit of the leader's term: voting again".into(),
                );
            }
            Event::IsrProposed { group, isr, reason } => {
                // The partition leader's decision: one line, with the lag
                // that caused it.
                tracing::info!(group, ?isr, %reason, "ISR change proposed");
                self.history.note(
                    group,
                    "isr_proposed",
                    0,
                    format!("proposed ISR {isr:?}: {reason}"),
                );
            }
            Event::EntryApplied { .. }
            | Event::ProduceAccepted { .. }
            | Event::ProduceAcked { .. }
            | Event::ReadServed { .. } => {}
        }
    }

    fn log_summaries(&self) -> BTreeMap<GroupId, LogSummary> {
        self.engine
            .status()
            .iter()
            .filter_map(|g| {
                let GroupKind::Partition(pid) = &g.kind else {
                    return None;
                };
                let log = self.engine.partition_state(pid)?;
                Some((
                    g.group,
                    LogSummary {
                        high_watermark: log.high_watermark(),
                        log_start_offset: log.log_start_offset(),
                        size_bytes: log.size_bytes(),
                        segments: log.segment_count() as u32,
                    },
                ))
            })
            .collect()
    }

    /// Looks up where `node` listens for peers in the committed metadata of
    /// the members this node knows (at most one lookup a second per node).
    fn resolve_peer(&mut self, node: NodeId) {
        if self
            .resolving
            .get(&node)
            .is_some_and(|t| t.elapsed() < PEER_LOOKUP_INTERVAL)
        {
            return;
        }
        self.resolving.insert(node, Instant::now());
        let me = self.engine.node_id();
        let mut ask: Vec<String> = self
            .engine
            .metadata()
            .nodes()
            .filter(|n| n.id != me)
            .map(|n| n.client_addr.clone())
            .collect();
        for a in &self.lookup_seeds {
            if !ask.contains(a) {
                ask.push(a.clone());
            }
        }
        let tx = self.self_tx.clone();
        let dialer = self.segment_fetch.dialer.clone();
        tokio::spawn(async move {
            let mut peer_addr = None;
            for addr in ask {
                let c = dialer.client(
                    vec![addr],
                    crate::RetryPolicy {
                        deadline: PEER_LOOKUP_INTERVAL,
                        ..crate::RetryPolicy::default()
                    },
                );
                if let Ok(md) = c.metadata().await {
                    if let Some(n) = md.nodes.into_iter().find(|n| n.id == node) {
                        peer_addr = Some(n.peer_addr);
                        break;
                    }
                }
            }
            let _ = tx.send(DriverMsg::PeerResolved { node, peer_addr }).await;
        });
    }

    fn send(&mut self, to: NodeId, messages: Vec<GroupMessage>) {
        if let Some(o) = &self.observer {
            o.on_send(self.engine.node_id(), to, &messages);
        }
        if !self.peers.contains_key(&to) {
            let Some(addr) = self.peer_addr(to) else {
                tracing::warn!(to, "no address for peer; messages dropped");
                return;
            };
            let (tx, rx) = mpsc::channel(self.peer_queue_max);
            let wake = self.peer_wake.entry(to).or_default().clone();
            tokio::spawn(crate::transport::peer_sender(
                (self.engine.node_id(), self.incarnation),
                (to, addr),
                self.segment_fetch.dialer.clone(),
                rx,
                self.self_tx.clone(),
                wake,
            ));
            self.peers.insert(to, tx);
        }
        let tx = self.peers.get(&to).expect("inserted above");
        if tx.try_send(messages).is_err() {
            // Full (or the sender died): Raft resends what matters.
            self.metrics.peer_messages_dropped.inc();
        }
    }
}

/// This start of the node: its boot time in ns (simulated time under
/// madsim), told apart from every earlier start.
pub(crate) fn new_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        .max(1)
}

/// Writes persist batches to the WAL, folding every batch that is queued
/// into one write and one fsync (group commit), and publishes the highest
/// durable ticket.
/// Writes persist batches as they come (group commit). When the channel
/// closes (a graceful shutdown), syncs what was written unsynced and ends:
/// `Ok` once every batch it took is on disk.
async fn wal_task(
    wal: Wal,
    mut rx: mpsc::Receiver<PersistBatch>,
    durable: watch::Sender<Result<u64, String>>,
    metrics: Metrics,
    observer: Option<(NodeId, Arc<dyn crate::EngineObserver>)>,
) -> Result<(), String> {
    let disk = wal.disk();
    let mut written_before = wal.bytes_written();
    let wal = Arc::new(parking_lot::Mutex::new(wal));
    loop {
        let first = if wal.lock().needs_seal() {
            match tokio::time::timeout(crate::wal::IDLE_SEAL, rx.recv()).await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(_) => {
                    // Idle: prove the last batch synced (see `Wal::seal`).
                    let w = wal.clone();
                    #[cfg(not(madsim))]
                    let sealed = tokio::task::spawn_blocking(move || w.lock().seal())
                        .await
                        .map_err(|e| format!("WAL task panicked: {e}"))
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    #[cfg(madsim)]
                    let sealed = w.lock().seal().map_err(|e| e.to_string());
                    if let Err(e) = sealed {
                        tracing::error!("WAL sync failed: {e}");
                        let _ = durable.send(Err(e.clone()));
                        return Err(e);
                    }
                    continue;
                }
            }
        } else {
            match rx.recv().await {
                Some(b) => b,
                None => break,
            }
        };
        let mut batches = vec![first];
        while batches.len() < GROUP_COMMIT_BATCHES_MAX {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let last = batches.last().expect("non-empty").ticket;
        let w = wal.clone();
        let started = Instant::now();
        // Only checkers watch; production nodes clone nothing.
        let reported = observer.as_ref().map(|_| batches.clone());
        let crash_hook = observer.clone();
        let stop_before_sync = move || {
            crash_hook
                .as_ref()
                .is_some_and(|(node, o)| o.crash_here(*node, CrashPoint::WalBeforeSync))
        };
        // The WAL is only ever used by this task; the mutex just lets the
        // blocking closure borrow it.
        // Real disks block: keep the fsync off the async workers. In
        // simulation the disk is memory and must stay on the sim thread.
        #[cfg(not(madsim))]
        let result = tokio::task::spawn_blocking(move || {
            w.lock().append_or_stop(&batches, stop_before_sync)
        })
        .await;
        #[cfg(madsim)]
        let result: Result<_, std::convert::Infallible> =
            Ok(w.lock().append_or_stop(&batches, stop_before_sync));
        if let Ok(Ok(false)) = result {
            // Crashed between the write and the fsync: the bytes are
            // written, not synced (a crash may keep any prefix of them),
            // and nothing more happens on this node until the harness
            // kills it.
            if let (Some((node, o)), Some(mut written)) = (&observer, reported) {
                for b in &mut written {
                    b.must_sync = false;
                }
                o.on_durable(*node, &written);
            }
            return std::future::pending().await;
        }
        // What the WAL wrote (and synced where asked) is on the disk now,
        // whatever happens before the engine hears of it.
        if let (Some((node, o)), Some(b), Ok(Ok(true))) = (&observer, &reported, &result) {
            o.on_durable(*node, b);
        }
        // A modelled disk's fsync takes time too; nothing is durable before.
        let latency = disk.take_sync_latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        metrics
            .wal_fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.wal_batches.inc();
        let total = wal.lock().bytes_written();
        metrics
            .wal_bytes_written
            .inc_by(total.saturating_sub(written_before));
        written_before = total;
        match result {
            Ok(Ok(_)) => {
                let _ = durable.send(Ok(last));
            }
            Ok(Err(e)) => {
                tracing::error!("WAL append failed: {e}");
                let _ = durable.send(Err(e.to_string()));
                return Err(e.to_string());
            }
            Err(e) => {
                let _ = durable.send(Err(format!("WAL task panicked: {e}")));
                return Err(format!("WAL task panicked: {e}"));
            }
        }
    }
    let result = wal.lock().sync().map_err(|e| e.to_string());
    if let Err(e) = &result {
        tracing::error!("WAL sync at close failed: {e}");
    }
    result
}

/// The `(change, reason)` labels of an applied ISR change, from the reason
/// its proposer gave (see `chronik_core::isr`): a change can both shrink
/// and expand. Partition creation is no change.
fn isr_change_labels(reason: &str) -> Vec<(&'static str, &'static str)> {
    if reason.starts_with("unclean election") {
        return vec![("shrink", "unclean_election")];
    }
    if reason.starts_with("replica moved") || reason.contains("move") {
        return vec![("shrink", "replica_move")];
    }
    let mut out = Vec::new();
    if reason.contains("shrink:") {
        out.push(("shrink", "lag"));
    }
    if reason.contains("expand:") {
        out.push(("expand", "caught_up"));
    }
    out
}
