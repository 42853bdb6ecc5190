//! Graceful shutdown and rolling restarts. Pure: the driver observes the
//! node (requests in flight, groups it still leads, WAL state), feeds what
//! it saw with the time, and acts on the phase the state machine is in.
//!
//! A node that stops at once leaves every group it leads without a leader
//! for an election timeout. A graceful shutdown avoids that gap:
//! 1. **drain**: new requests are refused with the retriable
//!    `SHUTTING_DOWN` (clients go elsewhere at once) while those in flight
//!    finish;
//! 2. **transfer leadership**: every group this node leads is handed to
//!    its best in-sync follower, and the phase waits until another node is
//!    confirmed as leader;
//! 3. **sync the WAL**: everything written is fsynced and files closed;
//! 4. **stop**: ticks, peer streams and servers end.
//!
//! ```
//! use chronik_core::shutdown::{Observation, Phase, Shutdown, ShutdownConfig};
//! use chronik_core::Time;
//!
//! let mut s = Shutdown::new(ShutdownConfig::default(), Time(0));
//! assert_eq!(s.phase(), Phase::Drain);
//! // No request in flight: the drain is over at once.
//! let idle = Observation { in_flight: 0, led: vec![], wal_synced: false };
//! assert_eq!(s.advance(Time(5), &idle), Some(Phase::TransferLeadership));
//! // This node leads nothing: straight to the WAL sync.
//! assert_eq!(s.advance(Time(6), &idle), Some(Phase::SyncWal));
//! let synced = Observation { wal_synced: true, ..idle };
//! assert_eq!(s.advance(Time(9), &synced), Some(Phase::Stop));
//! let report = s.stopped(Time(10));
//! assert!(report.clean());
//! ```

mod phases;
mod restart_check;

pub use phases::{
    LedGroup, Observation, Phase, PhaseOutcome, PhaseReport, Shutdown, ShutdownReport,
};
pub use restart_check::{restart_check, RestartCheck};

/// Time limits of a graceful shutdown's phases (`[shutdown]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for the requests in flight to finish.
    pub drain_timeout_ms: u64,
    /// Longest wait for each group's leadership to be taken over.
    pub transfer_timeout_ms: u64,
    /// Longest wait for the WAL to be synced and closed.
    pub sync_timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_ms: 10_000,
            transfer_timeout_ms: 30_000,
            sync_timeout_ms: 5_000,
        }
    }
}

/// No phase may wait longer than an hour: a typo, not a choice.
const PHASE_TIMEOUT_MAX_MS: u64 = 3_600_000;

impl ShutdownConfig {
    pub fn validate(&self) -> Result<(), crate::error::ConfigError> {
        for (field, v) in [
            ("shutdown.drain_timeout_ms", self.drain_timeout_ms),
            ("shutdown.transfer_timeout_ms", self.transfer_timeout_ms),
            ("shutdown.sync_timeout_ms", self.sync_timeout_ms),
        ] {
            if v == 0 || v > PHASE_TIMEOUT_MAX_MS {
                return Err(crate::error::ConfigError::InvalidField {
                    field,
                    reason: format!("must be between 1 and {PHASE_TIMEOUT_MAX_MS} ms, got {v}"),
                });
            }
        }
        Ok(())
    }

    /// The longest a graceful shutdown can take, for service managers'
    /// stop timeouts.
    pub fn worst_case_ms(&self) -> u64 {
        self.drain_timeout_ms + self.transfer_timeout_ms + self.sync_timeout_ms
    }
}

#[cfg(test)]
mod tests;
