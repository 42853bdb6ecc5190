//! The term and vote file: each group's term and vote, kept apart from the
//! WAL segments so that cutting a corrupt record (and every record after
//! it) away cannot take a promise with it.
//!
//! The file is rewritten (atomically, synced) before the WAL batch that
//! raises a term or casts a vote, so it is never behind a vote that left
//! the node. It also lists the groups still repairing their log after such
//! a cut (see `chronik_core::DurableState::repair`), so a second crash
//! during the repair does not forget that the log is incomplete.
//!
//! Layout: `[crc32c(body): u32 LE][body]`, the body postcard-encoded.

use crate::disk::{write_atomic, Disk};
use chronik_core::GroupId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file's name in the WAL directory.
pub const VOTES_FILE: &str = "votes";

/// Version of the layout below.
const VOTES_FORMAT: u32 = 1;

/// What is kept of one group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub term: u64,
    pub vote: u64,
    /// The group's log may lack entries this node acknowledged.
    pub repair: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    format: u32,
    groups: BTreeMap<GroupId, Kept>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(VOTES_FILE)
}

/// Reads the file: `Ok(None)` when there is none (a WAL written before the
/// file existed, or a new node), `Err` with the reason when it is damaged.
pub fn read(disk: &dyn Disk, dir: &Path) -> Result<Option<BTreeMap<GroupId, Kept>>, String> {
    let data = match disk.read(&path(dir)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if data.len() < 4 {
        return Err("shorter than its checksum".into());
    }
    let crc = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let actual = crc32c::crc32c(&data[4..]);
    if crc != actual {
        return Err(format!(
            "checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ));
    }
    let body: Body = postcard::from_bytes(&data[4..]).map_err(|e| format!("undecodable: {e}"))?;
    if body.format != VOTES_FORMAT {
        return Err(format!(
            "format {} (this build reads {VOTES_FORMAT})",
            body.format
        ));
    }
    Ok(Some(body.groups))
}

/// Replaces the file, durably; returns the bytes written.
pub fn write(
    disk: &dyn Disk,
    dir: &Path,
    groups: &BTreeMap<GroupId, Kept>,
) -> std::io::Result<u64> {
    let body = postcard::to_stdvec(&Body {
        format: VOTES_FORMAT,
        groups: groups.clone(),
    })
    .expect("the votes file encodes");
    let mut data = Vec::with_capacity(body.len() + 4);
    data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    data.extend_from_slice(&body);
    if chronik_core::planted::active(chronik_core::planted::Bug::SkipDirSync) {
        // Planted bug (simulation builds only): no directory is synced,
        // this file's rename included (its sync would cover the WAL's
        // new segments too).
        let tmp = path(dir).with_extension("tmp");
        let mut f = disk.open_append(&tmp)?;
        f.write_all(&data)?;
        f.sync()?;
        drop(f);
        disk.rename(&tmp, &path(dir))?;
        return Ok(data.len() as u64);
    }
    write_atomic(disk, &path(dir), &data)?;
    Ok(data.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn round_trips_and_refuses_damage() {
        let disk = MemDisk::new();
        let dir = Path::new("/w");
        disk.create_dir_all(dir).unwrap();
        assert_eq!(read(&disk, dir), Ok(None));
        let mut groups = BTreeMap::new();
        groups.insert(
            0,
            Kept {
                term: 7,
                vote: 2,
                repair: false,
            },
        );
        groups.insert(
            4,
            Kept {
                term: 3,
                vote: 0,
                repair: true,
            },
        );
        write(&disk, dir, &groups).unwrap();
        assert_eq!(read(&disk, dir), Ok(Some(groups)));
        assert!(disk.corrupt(&path(dir), 6));
        let err = read(&disk, dir).unwrap_err();
        assert!(err.contains("checksum mismatch"), "{err}");
    }
}
