//! Graceful shutdown on real tokio nodes: a rolling restart under produce
//! and fetch load loses nothing and shows clients no error, and a node in
//! maintenance leads nothing until it leaves maintenance.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use bytes::Bytes;
use chronik_core::{Role, METADATA_GROUP};
use chronik_net::{Client, Node, NodeHandle};
use common::*;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 3;

/// Acknowledged produces: (partition, when, offset, record).
type Acks = Mutex<Vec<(u32, Instant, u64, Bytes)>>;

/// Until `pred` holds, checking every 100 ms for 30 s.
async fn eventually<F, Fut>(what: &str, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if pred().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 30 s: {what}");
}

async fn leads_nothing(node: &NodeHandle) -> bool {
    node.inspect()
        .await
        .unwrap()
        .groups
        .iter()
        .all(|g| g.role != Role::Leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing_and_clients_see_no_error() {
    let dir = tempdir();
    let spec = spec(3, &dir);
    let mut nodes: Vec<Option<NodeHandle>> = start_all(&spec).await.into_iter().map(Some).collect();
    let addrs: Vec<String> = spec
        .configs
        .iter()
        .map(|c| c.client_listen.to_string())
        .collect();
    let client = Client::new(addrs.clone());
    wait_for_nodes(&client, 3).await;
    client.create_topic("rr", PARTITIONS, 3, 2).await.unwrap();

    // One producer and one reader per partition, each with its own client.
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Acks> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..PARTITIONS {
        let (stop2, acks, errors2) = (stop.clone(), acks.clone(), errors.clone());
        let c = Client::new(addrs.clone());
        tasks.push(tokio::spawn(async move {
            let (stop, errors) = (stop2, errors2);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = Bytes::from(format!("p{p}-{i}"));
                match c.produce("rr", p, vec![v.clone()]).await {
                    Ok(offset) => acks.lock().push((p, Instant::now(), offset, v)),
                    Err(e) => errors.lock().push(format!("produce to p{p}: {e}")),
                }
                i += 1;
            }
        }));
        let (stop, errors) = (stop.clone(), errors.clone());
        let c = Client::new(addrs.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = c.fetch("rr", p, 0, 4096).await {
                    errors.lock().push(format!("fetch from p{p}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let acked = |acks: &Acks| acks.lock().len();
    eventually("produces acknowledged", || async { acked(&acks) >= 30 }).await;

    let started = Instant::now();
    for i in 0..3 {
        let id = i as u64 + 1;
        eventually(&format!("restarting node {id} is safe"), || {
            let c = &client;
            async move { c.restart_check(id).await.is_ok_and(|r| r.safe) }
        })
        .await;
        let before = acked(&acks);
        let node = nodes[i].take().unwrap();
        println!("node {id} stops at {} ms", started.elapsed().as_millis());
        let report = node.shutdown().await.unwrap();
        assert!(report.clean(), "node {id}: {report:?}");
        println!(
            "node {id} stopped gracefully in {} ms: {:?}",
            report.total_ms,
            report
                .phases
                .iter()
                .map(|p| (p.phase.name(), p.duration_ms))
                .collect::<Vec<_>>()
        );
        nodes[i] = Some(Node::start(spec.configs[i].clone()).await.unwrap());
        println!(
            "node {id} restarted at {} ms",
            started.elapsed().as_millis()
        );
        // Its replicas back in every ISR before the next node goes.
        eventually(&format!("node {id} back in every ISR"), || {
            let c = &client;
            async move {
                // The metadata leader's view: the ISR the restart check
                // of the next node will judge by.
                let Ok(nodes) = c.list_nodes().await else {
                    return false;
                };
                let Some(leader) = nodes.nodes.iter().find(|n| n.id == nodes.metadata_leader)
                else {
                    return false;
                };
                let addr = leader.client_addr.clone();
                c.ask_node(&addr, |mut a| async move {
                    a.isr_status(chronik_net::proto::IsrStatusRequest::default())
                        .await
                        .map(|r| r.into_inner())
                })
                .await
                .is_ok_and(|r| {
                    r.partitions.len() == PARTITIONS as usize
                        && r.partitions.iter().all(|p| p.isr.contains(&id))
                })
            }
        })
        .await;
        eventually("produces go on", || async { acked(&acks) >= before + 30 }).await;
    }
    let finished = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let errors = errors.lock().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let acks = acks.lock().clone();
    // The longest wait between two acknowledged produces of a partition
    // while the nodes restarted.
    for p in 0..PARTITIONS {
        let times: Vec<Instant> = acks
            .iter()
            .filter(|a| a.0 == p && a.1 >= started && a.1 <= finished)
            .map(|a| a.1)
            .collect();
        let (gap, at) = times
            .windows(2)
            .map(|w| (w[1] - w[0], w[0] - started))
            .max()
            .unwrap_or_default();
        println!(
            "partition {p}: {} produces acknowledged during the rolling restart, longest gap {} ms (from {} ms into it)",
            times.len(),
            gap.as_millis(),
            at.as_millis()
        );
    }
    // Every acknowledged record is where it was acknowledged.
    for (p, _, offset, value) in &acks {
        let f = client.fetch("rr", *p, *offset, 1).await.unwrap();
        assert_eq!(
            f.records.first().map(|r| (&r.0, &r.1)),
            Some((offset, value))
        );
    }
    for n in nodes.into_iter().flatten() {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_maintenance_leads_nothing_and_is_listed_so() {
    let dir = tempdir();
    let spec = spec(3, &dir);
    let nodes = start_all(&spec).await;
    let client = spec.client();
    wait_for_nodes(&client, 3).await;
    client.create_topic("m", 3, 3, 2).await.unwrap();
    // Whoever leads the metadata group goes into maintenance.
    let leader = loop {
        if let Some(l) = nodes[0].inspect().await.unwrap().leader_of(METADATA_GROUP) {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let node = &nodes[leader as usize - 1];
    client.maintenance(leader, true).await.unwrap();
    eventually("the node in maintenance leads nothing", || {
        leads_nothing(node)
    })
    .await;
    let listed = client.list_nodes().await.unwrap();
    let me = listed.nodes.iter().find(|n| n.id == leader).unwrap();
    assert!(me.maintenance);
    for p in 0..3 {
        client
            .produce("m", p, vec![Bytes::from("x")])
            .await
            .unwrap();
    }
    // Nodes that do not exist are refused by name.
    let e = client.maintenance(42, true).await.unwrap_err();
    assert!(e.to_string().contains("42"), "{e}");
    client.maintenance(leader, false).await.unwrap();
    let listed = client.list_nodes().await.unwrap();
    assert!(listed.nodes.iter().all(|n| !n.maintenance));
    for n in nodes {
        n.stop().await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
