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
    /// A poll that started after a send was acknowledged did not see it.
    StaleRead,
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
}

/// Checks a history. `final_process` is the process that made the final
/// reads after faults healed: its polls must show every acknowledged send.
pub fn check(ops: &[Op], final_process: Option<u64>) -> Report {
    let mut report = Report::default();
    let mut anomaly = |kind, detail: String| report.anomalies.push(Anomaly { kind, detail });
    // Pair completions with their invocations (one op in flight per process).
    let mut open: BTreeMap<u64, &Op> = BTreeMap::new();
    let mut sends = Vec::new();
    let mut polls = Vec::new();
    for op in ops {
        match op.kind {
            OpType::Invoke => {
                open.insert(op.process, op);
            }
            OpType::Ok => {
                let Some(inv) = open.remove(&op.process) else {
                    continue;
                };
                let v = &op.value;
                match op.f {
                    Func::Send => {
                        if let (Some(p), Some(off), Some(val)) =
                            (v[0].as_str(), v[1].as_u64(), v[2].as_str())
                        {
                            sends.push(SendOk {
                                partition: p.to_string(),
                                offset: off,
                                value: val.to_string(),
                                process: op.process,
                                complete_index: op.index,
                            });
                        }
                    }
                    Func::Poll => {
                        let records = v[2]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|r| {
                                        Some((r[0].as_u64()?, r[1].as_str()?.to_string()))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let (Some(p), Some(from)) = (v[0].as_str(), v[1].as_u64()) {
                            // A null high watermark makes no freshness
                            // claim: a follower-stale read.
                            let hwm = v[3].as_u64();
                            polls.push(PollOk {
                                partition: p.to_string(),
                                from,
                                records,
                                hwm,
                                process: op.process,
                                invoke_index: inv.index,
                            });
                        }
                    }
                }
            }
            OpType::Fail | OpType::Info => {
                open.remove(&op.process);
            }
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

    // Linearizability of reads: a poll invoked after a send completed must
    // report a high watermark past the send's offset.
    for p in &polls {
        let Some(hwm) = p.hwm else { continue };
        if let Some(s) = sends
            .iter()
            .filter(|s| s.partition == p.partition && s.complete_index < p.invoke_index)
            .max_by_key(|s| s.offset)
        {
            if hwm <= s.offset {
                anomaly(
                    AnomalyKind::StaleRead,
                    format!(
                        "poll of {} (op {}) saw high watermark {hwm} after {:?} was acknowledged at offset {} (op {})",
                        p.partition, p.invoke_index, s.value, s.offset, s.complete_index
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
        for s in &sends {
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
