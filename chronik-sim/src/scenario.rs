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
/// How long after a heal the network counts as settled: peer streams
/// reconnect within a second of backoff, and a leader then needs a round
/// of check-quorum to have heard from its followers again.
const NETWORK_SETTLE: Duration = Duration::from_millis(2_500);

/// One fault of a plan.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// Kill a node; its unsynced writes are lost, or with `torn` a prefix of
    /// them survives (all of them, partly zeroed, if `scrambled`).
    Kill {
        node: u64,
        torn: Option<u64>,
        scrambled: bool,
    },
    Restart {
        node: u64,
    },
    Pause {
        node: u64,
    },
    Resume {
        node: u64,
    },
    Isolate {
        node: u64,
    },
    /// Isolate whoever leads a group picked at run time (`pick` modulo the
    /// groups a live node reports).
    IsolateLeader {
        pick: u64,
    },
    /// Cut `side` off from the rest of the cluster, both ways.
    Split {
        side: Vec<u64>,
    },
    /// Drop the messages from `from` to `to` only.
    Cut {
        from: u64,
        to: u64,
    },
    /// Lose this share of packets everywhere.
    Loss {
        percent: u32,
    },
    /// Delay every packet by `min_ms..max_ms`.
    Latency {
        min_ms: u64,
        max_ms: u64,
    },
    /// Every fsync of a node's disk takes `min_ms..max_ms`.
    SlowDisk {
        node: u64,
        min_ms: u64,
        max_ms: u64,
    },
    /// Remove every network fault (splits, cuts, loss, latency).
    Heal,
    /// Start a new, empty node that joins the cluster through `via`.
    Join {
        node: u64,
        via: u64,
    },
    /// Ask (through `via`) to remove a node: the membership change runs
    /// while the other faults strike.
    Leave {
        node: u64,
        via: u64,
    },
    /// Kill a node and restart it `ms` later (during the election its
    /// absence starts): what was only in its page cache is gone.
    Bounce {
        node: u64,
        torn: Option<u64>,
        ms: u64,
    },
    /// Power loss: every running node is killed at once (unsynced writes
    /// lost everywhere, torn tails) and restarted `ms` later.
    PowerLoss {
        seed: u64,
        ms: u64,
    },
    /// Kill every replica of a group picked at run time (`pick` modulo the
    /// groups a live node reports) at once, restart them `ms` later.
    KillReplicas {
        pick: u64,
        ms: u64,
    },
    /// The WAL of a node fails every write (or every fsync) with EIO or
    /// ENOSPC for `ms`: the node must stop rather than acknowledge what it
    /// could not make durable. Then the disk is back and the node restarts
    /// from what its disk holds.
    DiskError {
        node: u64,
        errno: i32,
        on_sync: bool,
        ms: u64,
    },
    /// The partition files of a node fail every write (or every fsync)
    /// with EIO or ENOSPC for `ms`, its WAL unharmed: each replica whose
    /// storage work fails stops serving and rebuilds from its leader once
    /// the disk is back, without a restart.
    PartitionDiskError {
        node: u64,
        errno: i32,
        on_sync: bool,
        ms: u64,
    },
    /// Ask (through `via`) to remove whichever node leads the metadata
    /// group at run time.
    LeaveLeader {
        via: u64,
    },
    /// When the members are odd in number and as many are down as a
    /// majority can spare, ask (through `via`) to remove a live node
    /// (`pick` among them): the remaining live nodes would not be a
    /// majority of the new configuration, so the removal must be refused.
    LeaveAtBoundary {
        pick: u64,
        via: u64,
    },
    /// Cut `node` off for `ms` (several election timeouts: it keeps
    /// timing out alone), then let it back. With pre-vote and check-quorum
    /// it must not depose any leader: when nothing else disturbs the
    /// cluster meanwhile, no group another node leads may change term.
    Rejoin {
        node: u64,
        ms: u64,
    },
    /// Delete a topic created during the faults (`pick` modulo those
    /// created by then): producers and consumers stop picking it first;
    /// those in flight may hit it.
    DeleteTopic {
        pick: u64,
    },
    /// Kill `node`, flip one byte of one of its synced partition segments
    /// (`pick` modulo the files, `at` modulo the file's length) while it
    /// is down, and restart it `ms` later: data rotting on one replica.
    /// The replica must detect it, serve none of it, and rebuild that
    /// partition from its peers.
    Rot {
        node: u64,
        pick: u64,
        at: u64,
        ms: u64,
    },
    /// Arm a crash point on `node`: the next time it reaches `point` (a
    /// protocol step a timed kill rarely hits) it stops dead there, and is
    /// killed (its unsynced writes lost) and restarted 1-30 ms later.
    CrashAt {
        node: u64,
        point: chronik_net::CrashPoint,
    },
}

impl Fault {
    /// The name faults are counted under.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Restart { .. } => "restart",
            Fault::Pause { .. } => "pause",
            Fault::Resume { .. } => "resume",
            Fault::Isolate { .. } => "isolate",
            Fault::IsolateLeader { .. } => "isolate-leader",
            Fault::Split { .. } => "split",
            Fault::Cut { .. } => "one-way",
            Fault::Loss { .. } => "loss",
            Fault::Latency { .. } => "latency",
            Fault::SlowDisk { .. } => "slow-disk",
            Fault::Heal => "heal",
            Fault::Join { .. } => "join",
            Fault::Leave { .. } => "leave",
            Fault::Bounce { .. } => "bounce",
            Fault::DiskError { .. } => "disk-error",
            Fault::PartitionDiskError { .. } => "partition-disk-error",
            Fault::PowerLoss { .. } => "power-loss",
            Fault::KillReplicas { .. } => "kill-replicas",
            Fault::LeaveLeader { .. } => "leave-leader",
            Fault::LeaveAtBoundary { .. } => "leave-at-boundary",
            Fault::CrashAt { .. } => "crash-point",
            Fault::DeleteTopic { .. } => "delete-topic",
            Fault::Rejoin { .. } => "rejoin",
            Fault::Rot { .. } => "rot",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill {
                node,
                torn,
                scrambled,
            } => {
                let how = match (torn, scrambled) {
                    (None, _) => "",
                    (Some(_), false) => " (torn)",
                    (Some(_), true) => " (torn, scrambled)",
                };
                write!(f, "kill {node}{how}")
            }
            Fault::Restart { node } => write!(f, "restart {node}"),
            Fault::Pause { node } => write!(f, "pause {node}"),
            Fault::Resume { node } => write!(f, "resume {node}"),
            Fault::Isolate { node } => write!(f, "isolate {node}"),
            Fault::IsolateLeader { pick } => write!(f, "isolate the leader of group #{pick}"),
            Fault::Split { side } => write!(f, "split {side:?} from the rest"),
            Fault::Cut { from, to } => write!(f, "cut {from}->{to}"),
            Fault::Loss { percent } => write!(f, "lose {percent}% of packets"),
            Fault::Latency { min_ms, max_ms } => write!(f, "latency {min_ms}..{max_ms} ms"),
            Fault::SlowDisk {
                node,
                min_ms,
                max_ms,
            } => write!(f, "fsync of node {node} takes {min_ms}..{max_ms} ms"),
            Fault::Heal => write!(f, "heal the network"),
            Fault::Join { node, via } => write!(f, "node {node} joins through node {via}"),
            Fault::Leave { node, via } => write!(f, "remove node {node} (asking node {via})"),
            Fault::Bounce { node, torn, ms } => {
                let how = if torn.is_some() { " (torn)" } else { "" };
                write!(f, "kill {node}{how} and restart it {ms} ms later")
            }
            Fault::Rot { node, ms, .. } => write!(
                f,
                "kill {node}, flip a byte of one of its synced partition segments, restart it {ms} ms later"
            ),
            Fault::DiskError {
                node,
                errno,
                on_sync,
                ms,
            } => write!(
                f,
                "{} of node {node}'s WAL fail with {} for {ms} ms, then it restarts",
                if *on_sync { "fsyncs" } else { "writes" },
                if *errno == 28 { "ENOSPC" } else { "EIO" }
            ),
            Fault::PartitionDiskError {
                node,
                errno,
                on_sync,
                ms,
            } => write!(
                f,
                "{} of node {node}'s partition files fail with {} for {ms} ms",
                if *on_sync { "fsyncs" } else { "writes" },
                if *errno == 28 { "ENOSPC" } else { "EIO" }
            ),
            Fault::PowerLoss { ms, .. } => {
                write!(f, "power loss: kill every node, restart them {ms} ms later")
            }
            Fault::KillReplicas { pick, ms } => write!(
                f,
                "kill every replica of group #{pick}, restart them {ms} ms later"
            ),
            Fault::LeaveLeader { via } => {
                write!(f, "remove the metadata leader (asking node {via})")
            }
            Fault::LeaveAtBoundary { pick, via } => write!(
                f,
                "with a majority's spare nodes down, remove live node #{pick} (asking node {via}): must be refused"
            ),
            Fault::DeleteTopic { pick } => {
                write!(f, "delete topic #{pick} of those created during the faults")
            }
            Fault::Rejoin { node, ms } => write!(
                f,
                "cut node {node} off for {ms} ms, then let it back: it must depose no leader"
            ),
            Fault::CrashAt { node, point } => write!(
                f,
                "crash node {node} the next time it reaches {}",
                point.name()
            ),
        }
    }
}

/// Everything a seed decides, drawn before anything runs so it can be
/// printed first.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub nodes: u64,
    /// Topics created before the workload: (name, partitions,
    /// min_insync_replicas).
    pub topics: Vec<(String, u32, u32)>,
    /// Topics created during the faults: (when, name, partitions).
    pub late_topics: Vec<(Duration, String, u32)>,
    /// Faults, each after a pause.
    pub steps: Vec<(Duration, Fault)>,
    pub producers: u32,
    pub consumers: u32,
    /// Each node's usual fsync latency (min, max ms): disks differ, so some
    /// followers trail the others even without faults.
    pub disk_ms: Vec<(u64, u64)>,
    /// Topics (of `topics`) created with unclean leader election allowed:
    /// a replica outside the ISR may lead them and take the ISR over.
    /// Raft still elects only a leader holding every committed entry, and
    /// an acknowledgement needs `min_insync_replicas` in-sync copies, so
    /// here unclean election may cost availability, never acknowledged
    /// records: the history is checked as strictly as on other topics.
    #[serde(default)]
    pub unclean: Vec<String>,
}

impl Plan {
    pub fn generate(rng: &mut impl Rng) -> Plan {
        let nodes: u64 = rng.gen_range(3..=7);
        // Every replication factor is 3; min_insync_replicas 3 makes any
        // lagging replica refuse produces, 1 never does.
        let topics: Vec<(String, u32, u32)> = (0..rng.gen_range(1..=3))
            .map(|i| (format!("t{i}"), rng.gen_range(1..=3), rng.gen_range(1..=3)))
            .collect();
        let late_topics: Vec<(Duration, String, u32)> = (0..rng.gen_range(0..=2))
            .map(|i| {
                (
                    Duration::from_millis(rng.gen_range(500..12_000)),
                    format!("late{i}"),
                    rng.gen_range(1..=2),
                )
            })
            .collect();
        // Keep a majority running (killed or paused nodes are down), so the
        // workload makes progress; network faults may still cut a majority.
        let max_down = ((nodes - 1) / 2) as usize;
        let mut killed = BTreeSet::new();
        let mut paused = BTreeSet::new();
        let mut steps = Vec::new();
        for _ in 0..rng.gen_range(6..=12) {
            let delay = Duration::from_millis(rng.gen_range(500..2_000));
            let fault = loop {
                let node = rng.gen_range(1..=nodes);
                let down = killed.len() + paused.len();
                let free = !killed.contains(&node) && !paused.contains(&node);
                match rng.gen_range(0..23) {
                    0 | 1 if down < max_down && free => {
                        killed.insert(node);
                        let torn = rng.gen_bool(0.5).then(|| rng.gen::<u64>());
                        break Fault::Kill {
                            node,
                            torn,
                            scrambled: rng.gen_bool(0.5),
                        };
                    }
                    2 | 3 if !killed.is_empty() => {
                        let pick = rng.gen_range(0..killed.len());
                        let node = *killed.iter().nth(pick).expect("in range");
                        killed.remove(&node);
                        break Fault::Restart { node };
                    }
                    4 if down < max_down && free => {
                        paused.insert(node);
                        break Fault::Pause { node };
                    }
                    5 if !paused.is_empty() => {
                        let pick = rng.gen_range(0..paused.len());
                        let node = *paused.iter().nth(pick).expect("in range");
                        paused.remove(&node);
                        break Fault::Resume { node };
                    }
                    6 => break Fault::Isolate { node },
                    7 => break Fault::IsolateLeader { pick: rng.gen() },
                    8 => {
                        let mut ids: Vec<u64> = (1..=nodes).collect();
                        let mut side = Vec::new();
                        for _ in 0..rng.gen_range(1..=nodes / 2) {
                            side.push(ids.remove(rng.gen_range(0..ids.len())));
                        }
                        side.sort_unstable();
                        break Fault::Split { side };
                    }
                    9 => {
                        let to = rng.gen_range(1..=nodes);
                        if to != node {
                            break Fault::Cut { from: node, to };
                        }
                    }
                    10 => {
                        break Fault::Loss {
                            percent: rng.gen_range(1..=20),
                        }
                    }
                    11 => {
                        let min_ms = rng.gen_range(1..20);
                        break Fault::Latency {
                            min_ms,
                            max_ms: min_ms + rng.gen_range(1..200),
                        };
                    }
                    12 => {
                        let min_ms = rng.gen_range(1..10);
                        break Fault::SlowDisk {
                            node,
                            min_ms,
                            max_ms: min_ms + rng.gen_range(1..100),
                        };
                    }
                    13 => break Fault::Heal,
                    14 if free => {
                        break Fault::Bounce {
                            node,
                            torn: rng.gen_bool(0.5).then(|| rng.gen::<u64>()),
                            ms: rng.gen_range(1..=50),
                        }
                    }
                    15 if rng.gen_bool(0.3) => {
                        break Fault::PowerLoss {
                            seed: rng.gen(),
                            ms: rng.gen_range(1..=1_000),
                        }
                    }
                    16 => {
                        break Fault::KillReplicas {
                            pick: rng.gen(),
                            ms: rng.gen_range(1..=1_000),
                        }
                    }
                    17 if rng.gen_bool(0.3) => {
                        break Fault::Leave {
                            node,
                            via: rng.gen_range(1..=nodes),
                        }
                    }
                    18 if rng.gen_bool(0.3) => {
                        break Fault::LeaveLeader {
                            via: rng.gen_range(1..=nodes),
                        }
                    }
                    20 if free => {
                        break Fault::DiskError {
                            node,
                            errno: if rng.gen_bool(0.5) { 5 } else { 28 },
                            on_sync: rng.gen_bool(0.5),
                            ms: rng.gen_range(100..=2_000),
                        }
                    }
                    22 => {
                        break Fault::PartitionDiskError {
                            node,
                            errno: if rng.gen_bool(0.5) { 5 } else { 28 },
                            on_sync: rng.gen_bool(0.5),
                            ms: rng.gen_range(100..=2_000),
                        }
                    }
                    21 if free => {
                        break Fault::Rot {
                            node,
                            pick: rng.gen(),
                            at: rng.gen(),
                            ms: rng.gen_range(1..=1_000),
                        }
                    }
                    19 => {
                        break Fault::LeaveAtBoundary {
                            pick: rng.gen(),
                            via: rng.gen_range(1..=nodes),
                        }
                    }
                    _ => {}
                }
            };
            steps.push((delay, fault));
        }
        // Membership: a new node joins during the faults, and is usually
        // removed again later on.
        if rng.gen_bool(0.6) {
            let joiner = nodes + 1;
            let at = rng.gen_range(0..=steps.len());
            let join = Fault::Join {
                node: joiner,
                via: rng.gen_range(1..=nodes),
            };
            steps.insert(at, (Duration::from_millis(rng.gen_range(200..1_000)), join));
            // The joiner streams in snapshots of the replicas placed on
            // it, and drops them when it leaves: crash it there.
            let arm = |point| Fault::CrashAt {
                node: joiner,
                point,
            };
            if rng.gen_bool(0.6) {
                let delay = Duration::from_millis(rng.gen_range(10..100));
                let crash = arm(if rng.gen_bool(0.5) {
                    chronik_net::CrashPoint::SnapshotSegmentsFetched
                } else {
                    chronik_net::CrashPoint::MidSegmentStream
                });
                steps.insert(at + 1, (delay, crash));
            }
            if rng.gen_bool(0.7) {
                let later = rng.gen_range(at + 1..=steps.len());
                let leave = Fault::Leave {
                    node: joiner,
                    via: rng.gen_range(1..=nodes),
                };
                steps.insert(
                    later,
                    (Duration::from_millis(rng.gen_range(500..3_000)), leave),
                );
                if rng.gen_bool(0.5) {
                    let delay = Duration::from_millis(rng.gen_range(10..100));
                    steps.insert(later, (delay, arm(chronik_net::CrashPoint::GroupDropped)));
                }
            }
        }
        // Topic deletion: a topic created during the faults is deleted
        // while they strike.
        if !late_topics.is_empty() && rng.gen_bool(0.6) {
            let at = rng.gen_range(steps.len() / 2..=steps.len());
            let delete = Fault::DeleteTopic { pick: rng.gen() };
            steps.insert(
                at,
                (Duration::from_millis(rng.gen_range(100..1_000)), delete),
            );
        }
        // A node cut off alone for a while comes back: it must not depose
        // the leaders that carried on without it.
        for _ in 0..rng.gen_range(0..=2) {
            let at = rng.gen_range(0..=steps.len());
            let rejoin = Fault::Rejoin {
                node: rng.gen_range(1..=nodes),
                ms: rng.gen_range(1_500..=4_000),
            };
            steps.insert(
                at,
                (Duration::from_millis(rng.gen_range(100..1_000)), rejoin),
            );
        }
        // Crash points: armed at some step, they fire whenever the node
        // next reaches that protocol step (later faults included).
        for _ in 0..rng.gen_range(0..=2) {
            let at = rng.gen_range(0..=steps.len());
            let point =
                chronik_net::CrashPoint::ALL[rng.gen_range(0..chronik_net::CrashPoint::ALL.len())];
            let arm = Fault::CrashAt {
                node: rng.gen_range(1..=nodes),
                point,
            };
            steps.insert(at, (Duration::from_millis(rng.gen_range(100..1_000)), arm));
        }
        let unclean = topics
            .iter()
            .filter(|_| rng.gen_bool(0.3))
            .map(|(t, _, _)| t.clone())
            .collect();
        let disk_ms = (0..nodes + 1)
            .map(|_| {
                let min = rng.gen_range(0..3);
                (min, min + rng.gen_range(1..6))
            })
            .collect();
        Plan {
            nodes,
            topics,
            late_topics,
            steps,
            producers: rng.gen_range(2..=4),
            consumers: rng.gen_range(1..=3),
            disk_ms,
            unclean,
        }
    }

    /// The share of the fault time during which a majority of the nodes
    /// was down (killed, paused, isolated or on the smaller side of a
    /// split), as far as the plan alone tells: a leader isolated at run
    /// time counts as one node, and nodes that join do not count.
    pub fn majority_down_share(&self) -> f64 {
        self.majority_down_share_of(&(1..=self.nodes).collect())
    }

    /// [`Plan::majority_down_share`] for a majority of `members` (the
    /// replicas of a partition, say) rather than of the whole cluster.
    pub fn majority_down_share_of(&self, members: &BTreeSet<u64>) -> f64 {
        self.down_share_of(members, members.len() as u64 / 2 + 1)
    }

    /// The share of the fault time during which no side of the network
    /// held `needed` of `members` up: a partition acknowledges only with a
    /// Raft majority of its replicas and `min_insync_replicas` of them in
    /// sync.
    pub fn down_share_of(&self, members: &BTreeSet<u64>, needed: u64) -> f64 {
        let mut dead: BTreeSet<u64> = BTreeSet::new();
        let mut cut: BTreeSet<u64> = BTreeSet::new();
        // Each split flips one bit of the nodes on its side: nodes can talk
        // only with nodes of the same bits.
        let mut sides: BTreeMap<u64, u64> = BTreeMap::new();
        let mut splits = 0u32;
        let mut leaders_cut = 0u64;
        // A node that joins hosts none of the existing replicas: only the
        // original nodes count.
        // Whether no side holds a majority of `members` that are up, with
        // `also_down` down too.
        let lost = |dead: &BTreeSet<u64>,
                    cut: &BTreeSet<u64>,
                    sides: &BTreeMap<u64, u64>,
                    leaders_cut: u64,
                    also_down: Option<u64>| {
            let mut classes: BTreeMap<u64, u64> = BTreeMap::new();
            for id in members
                .iter()
                .copied()
                .filter(|id| !dead.contains(id) && !cut.contains(id) && Some(*id) != also_down)
            {
                *classes.entry(*sides.get(&id).unwrap_or(&0)).or_default() += 1;
            }
            let largest = classes.values().max().copied().unwrap_or(0);
            largest.saturating_sub(leaders_cut) < needed
        };
        let (mut total, mut down) = (Duration::ZERO, Duration::ZERO);
        for (delay, fault) in &self.steps {
            total += *delay;
            if lost(&dead, &cut, &sides, leaders_cut, None) {
                down += *delay;
            }
            match fault {
                Fault::Kill { node, .. } | Fault::Pause { node } => {
                    dead.insert(*node);
                }
                Fault::Restart { node } | Fault::Resume { node } => {
                    dead.remove(node);
                }
                Fault::Isolate { node } => {
                    cut.insert(*node);
                }
                Fault::IsolateLeader { .. } => leaders_cut += 1,
                Fault::Split { side } => {
                    for id in side {
                        *sides.entry(*id).or_default() ^= 1 << (splits % 64);
                    }
                    splits += 1;
                }
                Fault::Heal => {
                    cut.clear();
                    sides.clear();
                    leaders_cut = 0;
                }
                Fault::Join { .. }
                | Fault::Bounce { .. }
                | Fault::Rot { .. }
                | Fault::DiskError { .. }
                | Fault::PartitionDiskError { .. }
                | Fault::PowerLoss { .. }
                | Fault::KillReplicas { .. }
                | Fault::LeaveLeader { .. }
                | Fault::LeaveAtBoundary { .. }
                | Fault::Cut { .. }
                | Fault::Loss { .. }
                | Fault::Latency { .. }
                | Fault::SlowDisk { .. }
                | Fault::CrashAt { .. }
                | Fault::DeleteTopic { .. }
                | Fault::Leave { .. } => {}
                // Cut off and back within the step: `ms` more of fault
                // time, with `node` down on top of the rest.
                Fault::Rejoin { node, ms } => {
                    let ms = Duration::from_millis(*ms);
                    total += ms;
                    if lost(&dead, &cut, &sides, leaders_cut, Some(*node)) {
                        down += ms;
                    }
                }
            }
        }
        if total.is_zero() {
            0.0
        } else {
            down.as_secs_f64() / total.as_secs_f64()
        }
    }

    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} nodes (fsync ms {:?}); topics (name, partitions, min ISR) {:?} (unclean leader election: {:?}); created during faults {:?}; {} producers, {} consumers; faults:",
            self.nodes,
            self.disk_ms,
            self.topics,
            self.unclean,
            self.late_topics
                .iter()
                .map(|(at, t, p)| format!("{t}({p}) at {}ms", at.as_millis()))
                .collect::<Vec<_>>(),
            self.producers,
            self.consumers
        );
        let mut at = Duration::ZERO;
        for (delay, fault) in &self.steps {
            at += *delay;
            out.push_str(&format!("\n  +{:>6}ms {fault}", at.as_millis()));
        }
        out
    }
}

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
    /// Replicas read directly at checkpoints and at the end, and what
    /// they were found to lack (moved into `violations` at the end).
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
    /// Crash points reached, by kind.
    pub crash_points: BTreeMap<chronik_net::CrashPoint, u64>,
    /// Nodes cut off and let back, and of those the rejoins judged (nothing
    /// else disturbing the cluster meanwhile).
    pub rejoins: u64,
    pub rejoins_judged: u64,
    /// Produces sent to partitions a node's cut did not touch, while it was
    /// cut off, and of those the ones judged (with the rejoin).
    pub untouched_probe_sends: u64,
    pub untouched_sends_judged: u64,
    /// Partition segment bytes flipped on a down replica.
    pub rotted: u64,
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
/// Sleeps `d` (at least one pass), meanwhile killing every node that
/// stopped at a crash point (its unsynced writes lost, its tail torn half
/// the time) and restarting it 1-30 ms later. A node the plan killed since
/// is left to the plan's restart.
async fn sleep_crashing_frozen(
    cluster: &mut SimCluster,
    checker: &NodeChecker,
    d: Duration,
    killed: &BTreeSet<u64>,
    report: &mut RunReport,
) {
    let end = madsim::time::Instant::now() + d;
    loop {
        for (node, point) in checker.take_frozen() {
            if killed.contains(&node) {
                continue;
            }
            let mut rng = thread_rng();
            let torn = rng.gen_bool(0.5).then(|| rng.gen::<u64>());
            let ms = rng.gen_range(1..=30);
            cluster.kill(node, torn, false);
            madsim::time::sleep(Duration::from_millis(ms)).await;
            cluster.restart(node);
            report.executed.push(format!(
                "node {node} stopped at {}: killed{} and restarted {ms} ms later",
                point.name(),
                if torn.is_some() { " (torn)" } else { "" }
            ));
        }
        let now = madsim::time::Instant::now();
        if now >= end {
            return;
        }
        madsim::time::sleep((end - now).min(Duration::from_millis(5))).await;
    }
}

pub fn expected_catch(bug: chronik_core::planted::Bug) -> &'static [&'static str] {
    use chronik_core::planted::Bug;
    match bug {
        Bug::AckBeforeFsync
        | Bug::GroupCommitSkipSync
        | Bug::SkipCrc
        | Bug::IgnoreFsyncError
        | Bug::SkipDirSync => &["crash durability"],
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
    }
}

fn nanos(start: madsim::time::Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn key(t: &str, p: u32) -> String {
    format!("{t}-{p}")
}

fn expand(topics: &[(String, u32)]) -> Vec<(String, u32)> {
    topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
        .collect()
}

fn names(topics: &[(String, u32, u32)]) -> Vec<(String, u32)> {
    topics.iter().map(|(t, p, _)| (t.clone(), *p)).collect()
}

fn records(f: &chronik_net::FetchResult) -> Vec<(u64, String)> {
    f.records
        .iter()
        .map(|(o, r)| (*o, String::from_utf8_lossy(r).into_owned()))
        .collect()
}

/// Shared by the workload's tasks.
struct Workload {
    history: History,
    start: madsim::time::Instant,
    end: madsim::time::Instant,
    addrs: Vec<String>,
    /// Partitions the producers and consumers use: grows as late topics
    /// are created.
    partitions: Mutex<Vec<(String, u32)>>,
    next_process: AtomicU64,
    next_value: AtomicU64,
    /// Produces refused for too small an ISR, before or after append.
    refused_min_isr: AtomicU64,
    appended_below_min_isr: AtomicU64,
    /// Linearizable follower reads that succeeded.
    follower_reads: AtomicU64,
    /// Topics created during the faults and not deleted: (name, partitions).
    late_created: Mutex<Vec<(String, u32)>>,
    /// Partition keys of topics deleted (or whose deletion was asked).
    deleted: Mutex<BTreeSet<String>>,
}

impl Workload {
    /// Takes topic `pick` (modulo) of those created during the faults out
    /// of the workload before it is deleted: its partitions are no longer
    /// picked, and their acknowledged records need not survive.
    fn forget_late_topic(&self, pick: u64) -> Option<String> {
        let mut created = self.late_created.lock();
        if created.is_empty() {
            return None;
        }
        let at = (pick % created.len() as u64) as usize;
        let (name, parts) = created.remove(at);
        self.partitions.lock().retain(|(t, _)| *t != name);
        self.deleted
            .lock()
            .extend((0..parts).map(|p| key(&name, p)));
        Some(name)
    }

    fn pick(&self, rng: &mut impl Rng) -> (String, u32) {
        let parts = self.partitions.lock();
        parts[rng.gen_range(0..parts.len())].clone()
    }

    fn client(&self, retry_unknown_outcome: bool) -> Client {
        Client::with_retry(
            self.addrs.clone(),
            RetryPolicy {
                deadline: Duration::from_secs(5),
                retry_unknown_outcome,
                ..RetryPolicy::default()
            },
        )
    }

    /// Sequential sends of unique values; a process whose send ended in an
    /// unknown outcome is retired and replaced by a new process id.
    async fn producer(self: Arc<Self>) {
        let client = self.client(false);
        let mut process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mut rng = thread_rng();
        while madsim::time::Instant::now() < self.end {
            let (t, p) = self.pick(&mut rng);
            if let Ok(off) = self.send(&client, &mut process, &t, p).await {
                if rng.gen_bool(0.5) {
                    // Read your write from a follower at once: it must
                    // wait until it has applied the record.
                    self.read_back(&client, process, &t, p, off).await;
                }
            }
        }
    }

    /// Sends one unique value to `t`-`p` as `process`, recorded in the
    /// history; its offset once acknowledged, else the error code. After
    /// an outcome that leaves the value possibly stored, `process` is
    /// retired for a new one.
    async fn send(
        &self,
        client: &Client,
        process: &mut u64,
        t: &str,
        p: u32,
    ) -> Result<u64, String> {
        let k = key(t, p);
        let v = format!("v{}", self.next_value.fetch_add(1, Ordering::Relaxed));
        let h = &self.history;
        let invoke = send_value(&k, None, &v);
        h.push(
            nanos(self.start),
            *process,
            OpType::Invoke,
            Func::Send,
            invoke,
        );
        match client.produce(t, p, vec![Bytes::from(v.clone())]).await {
            Ok(off) => {
                let value = send_value(&k, Some(off), &v);
                h.push(nanos(self.start), *process, OpType::Ok, Func::Send, value);
                Ok(off)
            }
            Err(ClientError::UnknownOutcome { .. }) => {
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Info, Func::Send, value);
                *process = self.next_process.fetch_add(1, Ordering::Relaxed);
                Err(ErrorCode::OutcomeUnknown.to_string())
            }
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::NotEnoughReplicasAfterAppend | ErrorCode::GroupRemoved
                ) =>
            {
                // Appended, not acknowledged (as durable enough, or before
                // its topic was deleted): the record may show up, so its
                // outcome is not a failure.
                if e.code() == ErrorCode::NotEnoughReplicasAfterAppend {
                    self.appended_below_min_isr.fetch_add(1, Ordering::Relaxed);
                }
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Info, Func::Send, value);
                *process = self.next_process.fetch_add(1, Ordering::Relaxed);
                Err(e.code().to_string())
            }
            Err(e) => {
                if e.code() == ErrorCode::NotEnoughReplicas {
                    self.refused_min_isr.fetch_add(1, Ordering::Relaxed);
                }
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Fail, Func::Send, value);
                Err(e.code().to_string())
            }
        }
    }

    /// A linearizable follower read of `t`-`p` from `off`, recorded as a
    /// poll of `process`.
    async fn read_back(&self, client: &Client, process: u64, t: &str, p: u32, off: u64) {
        let k = key(t, p);
        let h = &self.history;
        let invoke = poll_value(&k, off, &[], None);
        h.push(
            nanos(self.start),
            process,
            OpType::Invoke,
            Func::Poll,
            invoke,
        );
        match client
            .fetch_with(t, p, off, 4096, ReadConsistency::Follower)
            .await
        {
            Ok(f) => {
                self.follower_reads.fetch_add(1, Ordering::Relaxed);
                let value = poll_value(&k, off, &records(&f), Some(f.high_watermark));
                h.push(nanos(self.start), process, OpType::Ok, Func::Poll, value);
            }
            Err(_) => {
                let value = poll_value(&k, off, &[], None);
                h.push(nanos(self.start), process, OpType::Fail, Func::Poll, value);
            }
        }
    }

    /// Polls partitions from where it got to in each, at a random
    /// consistency: leader and follower reads must be linearizable (the
    /// checker flags stale ones); follower-stale reads make no freshness
    /// claim (recorded with a null high watermark) but must agree with
    /// every other observation.
    async fn consumer(self: Arc<Self>) {
        let client = self.client(true);
        let process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mut pos: BTreeMap<String, u64> = BTreeMap::new();
        let mut rng = thread_rng();
        while madsim::time::Instant::now() < self.end {
            let (t, p) = self.pick(&mut rng);
            let k = key(&t, p);
            let from = *pos.get(&k).unwrap_or(&0);
            let h = &self.history;
            let invoke = poll_value(&k, from, &[], None);
            h.push(
                nanos(self.start),
                process,
                OpType::Invoke,
                Func::Poll,
                invoke,
            );
            let consistency = match rng.gen_range(0..5) {
                0 => ReadConsistency::Leader,
                1..=3 => ReadConsistency::Follower,
                _ => ReadConsistency::FollowerStale,
            };
            match client.fetch_with(&t, p, from, 4096, consistency).await {
                Ok(f) => {
                    let recs = records(&f);
                    if let Some((o, _)) = recs.last() {
                        pos.insert(k.clone(), o + 1);
                    }
                    let hwm = match consistency {
                        ReadConsistency::FollowerStale => None,
                        ReadConsistency::Follower => {
                            self.follower_reads.fetch_add(1, Ordering::Relaxed);
                            Some(f.high_watermark)
                        }
                        _ => Some(f.high_watermark),
                    };
                    let value = poll_value(&k, from, &recs, hwm);
                    h.push(nanos(self.start), process, OpType::Ok, Func::Poll, value);
                }
                Err(_) => {
                    let value = poll_value(&k, from, &[], None);
                    h.push(nanos(self.start), process, OpType::Fail, Func::Poll, value);
                }
            }
            madsim::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
        }
    }

    /// Creates the late topics at their times; producers and consumers
    /// start using each once its creation is acknowledged.
    async fn topic_creator(
        self: Arc<Self>,
        late: Vec<(Duration, String, u32)>,
        replicas: u32,
    ) -> u64 {
        let client = self.client(true);
        let mut created = 0;
        for (at, name, parts) in late {
            madsim::time::sleep_until(self.start + at).await;
            if client.create_topic(&name, parts, replicas, 2).await.is_ok() {
                created += 1;
                self.partitions
                    .lock()
                    .extend(expand(&[(name.clone(), parts)]));
                self.late_created.lock().push((name.clone(), parts));
            }
        }
        created
    }
}

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
    let disk_base = |node: u64, plan: &Plan| {
        let (min, max) = plan.disk_ms[node as usize - 1];
        Duration::from_millis(min)..Duration::from_millis(max)
    };
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
    });
    let mut workers = Vec::new();
    for _ in 0..plan.producers {
        workers.push(client_node.spawn(work.clone().producer()));
    }
    for _ in 0..plan.consumers {
        workers.push(client_node.spawn(work.clone().consumer()));
    }
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
    let leaves: Arc<Mutex<Vec<Result<u64, String>>>> = Arc::default();
    let mut killed = BTreeSet::new();
    let mut paused = BTreeSet::new();
    let mut last_down = madsim::time::Instant::now();
    let live_addrs = |killed: &BTreeSet<u64>, paused: &BTreeSet<u64>| -> Vec<String> {
        (1..=n)
            .filter(|id| !killed.contains(id) && !paused.contains(id))
            .map(crate::client_addr)
            .collect()
    };
    let mut slow = BTreeSet::new();
    // Topics whose deletion was asked, with the groups they had.
    let mut doomed: Vec<(String, Vec<u64>)> = Vec::new();
    // Whether a network fault is in force, and the nodes isolated (both
    // cleared by a heal).
    let mut degraded = false;
    // When the network was last healed: links then reconnect (with up to a
    // second of backoff) and leaders hear from their followers again.
    let mut healed_at: Option<madsim::time::Instant> = None;
    let mut isolated: BTreeSet<u64> = BTreeSet::new();
    let mut last_membership_step: Option<madsim::time::Instant> = None;
    for (delay, fault) in &plan.steps {
        sleep_crashing_frozen(&mut cluster, &checker, *delay, &killed, &mut report).await;
        *report.faults.entry(fault.kind()).or_default() += 1;
        let mut executed = fault.to_string();
        match fault {
            Fault::Kill {
                node,
                torn,
                scrambled,
            } => {
                cluster.kill(*node, *torn, *scrambled);
                killed.insert(*node);
            }
            Fault::Restart { node } => {
                cluster.restart(*node);
                killed.remove(node);
            }
            Fault::Pause { node } => {
                cluster.pause(*node);
                paused.insert(*node);
            }
            Fault::Resume { node } => {
                cluster.resume(*node);
                paused.remove(node);
            }
            Fault::Isolate { node } => {
                cluster.clog(*node);
                isolated.insert(*node);
                degraded = true;
            }
            Fault::IsolateLeader { pick } => {
                degraded = true;
                let ask: Vec<String> = (1..=n)
                    .filter(|id| !killed.contains(id) && !paused.contains(id))
                    .map(|id| addrs[id as usize - 1].clone())
                    .collect();
                let pick = *pick;
                let leader = client_node
                    .spawn(async move {
                        for a in ask {
                            if let Ok(s) = crate::node_groups(&a).await {
                                if s.groups.is_empty() {
                                    continue;
                                }
                                let g = &s.groups[(pick % s.groups.len() as u64) as usize];
                                return (g.leader != 0).then_some((g.group, g.leader));
                            }
                        }
                        None
                    })
                    .await
                    .expect("leader lookup task");
                match leader {
                    Some((group, leader)) => {
                        cluster.clog(leader);
                        isolated.insert(leader);
                        executed = format!("isolate {leader} (leader of group {group})");
                    }
                    None => executed = "isolate the leader: none known".into(),
                }
            }
            Fault::Split { side } => {
                cluster.split(side);
                degraded = true;
            }
            Fault::Cut { from, to } => {
                cluster.clog_link(*from, *to);
                degraded = true;
            }
            Fault::Loss { percent } => {
                cluster.degrade_network(
                    *percent as f64 / 100.0,
                    madsim::net::Config::default().send_latency,
                );
                degraded = true;
            }
            Fault::Latency { min_ms, max_ms } => {
                cluster.degrade_network(
                    0.0,
                    Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms),
                );
                degraded = true;
            }
            Fault::SlowDisk {
                node,
                min_ms,
                max_ms,
            } => {
                let range = Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms);
                cluster.slow_disk(*node, Some(range), rng.gen());
                slow.insert(*node);
            }
            Fault::Heal => {
                cluster.heal();
                healed_at = Some(madsim::time::Instant::now());
                degraded = false;
                isolated.clear();
            }
            Fault::Rejoin { node, ms } => {
                let others: Vec<u64> = (1..=n)
                    .filter(|id| id != node && !killed.contains(id) && !paused.contains(id))
                    .collect();
                let o = others.clone();
                let armed_before = checker.armed_any();
                let fired_before: u64 = checker.crash_points_fired().values().sum();
                // A leader that has not heard from its followers since a
                // heal yet (their streams still reconnecting) steps down
                // when the cut takes one more away: that is the heal's
                // doing, not the rejoin's (seed 968).
                let settled = healed_at.is_none_or(|t| t.elapsed() >= NETWORK_SETTLE);
                let (before, changing_before) = client_node
                    .spawn(async move { leaders_and_terms(&o).await })
                    .await
                    .expect("leader survey task");
                // Partitions the cut does not touch keep acknowledging
                // while the node is away.
                let (ask, cut, lead) = (live_addrs(&killed, &paused), *node, before.clone());
                let (w, doomed_now) = (work.clone(), doomed.clone());
                let probe_ask: Vec<String> =
                    others.iter().map(|id| crate::client_addr(*id)).collect();
                let targets = client_node
                    .spawn(async move {
                        let targets = untouched_partitions(&w, ask, cut, &lead, &doomed_now).await;
                        warm_up(&w, probe_ask, targets).await
                    })
                    .await
                    .expect("probe target task");
                cluster.clog(*node);
                let until = madsim::time::Instant::now() + Duration::from_millis(*ms);
                let probes: Vec<_> = targets
                    .into_iter()
                    .map(|(target, client, process)| {
                        let w = work.clone();
                        client_node
                            .spawn(async move { probe(w, client, process, target, until).await })
                    })
                    .collect();
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                if !isolated.contains(node) {
                    // (A node the plan isolated stays isolated.)
                    cluster.unclog(*node);
                }
                madsim::time::sleep(Duration::from_millis(1_500)).await;
                let (after, changing_after) = client_node
                    .spawn(async move { leaders_and_terms(&others).await })
                    .await
                    .expect("leader survey task");
                // Judged only when nothing else could move a leader: no
                // network fault (nor a heal still settling), no node down
                // or paused, no crash armed
                // (before or after) or fired meanwhile,
                // no membership change (replica moves hand leadership
                // over) in flight or asked for in the last 15 s.
                let quiet_membership = last_membership_step
                    .is_none_or(|at: madsim::time::Instant| at.elapsed() > Duration::from_secs(15));
                let fired_during =
                    checker.crash_points_fired().values().sum::<u64>() > fired_before;
                let clean = !degraded
                    && settled
                    && killed.is_empty()
                    && paused.is_empty()
                    && !armed_before
                    && !fired_during
                    && !checker.armed_any()
                    && !changing_before
                    && !changing_after
                    && quiet_membership;
                let deposed: Vec<String> = before
                    .iter()
                    .filter(|(_, (leader, _))| leader != node)
                    .filter_map(|(g, (leader, term))| {
                        let (l2, t2) = after.get(g)?;
                        (t2 > term).then(|| {
                            format!(
                                "group {g}: leader {leader} term {term} -> leader {l2} term {t2}"
                            )
                        })
                    })
                    .collect();
                let mut stalled = Vec::new();
                let mut probe_sends = 0;
                for task in probes {
                    let (target, sends) = task.await.expect("probe task");
                    probe_sends += sends.len() as u64;
                    if let Some((at, took, outcome)) = sends
                        .iter()
                        .find(|(_, took, outcome)| *took > UNTOUCHED_ACK_BOUND || outcome.is_err())
                    {
                        stalled.push(format!(
                            "availability: partition {}-{} (group {}, leader {}, replicas {:?}, ISR {:?}, min ISR {}), untouched by node {node}'s cut, stopped acknowledging: a produce sent {} ms into the cut took {} ms ({}; bound {} ms)",
                            target.topic,
                            target.partition,
                            target.group,
                            target.leader,
                            target.replicas,
                            target.isr,
                            target.min_isr,
                            at.as_millis(),
                            took.as_millis(),
                            match outcome {
                                Ok(off) => format!("acknowledged at offset {off}"),
                                Err(code) => format!("failed: {code}"),
                            },
                            UNTOUCHED_ACK_BOUND.as_millis()
                        ));
                    }
                }
                report.rejoins += 1;
                report.untouched_probe_sends += probe_sends;
                if clean {
                    report.rejoins_judged += 1;
                    report.untouched_sends_judged += probe_sends;
                    report.violations_stored.extend(stalled);
                    if !deposed.is_empty() {
                        report.violations_stored.push(format!(
                            "availability: node {node} rejoining after {ms} ms cut off deposed leaders: {}",
                            deposed.join("; ")
                        ));
                    }
                }
                executed =
                    format!(
                    "cut node {node} off for {ms} ms and let it back: {} leader(s) changed term{}",
                    deposed.len(),
                    if clean { "" } else { " (not judged: other faults in force)" }
                );
            }
            Fault::Join { node, via } => {
                report.joins += 1;
                cluster.start_joining(*node, crate::client_addr(*via));
                cluster.slow_disk(*node, Some(disk_base(*node, &plan)), rng.gen());
            }
            Fault::Leave { node, via } => {
                spawn_removal(&client_node, *node, *via, leaves.clone(), work.end);
            }
            Fault::LeaveLeader { via } => {
                let ask = live_addrs(&killed, &paused);
                let found = client_node
                    .spawn(async move { group_of(&ask, None).await })
                    .await
                    .expect("leader lookup task");
                match found.and_then(|(_, leader, _)| (leader != 0).then_some(leader)) {
                    Some(leader) => {
                        spawn_removal(&client_node, leader, *via, leaves.clone(), work.end);
                        executed = format!("remove the metadata leader, node {leader}");
                    }
                    None => executed = "remove the metadata leader: none known".into(),
                }
            }
            Fault::LeaveAtBoundary { pick, via } => {
                let ask = live_addrs(&killed, &paused);
                let down: BTreeSet<u64> = killed.union(&paused).copied().collect();
                let quiet = madsim::time::Instant::now() >= last_down + BOUNDARY_QUIET;
                let (pick, via) = (*pick, crate::client_addr(*via));
                let outcome = client_node
                    .spawn(async move { removal_at_boundary(&ask, &down, quiet, pick, &via).await })
                    .await
                    .expect("boundary removal task");
                match outcome {
                    Ok(line) => {
                        if line.contains("refused") {
                            report.boundary_removals_refused += 1;
                        }
                        executed = line;
                    }
                    Err(violation) => {
                        executed = violation.clone();
                        report.violations_stored.push(violation);
                    }
                }
            }
            Fault::DiskError {
                node,
                errno,
                on_sync,
                ms,
            } => {
                cluster.disk_fault(*node, Some((*errno, *on_sync, "/wal")));
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                cluster.disk_fault(*node, None);
                // Whether it stopped on the error or never wrote meanwhile,
                // it restarts from its disk (what it had not synced is gone).
                cluster.kill(*node, None, false);
                cluster.restart(*node);
            }
            Fault::PartitionDiskError {
                node,
                errno,
                on_sync,
                ms,
            } => {
                checker.storage_damaged(*node);
                cluster.disk_fault(*node, Some((*errno, *on_sync, "/partitions/")));
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                cluster.disk_fault(*node, None);
            }
            Fault::CrashAt { node, point } => checker.arm(*node, *point),
            Fault::DeleteTopic { pick } => match work.forget_late_topic(*pick) {
                None => executed = "delete a topic created during the faults: none yet".into(),
                Some(name) => {
                    let (c, t) = (admin.clone(), name.clone());
                    let (groups, outcome) = client_node
                        .spawn(async move {
                            let groups = topic_groups(&c, &t).await;
                            (groups, c.delete_topic(&t).await)
                        })
                        .await
                        .expect("topic deletion task");
                    executed = match outcome {
                        Ok(()) => format!("deleted topic {name} (groups {groups:?})"),
                        Err(e) => format!("delete topic {name} (groups {groups:?}): {e}"),
                    };
                    doomed.push((name, groups));
                }
            },
            Fault::Bounce { node, torn, ms } => {
                cluster.kill(*node, *torn, false);
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                cluster.restart(*node);
            }
            Fault::Rot { node, pick, at, ms } => {
                checker.storage_damaged(*node);
                cluster.kill(*node, None, false);
                executed = match cluster.rot(*node, *pick, *at) {
                    Some((file, byte)) => {
                        report.rotted += 1;
                        format!(
                            "kill {node}, flip byte {byte} of {}, restart it {ms} ms later",
                            file.display()
                        )
                    }
                    None => format!(
                        "kill {node} (no partition segment to rot), restart it {ms} ms later"
                    ),
                };
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                cluster.restart(*node);
            }
            Fault::PowerLoss { seed, ms } => {
                let running: Vec<u64> = cluster
                    .nodes
                    .iter()
                    .map(|n| n.id)
                    .filter(|id| !killed.contains(id) && !paused.contains(id))
                    .collect();
                for (k, id) in running.iter().enumerate() {
                    cluster.kill(*id, Some(seed.wrapping_add(k as u64)), k % 2 == 1);
                }
                madsim::time::sleep(Duration::from_millis(*ms)).await;
                for id in &running {
                    cluster.restart(*id);
                }
                executed = format!("power loss: killed {running:?}, restarted them {ms} ms later");
            }
            Fault::KillReplicas { pick, ms } => {
                let ask = live_addrs(&killed, &paused);
                let pick = *pick;
                let found = client_node
                    .spawn(async move { group_of(&ask, Some(pick)).await })
                    .await
                    .expect("replica lookup task");
                match found {
                    Some((group, _, voters)) => {
                        let hit: Vec<u64> = voters
                            .into_iter()
                            .filter(|id| {
                                !killed.contains(id)
                                    && !paused.contains(id)
                                    && (*id as usize) <= cluster.nodes.len()
                            })
                            .collect();
                        for id in &hit {
                            cluster.kill(*id, None, false);
                        }
                        madsim::time::sleep(Duration::from_millis(*ms)).await;
                        for id in &hit {
                            cluster.restart(*id);
                        }
                        executed = format!(
                            "killed every replica of group {group} ({hit:?}), restarted them {ms} ms later"
                        );
                    }
                    None => executed = "kill the replicas of a group: none known".into(),
                }
            }
        }
        if matches!(fault, Fault::Kill { .. } | Fault::Pause { .. }) {
            last_down = madsim::time::Instant::now();
        }
        if matches!(
            fault,
            Fault::Join { .. }
                | Fault::Leave { .. }
                | Fault::LeaveLeader { .. }
                | Fault::LeaveAtBoundary { .. }
        ) {
            last_membership_step = Some(madsim::time::Instant::now());
        }
        report.executed.push(executed);
    }
    checker.disarm_all();
    sleep_crashing_frozen(&mut cluster, &checker, Duration::ZERO, &killed, &mut report).await;
    report.crash_points = checker.crash_points_fired();

    // Liveness phase: everything heals.
    cluster.heal();
    for node in slow {
        cluster.slow_disk(node, Some(disk_base(node, &plan)), rng.gen());
    }
    for node in paused {
        cluster.resume(node);
    }
    for node in killed {
        cluster.restart(node);
    }
    for w in workers {
        w.await.expect("workload task");
    }
    report.topics_created_late = creator.await.expect("topic creator task");

    // Removal tasks stop trying at the end of the workload; let the last
    // attempt answer.
    madsim::time::sleep_until(work.end + Duration::from_secs(4)).await;
    for outcome in leaves.lock().iter() {
        match outcome {
            Ok(node) => {
                report.leaves_accepted += 1;
                report
                    .executed
                    .push(format!("removal of node {node} accepted"));
            }
            Err(why) => {
                report.leaves_refused += 1;
                report.executed.push(why.clone());
            }
        }
    }
    let all: Vec<u64> = (1..=cluster.nodes.len() as u64).collect();
    let members = client_node
        .spawn(async move { await_membership(&all, LIVENESS_BOUND).await })
        .await
        .expect("membership task");
    let members = match members {
        Ok(m) => m,
        Err(e) => {
            report.liveness.push(e);
            (1..=n).collect()
        }
    };
    report.members = members.clone();
    let up_addrs: Vec<String> = members.iter().map(|id| crate::client_addr(*id)).collect();
    if let Err(e) = client_node
        .spawn(async move { await_leaders(&up_addrs, LIVENESS_BOUND).await })
        .await
        .expect("liveness task")
    {
        report.liveness.push(e);
    }

    // A deletion asked during the faults may not have happened: ask again
    // until the cluster says it is done (or never heard of the topic).
    report.topics_deleted = doomed.len() as u64;
    for (name, _) in &doomed {
        let (c, t) = (admin.clone(), name.clone());
        if let Err(e) = client_node
            .spawn(async move { finish_deletion(&c, &t, LIVENESS_BOUND).await })
            .await
            .expect("deletion task")
        {
            report.liveness.push(e);
        }
    }

    // Liveness: once healed, every partition commits a write within the
    // client's deadline (recorded like any send, so the final reads must
    // show it too).
    let w = work.clone();
    let final_writes = client_node
        .spawn(async move {
            // Never retries an unknown outcome itself (a retry could write
            // the value twice); a new attempt writes a new value instead.
            let client = w.client(false);
            let parts = w.partitions.lock().clone();
            // A process that got an unknown outcome is never reused.
            let mut process = FINAL_PROCESS;
            for (t, p) in parts {
                let k = key(&t, p);
                let mut last = String::new();
                let mut done = false;
                for attempt in 0..3u64 {
                    process += 1;
                    let v = format!("final-{k}-{attempt}");
                    let invoke = send_value(&k, None, &v);
                    w.history
                        .push(nanos(w.start), process, OpType::Invoke, Func::Send, invoke);
                    match client.produce(&t, p, vec![Bytes::from(v.clone())]).await {
                        Ok(off) => {
                            let ok = send_value(&k, Some(off), &v);
                            w.history
                                .push(nanos(w.start), process, OpType::Ok, Func::Send, ok);
                            done = true;
                            break;
                        }
                        Err(e) => {
                            let info = send_value(&k, None, &v);
                            w.history
                                .push(nanos(w.start), process, OpType::Info, Func::Send, info);
                            last = e.to_string();
                        }
                    }
                }
                if !done {
                    return Err(format!("no write to {k} committed after healing: {last}"));
                }
            }
            Ok::<(), String>(())
        })
        .await
        .expect("final write task");
    if let Err(e) = final_writes {
        report.liveness.push(e);
    }

    let (w, c) = (work.clone(), admin.clone());
    let final_reads = client_node
        .spawn(async move {
            let parts = w.partitions.lock().clone();
            for (t, p) in parts {
                let k = key(&t, p);
                let mut off = 0;
                loop {
                    let invoke = poll_value(&k, off, &[], None);
                    w.history.push(
                        nanos(w.start),
                        FINAL_PROCESS,
                        OpType::Invoke,
                        Func::Poll,
                        invoke,
                    );
                    let f = c
                        .fetch(&t, p, off, 1 << 20)
                        .await
                        .map_err(|e| format!("final read of {k} failed after healing: {e}"))?;
                    let recs = records(&f);
                    let value = poll_value(&k, off, &recs, Some(f.high_watermark));
                    w.history
                        .push(nanos(w.start), FINAL_PROCESS, OpType::Ok, Func::Poll, value);
                    match recs.last() {
                        Some((o, _)) => off = o + 1,
                        None => break,
                    }
                }
            }
            Ok::<(), String>(())
        })
        .await
        .expect("final read task");
    if let Err(e) = final_reads {
        report.liveness.push(e);
    }
    // Acknowledged means stored: every replica of every partition, read
    // directly once they converged, holds every acknowledged record.
    let (h, c) = (work.clone(), admin.clone());
    match client_node
        .spawn(async move {
            let deleted = h.deleted.lock().clone();
            check_replicas(&h.history, &c, true, LIVENESS_BOUND, &deleted).await
        })
        .await
        .expect("replica check task")
    {
        Ok((v, n)) => {
            report.violations_stored.extend(v);
            report.replicas_read += n;
        }
        Err(e) => report.liveness.push(e),
    }
    let (v, n) = checkpoints.await.expect("checkpoint task");
    report.violations_stored.extend(v);
    report.replicas_read += n;

    // A deleted topic is gone everywhere: no member hosts its groups, and
    // no member's disk keeps their files.
    if !doomed.is_empty() {
        let live: Vec<u64> = members.clone();
        let groups: Vec<u64> = doomed.iter().flat_map(|(_, g)| g.clone()).collect();
        let hosting = client_node
            .spawn(async move { await_groups_gone(&live, &groups, LIVENESS_BOUND).await })
            .await
            .expect("deletion check task");
        if let Err(e) = hosting {
            report.liveness.push(e);
        }
        for (name, groups) in &doomed {
            for id in &members {
                let Some(n) = cluster.nodes.get(*id as usize - 1) else {
                    continue;
                };
                for g in groups {
                    let dir = chronik_net::partition_store::group_dir(
                        &crate::data_dir(*id).join("partitions"),
                        *g,
                    );
                    let left: Vec<String> = chronik_net::disk::Disk::list(&n.disk, &dir)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| f.ends_with(".log") || f == "MANIFEST")
                        .collect();
                    if !left.is_empty() {
                        report.violations_stored.push(format!(
                            "deletion: node {id} still holds files of deleted topic {name} (group {g}): {left:?}"
                        ));
                    }
                }
            }
            report.deletions_checked += 1;
        }
    }

    if !report.liveness.is_empty() {
        let a = addrs.clone();
        let statuses = client_node
            .spawn(async move {
                let mut out = Vec::new();
                for addr in &a {
                    match crate::node_status(addr).await {
                        Ok(lines) => out.extend(lines),
                        Err(e) => out.push(format!("{addr}: {e}")),
                    }
                }
                out
            })
            .await
            .expect("status task");
        report.liveness.extend(statuses);
    }

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
    report
}

/// How long after the last kill or pause a boundary removal waits, so the
/// metadata leader no longer counts the down nodes as live.
const BOUNDARY_QUIET: Duration = Duration::from_secs(3);

/// A group as a live node reports it: `pick` modulo its groups, or the
/// metadata group for `None`. Returns (group, leader or 0, voters).
async fn group_of(ask: &[String], pick: Option<u64>) -> Option<(u64, u64, Vec<u64>)> {
    for a in ask {
        let Ok(Ok(s)) = madsim::time::timeout(Duration::from_secs(1), crate::node_groups(a)).await
        else {
            continue;
        };
        let g = match pick {
            _ if s.groups.is_empty() => continue,
            Some(pick) => &s.groups[(pick % s.groups.len() as u64) as usize],
            None => match s
                .groups
                .iter()
                .find(|g| g.group == chronik_core::METADATA_GROUP)
            {
                Some(g) => g,
                None => continue,
            },
        };
        return Some((g.group, g.leader, g.voters.clone()));
    }
    None
}

/// Asks, in the background, to remove `node` (through `via`), retrying (no
/// leader, a join still in flight...) until accepted or refused for good,
/// while the other faults go on.
fn spawn_removal(
    client_node: &madsim::runtime::NodeHandle,
    node: u64,
    via: u64,
    outcomes: Arc<Mutex<Vec<Result<u64, String>>>>,
    end: madsim::time::Instant,
) {
    let ask = crate::client_addr(via);
    client_node.spawn(async move {
        let mut last = String::new();
        while madsim::time::Instant::now() < end {
            let r = madsim::time::timeout(Duration::from_secs(3), crate::remove_node(&ask, node))
                .await
                .unwrap_or_else(|_| {
                    Err(chronik_net::ClientError::Timeout {
                        last: "no answer within 3 s".into(),
                    })
                });
            match r {
                Ok(()) => {
                    outcomes.lock().push(Ok(node));
                    return;
                }
                Err(e)
                    if matches!(
                        e.code(),
                        chronik_core::ErrorCode::InvalidRequest
                            | chronik_core::ErrorCode::UnknownNode
                    ) =>
                {
                    outcomes
                        .lock()
                        .push(Err(format!("remove node {node}: {}", e.code())));
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            madsim::time::sleep(Duration::from_millis(500)).await;
        }
        outcomes.lock().push(Err(format!(
            "remove node {node}: not accepted before the faults ended ({last})"
        )));
    });
}

/// With exactly as many members down as a majority can spare, asks once to
/// remove a live member: the live members left would not be a majority of
/// the new configuration, so an acceptance is a violation (`Err`).
/// `Ok` says what happened (refused, or why the test did not apply).
async fn removal_at_boundary(
    ask: &[String],
    down: &BTreeSet<u64>,
    quiet: bool,
    pick: u64,
    via: &str,
) -> Result<String, String> {
    let mut view = None;
    for a in ask {
        if let Ok(Ok(v)) = madsim::time::timeout(Duration::from_secs(1), crate::membership(a)).await
        {
            view = Some(v);
            break;
        }
    }
    let Some((members, change, joint)) = view else {
        return Ok("boundary removal skipped: no membership view".into());
    };
    let down_members: Vec<u64> = members
        .iter()
        .copied()
        .filter(|m| down.contains(m))
        .collect();
    let spare = (members.len() as u64 - 1) / 2;
    let live: Vec<u64> = members
        .iter()
        .copied()
        .filter(|m| !down.contains(m))
        .collect();
    // With an even number of members, removing one live node leaves an odd
    // configuration that the live rest may still hold a majority of.
    let odd = members.len() % 2 == 1;
    if !change.is_empty()
        || joint
        || !quiet
        || !odd
        || spare == 0
        || down_members.len() as u64 != spare
    {
        return Ok(format!(
            "boundary removal skipped: members {members:?}, down {down_members:?}, change in flight {:?}",
            !change.is_empty() || joint
        ));
    }
    let node = live[(pick % live.len() as u64) as usize];
    match madsim::time::timeout(Duration::from_secs(3), crate::remove_node(via, node)).await {
        Ok(Ok(())) => Err(format!(
            "membership: removal of live node {node} accepted while members {down_members:?} of {members:?} were down (the live rest is no majority of the new configuration)"
        )),
        Ok(Err(e)) => Ok(format!(
            "boundary removal of node {node} (members {members:?}, down {down_members:?}) refused: {}",
            e.code()
        )),
        Err(_) => Ok(format!("boundary removal of node {node}: no answer within 3 s")),
    }
}

/// Acknowledged sends so far, by partition key: `(offset, value)`.
fn acked_sends(ops: &[crate::history::Op]) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut out: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for op in ops {
        if op.kind != OpType::Ok || op.f != Func::Send {
            continue;
        }
        let v = &op.value;
        if let (Some(k), Some(off), Some(val)) = (v[0].as_str(), v[1].as_u64(), v[2].as_str()) {
            out.entry(k.to_string())
                .or_default()
                .push((off, val.to_string()));
        }
    }
    out
}

/// Reads every replica of every partition directly and checks what they
/// store against the sends acknowledged before the call (see
/// [`crate::stored`]). With `converged`, first waits (up to `bound`) until
/// the replicas of each partition hold the same records, then requires
/// every replica to hold every acknowledged record. Returns (violations,
/// replicas read), or why the check could not run.
/// (leader, term) of every group, from whichever of `nodes` leads it, and
/// whether the first of them that answers has a membership change in
/// flight.
/// A partition a node's cut should not touch.
struct ProbeTarget {
    topic: String,
    partition: u32,
    group: u64,
    leader: u64,
    replicas: Vec<u64>,
    isr: Vec<u64>,
    min_isr: u32,
}

/// Up to two partitions of the workload that `cut` does not touch: their
/// leader (from `leaders`, by group) is another node, and enough of their
/// ISR is on the other side to commit and acknowledge without `cut`. One where `cut`
/// is a replica is preferred (its leader must not wait for it), then one
/// where it is not.
async fn untouched_partitions(
    work: &Workload,
    ask: Vec<String>,
    cut: u64,
    leaders: &BTreeMap<u64, (u64, u64)>,
    doomed: &[(String, Vec<u64>)],
) -> Vec<ProbeTarget> {
    let Ok(meta) = Client::new(ask).metadata().await else {
        return Vec::new();
    };
    let used = work.partitions.lock().clone();
    let deleted = work.deleted.lock().clone();
    let mut found: Vec<ProbeTarget> = Vec::new();
    for t in &meta.topics {
        if doomed.iter().any(|(name, _)| *name == t.name) {
            continue;
        }
        for p in &t.partitions {
            let k = key(&t.name, p.partition);
            if deleted.contains(&k) || !used.contains(&(t.name.clone(), p.partition)) {
                continue;
            }
            let Some((leader, _)) = leaders.get(&p.group) else {
                continue;
            };
            // Commits need a Raft majority of the replicas, and
            // acknowledgements `min_insync_replicas` of the ISR: both from
            // in-sync replicas other than `cut` (one out of the ISR may be
            // far behind, catching up).
            let without = p.isr.iter().filter(|n| **n != cut).count() as u32;
            let majority = p.replicas.len() as u32 / 2 + 1;
            if *leader == cut || without < t.min_insync_replicas.max(majority) {
                continue;
            }
            found.push(ProbeTarget {
                topic: t.name.clone(),
                partition: p.partition,
                group: p.group,
                leader: *leader,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_isr: t.min_insync_replicas,
            });
        }
    }
    let mut picked = Vec::new();
    for with_cut in [true, false] {
        if let Some(at) = found
            .iter()
            .position(|t| t.replicas.contains(&cut) == with_cut)
        {
            picked.push(found.remove(at));
        }
    }
    picked
}

/// A client and a process for each target that acknowledged one send
/// through the nodes `ask`: the probe's client knows the leader before the
/// cut, so what it measures is the cluster, not the client's first guess.
async fn warm_up(
    work: &Workload,
    ask: Vec<String>,
    targets: Vec<ProbeTarget>,
) -> Vec<(ProbeTarget, Client, u64)> {
    let mut ready = Vec::new();
    for target in targets {
        let client = Client::with_retry(
            ask.clone(),
            RetryPolicy {
                deadline: Duration::from_secs(5),
                retry_unknown_outcome: false,
                ..RetryPolicy::default()
            },
        );
        let mut process = work.next_process.fetch_add(1, Ordering::Relaxed);
        if work
            .send(&client, &mut process, &target.topic, target.partition)
            .await
            .is_ok()
        {
            ready.push((target, client, process));
        }
    }
    ready
}

/// Sends to `target` one value after another until `until`: when each was
/// sent (since the probe began), how long it took, and its outcome.
async fn probe(
    work: Arc<Workload>,
    client: Client,
    mut process: u64,
    target: ProbeTarget,
    until: madsim::time::Instant,
) -> (ProbeTarget, Vec<(Duration, Duration, Result<u64, String>)>) {
    let began = madsim::time::Instant::now();
    let mut sends = Vec::new();
    while madsim::time::Instant::now() < until {
        let sent = madsim::time::Instant::now();
        let outcome = work
            .send(&client, &mut process, &target.topic, target.partition)
            .await;
        sends.push((sent - began, sent.elapsed(), outcome));
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    (target, sends)
}

async fn leaders_and_terms(nodes: &[u64]) -> (BTreeMap<u64, (u64, u64)>, bool) {
    let mut changing = false;
    for id in nodes {
        if let Ok((_, in_flight, joint)) = crate::membership(&crate::client_addr(*id)).await {
            changing = !in_flight.is_empty() || joint;
            break;
        }
    }
    let mut out = BTreeMap::new();
    for id in nodes {
        if let Ok(s) = crate::node_groups(&crate::client_addr(*id)).await {
            for g in s.groups.iter().filter(|g| g.role == "leader") {
                let e = out.entry(g.group).or_insert((*id, g.term));
                if g.term > e.1 {
                    *e = (*id, g.term);
                }
            }
        }
    }
    (out, changing)
}

/// The groups of topic `name` as the cluster's metadata says (empty if
/// unknown).
async fn topic_groups(admin: &Client, name: &str) -> Vec<u64> {
    match admin.metadata().await {
        Ok(md) => md
            .topics
            .iter()
            .filter(|t| t.name == name)
            .flat_map(|t| t.partitions.iter().map(|p| p.group))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Asks to delete `name` until the cluster says it is deleted or does not
/// know it.
async fn finish_deletion(admin: &Client, name: &str, bound: Duration) -> Result<(), String> {
    let deadline = madsim::time::Instant::now() + bound;
    loop {
        match admin.delete_topic(name).await {
            Ok(()) => return Ok(()),
            Err(e) if e.code() == ErrorCode::UnknownTopicOrPartition => return Ok(()),
            Err(e) if madsim::time::Instant::now() >= deadline => {
                return Err(format!(
                    "topic {name} not deleted within {}s after healing: {e}",
                    bound.as_secs()
                ))
            }
            Err(_) => madsim::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until no member in `members` reports any of `groups`.
async fn await_groups_gone(members: &[u64], groups: &[u64], bound: Duration) -> Result<(), String> {
    let deadline = madsim::time::Instant::now() + bound;
    loop {
        let mut still = Vec::new();
        for id in members {
            match crate::node_groups(&crate::client_addr(*id)).await {
                Ok(s) => still.extend(
                    s.groups
                        .iter()
                        .filter(|g| groups.contains(&g.group))
                        .map(|g| format!("node {id} hosts group {}", g.group)),
                ),
                Err(e) => still.push(format!("node {id} does not answer: {e}")),
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if madsim::time::Instant::now() >= deadline {
            return Err(format!(
                "deleted topics not gone {}s after healing: {}",
                bound.as_secs(),
                still.join("; ")
            ));
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check_replicas(
    history: &History,
    admin: &Client,
    converged: bool,
    bound: Duration,
    deleted: &BTreeSet<String>,
) -> Result<(Vec<String>, u64), String> {
    use crate::stored::{check_partition, ReplicaRead};
    let acked = acked_sends(&history.ops());
    let md = admin
        .metadata()
        .await
        .map_err(|e| format!("no metadata to find the replicas: {e}"))?;
    let deadline = madsim::time::Instant::now() + bound;
    let mut violations = Vec::new();
    let mut read = 0;
    for t in &md.topics {
        for p in &t.partitions {
            let k = key(&t.name, p.partition);
            if deleted.contains(&k) {
                // Deleted (or being deleted) meanwhile: the metadata asked
                // may not know yet; the deletion has its own checks.
                continue;
            }
            let reads = loop {
                let mut reads = Vec::new();
                for r in &p.replicas {
                    reads.push(ReplicaRead {
                        node: *r,
                        records: crate::read_replica(*r, &t.name, p.partition).await,
                    });
                }
                let sizes: BTreeSet<Option<usize>> = reads
                    .iter()
                    .map(|r| r.records.as_ref().map(|m| m.len()))
                    .collect();
                if !converged || sizes.len() == 1 && !sizes.contains(&None) {
                    break reads;
                }
                if madsim::time::Instant::now() >= deadline {
                    return Err(format!(
                        "replicas of {k} did not converge within {}s after healing: record counts by replica {:?}",
                        bound.as_secs(),
                        reads
                            .iter()
                            .map(|r| (r.node, r.records.as_ref().map(|m| m.len())))
                            .collect::<Vec<_>>()
                    ));
                }
                madsim::time::sleep(Duration::from_millis(200)).await;
            };
            read += reads.iter().filter(|r| r.records.is_some()).count() as u64;
            let empty = Vec::new();
            violations.extend(check_partition(
                &k,
                acked.get(&k).unwrap_or(&empty),
                &reads,
                t.min_insync_replicas as usize,
                converged,
            ));
        }
    }
    Ok((violations, read))
}

/// Waits until the members agree on membership: every member lists the
/// same nodes, with no change in flight and no joint configuration. A node
/// that says it is not a member (removed) does not count. Returns them.
async fn await_membership(nodes: &[u64], bound: Duration) -> Result<Vec<u64>, String> {
    let deadline = madsim::time::Instant::now() + bound;
    let mut last = String::new();
    while madsim::time::Instant::now() < deadline {
        let mut views = BTreeMap::new();
        for id in nodes {
            if let Ok(Ok(v)) = madsim::time::timeout(
                Duration::from_secs(1),
                crate::membership(&crate::client_addr(*id)),
            )
            .await
            {
                views.insert(*id, v);
            }
        }
        // Members according to the views of nodes that list themselves.
        let member_views: Vec<_> = views
            .iter()
            .filter(|(id, (m, _, _))| m.contains(id))
            .collect();
        if let Some((_, (reference, _, _))) = member_views.first() {
            let settled = member_views
                .iter()
                .all(|(_, (m, change, joint))| m == reference && change.is_empty() && !joint);
            let all_answered = reference.iter().all(|id| views.contains_key(id));
            if settled && all_answered {
                return Ok(reference.clone());
            }
        }
        last = format!("{views:?}");
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "members did not agree on membership {}s after healing: {last}",
        bound.as_secs()
    ))
}

/// Waits until every node reports a leader for each group it hosts, the
/// same leader and term as every other replica.
async fn await_leaders(addrs: &[String], bound: Duration) -> Result<(), String> {
    let deadline = madsim::time::Instant::now() + bound;
    let mut last = String::new();
    while madsim::time::Instant::now() < deadline {
        let mut views: BTreeMap<u64, BTreeSet<(u64, u64)>> = BTreeMap::new();
        let mut complete = true;
        for a in addrs {
            match crate::node_groups(a).await {
                Ok(s) => {
                    for g in s.groups {
                        views.entry(g.group).or_default().insert((g.term, g.leader));
                    }
                }
                Err(e) => {
                    complete = false;
                    last = format!("{a} unreachable: {e}");
                }
            }
        }
        let unsettled: Vec<_> = views
            .iter()
            .filter(|(_, v)| v.len() != 1 || v.iter().any(|(_, l)| *l == 0))
            .collect();
        if complete && unsettled.is_empty() {
            return Ok(());
        }
        if !unsettled.is_empty() {
            last = format!(
                "groups without one agreed leader (group: {{(term, leader)}}): {unsettled:?}"
            );
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "no agreed leader in every group {}s after healing: {last}",
        bound.as_secs()
    ))
}
