//! The acknowledgement gate of produces: a committed produce is answered
//! only once `min_insync_replicas` members of the ISR hold its entry.

use super::*;

/// What to do with a committed produce's acknowledgement now.
enum AckVerdict {
    /// Enough in-sync replicas hold it.
    Ack(GroupId),
    /// Not yet: hold the reply.
    Wait(GroupId),
    /// It can no longer be acknowledged as the topic demands.
    Fail(Error),
    /// The partition is gone from the metadata: leave the reply as it is.
    Unknown,
}

/// Whether the produce at `index` of `partition` may be acknowledged: the
/// ISR (as applied here) holds at least `min_insync_replicas` replicas, and
/// at least that many of them hold the entry, as this leader's progress
/// tracking knows.
fn ack_verdict<S: StateMachine>(
    metadata: &MetadataState,
    partitions: &BTreeMap<GroupId, PartitionGroup<S>>,
    partition: &PartitionId,
    index: u64,
) -> AckVerdict {
    let (Ok(meta), Some(topic)) = (
        metadata.partition(partition),
        metadata.topic(&partition.topic),
    ) else {
        return AckVerdict::Unknown;
    };
    let group = meta.group;
    let (isr, min) = (meta.isr.len() as u32, topic.min_insync_replicas);
    // Planted bug (simulation builds only): the ISR is not checked after
    // the append; the wait counts any replica holding the entry.
    let skip_isr = crate::planted::active(crate::planted::Bug::MinIsrBeforeAppendOnly);
    if isr < min && !skip_isr {
        return AckVerdict::Fail(Error::NotEnoughReplicasAfterAppend {
            partition: partition.clone(),
            isr,
            min,
        });
    }
    if crate::planted::active(crate::planted::Bug::AckOnQuorum) {
        // Planted bug (simulation builds only): no wait for the ISR.
        return AckVerdict::Ack(group);
    }
    let Some(g) = partitions.get(&group).filter(|g| g.is_leader()) else {
        return AckVerdict::Fail(Error::NotEnoughReplicasAfterAppend {
            partition: partition.clone(),
            isr,
            min,
        });
    };
    let prs = g.raw.raft.prs();
    let counted = if skip_isr { &meta.replicas } else { &meta.isr };
    let holders = counted
        .iter()
        .filter(|id| prs.get(**id).is_some_and(|p| p.matched >= index))
        .count() as u32;
    // Planted bug (simulation builds only): every ISR member must hold it.
    let needed = if crate::planted::active(crate::planted::Bug::AckWaitsForWholeIsr) {
        counted.len() as u32
    } else {
        min
    };
    if holders >= needed {
        AckVerdict::Ack(group)
    } else {
        AckVerdict::Wait(group)
    }
}

impl<S: StateMachine> Engine<S> {
    /// Checks every produce reply about to leave against the ISR as applied
    /// now: one whose ISR fell below `min_insync_replicas` since it was
    /// accepted fails with `NOT_ENOUGH_REPLICAS_AFTER_APPEND`. A committed
    /// produce is acknowledged only once at least `min_insync_replicas`
    /// members of the ISR hold its entry (Raft's commit needs a majority,
    /// which may be fewer, or not in the ISR): until then its reply waits,
    /// and fails after the ISR lag bound (by then the lagging replica has
    /// left the ISR, or the ISR is too small).
    pub(in crate::engine) fn check_produce_acks(&mut self) {
        let reply_index = std::mem::take(&mut self.sink.reply_index);
        if self.produce_checks.is_empty() && self.awaiting_isr.is_empty() {
            return;
        }
        let mut acked = Vec::new();
        // Positions in the outputs of the replies held back now, and what
        // waits for them.
        let mut held = BTreeSet::new();
        let mut newly_waiting = Vec::new();
        let deadline = self.now.plus_millis(2 * self.config.isr_max_lag_ms);
        for (position, out) in self.sink.outputs.iter_mut().enumerate() {
            let Output::Reply { request_id, result } = out else {
                continue;
            };
            let Some(partition) = self.produce_checks.remove(request_id) else {
                continue;
            };
            if result.is_err() {
                continue;
            }
            let index = reply_index.get(request_id).copied().unwrap_or(0);
            match ack_verdict(&self.metadata.sm, &self.partitions, &partition, index) {
                AckVerdict::Ack(group) => {
                    if crate::planted::active(crate::planted::Bug::FailAfterAppend)
                        && *request_id % 5 == 0
                    {
                        // Planted bug (simulation builds only): an appended
                        // and committed produce is answered as a definite
                        // refusal.
                        *result = Err(Error::invalid("planted bug: fail after append"));
                    } else {
                        acked.push((group, index));
                    }
                }
                AckVerdict::Fail(e) => *result = Err(e),
                AckVerdict::Wait(group) => {
                    held.insert(position);
                    let result = std::mem::replace(result, Err(Error::OutcomeUnknown { group }));
                    newly_waiting.push(AwaitingIsr {
                        request_id: *request_id,
                        partition,
                        index,
                        result,
                        deadline,
                    });
                }
                AckVerdict::Unknown => {}
            }
        }
        if !held.is_empty() {
            let mut position = 0;
            self.sink.outputs.retain(|_| {
                position += 1;
                !held.contains(&(position - 1))
            });
        }
        // Earlier produces still waiting: released, failed or kept.
        for w in std::mem::take(&mut self.awaiting_isr) {
            match ack_verdict(&self.metadata.sm, &self.partitions, &w.partition, w.index) {
                AckVerdict::Ack(group) => {
                    self.sink.reply(w.request_id, w.result);
                    acked.push((group, w.index));
                }
                AckVerdict::Fail(e) => self.sink.reply(w.request_id, Err(e)),
                AckVerdict::Wait(_) if self.now < w.deadline => self.awaiting_isr.push(w),
                AckVerdict::Wait(group) => {
                    let (isr, min) = match (
                        self.metadata.sm.partition(&w.partition),
                        self.metadata.sm.topic(&w.partition.topic),
                    ) {
                        (Ok(meta), Some(topic)) => (meta.isr.clone(), topic.min_insync_replicas),
                        _ => (Vec::new(), 0),
                    };
                    let holders = self.partitions.get(&group).map_or(0, |g| {
                        let prs = g.raw.raft.prs();
                        isr.iter()
                            .filter(|id| prs.get(**id).is_some_and(|p| p.matched >= w.index))
                            .count() as u32
                    });
                    self.sink.reply(
                        w.request_id,
                        Err(Error::InsyncCopiesTimedOut {
                            partition: w.partition,
                            holders,
                            isr,
                            min,
                            waited_ms: 2 * self.config.isr_max_lag_ms,
                        }),
                    );
                }
                AckVerdict::Unknown => {
                    let (isr, min) = self.isr_size(&w.partition).unwrap_or((0, 0));
                    self.sink.reply(
                        w.request_id,
                        Err(Error::NotEnoughReplicasAfterAppend {
                            partition: w.partition,
                            isr,
                            min,
                        }),
                    );
                }
            }
        }
        self.awaiting_isr.extend(newly_waiting);
        if self.sink.emit_apply_events {
            for (group, index) in acked {
                self.sink.event(Event::ProduceAcked { group, index });
            }
        }
    }
}
