//! Committed partition records on disk: Chronik's `StateMachine` for
//! partition groups in real nodes. Memory per partition stays bounded (a
//! sparse offset index per segment), whatever the data size.
//!
//! Layout under `partitions/g{group}/`: segment files `{base_offset:020}.log`
//! of framed batches, and `MANIFEST`, rewritten atomically at every Raft
//! snapshot. A snapshot's data *is* the manifest (applied index, high
//! watermark, log start, and each segment's length): small, so the Raft log
//! compacts cheaply. Before the manifest is returned every segment it names
//! is synced, so compacting the Raft log never loses a record. On recovery
//! segments are cut back to the manifest's lengths and the Raft log replays
//! the rest: no entry applies twice or is skipped.
//!
//! A follower that needs a snapshot gets the segment bytes streamed into
//! `incoming/` by the transport before the snapshot reaches the engine;
//! `restore` then adopts them.
//!
//! Batch frame: `[len u32][crc32c u32][base_offset u64][count u32]
//! [timestamp_ms u64]` then `count` times `[len u32][bytes]`; crc covers
//! everything after the crc.

use crate::disk::{write_atomic, Disk, DiskFile};
use bytes::Bytes;
use chronik_core::{
    Appended, Error, Fetched, GroupId, PartitionId, RecordCommand, RecordQuery, StateMachine,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes between two sparse index entries.
const INDEX_INTERVAL_BYTES: u64 = 4096;
const FRAME_HEADER: usize = 8;
const BATCH_HEADER: usize = 20;

/// Where partitions live and how big they may grow.
#[derive(Clone)]
pub struct DiskLogOptions {
    pub disk: Arc<dyn Disk>,
    /// Parent of every partition's directory.
    pub dir: PathBuf,
    pub segment_bytes_max: u64,
    /// Delete the oldest segments while a partition holds more.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest batch is older than this.
    pub retention_ms: Option<u64>,
    pub record_size_max_bytes: usize,
    pub produce_records_max: usize,
}

impl std::fmt::Debug for DiskLogOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLogOptions")
            .field("dir", &self.dir)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("retention_bytes", &self.retention_bytes)
            .field("retention_ms", &self.retention_ms)
            .finish()
    }
}

/// One segment's durable description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub base_offset: u64,
    /// Bytes of whole batches.
    pub size: u64,
    /// One past the last offset in the segment.
    pub next_offset: u64,
    pub max_timestamp_ms: u64,
}

/// The snapshot of a partition: what is on disk as of `applied_index`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub applied_index: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    pub fn decode(data: &[u8]) -> Result<Manifest, String> {
        postcard::from_bytes(data).map_err(|e| format!("partition manifest: {e}"))
    }
}

struct Segment {
    meta: SegmentMeta,
    /// `(offset, byte position)` of some batch starts, ascending.
    index: Vec<(u64, u64)>,
    last_indexed_pos: Option<u64>,
}

/// A partition's record log on disk.
pub struct DiskLog {
    opts: DiskLogOptions,
    dir: PathBuf,
    segments: Vec<Segment>,
    active: Option<Box<dyn DiskFile>>,
    high_watermark: u64,
    log_start_offset: u64,
    applied_index: u64,
    /// Set when an IO error hit recovery; cleared by a successful one.
    failed: Option<String>,
}

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The directory of a partition group under `root`.
pub fn group_dir(root: &Path, group: GroupId) -> PathBuf {
    root.join(format!("g{group}"))
}

/// Removes the files of every partition group under `root` that is not in
/// `hosted` (the groups the node recovered): left by a drop whose removes a
/// crash undid, or by a crash between the durable drop and the removes.
/// Returns the groups cleaned.
pub fn remove_orphans(
    disk: &dyn Disk,
    root: &Path,
    hosted: &std::collections::BTreeSet<GroupId>,
) -> std::io::Result<Vec<GroupId>> {
    let mut cleaned = Vec::new();
    for name in disk.list(root)? {
        let Some(group) = name
            .strip_prefix('g')
            .and_then(|g| g.parse::<GroupId>().ok())
        else {
            continue;
        };
        if hosted.contains(&group) {
            continue;
        }
        let dir = group_dir(root, group);
        let mut removed = false;
        for sub in [dir.join("incoming"), dir.clone()] {
            for f in disk.list(&sub)? {
                if f.ends_with(".log") || f == "MANIFEST" || f.ends_with(".tmp") {
                    disk.remove(&sub.join(&f))?;
                    removed = true;
                }
            }
            if removed {
                disk.sync_dir(&sub)?;
            }
        }
        if removed {
            cleaned.push(group);
        }
    }
    Ok(cleaned)
}

fn encode_batch(base_offset: u64, timestamp_ms: u64, records: &[Bytes]) -> Vec<u8> {
    let body_len: usize = BATCH_HEADER + records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(&base_offset.to_le_bytes());
    body.extend_from_slice(&(records.len() as u32).to_le_bytes());
    body.extend_from_slice(&timestamp_ms.to_le_bytes());
    for r in records {
        body.extend_from_slice(&(r.len() as u32).to_le_bytes());
        body.extend_from_slice(r);
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A decoded batch: base offset, timestamp, records, and its framed size.
struct Batch {
    base_offset: u64,
    timestamp_ms: u64,
    records: Vec<Bytes>,
    size: usize,
}

fn decode_batch(buf: &[u8]) -> Result<Option<Batch>, String> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if buf.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
    // Planted bug (simulation builds only): segments are trusted unchecked.
    if crc32c::crc32c(body) != crc
        && !chronik_core::planted::active(chronik_core::planted::Bug::SegmentCrcUnchecked)
    {
        return Err("batch checksum mismatch".into());
    }
    if body.len() < BATCH_HEADER {
        return Err("batch shorter than its header".into());
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let base_offset = u64_at(0);
    let count = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let timestamp_ms = u64_at(12);
    // Every record takes at least its 4-byte length: a count the body cannot
    // hold is refused before it sizes anything.
    if count > (body.len() - BATCH_HEADER) / 4 {
        return Err(format!(
            "batch claims {count} records in {} bytes",
            body.len() - BATCH_HEADER
        ));
    }
    let mut records = Vec::with_capacity(count);
    let mut pos = BATCH_HEADER;
    for _ in 0..count {
        if pos + 4 > body.len() {
            return Err("batch record header past its end".into());
        }
        let rlen = u32::from_le_bytes(body[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += 4;
        if pos + rlen > body.len() {
            return Err("batch record past its end".into());
        }
        records.push(Bytes::copy_from_slice(&body[pos..pos + rlen]));
        pos += rlen;
    }
    Ok(Some(Batch {
        base_offset,
        timestamp_ms,
        records,
        size: FRAME_HEADER + len,
    }))
}

impl std::fmt::Debug for DiskLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("high_watermark", &self.high_watermark)
            .field("log_start_offset", &self.log_start_offset)
            .field("applied_index", &self.applied_index)
            .finish()
    }
}

impl DiskLog {
    fn seg_path(&self, base_offset: u64) -> PathBuf {
        self.dir.join(segment_file_name(base_offset))
    }

    fn incoming_dir(&self) -> PathBuf {
        self.dir.join("incoming")
    }

    fn io(&mut self, what: &str, e: std::io::Error) -> String {
        let msg = format!("partition dir {}: {what}: {e}", self.dir.display());
        tracing::error!("{msg}");
        self.failed = Some(msg.clone());
        msg
    }

    /// Why this log stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Total bytes of segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.meta.size).sum()
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            applied_index: self.applied_index,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            segments: self.segments.iter().map(|s| s.meta.clone()).collect(),
        }
    }

    /// Drops every file and starts empty.
    fn wipe(&mut self) -> Result<(), String> {
        self.active = None;
        self.segments.clear();
        let disk = self.opts.disk.clone();
        for d in [self.dir.clone(), self.incoming_dir()] {
            for name in disk.list(&d).map_err(|e| self.io("list", e))? {
                if name.ends_with(".log") || name == "MANIFEST" || name.ends_with(".tmp") {
                    disk.remove(&d.join(&name))
                        .map_err(|e| self.io("remove", e))?;
                }
            }
        }
        self.high_watermark = 0;
        self.log_start_offset = 0;
        self.applied_index = 0;
        Ok(())
    }

    /// Makes the files match `m`: segments cut to their recorded sizes,
    /// missing ones taken from `incoming/`, extra ones deleted.
    fn adopt(&mut self, index: u64, m: &Manifest) -> Result<(), String> {
        self.active = None;
        let disk = self.opts.disk.clone();
        disk.create_dir_all(&self.dir)
            .map_err(|e| self.io("create dir", e))?;
        let present = disk.list(&self.dir).map_err(|e| self.io("list", e))?;
        let incoming = disk.list(&self.incoming_dir()).unwrap_or_default();
        let mut segments = Vec::new();
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
                if segments.is_empty() && !last {
                    // Deleted by retention here (or at the leader): the log
                    // now starts later.
                    continue;
                }
                return Err(format!(
                    "segment {name} of group dir {} holds {local_len} bytes, the snapshot needs {}",
                    self.dir.display(),
                    sm.size
                ));
            }
            disk.truncate(&path, sm.size)
                .map_err(|e| self.io("truncate", e))?;
            segments.push(self.scan(sm.clone())?);
        }
        // Anything else is beyond the snapshot (or deleted by it).
        let keep: Vec<String> = segments
            .iter()
            .map(|s: &Segment| segment_file_name(s.meta.base_offset))
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
        self.log_start_offset = segments
            .first()
            .map_or(m.high_watermark, |s| s.meta.base_offset)
            .max(m.log_start_offset);
        self.segments = segments;
        self.high_watermark = m.high_watermark;
        self.applied_index = index;
        if let Some(last) = self.segments.last() {
            let path = self.seg_path(last.meta.base_offset);
            self.active = Some(disk.open_append(&path).map_err(|e| self.io("open", e))?);
        }
        self.failed = None;
        Ok(())
    }

    /// Rebuilds a segment's sparse index, checking every batch.
    fn scan(&mut self, meta: SegmentMeta) -> Result<Segment, String> {
        let path = self.seg_path(meta.base_offset);
        let data = self.opts.disk.read(&path).map_err(|e| self.io("read", e))?;
        let mut seg = Segment {
            meta: meta.clone(),
            index: Vec::new(),
            last_indexed_pos: None,
        };
        let mut pos = 0usize;
        let mut next = meta.base_offset;
        while pos < data.len() {
            match decode_batch(&data[pos..]) {
                Ok(Some(b)) => {
                    if b.base_offset != next {
                        return Err(format!(
                            "{}: batch at byte {pos} starts at offset {}, expected {next}",
                            path.display(),
                            b.base_offset
                        ));
                    }
                    seg.note_batch(b.base_offset, pos as u64);
                    seg.meta.max_timestamp_ms = seg.meta.max_timestamp_ms.max(b.timestamp_ms);
                    next += b.records.len() as u64;
                    pos += b.size;
                }
                Ok(None) => {
                    return Err(format!("{}: truncated batch at byte {pos}", path.display()))
                }
                Err(e) => {
                    return Err(format!(
                        "{}: corrupt batch at byte {pos}: {e}",
                        path.display()
                    ))
                }
            }
        }
        if next != meta.next_offset {
            return Err(format!(
                "{}: ends at offset {next}, the manifest says {}",
                path.display(),
                meta.next_offset
            ));
        }
        Ok(seg)
    }

    /// A write-path IO error: the files can no longer follow the applied
    /// state, and carrying on would acknowledge data this replica lacks.
    /// Stop the node (fail-stop, as etcd does on WAL errors); the WAL still
    /// holds every entry after the last snapshot, so a restart repairs it.
    fn fatal(&self, what: &str, e: std::io::Error) -> ! {
        panic!(
            "partition dir {}: {what}: {e}; stopping the node",
            self.dir.display()
        )
    }

    fn roll(&mut self, base: u64) {
        if let Some(f) = self.active.as_mut() {
            if let Err(e) = f.sync() {
                self.fatal("sync sealed segment", e);
            }
        }
        let path = self.seg_path(base);
        let f = match self.opts.disk.open_append(&path) {
            Ok(f) => f,
            Err(e) => self.fatal("create segment", e),
        };
        if let Err(e) = self.opts.disk.sync_dir(&self.dir) {
            self.fatal("sync dir", e);
        }
        self.active = Some(f);
        self.segments.push(Segment {
            meta: SegmentMeta {
                base_offset: base,
                size: 0,
                next_offset: base,
                max_timestamp_ms: 0,
            },
            index: Vec::new(),
            last_indexed_pos: None,
        });
    }

    /// Deletes sealed segments past the retention limits.
    fn enforce_retention(&mut self, now_ms: u64) {
        loop {
            if self.segments.len() < 2 {
                return;
            }
            let first = &self.segments[0].meta;
            let too_big = self
                .opts
                .retention_bytes
                .is_some_and(|max| self.size_bytes() > max);
            let too_old = self
                .opts
                .retention_ms
                .is_some_and(|ms| first.max_timestamp_ms.saturating_add(ms) < now_ms);
            if !too_big && !too_old {
                return;
            }
            let path = self.seg_path(first.base_offset);
            if let Err(e) = self.opts.disk.remove(&path) {
                tracing::warn!(path = %path.display(), "retention cannot delete a segment: {e}");
                return;
            }
            self.segments.remove(0);
            self.log_start_offset = self.segments[0].meta.base_offset;
        }
    }
}

impl Segment {
    fn note_batch(&mut self, offset: u64, pos: u64) {
        if self
            .last_indexed_pos
            .is_none_or(|p| pos >= p + INDEX_INTERVAL_BYTES)
        {
            self.index.push((offset, pos));
            self.last_indexed_pos = Some(pos);
        }
    }
}

impl StateMachine for DiskLog {
    type Command = RecordCommand;
    type Response = Appended;
    type Query = RecordQuery;
    type QueryResponse = Fetched;
    type Options = DiskLogOptions;

    fn new(group: GroupId, _partition: &PartitionId, options: &DiskLogOptions) -> Self {
        DiskLog {
            opts: options.clone(),
            dir: group_dir(&options.dir, group),
            segments: Vec::new(),
            active: None,
            high_watermark: 0,
            log_start_offset: 0,
            applied_index: 0,
            failed: None,
        }
    }

    fn recover(&mut self, snapshot: Option<(u64, &[u8])>) -> Result<(), String> {
        self.opts
            .disk
            .create_dir_all(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        match snapshot {
            Some((index, data)) => self.adopt(index, &Manifest::decode(data)?),
            None => self.wipe(),
        }
    }

    fn validate_snapshot(_options: &DiskLogOptions, data: &[u8]) -> Result<(), String> {
        Manifest::decode(data).map(|_| ())
    }

    fn destroy(mut self) {
        // Called once the WAL record dropping the group is durable. A crash
        // that undoes these removes leaves files no group owns: the next
        // start removes them (`remove_orphans`).
        if chronik_core::planted::active(chronik_core::planted::Bug::DeleteKeepsFiles) {
            // Planted bug (simulation builds only): nothing is removed.
            return;
        }
        if let Err(e) = self.wipe() {
            tracing::warn!("cannot delete a dropped partition's files: {e}");
        }
        if let Err(e) = self.opts.disk.sync_dir(&self.dir) {
            tracing::warn!("cannot sync a dropped partition's dir: {e}");
        }
    }

    fn validate(&self, command: &RecordCommand) -> Result<(), Error> {
        chronik_core::validate_append(
            command,
            &chronik_core::RecordLogOptions {
                record_size_max_bytes: self.opts.record_size_max_bytes,
                produce_records_max: self.opts.produce_records_max,
            },
        )
    }

    fn apply(&mut self, index: u64, command: RecordCommand) -> Appended {
        let RecordCommand::Append {
            records,
            timestamp_ms,
        } = command;
        let base_offset = self.high_watermark;
        let count = records.len() as u64;
        if self
            .segments
            .last()
            .is_none_or(|s| s.meta.size >= self.opts.segment_bytes_max)
        {
            self.roll(base_offset);
        }
        let frame = encode_batch(base_offset, timestamp_ms, &records);
        if let Some(f) = self.active.as_mut() {
            if let Err(e) = f.write_all(&frame) {
                self.fatal("append", e);
            }
        }
        let seg = self.segments.last_mut().expect("rolled above");
        let pos = seg.meta.size;
        seg.note_batch(base_offset, pos);
        seg.meta.size += frame.len() as u64;
        seg.meta.next_offset = base_offset + count;
        seg.meta.max_timestamp_ms = seg.meta.max_timestamp_ms.max(timestamp_ms);
        self.high_watermark = base_offset + count;
        self.applied_index = index;
        self.enforce_retention(timestamp_ms);
        Appended { base_offset, count }
    }

    fn query(&self, query: &RecordQuery) -> Result<Fetched, Error> {
        let RecordQuery::Fetch { offset, max_bytes } = *query;
        let high_watermark = self.high_watermark;
        if offset > high_watermark || offset < self.log_start_offset {
            return Err(Error::OffsetOutOfRange {
                offset,
                high_watermark,
            });
        }
        let empty = Fetched {
            records: vec![],
            high_watermark,
        };
        if offset == high_watermark {
            return Ok(empty);
        }
        let i = self
            .segments
            .partition_point(|s| s.meta.base_offset <= offset);
        let Some(seg) = i.checked_sub(1).map(|i| &self.segments[i]) else {
            return Ok(empty);
        };
        let j = seg.index.partition_point(|(o, _)| *o <= offset);
        let start = j.checked_sub(1).map_or(0, |j| seg.index[j].1);
        let want = (max_bytes as usize)
            .saturating_add(INDEX_INTERVAL_BYTES as usize * 2)
            .min(64 << 20);
        let len = ((seg.meta.size - start) as usize).min(want.max(1));
        let path = self.seg_path(seg.meta.base_offset);
        let mut buf =
            self.opts
                .disk
                .read_range(&path, start, len)
                .map_err(|e| Error::InvalidRequest {
                    reason: format!("reading {}: {e}", path.display()),
                })?;
        let mut records = Vec::new();
        let mut bytes = 0u64;
        let mut pos = 0usize;
        loop {
            let batch = match decode_batch(&buf[pos..]) {
                Ok(Some(b)) => b,
                Ok(None) if records.is_empty() && (start + pos as u64) < seg.meta.size => {
                    // The first wanted batch is bigger than what was read.
                    let rest = (seg.meta.size - start) as usize;
                    buf = self.opts.disk.read_range(&path, start, rest).map_err(|e| {
                        Error::InvalidRequest {
                            reason: format!("reading {}: {e}", path.display()),
                        }
                    })?;
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::InvalidRequest {
                        reason: format!("{}: {e}", path.display()),
                    })
                }
            };
            pos += batch.size;
            for (k, r) in batch.records.into_iter().enumerate() {
                let o = batch.base_offset + k as u64;
                if o < offset {
                    continue;
                }
                if !records.is_empty() && bytes + r.len() as u64 > max_bytes {
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

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn fingerprint(&self) -> Option<u64> {
        Some(self.high_watermark)
    }

    fn snapshot(&mut self) -> Vec<u8> {
        // The Raft log is compacted up to this point once this returns:
        // every byte the manifest names must be durable first.
        if let Some(f) = self.active.as_mut() {
            if let Err(e) = f.sync() {
                self.fatal("sync for snapshot", e);
            }
        }
        let m = self.manifest();
        let data = postcard::to_stdvec(&m).expect("manifests encode");
        let path = self.dir.join("MANIFEST");
        if let Err(e) = write_atomic(self.opts.disk.as_ref(), &path, &data) {
            self.fatal("write manifest", e);
        }
        data
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), String> {
        let m = Manifest::decode(data)?;
        self.adopt(index, &m)?;
        if chronik_core::planted::active(chronik_core::planted::Bug::SnapshotInstallOffByOne)
            && self.high_watermark > self.log_start_offset
        {
            // Planted bug (simulation builds only): one record short.
            self.high_watermark -= 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A framed batch whose body is `body`, with a valid checksum.
    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn a_batch_round_trips() {
        let recs = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")];
        let b = decode_batch(&encode_batch(7, 99, &recs))
            .expect("decodes")
            .expect("whole");
        assert_eq!((b.base_offset, b.timestamp_ms, b.records), (7, 99, recs));
    }

    #[test]
    fn a_record_count_the_batch_cannot_hold_is_refused_before_allocating() {
        // Checksummed (as a peer's streamed segment would be), claiming
        // four billion records in four bytes.
        let mut body = 0u64.to_le_bytes().to_vec();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]);
        let err = decode_batch(&frame(&body)).err().expect("refused");
        assert!(
            err.contains("claims 4294967295 records in 4 bytes"),
            "{err}"
        );
    }
}
