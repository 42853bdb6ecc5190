//! The admin API's `Rebalance` call: plans, runs and their status in wire
//! form.

use crate::proto;
use chronik_core::metadata::{MoveState, RebalanceRun};
use chronik_core::rebalance::{ClusterView, Imbalance, Plan, RebalanceConfig};
use chronik_core::MetadataState;

/// Per move, beyond its bytes, the Raft steps take about this long.
pub const PER_MOVE_MS: u64 = 2_000;

pub fn imbalance(i: &Imbalance) -> proto::Imbalance {
    proto::Imbalance {
        replicas: i.replicas,
        leaders: i.leaders,
        bytes: i.bytes,
    }
}

/// The plan for the cluster as `md` describes it.
pub fn plan(md: &MetadataState, cfg: &RebalanceConfig, max_moves: u32) -> Plan {
    let view = ClusterView::from_metadata(md, md.partition_sizes());
    let max = if max_moves == 0 {
        usize::MAX
    } else {
        max_moves as usize
    };
    chronik_core::rebalance::plan(&view, cfg.limits(max))
}

/// A plan as the answer to PLAN (and START, which shows what it started).
pub fn plan_response(
    p: &Plan,
    cfg: &RebalanceConfig,
    answered_by: u64,
) -> proto::RebalanceResponse {
    proto::RebalanceResponse {
        answered_by,
        moves: p
            .moves
            .iter()
            .map(|m| proto::RebalanceMove {
                topic: m.partition.topic.clone(),
                partition: m.partition.partition,
                group: m.group,
                from: m.from,
                to: m.to,
                bytes: m.bytes,
                isr_headroom: m.isr_headroom,
                reason: m.reason.clone(),
                state: String::new(),
            })
            .collect(),
        leaders: p
            .leaders
            .iter()
            .map(|l| proto::RebalanceLeaderChange {
                topic: l.partition.topic.clone(),
                partition: l.partition.partition,
                group: l.group,
                from: l.from,
                to: l.to,
                after_moves: l.after_moves,
                reason: l.reason.clone(),
            })
            .collect(),
        before: Some(imbalance(&p.before)),
        after: Some(imbalance(&p.after)),
        threshold: cfg.imbalance_threshold,
        lower_bound_moves: p.lower_bound_moves,
        estimated_duration_ms: p.estimated_duration_ms(
            cfg.estimate_bytes_per_sec,
            cfg.max_concurrent_moves,
            PER_MOVE_MS,
        ),
        ..Default::default()
    }
}

fn state(s: &MoveState) -> String {
    match s {
        MoveState::Pending => "pending".into(),
        MoveState::InFlight => "in flight".into(),
        MoveState::RollingBack { reason } => format!("rolling back: {reason}"),
        MoveState::Done => "done".into(),
        MoveState::RolledBack { reason } => format!("rolled back: {reason}"),
        MoveState::Skipped { reason } => format!("skipped: {reason}"),
    }
}

/// The latest run, as `md` applied it.
pub fn run_response(
    md: &MetadataState,
    run: Option<&RebalanceRun>,
    cfg: &RebalanceConfig,
    answered_by: u64,
) -> proto::RebalanceResponse {
    let current = Imbalance::of(&ClusterView::from_metadata(md, md.partition_sizes()));
    let Some(run) = run else {
        return proto::RebalanceResponse {
            answered_by,
            threshold: cfg.imbalance_threshold,
            current: Some(imbalance(&current)),
            ..Default::default()
        };
    };
    let partition_of = |g| {
        md.partition_of_group(g)
            .map(|(t, p)| (t.name.clone(), p.partition))
            .unwrap_or_default()
    };
    proto::RebalanceResponse {
        answered_by,
        moves: run
            .moves
            .iter()
            .map(|m| {
                let (topic, partition) = partition_of(m.group);
                proto::RebalanceMove {
                    topic,
                    partition,
                    group: m.group,
                    from: m.from,
                    to: m.to,
                    bytes: m.bytes,
                    isr_headroom: 0,
                    reason: String::new(),
                    state: state(&m.state),
                }
            })
            .collect(),
        threshold: cfg.imbalance_threshold,
        run: run.id,
        trigger: run.trigger.clone(),
        finished: run.finished,
        cancelled: run.cancelled.clone().unwrap_or_default(),
        in_flight: run.in_flight() as u32,
        max_concurrent_moves: run.max_concurrent_moves,
        current: Some(imbalance(&current)),
        ..Default::default()
    }
}
