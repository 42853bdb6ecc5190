//! Checks of metadata commands against the state, before they are
//! proposed (`apply` repeats the state checks: other commands may commit
//! in between).

use super::*;

/// Checks a `host:port` address: non-empty host, numeric port.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("address {addr:?} is not host:port"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(format!("address {addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("address {addr:?} has no valid port")),
    }
}

/// Checks a topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > TOPIC_NAME_MAX_LEN {
        return Err(Error::invalid(format!(
            "topic name must be 1 to {TOPIC_NAME_MAX_LEN} characters"
        )));
    }
    if name == "." || name == ".." {
        return Err(Error::invalid("topic name cannot be '.' or '..'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::invalid(format!(
            "topic name {name:?} has invalid character {c:?}; allowed: A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}
impl MetadataState {
    /// Checks a command against the current state without applying it. The
    /// leader calls this before proposing; `apply` repeats the state checks
    /// because other commands may commit in between.
    pub fn validate(&self, cmd: &MetadataCommand) -> Result<(), Error> {
        match cmd {
            MetadataCommand::Bootstrap { nodes } => {
                for n in nodes {
                    validate_node(n)?;
                }
                Ok(())
            }
            MetadataCommand::RegisterNode { node } => {
                validate_node(node)?;
                if let Some(existing) = self.nodes.get(&node.id) {
                    if existing != node {
                        return Err(Error::invalid(format!(
                            "node {} is already registered with other addresses",
                            node.id
                        )));
                    }
                }
                if let Some(other) = self.nodes.values().find(|n| {
                    n.id != node.id
                        && (n.peer_addr == node.peer_addr
                            || n.client_addr == node.client_addr
                            || n.peer_addr == node.client_addr
                            || n.client_addr == node.peer_addr)
                }) {
                    return Err(Error::invalid(format!(
                        "an address of node {} is already used by node {}",
                        node.id, other.id
                    )));
                }
                Ok(())
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                min_insync_replicas,
                unclean_leader_election: _,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(Error::TopicExists {
                        topic: name.clone(),
                    });
                }
                if *partitions == 0 || *partitions > TOPIC_PARTITIONS_HARD_MAX {
                    return Err(Error::invalid(format!(
                        "partition count must be 1 to {TOPIC_PARTITIONS_HARD_MAX}"
                    )));
                }
                if *replication_factor == 0 {
                    return Err(Error::invalid("replication factor must be at least 1"));
                }
                // Placement skips a node whose membership change is in
                // flight, so validate against the same set: counting it let
                // a topic as wide as the cluster through here and then
                // panicked placement on every node that applied it (found by
                // the metadata_apply fuzz target).
                let available = self.placeable_nodes().len() as u32;
                if *replication_factor > available {
                    return Err(Error::NotEnoughNodes {
                        requested: *replication_factor,
                        available,
                    });
                }
                if *min_insync_replicas == 0 || min_insync_replicas > replication_factor {
                    return Err(Error::invalid(format!(
                        "min_insync_replicas must be 1 to the replication factor ({replication_factor})"
                    )));
                }
                Ok(())
            }
            MetadataCommand::DeleteTopic { name } => {
                if !self.topics.contains_key(name) {
                    return Err(Error::UnknownTopic {
                        topic: name.clone(),
                    });
                }
                Ok(())
            }
            MetadataCommand::BeginMembershipChange { change } => {
                use crate::membership::MembershipChange;
                if let Some(c) = &self.membership {
                    return Err(Error::ChangeInProgress {
                        change: c.to_string(),
                    });
                }
                match change {
                    MembershipChange::Add(node) => {
                        validate_node(node)?;
                        if self.nodes.contains_key(&node.id) {
                            return Err(Error::NodeExists { node: node.id });
                        }
                        if self.removed.contains(&node.id) {
                            return Err(Error::invalid(format!(
                                "node id {} belonged to a removed node; ids are never reused",
                                node.id
                            )));
                        }
                        for other in self.nodes.values() {
                            for a in [&node.peer_addr, &node.client_addr] {
                                if *a == other.peer_addr || *a == other.client_addr {
                                    return Err(Error::AddressInUse {
                                        addr: a.clone(),
                                        node: other.id,
                                    });
                                }
                            }
                        }
                    }
                    MembershipChange::Remove(id) => {
                        if !self.nodes.contains_key(id) {
                            return Err(Error::UnknownNode { node: *id });
                        }
                        self.check_replicas_can_move_off(*id)?;
                        if self.nodes.len() == 1 {
                            return Err(Error::QuorumAtRisk {
                                node: *id,
                                alive: 0,
                                needed: 1,
                            });
                        }
                    }
                }
                Ok(())
            }
            MetadataCommand::BeginReplicaMove { group, from, to } => {
                let (_, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                if let Some(m) = p.moving {
                    return Err(Error::invalid(format!(
                        "group {group} is already moving a replica from node {} to node {}",
                        m.from, m.to
                    )));
                }
                if !p.replicas.contains(from) {
                    return Err(Error::invalid(format!(
                        "node {from} is not a replica of group {group}"
                    )));
                }
                if p.replicas.contains(to) {
                    return Err(Error::invalid(format!(
                        "node {to} is already a replica of group {group}"
                    )));
                }
                if !self.nodes.contains_key(to) {
                    return Err(Error::UnknownNode { node: *to });
                }
                if self.membership.as_ref().is_some_and(|c| c.node() == *to) {
                    return Err(Error::invalid(format!(
                        "node {to} is joining or leaving; it takes no replicas"
                    )));
                }
                // A move of the rebalance run waits for a free slot.
                if let Some(run) = self.active_rebalance() {
                    let planned = run.moves.iter().any(|m| {
                        m.group == *group
                            && m.from == *from
                            && m.to == *to
                            && m.state == MoveState::Pending
                    });
                    if planned && self.moves_in_flight() >= run.max_concurrent_moves as usize {
                        return Err(Error::invalid(format!(
                            "{} replica moves are in flight, the most rebalance {} allows",
                            run.max_concurrent_moves, run.id
                        )));
                    }
                }
                Ok(())
            }
            MetadataCommand::SetMaintenance { node, on } => {
                if !self.nodes.contains_key(node) {
                    return Err(if self.removed.contains(node) {
                        Error::NodeRemoved { node: *node }
                    } else {
                        Error::UnknownNode { node: *node }
                    });
                }
                if *on
                    && !self.maintenance.contains(node)
                    && self
                        .nodes
                        .keys()
                        .all(|n| n == node || self.maintenance.contains(n))
                {
                    return Err(Error::invalid(format!(
                        "node {node} is the last node out of maintenance: no node could lead"
                    )));
                }
                Ok(())
            }
            MetadataCommand::ReportSizes { sizes } => {
                if sizes.is_empty() || sizes.len() > TOPIC_PARTITIONS_HARD_MAX as usize {
                    return Err(Error::invalid(format!(
                        "a size report names 1 to {TOPIC_PARTITIONS_HARD_MAX} partitions, not {}",
                        sizes.len()
                    )));
                }
                Ok(())
            }
            MetadataCommand::StartRebalance {
                moves,
                leaders_now,
                max_concurrent_moves,
                ..
            } => self.validate_start_rebalance(moves, leaders_now, *max_concurrent_moves),
            MetadataCommand::CancelRebalance { .. } => match self.active_rebalance() {
                Some(r) if r.cancelled.is_none() => Ok(()),
                _ => Err(Error::invalid("no rebalance is in flight")),
            },
            MetadataCommand::SkipPlannedMove { group, .. } => {
                let pending = self.active_rebalance().is_some_and(|r| {
                    r.moves
                        .iter()
                        .any(|m| m.group == *group && m.state == MoveState::Pending)
                });
                if !pending {
                    return Err(Error::invalid(format!(
                        "no planned move of group {group} is waiting"
                    )));
                }
                Ok(())
            }
            MetadataCommand::RollBackReplicaMove {
                group, from, to, ..
            }
            | MetadataCommand::AbortReplicaMove { group, from, to } => {
                let (_, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                let rolling = matches!(cmd, MetadataCommand::AbortReplicaMove { .. });
                if p.moving
                    != Some(ReplicaMove {
                        from: *from,
                        to: *to,
                        rolling_back: rolling,
                    })
                {
                    return Err(Error::invalid(format!(
                        "group {group} is not {} a replica from node {from} to node {to}",
                        if rolling {
                            "rolling back a move of"
                        } else {
                            "moving"
                        }
                    )));
                }
                Ok(())
            }
            MetadataCommand::FinishReplicaMove { group, from, to } => {
                let (_, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                // A move rolling back still finishes if its new replica
                // was promoted before the rollback reached the leader.
                if p.moving.map(|m| (m.from, m.to)) != Some((*from, *to)) {
                    return Err(Error::invalid(format!(
                        "group {group} is not moving a replica from node {from} to node {to}"
                    )));
                }
                Ok(())
            }
            MetadataCommand::FinishMembershipChange { change } => {
                if self.membership.as_ref() != Some(change) {
                    return Err(Error::invalid(format!(
                        "membership change {change} is not the one in flight ({:?})",
                        self.membership.as_ref().map(|c| c.to_string())
                    )));
                }
                Ok(())
            }
            MetadataCommand::UpdateIsr {
                group,
                leader,
                expected,
                isr,
                reason: _,
            } => {
                let (topic, p) = self.partition_of_group(*group).ok_or_else(|| {
                    Error::invalid(format!("group {group} replicates no partition"))
                })?;
                if p.isr != *expected {
                    return Err(Error::invalid(format!(
                        "stale ISR update for group {group}: ISR is {:?}, not {expected:?}",
                        p.isr
                    )));
                }
                if !p.replicas.contains(leader) {
                    return Err(Error::invalid(format!(
                        "leader {leader} is not a replica of group {group}"
                    )));
                }
                if !isr.contains(leader) {
                    return Err(Error::invalid("the leader must be in its ISR"));
                }
                if !p.isr.contains(leader) && !topic.unclean_leader_election {
                    return Err(Error::invalid(format!(
                        "leader {leader} is not in the ISR {:?} and topic {} does not allow unclean leader election",
                        p.isr, topic.name
                    )));
                }
                let mut seen = std::collections::BTreeSet::new();
                let candidates = p.isr_candidates();
                for n in isr {
                    if !candidates.contains(n) || !seen.insert(*n) {
                        return Err(Error::invalid(format!(
                            "ISR {isr:?} must be distinct replicas of {candidates:?}"
                        )));
                    }
                }
                Ok(())
            }
        }
    }
}

fn validate_node(n: &NodeInfo) -> Result<(), Error> {
    if n.id == 0 {
        return Err(Error::invalid("node id 0 is reserved"));
    }
    validate_addr(&n.peer_addr).map_err(Error::invalid)?;
    validate_addr(&n.client_addr).map_err(Error::invalid)?;
    if n.peer_addr == n.client_addr {
        return Err(Error::invalid(format!(
            "node {} uses {} for both peer and client traffic",
            n.id, n.peer_addr
        )));
    }
    if let Some(rack) = &n.rack {
        validate_rack(rack).map_err(Error::invalid)?;
    }
    Ok(())
}

/// Longest rack name.
pub const RACK_NAME_MAX_LEN: usize = 64;

/// Checks a rack name: 1 to 64 printable characters without spaces.
pub fn validate_rack(rack: &str) -> Result<(), String> {
    if rack.is_empty()
        || rack.len() > RACK_NAME_MAX_LEN
        || rack.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "rack {rack:?} must be 1 to {RACK_NAME_MAX_LEN} printable characters without spaces"
        ));
    }
    Ok(())
}
