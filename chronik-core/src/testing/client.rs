//! Client and operator requests as a test sends them, and what came back.

use super::*;

impl Cluster {
    /// Sends a command to a node. If it is down the request is lost (no
    /// reply ever arrives), as it would be on a real network.
    pub fn command(&mut self, node: NodeId, command: Command<RecordLog>) -> RequestId {
        let rid = self.next_request;
        self.next_request += 1;
        if let Some(engine) = self.nodes.get_mut(&node).and_then(|n| n.engine.as_mut()) {
            engine.handle_command(Time(self.now), rid, command);
            self.drain(node);
        }
        rid
    }

    /// Runs a metadata command on the metadata leader and waits (10 s of
    /// simulated time at most) for its answer.
    ///
    /// # Panics
    /// If no metadata leader is elected or no answer comes in time, or the
    /// answer is not a metadata one: the test's failure.
    pub fn metadata_command(
        &mut self,
        cmd: crate::MetadataCommand,
    ) -> Result<crate::MetadataResponse, Error> {
        let leader = self
            .elect(METADATA_GROUP, 10_000)
            .expect("a metadata leader");
        let rid = self.command(leader, Command::Metadata(cmd));
        assert!(self.run_until(10_000, |c| c.replies.contains_key(&rid)));
        match self.replies[&rid].clone() {
            Ok(Response::Metadata(r)) => Ok(r),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(e) => Err(e),
        }
    }

    /// Produces one record through the partition's serving leader and
    /// requires it acknowledged (within 10 s of simulated time).
    ///
    /// # Panics
    /// If nobody serves the partition or the produce fails.
    pub fn produce_ok(&mut self, p: &PartitionId, v: &str) {
        let leader = self.serving(p, 10_000).expect("a partition leader");
        let rid = self.produce(leader, p, vec![Bytes::from(v.to_string())]);
        assert!(self.run_until(10_000, |c| c.replies.contains_key(&rid)));
        assert!(
            matches!(self.replies[&rid], Ok(Response::Applied(_))),
            "{p}: {:?}",
            self.replies[&rid]
        );
    }

    /// Starts a graceful shutdown's leadership handoff on a node (see
    /// [`Engine::begin_leaving`]).
    pub fn begin_leaving(&mut self, node: NodeId) {
        if let Some(engine) = self.nodes.get_mut(&node).and_then(|n| n.engine.as_mut()) {
            engine.begin_leaving(Time(self.now));
            self.drain(node);
        }
    }

    /// Asks `node` to send metadata member `to` (every member if `None`)
    /// what it misses now (see [`Engine::replicate_metadata_now`]).
    pub fn replicate_metadata(
        &mut self,
        node: NodeId,
        to: Option<NodeId>,
    ) -> Result<crate::ReplicateNow, crate::Error> {
        let now = Time(self.now);
        let engine = self
            .nodes
            .get_mut(&node)
            .and_then(|n| n.engine.as_mut())
            .ok_or(crate::Error::UnknownNode { node })?;
        let r = engine.replicate_metadata_now(now, to);
        self.drain(node);
        r
    }

    /// Produces `records` through `node`, remembering them for the checks.
    pub fn produce(
        &mut self,
        node: NodeId,
        partition: &PartitionId,
        records: Vec<Bytes>,
    ) -> RequestId {
        let rid = self.next_request;
        self.sent_produces.insert(
            rid,
            SentProduce {
                partition: partition.clone(),
                records: records.clone(),
            },
        );
        self.command(
            node,
            Command::Propose {
                partition: partition.clone(),
                command: RecordCommand::Append {
                    records,
                    timestamp_ms: self.now,
                },
            },
        )
    }

    /// Fetches through `node` (a linearizable read on the leader). A
    /// successful reply must show every record acknowledged before the
    /// fetch was sent; the checker flags a stale read otherwise.
    pub fn fetch(&mut self, node: NodeId, partition: &PartitionId, offset: u64) -> RequestId {
        self.fetch_with(node, partition, offset, crate::ReadConsistency::Leader)
    }

    /// Fetches through `node` with the given consistency. Linearizable
    /// levels are checked for stale reads; `FollowerStale` replies only for
    /// agreeing with acknowledged records.
    pub fn fetch_with(
        &mut self,
        node: NodeId,
        partition: &PartitionId,
        offset: u64,
        consistency: crate::ReadConsistency,
    ) -> RequestId {
        let end = match consistency {
            crate::ReadConsistency::FollowerStale => 0,
            _ => self.acked_end.get(partition).copied().unwrap_or(0),
        };
        self.fetch_expect
            .insert(self.next_request, (partition.clone(), end));
        self.command(
            node,
            Command::Query {
                partition: partition.clone(),
                query: RecordQuery::Fetch {
                    offset,
                    max_bytes: u64::MAX,
                },
                consistency,
            },
        )
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        rf: u32,
    ) -> Result<Vec<PartitionId>, String> {
        self.create_topic_with(name, partitions, rf, 1, false)
    }

    /// Creates a topic with every option and waits for its leaders.
    pub fn create_topic_with(
        &mut self,
        name: &str,
        partitions: u32,
        rf: u32,
        min_insync_replicas: u32,
        unclean_leader_election: bool,
    ) -> Result<Vec<PartitionId>, String> {
        let leader = self
            .elect(METADATA_GROUP, 10_000)
            .ok_or("no metadata leader")?;
        self.run_until(10_000, |c| {
            c.engine(leader)
                .is_some_and(|e| e.metadata().nodes().count() as u64 == c.config.nodes)
        });
        let rid = self.command(
            leader,
            Command::Metadata(MetadataCommand::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: rf,
                min_insync_replicas,
                unclean_leader_election,
            }),
        );
        self.run_until(10_000, |c| c.replies.contains_key(&rid));
        match self.replies.get(&rid) {
            Some(Ok(_)) => {}
            other => return Err(format!("create topic {name}: {other:?}")),
        }
        let ids: Vec<PartitionId> = (0..partitions).map(|p| PartitionId::new(name, p)).collect();
        for p in &ids {
            self.serving(p, 10_000)
                .ok_or(format!("no leader serving {p}"))?;
        }
        // Leadership settles on the preferred leaders (they take it over
        // from whoever won the first election), so a test starts from the
        // placement metadata asks for, not from election luck.
        let preferred = |c: &Cluster, p: &PartitionId| {
            c.engine(leader)
                .and_then(|e| e.metadata().partition(p).ok().map(|m| m.preferred_leader))
                .filter(|n| c.is_up(*n))
        };
        self.run_until(10_000, |c| {
            ids.iter().all(|p| {
                preferred(c, p).is_none_or(|n| {
                    c.group_of(p).and_then(|g| c.leader_of(g)).is_some_and(|l| {
                        l == n && c.engine(n).is_some_and(|e| e.check_leader(p).is_ok())
                    })
                })
            })
        });
        Ok(ids)
    }

    /// Checks, on a healed and quiet cluster, that every acknowledged record
    /// is on every running replica at its offset and that replicas agree.
    pub fn check_acked_durable(&mut self) {
        let mut by_partition: BTreeMap<PartitionId, Vec<&Acked>> = BTreeMap::new();
        for a in &self.acked {
            by_partition.entry(a.partition.clone()).or_default().push(a);
        }
        let mut problems = Vec::new();
        for (pid, acks) in &by_partition {
            let mut reference: Option<(NodeId, Vec<Bytes>)> = None;
            for (id, n) in &self.nodes {
                let Some(e) = n.engine.as_ref() else { continue };
                let Some(log) = e.partition_state(pid) else {
                    continue;
                };
                for a in acks {
                    for (i, r) in a.records.iter().enumerate() {
                        let off = a.base_offset + i as u64;
                        if log.get(off) != Some(r) {
                            problems.push(format!(
                                "lost write: node {id} {pid} offset {off} holds {:?}, acknowledged {r:?}",
                                log.get(off)
                            ));
                        }
                    }
                }
                let all: Vec<Bytes> = (0..log.high_watermark())
                    .filter_map(|o| log.get(o).cloned())
                    .collect();
                match &reference {
                    None => reference = Some((*id, all)),
                    Some((rid, rlog)) => {
                        let common = rlog.len().min(all.len());
                        if rlog[..common] != all[..common] {
                            problems.push(format!(
                                "replicas {rid} and {id} of {pid} hold different records"
                            ));
                        }
                    }
                }
            }
        }
        for p in problems {
            self.checker.violation(p);
        }
    }
}
