//! Command admission: which node and group may take a command, and
//! starting it.

use super::*;

impl<S: StateMachine> Engine<S> {
    pub(in crate::engine) fn start_command(
        &mut self,
        request_id: RequestId,
        command: Command<S>,
    ) -> Result<(), Error> {
        match command {
            Command::Metadata(
                MetadataCommand::BeginMembershipChange { .. }
                | MetadataCommand::FinishMembershipChange { .. }
                | MetadataCommand::BeginReplicaMove { .. }
                | MetadataCommand::FinishReplicaMove { .. }
                | MetadataCommand::UpdateIsr { .. },
            ) => {
                return Err(Error::invalid(
                    "membership and ISR changes are made by the engine itself; use Command::Membership",
                ));
            }
            Command::Membership(change) => {
                let alive = self.alive_nodes();
                let g = &mut self.metadata;
                if !g.is_leader() {
                    return Err(Error::NotLeader {
                        group: METADATA_GROUP,
                        leader_hint: g.leader_hint(),
                    });
                }
                if !g.raw.raft.commit_to_current_term() {
                    return Err(Error::LeaderNotReady {
                        group: METADATA_GROUP,
                    });
                }
                let conf = conf_view(&g.raw);
                crate::membership::validate(&change, &g.sm, &conf, &alive)?;
                let cmd = MetadataCommand::BeginMembershipChange { change };
                g.sm.validate(&cmd)?;
                let data = postcard::to_stdvec(&cmd).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                self.dirty.insert(METADATA_GROUP);
            }
            Command::Metadata(cmd) => {
                let g = &mut self.metadata;
                if !g.is_leader() {
                    return Err(Error::NotLeader {
                        group: METADATA_GROUP,
                        leader_hint: g.leader_hint(),
                    });
                }
                if let MetadataCommand::CreateTopic { partitions, .. } = &cmd {
                    if *partitions > self.config.topic_partitions_max {
                        return Err(Error::invalid(format!(
                            "{partitions} partitions exceed topic_partitions_max ({})",
                            self.config.topic_partitions_max
                        )));
                    }
                }
                g.sm.validate(&cmd)?;
                check_pending(g.id, g.pending_count(), self.config.pending_proposals_max)?;
                let data = postcard::to_stdvec(&cmd).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                self.dirty.insert(METADATA_GROUP);
            }
            Command::Propose { partition, command } => {
                let group = self.leader_group(&partition)?;
                let (isr, min) = self.isr_size(&partition)?;
                if isr < min {
                    return Err(Error::NotEnoughReplicas {
                        partition,
                        isr,
                        min,
                    });
                }
                let max = self.config.pending_proposals_max;
                let g = self
                    .partitions
                    .get_mut(&group)
                    .expect("leader_group checked");
                if let Some(reason) = &g.repair {
                    // Its leadership is being handed off: nothing would
                    // apply the entry here.
                    return Err(Error::ReplicaRepairing {
                        group,
                        reason: reason.clone(),
                    });
                }
                g.sm.0.validate(&command)?;
                check_pending(group, g.pending_count(), max)?;
                let data =
                    postcard::to_stdvec(&command).map_err(|e| Error::invalid(e.to_string()))?;
                g.propose(data, Some(request_id), &mut self.sink)?;
                if self.sink.emit_apply_events {
                    let index = g.raw.raft.raft_log.last_index();
                    self.sink.event(Event::ProduceAccepted { group, index });
                }
                self.dirty.insert(group);
                self.produce_checks.insert(request_id, partition);
            }
            Command::Query {
                partition,
                query,
                consistency,
            } => {
                if crate::planted::active(crate::planted::Bug::StaleRead) {
                    // Planted bug (simulation builds only): any replica
                    // answers from its own applied state, with no
                    // leadership or ReadIndex.
                    let group = self.metadata.sm.partition(&partition)?.group;
                    let g = self.partitions.get(&group).ok_or(Error::NotLeader {
                        group,
                        leader_hint: None,
                    })?;
                    let r = g.sm.0.query(&query).map(Response::Query);
                    self.sink.reply(request_id, r);
                    return Ok(());
                }
                let group = match consistency {
                    ReadConsistency::Leader => self.leader_group(&partition)?,
                    ReadConsistency::Follower | ReadConsistency::FollowerStale => {
                        self.replica_group(&partition)?
                    }
                };
                let g = self.partitions.get_mut(&group).expect("checked hosted");
                if let Some(reason) = &g.repair {
                    return Err(Error::ReplicaRepairing {
                        group,
                        reason: reason.clone(),
                    });
                }
                if consistency == ReadConsistency::FollowerStale {
                    let r = g.sm.0.query(&query).map(Response::Query);
                    self.sink.reply(request_id, r);
                    return Ok(());
                }
                if g.is_leader() && !g.raw.raft.commit_to_current_term() {
                    return Err(Error::LeaderNotReady { group });
                }
                if !g.is_leader() && g.leader_hint().is_none() {
                    // raft-rs would drop the request: no one to ask.
                    return Err(Error::NotLeader {
                        group,
                        leader_hint: None,
                    });
                }
                if g.reads_count() >= READS_PENDING_MAX {
                    return Err(Error::Busy {
                        group,
                        pending: g.reads_count(),
                        max: READS_PENDING_MAX,
                    });
                }
                let deadline = self.now.plus_millis(self.config.read_timeout_ms);
                g.reads.push(request_id, query, deadline);
                self.dirty.insert(group);
            }
        }
        Ok(())
    }

    /// Whether this node would accept a produce to `partition` now as its
    /// leader (leading, metadata confirmed fresh, in the ISR or unclean
    /// allowed), else why not. The ISR minimum is checked separately.
    pub fn check_leader(&self, partition: &PartitionId) -> Result<GroupId, Error> {
        self.leader_group(partition)
    }

    /// `(ISR size, min_insync_replicas)` of a partition, as applied here.
    pub(in crate::engine) fn isr_size(&self, partition: &PartitionId) -> Result<(u32, u32), Error> {
        let meta = self.metadata.sm.partition(partition)?;
        let topic =
            self.metadata
                .sm
                .topic(&partition.topic)
                .ok_or_else(|| Error::UnknownTopic {
                    topic: partition.topic.clone(),
                })?;
        Ok((meta.isr.len() as u32, topic.min_insync_replicas))
    }

    /// The local group of `partition` if this node hosts a replica of it.
    pub(in crate::engine) fn replica_group(
        &self,
        partition: &PartitionId,
    ) -> Result<GroupId, Error> {
        let meta = self.metadata.sm.partition(partition)?;
        if self.partitions.contains_key(&meta.group) {
            Ok(meta.group)
        } else {
            Err(Error::NotLeader {
                group: meta.group,
                leader_hint: Some(meta.preferred_leader),
            })
        }
    }

    /// The local group of `partition` if this node leads it and may serve
    /// as its leader (it is in the ISR, or the topic allows unclean
    /// leaders), else why not.
    pub(in crate::engine) fn leader_group(
        &self,
        partition: &PartitionId,
    ) -> Result<GroupId, Error> {
        let meta = self.metadata.sm.partition(partition)?;
        let me = self.config.node_id;
        let unclean = self
            .metadata
            .sm
            .topic(&partition.topic)
            .is_some_and(|t| t.unclean_leader_election);
        match self.partitions.get(&meta.group) {
            Some(g) if g.is_leader() && g.duties.metadata_fresh_term != Some(g.raw.raft.term) => {
                // A new leader first makes sure its metadata (the ISR it
                // enforces) is not stale: one metadata ReadIndex round.
                Err(Error::LeaderNotReady { group: meta.group })
            }
            Some(g)
                if g.is_leader()
                    && !meta.isr.contains(&me)
                    && !unclean
                    // Planted bug (simulation builds only): no ISR check.
                    && !crate::planted::active(crate::planted::Bug::LeaderOutsideIsrServes) =>
            {
                Err(Error::LeaderNotInSync {
                    partition: partition.clone(),
                    leader: me,
                    isr: meta.isr.clone(),
                })
            }
            Some(g) if g.is_leader() => Ok(meta.group),
            Some(g) => Err(Error::NotLeader {
                group: meta.group,
                leader_hint: g.leader_hint(),
            }),
            // Not a replica here: the preferred leader is the best guess.
            None => Err(Error::NotLeader {
                group: meta.group,
                leader_hint: Some(meta.preferred_leader),
            }),
        }
    }
}
