//! Prometheus metrics of one node, served as text on `/metrics`.
//!
//! Conventions: every family is `chronik_`-prefixed, in base units
//! (`_seconds`, `_bytes`), counters end in `_total`, labels stay
//! low-cardinality (kind, role, outcome, code, method, node ids; topic and
//! partition only with `metrics_per_partition`). Three sources feed them:
//! - events and replies as they happen (elections, ISR changes, requests,
//!   fsyncs), counted where they happen;
//! - state the driver samples once a second ([`refresh`]): Raft indexes and
//!   roles, replication lag, partition distribution;
//! - cluster-wide state taken from the replicated metadata, exported only
//!   by the node that leads the metadata group (`chronik_cluster_*`,
//!   distribution, imbalance), so a `sum` or `max` over every node's series
//!   gives the cluster's value once, not once per node.
//!
//! `docs/metrics.md` lists every family; a test keeps it in step.

pub mod refresh;
pub mod requests;

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Request latencies: 500 µs to ~30 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// fsyncs and storage work: 10 µs to ~1.3 s.
const IO_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];
/// Replication lag and long-running operations: 10 ms to 10 min.
const SLOW_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Elections: 10 ms to 1 min.
const ELECTION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];
/// Transfer sizes: 1 KiB to 16 GiB, by fours.
const SIZE_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
];

/// The node's metrics. Cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Whether per-partition series are exported (`metrics_per_partition`).
    pub per_partition: bool,

    // ----- cluster membership (metadata leader only) -----
    /// Members of the metadata group's configuration, by role (voter,
    /// learner).
    pub cluster_members: IntGaugeVec,
    /// Registered nodes by state as the metadata leader sees them (healthy:
    /// heard from within the last election timeout; unhealthy: not).
    pub cluster_nodes: IntGaugeVec,
    pub cluster_nodes_in_maintenance: IntGaugeVec,
    pub cluster_topics: IntGaugeVec,
    pub cluster_partitions: IntGaugeVec,
    /// Partitions whose ISR is smaller than their replica set.
    pub cluster_partitions_under_replicated: IntGaugeVec,
    /// Partitions whose ISR is smaller than `min_insync_replicas`
    /// (produces to them are refused).
    pub cluster_partitions_under_min_isr: IntGaugeVec,
    /// Sum of every partition's ISR size, and of its replica count.
    pub cluster_isr_replicas: IntGaugeVec,
    pub cluster_replicas: IntGaugeVec,
    pub membership_change_in_flight: IntGaugeVec,
    /// Membership changes asked of this node, by change and outcome code.
    pub membership_changes: IntCounterVec,

    // ----- Raft consensus (this node) -----
    /// Groups hosted by kind (`metadata`, `partition`).
    pub groups: IntGaugeVec,
    /// Hosted groups that currently know a leader, by kind.
    pub groups_with_leader: IntGaugeVec,
    /// Hosted groups by kind and this node's role in them.
    pub raft_groups: IntGaugeVec,
    /// Partition groups not ticking (quiesced: idle and fully replicated).
    pub raft_quiesced_groups: IntGauge,
    pub raft_term: IntGaugeVec,
    pub raft_commit_index: IntGaugeVec,
    pub raft_applied_index: IntGaugeVec,
    pub raft_last_index: IntGaugeVec,
    pub raft_snapshot_index: IntGaugeVec,
    pub leader_changes: IntCounterVec,
    /// Campaigns this node started (it became a candidate or pre-candidate).
    pub raft_campaigns: IntCounterVec,
    /// Elections this node won.
    pub raft_elections_won: IntCounterVec,
    /// How long groups went without a known leader, per election.
    pub raft_leaderless_seconds: HistogramVec,
    /// Proposals by group kind and outcome (submitted, committed, dropped).
    pub raft_proposals: IntCounterVec,
    /// Kept for dashboards that predate `chronik_raft_proposals_total`.
    pub proposals_committed: IntCounter,
    /// Leadership handoffs this node started, by reason.
    pub leadership_transfers: IntCounterVec,
    pub peer_messages_dropped: IntCounter,
    /// Connections and calls refused for security reasons, by port and
    /// reason (TLS handshakes, peer identities).
    pub security_refusals: IntCounterVec,

    // ----- partition distribution (metadata leader only) -----
    pub partition_replicas: IntGaugeVec,
    pub partition_preferred_leaders: IntGaugeVec,

    // ----- replication lag (partition leaders) -----
    pub replication_lag_entries: IntGaugeVec,
    pub replication_lag_seconds: Histogram,

    // ----- metadata operations -----
    pub metadata_operations: IntCounterVec,
    pub metadata_operation_seconds: HistogramVec,

    // ----- rebalancing -----
    /// Rebalancing and replica-move decisions this node applied, by
    /// decision (every node applies every one).
    pub rebalance_decisions: IntCounterVec,
    pub rebalance_moves: IntCounterVec,
    pub rebalance_move_seconds: Histogram,
    pub rebalance_moves_in_flight: IntGaugeVec,
    pub rebalance_oldest_move_seconds: Gauge,
    pub rebalance_imbalance_ratio: GaugeVec,

    // ----- snapshots -----
    pub snapshots_created: IntCounterVec,
    pub snapshots_installed: IntCounterVec,
    pub snapshots_fetched: IntCounter,
    pub snapshot_transfer_seconds: Histogram,
    pub snapshot_transfer_bytes: Histogram,
    pub metadata_snapshot_bytes: IntGauge,

    // ----- ISR -----
    pub isr_changes: IntCounterVec,

    // ----- storage -----
    pub wal_fsync_seconds: Histogram,
    pub wal_batches: IntCounter,
    pub wal_bytes_written: IntCounter,
    /// Partition storage work or reads that failed (each starts a rebuild
    /// of that replica from its leader).
    pub partition_io_errors: IntCounter,
    /// Time to run one batch of partition storage work (appends, syncs,
    /// manifests, snapshot adoption) off the driver task.
    pub partition_io_seconds: Histogram,

    // ----- requests -----
    pub grpc_requests: IntCounterVec,
    pub grpc_request_seconds: HistogramVec,
    pub produce_requests: IntCounterVec,
    pub produce_seconds: Histogram,
    pub produced_records: IntCounter,
    pub produced_bytes: IntCounter,
    pub fetch_requests: IntCounterVec,
    pub fetch_seconds: HistogramVec,
    pub fetched_records: IntCounter,
    /// Client and admin requests refused because the node is draining.
    pub requests_refused_draining: IntCounter,

    // ----- shutdown -----
    /// Graceful shutdown phases ended, by phase and outcome.
    pub shutdown_phases: IntCounterVec,
    /// How long the last graceful shutdown spent in each phase.
    pub shutdown_phase_seconds: GaugeVec,

    // ----- per partition (behind `metrics_per_partition`) -----
    pub partition_leader: IntGaugeVec,
    pub partition_isr_size: IntGaugeVec,
    pub partition_applied_index: IntGaugeVec,
    pub partition_lag_entries: IntGaugeVec,

    pub node_id: IntGauge,
    families: std::sync::Arc<Vec<(String, &'static str)>>,
}

/// Registers collectors on one registry; names are fixed at compile time,
/// so a failure is a programming error caught by every test that builds
/// `Metrics`.
struct Reg<'a> {
    registry: &'a Registry,
    families: std::cell::RefCell<Vec<(String, &'static str)>>,
}

impl Reg<'_> {
    fn add<C: Collector + Clone + 'static>(&self, c: C, kind: &'static str) -> C {
        for d in c.desc() {
            self.families.borrow_mut().push((d.fq_name.clone(), kind));
        }
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(
            IntCounter::new(name, help).expect("valid metric"),
            "counter",
        )
    }
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            "counter",
        )
    }
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"), "gauge")
    }
    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"), "gauge")
    }
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            "gauge",
        )
    }
    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            "gauge",
        )
    }
    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.add(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric"),
            "histogram",
        )
    }
    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        self.add(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric"),
            "histogram",
        )
    }
}

impl Metrics {
    pub fn new(node_id: u64) -> Self {
        Self::with_options(node_id, false)
    }

    /// `per_partition` adds the per-partition families (one series per
    /// hosted partition, or per partition and follower for lag).
    pub fn with_options(node_id: u64, per_partition: bool) -> Self {
        let registry = Registry::new();
        let r = Reg {
            registry: &registry,
            families: Default::default(),
        };
        r.gauge_vec(
            "chronik_build_info",
            "Build of the running node (value is always 1).",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let node_id_g = r.gauge("chronik_node_id", "This node's id.");
        node_id_g.set(node_id as i64);
        #[cfg(all(not(madsim), target_os = "linux"))]
        {
            // CPU seconds, resident and virtual memory, open and max file
            // descriptors, threads, start time: read from /proc at scrape.
            let pc = prometheus::process_collector::ProcessCollector::for_self();
            for d in pc.desc() {
                let kind = if d.fq_name.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                r.families.borrow_mut().push((d.fq_name.clone(), kind));
            }
            registry
                .register(Box::new(pc))
                .expect("process metrics register once");
        }
        let m = Metrics {
            per_partition,
            cluster_members: r.gauge_vec(
                "chronik_cluster_members",
                "Members of the metadata group's configuration by role (voter, learner). Exported by the metadata leader only.",
                &["role"],
            ),
            cluster_nodes: r.gauge_vec(
                "chronik_cluster_nodes",
                "Registered nodes by state (healthy: heard from within an election timeout; unhealthy: not) as the metadata leader sees them. Exported by the metadata leader only.",
                &["state"],
            ),
            cluster_nodes_in_maintenance: r.gauge_vec(
                "chronik_cluster_nodes_in_maintenance",
                "Nodes in maintenance mode. Exported by the metadata leader only.",
                &[],
            ),
            cluster_topics: r.gauge_vec(
                "chronik_cluster_topics",
                "Topics. Exported by the metadata leader only.",
                &[],
            ),
            cluster_partitions: r.gauge_vec(
                "chronik_cluster_partitions",
                "Partitions of every topic. Exported by the metadata leader only.",
                &[],
            ),
            cluster_partitions_under_replicated: r.gauge_vec(
                "chronik_cluster_partitions_under_replicated",
                "Partitions whose ISR is smaller than their replica set. Exported by the metadata leader only.",
                &[],
            ),
            cluster_partitions_under_min_isr: r.gauge_vec(
                "chronik_cluster_partitions_under_min_isr",
                "Partitions whose ISR is smaller than min_insync_replicas: produces to them are refused. Exported by the metadata leader only.",
                &[],
            ),
            cluster_isr_replicas: r.gauge_vec(
                "chronik_cluster_isr_replicas",
                "Sum of every partition's ISR size. Exported by the metadata leader only.",
                &[],
            ),
            cluster_replicas: r.gauge_vec(
                "chronik_cluster_replicas",
                "Sum of every partition's replica count. Exported by the metadata leader only.",
                &[],
            ),
            membership_change_in_flight: r.gauge_vec(
                "chronik_cluster_membership_change_in_flight",
                "1 while a membership change is being carried out. Exported by the metadata leader only.",
                &[],
            ),
            membership_changes: r.counter_vec(
                "chronik_membership_changes_total",
                "Membership changes asked of this node, by change (add, remove) and outcome code (OK or the refusal's error code).",
                &["change", "code"],
            ),
            groups: r.gauge_vec(
                "chronik_groups",
                "Raft groups hosted by this node, by kind.",
                &["kind"],
            ),
            groups_with_leader: r.gauge_vec(
                "chronik_groups_with_leader",
                "Hosted Raft groups that know a leader, by kind.",
                &["kind"],
            ),
            raft_groups: r.gauge_vec(
                "chronik_raft_groups",
                "Hosted Raft groups by kind and this node's role in them (leader, follower, candidate).",
                &["kind", "role"],
            ),
            raft_quiesced_groups: r.gauge(
                "chronik_raft_quiesced_groups",
                "Hosted partition groups quiesced: idle and fully replicated, they neither tick nor heartbeat until something happens.",
            ),
            raft_term: r.gauge_vec(
                "chronik_raft_term",
                "Current Raft term: the metadata group's, and the highest of the hosted partitions'.",
                &["kind"],
            ),
            raft_commit_index: r.gauge_vec(
                "chronik_raft_commit_index",
                "Committed log index: the metadata group's, and the sum over hosted partitions.",
                &["kind"],
            ),
            raft_applied_index: r.gauge_vec(
                "chronik_raft_applied_index",
                "Applied log index: the metadata group's, and the sum over hosted partitions.",
                &["kind"],
            ),
            raft_last_index: r.gauge_vec(
                "chronik_raft_last_index",
                "Last log index: the metadata group's, and the sum over hosted partitions.",
                &["kind"],
            ),
            raft_snapshot_index: r.gauge_vec(
                "chronik_raft_snapshot_index",
                "Index of the latest snapshot: the metadata group's, and the sum over hosted partitions.",
                &["kind"],
            ),
            leader_changes: r.counter_vec(
                "chronik_leader_changes_total",
                "Leader changes seen by this node, by group kind.",
                &["kind"],
            ),
            raft_campaigns: r.counter_vec(
                "chronik_raft_campaigns_total",
                "Elections this node started (it became a pre-candidate or candidate), by group kind.",
                &["kind"],
            ),
            raft_elections_won: r.counter_vec(
                "chronik_raft_elections_won_total",
                "Elections this node won (it became leader), by group kind.",
                &["kind"],
            ),
            raft_leaderless_seconds: r.histogram_vec(
                "chronik_raft_leaderless_duration_seconds",
                "Time a hosted group went without a known leader, from losing it to learning the next one (one observation per election this node saw end).",
                &["kind"],
                ELECTION_BUCKETS,
            ),
            raft_proposals: r.counter_vec(
                "chronik_raft_proposals_total",
                "Proposals asked of this node by group kind and outcome (submitted, committed, dropped).",
                &["kind", "outcome"],
            ),
            proposals_committed: r.counter(
                "chronik_proposals_committed_total",
                "Client proposals committed and acknowledged by this node as leader.",
            ),
            leadership_transfers: r.counter_vec(
                "chronik_leadership_transfers_total",
                "Leadership handoffs this node started as a leader, by reason.",
                &["reason"],
            ),
            security_refusals: r.counter_vec(
                "chronik_security_refusals_total",
                "Connections and calls refused for security reasons, by port (peer, client, metrics) and reason (not_tls, no_client_certificate, certificate_expired, certificate_refused, handshake_failed, handshake_timeout, connection_lost, peer_identity_mismatch, peer_not_a_member, unauthenticated, permission_denied, too_many_connections, too_many_calls_in_flight).",
                &["port", "reason"],
            ),
            peer_messages_dropped: r.counter(
                "chronik_peer_batches_dropped_total",
                "Peer message batches dropped because a peer queue was full.",
            ),
            partition_replicas: r.gauge_vec(
                "chronik_partition_replicas",
                "Partition replicas assigned to each node. Exported by the metadata leader only.",
                &["node"],
            ),
            partition_preferred_leaders: r.gauge_vec(
                "chronik_partition_preferred_leaders",
                "Partitions whose preferred leader is each node. Exported by the metadata leader only.",
                &["node"],
            ),
            replication_lag_entries: r.gauge_vec(
                "chronik_replication_lag_entries",
                "Entries each follower is behind, worst over the partitions this node leads.",
                &["peer"],
            ),
            replication_lag_seconds: r.histogram(
                "chronik_replication_lag_seconds",
                "Time since each follower of a partition this node leads was last caught up, sampled once a second per follower.",
                SLOW_BUCKETS,
            ),
            metadata_operations: r.counter_vec(
                "chronik_metadata_operations_total",
                "Metadata operations asked of this node, by operation and outcome code (OK or the error code).",
                &["op", "code"],
            ),
            metadata_operation_seconds: r.histogram_vec(
                "chronik_metadata_operation_duration_seconds",
                "Time from a metadata operation's arrival to its answer, by operation.",
                &["op"],
                REQUEST_BUCKETS,
            ),
            rebalance_decisions: r.counter_vec(
                "chronik_rebalance_decisions_total",
                "Rebalancing and replica-move decisions applied by this node's metadata replica (cluster-wide decisions, counted on every node): run_started, run_cancelled, move_started, move_finished, move_rolling_back, move_rolled_back, move_skipped.",
                &["decision"],
            ),
            rebalance_moves: r.counter_vec(
                "chronik_rebalance_moves_total",
                "Replica moves by outcome (started, finished, failed, rolled_back, skipped), as this node's metadata replica applied them (counted on every node).",
                &["outcome"],
            ),
            rebalance_move_seconds: r.histogram(
                "chronik_rebalance_move_duration_seconds",
                "Time from a replica move's start to its end (finished or rolled back), as this node applied them.",
                SLOW_BUCKETS,
            ),
            rebalance_moves_in_flight: r.gauge_vec(
                "chronik_rebalance_moves_in_flight",
                "Replica moves in flight. Exported by the metadata leader only.",
                &[],
            ),
            rebalance_oldest_move_seconds: r.float_gauge(
                "chronik_rebalance_oldest_move_age_seconds",
                "Age of the oldest replica move in flight that this node saw start (0: none).",
            ),
            rebalance_imbalance_ratio: r.float_gauge_vec(
                "chronik_rebalance_imbalance_ratio",
                "(max - min) / mean of each dimension over the placeable nodes (replicas, leaders, bytes); 0 is even. Exported by the metadata leader only.",
                &["dimension"],
            ),
            snapshots_created: r.counter_vec(
                "chronik_snapshots_created_total",
                "Local snapshots this node took (log compacted behind them), by group kind.",
                &["kind"],
            ),
            snapshots_installed: r.counter_vec(
                "chronik_snapshots_installed_total",
                "Snapshots from a leader this node installed, by group kind.",
                &["kind"],
            ),
            snapshots_fetched: r.counter(
                "chronik_snapshot_transfers_total",
                "Partition snapshots whose segments were streamed in from a leader.",
            ),
            snapshot_transfer_seconds: r.histogram(
                "chronik_snapshot_transfer_duration_seconds",
                "Time to stream one partition snapshot's segments from its leader (successful transfers).",
                SLOW_BUCKETS,
            ),
            snapshot_transfer_bytes: r.histogram(
                "chronik_snapshot_transfer_bytes",
                "Bytes streamed for one partition snapshot (segments already held locally are not sent).",
                SIZE_BUCKETS,
            ),
            metadata_snapshot_bytes: r.gauge(
                "chronik_metadata_snapshot_bytes",
                "Size of the metadata state as of this node's latest metadata snapshot.",
            ),
            isr_changes: r.counter_vec(
                "chronik_isr_changes_total",
                "ISR changes applied by this node's metadata replica (cluster-wide, counted on every node) by change (shrink, expand) and reason (lag, caught_up, unclean_election, replica_move).",
                &["change", "reason"],
            ),
            wal_fsync_seconds: r.histogram(
                "chronik_wal_fsync_duration_seconds",
                "WAL write and fsync latency per group commit.",
                IO_BUCKETS,
            ),
            wal_batches: r.counter(
                "chronik_wal_group_commits_total",
                "WAL group commits (fsyncs).",
            ),
            wal_bytes_written: r.counter(
                "chronik_wal_bytes_written_total",
                "Bytes written to the WAL (records and snapshot files).",
            ),
            partition_io_errors: r.counter(
                "chronik_partition_io_errors_total",
                "Partition storage operations or reads that failed; each turns that replica unavailable while it rebuilds from its leader.",
            ),
            partition_io_seconds: r.histogram(
                "chronik_partition_io_duration_seconds",
                "Time to run one batch of partition storage work (segment appends, syncs, manifests, snapshot adoption).",
                IO_BUCKETS,
            ),
            grpc_requests: r.counter_vec(
                "chronik_grpc_requests_total",
                "Client and admin gRPC requests by method and outcome code (OK, an in-band error code, or the gRPC status).",
                &["method", "code"],
            ),
            grpc_request_seconds: r.histogram_vec(
                "chronik_grpc_request_duration_seconds",
                "Time to answer a client or admin gRPC request, by method.",
                &["method"],
                REQUEST_BUCKETS,
            ),
            produce_requests: r.counter_vec(
                "chronik_produce_requests_total",
                "Produce requests by outcome code (OK or the error code, e.g. NOT_ENOUGH_REPLICAS).",
                &["code"],
            ),
            produce_seconds: r.histogram(
                "chronik_produce_duration_seconds",
                "Time from a produce's arrival to its answer.",
                REQUEST_BUCKETS,
            ),
            produced_records: r.counter(
                "chronik_produced_records_total",
                "Records acknowledged to producers by this node.",
            ),
            produced_bytes: r.counter(
                "chronik_produced_bytes_total",
                "Record bytes acknowledged to producers by this node.",
            ),
            fetch_requests: r.counter_vec(
                "chronik_fetch_requests_total",
                "Fetch requests by read consistency (leader, follower, follower_stale) and outcome code.",
                &["consistency", "code"],
            ),
            fetch_seconds: r.histogram_vec(
                "chronik_fetch_duration_seconds",
                "Time from a fetch's arrival to its answer, by read consistency.",
                &["consistency"],
                REQUEST_BUCKETS,
            ),
            fetched_records: r.counter(
                "chronik_fetched_records_total",
                "Records returned to fetches by this node.",
            ),
            requests_refused_draining: r.counter(
                "chronik_requests_refused_draining_total",
                "Client and admin requests answered SHUTTING_DOWN while the node drained.",
            ),
            shutdown_phases: r.counter_vec(
                "chronik_shutdown_phases_total",
                "Graceful shutdown phases ended (drain, transfer_leadership, sync_wal, stop), by outcome (completed, timed_out).",
                &["phase", "outcome"],
            ),
            shutdown_phase_seconds: r.float_gauge_vec(
                "chronik_shutdown_phase_duration_seconds",
                "Time the last graceful shutdown spent in each phase.",
                &["phase"],
            ),
            partition_leader: r.gauge_vec(
                "chronik_partition_leader",
                "1 for each hosted partition this node leads, 0 otherwise (metrics_per_partition only).",
                &["topic", "partition"],
            ),
            partition_isr_size: r.gauge_vec(
                "chronik_partition_isr_size",
                "ISR size of each partition this node leads (metrics_per_partition only).",
                &["topic", "partition"],
            ),
            partition_applied_index: r.gauge_vec(
                "chronik_partition_applied_index",
                "Applied log index of each hosted partition replica (metrics_per_partition only).",
                &["topic", "partition"],
            ),
            partition_lag_entries: r.gauge_vec(
                "chronik_partition_replication_lag_entries",
                "Entries each follower of a partition this node leads is behind (metrics_per_partition only).",
                &["topic", "partition", "peer"],
            ),
            node_id: node_id_g,
            families: std::sync::Arc::new({
                let mut f = r.families.into_inner();
                f.sort();
                f
            }),
            registry,
        };
        m.initialize_known_series();
        m
    }

    /// Creates the series of every label set known up front at zero, so
    /// `rate()` and alerts see 0 rather than no data before the first
    /// event.
    fn initialize_known_series(&self) {
        for kind in ["metadata", "partition"] {
            for c in [
                &self.leader_changes,
                &self.raft_campaigns,
                &self.raft_elections_won,
                &self.snapshots_created,
                &self.snapshots_installed,
            ] {
                c.with_label_values(&[kind]);
            }
            self.raft_leaderless_seconds.with_label_values(&[kind]);
            for outcome in ["submitted", "committed", "dropped"] {
                self.raft_proposals.with_label_values(&[kind, outcome]);
            }
        }
        for outcome in ["started", "finished", "failed", "rolled_back", "skipped"] {
            self.rebalance_moves.with_label_values(&[outcome]);
        }
        for (change, reason) in [
            ("shrink", "lag"),
            ("expand", "caught_up"),
            ("shrink", "unclean_election"),
            ("shrink", "replica_move"),
        ] {
            self.isr_changes.with_label_values(&[change, reason]);
        }
        self.produce_requests.with_label_values(&["OK"]);
        for consistency in ["leader", "follower", "follower_stale"] {
            self.fetch_requests.with_label_values(&[consistency, "OK"]);
            self.fetch_seconds.with_label_values(&[consistency]);
        }
        for change in ["add", "remove"] {
            self.membership_changes.with_label_values(&[change, "OK"]);
        }
        for op in [
            "create_topic",
            "delete_topic",
            "add_node",
            "remove_node",
            "set_maintenance",
            "start_rebalance",
            "cancel_rebalance",
        ] {
            self.metadata_operations.with_label_values(&[op, "OK"]);
            self.metadata_operation_seconds.with_label_values(&[op]);
        }
        for phase in ["drain", "transfer_leadership", "sync_wal", "stop"] {
            for outcome in ["completed", "timed_out"] {
                self.shutdown_phases.with_label_values(&[phase, outcome]);
            }
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

    /// Every family this node can export with its type (`counter`,
    /// `gauge`, `histogram`), sorted by name: what `docs/metrics.md` must
    /// list.
    pub fn families(&self) -> &[(String, &'static str)] {
        &self.families
    }
}

/// Serves `GET /metrics` on `listener` (plain TCP, or
/// [`crate::tls`]'s accepted connections) until `shutdown` resolves. Not available in
/// simulation (madsim has no real sockets).
#[cfg(not(madsim))]
pub async fn serve<L>(
    listener: L,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
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
