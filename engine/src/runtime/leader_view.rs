//! The leader view ([`LeaderView`]): for every group hosted here, the leader its replica
//! knows of, in a [`LeaderCell`] written by the owning worker after each turn of the group
//! and read by any thread without a lock or a mailbox round trip (`Engine::leader`).
//!
//! The map from group to cell changes only when a replica is created or destroyed: it is
//! sharded, each shard an `ArcSwap` of an immutable map replaced whole (copy on write) on
//! those rare changes, so a reader takes one lock-free load and one lookup. A cell is a
//! seqlock of atomics: one writer (the owning worker), readers retry while a write is in
//! progress, so a reader never sees a torn (node, replica, term).
//!
//! Owns the shared structure only. Never decides what the leader is (the worker's
//! `announce` does, from Raft) and never blocks a worker.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::api::LeaderInfo;

/// Shards of the map (a power of two): a creation copies one shard, about
/// groups / `SHARDS` entries.
const SHARDS: usize = 256;

/// One group's leader as its replica here knows it. One writer; any number of readers.
#[derive(Default)]
pub(crate) struct LeaderCell {
    /// Even: stable; odd: a write in progress.
    seq: AtomicU64,
    node: AtomicU64,
    /// 0 (`NO_REPLICA`): no leader known.
    replica: AtomicU64,
    term: AtomicU64,
}

impl LeaderCell {
    /// Sets the leader (`None`: unknown). Only the owning worker calls it.
    pub(crate) fn set(&self, v: Option<LeaderInfo>) {
        let (node, replica, term) = v.map_or((0, 0, 0), |l| (l.node, l.replica, l.term));
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.node.store(node, Ordering::Relaxed);
        self.replica.store(replica, Ordering::Relaxed);
        self.term.store(term, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// The leader, read consistently (never a torn triple).
    pub(crate) fn get(&self) -> Option<LeaderInfo> {
        let mut spins = 0u32;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 0 {
                let node = self.node.load(Ordering::Relaxed);
                let replica = self.replica.load(Ordering::Relaxed);
                let term = self.term.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == s1 {
                    return (replica != 0).then_some(LeaderInfo { node, replica, term });
                }
            }
            // A write is three stores long: spin briefly, then let its writer run (it
            // may have been preempted mid-write).
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Hashes a group id (already well spread by callers or not): one multiply and a fold.
#[derive(Default, Clone, Copy)]
pub(crate) struct GroupHash;

/// The hasher of [`GroupHash`].
#[derive(Default)]
pub(crate) struct GroupHasher(u64);

impl Hasher for GroupHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let m = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = m ^ (m >> 29);
    }
}

impl BuildHasher for GroupHash {
    type Hasher = GroupHasher;
    fn build_hasher(&self) -> GroupHasher {
        GroupHasher(0)
    }
}

type Shard = HashMap<u64, Arc<LeaderCell>, GroupHash>;

/// Every group's [`LeaderCell`], by group id.
pub(crate) struct LeaderView {
    shards: Box<[ArcSwap<Shard>]>,
}

impl Default for LeaderView {
    fn default() -> LeaderView {
        LeaderView { shards: (0..SHARDS).map(|_| ArcSwap::from_pointee(Shard::default())).collect() }
    }
}

impl LeaderView {
    fn shard(&self, group: u64) -> &ArcSwap<Shard> {
        let i = (group.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize & (SHARDS - 1);
        &self.shards[i]
    }

    /// Registers a new replica of `group` (no leader known yet) and returns its cell,
    /// replacing any earlier cell of the group.
    pub(crate) fn insert(&self, group: u64) -> Arc<LeaderCell> {
        let cell = Arc::new(LeaderCell::default());
        self.shard(group).rcu(|m| {
            let mut m = Shard::clone(m);
            m.insert(group, cell.clone());
            m
        });
        cell
    }

    /// Forgets `group`'s `cell` (its replica was destroyed); a newer cell of the group
    /// stays.
    pub(crate) fn remove(&self, group: u64, cell: &Arc<LeaderCell>) {
        let shard = self.shard(group);
        if !shard.load().get(&group).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            return;
        }
        shard.rcu(|m| {
            let mut m = Shard::clone(m);
            if m.get(&group).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                m.remove(&group);
            }
            m
        });
    }

    /// The leader `group`'s replica here knows of: `None` when it knows none or the group
    /// is not hosted here. Lock-free.
    pub(crate) fn get(&self, group: u64) -> Option<LeaderInfo> {
        self.shard(group).load().get(&group).and_then(|c| c.get())
    }

    /// Whether a replica of `group` is hosted here.
    pub(crate) fn contains(&self, group: u64) -> bool {
        self.shard(group).load().contains_key(&group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_view_answers_per_group_and_forgets_destroyed_replicas_only() {
        let v = LeaderView::default();
        assert_eq!(v.get(7), None);
        let c = v.insert(7);
        assert!(v.contains(7));
        assert_eq!(v.get(7), None, "no leader known yet");
        let l = LeaderInfo { node: 2, replica: 5, term: 9 };
        c.set(Some(l));
        assert_eq!(v.get(7), Some(l));
        assert_eq!(v.get(8), None);
        // A newer replica of the group replaces the cell; removing the old one keeps it.
        let c2 = v.insert(7);
        v.remove(7, &c);
        assert!(v.contains(7));
        c2.set(Some(LeaderInfo { node: 3, replica: 6, term: 10 }));
        assert_eq!(v.get(7).map(|l| l.node), Some(3));
        v.remove(7, &c2);
        assert!(!v.contains(7));
        assert_eq!(v.get(7), None);
    }

    #[test]
    fn readers_never_see_a_torn_leader() {
        let cell = Arc::new(LeaderCell::default());
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(std::sync::Barrier::new(2));
        let writer = {
            let (cell, stop, start) = (cell.clone(), stop.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                // Every write keeps node = term and replica = 2 * term.
                for t in 1..200_000u64 {
                    cell.set(Some(LeaderInfo { node: t, replica: 2 * t, term: t }));
                }
                stop.store(true, Ordering::Release);
            })
        };
        let mut reads = 0u64;
        let mut last = 0;
        start.wait();
        // While the writer runs (and at least 1,000 reads); bounded in count.
        while (!stop.load(Ordering::Acquire) || reads < 1_000) && reads < 50_000_000 {
            if let Some(l) = cell.get() {
                assert_eq!((l.node, l.replica), (l.term, 2 * l.term), "torn read");
                assert!(l.term >= last, "went back in time");
                last = l.term;
            }
            reads += 1;
        }
        writer.join().unwrap();
        assert_eq!(cell.get().map(|l| l.term), Some(199_999), "the last write is read");
    }
}
