//! The phases of a graceful shutdown, as a state machine the driver steps.

use super::ShutdownConfig;
use crate::{GroupId, Time};
use std::collections::BTreeMap;

/// Where a graceful shutdown stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// New requests are refused; those in flight finish.
    Drain,
    /// Every group this node leads is handed to another node.
    TransferLeadership,
    /// The WAL is synced and closed.
    SyncWal,
    /// Ticks, peer streams and servers end.
    Stop,
}

impl Phase {
    /// The name in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Drain => "drain",
            Phase::TransferLeadership => "transfer_leadership",
            Phase::SyncWal => "sync_wal",
            Phase::Stop => "stop",
        }
    }

    fn next(self) -> Phase {
        match self {
            Phase::Drain => Phase::TransferLeadership,
            Phase::TransferLeadership => Phase::SyncWal,
            Phase::SyncWal | Phase::Stop => Phase::Stop,
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A group this node still leads (or led, and whose new leader it has not
/// heard from yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedGroup {
    pub group: GroupId,
    /// `metadata` or `topic/partition`, for the report.
    pub name: String,
    /// Some other voter exists: without one there is nobody to hand the
    /// group to, and no point in waiting.
    pub transferable: bool,
}

/// What the driver saw of the node.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// Client and admin requests accepted and not answered yet.
    pub in_flight: usize,
    /// Groups whose leadership has not been taken over yet.
    pub led: Vec<LedGroup>,
    /// Everything handed to the WAL is synced and its files are closed.
    pub wal_synced: bool,
}

/// How a phase ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PhaseOutcome {
    Completed,
    /// The phase's time ran out; `pending` says what was left (requests,
    /// groups by name).
    TimedOut {
        pending: Vec<String>,
    },
}

/// One finished phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseReport {
    pub phase: Phase,
    pub duration_ms: u64,
    pub outcome: PhaseOutcome,
    /// What the phase did, for the log (groups handed over, groups with
    /// nobody to take them...).
    pub detail: String,
}

/// A finished shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    pub phases: Vec<PhaseReport>,
    pub total_ms: u64,
}

impl ShutdownReport {
    /// Every phase completed in time (the process exits 0).
    pub fn clean(&self) -> bool {
        self.phases
            .iter()
            .all(|p| p.outcome == PhaseOutcome::Completed)
    }

    /// The phases that timed out, with what they left.
    pub fn timed_out(&self) -> impl Iterator<Item = (&Phase, &Vec<String>)> {
        self.phases.iter().filter_map(|p| match &p.outcome {
            PhaseOutcome::TimedOut { pending } => Some((&p.phase, pending)),
            PhaseOutcome::Completed => None,
        })
    }
}

/// A graceful shutdown in progress. The driver calls [`Shutdown::advance`]
/// whenever it may have changed something (and at
/// [`Shutdown::poll_timeout`] at the latest), acts on the phase returned
/// when it changes, and calls [`Shutdown::stopped`] once it has stopped.
#[derive(Clone, Debug)]
pub struct Shutdown {
    config: ShutdownConfig,
    phase: Phase,
    started: Time,
    phase_started: Time,
    /// Per group led when first seen: until when its transfer may take.
    transfer_deadlines: BTreeMap<GroupId, (String, Time)>,
    /// Groups nobody could take (no other voter).
    alone: Vec<String>,
    /// Groups handed over.
    handed_over: usize,
    reports: Vec<PhaseReport>,
}

impl Shutdown {
    pub fn new(config: ShutdownConfig, now: Time) -> Self {
        Shutdown {
            config,
            phase: Phase::Drain,
            started: now,
            phase_started: now,
            transfer_deadlines: BTreeMap::new(),
            alone: Vec::new(),
            handed_over: 0,
            reports: Vec::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The phases finished so far.
    pub fn reports(&self) -> &[PhaseReport] {
        &self.reports
    }

    /// Latest time the driver must call [`Shutdown::advance`] again, if
    /// nothing else happens.
    pub fn poll_timeout(&self) -> Time {
        match self.phase {
            Phase::Drain => self.phase_started.plus_millis(self.config.drain_timeout_ms),
            Phase::TransferLeadership => self
                .transfer_deadlines
                .values()
                .map(|(_, t)| *t)
                .max()
                .unwrap_or(self.phase_started)
                .max(
                    self.phase_started
                        .plus_millis(self.config.transfer_timeout_ms),
                ),
            Phase::SyncWal => self.phase_started.plus_millis(self.config.sync_timeout_ms),
            Phase::Stop => self.phase_started,
        }
    }

    /// Takes what the driver observed at `now`; returns the new phase when
    /// the current one ended (completed or timed out). Phases may end one
    /// after the other in one call only through repeated calls: each call
    /// ends at most one, so the driver acts on every phase it enters.
    pub fn advance(&mut self, now: Time, seen: &Observation) -> Option<Phase> {
        let elapsed = now
            .as_millis()
            .saturating_sub(self.phase_started.as_millis());
        let ended = match self.phase {
            Phase::Drain => {
                if seen.in_flight == 0 {
                    Some((PhaseOutcome::Completed, String::new()))
                } else if elapsed >= self.config.drain_timeout_ms {
                    Some((
                        PhaseOutcome::TimedOut {
                            pending: vec![format!("{} requests in flight", seen.in_flight)],
                        },
                        String::new(),
                    ))
                } else {
                    None
                }
            }
            Phase::TransferLeadership => self.transfer_progress(now, seen),
            Phase::SyncWal => {
                if seen.wal_synced {
                    Some((PhaseOutcome::Completed, String::new()))
                } else if elapsed >= self.config.sync_timeout_ms {
                    Some((
                        PhaseOutcome::TimedOut {
                            pending: vec!["WAL not synced".into()],
                        },
                        String::new(),
                    ))
                } else {
                    None
                }
            }
            Phase::Stop => None,
        };
        let (outcome, detail) = ended?;
        self.end_phase(now, outcome, detail);
        Some(self.phase)
    }

    /// Records that the node stopped at `now`; returns the whole report.
    pub fn stopped(&mut self, now: Time) -> ShutdownReport {
        while self.phase != Phase::Stop {
            // Stopped early (a second signal): the phases left are cut
            // short and reported as timed out.
            self.end_phase(
                now,
                PhaseOutcome::TimedOut {
                    pending: vec!["stopped at once".into()],
                },
                String::new(),
            );
        }
        if self.reports.last().map(|r| r.phase) != Some(Phase::Stop) {
            self.reports.push(PhaseReport {
                phase: Phase::Stop,
                duration_ms: now
                    .as_millis()
                    .saturating_sub(self.phase_started.as_millis()),
                outcome: PhaseOutcome::Completed,
                detail: String::new(),
            });
        }
        ShutdownReport {
            phases: self.reports.clone(),
            total_ms: now.as_millis().saturating_sub(self.started.as_millis()),
        }
    }

    fn transfer_progress(
        &mut self,
        now: Time,
        seen: &Observation,
    ) -> Option<(PhaseOutcome, String)> {
        if crate::planted::active(crate::planted::Bug::ShutdownSkipsTransfer) {
            // Planted bug (simulation builds only): the node goes on to
            // stop as soon as the transfers are asked for.
            return Some((PhaseOutcome::Completed, "transfers not awaited".into()));
        }
        let timeout = self.config.transfer_timeout_ms;
        let mut waiting = Vec::new();
        for g in &seen.led {
            if !g.transferable {
                if !self.alone.contains(&g.name) {
                    self.alone.push(g.name.clone());
                }
                continue;
            }
            let (_, deadline) = self
                .transfer_deadlines
                .entry(g.group)
                .or_insert_with(|| (g.name.clone(), now.plus_millis(timeout)));
            waiting.push((g.name.clone(), *deadline));
        }
        self.handed_over = self
            .transfer_deadlines
            .keys()
            .filter(|g| !seen.led.iter().any(|l| l.group == **g))
            .count();
        let mut detail = format!("{} groups handed over", self.handed_over);
        if !self.alone.is_empty() {
            detail.push_str(&format!(
                "; nobody to take {} (no other voter)",
                self.alone.join(", ")
            ));
        }
        if waiting.is_empty() {
            return Some((PhaseOutcome::Completed, detail));
        }
        if waiting.iter().all(|(_, deadline)| now >= *deadline) {
            let mut pending: Vec<String> = waiting.into_iter().map(|(n, _)| n).collect();
            pending.sort();
            return Some((PhaseOutcome::TimedOut { pending }, detail));
        }
        None
    }

    fn end_phase(&mut self, now: Time, outcome: PhaseOutcome, detail: String) {
        self.reports.push(PhaseReport {
            phase: self.phase,
            duration_ms: now
                .as_millis()
                .saturating_sub(self.phase_started.as_millis()),
            outcome,
            detail,
        });
        self.phase = self.phase.next();
        self.phase_started = now;
    }
}
