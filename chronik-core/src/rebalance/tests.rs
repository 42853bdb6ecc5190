use super::*;
use crate::types::{NodeId, PartitionId};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A view from raw choices: `placements[i]` picks partition i's replicas
/// (rotated from an offset, so they are distinct), `out_of_sync[i]` drops
/// its last replica from the ISR.
fn view(
    nodes: u64,
    rf: usize,
    placements: &[(u64, u64, bool)],
    racks: Option<u64>,
    only_on: u64,
) -> ClusterView {
    let nodes_v = (1..=nodes)
        .map(|id| NodeView {
            id,
            rack: racks.map(|r| format!("rack-{}", id % r)),
        })
        .collect();
    // Existing replicas sit on the first `only_on` nodes (the rest are new).
    let hosts = only_on.clamp(rf as u64, nodes);
    let partitions = placements
        .iter()
        .enumerate()
        .map(|(i, (offset, bytes, out_of_sync))| {
            let replicas: Vec<NodeId> = (0..rf as u64).map(|k| 1 + (offset + k) % hosts).collect();
            let mut isr = replicas.clone();
            if *out_of_sync && isr.len() > 1 {
                isr.pop();
            }
            PartitionView {
                partition: PartitionId::new("t", i as u32),
                group: i as u64 + 1,
                preferred_leader: replicas[0],
                replicas,
                isr,
                min_insync_replicas: rf.min(2) as u32,
                bytes: *bytes,
                frozen: false,
            }
        })
        .collect();
    ClusterView {
        nodes: nodes_v,
        partitions,
    }
}

fn limits(t: f64) -> PlanLimits {
    PlanLimits {
        imbalance_threshold: t,
        max_moves: usize::MAX,
    }
}

fn spread(c: &std::collections::BTreeMap<NodeId, u64>) -> u64 {
    c.values().max().copied().unwrap_or(0) - c.values().min().copied().unwrap_or(0)
}

#[test]
fn a_new_node_gets_its_share_of_replicas_and_leaders() {
    // 12 partitions of replication 3 on nodes 1-3, node 4 new.
    let placements: Vec<(u64, u64, bool)> = (0..12).map(|i| (i, 1000, false)).collect();
    let v = view(4, 3, &placements, None, 3);
    let p = plan(&v, limits(0.2));
    let after = p.applied_to(&v);
    assert_eq!(
        after.replica_counts().values().copied().collect::<Vec<_>>(),
        vec![9; 4]
    );
    assert_eq!(p.moves.len() as u64, p.lower_bound_moves, "{p:#?}");
    assert!(
        spread(&after.leader_counts()) <= 1,
        "{:?}",
        after.leader_counts()
    );
    assert!(p.after.worst() <= 0.2, "{}", p.after);
    assert!(p.moves.iter().all(|m| m.to == 4 && m.isr_headroom == 1));
    // Balanced already: nothing to do.
    assert!(plan(&after, limits(0.2)).is_empty());
}

#[test]
fn out_of_sync_and_frozen_partitions_stay_put() {
    let placements: Vec<(u64, u64, bool)> = (0..6).map(|i| (i, 10, i % 2 == 0)).collect();
    let mut v = view(4, 3, &placements, None, 3);
    v.partitions[1].frozen = true;
    let p = plan(&v, limits(0.0));
    for m in &p.moves {
        let orig = &v.partitions[(m.group - 1) as usize];
        assert!(orig.fully_in_sync() && !orig.frozen, "{m:?}");
    }
}

#[test]
fn racks_are_kept_apart() {
    // Nodes 1..=6 on racks 0,1,2 (id % 3); partitions on nodes 1-3, one
    // replica per rack. A move may only keep three racks.
    let placements: Vec<(u64, u64, bool)> = (0..6).map(|i| (i, 10, false)).collect();
    let v = view(6, 3, &placements, Some(3), 3);
    let p = plan(&v, limits(0.2));
    assert!(!p.moves.is_empty());
    let racks = v.racks();
    for m in &p.moves {
        assert_eq!(racks[&m.from], racks[&m.to], "{m:?}");
    }
}

#[test]
fn estimated_duration_uses_lanes() {
    let mv = |bytes| PlannedMove {
        partition: PartitionId::new("t", 0),
        group: 1,
        from: 1,
        to: 2,
        bytes,
        isr_headroom: 0,
        reason: String::new(),
    };
    let p = Plan {
        moves: vec![mv(3000), mv(1000), mv(1000), mv(1000)],
        ..Plan::default()
    };
    // 1000 B/s: 3 s, 1 s, 1 s, 1 s; two lanes: 3 s and 1+1+1 s.
    assert_eq!(p.estimated_duration_ms(1000, 2, 0), 3000);
    assert_eq!(p.estimated_duration_ms(1000, 1, 100), 6400);
    assert_eq!(Plan::default().estimated_duration_ms(1000, 3, 100), 0);
}

#[test]
fn config_is_validated() {
    assert!(RebalanceConfig::default().validate().is_ok());
    for bad in [
        RebalanceConfig {
            imbalance_threshold: f64::NAN,
            ..Default::default()
        },
        RebalanceConfig {
            imbalance_threshold: -0.1,
            ..Default::default()
        },
        RebalanceConfig {
            max_concurrent_moves: 0,
            ..Default::default()
        },
        RebalanceConfig {
            check_interval_ms: 0,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

fn arb_view() -> impl Strategy<Value = ClusterView> {
    (
        2u64..8,
        1usize..4,
        prop::collection::vec((0u64..64, 0u64..10_000, prop::bool::weighted(0.1)), 0..40),
        prop::option::weighted(0.3, 2u64..4),
        1u64..8,
    )
        .prop_map(|(nodes, rf, placements, racks, only_on)| {
            view(nodes, rf.min(nodes as usize), &placements, racks, only_on)
        })
}

proptest! {
    #[test]
    fn plans_are_deterministic_and_keep_every_invariant(v in arb_view(), t in 0.0f64..0.5) {
        let p = plan(&v, limits(t));
        prop_assert_eq!(&p, &plan(&v, limits(t)));
        let after = p.applied_to(&v);
        let racks = v.racks();
        let mut moved_in = BTreeSet::new();
        for m in &p.moves {
            prop_assert!(!moved_in.contains(&(m.group, m.from)), "a moved replica moves on: {:?}", m);
            moved_in.insert((m.group, m.to));
            let orig = &v.partitions[(m.group - 1) as usize];
            // The move waits for the new replica to be in sync, so the
            // in-sync count never dips: only full ISRs at or above the
            // minimum move.
            prop_assert!(orig.fully_in_sync() && !orig.frozen);
            prop_assert!(m.isr_headroom >= 0 || orig.isr.len() as u32 >= orig.min_insync_replicas);
            prop_assert_eq!(m.isr_headroom, orig.isr_headroom());
        }
        for (before, p2) in v.partitions.iter().zip(&after.partitions) {
            let distinct: BTreeSet<_> = p2.replicas.iter().collect();
            prop_assert_eq!(distinct.len(), p2.replicas.len(), "two replicas on one node");
            prop_assert_eq!(p2.replicas.len(), before.replicas.len(), "replication factor kept");
            prop_assert!(p2.replicas.contains(&p2.preferred_leader));
            prop_assert!(p2.isr.len() >= before.isr.len());
            if !racks.is_empty() {
                let span = |q: &PartitionView| q.replicas.iter().filter_map(|r| racks.get(r)).collect::<BTreeSet<_>>().len();
                prop_assert!(span(p2) >= span(before));
            }
        }
        for c in &p.leaders {
            prop_assert!(c.from != c.to);
        }
    }

    /// Without racks, with every partition in sync and nothing frozen, the
    /// replica counts always reach the allowed spread (a node with two
    /// more replicas than another always holds one the other lacks), with
    /// at most a couple of moves above the computed lower bound.
    #[test]
    fn replica_balance_is_reached_with_few_moves(
        nodes in 2u64..8,
        rf in 1usize..4,
        offsets in prop::collection::vec(0u64..64, 0..40),
        only_on in 1u64..8,
        t in 0.0f64..0.5,
    ) {
        let placements: Vec<(u64, u64, bool)> = offsets.iter().map(|o| (*o, 0, false)).collect();
        let v = view(nodes, rf.min(nodes as usize), &placements, None, only_on);
        let p = plan(&v, limits(t));
        let counts = p.applied_to(&v).replica_counts();
        let allowed = allowed_spread(counts.values().sum(), counts.len(), t);
        prop_assert!(spread(&counts) <= allowed, "{:?} allowed {}", counts, allowed);
        prop_assert!(p.moves.len() as u64 <= p.lower_bound_moves + 2, "{} moves, bound {}", p.moves.len(), p.lower_bound_moves);
        prop_assert!(p.after.replicas <= t || spread(&counts) <= 1);
    }
}

#[test]
fn bytes_are_evened_by_swaps_when_counts_are_already_even() {
    // Two nodes, one replica each of four partitions: node 1 holds the two
    // big ones, node 2 the two small ones.
    let nodes = (1..=2).map(|id| NodeView { id, rack: None }).collect();
    let part = |i: u32, on: NodeId, bytes: u64| PartitionView {
        partition: PartitionId::new("t", i),
        group: u64::from(i) + 1,
        replicas: vec![on],
        preferred_leader: on,
        isr: vec![on],
        min_insync_replicas: 1,
        bytes,
        frozen: false,
    };
    let v = ClusterView {
        nodes,
        partitions: vec![
            part(0, 1, 1000),
            part(1, 1, 900),
            part(2, 2, 100),
            part(3, 2, 50),
        ],
    };
    let p = plan(&v, limits(0.2));
    let after = p.applied_to(&v);
    assert_eq!(spread(&after.replica_counts()), 0, "counts stay even");
    assert!(p.after.bytes < p.before.bytes, "{p:#?}");
    assert!(p.after.bytes <= 0.2, "{}", p.after);
    assert_eq!(p.moves.len(), 2, "one swap: {:?}", p.moves);
}
