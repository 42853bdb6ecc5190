//! What a WAL record carries, and its encoding: serde/postcard around
//! raft-rs's own protobuf encoding of entries and states.

use chronik_core::persist::GroupUpdate;
use chronik_core::raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use chronik_core::{GroupId, GroupKind};
use serde::{Deserialize, Serialize};

/// What each WAL frame carries: its format version, the record, and how
/// far its segment was already synced when it was written. Recovery uses that to tell a torn
/// unsynced tail (truncate) from corruption of synced data (refuse).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct WalFrame {
    /// [`crate::wal::WAL_FORMAT`] when written.
    pub format: u32,
    pub synced_up_to: u64,
    pub record: WalRecord,
}

/// One WAL record.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum WalRecord {
    /// The updates of one persist batch.
    Batch(Vec<WalUpdate>),
    /// Everything durable at a point, replacing all earlier records.
    Checkpoint(Vec<WalGroup>),
    /// Precedes every `Batch`, in its own frame: the groups the batch
    /// carries and its frame's length. If the batch's bytes are damaged,
    /// only those groups' logs stop there, and recovery finds the record
    /// after it; if the manifest's are, the batch is whole.
    Manifest { groups: Vec<GroupId>, next_len: u32 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum WalUpdate {
    Create {
        group: GroupId,
        kind: GroupKind,
        conf_state: Vec<u8>,
    },
    Entries {
        group: GroupId,
        entries: Vec<Vec<u8>>,
    },
    HardState {
        group: GroupId,
        hard_state: Vec<u8>,
    },
    /// The snapshot's data lives in its own file, written before this record.
    Snapshot {
        group: GroupId,
        index: u64,
        term: u64,
        file: String,
    },
    Drop {
        group: GroupId,
    },
}

/// One group in a checkpoint.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct WalGroup {
    pub group: GroupId,
    pub kind: GroupKind,
    pub conf_state: Vec<u8>,
    pub hard_state: Vec<u8>,
    pub snapshot: Option<(u64, u64, String)>,
    pub entries: Vec<Vec<u8>>,
}

pub fn pb<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes().expect("raft messages always encode")
}

pub fn unpb<M: protobuf::Message>(bytes: &[u8], what: &str) -> Result<M, String> {
    M::parse_from_bytes(bytes).map_err(|e| format!("undecodable {what}: {e}"))
}

/// Encodes an update; `snapshot_file` names the file a snapshot's data went to.
pub fn to_wal(
    update: &GroupUpdate,
    snapshot_file: impl FnOnce(GroupId, &Snapshot) -> String,
) -> WalUpdate {
    match update {
        GroupUpdate::Create {
            group,
            kind,
            conf_state,
        } => WalUpdate::Create {
            group: *group,
            kind: kind.clone(),
            conf_state: pb(conf_state),
        },
        GroupUpdate::Entries { group, entries } => WalUpdate::Entries {
            group: *group,
            entries: entries.iter().map(pb).collect(),
        },
        GroupUpdate::HardState { group, hard_state } => WalUpdate::HardState {
            group: *group,
            hard_state: pb(hard_state),
        },
        GroupUpdate::Snapshot { group, snapshot } => WalUpdate::Snapshot {
            group: *group,
            index: snapshot.get_metadata().index,
            term: snapshot.get_metadata().term,
            file: snapshot_file(*group, snapshot),
        },
        GroupUpdate::Drop { group } => WalUpdate::Drop { group: *group },
        GroupUpdate::CaughtUp { .. } => {
            unreachable!("the WAL keeps repair marks in the votes file, never in a record")
        }
    }
}

/// Decodes an update; `snapshot(index, term, file)` supplies the snapshot
/// a `Snapshot` record refers to.
pub fn from_wal(
    update: WalUpdate,
    snapshot: &mut impl FnMut(u64, u64, &str) -> Result<Snapshot, String>,
) -> Result<GroupUpdate, String> {
    Ok(match update {
        WalUpdate::Create {
            group,
            kind,
            conf_state,
        } => GroupUpdate::Create {
            group,
            kind,
            conf_state: unpb::<ConfState>(&conf_state, "conf state")?,
        },
        WalUpdate::Entries { group, entries } => GroupUpdate::Entries {
            group,
            entries: entries
                .iter()
                .map(|e| unpb::<Entry>(e, "entry"))
                .collect::<Result<_, _>>()?,
        },
        WalUpdate::HardState { group, hard_state } => GroupUpdate::HardState {
            group,
            hard_state: unpb::<HardState>(&hard_state, "hard state")?,
        },
        WalUpdate::Snapshot {
            group,
            index,
            term,
            file,
        } => GroupUpdate::Snapshot {
            group,
            snapshot: snapshot(index, term, &file)?,
        },
        WalUpdate::Drop { group } => GroupUpdate::Drop { group },
    })
}

/// A snapshot carrying only its index and term: what the WAL keeps in
/// memory while the data lives in a file.
pub fn snapshot_stub(index: u64, term: u64) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s
}
