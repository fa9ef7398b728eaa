//! The read queues of one replica: ReadIndex requests waiting for their heartbeat round,
//! reads forwarded to the leader, lease reads waiting for apply, and the `ReadState`s
//! released for the next `Ready` (Raft thesis §6.4).
//!
//! Owns the data and its bounds only; the `Raft` methods that fill and release the queues
//! are in `raft/read_only.rs`. Never looks at the log, the term or the clock.

use std::collections::VecDeque;

use super::message::ReadState;
use super::types::ReplicaId;

/// A ReadIndex request waiting for its heartbeat round to be confirmed by a quorum.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingRead {
    /// The replica that asked (this leader, or a follower that forwarded the read).
    pub(super) from: ReplicaId,
    pub(super) ctx: u64,
    pub(super) index: u64,
    pub(super) round: u64,
}

/// The ReadIndex queues of a replica (boxed in `Raft`: most replicas are idle).
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Heartbeat rounds sent and the time (`Raft::set_now`) each went (lease reads
    /// only; rounds sent before the clock was first set are not recorded).
    pub(super) round_sent: VecDeque<(u64, u64)>,
    /// Reads that wait for this leader's first commit in its term.
    pub(super) waiting_commit: Vec<(ReplicaId, u64)>,
    /// Reads this follower forwarded to its leader and not yet answered (bounded; only
    /// answers to these are released).
    pub(super) forwarded: VecDeque<u64>,
    /// Reads waiting for their heartbeat round to be confirmed.
    pub(super) pending: VecDeque<PendingRead>,
    /// This leader's own reads accepted under a lease, waiting for applied to reach their
    /// index: the lease is checked again when they are answered (`answer_lease_reads`).
    pub(super) lease_waiting: VecDeque<PendingRead>,
    /// Reads released, for the next `Ready`.
    pub(super) states: Vec<ReadState>,
    /// The latest heartbeat round this leader sent to every member.
    pub(super) full_round: u64,
    /// Voters that answered `full_round`, in the order they answered, until they and
    /// the leader make up a quorum.
    pub(super) answered_full: Vec<ReplicaId>,
    /// The voters of the last full round whose answers completed a quorum first: a round
    /// sent only to confirm reads goes to them (`Config::read_rounds_to_quorum`).
    pub(super) fast: Vec<ReplicaId>,
}

impl Reads {
    /// Reads a leader holds waiting for confirmation: its term's first commit, a
    /// heartbeat round, or apply under a lease (`Config::max_pending_reads`).
    pub(super) fn held(&self) -> usize {
        self.waiting_commit.len() + self.pending.len() + self.lease_waiting.len()
    }

    /// Whether no read waits for anything.
    pub(super) fn is_idle(&self) -> bool {
        self.waiting_commit.is_empty()
            && self.forwarded.is_empty()
            && self.pending.is_empty()
            && self.lease_waiting.is_empty()
            && self.states.is_empty()
    }
}

/// How many forwarded reads a follower remembers; older ones are given up (their callers
/// time out).
pub(super) const MAX_FORWARDED_READS: usize = 4096;

/// How many sent heartbeat rounds are remembered for lease bookkeeping.
pub(super) const ROUND_HISTORY: usize = 64;
