//! The engine: one node's consensus state across the metadata group and the
//! partition groups it hosts. Sans-IO: inputs are `handle_*` calls carrying
//! the time, outputs are polled with [`Engine::poll_output`].

use crate::config::EngineConfig;
use crate::error::{ConfigError, Error};
use crate::group::{Group, PartitionSm, Sink};
use crate::isr::{IsrPolicy, IsrTracker, ReplicaLag};
use crate::metadata::{MetadataCommand, MetadataState};
use crate::output::{Command, Event, GroupMessage, Output, Response};
use crate::partition_log::{RecordLog, RecordLogOptions};
use crate::persist::{DurableState, GroupUpdate, PersistBatch, Ticket};
use crate::state_machine::StateMachine;
use crate::storage::GroupStorage;
use crate::types::{
    GroupId, GroupKind, NodeId, PartitionId, ReadConsistency, RequestId, Role, Time, METADATA_GROUP,
};
use raft::eraftpb::{ConfState, MessageType};
use raft::RawNode;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most ticks one `handle_tick` performs; after a long pause the engine
/// resumes rather than replaying every missed tick at once.
const TICKS_PER_CALL_MAX: u64 = 10;

/// Most reads waiting per group before new ones get `Busy`.
const READS_PENDING_MAX: usize = 10_000;

/// A snapshot of one group's Raft state, for status APIs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: GroupId,
    pub kind: GroupKind,
    pub role: Role,
    pub term: u64,
    /// Whom this node voted for in `term` (0: nobody).
    pub vote: NodeId,
    pub leader: Option<NodeId>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Voters of the group's current configuration.
    pub voters: Vec<NodeId>,
    /// The state machine's fingerprint ([`StateMachine::fingerprint`]);
    /// `None` while it is being rebuilt.
    pub state: Option<u64>,
    /// Why this replica's state machine is being rebuilt from a peer's
    /// snapshot (it did not recover from local storage); it serves no
    /// reads and does not campaign until the snapshot is installed.
    pub repairing: Option<String>,
}

struct Inflight<S> {
    ticket: Ticket,
    readies: Vec<(GroupId, u64)>,
    held: Vec<(NodeId, GroupMessage)>,
    /// Dropped groups' state machines, destroyed once this is durable.
    destroy: Vec<S>,
}

/// One node's multi-raft engine. See the crate docs for the driving loop.
pub struct Engine<S: StateMachine = RecordLog> {
    config: EngineConfig,
    options: S::Options,
    rng: StdRng,
    logger: slog::Logger,
    /// Metadata reads are freshness barriers of new partition leaders: the
    /// query is the partition group waiting for one.
    metadata: Group<MetadataState, GroupId>,
    partitions: BTreeMap<GroupId, Group<PartitionSm<S>, S::Query>>,
    sink: Sink<S>,
    next_ticket: Ticket,
    inflight: VecDeque<Inflight<S>>,
    last_tick: Time,
    /// Groups that may have a ready to handle.
    dirty: BTreeSet<GroupId>,
    /// Term in which this node last proposed the bootstrap command.
    bootstrap_term: u64,
    next_read_ctx: u64,
    /// Metadata applied index the partition groups were last reconciled at.
    reconciled_at: u64,
    /// Latest time any input carried.
    now: Time,
    /// The membership step the metadata leader last took, and when.
    membership_acted: Option<(crate::membership::Step, Time)>,
    /// Set once this node applied a configuration without itself.
    removed_reported: bool,
    /// Produces in flight, checked against the ISR again before their
    /// acknowledgement leaves (`NOT_ENOUGH_REPLICAS_AFTER_APPEND`).
    produce_checks: BTreeMap<RequestId, PartitionId>,
    /// Committed produces whose acknowledgement waits until at least
    /// `min_insync_replicas` members of the ISR hold their entry (bounded
    /// by `pending_proposals_max` per group, since each was a proposal).
    awaiting_isr: Vec<AwaitingIsr<S>>,
}

/// A committed produce held back until enough in-sync replicas hold it.
struct AwaitingIsr<S: StateMachine> {
    request_id: RequestId,
    partition: PartitionId,
    /// The produce's log index.
    index: u64,
    result: Result<Response<S>, Error>,
    /// Past this the produce fails with `NOT_ENOUGH_REPLICAS_AFTER_APPEND`.
    deadline: Time,
}

impl RecordLogOptions {
    /// The record log limits an engine config asks for.
    pub fn from_config(config: &EngineConfig) -> Self {
        RecordLogOptions {
            record_size_max_bytes: config.record_size_max_bytes,
            produce_records_max: config.produce_records_max,
        }
    }
}

impl Engine<RecordLog> {
    /// An engine replicating Chronik's record log, rebuilt from `durable`
    /// (empty for a new node).
    pub fn new_record_log(
        config: EngineConfig,
        durable: DurableState,
        now: Time,
    ) -> Result<Self, ConfigError> {
        let options = RecordLogOptions::from_config(&config);
        Engine::new(config, options, durable, now)
    }
}

impl<S: StateMachine> Engine<S> {
    /// Builds an engine from its config and what was durable when the node
    /// last stopped. With an empty `durable` this is a new node that
    /// bootstraps the metadata group with `config.initial_cluster`.
    pub fn new(
        config: EngineConfig,
        options: S::Options,
        durable: DurableState,
        now: Time,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let logger = crate::logger::raft_logger();
        let mut sink = Sink {
            updates: Vec::new(),
            must_sync: false,
            readies: Vec::new(),
            send_now: Vec::new(),
            send_after_persist: Vec::new(),
            outputs: VecDeque::new(),
            compact_threshold: config.log_compact_threshold_entries,
            compact_threshold_bytes: config.log_compact_threshold_bytes,
            emit_apply_events: config.emit_apply_events,
            reply_index: BTreeMap::new(),
            to_destroy: Vec::new(),
        };
        let mut groups = durable.groups;
        let metadata = match groups.remove(&METADATA_GROUP) {
            Some(g) => {
                if g.kind != GroupKind::Metadata {
                    return Err(inconsistent("group 0 is not the metadata group"));
                }
                let snap = g.snapshot.clone();
                let storage =
                    GroupStorage::recovered(g.conf_state, g.hard_state, g.snapshot, g.entries)
                        .map_err(|e| inconsistent(format!("metadata group: {e}")))?;
                let (sm, applied) = match snap {
                    Some(s) => {
                        let index = s.get_metadata().index;
                        let sm = MetadataState::restore(index, &s.data)
                            .map_err(|e| inconsistent(format!("metadata snapshot: {e}")))?;
                        (sm, index)
                    }
                    None => (MetadataState::new(), 0),
                };
                let raw = new_raw(&config, &logger, METADATA_GROUP, storage, applied)?;
                Group::new(METADATA_GROUP, GroupKind::Metadata, raw, sm, applied)
            }
            None => {
                // A joining node knows no configuration: the leader's
                // snapshot brings it.
                let voters: Vec<NodeId> = if config.join {
                    Vec::new()
                } else {
                    config.initial_cluster.iter().map(|n| n.id).collect()
                };
                let conf = ConfState::from((voters, vec![]));
                sink.updates.push(GroupUpdate::Create {
                    group: METADATA_GROUP,
                    kind: GroupKind::Metadata,
                    conf_state: conf.clone(),
                });
                sink.must_sync = true;
                let storage = GroupStorage::new_with_conf_state(conf);
                let raw = new_raw(&config, &logger, METADATA_GROUP, storage, 0)?;
                Group::new(
                    METADATA_GROUP,
                    GroupKind::Metadata,
                    raw,
                    MetadataState::new(),
                    0,
                )
            }
        };
        let mut partitions = BTreeMap::new();
        for (id, g) in groups {
            let GroupKind::Partition(pid) = g.kind.clone() else {
                return Err(inconsistent(format!(
                    "group {id} claims to be the metadata group"
                )));
            };
            let snap = g.snapshot.clone();
            let commit = g.hard_state.commit;
            let storage =
                GroupStorage::recovered(g.conf_state, g.hard_state, g.snapshot, g.entries)
                    .map_err(|e| inconsistent(format!("group {id} ({pid}): {e}")))?;
            let mut sm = S::new(id, &pid, &options);
            let snap_index = snap.as_ref().map_or(0, |s| s.get_metadata().index);
            let mut repair = None;
            if let Err(e) = sm.recover(snap.as_ref().map(|s| (snap_index, &s.data[..]))) {
                // The local state behind the snapshot is damaged (a corrupt
                // or missing segment, say). The Raft log and hard state are
                // intact, so this replica stays a voter with everything it
                // promised; only the state machine is rebuilt, from a
                // snapshot of the leader's, and nothing is served from it
                // until then.
                tracing::error!(
                    group = id,
                    %pid,
                    "partition state does not recover, rebuilding it from the leader's snapshot: {e}"
                );
                sm = S::new(id, &pid, &options);
                sm.recover(None).map_err(|e2| {
                    inconsistent(format!(
                        "group {id} ({pid}): state does not recover ({e}) and cannot be cleared for a rebuild: {e2}"
                    ))
                })?;
                repair = Some(e);
            }
            // The state machine holds the snapshot: everything after it is
            // applied again from the log.
            let applied = if crate::planted::active(crate::planted::Bug::RecoverySkipsToCommit) {
                // Planted bug (simulation builds only): trusts the commit
                // index as applied, skipping the entries after the snapshot.
                snap_index.max(commit)
            } else {
                snap_index
            };
            let raw = new_raw(&config, &logger, id, storage, applied)?;
            let mut group = Group::new(id, g.kind, raw, PartitionSm(sm), applied);
            group.repair = repair;
            partitions.insert(id, group);
        }
        let mut engine = Engine {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            options,
            logger,
            metadata,
            partitions,
            sink,
            next_ticket: 1,
            inflight: VecDeque::new(),
            last_tick: now,
            dirty: BTreeSet::new(),
            bootstrap_term: 0,
            next_read_ctx: 1,
            reconciled_at: 0,
            now,
            produce_checks: BTreeMap::new(),
            awaiting_isr: Vec::new(),
            membership_acted: None,
            removed_reported: false,
        };
        engine.dirty.insert(METADATA_GROUP);
        engine.dirty.extend(engine.partitions.keys().copied());
        engine.observe_all();
        // Recovered entries are applied on the first input, so the caller
        // can look at the recovered state first.
        engine.flush();
        Ok(engine)
    }

    // ----- inputs -------------------------------------------------------

    /// Advances Raft time to `now`: one tick per elapsed tick interval.
    pub fn handle_tick(&mut self, now: Time) {
        self.now = self.now.max(now);
        let interval = self.config.tick_interval_ms;
        let mut ticks = 0;
        while self.last_tick.plus_millis(interval) <= now && ticks < TICKS_PER_CALL_MAX {
            self.last_tick = self.last_tick.plus_millis(interval);
            ticks += 1;
            self.metadata.raw.tick();
            for g in self.partitions.values_mut() {
                if g.repair.is_some() {
                    // A replica rebuilding its state must not lead: no
                    // election timeout runs. It asks the leader for a
                    // snapshot instead (raft-rs drops the request while no
                    // leader is known or its log ends in an older term;
                    // it is made again every tick until one is pending).
                    if g.raw.raft.pending_request_snapshot == 0 {
                        let _ = g.raw.request_snapshot();
                    }
                } else {
                    g.raw.tick();
                }
            }
            // After every tick: a tick that resets a group (an election)
            // must get its timeout from the seeded RNG before the next
            // tick counts against raft-rs's own draw.
            self.observe_all();
        }
        if self.last_tick.plus_millis(interval) <= now {
            // Skipped ticks after a long pause are not replayed.
            self.last_tick = now;
        }
        if ticks > 0 {
            self.dirty.insert(METADATA_GROUP);
            self.dirty.extend(self.partitions.keys().copied());
            self.observe_all();
            for g in self.partitions.values_mut() {
                g.expire_reads(self.now, &mut self.sink);
            }
            // Barriers that timed out or were abandoned (no metadata leader,
            // or one that has not committed in its term yet) start again.
            self.metadata.reads.expire(self.now);
            if self.metadata.reads.is_empty() {
                for g in self.partitions.values_mut() {
                    if g.metadata_fresh_term != Some(g.raw.raft.term) {
                        g.barrier_term = None;
                    }
                }
            }
            self.maintain_isr();
            self.serve_snapshot_requests();
            self.maintain_membership();
            self.maintain_moves();
            self.dirty.insert(METADATA_GROUP);
        }
        self.process();
    }

    /// Steps a batch of peer messages. A batch from a node that is neither a
    /// registered node nor an initial member is refused whole; single
    /// malformed messages (wrong addressee, undecodable snapshots) are
    /// dropped and logged, and raft-rs refuses local-only message types.
    pub fn handle_messages(
        &mut self,
        now: Time,
        from: NodeId,
        batch: Vec<GroupMessage>,
    ) -> Result<(), Error> {
        self.now = self.now.max(now);
        if self.metadata.sm.was_removed(from) {
            tracing::debug!(from, "refused messages from a removed node");
            return Err(Error::NodeRemoved { node: from });
        }
        // A node whose metadata lags a membership change may hear from a
        // member it does not know yet (a new leader, even): metadata-group
        // messages are accepted from anyone not removed, partition
        // messages only from known nodes. Peers are trusted to be members;
        // the transport must authenticate them (see the architecture doc).
        let known = self.is_known_node(from);
        if !known && batch.iter().all(|m| m.group != METADATA_GROUP) {
            tracing::warn!(from, "refused messages from unknown node");
            return Err(Error::UnknownNode { node: from });
        }
        let me = self.config.node_id;
        for GroupMessage { group, mut message } in batch {
            if !known && group != METADATA_GROUP {
                tracing::debug!(
                    from,
                    group,
                    "dropped partition message from an unknown node"
                );
                continue;
            }
            if message.to != me || message.from != from {
                tracing::warn!(
                    from,
                    group,
                    to = message.to,
                    claimed_from = message.from,
                    "dropped misaddressed message"
                );
                continue;
            }
            if crate::planted::active(crate::planted::Bug::VoteIgnoresLog)
                && matches!(
                    message.get_msg_type(),
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                )
            {
                // Planted bug (simulation builds only): every candidate's
                // log looks at least as up to date as this voter's.
                message.log_term = u64::MAX;
            }
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            if message.get_msg_type() == MessageType::MsgAppend
                && message.index == 0
                && self.raw_mut(group).is_some_and(|raw| {
                    raw.store().conf_state().voters.is_empty() && raw.store().snapshot_index() == 0
                })
            {
                // A joining node (or a replica moving in) has no
                // configuration yet and no log entry carries one: it must
                // start from a snapshot. Appends following later entries
                // are stepped (and rejected: the log is empty), which walks
                // the leader back to its compacted start and so to a
                // snapshot; the log from index 1, without the initial
                // configuration, is never taken.
                tracing::debug!(from, group, "joining: waiting for a snapshot");
                continue;
            }
            // A node that applied a configuration without itself no longer
            // steps that group's messages: raft-rs has dropped its own
            // progress, and a removed leader would panic counting a commit
            // (found by simulation seed 1432: the metadata leader removed
            // itself and then took an append response).
            let removed = if group == METADATA_GROUP {
                self.metadata.removed
            } else {
                self.partitions.get(&group).is_some_and(|g| g.removed)
            };
            if removed {
                tracing::debug!(from, group, "dropped message for a group this node left");
                continue;
            }
            let result = if group == METADATA_GROUP {
                if is_snapshot {
                    let s = message.get_snapshot();
                    if let Err(e) = MetadataState::restore(s.get_metadata().index, &s.data) {
                        tracing::warn!(from, group, "dropped undecodable metadata snapshot: {e}");
                        continue;
                    }
                }
                self.metadata.raw.step(message)
            } else if let Some(g) = self.partitions.get_mut(&group) {
                if is_snapshot {
                    let s = message.get_snapshot();
                    if let Err(e) = S::validate_snapshot(&self.options, &s.data) {
                        tracing::warn!(from, group, "dropped undecodable partition snapshot: {e}");
                        continue;
                    }
                }
                if g.repair.is_some() && message.get_msg_type() == MessageType::MsgTimeoutNow {
                    tracing::info!(from, group, "not taking leadership while rebuilding state");
                    continue;
                }
                g.raw.step(message)
            } else {
                // Not created here yet (metadata not applied) or deleted:
                // dropping is safe, the sender retries.
                tracing::debug!(from, group, "dropped message for a group not hosted here");
                continue;
            };
            if let Err(e) = result {
                tracing::debug!(from, group, "raft refused a message: {e}");
            }
            self.dirty.insert(group);
        }
        self.observe_all();
        self.process();
        Ok(())
    }

    /// Tells the engine that `peer` could not be reached, so leaders stop
    /// pipelining to it and probe instead.
    pub fn handle_unreachable(&mut self, peer: NodeId) {
        self.metadata.raw.report_unreachable(peer);
        for g in self.partitions.values_mut() {
            g.raw.report_unreachable(peer);
        }
    }

    /// Starts a client or operator command. Its outcome always arrives as
    /// an [`Output::Reply`] with `request_id`, which must be unique among the
    /// driver's requests in flight. A refused command changes nothing.
    pub fn handle_command(&mut self, now: Time, request_id: RequestId, command: Command<S>) {
        self.now = self.now.max(now);
        if let Err(e) = self.start_command(request_id, command) {
            self.sink.reply(request_id, Err(e));
        }
        self.observe_all();
        self.process();
    }

    /// Reports that the batch `ticket` (and every earlier one) is durable.
    ///
    /// # Panics
    /// If `ticket` was never handed out: a driver bug.
    pub fn handle_persisted(&mut self, now: Time, ticket: Ticket) {
        self.now = self.now.max(now);
        assert!(
            ticket < self.next_ticket,
            "ticket {ticket} was never issued"
        );
        while self.inflight.front().is_some_and(|f| f.ticket <= ticket) {
            let done = self.inflight.pop_front().expect("checked non-empty");
            for (group, number) in done.readies {
                if let Some(raw) = self.raw_mut(group) {
                    raw.on_persist_ready(number);
                    self.dirty.insert(group);
                }
            }
            self.sink.send_now.extend(done.held);
            for sm in done.destroy {
                sm.destroy();
            }
        }
        self.observe_all();
        self.process();
    }

    // ----- outputs ------------------------------------------------------

    /// The next thing for the driver to do, in order.
    pub fn poll_output(&mut self) -> Option<Output<S>> {
        self.sink.outputs.pop_front()
    }

    /// When `handle_tick` should be called next.
    pub fn poll_timeout(&self) -> Time {
        self.last_tick.plus_millis(self.config.tick_interval_ms)
    }

    // ----- getters ------------------------------------------------------

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The applied metadata (possibly behind the metadata leader's).
    pub fn metadata(&self) -> &MetadataState {
        &self.metadata.sm
    }

    /// The local replica's state machine of a partition, if hosted here.
    pub fn partition_state(&self, partition: &PartitionId) -> Option<&S> {
        let group = self.metadata.sm.partition(partition).ok()?.group;
        self.partitions.get(&group).map(|g| &g.sm.0)
    }

    /// This node's replica of `partition`, to read its applied state
    /// directly (no leadership, no ReadIndex: what it holds, possibly
    /// stale). Refused when it is not hosted here or its state is being
    /// rebuilt.
    pub fn replica_state(&self, partition: &PartitionId) -> Result<&S, Error> {
        let group = self.replica_group(partition)?;
        let g = self.partitions.get(&group).ok_or(Error::NotLeader {
            group,
            leader_hint: None,
        })?;
        match &g.repair {
            Some(reason) => Err(Error::ReplicaRepairing {
                group,
                reason: reason.clone(),
            }),
            None => Ok(&g.sm.0),
        }
    }

    /// The group ids hosted here, metadata first.
    pub fn groups(&self) -> Vec<GroupId> {
        std::iter::once(METADATA_GROUP)
            .chain(self.partitions.keys().copied())
            .collect()
    }

    /// Raft status of a hosted group.
    pub fn group_status(&self, group: GroupId) -> Option<GroupStatus> {
        if group == METADATA_GROUP {
            return Some(status_of(&self.metadata));
        }
        self.partitions.get(&group).map(status_of)
    }

    /// Raft status of every hosted group, metadata first.
    pub fn status(&self) -> Vec<GroupStatus> {
        std::iter::once(status_of(&self.metadata))
            .chain(self.partitions.values().map(|g| GroupStatus {
                state: g.sm.0.fingerprint().filter(|_| g.repair.is_none()),
                ..status_of(g)
            }))
            .collect()
    }

    /// The metadata group's configuration as this node knows it.
    pub fn membership_view(&self) -> crate::membership::ConfView {
        conf_view(&self.metadata.raw)
    }

    /// Tickets handed out and not yet reported persisted.
    pub fn persist_in_flight(&self) -> usize {
        self.inflight.len()
    }

    // ----- internals ----------------------------------------------------

    fn is_known_node(&self, node: NodeId) -> bool {
        self.metadata.sm.node(node).is_some()
            || (self.config.initial_cluster.iter().any(|n| n.id == node)
                && !self.metadata.sm.was_removed(node))
    }

    fn raw_mut(&mut self, group: GroupId) -> Option<&mut RawNode<GroupStorage>> {
        if group == METADATA_GROUP {
            Some(&mut self.metadata.raw)
        } else {
            self.partitions.get_mut(&group).map(|g| &mut g.raw)
        }
    }

    fn start_command(&mut self, request_id: RequestId, command: Command<S>) -> Result<(), Error> {
        match command {
            Command::Metadata(
                MetadataCommand::BeginMembershipChange { .. }
                | MetadataCommand::FinishMembershipChange { .. }
                | MetadataCommand::BeginReplicaMove { .. }
                | MetadataCommand::FinishReplicaMove { .. }
                | MetadataCommand::UpdateIsr { .. },
            ) => {
                return Err(Error::invalid(
                    "membership and ISR changes are made by the engine itself; use Command::Membership",
                ));
            }
            Command::Membership(change) => {
                let g = &mut self.metadata;
                if !g.is_leader() {
                    return Err(Error::NotLeader {
                        group: METADATA_GROUP,
                        leader_hint: g.leader_hint(),
                    });
                }
                if !g.raw.raft.commit_to_current_term() {
                    return Err(Error::LeaderNotReady {
                        group: METADATA_GROUP,
                    });
                }
                let conf = conf_view(&g.raw);
                let alive = alive_voters(&g.raw);
                crate::membership::validate(&change, &g.sm, &conf, &alive)?;
                let cmd = MetadataCommand::BeginMembershipChange { change };
                g.sm.validate(&cmd)?;
                let data = postcard::to_stdvec(&cmd).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                self.dirty.insert(METADATA_GROUP);
            }
            Command::Metadata(cmd) => {
                let g = &mut self.metadata;
                if !g.is_leader() {
                    return Err(Error::NotLeader {
                        group: METADATA_GROUP,
                        leader_hint: g.leader_hint(),
                    });
                }
                if let MetadataCommand::CreateTopic { partitions, .. } = &cmd {
                    if *partitions > self.config.topic_partitions_max {
                        return Err(Error::invalid(format!(
                            "{partitions} partitions exceed topic_partitions_max ({})",
                            self.config.topic_partitions_max
                        )));
                    }
                }
                g.sm.validate(&cmd)?;
                check_pending(g.id, g.pending_count(), self.config.pending_proposals_max)?;
                let data = postcard::to_stdvec(&cmd).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                self.dirty.insert(METADATA_GROUP);
            }
            Command::Propose { partition, command } => {
                let group = self.leader_group(&partition)?;
                let (isr, min) = self.isr_size(&partition)?;
                if isr < min {
                    return Err(Error::NotEnoughReplicas {
                        partition,
                        isr,
                        min,
                    });
                }
                let max = self.config.pending_proposals_max;
                let g = self
                    .partitions
                    .get_mut(&group)
                    .expect("leader_group checked");
                g.sm.0.validate(&command)?;
                check_pending(group, g.pending_count(), max)?;
                let data =
                    postcard::to_stdvec(&command).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                if self.sink.emit_apply_events {
                    let index = g.raw.raft.raft_log.last_index();
                    self.sink.event(Event::ProduceAccepted { group, index });
                }
                self.dirty.insert(group);
                self.produce_checks.insert(request_id, partition);
            }
            Command::Query {
                partition,
                query,
                consistency,
            } => {
                if crate::planted::active(crate::planted::Bug::StaleRead) {
                    // Planted bug (simulation builds only): any replica
                    // answers from its own applied state, with no
                    // leadership or ReadIndex.
                    let group = self.metadata.sm.partition(&partition)?.group;
                    let g = self.partitions.get(&group).ok_or(Error::NotLeader {
                        group,
                        leader_hint: None,
                    })?;
                    let r = g.sm.0.query(&query).map(Response::Query);
                    self.sink.reply(request_id, r);
                    return Ok(());
                }
                let group = match consistency {
                    ReadConsistency::Leader => self.leader_group(&partition)?,
                    ReadConsistency::Follower | ReadConsistency::FollowerStale => {
                        self.replica_group(&partition)?
                    }
                };
                let g = self.partitions.get_mut(&group).expect("checked hosted");
                if let Some(reason) = &g.repair {
                    return Err(Error::ReplicaRepairing {
                        group,
                        reason: reason.clone(),
                    });
                }
                if consistency == ReadConsistency::FollowerStale {
                    let r = g.sm.0.query(&query).map(Response::Query);
                    self.sink.reply(request_id, r);
                    return Ok(());
                }
                if g.is_leader() && !g.raw.raft.commit_to_current_term() {
                    return Err(Error::LeaderNotReady { group });
                }
                if !g.is_leader() && g.leader_hint().is_none() {
                    // raft-rs would drop the request: no one to ask.
                    return Err(Error::NotLeader {
                        group,
                        leader_hint: None,
                    });
                }
                if g.reads_count() >= READS_PENDING_MAX {
                    return Err(Error::Busy {
                        group,
                        pending: g.reads_count(),
                        max: READS_PENDING_MAX,
                    });
                }
                let deadline = self.now.plus_millis(self.config.read_timeout_ms);
                g.reads.push(request_id, query, deadline);
                self.dirty.insert(group);
            }
        }
        Ok(())
    }

    /// Whether this node would accept a produce to `partition` now as its
    /// leader (leading, metadata confirmed fresh, in the ISR or unclean
    /// allowed), else why not. The ISR minimum is checked separately.
    pub fn check_leader(&self, partition: &PartitionId) -> Result<GroupId, Error> {
        self.leader_group(partition)
    }

    /// `(ISR size, min_insync_replicas)` of a partition, as applied here.
    fn isr_size(&self, partition: &PartitionId) -> Result<(u32, u32), Error> {
        let meta = self.metadata.sm.partition(partition)?;
        let topic =
            self.metadata
                .sm
                .topic(&partition.topic)
                .ok_or_else(|| Error::UnknownTopic {
                    topic: partition.topic.clone(),
                })?;
        Ok((meta.isr.len() as u32, topic.min_insync_replicas))
    }

    /// The local group of `partition` if this node hosts a replica of it.
    fn replica_group(&self, partition: &PartitionId) -> Result<GroupId, Error> {
        let meta = self.metadata.sm.partition(partition)?;
        if self.partitions.contains_key(&meta.group) {
            Ok(meta.group)
        } else {
            Err(Error::NotLeader {
                group: meta.group,
                leader_hint: Some(meta.preferred_leader),
            })
        }
    }

    /// The local group of `partition` if this node leads it and may serve
    /// as its leader (it is in the ISR, or the topic allows unclean
    /// leaders), else why not.
    fn leader_group(&self, partition: &PartitionId) -> Result<GroupId, Error> {
        let meta = self.metadata.sm.partition(partition)?;
        let me = self.config.node_id;
        let unclean = self
            .metadata
            .sm
            .topic(&partition.topic)
            .is_some_and(|t| t.unclean_leader_election);
        match self.partitions.get(&meta.group) {
            Some(g) if g.is_leader() && g.metadata_fresh_term != Some(g.raw.raft.term) => {
                // A new leader first makes sure its metadata (the ISR it
                // enforces) is not stale: one metadata ReadIndex round.
                Err(Error::LeaderNotReady { group: meta.group })
            }
            Some(g)
                if g.is_leader()
                    && !meta.isr.contains(&me)
                    && !unclean
                    // Planted bug (simulation builds only): no ISR check.
                    && !crate::planted::active(crate::planted::Bug::LeaderOutsideIsrServes) =>
            {
                Err(Error::LeaderNotInSync {
                    partition: partition.clone(),
                    leader: me,
                    isr: meta.isr.clone(),
                })
            }
            Some(g) if g.is_leader() => Ok(meta.group),
            Some(g) => Err(Error::NotLeader {
                group: meta.group,
                leader_hint: g.leader_hint(),
            }),
            // Not a replica here: the preferred leader is the best guess.
            None => Err(Error::NotLeader {
                group: meta.group,
                leader_hint: Some(meta.preferred_leader),
            }),
        }
    }

    fn observe_all(&mut self) {
        let ticks = self.config.election_ticks;
        self.metadata.observe(&mut self.rng, ticks, &mut self.sink);
        for g in self.partitions.values_mut() {
            g.observe(&mut self.rng, ticks, &mut self.sink);
        }
    }

    /// Handles readies until no group has one, then emits the persist
    /// batch and the sends.
    fn process(&mut self) {
        while let Some(group) = self.dirty.pop_first() {
            if group == METADATA_GROUP {
                while self.metadata.handle_ready(&mut self.sink) {}
                self.metadata.sync_applied();
                self.metadata_barriers();
                if self.metadata.removed && !self.removed_reported {
                    self.removed_reported = true;
                    tracing::warn!(node = self.config.node_id, "removed from the cluster");
                    self.sink.event(Event::RemovedFromCluster);
                }
                self.maybe_bootstrap();
                if self.metadata.applied != self.reconciled_at {
                    self.reconcile_groups();
                }
            } else if let Some(g) = self.partitions.get_mut(&group) {
                while g.handle_ready(&mut self.sink) {}
                g.sync_applied();
                g.serve_reads(&mut self.sink, |sm, q| sm.0.query(q).map(Response::Query));
                let ctx = self.next_read_ctx.to_be_bytes().to_vec();
                if g.start_read_round(ctx, self.config.read_timeout_ms, self.now) {
                    self.next_read_ctx += 1;
                    // The round's messages come out of the next ready.
                    self.dirty.insert(group);
                }
            }
        }
        self.observe_all();
        self.flush();
    }

    /// The first metadata leader of a new cluster registers the initial
    /// members. Once per term; the command is a no-op once applied.
    fn maybe_bootstrap(&mut self) {
        let g = &mut self.metadata;
        if g.sm.is_bootstrapped() || !g.is_leader() || self.bootstrap_term == g.raw.raft.term {
            return;
        }
        self.bootstrap_term = g.raw.raft.term;
        let cmd = MetadataCommand::Bootstrap {
            nodes: self.config.initial_cluster.clone(),
        };
        let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
        if g.propose(data, None, &mut self.sink).is_ok() {
            self.dirty.insert(METADATA_GROUP);
        }
    }

    /// Creates the partition groups applied metadata assigns to this node
    /// and drops those whose partitions were deleted.
    fn reconcile_groups(&mut self) {
        self.reconciled_at = self.metadata.applied;
        let me = self.config.node_id;
        let wanted: Vec<(GroupId, PartitionId, Vec<NodeId>)> = self
            .metadata
            .sm
            .partitions()
            .filter(|(_, p)| {
                (p.replicas.contains(&me) || p.moving.is_some_and(|m| m.to == me))
                    && !self.partitions.contains_key(&p.group)
            })
            .map(|(pid, p)| {
                // A replica moving in starts with no configuration and
                // waits for the leader's snapshot, like a joining node.
                let voters = if p.replicas.contains(&me) {
                    p.replicas.clone()
                } else {
                    Vec::new()
                };
                (p.group, pid, voters)
            })
            .collect();
        for (group, pid, replicas) in wanted {
            let conf = ConfState::from((replicas, vec![]));
            let storage = GroupStorage::new_with_conf_state(conf.clone());
            let raw = match new_raw(&self.config, &self.logger, group, storage, 0) {
                Ok(raw) => raw,
                Err(e) => {
                    tracing::error!(group, %pid, "cannot create partition group: {e}");
                    continue;
                }
            };
            self.sink.updates.push(GroupUpdate::Create {
                group,
                kind: GroupKind::Partition(pid.clone()),
                conf_state: conf,
            });
            self.sink.must_sync = true;
            let mut sm = S::new(group, &pid, &self.options);
            if let Err(e) = sm.recover(None) {
                tracing::error!(group, %pid, "cannot start an empty partition state: {e}");
                continue;
            }
            let sm = PartitionSm(sm);
            let mut g = Group::new(group, GroupKind::Partition(pid.clone()), raw, sm, 0);
            g.observe(&mut self.rng, self.config.election_ticks, &mut self.sink);
            self.partitions.insert(group, g);
            self.dirty.insert(group);
            self.sink.event(Event::GroupCreated {
                group,
                partition: pid,
            });
        }
        let md = &self.metadata.sm;
        let gone: Vec<GroupId> = self
            .partitions
            .keys()
            .copied()
            .filter(|g| {
                md.is_deleted_group(*g)
                    || md.partition_of_group(*g).is_some_and(|(_, p)| {
                        // Moved away from this node.
                        !p.replicas.contains(&me) && p.moving.is_none_or(|m| m.to != me)
                    })
            })
            .collect();
        for group in gone {
            if let Some(mut g) = self.partitions.remove(&group) {
                // A deleted partition is gone whatever happened to its
                // requests. A replica that moved away leaves a partition
                // that lives on: a proposal in flight may still commit
                // there (found by simulation seed 1090, where a produce
                // answered GROUP_REMOVED was read afterwards).
                if self.metadata.sm.is_deleted_group(group) {
                    let gone = Error::GroupRemoved { group };
                    g.fail_all(&mut self.sink, gone.clone(), gone);
                } else {
                    // Reads try another replica.
                    let elsewhere = Error::NotLeader {
                        group,
                        leader_hint: None,
                    };
                    g.fail_all(&mut self.sink, Error::OutcomeUnknown { group }, elsewhere);
                }
                self.sink.to_destroy.push(g.sm.0);
            }
            self.sink.updates.push(GroupUpdate::Drop { group });
            self.sink.must_sync = true;
            self.sink.event(Event::GroupDropped { group });
        }
    }

    /// Turns what ready handling gathered into outputs: one persist batch
    /// for every group (group commit), then one send per peer.
    fn flush(&mut self) {
        self.check_produce_acks();
        let sink = &mut self.sink;
        if !sink.readies.is_empty()
            || !sink.updates.is_empty()
            || !sink.send_after_persist.is_empty()
        {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let batch = PersistBatch {
                ticket,
                updates: std::mem::take(&mut sink.updates),
                must_sync: std::mem::take(&mut sink.must_sync),
            };
            self.inflight.push_back(Inflight {
                ticket,
                readies: std::mem::take(&mut sink.readies),
                held: std::mem::take(&mut sink.send_after_persist),
                destroy: std::mem::take(&mut sink.to_destroy),
            });
            sink.outputs.push_back(Output::Persist(batch));
        }
        if !sink.send_now.is_empty() {
            let mut by_peer: BTreeMap<NodeId, Vec<GroupMessage>> = BTreeMap::new();
            for (to, m) in sink.send_now.drain(..) {
                by_peer.entry(to).or_default().push(m);
            }
            for (to, messages) in by_peer {
                sink.outputs.push_back(Output::Send { to, messages });
            }
        }
    }
}

/// What to do with a committed produce's acknowledgement now.
enum AckVerdict {
    /// Enough in-sync replicas hold it.
    Ack(GroupId),
    /// Not yet: hold the reply.
    Wait(GroupId),
    /// It can no longer be acknowledged as the topic demands.
    Fail(Error),
    /// The partition is gone from the metadata: leave the reply as it is.
    Unknown,
}

/// Whether the produce at `index` of `partition` may be acknowledged: the
/// ISR (as applied here) holds at least `min_insync_replicas` replicas, and
/// at least that many of them hold the entry, as this leader's progress
/// tracking knows.
fn ack_verdict<S: StateMachine>(
    metadata: &MetadataState,
    partitions: &BTreeMap<GroupId, Group<PartitionSm<S>, S::Query>>,
    partition: &PartitionId,
    index: u64,
) -> AckVerdict {
    let (Ok(meta), Some(topic)) = (
        metadata.partition(partition),
        metadata.topic(&partition.topic),
    ) else {
        return AckVerdict::Unknown;
    };
    let group = meta.group;
    let (isr, min) = (meta.isr.len() as u32, topic.min_insync_replicas);
    // Planted bug (simulation builds only): the ISR is not checked after
    // the append; the wait counts any replica holding the entry.
    let skip_isr = crate::planted::active(crate::planted::Bug::MinIsrBeforeAppendOnly);
    if isr < min && !skip_isr {
        return AckVerdict::Fail(Error::NotEnoughReplicasAfterAppend {
            partition: partition.clone(),
            isr,
            min,
        });
    }
    if crate::planted::active(crate::planted::Bug::AckOnQuorum) {
        // Planted bug (simulation builds only): no wait for the ISR.
        return AckVerdict::Ack(group);
    }
    let Some(g) = partitions.get(&group).filter(|g| g.is_leader()) else {
        return AckVerdict::Fail(Error::NotEnoughReplicasAfterAppend {
            partition: partition.clone(),
            isr,
            min,
        });
    };
    let prs = g.raw.raft.prs();
    let counted = if skip_isr { &meta.replicas } else { &meta.isr };
    let holders = counted
        .iter()
        .filter(|id| prs.get(**id).is_some_and(|p| p.matched >= index))
        .count() as u32;
    // Planted bug (simulation builds only): every ISR member must hold it.
    let needed = if crate::planted::active(crate::planted::Bug::AckWaitsForWholeIsr) {
        counted.len() as u32
    } else {
        min
    };
    if holders >= needed {
        AckVerdict::Ack(group)
    } else {
        AckVerdict::Wait(group)
    }
}

impl<S: StateMachine> Engine<S> {
    /// Checks every produce reply about to leave against the ISR as applied
    /// now: one whose ISR fell below `min_insync_replicas` since it was
    /// accepted fails with `NOT_ENOUGH_REPLICAS_AFTER_APPEND`. A committed
    /// produce is acknowledged only once at least `min_insync_replicas`
    /// members of the ISR hold its entry (Raft's commit needs a majority,
    /// which may be fewer, or not in the ISR): until then its reply waits,
    /// and fails after the ISR lag bound (by then the lagging replica has
    /// left the ISR, or the ISR is too small).
    fn check_produce_acks(&mut self) {
        let reply_index = std::mem::take(&mut self.sink.reply_index);
        if self.produce_checks.is_empty() && self.awaiting_isr.is_empty() {
            return;
        }
        let mut acked = Vec::new();
        // Positions in the outputs of the replies held back now, and what
        // waits for them.
        let mut held = BTreeSet::new();
        let mut newly_waiting = Vec::new();
        let deadline = self.now.plus_millis(2 * self.config.isr_max_lag_ms);
        for (position, out) in self.sink.outputs.iter_mut().enumerate() {
            let Output::Reply { request_id, result } = out else {
                continue;
            };
            let Some(partition) = self.produce_checks.remove(request_id) else {
                continue;
            };
            if result.is_err() {
                continue;
            }
            let index = reply_index.get(request_id).copied().unwrap_or(0);
            match ack_verdict(&self.metadata.sm, &self.partitions, &partition, index) {
                AckVerdict::Ack(group) => {
                    if crate::planted::active(crate::planted::Bug::FailAfterAppend)
                        && *request_id % 5 == 0
                    {
                        // Planted bug (simulation builds only): an appended
                        // and committed produce is answered as a definite
                        // refusal.
                        *result = Err(Error::invalid("planted bug: fail after append"));
                    } else {
                        acked.push((group, index));
                    }
                }
                AckVerdict::Fail(e) => *result = Err(e),
                AckVerdict::Wait(group) => {
                    held.insert(position);
                    let result = std::mem::replace(result, Err(Error::OutcomeUnknown { group }));
                    newly_waiting.push(AwaitingIsr {
                        request_id: *request_id,
                        partition,
                        index,
                        result,
                        deadline,
                    });
                }
                AckVerdict::Unknown => {}
            }
        }
        if !held.is_empty() {
            let mut position = 0;
            self.sink.outputs.retain(|_| {
                position += 1;
                !held.contains(&(position - 1))
            });
        }
        // Earlier produces still waiting: released, failed or kept.
        for w in std::mem::take(&mut self.awaiting_isr) {
            match ack_verdict(&self.metadata.sm, &self.partitions, &w.partition, w.index) {
                AckVerdict::Ack(group) => {
                    self.sink.reply(w.request_id, w.result);
                    acked.push((group, w.index));
                }
                AckVerdict::Fail(e) => self.sink.reply(w.request_id, Err(e)),
                AckVerdict::Wait(_) if self.now < w.deadline => self.awaiting_isr.push(w),
                AckVerdict::Wait(group) => {
                    let (isr, min) = match (
                        self.metadata.sm.partition(&w.partition),
                        self.metadata.sm.topic(&w.partition.topic),
                    ) {
                        (Ok(meta), Some(topic)) => (meta.isr.clone(), topic.min_insync_replicas),
                        _ => (Vec::new(), 0),
                    };
                    let holders = self.partitions.get(&group).map_or(0, |g| {
                        let prs = g.raw.raft.prs();
                        isr.iter()
                            .filter(|id| prs.get(**id).is_some_and(|p| p.matched >= w.index))
                            .count() as u32
                    });
                    self.sink.reply(
                        w.request_id,
                        Err(Error::InsyncCopiesTimedOut {
                            partition: w.partition,
                            holders,
                            isr,
                            min,
                            waited_ms: 2 * self.config.isr_max_lag_ms,
                        }),
                    );
                }
                AckVerdict::Unknown => {
                    let (isr, min) = self.isr_size(&w.partition).unwrap_or((0, 0));
                    self.sink.reply(
                        w.request_id,
                        Err(Error::NotEnoughReplicasAfterAppend {
                            partition: w.partition,
                            isr,
                            min,
                        }),
                    );
                }
            }
        }
        self.awaiting_isr.extend(newly_waiting);
        if self.sink.emit_apply_events {
            for (group, index) in acked {
                self.sink.event(Event::ProduceAcked { group, index });
            }
        }
    }

    /// Completes the metadata freshness barriers whose read index has been
    /// applied, and starts new barriers for partition leaders of a new term.
    fn metadata_barriers(&mut self) {
        for (_, group, _) in self.metadata.reads.ready(self.metadata.applied) {
            if let Some(g) = self.partitions.get_mut(&group) {
                if g.is_leader() && g.barrier_term == Some(g.raw.raft.term) {
                    g.metadata_fresh_term = g.barrier_term;
                }
            }
        }
        let deadline = self
            .now
            .plus_millis(self.config.tick_interval_ms * self.config.election_ticks as u64);
        for (gid, g) in self.partitions.iter_mut() {
            let term = g.raw.raft.term;
            if g.is_leader() && g.metadata_fresh_term != Some(term) && g.barrier_term != Some(term)
            {
                g.barrier_term = Some(term);
                self.metadata
                    .reads
                    .push(crate::group::INTERNAL_REQUEST, *gid, deadline);
            }
        }
        let ctx = self.next_read_ctx.to_be_bytes().to_vec();
        let timeout = self.config.tick_interval_ms * self.config.election_ticks as u64;
        if self.metadata.start_read_round(ctx, timeout, self.now) {
            self.next_read_ctx += 1;
            self.dirty.insert(METADATA_GROUP);
        }
    }

    /// Partition leaders keep their ISR current: each tick they observe
    /// their followers' progress and propose shrinks and expands through the
    /// metadata group (a follower forwards the proposal to its leader). A
    /// leader outside the ISR hands leadership to an in-sync replica, or,
    /// where the topic allows unclean election, takes the ISR over.
    fn maintain_isr(&mut self) {
        let now = self.now;
        let me = self.config.node_id;
        let policy = IsrPolicy {
            max_lag_entries: self.config.isr_max_lag_entries,
            max_lag_ms: self.config.isr_max_lag_ms,
        };
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let mut proposals = Vec::new();
        for (gid, g) in self.partitions.iter_mut() {
            if !g.is_leader() {
                continue;
            }
            let GroupKind::Partition(pid) = &g.kind else {
                continue;
            };
            let (Ok(meta), Some(topic)) = (
                self.metadata.sm.partition(pid),
                self.metadata.sm.topic(&pid.topic),
            ) else {
                continue;
            };
            if meta.group != *gid || g.metadata_fresh_term != Some(g.raw.raft.term) {
                // Not until this leader's view of the ISR is known fresh.
                continue;
            }
            let raft = &g.raw.raft;
            let (term, last, commit) = (
                raft.term,
                raft.raft_log.last_index(),
                raft.raft_log.committed,
            );
            let matched: BTreeMap<NodeId, u64> = raft
                .prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect();
            // raft-rs marks a peer active when the leader hears from it and
            // clears the marks every election timeout (check_quorum).
            let active: BTreeSet<NodeId> = raft
                .prs()
                .iter()
                .filter(|(id, pr)| pr.recent_active || **id == me)
                .map(|(id, _)| *id)
                .collect();
            if g.isr.as_ref().is_none_or(|(t, _)| *t != term) {
                g.isr = Some((term, IsrTracker::new(now, &policy, &meta.replicas, last)));
            }
            let (_, tracker) = g.isr.as_mut().expect("just set");
            tracker.observe(now, last, &matched, &active);
            if g.isr_acted_at
                .is_some_and(|at| now.as_millis() < at.as_millis() + retry_ms)
            {
                continue;
            }
            let change = if meta.isr.contains(&me) {
                tracker.decide(
                    now,
                    &policy,
                    me,
                    last,
                    commit,
                    &meta.replicas,
                    &meta.isr,
                    &matched,
                )
            } else if topic.unclean_leader_election {
                Some(tracker.unclean_takeover(now, &policy, me, last, &meta.replicas, &matched))
            } else {
                // Hand leadership to the most caught-up in-sync replica;
                // raft-rs brings it up to date first.
                if let Some(target) = meta
                    .isr
                    .iter()
                    .filter(|n| matched.contains_key(n))
                    .max_by_key(|n| matched[n])
                {
                    tracing::info!(
                        group = gid,
                        target,
                        "leader outside the ISR hands leadership over"
                    );
                    g.raw.transfer_leader(*target);
                    g.isr_acted_at = Some(now);
                    self.dirty.insert(*gid);
                }
                None
            };
            if let Some(change) = change {
                g.isr_acted_at = Some(now);
                self.sink.event(Event::IsrProposed {
                    group: *gid,
                    isr: change.isr.clone(),
                    reason: change.reason.clone(),
                });
                proposals.push(MetadataCommand::UpdateIsr {
                    group: *gid,
                    leader: me,
                    expected: meta.isr.clone(),
                    isr: change.isr,
                    reason: change.reason,
                });
            }
        }
        for cmd in proposals {
            if self.metadata.sm.validate(&cmd).is_err() {
                continue;
            }
            let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
            // No reply is awaited: the outcome shows in applied metadata, and
            // a lost proposal is made again after `retry_ms`.
            if self.metadata.raw.propose(vec![], data).is_ok() {
                self.dirty.insert(METADATA_GROUP);
            }
        }
    }

    /// A follower rebuilding its state asks for a snapshot at least as new
    /// as its log: a leader takes one as soon as it has applied that far
    /// (raft-rs sends it on the next heartbeat round).
    fn serve_snapshot_requests(&mut self) {
        for g in self.partitions.values_mut() {
            if !g.is_leader() {
                continue;
            }
            let wanted = g
                .raw
                .raft
                .prs()
                .iter()
                .map(|(_, pr)| pr.pending_request_snapshot)
                .max()
                .unwrap_or(0);
            if wanted > g.raw.store().snapshot_index() && g.applied >= wanted {
                g.force_compact(&mut self.sink);
                self.dirty.insert(g.id);
            }
        }
    }

    /// Each replica's lag, for partitions this node leads (only the leader
    /// knows its followers' progress).
    pub fn replica_lags(&self, group: GroupId) -> Option<Vec<ReplicaLag>> {
        let g = self.partitions.get(&group)?;
        let (_, tracker) = g.isr.as_ref().filter(|_| g.is_leader())?;
        let GroupKind::Partition(pid) = &g.kind else {
            return None;
        };
        let meta = self.metadata.sm.partition(pid).ok()?;
        let raft = &g.raw.raft;
        let matched: BTreeMap<NodeId, u64> = raft
            .prs()
            .iter()
            .map(|(id, pr)| (*id, pr.matched))
            .collect();
        let policy = IsrPolicy {
            max_lag_entries: self.config.isr_max_lag_entries,
            max_lag_ms: self.config.isr_max_lag_ms,
        };
        Some(tracker.lags(
            self.now,
            &policy,
            raft.raft_log.last_index(),
            &meta.replicas,
            &matched,
        ))
    }
}

impl<S: StateMachine> Engine<S> {
    /// The metadata leader walks the membership change in flight through
    /// its steps (see `membership::next_step`), one Raft configuration
    /// change at a time, retrying after an election timeout if a proposal
    /// got lost.
    fn maintain_membership(&mut self) {
        use crate::membership::{next_step, Step};
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
        let now = self.now;
        let me = self.config.node_id;
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let g = &mut self.metadata;
        let Some(change) = g.sm.membership_in_flight().cloned() else {
            return;
        };
        if !g.is_leader() || !g.raw.raft.commit_to_current_term() {
            return;
        }
        if g.raw.raft.has_pending_conf() {
            return;
        }
        let conf = conf_view(&g.raw);
        let raft = &g.raw.raft;
        let commit = raft.raft_log.committed;
        let caught_up = raft
            .prs()
            .get(change.node())
            .is_some_and(|pr| pr.matched >= commit && pr.recent_active);
        let best_other = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != me && conf.voters.contains(id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        let hosts_replicas =
            g.sm.partitions()
                .any(|(_, p)| p.replicas.contains(&change.node()));
        let Some(step) = next_step(&change, &conf, me, caught_up, best_other, hosts_replicas)
        else {
            return;
        };
        // A new step goes at once; the same one again only after an
        // election timeout (its proposal may have been lost).
        if self
            .membership_acted
            .as_ref()
            .is_some_and(|(s, at)| *s == step && now.as_millis() < at.as_millis() + retry_ms)
        {
            return;
        }
        let single = |change_type: ConfChangeType, node_id: NodeId| ConfChangeSingle {
            change_type,
            node_id,
            ..Default::default()
        };
        let cc = |changes: Vec<ConfChangeSingle>, transition: ConfChangeTransition| ConfChangeV2 {
            changes: changes.into(),
            transition,
            ..Default::default()
        };
        tracing::info!(%change, ?step, "membership step");
        let proposed = match step.clone() {
            Step::AwaitCatchUp(id) => {
                // The learner must start from a snapshot that lists it (the
                // configuration is in snapshots, not in the log): take one
                // once its addition has applied, unless one already does.
                let cs = g
                    .raw
                    .store()
                    .latest_snapshot()
                    .get_metadata()
                    .get_conf_state();
                if !cs.learners.contains(&id) && !cs.voters.contains(&id) {
                    g.force_compact(&mut self.sink);
                    self.dirty.insert(METADATA_GROUP);
                }
                return;
            }
            Step::AddLearner(id) => g.raw.propose_conf_change(
                vec![],
                cc(
                    vec![single(ConfChangeType::AddLearnerNode, id)],
                    ConfChangeTransition::Auto,
                ),
            ),
            Step::EnterJoint { promote, remove } => {
                let mut changes = Vec::new();
                if let Some(id) = promote {
                    changes.push(single(ConfChangeType::AddNode, id));
                }
                if let Some(id) = remove {
                    changes.push(single(ConfChangeType::RemoveNode, id));
                }
                g.raw
                    .propose_conf_change(vec![], cc(changes, ConfChangeTransition::Explicit))
            }
            Step::RemoveLearner(id) => g.raw.propose_conf_change(
                vec![],
                cc(
                    vec![single(ConfChangeType::RemoveNode, id)],
                    ConfChangeTransition::Auto,
                ),
            ),
            Step::LeaveJoint => g.raw.propose_conf_change(vec![], ConfChangeV2::default()),
            Step::TransferLeadership(to) => {
                g.raw.transfer_leader(to);
                Ok(())
            }
            Step::MoveReplicasOff(node) => {
                // One partition at a time: wait for a move in flight.
                if g.sm
                    .partitions()
                    .any(|(_, p)| p.moving.is_some_and(|m| m.from == node))
                {
                    return;
                }
                let Some(group) =
                    g.sm.partitions()
                        .find(|(_, p)| p.replicas.contains(&node))
                        .map(|(_, p)| p.group)
                else {
                    return;
                };
                let Some(to) = g.sm.move_target(group, node) else {
                    tracing::warn!(group, node, "no node can take this replica");
                    return;
                };
                let cmd = MetadataCommand::BeginReplicaMove {
                    group,
                    from: node,
                    to,
                };
                if g.sm.validate(&cmd).is_err() {
                    return;
                }
                let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                g.raw.propose(vec![], data)
            }
            Step::Finish => {
                let cmd = MetadataCommand::FinishMembershipChange { change };
                let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                g.raw.propose(vec![], data)
            }
        };
        if let Err(e) = proposed {
            tracing::warn!("membership step not proposed: {e}");
        }
        self.membership_acted = Some((step, now));
        self.dirty.insert(METADATA_GROUP);
    }
}

impl<S: StateMachine> Engine<S> {
    /// Partition leaders carry out the replica moves recorded in metadata
    /// (see `membership::next_move_step`).
    fn maintain_moves(&mut self) {
        use crate::membership::{next_move_step, Step};
        use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
        let now = self.now;
        let me = self.config.node_id;
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let mut finished = Vec::new();
        for (gid, g) in self.partitions.iter_mut() {
            if !g.is_leader() || g.metadata_fresh_term != Some(g.raw.raft.term) {
                continue;
            }
            let Some((_, meta)) = self.metadata.sm.partition_of_group(*gid) else {
                continue;
            };
            let Some(mv) = meta.moving else {
                continue;
            };
            if !g.raw.raft.commit_to_current_term() || g.raw.raft.has_pending_conf() {
                continue;
            }
            let conf = conf_view(&g.raw);
            let raft = &g.raw.raft;
            let commit = raft.raft_log.committed;
            let caught_up = raft
                .prs()
                .get(mv.to)
                .is_some_and(|pr| pr.matched >= commit && pr.recent_active);
            let best_other = raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != me && **id != mv.from && conf.voters.contains(id))
                .max_by_key(|(_, pr)| pr.matched)
                .map(|(id, _)| *id);
            let step = next_move_step(mv.from, mv.to, &conf, me, caught_up, best_other);
            if g.move_acted
                .as_ref()
                .is_some_and(|(s, at)| *s == step && now.as_millis() < at.as_millis() + retry_ms)
            {
                continue;
            }
            let single = |change_type: ConfChangeType, node_id: NodeId| ConfChangeSingle {
                change_type,
                node_id,
                ..Default::default()
            };
            let cc =
                |changes: Vec<ConfChangeSingle>, transition: ConfChangeTransition| ConfChangeV2 {
                    changes: changes.into(),
                    transition,
                    ..Default::default()
                };
            let proposed = match step.clone() {
                Step::AwaitCatchUp(id) => {
                    let cs = g
                        .raw
                        .store()
                        .latest_snapshot()
                        .get_metadata()
                        .get_conf_state();
                    if !cs.learners.contains(&id) && !cs.voters.contains(&id) {
                        g.force_compact(&mut self.sink);
                        self.dirty.insert(*gid);
                    }
                    continue;
                }
                Step::AddLearner(id) => g.raw.propose_conf_change(
                    vec![],
                    cc(
                        vec![single(ConfChangeType::AddLearnerNode, id)],
                        ConfChangeTransition::Auto,
                    ),
                ),
                Step::EnterJoint { promote, remove } => {
                    let mut changes = Vec::new();
                    if let Some(id) = promote {
                        changes.push(single(ConfChangeType::AddNode, id));
                    }
                    if let Some(id) = remove {
                        changes.push(single(ConfChangeType::RemoveNode, id));
                    }
                    g.raw
                        .propose_conf_change(vec![], cc(changes, ConfChangeTransition::Explicit))
                }
                Step::LeaveJoint => g.raw.propose_conf_change(vec![], ConfChangeV2::default()),
                Step::TransferLeadership(to) => {
                    g.raw.transfer_leader(to);
                    Ok(())
                }
                Step::Finish => {
                    finished.push(MetadataCommand::FinishReplicaMove {
                        group: *gid,
                        from: mv.from,
                        to: mv.to,
                    });
                    Ok(())
                }
                Step::RemoveLearner(_) | Step::MoveReplicasOff(_) => continue,
            };
            tracing::info!(group = gid, ?step, "replica move step");
            if let Err(e) = proposed {
                tracing::warn!(group = gid, "replica move step not proposed: {e}");
            }
            g.move_acted = Some((step, now));
            self.dirty.insert(*gid);
        }
        for cmd in finished {
            if self.metadata.sm.validate(&cmd).is_ok() {
                let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                if self.metadata.raw.propose(vec![], data).is_ok() {
                    self.dirty.insert(METADATA_GROUP);
                }
            }
        }
    }
}

fn conf_view(raw: &RawNode<GroupStorage>) -> crate::membership::ConfView {
    // The applied configuration (kept in storage as each change applies).
    let cs = raw.store().conf_state();
    crate::membership::ConfView {
        voters: cs.voters.iter().copied().collect(),
        learners: cs
            .learners
            .iter()
            .chain(cs.learners_next.iter())
            .copied()
            .collect(),
        outgoing: cs.voters_outgoing.iter().copied().collect(),
    }
}

/// Voters the leader heard from within the last election timeout (itself
/// included).
fn alive_voters(raw: &RawNode<GroupStorage>) -> BTreeSet<NodeId> {
    let raft = &raw.raft;
    raft.prs()
        .iter()
        .filter(|(id, pr)| **id == raft.id || pr.recent_active)
        .map(|(id, _)| *id)
        .collect()
}

fn check_pending(group: GroupId, pending: usize, max: usize) -> Result<(), Error> {
    if pending >= max {
        return Err(Error::Busy {
            group,
            pending,
            max,
        });
    }
    Ok(())
}

fn inconsistent(reason: impl Into<String>) -> ConfigError {
    ConfigError::InconsistentRecovery {
        reason: reason.into(),
    }
}

fn new_raw(
    config: &EngineConfig,
    logger: &slog::Logger,
    group: GroupId,
    storage: GroupStorage,
    applied: u64,
) -> Result<RawNode<GroupStorage>, ConfigError> {
    let rc = raft::Config {
        id: config.node_id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        applied,
        max_size_per_msg: config.max_size_per_msg_bytes,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        // Planted bug (simulation builds only): no pre-vote.
        pre_vote: !crate::planted::active(crate::planted::Bug::NoPreVote),
        read_only_option: if config.lease_reads {
            raft::ReadOnlyOption::LeaseBased
        } else {
            raft::ReadOnlyOption::Safe
        },
        ..Default::default()
    };
    let logger = logger.new(slog::o!("group" => group));
    Ok(RawNode::new(&rc, storage, &logger)?)
}

fn status_of<M, Q>(g: &Group<M, Q>) -> GroupStatus {
    let raft = &g.raw.raft;
    GroupStatus {
        group: g.id,
        kind: g.kind.clone(),
        role: Role::from(raft.state),
        term: raft.term,
        vote: raft.vote,
        leader: g.leader_hint(),
        commit: raft.raft_log.committed,
        applied: g.applied,
        last_index: raft.raft_log.last_index(),
        snapshot_index: g.raw.store().snapshot_index(),
        voters: {
            let mut v: Vec<NodeId> = raft.prs().conf().voters().ids().iter().collect();
            v.sort_unstable();
            v
        },
        state: None,
        repairing: g.repair.clone(),
    }
}
