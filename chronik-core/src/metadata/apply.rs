//! Applying committed metadata commands: every replica, in log order,
//! from replicated state alone.

use super::*;

impl MetadataState {
    /// Applies a committed command at `index`. A command that fails
    /// validation changes nothing but the applied index, identically on
    /// every replica.
    pub fn apply(&mut self, index: u64, cmd: MetadataCommand) -> Result<MetadataResponse, Error> {
        debug_assert!(index > self.applied_index, "metadata apply out of order");
        self.applied_index = index;
        self.validate(&cmd)?;
        let response = match cmd {
            MetadataCommand::Bootstrap { nodes } => {
                if self.bootstrapped {
                    return Ok(MetadataResponse::Bootstrapped { nodes: vec![] });
                }
                self.bootstrapped = true;
                let mut ids = Vec::new();
                for n in nodes {
                    ids.push(n.id);
                    self.nodes.insert(n.id, n);
                }
                MetadataResponse::Bootstrapped { nodes: ids }
            }
            MetadataCommand::RegisterNode { node } => {
                let id = node.id;
                self.nodes.insert(id, node);
                MetadataResponse::NodeRegistered { node: id }
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync_replicas,
                unclean_leader_election,
            } => {
                let nodes: Vec<NodeId> = self.placeable_nodes();
                let existing: Vec<&PartitionMeta> = self
                    .topics
                    .values()
                    .flat_map(|t| t.partitions.iter())
                    .collect();
                let placed = place_partitions(&nodes, &existing, partitions, replication_factor);
                let mut metas = Vec::with_capacity(placed.len());
                for (p, replicas) in placed.into_iter().enumerate() {
                    let group = self.next_group_id;
                    self.next_group_id += 1;
                    metas.push(PartitionMeta {
                        moving: None,
                        partition: p as u32,
                        group,
                        preferred_leader: replicas[0],
                        isr: replicas.clone(),
                        replicas,
                    });
                }
                let topic = TopicMeta {
                    name: name.clone(),
                    replication_factor,
                    min_insync_replicas,
                    unclean_leader_election,
                    partitions: metas,
                };
                self.topics.insert(name, topic.clone());
                MetadataResponse::TopicCreated { topic }
            }
            MetadataCommand::DeleteTopic { name } => {
                if let Some(t) = self.topics.remove(&name) {
                    for p in &t.partitions {
                        self.sizes.remove(&p.group);
                    }
                    if let Some(run) = self.rebalance.as_mut().filter(|r| r.active()) {
                        for m in run.moves.iter_mut().filter(|m| {
                            !m.state.is_terminal()
                                && t.partitions.iter().any(|p| p.group == m.group)
                        }) {
                            m.state = MoveState::Skipped {
                                reason: format!("topic {name} was deleted"),
                            };
                        }
                    }
                    self.maybe_finish_run();
                }
                MetadataResponse::TopicDeleted { name }
            }
            MetadataCommand::BeginMembershipChange { change } => {
                if let crate::membership::MembershipChange::Add(node) = &change {
                    self.nodes.insert(node.id, node.clone());
                }
                tracing::info!(%change, "membership change started");
                self.membership = Some(change.clone());
                MetadataResponse::MembershipChangeStarted { change }
            }
            MetadataCommand::BeginReplicaMove { group, from, to } => {
                let (partition, p) = self.partition_mut(group);
                p.moving = Some(ReplicaMove {
                    from,
                    to,
                    rolling_back: false,
                });
                if let Some(m) = self
                    .rebalance
                    .as_mut()
                    .filter(|r| r.active())
                    .and_then(|r| r.pending_move(group))
                    .filter(|m| m.from == from && m.to == to)
                {
                    m.state = MoveState::InFlight;
                }
                tracing::info!(%partition, from, to, "replica move started");
                MetadataResponse::ReplicaMoveStarted {
                    partition,
                    group,
                    from,
                    to,
                }
            }
            MetadataCommand::FinishReplicaMove { group, from, to } => {
                let min_insync_replicas = self.min_insync_of(group);
                let (partition, p) = self.partition_mut(group);
                for r in p.replicas.iter_mut() {
                    if *r == from {
                        *r = to;
                    }
                }
                if p.preferred_leader == from {
                    p.preferred_leader = to;
                }
                // The new replica was promoted once in the ISR.
                if !crate::planted::active(crate::planted::Bug::IsrKeepsMovedReplica) {
                    p.isr.retain(|n| *n != from);
                }
                if !p.isr.contains(&to) {
                    p.isr.push(to);
                }
                p.moving = None;
                tracing::info!(%partition, from, to, "replica move finished");
                let isr = p.isr.clone();
                if let Some(m) = self
                    .rebalance
                    .as_mut()
                    .and_then(|r| r.live_move(group, from, to))
                {
                    m.state = MoveState::Done;
                }
                self.maybe_finish_run();
                MetadataResponse::ReplicaMoveFinished {
                    partition,
                    group,
                    from,
                    to,
                    isr,
                    min_insync_replicas,
                }
            }
            MetadataCommand::ReportSizes { sizes } => {
                let mut partitions = 0;
                for (group, bytes) in sizes {
                    // A partition deleted since the report stays gone.
                    if self.partition_of_group(group).is_some() {
                        self.sizes.insert(group, bytes);
                        partitions += 1;
                    }
                }
                MetadataResponse::SizesReported { partitions }
            }
            MetadataCommand::StartRebalance {
                trigger,
                max_concurrent_moves,
                moves,
                leaders_now,
                leaders_after,
            } => {
                for l in &leaders_now {
                    self.partition_mut(l.group).1.preferred_leader = l.to;
                }
                let run = RebalanceRun {
                    id: index,
                    trigger,
                    max_concurrent_moves,
                    moves: moves
                        .into_iter()
                        .map(|(group, from, to, bytes)| RunMove {
                            group,
                            from,
                            to,
                            bytes,
                            state: MoveState::Pending,
                        })
                        .collect(),
                    leaders_after,
                    cancelled: None,
                    finished: false,
                };
                let count = run.moves.len();
                tracing::info!(
                    run = index,
                    moves = count,
                    leaders = leaders_now.len(),
                    trigger = %run.trigger,
                    "rebalance started"
                );
                self.rebalance = Some(run);
                self.maybe_finish_run();
                MetadataResponse::RebalanceStarted {
                    run: index,
                    moves: count,
                }
            }
            MetadataCommand::CancelRebalance { reason } => {
                let run = self.rebalance.as_mut().expect("validated: a run is active");
                for m in run
                    .moves
                    .iter_mut()
                    .filter(|m| m.state == MoveState::Pending)
                {
                    m.state = MoveState::Skipped {
                        reason: format!("cancelled: {reason}"),
                    };
                }
                tracing::info!(run = run.id, %reason, "rebalance cancelled");
                run.cancelled = Some(reason);
                let id = run.id;
                self.maybe_finish_run();
                MetadataResponse::RebalanceCancelled { run: id }
            }
            MetadataCommand::SkipPlannedMove { group, reason } => {
                let run = self.rebalance.as_mut().expect("validated: a run is active");
                let id = run.id;
                if let Some(m) = run.pending_move(group) {
                    tracing::info!(run = id, group, %reason, "planned move skipped");
                    m.state = MoveState::Skipped { reason };
                }
                self.maybe_finish_run();
                MetadataResponse::PlannedMoveSkipped { group }
            }
            MetadataCommand::RollBackReplicaMove {
                group,
                from,
                to,
                reason,
            } => {
                let min_insync_replicas = self.min_insync_of(group);
                let (partition, p) = self.partition_mut(group);
                if let Some(m) = p.moving.as_mut() {
                    m.rolling_back = true;
                }
                // The new replica leaves the ISR at once: it may be on its
                // way out of the group.
                p.isr.retain(|n| *n != to);
                let isr = p.isr.clone();
                tracing::warn!(%partition, from, to, %reason, "replica move rolling back");
                if let Some(m) = self
                    .rebalance
                    .as_mut()
                    .and_then(|r| r.live_move(group, from, to))
                {
                    m.state = MoveState::RollingBack {
                        reason: reason.clone(),
                    };
                }
                MetadataResponse::ReplicaMoveRollingBack {
                    partition,
                    group,
                    from,
                    to,
                    isr,
                    min_insync_replicas,
                    reason,
                }
            }
            MetadataCommand::AbortReplicaMove { group, from, to } => {
                let min_insync_replicas = self.min_insync_of(group);
                let (partition, p) = self.partition_mut(group);
                p.moving = None;
                p.isr.retain(|n| *n != to);
                let isr = p.isr.clone();
                tracing::info!(%partition, from, to, "replica move rolled back");
                if let Some(m) = self
                    .rebalance
                    .as_mut()
                    .and_then(|r| r.live_move(group, from, to))
                {
                    let reason = match &m.state {
                        MoveState::RollingBack { reason } => reason.clone(),
                        _ => "rolled back".into(),
                    };
                    m.state = MoveState::RolledBack { reason };
                }
                self.maybe_finish_run();
                MetadataResponse::ReplicaMoveRolledBack {
                    partition,
                    group,
                    from,
                    to,
                    isr,
                    min_insync_replicas,
                }
            }
            MetadataCommand::SetMaintenance { node, on } => {
                if on {
                    self.maintenance.insert(node);
                } else {
                    self.maintenance.remove(&node);
                }
                tracing::info!(node, on, "maintenance mode set");
                MetadataResponse::MaintenanceSet { node, on }
            }
            MetadataCommand::FinishMembershipChange { change } => {
                if let crate::membership::MembershipChange::Remove(id) = &change {
                    self.nodes.remove(id);
                    self.removed.insert(*id);
                    self.maintenance.remove(id);
                }
                tracing::info!(%change, "membership change finished");
                self.membership = None;
                MetadataResponse::MembershipChangeFinished { change }
            }
            MetadataCommand::UpdateIsr {
                group, isr, reason, ..
            } => {
                let (topic, min_insync_replicas, p) = self
                    .topics
                    .values_mut()
                    .find_map(|t| {
                        let (name, min) = (t.name.clone(), t.min_insync_replicas);
                        t.partitions
                            .iter_mut()
                            .find(|p| p.group == group)
                            .map(|p| (name, min, p))
                    })
                    .expect("validated: the group has a partition");
                let partition = PartitionId::new(topic, p.partition);
                if isr.iter().any(|n| !p.isr.contains(n)) {
                    self.isr_expands += 1;
                }
                if p.isr.iter().any(|n| !isr.contains(n)) {
                    self.isr_shrinks += 1;
                }
                tracing::info!(%partition, from = ?p.isr, to = ?isr, %reason, "ISR changed");
                p.isr = isr.clone();
                MetadataResponse::IsrUpdated {
                    partition,
                    group,
                    isr,
                    min_insync_replicas,
                    reason,
                }
            }
        };
        self.debug_check_invariants();
        Ok(response)
    }
}

impl MetadataState {
    /// The `min_insync_replicas` of the topic of `group` (1 if none).
    fn min_insync_of(&self, group: GroupId) -> u32 {
        self.partition_of_group(group)
            .map_or(1, |(t, _)| t.min_insync_replicas)
    }
}
