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
                self.topics.remove(&name);
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
                p.moving = Some(ReplicaMove { from, to });
                tracing::info!(%partition, from, to, "replica move started");
                MetadataResponse::ReplicaMoveStarted {
                    partition,
                    from,
                    to,
                }
            }
            MetadataCommand::FinishReplicaMove { group, from, to } => {
                let min_insync_replicas = self
                    .partition_of_group(group)
                    .map_or(1, |(t, _)| t.min_insync_replicas);
                let (partition, p) = self.partition_mut(group);
                for r in p.replicas.iter_mut() {
                    if *r == from {
                        *r = to;
                    }
                }
                if p.preferred_leader == from {
                    p.preferred_leader = to;
                }
                // The new replica was promoted once caught up.
                if !crate::planted::active(crate::planted::Bug::IsrKeepsMovedReplica) {
                    p.isr.retain(|n| *n != from);
                }
                p.isr.push(to);
                p.moving = None;
                tracing::info!(%partition, from, to, "replica move finished");
                MetadataResponse::ReplicaMoveFinished {
                    partition,
                    group,
                    from,
                    to,
                    isr: p.isr.clone(),
                    min_insync_replicas,
                }
            }
            MetadataCommand::FinishMembershipChange { change } => {
                if let crate::membership::MembershipChange::Remove(id) = &change {
                    self.nodes.remove(id);
                    self.removed.insert(*id);
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
