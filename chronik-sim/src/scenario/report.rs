//! What one seed did and found, and how a failure is replayed.

use super::*;

/// What one seed did and found.
#[derive(Debug, Default)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: u64,
    /// Faults as executed (leaders resolved), in order.
    pub executed: Vec<String>,
    pub faults: BTreeMap<&'static str, u64>,
    pub topics_created_late: u64,
    pub ops: usize,
    pub sends_ok: u64,
    pub polls_ok: u64,
    /// What the node-side checks saw (elections, applied entries, crashes
    /// and restarts checked, metadata compared...).
    pub node: NodeCounts,
    /// Produces refused with NOT_ENOUGH_REPLICAS, and appended but failed
    /// with NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    pub refused_min_isr: u64,
    pub appended_below_min_isr: u64,
    pub follower_reads: u64,
    /// Simulated seconds the seed ran.
    pub sim_secs: f64,
    /// The plan that ran.
    pub plan: Option<Plan>,
    /// History anomalies (lost writes, stale reads...).
    pub anomalies: Vec<Anomaly>,
    /// Node-side invariant violations (election safety, apply order...).
    pub violations: Vec<String>,
    /// Replicas read directly at checkpoints and at the end; what they
    /// were found to lack, and what scenario checks found wrong (a
    /// metadata-replicate target below the leader's commit), moved into
    /// `violations` at the end.
    pub replicas_read: u64,
    pub violations_stored: Vec<String>,
    /// Liveness failures: no leader after healing, a final read that failed.
    pub liveness: Vec<String>,
    /// The members all nodes agreed on after healing.
    pub members: Vec<u64>,
    /// Nodes that joined, and removals accepted or refused.
    pub joins: u64,
    pub leaves_accepted: u64,
    pub leaves_refused: u64,
    /// Removals tried at the quorum boundary, refused as they must be.
    pub boundary_removals_refused: u64,
    /// The latest rebalance run's id after healing (0: none ran).
    pub rebalance_run: u64,
    /// Crash points reached, by kind.
    pub crash_points: BTreeMap<chronik_net::CrashPoint, u64>,
    /// Nodes cut off and let back, and of those the rejoins judged (nothing
    /// else disturbing the cluster meanwhile).
    pub rejoins: u64,
    pub rejoins_judged: u64,
    /// Leaders cut off (`isolate-leader`), and of those the ones judged
    /// (nothing else disturbing the cluster): each group must lead
    /// elsewhere within `FAILOVER_BOUND`.
    pub failovers: u64,
    pub failovers_judged: u64,
    /// Produces by a principal without write permission, refused
    /// `PERMISSION_DENIED` as they must be.
    pub auth_refused: u64,
    /// Produces sent to partitions a node's cut did not touch, while it was
    /// cut off, and of those the ones judged (with the rejoin).
    pub untouched_probe_sends: u64,
    pub untouched_sends_judged: u64,
    /// Partition segment bytes flipped on a down replica.
    pub rotted: u64,
    /// WAL record bytes flipped (in records proven synced) on a down node.
    pub wal_rotted: u64,
    /// Graceful shutdowns that ran their phases (fault plans and the
    /// rolling restart).
    pub graceful_stops: u64,
    /// The rolling restart after healing: nodes restarted, nodes skipped
    /// (never safe: a topic whose min_insync_replicas needs every
    /// replica), and the longest time a partition went without an
    /// acknowledged produce while producers tried, in simulated ms.
    pub rolled: u64,
    pub roll_skipped: u64,
    pub roll_longest_gap_ms: u64,
    /// Nodes put into maintenance (fault plans and after healing), and of
    /// those the ones checked to lead nothing (every peer up).
    pub drains: u64,
    pub drains_judged: u64,
    /// `metadata-replicate` requests (fault plans and after healing), and
    /// of those the ones judged (target against the leader's commit, the
    /// member caught up within the bound).
    pub replicates: u64,
    pub replicates_judged: u64,
    /// The longest a judged member took to apply the target, simulated ms.
    pub replicate_longest_ms: u64,
    /// Topics whose deletion was asked during the faults, and of those the
    /// ones checked gone everywhere after healing.
    pub topics_deleted: u64,
    pub deletions_checked: u64,
    /// Hash of every node event and every client op, in order: the same
    /// seed must give the same hash.
    pub trace_hash: u64,
    /// The history as JSON Lines.
    pub history: String,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        !self.anomalies.is_empty() || !self.violations.is_empty() || !self.liveness.is_empty()
    }

    /// What kind of failure this is, for shrinking: the first anomaly's
    /// kind, or the tag of the first violation or liveness failure.
    pub fn signature(&self) -> String {
        if let Some(a) = self.anomalies.first() {
            return format!("anomaly {:?}", a.kind);
        }
        if let Some(v) = self.violations.first() {
            return format!("invariant {}", v.split(':').next().unwrap_or(v));
        }
        self.liveness
            .first()
            .map(|l| format!("liveness {}", l.split(':').next().unwrap_or(l)))
            .unwrap_or_default()
    }

    /// Every anomaly, violation and liveness failure, a line each.
    pub fn findings(&self) -> String {
        let mut out: Vec<String> = self
            .anomalies
            .iter()
            .map(|a| format!("anomaly {a:?}"))
            .collect();
        out.extend(self.violations.iter().map(|v| format!("invariant: {v}")));
        out.extend(self.liveness.iter().map(|l| format!("liveness: {l}")));
        out.join("\n")
    }

    /// A few lines on what went wrong.
    pub fn failure(&self) -> String {
        let mut out = Vec::new();
        for a in self.anomalies.iter().take(5) {
            out.push(format!("anomaly {a:?}"));
        }
        for v in self.violations.iter().take(5) {
            out.push(format!("invariant: {v}"));
        }
        for l in self.liveness.iter().take(5) {
            out.push(format!("liveness: {l}"));
        }
        out.join("\n")
    }

    /// Writes the history to `target/sim-failures/seed-N.jsonl`.
    pub fn write_history(&self) -> std::path::PathBuf {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-failures");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("seed-{}.jsonl", self.seed));
        let _ = std::fs::write(&file, &self.history);
        file
    }
}

/// The one command that replays `seed` exactly (with the planted bug that
/// is switched on, if any), with its full output.
pub fn replay_command(seed: u64) -> String {
    let bug = chronik_core::planted::current()
        .map(|b| format!("CHRONIK_BUG={b} "))
        .unwrap_or_default();
    format!(
        "{bug}MADSIM_TEST_SEED={seed} RUSTFLAGS=\"--cfg madsim\" CARGO_TARGET_DIR=target/sim cargo test --profile sim -p chronik-sim --test sim -- --nocapture"
    )
}

/// What must catch each planted bug: phrases of the failure report (an
/// anomaly kind or the tag of a node-side violation), any of which counts.
/// A bug caught only by something else, or by a panic, does not count.
pub fn expected_catch(bug: chronik_core::planted::Bug) -> &'static [&'static str] {
    use chronik_core::planted::Bug;
    match bug {
        Bug::AckBeforeFsync
        | Bug::GroupCommitSkipSync
        | Bug::IgnoreFsyncError
        | Bug::SkipDirSync => &["crash durability"],
        // Torn tails taken for records, or rotted records taken as intact
        // (scrambled or rotted bytes that do not decode then refuse
        // recovery, where a checksum would have cut or repaired them).
        Bug::SkipCrc => &[
            "crash durability",
            "WAL corruption undetected",
            "WAL corruption refused",
            "WAL recovery refused",
        ],
        Bug::StaleRead => &["StaleRead"],
        Bug::FollowerReadEarly => &["read index"],
        // Acknowledging with the ISR below the minimum is seen by the
        // leader-view check, or as too few in-sync disks holding the entry.
        Bug::MinIsrBeforeAppendOnly => &["min ISR", "held durably by"],
        Bug::FailAfterAppend => &["FailedValueRead"],
        Bug::MetadataSnapshotLosesIsr => &["metadata diverged"],
        Bug::ForgetVote => &["recovery"],
        Bug::AckOnQuorum => &["held durably by"],
        Bug::VoteIgnoresLog => &["leader completeness"],
        Bug::LeaderOutsideIsrServes => &["while outside its ISR"],
        Bug::IsrKeepsMovedReplica => &["not a non-empty set of its replicas"],
        Bug::RecoverySkipsToCommit => &["recovered state machine"],
        Bug::SnapshotInstallOffByOne => &["snapshot content"],
        Bug::VoteReplyBeforePersist => &["release before persist"],
        Bug::DeleteKeepsFiles => &["deletion: node"],
        Bug::NoPreVote => &["availability: node"],
        Bug::IsrNeverShrinks => &["ISR lag bound"],
        Bug::AckWaitsForWholeIsr => &["availability: partition"],
        // Rotted bytes served: replicas differ, or a client reads a value
        // nobody sent.
        Bug::SegmentCrcUnchecked => &["stored: ", "UnknownValue"],
        Bug::CompactBeforeStateSynced => &["repair without storage damage"],
        Bug::MoveBeforeIsr => &["move promotes a replica outside the ISR"],
        Bug::ShutdownSkipsTransfer => &["graceful shutdown: node"],
        Bug::MaintenanceKeepsLeadership => &["maintenance: node"],
        Bug::ReplicateTargetTooLow => &["metadata replicate: node"],
        Bug::VoteBeforeRepaired => &["vote before repair"],
        Bug::CorruptTailTakenForTorn => &["WAL corruption undetected"],
        // Seen at the restart, or as a second vote in a term it forgot.
        Bug::RepairForgetsTerm => &["WAL cut lost a promise", "vote: node"],
        Bug::QuiescedIgnoresDeadLeader => &["failover: group"],
        Bug::AuthIgnoresTopicWrite => &["auth: "],
    }
}

/// The verdict: the history checked, the node-side checker's findings, and
/// whether the workload got through at all (unless the plan kept too much
/// of the cluster down for it to).
pub(super) async fn judge(cx: &mut Ctx<'_>, sim_start: madsim::time::Instant) {
    let plan = cx.plan;
    let (checker, work, admin, client_node) = (cx.checker, cx.work, cx.admin, cx.client_node);
    let report = &mut *cx.report;
    let ops = work.history.ops();
    let deleted = work.deleted.lock().clone();
    let verdict = check_except(&ops, Some(FINAL_PROCESS), &deleted);
    report.ops = ops.len();
    report.sends_ok = verdict.sends_ok;
    report.polls_ok = verdict.polls_ok;
    report.anomalies = verdict.anomalies;
    // A seed whose workload never got through during the faults checked
    // next to nothing: it fails, so that a plan or a bug that stalls
    // clients cannot pass unnoticed, unless its plan kept a majority down.
    let (sends, polls) = ops
        .iter()
        .filter(|o| o.kind == OpType::Ok && o.process < FINAL_PROCESS)
        .fold((0u64, 0u64), |(s, p), o| match o.f {
            Func::Send => (s + 1, p),
            Func::Poll => (s, p + 1),
        });
    // A majority of the cluster down for most of the faults, or for the
    // partitions (as the metadata places them at the end) a majority of
    // their replicas or so many that fewer than `min_insync_replicas` were
    // left.
    let c = admin.clone();
    let replica_sets: Vec<(BTreeSet<u64>, u64)> = client_node
        .spawn(async move {
            c.metadata()
                .await
                .map(|md| {
                    md.topics
                        .iter()
                        .flat_map(|t| {
                            let min = t.min_insync_replicas as u64;
                            t.partitions.iter().map(move |p| {
                                let r: BTreeSet<u64> = p.replicas.iter().copied().collect();
                                let needed = (r.len() as u64 / 2 + 1).max(min);
                                (r, needed)
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .expect("metadata task");
    // Averaged over the partitions: clients spread over them, and spend
    // their retry deadline on each one that cannot acknowledge.
    let every_partition_down = if replica_sets.is_empty() {
        0.0
    } else {
        replica_sets
            .iter()
            .map(|(r, needed)| plan.down_share_of(r, *needed))
            .sum::<f64>()
            / replica_sets.len() as f64
    };
    let down = plan.majority_down_share().max(every_partition_down);
    if sends < SENDS_OK_MIN || polls < POLLS_OK_MIN {
        let why = format!(
            "the workload made too little progress during the faults: {sends} sends and {polls} polls acknowledged (at least {SENDS_OK_MIN} and {POLLS_OK_MIN} required)"
        );
        if down >= MAJORITY_DOWN_EXEMPT {
            report.executed.push(format!(
                "{why}; exempt: the plan kept a majority of the cluster down, or the partitions unable to acknowledge (a majority of their replicas down, or fewer than their min ISR up), for {:.0}% of the faults",
                down * 100.0
            ));
        } else {
            report.liveness.push(why);
        }
    }
    report.violations = checker.violations();
    report.violations.append(&mut report.violations_stored);
    report.node = checker.counts();
    report.sim_secs = sim_start.elapsed().as_secs_f64();
    report.refused_min_isr = work.refused_min_isr.load(Ordering::Relaxed);
    report.appended_below_min_isr = work.appended_below_min_isr.load(Ordering::Relaxed);
    report.follower_reads = work.follower_reads.load(Ordering::Relaxed);
    report.history = work.history.to_jsonl();
    report.trace_hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        checker.trace_hash().hash(&mut h);
        report.history.hash(&mut h);
        h.finish()
    };
}
