//! The [`LogStore`] adapter over the shared WAL, and the per-group metadata record the
//! engine keeps in it.
//!
//! Owns the mapping between Raft's durable state and WAL records: entries are
//! (index, term, payload encoded by the engine codec); the hard state is the WAL's three
//! `u64`s; the group's metadata blob ([`GroupMeta`]) holds this node's replica id, the
//! compaction point (snapshot index, term, configuration) or a tombstone. Never writes:
//! the worker builds the write batches; this module only reads and encodes.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use flotilla_wal::{ReadError, Wal};

use crate::raft::message::{Entry, HardState, SnapshotMeta};
use crate::raft::storage::{InitialState, LogStore, StorageError};
use crate::raft::types::ReplicaId;
use crate::transport::codec::{
    decode_payload, decode_snapshot_meta, encode_payload_into, encode_snapshot_meta, DecodeLimits,
};

const META_VERSION: u8 = 1;
const META_LIVE: u8 = 0;
const META_TOMBSTONE: u8 = 1;

/// What the WAL's metadata record says about a group on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupMeta {
    /// A live replica with id `replica`, compacted to `snapshot` (index 0: never).
    Live { replica: ReplicaId, snapshot: SnapshotMeta },
    /// The replica `replica` was removed; messages naming it (or an older one) never
    /// recreate it.
    Tombstone { replica: ReplicaId },
}

impl GroupMeta {
    /// The record's bytes.
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u8(META_VERSION);
        match self {
            GroupMeta::Live { replica, snapshot } => {
                b.put_u8(META_LIVE);
                b.put_u64_le(*replica);
                encode_snapshot_meta(&mut b, snapshot);
            }
            GroupMeta::Tombstone { replica } => {
                b.put_u8(META_TOMBSTONE);
                b.put_u64_le(*replica);
            }
        }
        b.freeze()
    }

    /// Decodes a record written by [`GroupMeta::encode`].
    pub(crate) fn decode(buf: &[u8]) -> Result<GroupMeta, String> {
        if buf.len() < 10 || buf[0] != META_VERSION {
            return Err(format!("group metadata of {} bytes, version {:?}", buf.len(), buf.first()));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&buf[2..10]);
        let replica = u64::from_le_bytes(id);
        match buf[1] {
            META_LIVE => {
                let rest = Bytes::copy_from_slice(&buf[10..]);
                let (snapshot, _) =
                    decode_snapshot_meta(&rest, DecodeLimits::default()).map_err(|e| e.to_string())?;
                Ok(GroupMeta::Live { replica, snapshot })
            }
            META_TOMBSTONE => Ok(GroupMeta::Tombstone { replica }),
            k => Err(format!("unknown group metadata kind {k}")),
        }
    }
}

/// Converts the engine's hard state to the WAL's.
pub(crate) fn wal_hs(hs: HardState) -> flotilla_wal::HardState {
    flotilla_wal::HardState { term: hs.term, vote: hs.vote, commit: hs.commit }
}

/// Adds `e` of `group` to `batch`, its payload encoded straight into the batch (the
/// bytes of `codec::encode_payload`, without a buffer of their own).
pub(crate) fn add_entry(batch: &mut flotilla_wal::WriteBatch, group: u64, e: &Entry) {
    batch.add_entry_with(group, e.index, e.term, |d| encode_payload_into(d, &e.payload));
}

/// One group's durable log, read from the shared WAL.
pub(crate) struct WalStore {
    wal: Arc<Wal>,
    group: u64,
    /// The durable compaction point (kept in step by the worker, [`WalStore::set_snap`]):
    /// usually the very allocation Raft's log holds (`Raft::snapshot_shared`).
    pub(crate) snap: Arc<SnapshotMeta>,
}

impl std::fmt::Debug for WalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStore").field("group", &self.group).field("snap", &self.snap.index).finish()
    }
}

fn storage_err(e: ReadError) -> StorageError {
    match e {
        ReadError::Compacted { index, .. } => StorageError::Compacted(index),
        ReadError::Unavailable { index, .. } => StorageError::Unavailable(index),
        other => StorageError::Failed(other.to_string()),
    }
}

impl WalStore {
    /// The store of `group`, compacted to `snap`.
    pub(crate) fn new(wal: Arc<Wal>, group: u64, snap: SnapshotMeta) -> WalStore {
        WalStore { wal, group, snap: crate::raft::log::shared_meta(snap) }
    }

    /// Records `meta` as the durable compaction point, sharing `raft`'s copy (Raft's log
    /// compaction point, `Raft::snapshot_shared`) when it is the same point.
    pub(crate) fn shared_snap(meta: &SnapshotMeta, raft: &Arc<SnapshotMeta>) -> Arc<SnapshotMeta> {
        if **raft == *meta {
            Arc::clone(raft)
        } else {
            crate::raft::log::shared_meta(meta.clone())
        }
    }
}

impl LogStore for WalStore {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        let hs = match self.wal.hard_state(self.group) {
            Ok(Some(h)) => HardState { term: h.term, vote: h.vote, commit: h.commit },
            Ok(None) | Err(ReadError::GroupNotFound(_)) => HardState::default(),
            Err(e) => return Err(storage_err(e)),
        };
        Ok(InitialState { hard_state: hs, snapshot: SnapshotMeta::clone(&self.snap) })
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64, out: &mut Vec<Entry>) -> Result<(), StorageError> {
        if lo <= self.snap.index {
            return Err(StorageError::Compacted(lo));
        }
        if hi <= lo {
            return Ok(());
        }
        let got = self.wal.entries(self.group, lo, hi, Some(max_bytes)).map_err(storage_err)?;
        for e in got {
            let data = Bytes::from(e.data);
            let payload = decode_payload(&data, DecodeLimits::default())
                .map_err(|err| StorageError::Failed(format!("entry {} undecodable: {err}", e.index)))?;
            out.push(Entry { index: e.index, term: e.term, payload });
        }
        Ok(())
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snap.index {
            return Ok(self.snap.term);
        }
        if index < self.snap.index {
            return Err(StorageError::Compacted(index));
        }
        self.wal.term(self.group, index).map_err(storage_err)
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        match self.wal.last_index(self.group) {
            Ok(l) => Ok(l.max(self.snap.index)),
            Err(ReadError::GroupNotFound(_)) => Ok(self.snap.index),
            Err(e) => Err(storage_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::conf::ConfState;
    use crate::raft::types::Replica;

    #[test]
    fn payloads_round_trip_and_garbage_is_refused() {
        use crate::raft::conf::{ChangeKind, ConfChange};
        use crate::raft::message::EntryPayload;
        for payload in [
            EntryPayload::Noop,
            EntryPayload::Normal(Bytes::from_static(b"abc")),
            EntryPayload::ConfChange(ConfChange::single(ChangeKind::AddLearner, Replica::new(4, 9))),
            EntryPayload::Session {
                header: crate::session::SessionHeader {
                    op: crate::session::SessionOp::Propose { session: 3, seq: 2, floor: 1 },
                    stamp_ms: 99,
                },
                data: Bytes::from_static(b"x"),
            },
        ] {
            let e = Entry { index: 3, term: 2, payload };
            // What `add_entry` writes into the batch is the codec's storage form.
            let mut written = Vec::new();
            encode_payload_into(&mut written, &e.payload);
            let stored = crate::transport::codec::encode_payload(&e.payload);
            assert_eq!(written, stored[..]);
            assert_eq!(decode_payload(&stored, DecodeLimits::default()).unwrap(), e.payload);
        }
        for bad in [&b""[..], &[9u8][..], &[1u8, 5, 1][..], &[0u8, 0][..]] {
            assert!(decode_payload(&Bytes::copy_from_slice(bad), DecodeLimits::default()).is_err());
        }
    }

    #[test]
    fn meta_round_trips_and_rejects_garbage() {
        let conf = ConfState::with_voters([Replica::new(1, 1), Replica::new(2, 2)]);
        for m in [
            GroupMeta::Live { replica: 2, snapshot: SnapshotMeta { index: 9, term: 3, conf } },
            GroupMeta::Tombstone { replica: 4 },
        ] {
            assert_eq!(GroupMeta::decode(&m.encode()).unwrap(), m);
        }
        assert!(GroupMeta::decode(&[]).is_err());
        assert!(GroupMeta::decode(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
