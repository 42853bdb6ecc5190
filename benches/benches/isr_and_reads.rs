//! The pure per-group bookkeeping on the hot path: the ISR tracker (run on
//! every leader's ready, per partition) and the ReadIndex queue (every
//! linearizable read passes through it).
//!
//! `cargo bench -p chronik-benches --bench isr_and_reads`

use chronik_core::isr::IsrTracker;
use chronik_core::read_index::ReadQueue;
use chronik_core::{IsrPolicy, Time};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;

const POLICY: IsrPolicy = IsrPolicy {
    max_lag_entries: 10_000,
    max_lag_ms: 10_000,
};

/// One leader's tick: fold in the followers' matched indexes, read the
/// lags, decide the ISR; the log grows by 10 entries per millisecond and
/// one follower trails by 50 entries.
fn isr_tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("isr_tracker");
    for replicas in [3u64, 5] {
        let nodes: Vec<u64> = (1..=replicas).collect();
        let active: BTreeSet<u64> = nodes.iter().copied().collect();
        let mut tracker = IsrTracker::new(Time(0), &POLICY, &nodes, 0);
        let mut now = 0u64;
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("observe_lags_decide", replicas),
            &replicas,
            |b, _| {
                b.iter(|| {
                    now += 1;
                    let last = now * 10;
                    let matched: BTreeMap<u64, u64> = nodes
                        .iter()
                        .map(|n| (*n, if *n == replicas { last - 50 } else { last }))
                        .collect();
                    tracker.observe(Time(now), last, &matched, &active);
                    let lags = tracker.lags(Time(now), &POLICY, last, &nodes, &matched);
                    let change =
                        tracker.decide(Time(now), &POLICY, 1, last, last, &nodes, &nodes, &matched);
                    black_box((lags, change))
                })
            },
        );
    }
    group.finish();
}

/// A round of `n` queued reads: queued, one round started, confirmed,
/// served once applied.
fn read_queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_queue");
    for n in [1usize, 64] {
        let mut q: ReadQueue<u64> = ReadQueue::default();
        let mut round = 0u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("round", n), &n, |b, &n| {
            b.iter(|| {
                round += 1;
                for i in 0..n as u64 {
                    q.push(round * 1_000 + i, i, Time(round + 5_000));
                }
                let ctx = round.to_be_bytes().to_vec();
                assert!(q.start_round(ctx.clone(), 5_000, Time(round)));
                q.confirmed(&ctx, round);
                let served = q.ready(round);
                assert_eq!(served.len(), n);
                black_box(served)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, isr_tracker, read_queue);
criterion_main!(benches);
