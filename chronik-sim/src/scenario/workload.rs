//! The client workload: producers, consumers and a topic creator sharing
//! one history.

use super::*;

pub(super) fn nanos(start: madsim::time::Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

pub(super) fn key(t: &str, p: u32) -> String {
    format!("{t}-{p}")
}

pub(super) fn expand(topics: &[(String, u32)]) -> Vec<(String, u32)> {
    topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.clone(), p)))
        .collect()
}

pub(super) fn names(topics: &[(String, u32, u32)]) -> Vec<(String, u32)> {
    topics.iter().map(|(t, p, _)| (t.clone(), *p)).collect()
}

pub(super) fn records(f: &chronik_net::FetchResult) -> Vec<(u64, String)> {
    f.records
        .iter()
        .map(|(o, r)| (*o, String::from_utf8_lossy(r).into_owned()))
        .collect()
}

/// Shared by the workload's tasks.
pub(super) struct Workload {
    pub(super) history: History,
    pub(super) start: madsim::time::Instant,
    pub(super) end: madsim::time::Instant,
    pub(super) addrs: Vec<String>,
    /// Partitions the producers and consumers use: grows as late topics
    /// are created.
    pub(super) partitions: Mutex<Vec<(String, u32)>>,
    pub(super) next_process: AtomicU64,
    pub(super) next_value: AtomicU64,
    /// Produces refused for too small an ISR, before or after append.
    pub(super) refused_min_isr: AtomicU64,
    pub(super) appended_below_min_isr: AtomicU64,
    /// Linearizable follower reads that succeeded.
    pub(super) follower_reads: AtomicU64,
    /// Topics created during the faults and not deleted: (name, partitions).
    pub(super) late_created: Mutex<Vec<(String, u32)>>,
    /// Partition keys of topics deleted (or whose deletion was asked).
    pub(super) deleted: Mutex<BTreeSet<String>>,
    /// The intruder's produces refused `PERMISSION_DENIED`, and what it
    /// found wrong.
    pub(super) intruder_refused: AtomicU64,
    pub(super) intruder_violations: Mutex<Vec<String>>,
}

/// How often the intruder tries to produce.
const INTRUDE_EVERY: Duration = Duration::from_secs(1);
use crate::stored::INTRUDER_PREFIX;

impl Workload {
    /// Takes topic `pick` (modulo) of those created during the faults out
    /// of the workload before it is deleted: its partitions are no longer
    /// picked, and their acknowledged records need not survive.
    pub(super) fn forget_late_topic(&self, pick: u64) -> Option<String> {
        let mut created = self.late_created.lock();
        if created.is_empty() {
            return None;
        }
        let at = (pick % created.len() as u64) as usize;
        let (name, parts) = created.remove(at);
        self.partitions.lock().retain(|(t, _)| *t != name);
        self.deleted
            .lock()
            .extend((0..parts).map(|p| key(&name, p)));
        Some(name)
    }

    /// The partitions the workload writes to (a deleted topic's are taken
    /// out when its deletion is asked).
    pub(super) fn live_partitions(&self) -> Vec<(String, u32)> {
        self.partitions.lock().clone()
    }

    pub(super) fn pick(&self, rng: &mut impl Rng) -> (String, u32) {
        let parts = self.partitions.lock();
        parts[rng.gen_range(0..parts.len())].clone()
    }

    pub(super) fn client(&self, retry_unknown_outcome: bool) -> Client {
        let c = Client::with_retry(
            self.addrs.clone(),
            RetryPolicy {
                deadline: Duration::from_secs(5),
                retry_unknown_outcome,
                ..RetryPolicy::default()
            },
        );
        crate::sim::with_token(c, crate::sim::ADMIN_TOKEN)
    }

    /// A principal allowed to read but not to write produces to the first
    /// partition every [`INTRUDE_EVERY`] from `from` on: each produce must
    /// be refused `PERMISSION_DENIED` and none of its values may ever be
    /// stored. (It starts once the faults are over: its traffic would
    /// shift every seed's schedule during them.)
    pub(super) async fn intruder(self: Arc<Self>, from: madsim::time::Instant) {
        madsim::time::sleep_until(from).await;
        let client = crate::sim::with_token(
            Client::with_retry(
                self.addrs.clone(),
                RetryPolicy {
                    deadline: Duration::from_secs(2),
                    retry_unknown_outcome: false,
                    ..RetryPolicy::default()
                },
            ),
            crate::sim::READER_TOKEN,
        );
        let mut n = 0u64;
        loop {
            madsim::time::sleep(INTRUDE_EVERY).await;
            if madsim::time::Instant::now() >= self.end {
                return;
            }
            let Some((topic, partition)) = self.partitions.lock().first().cloned() else {
                continue;
            };
            n += 1;
            let value = format!("{INTRUDER_PREFIX}{n}");
            match client
                .produce(&topic, partition, vec![Bytes::from(value.clone())])
                .await
            {
                Ok(offset) => self.intruder_violations.lock().push(format!(
                    "auth: a produce by a principal without write permission was acknowledged ({value:?} at {topic}-{partition} offset {offset})"
                )),
                Err(e) if e.code() == ErrorCode::PermissionDenied => {
                    self.intruder_refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {} // no answer: faults
            }
        }
    }

    /// Sequential sends of unique values; a process whose send ended in an
    /// unknown outcome is retired and replaced by a new process id.
    pub(super) async fn producer(self: Arc<Self>) {
        let client = self.client(false);
        let mut process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mut rng = thread_rng();
        while madsim::time::Instant::now() < self.end {
            let (t, p) = self.pick(&mut rng);
            if let Ok(off) = self.send(&client, &mut process, &t, p).await {
                if rng.gen_bool(0.5) {
                    // Read your write from a follower at once: it must
                    // wait until it has applied the record.
                    self.read_back(&client, process, &t, p, off).await;
                }
            }
        }
    }

    /// Sends one unique value to `t`-`p` as `process`, recorded in the
    /// history; its offset once acknowledged, else the error code. After
    /// an outcome that leaves the value possibly stored, `process` is
    /// retired for a new one.
    pub(super) async fn send(
        &self,
        client: &Client,
        process: &mut u64,
        t: &str,
        p: u32,
    ) -> Result<u64, String> {
        let k = key(t, p);
        let v = format!("v{}", self.next_value.fetch_add(1, Ordering::Relaxed));
        let h = &self.history;
        let invoke = send_value(&k, None, &v);
        h.push(
            nanos(self.start),
            *process,
            OpType::Invoke,
            Func::Send,
            invoke,
        );
        match client.produce(t, p, vec![Bytes::from(v.clone())]).await {
            Ok(off) => {
                let value = send_value(&k, Some(off), &v);
                h.push(nanos(self.start), *process, OpType::Ok, Func::Send, value);
                Ok(off)
            }
            Err(ClientError::UnknownOutcome { .. }) => {
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Info, Func::Send, value);
                *process = self.next_process.fetch_add(1, Ordering::Relaxed);
                Err(ErrorCode::OutcomeUnknown.to_string())
            }
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::NotEnoughReplicasAfterAppend | ErrorCode::GroupRemoved
                ) =>
            {
                // Appended, not acknowledged (as durable enough, or before
                // its topic was deleted): the record may show up, so its
                // outcome is not a failure.
                if e.code() == ErrorCode::NotEnoughReplicasAfterAppend {
                    self.appended_below_min_isr.fetch_add(1, Ordering::Relaxed);
                }
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Info, Func::Send, value);
                *process = self.next_process.fetch_add(1, Ordering::Relaxed);
                Err(e.code().to_string())
            }
            Err(e) => {
                if e.code() == ErrorCode::NotEnoughReplicas {
                    self.refused_min_isr.fetch_add(1, Ordering::Relaxed);
                }
                let value = send_value(&k, None, &v);
                h.push(nanos(self.start), *process, OpType::Fail, Func::Send, value);
                Err(e.code().to_string())
            }
        }
    }

    /// A linearizable follower read of `t`-`p` from `off`, recorded as a
    /// poll of `process`.
    pub(super) async fn read_back(&self, client: &Client, process: u64, t: &str, p: u32, off: u64) {
        let k = key(t, p);
        let h = &self.history;
        let invoke = poll_value(&k, off, &[], None);
        h.push(
            nanos(self.start),
            process,
            OpType::Invoke,
            Func::Poll,
            invoke,
        );
        match client
            .fetch_with(t, p, off, 4096, ReadConsistency::Follower)
            .await
        {
            Ok(f) => {
                self.follower_reads.fetch_add(1, Ordering::Relaxed);
                let value = poll_value(&k, off, &records(&f), Some(f.high_watermark));
                h.push(nanos(self.start), process, OpType::Ok, Func::Poll, value);
            }
            Err(_) => {
                let value = poll_value(&k, off, &[], None);
                h.push(nanos(self.start), process, OpType::Fail, Func::Poll, value);
            }
        }
    }

    /// Polls partitions from where it got to in each, at a random
    /// consistency: leader and follower reads must be linearizable (the
    /// checker flags stale ones); follower-stale reads make no freshness
    /// claim (recorded with a null high watermark) but must agree with
    /// every other observation.
    pub(super) async fn consumer(self: Arc<Self>) {
        let client = self.client(true);
        let process = self.next_process.fetch_add(1, Ordering::Relaxed);
        let mut pos: BTreeMap<String, u64> = BTreeMap::new();
        let mut rng = thread_rng();
        while madsim::time::Instant::now() < self.end {
            let (t, p) = self.pick(&mut rng);
            let k = key(&t, p);
            let from = *pos.get(&k).unwrap_or(&0);
            let h = &self.history;
            let invoke = poll_value(&k, from, &[], None);
            h.push(
                nanos(self.start),
                process,
                OpType::Invoke,
                Func::Poll,
                invoke,
            );
            let consistency = match rng.gen_range(0..5) {
                0 => ReadConsistency::Leader,
                1..=3 => ReadConsistency::Follower,
                _ => ReadConsistency::FollowerStale,
            };
            match client.fetch_with(&t, p, from, 4096, consistency).await {
                Ok(f) => {
                    let recs = records(&f);
                    if let Some((o, _)) = recs.last() {
                        pos.insert(k.clone(), o + 1);
                    }
                    let hwm = match consistency {
                        ReadConsistency::FollowerStale => None,
                        ReadConsistency::Follower => {
                            self.follower_reads.fetch_add(1, Ordering::Relaxed);
                            Some(f.high_watermark)
                        }
                        _ => Some(f.high_watermark),
                    };
                    let value = poll_value(&k, from, &recs, hwm);
                    h.push(nanos(self.start), process, OpType::Ok, Func::Poll, value);
                }
                Err(_) => {
                    let value = poll_value(&k, from, &[], None);
                    h.push(nanos(self.start), process, OpType::Fail, Func::Poll, value);
                }
            }
            madsim::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
        }
    }

    /// Creates the late topics at their times; producers and consumers
    /// start using each once its creation is acknowledged.
    pub(super) async fn topic_creator(
        self: Arc<Self>,
        late: Vec<(Duration, String, u32)>,
        replicas: u32,
    ) -> u64 {
        let client = self.client(true);
        let mut created = 0;
        for (at, name, parts) in late {
            madsim::time::sleep_until(self.start + at).await;
            if client.create_topic(&name, parts, replicas, 2).await.is_ok() {
                created += 1;
                self.partitions
                    .lock()
                    .extend(expand(&[(name.clone(), parts)]));
                self.late_created.lock().push((name.clone(), parts));
            }
        }
        created
    }
}

/// Acknowledged sends so far, by partition key: `(offset, value)`.
pub(super) fn acked_sends(ops: &[crate::history::Op]) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut out: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for op in ops {
        if op.kind != OpType::Ok || op.f != Func::Send {
            continue;
        }
        let v = &op.value;
        if let (Some(k), Some(off), Some(val)) = (v[0].as_str(), v[1].as_u64(), v[2].as_str()) {
            out.entry(k.to_string())
                .or_default()
                .push((off, val.to_string()));
        }
    }
    out
}
