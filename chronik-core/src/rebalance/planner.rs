//! The planner: from a [`ClusterView`], the leadership changes and the
//! fewest replica moves that bring every dimension within the threshold.
//!
//! Greedy, in three passes, each strictly lowering the sum of squared
//! loads (so each ends):
//! 1. leaders: preferred leadership goes from the node with the most to an
//!    in-sync replica on a node with fewer (no data moves);
//! 2. replicas: one replica at a time from the most to the least loaded
//!    node, the smallest eligible partition first; a partition moves only
//!    with its whole replica set in sync, never onto a node that already
//!    holds one of its replicas, never onto fewer racks;
//! 3. bytes: while bytes stay unbalanced, a move from the heaviest to the
//!    lightest node that keeps replica counts within their spread;
//!
//! then leaders again on the placement the moves leave (those changes are
//! made once the moves are done).

use super::imbalance::{allowed_spread, lower_bound_moves, Imbalance};
use super::view::ClusterView;
use crate::types::{GroupId, NodeId, PartitionId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One replica moving between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    pub partition: PartitionId,
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    /// Bytes the new replica copies.
    pub bytes: u64,
    /// The lowest in-sync replicas above `min_insync_replicas` while the
    /// move runs (the old replica leaves only once the new one is in sync).
    pub isr_headroom: i64,
    pub reason: String,
}

/// A partition's preferred leadership moving to another replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderChange {
    pub partition: PartitionId,
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    /// Made after the plan's replica moves (it names a replica a move
    /// creates, or balances what the moves leave).
    pub after_moves: bool,
    pub reason: String,
}

/// A rebalance plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub leaders: Vec<LeaderChange>,
    pub moves: Vec<PlannedMove>,
    pub before: Imbalance,
    /// The imbalance once every step is done.
    pub after: Imbalance,
    /// The fewest replica moves that could bring replica counts within the
    /// threshold (ignoring which partitions may move).
    pub lower_bound_moves: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.leaders.is_empty() && self.moves.is_empty()
    }

    /// How long the moves take when each copies at `bytes_per_sec` and at
    /// most `concurrency` run at once (longest first onto the lane that
    /// frees first), plus `per_move_ms` each for the Raft steps.
    pub fn estimated_duration_ms(
        &self,
        bytes_per_sec: u64,
        concurrency: u32,
        per_move_ms: u64,
    ) -> u64 {
        let lanes = concurrency.max(1) as usize;
        let rate = bytes_per_sec.max(1);
        let mut costs: Vec<u64> = self
            .moves
            .iter()
            .map(|m| m.bytes.saturating_mul(1000) / rate + per_move_ms)
            .collect();
        costs.sort_unstable_by(|a, b| b.cmp(a));
        let mut busy = vec![0u64; lanes.min(costs.len().max(1))];
        for c in costs {
            let lane = busy
                .iter_mut()
                .min()
                .expect("at least one lane is allocated");
            *lane += c;
        }
        busy.into_iter().max().unwrap_or(0)
    }

    /// The metadata command that starts this plan as a run.
    pub fn start_command(
        &self,
        trigger: String,
        max_concurrent_moves: u32,
    ) -> crate::metadata::MetadataCommand {
        let leaders = |after: bool| {
            self.leaders
                .iter()
                .filter(|l| l.after_moves == after)
                .map(|l| crate::metadata::PlannedLeader {
                    group: l.group,
                    to: l.to,
                })
                .collect()
        };
        crate::metadata::MetadataCommand::StartRebalance {
            trigger,
            max_concurrent_moves,
            moves: self
                .moves
                .iter()
                .map(|m| (m.group, m.from, m.to, m.bytes))
                .collect(),
            leaders_now: leaders(false),
            leaders_after: leaders(true),
        }
    }

    /// The view once every step of the plan is done.
    pub fn applied_to(&self, view: &ClusterView) -> ClusterView {
        let mut v = view.clone();
        let index: BTreeMap<GroupId, usize> = v
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (p.group, i))
            .collect();
        let lead = |v: &mut ClusterView, after: bool| {
            for c in self.leaders.iter().filter(|c| c.after_moves == after) {
                if let Some(i) = index.get(&c.group) {
                    v.partitions[*i].preferred_leader = c.to;
                }
            }
        };
        lead(&mut v, false);
        for m in &self.moves {
            if let Some(i) = index.get(&m.group) {
                v.apply_move(*i, m.from, m.to);
            }
        }
        lead(&mut v, true);
        v
    }
}

/// What the planner is asked for.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct PlanLimits {
    /// A dimension is balanced when `(max - min) / mean` is at most this.
    pub imbalance_threshold: f64,
    /// Most replica moves in the plan.
    pub max_moves: usize,
}

/// Plans a rebalance of `view`. Empty when every dimension is within the
/// threshold. Deterministic: the same view gives the same plan.
pub fn plan(view: &ClusterView, limits: PlanLimits) -> Plan {
    let before = Imbalance::of(view);
    let t = limits.imbalance_threshold;
    let counts = view.replica_counts();
    let spread_r = allowed_spread(counts.values().sum(), counts.len(), t);
    let mut out = Plan {
        before,
        after: before,
        lower_bound_moves: lower_bound_moves(&counts, spread_r),
        ..Plan::default()
    };
    if before.exceeding(t).is_empty() {
        return out;
    }
    let mut v = view.clone();
    balance_leaders(&mut v, t, false, &mut out.leaders);
    let mut moved = BTreeSet::new();
    balance_replicas(
        &mut v,
        spread_r,
        limits.max_moves,
        &mut moved,
        &mut out.moves,
    );
    balance_bytes(
        &mut v,
        t,
        spread_r,
        limits.max_moves,
        &mut moved,
        &mut out.moves,
    );
    balance_leaders(&mut v, t, true, &mut out.leaders);
    out.after = Imbalance::of(&v);
    debug_assert_eq!(out.applied_to(view), v, "a plan replays to its own view");
    out
}

/// Moves preferred leadership off the nodes with the most, onto in-sync
/// replicas on nodes with fewer, until the spread is within the threshold
/// or nothing more can move.
fn balance_leaders(v: &mut ClusterView, t: f64, after_moves: bool, out: &mut Vec<LeaderChange>) {
    loop {
        let counts = v.leader_counts();
        let spread = allowed_spread(counts.values().sum(), counts.len(), t);
        let (Some(max), Some(min)) = (counts.values().max(), counts.values().min()) else {
            return;
        };
        if max - min <= spread {
            return;
        }
        // The best change: from a node with the most, to the node with the
        // fewest that some partition led there can name.
        let mut best: Option<(u64, usize, NodeId)> = None;
        for (i, p) in v.partitions.iter().enumerate() {
            let from = p.preferred_leader;
            if p.frozen || counts.get(&from) != Some(max) {
                continue;
            }
            for to in p.isr.iter().filter(|n| **n != from) {
                let Some(c) = counts.get(to) else { continue };
                if c + 1 < *max && best.is_none_or(|(bc, _, bn)| (*c, *to) < (bc, bn)) {
                    best = Some((*c, i, *to));
                }
            }
        }
        let Some((c, i, to)) = best else { return };
        let p = &mut v.partitions[i];
        out.push(LeaderChange {
            partition: p.partition.clone(),
            group: p.group,
            from: p.preferred_leader,
            to,
            after_moves,
            reason: format!(
                "node {} is preferred leader of {max} partitions, node {to} of {c} (spread {}, allowed {spread})",
                p.preferred_leader,
                max - min
            ),
        });
        p.preferred_leader = to;
    }
}

/// Moves single replicas from the most to the least loaded nodes until
/// replica counts are within `spread` (or `max_moves` is reached, or no
/// eligible partition is left between the loaded and the light nodes).
fn balance_replicas(
    v: &mut ClusterView,
    spread: u64,
    max_moves: usize,
    moved: &mut BTreeSet<(GroupId, NodeId)>,
    out: &mut Vec<PlannedMove>,
) {
    let racks = v.racks();
    while out.len() < max_moves {
        let counts = v.replica_counts();
        let (Some(max), Some(min)) = (counts.values().max(), counts.values().min()) else {
            return;
        };
        if max - min <= spread {
            return;
        }
        let mut donors: Vec<(NodeId, u64)> = counts.iter().map(|(n, c)| (*n, *c)).collect();
        donors.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
        let mut receivers = donors.clone();
        receivers.sort_by_key(|(n, c)| (*c, *n));
        let found = donors.iter().find_map(|(from, fc)| {
            receivers
                .iter()
                .take_while(|(_, tc)| tc + 1 < *fc)
                .find_map(|(to, tc)| {
                    pick(v, *from, *to, &racks, moved, |p| p.bytes)
                        .map(|i| (*from, *fc, *to, *tc, i))
                })
        });
        let Some((from, fc, to, tc, i)) = found else {
            return;
        };
        push_move(
            v,
            i,
            from,
            to,
            format!(
                "node {from} holds {fc} replicas, node {to} {tc} (spread {}, allowed {spread})",
                max - min
            ),
            moved,
            out,
        );
    }
}

/// While bytes per node exceed the threshold: one move from the heaviest
/// node to the lightest, of the partition closest to half their gap, if it
/// keeps replica counts within `spread` and narrows the gap.
fn balance_bytes(
    v: &mut ClusterView,
    t: f64,
    spread: u64,
    max_moves: usize,
    moved: &mut BTreeSet<(GroupId, NodeId)>,
    out: &mut Vec<PlannedMove>,
) {
    let racks = v.racks();
    while out.len() < max_moves {
        if Imbalance::of(v).bytes <= t {
            return;
        }
        let bytes = v.byte_counts();
        let counts = v.replica_counts();
        let (Some((from, hi)), Some((to, lo))) = (
            bytes
                .iter()
                .max_by_key(|(n, b)| (**b, std::cmp::Reverse(**n))),
            bytes.iter().min_by_key(|(n, b)| (**b, **n)),
        ) else {
            return;
        };
        let (from, to, gap, hi, lo) = (*from, *to, hi - lo, *hi, *lo);
        let mut after = counts.clone();
        *after.get_mut(&from).expect("a node of the view") -= 1;
        *after.get_mut(&to).expect("a node of the view") += 1;
        let (amax, amin) = (
            after.values().max().copied().unwrap_or(0),
            after.values().min().copied().unwrap_or(0),
        );
        let now_spread = counts.values().max().copied().unwrap_or(0)
            - counts.values().min().copied().unwrap_or(0);
        let reason = format!("node {from} holds {hi} bytes, node {to} {lo}");
        // One move, closest to half the gap and strictly inside it (so it
        // narrows), if replica counts stay within their spread...
        let single = (amax - amin <= spread.max(now_spread))
            .then(|| {
                pick(v, from, to, &racks, moved, |p| {
                    if p.bytes == 0 || p.bytes >= gap {
                        u64::MAX
                    } else {
                        (p.bytes * 2).abs_diff(gap)
                    }
                })
            })
            .flatten()
            .filter(|i| v.partitions[*i].bytes > 0 && v.partitions[*i].bytes < gap);
        if let Some(i) = single {
            push_move(v, i, from, to, reason, moved, out);
            continue;
        }
        // ... else a swap: a larger partition from the heavy node and a
        // smaller one back, counts unchanged, the difference closest to
        // half the gap.
        if out.len() + 2 > max_moves {
            return;
        }
        let Some((a, b)) = swap(v, from, to, gap, &racks, moved) else {
            return;
        };
        push_move(v, a, from, to, reason.clone(), moved, out);
        push_move(
            v,
            b,
            to,
            from,
            format!("{reason} (swapped back)"),
            moved,
            out,
        );
    }
}

/// The pair (a partition to move from `from` to `to`, a smaller one to
/// move back) whose size difference is inside `gap` and closest to half
/// of it.
fn swap(
    v: &ClusterView,
    from: NodeId,
    to: NodeId,
    gap: u64,
    racks: &BTreeMap<NodeId, String>,
    moved: &BTreeSet<(GroupId, NodeId)>,
) -> Option<(usize, usize)> {
    let eligible = |a: NodeId, b: NodeId| -> Vec<(u64, usize)> {
        let mut c: Vec<(u64, usize)> = v
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| eligible(v, p, a, b, racks, moved))
            .map(|(i, p)| (p.bytes, i))
            .collect();
        c.sort_unstable();
        c
    };
    let (out, back) = (eligible(from, to), eligible(to, from));
    let mut best: Option<(u64, usize, usize)> = None;
    for (a_bytes, a) in &out {
        // The partition coming back ideally weighs a_bytes - gap / 2.
        let ideal = a_bytes.saturating_sub(gap / 2);
        let k = back.partition_point(|(b, _)| *b < ideal);
        for (b_bytes, b) in back[k.saturating_sub(1)..(k + 1).min(back.len())].iter() {
            if b_bytes >= a_bytes || a_bytes - b_bytes >= gap {
                continue;
            }
            let cost = ((a_bytes - b_bytes) * 2).abs_diff(gap);
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, *a, *b));
            }
        }
    }
    best.map(|(_, a, b)| (a, b))
}

/// The eligible partition with the lowest `cost` (then the one not led
/// from `from`, then the lowest group) to move from `from` to `to`. A
/// replica the plan moved in is not moved on again.
fn pick(
    v: &ClusterView,
    from: NodeId,
    to: NodeId,
    racks: &BTreeMap<NodeId, String>,
    moved: &BTreeSet<(GroupId, NodeId)>,
    cost: impl Fn(&super::view::PartitionView) -> u64,
) -> Option<usize> {
    v.partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| eligible(v, p, from, to, racks, moved))
        .min_by_key(|(_, p)| (cost(p), p.preferred_leader == from, p.group))
        .map(|(i, _)| i)
}

/// Whether the plan may move `p`'s replica from `from` to `to`: not
/// frozen, fully in sync, not a replica the plan moved in, and `to` may
/// take it.
fn eligible(
    v: &ClusterView,
    p: &super::view::PartitionView,
    from: NodeId,
    to: NodeId,
    racks: &BTreeMap<NodeId, String>,
    moved: &BTreeSet<(GroupId, NodeId)>,
) -> bool {
    !p.frozen
        && !moved.contains(&(p.group, from))
        && p.fully_in_sync()
        && v.may_move(p, from, to, racks)
}

fn push_move(
    v: &mut ClusterView,
    i: usize,
    from: NodeId,
    to: NodeId,
    reason: String,
    moved: &mut BTreeSet<(GroupId, NodeId)>,
    out: &mut Vec<PlannedMove>,
) {
    let p = &v.partitions[i];
    moved.insert((p.group, to));
    out.push(PlannedMove {
        partition: p.partition.clone(),
        group: p.group,
        from,
        to,
        bytes: p.bytes,
        isr_headroom: p.isr_headroom(),
        reason,
    });
    v.apply_move(i, from, to);
}
