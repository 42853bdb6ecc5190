//! Sans-IO multi-raft engine of Chronik.
//!
//! An [`Engine`] is one node's consensus state: the metadata Raft group
//! (nodes, topics, replica placement) and one Raft group per partition
//! replica the node hosts, each a raft-rs `RawNode`. It performs no IO and
//! reads no clock: the driver feeds it inputs (`handle_tick`,
//! `handle_messages`, `handle_command`, `handle_persisted`,
//! `handle_state_io`), each with the time, and executes what
//! [`Engine::poll_output`] returns, honouring each [`Output`]'s ordering
//! contract. A partition's state machine does no IO either: its storage
//! work leaves as [`Output::StateIo`].
//!
//! What it guarantees, given a driver that keeps the contract:
//! - nothing leaves the engine that depends on state not yet durable;
//! - a reply acknowledges only what is committed;
//! - every replica applies the same commands in the same order, exactly
//!   once per incarnation, and a restarted engine rebuilds the same state;
//! - a seed decides every random choice (election jitter included).
//!
//! # Example: a one-node cluster
//!
//! ```
//! use chronik_core::{Command, Engine, EngineConfig, NodeInfo, Output, Response, Time,
//!     DurableState, MetadataCommand, PartitionId, ReadConsistency, RecordCommand, RecordQuery};
//!
//! let node = NodeInfo { id: 1, client_addr: "127.0.0.1:9092".into(), peer_addr: "127.0.0.1:9093".into(), rack: None };
//! let config = EngineConfig::new(1, vec![node]);
//! let mut disk = DurableState::default(); // stands in for the WAL
//! let mut engine = Engine::new_record_log(config, disk.clone(), Time(0)).unwrap();
//!
//! // The driver loop: execute outputs, answer persistence, tick on time.
//! let mut replies = Vec::new();
//! let mut drive = |engine: &mut Engine, disk: &mut DurableState, replies: &mut Vec<_>| {
//!     while let Some(out) = engine.poll_output() {
//!         match out {
//!             Output::Persist(batch) => {
//!                 disk.apply_batch(&batch).unwrap(); // write + fsync
//!                 engine.handle_persisted(Time(0), batch.ticket);
//!             }
//!             Output::Send { .. } => {} // one node: no peers
//!             Output::Reply { request_id, result } => replies.push((request_id, result)),
//!             Output::Event(_) => {}
//!             // The in-memory record log queues no storage work.
//!             Output::StateIo { .. } => {}
//!         }
//!     }
//! };
//! let mut now = 0;
//! while engine.status()[0].leader != Some(1) {
//!     now += 100;
//!     engine.handle_tick(Time(now));
//!     drive(&mut engine, &mut disk, &mut replies);
//! }
//! // Let the leader register the node, then create a topic and produce.
//! engine.handle_tick(Time(now + 100));
//! drive(&mut engine, &mut disk, &mut replies);
//! engine.handle_command(Time(now), 1, Command::Metadata(MetadataCommand::CreateTopic {
//!     name: "events".into(), partitions: 1, replication_factor: 1, min_insync_replicas: 1,
//!     unclean_leader_election: false,
//! }));
//! drive(&mut engine, &mut disk, &mut replies);
//! let p = PartitionId::new("events", 0);
//! while engine.group_status(1).map(|s| s.leader) != Some(Some(1)) {
//!     now += 100;
//!     engine.handle_tick(Time(now));
//!     drive(&mut engine, &mut disk, &mut replies);
//! }
//! engine.handle_command(Time(now), 2, Command::Propose {
//!     partition: p.clone(),
//!     command: RecordCommand::Append { records: vec!["hello".into()], timestamp_ms: 0 },
//! });
//! drive(&mut engine, &mut disk, &mut replies);
//! engine.handle_command(Time(now), 3, Command::Query {
//!     partition: p, query: RecordQuery::Fetch { offset: 0, max_bytes: 1024 },
//!     consistency: ReadConsistency::Leader,
//! });
//! drive(&mut engine, &mut disk, &mut replies);
//! match &replies.last().unwrap().1 {
//!     Ok(Response::Query(fetched)) => assert_eq!(fetched.records[0].1, "hello"),
//!     other => panic!("{other:?}"),
//! }
//! ```

pub mod config;
mod engine;
pub mod error;
mod group;
pub mod isr;
mod logger;
pub mod membership;
pub mod metadata;
pub mod output;
pub mod partition_log;
pub mod persist;
pub mod planted;
pub mod read_index;
pub mod rebalance;
pub mod shutdown;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use config::EngineConfig;
pub use engine::{Engine, GroupStatus, MemberReplication, ReplicateNow};
pub use error::{ConfigError, Error, ErrorCode};
pub use isr::{IsrPolicy, ReplicaLag};
pub use metadata::{MetadataCommand, MetadataResponse, MetadataState, PartitionMeta, TopicMeta};
pub use output::{Command, Event, GroupMessage, Output, Response};
pub use partition_log::{
    validate_append, Appended, Fetched, RecordCommand, RecordLog, RecordLogOptions, RecordQuery,
};
pub use persist::{DurableGroup, DurableState, GroupUpdate, PersistBatch, Ticket};
pub use state_machine::{StateError, StateMachine};
pub use types::{
    GroupId, GroupKind, NodeId, NodeInfo, PartitionId, ReadConsistency, RequestId, Role, Time,
    METADATA_GROUP,
};

/// raft-rs, re-exported so drivers name the same message types.
pub use raft;
