//! What one worker's replicas hold for their callers, summed over the worker: the
//! proposal bytes their leaders appended and have not handed out for apply
//! (`Raft::uncommitted_bytes`) and the reads they hold (the engine's read waiters, plus a
//! leader's reads waiting for confirmation, `Raft::reads_held`). The per-group bounds
//! (`max_uncommitted_bytes`, `max_pending_reads`) cap one group; these sums are what
//! `max_worker_uncommitted_bytes` and `max_worker_pending_reads` cap, so a client that
//! reaches many groups cannot make a node hold `groups × per-group bound`.
//!
//! Owns the figures last seen per group (only for groups holding something, so an idle
//! replica costs nothing here) and their sums. Never reads a group itself: the worker
//! reports a group's figures as soon as a request adds to them (a proposal appended, a
//! read taken, a follower's read stepped: so later requests of the same turn see them)
//! and after the group's turn (`Worker::process`, where they fall), drops them when the
//! replica goes, and refreshes them before refusing anything on a sum (`refresh`).

use std::collections::HashMap;

/// What one group holds for its callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Held {
    /// Proposal bytes appended by this leader and not handed out for apply.
    pub(super) bytes: u64,
    /// Reads held: waiting here for their barrier, and (a leader) waiting for
    /// confirmation. A read of this replica's own caller is held in both places and
    /// counts twice: both records take memory.
    pub(super) reads: u64,
}

impl Held {
    fn is_zero(self) -> bool {
        self.bytes == 0 && self.reads == 0
    }
}

/// One worker's holdings: per group as last seen, and their sums.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    by_group: HashMap<u64, Held>,
    total: Held,
    /// The worker tick of the last `refresh` (at most one per tick).
    refreshed_at: Option<u64>,
}

impl Holdings {
    /// Records that `group` holds `now`.
    pub(super) fn set(&mut self, group: u64, now: Held) {
        let was = if now.is_zero() { self.by_group.remove(&group) } else { self.by_group.insert(group, now) }
            .unwrap_or_default();
        // `total` is the sum of `by_group`, so it holds at least `was`.
        self.total.bytes = self.total.bytes - was.bytes + now.bytes;
        self.total.reads = self.total.reads - was.reads + now.reads;
    }

    /// Drops the figures of a replica that is gone.
    pub(super) fn forget(&mut self, group: u64) {
        self.set(group, Held::default());
    }

    /// The worker's sums if `group` held `now` (its own figures fresh, the other groups'
    /// as last seen).
    pub(super) fn total_with(&self, group: u64, now: Held) -> Held {
        let was = self.by_group.get(&group).copied().unwrap_or_default();
        Held {
            bytes: self.total.bytes - was.bytes + now.bytes,
            reads: self.total.reads - was.reads + now.reads,
        }
    }

    /// The worker's sums as last seen.
    pub(super) fn total(&self) -> Held {
        self.total
    }

    /// Before a refusal on a sum: re-reads every group last seen holding something
    /// (`current` gives a group's figures now, `None` for a replica that is gone), at most
    /// once per worker tick. Returns whether it re-read. The figures are kept current
    /// after every turn of a group, so this only guards against a change no turn saw.
    pub(super) fn refresh(&mut self, tick: u64, mut current: impl FnMut(u64) -> Option<Held>) -> bool {
        if self.refreshed_at == Some(tick) {
            return false;
        }
        self.refreshed_at = Some(tick);
        let groups: Vec<u64> = self.by_group.keys().copied().collect();
        for g in groups {
            let now = current(g).unwrap_or_default();
            self.set(g, now);
        }
        true
    }

    /// Groups last seen holding something.
    #[cfg(test)]
    fn holding(&self) -> usize {
        self.by_group.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn held(bytes: u64, reads: u64) -> Held {
        Held { bytes, reads }
    }

    #[test]
    fn sums_follow_each_groups_latest_figures() {
        let mut h = Holdings::default();
        h.set(1, held(100, 2));
        h.set(2, held(50, 0));
        assert_eq!(h.total(), held(150, 2));
        h.set(1, held(30, 5));
        assert_eq!(h.total(), held(80, 5));
        assert_eq!(h.total_with(2, held(0, 1)), held(30, 6));
        assert_eq!(h.total_with(3, held(7, 0)), held(87, 5));
        h.forget(1);
        assert_eq!(h.total(), held(50, 0));
    }

    #[test]
    fn a_group_holding_nothing_costs_no_entry() {
        let mut h = Holdings::default();
        h.set(1, held(10, 0));
        assert_eq!(h.holding(), 1);
        h.set(1, Held::default());
        assert_eq!(h.holding(), 0);
        assert_eq!(h.total(), Held::default());
        h.forget(9);
        assert_eq!(h.total(), Held::default());
    }

    #[test]
    fn refresh_rereads_holding_groups_once_per_tick() {
        let mut h = Holdings::default();
        h.set(1, held(10, 1));
        h.set(2, held(20, 2));
        // Group 1 went (None), group 2 shrank.
        let now = |g: u64| (g == 2).then_some(held(5, 0));
        assert!(h.refresh(7, now));
        assert_eq!(h.total(), held(5, 0));
        assert_eq!(h.holding(), 1);
        h.set(2, held(40, 0));
        assert!(!h.refresh(7, |_| None), "a second refresh in the same tick");
        assert_eq!(h.total(), held(40, 0));
        assert!(h.refresh(8, |_| None));
        assert_eq!(h.total(), Held::default());
    }
}
