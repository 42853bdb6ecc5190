//! Peer transport: one long-lived gRPC stream per peer carries the batched
//! messages of every group. Senders reconnect with capped exponential
//! backoff; queues are bounded and drop when full (Raft retransmits).

use crate::driver::{DriverHandle, DriverMsg};
use crate::proto::{self, raft_client::RaftClient};
use chronik_core::raft::eraftpb::Message;
use chronik_core::{GroupMessage, NodeId};
use protobuf::Message as _;
use std::time::Duration;
use tokio::sync::mpsc;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Batches buffered between the queue and the gRPC stream.
const STREAM_BUFFER: usize = 64;

fn encode(me: NodeId, to: NodeId, messages: Vec<GroupMessage>) -> proto::PeerBatch {
    proto::PeerBatch {
        from: me,
        to,
        messages: messages
            .into_iter()
            .map(|m| proto::PeerMessage {
                group: m.group,
                message: m
                    .message
                    .write_to_bytes()
                    .expect("raft messages always encode")
                    .into(),
            })
            .collect(),
    }
}

/// Streams the batches queued for `to` until the queue's sender is dropped.
pub(crate) async fn peer_sender(
    me: NodeId,
    to: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Vec<GroupMessage>>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let endpoint = format!("http://{addr}");
        let mut client = match RaftClient::connect(endpoint).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(to, %addr, "cannot reach peer: {e}");
                // Drop what queued up meanwhile: it is stale by the time
                // the peer is back, and Raft resends what matters.
                while rx.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                if rx.is_closed() {
                    return;
                }
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let (stx, srx) = mpsc::channel::<proto::PeerBatch>(STREAM_BUFFER);
        let stream =
            futures::stream::unfold(srx, |mut r| async move { r.recv().await.map(|b| (b, r)) });
        let call = client.stream(stream);
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                res = &mut call => {
                    if let Err(e) = res {
                        tracing::debug!(to, "peer stream ended: {e}");
                    }
                    break;
                }
                batch = rx.recv() => {
                    let Some(messages) = batch else { return };
                    if stx.send(encode(me, to, messages)).await.is_err() {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// The receiving side: decodes batches and hands them to the driver.
pub(crate) struct RaftService {
    pub me: NodeId,
    pub driver: DriverHandle,
    /// Ends open streams on shutdown: graceful server shutdown waits for
    /// them, and a peer's stream never ends by itself.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<proto::PeerBatch>>,
    ) -> Result<tonic::Response<proto::StreamAck>, tonic::Status> {
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.changed() => None,
                m = stream.message() => m?,
            };
            let Some(batch) = batch else { break };
            if batch.to != self.me {
                tracing::warn!(
                    from = batch.from,
                    to = batch.to,
                    "peer batch for another node refused"
                );
                return Err(tonic::Status::invalid_argument(format!(
                    "this is node {}, not node {}",
                    self.me, batch.to
                )));
            }
            let mut messages = Vec::with_capacity(batch.messages.len());
            for m in batch.messages {
                match Message::parse_from_bytes(&m.message) {
                    Ok(message) => messages.push(GroupMessage {
                        group: m.group,
                        message,
                    }),
                    Err(e) => {
                        tracing::warn!(
                            from = batch.from,
                            group = m.group,
                            "undecodable raft message dropped: {e}"
                        )
                    }
                }
            }
            let msg = DriverMsg::Peer {
                from: batch.from,
                messages,
            };
            if self.driver.tx.send(msg).await.is_err() {
                return Err(tonic::Status::unavailable("node is shutting down"));
            }
        }
        Ok(tonic::Response::new(proto::StreamAck {}))
    }
}
