//! The node's wall clock: unix milliseconds, shifted by an offset injected for tests.
//!
//! Owns the time a leader stamps into the write entries it proposes (expiry is computed
//! from the stamp at apply, see [`crate::keyspace`]) and the time a replica judges a read's
//! expiry by. The offset comes from the environment variable [`CLOCK_OFFSET_ENV`], read once
//! at first use; it exists to test clock skew between nodes and is 0 in production. Never
//! touches the data.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Environment variable with the signed offset in milliseconds added to this process's
/// clock (for tests of clock skew only; unset means 0).
pub const CLOCK_OFFSET_ENV: &str = "FLOTILLA_CLOCK_OFFSET_MS";

static OFFSET: OnceLock<i64> = OnceLock::new();

/// The injected offset (0 when unset or unparsable).
pub fn offset_ms() -> i64 {
    *OFFSET
        .get_or_init(|| std::env::var(CLOCK_OFFSET_ENV).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// This node's wall clock in unix milliseconds (with the injected offset).
pub fn now_ms() -> u64 {
    let real = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    real.saturating_add(offset_ms()).max(0) as u64
}
