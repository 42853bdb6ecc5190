//! "Acknowledged means stored", checked on the replicas themselves: the
//! simulator reads every replica of a partition directly (no leader, no
//! ReadIndex: what that replica has applied) and compares what they hold
//! with the sends the history acknowledged. Nothing here asks the engine
//! what it believes its ISR is.

use std::collections::BTreeMap;

/// What one replica of a partition held when read directly.
#[derive(Clone, Debug)]
pub struct ReplicaRead {
    pub node: u64,
    /// `None`: the replica could not be read (its node is down or cut off):
    /// it may hold anything.
    pub records: Option<BTreeMap<u64, String>>,
}

/// Checks one partition. `acked` are the acknowledged sends `(offset,
/// value)`. Each must be held at its offset by at least `min_holders`
/// replicas, counting as possible holders the replicas that could not be
/// read and those that have not applied that far yet (a replica may hold an
/// entry in its log before it learns it is committed; the node-side
/// checker checks logs on disk at acknowledgement time). With `converged`
/// (after healing, once replicas caught up) every replica must hold every
/// acknowledged record. Replicas never disagree on an offset: every record
/// a replica applied is committed. Returns violations.
/// Values produced by the intruder, a principal without write permission
/// (`[auth]`): none may ever be stored.
pub const INTRUDER_PREFIX: &str = "intruder-";

pub fn check_partition(
    partition: &str,
    acked: &[(u64, String)],
    replicas: &[ReplicaRead],
    min_holders: usize,
    converged: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    // Byte-for-byte agreement between replicas.
    let mut first: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    for r in replicas {
        let Some(recs) = &r.records else { continue };
        for (off, v) in recs {
            match first.get(off) {
                Some((node, prev)) if *prev != v.as_str() => {
                    out.push(format!(
                        "stored: replicas of {partition} disagree at offset {off}: node {node} holds {prev:?}, node {} holds {v:?}",
                        r.node
                    ));
                }
                Some(_) => {}
                None => {
                    if v.starts_with(INTRUDER_PREFIX) {
                        out.push(format!(
                            "auth: node {} stores {v:?} at {partition} offset {off}, produced by a principal without write permission",
                            r.node
                        ));
                    }
                    first.insert(*off, (r.node, v.as_str()));
                }
            }
        }
    }
    let need = if converged {
        replicas.len()
    } else {
        min_holders.min(replicas.len())
    };
    for (off, value) in acked {
        let mut holders = Vec::new();
        let mut unknown = 0;
        for r in replicas {
            match &r.records {
                None => unknown += 1,
                Some(recs) => match recs.get(off) {
                    Some(v) if v == value => holders.push(r.node),
                    Some(v) => out.push(format!(
                        "stored: {value:?} acknowledged at {partition} offset {off}, node {} holds {v:?} there",
                        r.node
                    )),
                    None if !converged && recs.keys().next_back().is_none_or(|last| last < off) => {
                        unknown += 1
                    }
                    None => {}
                },
            }
        }
        if holders.len() + unknown < need {
            out.push(format!(
                "stored: {value:?} acknowledged at {partition} offset {off} is held by {} replica(s) {holders:?} ({unknown} unreadable), at least {need} required",
                holders.len()
            ));
        }
        if out.len() >= 20 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(node: u64, recs: &[(u64, &str)]) -> ReplicaRead {
        ReplicaRead {
            node,
            records: Some(recs.iter().map(|(o, v)| (*o, v.to_string())).collect()),
        }
    }

    fn acked(recs: &[(u64, &str)]) -> Vec<(u64, String)> {
        recs.iter().map(|(o, v)| (*o, v.to_string())).collect()
    }

    #[test]
    fn replicas_holding_what_was_acknowledged_pass() {
        let a = acked(&[(0, "a"), (1, "b")]);
        let rs = [
            replica(1, &[(0, "a"), (1, "b"), (2, "c")]),
            replica(2, &[(0, "a"), (1, "b")]),
            replica(3, &[(0, "a")]),
        ];
        assert!(check_partition("t-0", &a, &rs, 2, false).is_empty());
        // Unreadable replicas may hold it.
        let rs = [
            replica(1, &[(0, "a"), (1, "b")]),
            ReplicaRead {
                node: 2,
                records: None,
            },
            replica(3, &[]),
        ];
        assert!(check_partition("t-0", &a, &rs, 2, false).is_empty());
    }

    #[test]
    fn too_few_holders_disagreement_and_lagging_converged_replicas_are_caught() {
        let a = acked(&[(0, "a"), (1, "b")]);
        // Replicas that applied past an acknowledged offset without it.
        let rs = [
            replica(1, &[(0, "a"), (1, "b")]),
            replica(2, &[(0, "a"), (2, "c")]),
            replica(3, &[(0, "a"), (2, "c")]),
        ];
        let v = check_partition("t-0", &a, &rs, 2, false);
        assert!(v.iter().any(|v| v.contains("held by 1")), "{v:?}");
        // Replicas that have not applied that far may still hold it.
        let rs = [
            replica(1, &[(0, "a"), (1, "b")]),
            replica(2, &[(0, "a")]),
            replica(3, &[(0, "a")]),
        ];
        assert!(check_partition("t-0", &a, &rs, 3, false).is_empty());

        let rs = [replica(1, &[(0, "a"), (1, "b")]), replica(2, &[(0, "x")])];
        let v = check_partition("t-0", &a, &rs, 1, false);
        assert!(v.iter().any(|v| v.contains("disagree")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("node 2 holds \"x\"")), "{v:?}");

        let rs = [replica(1, &[(0, "a"), (1, "b")]), replica(2, &[(0, "a")])];
        assert!(check_partition("t-0", &a, &rs, 1, false).is_empty());
        let v = check_partition("t-0", &a, &rs, 1, true);
        assert!(v.iter().any(|v| v.contains("at least 2")), "{v:?}");
    }
}
