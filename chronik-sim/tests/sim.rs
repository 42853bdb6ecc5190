//! Seeded simulation: a producer runs while nodes crash (losing unsynced
//! writes, sometimes tearing the last one) and the network partitions; then
//! faults heal and every acknowledged record must be readable at its offset.

#![cfg(madsim)]
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bytes::Bytes;
use chronik_sim::SimCluster;
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

#[madsim::test]
async fn acknowledged_records_survive_crashes_and_partitions() {
    let seed = Handle::current().seed();
    let mut rng = thread_rng();
    let n: u64 = rng.gen_range(3..=5);
    println!(
        "seed {seed}: {n} nodes. Replay: MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" \
         CARGO_TARGET_DIR=target/sim cargo test -p chronik-sim --test sim"
    );
    let mut cluster = SimCluster::start(n);
    let client_node = Handle::current()
        .create_node()
        .name("client")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    let client = Arc::new(cluster.client());

    // Bootstrap and create the topic (no faults yet).
    let c = client.clone();
    let created = client_node
        .spawn(async move {
            for _ in 0..100 {
                if c.metadata().await.map(|m| m.nodes.len()).unwrap_or(0) == n as usize {
                    return c.create_topic("sim", 2, 3, 2).await.map(|_| ());
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("cluster never registered its nodes")
        })
        .await
        .unwrap();
    created.unwrap();

    // Safety phase: a producer, and faults.
    let c = client.clone();
    let producer = client_node.spawn(async move {
        let mut acked: BTreeMap<(u32, u64), Bytes> = BTreeMap::new();
        let mut value = 0u64;
        let end = madsim::time::Instant::now() + Duration::from_secs(20);
        while madsim::time::Instant::now() < end {
            value += 1;
            let p = (value % 2) as u32;
            let rec = Bytes::from(format!("v{value}"));
            if let Ok(off) = c.produce("sim", p, vec![rec.clone()]).await {
                acked.insert((p, off), rec);
            }
        }
        acked
    });
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut down: Vec<u64> = Vec::new();
    for _ in 0..8 {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
        let victim = rng.gen_range(1..=n);
        match rng.gen_range(0..4) {
            0 if down.len() + 1 < (n as usize).div_ceil(2) && !down.contains(&victim) => {
                let torn = rng.gen_bool(0.5).then(|| rng.gen::<u64>());
                cluster.kill(victim, torn);
                down.push(victim);
                *faults.entry("kill").or_default() += 1;
            }
            1 if !down.is_empty() => {
                let id = down.remove(0);
                cluster.restart(id);
                *faults.entry("restart").or_default() += 1;
            }
            2 => {
                cluster.clog(victim);
                *faults.entry("isolate").or_default() += 1;
            }
            _ => {
                let other = rng.gen_range(1..=n);
                if other != victim {
                    cluster.clog_link(victim, other);
                    *faults.entry("one-way").or_default() += 1;
                } else {
                    cluster.heal();
                    *faults.entry("heal").or_default() += 1;
                }
            }
        }
    }
    // Liveness phase: heal everything; every acknowledged record is there.
    cluster.heal();
    for id in down.drain(..) {
        cluster.restart(id);
    }
    let acked = producer.await.unwrap();
    println!(
        "seed {seed}: faults {faults:?}, {} produces acknowledged",
        acked.len()
    );
    assert!(!acked.is_empty(), "some produce succeeded");
    let c = client.clone();
    let logs = client_node
        .spawn(async move {
            let mut logs: BTreeMap<u32, Vec<Bytes>> = BTreeMap::new();
            for p in 0..2u32 {
                let mut off = 0;
                let mut out = Vec::new();
                loop {
                    let f = c.fetch("sim", p, off, 1 << 20).await.unwrap();
                    if f.records.is_empty() {
                        break;
                    }
                    off = f.records.last().unwrap().0 + 1;
                    out.extend(f.records.into_iter().map(|(_, r)| r));
                }
                logs.insert(p, out);
            }
            logs
        })
        .await
        .unwrap();
    for ((p, off), rec) in &acked {
        assert_eq!(
            logs[p].get(*off as usize),
            Some(rec),
            "seed {seed}: acknowledged record lost at partition {p} offset {off}"
        );
    }
}
