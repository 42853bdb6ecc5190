//! The Raft log storage (`GroupStorage`, what raft-rs reads) and the
//! durable log model recovery rebuilds from (`DurableState`) against a
//! naive reference: a map from index to term and a snapshot mark. Random
//! sequences of appends (with truncation on conflict), snapshot installs
//! (over matching and conflicting tails, behind and past the log end) and
//! local compactions reach the log shapes the simulation rarely does.

use chronik_core::raft::eraftpb::{ConfState, Entry, Snapshot};
use chronik_core::raft::{GetEntriesContext, Storage};
use chronik_core::storage::GroupStorage;
use chronik_core::{DurableState, GroupKind, GroupUpdate};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The reference: every entry's term by index, and the snapshot mark.
#[derive(Default, Debug)]
struct Model {
    log: BTreeMap<u64, u64>,
    snap: (u64, u64),
}

impl Model {
    fn first(&self) -> u64 {
        self.snap.0 + 1
    }
    fn last(&self) -> u64 {
        self.log.keys().next_back().copied().unwrap_or(self.snap.0)
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries of `term` at `first + at % (len + 1)`.
    Append { at: u64, count: u64, term: u64 },
    /// Install a snapshot at `first - 1 + at` (past the end possible);
    /// `matching` takes the term the log has there, else `term`.
    Install { at: u64, matching: bool, term: u64 },
    /// Compact up to `first - 1 + at % (len + 1)` (local snapshot).
    Compact { at: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..40, 1u64..6, 1u64..8).prop_map(|(at, count, term)| Op::Append { at, count, term }),
        1 => (0u64..50, any::<bool>(), 1u64..8).prop_map(|(at, matching, term)| Op::Install { at, matching, term }),
        1 => (0u64..40).prop_map(|at| Op::Compact { at }),
    ]
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s
}

/// The durable model's log as (index, term), and its snapshot mark.
fn durable_log(d: &DurableState) -> (Vec<(u64, u64)>, (u64, u64)) {
    let g = &d.groups[&1];
    let snap = g
        .snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.get_metadata().index, s.get_metadata().term));
    (g.entries.iter().map(|e| (e.index, e.term)).collect(), snap)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn storage_and_durable_log_match_the_reference(ops in proptest::collection::vec(op(), 1..40)) {
        let mut m = Model::default();
        let mut s = GroupStorage::new_with_conf_state(ConfState::default());
        let mut d = DurableState::default();
        d.apply(&GroupUpdate::Create { group: 1, kind: GroupKind::Metadata, conf_state: ConfState::default() })
            .expect("create");
        for op in ops {
            match op {
                Op::Append { at, count, term } => {
                    let len = m.last() + 1 - m.first();
                    let start = m.first() + at % (len + 1);
                    let ents: Vec<Entry> = (start..start + count).map(|i| entry(i, term)).collect();
                    m.log.retain(|i, _| *i < start);
                    for e in &ents {
                        m.log.insert(e.index, e.term);
                    }
                    s.append(&ents);
                    d.apply(&GroupUpdate::Entries { group: 1, entries: ents }).expect("valid append");
                }
                Op::Install { at, matching, term } => {
                    let index = m.first() - 1 + at;
                    let term = match (matching, m.log.get(&index)) {
                        (true, Some(t)) => *t,
                        _ => term,
                    };
                    if index > m.snap.0 {
                        if m.log.get(&index) == Some(&term) {
                            m.log.retain(|i, _| *i > index);
                        } else {
                            m.log.clear();
                        }
                        m.snap = (index, term);
                    }
                    s.apply_snapshot(snapshot(index, term));
                    d.apply(&GroupUpdate::Snapshot { group: 1, snapshot: snapshot(index, term) })
                        .expect("snapshot install");
                }
                Op::Compact { at } => {
                    let len = m.last() + 1 - m.first();
                    let index = m.first() - 1 + at % (len + 1);
                    if index > m.snap.0 {
                        let term = m.log[&index];
                        m.log.retain(|i, _| *i > index);
                        m.snap = (index, term);
                        s.compact(snapshot(index, term));
                        d.apply(&GroupUpdate::Snapshot { group: 1, snapshot: snapshot(index, term) })
                            .expect("local snapshot");
                    }
                }
            }
            // The storage raft-rs reads.
            prop_assert_eq!(s.first_index().expect("first"), m.first());
            prop_assert_eq!(s.last_index().expect("last"), m.last());
            prop_assert_eq!(s.term(m.snap.0).expect("snapshot term"), m.snap.1);
            for (i, t) in &m.log {
                prop_assert_eq!(s.term(*i).expect("term"), *t);
            }
            let got: Vec<(u64, u64)> = s
                .entries(m.first(), m.last() + 1, None, GetEntriesContext::empty(false))
                .expect("entries")
                .iter()
                .map(|e| (e.index, e.term))
                .collect();
            let want: Vec<(u64, u64)> = m.log.iter().map(|(i, t)| (*i, *t)).collect();
            prop_assert_eq!(&got, &want);
            if m.snap.0 > 0 {
                prop_assert!(s.entries(m.snap.0, m.last() + 1, None, GetEntriesContext::empty(false)).is_err());
            }
            // The durable model recovery rebuilds the same log.
            let (entries, snap) = durable_log(&d);
            prop_assert_eq!(&entries, &want);
            prop_assert_eq!(snap, m.snap);
        }
    }
}
