//! A cluster of real `chronik-node run` processes on loopback, shared by
//! the process-level tests.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part

use chronik_net::Client;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_chronik-node");

pub fn free_port() -> u16 {
    free_port_below_ephemeral()
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

pub struct Cluster {
    pub dir: PathBuf,
    pub configs: Vec<PathBuf>,
    pub client_addrs: Vec<String>,
    pub peer_addrs: Vec<String>,
    /// Where each node serves `/metrics`.
    pub metrics_addrs: Vec<String>,
    pub children: BTreeMap<u64, Child>,
    /// With TLS: the directory of `chronik-node certs` (CA, `node-<id>`
    /// and `client-admin` files).
    pub tls: Option<PathBuf>,
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        Cluster::with_settings(n, "", "")
    }

    /// `settings` go into every node's config file at the top level,
    /// `engine` into its `[engine]` table.
    pub fn with_settings(n: u64, settings: &str, engine: &str) -> Cluster {
        Cluster::build(n, settings, engine, None)
    }

    /// Every port over TLS: a CA, node certificates and a client
    /// certificate `client-admin` made by `chronik-node certs`.
    pub fn with_tls(n: u64, settings: &str, engine: &str) -> Cluster {
        Cluster::build(n, settings, engine, Some(""))
    }

    /// With TLS and `tls` added to every node's `[tls]` table.
    pub fn with_tls_settings(n: u64, tls: &str) -> Cluster {
        Cluster::build(n, "", "", Some(tls))
    }

    fn build(n: u64, settings: &str, engine: &str, tls: Option<&str>) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "chronik-proc-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let metrics_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut members = String::new();
        for (i, (p, c)) in ports.iter().enumerate() {
            members.push_str(&format!(
                "[[initial_cluster]]\nid = {}\npeer_addr = \"127.0.0.1:{p}\"\nclient_addr = \"127.0.0.1:{c}\"\n",
                i + 1
            ));
        }
        let certs = tls.map(|_| {
            let certs = dir.join("certs");
            let mut args = vec!["certs".to_string(), "--dir".into()];
            args.push(certs.display().to_string());
            for i in 1..=n + 2 {
                args.extend(["--node".into(), i.to_string()]);
            }
            args.extend(["--client".into(), "admin".into()]);
            let out = Command::new(BIN).args(&args).output().unwrap();
            assert!(out.status.success(), "certs: {out:?}");
            certs
        });
        let mut configs = Vec::new();
        for (i, (p, c)) in ports.iter().enumerate() {
            let path = dir.join(format!("node{}.toml", i + 1));
            let (plaintext, tls_section) = match &certs {
                None => ("plaintext = true\n".to_string(), String::new()),
                Some(d) => (
                    String::new(),
                    format!(
                        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n{}\n",
                        d.join("ca.pem").display(),
                        d.join(format!("node-{}.pem", i + 1)).display(),
                        d.join(format!("node-{}.key", i + 1)).display(),
                        tls.unwrap_or_default()
                    ),
                ),
            };
            let text = format!(
                "{plaintext}node_id = {}\npeer_listen = \"127.0.0.1:{p}\"\nclient_listen = \"127.0.0.1:{c}\"\n\
                 metrics_listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n{settings}\n\
                 [engine]\ntick_interval_ms = 20\nlog_compact_threshold_entries = 200\n{engine}\n{tls_section}{members}",
                i + 1,
                metrics_ports[i],
                dir.join(format!("data{}", i + 1)).display()
            );
            std::fs::write(&path, text).unwrap();
            configs.push(path);
        }
        Cluster {
            dir,
            configs,
            client_addrs: ports
                .iter()
                .map(|(_, c)| format!("127.0.0.1:{c}"))
                .collect(),
            peer_addrs: ports
                .iter()
                .map(|(p, _)| format!("127.0.0.1:{p}"))
                .collect(),
            metrics_addrs: metrics_ports
                .iter()
                .map(|m| format!("127.0.0.1:{m}"))
                .collect(),
            children: BTreeMap::new(),
            tls: certs,
        }
    }

    /// The `--ca/--cert/--key` arguments of the CLI (the admin client
    /// certificate), none without TLS.
    pub fn tls_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(d) => vec![
                "--ca".into(),
                d.join("ca.pem").display().to_string(),
                "--cert".into(),
                d.join("client-admin.pem").display().to_string(),
                "--key".into(),
                d.join("client-admin.key").display().to_string(),
            ],
        }
    }

    pub fn start(&mut self, id: u64) {
        self.start_with(id, &[]);
    }

    /// Starts node `id` with extra command-line arguments.
    pub fn start_with(&mut self, id: u64, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{id}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.configs[id as usize - 1])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.insert(id, child);
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.children.remove(&id) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM: the graceful shutdown runs; returns the exit status.
    pub fn sigterm(&mut self, id: u64) -> std::process::ExitStatus {
        let mut c = self.children.remove(&id).expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM");
        c.wait().unwrap()
    }

    /// `chronik-node cluster ARGS --addr (node 1's client address)`.
    /// `chronik-node cluster ARGS --addr ADDR`.
    pub fn cli_at(&self, addr: &str, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("cluster")
            .args(args)
            .args(["--addr", addr])
            .args(self.tls_args())
            .output()
            .unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("cluster")
            .args(args)
            .args(["--addr", &self.client_addrs[0]])
            .args(self.tls_args())
            .output()
            .unwrap()
    }

    /// A node's log so far (its stderr).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{id}.log"))).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        let tls = self.tls.as_ref().map(|d| {
            chronik_net::ClientTls::from_files(
                &d.join("ca.pem"),
                Some(&d.join("client-admin.pem")),
                Some(&d.join("client-admin.key")),
            )
            .unwrap()
        });
        Client::new(self.client_addrs.clone()).with_tls(tls)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.children.keys().copied().collect();
        for id in ids {
            self.kill9(id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn wait_ready(client: &Client, nodes: usize) {
    for _ in 0..300 {
        if let Ok(md) = client.metadata().await {
            if md.nodes.len() == nodes {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cluster did not come up");
}

/// Whether `cluster rolling-restart-check --id ID` says yes within 30 s.
pub async fn until_safe(c: &Cluster, id: u64) -> bool {
    for _ in 0..300 {
        if c.cli(&["rolling-restart-check", "--id", &id.to_string()])
            .status
            .success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
