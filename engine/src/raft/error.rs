//! Typed answers of the core's API: one enum per operation. "Not leader, try there"
//! answers are kept apart from real failures.
//!
//! Owns error types only.

use thiserror::Error;

use super::conf::ConfChangeError;
use super::storage::StorageError;
use super::types::{Replica, ReplicaId};

/// Why a proposal (data or membership change) was refused. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProposeError {
    /// This replica is not the leader; `leader_hint` is the leader it knows of, if any.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica knows of.
        leader_hint: Option<Replica>,
    },
    /// A leadership transfer is in progress; retry at the new leader.
    #[error("leadership transfer to replica {to} in progress")]
    TransferInProgress {
        /// The transfer's target.
        to: ReplicaId,
    },
    /// A membership change is still pending (not yet applied).
    #[error("a membership change is pending; one change at a time")]
    ConfChangePending,
    /// A new leader accepts membership changes only after an entry of its term committed
    /// and every change in its log applied.
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// The membership change is invalid for the current configuration.
    #[error("invalid membership change: {0}")]
    InvalidConfChange(#[from] ConfChangeError),
    /// The leader holds `Config::max_uncommitted_bytes` of proposals not yet handed out
    /// for apply: retry once some commit.
    #[error("{held} bytes of proposals not yet committed and applied (limit {max})")]
    UncommittedFull {
        /// Payload bytes held.
        held: u64,
        /// The limit (`Config::max_uncommitted_bytes`).
        max: u64,
    },
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// This replica is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica knows of.
        leader_hint: Option<Replica>,
    },
    /// The target is this replica, the leader already.
    #[error("replica {0} is already the leader")]
    ToSelf(ReplicaId),
    /// The target is a learner (or only an outgoing voter) and cannot lead.
    #[error("replica {0} is not an incoming voter")]
    NotVoter(ReplicaId),
    /// The target is not a member of the group.
    #[error("replica {0} is not a member of the group")]
    NotMember(ReplicaId),
    /// A membership change is pending: one in the log not yet applied, or a joint
    /// configuration not yet left. A transferee that has not applied a committed change
    /// does not campaign, so the transfer would only block proposals for an election
    /// timeout (TiKV's `pre_transfer_leader` refuses the same). Retry once it is applied.
    #[error("a membership change is pending")]
    ConfChangePending,
}

/// Why a ReadIndex request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadIndexError {
    /// This replica is not the leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica knows of.
        leader_hint: Option<Replica>,
    },
    /// The leader holds `Config::max_pending_reads` reads waiting for confirmation:
    /// retry once some are confirmed.
    #[error("{held} reads waiting for confirmation (limit reached)")]
    Busy {
        /// Reads held.
        held: usize,
    },
}

/// Why a message could not be stepped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StepError {
    /// The message is addressed to another replica.
    #[error("message for replica {to} delivered to replica {me}")]
    WrongRecipient {
        /// The addressee.
        to: ReplicaId,
        /// This replica.
        me: ReplicaId,
    },
    /// A `SendSnapshot` instruction is for the runtime, never stepped.
    #[error("SendSnapshot is a runtime instruction, not a wire message")]
    NotAWireMessage,
    /// The message contradicts itself (a bug or corruption at the sender); it was dropped
    /// and nothing changed.
    #[error("malformed {kind} from replica {from}: {why}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// The sender.
        from: ReplicaId,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Why the log could not be compacted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CompactError {
    /// Only applied entries may be compacted.
    #[error("cannot compact to {index}: only {applied} is applied")]
    NotApplied {
        /// Requested index.
        index: u64,
        /// Applied index.
        applied: u64,
    },
    /// Already compacted to or past `index`.
    #[error("already compacted to {0}")]
    AlreadyCompacted(u64),
    /// Storage could not give the term at the index.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a replica could not be created from its storage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NewRaftError {
    /// The replica id is 0 ([`NO_REPLICA`](super::types::NO_REPLICA)).
    #[error("replica id must be non-zero")]
    ZeroId,
    /// Storage failed while recovering.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
