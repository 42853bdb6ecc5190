//! A local 3-node Chronik cluster in one process, on the in-memory network
//! and disks of `testing::Cluster`: elect, create a topic, produce, crash the
//! leader, produce again, and read everything back.
//!
//! `cargo run -p chronik-core --features testing --example local_cluster`

use bytes::Bytes;
use chronik_core::testing::Cluster;
use chronik_core::{Response, METADATA_GROUP};

fn main() -> Result<(), String> {
    let mut c = Cluster::new(3, 42);
    let md = c
        .elect(METADATA_GROUP, 10_000)
        .ok_or("no metadata leader")?;
    println!("metadata leader: node {md}");
    let parts = c.create_topic("demo", 2, 3)?;
    for p in &parts {
        let g = c.group_of(p).ok_or("no group")?;
        println!("{p}: raft group {g}, leader node {:?}", c.leader_of(g));
    }
    let p = &parts[0];
    let g = c.group_of(p).ok_or("no group")?;
    let produce = |c: &mut Cluster, text: &str| -> Result<(), String> {
        let leader = c.elect(g, 10_000).ok_or("no leader")?;
        let rid = c.produce(leader, p, vec![Bytes::from(text.to_string())]);
        c.run_until(10_000, |c| c.replies.contains_key(&rid));
        match c.replies.get(&rid) {
            Some(Ok(Response::Applied(a))) => {
                println!(
                    "produced {text:?} at offset {} via node {leader}",
                    a.base_offset
                );
                Ok(())
            }
            other => Err(format!("produce failed: {other:?}")),
        }
    };
    produce(&mut c, "hello")?;
    produce(&mut c, "world")?;
    let leader = c.leader_of(g).ok_or("no leader")?;
    println!("crashing node {leader}, the leader of {p}");
    c.crash(leader);
    produce(&mut c, "after the crash")?;
    c.restart(leader);
    if !c.converge(30_000) {
        return Err("cluster did not converge".into());
    }
    let reader = c.leader_of(g).ok_or("no leader")?;
    let rid = c.fetch(reader, p, 0);
    c.run_until(10_000, |c| c.replies.contains_key(&rid));
    match c.replies.get(&rid) {
        Some(Ok(Response::Query(f))) => {
            println!(
                "fetched from node {reader}, high watermark {}:",
                f.high_watermark
            );
            for (offset, r) in &f.records {
                println!("  {offset}: {}", String::from_utf8_lossy(r));
            }
        }
        other => return Err(format!("fetch failed: {other:?}")),
    }
    c.check_acked_durable();
    c.checker.assert_ok();
    println!("every acknowledged record is on every replica; invariants hold");
    Ok(())
}
