//! `cluster partition-info` and `cluster ping-node`: looking into one
//! partition across its replicas, and into the paths between nodes.

use crate::error::CliError;
use crate::output::{ids, opt, print, OutputFormat, Table};
use crate::status::bytes;
use crate::survey::{fill_lags, isr_status, refused};
use chronik_net::{proto, Client};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every member's client address.
async fn addresses(c: &Client) -> Result<BTreeMap<u64, String>, CliError> {
    let l = c.list_nodes().await?;
    if let Some(e) = l.error {
        return Err(refused(e));
    }
    Ok(l.nodes.into_iter().map(|n| (n.id, n.client_addr)).collect())
}

#[derive(Serialize)]
struct PartitionReport {
    topic: String,
    partition: u32,
    group: u64,
    leader: Option<u64>,
    term: Option<u64>,
    replicas: Vec<u64>,
    isr: Vec<u64>,
    min_insync_replicas: u32,
    high_watermark: Option<u64>,
    log_start_offset: Option<u64>,
    replica_details: Vec<ReplicaDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decisions: Option<Vec<DecisionRow>>,
}

#[derive(Serialize)]
struct ReplicaDetail {
    node: u64,
    role: Option<String>,
    in_isr: bool,
    /// Raft index known to be on the replica (from the leader).
    matched_index: Option<u64>,
    lag_entries: Option<u64>,
    /// Since the replica was last caught up (None: never, or unknown).
    lag_ms: Option<u64>,
    high_watermark: Option<u64>,
    log_start_offset: Option<u64>,
    segments: Option<u32>,
    size_bytes: Option<u64>,
    /// Why the replica could not be asked, or why it is rebuilding.
    problem: String,
}

#[derive(Serialize)]
struct DecisionRow {
    at_ms: u64,
    node: u64,
    term: u64,
    kind: String,
    detail: String,
}

pub async fn partition_info(
    c: &Client,
    addr: &str,
    topic: String,
    partition: u32,
    why: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    let req = proto::IsrStatusRequest {
        topic: topic.clone(),
        under_min_isr: false,
    };
    let mut r = isr_status(c, addr, &req).await?;
    let addrs = addresses(c).await?;
    fill_lags(c, &mut r, &addrs, &req).await;
    let Some(p) = r.partitions.into_iter().find(|p| p.partition == partition) else {
        return Err(CliError::UnknownPartition(topic, partition));
    };
    let mut answers = BTreeMap::new();
    for node in &p.replicas {
        let Some(a) = addrs.get(node) else { continue };
        let ask = c
            .ask_node(a, |mut admin| {
                let req = proto::PartitionInfoRequest {
                    topic: topic.clone(),
                    partition,
                };
                async move { admin.partition_info(req).await }
            })
            .await
            .map(|r| r.into_inner());
        answers.insert(*node, ask);
    }
    let replica = |n: u64| {
        answers
            .get(&n)
            .and_then(|a| a.as_ref().ok())
            .and_then(|a| a.replica.as_ref())
    };
    let leader = p
        .replicas
        .iter()
        .copied()
        .find(|n| replica(*n).is_some_and(|g| g.role == "leader"))
        .or((p.leader != 0).then_some(p.leader));
    let lead = leader.and_then(replica);
    // Leadership may have moved between the ISR answer and now: ask the
    // leader the replicas report for its followers' progress.
    let mut p = p;
    if p.lags.is_empty() {
        if let Some(a) = leader.and_then(|l| addrs.get(&l)) {
            if let Ok(lr) = isr_status(c, a, &req).await {
                if let Some(q) = lr.partitions.into_iter().find(|q| q.group == p.group) {
                    p.lags = q.lags;
                }
            }
        }
    }
    let details = p
        .replicas
        .iter()
        .map(|n| {
            let g = replica(*n);
            let lag = p.lags.iter().find(|l| l.node == *n);
            let problem = match answers.get(n) {
                None => "no address".to_string(),
                Some(Err(e)) => e.to_string(),
                Some(Ok(a)) => match (&a.error, &a.replica) {
                    (Some(e), _) => e.message.clone(),
                    (None, None) => "hosts no replica (yet)".to_string(),
                    (None, Some(g)) if !g.repairing.is_empty() => {
                        format!("repairing: {}", g.repairing)
                    }
                    _ => String::new(),
                },
            };
            ReplicaDetail {
                node: *n,
                role: g.map(|g| g.role.clone()),
                in_isr: p.isr.contains(n),
                matched_index: lag.map(|l| l.matched_index),
                lag_entries: lag.map(|l| l.lag_entries),
                lag_ms: lag.and_then(|l| (l.lag_ms != u64::MAX).then_some(l.lag_ms)),
                high_watermark: g.map(|g| g.high_watermark),
                log_start_offset: g.map(|g| g.log_start_offset),
                segments: g.map(|g| g.segments),
                size_bytes: g.map(|g| g.size_bytes),
                problem,
            }
        })
        .collect();
    let decisions = why.then(|| {
        let mut rows: Vec<DecisionRow> = answers
            .iter()
            .filter_map(|(n, a)| Some((n, a.as_ref().ok()?)))
            .flat_map(|(n, a)| {
                a.decisions.iter().map(move |d| DecisionRow {
                    at_ms: d.at_ms,
                    node: *n,
                    term: d.term,
                    kind: d.kind.clone(),
                    detail: d.detail.clone(),
                })
            })
            .collect();
        rows.sort_by_key(|d| (d.at_ms, d.node));
        rows
    });
    let report = PartitionReport {
        topic: p.topic.clone(),
        partition: p.partition,
        group: p.group,
        leader,
        term: lead.map(|g| g.term),
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        min_insync_replicas: p.min_insync_replicas,
        high_watermark: lead.map(|g| g.high_watermark),
        log_start_offset: lead.map(|g| g.log_start_offset),
        replica_details: details,
        decisions,
    };
    print(format, &report, |r| {
        let mut out = format!(
            "{}-{} (group {}): leader {}, term {}; replicas {}, ISR {}, min ISR {}; high watermark {}, log start {}\n\n",
            r.topic,
            r.partition,
            r.group,
            opt(r.leader),
            opt(r.term),
            ids(&r.replicas),
            ids(&r.isr),
            r.min_insync_replicas,
            opt(r.high_watermark),
            opt(r.log_start_offset),
        );
        out.push_str(
            &Table {
                header: vec![
                    "NODE", "ROLE", "IN_ISR", "MATCHED", "LAG", "CAUGHT_UP", "HW", "LOG_START",
                    "SEGMENTS", "SIZE", "PROBLEM",
                ],
                rows: r
                    .replica_details
                    .iter()
                    .map(|d| {
                        vec![
                            d.node.to_string(),
                            d.role.clone().unwrap_or_else(|| "-".into()),
                            if d.in_isr { "yes" } else { "no" }.into(),
                            opt(d.matched_index),
                            opt(d.lag_entries),
                            d.lag_ms.map_or("-".into(), |m| format!("{m} ms ago")),
                            opt(d.high_watermark),
                            opt(d.log_start_offset),
                            d.segments.map_or("-".into(), |s| s.to_string()),
                            d.size_bytes.map_or("-".into(), bytes),
                            d.problem.clone(),
                        ]
                    })
                    .collect(),
            }
            .render(),
        );
        if let Some(ds) = &r.decisions {
            out.push_str("\n\nRecent decisions (oldest first):\n");
            let first = ds.first().map_or(0, |d| d.at_ms);
            out.push_str(
                &Table {
                    header: vec!["AT", "NODE", "TERM", "DECISION", "WHY"],
                    rows: ds
                        .iter()
                        .map(|d| {
                            vec![
                                format!("+{:.3}s", (d.at_ms - first) as f64 / 1000.0),
                                d.node.to_string(),
                                if d.term == 0 {
                                    "-".into()
                                } else {
                                    d.term.to_string()
                                },
                                d.kind.clone(),
                                d.detail.clone(),
                            ]
                        })
                        .collect(),
                }
                .render(),
            );
        }
        out
    })
    .map_err(CliError::Output)
}

#[derive(Serialize)]
struct PingReport {
    paths: Vec<PingPath>,
}

#[derive(Serialize)]
struct PingPath {
    /// `node 1 -> node 3 (peer transport)` or `cli -> node 3 (client port)`.
    path: String,
    addr: String,
    connect_us: Option<u64>,
    rtt_us: Vec<u64>,
    sent: u32,
    /// Why pings failed ("" when every one was answered).
    problem: String,
}

/// Round trips from the asked node to node `id` over the peer transport,
/// and from here to node `id`'s client port. Exits 1 when either path
/// lost pings.
pub async fn ping_node(
    c: &Client,
    addr: &str,
    id: u64,
    count: u32,
    format: OutputFormat,
) -> Result<(), CliError> {
    let addrs = addresses(c).await?;
    let Some(client_addr) = addrs.get(&id).cloned() else {
        return Err(CliError::UnknownNode(id));
    };
    let r = c
        .ask_node(addr, |mut a| async move {
            a.ping_node(proto::PingNodeRequest { id, count }).await
        })
        .await?
        .into_inner();
    if let Some(e) = r.error {
        return Err(refused(e));
    }
    let sent = if count == 0 { 3 } else { count.min(100) };
    let peer = PingPath {
        path: format!("node {} -> node {id} (peer transport)", r.from),
        addr: r.peer_addr,
        connect_us: (r.connect_us > 0).then_some(r.connect_us),
        rtt_us: r.rtt_us,
        sent,
        problem: r.problem,
    };
    // From here: a fresh connection to the client port, then admin calls
    // that need no consensus.
    let mut direct = PingPath {
        path: format!("cli -> node {id} (client port)"),
        addr: client_addr.clone(),
        connect_us: None,
        rtt_us: Vec::new(),
        sent,
        problem: String::new(),
    };
    let one = crate::survey::one_node(&client_addr, Duration::from_secs(2));
    let t = std::time::Instant::now();
    match crate::survey::node_status_with(&one, &client_addr).await {
        Ok(_) => {
            direct.connect_us = Some(t.elapsed().as_micros() as u64);
            let mut lost = 0;
            for _ in 0..sent {
                let t = std::time::Instant::now();
                match crate::survey::node_status_with(&one, &client_addr).await {
                    Ok(_) => direct.rtt_us.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        lost += 1;
                        direct.problem = e.to_string();
                    }
                }
            }
            if lost > 0 {
                direct.problem = format!("{lost} of {sent} calls failed ({})", direct.problem);
            }
        }
        Err(e) => direct.problem = format!("cannot reach {client_addr}: {e}"),
    }
    let failed = [&peer, &direct]
        .iter()
        .filter(|p| !p.problem.is_empty())
        .map(|p| format!("{}: {}", p.path, p.problem))
        .collect::<Vec<_>>();
    let report = PingReport {
        paths: vec![peer, direct],
    };
    print(format, &report, |r| {
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        Table {
            header: vec![
                "PATH",
                "ADDRESS",
                "CONNECT_MS",
                "RTT_MS (min/avg/max)",
                "ANSWERED",
                "PROBLEM",
            ],
            rows: r
                .paths
                .iter()
                .map(|p| {
                    let rtt = if p.rtt_us.is_empty() {
                        "-".to_string()
                    } else {
                        let min = p.rtt_us.iter().min().copied().unwrap_or(0);
                        let max = p.rtt_us.iter().max().copied().unwrap_or(0);
                        let avg = p.rtt_us.iter().sum::<u64>() / p.rtt_us.len() as u64;
                        format!("{}/{}/{}", ms(min), ms(avg), ms(max))
                    };
                    vec![
                        p.path.clone(),
                        p.addr.clone(),
                        p.connect_us.map_or("-".into(), ms),
                        rtt,
                        format!("{}/{}", p.rtt_us.len(), p.sent),
                        p.problem.clone(),
                    ]
                })
                .collect(),
        }
        .render()
    })
    .map_err(CliError::Output)?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Unsafe(failed.join("; ")))
    }
}
