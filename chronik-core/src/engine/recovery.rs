//! Rebuilding an engine from what was durable when the node stopped.

use super::*;

impl<S: StateMachine> Engine<S> {
    /// Builds an engine from its config and what was durable when the node
    /// last stopped. With an empty `durable` this is a new node that
    /// bootstraps the metadata group with `config.initial_cluster`.
    pub fn new(
        config: EngineConfig,
        options: S::Options,
        durable: DurableState,
        now: Time,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let logger = crate::logger::raft_logger();
        let mut sink = Sink {
            updates: Vec::new(),
            must_sync: false,
            readies: Vec::new(),
            send_now: Vec::new(),
            send_after_persist: Vec::new(),
            outputs: VecDeque::new(),
            compact_threshold: config.log_compact_threshold_entries,
            compact_threshold_bytes: config.log_compact_threshold_bytes,
            emit_apply_events: config.emit_apply_events,
            reply_index: BTreeMap::new(),
            to_destroy: Vec::new(),
            next_io_ticket: 1,
        };
        let DurableState {
            mut groups,
            repair,
            retired,
        } = durable;
        let metadata = match groups.remove(&METADATA_GROUP) {
            Some(g) => {
                if g.kind != GroupKind::Metadata {
                    return Err(inconsistent("group 0 is not the metadata group"));
                }
                let snap = g.snapshot.clone();
                let storage =
                    GroupStorage::recovered(g.conf_state, g.hard_state, g.snapshot, g.entries)
                        .map_err(|e| inconsistent(format!("metadata group: {e}")))?;
                let (sm, applied) = match snap {
                    Some(s) => {
                        let index = s.get_metadata().index;
                        let sm = MetadataState::restore(index, &s.data)
                            .map_err(|e| inconsistent(format!("metadata snapshot: {e}")))?;
                        (sm, index)
                    }
                    None => (MetadataState::new(), 0),
                };
                let raw = new_raw(&config, &logger, METADATA_GROUP, storage, applied)?;
                Group::new(METADATA_GROUP, GroupKind::Metadata, raw, sm, applied)
            }
            None => {
                // A joining node knows no configuration: the leader's
                // snapshot brings it.
                let voters: Vec<NodeId> = if config.join {
                    Vec::new()
                } else {
                    config.initial_cluster.iter().map(|n| n.id).collect()
                };
                let conf = ConfState::from((voters, vec![]));
                sink.updates.push(GroupUpdate::Create {
                    group: METADATA_GROUP,
                    kind: GroupKind::Metadata,
                    conf_state: conf.clone(),
                });
                sink.must_sync = true;
                let mut storage = GroupStorage::new_with_conf_state(conf);
                if let Some(kept) = repair.get(&METADATA_GROUP) {
                    // The whole metadata log was cut away: keep the term
                    // and vote, and abstain (below) until a leader's
                    // snapshot brings the rest.
                    let hard_state = lost_hard_state(kept);
                    storage.set_hard_state(hard_state.clone());
                    sink.updates.push(GroupUpdate::HardState {
                        group: METADATA_GROUP,
                        hard_state,
                    });
                }
                let raw = new_raw(&config, &logger, METADATA_GROUP, storage, 0)?;
                Group::new(
                    METADATA_GROUP,
                    GroupKind::Metadata,
                    raw,
                    MetadataState::new(),
                    0,
                )
            }
        };
        let mut partitions = BTreeMap::new();
        for (id, g) in groups {
            let GroupKind::Partition(pid) = g.kind.clone() else {
                return Err(inconsistent(format!(
                    "group {id} claims to be the metadata group"
                )));
            };
            let snap = g.snapshot.clone();
            let commit = g.hard_state.commit;
            let storage =
                GroupStorage::recovered(g.conf_state, g.hard_state, g.snapshot, g.entries)
                    .map_err(|e| inconsistent(format!("group {id} ({pid}): {e}")))?;
            let mut sm = S::new(id, &pid, &options);
            let snap_index = snap.as_ref().map_or(0, |s| s.get_metadata().index);
            let mut repair = None;
            if let Err(e) = sm.recover(snap.as_ref().map(|s| (snap_index, &s.data[..]))) {
                // The local state behind the snapshot is damaged (a corrupt
                // or missing segment, say). The Raft log and hard state are
                // intact, so this replica stays a voter with everything it
                // promised; only the state machine is rebuilt, from a
                // snapshot of the leader's, and nothing is served from it
                // until then.
                tracing::error!(
                    group = id,
                    %pid,
                    "partition state does not recover, rebuilding it from the leader's snapshot: {e}"
                );
                sm = S::new(id, &pid, &options);
                sm.recover(None).map_err(|e2| {
                    inconsistent(format!(
                        "group {id} ({pid}): state does not recover ({e}) and cannot be cleared for a rebuild: {e2}"
                    ))
                })?;
                sink.event(Event::ReplicaRepairing {
                    group: id,
                    reason: e.to_string(),
                });
                repair = Some(e.to_string());
            }
            // The state machine holds the snapshot: everything after it is
            // applied again from the log.
            let applied = if crate::planted::active(crate::planted::Bug::RecoverySkipsToCommit) {
                // Planted bug (simulation builds only): trusts the commit
                // index as applied, skipping the entries after the snapshot.
                snap_index.max(commit)
            } else {
                snap_index
            };
            let raw = new_raw(&config, &logger, id, storage, applied)?;
            let mut group = Group::new(id, g.kind, raw, PartitionSm(sm), applied);
            group.repair = repair;
            // The storage work that checks the files against the snapshot
            // comes first; if it fails, the replica is repaired then.
            group.io_reset_ticket = sink.next_io_ticket;
            let ops = group.sm.0.take_io();
            sink.state_io(id, ops, true);
            partitions.insert(id, group);
        }
        let mut engine = Engine {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            options,
            logger,
            metadata,
            partitions,
            sink,
            next_ticket: 1,
            inflight: VecDeque::new(),
            last_tick: now,
            dirty: BTreeSet::new(),
            bootstrap_term: 0,
            next_read_ctx: 1,
            reconciled_at: 0,
            now,
            produce_checks: BTreeMap::new(),
            awaiting_isr: Vec::new(),
            membership_gate: controllers::StepGate::default(),
            rebalancer: controllers::RebalanceDuties::default(),
            sizes_reported_at: None,
            preferred_backoff: BTreeMap::new(),
            unwanted_voters: Vec::new(),
            heard_from: BTreeMap::new(),
            sent_to: BTreeMap::new(),
            removed_reported: false,
            leaving: None,
            handoff_backoff: BTreeMap::new(),
            abstaining: BTreeMap::new(),
            lost: BTreeMap::new(),
            retired,
        };
        for (group, kept) in repair {
            if engine.raw_mut(group).is_some() {
                engine.begin_abstaining(group);
            } else {
                engine.lost.insert(group, lost_hard_state(&kept));
            }
        }
        engine.dirty.insert(METADATA_GROUP);
        engine.dirty.extend(engine.partitions.keys().copied());
        engine.observe_all();
        // Recovered entries are applied on the first input, so the caller
        // can look at the recovered state first.
        engine.flush();
        Ok(engine)
    }
}

impl<S: StateMachine> Engine<S> {
    /// A partition replica whose state failed at runtime (its storage work
    /// failed): its state is cleared and rebuilt from the leader's snapshot,
    /// as at recovery. What waits on it fails over, and a leader hands its
    /// leadership to the follower that holds the most. If clearing fails
    /// too (the disk is still failing), it is tried again a second later.
    pub(in crate::engine) fn start_repair(&mut self, group: GroupId, reason: String) {
        let me = self.config.node_id;
        let now = self.now;
        let Some(g) = self.partitions.get_mut(&group) else {
            return;
        };
        let GroupKind::Partition(pid) = g.kind.clone() else {
            return;
        };
        if g.repair.is_some() && g.reset_due.is_none() {
            tracing::warn!(group, %pid, "partition state still failing, clearing it again in a second: {reason}");
            g.repair = Some(reason);
            g.reset_due = Some(now.plus_millis(REPAIR_RETRY_MS));
            return;
        }
        tracing::error!(
            group,
            %pid,
            "partition state failed, rebuilding it from the leader's snapshot: {reason}"
        );
        let repairing = Error::ReplicaRepairing {
            group,
            reason: reason.clone(),
        };
        self.sink.event(Event::ReplicaRepairing {
            group,
            reason: reason.clone(),
        });
        // Proposals in flight may commit (the log is fine), but they will
        // not be applied here.
        g.fail_all(&mut self.sink, Error::OutcomeUnknown { group }, repairing);
        let mut sm = S::new(group, &pid, &self.options);
        if let Err(e) = sm.recover(None) {
            tracing::error!(group, %pid, "cannot clear the partition state: {e}");
        }
        g.reset_state(PartitionSm(sm), reason, &mut self.sink);
        if g.is_leader() {
            let voters = g.raw.raft.prs().conf().voters().ids();
            let best = g
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, _)| **id != me && voters.contains(**id))
                .max_by_key(|(id, pr)| (pr.matched, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(to) = best {
                tracing::info!(
                    group,
                    to,
                    "handing leadership off while the state is rebuilt"
                );
                g.raw.transfer_leader(to);
                self.sink.event(Event::LeadershipTransfer {
                    group,
                    to,
                    reason: "state being rebuilt",
                });
            }
        }
        self.dirty.insert(group);
    }

    /// Repairs whose clearing failed try again once due.
    pub(in crate::engine) fn retry_repairs(&mut self) {
        let now = self.now;
        let due: Vec<(GroupId, String)> = self
            .partitions
            .values_mut()
            .filter(|g| g.reset_due.is_some_and(|t| t <= now))
            .map(|g| {
                g.reset_due = None;
                (g.id, g.repair.clone().unwrap_or_default())
            })
            .collect();
        for (group, reason) in due {
            if let Some(g) = self.partitions.get_mut(&group) {
                // A fresh start, not a second failure.
                g.repair = None;
            }
            self.start_repair(group, reason);
        }
    }
}

/// How long a replica whose state cannot even be cleared waits before
/// trying again.
const REPAIR_RETRY_MS: u64 = 1_000;

/// The hard state a replica lost whole restarts from: its term and vote,
/// and nothing committed.
pub(in crate::engine) fn lost_hard_state(kept: &HardState) -> HardState {
    HardState {
        term: kept.term,
        vote: kept.vote,
        commit: 0,
        ..Default::default()
    }
}
