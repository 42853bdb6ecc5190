//! The on-disk partition log: reads across segments, snapshots and
//! recovery to them, retention, adopting a leader's streamed segments.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bytes::Bytes;
use chronik_core::{Error, PartitionId, RecordCommand, RecordQuery, StateError, StateMachine};
use chronik_net::disk::{Disk, MemDisk};
use chronik_net::partition_store::{
    group_dir, remove_orphans, segment_file_name, DiskLog, DiskLogOptions, Fetch, Manifest,
};
use chronik_net::segment_files::SegmentFiles;
use std::path::PathBuf;
use std::sync::Arc;

const ROOT: &str = "/d/partitions";

fn opts() -> DiskLogOptions {
    DiskLogOptions {
        segment_bytes_max: 1_000,
        retention_bytes: None,
        retention_ms: None,
        record_size_max_bytes: 1 << 20,
        produce_records_max: 10_000,
    }
}

/// A replica as a node runs it: the state machine, and its files running
/// the storage work it queues (here right away, in order).
struct Replica {
    log: DiskLog,
    files: SegmentFiles,
}

impl Replica {
    fn new(disk: &MemDisk, o: &DiskLogOptions) -> Replica {
        Replica {
            log: DiskLog::new(7, &PartitionId::new("t", 0), o),
            files: SegmentFiles::new(Arc::new(disk.clone()), &PathBuf::from(ROOT), 7),
        }
    }

    /// Runs the queued storage work, handing its findings back.
    fn io(&mut self) -> Result<(), StateError> {
        for done in self.files.run(self.log.take_io())? {
            self.log.io_done(done);
        }
        Ok(())
    }

    fn recover(&mut self, snapshot: Option<(u64, &[u8])>) -> Result<(), StateError> {
        self.log.recover(snapshot)?;
        self.io()
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateError> {
        self.log.restore(index, data)?;
        self.io()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        let data = self.log.snapshot();
        self.io().unwrap();
        data
    }

    fn query(&self, offset: u64, max_bytes: u64) -> Result<chronik_core::Fetched, Error> {
        match self.log.query(&RecordQuery::Fetch { offset, max_bytes })? {
            Fetch::Read(f) => Ok(f),
            Fetch::Planned(plan) => self.files.read(&plan).map_err(|e| e.to_client(7)),
        }
    }
}

impl std::ops::Deref for Replica {
    type Target = DiskLog;
    fn deref(&self) -> &DiskLog {
        &self.log
    }
}

fn open(disk: &MemDisk, o: &DiskLogOptions, snapshot: Option<(u64, &[u8])>) -> Replica {
    let mut r = Replica::new(disk, o);
    r.recover(snapshot).unwrap();
    r
}

fn dir() -> PathBuf {
    group_dir(&PathBuf::from(ROOT), 7)
}

fn append(l: &mut Replica, index: u64, vals: &[String], ts: u64) -> u64 {
    let base = l
        .log
        .apply(
            index,
            RecordCommand::Append {
                records: vals.iter().map(|v| Bytes::from(v.clone())).collect(),
                timestamp_ms: ts,
            },
        )
        .base_offset;
    l.io().unwrap();
    base
}

fn fetch_all(l: &Replica, from: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let f = l.query(off, 300).unwrap();
        if f.records.is_empty() {
            return out;
        }
        for (o, r) in f.records {
            assert_eq!(o, off, "offsets are dense");
            out.push((o, String::from_utf8(r.to_vec()).unwrap()));
            off += 1;
        }
    }
}

fn fill(l: &mut Replica, batches: u64) -> Vec<String> {
    let mut all = Vec::new();
    for i in 0..batches {
        let vals: Vec<String> = (0..3)
            .map(|k| format!("b{i}-r{k}-{}", "x".repeat(20)))
            .collect();
        let base = append(l, i + 1, &vals, 1000 + i);
        assert_eq!(base, all.len() as u64);
        all.extend(vals);
    }
    all
}

#[test]
fn reads_across_segments_with_dense_offsets() {
    let disk = MemDisk::new();
    let o = opts();
    let mut l = open(&disk, &o, None);
    let all = fill(&mut l, 100);
    assert!(disk.list(&dir()).unwrap().len() > 5, "rolled segments");
    let got = fetch_all(&l, 0);
    assert_eq!(got.len(), all.len());
    for (o, v) in &got {
        assert_eq!(v, &all[*o as usize]);
    }
    assert_eq!(fetch_all(&l, 123).first().unwrap().0, 123);
    let one = l.query(5, 0).unwrap();
    assert_eq!(one.records.len(), 1, "at least one record");
    assert!(matches!(
        l.query(301, 10),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn recovery_cuts_back_to_the_snapshot() {
    let disk = MemDisk::new();
    let o = opts();
    let mut l = open(&disk, &o, None);
    let all = fill(&mut l, 40);
    let snap = l.snapshot();
    // More applies after the snapshot, some of them not even synced.
    let mut l2 = l;
    for i in 41..60 {
        append(&mut l2, i, &[format!("late{i}")], 0);
    }
    drop(l2);
    disk.crash(|len| len / 3);
    let l = open(&disk, &o, Some((40, &snap)));
    assert_eq!(l.high_watermark(), all.len() as u64);
    let got: Vec<String> = fetch_all(&l, 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, all);
    // The Raft log replays from index 41: applies continue where it left.
    let mut l = l;
    assert_eq!(
        append(&mut l, 41, &["again".to_string()], 0),
        all.len() as u64
    );
}

#[test]
fn recover_without_snapshot_starts_empty() {
    let disk = MemDisk::new();
    let o = opts();
    let mut l = open(&disk, &o, None);
    fill(&mut l, 10);
    drop(l);
    let l = open(&disk, &o, None);
    assert_eq!(l.high_watermark(), 0);
    assert!(fetch_all(&l, 0).is_empty());
}

#[test]
fn retention_by_bytes_and_time() {
    let disk = MemDisk::new();
    let mut o = opts();
    o.retention_bytes = Some(3_000);
    let mut l = open(&disk, &o, None);
    fill(&mut l, 200);
    assert!(
        l.size_bytes() <= 3_000 + o.segment_bytes_max + 200,
        "{}",
        l.size_bytes()
    );
    let start = l.log_start_offset();
    assert!(start > 0);
    assert!(matches!(
        l.query(start - 1, 10),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        fetch_all(&l, start).len() as u64,
        l.high_watermark() - start
    );

    let disk = MemDisk::new();
    let mut o = opts();
    o.retention_ms = Some(50);
    let mut l = open(&disk, &o, None);
    fill(&mut l, 100); // timestamps 1000..1099
    assert!(l.log_start_offset() > 0, "old segments expired");
    let newest_kept = fetch_all(&l, l.log_start_offset());
    assert!(!newest_kept.is_empty());
}

#[test]
fn a_follower_adopts_streamed_segments() {
    let leader_disk = MemDisk::new();
    let o = opts();
    let mut leader = open(&leader_disk, &o, None);
    let all = fill(&mut leader, 50);
    let snap = leader.snapshot();
    let m = Manifest::decode(&snap).unwrap();

    let follower_disk = MemDisk::new();
    let mut follower = open(&follower_disk, &o, None);
    // Without the data, the snapshot cannot be installed.
    assert!(follower.restore(50, &snap).is_err());
    // The transport streams each segment into incoming/.
    let incoming = dir().join("incoming");
    follower_disk.create_dir_all(&incoming).unwrap();
    for s in &m.segments {
        let name = segment_file_name(s.base_offset);
        let data = leader_disk.read(&dir().join(&name)).unwrap();
        let mut f = follower_disk.open_append(&incoming.join(&name)).unwrap();
        f.write_all(&data[..s.size as usize]).unwrap();
        f.sync().unwrap();
    }
    follower.restore(50, &snap).unwrap();
    let got: Vec<String> = fetch_all(&follower, 0)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(got, all);
    assert!(follower_disk.list(&incoming).unwrap().is_empty());
}

#[test]
fn corrupt_segment_refuses_recovery() {
    let disk = MemDisk::new();
    let o = opts();
    let mut l = open(&disk, &o, None);
    fill(&mut l, 10);
    let snap = l.snapshot();
    drop(l);
    let seg = dir().join(segment_file_name(0));
    assert!(disk.corrupt(&seg, 30));
    let mut l = Replica::new(&disk, &o);
    let err = l.recover(Some((10, &snap))).unwrap_err();
    assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    // The files refuse work until they start afresh.
    assert!(l.query(0, 100).is_err());
    l.recover(None).unwrap();
    assert_eq!(l.log.high_watermark(), 0);
}

#[test]
fn files_of_groups_no_longer_hosted_are_removed_at_start() {
    let disk = MemDisk::new();
    let root = PathBuf::from("/d/partitions");
    let file = |group: u64, name: &str| {
        let dir = group_dir(&root, group);
        disk.create_dir_all(&dir).unwrap();
        let mut f = disk.open_append(&dir.join(name)).unwrap();
        f.write_all(b"data").unwrap();
        f.sync().unwrap();
    };
    file(1, &segment_file_name(0));
    file(1, "MANIFEST");
    file(2, &segment_file_name(0));
    file(2, "MANIFEST");
    disk.create_dir_all(&group_dir(&root, 2).join("incoming"))
        .unwrap();
    let mut f = disk
        .open_append(
            &group_dir(&root, 2)
                .join("incoming")
                .join(segment_file_name(5)),
        )
        .unwrap();
    f.write_all(b"half").unwrap();
    let hosted = [0, 1].into_iter().collect();
    assert_eq!(remove_orphans(&disk, &root, &hosted).unwrap(), vec![2]);
    assert_eq!(
        disk.list(&group_dir(&root, 1)).unwrap(),
        vec![segment_file_name(0), "MANIFEST".to_string()]
    );
    assert_eq!(
        disk.list(&group_dir(&root, 2)).unwrap(),
        vec!["incoming".to_string()]
    );
    assert!(disk
        .list(&group_dir(&root, 2).join("incoming"))
        .unwrap()
        .is_empty());
    // Nothing left to clean: a second start finds nothing.
    assert!(remove_orphans(&disk, &root, &hosted).unwrap().is_empty());
}

#[test]
fn a_segment_of_another_format_version_is_refused_by_name() {
    let disk = MemDisk::new();
    let o = opts();
    let mut l = open(&disk, &o, None);
    fill(&mut l, 10);
    let snap = l.snapshot();
    drop(l);
    let seg = dir().join(segment_file_name(0));
    // The version is bytes 4..8 of the header: now 1 ^ 0xff.
    assert!(disk.corrupt(&seg, 4));
    let mut l = Replica::new(&disk, &o);
    let err = l.recover(Some((10, &snap))).unwrap_err().to_string();
    assert!(
        err.contains(&seg.display().to_string()) && err.contains("format version 254"),
        "{err}"
    );
}
