//! Whole in-memory clusters driven by fuzz bytes: each byte pair picks an
//! operation (produce, fetch, crash, restart, isolate, heal, wait). raft-rs
//! panics on inconsistent messages, so the fuzzer drives clusters rather
//! than single engines (a step() fed messages invalid for the node's state
//! would abort under libFuzzer for no real bug); any panic or invariant
//! violation is a finding.
#![no_main]

use bytes::Bytes;
use chronik_core::testing::{Cluster, ClusterConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, ops)) = data.split_first() else { return };
    let mut cfg = ClusterConfig::new(3, u64::from(seed));
    cfg.log_compact_threshold_entries = 8;
    let mut c = Cluster::with_config(cfg);
    let Ok(parts) = c.create_topic("f", 2, 3) else { return };
    let mut value = 0u64;
    for pair in ops.chunks(2).take(64) {
        let (op, arg) = (pair[0], pair.get(1).copied().unwrap_or(0));
        let node = u64::from(arg % 3) + 1;
        let p = &parts[usize::from(arg & 1)];
        let leader = c.group_of(p).and_then(|g| c.leader_of(g));
        match op % 8 {
            0 | 1 => {
                if let Some(l) = leader {
                    value += 1;
                    c.produce(l, p, vec![Bytes::from(format!("v{value}"))]);
                }
            }
            2 => {
                if let Some(l) = leader {
                    c.fetch(l, p, 0);
                }
            }
            3 => c.crash(node),
            4 => c.restart(node),
            5 => c.isolate(node),
            6 => c.heal(),
            _ => c.run_for(u64::from(arg) * 4),
        }
        c.run_for(5);
    }
    assert!(c.converge(60_000), "cluster converges after faults heal");
    c.check_acked_durable();
    c.checker.assert_ok();
});
