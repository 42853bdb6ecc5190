//! Property tests: random fault schedules against whole in-memory clusters.
//! Every case checks election safety, state machine safety (same commands,
//! same order, exactly once per incarnation), no lost acknowledged produce,
//! unique dense offsets, linearizable fetches and identical metadata at
//! identical applied indexes.

use bytes::Bytes;
use chronik_core::testing::{Cluster, ClusterConfig, Faults};
use chronik_core::{NodeId, PartitionId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Produce {
        partition: u32,
        records: u8,
    },
    Fetch {
        partition: u32,
    },
    /// A linearizable read served by any replica (ReadIndex from the leader).
    FollowerFetch {
        partition: u32,
        node: u8,
    },
    Crash(u8),
    Restart(u8),
    CrashLeader {
        partition: u32,
    },
    Isolate(u8),
    IsolateLeader {
        partition: u32,
    },
    SplitHalves,
    OneWay(u8, u8),
    Heal,
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u32..2, 1u8..4).prop_map(|(partition, records)| Op::Produce { partition, records }),
        3 => (0u32..2).prop_map(|partition| Op::Fetch { partition }),
        2 => (0u32..2, any::<u8>()).prop_map(|(partition, node)| Op::FollowerFetch { partition, node }),
        1 => any::<u8>().prop_map(Op::Crash),
        2 => any::<u8>().prop_map(Op::Restart),
        1 => (0u32..2).prop_map(|partition| Op::CrashLeader { partition }),
        1 => any::<u8>().prop_map(Op::Isolate),
        1 => (0u32..2).prop_map(|partition| Op::IsolateLeader { partition }),
        1 => Just(Op::SplitHalves),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::OneWay(a, b)),
        2 => Just(Op::Heal),
        4 => (1u16..300).prop_map(Op::Wait),
    ]
}

#[derive(Clone, Debug)]
struct Schedule {
    seed: u64,
    nodes: u64,
    faults: Faults,
    compact_threshold: u64,
    ops: Vec<Op>,
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        any::<u64>(),
        3u64..=5,
        0.0f64..0.2,
        0.0f64..0.1,
        1u64..40,
        0u64..6,
        5u64..60,
        proptest::collection::vec(op(), 5..40),
    )
        .prop_map(
            |(seed, nodes, loss, duplicate, delay_max, persist_max, compact_threshold, ops)| {
                Schedule {
                    seed,
                    nodes,
                    faults: Faults {
                        loss,
                        duplicate,
                        delay_ms: (1, delay_max),
                        persist_ms: (0, persist_max),
                    },
                    compact_threshold,
                    ops,
                }
            },
        )
}

/// What one run exercised.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    trace_hash: u64,
    acked: u64,
    fetches_verified: u64,
    elections: u64,
    applied: u64,
}

/// Runs a schedule, checking every invariant.
fn run(s: &Schedule) -> Stats {
    let mut cfg = ClusterConfig::new(s.nodes, s.seed);
    cfg.log_compact_threshold_entries = s.compact_threshold;
    let mut c = Cluster::with_config(cfg);
    let parts = c
        .create_topic("t", 2, 3)
        .expect("topic on a healthy cluster");
    c.set_faults(s.faults.clone());
    let pick = |x: u8| NodeId::from(x) % s.nodes + 1;
    let leader = |c: &Cluster, p: &PartitionId| c.group_of(p).and_then(|g| c.leader_of(g));
    let mut value = 0u64;
    for op in &s.ops {
        match op {
            Op::Produce { partition, records } => {
                let p = &parts[*partition as usize];
                if let Some(l) = leader(&c, p) {
                    let recs = (0..*records)
                        .map(|_| {
                            value += 1;
                            Bytes::from(format!("v{value}"))
                        })
                        .collect();
                    c.produce(l, p, recs);
                }
            }
            Op::Fetch { partition } => {
                let p = &parts[*partition as usize];
                if let Some(l) = leader(&c, p) {
                    c.fetch(l, p, 0);
                }
            }
            Op::FollowerFetch { partition, node } => {
                let p = &parts[*partition as usize];
                let n = pick(*node);
                if c.is_up(n) {
                    c.fetch_with(n, p, 0, chronik_core::ReadConsistency::Follower);
                }
            }
            Op::Crash(n) => c.crash(pick(*n)),
            Op::Restart(n) => c.restart(pick(*n)),
            Op::CrashLeader { partition } => {
                if let Some(l) = leader(&c, &parts[*partition as usize]) {
                    c.crash(l);
                }
            }
            Op::Isolate(n) => c.isolate(pick(*n)),
            Op::IsolateLeader { partition } => {
                if let Some(l) = leader(&c, &parts[*partition as usize]) {
                    c.isolate(l);
                }
            }
            Op::SplitHalves => {
                let half: Vec<NodeId> = (1..=s.nodes / 2).collect();
                c.partition(&half);
            }
            Op::OneWay(a, b) => c.cut_one_way(pick(*a), pick(*b)),
            Op::Heal => c.heal(),
            Op::Wait(ms) => c.run_for(u64::from(*ms)),
        }
        c.run_for(5);
    }
    assert!(c.converge(60_000), "cluster converges after faults heal");
    c.check_acked_durable();
    c.checker.assert_ok();
    Stats {
        trace_hash: c.checker.trace_hash(),
        acked: c.acked.len() as u64,
        fetches_verified: c.checker.fetches_verified,
        elections: c.checker.leader_elections,
        applied: c.checker.applied_count,
    }
}

/// The random schedules are not vacuous: across a fixed sample they
/// acknowledge writes, verify reads and elect leaders many times over.
#[test]
fn schedules_exercise_the_cluster() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut total = Stats::default();
    for _ in 0..100 {
        let s = schedule()
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        let st = run(&s);
        total.acked += st.acked;
        total.fetches_verified += st.fetches_verified;
        total.elections += st.elections;
        total.applied += st.applied;
    }
    println!("100 schedules: {total:?}");
    assert!(total.acked > 200, "{total:?}");
    assert!(total.fetches_verified > 50, "{total:?}");
    assert!(total.elections > 500, "{total:?}");
}

/// 1,000 cases by default; `PROPTEST_CASES=N` runs more (soak runs).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .max(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_faults(s in schedule()) {
        run(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    /// The seed decides the whole run: the same schedule twice gives the
    /// same trace of elections, applies and replies.
    #[test]
    fn same_seed_same_trace(s in schedule()) {
        prop_assert_eq!(run(&s).trace_hash, run(&s).trace_hash);
    }
}
