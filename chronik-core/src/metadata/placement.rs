//! Replica placement for new partitions: spread replicas and preferred
//! leaders evenly over nodes, counting what existing topics already place.

use super::PartitionMeta;
use crate::types::NodeId;
use std::collections::BTreeMap;

/// Places `count` new partitions with `replication_factor` replicas each on
/// `nodes`. Each returned list starts with the preferred leader.
///
/// Greedy and deterministic: the leader of each partition is the node with
/// the fewest preferred leaderships (then fewest replicas, then lowest id);
/// the followers are the nodes with the fewest replicas (then lowest id). So
/// leader counts and replica counts per node differ by at most one when
/// starting from an even cluster.
///
/// # Panics
/// If `replication_factor` is 0 or exceeds `nodes.len()` (callers validate).
pub fn place_partitions(
    nodes: &[NodeId],
    existing: &[&PartitionMeta],
    count: u32,
    replication_factor: u32,
) -> Vec<Vec<NodeId>> {
    assert!(replication_factor >= 1, "replication factor validated");
    assert!(
        replication_factor as usize <= nodes.len(),
        "replication factor validated against node count"
    );
    let mut replicas: BTreeMap<NodeId, u64> = nodes.iter().map(|n| (*n, 0)).collect();
    let mut leaders: BTreeMap<NodeId, u64> = replicas.clone();
    for p in existing {
        for r in &p.replicas {
            if let Some(c) = replicas.get_mut(r) {
                *c += 1;
            }
        }
        if let Some(c) = leaders.get_mut(&p.preferred_leader) {
            *c += 1;
        }
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let leader = *nodes
            .iter()
            .min_by_key(|n| (leaders[*n], replicas[*n], **n))
            .expect("nodes is non-empty");
        let mut chosen = vec![leader];
        let mut rest: Vec<NodeId> = nodes.iter().copied().filter(|n| *n != leader).collect();
        rest.sort_by_key(|n| (replicas[n], *n));
        chosen.extend(rest.into_iter().take(replication_factor as usize - 1));
        for n in &chosen {
            *replicas.get_mut(n).expect("chosen from nodes") += 1;
        }
        *leaders.get_mut(&leader).expect("chosen from nodes") += 1;
        out.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spread(counts: impl Iterator<Item = u64>) -> u64 {
        let v: Vec<u64> = counts.collect();
        v.iter().max().copied().unwrap_or(0) - v.iter().min().copied().unwrap_or(0)
    }

    proptest! {
        #[test]
        fn placement_is_even_and_valid(
            n in 1usize..8,
            topics in proptest::collection::vec((1u32..20, 1u32..8), 1..5),
        ) {
            let nodes: Vec<NodeId> = (1..=n as u64).collect();
            let mut all: Vec<PartitionMeta> = Vec::new();
            for (count, rf) in topics {
                let rf = rf.min(n as u32);
                let existing: Vec<&PartitionMeta> = all.iter().collect();
                let placed = place_partitions(&nodes, &existing, count, rf);
                prop_assert_eq!(placed.len(), count as usize);
                for r in placed {
                    prop_assert_eq!(r.len(), rf as usize);
                    let mut d = r.clone();
                    d.sort();
                    d.dedup();
                    prop_assert_eq!(d.len(), r.len(), "no duplicate replica");
                    all.push(PartitionMeta {
                        moving: None,
                        partition: 0,
                        group: 1,
                        preferred_leader: r[0],
                        isr: r.clone(),
                        replicas: r,
                    });
                }
                let mut rc: BTreeMap<NodeId, u64> = nodes.iter().map(|x| (*x, 0)).collect();
                let mut lc = rc.clone();
                for p in &all {
                    for r in &p.replicas { *rc.get_mut(r).unwrap() += 1; }
                    *lc.get_mut(&p.preferred_leader).unwrap() += 1;
                }
                prop_assert!(spread(lc.values().copied()) <= 1, "leaders uneven: {:?}", lc);
                prop_assert!(spread(rc.values().copied()) <= 2, "replicas uneven: {:?}", rc);
            }
        }
    }
}
