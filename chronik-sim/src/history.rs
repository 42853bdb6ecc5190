//! Client histories in Jepsen's op shape (JSON Lines, see the design notes)
//! and a checker for the partition-log guarantees.
//!
//! A send's value is `[partition, offset, value]`; a poll's is
//! `[partition, from_offset, [[offset, value], ...], high_watermark]`, with
//! a null high watermark for reads that make no freshness claim
//! (follower-stale): their records are still checked against every other
//! observation, but they are never stale.
//! `type` is `invoke`, `ok`, `fail` (definitely did not happen) or `info`
//! (unknown). Every sent value is unique, so each one can be traced.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One operation event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Op {
    pub index: u64,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: Func,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    Send,
    Poll,
}

/// An append-only history, shared by the client processes of a run.
#[derive(Default)]
pub struct History {
    ops: parking_lot::Mutex<Vec<Op>>,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Records an event; returns its index.
    pub fn push(&self, time: u64, process: u64, kind: OpType, f: Func, value: Value) -> u64 {
        let mut ops = self.ops.lock();
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            time,
            process,
            kind,
            f,
            value,
        });
        index
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().clone()
    }

    /// The history as JSON Lines.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for op in self.ops.lock().iter() {
            out.push_str(&serde_json::to_string(op).expect("ops serialize"));
            out.push('\n');
        }
        out
    }
}

/// Value of a send invocation or completion.
pub fn send_value(partition: &str, offset: Option<u64>, value: &str) -> Value {
    json!([partition, offset, value])
}

/// Value of a poll completion.
pub fn poll_value(
    partition: &str,
    from: u64,
    records: &[(u64, String)],
    high_watermark: Option<u64>,
) -> Value {
    let recs: Vec<Value> = records.iter().map(|(o, v)| json!([o, v])).collect();
    json!([partition, from, recs, high_watermark])
}

/// The kinds of anomaly the checker reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// An acknowledged send's offset holds another value in a final read.
    LostWrite,
    /// An acknowledged send is missing from the final reads after healing.
    UnseenAfterHeal,
    /// Two observations disagree on what one offset holds.
    InconsistentOffsets,
    /// One value sits at two offsets.
    Duplicate,
    /// A process's acknowledged sends to one partition went backwards.
    NonMonotonicSend,
    /// A poll skipped offsets (its records are not dense from `from`).
    PollSkip,
    /// A process saw a partition's high watermark go backwards.
    NonMonotonicPoll,
    /// A linearizable poll that started after a send was acknowledged did
    /// not see it, or after another linearizable poll of the partition
    /// ended saw a lower high watermark than that one (reads in real time
    /// across processes).
    StaleRead,
    /// A poll returned a value whose send definitely failed.
    FailedValueRead,
    /// A poll returned a value no send ever carried.
    UnknownValue,
    /// A poll returned a record at or above the high watermark it reported.
    RecordAboveWatermark,
    /// The history itself is broken: a completion without its invocation,
    /// two invocations in flight on one process, a process reused after an
    /// unknown outcome, a value that does not parse.
    Malformed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub detail: String,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub anomalies: Vec<Anomaly>,
    pub sends_ok: u64,
    pub polls_ok: u64,
}

impl Report {
    pub fn kinds(&self) -> BTreeSet<AnomalyKind> {
        self.anomalies.iter().map(|a| a.kind).collect()
    }
}

struct SendOk {
    partition: String,
    offset: u64,
    value: String,
    process: u64,
    complete_index: u64,
}

struct PollOk {
    partition: String,
    from: u64,
    records: Vec<(u64, String)>,
    /// `None` for reads that make no freshness claim (follower-stale).
    hwm: Option<u64>,
    process: u64,
    invoke_index: u64,
    complete_index: u64,
}

/// The largest value among events that completed before `before`, from
/// `(complete_index, value)` pairs sorted by index with running maxima.
fn max_completed_before(sorted: &[(u64, u64)], before: u64) -> Option<u64> {
    let n = sorted.partition_point(|(i, _)| *i < before);
    n.checked_sub(1).map(|k| sorted[k].1)
}

/// Sorts `(complete_index, value)` pairs and turns values into running
/// maxima.
fn running_max(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut m = 0;
    for e in v.iter_mut() {
        m = m.max(e.1);
        e.1 = m;
    }
    v
}

fn parse_send(v: &Value) -> Option<(String, Option<u64>, String)> {
    let a = v.as_array()?;
    if a.len() != 3 {
        return None;
    }
    let off = match &a[1] {
        Value::Null => None,
        o => Some(o.as_u64()?),
    };
    Some((a[0].as_str()?.to_string(), off, a[2].as_str()?.to_string()))
}

type ParsedPoll = (String, u64, Vec<(u64, String)>, Option<u64>);

fn parse_poll(v: &Value) -> Option<ParsedPoll> {
    let a = v.as_array()?;
    if a.len() != 4 {
        return None;
    }
    let records = a[2]
        .as_array()?
        .iter()
        .map(|r| Some((r.get(0)?.as_u64()?, r.get(1)?.as_str()?.to_string())))
        .collect::<Option<Vec<_>>>()?;
    let hwm = match &a[3] {
        Value::Null => None,
        h => Some(h.as_u64()?),
    };
    Some((a[0].as_str()?.to_string(), a[1].as_u64()?, records, hwm))
}

/// Checks a history. `final_process` is the process that made the final
/// reads after faults healed: its polls must show every acknowledged send.
pub fn check(ops: &[Op], final_process: Option<u64>) -> Report {
    check_except(ops, final_process, &BTreeSet::new())
}

/// [`check`], except that acknowledged sends to the partitions in
/// `deleted` (their topic was deleted during the run) need not show up in
/// the final reads: deleting a topic deletes its records. Everything else
/// still holds for them.
pub fn check_except(ops: &[Op], final_process: Option<u64>, deleted: &BTreeSet<String>) -> Report {
    let mut report = Report::default();
    let mut anomaly = |kind, detail: String| report.anomalies.push(Anomaly { kind, detail });
    // Pair completions with their invocations (one op in flight per
    // process; a process that got `info` is never used again).
    let mut open: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut retired: BTreeSet<u64> = BTreeSet::new();
    let mut sends = Vec::new();
    let mut polls = Vec::new();
    // Every value any send carried, and those whose send definitely failed.
    let mut sent_values: BTreeSet<String> = BTreeSet::new();
    let mut failed_values: BTreeMap<String, u64> = BTreeMap::new();
    for op in ops {
        if retired.contains(&op.process) {
            anomaly(
                AnomalyKind::Malformed,
                format!(
                    "op {}: process {} reused after an unknown outcome",
                    op.index, op.process
                ),
            );
            continue;
        }
        if op.kind == OpType::Invoke {
            if let Some(prev) = open.insert(op.process, op) {
                anomaly(
                    AnomalyKind::Malformed,
                    format!(
                        "op {}: process {} invoked again while op {} is in flight",
                        op.index, op.process, prev.index
                    ),
                );
            }
            if op.f == Func::Send {
                match parse_send(&op.value) {
                    Some((_, _, v)) => {
                        sent_values.insert(v);
                    }
                    None => anomaly(
                        AnomalyKind::Malformed,
                        format!("op {}: send value {} does not parse", op.index, op.value),
                    ),
                }
            }
            continue;
        }
        let Some(inv) = open.remove(&op.process) else {
            anomaly(
                AnomalyKind::Malformed,
                format!(
                    "op {}: {:?} of process {} without an invocation",
                    op.index, op.kind, op.process
                ),
            );
            continue;
        };
        if inv.f != op.f {
            anomaly(
                AnomalyKind::Malformed,
                format!(
                    "op {}: completes a {:?} invoked as {:?} (op {})",
                    op.index, op.f, inv.f, inv.index
                ),
            );
            continue;
        }
        match (op.kind, op.f) {
            (OpType::Ok, Func::Send) => match parse_send(&op.value) {
                Some((p, Some(offset), value)) => sends.push(SendOk {
                    partition: p,
                    offset,
                    value,
                    process: op.process,
                    complete_index: op.index,
                }),
                _ => anomaly(
                    AnomalyKind::Malformed,
                    format!(
                        "op {}: acknowledged send without an offset: {}",
                        op.index, op.value
                    ),
                ),
            },
            (OpType::Ok, Func::Poll) => match parse_poll(&op.value) {
                Some((partition, from, records, hwm)) => polls.push(PollOk {
                    partition,
                    from,
                    records,
                    hwm,
                    process: op.process,
                    invoke_index: inv.index,
                    complete_index: op.index,
                }),
                None => anomaly(
                    AnomalyKind::Malformed,
                    format!("op {}: poll value {} does not parse", op.index, op.value),
                ),
            },
            (OpType::Fail, Func::Send) => {
                if let Some((_, _, v)) = parse_send(&inv.value) {
                    failed_values.insert(v, op.index);
                }
            }
            (OpType::Info, _) => {
                retired.insert(op.process);
            }
            (OpType::Fail, Func::Poll) => {}
            (OpType::Invoke, _) => unreachable!("handled above"),
        }
    }
    report.sends_ok = sends.len() as u64;
    report.polls_ok = polls.len() as u64;

    // What each (partition, offset) holds, by every observation.
    let mut at: BTreeMap<(String, u64), String> = BTreeMap::new();
    let mut where_is: BTreeMap<String, BTreeSet<(String, u64)>> = BTreeMap::new();
    let mut observe =
        |p: &str, off: u64, v: &str, who: &str, anomaly: &mut dyn FnMut(AnomalyKind, String)| {
            let key = (p.to_string(), off);
            match at.get(&key) {
                Some(prev) if prev != v => anomaly(
                    AnomalyKind::InconsistentOffsets,
                    format!("{p} offset {off}: {prev:?} and {v:?} ({who})"),
                ),
                Some(_) => {}
                None => {
                    at.insert(key.clone(), v.to_string());
                }
            }
            where_is.entry(v.to_string()).or_default().insert(key);
        };
    for s in &sends {
        observe(&s.partition, s.offset, &s.value, "send", &mut anomaly);
    }
    for p in &polls {
        for (o, v) in &p.records {
            observe(&p.partition, *o, v, "poll", &mut anomaly);
            if let Some(fail) = failed_values.get(v) {
                anomaly(
                    AnomalyKind::FailedValueRead,
                    format!(
                        "poll of {} (op {}) returned {v:?} at offset {o}, whose send failed (op {fail})",
                        p.partition, p.complete_index
                    ),
                );
            } else if !sent_values.contains(v) {
                anomaly(
                    AnomalyKind::UnknownValue,
                    format!(
                        "poll of {} (op {}) returned {v:?} at offset {o}, which no send carried",
                        p.partition, p.complete_index
                    ),
                );
            }
            if let Some(hwm) = p.hwm {
                if *o >= hwm {
                    anomaly(
                        AnomalyKind::RecordAboveWatermark,
                        format!(
                            "poll of {} (op {}) returned offset {o} at or above its high watermark {hwm}",
                            p.partition, p.complete_index
                        ),
                    );
                }
            }
        }
    }
    for (v, places) in &where_is {
        if places.len() > 1 {
            anomaly(AnomalyKind::Duplicate, format!("{v:?} at {places:?}"));
        }
    }

    // Per process and partition: acknowledged sends move forward.
    let mut last_send: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for s in &sends {
        let key = (s.process, s.partition.clone());
        if let Some(prev) = last_send.get(&key) {
            if s.offset <= *prev {
                anomaly(
                    AnomalyKind::NonMonotonicSend,
                    format!(
                        "process {} sent {:?} to {} at offset {} after offset {prev}",
                        s.process, s.value, s.partition, s.offset
                    ),
                );
            }
        }
        last_send.insert(key, s.offset);
    }

    // Polls: dense from `from`, high watermark never backwards per process.
    let mut last_hwm: BTreeMap<(u64, String), u64> = BTreeMap::new();
    for p in &polls {
        for (k, (o, _)) in p.records.iter().enumerate() {
            if *o != p.from + k as u64 {
                anomaly(
                    AnomalyKind::PollSkip,
                    format!(
                        "poll of {} from {} returned offset {o} at position {k}",
                        p.partition, p.from
                    ),
                );
                break;
            }
        }
        let Some(hwm) = p.hwm else { continue };
        let key = (p.process, p.partition.clone());
        if let Some(prev) = last_hwm.get(&key) {
            if hwm < *prev {
                anomaly(
                    AnomalyKind::NonMonotonicPoll,
                    format!(
                        "process {} saw {} high watermark {hwm} after {prev}",
                        p.process, p.partition
                    ),
                );
            }
        }
        last_hwm.insert(key, hwm);
    }

    // Linearizability of reads, in real time (op order) across processes:
    // a poll invoked after a send completed must report a high watermark
    // past the send's offset, and one invoked after another linearizable
    // poll completed must report at least that poll's high watermark.
    let mut acked_by_partition: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for s in &sends {
        acked_by_partition
            .entry(&s.partition)
            .or_default()
            .push((s.complete_index, s.offset + 1));
    }
    let mut seen_by_partition: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for p in &polls {
        if let Some(hwm) = p.hwm {
            seen_by_partition
                .entry(&p.partition)
                .or_default()
                .push((p.complete_index, hwm));
        }
    }
    let acked: BTreeMap<&str, Vec<(u64, u64)>> = acked_by_partition
        .into_iter()
        .map(|(k, v)| (k, running_max(v)))
        .collect();
    let seen: BTreeMap<&str, Vec<(u64, u64)>> = seen_by_partition
        .into_iter()
        .map(|(k, v)| (k, running_max(v)))
        .collect();
    for p in &polls {
        let Some(hwm) = p.hwm else { continue };
        let part = p.partition.as_str();
        if let Some(end) = acked
            .get(part)
            .and_then(|v| max_completed_before(v, p.invoke_index))
        {
            if hwm < end {
                anomaly(
                    AnomalyKind::StaleRead,
                    format!(
                        "poll of {} (op {}) saw high watermark {hwm} after offset {} was acknowledged",
                        p.partition,
                        p.invoke_index,
                        end - 1
                    ),
                );
                continue;
            }
        }
        if let Some(prev) = seen
            .get(part)
            .and_then(|v| max_completed_before(v, p.invoke_index))
        {
            if hwm < prev {
                anomaly(
                    AnomalyKind::StaleRead,
                    format!(
                        "poll of {} (op {}) saw high watermark {hwm} after another poll that had ended saw {prev}",
                        p.partition, p.invoke_index
                    ),
                );
            }
        }
    }

    // After healing, the final reads show every acknowledged send.
    if let Some(fp) = final_process {
        let mut seen: BTreeMap<(String, u64), &str> = BTreeMap::new();
        for p in polls.iter().filter(|p| p.process == fp) {
            for (o, v) in &p.records {
                seen.insert((p.partition.clone(), *o), v);
            }
        }
        for s in sends.iter().filter(|s| !deleted.contains(&s.partition)) {
            match seen.get(&(s.partition.clone(), s.offset)) {
                Some(v) if *v == s.value => {}
                Some(v) => anomaly(
                    AnomalyKind::LostWrite,
                    format!(
                        "{:?} acknowledged at {} offset {}, final read holds {v:?}",
                        s.value, s.partition, s.offset
                    ),
                ),
                None => anomaly(
                    AnomalyKind::UnseenAfterHeal,
                    format!(
                        "{:?} acknowledged at {} offset {} is not in the final reads",
                        s.value, s.partition, s.offset
                    ),
                ),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(History, u64);

    impl H {
        fn new() -> H {
            H(History::new(), 0)
        }
        fn send(&mut self, process: u64, p: &str, v: &str, result: Option<u64>) {
            self.1 += 1;
            self.0.push(
                self.1,
                process,
                OpType::Invoke,
                Func::Send,
                send_value(p, None, v),
            );
            self.1 += 1;
            let kind = if result.is_some() {
                OpType::Ok
            } else {
                OpType::Info
            };
            self.0
                .push(self.1, process, kind, Func::Send, send_value(p, result, v));
        }
        fn poll(&mut self, process: u64, p: &str, from: u64, recs: &[(u64, &str)], hwm: u64) {
            self.poll_maybe_stale(process, p, from, recs, Some(hwm));
        }
        fn poll_maybe_stale(
            &mut self,
            process: u64,
            p: &str,
            from: u64,
            recs: &[(u64, &str)],
            hwm: Option<u64>,
        ) {
            self.1 += 1;
            self.0.push(
                self.1,
                process,
                OpType::Invoke,
                Func::Poll,
                poll_value(p, from, &[], None),
            );
            self.1 += 1;
            let recs: Vec<(u64, String)> = recs.iter().map(|(o, v)| (*o, v.to_string())).collect();
            self.0.push(
                self.1,
                process,
                OpType::Ok,
                Func::Poll,
                poll_value(p, from, &recs, hwm),
            );
        }
        fn check(&self, final_process: Option<u64>) -> BTreeSet<AnomalyKind> {
            check(&self.0.ops(), final_process).kinds()
        }
    }

    fn good() -> H {
        let mut h = H::new();
        h.send(1, "t-0", "a", Some(0));
        h.send(2, "t-0", "b", Some(1));
        h.send(1, "t-0", "c", Some(2));
        h.send(3, "t-0", "lost-in-flight", None);
        h.poll(4, "t-0", 0, &[(0, "a"), (1, "b"), (2, "c")], 3);
        h.poll(4, "t-0", 1, &[(1, "b")], 3);
        h.poll(9, "t-0", 0, &[(0, "a"), (1, "b"), (2, "c")], 3);
        h
    }

    #[test]
    fn a_good_history_passes() {
        let h = good();
        assert!(
            h.check(Some(9)).is_empty(),
            "{:?}",
            check(&h.0.ops(), Some(9)).anomalies
        );
        let jsonl = h.0.to_jsonl();
        assert_eq!(jsonl.lines().count(), h.0.ops().len());
        assert!(jsonl
            .lines()
            .next()
            .unwrap_or("")
            .contains("\"type\":\"invoke\""));
    }

    #[test]
    fn each_anomaly_is_caught() {
        let mut h = good();
        h.poll(9, "t-0", 0, &[(0, "a"), (1, "b"), (2, "X")], 3);
        assert!(h.check(Some(9)).contains(&AnomalyKind::InconsistentOffsets));
        assert!(h.check(Some(9)).contains(&AnomalyKind::LostWrite));

        let mut h = H::new();
        h.send(1, "t-0", "a", Some(0));
        h.poll(9, "t-0", 0, &[], 1);
        assert!(h.check(Some(9)).contains(&AnomalyKind::UnseenAfterHeal));

        let mut h = H::new();
        h.send(1, "t-0", "a", Some(0));
        h.poll(4, "t-0", 0, &[(0, "a"), (1, "a")], 2);
        assert!(h.check(None).contains(&AnomalyKind::Duplicate));

        let mut h = H::new();
        h.send(1, "t-0", "a", Some(5));
        h.send(1, "t-0", "b", Some(3));
        assert!(h.check(None).contains(&AnomalyKind::NonMonotonicSend));

        let mut h = H::new();
        h.poll(4, "t-0", 0, &[(0, "a"), (2, "b")], 3);
        assert!(h.check(None).contains(&AnomalyKind::PollSkip));

        let mut h = H::new();
        h.poll(4, "t-0", 0, &[], 5);
        h.poll(4, "t-0", 0, &[], 4);
        assert!(h.check(None).contains(&AnomalyKind::NonMonotonicPoll));

        let mut h = H::new();
        h.send(1, "t-0", "a", Some(7));
        h.poll(4, "t-0", 0, &[], 7);
        assert!(h.check(None).contains(&AnomalyKind::StaleRead));
    }

    #[test]
    fn reads_of_failed_unknown_or_unwatermarked_values_are_caught() {
        let mut h = good();
        h.0.push(
            20,
            5,
            OpType::Invoke,
            Func::Send,
            send_value("t-0", None, "nope"),
        );
        h.0.push(
            21,
            5,
            OpType::Fail,
            Func::Send,
            send_value("t-0", None, "nope"),
        );
        h.poll(4, "t-0", 3, &[(3, "nope")], 4);
        assert!(h.check(None).contains(&AnomalyKind::FailedValueRead));

        let mut h = good();
        h.poll(4, "t-0", 3, &[(3, "never-sent")], 4);
        assert!(h.check(None).contains(&AnomalyKind::UnknownValue));

        let mut h = good();
        h.poll(4, "t-0", 0, &[(0, "a"), (1, "b"), (2, "c")], 2);
        assert!(h.check(None).contains(&AnomalyKind::RecordAboveWatermark));
        // A stale read makes no watermark claim to be above of.
        let mut h = good();
        h.poll_maybe_stale(4, "t-0", 0, &[(0, "a"), (1, "b"), (2, "c")], None);
        assert!(h.check(Some(9)).is_empty());
    }

    #[test]
    fn reads_are_linearizable_across_processes() {
        // Process 4 saw high watermark 3; process 5 began later and saw 2
        // (no acknowledged send tells them apart: only the reads do).
        let mut h = H::new();
        h.poll(4, "t-0", 0, &[], 3);
        h.poll(5, "t-0", 0, &[], 2);
        let kinds = check(&h.0.ops(), None);
        assert!(
            kinds
                .anomalies
                .iter()
                .any(|a| a.kind == AnomalyKind::StaleRead && a.detail.contains("another poll")),
            "{:?}",
            kinds.anomalies
        );
        // Overlapping reads may see either.
        let h = History::new();
        h.push(
            1,
            4,
            OpType::Invoke,
            Func::Poll,
            poll_value("t-0", 0, &[], None),
        );
        h.push(
            2,
            5,
            OpType::Invoke,
            Func::Poll,
            poll_value("t-0", 0, &[], None),
        );
        h.push(
            3,
            4,
            OpType::Ok,
            Func::Poll,
            poll_value("t-0", 0, &[], Some(3)),
        );
        h.push(
            4,
            5,
            OpType::Ok,
            Func::Poll,
            poll_value("t-0", 0, &[], Some(2)),
        );
        assert!(check(&h.ops(), None).anomalies.is_empty());
    }

    #[test]
    fn broken_histories_fail_the_check() {
        let kinds = |h: &History| check(&h.ops(), None).kinds();
        // A completion without its invocation.
        let h = History::new();
        h.push(
            1,
            1,
            OpType::Ok,
            Func::Send,
            send_value("t-0", Some(0), "a"),
        );
        assert!(kinds(&h).contains(&AnomalyKind::Malformed));
        // Two invocations in flight on one process.
        let h = History::new();
        h.push(
            1,
            1,
            OpType::Invoke,
            Func::Send,
            send_value("t-0", None, "a"),
        );
        h.push(
            2,
            1,
            OpType::Invoke,
            Func::Send,
            send_value("t-0", None, "b"),
        );
        assert!(kinds(&h).contains(&AnomalyKind::Malformed));
        // A process reused after an unknown outcome.
        let mut h = H::new();
        h.send(1, "t-0", "a", None);
        h.send(1, "t-0", "b", Some(0));
        assert!(h.check(None).contains(&AnomalyKind::Malformed));
        // An acknowledged send without an offset, and a value that does not
        // parse.
        let h = History::new();
        h.push(
            1,
            1,
            OpType::Invoke,
            Func::Send,
            send_value("t-0", None, "a"),
        );
        h.push(2, 1, OpType::Ok, Func::Send, send_value("t-0", None, "a"));
        h.push(
            3,
            2,
            OpType::Invoke,
            Func::Poll,
            poll_value("t-0", 0, &[], None),
        );
        h.push(
            4,
            2,
            OpType::Ok,
            Func::Poll,
            serde_json::json!(["t-0", "zero"]),
        );
        let r = check(&h.ops(), None);
        assert_eq!(
            r.anomalies
                .iter()
                .filter(|a| a.kind == AnomalyKind::Malformed)
                .count(),
            2,
            "{:?}",
            r.anomalies
        );
    }

    #[test]
    fn stale_polls_make_no_freshness_claim_but_must_agree() {
        // A follower-stale read that lags is fine...
        let mut h = good();
        h.poll_maybe_stale(4, "t-0", 0, &[(0, "a")], None);
        assert!(h.check(Some(9)).is_empty());
        // ... one that shows another value at an offset is not.
        h.poll_maybe_stale(4, "t-0", 0, &[(0, "a"), (1, "Z")], None);
        assert!(h.check(Some(9)).contains(&AnomalyKind::InconsistentOffsets));
    }

    #[test]
    fn concurrent_poll_is_not_stale() {
        // The poll was invoked before the send completed: either outcome is
        // linearizable.
        let h = History::new();
        h.push(
            1,
            4,
            OpType::Invoke,
            Func::Poll,
            poll_value("t-0", 0, &[], None),
        );
        h.push(
            2,
            1,
            OpType::Invoke,
            Func::Send,
            send_value("t-0", None, "a"),
        );
        h.push(
            3,
            1,
            OpType::Ok,
            Func::Send,
            send_value("t-0", Some(0), "a"),
        );
        h.push(
            4,
            4,
            OpType::Ok,
            Func::Poll,
            poll_value("t-0", 0, &[], Some(0)),
        );
        assert!(check(&h.ops(), None).anomalies.is_empty());
    }
}
