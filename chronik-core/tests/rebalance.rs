//! The rebalancer on in-memory clusters: a node that joins gets its share
//! of replicas and leaders without an operator, moves wait for the ISR,
//! a move that cannot finish rolls back, and a plan is refused while a
//! membership change is in flight.

use chronik_core::membership::MembershipChange;
use chronik_core::metadata::MoveState;
use chronik_core::rebalance::{Imbalance, RebalanceConfig};
use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{Command, Error, MetadataCommand, METADATA_GROUP};

fn cluster(seed: u64, rebalance: RebalanceConfig) -> Cluster {
    let mut cfg = ClusterConfig::new(3, seed);
    cfg.rebalance = rebalance;
    Cluster::with_config(cfg)
}

fn fast() -> RebalanceConfig {
    RebalanceConfig {
        check_interval_ms: 500,
        migration_timeout_ms: 30_000,
        ..RebalanceConfig::default()
    }
}

fn imbalance(c: &Cluster, node: u64) -> Imbalance {
    let e = c.engine(node).expect("up");
    Imbalance::of(&e.rebalance_view())
}

#[test]
fn a_joining_node_gets_replicas_and_leaders_while_produces_go_on() {
    for seed in [1, 2, 3] {
        let mut c = cluster(seed, fast());
        let parts = c.create_topic_with("t", 12, 3, 2, false).expect("topic");
        for (i, p) in parts.iter().enumerate() {
            c.produce_ok(p, &format!("before-{i}"));
        }
        let four = c.add_node();
        let leader = c.elect(METADATA_GROUP, 10_000).expect("leader");
        let rid = c.command(leader, Command::Membership(MembershipChange::Add(four)));
        assert!(c.run_until(10_000, |c| c.replies.contains_key(&rid)));
        assert!(c.replies[&rid].is_ok(), "{:?}", c.replies[&rid]);
        // Produces keep being acknowledged while the cluster rebalances.
        let mut round = 0;
        let balanced = c.run_until(120_000, |c| {
            c.engine(1).is_some_and(|e| {
                let md = e.metadata();
                md.membership_in_flight().is_none()
                    && md.active_rebalance().is_none()
                    && md.moves_in_flight() == 0
                    && md.partitions().any(|(_, p)| p.replicas.contains(&4))
            }) && imbalance(c, 1).worst() <= 0.2
        });
        assert!(balanced, "seed {seed}: balanced: {}", imbalance(&c, 1));
        for p in &parts {
            round += 1;
            c.produce_ok(p, &format!("after-{round}"));
        }
        let md = c.engine(1).expect("up").metadata().clone();
        let on_four = md
            .partitions()
            .filter(|(_, p)| p.replicas.contains(&4))
            .count();
        assert_eq!(on_four, 9, "seed {seed}: 36 replicas over 4 nodes");
        let led_by_four = md
            .partitions()
            .filter(|(_, p)| p.preferred_leader == 4)
            .count();
        assert_eq!(led_by_four, 3, "seed {seed}: 12 leaders over 4 nodes");
        // And the leaders follow the preferred ones.
        assert!(c.run_until(20_000, |c| {
            parts.iter().all(|p| {
                let want = md.partition(p).expect("exists").preferred_leader;
                c.group_of(p).and_then(|g| c.leader_of(g)) == Some(want)
            })
        }));
        let run = md.rebalance_run().expect("a run happened").clone();
        assert!(run.finished);
        assert!(
            run.moves.iter().all(|m| m.state == MoveState::Done),
            "{run:?}"
        );
        assert!(c.converge(20_000));
        c.check_acked_durable();
        c.checker.assert_ok();
    }
}

#[test]
fn a_move_whose_new_replica_cannot_catch_up_rolls_back() {
    let cfg = RebalanceConfig {
        enabled: false,
        migration_timeout_ms: 3_000,
        ..RebalanceConfig::default()
    };
    let mut c = cluster(7, cfg);
    let parts = c.create_topic("t", 1, 2).expect("topic");
    let p = &parts[0];
    c.produce_ok(p, "a");
    let md = c.engine(1).expect("up").metadata().clone();
    let meta = md.partition(p).expect("exists").clone();
    let spare = (1..=3)
        .find(|n| !meta.replicas.contains(n))
        .expect("a spare node");
    let from = *meta
        .replicas
        .iter()
        .find(|n| **n != meta.preferred_leader)
        .expect("a follower");
    // The new replica's node is cut off: it never joins the ISR.
    c.isolate(spare);
    let start = MetadataCommand::StartRebalance {
        trigger: "test".into(),
        max_concurrent_moves: 1,
        moves: vec![(meta.group, from, spare, 0)],
        leaders_now: vec![],
        leaders_after: vec![],
    };
    // The metadata leader may be the isolated node: then heal for a new
    // one to be elected and ask again.
    if c.metadata_command(start.clone()).is_err() {
        c.heal();
        c.isolate(spare);
        c.metadata_command(start).expect("started");
    }
    let node = (1..=3).find(|n| *n != spare).expect("a node");
    let rolled_back = c.run_until(30_000, |c| {
        c.engine(node).is_some_and(|e| {
            e.metadata().rebalance_run().is_some_and(|r| {
                r.finished && matches!(r.moves[0].state, MoveState::RolledBack { .. })
            })
        })
    });
    assert!(
        rolled_back,
        "{:?}",
        c.engine(node)
            .map(|e| e.metadata().rebalance_run().cloned())
    );
    let after = c
        .engine(node)
        .expect("up")
        .metadata()
        .partition(p)
        .expect("exists")
        .clone();
    assert_eq!(after.replicas, meta.replicas, "placement unchanged");
    assert!(after.moving.is_none());
    assert!(!after.isr.contains(&spare));
    c.heal();
    c.produce_ok(p, "b");
    assert!(c.converge(20_000));
    // The learner is out of the group's configuration everywhere.
    let leader = c.group_of(p).and_then(|g| c.leader_of(g)).expect("leader");
    let s = c
        .engine(leader)
        .and_then(|e| e.group_status(meta.group))
        .expect("status");
    assert!(!s.voters.contains(&spare));
    c.check_acked_durable();
    c.checker.assert_ok();
}

#[test]
fn plans_are_refused_during_a_membership_change_and_dry_runs_change_nothing() {
    let mut c = cluster(
        9,
        RebalanceConfig {
            enabled: false,
            ..RebalanceConfig::default()
        },
    );
    c.create_topic("t", 6, 2).expect("topic");
    let before = c.engine(1).expect("up").metadata().clone();
    let plan = c.engine(1).expect("up").rebalance_plan(usize::MAX);
    assert!(plan.is_empty(), "a fresh placement is balanced: {plan:?}");
    assert_eq!(c.engine(1).expect("up").metadata(), &before);
    let four = c.add_node();
    let leader = c.elect(METADATA_GROUP, 10_000).expect("leader");
    let rid = c.command(leader, Command::Membership(MembershipChange::Add(four)));
    assert!(c.run_until(10_000, |c| c.replies.contains_key(&rid)));
    let r = c.metadata_command(MetadataCommand::StartRebalance {
        trigger: "test".into(),
        max_concurrent_moves: 1,
        moves: vec![],
        leaders_now: vec![],
        leaders_after: vec![],
    });
    assert!(matches!(r, Err(Error::ChangeInProgress { .. })), "{r:?}");
}
