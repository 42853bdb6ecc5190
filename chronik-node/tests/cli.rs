//! The operator CLI against real `chronik-node run` processes: every read
//! command in table, JSON and YAML; `health` exit codes as nodes stop;
//! exit codes for refusals, bad usage and unreachable nodes; quiet exits
//! on a closed pipe; shell completions; and the gRPC health and reflection
//! services asked by a client that is not ours (Python grpcio).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::{wait_ready, Cluster, BIN};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cluster ARGS` in each output format; the JSON and YAML outputs
/// must parse to the same value. Returns the table text and the value.
fn every_format(c: &Cluster, args: &[&str]) -> (String, serde_json::Value) {
    let table = c.cli(args);
    assert!(table.status.success(), "{args:?}: {}", show(&table));
    let mut with = args.to_vec();
    with.extend(["--output", "json"]);
    let json = c.cli(&with);
    assert!(json.status.success(), "{with:?}: {}", show(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{with:?} is not JSON ({e}): {}", show(&json)));
    let n = with.len();
    with[n - 1] = "yaml";
    let yaml = c.cli(&with);
    assert!(yaml.status.success(), "{with:?}: {}", show(&yaml));
    let from_yaml: serde_json::Value = yaml_serde::from_slice(&yaml.stdout)
        .unwrap_or_else(|e| panic!("{with:?} is not YAML ({e}): {}", show(&yaml)));
    // Values that change between two calls (uptime, lag) aside, the same
    // fields in both.
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&value),
        keys(&from_yaml),
        "{args:?}: JSON and YAML differ"
    );
    println!(
        "$ chronik-node cluster {}\n{}",
        args.join(" "),
        stdout(&table)
    );
    (stdout(&table), value)
}

/// Polls `cluster health` until its exit code is `want` (30 s at most).
async fn health_until(c: &Cluster, addr: &str, want: i32) -> Output {
    let mut last = None;
    for _ in 0..60 {
        let o = c.cli_at(addr, &["health"]);
        if o.status.code() == Some(want) {
            return o;
        }
        last = Some(o);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("health never exited {want}: {}", show(&last.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_in_every_format_and_health_exit_codes() {
    let mut c = Cluster::with_settings(3, "", "isr_max_lag_ms = 1000");
    for id in 1..=3 {
        c.start(id);
    }
    let client = c.client();
    wait_ready(&client, 3).await;
    client.create_topic("cli", 3, 3, 2).await.unwrap();
    for p in 0..3 {
        for i in 0..5 {
            client
                .produce("cli", p, vec![bytes::Bytes::from(format!("r{i}"))])
                .await
                .unwrap();
        }
    }
    let healthy = health_until(&c, &c.client_addrs[0], 0).await;
    assert!(
        stdout(&healthy).starts_with("HEALTHY"),
        "{}",
        show(&healthy)
    );
    println!("$ chronik-node cluster health\n{}", stdout(&healthy));

    let (table, v) = every_format(&c, &["status"]);
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["healthy"], 3);
    assert_eq!(v["partitions"], 3);
    assert_eq!(v["partitions_without_leader"], 0);
    assert!(v["metadata_leader"].is_u64() && v["metadata_term"].is_u64());
    assert!(table.contains("3 healthy, 0 unhealthy"), "{table}");
    let (table, v) = every_format(&c, &["status", "--detailed"]);
    let rows = v["node_details"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["healthy"], true, "{r}");
        assert!(r["version"].is_string() && r["uptime_ms"].is_u64(), "{r}");
        assert!(r["groups_hosted"].as_u64().unwrap() >= 4, "{r}"); // metadata + 3
    }
    assert!(table.contains("MD_APPLIED"), "{table}");

    let (_, v) = every_format(&c, &["list-partitions"]);
    let parts = v.as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        assert_eq!(p["high_watermark"], 5, "{p}");
        assert!(
            p["leader"].is_u64() && p["size_bytes"].as_u64().unwrap() > 0,
            "{p}"
        );
        assert_eq!(p["isr"].as_array().unwrap().len(), 3, "{p}");
    }
    let (_, v) = every_format(&c, &["list-partitions", "--topic", "cli", "--node", "2"]);
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (_, v) = every_format(&c, &["list-partitions", "--under-replicated"]);
    assert!(v.as_array().unwrap().is_empty(), "{v}");

    let (table, v) = every_format(&c, &["metadata-status"]);
    assert!(v["leader"].is_u64());
    assert_eq!(v["voters"].as_array().unwrap().len(), 3);
    assert_eq!(v["joint"], false);
    assert!(v["snapshot_bytes"].as_u64().unwrap() > 0, "{v}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["applied"].is_u64()));
    assert!(table.contains("configuration: voters 1,2,3"), "{table}");

    let (table, v) = every_format(&c, &["metadata-replicate"]);
    assert!(v["target"].as_u64().unwrap() >= 1, "{v}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "every member but the leader: {v}");
    assert!(members.iter().all(|m| m["caught_up"] == true), "{v}");
    assert!(table.contains("up to date"), "{table}");
    let o = c.cli(&["metadata-replicate", "--to", "9"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_NODE"),
        "{}",
        show(&o)
    );

    // Refusals exit 1 and say why; usage errors exit 2.
    let o = c.cli(&["list-partitions", "--topic", "nope"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown topic"));
    let o = c.cli(&["list-partitions", "--node", "9"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let o = c.cli(&["list-partitions", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    let (table, v) = every_format(
        &c,
        &["partition-info", "--topic", "cli", "--partition", "0"],
    );
    assert_eq!(v["replicas"].as_array().unwrap().len(), 3);
    assert_eq!(v["high_watermark"], 5, "{v}");
    for r in v["replica_details"].as_array().unwrap() {
        assert_eq!(r["high_watermark"], 5, "{r}");
        assert!(r["segments"].as_u64().unwrap() >= 1, "{r}");
        assert!(r["matched_index"].is_u64(), "lag from the leader: {r}");
    }
    assert!(table.contains("LOG_START"), "{table}");
    let o = c.cli(&["partition-info", "--topic", "cli", "--partition", "7"]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let (table, v) = every_format(&c, &["ping-node", "--id", "2"]);
    for p in v["paths"].as_array().unwrap() {
        assert_eq!(p["rtt_us"].as_array().unwrap().len(), 3, "{p}");
        assert_eq!(p["problem"], "", "{p}");
    }
    assert!(table.contains("peer transport"), "{table}");

    // A node leading a partition (not node 1, which answers) stops first:
    // that partition's history must say why its leadership moved.
    let leaders: Vec<(u64, u64)> = serde_json::from_slice::<serde_json::Value>(
        &c.cli(&["list-partitions", "--output", "json"]).stdout,
    )
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|p| {
        (
            p["partition"].as_u64().unwrap(),
            p["leader"].as_u64().unwrap(),
        )
    })
    .collect();
    let (led, first) = leaders
        .iter()
        .copied()
        .find(|(_, l)| *l != 1)
        .expect("nodes 2 or 3 lead something");
    let second = 5 - first; // the other of nodes 2 and 3

    // Degraded (exit 1), naming the node; its partitions shrink their
    // ISRs and show as under-replicated.
    c.kill9(first);
    let o = health_until(&c, &c.client_addrs[0], 1).await;
    let out = stdout(&o);
    assert!(
        out.starts_with("DEGRADED") && out.contains(&format!("node {first}")),
        "{out}"
    );
    println!("$ chronik-node cluster health   # node {first} stopped\n{out}");
    let ping = c.cli(&["ping-node", "--id", &first.to_string()]);
    assert_eq!(ping.status.code(), Some(1), "{}", show(&ping));
    println!(
        "$ chronik-node cluster ping-node --id {first}   # stopped\n{}",
        stdout(&ping)
    );
    let led_s = led.to_string();
    let why = |output: &str| {
        c.cli(&[
            "partition-info",
            "--topic",
            "cli",
            "--partition",
            &led_s,
            "--why",
            "--output",
            output,
        ])
    };
    let mut v = serde_json::Value::Null;
    for _ in 0..60 {
        v = serde_json::from_slice(&why("json").stdout).unwrap();
        if v["leader"].as_u64().is_some_and(|l| l != first) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let decisions = v["decisions"].as_array().unwrap();
    let cause = format!("last leader: node {first}");
    assert!(
        decisions
            .iter()
            .any(|d| d["kind"] == "election_started"
                && d["detail"].as_str().unwrap().contains(&cause)),
        "no election blamed on node {first}: {v:#}"
    );
    assert!(
        decisions.iter().any(|d| d["kind"] == "leader_elected"),
        "no election won: {v:#}"
    );
    println!(
        "$ chronik-node cluster partition-info --topic cli --partition {led} --why   # node {first} stopped\n{}",
        stdout(&why("table"))
    );
    let v: serde_json::Value =
        serde_json::from_slice(&c.cli(&["status", "--output", "json"]).stdout).unwrap();
    assert_eq!(v["unhealthy"], 1, "{v}");
    for _ in 0..60 {
        let o = c.cli(&["list-partitions", "--under-replicated", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v.as_array().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_, v) = every_format(&c, &["list-partitions", "--under-replicated"]);
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");

    // A second one stops: no metadata quorum, no partition leader:
    // unavailable (exit 2).
    c.kill9(second);
    let o = health_until(&c, &c.client_addrs[0], 2).await;
    assert!(stdout(&o).starts_with("UNAVAILABLE"), "{}", show(&o));
    println!(
        "$ chronik-node cluster health   # nodes 2 and 3 stopped\n{}",
        stdout(&o)
    );

    // No node at the address: exit 3.
    c.kill9(1);
    let o = c.cli_at(&c.client_addrs[0], &["status"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_address_completions_and_a_closed_pipe() {
    let mut c = Cluster::new(3);
    for id in 1..=3 {
        c.start(id);
    }
    wait_ready(&c.client(), 3).await;
    // CHRONIK_ADDR stands in for --addr.
    let o = Command::new(BIN)
        .args(["cluster", "list-nodes", "--output", "json"])
        .env("CHRONIK_ADDR", &c.client_addrs[1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);

    // A reader that went away ends the command quietly.
    let mut child = Command::new(BIN)
        .args([
            "cluster",
            "status",
            "--detailed",
            "--addr",
            &c.client_addrs[0],
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("panicked"),
        "exit {:?}: {err}",
        o.status.code()
    );

    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success(), "{shell}: {}", show(&o));
        let script = stdout(&o);
        assert!(
            script.contains("list-partitions") && script.contains("metadata-status"),
            "{shell} completions name the commands"
        );
    }
}

/// The Python with grpcio, grpcio-health-checking and grpcio-reflection
/// (`CHRONIK_PYTHON`, else `python3`), or `None` when it may be missing.
fn python_with_grpcio() -> Option<String> {
    let python = std::env::var("CHRONIK_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import grpc, grpc_health, grpc_reflection"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CHRONIK_REQUIRE_TOOLS").is_none(),
            "{python} lacks grpcio, grpcio-health-checking or grpcio-reflection"
        );
        eprintln!("SKIPPED: {python} lacks grpcio, grpcio-health-checking or grpcio-reflection");
        return None;
    }
    Some(python)
}

fn ask_with_grpcio(python: &str, addr: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/grpc_ecosystem.py");
    let o = Command::new(python).args([script, addr]).output().unwrap();
    assert!(o.status.success(), "grpc_ecosystem.py: {}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_and_reflection_answer_a_python_client() {
    let Some(python) = python_with_grpcio() else {
        return;
    };
    let mut c = Cluster::new(3);
    // Alone, node 1 has no metadata quorum: not serving.
    c.start(1);
    let mut v = serde_json::Value::Null;
    for _ in 0..50 {
        if let Ok(o) = Command::new(&python)
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/grpc_ecosystem.py"),
                &c.client_addrs[0],
            ])
            .output()
        {
            if o.status.success() {
                v = serde_json::from_slice(&o.stdout).unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(v["health"][""], "NOT_SERVING", "{v}");
    assert_eq!(v["health"]["chronik.Chronik"], "NOT_SERVING", "{v}");
    assert_eq!(v["health"]["chronik.Admin"], "SERVING", "{v}");
    c.start(2);
    c.start(3);
    wait_ready(&c.client(), 3).await;
    for _ in 0..50 {
        v = ask_with_grpcio(&python, &c.client_addrs[0]);
        if v["health"][""] == "SERVING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{v:#}");
    assert_eq!(v["health"][""], "SERVING", "{v}");
    assert_eq!(v["health"]["chronik.Chronik"], "SERVING", "{v}");
    assert_eq!(v["unknown_service"], "NOT_FOUND", "{v}");
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for s in ["chronik.Chronik", "chronik.Admin", "grpc.health.v1.Health"] {
        assert!(services.contains(&s), "{s} not listed: {services:?}");
    }
    let names = |svc: &str| -> Vec<String> {
        v["methods"][svc]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names("chronik.Chronik").contains(&"Produce".to_string()));
    assert!(names("chronik.Admin").contains(&"NodeStatus".to_string()));
    let fields: Vec<&str> = v["produce_request_fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        fields.contains(&"topic") && fields.contains(&"records"),
        "{fields:?}"
    );
}
