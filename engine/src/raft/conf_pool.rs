//! Interned memberships: replicas whose configurations are equal share one allocation.
//!
//! Owns a process-wide table of weak pointers to the configurations ([`ConfState`]) that
//! replicas hold, found by a hash of their content. A sharded database runs most of its
//! groups on the same few replica sets, so at 100,000 groups per node one configuration
//! (152 bytes with its `Arc`, plus a voter list on the heap) serves thousands of replicas
//! instead of each keeping its own (issue 16 point 7).
//!
//! Never: keeps a configuration alive (the table holds `Weak`s; a configuration goes when
//! its last replica lets go of it), changes what a replica sees (only equal values are
//! shared, and they are immutable behind their `Arc`), or grows without bound: dead
//! entries are dropped from their bucket whenever it is visited, and the whole table is
//! swept once it holds twice the live entries it held after the last sweep (and at least
//! [`SWEEP_FLOOR`]), so it stays within a constant factor of the live configurations.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::conf::ConfState;

/// Entries the table may hold before its first full sweep.
const SWEEP_FLOOR: usize = 1024;

/// The table: configurations by a hash of their content.
#[derive(Default)]
struct ConfPool {
    buckets: HashMap<u64, Vec<Weak<ConfState>>>,
    /// Entries (live or not) in `buckets`.
    entries: usize,
    /// `entries` may reach this before the next full sweep.
    sweep_at: usize,
}

impl ConfPool {
    fn intern(&mut self, conf: ConfState) -> Arc<ConfState> {
        let mut h = DefaultHasher::new();
        conf.hash(&mut h);
        let bucket = self.buckets.entry(h.finish()).or_default();
        let before = bucket.len();
        bucket.retain(|w| w.strong_count() > 0);
        self.entries -= before - bucket.len();
        if let Some(shared) = bucket.iter().filter_map(Weak::upgrade).find(|c| **c == conf) {
            return shared;
        }
        let fresh = Arc::new(conf);
        bucket.push(Arc::downgrade(&fresh));
        self.entries += 1;
        if self.entries > self.sweep_at {
            self.sweep();
        }
        fresh
    }

    /// Drops every dead entry and empty bucket; the next sweep is due at twice what lives.
    fn sweep(&mut self) {
        self.buckets.retain(|_, b| {
            b.retain(|w| w.strong_count() > 0);
            !b.is_empty()
        });
        self.entries = self.buckets.values().map(Vec::len).sum();
        self.sweep_at = (2 * self.entries).max(SWEEP_FLOOR);
        if self.buckets.capacity() > 4 * self.buckets.len().max(SWEEP_FLOOR) {
            self.buckets.shrink_to_fit();
        }
    }
}

fn pool() -> &'static Mutex<ConfPool> {
    static POOL: OnceLock<Mutex<ConfPool>> = OnceLock::new();
    POOL.get_or_init(|| Mutex::new(ConfPool { sweep_at: SWEEP_FLOOR, ..ConfPool::default() }))
}

/// `conf` as a shared allocation: the one every other holder of an equal configuration
/// has, if one is alive, or a new one that later equal configurations will share.
/// Lists are shrunk to fit first (a shared value is never grown again).
pub(crate) fn intern(mut conf: ConfState) -> Arc<ConfState> {
    conf.shrink_to_fit();
    // A panic while the lock was held left the table consistent (every step above is a
    // complete update of `buckets` or `entries`, and a count off by a few only moves the
    // next sweep), so a poisoned lock is taken over.
    pool().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).intern(conf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Replica;

    fn voters(ids: &[u64]) -> ConfState {
        ConfState::with_voters(ids.iter().map(|&i| Replica::new(i, i)))
    }

    #[test]
    fn equal_configurations_share_one_allocation() {
        // Node ids no other test uses, so the process-wide table holds nothing else equal.
        let a = intern(voters(&[9101, 9102, 9103]));
        let b = intern(voters(&[9101, 9102, 9103]));
        assert!(Arc::ptr_eq(&a, &b), "equal configurations were not shared");
        let c = intern(voters(&[9101, 9102, 9104]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, voters(&[9101, 9102, 9104]));
        let mut joint = voters(&[9101, 9102, 9103]);
        joint.voters_outgoing = vec![Replica::new(9101, 9101)];
        let d = intern(joint.clone());
        assert!(!Arc::ptr_eq(&a, &d), "a joint configuration is not the plain one");
        assert_eq!(*d, joint);
    }

    #[test]
    fn a_configuration_no_replica_holds_is_not_kept() {
        let a = intern(voters(&[9201, 9202]));
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(weak.upgrade().is_none(), "the table kept a configuration alive");
        let b = intern(voters(&[9201, 9202]));
        assert_eq!(*b, voters(&[9201, 9202]));
    }

    #[test]
    fn workers_interning_at_once_share_one_allocation_per_value() {
        // Workers of several engines create and change groups at the same time; every
        // thread must come away with the same allocation for the same value.
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                std::thread::spawn(move || {
                    (0..2_000u64)
                        .map(|i| intern(voters(&[9301, 9302, 9400 + (i + t) % 8])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let held: Vec<Vec<Arc<ConfState>>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
        for k in 0..8u64 {
            let want = voters(&[9301, 9302, 9400 + k]);
            let mut same = held.iter().flatten().filter(|c| ***c == want);
            let first = same.next().expect("every value was interned");
            assert!(same.all(|c| Arc::ptr_eq(c, first)), "threads got different allocations for one value");
        }
    }

    #[test]
    fn the_table_stays_within_a_factor_of_what_lives() {
        let mut pool = ConfPool { sweep_at: SWEEP_FLOOR, ..ConfPool::default() };
        let kept: Vec<_> = (0..100).map(|i| pool.intern(voters(&[1, 2, 1000 + i]))).collect();
        for i in 0..50_000u64 {
            drop(pool.intern(voters(&[1, 2, 100_000 + i])));
            assert!(pool.entries <= (2 * kept.len()).max(SWEEP_FLOOR) + 1, "{} entries", pool.entries);
        }
        for (i, k) in kept.iter().enumerate() {
            let again = pool.intern(voters(&[1, 2, 1000 + i as u64]));
            assert!(Arc::ptr_eq(k, &again), "a live configuration was lost in a sweep");
        }
    }
}
