//! Leadership handoff: a node shutting down, or in maintenance, hands
//! every group it leads to its best in-sync follower, and takes no
//! leadership back (it holds its elections and, while shutting down,
//! ignores transfers to itself).

use super::*;
use crate::shutdown::LedGroup;

/// Doubling the wait between a node in maintenance's transfers of one
/// group caps at 2^5 election timeouts.
const HANDOFF_BACKOFF_MAX_SHIFT: u32 = 5;

/// A node in maintenance holds its elections this many election timeouts
/// without a leader; past that it campaigns (nobody else could lead).
const MAINTENANCE_HOLD_TIMEOUTS: usize = 3;

/// A node leaving the cluster gracefully (shutting down).
#[derive(Debug, Default)]
pub(in crate::engine) struct Leaving {
    /// Every group this node led since it began leaving: each is handed
    /// over once another node is known to lead it.
    watched: BTreeSet<GroupId>,
}

/// Why leadership leaves this node, for events and logs.
const SHUTTING_DOWN: &str = "node shutting down";
const IN_MAINTENANCE: &str = "node in maintenance";

/// Ticks a group. With `hold`, a follower's election timer runs without
/// ever firing (it counts on, so leases expire as usual): the node takes
/// no leadership on its own.
pub(in crate::engine) fn tick_group(raw: &mut RawNode<GroupStorage>, hold: bool) {
    let r = &mut raw.raft;
    if hold
        && r.state != raft::StateRole::Leader
        && r.election_elapsed + 1 >= r.randomized_election_timeout()
    {
        r.election_elapsed += 1;
    } else {
        raw.tick();
    }
}

/// The voter to hand a group to: an applied voter other than `me`, heard
/// from recently, in `isr` when the group has one, preferring nodes out of
/// maintenance, then the most entries matched (the least to catch up),
/// then the lowest id. `None` while nobody qualifies.
fn handoff_target(
    raw: &RawNode<GroupStorage>,
    me: NodeId,
    isr: Option<&[NodeId]>,
    alive: &BTreeSet<NodeId>,
    md: &MetadataState,
    only_out_of_maintenance: bool,
) -> Option<NodeId> {
    let raft = &raw.raft;
    raw.store()
        .conf_state()
        .voters
        .iter()
        .copied()
        .filter(|id| *id != me && alive.contains(id))
        .filter(|id| isr.is_none_or(|isr| isr.contains(id)))
        .filter(|id| !(only_out_of_maintenance && md.in_maintenance(*id)))
        .max_by_key(|id| {
            let matched = raft.prs().get(*id).map_or(0, |pr| pr.matched);
            (!md.in_maintenance(*id), matched, std::cmp::Reverse(*id))
        })
}

impl<S: StateMachine> Engine<S> {
    /// Starts leaving: from now on this node hands every group it leads to
    /// another node and takes no leadership. Irreversible: the driver stops
    /// the node once [`Engine::leadership_to_hand_off`] is empty.
    pub fn begin_leaving(&mut self, now: Time) {
        self.now = self.now.max(now);
        if self.leaving.is_none() {
            tracing::info!(
                node = self.config.node_id,
                "leaving: handing leadership over"
            );
            self.leaving = Some(Leaving::default());
        }
        self.hand_off_leadership();
        self.observe_dirty();
        self.process();
    }

    /// Whether [`Engine::begin_leaving`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    /// The groups a leaving node still has to hand over: those it leads,
    /// and those it led whose new leader it has not heard from yet.
    pub fn leadership_to_hand_off(&self) -> Vec<LedGroup> {
        let me = self.config.node_id;
        let mut out = Vec::new();
        let pending = |raw: &RawNode<GroupStorage>, watched: bool| {
            let r = &raw.raft;
            r.state == raft::StateRole::Leader
                || (watched && (r.leader_id == 0 || r.leader_id == me))
        };
        let watched = |g: GroupId| {
            self.leaving
                .as_ref()
                .is_some_and(|l| l.watched.contains(&g))
        };
        // Somebody could take the group: another voter this node hears
        // from (a group whose peers are all down has nobody to wait for).
        let alive = self.alive_nodes();
        let transferable = |raw: &RawNode<GroupStorage>| {
            raw.store()
                .conf_state()
                .voters
                .iter()
                .any(|v| *v != me && alive.contains(v))
        };
        if !self.metadata.removed && pending(&self.metadata.raw, watched(METADATA_GROUP)) {
            out.push(LedGroup {
                group: METADATA_GROUP,
                name: "metadata".into(),
                transferable: transferable(&self.metadata.raw),
            });
        }
        for (gid, g) in &self.partitions {
            if g.removed || !pending(&g.raw, watched(*gid)) {
                continue;
            }
            let name = match &g.kind {
                GroupKind::Partition(p) => p.to_string(),
                GroupKind::Metadata => "metadata".into(),
            };
            out.push(LedGroup {
                group: *gid,
                name,
                transferable: transferable(&g.raw),
            });
        }
        out
    }

    /// Each tick on a leaving node or one in maintenance: asks for a
    /// transfer of every group it leads that has no transfer in flight
    /// (raft-rs gives a transfer up after an election timeout; the next
    /// tick then asks again, maybe of another node).
    pub(in crate::engine) fn hand_off_leadership(&mut self) {
        let me = self.config.node_id;
        // Planted bug (simulation builds only): maintenance hands nothing
        // over.
        let in_maintenance = self.metadata.sm.in_maintenance(me)
            && !crate::planted::active(crate::planted::Bug::MaintenanceKeepsLeadership);
        let reason = match (&self.leaving, in_maintenance) {
            (Some(_), _) => SHUTTING_DOWN,
            (None, true) => IN_MAINTENANCE,
            (None, false) => return,
        };
        // A node in maintenance keeps leading when only nodes in
        // maintenance could take over; a leaving node hands over anyway.
        let only_out = self.leaving.is_none();
        // A transfer holds the group's proposals until it completes or
        // raft-rs gives it up (an election timeout): a node in maintenance
        // whose transfers keep failing (a target that cannot win) tries
        // again later and later, never in a loop that would keep the group
        // from taking writes. A leaving node stops serving anyway.
        let now = self.now;
        let alive = self.alive_nodes();
        let timeout = self.config.tick_interval_ms * self.config.election_ticks as u64;
        let backoff = &mut self.handoff_backoff;
        backoff.retain(|g, _| {
            if *g == METADATA_GROUP {
                self.metadata.raw.raft.state == raft::StateRole::Leader
            } else {
                self.partitions.get(g).is_some_and(|g| g.is_leader())
            }
        });
        let mut may_ask = |g: GroupId| -> bool {
            if !only_out {
                return true;
            }
            let (attempts, next_at) = backoff.entry(g).or_insert((0, now));
            if now < *next_at {
                return false;
            }
            *attempts += 1;
            *next_at = now.plus_millis(timeout << (*attempts).min(HANDOFF_BACKOFF_MAX_SHIFT));
            true
        };
        let md = &self.metadata.sm;
        let mut asked = Vec::new();
        // Partition leaderships move first: each new partition leader
        // confirms its metadata with the metadata leader before it serves,
        // which is quickest while this node still leads the metadata group
        // (a metadata election in between would hold them up).
        let mut partitions_moving = 0;
        for (gid, g) in self.partitions.iter_mut() {
            if g.removed || !g.is_leader() {
                continue;
            }
            asked.push(*gid);
            if g.raw.raft.lead_transferee.is_some() {
                partitions_moving += 1;
                continue;
            }
            if g.repair.is_some() {
                // A rebuilding replica hands leadership on by itself.
                continue;
            }
            let GroupKind::Partition(pid) = &g.kind else {
                continue;
            };
            // The ISR as applied metadata has it; a group metadata does not
            // describe (yet, or any more) is handed to no one.
            let Some(isr) = md
                .partition(pid)
                .ok()
                .filter(|m| m.group == *gid)
                .map(|m| m.isr.clone())
            else {
                continue;
            };
            let Some(to) = handoff_target(&g.raw, me, Some(&isr), &alive, md, only_out) else {
                continue;
            };
            if may_ask(*gid) {
                tracing::info!(group = gid, %pid, to, reason, "handing leadership over");
                partitions_moving += 1;
                g.raw.transfer_leader(to);
                self.sink.event(Event::LeadershipTransfer {
                    group: *gid,
                    to,
                    reason,
                });
                self.dirty.insert(*gid);
            }
        }
        let mraw = &mut self.metadata.raw;
        if !self.metadata.removed && mraw.raft.state == raft::StateRole::Leader {
            asked.push(METADATA_GROUP);
            if partitions_moving == 0 && mraw.raft.lead_transferee.is_none() {
                let to = handoff_target(mraw, me, None, &alive, md, only_out);
                if let Some(to) = to.filter(|_| may_ask(METADATA_GROUP)) {
                    mraw.transfer_leader(to);
                    self.sink.event(Event::LeadershipTransfer {
                        group: METADATA_GROUP,
                        to,
                        reason,
                    });
                    self.dirty.insert(METADATA_GROUP);
                }
            }
        }
        if let Some(l) = &mut self.leaving {
            l.watched.extend(asked);
        }
    }

    /// Whether this node holds its elections in `raw`'s group now.
    pub(in crate::engine) fn holds_elections(&self, raw: &RawNode<GroupStorage>) -> bool {
        self.leaving.is_some()
            || (self.metadata.sm.in_maintenance(self.config.node_id)
                && raw.raft.election_elapsed
                    < MAINTENANCE_HOLD_TIMEOUTS * self.config.election_ticks)
    }
}
