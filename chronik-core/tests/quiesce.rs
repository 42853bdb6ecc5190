//! Quiescence on in-memory clusters: idle partition groups stop ticking
//! and sending, and wake for produces, reads and failures.

use bytes::Bytes;
use chronik_core::testing::Cluster;
use chronik_core::{GroupId, NodeId, PartitionId, ReadConsistency, Response};

fn partition_messages(c: &Cluster, groups: &[GroupId]) -> u64 {
    groups
        .iter()
        .map(|g| c.messages_sent.get(g).copied().unwrap_or(0))
        .sum()
}

fn quiesced(c: &Cluster) -> usize {
    c.node_ids()
        .iter()
        .filter_map(|n| c.engine(*n))
        .map(|e| e.quiesced_groups())
        .sum()
}

fn isr(c: &Cluster, node: NodeId, p: &PartitionId) -> Vec<NodeId> {
    c.engine(node)
        .expect("up")
        .metadata()
        .partition(p)
        .expect("partition")
        .isr
        .clone()
}

/// A 3-node cluster with `n` partitions of replication 3, all quiesced.
fn quiet_cluster(seed: u64, n: u32) -> (Cluster, Vec<PartitionId>, Vec<GroupId>) {
    let mut c = Cluster::new(3, seed);
    let parts = c.create_topic_with("t", n, 3, 2, false).expect("topic");
    let groups: Vec<GroupId> = parts
        .iter()
        .map(|p| c.group_of(p).expect("group"))
        .collect();
    let all = 3 * n as usize;
    assert!(
        c.run_until(10_000, |c| quiesced(c) == all),
        "every replica of an idle partition quiesces ({} of {all})",
        quiesced(&c)
    );
    // The followers' answers to the quiescing heartbeats land.
    c.run_for(500);
    (c, parts, groups)
}

#[test]
fn idle_partitions_quiesce_and_send_nothing() {
    let (mut c, _, groups) = quiet_cluster(41, 8);
    let before = partition_messages(&c, &groups);
    c.run_for(30_000);
    assert_eq!(
        partition_messages(&c, &groups),
        before,
        "quiesced groups sent messages while idle"
    );
    assert_eq!(quiesced(&c), 24);
    // Leaders stay put: nobody campaigned.
    for g in &groups {
        assert!(c.leader_of(*g).is_some(), "group {g} lost its leader");
    }
    c.checker.assert_ok();
}

#[test]
fn a_produce_wakes_a_quiesced_partition_which_quiesces_again() {
    let (mut c, parts, groups) = quiet_cluster(42, 2);
    let p = &parts[0];
    let leader = c.leader_of(groups[0]).expect("leader");
    let start = c.now();
    let rid = c.produce(leader, p, vec![Bytes::from_static(b"woken")]);
    assert!(c.run_until(5_000, |c| c.replies.contains_key(&rid)));
    assert!(
        matches!(c.replies[&rid], Ok(Response::Applied(_))),
        "{:?}",
        c.replies[&rid]
    );
    // No tick stands between a quiesced leader and its followers.
    assert!(
        c.now() - start < 100,
        "acknowledged after {} ms",
        c.now() - start
    );
    assert!(
        c.run_until(5_000, |c| quiesced(c) == 6),
        "it quiesces again once replicated"
    );
    // Reads through the leader and a follower see the record.
    let follower = c
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    for (node, consistency) in [
        (leader, ReadConsistency::Leader),
        (follower, ReadConsistency::Follower),
    ] {
        let rid = c.fetch_with(node, p, 0, consistency);
        assert!(c.run_until(5_000, |c| c.replies.contains_key(&rid)));
        match &c.replies[&rid] {
            Ok(Response::Query(f)) => assert_eq!(f.records.len(), 1, "{consistency:?}"),
            other => panic!("{consistency:?} read: {other:?}"),
        }
    }
    assert!(c.converge(10_000));
    c.check_acked_durable();
    c.checker.assert_ok();
}

#[test]
fn a_quiesced_partition_elects_a_new_leader_when_its_leader_is_cut_off() {
    let (mut c, parts, groups) = quiet_cluster(43, 4);
    let g = groups[0];
    let old = c.leader_of(g).expect("leader");
    c.isolate(old);
    // Its followers notice the silence of its node (an election timeout of
    // pings), wake and elect: a few election timeouts at most.
    assert!(
        c.run_until(6_000, |c| {
            c.node_ids().iter().any(|n| {
                *n != old
                    && c.engine(*n)
                        .and_then(|e| e.group_status(g))
                        .is_some_and(|s| s.role == chronik_core::Role::Leader)
            })
        }),
        "no new leader while the quiesced old one is cut off"
    );
    // The partition takes produces again through its new leader (the ISR
    // shrinks away from the cut-off node first).
    c.produce_ok(&parts[0], "after failover");
    c.heal();
    assert!(c.converge(20_000));
    c.check_acked_durable();
    c.checker.assert_ok();
}

#[test]
fn a_partition_woken_after_a_long_quiet_keeps_its_isr() {
    let (mut c, parts, groups) = quiet_cluster(44, 1);
    let p = &parts[0];
    let leader = c.leader_of(groups[0]).expect("leader");
    // Far longer than the ISR's time lag (10 s): quiet replicas are in
    // sync, not lagging.
    c.run_for(60_000);
    c.produce_ok(p, "after a minute");
    c.run_for(3_000);
    assert_eq!(isr(&c, leader, p).len(), 3, "the ISR shrank on waking");
    let (shrinks, _) = c.engine(leader).expect("up").metadata().isr_change_counts();
    assert_eq!(shrinks, 0);
    c.checker.assert_ok();
}

#[test]
fn a_restarted_follower_rejoins_a_quiesced_partition() {
    let (mut c, parts, groups) = quiet_cluster(45, 2);
    let g = groups[0];
    let leader = c.leader_of(g).expect("leader");
    let follower = c
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    c.crash(follower);
    c.run_for(3_000);
    c.restart(follower);
    // The restarted replica learns its leader again and everyone settles
    // back into quiet.
    assert!(
        c.run_until(10_000, |c| quiesced(c) == 6),
        "only {} of 6 replicas quiesced again",
        quiesced(&c)
    );
    assert_eq!(
        c.engine(follower)
            .and_then(|e| e.group_status(g))
            .and_then(|s| s.leader),
        c.leader_of(g)
    );
    c.produce_ok(&parts[0], "after the restart");
    assert!(c.converge(10_000));
    c.check_acked_durable();
    c.checker.assert_ok();
}
