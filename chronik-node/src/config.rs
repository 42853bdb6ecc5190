//! `node.toml`: the daemon's configuration file. Unknown keys are refused,
//! so a typo never silently falls back to a default.

use chronik_net::NodeConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    let mut c = parse(&text, &path.display().to_string(), o)?;
    // TLS and principals files named relative to the config file's
    // directory.
    if let Some(dir) = path.parent() {
        let mut files: Vec<&mut PathBuf> = Vec::new();
        if let Some(tls) = &mut c.tls {
            files.extend([&mut tls.ca, &mut tls.cert, &mut tls.key]);
        }
        if let Some(auth) = &mut c.auth {
            files.push(&mut auth.principals_file);
        }
        for p in files {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
    Ok(c)
}

/// The settings a node cannot run without: each must be in the file or on
/// the command line (`(field, flag)`).
const REQUIRED: [(&str, &str); 4] = [
    ("node_id", "node-id"),
    ("peer_listen", "peer-listen"),
    ("client_listen", "client-listen"),
    ("data_dir", "data-dir"),
];

/// A config file's text (`source` names it in errors), with the command
/// line's overrides applied. Every field not given takes its default from
/// `NodeConfig::default()`, the one place defaults live.
pub fn parse(text: &str, source: &str, o: Overrides) -> Result<NodeConfig, ConfigProblem> {
    let parse_err = |e: toml::de::Error| ConfigProblem::Parse {
        path: source.to_string(),
        message: e.to_string(),
    };
    let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
    // The daemon's own key: running without TLS is a choice made in the
    // file, never a default.
    let plaintext = match table.remove("plaintext") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            return Err(ConfigProblem::Invalid {
                field: "plaintext",
                reason: "must be true or false".into(),
            })
        }
    };
    let given = |field: &str| table.contains_key(field);
    // Unknown keys first: a misspelt required field is named as such.
    let mut c: NodeConfig = table.clone().try_into().map_err(parse_err)?;
    let overridden = [
        o.node_id.is_some(),
        o.peer_listen.is_some(),
        o.client_listen.is_some(),
        o.data_dir.is_some(),
    ];
    for ((field, flag), over) in REQUIRED.into_iter().zip(overridden) {
        if !given(field) && !over {
            return Err(ConfigProblem::Missing(field, flag));
        }
    }
    if let Some(v) = o.node_id {
        c.node_id = v;
    }
    if let Some(v) = o.peer_listen {
        c.peer_listen = v;
    }
    if let Some(v) = o.client_listen {
        c.client_listen = v;
    }
    if let Some(v) = o.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = o.metrics_listen {
        c.metrics_listen = Some(v);
    }
    if let Some(v) = o.join {
        c.join = Some(v);
    }
    if let Some(j) = &c.join {
        chronik_core::metadata::validate_addr(j).map_err(|reason| ConfigProblem::Invalid {
            field: "join",
            reason,
        })?;
    }
    match (&c.tls, plaintext) {
        (None, false) => {
            return Err(ConfigProblem::Invalid {
                field: "tls",
                reason: "no [tls] section: give the node its CA, certificate and key (docs/security.md), or set `plaintext = true` to run without TLS on a network you trust".into(),
            })
        }
        (Some(_), true) => {
            return Err(ConfigProblem::Invalid {
                field: "plaintext",
                reason: "`plaintext = true` and a [tls] section: choose one".into(),
            })
        }
        _ => {}
    }
    if c.initial_cluster.is_empty() && c.join.is_none() {
        return Err(ConfigProblem::Invalid {
            field: "initial_cluster",
            reason: "list every member of the cluster, this node included (or set `join` to join an existing one)".into(),
        });
    }
    // The node and the engine check the rest (ids, addresses, limits,
    // tick settings) and name the field they refuse.
    c.validate().map_err(|e| match e {
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
        super::parse(s, "test", Overrides::default())
    }

    const GOOD: &str = r#"
plaintext = true
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
            (
                format!("{GOOD}\n[engine]\nelection_ticks = 1\n"),
                "election_ticks",
            ),
            (
                format!("{GOOD}\n[engine]\nelection_tiks = 20\n"),
                "election_tiks",
            ),
            (
                GOOD.replace("node_id = 1\n", "node_id = 1\nrequest_timeout_ms = 0\n"),
                "request_timeout_ms",
            ),
            (
                GOOD.replace("peer_addr = \"127.0.0.1:7001\"", "peer_addr = \"bad\""),
                "initial_cluster",
            ),
            (GOOD.replace("plaintext = true\n", ""), "tls"),
            (
                GOOD.replace("plaintext = true", "plaintext = 1"),
                "plaintext",
            ),
            (
                format!("{GOOD}\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n"),
                "plaintext",
            ),
            (
                format!(
                    "{}\n[tls]\nca = \"a\"\ncert = \"b\"\n",
                    GOOD.replace("plaintext = true\n", "")
                ),
                "key",
            ),
        ];
        for (text, field) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    /// The operations guide's example config shows every setting, each
    /// with the default the code really uses.
    #[test]
    fn the_operations_guide_shows_every_setting_with_its_default() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ))
        .unwrap();
        let block = doc
            .split("```toml")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let (top, rest) = block.split_once("[engine]").unwrap();
        let engine = rest.split("[[initial_cluster]]").next().unwrap();
        let (engine, rebalance) = engine.split_once("[engine.rebalance]").unwrap();
        let (rebalance, shutdown) = rebalance.split_once("[shutdown]").unwrap();
        let (shutdown, tls) = shutdown.split_once("[tls]").unwrap();
        let (tls, auth) = tls.split_once("[auth]").unwrap();
        // `key = value` lines, commented out or not, trailing comments cut.
        let settings = |part: &str| -> Vec<(String, String)> {
            part.lines()
                .filter_map(|l| {
                    let l = l.trim().trim_start_matches('#').trim();
                    let (k, v) = l.split_once('=')?;
                    let v = v.split(" #").next()?.trim();
                    Some((k.trim().to_string(), v.to_string()))
                })
                .collect()
        };
        let (top, engine, rebalance, shutdown, tls) = (
            settings(top),
            settings(engine),
            settings(rebalance),
            settings(shutdown),
            settings(tls),
        );
        let shown = |part: &[(String, String)], key: &str, value: Option<String>| {
            part.iter()
                .any(|(k, v)| k == key && value.as_ref().is_none_or(|want| v == want))
        };
        let auth = settings(auth);
        let auth_keys = toml::Table::try_from(chronik_net::auth::AuthConfig {
            principals_file: "p".into(),
            node_token: Some("t".into()),
        })
        .unwrap();
        for k in auth_keys.keys() {
            assert!(
                shown(&auth, k, None),
                "[auth] {k} is not in docs/operations.md"
            );
        }
        for (k, _) in &auth {
            assert!(auth_keys.contains_key(k), "[auth] {k} is not a setting");
        }
        // Every [tls] key, and only those.
        let tls_keys = toml::Table::try_from(chronik_net::TlsConfig {
            ca: "a".into(),
            cert: "b".into(),
            key: "c".into(),
            require_client_cert: false,
        })
        .unwrap();
        for k in tls_keys.keys() {
            assert!(
                shown(&tls, k, None),
                "[tls] {k} is not in docs/operations.md"
            );
        }
        for (k, _) in &tls {
            assert!(tls_keys.contains_key(k), "[tls] {k} is not a setting");
        }
        let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
        let identity = [
            "node_id",
            "peer_listen",
            "client_listen",
            "data_dir",
            "initial_cluster",
        ];
        for (key, value) in &defaults {
            if key == "engine" {
                for (k, v) in value.as_table().unwrap() {
                    if let Some(nested) = v.as_table() {
                        assert_eq!(k, "rebalance", "a nested engine table the test knows");
                        for (k, v) in nested {
                            assert!(
                                shown(&rebalance, k, Some(v.to_string())),
                                "[engine.rebalance] {k} = {v} is not in docs/operations.md"
                            );
                        }
                        continue;
                    }
                    assert!(
                        shown(&engine, k, Some(v.to_string())),
                        "[engine] {k} = {v} is not in docs/operations.md"
                    );
                }
            } else if key == "shutdown" {
                for (k, v) in value.as_table().unwrap() {
                    assert!(
                        shown(&shutdown, k, Some(v.to_string())),
                        "[shutdown] {k} = {v} is not in docs/operations.md"
                    );
                }
            } else if !identity.contains(&key.as_str()) {
                assert!(
                    shown(&top, key, Some(value.to_string())),
                    "{key} = {value} is not in docs/operations.md"
                );
            }
        }
        // Settings with no default (unset) are shown as examples.
        for key in [
            "plaintext",
            "metrics_listen",
            "join",
            "retention_bytes",
            "retention_ms",
            "seed",
            "rack",
            "catch_up_bytes_per_sec",
        ] {
            assert!(shown(&top, key, None), "{key} is not in docs/operations.md");
        }
        // And nothing is shown that the code does not know.
        let engine_keys = defaults["engine"].as_table().unwrap();
        for (k, _) in &engine {
            assert!(engine_keys.contains_key(k), "[engine] {k} is not a setting");
        }
        let rebalance_keys = engine_keys["rebalance"].as_table().unwrap();
        for (k, _) in &rebalance {
            assert!(
                rebalance_keys.contains_key(k),
                "[engine.rebalance] {k} is not a setting"
            );
        }
        let shutdown_keys = defaults["shutdown"].as_table().unwrap();
        for (k, _) in &shutdown {
            assert!(
                shutdown_keys.contains_key(k),
                "[shutdown] {k} is not a setting"
            );
        }
        let known = [
            "plaintext",
            "metrics_listen",
            "join",
            "retention_bytes",
            "retention_ms",
            "seed",
            "rack",
            "catch_up_bytes_per_sec",
        ];
        for (k, _) in &top {
            assert!(
                defaults.contains_key(k) || known.contains(&k.as_str()),
                "{k} is not a setting"
            );
        }
    }
}
