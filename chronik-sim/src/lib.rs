//! Deterministic simulation of whole Chronik clusters under madsim: the
//! real `chronik-net` driver and `chronik-core` engine, each node in its own
//! madsim node with its own IP and a `MemDisk` that outlives it and loses
//! unsynced writes when the node is killed.
//!
//! A seed decides the cluster size, topics, fault plan and workload
//! ([`scenario::Plan`]); [`scenario::run`] executes it and returns a
//! [`scenario::RunReport`] with the history verdict, the node-side
//! invariant violations and a trace hash for determinism checks.
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p chronik-sim
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo run -p chronik-sim -- --seeds 1..=2000
//! ```
//! `MADSIM_TEST_SEED=N` replays one seed of the test; the runner prints
//! seeds per minute, faults by kind and the replay command of each failure.

pub mod history;
pub mod node_checker;
pub mod stored;

#[cfg(madsim)]
pub mod scenario;
#[cfg(madsim)]
mod sim;

#[cfg(madsim)]
pub use sim::*;
