//! Maintenance after healing: the node leading the most groups is put into
//! maintenance with every peer up and in sync; within [`DRAIN_BOUND`] it
//! must lead nothing (by its own status), then it is taken out again.

use super::rolling::Roll;
use super::*;

/// How long a node in maintenance may take to hand every leadership over.
const DRAIN_BOUND: Duration = Duration::from_secs(10);
/// How long to wait for the cluster to be in sync before judging a drain.
const READY_WAIT: Duration = Duration::from_secs(15);

/// Takes every node out of maintenance (the fault plan may have left one
/// in it when the cluster could not answer in time).
pub(super) async fn undrain_all(admin: &Client) {
    if let Ok(l) = admin.list_nodes().await {
        for n in l.nodes.iter().filter(|n| n.maintenance) {
            let _ = admin.maintenance(n.id, false).await;
        }
    }
}

pub(super) async fn drain_check(cx: &mut Roll<'_>, members: &[u64]) {
    let (admin, client_node) = (cx.admin.clone(), cx.client_node);
    let members = members.to_vec();
    let outcome = client_node
        .spawn(async move {
            undrain_all(&admin).await;
            let leads = |s: &chronik_net::proto::NodeStatusResponse| -> Vec<String> {
                s.groups
                    .iter()
                    .filter(|g| g.role == "leader")
                    .map(|g| g.name.clone())
                    .collect()
            };
            let mut busiest = None;
            for id in &members {
                if let Ok(s) = crate::node_groups(&crate::client_addr(*id)).await {
                    let n = leads(&s).len();
                    if n > 0 && busiest.is_none_or(|(_, m)| n > m) {
                        busiest = Some((*id, n));
                    }
                }
            }
            let Some((id, _)) = busiest else {
                return Err("maintenance after healing: no node leads anything".to_string());
            };
            // Every partition's ISR full: each group it leads has an
            // in-sync peer up to take it.
            let deadline = madsim::time::Instant::now() + READY_WAIT;
            loop {
                let full = admin.metadata().await.is_ok_and(|md| {
                    md.topics.iter().all(|t| {
                        t.partitions
                            .iter()
                            .all(|p| p.isr.len() == p.replicas.len() && p.replicas.len() > 1)
                    })
                });
                if full {
                    break;
                }
                if madsim::time::Instant::now() >= deadline {
                    return Err(format!(
                        "maintenance after healing: node {id} skipped, its peers never all in sync"
                    ));
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(e) = admin.maintenance(id, true).await {
                return Ok((id, Some(format!("refused: {e}"))));
            }
            let addr = crate::client_addr(id);
            let deadline = madsim::time::Instant::now() + DRAIN_BOUND;
            let mut still = Vec::new();
            while madsim::time::Instant::now() < deadline {
                match crate::node_groups(&addr).await {
                    Ok(s) => {
                        still = leads(&s);
                        if still.is_empty() {
                            break;
                        }
                    }
                    Err(e) => still = vec![format!("(no status: {e})")],
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = admin.maintenance(id, false).await;
            Ok((id, (!still.is_empty()).then(|| still.join(", "))))
        })
        .await
        .expect("drain check task");
    cx.report.drains += 1;
    match outcome {
        Ok((id, None)) => {
            cx.report.drains_judged += 1;
            cx.report.executed.push(format!(
                "node {id} put into maintenance after healing: it led nothing within {} s",
                DRAIN_BOUND.as_secs()
            ));
        }
        Ok((id, Some(still))) => {
            cx.report.drains_judged += 1;
            cx.report.liveness.push(format!(
                "maintenance: node {id} still led {still} {} s after it went into maintenance with every peer up and in sync",
                DRAIN_BOUND.as_secs()
            ));
        }
        Err(why) => cx.report.executed.push(why),
    }
}
