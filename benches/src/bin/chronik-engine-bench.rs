//! `chronik-engine-bench`: how the engine's structure shows under load, on
//! three real nodes started in this process (loopback, fsync on, data in a
//! temporary directory that is removed afterwards).
//!
//! - `stall`: one partition takes large produces (compacting every
//!   `log_compact_threshold_bytes`) while another, on the same nodes,
//!   serves one-record produces from a single client; prints the small
//!   partition's latency percentiles and maximum across the big one's
//!   compactions. A compaction that runs on the node's driver task shows
//!   here as a latency spike on the small partition.
//! - `idle`: creates topics totalling `--partitions` partitions of
//!   replication 3, waits until they have leaders, then measures the
//!   process's CPU time over `--seconds` of idleness; prints it as a share
//!   of one core per node, and the resident memory the partitions added,
//!   per replica. With `--spread N`, then produces to N of the partitions
//!   at once from 64 clients for `--seconds` (every produce must be
//!   answered). With `--restart`, then stops the three nodes and starts
//!   them again from their data: the time until every group has a leader
//!   and until every replica is quiesced again.
//! - `memory`: produces `--gigabytes` of records (acknowledged) through
//!   `--clients` producers, then prints the process's peak and current
//!   resident memory per node.
//!
//! ```text
//! cargo run --release -p chronik-benches --bin chronik-engine-bench -- stall --seconds 30
//! cargo run --release -p chronik-benches --bin chronik-engine-bench -- idle --partitions 3000
//! cargo run --release -p chronik-benches --bin chronik-engine-bench -- idle --partitions 3000 --spread 1000
//! cargo run --release -p chronik-benches --bin chronik-engine-bench -- idle --partitions 10000 --restart
//! cargo run --release -p chronik-benches --bin chronik-engine-bench -- memory --gigabytes 1
//! ```

use bytes::Bytes;
use chronik_core::NodeInfo;
use chronik_net::{Client, Node, NodeConfig, NodeHandle};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "chronik-engine-bench",
    about = "Compaction stalls and idle CPU of a local three-node cluster"
)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Latency of a small partition while a big one compacts.
    Stall {
        /// Seconds of load.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Concurrent producers on the big partition.
        #[arg(long, default_value_t = 8)]
        big_clients: usize,
        /// Records per produce on the big partition.
        #[arg(long, default_value_t = 10)]
        big_batch: usize,
        /// Bytes per record on the big partition.
        #[arg(long, default_value_t = 1024)]
        record_size: usize,
        /// Applied bytes between two compactions of a partition.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        compact_bytes: u64,
    },
    /// CPU use of an idle cluster hosting many partitions.
    Idle {
        /// Partitions in all (replication 3), created as topics of 100.
        #[arg(long, default_value_t = 3000)]
        partitions: u32,
        /// Seconds of idleness measured.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Then restart the nodes and time elections and settling.
        #[arg(long)]
        restart: bool,
        /// Then produce to this many of the partitions at once, for
        /// `--seconds`, from 64 clients: every produce must be answered.
        #[arg(long, default_value_t = 0)]
        spread: u32,
    },
    /// Resident memory after producing a volume of records.
    Memory {
        /// Gigabytes of record payload acknowledged before measuring.
        #[arg(long, default_value_t = 1.0)]
        gigabytes: f64,
        /// Concurrent producers, spread over the partitions.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Partitions of the topic produced to (replication 3).
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        /// Records per produce.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Bytes per record.
        #[arg(long, default_value_t = 1000)]
        record_size: usize,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let result = match args.bench {
        Bench::Stall {
            seconds,
            big_clients,
            big_batch,
            record_size,
            compact_bytes,
        } => stall(seconds, big_clients, big_batch, record_size, compact_bytes).await,
        Bench::Idle {
            partitions,
            seconds,
            restart,
            spread,
        } => idle(partitions, seconds, restart, spread).await,
        Bench::Memory {
            gigabytes,
            clients,
            partitions,
            batch,
            record_size,
        } => memory(gigabytes, clients, partitions, batch, record_size).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Three nodes on loopback in a temporary directory.
struct LocalCluster {
    nodes: Vec<NodeHandle>,
    configs: Vec<NodeConfig>,
    client: Client,
    dir: PathBuf,
}

fn free_addr() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

impl LocalCluster {
    async fn start(tune: impl Fn(&mut NodeConfig)) -> Result<LocalCluster, String> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "chronik-engine-bench-{}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut members = Vec::new();
        for id in 1..=3u64 {
            members.push(NodeInfo {
                id,
                peer_addr: free_addr()?.to_string(),
                client_addr: free_addr()?.to_string(),
                rack: None,
            });
        }
        let mut configs = Vec::new();
        for m in &members {
            let parse = |a: &str| a.parse::<SocketAddr>().map_err(|e| e.to_string());
            let mut cfg = NodeConfig::new(
                m.id,
                parse(&m.peer_addr)?,
                parse(&m.client_addr)?,
                members.clone(),
                dir.join(format!("node{}", m.id)),
            );
            tune(&mut cfg);
            configs.push(cfg);
        }
        LocalCluster::start_from(configs, dir).await
    }

    /// Starts (or starts again) nodes with these configs.
    async fn start_from(configs: Vec<NodeConfig>, dir: PathBuf) -> Result<LocalCluster, String> {
        let mut nodes = Vec::new();
        for cfg in &configs {
            nodes.push(
                Node::start(cfg.clone())
                    .await
                    .map_err(|e| format!("node {}: {e}", cfg.node_id))?,
            );
        }
        let client = Client::new(
            configs
                .iter()
                .map(|c| c.client_listen.to_string())
                .collect(),
        );
        for _ in 0..200 {
            if client.metadata().await.map(|m| m.nodes.len()).unwrap_or(0) == 3 {
                return Ok(LocalCluster {
                    nodes,
                    configs,
                    client,
                    dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("the local cluster did not register its nodes within 10 s".into())
    }

    /// Stops every node and starts them again from their data.
    async fn restart(self) -> Result<LocalCluster, String> {
        for n in self.nodes {
            n.stop()
                .await
                .map_err(|e| format!("stopping a node: {e}"))?;
        }
        LocalCluster::start_from(self.configs, self.dir).await
    }

    /// Waits (up to `limit`) until `want` groups have a leader.
    async fn await_leaders(&self, want: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let mut led = 0;
            for n in &self.nodes {
                let ins = n.inspect().await.map_err(|e| e.to_string())?;
                led += ins
                    .groups
                    .iter()
                    .filter(|g| g.role == chronik_core::Role::Leader)
                    .count();
            }
            if led >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {led} of {want} groups have a leader after {} s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to `limit`) until `want` partition replicas are quiesced
    /// (as the nodes' metrics, refreshed every second, say).
    async fn await_quiesced(&self, want: i64, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let quiet: i64 = self
                .nodes
                .iter()
                .map(|n| n.metrics.raft_quiesced_groups.get())
                .sum();
            if quiet >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "only {quiet} of {want} replicas quiesced after {} s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(self) {
        for n in self.nodes {
            let _ = n.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn stall(
    seconds: u64,
    big_clients: usize,
    big_batch: usize,
    record_size: usize,
    compact_bytes: u64,
) -> Result<(), String> {
    let cluster = LocalCluster::start(|c| {
        c.engine.log_compact_threshold_bytes = compact_bytes;
    })
    .await?;
    let c = &cluster.client;
    c.create_topic("big", 1, 3, 2)
        .await
        .map_err(|e| format!("create big: {e}"))?;
    c.create_topic("small", 1, 3, 2)
        .await
        .map_err(|e| format!("create small: {e}"))?;
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.to_string())
        .collect();
    // Warm both partitions up (leaders known, connections open).
    let small = Client::new(addrs.clone());
    small
        .produce("small", 0, vec![Bytes::from_static(b"warm")])
        .await
        .map_err(|e| format!("small: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let big_bytes = Arc::new(AtomicU64::new(0));
    let mut big = Vec::new();
    for _ in 0..big_clients {
        let (client, stop, bytes) = (Client::new(addrs.clone()), stop.clone(), big_bytes.clone());
        let batch: Vec<Bytes> = (0..big_batch)
            .map(|_| Bytes::from(vec![b'b'; record_size]))
            .collect();
        big.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if client.produce("big", 0, batch.clone()).await.is_ok() {
                    bytes.fetch_add((batch.len() * record_size) as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut lat = histogram();
    let mut errors = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        match small
            .produce("small", 0, vec![Bytes::from_static(b"s")])
            .await
        {
            Ok(_) => {
                let _ = lat.record(t.elapsed().as_micros() as u64);
            }
            Err(_) => errors += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in big {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = big_bytes.load(Ordering::Relaxed);
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "stall: {seconds} s, big partition {:.1} MB/s ({big_clients} clients x {big_batch} records x {record_size} B), about {} compactions per replica (every {} MiB)",
        written as f64 / elapsed / 1e6,
        written / compact_bytes.max(1),
        compact_bytes / (1024 * 1024)
    );
    println!(
        "small partition, 1-record produces: {} ok, {errors} failed; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        lat.len(),
        ms(lat.value_at_quantile(0.5)),
        ms(lat.value_at_quantile(0.99)),
        ms(lat.value_at_quantile(0.999)),
        ms(lat.max())
    );
    // Where long waits come from: WAL group commits and partition storage
    // batches (syncs, manifests) past a histogram bucket bound, over the
    // nodes.
    const SLOW_SECS: f64 = 0.0512;
    let (mut wal, mut io) = ((0, 0), (0, 0));
    for n in &cluster.nodes {
        let text = n.metrics.render();
        let add = |acc: &mut (u64, u64), (all, slow): (u64, u64)| {
            acc.0 += all;
            acc.1 += slow;
        };
        add(
            &mut wal,
            slow_count(&text, "chronik_wal_fsync_duration_seconds", SLOW_SECS),
        );
        add(
            &mut io,
            slow_count(&text, "chronik_partition_io_duration_seconds", SLOW_SECS),
        );
    }
    println!(
        "over the 3 nodes: {} of {} WAL group commits and {} of {} partition storage batches took over {} ms",
        wal.1,
        wal.0,
        io.1,
        io.0,
        SLOW_SECS * 1000.0
    );
    cluster.stop().await;
    Ok(())
}

/// `(observations, observations over `secs`)` of a histogram in Prometheus
/// text format; `secs` must be one of its bucket bounds.
fn slow_count(text: &str, metric: &str, secs: f64) -> (u64, u64) {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let total = text
        .lines()
        .find(|l| l.starts_with(&format!("{metric}_count")))
        .and_then(value)
        .unwrap_or(0.0) as u64;
    let below = text
        .lines()
        .filter_map(|l| {
            let le = l.strip_prefix(&format!("{metric}_bucket{{le=\""))?;
            let (bound, _) = le.split_once('"')?;
            Some((bound.parse::<f64>().ok()?, value(l)?))
        })
        .filter(|(bound, _)| *bound <= secs)
        .map(|(_, count)| count as u64)
        .max()
        .unwrap_or(0);
    (total, total - below)
}

use chronik_benches::compare::measure::memory_bytes;

/// User plus system CPU time of this process, from `/proc/self/stat`.
fn cpu_time() -> Result<Duration, String> {
    chronik_benches::compare::measure::cpu_seconds(std::process::id())
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{e} (this bench needs Linux)"))
}

async fn idle(partitions: u32, seconds: u64, restart: bool, spread: u32) -> Result<(), String> {
    let me = std::process::id();
    let cluster = LocalCluster::start(|_| {}).await?;
    let (rss_empty, _) = memory_bytes(me)?;
    let c = &cluster.client;
    let created = Instant::now();
    let mut left = partitions;
    let mut topic = 0;
    while left > 0 {
        let n = left.min(100);
        c.create_topic(&format!("idle{topic}"), n, 3, 2)
            .await
            .map_err(|e| format!("create idle{topic}: {e}"))?;
        left -= n;
        topic += 1;
    }
    // Every partition led: each node reports the groups it hosts.
    let want = partitions as usize + 1;
    cluster
        .await_leaders(want, Duration::from_secs(300))
        .await?;
    let setup = created.elapsed();
    // Let the creation's aftermath (snapshots, ISR settling) pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, t0) = (cpu_time()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu, wall) = (cpu_time()? - cpu0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64() / 3.0 * 100.0;
    println!(
        "idle: {partitions} partitions x 3 replicas on 3 nodes (created and led in {:.1} s); over {:.1} s idle the process used {:.2} s of CPU: {share:.1}% of one core per node",
        setup.as_secs_f64(),
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    let (rss, peak) = memory_bytes(me)?;
    let replicas = 3 * partitions as u64;
    println!(
        "memory: {:.0} MB resident for the 3 nodes ({:.0} MB before the partitions, peak {:.0} MB): {:.1} KB per replica",
        rss as f64 / 1e6,
        rss_empty as f64 / 1e6,
        peak as f64 / 1e6,
        rss.saturating_sub(rss_empty) as f64 / replicas.max(1) as f64 / 1024.0
    );
    if spread > 0 {
        spread_produce(&cluster, partitions, spread.min(partitions), seconds).await;
    }
    if !restart {
        cluster.stop().await;
        return Ok(());
    }
    let stopped = Instant::now();
    let cluster = cluster.restart().await?;
    let started = stopped.elapsed();
    cluster
        .await_leaders(want, Duration::from_secs(300))
        .await?;
    let led = stopped.elapsed();
    cluster
        .await_quiesced(replicas as i64, Duration::from_secs(300))
        .await?;
    let settled = stopped.elapsed();
    let (cpu0, t0) = (cpu_time()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu, wall) = (cpu_time()? - cpu0, t0.elapsed());
    println!(
        "restart: the 3 nodes stopped and started again from disk in {:.1} s; every group led {:.1} s and every replica quiesced {:.1} s after the stop; then {:.1}% of one core per node idle",
        started.as_secs_f64(),
        led.as_secs_f64(),
        settled.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() / 3.0 * 100.0
    );
    cluster.stop().await;
    Ok(())
}

/// 64 clients produce one record at a time to `spread` of the idle
/// partitions (topics `idle{n}` of 100), round robin, for `seconds`; prints
/// the rate and how many produces failed (a timeout among them would be a
/// partition that could not keep up).
async fn spread_produce(cluster: &LocalCluster, partitions: u32, spread: u32, seconds: u64) {
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.to_string())
        .collect();
    let stop = Instant::now() + Duration::from_secs(seconds);
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let clients = 64u32;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Client::new(addrs.clone());
        let (ok, failed, first_error) = (ok.clone(), failed.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            // Every `partitions / spread`-th partition, each client
            // starting at its own.
            let step = (partitions / spread).max(1);
            let mut i = c;
            while Instant::now() < stop {
                let p = (i % spread) * step;
                let (topic, partition) = (format!("idle{}", p / 100), p % 100);
                match client
                    .produce(&topic, partition, vec![Bytes::from_static(b"spread")])
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.lock().get_or_insert(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += clients;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "spread: 64 clients produced to {spread} of the {partitions} partitions for {seconds} s: {} acknowledged ({:.0}/s), {} failed{}",
        ok.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed) as f64 / seconds as f64,
        failed.load(Ordering::Relaxed),
        first_error
            .lock()
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    );
}

async fn memory(
    gigabytes: f64,
    clients: usize,
    partitions: u32,
    batch: usize,
    record_size: usize,
) -> Result<(), String> {
    let me = std::process::id();
    let cluster = LocalCluster::start(|_| {}).await?;
    cluster
        .client
        .create_topic("mem", partitions, 3, 2)
        .await
        .map_err(|e| format!("create mem: {e}"))?;
    let addrs: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.client_addr.to_string())
        .collect();
    let target = (gigabytes * 1e9) as u64;
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (client, acked, failed) = (Client::new(addrs.clone()), acked.clone(), failed.clone());
        let records: Vec<Bytes> = (0..batch)
            .map(|_| Bytes::from(vec![b'm'; record_size]))
            .collect();
        let partition = i as u32 % partitions.max(1);
        tasks.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < target {
                match client.produce("mem", partition, records.clone()).await {
                    Ok(_) => {
                        acked.fetch_add((batch * record_size) as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (rss, peak) = memory_bytes(me)?;
    let written = acked.load(Ordering::Relaxed);
    println!(
        "memory: {:.2} GB acknowledged in {secs:.1} s ({:.0} MB/s; {clients} clients x {batch} records x {record_size} B over {partitions} partitions, {} produces failed and retried)",
        written as f64 / 1e9,
        written as f64 / secs / 1e6,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "resident memory per node (the process's over 3): peak {:.0} MB, now {:.0} MB (target: peak under 256 MB)",
        peak as f64 / 3e6,
        rss as f64 / 3e6
    );
    cluster.stop().await;
    Ok(())
}
