//! Driving the cluster: one event at a time (a delivery, a durable batch,
//! a tick), each node's outputs executed, until a condition holds.

use super::*;

impl Cluster {
    /// Processes every event due at the next point in time. Returns false if
    /// nothing is scheduled at all.
    pub fn step(&mut self) -> bool {
        let next_net = self.network.peek().map(|Reverse((f, _))| f.deliver_at);
        let next_disk = self
            .nodes
            .values()
            .filter(|n| n.engine.is_some())
            .filter_map(|n| n.unsynced.front().map(|(t, _)| *t))
            .min();
        let next_tick = self
            .nodes
            .values()
            .filter_map(|n| n.engine.as_ref().map(|e| e.poll_timeout().as_millis()))
            .min();
        let Some(t) = [next_net, next_disk, next_tick].into_iter().flatten().min() else {
            return false;
        };
        self.now = self.now.max(t);
        let now = self.now;

        // Disks first: a batch completes, then what waited on it is sent.
        let ids = self.node_ids();
        for id in &ids {
            loop {
                let n = self.nodes.get_mut(id).expect("known");
                let Some(engine) = n.engine.as_mut() else {
                    break;
                };
                if n.unsynced.front().is_none_or(|(at, _)| *at > now) {
                    break;
                }
                let (_, batch) = n.unsynced.pop_front().expect("checked");
                n.disk.apply_batch(&batch).unwrap_or_else(|e| {
                    panic!("node {id}: engine wrote an inconsistent batch: {e}")
                });
                engine.handle_persisted(Time(now), batch.ticket);
                self.drain(*id);
            }
        }
        while self
            .network
            .peek()
            .is_some_and(|Reverse((f, _))| f.deliver_at <= now)
        {
            let Reverse((f, key)) = self.network.pop().expect("checked");
            let Some(msgs) = self.payloads.remove(&key) else {
                continue;
            };
            if self.blocked.contains(&(f.from, f.to)) {
                continue;
            }
            if let Some(engine) = self.nodes.get_mut(&f.to).and_then(|n| n.engine.as_mut()) {
                match engine.handle_messages(Time(now), f.from, msgs) {
                    // A removed node keeps talking until it learns it was
                    // removed (a real node then stops), and a new member
                    // may talk partition business to a node whose metadata
                    // does not list it yet: refusing either is right.
                    Err(
                        crate::Error::NodeRemoved { node } | crate::Error::UnknownNode { node },
                    ) if node == f.from => {}
                    Err(e) => self
                        .checker
                        .violation(format!("node {} refused a peer batch: {e}", f.to)),
                    Ok(()) => {}
                }
                self.drain(f.to);
            }
        }
        for id in &ids {
            let due = self.nodes[id]
                .engine
                .as_ref()
                .is_some_and(|e| e.poll_timeout().as_millis() <= now);
            if due {
                self.nodes
                    .get_mut(id)
                    .and_then(|n| n.engine.as_mut())
                    .expect("checked")
                    .handle_tick(Time(now));
                self.drain(*id);
            }
        }
        true
    }

    /// Runs for `ms` of simulated time.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            if !self.step() {
                self.now = end;
            }
        }
    }

    /// Runs until `pred` holds, for at most `max_ms`. Returns whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Cluster) -> bool) -> bool {
        let end = self.now + max_ms;
        while self.now < end {
            if pred(self) {
                return true;
            }
            if !self.step() {
                break;
            }
        }
        pred(self)
    }

    /// Runs until `group` has a leader.
    pub fn elect(&mut self, group: GroupId, max_ms: u64) -> Option<NodeId> {
        self.run_until(max_ms, |c| c.leader_of(group).is_some());
        self.leader_of(group)
    }

    /// Runs until some node leads `partition` and accepts produces (its
    /// metadata confirmed fresh); returns it.
    pub fn serving(&mut self, partition: &PartitionId, max_ms: u64) -> Option<NodeId> {
        let g = self.group_of(partition)?;
        let ready = |c: &Cluster| {
            c.leader_of(g).filter(|l| {
                c.engine(*l)
                    .is_some_and(|e| e.check_leader(partition).is_ok())
            })
        };
        self.run_until(max_ms, |c| ready(c).is_some());
        ready(self)
    }

    /// Heals the network, restarts every node and runs until every group
    /// has a leader and every running replica applied everything its
    /// leader committed. Returns whether that happened within `max_ms`.
    pub fn converge(&mut self, max_ms: u64) -> bool {
        self.heal();
        self.set_faults(Faults::none());
        for id in self.node_ids() {
            self.restart(id);
        }
        self.run_until(max_ms, |c| c.is_converged())
    }

    /// Every hosted group has a leader that committed its whole log, and
    /// every running replica holds and applied exactly that log.
    pub fn is_converged(&self) -> bool {
        let mut groups: BTreeSet<GroupId> = BTreeSet::new();
        for n in self.nodes.values() {
            if let Some(e) = n.engine.as_ref() {
                groups.extend(e.groups());
            }
        }
        groups.iter().all(|g| {
            let Some(l) = self.leader_of(*g) else {
                return false;
            };
            let Some(ls) = self.engine(l).and_then(|e| e.group_status(*g)) else {
                return false;
            };
            // The leader committed its whole log (so at least one entry of
            // its own term) and every replica holds and applied all of it.
            ls.commit == ls.last_index
                && self
                    .nodes
                    .values()
                    .filter_map(|n| n.engine.as_ref())
                    .all(|e| {
                        e.group_status(*g).is_none_or(|s| {
                            s.applied == ls.commit
                                && s.commit == ls.commit
                                && s.last_index == ls.last_index
                                && s.leader == Some(l)
                        })
                    })
        })
    }

    /// Executes a node's outputs: sends go on the network, persist batches
    /// on its disk queue, replies and events to the checker.
    pub(super) fn drain(&mut self, id: NodeId) {
        loop {
            let Some(out) = self
                .nodes
                .get_mut(&id)
                .and_then(|n| n.engine.as_mut())
                .and_then(|e| e.poll_output())
            else {
                break;
            };
            match out {
                Output::Send { to, messages } => self.send(id, to, messages),
                Output::Persist(batch) => {
                    let (lo, hi) = self.config.faults.persist_ms;
                    let lat = if hi > lo {
                        self.rng.gen_range(lo..=hi)
                    } else {
                        lo
                    };
                    let n = self.nodes.get_mut(&id).expect("known");
                    let after_prev = n.unsynced.back().map_or(0, |(t, _)| *t);
                    n.unsynced
                        .push_back(((self.now + lat).max(after_prev), batch));
                }
                Output::Reply { request_id, result } => {
                    let sent = self.sent_produces.remove(&request_id);
                    if let (
                        true,
                        Some(sent),
                        Ok(Response::Applied(Appended { base_offset, count })),
                    ) = (self.config.checks, sent, &result)
                    {
                        assert_eq!(
                            *count as usize,
                            sent.records.len(),
                            "ack counts what was sent"
                        );
                        let acked = Acked {
                            partition: sent.partition.clone(),
                            base_offset: *base_offset,
                            records: sent.records.clone(),
                        };
                        self.checker.on_ack(&acked);
                        let end = self.acked_end.entry(acked.partition.clone()).or_default();
                        *end = (*end).max(acked.base_offset + acked.records.len() as u64);
                        self.acked.push(acked);
                    }
                    if let Some((pid, end)) = self.fetch_expect.remove(&request_id) {
                        if let Ok(Response::Query(f)) = &result {
                            self.checker.on_fetch(&pid, end, f);
                        }
                    }
                    if self.config.checks {
                        self.checker.trace(id, &(request_id, result.is_ok()));
                    }
                    self.replies.insert(request_id, result);
                }
                // The record log keeps everything in memory.
                Output::StateIo { ops, .. } => match ops.into_iter().next() {
                    None => {}
                    Some(never) => match never {},
                },
                Output::Event(_) if !self.config.checks => {}
                Output::Event(ev) => {
                    self.checker.trace(id, &format_args!("{ev:?}").to_string());
                    if ev == Event::RemovedFromCluster {
                        self.removed.insert(id);
                    }
                    self.checker.on_event(id, &ev);
                }
            }
        }
        if let Some(e) = self.nodes.get(&id).and_then(|n| n.engine.as_ref()) {
            if self.config.checks {
                self.checker.on_metadata(e);
            }
        }
    }
}
