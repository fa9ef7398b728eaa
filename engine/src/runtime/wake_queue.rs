//! The queue of quiesced groups that node liveness asks to wake, and its rate limit: at
//! most `EngineConfig::max_wakes_per_tick` wakes per tick, oldest request first, so a
//! peer going down never wakes thousands of groups in one tick.
//!
//! Owns only the queue and the limit. Never looks at a group: the caller's `wake` closure
//! says whether a queued group was woken (a group gone or awake already is dropped from
//! the queue without counting against the limit).

use std::collections::VecDeque;

/// Quiesced groups to wake, in the order they were asked for.
#[derive(Default)]
pub(super) struct WakeQueue {
    queue: VecDeque<u64>,
}

impl WakeQueue {
    /// Queues `group` for waking.
    pub(super) fn push(&mut self, group: u64) {
        self.queue.push_back(group);
    }

    /// Takes queued groups oldest first and calls `wake` on each until `max` were woken
    /// (`wake` returned `true`) or the queue is empty; the rest wait for the next call.
    /// Returns the number woken.
    pub(super) fn wake_up_to(&mut self, max: u32, mut wake: impl FnMut(u64) -> bool) -> u64 {
        let mut woken = 0u64;
        while woken < u64::from(max) {
            let Some(gid) = self.queue.pop_front() else { break };
            if wake(gid) {
                woken += 1;
            }
        }
        woken
    }

    /// Whether no group is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Groups queued.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_at_most_max_per_call_oldest_first() {
        let mut q = WakeQueue::default();
        for g in 1..=10 {
            q.push(g);
        }
        let mut seen = Vec::new();
        assert_eq!(
            q.wake_up_to(4, |g| {
                seen.push(g);
                true
            }),
            4
        );
        assert_eq!(seen, vec![1, 2, 3, 4]);
        assert_eq!(q.len(), 6);
        seen.clear();
        assert_eq!(
            q.wake_up_to(4, |g| {
                seen.push(g);
                true
            }),
            4
        );
        assert_eq!(seen, vec![5, 6, 7, 8]);
        assert_eq!(q.wake_up_to(4, |_| true), 2);
        assert_eq!(q.len(), 0);
        assert_eq!(q.wake_up_to(4, |_| panic!("nothing queued")), 0);
    }

    #[test]
    fn groups_not_woken_do_not_count_and_leave_the_queue() {
        let mut q = WakeQueue::default();
        for g in 1..=6 {
            q.push(g);
        }
        // Odd groups are gone or awake already: skipped, not counted.
        let mut woken = Vec::new();
        let n = q.wake_up_to(2, |g| {
            let ok = g % 2 == 0;
            if ok {
                woken.push(g);
            }
            ok
        });
        assert_eq!(n, 2);
        assert_eq!(woken, vec![2, 4]);
        // 1 and 3 were dropped; 5 and 6 wait.
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_zero_limit_wakes_nothing_and_keeps_the_queue() {
        let mut q = WakeQueue::default();
        q.push(7);
        assert_eq!(q.wake_up_to(0, |_| panic!("must not wake")), 0);
        assert_eq!(q.len(), 1);
    }
}
