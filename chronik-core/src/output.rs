//! What the engine hands to its driver, with the ordering contract each
//! output carries.

use crate::error::Error;
use crate::metadata::{MetadataCommand, MetadataResponse};
use crate::persist::PersistBatch;
use crate::state_machine::StateMachine;
use crate::types::{GroupId, NodeId, PartitionId, ReadConsistency, RequestId, Role};

/// A Raft message of one group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    pub group: GroupId,
    pub message: raft::eraftpb::Message,
}

/// A client or operator request.
#[derive(Debug)]
pub enum Command<S: StateMachine> {
    /// A metadata change, proposed on the metadata leader.
    Metadata(MetadataCommand),
    /// A membership change: validated on the metadata leader against the
    /// live configuration, recorded in metadata, then carried out in the
    /// background (see `membership`). Replied once recorded.
    Membership(crate::membership::MembershipChange),
    /// A command for a partition's state machine, proposed on its leader.
    /// For the record log: `RecordCommand::Append` (produce).
    Propose {
        partition: PartitionId,
        command: S::Command,
    },
    /// A read of a partition's state machine, as fresh as `consistency`
    /// asks: linearizable on the leader or on any replica (Raft ReadIndex,
    /// thesis 6.4), or whatever a replica has applied. For the record log:
    /// a fetch.
    Query {
        partition: PartitionId,
        query: S::Query,
        consistency: ReadConsistency,
    },
}

impl<S: StateMachine> Clone for Command<S> {
    fn clone(&self) -> Self {
        match self {
            Command::Metadata(c) => Command::Metadata(c.clone()),
            Command::Membership(c) => Command::Membership(c.clone()),
            Command::Propose { partition, command } => Command::Propose {
                partition: partition.clone(),
                command: command.clone(),
            },
            Command::Query {
                partition,
                query,
                consistency,
            } => Command::Query {
                partition: partition.clone(),
                query: query.clone(),
                consistency: *consistency,
            },
        }
    }
}

/// The successful result of a [`Command`].
#[derive(Debug, PartialEq)]
pub enum Response<S: StateMachine> {
    Metadata(MetadataResponse),
    Applied(S::Response),
    Query(S::QueryResponse),
}

impl<S: StateMachine> Clone for Response<S> {
    fn clone(&self) -> Self {
        match self {
            Response::Metadata(r) => Response::Metadata(r.clone()),
            Response::Applied(r) => Response::Applied(r.clone()),
            Response::Query(r) => Response::Query(r.clone()),
        }
    }
}

/// Something worth knowing that needs no action.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// This node's view of a group changed: new term, role or leader.
    RoleChanged {
        group: GroupId,
        term: u64,
        role: Role,
        leader: Option<NodeId>,
    },
    /// A committed entry was applied (only with `emit_apply_events`).
    /// `digest` identifies the entry's content within one build; `state`
    /// is the state machine's fingerprint after it
    /// ([`crate::StateMachine::fingerprint`]).
    EntryApplied {
        group: GroupId,
        index: u64,
        term: u64,
        digest: u64,
        state: Option<u64>,
    },
    /// A snapshot from the leader replaced the group's state.
    SnapshotInstalled {
        group: GroupId,
        index: u64,
        /// The state machine's fingerprint after the install.
        state: Option<u64>,
    },
    /// The group's log was compacted behind a local snapshot.
    SnapshotCreated {
        group: GroupId,
        index: u64,
    },
    GroupCreated {
        group: GroupId,
        partition: PartitionId,
    },
    /// This node's metadata replica applied a rebalancing or replica-move
    /// decision (`run_started`, `run_cancelled`, `move_started`,
    /// `move_finished`, `move_rolling_back`, `move_rolled_back`,
    /// `move_skipped`); `group` is the partition's, for moves.
    RebalanceDecision {
        decision: &'static str,
        group: Option<GroupId>,
    },
    /// This node, leading the group, started handing leadership to `to`
    /// (a voluntary change, not an election lost).
    LeadershipTransfer {
        group: GroupId,
        to: NodeId,
        reason: &'static str,
    },
    /// A committed configuration change was applied: the group's voters
    /// (and, while joint, the outgoing voters) and learners now.
    ConfChanged {
        group: GroupId,
        voters: Vec<NodeId>,
        outgoing: Vec<NodeId>,
        learners: Vec<NodeId>,
    },
    GroupDropped {
        group: GroupId,
    },
    /// The metadata group applied a partition's new ISR (every node reports
    /// every change), or created the partition with its first ISR.
    IsrChanged {
        partition: PartitionId,
        group: GroupId,
        isr: Vec<NodeId>,
        min_insync_replicas: u32,
        reason: String,
    },
    /// This node, as the group's partition leader, decided its ISR should
    /// change to `isr` (a shrink, an expand or an unclean takeover) and
    /// proposes it through the metadata group; the change takes effect only
    /// once applied ([`Event::IsrChanged`]). Made again after a while if the
    /// proposal is lost. Lets checkers tell a lagging replica the leader
    /// still counts as in sync from one whose removal waits on metadata.
    IsrProposed {
        group: GroupId,
        isr: Vec<NodeId>,
        reason: String,
    },
    /// This node, as the group's leader, accepted a produce and appended it
    /// at `index` (only with `emit_apply_events`): lets checkers hold the
    /// leader to the ISR it had applied at that moment.
    ProduceAccepted {
        group: GroupId,
        index: u64,
    },
    /// This node acknowledged a produce to the group's partition, whose
    /// entry is at `index` (only with `emit_apply_events`): lets checkers
    /// compare acknowledgements with the ISR this node had applied and with
    /// the replicas that hold the entry. Emitted after every other output
    /// of the same input.
    ProduceAcked {
        group: GroupId,
        index: u64,
    },
    /// A linearizable read was served at `read_index` (only with
    /// `emit_apply_events`): checkers compare it with what the node applied.
    ReadServed {
        group: GroupId,
        read_index: u64,
    },
    /// This node applied a metadata configuration that no longer includes
    /// it: it was removed from the cluster and should stop.
    RemovedFromCluster,
    /// This node's replica of the group stopped serving: its state did not
    /// recover from storage, or its storage failed, and it is rebuilt from
    /// the leader's snapshot (`SnapshotInstalled` ends it).
    ReplicaRepairing {
        group: GroupId,
        reason: String,
    },
    /// This node's replica of the group may have lost log entries it had
    /// acknowledged (recovery cut a corrupt WAL record away): it neither
    /// votes nor campaigns until `VotingResumed`.
    VotingSuspended {
        group: GroupId,
    },
    /// The replica holds a commit of its leader's current term again.
    VotingResumed {
        group: GroupId,
    },
}

/// One thing for the driver to do. Poll with `Engine::poll_output` until it
/// returns `None` after every input.
#[derive(Debug)]
pub enum Output<S: StateMachine> {
    /// Messages for one peer, all groups batched. MAY be sent at once, before
    /// earlier `Persist` outputs complete: the engine holds back every message
    /// that depends on state not yet durable until `handle_persisted`. MAY be
    /// dropped (Raft retries).
    Send {
        to: NodeId,
        messages: Vec<GroupMessage>,
    },
    /// State to make durable. MUST be persisted in ticket order and reported
    /// with `handle_persisted` only AFTER it is durable.
    Persist(PersistBatch),
    /// Storage work of one partition's state machine
    /// ([`StateMachine::Io`]). MUST run after every earlier `StateIo` of the
    /// same group, and before the group's read replies that follow it are
    /// served from storage (a reply may describe data this work writes);
    /// groups are independent of each other and of `Persist`. Report each
    /// ticket with `Engine::handle_state_io` once it ran (or failed: the
    /// group's later work may then be skipped, and reported failed, until
    /// the engine resets the state). Nothing waits for it but compaction:
    /// the WAL keeps every entry until the work before a snapshot is done.
    StateIo {
        group: GroupId,
        ticket: u64,
        ops: Vec<S::Io>,
    },
    /// The outcome of a command. Sent only AFTER what it acknowledges is
    /// committed (durable on a quorum).
    Reply {
        request_id: RequestId,
        result: Result<Response<S>, Error>,
    },
    Event(Event),
}
