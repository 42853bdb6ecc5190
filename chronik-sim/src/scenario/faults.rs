//! The safety phase's faults, one at a time: what each does to the
//! cluster, and the judgement a rejoin gets.

use super::*;

/// What the fault loop keeps from one fault to the next.
pub(super) struct FaultState {
    /// Removals asked during the faults, answered in the background.
    pub(super) leaves: Arc<Mutex<Vec<Result<u64, String>>>>,
    pub(super) killed: BTreeSet<u64>,
    pub(super) paused: BTreeSet<u64>,
    /// When a node last went down (killed or paused).
    pub(super) last_down: madsim::time::Instant,
    /// Nodes given a slow disk.
    pub(super) slow: BTreeSet<u64>,
    /// Topics whose deletion was asked, with the groups they had.
    pub(super) doomed: Vec<(String, Vec<u64>)>,
    /// Whether a network fault is in force (cleared by a heal).
    pub(super) degraded: bool,
    /// When a node or a link last came back (a heal, a restart, a resume,
    /// a rejoin): peer streams then reconnect (with up to a second of
    /// backoff) and leaders hear from those followers again.
    pub(super) returned_at: Option<madsim::time::Instant>,
    /// Nodes the plan isolated (cleared by a heal).
    pub(super) isolated: BTreeSet<u64>,
    pub(super) last_membership_step: Option<madsim::time::Instant>,
}

impl FaultState {
    pub(super) fn new() -> Self {
        FaultState {
            leaves: Arc::default(),
            killed: BTreeSet::new(),
            paused: BTreeSet::new(),
            last_down: madsim::time::Instant::now(),
            slow: BTreeSet::new(),
            doomed: Vec::new(),
            degraded: false,
            returned_at: None,
            isolated: BTreeSet::new(),
            last_membership_step: None,
        }
    }
}

/// What a fault acts on.
pub(super) struct Ctx<'a> {
    pub(super) n: u64,
    pub(super) plan: &'a Plan,
    pub(super) addrs: &'a [String],
    pub(super) cluster: &'a mut SimCluster,
    pub(super) checker: &'a Arc<NodeChecker>,
    pub(super) report: &'a mut RunReport,
    pub(super) work: &'a Arc<Workload>,
    pub(super) admin: &'a Arc<Client>,
    pub(super) client_node: &'a madsim::runtime::NodeHandle,
}

/// The client addresses of the nodes neither killed nor paused.
pub(super) fn live_addrs(n: u64, killed: &BTreeSet<u64>, paused: &BTreeSet<u64>) -> Vec<String> {
    (1..=n)
        .filter(|id| !killed.contains(id) && !paused.contains(id))
        .map(crate::client_addr)
        .collect()
}

/// A node's usual fsync latency, as the plan drew it.
pub(super) fn disk_base(node: u64, plan: &Plan) -> std::ops::Range<Duration> {
    let (min, max) = plan.disk_ms[node as usize - 1];
    Duration::from_millis(min)..Duration::from_millis(max)
}

/// Kills `id`, flips a byte of a WAL record its WAL proves synced, and
/// restarts it `ms` later; with `bounce_leader`, the leader of a group
/// the damaged record carried goes down with it until a second after the
/// restart, so that group's next election needs the damaged node's vote
/// while its log still lacks what the cut took.
async fn wal_rot(
    id: u64,
    pick: u64,
    last: bool,
    ms: u64,
    bounce_leader: bool,
    st: &mut FaultState,
    cx: &mut Ctx<'_>,
) -> String {
    let Ctx {
        n,
        cluster,
        checker,
        report,
        client_node,
        ..
    } = cx;
    let (n, killed, paused) = (*n, &st.killed, &st.paused);
    if killed.contains(&id) || paused.contains(&id) || id > n {
        return format!("WAL rot of node {id}: skipped, it is down");
    }
    let ask: Vec<String> = (1..=n)
        .filter(|x| *x != id && !killed.contains(x) && !paused.contains(x))
        .map(crate::client_addr)
        .collect();
    // A node removed (or being removed) from the cluster is left alone:
    // cut back to before its removal it would take itself for a member
    // that nobody answers any more.
    let asked = ask.clone();
    let member = client_node
        .spawn(async move {
            for a in asked {
                if let Ok((members, in_flight, joint)) = crate::membership(&a).await {
                    return Some(members.contains(&id) && in_flight.is_empty() && !joint);
                }
            }
            None
        })
        .await
        .expect("membership lookup task");
    if member != Some(true) {
        return format!("WAL rot of node {id}: skipped, it is not a settled member");
    }
    // Cutting the WAL may cut a partition's state back too: rebuilding a
    // replica from a peer is then expected.
    checker.storage_damaged(id);
    cluster.kill(id, None, false);
    let Some((what, carried)) = cluster.rot_wal(id, pick, last) else {
        madsim::time::sleep(Duration::from_millis(ms)).await;
        cluster.restart(id);
        return format!("kill {id} (no WAL record proven synced to rot), restart it {ms} ms later");
    };
    report.wal_rotted += 1;
    // The leader of a group the damaged record carried (partitions first).
    let groups: Vec<u64> = match &carried {
        Some(c) => {
            let mut g: Vec<u64> = c.iter().copied().collect();
            g.sort_by_key(|g| (*g == chronik_core::METADATA_GROUP, *g));
            g
        }
        None => vec![chronik_core::METADATA_GROUP],
    };
    let leader = if bounce_leader && !groups.is_empty() {
        client_node
            .spawn(async move {
                for a in ask {
                    if let Ok(s) = crate::node_groups(&a).await {
                        return groups.iter().find_map(|want| {
                            s.groups
                                .iter()
                                .find(|g| g.group == *want && g.leader != 0)
                                .map(|g| (g.group, g.leader))
                        });
                    }
                }
                None
            })
            .await
            .expect("leader lookup task")
            .filter(|(_, l)| *l != id && !killed.contains(l) && !paused.contains(l) && *l <= n)
    } else {
        None
    };
    if let Some((_, l)) = leader {
        cluster.kill(l, None, false);
    }
    madsim::time::sleep(Duration::from_millis(ms)).await;
    cluster.restart(id);
    if let Some((_, l)) = leader {
        madsim::time::sleep(Duration::from_secs(1)).await;
        cluster.restart(l);
    }
    let down = leader.map_or(String::new(), |(g, l)| {
        format!("; node {l}, leader of group {g}, down until a second after")
    });
    format!("kill {id}, {what}, restart it {ms} ms later{down}")
}

/// Carries out one fault of the plan; returns what it did, as executed
/// (leaders resolved, outcomes known).
pub(super) async fn inject(fault: &Fault, st: &mut FaultState, cx: &mut Ctx<'_>) -> String {
    let (n, plan, addrs) = (cx.n, cx.plan, cx.addrs);
    let (checker, work, admin, client_node) = (cx.checker, cx.work, cx.admin, cx.client_node);
    let cluster = &mut *cx.cluster;
    let report = &mut *cx.report;
    let FaultState {
        leaves,
        killed,
        paused,
        slow,
        doomed,
        degraded,
        returned_at,
        isolated,
        last_down,
        last_membership_step,
    } = st;
    let mut rng = thread_rng();
    let mut executed = fault.to_string();
    match fault {
        // Storage faults strike one replica at a time: damaging a second
        // while another still rebuilds can leave a group whose every copy
        // of some records is damaged (seed 1294: two of three replicas
        // rotted while the third lagged), which no system can recover.
        Fault::Rot { .. } | Fault::PartitionDiskError { .. } if checker.rebuilding_any() => {
            executed = format!(
                "{fault}: skipped, a replica is still rebuilding (one storage fault at a time)"
            );
        }
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
            *degraded = true;
        }
        Fault::IsolateLeader { pick } => {
            let was_degraded = std::mem::replace(degraded, true);
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
                    // Judged when nothing else disturbs the cluster: no
                    // network fault, no node down, no crash armed, no
                    // membership change near, no replica rebuilding.
                    let settled = returned_at.is_none_or(|t| t.elapsed() >= NETWORK_SETTLE);
                    let quiet_membership = last_membership_step
                        .is_none_or(|at| at.elapsed() > Duration::from_secs(15));
                    let clean = !was_degraded
                        && isolated.is_empty()
                        && settled
                        && killed.is_empty()
                        && paused.is_empty()
                        && quiet_membership
                        && !checker.armed_any()
                        && !checker.rebuilding_any();
                    report.failovers += 1;
                    cluster.clog(leader);
                    isolated.insert(leader);
                    executed = format!("isolate {leader} (leader of group {group})");
                    if clean {
                        let others: Vec<u64> = (1..=n).filter(|id| *id != leader).collect();
                        let verdict =
                            await_failover(checker, client_node, group, leader, others).await;
                        match verdict {
                            Failover::Led(ms) => {
                                report.failovers_judged += 1;
                                executed += &format!(": led elsewhere {ms} ms later");
                            }
                            Failover::NotJudged(why) => {
                                executed += &format!(": failover not judged ({why})");
                            }
                            Failover::Leaderless(views) => {
                                report.failovers_judged += 1;
                                report.violations_stored.push(format!(
                                    "failover: group {group} has no leader {} ms after its leader {leader} was cut off, with a majority of its voters up and nothing else disturbing the cluster ({views})",
                                    FAILOVER_BOUND.as_millis()
                                ));
                            }
                        }
                    }
                }
                None => executed = "isolate the leader: none known".into(),
            }
        }
        Fault::Split { side } => {
            cluster.split(side);
            *degraded = true;
        }
        Fault::Cut { from, to } => {
            cluster.clog_link(*from, *to);
            *degraded = true;
        }
        Fault::Loss { percent } => {
            cluster.degrade_network(
                *percent as f64 / 100.0,
                madsim::net::Config::default().send_latency,
            );
            *degraded = true;
        }
        Fault::Latency { min_ms, max_ms } => {
            cluster.degrade_network(
                0.0,
                Duration::from_millis(*min_ms)..Duration::from_millis(*max_ms),
            );
            *degraded = true;
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
            *returned_at = Some(madsim::time::Instant::now());
            *degraded = false;
            isolated.clear();
        }
        Fault::Rejoin { node, ms } => executed = rejoin(node, ms, st, cx).await,
        Fault::Maintenance { node, ms } => {
            let (ask, id, ms) = (live_addrs(n, killed, paused), *node, *ms);
            report.drains += 1;
            executed = client_node
                .spawn(async move {
                    let Some(addr) = ask.first().cloned() else {
                        return format!("maintenance of node {id}: no live node to ask");
                    };
                    let c = crate::admin_client(&addr, Duration::from_millis(2_500));
                    let on = match c.maintenance(id, true).await {
                        Ok(_) => "in maintenance".to_string(),
                        Err(e) => format!("not put into maintenance ({e})"),
                    };
                    madsim::time::sleep(Duration::from_millis(ms)).await;
                    // Out again, if the cluster can say so within 2.5 s (a
                    // node left in maintenance is taken out after healing).
                    match c.maintenance(id, false).await {
                        Ok(_) => format!("node {id} {on} for {ms} ms, then out of it"),
                        Err(e) => format!(
                            "node {id} {on} for {ms} ms; not taken out of it during the faults ({e})"
                        ),
                    }
                })
                .await
                .expect("maintenance task");
        }
        Fault::MetadataReplicate { node } => {
            let (ask, id) = (live_addrs(n, killed, paused), *node);
            report.replicates += 1;
            // Not awaited: the plan's next step keeps its time.
            executed = match ask.first().cloned() {
                Some(addr) => {
                    let text = format!("asked {addr} to bring node {id}'s metadata up to date");
                    client_node.spawn(async move {
                        let c = crate::admin_client(&addr, Duration::from_millis(2_500));
                        let _ = c.metadata_replicate(Some(id)).await;
                    });
                    text
                }
                None => format!("metadata replicate to node {id}: no live node to ask"),
            };
        }
        Fault::GracefulRestart { node, ms } => {
            executed = if killed.contains(node) || paused.contains(node) {
                format!("graceful restart of node {node}: skipped, it is down")
            } else {
                let judged =
                    killed.is_empty() && paused.is_empty() && isolated.is_empty() && !*degraded;
                graceful_restart(cluster, checker, report, *node, *ms, judged).await
            };
        }
        Fault::Join { node, via } => {
            report.joins += 1;
            cluster.start_joining(*node, crate::client_addr(*via));
            cluster.slow_disk(*node, Some(disk_base(*node, plan)), rng.gen());
        }
        Fault::Leave { node, via } => {
            spawn_removal(client_node, *node, *via, leaves.clone(), work.end);
        }
        Fault::LeaveLeader { via } => {
            let ask = live_addrs(n, killed, paused);
            let found = client_node
                .spawn(async move { group_of(&ask, None).await })
                .await
                .expect("leader lookup task");
            match found.and_then(|(_, leader, _)| (leader != 0).then_some(leader)) {
                Some(leader) => {
                    spawn_removal(client_node, leader, *via, leaves.clone(), work.end);
                    executed = format!("remove the metadata leader, node {leader}");
                }
                None => executed = "remove the metadata leader: none known".into(),
            }
        }
        Fault::LeaveAtBoundary { pick, via } => {
            let ask = live_addrs(n, killed, paused);
            let down: BTreeSet<u64> = killed.union(paused).copied().collect();
            let quiet = madsim::time::Instant::now() >= *last_down + BOUNDARY_QUIET;
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
                None => {
                    format!("kill {node} (no partition segment to rot), restart it {ms} ms later")
                }
            };
            madsim::time::sleep(Duration::from_millis(*ms)).await;
            cluster.restart(*node);
        }
        Fault::WalRot {
            node,
            pick,
            last,
            ms,
            bounce_leader,
        } => {
            executed = wal_rot(*node, *pick, *last, *ms, *bounce_leader, st, cx).await;
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
            let ask = live_addrs(n, killed, paused);
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
    executed
}

/// Cuts `node` off alone for `ms` and lets it back. When nothing else
/// could move a leader meanwhile, it must depose none (pre-vote), and the
/// partitions it does not touch must keep acknowledging.
async fn rejoin(node: &u64, ms: &u64, st: &mut FaultState, cx: &mut Ctx<'_>) -> String {
    let n = cx.n;
    let (checker, work, client_node) = (cx.checker, cx.work, cx.client_node);
    let cluster = &mut *cx.cluster;
    let report = &mut *cx.report;
    let FaultState {
        killed,
        paused,
        degraded,
        returned_at,
        isolated,
        last_membership_step,
        doomed,
        ..
    } = st;
    let others: Vec<u64> = (1..=n)
        .filter(|id| id != node && !killed.contains(id) && !paused.contains(id))
        .collect();
    let o = others.clone();
    let armed_before = checker.armed_any();
    let transfers_before = checker.transfer_count();
    let moves_before = checker.move_decisions();
    let fired_before: u64 = checker.crash_points_fired().values().sum();
    // A leader that has not heard from its followers since a
    // heal or a restart yet (their streams still reconnecting)
    // steps down when the cut takes one more away: that is the
    // earlier fault's doing, not the rejoin's (seeds 968, 112).
    let settled = returned_at.is_none_or(|t| t.elapsed() >= NETWORK_SETTLE);
    let (before, changing_before) = client_node
        .spawn(async move { leaders_and_terms(&o).await })
        .await
        .expect("leader survey task");
    // Partitions the cut does not touch keep acknowledging
    // while the node is away.
    let (ask, cut, lead) = (live_addrs(n, killed, paused), *node, before.clone());
    let (w, doomed_now) = (work.clone(), doomed.clone());
    let probe_ask: Vec<String> = others.iter().map(|id| crate::client_addr(*id)).collect();
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
            client_node.spawn(async move { probe(w, client, process, target, until).await })
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
    let fired_during = checker.crash_points_fired().values().sum::<u64>() > fired_before;
    // Replica moves (the rebalancer's) change placement and hand
    // leadership over: a window with one is not judged either.
    let quiet_moves = checker.move_decisions() == moves_before;
    let clean = !*degraded
        && settled
        && killed.is_empty()
        && paused.is_empty()
        && !armed_before
        && !fired_during
        && !checker.armed_any()
        && !changing_before
        && !changing_after
        && quiet_membership
        && quiet_moves;
    // A leader that handed leadership over on its own (to a preferred
    // leader back in sync, say) was not deposed.
    let handed_over = checker.transfers_since(transfers_before);
    let deposed: Vec<String> = before
        .iter()
        .filter(|(_, (leader, _))| leader != node)
        .filter_map(|(g, (leader, term))| {
            let (l2, t2) = after.get(g)?;
            if handed_over.contains(&(*g, *l2)) {
                return None;
            }
            (t2 > term)
                .then(|| format!("group {g}: leader {leader} term {term} -> leader {l2} term {t2}"))
        })
        .collect();
    let mut stalled = Vec::new();
    let mut probe_sends = 0;
    for task in probes {
        let (target, sends) = task.await.expect("probe task");
        probe_sends += sends.len() as u64;
        // A leader that handed the group over on its own (a preferred
        // leader back in sync) leaves its proposals in flight with an
        // unknown outcome: not the cut's doing (seed 1448).
        if handed_over.iter().any(|(g, _)| *g == target.group) {
            continue;
        }
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
    format!(
        "cut node {node} off for {ms} ms and let it back: {} leader(s) changed term{}",
        deposed.len(),
        if clean {
            ""
        } else {
            " (not judged: other faults in force)"
        }
    )
}

/// Shuts `node` down gracefully, stops it (a process exit), restarts it
/// `ms` later; with `judged`, the checker requires it to lead nothing at
/// the stop. Returns what happened.
pub(super) async fn graceful_restart(
    cluster: &mut SimCluster,
    checker: &NodeChecker,
    report: &mut RunReport,
    node: u64,
    ms: u64,
    judged: bool,
) -> String {
    let outcome = match cluster.graceful_stop(node).await {
        Some(r) => {
            report.graceful_stops += 1;
            let led = checker.on_graceful_stop(node, &r, judged);
            let phases: Vec<String> = r
                .phases
                .iter()
                .map(|p| format!("{} {} ms", p.phase, p.duration_ms))
                .collect();
            format!(
                "{}, {}{}",
                phases.join(", "),
                if r.clean() {
                    "clean"
                } else {
                    "a phase timed out"
                },
                if led.is_empty() {
                    String::new()
                } else {
                    format!(", still leading {led:?}")
                }
            )
        }
        None => "the phases did not finish (node not serving)".into(),
    };
    cluster.kill(node, None, false);
    madsim::time::sleep(Duration::from_millis(ms)).await;
    cluster.restart(node);
    format!(
        "graceful restart of node {node}{}: {outcome}; restarted {ms} ms later",
        if judged {
            ""
        } else {
            " (cluster degraded: not judged)"
        }
    )
}

/// How a cut-off leader's group fared.
enum Failover {
    /// A leader among the other nodes this many ms after the cut.
    Led(u128),
    /// No leader within `FAILOVER_BOUND`: each other replica's view.
    Leaderless(String),
    /// Something else moved meanwhile, or no majority was left.
    NotJudged(&'static str),
}

/// Waits (up to `FAILOVER_BOUND`) for `group`, whose leader `leader` was
/// just cut off, to have a leader among `others`. Judged only while a
/// majority of its voters is among them, none of those rebuilding or
/// repairing, and no replica move or crash point happened meanwhile.
async fn await_failover(
    checker: &Arc<NodeChecker>,
    client_node: &madsim::runtime::NodeHandle,
    group: u64,
    leader: u64,
    others: Vec<u64>,
) -> Failover {
    let start = madsim::time::Instant::now();
    let moves_before = checker.move_decisions();
    let fired_before: u64 = checker.crash_points_fired().values().sum();
    loop {
        let ask = others.clone();
        let seen = client_node
            .spawn(async move {
                let mut seen = Vec::new();
                for id in ask {
                    if let Ok(s) = crate::node_groups(&crate::client_addr(id)).await {
                        if let Some(g) = s.groups.into_iter().find(|g| g.group == group) {
                            seen.push((id, g));
                        }
                    }
                }
                seen
            })
            .await
            .expect("failover survey task");
        if seen.iter().any(|(_, g)| g.role == "leader") {
            return Failover::Led(start.elapsed().as_millis());
        }
        if checker.move_decisions() != moves_before
            || checker.crash_points_fired().values().sum::<u64>() != fired_before
            || checker.rebuilding_any()
        {
            return Failover::NotJudged("a move, a crash or a rebuild meanwhile");
        }
        if seen.iter().any(|(_, g)| !g.repairing.is_empty()) {
            return Failover::NotJudged("a replica repairing");
        }
        let Some((_, any)) = seen.first() else {
            return Failover::NotJudged("the group is gone");
        };
        let voters = &any.voters;
        let here = voters
            .iter()
            .filter(|v| **v != leader && seen.iter().any(|(id, _)| id == *v))
            .count();
        if here <= voters.len() / 2 {
            return Failover::NotJudged("no majority of voters left");
        }
        if start.elapsed() >= FAILOVER_BOUND {
            let views: Vec<String> = seen
                .iter()
                .map(|(id, g)| {
                    format!(
                        "node {id}: {} term {} leader {} commit {}",
                        g.role, g.term, g.leader, g.commit
                    )
                })
                .collect();
            return Failover::Leaderless(views.join("; "));
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
}
