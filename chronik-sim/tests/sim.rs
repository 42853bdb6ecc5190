//! Seeded simulation of real Chronik nodes. Safety phase: producers and
//! consumers run over several topics while nodes crash (losing unsynced
//! writes, sometimes tearing the last one), get isolated, or lose one
//! direction of a link. Liveness phase: faults heal and final reads must
//! show every acknowledged record. Every client operation goes into a
//! history (JSON Lines, Jepsen's shape) that the checker reads; a failing
//! seed writes it to `target/sim-failures/` and prints its replay command.

#![cfg(madsim)]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bytes::Bytes;
use chronik_net::{Client, ClientError, RetryPolicy};
use chronik_sim::history::{check, poll_value, send_value, Func, History, OpType};
use chronik_sim::SimCluster;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// (topic, partitions) of the workload.
const TOPICS: [(&str, u32); 2] = [("orders", 2), ("events", 1)];
const FINAL_PROCESS: u64 = 1_000_000;

fn partitions() -> Vec<(&'static str, u32)> {
    TOPICS
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (*t, p)))
        .collect()
}

fn key(t: &str, p: u32) -> String {
    format!("{t}-{p}")
}

fn nanos(start: madsim::time::Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn producer_client(addrs: Vec<String>) -> Client {
    Client::with_retry(
        addrs,
        RetryPolicy {
            deadline: Duration::from_secs(5),
            retry_unknown_outcome: false,
            ..RetryPolicy::default()
        },
    )
}

#[madsim::test]
async fn acknowledged_records_survive_crashes_and_partitions() {
    let seed = Handle::current().seed();
    let mut rng = thread_rng();
    let n: u64 = rng.gen_range(3..=5);
    let replay = format!(
        "MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test -p chronik-sim --test sim"
    );
    println!("seed {seed}: {n} nodes, topics {TOPICS:?}. Replay: {replay}");
    let mut cluster = SimCluster::start(n);
    let client_node = Handle::current()
        .create_node()
        .name("clients")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    let addrs = cluster.client_addrs.clone();
    let admin = Arc::new(cluster.client());

    let c = admin.clone();
    client_node
        .spawn(async move {
            for _ in 0..100 {
                if c.metadata().await.map(|m| m.nodes.len()).unwrap_or(0) == n as usize {
                    for (t, parts) in TOPICS {
                        c.create_topic(t, parts, 3, 2).await.unwrap();
                    }
                    return;
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("cluster never registered its nodes")
        })
        .await
        .unwrap();

    let history = Arc::new(History::new());
    let start = madsim::time::Instant::now();
    let end = start + Duration::from_secs(20);
    let next_process = Arc::new(AtomicU64::new(1));
    let values = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        // A producer: sequential sends; a process whose send ended in an
        // unknown outcome is retired and replaced by a new process id.
        let (h, np, vals, addrs) = (
            history.clone(),
            next_process.clone(),
            values.clone(),
            addrs.clone(),
        );
        workers.push(client_node.spawn(async move {
            let client = producer_client(addrs);
            let mut process = np.fetch_add(1, Ordering::Relaxed);
            let mut rng = thread_rng();
            while madsim::time::Instant::now() < end {
                let (t, p) = partitions()[rng.gen_range(0..partitions().len())];
                let v = format!("v{}", vals.fetch_add(1, Ordering::Relaxed));
                h.push(
                    nanos(start),
                    process,
                    OpType::Invoke,
                    Func::Send,
                    send_value(&key(t, p), None, &v),
                );
                match client.produce(t, p, vec![Bytes::from(v.clone())]).await {
                    Ok(off) => {
                        h.push(
                            nanos(start),
                            process,
                            OpType::Ok,
                            Func::Send,
                            send_value(&key(t, p), Some(off), &v),
                        );
                    }
                    Err(ClientError::UnknownOutcome { .. }) => {
                        h.push(
                            nanos(start),
                            process,
                            OpType::Info,
                            Func::Send,
                            send_value(&key(t, p), None, &v),
                        );
                        process = np.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        h.push(
                            nanos(start),
                            process,
                            OpType::Fail,
                            Func::Send,
                            send_value(&key(t, p), None, &v),
                        );
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        // A consumer: polls each partition from where it got to.
        let (h, np, addrs) = (history.clone(), next_process.clone(), addrs.clone());
        workers.push(client_node.spawn(async move {
            let client = Client::with_retry(
                addrs,
                RetryPolicy {
                    deadline: Duration::from_secs(5),
                    ..RetryPolicy::default()
                },
            );
            let process = np.fetch_add(1, Ordering::Relaxed);
            let mut pos: BTreeMap<String, u64> = BTreeMap::new();
            let mut rng = thread_rng();
            while madsim::time::Instant::now() < end {
                let (t, p) = partitions()[rng.gen_range(0..partitions().len())];
                let k = key(t, p);
                let from = *pos.get(&k).unwrap_or(&0);
                h.push(
                    nanos(start),
                    process,
                    OpType::Invoke,
                    Func::Poll,
                    poll_value(&k, from, &[], None),
                );
                match client.fetch(t, p, from, 4096).await {
                    Ok(f) => {
                        let recs: Vec<(u64, String)> = f
                            .records
                            .iter()
                            .map(|(o, r)| (*o, String::from_utf8_lossy(r).into_owned()))
                            .collect();
                        if let Some((o, _)) = recs.last() {
                            pos.insert(k.clone(), o + 1);
                        }
                        h.push(
                            nanos(start),
                            process,
                            OpType::Ok,
                            Func::Poll,
                            poll_value(&k, from, &recs, Some(f.high_watermark)),
                        );
                    }
                    Err(_) => {
                        h.push(
                            nanos(start),
                            process,
                            OpType::Fail,
                            Func::Poll,
                            poll_value(&k, from, &[], None),
                        );
                    }
                }
                madsim::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
            }
        }));
    }

    // Safety phase: the fault plan, decided by the seed.
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut down: Vec<u64> = Vec::new();
    let mut plan = Vec::new();
    for _ in 0..8 {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        let victim = rng.gen_range(1..=n);
        match rng.gen_range(0..4) {
            0 if down.len() + 1 < (n as usize).div_ceil(2) && !down.contains(&victim) => {
                let torn = rng.gen_bool(0.5).then(|| rng.gen::<u64>());
                let scrambled = rng.gen_bool(0.5);
                cluster.kill(victim, torn, scrambled);
                down.push(victim);
                let how = match (torn, scrambled) {
                    (None, _) => "",
                    (Some(_), false) => " (torn)",
                    (Some(_), true) => " (torn, scrambled)",
                };
                plan.push(format!("kill {victim}{how}"));
                *faults.entry("kill").or_default() += 1;
            }
            1 if !down.is_empty() => {
                let id = down.remove(0);
                cluster.restart(id);
                plan.push(format!("restart {id}"));
                *faults.entry("restart").or_default() += 1;
            }
            2 => {
                cluster.clog(victim);
                plan.push(format!("isolate {victim}"));
                *faults.entry("isolate").or_default() += 1;
            }
            _ => {
                let other = rng.gen_range(1..=n);
                if other != victim {
                    cluster.clog_link(victim, other);
                    plan.push(format!("cut {victim}->{other}"));
                    *faults.entry("one-way").or_default() += 1;
                } else {
                    cluster.heal();
                    plan.push("heal".into());
                    *faults.entry("heal").or_default() += 1;
                }
            }
        }
    }
    // Liveness phase: heal, restart, let the workload finish, read all.
    cluster.heal();
    for id in down.drain(..) {
        cluster.restart(id);
    }
    for w in workers {
        w.await.unwrap();
    }
    let (h, c) = (history.clone(), admin.clone());
    let addrs_final = addrs.clone();
    client_node
        .spawn(async move {
            for (t, p) in partitions() {
                let k = key(t, p);
                let mut off = 0;
                loop {
                    h.push(
                        nanos(start),
                        FINAL_PROCESS,
                        OpType::Invoke,
                        Func::Poll,
                        poll_value(&k, off, &[], None),
                    );
                    let f = match c.fetch(t, p, off, 1 << 20).await {
                        Ok(f) => f,
                        Err(e) => {
                            for a in &addrs_final {
                                eprintln!("status of {a}: {:?}", chronik_sim::node_status(a).await);
                            }
                            panic!("final read of {t}-{p} failed after healing: {e}");
                        }
                    };
                    let recs: Vec<(u64, String)> = f
                        .records
                        .iter()
                        .map(|(o, r)| (*o, String::from_utf8_lossy(r).into_owned()))
                        .collect();
                    h.push(
                        nanos(start),
                        FINAL_PROCESS,
                        OpType::Ok,
                        Func::Poll,
                        poll_value(&k, off, &recs, Some(f.high_watermark)),
                    );
                    match recs.last() {
                        Some((o, _)) => off = o + 1,
                        None => break,
                    }
                }
            }
        })
        .await
        .unwrap();

    let report = check(&history.ops(), Some(FINAL_PROCESS));
    println!(
        "seed {seed}: plan {plan:?}; faults {faults:?}; {} sends and {} polls ok; {} ops checked",
        report.sends_ok,
        report.polls_ok,
        history.ops().len()
    );
    if !report.anomalies.is_empty() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("seed-{seed}.jsonl"));
        let _ = std::fs::write(&file, history.to_jsonl());
        panic!(
            "seed {seed}: {} anomalies, first: {:?}\nhistory: {}\nreplay: {replay}",
            report.anomalies.len(),
            &report.anomalies[..report.anomalies.len().min(5)],
            file.display()
        );
    }
    assert!(report.sends_ok > 0, "seed {seed}: some send succeeded");
}
