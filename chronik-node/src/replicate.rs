//! `cluster metadata-replicate`: bring a lagging or recovered member's
//! metadata up to date now, and wait until it is.

use crate::error::CliError;
use crate::output::{print, OutputFormat, Table};
use crate::survey::{node_status, refused};
use chronik_net::Client;
use serde::Serialize;
use std::time::Duration;

/// How long to wait for the members to reach the target.
const REPLICATE_WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct ReplicateReport {
    answered_by: u64,
    /// The leader's commit index when asked.
    target: u64,
    members: Vec<MemberRow>,
}

#[derive(Serialize)]
struct MemberRow {
    node: u64,
    /// Index the leader knew on the member when asked.
    matched_before: u64,
    snapshot_sent: bool,
    /// Its applied metadata index when the command returned.
    applied: Option<u64>,
    caught_up: bool,
}

pub async fn metadata_replicate(
    c: &Client,
    to: Option<u64>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let r = c.metadata_replicate(to).await?;
    if let Some(e) = r.error {
        return Err(refused(e));
    }
    let addrs: std::collections::BTreeMap<u64, String> = {
        let l = c.list_nodes().await?;
        l.nodes.into_iter().map(|n| (n.id, n.client_addr)).collect()
    };
    let mut rows: Vec<MemberRow> = r
        .members
        .iter()
        .map(|m| MemberRow {
            node: m.node,
            matched_before: m.matched,
            snapshot_sent: m.snapshot,
            applied: None,
            caught_up: false,
        })
        .collect();
    let progress = format == OutputFormat::Table;
    if progress {
        crate::outln!(
            "node {} leads the metadata group; target: its commit index {} when asked",
            r.answered_by,
            r.target
        );
    }
    let deadline = tokio::time::Instant::now() + REPLICATE_WAIT;
    loop {
        for row in rows.iter_mut().filter(|r| !r.caught_up) {
            let Some(addr) = addrs.get(&row.node) else {
                continue;
            };
            if let Ok(s) = node_status(addr).await {
                let before = row.applied;
                row.applied = Some(s.metadata_applied);
                row.caught_up = s.metadata_applied >= r.target;
                if progress && before != row.applied {
                    crate::outln!(
                        "node {}: applied {} of {}{}",
                        row.node,
                        s.metadata_applied,
                        r.target,
                        if row.caught_up { " - up to date" } else { "" }
                    );
                }
            }
        }
        if rows.iter().all(|r| r.caught_up) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let behind: Vec<String> = rows
        .iter()
        .filter(|r| !r.caught_up)
        .map(|r| {
            format!(
                "node {} ({})",
                r.node,
                r.applied
                    .map_or("did not answer".to_string(), |a| format!("applied {a}"))
            )
        })
        .collect();
    let report = ReplicateReport {
        answered_by: r.answered_by,
        target: r.target,
        members: rows,
    };
    print(format, &report, |r| {
        Table {
            header: vec!["NODE", "MATCHED_BEFORE", "SENT", "APPLIED", "STATE"],
            rows: r
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node.to_string(),
                        m.matched_before.to_string(),
                        if m.snapshot_sent {
                            "snapshot".into()
                        } else if m.matched_before < r.target {
                            "entries".into()
                        } else {
                            "nothing (up to date)".into()
                        },
                        m.applied.map_or("-".into(), |a| a.to_string()),
                        if m.caught_up {
                            "up to date".into()
                        } else {
                            "behind".into()
                        },
                    ]
                })
                .collect(),
        }
        .render()
    })
    .map_err(CliError::Output)?;
    if behind.is_empty() {
        Ok(())
    } else {
        Err(CliError::WaitTimedOut(format!(
            "not up to date within {} s: {}",
            REPLICATE_WAIT.as_secs(),
            behind.join(", ")
        )))
    }
}
