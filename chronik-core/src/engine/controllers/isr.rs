//! The ISR controller: partition leaders keep their ISR current.

use super::*;

impl<S: StateMachine> Engine<S> {
    /// Partition leaders keep their ISR current: each tick they observe
    /// their followers' progress and propose shrinks and expands through the
    /// metadata group (a follower forwards the proposal to its leader). A
    /// leader outside the ISR hands leadership to an in-sync replica, or,
    /// where the topic allows unclean election, takes the ISR over.
    pub(in crate::engine) fn maintain_isr(&mut self) {
        let now = self.now;
        let me = self.config.node_id;
        let policy = IsrPolicy {
            max_lag_entries: self.config.isr_max_lag_entries,
            max_lag_ms: self.config.isr_max_lag_ms,
        };
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let mut proposals = Vec::new();
        for (gid, g) in self.partitions.iter_mut() {
            // A quiesced leader's replicas all hold its whole log; its
            // tracker catches up when it wakes (`quiesce::wake`).
            if !g.is_leader() || g.quiesced.is_some() {
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
            if meta.group != *gid || g.duties.metadata_fresh_term != Some(g.raw.raft.term) {
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
            // A replica moving in is tracked too: its move waits until it
            // joins the ISR.
            let candidates = meta.isr_candidates();
            if g.duties.isr.as_ref().is_none_or(|(t, _)| *t != term) {
                g.duties.isr = Some((term, IsrTracker::new(now, &policy, &meta.replicas, last)));
            }
            let (_, tracker) = g.duties.isr.as_mut().expect("just set");
            tracker.observe(now, last, &matched, &active);
            if g.duties
                .isr_acted_at
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
                    &candidates,
                    &meta.isr,
                    &matched,
                )
            } else if topic.unclean_leader_election {
                Some(tracker.unclean_takeover(now, &policy, me, last, &meta.replicas, &matched))
            } else {
                // Hand leadership to the most caught-up in-sync replica
                // (a voter: not a replica still moving in); raft-rs brings
                // it up to date first.
                if let Some(target) = meta
                    .isr
                    .iter()
                    .filter(|n| matched.contains_key(n) && meta.replicas.contains(n))
                    .max_by_key(|n| matched[n])
                {
                    tracing::info!(
                        group = gid,
                        target,
                        "leader outside the ISR hands leadership over"
                    );
                    g.raw.transfer_leader(*target);
                    self.sink.event(Event::LeadershipTransfer {
                        group: *gid,
                        to: *target,
                        reason: "leader outside the ISR",
                    });
                    g.duties.isr_acted_at = Some(now);
                    self.dirty.insert(*gid);
                }
                None
            };
            if let Some(change) = change {
                g.duties.isr_acted_at = Some(now);
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

    /// Each replica's lag, for partitions this node leads (only the leader
    /// knows its followers' progress).
    pub fn replica_lags(&self, group: GroupId) -> Option<Vec<ReplicaLag>> {
        let g = self.partitions.get(&group)?;
        let (_, tracker) = g.duties.isr.as_ref().filter(|_| g.is_leader())?;
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
            &meta.isr_candidates(),
            &matched,
        ))
    }
}
