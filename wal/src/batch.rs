//! [`WriteBatch`]: the unit a caller submits. It holds operations on many groups (entries,
//! hard states, metadata, compaction marks, removals) that become durable together.
//!
//! Owns: collecting operations and their payloads, and knowing their exact encoded size.
//! Never: encodes checksums or touches a file (the writer encodes it into a segment).

use crate::codec::{ENTRIES_BODY_PREFIX, ENTRY_HEADER_LEN, RECORD_HEADER_LEN, REWRITE_BODY_PREFIX};

use crate::types::HardState;

/// One entry of a batch: its term and where its payload is in the data arena.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryRef {
    pub term: u64,
    pub start: usize,
    pub len: usize,
}

/// One operation of a batch; entries are `from..to` of the batch's entry list, payloads
/// ranges of its data arena.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Entries replacing the group's log from `first`.
    Entries {
        group: u64,
        first: u64,
        from: usize,
        to: usize,
    },
    /// Entries copied by a rewrite (internal).
    Rewrite {
        group: u64,
        last: u64,
        first: u64,
        from: usize,
        to: usize,
    },
    HardState {
        group: u64,
        hs: HardState,
    },
    Meta {
        group: u64,
        start: usize,
        len: usize,
    },
    /// Compaction to `index`; `last` is filled in by the writer (None from callers), or
    /// given by a rewrite.
    Compact {
        group: u64,
        index: u64,
        last: Option<u64>,
    },
    Remove {
        group: u64,
    },
}

/// A batch of operations on any number of groups, made durable atomically (all or
/// nothing) by one [`crate::Wal::submit`]. Operations apply in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<Op>,
    pub(crate) entries: Vec<EntryRef>,
    /// Payloads (the entry cache keeps the encoded write instead, not this).
    pub(crate) data: Vec<u8>,
    encoded: usize,
    oversize: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the batch holds only entries and hard states (no metadata, compaction,
    /// removal or rewrite).
    pub fn only_entries_and_hard_states(&self) -> bool {
        self.ops.iter().all(|op| matches!(op, Op::Entries { .. } | Op::HardState { .. }))
    }

    /// Exact bytes the batch's records take in the log (saturates at `usize::MAX` when an
    /// entry is too large to be stored, so that submission refuses it).
    pub fn encoded_len(&self) -> usize {
        if self.oversize {
            usize::MAX
        } else {
            self.encoded
        }
    }

    fn push_data(&mut self, d: &[u8]) -> usize {
        if d.len() > u32::MAX as usize {
            self.oversize = true;
        }
        let data = &mut self.data;
        let start = data.len();
        data.extend_from_slice(d);
        start
    }

    /// Appends one entry `(index, term, data)` of `group`. Consecutive indexes of the same
    /// group added one after another share one record. Entries at an index at or below
    /// the group's last index replace the log from there on (a follower's tail overwrite).
    pub fn add_entry(&mut self, group: u64, index: u64, term: u64, data: &[u8]) {
        let start = self.push_data(data);
        self.push_entry(group, index, term, start, data.len());
    }

    /// Like [`WriteBatch::add_entry`], with the payload written by `write` straight into
    /// the batch (a caller that encodes its payload needs no buffer of its own). `write`
    /// appends the payload's bytes to the vector it is given and does nothing else to it;
    /// a `write` that shortens it (other entries' payloads live there) makes the whole
    /// batch refused at submission, like one with an entry too large to store.
    pub fn add_entry_with(&mut self, group: u64, index: u64, term: u64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        if self.data.len() < start {
            self.oversize = true;
        }
        let start = start.min(self.data.len());
        let len = self.data.len() - start;
        if len > u32::MAX as usize {
            self.oversize = true;
        }
        self.push_entry(group, index, term, start, len);
    }

    /// Records the entry whose payload is `data[start..start + len]`.
    fn push_entry(&mut self, group: u64, index: u64, term: u64, start: usize, len: usize) {
        self.encoded = self.encoded.saturating_add(ENTRY_HEADER_LEN + len);
        let n = self.entries.len();
        self.entries.push(EntryRef { term, start, len });
        if let Some(Op::Entries { group: g, first, from, to }) = self.ops.last_mut() {
            // Checked: a caller's index near `u64::MAX` must not overflow (the writer
            // refuses such entries with a typed error).
            if *g == group && *to == n && first.checked_add((*to - *from) as u64) == Some(index) {
                *to += 1;
                return;
            }
        }
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + ENTRIES_BODY_PREFIX);
        self.ops.push(Op::Entries { group, first: index, from: n, to: n + 1 });
    }

    /// Appends entries of `group` starting at `first`, each `(term, data)`.
    pub fn add_entries<'a>(
        &mut self,
        group: u64,
        first: u64,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) {
        for (i, (term, data)) in entries.into_iter().enumerate() {
            // Wrapping: an index past `u64::MAX` is refused by the writer, not a panic here.
            self.add_entry(group, first.wrapping_add(i as u64), term, data);
        }
    }

    /// Sets the hard state of `group`.
    pub fn set_hard_state(&mut self, group: u64, hs: HardState) {
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + 24);
        self.ops.push(Op::HardState { group, hs });
    }

    /// Sets the opaque metadata of `group` (the engine stores the membership here).
    pub fn set_meta(&mut self, group: u64, meta: &[u8]) {
        let start = self.push_data(meta);
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + meta.len());
        self.ops.push(Op::Meta { group, start, len: meta.len() });
    }

    /// Discards the entries of `group` below `index`; `index` becomes its first index.
    /// Past the last entry, the group's log becomes empty and continues at `index`.
    pub fn compact_to(&mut self, group: u64, index: u64) {
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + 16);
        self.ops.push(Op::Compact { group, index, last: None });
    }

    /// Removes `group` with every record it has. A group later created with the same id
    /// starts empty.
    pub fn remove_group(&mut self, group: u64) {
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN);
        self.ops.push(Op::Remove { group });
    }

    /// Internal: rewritten entries copied from an old segment.
    pub(crate) fn add_rewrite(&mut self, group: u64, last: u64, first: u64, entries: Vec<(u64, &[u8])>) {
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + REWRITE_BODY_PREFIX);
        let from = self.entries.len();
        for (term, d) in entries {
            let start = self.push_data(d);
            self.encoded = self.encoded.saturating_add(ENTRY_HEADER_LEN + d.len());
            self.entries.push(EntryRef { term, start, len: d.len() });
        }
        let to = self.entries.len();
        self.ops.push(Op::Rewrite { group, last, first, from, to });
    }

    /// Internal: a compaction mark with a known last index (rewrites).
    pub(crate) fn add_compact_with_last(&mut self, group: u64, index: u64, last: u64) {
        self.encoded = self.encoded.saturating_add(RECORD_HEADER_LEN + 16);
        self.ops.push(Op::Compact { group, index, last: Some(last) });
    }
}
