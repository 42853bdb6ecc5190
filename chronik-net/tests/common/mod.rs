//! What the real-node tests share: free loopback ports, a cluster spec,
//! starting it and waiting for it.

#![allow(dead_code)] // each test file uses its own part

use chronik_core::NodeInfo;
use chronik_net::{Client, Node, NodeConfig, NodeHandle};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port_below_ephemeral()))
}

/// A free loopback port below the kernel's ephemeral range, so outgoing
/// connections (which take ephemeral ports) never grab it between this
/// check and the node binding it.
pub fn free_port_below_ephemeral() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let p = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2_700;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub struct Spec {
    pub configs: Vec<NodeConfig>,
}

impl Spec {
    /// A client that knows every node's client address.
    pub fn client(&self) -> Client {
        Client::new(
            self.configs
                .iter()
                .map(|c| c.client_listen.to_string())
                .collect(),
        )
    }
}

pub fn spec(n: u64, dir: &Path) -> Spec {
    let addrs: Vec<(SocketAddr, SocketAddr)> = (0..n).map(|_| (free_addr(), free_addr())).collect();
    let infos: Vec<NodeInfo> = addrs
        .iter()
        .enumerate()
        .map(|(i, (p, c))| NodeInfo {
            id: i as u64 + 1,
            peer_addr: p.to_string(),
            client_addr: c.to_string(),
            rack: None,
        })
        .collect();
    let configs = addrs
        .iter()
        .enumerate()
        .map(|(i, (p, c))| {
            let mut cfg = NodeConfig::new(
                i as u64 + 1,
                *p,
                *c,
                infos.clone(),
                dir.join(format!("n{}", i + 1)),
            );
            cfg.engine.tick_interval_ms = 20;
            cfg.engine.log_compact_threshold_entries = 500;
            cfg
        })
        .collect();
    Spec { configs }
}

pub async fn start_all(spec: &Spec) -> Vec<NodeHandle> {
    let mut nodes = Vec::new();
    for c in &spec.configs {
        nodes.push(Node::start(c.clone()).await.unwrap());
    }
    nodes
}

pub async fn wait_for_nodes(client: &Client, n: usize) {
    for _ in 0..200 {
        if let Ok(md) = client.metadata().await {
            if md.nodes.len() == n {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cluster did not register its nodes");
}

pub fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "chronik-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
