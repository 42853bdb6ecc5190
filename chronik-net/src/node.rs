//! A node as a library call: `Node::start(config)` opens the WAL, recovers
//! the engine, starts the driver, the peer transport, the client and admin
//! APIs and (optionally) `/metrics`, and returns a handle to stop it.

use crate::config::NodeConfig;
use crate::disk::{write_atomic, Disk, FsDisk};
use crate::driver::{Driver, DriverHandle, DriverLinks, Inspection, DRIVER_QUEUE_MAX};
use crate::metrics::Metrics;
use crate::partition_store::DiskLogOptions;
use crate::proto;
use crate::service::Services;
use crate::transport::{RaftService, SegmentFetch};
use crate::wal::{Wal, WalConfig, WalError};
use chronik_core::{ConfigError, Engine, Fetched, NodeId, PartitionId, Time};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why a node could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot recover the WAL: {0}")]
    Wal(#[from] WalError),
    #[error("data dir {dir} belongs to node {found}, not node {configured}")]
    WrongDataDir {
        dir: String,
        found: String,
        configured: NodeId,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("refused: {0}")]
    Refused(chronik_core::Error),
    #[error("node stopped: {0}")]
    Stopped(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
}

/// A running node.
pub struct NodeHandle {
    pub node_id: NodeId,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub metrics: Metrics,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) handle: DriverHandle,
    pub(crate) driver: JoinHandle<Result<(), String>>,
    pub(crate) servers: Vec<JoinHandle<()>>,
    pub(crate) gate: Arc<crate::gate::RequestGate>,
    pub(crate) shutdown_config: chronik_core::shutdown::ShutdownConfig,
    #[cfg(not(madsim))]
    pub(crate) tls: Option<Arc<crate::tls::TlsState>>,
    pub(crate) auth: Option<Arc<crate::auth::AuthState>>,
}

/// Reloads a node's TLS files and principals file: see
/// [`NodeHandle::reloader`].
#[derive(Clone)]
pub struct Reloader {
    #[cfg(not(madsim))]
    tls: Option<Arc<crate::tls::TlsState>>,
    auth: Option<Arc<crate::auth::AuthState>>,
}

/// What a reload did: for each kind of file the node uses, whether it was
/// reloaded or refused (the old one kept). `None`: the node does not use
/// that kind.
#[derive(Debug)]
pub struct Reloaded {
    pub tls: Option<Result<(), crate::tls::TlsError>>,
    /// The number of principals loaded.
    pub principals: Option<Result<usize, crate::auth::AuthError>>,
}

impl Reloader {
    pub fn reload(&self) -> Reloaded {
        #[cfg(not(madsim))]
        let tls = self.tls.as_ref().map(|t| t.reload());
        #[cfg(madsim)]
        let tls = None;
        Reloaded {
            tls,
            principals: self.auth.as_ref().map(|a| a.reload()),
        }
    }
}

/// Largest peer batch a node decodes: refused past it, before it is read.
pub const PEER_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The smallest bound on a client call's size.
pub const CLIENT_MESSAGE_BYTES_MIN: usize = 64 * 1024 * 1024;

/// Largest client call a node decodes (or answer it encodes): room for a
/// produce of records up to `record_size_max_bytes`, and never less than
/// [`CLIENT_MESSAGE_BYTES_MIN`].
pub fn client_message_bytes_max(record_size_max_bytes: usize) -> usize {
    record_size_max_bytes
        .saturating_mul(4)
        .max(CLIENT_MESSAGE_BYTES_MIN)
}

/// Entry points.
pub struct Node;

impl Node {
    /// Starts a node on the real file system.
    pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        Node::start_with_disk(config, Arc::new(FsDisk)).await
    }

    /// Starts a node whose files go through `disk` (the simulator passes
    /// one that loses unsynced writes on a crash).
    pub async fn start_with_disk(
        config: NodeConfig,
        disk: Arc<dyn Disk>,
    ) -> Result<NodeHandle, NodeError> {
        Node::start_observed(config, disk, None).await
    }

    /// Like [`Node::start_with_disk`], reporting every engine event
    /// (applied entries included) to `observer`: for checkers outside the
    /// node, such as the simulator's.
    pub async fn start_observed(
        mut config: NodeConfig,
        disk: Arc<dyn Disk>,
        observer: Option<Arc<dyn crate::EngineObserver>>,
    ) -> Result<NodeHandle, NodeError> {
        config.validate()?;
        #[cfg(not(madsim))]
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(crate::tls::TlsState::load(t, config.node_id)?)),
            None => None,
        };
        #[cfg(madsim)]
        if config.tls.is_some() {
            tracing::warn!(
                node = config.node_id,
                "[tls] is ignored in simulation builds (madsim has no TLS): this node runs plaintext"
            );
        }
        let auth = match &config.auth {
            Some(a) => Some(Arc::new(crate::auth::AuthState::load(a)?)),
            None => None,
        };
        let dialer = crate::tls::Dialer {
            #[cfg(not(madsim))]
            state: tls.clone(),
            token: config.auth.as_ref().and_then(|a| a.node_token.clone()),
        };
        check_node_id(disk.as_ref(), &config)?;
        let wal_cfg = WalConfig::new(config.data_dir.join("wal"));
        #[allow(unused_mut)] // mutated by a planted bug in simulation builds
        let (wal, mut durable, report) = Wal::open(disk.clone(), wal_cfg)?;
        if chronik_core::planted::active(chronik_core::planted::Bug::ForgetVote) {
            // Planted bug (simulation builds only): the recovered votes are
            // forgotten, so the node may vote twice in one term.
            for g in durable.groups.values_mut() {
                g.hard_state.vote = 0;
            }
        }
        if let Some(addr) = config.join.clone() {
            if !durable.groups.contains_key(&chronik_core::METADATA_GROUP) {
                // A new node: ask the cluster to add it, and learn who the
                // members are (whose messages to accept).
                config.initial_cluster =
                    crate::join::join_cluster(&addr, &config.node_info(), &dialer).await?;
                tracing::info!(
                    node = config.node_id,
                    via = %addr,
                    members = config.initial_cluster.len(),
                    "asked to join the cluster; waiting to be caught up"
                );
            }
        }
        let mut engine_config = config.engine_config();
        engine_config.emit_apply_events |= observer.is_some();
        engine_config.incarnation = crate::driver::new_incarnation();
        engine_config.validate()?;
        tracing::info!(
            node = config.node_id,
            segments = report.segments,
            records = report.records,
            truncated_bytes = report.truncated_bytes,
            groups = durable.groups.len(),
            "recovered WAL"
        );
        // Bound now, to fail with the address rather than inside a server
        // task.
        #[cfg(not(madsim))]
        let mut listeners = Vec::new();
        #[cfg(not(madsim))]
        for addr in [config.peer_listen, config.client_listen] {
            listeners.push(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| NodeError::Listen { addr, source })?,
            );
        }
        let partitions_dir = config.data_dir.join("partitions");
        disk.create_dir_all(&partitions_dir)?;
        let log_options = DiskLogOptions {
            segment_bytes_max: config.segment_bytes_max,
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
            record_size_max_bytes: config.engine.record_size_max_bytes,
            produce_records_max: engine_config.produce_records_max,
        };
        let engine = Engine::new(engine_config, log_options, durable, Time(0))?;
        let hosted = engine
            .status()
            .iter()
            .map(|g| g.group)
            .collect::<std::collections::BTreeSet<_>>();
        match crate::partition_store::remove_orphans(disk.as_ref(), &partitions_dir, &hosted) {
            Ok(cleaned) if !cleaned.is_empty() => {
                tracing::info!(
                    ?cleaned,
                    "removed the files of partitions dropped before a crash"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot remove the files of dropped partitions: {e}"),
        }
        let segment_fetch = SegmentFetch {
            disk: disk.clone(),
            partitions_dir,
            crash: observer.clone().map(|o| (config.node_id, o)),
            throttle: config
                .catch_up_bytes_per_sec
                .map(|r| Arc::new(crate::throttle::Throttle::new(r))),
            dialer: dialer.clone(),
        };
        let metrics = Metrics::with_options(config.node_id, config.metrics_per_partition);
        let (tx, rx) = mpsc::channel(DRIVER_QUEUE_MAX);
        let handle = DriverHandle { tx };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let roster = Arc::new(parking_lot::RwLock::new(crate::transport::PeerRoster {
            removed: Default::default(),
            members: config.initial_cluster.iter().map(|n| n.id).collect(),
        }));
        let (ready_tx, ready_rx) = watch::channel(false);
        let driver = Driver::new(
            engine,
            wal,
            metrics.clone(),
            DriverLinks {
                roster: roster.clone(),
                initial_cluster: &config.initial_cluster,
                joined_via: config.join.clone(),
                peer_queue_max: config.peer_queue_max,
                self_tx: handle.tx.clone(),
                segment_fetch: segment_fetch.clone(),
                observer,
                ready: ready_tx,
            },
        );
        let driver = tokio::spawn(driver.run(rx, shutdown_rx.clone()));

        let mut servers = Vec::new();
        let peer = RaftService {
            me: config.node_id,
            roster,
            driver: handle.clone(),
            segments: segment_fetch,
            shutdown: shutdown_rx.clone(),
            authenticated: config.tls.is_some() && cfg!(not(madsim)),
            metrics: metrics.clone(),
        };
        let peer_router = tonic::transport::Server::builder().add_service(
            proto::raft_server::RaftServer::new(peer)
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX),
        );
        let gate = Arc::new(crate::gate::RequestGate::default());
        let services = Services {
            driver: handle.clone(),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            rebalance: config.engine.rebalance.clone(),
            gate: gate.clone(),
            metrics: metrics.clone(),
            started: tokio::time::Instant::now(),
            dialer: dialer.clone(),
            auth: auth.clone(),
            in_flight: crate::listen::Limiter::new(config.client_in_flight_max),
            cert_names: Default::default(),
            #[cfg(not(madsim))]
            tls: tls.clone(),
        };
        let client_addr = config.client_listen;
        let message_max = client_message_bytes_max(config.engine.record_size_max_bytes);
        let router = tonic::transport::Server::builder()
            .add_service(
                proto::chronik_server::ChronikServer::new(services.clone())
                    .max_decoding_message_size(message_max)
                    .max_encoding_message_size(message_max),
            )
            .add_service(proto::admin_server::AdminServer::new(services));
        // grpc.health.v1 and server reflection, for tools that are not ours
        // (not in simulation).
        #[cfg(not(madsim))]
        let router =
            crate::health::add_services(router, ready_rx, gate.clone(), shutdown_rx.clone())
                .map_err(|e| NodeError::Stopped(format!("gRPC reflection: {e}")))?;
        #[cfg(madsim)]
        drop(ready_rx);
        let peer_addr = config.peer_listen;
        #[cfg(not(madsim))]
        {
            use crate::listen::{accept, Limiter, Port};
            let connections = Limiter::new(config.client_connections_max);
            let mut listeners = listeners.into_iter();
            for (router, addr, port, limiter) in [
                (peer_router, peer_addr, Port::Peer, None),
                (router, client_addr, Port::Client, Some(connections)),
            ] {
                let Some(listener) = listeners.next() else {
                    continue;
                };
                let incoming = match tls.clone() {
                    Some(state) => Incoming::Tls(accept(
                        listener,
                        port,
                        limiter,
                        metrics.clone(),
                        move |tcp| {
                            let state = state.clone();
                            async move { crate::tls::handshake(&state, port, tcp).await }
                        },
                    )),
                    None => Incoming::Plain(accept(
                        listener,
                        port,
                        limiter,
                        metrics.clone(),
                        |tcp| async move { Ok(tcp) },
                    )),
                };
                servers.push(tokio::spawn(serve_grpc(
                    router,
                    addr,
                    incoming,
                    port.label(),
                    shutdown_rx.clone(),
                )));
            }
        }
        #[cfg(madsim)]
        for (router, addr, port) in [
            (peer_router, peer_addr, "peer"),
            (router, client_addr, "client"),
        ] {
            servers.push(tokio::spawn(serve_grpc(
                router,
                addr,
                port,
                shutdown_rx.clone(),
            )));
        }
        #[cfg(not(madsim))]
        if let Some(addr) = config.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| NodeError::Listen { addr, source })?;
            let m = metrics.clone();
            let mut stop = shutdown_rx.clone();
            let stop = async move {
                let _ = stop.changed().await;
            };
            let tls = tls.clone().map(|state| crate::listen::MetricsListener {
                local: addr,
                accepted: crate::listen::accept(
                    listener,
                    crate::listen::Port::Metrics,
                    None,
                    m.clone(),
                    move |tcp| {
                        let state = state.clone();
                        async move {
                            crate::tls::handshake(&state, crate::listen::Port::Metrics, tcp).await
                        }
                    },
                ),
            });
            servers.push(tokio::spawn(async move {
                let res = match tls {
                    Some(tls) => crate::metrics::serve(tls, m, stop).await,
                    None => match tokio::net::TcpListener::bind(addr).await {
                        Ok(listener) => crate::metrics::serve(listener, m, stop).await,
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = res {
                    tracing::error!(%addr, "metrics server failed: {e}");
                }
            }));
        }
        tracing::info!(
            node = config.node_id,
            peer = %config.peer_listen,
            client = %config.client_listen,
            tls = config.tls.is_some() && cfg!(not(madsim)),
            "node started"
        );
        Ok(NodeHandle {
            node_id: config.node_id,
            client_addr: config.client_listen,
            peer_addr: config.peer_listen,
            metrics,
            shutdown,
            handle,
            driver,
            servers,
            gate,
            shutdown_config: config.shutdown.clone(),
            #[cfg(not(madsim))]
            tls,
            auth,
        })
    }
}

/// The connections a server takes: TLS or plaintext, each counted
/// against its client's connection limit.
#[cfg(not(madsim))]
enum Incoming {
    Tls(
        mpsc::Receiver<(
            crate::listen::Counted<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
            SocketAddr,
        )>,
    ),
    Plain(mpsc::Receiver<(crate::listen::Counted<tokio::net::TcpStream>, SocketAddr)>),
}

/// Serves a gRPC router on the connections `incoming` yields until `stop`
/// flips.
#[cfg(not(madsim))]
async fn serve_grpc(
    router: tonic::transport::server::Router,
    addr: SocketAddr,
    incoming: Incoming,
    port: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    fn stream_of<S>(
        rx: mpsc::Receiver<(S, SocketAddr)>,
    ) -> impl futures::Stream<Item = Result<S, std::io::Error>> {
        futures::stream::unfold(rx, |mut rx| async move {
            let (stream, _) = rx.recv().await?;
            Some((Ok(stream), rx))
        })
    }
    let signal = async move {
        let _ = stop.changed().await;
    };
    let res = match incoming {
        Incoming::Tls(rx) => {
            router
                .serve_with_incoming_shutdown(stream_of(rx), signal)
                .await
        }
        Incoming::Plain(rx) => {
            router
                .serve_with_incoming_shutdown(stream_of(rx), signal)
                .await
        }
    };
    if let Err(e) = res {
        tracing::error!(%addr, port, "server failed: {e}");
    }
}

/// Serves a gRPC router on `addr` until `stop` flips (simulation: no TLS).
#[cfg(madsim)]
async fn serve_grpc(
    router: tonic::transport::server::Router,
    addr: SocketAddr,
    port: &'static str,
    mut stop: watch::Receiver<bool>,
) {
    let signal = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = router.serve_with_shutdown(addr, signal).await {
        tracing::error!(%addr, port, "server failed: {e}");
    }
}

impl NodeHandle {
    /// Reads this node's own replica of a partition, without asking the
    /// leader: committed records only, but possibly behind the leader.
    pub async fn read_local(
        &self,
        partition: &PartitionId,
        offset: u64,
        max_bytes: u64,
    ) -> Result<Fetched, NodeError> {
        match self
            .handle
            .read_local(partition.clone(), offset, max_bytes)
            .await
        {
            Ok(r) => r.map_err(NodeError::Refused),
            Err(_) => Err(NodeError::Stopped("driver gone".into())),
        }
    }

    /// Raft status of every group on this node, and its metadata.
    pub async fn inspect(&self) -> Result<Inspection, NodeError> {
        self.handle
            .inspect()
            .await
            .map_err(|_| NodeError::Stopped("driver gone".into()))
    }

    /// Stops at once, without draining or handing leadership over (the
    /// groups this node leads wait out an election): what a second signal
    /// does. Everything acknowledged is already durable (replies follow
    /// the fsync). See [`NodeHandle::shutdown`] for the graceful way.
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
        let result = self.driver.await;
        for s in self.servers {
            let _ = s.await;
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Stopped(e)),
            Err(e) => Err(NodeError::Stopped(format!("driver task failed: {e}"))),
        }
    }

    /// Reads the TLS certificate, key and CA files and the principals
    /// file again (what SIGHUP does in the daemon): new connections and
    /// calls use them, open connections keep their certificates. A file
    /// that does not load or check out is refused and the old one kept.
    pub fn reload(&self) -> Reloaded {
        self.reloader().reload()
    }

    /// A handle that reloads from elsewhere (a signal handler's task).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            #[cfg(not(madsim))]
            tls: self.tls.clone(),
            auth: self.auth.clone(),
        }
    }

    /// Resolves when the node stops on its own (a fatal WAL error).
    pub async fn stopped(&mut self) -> Result<(), NodeError> {
        match (&mut self.driver).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Stopped(e)),
            Err(e) => Err(NodeError::Stopped(format!("driver task failed: {e}"))),
        }
    }
}

/// Refuses a data dir written by another node id; records ours in a new one.
fn check_node_id(disk: &dyn Disk, config: &NodeConfig) -> Result<(), NodeError> {
    let dir = &config.data_dir;
    disk.create_dir_all(dir)?;
    let path = dir.join("node-id");
    match disk.read(&path) {
        Ok(bytes) => {
            let found = String::from_utf8_lossy(&bytes).trim().to_string();
            if found != config.node_id.to_string() {
                return Err(NodeError::WrongDataDir {
                    dir: dir.display().to_string(),
                    found,
                    configured: config.node_id,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(disk, &path, format!("{}\n", config.node_id).as_bytes())?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
