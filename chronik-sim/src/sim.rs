use crate::node_checker::NodeChecker;
use chronik_core::shutdown::{ShutdownConfig, ShutdownReport};
use chronik_core::{GroupId, NodeInfo};
use chronik_net::disk::{Disk, MemDisk};
use chronik_net::{Client, EngineObserver, Node, NodeConfig, RetryPolicy};
use madsim::runtime::Handle;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

pub const PEER_PORT: u16 = 7000;
pub const CLIENT_PORT: u16 = 9092;

/// One simulated Chronik node: its madsim node and the disk that survives it.
pub struct SimNode {
    pub id: u64,
    pub node: madsim::runtime::NodeHandle,
    pub disk: MemDisk,
    pub up: bool,
    pub graceful: Arc<GracefulCtl>,
}

/// How the harness asks a running node to shut down gracefully, and how
/// the report comes back. The node runs the phases up to the stop; the
/// harness then ends its process (a process exit).
pub struct GracefulCtl {
    /// Bumped per request: an incarnation acts only on a bump after it
    /// started (a request the previous one never took is not replayed).
    ask: tokio::sync::watch::Sender<u64>,
    reply: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<ShutdownReport>>>,
}

impl Default for GracefulCtl {
    fn default() -> Self {
        GracefulCtl {
            ask: tokio::sync::watch::channel(0).0,
            reply: parking_lot::Mutex::new(None),
        }
    }
}

/// Phase limits of graceful shutdowns in the simulation.
pub fn sim_shutdown_config() -> ShutdownConfig {
    ShutdownConfig {
        drain_timeout_ms: 3_000,
        transfer_timeout_ms: 5_000,
        sync_timeout_ms: 2_000,
    }
}

/// A simulated cluster of real Chronik nodes.
pub struct SimCluster {
    pub nodes: Vec<SimNode>,
    pub client_addrs: Vec<String>,
    checker: Arc<NodeChecker>,
}

fn node_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

/// Runs one node in its madsim node until it stops. A node removed from the
/// cluster stops on purpose; any other stop is a failure of the run.
fn spawn_node(
    id: u64,
    cfg: NodeConfig,
    disk: MemDisk,
    checker: Arc<NodeChecker>,
    graceful: Arc<GracefulCtl>,
) -> madsim::runtime::NodeHandle {
    Handle::current()
        .create_node()
        .name(format!("node{id}"))
        .ip(node_ip(id))
        .init(move || {
            let cfg = cfg.clone();
            let mem = disk.clone();
            let disk: Arc<dyn chronik_net::disk::Disk> = Arc::new(disk.clone());
            let observer: Arc<dyn EngineObserver> = checker.clone();
            let faulty = mem.clone();
            let graceful = graceful.clone();
            async move {
                let mut asked = graceful.ask.subscribe();
                asked.borrow_and_update();
                match Node::start_observed(cfg, disk, Some(observer)).await {
                    Ok(mut h) => match tokio::select! {
                        r = h.stopped() => Some(r),
                        _ = asked.changed() => None,
                    } {
                        None => {
                            let mut stopping = h.shutdown_phases(sim_shutdown_config()).await;
                            let report = stopping.report();
                            if let Some(tx) = graceful.reply.lock().take() {
                                let _ = tx.send(report);
                            }
                            // The harness ends the process now (kept, not
                            // dropped: a graceful server shutdown is not
                            // deterministic under madsim, see below).
                            let _keep = h;
                            std::future::pending::<()>().await;
                        }
                        Some(r) => match r {
                            Err(e) if e.to_string().contains("removed from the cluster") => {
                                tracing::info!(id, "removed node stopped: {e}");
                                // Kept as it is rather than dropped: dropping the
                                // handle shuts the gRPC servers down gracefully,
                                // and madsim-tonic's graceful shutdown is not
                                // deterministic (found by running seeds 4 and 28
                                // twice in one process).
                                let _keep = h;
                                std::future::pending::<()>().await;
                            }
                            // Fail-stop on an injected disk error: the node stops
                            // rather than acknowledge what it could not write.
                            Err(e) if faulty.fault().is_some() => {
                                tracing::info!(id, "node stopped on a disk error: {e}");
                                // The process stays (its servers refuse with the
                                // driver gone) until the harness kills and
                                // restarts it once the disk is back (and a
                                // graceful server shutdown is not deterministic
                                // under madsim, see above).
                                let _keep = h;
                                std::future::pending::<()>().await;
                            }
                            r => panic!("node stopped on its own: {r:?}"),
                        },
                    },
                    // A removed node restarted by a fault: peers refuse it.
                    Err(e) if e.to_string().contains("removed from the cluster") => {}
                    // Crashes tear and scramble unsynced writes and rot
                    // flips synced bytes: recovery must cut or repair all
                    // of it, never refuse (a record that passed its
                    // checksum and does not decode was taken for intact).
                    Err(e) if e.to_string().contains("cannot recover the WAL") => {
                        panic!("WAL recovery refused: node {id} does not start: {e}")
                    }
                    Err(e) => panic!("node failed to start: {e}"),
                }
            }
        })
        .build()
}

/// The harness's and the workload's bearer token: an `admin` principal.
pub const ADMIN_TOKEN: &str = "chronik_sim_admin";
/// A principal that may read every topic and write none: the intruder.
pub const READER_TOKEN: &str = "chronik_sim_reader";

/// The principals file every simulated node loads (`[auth]`): a real file,
/// written once per process (its text never changes, so runs stay
/// deterministic).
fn principals_file() -> std::path::PathBuf {
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let hash = |t: &str| -> String {
            chronik_net::auth::token_hash(t)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let text = format!(
            "[[principal]]\nname = \"sim\"\nroles = [\"admin\"]\ntokens = [\"{}\"]\n\n\
             [[principal]]\nname = \"reader\"\nread = [\"*\"]\ntokens = [\"{}\"]\n",
            hash(ADMIN_TOKEN),
            hash(READER_TOKEN)
        );
        let path = std::env::temp_dir().join(format!(
            "chronik-sim-principals-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("the simulation writes its principals file");
        path
    })
    .clone()
}

/// `client` sending `token` with every call.
pub fn with_token(client: Client, token: &str) -> Client {
    client
        .with_token(Some(token))
        .expect("the simulation's tokens are ASCII")
}

fn node_config(id: u64, members: Vec<NodeInfo>) -> NodeConfig {
    let mut cfg = NodeConfig::new(
        id,
        SocketAddr::new(node_ip(id), PEER_PORT),
        SocketAddr::new(node_ip(id), CLIENT_PORT),
        members,
        data_dir(id),
    );
    cfg.engine.tick_interval_ms = 50;
    cfg.engine.log_compact_threshold_entries = 200;
    cfg.request_timeout_ms = 3_000;
    cfg.engine.isr_max_lag_ms = 1_000;
    cfg.engine.read_timeout_ms = 2_000;
    // Rebalance often, so moves run under the faults; a move that cannot
    // finish while faults strike rolls back.
    cfg.engine.rebalance.check_interval_ms = 2_000;
    cfg.engine.rebalance.migration_timeout_ms = 8_000;
    cfg.engine.rebalance.max_concurrent_moves = 2;
    cfg.shutdown = sim_shutdown_config();
    cfg.auth = Some(chronik_net::auth::AuthConfig {
        principals_file: principals_file(),
        // No TLS in simulation: a node joining or looking up a peer shows
        // this token instead of its certificate.
        node_token: Some(ADMIN_TOKEN.into()),
    });
    cfg
}

/// Where node `id` keeps its data on its simulated disk.
pub fn data_dir(id: u64) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/data/node{id}"))
}

/// The client address of node `id`.
pub fn client_addr(id: u64) -> String {
    SocketAddr::new(node_ip(id), CLIENT_PORT).to_string()
}

impl SimCluster {
    /// Starts `n` nodes (ids 1..=n) on 10.0.0.id, reporting to `checker`.
    pub fn start(n: u64, checker: Arc<NodeChecker>) -> SimCluster {
        let members: Vec<NodeInfo> = (1..=n)
            .map(|id| NodeInfo {
                id,
                peer_addr: SocketAddr::new(node_ip(id), PEER_PORT).to_string(),
                client_addr: client_addr(id),
                rack: None,
            })
            .collect();
        let cfg = node_config(1, members.clone());
        checker.set_isr_bound(crate::node_checker::IsrBound {
            max_lag_ms: cfg.engine.isr_max_lag_ms,
            tick_ms: cfg.engine.tick_interval_ms,
            retry_ms: cfg.engine.tick_interval_ms * cfg.engine.election_ticks as u64,
        });
        let mut nodes = Vec::new();
        for id in 1..=n {
            let disk = MemDisk::new();
            let cfg = node_config(id, members.clone());
            let graceful = Arc::new(GracefulCtl::default());
            let node = spawn_node(id, cfg, disk.clone(), checker.clone(), graceful.clone());
            nodes.push(SimNode {
                id,
                node,
                disk,
                up: true,
                graceful,
            });
        }
        SimCluster {
            nodes,
            client_addrs: members.iter().map(|m| m.client_addr.clone()).collect(),
            checker,
        }
    }

    /// Starts a new, empty node `id` (the next id) that joins the cluster
    /// through `via` (a member's client address).
    pub fn start_joining(&mut self, id: u64, via: String) {
        assert_eq!(id as usize, self.nodes.len() + 1, "node ids are dense");
        let disk = MemDisk::new();
        let mut cfg = node_config(id, vec![]);
        cfg.join = Some(via);
        let graceful = Arc::new(GracefulCtl::default());
        let node = spawn_node(
            id,
            cfg,
            disk.clone(),
            self.checker.clone(),
            graceful.clone(),
        );
        self.nodes.push(SimNode {
            id,
            node,
            disk,
            up: true,
            graceful,
        });
        self.client_addrs.push(client_addr(id));
    }

    /// A client with a deadline short enough for the simulation's phases.
    pub fn client(&self) -> Client {
        let c = Client::with_retry(
            self.client_addrs.clone(),
            RetryPolicy {
                deadline: Duration::from_secs(10),
                ..RetryPolicy::default()
            },
        );
        with_token(c, ADMIN_TOKEN)
    }

    /// Kills a node: its unsynced writes are lost, or with `torn` survive
    /// torn: a prefix of them, or (`scrambled`) all of them with a stretch
    /// zeroed, which only checksums can tell from real data.
    pub fn kill(&mut self, id: u64, torn: Option<u64>, scrambled: bool) {
        let n = &mut self.nodes[id as usize - 1];
        Handle::current().kill(n.node.id());
        match torn {
            Some(seed) if scrambled => n.disk.crash_scrambled(seed),
            Some(seed) => n
                .disk
                .crash(|len| if len > 0 { (seed as usize) % len } else { 0 }),
            None => n.disk.crash(|_| 0),
        }
        n.up = false;
        self.checker
            .on_crash(id, &n.disk, &data_dir(id).join("wal"));
    }

    /// Flips one byte of one of node `id`'s partition segment files
    /// (`pick` modulo the files, `at` modulo its synced length): the file
    /// and the byte, or `None` when the node holds no segment bytes.
    pub fn rot(&self, id: u64, pick: u64, at: u64) -> Option<(std::path::PathBuf, usize)> {
        let n = &self.nodes[id as usize - 1];
        let root = data_dir(id).join("partitions");
        let mut files = Vec::new();
        for group in n.disk.list(&root).unwrap_or_default() {
            let dir = root.join(&group);
            for name in n.disk.list(&dir).unwrap_or_default() {
                if name.ends_with(".log") {
                    let path = dir.join(name);
                    if n.disk.len(&path).unwrap_or(0) > 0 {
                        files.push(path);
                    }
                }
            }
        }
        if files.is_empty() {
            return None;
        }
        let file = files[(pick % files.len() as u64) as usize].clone();
        let len = n.disk.len(&file)?;
        let byte = (at % len as u64) as usize;
        n.disk.corrupt(&file, byte).then_some((file, byte))
    }

    /// Flips one byte of a record of node `id`'s newest WAL segment that
    /// a later intact record proves synced (`last`: the last such record;
    /// otherwise `pick` chooses it, and the byte, among batches carrying
    /// log entries when there are any), and tells the checker. Returns
    /// what it did and the groups whose log the damage cuts (`None`:
    /// every group); `None` while no record is proven synced.
    pub fn rot_wal(
        &self,
        id: u64,
        pick: u64,
        last: bool,
    ) -> Option<(String, Option<BTreeSet<GroupId>>)> {
        use chronik_net::wal::codec::{WalFrame, WalRecord, WalUpdate};
        use chronik_net::wal::record::{decode, Frame};
        let n = &self.nodes[id as usize - 1];
        let wal_dir = data_dir(id).join("wal");
        let mut segments: Vec<String> = n
            .disk
            .list(&wal_dir)
            .ok()?
            .into_iter()
            .filter(|f| f.starts_with("wal-") && f.ends_with(".log"))
            .collect();
        segments.sort();
        let file = wal_dir.join(segments.last()?);
        let data = n.disk.read(&file).ok()?;
        let mut records = Vec::new();
        let mut proven = 0u64;
        let mut offset = 0;
        while let Frame::Record { payload, next } = decode(&data, offset, true) {
            let mut entries = false;
            if let Ok(f) = postcard::from_bytes::<WalFrame>(payload) {
                proven = proven.max(f.synced_up_to);
                entries = matches!(&f.record, WalRecord::Batch(u) if u.iter().any(|u| matches!(u, WalUpdate::Entries { .. })));
            }
            records.push((offset, next, entries));
            offset = next;
        }
        records.retain(|(_, end, _)| *end as u64 <= proven);
        let with_entries: Vec<_> = records.iter().copied().filter(|r| r.2).collect();
        let choose = if with_entries.is_empty() {
            &records
        } else {
            &with_entries
        };
        let (start, end, _) = if last {
            *records.last()?
        } else {
            *choose.get((pick % choose.len().max(1) as u64) as usize)?
        };
        // The groups whose log the damage cuts: those of a batch (`None`:
        // every group, a checkpoint); a manifest's damage cuts nothing.
        let carried = match decode(&data, start, true) {
            Frame::Record { payload, .. } => match postcard::from_bytes::<WalFrame>(payload) {
                Ok(f) => match f.record {
                    WalRecord::Batch(updates) => Some(
                        updates
                            .iter()
                            .map(|u| match u {
                                WalUpdate::Create { group, .. }
                                | WalUpdate::Entries { group, .. }
                                | WalUpdate::HardState { group, .. }
                                | WalUpdate::Snapshot { group, .. }
                                | WalUpdate::Drop { group } => *group,
                            })
                            .collect(),
                    ),
                    WalRecord::Manifest { .. } => Some(BTreeSet::new()),
                    WalRecord::Checkpoint(_) => None,
                },
                Err(_) => None,
            },
            _ => None,
        };
        let byte = start + ((pick >> 7) as usize % (end - start));
        if !n.disk.corrupt(&file, byte) {
            return None;
        }
        let what = format!(
            "flip byte {byte} of {} (record {start}..{end} carrying groups {}; records up to {proven} proven synced)",
            file.display(),
            carried.as_ref().map_or("all".into(), |c| format!("{c:?}"))
        );
        self.checker
            .on_wal_rot(id, &n.disk, &wal_dir, &what, carried.clone());
        Some((what, carried))
    }

    /// Shuts node `id` down gracefully up to its stop (the caller kills
    /// it next); `None` if it did not finish within 15 s (phases take 10 s at most).
    pub async fn graceful_stop(&self, id: u64) -> Option<ShutdownReport> {
        let n = &self.nodes[id as usize - 1];
        let (tx, rx) = tokio::sync::oneshot::channel();
        *n.graceful.reply.lock() = Some(tx);
        n.graceful.ask.send_modify(|v| *v += 1);
        madsim::time::timeout(Duration::from_secs(15), rx)
            .await
            .ok()
            .and_then(Result::ok)
    }

    pub fn restart(&mut self, id: u64) {
        let n = &mut self.nodes[id as usize - 1];
        Handle::current().restart(n.node.id());
        n.up = true;
    }

    pub fn clog(&self, id: u64) {
        madsim::net::NetSim::current().clog_node(self.nodes[id as usize - 1].node.id());
    }

    /// Lets an isolated node talk again (other network faults stay).
    pub fn unclog(&self, id: u64) {
        madsim::net::NetSim::current().unclog_node(self.nodes[id as usize - 1].node.id());
    }

    pub fn clog_link(&self, from: u64, to: u64) {
        madsim::net::NetSim::current().clog_link(
            self.nodes[from as usize - 1].node.id(),
            self.nodes[to as usize - 1].node.id(),
        );
    }

    /// Stops scheduling a node's tasks, sockets and timers frozen (a long
    /// GC pause or a stopped VM): its peers see it vanish, then come back
    /// with stale state.
    pub fn pause(&self, id: u64) {
        Handle::current().pause(self.nodes[id as usize - 1].node.id());
    }

    pub fn resume(&self, id: u64) {
        Handle::current().resume(self.nodes[id as usize - 1].node.id());
    }

    /// Cuts every link between `side` and the other nodes, both ways.
    pub fn split(&self, side: &[u64]) {
        let net = madsim::net::NetSim::current();
        for a in &self.nodes {
            for b in &self.nodes {
                if side.contains(&a.id) != side.contains(&b.id) {
                    net.clog_link(a.node.id(), b.node.id());
                }
            }
        }
    }

    /// Loses a share of packets (reliable streams retransmit them late,
    /// new connections are refused) and delays every one by `latency`.
    pub fn degrade_network(&self, loss_rate: f64, latency: Range<Duration>) {
        madsim::net::NetSim::current().update_config(|c| {
            c.packet_loss_rate = loss_rate;
            c.send_latency = latency;
        });
    }

    /// Every fsync of a node's disk takes a time drawn from `latency`.
    pub fn slow_disk(&self, id: u64, latency: Option<Range<Duration>>, seed: u64) {
        self.nodes[id as usize - 1]
            .disk
            .set_sync_latency(latency, seed);
    }

    /// From now on the files of node `id` whose path contains the given
    /// part fail writes (or syncs) with `errno` (`None` heals the disk).
    pub fn disk_fault(&self, id: u64, fault: Option<(i32, bool, &str)>) {
        self.nodes[id as usize - 1]
            .disk
            .set_fault(
                fault.map(|(errno, on_sync, path)| chronik_net::disk::DiskFault {
                    errno,
                    on_sync,
                    path_contains: path.into(),
                }),
            );
    }

    /// Removes every network fault: clogs, loss and added latency.
    pub fn heal(&self) {
        let net = madsim::net::NetSim::current();
        for a in &self.nodes {
            net.unclog_node(a.node.id());
            for b in &self.nodes {
                net.unclog_link(a.node.id(), b.node.id());
            }
        }
        net.update_config(|c| *c = madsim::net::Config::default());
    }
}

/// Longest an admin call of the harness may take.
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The harness's admin client: the node client's retry loop, with a
/// deadline that fits the harness's waits.
pub fn admin_client(addr: &str, deadline: Duration) -> chronik_net::Client {
    let c = chronik_net::Client::with_retry(
        vec![addr.to_string()],
        chronik_net::RetryPolicy {
            deadline,
            ..chronik_net::RetryPolicy::default()
        },
    );
    with_token(c, ADMIN_TOKEN)
}

/// A node's view of every group it hosts, through its admin API.
pub async fn node_groups(addr: &str) -> Result<chronik_net::proto::NodeStatusResponse, String> {
    admin_client(addr, ADMIN_CALL_TIMEOUT)
        .ask_node(addr, |mut c| async move {
            c.node_status(chronik_net::proto::NodeStatusRequest {})
                .await
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|e| e.to_string())
}

/// Asks the metadata leader (found from `addr`, following hints) to remove
/// `id`, retrying what is retriable for up to 2.5 s.
pub async fn remove_node(addr: &str, id: u64) -> Result<(), chronik_net::ClientError> {
    admin_client(addr, Duration::from_millis(2_500))
        .remove_node(id)
        .await
        .map(|_| ())
}

/// A node's view of membership: (members, change in flight, joint).
pub async fn membership(addr: &str) -> Result<(Vec<u64>, String, bool), String> {
    let l = admin_client(addr, ADMIN_CALL_TIMEOUT)
        .ask_node(addr, |mut c| async move {
            c.list_nodes(chronik_net::proto::ListNodesRequest {}).await
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    if let Some(e) = l.error {
        return Err(format!("{}: {}", e.error_code(), e.message));
    }
    Ok((
        l.nodes.iter().map(|n| n.id).collect(),
        l.change_in_flight,
        l.joint,
    ))
}

/// One line per hosted group of a node: for failure reports.
pub async fn node_status(addr: &str) -> Result<Vec<String>, String> {
    let s = node_groups(addr).await?;
    Ok(s.groups
        .iter()
        .map(|g| {
            format!(
                "node {} group {} ({}) {} term {} leader {} commit {} applied {} last {} snap {} voters {:?}",
                s.node_id, g.group, g.name, g.role, g.term, g.leader, g.commit, g.applied, g.last_index, g.snapshot_index, g.voters
            )
        })
        .collect())
}

/// Longest one direct replica read may take before the replica counts as
/// unreadable.
const REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Most fetches one direct replica read makes (bounded loop).
const REPLICA_READ_FETCHES_MAX: usize = 10_000;

/// Every record node `id` has applied for `topic`-`partition`, read from it
/// directly (follower-stale: no leader, no ReadIndex, no redirect). `None`
/// when the node cannot be read (down, cut off, not hosting the replica).
pub async fn read_replica(id: u64, topic: &str, partition: u32) -> Option<BTreeMap<u64, String>> {
    use chronik_net::proto::{chronik_client::ChronikClient, FetchRequest, ReadConsistency};
    let read = async {
        let mut c = ChronikClient::connect(format!("http://{}", client_addr(id)))
            .await
            .ok()?;
        let mut out = BTreeMap::new();
        let mut offset = 0;
        for _ in 0..REPLICA_READ_FETCHES_MAX {
            let mut request = tonic::Request::new(FetchRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes: 1 << 20,
                consistency: ReadConsistency::FollowerStale as i32,
            });
            request.metadata_mut().insert(
                "authorization",
                tonic::metadata::MetadataValue::from_static("Bearer chronik_sim_admin"),
            );
            let r = c.fetch(request).await.ok()?.into_inner();
            if r.error.is_some() {
                return None;
            }
            let Some(last) = r.records.last().map(|rec| rec.offset) else {
                return Some(out);
            };
            for rec in r.records {
                out.insert(rec.offset, String::from_utf8_lossy(&rec.value).into_owned());
            }
            offset = last + 1;
        }
        None
    };
    madsim::time::timeout(REPLICA_READ_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}
