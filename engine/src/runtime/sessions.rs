//! The runtime's side of client sessions: the time stamp a leader puts into session
//! entries ([`session_stamp_ms`]) and what the apply
//! thread does with a session entry ([`session_step`]) on the group's
//! [`SessionTable`].
//!
//! Owns the stamp clock and the translation of the table's decisions into outcomes.
//! Never calls a state machine (the apply thread does) and never decides duplicates or
//! expiry itself (the table does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::waiters::Outcome;
use crate::api::SessionRefusal;
use crate::session::{Decision, SessionHeader, SessionLimits, SessionOp, SessionTable};

/// The last stamp handed out in this process.
static LAST_STAMP_MS: AtomicU64 = AtomicU64::new(0);

/// The time stamped into a session entry: the wall clock in milliseconds since the Unix
/// epoch (comparable across nodes, unlike a boot clock), never below a stamp handed out
/// before in this process. Groups' tables take the largest stamp applied, so a leader
/// whose clock is behind never moves a group's time back.
pub(super) fn session_stamp_ms() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    LAST_STAMP_MS.fetch_max(now, Ordering::Relaxed).max(now)
}

/// What the apply thread does with a session entry.
pub(super) enum SessionStep {
    /// Apply the entry's data to the state machine, then record its result as the answer
    /// of (`session`, `seq`).
    Apply { session: u64, seq: u64 },
    /// Do not apply the data: the entry's outcome is this.
    Answer(Outcome),
}

/// `EngineConfig::session_ttl`'s bounds in ms, which a register entry's TTL is clamped to.
const MIN_TTL_MS: u64 = crate::api::MIN_SESSION_TTL.as_millis() as u64;
const MAX_TTL_MS: u64 = crate::api::MAX_SESSION_TTL.as_millis() as u64;
use crate::api::MAX_SESSIONS;

/// Runs a session entry at `index` through `table` (`supported`: the state machine
/// holds sessions, see `StateMachine::supports_sessions`).
pub(super) fn session_step(
    table: &mut SessionTable,
    supported: bool,
    index: u64,
    h: &SessionHeader,
) -> SessionStep {
    if !supported {
        return SessionStep::Answer(Outcome::Refused(SessionRefusal::NotSupported));
    }
    match h.op {
        SessionOp::Register { ttl_ms, max_sessions } => {
            // Clamped to the bounds `EngineConfig` validates (constants, so every replica
            // applies the same): the entry comes from whichever leader wrote it, and a
            // leader carrying `max_sessions = u64::MAX` or an endless TTL must not turn
            // off eviction and expiry.
            let limits = SessionLimits {
                ttl_ms: ttl_ms.clamp(MIN_TTL_MS, MAX_TTL_MS),
                max_sessions: max_sessions.clamp(1, MAX_SESSIONS),
            };
            table.register(index, h.stamp_ms, limits);
            SessionStep::Answer(Outcome::Applied(crate::api::encode_session_id(index)))
        }
        SessionOp::Close { session } => {
            if table.close(session, h.stamp_ms) {
                SessionStep::Answer(Outcome::Applied(Bytes::new()))
            } else {
                SessionStep::Answer(Outcome::Refused(SessionRefusal::Unknown))
            }
        }
        SessionOp::Propose { session, seq, floor } => match table.apply(session, seq, floor, h.stamp_ms) {
            Decision::Apply => SessionStep::Apply { session, seq },
            Decision::Duplicate(r) => SessionStep::Answer(Outcome::Applied(r)),
            Decision::Acked => SessionStep::Answer(Outcome::Refused(SessionRefusal::Acked)),
            Decision::Unknown => SessionStep::Answer(Outcome::Refused(SessionRefusal::Unknown)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register entry's limits are clamped to the configuration's bounds: a leader that
    /// writes `max_sessions = u64::MAX` or an endless TTL does not turn off eviction or
    /// expiry on the replicas that apply it (the same on each: the bounds are constants).
    #[test]
    fn register_limits_are_clamped_to_the_configured_bounds() {
        let mut t = SessionTable::new();
        let h = |ttl_ms, max_sessions| SessionHeader {
            op: SessionOp::Register { ttl_ms, max_sessions },
            stamp_ms: 1000,
        };
        session_step(&mut t, true, 5, &h(u64::MAX, u64::MAX));
        assert_eq!(t.limits(), SessionLimits { ttl_ms: MAX_TTL_MS, max_sessions: MAX_SESSIONS });
        session_step(&mut t, true, 6, &h(0, 0));
        assert_eq!(t.limits(), SessionLimits { ttl_ms: MIN_TTL_MS, max_sessions: 1 });
        assert_eq!(t.len(), 1, "one session at most: the older one was evicted");
    }
}
