//! The client and admin gRPC services: translate requests into engine
//! commands, wait for the replies (bounded by a timeout), translate back.

use crate::auth::Permission;
use crate::convert;
use crate::driver::{DriverGone, DriverHandle, Inspection};
use crate::gate::RequestGate;
use crate::metrics::requests::{code_label, status_label, InBandError, Op};
use crate::partition_store::{DiskLog, Fetch};
use crate::proto;
use chronik_core::membership::MembershipChange;
use chronik_core::{
    Command, ErrorCode, MetadataCommand, MetadataResponse, PartitionId, ReadConsistency,
    RecordCommand, RecordQuery, Response, Role, METADATA_GROUP,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response as GrpcResponse, Status};

/// Largest fetch a client may ask for in one call.
const FETCH_BYTES_MAX: u64 = 64 * 1024 * 1024;
const FETCH_BYTES_DEFAULT: u64 = 1024 * 1024;
const TIMEOUT_MAX_MS: u64 = 60_000;

#[derive(Clone)]
pub(crate) struct Services {
    pub driver: DriverHandle,
    pub request_timeout: Duration,
    pub rebalance: chronik_core::rebalance::RebalanceConfig,
    /// Closed by a graceful shutdown: requests that change or read cluster
    /// data are refused from then on. Read-only admin calls (status, node
    /// and ISR listings, restart checks) stay open until the servers stop,
    /// so operators can watch a node drain.
    pub gate: Arc<RequestGate>,
    pub metrics: crate::metrics::Metrics,
    /// When the node started (uptime in NodeStatus).
    pub started: tokio::time::Instant,
    /// How this node connects to peers (`ping-node`).
    pub dialer: crate::tls::Dialer,
    /// `[auth]`: who may call what; `None` lets anyone do anything.
    pub auth: Option<Arc<crate::auth::AuthState>>,
    /// Calls in flight per client address (`client_in_flight_max`).
    pub in_flight: Arc<crate::listen::Limiter>,
    /// Each client certificate seen: when it was checked, and whom it
    /// names or why it is refused (checking one per call would cost more
    /// than the call). Unused in simulation (no TLS).
    #[cfg_attr(madsim, allow(dead_code))]
    pub cert_names: CertMemory,
    /// TLS on the client port: client certificates are checked per call.
    #[cfg(not(madsim))]
    pub tls: Option<Arc<crate::tls::TlsState>>,
}

/// Client certificates remembered by [`Services::cert_names`]: past this,
/// the memory starts over.
#[cfg(not(madsim))]
const CERT_NAMES_MAX: usize = 4096;
/// How long a certificate's check is remembered (it may expire, or the CA
/// be rotated, meanwhile).
#[cfg(not(madsim))]
const CERT_RECHECK: Duration = Duration::from_secs(60);

pub(crate) type CertMemory = Arc<
    parking_lot::Mutex<
        HashMap<Vec<u8>, (tokio::time::Instant, Result<crate::auth::CertName, String>)>,
    >,
>;

/// Responses that carry an in-band error: what a refused request gets.
trait Refusable: Default {
    fn refused(error: proto::Error) -> Self;
}

/// Answers with an in-band error: they can be refused, and their
/// metrics are counted by that error's code.
macro_rules! refusable {
    ($($t:ty),* $(,)?) => {
        $(#[allow(clippy::needless_update)] // some answers carry only the error
        impl Refusable for $t {
            fn refused(error: proto::Error) -> Self {
                Self { error: Some(error), ..Default::default() }
            }
        }
        impl InBandError for $t {
            fn in_band_error(&self) -> Option<&proto::Error> {
                self.error.as_ref()
            }
        })*
    };
}

refusable!(
    proto::MetadataReplicateResponse,
    proto::PartitionInfoResponse,
    proto::PingNodeResponse,
    proto::CreateTopicResponse,
    proto::DeleteTopicResponse,
    proto::MetadataResponse,
    proto::ProduceResponse,
    proto::FetchResponse,
    proto::MembershipResponse,
    proto::RebalanceResponse,
    proto::MaintenanceResponse,
    proto::ListNodesResponse,
    proto::IsrStatusResponse,
    proto::RestartCheckResponse,
);

/// Admits a request through the gate, or answers it `SHUTTING_DOWN`
/// (retriable: nothing happened, another node may take it).
macro_rules! admit {
    ($self:ident, $resp:ty) => {
        match $self.gate.enter() {
            Some(admitted) => admitted,
            None => {
                $self.metrics.requests_refused_draining.inc();
                return Ok(GrpcResponse::new(<$resp as Refusable>::refused(
                    convert::local_error(
                        ErrorCode::ShuttingDown,
                        "the node is shutting down; ask another node",
                        true,
                    ),
                )));
            }
        }
    };
}

/// Identifies the caller and checks it may `need` (`None`: any
/// authenticated caller), or answers the refusal in band.
/// Also takes one of the caller's in-flight slots (`client_in_flight_max`),
/// held until the handler's end: `(caller, slot)`.
macro_rules! authorize {
    ($self:ident, $request:ident, $need:expr, $resp:ty) => {
        match $self.authorize(&$request, $need) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                return Ok(GrpcResponse::new(<$resp as Refusable>::refused(
                    refusal_error(refusal),
                )))
            }
        }
    };
}

/// The same for answers without an in-band error: a gRPC status.
macro_rules! authorize_status {
    ($self:ident, $request:ident, $need:expr) => {
        match $self.authorize(&$request, $need) {
            Ok(admitted) => admitted,
            Err(CallRefusal::Auth(crate::auth::Refusal::Unauthenticated(m))) => {
                return Err(Status::unauthenticated(m))
            }
            Err(CallRefusal::Auth(crate::auth::Refusal::PermissionDenied(m))) => {
                return Err(Status::permission_denied(m))
            }
            Err(CallRefusal::Busy(m)) => return Err(Status::unavailable(m)),
        }
    };
}

/// Why a call was not let in.
enum CallRefusal {
    Auth(crate::auth::Refusal),
    /// The caller's address has `client_in_flight_max` calls in flight.
    Busy(String),
}

fn refusal_error(r: CallRefusal) -> proto::Error {
    let (code, message, retriable) = match r {
        CallRefusal::Auth(crate::auth::Refusal::Unauthenticated(m)) => {
            (ErrorCode::Unauthenticated, m, false)
        }
        CallRefusal::Auth(crate::auth::Refusal::PermissionDenied(m)) => {
            (ErrorCode::PermissionDenied, m, false)
        }
        CallRefusal::Busy(m) => (ErrorCode::Busy, m, true),
    };
    convert::local_error(code, message, retriable)
}

type Outcome = Result<Response<DiskLog>, proto::Error>;

impl Services {
    /// Who made the call and whether it may `need` (with `[auth]`; anyone
    /// may do anything without). Refusals are counted.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        need: Option<crate::auth::Permission<'_>>,
    ) -> Result<(crate::auth::Caller, Option<crate::listen::Slot>), CallRefusal> {
        let caller = self.identify(request, need).map_err(CallRefusal::Auth)?;
        let Some(ip) = request.remote_addr().map(|a| a.ip()) else {
            return Ok((caller, None));
        };
        match self.in_flight.take(ip) {
            Some(slot) => Ok((caller, Some(slot))),
            None => {
                self.metrics
                    .security_refusals
                    .with_label_values(&["client", "too_many_calls_in_flight"])
                    .inc();
                Err(CallRefusal::Busy(format!(
                    "{ip} has {} calls in flight on this node (client_in_flight_max); retry when some finish",
                    self.in_flight.max()
                )))
            }
        }
    }

    fn identify<T>(
        &self,
        request: &Request<T>,
        need: Option<crate::auth::Permission<'_>>,
    ) -> Result<crate::auth::Caller, crate::auth::Refusal> {
        use crate::auth::{self, Caller, Credentials};
        let refused = |reason: &'static str| {
            self.metrics
                .security_refusals
                .with_label_values(&["client", reason])
                .inc();
        };
        // A certificate is checked whether or not `[auth]` is on: a
        // refused one refuses the call.
        let cert_name = self
            .client_cert(request)
            .inspect_err(|(reason, _)| refused(reason));
        let cert_name = cert_name.map_err(|(_, r)| r)?;
        let Some(state) = &self.auth else {
            return Ok(Caller::Anyone);
        };
        // A header that is not ASCII is present but unreadable: refused,
        // never passed over for the certificate.
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        let credentials = Credentials {
            authorization,
            cert_name,
        };
        let result = auth::identify(&state.current(), &credentials).and_then(|caller| match need {
            Some(n) if !caller.allows(n) => Err(auth::deny(&caller, n)),
            _ => Ok(caller),
        });
        match &result {
            Err(auth::Refusal::Unauthenticated(_)) => refused("unauthenticated"),
            Err(auth::Refusal::PermissionDenied(_)) => refused("permission_denied"),
            Ok(_) => {}
        }
        result
    }

    /// Who the call's client certificate names, if it came with one that
    /// the CA signed, valid now; the refusal (with its metric reason)
    /// otherwise, or when the node requires one and none came.
    #[allow(clippy::type_complexity)]
    fn client_cert<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<crate::auth::CertName>, (&'static str, crate::auth::Refusal)> {
        #[cfg(not(madsim))]
        {
            use crate::auth::Refusal;
            let Some(tls) = &self.tls else {
                return Ok(None);
            };
            let certs = request.peer_certs().filter(|c| !c.is_empty());
            let Some(chain) = certs else {
                if tls.current().require_client_cert {
                    return Err((
                        "no_client_certificate",
                        Refusal::Unauthenticated(
                            "this node requires a client certificate (require_client_cert)".into(),
                        ),
                    ));
                }
                return Ok(None);
            };
            let leaf = chain[0].as_ref();
            let now = tokio::time::Instant::now();
            let cached = self
                .cert_names
                .lock()
                .get(leaf)
                .filter(|(at, _)| now.duration_since(*at) < CERT_RECHECK)
                .map(|(_, r)| r.clone());
            let checked = match cached {
                Some(r) => r,
                None => {
                    let r = tls
                        .current()
                        .check_client_cert(&chain)
                        .map(|()| crate::auth::cert_name(leaf));
                    let mut names = self.cert_names.lock();
                    if names.len() >= CERT_NAMES_MAX {
                        names.clear();
                    }
                    names.insert(leaf.to_vec(), (now, r.clone()));
                    r
                }
            };
            checked.map(Some).map_err(|reason| {
                let label = if reason.contains("expired") {
                    "certificate_expired"
                } else {
                    "certificate_refused"
                };
                (
                    label,
                    Refusal::Unauthenticated(format!("client certificate refused: {reason}")),
                )
            })
        }
        #[cfg(madsim)]
        {
            let _ = request;
            Ok(None)
        }
    }

    /// Runs one call's handler and counts it by method and outcome code.
    async fn observe<T: InBandError>(
        &self,
        method: &'static str,
        handler: impl std::future::Future<Output = Result<GrpcResponse<T>, Status>>,
    ) -> Result<GrpcResponse<T>, Status> {
        let started = tokio::time::Instant::now();
        let result = handler.await;
        let code = match &result {
            Ok(r) => code_label(r.get_ref().in_band_error()),
            Err(status) => status_label(status),
        };
        self.metrics
            .observe_call(method, code, started.elapsed().as_secs_f64());
        result
    }

    async fn run(&self, command: Command<DiskLog>, timeout: Duration) -> Outcome {
        let op = Op::of(&command);
        let started = tokio::time::Instant::now();
        let outcome = self.run_unobserved(command, timeout).await;
        self.metrics
            .observe_command(&op, started.elapsed().as_secs_f64(), &outcome);
        outcome
    }

    async fn run_unobserved(&self, command: Command<DiskLog>, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.driver.command(command)).await {
            Err(_) => Err(convert::local_error(
                ErrorCode::Timeout,
                format!(
                    "no answer within {} ms; the request may still take effect",
                    timeout.as_millis()
                ),
                true,
            )),
            // The node stopped before it took the request: nothing happened,
            // another node may take it.
            Ok(Err(DriverGone { delivered: false })) => Err(convert::local_error(
                ErrorCode::ShuttingDown,
                "the node is stopping",
                true,
            )),
            // It stopped with the request in hand: a produce may already be
            // in the log (found by simulation seed 206, where such a produce
            // was reported as refused and then read).
            Ok(Err(DriverGone { delivered: true })) => Err(convert::local_error(
                ErrorCode::OutcomeUnknown,
                "the node stopped while handling the request; it may still take effect",
                true,
            )),
            Ok(Ok(Err(e))) => Err(convert::error(&e)),
            Ok(Ok(Ok(r))) => Ok(r),
        }
    }

    async fn inspect(&self) -> Result<Inspection, Status> {
        self.driver
            .inspect()
            .await
            .map_err(|_| Status::unavailable("the node is stopping"))
    }

    fn timeout(&self, ms: u32) -> Duration {
        if ms == 0 {
            self.request_timeout
        } else {
            Duration::from_millis(u64::from(ms).min(TIMEOUT_MAX_MS))
        }
    }
}

fn unexpected(r: Response<DiskLog>) -> proto::Error {
    convert::local_error(
        ErrorCode::Internal,
        format!("unexpected engine response {r:?}"),
        false,
    )
}

#[tonic::async_trait]
impl proto::chronik_server::Chronik for Services {
    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<GrpcResponse<proto::CreateTopicResponse>, Status> {
        self.observe("CreateTopic", async move {
            let _admitted = admit!(self, proto::CreateTopicResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::CreateTopicResponse
            );
            let cmd = Command::Metadata(create_topic_command(request.into_inner()));
            let resp = match self.run(cmd, self.request_timeout).await {
                Ok(Response::Metadata(MetadataResponse::TopicCreated { topic })) => {
                    proto::CreateTopicResponse {
                        error: None,
                        topic: Some(convert::topic(&topic, |_| None)),
                    }
                }
                Ok(other) => proto::CreateTopicResponse {
                    error: Some(unexpected(other)),
                    topic: None,
                },
                Err(e) => proto::CreateTopicResponse {
                    error: Some(e),
                    topic: None,
                },
            };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<GrpcResponse<proto::DeleteTopicResponse>, Status> {
        self.observe("DeleteTopic", async move {
            let _admitted = admit!(self, proto::DeleteTopicResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::DeleteTopicResponse
            );
            let cmd = Command::Metadata(MetadataCommand::DeleteTopic {
                name: request.into_inner().name,
            });
            let error = match self.run(cmd, self.request_timeout).await {
                Ok(Response::Metadata(MetadataResponse::TopicDeleted { .. })) => None,
                Ok(other) => Some(unexpected(other)),
                Err(e) => Some(e),
            };
            Ok(GrpcResponse::new(proto::DeleteTopicResponse { error }))
        })
        .await
    }

    async fn metadata(
        &self,
        request: Request<proto::MetadataRequest>,
    ) -> Result<GrpcResponse<proto::MetadataResponse>, Status> {
        self.observe("Metadata", async move {
            let _admitted = admit!(self, proto::MetadataResponse);
            let (caller, _slot) = authorize!(self, request, None, proto::MetadataResponse);
            let r = request.into_inner();
            // Only the topics the caller may describe, write or read.
            if let Some(t) = r.topics.iter().find(|t| !caller.sees_topic(t)) {
                let refusal = CallRefusal::Auth(crate::auth::Refusal::PermissionDenied(format!(
                    "{} may not describe topic {t:?} (needs describe, or write or read on it)",
                    caller.name()
                )));
                return Ok(GrpcResponse::new(proto::MetadataResponse::refused(
                    refusal_error(refusal),
                )));
            }
            let ins = self.inspect().await?;
            let resp = match convert::metadata(&ins.metadata, &r.topics, |g| ins.leader_of(g)) {
                Ok((nodes, mut topics)) => {
                    topics.retain(|t| caller.sees_topic(&t.name));
                    proto::MetadataResponse {
                        error: None,
                        nodes,
                        topics,
                        answered_by: ins.node_id,
                    }
                }
                Err(e) => proto::MetadataResponse {
                    error: Some(convert::error(&e)),
                    nodes: vec![],
                    topics: vec![],
                    answered_by: ins.node_id,
                },
            };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }

    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<GrpcResponse<proto::ProduceResponse>, Status> {
        self.observe("Produce", async move {
            let _admitted = admit!(self, proto::ProduceResponse);
            let topic = request.get_ref().topic.clone();
            let _call = authorize!(
                self,
                request,
                Some(Permission::Write(&topic)),
                proto::ProduceResponse
            );
            let r = request.into_inner();
            let timeout = self.timeout(r.timeout_ms);
            let (partition, command) = produce_command(r, wall_clock_ms());
            let cmd = Command::Propose { partition, command };
            let resp = match self.run(cmd, timeout).await {
                Ok(Response::Applied(a)) => proto::ProduceResponse {
                    error: None,
                    base_offset: a.base_offset,
                    count: a.count as u32,
                },
                Ok(other) => proto::ProduceResponse {
                    error: Some(unexpected(other)),
                    ..Default::default()
                },
                Err(e) => proto::ProduceResponse {
                    error: Some(e),
                    ..Default::default()
                },
            };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchRequest>,
    ) -> Result<GrpcResponse<proto::FetchResponse>, Status> {
        self.observe("Fetch", async move {
            let _admitted = admit!(self, proto::FetchResponse);
            let topic = request.get_ref().topic.clone();
            let _call = authorize!(
                self,
                request,
                Some(Permission::Read(&topic)),
                proto::FetchResponse
            );
            let (partition, query, consistency) = match fetch_query(request.into_inner()) {
                Ok(q) => q,
                Err(error) => {
                    return Ok(GrpcResponse::new(proto::FetchResponse {
                        error: Some(error),
                        ..Default::default()
                    }))
                }
            };
            let cmd = Command::Query {
                partition,
                query,
                consistency,
            };
            let resp = match self.run(cmd, self.request_timeout).await {
                Ok(Response::Query(Fetch::Read(f))) => proto::FetchResponse {
                    error: None,
                    records: f
                        .records
                        .into_iter()
                        .map(|(offset, value)| proto::Record { offset, value })
                        .collect(),
                    high_watermark: f.high_watermark,
                },
                Ok(other) => proto::FetchResponse {
                    error: Some(unexpected(other)),
                    ..Default::default()
                },
                Err(e) => proto::FetchResponse {
                    error: Some(e),
                    ..Default::default()
                },
            };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for Services {
    async fn node_status(
        &self,
        request: Request<proto::NodeStatusRequest>,
    ) -> Result<GrpcResponse<proto::NodeStatusResponse>, Status> {
        self.observe("NodeStatus", async move {
            let _call = authorize_status!(self, request, Some(Permission::Describe));
            let ins = self.inspect().await?;
            let groups = ins
                .groups
                .iter()
                .map(|g| {
                    let mut s = convert::group_status(g);
                    if let Some(l) = ins.storage.get(&g.group) {
                        s.high_watermark = l.high_watermark;
                        s.log_start_offset = l.log_start_offset;
                        s.size_bytes = l.size_bytes;
                        s.segments = l.segments;
                    }
                    s
                })
                .collect();
            Ok(GrpcResponse::new(proto::NodeStatusResponse {
                node_id: ins.node_id,
                groups,
                metadata_applied: ins.metadata.applied_index(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                uptime_ms: self.started.elapsed().as_millis() as u64,
                storage_errors: self.metrics.partition_io_errors.get(),
                alive: ins.alive.iter().copied().collect(),
                metadata_snapshot_bytes: ins.metadata.snapshot().len() as u64,
            }))
        })
        .await
    }

    async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<GrpcResponse<proto::ClusterStatusResponse>, Status> {
        self.observe("ClusterStatus", async move {
            let _call = authorize_status!(self, request, Some(Permission::Describe));
            let ins = self.inspect().await?;
            let md = &ins.metadata;
            Ok(GrpcResponse::new(proto::ClusterStatusResponse {
                answered_by: ins.node_id,
                metadata_leader: ins.leader_of(METADATA_GROUP).unwrap_or(0),
                nodes: md.nodes().map(convert::node).collect(),
                topics: md.topics().count() as u32,
                partitions: md.partitions().count() as u32,
                leaderless_local_partitions: ins
                    .groups
                    .iter()
                    .filter(|g| {
                        g.group != METADATA_GROUP && g.leader.is_none() && g.role != Role::Leader
                    })
                    .count() as u32,
            }))
        })
        .await
    }

    async fn add_node(
        &self,
        request: Request<proto::AddNodeRequest>,
    ) -> Result<GrpcResponse<proto::MembershipResponse>, Status> {
        self.observe("AddNode", async move {
            let _admitted = admit!(self, proto::MembershipResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::MembershipResponse
            );
            let r = request.into_inner();
            let node = chronik_core::NodeInfo {
                id: r.id,
                peer_addr: r.peer_addr,
                client_addr: r.client_addr,
                rack: crate::convert::rack(r.rack),
            };
            let change = MembershipChange::Add(node.clone());
            // Asking again for a node already registered with the same
            // addresses (a joining node retrying after a lost answer, or one
            // pre-added with the CLI) succeeds: the change carries on.
            let before = self.inspect().await?;
            if before.metadata.node(node.id) == Some(&node) {
                return Ok(GrpcResponse::new(membership_response(
                    &before, &change, None,
                )));
            }
            let result = self
                .run(Command::Membership(change.clone()), self.request_timeout)
                .await;
            let ins = self.inspect().await?;
            let error = match result {
                Ok(_) => None,
                Err(_) if ins.metadata.node(node.id) == Some(&node) => None,
                Err(e) => Some(e),
            };
            Ok(GrpcResponse::new(membership_response(&ins, &change, error)))
        })
        .await
    }

    async fn remove_node(
        &self,
        request: Request<proto::RemoveNodeRequest>,
    ) -> Result<GrpcResponse<proto::MembershipResponse>, Status> {
        self.observe("RemoveNode", async move {
            let _admitted = admit!(self, proto::MembershipResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::MembershipResponse
            );
            let id = request.into_inner().id;
            let change = MembershipChange::Remove(id);
            let result = self
                .run(Command::Membership(change.clone()), self.request_timeout)
                .await;
            let ins = self.inspect().await?;
            Ok(GrpcResponse::new(membership_response(
                &ins,
                &change,
                result.err(),
            )))
        })
        .await
    }

    async fn rebalance(
        &self,
        request: Request<proto::RebalanceRequest>,
    ) -> Result<GrpcResponse<proto::RebalanceResponse>, Status> {
        self.observe("Rebalance", async move {
            use crate::rebalance_rpc as rpc;
            use proto::rebalance_request::Action;
            let action = Action::try_from(request.get_ref().action).map_err(|_| {
                Status::invalid_argument(format!(
                    "unknown rebalance action {}",
                    request.get_ref().action
                ))
            })?;
            let need = match action {
                Action::Start | Action::Cancel => Permission::Admin,
                Action::Plan | Action::Status => Permission::Describe,
            };
            let _call = authorize!(self, request, Some(need), proto::RebalanceResponse);
            let r = request.into_inner();
            let _admitted = match action {
                Action::Start | Action::Cancel => Some(admit!(self, proto::RebalanceResponse)),
                Action::Plan | Action::Status => None,
            };
            let cfg = &self.rebalance;
            let ins = self.inspect().await?;
            let failed = |e: proto::Error| proto::RebalanceResponse {
                error: Some(e),
                answered_by: ins.node_id,
                ..Default::default()
            };
            let resp = match action {
                Action::Plan => {
                    let p = rpc::plan(&ins.metadata, cfg, r.max_moves);
                    rpc::plan_response(&p, cfg, ins.node_id)
                }
                Action::Status => rpc::run_response(
                    &ins.metadata,
                    ins.metadata.rebalance_run(),
                    cfg,
                    ins.node_id,
                ),
                Action::Start => {
                    let p = rpc::plan(&ins.metadata, cfg, r.max_moves);
                    if p.is_empty() {
                        let mut resp = rpc::plan_response(&p, cfg, ins.node_id);
                        resp.finished = true;
                        resp
                    } else {
                        let trigger = format!(
                            "operator: {} ({})",
                            match p.before.exceeding(cfg.imbalance_threshold).join(", ") {
                                s if s.is_empty() => "nothing".to_string(),
                                s => format!("{s} over {}", cfg.imbalance_threshold),
                            },
                            p.before
                        );
                        let cmd =
                            Command::Metadata(p.start_command(trigger, cfg.max_concurrent_moves));
                        match self.run(cmd, self.request_timeout).await {
                            Ok(Response::Metadata(MetadataResponse::RebalanceStarted {
                                run,
                                ..
                            })) => {
                                let mut resp = rpc::plan_response(&p, cfg, ins.node_id);
                                resp.run = run;
                                resp
                            }
                            Ok(other) => failed(unexpected(other)),
                            Err(e) => failed(e),
                        }
                    }
                }
                Action::Cancel => {
                    let cmd = Command::Metadata(MetadataCommand::CancelRebalance {
                        reason: "cancelled by an operator".into(),
                    });
                    match self.run(cmd, self.request_timeout).await {
                        Ok(Response::Metadata(MetadataResponse::RebalanceCancelled { .. })) => {
                            let after = self.inspect().await?;
                            rpc::run_response(
                                &after.metadata,
                                after.metadata.rebalance_run(),
                                cfg,
                                after.node_id,
                            )
                        }
                        Ok(other) => failed(unexpected(other)),
                        Err(e) => failed(e),
                    }
                }
            };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }

    async fn list_nodes(
        &self,
        request: Request<proto::ListNodesRequest>,
    ) -> Result<GrpcResponse<proto::ListNodesResponse>, Status> {
        self.observe("ListNodes", async move {
            let _call = authorize!(
                self,
                request,
                Some(Permission::Describe),
                proto::ListNodesResponse
            );
            let ins = self.inspect().await?;
            let md = &ins.metadata;
            let view = &ins.membership;
            let in_flight = md.membership_in_flight();
            let nodes = md
                .nodes()
                .map(|n| {
                    let role = match (
                        view.voters.contains(&n.id),
                        view.outgoing.contains(&n.id),
                        view.learners.contains(&n.id),
                    ) {
                        (true, false, _) if view.is_joint() => "voter (joining)",
                        (true, _, _) => "voter",
                        (false, true, _) => "voter (leaving)",
                        (false, false, true) => "learner",
                        (false, false, false) if in_flight.is_some_and(|c| c.node() == n.id) => {
                            "registered (joining)"
                        }
                        (false, false, false) => "not in configuration",
                    };
                    proto::NodeMember {
                        id: n.id,
                        peer_addr: n.peer_addr.clone(),
                        client_addr: n.client_addr.clone(),
                        role: role.into(),
                        replicas: md
                            .partitions()
                            .filter(|(_, p)| p.replicas.contains(&n.id))
                            .count() as u32,
                        rack: n.rack.clone().unwrap_or_default(),
                        leaders: md
                            .partitions()
                            .filter(|(_, p)| p.preferred_leader == n.id)
                            .count() as u32,
                        maintenance: md.in_maintenance(n.id),
                    }
                })
                .collect();
            Ok(GrpcResponse::new(proto::ListNodesResponse {
                error: None,
                answered_by: ins.node_id,
                metadata_leader: ins.leader_of(METADATA_GROUP).unwrap_or(0),
                nodes,
                change_in_flight: in_flight.map(|c| c.to_string()).unwrap_or_default(),
                joint: view.is_joint(),
            }))
        })
        .await
    }

    async fn maintenance(
        &self,
        request: Request<proto::MaintenanceRequest>,
    ) -> Result<GrpcResponse<proto::MaintenanceResponse>, Status> {
        self.observe("Maintenance", async move {
            let _admitted = admit!(self, proto::MaintenanceResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::MaintenanceResponse
            );
            let r = request.into_inner();
            let cmd = Command::Metadata(MetadataCommand::SetMaintenance {
                node: r.id,
                on: r.on,
            });
            let error = match self.run(cmd, self.request_timeout).await {
                Ok(Response::Metadata(MetadataResponse::MaintenanceSet { .. })) => None,
                Ok(other) => Some(unexpected(other)),
                Err(e) => Some(e),
            };
            let ins = self.inspect().await?;
            Ok(GrpcResponse::new(proto::MaintenanceResponse {
                error,
                answered_by: ins.node_id,
                id: r.id,
                on: r.on,
            }))
        })
        .await
    }

    async fn restart_check(
        &self,
        request: Request<proto::RestartCheckRequest>,
    ) -> Result<GrpcResponse<proto::RestartCheckResponse>, Status> {
        self.observe("RestartCheck", async move {
            let _call = authorize!(
                self,
                request,
                Some(Permission::Describe),
                proto::RestartCheckResponse
            );
            let id = request.into_inner().id;
            let ins = self.inspect().await?;
            let leader = ins.leader_of(METADATA_GROUP);
            let failed = |e: chronik_core::Error| proto::RestartCheckResponse {
                error: Some(convert::error(&e)),
                answered_by: ins.node_id,
                id,
                ..Default::default()
            };
            // Only the metadata leader knows which peers are alive.
            if leader != Some(ins.node_id) {
                return Ok(GrpcResponse::new(failed(chronik_core::Error::NotLeader {
                    group: METADATA_GROUP,
                    leader_hint: leader,
                })));
            }
            let voters: Vec<_> = ins.membership.voters.iter().copied().collect();
            let resp =
                match chronik_core::shutdown::restart_check(&ins.metadata, id, &voters, &ins.alive)
                {
                    Ok(c) => proto::RestartCheckResponse {
                        error: None,
                        answered_by: ins.node_id,
                        id,
                        safe: c.safe,
                        reasons: c.reasons,
                        partitions: c.partitions as u32,
                    },
                    Err(e) => failed(e),
                };
            Ok(GrpcResponse::new(resp))
        })
        .await
    }

    async fn partition_info(
        &self,
        request: Request<proto::PartitionInfoRequest>,
    ) -> Result<GrpcResponse<proto::PartitionInfoResponse>, Status> {
        self.observe("PartitionInfo", async move {
            let _call = authorize!(
                self,
                request,
                Some(Permission::Describe),
                proto::PartitionInfoResponse
            );
            let r = request.into_inner();
            let ins = self.inspect().await?;
            let pid = PartitionId::new(r.topic, r.partition);
            let group = match ins.metadata.partition(&pid) {
                Ok(p) => p.group,
                Err(e) => {
                    return Ok(GrpcResponse::new(proto::PartitionInfoResponse::refused(
                        convert::error(&e),
                    )))
                }
            };
            let replica = ins.groups.iter().find(|g| g.group == group).map(|g| {
                let mut s = convert::group_status(g);
                if let Some(l) = ins.storage.get(&group) {
                    s.high_watermark = l.high_watermark;
                    s.log_start_offset = l.log_start_offset;
                    s.size_bytes = l.size_bytes;
                    s.segments = l.segments;
                }
                s
            });
            let decisions = self
                .driver
                .history(group)
                .await
                .map_err(|_| Status::unavailable("the node is stopping"))?;
            Ok(GrpcResponse::new(proto::PartitionInfoResponse {
                error: None,
                node_id: ins.node_id,
                replica,
                decisions: decisions
                    .into_iter()
                    .map(|d| proto::Decision {
                        at_ms: d.at_ms,
                        kind: d.kind.to_string(),
                        term: d.term,
                        detail: d.detail,
                    })
                    .collect(),
            }))
        })
        .await
    }

    async fn metadata_replicate(
        &self,
        request: Request<proto::MetadataReplicateRequest>,
    ) -> Result<GrpcResponse<proto::MetadataReplicateResponse>, Status> {
        self.observe("MetadataReplicate", async move {
            let _admitted = admit!(self, proto::MetadataReplicateResponse);
            let _call = authorize!(
                self,
                request,
                Some(Permission::Admin),
                proto::MetadataReplicateResponse
            );
            let to = request.into_inner().to;
            let r = self
                .driver
                .replicate_metadata((to != 0).then_some(to))
                .await
                .map_err(|_| Status::unavailable("the node is stopping"))?;
            let ins = self.inspect().await?;
            Ok(GrpcResponse::new(match r {
                Ok(now) => proto::MetadataReplicateResponse {
                    error: None,
                    answered_by: ins.node_id,
                    target: now.target,
                    members: now
                        .members
                        .iter()
                        .map(|m| proto::MemberReplication {
                            node: m.node,
                            matched: m.matched,
                            snapshot: m.snapshot,
                            sent: m.sent,
                        })
                        .collect(),
                },
                Err(e) => proto::MetadataReplicateResponse {
                    error: Some(convert::error(&e)),
                    answered_by: ins.node_id,
                    ..Default::default()
                },
            }))
        })
        .await
    }

    async fn ping_node(
        &self,
        request: Request<proto::PingNodeRequest>,
    ) -> Result<GrpcResponse<proto::PingNodeResponse>, Status> {
        self.observe("PingNode", async move {
            let _call = authorize!(
                self,
                request,
                Some(Permission::Describe),
                proto::PingNodeResponse
            );
            let r = request.into_inner();
            let ins = self.inspect().await?;
            let Some(target) = ins.metadata.node(r.id) else {
                return Ok(GrpcResponse::new(proto::PingNodeResponse::refused(
                    convert::error(&chronik_core::Error::UnknownNode { node: r.id }),
                )));
            };
            let count = match r.count {
                0 => PING_COUNT_DEFAULT,
                n => n.min(PING_COUNT_MAX),
            };
            Ok(GrpcResponse::new(
                ping((ins.node_id, r.id), &target.peer_addr, &self.dialer, count).await,
            ))
        })
        .await
    }

    async fn isr_status(
        &self,
        request: Request<proto::IsrStatusRequest>,
    ) -> Result<GrpcResponse<proto::IsrStatusResponse>, Status> {
        self.observe("IsrStatus", async move {
            let _call = authorize!(
                self,
                request,
                Some(Permission::Describe),
                proto::IsrStatusResponse
            );
            let r = request.into_inner();
            let ins = self.inspect().await?;
            let md = &ins.metadata;
            if !r.topic.is_empty() && md.topic(&r.topic).is_none() {
                return Ok(GrpcResponse::new(proto::IsrStatusResponse {
                    error: Some(convert::error(&chronik_core::Error::UnknownTopic {
                        topic: r.topic,
                    })),
                    answered_by: ins.node_id,
                    ..Default::default()
                }));
            }
            let mut partitions = Vec::new();
            for t in md.topics() {
                if !r.topic.is_empty() && t.name != r.topic {
                    continue;
                }
                for p in &t.partitions {
                    if r.under_min_isr && p.isr.len() as u32 >= t.min_insync_replicas {
                        continue;
                    }
                    let leader = ins.leader_of(p.group).unwrap_or(0);
                    partitions.push(proto::PartitionIsr {
                        topic: t.name.clone(),
                        partition: p.partition,
                        group: p.group,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        min_insync_replicas: t.min_insync_replicas,
                        leader,
                        available: leader == 0
                            || p.isr.contains(&leader)
                            || t.unclean_leader_election,
                        lags: ins
                            .lags
                            .get(&p.group)
                            .map(|l| l.iter().map(convert::replica_lag).collect())
                            .unwrap_or_default(),
                    });
                }
            }
            let (isr_shrinks, isr_expands) = md.isr_change_counts();
            Ok(GrpcResponse::new(proto::IsrStatusResponse {
                error: None,
                answered_by: ins.node_id,
                partitions,
                isr_shrinks,
                isr_expands,
            }))
        })
        .await
    }
}

fn membership_response(
    ins: &Inspection,
    change: &MembershipChange,
    error: Option<proto::Error>,
) -> proto::MembershipResponse {
    proto::MembershipResponse {
        change: if error.is_none() {
            change.to_string()
        } else {
            String::new()
        },
        error,
        nodes: ins.metadata.nodes().map(convert::node).collect(),
        answered_by: ins.node_id,
    }
}

/// Milliseconds since the Unix epoch, stamped on produced batches for
/// time-based retention.
/// The metadata command a CreateTopic request asks for: `min_insync_replicas`
/// 0 means min(2, replication factor). The engine checks the rest.
pub(crate) fn create_topic_command(r: proto::CreateTopicRequest) -> MetadataCommand {
    let min_isr = if r.min_insync_replicas == 0 {
        r.replication_factor.clamp(1, 2)
    } else {
        r.min_insync_replicas
    };
    MetadataCommand::CreateTopic {
        name: r.name,
        partitions: r.partitions,
        replication_factor: r.replication_factor,
        min_insync_replicas: min_isr,
        unclean_leader_election: r.unclean_leader_election,
    }
}

/// The partition and append a Produce request asks for.
pub(crate) fn produce_command(
    r: proto::ProduceRequest,
    timestamp_ms: u64,
) -> (PartitionId, RecordCommand) {
    (
        PartitionId::new(r.topic, r.partition),
        RecordCommand::Append {
            records: r.records,
            timestamp_ms,
        },
    )
}

/// The read a Fetch request asks for (`max_bytes` 0: the default, and
/// never more than the most one fetch returns), or why it is malformed.
pub(crate) fn fetch_query(
    r: proto::FetchRequest,
) -> Result<(PartitionId, RecordQuery, ReadConsistency), proto::Error> {
    let max_bytes = match r.max_bytes {
        0 => FETCH_BYTES_DEFAULT,
        n => n.min(FETCH_BYTES_MAX),
    };
    let consistency = match proto::ReadConsistency::try_from(r.consistency) {
        Ok(proto::ReadConsistency::Leader) => ReadConsistency::Leader,
        Ok(proto::ReadConsistency::Follower) => ReadConsistency::Follower,
        Ok(proto::ReadConsistency::FollowerStale) => ReadConsistency::FollowerStale,
        Err(_) => {
            return Err(convert::local_error(
                ErrorCode::InvalidRequest,
                format!("unknown read consistency {}", r.consistency),
                false,
            ))
        }
    };
    Ok((
        PartitionId::new(r.topic, r.partition),
        RecordQuery::Fetch {
            offset: r.offset,
            max_bytes,
        },
        consistency,
    ))
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const PING_COUNT_DEFAULT: u32 = 3;
const PING_COUNT_MAX: u32 = 100;
/// Longest a connection or one ping may take before it counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a connection to `peer_addr` and pings it `count` times over the
/// peer transport.
async fn ping(
    (from, to): (u64, u64),
    peer_addr: &str,
    dialer: &crate::tls::Dialer,
    count: u32,
) -> proto::PingNodeResponse {
    use proto::raft_client::RaftClient;
    let mut resp = proto::PingNodeResponse {
        from,
        to,
        peer_addr: peer_addr.to_string(),
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    let endpoint = match dialer.peer(peer_addr, to) {
        Ok(e) => e,
        Err(e) => {
            resp.problem = format!("cannot connect to {peer_addr}: {e}");
            return resp;
        }
    };
    let mut client = match tokio::time::timeout(PING_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(c)) => RaftClient::new(c),
        Ok(Err(e)) => {
            resp.problem = format!(
                "cannot connect to {peer_addr}: {}",
                crate::tls::with_causes(&e)
            );
            return resp;
        }
        Err(_) => {
            resp.problem = format!("no connection to {peer_addr} within {PING_TIMEOUT:?}");
            return resp;
        }
    };
    resp.connect_us = started.elapsed().as_micros() as u64;
    let mut lost = 0;
    for _ in 0..count {
        let t = tokio::time::Instant::now();
        match tokio::time::timeout(PING_TIMEOUT, client.ping(proto::PingRequest { from })).await {
            Ok(Ok(r)) if r.get_ref().node_id == to => {
                resp.rtt_us.push(t.elapsed().as_micros() as u64)
            }
            Ok(Ok(r)) => {
                resp.problem = format!(
                    "{peer_addr} answered as node {}, not node {to}",
                    r.get_ref().node_id
                );
                return resp;
            }
            Ok(Err(e)) => {
                lost += 1;
                resp.problem = format!("ping failed: {}", e.message());
            }
            Err(_) => {
                lost += 1;
                resp.problem = format!("no answer within {PING_TIMEOUT:?}");
            }
        }
    }
    if lost > 0 {
        resp.problem = format!("{lost} of {count} pings lost ({})", resp.problem);
    }
    resp
}
