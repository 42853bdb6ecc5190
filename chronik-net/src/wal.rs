//! The write-ahead log: every group's Raft log, hard state and snapshots in
//! one stream of segment files, with group commit (one fsync covers every
//! batch handed over together).
//!
//! Layout under the WAL dir: `wal-{seq:020}.log` segments of framed records
//! ([`record`]), and `snap/` with one checksummed file per live snapshot.
//! A segment is sealed once it passes `segment_bytes_max`; once sealed
//! segments pass `checkpoint_bytes`, the WAL writes a checkpoint (the whole
//! durable state, snapshots by reference) at the head of a new segment and
//! deletes the older ones.
//!
//! Recovery replays every segment in order. A torn tail (the last record of
//! the last segment cut short or failing its checksum, with no later record
//! saying it had been synced) is truncated away. Damage to synced data (a
//! bad record in a sealed segment, or one a later record proves synced) is
//! corruption: the WAL is cut at the damaged record, every group is marked
//! for repair (`DurableState::repair`: its replica abstains from elections
//! until it holds a commit of its leader's term, and fetches what it lost
//! from the leader), term and vote come from the separate [`votes`] file,
//! and the cut state is written as a checkpoint before the node goes on.
//! A record that fails to decode whole, or contradicts the records before
//! it, refuses recovery with the file and byte offset: that is a bug, not
//! a disk fault.
//!
//! While idle, the WAL syncs an empty record after its last batch, so that
//! batch too is proven synced by a later record: damage to it then reads as
//! corruption rather than a torn write. Only a batch synced within
//! [`IDLE_SEAL`] before a crash, with nothing written after it, stays
//! ambiguous (and is taken for torn).

pub mod codec;
pub mod record;
pub mod votes;

use crate::disk::{write_atomic, Disk, DiskFile};
use chronik_core::persist::{DurableState, GroupUpdate, PersistBatch};
use chronik_core::raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use chronik_core::GroupId;
use codec::{from_wal, pb, snapshot_stub, to_wal, unpb, WalFrame, WalGroup, WalRecord, WalUpdate};
use record::Frame;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use votes::Kept;

/// Where and how the WAL writes.
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// Seal the current segment past this size.
    pub segment_bytes_max: u64,
    /// Checkpoint and delete old segments once sealed ones pass this size.
    pub checkpoint_bytes: u64,
}

impl WalConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalConfig {
            dir: dir.into(),
            segment_bytes_max: 64 * 1024 * 1024,
            checkpoint_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt WAL record in {} at byte {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("WAL is inconsistent: {reason}")]
    Inconsistent { reason: String },
    /// Written by another version of Chronik: refused whole rather than
    /// read wrongly.
    #[error(
        "{}: WAL record at byte {offset} has format version {version}; this build reads version {WAL_FORMAT}",
        file.display()
    )]
    UnknownFormat {
        file: PathBuf,
        offset: u64,
        version: u32,
    },
}

/// The WAL record format this build writes and reads; every record carries
/// it first. 2: nodes carry a rack; 3: metadata records nodes in
/// maintenance (`SetMaintenance`); 4: a manifest precedes every batch.
pub const WAL_FORMAT: u32 = 4;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How long the WAL waits idle after a batch before it syncs a record
/// proving that batch synced (see the module docs).
pub const IDLE_SEAL: std::time::Duration = std::time::Duration::from_millis(20);

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment (a torn write).
    pub truncated_bytes: u64,
    /// Synced data found damaged: the WAL was cut there.
    pub damage: Option<WalDamage>,
    /// Groups whose replica repairs its log (abstaining from elections).
    pub repairing_groups: usize,
}

/// Where recovery found synced WAL data damaged, and cut the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// The open WAL of one node.
pub struct Wal {
    disk: Arc<dyn Disk>,
    cfg: WalConfig,
    snap_dir: PathBuf,
    /// `(seq, bytes)` of every segment, the last one open for appends.
    segments: Vec<(u64, u64)>,
    file: Box<dyn DiskFile>,
    /// What is durable, snapshot data left out (it lives in files).
    state: DurableState,
    snap_files: BTreeMap<GroupId, String>,
    /// Bytes of the open segment known synced.
    synced_up_to: u64,
    /// Verify checksums on recovery. Always on, except where a test plants
    /// the "skip the CRC check" bug to prove the simulator catches it.
    verify_crc: bool,
    /// Bytes written since the WAL was opened (records and snapshot
    /// files), for the metrics.
    bytes_written: u64,
    /// What the votes file holds.
    kept: BTreeMap<GroupId, Kept>,
    /// Synced records are not yet proven synced by a later synced record.
    unproven: bool,
}

fn segment_name(seq: u64) -> String {
    format!("wal-{seq:020}.log")
}

fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

fn stub(snapshot: &Snapshot) -> Snapshot {
    Snapshot {
        metadata: snapshot.metadata.clone(),
        ..Default::default()
    }
}

impl Wal {
    /// The disk this WAL writes to.
    pub fn disk(&self) -> Arc<dyn Disk> {
        self.disk.clone()
    }

    /// Opens (or creates) the WAL in `cfg.dir` and recovers what is durable.
    pub fn open(
        disk: Arc<dyn Disk>,
        cfg: WalConfig,
    ) -> Result<(Wal, DurableState, RecoveryReport), WalError> {
        // Planted bug (test builds only): trust records without checksums.
        Wal::open_with(
            disk,
            cfg,
            !chronik_core::planted::active(chronik_core::planted::Bug::SkipCrc),
        )
    }

    /// `open` with the checksum check switchable, for planted-bug tests only.
    #[doc(hidden)]
    pub fn open_with(
        disk: Arc<dyn Disk>,
        cfg: WalConfig,
        verify_crc: bool,
    ) -> Result<(Wal, DurableState, RecoveryReport), WalError> {
        let snap_dir = cfg.dir.join("snap");
        disk.create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        disk.create_dir_all(&snap_dir).map_err(io_err(&snap_dir))?;
        let names = disk.list(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment(n)).collect();
        seqs.sort_unstable();
        for n in names.iter().filter(|n| n.ends_with(".tmp")) {
            let p = cfg.dir.join(n);
            disk.remove(&p).map_err(io_err(&p))?;
        }

        let mut state = DurableState::default();
        let mut snap_files: BTreeMap<GroupId, String> = BTreeMap::new();
        let mut report = RecoveryReport {
            segments: seqs.len(),
            ..Default::default()
        };
        let mut segments = Vec::new();
        // (segment position, offset, reason) of the first damaged record.
        let mut damage: Option<(usize, usize, String)> = None;
        // Groups whose log stops before a damaged record that carried
        // them; with `cut_all`, every group's (the damage hides which).
        let mut cut: BTreeSet<GroupId> = BTreeSet::new();
        let mut cut_all = false;
        'segments: for (i, seq) in seqs.iter().enumerate() {
            let path = cfg.dir.join(segment_name(*seq));
            let data = disk.read(&path).map_err(io_err(&path))?;
            let last = i + 1 == seqs.len();
            // A bad record at the end of the last segment is a torn write
            // unless an intact record after it says it was synced.
            let torn = |offset: usize| {
                last && (!synced_later(&data, offset)
                    || chronik_core::planted::active(
                        chronik_core::planted::Bug::CorruptTailTakenForTorn,
                    ))
            };
            // The manifest just read: where it starts, where the record it
            // announces starts, that record's groups, and its length.
            let mut manifest: Option<(usize, usize, Vec<GroupId>, usize)> = None;
            let mut offset = 0usize;
            loop {
                let corrupt = |offset: usize, reason: String| WalError::Corrupt {
                    file: path.clone(),
                    offset: offset as u64,
                    reason,
                };
                // Why the record at `offset` is bad, and where it ends if
                // its length can be trusted.
                let (bad, end) = match record::decode(&data, offset, verify_crc) {
                    Frame::End => {
                        // A manifest whose batch was never written goes:
                        // it would announce whatever is written there next.
                        if let Some((start, at, _, _)) = &manifest {
                            if last && *at == offset {
                                offset = *start;
                                report.truncated_bytes = (data.len() - offset) as u64;
                            }
                        }
                        break;
                    }
                    Frame::Record { payload, next } => {
                        // The version comes first, so a record of another
                        // format is named as such, not as corrupt.
                        if let Ok((version, _)) = postcard::take_from_bytes::<u32>(payload) {
                            if version != WAL_FORMAT {
                                return Err(WalError::UnknownFormat {
                                    file: path.clone(),
                                    offset: offset as u64,
                                    version,
                                });
                            }
                        }
                        match postcard::from_bytes::<WalFrame>(payload) {
                            Ok(frame) => {
                                match frame.record {
                                    WalRecord::Manifest { groups, next_len } => {
                                        manifest = Some((offset, next, groups, next_len as usize));
                                    }
                                    record => {
                                        if matches!(record, WalRecord::Checkpoint(_)) {
                                            // Everything durable, the
                                            // damaged record's work too.
                                            cut.clear();
                                        }
                                        apply_record(&mut state, &mut snap_files, record, &cut)
                                            .map_err(|r| corrupt(offset, r))?;
                                        manifest = None;
                                        report.records += 1;
                                    }
                                }
                                offset = next;
                                continue;
                            }
                            // A record whose checksum holds but which does
                            // not decode is a bug, not a disk fault; only a
                            // planted bug skips the checksum.
                            Err(e) if verify_crc && !torn(offset) => {
                                return Err(corrupt(offset, format!("undecodable record: {e}")))
                            }
                            Err(e) => (format!("undecodable record: {e}"), Some(next)),
                        }
                    }
                    Frame::Truncated if last => (
                        "record cut short, though a later record says it was synced".into(),
                        None,
                    ),
                    Frame::Truncated => ("sealed segment ends inside a record".into(), None),
                    Frame::Corrupt { reason, end } => (reason, Some(end)),
                };
                if torn(offset) {
                    // A torn batch goes with its manifest: a manifest left
                    // alone would announce whatever is written there next.
                    if let Some((start, at, _, _)) = &manifest {
                        if *at == offset {
                            offset = *start;
                        }
                    }
                    report.truncated_bytes = (data.len() - offset) as u64;
                    break;
                }
                if damage.is_none() {
                    damage = Some((i, offset, bad));
                }
                match manifest.take() {
                    // A batch whose manifest is intact: its groups stop
                    // here, the others go on.
                    Some((_, at, groups, len)) if at == offset => {
                        cut.extend(groups);
                        offset = offset.saturating_add(len);
                        if offset >= data.len() {
                            break;
                        }
                    }
                    // A damaged manifest whose length holds, followed by
                    // an intact batch: that batch is whole.
                    _ if end.is_some_and(|e| batch_at(&data, e)) => {
                        offset = end.unwrap_or(offset);
                    }
                    // Anything else hides which groups it carried.
                    _ => {
                        cut_all = true;
                        break 'segments;
                    }
                }
            }
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes = report.truncated_bytes,
                    "truncating a torn write at the end of the WAL"
                );
                disk.truncate(&path, offset as u64).map_err(io_err(&path))?;
            }
            segments.push((*seq, offset as u64));
        }
        let (mut kept, votes_damage) = match votes::read(disk.as_ref(), &cfg.dir) {
            Ok(k) => (k.unwrap_or_default(), None),
            Err(reason) => (BTreeMap::new(), Some(reason)),
        };
        // Groups still repairing from an earlier cut (the WAL is whole
        // for them, so their terms and votes are the ones that left: the
        // file may be ahead by a batch never synced).
        let mut repair: BTreeMap<GroupId, HardState> = kept
            .iter()
            .filter(|(_, k)| k.repair)
            .map(|(g, k)| {
                let hs = state.groups.get(g).map_or(
                    HardState {
                        term: k.term,
                        vote: k.vote,
                        ..Default::default()
                    },
                    |d| HardState {
                        term: d.hard_state.term,
                        vote: d.hard_state.vote,
                        ..Default::default()
                    },
                );
                (*g, hs)
            })
            .collect();
        if let Some((i, offset, reason)) = &damage {
            let file = cfg.dir.join(segment_name(seqs[*i]));
            if let Some(why) = &votes_damage {
                return Err(WalError::Corrupt {
                    file: votes::path(&cfg.dir),
                    offset: 0,
                    reason: format!(
                        "{why}; the WAL is damaged too ({} at byte {offset}: {reason}), so neither the log nor the votes can be trusted: this node's data must be rebuilt from its peers (remove the node and add it again)",
                        file.display()
                    ),
                });
            }
            let mut affected: BTreeSet<GroupId> = if cut_all {
                state.groups.keys().chain(kept.keys()).copied().collect()
            } else {
                cut
            };
            if affected.contains(&chronik_core::METADATA_GROUP) {
                // Metadata goes back in time: a group this node dropped (its
                // topic deleted) may be placed here again until the
                // deletion is applied anew, and must keep its promises.
                affected.extend(kept.keys().filter(|g| !state.groups.contains_key(g)));
            }
            tracing::error!(
                file = %file.display(),
                offset,
                %reason,
                groups = ?affected,
                all = cut_all,
                "synced WAL data is damaged: cutting the log of the groups it carried there and repairing them from their leaders"
            );
            report.damage = Some(WalDamage {
                file,
                offset: *offset as u64,
                reason: reason.clone(),
            });
            // Every segment stays listed until the checkpoint below
            // replaces them all.
            segments = seqs.iter().map(|s| (*s, 0)).collect();
            for group in &affected {
                let k = kept.get(group).copied().unwrap_or_default();
                let mut hs = HardState {
                    term: k.term,
                    vote: k.vote,
                    ..Default::default()
                };
                // Term and vote: the log that carried the latest ones is
                // cut; the votes file was written before any of them left
                // (merged below).
                if let Some(g) = state.groups.get(group) {
                    hs.term = g.hard_state.term;
                    hs.vote = g.hard_state.vote;
                }
                repair.insert(*group, hs);
            }
            adopt_newer_snapshots(
                disk.as_ref(),
                &snap_dir,
                &affected,
                &mut state,
                &mut snap_files,
            )?;
        } else if let Some(why) = &votes_damage {
            // The file also listed the groups still repairing: which ones
            // is lost, so every group repairs (abstains until caught up).
            tracing::warn!(
                file = %votes::path(&cfg.dir).display(),
                "votes file damaged ({why}); the WAL is intact: rewriting it from the WAL, every group repairing"
            );
            for (g, d) in &state.groups {
                let hs = HardState {
                    term: d.hard_state.term,
                    vote: d.hard_state.vote,
                    ..Default::default()
                };
                repair.insert(*g, hs);
            }
        }
        // A vote the file holds and the WAL lost (a damaged last batch
        // taken for a torn write) is kept: keeping a promise never made
        // is safe, breaking one is not.
        if !chronik_core::planted::active(chronik_core::planted::Bug::RepairForgetsTerm) {
            for (group, k) in &kept {
                let hosted = state.groups.contains_key(group) || repair.contains_key(group);
                if let Some(g) = state.groups.get_mut(group) {
                    keep_promise(&mut g.hard_state, k);
                }
                if let Some(hs) = repair.get_mut(group) {
                    keep_promise(hs, k);
                }
                if !hosted {
                    // Dropped here: a replica placed here again keeps it.
                    keep_promise(state.retired.entry(*group).or_default(), k);
                }
            }
            state.retired.retain(|_, hs| hs.term > 0);
        }
        state.repair = repair;
        report.repairing_groups = state.repair.len();
        // Entries of groups no longer here stay (see `fold_kept`).
        let mut want = kept.clone();
        for k in want.values_mut() {
            k.repair = false;
        }
        want.extend(kept_of(&state));
        if want != kept || votes_damage.is_some() {
            let p = votes::path(&cfg.dir);
            votes::write(disk.as_ref(), &cfg.dir, &want).map_err(io_err(&p))?;
            kept = want;
        }

        // Full snapshots for the engine; the WAL keeps only their metadata.
        let mut full = state.clone();
        for (group, file) in &snap_files {
            let snap = load_snapshot(disk.as_ref(), &snap_dir, file)?;
            let g = full
                .groups
                .get_mut(group)
                .ok_or_else(|| WalError::Inconsistent {
                    reason: format!("snapshot file {file} for unknown group {group}"),
                })?;
            let expect = g
                .snapshot
                .as_ref()
                .map(|s| (s.get_metadata().index, s.get_metadata().term));
            if expect != Some((snap.get_metadata().index, snap.get_metadata().term)) {
                return Err(WalError::Inconsistent {
                    reason: format!("snapshot file {file} does not match the log ({expect:?})"),
                });
            }
            if let Some(s) = state
                .groups
                .get_mut(group)
                .and_then(|g| g.snapshot.as_mut())
            {
                *s = stub(&snap);
            }
            g.snapshot = Some(snap);
        }

        if segments.is_empty() {
            segments.push((1, 0));
        }
        let (seq, _) = *segments.last().expect("non-empty");
        let path = cfg.dir.join(segment_name(seq));
        let file = disk.open_append(&path).map_err(io_err(&path))?;
        // Planted bug (simulation builds only): the new segment's directory
        // entry is never synced, so a crash may lose the whole file.
        if !chronik_core::planted::active(chronik_core::planted::Bug::SkipDirSync) {
            disk.sync_dir(&cfg.dir).map_err(io_err(&cfg.dir))?;
        }
        let mut wal = Wal {
            disk,
            cfg,
            snap_dir,
            segments,
            file,
            state,
            snap_files,
            synced_up_to: 0,
            verify_crc,
            bytes_written: 0,
            kept,
            unproven: false,
        };
        wal.synced_up_to = wal.segments.last().map_or(0, |(_, b)| *b);
        wal.unproven = wal.synced_up_to > 0;
        if damage.is_some() {
            // The cut state, whole, in a new segment; then the damaged
            // segments go.
            wal.checkpoint()?;
        }
        // Snapshot files no record refers to any more.
        let snap_dir = wal.snap_dir.clone();
        for n in wal.disk.list(&snap_dir).map_err(io_err(&snap_dir))? {
            if !wal.snap_files.values().any(|f| *f == n) {
                let p = snap_dir.join(&n);
                wal.disk.remove(&p).map_err(io_err(&p))?;
            }
        }
        Ok((wal, full, report))
    }

    /// Writes `batches` and, if any must be synced, fsyncs once for all of
    /// them. Returns only when they are durable: the caller may then report
    /// every one of them persisted.
    pub fn append(&mut self, batches: &[PersistBatch]) -> Result<(), WalError> {
        self.append_or_stop(batches, || false).map(|_| ())
    }

    /// [`Wal::append`], asking `stop_before_sync` between the write and the
    /// fsync: if it says stop, returns `Ok(false)` with the bytes written
    /// and not synced, and this WAL must not be used again (a simulator
    /// crashes the node there).
    pub fn append_or_stop(
        &mut self,
        batches: &[PersistBatch],
        stop_before_sync: impl FnOnce() -> bool,
    ) -> Result<bool, WalError> {
        let mut buf = Vec::new();
        let mut superseded = Vec::new();
        let mut must_sync = false;
        let mut votes_changed = false;
        for batch in batches {
            must_sync |= batch.must_sync;
            if chronik_core::planted::active(chronik_core::planted::Bug::GroupCommitSkipSync) {
                // Planted bug (simulation builds only): the last folded
                // batch decides the sync for all of them.
                must_sync = batch.must_sync;
            }
            let mut updates = Vec::with_capacity(batch.updates.len());
            for u in &batch.updates {
                if let GroupUpdate::CaughtUp { .. } = u {
                    // Kept in the votes file only.
                    self.state
                        .apply(u)
                        .map_err(|reason| WalError::Inconsistent { reason })?;
                    votes_changed |= self.fold_kept(u.group());
                    continue;
                }
                if let GroupUpdate::Snapshot { group, snapshot } = u {
                    let meta = snapshot.get_metadata();
                    let name = format!("g{group}-i{}-t{}.snap", meta.index, meta.term);
                    let path = self.snap_dir.join(&name);
                    let mut data = Vec::new();
                    let body = pb(snapshot);
                    data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
                    data.extend_from_slice(&body);
                    write_atomic(self.disk.as_ref(), &path, &data).map_err(io_err(&path))?;
                    self.bytes_written += data.len() as u64;
                }
                updates.push(to_wal(u, |g, s| {
                    format!(
                        "g{g}-i{}-t{}.snap",
                        s.get_metadata().index,
                        s.get_metadata().term
                    )
                }));
                let stubbed;
                let for_state = match u {
                    GroupUpdate::Snapshot { group, snapshot } => {
                        stubbed = GroupUpdate::Snapshot {
                            group: *group,
                            snapshot: stub(snapshot),
                        };
                        &stubbed
                    }
                    other => other,
                };
                self.state
                    .apply(for_state)
                    .map_err(|reason| WalError::Inconsistent { reason })?;
                track_snapshot_file(
                    &mut self.snap_files,
                    &updates[updates.len() - 1],
                    &mut superseded,
                );
                match u {
                    GroupUpdate::HardState { group, .. } => {
                        votes_changed |= self.fold_kept(*group);
                    }
                    // A dropped group's entry stays: if a cut takes metadata
                    // back to before the deletion, the group is placed here
                    // again for a while and must keep its promises.
                    GroupUpdate::Drop { .. } => {}
                    _ => {}
                }
            }
            encode_batch(self.synced_up_to, updates, &mut buf);
        }
        // An older snapshot file may only go once the record that replaces
        // it is durable: a crash before that would leave the WAL pointing
        // at a deleted file.
        must_sync |= !superseded.is_empty();
        if votes_changed {
            // Before the batch: a vote may leave once the batch is durable.
            let p = votes::path(&self.cfg.dir);
            self.bytes_written +=
                votes::write(self.disk.as_ref(), &self.cfg.dir, &self.kept).map_err(io_err(&p))?;
        }
        let path = self.current_path();
        self.file.write_all(&buf).map_err(io_err(&path))?;
        self.bytes_written += buf.len() as u64;
        if must_sync && stop_before_sync() {
            return Ok(false);
        }
        // Planted bug (test builds only): report batches durable without
        // syncing them, so acknowledgements can outrun the disk.
        if must_sync && !chronik_core::planted::active(chronik_core::planted::Bug::AckBeforeFsync) {
            if let Err(e) = self.file.sync() {
                // Planted bug (simulation builds only): a failed fsync is
                // ignored and the batch reported durable anyway.
                if !chronik_core::planted::active(chronik_core::planted::Bug::IgnoreFsyncError) {
                    return Err(io_err(&path)(e));
                }
            }
        }
        self.segments.last_mut().expect("a segment is open").1 += buf.len() as u64;
        if must_sync {
            self.synced_up_to = self.segments.last().expect("open").1;
            self.unproven = true;
        }
        for f in superseded {
            let p = self.snap_dir.join(&f);
            if let Err(e) = self.disk.remove(&p) {
                tracing::warn!(file = %p.display(), "cannot remove superseded snapshot: {e}");
            }
        }
        if self.segments.last().expect("open").1 >= self.cfg.segment_bytes_max {
            self.rotate()?;
        }
        Ok(true)
    }

    /// Bytes written since the WAL was opened, records and snapshot files.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    fn current_path(&self) -> PathBuf {
        let (seq, _) = *self.segments.last().expect("a segment is open");
        self.cfg.dir.join(segment_name(seq))
    }

    /// Seals the current segment and opens the next; checkpoints when the
    /// sealed segments grew past `checkpoint_bytes`.
    /// Fsyncs what was written without a sync (batches that did not ask
    /// for one): after this everything appended is durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let written = self.segments.last().map_or(0, |(_, b)| *b);
        if self.synced_up_to < written {
            let path = self.current_path();
            self.file.sync().map_err(io_err(&path))?;
            self.synced_up_to = written;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        let sealed: u64 = self.segments.iter().map(|(_, b)| b).sum();
        if sealed >= self.cfg.checkpoint_bytes {
            return self.checkpoint();
        }
        self.open_next_segment()?;
        self.disk
            .sync_dir(&self.cfg.dir)
            .map_err(io_err(&self.cfg.dir))
    }

    /// Syncs the open segment and opens the next one; returns its number.
    fn open_next_segment(&mut self) -> Result<u64, WalError> {
        let path = self.current_path();
        self.file.sync().map_err(io_err(&path))?;
        let seq = self.segments.last().expect("open").0 + 1;
        let next = self.cfg.dir.join(segment_name(seq));
        self.file = self.disk.open_append(&next).map_err(io_err(&next))?;
        self.segments.push((seq, 0));
        self.synced_up_to = 0;
        self.unproven = false;
        Ok(seq)
    }

    /// Writes everything durable as one record at the head of a new
    /// segment, syncs it, and deletes every older segment.
    fn checkpoint(&mut self) -> Result<(), WalError> {
        let seq = self.open_next_segment()?;
        let next = self.current_path();
        let mut buf = Vec::new();
        let payload = postcard::to_stdvec(&WalFrame {
            format: WAL_FORMAT,
            synced_up_to: 0,
            record: WalRecord::Checkpoint(self.checkpoint_groups()),
        })
        .expect("WAL records encode");
        record::encode(&payload, &mut buf);
        self.file.write_all(&buf).map_err(io_err(&next))?;
        self.file.sync().map_err(io_err(&next))?;
        self.bytes_written += buf.len() as u64;
        self.segments.last_mut().expect("open").1 += buf.len() as u64;
        self.synced_up_to = buf.len() as u64;
        // Alone in its segment, the checkpoint too is proven by a seal.
        self.unproven = true;
        self.disk
            .sync_dir(&self.cfg.dir)
            .map_err(io_err(&self.cfg.dir))?;
        let old: Vec<u64> = self
            .segments
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s < seq)
            .collect();
        for s in old {
            let p = self.cfg.dir.join(segment_name(s));
            self.disk.remove(&p).map_err(io_err(&p))?;
        }
        self.segments.retain(|(s, _)| *s >= seq);
        self.disk
            .sync_dir(&self.cfg.dir)
            .map_err(io_err(&self.cfg.dir))
    }

    /// Whether the last synced batch is not yet proven synced by a later
    /// synced record (see [`Wal::seal`]).
    pub fn needs_seal(&self) -> bool {
        self.unproven
    }

    /// Syncs an empty record claiming everything before it synced, so
    /// that damage to the last batch reads as corruption, not a torn
    /// write. For idle moments ([`IDLE_SEAL`]); a busy WAL's next batch
    /// does the same.
    pub fn seal(&mut self) -> Result<(), WalError> {
        if !self.needs_seal() {
            return Ok(());
        }
        self.sync()?;
        let claim = self.synced_up_to;
        let mut buf = Vec::new();
        encode_batch(claim, Vec::new(), &mut buf);
        let path = self.current_path();
        self.file.write_all(&buf).map_err(io_err(&path))?;
        self.file.sync().map_err(io_err(&path))?;
        self.bytes_written += buf.len() as u64;
        self.segments.last_mut().expect("open").1 += buf.len() as u64;
        self.synced_up_to = self.segments.last().expect("open").1;
        self.unproven = false;
        Ok(())
    }

    fn checkpoint_groups(&self) -> Vec<WalGroup> {
        self.state
            .groups
            .iter()
            .map(|(id, g)| WalGroup {
                group: *id,
                kind: g.kind.clone(),
                conf_state: pb(&g.conf_state),
                hard_state: pb(&g.hard_state),
                snapshot: g.snapshot.as_ref().and_then(|s| {
                    self.snap_files
                        .get(id)
                        .map(|f| (s.get_metadata().index, s.get_metadata().term, f.clone()))
                }),
                entries: g.entries.iter().map(pb).collect(),
            })
            .collect()
    }

    /// Brings `kept` up to date with `group`'s durable term, vote and
    /// repair mark; true when that changed it.
    fn fold_kept(&mut self, group: GroupId) -> bool {
        let now = kept_of_group(&self.state, group);
        let before = self.kept.get(&group).copied().unwrap_or_default();
        match now {
            Some(k) if k != before => {
                self.kept.insert(group, k);
                true
            }
            _ => false,
        }
    }

    /// Segment files currently on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether recovery checks checksums (false only for planted bugs).
    pub fn verifies_crc(&self) -> bool {
        self.verify_crc
    }
}

/// Whether some intact record after `offset` was written when the segment
/// was already synced past `offset`: then the bytes at `offset` were synced
/// and damaged afterwards (refuse), rather than torn by a crash (truncate).
/// Scans byte by byte, since a damaged length hides where records start.
fn synced_later(data: &[u8], offset: usize) -> bool {
    (offset + 1..data.len()).any(|p| match record::decode(data, p, true) {
        Frame::Record { payload, .. } => postcard::from_bytes::<WalFrame>(payload)
            .map(|f| f.synced_up_to > offset as u64)
            .unwrap_or(false),
        _ => false,
    })
}

/// Raises `hs` to the term and vote `k` kept, where they are later.
fn keep_promise(hs: &mut HardState, k: &Kept) {
    if k.term > hs.term {
        hs.term = k.term;
        hs.vote = k.vote;
    } else if k.term == hs.term && hs.vote == 0 {
        hs.vote = k.vote;
    }
}

/// What the votes file must hold for `state`.
fn kept_of(state: &DurableState) -> BTreeMap<GroupId, Kept> {
    state
        .groups
        .keys()
        .chain(state.repair.keys())
        .filter_map(|g| Some((*g, kept_of_group(state, *g)?)))
        .collect()
}

/// One group's entry of [`kept_of`]; `None` when there is nothing to keep.
fn kept_of_group(state: &DurableState, group: GroupId) -> Option<Kept> {
    let repair = state.repair.get(&group);
    let (term, vote) = match (state.groups.get(&group), repair) {
        (Some(g), _) => (g.hard_state.term, g.hard_state.vote),
        (None, Some(hs)) => (hs.term, hs.vote),
        (None, None) => return None,
    };
    Some(Kept {
        term,
        vote,
        repair: repair.is_some(),
    })
    .filter(|k| *k != Kept::default())
}

/// After a cut, a group's snapshot file may be gone (a record in the cut
/// tail replaced it) while the newer one that replaced it is still there:
/// each group takes the newest intact snapshot file it has, if newer than
/// the one the cut log refers to. Every snapshot is of committed state, so
/// adopting one only recovers more of what was cut. A group left with no
/// snapshot file at all is dropped (lost whole).
fn adopt_newer_snapshots(
    disk: &dyn Disk,
    snap_dir: &Path,
    groups: &BTreeSet<GroupId>,
    state: &mut DurableState,
    snap_files: &mut BTreeMap<GroupId, String>,
) -> Result<(), WalError> {
    let mut newest: BTreeMap<GroupId, (u64, u64, String)> = BTreeMap::new();
    for n in disk.list(snap_dir).map_err(io_err(snap_dir))? {
        let Some((group, index, term)) = parse_snapshot_name(&n) else {
            continue;
        };
        if newest.get(&group).is_none_or(|(i, _, _)| index > *i) {
            newest.insert(group, (index, term, n));
        }
    }
    // A group whose snapshot file went with a record of the cut tail (its
    // topic deleted, say) and has no newer one is lost whole: its term and
    // vote stay in the repair list, and metadata recreates it if it still
    // exists.
    let gone: Vec<GroupId> = snap_files
        .iter()
        .filter(|(g, f)| {
            let current = state
                .groups
                .get(*g)
                .and_then(|d| d.snapshot.as_ref())
                .map_or(0, |s| s.get_metadata().index);
            groups.contains(*g)
                && disk.read(&snap_dir.join(f)).is_err()
                && newest.get(*g).is_none_or(|(i, _, _)| *i <= current)
        })
        .map(|(g, _)| *g)
        .collect();
    for group in gone {
        tracing::warn!(
            group,
            "the cut WAL refers to a snapshot file that is gone: recreating the group from its leader"
        );
        state.groups.remove(&group);
        snap_files.remove(&group);
    }
    for (group, (index, term, name)) in newest {
        let Some(g) = state.groups.get(&group).filter(|_| groups.contains(&group)) else {
            continue;
        };
        let current = g.snapshot.as_ref().map_or(0, |s| s.get_metadata().index);
        if index <= current || load_snapshot(disk, snap_dir, &name).is_err() {
            continue;
        }
        tracing::warn!(group, index, term, file = %name, "adopting a snapshot the cut WAL tail referred to");
        state
            .apply(&GroupUpdate::Snapshot {
                group,
                snapshot: snapshot_stub(index, term),
            })
            .map_err(|reason| WalError::Inconsistent { reason })?;
        snap_files.insert(group, name);
    }
    Ok(())
}

/// `(group, index, term)` of a snapshot file's name.
fn parse_snapshot_name(name: &str) -> Option<(GroupId, u64, u64)> {
    let rest = name.strip_prefix('g')?.strip_suffix(".snap")?;
    let (group, rest) = rest.split_once("-i")?;
    let (index, term) = rest.split_once("-t")?;
    Some((group.parse().ok()?, index.parse().ok()?, term.parse().ok()?))
}

fn track_snapshot_file(
    files: &mut BTreeMap<GroupId, String>,
    u: &WalUpdate,
    superseded: &mut Vec<String>,
) {
    match u {
        WalUpdate::Snapshot { group, file, .. } => {
            if let Some(old) = files.insert(*group, file.clone()) {
                if old != *file {
                    superseded.push(old);
                }
            }
        }
        WalUpdate::Drop { group } => {
            if let Some(old) = files.remove(group) {
                superseded.push(old);
            }
        }
        _ => {}
    }
}

/// Appends a batch record to `out`, after the manifest that names its
/// groups (see [`WalRecord::Manifest`]).
fn encode_batch(synced_up_to: u64, updates: Vec<WalUpdate>, out: &mut Vec<u8>) {
    let mut groups: Vec<GroupId> = updates.iter().map(wal_update_group).collect();
    groups.sort_unstable();
    groups.dedup();
    let payload = postcard::to_stdvec(&WalFrame {
        format: WAL_FORMAT,
        synced_up_to,
        record: WalRecord::Batch(updates),
    })
    .expect("WAL records encode");
    let manifest = postcard::to_stdvec(&WalFrame {
        format: WAL_FORMAT,
        synced_up_to,
        record: WalRecord::Manifest {
            groups,
            next_len: (record::HEADER_LEN + payload.len()) as u32,
        },
    })
    .expect("WAL records encode");
    record::encode(&manifest, out);
    record::encode(&payload, out);
}

fn wal_update_group(u: &WalUpdate) -> GroupId {
    match u {
        WalUpdate::Create { group, .. }
        | WalUpdate::Entries { group, .. }
        | WalUpdate::HardState { group, .. }
        | WalUpdate::Snapshot { group, .. }
        | WalUpdate::Drop { group } => *group,
    }
}

/// Whether an intact batch record starts at `offset`.
fn batch_at(data: &[u8], offset: usize) -> bool {
    match record::decode(data, offset, true) {
        Frame::Record { payload, .. } => postcard::from_bytes::<WalFrame>(payload)
            .is_ok_and(|f| matches!(f.record, WalRecord::Batch(_))),
        _ => false,
    }
}

/// Folds one record into the stripped state (snapshots as metadata stubs),
/// leaving out the groups in `cut`.
fn apply_record(
    state: &mut DurableState,
    snap_files: &mut BTreeMap<GroupId, String>,
    rec: WalRecord,
    cut: &BTreeSet<GroupId>,
) -> Result<(), String> {
    match rec {
        WalRecord::Manifest { .. } => {}
        WalRecord::Batch(updates) => {
            for u in updates {
                if cut.contains(&wal_update_group(&u)) {
                    // Its log stopped at a damaged record.
                    continue;
                }
                let mut ignored = Vec::new();
                track_snapshot_file(snap_files, &u, &mut ignored);
                let gu = from_wal(u, &mut |index, term, _| Ok(snapshot_stub(index, term)))?;
                state.apply(&gu)?;
            }
        }
        WalRecord::Checkpoint(groups) => {
            *state = DurableState::default();
            snap_files.clear();
            for g in groups {
                let snapshot = match g.snapshot {
                    Some((index, term, file)) => {
                        snap_files.insert(g.group, file);
                        Some(snapshot_stub(index, term))
                    }
                    None => None,
                };
                state.groups.insert(
                    g.group,
                    chronik_core::DurableGroup {
                        kind: g.kind,
                        conf_state: unpb::<ConfState>(&g.conf_state, "conf state")?,
                        hard_state: unpb::<HardState>(&g.hard_state, "hard state")?,
                        snapshot,
                        entries: g
                            .entries
                            .iter()
                            .map(|e| unpb::<Entry>(e, "entry"))
                            .collect::<Result<_, _>>()?,
                    },
                );
            }
        }
    }
    Ok(())
}

fn load_snapshot(disk: &dyn Disk, dir: &Path, file: &str) -> Result<Snapshot, WalError> {
    let path = dir.join(file);
    let data = disk.read(&path).map_err(io_err(&path))?;
    let corrupt = |reason: String| WalError::Corrupt {
        file: path.clone(),
        offset: 0,
        reason,
    };
    if data.len() < 4 {
        return Err(corrupt("snapshot file shorter than its checksum".into()));
    }
    let crc = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    if crc32c::crc32c(&data[4..]) != crc {
        return Err(corrupt("snapshot checksum mismatch".into()));
    }
    unpb::<Snapshot>(&data[4..], "snapshot").map_err(corrupt)
}
