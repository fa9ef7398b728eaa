//! The waiters of one term, in index order: a deque, since a leader appends each index
//! once per term and in order, so a new waiter almost always goes at the back and
//! committed ones leave from the front (no tree to rebalance, no node to allocate per
//! waiter or to split per commit). A waiter out of order (never made by a leader) is
//! placed by binary search.
//!
//! Owns only the order; what a waiter counts and how it completes is `Waiters`'.

use std::collections::VecDeque;

/// What the queue orders by: the log index an item waits for.
pub(super) trait Indexed {
    /// The log index.
    fn index(&self) -> u64;
}

/// Items (waiters of one term), strictly increasing by index.
#[derive(Debug)]
pub(super) struct IndexQueue<W> {
    q: VecDeque<W>,
}

impl<W> Default for IndexQueue<W> {
    fn default() -> Self {
        IndexQueue { q: VecDeque::new() }
    }
}

impl<W: Indexed> IndexQueue<W> {
    /// Adds `w`; returns the waiter it replaces (one at the same index), if any.
    pub(super) fn insert(&mut self, w: W) -> Option<W> {
        if self.q.back().map_or(true, |b| b.index() < w.index()) {
            self.q.push_back(w);
            return None;
        }
        match self.q.binary_search_by_key(&w.index(), |x| x.index()) {
            Ok(at) => self.q.get_mut(at).map(|slot| std::mem::replace(slot, w)),
            Err(at) => {
                self.q.insert(at, w);
                None
            }
        }
    }

    /// Removes and returns the first waiter if its index is at most `hi`.
    pub(super) fn pop_upto(&mut self, hi: u64) -> Option<W> {
        self.pop_front_if(|w| w.index() <= hi)
    }

    /// Removes and returns the first waiter if `expired` says so.
    pub(super) fn pop_front_if(&mut self, expired: impl FnOnce(&W) -> bool) -> Option<W> {
        if expired(self.q.front()?) {
            self.q.pop_front()
        } else {
            None
        }
    }

    /// Removes every waiter, in index order.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.q.drain(..)
    }

    /// Whether no waiter is left.
    pub(super) fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The waiters, in index order.
    pub(super) fn into_waiters(self) -> impl Iterator<Item = W> {
        self.q.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W {
        index: u64,
        handle: u32,
    }

    impl Indexed for W {
        fn index(&self) -> u64 {
            self.index
        }
    }

    fn w(index: u64, handle: u32) -> W {
        W { index, handle }
    }

    fn order(q: &IndexQueue<W>) -> Vec<(u64, u32)> {
        q.q.iter().map(|x| (x.index, x.handle)).collect()
    }

    /// In order at the back; out of order by index; a second waiter at an index takes
    /// its place and hands the first back; the front leaves up to a bound.
    #[test]
    fn waiters_stay_in_index_order_and_leave_from_the_front() {
        let mut q = IndexQueue::default();
        assert!(q.insert(w(5, 0)).is_none());
        assert!(q.insert(w(7, 1)).is_none());
        assert!(q.insert(w(6, 2)).is_none());
        assert!(q.insert(w(3, 3)).is_none());
        assert_eq!(order(&q), [(3, 3), (5, 0), (6, 2), (7, 1)]);
        assert_eq!(q.insert(w(6, 4)).map(|x| x.handle), Some(2), "replaced");
        assert_eq!(order(&q), [(3, 3), (5, 0), (6, 4), (7, 1)]);
        let upto: Vec<u64> = std::iter::from_fn(|| q.pop_upto(5)).map(|x| x.index).collect();
        assert_eq!(upto, [3, 5]);
        assert!(q.pop_front_if(|x| x.index > 6).is_none());
        assert_eq!(q.pop_front_if(|x| x.index == 6).map(|x| x.handle), Some(4));
        assert_eq!(q.drain().map(|x| x.index).collect::<Vec<_>>(), [7]);
        assert!(q.is_empty());
        assert!(q.pop_upto(u64::MAX).is_none());
    }
}
