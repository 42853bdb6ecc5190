//! The rebalancer: the metadata leader plans a rebalance when the cluster
//! is unbalanced (every `check_interval_ms`, and at once when the placeable
//! nodes change), starts the run's moves as slots free up, and rolls back
//! moves that overrun `migration_timeout_ms`. Partition leaders carry the
//! moves out (`maintain_moves`).

use super::*;
use crate::metadata::MoveState;
use crate::rebalance::{plan, ClusterView, Plan};

/// What the metadata leader keeps for the rebalancer; reset when it loses
/// leadership (a new leader times moves from when it first sees them).
#[derive(Debug, Default)]
pub(in crate::engine) struct RebalanceDuties {
    /// When this leader first saw each move in flight.
    seen: BTreeMap<GroupId, (NodeId, NodeId, Time)>,
    /// Proposals made and when, so none repeats before it could apply.
    proposed: BTreeMap<(GroupId, u8), Time>,
    last_check: Option<Time>,
    /// The placeable nodes at the last check.
    nodes_seen: Vec<NodeId>,
    /// When the last `StartRebalance` was proposed.
    started_at: Option<Time>,
}

const BEGIN: u8 = 0;
const SKIP: u8 = 1;
const ROLL_BACK: u8 = 2;

impl RebalanceDuties {
    fn gate(&mut self, key: (GroupId, u8), now: Time, retry_ms: u64) -> bool {
        if self
            .proposed
            .get(&key)
            .is_some_and(|at| now.as_millis() < at.as_millis() + retry_ms)
        {
            return false;
        }
        self.proposed.insert(key, now);
        true
    }
}

impl<S: StateMachine> Engine<S> {
    /// The cluster as the planner sees it now.
    pub fn rebalance_view(&self) -> ClusterView {
        ClusterView::from_metadata(&self.metadata.sm, self.metadata.sm.partition_sizes())
    }

    /// A plan for the cluster as it is, with at most `max_moves` moves
    /// (what `rebalance --dry-run` shows).
    pub fn rebalance_plan(&self, max_moves: usize) -> Plan {
        plan(
            &self.rebalance_view(),
            self.config.rebalance.limits(max_moves),
        )
    }

    pub(in crate::engine) fn maintain_rebalance(&mut self) {
        let now = self.now;
        let retry_ms = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let cfg = self.config.rebalance.clone();
        let g = &mut self.metadata;
        if !g.is_leader() || !g.raw.raft.commit_to_current_term() {
            self.rebalancer = RebalanceDuties::default();
            return;
        }
        let duties = &mut self.rebalancer;
        let md = &g.sm;
        let mut proposals = Vec::new();
        // Moves that overran their time roll back.
        let moving: BTreeMap<GroupId, crate::metadata::ReplicaMove> = md
            .partitions()
            .filter_map(|(_, p)| p.moving.map(|m| (p.group, m)))
            .collect();
        duties
            .seen
            .retain(|g, (f, t, _)| moving.get(g).is_some_and(|m| m.from == *f && m.to == *t));
        for (group, m) in &moving {
            let (_, _, since) = *duties.seen.entry(*group).or_insert((m.from, m.to, now));
            let overdue = now.as_millis() >= since.as_millis() + cfg.migration_timeout_ms;
            if overdue && !m.rolling_back && duties.gate((*group, ROLL_BACK), now, retry_ms) {
                proposals.push(MetadataCommand::RollBackReplicaMove {
                    group: *group,
                    from: m.from,
                    to: m.to,
                    reason: format!(
                        "node {} did not join the ISR within {} ms",
                        m.to, cfg.migration_timeout_ms
                    ),
                });
            }
        }
        // The run in flight: start moves as slots free up.
        if let Some(run) = md.active_rebalance().filter(|r| r.cancelled.is_none()) {
            let mut in_flight = md.moves_in_flight();
            for m in run.moves.iter().filter(|m| m.state == MoveState::Pending) {
                if in_flight >= run.max_concurrent_moves as usize {
                    break;
                }
                if moving.contains_key(&m.group) {
                    continue;
                }
                let begin = MetadataCommand::BeginReplicaMove {
                    group: m.group,
                    from: m.from,
                    to: m.to,
                };
                match md.validate(&begin) {
                    Ok(()) => {
                        in_flight += 1;
                        if duties.gate((m.group, BEGIN), now, retry_ms) {
                            proposals.push(begin);
                        }
                    }
                    Err(e) => {
                        if duties.gate((m.group, SKIP), now, retry_ms) {
                            proposals.push(MetadataCommand::SkipPlannedMove {
                                group: m.group,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            }
        } else if cfg.enabled
            && md.active_rebalance().is_none()
            && md.membership_in_flight().is_none()
            && duties
                .started_at
                .is_none_or(|at| now.as_millis() >= at.as_millis() + retry_ms)
        {
            let nodes = md.placeable_nodes();
            let due = duties
                .last_check
                .is_none_or(|at| now.as_millis() >= at.as_millis() + cfg.check_interval_ms);
            let changed = duties.last_check.is_some() && duties.nodes_seen != nodes;
            if duties.last_check.is_none() {
                // A new leader waits one interval, unless nodes change.
                duties.last_check = Some(now);
                duties.nodes_seen = nodes;
            } else if due || changed {
                duties.last_check = Some(now);
                duties.nodes_seen = nodes;
                let view = ClusterView::from_metadata(md, md.partition_sizes());
                let p = plan(&view, cfg.limits(usize::MAX));
                if !p.is_empty() {
                    let trigger = format!(
                        "background{}: {} over {} ({})",
                        if changed { ", nodes changed" } else { "" },
                        p.before.exceeding(cfg.imbalance_threshold).join(", "),
                        cfg.imbalance_threshold,
                        p.before
                    );
                    tracing::info!(
                        moves = p.moves.len(),
                        leaders = p.leaders.len(),
                        %trigger,
                        after = %p.after,
                        "rebalance planned"
                    );
                    duties.started_at = Some(now);
                    proposals.push(p.start_command(trigger, cfg.max_concurrent_moves));
                }
            }
        }
        for cmd in proposals {
            if md.validate(&cmd).is_err() {
                continue;
            }
            let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
            if g.raw.propose(vec![], data).is_ok() {
                self.dirty.insert(METADATA_GROUP);
            }
        }
    }
}
