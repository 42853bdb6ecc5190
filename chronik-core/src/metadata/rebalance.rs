//! A rebalance run as the metadata group records it: the plan's moves with
//! their state, so any metadata leader (after a crash, a new one) carries
//! the same run on, and every node can say where it stands.

use super::*;

/// Where one planned move stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveState {
    /// Not started: waits for a free slot (`max_concurrent_moves`).
    Pending,
    /// Recorded on its partition (`PartitionMeta::moving`).
    InFlight,
    /// Rolling back: the new replica is being removed.
    RollingBack {
        reason: String,
    },
    Done,
    RolledBack {
        reason: String,
    },
    /// Never started: its partition changed since the plan was made, or the
    /// run was cancelled.
    Skipped {
        reason: String,
    },
}

impl MoveState {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            MoveState::Done | MoveState::RolledBack { .. } | MoveState::Skipped { .. }
        )
    }
}

/// One move of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMove {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    pub bytes: u64,
    pub state: MoveState,
}

/// A preferred-leadership change of a plan.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedLeader {
    pub group: GroupId,
    pub to: NodeId,
}

/// The latest rebalance run (kept once finished, for its status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceRun {
    /// The metadata index that started it.
    pub id: u64,
    /// Who asked: `"background"` or `"operator"`, with the imbalance seen.
    pub trigger: String,
    pub max_concurrent_moves: u32,
    pub moves: Vec<RunMove>,
    /// Made once every move is over (they balance what the moves leave).
    pub leaders_after: Vec<PlannedLeader>,
    pub cancelled: Option<String>,
    pub finished: bool,
}

impl RebalanceRun {
    /// Moves that are recorded on their partitions now.
    pub fn in_flight(&self) -> usize {
        self.moves
            .iter()
            .filter(|m| matches!(m.state, MoveState::InFlight | MoveState::RollingBack { .. }))
            .count()
    }

    pub fn active(&self) -> bool {
        !self.finished
    }

    pub(super) fn pending_move(&mut self, group: GroupId) -> Option<&mut RunMove> {
        self.moves
            .iter_mut()
            .find(|m| m.group == group && m.state == MoveState::Pending)
    }

    pub(super) fn live_move(
        &mut self,
        group: GroupId,
        from: NodeId,
        to: NodeId,
    ) -> Option<&mut RunMove> {
        self.moves.iter_mut().find(|m| {
            m.group == group
                && m.from == from
                && m.to == to
                && matches!(m.state, MoveState::InFlight | MoveState::RollingBack { .. })
        })
    }
}

impl MetadataState {
    /// The latest rebalance run, finished or not.
    pub fn rebalance_run(&self) -> Option<&RebalanceRun> {
        self.rebalance.as_ref()
    }

    /// The run in flight, if any.
    pub fn active_rebalance(&self) -> Option<&RebalanceRun> {
        self.rebalance.as_ref().filter(|r| r.active())
    }

    /// Partitions with a replica move recorded, cluster-wide.
    pub fn moves_in_flight(&self) -> usize {
        self.partitions()
            .filter(|(_, p)| p.moving.is_some())
            .count()
    }

    /// Ends the active run once every move is over: its after-move
    /// leadership changes are made where they still name an in-sync
    /// replica.
    pub(super) fn maybe_finish_run(&mut self) {
        let Some(run) = self.rebalance.as_mut().filter(|r| r.active()) else {
            return;
        };
        if !run.moves.iter().all(|m| m.state.is_terminal()) {
            return;
        }
        run.finished = true;
        let (id, leaders) = (run.id, run.leaders_after.clone());
        let cancelled = run.cancelled.is_some();
        if !cancelled {
            for l in leaders {
                if let Some((_, p)) = self.partition_of_group_mut(l.group) {
                    if p.replicas.contains(&l.to) && p.isr.contains(&l.to) {
                        p.preferred_leader = l.to;
                    }
                }
            }
        }
        tracing::info!(run = id, cancelled, "rebalance finished");
    }

    pub(super) fn validate_start_rebalance(
        &self,
        moves: &[(GroupId, NodeId, NodeId, u64)],
        leaders_now: &[PlannedLeader],
        max_concurrent_moves: u32,
    ) -> Result<(), Error> {
        if let Some(c) = &self.membership {
            return Err(Error::ChangeInProgress {
                change: c.to_string(),
            });
        }
        if let Some(r) = self.active_rebalance() {
            let done = r.moves.iter().filter(|m| m.state.is_terminal()).count();
            return Err(Error::ChangeInProgress {
                change: format!(
                    "rebalance {} ({done} of {} moves over)",
                    r.id,
                    r.moves.len()
                ),
            });
        }
        if max_concurrent_moves == 0 {
            return Err(Error::invalid("max_concurrent_moves must be at least 1"));
        }
        let placeable = self.placeable_nodes();
        for (group, from, to, _) in moves {
            let (_, p) = self
                .partition_of_group(*group)
                .ok_or_else(|| Error::invalid(format!("group {group} replicates no partition")))?;
            if !p.replicas.contains(from) || !placeable.contains(to) || from == to {
                return Err(Error::invalid(format!(
                    "cannot plan a move of group {group} from node {from} to node {to}: replicas are {:?}",
                    p.replicas
                )));
            }
        }
        for l in leaders_now {
            let (_, p) = self.partition_of_group(l.group).ok_or_else(|| {
                Error::invalid(format!("group {} replicates no partition", l.group))
            })?;
            if !p.replicas.contains(&l.to) {
                return Err(Error::invalid(format!(
                    "node {} is not a replica of group {}",
                    l.to, l.group
                )));
            }
        }
        Ok(())
    }

    pub(super) fn partition_of_group_mut(
        &mut self,
        group: GroupId,
    ) -> Option<(PartitionId, &mut PartitionMeta)> {
        self.topics.values_mut().find_map(|t| {
            let name = t.name.clone();
            t.partitions
                .iter_mut()
                .find(|p| p.group == group)
                .map(|p| (PartitionId::new(name, p.partition), p))
        })
    }
}
