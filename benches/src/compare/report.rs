//! The comparison's table: printed, and written as Markdown and JSON
//! under `benches/results/`.

use super::measure::Tally;
use super::workload::{Ratios, Workload};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One system's figures for one workload, over all its turns.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU seconds the servers used per 1,000 operations.
    pub cpu_sec_per_1k_ops: f64,
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Side {
    pub fn new(tally: &Tally, seconds: f64, cpu_seconds: f64) -> Side {
        let ops = tally.ops;
        Side {
            ops_per_sec: ops as f64 / seconds,
            p50_ms: tally.p50_ms(),
            p99_ms: tally.p99_ms(),
            cpu_sec_per_1k_ops: if ops == 0 {
                f64::INFINITY
            } else {
                cpu_seconds * 1000.0 / ops as f64
            },
            ops,
            errors: tally.errors,
            first_error: tally.first_error.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub clients: usize,
    pub etcd: Side,
    pub chronik: Side,
    pub ratios: Ratios,
    pub target: Option<String>,
    pub target_met: Option<bool>,
}

impl Row {
    pub fn new(w: &Workload, etcd: Side, chronik: Side) -> Row {
        let ratios = Ratios {
            throughput: chronik.ops_per_sec / etcd.ops_per_sec,
            p50: chronik.p50_ms / etcd.p50_ms,
            p99: chronik.p99_ms / etcd.p99_ms,
            cpu_per_op: chronik.cpu_sec_per_1k_ops / etcd.cpu_sec_per_1k_ops,
        };
        Row {
            workload: w.name.to_string(),
            clients: w.clients,
            target: w.target.map(|t| t.describe()),
            target_met: w.target.map(|t| t.met(&ratios)),
            etcd,
            chronik,
            ratios,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub cores: usize,
    pub etcd_version: String,
    pub chronik_commit: String,
    pub seconds_per_turn: f64,
    pub turns: usize,
    pub value_size: usize,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# chronik-bench compare, {}\n\n{} cores; {}; Chronik {}; 3 nodes each, fsync on, {}-byte values, closed loop, {} turns of {:.0} s per system and workload, alternating (etcd, Chronik, etcd, ...).\n\n",
            self.date,
            self.cores,
            self.etcd_version,
            self.chronik_commit,
            self.value_size,
            self.turns,
            self.seconds_per_turn
        );
        s.push_str("| workload | etcd ops/s | etcd p50 / p99 ms | etcd CPU s/1k ops | Chronik ops/s | Chronik p50 / p99 ms | Chronik CPU s/1k ops | ops/s ratio | p50 ratio | p99 ratio | CPU/op ratio | target | met |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.0} | {:.2} / {:.2} | {:.3} | {:.0} | {:.2} / {:.2} | {:.3} | {:.2}x | {:.2}x | {:.2}x | {:.2}x | {} | {} |\n",
                r.workload,
                r.etcd.ops_per_sec,
                r.etcd.p50_ms,
                r.etcd.p99_ms,
                r.etcd.cpu_sec_per_1k_ops,
                r.chronik.ops_per_sec,
                r.chronik.p50_ms,
                r.chronik.p99_ms,
                r.chronik.cpu_sec_per_1k_ops,
                r.ratios.throughput,
                r.ratios.p50,
                r.ratios.p99,
                r.ratios.cpu_per_op,
                r.target.as_deref().unwrap_or("-"),
                match r.target_met {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }
            ));
        }
        let errors: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| {
                [("etcd", &r.etcd), ("Chronik", &r.chronik)]
                    .into_iter()
                    .filter(|(_, s)| s.errors > 0)
                    .map(move |(name, s)| {
                        format!(
                            "- {} on {name}: {} errors, first: {}",
                            r.workload,
                            s.errors,
                            s.first_error.as_deref().unwrap_or("?")
                        )
                    })
            })
            .collect();
        if !errors.is_empty() {
            s.push_str("\nErrors:\n");
            s.push_str(&errors.join("\n"));
            s.push('\n');
        }
        s
    }

    /// Writes `compare-<date>.md` and `.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stem = format!("compare-{}", self.date.replace(':', ""));
        let md = dir.join(format!("{stem}.md"));
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&md, self.markdown()).map_err(|e| format!("{}: {e}", md.display()))?;
        let body = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&json, body + "\n").map_err(|e| format!("{}: {e}", json.display()))?;
        Ok((md, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::workload;

    fn side(ops_per_sec: f64, p50_ms: f64, cpu: f64) -> Side {
        Side {
            ops_per_sec,
            p50_ms,
            p99_ms: p50_ms * 2.0,
            cpu_sec_per_1k_ops: cpu,
            ops: (ops_per_sec * 10.0) as u64,
            errors: 0,
            first_error: None,
        }
    }

    #[test]
    fn a_row_states_its_ratios_and_whether_the_target_is_met() {
        let w = workload::select(&["write-64".into()]).expect("known")[0].clone();
        let r = Row::new(&w, side(1000.0, 1.0, 0.9), side(3500.0, 0.5, 0.2));
        assert!((r.ratios.throughput - 3.5).abs() < 1e-9);
        assert_eq!(r.target_met, Some(true));
        let r = Row::new(&w, side(1000.0, 1.0, 0.3), side(3500.0, 0.5, 0.2));
        assert_eq!(r.target_met, Some(false), "CPU per op is 0.67x etcd's");
        let report = Report {
            date: "2026-11-30T22:00:00Z".into(),
            cores: 2,
            etcd_version: "etcd Version: 3.4.23".into(),
            chronik_commit: "abc".into(),
            seconds_per_turn: 10.0,
            turns: 2,
            value_size: 100,
            rows: vec![r],
        };
        let md = report.markdown();
        assert!(md.contains("| write-64 | 1000 |"), "{md}");
        assert!(md.contains("| 3.50x |"), "{md}");
        assert!(md.ends_with("| no |\n"), "{md}");
    }
}
