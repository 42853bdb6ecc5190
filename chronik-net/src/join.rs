//! Joining an existing cluster: a new node asks a member to add it, follows
//! NOT_LEADER hints to the metadata leader, and retries what may pass later
//! (no leader yet, another change in flight, too few live voters) until a
//! deadline.

use crate::node::NodeError;
use crate::proto::{self, admin_client::AdminClient};
use chronik_core::NodeInfo;
use std::time::Duration;

/// How long a joining node keeps asking.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// Asks the cluster at `addr` (a client address) to add `me`; returns the
/// registered nodes, `me` included.
pub(crate) async fn join_cluster(addr: &str, me: &NodeInfo) -> Result<Vec<NodeInfo>, NodeError> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut target = addr.to_string();
    let mut last = String::from("no answer");
    let mut backoff = Duration::from_millis(100);
    while tokio::time::Instant::now() < deadline {
        match ask(&target, me).await {
            Ok(r) => match r.error {
                None => {
                    return Ok(r
                        .nodes
                        .into_iter()
                        .map(|n| NodeInfo {
                            id: n.id,
                            peer_addr: n.peer_addr,
                            client_addr: n.client_addr,
                        })
                        .collect())
                }
                Some(e) if e.code == "NOT_LEADER" && e.leader_hint != 0 => {
                    if let Some(l) = r.nodes.iter().find(|n| n.id == e.leader_hint) {
                        target = l.client_addr.clone();
                        continue;
                    }
                    last = e.message;
                }
                Some(e)
                    if e.retriable
                        || matches!(
                            e.code.as_str(),
                            "NOT_LEADER"
                                | "MEMBERSHIP_CHANGE_IN_PROGRESS"
                                | "TIMEOUT"
                                | "QUORUM_AT_RISK"
                        ) =>
                {
                    last = format!("{}: {}", e.code, e.message);
                }
                Some(e) => return Err(NodeError::Join(format!("{}: {}", e.code, e.message))),
            },
            Err(e) => {
                last = e;
                target = addr.to_string();
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    Err(NodeError::Join(format!(
        "no member at {addr} accepted this node within {}s: {last}",
        JOIN_DEADLINE.as_secs()
    )))
}

async fn ask(addr: &str, me: &NodeInfo) -> Result<proto::MembershipResponse, String> {
    let mut c = AdminClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    c.add_node(proto::AddNodeRequest {
        id: me.id,
        peer_addr: me.peer_addr.clone(),
        client_addr: me.client_addr.clone(),
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|s| format!("{addr}: {s}"))
}
