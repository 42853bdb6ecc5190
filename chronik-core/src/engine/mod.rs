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
use crate::state_machine::{StateError, StateMachine};
use crate::storage::GroupStorage;
use crate::types::{
    GroupId, GroupKind, NodeId, PartitionId, ReadConsistency, RequestId, Role, Time, METADATA_GROUP,
};
use raft::eraftpb::{ConfState, HardState, MessageType};
use raft::RawNode;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod acks;
mod admission;
mod controllers;
mod log_repair;
pub use controllers::{MemberReplication, ReplicateNow};
mod quiesce;
mod ready;
mod recovery;

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
    /// This replica's log may have lost entries it acknowledged (a corrupt
    /// WAL record was cut away): it votes and campaigns again once it
    /// holds a commit of its leader's current term.
    pub abstaining: bool,
}

struct Inflight<S> {
    ticket: Ticket,
    readies: Vec<(GroupId, u64)>,
    held: Vec<(NodeId, GroupMessage)>,
    /// Dropped groups' state machines, destroyed once this is durable.
    destroy: Vec<(GroupId, S)>,
}

/// A partition group: its state machine, and a leader's duties.
type PartitionGroup<S> =
    Group<PartitionSm<S>, <S as StateMachine>::Query, controllers::PartitionDuties>;

/// One node's multi-raft engine. See the crate docs for the driving loop.
pub struct Engine<S: StateMachine = RecordLog> {
    config: EngineConfig,
    options: S::Options,
    rng: StdRng,
    logger: slog::Logger,
    /// Metadata reads are freshness barriers of new partition leaders: the
    /// query is the partition group waiting for one.
    metadata: Group<MetadataState, GroupId>,
    partitions: BTreeMap<GroupId, PartitionGroup<S>>,
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
    /// The membership step the metadata leader last took.
    membership_gate: controllers::StepGate,
    /// The rebalancer's state, on the metadata leader.
    rebalancer: controllers::RebalanceDuties,
    /// When this node last reported partition sizes.
    sizes_reported_at: Option<Time>,
    /// Preferred-leader transfers that came back, per group.
    preferred_backoff: BTreeMap<GroupId, controllers::PreferredBackoff>,
    /// Voters metadata no longer places here, kept while they hear from a
    /// leader (see `reconcile_groups`).
    unwanted_voters: Vec<GroupId>,
    /// Set once this node applied a configuration without itself.
    removed_reported: bool,
    /// When each peer's messages last arrived: a node is alive for
    /// membership safety checks while heard from within an election
    /// timeout. (raft-rs's own `recent_active` marks are cleared at every
    /// check-quorum round, so right after one every follower looks dead.)
    heard_from: BTreeMap<NodeId, Time>,
    /// When this node last sent each peer anything (see `quiesce`: a peer
    /// sent nothing for a heartbeat interval gets a ping).
    sent_to: BTreeMap<NodeId, Time>,
    /// Produces in flight, checked against the ISR again before their
    /// acknowledgement leaves (`NOT_ENOUGH_REPLICAS_AFTER_APPEND`).
    produce_checks: BTreeMap<RequestId, PartitionId>,
    /// Committed produces whose acknowledgement waits until at least
    /// `min_insync_replicas` members of the ISR hold their entry (bounded
    /// by `pending_proposals_max` per group, since each was a proposal).
    awaiting_isr: Vec<AwaitingIsr<S>>,
    /// Set once the node began leaving (a graceful shutdown).
    leaving: Option<controllers::Leaving>,
    /// Per group a node in maintenance leads: transfers asked, and when
    /// it may ask again.
    handoff_backoff: BTreeMap<GroupId, (u32, Time)>,
    /// Replicas that abstain from elections until their log is repaired
    /// (see `log_repair`), with the highest commit index a leader
    /// reported to each since.
    abstaining: BTreeMap<GroupId, u64>,
    /// Groups lost whole from this node's WAL, with the term and vote each
    /// must keep if metadata places it here again.
    lost: BTreeMap<GroupId, HardState>,
    /// Groups this node dropped, with the term and vote a replica placed
    /// here again starts from (see `DurableState::retired`).
    retired: BTreeMap<GroupId, HardState>,
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
    // ----- inputs -------------------------------------------------------

    /// Advances Raft time to `now`: one tick per elapsed tick interval.
    pub fn handle_tick(&mut self, now: Time) {
        self.now = self.now.max(now);
        let interval = self.config.tick_interval_ms;
        let mut ticks = 0;
        while self.last_tick.plus_millis(interval) <= now && ticks < TICKS_PER_CALL_MAX {
            self.last_tick = self.last_tick.plus_millis(interval);
            ticks += 1;
            let hold = self.holds_elections(&self.metadata.raw) || self.abstains(METADATA_GROUP);
            controllers::tick_group(&mut self.metadata.raw, hold);
            // Quiesced groups do not tick (see `quiesce`).
            let holds: Vec<Option<bool>> = self
                .partitions
                .values()
                .map(|g| {
                    g.quiesced
                        .is_none()
                        .then(|| self.holds_elections(&g.raw) || self.abstains(g.id))
                })
                .collect();
            for (g, hold) in self.partitions.values_mut().zip(holds) {
                let Some(hold) = hold else {
                    continue;
                };
                controllers::tick_group(&mut g.raw, hold);
                if g.repair.is_none() {
                    continue;
                }
                if g.is_leader() {
                    // A replica rebuilding its state leads only when it
                    // holds more of the log than any healthy replica that
                    // could be elected (its Raft log is intact): it cannot
                    // apply or serve, so it hands leadership on, to each
                    // voter in turn (one that is rebuilding too refuses,
                    // and raft-rs gives the transfer up after an election
                    // timeout).
                    if g.raw.raft.lead_transferee.is_none() {
                        let me = g.raw.raft.id;
                        let voters: Vec<NodeId> = g
                            .raw
                            .raft
                            .prs()
                            .conf()
                            .voters()
                            .ids()
                            .iter()
                            .filter(|id| *id != me)
                            .collect();
                        if !voters.is_empty() {
                            let mut voters = voters;
                            voters.sort_unstable();
                            let to = voters[g.handoff_turn % voters.len()];
                            g.handoff_turn += 1;
                            g.raw.transfer_leader(to);
                            self.sink.event(Event::LeadershipTransfer {
                                group: g.id,
                                to,
                                reason: "rebuilding replica hands leadership on",
                            });
                        }
                    }
                } else if g.raw.raft.pending_request_snapshot == 0 {
                    // It asks the leader for a snapshot (raft-rs drops the
                    // request while no leader is known or its log ends in
                    // an older term; it is made again every tick until one
                    // is pending).
                    let _ = g.raw.request_snapshot();
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
            self.dirty.extend(
                self.partitions
                    .values()
                    .filter(|g| g.quiesced.is_none())
                    .map(|g| g.id),
            );
            self.observe_all();
            for g in self.partitions.values_mut() {
                if g.quiesced.is_none() {
                    g.expire_reads(self.now, &mut self.sink);
                }
            }
            // Barriers that timed out or were abandoned (no metadata leader,
            // or one that has not committed in its term yet) start again.
            self.metadata.reads.expire(self.now);
            if self.metadata.reads.is_empty() {
                for g in self.partitions.values_mut() {
                    if g.duties.metadata_fresh_term != Some(g.raw.raft.term) {
                        g.duties.barrier_term = None;
                    }
                }
            }
            self.retry_repairs();
            self.end_abstentions();
            self.maintain_isr();
            self.serve_snapshot_requests();
            self.maintain_membership();
            self.maintain_moves();
            self.maintain_rebalance();
            if !self.unwanted_voters.is_empty() {
                // Orphans are dropped once they have been silent long
                // enough: reconcile again to see.
                self.reconciled_at = u64::MAX;
            }
            self.report_sizes();
            self.hand_off_leadership();
            self.maintain_preferred_leaders();
            // Last: what the duties above started wakes quiesced groups.
            self.maintain_quiescence();
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
        self.heard_from.insert(from, self.now);
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
            if group != METADATA_GROUP && quiesce::is_wake_request(&message) {
                self.take_wake_request(group);
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
            if self.leaving.is_some() && message.get_msg_type() == MessageType::MsgTimeoutNow {
                tracing::debug!(from, group, "leaving: not taking leadership");
                continue;
            }
            if self.abstains(group)
                && matches!(
                    message.get_msg_type(),
                    MessageType::MsgRequestVote
                        | MessageType::MsgRequestPreVote
                        | MessageType::MsgTimeoutNow
                )
            {
                tracing::debug!(from, group, "log not repaired yet: not voting");
                continue;
            }
            if !self.abstaining.is_empty() {
                self.note_leader_commit(group, &message);
            }
            if let Some(raw) = self.raw_mut(group) {
                if !log_repair::forget_lost_progress(group, raw, &message) {
                    continue;
                }
            }
            // Anything but the quiescing heartbeat and its answer wakes a
            // quiesced group (see `quiesce`).
            let marker = quiesce::is_quiesce_marker(&message);
            if !marker && group != METADATA_GROUP {
                self.wake(group);
            }
            let quiesce_heartbeat = (marker && message.get_msg_type() == MessageType::MsgHeartbeat)
                .then_some((message.term, message.commit));
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
            // A partition replica that left may be moved back in: unless it
            // led (raft-rs dropped its own progress), it keeps stepping
            // messages, so the entries that add it again reach it.
            let removed = if group == METADATA_GROUP {
                self.metadata.removed
            } else {
                self.partitions
                    .get(&group)
                    .is_some_and(|g| g.removed && g.raw.raft.state == raft::StateRole::Leader)
            };
            if removed {
                tracing::debug!(from, group, "dropped message for a group this node left");
                continue;
            }
            // Raft ids are node ids, so a replica that moved away and back
            // is a new incarnation under an old id. It answers no vote
            // until its own configuration makes it a voter (a candidate of
            // a configuration from before it left must not count on a
            // replica that forgot its old vote), and a heartbeat from a
            // leader that still remembers the old incarnation's progress
            // commits no further than this log reaches.
            let repairing = self.abstains(group);
            if let Some(raw) = self.raw_mut(group) {
                let me = raw.raft.id;
                let cs = raw.store().conf_state();
                let voter = cs.voters.contains(&me) || cs.voters_outgoing.contains(&me);
                if matches!(
                    message.get_msg_type(),
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                ) && !voter
                {
                    tracing::debug!(from, group, "not a voter here: vote request ignored");
                    continue;
                }
                if message.get_msg_type() == MessageType::MsgHeartbeat {
                    let log = &raw.raft.raft_log;
                    let (last, committed) = (log.last_index(), log.committed);
                    if (repairing || message.commit > last) && message.term >= raw.raft.term {
                        // The leader may take this log to be longer than it
                        // is: tell it, or an idle leader never sends what
                        // is missing (see `log_repair::forget_lost_progress`).
                        let reject = log_repair::shorter_log_reply(raw, &message);
                        self.sink.send_now.push((
                            from,
                            GroupMessage {
                                group,
                                message: reject,
                            },
                        ));
                    }
                    // raft-rs commits a heartbeat's index without checking
                    // the log against the leader's: a repairing log may
                    // still hold an older term's tail the cut took the
                    // overwrite of, so only appends (which are checked)
                    // advance its commit.
                    let cap = if repairing { committed } else { last };
                    message.commit = message.commit.min(cap);
                }
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
                let from_a_leader = matches!(
                    message.get_msg_type(),
                    MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
                );
                let term = message.term;
                let r = g.raw.step(message);
                // Heard from the leader it follows (see the orphan rule in
                // `reconcile_groups`): only its leader's own messages count,
                // not the leader id raft-rs remembers (a replica removed
                // from the configuration keeps that id for ever).
                if r.is_ok()
                    && from_a_leader
                    && g.raw.raft.leader_id == from
                    && g.raw.raft.term == term
                {
                    g.leader_seen_at = Some(self.now);
                }
                r
            } else {
                // Not created here yet (metadata not applied) or deleted:
                // dropping is safe, the sender retries.
                tracing::debug!(from, group, "dropped message for a group not hosted here");
                continue;
            };
            match result {
                Err(e) => tracing::debug!(from, group, "raft refused a message: {e}"),
                Ok(()) => {
                    if let Some((term, commit)) = quiesce_heartbeat {
                        self.follow_quiescence(group, from, term, commit);
                    }
                }
            }
            self.dirty.insert(group);
        }
        self.observe_dirty();
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
        self.handle_commands(now, [(request_id, command)]);
    }

    /// Takes several commands that arrived together, in order, then
    /// handles the readies once: produces to one partition go out as one
    /// append per follower and one persist batch, instead of one each.
    pub fn handle_commands(
        &mut self,
        now: Time,
        commands: impl IntoIterator<Item = (RequestId, Command<S>)>,
    ) {
        if self.last_tick.plus_millis(self.config.tick_interval_ms) <= now {
            // Behind on ticks (the driver was stalled, a pause, a long
            // batch): catch up first, so the command meets the ISR and
            // leadership as they stand now, not as they stood before the
            // stall (seed 1853: a leader resumed after 4.7 s accepted a
            // produce with a long-gone replica still in its ISR).
            self.handle_tick(now);
        }
        self.now = self.now.max(now);
        for (request_id, command) in commands {
            if let Err(e) = self.start_command(request_id, command) {
                self.sink.reply(request_id, Err(e));
            }
        }
        self.observe_dirty();
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
                    // A leader that applied a configuration without itself
                    // has no progress of its own for raft-rs to update (it
                    // would panic): the group is finished here anyway.
                    let me = raw.raft.id;
                    if raw.raft.state == raft::StateRole::Leader && raw.raft.prs().get(me).is_none()
                    {
                        continue;
                    }
                    raw.on_persist_ready(number);
                    self.dirty.insert(group);
                }
            }
            self.sink.send_now.extend(done.held);
            for (group, sm) in done.destroy {
                let ops = sm.destroy();
                self.sink.state_io(group, ops, true);
                // A replica moving back in is created once its old files
                // are gone.
                self.reconciled_at = 0;
                self.dirty.insert(METADATA_GROUP);
            }
        }
        self.observe_dirty();
        self.process();
    }

    /// Reports how the storage work of [`Output::StateIo`] `ticket` went.
    /// Outcomes of one group arrive in ticket order. A failure turns the
    /// replica unavailable (`REPLICA_REPAIRING`, with the error as the
    /// reason) while it rebuilds its state from the leader: its Raft log is
    /// intact, so it stays a voter, but it leads nothing meanwhile.
    pub fn handle_state_io(
        &mut self,
        now: Time,
        group: GroupId,
        ticket: u64,
        result: Result<Vec<S::IoDone>, StateError>,
    ) {
        self.now = self.now.max(now);
        let Some(g) = self.partitions.get_mut(&group) else {
            return; // dropped meanwhile
        };
        if ticket < g.io_reset_ticket {
            return; // about state a reset replaced
        }
        match result {
            Ok(done) => {
                for d in done {
                    g.sm.0.io_done(d);
                }
                g.state_io_done(ticket, &mut self.sink);
            }
            Err(e) => self.start_repair(group, format!("storage failed: {e}")),
        }
        self.dirty.insert(group);
        self.observe_dirty();
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
        let status = if group == METADATA_GROUP {
            Some(status_of(&self.metadata))
        } else {
            self.partitions.get(&group).map(status_of)
        };
        status.map(|s| GroupStatus {
            abstaining: self.abstains(group),
            ..s
        })
    }

    /// Raft status of every hosted group, metadata first.
    pub fn status(&self) -> Vec<GroupStatus> {
        std::iter::once(status_of(&self.metadata))
            .chain(self.partitions.values().map(|g| GroupStatus {
                state: g.sm.0.fingerprint().filter(|_| g.repair.is_none()),
                ..status_of(g)
            }))
            .map(|s| GroupStatus {
                abstaining: self.abstains(s.group),
                ..s
            })
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

    /// This node and the peers heard from within the last election
    /// timeout.
    pub fn alive_nodes(&self) -> BTreeSet<NodeId> {
        self.heard_within(self.config.tick_interval_ms * self.config.election_ticks as u64)
    }

    /// This node and the peers heard from within two heartbeat intervals:
    /// those up and talking now (a node that restarted moments ago is not
    /// among them until it is back).
    pub fn talking_nodes(&self) -> BTreeSet<NodeId> {
        self.heard_within(
            self.config.tick_interval_ms * (2 * self.config.heartbeat_ticks as u64 + 1),
        )
    }

    fn heard_within(&self, window: u64) -> BTreeSet<NodeId> {
        self.heard_from
            .iter()
            .filter(|(_, at)| self.now.as_millis() <= at.as_millis() + window)
            .map(|(id, _)| *id)
            .chain(std::iter::once(self.config.node_id))
            .collect()
    }

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

fn status_of<M, Q, D: crate::group::Duties>(g: &Group<M, Q, D>) -> GroupStatus {
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
        abstaining: false,
    }
}

/// The context of a ReadIndex round: unique in the cluster and across this
/// node's restarts (see `EngineConfig::incarnation`), since a leader keys
/// pending rounds by context alone.
fn read_ctx(config: &EngineConfig, counter: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(24);
    ctx.extend_from_slice(&config.node_id.to_be_bytes());
    ctx.extend_from_slice(&config.incarnation.to_be_bytes());
    ctx.extend_from_slice(&counter.to_be_bytes());
    ctx
}
