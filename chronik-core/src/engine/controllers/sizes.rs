//! Partition sizes for the rebalancer: each node reports the size of the
//! partitions it leads through the metadata group, when it changed enough
//! to matter (so a busy cluster adds a few metadata entries a minute, not
//! one per produce).

use super::*;

/// A size is reported again once it moved by this many bytes...
const SIZE_REPORT_MIN_BYTES: u64 = 1 << 20;
/// ... and by this fraction of the last reported size.
const SIZE_REPORT_MIN_FRACTION: u64 = 10;

impl<S: StateMachine> Engine<S> {
    /// Every half check interval, leaders report partition sizes that
    /// changed by at least 1 MiB and 10 % since their last report.
    pub(in crate::engine) fn report_sizes(&mut self) {
        let now = self.now;
        let every = (self.config.rebalance.check_interval_ms / 2).max(1);
        if self
            .sizes_reported_at
            .is_some_and(|at| now.as_millis() < at.as_millis() + every)
        {
            return;
        }
        self.sizes_reported_at = Some(now);
        let known = self.metadata.sm.partition_sizes();
        let sizes: Vec<(GroupId, u64)> = self
            .partitions
            .iter()
            .filter(|(_, g)| g.is_leader())
            .filter_map(|(id, g)| Some((*id, g.sm.0.size_bytes()?)))
            .filter(|(id, bytes)| {
                known.get(id).is_none_or(|old| {
                    let moved = bytes.abs_diff(*old);
                    moved >= SIZE_REPORT_MIN_BYTES && moved * SIZE_REPORT_MIN_FRACTION >= *old
                })
            })
            .collect();
        if sizes.is_empty() {
            return;
        }
        let cmd = MetadataCommand::ReportSizes { sizes };
        let data = postcard::to_stdvec(&cmd).expect("metadata commands serialize");
        // No reply is awaited: a lost report is made again next round.
        if self.metadata.raw.propose(vec![], data).is_ok() {
            self.dirty.insert(METADATA_GROUP);
        }
    }
}
