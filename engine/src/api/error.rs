//! The typed answers of every operation: [`ErrorClass`] (how a caller treats an error),
//! [`BusyReason`], one error enum per operation ([`ProposeError`], [`ReadError`],
//! [`TransferError`], [`MembershipError`], [`CreateGroupError`], [`OpenError`]), and the
//! value each result takes when its worker went away ([`Abandoned`]).
//!
//! Errors: "not appended, try elsewhere" answers ([`ProposeError::NotLeader`],
//! [`ProposeError::TransferInProgress`]) are kept apart from outcomes of appended
//! proposals ([`ProposeError::Dropped`], [`ProposeError::Indeterminate`]), from
//! backpressure ([`ProposeError::Busy`]) and from fatal errors
//! ([`ProposeError::StorageFailed`], [`ProposeError::Shutdown`]); see
//! [`ProposeError::class`].
//!
//! Owns the error vocabulary. Never decides which error an operation gets: the runtime
//! does.

use bytes::Bytes;
use thiserror::Error;

use super::config::ConfigError;
use crate::raft::conf::ConfChangeError;
use crate::raft::types::{NodeId, ReplicaId};
use crate::runtime::Abandoned;

/// How a caller should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not done; retry at another node (the hint, if any).
    Redirect,
    /// Not done; retry later (backpressure, no leader yet).
    Retry,
    /// The operation was accepted and its outcome is known to be failure
    /// (`Dropped`) or cannot be known (`Indeterminate`): retrying may apply it twice.
    Outcome,
    /// The engine cannot continue (storage failed, shut down), or the request is invalid.
    Fatal,
}

/// Why a bounded resource refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// The worker's mailbox is full.
    Mailbox,
    /// The group's appended but unapplied bytes exceed `max_uncommitted_bytes`.
    GroupUncommitted,
    /// The worker's appended but unapplied proposals exceed `max_pending_proposals`.
    WorkerPending,
    /// The worker's committed entries waiting for its apply thread exceed
    /// `max_apply_backlog`.
    ApplyBacklog,
    /// The worker's WAL bytes submitted and not yet durable exceed `max_pending_wal_bytes`.
    WalPending,
}

/// Why a proposal did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// Not appended: this replica is not the leader. Try the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// Not appended: a leadership transfer is in progress; retry at its target.
    #[error("leadership transfer in progress (to node {to:?})")]
    TransferInProgress {
        /// The transfer's target node.
        to: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// Not appended: a bound was reached.
    #[error("busy: {0:?}")]
    Busy(BusyReason),
    /// Not appended: the payload exceeds `max_entry_bytes`.
    #[error("proposal of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// The payload's length.
        len: usize,
        /// `max_entry_bytes`.
        max: usize,
    },
    /// Appended, and provably never applied: an entry of another term was committed at
    /// its index, or one of a newer term before it. Safe to retry.
    #[error("proposal dropped: another entry was committed at its index")]
    Dropped,
    /// Appended, but the engine cannot know whether it applied (the replica was removed,
    /// installed a snapshot past it, its storage failed after the append, the engine shut
    /// down first, or `propose_timeout_ticks` passed). Never retry blindly.
    #[error("proposal outcome unknown")]
    Indeterminate,
    /// Not appended: the WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down (and the proposal was not appended).
    #[error("engine shut down")]
    Shutdown,
}

impl ProposeError {
    /// How to treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. } => ErrorClass::Redirect,
            ProposeError::Busy(_) => ErrorClass::Retry,
            ProposeError::Dropped | ProposeError::Indeterminate => ErrorClass::Outcome,
            ProposeError::GroupNotFound(_)
            | ProposeError::TooLarge { .. }
            | ProposeError::StorageFailed
            | ProposeError::Shutdown => ErrorClass::Fatal,
        }
    }
}

impl Abandoned for Result<Bytes, ProposeError> {
    fn abandoned() -> Self {
        Err(ProposeError::Indeterminate)
    }
}

/// Why a read barrier failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReadError {
    /// No leader is known to confirm the read; retry later or at the hinted node.
    #[error("no leader to confirm the read (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The read was not confirmed within `read_timeout_ticks` (leadership changed or a
    /// message was lost); retry.
    #[error("read not confirmed in time")]
    Timeout,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), ProposeError> {
    fn abandoned() -> Self {
        Err(ProposeError::Shutdown)
    }
}

impl Abandoned for Result<u64, ReadError> {
    fn abandoned() -> Self {
        Err(ReadError::Shutdown)
    }
}

/// Why a leadership transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransferError {
    /// This replica is not the leader; ask the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The target node hosts no member of the group.
    #[error("node {0} is not a member of the group")]
    NotMember(NodeId),
    /// The target's replica is a learner (or outgoing voter) and cannot lead.
    #[error("node {0} is not a voter of the group")]
    NotVoter(NodeId),
    /// The target is this node, the leader already.
    #[error("node {0} already leads the group")]
    ToSelf(NodeId),
    /// A membership change of the group is pending (not yet applied, or a joint
    /// configuration not yet left); retry once it completes.
    #[error("a membership change is pending")]
    ConfChangePending,
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), TransferError> {
    fn abandoned() -> Self {
        Err(TransferError::Shutdown)
    }
}
/// Why a membership change did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembershipError {
    /// Not appended: this replica is not the leader; ask the hinted node.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// Not appended: another change is still pending.
    #[error("a membership change is pending")]
    ChangePending,
    /// Not appended: the new leader has not committed an entry of its term; retry.
    #[error("the leader is not ready for membership changes yet")]
    LeaderNotReady,
    /// Not appended: a leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Not appended: the learner lags too far behind to be promoted.
    #[error("learner on node {node} lags {lag} entries behind")]
    LearnerNotCaughtUp {
        /// The learner's node.
        node: NodeId,
        /// Entries behind the leader's last index.
        lag: u64,
    },
    /// Not appended: the node is already a member (adds) or not a member (promote,
    /// remove).
    #[error("invalid change for node {node}: {why}")]
    Invalid {
        /// The node named.
        node: NodeId,
        /// What is wrong.
        why: String,
    },
    /// Not appended: the change is invalid for the current configuration.
    #[error("invalid membership change: {0}")]
    Conf(#[from] ConfChangeError),
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// Appended, and provably never applied (see [`ProposeError::Dropped`]).
    #[error("change dropped: another entry was committed at its index")]
    Dropped,
    /// Appended; the outcome cannot be known (see [`ProposeError::Indeterminate`]).
    #[error("change outcome unknown")]
    Indeterminate,
    /// Not appended: the WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), MembershipError> {
    fn abandoned() -> Self {
        Err(MembershipError::Indeterminate)
    }
}

/// Why a group could not be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CreateGroupError {
    /// The member list is empty.
    #[error("a group needs at least one member")]
    NoMembers,
    /// A node is listed twice.
    #[error("node {0} listed twice")]
    DuplicateMember(NodeId),
    /// This node is not among the members (it joins when a leader adds it).
    #[error("this node is not among the members")]
    NotAMember,
    /// The group was removed from this node; its tombstone forbids recreating it here.
    #[error("group {0} was removed from this node")]
    Tombstoned(u64),
    /// The group exists here with another replica id.
    #[error("group {group} exists here as replica {existing}")]
    Conflict {
        /// The group.
        group: u64,
        /// The replica id it has here.
        existing: ReplicaId,
    },
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Abandoned for Result<(), CreateGroupError> {
    fn abandoned() -> Self {
        Err(CreateGroupError::Shutdown)
    }
}

/// Why [`Engine::open`] failed.
///
/// [`Engine::open`]: super::Engine::open
#[derive(Debug, Error)]
pub enum OpenError {
    /// The configuration broke a rule.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The transport belongs to another node.
    #[error("transport is node {transport}, config says {config}")]
    NodeMismatch {
        /// `config.node_id`.
        config: NodeId,
        /// The transport's node id.
        transport: NodeId,
    },
    /// The data directory could not be created or read.
    #[error("data dir: {0}")]
    Io(#[from] std::io::Error),
    /// The WAL could not be opened or recovered.
    #[error("wal: {0}")]
    Wal(#[from] flotilla_wal::OpenError),
    /// A group's state machine reports an applied index past the last index of the
    /// group's log: it ran ahead of the WAL. Opening would take the log's stale tail as
    /// committed, so the node refuses; rebuild that state machine (or the node) from its
    /// peers.
    #[error("recovering group {group}: the state machine applied index {applied}, past the log's last index {last}")]
    AppliedPastLog {
        /// The group.
        group: u64,
        /// The state machine's `applied_index()`.
        applied: u64,
        /// The last index of the group's log (or of its snapshot).
        last: u64,
    },
    /// A group's durable state is inconsistent.
    #[error("recovering group {group}: {reason}")]
    Recovery {
        /// The group.
        group: u64,
        /// What failed.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        assert_eq!(ProposeError::NotLeader { leader_hint: Some(2) }.class(), ErrorClass::Redirect);
        assert_eq!(ProposeError::Busy(BusyReason::Mailbox).class(), ErrorClass::Retry);
        assert_eq!(ProposeError::Dropped.class(), ErrorClass::Outcome);
        assert_eq!(ProposeError::Indeterminate.class(), ErrorClass::Outcome);
        assert_eq!(ProposeError::StorageFailed.class(), ErrorClass::Fatal);
        assert_eq!(ProposeError::Shutdown.class(), ErrorClass::Fatal);
    }
}
