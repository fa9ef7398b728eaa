//! The durable log as the Raft core sees it: a read-only [`LogStore`] trait the runtime
//! implements, and [`MemStorage`], an in-memory implementation for the simulator, tests and
//! benchmarks.
//!
//! The core never writes storage: it hands entries, hard state and snapshots out in a
//! `Ready`; the runtime makes them durable, then tells the core (`Raft::on_persisted`).
//! A `LogStore` must therefore reflect only what is durable (or at least everything the
//! runtime has already told the core is durable).

use thiserror::Error;

use super::conf::ConfState;
use super::message::{Entry, HardState, Snapshot, SnapshotMeta};

/// Why storage could not answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The index is below the storage's first index (compacted away).
    #[error("index {0} is compacted")]
    Compacted(u64),
    /// The index is past the storage's last index.
    #[error("index {0} is not available")]
    Unavailable(u64),
    /// The underlying store failed.
    #[error("storage failed: {0}")]
    Failed(String),
}

/// What a replica recovers on restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The latest durable snapshot (compaction point); index 0 when there is none, in
    /// which case `conf` is the group's initial configuration.
    pub snapshot: SnapshotMeta,
}

/// Durable log reads the core needs. Implemented by the runtime over the WAL, and by
/// [`MemStorage`].
pub trait LogStore {
    /// The durable hard state and snapshot metadata to start from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;
    /// Appends entries `[lo, hi)` to `out`, stopping early after `max_bytes` (but always
    /// at least one entry).
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64, out: &mut Vec<Entry>) -> Result<(), StorageError>;
    /// Term of the entry at `index`.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Index of the last durable entry (the snapshot index when the log is empty).
    fn last_index(&self) -> Result<u64, StorageError>;
}

/// An in-memory [`LogStore`] that also implements the writes a runtime performs. Used by
/// the simulator (which decides when writes become "durable"), tests and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    snapshot_data: bytes::Bytes,
    /// Entries after `snapshot.index`, contiguous.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Storage for a replica of a new group whose initial configuration is `conf`, held as
    /// the configuration at index 0. Every replica that ever joins the group must then be
    /// created with the same `conf` (it cannot be learned from the log); for groups that
    /// grow from empty replicas use [`MemStorage::bootstrap`].
    pub fn new_with_conf(conf: ConfState) -> Self {
        MemStorage { snapshot: SnapshotMeta { index: 0, term: 0, conf }, ..Default::default() }
    }

    /// Storage for a founding replica of a new group: the first log entry (index 1,
    /// term 1, committed) creates `conf` from the empty configuration. Replicas that join
    /// later start from [`MemStorage::default`] (empty log, empty configuration) and learn
    /// the configuration from that entry or from a snapshot, so a founder and a joiner
    /// always derive the same configuration at every index.
    pub fn bootstrap(conf: &ConfState) -> Self {
        let entry = Entry {
            term: 1,
            index: 1,
            payload: super::message::EntryPayload::ConfChange(conf.bootstrap_change()),
        };
        MemStorage {
            hard_state: HardState { term: 1, vote: 0, commit: 1 },
            entries: vec![entry],
            ..Default::default()
        }
    }

    /// Records the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends entries, replacing any existing entries at or after the first one.
    /// Entries at or below the snapshot index are ignored.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let snap = self.snapshot.index;
        let skip = snap.saturating_sub(first.index - 1) as usize;
        if skip >= entries.len() {
            return;
        }
        let first_index = entries[skip].index;
        let keep = (first_index - snap - 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        // Entries must be contiguous with what remains.
        debug_assert_eq!(snap + self.entries.len() as u64 + 1, first_index);
        self.entries.extend_from_slice(&entries[skip..]);
    }

    /// Replaces the whole log by the snapshot.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        self.entries.clear();
        self.snapshot = snapshot.meta.clone();
        self.snapshot_data = snapshot.data.clone();
        if self.hard_state.commit < snapshot.meta.index {
            self.hard_state.commit = snapshot.meta.index;
        }
    }

    /// Drops entries up to `meta.index` and records the snapshot (metadata and data) taken
    /// there.
    pub fn compact(&mut self, meta: &SnapshotMeta, data: bytes::Bytes) {
        if meta.index <= self.snapshot.index {
            return;
        }
        let n = ((meta.index - self.snapshot.index) as usize).min(self.entries.len());
        self.entries.drain(..n);
        self.snapshot = meta.clone();
        self.snapshot_data = data;
    }

    /// The latest snapshot (metadata and data).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { meta: self.snapshot.clone(), data: self.snapshot_data.clone() }
    }

    /// All stored entries after the snapshot.
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl LogStore for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState { hard_state: self.hard_state, snapshot: self.snapshot.clone() })
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64, out: &mut Vec<Entry>) -> Result<(), StorageError> {
        if lo <= self.snapshot.index {
            return Err(StorageError::Compacted(lo));
        }
        let last = self.snapshot.index + self.entries.len() as u64;
        if hi > last + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let mut size = 0u64;
        for i in lo..hi {
            let e = &self.entries[(i - self.snapshot.index - 1) as usize];
            size += e.size() as u64;
            if size > max_bytes && i > lo {
                break;
            }
            out.push(e.clone());
        }
        Ok(())
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return Err(StorageError::Compacted(index));
        }
        self.entries
            .get((index - self.snapshot.index - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable(index))
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.snapshot.index + self.entries.len() as u64)
    }
}
