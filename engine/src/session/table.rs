//! The session table of one group: which sessions are live, the answers of their applied
//! proposals at or above each session's floor, and the replicated clock. The same
//! sequence of calls gives the same table and the same decisions on every replica.
//!
//! Owns the rules: duplicate detection, the floor, expiry by the replicated clock and the
//! least-recently-active eviction past the bound. Never does I/O, reads a clock or calls
//! a state machine: the caller (the apply thread) applies what [`Decision::Apply`] lets
//! through and hands the result back with [`SessionTable::record`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// The most answers a session keeps. Recording past it forgets the lowest one and raises
/// the session's floor above it (a retry of that proposal is then [`Decision::Acked`]):
/// a caller keeps fewer proposals than this in flight per session.
pub const MAX_RESPONSES_PER_SESSION: usize = 1024;

/// The limits the table applies, adopted from the last register entry applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session inactive for longer than this (replicated milliseconds) expires.
    pub ttl_ms: u64,
    /// The most sessions kept.
    pub max_sessions: u64,
}

impl Default for SessionLimits {
    /// One hour, 10,000 sessions (the engine's configuration defaults).
    fn default() -> Self {
        SessionLimits { ttl_ms: 3_600_000, max_sessions: 10_000 }
    }
}

/// What to do with a proposal in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// First time seen: apply it, then [`SessionTable::record`] its result.
    Apply,
    /// Applied before: answer with its first result, do not apply it again.
    Duplicate(Bytes),
    /// Its sequence is below the session's floor: it was answered and its answer is
    /// forgotten. Not applied.
    Acked,
    /// The session expired, was evicted, closed or never registered. Not applied.
    Unknown,
}

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionState {
    /// The replicated time it was last used at.
    pub(crate) last_active: u64,
    /// Answers below this sequence are forgotten.
    pub(crate) floor: u64,
    /// Answers of applied proposals at or above the floor, by sequence.
    pub(crate) responses: BTreeMap<u64, Bytes>,
}

/// The sessions of one group (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionTable {
    pub(crate) sessions: BTreeMap<u64, SessionState>,
    /// (last_active, id) of every session: the eviction order.
    pub(crate) by_activity: BTreeSet<(u64, u64)>,
    /// The largest stamp applied.
    pub(crate) clock_ms: u64,
    pub(crate) limits: SessionLimits,
}

impl SessionTable {
    /// An empty table with the default limits and clock 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The replicated clock: the largest stamp applied.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The limits in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `session` is live (it may still expire at its next use).
    pub fn contains(&self, session: u64) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Answers kept for `session`.
    pub fn responses(&self, session: u64) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.responses.len())
    }

    fn advance(&mut self, stamp_ms: u64) {
        self.clock_ms = self.clock_ms.max(stamp_ms);
    }

    fn expired(&self, s: &SessionState) -> bool {
        self.clock_ms.saturating_sub(s.last_active) > self.limits.ttl_ms
    }

    fn remove(&mut self, session: u64) -> bool {
        match self.sessions.remove(&session) {
            Some(s) => {
                self.by_activity.remove(&(s.last_active, session));
                true
            }
            None => false,
        }
    }

    /// Registers session `session` (the register entry's index) at `stamp_ms`, adopting
    /// `limits`; then drops expired sessions and, past `max_sessions`, the least recently
    /// active ones (the oldest id first among equals). Returns the sessions dropped.
    pub fn register(&mut self, session: u64, stamp_ms: u64, limits: SessionLimits) -> Vec<u64> {
        self.advance(stamp_ms);
        self.limits = limits;
        let now = self.clock_ms;
        if let std::collections::btree_map::Entry::Vacant(v) = self.sessions.entry(session) {
            v.insert(SessionState { last_active: now, floor: 0, responses: BTreeMap::new() });
            self.by_activity.insert((now, session));
        }
        let mut dropped = Vec::new();
        // Expired first, oldest activity first; stop at the first live one.
        while let Some(&(at, id)) = self.by_activity.first() {
            if now.saturating_sub(at) <= self.limits.ttl_ms {
                break;
            }
            self.remove(id);
            dropped.push(id);
        }
        let max = usize::try_from(self.limits.max_sessions.max(1)).unwrap_or(usize::MAX);
        while self.sessions.len() > max {
            let Some(&(_, id)) = self.by_activity.first() else { break };
            self.remove(id);
            dropped.push(id);
        }
        dropped
    }

    /// Decides a proposal (`session`, `seq`) whose caller has answers below `floor`, at
    /// `stamp_ms`. A live session is touched (its activity is now) and forgets its answers
    /// below `floor`; an expired one is dropped.
    pub fn apply(&mut self, session: u64, seq: u64, floor: u64, stamp_ms: u64) -> Decision {
        self.advance(stamp_ms);
        let now = self.clock_ms;
        let expired = match self.sessions.get(&session) {
            None => return Decision::Unknown,
            Some(s) => self.expired(s),
        };
        if expired {
            self.remove(session);
            return Decision::Unknown;
        }
        let Some(s) = self.sessions.get_mut(&session) else { return Decision::Unknown };
        self.by_activity.remove(&(s.last_active, session));
        s.last_active = now;
        self.by_activity.insert((now, session));
        if floor > s.floor {
            s.floor = floor;
            s.responses = s.responses.split_off(&floor);
        }
        if seq < s.floor {
            return Decision::Acked;
        }
        match s.responses.get(&seq) {
            Some(r) => Decision::Duplicate(r.clone()),
            None => Decision::Apply,
        }
    }

    /// Records the result of (`session`, `seq`), which [`SessionTable::apply`] just let
    /// through. Past [`MAX_RESPONSES_PER_SESSION`] the lowest answer is forgotten and the
    /// floor raised above it. Does nothing for a session that is not live.
    pub fn record(&mut self, session: u64, seq: u64, result: Bytes) {
        let Some(s) = self.sessions.get_mut(&session) else { return };
        if seq < s.floor {
            return;
        }
        s.responses.insert(seq, result);
        while s.responses.len() > MAX_RESPONSES_PER_SESSION {
            let Some((lowest, _)) = s.responses.pop_first() else { break };
            s.floor = s.floor.max(lowest + 1);
        }
    }

    /// Closes `session` at `stamp_ms`; returns whether it was live.
    pub fn close(&mut self, session: u64, stamp_ms: u64) -> bool {
        self.advance(stamp_ms);
        self.remove(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim(ttl_ms: u64, max_sessions: u64) -> SessionLimits {
        SessionLimits { ttl_ms, max_sessions }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_retry_gets_the_first_result_and_is_not_applied_again() {
        let mut t = SessionTable::new();
        t.register(5, 100, lim(1000, 10));
        assert_eq!(t.apply(5, 1, 1, 110), Decision::Apply);
        t.record(5, 1, b("one"));
        assert_eq!(t.apply(5, 1, 1, 120), Decision::Duplicate(b("one")));
        assert_eq!(t.apply(5, 2, 1, 130), Decision::Apply);
        t.record(5, 2, b("two"));
        assert_eq!(t.apply(5, 2, 1, 130), Decision::Duplicate(b("two")));
        assert_eq!(t.apply(5, 1, 1, 130), Decision::Duplicate(b("one")));
    }

    #[test]
    fn the_floor_forgets_answers_below_it() {
        let mut t = SessionTable::new();
        t.register(1, 0, lim(1000, 10));
        for seq in 1..=3 {
            assert_eq!(t.apply(1, seq, 1, 0), Decision::Apply);
            t.record(1, seq, b("r"));
        }
        assert_eq!(t.responses(1), 3);
        // The caller has answers for 1 and 2.
        assert_eq!(t.apply(1, 4, 3, 0), Decision::Apply);
        assert_eq!(t.responses(1), 1);
        assert_eq!(t.apply(1, 2, 3, 0), Decision::Acked);
        assert_eq!(t.apply(1, 3, 3, 0), Decision::Duplicate(b("r")));
        // A floor never goes down.
        assert_eq!(t.apply(1, 2, 1, 0), Decision::Acked);
    }

    #[test]
    fn unknown_and_closed_sessions_are_refused() {
        let mut t = SessionTable::new();
        assert_eq!(t.apply(9, 1, 1, 0), Decision::Unknown);
        t.register(9, 0, lim(1000, 10));
        assert!(t.close(9, 0));
        assert!(!t.close(9, 0));
        assert_eq!(t.apply(9, 1, 1, 0), Decision::Unknown);
    }

    #[test]
    fn a_session_expires_by_the_replicated_clock_only() {
        let mut t = SessionTable::new();
        t.register(1, 1000, lim(100, 10));
        t.register(2, 1000, lim(100, 10));
        assert_eq!(t.apply(1, 1, 1, 1100), Decision::Apply);
        // A smaller stamp (another leader's clock behind) does not move the clock back.
        assert_eq!(t.apply(1, 2, 1, 500), Decision::Apply);
        assert_eq!(t.clock_ms(), 1100);
        // Session 2 was last active at 1000: at 1101 it is past its TTL.
        assert_eq!(t.apply(2, 1, 1, 1101), Decision::Unknown);
        assert!(!t.contains(2));
        // Session 1 (active at 1100) lives until 1200 inclusive.
        assert_eq!(t.apply(1, 3, 1, 1200), Decision::Apply);
        t.register(3, 1301, lim(100, 10));
        assert!(!t.contains(1));
        assert!(t.contains(3));
    }

    #[test]
    fn registering_past_the_bound_evicts_the_least_recently_active() {
        let mut t = SessionTable::new();
        t.register(1, 10, lim(1000, 2));
        t.register(2, 20, lim(1000, 2));
        // Session 1 used after 2 was registered: 2 is now the least recently active.
        assert_eq!(t.apply(1, 1, 1, 30), Decision::Apply);
        let dropped = t.register(3, 40, lim(1000, 2));
        assert_eq!(dropped, vec![2]);
        assert!(t.contains(1) && t.contains(3) && !t.contains(2));
        assert_eq!(t.apply(2, 1, 1, 50), Decision::Unknown);
        // Session 1 (active at 30) is now older than 3 (40).
        assert_eq!(t.register(4, 40, lim(1000, 2)), vec![1]);
        // Equal activity: the oldest id goes first.
        let mut t = SessionTable::new();
        t.register(7, 5, lim(1000, 2));
        t.register(8, 5, lim(1000, 2));
        assert_eq!(t.register(9, 5, lim(1000, 2)), vec![7]);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn answers_per_session_are_bounded() {
        let mut t = SessionTable::new();
        t.register(1, 0, lim(1000, 10));
        let n = MAX_RESPONSES_PER_SESSION as u64 + 5;
        for seq in 1..=n {
            assert_eq!(t.apply(1, seq, 1, 0), Decision::Apply);
            t.record(1, seq, b("r"));
        }
        assert_eq!(t.responses(1), MAX_RESPONSES_PER_SESSION);
        assert_eq!(t.apply(1, 5, 1, 0), Decision::Acked);
        assert_eq!(t.apply(1, 6, 1, 0), Decision::Duplicate(b("r")));
    }

    /// One step of a random workload.
    #[derive(Debug, Clone)]
    enum Step {
        Register(u64),
        Propose { session: u64, seq: u64, stamp: u64 },
        Close(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..50).prop_map(Step::Register),
            (1u64..8, 1u64..6, 0u64..50).prop_map(|(session, seq, stamp)| Step::Propose {
                session,
                seq,
                stamp
            }),
            (1u64..8).prop_map(Step::Close),
        ]
    }

    proptest! {
        /// Against a model: a (session, seq) is applied at most once while its session
        /// lives, every duplicate gets the first result, and two tables fed the same steps
        /// (two replicas) end equal, also through an encode/decode.
        #[test]
        fn exactly_once_and_deterministic(steps in proptest::collection::vec(step(), 1..200)) {
            let mut a = SessionTable::new();
            let mut replica = SessionTable::new();
            let mut applied: BTreeMap<(u64, u64), Bytes> = BTreeMap::new();
            let mut next_id = 1u64;
            let mut clock = 0u64;
            for (i, s) in steps.iter().enumerate() {
                match *s {
                    Step::Register(dt) => {
                        clock += dt;
                        // Ids grow like log indexes; small ones are reused by propose steps.
                        let id = next_id;
                        next_id += 1;
                        a.register(id, clock, lim(60, 4));
                        replica.register(id, clock, lim(60, 4));
                        prop_assert!(a.len() <= 4);
                        for (sid, seq) in applied.keys().copied().collect::<Vec<_>>() {
                            if !a.contains(sid) {
                                applied.remove(&(sid, seq));
                            }
                        }
                    }
                    Step::Propose { session, seq, stamp } => {
                        clock += stamp % 7;
                        let d = a.apply(session, seq, 1, clock);
                        prop_assert_eq!(&d, &replica.apply(session, seq, 1, clock));
                        match d {
                            Decision::Apply => {
                                prop_assert!(!applied.contains_key(&(session, seq)), "applied twice");
                                let r = Bytes::from(format!("{i}"));
                                a.record(session, seq, r.clone());
                                replica.record(session, seq, r.clone());
                                applied.insert((session, seq), r);
                            }
                            Decision::Duplicate(r) => {
                                prop_assert_eq!(applied.get(&(session, seq)), Some(&r));
                            }
                            Decision::Acked => prop_assert!(false, "floor 1 never acks"),
                            Decision::Unknown => {
                                prop_assert!(!a.contains(session));
                                applied.retain(|k, _| k.0 != session);
                            }
                        }
                    }
                    Step::Close(session) => {
                        a.close(session, clock);
                        replica.close(session, clock);
                        applied.retain(|k, _| k.0 != session);
                    }
                }
                prop_assert_eq!(&a, &replica);
            }
            // Encoding round trips over random tables: `codec.rs`'s
            // `random_tables_round_trip` (the codec depends on the table, not the reverse).
        }
    }
}
