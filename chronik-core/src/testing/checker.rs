//! Invariant checks over what engines report, shared by every harness.

use super::Acked;
use crate::output::Event;
use crate::types::{GroupId, NodeId, PartitionId, Role};
use crate::{Engine, MetadataState};
use std::collections::BTreeMap;

/// Collects invariant violations; tests assert there are none.
#[derive(Default)]
pub struct Checker {
    /// Leader of each (group, term): election safety.
    leaders: BTreeMap<(GroupId, u64), NodeId>,
    /// `(term, digest)` of each applied (group, index), across all nodes:
    /// committed entries never change and apply identically everywhere.
    applied: BTreeMap<(GroupId, u64), (u64, u64)>,
    /// Next index each (node, group) must apply: exactly once, in order.
    next_apply: BTreeMap<(NodeId, GroupId), u64>,
    /// (first node, hash of the metadata) seen at each applied index.
    metadata_at: BTreeMap<u64, (NodeId, u64)>,
    /// Metadata states compared across nodes.
    pub metadata_compared: u64,
    /// (first node, state machine fingerprint) at each (group, applied
    /// index): every replica's state must match it.
    states: BTreeMap<(GroupId, u64), (NodeId, u64)>,
    /// State machine fingerprints compared (applies, installs, restarts).
    pub states_compared: u64,
    /// Snapshots installed from a leader, over all nodes and groups.
    pub snapshots_installed: u64,
    /// ISR changes that removed a replica, as applied on any node (each
    /// change counted once per node).
    pub isr_shrinks_applied: u64,
    metadata_seen: BTreeMap<NodeId, u64>,
    /// Offsets acknowledged per partition, to detect an offset given twice.
    acked_offsets: BTreeMap<PartitionId, BTreeMap<u64, bytes::Bytes>>,
    /// (ISR size, min_insync_replicas) of each group as each node last
    /// applied it; unknown (full) after a restart until the next change.
    isr_seen: BTreeMap<(NodeId, GroupId), (usize, u32)>,
    /// Produce acknowledgements checked against the acknowledging node's ISR.
    pub produce_acks_checked: u64,
    /// Linearizable reads checked against the serving node's applied index.
    pub reads_checked: u64,
    violations: Vec<String>,
    trace_hash: u64,
    /// Fetches whose records were compared with acknowledged produces.
    pub fetches_verified: u64,
    /// Entries applied, over all nodes.
    pub applied_count: u64,
    pub leader_elections: u64,
}

impl Checker {
    pub fn violation(&mut self, v: String) {
        if self.violations.len() < 100 {
            self.violations.push(v);
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Folds one observation into the trace hash: two runs of the same seed
    /// must end with the same hash.
    pub fn trace<T: std::hash::Hash + ?Sized>(&mut self, node: NodeId, item: &T) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.trace_hash.hash(&mut h);
        node.hash(&mut h);
        item.hash(&mut h);
        self.trace_hash = h.finish();
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// A linearizable fetch sent when offsets below `acked_end` were
    /// acknowledged must show them, holding the acknowledged records.
    pub fn on_fetch(&mut self, partition: &PartitionId, acked_end: u64, fetched: &crate::Fetched) {
        if fetched.high_watermark < acked_end {
            self.violation(format!(
                "stale read: fetch of {partition} returned high watermark {} after offsets below {acked_end} were acknowledged",
                fetched.high_watermark
            ));
            return;
        }
        let Some(offsets) = self.acked_offsets.get(partition) else {
            return;
        };
        let mut bad = Vec::new();
        for (off, rec) in &fetched.records {
            if let Some(expected) = offsets.get(off) {
                if expected != rec {
                    bad.push(format!("fetch of {partition} offset {off} returned {rec:?}, acknowledged {expected:?}"));
                }
            }
        }
        self.fetches_verified += 1;
        for b in bad {
            self.violation(b);
        }
    }

    /// `node`'s state machine of `group` has fingerprint `state` at applied
    /// index `index`: every replica must agree (the first one seen at an
    /// index sets what the others must match).
    fn check_state(
        &mut self,
        node: NodeId,
        group: GroupId,
        index: u64,
        state: Option<u64>,
        when: &str,
    ) {
        let Some(state) = state else { return };
        if index == 0 {
            return;
        }
        self.states_compared += 1;
        match self.states.get(&(group, index)) {
            Some((first, seen)) if *seen != state => {
                let first = *first;
                let seen = *seen;
                self.violation(format!(
                    "{when} {index}: node {node} group {group} holds state {state}, node {first} held {seen} at that index"
                ));
            }
            Some(_) => {}
            None => {
                self.states.insert((group, index), (node, state));
            }
        }
    }

    /// Panics with every violation found.
    pub fn assert_ok(&self) {
        assert!(
            self.violations.is_empty(),
            "invariants violated:\n{}",
            self.violations.join("\n")
        );
    }

    /// A node (re)started: its next applies follow what it recovered.
    pub fn on_start<S: crate::StateMachine>(&mut self, engine: &Engine<S>) {
        self.on_recovered(engine.node_id(), &engine.status());
    }

    /// A node (re)started with these groups recovered: harnesses that do
    /// not hold the engine (the simulator) report its status instead.
    pub fn on_recovered(&mut self, id: NodeId, groups: &[crate::GroupStatus]) {
        self.next_apply.retain(|(n, _), _| *n != id);
        self.isr_seen.retain(|(n, _), _| *n != id);
        for s in groups {
            self.next_apply.insert((id, s.group), s.applied + 1);
            self.check_state(
                id,
                s.group,
                s.applied,
                s.state,
                "recovered state machine: restarted at applied index",
            );
        }
        self.metadata_seen.remove(&id);
    }

    pub fn on_event(&mut self, node: NodeId, ev: &Event) {
        match ev {
            Event::RoleChanged {
                group,
                term,
                role: Role::Leader,
                ..
            } => {
                self.leader_elections += 1;
                if let Some(prev) = self.leaders.insert((*group, *term), node) {
                    if prev != node {
                        self.violation(format!(
                            "election safety: group {group} term {term} has leaders {prev} and {node}"
                        ));
                    }
                }
            }
            Event::EntryApplied {
                group,
                index,
                term,
                digest,
                state,
            } => {
                self.check_state(
                    node,
                    *group,
                    *index,
                    *state,
                    "state machine diverged: after applying",
                );
                self.applied_count += 1;
                match self.next_apply.get(&(node, *group)) {
                    Some(next) if next != index => self.violation(format!(
                        "node {node} group {group} applied index {index}, expected {next}"
                    )),
                    _ => {}
                }
                self.next_apply.insert((node, *group), index + 1);
                match self.applied.get(&(*group, *index)) {
                    Some(seen) if *seen != (*term, *digest) => self.violation(format!(
                        "state machine safety: group {group} index {index} applied as {seen:?} and {:?} (node {node})",
                        (term, digest)
                    )),
                    Some(_) => {}
                    None => {
                        self.applied.insert((*group, *index), (*term, *digest));
                    }
                }
            }
            Event::SnapshotInstalled {
                group,
                index,
                state,
            } => {
                self.snapshots_installed += 1;
                self.check_state(
                    node,
                    *group,
                    *index,
                    *state,
                    "snapshot content: installed at",
                );
                self.next_apply.insert((node, *group), index + 1);
            }
            Event::GroupCreated { group, .. } => {
                self.next_apply.insert((node, *group), 1);
            }
            Event::IsrChanged {
                group,
                isr,
                min_insync_replicas,
                ..
            } => {
                if let Some((before, _)) = self.isr_seen.get(&(node, *group)) {
                    if isr.len() < *before {
                        self.isr_shrinks_applied += 1;
                    }
                }
                self.isr_seen
                    .insert((node, *group), (isr.len(), *min_insync_replicas));
            }
            Event::ReadServed { group, read_index } => {
                self.reads_checked += 1;
                if let Some(next) = self.next_apply.get(&(node, *group)) {
                    if next.saturating_sub(1) < *read_index {
                        self.violation(format!(
                            "read index: node {node} served a read of group {group} at read index {read_index} having applied only {}",
                            next.saturating_sub(1)
                        ));
                    }
                }
            }
            Event::ProduceAcked { group, .. } => {
                self.produce_acks_checked += 1;
                if let Some((isr, min)) = self.isr_seen.get(&(node, *group)) {
                    if *isr < *min as usize {
                        self.violation(format!(
                            "min ISR: node {node} acknowledged a produce to group {group} while its ISR had {isr} replicas, below min_insync_replicas {min}"
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    /// Compares a node's metadata with what others held at the same index.
    pub fn on_metadata<S: crate::StateMachine>(&mut self, engine: &Engine<S>) {
        self.on_metadata_state(engine.node_id(), engine.metadata());
    }

    /// A node's metadata at its applied index: it must equal what every
    /// other node held at that index (compared by a hash of its encoding),
    /// and it is the node's view of every ISR from now on (a metadata
    /// snapshot install changes ISRs without an `IsrChanged` event).
    pub fn on_metadata_state(&mut self, node: NodeId, md: &MetadataState) {
        use std::hash::{Hash, Hasher};
        let index = md.applied_index();
        for t in md.topics() {
            for p in &t.partitions {
                self.isr_seen
                    .insert((node, p.group), (p.isr.len(), t.min_insync_replicas));
            }
        }
        if self.metadata_seen.get(&node) == Some(&index) {
            return;
        }
        self.metadata_seen.insert(node, index);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        md.snapshot().hash(&mut h);
        let hash = h.finish();
        self.metadata_compared += 1;
        match self.metadata_at.get(&index) {
            Some((first, reference)) if *reference != hash => self.violation(format!(
                "metadata diverged: node {node} and node {first} hold different metadata at applied index {index}"
            )),
            Some(_) => {}
            None => {
                self.metadata_at.insert(index, (node, hash));
            }
        }
    }

    /// An acknowledged produce: its offsets must be new.
    pub fn on_ack(&mut self, acked: &Acked) {
        let offsets = self
            .acked_offsets
            .entry(acked.partition.clone())
            .or_default();
        let mut dup = Vec::new();
        for (i, r) in acked.records.iter().enumerate() {
            let off = acked.base_offset + i as u64;
            if let Some(prev) = offsets.insert(off, r.clone()) {
                dup.push(format!(
                    "offset {off} of {} acknowledged twice ({prev:?}, then {r:?})",
                    acked.partition
                ));
            }
        }
        for d in dup {
            self.violation(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(group: GroupId, term: u64) -> Event {
        Event::RoleChanged {
            group,
            term,
            role: Role::Leader,
            leader: None,
        }
    }

    fn applied(group: GroupId, index: u64, term: u64, digest: u64) -> Event {
        Event::EntryApplied {
            group,
            index,
            term,
            digest,
            state: None,
        }
    }

    fn isr(group: GroupId, size: u64, min: u32) -> Event {
        Event::IsrChanged {
            partition: PartitionId::new("t", 0),
            group,
            isr: (1..=size).collect(),
            min_insync_replicas: min,
            reason: "test".into(),
        }
    }

    fn run(events: &[(NodeId, Event)]) -> Vec<String> {
        let mut c = Checker::default();
        for (node, ev) in events {
            c.on_event(*node, ev);
        }
        c.violations().to_vec()
    }

    #[test]
    fn a_good_history_has_no_violations() {
        let v = run(&[
            (
                1,
                Event::GroupCreated {
                    group: 1,
                    partition: PartitionId::new("t", 0),
                },
            ),
            (
                2,
                Event::GroupCreated {
                    group: 1,
                    partition: PartitionId::new("t", 0),
                },
            ),
            (1, leader(1, 1)),
            (1, applied(1, 1, 1, 10)),
            (2, applied(1, 1, 1, 10)),
            (1, applied(1, 2, 1, 20)),
            (
                1,
                Event::ReadServed {
                    group: 1,
                    read_index: 2,
                },
            ),
            (1, isr(1, 2, 2)),
            (1, Event::ProduceAcked { group: 1, index: 1 }),
            (2, leader(1, 2)),
            (2, applied(1, 2, 1, 20)),
        ]);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn each_violation_is_caught() {
        let two_leaders = run(&[(1, leader(1, 3)), (2, leader(1, 3))]);
        assert!(
            two_leaders[0].contains("election safety"),
            "{two_leaders:?}"
        );

        let changed = run(&[(1, applied(1, 1, 1, 10)), (2, applied(1, 1, 1, 11))]);
        assert!(changed[0].contains("state machine safety"), "{changed:?}");

        let gap = run(&[
            (
                1,
                Event::GroupCreated {
                    group: 1,
                    partition: PartitionId::new("t", 0),
                },
            ),
            (1, applied(1, 1, 1, 10)),
            (1, applied(1, 3, 1, 30)),
        ]);
        assert!(gap[0].contains("expected 2"), "{gap:?}");

        let twice = run(&[
            (
                1,
                Event::GroupCreated {
                    group: 1,
                    partition: PartitionId::new("t", 0),
                },
            ),
            (1, applied(1, 1, 1, 10)),
            (1, applied(1, 1, 1, 10)),
        ]);
        assert!(twice[0].contains("expected 2"), "{twice:?}");

        let early_read = run(&[
            (
                1,
                Event::GroupCreated {
                    group: 1,
                    partition: PartitionId::new("t", 0),
                },
            ),
            (1, applied(1, 1, 1, 10)),
            (
                1,
                Event::ReadServed {
                    group: 1,
                    read_index: 2,
                },
            ),
        ]);
        assert!(early_read[0].contains("read index"), "{early_read:?}");

        let under_min = run(&[
            (1, isr(1, 1, 2)),
            (1, Event::ProduceAcked { group: 1, index: 1 }),
        ]);
        assert!(under_min[0].contains("min ISR"), "{under_min:?}");
    }

    #[test]
    fn a_restart_forgets_what_the_node_may_have_lost() {
        let mut c = Checker::default();
        c.on_event(1, &isr(1, 1, 2));
        // After a restart the node's ISR view is unknown until it changes.
        c.on_recovered(1, &[]);
        c.on_event(1, &Event::ProduceAcked { group: 1, index: 1 });
        assert!(c.violations().is_empty());
    }

    #[test]
    fn state_machines_that_drift_are_caught_on_apply_install_and_restart() {
        let at = |index: u64, state: u64| Event::EntryApplied {
            group: 1,
            index,
            term: 1,
            digest: index,
            state: Some(state),
        };
        let mut c = Checker::default();
        c.on_event(1, &at(1, 10));
        c.on_event(1, &at(2, 20));
        c.on_event(2, &at(1, 10));
        c.on_event(
            3,
            &Event::SnapshotInstalled {
                group: 1,
                index: 2,
                state: Some(20),
            },
        );
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.on_event(2, &at(2, 19));
        c.on_event(
            4,
            &Event::SnapshotInstalled {
                group: 1,
                index: 2,
                state: Some(21),
            },
        );
        let status = crate::GroupStatus {
            group: 1,
            kind: crate::GroupKind::Partition(PartitionId::new("t", 0)),
            role: Role::Follower,
            term: 1,
            vote: 0,
            leader: None,
            commit: 2,
            applied: 2,
            last_index: 2,
            snapshot_index: 1,
            voters: vec![],
            state: Some(10),
            repairing: None,
            abstaining: false,
        };
        c.on_recovered(5, &[status]);
        let v = c.violations();
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(
            v[0].starts_with("state machine diverged: after applying 2: node 2"),
            "{v:?}"
        );
        assert!(
            v[1].starts_with("snapshot content: installed at 2: node 4"),
            "{v:?}"
        );
        assert!(
            v[2].starts_with("recovered state machine: restarted at applied index 2: node 5"),
            "{v:?}"
        );
        assert_eq!(c.states_compared, 7);
    }
}
