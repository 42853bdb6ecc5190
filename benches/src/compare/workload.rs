//! The workloads `chronik-bench compare` runs on both systems, and the
//! targets the performance work is held to (ratios against etcd measured
//! in the same run, since absolute figures move with the machine).

/// What each client does in a closed loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Chronik: produce `batch` records per request to a 1-partition
    /// topic through its leader. etcd: one put of a unique key per
    /// request through its leader (etcd has no batched put to match).
    Write { batch: usize },
    /// A linearizable read through a follower: Chronik fetches one record
    /// with ReadIndex, etcd gets one key (its default, linearizable).
    FollowerRead,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    pub clients: usize,
    pub kind: Kind,
    pub target: Option<Target>,
}

/// A goal stated as a ratio Chronik/etcd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Throughput at least this many times etcd's, and CPU per operation
    /// at most this fraction of etcd's (when given).
    Throughput {
        at_least: f64,
        cpu_at_most: Option<f64>,
    },
    /// p50 at most this fraction of etcd's, p99 no worse than etcd's.
    Latency { p50_at_most: f64, p99_at_most: f64 },
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Throughput {
                at_least,
                cpu_at_most: None,
            } => format!(">= {at_least}x ops/s"),
            Target::Throughput {
                at_least,
                cpu_at_most: Some(c),
            } => format!(">= {at_least}x ops/s, CPU/op <= {c:.2}x"),
            Target::Latency {
                p50_at_most,
                p99_at_most,
            } => format!("p50 <= {p50_at_most}x, p99 <= {p99_at_most}x"),
        }
    }

    /// Whether the measured ratios (Chronik/etcd) meet the target.
    pub fn met(&self, r: &Ratios) -> bool {
        match *self {
            Target::Throughput {
                at_least,
                cpu_at_most,
            } => r.throughput >= at_least && cpu_at_most.is_none_or(|c| r.cpu_per_op <= c),
            Target::Latency {
                p50_at_most,
                p99_at_most,
            } => r.p50 <= p50_at_most && r.p99 <= p99_at_most,
        }
    }
}

/// Chronik's figure divided by etcd's.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Ratios {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub cpu_per_op: f64,
}

/// Every workload, in the order they run.
pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "write-1",
            clients: 1,
            kind: Kind::Write { batch: 1 },
            target: Some(Target::Latency {
                p50_at_most: 0.5,
                p99_at_most: 1.0,
            }),
        },
        Workload {
            name: "write-16",
            clients: 16,
            kind: Kind::Write { batch: 1 },
            target: None,
        },
        Workload {
            name: "write-64",
            clients: 64,
            kind: Kind::Write { batch: 1 },
            target: Some(Target::Throughput {
                at_least: 3.0,
                cpu_at_most: Some(1.0 / 3.0),
            }),
        },
        Workload {
            name: "write-64x100",
            clients: 64,
            kind: Kind::Write { batch: 100 },
            target: Some(Target::Throughput {
                at_least: 30.0,
                cpu_at_most: None,
            }),
        },
        Workload {
            name: "read-1-follower",
            clients: 1,
            kind: Kind::FollowerRead,
            target: None,
        },
        Workload {
            name: "read-64-follower",
            clients: 64,
            kind: Kind::FollowerRead,
            target: Some(Target::Throughput {
                at_least: 2.0,
                cpu_at_most: None,
            }),
        },
    ]
}

/// The workloads named in `only` (all of them when empty).
pub fn select(only: &[String]) -> Result<Vec<Workload>, String> {
    let all = all();
    if only.is_empty() {
        return Ok(all);
    }
    only.iter()
        .map(|name| {
            all.iter().find(|w| w.name == name).cloned().ok_or_else(|| {
                let names: Vec<_> = all.iter().map(|w| w.name).collect();
                format!("unknown workload {name:?}: use one of {}", names.join(", "))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_ratios() {
        let r = Ratios {
            throughput: 3.2,
            p50: 0.4,
            p99: 1.1,
            cpu_per_op: 0.3,
        };
        let t = Target::Throughput {
            at_least: 3.0,
            cpu_at_most: Some(1.0 / 3.0),
        };
        assert!(t.met(&r));
        assert!(!t.met(&Ratios {
            cpu_per_op: 0.5,
            ..r
        }));
        let l = Target::Latency {
            p50_at_most: 0.5,
            p99_at_most: 1.0,
        };
        assert!(!l.met(&r), "p99 1.1x etcd's misses");
        assert!(l.met(&Ratios { p99: 1.0, ..r }));
    }

    #[test]
    fn unknown_workload_names_the_known_ones() {
        let e = select(&["write-7".into()]).unwrap_err();
        assert!(e.contains("write-64x100"), "{e}");
        assert_eq!(select(&[]).expect("all").len(), all().len());
    }
}
