//! Planted bugs: deliberate defects that the simulator's checkers must
//! catch. A checker that never catches anything proves nothing; each bug
//! here is the proof that one checker works.
//!
//! They exist only in simulation builds (`--cfg madsim`), all compiled in,
//! and one is switched on at run time with [`activate`] (the simulation
//! runner's `--bug NAME`, or `CHRONIK_BUG=NAME` for the simulation test).
//! In every other build [`active`] is a constant `false`, so the defective
//! branches are dead code the optimizer removes.
//!
//! ```
//! use chronik_core::planted::{active, Bug};
//! // Outside simulation no bug is ever active.
//! assert!(!active(Bug::AckBeforeFsync));
//! assert_eq!(Bug::from_name("stale_read"), Some(Bug::StaleRead));
//! ```

/// One planted defect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bug {
    /// The WAL reports batches durable without syncing them.
    AckBeforeFsync,
    /// Any replica answers a read from its own state, no ReadIndex.
    StaleRead,
    /// WAL recovery trusts records without checking their checksums.
    SkipCrc,
    /// A follower serves a linearizable read before applying up to the
    /// read index.
    FollowerReadEarly,
    /// `min_insync_replicas` is checked before the append only.
    MinIsrBeforeAppendOnly,
    /// Group commit syncs only when the last folded batch asks for it, so
    /// earlier batches that needed a sync are reported durable unsynced.
    GroupCommitSkipSync,
    /// A produce that was appended is answered as a definite failure.
    FailAfterAppend,
    /// Metadata restored from a snapshot resets every ISR to the full
    /// replica list: a node that installed or recovered a snapshot holds
    /// other metadata than its peers at the same applied index.
    MetadataSnapshotLosesIsr,
    /// A restarted node forgets the vote it persisted.
    ForgetVote,
    /// A produce is acknowledged once committed (a Raft majority), without
    /// waiting for `min_insync_replicas` members of the ISR to hold it.
    AckOnQuorum,
    /// The WAL ignores a failed fsync and reports the batch durable.
    IgnoreFsyncError,
    /// A new WAL segment's directory entry is never synced.
    SkipDirSync,
    /// A voter grants its vote (and pre-vote) without comparing the
    /// candidate's log with its own.
    VoteIgnoresLog,
    /// A partition leader outside its ISR serves produces and reads on a
    /// topic that does not allow unclean leader election.
    LeaderOutsideIsrServes,
    /// A finished replica move adds the new replica to the ISR but keeps
    /// the old one there.
    IsrKeepsMovedReplica,
    /// A restarted node takes a partition's applied index from its
    /// persisted commit index instead of its snapshot, so the committed
    /// entries between them are never applied to the state machine.
    RecoverySkipsToCommit,
    /// An installed partition snapshot reports one record fewer than the
    /// leader's state at that index.
    SnapshotInstallOffByOne,
    /// A vote is sent as soon as it is granted, before the hard state that
    /// records it is durable: a crash before the fsync forgets the vote
    /// after the candidate counted it.
    VoteReplyBeforePersist,
    /// A dropped partition's files are left on disk (until the node next
    /// starts and finds them orphaned).
    DeleteKeepsFiles,
    /// Raft runs without pre-vote: a node cut off alone keeps raising its
    /// term, and on its return deposes the leader that carried on.
    NoPreVote,
    /// The ISR tracker never drops a lagging member: a replica that stopped
    /// following stays listed as in sync.
    IsrNeverShrinks,
    /// A produce waits until every member of the ISR holds it, not
    /// `min_insync_replicas` of them: one slow or cut-off follower stalls
    /// acknowledgements of a partition whose quorum is intact, until the
    /// ISR drops it.
    AckWaitsForWholeIsr,
    /// Partition segments are read without checking batch checksums: a
    /// replica whose synced data rotted serves it.
    SegmentCrcUnchecked,
    /// A partition's log is compacted behind a snapshot as soon as it is
    /// taken, before the storage work that syncs the segments it names
    /// has run: a crash then leaves the snapshot naming bytes the disk
    /// lost.
    CompactBeforeStateSynced,
    /// A replica move promotes the new replica and drops the old one as
    /// soon as the new one is a learner, before it is in the ISR.
    MoveBeforeIsr,
    /// A graceful shutdown goes on to stop as soon as it asked for its
    /// leadership transfers, without waiting for another node to lead.
    ShutdownSkipsTransfer,
    /// A node in maintenance keeps the leaderships it holds (it hands none
    /// over).
    MaintenanceKeepsLeadership,
    /// `metadata-replicate` reports as its target the index the member
    /// already has, not the leader's commit: a caller waiting for it
    /// returns before the member caught up.
    ReplicateTargetTooLow,
    /// A replica whose log lost entries to a corrupt WAL record votes and
    /// campaigns again at once, before it fetched what it lost.
    VoteBeforeRepaired,
    /// A corrupt last WAL record is cut away as a torn write even when a
    /// later record proves it was synced: no repair, no abstention.
    CorruptTailTakenForTorn,
    /// Recovery after a corrupt WAL record ignores the term and vote file
    /// and keeps the older term and vote of the cut log.
    RepairForgetsTerm,
    /// A quiesced follower stays quiet when its leader's node goes silent:
    /// the group elects no new leader while its old leader is unreachable.
    QuiescedIgnoresDeadLeader,
    /// Authorization grants `write` on every topic to any principal that
    /// has `write` on none: a read-only principal's produce is appended.
    AuthIgnoresTopicWrite,
}

impl Bug {
    /// Every planted bug, in a fixed order.
    pub const ALL: [Bug; 33] = [
        Bug::AckBeforeFsync,
        Bug::StaleRead,
        Bug::SkipCrc,
        Bug::FollowerReadEarly,
        Bug::MinIsrBeforeAppendOnly,
        Bug::GroupCommitSkipSync,
        Bug::FailAfterAppend,
        Bug::MetadataSnapshotLosesIsr,
        Bug::ForgetVote,
        Bug::AckOnQuorum,
        Bug::IgnoreFsyncError,
        Bug::SkipDirSync,
        Bug::VoteIgnoresLog,
        Bug::LeaderOutsideIsrServes,
        Bug::IsrKeepsMovedReplica,
        Bug::RecoverySkipsToCommit,
        Bug::SnapshotInstallOffByOne,
        Bug::VoteReplyBeforePersist,
        Bug::DeleteKeepsFiles,
        Bug::NoPreVote,
        Bug::IsrNeverShrinks,
        Bug::AckWaitsForWholeIsr,
        Bug::SegmentCrcUnchecked,
        Bug::CompactBeforeStateSynced,
        Bug::MoveBeforeIsr,
        Bug::ShutdownSkipsTransfer,
        Bug::MaintenanceKeepsLeadership,
        Bug::ReplicateTargetTooLow,
        Bug::VoteBeforeRepaired,
        Bug::CorruptTailTakenForTorn,
        Bug::RepairForgetsTerm,
        Bug::QuiescedIgnoresDeadLeader,
        Bug::AuthIgnoresTopicWrite,
    ];

    /// The name used on command lines and in `CHRONIK_BUG`.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeFsync => "ack_before_fsync",
            Bug::StaleRead => "stale_read",
            Bug::SkipCrc => "skip_crc",
            Bug::FollowerReadEarly => "follower_read_early",
            Bug::MinIsrBeforeAppendOnly => "min_isr_before_append_only",
            Bug::GroupCommitSkipSync => "group_commit_skip_sync",
            Bug::FailAfterAppend => "fail_after_append",
            Bug::MetadataSnapshotLosesIsr => "metadata_snapshot_loses_isr",
            Bug::ForgetVote => "forget_vote",
            Bug::AckOnQuorum => "ack_on_quorum",
            Bug::IgnoreFsyncError => "ignore_fsync_error",
            Bug::SkipDirSync => "skip_dir_sync",
            Bug::VoteIgnoresLog => "vote_ignores_log",
            Bug::LeaderOutsideIsrServes => "leader_outside_isr_serves",
            Bug::IsrKeepsMovedReplica => "isr_keeps_moved_replica",
            Bug::RecoverySkipsToCommit => "recovery_skips_to_commit",
            Bug::SnapshotInstallOffByOne => "snapshot_install_off_by_one",
            Bug::VoteReplyBeforePersist => "vote_reply_before_persist",
            Bug::DeleteKeepsFiles => "delete_keeps_files",
            Bug::NoPreVote => "no_pre_vote",
            Bug::IsrNeverShrinks => "isr_never_shrinks",
            Bug::AckWaitsForWholeIsr => "ack_waits_for_whole_isr",
            Bug::SegmentCrcUnchecked => "segment_crc_unchecked",
            Bug::CompactBeforeStateSynced => "compact_before_state_synced",
            Bug::MoveBeforeIsr => "move_before_isr",
            Bug::ShutdownSkipsTransfer => "shutdown_skips_transfer",
            Bug::MaintenanceKeepsLeadership => "maintenance_keeps_leadership",
            Bug::ReplicateTargetTooLow => "replicate_target_too_low",
            Bug::VoteBeforeRepaired => "vote_before_repaired",
            Bug::CorruptTailTakenForTorn => "corrupt_tail_taken_for_torn",
            Bug::RepairForgetsTerm => "repair_forgets_term",
            Bug::QuiescedIgnoresDeadLeader => "quiesced_ignores_dead_leader",
            Bug::AuthIgnoresTopicWrite => "auth_ignores_topic_write",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl std::fmt::Display for Bug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(madsim)]
mod switch {
    use super::Bug;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// 0: none; otherwise 1 + the bug's position in `Bug::ALL`. One per
    /// process: every seed a runner runs shares it.
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);

    pub fn activate(bug: Option<Bug>) {
        let v = bug.map_or(0, |b| {
            1 + Bug::ALL
                .iter()
                .position(|x| *x == b)
                .expect("every bug is in ALL")
        });
        ACTIVE.store(v, Ordering::Relaxed);
    }

    pub fn current() -> Option<Bug> {
        match ACTIVE.load(Ordering::Relaxed) {
            0 => None,
            v => Some(Bug::ALL[v - 1]),
        }
    }

    pub fn active(bug: Bug) -> bool {
        current() == Some(bug)
    }
}

/// Switches `bug` on for this process (`None`: none). Simulation builds
/// only: other builds cannot run a planted bug.
#[cfg(madsim)]
pub fn activate(bug: Option<Bug>) {
    switch::activate(bug)
}

/// The bug switched on, if any.
#[cfg(madsim)]
pub fn current() -> Option<Bug> {
    switch::current()
}

/// Whether `bug` is switched on. Always `false` outside simulation builds.
#[cfg(madsim)]
#[inline]
pub fn active(bug: Bug) -> bool {
    switch::active(bug)
}

/// Whether `bug` is switched on. Always `false` outside simulation builds.
#[cfg(not(madsim))]
#[inline(always)]
pub const fn active(_bug: Bug) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        for b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Bug::ALL.len());
        assert_eq!(Bug::from_name("no_such_bug"), None);
    }

    #[test]
    fn nothing_is_active_outside_simulation() {
        for b in Bug::ALL {
            assert!(!active(b), "{b} active in a normal build");
        }
    }
}
