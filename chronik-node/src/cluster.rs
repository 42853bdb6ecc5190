//! `chronik-node cluster ...`: operator commands over the admin gRPC API.

use crate::error::CliError;
use crate::output::{ids, print, OutputFormat, Table};
use chronik_net::proto;
use chronik_net::{Client, RetryPolicy};
use clap::Subcommand;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Nodes (healthy, unhealthy), the metadata leader and term, topics and
    /// partitions (without leader, under-replicated, under min ISR), and
    /// the membership change in flight.
    Status {
        /// Add a row per node: addresses, health, groups led and hosted,
        /// metadata applied index and lag, version, uptime.
        #[arg(long)]
        detailed: bool,
    },
    /// One line and an exit code for scripts: 0 healthy, 1 degraded (a
    /// node down, partitions under-replicated or under min ISR, storage
    /// errors), 2 unavailable (metadata without quorum, partitions without
    /// a leader).
    Health,
    /// One row per partition: leader, replicas, ISR, high watermark, size.
    ListPartitions {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only partitions with a replica on this node.
        #[arg(long)]
        node: Option<u64>,
        /// Only partitions whose ISR is smaller than their replica set.
        #[arg(long)]
        under_replicated: bool,
        /// Only partitions whose ISR is below min_insync_replicas.
        #[arg(long)]
        under_min_isr: bool,
        /// Only partitions that refuse produces now (no leader, or led
        /// from outside the ISR).
        #[arg(long)]
        unavailable: bool,
    },
    /// The metadata group: leader, term, each member's commit and applied
    /// index, configuration, snapshot and log length.
    MetadataStatus,
    /// Sends a lagging or recovered member the metadata it misses now (a
    /// snapshot if the entries were compacted) and waits until its applied
    /// index reaches the metadata leader's commit index at the time of the
    /// request, printing progress.
    MetadataReplicate {
        /// Only this member (default: every member).
        #[arg(long)]
        to: Option<u64>,
    },
    /// One partition across its replicas: leader and term, ISR, and per
    /// replica its matched index and lag, high watermark, log start,
    /// segments and bytes.
    PartitionInfo {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: u32,
        /// Also the recent decisions about the partition from every replica
        /// (elections and why, leadership handoffs, ISR shrinks and expands
        /// with the lag behind them, moves), oldest first.
        #[arg(long)]
        why: bool,
    },
    /// Round trips from the asked node to node ID over the peer transport,
    /// and from here to node ID's client port. Exits 1 if either lost
    /// pings.
    PingNode {
        #[arg(long)]
        id: u64,
        /// Pings per path (at most 100).
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// Adds a node: it joins as a learner, catches up, then becomes a voter
    /// through joint consensus. Start it with `run --join` to let it catch up.
    AddNode {
        #[arg(long)]
        id: u64,
        /// Where peers reach the new node (its peer_listen).
        #[arg(long)]
        peer_addr: String,
        /// Where clients reach the new node (its client_listen).
        #[arg(long)]
        client_addr: String,
        /// The node's failure domain (its `rack` setting).
        #[arg(long)]
        rack: Option<String>,
    },
    /// Removes a node: its partition replicas move to other nodes, then it
    /// leaves through joint consensus. Waits until it is out.
    RemoveNode {
        #[arg(long)]
        id: u64,
        /// Return once the change is accepted instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Every node with its role in the metadata group's configuration.
    ListNodes,
    /// Balances replicas, leaders and bytes across nodes: plans the fewest
    /// replica moves (and leadership changes) that bring every node within
    /// the imbalance threshold, starts them and follows them to the end.
    Rebalance {
        /// Show the plan and change nothing.
        #[arg(long, conflicts_with_all = ["status", "cancel"])]
        dry_run: bool,
        /// Plan at most this many replica moves.
        #[arg(long)]
        max_moves: Option<u32>,
        /// Show the latest run and its moves.
        #[arg(long, conflicts_with = "cancel")]
        status: bool,
        /// Start no more moves of the run in flight (moves in flight finish).
        #[arg(long)]
        cancel: bool,
        /// Return once the run is started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Maintenance mode: moves every leadership off the node and keeps it
    /// off (it stays a voter and a replica), recorded in metadata so it
    /// survives restarts. Waits until the node leads nothing.
    Drain {
        #[arg(long)]
        id: u64,
        /// Return once recorded instead of waiting for the handoffs.
        #[arg(long)]
        no_wait: bool,
    },
    /// Ends maintenance mode: the node takes its preferred leaderships
    /// back once in sync.
    Undrain {
        #[arg(long)]
        id: u64,
    },
    /// Whether restarting the node now keeps every partition it hosts
    /// writable (enough in-sync replicas elsewhere), with the reasons if
    /// not. Exits non-zero when it is not safe.
    RollingRestartCheck {
        #[arg(long)]
        id: u64,
    },
    /// Replicas, ISR, leader and per-replica lag of every partition.
    IsrStatus {
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Only partitions whose ISR is below min_insync_replicas.
        #[arg(long)]
        under_min_isr: bool,
    },
}

/// How long a command keeps asking (following leader hints, retrying what
/// is retriable) before it reports why it could not finish.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// How long `remove-node` waits for the node to be out.
const REMOVAL_WAIT: Duration = Duration::from_secs(120);

fn client(addr: &str) -> Client {
    crate::connect::client(
        vec![addr.to_string()],
        RetryPolicy {
            deadline: COMMAND_DEADLINE,
            ..RetryPolicy::default()
        },
    )
}

pub async fn run(cmd: ClusterCmd, addr: &str, format: OutputFormat) -> Result<(), CliError> {
    let c = client(addr);
    match cmd {
        ClusterCmd::Status { detailed } => crate::status::status(&c, detailed, format).await,
        ClusterCmd::Health => match crate::status::health(&c, format).await? {
            crate::status::Verdict::Healthy => Ok(()),
            v => Err(CliError::Unhealthy(v)),
        },
        ClusterCmd::ListPartitions {
            topic,
            node,
            under_replicated,
            under_min_isr,
            unavailable,
        } => {
            let f = crate::status::PartitionFilter {
                topic,
                node,
                under_replicated,
                under_min_isr,
                unavailable,
            };
            crate::status::list_partitions(&c, f, format).await
        }
        ClusterCmd::MetadataStatus => crate::status::metadata_status(&c, format).await,
        ClusterCmd::MetadataReplicate { to } => {
            crate::replicate::metadata_replicate(&c, to, format).await
        }
        ClusterCmd::PartitionInfo {
            topic,
            partition,
            why,
        } => crate::diagnose::partition_info(&c, addr, topic, partition, why, format).await,
        ClusterCmd::PingNode { id, count } => {
            crate::diagnose::ping_node(&c, addr, id, count, format).await
        }
        ClusterCmd::AddNode {
            id,
            peer_addr,
            client_addr,
            rack,
        } => {
            let req = proto::AddNodeRequest {
                id,
                peer_addr,
                client_addr,
                rack: rack.unwrap_or_default(),
            };
            let r = c.add_node(req).await?;
            print_change(
                format,
                &r,
                "accepted; the node becomes a voter once it runs and has caught up",
            )
        }
        ClusterCmd::RemoveNode { id, no_wait } => {
            let r = c.remove_node(id).await?;
            if !no_wait {
                wait_until_gone(&c, id).await?;
            }
            print_change(
                format,
                &r,
                if no_wait {
                    "accepted"
                } else {
                    "done: the node is out of the configuration"
                },
            )
        }
        ClusterCmd::ListNodes => list_nodes(&c, format).await,
        ClusterCmd::Rebalance {
            dry_run,
            max_moves,
            status,
            cancel,
            no_wait,
        } => {
            let ask = crate::rebalance::Ask {
                dry_run,
                max_moves,
                status,
                cancel,
                no_wait,
            };
            crate::rebalance::run(&c, ask, format).await
        }
        ClusterCmd::Drain { id, no_wait } => {
            crate::maintenance::set(&c, id, true, !no_wait, format).await
        }
        ClusterCmd::Undrain { id } => crate::maintenance::set(&c, id, false, false, format).await,
        ClusterCmd::RollingRestartCheck { id } => {
            crate::maintenance::restart_check(&c, id, format).await
        }
        ClusterCmd::IsrStatus {
            topic,
            under_min_isr,
        } => isr_status(&c, addr, topic.unwrap_or_default(), under_min_isr, format).await,
    }
}

async fn wait_until_gone(c: &Client, id: u64) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
    while tokio::time::Instant::now() < deadline {
        let l = c.list_nodes().await?;
        if l.change_in_flight.is_empty() && !l.nodes.iter().any(|n| n.id == id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(CliError::WaitTimedOut(format!(
        "node {id} was not out of the configuration within {} s (see `cluster list-nodes`)",
        REMOVAL_WAIT.as_secs()
    )))
}

#[derive(Serialize)]
struct ChangeReport {
    change: String,
    status: String,
    answered_by: u64,
    nodes: Vec<u64>,
}

fn print_change(
    format: OutputFormat,
    r: &proto::MembershipResponse,
    status: &str,
) -> Result<(), CliError> {
    let report = ChangeReport {
        change: r.change.clone(),
        status: status.to_string(),
        answered_by: r.answered_by,
        nodes: r.nodes.iter().map(|n| n.id).collect(),
    };
    print(format, &report, |r| {
        format!(
            "{}: {} (answered by node {})",
            r.change, r.status, r.answered_by
        )
    })
    .map_err(CliError::Output)
}

#[derive(Serialize)]
struct NodesReport {
    answered_by: u64,
    metadata_leader: Option<u64>,
    change_in_flight: Option<String>,
    joint: bool,
    nodes: Vec<NodeRow>,
}

#[derive(Serialize)]
struct NodeRow {
    id: u64,
    peer_addr: String,
    client_addr: String,
    role: String,
    replicas: u32,
    /// In maintenance (`cluster drain`): leads nothing while a peer can.
    maintenance: bool,
}

async fn list_nodes(c: &Client, format: OutputFormat) -> Result<(), CliError> {
    let l = c.list_nodes().await?;
    let report = NodesReport {
        answered_by: l.answered_by,
        metadata_leader: (l.metadata_leader != 0).then_some(l.metadata_leader),
        change_in_flight: (!l.change_in_flight.is_empty()).then_some(l.change_in_flight),
        joint: l.joint,
        nodes: l
            .nodes
            .into_iter()
            .map(|n| NodeRow {
                id: n.id,
                peer_addr: n.peer_addr,
                client_addr: n.client_addr,
                role: n.role,
                replicas: n.replicas,
                maintenance: n.maintenance,
            })
            .collect(),
    };
    print(format, &report, |r| {
        let table = Table {
            header: vec![
                "ID",
                "PEER_ADDR",
                "CLIENT_ADDR",
                "ROLE",
                "REPLICAS",
                "LEADER",
                "MAINTENANCE",
            ],
            rows: r
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        n.id.to_string(),
                        n.peer_addr.clone(),
                        n.client_addr.clone(),
                        n.role.clone(),
                        n.replicas.to_string(),
                        if r.metadata_leader == Some(n.id) {
                            "*".into()
                        } else {
                            String::new()
                        },
                        if n.maintenance {
                            "yes".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect(),
        };
        format!(
            "{}

change in flight: {} (answered by node {})",
            table.render(),
            r.change_in_flight.as_deref().unwrap_or("none"),
            r.answered_by
        )
    })
    .map_err(CliError::Output)
}

#[derive(Serialize)]
struct IsrReport {
    answered_by: u64,
    isr_shrinks: u64,
    isr_expands: u64,
    partitions: Vec<PartitionIsr>,
}

#[derive(Serialize)]
struct PartitionIsr {
    topic: String,
    partition: u32,
    leader: Option<u64>,
    replicas: Vec<u64>,
    isr: Vec<u64>,
    min_insync_replicas: u32,
    under_min_isr: bool,
    /// False: the leader is outside the ISR with unclean election off.
    available: bool,
    /// From the partition's leader; empty if it could not be asked.
    lags: Vec<ReplicaLag>,
}

#[derive(Serialize)]
struct ReplicaLag {
    node: u64,
    matched_index: u64,
    lag_entries: u64,
    /// None: never caught up since this leader took over.
    lag_ms: Option<u64>,
    in_sync: bool,
}

async fn isr_status(
    c: &Client,
    addr: &str,
    topic: String,
    under_min_isr: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    let req = proto::IsrStatusRequest {
        topic: topic.clone(),
        under_min_isr,
    };
    let mut r = crate::survey::isr_status(c, addr, &req).await?;
    let nodes: BTreeMap<u64, String> = c
        .ask_node(addr, |mut a| async move {
            a.cluster_status(proto::ClusterStatusRequest {}).await
        })
        .await?
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| (n.id, n.client_addr))
        .collect();
    crate::survey::fill_lags(c, &mut r, &nodes, &req).await;
    let report = IsrReport {
        answered_by: r.answered_by,
        isr_shrinks: r.isr_shrinks,
        isr_expands: r.isr_expands,
        partitions: r
            .partitions
            .into_iter()
            .map(|p| PartitionIsr {
                under_min_isr: (p.isr.len() as u32) < p.min_insync_replicas,
                lags: p
                    .lags
                    .iter()
                    .map(|l| ReplicaLag {
                        node: l.node,
                        matched_index: l.matched_index,
                        lag_entries: l.lag_entries,
                        lag_ms: (l.lag_ms != u64::MAX).then_some(l.lag_ms),
                        in_sync: l.in_sync,
                    })
                    .collect(),
                topic: p.topic,
                partition: p.partition,
                leader: (p.leader != 0).then_some(p.leader),
                replicas: p.replicas,
                isr: p.isr,
                min_insync_replicas: p.min_insync_replicas,
                available: p.available,
            })
            .collect(),
    };
    print(format, &report, |r| {
        let rows = r
            .partitions
            .iter()
            .map(|p| {
                let lag = p
                    .lags
                    .iter()
                    .map(|l| {
                        let ms = l.lag_ms.map_or("never".to_string(), |m| format!("{m}ms"));
                        format!("{}:{}/{}", l.node, l.lag_entries, ms)
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.leader.map_or("-".into(), |l| l.to_string()),
                    ids(&p.replicas),
                    ids(&p.isr),
                    p.min_insync_replicas.to_string(),
                    match (p.available, p.under_min_isr) {
                        (false, _) => "unavailable: leader not in ISR".into(),
                        (true, true) => "under min ISR".into(),
                        (true, false) => "ok".into(),
                    },
                    if lag.is_empty() { "-".into() } else { lag },
                ]
            })
            .collect();
        let table = Table {
            header: vec![
                "TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "MIN_ISR", "STATE",
                "LAG (node:entries/since caught up)",
            ],
            rows,
        };
        format!(
            "{}\n\nISR changes since the cluster began: {} shrinks, {} expands (answered by node {})",
            table.render(),
            r.isr_shrinks,
            r.isr_expands,
            r.answered_by
        )
    })
    .map_err(CliError::Output)
}
