//! One look at the whole cluster for `status`, `health`, `list-partitions`
//! and `metadata-status`: the members and ISRs from the metadata leader,
//! and every member's own status asked of it directly (a node that does
//! not answer is reported, not skipped).

use crate::error::CliError;
use chronik_net::{proto, Client, ClientError, RetryPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long one member gets to answer its status.
const NODE_DEADLINE: Duration = Duration::from_secs(3);

pub struct Survey {
    /// Members as the metadata leader (or, without one, the asked node)
    /// applied them.
    pub members: proto::ListNodesResponse,
    /// Each member's own status, or why it did not answer.
    pub statuses: BTreeMap<u64, Result<proto::NodeStatusResponse, String>>,
    /// Every partition's replicas and ISR, with lag from its leader.
    pub partitions: Vec<proto::PartitionIsr>,
}

/// An answer's in-band error, typed.
pub fn refused(e: proto::Error) -> CliError {
    CliError::Client(ClientError::Server {
        code: e.error_code(),
        message: e.message,
    })
}

/// A client for one node, no redirect, each call bounded by `deadline`.
pub fn one_node(addr: &str, deadline: Duration) -> Client {
    crate::connect::client(
        vec![addr.to_string()],
        RetryPolicy {
            deadline,
            ..RetryPolicy::default()
        },
    )
}

/// `addr`'s own status through `client` (which keeps its connection).
pub async fn node_status_with(
    client: &Client,
    addr: &str,
) -> Result<proto::NodeStatusResponse, ClientError> {
    client
        .ask_node(addr, |mut a| async move {
            a.node_status(proto::NodeStatusRequest {}).await
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn node_status(addr: &str) -> Result<proto::NodeStatusResponse, ClientError> {
    node_status_with(&one_node(addr, NODE_DEADLINE), addr).await
}

/// ISR of every partition as `addr` knows it.
pub async fn isr_status(
    c: &Client,
    addr: &str,
    req: &proto::IsrStatusRequest,
) -> Result<proto::IsrStatusResponse, CliError> {
    let r = c
        .ask_node(addr, |mut a| {
            let req = req.clone();
            async move { a.isr_status(req).await }
        })
        .await?
        .into_inner();
    match r.error {
        Some(e) => Err(refused(e)),
        None => Ok(r),
    }
}

/// Fills in each partition's per-replica lag from its leader (only a
/// leader knows its followers' progress). Leaders that do not answer leave
/// their partitions without lag.
pub async fn fill_lags(
    c: &Client,
    r: &mut proto::IsrStatusResponse,
    addrs: &BTreeMap<u64, String>,
    req: &proto::IsrStatusRequest,
) {
    let leaders: BTreeSet<u64> = r
        .partitions
        .iter()
        .filter(|p| p.leader != 0 && p.leader != r.answered_by && p.lags.is_empty())
        .map(|p| p.leader)
        .collect();
    let mut lags: BTreeMap<u64, Vec<proto::ReplicaLag>> = BTreeMap::new();
    for leader in leaders {
        let Some(a) = addrs.get(&leader) else {
            continue;
        };
        if let Ok(lr) = isr_status(c, a, req).await {
            for p in lr.partitions {
                if !p.lags.is_empty() {
                    lags.entry(p.group).or_insert(p.lags);
                }
            }
        }
    }
    for p in &mut r.partitions {
        if p.lags.is_empty() {
            if let Some(l) = lags.remove(&p.group) {
                p.lags = l;
            }
        }
    }
}

impl Survey {
    pub async fn take(c: &Client) -> Result<Survey, CliError> {
        let mut members = c.list_nodes().await?;
        if let Some(e) = members.error.take() {
            return Err(refused(e));
        }
        let addrs: BTreeMap<u64, String> = members
            .nodes
            .iter()
            .map(|n| (n.id, n.client_addr.clone()))
            .collect();
        // Every member at once: a down node costs one deadline, not one
        // per node.
        let mut asks = tokio::task::JoinSet::new();
        for (id, addr) in &addrs {
            let (id, addr) = (*id, addr.clone());
            asks.spawn(async move {
                let r = node_status(&addr).await.map_err(|e| match e {
                    ClientError::Unreachable { last } => last,
                    other => other.to_string(),
                });
                (id, r)
            });
        }
        let mut statuses = BTreeMap::new();
        while let Some(done) = asks.join_next().await {
            if let Ok((id, r)) = done {
                statuses.insert(id, r);
            }
        }
        // The metadata leader's view of the ISRs, or the asked node's.
        let from = addrs
            .get(&members.metadata_leader)
            .or_else(|| addrs.get(&members.answered_by))
            .cloned()
            .unwrap_or_default();
        let req = proto::IsrStatusRequest::default();
        let mut isr = isr_status(c, &from, &req).await?;
        fill_lags(c, &mut isr, &addrs, &req).await;
        Ok(Survey {
            members,
            statuses,
            partitions: isr.partitions,
        })
    }

    pub fn status(&self, node: u64) -> Option<&proto::NodeStatusResponse> {
        self.statuses.get(&node).and_then(|r| r.as_ref().ok())
    }

    /// The node leading the metadata group, as the members report it.
    pub fn metadata_leader(&self) -> Option<u64> {
        let claimed = self.statuses.values().flatten().find_map(|s| {
            s.groups
                .iter()
                .find(|g| g.name == "metadata" && g.role == "leader")
                .map(|_| s.node_id)
        });
        claimed.or((self.members.metadata_leader != 0).then_some(self.members.metadata_leader))
    }

    /// The metadata group as `node` reports it.
    pub fn metadata_group(&self, node: u64) -> Option<&proto::GroupStatus> {
        self.status(node)?
            .groups
            .iter()
            .find(|g| g.name == "metadata")
    }

    /// Nodes the metadata leader heard from lately and that answered now.
    pub fn healthy(&self, node: u64) -> bool {
        let heard = self
            .metadata_leader()
            .and_then(|l| self.status(l))
            .is_none_or(|s| s.alive.contains(&node));
        heard && self.status(node).is_some()
    }

    /// Why a member is not healthy (`None`: it is).
    pub fn unhealthy_reason(&self, node: u64) -> Option<String> {
        match self.statuses.get(&node) {
            Some(Err(e)) => Some(format!("does not answer ({e})")),
            None => Some("not asked".into()),
            Some(Ok(_)) if !self.healthy(node) => {
                Some("answers, but the metadata leader has not heard from it lately".into())
            }
            Some(Ok(_)) => None,
        }
    }

    /// The leader of a partition group: the replica that says it leads,
    /// else the one its replicas know.
    pub fn leader_of(&self, group: u64) -> Option<u64> {
        let mut known = None;
        for s in self.statuses.values().flatten() {
            if let Some(g) = s.groups.iter().find(|g| g.group == group) {
                if g.role == "leader" {
                    return Some(s.node_id);
                }
                if g.leader != 0 {
                    known = Some(g.leader);
                }
            }
        }
        known
    }

    /// A partition group as `node`'s replica reports it.
    pub fn replica(&self, node: u64, group: u64) -> Option<&proto::GroupStatus> {
        self.status(node)?.groups.iter().find(|g| g.group == group)
    }

    /// The freshest view of a partition's log: its leader's replica, else
    /// the replica with the highest high watermark.
    pub fn log_of(&self, p: &proto::PartitionIsr) -> Option<&proto::GroupStatus> {
        self.leader_of(p.group)
            .and_then(|l| self.replica(l, p.group))
            .or_else(|| {
                p.replicas
                    .iter()
                    .filter_map(|r| self.replica(*r, p.group))
                    .max_by_key(|g| g.high_watermark)
            })
    }

    pub fn under_replicated(p: &proto::PartitionIsr) -> bool {
        p.isr.len() < p.replicas.len()
    }

    pub fn under_min_isr(p: &proto::PartitionIsr) -> bool {
        (p.isr.len() as u32) < p.min_insync_replicas
    }

    /// Produces to the partition fail now: no leader, or a leader outside
    /// the ISR with unclean election off.
    pub fn unavailable(&self, p: &proto::PartitionIsr) -> bool {
        self.leader_of(p.group).is_none() || !p.available
    }
}
