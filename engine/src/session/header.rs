//! What a session entry in the log carries: the operation on the session table
//! ([`SessionOp`]) and the proposing leader's time stamp ([`SessionHeader`]).
//!
//! Owns these plain data types. Never encodes them (the transport's codec does) nor
//! decides anything with them (the table does).

/// The operation a session entry asks of the group's session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionOp {
    /// Registers a new session whose id is this entry's index. Carries the proposing
    /// leader's session limits, which the table adopts (so every replica uses the same
    /// limits, whatever its own configuration says).
    Register {
        /// Sessions inactive for longer than this (in replicated milliseconds) expire.
        ttl_ms: u64,
        /// The most sessions kept; registering past it evicts the least recently active.
        max_sessions: u64,
    },
    /// A proposal in a session: its data is the entry's data.
    Propose {
        /// The session's id.
        session: u64,
        /// The proposal's sequence number in the session (from 1).
        seq: u64,
        /// The lowest sequence number the caller has no answer for: the table forgets
        /// the answers below it.
        floor: u64,
    },
    /// Closes a session: its answers are forgotten.
    Close {
        /// The session's id.
        session: u64,
    },
}

/// The session part of a log entry: the operation and the time the proposing leader
/// stamped into it (milliseconds since the Unix epoch, never decreasing on that leader).
/// The table's clock is the largest stamp applied, so every replica sees the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHeader {
    /// What the entry does to the session table.
    pub op: SessionOp,
    /// The proposing leader's time in milliseconds.
    pub stamp_ms: u64,
}
