//! `cluster drain`, `cluster undrain` and `cluster rolling-restart-check`:
//! what an operator runs around taking a node down.

use crate::error::CliError;
use crate::output::{print, OutputFormat};
use chronik_core::Role;
use chronik_net::{proto, Client};
use serde::Serialize;
use std::time::Duration;

/// How long `drain` waits for the node to lead nothing.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
struct MaintenanceReport {
    node: u64,
    maintenance: bool,
    /// Groups the node still led when the command returned.
    still_leads: Vec<String>,
    answered_by: u64,
}

/// Puts `id` into maintenance (`on`) or out of it; with `wait`, follows a
/// drain until the node leads nothing.
pub async fn set(
    c: &Client,
    id: u64,
    on: bool,
    wait: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    let r = c.maintenance(id, on).await?;
    let still_leads = if on && wait {
        wait_until_leads_nothing(c, id).await?
    } else {
        Vec::new()
    };
    let report = MaintenanceReport {
        node: id,
        maintenance: on,
        still_leads,
        answered_by: r.answered_by,
    };
    print(format, &report, |r| {
        let what = match (r.maintenance, wait) {
            (true, true) => "in maintenance and leads nothing; it stays a voter and a replica",
            (true, false) => "in maintenance; its leaderships are moving to other nodes",
            (false, _) => {
                "out of maintenance; it takes its preferred leaderships back once in sync"
            }
        };
        format!(
            "node {}: {what} (answered by node {})",
            r.node, r.answered_by
        )
    })
    .map_err(CliError::Output)
}

/// The groups node `id` leads, by its own account.
async fn led_by(c: &Client, id: u64) -> Result<Vec<String>, CliError> {
    let nodes = c.list_nodes().await?;
    let Some(n) = nodes.nodes.iter().find(|n| n.id == id) else {
        return Err(CliError::Client(chronik_net::ClientError::Server {
            code: chronik_core::ErrorCode::UnknownNode,
            message: format!("node {id} is not a member"),
        }));
    };
    let status = c
        .ask_node(&n.client_addr, |mut a| async move {
            a.node_status(proto::NodeStatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await?;
    let leader = Role::Leader.to_string();
    Ok(status
        .groups
        .into_iter()
        .filter(|g| g.role == leader)
        .map(|g| g.name)
        .collect())
}

async fn wait_until_leads_nothing(c: &Client, id: u64) -> Result<Vec<String>, CliError> {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    loop {
        let led = led_by(c, id).await?;
        if led.is_empty() {
            return Ok(led);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::WaitTimedOut(format!(
                "node {id} still leads {} after {} s (no in-sync peer could take them?); it stays in maintenance",
                led.join(", "),
                DRAIN_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Serialize)]
struct RestartCheckReport {
    node: u64,
    safe: bool,
    reasons: Vec<String>,
    partitions: u32,
    answered_by: u64,
}

/// Whether restarting `id` now is safe; an unsafe answer is printed, then
/// reported as an error (non-zero exit) for scripts.
pub async fn restart_check(c: &Client, id: u64, format: OutputFormat) -> Result<(), CliError> {
    let r = c.restart_check(id).await?;
    let report = RestartCheckReport {
        node: id,
        safe: r.safe,
        reasons: r.reasons,
        partitions: r.partitions,
        answered_by: r.answered_by,
    };
    print(format, &report, |r| {
        if r.safe {
            format!(
                "node {}: safe to restart now ({} partitions keep enough in-sync replicas elsewhere; answered by node {})",
                r.node, r.partitions, r.answered_by
            )
        } else {
            let mut out = format!("node {}: NOT safe to restart now:", r.node);
            for reason in &r.reasons {
                out.push_str(&format!("\n  - {reason}"));
            }
            out
        }
    })
    .map_err(CliError::Output)?;
    if report.safe {
        Ok(())
    } else {
        Err(CliError::Unsafe(format!(
            "restarting node {id} now would leave {} without enough in-sync replicas",
            if report.reasons.len() == 1 {
                "one group".to_string()
            } else {
                format!("{} groups", report.reasons.len())
            }
        )))
    }
}
