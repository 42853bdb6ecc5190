//! The in-memory network: seeded loss, delay (so reordering) and
//! duplication, and links cut on purpose.

use super::*;

impl Cluster {
    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts one direction only.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    /// Cuts `id` off from every other node.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.node_ids() {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Splits the cluster: nodes talk only within their own side.
    pub fn split(&mut self, side: &[NodeId]) {
        let ids = self.node_ids();
        for a in &ids {
            for b in &ids {
                if side.contains(a) != side.contains(b) {
                    self.blocked.insert((*a, *b));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.config.faults = faults;
    }

    pub(super) fn send(&mut self, from: NodeId, to: NodeId, messages: Vec<GroupMessage>) {
        for m in &messages {
            *self.messages_sent.entry(m.group).or_default() += 1;
        }
        let f = self.config.faults.clone();
        if f.loss > 0.0 && self.rng.gen_bool(f.loss) {
            return;
        }
        let copies = if f.duplicate > 0.0 && self.rng.gen_bool(f.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = f.delay_ms;
            let delay = if hi > lo {
                self.rng.gen_range(lo..=hi)
            } else {
                lo
            };
            let key = self.next_payload;
            self.next_payload += 1;
            self.payloads.insert(key, messages.clone());
            self.next_seq += 1;
            self.network.push(Reverse((
                InFlight {
                    deliver_at: self.now + delay,
                    seq: self.next_seq,
                    from,
                    to,
                },
                key,
            )));
        }
    }
}
