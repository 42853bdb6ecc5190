//! The storage-work contract between the engine and a state machine that
//! keeps its state in files (`Output::StateIo`, `Engine::handle_state_io`):
//! the log is compacted behind a snapshot only once the work that makes it
//! durable is reported done, and failed work turns the replica unavailable
//! while its state is rebuilt, ignoring reports about state a reset
//! replaced.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use chronik_core::{
    Appended, Command, DurableState, Engine, EngineConfig, Error, Event, GroupId, GroupUpdate,
    MetadataCommand, NodeInfo, Output, PartitionId, ReadConsistency, RecordCommand, RecordLog,
    RecordLogOptions, RecordQuery, Response, StateError, StateMachine, Time,
};

/// Storage work of the toy state machine: what a file-backed log would do.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Append(u64),
    Checkpoint(u64),
    Wipe,
}

/// The in-memory record log, queuing the storage work a file-backed one
/// would need.
#[derive(Debug)]
struct Filed {
    log: RecordLog,
    io: Vec<Op>,
}

impl StateMachine for Filed {
    type Command = RecordCommand;
    type Response = Appended;
    type Query = RecordQuery;
    type QueryResponse = chronik_core::Fetched;
    type Options = RecordLogOptions;
    type Io = Op;
    type IoDone = ();

    fn new(group: GroupId, partition: &PartitionId, options: &RecordLogOptions) -> Self {
        Filed {
            log: RecordLog::new(group, partition, options),
            io: Vec::new(),
        }
    }

    fn recover(&mut self, snapshot: Option<(u64, &[u8])>) -> Result<(), StateError> {
        match snapshot {
            Some((index, data)) => self.restore(index, data),
            None => {
                self.io.push(Op::Wipe);
                Ok(())
            }
        }
    }

    fn validate_snapshot(options: &RecordLogOptions, data: &[u8]) -> Result<(), StateError> {
        RecordLog::validate_snapshot(options, data)
    }

    fn take_io(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.io)
    }

    fn validate(&self, command: &RecordCommand) -> Result<(), Error> {
        self.log.validate(command)
    }

    fn apply(&mut self, index: u64, command: RecordCommand) -> Appended {
        self.io.push(Op::Append(index));
        self.log.apply(index, command)
    }

    fn query(&self, query: &RecordQuery) -> Result<chronik_core::Fetched, Error> {
        self.log.query(query)
    }

    fn applied_index(&self) -> u64 {
        self.log.applied_index()
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.io.push(Op::Checkpoint(self.log.applied_index()));
        self.log.snapshot()
    }

    fn restore(&mut self, index: u64, data: &[u8]) -> Result<(), StateError> {
        self.log.restore(index, data)
    }
}

/// A one-node cluster whose storage work is held until the test reports
/// it.
struct Node {
    engine: Engine<Filed>,
    disk: DurableState,
    now: u64,
    /// Storage work handed out and not yet reported: `(group, ticket, ops)`.
    io: Vec<(GroupId, u64, Vec<Op>)>,
    replies: Vec<(u64, Result<Response<Filed>, Error>)>,
    events: Vec<Event>,
    /// Snapshots that reached the WAL, by group.
    snapshots_persisted: Vec<(GroupId, u64)>,
    next_request: u64,
}

impl Node {
    fn start() -> Node {
        let info = NodeInfo {
            id: 1,
            client_addr: "127.0.0.1:9092".into(),
            peer_addr: "127.0.0.1:9093".into(),
            rack: None,
        };
        let mut config = EngineConfig::new(1, vec![info]);
        config.log_compact_threshold_entries = 5;
        let options = RecordLogOptions::from_config(&config);
        let engine = Engine::new(config, options, DurableState::default(), Time(0)).unwrap();
        let mut n = Node {
            engine,
            disk: DurableState::default(),
            now: 0,
            io: Vec::new(),
            replies: Vec::new(),
            events: Vec::new(),
            snapshots_persisted: Vec::new(),
            next_request: 1,
        };
        n.drive();
        n
    }

    fn drive(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Persist(batch) => {
                    for u in &batch.updates {
                        if let GroupUpdate::Snapshot { group, snapshot } = u {
                            self.snapshots_persisted
                                .push((*group, snapshot.get_metadata().index));
                        }
                    }
                    self.disk.apply_batch(&batch).unwrap();
                    self.engine.handle_persisted(Time(self.now), batch.ticket);
                }
                Output::StateIo { group, ticket, ops } => self.io.push((group, ticket, ops)),
                Output::Send { .. } => {}
                Output::Reply { request_id, result } => self.replies.push((request_id, result)),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn tick_until(&mut self, done: impl Fn(&Engine<Filed>) -> bool) {
        for _ in 0..200 {
            if done(&self.engine) {
                return;
            }
            self.now += 100;
            self.engine.handle_tick(Time(self.now));
            self.drive();
        }
        panic!("condition not reached");
    }

    fn command(&mut self, command: Command<Filed>) -> Result<Response<Filed>, Error> {
        let id = self.next_request;
        self.next_request += 1;
        self.engine.handle_command(Time(self.now), id, command);
        self.drive();
        let i = self.replies.iter().position(|(r, _)| *r == id).unwrap();
        self.replies.remove(i).1
    }

    /// Reports every piece of storage work held so far as done.
    fn run_io(&mut self) {
        for (group, ticket, _) in std::mem::take(&mut self.io) {
            self.engine
                .handle_state_io(Time(self.now), group, ticket, Ok(vec![]));
        }
        self.drive();
    }

    fn produce(&mut self, p: &PartitionId) -> Result<Response<Filed>, Error> {
        self.command(Command::Propose {
            partition: p.clone(),
            command: RecordCommand::Append {
                records: vec!["r".into()],
                timestamp_ms: 0,
            },
        })
    }
}

/// A node leading a one-replica partition `t-0` (group 1).
fn with_partition() -> (Node, PartitionId) {
    let mut n = Node::start();
    n.tick_until(|e| e.status()[0].leader == Some(1));
    n.tick_until(|e| e.metadata().nodes().next().is_some());
    n.command(Command::Metadata(MetadataCommand::CreateTopic {
        name: "t".into(),
        partitions: 1,
        replication_factor: 1,
        min_insync_replicas: 1,
        unclean_leader_election: false,
    }))
    .unwrap();
    n.tick_until(|e| e.group_status(1).map(|s| s.leader) == Some(Some(1)));
    (n, PartitionId::new("t", 0))
}

#[test]
fn the_log_is_compacted_behind_a_snapshot_only_once_its_storage_work_ran() {
    let (mut n, p) = with_partition();
    n.run_io(); // the new group's wipe
    for _ in 0..8 {
        n.produce(&p).unwrap();
    }
    let checkpoint =
        n.io.iter()
            .find(|(g, _, ops)| *g == 1 && ops.iter().any(|o| matches!(o, Op::Checkpoint(_))))
            .cloned()
            .expect("a snapshot was taken past the threshold");
    // Appends come before the checkpoint that makes them durable.
    let Op::Checkpoint(at) = checkpoint
        .2
        .iter()
        .find(|o| matches!(o, Op::Checkpoint(_)))
        .unwrap()
        .clone()
    else {
        unreachable!()
    };
    assert!(n
        .io
        .iter()
        .flat_map(|(_, _, ops)| ops)
        .take_while(|o| !matches!(o, Op::Checkpoint(_)))
        .any(|o| *o == Op::Append(at)));
    assert!(
        !n.snapshots_persisted.iter().any(|(g, _)| *g == 1),
        "compacted before the checkpoint ran: {:?}",
        n.snapshots_persisted
    );
    // More produces meanwhile take no second snapshot.
    n.produce(&p).unwrap();
    n.run_io();
    assert_eq!(
        n.snapshots_persisted
            .iter()
            .filter(|(g, _)| *g == 1)
            .map(|(_, i)| *i)
            .collect::<Vec<_>>(),
        vec![at]
    );
    assert!(n.events.contains(&Event::SnapshotCreated {
        group: 1,
        index: at
    }));
}

#[test]
fn failed_storage_work_turns_the_replica_unavailable_until_it_is_rebuilt() {
    let (mut n, p) = with_partition();
    n.run_io();
    n.produce(&p).unwrap();
    let (group, ticket, _) = n.io.pop().unwrap();
    let earlier = ticket; // reported failed below; anything before is stale
    n.engine.handle_state_io(
        Time(n.now),
        group,
        ticket,
        Err(StateError::Storage("EIO (injected)".into())),
    );
    n.drive();
    let repairing = |n: &Node| {
        n.events
            .iter()
            .filter(|e| matches!(e, Event::ReplicaRepairing { group: 1, .. }))
            .count()
    };
    assert_eq!(repairing(&n), 1, "{:?}", n.events);
    // The state is cleared: the storage is wiped afresh.
    assert!(n
        .io
        .iter()
        .any(|(g, _, ops)| *g == 1 && ops == &vec![Op::Wipe]));
    // Nothing is served meanwhile.
    assert!(matches!(n.produce(&p), Err(Error::ReplicaRepairing { .. })));
    let read = n.command(Command::Query {
        partition: p.clone(),
        query: RecordQuery::Fetch {
            offset: 0,
            max_bytes: 100,
        },
        consistency: ReadConsistency::Leader,
    });
    assert!(
        matches!(read, Err(Error::ReplicaRepairing { .. })),
        "{read:?}"
    );
    let status = n.engine.group_status(1).unwrap();
    assert!(
        status
            .repairing
            .as_deref()
            .is_some_and(|r| r.contains("EIO")),
        "{status:?}"
    );
    // A report about work from before the reset changes nothing.
    n.engine.handle_state_io(
        Time(n.now),
        group,
        earlier,
        Err(StateError::Storage("late".into())),
    );
    n.drive();
    assert_eq!(repairing(&n), 1);
}
