//! Quiescence: a partition group with nothing to do costs nothing.
//!
//! Most partitions of a large cluster are idle most of the time, yet Raft
//! ticks every group and its leader heartbeats every follower: with 3,000
//! idle partitions that is thousands of messages a second per node. A
//! leader whose group is idle and fully replicated (every replica holds
//! and commits the whole log, no read, proposal, transfer or membership
//! change in flight, every replica's node alive) stops ticking and tells
//! its followers with one last heartbeat carrying [`QUIESCE_CTX`]; a
//! follower that holds the whole log stops ticking on it too. Nothing else
//! changes: a quiesced group steps messages, takes proposals and serves
//! reads as before.
//!
//! Waking (ticking again):
//! - any message of the group other than the quiescing heartbeat and its
//!   response (a proposal's appends, a vote request, a read round);
//! - a state that is no longer quiet, checked every tick (a proposal or a
//!   read arrived, a leadership transfer began, a follower fell behind);
//! - a node it depends on going silent: a follower wakes when its leader's
//!   node has not been heard from for an election timeout, and elects a
//!   new leader as usual; a leader wakes when a replica's node has, so its
//!   check-quorum and ISR tracking see it. Every node pings each peer it
//!   sent nothing else to within a heartbeat interval (an empty batch),
//!   so "heard from" is a per-node liveness signal, one message per peer
//!   pair instead of one per group.
//!
//! Quiescence is off with `lease_reads`: a quiesced leader does not run
//! check-quorum, which a lease read relies on.

use super::*;

/// The context of the heartbeat a leader sends when its group quiesces
/// (and of the follower's answer). raft-rs copies a heartbeat's context
/// into the response and the leader's ReadIndex ignores contexts it does
/// not have pending, so the marker rides on standard messages.
pub(in crate::engine) const QUIESCE_CTX: &[u8] = b"chronik/quiesce";

/// The context of a follower's wake request: a replica that has not heard
/// from a leader for an election timeout (a node that restarted, a replica
/// waiting out a repair without campaigning) asks its group's voters to
/// wake. A quiesced leader would otherwise never send it anything: its
/// followers' progress as it knows it says they hold the whole log. The
/// engine takes it before raft-rs (it is never stepped); a leader answers
/// with a heartbeat round, whose commit index tells a follower that lost
/// entries to say so.
pub(in crate::engine) const WAKE_CTX: &[u8] = b"chronik/wake";

/// Whether `message` is a wake request.
pub(in crate::engine) fn is_wake_request(message: &raft::eraftpb::Message) -> bool {
    message.get_msg_type() == MessageType::MsgHeartbeatResponse
        && message.context.as_ref() == WAKE_CTX
}

/// Whether `message` is a quiescing heartbeat or its response.
pub(in crate::engine) fn is_quiesce_marker(message: &raft::eraftpb::Message) -> bool {
    matches!(
        message.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    ) && message.context.as_ref() == QUIESCE_CTX
}

impl<S: StateMachine> Engine<S> {
    /// Whether idle partition groups may quiesce on this node.
    pub(in crate::engine) fn quiescence_on(&self) -> bool {
        self.config.quiesce_idle_groups && !self.config.lease_reads
    }

    /// Partition groups quiesced here (for status and tests).
    pub fn quiesced_groups(&self) -> usize {
        self.partitions
            .values()
            .filter(|g| g.quiesced.is_some())
            .count()
    }

    /// Whether a quiesced group may stay so: its state is still the quiet
    /// one it quiesced in, and the nodes it depends on are alive.
    fn stays_quiet(&self, g: &PartitionGroup<S>, alive: &BTreeSet<NodeId>) -> bool {
        if !self.quiet_state(g) {
            return false;
        }
        let raft = &g.raw.raft;
        if g.is_leader() {
            raft.prs().iter().all(|(id, _)| alive.contains(id)) && self.leader_may_rest(g)
        } else {
            crate::planted::active(crate::planted::Bug::QuiescedIgnoresDeadLeader)
                || alive.contains(&raft.leader_id)
        }
    }

    /// The state a group may be quiet in. A leader: nothing in flight, its
    /// whole log committed, applied and held by every replica. A follower:
    /// a known leader, its whole log committed, nothing in flight.
    fn quiet_state(&self, g: &PartitionGroup<S>) -> bool {
        let raft = &g.raw.raft;
        let last = raft.raft_log.last_index();
        if self.leaving.is_some()
            || g.repair.is_some()
            || g.reads_count() > 0
            || g.pending_count() > 0
            || raft.raft_log.committed != last
            || self.abstains(g.id)
            || self.unwanted_voters.contains(&g.id)
        {
            return false;
        }
        match raft.state {
            raft::StateRole::Leader => {
                raft.lead_transferee.is_none()
                    && g.applied == last
                    && raft.pending_conf_index <= g.applied
                    && raft.prs().iter().all(|(_, pr)| pr.matched == last)
            }
            raft::StateRole::Follower => raft.leader_id != 0,
            _ => false,
        }
    }

    /// After ticks: wakes quiesced groups that must tick again, quiesces
    /// idle led groups, and pings peers that heard nothing from this node
    /// for a heartbeat interval.
    pub(in crate::engine) fn maintain_quiescence(&mut self) {
        let alive = self.alive_nodes();
        let wake: Vec<GroupId> = self
            .partitions
            .values()
            .filter(|g| g.quiesced.is_some() && !self.stays_quiet(g, &alive))
            .map(|g| g.id)
            .collect();
        for group in wake {
            self.wake(group);
        }
        if self.quiescence_on() {
            let quiet: Vec<GroupId> = self
                .partitions
                .values()
                .filter(|g| g.quiesced.is_none() && g.is_leader() && self.may_quiesce(g, &alive))
                .map(|g| g.id)
                .collect();
            for group in quiet {
                self.quiesce(group);
            }
        }
        self.ask_leaders_to_wake();
        self.ping_peers();
    }

    /// Followers that have not heard from a leader for an election timeout
    /// ask their group's other members to wake, once per election timeout
    /// (see [`WAKE_CTX`]); at start, at once.
    fn ask_leaders_to_wake(&mut self) {
        let timeout = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let now = self.now;
        let due = |at: Option<Time>| at.is_none_or(|t| t.as_millis() + timeout <= now.as_millis());
        for g in self.partitions.values_mut() {
            let raft = &g.raw.raft;
            if g.quiesced.is_some()
                || raft.state != raft::StateRole::Follower
                || (raft.leader_id != 0 && !due(g.leader_seen_at))
                || !due(g.wake_asked_at)
            {
                continue;
            }
            g.wake_asked_at = Some(now);
            let (me, term) = (raft.id, raft.term);
            let cs = g.raw.store().conf_state();
            let members: BTreeSet<NodeId> = cs
                .voters
                .iter()
                .chain(&cs.voters_outgoing)
                .chain(&cs.learners)
                .copied()
                .filter(|id| *id != me)
                .collect();
            for to in members {
                let mut m = raft::eraftpb::Message::default();
                m.set_msg_type(MessageType::MsgHeartbeatResponse);
                m.from = me;
                m.to = to;
                m.term = term;
                m.context = WAKE_CTX.to_vec().into();
                self.sink.send_now.push((
                    to,
                    GroupMessage {
                        group: g.id,
                        message: m,
                    },
                ));
            }
        }
    }

    /// A member's wake request: the group ticks again, and its leader
    /// sends a heartbeat round at once.
    pub(in crate::engine) fn take_wake_request(&mut self, group: GroupId) {
        self.wake(group);
        if let Some(g) = self.partitions.get_mut(&group) {
            if g.is_leader() {
                g.raw.ping();
                self.dirty.insert(group);
            }
        }
    }

    /// A leader of an idle group quiesces once, besides a quiet state, its
    /// replicas are all in sync and heard from, its metadata is known
    /// fresh, and no move or hand-over involves it.
    fn may_quiesce(&self, g: &PartitionGroup<S>, alive: &BTreeSet<NodeId>) -> bool {
        let raft = &g.raw.raft;
        self.quiet_state(g)
            && !g.raw.has_ready()
            && raft
                .prs()
                .iter()
                .all(|(id, pr)| alive.contains(id) && (pr.recent_active || *id == raft.id))
            && self.leader_may_rest(g)
    }

    /// What a leader's duties ask before it may rest: its metadata known
    /// fresh, every replica in the ISR as applied here (a shrink another
    /// leader proposed may apply while it rests: then it must tick, to
    /// expand the ISR again), and no move under way.
    fn leader_may_rest(&self, g: &PartitionGroup<S>) -> bool {
        let raft = &g.raw.raft;
        if g.duties.metadata_fresh_term != Some(raft.term) {
            return false;
        }
        let GroupKind::Partition(pid) = &g.kind else {
            return false;
        };
        let Ok(meta) = self.metadata.sm.partition(pid) else {
            return false;
        };
        // Every replica in sync (an ISR change waits for ticks) and no move
        // under way. A transfer to the preferred leader may still come: it
        // wakes the group (see `stays_quiet`).
        let in_sync = meta.replicas.iter().all(|r| meta.isr.contains(r));
        meta.group == g.id
            && in_sync
            && meta.moving.is_none()
            && raft.prs().iter().count() == meta.replicas.len()
    }

    /// Stops ticking `group` (a leader) and tells its followers.
    fn quiesce(&mut self, group: GroupId) {
        let Some(g) = self.partitions.get_mut(&group) else {
            return;
        };
        let raft = &g.raw.raft;
        let last = raft.raft_log.last_index();
        let (me, term) = (raft.id, raft.term);
        for (id, pr) in raft.prs().iter() {
            if *id == me {
                continue;
            }
            let mut m = raft::eraftpb::Message::default();
            m.set_msg_type(MessageType::MsgHeartbeat);
            m.from = me;
            m.to = *id;
            m.term = term;
            m.commit = pr.matched.min(raft.raft_log.committed);
            m.context = QUIESCE_CTX.to_vec().into();
            self.sink
                .send_now
                .push((*id, GroupMessage { group, message: m }));
        }
        g.quiesced = Some(last);
    }

    /// A follower that stepped its leader's quiescing heartbeat quiesces
    /// if it holds the whole log the leader committed.
    pub(in crate::engine) fn follow_quiescence(
        &mut self,
        group: GroupId,
        from: NodeId,
        term: u64,
        commit: u64,
    ) {
        if !self.quiescence_on() {
            return;
        }
        let Some(g) = self.partitions.get(&group) else {
            return;
        };
        let raft = &g.raw.raft;
        let quiet = raft.state == raft::StateRole::Follower
            && raft.leader_id == from
            && raft.term == term
            && raft.raft_log.last_index() == commit
            && g.quiesced.is_none()
            && self.quiet_state(g);
        if quiet {
            let last = raft.raft_log.last_index();
            if let Some(g) = self.partitions.get_mut(&group) {
                g.quiesced = Some(last);
            }
        }
    }

    /// Makes `group` tick again. A leader first tells its ISR tracker that
    /// its log did not grow until now (it observed nothing while quiet, and
    /// would otherwise date a replica's last catch-up back to when the
    /// group quiesced).
    pub(in crate::engine) fn wake(&mut self, group: GroupId) {
        if self
            .partitions
            .get(&group)
            .is_none_or(|g| g.quiesced.is_none())
        {
            return;
        }
        let alive = self.alive_nodes();
        let now = self.now;
        let Some(g) = self.partitions.get_mut(&group) else {
            return;
        };
        let Some(quiet_last) = g.quiesced.take() else {
            return;
        };
        if g.is_leader() {
            if let Some((_, tracker)) = g.duties.isr.as_mut() {
                tracker.note_unchanged(now, quiet_last);
            }
            // Activity marks are from before the quiet: a replica whose node
            // went silent meanwhile is not active (check-quorum and the ISR
            // read these).
            let me = g.raw.raft.id;
            for (id, pr) in g.raw.raft.mut_prs().iter_mut() {
                if *id != me && !alive.contains(id) {
                    pr.recent_active = false;
                }
            }
        }
        self.dirty.insert(group);
    }

    /// Sends an empty batch to every peer this node sent nothing to within
    /// a heartbeat interval: with groups quiesced, these pings are what
    /// tells peers this node is alive.
    fn ping_peers(&mut self) {
        let interval = self.config.tick_interval_ms * self.config.heartbeat_ticks as u64;
        let me = self.config.node_id;
        let now = self.now;
        let peers: Vec<NodeId> = self
            .metadata
            .sm
            .nodes()
            .map(|n| n.id)
            .filter(|id| *id != me)
            .filter(|id| {
                self.sent_to
                    .get(id)
                    .is_none_or(|at| at.as_millis() + interval <= now.as_millis())
            })
            .collect();
        for to in peers {
            self.sent_to.insert(to, now);
            self.sink.outputs.push_back(Output::Send {
                to,
                messages: Vec::new(),
            });
        }
    }
}
