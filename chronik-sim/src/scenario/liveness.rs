//! Waiting out faults and checking what must hold once they heal: leaders,
//! membership, deleted topics gone, every replica storing what was
//! acknowledged.

use super::*;

/// Sleeps `d` (at least one pass), meanwhile killing every node that
/// stopped at a crash point (its unsynced writes lost, its tail torn half
/// the time) and restarting it 1-30 ms later. A node the plan killed since
/// is left to the plan's restart. Returns whether it restarted any.
pub(super) async fn sleep_crashing_frozen(
    cluster: &mut SimCluster,
    checker: &NodeChecker,
    d: Duration,
    killed: &BTreeSet<u64>,
    report: &mut RunReport,
) -> bool {
    let end = madsim::time::Instant::now() + d;
    let mut restarted = false;
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
            restarted = true;
            report.executed.push(format!(
                "node {node} stopped at {}: killed{} and restarted {ms} ms later",
                point.name(),
                if torn.is_some() { " (torn)" } else { "" }
            ));
        }
        let now = madsim::time::Instant::now();
        if now >= end {
            return restarted;
        }
        madsim::time::sleep((end - now).min(Duration::from_millis(5))).await;
    }
}

/// The groups of topic `name` as the cluster's metadata says (empty if
/// unknown).
pub(super) async fn topic_groups(admin: &Client, name: &str) -> Vec<u64> {
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
pub(super) async fn finish_deletion(
    admin: &Client,
    name: &str,
    bound: Duration,
) -> Result<(), String> {
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
pub(super) async fn await_groups_gone(
    members: &[u64],
    groups: &[u64],
    bound: Duration,
) -> Result<(), String> {
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

pub(super) async fn check_replicas(
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
            // Replicas may still be moving while they converge: the
            // placement is asked again on every round.
            let mut replicas = p.replicas.clone();
            let mut answered_by = md.answered_by;
            let reads = loop {
                let mut reads = Vec::new();
                for r in &replicas {
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
                        "replicas of {k} did not converge within {}s after healing (placement as node {answered_by} applied it): record counts by replica {:?}",
                        bound.as_secs(),
                        reads
                            .iter()
                            .map(|r| (r.node, r.records.as_ref().map(|m| m.len())))
                            .collect::<Vec<_>>()
                    ));
                }
                madsim::time::sleep(Duration::from_millis(200)).await;
                if let Some((by, now)) = admin.metadata().await.ok().and_then(|m| {
                    let by = m.answered_by;
                    m.topics
                        .into_iter()
                        .find(|x| x.name == t.name)
                        .and_then(|x| {
                            x.partitions
                                .into_iter()
                                .find(|q| q.partition == p.partition)
                        })
                        .map(|q| (by, q.replicas))
                }) {
                    (answered_by, replicas) = (by, now);
                }
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
pub(super) async fn await_membership(nodes: &[u64], bound: Duration) -> Result<Vec<u64>, String> {
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

/// Waits until the latest rebalance run (if any) is over, as `admin`'s
/// answering node applied it, then checks that every partition kept its
/// replication factor. Returns the run's id (0: none ran).
pub(super) async fn await_rebalance(admin: &Client, bound: Duration) -> Result<u64, String> {
    use chronik_net::proto::rebalance_request::Action;
    let deadline = madsim::time::Instant::now() + bound;
    let mut last = String::new();
    let run = loop {
        if madsim::time::Instant::now() >= deadline {
            return Err(format!(
                "a rebalance was still in flight {}s after healing: {last}",
                bound.as_secs()
            ));
        }
        match admin.rebalance(Action::Status, 0).await {
            Ok(s) if s.run == 0 || (s.finished && s.in_flight == 0) => break s.run,
            Ok(s) => {
                last = format!(
                    "run {} ({}), {} in flight, moves {:?}",
                    s.run,
                    s.trigger,
                    s.in_flight,
                    s.moves
                        .iter()
                        .map(|m| format!("{} {}->{} {}", m.group, m.from, m.to, m.state))
                        .collect::<Vec<_>>()
                )
            }
            Err(e) => last = e.to_string(),
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    };
    let md = admin.metadata().await.map_err(|e| e.to_string())?;
    for t in &md.topics {
        for p in &t.partitions {
            if p.replicas.len() != t.replication_factor as usize {
                return Err(format!(
                    "replication factor dropped: {}-{} has replicas {:?}, its topic asks for {}",
                    t.name, p.partition, p.replicas, t.replication_factor
                ));
            }
        }
    }
    Ok(run)
}

/// Waits until every node reports a leader for each group it hosts, the
/// same leader and term as every other replica.
pub(super) async fn await_leaders(addrs: &[String], bound: Duration) -> Result<(), String> {
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

/// The liveness phase: every fault heals, the workload ends, and what
/// must hold once healed is checked (removals answered, one membership,
/// leaders everywhere, deleted topics gone, a write and a read of every
/// partition, every replica storing every acknowledged record).
pub(super) async fn heal_and_check(
    cx: &mut Ctx<'_>,
    st: FaultState,
    workers: Vec<madsim::task::JoinHandle<()>>,
    creator: madsim::task::JoinHandle<u64>,
    checkpoints: madsim::task::JoinHandle<(Vec<String>, u64)>,
) {
    let (n, plan, addrs) = (cx.n, cx.plan, cx.addrs);
    let (work, admin, client_node) = (cx.work, cx.admin, cx.client_node);
    let cluster = &mut *cx.cluster;
    let report = &mut *cx.report;
    let FaultState {
        leaves,
        killed,
        paused,
        slow,
        doomed,
        ..
    } = st;
    let mut rng = thread_rng();
    // Liveness phase: everything heals.
    cluster.heal();
    for node in slow {
        cluster.slow_disk(node, Some(disk_base(node, plan)), rng.gen());
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
    report.auth_refused = work.intruder_refused.load(Ordering::Relaxed);
    report
        .violations
        .extend(work.intruder_violations.lock().drain(..));
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

    // Every rebalance run finishes (or rolls back) once healed, and no
    // partition lost a replica on the way.
    let a = admin.clone();
    match client_node
        .spawn(async move { await_rebalance(&a, LIVENESS_BOUND).await })
        .await
        .expect("rebalance task")
    {
        Ok(run) => report.rebalance_run = run,
        Err(e) => report.liveness.push(e),
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

    // A rolling restart of every member under load.
    let mut roll = rolling::Roll {
        cluster: &mut *cluster,
        checker: cx.checker,
        report: &mut *report,
        work,
        admin,
        client_node,
    };
    rolling::rolling_restart(&mut roll, &members).await;
    // Then maintenance of the node leading the most, judged.
    drain::drain_check(&mut roll, &members).await;

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

    // Last, once every read is done: a member cut off while ISRs change,
    // brought up to date on request (its produces are not part of the
    // checked history).
    let mut roll = rolling::Roll {
        cluster: &mut *cluster,
        checker: cx.checker,
        report: &mut *report,
        work,
        admin,
        client_node,
    };
    replicate::replicate_check(&mut roll, &members).await;

    if !report.liveness.is_empty() {
        let a = addrs.to_vec();
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
}
