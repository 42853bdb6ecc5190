//! How the command-line tools reach the cluster: the TLS files given with
//! `--ca`, `--cert` and `--key` (or `CHRONIK_CA`, `CHRONIK_CERT`,
//! `CHRONIK_KEY`), read once at start and used by every client the
//! command opens.

use chronik_net::{Client, ClientTls, RetryPolicy};
use clap::Args;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// CA certificate(s) the nodes' certificates must chain to: connects
    /// over TLS.
    #[arg(long, global = true, env = "CHRONIK_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate, for clusters that want one (mutual TLS).
    #[arg(long, global = true, env = "CHRONIK_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, global = true, env = "CHRONIK_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token, for clusters with `[auth]` (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, global = true, env = "CHRONIK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

static TLS: OnceLock<Option<ClientTls>> = OnceLock::new();
static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Reads the files once; a problem with them is reported before anything
/// connects.
pub fn init(a: &ConnectArgs) -> Result<(), String> {
    let tls = match &a.ca {
        Some(ca) => Some(
            ClientTls::from_files(ca, a.cert.as_deref(), a.key.as_deref())
                .map_err(|e| e.to_string())?,
        ),
        None if a.cert.is_some() => {
            return Err("--cert needs --ca (the CA the nodes' certificates chain to)".into())
        }
        None => None,
    };
    if let Some(t) = &a.token {
        if t.trim().is_empty() || !t.trim().chars().all(|c| c.is_ascii_graphic()) {
            return Err("--token (CHRONIK_TOKEN) must be printable ASCII".into());
        }
    }
    let _ = TLS.set(tls);
    let _ = TOKEN.set(a.token.clone());
    Ok(())
}

fn tls() -> Option<ClientTls> {
    TLS.get().cloned().flatten()
}

/// A client of the cluster at `addrs`, over TLS and with a token when
/// configured (both checked by [`init`]).
pub fn client(addrs: Vec<String>, retry: RetryPolicy) -> Client {
    let c = Client::with_retry(addrs, retry).with_tls(tls());
    let token = TOKEN.get().cloned().flatten();
    match c.with_token(token.as_deref()) {
        Ok(c) => c,
        Err(_) => unreachable!("init checked the token"),
    }
}
