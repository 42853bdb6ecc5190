//! Real processes: `kill -9` of a node under load, restart and catch-up;
//! all three killed and restarted with every acknowledged record intact;
//! a rolling restart with SIGTERM under load that clients do not notice;
//! bad config refused with exit code 2. The crash and restart tests run
//! plaintext and with TLS on every port.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use bytes::Bytes;
use chronik_net::proto::NodeStatusRequest;
use chronik_net::Client;

use common::{until_safe, wait_ready, Cluster, BIN};

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// (commit, applied) of a partition group on one node, by admin API.
async fn group_progress(client: &Client, addr: &str, group: u64) -> Option<(u64, u64)> {
    let s = client
        .ask_node(addr, |mut a| async move {
            a.node_status(NodeStatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
        .ok()?;
    s.groups
        .iter()
        .find(|g| g.group == group)
        .map(|g| (g.commit, g.applied))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_then_restart_loses_nothing() {
    kill9_under_load_then_restart(Cluster::new(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_then_restart_loses_nothing_with_tls() {
    kill9_under_load_then_restart(Cluster::with_tls(3, "", "")).await;
}

async fn kill9_under_load_then_restart(mut c: Cluster) {
    for id in 1..=3 {
        c.start(id);
    }
    let client = Arc::new(c.client());
    wait_ready(&client, 3).await;
    let topic = client.create_topic("load", 1, 3, 2).await.unwrap();
    let group = topic.partitions[0].group;

    // A producer that keeps going through the crash; every acknowledged
    // batch is remembered with its offsets.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let client = client.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked: Vec<(u64, Vec<Bytes>)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let recs: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("v{n}-{i}"))).collect();
                n += 1;
                if let Ok(base) = client.produce("load", 0, recs.clone()).await {
                    acked.push((base, recs));
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let md = client.metadata().await.unwrap();
    let leader = md.topics[0].partitions[0].leader.max(1);
    c.kill9(leader);
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.start(leader);
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = producer.await.unwrap();
    assert!(
        acked.len() > 20,
        "the producer made progress: {}",
        acked.len()
    );

    // The restarted node catches up: applies everything its peers commit.
    let addr = c.client_addrs[leader as usize - 1].clone();
    let mut caught_up = false;
    for _ in 0..200 {
        let mut commits = Vec::new();
        for a in &c.client_addrs {
            commits.push(group_progress(&client, a, group).await);
        }
        let max_commit = commits.iter().flatten().map(|(c, _)| *c).max().unwrap_or(0);
        if let Some((_, applied)) = group_progress(&client, &addr, group).await {
            if applied >= max_commit && max_commit > 0 {
                caught_up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(caught_up, "node {leader} caught up after restart");

    // All three killed at once, then restarted: every acknowledged record
    // is at its offset.
    for id in 1..=3 {
        c.kill9(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client();
    let mut records: Vec<Bytes> = Vec::new();
    let mut off = 0;
    loop {
        let f = client.fetch("load", 0, off, 1 << 20).await.unwrap();
        if f.records.is_empty() {
            break;
        }
        off = f.records.last().unwrap().0 + 1;
        records.extend(f.records.into_iter().map(|(_, r)| r));
    }
    for (base, recs) in &acked {
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(
                records.get(*base as usize + i),
                Some(r),
                "acknowledged record at {}",
                base + i as u64
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_under_load_loses_nothing() {
    rolling_restart_with_sigterm_under_load(Cluster::new(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_sigterm_under_load_loses_nothing_with_tls() {
    rolling_restart_with_sigterm_under_load(Cluster::with_tls(3, "", "")).await;
}

async fn rolling_restart_with_sigterm_under_load(mut c: Cluster) {
    const PARTITIONS: u32 = 3;
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client();
    wait_ready(&client, 3).await;
    client.create_topic("rr", PARTITIONS, 3, 2).await.unwrap();

    // Per partition a producer and a reader, each with its own client.
    type Acks = Arc<std::sync::Mutex<Vec<(u32, Instant, u64, Bytes)>>>;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Acks = Arc::default();
    let errors: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for p in 0..PARTITIONS {
        let (st, ac, er, cl) = (stop.clone(), acks.clone(), errors.clone(), c.client());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !st.load(Ordering::Relaxed) {
                let v = Bytes::from(format!("p{p}-{i}"));
                match cl.produce("rr", p, vec![v.clone()]).await {
                    Ok(offset) => ac.lock().unwrap().push((p, Instant::now(), offset, v)),
                    Err(e) => er.lock().unwrap().push(format!("produce p{p}: {e}")),
                }
                i += 1;
            }
        }));
        let (st, er, cl) = (stop.clone(), errors.clone(), c.client());
        tasks.push(tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                if let Err(e) = cl.fetch("rr", p, 0, 4096).await {
                    er.lock().unwrap().push(format!("fetch p{p}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let safe = |c: &Cluster, id: u64| c.cli(&["rolling-restart-check", "--id", &id.to_string()]);
    let started = Instant::now();
    for id in 1..=3u64 {
        // One node at a time: the next goes once the check says so (its
        // peers' replicas back in every ISR).
        assert!(
            until_safe(&c, id).await,
            "node {id}: {}",
            String::from_utf8_lossy(&safe(&c, id).stdout)
        );
        let t = Instant::now();
        println!("node {id}: SIGTERM at {} ms", started.elapsed().as_millis());
        let status = c.sigterm(id);
        assert_eq!(status.code(), Some(0), "node {id} shut down cleanly");
        println!(
            "node {id}: SIGTERM to exit in {} ms",
            t.elapsed().as_millis()
        );
        c.start(id);
    }
    // Everything back in sync.
    for id in 1..=3u64 {
        assert!(until_safe(&c, id).await, "node {id} back in sync");
    }
    let finished = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    let acks = acks.lock().unwrap().clone();
    for p in 0..PARTITIONS {
        // From the last acknowledgement before the restarts to the first
        // after them.
        let all: Vec<Instant> = acks.iter().filter(|a| a.0 == p).map(|a| a.1).collect();
        let from = all.iter().rposition(|t| *t < started).unwrap_or(0);
        let to = all
            .iter()
            .position(|t| *t > finished)
            .unwrap_or(all.len() - 1);
        let times = &all[from..=to];
        let gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        println!(
            "partition {p}: {} produces acknowledged during the rolling restart, longest gap between two: {} ms",
            times.len(),
            gap.as_millis()
        );
        assert!(
            all.last().is_some_and(|t| *t > finished),
            "partition {p} acknowledged produces after the restarts"
        );
    }
    for (p, _, offset, value) in &acks {
        let f = match client.fetch("rr", *p, *offset, 1).await {
            Ok(f) => f,
            Err(e) => panic!("fetch p{p} at {offset}: {e}"),
        };
        assert_eq!(
            f.records.first().map(|r| (&r.0, &r.1)),
            Some((offset, value))
        );
    }
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("chronik-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "node_id = 1\npeer_listen = \"127.0.0.1:1\"\n",
            "client_listen",
        ),
        ("nod_id = 1\n", "nod_id"),
        ("node_id = \"one\"\n", "node_id"),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let path: &Path = &dir.join(format!("bad{i}.toml"));
        std::fs::write(path, text).unwrap();
        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{field} not named in: {err}");
    }
    let out = Command::new(BIN)
        .args(["run", "--config", "/nonexistent/node.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
