//! One seeded run of the whole stack: the seed picks the cluster size (3 to
//! 7), the topics, a fault plan and the workload's timing. Safety phase:
//! producers and consumers run while the plan's faults strike and topics are
//! created. Liveness phase: every fault heals, every group must elect a
//! leader within a bound, and a final read of every partition must find
//! every acknowledged record. The client history and the node-side checker
//! decide the verdict.
//!
//! The workload is a list of independent client tasks sharing one history:
//! a new kind of client (membership changes, follower reads...) is one more
//! task pushing ops.

use crate::history::{check_except, poll_value, send_value, Anomaly, Func, History, OpType};
use crate::node_checker::{NodeChecker, NodeCounts};
use crate::SimCluster;
use bytes::Bytes;
use chronik_core::ErrorCode;
use chronik_net::proto::ReadConsistency;
use chronik_net::{Client, ClientError, RetryPolicy};
use madsim::rand::{thread_rng, Rng};
use madsim::runtime::Handle;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Process id of the final reads (after healing).
pub const FINAL_PROCESS: u64 = 1_000_000;
/// Longest the cluster may take, once healed, to have a leader in every group.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);
/// Fewest sends and polls a seed must get acknowledged during its faults...
const SENDS_OK_MIN: u64 = 1;
const POLLS_OK_MIN: u64 = 1;
/// ... unless its plan kept a majority of nodes down for this share of the
/// fault time.
const MAJORITY_DOWN_EXEMPT: f64 = 0.5;
/// How often the safety phase reads every replica directly.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(3);
/// How long the workload keeps running after the last fault.
const TAIL: Duration = Duration::from_secs(4);
/// The longest a produce may take on a partition a node's cut does not
/// touch (led elsewhere, enough of its ISR on the other side), while that
/// node is cut off: well under the ISR lag bound and an election, which
/// are what a partition the cut touched may have to wait for.
pub const UNTOUCHED_ACK_BOUND: Duration = Duration::from_millis(750);

/// How soon a group whose leader was cut off leads elsewhere, when a
/// majority of its replicas is up and nothing else disturbs the cluster:
/// an election timeout for its followers to notice the silence of the
/// leader's node (quiesced groups learn it from node pings), up to two for
/// the randomized election, and room for pre-vote, vote and their fsyncs.
pub const FAILOVER_BOUND: Duration = Duration::from_millis(5_000);
/// How long after a heal the network counts as settled: peer streams
/// reconnect within a second of backoff, and a leader then needs a round
/// of check-quorum to have heard from its followers again.
const NETWORK_SETTLE: Duration = Duration::from_millis(2_500);

mod drain;
mod faults;
mod liveness;
mod plan;
mod probes;
mod replicate;
mod report;
mod rolling;
mod workload;

use faults::*;
use liveness::*;
pub use plan::{Fault, Plan};
use probes::*;
pub use replicate::REPLICATE_BOUND;
use report::judge;
pub use report::{expected_catch, replay_command, RunReport};
pub use rolling::ROLL_GAP_BOUND;
use workload::*;

/// Runs the current seed. With `verbose`, prints the plan before the run.
pub async fn run(verbose: bool) -> RunReport {
    run_checked(verbose, Arc::new(NodeChecker::default())).await
}

/// [`run`] reporting node-side checks to `checker`, which the caller keeps:
/// if the run panics, what the checker found before is still there.
pub async fn run_checked(verbose: bool, checker: Arc<NodeChecker>) -> RunReport {
    run_plan(verbose, checker, None).await
}

/// The plan the current seed draws (what [`run`] would execute).
pub fn seed_plan() -> Plan {
    Plan::generate(&mut thread_rng())
}

/// [`run_checked`] with `plan` in place of the seed's own plan: the seed's
/// plan is still drawn first, so everything else the seed decides (timing,
/// workload choices) stays as it was. Shrinking and saved regression
/// scenarios replay through this.
pub async fn run_plan(verbose: bool, checker: Arc<NodeChecker>, plan: Option<Plan>) -> RunReport {
    let seed = Handle::current().seed();
    let sim_start = madsim::time::Instant::now();
    let mut rng = thread_rng();
    let drawn = Plan::generate(&mut rng);
    let plan = plan.unwrap_or(drawn);
    if verbose {
        println!(
            "seed {seed}: {}\nreplay: {}",
            plan.describe(),
            replay_command(seed)
        );
    }
    let mut report = RunReport {
        seed,
        nodes: plan.nodes,
        plan: Some(plan.clone()),
        ..RunReport::default()
    };
    let n = plan.nodes;
    let mut cluster = SimCluster::start(n, checker.clone());
    for node in 1..=n {
        cluster.slow_disk(node, Some(disk_base(node, &plan)), rng.gen());
    }
    let client_node = Handle::current()
        .create_node()
        .name("clients")
        .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
        .build();
    let addrs = cluster.client_addrs.clone();
    let replicas = n.min(3) as u32;

    let admin = Arc::new(cluster.client());
    let (c, topics, unclean) = (admin.clone(), plan.topics.clone(), plan.unclean.clone());
    let setup = client_node
        .spawn(async move {
            for _ in 0..100 {
                if c.metadata().await.map(|m| m.nodes.len()).unwrap_or(0) == n as usize {
                    for (t, parts, min_isr) in &topics {
                        let req = chronik_net::proto::CreateTopicRequest {
                            name: t.clone(),
                            partitions: *parts,
                            replication_factor: replicas,
                            min_insync_replicas: *min_isr,
                            unclean_leader_election: unclean.contains(t),
                        };
                        if let Err(e) = c.create_topic_with(req).await {
                            return Err(format!("creating {t}: {e}"));
                        }
                    }
                    return Ok(());
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            Err("the cluster never registered its nodes".to_string())
        })
        .await
        .expect("setup task");
    if let Err(e) = setup {
        report.liveness.push(e);
        return report;
    }

    let fault_time: Duration = plan.steps.iter().map(|(d, _)| *d).sum();
    let start = madsim::time::Instant::now();
    let work = Arc::new(Workload {
        history: History::new(),
        start,
        end: start + fault_time + TAIL,
        addrs: addrs.clone(),
        partitions: Mutex::new(expand(&names(&plan.topics))),
        next_process: AtomicU64::new(1),
        next_value: AtomicU64::new(0),
        refused_min_isr: AtomicU64::new(0),
        appended_below_min_isr: AtomicU64::new(0),
        follower_reads: AtomicU64::new(0),
        late_created: Mutex::new(Vec::new()),
        deleted: Mutex::new(BTreeSet::new()),
        intruder_refused: AtomicU64::new(0),
        intruder_violations: Mutex::new(Vec::new()),
    });
    let mut workers = Vec::new();
    for _ in 0..plan.producers {
        workers.push(client_node.spawn(work.clone().producer()));
    }
    for _ in 0..plan.consumers {
        workers.push(client_node.spawn(work.clone().consumer()));
    }
    workers.push(client_node.spawn(work.clone().intruder(start + fault_time)));
    let creator = client_node.spawn(
        work.clone()
            .topic_creator(plan.late_topics.clone(), replicas),
    );

    // Checkpoints: every few seconds of the safety phase, read every
    // replica directly and check what it stores.
    let (w, c) = (work.clone(), admin.clone());
    let checkpoints = client_node.spawn(async move {
        let mut violations = Vec::new();
        let mut read = 0;
        let mut at = w.start;
        loop {
            at += CHECKPOINT_EVERY;
            if at >= w.end {
                return (violations, read);
            }
            madsim::time::sleep_until(at).await;
            let deleted = w.deleted.lock().clone();
            if let Ok((v, n)) =
                check_replicas(&w.history, &c, false, Duration::ZERO, &deleted).await
            {
                violations.extend(v);
                read += n;
            }
        }
    });

    // Safety phase.
    let mut st = FaultState::new();
    let mut cx = Ctx {
        n,
        plan: &plan,
        addrs: &addrs,
        cluster: &mut cluster,
        checker: &checker,
        report: &mut report,
        work: &work,
        admin: &admin,
        client_node: &client_node,
    };
    for (delay, fault) in &plan.steps {
        if sleep_crashing_frozen(cx.cluster, &checker, *delay, &st.killed, cx.report).await {
            st.returned_at = Some(madsim::time::Instant::now());
        }
        *cx.report.faults.entry(fault.kind()).or_default() += 1;
        let executed = inject(fault, &mut st, &mut cx).await;
        if matches!(fault, Fault::Kill { .. } | Fault::Pause { .. }) {
            st.last_down = madsim::time::Instant::now();
        }
        if matches!(
            fault,
            Fault::Heal
                | Fault::Restart { .. }
                | Fault::Resume { .. }
                | Fault::Bounce { .. }
                | Fault::PowerLoss { .. }
                | Fault::KillReplicas { .. }
                | Fault::DiskError { .. }
                | Fault::Rot { .. }
                | Fault::WalRot { .. }
                | Fault::Rejoin { .. }
                | Fault::GracefulRestart { .. }
                | Fault::Join { .. }
        ) {
            st.returned_at = Some(madsim::time::Instant::now());
        }
        if matches!(
            fault,
            Fault::Join { .. }
                | Fault::Leave { .. }
                | Fault::LeaveLeader { .. }
                | Fault::LeaveAtBoundary { .. }
        ) {
            st.last_membership_step = Some(madsim::time::Instant::now());
        }
        cx.report.executed.push(executed);
    }
    checker.disarm_all();
    sleep_crashing_frozen(cx.cluster, &checker, Duration::ZERO, &st.killed, cx.report).await;
    cx.report.crash_points = checker.crash_points_fired();

    // Liveness phase, then the verdict.
    heal_and_check(&mut cx, st, workers, creator, checkpoints).await;
    judge(&mut cx, sim_start).await;
    report
}
