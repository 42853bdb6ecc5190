//! One Raft group hosted by the engine: a raft-rs `RawNode` over in-memory
//! storage, the state machine it drives, and the requests waiting on it.
//!
//! `handle_ready` is where raft-rs's async-ready contract is honoured:
//! snapshot, entries and hard state go to storage and into the persist batch;
//! messages that depend on them are held until the batch is durable;
//! committed entries (always already durable locally, raft-rs guarantees it)
//! are applied and answered.

use crate::error::Error;
use crate::metadata::{MetadataCommand, MetadataState};
use crate::output::{Event, GroupMessage, Output, Response};
use crate::persist::GroupUpdate;
use crate::read_index::ReadQueue;
use crate::state_machine::{StateError, StateMachine};
use crate::storage::GroupStorage;
use crate::types::{GroupId, GroupKind, NodeId, RequestId, Role, Time};
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Snapshot};
use raft::{RawNode, StateRole};
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};

/// The state machine side of a group, as the group sees it.
pub(crate) trait GroupStateMachine<S: StateMachine> {
    /// Applies a committed command entry.
    fn apply_data(&mut self, group: GroupId, index: u64, data: &[u8])
        -> Result<Response<S>, Error>;
    /// Notes an applied entry that carried no command.
    fn note_applied(&mut self, _index: u64) {}
    fn snapshot_data(&mut self) -> Vec<u8>;
    fn restore_data(&mut self, index: u64, data: &[u8]) -> Result<(), StateError>;
    /// See [`StateMachine::take_io`]. The metadata needs no storage work.
    fn take_io(&mut self) -> Vec<S::Io> {
        Vec::new()
    }
    /// See [`StateMachine::fingerprint`]. The metadata is compared whole.
    fn fingerprint(&self) -> Option<u64> {
        None
    }
}

impl<S: StateMachine> GroupStateMachine<S> for MetadataState {
    fn apply_data(
        &mut self,
        group: GroupId,
        index: u64,
        data: &[u8],
    ) -> Result<Response<S>, Error> {
        match postcard::from_bytes::<MetadataCommand>(data) {
            Ok(cmd) => self.apply(index, cmd).map(Response::Metadata),
            Err(e) => {
                self.note_applied_index(index);
                Err(Error::CorruptCommand {
                    group,
                    index,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn note_applied(&mut self, index: u64) {
        self.note_applied_index(index);
    }

    fn snapshot_data(&mut self) -> Vec<u8> {
        self.snapshot()
    }

    fn restore_data(&mut self, index: u64, data: &[u8]) -> Result<(), StateError> {
        *self = MetadataState::restore(index, data).map_err(StateError::Corrupt)?;
        Ok(())
    }
}

/// A partition's state machine inside a group.
pub(crate) struct PartitionSm<S>(pub S);

impl<S: StateMachine> GroupStateMachine<S> for PartitionSm<S> {
    fn apply_data(
        &mut self,
        group: GroupId,
        index: u64,
        data: &[u8],
    ) -> Result<Response<S>, Error> {
        match postcard::from_bytes::<S::Command>(data) {
            Ok(cmd) => Ok(Response::Applied(self.0.apply(index, cmd))),
            Err(e) => Err(Error::CorruptCommand {
                group,
                index,
                reason: e.to_string(),
            }),
        }
    }

    fn snapshot_data(&mut self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore_data(&mut self, index: u64, data: &[u8]) -> Result<(), StateError> {
        self.0.restore(index, data)
    }

    fn take_io(&mut self) -> Vec<S::Io> {
        self.0.take_io()
    }

    fn fingerprint(&self) -> Option<u64> {
        self.0.fingerprint()
    }
}

/// A proposal waiting to be applied. `request_id` is `None` for proposals
/// the engine makes itself.
#[derive(Debug)]
struct Pending {
    index: u64,
    term: u64,
    request_id: Option<RequestId>,
}

/// Where the outputs of ready handling go. One per engine, drained into a
/// persist batch and sends at the end of every input.
pub(crate) struct Sink<S: StateMachine> {
    pub updates: Vec<GroupUpdate>,
    pub must_sync: bool,
    /// `(group, ready number)` covered by the batch being built.
    pub readies: Vec<(GroupId, u64)>,
    /// Messages that may leave now.
    pub send_now: Vec<(NodeId, GroupMessage)>,
    /// Messages that may leave only once the batch being built is durable.
    pub send_after_persist: Vec<(NodeId, GroupMessage)>,
    pub outputs: VecDeque<Output<S>>,
    pub compact_threshold: u64,
    pub compact_threshold_bytes: u64,
    pub emit_apply_events: bool,
    /// Log index of the entry behind each proposal reply gathered this
    /// input (produce acknowledgements wait for in-sync replicas to hold
    /// that index).
    pub reply_index: BTreeMap<RequestId, u64>,
    /// State machines of dropped groups, destroyed once the batch that
    /// records the drop is durable: destroyed before, a crash would leave
    /// the WAL naming a group whose files are gone.
    pub to_destroy: Vec<(GroupId, S)>,
    /// The ticket of the next [`Output::StateIo`].
    pub next_io_ticket: u64,
}

/// The request id of the engine's own reads (metadata freshness barriers):
/// their outcomes never reach the driver.
pub(crate) const INTERNAL_REQUEST: RequestId = 0;

impl<S: StateMachine> Sink<S> {
    pub fn reply(&mut self, request_id: RequestId, result: Result<Response<S>, Error>) {
        if request_id == INTERNAL_REQUEST {
            return;
        }
        self.outputs.push_back(Output::Reply { request_id, result });
    }

    pub fn event(&mut self, event: Event) {
        self.outputs.push_back(Output::Event(event));
    }

    /// Hands a group's storage work to the driver, after all its earlier
    /// work. Returns the ticket whose completion covers it (`None`: there
    /// was none). Work joins the group's previous output when nothing came
    /// between them, unless `fresh`: then its ticket names exactly it (and
    /// what may join it later), so the engine can wait for it or tell
    /// outcomes from before it apart.
    pub fn state_io(&mut self, group: GroupId, ops: Vec<S::Io>, fresh: bool) -> Option<u64> {
        if ops.is_empty() {
            return None;
        }
        if !fresh {
            if let Some(Output::StateIo {
                group: g,
                ticket,
                ops: queued,
            }) = self.outputs.back_mut()
            {
                if *g == group {
                    queued.extend(ops);
                    return Some(*ticket);
                }
            }
        }
        let ticket = self.next_io_ticket;
        self.next_io_ticket += 1;
        self.outputs
            .push_back(Output::StateIo { group, ticket, ops });
        Some(ticket)
    }
}

/// What the engine last saw of a group, to notice changes raft-rs makes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Observed {
    term: u64,
    role: StateRole,
    leader: u64,
    election_timeout: usize,
}

/// What a group's leader keeps beyond Raft, by group kind: nothing for the
/// metadata group, the partition leader's duties for partitions.
pub(crate) trait Duties: Default {
    /// This node no longer leads the group (or never did).
    fn leadership_lost(&mut self) {}
}

impl Duties for () {}

pub(crate) struct Group<M, Q, D = ()> {
    pub id: GroupId,
    pub kind: GroupKind,
    pub raw: RawNode<GroupStorage>,
    pub sm: M,
    /// Highest index applied to `sm` (entries without a command included).
    pub applied: u64,
    /// Bytes of entries applied since the last snapshot.
    applied_bytes_since_snapshot: u64,
    pending: VecDeque<Pending>,
    /// ReadIndex reads (leader and follower), batched per round.
    pub reads: ReadQueue<Q>,
    observed: Option<Observed>,
    /// This node applied a configuration of this group without itself,
    /// after one with itself.
    pub removed: bool,
    /// A configuration of this incarnation listed this node. A replica
    /// moving in starts unlisted and may replay older configurations
    /// without itself (from a snapshot taken before it was added, and the
    /// entries after it): those do not remove it.
    listed: bool,
    /// The engine reconciled its groups since `removed` was last set.
    pub removal_seen: bool,
    /// What the leader keeps beyond Raft (see [`Duties`]).
    pub duties: D,
    /// Why the state machine is being rebuilt from a leader's snapshot:
    /// until one installs, committed entries are not applied (there is no
    /// state to apply them to), reads and produces are refused, and a leader
    /// hands leadership on.
    pub repair: Option<String>,
    /// A snapshot taken and waiting for its storage work (the ticket) to
    /// make it durable before the log is compacted behind it.
    compacting: Option<(u64, Snapshot)>,
    /// The ticket of the storage work that last reset the state machine
    /// (recovery, a snapshot install, a repair): outcomes of earlier work
    /// describe state that no longer exists and are ignored.
    pub io_reset_ticket: u64,
    /// When a repair whose clearing failed tries again.
    pub reset_due: Option<Time>,
    /// When this replica last heard from the leader it follows, or led
    /// (the engine's start for a recovered group): a voter that metadata
    /// no longer places here and that hears from no leader is an orphan
    /// (it missed its own removal).
    pub leader_seen_at: Option<Time>,
    /// Which voter a rebuilding leader offers leadership to next.
    pub handoff_turn: usize,
    /// Quiesced (not ticking; see `engine::quiesce`), with its last index
    /// when it quiesced.
    pub quiesced: Option<u64>,
    /// When this follower last asked its group to wake (see
    /// `engine::quiesce::WAKE_CTX`).
    pub wake_asked_at: Option<Time>,
}

impl<M, Q, D: Duties> Group<M, Q, D> {
    pub fn new(
        id: GroupId,
        kind: GroupKind,
        raw: RawNode<GroupStorage>,
        sm: M,
        applied: u64,
    ) -> Self {
        let cs = raw.store().conf_state();
        let me = raw.raft.id;
        let listed = cs.voters.contains(&me)
            || cs.learners.contains(&me)
            || cs.voters_outgoing.contains(&me);
        Group {
            id,
            kind,
            raw,
            sm,
            applied,
            applied_bytes_since_snapshot: 0,
            pending: VecDeque::new(),
            reads: ReadQueue::default(),
            observed: None,
            removed: false,
            listed,
            removal_seen: false,
            duties: D::default(),
            repair: None,
            compacting: None,
            io_reset_ticket: 0,
            reset_due: None,
            handoff_turn: 0,
            leader_seen_at: None,
            quiesced: None,
            wake_asked_at: None,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_hint(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn reads_count(&self) -> usize {
        self.reads.len()
    }

    /// Proposes `data`; on success the request waits for its entry to apply.
    pub fn propose<S: StateMachine>(
        &mut self,
        data: Vec<u8>,
        request_id: Option<RequestId>,
        sink: &mut Sink<S>,
    ) -> Result<(), Error> {
        let before = self.raw.raft.raft_log.last_index();
        if self.raw.propose(vec![], data).is_err() || self.raw.raft.raft_log.last_index() == before
        {
            return Err(Error::ProposalDropped { group: self.id });
        }
        let index = self.raw.raft.raft_log.last_index();
        // Proposals from an earlier term of ours at or past this index were
        // truncated away before we led again: a leader's log holds every
        // committed entry, so they never committed.
        while self.pending.back().is_some_and(|p| p.index >= index) {
            let p = self.pending.pop_back().expect("checked non-empty");
            debug_assert!(
                p.term < self.raw.raft.term,
                "same-term proposals never overlap"
            );
            if let Some(rid) = p.request_id {
                sink.reply(rid, Err(Error::ProposalDropped { group: self.id }));
            }
        }
        self.pending.push_back(Pending {
            index,
            term: self.raw.raft.term,
            request_id,
        });
        Ok(())
    }

    /// Starts a ReadIndex round for the queued reads, if none is in flight;
    /// `ctx` must be unique. Returns whether it did.
    pub fn start_read_round(&mut self, ctx: Vec<u8>, timeout_ms: u64, now: Time) -> bool {
        // A leader drops a read index request until it has committed an
        // entry of its term (raft-rs answers nothing; the round would
        // wait out its whole timeout, an election timeout, right after
        // every leadership change). This replica sees that commit too
        // (its commit index reaches an entry of the current term): start
        // the round only then.
        let raft = &self.raw.raft;
        if raft.raft_log.term(raft.raft_log.committed).ok() != Some(raft.term) {
            return false;
        }
        if self.reads.start_round(ctx.clone(), timeout_ms, now) {
            self.raw.read_index(ctx);
            return true;
        }
        false
    }

    /// Fails reads past their deadline with a retriable error.
    pub fn expire_reads<S: StateMachine>(&mut self, now: Time, sink: &mut Sink<S>) {
        for rid in self.reads.expire(now) {
            sink.reply(rid, Err(Error::ReadTimeout { group: self.id }));
        }
    }

    /// Notices term, role and leader changes: reports them, fails reads a
    /// deposed leader can no longer confirm, and replaces the election
    /// timeout raft-rs drew from its thread RNG with one from the engine's
    /// seeded RNG (raft-rs's draw is not seeded, not even under madsim), so a
    /// seed decides elections.
    pub fn observe<S: StateMachine, R: rand::Rng>(
        &mut self,
        rng: &mut R,
        election_ticks: usize,
        sink: &mut Sink<S>,
    ) {
        let raft = &self.raw.raft;
        let now = Observed {
            term: raft.term,
            role: raft.state,
            leader: raft.leader_id,
            election_timeout: raft.randomized_election_timeout(),
        };
        let Some(prev) = self.observed else {
            self.reseed_timeout(rng, election_ticks);
            return;
        };
        // raft-rs redraws the timeout on every reset, which also zeroes
        // `election_elapsed`; its draw may equal the previous value (about
        // one time in `election_ticks`), so the draw alone cannot tell that
        // a reset happened, and reseeding only on a visible change would
        // let raft-rs's unseeded RNG decide whether the engine's RNG
        // advances. Reseeding whenever the elapsed count is zero (resets,
        // and followers hearing their leader) is a function of the run
        // alone.
        let reset = raft.election_elapsed == 0;
        if prev == now && !reset {
            return;
        }
        let changed = (prev.term, prev.role, prev.leader) != (now.term, now.role, now.leader);
        if changed || reset || prev.election_timeout != now.election_timeout {
            self.reseed_timeout(rng, election_ticks);
        }
        if changed {
            sink.event(Event::RoleChanged {
                group: self.id,
                term: now.term,
                role: Role::from(now.role),
                leader: self.leader_hint(),
            });
        }
        if changed {
            // The round in flight was asked of (or confirmed by) a leader
            // that may be gone: its answer may never come.
            let err = if prev.role == StateRole::Leader && now.role != StateRole::Leader {
                Error::NotLeader {
                    group: self.id,
                    leader_hint: self.leader_hint(),
                }
            } else {
                Error::ReadTimeout { group: self.id }
            };
            for rid in self.reads.abandon_round() {
                sink.reply(rid, Err(err.clone()));
            }
        }
        if now.role != StateRole::Leader {
            self.duties.leadership_lost();
        }
    }

    fn reseed_timeout<R: rand::Rng>(&mut self, rng: &mut R, election_ticks: usize) {
        let t = rng.gen_range(election_ticks..2 * election_ticks);
        self.raw.raft.set_randomized_election_timeout(t);
        let raft = &self.raw.raft;
        self.observed = Some(Observed {
            term: raft.term,
            role: raft.state,
            leader: raft.leader_id,
            election_timeout: t,
        });
    }

    /// Fails every waiting request: the group is going away here.
    /// `proposals` answers the proposals in flight, `reads` the reads.
    pub fn fail_all<S: StateMachine>(
        &mut self,
        sink: &mut Sink<S>,
        proposals: Error,
        reads: Error,
    ) {
        for p in self.pending.drain(..) {
            if let Some(rid) = p.request_id {
                sink.reply(rid, Err(proposals.clone()));
            }
        }
        for rid in self.reads.drain() {
            sink.reply(rid, Err(reads.clone()));
        }
    }

    /// Handles one raft-rs `Ready`, if there is one. Returns whether there
    /// was.
    pub fn handle_ready<S: StateMachine>(&mut self, sink: &mut Sink<S>) -> bool
    where
        M: GroupStateMachine<S>,
    {
        if !self.raw.has_ready() {
            return false;
        }
        let group = self.id;
        let mut rd = self.raw.ready();

        let mut snapshots_sent = Vec::new();
        for m in rd.take_messages() {
            push_message(sink, group, m, false, &mut snapshots_sent);
        }

        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(snap, sink);
        }
        if !rd.entries().is_empty() {
            let entries = rd.take_entries();
            self.raw.mut_store().append(&entries);
            sink.updates.push(GroupUpdate::Entries { group, entries });
        }
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs.clone());
            sink.updates.push(GroupUpdate::HardState {
                group,
                hard_state: hs.clone(),
            });
        }
        if rd.must_sync() {
            sink.must_sync = true;
        }
        for rs in rd.take_read_states() {
            self.reads.confirmed(&rs.request_ctx, rs.index);
        }
        let committed = rd.take_committed_entries();
        for m in rd.take_persisted_messages() {
            push_message(sink, group, m, true, &mut snapshots_sent);
        }
        sink.readies.push((group, rd.number()));
        self.raw.advance_append_async(rd);
        for to in snapshots_sent {
            // Messages are fire-and-forget: tell raft-rs the snapshot went
            // out so the follower's progress leaves the paused snapshot
            // state. If it was lost, the follower's rejection makes the
            // leader send it again.
            self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
        }

        if self.repair.is_none() {
            for entry in committed {
                self.apply_entry(entry, sink);
            }
            sink.state_io(group, self.sm.take_io(), false);
        }
        self.sync_applied();
        self.maybe_compact(sink);
        true
    }

    /// Tells raft-rs how far the state machine has applied. After a
    /// snapshot install that is only allowed once the snapshot is durable,
    /// so this runs again after every persist completion.
    pub fn sync_applied(&mut self) {
        let log = &self.raw.raft.raft_log;
        let target = self.applied.min(log.persisted).min(log.committed);
        if target > log.applied {
            self.raw.advance_apply_to(target);
        }
    }

    fn install_snapshot<S: StateMachine>(&mut self, snap: Snapshot, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        let index = snap.get_metadata().index;
        // The engine checked the data decodes before stepping the message
        // that carried it, so failing here is an engine bug.
        if let Err(e) = self.sm.restore_data(index, &snap.data) {
            panic!(
                "group {}: snapshot at {index} passed validation but does not restore: {e}",
                self.id
            );
        }
        // Storage the snapshot names is checked by this work; a failure
        // comes back as an IO error and starts a repair.
        self.io_reset_ticket = sink.next_io_ticket;
        let ops = self.sm.take_io();
        sink.state_io(self.id, ops, true);
        self.compacting = None;
        let cs = snap.get_metadata().get_conf_state();
        let me = self.raw.raft.id;
        if cs.voters.contains(&me) || cs.learners.contains(&me) || cs.voters_outgoing.contains(&me)
        {
            self.listed = true;
        }
        self.raw.mut_store().apply_snapshot(snap.clone());
        self.applied = index;
        if let Some(why) = self.repair.take() {
            tracing::info!(
                group = self.id,
                index,
                "state rebuilt from the leader's snapshot (was: {why})"
            );
        }
        self.applied_bytes_since_snapshot = 0;
        while self.pending.front().is_some_and(|p| p.index <= index) {
            let p = self.pending.pop_front().expect("checked non-empty");
            if let Some(rid) = p.request_id {
                sink.reply(rid, Err(Error::OutcomeUnknown { group: self.id }));
            }
        }
        sink.updates.push(GroupUpdate::Snapshot {
            group: self.id,
            snapshot: snap,
        });
        sink.must_sync = true;
        sink.event(Event::SnapshotInstalled {
            group: self.id,
            index,
            state: self.sm.fingerprint(),
        });
    }

    fn apply_entry<S: StateMachine>(&mut self, entry: Entry, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        let (index, term) = (entry.index, entry.term);
        if index <= self.applied {
            return;
        }
        self.applied_bytes_since_snapshot += entry.data.len() as u64;
        debug_assert_eq!(
            index,
            self.applied + 1,
            "entries apply in order, none skipped"
        );
        let result = match entry.get_entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => {
                self.sm.note_applied(index);
                None
            }
            EntryType::EntryNormal => {
                let r = self.sm.apply_data(self.id, index, &entry.data);
                if let Ok(Response::Metadata(m)) = &r {
                    for e in m.events() {
                        sink.event(e);
                    }
                }
                Some(r)
            }
            EntryType::EntryConfChange => {
                self.sm.note_applied(index);
                let cc = protobuf::Message::parse_from_bytes(&entry.data)
                    .map_err(|e| e.to_string())
                    .and_then(|cc: ConfChange| {
                        self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                    });
                self.after_conf_change(cc, sink);
                None
            }
            EntryType::EntryConfChangeV2 => {
                self.sm.note_applied(index);
                let cc = protobuf::Message::parse_from_bytes(&entry.data)
                    .map_err(|e| e.to_string())
                    .and_then(|cc: ConfChangeV2| {
                        self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                    });
                self.after_conf_change(cc, sink);
                None
            }
        };
        self.applied = index;
        if sink.emit_apply_events {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (entry.get_entry_type() as i32).hash(&mut h);
            entry.data.hash(&mut h);
            sink.event(Event::EntryApplied {
                group: self.id,
                index,
                term,
                digest: h.finish(),
                state: self.sm.fingerprint(),
            });
        }
        while self.pending.front().is_some_and(|p| p.index < index) {
            // Only reachable if a proposal's entry was never applied here,
            // which raft rules out; fail it rather than leave it hanging.
            let p = self.pending.pop_front().expect("checked non-empty");
            if let Some(rid) = p.request_id {
                sink.reply(rid, Err(Error::OutcomeUnknown { group: self.id }));
            }
        }
        if self.pending.front().is_some_and(|p| p.index == index) {
            let p = self.pending.pop_front().expect("checked non-empty");
            if let Some(rid) = p.request_id {
                let reply = if p.term != term {
                    Err(Error::ProposalDropped { group: self.id })
                } else {
                    result.unwrap_or(Err(Error::ProposalDropped { group: self.id }))
                };
                sink.reply_index.insert(rid, index);
                sink.reply(rid, reply);
            }
        }
    }

    fn after_conf_change<S: StateMachine>(
        &mut self,
        result: Result<raft::eraftpb::ConfState, String>,
        sink: &mut Sink<S>,
    ) {
        match result {
            Ok(cs) => {
                sink.event(Event::ConfChanged {
                    group: self.id,
                    voters: cs.voters.clone(),
                    outgoing: cs.voters_outgoing.clone(),
                    learners: cs.learners.clone(),
                });
                let me = self.raw.raft.id;
                let listed = cs.voters.contains(&me)
                    || cs.learners.contains(&me)
                    || cs.voters_outgoing.contains(&me)
                    || cs.learners_next.contains(&me);
                if listed {
                    // Added back (a replica moving in again): it is a
                    // member, with the state it kept.
                    self.listed = true;
                    self.removed = false;
                    self.removal_seen = false;
                } else if self.listed && !cs.voters.is_empty() {
                    self.removed = true;
                }
                self.raw.mut_store().set_conf_state(cs)
            }
            Err(e) => tracing::error!(
                group = self.id,
                "committed configuration change not applied: {e}"
            ),
        }
    }

    fn maybe_compact<S: StateMachine>(&mut self, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        let store = self.raw.store();
        if self.applied < store.snapshot_index() + sink.compact_threshold
            && self.applied_bytes_since_snapshot < sink.compact_threshold_bytes
        {
            return;
        }
        self.compact_now(sink);
    }

    /// Snapshots the applied state and compacts the log behind it, whatever
    /// the thresholds (a joining learner must start from a snapshot).
    pub fn force_compact<S: StateMachine>(&mut self, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        self.compact_now(sink);
    }

    fn compact_now<S: StateMachine>(&mut self, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        let store = self.raw.store();
        if self.applied == store.snapshot_index() {
            return;
        }
        if self.compacting.is_some() || self.repair.is_some() {
            return;
        }
        self.applied_bytes_since_snapshot = 0;
        let term = store
            .term_of(self.applied)
            .expect("applied entries are in the log until compacted");
        let conf_state = store.conf_state().clone();
        let mut snap = Snapshot {
            data: self.sm.snapshot_data().into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(conf_state);
        let ops = self.sm.take_io();
        match sink.state_io(self.id, ops, true) {
            Some(_) if crate::planted::active(crate::planted::Bug::CompactBeforeStateSynced) => {
                // Planted bug (simulation builds only): compacts before
                // the snapshot's files are durable.
                self.compact_to(snap, sink)
            }
            // Compacted once the work that makes the snapshot durable ran.
            Some(ticket) => self.compacting = Some((ticket, snap)),
            None => self.compact_to(snap, sink),
        }
    }

    /// The storage work behind `ticket` ran: a snapshot waiting for it now
    /// compacts the log.
    pub fn state_io_done<S: StateMachine>(&mut self, ticket: u64, sink: &mut Sink<S>) {
        if self.compacting.as_ref().is_some_and(|(t, _)| *t <= ticket) {
            let (_, snap) = self.compacting.take().expect("checked above");
            self.compact_to(snap, sink);
        }
    }

    /// Replaces a failed state machine with `sm` (cleared), which waits for
    /// the leader's snapshot: nothing applies or is served until then.
    pub fn reset_state<S: StateMachine>(&mut self, sm: M, why: String, sink: &mut Sink<S>)
    where
        M: GroupStateMachine<S>,
    {
        self.sm = sm;
        self.repair = Some(why);
        self.compacting = None;
        self.io_reset_ticket = sink.next_io_ticket;
        let ops = self.sm.take_io();
        sink.state_io(self.id, ops, true);
    }

    /// Whether a snapshot waits for its storage work.
    /// A leader whose follower needs a snapshot that the stored one cannot
    /// serve (taken before the follower was added, which then lost what
    /// it had since, to a cut WAL): a fresh one is due, if there is
    /// anything applied past the stored one.
    pub fn needs_fresh_snapshot(&self) -> bool {
        let store = self.raw.store();
        let snapshot_index = store.snapshot_index();
        self.is_leader()
            && self.applied > snapshot_index
            && !self.is_compacting()
            && self.raw.raft.prs().iter().any(|(id, pr)| {
                *id != self.raw.raft.id
                    && pr.next_idx <= snapshot_index
                    && !store.snapshot_lists(*id)
            })
    }

    pub fn is_compacting(&self) -> bool {
        self.compacting.is_some()
    }

    fn compact_to<S: StateMachine>(&mut self, snap: Snapshot, sink: &mut Sink<S>) {
        let index = snap.get_metadata().index;
        let store = self.raw.store();
        // A snapshot installed meanwhile may have replaced the log.
        if index <= store.snapshot_index() || store.term_of(index) != Some(snap.get_metadata().term)
        {
            return;
        }
        self.raw.mut_store().compact(snap.clone());
        sink.updates.push(GroupUpdate::Snapshot {
            group: self.id,
            snapshot: snap,
        });
        sink.event(Event::SnapshotCreated {
            group: self.id,
            index,
        });
    }

    /// Serves confirmed reads whose index has been applied.
    pub fn serve_reads<S: StateMachine>(
        &mut self,
        sink: &mut Sink<S>,
        serve: impl Fn(&M, &Q) -> Result<Response<S>, Error>,
    ) {
        let applied = if crate::planted::active(crate::planted::Bug::FollowerReadEarly)
            && !self.is_leader()
        {
            // Planted bug (test builds only): a follower answers as soon as
            // the leader confirms, before applying up to the read index.
            u64::MAX
        } else {
            self.applied
        };
        for (rid, q, read_index) in self.reads.ready(applied) {
            if sink.emit_apply_events && rid != INTERNAL_REQUEST {
                sink.event(Event::ReadServed {
                    group: self.id,
                    read_index,
                });
            }
            sink.reply(rid, serve(&self.sm, &q));
        }
    }
}

fn push_message<S: StateMachine>(
    sink: &mut Sink<S>,
    group: GroupId,
    message: raft::eraftpb::Message,
    after_persist: bool,
    snapshots_sent: &mut Vec<NodeId>,
) {
    let to = message.to;
    if message.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
        snapshots_sent.push(to);
    }
    // Planted bug (simulation builds only): votes leave before they are
    // durable.
    let after_persist = after_persist
        && !(crate::planted::active(crate::planted::Bug::VoteReplyBeforePersist)
            && matches!(
                message.get_msg_type(),
                raft::eraftpb::MessageType::MsgRequestVoteResponse
                    | raft::eraftpb::MessageType::MsgRequestPreVoteResponse
            ));
    let gm = GroupMessage { group, message };
    if after_persist {
        sink.send_after_persist.push((to, gm));
    } else {
        sink.send_now.push((to, gm));
    }
}
