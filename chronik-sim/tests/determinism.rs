//! The same seed twice gives the same trace: every node event (elections,
//! applied entries with their digests, snapshots) and every client op, in
//! order, hashed. A difference means something escaped the simulator's
//! control (wall clock, OS randomness, unordered iteration); rerun the seed
//! with `MADSIM_TEST_CHECK_DETERMINISM=1` to find where.

#![cfg(madsim)]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use chronik_sim::scenario::{run, RunReport};

fn run_seed(seed: u64) -> RunReport {
    std::thread::spawn(move || {
        let rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.block_on(run(false))
    })
    .join()
    .unwrap_or_else(|_| panic!("seed {seed} panicked"))
}

#[test]
fn same_seed_same_trace() {
    let seeds: Vec<u64> = std::env::var("CHRONIK_DETERMINISM_SEEDS")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| (1..=30).collect());
    let mut hashes = Vec::new();
    for seed in seeds {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert!(!a.failed(), "seed {seed} failed: {}", a.failure());
        assert!(
            a.ops > 0 && a.node.entries_applied > 0,
            "seed {seed} did nothing"
        );
        assert_eq!(
            (a.trace_hash, a.ops, a.node.entries_applied),
            (b.trace_hash, b.ops, b.node.entries_applied),
            "seed {seed} ran differently twice"
        );
        hashes.push((seed, a.trace_hash));
    }
    // Different seeds must explore different executions.
    let distinct: std::collections::BTreeSet<u64> = hashes.iter().map(|(_, h)| *h).collect();
    assert_eq!(distinct.len(), hashes.len(), "seeds collided: {hashes:?}");
}
