//! [`EntryCache`]: a bounded in-memory cache of the most recently written entry payloads
//! of every group, so that reads of a group's tail (what Raft replicates) copy from
//! memory instead of the segment maps.
//!
//! Owns: references to payloads and the global byte budget (FIFO eviction across all
//! groups, so memory stays bounded whatever the number of groups). Payloads are not
//! copied: an entry shares its batch's data arena, which lives while any of its entries
//! is cached (the budget charges each cached entry its payload; an arena outlives its
//! evicted entries by at most one batch per cached entry). Never: is the source of truth
//! (a miss falls back to the segment map) or holds an entry the log no longer has.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::batch::EntryRef;
use crate::hash::IdMap;

/// Bookkeeping bytes charged per cached entry on top of its payload.
const ENTRY_OVERHEAD: usize = 48;

/// A cached payload: its batch's arena and its range in it.
#[derive(Debug, Clone)]
struct Cached {
    arena: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

/// A group's cached run: index of its first entry, and the payloads.
type Run = (u64, VecDeque<Cached>);

/// Bounded cache of recent entries, per group a contiguous run of indexes.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    budget: usize,
    used: usize,
    live: usize,
    groups: IdMap<Run>,
    fifo: VecDeque<(u64, u64)>,
}

impl EntryCache {
    /// A cache holding at most `budget` bytes (payloads plus overhead).
    pub(crate) fn new(budget: usize) -> EntryCache {
        EntryCache { budget, ..EntryCache::default() }
    }

    /// Bytes currently charged.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Caches entry `index` of `group`, which must directly follow the group's cached run
    /// (otherwise the run is dropped and restarts here).
    pub(crate) fn insert(&mut self, group: u64, index: u64, arena: &Arc<Vec<u8>>, start: usize, len: usize) {
        let cost = len + ENTRY_OVERHEAD;
        if cost > self.budget {
            self.truncate_from(group, index);
            return;
        }
        let contiguous = match self.groups.get(&group) {
            Some((first, run)) => *first + run.len() as u64 == index,
            None => true,
        };
        if !contiguous {
            self.remove_group(group);
        }
        let (first, run) = self.groups.entry(group).or_insert_with(|| (index, VecDeque::new()));
        if run.is_empty() {
            *first = index;
        }
        run.push_back(Cached { arena: arena.clone(), start, len });
        self.used += cost;
        self.live += 1;
        self.fifo.push_back((group, index));
        let mut guard = self.fifo.len();
        while self.used > self.budget && guard > 0 {
            guard -= 1;
            self.evict_one();
        }
        if self.fifo.len() > 2 * self.live + 1024 {
            self.compact_fifo();
        }
    }

    /// Caches `refs` (payload ranges of `arena`) as entries `index..` of `group`, after
    /// dropping the group's cached entries at or above `index`: one map lookup for the
    /// whole run (the common case of a record that extends the group's cached run).
    pub(crate) fn append(&mut self, group: u64, index: u64, arena: &Arc<Vec<u8>>, refs: &[EntryRef]) {
        if refs.iter().any(|e| e.len + ENTRY_OVERHEAD > self.budget) {
            // Rare (a payload larger than the whole cache): entry by entry.
            self.truncate_from(group, index);
            for (i, e) in refs.iter().enumerate() {
                self.insert(group, index + i as u64, arena, e.start, e.len);
            }
            return;
        }
        if refs.is_empty() {
            self.truncate_from(group, index);
            return;
        }
        let (first, run) = self.groups.entry(group).or_insert_with(|| (index, VecDeque::new()));
        // Drop cached entries at or above `index`; a gap below it restarts the run.
        while !run.is_empty() && *first + run.len() as u64 > index {
            if let Some(d) = run.pop_back() {
                self.used -= d.len + ENTRY_OVERHEAD;
                self.live -= 1;
            }
        }
        if !run.is_empty() && *first + run.len() as u64 != index {
            for d in run.drain(..) {
                self.used -= d.len + ENTRY_OVERHEAD;
                self.live -= 1;
            }
        }
        if run.is_empty() {
            *first = index;
        }
        for (i, e) in refs.iter().enumerate() {
            run.push_back(Cached { arena: arena.clone(), start: e.start, len: e.len });
            self.used += e.len + ENTRY_OVERHEAD;
            self.live += 1;
            self.fifo.push_back((group, index + i as u64));
        }
        let mut guard = self.fifo.len();
        while self.used > self.budget && guard > 0 {
            guard -= 1;
            self.evict_one();
        }
        if self.fifo.len() > 2 * self.live + 1024 {
            self.compact_fifo();
        }
    }

    fn evict_one(&mut self) {
        while let Some((g, idx)) = self.fifo.pop_front() {
            if let Some((first, run)) = self.groups.get_mut(&g) {
                if *first == idx && !run.is_empty() {
                    if let Some(d) = run.pop_front() {
                        self.used -= d.len + ENTRY_OVERHEAD;
                        self.live -= 1;
                    }
                    *first += 1;
                    if run.is_empty() {
                        self.groups.remove(&g);
                    }
                    return;
                }
            }
        }
    }

    fn compact_fifo(&mut self) {
        let groups = &self.groups;
        self.fifo.retain(|(g, idx)| match groups.get(g) {
            Some((first, run)) => *idx >= *first && *idx < *first + run.len() as u64,
            None => false,
        });
    }

    /// The cached payload of `index` of `group`.
    #[cfg(test)]
    pub(crate) fn get(&self, group: u64, index: u64) -> Option<&[u8]> {
        let (first, run) = self.groups.get(&group)?;
        let i = index.checked_sub(*first)?;
        run.get(usize::try_from(i).ok()?).and_then(|c| c.arena.get(c.start..c.start + c.len))
    }

    /// The cached payload of `index` of `group` as (arena, start, len), to copy after
    /// the caller released its locks.
    pub(crate) fn get_shared(&self, group: u64, index: u64) -> Option<(Arc<Vec<u8>>, usize, usize)> {
        let (first, run) = self.groups.get(&group)?;
        let i = index.checked_sub(*first)?;
        run.get(usize::try_from(i).ok()?).map(|c| (c.arena.clone(), c.start, c.len))
    }

    /// Drops cached entries of `group` at or above `index`.
    pub(crate) fn truncate_from(&mut self, group: u64, index: u64) {
        if let Some((first, run)) = self.groups.get_mut(&group) {
            while !run.is_empty() && *first + run.len() as u64 > index {
                if let Some(d) = run.pop_back() {
                    self.used -= d.len + ENTRY_OVERHEAD;
                    self.live -= 1;
                }
            }
            if run.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Drops cached entries of `group` below `index`.
    pub(crate) fn compact_below(&mut self, group: u64, index: u64) {
        if let Some((first, run)) = self.groups.get_mut(&group) {
            while !run.is_empty() && *first < index {
                if let Some(d) = run.pop_front() {
                    self.used -= d.len + ENTRY_OVERHEAD;
                    self.live -= 1;
                }
                *first += 1;
            }
            if run.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Drops every cached entry of `group`.
    pub(crate) fn remove_group(&mut self, group: u64) {
        if let Some((_, run)) = self.groups.remove(&group) {
            for d in run {
                self.used -= d.len + ENTRY_OVERHEAD;
                self.live -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stays_within_budget_with_many_groups() {
        let mut c = EntryCache::new(100 * (16 + ENTRY_OVERHEAD));
        let arena = Arc::new(vec![7u8; 16]);
        for g in 0..100_000u64 {
            c.insert(g, 1, &arena, 0, 16);
            assert!(c.used() <= 100 * (16 + ENTRY_OVERHEAD));
        }
        assert_eq!(c.get(99_999, 1), Some(&[7u8; 16][..]));
        assert_eq!(c.get(0, 1), None, "oldest evicted");
        assert!(c.fifo.len() <= 2 * c.live + 1024);
    }

    #[test]
    fn append_replaces_the_tail_and_restarts_after_a_gap() {
        let mut c = EntryCache::new(1 << 20);
        let arena = Arc::new((0..=20u8).collect::<Vec<u8>>());
        let refs =
            |r: std::ops::Range<usize>| r.map(|i| EntryRef { term: 1, start: i, len: 1 }).collect::<Vec<_>>();
        c.append(1, 1, &arena, &refs(1..6));
        assert_eq!(c.get(1, 5), Some(&[5u8][..]));
        // Overwrite from index 3: 3..=4 replaced, 5 dropped.
        c.append(1, 3, &arena, &refs(13..15));
        assert_eq!(c.get(1, 2), Some(&[2u8][..]));
        assert_eq!(c.get(1, 3), Some(&[13u8][..]));
        assert_eq!(c.get(1, 4), Some(&[14u8][..]));
        assert_eq!(c.get(1, 5), None);
        assert_eq!(c.used(), 4 * (1 + ENTRY_OVERHEAD));
        // A gap restarts the run at the new index.
        c.append(1, 10, &arena, &refs(20..21));
        assert_eq!(c.get(1, 4), None);
        assert_eq!(c.get(1, 10), Some(&[20u8][..]));
        assert_eq!(c.used(), 1 + ENTRY_OVERHEAD);
        // The budget holds across appends of many groups.
        let mut small = EntryCache::new(10 * (1 + ENTRY_OVERHEAD));
        for g in 0..100u64 {
            small.append(g, 1, &arena, &refs(0..3));
            assert!(small.used() <= 10 * (1 + ENTRY_OVERHEAD));
        }
        assert_eq!(small.get(99, 3), Some(&[2u8][..]));
        assert_eq!(small.get(0, 1), None);
    }

    #[test]
    fn truncate_and_compact_drop_entries() {
        let mut c = EntryCache::new(1 << 20);
        let arena = Arc::new((0..=10u8).collect::<Vec<u8>>());
        for i in 1..=10 {
            c.insert(1, i, &arena, i as usize, 1);
        }
        c.truncate_from(1, 6);
        assert_eq!(c.get(1, 6), None);
        assert_eq!(c.get(1, 5), Some(&[5u8][..]));
        c.compact_below(1, 3);
        assert_eq!(c.get(1, 2), None);
        assert_eq!(c.get(1, 3), Some(&[3u8][..]));
        let x = Arc::new(b"x".to_vec());
        c.insert(1, 6, &x, 0, 1);
        assert_eq!(c.get(1, 6), Some(&b"x"[..]));
    }
}
