//! What the engine asks the driver to make durable, and a model of what is
//! durable that both recovery paths share: the test harness's disk and the
//! real WAL replay both fold [`GroupUpdate`]s into a [`DurableState`], and an
//! engine is rebuilt from that.

use crate::types::{GroupId, GroupKind};
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use std::collections::BTreeMap;

/// Names one [`PersistBatch`]; tickets grow by one per batch.
pub type Ticket = u64;

/// One durable change to one group.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupUpdate {
    /// A group came to exist with this first configuration. Precedes every
    /// other update of the group.
    Create {
        group: GroupId,
        kind: GroupKind,
        conf_state: ConfState,
    },
    /// The log up to the snapshot's index is replaced by the snapshot (with
    /// its state machine data). Entries after it survive only if the entry at
    /// the snapshot's index has the snapshot's term.
    Snapshot { group: GroupId, snapshot: Snapshot },
    /// Entries to append; any durable entries from the first one's index on
    /// are replaced.
    Entries { group: GroupId, entries: Vec<Entry> },
    HardState {
        group: GroupId,
        hard_state: HardState,
    },
    /// The group is gone (its topic was deleted): all its state may go.
    Drop { group: GroupId },
    /// A replica in [`DurableState::repair`] holds a commit of its leader's
    /// current term again, so every entry it may once have acknowledged and
    /// lost is back in its log: it may vote and campaign again. Losing this
    /// update only keeps the replica abstaining a little longer.
    CaughtUp { group: GroupId },
}

impl GroupUpdate {
    pub fn group(&self) -> GroupId {
        match self {
            GroupUpdate::Create { group, .. }
            | GroupUpdate::Snapshot { group, .. }
            | GroupUpdate::Entries { group, .. }
            | GroupUpdate::HardState { group, .. }
            | GroupUpdate::Drop { group }
            | GroupUpdate::CaughtUp { group } => *group,
        }
    }
}

/// Updates of every group gathered in one engine step: one fsync covers all
/// of them (group commit).
///
/// Contract: batches MUST be made durable in ticket order, and
/// `Engine::handle_persisted(ticket)` MUST be called only AFTER the batch
/// (and so every earlier one) is durable. When `must_sync` is false the
/// batch only carries commit-index or compaction progress that is safe to
/// lose; a driver may then skip the fsync.
#[derive(Clone, Debug, PartialEq)]
pub struct PersistBatch {
    pub ticket: Ticket,
    pub updates: Vec<GroupUpdate>,
    pub must_sync: bool,
}

/// Everything durable about one group.
#[derive(Clone, Debug, PartialEq)]
pub struct DurableGroup {
    pub kind: GroupKind,
    /// The configuration the group was created with.
    pub conf_state: ConfState,
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Contiguous; the first follows the snapshot's index.
    pub entries: Vec<Entry>,
}

/// Everything durable about one engine: the input of `Engine::new`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurableState {
    pub groups: BTreeMap<GroupId, DurableGroup>,
    /// Groups whose log on this node may have lost entries the node had
    /// acknowledged (a corrupt WAL record was cut away with everything
    /// after it), each with the term and vote it must keep. Such a replica
    /// neither votes nor campaigns until it holds a commit of its leader's
    /// current term: a quorum counted on its acknowledgements, so its vote
    /// could elect a leader without them. A group listed here but absent
    /// from `groups` was lost whole; it is created abstaining, at that
    /// term, if metadata still places a replica here.
    pub repair: BTreeMap<GroupId, HardState>,
    /// Groups this node hosted and dropped (the replica moved away, the
    /// topic was deleted), with the term and vote their replica had. A
    /// replica that metadata places here again starts from them, so this
    /// node never votes twice in one term of a group (a dropped replica
    /// may have voted in a term its group has not reached yet).
    pub retired: BTreeMap<GroupId, HardState>,
}

impl DurableState {
    /// Folds one update in. An update that cannot follow the current state
    /// (unknown group, a gap in the log) is an error and changes nothing.
    pub fn apply(&mut self, update: &GroupUpdate) -> Result<(), String> {
        let group = update.group();
        if let GroupUpdate::Create {
            kind, conf_state, ..
        } = update
        {
            // Re-creating a group that exists is a no-op: a replay of the
            // metadata log may announce a group again.
            self.retired.remove(&group);
            self.groups.entry(group).or_insert_with(|| DurableGroup {
                kind: kind.clone(),
                conf_state: conf_state.clone(),
                hard_state: HardState::default(),
                snapshot: None,
                entries: Vec::new(),
            });
            return Ok(());
        }
        if let GroupUpdate::Drop { .. } = update {
            if let Some(g) = self.groups.remove(&group) {
                if let Some(hs) = retired_hard_state(&g.hard_state) {
                    self.retired.insert(group, hs);
                }
            }
            self.repair.remove(&group);
            return Ok(());
        }
        if let GroupUpdate::CaughtUp { .. } = update {
            self.repair.remove(&group);
            return Ok(());
        }
        let g = self
            .groups
            .get_mut(&group)
            .ok_or_else(|| format!("update of unknown group {group}"))?;
        match update {
            GroupUpdate::Snapshot { snapshot, .. } => {
                let meta = snapshot.get_metadata();
                let old = g.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
                if meta.index <= old {
                    return Ok(());
                }
                let matching = g
                    .entries
                    .iter()
                    .position(|e| e.index == meta.index && e.term == meta.term);
                match matching {
                    Some(pos) => {
                        g.entries.drain(..=pos);
                    }
                    None => g.entries.clear(),
                }
                g.hard_state.commit = g.hard_state.commit.max(meta.index);
                if meta.term > g.hard_state.term {
                    // A vote belongs to its term: none is known in this one.
                    g.hard_state.term = meta.term;
                    g.hard_state.vote = 0;
                }
                g.snapshot = Some(snapshot.clone());
            }
            GroupUpdate::Entries { entries, .. } => {
                let Some(first) = entries.first() else {
                    return Ok(());
                };
                let snap_index = g.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
                let last = g.entries.last().map_or(snap_index, |e| e.index);
                if first.index > last + 1 {
                    return Err(format!(
                        "group {group}: entries start at {} after log end {last}",
                        first.index
                    ));
                }
                if first.index <= snap_index {
                    return Err(format!(
                        "group {group}: entries at {} overwrite snapshot at {snap_index}",
                        first.index
                    ));
                }
                let keep = (first.index - snap_index - 1) as usize;
                g.entries.truncate(keep);
                g.entries.extend(entries.iter().cloned());
            }
            GroupUpdate::HardState { hard_state, .. } => {
                g.hard_state = hard_state.clone();
            }
            GroupUpdate::Create { .. }
            | GroupUpdate::Drop { .. }
            | GroupUpdate::CaughtUp { .. } => {
                unreachable!("handled above")
            }
        }
        Ok(())
    }

    /// Folds a whole batch in, in order.
    pub fn apply_batch(&mut self, batch: &PersistBatch) -> Result<(), String> {
        batch.updates.iter().try_for_each(|u| self.apply(u))
    }
}

/// What a dropped replica leaves behind: its term and vote (its commit
/// index meant nothing without its log). `None` if it never had a term.
pub fn retired_hard_state(hs: &HardState) -> Option<HardState> {
    (hs.term > 0).then(|| HardState {
        term: hs.term,
        vote: hs.vote,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PartitionId;

    fn hs(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..Default::default()
        }
    }

    #[test]
    fn a_dropped_group_leaves_its_term_and_vote_until_it_is_created_again() {
        let mut d = DurableState::default();
        let create = GroupUpdate::Create {
            group: 7,
            kind: GroupKind::Partition(PartitionId::new("t", 0)),
            conf_state: ConfState::default(),
        };
        d.apply(&create).expect("create");
        d.apply(&GroupUpdate::HardState {
            group: 7,
            hard_state: hs(5, 2, 9),
        })
        .expect("hard state");
        d.apply(&GroupUpdate::Drop { group: 7 }).expect("drop");
        assert!(!d.groups.contains_key(&7));
        // The commit index goes with the log; the promise stays.
        assert_eq!(d.retired.get(&7), Some(&hs(5, 2, 0)));
        d.apply(&create).expect("created again");
        assert!(
            d.retired.is_empty(),
            "the new replica's own state takes over"
        );
        // A replica that never had a term leaves nothing.
        d.apply(&GroupUpdate::Drop { group: 7 }).expect("drop");
        assert!(d.retired.is_empty());
    }
}
