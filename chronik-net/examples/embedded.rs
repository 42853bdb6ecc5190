//! A one-node Chronik cluster inside your own tokio application.
//!
//! `cargo run -p chronik-net --example embedded`

use bytes::Bytes;
use chronik_core::NodeInfo;
use chronik_net::{Client, Node, NodeConfig};
use std::net::SocketAddr;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let peer: SocketAddr = "127.0.0.1:19192".parse()?;
    let client_addr: SocketAddr = "127.0.0.1:19193".parse()?;
    let dir = std::env::temp_dir().join(format!("chronik-embedded-{}", std::process::id()));
    let me = NodeInfo {
        id: 1,
        peer_addr: peer.to_string(),
        client_addr: client_addr.to_string(),
        rack: None,
    };
    let node = Node::start(NodeConfig::new(1, peer, client_addr, vec![me], &dir)).await?;

    let client = Client::new(vec![node.client_addr.to_string()]);
    // The first leader registers the node; wait until it is in metadata.
    while client.metadata().await.map(|m| m.nodes.len()).unwrap_or(0) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    client.create_topic("greetings", 1, 1, 1).await?;
    let offset = client
        .produce("greetings", 0, vec![Bytes::from("hello, chronik")])
        .await?;
    let fetched = client.fetch("greetings", 0, offset, 1024).await?;
    println!(
        "offset {offset}: {}",
        String::from_utf8_lossy(&fetched.records[0].1)
    );

    let report = node.shutdown().await?;
    println!("stopped gracefully in {} ms", report.total_ms);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
