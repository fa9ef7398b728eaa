//! [`EntryCache`]: a bounded in-memory cache of the most recently written entry payloads
//! of every group, so that reads of a group's tail (what Raft replicates) copy from
//! memory instead of the segment maps.
//!
//! Owns: references to payloads and the global byte budget (FIFO eviction across all
//! groups, so memory stays bounded whatever the number of groups). Payloads are not
//! copied: an entry names its batch's data arena, which the cache holds (one reference
//! per arena, not per entry) while any FIFO record made with it remains; arenas are
//! released in insertion order (the budget charges each cached entry its payload, and
//! the oldest entries are evicted while the arenas held exceed twice the budget). Eviction reads the FIFO and the group's run header, and the
//! evicted entry only when the group lost entries otherwise since the record was made
//! (reading it was a cache miss per entry). Never: is the source of truth (a miss falls
//! back to the segment map) or holds an entry the log no longer has.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::batch::EntryRef;
use crate::hash::IdMap;

/// Bookkeeping bytes charged per cached entry on top of its payload.
const ENTRY_OVERHEAD: usize = 48;

/// A cached payload: its batch's arena (by number), its range in it, and the FIFO record
/// that inserted it.
#[derive(Debug, Clone, Copy)]
struct Cached {
    arena: u64,
    start: usize,
    len: usize,
    rec: u64,
}

/// A group's cached run of contiguous indexes.
#[derive(Debug)]
struct Run {
    /// Index of the first cached entry.
    first: u64,
    entries: VecDeque<Cached>,
    /// Records made before this one may be stale for this run (the run lost entries
    /// other than by eviction since, and an index may have been cached again).
    fresh_from: u64,
}

/// One insertion, in FIFO order.
#[derive(Debug, Clone, Copy)]
struct Record {
    group: u64,
    index: u64,
    arena: u64,
    len: usize,
    seq: u64,
}

/// Bounded cache of recent entries, per group a contiguous run of indexes.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    budget: usize,
    used: usize,
    live: usize,
    groups: IdMap<Run>,
    fifo: VecDeque<Record>,
    /// Sequence number of the next record.
    next_rec: u64,
    /// Arenas `first_arena..`, each with the number of its records still in the FIFO.
    arenas: VecDeque<(Arc<Vec<u8>>, usize)>,
    first_arena: u64,
    /// Bytes of the arenas held (kept within twice the budget by evicting the oldest).
    arena_bytes: usize,
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

    /// The number of `arena` (registered unless it is the newest already).
    fn arena_id(&mut self, arena: &Arc<Vec<u8>>) -> u64 {
        if let Some((a, _)) = self.arenas.back() {
            if Arc::ptr_eq(a, arena) {
                return self.first_arena + self.arenas.len() as u64 - 1;
            }
        }
        self.arena_bytes += arena.len();
        self.arenas.push_back((arena.clone(), 0));
        self.first_arena + self.arenas.len() as u64 - 1
    }

    fn arena(&self, id: u64) -> Option<&Arc<Vec<u8>>> {
        let i = usize::try_from(id.checked_sub(self.first_arena)?).ok()?;
        self.arenas.get(i).map(|(a, _)| a)
    }

    /// A FIFO record of arena `id` is gone: releases the oldest arenas left without
    /// records (the newest stays registered: the next insertion likely uses it again).
    fn release_record(&mut self, id: u64) {
        if let Some(i) = id.checked_sub(self.first_arena).and_then(|i| usize::try_from(i).ok()) {
            if let Some((_, n)) = self.arenas.get_mut(i) {
                *n = n.saturating_sub(1);
            }
        }
        while self.arenas.len() > 1 && self.arenas.front().is_some_and(|(_, n)| *n == 0) {
            if let Some((a, _)) = self.arenas.pop_front() {
                self.arena_bytes -= a.len();
            }
            self.first_arena += 1;
        }
    }

    /// Entries were removed from `run` other than by eviction.
    fn mark_stale(run: &mut Run, next_rec: u64) {
        run.fresh_from = next_rec;
    }

    /// Caches entry `index` of `group`, which must directly follow the group's cached run
    /// (otherwise the run is dropped and restarts here).
    #[cfg(test)]
    pub(crate) fn insert(&mut self, group: u64, index: u64, arena: &Arc<Vec<u8>>, start: usize, len: usize) {
        self.append(group, index, arena, &[EntryRef { term: 0, start, len }]);
    }

    /// Caches `refs` (payload ranges of `arena`) as entries `index..` of `group`, after
    /// dropping the group's cached entries at or above `index` (a gap below `index`
    /// restarts the run): one map lookup for the whole run.
    pub(crate) fn append(&mut self, group: u64, index: u64, arena: &Arc<Vec<u8>>, refs: &[EntryRef]) {
        // A payload larger than the whole cache is not cached, nor anything before it.
        let cut = refs.iter().rposition(|e| e.len + ENTRY_OVERHEAD > self.budget).map_or(0, |p| p + 1);
        if cut > 0 {
            self.remove_group(group);
        }
        let index = index + cut as u64;
        let refs = &refs[cut..];
        if refs.is_empty() {
            self.truncate_from(group, index);
            return;
        }
        let id = self.arena_id(arena);
        let next_rec = self.next_rec;
        let run = self.groups.entry(group).or_insert_with(|| Run {
            first: index,
            entries: VecDeque::new(),
            fresh_from: next_rec,
        });
        if run.first + run.entries.len() as u64 > index
            || (!run.entries.is_empty() && run.first + run.entries.len() as u64 != index)
        {
            // Overwritten tail, or a gap: drop what is at or above `index` (all of it
            // for a gap).
            let keep = if index >= run.first && run.first + run.entries.len() as u64 >= index {
                (index - run.first) as usize
            } else {
                0
            };
            for d in run.entries.drain(keep..) {
                self.used -= d.len + ENTRY_OVERHEAD;
                self.live -= 1;
            }
            Self::mark_stale(run, next_rec);
        }
        if run.entries.is_empty() {
            run.first = index;
        }
        for (i, e) in refs.iter().enumerate() {
            let rec = next_rec + i as u64;
            run.entries.push_back(Cached { arena: id, start: e.start, len: e.len, rec });
            self.fifo.push_back(Record { group, index: index + i as u64, arena: id, len: e.len, seq: rec });
            self.used += e.len + ENTRY_OVERHEAD;
        }
        self.live += refs.len();
        self.next_rec += refs.len() as u64;
        if let Some((_, n)) = self.arenas.back_mut() {
            *n += refs.len();
        }
        // Arenas are released oldest first: entries dropped otherwise than by eviction
        // leave theirs held until the older ones go, so their bytes are bounded too.
        let mut guard = self.fifo.len();
        while (self.used > self.budget || self.arena_bytes > 2 * self.budget) && guard > 0 {
            guard -= 1;
            self.evict_one();
        }
        if self.fifo.len() > 2 * self.live + 1024 {
            self.compact_fifo();
        }
    }

    fn evict_one(&mut self) {
        while let Some(r) = self.fifo.pop_front() {
            self.release_record(r.arena);
            if let Some(run) = self.groups.get_mut(&r.group) {
                // A record made since the run last lost entries otherwise is the front
                // entry's own record when the index matches: no need to read the entry.
                let mine = run.first == r.index
                    && !run.entries.is_empty()
                    && (r.seq >= run.fresh_from || run.entries.front().is_some_and(|c| c.rec == r.seq));
                if mine {
                    run.entries.pop_front();
                    self.used -= r.len + ENTRY_OVERHEAD;
                    self.live -= 1;
                    run.first += 1;
                    if run.entries.is_empty() {
                        self.groups.remove(&r.group);
                    }
                    return;
                }
            }
        }
    }

    /// Drops FIFO records of entries no longer cached.
    fn compact_fifo(&mut self) {
        let old = std::mem::take(&mut self.fifo);
        let mut gone = Vec::new();
        for r in old {
            let live = match self.groups.get(&r.group) {
                Some(run) => {
                    r.index >= run.first
                        && r.index < run.first + run.entries.len() as u64
                        && run.entries.get((r.index - run.first) as usize).is_some_and(|c| c.rec == r.seq)
                }
                None => false,
            };
            if live {
                self.fifo.push_back(r);
            } else {
                gone.push(r.arena);
            }
        }
        for a in gone {
            self.release_record(a);
        }
    }

    /// The cached payload of `index` of `group`.
    #[cfg(test)]
    pub(crate) fn get(&self, group: u64, index: u64) -> Option<&[u8]> {
        let run = self.groups.get(&group)?;
        let i = index.checked_sub(run.first)?;
        let c = run.entries.get(usize::try_from(i).ok()?)?;
        self.arena(c.arena)?.get(c.start..c.start + c.len)
    }

    /// The cached payload of `index` of `group` as (arena, start, len), to copy after
    /// the caller released its locks.
    pub(crate) fn get_shared(&self, group: u64, index: u64) -> Option<(Arc<Vec<u8>>, usize, usize)> {
        let run = self.groups.get(&group)?;
        let i = index.checked_sub(run.first)?;
        let c = run.entries.get(usize::try_from(i).ok()?)?;
        Some((self.arena(c.arena)?.clone(), c.start, c.len))
    }

    /// Drops cached entries of `group` at or above `index`.
    pub(crate) fn truncate_from(&mut self, group: u64, index: u64) {
        let next_rec = self.next_rec;
        if let Some(run) = self.groups.get_mut(&group) {
            let keep = index.saturating_sub(run.first).min(run.entries.len() as u64) as usize;
            if keep < run.entries.len() {
                for d in run.entries.drain(keep..) {
                    self.used -= d.len + ENTRY_OVERHEAD;
                    self.live -= 1;
                }
                Self::mark_stale(run, next_rec);
            }
            if run.entries.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Drops cached entries of `group` below `index`.
    pub(crate) fn compact_below(&mut self, group: u64, index: u64) {
        let next_rec = self.next_rec;
        if let Some(run) = self.groups.get_mut(&group) {
            let n = index.saturating_sub(run.first).min(run.entries.len() as u64) as usize;
            if n > 0 {
                for d in run.entries.drain(..n) {
                    self.used -= d.len + ENTRY_OVERHEAD;
                    self.live -= 1;
                }
                run.first += n as u64;
                Self::mark_stale(run, next_rec);
            }
            if run.entries.is_empty() {
                self.groups.remove(&group);
            }
        }
    }

    /// Drops every cached entry of `group`.
    pub(crate) fn remove_group(&mut self, group: u64) {
        if let Some(run) = self.groups.remove(&group) {
            for d in run.entries {
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

    /// Random overwrites, compactions, removals and evictions (each index is cached again
    /// and again, so stale FIFO records meet re-cached entries): the charge always equals
    /// the entries held, cached payloads are the latest ones, and arenas are released.
    #[test]
    fn accounting_stays_exact_through_overwrites_and_evictions() {
        let budget = 40 * (8 + ENTRY_OVERHEAD);
        let mut c = EntryCache::new(budget);
        let mut model: std::collections::HashMap<(u64, u64), Vec<u8>> = Default::default();
        let mut last = [0u64; 4];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..5000u64 {
            let g = rand(4);
            let op = rand(10);
            if op < 7 {
                // Append 1..4 entries from an index at most 3 below the end.
                let from = (last[g as usize] + 1).saturating_sub(rand(4)).max(1);
                let n = 1 + rand(4) as usize;
                let arena: Arc<Vec<u8>> = Arc::new((0..n * 16).map(|i| (step as usize + i) as u8).collect());
                let refs: Vec<EntryRef> =
                    (0..n).map(|i| EntryRef { term: 1, start: i * 16, len: 1 + rand(16) as usize }).collect();
                c.append(g, from, &arena, &refs);
                model.retain(|(mg, mi), _| *mg != g || *mi < from);
                for (i, e) in refs.iter().enumerate() {
                    model.insert((g, from + i as u64), arena[e.start..e.start + e.len].to_vec());
                }
                last[g as usize] = from + n as u64 - 1;
            } else if op < 8 {
                let at = rand(last[g as usize] + 2);
                c.compact_below(g, at);
                model.retain(|(mg, mi), _| *mg != g || *mi >= at);
            } else if op < 9 {
                let at = rand(last[g as usize] + 2);
                c.truncate_from(g, at);
                model.retain(|(mg, mi), _| *mg != g || *mi < at);
            } else {
                c.remove_group(g);
                model.retain(|(mg, _), _| *mg != g);
            }
            let held: usize =
                c.groups.values().flat_map(|r| r.entries.iter()).map(|e| e.len + ENTRY_OVERHEAD).sum();
            assert_eq!(c.used, held, "step {step}");
            assert_eq!(c.live, c.groups.values().map(|r| r.entries.len()).sum::<usize>());
            assert!(c.used <= budget);
            if op < 7 {
                // Stale records are dropped as entries are cached.
                assert!(c.fifo.len() <= 2 * c.live + 1024);
            }
            assert!(c.arena_bytes <= 2 * budget + 64, "arenas not released");
            assert_eq!(c.arena_bytes, c.arenas.iter().map(|(a, _)| a.len()).sum::<usize>());
            for (g, run) in &c.groups {
                for i in 0..run.entries.len() as u64 {
                    let got = c.get(*g, run.first + i).map(|d| d.to_vec());
                    assert_eq!(got.as_ref(), model.get(&(*g, run.first + i)), "step {step} group {g}");
                }
            }
        }
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
