//! The replicated state a partition group drives. The engine owns ordering,
//! durability and leadership; a [`StateMachine`] only turns committed commands
//! into state and answers reads of that state. Implement it to replicate your
//! own state instead of Chronik's record log ([`crate::RecordLog`]).
//!
//! A state machine does no IO itself: what it needs from storage (a record
//! log on disk appends, syncs and deletes segment files) it queues as
//! [`StateMachine::Io`], which the engine hands to its driver in order
//! ([`crate::Output::StateIo`]); what that work finds out comes back through
//! [`StateMachine::io_done`]. So one slow partition's disk never stalls the
//! engine, and an IO error is an input, not a panic.

use crate::error::Error;
use crate::types::{GroupId, PartitionId};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

/// Why a state machine's data could not be restored or its storage failed.
/// Either way the replica stops serving and rebuilds its state from the
/// leader's snapshot (its Raft log is intact).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Stored or received data does not decode or contradicts itself (a
    /// checksum, a length, an offset).
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// The storage refused an operation (an IO error).
    #[error("storage failed: {0}")]
    Storage(String),
}

/// A deterministic state machine replicated by one partition group.
///
/// Contract: given the same sequence of `apply` calls (or a `restore` followed
/// by the rest of the sequence), every replica reaches the same state and
/// returns the same responses. `apply` must not fail on a command that
/// `validate` accepted; it must not panic on any command at all, since a
/// committed command is replayed on every replica and after every restart.
pub trait StateMachine: Sized + 'static {
    /// What is proposed and replicated. Encoded with postcard into the Raft
    /// entry, so it must round-trip through serde.
    type Command: Serialize + DeserializeOwned + Debug + Clone;
    /// What the proposer receives once its command is applied.
    type Response: Debug + Clone + PartialEq;
    /// A read served from applied state (on the leader after a ReadIndex
    /// round, so it is linearizable).
    type Query: Debug + Clone;
    /// What a query returns.
    type QueryResponse: Debug + Clone + PartialEq;
    /// Per-partition settings fixed at creation (from the topic).
    type Options: Clone + Debug;
    /// Storage work the state machine needs run, in order (a state machine
    /// held in memory: `std::convert::Infallible`).
    type Io: Debug + Send + 'static;
    /// What running [`StateMachine::Io`] reports back (say, an index
    /// rebuilt by scanning files).
    type IoDone: Debug + Send + 'static;

    /// The state machine of `partition`, replicated by Raft group `group`
    /// (group ids are never reused, so they can name on-disk state). The
    /// engine calls [`StateMachine::recover`] right after.
    fn new(group: GroupId, partition: &PartitionId, options: &Self::Options) -> Self;

    /// Brings the state to the snapshot the engine recovered (or to empty
    /// with `None`): the engine then re-applies every committed entry after
    /// it. A state machine that keeps data across restarts must drop what
    /// it holds beyond the snapshot, or entries would apply twice.
    ///
    /// Storage the state relies on may be checked later, by the work this
    /// queues: a failure then comes back as an IO error and the replica
    /// rebuilds from the leader, as it does when this returns an error.
    fn recover(&mut self, snapshot: Option<(u64, &[u8])>) -> Result<(), StateError> {
        match snapshot {
            Some((index, data)) => self.restore(index, data),
            None => Ok(()),
        }
    }

    /// Checks that snapshot data received from a peer can be restored,
    /// without touching any state. Undecodable snapshots are dropped before
    /// Raft sees them.
    fn validate_snapshot(options: &Self::Options, data: &[u8]) -> Result<(), StateError>;

    /// The group was dropped here (topic deleted, or the replica moved
    /// away): release what the state machine holds. Called only once the
    /// WAL record of the drop is durable, so a crash never leaves a
    /// recovered group without its state; one that strikes before this
    /// call leaves state no group owns, for the node to clean at start.
    /// Returns the storage work that releases it.
    fn destroy(self) -> Vec<Self::Io> {
        Vec::new()
    }

    /// The storage work queued since the last call, to run in order after
    /// all work taken before. The engine takes it after every call that
    /// changes state, before it answers anything that depends on it.
    fn take_io(&mut self) -> Vec<Self::Io> {
        Vec::new()
    }

    /// What storage work found out, in the order it ran.
    fn io_done(&mut self, _done: Self::IoDone) {}

    /// Rejects a command before it is proposed (limits, shape). Nothing
    /// refused here ever reaches the log.
    fn validate(&self, command: &Self::Command) -> Result<(), Error>;

    /// Applies a committed command at Raft `index`. Indexes arrive strictly
    /// increasing; `index` may skip entries that carried no command.
    fn apply(&mut self, index: u64, command: Self::Command) -> Self::Response;

    /// Serves a read from the applied state.
    fn query(&self, query: &Self::Query) -> Result<Self::QueryResponse, Error>;

    /// Highest Raft index whose effects this state holds.
    fn applied_index(&self) -> u64;

    /// A short summary of the state that every replica must share at equal
    /// applied index (a record log: its high watermark). Test harnesses
    /// compare it across replicas after every apply, after a snapshot
    /// install and at restart, so a replica whose state drifted from the
    /// entries it claims to have applied is caught at once rather than
    /// when a client happens to read the difference. `None` opts out.
    fn fingerprint(&self) -> Option<u64> {
        None
    }

    /// Bytes the state holds on disk, for the rebalancer's bytes
    /// dimension. `None`: unknown (counts as 0).
    fn size_bytes(&self) -> Option<u64> {
        None
    }

    /// Describes the whole state as of `applied_index()`. The engine
    /// compacts the Raft log up to that index once the storage work queued
    /// so far has run, so that work must make everything the snapshot
    /// relies on durable.
    fn snapshot(&mut self) -> Vec<u8>;

    /// Replaces the state with a snapshot taken at `index`.
    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateError>;
}
