//! In-sync replica tracking, as a partition leader sees it. Pure: the engine
//! feeds it the time and raft-rs's per-replica progress, and it says which
//! ISR the leader should propose through the metadata group.
//!
//! A replica is in sync while it lags the leader's log by at most
//! `max_lag_entries` and caught up within the last `max_lag_ms`. A replica
//! "caught up at T" when it holds everything the leader had at time T, so
//! its time lag is the age of the oldest entry it lacks: a follower that
//! keeps pace with a steady stream of appends (always a round trip behind
//! the very tip) lags by a round trip, not forever. The leader remembers
//! when its log reached each length, at the granularity of its
//! observations (one per tick).
//!
//! Invariants of every proposal: the leader is in it, it is a subset of the
//! replicas, and an out-of-sync replica only re-enters once it has every
//! committed entry.

use crate::types::{NodeId, Time};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// When a replica counts as in sync.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IsrPolicy {
    pub max_lag_entries: u64,
    pub max_lag_ms: u64,
}

/// One replica's lag, as the leader last observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaLag {
    pub node: NodeId,
    /// Highest log index known to be on the replica.
    pub matched: u64,
    /// Entries the replica is behind the leader's last index.
    pub lag_entries: u64,
    /// Milliseconds since the replica was last caught up.
    pub lag_ms: u64,
    pub in_sync: bool,
}

/// An ISR change for the leader to propose, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<NodeId>,
    /// e.g. `"shrink: node 3 lags 12034 entries, caught up 10500 ms ago"`.
    pub reason: String,
}

/// The leader's view of its replicas. Reset whenever leadership (re)starts:
/// a new leader gives every replica a fresh grace period rather than
/// shrinking on history it never saw.
#[derive(Clone, Debug, Default)]
pub struct IsrTracker {
    last_caught_up: BTreeMap<NodeId, Time>,
    /// `(when, leader's last index)` at each observation that saw the log
    /// grow, oldest first; trimmed to what `max_lag_ms` can still matter for.
    growth: VecDeque<(Time, u64)>,
    horizon_ms: u64,
}

impl IsrTracker {
    /// A tracker for a leader that starts at `now`.
    pub fn new(now: Time, policy: &IsrPolicy, replicas: &[NodeId], last_index: u64) -> Self {
        IsrTracker {
            last_caught_up: replicas.iter().map(|r| (*r, now)).collect(),
            growth: VecDeque::from([(now, last_index)]),
            horizon_ms: policy.max_lag_ms,
        }
    }

    /// Notes that the leader's log was still `last_index` long at `now`
    /// although nothing observed it meanwhile (a quiesced group waking):
    /// a replica holding that much was caught up until now, and one
    /// holding less is dated back as before.
    pub fn note_unchanged(&mut self, now: Time, last_index: u64) {
        if self
            .growth
            .back()
            .is_some_and(|(t, l)| *l == last_index && *t < now)
        {
            self.growth.push_back((now, last_index));
        }
    }

    /// Folds one observation of the replicas' matched indexes in. Only
    /// replicas in `active` (heard from recently) can count as caught up: a
    /// silent replica that happens to hold the whole log is not following.
    pub fn observe(
        &mut self,
        now: Time,
        last_index: u64,
        matched: &BTreeMap<NodeId, u64>,
        active: &BTreeSet<NodeId>,
    ) {
        if self.growth.back().is_none_or(|(_, l)| *l < last_index) {
            self.growth.push_back((now, last_index));
        }
        // Keep one observation at or beyond the horizon, so a replica whose
        // match is older than every kept one still reads as too old.
        while self.growth.len() > 1
            && self.growth[1].0.as_millis() + self.horizon_ms < now.as_millis()
        {
            self.growth.pop_front();
        }
        for (node, m) in matched {
            if !active.contains(node) {
                continue;
            }
            // The latest time the leader's log was no longer than `m`.
            let at = if *m >= last_index {
                Some(now)
            } else {
                self.growth
                    .iter()
                    .rev()
                    .find(|(_, l)| *l <= *m)
                    .map(|(t, _)| *t)
            };
            if let Some(at) = at {
                let e = self.last_caught_up.entry(*node).or_insert(at);
                *e = (*e).max(at);
            }
        }
    }

    /// Each replica's lag at `now`; replicas without progress (not in the
    /// Raft configuration yet) count as infinitely behind.
    pub fn lags(
        &self,
        now: Time,
        policy: &IsrPolicy,
        last_index: u64,
        replicas: &[NodeId],
        matched: &BTreeMap<NodeId, u64>,
    ) -> Vec<ReplicaLag> {
        replicas
            .iter()
            .map(|node| {
                let m = matched.get(node).copied().unwrap_or(0);
                let lag_entries = last_index.saturating_sub(m);
                let lag_ms = self
                    .last_caught_up
                    .get(node)
                    .map_or(u64::MAX, |t| now.as_millis().saturating_sub(t.as_millis()));
                ReplicaLag {
                    node: *node,
                    matched: m,
                    lag_entries,
                    lag_ms,
                    in_sync: matched.contains_key(node)
                        && lag_entries <= policy.max_lag_entries
                        && lag_ms <= policy.max_lag_ms,
                }
            })
            .collect()
    }

    /// The ISR the leader should propose, if it differs from `current`.
    /// Out-of-sync members leave; in-sync replicas holding every committed
    /// entry join. `None` when nothing changes, or when the leader itself
    /// is not in `current` (it may not add itself: that is an unclean
    /// election, decided by [`IsrTracker::unclean_takeover`]).
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        now: Time,
        policy: &IsrPolicy,
        leader: NodeId,
        last_index: u64,
        commit: u64,
        replicas: &[NodeId],
        current: &[NodeId],
        matched: &BTreeMap<NodeId, u64>,
    ) -> Option<IsrChange> {
        if !current.contains(&leader) {
            return None;
        }
        let lags = self.lags(now, policy, last_index, replicas, matched);
        let mut isr = Vec::new();
        let mut out = Vec::new();
        let mut joined = Vec::new();
        for lag in &lags {
            let member = current.contains(&lag.node);
            // Planted bug (simulation builds only): members never leave.
            let keep = lag.node == leader
                || lag.in_sync
                || crate::planted::active(crate::planted::Bug::IsrNeverShrinks);
            let may_join = lag.in_sync && lag.matched >= commit;
            if (member && keep) || (!member && may_join) {
                isr.push(lag.node);
                if !member {
                    joined.push(format!("node {} caught up to {}", lag.node, lag.matched));
                }
            } else if member {
                out.push(format!(
                    "node {} lags {} entries, caught up {} ms ago",
                    lag.node,
                    lag.lag_entries,
                    if lag.lag_ms == u64::MAX {
                        "never".to_string()
                    } else {
                        lag.lag_ms.to_string()
                    }
                ));
            }
        }
        if out.is_empty() && joined.is_empty() {
            return None;
        }
        let mut reason = Vec::new();
        if !out.is_empty() {
            reason.push(format!("shrink: {}", out.join("; ")));
        }
        if !joined.is_empty() {
            reason.push(format!("expand: {}", joined.join("; ")));
        }
        debug_assert!(isr.contains(&leader), "the leader stays in its ISR");
        Some(IsrChange {
            isr,
            reason: reason.join(", "),
        })
    }

    /// With unclean election allowed, a leader outside the ISR takes over:
    /// the new ISR is itself plus whoever is in sync with it.
    pub fn unclean_takeover(
        &self,
        now: Time,
        policy: &IsrPolicy,
        leader: NodeId,
        last_index: u64,
        replicas: &[NodeId],
        matched: &BTreeMap<NodeId, u64>,
    ) -> IsrChange {
        let isr: Vec<NodeId> = self
            .lags(now, policy, last_index, replicas, matched)
            .into_iter()
            .filter(|l| l.node == leader || l.in_sync)
            .map(|l| l.node)
            .collect();
        IsrChange {
            reason: format!("unclean election: node {leader} leads without being in sync"),
            isr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: IsrPolicy = IsrPolicy {
        max_lag_entries: 100,
        max_lag_ms: 1_000,
    };

    fn matched(m: &[(NodeId, u64)]) -> BTreeMap<NodeId, u64> {
        m.iter().copied().collect()
    }

    fn all() -> BTreeSet<NodeId> {
        (1..=3).collect()
    }

    #[test]
    fn a_follower_keeping_pace_stays_in_sync() {
        // Appends keep arriving; follower 2 is always 35 entries (a round
        // trip of three and a half observations) behind the tip.
        let mut t = IsrTracker::new(Time(0), &POLICY, &[1, 2], 0);
        for step in 1..100u64 {
            let last = step * 10;
            t.observe(
                Time(step * 100),
                last,
                &matched(&[(1, last), (2, last.saturating_sub(35))]),
                &all(),
            );
        }
        let change = t.decide(
            Time(10_000),
            &POLICY,
            1,
            990,
            955,
            &[1, 2],
            &[1, 2],
            &matched(&[(1, 990), (2, 955)]),
        );
        assert_eq!(change, None);
    }

    #[test]
    fn a_stalled_follower_leaves_after_max_lag_ms_and_returns_when_caught_up() {
        let mut t = IsrTracker::new(Time(0), &POLICY, &[1, 2, 3], 10);
        let m = matched(&[(1, 20), (2, 20), (3, 10)]);
        t.observe(Time(100), 20, &m, &all());
        t.observe(Time(500), 20, &m, &all());
        // 3 holds what the leader had until 100 (index 10), nothing since.
        assert_eq!(
            t.decide(Time(1_000), &POLICY, 1, 20, 20, &[1, 2, 3], &[1, 2, 3], &m),
            None,
            "within max_lag_ms"
        );
        let c = t
            .decide(Time(1_200), &POLICY, 1, 20, 20, &[1, 2, 3], &[1, 2, 3], &m)
            .expect("shrink");
        assert_eq!(c.isr, vec![1, 2]);
        assert!(
            c.reason.contains("shrink: node 3 lags 10 entries"),
            "{}",
            c.reason
        );
        // It catches up: it rejoins with every committed entry.
        let m = matched(&[(1, 20), (2, 20), (3, 20)]);
        t.observe(Time(1_300), 20, &m, &all());
        let c = t
            .decide(Time(1_300), &POLICY, 1, 20, 20, &[1, 2, 3], &[1, 2], &m)
            .expect("expand");
        assert_eq!(c.isr, vec![1, 2, 3]);
        assert!(c.reason.contains("expand: node 3"), "{}", c.reason);
    }

    #[test]
    fn a_silent_replica_with_the_whole_log_falls_out_of_sync() {
        let mut t = IsrTracker::new(Time(0), &POLICY, &[1, 2], 10);
        let m = matched(&[(1, 10), (2, 10)]);
        let active: BTreeSet<NodeId> = [1].into();
        for step in 1..=12 {
            t.observe(Time(step * 100), 10, &m, &active);
        }
        let c = t
            .decide(Time(1_200), &POLICY, 1, 10, 10, &[1, 2], &[1, 2], &m)
            .expect("shrink");
        assert_eq!(c.isr, vec![1]);
    }

    #[test]
    fn entry_lag_alone_shrinks_and_missing_progress_never_joins() {
        let t = IsrTracker::new(Time(0), &POLICY, &[1, 2, 3], 500);
        let m = matched(&[(1, 500), (2, 300)]);
        let c = t
            .decide(Time(10), &POLICY, 1, 500, 500, &[1, 2, 3], &[1, 2, 3], &m)
            .expect("shrink");
        assert_eq!(c.isr, vec![1]);
        assert!(c.reason.contains("node 2 lags 200 entries"), "{}", c.reason);
        assert!(c.reason.contains("node 3 lags 500 entries"), "{}", c.reason);
    }

    #[test]
    fn a_replica_without_every_committed_entry_does_not_join() {
        let t = IsrTracker::new(Time(0), &POLICY, &[1, 2], 100);
        let m = matched(&[(1, 100), (2, 95)]);
        assert_eq!(
            t.decide(Time(10), &POLICY, 1, 100, 98, &[1, 2], &[1], &m),
            None
        );
    }

    #[test]
    fn a_leader_outside_the_isr_proposes_nothing_unless_unclean() {
        let t = IsrTracker::new(Time(0), &POLICY, &[1, 2, 3], 10);
        let m = matched(&[(1, 10), (2, 10), (3, 10)]);
        assert_eq!(
            t.decide(Time(10), &POLICY, 2, 10, 10, &[1, 2, 3], &[1], &m),
            None
        );
        let c = t.unclean_takeover(Time(10), &POLICY, 2, 10, &[1, 2, 3], &m);
        assert_eq!(c.isr, vec![1, 2, 3]);
        assert!(c.reason.contains("unclean"));
    }
}
