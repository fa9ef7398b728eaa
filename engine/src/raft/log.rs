//! The replica's view of its log: durable entries in a [`LogStore`], entries not yet
//! durable (the unstable tail), durable entries kept in memory until they are handed out
//! for apply, the compaction point, and the commit/apply cursors.
//!
//! Owns log arithmetic (matching, conflicts, truncation, Raft §5.3) and the durability
//! cursor (etcd's stableTo). Never performs I/O: the runtime persists what `Ready` hands
//! out and reports back.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use super::message::{Entry, EntryPayload, SnapshotMeta};
use super::storage::{LogStore, StorageError};

/// At most this many bytes ([`Entry::size`]) of durable entries a replica keeps in memory
/// for apply and for appends to followers; past it the oldest are read back from storage.
/// Entries not yet durable are not counted (flow control and the runtime's proposal
/// bounds limit them).
pub const RETAINED_BYTES_MAX: u64 = 4 << 20;

/// Entries [`RaftLog::entries`] makes room for at once.
const ENTRIES_RESERVE_MAX: usize = 256;

/// The entries with their payloads' bytes in an allocation of their own, one for all of
/// them (they came in one message). A leader's entries arrive as slices of the received
/// frame, and an entry kept in memory would keep the whole frame (other groups' messages
/// too) alive until it is applied: what a replica keeps is then bounded by its entries'
/// bytes (`RETAINED_BYTES_MAX`), not by the frames they came in. The shared copy holds
/// only these entries of this group, consecutive in its log, which are applied together;
/// one allocation instead of one per entry (and one more for each entry's first share).
fn own_payloads(mut entries: Vec<Entry>) -> Vec<Entry> {
    fn data(e: &mut Entry) -> Option<&mut bytes::Bytes> {
        match &mut e.payload {
            EntryPayload::Normal(data) | EntryPayload::Session { data, .. } => Some(data),
            EntryPayload::Noop | EntryPayload::ConfChange(_) => None,
        }
    }
    let total: usize = entries.iter_mut().filter_map(|e| data(e).map(|d| d.len())).sum();
    if total == 0 {
        return entries;
    }
    let mut copy = Vec::with_capacity(total);
    for e in entries.iter_mut() {
        if let Some(d) = data(e) {
            copy.extend_from_slice(d);
        }
    }
    let copy = bytes::Bytes::from(copy);
    let mut at = 0;
    for e in entries.iter_mut() {
        if let Some(d) = data(e) {
            let len = d.len();
            *d = copy.slice(at..at + len);
            at += len;
        }
    }
    entries
}

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
    /// The entries from `mem_first()` to the last index: the durable ones not yet handed out
    /// for apply (also in storage: kept so that apply and appends to followers take them
    /// without reading and decoding the store, at most [`RETAINED_BYTES_MAX`] of them),
    /// then those not yet known durable (from `offset`).
    mem: VecDeque<Entry>,
    /// Bytes ([`Entry::size`]) of the durable entries in `mem` (those below `offset`).
    retained_bytes: u64,
    /// The first index not known durable; entries below it are durable in storage.
    offset: u64,
    /// First index not yet handed out for persisting.
    persist_from: u64,
    /// Highest index known committed.
    pub committed: u64,
    /// Highest index handed out for apply.
    pub applying: u64,
    /// Highest index the runtime reported applied.
    pub applied: u64,
}

/// `meta` as a log's compaction point. The empty one (index 0, term 0, no configuration:
/// a log never compacted) is one allocation shared by every such log, so an idle replica
/// of a group never compacted pays nothing for it (issue 16 point 7: 168 bytes each).
pub(crate) fn shared_meta(meta: SnapshotMeta) -> Arc<SnapshotMeta> {
    static EMPTY: OnceLock<Arc<SnapshotMeta>> = OnceLock::new();
    if meta == SnapshotMeta::default() {
        Arc::clone(EMPTY.get_or_init(|| Arc::new(SnapshotMeta::default())))
    } else {
        Arc::new(meta)
    }
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
            retained_bytes: 0,
            persist_from: last + 1,
            snap: shared_meta(snap),
            mem: VecDeque::new(),
            committed,
            applying: applied,
            applied,
        })
    }

    /// First index still in the log.
    pub fn first_index(&self) -> u64 {
        self.snap.index + 1
    }

    /// Index of the first entry in memory (`offset`, the first one not known durable, when
    /// none is: then every entry is durable and handed out for apply).
    fn mem_first(&self) -> u64 {
        self.mem.front().map_or(self.offset, |e| e.index)
    }

    /// Last index in the log (durable or not).
    pub fn last_index(&self) -> u64 {
        self.mem_first() + self.mem.len() as u64 - 1
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
        if index >= self.mem_first() {
            return self
                .mem
                .get((index - self.mem_first()) as usize)
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
        if lo < self.mem_first() {
            self.storage.entries(lo, hi.min(self.mem_first()), max_bytes, &mut out)?;
            let got = out.len() as u64;
            if lo + got < hi.min(self.mem_first()) {
                return Ok(out); // stopped by the byte limit
            }
        }
        if hi > self.mem_first() {
            let mut size: u64 = out.iter().map(|e| e.size() as u64).sum();
            let start = lo.max(self.mem_first());
            // Room for the usual case (no byte limit reached) up front, not grown by
            // doubling; bounded, as the byte limit may stop it early.
            out.reserve(((hi - start) as usize).min(ENTRIES_RESERVE_MAX));
            for i in start..hi {
                let e = &self.mem[(i - self.mem_first()) as usize];
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
        self.mem.extend(entries);
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
            let mut entries = entries;
            entries.drain(..i);
            self.truncate_and_append(own_payloads(entries).into_iter());
        }
        Ok(Some(last_new))
    }

    fn truncate_and_append(&mut self, entries: impl Iterator<Item = Entry>) {
        let mut entries = entries.peekable();
        let Some(first) = entries.peek().map(|e| e.index) else { return };
        if first <= self.mem_first() {
            self.mem.clear();
            self.retained_bytes = 0;
        } else {
            self.mem.truncate((first - self.mem_first()) as usize);
            if first < self.offset {
                self.retained_bytes = self.mem.iter().map(|e| e.size() as u64).sum();
            }
        }
        // Durable entries from `first` on are replaced too: logically gone from here on.
        self.offset = self.offset.min(first);
        self.persist_from = self.persist_from.min(first);
        self.mem.extend(entries);
    }

    /// Hands out the entries not yet handed out for persisting.
    pub fn take_unpersisted(&mut self) -> Vec<Entry> {
        let from = self.persist_from.max(self.offset);
        let last = self.last_index();
        if from > last {
            return Vec::new();
        }
        self.persist_from = last + 1;
        self.mem.range((from - self.mem_first()) as usize..).cloned().collect()
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
        if self.mem[(index - self.mem_first()) as usize].term != term {
            return false;
        }
        let from = (self.offset - self.mem_first()) as usize;
        let to = (index + 1 - self.mem_first()) as usize;
        self.retained_bytes += self.mem.range(from..to).map(|e| e.size() as u64).sum::<u64>();
        self.offset = index + 1;
        self.persist_from = self.persist_from.max(self.offset);
        self.release_retained();
        true
    }

    /// Drops durable entries from memory (storage has them) once they are handed out for
    /// apply, and the oldest ones while more than [`RETAINED_BYTES_MAX`] are kept.
    fn release_retained(&mut self) {
        while self.mem_first() < self.offset {
            let Some(e) = self.mem.front() else { break };
            if e.index > self.applying && self.retained_bytes <= RETAINED_BYTES_MAX {
                break;
            }
            self.retained_bytes = self.retained_bytes.saturating_sub(e.size() as u64);
            self.mem.pop_front();
        }
    }

    /// Returns the spare capacity of the buffer of entries in memory (an idle replica
    /// keeps none).
    pub fn shrink(&mut self) {
        self.mem.shrink_to_fit();
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
    /// `max_bytes` (at least one entry) and at most `max_entries` (none when 0).
    pub fn take_committed(&mut self, max_bytes: u64, max_entries: u64) -> Vec<Entry> {
        let hi = self.committed.min(self.stable_index()).min(self.applying.saturating_add(max_entries));
        if hi <= self.applying {
            return Vec::new();
        }
        match self.entries(self.applying + 1, hi + 1, max_bytes) {
            Ok(ents) => {
                if let Some(last) = ents.last() {
                    self.applying = last.index;
                }
                self.release_retained();
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
        self.retained_bytes = 0;
        self.persist_from = self.offset;
        self.mem.clear();
        self.committed = meta.index;
        self.applying = meta.index;
        self.applied = meta.index;
        self.snap = shared_meta(meta);
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

    /// A follower keeps appended payloads in a copy of its own, one per message, never
    /// in the frame they came in (which holds other groups' messages too); only the new
    /// entries past a matching prefix are copied.
    #[test]
    fn appended_payloads_leave_the_frame_for_one_copy_per_message() {
        let frame = bytes::Bytes::from((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
        let normal = |index: u64, at: usize, len: usize| Entry {
            index,
            term: 1,
            payload: EntryPayload::Normal(frame.slice(at..at + len)),
        };
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([normal(1, 0, 10)]);
        let sent = vec![
            normal(1, 0, 10),
            normal(2, 100, 7),
            ent(3, 1),
            Entry {
                index: 4,
                term: 1,
                payload: EntryPayload::Session {
                    header: crate::session::SessionHeader {
                        op: crate::session::SessionOp::Close { session: 9 },
                        stamp_ms: 1,
                    },
                    data: frame.slice(300..305),
                },
            },
            normal(5, 1000, 30),
        ];
        assert_eq!(log.maybe_append(0, 0, sent.clone()), Ok(Some(5)));
        let kept = log.entries(1, 6, u64::MAX).unwrap();
        assert_eq!(kept, sent, "the same entries, byte for byte");
        let in_frame = |d: &bytes::Bytes| frame.as_ptr_range().contains(&d.as_ptr());
        let data = |e: &Entry| match &e.payload {
            EntryPayload::Normal(d) | EntryPayload::Session { data: d, .. } => Some(d.clone()),
            _ => None,
        };
        let copied: Vec<bytes::Bytes> = kept[1..].iter().filter_map(data).collect();
        assert_eq!(copied.len(), 3);
        assert!(copied.iter().all(|d| !in_frame(d)), "no payload left in the frame");
        // One copy: each payload follows the one before it.
        for w in copied.windows(2) {
            assert_eq!(w[0].as_ptr().wrapping_add(w[0].len()), w[1].as_ptr(), "one allocation");
        }
        // The entry already in the log (matched, not appended) is the leader's own.
        assert!(in_frame(&data(&kept[0]).unwrap()), "entry 1 was not replaced");
    }

    #[test]
    fn committed_conflict_is_refused() {
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([ent(1, 1), ent(2, 1)]);
        log.commit_to(2);
        assert_eq!(log.maybe_append(1, 1, vec![ent(2, 2)]), Err(2));
        assert_eq!(log.term(2), Ok(1));
    }

    /// Committed entries are handed out at most `max_entries` at a time, none for 0; the
    /// rest wait in the log (`has_committed`) for a later call.
    #[test]
    fn committed_entries_are_handed_out_within_the_apply_budget() {
        let mut st = MemStorage::default();
        st.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        let mut log = RaftLog::new(st, SnapshotMeta::default(), 0, 0).unwrap();
        log.commit_to(3);
        let idx = |v: Vec<Entry>| v.iter().map(|e| e.index).collect::<Vec<_>>();
        assert!(log.take_committed(u64::MAX, 0).is_empty());
        assert!(log.has_committed());
        assert_eq!(idx(log.take_committed(u64::MAX, 2)), vec![1, 2]);
        assert_eq!(idx(log.take_committed(u64::MAX, u64::MAX)), vec![3]);
        assert!(!log.has_committed());
    }

    /// A state machine that durably applied past the durable hard state's commit (the
    /// commit is written with a later batch) is not handed those entries again.
    #[test]
    fn recovered_applied_ahead_of_durable_commit_is_not_reapplied() {
        let mut st = MemStorage::default();
        st.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        let mut log = RaftLog::new(st, SnapshotMeta::default(), 1, 2).unwrap();
        assert_eq!((log.committed, log.applied), (2, 2));
        assert!(log.take_committed(u64::MAX, u64::MAX).is_empty(), "entries 1..=2 handed out again");
        log.commit_to(3);
        assert_eq!(
            log.take_committed(u64::MAX, u64::MAX).iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![3]
        );
        // An applied index past the durable log is clamped to it.
        let mut st = MemStorage::default();
        st.append(&[ent(1, 1)]);
        let log = RaftLog::new(st, SnapshotMeta::default(), 0, 5).unwrap();
        assert_eq!((log.committed, log.applied), (1, 1));
    }

    /// A store that counts the reads of entries and terms (a read is a WAL lookup, a copy
    /// and a decode per entry in the runtime's store).
    #[derive(Default)]
    struct CountingStore {
        inner: MemStorage,
        reads: std::cell::Cell<usize>,
    }

    impl LogStore for CountingStore {
        fn initial_state(&self) -> Result<crate::raft::storage::InitialState, StorageError> {
            self.inner.initial_state()
        }
        fn entries(&self, lo: u64, hi: u64, max: u64, out: &mut Vec<Entry>) -> Result<(), StorageError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.entries(lo, hi, max, out)
        }
        fn term(&self, index: u64) -> Result<u64, StorageError> {
            self.reads.set(self.reads.get() + 1);
            self.inner.term(index)
        }
        fn last_index(&self) -> Result<u64, StorageError> {
            self.inner.last_index()
        }
    }

    fn normal(index: u64, term: u64, len: usize) -> Entry {
        Entry { index, term, payload: EntryPayload::Normal(bytes::Bytes::from(vec![7u8; len])) }
    }

    /// Persists what the log hands out, as the runtime does, and reports it durable.
    fn persist(log: &mut RaftLog<CountingStore>) {
        let written = log.take_unpersisted();
        if let Some(last) = written.last().map(|e| (e.index, e.term)) {
            log.storage.inner.append(&written);
            assert!(log.stable_to(last.0, last.1));
        }
    }

    /// A follower's appended entries do not share the buffer they arrived in (a received
    /// frame): kept in memory until applied, they would keep all of it.
    #[test]
    fn appended_entries_do_not_keep_the_buffer_they_arrived_in() {
        let mut log = RaftLog::new(CountingStore::default(), SnapshotMeta::default(), 0, 0).unwrap();
        let frame = bytes::Bytes::from(vec![3u8; 1 << 16]);
        let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let ents = (1..=2).map(|i| Entry {
            index: i,
            term: 1,
            payload: EntryPayload::Normal(frame.slice(i as usize * 100..i as usize * 100 + 10)),
        });
        assert_eq!(log.maybe_append(0, 0, ents.collect()), Ok(Some(2)));
        persist(&mut log);
        for e in log.entries(1, 3, u64::MAX).unwrap() {
            let EntryPayload::Normal(d) = &e.payload else { panic!("{e:?}") };
            assert_eq!(d.as_ref(), &[3u8; 10][..]);
            assert!(!range.contains(&(d.as_ptr() as usize)), "entry {} shares the frame", e.index);
        }
    }

    /// Logs never compacted share one empty compaction point (no allocation per
    /// replica); a log compacted or restored to any other point holds its own, and one
    /// restored to the empty point shares it again.
    #[test]
    fn logs_never_compacted_share_one_empty_compaction_point() {
        let a = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        let mut b = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        assert!(Arc::ptr_eq(&a.snap, &b.snap), "two empty compaction points, two allocations");
        let meta = SnapshotMeta { index: 5, term: 2, ..Default::default() };
        b.restore(meta.clone());
        assert!(!Arc::ptr_eq(&a.snap, &b.snap));
        assert_eq!(*b.snap, meta);
        let c = RaftLog::new(MemStorage::default(), meta.clone(), 0, 0).unwrap();
        assert!(!Arc::ptr_eq(&b.snap, &c.snap), "only the empty point is shared");
        b.restore(SnapshotMeta::default());
        assert!(Arc::ptr_eq(&a.snap, &b.snap));
    }

    /// Durable entries are handed out for apply (and to followers) from memory, not read
    /// back from the store, and are let go once handed out for apply.
    #[test]
    fn durable_entries_are_handed_out_from_memory_until_applied() {
        let mut log = RaftLog::new(CountingStore::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append((1..=4).map(|i| normal(i, 1, 100)));
        persist(&mut log);
        assert_eq!(log.stable_index(), 4);
        assert_eq!(log.entries(1, 5, u64::MAX).unwrap().len(), 4);
        assert_eq!(log.term(2), Ok(1));
        log.commit_to(4);
        let applied: Vec<u64> = log.take_committed(u64::MAX, u64::MAX).iter().map(|e| e.index).collect();
        assert_eq!(applied, vec![1, 2, 3, 4]);
        assert_eq!(log.storage.reads.get(), 0, "durable entries were read back from the store");
        // Handed out for apply: memory lets them go, the store serves them from now on.
        assert_eq!((log.mem_first(), log.retained_bytes), (5, 0));
        assert_eq!(log.entries(2, 4, u64::MAX).unwrap().len(), 2);
        assert_eq!(log.storage.reads.get(), 1);
    }

    /// At most `RETAINED_BYTES_MAX` of durable entries stay in memory: past it the oldest
    /// go, and reads of them go to the store, with the same answers.
    #[test]
    fn retained_durable_entries_are_bounded_in_bytes() {
        let mut log = RaftLog::new(CountingStore::default(), SnapshotMeta::default(), 0, 0).unwrap();
        let len = 64 << 10;
        let n = (RETAINED_BYTES_MAX / len as u64) * 2;
        log.append((1..=n).map(|i| normal(i, 1, len)));
        persist(&mut log);
        assert!(log.retained_bytes <= RETAINED_BYTES_MAX, "{} retained", log.retained_bytes);
        assert!(log.mem_first() > 1 && log.mem_first() <= n, "mem starts at {}", log.mem_first());
        let all = log.entries(1, n + 1, u64::MAX).unwrap();
        assert_eq!(all.iter().map(|e| e.index).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
        assert!(log.storage.reads.get() > 0);
    }

    /// A follower's conflicting append replaces retained durable entries: terms and entries
    /// answer the new ones, and only the new ones are handed out for persisting.
    #[test]
    fn a_conflict_replaces_retained_durable_entries() {
        let mut log = RaftLog::new(CountingStore::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append((1..=4).map(|i| normal(i, 1, 10)));
        persist(&mut log);
        log.commit_to(1);
        assert_eq!(log.take_committed(u64::MAX, u64::MAX).len(), 1);
        // Entries 3 and 4 of term 1 are durable and retained; a term-2 leader replaces them.
        assert_eq!(log.maybe_append(2, 1, vec![normal(3, 2, 10)]), Ok(Some(3)));
        assert_eq!((log.last_index(), log.stable_index()), (3, 2));
        assert_eq!(log.term(3), Ok(2));
        assert_eq!(log.term(2), Ok(1));
        assert_eq!(log.retained_bytes, normal(2, 1, 10).size() as u64);
        let fresh = log.take_unpersisted();
        assert_eq!(fresh.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(3, 2)]);
        // Replacing from before the retained entries (an uncommitted index 2) clears them.
        assert_eq!(log.maybe_append(1, 1, vec![normal(2, 3, 10)]), Ok(Some(2)));
        assert_eq!((log.mem_first(), log.retained_bytes, log.stable_index()), (2, 0, 1));
        assert_eq!(log.entries(2, 3, u64::MAX).unwrap()[0].term, 3);
    }

    #[test]
    fn apply_waits_for_durability() {
        let mut log = RaftLog::new(MemStorage::default(), SnapshotMeta::default(), 0, 0).unwrap();
        log.append([ent(1, 1), ent(2, 1)]);
        log.commit_to(2);
        assert!(log.take_committed(u64::MAX, u64::MAX).is_empty());
        let written = log.take_unpersisted();
        log.storage.append(&written[..1]);
        log.stable_to(1, 1);
        assert_eq!(log.take_committed(u64::MAX, u64::MAX).len(), 1);
    }
}
