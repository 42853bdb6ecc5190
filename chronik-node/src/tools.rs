//! Client-side commands over the client gRPC API.

use crate::error::CliError;
use bytes::Bytes;
use chronik_net::Client;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

#[derive(Subcommand)]
pub enum TopicCmd {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 3)]
        replication_factor: u32,
        /// Defaults to min(2, replication factor).
        #[arg(long, default_value_t = 0)]
        min_insync_replicas: u32,
        /// Let a replica outside the ISR lead when no in-sync one can.
        #[arg(long)]
        unclean_leader_election: bool,
    },
    List,
    Describe {
        name: String,
    },
}

#[derive(Args)]
pub struct ProduceArgs {
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    /// Client address of any node.
    #[arg(long, default_value = "127.0.0.1:9092")]
    addr: String,
    /// Records sent per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 0)]
    partition: u32,
    #[arg(long, default_value = "127.0.0.1:9092")]
    addr: String,
    /// Start at offset 0 (default: at the current end).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    offset: Option<u64>,
    /// Keep waiting for new records.
    #[arg(long)]
    follow: bool,
    /// Print `offset<TAB>value`.
    #[arg(long)]
    print_offsets: bool,
    /// `leader` (linearizable, default), `follower` (linearizable, served
    /// by a follower through ReadIndex) or `follower-stale` (a follower's
    /// applied state at once: may miss recent records).
    #[arg(long, default_value = "leader", value_parser = parse_consistency)]
    read_from: chronik_net::proto::ReadConsistency,
}

fn parse_consistency(s: &str) -> Result<chronik_net::proto::ReadConsistency, String> {
    use chronik_net::proto::ReadConsistency as R;
    match chronik_core::ReadConsistency::parse(s) {
        Some(chronik_core::ReadConsistency::Leader) => Ok(R::Leader),
        Some(chronik_core::ReadConsistency::Follower) => Ok(R::Follower),
        Some(chronik_core::ReadConsistency::FollowerStale) => Ok(R::FollowerStale),
        None => Err(format!(
            "unknown read consistency {s:?}: use leader, follower or follower-stale"
        )),
    }
}

pub fn exit(r: Result<(), CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.reported() {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn client(addr: &str) -> Client {
    crate::connect::client(vec![addr.to_string()], chronik_net::RetryPolicy::default())
}

pub async fn topic(cmd: TopicCmd, addr: &str) -> Result<(), CliError> {
    let c = client(addr);
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            unclean_leader_election,
        } => {
            let t = c
                .create_topic_with(chronik_net::proto::CreateTopicRequest {
                    name,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                    unclean_leader_election,
                })
                .await?;
            crate::outln!(
                "created topic {} ({} partitions, replication factor {}, min in-sync replicas {})",
                t.name,
                t.partitions.len(),
                t.replication_factor,
                t.min_insync_replicas
            );
        }
        TopicCmd::List => {
            let md = c.metadata().await?;
            crate::outln!(
                "{:<30} {:>10} {:>8} {:>8}",
                "TOPIC",
                "PARTITIONS",
                "RF",
                "MIN_ISR"
            );
            for t in md.topics {
                crate::outln!(
                    "{:<30} {:>10} {:>8} {:>8}",
                    t.name,
                    t.partitions.len(),
                    t.replication_factor,
                    t.min_insync_replicas
                );
            }
        }
        TopicCmd::Describe { name } => {
            let md = c.metadata().await?;
            let t = md
                .topics
                .into_iter()
                .find(|t| t.name == name)
                .ok_or_else(|| CliError::UnknownTopic(name.clone()))?;
            crate::outln!(
                "topic {} (replication factor {}, min in-sync replicas {})",
                t.name,
                t.replication_factor,
                t.min_insync_replicas
            );
            crate::outln!(
                "{:>9} {:>6} {:>8} {:<16} {:<16}",
                "PARTITION",
                "GROUP",
                "LEADER",
                "REPLICAS",
                "ISR"
            );
            let list = |v: &[u64]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for p in t.partitions {
                let leader = if p.leader == 0 {
                    "-".to_string()
                } else {
                    p.leader.to_string()
                };
                crate::outln!(
                    "{:>9} {:>6} {:>8} {:<16} {:<16}",
                    p.partition,
                    p.group,
                    leader,
                    list(&p.replicas),
                    list(&p.isr)
                );
            }
        }
    }
    Ok(())
}

pub async fn produce(a: ProduceArgs) -> Result<(), CliError> {
    let c = client(&a.addr);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut batch: Vec<Bytes> = Vec::new();
    let mut total = 0u64;
    let batch_max = a.batch.max(1);
    loop {
        let line = lines.next_line().await.map_err(CliError::Stdin)?;
        let done = line.is_none();
        if let Some(l) = line {
            batch.push(Bytes::from(l));
        }
        if batch.len() >= batch_max || (done && !batch.is_empty()) {
            let n = batch.len() as u64;
            let base = c
                .produce(&a.topic, a.partition, std::mem::take(&mut batch))
                .await?;
            eprintln!(
                "produced {n} records to {}-{} at offsets {base}..{}",
                a.topic,
                a.partition,
                base + n - 1
            );
            total += n;
        }
        if done {
            break;
        }
    }
    eprintln!("{total} records produced");
    Ok(())
}

pub async fn consume(a: ConsumeArgs) -> Result<(), CliError> {
    let c = client(&a.addr);
    let mut offset = match (a.from_beginning, a.offset) {
        (true, _) => 0,
        (false, Some(o)) => o,
        (false, None) => {
            c.fetch_with(&a.topic, a.partition, 0, 1, a.read_from)
                .await?
                .high_watermark
        }
    };
    loop {
        let f = c
            .fetch_with(&a.topic, a.partition, offset, 1024 * 1024, a.read_from)
            .await?;
        for (o, v) in &f.records {
            let text = String::from_utf8_lossy(v);
            if a.print_offsets {
                crate::outln!("{o}\t{text}");
            } else {
                crate::outln!("{text}");
            }
            offset = o + 1;
        }
        if f.records.is_empty() {
            if !a.follow {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
