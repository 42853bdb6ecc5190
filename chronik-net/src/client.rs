//! A Rust client for Chronik's client and admin APIs. It finds partition
//! and metadata leaders, follows NOT_LEADER hints, and retries what is
//! retriable with capped backoff until a deadline: the one retry loop of
//! every caller (applications, a joining node, the CLI, the simulator),
//! each with its own [`RetryPolicy`].

use crate::proto::{self, admin_client::AdminClient, chronik_client::ChronikClient};
use bytes::Bytes;
use chronik_core::{ErrorCode, NodeId};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tonic::transport::Channel;

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error that retrying will not fix (or
    /// the deadline passed while retrying a retriable one).
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    /// No node could be reached (no connection, or no answer at all).
    #[error("no node reachable ({last})")]
    Unreachable { last: String },
    /// Nodes answered, but none served the request before the deadline
    /// (no leader, a leader not ready...): the last answer says why.
    #[error("no node served the request in time ({last})")]
    Timeout { last: String },
    /// The request may or may not have taken effect (only returned when
    /// `RetryPolicy::retry_unknown_outcome` is off).
    #[error("outcome unknown: {reason}")]
    UnknownOutcome { reason: String },
    /// A TLS handshake failed over a certificate (the node's not signed by
    /// the client's CA, the client's refused by the node, no client
    /// certificate where one is required): not retried.
    #[error("TLS refused: {message}")]
    Tls { message: String },
}

impl ClientError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Server { code, .. } => *code,
            ClientError::Unreachable { .. } => ErrorCode::Unreachable,
            ClientError::Timeout { .. } => ErrorCode::Timeout,
            ClientError::UnknownOutcome { .. } => ErrorCode::OutcomeUnknown,
            ClientError::Tls { .. } => ErrorCode::Unauthenticated,
        }
    }

    fn server(e: proto::Error) -> ClientError {
        ClientError::Server {
            code: e.error_code(),
            message: e.message,
        }
    }
}

/// How a gRPC status (not an answer of the API) reads: the transport
/// failing or timing out means no answer, anything else is a server fault.
fn status_error(addr: &str, status: &tonic::Status) -> Result<String, ClientError> {
    if let Some(message) = crate::tls::refusal(status) {
        return Err(ClientError::Tls {
            message: format!("{addr}: {message}"),
        });
    }
    // A TLS port answers a plaintext HTTP/2 preface with a TLS alert,
    // which HTTP/2 reads as an oversized frame.
    if status.code() == tonic::Code::Internal && status.to_string().contains("FRAME_SIZE_ERROR") {
        return Err(ClientError::Tls {
            message: format!(
                "{addr}: the node does not speak plaintext (it requires TLS: give the client the cluster's CA, e.g. --ca)"
            ),
        });
    }
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Err(ClientError::Server {
            code: if status.code() == tonic::Code::Unauthenticated {
                ErrorCode::Unauthenticated
            } else {
                ErrorCode::PermissionDenied
            },
            message: format!("{addr}: {}", status.message()),
        }),
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => Ok(format!("{addr}: {status}")),
        _ => Err(ClientError::Server {
            code: ErrorCode::Internal,
            message: format!("{addr}: {status}"),
        }),
    }
}

/// Shortest time one attempt gets, even past the deadline (so the last
/// attempt is a real one).
const ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// Retry policy: retriable errors are retried until `deadline` passes.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub deadline: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Retry a produce whose outcome is unknown (a timeout, a connection
    /// lost mid-request). On by default: at-least-once, so a record may be
    /// written twice. Off: such a produce fails with `UnknownOutcome` and
    /// is never duplicated by the client.
    pub retry_unknown_outcome: bool,
    /// Codes retried although the server does not mark them retriable: a
    /// joining node waits out `MEMBERSHIP_CHANGE_IN_PROGRESS` and
    /// `QUORUM_AT_RISK`, where an operator wants to hear of them at once.
    pub also_retry: Vec<ErrorCode>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            retry_unknown_outcome: true,
            also_retry: Vec::new(),
        }
    }
}

/// What a successful fetch returns.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchResult {
    pub records: Vec<(u64, Bytes)>,
    pub high_watermark: u64,
}

/// An admin answer with its in-band error, as the retry loop takes it.
fn in_band<T>(error: Option<proto::Error>, answer: T) -> Result<T, proto::Error> {
    match error {
        Some(e) => Err(e),
        None => Ok(answer),
    }
}

/// Adds the caller's bearer token to every call.
#[derive(Clone, Default)]
pub struct Credentials(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// The client API's client, carrying [`Credentials`].
#[cfg(not(madsim))]
pub type ChronikConn =
    ChronikClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;
#[cfg(madsim)]
pub type ChronikConn = ChronikClient<Channel, Credentials>;
/// The admin API's client, carrying [`Credentials`].
#[cfg(not(madsim))]
pub type AdminConn =
    AdminClient<tonic::service::interceptor::InterceptedService<Channel, Credentials>>;
#[cfg(madsim)]
pub type AdminConn = AdminClient<Channel, Credentials>;

/// A connection to one node with the caller's credentials.
#[derive(Clone)]
pub struct Conn {
    channel: Channel,
    credentials: Credentials,
}

impl Conn {
    /// The client API (records may be large).
    fn chronik(self) -> ChronikConn {
        ChronikClient::with_interceptor(self.channel, self.credentials)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }

    fn admin(self) -> AdminConn {
        AdminClient::with_interceptor(self.channel, self.credentials)
    }
}

/// A client of a whole cluster.
pub struct Client {
    bootstrap: Vec<String>,
    retry: RetryPolicy,
    conns: Mutex<HashMap<String, Channel>>,
    /// Client address of each node, learned from metadata.
    nodes: Mutex<BTreeMap<NodeId, String>>,
    /// Last known leader per `(topic, partition)`, and of metadata.
    leaders: Mutex<HashMap<(String, u32), NodeId>>,
    /// Replicas per `(topic, partition)`, for follower reads.
    replicas: Mutex<HashMap<(String, u32), Vec<NodeId>>>,
    /// Rotates follower reads over a partition's followers.
    next_follower: std::sync::atomic::AtomicUsize,
    metadata_leader: Mutex<Option<NodeId>>,
    /// TLS to every node (`https`), with a client certificate if given.
    tls: Option<crate::ClientTls>,
    /// The bearer token sent with every call.
    credentials: Credentials,
}

enum Target {
    Metadata,
    Partition(String, u32),
    /// Any replica, followers first.
    Replica(String, u32),
}

impl Client {
    /// A client that starts from these `host:port` client addresses.
    pub fn new(bootstrap: Vec<String>) -> Client {
        Client::with_retry(bootstrap, RetryPolicy::default())
    }

    pub fn with_retry(bootstrap: Vec<String>, retry: RetryPolicy) -> Client {
        Client {
            bootstrap,
            retry,
            conns: Mutex::new(HashMap::new()),
            nodes: Mutex::new(BTreeMap::new()),
            leaders: Mutex::new(HashMap::new()),
            replicas: Mutex::new(HashMap::new()),
            next_follower: std::sync::atomic::AtomicUsize::new(0),
            metadata_leader: Mutex::new(None),
            tls: None,
            credentials: Credentials::default(),
        }
    }

    /// Sends `token` with every call (`authorization: Bearer <token>`),
    /// for clusters with `[auth]`.
    pub fn with_token(mut self, token: Option<&str>) -> Result<Client, ClientError> {
        self.credentials = match token {
            None => Credentials(None),
            Some(t) => {
                let value =
                    format!("Bearer {}", t.trim())
                        .parse()
                        .map_err(|_| ClientError::Server {
                            code: ErrorCode::InvalidRequest,
                            message: "a token must be printable ASCII".into(),
                        })?;
                Credentials(Some(value))
            }
        };
        Ok(self)
    }

    /// Connects over TLS (`Some`): the servers' certificates must chain to
    /// its CA and name the host connected to, and its certificate, if any,
    /// is this client's identity.
    pub fn with_tls(mut self, tls: Option<crate::ClientTls>) -> Client {
        self.tls = tls;
        self
    }

    /// A connection to `addr`: `Unreachable` when it cannot be made,
    /// `Tls` when a certificate was refused.
    async fn conn(&self, addr: &str) -> Result<Conn, ClientError> {
        let channel = self.channel(addr).await?;
        Ok(Conn {
            channel,
            credentials: self.credentials.clone(),
        })
    }

    async fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        if let Some(c) = self.conns.lock().get(addr) {
            return Ok(c.clone());
        }
        let c = crate::tls::endpoint(addr, self.tls.as_ref(), None)
            .map_err(|last| ClientError::Unreachable { last })?
            .connect()
            .await
            .map_err(|e| match crate::tls::refusal(&e) {
                Some(message) => ClientError::Tls {
                    message: format!("{addr}: {message}"),
                },
                None => ClientError::Unreachable {
                    last: format!("{addr}: {}", crate::tls::with_causes(&e)),
                },
            })?;
        self.conns.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Addresses to try, best guess first.
    fn candidates(&self, target: &Target) -> Vec<String> {
        let leader = match target {
            Target::Metadata => *self.metadata_leader.lock(),
            Target::Partition(t, p) | Target::Replica(t, p) => {
                self.leaders.lock().get(&(t.clone(), *p)).copied()
            }
        };
        let nodes = self.nodes.lock();
        let mut out = Vec::new();
        if let Target::Replica(t, p) = target {
            let mut followers: Vec<NodeId> = self
                .replicas
                .lock()
                .get(&(t.clone(), *p))
                .map(|r| r.iter().copied().filter(|n| Some(*n) != leader).collect())
                .unwrap_or_default();
            if !followers.is_empty() {
                let turn = self
                    .next_follower
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let n = followers.len();
                followers.rotate_left(turn % n);
            }
            out.extend(followers.iter().filter_map(|n| nodes.get(n).cloned()));
        }
        if let Some(a) = leader.and_then(|l| nodes.get(&l)) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        for a in nodes.values().chain(self.bootstrap.iter()) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    fn learn(&self, md: &proto::MetadataResponse) {
        let mut nodes = self.nodes.lock();
        for n in &md.nodes {
            nodes.insert(n.id, n.client_addr.clone());
        }
        let mut leaders = self.leaders.lock();
        let mut replicas = self.replicas.lock();
        for t in &md.topics {
            for p in &t.partitions {
                replicas.insert((t.name.clone(), p.partition), p.replicas.clone());
                let l = if p.leader != 0 {
                    p.leader
                } else {
                    p.preferred_leader
                };
                leaders.entry((t.name.clone(), p.partition)).or_insert(l);
            }
        }
    }

    fn note_leader(&self, target: &Target, leader: NodeId) {
        match target {
            Target::Metadata => *self.metadata_leader.lock() = Some(leader),
            Target::Partition(t, p) | Target::Replica(t, p) => {
                self.leaders.lock().insert((t.clone(), *p), leader);
            }
        }
    }

    /// Runs `call` against the best node for `target`, following leader
    /// hints and retrying retriable errors until the deadline.
    async fn with_retries<T, F, Fut>(
        &self,
        target: Target,
        idempotent: bool,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, proto::Error>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + self.retry.deadline;
        let mut backoff = self.retry.backoff_min;
        let mut last = String::from("no address to try");
        // Whether any node answered through the API: if none ever did, the
        // cluster is unreachable rather than slow.
        let mut answered = false;
        // The last retriable refusal that says more than "ask elsewhere"
        // (NOT_ENOUGH_REPLICAS, LEADER_NOT_AVAILABLE...): what the caller
        // gets if the deadline passes.
        let mut last_refusal: Option<proto::Error> = None;
        let mut hinted: Option<String> = None;
        // Nodes that answered SHUTTING_DOWN: asked last, and hints that
        // name them are not followed (their leadership is moving away).
        let mut stopping: Vec<String> = Vec::new();
        loop {
            let mut addrs = self.candidates(&target);
            if let Some(h) = hinted.take() {
                addrs.retain(|a| *a != h);
                addrs.insert(0, h);
            }
            addrs.sort_by_key(|a| stopping.contains(a));
            // An unknown topic may only be news that has not reached the
            // node asked: believe it once every node says so.
            let mut unknown: Option<proto::Error> = None;
            let mut other_outcome = false;
            for addr in addrs {
                // No attempt outlives the deadline: a node that accepts a
                // request and never answers (killed mid-request, stalled)
                // must not hang the caller.
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(ATTEMPT_TIMEOUT_MIN);
                let conn = match tokio::time::timeout(left, self.conn(&addr)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(ClientError::Unreachable { last: e })) => {
                        last = e;
                        continue;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        last = format!("{addr}: no connection within {left:?}");
                        continue;
                    }
                };
                let answer = match tokio::time::timeout(left, call(conn)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no answer within {left:?}"
                    ))),
                };
                let e = match answer {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => e,
                    Err(status) => {
                        self.conns.lock().remove(&addr);
                        last = status_error(&addr, &status)?;
                        if !idempotent && !self.retry.retry_unknown_outcome {
                            return Err(ClientError::UnknownOutcome { reason: last });
                        }
                        continue;
                    }
                };
                answered = true;
                let code = e.error_code();
                match code {
                    ErrorCode::NotLeader => {
                        other_outcome = true;
                        last = format!("{code}: {}", e.message);
                        if e.leader_hint != 0 {
                            self.note_leader(&target, e.leader_hint);
                            if self.nodes.lock().get(&e.leader_hint).is_none() {
                                let _ = self.refresh_metadata().await;
                            }
                            hinted = self
                                .nodes
                                .lock()
                                .get(&e.leader_hint)
                                .filter(|a| !stopping.contains(a))
                                .cloned();
                            if hinted.is_some() {
                                break;
                            }
                        }
                    }
                    // Only the metadata leader evaluates a metadata command
                    // (the others answer NOT_LEADER first): its verdict on
                    // a topic is final.
                    ErrorCode::UnknownTopicOrPartition if matches!(target, Target::Metadata) => {
                        return Err(ClientError::server(e))
                    }
                    ErrorCode::UnknownTopicOrPartition => unknown = Some(e),
                    ErrorCode::Timeout | ErrorCode::OutcomeUnknown
                        if !idempotent && !self.retry.retry_unknown_outcome =>
                    {
                        return Err(ClientError::UnknownOutcome {
                            reason: format!("{code}: {}", e.message),
                        })
                    }
                    ErrorCode::ShuttingDown => {
                        other_outcome = true;
                        last = format!("{addr}: {code}: {}", e.message);
                        if !stopping.contains(&addr) {
                            stopping.push(addr.clone());
                        }
                        // Its leaderships are moving to a peer within
                        // milliseconds: keep asking at the shortest pace.
                        backoff = self.retry.backoff_min;
                    }
                    _ if e.retriable || self.retry.also_retry.contains(&code) => {
                        other_outcome = true;
                        last = format!("{code}: {}", e.message);
                        last_refusal = Some(e);
                    }
                    _ => return Err(ClientError::server(e)),
                }
            }
            if let (Some(e), false) = (unknown, other_outcome) {
                return Err(ClientError::server(e));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(match last_refusal {
                    Some(e) => ClientError::server(e),
                    None if answered => ClientError::Timeout { last },
                    None => ClientError::Unreachable { last },
                });
            }
            if hinted.is_none() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.backoff_max);
            }
        }
    }

    /// Fetches cluster metadata from any node and caches addresses and
    /// leaders.
    pub async fn refresh_metadata(&self) -> Result<proto::MetadataResponse, ClientError> {
        let mut last = String::from("no address to try");
        let mut refused = None;
        let addrs: Vec<String> = {
            let nodes = self.nodes.lock();
            nodes
                .values()
                .cloned()
                .chain(self.bootstrap.iter().cloned())
                .collect()
        };
        // A node that accepts a connection and never answers (stalled,
        // killed mid-request) must not hang the caller: the whole refresh
        // is bounded by the retry deadline, split over the addresses.
        let per_attempt =
            (self.retry.deadline / addrs.len().max(1) as u32).max(ATTEMPT_TIMEOUT_MIN);
        for addr in addrs {
            let attempt = async {
                let mut c = self.conn(&addr).await?.chronik();
                c.metadata(proto::MetadataRequest { topics: vec![] })
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| {
                        self.conns.lock().remove(&addr);
                        match status_error(&addr, &s) {
                            Err(tls @ ClientError::Tls { .. }) => tls,
                            _ => ClientError::Unreachable {
                                last: format!("{addr}: {s}"),
                            },
                        }
                    })
            };
            match tokio::time::timeout(per_attempt, attempt).await {
                // Refused in band: a retriable refusal (a node shutting
                // down) sends us to the next node, any other is the answer.
                Ok(Ok(proto::MetadataResponse { error: Some(e), .. })) => {
                    if e.retriable {
                        last = format!("{addr}: {}: {}", e.error_code(), e.message);
                    } else {
                        refused = Some(ClientError::server(e));
                    }
                }
                Ok(Ok(r)) => {
                    self.learn(&r);
                    return Ok(r);
                }
                Ok(Err(ClientError::Unreachable { last: e })) => last = e,
                Ok(Err(e)) => refused = Some(e),
                Err(_) => {
                    self.conns.lock().remove(&addr);
                    last = format!("{addr}: no answer within {per_attempt:?}");
                }
            }
        }
        // No node answered: a certificate refusal says more than "down".
        Err(refused.unwrap_or(ClientError::Unreachable { last }))
    }

    /// Cluster metadata (refreshing the cache).
    pub async fn metadata(&self) -> Result<proto::MetadataResponse, ClientError> {
        self.refresh_metadata().await
    }

    /// Creates a topic (`min_insync_replicas` 0: the server default) with
    /// unclean leader election off.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        min_insync_replicas: u32,
    ) -> Result<proto::TopicInfo, ClientError> {
        self.create_topic_with(proto::CreateTopicRequest {
            name: name.into(),
            partitions,
            replication_factor,
            min_insync_replicas,
            unclean_leader_election: false,
        })
        .await
    }

    /// Creates a topic with every option of the request.
    pub async fn create_topic_with(
        &self,
        req: proto::CreateTopicRequest,
    ) -> Result<proto::TopicInfo, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| {
            let req = req.clone();
            async move {
                let mut c = ch.chronik();
                let r = c.create_topic(req).await?.into_inner();
                Ok(match r.error {
                    Some(e) => Err(e),
                    None => Ok(r.topic.unwrap_or_default()),
                })
            }
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = proto::DeleteTopicRequest { name: name.into() };
        self.with_retries(Target::Metadata, true, |ch| {
            let req = req.clone();
            async move {
                let mut c = ch.chronik();
                let r = c.delete_topic(req).await?.into_inner();
                Ok(match r.error {
                    Some(e) => Err(e),
                    None => Ok(()),
                })
            }
        })
        .await
    }

    /// Appends records to a partition; returns the base offset. A TIMEOUT
    /// after retries means the records may or may not have been appended.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Bytes>,
    ) -> Result<u64, ClientError> {
        if self.nodes.lock().is_empty() {
            let _ = self.refresh_metadata().await;
        }
        let req = proto::ProduceRequest {
            topic: topic.into(),
            partition,
            records,
            timeout_ms: 0,
        };
        self.with_retries(Target::Partition(topic.into(), partition), false, |ch| {
            let req = req.clone();
            async move {
                let mut c = ch.chronik();
                let r = c.produce(req).await?.into_inner();
                Ok(match r.error {
                    Some(e) => Err(e),
                    None => Ok(r.base_offset),
                })
            }
        })
        .await
    }

    /// Reads committed records from `offset` (a linearizable read on the
    /// partition leader).
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u64,
    ) -> Result<FetchResult, ClientError> {
        self.fetch_with(
            topic,
            partition,
            offset,
            max_bytes,
            proto::ReadConsistency::Leader,
        )
        .await
    }

    /// Reads committed records from `offset` as fresh as `consistency`
    /// asks: `Follower` and `FollowerStale` go to the partition's followers
    /// first (taking turns), then its leader.
    pub async fn fetch_with(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u64,
        consistency: proto::ReadConsistency,
    ) -> Result<FetchResult, ClientError> {
        if self.nodes.lock().is_empty() || self.replicas.lock().is_empty() {
            let _ = self.refresh_metadata().await;
        }
        let req = proto::FetchRequest {
            topic: topic.into(),
            partition,
            offset,
            max_bytes,
            consistency: consistency as i32,
        };
        let target = match consistency {
            proto::ReadConsistency::Leader => Target::Partition(topic.into(), partition),
            _ => Target::Replica(topic.into(), partition),
        };
        self.with_retries(target, true, |ch| {
            let req = req.clone();
            async move {
                let mut c = ch.chronik();
                let r = c.fetch(req).await?.into_inner();
                Ok(match r.error {
                    Some(e) => Err(e),
                    None => Ok(FetchResult {
                        records: r
                            .records
                            .into_iter()
                            .map(|rec| (rec.offset, rec.value))
                            .collect(),
                        high_watermark: r.high_watermark,
                    }),
                })
            }
        })
        .await
    }

    // ----- admin API ------------------------------------------------------

    /// Asks the metadata leader to add a node: it joins as a learner,
    /// catches up, then becomes a voter through joint consensus.
    pub async fn add_node(
        &self,
        req: proto::AddNodeRequest,
    ) -> Result<proto::MembershipResponse, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| {
            let req = req.clone();
            async move {
                let r = ch.admin().add_node(req).await?.into_inner();
                Ok(in_band(r.error.clone(), r))
            }
        })
        .await
    }

    /// Asks the metadata leader to remove node `id` (its replicas move
    /// away first). Returns once the change is accepted.
    pub async fn remove_node(&self, id: NodeId) -> Result<proto::MembershipResponse, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| async move {
            let r = ch
                .admin()
                .remove_node(proto::RemoveNodeRequest { id })
                .await?
                .into_inner();
            Ok(in_band(r.error.clone(), r))
        })
        .await
    }

    /// Plans a rebalance (PLAN, changes nothing), starts one (START), shows
    /// the latest run (STATUS) or stops starting its moves (CANCEL). START
    /// and CANCEL go to the metadata leader.
    pub async fn rebalance(
        &self,
        action: proto::rebalance_request::Action,
        max_moves: u32,
    ) -> Result<proto::RebalanceResponse, ClientError> {
        use proto::rebalance_request::Action;
        let idempotent = matches!(action, Action::Plan | Action::Status);
        self.with_retries(Target::Metadata, idempotent, |ch| async move {
            let r = ch
                .admin()
                .rebalance(proto::RebalanceRequest {
                    action: action as i32,
                    max_moves,
                })
                .await?
                .into_inner();
            Ok(in_band(r.error.clone(), r))
        })
        .await
    }

    /// Puts node `id` into maintenance (`on`) or takes it out: in
    /// maintenance it hands every leadership to in-sync peers and takes
    /// none back while a peer can lead. Idempotent.
    pub async fn maintenance(
        &self,
        id: NodeId,
        on: bool,
    ) -> Result<proto::MaintenanceResponse, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| async move {
            let r = ch
                .admin()
                .maintenance(proto::MaintenanceRequest { id, on })
                .await?
                .into_inner();
            Ok(in_band(r.error.clone(), r))
        })
        .await
    }

    /// Asks the metadata leader to send node `to` (every member when
    /// `None`) the metadata it misses now; returns the commit index it
    /// must reach to be up to date.
    pub async fn metadata_replicate(
        &self,
        to: Option<NodeId>,
    ) -> Result<proto::MetadataReplicateResponse, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| async move {
            let r = ch
                .admin()
                .metadata_replicate(proto::MetadataReplicateRequest {
                    to: to.unwrap_or(0),
                })
                .await?
                .into_inner();
            Ok(in_band(r.error.clone(), r))
        })
        .await
    }

    /// Whether stopping node `id` now keeps every group it hosts writable:
    /// the metadata leader's verdict (enough in-sync replicas elsewhere,
    /// among the nodes it hears from), and every other member answering
    /// itself with a leader known for each group it hosts. The metadata
    /// leader alone cannot tell a node restarted moments ago, still
    /// recovering, from one that never stopped; the node itself can.
    pub async fn restart_check(
        &self,
        id: NodeId,
    ) -> Result<proto::RestartCheckResponse, ClientError> {
        let mut r = self
            .with_retries(Target::Metadata, true, |ch| async move {
                let r = ch
                    .admin()
                    .restart_check(proto::RestartCheckRequest { id })
                    .await?
                    .into_inner();
                Ok(in_band(r.error.clone(), r))
            })
            .await?;
        let members = self.list_nodes().await?;
        for n in members.nodes.iter().filter(|n| n.id != id) {
            let status = self
                .ask_node(&n.client_addr, |mut a| async move {
                    a.node_status(proto::NodeStatusRequest {})
                        .await
                        .map(|r| r.into_inner())
                })
                .await;
            match status {
                Err(e) => r
                    .reasons
                    .push(format!("node {} does not answer: {e}", n.id)),
                Ok(s) => {
                    let leaderless: Vec<String> = s
                        .groups
                        .iter()
                        .filter(|g| g.leader == 0)
                        .map(|g| g.name.clone())
                        .collect();
                    if !leaderless.is_empty() {
                        r.reasons.push(format!(
                            "node {} knows no leader yet for {} (still starting?)",
                            n.id,
                            leaderless.join(", ")
                        ));
                    }
                }
            }
        }
        r.safe = r.reasons.is_empty();
        Ok(r)
    }

    /// The members and the change in flight, as the first node that
    /// answers sees them.
    pub async fn list_nodes(&self) -> Result<proto::ListNodesResponse, ClientError> {
        self.with_retries(Target::Metadata, true, |ch| async move {
            let r = ch
                .admin()
                .list_nodes(proto::ListNodesRequest {})
                .await?
                .into_inner();
            Ok(in_band(r.error.clone(), r))
        })
        .await
    }

    /// One admin call to the node at `addr` itself (its own status, its
    /// own view): no redirect and no retry, bounded by the deadline.
    pub async fn ask_node<T, F, Fut>(&self, addr: &str, call: F) -> Result<T, ClientError>
    where
        F: FnOnce(AdminConn) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let attempt = async {
            let ch = self.conn(addr).await?;
            call(ch.admin()).await.map_err(|status| {
                self.conns.lock().remove(addr);
                match status_error(addr, &status) {
                    Ok(last) => ClientError::Unreachable { last },
                    Err(e) => e,
                }
            })
        };
        match tokio::time::timeout(self.retry.deadline, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Unreachable {
                last: format!("{addr}: no answer within {:?}", self.retry.deadline),
            }),
        }
    }
}
