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
    use chronik_core::planted::{self, Bug};
    use chronik_sim::node_checker::NodeChecker;
    use chronik_sim::scenario::{
        expected_catch, replay_command, run_plan, seed_plan, Plan, RunReport,
    };
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
        /// Switch on a planted bug and require that its checker catches it
        /// within the seed range: stops at the first failing seed, exits 0
        /// only if that failure names the expected anomaly or invariant.
        #[arg(long, value_parser = parse_bug)]
        bug: Option<Bug>,
        /// Fail the run when some mechanism never fired over at least this
        /// many seeds (no ISR shrink, no snapshot install...): a checker
        /// with nothing to check proves nothing. 0 disables the guard.
        #[arg(long, default_value_t = 100)]
        guard_min_seeds: usize,
        /// Print the names of the planted bugs, one a line, and exit.
        #[arg(long)]
        list_bugs: bool,
        /// Shrink a failing seed: drop faults from its plan one at a time
        /// while it still fails the same way, print the smallest plan and
        /// save it as a regression scenario (JSON) under
        /// target/sim-failures/.
        #[arg(long)]
        shrink: Option<u64>,
        /// Run every saved regression scenario (`*.json`) in this folder;
        /// each must pass.
        #[arg(long)]
        regressions: Option<std::path::PathBuf>,
        /// Save a seed's whole plan as a regression scenario in
        /// chronik-sim/regressions/ (for a seed that failed before a fix
        /// and cannot be shrunk any more, since it passes), with `--why`.
        #[arg(long, requires = "why")]
        save_plan: Option<u64>,
        /// What the saved seed failed with before its fix.
        #[arg(long)]
        why: Option<String>,
    }

    /// A failing plan kept so it runs again: the seed, the (shrunk) plan and
    /// why it failed before it was fixed.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Regression {
        seed: u64,
        failed_with: String,
        plan: Plan,
    }

    fn parse_bug(s: &str) -> Result<Bug, String> {
        Bug::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("unknown planted bug {s:?}; known: {}", names.join(", "))
        })
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
        /// The report, or the panic with what the node-side checker had
        /// found before it.
        result: Result<RunReport, (String, Vec<String>)>,
    }

    fn run_seed(seed: u64, time_limit: Duration) -> Outcome {
        run_seed_plan(seed, time_limit, None)
    }

    fn run_seed_plan(seed: u64, time_limit: Duration, plan: Option<Plan>) -> Outcome {
        let checker = Arc::new(NodeChecker::default());
        let c = checker.clone();
        let result = std::thread::spawn(move || {
            let mut rt =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.set_time_limit(time_limit);
            rt.block_on(run_plan(false, c, plan))
        })
        .join()
        .map_err(|p| {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            (why, checker.violations())
        });
        Outcome { seed, result }
    }

    /// Sums over the seeds of a run.
    #[derive(Default)]
    struct Totals {
        faults: BTreeMap<&'static str, u64>,
        nodes: BTreeMap<u64, u64>,
        ops: usize,
        sends: u64,
        polls: u64,
        late_topics: u64,
        refused_min_isr: u64,
        below_min_isr: u64,
        follower_reads: u64,
        joins: u64,
        leaves_ok: u64,
        leaves_refused: u64,
        boundary_refused: u64,
        rebalanced: u64,
        sim_secs: f64,
        replicas_read: u64,
        node: chronik_sim::node_checker::NodeCounts,
        crash_points: BTreeMap<chronik_net::CrashPoint, u64>,
        topics_deleted: u64,
        deletions_checked: u64,
        rejoins: u64,
        rejoins_judged: u64,
        failovers: u64,
        failovers_judged: u64,
        auth_refused: u64,
        untouched_probe_sends: u64,
        untouched_sends_judged: u64,
        rotted: u64,
        wal_rotted: u64,
        graceful_stops: u64,
        rolled: u64,
        roll_skipped: u64,
        roll_seeds: u64,
        roll_longest_gap_ms: u64,
        drains: u64,
        drains_judged: u64,
        replicates: u64,
        replicates_judged: u64,
        replicate_longest_ms: u64,
    }

    impl Totals {
        fn add(&mut self, r: &RunReport) {
            for (k, v) in &r.faults {
                *self.faults.entry(k).or_default() += v;
            }
            *self.nodes.entry(r.nodes).or_default() += 1;
            self.ops += r.ops;
            self.sends += r.sends_ok;
            self.polls += r.polls_ok;
            self.late_topics += r.topics_created_late;
            self.refused_min_isr += r.refused_min_isr;
            self.below_min_isr += r.appended_below_min_isr;
            self.follower_reads += r.follower_reads;
            self.joins += r.joins;
            self.leaves_ok += r.leaves_accepted;
            self.leaves_refused += r.leaves_refused;
            self.boundary_refused += r.boundary_removals_refused;
            self.rebalanced += u64::from(r.rebalance_run != 0);
            self.topics_deleted += r.topics_deleted;
            self.rejoins += r.rejoins;
            self.rejoins_judged += r.rejoins_judged;
            self.failovers += r.failovers;
            self.failovers_judged += r.failovers_judged;
            self.auth_refused += r.auth_refused;
            self.untouched_probe_sends += r.untouched_probe_sends;
            self.untouched_sends_judged += r.untouched_sends_judged;
            self.rotted += r.rotted;
            self.wal_rotted += r.wal_rotted;
            self.graceful_stops += r.graceful_stops;
            self.rolled += r.rolled;
            self.roll_skipped += r.roll_skipped;
            self.roll_seeds += u64::from(r.rolled > 0);
            self.roll_longest_gap_ms = self.roll_longest_gap_ms.max(r.roll_longest_gap_ms);
            self.drains += r.drains;
            self.drains_judged += r.drains_judged;
            self.replicates += r.replicates;
            self.replicates_judged += r.replicates_judged;
            self.replicate_longest_ms = self.replicate_longest_ms.max(r.replicate_longest_ms);
            self.deletions_checked += r.deletions_checked;
            for (k, v) in &r.crash_points {
                *self.crash_points.entry(*k).or_default() += v;
            }
            self.sim_secs += r.sim_secs;
            self.replicas_read += r.replicas_read;
            self.node += r.node;
        }

        /// Mechanisms that never fired: each one means a checker had
        /// nothing to check.
        /// Crash points are armed once or twice a seed, and some (inside a
        /// snapshot transfer) are rarely reached: their guard needs more
        /// seeds than the others' to be fair.
        const CRASH_POINT_GUARD_SEEDS: usize = 500;

        fn idle_mechanisms(&self, seeds: usize) -> Vec<String> {
            let n = &self.node;
            [
                (self.refused_min_isr, "no produce refused for min ISR"),
                (n.isr_shrinks_applied, "no ISR shrink"),
                (self.follower_reads, "no linearizable follower read"),
                (n.snapshots_installed, "no snapshot installed"),
                (n.crashes_checked, "no crash checked for durability"),
                (n.restarts_checked, "no restart checked against its disk"),
                (n.metadata_compared, "no metadata compared across nodes"),
                (n.reads_checked, "no read checked against the applied index"),
                (self.joins, "no node joined"),
                (self.replicas_read, "no replica read directly"),
                (
                    n.acks_checked_durable,
                    "no acknowledgement checked against the disks",
                ),
                (
                    n.leaders_checked_complete,
                    "no new leader checked for completeness",
                ),
                (n.states_compared, "no state machine fingerprint compared"),
                (
                    self.deletions_checked,
                    "no topic deleted during faults and checked gone",
                ),
                (
                    self.rejoins_judged,
                    "no rejoining node checked for deposing leaders",
                ),
                (
                    self.failovers_judged,
                    "no leader cut off checked for a failover",
                ),
                (
                    self.auth_refused,
                    "no produce without write permission refused",
                ),
                (
                    self.untouched_sends_judged,
                    "no produce to a partition a cut did not touch checked for availability",
                ),
                (
                    n.isr_members_checked_in_bound,
                    "no ISR member checked against the lag bound",
                ),
                (self.rotted, "no synced partition segment rotted"),
                (self.wal_rotted, "no synced WAL record rotted"),
                (n.wal_cuts_checked, "no WAL cut checked"),
                (
                    n.owed_votes_checked,
                    "no vote checked against the entries a WAL cut lost",
                ),
                (
                    n.graceful_stops_checked,
                    "no graceful shutdown checked to leave its node leading nothing",
                ),
                (
                    self.drains_judged,
                    "no node in maintenance checked to lead nothing",
                ),
                (
                    self.replicates_judged,
                    "no metadata-replicate checked against the leader's commit",
                ),
                (
                    n.replicas_rebuilt,
                    "no replica rebuilt its damaged state from a peer",
                ),
                (
                    n.replies_checked_durable,
                    "no message checked for release before persist",
                ),
                (
                    n.produces_checked_leader_in_isr,
                    "no accepting leader checked against its ISR",
                ),
                (self.leaves_ok, "no node removal accepted"),
                (n.moves_finished, "no replica move finished"),
                (
                    n.promotions_checked,
                    "no replica move's promotion checked against the ISR",
                ),
                (
                    self.boundary_refused,
                    "no removal at the quorum boundary refused",
                ),
            ]
            .into_iter()
            .filter(|(count, _)| *count == 0)
            .map(|(_, what)| what.to_string())
            .chain(
                chronik_net::CrashPoint::ALL
                    .into_iter()
                    .filter(|_| seeds >= Self::CRASH_POINT_GUARD_SEEDS)
                    .filter(|p| !self.crash_points.contains_key(p))
                    .map(|p| format!("no node crashed at {}", p.name())),
            )
            .collect()
        }

        fn print(&self, done: usize, secs: f64) {
            println!(
                "\n== {done} seeds in {secs:.0} s: {:.1} seeds/min, {:.1} simulated seconds per wall second",
                done as f64 * 60.0 / secs,
                self.sim_secs / secs.max(1e-9)
            );
            println!("cluster sizes (nodes: seeds): {:?}", self.nodes);
            println!(
                "faults injected: {} in all: {:?}",
                self.faults.values().sum::<u64>(),
                self.faults
            );
            let n = &self.node;
            println!(
                "operations checked: {} ({} sends and {} polls acknowledged, {} of them linearizable follower reads); {} topics created during faults, {} deleted during faults ({} checked gone everywhere after healing)",
                self.ops, self.sends, self.polls, self.follower_reads, self.late_topics, self.topics_deleted, self.deletions_checked
            );
            println!(
                "replicas read directly (checkpoints and after healing): {}",
                self.replicas_read
            );
            println!(
                "node-side: {} leader elections, {} applied entries, {} reads against the applied index, {} metadata states compared, {} snapshots installed, {} ISR shrinks applied, {} crashes checked for durability, {} restarts checked against their disk, {} votes recorded, {} new leaders checked for completeness, {} state machine fingerprints compared, {} messages checked for release before persist",
                n.leader_elections,
                n.entries_applied,
                n.reads_checked,
                n.metadata_compared,
                n.snapshots_installed,
                n.isr_shrinks_applied,
                n.crashes_checked,
                n.restarts_checked,
                n.votes_recorded,
                n.leaders_checked_complete,
                n.states_compared,
                n.replies_checked_durable
            );
            println!(
                "rejoins: {} nodes cut off and let back, {} of them with nothing else disturbing the cluster, checked to depose no leader; {} produces sent to partitions the cut did not touch while it lasted, {} of them judged (each acknowledged within {} ms)",
                self.rejoins, self.rejoins_judged, self.untouched_probe_sends, self.untouched_sends_judged, chronik_sim::scenario::UNTOUCHED_ACK_BOUND.as_millis()
            );
            println!(
                "failover: {} leaders cut off, {} of them with nothing else disturbing the cluster, checked to be replaced by a leader among the rest within {} ms",
                self.failovers,
                self.failovers_judged,
                chronik_sim::scenario::FAILOVER_BOUND.as_millis()
            );
            println!(
                "auth: {} produces by a principal without write permission refused PERMISSION_DENIED (none may be acknowledged or stored)",
                self.auth_refused
            );
            println!(
                "rot: {} synced partition segment bytes flipped on a down replica, {} replicas rebuilt from a peer",
                self.rotted, n.replicas_rebuilt
            );
            println!(
                "WAL rot: {} bytes flipped in WAL records proven synced on a down node, {} cuts checked (detected, every term and vote kept, every group the damaged record carried abstaining), {} votes of repairing replicas checked against the committed entries they lost",
                self.wal_rotted, n.wal_cuts_checked, n.owed_votes_checked
            );
            println!(
                "graceful shutdown: {} shutdowns ran their phases, {} of them checked to leave the node leading nothing; rolling restarts after healing: {} nodes restarted in {} seeds, {} skipped (never safe); longest a partition went without an acknowledged produce during a rolling restart: {} ms (bound {} ms)",
                self.graceful_stops,
                n.graceful_stops_checked,
                self.rolled,
                self.roll_seeds,
                self.roll_skipped,
                self.roll_longest_gap_ms,
                chronik_sim::scenario::ROLL_GAP_BOUND.as_millis()
            );
            println!(
                "maintenance: {} nodes put into maintenance, {} of them checked to lead nothing within 10 s with every peer up",
                self.drains, self.drains_judged
            );
            println!(
                "metadata replicate: {} requests, {} after a member was cut off checked to target the leader's commit and to catch up within {} s (longest: {} ms)",
                self.replicates,
                self.replicates_judged,
                chronik_sim::scenario::REPLICATE_BOUND.as_secs(),
                self.replicate_longest_ms
            );
            println!(
                "crash points reached: {:?}",
                self.crash_points
                    .iter()
                    .map(|(p, n)| (p.name(), *n))
                    .collect::<BTreeMap<_, _>>()
            );
            println!(
                "membership: {} nodes joined during faults, {} removals accepted and {} refused or unanswered, {} removals at the quorum boundary refused",
                self.joins, self.leaves_ok, self.leaves_refused, self.boundary_refused
            );
            println!(
                "replica moves (rebalancing and removals): {} finished, {} rolled back, {} promotions checked against the ISR; {} seeds ran a rebalance, each checked settled after healing with every partition at its replication factor",
                n.moves_finished, n.moves_rolled_back, n.promotions_checked, self.rebalanced
            );
            println!(
                "min_insync_replicas: {} produces refused before append, {} failed after append, {} acknowledgements checked against the leader's ISR, {} against the disks of the ISR; {} produces accepted by a leader checked against its ISR; {} accepted by a leader outside its ISR on topics allowing unclean election; {} ISR members checked to hold what their leader accepted a lag window earlier",
                self.refused_min_isr, self.below_min_isr, n.produce_acks_checked, n.acks_checked_durable, n.produces_checked_leader_in_isr, n.unclean_accepts, n.isr_members_checked_in_bound
            );
        }
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        if args.list_bugs {
            for b in Bug::ALL {
                println!("{b}");
            }
            return ExitCode::SUCCESS;
        }
        planted::activate(args.bug);
        let limit = Duration::from_secs(args.time_limit_secs);
        if let Some(seed) = args.shrink {
            return shrink(seed, limit);
        }
        if let Some(dir) = &args.regressions {
            return regressions(dir, limit);
        }
        if let (Some(seed), Some(why)) = (args.save_plan, &args.why) {
            let plan = draw_plan(seed);
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
            return save_regression(&dir, seed, why.clone(), plan);
        }
        let jobs = args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let total = (args.seeds.end() - args.seeds.start() + 1) as usize;
        println!(
            "running seeds {}..={} ({total}) on {jobs} threads{}",
            args.seeds.start(),
            args.seeds.end(),
            args.bug
                .map(|b| format!(
                    " with planted bug {b} (must be caught by: {})",
                    expected_catch(b).join("' or '")
                ))
                .unwrap_or_default()
        );
        let queue = Arc::new(Mutex::new(args.seeds.clone().collect::<VecDeque<u64>>()));
        let (tx, rx) = mpsc::channel();
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
        let mut totals = Totals::default();
        // (seed, why, every finding in full: what a planted bug's catch
        // is looked for in)
        let mut failures: Vec<(u64, String, String)> = Vec::new();
        let mut done = 0usize;
        let every = (total / 20).max(1);
        for o in rx {
            done += 1;
            match o.result {
                Ok(r) => {
                    totals.add(&r);
                    if r.failed() {
                        let file = r.write_history();
                        let why = format!("{}\n    history: {}", r.failure(), file.display());
                        println!("FAILED seed {}: {why}", o.seed);
                        failures.push((o.seed, why, r.findings()));
                    }
                }
                Err((panic, violations)) => {
                    let mut why = format!("panicked: {panic}");
                    for v in violations.iter().take(5) {
                        why.push_str(&format!("\ninvariant: {v}"));
                    }
                    println!("FAILED seed {}: {why}", o.seed);
                    failures.push((o.seed, why, violations.join("\n")));
                }
            }
            if args.bug.is_some() && !failures.is_empty() {
                // Caught (or not): the seeds still queued are not needed.
                if let Ok(mut q) = queue.lock() {
                    q.clear();
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
        totals.print(done, secs);
        failures.sort_by_key(|(s, _, _)| *s);
        if let Some(bug) = args.bug {
            return judge_planted(bug, &failures);
        }
        let mut ok = failures.is_empty();
        if failures.is_empty() {
            println!("0 failures");
        } else {
            println!("{} failures:", failures.len());
            for (seed, why, _) in &failures {
                println!(
                    "- seed {seed}: {}\n    replay: {}",
                    why.lines().next().unwrap_or(""),
                    replay_command(*seed)
                );
            }
        }
        if args.guard_min_seeds > 0 && done >= args.guard_min_seeds {
            let idle = totals.idle_mechanisms(done);
            if !idle.is_empty() {
                println!(
                    "GUARD FAILED over {done} seeds: {} (a checker that never had anything to check proves nothing)",
                    idle.join("; ")
                );
                ok = false;
            }
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// The failure signature of an outcome, `None` if it passed.
    fn signature(o: &Outcome) -> Option<String> {
        match &o.result {
            Ok(r) if r.failed() => Some(r.signature()),
            Ok(_) => None,
            Err((panic, _)) => Some(format!("panic {}", panic.lines().next().unwrap_or(""))),
        }
    }

    /// The plan `seed` draws.
    fn draw_plan(seed: u64) -> Plan {
        std::thread::spawn(move || {
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
                .block_on(async { seed_plan() })
        })
        .join()
        .expect("plan drawing does not panic")
    }

    fn save_regression(dir: &std::path::Path, seed: u64, why: String, plan: Plan) -> ExitCode {
        let _ = std::fs::create_dir_all(dir);
        let file = dir.join(format!("seed-{seed}.json"));
        let r = Regression {
            seed,
            failed_with: why,
            plan,
        };
        let written = serde_json::to_string_pretty(&r)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&file, json + "\n").map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                println!("saved {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("cannot save {}: {e}", file.display());
                ExitCode::FAILURE
            }
        }
    }

    fn shrink(seed: u64, limit: Duration) -> ExitCode {
        let mut plan = draw_plan(seed);
        let Some(want) = signature(&run_seed_plan(seed, limit, Some(plan.clone()))) else {
            println!("seed {seed} passes: nothing to shrink");
            return ExitCode::FAILURE;
        };
        println!(
            "seed {seed} fails with {want:?}; {} faults to shrink",
            plan.steps.len()
        );
        let mut i = 0;
        while i < plan.steps.len() {
            let mut candidate = plan.clone();
            let (delay, dropped) = candidate.steps.remove(i);
            // Keep the later faults at their times.
            if let Some(next) = candidate.steps.get_mut(i) {
                next.0 += delay;
            }
            let got = signature(&run_seed_plan(seed, limit, Some(candidate.clone())));
            if got.as_deref() == Some(want.as_str()) {
                println!("  dropped {dropped}: still fails");
                plan = candidate;
            } else {
                println!(
                    "  {dropped} is needed ({})",
                    got.unwrap_or_else(|| "passes without it".into())
                );
                i += 1;
            }
        }
        println!(
            "smallest plan of seed {seed} ({want}):\n{}",
            plan.describe()
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-failures");
        let saved = save_regression(&dir, seed, want, plan);
        println!("once fixed, copy it into chronik-sim/regressions/ so it always runs");
        saved
    }

    fn regressions(dir: &std::path::Path, limit: Duration) -> ExitCode {
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(d) => d
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) => {
                println!("cannot read {}: {e}", dir.display());
                return ExitCode::from(2);
            }
        };
        files.sort();
        let mut failed = 0;
        for f in &files {
            let r: Regression = match std::fs::read_to_string(f)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    println!("FAILED {}: not a regression scenario: {e}", f.display());
                    failed += 1;
                    continue;
                }
            };
            let o = run_seed_plan(r.seed, limit, Some(r.plan));
            match signature(&o) {
                None => println!(
                    "ok {} (seed {}, once failed with {})",
                    f.display(),
                    r.seed,
                    r.failed_with
                ),
                Some(s) => {
                    println!("FAILED {} (seed {}): {s}", f.display(), r.seed);
                    failed += 1;
                }
            }
        }
        println!("{} regression scenarios, {failed} failed", files.len());
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    /// A planted bug counts as caught only when its first failing seed
    /// names the expected anomaly or invariant; a panic alone, or another
    /// checker, is not its catch.
    fn judge_planted(bug: Bug, failures: &[(u64, String, String)]) -> ExitCode {
        let expected = expected_catch(bug);
        let Some((seed, why, findings)) = failures.first() else {
            println!("planted bug {bug} was NOT caught");
            return ExitCode::FAILURE;
        };
        if let Some(by) = expected.iter().find(|e| findings.contains(**e)) {
            println!(
                "planted bug {bug} caught by '{by}' at seed {seed}\n    replay: {}",
                replay_command(*seed)
            );
            ExitCode::SUCCESS
        } else {
            println!(
                "planted bug {bug}: seed {seed} failed, but not by '{}':\n{why}\n    replay: {}",
                expected.join("' or '"),
                replay_command(*seed)
            );
            ExitCode::FAILURE
        }
    }
}
