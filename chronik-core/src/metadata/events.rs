//! What an applied metadata command tells observers: ISR changes (every
//! kind of command that changes an ISR reports it, so observers follow
//! each partition's ISR from its first applied state on) and rebalancing
//! decisions.

use super::*;
use crate::output::Event;

impl MetadataResponse {
    /// The events applying this response's command emits.
    pub(crate) fn events(&self) -> Vec<Event> {
        let isr = |partition: &PartitionId,
                   group: &GroupId,
                   isr: &[NodeId],
                   min: &u32,
                   reason: String| Event::IsrChanged {
            partition: partition.clone(),
            group: *group,
            isr: isr.to_vec(),
            min_insync_replicas: *min,
            reason,
        };
        let decision = |decision, group| Event::RebalanceDecision { decision, group };
        match self {
            MetadataResponse::IsrUpdated {
                partition,
                group,
                isr: now,
                min_insync_replicas,
                reason,
            } => vec![isr(
                partition,
                group,
                now,
                min_insync_replicas,
                reason.clone(),
            )],
            MetadataResponse::TopicCreated { topic } => topic
                .partitions
                .iter()
                .map(|p| {
                    isr(
                        &PartitionId::new(&topic.name, p.partition),
                        &p.group,
                        &p.isr,
                        &topic.min_insync_replicas,
                        "topic created".into(),
                    )
                })
                .collect(),
            MetadataResponse::ReplicaMoveFinished {
                partition,
                group,
                from,
                to,
                isr: now,
                min_insync_replicas,
            } => vec![
                isr(
                    partition,
                    group,
                    now,
                    min_insync_replicas,
                    format!("replica moved from node {from} to node {to}"),
                ),
                decision("move_finished", Some(*group)),
            ],
            MetadataResponse::ReplicaMoveRollingBack {
                partition,
                group,
                from,
                to,
                isr: now,
                min_insync_replicas,
                ..
            }
            | MetadataResponse::ReplicaMoveRolledBack {
                partition,
                group,
                from,
                to,
                isr: now,
                min_insync_replicas,
            } => {
                let kind = if matches!(self, MetadataResponse::ReplicaMoveRolledBack { .. }) {
                    "move_rolled_back"
                } else {
                    "move_rolling_back"
                };
                vec![
                    isr(
                        partition,
                        group,
                        now,
                        min_insync_replicas,
                        format!("move of a replica from node {from} to node {to} rolled back"),
                    ),
                    decision(kind, Some(*group)),
                ]
            }
            MetadataResponse::RebalanceStarted { .. } => vec![decision("run_started", None)],
            MetadataResponse::RebalanceCancelled { .. } => vec![decision("run_cancelled", None)],
            MetadataResponse::ReplicaMoveStarted { group, .. } => {
                vec![decision("move_started", Some(*group))]
            }
            MetadataResponse::PlannedMoveSkipped { group } => {
                vec![decision("move_skipped", Some(*group))]
            }
            _ => Vec::new(),
        }
    }
}
