//! In-memory Raft log storage for one group: the view raft-rs reads from.
//!
//! The engine writes every ready's snapshot, entries and hard state here
//! before handing them to the driver to persist (raft-rs's async-ready
//! contract requires raft to be able to read them back at once), and keeps
//! the latest snapshot with its data so lagging followers can be sent it.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Debug, Default)]
pub struct GroupStorage {
    hard_state: HardState,
    /// The configuration as of the last applied configuration change (or
    /// the snapshot / initial configuration when none was applied since).
    conf_state: ConfState,
    /// Latest snapshot, with its data. Index 0 means none (initial state).
    snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    entries: Vec<Entry>,
}

impl GroupStorage {
    /// Storage for a brand-new group whose first configuration is `conf`.
    pub fn new_with_conf_state(conf: ConfState) -> Self {
        let mut s = GroupStorage::default();
        s.snapshot.mut_metadata().set_conf_state(conf.clone());
        s.conf_state = conf;
        s
    }

    /// Storage rebuilt from persisted state. `snapshot` (if any) must cover
    /// every index below the first of `entries`.
    pub fn recovered(
        conf: ConfState,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
    ) -> Result<Self, String> {
        let mut s = GroupStorage::new_with_conf_state(conf);
        if let Some(snap) = snapshot {
            s.conf_state = snap.get_metadata().get_conf_state().clone();
            s.snapshot = snap;
        }
        let snap_index = s.snapshot_index();
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snap_index)
            .collect();
        if let Some(first) = entries.first() {
            if first.index != snap_index + 1 {
                return Err(format!(
                    "log starts at index {} but the snapshot ends at {snap_index}",
                    first.index
                ));
            }
        }
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(format!("log has a gap after index {}", w[0].index));
            }
        }
        s.entries = entries;
        let last = s.last_index_();
        if hard_state.commit > last {
            return Err(format!(
                "hard state commits index {} but the log ends at {last}",
                hard_state.commit
            ));
        }
        s.hard_state = hard_state;
        // A snapshot implies its index is committed, whatever hard state
        // was written before it.
        let (snap_index, snap_term) = (s.snapshot_index(), s.snapshot.get_metadata().term);
        s.hard_state.commit = s.hard_state.commit.max(snap_index);
        if snap_term > s.hard_state.term {
            // A vote belongs to its term: none is known in this one.
            s.hard_state.term = snap_term;
            s.hard_state.vote = 0;
        }
        Ok(s)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Whether the stored snapshot's configuration lists `node` (a node it
    /// does not list refuses to restore it).
    pub fn snapshot_lists(&self, node: u64) -> bool {
        let cs = self.snapshot.get_metadata().get_conf_state();
        cs.voters.contains(&node)
            || cs.learners.contains(&node)
            || cs.voters_outgoing.contains(&node)
            || cs.learners_next.contains(&node)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    /// Number of entries held in memory.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn first_index_(&self) -> u64 {
        self.snapshot_index() + 1
    }

    fn last_index_(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// Appends entries, replacing any suffix they conflict with.
    ///
    /// # Panics
    /// If the entries would leave a gap or overwrite compacted entries:
    /// raft-rs never produces such a ready.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index >= self.first_index_(),
            "append at {} overwrites compacted log (first index {})",
            first.index,
            self.first_index_()
        );
        assert!(
            first.index <= self.last_index_() + 1,
            "append at {} leaves a gap after {}",
            first.index,
            self.last_index_()
        );
        let keep = (first.index - self.first_index_()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot received from the leader: the log it covers is
    /// dropped; entries past it are dropped too unless they match it.
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let meta = snap.get_metadata();
        let index = meta.index;
        if index <= self.snapshot_index() {
            return;
        }
        let keep_tail = self
            .entries
            .iter()
            .position(|e| e.index == index && e.term == meta.term);
        match keep_tail {
            Some(pos) => {
                self.entries.drain(..=pos);
            }
            None => self.entries.clear(),
        }
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < index {
            self.hard_state.commit = index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        self.snapshot = snap;
    }

    /// Replaces the log up to and including `snap`'s index with `snap`, a
    /// snapshot of applied state taken locally.
    ///
    /// # Panics
    /// If the snapshot is not within the log (engine bug).
    pub fn compact(&mut self, snap: Snapshot) {
        let index = snap.get_metadata().index;
        assert!(index <= self.last_index_(), "compact past the log end");
        if index <= self.snapshot_index() {
            return;
        }
        let drop = (index - self.snapshot_index()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snap;
    }

    /// The term of `index`, if still known.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.get_metadata().term);
        }
        if index < self.first_index_() || index > self.last_index_() {
            return None;
        }
        Some(self.entries[(index - self.first_index_()) as usize].term)
    }

    /// The latest snapshot (with data). Index 0 when none was taken.
    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index_() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last_index_() + 1,
            "entries [{low}, {high}) past the log end {}",
            self.last_index_()
        );
        let offset = self.first_index_();
        let mut ents: Vec<Entry> =
            self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first_index_())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index
            || self.snapshot_index() == 0
            || !self.snapshot_lists(to)
        {
            // The engine compacts right after applying, so a snapshot at
            // least as new as requested exists once apply catches up; and
            // one that lists `to` once the leader compacts for it.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn snap(index: u64, term: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s
    }

    #[test]
    fn append_overwrites_conflicting_suffix() {
        let mut s = GroupStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.append(&[ent(2, 2)]);
        assert_eq!(s.last_index().expect("ok"), 2);
        assert_eq!(s.term(2).expect("ok"), 2);
    }

    #[test]
    fn compact_keeps_term_of_snapshot_index() {
        let mut s = GroupStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2)]);
        s.compact(snap(2, 1));
        assert_eq!(s.first_index().expect("ok"), 3);
        assert_eq!(s.term(2).expect("ok"), 1);
        assert!(s.term(1).is_err());
        assert!(s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(s.snapshot(2, 3).expect("ok").get_metadata().index, 2);
        assert!(s.snapshot(3, 3).is_err());
        // A follower the snapshot's configuration does not list would
        // refuse it: none is served until a newer one lists it.
        assert!(s.snapshot(2, 4).is_err());
    }

    #[test]
    fn snapshot_install_keeps_matching_tail() {
        let mut s = GroupStorage::default();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.apply_snapshot(snap(2, 1));
        assert_eq!(s.last_index().expect("ok"), 3);
        s.apply_snapshot(snap(5, 3));
        assert_eq!(s.last_index().expect("ok"), 5);
        assert_eq!(s.hard_state().commit, 5);
    }

    #[test]
    fn recovery_rejects_gaps() {
        let cs = ConfState::default();
        let hs = HardState::default();
        assert!(GroupStorage::recovered(cs.clone(), hs.clone(), None, vec![ent(2, 1)]).is_err());
        assert!(
            GroupStorage::recovered(cs.clone(), hs.clone(), None, vec![ent(1, 1), ent(3, 1)])
                .is_err()
        );
        let mut bad_commit = hs.clone();
        bad_commit.commit = 4;
        assert!(GroupStorage::recovered(cs.clone(), bad_commit, None, vec![ent(1, 1)]).is_err());
        let ok = GroupStorage::recovered(cs, hs, Some(snap(3, 1)), vec![ent(2, 1), ent(4, 1)])
            .expect("entries under the snapshot are skipped");
        assert_eq!(ok.last_index().expect("ok"), 4);
    }
}
