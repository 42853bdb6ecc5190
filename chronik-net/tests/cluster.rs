//! Real tokio nodes on 127.0.0.1: elect, create a topic, produce 10,000
//! records, read them back from every replica, restart everything.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::*;

use bytes::Bytes;
use chronik_core::{ErrorCode, PartitionId};
use chronik_net::{Client, Node, NodeConfig, NodeHandle};
use std::path::Path;
use std::time::Duration;

async fn read_all_local(node: &NodeHandle, p: &PartitionId, expect: u64) -> Vec<Bytes> {
    // A follower may still be applying the last entries.
    for _ in 0..200 {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            // Until the node's metadata has the topic, it cannot say.
            let Ok(f) = node.read_local(p, off, 1 << 20).await else {
                break;
            };
            if f.records.is_empty() {
                break;
            }
            off = f.records.last().unwrap().0 + 1;
            out.extend(f.records.into_iter().map(|(_, r)| r));
        }
        if out.len() as u64 >= expect {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "node {} has not applied {expect} records of {p}",
        node.node_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_ten_thousand_records_and_survive_restart() {
    let dir = tempdir();
    let spec = spec(3, &dir);
    let nodes = start_all(&spec).await;
    let client = spec.client();
    wait_for_nodes(&client, 3).await;
    let topic = client.create_topic("events", 2, 3, 2).await.unwrap();
    assert_eq!(topic.partitions.len(), 2);

    // Deleting a topic twice: the second answer is final at once, though
    // the followers only say "not the leader" (it once ran to the
    // client's deadline and came back as "unreachable").
    client.create_topic("gone", 1, 3, 1).await.unwrap();
    client.delete_topic("gone").await.unwrap();
    let started = std::time::Instant::now();
    let e = client.delete_topic("gone").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition, "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");

    // 10,000 records: 100 produce calls of 100 records, 8 at a time.
    let client = std::sync::Arc::new(client);
    let mut expected: Vec<Vec<(u64, Bytes)>> = vec![vec![], vec![]];
    for chunk in 0..(100 / 8 + 1) {
        let mut tasks = Vec::new();
        for k in 0..8 {
            let call = chunk * 8 + k;
            if call >= 100 {
                break;
            }
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let p = (call % 2) as u32;
                let recs: Vec<Bytes> = (0..100)
                    .map(|i| Bytes::from(format!("c{call}-r{i}")))
                    .collect();
                let base = c.produce("events", p, recs.clone()).await.unwrap();
                (p, base, recs)
            }));
        }
        for t in tasks {
            let (p, base, recs) = t.await.unwrap();
            for (i, r) in recs.into_iter().enumerate() {
                expected[p as usize].push((base + i as u64, r));
            }
        }
    }
    for e in &mut expected {
        e.sort();
    }
    assert_eq!(expected.iter().map(Vec::len).sum::<usize>(), 10_000);

    // Linearizable read through the client, and every replica's own copy.
    for (p, exp) in expected.iter().enumerate() {
        let f = client.fetch("events", p as u32, 0, 1 << 30).await.unwrap();
        assert_eq!(f.high_watermark, exp.len() as u64);
        let pid = PartitionId::new("events", p as u32);
        let want: Vec<Bytes> = exp.iter().map(|(_, r)| r.clone()).collect();
        for n in &nodes {
            assert_eq!(
                read_all_local(n, &pid, want.len() as u64).await,
                want,
                "node {}",
                n.node_id
            );
        }
    }

    // Stop everything, start again from the same data dirs.
    for n in nodes {
        n.stop().await.unwrap();
    }
    let nodes = start_all(&spec).await;
    let client = spec.client();
    for (p, exp) in expected.iter().enumerate() {
        let f = client.fetch("events", p as u32, 0, 1 << 30).await.unwrap();
        assert_eq!(f.high_watermark, exp.len() as u64);
        let got: Vec<Bytes> = f.records.into_iter().map(|(_, r)| r).collect();
        let want: Vec<Bytes> = exp.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(got, want);
    }
    // And it keeps working.
    let base = client
        .produce("events", 0, vec![Bytes::from("after")])
        .await
        .unwrap();
    assert_eq!(base, expected[0].len() as u64);
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let dir = tempdir();
    let spec = spec(1, &dir);
    let nodes = start_all(&spec).await;
    let client = Client::new(vec![spec.configs[0].client_listen.to_string()]);
    wait_for_nodes(&client, 1).await;
    client.create_topic("t", 1, 1, 1).await.unwrap();
    let e = client
        .produce("nope", 0, vec![Bytes::from("x")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
    let e = client
        .produce("t", 7, vec![Bytes::from("x")])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::UnknownTopicOrPartition);
    let e = client
        .produce("t", 0, vec![Bytes::from(vec![0u8; 2 * 1024 * 1024])])
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::RecordTooLarge);
    let e = client.produce("t", 0, vec![]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    client
        .produce("t", 0, vec![Bytes::from("ok")])
        .await
        .unwrap();
    let e = client.fetch("t", 0, 5, 100).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::OffsetOutOfRange);
    let e = client.create_topic("t", 1, 1, 1).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::TopicAlreadyExists);
    let e = client.create_topic("x", 1, 3, 1).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidReplicationFactor);

    // Garbage on both ports: the node shrugs it off and keeps serving.
    for addr in [spec.configs[0].peer_listen, spec.configs[0].client_listen] {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"\x00\xffGARBAGE not http/2 at all\r\n\r\n");
        drop(s);
    }
    let f = client.fetch("t", 0, 0, 100).await.unwrap();
    assert_eq!(f.records.len(), 1);
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three nodes that snapshot every 50 entries into 4 KiB segments (so
/// replicas catch up through streamed segments), up and registered.
async fn compacting_cluster(dir: &Path) -> (Spec, Vec<NodeHandle>, Client) {
    let mut spec = spec(3, dir);
    for c in &mut spec.configs {
        c.engine.log_compact_threshold_entries = 50;
        c.segment_bytes_max = 4096;
    }
    let nodes = start_all(&spec).await;
    let client = spec.client();
    wait_for_nodes(&client, 3).await;
    (spec, nodes, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_catches_up_through_streamed_segments() {
    let dir = tempdir();
    let (spec, mut nodes, client) = compacting_cluster(&dir).await;
    client.create_topic("lag", 1, 3, 2).await.unwrap();
    let down = nodes.pop().unwrap();
    down.stop().await.unwrap();
    let mut want = Vec::new();
    for i in 0..300 {
        let recs: Vec<Bytes> = (0..10).map(|k| Bytes::from(format!("b{i}-r{k}"))).collect();
        client.produce("lag", 0, recs.clone()).await.unwrap();
        want.extend(recs);
    }
    let back = Node::start(spec.configs[2].clone()).await.unwrap();
    let pid = PartitionId::new("lag", 0);
    assert_eq!(read_all_local(&back, &pid, want.len() as u64).await, want);
    let ins = back.inspect().await.unwrap();
    let g = ins.metadata.partition(&pid).unwrap().group;
    let st = ins.groups.iter().find(|s| s.group == g).unwrap();
    assert!(
        st.snapshot_index > 0,
        "caught up through a snapshot: {st:?}"
    );
    assert!(
        back.metrics.snapshots_fetched.get() > 0,
        "segments were streamed in"
    );
    nodes.push(back);
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_corrupt_segment_rebuilds_it_from_the_leader() {
    use chronik_net::partition_store::{group_dir, segment_file_name};
    let dir = tempdir();
    let (spec, mut nodes, client) = compacting_cluster(&dir).await;
    client.create_topic("rot", 1, 3, 2).await.unwrap();
    let pid = PartitionId::new("rot", 0);
    let mut want = Vec::new();
    for i in 0..200 {
        let recs: Vec<Bytes> = (0..10).map(|k| Bytes::from(format!("b{i}-r{k}"))).collect();
        client.produce("rot", 0, recs.clone()).await.unwrap();
        want.extend(recs);
    }
    // Node 3 has applied everything and snapshotted past the first
    // segment; then a bit of that synced segment rots while it is down.
    let group = {
        let n3 = nodes.last().unwrap();
        read_all_local(n3, &pid, want.len() as u64).await;
        let ins = n3.inspect().await.unwrap();
        let g = ins.metadata.partition(&pid).unwrap().group;
        let st = ins.groups.iter().find(|s| s.group == g).unwrap();
        assert!(st.snapshot_index > 0, "{st:?}");
        g
    };
    nodes.pop().unwrap().stop().await.unwrap();
    let seg =
        group_dir(&spec.configs[2].data_dir.join("partitions"), group).join(segment_file_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    // It starts, serves none of the damaged data, and rebuilds the
    // partition from the leader while produces go on.
    // (The segments are checked off the engine, right after the start.)
    let back = Node::start(spec.configs[2].clone()).await.unwrap();
    let mut st = None;
    for _ in 0..100 {
        let ins = back.inspect().await.unwrap();
        st = ins.groups.into_iter().find(|s| s.group == group);
        if st
            .as_ref()
            .and_then(|s| s.repairing.as_deref())
            .is_some_and(|r| r.contains("corrupt"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        st.as_ref()
            .and_then(|s| s.repairing.as_deref())
            .is_some_and(|r| r.contains("corrupt")),
        "{st:?}"
    );
    match back.read_local(&pid, 0, 1 << 20).await {
        Err(chronik_net::NodeError::Refused(e)) => {
            assert_eq!(e.code(), ErrorCode::ReplicaRepairing, "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(f) => panic!("a damaged replica served {} records", f.records.len()),
    }
    for i in 200..220 {
        let recs: Vec<Bytes> = (0..10).map(|k| Bytes::from(format!("b{i}-r{k}"))).collect();
        client.produce("rot", 0, recs.clone()).await.unwrap();
        want.extend(recs);
    }
    assert_eq!(read_all_local(&back, &pid, want.len() as u64).await, want);
    let ins = back.inspect().await.unwrap();
    let st = ins.groups.iter().find(|s| s.group == group).unwrap();
    assert_eq!(st.repairing, None, "{st:?}");
    assert!(back.metrics.snapshots_fetched.get() > 0);
    nodes.push(back);
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_reads_and_min_insync_replicas_on_real_nodes() {
    use chronik_net::proto::{self, ReadConsistency};
    let dir = tempdir();
    let mut spec = spec(3, &dir);
    for c in &mut spec.configs {
        c.engine.isr_max_lag_ms = 1_000;
    }
    let mut nodes = start_all(&spec).await;
    let addrs: Vec<String> = spec
        .configs
        .iter()
        .map(|c| c.client_listen.to_string())
        .collect();
    let client = Client::new(addrs.clone());
    wait_for_nodes(&client, 3).await;
    client.create_topic("f", 1, 3, 2).await.unwrap();
    client.create_topic("strict", 1, 3, 3).await.unwrap();

    // Follower reads: linearizable ones see every acknowledged record.
    for i in 0..50u64 {
        let off = client
            .produce("f", 0, vec![Bytes::from(format!("r{i}"))])
            .await
            .unwrap();
        assert_eq!(off, i);
        let r = client
            .fetch_with("f", 0, 0, 1 << 20, ReadConsistency::Follower)
            .await
            .unwrap();
        assert!(r.high_watermark > i, "follower read missed record {i}");
        assert_eq!(r.records[i as usize].1, Bytes::from(format!("r{i}")));
    }
    let stale = client
        .fetch_with("f", 0, 0, 1 << 20, ReadConsistency::FollowerStale)
        .await
        .unwrap();
    assert!(stale.high_watermark <= 50);
    let bad = proto::FetchRequest {
        topic: "f".into(),
        partition: 0,
        offset: 0,
        max_bytes: 100,
        consistency: 99,
    };
    let mut raw = proto::chronik_client::ChronikClient::connect(format!("http://{}", addrs[0]))
        .await
        .unwrap();
    let e = raw.fetch(bad).await.unwrap().into_inner().error.unwrap();
    assert_eq!(e.error_code(), ErrorCode::InvalidRequest);

    // One replica down: "strict" (min ISR 3) refuses produces once the ISR
    // shrinks, "f" (min ISR 2) goes on.
    client
        .produce("strict", 0, vec![Bytes::from("before")])
        .await
        .unwrap();
    let down = nodes.pop().unwrap();
    down.stop().await.unwrap();
    let quick = Client::with_retry(
        addrs[..2].to_vec(),
        chronik_net::RetryPolicy {
            deadline: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let mut refused = None;
    for _ in 0..50 {
        match quick.produce("strict", 0, vec![Bytes::from("x")]).await {
            Err(e) if e.code() == ErrorCode::NotEnoughReplicas => {
                refused = Some(e);
                break;
            }
            other => {
                eprintln!("strict produce: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
    let refused = refused.expect("produce refused below min_insync_replicas");
    assert!(
        refused
            .to_string()
            .contains("fewer than min_insync_replicas 3"),
        "{refused}"
    );
    quick
        .produce("f", 0, vec![Bytes::from("still")])
        .await
        .unwrap();
    let mut admin = proto::admin_client::AdminClient::connect(format!("http://{}", addrs[0]))
        .await
        .unwrap();
    let st = admin
        .isr_status(proto::IsrStatusRequest {
            topic: String::new(),
            under_min_isr: true,
        })
        .await
        .unwrap()
        .into_inner();
    let under: Vec<&str> = st.partitions.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(under, vec!["strict"]);
    assert!(st.isr_shrinks >= 2, "both partitions shrank: {st:?}");

    // The replica returns and catches up: the ISR is whole again.
    nodes.push(Node::start(spec.configs[2].clone()).await.unwrap());
    client
        .produce("strict", 0, vec![Bytes::from("after")])
        .await
        .unwrap();
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Produces keep being acknowledged (however slow the machine): five more
/// within 30 s.
async fn produces_progress(acks: &std::sync::atomic::AtomicU64) {
    use std::sync::atomic::Ordering;
    let from = acks.load(Ordering::Relaxed);
    for _ in 0..300 {
        if acks.load(Ordering::Relaxed) >= from + 5 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("produce stopped succeeding");
}

/// Whether, within 30 s, `addr` lists `n` nodes, all voters, with no
/// change in flight.
async fn all_voters(addr: &str, n: usize) -> bool {
    for _ in 0..300 {
        let l = list_nodes(addr).await;
        if l.change_in_flight.is_empty()
            && l.nodes.len() == n
            && l.nodes.iter().all(|n| n.role == "voter")
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn list_nodes(addr: &str) -> chronik_net::proto::ListNodesResponse {
    let mut c = chronik_net::proto::admin_client::AdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    c.list_nodes(chronik_net::proto::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_four_nodes_and_shrink_back_under_load() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempdir();
    let spec = spec(3, &dir);
    let nodes = start_all(&spec).await;
    let addrs: Vec<String> = spec
        .configs
        .iter()
        .map(|c| c.client_listen.to_string())
        .collect();
    let client = Arc::new(Client::new(addrs.clone()));
    wait_for_nodes(&client, 3).await;
    client.create_topic("load", 2, 3, 2).await.unwrap();

    // Producers run throughout; every acknowledged record must survive.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut producers = Vec::new();
    for p in 0..2u32 {
        let (c, stop, acks) = (client.clone(), stop.clone(), acks.clone());
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = Bytes::from(format!("p{p}-{i}"));
                i += 1;
                if let Ok(off) = c.produce("load", p, vec![v.clone()]).await {
                    acked.push((off, v));
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            (p, acked)
        }));
    }
    produces_progress(&acks).await;

    // Grow: a fourth node with an empty data dir joins through node 1.
    let mut four = NodeConfig::new(4, free_addr(), free_addr(), vec![], dir.join("n4"));
    four.engine.tick_interval_ms = 20;
    four.join = Some(addrs[0].clone());
    let mut n4 = Node::start(four.clone()).await.unwrap();
    let joined = all_voters(&addrs[1], 4).await;
    assert!(
        joined,
        "node 4 became a voter: {:?}",
        list_nodes(&addrs[1]).await
    );
    // It serves the metadata it caught up on.
    let via4 = Client::new(vec![four.client_listen.to_string()]);
    assert_eq!(via4.metadata().await.unwrap().nodes.len(), 4);

    // Shrink: remove it again (replicas the rebalancer moved onto it, if
    // any, move off first).
    let r = Client::new(vec![addrs[0].clone()])
        .remove_node(4)
        .await
        .unwrap();
    assert_eq!(r.change, "remove node 4");
    let mut gone = false;
    for _ in 0..300 {
        let l = list_nodes(&addrs[2]).await;
        if l.change_in_flight.is_empty() && l.nodes.len() == 3 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "node 4 left: {:?}", list_nodes(&addrs[2]).await);
    produces_progress(&acks).await;
    // The removed node stops and says why.
    let why = tokio::time::timeout(Duration::from_secs(20), n4.stopped())
        .await
        .expect("the removed node stops")
        .unwrap_err()
        .to_string();
    assert!(why.contains("removed from the cluster"), "{why}");
    // Adding a removed id again is refused.
    let mut c =
        chronik_net::proto::admin_client::AdminClient::connect(format!("http://{}", addrs[0]))
            .await
            .unwrap();
    let again = c
        .add_node(chronik_net::proto::AddNodeRequest {
            id: 4,
            peer_addr: "127.0.0.1:1".into(),
            client_addr: "127.0.0.1:2".into(),
            rack: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.error.is_some());

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for p in producers {
        let (p, acked) = p.await.unwrap();
        let f = client.fetch("load", p, 0, 1 << 26).await.unwrap();
        let log: std::collections::BTreeMap<u64, Bytes> = f.records.into_iter().collect();
        for (off, v) in &acked {
            assert_eq!(
                log.get(off),
                Some(v),
                "acknowledged record at {p}/{off} lost"
            );
        }
        total += acked.len();
    }
    assert!(total > 0);
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_moves_its_replicas_to_the_others() {
    let dir = tempdir();
    let spec = spec(4, &dir);
    let mut nodes = start_all(&spec).await;
    let addrs: Vec<String> = spec
        .configs
        .iter()
        .map(|c| c.client_listen.to_string())
        .collect();
    let client = Client::new(addrs.clone());
    wait_for_nodes(&client, 4).await;
    client.create_topic("moved", 4, 3, 2).await.unwrap();
    let mut want = Vec::new();
    for p in 0..4u32 {
        for i in 0..50 {
            let v = Bytes::from(format!("{p}-{i}"));
            client.produce("moved", p, vec![v.clone()]).await.unwrap();
            want.push((p, v));
        }
    }
    // Node 4 hosts replicas of most partitions (replication factor 3 of 4).
    let md = client.metadata().await.unwrap();
    let hosted = md.topics[0]
        .partitions
        .iter()
        .filter(|p| p.replicas.contains(&4))
        .count();
    assert!(hosted > 0);
    let r = Client::new(vec![addrs[0].clone()])
        .remove_node(4)
        .await
        .unwrap();
    assert_eq!(r.change, "remove node 4");
    let mut done = false;
    for _ in 0..600 {
        let l = list_nodes(&addrs[0]).await;
        if l.change_in_flight.is_empty() && l.nodes.len() == 3 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "node 4 left: {:?}", list_nodes(&addrs[0]).await);
    let md = client.metadata().await.unwrap();
    for p in &md.topics[0].partitions {
        assert_eq!(p.replicas.len(), 3);
        assert!(!p.replicas.contains(&4), "{p:?}");
    }
    // Every record is on the remaining nodes' replicas.
    let four = nodes.pop().unwrap();
    let _ = four.stop().await;
    for p in 0..4u32 {
        let f = client.fetch("moved", p, 0, 1 << 20).await.unwrap();
        let got: Vec<Bytes> = f.records.into_iter().map(|(_, v)| v).collect();
        let expect: Vec<Bytes> = want
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(got, expect, "partition {p}");
        let pid = PartitionId::new("moved", p);
        for n in &nodes {
            assert_eq!(
                read_all_local(n, &pid, 50).await,
                expect,
                "partition {p} on a replica"
            );
        }
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_gets_its_share_through_a_rebalance_under_load() {
    use chronik_net::proto::rebalance_request::Action;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = tempdir();
    let mut spec = spec(3, &dir);
    // The operator drives this rebalance (the background loop is off).
    for c in &mut spec.configs {
        c.engine.rebalance.enabled = false;
    }
    let nodes = start_all(&spec).await;
    let addrs: Vec<String> = spec
        .configs
        .iter()
        .map(|c| c.client_listen.to_string())
        .collect();
    let client = Arc::new(Client::new(addrs.clone()));
    wait_for_nodes(&client, 3).await;
    client.create_topic("reb", 12, 3, 2).await.unwrap();

    // Producers on every partition throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for w in 0..3u32 {
        let (c, stop, acks) = (client.clone(), stop.clone(), acks.clone());
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = (w + 3 * i as u32) % 12;
                let v = Bytes::from(format!("w{w}-{i}"));
                i += 1;
                if let Ok(off) = c.produce("reb", p, vec![v.clone()]).await {
                    acked.push((p, off, v));
                    acks.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        }));
    }
    produces_progress(&acks).await;

    let mut four = NodeConfig::new(4, free_addr(), free_addr(), vec![], dir.join("n4"));
    four.engine.tick_interval_ms = 20;
    four.engine.rebalance.enabled = false;
    four.join = Some(addrs[0].clone());
    let n4 = Node::start(four.clone()).await.unwrap();
    let joined = all_voters(&addrs[1], 4).await;
    assert!(joined, "node 4 joined: {:?}", list_nodes(&addrs[1]).await);
    let placement = |md: &chronik_net::proto::MetadataResponse| {
        md.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition, p.replicas.clone()))
            })
            .collect::<Vec<_>>()
    };

    // A dry run shows moves onto node 4 and changes nothing.
    let before = placement(&client.metadata().await.unwrap());
    let plan = client.rebalance(Action::Plan, 0).await.unwrap();
    assert_eq!(plan.moves.len(), 9, "36 replicas over 4 nodes: {plan:?}");
    assert!(plan.moves.iter().all(|m| m.to == 4 && m.isr_headroom >= 0));
    assert!(plan.before.as_ref().unwrap().replicas > 0.2);
    assert!(plan.after.as_ref().unwrap().replicas <= 0.2);
    assert!(plan.estimated_duration_ms > 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(placement(&client.metadata().await.unwrap()), before);
    assert_eq!(client.rebalance(Action::Status, 0).await.unwrap().run, 0);

    // The real thing: started, followed to the end under load.
    let started = client.rebalance(Action::Start, 0).await.unwrap();
    assert!(started.run > 0, "{started:?}");
    let mut done = None;
    for _ in 0..1200 {
        let s = client.rebalance(Action::Status, 0).await.unwrap();
        assert!(
            s.in_flight <= 3,
            "at most max_concurrent_moves at once: {s:?}"
        );
        if s.finished {
            done = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = done.expect("the rebalance finished within 120 s");
    assert!(
        done.moves.iter().all(|m| m.state == "done"),
        "{:?}",
        done.moves
    );
    let current = done.current.unwrap();
    assert!(
        current.replicas <= 0.2 && current.leaders <= 0.2,
        "{current:?}"
    );
    let md = client.metadata().await.unwrap();
    for n in 1..=4u64 {
        let hosted = md.topics[0]
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&n))
            .count();
        assert_eq!(hosted, 9, "node {n}");
    }
    produces_progress(&acks).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut logs = std::collections::BTreeMap::new();
    for p in producers {
        for (p, off, v) in p.await.unwrap() {
            if let std::collections::btree_map::Entry::Vacant(e) = logs.entry(p) {
                let f = client.fetch("reb", p, 0, 1 << 26).await.unwrap();
                e.insert(
                    f.records
                        .into_iter()
                        .collect::<std::collections::BTreeMap<u64, Bytes>>(),
                );
            }
            assert_eq!(
                logs[&p].get(&off),
                Some(&v),
                "acknowledged record {p}/{off} lost"
            );
            total += 1;
        }
    }
    assert!(total > 0);
    n4.stop().await.unwrap();
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
