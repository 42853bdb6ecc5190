//! A bounded history of the decisions about each hosted group that this
//! node made or saw (elections, leadership handoffs, ISR changes, moves,
//! configuration changes), with their reasons: `cluster partition-info
//! --why` merges the histories of a partition's replicas.

use chronik_core::GroupId;
use std::collections::{BTreeMap, VecDeque};

/// Decisions kept per group: enough for the last few incidents, small
/// enough for thousands of partitions (a group with no incident keeps
/// nothing).
pub const DECISIONS_PER_GROUP: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Wall clock, ms since the Unix epoch (only ever displayed).
    pub at_ms: u64,
    pub kind: &'static str,
    pub term: u64,
    pub detail: String,
}

#[derive(Default)]
pub struct History {
    groups: BTreeMap<GroupId, VecDeque<Decision>>,
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    pub fn note(&mut self, group: GroupId, kind: &'static str, term: u64, detail: String) {
        let h = self.groups.entry(group).or_default();
        if h.len() == DECISIONS_PER_GROUP {
            h.pop_front();
        }
        h.push_back(Decision {
            at_ms: wall_clock_ms(),
            kind,
            term,
            detail,
        });
    }

    /// Oldest first.
    pub fn of(&self, group: GroupId) -> Vec<Decision> {
        self.groups
            .get(&group)
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn forget(&mut self, group: GroupId) {
        self.groups.remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_decisions_per_group() {
        let mut h = History::default();
        for i in 0..(DECISIONS_PER_GROUP as u64 + 5) {
            h.note(7, "leader_changed", i, format!("#{i}"));
        }
        h.note(8, "created", 0, "x".into());
        let d = h.of(7);
        assert_eq!(d.len(), DECISIONS_PER_GROUP);
        assert_eq!(d[0].term, 5, "the oldest went first");
        assert_eq!(
            d.last().map(|d| d.term),
            Some(DECISIONS_PER_GROUP as u64 + 4)
        );
        h.forget(7);
        assert!(h.of(7).is_empty());
        assert_eq!(h.of(8).len(), 1);
    }
}
