//! `cluster rebalance`: show a plan (`--dry-run`), start one and follow it,
//! show the run in flight (`--status`) or stop it (`--cancel`).

use crate::error::CliError;
use crate::output::{print, OutputFormat, Table};
use chronik_net::client::Client;
use chronik_net::proto::{self, rebalance_request::Action};
use serde::Serialize;
use std::time::Duration;

/// How often a followed run is polled.
const POLL: Duration = Duration::from_secs(1);

#[derive(Serialize)]
struct Imbalance {
    replicas: f64,
    leaders: f64,
    bytes: f64,
}

impl From<Option<proto::Imbalance>> for Imbalance {
    fn from(i: Option<proto::Imbalance>) -> Self {
        let i = i.unwrap_or_default();
        Imbalance {
            replicas: i.replicas,
            leaders: i.leaders,
            bytes: i.bytes,
        }
    }
}

impl std::fmt::Display for Imbalance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replicas {:.3}, leaders {:.3}, bytes {:.3}",
            self.replicas, self.leaders, self.bytes
        )
    }
}

#[derive(Serialize)]
struct Move {
    partition: String,
    from: u64,
    to: u64,
    bytes: u64,
    isr_headroom: i64,
    state: String,
    reason: String,
}

#[derive(Serialize)]
struct Leader {
    partition: String,
    from: u64,
    to: u64,
    when: &'static str,
    reason: String,
}

#[derive(Serialize)]
struct Report {
    answered_by: u64,
    /// The run's id (its metadata index); none for a dry run.
    run: Option<u64>,
    trigger: Option<String>,
    finished: bool,
    cancelled: Option<String>,
    in_flight: u32,
    threshold: f64,
    before: Imbalance,
    after: Imbalance,
    current: Imbalance,
    lower_bound_moves: u64,
    estimated_duration_ms: u64,
    moves: Vec<Move>,
    leaders: Vec<Leader>,
}

fn report(r: proto::RebalanceResponse) -> Report {
    Report {
        answered_by: r.answered_by,
        run: (r.run != 0).then_some(r.run),
        trigger: (!r.trigger.is_empty()).then_some(r.trigger),
        finished: r.finished,
        cancelled: (!r.cancelled.is_empty()).then_some(r.cancelled),
        in_flight: r.in_flight,
        threshold: r.threshold,
        before: r.before.into(),
        after: r.after.into(),
        current: r.current.into(),
        lower_bound_moves: r.lower_bound_moves,
        estimated_duration_ms: r.estimated_duration_ms,
        moves: r
            .moves
            .into_iter()
            .map(|m| Move {
                partition: format!("{}-{}", m.topic, m.partition),
                from: m.from,
                to: m.to,
                bytes: m.bytes,
                isr_headroom: m.isr_headroom,
                state: m.state,
                reason: m.reason,
            })
            .collect(),
        leaders: r
            .leaders
            .into_iter()
            .map(|l| Leader {
                partition: format!("{}-{}", l.topic, l.partition),
                from: l.from,
                to: l.to,
                when: if l.after_moves { "after moves" } else { "now" },
                reason: l.reason,
            })
            .collect(),
    }
}

type Column = (&'static str, fn(&Move) -> String);

/// Moves with their partition, nodes and bytes, then the `extra` columns.
fn moves_table(moves: &[Move], extra: &[Column]) -> Table {
    let mut header = vec!["PARTITION", "FROM", "TO", "BYTES"];
    header.extend(extra.iter().map(|(h, _)| *h));
    Table {
        header,
        rows: moves
            .iter()
            .map(|m| {
                let mut row = vec![
                    m.partition.clone(),
                    m.from.to_string(),
                    m.to.to_string(),
                    m.bytes.to_string(),
                ];
                row.extend(extra.iter().map(|(_, f)| f(m)));
                row
            })
            .collect(),
    }
}

fn plan_table(r: &Report) -> String {
    let moves = moves_table(
        &r.moves,
        &[
            ("ISR_HEADROOM", |m| m.isr_headroom.to_string()),
            ("REASON", |m| m.reason.clone()),
        ],
    );
    let leaders = Table {
        header: vec!["PARTITION", "LEADER_FROM", "LEADER_TO", "WHEN", "REASON"],
        rows: r
            .leaders
            .iter()
            .map(|l| {
                vec![
                    l.partition.clone(),
                    l.from.to_string(),
                    l.to.to_string(),
                    l.when.to_string(),
                    l.reason.clone(),
                ]
            })
            .collect(),
    };
    if r.moves.is_empty() && r.leaders.is_empty() {
        return format!(
            "balanced: nothing to do ({}; threshold {}; answered by node {})",
            r.before, r.threshold, r.answered_by
        );
    }
    format!(
        "{}\n\n{}\n\nmoves: {} (lower bound {}), leadership changes: {}, estimated duration: {:.1} s\nimbalance before: {}\nimbalance after:  {}\nthreshold: {}{} (answered by node {})",
        moves.render(),
        leaders.render(),
        r.moves.len(),
        r.lower_bound_moves,
        r.leaders.len(),
        r.estimated_duration_ms as f64 / 1000.0,
        r.before,
        r.after,
        r.threshold,
        r.run.map(|id| format!("; started as run {id}")).unwrap_or_default(),
        r.answered_by
    )
}

fn run_table(r: &Report) -> String {
    let Some(id) = r.run else {
        return format!(
            "no rebalance has run (imbalance now: {}; threshold {}; answered by node {})",
            r.current, r.threshold, r.answered_by
        );
    };
    let moves = moves_table(&r.moves, &[("STATE", |m| m.state.clone())]);
    format!(
        "{}\n\nrun {id} ({}): {}, {} in flight{}\nimbalance now: {} (threshold {}; answered by node {})",
        moves.render(),
        r.trigger.as_deref().unwrap_or(""),
        if r.finished { "finished" } else { "running" },
        r.in_flight,
        r.cancelled
            .as_deref()
            .map(|c| format!(", cancelled: {c}"))
            .unwrap_or_default(),
        r.current,
        r.threshold,
        r.answered_by
    )
}

/// What `cluster rebalance` was asked to do.
pub struct Ask {
    pub dry_run: bool,
    pub max_moves: Option<u32>,
    pub status: bool,
    pub cancel: bool,
    pub no_wait: bool,
}

pub async fn run(c: &Client, ask: Ask, format: OutputFormat) -> Result<(), CliError> {
    let max = ask.max_moves.unwrap_or(0);
    let out = |e: String| CliError::Output(e);
    if ask.status || ask.cancel {
        let action = if ask.cancel {
            Action::Cancel
        } else {
            Action::Status
        };
        let r = report(c.rebalance(action, 0).await?);
        return print(format, &r, run_table).map_err(out);
    }
    if ask.dry_run {
        let r = report(c.rebalance(Action::Plan, max).await?);
        return print(format, &r, plan_table).map_err(out);
    }
    let started = c.rebalance(Action::Start, max).await?;
    let run = started.run;
    let plan = report(started);
    if run == 0 || ask.no_wait {
        return print(format, &plan, plan_table).map_err(out);
    }
    if format == OutputFormat::Table {
        crate::outln!("{}\n", plan_table(&plan));
    }
    // Follow the run until it is over, printing each move's state change.
    let mut seen: Vec<String> = Vec::new();
    loop {
        let s = c.rebalance(Action::Status, 0).await?;
        if s.run != run {
            return Err(CliError::WaitTimedOut(format!(
                "run {run} is no longer the latest (run {} is); see `cluster rebalance --status`",
                s.run
            )));
        }
        let r = report(s);
        let states: Vec<String> = r.moves.iter().map(|m| m.state.clone()).collect();
        if format == OutputFormat::Table {
            for (i, m) in r.moves.iter().enumerate() {
                if seen.get(i) != Some(&m.state) {
                    crate::outln!("{} {} -> {}: {}", m.partition, m.from, m.to, m.state);
                }
            }
        }
        seen = states;
        if r.finished {
            if format == OutputFormat::Table {
                crate::outln!();
            }
            return print(format, &r, run_table).map_err(out);
        }
        tokio::time::sleep(POLL).await;
    }
}
