//! The one executor of reconfiguration steps. The membership controller
//! (on the metadata group) and the replica-move controller (on partition
//! groups) each decide the next step from applied state
//! (`membership::next_step`, `membership::next_move_step`); this reads the
//! facts they decide from and carries the step out, the same way for both,
//! without repeating a step before its proposal could have applied.

use super::*;
use crate::group::{Duties, GroupStateMachine};
use crate::membership::{ConfView, Step};
use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};

/// What a step is decided from: the applied configuration and the leader's
/// view of its followers.
pub(in crate::engine) struct ConfFacts {
    pub conf: ConfView,
    /// `target` holds every committed entry and was heard from within the
    /// last election timeout.
    pub caught_up: bool,
    /// The most caught-up voter other than this node and `excluded`: where
    /// leadership goes when this node must hand it over.
    pub best_other: Option<NodeId>,
}

/// Reads [`ConfFacts`] off the group this node leads.
pub(in crate::engine) fn conf_facts<M, Q, D: Duties>(
    g: &Group<M, Q, D>,
    me: NodeId,
    target: NodeId,
    excluded: Option<NodeId>,
) -> ConfFacts {
    let conf = conf_view(&g.raw);
    let raft = &g.raw.raft;
    let commit = raft.raft_log.committed;
    let caught_up = raft
        .prs()
        .get(target)
        .is_some_and(|pr| pr.matched >= commit && pr.recent_active);
    let best_other = raft
        .prs()
        .iter()
        .filter(|(id, _)| **id != me && Some(**id) != excluded && conf.voters.contains(id))
        .max_by_key(|(_, pr)| pr.matched)
        .map(|(id, _)| *id);
    ConfFacts {
        conf,
        caught_up,
        best_other,
    }
}

/// The step a controller last took on a group, and when: a new step goes
/// at once, the same one again only after `retry_ms` (its proposal may
/// have been lost with a leader change).
#[derive(Debug, Default)]
pub(in crate::engine) struct StepGate(Option<(Step, Time)>);

impl StepGate {
    pub fn allows(&self, step: &Step, now: Time, retry_ms: u64) -> bool {
        !self
            .0
            .as_ref()
            .is_some_and(|(s, at)| s == step && now.as_millis() < at.as_millis() + retry_ms)
    }

    pub fn taken(&mut self, step: Step, now: Time) {
        self.0 = Some((step, now));
    }
}

/// What [`execute`] did with a step.
pub(in crate::engine) enum Executed {
    /// Handed to raft-rs: a configuration change proposed, or a leadership
    /// transfer started.
    Proposed(raft::Result<()>),
    /// The learner is catching up; `compacted` when a snapshot listing it
    /// had to be taken first (the group then has a ready to handle).
    Waiting { compacted: bool },
    /// Not a Raft reconfiguration: the controller carries it out itself.
    Controller,
}

/// Carries out `step` on the group this node leads.
pub(in crate::engine) fn execute<S, M, Q, D>(
    g: &mut Group<M, Q, D>,
    step: &Step,
    sink: &mut Sink<S>,
) -> Executed
where
    S: StateMachine,
    M: GroupStateMachine<S>,
    D: Duties,
{
    let single = |change_type: ConfChangeType, node_id: NodeId| ConfChangeSingle {
        change_type,
        node_id,
        ..Default::default()
    };
    let cc = |changes: Vec<ConfChangeSingle>, transition: ConfChangeTransition| ConfChangeV2 {
        changes: changes.into(),
        transition,
        ..Default::default()
    };
    let proposed = match step {
        Step::AwaitCatchUp(id) => {
            // The learner must start from a snapshot that lists it as a
            // learner (the configuration is in snapshots, not in the log):
            // take one once its addition has applied, unless one already
            // does. One listing it as a voter is from before it left (a
            // replica moving back in), and does not count.
            let cs = g
                .raw
                .store()
                .latest_snapshot()
                .get_metadata()
                .get_conf_state();
            let listed = cs.learners.contains(id);
            if !listed {
                g.force_compact(sink);
            }
            return Executed::Waiting { compacted: !listed };
        }
        Step::AddLearner(id) => g.raw.propose_conf_change(
            vec![],
            cc(
                vec![single(ConfChangeType::AddLearnerNode, *id)],
                ConfChangeTransition::Auto,
            ),
        ),
        Step::EnterJoint { promote, remove } => {
            let mut changes = Vec::new();
            if let Some(id) = promote {
                changes.push(single(ConfChangeType::AddNode, *id));
            }
            if let Some(id) = remove {
                changes.push(single(ConfChangeType::RemoveNode, *id));
            }
            g.raw
                .propose_conf_change(vec![], cc(changes, ConfChangeTransition::Explicit))
        }
        Step::RemoveLearner(id) => g.raw.propose_conf_change(
            vec![],
            cc(
                vec![single(ConfChangeType::RemoveNode, *id)],
                ConfChangeTransition::Auto,
            ),
        ),
        Step::LeaveJoint => g.raw.propose_conf_change(vec![], ConfChangeV2::default()),
        Step::TransferLeadership(to) => {
            g.raw.transfer_leader(*to);
            sink.event(Event::LeadershipTransfer {
                group: g.id,
                to: *to,
                reason: "leaving the group's configuration",
            });
            Ok(())
        }
        Step::MoveReplicasOff(_) | Step::Finish | Step::Abort => return Executed::Controller,
    };
    Executed::Proposed(proposed)
}
