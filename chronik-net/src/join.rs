//! Joining an existing cluster: a new node asks a member to add it, through
//! the client's retry loop (NOT_LEADER hints to the metadata leader), and
//! also waits out what passes with time (another change in flight, too few
//! live voters for a while) until a deadline.

use crate::client::{ClientError, RetryPolicy};
use crate::node::NodeError;
use crate::proto;
use chronik_core::{ErrorCode, NodeInfo};
use std::time::Duration;

/// How long a joining node keeps asking.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// Asks the cluster at `addr` (a client address) to add `me`; returns the
/// registered nodes, `me` included.
pub(crate) async fn join_cluster(
    addr: &str,
    me: &NodeInfo,
    dialer: &crate::tls::Dialer,
) -> Result<Vec<NodeInfo>, NodeError> {
    let client = dialer.client(
        vec![addr.to_string()],
        RetryPolicy {
            deadline: JOIN_DEADLINE,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            also_retry: vec![
                ErrorCode::MembershipChangeInProgress,
                ErrorCode::QuorumAtRisk,
            ],
            ..RetryPolicy::default()
        },
    );
    let refused = |e: ClientError| {
        NodeError::Join(format!(
            "no member at {addr} accepted this node within {}s: {e}",
            JOIN_DEADLINE.as_secs()
        ))
    };
    let added = client
        .add_node(proto::AddNodeRequest {
            id: me.id,
            peer_addr: me.peer_addr.clone(),
            client_addr: me.client_addr.clone(),
            rack: me.rack.clone().unwrap_or_default(),
        })
        .await;
    let nodes = match added {
        Ok(r) => r.nodes,
        // An earlier attempt took effect and its answer was lost: this
        // very node (same id, same addresses) is registered.
        Err(e) if e.code() == ErrorCode::NodeAlreadyExists => {
            let l = client.list_nodes().await.map_err(refused)?;
            let mine = l.nodes.iter().any(|n| {
                n.id == me.id && n.peer_addr == me.peer_addr && n.client_addr == me.client_addr
            });
            if !mine {
                return Err(refused(e));
            }
            l.nodes
                .into_iter()
                .map(|n| proto::NodeAddress {
                    id: n.id,
                    peer_addr: n.peer_addr,
                    client_addr: n.client_addr,
                    rack: n.rack,
                })
                .collect()
        }
        Err(e) => return Err(refused(e)),
    };
    Ok(nodes
        .into_iter()
        .map(crate::convert::node_from_wire)
        .collect())
}
