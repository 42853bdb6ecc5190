//! Partition storage off the driver task. The engine hands out each
//! group's storage work ([`chronik_core::Output::StateIo`]) and plans
//! fetches; a few worker tasks run them, so a segment sync or a large read
//! of one partition never holds up the ticks, heartbeats and acks of the
//! others, as it did when the state machine wrote files inside the engine.
//!
//! Groups are spread over the workers by id; each worker runs what it gets
//! in order, so a group's work and reads stay in the order the engine
//! emitted them (a read planned after an append reads it). Outcomes go
//! back to the driver on a channel that never blocks the workers.

use crate::disk::Disk;
use crate::metrics::Metrics;
use crate::observer::CrashPoint;
use crate::partition_store::{FetchPlan, SegmentIo, SegmentIoDone};
use crate::segment_files::{ReadError, SegmentFiles};
use chronik_core::{Error, Fetched, GroupId, StateError};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Workers: groups are spread over them by id.
const WORKERS: usize = 4;
/// Jobs queued per worker before the driver waits (backpressure).
const WORKER_QUEUE_MAX: usize = 1024;
/// Most jobs one worker runs in one blocking call.
const JOBS_PER_RUN_MAX: usize = 256;

/// A node and the observer that may crash it.
pub(crate) type Crash = (chronik_core::NodeId, Arc<dyn crate::EngineObserver>);

/// Where a read's outcome goes.
pub(crate) type ReadReply = Box<dyn FnOnce(Result<Fetched, Error>) + Send>;

pub(crate) enum Job {
    Work {
        group: GroupId,
        ticket: u64,
        ops: Vec<SegmentIo>,
    },
    Read {
        plan: FetchPlan,
        reply: ReadReply,
    },
}

/// What the engine must hear about a group's storage.
#[derive(Debug)]
pub(crate) struct IoReport {
    pub group: GroupId,
    /// The work reported, or for a read that found the files broken, the
    /// last work run for the group before it.
    pub ticket: u64,
    pub result: Result<Vec<SegmentIoDone>, StateError>,
}

/// The workers, as the driver holds them.
pub(crate) struct PartitionIo {
    workers: Vec<mpsc::Sender<Job>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl PartitionIo {
    /// Starts the workers over the partitions under `root` on `disk`.
    /// `crash`: this node and an observer that may stop its partition IO
    /// dead before a snapshot's checkpoint (simulation).
    pub fn start(
        disk: Arc<dyn Disk>,
        root: PathBuf,
        reports: mpsc::UnboundedSender<IoReport>,
        metrics: Metrics,
        crash: Option<Crash>,
    ) -> Self {
        let (workers, handles) = (0..WORKERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(WORKER_QUEUE_MAX);
                let handle = tokio::spawn(worker(
                    disk.clone(),
                    root.clone(),
                    rx,
                    reports.clone(),
                    metrics.clone(),
                    crash.clone(),
                ));
                (tx, handle)
            })
            .unzip();
        PartitionIo { workers, handles }
    }

    /// Takes no more jobs and waits until the workers ran those queued.
    pub async fn close(self) {
        drop(self.workers);
        for h in self.handles {
            let _ = h.await;
        }
    }

    /// Queues a job behind the earlier jobs of its group; waits while that
    /// worker is full.
    pub async fn submit(&self, job: Job) {
        let group = match &job {
            Job::Work { group, .. } => *group,
            Job::Read { plan, .. } => plan.group,
        };
        let worker = &self.workers[(group % WORKERS as u64) as usize];
        // The worker ended: the node is stopping.
        if let Err(mpsc::error::SendError(Job::Read { plan, reply })) = worker.send(job).await {
            reply(Err(Error::ReplicaRepairing {
                group: plan.group,
                reason: "the node is stopping".into(),
            }));
        }
    }
}

/// A group's files and the last work run on them.
struct GroupFiles {
    files: SegmentFiles,
    last_ticket: u64,
}

/// What one run produced, delivered once its modelled disk time passed.
enum Outcome {
    Report(IoReport),
    Reply(ReadReply, Result<Fetched, Error>),
}

async fn worker(
    disk: Arc<dyn Disk>,
    root: PathBuf,
    mut rx: mpsc::Receiver<Job>,
    reports: mpsc::UnboundedSender<IoReport>,
    metrics: Metrics,
    crash: Option<Crash>,
) {
    // Only this worker touches its groups; the mutex lets the blocking
    // closure borrow them.
    let groups: Arc<parking_lot::Mutex<HashMap<GroupId, GroupFiles>>> = Arc::default();
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < JOBS_PER_RUN_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let checkpoints = |j: &Job| matches!(j, Job::Work { ops, .. } if ops.iter().any(|op| matches!(op, SegmentIo::Checkpoint { .. })));
        if let Some((node, o)) = &crash {
            if jobs.iter().any(checkpoints)
                && o.crash_here(*node, CrashPoint::StateIoBeforeCheckpoint)
            {
                return std::future::pending().await;
            }
        }
        let started = Instant::now();
        let (g, d, r) = (groups.clone(), disk.clone(), root.clone());
        let run = move || run_jobs(&mut g.lock(), &d, &r, jobs);
        // Real disks block: keep the IO off the async workers. In
        // simulation the disk is memory and must stay on the sim thread.
        #[cfg(not(madsim))]
        let outcomes = match tokio::task::spawn_blocking(run).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("partition IO worker panicked: {e}");
                return;
            }
        };
        #[cfg(madsim)]
        let outcomes = run();
        // A modelled disk's syncs take time too: nothing is done before.
        let latency = disk.take_sync_latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        metrics
            .partition_io_seconds
            .observe(started.elapsed().as_secs_f64());
        for o in outcomes {
            match o {
                Outcome::Report(r) => {
                    if r.result.is_err() {
                        metrics.partition_io_errors.inc();
                    }
                    if reports.send(r).is_err() {
                        return; // the driver stopped
                    }
                }
                Outcome::Reply(reply, result) => reply(result),
            }
        }
    }
}

fn run_jobs(
    groups: &mut HashMap<GroupId, GroupFiles>,
    disk: &Arc<dyn Disk>,
    root: &std::path::Path,
    jobs: Vec<Job>,
) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job {
            Job::Work { group, ticket, ops } => {
                let destroyed = ops.iter().any(|op| matches!(op, SegmentIo::Destroy));
                let g = groups.entry(group).or_insert_with(|| GroupFiles {
                    files: SegmentFiles::new(disk.clone(), root, group),
                    last_ticket: 0,
                });
                g.last_ticket = ticket;
                let result = g.files.run(ops);
                if let Err(e) = &result {
                    tracing::error!(group, ticket, "partition storage failed: {e}");
                }
                if destroyed && result.is_ok() {
                    groups.remove(&group);
                }
                out.push(Outcome::Report(IoReport {
                    group,
                    ticket,
                    result,
                }));
            }
            Job::Read { plan, reply } => {
                let group = plan.group;
                let g = groups.entry(group).or_insert_with(|| GroupFiles {
                    files: SegmentFiles::new(disk.clone(), root, group),
                    last_ticket: 0,
                });
                match g.files.read(&plan) {
                    Ok(f) => out.push(Outcome::Reply(reply, Ok(f))),
                    Err(e) => {
                        let client = e.to_client(group);
                        if let ReadError::Failed(cause) = e {
                            tracing::error!(group, "partition read failed: {cause}");
                            g.files.fail(cause.clone());
                            out.push(Outcome::Report(IoReport {
                                group,
                                ticket: g.last_ticket,
                                result: Err(cause),
                            }));
                        }
                        out.push(Outcome::Reply(reply, Err(client)));
                    }
                }
            }
        }
    }
    out
}
