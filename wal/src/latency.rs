//! A lock-free latency histogram with power-of-two buckets ([`LatencyHistogram`]) and its
//! point-in-time copy ([`LatencySnapshot`]), for the WAL's group-commit syncs and the
//! engine's apply path.
//!
//! Owns the bucket layout and recording: one relaxed atomic add per bucket, count and sum,
//! so timing costs nanoseconds and never takes a lock. Never exports or formats anything:
//! embedders turn snapshots into their metrics system's histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of a histogram: bucket `i` counts durations of fewer than `2^i` nanoseconds
/// (and at least `2^(i-1)`); the last one also counts everything longer (past ~18 min).
pub const LATENCY_BUCKETS: usize = 41;

/// Durations recorded, by power-of-two bucket, with their count and sum.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// The bucket of a duration of `nanos` nanoseconds: its bit length, capped.
fn bucket_of(nanos: u64) -> usize {
    ((u64::BITS - nanos.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1)
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one duration of `nanos` nanoseconds.
    pub fn record_nanos(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A copy of the counts now (each field read atomically; a recording racing the copy
    /// may show in some fields and not yet in others).
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment (see [`LatencyHistogram`] for the buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Durations per bucket (not cumulative): bucket `i` holds those under `2^i` ns.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Durations recorded.
    pub count: u64,
    /// Their sum, in nanoseconds.
    pub sum_nanos: u64,
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        LatencySnapshot { buckets: [0; LATENCY_BUCKETS], count: 0, sum_nanos: 0 }
    }
}

impl LatencySnapshot {
    /// The exclusive upper bound of bucket `i`, in nanoseconds (`u64::MAX` for the last).
    pub fn upper_bound_nanos(i: usize) -> u64 {
        if i + 1 >= LATENCY_BUCKETS {
            u64::MAX
        } else {
            1u64 << i
        }
    }

    /// How many durations were shorter than `2^i` nanoseconds (the cumulative count up to
    /// and including bucket `i`).
    pub fn count_below(&self, i: usize) -> u64 {
        self.buckets[..=i.min(LATENCY_BUCKETS - 1)].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_power_of_two_bucket() {
        let h = LatencyHistogram::default();
        h.record_nanos(0);
        h.record_nanos(1);
        h.record_nanos(1023);
        h.record_nanos(1024);
        h.record(Duration::from_millis(1));
        h.record(Duration::from_secs(100_000));
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets[0], 1); // 0 ns
        assert_eq!(s.buckets[1], 1); // 1 ns
        assert_eq!(s.buckets[10], 1); // 1023 ns < 2^10
        assert_eq!(s.buckets[11], 1); // 1024 ns
        assert_eq!(s.buckets[20], 1); // 1 ms = 1_000_000 ns < 2^20
        assert_eq!(s.buckets[LATENCY_BUCKETS - 1], 1); // past the last bound
        assert_eq!(s.count_below(10), 3);
        assert_eq!(s.count_below(LATENCY_BUCKETS), 6);
        assert_eq!(s.sum_nanos, 1023 + 1024 + 1 + 1_000_000 + 100_000_000_000_000);
        assert_eq!(LatencySnapshot::upper_bound_nanos(10), 1024);
        assert_eq!(LatencySnapshot::upper_bound_nanos(LATENCY_BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn concurrent_recordings_are_all_counted() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.record_nanos(i * (t + 1));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.snapshot();
        assert_eq!(s.count, 40_000);
        assert_eq!(s.buckets.iter().sum::<u64>(), 40_000);
    }
}
