//! The simulated disk's crash model: unsynced bytes are lost, and so are
//! directory changes no `sync_dir` covered.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use chronik_net::disk::{Disk, MemDisk};
use std::path::Path;

fn write_synced(disk: &MemDisk, path: &str, data: &[u8]) {
    let mut f = disk.open_append(Path::new(path)).unwrap();
    f.write_all(data).unwrap();
    f.sync().unwrap();
}

#[test]
fn a_created_file_survives_a_crash_only_after_its_directory_is_synced() {
    let disk = MemDisk::new();
    write_synced(&disk, "/d/a", b"synced bytes");
    disk.crash(|_| 0);
    assert!(
        disk.read(Path::new("/d/a")).is_err(),
        "directory never synced"
    );

    write_synced(&disk, "/d/a", b"synced bytes");
    disk.sync_dir(Path::new("/d")).unwrap();
    disk.crash(|_| 0);
    assert_eq!(disk.read(Path::new("/d/a")).unwrap(), b"synced bytes");
}

#[test]
fn unsynced_renames_and_removes_are_undone_by_a_crash() {
    let disk = MemDisk::new();
    write_synced(&disk, "/d/old", b"old");
    write_synced(&disk, "/d/tmp", b"new");
    disk.sync_dir(Path::new("/d")).unwrap();
    disk.rename(Path::new("/d/tmp"), Path::new("/d/old"))
        .unwrap();
    disk.remove(Path::new("/d/old")).unwrap();
    assert!(disk.read(Path::new("/d/old")).is_err());
    disk.crash(|_| 0);
    // Both changes undone: the original files are back.
    assert_eq!(disk.read(Path::new("/d/old")).unwrap(), b"old");
    assert_eq!(disk.read(Path::new("/d/tmp")).unwrap(), b"new");

    disk.rename(Path::new("/d/tmp"), Path::new("/d/old"))
        .unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    disk.crash(|_| 0);
    assert_eq!(disk.read(Path::new("/d/old")).unwrap(), b"new");
    assert!(disk.read(Path::new("/d/tmp")).is_err());
}

#[test]
fn a_durable_copy_is_what_a_crash_would_leave() {
    let disk = MemDisk::new();
    write_synced(&disk, "/d/a", b"a");
    disk.sync_dir(Path::new("/d")).unwrap();
    write_synced(&disk, "/d/b", b"b");
    let mut f = disk.open_append(Path::new("/d/a")).unwrap();
    f.write_all(b" unsynced").unwrap();
    let copy = disk.durable_copy();
    assert_eq!(copy.read(Path::new("/d/a")).unwrap(), b"a");
    assert!(copy.read(Path::new("/d/b")).is_err());
    // The original is untouched.
    assert_eq!(disk.read(Path::new("/d/a")).unwrap(), b"a unsynced");
}
