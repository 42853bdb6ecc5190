//! Observability against the real tools: a live node's `/metrics` passes
//! `promtool check metrics`; the alert rules pass `promtool check rules`
//! and their unit tests; a real Prometheus scraping a 3-node cluster under
//! load returns data for every query of every dashboard panel; logs to a
//! file carry no colour codes and `--log-format json` lines parse.
//!
//! Needs `promtool` and `prometheus` on the PATH (Debian's `prometheus`
//! package; `.ci/run` installs it). Without them these tests say so and
//! pass, unless `CHRONIK_REQUIRE_TOOLS` is set, as CI sets it.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use bytes::Bytes;
use common::{free_port, wait_ready, Cluster};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");

/// `name` on the PATH, or `None` (and a note) when it may be missing.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CHRONIK_REQUIRE_TOOLS").is_none(),
            "{name} is not installed (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install prometheus)");
    }
    found
}

fn get(url: &str) -> String {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// A 3-node cluster (per-partition series on) with a topic, and load on
/// it until the returned flag is set.
async fn loaded_cluster(
    json_logs_on: Option<u64>,
) -> (Cluster, Arc<AtomicBool>, Vec<tokio::task::JoinHandle<()>>) {
    let mut c = Cluster::with_settings(3, "metrics_per_partition = true", "");
    for id in 1..=3 {
        if json_logs_on == Some(id) {
            c.start_with(id, &["--log-format", "json"]);
        } else {
            c.start(id);
        }
    }
    let client = c.client();
    wait_ready(&client, 3).await;
    client.create_topic("obs", 3, 3, 2).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for p in 0..3u32 {
        let (st, cl) = (stop.clone(), c.client());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !st.load(Ordering::Relaxed) {
                let _ = cl
                    .produce("obs", p, vec![Bytes::from(format!("r{i}"))])
                    .await;
                let _ = cl.fetch("obs", p, i.saturating_sub(5), 4096).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    (c, stop, tasks)
}

async fn stop_load(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_pass_promtool_and_logs_are_plain_and_structured() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let (c, stop, tasks) = loaded_cluster(Some(3)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load(stop, tasks).await;
    for addr in &c.metrics_addrs {
        let text = get(&format!("http://{addr}/metrics"));
        for family in [
            "chronik_raft_groups",
            "chronik_produce_requests_total",
            "chronik_replication_lag_seconds_bucket",
            "chronik_partition_applied_index",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(family), "{addr}: no {family}");
        }
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics on {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Exactly one metadata leader exports the cluster gauges.
    let leaders = c
        .metrics_addrs
        .iter()
        .filter(|a| get(&format!("http://{a}/metrics")).contains("chronik_cluster_nodes{"))
        .count();
    assert_eq!(
        leaders, 1,
        "cluster gauges come from the metadata leader only"
    );

    for id in 1..=3 {
        let log = c.log(id);
        assert!(!log.is_empty(), "node {id} logged nothing");
        assert!(
            !log.contains('\u{1b}'),
            "node {id}'s log file carries ANSI escape codes"
        );
    }
    // JSON logs: every line parses, and control-plane decisions carry
    // their reason as a field.
    let log = c.log(3);
    let mut decisions = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let fields = &v["fields"];
        let msg = fields["message"].as_str().unwrap_or_default();
        if ["became leader", "election lost", "election started"].contains(&msg) {
            assert!(fields["reason"].is_string(), "no reason: {line}");
            assert!(fields["term"].is_u64(), "no term: {line}");
            decisions += 1;
        }
    }
    assert!(decisions > 0, "node 3 logged no election: {log}");
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(DOCS)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every query of every panel of the Grafana dashboard, with Grafana's
/// variables as this test's Prometheus sees them.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(DOCS).join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "20s")
                .replace("$job", "chronik");
            out.push((title.to_string(), expr));
        }
    }
    out
}

/// A Prometheus server scraping `targets` every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, targets: &[String]) -> Prometheus {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let rules = Path::new(DOCS).join("alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: chronik\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets
                .iter()
                .map(|t| format!("\"{t}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The result vector of an instant query (panics on a query error).
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let body = ureq::get(&format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call()
            .unwrap_or_else(|e| panic!("query {expr}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "query {expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_data_from_a_real_prometheus() {
    let Some(bin) = tool("prometheus") else {
        return;
    };
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} panel queries", queries.len());
    let (c, stop, tasks) = loaded_cluster(None).await;
    let prom = Prometheus::start(&bin, &c.dir, &c.metrics_addrs);
    // Every node scraped, then 20 s of load so every rate window holds
    // samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = ureq::get(&format!("{}/api/v1/query", prom.url))
            .query("query", "sum(up{job=\"chronik\"})")
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(String::from)
            });
        if up.as_deref() == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all 3 nodes: {up:?}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut empty = Vec::new();
    for (panel, expr) in &queries {
        let result = prom.query(expr);
        println!("{:>3} series  {panel}: {expr}", result.len());
        if result.is_empty() {
            empty.push(format!("{panel}: {expr}"));
        }
    }
    stop_load(stop, tasks).await;
    // The alert rules loaded into the live server too.
    let rules = get(&format!("{}/api/v1/rules", prom.url));
    let v: serde_json::Value = serde_json::from_str(&rules).unwrap();
    let loaded = v["data"]["groups"][0]["rules"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(loaded, 8, "alert rules loaded: {rules}");
    assert!(
        empty.is_empty(),
        "{} of {} panel queries returned no data:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
}
