//! WAL recovery: round trips of real engine output, every truncation point,
//! corruption in the middle, rotation with checkpoints, crashes of a disk
//! that loses unsynced writes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use chronik_core::{
    Command, DurableState, Engine, EngineConfig, MetadataCommand, NodeInfo, Output, PartitionId,
    PersistBatch, RecordCommand, Time,
};
use chronik_net::disk::{Disk, MemDisk};
use chronik_net::wal::{Wal, WalConfig, WalError};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Persist batches of a one-node engine that bootstraps, creates topics
/// and produces `records` records, compacting every 10 entries (so the
/// batches include snapshots of both group kinds).
fn engine_batches(records: usize) -> Vec<PersistBatch> {
    let node = NodeInfo {
        id: 1,
        client_addr: "127.0.0.1:1".into(),
        peer_addr: "127.0.0.1:2".into(),
        rack: None,
    };
    let mut cfg = EngineConfig::new(1, vec![node]);
    cfg.log_compact_threshold_entries = 10;
    let mut e = Engine::new_record_log(cfg, DurableState::default(), Time(0)).unwrap();
    let mut out = Vec::new();
    let mut now = 0;
    let drain = |e: &mut Engine, out: &mut Vec<PersistBatch>| {
        while let Some(o) = e.poll_output() {
            if let Output::Persist(b) = o {
                e.handle_persisted(Time(0), b.ticket);
                out.push(b);
            }
        }
    };
    drain(&mut e, &mut out);
    for _ in 0..30 {
        now += 100;
        e.handle_tick(Time(now));
        drain(&mut e, &mut out);
    }
    for i in 0..12 {
        e.handle_command(
            Time(now),
            1000 + i,
            Command::Metadata(MetadataCommand::CreateTopic {
                name: format!("t{i}"),
                partitions: 1,
                replication_factor: 1,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            }),
        );
        drain(&mut e, &mut out);
    }
    for _ in 0..30 {
        now += 100;
        e.handle_tick(Time(now));
        drain(&mut e, &mut out);
    }
    for i in 0..records {
        e.handle_command(
            Time(now),
            i as u64,
            Command::Propose {
                partition: PartitionId::new("t0", 0),
                command: RecordCommand::Append {
                    records: vec![format!("record-{i}").into()],
                    timestamp_ms: 0,
                },
            },
        );
        drain(&mut e, &mut out);
    }
    assert!(out.iter().any(|b| b
        .updates
        .iter()
        .any(|u| matches!(u, chronik_core::GroupUpdate::Snapshot { .. }))));
    out
}

fn fold(batches: &[PersistBatch]) -> DurableState {
    let mut s = DurableState::default();
    for b in batches {
        s.apply_batch(b).unwrap();
    }
    s
}

fn dir() -> PathBuf {
    PathBuf::from("/n1/wal")
}

fn segment(disk: &MemDisk) -> PathBuf {
    let names = disk.list(&dir()).unwrap();
    dir().join(names.iter().find(|n| n.ends_with(".log")).unwrap())
}

#[test]
fn recovers_exactly_what_was_appended() {
    let batches = engine_batches(60);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, rec, report) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    assert!(rec.groups.is_empty());
    assert_eq!(report.records, 0);
    for b in &batches {
        wal.append(std::slice::from_ref(b)).unwrap();
    }
    drop(wal);
    let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert_eq!(rec, fold(&batches));
    assert_eq!(report.records, batches.len() as u64);
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn a_recovered_engine_holds_every_record() {
    let batches = engine_batches(60);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    wal.append(&batches).unwrap();
    let (_, rec, _) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    let node = NodeInfo {
        id: 1,
        client_addr: "127.0.0.1:1".into(),
        peer_addr: "127.0.0.1:2".into(),
        rack: None,
    };
    let mut e = Engine::new_record_log(EngineConfig::new(1, vec![node]), rec, Time(0)).unwrap();
    e.handle_tick(Time(0));
    while e.poll_output().is_some() {}
    let log = e.partition_state(&PartitionId::new("t0", 0)).unwrap();
    assert_eq!(log.high_watermark(), 60);
    assert_eq!(log.get(59).unwrap(), "record-59");
}

/// Appends `batches` one by one, each synced, and returns the disk.
fn appended(batches: &[PersistBatch]) -> Arc<MemDisk> {
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    for b in batches {
        let mut b = b.clone();
        b.must_sync = true;
        wal.append(&[b]).unwrap();
    }
    disk
}

/// The first batch after the last one carrying a snapshot: a cut there
/// leaves no newer snapshot file to adopt.
fn after_last_snapshot(batches: &[PersistBatch]) -> usize {
    1 + batches
        .iter()
        .rposition(|b| {
            b.updates
                .iter()
                .any(|u| matches!(u, chronik_core::GroupUpdate::Snapshot { .. }))
        })
        .unwrap()
}

#[test]
fn a_corrupt_synced_record_cuts_the_wal_there_and_marks_every_group_for_repair() {
    let batches = engine_batches(36);
    let k = after_last_snapshot(&batches) + 1;
    assert!(k + 2 < batches.len(), "{k} of {}", batches.len());
    let disk = appended(&batches);
    let seg = segment(&disk);
    let (start, _) = batch_spans(&disk.read(&seg).unwrap())[k];
    // A payload byte of batch k (its header is 8 bytes).
    assert!(disk.corrupt(&seg, start + 10));
    let (_, rec, report) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    let damage = report.damage.expect("damage reported");
    assert_eq!((damage.file, damage.offset), (seg, start as u64));
    assert!(damage.reason.contains("checksum"), "{}", damage.reason);
    // The groups batch k carried stop before it; the others lose nothing.
    let carried: std::collections::BTreeSet<u64> =
        batches[k].updates.iter().map(|u| u.group()).collect();
    let (before, all) = (fold(&batches[..k]), fold(&batches));
    let mut want = all.clone();
    for g in &carried {
        match before.groups.get(g) {
            Some(d) => want.groups.insert(*g, d.clone()),
            None => want.groups.remove(g),
        };
    }
    assert_eq!(rec.groups, want.groups, "each group's log up to the damage");
    let groups: Vec<u64> = carried.iter().copied().collect();
    assert!(!groups.is_empty());
    assert_eq!(rec.repair.keys().copied().collect::<Vec<_>>(), groups);
    assert_eq!(report.repairing_groups, groups.len());

    // The cut is durable: the damage is gone, the repair marks stay.
    let (mut wal, again, report) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    assert_eq!(report.damage, None);
    assert_eq!(again, rec);
    let want = rec.clone();
    // Each group that caught up leaves the repair list, durably.
    let caught_up = PersistBatch {
        ticket: 1_000,
        updates: groups
            .iter()
            .map(|g| chronik_core::GroupUpdate::CaughtUp { group: *g })
            .collect(),
        must_sync: true,
    };
    wal.append(&[caught_up]).unwrap();
    drop(wal);
    let (_, last, _) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert!(last.repair.is_empty(), "{:?}", last.repair);
    assert_eq!(last.groups, want.groups);
}

#[test]
fn a_damaged_manifest_loses_nothing_and_a_damaged_length_cuts_only_its_groups() {
    let batches = engine_batches(10);
    let k = batches.len() / 2;
    // The manifest of batch k: the batch is whole, nothing is lost.
    let disk = appended(&batches);
    let seg = segment(&disk);
    let ends = record_ends(&disk.read(&seg).unwrap());
    assert!(disk.corrupt(&seg, ends[2 * k - 1] + 9));
    let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert!(report.damage.is_some());
    assert_eq!(rec, fold(&batches));
    // The length of batch k's record: its manifest says where the next
    // record starts, so only the groups it carried stop there.
    let disk = appended(&batches);
    let (start, _) = batch_spans(&disk.read(&seg).unwrap())[k];
    assert!(disk.corrupt(&seg, start + 1));
    let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert!(report.damage.is_some());
    let carried: std::collections::BTreeSet<u64> =
        batches[k].updates.iter().map(|u| u.group()).collect();
    assert_eq!(
        rec.repair
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        carried
    );
    let all = fold(&batches);
    for (g, d) in &all.groups {
        if !carried.contains(g) {
            assert_eq!(rec.groups.get(g), Some(d), "group {g} lost nothing");
        }
    }
}

#[test]
fn a_cut_before_a_snapshot_adopts_the_newer_snapshot_file_and_recovers_an_engine() {
    let batches = engine_batches(60);
    let disk = appended(&batches);
    let seg = segment(&disk);
    // Early, a batch of the partition's entries: later records replaced
    // the snapshot file its log refers to.
    let k = (batches.len() / 3..batches.len())
        .find(|k| {
            batches[*k].updates.iter().any(
                |u| matches!(u, chronik_core::GroupUpdate::Entries { group, .. } if *group != 0),
            )
        })
        .unwrap();
    let (start, _) = batch_spans(&disk.read(&seg).unwrap())[k];
    assert!(disk.corrupt(&seg, start + 10));
    let (_, rec, report) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    assert!(report.damage.is_some());
    let prefix = fold(&batches[..k]);
    let snap_index = |s: &DurableState, g: u64| {
        s.groups[&g]
            .snapshot
            .as_ref()
            .map_or(0, |s| s.get_metadata().index)
    };
    let adopted = prefix
        .groups
        .keys()
        .filter(|g| snap_index(&rec, **g) > snap_index(&prefix, **g))
        .count();
    assert!(adopted > 0, "no newer snapshot adopted");
    // What was recovered starts an engine, and again after a restart.
    let node = NodeInfo {
        id: 1,
        client_addr: "127.0.0.1:1".into(),
        peer_addr: "127.0.0.1:2".into(),
        rack: None,
    };
    Engine::new_record_log(EngineConfig::new(1, vec![node.clone()]), rec, Time(0)).unwrap();
    let (_, again, _) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    Engine::new_record_log(EngineConfig::new(1, vec![node]), again, Time(0)).unwrap();
}

#[test]
fn the_last_synced_record_is_corruption_once_sealed_and_torn_before() {
    let batches = engine_batches(10);
    for seal in [true, false] {
        let disk = appended(&batches);
        if seal {
            let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
            assert!(wal.needs_seal());
            wal.seal().unwrap();
            assert!(!wal.needs_seal());
        }
        let seg = segment(&disk);
        // The last batch's record (the seal, if any, comes after it).
        let last = batches.len() - 1;
        let (start, _) = batch_spans(&disk.read(&seg).unwrap())[last];
        assert!(disk.corrupt(&seg, start + 10));
        let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
        assert_eq!(rec.groups, fold(&batches[..last]).groups);
        if seal {
            let damage = report.damage.expect("proven synced: corruption");
            assert_eq!(damage.offset, start as u64);
            assert!(!rec.repair.is_empty());
        } else {
            // Nothing after it proves it synced: a torn write.
            assert_eq!(report.damage, None);
            assert!(report.truncated_bytes > 0);
            assert!(rec.repair.is_empty());
        }
    }
}

/// Batches of one group whose term and vote change along the way.
fn elections() -> Vec<PersistBatch> {
    use chronik_core::raft::eraftpb::{ConfState, Entry, HardState};
    use chronik_core::{GroupKind, GroupUpdate};
    let hs = |term, vote, commit| GroupUpdate::HardState {
        group: 0,
        hard_state: HardState {
            term,
            vote,
            commit,
            ..Default::default()
        },
    };
    let entry = |index, term| Entry {
        index,
        term,
        ..Default::default()
    };
    let mut updates = vec![
        vec![GroupUpdate::Create {
            group: 0,
            kind: GroupKind::Metadata,
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
        }],
        vec![hs(1, 1, 0)],
    ];
    for i in 1..=5u64 {
        updates.push(vec![GroupUpdate::Entries {
            group: 0,
            entries: vec![entry(i, 1)],
        }]);
    }
    updates.push(vec![hs(4, 2, 5)]);
    updates.push(vec![hs(6, 3, 5)]);
    updates
        .into_iter()
        .enumerate()
        .map(|(i, updates)| PersistBatch {
            ticket: i as u64 + 1,
            updates,
            must_sync: true,
        })
        .collect()
}

#[test]
fn a_cut_keeps_the_term_and_vote_from_the_votes_file() {
    let batches = elections();
    let disk = appended(&batches);
    let seg = segment(&disk);
    // Damage the third entry's batch: both later elections go with it.
    let (start, _) = batch_spans(&disk.read(&seg).unwrap())[4];
    assert!(disk.corrupt(&seg, start + 10));
    let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert!(report.damage.is_some());
    let g = &rec.groups[&0];
    assert_eq!(g.entries.len(), 2, "entries 1 and 2 survive");
    assert_eq!(
        (g.hard_state.term, g.hard_state.vote),
        (6, 3),
        "the latest promise survives the cut"
    );
    assert_eq!((rec.repair[&0].term, rec.repair[&0].vote), (6, 3));
}

#[test]
fn a_damaged_votes_file_is_rebuilt_from_an_intact_wal_with_every_group_repairing_and_refused_with_a_damaged_one(
) {
    let batches = elections();
    let votes = dir().join(chronik_net::wal::votes::VOTES_FILE);
    // Intact WAL: the file is rewritten from it.
    let disk = appended(&batches);
    assert!(disk.corrupt(&votes, 6));
    let (_, rec, report) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    assert_eq!(report.damage, None);
    assert_eq!(rec.groups, fold(&batches).groups);
    // Which groups were still repairing is lost with the file: all are.
    assert_eq!(rec.repair.keys().copied().collect::<Vec<_>>(), vec![0]);
    let kept = chronik_net::wal::votes::read(disk.as_ref(), &dir())
        .unwrap()
        .unwrap();
    assert_eq!((kept[&0].term, kept[&0].vote), (6, 3));
    // Both damaged: nothing says which promises were made.
    let disk = appended(&batches);
    assert!(disk.corrupt(&votes, 6));
    let seg = segment(&disk);
    let (start, _) = batch_spans(&disk.read(&seg).unwrap())[4];
    assert!(disk.corrupt(&seg, start + 10));
    match Wal::open(disk, WalConfig::new(dir())) {
        Err(WalError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, votes);
            assert!(reason.contains("rebuilt from its peers"), "{reason}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("recovered without trustworthy votes"),
    }
}

#[test]
fn corrupt_snapshot_file_is_refused_with_its_name() {
    let batches = engine_batches(30);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    wal.append(&batches).unwrap();
    drop(wal);
    let snap_dir = dir().join("snap");
    let name = disk.list(&snap_dir).unwrap().remove(0);
    assert!(disk.corrupt(&snap_dir.join(&name), 20));
    let err = Wal::open(disk, WalConfig::new(dir()))
        .err()
        .expect("refused");
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn rotation_and_checkpoints_bound_the_segments() {
    let batches = engine_batches(300);
    let disk = Arc::new(MemDisk::new());
    let mut cfg = WalConfig::new(dir());
    cfg.segment_bytes_max = 2_000;
    cfg.checkpoint_bytes = 8_000;
    let (mut wal, _, _) = Wal::open(disk.clone(), cfg.clone()).unwrap();
    let mut max_segments = 0;
    for b in &batches {
        wal.append(std::slice::from_ref(b)).unwrap();
        max_segments = max_segments.max(wal.segment_count());
    }
    assert!(max_segments <= 8, "segments grew to {max_segments}");
    drop(wal);
    let (_, rec, report) = Wal::open(disk.clone(), cfg).unwrap();
    assert_eq!(rec, fold(&batches));
    assert!(report.segments <= 8);
    // Only the live snapshot of each group is kept on disk.
    let snaps = disk.list(&dir().join("snap")).unwrap();
    assert!(snaps.len() <= rec.groups.len(), "{snaps:?}");
}

/// Appends half of a run's batches synced and one more unsynced, then
/// crashes the disk, keeping `keep_torn(len)` bytes of the unsynced tail.
fn crash_after_unsynced_append(
    keep_torn: impl FnMut(usize) -> usize,
) -> (Arc<MemDisk>, Vec<PersistBatch>) {
    let batches = engine_batches(20);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    let (synced, rest) = batches.split_at(batches.len() / 2);
    wal.append(synced).unwrap();
    let mut unsynced = rest[0].clone();
    unsynced.must_sync = false;
    wal.append(&[unsynced]).unwrap();
    drop(wal);
    disk.crash(keep_torn);
    (disk, synced.to_vec())
}

#[test]
fn unsynced_writes_are_lost_and_synced_ones_kept() {
    let (disk, synced) = crash_after_unsynced_append(|_| 0);
    let (_, rec, _) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert_eq!(rec, fold(&synced));
}

#[test]
fn a_torn_last_write_is_truncated() {
    let (disk, synced) = crash_after_unsynced_append(|len| len / 2);
    let (_, rec, report) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert_eq!(rec, fold(&synced));
    assert!(report.truncated_bytes > 0);
}

/// Where each batch's record starts and ends: after its manifest (see
/// `WalRecord::Manifest`), each batch is the second frame of a pair.
fn batch_spans(data: &[u8]) -> Vec<(usize, usize)> {
    record_ends(data)
        .chunks(2)
        .filter(|p| p.len() == 2)
        .map(|p| (p[0], p[1]))
        .collect()
}

/// Byte offsets where each frame ends, in order.
fn record_ends(data: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut off = 0;
    while off + 8 <= data.len() {
        let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
        ends.push(off);
    }
    ends
}

fn truncated_copy(src: &MemDisk, seg: &Path, cut: usize) -> Arc<MemDisk> {
    let copy = MemDisk::new();
    for name in src.list(&dir().join("snap")).unwrap() {
        let p = dir().join("snap").join(&name);
        let mut f = copy.open_append(&p).unwrap();
        f.write_all(&src.read(&p).unwrap()).unwrap();
        f.sync().unwrap();
    }
    let data = src.read(seg).unwrap();
    let mut f = copy.open_append(seg).unwrap();
    f.write_all(&data[..cut]).unwrap();
    f.sync().unwrap();
    Arc::new(copy)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Cutting the last segment anywhere recovers exactly the records that
    /// are whole before the cut, and the torn tail is truncated away.
    #[test]
    fn recovery_from_every_truncation_point(frac in 0.0f64..1.0) {
        let batches = engine_batches(10);
        let disk = Arc::new(MemDisk::new());
        let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
        for b in &batches {
            wal.append(std::slice::from_ref(b)).unwrap();
        }
        drop(wal);
        let seg = segment(&disk);
        let data = disk.read(&seg).unwrap();
        let cut = (data.len() as f64 * frac) as usize;
        let whole = batch_spans(&data).iter().filter(|(_, e)| *e <= cut).count();
        let copy = truncated_copy(&disk, &seg, cut);
        let (_, rec, report) = Wal::open(copy.clone(), WalConfig::new(dir())).unwrap();
        prop_assert_eq!(rec, fold(&batches[..whole]));
        // Whole batches stay (a manifest without its batch goes too).
        let kept = batch_spans(&data)
            .iter()
            .map(|(_, e)| *e)
            .filter(|e| *e <= cut)
            .max()
            .unwrap_or(0);
        prop_assert_eq!(report.truncated_bytes as usize, cut - kept);
        prop_assert_eq!(copy.len(&seg).unwrap(), kept);
    }
}

#[test]
fn every_byte_truncation_of_a_small_wal_recovers() {
    let batches = engine_batches(3);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    let batches: Vec<PersistBatch> = batches.into_iter().take(12).collect();
    for b in &batches {
        wal.append(std::slice::from_ref(b)).unwrap();
    }
    drop(wal);
    let seg = segment(&disk);
    let data = disk.read(&seg).unwrap();
    let spans = batch_spans(&data);
    for cut in 0..=data.len() {
        let whole = spans.iter().filter(|(_, e)| *e <= cut).count();
        let copy = truncated_copy(&disk, &seg, cut);
        let (_, rec, _) =
            Wal::open(copy, WalConfig::new(dir())).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(rec, fold(&batches[..whole]), "cut at {cut}");
    }
}

#[test]
fn a_scrambled_unsynced_tail_is_torn_not_corrupt() {
    let batches = engine_batches(20);
    let (synced, rest) = batches.split_at(batches.len() / 2);
    for seed in 0..50u64 {
        let disk = Arc::new(MemDisk::new());
        let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
        for b in synced {
            let mut b = b.clone();
            b.must_sync = true;
            wal.append(&[b]).unwrap();
        }
        for b in rest.iter().take(6) {
            let mut unsynced = b.clone();
            unsynced.must_sync = false;
            wal.append(&[unsynced]).unwrap();
        }
        drop(wal);
        disk.crash_scrambled(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (_, rec, _) =
            Wal::open(disk, WalConfig::new(dir())).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // Everything synced is there; of the unsynced tail, a prefix may be.
        let got = rec;
        let ok = (0..=6).any(|k| {
            let mut want: Vec<PersistBatch> = synced.to_vec();
            want.extend(rest.iter().take(k).cloned());
            got == fold(&want)
        });
        assert!(
            ok,
            "seed {seed}: recovered state is not synced + a prefix of the tail"
        );
    }
}

#[test]
fn a_crash_never_leaves_the_wal_pointing_at_a_deleted_snapshot() {
    // Compaction batches need no fsync of their own; the WAL must still not
    // drop the old snapshot file before the record replacing it is durable.
    let batches = engine_batches(60);
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    let first_snapshot = batches
        .iter()
        .position(|b| {
            b.updates.iter().any(
                |u| matches!(u, chronik_core::GroupUpdate::Snapshot { group, .. } if *group != 0),
            )
        })
        .unwrap();
    for (i, b) in batches.iter().enumerate() {
        let mut b = b.clone();
        // Durable up to the first snapshot, then nothing more is synced.
        b.must_sync = i <= first_snapshot;
        wal.append(&[b]).unwrap();
    }
    drop(wal);
    disk.crash(|_| 0);
    let (_, rec, _) = Wal::open(disk, WalConfig::new(dir())).unwrap();
    assert!(
        (0..=batches.len()).any(|k| rec == fold(&batches[..k])),
        "recovered a prefix"
    );
}

#[test]
fn a_record_of_another_format_version_is_refused_by_name() {
    use chronik_net::wal::codec::{WalFrame, WalRecord};
    let disk = Arc::new(MemDisk::new());
    let (mut wal, _, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
    wal.append(&engine_batches(2)).unwrap();
    drop(wal);
    let seg = segment(&disk);
    let at = disk.len(&seg).unwrap() as u64;
    // A record a newer Chronik wrote, intact and synced.
    let payload = postcard::to_stdvec(&WalFrame {
        format: chronik_net::wal::WAL_FORMAT + 1,
        synced_up_to: at,
        record: WalRecord::Batch(vec![]),
    })
    .unwrap();
    let mut buf = Vec::new();
    chronik_net::wal::record::encode(&payload, &mut buf);
    let mut f = disk.open_append(&seg).unwrap();
    f.write_all(&buf).unwrap();
    f.sync().unwrap();
    match Wal::open(disk, WalConfig::new(dir())) {
        Err(e @ WalError::UnknownFormat { .. }) => {
            let WalError::UnknownFormat {
                file,
                offset,
                version,
            } = &e
            else {
                unreachable!()
            };
            let newer = chronik_net::wal::WAL_FORMAT + 1;
            assert_eq!((file, *offset, *version), (&seg, at, newer));
            let text = e.to_string();
            assert!(
                text.contains(&seg.display().to_string())
                    && text.contains(&format!("format version {newer}")),
                "{text}"
            );
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a record of another format was read"),
    }
}

#[test]
fn a_dropped_group_keeps_its_term_and_vote_across_restarts() {
    use chronik_core::raft::eraftpb::{ConfState, HardState};
    use chronik_core::{GroupKind, GroupUpdate};
    let updates = vec![
        GroupUpdate::Create {
            group: 9,
            kind: GroupKind::Partition(PartitionId::new("t", 0)),
            conf_state: ConfState::from((vec![1, 2, 3], vec![])),
        },
        GroupUpdate::HardState {
            group: 9,
            hard_state: HardState {
                term: 6,
                vote: 3,
                commit: 0,
                ..Default::default()
            },
        },
        GroupUpdate::Drop { group: 9 },
    ];
    let batches: Vec<PersistBatch> = updates
        .into_iter()
        .enumerate()
        .map(|(i, u)| PersistBatch {
            ticket: i as u64 + 1,
            updates: vec![u],
            must_sync: true,
        })
        .collect();
    let disk = appended(&batches);
    for start in ["first", "second"] {
        let (_, rec, _) = Wal::open(disk.clone(), WalConfig::new(dir())).unwrap();
        assert!(!rec.groups.contains_key(&9));
        let hs = rec
            .retired
            .get(&9)
            .unwrap_or_else(|| panic!("{start} start"));
        assert_eq!((hs.term, hs.vote), (6, 3), "{start} start");
    }
}
