//! `cluster status`, `health`, `list-partitions` and `metadata-status`:
//! read-only views of one [`Survey`].

use crate::error::CliError;
use crate::output::{ids, opt, print, OutputFormat, Table};
use crate::survey::Survey;
use chronik_net::{proto, Client};
use serde::Serialize;

#[derive(Serialize)]
struct StatusReport {
    nodes: usize,
    healthy: usize,
    unhealthy: usize,
    metadata_leader: Option<u64>,
    metadata_term: Option<u64>,
    topics: usize,
    partitions: usize,
    partitions_without_leader: usize,
    under_replicated: usize,
    under_min_isr: usize,
    membership_change_in_flight: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_details: Option<Vec<NodeDetail>>,
}

#[derive(Serialize)]
struct NodeDetail {
    id: u64,
    client_addr: String,
    peer_addr: String,
    healthy: bool,
    /// Why not healthy ("" when healthy).
    problem: String,
    role: String,
    maintenance: bool,
    groups_led: Option<usize>,
    groups_hosted: Option<usize>,
    metadata_applied: Option<u64>,
    /// Metadata entries behind the metadata leader's commit index.
    metadata_lag: Option<u64>,
    version: Option<String>,
    uptime_ms: Option<u64>,
}

pub async fn status(c: &Client, detailed: bool, format: OutputFormat) -> Result<(), CliError> {
    let s = Survey::take(c).await?;
    let leader = s.metadata_leader();
    let leader_md = leader.and_then(|l| s.metadata_group(l));
    let healthy = s.members.nodes.iter().filter(|n| s.healthy(n.id)).count();
    let topics: std::collections::BTreeSet<&str> =
        s.partitions.iter().map(|p| p.topic.as_str()).collect();
    let details = detailed.then(|| {
        s.members
            .nodes
            .iter()
            .map(|n| {
                let st = s.status(n.id);
                NodeDetail {
                    id: n.id,
                    client_addr: n.client_addr.clone(),
                    peer_addr: n.peer_addr.clone(),
                    healthy: s.healthy(n.id),
                    problem: s.unhealthy_reason(n.id).unwrap_or_default(),
                    role: n.role.clone(),
                    maintenance: n.maintenance,
                    groups_led: st
                        .map(|st| st.groups.iter().filter(|g| g.role == "leader").count()),
                    groups_hosted: st.map(|st| st.groups.len()),
                    metadata_applied: st.map(|st| st.metadata_applied),
                    metadata_lag: st.and_then(|st| {
                        leader_md.map(|l| l.commit.saturating_sub(st.metadata_applied))
                    }),
                    version: st.map(|st| st.version.clone()),
                    uptime_ms: st.map(|st| st.uptime_ms),
                }
            })
            .collect()
    });
    let report = StatusReport {
        nodes: s.members.nodes.len(),
        healthy,
        unhealthy: s.members.nodes.len() - healthy,
        metadata_leader: leader,
        metadata_term: leader_md.map(|g| g.term),
        topics: topics.len(),
        partitions: s.partitions.len(),
        partitions_without_leader: s
            .partitions
            .iter()
            .filter(|p| s.leader_of(p.group).is_none())
            .count(),
        under_replicated: s
            .partitions
            .iter()
            .filter(|p| Survey::under_replicated(p))
            .count(),
        under_min_isr: s
            .partitions
            .iter()
            .filter(|p| Survey::under_min_isr(p))
            .count(),
        membership_change_in_flight: (!s.members.change_in_flight.is_empty())
            .then(|| s.members.change_in_flight.clone()),
        node_details: details,
    };
    print(format, &report, |r| {
        let mut out = format!(
            "nodes:       {} ({} healthy, {} unhealthy)\n\
             metadata:    leader {}, term {}\n\
             topics:      {}\n\
             partitions:  {} ({} without leader, {} under-replicated, {} under min ISR)\n\
             membership:  {}",
            r.nodes,
            r.healthy,
            r.unhealthy,
            opt(r.metadata_leader),
            opt(r.metadata_term),
            r.topics,
            r.partitions,
            r.partitions_without_leader,
            r.under_replicated,
            r.under_min_isr,
            r.membership_change_in_flight
                .as_deref()
                .unwrap_or("no change in flight"),
        );
        if let Some(d) = &r.node_details {
            let t = Table {
                header: vec![
                    "ID",
                    "CLIENT",
                    "PEER",
                    "HEALTH",
                    "ROLE",
                    "LEADS",
                    "HOSTS",
                    "MD_APPLIED",
                    "MD_LAG",
                    "VERSION",
                    "UPTIME",
                ],
                rows: d
                    .iter()
                    .map(|n| {
                        vec![
                            n.id.to_string(),
                            n.client_addr.clone(),
                            n.peer_addr.clone(),
                            if n.healthy {
                                "healthy".into()
                            } else {
                                format!("unhealthy: {}", n.problem)
                            },
                            if n.maintenance {
                                format!("{} (maintenance)", n.role)
                            } else {
                                n.role.clone()
                            },
                            n.groups_led.map_or("-".into(), |v| v.to_string()),
                            n.groups_hosted.map_or("-".into(), |v| v.to_string()),
                            opt(n.metadata_applied),
                            opt(n.metadata_lag),
                            n.version.clone().unwrap_or_else(|| "-".into()),
                            n.uptime_ms.map_or("-".into(), uptime),
                        ]
                    })
                    .collect(),
            };
            out.push_str("\n\n");
            out.push_str(&t.render());
        }
        out
    })
    .map_err(CliError::Output)
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {}s", s % 60),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// What `health` concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Healthy,
    Degraded,
    Unavailable,
}

#[derive(Serialize)]
struct HealthReport {
    status: Verdict,
    reasons: Vec<String>,
}

/// Judges the cluster from one survey: unavailable when the metadata
/// group has no leader or a partition refuses produces; degraded when a
/// node is down, a partition is under-replicated or under min ISR, or a
/// replica's storage failed.
fn judge(s: &Survey) -> HealthReport {
    let mut unavailable = Vec::new();
    let mut degraded = Vec::new();
    if s.metadata_leader().is_none() {
        unavailable.push("metadata group has no leader (no quorum)".to_string());
    }
    let down: Vec<String> = s
        .members
        .nodes
        .iter()
        .filter_map(|n| Some(format!("node {} {}", n.id, s.unhealthy_reason(n.id)?)))
        .collect();
    degraded.extend(down);
    let named = |ps: Vec<&proto::PartitionIsr>| {
        ps.iter()
            .map(|p| format!("{}-{}", p.topic, p.partition))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let leaderless: Vec<_> = s
        .partitions
        .iter()
        .filter(|p| s.leader_of(p.group).is_none())
        .collect();
    if !leaderless.is_empty() {
        unavailable.push(format!(
            "{} partition(s) without leader: {}",
            leaderless.len(),
            named(leaderless)
        ));
    }
    let outside: Vec<_> = s
        .partitions
        .iter()
        .filter(|p| !p.available && s.leader_of(p.group).is_some())
        .collect();
    if !outside.is_empty() {
        unavailable.push(format!(
            "{} partition(s) led from outside their ISR (unclean election off): {}",
            outside.len(),
            named(outside)
        ));
    }
    let under_min: Vec<_> = s
        .partitions
        .iter()
        .filter(|p| Survey::under_min_isr(p))
        .collect();
    if !under_min.is_empty() {
        degraded.push(format!(
            "{} partition(s) under min ISR (produces refused): {}",
            under_min.len(),
            named(under_min)
        ));
    }
    let under_rep = s
        .partitions
        .iter()
        .filter(|p| Survey::under_replicated(p) && !Survey::under_min_isr(p))
        .count();
    if under_rep > 0 {
        degraded.push(format!("{under_rep} partition(s) under-replicated"));
    }
    for st in s.statuses.values().flatten() {
        let repairing: Vec<&str> = st
            .groups
            .iter()
            .filter(|g| !g.repairing.is_empty())
            .map(|g| g.name.as_str())
            .collect();
        if st.storage_errors > 0 || !repairing.is_empty() {
            degraded.push(format!(
                "node {}: {} storage error(s) since start{}",
                st.node_id,
                st.storage_errors,
                if repairing.is_empty() {
                    String::new()
                } else {
                    format!(", repairing {}", repairing.join(", "))
                }
            ));
        }
    }
    let status = if !unavailable.is_empty() {
        Verdict::Unavailable
    } else if !degraded.is_empty() {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    unavailable.extend(degraded);
    HealthReport {
        status,
        reasons: unavailable,
    }
}

/// Prints one line (or JSON/YAML) and returns the verdict; the caller
/// turns it into the exit code (0, 1, 2).
pub async fn health(c: &Client, format: OutputFormat) -> Result<Verdict, CliError> {
    let s = Survey::take(c).await?;
    let report = judge(&s);
    print(format, &report, |r| {
        let head = match r.status {
            Verdict::Healthy => "HEALTHY",
            Verdict::Degraded => "DEGRADED",
            Verdict::Unavailable => "UNAVAILABLE",
        };
        if r.reasons.is_empty() {
            format!(
                "{head}: {} nodes up, every partition led and in sync",
                s.members.nodes.len()
            )
        } else {
            format!("{head}: {}", r.reasons.join("; "))
        }
    })
    .map_err(CliError::Output)?;
    Ok(report.status)
}

/// Filters of `list-partitions`.
pub struct PartitionFilter {
    pub topic: Option<String>,
    pub node: Option<u64>,
    pub under_replicated: bool,
    pub under_min_isr: bool,
    pub unavailable: bool,
}

#[derive(Serialize)]
struct PartitionRow {
    topic: String,
    partition: u32,
    leader: Option<u64>,
    replicas: Vec<u64>,
    isr: Vec<u64>,
    min_insync_replicas: u32,
    /// Next offset to be written, from the leader's replica.
    high_watermark: Option<u64>,
    log_start_offset: Option<u64>,
    size_bytes: Option<u64>,
    under_replicated: bool,
    under_min_isr: bool,
    unavailable: bool,
}

pub async fn list_partitions(
    c: &Client,
    f: PartitionFilter,
    format: OutputFormat,
) -> Result<(), CliError> {
    let s = Survey::take(c).await?;
    if let Some(t) = &f.topic {
        if !s.partitions.iter().any(|p| &p.topic == t) {
            return Err(CliError::UnknownTopic(t.clone()));
        }
    }
    if let Some(n) = f.node {
        if !s.members.nodes.iter().any(|m| m.id == n) {
            return Err(CliError::UnknownNode(n));
        }
    }
    let rows: Vec<PartitionRow> = s
        .partitions
        .iter()
        .filter(|p| f.topic.as_ref().is_none_or(|t| &p.topic == t))
        .filter(|p| f.node.is_none_or(|n| p.replicas.contains(&n)))
        .filter(|p| !f.under_replicated || Survey::under_replicated(p))
        .filter(|p| !f.under_min_isr || Survey::under_min_isr(p))
        .filter(|p| !f.unavailable || s.unavailable(p))
        .map(|p| {
            let log = s.log_of(p);
            PartitionRow {
                topic: p.topic.clone(),
                partition: p.partition,
                leader: s.leader_of(p.group),
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                min_insync_replicas: p.min_insync_replicas,
                high_watermark: log.map(|g| g.high_watermark),
                log_start_offset: log.map(|g| g.log_start_offset),
                size_bytes: log.map(|g| g.size_bytes),
                under_replicated: Survey::under_replicated(p),
                under_min_isr: Survey::under_min_isr(p),
                unavailable: s.unavailable(p),
            }
        })
        .collect();
    print(format, &rows, |rows| {
        Table {
            header: vec![
                "TOPIC",
                "PARTITION",
                "LEADER",
                "REPLICAS",
                "ISR",
                "MIN_ISR",
                "HIGH_WATERMARK",
                "SIZE",
                "STATE",
            ],
            rows: rows
                .iter()
                .map(|r| {
                    let mut state = Vec::new();
                    if r.unavailable {
                        state.push("unavailable");
                    }
                    if r.under_min_isr {
                        state.push("under min ISR");
                    } else if r.under_replicated {
                        state.push("under-replicated");
                    }
                    vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        opt(r.leader),
                        ids(&r.replicas),
                        ids(&r.isr),
                        r.min_insync_replicas.to_string(),
                        opt(r.high_watermark),
                        r.size_bytes.map_or("-".into(), bytes),
                        if state.is_empty() {
                            "ok".into()
                        } else {
                            state.join(", ")
                        },
                    ]
                })
                .collect(),
        }
        .render()
    })
    .map_err(CliError::Output)
}

/// `512 B`, `3.4 KiB`, `1.2 MiB`, `7.0 GiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[derive(Serialize)]
struct MetadataReport {
    leader: Option<u64>,
    term: Option<u64>,
    /// Voters of the configuration (with the outgoing ones while joint).
    voters: Vec<u64>,
    learners: Vec<u64>,
    joint: bool,
    change_in_flight: Option<String>,
    snapshot_index: Option<u64>,
    /// Size of the metadata state the leader would snapshot now.
    snapshot_bytes: Option<u64>,
    /// Entries in the leader's log past its snapshot.
    log_entries: Option<u64>,
    members: Vec<MetadataMember>,
}

#[derive(Serialize)]
struct MetadataMember {
    node: u64,
    role: Option<String>,
    term: Option<u64>,
    commit: Option<u64>,
    applied: Option<u64>,
    last_index: Option<u64>,
    snapshot_index: Option<u64>,
    /// Why the node gave no status ("" when it did).
    problem: String,
}

pub async fn metadata_status(c: &Client, format: OutputFormat) -> Result<(), CliError> {
    let s = Survey::take(c).await?;
    let leader = s.metadata_leader();
    let lg = leader.and_then(|l| s.metadata_group(l));
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    for n in &s.members.nodes {
        if n.role.starts_with("voter") {
            voters.push(n.id);
        } else if n.role == "learner" {
            learners.push(n.id);
        }
    }
    let report = MetadataReport {
        leader,
        term: lg.map(|g| g.term),
        voters,
        learners,
        joint: s.members.joint,
        change_in_flight: (!s.members.change_in_flight.is_empty())
            .then(|| s.members.change_in_flight.clone()),
        snapshot_index: lg.map(|g| g.snapshot_index),
        snapshot_bytes: leader
            .and_then(|l| s.status(l))
            .map(|st| st.metadata_snapshot_bytes),
        log_entries: lg.map(|g| g.last_index.saturating_sub(g.snapshot_index)),
        members: s
            .members
            .nodes
            .iter()
            .map(|n| {
                let g = s.metadata_group(n.id);
                MetadataMember {
                    node: n.id,
                    role: g.map(|g| g.role.clone()),
                    term: g.map(|g| g.term),
                    commit: g.map(|g| g.commit),
                    applied: g.map(|g| g.applied),
                    last_index: g.map(|g| g.last_index),
                    snapshot_index: g.map(|g| g.snapshot_index),
                    problem: s.unhealthy_reason(n.id).unwrap_or_default(),
                }
            })
            .collect(),
    };
    print(format, &report, |r| {
        let t = Table {
            header: vec![
                "NODE",
                "ROLE",
                "TERM",
                "COMMIT",
                "APPLIED",
                "LAST_INDEX",
                "SNAPSHOT",
                "STATE",
            ],
            rows: r
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node.to_string(),
                        m.role.clone().unwrap_or_else(|| "-".into()),
                        opt(m.term),
                        opt(m.commit),
                        opt(m.applied),
                        opt(m.last_index),
                        opt(m.snapshot_index),
                        if m.problem.is_empty() {
                            "ok".into()
                        } else {
                            m.problem.clone()
                        },
                    ]
                })
                .collect(),
        };
        format!(
            "leader {}, term {}; configuration: voters {}{}{}\n\
             snapshot at index {} ({}), {} log entries past it; {}\n\n{}",
            opt(r.leader),
            opt(r.term),
            ids(&r.voters),
            if r.learners.is_empty() {
                String::new()
            } else {
                format!(", learners {}", ids(&r.learners))
            },
            if r.joint { " (joint)" } else { "" },
            opt(r.snapshot_index),
            r.snapshot_bytes.map_or("-".into(), bytes),
            opt(r.log_entries),
            r.change_in_flight
                .as_deref()
                .map_or("no membership change in flight".to_string(), |c| {
                    format!("change in flight: {c}")
                }),
            t.render()
        )
    })
    .map_err(CliError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_uptimes_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(uptime(12_000), "12s");
        assert_eq!(uptime(250_000), "4m 10s");
        assert_eq!(uptime(7_500_000), "2h 5m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
    }
}
