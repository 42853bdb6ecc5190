//! `metadata-replicate` after healing, once every read was checked: a
//! follower of the metadata group is cut off while produces shrink ISRs
//! (metadata entries it misses), let back, and at once asked to be brought
//! up to date. Judged: the target
//! the metadata leader answers is at least the commit index it reported
//! just before the request (what a caller waits for must cover what was
//! committed when it asked), and the member applies that far within
//! [`REPLICATE_BOUND`].

use super::rolling::Roll;
use super::*;

/// How long a member that is back may take to apply the target. Raft
/// alone needs a heartbeat; the bound is far larger because the peer
/// streams of a node cut off stay open while what was sent on them
/// waits out the network's retransmission backoff (like TCP's), and a
/// sender gives up on a stream only once it stalls. Over seeds 1-1,000
/// the longest was 10.6 s (the run's report prints it).
pub const REPLICATE_BOUND: Duration = Duration::from_secs(20);
/// How long to wait afterwards for every ISR to be full again.
const ISR_REFILL_WAIT: Duration = Duration::from_secs(20);
/// How long the member is cut off: past the ISR lag bound (1 s here), so
/// its partitions' ISRs shrink without it.
const CUT_FOR: Duration = Duration::from_millis(2_500);

/// The metadata group's (leader, commit) as `addr` reports it.
async fn metadata_of(addr: &str) -> Option<(u64, u64)> {
    let s = crate::node_groups(addr).await.ok()?;
    let g = s.groups.iter().find(|g| g.name == "metadata")?;
    Some((g.leader, g.commit))
}

pub(super) async fn replicate_check(cx: &mut Roll<'_>, members: &[u64]) {
    let client_node = cx.client_node;
    let first = members.first().copied().unwrap_or(1);
    let Some((leader, _)) = client_node
        .spawn(async move { metadata_of(&crate::client_addr(first)).await })
        .await
        .expect("metadata task")
    else {
        cx.report
            .executed
            .push("metadata replicate after healing: no metadata leader known".into());
        return;
    };
    let Some(&target_node) = members.iter().find(|m| **m != leader && leader != 0) else {
        cx.report
            .executed
            .push("metadata replicate after healing: no follower to cut off".into());
        return;
    };
    cx.cluster.clog(target_node);
    // Produces while it is away: ISRs shrink without it (metadata entries
    // it misses).
    let work = cx.work.clone();
    let parts = work.live_partitions();
    client_node
        .spawn(async move {
            // After the final reads: not recorded in the checked history.
            let client = work.client(false);
            let until = madsim::time::Instant::now() + CUT_FOR;
            let mut n = 0u64;
            while madsim::time::Instant::now() < until {
                for (t, p) in &parts {
                    n += 1;
                    let value = bytes::Bytes::from(format!("replicate-check-{n}"));
                    let _ = client.produce(t, *p, vec![value]).await;
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("produce task");
    let leader_addr = crate::client_addr(leader);
    let outcome = client_node.spawn(async move {
        let before = metadata_of(&leader_addr).await;
        let c = crate::admin_client(&leader_addr, Duration::from_secs(3));
        (before, c.metadata_replicate(Some(target_node)).await)
    });
    // Back on the network as the request goes out.
    cx.cluster.unclog(target_node);
    let (before, answer) = outcome.await.expect("replicate task");
    cx.report.replicates += 1;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            cx.report.executed.push(format!(
                "metadata replicate to node {target_node} after healing: not answered ({e})"
            ));
            return;
        }
    };
    let Some((seen_leader, commit_before)) = before.filter(|(l, _)| *l == answer.answered_by)
    else {
        cx.report.executed.push(format!(
            "metadata replicate to node {target_node}: answered by node {}, not the leader asked before; not judged",
            answer.answered_by
        ));
        return;
    };
    let _ = seen_leader;
    cx.report.replicates_judged += 1;
    if answer.target < commit_before {
        cx.report.violations_stored.push(format!(
            "metadata replicate: node {} answered target {} for node {target_node}, below the commit index {commit_before} it reported just before the request",
            answer.answered_by, answer.target
        ));
        return;
    }
    let target = answer.target;
    let addr = crate::client_addr(target_node);
    let applied = client_node
        .spawn(async move {
            let asked = madsim::time::Instant::now();
            let deadline = asked + REPLICATE_BOUND;
            let mut applied = None;
            while madsim::time::Instant::now() < deadline {
                if let Ok(s) = crate::node_groups(&addr).await {
                    applied = Some(s.metadata_applied);
                    if s.metadata_applied >= target {
                        return (applied, Some(asked.elapsed()));
                    }
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
            (applied, None)
        })
        .await
        .expect("replicate wait task");
    let sent: Vec<String> = answer
        .members
        .iter()
        .map(|m| {
            format!(
                "node {} had {}{}",
                m.node,
                m.matched,
                if m.snapshot { ", snapshot sent" } else { "" }
            )
        })
        .collect();
    // Leave the cluster as found: every ISR full again (a topic whose
    // min_insync_replicas needs every replica refuses produces until the
    // member is back in its ISRs).
    let admin = cx.admin.clone();
    let full = client_node
        .spawn(async move {
            let deadline = madsim::time::Instant::now() + ISR_REFILL_WAIT;
            while madsim::time::Instant::now() < deadline {
                let full = admin.metadata().await.is_ok_and(|md| {
                    md.topics
                        .iter()
                        .all(|t| t.partitions.iter().all(|p| p.isr.len() == p.replicas.len()))
                });
                if full {
                    return true;
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            false
        })
        .await
        .expect("ISR wait task");
    if !full {
        cx.report.executed.push(format!(
            "after the metadata replicate check, some ISRs were still short of node {target_node} after {} s",
            ISR_REFILL_WAIT.as_secs()
        ));
    }
    match applied {
        (Some(a), Some(took)) => {
            let ms = took.as_millis() as u64;
            cx.report.replicate_longest_ms = cx.report.replicate_longest_ms.max(ms);
            cx.report.executed.push(format!(
                "node {target_node} cut off for {} ms, then metadata-replicated to target {target} (commit before: {commit_before}; {}): applied {a} after {ms} ms",
                CUT_FOR.as_millis(),
                sent.join(", ")
            ))
        }
        (other, _) => cx.report.liveness.push(format!(
            "metadata replicate: node {target_node} applied {other:?}, not the target {target}, {} s after the request",
            REPLICATE_BOUND.as_secs()
        )),
    }
}
