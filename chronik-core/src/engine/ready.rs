//! The ready loop: raft-rs readies of the groups an input touched, the
//! groups metadata says this node hosts, and the flush of one persist batch
//! and its sends per input.

use super::*;

/// Election timeouts without a leader after which a voter that metadata
/// no longer places on this node is dropped as an orphan.
const ORPHAN_ELECTION_TIMEOUTS: u64 = 10;

impl<S: StateMachine> Engine<S> {
    /// Notices role, term and leader changes of every group (after ticks,
    /// which touch them all).
    pub(in crate::engine) fn observe_all(&mut self) {
        let ticks = self.config.election_ticks;
        self.metadata.observe(&mut self.rng, ticks, &mut self.sink);
        // A quiesced group changes only by stepping a message, which
        // observes it (`observe_dirty`).
        for g in self
            .partitions
            .values_mut()
            .filter(|g| g.quiesced.is_none())
        {
            g.observe(&mut self.rng, ticks, &mut self.sink);
        }
    }

    /// Notices changes in the groups an input touched (the dirty ones):
    /// groups no input reached cannot have changed.
    pub(in crate::engine) fn observe_dirty(&mut self) {
        let touched = std::mem::take(&mut self.dirty);
        self.observe_groups(&touched);
        self.dirty = touched;
    }

    /// [`Engine::observe_all`] for `groups` only, in the same order.
    fn observe_groups(&mut self, groups: &BTreeSet<GroupId>) {
        let ticks = self.config.election_ticks;
        for group in groups {
            if *group == METADATA_GROUP {
                self.metadata.observe(&mut self.rng, ticks, &mut self.sink);
            } else if let Some(g) = self.partitions.get_mut(group) {
                g.observe(&mut self.rng, ticks, &mut self.sink);
            }
        }
    }

    /// Handles the readies of the groups an input touched until none has
    /// one, then emits the persist batch and the sends. Only those groups
    /// are visited (and those their handling touches in turn).
    pub(in crate::engine) fn process(&mut self) {
        let mut visited = BTreeSet::new();
        while let Some(group) = self.dirty.pop_first() {
            visited.insert(group);
            if group == METADATA_GROUP {
                while self.metadata.handle_ready(&mut self.sink) {}
                self.metadata.sync_applied();
                self.metadata_barriers();
                if self.metadata.removed && !self.removed_reported {
                    self.removed_reported = true;
                    tracing::warn!(node = self.config.node_id, "removed from the cluster");
                    self.sink.event(Event::RemovedFromCluster);
                }
                self.maybe_bootstrap();
                if self.metadata.applied != self.reconciled_at {
                    self.reconcile_groups();
                }
            } else if let Some(g) = self.partitions.get_mut(&group) {
                while g.handle_ready(&mut self.sink) {}
                g.sync_applied();
                // A leader hears from itself; a follower from its leader's
                // messages (stepped in `handle_messages`).
                if g.is_leader() || g.leader_seen_at.is_none() {
                    g.leader_seen_at = Some(self.now);
                }
                if g.removed && !g.removal_seen {
                    // Out of the group's configuration: drop it once the
                    // metadata agrees (reconcile again now).
                    g.removal_seen = true;
                    self.reconciled_at = u64::MAX;
                    self.dirty.insert(METADATA_GROUP);
                }
                g.serve_reads(&mut self.sink, |sm, q| sm.0.query(q).map(Response::Query));
                let ctx = read_ctx(&self.config, self.next_read_ctx);
                if g.start_read_round(ctx, self.config.read_timeout_ms, self.now) {
                    self.next_read_ctx += 1;
                    // The round's messages come out of the next ready.
                    self.dirty.insert(group);
                }
            }
            // After the ready: the update ending an abstention follows
            // the entries it relies on.
            self.maybe_end_abstention(group);
        }
        self.observe_groups(&visited);
        self.flush();
    }

    /// The first metadata leader of a new cluster registers the initial
    /// members. Once per term; the command is a no-op once applied.
    pub(in crate::engine) fn maybe_bootstrap(&mut self) {
        let g = &mut self.metadata;
        if g.sm.is_bootstrapped() || !g.is_leader() || self.bootstrap_term == g.raw.raft.term {
            return;
        }
        self.bootstrap_term = g.raw.raft.term;
        let cmd = MetadataCommand::Bootstrap {
            nodes: self.config.initial_cluster.clone(),
        };
        let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
        if g.propose(data, None, &mut self.sink).is_ok() {
            self.dirty.insert(METADATA_GROUP);
        }
    }

    /// Creates the partition groups applied metadata assigns to this node
    /// and drops those whose partitions were deleted.
    pub(in crate::engine) fn reconcile_groups(&mut self) {
        self.reconciled_at = self.metadata.applied;
        let me = self.config.node_id;
        // A group whose files are still to be destroyed is created again
        // only once they are gone (the destroy runs when its batch is
        // durable; then reconciliation runs again).
        let destroying: BTreeSet<GroupId> = self
            .inflight
            .iter()
            .flat_map(|i| i.destroy.iter().map(|(g, _)| *g))
            .chain(self.sink.to_destroy.iter().map(|(g, _)| *g))
            .collect();
        let wanted: Vec<(GroupId, PartitionId, Vec<NodeId>)> = self
            .metadata
            .sm
            .partitions_by_group()
            .into_values()
            .filter(|(_, p)| {
                (p.replicas.contains(&me) || p.moving.is_some_and(|m| m.to == me))
                    && !self.partitions.contains_key(&p.group)
                    && !destroying.contains(&p.group)
            })
            .map(|(t, p)| {
                let pid = PartitionId::new(t.name.clone(), p.partition);
                // A replica moving in starts with no configuration and
                // waits for the leader's snapshot, like a joining node.
                let voters = if p.replicas.contains(&me) {
                    p.replicas.clone()
                } else {
                    Vec::new()
                };
                (p.group, pid, voters)
            })
            .collect();
        for (group, pid, replicas) in wanted {
            // A replica this node's WAL lost whole keeps its term and vote
            // and abstains until repaired (see `log_repair`).
            let lost = self.take_lost(group);
            // A replica this node had and dropped: it starts from the term
            // and vote it had (it may have voted in a term the group has
            // not reached yet), and abstains until caught up like a lost
            // one: its old incarnation's acknowledgements may have counted
            // toward commits its empty log lacks (metadata may place it
            // here again as a voter: a cut metadata log replayed from an
            // old state drops a replica and, caught up, recreates it;
            // found by simulation seed 1957, where the empty replica
            // elected a leader lacking a committed entry).
            let retired = self.retired.remove(&group);
            let abstain = lost.is_some() || retired.is_some();
            let conf = ConfState::from((replicas, vec![]));
            let mut storage = GroupStorage::new_with_conf_state(conf.clone());
            let kept = lost.clone().or(retired);
            if let Some(hs) = &kept {
                storage.set_hard_state(hs.clone());
            }
            let raw = match new_raw(&self.config, &self.logger, group, storage, 0) {
                Ok(raw) => raw,
                Err(e) => {
                    tracing::error!(group, %pid, "cannot create partition group: {e}");
                    continue;
                }
            };
            self.sink.updates.push(GroupUpdate::Create {
                group,
                kind: GroupKind::Partition(pid.clone()),
                conf_state: conf,
            });
            if let Some(hard_state) = kept {
                self.sink
                    .updates
                    .push(GroupUpdate::HardState { group, hard_state });
            }
            self.sink.must_sync = true;
            let mut sm = S::new(group, &pid, &self.options);
            if let Err(e) = sm.recover(None) {
                tracing::error!(group, %pid, "cannot start an empty partition state: {e}");
                continue;
            }
            let sm = PartitionSm(sm);
            let mut g = Group::new(group, GroupKind::Partition(pid.clone()), raw, sm, 0);
            g.io_reset_ticket = self.sink.next_io_ticket;
            let ops = g.sm.0.take_io();
            self.sink.state_io(group, ops, true);
            g.observe(&mut self.rng, self.config.election_ticks, &mut self.sink);
            self.partitions.insert(group, g);
            self.dirty.insert(group);
            self.sink.event(Event::GroupCreated {
                group,
                partition: pid,
            });
            if abstain {
                self.begin_abstaining(group);
            }
        }
        let md = &self.metadata.sm;
        // One index of the live groups: looking each hosted group up by
        // scanning the topics made this quadratic in partitions (with
        // thousands of them, the bulk of an idle node's CPU whenever
        // metadata applied anything).
        let live = md.partitions_by_group();
        let now = self.now;
        // A voter that metadata moved away (or whose metadata lags a move
        // onto it) is kept while it hears from a leader; one that has not
        // for this long missed its own removal and goes.
        let orphan_ms = ORPHAN_ELECTION_TIMEOUTS
            * self.config.tick_interval_ms
            * self.config.election_ticks as u64;
        let mut kept = Vec::new();
        let gone: Vec<GroupId> = self
            .partitions
            .keys()
            .copied()
            .filter(|g| {
                md.is_deleted_group_in(&live, *g)
                    || live.get(g).is_some_and(|(_, p)| {
                        // Moved away from this node: unless the group's own
                        // configuration makes this node a voter. Then the
                        // metadata applied here is behind the group (a move
                        // rolled back and started again, whose promotion
                        // this node saw first): dropping would throw away
                        // a voter's log and vote.
                        !p.replicas.contains(&me)
                            && p.moving.is_none_or(|m| m.to != me)
                            && self.partitions.get(g).is_none_or(|g| {
                                let orphan = g.leader_seen_at.is_some_and(|at| {
                                    now.as_millis() >= at.as_millis() + orphan_ms
                                });
                                let drop = g.removed
                                    || !g.raw.store().conf_state().voters.contains(&me)
                                    || orphan;
                                if !drop {
                                    kept.push(g.id);
                                }
                                drop
                            })
                    })
            })
            .collect();
        self.unwanted_voters = kept;
        for group in gone {
            if let Some(mut g) = self.partitions.remove(&group) {
                let hs = g.raw.raft.hard_state();
                if let Some(hs) = crate::persist::retired_hard_state(&hs) {
                    self.retired.insert(group, hs);
                }
                // A deleted partition is gone whatever happened to its
                // requests. A replica that moved away leaves a partition
                // that lives on: a proposal in flight may still commit
                // there (found by simulation seed 1090, where a produce
                // answered GROUP_REMOVED was read afterwards).
                if self.metadata.sm.is_deleted_group(group) {
                    let gone = Error::GroupRemoved { group };
                    g.fail_all(&mut self.sink, gone.clone(), gone);
                } else {
                    // Reads try another replica.
                    let elsewhere = Error::NotLeader {
                        group,
                        leader_hint: None,
                    };
                    g.fail_all(&mut self.sink, Error::OutcomeUnknown { group }, elsewhere);
                }
                self.sink.to_destroy.push((group, g.sm.0));
            }
            self.sink.updates.push(GroupUpdate::Drop { group });
            self.sink.must_sync = true;
            self.sink.event(Event::GroupDropped { group });
        }
    }

    /// Turns what ready handling gathered into outputs: one persist batch
    /// for every group (group commit), then one send per peer.
    pub(in crate::engine) fn flush(&mut self) {
        self.check_produce_acks();
        let sink = &mut self.sink;
        if !sink.readies.is_empty()
            || !sink.updates.is_empty()
            || !sink.send_after_persist.is_empty()
        {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let batch = PersistBatch {
                ticket,
                updates: std::mem::take(&mut sink.updates),
                must_sync: std::mem::take(&mut sink.must_sync),
            };
            self.inflight.push_back(Inflight {
                ticket,
                readies: std::mem::take(&mut sink.readies),
                held: std::mem::take(&mut sink.send_after_persist),
                destroy: std::mem::take(&mut sink.to_destroy),
            });
            sink.outputs.push_back(Output::Persist(batch));
        }
        if !sink.send_now.is_empty() {
            let mut by_peer: BTreeMap<NodeId, Vec<GroupMessage>> = BTreeMap::new();
            for (to, m) in sink.send_now.drain(..) {
                by_peer.entry(to).or_default().push(m);
            }
            for (to, messages) in by_peer {
                self.sent_to.insert(to, self.now);
                sink.outputs.push_back(Output::Send { to, messages });
            }
        }
    }
}
