//! Membership changes on in-memory clusters: a node joins through a learner
//! phase and joint consensus, leaves the same way, interrupted changes
//! resume under a new leader, and unsafe changes are refused.

use bytes::Bytes;
use chronik_core::membership::MembershipChange;
use chronik_core::testing::Cluster;
use chronik_core::{Command, Error, MetadataResponse, NodeId, NodeInfo, Response, METADATA_GROUP};
use std::collections::BTreeSet;

fn ask(c: &mut Cluster, change: MembershipChange) -> Result<MetadataResponse, Error> {
    let leader = c.elect(METADATA_GROUP, 10_000).expect("metadata leader");
    // A brand-new leader first commits an entry of its term.
    c.run_until(2_000, |c| {
        c.engine(leader)
            .and_then(|e| e.group_status(METADATA_GROUP))
            .is_some_and(|s| s.commit >= s.last_index)
    });
    let rid = c.command(leader, Command::Membership(change));
    assert!(c.run_until(10_000, |c| c.replies.contains_key(&rid)));
    match c.replies[&rid].clone() {
        Ok(Response::Metadata(r)) => Ok(r),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) => Err(e),
    }
}

/// Runs until every listed node has no change in flight and the same
/// voters, `want`.
fn settled(c: &mut Cluster, nodes: &[NodeId], want: &[NodeId]) -> bool {
    let want: BTreeSet<NodeId> = want.iter().copied().collect();
    c.run_until(20_000, |c| {
        nodes.iter().all(|n| {
            c.engine(*n).is_some_and(|e| {
                e.metadata().membership_in_flight().is_none()
                    && e.membership_view().voters == want
                    && !e.membership_view().is_joint()
            })
        })
    })
}

fn produce_ok(c: &mut Cluster, p: &chronik_core::PartitionId, v: &str) {
    let leader = c.serving(p, 10_000).expect("partition leader");
    let rid = c.produce(leader, p, vec![Bytes::from(v.to_string())]);
    assert!(c.run_until(10_000, |c| c.replies.contains_key(&rid)));
    assert!(
        matches!(c.replies[&rid], Ok(Response::Applied(_))),
        "{:?}",
        c.replies[&rid]
    );
}

#[test]
fn a_node_joins_as_learner_then_voter_and_leaves_again() {
    let mut c = Cluster::new(3, 3);
    let parts = c.create_topic("t", 1, 3).expect("topic");
    produce_ok(&mut c, &parts[0], "before");
    let four = c.add_node();
    let r = ask(&mut c, MembershipChange::Add(four.clone())).expect("accepted");
    assert_eq!(
        r,
        MetadataResponse::MembershipChangeStarted {
            change: MembershipChange::Add(four.clone())
        }
    );
    produce_ok(&mut c, &parts[0], "during");
    assert!(
        settled(&mut c, &[1, 2, 3, 4], &[1, 2, 3, 4]),
        "node 4 became a voter everywhere"
    );
    // It learned everything through the snapshot and the log.
    let md = c.engine(4).expect("up").metadata().clone();
    assert_eq!(md.nodes().count(), 4);
    assert!(md.topic("t").is_some());
    produce_ok(&mut c, &parts[0], "after");

    // And back: node 4 hosts no replicas, so it can leave.
    ask(&mut c, MembershipChange::Remove(4)).expect("accepted");
    assert!(settled(&mut c, &[1, 2, 3], &[1, 2, 3]));
    assert!(
        c.run_until(5_000, |c| c.removed.contains(&4)),
        "node 4 learns it was removed"
    );
    let md = c.engine(1).expect("up").metadata().clone();
    assert!(md.node(4).is_none() && md.was_removed(4));
    c.crash(4);
    produce_ok(&mut c, &parts[0], "end");
    c.checker.assert_ok();
}

#[test]
fn a_change_interrupted_by_a_leader_crash_is_finished_by_the_next_leader() {
    for seed in 0..5 {
        let mut c = Cluster::new(3, 100 + seed);
        c.create_topic("t", 1, 3).expect("topic");
        let four = c.add_node();
        ask(&mut c, MembershipChange::Add(four)).expect("accepted");
        let leader = c.leader_of(METADATA_GROUP).expect("leader");
        // Crash the leader as soon as the joint configuration is in its log
        // (or, failing that, at any later point of the change).
        let reached = c.run_until(10_000, |c| {
            c.engine(leader).is_some_and(|e| {
                let s = e.group_status(METADATA_GROUP).expect("metadata");
                s.voters.contains(&4) || e.membership_view().is_joint()
            })
        });
        assert!(reached, "seed {seed}: the change reached the voters");
        // The crash must land inside the change, not after it finished.
        let in_flight = c
            .engine(leader)
            .is_some_and(|e| e.metadata().membership_in_flight().is_some());
        assert!(in_flight, "seed {seed}: the change was still in flight");
        c.crash(leader);
        let rest: Vec<NodeId> = [1, 2, 3, 4].into_iter().filter(|n| *n != leader).collect();
        assert!(
            settled(&mut c, &rest, &[1, 2, 3, 4]),
            "seed {seed}: the change finished"
        );
        c.restart(leader);
        assert!(settled(&mut c, &[1, 2, 3, 4], &[1, 2, 3, 4]), "seed {seed}");
        c.checker.assert_ok();
    }
}

#[test]
fn removing_a_node_moves_its_replicas_first() {
    for seed in [21, 22, 23] {
        let mut c = Cluster::new(4, seed);
        let parts = c.create_topic("t", 4, 3).expect("topic");
        for (i, p) in parts.iter().enumerate() {
            produce_ok(&mut c, p, &format!("before-{i}"));
        }
        let md = c.engine(1).expect("up").metadata().clone();
        // The node hosting the most replicas that is not the metadata leader.
        let leader = c.leader_of(METADATA_GROUP).expect("leader");
        let victim = (1..=4)
            .filter(|n| *n != leader)
            .max_by_key(|n| {
                md.partitions()
                    .filter(|(_, p)| p.replicas.contains(n))
                    .count()
            })
            .expect("a node");
        let hosted = md
            .partitions()
            .filter(|(_, p)| p.replicas.contains(&victim))
            .count();
        assert!(hosted > 0);
        ask(&mut c, MembershipChange::Remove(victim)).expect("accepted");
        let rest: Vec<NodeId> = (1..=4).filter(|n| *n != victim).collect();
        assert!(
            settled(&mut c, &rest, &rest),
            "seed {seed}: node {victim} left"
        );
        let md = c.engine(rest[0]).expect("up").metadata().clone();
        for (pid, p) in md.partitions() {
            assert!(
                !p.replicas.contains(&victim),
                "seed {seed}: {pid} still on {victim}"
            );
            assert_eq!(p.replicas.len(), 3, "seed {seed}: {pid}");
            assert!(p.moving.is_none());
            assert!(p.isr.iter().all(|n| p.replicas.contains(n)));
        }
        c.decommission(victim);
        // Every record is still there, and the partitions take more.
        for (i, p) in parts.iter().enumerate() {
            produce_ok(&mut c, p, &format!("after-{i}"));
        }
        if !c.converge(20_000) {
            for n in &rest {
                for st in c.engine(*n).expect("up").status() {
                    eprintln!("node {n}: {st:?}");
                }
            }
            panic!("seed {seed}: did not converge");
        }
        c.check_acked_durable();
        c.checker.assert_ok();
    }
}

#[test]
fn the_leader_hands_over_before_removing_itself() {
    let mut c = Cluster::new(4, 8);
    let leader = c.elect(METADATA_GROUP, 10_000).expect("leader");
    ask(&mut c, MembershipChange::Remove(leader)).expect("accepted");
    let rest: Vec<NodeId> = (1..=4).filter(|n| *n != leader).collect();
    assert!(settled(&mut c, &rest, &rest));
    assert_ne!(c.leader_of(METADATA_GROUP), Some(leader));
    c.checker.assert_ok();
}

#[test]
fn unsafe_or_malformed_changes_are_refused_and_change_nothing() {
    let mut c = Cluster::new(3, 5);
    c.create_topic("t", 1, 1).expect("topic");
    let host = c
        .engine(1)
        .expect("up")
        .metadata()
        .partitions()
        .next()
        .expect("one partition")
        .1
        .replicas[0];
    let info = |id: NodeId, port: u16| NodeInfo {
        id,
        client_addr: format!("node{id}:{port}"),
        peer_addr: format!("node{id}:{}", port + 1),
        rack: None,
    };
    let before = c.engine(1).expect("up").metadata().clone();
    assert_eq!(
        ask(&mut c, MembershipChange::Add(info(2, 7000))),
        Err(Error::NodeExists { node: 2 })
    );
    let mut dup = info(9, 7000);
    dup.peer_addr = "node1:9093".into();
    assert!(matches!(
        ask(&mut c, MembershipChange::Add(dup)),
        Err(Error::AddressInUse { node: 1, .. })
    ));
    let mut bad = info(9, 7000);
    bad.client_addr = "no-port".into();
    assert!(matches!(
        ask(&mut c, MembershipChange::Add(bad)),
        Err(Error::InvalidRequest { .. })
    ));
    assert_eq!(
        ask(&mut c, MembershipChange::Remove(7)),
        Err(Error::UnknownNode { node: 7 })
    );
    let _ = host;
    // Metadata commands cannot smuggle a change past the checks.
    let leader = c.leader_of(METADATA_GROUP).expect("leader");
    let rid = c.command(
        leader,
        Command::Metadata(chronik_core::MetadataCommand::BeginMembershipChange {
            change: MembershipChange::Remove(3),
        }),
    );
    assert!(matches!(
        c.replies.get(&rid),
        Some(Err(Error::InvalidRequest { .. }))
    ));
    c.run_for(200);
    let after = c.engine(1).expect("up").metadata().clone();
    assert_eq!(after.nodes().count(), before.nodes().count());
    assert!(after.membership_in_flight().is_none());

    // A second change while one is in flight.
    let four = c.add_node();
    ask(&mut c, MembershipChange::Add(four)).expect("accepted");
    let five = info(5, 7100);
    assert!(matches!(
        ask(&mut c, MembershipChange::Add(five)),
        Err(Error::ChangeInProgress { .. })
    ));
    assert!(settled(&mut c, &[1, 2, 3, 4], &[1, 2, 3, 4]));

    c.checker.assert_ok();
}

#[test]
fn a_removal_that_would_lose_the_live_quorum_is_refused() {
    let mut c = Cluster::new(3, 6);
    let leader = c.elect(METADATA_GROUP, 10_000).expect("leader");
    let others: Vec<NodeId> = (1..=3).filter(|n| *n != leader).collect();
    c.crash(others[1]);
    c.run_for(500);
    // Removing others[0] would leave {leader, dead node}: one live voter
    // of two.
    assert!(matches!(
        ask(&mut c, MembershipChange::Remove(others[0])),
        Err(Error::QuorumAtRisk { .. })
    ));
    // Removing the dead one leaves two live voters of two: allowed.
    ask(&mut c, MembershipChange::Remove(others[1])).expect("accepted");
    let rest = [leader, others[0]];
    assert!(settled(&mut c, &rest, &rest));
    c.checker.assert_ok();
}
