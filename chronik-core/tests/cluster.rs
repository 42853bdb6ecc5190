//! Scenario tests of whole in-memory clusters.

use bytes::Bytes;
use chronik_core::testing::{Cluster, ClusterConfig, Faults};
use chronik_core::{Command, Error, MetadataCommand, Response, METADATA_GROUP};

fn recs(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

#[test]
fn three_nodes_elect_create_produce_fetch() {
    let mut c = Cluster::new(3, 7);
    let parts = c.create_topic("t", 3, 3).expect("topic");
    for (i, p) in parts.iter().enumerate() {
        let g = c.group_of(p).expect("group");
        let leader = c.leader_of(g).expect("leader");
        let rid = c.produce(leader, p, recs(&format!("p{i}"), 5));
        assert!(c.run_until(5_000, |c| c.replies.contains_key(&rid)));
        assert!(
            matches!(c.replies[&rid], Ok(Response::Applied(_))),
            "{:?}",
            c.replies[&rid]
        );
        let f = c.fetch(leader, p, 0);
        assert!(c.run_until(5_000, |c| c.replies.contains_key(&f)));
        match &c.replies[&f] {
            Ok(Response::Query(fetched)) => {
                assert_eq!(fetched.high_watermark, 5);
                assert_eq!(fetched.records.len(), 5);
            }
            other => panic!("fetch: {other:?}"),
        }
    }
    assert!(c.converge(10_000));
    c.check_acked_durable();
    c.checker.assert_ok();
}

#[test]
fn followers_refuse_with_leader_hint_and_bad_input_is_refused() {
    let mut c = Cluster::new(3, 11);
    let parts = c.create_topic("t", 1, 3).expect("topic");
    let g = c.group_of(&parts[0]).expect("group");
    let leader = c.leader_of(g).expect("leader");
    let follower = c
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    c.run_for(100); // a heartbeat tells the follower who leads
    let rid = c.produce(follower, &parts[0], recs("x", 1));
    match &c.replies[&rid] {
        Err(Error::NotLeader { leader_hint, .. }) => assert_eq!(*leader_hint, Some(leader)),
        other => panic!("{other:?}"),
    }
    let unknown = chronik_core::PartitionId::new("nope", 0);
    let rid = c.produce(leader, &unknown, recs("x", 1));
    assert!(matches!(c.replies[&rid], Err(Error::UnknownTopic { .. })));
    let rid = c.produce(leader, &parts[0], vec![]);
    assert!(matches!(c.replies[&rid], Err(Error::InvalidRequest { .. })));
    let rid = c.produce(
        leader,
        &parts[0],
        vec![Bytes::from(vec![0u8; 2 * 1024 * 1024])],
    );
    assert!(matches!(c.replies[&rid], Err(Error::RecordTooLarge { .. })));
    let f = c.fetch(leader, &parts[0], 10);
    c.run_until(5_000, |c| c.replies.contains_key(&f));
    assert!(
        matches!(c.replies[&f], Err(Error::OffsetOutOfRange { .. })),
        "{:?}",
        c.replies[&f]
    );
    let md_leader = c.leader_of(METADATA_GROUP).expect("metadata leader");
    let before = c.engine(md_leader).expect("up").metadata().clone();
    let rid = c.command(
        md_leader,
        Command::Metadata(MetadataCommand::CreateTopic {
            name: "t".into(),
            partitions: 1,
            replication_factor: 1,
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }),
    );
    assert!(matches!(c.replies[&rid], Err(Error::TopicExists { .. })));
    assert_eq!(c.engine(md_leader).expect("up").metadata(), &before);
    c.checker.assert_ok();
}

#[test]
fn crash_and_restart_loses_no_acknowledged_write() {
    let mut cfg = ClusterConfig::new(3, 3);
    cfg.faults.persist_ms = (1, 5);
    cfg.log_compact_threshold_entries = 20;
    let mut c = Cluster::with_config(cfg);
    let parts = c.create_topic("t", 1, 3).expect("topic");
    let g = c.group_of(&parts[0]).expect("group");
    for round in 0..6 {
        let leader = match c.elect(g, 10_000) {
            Some(l) => l,
            None => panic!("no leader in round {round}"),
        };
        for i in 0..10 {
            c.produce(leader, &parts[0], recs(&format!("r{round}-{i}"), 2));
        }
        c.run_for(50);
        c.crash(leader);
        c.run_for(300);
        c.restart(leader);
    }
    assert!(c.converge(20_000), "cluster converges");
    c.check_acked_durable();
    c.checker.assert_ok();
    assert!(
        c.acked.len() > 10,
        "most produces were acknowledged: {}",
        c.acked.len()
    );
}

#[test]
fn lagging_replica_catches_up_by_snapshot() {
    let mut cfg = ClusterConfig::new(3, 5);
    cfg.log_compact_threshold_entries = 10;
    let mut c = Cluster::with_config(cfg);
    let parts = c.create_topic("t", 1, 3).expect("topic");
    let g = c.group_of(&parts[0]).expect("group");
    let leader = c.leader_of(g).expect("leader");
    let lagger = c
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("other");
    c.crash(lagger);
    for i in 0..50 {
        c.produce(leader, &parts[0], recs(&format!("b{i}"), 1));
        c.run_for(5);
    }
    c.run_for(200);
    c.restart(lagger);
    assert!(c.converge(20_000));
    let st = c
        .engine(lagger)
        .expect("up")
        .group_status(g)
        .expect("hosted");
    assert!(
        st.snapshot_index > 0,
        "caught up through a snapshot: {st:?}"
    );
    c.check_acked_durable();
    c.checker.assert_ok();
    assert_eq!(c.acked.len(), 50);
}

#[test]
fn lossy_network_still_converges() {
    let mut cfg = ClusterConfig::new(5, 9);
    cfg.faults = Faults {
        loss: 0.1,
        duplicate: 0.1,
        delay_ms: (1, 30),
        persist_ms: (0, 3),
    };
    let mut c = Cluster::with_config(cfg);
    let parts = c.create_topic("t", 2, 3).expect("topic");
    for i in 0..40 {
        let p = &parts[i % 2];
        if let Some(l) = c.group_of(p).and_then(|g| c.leader_of(g)) {
            c.produce(l, p, recs(&format!("l{i}"), 1));
        }
        c.run_for(20);
    }
    assert!(c.converge(20_000));
    // Progress despite the loss: a good share of the produces were
    // acknowledged, and every partition still takes a write.
    assert!(
        c.acked.len() >= 10,
        "only {} of 40 produces acknowledged under 10% loss",
        c.acked.len()
    );
    for p in &parts {
        let mut ok = false;
        for attempt in 0..5 {
            let Some(l) = c.serving(p, 10_000) else {
                continue;
            };
            let rid = c.produce(l, p, recs(&format!("after{attempt}"), 1));
            c.run_until(10_000, |c| c.replies.contains_key(&rid));
            if matches!(c.replies.get(&rid), Some(Ok(_))) {
                ok = true;
                break;
            }
        }
        assert!(ok, "no write to {p} committed under loss after converging");
    }
    assert!(c.converge(20_000));
    c.check_acked_durable();
    c.checker.assert_ok();
}

#[test]
fn delete_topic_drops_groups_everywhere() {
    let mut c = Cluster::new(3, 21);
    c.create_topic("t", 2, 3).expect("topic");
    let md = c.leader_of(METADATA_GROUP).expect("leader");
    let rid = c.command(
        md,
        Command::Metadata(MetadataCommand::DeleteTopic { name: "t".into() }),
    );
    assert!(c.run_until(5_000, |c| c.replies.contains_key(&rid)));
    assert!(c.run_until(5_000, |c| c
        .node_ids()
        .iter()
        .all(|n| c.engine(*n).is_some_and(|e| e.groups() == vec![0]))));
    c.checker.assert_ok();
}

#[test]
fn metadata_follower_catches_up_by_snapshot() {
    let mut cfg = ClusterConfig::new(3, 13);
    cfg.log_compact_threshold_entries = 3;
    let mut c = Cluster::with_config(cfg);
    let md = c.elect(METADATA_GROUP, 10_000).expect("leader");
    let down = c.node_ids().into_iter().find(|n| *n != md).expect("other");
    c.run_for(200);
    c.crash(down);
    for i in 0..8 {
        let leader = c.elect(METADATA_GROUP, 10_000).expect("leader");
        let rid = c.command(
            leader,
            Command::Metadata(MetadataCommand::CreateTopic {
                name: format!("t{i}"),
                partitions: 1,
                replication_factor: 2,
                min_insync_replicas: 1,
                unclean_leader_election: false,
            }),
        );
        assert!(c.run_until(5_000, |c| c.replies.contains_key(&rid)));
    }
    c.restart(down);
    assert!(c.converge(20_000));
    let e = c.engine(down).expect("up");
    assert!(
        e.group_status(METADATA_GROUP)
            .expect("hosted")
            .snapshot_index
            > 0
    );
    let reference = c.engine(md).expect("up").metadata().clone();
    assert_eq!(e.metadata(), &reference);
    assert_eq!(reference.topics().count(), 8);
    c.checker.assert_ok();
}
