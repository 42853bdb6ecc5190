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
    /// in an append anchored within this log: raft-rs keeps a follower's
    /// `matched` below the append's anchor, so that leader no longer
    /// counts an acknowledgement of anything this log lost, and every
    /// entry committed before it reported is at or below the index it
    /// reports.
    pub(in crate::engine) fn note_leader_commit(
        &mut self,
        group: GroupId,
        m: &raft::eraftpb::Message,
    ) {
        if m.get_msg_type() != MessageType::MsgAppend {
            return;
        }
        let Some((term, last)) = self
            .raw_mut(group)
            .map(|raw| (raw.raft.term, raw.raft.raft_log.last_index()))
        else {
            return;
        };
        if let Some(target) = self.abstaining.get_mut(&group) {
            if m.term >= term && m.index <= last {
                *target = (*target).max(m.commit);
            }
        }
    }

    /// Starts abstaining in a recovered (or recreated) group.
    pub(in crate::engine) fn begin_abstaining(&mut self, group: GroupId) {
        let Some(raw) = self.raw_mut(group) else {
            return;
        };
        tracing::warn!(
            group,
            term = raw.raft.term,
            last_index = raw.raft.raft_log.last_index(),
            "log may have lost acknowledged entries: not voting until caught up with the leader"
        );
        self.abstaining.insert(group, 0);
        self.sink.event(Event::VotingSuspended { group });
    }

    /// Ends the abstentions whose condition holds (see
    /// `maybe_end_abstention`); each tick, for groups nothing else wakes.
    pub(in crate::engine) fn end_abstentions(&mut self) {
        if self.abstaining.is_empty() {
            return;
        }
        let groups: Vec<GroupId> = self.abstaining.keys().copied().collect();
        for group in groups {
            self.maybe_end_abstention(group);
        }
    }

    /// Whether `group` is its own quorum, by applied state that no cut can
    /// have taken back: a partition whose replicas are only this node by
    /// metadata that caught up with its leader, or the metadata group of a
    /// cluster bootstrapped and still alone. Nobody else holds what its
    /// log lost: it goes on without it.
    fn sole_voter(&self, group: GroupId) -> bool {
        let me = self.config.node_id;
        let Some(voters) = self.group_voters(group) else {
            return false;
        };
        if voters != [me] {
            return false;
        }
        let md = &self.metadata.sm;
        if group == METADATA_GROUP {
            return self.config.initial_cluster.len() == 1
                && !self.config.join
                && md.nodes().count() <= 1;
        }
        !self.abstains(METADATA_GROUP)
            && md
                .partition_of_group(group)
                .is_some_and(|(_, p)| p.replicas == [me] && p.moving.is_none())
    }

    fn group_voters(&self, group: GroupId) -> Option<Vec<NodeId>> {
        let raft = if group == METADATA_GROUP {
            &self.metadata.raw.raft
        } else {
            &self.partitions.get(&group)?.raw.raft
        };
        // Incoming and outgoing voters alike (a joint configuration).
        let mut v: Vec<NodeId> = raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        Some(v)
    }

    /// Ends `group`'s abstention once its log holds, durably, the commit
    /// its leader reported (see `note_leader_commit`), at an entry of the
    /// leader's term; called after its ready is handled, so the update
    /// that records the end follows the entries it relies on.
    pub(in crate::engine) fn maybe_end_abstention(&mut self, group: GroupId) {
        let Some(target) = self.abstaining.get(&group).copied() else {
            return;
        };
        let sole = self.sole_voter(group);
        let Some(raw) = self.raw_mut(group) else {
            self.abstaining.remove(&group);
            return;
        };
        let raft = &raw.raft;
        let log = &raft.raft_log;
        let committed = log.committed;
        let caught_up = raft.state == raft::StateRole::Follower
            && raft.leader_id != raft::INVALID_ID
            && target > 0
            && committed >= target
            && log.persisted >= committed
            && log.term(committed).ok() == Some(raft.term);
        // Planted bug (simulation builds only): the replica votes again at
        // once, holding none of what it lost.
        let early = crate::planted::active(crate::planted::Bug::VoteBeforeRepaired);
        if !(caught_up || early || sole) {
            return;
        }
        if sole {
            tracing::error!(
                group,
                "log lost entries to a corrupt WAL record and no other voter holds them: going on without them"
            );
        } else {
            tracing::info!(
                group,
                term = raft.term,
                commit = committed,
                "log caught up with the leader: voting again"
            );
        }
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

/// Marks a follower's answer that its log is shorter than its leader may
/// think (it lost entries to a cut WAL, or is repairing): the leader
/// resets its progress (see [`forget_lost_progress`]).
const SHORTER_LOG: &[u8] = b"chronik:shorter-log";

/// A leader whose follower answers an append with a log shorter than the
/// progress raft-rs recorded for it: the follower lost entries (a cut WAL
/// tail). raft-rs takes `matched` to only grow and would drop every such
/// rejection as stale, probing the same index for ever; the progress is
/// reset and probing resumes from the follower's log end (which also
/// sends an append a repairing follower can take its leader's commit
/// from). Lowering `matched` only delays commits and acknowledgements.
/// A rejection answering an older probe (below `matched`) is stale, as
/// raft-rs has it.
///
/// Returns whether raft-rs should still step `m`: a marked answer whose log
/// end is not below `matched` carries no news (the leader's progress fits
/// the follower's log) and is dropped. Stepped, it would send the leader
/// back to probing an index the follower holds, whose acknowledgement
/// raft-rs ignores as stale (it does not raise `matched`); a repairing
/// follower answers every heartbeat so, and its replication never got
/// past that index (found by simulation seed 480: a replica abstaining
/// after a WAL cut stayed one entry behind for the rest of the run).
#[must_use]
pub(in crate::engine) fn forget_lost_progress(
    group: GroupId,
    raw: &mut RawNode<GroupStorage>,
    m: &raft::eraftpb::Message,
) -> bool {
    if m.get_msg_type() != MessageType::MsgAppendResponse
        || !m.reject
        || raw.raft.state != raft::StateRole::Leader
        || m.term != raw.raft.term
    {
        return true;
    }
    let Some(pr) = raw.raft.mut_prs().get_mut(m.from) else {
        return true;
    };
    let marked = m.get_context() == SHORTER_LOG;
    if marked && m.reject_hint >= pr.matched {
        return false;
    }
    let shorter = m.reject_hint < pr.matched && m.index >= pr.matched;
    if !(marked || shorter) {
        return true;
    }
    if m.reject_hint < pr.matched {
        tracing::warn!(
            group,
            follower = m.from,
            matched = pr.matched,
            follower_last = m.reject_hint,
            "follower's log is shorter than it acknowledged: probing it again"
        );
        pr.matched = 0;
    }
    pr.become_probe();
    // raft-rs takes the rejection as current only if it answers the probe
    // at `next_idx - 1`.
    pr.next_idx = m.index + 1;
    true
}

/// What a repairing follower (or one whose log ends before the commit a
/// heartbeat carries) answers a heartbeat: a rejected append at that
/// commit with its real log end as the hint, marked so its leader probes
/// it again (see [`forget_lost_progress`]).
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
    m.set_context(bytes::Bytes::from_static(SHORTER_LOG));
    m
}
