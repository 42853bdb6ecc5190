//! Prometheus metrics of one node, served as text on `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The node's metrics. Cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Hosted groups by kind (`metadata`, `partition`).
    pub groups: IntGaugeVec,
    /// Hosted groups that currently know a leader, by kind.
    pub groups_with_leader: IntGaugeVec,
    pub leader_changes: IntCounterVec,
    pub proposals_committed: IntCounter,
    pub wal_fsync_seconds: Histogram,
    pub wal_batches: IntCounter,
    pub peer_messages_dropped: IntCounter,
    pub snapshots_fetched: IntCounter,
    /// ISR changes this node applied (every node applies every change).
    pub isr_changes: IntCounter,
    /// Rebalancing and replica-move decisions this node applied, by
    /// decision (every node applies every one).
    pub rebalance_decisions: IntCounterVec,
    /// Leadership handoffs this node started, by reason.
    pub leadership_transfers: IntCounterVec,
    /// Partition storage work or reads that failed (each starts a rebuild
    /// of that replica from its leader).
    pub partition_io_errors: IntCounter,
    /// Time to run one batch of partition storage work (appends, syncs,
    /// manifests, snapshot adoption) off the driver task.
    pub partition_io_seconds: Histogram,
    /// Graceful shutdown phases ended, by phase and outcome.
    pub shutdown_phases: IntCounterVec,
    /// How long the last graceful shutdown spent in each phase.
    pub shutdown_phase_seconds: prometheus::GaugeVec,
    /// Client and admin requests refused because the node is draining.
    pub requests_refused_draining: IntCounter,
    pub node_id: IntGauge,
}

impl Metrics {
    pub fn new(node_id: u64) -> Self {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(
                "chronik_build_info",
                "Build of the running node (value is always 1).",
            ),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let groups = IntGaugeVec::new(
            Opts::new("chronik_groups", "Raft groups hosted by this node."),
            &["kind"],
        )
        .expect("valid metric");
        let groups_with_leader = IntGaugeVec::new(
            Opts::new(
                "chronik_groups_with_leader",
                "Hosted Raft groups that know a leader.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let leader_changes = IntCounterVec::new(
            Opts::new(
                "chronik_leader_changes_total",
                "Leader changes seen by this node.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let proposals_committed = IntCounter::new(
            "chronik_proposals_committed_total",
            "Client proposals committed and acknowledged by this node as leader.",
        )
        .expect("valid metric");
        let wal_fsync_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "chronik_wal_fsync_duration_seconds",
                "WAL write + fsync latency per group commit.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let wal_batches = IntCounter::new(
            "chronik_wal_group_commits_total",
            "WAL group commits (fsyncs).",
        )
        .expect("valid metric");
        let peer_messages_dropped = IntCounter::new(
            "chronik_peer_batches_dropped_total",
            "Peer message batches dropped because a peer queue was full.",
        )
        .expect("valid metric");
        let snapshots_fetched = IntCounter::new(
            "chronik_snapshot_transfers_total",
            "Partition snapshots whose segments were streamed in from a leader.",
        )
        .expect("valid metric");
        let isr_changes = IntCounter::new(
            "chronik_isr_changes_total",
            "ISR shrinks and expands applied by this node's metadata replica (cluster-wide changes).",
        )
        .expect("valid metric");
        let rebalance_decisions = IntCounterVec::new(
            Opts::new(
                "chronik_rebalance_decisions_total",
                "Rebalancing and replica-move decisions applied by this node's metadata replica (cluster-wide decisions): run_started, run_cancelled, move_started, move_finished, move_rolling_back, move_rolled_back, move_skipped.",
            ),
            &["decision"],
        )
        .expect("valid metric");
        let leadership_transfers = IntCounterVec::new(
            Opts::new(
                "chronik_leadership_transfers_total",
                "Leadership handoffs this node started as a leader, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let partition_io_errors = IntCounter::new(
            "chronik_partition_io_errors_total",
            "Partition storage operations or reads that failed; each turns that replica unavailable while it rebuilds from its leader.",
        )
        .expect("valid metric");
        let partition_io_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "chronik_partition_io_duration_seconds",
                "Time to run one batch of partition storage work (segment appends, syncs, manifests, snapshot adoption).",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        let shutdown_phases = IntCounterVec::new(
            Opts::new(
                "chronik_shutdown_phases_total",
                "Graceful shutdown phases ended (drain, transfer_leadership, sync_wal, stop), by outcome (completed, timed_out).",
            ),
            &["phase", "outcome"],
        )
        .expect("valid metric");
        let shutdown_phase_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "chronik_shutdown_phase_duration_seconds",
                "Time the last graceful shutdown spent in each phase.",
            ),
            &["phase"],
        )
        .expect("valid metric");
        let requests_refused_draining = IntCounter::new(
            "chronik_requests_refused_draining_total",
            "Client and admin requests answered SHUTTING_DOWN while the node drained.",
        )
        .expect("valid metric");
        let node_id_g = IntGauge::new("chronik_node_id", "This node's id.").expect("valid metric");
        node_id_g.set(node_id as i64);
        for c in [
            Box::new(build) as Box<dyn prometheus::core::Collector>,
            Box::new(groups.clone()),
            Box::new(groups_with_leader.clone()),
            Box::new(leader_changes.clone()),
            Box::new(proposals_committed.clone()),
            Box::new(wal_fsync_seconds.clone()),
            Box::new(wal_batches.clone()),
            Box::new(peer_messages_dropped.clone()),
            Box::new(snapshots_fetched.clone()),
            Box::new(isr_changes.clone()),
            Box::new(rebalance_decisions.clone()),
            Box::new(leadership_transfers.clone()),
            Box::new(partition_io_errors.clone()),
            Box::new(partition_io_seconds.clone()),
            Box::new(shutdown_phases.clone()),
            Box::new(shutdown_phase_seconds.clone()),
            Box::new(requests_refused_draining.clone()),
            Box::new(node_id_g.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            groups,
            groups_with_leader,
            leader_changes,
            proposals_committed,
            wal_fsync_seconds,
            wal_batches,
            peer_messages_dropped,
            snapshots_fetched,
            isr_changes,
            rebalance_decisions,
            leadership_transfers,
            partition_io_errors,
            partition_io_seconds,
            shutdown_phases,
            shutdown_phase_seconds,
            requests_refused_draining,
            node_id: node_id_g,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut buf) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Serves `GET /metrics` until `shutdown` resolves. Not available in
/// simulation (madsim has no real sockets).
#[cfg(not(madsim))]
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
