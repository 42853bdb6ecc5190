//! The fault plan a seed draws: which faults strike, when, and where.

use super::*;

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
    /// Shut `node` down gracefully (drain, hand its leaderships to in-sync
    /// peers, sync the WAL), stop it, and restart it `ms` later.
    GracefulRestart {
        node: u64,
        ms: u64,
    },
    /// Put `node` into maintenance (it hands its leaderships over and
    /// takes none back) for `ms`, then take it out, while the other faults
    /// strike.
    Maintenance {
        node: u64,
        ms: u64,
    },
    /// Ask (through any live node) for `node`'s metadata to be brought up
    /// to date now, while the other faults strike.
    MetadataReplicate {
        node: u64,
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
    /// Kill `node`, flip one byte of a WAL record a later record proves
    /// synced (`pick` chooses the record and the byte; `last`: the last
    /// such record; otherwise one carrying log entries), and restart it
    /// `ms` later. With `bounce_leader`, the leader of a group the damaged
    /// record carried goes down with it and comes back a second after the
    /// restart: until then the damaged node is the only one that could
    /// make a quorum with the rest, and must not vote on the log it cut.
    WalRot {
        node: u64,
        pick: u64,
        last: bool,
        ms: u64,
        bounce_leader: bool,
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
            Fault::WalRot { .. } => "wal-rot",
            Fault::GracefulRestart { .. } => "graceful-restart",
            Fault::Maintenance { .. } => "maintenance",
            Fault::MetadataReplicate { .. } => "metadata-replicate",
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
            Fault::WalRot {
                node,
                last,
                ms,
                bounce_leader,
                ..
            } => {
                let which = if *last { "its last" } else { "a" };
                write!(
                    f,
                    "kill {node}, flip a byte of {which} WAL record proven synced, restart it {ms} ms later"
                )?;
                if *bounce_leader {
                    write!(
                        f,
                        ", the leader of a group it carried down with it until a second after"
                    )?;
                }
                Ok(())
            }
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
            Fault::Maintenance { node, ms } => {
                write!(f, "put node {node} into maintenance for {ms} ms")
            }
            Fault::MetadataReplicate { node } => {
                write!(f, "ask for node {node}'s metadata to be brought up to date")
            }
            Fault::GracefulRestart { node, ms } => write!(
                f,
                "shut node {node} down gracefully, restart it {ms} ms later"
            ),
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
        // Graceful restarts (an upgrade, a config change) under the faults.
        for _ in 0..rng.gen_range(0..=2) {
            let at = rng.gen_range(0..=steps.len());
            let restart = Fault::GracefulRestart {
                node: rng.gen_range(1..=nodes),
                ms: rng.gen_range(100..=1_500),
            };
            steps.insert(
                at,
                (Duration::from_millis(rng.gen_range(100..1_000)), restart),
            );
        }
        // Maintenance (an operator draining a node) under the faults.
        if rng.gen_bool(0.5) {
            let at = rng.gen_range(0..=steps.len());
            let drain = Fault::Maintenance {
                node: rng.gen_range(1..=nodes),
                ms: rng.gen_range(500..=3_000),
            };
            steps.insert(
                at,
                (Duration::from_millis(rng.gen_range(100..1_000)), drain),
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
        // An operator bringing a member's metadata up to date while the
        // last faults still hold, in half the plans: chosen from what was
        // drawn, without drawing, and appended after every other step at
        // no time of the plan's, so every step before it runs as seeds
        // drew it before this step existed.
        if steps.len() % 2 == 0 {
            let replicate = Fault::MetadataReplicate {
                node: (steps.len() as u64 / 2) % nodes + 1,
            };
            steps.push((Duration::ZERO, replicate));
        }
        // A synced WAL record rotting on a down node, in two plans of
        // three: chosen from what was drawn, without drawing, and appended
        // last, like the step above.
        if steps.len() % 3 != 2 {
            let k = steps.len() as u64;
            let rot = Fault::WalRot {
                node: (k * 7 + 2) % nodes + 1,
                pick: k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11,
                last: k % 4 == 1,
                ms: 20 + (k * 53) % 300,
                bounce_leader: k % 2 == 0,
            };
            steps.push((Duration::ZERO, rot));
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
                | Fault::GracefulRestart { .. }
                | Fault::Maintenance { .. }
                | Fault::MetadataReplicate { .. }
                | Fault::Bounce { .. }
                | Fault::Rot { .. }
                | Fault::WalRot { .. }
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
