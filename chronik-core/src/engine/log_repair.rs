//! Replicas whose log lost entries the node had acknowledged.
//!
//! When recovery cuts a corrupt WAL record away, it cuts every record after
//! it too: entries (and votes) of any group the node hosts may be gone,
//! although the node acknowledged them and a leader counted those
//! acknowledgements towards a commit. Term and vote survive in a separate
//! file, so the node keeps its promises; the entries are fetched from the
//! leader again. Until then the replica must not vote: its vote, given on a
//! log that lacks committed entries, could elect a leader without them (the
//! quorum that committed them counted this node). So it abstains (no
//! votes, no pre-votes, no campaigns, no leadership transfers to it) until
//! its log holds the commit index a leader reported to it since it
//! restarted, and that index holds an entry of the leader's own term. A
//! leader's log holds every entry committed before its term, below its own
//! term's entries; and within its term, everything committed by the time
//! it reported is at or below what it reported. So from then on this log
//! holds everything the lost acknowledgements helped commit (after the
//! "protocol-aware recovery" of Alagappan et al., FAST 2018). The one case
//! this does not cover: an acknowledgement the node sent before the crash
//! that reaches the leader only after the node restarted and caught up.
//!
//! A single-voter group has nobody to repair from: it goes on with what it
//! recovered (what was lost is lost) rather than stay leaderless forever.

use super::*;

impl<S: StateMachine> Engine<S> {
    /// Whether `group`'s replica here abstains from elections.
    pub(in crate::engine) fn abstains(&self, group: GroupId) -> bool {
        !self.abstaining.is_empty() && self.abstaining.contains_key(&group)
    }

    /// Notes the commit index a leader reports to an abstaining replica
    /// (before the engine caps a heartbeat's at this log's end).
    pub(in crate::engine) fn note_leader_commit(
        &mut self,
        group: GroupId,
        m: &raft::eraftpb::Message,
    ) {
        if !matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat
        ) {
            return;
        }
        let term = self.raw_mut(group).map_or(0, |raw| raw.raft.term);
        if let Some(target) = self.abstaining.get_mut(&group) {
            if m.term >= term {
                *target = (*target).max(m.commit);
            }
        }
    }

    /// Starts abstaining in a recovered (or recreated) group, unless it is
    /// its own quorum.
    pub(in crate::engine) fn begin_abstaining(&mut self, group: GroupId) {
        let Some(raw) = self.raw_mut(group) else {
            return;
        };
        let me = raw.raft.id;
        let cs = raw.store().conf_state();
        let alone = cs.voters == [me] && cs.voters_outgoing.is_empty();
        if alone {
            tracing::error!(
                group,
                "log lost entries to a corrupt WAL record and no other voter holds them: going on without them"
            );
            self.sink.updates.push(GroupUpdate::CaughtUp { group });
            return;
        }
        tracing::warn!(
            group,
            term = raw.raft.term,
            last_index = raw.raft.raft_log.last_index(),
            "log may have lost acknowledged entries: not voting until caught up with the leader"
        );
        self.abstaining.insert(group, 0);
        self.sink.event(Event::VotingSuspended { group });
    }

    /// Ends `group`'s abstention once its log holds the commit its leader
    /// reported, at an entry of the leader's term; called after its ready is handled, so the
    /// update that records the end follows the entries it relies on.
    pub(in crate::engine) fn maybe_end_abstention(&mut self, group: GroupId) {
        let Some(target) = self.abstaining.get(&group).copied() else {
            return;
        };
        let Some(raw) = self.raw_mut(group) else {
            self.abstaining.remove(&group);
            return;
        };
        let raft = &raw.raft;
        let committed = raft.raft_log.committed;
        let caught_up = raft.state == raft::StateRole::Follower
            && raft.leader_id != raft::INVALID_ID
            && target > 0
            && committed >= target
            && raft.raft_log.term(committed).ok() == Some(raft.term);
        // Planted bug (simulation builds only): the replica votes again at
        // once, holding none of what it lost.
        let early = crate::planted::active(crate::planted::Bug::VoteBeforeRepaired);
        if !(caught_up || early) {
            return;
        }
        tracing::info!(
            group,
            term = raft.term,
            commit = committed,
            "log caught up with the leader: voting again"
        );
        self.abstaining.remove(&group);
        self.sink.updates.push(GroupUpdate::CaughtUp { group });
        self.sink.event(Event::VotingResumed { group });
    }

    /// The group state a replica lost whole (its creation was in the cut
    /// WAL tail) starts from when metadata places it here again: the term
    /// and vote it kept. `None` for any other group.
    pub(in crate::engine) fn take_lost(&mut self, group: GroupId) -> Option<HardState> {
        self.lost.remove(&group)
    }
}

/// A leader whose follower answers an append with a log shorter than the
/// progress raft-rs recorded for it: the follower lost entries (a cut WAL
/// tail). raft-rs takes `matched` to only grow and would drop every such
/// rejection as stale, probing the same index for ever; the progress is
/// reset to what the follower can prove, and probing resumes from its log
/// end. Lowering `matched` only delays commits and acknowledgements.
pub(in crate::engine) fn forget_lost_progress(
    group: GroupId,
    raw: &mut RawNode<GroupStorage>,
    m: &raft::eraftpb::Message,
) {
    if m.get_msg_type() != MessageType::MsgAppendResponse
        || !m.reject
        || raw.raft.state != raft::StateRole::Leader
        || m.term != raw.raft.term
    {
        return;
    }
    let Some(pr) = raw.raft.mut_prs().get_mut(m.from) else {
        return;
    };
    if m.reject_hint >= pr.matched {
        return;
    }
    tracing::warn!(
        group,
        follower = m.from,
        matched = pr.matched,
        follower_last = m.reject_hint,
        "follower's log is shorter than it acknowledged: probing it again"
    );
    pr.matched = 0;
    pr.become_probe();
    // raft-rs takes the rejection as current only if it answers the probe
    // at `next_idx - 1`.
    pr.next_idx = m.index + 1;
}

/// What a follower answers a heartbeat whose commit index lies past its
/// log's end: a rejected append at that index with its real end as the
/// hint, the answer raft-rs gives an append it cannot take.
pub(in crate::engine) fn shorter_log_reply(
    raw: &RawNode<GroupStorage>,
    heartbeat: &raft::eraftpb::Message,
) -> raft::eraftpb::Message {
    let log = &raw.raft.raft_log;
    let last = log.last_index();
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(MessageType::MsgAppendResponse);
    m.to = heartbeat.from;
    m.from = raw.raft.id;
    m.term = heartbeat.term.max(raw.raft.term);
    m.index = heartbeat.commit;
    m.reject = true;
    m.reject_hint = last;
    m.log_term = log.term(last).unwrap_or(0);
    m
}
