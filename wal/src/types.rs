//! Plain values that cross the WAL's API: [`HardState`], [`Entry`], [`Position`].
//!
//! Owns: their definitions only. Never: any I/O or encoding (see `codec`).

/// A group's hard state, stored as three opaque `u64`s. The WAL gives them no meaning:
/// the engine stores its Raft term, vote and commit index here. Only the latest hard
/// state of a group is kept (it is a live record until superseded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// Raft's current term.
    pub term: u64,
    /// The vote granted in `term` (0 for none, by the engine's convention).
    pub vote: u64,
    /// The commit index.
    pub commit: u64,
}

/// One log entry of a group, as read back from the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's log index.
    pub index: u64,
    /// The entry's term.
    pub term: u64,
    /// The payload, opaque to the WAL.
    pub data: Vec<u8>,
}

/// A position in the log: a segment's sequence number and a byte offset in it. Positions
/// order the whole log (lexicographically).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Sequence number of the segment.
    pub seq: u64,
    /// Byte offset inside the segment file.
    pub offset: u64,
}
