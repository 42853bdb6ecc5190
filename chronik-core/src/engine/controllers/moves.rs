//! The replica-move controller: partition leaders carry out the moves
//! recorded in metadata.

use super::*;

impl<S: StateMachine> Engine<S> {
    /// Partition leaders carry out the replica moves recorded in metadata
    /// (see `membership::next_move_step`).
    pub(in crate::engine) fn maintain_moves(&mut self) {
        use crate::membership::{next_move_step, Step};
        let now = self.now;
        let me = self.config.node_id;
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let mut finished = Vec::new();
        // Moves are rare: look them up once, not once per group led.
        let moving: Vec<(GroupId, crate::metadata::ReplicaMove, bool)> = self
            .metadata
            .sm
            .partitions()
            .filter_map(|(_, p)| p.moving.map(|m| (p.group, m, p.isr.contains(&m.to))))
            .collect();
        for (group, mv, to_in_isr) in moving {
            let gid = &group;
            let Some(g) = self.partitions.get_mut(gid) else {
                continue;
            };
            if !g.is_leader() || g.duties.metadata_fresh_term != Some(g.raw.raft.term) {
                continue;
            }
            if !g.raw.raft.commit_to_current_term() || g.raw.raft.has_pending_conf() {
                continue;
            }
            let facts = steps::conf_facts(g, me, mv.to, Some(mv.from));
            // The old replica leaves only once the new one is in the ISR
            // (in sync by the ISR rules) and holds every committed entry.
            let in_sync = if crate::planted::active(crate::planted::Bug::MoveBeforeIsr) {
                // Planted bug (simulation builds only): no wait at all.
                true
            } else {
                to_in_isr && facts.caught_up
            };
            let step = next_move_step(mv, &facts.conf, me, in_sync, facts.best_other);
            if !g.duties.move_gate.allows(&step, now, retry_ms) {
                continue;
            }
            let proposed = match steps::execute(g, &step, &mut self.sink) {
                steps::Executed::Proposed(result) => result,
                steps::Executed::Waiting { compacted } => {
                    if compacted {
                        self.dirty.insert(*gid);
                    }
                    continue;
                }
                steps::Executed::Controller => match step {
                    Step::Finish => {
                        finished.push(MetadataCommand::FinishReplicaMove {
                            group: *gid,
                            from: mv.from,
                            to: mv.to,
                        });
                        Ok(())
                    }
                    Step::Abort => {
                        finished.push(MetadataCommand::AbortReplicaMove {
                            group: *gid,
                            from: mv.from,
                            to: mv.to,
                        });
                        Ok(())
                    }
                    // Membership-only steps: never a move's.
                    _ => continue,
                },
            };
            tracing::info!(group = gid, ?step, "replica move step");
            if let Err(e) = proposed {
                tracing::warn!(group = gid, "replica move step not proposed: {e}");
            }
            g.duties.move_gate.taken(step, now);
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
