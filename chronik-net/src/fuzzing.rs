//! Entry points of the fuzz targets under `fuzz/`: bytes as they come from
//! outside (a peer, a client, a file on disk) through the code a node runs
//! on them. None may panic, hang, or allocate more than its input bounds;
//! where a round trip exists, it must give back what went in.

use crate::disk::{Disk, MemDisk};
use crate::partition_store::{decode_batch, segment_header, Manifest};
use crate::wal::{record, Wal, WalConfig};
use prost::Message as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Splits fuzz input into parts at a separator byte, so one input can
/// carry several records or requests.
fn parts(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == 0xfe)
}

/// A peer batch as the peer port receives it: the protobuf envelope, then
/// each Raft message in it.
pub fn peer_batch(data: &[u8]) {
    if let Ok(batch) = crate::proto::PeerBatch::decode(data) {
        let n = batch.messages.len();
        let decoded = crate::transport::decode_messages(batch);
        assert!(decoded.len() <= n, "more messages out than in");
    }
}

/// A partition segment file, read as a node reads one at start: first the
/// input as it is after a valid header, then its parts framed with valid
/// checksums (so the fuzzer reaches the batch decoder behind the CRC).
pub fn segment(data: &[u8]) {
    let mut raw = segment_header().to_vec();
    raw.extend_from_slice(data);
    scan_segment(&raw[segment_header().len()..]);
    let mut framed = Vec::new();
    for p in parts(data) {
        framed.extend_from_slice(&(p.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32c::crc32c(p).to_le_bytes());
        framed.extend_from_slice(p);
    }
    scan_segment(&framed);
}

fn scan_segment(buf: &[u8]) {
    let mut pos = 0;
    while pos < buf.len() {
        match decode_batch(&buf[pos..]) {
            Ok(Some(b)) => {
                assert!(
                    b.size > 0 && b.size <= buf.len() - pos,
                    "batch size {}",
                    b.size
                );
                let records: usize = b.records.iter().map(|r| r.len()).sum();
                assert!(records <= b.size, "records larger than their batch");
                pos += b.size;
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// A partition snapshot's manifest, as a peer sends it.
pub fn manifest(data: &[u8]) {
    let _ = Manifest::decode(data);
}

/// A WAL directory: the input's parts as records with valid checksums, the
/// last one left raw (a torn or rotted tail). Recovery must succeed or
/// refuse with an error, and a recovered WAL must recover the same state
/// when opened again.
pub fn wal(data: &[u8]) {
    let disk = Arc::new(MemDisk::new());
    let dir = PathBuf::from("/data/wal");
    if disk.create_dir_all(&dir).is_err() {
        return;
    }
    let mut segment = Vec::new();
    let all: Vec<&[u8]> = parts(data).collect();
    if let Some((last, whole)) = all.split_last() {
        for p in whole {
            record::encode(p, &mut segment);
        }
        segment.extend_from_slice(last);
    }
    let path = dir.join(format!("wal-{:020}.log", 1));
    let Ok(mut f) = disk.open_append(&path) else {
        return;
    };
    if f.write_all(&segment).and_then(|()| f.sync()).is_err() {
        return;
    }
    drop(f);
    let Ok((wal, first, _)) = Wal::open(disk.clone(), WalConfig::new(&dir)) else {
        return;
    };
    drop(wal);
    let (_, again, _) = Wal::open(disk, WalConfig::new(&dir)).expect("a recovered WAL opens again");
    assert_eq!(first, again, "a second recovery found another state");
}

/// A node's config file, as the daemon loads it (then validated), and a
/// principals file.
pub fn config_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = toml::from_str::<crate::NodeConfig>(text) {
        let _ = c.validate();
    }
    let _ = crate::auth::Principals::parse(text, "fuzz");
}

/// Client requests as the client port decodes them, run on an in-memory
/// 3-node cluster: create topic, produce and fetch, each a kind byte, a
/// length byte and that many bytes of protobuf. Whatever the engine
/// accepts or refuses, the cluster's checkers must stay clean.
#[cfg(feature = "fuzzing")]
pub fn client_requests(data: &[u8]) {
    use crate::proto;
    use crate::service::{create_topic_command, fetch_query, produce_command};
    use chronik_core::testing::{Cluster, ClusterConfig};
    use chronik_core::Command;
    let Some((&seed, mut input)) = data.split_first() else {
        return;
    };
    let mut c = Cluster::with_config(ClusterConfig::new(3, u64::from(seed)));
    for _ in 0..8 {
        let [kind, len, rest @ ..] = input else { break };
        let (msg, next) = rest.split_at(usize::from(*len).min(rest.len()));
        input = next;
        match kind % 3 {
            0 => {
                let Ok(r) = proto::CreateTopicRequest::decode(msg) else {
                    continue;
                };
                // Valid topics of more than a few partitions only make the
                // in-memory cluster slow; the engine's limits are still
                // reached by the invalid ones (over `topic_partitions_max`).
                if (9..=10_000).contains(&r.partitions) {
                    continue;
                }
                let _ = c.metadata_command(create_topic_command(r));
            }
            1 => {
                let Ok(r) = proto::ProduceRequest::decode(msg) else {
                    continue;
                };
                let (partition, command) = produce_command(r, 0);
                let node = c.serving(&partition, 2_000).unwrap_or(1);
                c.command(node, Command::Propose { partition, command });
                c.run_for(200);
            }
            _ => {
                let Ok(r) = proto::FetchRequest::decode(msg) else {
                    continue;
                };
                let Ok((partition, query, consistency)) = fetch_query(r) else {
                    continue;
                };
                let node = c.serving(&partition, 2_000).unwrap_or(1);
                c.command(
                    node,
                    Command::Query {
                        partition,
                        query,
                        consistency,
                    },
                );
                c.run_for(200);
            }
        }
    }
    c.checker.assert_ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each entry point takes well-formed input too (the fuzzers start
    /// from nothing; these show the entry points reach the real decoders).
    #[test]
    fn entry_points_take_well_formed_and_broken_input() {
        let batch = crate::proto::PeerBatch {
            from: 1,
            incarnation: 1,
            to: 2,
            messages: vec![crate::proto::PeerMessage {
                group: 0,
                message: bytes::Bytes::from_static(b"\x08\x01"),
            }],
        };
        peer_batch(&batch.encode_to_vec());
        let recs = [
            bytes::Bytes::from_static(b"a"),
            bytes::Bytes::from_static(b"bc"),
        ];
        let good = crate::partition_store::encode_batch(0, 7, &recs);
        segment(&good);
        segment(&good[..good.len() - 1]);
        manifest(b"\x01\x02");
        wal(b"\x00\x01\xfe\x05\xfe\xff\xff");
        config_files(b"node_id = 1\n[tls]\nca = \"a\"\n");
        config_files(b"[[principal]]\nname = \"x\"\n");
    }
}
