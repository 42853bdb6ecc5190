//! ISR tracking, `min_insync_replicas` and follower reads on in-memory
//! clusters.

use bytes::Bytes;
use chronik_core::testing::{Cluster, ClusterConfig};
use chronik_core::{Error, GroupId, NodeId, PartitionId, ReadConsistency, Response};

fn recs(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

fn isr_on(c: &Cluster, node: NodeId, p: &PartitionId) -> Vec<NodeId> {
    c.engine(node)
        .expect("up")
        .metadata()
        .partition(p)
        .expect("partition")
        .isr
        .clone()
}

/// (partition, group, leader, followers) of a partition.
fn roles(c: &Cluster, p: &PartitionId) -> (GroupId, NodeId, Vec<NodeId>) {
    let g = c.group_of(p).expect("group");
    let leader = c.leader_of(g).expect("leader");
    let replicas = c
        .engine(leader)
        .expect("up")
        .metadata()
        .partition(p)
        .expect("partition")
        .replicas
        .clone();
    let followers = replicas.into_iter().filter(|n| *n != leader).collect();
    (g, leader, followers)
}

fn reply(c: &mut Cluster, rid: u64) -> Result<Response<chronik_core::RecordLog>, Error> {
    assert!(
        c.run_until(10_000, |c| c.replies.contains_key(&rid)),
        "request {rid} got no reply"
    );
    c.replies[&rid].clone()
}

#[test]
fn a_cut_off_follower_leaves_the_isr_and_rejoins_after_catching_up() {
    let mut c = Cluster::new(3, 21);
    let parts = c.create_topic_with("t", 1, 3, 2, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    let out = followers[0];
    assert_eq!(isr_on(&c, leader, p).len(), 3);
    c.isolate(out);
    assert!(
        c.run_until(5_000, |c| !isr_on(c, leader, p).contains(&out)),
        "the isolated follower must leave the ISR"
    );
    // Two in-sync replicas still satisfy min_insync_replicas = 2.
    let rid = c.produce(leader, p, recs("a", 3));
    assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
    let (shrinks, _) = c.engine(leader).expect("up").metadata().isr_change_counts();
    assert!(shrinks >= 1);
    c.heal();
    assert!(
        c.run_until(5_000, |c| isr_on(c, leader, p).contains(&out)),
        "it rejoins once caught up"
    );
    // Every replica agrees on the ISR: it lives in the metadata group.
    assert!(c.converge(10_000));
    for n in c.node_ids() {
        assert_eq!(isr_on(&c, n, p).len(), 3, "node {n}");
    }
    c.checker.assert_ok();
}

#[test]
fn produce_is_refused_before_append_below_min_insync() {
    let mut c = Cluster::new(3, 5);
    let parts = c.create_topic_with("t", 1, 3, 3, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    let rid = c.produce(leader, p, recs("ok", 1));
    assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
    c.isolate(followers[1]);
    assert!(c.run_until(5_000, |c| isr_on(c, leader, p).len() == 2));
    let rid = c.produce(leader, p, recs("refused", 1));
    match reply(&mut c, rid) {
        Err(Error::NotEnoughReplicas { isr: 2, min: 3, .. }) => {}
        other => panic!("expected NOT_ENOUGH_REPLICAS, got {other:?}"),
    }
    // Nothing was appended: once healed, the log holds only the first record.
    c.heal();
    assert!(c.run_until(5_000, |c| isr_on(c, leader, p).len() == 3));
    let f = c.fetch(leader, p, 0);
    match reply(&mut c, f) {
        Ok(Response::Query(fetched)) => {
            assert_eq!(fetched.high_watermark, 1);
            assert_eq!(fetched.records[0].1, Bytes::from("ok-0"));
        }
        other => panic!("{other:?}"),
    }
    c.checker.assert_ok();
}

#[test]
fn produces_in_flight_when_the_isr_shrinks_fail_after_append() {
    // Slow links, so produces are always in flight; one follower goes
    // silent and is shrunk out of an ISR that must hold all three replicas.
    let mut cfg = ClusterConfig::new(3, 9);
    cfg.faults.delay_ms = (15, 20);
    let mut c = Cluster::with_config(cfg);
    let parts = c.create_topic_with("t", 1, 3, 3, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    c.isolate(followers[0]);
    let mut sent = Vec::new();
    let mut after_append = 0;
    for i in 0..400 {
        sent.push(c.produce(leader, p, recs(&format!("v{i}"), 1)));
        c.run_for(5);
        if isr_on(&c, leader, p).len() == 2 {
            break;
        }
    }
    assert_eq!(
        isr_on(&c, leader, p).len(),
        2,
        "the silent follower left the ISR"
    );
    c.run_for(500);
    let mut acked = 0;
    for rid in &sent {
        match c.replies.get(rid) {
            Some(Err(Error::NotEnoughReplicasAfterAppend { isr: 2, min: 3, .. })) => {
                after_append += 1
            }
            Some(Ok(_)) => acked += 1,
            Some(Err(Error::NotEnoughReplicas { .. })) => {}
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(
        after_append > 0,
        "some produces accepted with three in sync were committed after the shrink"
    );
    // Committed by a majority, but the silent follower (in the ISR until
    // the shrink) never held them: none may be acknowledged with
    // min_insync_replicas 3.
    assert_eq!(
        acked, 0,
        "acknowledged without all three replicas holding it"
    );
    assert_eq!(c.checker.produce_acks_checked, 0);
    c.checker.assert_ok();
}

/// Seeds until one where, with ISR {leader, in_sync} after the third
/// replica was cut off, both in-sync replicas crash, the cut-off one comes
/// back and one in-sync one restarts, and the out-of-sync replica wins the
/// election (their logs are equal, so either may; it has been waiting
/// longer, so it usually does).
fn out_of_sync_leader(unclean: bool) -> (Cluster, PartitionId, NodeId, NodeId) {
    for seed in 0..60 {
        let mut c = Cluster::new(3, seed);
        let parts = c.create_topic_with("t", 1, 3, 1, unclean).expect("topic");
        let p = parts[0].clone();
        let (g, leader, followers) = roles(&c, &p);
        let (in_sync, out) = (followers[0], followers[1]);
        // Equal logs everywhere first.
        let last = |c: &Cluster, n| {
            c.engine(n)
                .and_then(|e| e.group_status(g))
                .map(|s| s.last_index)
        };
        c.run_until(2_000, |c| {
            last(c, out) == last(c, leader) && last(c, in_sync) == last(c, leader)
        });
        c.isolate(out);
        if !c.run_until(5_000, |c| {
            isr_on(c, leader, &p) == vec![leader, in_sync]
                || isr_on(c, leader, &p) == vec![in_sync, leader]
        }) {
            continue;
        }
        c.crash(leader);
        c.crash(in_sync);
        c.heal();
        c.run_for(300);
        c.restart(in_sync);
        let ok = c.run_until(5_000, |c| c.leader_of(g).is_some());
        if ok && c.leader_of(g) == Some(out) {
            return (c, p, in_sync, out);
        }
    }
    panic!("no seed elected the out-of-sync replica");
}

#[test]
fn without_unclean_election_an_out_of_sync_leader_refuses_and_hands_over() {
    let (mut c, p, in_sync, out) = out_of_sync_leader(false);
    let g = c.group_of(&p).expect("group");
    // Once its metadata is confirmed fresh, the out-of-sync leader knows it
    // is not in the ISR: it refuses produces and hands leadership over.
    let not_ready = |c: &Cluster| {
        matches!(
            c.engine(out).map(|e| e.check_leader(&p)),
            Some(Err(Error::LeaderNotReady { .. }))
        )
    };
    assert!(c.run_until(2_000, |c| !not_ready(c)));
    let rid = c.produce(out, &p, recs("x", 1));
    match reply(&mut c, rid) {
        Err(Error::LeaderNotInSync { leader, .. }) => assert_eq!(leader, out),
        Err(Error::NotLeader { leader_hint, .. }) => assert_eq!(leader_hint, Some(in_sync)),
        other => panic!("expected LEADER_NOT_AVAILABLE or NOT_LEADER, got {other:?}"),
    }
    assert!(
        c.run_until(10_000, |c| c.leader_of(g) == Some(in_sync)),
        "leadership goes to the in-sync replica"
    );
    assert_eq!(c.serving(&p, 5_000), Some(in_sync));
    let rid = c.produce(in_sync, &p, recs("y", 1));
    assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
    c.checker.assert_ok();
}

#[test]
fn with_unclean_election_the_new_leader_takes_the_isr_over() {
    let (mut c, p, _in_sync, out) = out_of_sync_leader(true);
    assert!(c.run_until(5_000, |c| isr_on(c, out, &p).contains(&out)));
    assert_eq!(c.serving(&p, 5_000), Some(out));
    let rid = c.produce(out, &p, recs("x", 1));
    assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
    c.checker.assert_ok();
}

#[test]
fn follower_reads_see_every_acknowledged_record() {
    let mut c = Cluster::new(3, 17);
    let parts = c.create_topic_with("t", 1, 3, 2, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    for round in 0..20 {
        let rid = c.produce(leader, p, recs(&format!("r{round}"), 2));
        assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
        // Sent right after the ack: the follower may not have applied it
        // yet, and must wait until it has (the checker flags stale reads).
        let f = c.fetch_with(followers[round % 2], p, 0, ReadConsistency::Follower);
        match reply(&mut c, f) {
            Ok(Response::Query(fetched)) => {
                assert_eq!(fetched.high_watermark, 2 * (round as u64 + 1));
            }
            other => panic!("follower read: {other:?}"),
        }
    }
    // A stale read answers at once from whatever the replica applied.
    let f = c.fetch_with(followers[0], p, 0, ReadConsistency::FollowerStale);
    assert!(matches!(c.replies.get(&f), Some(Ok(Response::Query(_)))));
    assert!(c.checker.fetches_verified >= 20);
    c.checker.assert_ok();
}

#[test]
fn a_follower_cut_off_from_its_leader_times_out_its_reads() {
    let mut c = Cluster::new(3, 19);
    let parts = c.create_topic_with("t", 1, 3, 1, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    c.run_for(100);
    c.cut(leader, followers[0]);
    let f = c.fetch_with(followers[0], p, 0, ReadConsistency::Follower);
    match reply(&mut c, f) {
        Err(e @ (Error::ReadTimeout { .. } | Error::NotLeader { .. })) => {
            assert!(e.is_retriable())
        }
        other => panic!("expected a retriable read failure, got {other:?}"),
    }
    c.checker.assert_ok();
}

#[test]
fn an_acknowledgement_waits_until_min_isr_replicas_hold_the_record() {
    // Three replicas, all required in sync. One follower is cut off just
    // long enough to miss a produce but not to leave the ISR (lag bound
    // 1 s): the leader and the other follower commit the entry (a Raft
    // majority), yet it is acknowledged only once the third holds it.
    let mut c = Cluster::new(3, 41);
    let parts = c.create_topic_with("t", 1, 3, 3, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    c.isolate(followers[0]);
    let rid = c.produce(leader, p, recs("held", 1));
    c.run_for(300);
    assert!(
        !c.replies.contains_key(&rid),
        "acknowledged while a replica of the ISR lacked it: {:?}",
        c.replies.get(&rid)
    );
    assert_eq!(isr_on(&c, leader, p).len(), 3, "still in sync");
    c.heal();
    match reply(&mut c, rid) {
        Ok(Response::Applied(_)) => {}
        other => panic!("expected an acknowledgement once healed, got {other:?}"),
    }
    assert_eq!(c.checker.produce_acks_checked, 1);
    c.checker.assert_ok();
}

/// Two followers ask their leader for a read index at the same moment,
/// their read counters at every offset from each other in turn (one extra
/// read on one of them shifts it by one): each round is its own (a leader
/// that took two for one would drop the second and leave its reads waiting
/// out the whole read timeout).
#[test]
fn simultaneous_follower_reads_on_two_nodes_are_both_answered_promptly() {
    let mut c = Cluster::new(3, 23);
    let parts = c.create_topic_with("t", 1, 3, 2, false).expect("topic");
    let p = &parts[0];
    let (_, leader, followers) = roles(&c, p);
    let rid = c.produce(leader, p, recs("r", 3));
    assert!(matches!(reply(&mut c, rid), Ok(Response::Applied(_))));
    c.run_for(500);
    let read = |c: &mut Cluster, nodes: &[NodeId], what: &str| {
        let rids: Vec<_> = nodes
            .iter()
            .map(|n| c.fetch_with(*n, p, 0, ReadConsistency::Follower))
            .collect();
        // Well under the read timeout (5 s): a few network round trips.
        let answered = c.run_until(1_000, |c| rids.iter().all(|r| c.replies.contains_key(r)));
        assert!(answered, "{what}: a follower read waited past 1 s");
        for r in rids {
            assert!(
                matches!(c.replies.get(&r), Some(Ok(Response::Query(_)))),
                "{what}: {:?}",
                c.replies.get(&r)
            );
        }
    };
    for (shifted, steps) in [(followers[0], 8), (followers[1], 16)] {
        for step in 0..steps {
            read(&mut c, &[shifted], "a lone read");
            read(
                &mut c,
                &followers,
                &format!("simultaneous reads, step {step}"),
            );
        }
    }
    c.checker.assert_ok();
}
