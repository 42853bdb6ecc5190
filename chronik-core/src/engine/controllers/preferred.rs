//! Preferred leaders: a partition leader that is not its partition's
//! preferred leader hands leadership to it once it is in sync. This is
//! what turns the rebalancer's leadership changes (and a replica that
//! came back) into actual leaders, without data moving.

use super::*;

/// A group's transfers to its preferred leader, on the node that leads it:
/// a transfer whose leadership came back (the preferred replica could not
/// keep it, e.g. while it rebuilds its state) is tried again later and
/// later, never in a loop.
#[derive(Clone, Debug)]
pub(in crate::engine) struct PreferredBackoff {
    /// The term this node leads in, and since when it saw itself lead.
    term: u64,
    since: Time,
    attempts: u32,
    next_at: Time,
}

/// Doubling the wait caps at 2^6 hold times.
const BACKOFF_MAX_SHIFT: u32 = 6;

impl<S: StateMachine> Engine<S> {
    /// Hands partition leadership to preferred leaders that are in the ISR,
    /// hold every committed entry and were heard from recently, once this
    /// node has led for two election timeouts (so an election settles
    /// first).
    pub(in crate::engine) fn maintain_preferred_leaders(&mut self) {
        let now = self.now;
        let me = self.config.node_id;
        let hold = 2 * self.config.tick_interval_ms * self.config.election_ticks as u64;
        // A new leader serves nothing before a metadata round trip confirms
        // its view: hand over only while the metadata leader is heard from.
        let mraft = &self.metadata.raw.raft;
        let metadata_healthy = mraft.leader_id != 0
            && (mraft.state == raft::StateRole::Leader
                || mraft.election_elapsed <= 2 * self.config.heartbeat_ticks);
        if !metadata_healthy || self.leaving.is_some() {
            return;
        }
        // Only to a node heard from within two heartbeats: one that just
        // stopped (a rolling restart) cannot take over, and a transfer to
        // it would hold proposals for an election timeout.
        let heard_window = 2 * self.config.tick_interval_ms * self.config.heartbeat_ticks as u64
            + self.config.tick_interval_ms;
        let heard_from = &self.heard_from;
        let md = &self.metadata.sm;
        let backoff = &mut self.preferred_backoff;
        backoff.retain(|g, _| self.partitions.get(g).is_some_and(|g| g.is_leader()));
        for (gid, g) in self.partitions.iter_mut() {
            if !g.is_leader() || g.duties.metadata_fresh_term != Some(g.raw.raft.term) {
                continue;
            }
            let GroupKind::Partition(pid) = &g.kind else {
                continue;
            };
            let Ok(meta) = md.partition(pid) else {
                continue;
            };
            let target = meta.preferred_leader;
            if target == me || meta.group != *gid || meta.moving.is_some() {
                continue;
            }
            let term = g.raw.raft.term;
            let b = backoff.entry(*gid).or_insert(PreferredBackoff {
                term,
                since: now,
                attempts: 0,
                next_at: now,
            });
            if b.term != term {
                b.term = term;
                b.since = now;
            }
            if now.as_millis() > b.next_at.as_millis() + 10 * hold {
                b.attempts = 0;
            }
            if now.as_millis() < b.since.as_millis() + hold || now < b.next_at {
                continue;
            }
            let raft = &g.raw.raft;
            let ready = !md.in_maintenance(target)
                && heard_from
                    .get(&target)
                    .is_some_and(|at| now.as_millis() <= at.as_millis() + heard_window)
                && meta.isr.contains(&target)
                && meta.replicas.contains(&target)
                && raft
                    .prs()
                    .get(target)
                    .is_some_and(|pr| pr.matched >= raft.raft_log.committed && pr.recent_active);
            if !ready || g.raw.raft.lead_transferee.is_some() {
                continue;
            }
            tracing::info!(
                group = gid,
                %pid,
                target,
                attempt = b.attempts + 1,
                "leadership goes to the preferred leader"
            );
            g.raw.transfer_leader(target);
            self.sink.event(Event::LeadershipTransfer {
                group: *gid,
                to: target,
                reason: "preferred leader in sync",
            });
            b.attempts += 1;
            b.next_at = now.plus_millis(hold << b.attempts.min(BACKOFF_MAX_SHIFT));
            self.dirty.insert(*gid);
        }
    }
}
