//! The node-side checker: every simulated node reports its engine's events,
//! the batches its WAL reports durable and its metadata here, and the
//! simulator tells it when a node is killed. It checks, independently of the
//! engine's own bookkeeping:
//! - election safety, state machine safety, apply exactly once in order,
//!   linearizable reads served only once applied, acknowledgements against
//!   the ISR (the core [`Checker`]);
//! - metadata equal on every node at equal applied index;
//! - durability at every crash: what the WAL reported durable is in the
//!   disk's synced image, so the node recovers exactly the state after some
//!   batch at or past the last synced one;
//! - one vote per term per node, across restarts (from the hard states the
//!   node persisted);
//! - a restarted engine starts from what its disk holds (term, vote, log);
//! - every acknowledged produce's entry is on the disks of at least
//!   `min_insync_replicas` members of the ISR the leader had applied, at the
//!   moment of the acknowledgement (from the checker's own models of what
//!   each node's WAL wrote, not from the leader's progress tracking);
//! - leader completeness: a node that becomes leader in term T has written
//!   the highest entry any node applied in that group while no node had
//!   reported a term of T or above (so committed in an earlier term; log
//!   matching, checked by the core checker's apply digests, covers the
//!   entries below it);
//! - replies that promise durability (a vote granted, entries
//!   acknowledged to the leader) leave only once the sender's WAL reported
//!   what they promise durable;
//! - the ISR in every metadata state a node applies is a non-empty set of
//!   distinct replicas, and a leader outside the ISR it applied does not
//!   accept produces unless its topic allows unclean leader election;
//! - the ISR's lag bound: while a leader accepts produces, every other
//!   member of the ISR it applied holds the entry that leader accepted
//!   [`IsrBound::window_ms`] earlier, unless the leader has proposed an
//!   ISR without that member since (its removal then waits on the
//!   metadata group). Whether a replica holds an entry comes from the
//!   checker's model of that replica's WAL, not from the leader's progress
//!   tracking.
//!   (ReadIndex reads are linearizable on any replica, in sync or not; a
//!   leader-consistency read passes the same leadership gate as a produce.)
//!
//! Each event is also folded into the run's trace hash.

use chronik_core::persist::DurableGroup;
use chronik_core::testing::Checker;
use chronik_core::{
    DurableState, Event, GroupId, GroupStatus, GroupUpdate, MetadataState, NodeId, PersistBatch,
};
use chronik_net::disk::MemDisk;
use chronik_net::wal::{Wal, WalConfig};
use chronik_net::{CrashPoint, EngineObserver};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

// Simulated time in simulations (the checker only runs there; the normal
// build compiles it for its unit tests).
#[cfg(madsim)]
use madsim::time::Instant as SimInstant;
#[cfg(not(madsim))]
use std::time::Instant as SimInstant;

/// How long after a node restarted from a cut WAL the entries the cut took
/// still count as held: its leaders learn of the loss from its first
/// answers, once their streams to it reconnect (up to a second and more of
/// backoff) and the ISR lag window passes.
const CUT_GRACE_MS: u64 = 3_000;

/// Most unsynced batches remembered after the last synced one; past it the
/// crash check of that node is skipped (and counted) rather than grow.
const UNSYNCED_BATCHES_MAX: usize = 4096;

/// What a crash must preserve of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    /// (term, index) of the last entry, or of the snapshot if the log is
    /// empty behind it.
    pub last: (u64, u64),
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl Mark {
    fn of(g: &DurableGroup) -> Mark {
        let snap = g
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.get_metadata().term, s.get_metadata().index));
        Mark {
            last: g.entries.last().map_or(snap, |e| (e.term, e.index)),
            term: g.hard_state.term,
            vote: g.hard_state.vote,
            commit: g.hard_state.commit,
        }
    }
}

fn marks(state: &DurableState) -> BTreeMap<GroupId, Mark> {
    state
        .groups
        .iter()
        .map(|(id, g)| (*id, Mark::of(g)))
        .collect()
}

/// What a WAL cut must not take: every term and vote the node had durable
/// (they were promises); and the groups the damaged record carried
/// (`None`: all), in each of which the restarted node must abstain.
type Promised = (BTreeMap<GroupId, Mark>, Option<BTreeSet<GroupId>>);

/// The checker's own model of one node's durable state.
#[derive(Default)]
struct NodeModel {
    /// Every batch reported durable since the node last (re)started, folded
    /// onto what it recovered.
    state: DurableState,
    /// Marks after the last batch that was synced, then after each later
    /// one: a crash must leave exactly one of these.
    candidates: Vec<BTreeMap<GroupId, Mark>>,
    /// Skip the crash check: the model could not follow (bounded memory).
    lost_track: bool,
    /// Commit index per group in this incarnation: never decreases.
    commit: BTreeMap<GroupId, u64>,
    /// What the disk held at the last crash: the restarted engine must
    /// start from it.
    recovered: Option<BTreeMap<GroupId, Mark>>,
    /// Highest last index each group's durable log reached in this
    /// incarnation (a later truncation does not lower it).
    peak_last: BTreeMap<GroupId, u64>,
    /// Groups this node dropped (their last messages may still leave),
    /// with what it held of each when it dropped it: an acknowledgement
    /// the replica counted towards may be checked after the drop.
    dropped: BTreeMap<GroupId, DurableGroup>,
    /// After a WAL cut: per group, the `(index, term)` of every entry the
    /// node had durable before the cut and lost with it. Once one of them
    /// is known committed, the node may not vote in that group until its
    /// log holds it again: a quorum may have counted its acknowledgement.
    /// Each with whether it was known committed at the cut.
    owed: BTreeMap<GroupId, Vec<(u64, u64, bool)>>,
    /// When the node restarted after a cut (simulated ms): entries it lost
    /// count as held (storage damage, not a missing replica) until its
    /// leaders could have learnt of the loss.
    restarted_at_ms: Option<u64>,
    /// The term and vote of each group a WAL cut lost whole: recreating
    /// the group persists them again, which casts no new vote.
    kept_votes: BTreeMap<GroupId, (u64, u64)>,
    /// What the disk held before a WAL cut, for the restart after it.
    promised: Option<Promised>,
}

impl NodeModel {
    /// The node is down and will restart from `state` (what its disk
    /// recovers): a new incarnation's model starts there.
    fn restart_from(&mut self, state: DurableState) {
        let got = marks(&state);
        self.state = state;
        self.peak_last = got.iter().map(|(g, m)| (*g, m.last.1)).collect();
        self.candidates = vec![got.clone()];
        self.lost_track = false;
        self.commit.clear();
        self.recovered = Some(got);
    }
}

/// The ISR timing the simulated nodes run with, for the lag-bound check.
#[derive(Clone, Copy, Debug)]
pub struct IsrBound {
    /// `isr_max_lag_ms`.
    pub max_lag_ms: u64,
    /// The tick interval: the leader looks at its followers once a tick.
    pub tick_ms: u64,
    /// How long a leader waits after proposing an ISR change before it
    /// decides again (`tick_ms` times the election ticks).
    pub retry_ms: u64,
}

impl IsrBound {
    /// How far back an entry a leader accepted must be on every member of
    /// its ISR: a member that lacks it has not caught up for longer than
    /// `max_lag_ms`, and the leader's next decision (at most a retry wait
    /// and a tick later) proposes to drop it.
    pub fn window_ms(&self) -> u64 {
        self.max_lag_ms + self.retry_ms + 3 * self.tick_ms
    }
}

/// One leadership of a partition group, for the ISR lag-bound check.
#[derive(Default)]
struct Leadership {
    term: u64,
    /// (ms, index) of the produces it accepted, oldest first; trimmed to
    /// one at or before the window.
    accepts: std::collections::VecDeque<(u64, u64)>,
    /// When the first produce was accepted: the leader starts tracking its
    /// followers at most a tick later, with a fresh grace period.
    first_accept_ms: Option<u64>,
    /// (ms, ISR) of each change it proposed.
    proposals: Vec<(u64, Vec<NodeId>)>,
}

/// Counters of what the node-side checks saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeCounts {
    /// Replica moves' promotions checked against the ISR.
    pub promotions_checked: u64,
    pub moves_finished: u64,
    pub moves_rolled_back: u64,
    pub leader_elections: u64,
    pub entries_applied: u64,
    pub produce_acks_checked: u64,
    pub reads_checked: u64,
    pub metadata_compared: u64,
    pub snapshots_installed: u64,
    pub isr_shrinks_applied: u64,
    pub crashes_checked: u64,
    pub restarts_checked: u64,
    pub votes_recorded: u64,
    /// Acknowledged produces whose entry was found on enough disks.
    pub acks_checked_durable: u64,
    /// Elections checked for leader completeness.
    pub leaders_checked_complete: u64,
    /// Acknowledgements checked against the acknowledging leader's ISR.
    pub produces_checked_leader_in_isr: u64,
    /// State machine fingerprints compared across replicas (applies,
    /// snapshot installs, restarts).
    pub states_compared: u64,
    /// Messages sent, checked for replies released before durable.
    pub replies_checked_durable: u64,
    /// Produces accepted by a leader outside its ISR on unclean topics.
    pub unclean_accepts: u64,
    /// ISR members checked to hold what the leader accepted a lag window
    /// earlier.
    pub isr_members_checked_in_bound: u64,
    /// Replicas whose state did not recover from their disk, rebuilt from
    /// a peer's snapshot.
    pub replicas_rebuilt: u64,
    /// Graceful shutdowns checked to leave the node leading nothing.
    pub graceful_stops_checked: u64,
    pub wal_cuts_checked: u64,
    pub owed_votes_checked: u64,
}

impl std::ops::AddAssign for NodeCounts {
    fn add_assign(&mut self, b: NodeCounts) {
        self.leader_elections += b.leader_elections;
        self.entries_applied += b.entries_applied;
        self.produce_acks_checked += b.produce_acks_checked;
        self.reads_checked += b.reads_checked;
        self.metadata_compared += b.metadata_compared;
        self.snapshots_installed += b.snapshots_installed;
        self.isr_shrinks_applied += b.isr_shrinks_applied;
        self.crashes_checked += b.crashes_checked;
        self.restarts_checked += b.restarts_checked;
        self.votes_recorded += b.votes_recorded;
        self.acks_checked_durable += b.acks_checked_durable;
        self.leaders_checked_complete += b.leaders_checked_complete;
        self.produces_checked_leader_in_isr += b.produces_checked_leader_in_isr;
        self.states_compared += b.states_compared;
        self.replies_checked_durable += b.replies_checked_durable;
        self.unclean_accepts += b.unclean_accepts;
        self.isr_members_checked_in_bound += b.isr_members_checked_in_bound;
        self.replicas_rebuilt += b.replicas_rebuilt;
        self.promotions_checked += b.promotions_checked;
        self.moves_finished += b.moves_finished;
        self.moves_rolled_back += b.moves_rolled_back;
        self.graceful_stops_checked += b.graceful_stops_checked;
        self.wal_cuts_checked += b.wal_cuts_checked;
        self.owed_votes_checked += b.owed_votes_checked;
    }
}

#[derive(Default)]
struct Inner {
    core: Checker,
    nodes: BTreeMap<NodeId, NodeModel>,
    /// (node, group, term) -> the vote the node persisted.
    votes: BTreeMap<(NodeId, GroupId, u64), NodeId>,
    crashes_checked: u64,
    restarts_checked: u64,
    /// WAL cuts checked (detection, kept promises, abstention).
    wal_cuts_checked: u64,
    /// Votes a node cast while it still owed entries from a WAL cut,
    /// checked against the committed ones.
    owed_votes_checked: u64,
    /// Term of each applied (group, index), as any node applied it.
    applied_term: BTreeMap<(GroupId, u64), u64>,
    /// (ISR, min_insync_replicas) of each group as each node last applied.
    isr_of: BTreeMap<(NodeId, GroupId), (Vec<NodeId>, u32)>,
    acks_checked_durable: u64,
    /// Highest term any node of each group reported so far.
    max_term: BTreeMap<GroupId, u64>,
    /// Per group and per bound B: (index, term) of the highest entry any
    /// node applied while no node had reported a term above B. It was
    /// committed by the leader of some term at most B (that leader reported
    /// its term before committing), so every leader of a term above B must
    /// hold it.
    committed_by: BTreeMap<GroupId, BTreeMap<u64, (u64, u64)>>,
    /// Groups each node leads now (from its role changes).
    leading: BTreeMap<NodeId, std::collections::BTreeSet<GroupId>>,
    /// Groups of topics that allow unclean leader election.
    unclean: std::collections::BTreeSet<GroupId>,
    /// Elections checked for leader completeness.
    leaders_checked_complete: u64,
    /// Acknowledgements checked against the acknowledging leader's ISR.
    produces_checked_leader_in_isr: u64,
    /// Messages checked against what the sender's WAL reported durable.
    replies_checked_durable: u64,
    /// Produces accepted by a leader outside its ISR on a topic that
    /// allows unclean leader election.
    unclean_accepts: u64,
    /// ISR of each (node, group) from the node's ISR change events only.
    isr_in_order: BTreeMap<(NodeId, GroupId), Vec<NodeId>>,
    /// Crash points armed per node: the node stops dead the next time it
    /// reaches one.
    armed: BTreeMap<NodeId, CrashPoint>,
    /// Nodes that stopped at an armed crash point, for the harness to kill.
    frozen: Vec<(NodeId, CrashPoint)>,
    /// Crash points reached, by kind.
    crash_points_fired: BTreeMap<CrashPoint, u64>,
    /// The ISR timing the nodes run with (`None`: no lag-bound check).
    isr_bound: Option<IsrBound>,
    /// Current leaderships of partition groups, by (leader, group).
    leaderships: BTreeMap<(NodeId, GroupId), Leadership>,
    isr_members_checked_in_bound: u64,
    /// (node, group) replicas rebuilding a state that did not recover from
    /// their disk, until a snapshot installs.
    rebuilding: std::collections::BTreeSet<(NodeId, GroupId)>,
    replicas_rebuilt: u64,
    /// (group, node) pairs some node applied an ISR holding: a replica
    /// move may promote its new replica only once it was in the ISR.
    ever_in_isr: std::collections::BTreeSet<(GroupId, NodeId)>,
    /// Replica promotions checked against the ISR, and moves finished and
    /// rolled back (each counted once, by the first node to apply it).
    promotions_checked: u64,
    /// Every voluntary leadership handoff started, in order: (group, to).
    transfers: Vec<(GroupId, NodeId)>,
    /// Replica-move decisions applied by any node (starts, finishes,
    /// rollbacks): placement changing under a probe.
    move_decisions: u64,
    moves_finished: std::collections::BTreeSet<(GroupId, String)>,
    moves_rolled_back: std::collections::BTreeSet<(GroupId, String)>,
    graceful_stops_checked: u64,
    /// Nodes whose partition storage a fault damaged (rot) or failed (a
    /// partition disk error): the only ones with a reason to rebuild a
    /// replica. Anywhere else a rebuild means the engine let its files
    /// fall behind what it made durable (a snapshot compacted before the
    /// segments it names were synced, say).
    storage_damaged: std::collections::BTreeSet<NodeId>,
    /// Simulated time of the first event: times are kept as milliseconds
    /// since.
    epoch: Option<SimInstant>,
    /// The time, when set by a test outside a simulation.
    fixed_now_ms: Option<u64>,
}

impl Inner {
    /// Whether `node`'s WAL wrote the entry (`index`, `term`) of `group`
    /// (or a snapshot past it).
    fn holds(&self, node: NodeId, group: GroupId, index: u64, term: u64) -> bool {
        self.nodes.get(&node).is_some_and(|m| {
            m.state
                .groups
                .get(&group)
                .or_else(|| m.dropped.get(&group))
                .is_some_and(|g| group_holds(g, index, term))
        })
    }

    /// Whether a WAL cut took entry (`index`, `term`) of `group` from
    /// `node` (which held it durably before): storage damage, not a
    /// replica that never had it.
    /// Only until [`CUT_GRACE_MS`] after the node restarted: later, a
    /// leader still counting the lost entry is a bug.
    fn cut_from(&self, node: NodeId, group: GroupId, index: u64, term: u64, now: u64) -> bool {
        self.nodes.get(&node).is_some_and(|m| {
            m.restarted_at_ms.is_none_or(|t| now <= t + CUT_GRACE_MS)
                && m.owed
                    .get(&group)
                    .is_some_and(|o| o.iter().any(|(i, t, _)| (*i, *t) == (index, term)))
        })
    }

    /// `node` became leader of `group` in `term`: it must hold every entry
    /// committed so far.
    fn on_leader(&mut self, node: NodeId, group: GroupId, term: u64) {
        self.leading.entry(node).or_default().insert(group);
        let Some((index, entry_term)) = self
            .committed_by
            .get(&group)
            .and_then(|m| m.range(..term).map(|(_, e)| *e).max())
        else {
            return;
        };
        if self.nodes.get(&node).is_some_and(|m| m.lost_track) {
            return;
        }
        self.leaders_checked_complete += 1;
        if !self.holds(node, group, index, entry_term) {
            // Who elected it, and whether each voter held the entry: where
            // the fault lies (a voter that lost the entry, or a quorum
            // that never had it).
            let voters: Vec<String> = self
                .votes
                .iter()
                .filter(|((_, g, t), v)| *g == group && *t == term && **v == node)
                .map(|((n, _, _), _)| {
                    let held = self.holds(*n, group, index, entry_term);
                    format!("{n} ({})", if held { "held it" } else { "lacked it" })
                })
                .collect();
            self.core.violation(format!(
                "leader completeness: node {node} became leader of group {group} in term {term} without the committed entry {index} (term {entry_term}); durable votes for it: [{}]",
                voters.join(", ")
            ));
        }
    }

    /// `node` accepted a produce to `group` at `index`: as its leader it
    /// must have been in the ISR it had applied by then, unless unclean
    /// election is allowed. The ISR is taken from the node's ISR change
    /// events, in order with this one (its metadata reports may run ahead
    /// of the events of the same step); unknown after a restart or a
    /// metadata snapshot install until the next change.
    fn check_accepting_leader(&mut self, node: NodeId, group: GroupId, index: u64) {
        if !self.leading.get(&node).is_some_and(|g| g.contains(&group)) {
            return;
        }
        let Some(isr) = self.isr_in_order.get(&(node, group)) else {
            return;
        };
        if self.unclean.contains(&group) {
            if !isr.contains(&node) {
                self.unclean_accepts += 1;
            }
            return;
        }
        self.produces_checked_leader_in_isr += 1;
        if !isr.contains(&node) {
            let isr = isr.clone();
            self.core.violation(format!(
                "ISR: node {node} accepted a produce (entry {index}) as leader of group {group} while outside its ISR {isr:?} (unclean leader election off)"
            ));
        }
    }

    fn now_ms(&mut self) -> u64 {
        if let Some(ms) = self.fixed_now_ms {
            return ms;
        }
        let now = SimInstant::now();
        let epoch = *self.epoch.get_or_insert(now);
        now.duration_since(epoch).as_millis() as u64
    }

    /// `node`, leading `group`, accepted a produce at `index`: every other
    /// member of the ISR it applied must hold the entry it accepted a lag
    /// window ago (see [`IsrBound::window_ms`]), or have been proposed out
    /// since. Skipped while a later term exists (a deposed leader may not
    /// know yet, and its entries may be gone from the others), and for
    /// topics that allow unclean leader election.
    fn check_isr_lag_bound(&mut self, node: NodeId, group: GroupId, index: u64) {
        let Some(bound) = self.isr_bound else {
            return;
        };
        let now = self.now_ms();
        let window = bound.window_ms();
        let isr = self.isr_in_order.get(&(node, group)).cloned();
        let max_term = self.max_term.get(&group).copied().unwrap_or(0);
        let unclean = self.unclean.contains(&group);
        let Some(l) = self.leaderships.get_mut(&(node, group)) else {
            return;
        };
        let first = *l.first_accept_ms.get_or_insert(now);
        while l.accepts.len() > 1 && l.accepts[1].0 + window <= now {
            l.accepts.pop_front();
        }
        let reference = l
            .accepts
            .front()
            .copied()
            .filter(|(at, _)| at + window <= now && *at >= first + 2 * bound.tick_ms);
        l.accepts.push_back((now, index));
        if let Some((oldest, _)) = l.accepts.front() {
            let oldest = *oldest;
            l.proposals.retain(|(at, _)| *at >= oldest);
        }
        let (Some((at, entry)), Some(isr)) = (reference, isr) else {
            return;
        };
        if unclean || max_term > l.term || !isr.contains(&node) {
            return;
        }
        let term = l.term;
        let proposed_out: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|r| {
                l.proposals
                    .iter()
                    .any(|(p_at, p)| *p_at >= at && !p.contains(r))
            })
            .collect();
        for r in isr {
            if r == node
                || proposed_out.contains(&r)
                || self.nodes.get(&r).is_none_or(|m| m.lost_track)
            {
                continue;
            }
            // An entry a WAL cut took from the member: it held it when
            // the leader counted it, and the leader learns of the loss
            // only from the member's next answer.
            if self.cut_from(r, group, entry, term, now) {
                continue;
            }
            self.isr_members_checked_in_bound += 1;
            if !self.holds(r, group, entry, term) {
                self.core.violation(format!(
                    "ISR lag bound: node {node}, leading group {group} in term {term}, accepted a produce at {now} ms with node {r} in its ISR, but node {r} does not hold entry {entry} that it accepted at {at} ms ({} ms earlier, past the {} ms bound), and no ISR without node {r} was proposed since",
                    now - at,
                    window
                ));
            }
        }
    }

    /// The ISR of every partition in a metadata state a node applied.
    fn check_isr_shape(&mut self, node: NodeId, metadata: &MetadataState) {
        for t in metadata.topics() {
            for p in &t.partitions {
                let mut hosts = p.replicas.clone();
                hosts.sort_unstable();
                hosts.dedup();
                if hosts.len() != t.replication_factor as usize {
                    self.core.violation(format!(
                        "replication factor: node {node} applied replicas {:?} for {}-{} (group {}) at metadata index {}, not {} distinct nodes",
                        p.replicas,
                        t.name,
                        p.partition,
                        p.group,
                        metadata.applied_index(),
                        t.replication_factor
                    ));
                }
                let mut distinct = p.isr.clone();
                distinct.sort_unstable();
                distinct.dedup();
                // A replica moving in may join the ISR before it is
                // promoted (the move waits for that), unless its move is
                // being rolled back.
                let incoming = p.moving.filter(|m| !m.rolling_back).map(|m| m.to);
                if p.isr.is_empty()
                    || distinct.len() != p.isr.len()
                    || p.isr
                        .iter()
                        .any(|n| !p.replicas.contains(n) && Some(*n) != incoming)
                {
                    self.core.violation(format!(
                        "ISR: node {node} applied ISR {:?} for {}-{} (group {}) at metadata index {}, not a non-empty set of its replicas {:?} (and the replica moving in)",
                        p.isr,
                        t.name,
                        p.partition,
                        p.group,
                        metadata.applied_index(),
                        p.replicas
                    ));
                }
            }
        }
    }

    /// A produce acknowledged by `node` at `index` of `group`.
    fn on_ack(&mut self, node: NodeId, group: GroupId, index: u64) {
        let (Some(term), Some((isr, min))) = (
            self.applied_term.get(&(group, index)).copied(),
            self.isr_of.get(&(node, group)).cloned(),
        ) else {
            return;
        };
        self.acks_checked_durable += 1;
        let now = self.now_ms();
        let holders: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|m| {
                self.holds(*m, group, index, term) || self.cut_from(*m, group, index, term, now)
            })
            .collect();
        if (holders.len() as u32) < min {
            self.core.violation(format!(
                "stored: node {node} acknowledged a produce to group {group} (entry {index}, term {term}) held durably by ISR members {holders:?} only, ISR {isr:?}, min_insync_replicas {min}"
            ));
        }
    }
}

/// See the module docs. Shared by every node of one run.
#[derive(Default)]
pub struct NodeChecker {
    inner: Mutex<Inner>,
}

impl NodeChecker {
    /// Turns the ISR lag-bound check on, for nodes that run with `bound`.
    pub fn set_isr_bound(&self, bound: IsrBound) {
        self.inner.lock().isr_bound = Some(bound);
    }

    #[cfg(test)]
    fn set_now_ms(&self, ms: u64) {
        self.inner.lock().fixed_now_ms = Some(ms);
    }

    /// Arms `point` on `node` (replacing what was armed there): the next
    /// time the node reaches it, it stops dead.
    pub fn arm(&self, node: NodeId, point: CrashPoint) {
        self.inner.lock().armed.insert(node, point);
    }

    /// Whether some replica is rebuilding its state from a peer.
    pub fn rebuilding_any(&self) -> bool {
        !self.inner.lock().rebuilding.is_empty()
    }

    /// Notes that a fault damaged or failed `node`'s partition storage.
    pub fn storage_damaged(&self, node: NodeId) {
        self.inner.lock().storage_damaged.insert(node);
    }

    /// Whether a crash point is armed anywhere.
    pub fn armed_any(&self) -> bool {
        !self.inner.lock().armed.is_empty()
    }

    /// Disarms every crash point.
    pub fn disarm_all(&self) {
        self.inner.lock().armed.clear();
    }

    /// Nodes that stopped at a crash point since the last call.
    pub fn take_frozen(&self) -> Vec<(NodeId, CrashPoint)> {
        std::mem::take(&mut self.inner.lock().frozen)
    }

    /// Crash points reached so far, by kind.
    pub fn crash_points_fired(&self) -> BTreeMap<CrashPoint, u64> {
        self.inner.lock().crash_points_fired.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().core.violations().to_vec()
    }

    pub fn trace_hash(&self) -> u64 {
        self.inner.lock().core.trace_hash()
    }

    /// How many replica-move decisions any node applied so far.
    pub fn move_decisions(&self) -> u64 {
        self.inner.lock().move_decisions
    }

    /// How many leadership handoffs were started so far.
    pub fn transfer_count(&self) -> usize {
        self.inner.lock().transfers.len()
    }

    /// The (group, new leader) handoffs started after the first `from`.
    pub fn transfers_since(&self, from: usize) -> std::collections::BTreeSet<(GroupId, NodeId)> {
        let i = self.inner.lock();
        i.transfers.iter().skip(from).copied().collect()
    }

    pub fn counts(&self) -> NodeCounts {
        let i = self.inner.lock();
        NodeCounts {
            leader_elections: i.core.leader_elections,
            entries_applied: i.core.applied_count,
            produce_acks_checked: i.core.produce_acks_checked,
            reads_checked: i.core.reads_checked,
            metadata_compared: i.core.metadata_compared,
            snapshots_installed: i.core.snapshots_installed,
            isr_shrinks_applied: i.core.isr_shrinks_applied,
            crashes_checked: i.crashes_checked,
            restarts_checked: i.restarts_checked,
            votes_recorded: i.votes.len() as u64,
            acks_checked_durable: i.acks_checked_durable,
            leaders_checked_complete: i.leaders_checked_complete,
            produces_checked_leader_in_isr: i.produces_checked_leader_in_isr,
            states_compared: i.core.states_compared,
            replies_checked_durable: i.replies_checked_durable,
            unclean_accepts: i.unclean_accepts,
            isr_members_checked_in_bound: i.isr_members_checked_in_bound,
            replicas_rebuilt: i.replicas_rebuilt,
            promotions_checked: i.promotions_checked,
            moves_finished: i.moves_finished.len() as u64,
            moves_rolled_back: i.moves_rolled_back.len() as u64,
            graceful_stops_checked: i.graceful_stops_checked,
            wal_cuts_checked: i.wal_cuts_checked,
            owed_votes_checked: i.owed_votes_checked,
        }
    }

    /// Node `node` finished a graceful shutdown's phases (`report`) and is
    /// about to stop. With `judged` (every other node up and connected, so
    /// an in-sync peer could take every group), it must lead nothing, by
    /// the roles it reported itself: the stop would leave those groups
    /// without a leader for an election timeout. Returns the groups it
    /// still led.
    pub fn on_graceful_stop(
        &self,
        node: NodeId,
        report: &chronik_core::shutdown::ShutdownReport,
        judged: bool,
    ) -> Vec<GroupId> {
        let mut i = self.inner.lock();
        let leads: Vec<GroupId> = i
            .leaderships
            .keys()
            .filter(|(n, _)| *n == node)
            .map(|(_, g)| *g)
            .collect();
        if judged {
            i.graceful_stops_checked += 1;
            if !leads.is_empty() {
                let phases: Vec<String> = report
                    .phases
                    .iter()
                    .map(|p| format!("{} {} ms {:?}", p.phase, p.duration_ms, p.outcome))
                    .collect();
                i.core.violation(format!(
                    "graceful shutdown: node {node} stopped while still leading groups {leads:?} with every peer up (phases: {phases:?})"
                ));
            }
        }
        leads
    }

    /// Node `node` was killed and `disk` now holds what survived (call it
    /// after the disk's crash): recovers a copy of it the way the node will
    /// at restart, and checks that nothing reported durable is missing.
    pub fn on_crash(&self, node: NodeId, disk: &MemDisk, wal_dir: &Path) {
        let copy: Arc<dyn chronik_net::disk::Disk> = Arc::new(disk.durable_copy());
        let recovered = Wal::open(copy, WalConfig::new(wal_dir));
        let mut i = self.inner.lock();
        i.crashes_checked += 1;
        i.leaderships.retain(|(n, _), _| *n != node);
        let model = i.nodes.entry(node).or_default();
        let state = match recovered {
            Ok((_, state, _)) => state,
            Err(e) => {
                i.core.violation(format!(
                    "crash durability: node {node}'s WAL does not recover after the crash: {e}"
                ));
                return;
            }
        };
        let got = marks(&state);
        let checkable = !model.lost_track && !model.candidates.is_empty();
        let verdict = (checkable && !model.candidates.iter().any(|c| keeps(c, &got)))
            .then(|| describe_loss(&model.candidates[0], &got));
        model.restart_from(state);
        if let Some(why) = verdict {
            i.core.violation(format!(
                "crash durability: node {node} recovered other state than it reported durable: {why}"
            ));
        }
    }

    /// Node `node` is down (after [`NodeChecker::on_crash`]) and `what`
    /// (a flipped byte of a WAL record a later record proves synced) was
    /// just done to its disk. Recovery must report the damage rather than
    /// take it for a torn write; the restart must keep every term and
    /// vote the node had durable (they were promises); and until its log
    /// holds them again, it may not vote while missing an entry it lost
    /// that is known committed (a quorum may have counted it).
    pub fn on_wal_rot(
        &self,
        node: NodeId,
        disk: &MemDisk,
        wal_dir: &Path,
        what: &str,
        carried: Option<BTreeSet<GroupId>>,
    ) {
        let copy: Arc<dyn chronik_net::disk::Disk> = Arc::new(disk.durable_copy());
        let recovered = Wal::open(copy, WalConfig::new(wal_dir));
        let mut i = self.inner.lock();
        i.wal_cuts_checked += 1;
        let Inner {
            core,
            nodes,
            applied_term,
            ..
        } = &mut *i;
        let model = nodes.entry(node).or_default();
        let (state, report) = match recovered {
            Ok((_, state, report)) => (state, report),
            Err(e) => {
                core.violation(format!(
                    "WAL corruption refused: node {node}'s WAL does not recover after {what}: {e}"
                ));
                return;
            }
        };
        if report.damage.is_none() {
            core.violation(format!(
                "WAL corruption undetected: node {node}: {what}, in a record a later record proves synced, and recovery took it for a torn write ({} bytes cut)",
                report.truncated_bytes
            ));
        }
        let before = std::mem::take(&mut model.state);
        for (group, g) in &before.groups {
            if !state.groups.contains_key(group) {
                model
                    .kept_votes
                    .insert(*group, (g.hard_state.term, g.hard_state.vote));
            }
            let now = state.groups.get(group);
            let lost: Vec<(u64, u64, bool)> = g
                .entries
                .iter()
                .filter(|e| now.is_none_or(|d| !group_holds(d, e.index, e.term)))
                .map(|e| {
                    let committed = applied_term.get(&(*group, e.index)) == Some(&e.term);
                    (e.index, e.term, committed)
                })
                .collect();
            if !lost.is_empty() {
                model.owed.entry(*group).or_default().extend(lost);
            }
        }
        model.promised = Some((marks(&before), carried));
        model.restarted_at_ms = None;
        model.restart_from(state);
    }

    fn on_batches(&self, node: NodeId, batches: &[PersistBatch]) {
        let mut i = self.inner.lock();
        let Inner {
            core,
            nodes,
            votes,
            owed_votes_checked,
            ..
        } = &mut *i;
        let model = nodes.entry(node).or_default();
        for batch in batches {
            // Votes this batch casts in groups the node owes entries to.
            let mut cast = Vec::new();
            for u in &batch.updates {
                if let GroupUpdate::HardState { group, hard_state } = u {
                    let before = model
                        .state
                        .groups
                        .get(group)
                        .map(|g| (g.hard_state.term, g.hard_state.vote))
                        .or_else(|| model.kept_votes.get(group).copied());
                    if hard_state.vote != 0
                        && batch.must_sync
                        && model.owed.contains_key(group)
                        && before != Some((hard_state.term, hard_state.vote))
                    {
                        cast.push((*group, hard_state.term, hard_state.vote));
                    }
                }
            }
            for u in &batch.updates {
                if let GroupUpdate::HardState { group, hard_state } = u {
                    // Only a synced vote binds: one written and lost in a
                    // crash before its fsync was never sent.
                    if hard_state.vote != 0 && batch.must_sync {
                        let key = (node, *group, hard_state.term);
                        match votes.get(&key) {
                            Some(v) if *v != hard_state.vote => core.violation(format!(
                                "vote: node {node} voted for {v} and for {} in term {} of group {group}",
                                hard_state.vote, hard_state.term
                            )),
                            Some(_) => {}
                            None => {
                                votes.insert(key, hard_state.vote);
                            }
                        }
                    }
                    let commit = model.commit.entry(*group).or_default();
                    if hard_state.commit < *commit {
                        core.violation(format!(
                            "commit: node {node} group {group} persisted commit index {} after {commit}",
                            hard_state.commit
                        ));
                    }
                    *commit = (*commit).max(hard_state.commit);
                }
                if let GroupUpdate::Drop { group } = u {
                    // A replica moved away and back is a new incarnation:
                    // its commit index starts again.
                    model.commit.remove(group);
                    model.owed.remove(group);
                    if let Some(g) = model.state.groups.get(group) {
                        model.dropped.insert(*group, g.clone());
                    }
                }
                if let Err(e) = model.state.apply(u) {
                    core.violation(format!(
                        "durable batches of node {node} do not follow each other: {e}"
                    ));
                    model.lost_track = true;
                }
            }
            // What the log holds again is owed no longer.
            if !model.owed.is_empty() {
                let state = &model.state;
                for u in &batch.updates {
                    if let GroupUpdate::Entries { group, .. }
                    | GroupUpdate::Snapshot { group, .. } = u
                    {
                        if let Some(o) = model.owed.get_mut(group) {
                            o.retain(|(index, t, _)| !log_holds(state, *group, *index, *t));
                        }
                    }
                }
                model.owed.retain(|_, o| !o.is_empty());
            }
            for (group, term, vote) in cast {
                let Some(owed) = model.owed.get_mut(&group) else {
                    continue;
                };
                *owed_votes_checked += 1;
                let state = &model.state;
                owed.retain(|(index, t, _)| !log_holds(state, group, *index, *t));
                // Committed when the cut took it: a quorum may have
                // counted this node's acknowledgement. (One committed
                // later, by others' acknowledgements, does not bind it.)
                if let Some((index, t, _)) = owed.iter().find(|(_, _, committed)| *committed) {
                    let log = state.groups.get(&group).map(|g| {
                        (
                            g.snapshot.as_ref().map(|s| s.get_metadata().index),
                            g.entries.first().map(|e| (e.index, e.term)),
                            g.entries.last().map(|e| (e.index, e.term)),
                        )
                    });
                    core.violation(format!(
                        "vote before repair: node {node} voted for {vote} in term {term} of group {group} while its log lacked entry {index} (term {t}), committed, which it had durable before its WAL was cut (its log: snapshot, first, last {log:?})"
                    ));
                }
                if owed.is_empty() {
                    model.owed.remove(&group);
                }
            }
            if model.lost_track {
                continue;
            }
            let now = marks(&model.state);
            for (group, mark) in &now {
                let peak = model.peak_last.entry(*group).or_default();
                *peak = (*peak).max(mark.last.1);
            }
            if batch.must_sync {
                model.candidates = vec![now];
            } else if model.candidates.len() < UNSYNCED_BATCHES_MAX {
                model.candidates.push(now);
            } else {
                model.lost_track = true;
            }
        }
    }

    fn on_restart(&self, node: NodeId, groups: &[GroupStatus]) {
        let mut i = self.inner.lock();
        let now = i.now_ms();
        let mut kept_whole: BTreeSet<GroupId> = BTreeSet::new();
        if let Some(m) = i.nodes.get_mut(&node) {
            if !m.owed.is_empty() {
                m.restarted_at_ms = Some(now);
            }
            kept_whole.extend(m.kept_votes.keys());
        }
        if let Some((promised, carried)) = i.nodes.get_mut(&node).and_then(|m| m.promised.take()) {
            kept_whole.extend(promised.keys());
            for s in groups {
                let Some(m) = promised.get(&s.group) else {
                    continue;
                };
                if !(s.term > m.term || (s.term == m.term && (m.vote == 0 || s.vote == m.vote))) {
                    i.core.violation(format!(
                        "WAL cut lost a promise: node {node} restarted group {} at term {} with vote {} after its WAL was cut; it had term {} and vote {} durable",
                        s.group, s.term, s.vote, m.term, m.vote
                    ));
                }
                let cut = carried.as_ref().is_none_or(|c| c.contains(&s.group));
                if cut && s.voters.len() > 1 && !s.abstaining {
                    i.core.violation(format!(
                        "WAL cut: node {node} restarted group {} ready to vote, though its log may lack entries it acknowledged",
                        s.group
                    ));
                }
            }
        }
        let Some(disk) = i.nodes.get_mut(&node).and_then(|m| m.recovered.take()) else {
            return;
        };
        i.restarts_checked += 1;
        for s in groups {
            let Some(m) = disk.get(&s.group) else {
                // Not on disk: created fresh at start (a node whose first
                // writes were lost joins or bootstraps again). It cannot
                // have voted, unless a WAL cut took the group whole and
                // its vote was kept.
                if s.vote != 0 && !kept_whole.contains(&s.group) {
                    i.core.violation(format!(
                        "recovery: node {node} restarted with group {} that its disk does not hold, having voted for {} in term {}",
                        s.group, s.vote, s.term
                    ));
                }
                continue;
            };
            if (s.term, s.vote, s.last_index) != (m.term, m.vote, m.last.1) {
                i.core.violation(format!(
                    "recovery: node {node} group {} restarted at (term, vote, last index) {:?}, its disk holds {:?}",
                    s.group,
                    (s.term, s.vote, s.last_index),
                    (m.term, m.vote, m.last.1)
                ));
            }
        }
    }
}

/// Whether `state` holds entry (`index`, `term`) of `group`, or a
/// snapshot past it.
fn log_holds(state: &DurableState, group: GroupId, index: u64, term: u64) -> bool {
    state
        .groups
        .get(&group)
        .is_some_and(|g| group_holds(g, index, term))
}

/// [`log_holds`] for one group's durable state.
fn group_holds(g: &DurableGroup, index: u64, term: u64) -> bool {
    if g.snapshot
        .as_ref()
        .is_some_and(|s| s.get_metadata().index >= index)
    {
        return true;
    }
    let Some(first) = g.entries.first().map(|e| e.index) else {
        return false;
    };
    index
        .checked_sub(first)
        .and_then(|k| g.entries.get(k as usize))
        .is_some_and(|e| e.index == index && e.term == term)
}

/// Whether recovered marks `got` are the batch boundary `want`, with terms
/// and votes at least as late (the votes file keeps a promise whose batch
/// was not synced: keeping a promise never made is safe).
fn keeps(want: &BTreeMap<GroupId, Mark>, got: &BTreeMap<GroupId, Mark>) -> bool {
    want.len() == got.len()
        && want.iter().all(|(g, w)| {
            got.get(g).is_some_and(|m| {
                m.last == w.last
                    && m.commit == w.commit
                    && (m.term > w.term || (m.term == w.term && (w.vote == 0 || m.vote == w.vote)))
            })
        })
}

/// A line on how `got` falls short of `synced`.
fn describe_loss(synced: &BTreeMap<GroupId, Mark>, got: &BTreeMap<GroupId, Mark>) -> String {
    for (g, want) in synced {
        match got.get(g) {
            None => return format!("group {g} is gone (synced {want:?})"),
            Some(m) if m != want => return format!("group {g} synced {want:?}, recovered {m:?}"),
            Some(_) => {}
        }
    }
    match got.keys().find(|g| !synced.contains_key(g)) {
        Some(g) => format!("group {g} recovered but never reported durable"),
        None => "no batch boundary matches".into(),
    }
}

impl EngineObserver for NodeChecker {
    fn on_start(&self, node: NodeId, groups: &[GroupStatus]) {
        self.on_restart(node, groups);
        let mut i = self.inner.lock();
        // A new incarnation leads nothing and has applied no ISR yet; if
        // it had stopped at a crash point, whoever restarted it handled it.
        i.leading.remove(&node);
        i.frozen.retain(|(n, _)| *n != node);
        i.isr_of.retain(|(n, _), _| *n != node);
        i.isr_in_order.retain(|(n, _), _| *n != node);
        i.rebuilding.retain(|(n, _)| *n != node);
        for g in groups.iter().filter(|g| g.repairing.is_some()) {
            i.rebuilding.insert((node, g.group));
        }
        let c = &mut i.core;
        c.trace(
            node,
            &(
                "start",
                groups
                    .iter()
                    .map(|g| (g.group, g.applied))
                    .collect::<Vec<_>>(),
            ),
        );
        c.on_recovered(node, groups);
    }

    fn on_event(&self, node: NodeId, event: &Event) {
        let mut i = self.inner.lock();

        i.core.trace(node, &format!("{event:?}"));
        i.core.on_event(node, event);
        match event {
            Event::EntryApplied {
                group, index, term, ..
            } => {
                i.applied_term.insert((*group, *index), *term);
                let bound = i.max_term.get(group).copied().unwrap_or(0).max(*term);
                let max = i
                    .committed_by
                    .entry(*group)
                    .or_default()
                    .entry(bound)
                    .or_default();
                if *index > max.0 {
                    *max = (*index, *term);
                }
            }
            Event::RoleChanged {
                group, term, role, ..
            } => {
                let max = i.max_term.entry(*group).or_default();
                *max = (*max).max(*term);
                if *role == chronik_core::Role::Leader {
                    i.on_leader(node, *group, *term);
                    i.leaderships.insert(
                        (node, *group),
                        Leadership {
                            term: *term,
                            ..Leadership::default()
                        },
                    );
                } else {
                    if let Some(g) = i.leading.get_mut(&node) {
                        g.remove(group);
                    }
                    i.leaderships.remove(&(node, *group));
                }
            }
            Event::IsrChanged {
                group,
                isr,
                min_insync_replicas,
                reason,
                ..
            } => {
                for n in isr {
                    i.ever_in_isr.insert((*group, *n));
                }
                if reason.starts_with("replica moved") {
                    i.moves_finished.insert((*group, reason.clone()));
                } else if reason.contains("rolled back") {
                    i.moves_rolled_back.insert((*group, reason.clone()));
                }
                i.isr_of
                    .insert((node, *group), (isr.clone(), *min_insync_replicas));
                i.isr_in_order.insert((node, *group), isr.clone());
            }
            Event::ProduceAccepted { group, index } => {
                i.check_accepting_leader(node, *group, *index);
                i.check_isr_lag_bound(node, *group, *index);
            }
            Event::IsrProposed { group, isr, .. } if i.isr_bound.is_some() => {
                let now = i.now_ms();
                if let Some(l) = i.leaderships.get_mut(&(node, *group)) {
                    l.proposals.push((now, isr.clone()));
                }
            }
            Event::GroupDropped { group } => {
                i.leaderships.remove(&(node, *group));
            }
            Event::LeadershipTransfer { group, to, .. } => {
                i.transfers.push((*group, *to));
            }
            Event::RebalanceDecision { decision, .. } if decision.starts_with("move") => {
                i.move_decisions += 1;
            }
            // Entering a joint configuration promotes a partition's new
            // replica (and drops the old one): the new one must have been
            // in the ISR first, or the in-sync count drops with the move.
            Event::ConfChanged {
                group,
                voters,
                outgoing,
                ..
            } if *group != chronik_core::METADATA_GROUP && !outgoing.is_empty() => {
                for promoted in voters.iter().filter(|v| !outgoing.contains(v)) {
                    i.promotions_checked += 1;
                    if !i.ever_in_isr.contains(&(*group, *promoted)) {
                        i.core.violation(format!(
                            "move promotes a replica outside the ISR: node {node} applied a joint configuration of group {group} promoting node {promoted} (voters {voters:?}, outgoing {outgoing:?}), which no node ever applied an ISR holding"
                        ));
                    }
                }
            }
            Event::ProduceAcked { group, index } => i.on_ack(node, *group, *index),
            Event::SnapshotInstalled { group, .. } if *group == chronik_core::METADATA_GROUP => {
                i.isr_in_order.retain(|(n, _), _| *n != node);
            }
            Event::ReplicaRepairing { group, reason } => {
                if !i.storage_damaged.contains(&node) {
                    i.core.violation(format!(
                        "repair without storage damage: node {node} rebuilds group {group}, though no fault touched its partition files: {reason}"
                    ));
                }
                i.rebuilding.insert((node, *group));
            }
            Event::SnapshotInstalled { group, .. } if i.rebuilding.remove(&(node, *group)) => {
                i.replicas_rebuilt += 1;
            }
            Event::ReadServed { group, read_index } if i.rebuilding.contains(&(node, *group)) => {
                i.core.violation(format!(
                    "rot: node {node} served a read of group {group} at {read_index} while rebuilding its damaged state"
                ));
            }
            _ => {}
        }
    }

    fn on_durable(&self, node: NodeId, batches: &[PersistBatch]) {
        self.on_batches(node, batches);
    }

    fn on_send(&self, node: NodeId, _to: NodeId, messages: &[chronik_core::GroupMessage]) {
        use chronik_core::raft::eraftpb::MessageType;
        let mut i = self.inner.lock();
        let Some(model) = i.nodes.get(&node).filter(|m| !m.lost_track) else {
            return;
        };
        let mut found = Vec::new();
        for gm in messages {
            let m = &gm.message;
            if m.reject {
                continue;
            }
            if model.dropped.contains_key(&gm.group) {
                // Made when the group was live here, released once the
                // batch that dropped it was durable.
                continue;
            }
            let g = model.state.groups.get(&gm.group);
            match m.get_msg_type() {
                MessageType::MsgRequestVoteResponse => {
                    let hs = g.map(|g| (g.hard_state.term, g.hard_state.vote));
                    let durable = hs.is_some_and(|(t, v)| t > m.term || (t == m.term && v == m.to));
                    if !durable {
                        found.push(format!(
                            "release before persist: node {node} granted its vote in term {} of group {} to node {} before the WAL reported it durable (durable term, vote: {hs:?})",
                            m.term, gm.group, m.to
                        ));
                    }
                }
                MessageType::MsgAppendResponse => {
                    // An acknowledgement made when its entries became
                    // durable may leave after a newer leader's append
                    // truncated them (the engine holds it until that batch
                    // is durable, and steps on meanwhile): what it claims
                    // was durable at some point, like a reply delayed by
                    // the network. So it is checked against the highest
                    // durable index of this incarnation, not the current.
                    let last = model.peak_last.get(&gm.group).copied();
                    if last.is_none_or(|l| l < m.index) {
                        found.push(format!(
                            "release before persist: node {node} acknowledged entries up to {} of group {} to node {} before the WAL reported them durable (durable up to {last:?} at most)",
                            m.index, gm.group, m.to
                        ));
                    }
                }
                _ => {}
            }
        }
        i.replies_checked_durable += messages.len() as u64;
        for v in found {
            i.core.violation(v);
        }
    }

    fn crash_here(&self, node: NodeId, point: CrashPoint) -> bool {
        let mut i = self.inner.lock();
        if i.armed.get(&node) != Some(&point) {
            return false;
        }
        i.armed.remove(&node);
        i.frozen.push((node, point));
        *i.crash_points_fired.entry(point).or_default() += 1;
        i.core.trace(node, &("crash point", point));
        true
    }

    fn on_metadata(&self, node: NodeId, metadata: &MetadataState) {
        let mut i = self.inner.lock();
        i.core.on_metadata_state(node, metadata);
        i.check_isr_shape(node, metadata);
        for t in metadata.topics() {
            for p in &t.partitions {
                i.isr_of
                    .insert((node, p.group), (p.isr.clone(), t.min_insync_replicas));
                if t.unclean_leader_election {
                    i.unclean.insert(p.group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronik_core::raft::eraftpb::{ConfState, Entry, HardState};
    use chronik_core::GroupKind;
    use chronik_net::disk::Disk;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    fn hs(term: u64, vote: u64, commit: u64) -> GroupUpdate {
        GroupUpdate::HardState {
            group: 0,
            hard_state: HardState {
                term,
                vote,
                commit,
                ..Default::default()
            },
        }
    }

    fn batch(ticket: u64, must_sync: bool, updates: Vec<GroupUpdate>) -> PersistBatch {
        PersistBatch {
            ticket,
            updates,
            must_sync,
        }
    }

    fn create() -> GroupUpdate {
        GroupUpdate::Create {
            group: 0,
            kind: GroupKind::Metadata,
            conf_state: ConfState::default(),
        }
    }

    fn entries(from: u64, to: u64, term: u64) -> GroupUpdate {
        GroupUpdate::Entries {
            group: 0,
            entries: (from..=to).map(|i| entry(i, term)).collect(),
        }
    }

    /// A node whose WAL really wrote `written` to `disk`, and reported
    /// `reported` durable to the checker.
    fn crash_after(
        written: &[PersistBatch],
        reported: &[PersistBatch],
        sync_all: bool,
    ) -> NodeChecker {
        let disk = MemDisk::new();
        let dir = Path::new("/data/node1/wal");
        {
            let d: Arc<dyn Disk> = Arc::new(disk.clone());
            let (mut wal, _, _) = Wal::open(d, WalConfig::new(dir)).unwrap();
            for b in written {
                let mut b = b.clone();
                b.must_sync |= sync_all;
                wal.append(&[b]).unwrap();
            }
        }
        let c = NodeChecker::default();
        c.on_durable(1, reported);
        disk.crash(|_| 0);
        c.on_crash(1, &disk, dir);
        c
    }

    #[test]
    fn a_crash_that_keeps_what_was_synced_passes() {
        let batches = vec![
            batch(1, true, vec![create(), entries(1, 3, 1), hs(1, 1, 0)]),
            batch(2, false, vec![hs(1, 1, 2)]),
            batch(3, true, vec![entries(4, 5, 1)]),
        ];
        let c = crash_after(&batches, &batches, false);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        assert_eq!(c.counts().crashes_checked, 1);
        // The restarted engine starts from the disk: right term and vote.
        let status = GroupStatus {
            group: 0,
            kind: GroupKind::Metadata,
            role: chronik_core::Role::Follower,
            term: 1,
            vote: 1,
            leader: None,
            commit: 2,
            applied: 0,
            last_index: 5,
            snapshot_index: 0,
            voters: vec![],
            state: None,
            repairing: None,
            abstaining: false,
        };
        c.on_start(1, std::slice::from_ref(&status));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        // A second start without a crash checks nothing.
        c.on_start(1, &[GroupStatus { vote: 0, ..status }]);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        assert_eq!(c.counts().restarts_checked, 1);
    }

    #[test]
    fn an_unsynced_batch_reported_durable_is_caught() {
        let batches = vec![
            batch(1, true, vec![create(), entries(1, 3, 1)]),
            // Needed a sync, reported durable, but the WAL did not sync:
            // written with must_sync false below.
            batch(2, true, vec![entries(4, 6, 1), hs(1, 2, 3)]),
        ];
        let mut written = batches.clone();
        written[1].must_sync = false;
        let c = crash_after(&written, &batches, false);
        let v = c.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("crash durability"), "{v:?}");
    }

    #[test]
    fn a_restart_that_forgets_its_vote_is_caught() {
        let batches = vec![batch(1, true, vec![create(), hs(3, 2, 0)])];
        let c = crash_after(&batches, &batches, true);
        c.on_start(
            1,
            &[GroupStatus {
                group: 0,
                kind: GroupKind::Metadata,
                role: chronik_core::Role::Follower,
                term: 3,
                vote: 0,
                leader: None,
                commit: 0,
                applied: 0,
                last_index: 0,
                snapshot_index: 0,
                voters: vec![],
                state: None,
                repairing: None,
                abstaining: false,
            }],
        );
        let v = c.violations();
        assert!(v.iter().any(|v| v.starts_with("recovery")), "{v:?}");
    }

    #[test]
    fn two_votes_in_one_term_and_commit_going_back_are_caught() {
        let c = NodeChecker::default();
        c.on_durable(1, &[batch(1, true, vec![create(), hs(4, 2, 5)])]);
        c.on_durable(1, &[batch(2, true, vec![hs(4, 2, 5), hs(5, 3, 5)])]);
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.on_durable(1, &[batch(3, true, vec![hs(4, 3, 5)])]);
        c.on_durable(1, &[batch(4, true, vec![hs(5, 3, 4)])]);
        let v = c.violations();
        assert!(v.iter().any(|v| v.starts_with("vote")), "{v:?}");
        assert!(v.iter().any(|v| v.starts_with("commit")), "{v:?}");
    }

    #[test]
    fn metadata_that_differs_at_one_index_is_caught() {
        let c = NodeChecker::default();
        let a = MetadataState::new();
        c.on_metadata(1, &a);
        c.on_metadata(2, &a);
        assert!(c.violations().is_empty());
        // Index 1 on both, bootstrapped with different nodes.
        let bootstrapped = |id: u64| {
            let mut md = MetadataState::new();
            md.apply(
                1,
                chronik_core::MetadataCommand::Bootstrap {
                    nodes: vec![chronik_core::NodeInfo {
                        id,
                        peer_addr: format!("h:{id}"),
                        client_addr: format!("h:{}", id + 10),
                        rack: None,
                    }],
                },
            )
            .unwrap();
            md
        };
        let (b, other) = (bootstrapped(1), bootstrapped(2));
        c.on_metadata(1, &b);
        c.on_metadata(2, &other);
        let v = c.violations();
        assert!(
            v.iter().any(|v| v.starts_with("metadata diverged")),
            "{v:?}"
        );
    }

    fn became_leader(group: GroupId, term: u64) -> Event {
        Event::RoleChanged {
            group,
            term,
            role: chronik_core::Role::Leader,
            leader: None,
        }
    }

    #[test]
    fn a_leader_without_a_committed_entry_is_caught() {
        let c = NodeChecker::default();
        c.on_durable(1, &[batch(1, true, vec![create(), entries(1, 3, 1)])]);
        c.on_durable(2, &[batch(1, true, vec![create(), entries(1, 5, 1)])]);
        c.on_event(
            2,
            &Event::EntryApplied {
                group: 0,
                index: 5,
                term: 1,
                digest: 0,
                state: None,
            },
        );
        c.on_event(2, &became_leader(0, 2));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        c.on_event(1, &became_leader(0, 3));
        let v = c.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("leader completeness: node 1"), "{v:?}");
        assert_eq!(c.counts().leaders_checked_complete, 2);
    }

    /// Partition group 4 of `t`-0 on `node`, with entries `from..=to` of
    /// term 2 (and the group created first when `from` is 1).
    fn partition_entries(c: &NodeChecker, node: NodeId, from: u64, to: u64) {
        let mut updates = Vec::new();
        if from == 1 {
            updates.push(GroupUpdate::Create {
                group: 4,
                kind: GroupKind::Partition(chronik_core::PartitionId::new("t", 0)),
                conf_state: ConfState::default(),
            });
        }
        updates.push(GroupUpdate::Entries {
            group: 4,
            entries: (from..=to).map(|i| entry(i, 2)).collect(),
        });
        c.on_durable(node, &[batch(from, true, updates)]);
    }

    /// Node 1 leads group 4 in term 2 with `isr`, accepting one produce
    /// every 100 ms (entries 10..=40 at 0..=3000 ms); `propose` is an ISR
    /// it proposes from 1200 ms on, again every 500 ms (the retry wait)
    /// since the metadata group does not apply it.
    fn lead_with(c: &NodeChecker, isr: Vec<NodeId>, propose: Option<Vec<NodeId>>) {
        let group = 4;
        c.on_event(1, &became_leader(group, 2));
        c.on_event(
            1,
            &Event::IsrChanged {
                partition: chronik_core::PartitionId::new("t", 0),
                group,
                isr,
                min_insync_replicas: 1,
                reason: "test".into(),
            },
        );
        for k in 0..=30u64 {
            c.set_now_ms(k * 100);
            if let (true, Some(isr)) = (k >= 12 && (k - 12) % 5 == 0, &propose) {
                let reason = "test".into();
                c.on_event(
                    1,
                    &Event::IsrProposed {
                        group,
                        isr: isr.clone(),
                        reason,
                    },
                );
            }
            let index = 10 + k;
            c.on_event(1, &Event::ProduceAccepted { group, index });
        }
    }

    fn checker_with_bound() -> NodeChecker {
        let c = NodeChecker::default();
        let bound = IsrBound {
            max_lag_ms: 1_000,
            tick_ms: 50,
            retry_ms: 500,
        };
        assert_eq!(bound.window_ms(), 1_650);
        c.set_isr_bound(bound);
        c
    }

    #[test]
    fn an_isr_member_past_the_lag_bound_is_caught() {
        // Node 2 keeps up; node 3 holds nothing past entry 9.
        let c = checker_with_bound();
        partition_entries(&c, 1, 1, 40);
        partition_entries(&c, 2, 1, 40);
        partition_entries(&c, 3, 1, 9);
        lead_with(&c, vec![1, 2, 3], None);
        let v = c.violations();
        assert!(!v.is_empty(), "node 3 lagged past the bound unnoticed");
        assert!(
            v[0].starts_with("ISR lag bound: node 1, leading group 4 in term 2")
                && v[0].contains("with node 3 in its ISR, but node 3 does not hold entry 11"),
            "{v:?}"
        );
        assert!(v.iter().all(|v| !v.contains("node 2 does not")), "{v:?}");
        assert!(c.counts().isr_members_checked_in_bound > 20);
    }

    #[test]
    fn an_isr_member_proposed_out_in_time_is_not_a_violation() {
        // The removal waits on the metadata group: not the leader's fault.
        let c = checker_with_bound();
        partition_entries(&c, 1, 1, 40);
        partition_entries(&c, 3, 1, 9);
        lead_with(&c, vec![1, 3], Some(vec![1]));
        assert!(c.violations().is_empty(), "{:?}", c.violations());
        // Without the proposal it is one.
        let c = checker_with_bound();
        partition_entries(&c, 1, 1, 40);
        partition_entries(&c, 3, 1, 9);
        lead_with(&c, vec![1, 3], Some(vec![1, 3]));
        assert!(!c.violations().is_empty());
    }

    #[test]
    fn a_leader_accepting_produces_outside_its_isr_is_caught() {
        let c = NodeChecker::default();
        let group = 3;
        let shrunk = Event::IsrChanged {
            partition: chronik_core::PartitionId::new("t", 0),
            group,
            isr: vec![2, 3],
            min_insync_replicas: 1,
            reason: "test".into(),
        };
        for node in [1, 2] {
            c.on_event(node, &became_leader(group, node));
            // No ISR known yet on this node: nothing to hold it to.
            c.on_event(node, &Event::ProduceAccepted { group, index: 1 });
            c.on_event(node, &shrunk);
            c.on_event(node, &Event::ProduceAccepted { group, index: 2 });
        }
        // After a metadata snapshot install the ISR is unknown again.
        c.on_event(
            1,
            &Event::SnapshotInstalled {
                group: chronik_core::METADATA_GROUP,
                index: 9,
                state: None,
            },
        );
        c.on_event(1, &Event::ProduceAccepted { group, index: 3 });
        let v = c.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("node 1 accepted a produce (entry 2) as leader")
                && v[0].contains("outside its ISR [2, 3]"),
            "{v:?}"
        );
        assert_eq!(c.counts().produces_checked_leader_in_isr, 2);
    }
}
