//! [`EntryCache`]: the most recently written bytes of the log, kept in memory as the
//! writes that put them there, so that reads of the log's tail (what Raft replicates and
//! applies) copy from memory instead of the segment maps.
//!
//! Owns: the written rounds it holds (each the exact bytes one write put at a segment
//! position, shared, never copied) and the byte budget (oldest rounds dropped first, so
//! memory stays bounded whatever the number of groups). It is keyed by log location
//! (segment sequence number and offset), not by group and index: a location is written
//! once in a segment's life and a recycled segment gets a new sequence number, so a held
//! round can never answer for bytes other than those at its location, and nothing here
//! changes when a group's entries are overwritten, compacted or removed (the index stops
//! naming their locations; their rounds simply age out). Writing costs one push per
//! write, whatever the number of entries or groups in it. Never: is the source of truth
//! (a miss falls back to the segment map), or holds a round larger than its budget.

use std::collections::VecDeque;
use std::sync::Arc;

/// One cached write: `bytes` sit at `start..start + bytes.len()` of segment `seg`.
#[derive(Debug, Clone)]
struct CachedWrite {
    seg: u64,
    start: u64,
    bytes: Arc<Vec<u8>>,
}

impl CachedWrite {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// The range of `bytes` holding `len` bytes at offset `off` of segment `seg`.
    fn range(&self, seg: u64, off: u64, len: u64) -> Option<(usize, usize)> {
        if seg != self.seg || off < self.start || off.checked_add(len)? > self.end() {
            return None;
        }
        let from = usize::try_from(off - self.start).ok()?;
        Some((from, from + usize::try_from(len).ok()?))
    }
}

/// Bounded cache of the latest writes, in write order.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    budget: usize,
    used: usize,
    /// Ascending by (segment, start): the log is written forward, and a new segment has
    /// a higher sequence number than every earlier one.
    writes: VecDeque<CachedWrite>,
}

impl EntryCache {
    /// A cache holding at most `budget` bytes (0 disables it).
    pub(crate) fn new(budget: usize) -> EntryCache {
        EntryCache { budget, ..EntryCache::default() }
    }

    /// Bytes currently held (the written buffers' allocations).
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Holds `bytes`, written at `start` of segment `seg`, dropping the oldest writes
    /// while over budget. A write larger than the whole budget is not held.
    pub(crate) fn push(&mut self, seg: u64, start: u64, bytes: Arc<Vec<u8>>) {
        let charge = bytes.capacity();
        if charge == 0 || charge > self.budget {
            return;
        }
        if self.writes.back().is_some_and(|w| (seg, start) < (w.seg, w.end())) {
            // Not after the newest write: cannot happen while the log is written
            // forward; start over rather than break the ordering lookups rely on.
            self.writes.clear();
            self.used = 0;
        }
        self.used += charge;
        self.writes.push_back(CachedWrite { seg, start, bytes });
        while self.used > self.budget {
            match self.writes.pop_front() {
                Some(w) => self.used -= w.bytes.capacity(),
                None => break,
            }
        }
    }

    /// Which held write covers `len` bytes at `off` of segment `seg`, and their range in
    /// it.
    fn find(&self, seg: u64, off: u64, len: u64) -> Option<(usize, (usize, usize))> {
        // The first write starting after `off` (in log order); the one before it is the
        // only candidate.
        let i = self.writes.partition_point(|w| (w.seg, w.start) <= (seg, off));
        let i = i.checked_sub(1)?;
        self.writes[i].range(seg, off, len).map(|r| (i, r))
    }

    /// The cached bytes `off..off + len` of segment `seg` as (write, start, len), to copy
    /// after the caller released its locks. `hint` is the position of the write that
    /// answered the caller's previous lookup (reads walk the log forward, so it usually
    /// answers this one too); it is updated.
    pub(crate) fn get_shared(
        &self,
        seg: u64,
        off: u64,
        len: u64,
        hint: &mut Option<usize>,
    ) -> Option<(Arc<Vec<u8>>, usize, usize)> {
        let hit = hint.and_then(|i| self.writes.get(i).and_then(|w| w.range(seg, off, len)).map(|r| (i, r)));
        let (i, (from, to)) = match hit {
            Some(h) => h,
            None => self.find(seg, off, len)?,
        };
        *hint = Some(i);
        Some((self.writes[i].bytes.clone(), from, to - from))
    }

    /// The cached bytes `off..off + len` of segment `seg`.
    #[cfg(test)]
    pub(crate) fn get(&self, seg: u64, off: u64, len: u64) -> Option<&[u8]> {
        let (i, (from, to)) = self.find(seg, off, len)?;
        self.writes[i].bytes.get(from..to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(byte: u8, len: usize) -> Arc<Vec<u8>> {
        let mut v = Vec::with_capacity(len);
        v.resize(len, byte);
        Arc::new(v)
    }

    #[test]
    fn serves_bytes_at_their_location_and_only_there() {
        let mut c = EntryCache::new(1 << 20);
        let mut v = Vec::with_capacity(10);
        v.extend(0..10u8);
        c.push(3, 100, Arc::new(v));
        c.push(3, 110, write(7, 5));
        assert_eq!(c.get(3, 102, 3), Some(&[2u8, 3, 4][..]));
        assert_eq!(c.get(3, 109, 1), Some(&[9u8][..]));
        assert_eq!(c.get(3, 110, 5), Some(&[7u8; 5][..]));
        // A range across two writes, outside every write, or of another segment: a miss.
        assert_eq!(c.get(3, 108, 4), None);
        assert_eq!(c.get(3, 99, 1), None);
        assert_eq!(c.get(3, 114, 2), None);
        assert_eq!(c.get(4, 102, 1), None);
        // A later segment's writes sort after every earlier one.
        c.push(4, 64, write(9, 4));
        assert_eq!(c.get(4, 65, 2), Some(&[9u8, 9][..]));
        assert_eq!(c.get(3, 101, 1), Some(&[1u8][..]));
    }

    #[test]
    fn the_hint_follows_a_forward_read_and_a_wrong_hint_is_only_slower() {
        let mut c = EntryCache::new(1 << 20);
        for k in 0..8u64 {
            c.push(1, k * 100, write(k as u8, 100));
        }
        let mut hint = None;
        for off in (0..800u64).step_by(50) {
            let (b, s, l) = c.get_shared(1, off, 10, &mut hint).unwrap();
            assert_eq!(hint, Some(off as usize / 100));
            assert_eq!(&b[s..s + l], &[(off / 100) as u8; 10][..]);
        }
        let mut wrong = Some(6);
        let (b, s, l) = c.get_shared(1, 120, 10, &mut wrong).unwrap();
        assert_eq!((&b[s..s + l], wrong), (&[1u8; 10][..], Some(1)));
        let mut stale = Some(999);
        assert!(c.get_shared(1, 799, 1, &mut stale).is_some());
        assert!(c.get_shared(1, 800, 1, &mut stale).is_none());
    }

    #[test]
    fn stays_within_budget_dropping_the_oldest_writes() {
        let mut c = EntryCache::new(1000);
        for k in 0..100u64 {
            c.push(1, k * 300, write(k as u8, 300));
            assert!(c.used() <= 1000);
        }
        assert_eq!(c.used(), 900);
        assert_eq!(c.get(1, 99 * 300, 300), Some(&[99u8; 300][..]));
        assert_eq!(c.get(1, 97 * 300, 1), Some(&[97u8][..]));
        assert_eq!(c.get(1, 96 * 300, 1), None, "oldest dropped");
        // Larger than the whole budget: not held, and nothing else is dropped for it.
        c.push(2, 0, write(1, 1001));
        assert_eq!(c.get(2, 0, 1), None);
        assert_eq!(c.used(), 900);
        // Disabled.
        let mut off = EntryCache::new(0);
        off.push(1, 0, write(1, 10));
        assert_eq!((off.used(), off.get(1, 0, 1)), (0, None));
    }

    #[test]
    fn a_write_behind_the_newest_restarts_the_cache() {
        let mut c = EntryCache::new(1 << 20);
        c.push(5, 100, write(1, 10));
        c.push(5, 105, write(2, 10));
        assert_eq!(c.get(5, 100, 1), None);
        assert_eq!(c.get(5, 105, 10), Some(&[2u8; 10][..]));
        assert_eq!(c.used(), 10);
    }
}
