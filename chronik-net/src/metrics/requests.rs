//! Request metrics: every client and admin call by method and outcome
//! code, and the engine commands behind them (produces, fetches, metadata
//! operations, membership changes, proposals) by outcome and latency.

use super::Metrics;
use crate::partition_store::{DiskLog, Fetch};
use crate::proto;
use chronik_core::membership::MembershipChange;
use chronik_core::{Command, ReadConsistency, RecordCommand, Response};

/// The outcome label of an answer: `OK`, or the error code's wire name
/// (`NOT_LEADER`, `NOT_ENOUGH_REPLICAS`...).
pub fn code_label(error: Option<&proto::Error>) -> &'static str {
    match error {
        None => "OK",
        Some(e) => proto::ErrorCode::try_from(e.code)
            .map(|c| c.as_str_name())
            .unwrap_or("UNKNOWN"),
    }
}

/// A gRPC status's code as a label (a call that failed outside the
/// in-band error, e.g. a node stopping under it).
pub fn status_label(status: &tonic::Status) -> &'static str {
    match status.code() {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "GRPC_CANCELLED",
        tonic::Code::InvalidArgument => "GRPC_INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "GRPC_DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "GRPC_NOT_FOUND",
        tonic::Code::Unavailable => "GRPC_UNAVAILABLE",
        tonic::Code::Unimplemented => "GRPC_UNIMPLEMENTED",
        tonic::Code::Internal => "GRPC_INTERNAL",
        _ => "GRPC_OTHER",
    }
}

/// Responses that may carry an in-band error.
pub trait InBandError {
    fn in_band_error(&self) -> Option<&proto::Error>;
}

/// Answers without an in-band error (the ones with one implement this
/// where they are made refusable, in the service).
macro_rules! no_in_band_error {
    ($($t:ty),* $(,)?) => {
        $(impl InBandError for $t {
            fn in_band_error(&self) -> Option<&proto::Error> {
                None
            }
        })*
    };
}

no_in_band_error!(proto::NodeStatusResponse, proto::ClusterStatusResponse);

/// What an engine command is, for its metrics.
pub(crate) enum Op {
    Produce { records: u64, bytes: u64 },
    Fetch(&'static str),
    Metadata(&'static str),
    Membership(&'static str),
}

impl Op {
    pub(crate) fn of(cmd: &Command<DiskLog>) -> Op {
        match cmd {
            Command::Propose {
                command: RecordCommand::Append { records, .. },
                ..
            } => Op::Produce {
                records: records.len() as u64,
                bytes: records.iter().map(|r| r.len() as u64).sum(),
            },
            Command::Query { consistency, .. } => Op::Fetch(match consistency {
                ReadConsistency::Leader => "leader",
                ReadConsistency::Follower => "follower",
                ReadConsistency::FollowerStale => "follower_stale",
            }),
            Command::Metadata(c) => Op::Metadata(c.op_name()),
            Command::Membership(MembershipChange::Add(_)) => Op::Membership("add"),
            Command::Membership(MembershipChange::Remove(_)) => Op::Membership("remove"),
        }
    }
}

impl Metrics {
    /// Records one call of `method` answered after `seconds`, with the
    /// answer's outcome `code`.
    pub fn observe_call(&self, method: &str, code: &str, seconds: f64) {
        self.grpc_requests.with_label_values(&[method, code]).inc();
        self.grpc_request_seconds
            .with_label_values(&[method])
            .observe(seconds);
    }

    /// Records one engine command's outcome after `seconds`.
    pub(crate) fn observe_command(
        &self,
        op: &Op,
        seconds: f64,
        outcome: &Result<Response<DiskLog>, proto::Error>,
    ) {
        let code = code_label(outcome.as_ref().err());
        let proposal = |kind: &str| {
            let outcome = if outcome.is_ok() {
                "committed"
            } else {
                "dropped"
            };
            self.raft_proposals
                .with_label_values(&[kind, "submitted"])
                .inc();
            self.raft_proposals
                .with_label_values(&[kind, outcome])
                .inc();
        };
        match op {
            Op::Produce { records, bytes } => {
                proposal("partition");
                self.produce_requests.with_label_values(&[code]).inc();
                self.produce_seconds.observe(seconds);
                if outcome.is_ok() {
                    self.produced_records.inc_by(*records);
                    self.produced_bytes.inc_by(*bytes);
                }
            }
            Op::Fetch(consistency) => {
                self.fetch_requests
                    .with_label_values(&[consistency, code])
                    .inc();
                self.fetch_seconds
                    .with_label_values(&[consistency])
                    .observe(seconds);
                if let Ok(Response::Query(Fetch::Read(f))) = outcome {
                    self.fetched_records.inc_by(f.records.len() as u64);
                }
            }
            Op::Metadata(name) | Op::Membership(name) => {
                proposal("metadata");
                let op_name = match op {
                    Op::Membership(change) => {
                        self.membership_changes
                            .with_label_values(&[change, code])
                            .inc();
                        if *change == "add" {
                            "add_node"
                        } else {
                            "remove_node"
                        }
                    }
                    _ => name,
                };
                self.metadata_operations
                    .with_label_values(&[op_name, code])
                    .inc();
                self.metadata_operation_seconds
                    .with_label_values(&[op_name])
                    .observe(seconds);
            }
        }
    }
}
