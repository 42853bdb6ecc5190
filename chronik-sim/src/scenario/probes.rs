//! Membership and rejoin probes: removals asked during the faults, removals
//! at the quorum boundary, and the partitions a rejoin must not disturb.

use super::*;

/// How long after the last kill or pause a boundary removal waits, so the
/// metadata leader no longer counts the down nodes as live.
pub(super) const BOUNDARY_QUIET: Duration = Duration::from_secs(3);

/// A group as a live node reports it: `pick` modulo its groups, or the
/// metadata group for `None`. Returns (group, leader or 0, voters).
pub(super) async fn group_of(ask: &[String], pick: Option<u64>) -> Option<(u64, u64, Vec<u64>)> {
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
pub(super) fn spawn_removal(
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
pub(super) async fn removal_at_boundary(
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
pub(super) struct ProbeTarget {
    pub(super) topic: String,
    pub(super) partition: u32,
    pub(super) group: u64,
    pub(super) leader: u64,
    pub(super) replicas: Vec<u64>,
    pub(super) isr: Vec<u64>,
    pub(super) min_isr: u32,
}

/// Up to two partitions of the workload that `cut` does not touch: their
/// leader (from `leaders`, by group) is another node, and enough of their
/// ISR is on the other side to commit and acknowledge without `cut`. One where `cut`
/// is a replica is preferred (its leader must not wait for it), then one
/// where it is not.
pub(super) async fn untouched_partitions(
    work: &Workload,
    ask: Vec<String>,
    cut: u64,
    leaders: &BTreeMap<u64, (u64, u64)>,
    doomed: &[(String, Vec<u64>)],
) -> Vec<ProbeTarget> {
    let Ok(meta) = crate::sim::with_token(Client::new(ask), crate::sim::ADMIN_TOKEN)
        .metadata()
        .await
    else {
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
pub(super) async fn warm_up(
    work: &Workload,
    ask: Vec<String>,
    targets: Vec<ProbeTarget>,
) -> Vec<(ProbeTarget, Client, u64)> {
    let mut ready = Vec::new();
    for target in targets {
        let client = crate::sim::with_token(
            Client::with_retry(
                ask.clone(),
                RetryPolicy {
                    deadline: Duration::from_secs(5),
                    retry_unknown_outcome: false,
                    ..RetryPolicy::default()
                },
            ),
            crate::sim::ADMIN_TOKEN,
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
pub(super) async fn probe(
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

pub(super) async fn leaders_and_terms(nodes: &[u64]) -> (BTreeMap<u64, (u64, u64)>, bool) {
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
