//! Chronik's partition state machine: an append-only record log with dense
//! offsets starting at 0. Kept in memory here; the node driver stores
//! committed records on disk.

use crate::error::Error;
use crate::state_machine::{StateError, StateMachine};
use crate::types::PartitionId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Limits that a produce must respect, taken from the engine config.
#[derive(Clone, Debug)]
pub struct RecordLogOptions {
    pub record_size_max_bytes: usize,
    pub produce_records_max: usize,
}

impl Default for RecordLogOptions {
    fn default() -> Self {
        RecordLogOptions {
            record_size_max_bytes: 1024 * 1024,
            produce_records_max: 10_000,
        }
    }
}

/// The replicated command: a batch of records appended atomically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RecordCommand {
    /// `timestamp_ms` is the proposer's wall clock (ms since the Unix
    /// epoch). It travels in the entry, so every replica sees the same
    /// value: time-based retention stays deterministic.
    Append {
        records: Vec<Bytes>,
        timestamp_ms: u64,
    },
}

/// A read of committed records.
#[derive(Clone, Debug, PartialEq)]
pub enum RecordQuery {
    /// Records from `offset` on, at least one (if any) and then up to
    /// `max_bytes` of record payload.
    Fetch { offset: u64, max_bytes: u64 },
}

/// Reply to an append: where the batch landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub count: u64,
}

/// Reply to a fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// `(offset, record)` pairs, offsets consecutive from the requested one.
    pub records: Vec<(u64, Bytes)>,
    /// One past the last committed offset: the next offset a produce gets.
    pub high_watermark: u64,
}

/// Append-only record log.
///
/// Invariant: `records[i]` holds offset `i`; offsets are dense and never
/// reused, so every replica that applied the same entries holds the same
/// record at each offset.
#[derive(Debug)]
pub struct RecordLog {
    records: Vec<Bytes>,
    applied_index: u64,
    options: RecordLogOptions,
}

#[derive(Serialize, Deserialize)]
struct RecordLogSnapshot {
    records: Vec<Bytes>,
}

/// Checks a produce against the limits: shared by every record-log state
/// machine (in memory here, on disk in the node).
pub fn validate_append(command: &RecordCommand, limits: &RecordLogOptions) -> Result<(), Error> {
    let RecordCommand::Append { records, .. } = command;
    if records.is_empty() {
        return Err(Error::invalid("produce carries no records"));
    }
    if records.len() > limits.produce_records_max {
        return Err(Error::invalid(format!(
            "produce carries {} records, the limit is {}",
            records.len(),
            limits.produce_records_max
        )));
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.len() > limits.record_size_max_bytes)
    {
        return Err(Error::RecordTooLarge {
            size: r.len(),
            max: limits.record_size_max_bytes,
        });
    }
    Ok(())
}

impl RecordLog {
    /// Number of records: the high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.records.len() as u64
    }

    /// The record at `offset`, if committed and applied.
    pub fn get(&self, offset: u64) -> Option<&Bytes> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.records.get(i))
    }
}

impl StateMachine for RecordLog {
    type Command = RecordCommand;
    type Response = Appended;
    type Query = RecordQuery;
    type QueryResponse = Fetched;
    type Options = RecordLogOptions;
    type Io = std::convert::Infallible;
    type IoDone = std::convert::Infallible;

    fn new(_group: crate::GroupId, _partition: &PartitionId, options: &RecordLogOptions) -> Self {
        RecordLog {
            records: Vec::new(),
            applied_index: 0,
            options: options.clone(),
        }
    }

    fn validate(&self, command: &RecordCommand) -> Result<(), Error> {
        validate_append(command, &self.options)
    }

    fn apply(&mut self, index: u64, command: RecordCommand) -> Appended {
        debug_assert!(index > self.applied_index, "apply out of order");
        let RecordCommand::Append { records, .. } = command;
        let base_offset = self.high_watermark();
        let count = records.len() as u64;
        self.records.extend(records);
        self.applied_index = index;
        Appended { base_offset, count }
    }

    fn query(&self, query: &RecordQuery) -> Result<Fetched, Error> {
        let RecordQuery::Fetch { offset, max_bytes } = *query;
        let high_watermark = self.high_watermark();
        if offset > high_watermark {
            return Err(Error::OffsetOutOfRange {
                offset,
                high_watermark,
            });
        }
        let mut records = Vec::new();
        let mut bytes = 0u64;
        for (i, r) in self.records.iter().enumerate().skip(offset as usize) {
            if !records.is_empty() && bytes + r.len() as u64 > max_bytes {
                break;
            }
            bytes += r.len() as u64;
            records.push((i as u64, r.clone()));
        }
        Ok(Fetched {
            records,
            high_watermark,
        })
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }

    fn fingerprint(&self) -> Option<u64> {
        Some(self.high_watermark())
    }

    fn validate_snapshot(_options: &RecordLogOptions, data: &[u8]) -> Result<(), StateError> {
        postcard::from_bytes::<RecordLogSnapshot>(data)
            .map(|_| ())
            .map_err(|e| StateError::Corrupt(format!("record log snapshot: {e}")))
    }

    fn snapshot(&mut self) -> Vec<u8> {
        postcard::to_stdvec(&RecordLogSnapshot {
            records: self.records.clone(),
        })
        .expect("serializing an in-memory record log cannot fail")
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateError> {
        let snap: RecordLogSnapshot = postcard::from_bytes(data)
            .map_err(|e| StateError::Corrupt(format!("record log snapshot: {e}")))?;
        self.records = snap.records;
        self.applied_index = index;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> RecordLog {
        RecordLog::new(1, &PartitionId::new("t", 0), &RecordLogOptions::default())
    }

    fn append(n: usize) -> RecordCommand {
        RecordCommand::Append {
            records: (0..n).map(|i| Bytes::from(format!("r{i}"))).collect(),
            timestamp_ms: 0,
        }
    }

    #[test]
    fn offsets_are_dense_from_zero() {
        let mut l = log();
        assert_eq!(
            l.apply(3, append(2)),
            Appended {
                base_offset: 0,
                count: 2
            }
        );
        assert_eq!(
            l.apply(5, append(3)),
            Appended {
                base_offset: 2,
                count: 3
            }
        );
        assert_eq!(l.high_watermark(), 5);
        let f = l
            .query(&RecordQuery::Fetch {
                offset: 1,
                max_bytes: 4,
            })
            .expect("in range");
        let offsets: Vec<u64> = f.records.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![1, 2]);
        assert_eq!(f.high_watermark, 5);
    }

    #[test]
    fn fetch_returns_at_least_one_record_and_rejects_past_end() {
        let mut l = log();
        l.apply(1, append(2));
        let f = l
            .query(&RecordQuery::Fetch {
                offset: 0,
                max_bytes: 0,
            })
            .expect("in range");
        assert_eq!(f.records.len(), 1);
        let at_end = l
            .query(&RecordQuery::Fetch {
                offset: 2,
                max_bytes: 10,
            })
            .expect("at end is empty, not an error");
        assert!(at_end.records.is_empty());
        assert_eq!(
            l.query(&RecordQuery::Fetch {
                offset: 3,
                max_bytes: 10
            }),
            Err(Error::OffsetOutOfRange {
                offset: 3,
                high_watermark: 2
            })
        );
    }

    #[test]
    fn validate_enforces_limits() {
        let l = RecordLog::new(
            1,
            &PartitionId::new("t", 0),
            &RecordLogOptions {
                record_size_max_bytes: 4,
                produce_records_max: 2,
            },
        );
        assert!(l.validate(&append(0)).is_err());
        assert!(l.validate(&append(3)).is_err());
        let big = RecordCommand::Append {
            records: vec![Bytes::from_static(b"12345")],
            timestamp_ms: 0,
        };
        assert_eq!(
            l.validate(&big),
            Err(Error::RecordTooLarge { size: 5, max: 4 })
        );
        assert!(l.validate(&append(2)).is_ok());
    }

    #[test]
    fn snapshot_round_trips_and_rejects_garbage() {
        let mut l = log();
        l.apply(4, append(3));
        let snap = l.snapshot();
        let mut other = log();
        other.restore(4, &snap).expect("restore");
        assert_eq!(other.records, l.records);
        assert_eq!(other.applied_index(), 4);
        assert!(other.restore(5, &[0xff, 0xff, 0xff]).is_err());
    }
}
