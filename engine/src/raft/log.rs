//! The replica's view of its log: durable entries in a [`LogStore`], entries not yet
//! durable (the unstable tail), the compaction point, and the commit/apply cursors.
//!
//! Owns log arithmetic (matching, conflicts, truncation, Raft §5.3) and the durability
//! cursor (etcd's stableTo). Never performs I/O: the runtime persists what `Ready` hands
//! out and reports back.

use std::collections::VecDeque;
use std::sync::Arc;

use super::message::{Entry, SnapshotMeta};
use super::storage::{LogStore, StorageError};

/// Storage + unstable tail + cursors.
#[derive(Debug)]
pub struct RaftLog<S> {
    /// Durable entries (below `offset`).
    pub storage: S,
    /// The compaction point: entries up to `snap.index` are gone; `snap.conf` is the
    /// configuration there.
    /// Shared (`Raft::snapshot_shared`): a store that keeps the same compaction point
    /// holds a pointer, not a second copy.
    pub snap: Arc<SnapshotMeta>,
    /// Index of the first entry of `unstable`; entries below it are durable in storage.
    offset: u64,
    /// Entries not yet known durable.
    unstable: VecDeque<Entry>,
    /// First index not yet handed out for persisting.
    persist_from: u64,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index handed out for apply.
    pub applying: u64,
    /// Highest index the runtime reported applied.
    pub applied: u64,
}

impl<S: LogStore> RaftLog<S> {
    /// A log recovered from `storage` with the given snapshot, commit and applied index.
    pub fn new(storage: S, snap: SnapshotMeta, committed: u64, applied: u64) -> Result<Self, StorageError> {
        let last = storage.last_index()?.max(snap.index);
        // An applied entry was committed (only committed, durable entries are handed out
        // for apply), while the durable hard state's commit may lag it: it is written with
        // a later batch. Clamping `applied` down to that commit would apply entries twice.
        let committed = committed.max(applied).clamp(snap.index, last);
        let applied = applied.clamp(snap.index, committed);
        Ok(RaftLog {
            storage,
            offset: last + 1,
            persist_from: last + 1,
            snap: Arc::new(snap),
            unstable: VecDeque::new(),
            committed,
            applying: applied,
            applied,
        })
    }

    /// First index still in the log.
    pub fn first_index(&self) -> u64 {
        self.snap.index + 1
    }

    /// Last index in the log (durable or not).
    pub fn last_index(&self) -> u64 {
        self.offset + self.unstable.len() as u64 - 1
    }

    /// Last index known durable.
    pub fn stable_index(&self) -> u64 {
        self.offset - 1
    }

    /// Term of the last entry.
    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// Term of the entry at `index`.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snap.index {
            return Ok(self.snap.term);
        }
        if index < self.snap.index {
            return Err(StorageError::Compacted(index));
        }
        if index >= self.offset {
            return self
                .unstable
                .get((index - self.offset) as usize)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable(index));
        }
        self.storage.term(index)
    }

    /// Whether the entry at `index` has term `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as
    /// this one (Raft §5.4.1).
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries `[lo, hi)` up to `max_bytes` (at least one).
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let mut out = Vec::new();
        if lo >= hi {
            return Ok(out);
        }
        if lo <= self.snap.index {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        if lo < self.offset {
            self.storage.entries(lo, hi.min(self.offset), max_bytes, &mut out)?;
            let got = out.len() as u64;
            if lo + got < hi.min(self.offset) {
                return Ok(out); // stopped by the byte limit
            }
        }
        if hi > self.offset {
            let mut size: u64 = out.iter().map(|e| e.size() as u64).sum();
            let start = lo.max(self.offset);
            for i in start..hi {
                let e = &self.unstable[(i - self.offset) as usize];
                size += e.size() as u64;
                if size > max_bytes && !out.is_empty() {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Appends entries after the last one (leader path).
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        self.unstable.extend(entries);
    }

    /// Follower append (Raft §5.3): if the log matches at (`prev_index`, `prev_term`),
    /// drops any conflicting suffix, appends what is new, and returns the index of the last
    /// entry the leader sent. `Err` if the entries conflict with a committed entry (a
    /// protocol violation by the sender; nothing is changed).
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
    ) -> Result<Option<u64>, u64> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let mut conflict = None;
        for (i, e) in entries.iter().enumerate() {
            if !self.match_term(e.index, e.term) {
                conflict = Some(i);
                break;
            }
        }
        if let Some(i) = conflict {
            let at = entries[i].index;
            if at <= self.committed {
                return Err(at);
            }
            self.truncate_and_append(entries.into_iter().skip(i));
        }
        Ok(Some(last_new))
    }

    fn truncate_and_append(&mut self, entries: impl Iterator<Item = Entry>) {
        let mut entries = entries.peekable();
        let Some(first) = entries.peek().map(|e| e.index) else { return };
        if first <= self.offset {
            // Replaces durable entries too: they are logically gone from here on.
            self.offset = first;
            self.unstable.clear();
        } else {
            self.unstable.truncate((first - self.offset) as usize);
        }
        self.persist_from = self.persist_from.min(first);
        self.unstable.extend(entries);
    }

    /// Hands out the entries not yet handed out for persisting.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.persist_from.max(self.offset);
        let last = self.last_index();
        if from > last {
            return Vec::new();
        }
        self.persist_from = last + 1;
        self.unstable.range((from - self.offset) as usize..).cloned().collect()
    }

    /// Whether entries wait to be handed out for persisting.
    pub fn has_unpersisted(&self) -> bool {
        self.persist_from.max(self.offset) <= self.last_index()
    }

    /// The runtime made entries up to (`index`, `term`) durable. Takes effect only if the
    /// log still holds `term` at `index` (otherwise those entries were replaced meanwhile,
    /// and the durable ones are stale). Returns whether the stable index advanced.
    pub fn stable_to(&mut self, index: u64, term: u64) -> bool {
        if index < self.offset || index > self.last_index() {
            return false;
        }
        if self.unstable[(index - self.offset) as usize].term != term {
            return false;
        }
        let n = (index + 1 - self.offset) as usize;
        self.unstable.drain(..n);
        self.offset = index + 1;
        self.persist_from = self.persist_from.max(self.offset);
        true
    }

    /// Returns the spare capacity of the buffer of not-yet-durable entries (an idle
    /// replica keeps none).
    pub fn shrink(&mut self) {
        self.unstable.shrink_to_fit();
    }

    /// Raises the commit index (never lowers it; never past the last index).
    pub fn commit_to(&mut self, index: u64) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }

    /// Hands out committed, durable entries not yet handed out for apply, up to
    /// `max_bytes`.
    pub fn take_committed(&mut self, max_bytes: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.stable_index());
        if hi <= self.applying {
            return Vec::new();
        }
        match self.entries(self.applying + 1, hi + 1, max_bytes) {
            Ok(ents) => {
                if let Some(last) = ents.last() {
                    self.applying = last.index;
                }
                ents
            }
            Err(_) => Vec::new(),
        }
    }

    /// Whether committed entries wait to be handed out for apply.
    pub fn has_committed(&self) -> bool {
        self.committed.min(self.stable_index()) > self.applying
    }

    /// Replaces the whole log by a snapshot (follower restore).
    pub fn restore(&mut self, meta: SnapshotMeta) {
        self.offset = meta.index + 1;
        self.persist_from = self.offset;
        self.unstable.clear();
        self.committed = meta.index;
        self.applying = meta.index;
        self.applied = meta.index;
        self.snap = Arc::new(meta);
    }

    /// The first index of the term-`term` run containing... (etcd's findConflictByTerm):
    /// the largest index `<= index` whose term is `<= term`, and that term.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term => {
                    if i == 0 {
                        return (0, 0);
                    }
                    i -= 1;
                }
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::EntryPayload;
    use crate::raft::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry { index, term, payload: EntryPayload::Noop }
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([ent(1, 1), ent(2, 1)]);
        assert_eq!(log.take_unpersisted().len(), 2);
        // A new leader replaces index 2 before the write completes.
        assert_eq!(log.maybe_append(1, 1, vec![ent(2, 2)]), Ok(Some(2)));
        assert!(!log.stable_to(2, 1), "stale durability notice must not advance");
        assert!(log.stable_to(1, 1));
        assert_eq!(log.stable_index(), 1);
        assert_eq!(log.take_unpersisted().len(), 1, "the replacement is handed out again");
        assert!(log.stable_to(2, 2));
        assert_eq!(log.stable_index(), 2);
    }

    #[test]
    fn committed_conflict_is_refused() {
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([ent(1, 1), ent(2, 1)]);
        log.commit_to(2);
        assert_eq!(log.maybe_append(1, 1, vec![ent(2, 2)]), Err(2));
        assert_eq!(log.term(2), Ok(1));
    }

    /// A state machine that durably applied past the durable hard state's commit (the
    /// commit is written with a later batch) is not handed those entries again.
    #[test]
    fn recovered_applied_ahead_of_durable_commit_is_not_reapplied() {
        let mut st = MemStorage::default();
        st.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        let mut log = RaftLog::new(st, SnapshotMeta::default(), 1, 2).unwrap();
        assert_eq!((log.committed, log.applied), (2, 2));
        assert!(log.take_committed(u64::MAX).is_empty(), "entries 1..=2 handed out again");
        log.commit_to(3);
        assert_eq!(log.take_committed(u64::MAX).iter().map(|e| e.index).collect::<Vec<_>>(), vec![3]);
        // An applied index past the durable log is clamped to it.
        let mut st = MemStorage::default();
        st.append(&[ent(1, 1)]);
        let log = RaftLog::new(st, SnapshotMeta::default(), 0, 5).unwrap();
        assert_eq!((log.committed, log.applied), (1, 1));
    }

    #[test]
    fn apply_waits_for_durability() {
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([ent(1, 1), ent(2, 1)]);
        log.commit_to(2);
        assert!(log.take_committed(u64::MAX).is_empty());
        let written = log.take_unpersisted();
        log.storage.append(&written[..1]);
        log.stable_to(1, 1);
        assert_eq!(log.take_committed(u64::MAX).len(), 1);
    }
}
