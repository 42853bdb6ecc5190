//! `node.toml`: the daemon's configuration file. Unknown keys are refused,
//! so a typo never silently falls back to a default.

use chronik_core::NodeInfo;
use chronik_net::NodeConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub peer_listen: Option<SocketAddr>,
    pub client_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    #[serde(default)]
    pub initial_cluster: Vec<Member>,
    pub tick_interval_ms: Option<u64>,
    pub election_ticks: Option<usize>,
    pub heartbeat_ticks: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub log_compact_threshold_entries: Option<u64>,
    pub log_compact_threshold_bytes: Option<u64>,
    pub record_size_max_bytes: Option<usize>,
    pub segment_bytes_max: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub isr_max_lag_entries: Option<u64>,
    pub isr_max_lag_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub lease_reads: Option<bool>,
    /// Client address of any member of an existing cluster to join. A
    /// joining node needs no `initial_cluster`.
    pub join: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
}

/// A config problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("missing field `{0}` (set it in the config file or with --{1})")]
    Missing(&'static str, &'static str),
    #[error("invalid field `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Command-line values that override the file.
#[derive(Debug, Default)]
pub struct Overrides {
    pub node_id: Option<u64>,
    pub peer_listen: Option<SocketAddr>,
    pub client_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub join: Option<String>,
}

pub fn load(path: &Path, o: Overrides) -> Result<NodeConfig, ConfigProblem> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigProblem::Read {
        path: path.display().to_string(),
        source,
    })?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigProblem::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    build(file, o)
}

pub fn build(f: FileConfig, o: Overrides) -> Result<NodeConfig, ConfigProblem> {
    let node_id = o
        .node_id
        .or(f.node_id)
        .ok_or(ConfigProblem::Missing("node_id", "node-id"))?;
    let peer_listen = o
        .peer_listen
        .or(f.peer_listen)
        .ok_or(ConfigProblem::Missing("peer_listen", "peer-listen"))?;
    let client_listen = o
        .client_listen
        .or(f.client_listen)
        .ok_or(ConfigProblem::Missing("client_listen", "client-listen"))?;
    let data_dir = o
        .data_dir
        .or(f.data_dir)
        .ok_or(ConfigProblem::Missing("data_dir", "data-dir"))?;
    let join = o.join.or(f.join);
    if let Some(j) = &join {
        chronik_core::metadata::validate_addr(j).map_err(|reason| ConfigProblem::Invalid {
            field: "join",
            reason,
        })?;
    }
    if f.initial_cluster.is_empty() && join.is_none() {
        return Err(ConfigProblem::Invalid {
            field: "initial_cluster",
            reason: "list every member of the cluster, this node included (or set `join` to join an existing one)".into(),
        });
    }
    let members = f
        .initial_cluster
        .into_iter()
        .map(|m| NodeInfo {
            id: m.id,
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
        })
        .collect();
    let mut c = NodeConfig::new(node_id, peer_listen, client_listen, members, data_dir);
    c.join = join;
    c.metrics_listen = o.metrics_listen.or(f.metrics_listen);
    if let Some(v) = f.tick_interval_ms {
        c.tick_interval_ms = v;
    }
    if let Some(v) = f.election_ticks {
        c.election_ticks = v;
    }
    if let Some(v) = f.heartbeat_ticks {
        c.heartbeat_ticks = v;
    }
    if let Some(v) = f.request_timeout_ms {
        if v == 0 {
            return Err(ConfigProblem::Invalid {
                field: "request_timeout_ms",
                reason: "must be at least 1".into(),
            });
        }
        c.request_timeout_ms = v;
    }
    if let Some(v) = f.log_compact_threshold_entries {
        c.log_compact_threshold_entries = v;
    }
    if let Some(v) = f.log_compact_threshold_bytes {
        c.log_compact_threshold_bytes = v;
    }
    if let Some(v) = f.record_size_max_bytes {
        c.record_size_max_bytes = v;
    }
    if let Some(v) = f.segment_bytes_max {
        if v < 4096 {
            return Err(ConfigProblem::Invalid {
                field: "segment_bytes_max",
                reason: "must be at least 4096".into(),
            });
        }
        c.segment_bytes_max = v;
    }
    c.retention_bytes = f.retention_bytes;
    c.retention_ms = f.retention_ms;
    if let Some(v) = f.isr_max_lag_entries {
        c.isr_max_lag_entries = v;
    }
    if let Some(v) = f.isr_max_lag_ms {
        c.isr_max_lag_ms = v;
    }
    if let Some(v) = f.read_timeout_ms {
        c.read_timeout_ms = v;
    }
    if let Some(v) = f.lease_reads {
        c.lease_reads = v;
    }
    // The engine checks the rest (ids, addresses, tick settings) and names
    // the field it refuses.
    c.engine_config().validate().map_err(|e| match e {
        chronik_core::ConfigError::InvalidField { field, reason } => {
            ConfigProblem::Invalid { field, reason }
        }
        other => ConfigProblem::Invalid {
            field: "config",
            reason: other.to_string(),
        },
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NodeConfig, ConfigProblem> {
        let f: FileConfig = toml::from_str(s).map_err(|e| ConfigProblem::Parse {
            path: "test".into(),
            message: e.to_string(),
        })?;
        build(f, Overrides::default())
    }

    const GOOD: &str = r#"
node_id = 1
peer_listen = "127.0.0.1:7001"
client_listen = "127.0.0.1:9001"
data_dir = "/tmp/x"
[[initial_cluster]]
id = 1
peer_addr = "127.0.0.1:7001"
client_addr = "127.0.0.1:9001"
"#;

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node_id, 1);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("node_id = 1", "node_id = 7"), "node_id"),
            (GOOD.replace("node_id = 1\n", ""), "node_id"),
            (GOOD.replace("data_dir", "dta_dir"), "dta_dir"),
            (
                GOOD.replace("\"127.0.0.1:7001\"\nclient", "\"nope\"\nclient"),
                "peer_listen",
            ),
            (format!("{GOOD}\nelection_ticks = 1\n"), "election_ticks"),
            (
                GOOD.replace("peer_addr = \"127.0.0.1:7001\"", "peer_addr = \"bad\""),
                "initial_cluster",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
