//! `chronik-bench`: load against a running Chronik cluster over the client
//! API. N concurrent clients produce (or fetch) for a duration; prints
//! records/s, MB/s and latency percentiles. `compare` starts etcd and
//! Chronik side by side and compares them (built with `--features etcd`).
//!
//! ```text
//! chronik-bench --addr 127.0.0.1:9092 --clients 16 --record-size 100 --duration 10 produce
//! chronik-bench compare --duration 10
//! ```

use bytes::Bytes;
use chronik_benches::compare;
use chronik_net::Client;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "chronik-bench", about = "Load generator for a Chronik cluster")]
struct Args {
    /// Client addresses of the cluster (comma separated).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094",
        value_delimiter = ','
    )]
    addr: Vec<String>,
    /// Concurrent clients (each with one request in flight).
    #[arg(long, global = true, default_value_t = 1)]
    clients: usize,
    /// Bytes per record.
    #[arg(long, global = true, default_value_t = 100)]
    record_size: usize,
    /// Records per produce request.
    #[arg(long, global = true, default_value_t = 1)]
    batch: usize,
    /// Seconds to run.
    #[arg(long, global = true, default_value_t = 10)]
    duration: u64,
    /// Topic to use (created if missing).
    #[arg(long, global = true, default_value = "bench")]
    topic: String,
    /// Partitions of the topic when created; clients spread over them.
    #[arg(long, global = true, default_value_t = 3)]
    partitions: u32,
    /// Stop after this many bytes of records (0: no limit).
    #[arg(long, global = true, default_value_t = 0)]
    bytes: u64,
    /// Fetch consistency: leader, follower (linearizable, ReadIndex) or
    /// follower-stale.
    #[arg(long, global = true, default_value = "leader")]
    read_from: String,
    /// CA certificate(s) of a TLS cluster: connects over TLS.
    #[arg(long, global = true, env = "CHRONIK_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (mutual TLS).
    #[arg(long, global = true, env = "CHRONIK_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, global = true, env = "CHRONIK_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Bearer token, for clusters with `[auth]`.
    #[arg(long, global = true, env = "CHRONIK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    mode: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Clients produce records (the default).
    Produce,
    /// Clients fetch records.
    Fetch,
    /// Starts a 3-member etcd and a 3-node Chronik on this machine and
    /// runs the same workloads on both in turns; prints one table and
    /// writes it under benches/results/.
    Compare(CompareArgs),
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Unmeasured seconds before each turn.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds both clusters idle after starting, before measuring.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Turns per system and workload, alternating between the systems.
    #[arg(long, default_value_t = 2)]
    turns: usize,
    /// Only these workloads (comma separated; all by default).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The chronik-node binary (default: next to this one).
    #[arg(long)]
    chronik_node: Option<PathBuf>,
    /// Where to write the Markdown and JSON results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Print the table only; write no files.
    #[arg(long)]
    no_write: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Produce,
    Fetch,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let result = match &args.mode {
        Some(Cmd::Compare(c)) => run_compare(c, args.record_size, args.duration).await,
        Some(Cmd::Fetch) => run(args, Mode::Fetch).await,
        Some(Cmd::Produce) | None => run(args, Mode::Produce).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

struct ClientResult {
    latencies: Histogram<u64>,
    records: u64,
    bytes: u64,
    errors: u64,
}

async fn run(args: Args, mode: Mode) -> Result<(), String> {
    use chronik_net::proto::ReadConsistency;
    let consistency = match chronik_core::ReadConsistency::parse(&args.read_from) {
        Some(chronik_core::ReadConsistency::Leader) => ReadConsistency::Leader,
        Some(chronik_core::ReadConsistency::Follower) => ReadConsistency::Follower,
        Some(chronik_core::ReadConsistency::FollowerStale) => ReadConsistency::FollowerStale,
        None => {
            return Err(format!(
                "--read-from {:?}: use leader, follower or follower-stale",
                args.read_from
            ))
        }
    };
    let tls = match &args.ca {
        Some(ca) => Some(
            chronik_net::ClientTls::from_files(ca, args.cert.as_deref(), args.key.as_deref())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // Each bench client has its own connection pool.
    let new_client = || {
        Client::new(args.addr.clone())
            .with_tls(tls.clone())
            .with_token(args.token.as_deref())
            .map_err(|e| e.to_string())
    };
    let client = Arc::new(new_client()?);
    let md = client.metadata().await.map_err(|e| e.to_string())?;
    let partitions = match md.topics.iter().find(|t| t.name == args.topic) {
        Some(t) => t.partitions.len() as u32,
        None => {
            let rf = md.nodes.len().min(3) as u32;
            client
                .create_topic(&args.topic, args.partitions, rf, rf.min(2))
                .await
                .map_err(|e| e.to_string())?;
            args.partitions
        }
    };
    if mode == Mode::Fetch {
        // Make sure there is something to read.
        let rec = Bytes::from(vec![b'x'; args.record_size]);
        for p in 0..partitions {
            for _ in 0..10 {
                client
                    .produce(&args.topic, p, vec![rec.clone(); 100])
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let bytes_budget = Arc::new(std::sync::atomic::AtomicU64::new(if args.bytes == 0 {
        u64::MAX
    } else {
        args.bytes
    }));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let c = new_client()?;
        let topic = args.topic.clone();
        let budget = bytes_budget.clone();
        let (record_size, batch) = (args.record_size, args.batch.max(1));
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                latencies: Histogram::new(3).expect("valid histogram"),
                records: 0,
                bytes: 0,
                errors: 0,
            };
            let p = i as u32 % partitions;
            let payload = Bytes::from(vec![b'x'; record_size]);
            let mut offset = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match mode {
                    Mode::Produce => {
                        let want = (batch * record_size) as u64;
                        if budget
                            .fetch_update(
                                std::sync::atomic::Ordering::Relaxed,
                                std::sync::atomic::Ordering::Relaxed,
                                |b| b.checked_sub(want),
                            )
                            .is_err()
                        {
                            break;
                        }
                        c.produce(&topic, p, vec![payload.clone(); batch])
                            .await
                            .map(|_| batch as u64)
                    }
                    Mode::Fetch => match c
                        .fetch_with(&topic, p, offset, (batch * record_size) as u64, consistency)
                        .await
                    {
                        Ok(f) => {
                            offset = match f.records.last() {
                                Some((o, _)) if o + 1 < f.high_watermark => o + 1,
                                _ => 0,
                            };
                            Ok(f.records.len() as u64)
                        }
                        Err(e) => Err(e),
                    },
                };
                match ok {
                    Ok(n) => {
                        let _ = r.latencies.record(t.elapsed().as_micros() as u64);
                        r.records += n;
                        r.bytes += n * record_size as u64;
                    }
                    Err(_) => r.errors += 1,
                }
            }
            r
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("valid histogram");
    let (mut records, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        all.add(&r.latencies).map_err(|e| e.to_string())?;
        records += r.records;
        bytes += r.bytes;
        errors += r.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    let mode = match mode {
        Mode::Produce => "produce",
        Mode::Fetch => "fetch",
    };
    println!(
        "{mode}: clients={} record_size={} batch={} duration={:.1}s read_from={}",
        args.clients, args.record_size, args.batch, secs, args.read_from
    );
    println!(
        "  {:.0} records/s  {:.2} MB/s  requests={}  errors={}",
        records as f64 / secs,
        bytes as f64 / secs / 1e6,
        all.len(),
        errors
    );
    println!(
        "  latency p50={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        all.value_at_quantile(0.999) as f64 / 1000.0,
        all.max() as f64 / 1000.0
    );
    Ok(())
}

/// `--duration` is each turn's measured time, `--record-size` the value size.
async fn run_compare(c: &CompareArgs, value_size: usize, duration: u64) -> Result<(), String> {
    let secs = |name: &str, v: f64| {
        Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} {v}: not a duration"))
    };
    let chronik_node = match &c.chronik_node {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("chronik-node"),
    };
    let opts = compare::Options {
        duration: Duration::from_secs(duration),
        warmup: secs("warmup", c.warmup)?,
        settle: secs("settle", c.settle)?,
        turns: c.turns,
        value_size,
        only: c.only.clone(),
        chronik_node,
        out: (!c.no_write).then(|| c.out.clone()),
        etcd_base_port: 23790,
        chronik_base_port: 19092,
    };
    let report = compare::run(opts.clone()).await?;
    println!("{}", report.markdown());
    if let Some(dir) = &opts.out {
        let (md, json) = report.write(dir)?;
        println!("written: {} and {}", md.display(), json.display());
    }
    Ok(())
}
