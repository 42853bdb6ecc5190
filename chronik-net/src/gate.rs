//! Admission of client and admin requests. Open while the node serves;
//! a graceful shutdown closes it (the drain phase): new requests are then
//! answered `SHUTTING_DOWN`, retriable, so clients go to another node at
//! once, while those already admitted finish and are counted until then.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub(crate) struct RequestGate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
}

/// A request admitted and not answered yet; dropping it ends it.
#[must_use]
pub(crate) struct Admitted<'a>(&'a RequestGate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RequestGate {
    /// Admits a request unless the gate is closed. The count goes up
    /// before the check, so a request that races with `close` is either
    /// refused or counted by the drain.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(self);
        if self.closed.load(Ordering::SeqCst) {
            return None; // dropping `admitted` takes the count back
        }
        Some(admitted)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether a graceful shutdown closed the gate (the node drains): the
    /// gRPC health service reports it (not built in simulation).
    #[cfg_attr(madsim, allow(dead_code))]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Requests admitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_refuses_and_counts_only_what_it_admitted() {
        let gate = RequestGate::default();
        let a = gate.enter().expect("open");
        let b = gate.enter().expect("open");
        assert_eq!(gate.in_flight(), 2);
        gate.close();
        assert!(gate.enter().is_none());
        assert_eq!(gate.in_flight(), 2, "a refused request is not in flight");
        drop(a);
        drop(b);
        assert_eq!(gate.in_flight(), 0);
    }
}
