//! The window of append messages in flight to one follower (flow control).
//!
//! Owns the count and bytes of unacknowledged appends; never sends anything.

use std::collections::VecDeque;

/// Appends sent to one follower and not yet acknowledged, bounded by count and bytes.
#[derive(Debug, Clone, Default)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries), oldest first.
    window: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl Inflights {
    /// Records a sent append whose last entry is `last_index` carrying `bytes`.
    pub fn add(&mut self, last_index: u64, bytes: u64) {
        self.window.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Returns the window's spare capacity (an idle follower has nothing in flight).
    pub fn shrink(&mut self) {
        self.window.shrink_to_fit();
    }

    /// Frees every message whose last index is `<= index` (they are acknowledged).
    pub fn free_to(&mut self, index: u64) {
        while let Some(&(last, b)) = self.window.front() {
            if last > index {
                break;
            }
            self.bytes -= b;
            self.window.pop_front();
        }
    }

    /// Frees the oldest message: a heartbeat answer shows the follower is alive although
    /// the window is full, so the appends that filled it may all have been lost; letting
    /// one more out draws a rejection (or an acceptance) that resynchronizes the window.
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.window.pop_front() {
            self.bytes -= b;
        }
    }

    /// Whether the window allows no further message.
    pub fn full(&self, max_msgs: usize, max_bytes: u64) -> bool {
        self.window.len() >= max_msgs || self.bytes >= max_bytes
    }

    /// Messages in flight.
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// Drops everything (the follower left Replicate state).
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounded_by_count_and_bytes() {
        let mut w = Inflights::default();
        w.add(5, 10);
        w.add(9, 10);
        assert!(w.full(2, 100));
        assert!(!w.full(3, 100));
        assert!(w.full(3, 20));
        w.free_to(5);
        assert_eq!(w.count(), 1);
        assert!(!w.full(2, 20));
        w.free_to(100);
        assert_eq!(w.count(), 0);
    }
}
