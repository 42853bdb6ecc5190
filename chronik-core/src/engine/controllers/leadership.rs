//! Duties of partition leaders beyond Raft: confirming their metadata is
//! fresh before serving, and snapshots for followers rebuilding state.

use super::*;
use crate::group::Duties;
use crate::isr::IsrTracker;

/// What a partition leader keeps beyond Raft. Only partition groups carry
/// it; everything here is about the current leadership.
#[derive(Debug, Default)]
pub(in crate::engine) struct PartitionDuties {
    /// The ISR view of this term: followers' lag as this leader saw it.
    pub isr: Option<(u64, IsrTracker)>,
    /// When this leader last proposed an ISR change or a leadership
    /// transfer, so it does not repeat itself every tick.
    pub isr_acted_at: Option<Time>,
    /// The term whose metadata freshness barrier is in flight, and the
    /// term for which it completed: a new leader serves nothing before its
    /// metadata (the ISR it enforces) is known fresh.
    pub barrier_term: Option<u64>,
    pub metadata_fresh_term: Option<u64>,
    /// The replica-move step last taken.
    pub move_gate: StepGate,
}

impl Duties for PartitionDuties {
    fn leadership_lost(&mut self) {
        self.isr = None;
        self.isr_acted_at = None;
    }
}

impl<S: StateMachine> Engine<S> {
    /// Completes the metadata freshness barriers whose read index has been
    /// applied, and starts new barriers for partition leaders of a new term.
    pub(in crate::engine) fn metadata_barriers(&mut self) {
        for (_, group, _) in self.metadata.reads.ready(self.metadata.applied) {
            if let Some(g) = self.partitions.get_mut(&group) {
                if g.is_leader() && g.duties.barrier_term == Some(g.raw.raft.term) {
                    g.duties.metadata_fresh_term = g.duties.barrier_term;
                }
            }
        }
        let deadline = self
            .now
            .plus_millis(self.config.tick_interval_ms * self.config.election_ticks as u64);
        for (gid, g) in self.partitions.iter_mut() {
            let term = g.raw.raft.term;
            if g.is_leader()
                && g.duties.metadata_fresh_term != Some(term)
                && g.duties.barrier_term != Some(term)
            {
                g.duties.barrier_term = Some(term);
                self.metadata
                    .reads
                    .push(crate::group::INTERNAL_REQUEST, *gid, deadline);
            }
        }
        let ctx = read_ctx(&self.config, self.next_read_ctx);
        let timeout = self.config.tick_interval_ms * self.config.election_ticks as u64;
        if self.metadata.start_read_round(ctx, timeout, self.now) {
            self.next_read_ctx += 1;
            self.dirty.insert(METADATA_GROUP);
        }
    }

    /// A follower rebuilding its state asks for a snapshot at least as new
    /// as its log: a leader takes one as soon as it has applied that far
    /// (raft-rs sends it on the next heartbeat round).
    pub(in crate::engine) fn serve_snapshot_requests(&mut self) {
        if self.metadata.is_leader() && self.metadata.needs_fresh_snapshot() {
            self.metadata.force_compact(&mut self.sink);
            self.dirty.insert(METADATA_GROUP);
        }
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
            if wanted > g.raw.store().snapshot_index() && g.applied >= wanted && !g.is_compacting()
            {
                g.force_compact(&mut self.sink);
                self.dirty.insert(g.id);
                continue;
            }
            if g.needs_fresh_snapshot() {
                g.force_compact(&mut self.sink);
                self.dirty.insert(g.id);
            }
        }
    }
}
