//! Property tests: random fault schedules against whole in-memory clusters.
//! Every case checks election safety, state machine safety (same commands,
//! same order, exactly once per incarnation), state machines equal at equal
//! applied index, no lost acknowledged produce, unique dense offsets,
//! linearizable fetches, acknowledgements against the ISR and identical
//! metadata at identical applied indexes.
//!
//! A case runs two topics (three partitions) whose `min_insync_replicas`
//! it draws from 1 to 3, produces through any node (following the
//! leader hint of a `NOT_LEADER` answer, as a client does), and adds and
//! removes nodes while the faults strike.

use bytes::Bytes;
use chronik_core::membership::MembershipChange;
use chronik_core::testing::{Cluster, ClusterConfig, Faults};
use chronik_core::{Command, Error, NodeId, PartitionId, RequestId, METADATA_GROUP};
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
    /// A produce sent to any node: a follower answers `NOT_LEADER` with a
    /// hint, and the produce is sent again there.
    ProduceVia {
        partition: u32,
        node: u8,
    },
    /// A new node starts and asks the metadata leader to add it.
    AddNode,
    /// The metadata leader is asked to remove a node (refused when unsafe).
    RemoveNode(u8),
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
        6 => (0u32..PARTITIONS, 1u8..4).prop_map(|(partition, records)| Op::Produce { partition, records }),
        3 => (0u32..PARTITIONS).prop_map(|partition| Op::Fetch { partition }),
        2 => (0u32..PARTITIONS, any::<u8>()).prop_map(|(partition, node)| Op::FollowerFetch { partition, node }),
        2 => (0u32..PARTITIONS, any::<u8>()).prop_map(|(partition, node)| Op::ProduceVia { partition, node }),
        1 => Just(Op::AddNode),
        1 => any::<u8>().prop_map(Op::RemoveNode),
        1 => any::<u8>().prop_map(Op::Crash),
        2 => any::<u8>().prop_map(Op::Restart),
        1 => (0u32..PARTITIONS).prop_map(|partition| Op::CrashLeader { partition }),
        1 => any::<u8>().prop_map(Op::Isolate),
        1 => (0u32..PARTITIONS).prop_map(|partition| Op::IsolateLeader { partition }),
        1 => Just(Op::SplitHalves),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::OneWay(a, b)),
        2 => Just(Op::Heal),
        4 => (1u16..300).prop_map(Op::Wait),
    ]
}

/// Partitions over both topics: "t" has two, "u" one.
const PARTITIONS: u32 = 3;

#[derive(Clone, Debug)]
struct Schedule {
    seed: u64,
    nodes: u64,
    faults: Faults,
    compact_threshold: u64,
    /// `min_insync_replicas` of topics "t" and "u" (replication factor 3).
    min_isr: (u32, u32),
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
        (1u32..=3, 1u32..=3),
        proptest::collection::vec(op(), 5..40),
    )
        .prop_map(
            |(
                seed,
                nodes,
                loss,
                duplicate,
                delay_max,
                persist_max,
                compact_threshold,
                min_isr,
                ops,
            )| {
                Schedule {
                    min_isr,
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
    /// Produces sent again to the leader a follower named.
    redirected: u64,
    /// Nodes that joined, and that were removed, during the faults.
    joined: u64,
    removed: u64,
}

/// Runs a schedule, checking every invariant.
fn run(s: &Schedule) -> Stats {
    let mut cfg = ClusterConfig::new(s.nodes, s.seed);
    cfg.log_compact_threshold_entries = s.compact_threshold;
    let mut c = Cluster::with_config(cfg);
    let mut parts = c
        .create_topic_with("t", 2, 3, s.min_isr.0, false)
        .expect("topic on a healthy cluster");
    parts.extend(
        c.create_topic_with("u", 1, 3, s.min_isr.1, false)
            .expect("second topic on a healthy cluster"),
    );
    c.set_faults(s.faults.clone());
    // Nodes come and go: pick among those there now.
    let pick = |c: &Cluster, x: u8| {
        let ids = c.node_ids();
        ids[usize::from(x) % ids.len()]
    };
    let leader = |c: &Cluster, p: &PartitionId| c.group_of(p).and_then(|g| c.leader_of(g));
    let mut value = 0u64;
    // Produces sent to any node, not answered yet: (request, partition,
    // records); a NOT_LEADER answer with a hint sends them again there.
    let mut redirects: Vec<(RequestId, PartitionId, Vec<Bytes>)> = Vec::new();
    let mut redirected = 0;
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
                let n = pick(&c, *node);
                if c.is_up(n) {
                    c.fetch_with(n, p, 0, chronik_core::ReadConsistency::Follower);
                }
            }
            Op::ProduceVia { partition, node } => {
                let p = parts[*partition as usize].clone();
                value += 1;
                let recs = vec![Bytes::from(format!("v{value}"))];
                let rid = c.produce(pick(&c, *node), &p, recs.clone());
                redirects.push((rid, p, recs));
            }
            Op::AddNode => {
                if let Some(l) = c.leader_of(METADATA_GROUP) {
                    let info = c.add_node();
                    c.command(l, Command::Membership(MembershipChange::Add(info)));
                }
            }
            Op::RemoveNode(n) => {
                let victim = pick(&c, *n);
                if let Some(l) = c.leader_of(METADATA_GROUP) {
                    c.command(l, Command::Membership(MembershipChange::Remove(victim)));
                }
            }
            Op::Crash(n) => c.crash(pick(&c, *n)),
            Op::Restart(n) => c.restart(pick(&c, *n)),
            Op::CrashLeader { partition } => {
                if let Some(l) = leader(&c, &parts[*partition as usize]) {
                    c.crash(l);
                }
            }
            Op::Isolate(n) => c.isolate(pick(&c, *n)),
            Op::IsolateLeader { partition } => {
                if let Some(l) = leader(&c, &parts[*partition as usize]) {
                    c.isolate(l);
                }
            }
            Op::SplitHalves => {
                let half: Vec<NodeId> = (1..=s.nodes / 2).collect();
                c.split(&half);
            }
            Op::OneWay(a, b) => {
                let (a, b) = (pick(&c, *a), pick(&c, *b));
                c.cut_one_way(a, b)
            }
            Op::Heal => c.heal(),
            Op::Wait(ms) => c.run_for(u64::from(*ms)),
        }
        c.run_for(5);
        redirected += follow_hints(&mut c, &mut redirects);
    }
    // Let the membership commands in flight settle on a healed network;
    // nodes whose removal went through are gone for good, and nodes whose
    // addition was refused (or never reached a leader) are shut down; the
    // rest must converge (finishing any change still in flight).
    c.heal();
    c.set_faults(Faults::none());
    for id in c.node_ids() {
        c.restart(id);
    }
    c.run_for(3_000);
    let mut removed = retire_removed(&mut c);
    assert!(c.converge(60_000), "cluster converges after faults heal");
    removed += retire_removed(&mut c);
    assert!(c.converge(60_000), "cluster converges after removals");
    // Nodes that joined and are still members at the end.
    let joined = c
        .node_ids()
        .first()
        .and_then(|id| c.engine(*id))
        .map_or(0, |e| {
            e.metadata().nodes().filter(|n| n.id > s.nodes).count()
        }) as u64;
    c.check_acked_durable();
    c.checker.assert_ok();
    Stats {
        trace_hash: c.checker.trace_hash(),
        acked: c.acked.len() as u64,
        fetches_verified: c.checker.fetches_verified,
        elections: c.checker.leader_elections,
        applied: c.checker.applied_count,
        redirected,
        joined,
        removed,
    }
}

/// Sends again, to the hinted leader, every produce a follower answered
/// `NOT_LEADER` with a hint.
fn follow_hints(c: &mut Cluster, redirects: &mut Vec<(RequestId, PartitionId, Vec<Bytes>)>) -> u64 {
    let mut again = Vec::new();
    redirects.retain(|(rid, p, recs)| match c.replies.get(rid) {
        None => true,
        Some(Err(Error::NotLeader {
            leader_hint: Some(h),
            ..
        })) => {
            again.push((*h, p.clone(), recs.clone()));
            false
        }
        Some(_) => false,
    });
    let mut sent = 0;
    for (h, p, recs) in again {
        if c.node_ids().contains(&h) {
            c.produce(h, &p, recs);
            sent += 1;
        }
    }
    sent
}

/// Takes out of the cluster every node the metadata says was removed, and
/// every node no member's metadata knows (its addition was refused or
/// never arrived).
fn retire_removed(c: &mut Cluster) -> u64 {
    let mut removed: Vec<NodeId> = c
        .node_ids()
        .into_iter()
        .filter_map(|id| c.engine(id))
        .flat_map(|e| e.metadata().removed_nodes().collect::<Vec<_>>())
        .collect();
    let known: std::collections::BTreeSet<NodeId> = c
        .node_ids()
        .into_iter()
        .filter_map(|id| c.engine(id))
        .flat_map(|e| e.metadata().nodes().map(|n| n.id).collect::<Vec<_>>())
        .collect();
    if !known.is_empty() {
        removed.extend(c.node_ids().into_iter().filter(|id| !known.contains(id)));
    }
    let mut retired = 0;
    for id in removed {
        if c.node_ids().contains(&id) {
            c.decommission(id);
            retired += 1;
        }
    }
    retired
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
        total.redirected += st.redirected;
        total.joined += st.joined;
        total.removed += st.removed;
    }
    println!("100 schedules: {total:?}");
    assert!(total.acked > 200, "{total:?}");
    assert!(total.fetches_verified > 50, "{total:?}");
    assert!(total.elections > 500, "{total:?}");
    assert!(total.redirected > 20, "{total:?}");
    assert!(total.joined > 5, "{total:?}");
    assert!(total.removed > 5, "{total:?}");
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
