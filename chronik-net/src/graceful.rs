//! A node's graceful shutdown: the driver's side of
//! [`chronik_core::shutdown`]. [`NodeHandle::shutdown`] steps the pure
//! state machine with what it observes (requests in flight, groups still
//! led, the WAL) and carries out each phase it enters.

use crate::node::{NodeError, NodeHandle};
use chronik_core::shutdown::{
    Observation, Phase, PhaseOutcome, PhaseReport, Shutdown, ShutdownConfig, ShutdownReport,
};
use chronik_core::Time;
use std::time::Duration;
use tokio::time::Instant;

/// A node through the phases before its stop (see
/// [`NodeHandle::shutdown_phases`]).
pub struct Stopping {
    pub shutdown: Shutdown,
    /// The WAL was synced and closed.
    pub wal_synced: bool,
    started: Instant,
}

impl Stopping {
    /// The report, as of a stop now.
    pub fn report(&mut self) -> ShutdownReport {
        self.shutdown
            .stopped(Time(self.started.elapsed().as_millis() as u64))
    }
}

/// How often a phase looks again at what it waits for.
const POLL: Duration = Duration::from_millis(5);

impl NodeHandle {
    /// Stops the node gracefully with the configured phase limits: drains
    /// requests, hands every group it leads to an in-sync peer, syncs and
    /// closes the WAL, then stops. The report says how long each phase
    /// took and what a phase that ran out of time left; the node is
    /// stopped either way. Everything acknowledged is durable whatever
    /// happens (replies follow the fsync).
    pub async fn shutdown(self) -> Result<ShutdownReport, NodeError> {
        let config = self.shutdown_config.clone();
        self.shutdown_with(config).await
    }

    /// [`NodeHandle::shutdown`] with other phase limits.
    pub async fn shutdown_with(self, config: ShutdownConfig) -> Result<ShutdownReport, NodeError> {
        let Stopping {
            shutdown: mut sd,
            wal_synced,
            started,
        } = self.shutdown_phases(config).await;
        let now = move || Time(started.elapsed().as_millis() as u64);
        self.stop_after_phases(&mut sd, wal_synced, now).await
    }

    /// The phases before the stop: drains, hands leadership over, closes
    /// the WAL. Returns the shutdown in its stop phase and whether the WAL
    /// was synced; the node then serves nothing (its servers answer
    /// `SHUTTING_DOWN`) until stopped. A simulator ends the process here
    /// (a process exit) rather than through the stop phase.
    pub async fn shutdown_phases(&self, config: ShutdownConfig) -> Stopping {
        let node = self.node_id;
        let start = Instant::now();
        let now = || Time(start.elapsed().as_millis() as u64);
        let sync_timeout = Duration::from_millis(config.sync_timeout_ms);
        let mut sd = Shutdown::new(config, now());
        self.gate.close();
        tracing::info!(
            node,
            "graceful shutdown: draining (new requests are answered SHUTTING_DOWN)"
        );
        let mut wal_synced = false;
        loop {
            let led = if sd.phase() == Phase::TransferLeadership {
                self.handle.hand_off_status().await.unwrap_or_default()
            } else {
                Vec::new()
            };
            let seen = Observation {
                in_flight: self.gate.in_flight(),
                led,
                wal_synced,
            };
            let Some(phase) = sd.advance(now(), &seen) else {
                tokio::time::sleep(POLL).await;
                continue;
            };
            if let Some(r) = sd.reports().last() {
                self.record_phase(r);
            }
            match phase {
                Phase::Drain => {}
                Phase::TransferLeadership => {
                    tracing::info!(node, "graceful shutdown: handing leadership over");
                    let _ = self.handle.begin_leaving().await;
                }
                Phase::SyncWal => {
                    tracing::info!(node, "graceful shutdown: syncing and closing the WAL");
                    wal_synced = match tokio::time::timeout(sync_timeout, self.handle.close()).await
                    {
                        Ok(Ok(Ok(()))) => true,
                        Ok(Ok(Err(e))) => {
                            tracing::error!(node, "WAL not synced at close: {e}");
                            false
                        }
                        Ok(Err(_)) => false, // the driver stopped on its own
                        Err(_) => false,     // the phase times out
                    };
                }
                Phase::Stop => break,
            }
        }
        Stopping {
            shutdown: sd,
            wal_synced,
            started: start,
        }
    }

    async fn stop_after_phases(
        self,
        sd: &mut Shutdown,
        wal_synced: bool,
        now: impl Fn() -> Time,
    ) -> Result<ShutdownReport, NodeError> {
        let node = self.node_id;
        let _ = self.shutdown.send(true);
        if !wal_synced {
            // Stuck in its close: nothing more it holds can be saved.
            self.driver.abort();
        }
        let driver = self.driver.await;
        for s in self.servers {
            let _ = s.await;
        }
        let report = sd.stopped(now());
        if let Some(r) = report.phases.last() {
            self.metrics
                .shutdown_phases
                .with_label_values(&[r.phase.name(), "completed"])
                .inc();
            self.metrics
                .shutdown_phase_seconds
                .with_label_values(&[r.phase.name()])
                .set(r.duration_ms as f64 / 1000.0);
        }
        if report.clean() {
            tracing::info!(
                node,
                total_ms = report.total_ms,
                "graceful shutdown complete"
            );
        } else {
            let left: Vec<String> = report
                .timed_out()
                .map(|(p, what)| format!("{p}: {}", what.join(", ")))
                .collect();
            tracing::warn!(
                node,
                total_ms = report.total_ms,
                timed_out = ?left,
                "shutdown complete, some phases ran out of time"
            );
        }
        match driver {
            Ok(Ok(())) => Ok(report),
            Ok(Err(e)) => Err(NodeError::Stopped(e)),
            // Aborted after its WAL phase timed out: the report says so.
            Err(e) if e.is_cancelled() => Ok(report),
            Err(e) => Err(NodeError::Stopped(format!("driver task failed: {e}"))),
        }
    }

    fn record_phase(&self, r: &PhaseReport) {
        let node = self.node_id;
        let outcome = match &r.outcome {
            PhaseOutcome::Completed => "completed",
            PhaseOutcome::TimedOut { .. } => "timed_out",
        };
        self.metrics
            .shutdown_phases
            .with_label_values(&[r.phase.name(), outcome])
            .inc();
        self.metrics
            .shutdown_phase_seconds
            .with_label_values(&[r.phase.name()])
            .set(r.duration_ms as f64 / 1000.0);
        match &r.outcome {
            PhaseOutcome::Completed => tracing::info!(
                node,
                phase = %r.phase,
                duration_ms = r.duration_ms,
                detail = %r.detail,
                "shutdown phase completed"
            ),
            PhaseOutcome::TimedOut { pending } => tracing::warn!(
                node,
                phase = %r.phase,
                duration_ms = r.duration_ms,
                ?pending,
                detail = %r.detail,
                "shutdown phase timed out"
            ),
        }
    }
}
