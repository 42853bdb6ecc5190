//! Commit path of the core: a 3-replica in-memory cluster (no network or
//! disk latency), records committed per second with 100-byte records in
//! batches of 1 and 100. Measures the engine's own cost: raft-rs stepping,
//! ready handling, apply and reply, on three engines in one thread.
//!
//! `cargo bench -p chronik-benches --bench commit_path`

use bytes::Bytes;
use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::PartitionId;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Produces in flight per measured iteration.
const IN_FLIGHT: usize = 64;
const RECORD_SIZE: usize = 100;

fn commit_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_path");
    group.measurement_time(Duration::from_secs(5));
    for batch in [1usize, 100] {
        let mut cfg = ClusterConfig::new(3, 1);
        cfg.checks = false;
        // The in-memory record log snapshots its whole content: keep that
        // out of the commit path being measured.
        cfg.log_compact_threshold_entries = 1_000_000;
        let mut cluster = Cluster::with_config(cfg);
        let p = cluster
            .create_topic("bench", 1, 3)
            .expect("topic")
            .remove(0);
        let g = cluster.group_of(&p).expect("group");
        let leader = cluster.leader_of(g).expect("leader");
        let records: Vec<Bytes> = (0..batch)
            .map(|_| Bytes::from(vec![b'x'; RECORD_SIZE]))
            .collect();
        group.throughput(Throughput::Elements((IN_FLIGHT * batch) as u64));
        group.bench_with_input(
            BenchmarkId::new("records", format!("batch_{batch}")),
            &batch,
            |b, _| b.iter(|| produce_round(&mut cluster, leader, &p, &records)),
        );
    }
    group.finish();
}

fn produce_round(c: &mut Cluster, leader: u64, p: &PartitionId, records: &[Bytes]) {
    let ids: Vec<u64> = (0..IN_FLIGHT)
        .map(|_| c.produce(leader, p, records.to_vec()))
        .collect();
    let last = *ids.last().expect("in flight");
    assert!(
        c.run_until(10_000, |c| c.replies.contains_key(&last)),
        "produce committed"
    );
    for id in ids {
        assert!(
            matches!(c.replies.remove(&id), Some(Ok(_))),
            "produce acknowledged"
        );
    }
}

criterion_group!(benches, commit_path);
criterion_main!(benches);
