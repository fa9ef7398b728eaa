//! The messages replicas exchange, and the log entries and snapshots they carry.
//!
//! Owns the data types only. The wire codec lives with the transport adapter; the rules for
//! handling each message live in `raft.rs`.

use bytes::Bytes;

use super::conf::{ConfChange, ConfState};
use super::types::ReplicaId;
use crate::session::SessionHeader;

/// What a log entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryPayload {
    /// The entry a new leader appends at the start of its term (Raft §8 / thesis §6.4):
    /// committing it commits everything before it and lets reads be served.
    Noop,
    /// Application data, opaque to Raft.
    Normal(Bytes),
    /// A membership change; takes effect when applied.
    ConfChange(ConfChange),
    /// A client-session operation ([`crate::session`]) and, for a proposal in a session,
    /// its data. Application data to Raft, like `Normal`; kept apart so it can never be
    /// confused with a plain proposal's bytes.
    Session {
        /// The operation and the leader's time stamp.
        header: SessionHeader,
        /// The proposal's bytes (empty for register and close).
        data: Bytes,
    },
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The leader's term when the entry was created.
    pub term: u64,
    /// The entry's position in the log (first entry is 1).
    pub index: u64,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// Fixed per-entry overhead counted in byte limits (term, index, kind, length).
pub const ENTRY_OVERHEAD: usize = 24;

impl EntryPayload {
    /// The application's bytes in a proposal (a data or session entry; 0 otherwise): what
    /// `Config::max_uncommitted_bytes` counts.
    pub fn proposal_bytes(&self) -> usize {
        match self {
            EntryPayload::Normal(d) | EntryPayload::Session { data: d, .. } => d.len(),
            EntryPayload::Noop | EntryPayload::ConfChange(_) => 0,
        }
    }
}

impl Entry {
    /// Bytes this entry counts for in flow-control and batching limits.
    pub fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Normal(d) => d.len(),
                EntryPayload::ConfChange(cc) => 16 + 24 * cc.changes.len(),
                EntryPayload::Session { data, .. } => 40 + data.len(),
            }
    }
}

/// The state that must be durable before a replica acts on it: the current term, the
/// replica voted for in it, and the highest index known committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// The replica voted for in `term`, or `0` for none.
    pub vote: ReplicaId,
    /// Highest log index known committed.
    pub commit: u64,
}

/// Describes a snapshot: the last index and term it covers and the full configuration at
/// that index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// The configuration in force at `index`.
    pub conf: ConfState,
}

/// A complete snapshot to install: metadata and the state machine's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Index, term and configuration.
    pub meta: SnapshotMeta,
    /// The state machine's data, opaque to Raft.
    pub data: Bytes,
}

/// One chunk of an InstallSnapshot stream. The chunks of one snapshot share the leader's
/// term (in the enclosing [`Message`]) and `meta.index`; `seq` counts from 0 and `last`
/// marks the final chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot this chunk belongs to.
    pub meta: SnapshotMeta,
    /// Position of this chunk in the stream, from 0.
    pub seq: u32,
    /// Byte offset of `data` in the snapshot. Chunks of two streams of one snapshot (a
    /// retry racing the stream it replaces) never splice, whatever their boundaries.
    pub offset: u64,
    /// Whether this is the final chunk.
    pub last: bool,
    /// The chunk's bytes.
    pub data: Bytes,
}

/// A message between two replicas of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: ReplicaId,
    /// Receiver.
    pub to: ReplicaId,
    /// The sender's term (for a PreVote request: the term it would campaign in).
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message and their fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageBody {
    /// AppendEntries (Raft §5.3): entries following (`prev_index`, `prev_term`).
    Append {
        /// Index of the entry before `entries`.
        prev_index: u64,
        /// Term of the entry at `prev_index`.
        prev_term: u64,
        /// Entries to append (may be empty: a probe or a commit update).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// A leader's new commit index for a follower that has acknowledged every committed
    /// entry (its match is at least `commit`, so its log holds them: Raft §5.3's log
    /// matching). Unanswered: it carries nothing to acknowledge. Sent instead of an empty
    /// `Append` when the commit index advanced and nothing else is left to send, which
    /// saves the follower's answer and the leader's turn to take it.
    Commit {
        /// The leader's commit index (at most the follower's match).
        commit: u64,
    },
    /// Answer to `Append` or to a snapshot.
    AppendResponse {
        /// Accepted: the last index now matching (durable). Rejected: the `prev_index`
        /// that did not match.
        index: u64,
        /// Whether the append was rejected.
        reject: bool,
        /// On reject: the follower's hint of where its log may match (fast backtracking).
        reject_hint: u64,
        /// On reject: the follower's term at `reject_hint` (0 if unknown).
        hint_term: u64,
    },
    /// Leader heartbeat. `commit` is clamped to the follower's match so it never commits a
    /// diverged tail; `round` is echoed back and confirms ReadIndex requests.
    Heartbeat {
        /// min(leader commit, follower's match).
        commit: u64,
        /// The leader's heartbeat round number.
        round: u64,
        /// The leader quiesced the group: every follower acknowledged `commit` as the final
        /// commit index. A follower that can quiesce too does so without answering; one
        /// that cannot answers as usual, which wakes the leader.
        quiesce: bool,
    },
    /// Answer to `Heartbeat`, echoing its round.
    HeartbeatResponse {
        /// The round being answered.
        round: u64,
    },
    /// RequestVote (Raft §5.2), or a PreVote probe (thesis §9.6).
    RequestVote {
        /// A PreVote: grants change no state.
        pre_vote: bool,
        /// The candidate's last log index.
        last_index: u64,
        /// The candidate's last log term.
        last_term: u64,
        /// Sent because of TimeoutNow: voters honour it despite their leader lease.
        transfer: bool,
        /// The candidate's commit index; a voter whose log holds (`commit`, `commit_term`)
        /// commits up to it (see `RequestVoteResponse::commit`).
        commit: u64,
        /// Term of the entry at `commit` (0 if unknown).
        commit_term: u64,
    },
    /// Answer to `RequestVote`.
    RequestVoteResponse {
        /// Answer to a PreVote.
        pre_vote: bool,
        /// Whether the vote was refused.
        reject: bool,
        /// The voter's commit index. A candidate whose log holds the entry (`commit`,
        /// `commit_term`) commits up to it (log matching makes the prefixes equal). With no
        /// leader, this is how replicas whose applied configuration is stale learn that a
        /// membership change committed; without it an election can deadlock (e.g. the
        /// longest log is on a replica that is not a voter in its own stale view).
        commit: u64,
        /// Term of the entry at `commit` (0 if unknown).
        commit_term: u64,
    },
    /// Leadership transfer: the receiver campaigns at once (thesis §3.10).
    TimeoutNow,
    /// A follower forwards a ReadIndex request to its leader.
    ReadIndex {
        /// The follower's context for the read.
        ctx: u64,
    },
    /// The leader's answer to a forwarded read: serve it once applied >= `index`.
    ReadIndexResponse {
        /// The follower's context for the read.
        ctx: u64,
        /// The read index confirmed by the leader.
        index: u64,
    },
    /// Emitted by a leader for its runtime: stream the stored snapshot described by `meta`
    /// to `to` as [`MessageBody::SnapshotChunk`]s, then call `Raft::report_snapshot`.
    /// Never sent on the wire as is.
    SendSnapshot {
        /// The snapshot to send (the leader's latest compaction point).
        meta: SnapshotMeta,
    },
    /// One chunk of an InstallSnapshot stream.
    SnapshotChunk(SnapshotChunk),
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::Commit { .. } => "Commit",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::SendSnapshot { .. } => "SendSnapshot",
            MessageBody::SnapshotChunk(_) => "SnapshotChunk",
        }
    }
}

/// A linearizable read that may be served once the state machine has applied `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's context, as passed to `Raft::read_index`.
    pub ctx: u64,
    /// Serve the read once applied >= `index`.
    pub index: u64,
}
