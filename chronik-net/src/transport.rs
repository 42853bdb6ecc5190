//! Peer transport: one long-lived gRPC stream per peer carries the batched
//! messages of every group. Senders reconnect with capped exponential
//! backoff; queues are bounded and drop when full (Raft retransmits).

use crate::disk::{Disk, DiskFile};
use crate::driver::{DriverHandle, DriverMsg};
use crate::partition_store::{group_dir, segment_file_name, Manifest};
use crate::proto::{self, raft_client::RaftClient};
use chronik_core::raft::eraftpb::Message;
use chronik_core::{GroupMessage, NodeId};
use protobuf::Message as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Batches buffered between the queue and the gRPC stream.
const STREAM_BUFFER: usize = 64;
/// How long a stream may stay full before it is replaced.
const STREAM_STALL_MAX: Duration = Duration::from_millis(1000);

/// Who may speak on the peer port, kept current by the driver from the
/// committed metadata.
#[derive(Debug, Default)]
pub(crate) struct PeerRoster {
    /// Removed nodes: told to stop.
    pub removed: std::collections::BTreeSet<NodeId>,
    /// Registered nodes and the initial cluster: with TLS on, the only ids
    /// whose certificates are accepted.
    pub members: std::collections::BTreeSet<NodeId>,
}

fn encode(
    me: NodeId,
    incarnation: u64,
    to: NodeId,
    messages: Vec<GroupMessage>,
) -> proto::PeerBatch {
    proto::PeerBatch {
        from: me,
        incarnation,
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
/// `wake` cuts a reconnect backoff short: the driver rings it when `to`
/// is heard from (a peer that restarted is back, and waiting out a backoff
/// of up to a second would lose its votes and appends meanwhile).
pub(crate) async fn peer_sender(
    (me, incarnation): (NodeId, u64),
    (to, addr): (NodeId, String),
    dialer: crate::tls::Dialer,
    mut rx: mpsc::Receiver<Vec<GroupMessage>>,
    driver: mpsc::Sender<crate::driver::DriverMsg>,
    wake: Arc<tokio::sync::Notify>,
) {
    let pause = |d: Duration| {
        let wake = wake.clone();
        async move {
            tokio::select! {
                biased;
                _ = wake.notified() => {}
                _ = tokio::time::sleep(d) => {}
            }
        }
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let connected = match dialer.peer(&addr, to) {
            Ok(endpoint) => endpoint
                .connect()
                .await
                .map_err(|e| crate::tls::with_causes(&e)),
            Err(e) => Err(e),
        };
        let mut client = match connected {
            Ok(c) => RaftClient::new(c),
            Err(e) => {
                tracing::debug!(to, %addr, "cannot reach peer: {e}");
                report_unreachable(&driver, to);
                // Drop what queued up meanwhile: it is stale by the time
                // the peer is back, and Raft resends what matters.
                while rx.try_recv().is_ok() {}
                pause(backoff).await;
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
        let mut full_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                res = &mut call => {
                    match res.map(|r| r.into_inner().refusal) {
                        Ok(Some(r)) => match r.reason() {
                            proto::peer_refusal::Reason::Removed => {
                                let _ = driver
                                    .send(crate::driver::DriverMsg::RemovedByPeer { by: to })
                                    .await;
                                return;
                            }
                            proto::peer_refusal::Reason::WrongNode => tracing::error!(
                                to,
                                %addr,
                                answered_by = r.node,
                                "the node at this address is not the one this node meant: {}",
                                r.message
                            ),
                            proto::peer_refusal::Reason::IdentityMismatch
                            | proto::peer_refusal::Reason::NotAMember => {
                                // A certificate or membership problem:
                                // retrying soon will not fix it.
                                tracing::error!(to, %addr, "peer refused this node: {}", r.message);
                                backoff = BACKOFF_MAX;
                            }
                            proto::peer_refusal::Reason::Unspecified => {
                                tracing::warn!(to, "peer refused the stream: {}", r.message)
                            }
                        },
                        Ok(None) => {}
                        Err(e) => tracing::debug!(to, "peer stream ended: {e}"),
                    }
                    report_unreachable(&driver, to);
                    break;
                }
                batch = rx.recv() => {
                    let Some(messages) = batch else { return };
                    match stx.try_send(encode(me, incarnation, to, messages)) {
                        Ok(()) => full_since = None,
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // Dropped (Raft resends). A stream that stays
                            // full is stuck (a peer that died without
                            // closing it): start a new one.
                            let since = *full_since.get_or_insert_with(tokio::time::Instant::now);
                            if since.elapsed() > STREAM_STALL_MAX {
                                tracing::debug!(to, "peer stream stalled; reconnecting");
                                report_unreachable(&driver, to);
                                break;
                            }
                        }
                    }
                }
            }
        }
        pause(backoff).await;
    }
}

/// Tells the driver that what was queued for `to` is lost (best effort: a
/// full driver queue drops the report, the next failure sends another).
fn report_unreachable(driver: &mpsc::Sender<crate::driver::DriverMsg>, to: NodeId) {
    let _ = driver.try_send(crate::driver::DriverMsg::PeerUnreachable { peer: to });
}

/// Ends a peer stream with a typed refusal.
fn refuse(
    reason: proto::peer_refusal::Reason,
    node: NodeId,
    message: String,
) -> Result<tonic::Response<proto::StreamAck>, tonic::Status> {
    Ok(tonic::Response::new(proto::StreamAck {
        refusal: Some(proto::PeerRefusal {
            reason: reason as i32,
            node,
            message,
        }),
    }))
}

/// The receiving side: decodes batches and hands them to the driver.
pub(crate) struct RaftService {
    pub me: NodeId,
    /// Removed and member node ids, kept current by the driver.
    pub roster: Arc<parking_lot::RwLock<PeerRoster>>,
    pub driver: DriverHandle,
    pub segments: SegmentFetch,
    /// Ends open streams on shutdown: graceful server shutdown waits for
    /// them, and a peer's stream never ends by itself.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// TLS is on: every peer connection presented a certificate signed by
    /// the CA, and a peer may speak only for the member node its
    /// certificate names.
    pub authenticated: bool,
    pub metrics: crate::metrics::Metrics,
}

/// A peer's certificates (leaf first), as the TLS handshake took them.
#[cfg(not(madsim))]
type PeerCerts = Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>;
#[cfg(madsim)]
type PeerCerts = Option<()>;

fn peer_certs<T>(request: &tonic::Request<T>) -> PeerCerts {
    #[cfg(not(madsim))]
    return request.peer_certs();
    #[cfg(madsim)]
    {
        let _ = request;
        None
    }
}

impl RaftService {
    /// With TLS on, whether the connection's certificate lets it speak for
    /// node `from`: it must name `from`, a member of the cluster. The
    /// refusal says why, and is counted.
    fn admit(
        &self,
        certs: &PeerCerts,
        from: NodeId,
    ) -> Result<(), (proto::peer_refusal::Reason, String)> {
        if !self.authenticated {
            return Ok(());
        }
        use proto::peer_refusal::Reason;
        #[cfg(not(madsim))]
        let named = certs
            .as_ref()
            .and_then(|c| c.first())
            .is_some_and(|leaf| crate::tls::cert_names_node(leaf, from));
        #[cfg(madsim)]
        let named = certs.is_some();
        let refusal = if !named {
            Some((
                Reason::IdentityMismatch,
                "peer_identity_mismatch",
                format!(
                    "the peer's certificate does not name node {from} ({}): a node speaks only for the id its certificate names",
                    crate::tls::node_server_name(from)
                ),
            ))
        } else if !self.roster.read().members.contains(&from) {
            Some((
                Reason::NotAMember,
                "peer_not_a_member",
                format!("node {from} is not a member of this cluster"),
            ))
        } else {
            None
        };
        match refusal {
            None => Ok(()),
            Some((reason, label, message)) => {
                tracing::warn!(from, "peer refused: {message}");
                self.metrics
                    .security_refusals
                    .with_label_values(&["peer", label])
                    .inc();
                Err((reason, message))
            }
        }
    }

    /// With TLS on, refuses a call whose certificate names no member
    /// node (pings and segment fetches come from nodes only).
    fn admit_any_member(&self, certs: &PeerCerts) -> Result<(), tonic::Status> {
        if !self.authenticated {
            return Ok(());
        }
        let members: Vec<NodeId> = self.roster.read().members.iter().copied().collect();
        #[cfg(not(madsim))]
        let named = certs.as_ref().and_then(|c| c.first()).is_some_and(|leaf| {
            members
                .iter()
                .any(|id| crate::tls::cert_names_node(leaf, *id))
        });
        #[cfg(madsim)]
        let named = certs.is_some() && !members.is_empty();
        if named {
            return Ok(());
        }
        self.metrics
            .security_refusals
            .with_label_values(&["peer", "peer_not_a_member"])
            .inc();
        Err(tonic::Status::permission_denied(
            "the peer port serves member nodes only: this certificate names none",
        ))
    }
}

#[tonic::async_trait]
impl proto::raft_server::Raft for RaftService {
    async fn ping(
        &self,
        request: tonic::Request<proto::PingRequest>,
    ) -> Result<tonic::Response<proto::PingResponse>, tonic::Status> {
        self.admit_any_member(&peer_certs(&request))?;
        Ok(tonic::Response::new(proto::PingResponse {
            node_id: self.me,
        }))
    }

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<proto::PeerBatch>>,
    ) -> Result<tonic::Response<proto::StreamAck>, tonic::Status> {
        let certs = peer_certs(&request);
        let mut admitted = None;
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        loop {
            let batch = tokio::select! {
                biased;
                _ = shutdown.changed() => None,
                m = stream.message() => m?,
            };
            let Some(batch) = batch else { break };
            if self.roster.read().removed.contains(&batch.from) {
                return refuse(
                    proto::peer_refusal::Reason::Removed,
                    batch.from,
                    format!("node {} was removed from the cluster", batch.from),
                );
            }
            if batch.to != self.me {
                tracing::warn!(
                    from = batch.from,
                    to = batch.to,
                    "peer batch for another node refused"
                );
                return refuse(
                    proto::peer_refusal::Reason::WrongNode,
                    self.me,
                    format!("this is node {}, not node {}", self.me, batch.to),
                );
            }
            if admitted != Some(batch.from) {
                if let Err((reason, message)) = self.admit(&certs, batch.from) {
                    return refuse(reason, batch.from, message);
                }
                admitted = Some(batch.from);
            }
            let (from, incarnation) = (batch.from, batch.incarnation);
            let messages = decode_messages(batch);
            // Partition snapshots name segment files the follower must fetch
            // first; everything else goes straight to the engine.
            let (snapshots, messages): (Vec<GroupMessage>, Vec<GroupMessage>) =
                messages.into_iter().partition(|m| {
                    m.group != chronik_core::METADATA_GROUP
                        && m.message.get_msg_type()
                            == chronik_core::raft::eraftpb::MessageType::MsgSnapshot
                });
            for message in snapshots {
                let msg = DriverMsg::SnapshotArrived { from, message };
                if self.driver.tx.send(msg).await.is_err() {
                    return Err(tonic::Status::unavailable("node is shutting down"));
                }
            }
            let msg = DriverMsg::Peer {
                from,
                incarnation,
                messages,
            };
            if self.driver.tx.send(msg).await.is_err() {
                return Err(tonic::Status::unavailable("node is shutting down"));
            }
        }
        Ok(tonic::Response::new(proto::StreamAck { refusal: None }))
    }

    type FetchSegmentsStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<proto::SegmentChunk, tonic::Status>> + Send + 'static,
        >,
    >;

    async fn fetch_segments(
        &self,
        request: tonic::Request<proto::FetchSegmentsRequest>,
    ) -> Result<tonic::Response<Self::FetchSegmentsStream>, tonic::Status> {
        self.admit_any_member(&peer_certs(&request))?;
        let r = request.into_inner();
        let manifest = Manifest::decode(&r.manifest).map_err(tonic::Status::invalid_argument)?;
        let dir = group_dir(&self.segments.partitions_dir, r.group);
        let disk = self.segments.disk.clone();
        // (segment index, position): read lazily, one chunk at a time, so
        // serving a large partition needs no more memory than a chunk.
        let state = (manifest.segments, 0usize, 0u64, disk, dir);
        let stream =
            futures::stream::unfold(state, |(segs, mut i, mut pos, disk, dir)| async move {
                loop {
                    let seg = segs.get(i)?;
                    if pos >= seg.size {
                        i += 1;
                        pos = 0;
                        continue;
                    }
                    let name = segment_file_name(seg.base_offset);
                    let path = dir.join(&name);
                    if pos == 0 && disk.file_len(&path).is_err() {
                        // Deleted by retention: the follower starts later too.
                        i += 1;
                        continue;
                    }
                    let len = ((seg.size - pos) as usize).min(SEGMENT_CHUNK_BYTES);
                    let item = match disk.read_range(&path, pos, len) {
                        Ok(data) if data.len() == len => Ok(proto::SegmentChunk {
                            file: name,
                            offset: pos,
                            data: data.into(),
                        }),
                        Ok(_) => Err(tonic::Status::unavailable(format!(
                            "{name} shrank while streaming"
                        ))),
                        Err(e) => Err(tonic::Status::unavailable(format!("{name}: {e}"))),
                    };
                    pos += len as u64;
                    let stop = item.is_err();
                    return Some((
                        item,
                        (if stop { Vec::new() } else { segs }, i, pos, disk, dir),
                    ));
                }
            });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// A batch's Raft messages; an undecodable one is dropped (Raft resends)
/// and logged.
pub(crate) fn decode_messages(batch: proto::PeerBatch) -> Vec<GroupMessage> {
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
    messages
}

/// Bytes per streamed segment chunk.
const SEGMENT_CHUNK_BYTES: usize = 1024 * 1024;

/// Fetches the segments a partition snapshot names from the peer that sent
/// it, into the partition's `incoming/` directory.
#[derive(Clone)]
pub(crate) struct SegmentFetch {
    pub disk: Arc<dyn Disk>,
    pub partitions_dir: PathBuf,
    /// This node and its observer, which may crash it mid-stream
    /// (simulation).
    pub crash: Option<(chronik_core::NodeId, Arc<dyn crate::EngineObserver>)>,
    /// Shared by every fetch of this node (`catch_up_bytes_per_sec`).
    pub throttle: Option<Arc<crate::throttle::Throttle>>,
    /// How this node connects to peers (TLS or not).
    pub dialer: crate::tls::Dialer,
}

impl SegmentFetch {
    /// Fetches from node `from` at `addr`; returns the bytes received.
    pub async fn fetch(
        &self,
        (from, addr): (NodeId, &str),
        message: &GroupMessage,
    ) -> Result<u64, String> {
        let data = &message.message.get_snapshot().data;
        let manifest = Manifest::decode(data)?;
        let wanted: Vec<String> = manifest
            .segments
            .iter()
            .map(|s| segment_file_name(s.base_offset))
            .collect();
        let incoming = group_dir(&self.partitions_dir, message.group).join("incoming");
        self.disk
            .create_dir_all(&incoming)
            .map_err(|e| format!("{}: {e}", incoming.display()))?;
        let channel = self
            .dialer
            .peer(addr, from)?
            .connect()
            .await
            .map_err(|e| format!("{addr}: {}", crate::tls::with_causes(&e)))?;
        let mut client =
            RaftClient::new(channel).max_decoding_message_size(4 * SEGMENT_CHUNK_BYTES);
        let mut stream = client
            .fetch_segments(proto::FetchSegmentsRequest {
                group: message.group,
                manifest: data.clone(),
            })
            .await
            .map_err(|e| format!("{addr}: {e}"))?
            .into_inner();
        let mut open: Option<(String, u64, Box<dyn DiskFile>)> = None;
        let mut received = 0u64;
        while let Some(chunk) = stream.message().await.map_err(|e| format!("{addr}: {e}"))? {
            // Only files the manifest names, never a path from the wire.
            if !wanted.contains(&chunk.file) {
                return Err(format!("peer sent unexpected file {:?}", chunk.file));
            }
            let same = open.as_ref().is_some_and(|(f, _, _)| *f == chunk.file);
            if !same {
                if let Some((_, _, mut f)) = open.take() {
                    f.sync().map_err(|e| e.to_string())?;
                }
                if chunk.offset != 0 {
                    return Err(format!("{} starts at byte {}", chunk.file, chunk.offset));
                }
                let path = incoming.join(&chunk.file);
                if self.disk.file_len(&path).is_ok() {
                    self.disk.remove(&path).map_err(|e| e.to_string())?;
                }
                let f = self.disk.open_append(&path).map_err(|e| e.to_string())?;
                open = Some((chunk.file.clone(), 0, f));
            }
            let (_, written, f) = open.as_mut().expect("opened above");
            if chunk.offset != *written {
                return Err(format!(
                    "{} chunk at byte {} after {written}",
                    chunk.file, chunk.offset
                ));
            }
            if let Some(t) = &self.throttle {
                t.take(chunk.data.len() as u64).await;
            }
            f.write_all(&chunk.data).map_err(|e| e.to_string())?;
            *written += chunk.data.len() as u64;
            received += chunk.data.len() as u64;
            if self.crash.as_ref().is_some_and(|(node, o)| {
                o.crash_here(*node, crate::observer::CrashPoint::MidSegmentStream)
            }) {
                // Stopped dead mid-stream until the harness kills the node.
                return std::future::pending().await;
            }
        }
        if let Some((_, _, mut f)) = open.take() {
            f.sync().map_err(|e| e.to_string())?;
        }
        self.disk.sync_dir(&incoming).map_err(|e| e.to_string())?;
        // Every segment the manifest names must now be here in full, staged
        // or already local: a sender that lost the group mid-stream (its
        // topic deleted) ends the stream early, and a snapshot without its
        // segments must not reach the engine (found by a simulation run that
        // deleted topics under faults: the install panicked).
        let local = group_dir(&self.partitions_dir, message.group);
        for sm in &manifest.segments {
            let name = segment_file_name(sm.base_offset);
            let staged = self.disk.file_len(&incoming.join(&name)).unwrap_or(0);
            let here = self.disk.file_len(&local.join(&name)).unwrap_or(0);
            if staged < sm.size && here < sm.size {
                return Err(format!(
                    "segment {name} of group {} arrived with {staged} of its {} bytes",
                    message.group, sm.size
                ));
            }
        }
        Ok(received)
    }
}
