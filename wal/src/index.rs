//! [`GroupIndex`]: the in-memory index of one group: where each live entry is (segment,
//! offset, length, term), and where its latest hard state, metadata and compaction mark
//! records are.
//!
//! Owns: the contiguous run `[first, last]` of a group's live entries. Never: reads
//! files, or accounts segment usage (the `LogState` does, from what this returns).

use std::collections::VecDeque;

use crate::types::HardState;

/// Where one entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryLoc {
    /// The entry's term.
    pub term: u64,
    /// Segment sequence number.
    pub seg: u64,
    /// Offset of the payload in the segment.
    pub off: u32,
    /// Payload length.
    pub len: u32,
}

impl EntryLoc {
    /// A placeholder for an entry whose record is further on in the log. Exists only
    /// while recovery replays the log (a rewritten record can come after a record that
    /// follows it in index order); recovery fails if one is left.
    pub(crate) const HOLE: EntryLoc = EntryLoc {
        term: 0,
        seg: u64::MAX,
        off: 0,
        len: 0,
    };

    /// Whether this is a [`EntryLoc::HOLE`].
    pub(crate) fn is_hole(&self) -> bool {
        self.seg == u64::MAX
    }
}

/// Where one (non-entry) record lives, for usage accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecLoc {
    /// Segment sequence number.
    pub seg: u64,
    /// Record length.
    pub len: u32,
}

/// The index of one group.
#[derive(Debug, Clone)]
pub(crate) struct GroupIndex {
    /// First index of the log (the compaction point); entries hold `first..`.
    pub first: u64,
    /// `entries[i]` is index `first + i`.
    pub entries: VecDeque<EntryLoc>,
    /// Latest hard state and its record.
    pub hard_state: Option<(HardState, RecLoc)>,
    /// Latest metadata and its record.
    pub meta: Option<(Box<[u8]>, RecLoc)>,
    /// Latest compaction mark record.
    pub compact: Option<RecLoc>,
}

impl Default for GroupIndex {
    fn default() -> Self {
        GroupIndex {
            first: 1,
            entries: VecDeque::new(),
            hard_state: None,
            meta: None,
            compact: None,
        }
    }
}

impl GroupIndex {
    /// Last index (`first - 1` when empty).
    pub(crate) fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    /// The location of `index`, if live.
    pub(crate) fn get(&self, index: u64) -> Option<&EntryLoc> {
        let i = index.checked_sub(self.first)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// Mutable location of `index`, if live.
    pub(crate) fn get_mut(&mut self, index: u64) -> Option<&mut EntryLoc> {
        let i = index.checked_sub(self.first)?;
        self.entries.get_mut(usize::try_from(i).ok()?)
    }

    /// Removes entries at or above `index`; returns them.
    pub(crate) fn truncate_from(&mut self, index: u64) -> Vec<EntryLoc> {
        let keep = index
            .saturating_sub(self.first)
            .min(self.entries.len() as u64) as usize;
        self.entries.drain(keep..).collect()
    }

    /// Extends the log with holes up to `last` (at most `max` of them; false if more
    /// would be needed).
    pub(crate) fn pad_to(&mut self, last: u64, max: u64) -> bool {
        let cur = self.last();
        if last <= cur {
            return true;
        }
        if last - cur > max {
            return false;
        }
        for _ in cur..last {
            self.entries.push_back(EntryLoc::HOLE);
        }
        true
    }

    /// Index of the first hole, if any.
    pub(crate) fn first_hole(&self) -> Option<u64> {
        self.entries
            .iter()
            .position(|e| e.is_hole())
            .map(|i| self.first + i as u64)
    }

    /// Removes entries below `index` and makes `index` the first index (when it is above
    /// the current one); returns the removed entries.
    pub(crate) fn compact_below(&mut self, index: u64) -> Vec<EntryLoc> {
        if index <= self.first {
            return Vec::new();
        }
        let n = (index - self.first).min(self.entries.len() as u64) as usize;
        let removed = self.entries.drain(..n).collect();
        self.first = index;
        removed
    }
}
