//! `chronik-bench compare`: Chronik and etcd, three nodes each on this
//! machine, the same closed-loop workloads on both in turns (etcd,
//! Chronik, etcd, Chronik...), one table of throughput, latency and CPU
//! per operation with their ratios. Absolute figures move with the
//! machine; ratios measured in one run are what the targets are set in.

// The two sides run only with the etcd client built in.
#[cfg(feature = "etcd")]
mod chronik;
#[cfg(feature = "etcd")]
mod etcd;
pub mod measure;
#[cfg(feature = "etcd")]
mod procs;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

/// How a comparison runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Measured seconds per turn.
    pub duration: Duration,
    /// Unmeasured seconds before each turn's window.
    pub warmup: Duration,
    /// Seconds both clusters idle after they start, before the first
    /// workload: a new Chronik cluster moves partition leaders to their
    /// preferred replicas in its first seconds.
    pub settle: Duration,
    /// Turns per system and workload.
    pub turns: usize,
    pub value_size: usize,
    /// Workload names (all when empty).
    pub only: Vec<String>,
    pub chronik_node: PathBuf,
    /// Where the Markdown and JSON results go (none: not written).
    pub out: Option<PathBuf>,
    /// etcd uses BASE.. for clients and BASE+10.. for peers.
    pub etcd_base_port: u16,
    /// Chronik's dev cluster uses BASE.. (clients), +10 (peers), +20
    /// (metrics).
    pub chronik_base_port: u16,
}

#[cfg(not(feature = "etcd"))]
pub async fn run(_opts: Options) -> Result<report::Report, String> {
    Err("this chronik-bench was built without the etcd client: install protoc and etcd (`sudo apt-get install protobuf-compiler etcd-server`), then `cargo build --release -p chronik-benches --features etcd`".into())
}

#[cfg(feature = "etcd")]
pub async fn run(opts: Options) -> Result<report::Report, String> {
    use measure::{cpu_seconds_all, Window};
    let workloads = workload::select(&opts.only)?;
    if opts.turns == 0 || opts.duration.is_zero() {
        return Err("--turns and --duration must be positive".into());
    }
    eprintln!("starting etcd (3 members) and Chronik (3 nodes)...");
    let mut etcd = etcd::Etcd::start(opts.etcd_base_port, opts.value_size).await?;
    let mut chronik =
        chronik::Chronik::start(&opts.chronik_node, opts.chronik_base_port, opts.value_size)
            .await?;
    eprintln!("letting both settle for {} s...", opts.settle.as_secs());
    tokio::time::sleep(opts.settle).await;
    etcd.check_running()?;
    chronik.check_running()?;
    let mut rows = Vec::new();
    for w in &workloads {
        let mut tallies = [measure::Tally::default(), measure::Tally::default()];
        let mut cpu = [0.0f64; 2];
        for turn in 0..opts.turns {
            for side in 0..2 {
                let pids = if side == 0 {
                    etcd.pids()
                } else {
                    chronik.pids()
                };
                let window = Window::after(opts.warmup, opts.duration);
                // CPU is read at the window's edges while the clients run.
                let sampler = tokio::spawn(async move {
                    tokio::time::sleep_until(window.start.into()).await;
                    let before = cpu_seconds_all(&pids)?;
                    tokio::time::sleep_until(window.end.into()).await;
                    Ok::<f64, String>(cpu_seconds_all(&pids)? - before)
                });
                let tally = if side == 0 {
                    etcd.run(w, opts.value_size, window).await
                } else {
                    chronik.run(w, opts.value_size, window).await
                };
                let used = sampler.await.map_err(|e| e.to_string()).and_then(|r| r)?;
                let name = if side == 0 { "etcd" } else { "Chronik" };
                eprintln!(
                    "{} turn {}: {name:<7} {:>9.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  {} errors",
                    w.name,
                    turn + 1,
                    tally.ops as f64 / opts.duration.as_secs_f64(),
                    tally.p50_ms(),
                    tally.p99_ms(),
                    tally.errors
                );
                tallies[side].merge(tally);
                cpu[side] += used;
                etcd.check_running()?;
                chronik.check_running()?;
            }
        }
        let seconds = opts.duration.as_secs_f64() * opts.turns as f64;
        let [e, c] = tallies;
        for (name, t) in [("etcd", &e), ("Chronik", &c)] {
            if t.ops == 0 {
                return Err(format!(
                    "{}: {name} completed no operation ({} errors, first: {})",
                    w.name,
                    t.errors,
                    t.first_error.as_deref().unwrap_or("none")
                ));
            }
        }
        rows.push(report::Row::new(
            w,
            report::Side::new(&e, seconds, cpu[0]),
            report::Side::new(&c, seconds, cpu[1]),
        ));
    }
    let report = report::Report {
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        etcd_version: etcd.version.clone(),
        chronik_commit: chronik_commit(),
        seconds_per_turn: opts.duration.as_secs_f64(),
        turns: opts.turns,
        value_size: opts.value_size,
        rows,
    };
    Ok(report)
}

/// The checkout's commit, when run from one.
#[cfg(feature = "etcd")]
fn chronik_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}
