//! The Chronik side: a `chronik-node dev` cluster (three nodes in one
//! process, WAL synced before acknowledging) and a 1-partition topic of
//! replication 3.

use super::measure::{closed_loop, merged, Tally, Window};
use super::procs::Servers;
use super::workload::{Kind, Workload};
use bytes::Bytes;
use chronik_net::proto::ReadConsistency;
use chronik_net::{Client, RetryPolicy};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "compare";

pub struct Chronik {
    servers: Servers,
    addrs: Vec<String>,
}

impl Chronik {
    pub async fn start(
        binary: &Path,
        base_port: u16,
        value_size: usize,
    ) -> Result<Chronik, String> {
        if !binary.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p chronik-node`, or name it with --chronik-node",
                binary.display()
            ));
        }
        let mut servers = Servers::new("chronik-compare")?;
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("dev")
            .arg("--data-dir")
            .arg(servers.dir.join("data"))
            .arg("--base-port")
            .arg(base_port.to_string())
            .arg("--no-auto-rebalance");
        servers.spawn("chronik-dev", cmd)?;
        let addrs: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", base_port + i))
            .collect();
        let client = Client::new(addrs.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            servers.check_running()?;
            match client.metadata().await {
                Ok(md) if md.nodes.len() == 3 => break,
                _ if Instant::now() > deadline => {
                    return Err("the Chronik dev cluster did not come up within 30 s".into())
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        client
            .create_topic(TOPIC, 1, 3, 2)
            .await
            .map_err(|e| format!("creating topic {TOPIC}: {e}"))?;
        // Something to read, and a leader elected and serving.
        client
            .produce(TOPIC, 0, vec![Bytes::from(vec![b'r'; value_size]); 10])
            .await
            .map_err(|e| format!("first produce: {e}"))?;
        Ok(Chronik { servers, addrs })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.pids()
    }

    pub fn check_running(&mut self) -> Result<(), String> {
        self.servers.check_running()
    }

    pub async fn run(&self, w: &Workload, value_size: usize, window: Window) -> Tally {
        let mut tasks = Vec::new();
        for _ in 0..w.clients {
            // One client (its own connections) per bench client, as on the
            // etcd side.
            let c = Arc::new(Client::with_retry(self.addrs.clone(), retry()));
            let kind = w.kind;
            tasks.push(tokio::spawn(async move {
                let payload = Bytes::from(vec![b'x'; value_size]);
                closed_loop(window, || {
                    let c = c.clone();
                    let payload = payload.clone();
                    async move {
                        match kind {
                            Kind::Write { batch } => c
                                .produce(TOPIC, 0, vec![payload; batch])
                                .await
                                .map(|_| batch as u64)
                                .map_err(|e| e.to_string()),
                            Kind::FollowerRead => c
                                .fetch_with(
                                    TOPIC,
                                    0,
                                    0,
                                    value_size as u64,
                                    ReadConsistency::Follower,
                                )
                                .await
                                .map_err(|e| e.to_string())
                                .and_then(|f| match f.records.len() {
                                    0 => Err("a fetch returned no record".to_string()),
                                    _ => Ok(1),
                                }),
                        }
                    }
                })
                .await
            }));
        }
        merged(tasks).await
    }
}

/// A request that has not succeeded within a second counts as an error
/// (with its reason) rather than stalling its client for the default 30 s.
fn retry() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(1),
        ..RetryPolicy::default()
    }
}
