//! `chronik-node`: the Chronik daemon (`run`, `dev`), its client tools
//! (`topic`, `produce`, `consume`, `cluster`) and `certs`.

mod certs;
mod cluster;
mod config;
mod connect;
mod dev;
mod diagnose;
mod error;
mod maintenance;
mod output;
mod rebalance;
mod replicate;
mod status;
mod survey;
mod tools;

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chronik-node",
    version,
    about = "Chronik: Raft-replicated topic partitions"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// TLS for the client tools (`topic`, `produce`, `consume`,
    /// `cluster`).
    #[command(flatten)]
    connect: connect::ConnectArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The principal's name.
    #[arg(long)]
    name: String,
    /// `admin` (everything) or `describe` (metadata, status, listings);
    /// repeatable.
    #[arg(long = "role", value_enum)]
    roles: Vec<RoleArg>,
    /// A topic it may produce to (`*`: every topic); repeatable.
    #[arg(long)]
    write: Vec<String>,
    /// A topic it may fetch from (`*`: every topic); repeatable.
    #[arg(long)]
    read: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Describe,
}

/// `chronik-node token`: a new token for a new principal entry.
fn make_token(a: TokenArgs) -> ExitCode {
    use chronik_net::auth::{self, PrincipalEntry, Role};
    let (token, hash) = match auth::new_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entry = PrincipalEntry {
        name: a.name,
        roles: a
            .roles
            .iter()
            .map(|r| match r {
                RoleArg::Admin => Role::Admin,
                RoleArg::Describe => Role::Describe,
            })
            .collect(),
        write: a.write,
        read: a.read,
        tokens: vec![hash],
    };
    #[derive(serde::Serialize)]
    struct One<'a> {
        principal: [&'a PrincipalEntry; 1],
    }
    // The same checks a node makes when it loads the file.
    let text = match toml::to_string(&One {
        principal: [&entry],
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = auth::Principals::parse(&text, "the new entry") {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "token for {:?} (shown once; the principals file keeps only its hash):",
        entry.name
    );
    eprintln!("{token}");
    print!("{text}");
    ExitCode::SUCCESS
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs one node from a TOML config; flags override the file.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node_id: Option<u64>,
        #[arg(long)]
        peer_listen: Option<SocketAddr>,
        #[arg(long)]
        client_listen: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Client address of a member of a cluster to join (new nodes only:
        /// ignored once the data dir has state).
        #[arg(long)]
        join: Option<String>,
    },
    /// Runs a local 3-node cluster in this process (the embedded default).
    Dev {
        /// Where the three nodes keep their data; reused on the next run.
        #[arg(long, default_value = "./chronik-dev-data")]
        data_dir: PathBuf,
        /// Client ports are BASE, BASE+1, BASE+2; peer ports BASE+10..;
        /// metrics BASE+20...
        #[arg(long, default_value_t = 9092)]
        base_port: u16,
        /// Start with the background rebalancer off (rebalance by hand
        /// with `cluster rebalance`).
        #[arg(long)]
        no_auto_rebalance: bool,
        /// TLS on every port: creates a local CA and node and client
        /// certificates under DATA_DIR/tls (kept for the next run) and
        /// prints how to point the tools at them.
        #[arg(long)]
        tls: bool,
    },
    /// Creates a local CA (or reuses the one in DIR) and node and client
    /// certificates signed by it.
    Certs(certs::CertsArgs),
    /// Makes a bearer token: prints the token on stderr (shown once) and
    /// the principals file entry, which holds only its hash, on stdout
    /// (`chronik-node token --name app --write orders >> principals.toml`).
    Token(TokenArgs),
    /// Creates, lists and describes topics.
    Topic {
        #[command(subcommand)]
        command: tools::TopicCmd,
        /// Client address of any node.
        #[arg(
            long,
            global = true,
            env = "CHRONIK_ADDR",
            default_value = "127.0.0.1:9092"
        )]
        addr: String,
    },
    /// Prints a shell completion script: `source <(chronik-node
    /// completions bash)`, or save it where your shell loads completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Produces stdin, one record per line.
    Produce(tools::ProduceArgs),
    /// Prints records, one per line.
    Consume(tools::ConsumeArgs),
    /// Operator commands: cluster status and health, membership,
    /// partitions and ISR, rebalancing, maintenance. Exit codes: 0 ok, 1
    /// refused or degraded (health: 1 degraded, 2 unavailable), 2 bad
    /// usage, 3 no node reachable.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCmd,
        /// Client address of the node to ask.
        #[arg(
            long,
            global = true,
            env = "CHRONIK_ADDR",
            default_value = "127.0.0.1:9092"
        )]
        addr: String,
        #[arg(long, global = true, value_enum, default_value_t = output::OutputFormat::Table)]
        output: output::OutputFormat,
    },
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: a log file or a pipe gets plain text
    // (NO_COLOR turns it off on a terminal too).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = connect::init(&cli.connect) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Cmd::Run {
                config,
                node_id,
                peer_listen,
                client_listen,
                data_dir,
                metrics_listen,
                join,
            } => {
                init_logs(cli.log_format, "info");
                let overrides = config::Overrides {
                    node_id,
                    peer_listen,
                    client_listen,
                    data_dir,
                    metrics_listen,
                    join,
                };
                let cfg = match config::load(&config, overrides) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
                run(cfg).await
            }
            Cmd::Dev {
                data_dir,
                base_port,
                no_auto_rebalance,
                tls,
            } => {
                init_logs(cli.log_format, "warn,chronik_node=info");
                dev::run(data_dir, base_port, !no_auto_rebalance, tls).await
            }
            Cmd::Token(a) => make_token(a),
            Cmd::Certs(a) => match certs::create(&a) {
                Ok(made) => {
                    if made.ca_created {
                        println!("created CA {}", made.ca.display());
                    } else {
                        println!("signed with CA {}", made.ca.display());
                    }
                    for f in made.files {
                        println!("wrote {}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            },
            Cmd::Topic { command, addr } => {
                init_logs(cli.log_format, "warn");
                tools::exit(tools::topic(command, &addr).await)
            }
            Cmd::Produce(a) => {
                init_logs(cli.log_format, "warn");
                tools::exit(tools::produce(a).await)
            }
            Cmd::Consume(a) => {
                init_logs(cli.log_format, "warn");
                tools::exit(tools::consume(a).await)
            }
            Cmd::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut cmd, "chronik-node", &mut script);
                output::write_stdout(&script);
                ExitCode::SUCCESS
            }
            Cmd::Cluster {
                command,
                addr,
                output,
            } => {
                init_logs(cli.log_format, "warn");
                tools::exit(cluster::run(command, &addr, output).await)
            }
        }
    })
}

async fn run(cfg: chronik_net::NodeConfig) -> ExitCode {
    let mut node = match chronik_net::Node::start(cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                chronik_net::NodeError::Config(_)
                | chronik_net::NodeError::Tls(_)
                | chronik_net::NodeError::Auth(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    let reloader = node.reloader();
    tokio::select! {
        r = node.stopped() => {
            eprintln!("error: {}", r.err().map_or("node stopped".to_string(), |e| e.to_string()));
            ExitCode::FAILURE
        }
        _ = reload_on_hangup(reloader) => unreachable!("reload_on_hangup never returns"),
        _ = shutdown_signal() => {
            tracing::info!("stopping gracefully; a second signal stops at once");
            tokio::select! {
                r = node.shutdown() => match r {
                    Ok(report) if report.clean() => ExitCode::SUCCESS,
                    Ok(report) => {
                        for (phase, left) in report.timed_out() {
                            eprintln!("error: shutdown phase {phase} timed out: {}", left.join(", "));
                        }
                        ExitCode::from(EXIT_SHUTDOWN_TIMED_OUT)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                },
                _ = shutdown_signal() => {
                    // Everything acknowledged is already durable: stopping
                    // here costs only the leadership handoff.
                    eprintln!("second signal: stopping at once");
                    ExitCode::from(EXIT_STOPPED_AT_ONCE)
                }
            }
        }
    }
}

/// Exit codes after a signal: 0 for a clean graceful shutdown, these when
/// a phase ran out of time or a second signal cut it short.
const EXIT_SHUTDOWN_TIMED_OUT: u8 = 3;
const EXIT_STOPPED_AT_ONCE: u8 = 130;

/// Reloads the TLS files on every SIGHUP; never returns.
async fn reload_on_hangup(node: chronik_net::node::Reloader) {
    #[cfg(unix)]
    if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        while hup.recv().await.is_some() {
            let r = node.reload();
            match r.tls {
                Some(Ok(())) => tracing::info!("SIGHUP: reloaded the TLS certificate, key and CA"),
                Some(Err(e)) => tracing::error!(
                    "SIGHUP: kept the TLS files in use, the new ones are refused: {e}"
                ),
                None => {}
            }
            match r.principals {
                Some(Ok(n)) => {
                    tracing::info!("SIGHUP: reloaded the principals file ({n} principals)")
                }
                Some(Err(e)) => tracing::error!(
                    "SIGHUP: kept the principals in use, the new file is refused: {e}"
                ),
                None => {}
            }
        }
    }
    let _ = node;
    std::future::pending().await
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
