//! State the driver samples into gauges once a second: cheap enough for
//! thousands of groups (one pass over the hosted groups and, on the
//! metadata leader, one over the partitions), and fresh enough for a 15 s
//! scrape.

use super::Metrics;
use crate::partition_store::DiskLog;
use chronik_core::rebalance::{ClusterView, Imbalance};
use chronik_core::{Engine, GroupId, GroupKind, NodeId, Role, Time, METADATA_GROUP};
use std::collections::{BTreeMap, BTreeSet};

/// How often gauges are sampled.
pub const REFRESH_INTERVAL_MS: u64 = 1_000;

/// What sampling remembers between rounds.
#[derive(Default)]
pub struct Sampler {
    last: Option<Time>,
    /// When this node saw each in-flight replica move start.
    moves: BTreeMap<GroupId, Time>,
    /// Label sets of the per-partition and per-peer series set last round,
    /// so series of partitions no longer hosted or led disappear.
    partitions: BTreeSet<[String; 2]>,
    led_partitions: BTreeSet<[String; 2]>,
    lags: BTreeSet<[String; 3]>,
    peers: BTreeSet<String>,
    /// Nodes the distribution gauges had a series for last round.
    nodes: BTreeSet<String>,
}

fn kind_label(kind: &GroupKind) -> &'static str {
    match kind {
        GroupKind::Metadata => "metadata",
        GroupKind::Partition(_) => "partition",
    }
}

fn role_label(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate | Role::PreCandidate => "candidate",
    }
}

/// Removes the series of `metric` whose labels were set last round but not
/// this one.
fn drop_stale<const N: usize>(
    metric: &prometheus::IntGaugeVec,
    before: &mut BTreeSet<[String; N]>,
    now: BTreeSet<[String; N]>,
) {
    for gone in before.difference(&now) {
        let labels: Vec<&str> = gone.iter().map(String::as_str).collect();
        let _ = metric.remove_label_values(&labels);
    }
    *before = now;
}

impl Sampler {
    /// A replica move started (as this node applied it).
    pub fn move_started(&mut self, group: GroupId, now: Time) {
        self.moves.insert(group, now);
    }

    /// A replica move ended; its duration if this node saw it start.
    pub fn move_ended(&mut self, group: GroupId, now: Time) -> Option<f64> {
        let started = self.moves.remove(&group)?;
        Some(now.0.saturating_sub(started.0) as f64 / 1000.0)
    }

    /// Samples the engine's state into `m` if the last round is at least
    /// [`REFRESH_INTERVAL_MS`] old.
    pub fn maybe_refresh(&mut self, m: &Metrics, engine: &Engine<DiskLog>, now: Time) {
        if self
            .last
            .is_some_and(|t| now.0.saturating_sub(t.0) < REFRESH_INTERVAL_MS)
        {
            return;
        }
        self.last = Some(now);
        self.refresh(m, engine, now);
    }

    fn refresh(&mut self, m: &Metrics, engine: &Engine<DiskLog>, now: Time) {
        let md = engine.metadata();
        let status = engine.status();
        m.raft_quiesced_groups.set(engine.quiesced_groups() as i64);
        let mut groups: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut with_leader: BTreeMap<&str, i64> = BTreeMap::new();
        let mut hosted: BTreeMap<&str, i64> = BTreeMap::new();
        let (mut term, mut commit, mut applied, mut last, mut snap) = (
            BTreeMap::<&str, u64>::new(),
            BTreeMap::<&str, u64>::new(),
            BTreeMap::<&str, u64>::new(),
            BTreeMap::<&str, u64>::new(),
            BTreeMap::<&str, u64>::new(),
        );
        let mut lag_by_peer: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut partitions = BTreeSet::new();
        let mut led_partitions = BTreeSet::new();
        let mut lags = BTreeSet::new();
        let me = engine.node_id();
        let mut metadata_leader = false;
        for s in &status {
            let kind = kind_label(&s.kind);
            *groups.entry((kind, role_label(s.role))).or_default() += 1;
            *hosted.entry(kind).or_default() += 1;
            if s.leader.is_some() {
                *with_leader.entry(kind).or_default() += 1;
            }
            let t = term.entry(kind).or_default();
            *t = (*t).max(s.term);
            *commit.entry(kind).or_default() += s.commit;
            *applied.entry(kind).or_default() += s.applied;
            *last.entry(kind).or_default() += s.last_index;
            *snap.entry(kind).or_default() += s.snapshot_index;
            if s.group == METADATA_GROUP {
                metadata_leader = s.role == Role::Leader;
                continue;
            }
            let GroupKind::Partition(pid) = &s.kind else {
                continue;
            };
            let names = [pid.topic.clone(), pid.partition.to_string()];
            let replica_lags = if s.role == Role::Leader {
                engine.replica_lags(s.group)
            } else {
                None
            };
            for l in replica_lags.iter().flatten().filter(|l| l.node != me) {
                let worst = lag_by_peer.entry(l.node).or_default();
                *worst = (*worst).max(l.lag_entries);
                // "Never caught up" counts as the histogram's top bucket.
                let secs = if l.lag_ms == u64::MAX {
                    f64::INFINITY
                } else {
                    l.lag_ms as f64 / 1000.0
                };
                m.replication_lag_seconds.observe(secs);
                if m.per_partition {
                    let labels = [names[0].clone(), names[1].clone(), l.node.to_string()];
                    m.partition_lag_entries
                        .with_label_values(&[&labels[0], &labels[1], &labels[2]])
                        .set(l.lag_entries as i64);
                    lags.insert(labels);
                }
            }
            if m.per_partition {
                let lv = [names[0].as_str(), names[1].as_str()];
                m.partition_leader
                    .with_label_values(&lv)
                    .set(i64::from(s.role == Role::Leader));
                m.partition_applied_index
                    .with_label_values(&lv)
                    .set(s.applied as i64);
                if s.role == Role::Leader {
                    if let Ok(p) = md.partition(pid) {
                        m.partition_isr_size
                            .with_label_values(&lv)
                            .set(p.isr.len() as i64);
                        led_partitions.insert(names.clone());
                    }
                }
                partitions.insert(names);
            }
        }
        for kind in ["metadata", "partition"] {
            m.groups
                .with_label_values(&[kind])
                .set(hosted.get(kind).copied().unwrap_or(0));
            m.groups_with_leader
                .with_label_values(&[kind])
                .set(with_leader.get(kind).copied().unwrap_or(0));
            for role in ["leader", "follower", "candidate"] {
                m.raft_groups
                    .with_label_values(&[kind, role])
                    .set(groups.get(&(kind, role)).copied().unwrap_or(0));
            }
            let get = |map: &BTreeMap<&str, u64>| map.get(kind).copied().unwrap_or(0) as i64;
            m.raft_term.with_label_values(&[kind]).set(get(&term));
            m.raft_commit_index
                .with_label_values(&[kind])
                .set(get(&commit));
            m.raft_applied_index
                .with_label_values(&[kind])
                .set(get(&applied));
            m.raft_last_index.with_label_values(&[kind]).set(get(&last));
            m.raft_snapshot_index
                .with_label_values(&[kind])
                .set(get(&snap));
        }
        let peers: BTreeSet<String> = lag_by_peer.keys().map(|p| p.to_string()).collect();
        for gone in self.peers.difference(&peers) {
            let _ = m.replication_lag_entries.remove_label_values(&[gone]);
        }
        for (peer, lag) in &lag_by_peer {
            m.replication_lag_entries
                .with_label_values(&[&peer.to_string()])
                .set(*lag as i64);
        }
        self.peers = peers;
        if m.per_partition {
            drop_stale(
                &m.partition_leader,
                &mut self.partitions.clone(),
                partitions.clone(),
            );
            drop_stale(&m.partition_applied_index, &mut self.partitions, partitions);
            drop_stale(
                &m.partition_isr_size,
                &mut self.led_partitions,
                led_partitions,
            );
            drop_stale(&m.partition_lag_entries, &mut self.lags, lags);
        }
        let oldest = self
            .moves
            .values()
            .map(|t| now.0.saturating_sub(t.0))
            .max()
            .unwrap_or(0);
        m.rebalance_oldest_move_seconds.set(oldest as f64 / 1000.0);
        if metadata_leader {
            cluster(m, engine, &mut self.nodes);
        } else {
            for v in [
                &m.cluster_members,
                &m.cluster_nodes,
                &m.cluster_nodes_in_maintenance,
                &m.cluster_topics,
                &m.cluster_partitions,
                &m.cluster_partitions_under_replicated,
                &m.cluster_partitions_under_min_isr,
                &m.cluster_isr_replicas,
                &m.cluster_replicas,
                &m.membership_change_in_flight,
                &m.partition_replicas,
                &m.partition_preferred_leaders,
                &m.rebalance_moves_in_flight,
            ] {
                v.reset();
            }
            m.rebalance_imbalance_ratio.reset();
        }
    }
}

/// The cluster-wide gauges, from the metadata leader's committed metadata
/// and its view of who is alive.
fn cluster(m: &Metrics, engine: &Engine<DiskLog>, nodes: &mut BTreeSet<String>) {
    let md = engine.metadata();
    let conf = engine.membership_view();
    let one =
        |v: &prometheus::IntGaugeVec, n: usize| v.with_label_values::<&str>(&[]).set(n as i64);
    m.cluster_members
        .with_label_values(&["voter"])
        .set(conf.voters.union(&conf.outgoing).count() as i64);
    m.cluster_members
        .with_label_values(&["learner"])
        .set(conf.learners.len() as i64);
    let alive = engine.talking_nodes();
    let (healthy, unhealthy): (Vec<_>, Vec<_>) = md.nodes().partition(|n| alive.contains(&n.id));
    m.cluster_nodes
        .with_label_values(&["healthy"])
        .set(healthy.len() as i64);
    m.cluster_nodes
        .with_label_values(&["unhealthy"])
        .set(unhealthy.len() as i64);
    one(
        &m.cluster_nodes_in_maintenance,
        md.maintenance_nodes().count(),
    );
    one(&m.cluster_topics, md.topics().count());
    one(
        &m.membership_change_in_flight,
        usize::from(md.membership_in_flight().is_some()),
    );
    let (mut parts, mut under_rep, mut under_min, mut isr, mut replicas) = (0, 0, 0, 0, 0);
    let mut per_node: BTreeMap<NodeId, (i64, i64)> = md.nodes().map(|n| (n.id, (0, 0))).collect();
    for t in md.topics() {
        for p in &t.partitions {
            parts += 1;
            isr += p.isr.len();
            replicas += p.replicas.len();
            if p.isr.len() < p.replicas.len() {
                under_rep += 1;
            }
            if (p.isr.len() as u64) < u64::from(t.min_insync_replicas) {
                under_min += 1;
            }
            for r in &p.replicas {
                per_node.entry(*r).or_default().0 += 1;
            }
            per_node.entry(p.preferred_leader).or_default().1 += 1;
        }
    }
    one(&m.cluster_partitions, parts);
    one(&m.cluster_partitions_under_replicated, under_rep);
    one(&m.cluster_partitions_under_min_isr, under_min);
    one(&m.cluster_isr_replicas, isr);
    one(&m.cluster_replicas, replicas);
    // Removed nodes leave the map: their series go with them.
    let now_nodes: BTreeSet<String> = per_node.keys().map(|n| n.to_string()).collect();
    for gone in nodes.difference(&now_nodes) {
        let _ = m.partition_replicas.remove_label_values(&[gone]);
        let _ = m.partition_preferred_leaders.remove_label_values(&[gone]);
    }
    *nodes = now_nodes;
    for (node, (r, l)) in per_node {
        let n = node.to_string();
        m.partition_replicas.with_label_values(&[&n]).set(r);
        m.partition_preferred_leaders
            .with_label_values(&[&n])
            .set(l);
    }
    one(&m.rebalance_moves_in_flight, md.moves_in_flight());
    let imbalance = Imbalance::of(&ClusterView::from_metadata(md, md.partition_sizes()));
    for (dim, v) in [
        ("replicas", imbalance.replicas),
        ("leaders", imbalance.leaders),
        ("bytes", imbalance.bytes),
    ] {
        m.rebalance_imbalance_ratio.with_label_values(&[dim]).set(v);
    }
}
