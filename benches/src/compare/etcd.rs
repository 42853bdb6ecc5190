//! The etcd side: three etcd members on loopback (Debian's `etcd-server`,
//! default settings: every write synced before it is acknowledged) and
//! the Rust `etcd-client`, one client per bench client.

use super::measure::{closed_loop, merged, Tally, Window};
use super::procs::Servers;
use super::workload::{Kind, Workload};
use etcd_client::Client;
use std::time::{Duration, Instant};

const READ_KEY: &str = "compare-read";

pub struct Etcd {
    servers: Servers,
    leader: String,
    followers: Vec<String>,
    pub version: String,
}

/// Says how to install etcd when it is missing.
fn etcd_binary() -> Result<String, String> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
    match std::process::Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(bin),
        _ => Err(format!(
            "no etcd server found ({bin}): install Debian's etcd-server (`sudo apt-get install etcd-server`), or name the binary with ETCD_BIN"
        )),
    }
}

impl Etcd {
    pub async fn start(base_port: u16, value_size: usize) -> Result<Etcd, String> {
        let bin = etcd_binary()?;
        let version = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let mut servers = Servers::new("etcd-compare")?;
        let client_url = |i: u16| format!("http://127.0.0.1:{}", base_port + i);
        let peer_url = |i: u16| format!("http://127.0.0.1:{}", base_port + 10 + i);
        let initial: Vec<String> = (0..3).map(|i| format!("e{i}={}", peer_url(i))).collect();
        for i in 0..3u16 {
            let mut cmd = std::process::Command::new(&bin);
            cmd.arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(servers.dir.join(format!("e{i}")))
                .arg("--listen-client-urls")
                .arg(client_url(i))
                .arg("--advertise-client-urls")
                .arg(client_url(i))
                .arg("--listen-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-advertise-peer-urls")
                .arg(peer_url(i))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-token")
                .arg("chronik-compare")
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--logger")
                .arg("zap")
                .arg("--log-level")
                .arg("error");
            servers.spawn(&format!("etcd-{i}"), cmd)?;
        }
        let endpoints: Vec<String> = (0..3).map(client_url).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (leader, followers) = loop {
            servers.check_running()?;
            match roles(&endpoints).await {
                Ok(found) => break found,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("etcd did not elect a leader within 30 s: {e}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let mut c = Client::connect([leader.as_str()], None)
            .await
            .map_err(|e| format!("{leader}: {e}"))?;
        c.put(READ_KEY, vec![b'r'; value_size], None)
            .await
            .map_err(|e| format!("first put: {e}"))?;
        Ok(Etcd {
            servers,
            leader,
            followers,
            version,
        })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.pids()
    }

    pub fn check_running(&mut self) -> Result<(), String> {
        self.servers.check_running()
    }

    pub async fn run(&self, w: &Workload, value_size: usize, window: Window) -> Tally {
        let mut tasks = Vec::new();
        for i in 0..w.clients {
            // Writes go to the leader (as Chronik's client sends produces
            // to the partition leader); reads spread over the followers
            // (as Chronik's client spreads follower reads).
            let endpoint = match w.kind {
                Kind::Write { .. } => self.leader.clone(),
                Kind::FollowerRead => self.followers[i % self.followers.len()].clone(),
            };
            let kind = w.kind;
            tasks.push(tokio::spawn(async move {
                let client = match Client::connect([endpoint.as_str()], None).await {
                    Ok(c) => c,
                    Err(e) => {
                        return Tally {
                            errors: 1,
                            first_error: Some(format!("{endpoint}: {e}")),
                            ..Tally::default()
                        };
                    }
                };
                let kv = client.kv_client();
                let value = vec![b'x'; value_size];
                let mut seq = 0u64;
                closed_loop(window, || {
                    let mut kv = kv.clone();
                    seq += 1;
                    let key = format!("k{i}-{seq}");
                    let value = value.clone();
                    async move {
                        match kind {
                            Kind::Write { .. } => kv
                                .put(key, value, None)
                                .await
                                .map(|_| 1)
                                .map_err(|e| e.to_string()),
                            Kind::FollowerRead => kv
                                .get(READ_KEY, None)
                                .await
                                .map_err(|e| e.to_string())
                                .and_then(|r| match r.kvs().len() {
                                    0 => Err("a get returned no key".to_string()),
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

/// The leader's endpoint and the followers', once all three agree on one
/// leader.
async fn roles(endpoints: &[String]) -> Result<(String, Vec<String>), String> {
    let mut leader = None;
    let mut followers = Vec::new();
    let mut leader_ids = Vec::new();
    for ep in endpoints {
        let mut c = Client::connect([ep.as_str()], None)
            .await
            .map_err(|e| format!("{ep}: {e}"))?;
        let s = c.status().await.map_err(|e| format!("{ep}: {e}"))?;
        let me = s.header().map(|h| h.member_id()).unwrap_or(0);
        leader_ids.push(s.leader());
        if s.leader() != 0 && s.leader() == me {
            leader = Some(ep.clone());
        } else {
            followers.push(ep.clone());
        }
    }
    if leader_ids.iter().any(|l| *l == 0 || *l != leader_ids[0]) {
        return Err(format!("members disagree on the leader: {leader_ids:?}"));
    }
    match leader {
        Some(l) => Ok((l, followers)),
        None => Err("no member says it leads".into()),
    }
}
