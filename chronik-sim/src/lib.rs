//! Deterministic simulation of whole Chronik clusters under madsim: the
//! real `chronik-net` driver and `chronik-core` engine, each node in its own
//! madsim node with its own IP and a [`MemDisk`] that outlives it and loses
//! unsynced writes when the node is killed.
//!
//! Build and run with
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim cargo test -p chronik-sim`;
//! `MADSIM_TEST_SEED=N` picks a seed, `MADSIM_TEST_NUM=K` runs K seeds.

pub mod history;

#[cfg(madsim)]
mod sim;

#[cfg(madsim)]
pub use sim::*;
