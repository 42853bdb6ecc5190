//! The membership controller: the metadata leader walks a node's addition
//! or removal through its steps.

use super::*;

impl<S: StateMachine> Engine<S> {
    /// The metadata leader walks the membership change in flight through
    /// its steps (see `membership::next_step`), one Raft configuration
    /// change at a time, retrying after an election timeout if a proposal
    /// got lost.
    pub(in crate::engine) fn maintain_membership(&mut self) {
        use crate::membership::{next_step, Step};
        let now = self.now;
        let me = self.config.node_id;
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let g = &mut self.metadata;
        let Some(change) = g.sm.membership_in_flight().cloned() else {
            return;
        };
        if !g.is_leader() || !g.raw.raft.commit_to_current_term() {
            return;
        }
        if g.raw.raft.has_pending_conf() {
            return;
        }
        let facts = steps::conf_facts(g, me, change.node(), None);
        // A replica moving onto the node counts: its move is rolled back
        // first (or, promoted already, finishes and moves off again).
        let hosts_replicas = g.sm.partitions().any(|(_, p)| {
            p.replicas.contains(&change.node()) || p.moving.is_some_and(|m| m.to == change.node())
        });
        let Some(step) = next_step(
            &change,
            &facts.conf,
            me,
            facts.caught_up,
            facts.best_other,
            hosts_replicas,
        ) else {
            return;
        };
        if !self.membership_gate.allows(&step, now, retry_ms) {
            return;
        }
        tracing::info!(%change, ?step, "membership step");
        let proposed = match steps::execute(g, &step, &mut self.sink) {
            steps::Executed::Proposed(result) => result,
            steps::Executed::Waiting { compacted } => {
                if compacted {
                    self.dirty.insert(METADATA_GROUP);
                }
                return;
            }
            steps::Executed::Controller => match step.clone() {
                Step::MoveReplicasOff(node) => {
                    // A move onto the leaving node rolls back.
                    if let Some((group, m)) = g
                        .sm
                        .partitions()
                        .find_map(|(_, p)| p.moving.filter(|m| m.to == node).map(|m| (p.group, m)))
                    {
                        if m.rolling_back {
                            return;
                        }
                        let cmd = MetadataCommand::RollBackReplicaMove {
                            group,
                            from: m.from,
                            to: m.to,
                            reason: format!("node {node} is leaving the cluster"),
                        };
                        let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                        let _ = g.raw.propose(vec![], data);
                        self.membership_gate.taken(step, now);
                        self.dirty.insert(METADATA_GROUP);
                        return;
                    }
                    // One partition at a time: wait for a move in flight.
                    if g.sm
                        .partitions()
                        .any(|(_, p)| p.moving.is_some_and(|m| m.from == node))
                    {
                        return;
                    }
                    let Some(group) =
                        g.sm.partitions()
                            .find(|(_, p)| p.replicas.contains(&node))
                            .map(|(_, p)| p.group)
                    else {
                        return;
                    };
                    let Some(to) = g.sm.move_target(group, node) else {
                        tracing::warn!(group, node, "no node can take this replica");
                        return;
                    };
                    let cmd = MetadataCommand::BeginReplicaMove {
                        group,
                        from: node,
                        to,
                    };
                    if g.sm.validate(&cmd).is_err() {
                        return;
                    }
                    let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                    g.raw.propose(vec![], data)
                }
                Step::Finish => {
                    let cmd = MetadataCommand::FinishMembershipChange { change };
                    let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
                    g.raw.propose(vec![], data)
                }
                other => unreachable!("the executor carries out {other:?}"),
            },
        };
        if let Err(e) = proposed {
            tracing::warn!("membership step not proposed: {e}");
        }
        self.membership_gate.taken(step, now);
        self.dirty.insert(METADATA_GROUP);
    }
}
