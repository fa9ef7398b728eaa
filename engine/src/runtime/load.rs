//! Per-group load as exponentially weighted rates (issue 15 point 1): the meter one
//! replica carries ([`LoadMeter`]) and the decay rule ([`Ewma`]).
//!
//! Owns the arithmetic. Events are plain adds on counters of the current fold interval,
//! done by the thread that owns the replica (its worker); at the first event or read after
//! an interval ends, the interval's counts are folded into the rates, and every whole
//! interval that passed without events decays them once more. Folding lazily that way gives
//! exactly the rates folding at every interval boundary gives, so an idle replica needs no
//! timer. Never reads a clock (the caller passes the time, nanoseconds of
//! `clock::now_nanos`), never locks and never shares: a meter is touched by one thread.

use crate::api::GroupLoad;

/// Past this many idle intervals, rates are zero (2^-64 of anything measured).
const DECAYED_INTERVALS: u64 = 64 * 1024;

/// A rate below this (events or seconds per second) counts as nothing: a meter whose rates
/// are all below it and that counted nothing since is dropped (`LoadMeter::is_idle`).
pub(crate) const IDLE_RATE: f64 = 1e-6;

/// The decay rule: intervals of `interval` nanoseconds, each multiplying the rates by
/// `decay` = 2^(-interval / half_life) and adding the interval's own rate times
/// `1 - decay`. A steady rate `r` is reached as `r * (1 - 2^(-t / half_life))`; an idle
/// replica's rates halve every `half_life`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ewma {
    /// The fold interval, in nanoseconds (at least 1).
    pub(crate) interval: u64,
    /// Rates are multiplied by this once per interval.
    decay: f64,
}

impl Ewma {
    /// The rule for a fold interval and half-life (both validated non-zero by
    /// `EngineConfig::validate`; a zero is taken as one nanosecond).
    pub(crate) fn new(interval: std::time::Duration, half_life: std::time::Duration) -> Ewma {
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        let half_life = u64::try_from(half_life.as_nanos()).unwrap_or(u64::MAX).max(1);
        Ewma { interval, decay: (-(interval as f64) / half_life as f64).exp2() }
    }

    /// The factor of `k` intervals.
    fn decay_by(&self, k: u64) -> f64 {
        if k >= DECAYED_INTERVALS {
            return 0.0;
        }
        // k < 65536 fits an i32.
        self.decay.powi(k as i32)
    }
}

/// What one interval counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counts {
    /// Proposals appended by this replica as leader.
    pub(crate) proposals: u64,
    /// Payload bytes of committed entries applied here.
    pub(crate) bytes: u64,
    /// Reads served: ReadIndex barriers taken and local reads answered.
    pub(crate) reads: u64,
    /// Nanoseconds the apply thread spent on this group's entries.
    pub(crate) apply_nanos: u64,
}

/// One replica's load: the current interval's counts and the rates folded so far. About
/// 72 bytes, boxed and held only by replicas that had events (`Group::load`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadMeter {
    /// Start of the current interval, in nanoseconds.
    start: u64,
    /// Counted in the current interval.
    pub(crate) counts: Counts,
    /// Folded rates, per second: proposals, bytes, reads, apply seconds.
    rates: [f64; 4],
}

impl LoadMeter {
    /// A meter whose first interval starts at `now`.
    pub(crate) fn new(now: u64) -> LoadMeter {
        LoadMeter { start: now, counts: Counts::default(), rates: [0.0; 4] }
    }

    /// Folds the intervals that ended by `now` (none if `now` is in the current one):
    /// call before counting an event at `now`.
    #[inline]
    pub(crate) fn roll(&mut self, now: u64, e: &Ewma) {
        if now.saturating_sub(self.start) >= e.interval {
            self.fold(now, e);
        }
    }

    #[cold]
    fn fold(&mut self, now: u64, e: &Ewma) {
        let k = (now - self.start) / e.interval;
        let secs = e.interval as f64 / 1e9;
        let c = self.counts;
        let current = [
            c.proposals as f64 / secs,
            c.bytes as f64 / secs,
            c.reads as f64 / secs,
            c.apply_nanos as f64 / 1e9 / secs,
        ];
        // The interval that counted, then k - 1 without events.
        let rest = e.decay_by(k - 1);
        for (r, x) in self.rates.iter_mut().zip(current) {
            *r = (*r * e.decay + x * (1.0 - e.decay)) * rest;
        }
        self.counts = Counts::default();
        self.start += k * e.interval;
    }

    /// The rates as of `now` (folded lazily on a copy: reading never changes the meter).
    pub(crate) fn view(&self, now: u64, e: &Ewma) -> GroupLoad {
        let mut m = self.clone();
        m.roll(now, e);
        let [proposals, bytes, reads, apply] = m.rates;
        GroupLoad::new(proposals, bytes, reads, apply)
    }

    /// Nothing counted in the current interval and every rate below [`IDLE_RATE`] (call
    /// after [`LoadMeter::roll`]): the meter can be dropped.
    pub(crate) fn is_idle(&self) -> bool {
        self.counts == Counts::default() && self.rates.iter().all(|r| *r < IDLE_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;

    fn ewma() -> Ewma {
        Ewma::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    /// `n` proposals spread over each of `secs` seconds from `t0`, rolled before each.
    fn drive(m: &mut LoadMeter, e: &Ewma, t0: u64, secs: u64, n: u64) -> u64 {
        for s in 0..secs {
            for i in 0..n {
                let now = t0 + s * SEC + i * SEC / n;
                m.roll(now, e);
                m.counts.proposals += 1;
                m.counts.bytes += 100;
            }
        }
        t0 + secs * SEC
    }

    #[test]
    fn a_steady_rate_converges_to_the_rate() {
        let e = ewma();
        let mut m = LoadMeter::new(0);
        // 100/s for 100 s = 10 half-lives: within 0.1% of the rate.
        let end = drive(&mut m, &e, 0, 100, 100);
        let v = m.view(end, &e);
        assert!((v.proposals_per_sec - 100.0).abs() < 0.1, "{v:?}");
        assert!((v.write_bytes_per_sec - 10_000.0).abs() < 10.0, "{v:?}");
        assert_eq!(v.reads_per_sec, 0.0);
        // After one half-life of the same rate: half of it.
        let mut m = LoadMeter::new(0);
        let end = drive(&mut m, &e, 0, 10, 100);
        let v = m.view(end, &e);
        assert!((v.proposals_per_sec - 50.0).abs() < 0.01, "{v:?}");
    }

    #[test]
    fn an_idle_meter_halves_every_half_life_and_reaches_zero() {
        let e = ewma();
        let mut m = LoadMeter::new(0);
        let end = drive(&mut m, &e, 0, 100, 100);
        let r0 = m.view(end, &e).proposals_per_sec;
        let r1 = m.view(end + 10 * SEC, &e).proposals_per_sec;
        let r2 = m.view(end + 20 * SEC, &e).proposals_per_sec;
        assert!((r1 / r0 - 0.5).abs() < 1e-9, "{r0} {r1}");
        assert!((r2 / r0 - 0.25).abs() < 1e-9, "{r0} {r2}");
        // Reading never changed the meter.
        assert_eq!(m.view(end, &e).proposals_per_sec, r0);
        let mut late = m.clone();
        late.roll(end + 2000 * SEC, &e);
        assert!(late.is_idle());
        assert!(!m.is_idle());
        let mut gone = m;
        gone.roll(end + DECAYED_INTERVALS * SEC, &e);
        assert_eq!(gone.view(end + DECAYED_INTERVALS * SEC, &e), GroupLoad::default());
    }

    #[test]
    fn folding_lazily_equals_folding_every_interval() {
        let e = Ewma::new(Duration::from_millis(10), Duration::from_millis(700));
        let mut lazy = LoadMeter::new(3);
        let mut eager = LoadMeter::new(3);
        // Bursts with gaps of many intervals between them; the eager meter also folds at
        // every interval boundary (as a per-tick timer would).
        let ms = 1_000_000;
        let mut now = 3;
        for burst in 0..40u64 {
            for i in 0..(burst % 7) * 5 {
                now += (i % 3) * ms;
                lazy.roll(now, &e);
                lazy.counts.reads += 1;
                lazy.counts.apply_nanos += 20_000;
                eager.roll(now, &e);
                eager.counts.reads += 1;
                eager.counts.apply_nanos += 20_000;
            }
            let gap = (burst * 37 % 11) * 10 * ms + 5 * ms;
            let tick_end = now + gap;
            let mut t = now;
            while t < tick_end {
                t += 10 * ms;
                eager.roll(t.min(tick_end), &e);
            }
            now = tick_end;
            let (a, b) = (lazy.view(now, &e), eager.view(now, &e));
            assert!(
                (a.reads_per_sec - b.reads_per_sec).abs() <= 1e-9 * b.reads_per_sec.max(1.0),
                "{a:?} {b:?}"
            );
            assert!((a.apply_secs_per_sec - b.apply_secs_per_sec).abs() <= 1e-12, "{a:?} {b:?}");
        }
        assert!(lazy.view(now, &e).reads_per_sec > 0.0);
    }

    #[test]
    fn apply_time_is_a_utilization() {
        let e = Ewma::new(Duration::from_millis(100), Duration::from_millis(100));
        let mut m = LoadMeter::new(0);
        // 50 ms of apply in every 100 ms interval, for 40 half-lives.
        for i in 0..40 {
            m.roll(i * SEC / 10, &e);
            m.counts.apply_nanos += 50_000_000;
        }
        let v = m.view(4 * SEC, &e);
        assert!((v.apply_secs_per_sec - 0.5).abs() < 1e-6, "{v:?}");
    }
}
