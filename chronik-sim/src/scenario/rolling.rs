//! The rolling restart after healing: every member in turn, once the
//! cluster says restarting it is safe, shuts down gracefully, stops and
//! starts again, while one producer per partition keeps writing. Every
//! shutdown is judged (the stopped node must lead nothing, every peer is
//! up), and no partition may go longer than [`ROLL_GAP_BOUND`] without an
//! acknowledged produce.

use super::faults::graceful_restart;
use super::*;

/// The longest a partition may go without an acknowledged produce while
/// its producer tries, during a rolling restart. Leadership moves by
/// transfer, which takes milliseconds; a transfer that fails (to a node
/// restarted moments ago whose peers' streams to it are not back yet)
/// costs one election timeout (500 to 1,000 ms in the simulation) before
/// the group elects again, and the bound allows two such failures in a
/// row plus the client's retry backoff. A stop without handoff costs an election
/// timeout every time, and the planted bug shows the checker catches it.
pub const ROLL_GAP_BOUND: Duration = Duration::from_millis(2_500);
/// How long to wait for a node's restart to be safe before skipping it.
const SAFE_WAIT: Duration = Duration::from_secs(15);

/// Ack times per partition.
type AckTimes = Mutex<BTreeMap<String, Vec<madsim::time::Instant>>>;

/// What the rolling restart acts on.
pub(super) struct Roll<'a> {
    pub(super) cluster: &'a mut SimCluster,
    pub(super) checker: &'a NodeChecker,
    pub(super) report: &'a mut RunReport,
    pub(super) work: &'a Arc<Workload>,
    pub(super) admin: &'a Arc<Client>,
    pub(super) client_node: &'a madsim::runtime::NodeHandle,
}

pub(super) async fn rolling_restart(cx: &mut Roll<'_>, members: &[u64]) {
    let (work, admin, client_node) = (cx.work, cx.admin, cx.client_node);
    let parts = work.live_partitions();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acks: Arc<AckTimes> = Arc::default();
    let mut producers = Vec::new();
    for (t, p) in parts {
        let (w, stop, acks) = (work.clone(), stop.clone(), acks.clone());
        producers.push(client_node.spawn(async move {
            let client = w.client(false);
            let mut process = w.next_process.fetch_add(1, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                if w.send(&client, &mut process, &t, p).await.is_ok() {
                    acks.lock()
                        .entry(key(&t, p))
                        .or_default()
                        .push(madsim::time::Instant::now());
                }
            }
        }));
    }
    let a = admin.clone();
    client_node
        .spawn(async move { super::drain::undrain_all(&a).await })
        .await
        .expect("undrain task");
    madsim::time::sleep(Duration::from_millis(500)).await;
    // A node hosting a partition whose min_insync_replicas needs every
    // replica can never be restarted without refusing produces: skipped
    // at once (the restart check says so, and waiting changes nothing).
    let a = admin.clone();
    let needs_all: BTreeSet<u64> = client_node
        .spawn(async move {
            let Ok(md) = a.metadata().await else {
                return BTreeSet::new();
            };
            md.topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| t.min_insync_replicas as usize >= p.replicas.len())
                        .flat_map(|p| p.replicas.clone())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .await
        .expect("metadata task");
    // Every partition serving before the first shutdown: what kept one
    // from serving before is not the restart's doing.
    let wanted = producers.len();
    let settle = madsim::time::Instant::now() + SAFE_WAIT;
    while madsim::time::Instant::now() < settle {
        let now = madsim::time::Instant::now();
        let serving = acks
            .lock()
            .values()
            .filter(|t| {
                t.last()
                    .is_some_and(|t| now - *t < Duration::from_millis(500))
            })
            .count();
        if serving == wanted {
            break;
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    // Gaps count from the first shutdown on.
    let mut started: Option<madsim::time::Instant> = None;
    for id in members {
        if needs_all.contains(id) {
            cx.report.roll_skipped += 1;
            cx.report.executed.push(format!(
                "rolling restart: node {id} skipped: it hosts a partition whose min_insync_replicas needs every replica"
            ));
            continue;
        }
        let (a, id) = (admin.clone(), *id);
        let verdict = client_node
            .spawn(async move {
                let deadline = madsim::time::Instant::now() + SAFE_WAIT;
                let mut last = String::new();
                while madsim::time::Instant::now() < deadline {
                    match a.restart_check(id).await {
                        Ok(r) if r.safe => return Ok(()),
                        Ok(r) => last = r.reasons.join("; "),
                        Err(e) => last = e.to_string(),
                    }
                    madsim::time::sleep(Duration::from_millis(100)).await;
                }
                Err(last)
            })
            .await
            .expect("restart check task");
        match verdict {
            Ok(()) => {
                started.get_or_insert_with(madsim::time::Instant::now);
                let done = graceful_restart(cx.cluster, cx.checker, cx.report, id, 0, true).await;
                cx.report.rolled += 1;
                cx.report.executed.push(format!("rolling restart: {done}"));
            }
            Err(why) => {
                cx.report.roll_skipped += 1;
                cx.report.executed.push(format!(
                    "rolling restart: node {id} skipped, never safe: {why}"
                ));
            }
        }
    }
    // The last node back in every ISR before the producers stop.
    let last = members
        .iter()
        .rev()
        .find(|m| !needs_all.contains(m))
        .copied();
    if let Some(id) = last.filter(|_| cx.report.rolled > 0) {
        let a = admin.clone();
        let _ = client_node
            .spawn(async move {
                let deadline = madsim::time::Instant::now() + SAFE_WAIT;
                while madsim::time::Instant::now() < deadline {
                    if a.restart_check(id).await.is_ok_and(|r| r.safe) {
                        return;
                    }
                    madsim::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
    }
    let finished = madsim::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.expect("rolling restart producer");
    }
    let Some(started) = started else {
        return;
    };
    // Per partition, the longest wait for an acknowledgement: from the
    // first shutdown to the first acknowledgement after it, between two,
    // up to the first after the last node is back.
    for (k, times) in acks.lock().iter() {
        let mut points = vec![started];
        points.extend(
            times
                .iter()
                .copied()
                .filter(|t| *t > started && *t <= finished),
        );
        points.extend(times.iter().copied().find(|t| *t > finished));
        let gap = points
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        let ms = gap.as_millis() as u64;
        cx.report.roll_longest_gap_ms = cx.report.roll_longest_gap_ms.max(ms);
        if gap > ROLL_GAP_BOUND {
            cx.report.liveness.push(format!(
                "availability: partition {k} went {ms} ms without an acknowledged produce during the rolling restart (bound {} ms)",
                ROLL_GAP_BOUND.as_millis()
            ));
        }
    }
}
