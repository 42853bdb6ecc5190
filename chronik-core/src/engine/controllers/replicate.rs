//! `metadata-replicate`: the metadata leader sends a lagging member what
//! it misses now (entries, or a snapshot if its log was compacted past
//! them), instead of waiting for the next heartbeat or a paused probe.

use super::*;

/// What [`Engine::replicate_metadata_now`] started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicateNow {
    /// The leader's commit index when asked: a member is up to date once
    /// it applied this far.
    pub target: u64,
    pub members: Vec<MemberReplication>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReplication {
    pub node: NodeId,
    /// The index the leader knew on the member when asked.
    pub matched: u64,
    /// Sent a snapshot: the entries it misses are compacted away.
    pub snapshot: bool,
    /// Sent anything (false: it already had everything committed).
    pub sent: bool,
}

impl<S: StateMachine> Engine<S> {
    /// On the metadata leader: sends `to` (or every other member) the
    /// entries it misses, or a snapshot, at once. Refused elsewhere
    /// (`NOT_LEADER` with a hint) and for nodes outside the metadata
    /// configuration.
    pub fn replicate_metadata_now(
        &mut self,
        now: Time,
        to: Option<NodeId>,
    ) -> Result<ReplicateNow, Error> {
        self.now = self.now.max(now);
        let me = self.config.node_id;
        let raft = &mut self.metadata.raw.raft;
        if raft.state != raft::StateRole::Leader {
            return Err(Error::NotLeader {
                group: METADATA_GROUP,
                leader_hint: (raft.leader_id != 0).then_some(raft.leader_id),
            });
        }
        let commit = raft.raft_log.committed;
        let first = raft.raft_log.first_index();
        let ids: Vec<NodeId> = match to {
            Some(n) if raft.prs().get(n).is_none() => {
                return Err(Error::UnknownNode { node: n });
            }
            Some(n) => vec![n],
            None => raft.prs().iter().map(|(id, _)| *id).collect(),
        };
        let mut members = Vec::new();
        for id in ids.into_iter().filter(|id| *id != me) {
            let Some(pr) = raft.mut_prs().get_mut(id) else {
                continue;
            };
            let matched = pr.matched;
            let snapshot = pr.next_idx < first;
            let sent = matched < commit;
            if sent {
                // A probe waiting for its answer is tried again now, and a
                // snapshot that may have been lost is sent again.
                pr.resume();
                if pr.state == raft::ProgressState::Snapshot {
                    pr.become_probe();
                }
                raft.send_append(id);
            }
            members.push(MemberReplication {
                node: id,
                matched,
                snapshot: sent && snapshot,
                sent,
            });
        }
        // Planted bug (simulation builds only): the target is what the
        // member already has, so a caller waiting for it returns at once.
        let target = if crate::planted::active(crate::planted::Bug::ReplicateTargetTooLow) {
            members.iter().map(|m| m.matched).min().unwrap_or(commit)
        } else {
            commit
        };
        tracing::info!(
            node = me,
            ?to,
            target,
            reason = "operator asked (metadata-replicate)",
            "replicating metadata now"
        );
        self.dirty.insert(METADATA_GROUP);
        self.observe_dirty();
        self.process();
        Ok(ReplicateNow { target, members })
    }
}
