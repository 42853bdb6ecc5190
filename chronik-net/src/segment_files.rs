//! The files of partitions: runs the [`SegmentIo`] a [`DiskLog`] queues and
//! reads what its [`FetchPlan`]s name. Called by the driver's partition IO
//! workers (off the driver task) and, synchronously, by tests.
//!
//! Work of one group runs in order. After a failure the group's files no
//! longer follow its state, so later work is refused until work that starts
//! the files afresh (a wipe, an adopt, a destroy) arrives: the engine sends
//! that when it rebuilds the replica.
//!
//! [`DiskLog`]: crate::partition_store::DiskLog

use crate::disk::{write_atomic, Disk, DiskFile};
use crate::partition_store::{
    check_segment_header, decode_batch, group_dir, segment_file_name, segment_header, FetchPlan,
    IndexedSegment, Manifest, Segment, SegmentIo, SegmentIoDone, SegmentMeta, SEGMENT_HEADER_LEN,
};
use chronik_core::{Error, Fetched, GroupId, StateError};
use std::path::{Path, PathBuf};

/// One partition group's files.
pub struct SegmentFiles {
    disk: std::sync::Arc<dyn Disk>,
    dir: PathBuf,
    /// The segment appends go to.
    active: Option<Box<dyn DiskFile>>,
    /// Why work is refused until a reset.
    failed: Option<StateError>,
}

impl SegmentFiles {
    /// The files of `group` under `root` (the node's partitions dir).
    pub fn new(disk: std::sync::Arc<dyn Disk>, root: &Path, group: GroupId) -> Self {
        SegmentFiles {
            disk,
            dir: group_dir(root, group),
            active: None,
            failed: None,
        }
    }

    fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    fn seg_path(&self, base_offset: u64) -> PathBuf {
        self.dir.join(segment_file_name(base_offset))
    }

    fn io(&self, what: &str, e: std::io::Error) -> StateError {
        StateError::Storage(format!("partition dir {}: {what}: {e}", self.dir.display()))
    }

    /// Runs `ops` in order; stops at the first failure, after which work is
    /// refused until one that resets the files.
    pub fn run(&mut self, ops: Vec<SegmentIo>) -> Result<Vec<SegmentIoDone>, StateError> {
        let mut done = Vec::new();
        for op in ops {
            if op.resets() {
                self.failed = None;
            }
            if let Some(e) = &self.failed {
                return Err(StateError::Storage(format!(
                    "refused after an earlier failure ({e})"
                )));
            }
            match self.run_one(op) {
                Ok(Some(d)) => done.push(d),
                Ok(None) => {}
                Err(e) => {
                    self.active = None;
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    fn run_one(&mut self, op: SegmentIo) -> Result<Option<SegmentIoDone>, StateError> {
        match op {
            SegmentIo::Wipe => {
                self.remove_all(false)?;
                Ok(None)
            }
            SegmentIo::Destroy => {
                self.remove_all(true)?;
                Ok(None)
            }
            SegmentIo::Adopt { manifest } => self.adopt(&manifest).map(Some),
            SegmentIo::Roll { base } => {
                if let Some(f) = self.active.as_mut() {
                    f.sync().map_err(|e| self.io("sync sealed segment", e))?;
                }
                let path = self.seg_path(base);
                let mut f = self
                    .disk
                    .open_append(&path)
                    .map_err(|e| self.io("create segment", e))?;
                f.write_all(&segment_header())
                    .map_err(|e| self.io("write segment header", e))?;
                self.disk
                    .sync_dir(&self.dir)
                    .map_err(|e| self.io("sync dir", e))?;
                self.active = Some(f);
                Ok(None)
            }
            SegmentIo::Append { frame } => {
                let Some(f) = self.active.as_mut() else {
                    return Err(StateError::Storage(format!(
                        "partition dir {}: append with no active segment",
                        self.dir.display()
                    )));
                };
                if let Err(e) = f.write_all(&frame) {
                    return Err(self.io("append", e));
                }
                Ok(None)
            }
            SegmentIo::Remove { base } => {
                let path = self.seg_path(base);
                // Retention frees space; a segment it could not delete is
                // removed at the next start (not named by any snapshot).
                if let Err(e) = self.disk.remove(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %path.display(), "retention cannot delete a segment: {e}");
                    }
                }
                Ok(None)
            }
            SegmentIo::Checkpoint { manifest } => {
                if let Some(f) = self.active.as_mut() {
                    if let Err(e) = f.sync() {
                        return Err(self.io("sync for snapshot", e));
                    }
                }
                let path = self.dir.join("MANIFEST");
                write_atomic(self.disk.as_ref(), &path, &manifest)
                    .map_err(|e| self.io("write manifest", e))?;
                Ok(None)
            }
        }
    }

    /// Removes every segment and the manifest (and, for a destroyed group,
    /// segments staged by a snapshot transfer).
    fn remove_all(&mut self, staged_too: bool) -> Result<(), StateError> {
        self.active = None;
        let disk = self.disk.clone();
        disk.create_dir_all(&self.dir)
            .map_err(|e| self.io("create dir", e))?;
        let mut dirs = vec![self.dir.clone()];
        if staged_too {
            dirs.push(self.incoming_dir());
        }
        for d in dirs {
            for name in disk.list(&d).map_err(|e| self.io("list", e))? {
                if name.ends_with(".log") || name == "MANIFEST" || name.ends_with(".tmp") {
                    disk.remove(&d.join(&name))
                        .map_err(|e| self.io("remove", e))?;
                }
            }
        }
        disk.sync_dir(&self.dir)
            .map_err(|e| self.io("sync the group dir", e))
    }

    /// Makes the files match `m`: segments cut to their recorded sizes,
    /// missing ones taken from `incoming/`, extra ones deleted; then reads
    /// every batch to check it and rebuild the sparse index.
    fn adopt(&mut self, m: &Manifest) -> Result<SegmentIoDone, StateError> {
        self.active = None;
        let disk = self.disk.clone();
        disk.create_dir_all(&self.dir)
            .map_err(|e| self.io("create dir", e))?;
        let present = disk.list(&self.dir).map_err(|e| self.io("list", e))?;
        let incoming = disk.list(&self.incoming_dir()).unwrap_or_default();
        let mut kept = Vec::new();
        for (i, sm) in m.segments.iter().enumerate() {
            let name = segment_file_name(sm.base_offset);
            let path = self.dir.join(&name);
            let local_len = if present.contains(&name) {
                disk.file_len(&path).unwrap_or(0)
            } else {
                0
            };
            let staged = self.incoming_dir().join(&name);
            let staged_len = if incoming.contains(&name) {
                disk.file_len(&staged).unwrap_or(0)
            } else {
                0
            };
            if local_len < sm.size && staged_len >= sm.size {
                if present.contains(&name) {
                    disk.remove(&path).map_err(|e| self.io("remove", e))?;
                }
                disk.rename(&staged, &path)
                    .map_err(|e| self.io("adopt staged segment", e))?;
            } else if local_len < sm.size {
                let last = i + 1 == m.segments.len();
                if kept.is_empty() && !last {
                    // Deleted by retention here (or at the leader): the log
                    // now starts later.
                    continue;
                }
                return Err(StateError::Corrupt(format!(
                    "segment {name} of group dir {} holds {local_len} bytes, the snapshot needs {}",
                    self.dir.display(),
                    sm.size
                )));
            }
            disk.truncate(&path, sm.size)
                .map_err(|e| self.io("truncate", e))?;
            kept.push(self.scan(sm)?);
        }
        // Anything else is beyond the snapshot (or deleted by it).
        let keep: Vec<String> = kept
            .iter()
            .map(|s: &IndexedSegment| segment_file_name(s.base_offset))
            .collect();
        for name in present
            .iter()
            .filter(|n| n.ends_with(".log") && !keep.contains(n))
        {
            disk.remove(&self.dir.join(name))
                .map_err(|e| self.io("remove", e))?;
        }
        for name in disk.list(&self.incoming_dir()).unwrap_or_default() {
            let _ = disk.remove(&self.incoming_dir().join(name));
        }
        // Adopted segments are renames into the group dir: durable only
        // once the directory is synced.
        disk.sync_dir(&self.dir)
            .map_err(|e| self.io("sync the group dir", e))?;
        if let Some(last) = kept.last() {
            let path = self.seg_path(last.base_offset);
            self.active = Some(disk.open_append(&path).map_err(|e| self.io("open", e))?);
        }
        Ok(SegmentIoDone::Indexed { segments: kept })
    }

    /// Rebuilds a segment's sparse index, checking every batch.
    fn scan(&self, meta: &SegmentMeta) -> Result<IndexedSegment, StateError> {
        let path = self.seg_path(meta.base_offset);
        let data = self.disk.read(&path).map_err(|e| self.io("read", e))?;
        let mut seg = Segment {
            meta: meta.clone(),
            index: Vec::new(),
            last_indexed_pos: None,
        };
        check_segment_header(&path, &data)?;
        let mut pos = SEGMENT_HEADER_LEN as usize;
        let mut next = meta.base_offset;
        while pos < data.len() {
            let corrupt = |what: String| {
                StateError::Corrupt(format!("{}: {what} at byte {pos}", path.display()))
            };
            match decode_batch(&data[pos..]) {
                Ok(Some(b)) => {
                    if b.base_offset != next {
                        return Err(corrupt(format!(
                            "batch starts at offset {}, expected {next},",
                            b.base_offset
                        )));
                    }
                    seg.note_batch(b.base_offset, pos as u64);
                    seg.meta.max_timestamp_ms = seg.meta.max_timestamp_ms.max(b.timestamp_ms);
                    next += b.records.len() as u64;
                    pos += b.size;
                }
                Ok(None) => return Err(corrupt("truncated batch".into())),
                Err(e) => return Err(corrupt(format!("corrupt batch ({e})"))),
            }
        }
        if next != meta.next_offset {
            return Err(StateError::Corrupt(format!(
                "{}: ends at offset {next}, the manifest says {}",
                path.display(),
                meta.next_offset
            )));
        }
        Ok(IndexedSegment {
            base_offset: meta.base_offset,
            index: seg.index,
            max_timestamp_ms: seg.meta.max_timestamp_ms,
        })
    }

    /// Refuses work and reads until a reset: something found the files no
    /// longer follow the state.
    pub fn fail(&mut self, why: StateError) {
        self.active = None;
        self.failed = Some(why);
    }

    /// Reads what `plan` names. Run after the work queued before the plan,
    /// so every byte it names is written.
    pub fn read(&self, plan: &FetchPlan) -> Result<Fetched, ReadError> {
        if let Some(e) = &self.failed {
            return Err(ReadError::Refused(e.clone()));
        }
        read_fetch(self.disk.as_ref(), &self.dir, plan)
    }
}

/// Why a planned fetch was not read.
#[derive(Debug)]
pub enum ReadError {
    /// The group's storage failed earlier; the replica is being rebuilt.
    Refused(StateError),
    /// The read failed or found corrupt data: the replica's files no longer
    /// hold what its state says.
    Failed(StateError),
}

impl ReadError {
    /// What the client is told: retriable, another replica may serve it.
    pub fn to_client(&self, group: GroupId) -> Error {
        let e = match self {
            ReadError::Refused(e) | ReadError::Failed(e) => e,
        };
        Error::ReplicaRepairing {
            group,
            reason: e.to_string(),
        }
    }
}

/// Reads a planned fetch from the group dir `dir`.
pub fn read_fetch(disk: &dyn Disk, dir: &Path, plan: &FetchPlan) -> Result<Fetched, ReadError> {
    let path = dir.join(segment_file_name(plan.segment));
    let failed = |what: String| {
        ReadError::Failed(StateError::Storage(format!("{}: {what}", path.display())))
    };
    let mut buf = disk
        .read_range(&path, plan.start, plan.len)
        .map_err(|e| failed(format!("read: {e}")))?;
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut pos = 0usize;
    let high_watermark = plan.high_watermark;
    loop {
        let batch = match decode_batch(&buf[pos..]) {
            Ok(Some(b)) => b,
            Ok(None) if records.is_empty() && (plan.start + pos as u64) < plan.segment_size => {
                // The first wanted batch is bigger than what was read.
                let rest = (plan.segment_size - plan.start) as usize;
                if buf.len() >= rest {
                    return Err(failed(format!(
                        "truncated batch at byte {}",
                        plan.start + pos as u64
                    )));
                }
                buf = disk
                    .read_range(&path, plan.start, rest)
                    .map_err(|e| failed(format!("read: {e}")))?;
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ReadError::Failed(StateError::Corrupt(format!(
                    "{}: {e} at byte {}",
                    path.display(),
                    plan.start + pos as u64
                ))))
            }
        };
        pos += batch.size;
        for (k, r) in batch.records.into_iter().enumerate() {
            let o = batch.base_offset + k as u64;
            if o < plan.offset || o >= high_watermark {
                continue;
            }
            if !records.is_empty() && bytes + r.len() as u64 > plan.max_bytes {
                return Ok(Fetched {
                    records,
                    high_watermark,
                });
            }
            bytes += r.len() as u64;
            records.push((o, r));
        }
        if pos >= buf.len() {
            break;
        }
    }
    Ok(Fetched {
        records,
        high_watermark,
    })
}
