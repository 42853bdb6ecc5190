//! Chronik's IO layer: drives the sans-IO engine of `chronik-core` with
//! tokio and tonic.
//!
//! - [`node::Node::start`] runs a whole node inside any tokio application:
//!   WAL recovery, the driver task that owns the engine, the peer transport
//!   (one gRPC stream per peer, all groups batched), the client and admin
//!   gRPC APIs and `/metrics`, over TLS when configured ([`tls`]).
//! - [`client::Client`] talks to a cluster: finds leaders, follows hints,
//!   retries what is retriable.
//! - [`wal::Wal`] is the write-ahead log with group commit, behind a
//!   [`disk::Disk`] so the simulator can lose unsynced writes.
//!
//! The same code builds with `RUSTFLAGS="--cfg madsim"`, where madsim's
//! tokio and tonic stand in.
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

pub mod auth;
pub mod client;
pub mod config;
mod convert;
pub mod disk;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod gate;
mod graceful;
#[cfg(not(madsim))]
mod health;
pub mod history;
mod join;
mod listen;
pub mod metrics;
pub mod node;
pub mod observer;
mod partition_io;
pub mod partition_store;
pub mod proto;
mod rebalance_rpc;
pub mod segment_files;
mod service;
mod throttle;
pub mod tls;
mod transport;
pub mod wal;

pub use client::{Client, ClientError, FetchResult, RetryPolicy};
pub use config::NodeConfig;
pub use driver::Inspection;
pub use graceful::Stopping;
pub use node::{Node, NodeError, NodeHandle};
pub use observer::{CrashPoint, EngineObserver};
pub use tls::{ClientTls, TlsConfig, TlsError};
