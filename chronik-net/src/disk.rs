//! All file access of a node goes through [`Disk`], so the simulator can
//! plug in a disk that loses unsynced writes on a crash ([`MemDisk`]) where
//! the real one ([`FsDisk`]) uses `std::fs`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file that is only ever appended to.
pub trait DiskFile: Send {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes every byte written so far durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
}

/// The file operations Chronik needs. Directory changes (create, rename,
/// remove) are durable once `sync_dir` of their directory returns.
pub trait Disk: Send + Sync {
    /// Opens `path` for appending, creating it if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Size of `path` in bytes (written so far, synced or not).
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Up to `len` bytes of `path` from byte `offset` (fewer at the end).
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// File names (not paths) in `dir`, sorted. A missing dir is empty.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Cuts `path` to `len` bytes, durably.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// How long the syncs made since the last call would have taken on the
    /// device being modelled. Real disks block for real and say zero; a
    /// simulated disk returns its modelled fsync latency, which the WAL
    /// writer then waits out before declaring anything durable.
    fn take_sync_latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Writes `data` to `path` atomically: a temp file, fsync, rename over
/// `path`, fsync of the directory. A crash leaves either the old file or the
/// new one, never a mix.
pub fn write_atomic(disk: &dyn Disk, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if disk.read(&tmp).is_ok() {
        disk.remove(&tmp)?;
    }
    let mut f = disk.open_append(&tmp)?;
    f.write_all(data)?;
    f.sync()?;
    drop(f);
    disk.rename(&tmp, path)?;
    disk.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsDisk;

struct FsFile(std::fs::File);

impl DiskFile for FsFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Disk for FsDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Box::new(FsFile(f)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(path)?;
        // `len` may come from a request: size the buffer by what the file
        // holds past `offset`, not by what was asked.
        let avail = f.metadata()?.len().saturating_sub(offset);
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity((len as u64).min(avail) as usize);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in rd {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[derive(Default)]
struct MemFileState {
    durable: Vec<u8>,
    /// Written after the last sync: lost (or torn) on a crash.
    pending: Vec<u8>,
}

/// An injected disk error: which call fails, how, and on which files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFault {
    /// `EIO` (5) or `ENOSPC` (28).
    pub errno: i32,
    /// Fail syncs (`true`) or writes (`false`).
    pub on_sync: bool,
    /// Only paths containing this fail (`""`: every file).
    pub path_contains: String,
}

impl DiskFault {
    fn hits(&self, path: &Path, sync: bool) -> bool {
        self.on_sync == sync && path.to_string_lossy().contains(&self.path_contains)
    }

    fn error(&self, path: &Path) -> io::Error {
        let e = io::Error::from_raw_os_error(self.errno);
        io::Error::new(e.kind(), format!("{}: {e} (injected)", path.display()))
    }
}

/// A directory change not yet made durable by a `sync_dir` of `dir`: a
/// crash undoes it.
struct PendingDirOp {
    dir: PathBuf,
    op: DirOp,
}

enum DirOp {
    Create(PathBuf),
    /// `replaced`: the synced bytes of the file `to` held before.
    Rename {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<Vec<u8>>,
    },
    /// `synced`: the file's synced bytes.
    Remove {
        path: PathBuf,
        synced: Vec<u8>,
    },
}

#[derive(Default)]
struct MemDiskState {
    /// While set, matching writes or syncs fail and change nothing.
    fault: Option<DiskFault>,
    files: BTreeMap<PathBuf, MemFileState>,
    /// Creates, renames and removes not yet covered by a `sync_dir` of
    /// their (destination) directory, oldest first.
    dir_ops: Vec<PendingDirOp>,
    dirs: std::collections::BTreeSet<PathBuf>,
    /// Modelled fsync latency, if any: `(min_us, max_us, rng state)`.
    sync_latency: Option<(u64, u64, u64)>,
    /// Latency owed by syncs not yet reported by `take_sync_latency`.
    latency_owed_us: u64,
}

impl MemDiskState {
    fn dir_op(&mut self, path: &Path, op: DirOp) {
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        self.dir_ops.push(PendingDirOp { dir, op });
    }

    /// A crash: directory changes no `sync_dir` covered are undone, newest
    /// first (a file created since is gone, a renamed one is back under
    /// its old name, a removed one is back with its synced bytes).
    fn undo_dir_ops(&mut self) {
        while let Some(PendingDirOp { op, .. }) = self.dir_ops.pop() {
            match op {
                DirOp::Create(path) => {
                    self.files.remove(&path);
                }
                DirOp::Rename { from, to, replaced } => {
                    if let Some(f) = self.files.remove(&to) {
                        self.files.insert(from, f);
                    }
                    if let Some(durable) = replaced {
                        self.files.insert(
                            to,
                            MemFileState {
                                durable,
                                pending: Vec::new(),
                            },
                        );
                    }
                }
                DirOp::Remove { path, synced } => {
                    self.files.insert(
                        path,
                        MemFileState {
                            durable: synced,
                            pending: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    fn charge_sync(&mut self) {
        if let Some((min, max, rng)) = &mut self.sync_latency {
            // xorshift64: deterministic from the seed the simulator gave.
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            self.latency_owed_us += *min + *rng % (*max - *min + 1);
        }
    }
}

/// An in-memory disk that forgets unsynced writes when told the node
/// crashed, and may tear the last one. It outlives the node it serves.
#[derive(Clone, Default)]
pub struct MemDisk {
    state: Arc<Mutex<MemDiskState>>,
}

struct MemFile {
    state: Arc<Mutex<MemDiskState>>,
    path: PathBuf,
}

impl DiskFile for MemFile {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        if let Some(fault) = s.fault.as_ref().filter(|f| f.hits(&self.path, false)) {
            return Err(fault.error(&self.path));
        }
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed"))?;
        f.pending.extend_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut s = self.state.lock();
        if let Some(fault) = s.fault.as_ref().filter(|f| f.hits(&self.path, true)) {
            return Err(fault.error(&self.path));
        }
        let f = s
            .files
            .get_mut(&self.path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file removed"))?;
        let pending = std::mem::take(&mut f.pending);
        f.durable.extend_from_slice(&pending);
        s.charge_sync();
        Ok(())
    }
}

impl MemDisk {
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// Models fsync latency: from now on every sync costs a duration drawn
    /// uniformly from `range` (seeded by `seed`); `None` makes syncs free.
    pub fn set_sync_latency(&self, range: Option<std::ops::Range<std::time::Duration>>, seed: u64) {
        let mut s = self.state.lock();
        s.sync_latency = range.map(|r| {
            let min = r.start.as_micros() as u64;
            let max = (r.end.as_micros() as u64).max(min + 1) - 1;
            (min, max, seed | 1)
        });
    }

    /// The node crashed: unsynced bytes are lost, except that the first
    /// `keep_torn(len)` bytes of each file's unsynced tail survive (a torn
    /// write). Pass `|_| 0` to lose them all.
    pub fn crash(&self, mut keep_torn: impl FnMut(usize) -> usize) {
        let mut s = self.state.lock();
        for f in s.files.values_mut() {
            let pending = std::mem::take(&mut f.pending);
            let keep = keep_torn(pending.len()).min(pending.len());
            f.durable.extend_from_slice(&pending[..keep]);
        }
        s.undo_dir_ops();
    }

    /// The node crashed in the middle of writing: every file keeps its
    /// unsynced tail at full length, but a stretch of it never reached the
    /// platter and reads back as zeros (sectors written out of order).
    pub fn crash_scrambled(&self, seed: u64) {
        let mut s = self.state.lock();
        for f in s.files.values_mut() {
            let mut pending = std::mem::take(&mut f.pending);
            if !pending.is_empty() {
                let start = (seed as usize) % pending.len();
                let end = (start + 1 + (seed as usize >> 16) % 512).min(pending.len());
                pending[start..end].iter_mut().for_each(|b| *b = 0);
            }
            f.durable.extend_from_slice(&pending);
        }
        s.undo_dir_ops();
    }

    /// Flips one byte of a file (for corruption tests).
    pub fn corrupt(&self, path: &Path, offset: usize) -> bool {
        let mut s = self.state.lock();
        match s
            .files
            .get_mut(path)
            .and_then(|f| f.durable.get_mut(offset))
        {
            Some(b) => {
                *b ^= 0xff;
                true
            }
            None => false,
        }
    }

    /// From now on (until `None`), writes or syncs of matching files fail
    /// with the fault's error and change nothing.
    pub fn set_fault(&self, fault: Option<DiskFault>) {
        self.state.lock().fault = fault;
    }

    /// The fault injected now, if any.
    pub fn fault(&self) -> Option<DiskFault> {
        self.state.lock().fault.clone()
    }

    /// A separate disk holding only what this one has made durable, as a
    /// crash right now would leave it with no torn tail: lets a checker
    /// read what would be recovered without touching this disk.
    pub fn durable_copy(&self) -> MemDisk {
        let s = self.state.lock();
        let copy_op = |o: &PendingDirOp| PendingDirOp {
            dir: o.dir.clone(),
            op: match &o.op {
                DirOp::Create(p) => DirOp::Create(p.clone()),
                DirOp::Rename { from, to, replaced } => DirOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    replaced: replaced.clone(),
                },
                DirOp::Remove { path, synced } => DirOp::Remove {
                    path: path.clone(),
                    synced: synced.clone(),
                },
            },
        };
        let mut copy = MemDiskState {
            files: s
                .files
                .iter()
                .map(|(p, f)| {
                    (
                        p.clone(),
                        MemFileState {
                            durable: f.durable.clone(),
                            pending: Vec::new(),
                        },
                    )
                })
                .collect(),
            dir_ops: s.dir_ops.iter().map(copy_op).collect(),
            dirs: s.dirs.clone(),
            ..MemDiskState::default()
        };
        copy.undo_dir_ops();
        MemDisk {
            state: Arc::new(Mutex::new(copy)),
        }
    }

    /// Durable length of a file.
    pub fn len(&self, path: &Path) -> Option<usize> {
        self.state.lock().files.get(path).map(|f| f.durable.len())
    }
}

impl Disk for MemDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut s = self.state.lock();
        if !s.files.contains_key(path) {
            s.files.insert(path.to_path_buf(), MemFileState::default());
            s.dir_op(path, DirOp::Create(path.to_path_buf()));
        }
        drop(s);
        Ok(Box::new(MemFile {
            state: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state.lock();
        let f = s.files.get(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
        })?;
        let mut v = f.durable.clone();
        v.extend_from_slice(&f.pending);
        Ok(v)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = self.state.lock();
        let f = s.files.get(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
        })?;
        Ok((f.durable.len() + f.pending.len()) as u64)
    }

    fn read_range(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let all = self.read(path)?;
        let start = (offset as usize).min(all.len());
        let end = start.saturating_add(len).min(all.len());
        Ok(all[start..end].to_vec())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        // Files and subdirectories, as a real directory listing has them.
        let s = self.state.lock();
        let mut names: Vec<String> = s
            .files
            .keys()
            .chain(s.dirs.iter())
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.lock().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        let f = s.files.get_mut(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
        })?;
        let mut all = std::mem::take(&mut f.durable);
        all.extend_from_slice(&f.pending);
        all.truncate(len as usize);
        f.durable = all;
        f.pending.clear();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let f = s.files.remove(from).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}", from.display()))
        })?;
        let replaced = s.files.insert(to.to_path_buf(), f).map(|old| old.durable);
        s.dir_op(
            to,
            DirOp::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                replaced,
            },
        );
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let f = s.files.remove(path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
        })?;
        s.dir_op(
            path,
            DirOp::Remove {
                path: path.to_path_buf(),
                synced: f.durable,
            },
        );
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.dir_ops.retain(|o| o.dir != dir);
        s.charge_sync();
        Ok(())
    }

    fn take_sync_latency(&self) -> std::time::Duration {
        let mut s = self.state.lock();
        std::time::Duration::from_micros(std::mem::take(&mut s.latency_owed_us))
    }
}
