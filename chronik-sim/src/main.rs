//! The simulation runner: runs a range of seeds on every core and prints
//! seeds per minute, faults injected by kind, operations checked, and each
//! failure with the one command that replays it.
//!
//! ```text
//! RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/sim \
//!   cargo run --profile sim -p chronik-sim -- --seeds 1..=2000
//! ```

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "chronik-sim runs under madsim only: RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo run -p chronik-sim -- --seeds 1..=200"
    );
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    runner::main()
}

#[cfg(madsim)]
mod runner {
    use chronik_sim::scenario::{replay_command, run, RunReport};
    use clap::Parser;
    use std::collections::{BTreeMap, VecDeque};
    use std::process::ExitCode;
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::{Duration, Instant};

    #[derive(Parser)]
    #[command(about = "Run Chronik's seeded simulation over a range of seeds")]
    struct Args {
        /// Seeds to run: `N`, `A..B` (B excluded) or `A..=B`.
        #[arg(long, default_value = "1..=200", value_parser = parse_seeds)]
        seeds: std::ops::RangeInclusive<u64>,
        /// Seeds run at once (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Simulated seconds after which a seed counts as hung.
        #[arg(long, default_value_t = 600)]
        time_limit_secs: u64,
    }

    fn parse_seeds(s: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
        let num = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|e| format!("bad seed {x:?}: {e}"))
        };
        let r = if let Some((a, b)) = s.split_once("..=") {
            num(a)?..=num(b)?
        } else if let Some((a, b)) = s.split_once("..") {
            let b = num(b)?;
            if b == 0 {
                return Err("empty seed range".into());
            }
            num(a)?..=b - 1
        } else {
            let n = num(s)?;
            n..=n
        };
        if r.is_empty() {
            return Err(format!("empty seed range {s:?}"));
        }
        Ok(r)
    }

    struct Outcome {
        seed: u64,
        result: Result<RunReport, String>,
    }

    fn run_seed(seed: u64, time_limit: Duration) -> Outcome {
        let result = std::thread::spawn(move || {
            let mut rt =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.set_time_limit(time_limit);
            rt.block_on(run(false))
        })
        .join()
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
        });
        Outcome { seed, result }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        let jobs = args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let total = (args.seeds.end() - args.seeds.start() + 1) as usize;
        println!(
            "running seeds {}..={} ({total}) on {jobs} threads",
            args.seeds.start(),
            args.seeds.end()
        );
        let queue = Arc::new(Mutex::new(args.seeds.clone().collect::<VecDeque<u64>>()));
        let (tx, rx) = mpsc::channel();
        let limit = Duration::from_secs(args.time_limit_secs);
        for _ in 0..jobs {
            let (queue, tx) = (queue.clone(), tx.clone());
            std::thread::spawn(move || loop {
                let Some(seed) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) else {
                    return;
                };
                if tx.send(run_seed(seed, limit)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let started = Instant::now();
        let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
        let (mut ops, mut sends, mut polls, mut elections, mut applied, mut late) =
            (0usize, 0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut refused, mut below, mut acks_checked, mut follower_reads) =
            (0u64, 0u64, 0u64, 0u64);
        let (mut joins, mut leaves_ok, mut leaves_refused) = (0u64, 0u64, 0u64);
        let mut nodes: BTreeMap<u64, u64> = BTreeMap::new();
        let mut failures: Vec<(u64, String)> = Vec::new();
        let mut done = 0usize;
        let every = (total / 20).max(1);
        for o in rx {
            done += 1;
            match o.result {
                Ok(r) => {
                    for (k, v) in &r.faults {
                        *faults.entry(k).or_default() += v;
                    }
                    ops += r.ops;
                    sends += r.sends_ok;
                    polls += r.polls_ok;
                    elections += r.leader_elections;
                    applied += r.entries_applied;
                    late += r.topics_created_late;
                    refused += r.refused_min_isr;
                    below += r.appended_below_min_isr;
                    acks_checked += r.produce_acks_checked;
                    follower_reads += r.follower_reads;
                    joins += r.joins;
                    leaves_ok += r.leaves_accepted;
                    leaves_refused += r.leaves_refused;
                    *nodes.entry(r.nodes).or_default() += 1;
                    if r.failed() {
                        let file = r.write_history();
                        let why = format!("{}\n    history: {}", r.failure(), file.display());
                        println!("FAILED seed {}: {why}", o.seed);
                        failures.push((o.seed, why));
                    }
                }
                Err(panic) => {
                    println!("FAILED seed {}: panicked: {panic}", o.seed);
                    failures.push((o.seed, format!("panicked: {panic}")));
                }
            }
            if done % every == 0 || done == total {
                let mins = started.elapsed().as_secs_f64() / 60.0;
                println!(
                    "[{done}/{total}] {:.1} seeds/min, {} failed",
                    done as f64 / mins.max(1e-9),
                    failures.len()
                );
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "\n== {done} seeds in {secs:.0} s: {:.1} seeds/min",
            done as f64 * 60.0 / secs
        );
        println!("cluster sizes (nodes: seeds): {nodes:?}");
        println!(
            "faults injected: {} in all: {faults:?}",
            faults.values().sum::<u64>()
        );
        println!(
            "operations checked: {ops} ({sends} sends and {polls} polls acknowledged, {follower_reads} of them linearizable follower reads); {late} topics created during faults; {elections} leader elections and {applied} applied entries checked node-side"
        );
        println!(
            "membership: {joins} nodes joined during faults, {leaves_ok} removals accepted and {leaves_refused} refused or unanswered; every seed ended with all members agreeing"
        );
        println!(
            "min_insync_replicas: {refused} produces refused before append, {below} failed after append, {acks_checked} acknowledgements checked against the leader's ISR"
        );
        if failures.is_empty() {
            println!("0 failures");
            return ExitCode::SUCCESS;
        }
        failures.sort_by_key(|(s, _)| *s);
        println!("{} failures:", failures.len());
        for (seed, why) in &failures {
            println!(
                "- seed {seed}: {}\n    replay: {}",
                why.lines().next().unwrap_or(""),
                replay_command(*seed)
            );
        }
        ExitCode::FAILURE
    }
}
