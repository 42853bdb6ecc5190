//! `chronik-node dev`: three nodes on loopback in one process, data under
//! one directory, a demo topic, and the next commands to try.

use chronik_core::NodeInfo;
use chronik_net::{Client, Node, NodeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const NODES: u16 = 3;
const DEMO_TOPIC: &str = "demo";

/// The dev cluster's certificates under `data_dir/tls`: made on the first
/// `--tls` run, reused after.
fn dev_certs(data_dir: &std::path::Path) -> Result<PathBuf, crate::certs::CertsError> {
    let dir = data_dir.join("tls");
    let ids: Vec<u64> = (1..=u64::from(NODES)).collect();
    let have = |name: &str| dir.join(format!("{name}.pem")).exists();
    let complete =
        have("ca") && have("client-dev") && ids.iter().all(|i| have(&format!("node-{i}")));
    if !complete {
        crate::certs::create(&crate::certs::CertsArgs {
            dir: dir.clone(),
            nodes: ids,
            hosts: Vec::new(),
            clients: vec!["dev".into()],
            valid_days: 365,
            force: true,
        })?;
    }
    Ok(dir)
}

pub async fn run(data_dir: PathBuf, base_port: u16, auto_rebalance: bool, tls: bool) -> ExitCode {
    let Some(last) = base_port.checked_add(20 + NODES) else {
        eprintln!("error: --base-port {base_port} leaves no room for {NODES} nodes");
        return ExitCode::from(2);
    };
    let _ = last;
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let members: Vec<NodeInfo> = (0..NODES)
        .map(|i| NodeInfo {
            id: u64::from(i) + 1,
            client_addr: addr(base_port + i).to_string(),
            peer_addr: addr(base_port + 10 + i).to_string(),
            rack: None,
        })
        .collect();
    let tls_dir = match tls.then(|| dev_certs(&data_dir)).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create the dev cluster's certificates: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let mut cfg = NodeConfig::new(
            u64::from(i) + 1,
            addr(base_port + 10 + i),
            addr(base_port + i),
            members.clone(),
            data_dir.join(format!("node{}", i + 1)),
        );
        cfg.metrics_listen = Some(addr(base_port + 20 + i));
        cfg.engine.rebalance.enabled = auto_rebalance;
        cfg.tls = tls_dir.as_ref().map(|d| chronik_net::TlsConfig {
            ca: d.join("ca.pem"),
            cert: d.join(format!("node-{}.pem", i + 1)),
            key: d.join(format!("node-{}.key", i + 1)),
            require_client_cert: false,
        });
        match Node::start(cfg).await {
            Ok(n) => nodes.push(n),
            Err(e) => {
                eprintln!("error: node {}: {e}", i + 1);
                for n in nodes {
                    let _ = n.stop().await;
                }
                return ExitCode::FAILURE;
            }
        }
    }
    let client_tls = match &tls_dir {
        Some(d) => match chronik_net::ClientTls::from_files(&d.join("ca.pem"), None, None) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let client =
        Client::new(members.iter().map(|m| m.client_addr.clone()).collect()).with_tls(client_tls);
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(md) = client.metadata().await {
            if md.nodes.len() == usize::from(NODES) {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        eprintln!("error: the local cluster did not come up within 10 s");
    } else {
        match client.create_topic(DEMO_TOPIC, 3, 3, 2).await {
            Ok(_) => println!("created topic {DEMO_TOPIC:?} (3 partitions, 3 replicas)"),
            Err(e) if e.code() == chronik_core::ErrorCode::TopicAlreadyExists => {
                println!(
                    "topic {DEMO_TOPIC:?} already exists (resumed from {})",
                    data_dir.display()
                )
            }
            Err(e) => eprintln!("warning: cannot create the demo topic: {e}"),
        }
    }
    println!("Chronik dev cluster is up, data in {}", data_dir.display());
    let scheme = if tls_dir.is_some() { "https" } else { "http" };
    for m in &members {
        println!(
            "  node {}: client {}  peer {}  metrics {scheme}://127.0.0.1:{}/metrics",
            m.id,
            m.client_addr,
            m.peer_addr,
            base_port + 20 + (m.id as u16 - 1)
        );
    }
    let a = &members[0].client_addr;
    println!("Try, in another terminal:");
    if let Some(d) = &tls_dir {
        println!("  export CHRONIK_CA={}", d.join("ca.pem").display());
        println!(
            "  export CHRONIK_CERT={} CHRONIK_KEY={}   # optional: a client certificate",
            d.join("client-dev.pem").display(),
            d.join("client-dev.key").display()
        );
    }
    println!("  chronik-node topic list --addr {a}");
    println!("  seq 1 5 | chronik-node produce --topic {DEMO_TOPIC} --addr {a}");
    println!("  chronik-node consume --topic {DEMO_TOPIC} --from-beginning --addr {a}");
    println!("Ctrl-C stops the cluster; `chronik-node dev` again resumes it.");
    crate::shutdown_signal().await;
    println!("stopping...");
    // One at a time, gracefully: each hands its leaderships to the nodes
    // still up (the last has nobody left to hand them to).
    let mut code = ExitCode::SUCCESS;
    for n in nodes {
        match n.shutdown().await {
            Ok(report) => {
                for (phase, left) in report.timed_out() {
                    eprintln!(
                        "warning: shutdown phase {phase} timed out: {}",
                        left.join(", ")
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}
