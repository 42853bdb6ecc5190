//! ReadIndex reads of one group (Raft thesis 6.4), batched. Pure: the group
//! tells it when reads arrive, when raft-rs confirms a read index, how far
//! the state machine has applied and what time it is; it says which reads to
//! start a confirmation round for, which to serve and which to fail.
//!
//! Batching: at most one confirmation round is in flight per group. Reads
//! that arrive meanwhile queue up and share the next round: a round's
//! heartbeat must be sent after a read arrived for that read to be
//! linearizable, so a read may not join a round already under way.
//!
//! The same queue serves leader and follower reads: on a follower raft-rs
//! forwards the round to the leader and hands back the leader's commit
//! index; the follower then waits until it has applied that far.

use crate::types::{RequestId, Time};
use std::collections::VecDeque;

struct Round<Q> {
    ctx: Vec<u8>,
    deadline: Time,
    reads: Vec<(RequestId, Q, Time)>,
}

/// Reads of one group in their three stages: queued for the next round, in
/// the round being confirmed, confirmed and waiting to be applied.
pub struct ReadQueue<Q> {
    queued: Vec<(RequestId, Q, Time)>,
    round: Option<Round<Q>>,
    /// `(read index, request, query, deadline)`, in confirmation order.
    waiting: VecDeque<(u64, RequestId, Q, Time)>,
}

impl<Q> Default for ReadQueue<Q> {
    fn default() -> Self {
        ReadQueue {
            queued: Vec::new(),
            round: None,
            waiting: VecDeque::new(),
        }
    }
}

impl<Q> ReadQueue<Q> {
    pub fn len(&self) -> usize {
        self.queued.len() + self.round.as_ref().map_or(0, |r| r.reads.len()) + self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new read; it must be answered by `deadline`.
    pub fn push(&mut self, request_id: RequestId, query: Q, deadline: Time) {
        self.queued.push((request_id, query, deadline));
    }

    /// If no round is in flight and reads are queued, starts a round for
    /// all of them under `ctx` (unique per round) and returns true: the
    /// caller must then ask raft-rs for a read index with that context.
    pub fn start_round(&mut self, ctx: Vec<u8>, timeout_ms: u64, now: Time) -> bool {
        if self.round.is_some() || self.queued.is_empty() {
            return false;
        }
        self.round = Some(Round {
            ctx,
            deadline: now.plus_millis(timeout_ms),
            reads: std::mem::take(&mut self.queued),
        });
        true
    }

    /// raft-rs confirmed the round `ctx` at read index `index`. Contexts of
    /// abandoned rounds are ignored.
    pub fn confirmed(&mut self, ctx: &[u8], index: u64) {
        if self.round.as_ref().is_some_and(|r| r.ctx == ctx) {
            let round = self.round.take().expect("checked");
            for (rid, q, deadline) in round.reads {
                self.waiting.push_back((index, rid, q, deadline));
            }
        }
    }

    /// Confirmed reads whose index `applied` has reached, to serve now,
    /// with their read index.
    pub fn ready(&mut self, applied: u64) -> Vec<(RequestId, Q, u64)> {
        let mut out = Vec::new();
        // Indexes are confirmed in order within a term, but a round of a
        // new term may confirm a lower index than an earlier one: scan all.
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0 <= applied {
                let (index, rid, q, _) = self.waiting.remove(i).expect("in range");
                out.push((rid, q, index));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Reads past their deadline. A round that timed out is abandoned as a
    /// whole (its confirmation may never come: the leader was lost or had
    /// not committed in its term), so the next round can start.
    pub fn expire(&mut self, now: Time) -> Vec<RequestId> {
        let mut out = Vec::new();
        if self.round.as_ref().is_some_and(|r| r.deadline <= now) {
            out.extend(
                self.round
                    .take()
                    .expect("checked")
                    .reads
                    .into_iter()
                    .map(|r| r.0),
            );
        }
        self.queued.retain(|(rid, _, d)| {
            let keep = *d > now;
            if !keep {
                out.push(*rid);
            }
            keep
        });
        self.waiting.retain(|(_, rid, _, d)| {
            let keep = *d > now;
            if !keep {
                out.push(*rid);
            }
            keep
        });
        out
    }

    /// Abandons the round in flight (leadership changed: the old leader's
    /// answer can no longer be trusted to come); its reads are returned to
    /// fail. Queued and confirmed reads are unaffected.
    pub fn abandon_round(&mut self) -> Vec<RequestId> {
        self.round
            .take()
            .map(|r| r.reads.into_iter().map(|r| r.0).collect())
            .unwrap_or_default()
    }

    /// Every read, for failing when the group goes away.
    pub fn drain(&mut self) -> Vec<RequestId> {
        let mut out = self.abandon_round();
        out.extend(self.queued.drain(..).map(|r| r.0));
        out.extend(self.waiting.drain(..).map(|r| r.1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batch_behind_one_round_and_wait_for_apply() {
        let mut q: ReadQueue<&str> = ReadQueue::default();
        q.push(1, "a", Time(1000));
        assert!(q.start_round(b"r1".to_vec(), 500, Time(0)));
        // Arrivals during the round wait for the next one.
        q.push(2, "b", Time(1000));
        q.push(3, "c", Time(1000));
        assert!(!q.start_round(b"r2".to_vec(), 500, Time(1)));
        q.confirmed(b"r1", 10);
        assert_eq!(q.ready(9), vec![]);
        assert_eq!(q.ready(10), vec![(1, "a", 10)]);
        assert!(q.start_round(b"r2".to_vec(), 500, Time(2)));
        q.confirmed(b"stale", 99);
        q.confirmed(b"r2", 12);
        assert_eq!(q.ready(12), vec![(2, "b", 12), (3, "c", 12)]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_lost_round_times_out_and_the_next_one_starts() {
        let mut q: ReadQueue<&str> = ReadQueue::default();
        q.push(1, "a", Time(10_000));
        assert!(q.start_round(b"r1".to_vec(), 500, Time(0)));
        q.push(2, "b", Time(10_000));
        assert_eq!(q.expire(Time(499)), Vec::<RequestId>::new());
        assert_eq!(q.expire(Time(500)), vec![1]);
        assert!(q.start_round(b"r2".to_vec(), 500, Time(500)));
        // A late answer to the abandoned round changes nothing.
        q.confirmed(b"r1", 5);
        assert_eq!(q.len(), 1);
        assert_eq!(q.abandon_round(), vec![2]);
        assert!(q.is_empty());
    }

    #[test]
    fn confirmed_reads_expire_if_apply_never_catches_up() {
        let mut q: ReadQueue<&str> = ReadQueue::default();
        q.push(1, "a", Time(100));
        assert!(q.start_round(b"r".to_vec(), 1_000, Time(0)));
        q.confirmed(b"r", 50);
        assert_eq!(q.expire(Time(100)), vec![1]);
        assert!(q.is_empty());
    }
}
