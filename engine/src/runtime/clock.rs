//! The clock that leader leases are measured with (`Raft::set_now`).
//!
//! Owns one reading: nanoseconds of `CLOCK_BOOTTIME`, which keeps running while the
//! machine is suspended (`CLOCK_MONOTONIC`, what `std::time::Instant` reads on Linux, stops
//! then, so a leader suspended past its lease would still believe it holds it). On systems
//! without `CLOCK_BOOTTIME` it falls back to `Instant`. Never sleeps, never goes back, and
//! never drives ticks (the worker's tick deadline stays on `Instant`: a tick that runs late
//! only delays elections, which is safe).

/// Nanoseconds since an arbitrary origin (fixed for the process's life), from a clock that
/// keeps running while the process is paused or the machine suspended.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn now_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_BOOTTIME is a clock id every supported kernel (2.6.39+) knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // Never seen in practice; `Instant` is the next best clock (it only stops during
        // suspend, it does not go back).
        return fallback_nanos();
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Nanoseconds since an arbitrary origin, from `Instant` (systems without CLOCK_BOOTTIME).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn now_nanos() -> u64 {
    fallback_nanos()
}

fn fallback_nanos() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock never goes back and follows real time (a 20 ms sleep reads as at least
    /// 20 ms and, on a loaded machine, well under 10 s).
    #[test]
    fn runs_forward_with_real_time() {
        let a = now_nanos();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now_nanos();
        assert!(b >= a + 20_000_000, "{a} -> {b}");
        assert!(b - a < 10_000_000_000, "{a} -> {b}");
    }
}
