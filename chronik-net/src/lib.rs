//! Chronik's IO layer: durable storage for the sans-IO engine of
//! `chronik-core` (the WAL, behind a [`disk::Disk`] trait so the simulator
//! can lose unsynced writes).
//!
//! ```
//! use chronik_net::disk::MemDisk;
//! use chronik_net::wal::{Wal, WalConfig};
//! use std::sync::Arc;
//!
//! let disk = Arc::new(MemDisk::new());
//! let (mut wal, recovered, _report) = Wal::open(disk.clone(), WalConfig::new("/data/wal")).unwrap();
//! assert!(recovered.groups.is_empty());
//! // Hand every `Output::Persist` batch to `wal.append(&[batch])`, then
//! // report `engine.handle_persisted(now, batch.ticket)`.
//! # let _ = &mut wal;
//! ```

pub mod disk;
pub mod wal;
