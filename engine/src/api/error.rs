//! The typed answers of every operation: [`ErrorClass`] (how a caller treats an error),
//! [`BusyReason`], the answers every group operation shares ([`Unavailable`]), one error
//! enum per operation ([`ProposeError`], [`ReadError`], [`TransferError`],
//! [`MembershipError`], [`CreateGroupError`], [`OpenError`]), the conversions of the Raft
//! core's refusals into them, and the value each result takes when its worker went away
//! ([`Abandoned`]).
//!
//! Errors: "not done, try elsewhere or later" answers ([`ProposeError::NotLeader`],
//! [`ProposeError::TransferInProgress`], [`ProposeError::Busy`]) are kept apart from
//! outcomes of appended proposals ([`ProposeError::Indeterminate`]), from invalid requests
//! ([`ProposeError::TooLarge`]) and from fatal errors ([`ProposeError::StorageFailed`],
//! [`ProposeError::Shutdown`]); every error says which it is with `class()`. The answers
//! shared by every operation on a group (not here, not the leader, busy, storage failed,
//! shut down) are one type, [`Unavailable`]: each operation's error converts from it
//! (`From`) and gives it back (`unavailable()`), keeping its own variants' names.
//!
//! Owns the error vocabulary and the core-to-API conversions. Never decides which error
//! an operation gets: the runtime does.

use bytes::Bytes;
use thiserror::Error;

use super::config::ConfigError;
use crate::raft::conf::ConfChangeError;
use crate::raft::error::{
    ProposeError as CoreProposeError, ReadIndexError as CoreReadIndexError,
    TransferError as CoreTransferError,
};
use crate::raft::types::{NodeId, ReplicaId};
use crate::runtime::Abandoned;

/// How a caller should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Not done; retry at another node (the hint, if any; else look the leader up).
    Redirect,
    /// Not done, or provably never applied; retry later (backpressure, no leader yet, a
    /// change or transfer in progress, an entry of another term committed at its index),
    /// at the hinted node if the error names one.
    Retry,
    /// The operation was accepted and its outcome cannot be known (`Indeterminate`):
    /// retrying may apply it twice.
    Outcome,
    /// Not done, and the same request will never be done here: it is invalid (too large,
    /// a bad membership change, not a member, a tombstoned group, a bad configuration).
    /// Do not retry it unchanged.
    Invalid,
    /// The engine cannot continue (storage failed, shut down, its data could not be
    /// opened).
    Fatal,
}

/// Why a bounded resource refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BusyReason {
    /// The worker's mailbox is full.
    Mailbox,
    /// The proposal bytes the group's leader appended in its term and has not handed out
    /// for apply exceed `max_uncommitted_bytes`.
    GroupUncommitted,
    /// The worker's appended but unapplied proposals exceed `max_pending_proposals`.
    WorkerPending,
    /// The worker's committed entries waiting for its apply thread exceed
    /// `max_apply_backlog` (or their bytes `max_apply_backlog_bytes`).
    ApplyBacklog,
    /// The worker's WAL bytes submitted and not yet durable exceed `max_pending_wal_bytes`.
    WalPending,
    /// (Reads only.) The group holds `max_pending_reads` reads: waiting here, or at this
    /// leader's core waiting for confirmation.
    PendingReads,
    /// The proposal bytes appended and not handed out for apply by the leaders of all the
    /// worker's groups exceed `max_worker_uncommitted_bytes`.
    WorkerUncommitted,
    /// (Reads only.) The worker's groups hold `max_worker_pending_reads` reads.
    WorkerReads,
}

/// The answers every operation on a group shares: the request reached no replica able to
/// take it now. Each group operation's error converts from it ([`ProposeError`],
/// [`ReadError`], [`TransferError`], [`MembershipError`]) and every operation's error
/// gives it back (`unavailable()`), so a caller can match these once for all operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// This replica is not the leader (or, for a read, knows no leader to confirm it).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node hosting the leader this replica knows of.
        leader_hint: Option<NodeId>,
    },
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// A bound was reached (for a read, the worker's mailbox or `max_pending_reads`; for
    /// the other operations but a proposal, only the worker's mailbox).
    #[error("busy: {0:?}")]
    Busy(BusyReason),
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl Unavailable {
    /// How to treat this answer: the same class every operation's error gives it.
    pub fn class(&self) -> ErrorClass {
        match self {
            Unavailable::NotLeader { .. } | Unavailable::GroupNotFound(_) => ErrorClass::Redirect,
            Unavailable::Busy(_) => ErrorClass::Retry,
            Unavailable::StorageFailed | Unavailable::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The node to try instead, if this answer names one.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            Unavailable::NotLeader { leader_hint } => *leader_hint,
            _ => None,
        }
    }
}

/// Why a proposal did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
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
    /// A session entry was applied without effect: the group's session table refused it
    /// (see [`SessionRefusal`]).
    #[error("session: {0}")]
    Session(SessionRefusal),
}

impl ProposeError {
    /// How to treat this error: `Redirect` (not the leader, group not here), `Retry`
    /// (busy, a transfer in progress: retry at its target, or `Dropped`: provably never
    /// applied), `Outcome` (`Indeterminate`), `Invalid` (`TooLarge`), `Fatal` (storage
    /// failed, shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            ProposeError::NotLeader { .. } | ProposeError::GroupNotFound(_) => ErrorClass::Redirect,
            ProposeError::TransferInProgress { .. } | ProposeError::Busy(_) | ProposeError::Dropped => {
                ErrorClass::Retry
            }
            ProposeError::Indeterminate => ErrorClass::Outcome,
            ProposeError::TooLarge { .. } | ProposeError::Session(_) => ErrorClass::Invalid,
            ProposeError::StorageFailed | ProposeError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The node to try instead, if the error names one: the leader this replica knows of,
    /// or a leadership transfer's target.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ProposeError::NotLeader { leader_hint } => *leader_hint,
            ProposeError::TransferInProgress { to } => *to,
            _ => None,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            ProposeError::NotLeader { leader_hint } => Unavailable::NotLeader { leader_hint },
            ProposeError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            ProposeError::Busy(r) => Unavailable::Busy(r),
            ProposeError::StorageFailed => Unavailable::StorageFailed,
            ProposeError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
}

impl From<Unavailable> for ProposeError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::NotLeader { leader_hint } => ProposeError::NotLeader { leader_hint },
            Unavailable::GroupNotFound(g) => ProposeError::GroupNotFound(g),
            Unavailable::Busy(r) => ProposeError::Busy(r),
            Unavailable::StorageFailed => ProposeError::StorageFailed,
            Unavailable::Shutdown => ProposeError::Shutdown,
        }
    }
}

/// Where a group's replicas live: what turns the core's replica ids into the API's nodes
/// when a core refusal becomes an API error.
pub(crate) trait Placement {
    /// The node hosting `replica`, if known.
    fn node_of(&self, replica: ReplicaId) -> Option<NodeId>;
    /// The node hosting the leader this replica knows of.
    fn leader_node(&self) -> Option<NodeId>;
}

/// The core's refusal of a data proposal, in the group that refused it.
pub(crate) struct ProposeRefused<'a> {
    /// The core's refusal.
    pub(crate) err: CoreProposeError,
    /// The group, to name nodes.
    pub(crate) group: &'a dyn Placement,
}

impl From<ProposeRefused<'_>> for ProposeError {
    fn from(r: ProposeRefused<'_>) -> Self {
        match r.err {
            CoreProposeError::NotLeader { leader_hint } => {
                ProposeError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
            }
            CoreProposeError::TransferInProgress { to } => {
                ProposeError::TransferInProgress { to: r.group.node_of(to) }
            }
            CoreProposeError::UncommittedFull { .. } => ProposeError::Busy(BusyReason::GroupUncommitted),
            // Membership-only refusals; a data proposal never gets them.
            CoreProposeError::ConfChangePending
            | CoreProposeError::LeaderNotReady
            | CoreProposeError::InvalidConfChange(_) => {
                ProposeError::NotLeader { leader_hint: r.group.leader_node() }
            }
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
#[non_exhaustive]
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
    /// A bound was reached ([`BusyReason::Mailbox`], or [`BusyReason::PendingReads`]: the
    /// group holds `EngineConfig::max_pending_reads` reads, waiting here or, on the leader,
    /// for confirmation); retry. (A read a leader dropped for its bound, forwarded by a
    /// follower, ends in `Timeout` at the follower.)
    #[error("busy: {0:?}")]
    Busy(BusyReason),
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

impl ReadError {
    /// How to treat this error: `Redirect` (no leader to confirm it here, group not here),
    /// `Retry` (busy, timed out), `Fatal` (storage failed, shut down). A read changes
    /// nothing, so no read error is an `Outcome`.
    pub fn class(&self) -> ErrorClass {
        match self {
            ReadError::NotLeader { .. } | ReadError::GroupNotFound(_) => ErrorClass::Redirect,
            ReadError::Busy(_) | ReadError::Timeout => ErrorClass::Retry,
            ReadError::StorageFailed | ReadError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The node to try instead, if the error names one.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            ReadError::NotLeader { leader_hint } => *leader_hint,
            _ => None,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            ReadError::NotLeader { leader_hint } => Unavailable::NotLeader { leader_hint },
            ReadError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            ReadError::Busy(reason) => Unavailable::Busy(reason),
            ReadError::StorageFailed => Unavailable::StorageFailed,
            ReadError::Shutdown => Unavailable::Shutdown,
            ReadError::Timeout => return None,
        })
    }
}

impl From<Unavailable> for ReadError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::NotLeader { leader_hint } => ReadError::NotLeader { leader_hint },
            Unavailable::GroupNotFound(g) => ReadError::GroupNotFound(g),
            Unavailable::Busy(reason) => ReadError::Busy(reason),
            Unavailable::StorageFailed => ReadError::StorageFailed,
            Unavailable::Shutdown => ReadError::Shutdown,
        }
    }
}

impl From<CoreReadIndexError> for ReadError {
    fn from(e: CoreReadIndexError) -> Self {
        match e {
            CoreReadIndexError::NotLeader { leader_hint } => {
                ReadError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
            }
            CoreReadIndexError::Busy { .. } => ReadError::Busy(BusyReason::PendingReads),
        }
    }
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
#[non_exhaustive]
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

impl TransferError {
    /// How to treat this error: `Redirect` (not the leader, group not here), `Retry`
    /// (busy, a membership change pending), `Invalid` (the target is not a member, not a
    /// voter, or this node, the leader already), `Fatal` (storage failed, shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            TransferError::NotLeader { .. } | TransferError::GroupNotFound(_) => ErrorClass::Redirect,
            TransferError::ConfChangePending | TransferError::Busy => ErrorClass::Retry,
            TransferError::NotMember(_) | TransferError::NotVoter(_) | TransferError::ToSelf(_) => {
                ErrorClass::Invalid
            }
            TransferError::StorageFailed | TransferError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The node to try instead, if the error names one.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            TransferError::NotLeader { leader_hint } => *leader_hint,
            _ => None,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            TransferError::NotLeader { leader_hint } => Unavailable::NotLeader { leader_hint },
            TransferError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            TransferError::Busy => Unavailable::Busy(BusyReason::Mailbox),
            TransferError::StorageFailed => Unavailable::StorageFailed,
            TransferError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
}

impl From<Unavailable> for TransferError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::NotLeader { leader_hint } => TransferError::NotLeader { leader_hint },
            Unavailable::GroupNotFound(g) => TransferError::GroupNotFound(g),
            // Only the mailbox bounds a transfer.
            Unavailable::Busy(_) => TransferError::Busy,
            Unavailable::StorageFailed => TransferError::StorageFailed,
            Unavailable::Shutdown => TransferError::Shutdown,
        }
    }
}

/// The core's refusal of a leadership transfer to the replica on `node` (the API names
/// the node the caller gave, the core the replica it resolved to).
pub(crate) struct TransferRefused {
    /// The core's refusal.
    pub(crate) err: CoreTransferError,
    /// The target node the caller named.
    pub(crate) node: NodeId,
}

impl From<TransferRefused> for TransferError {
    fn from(r: TransferRefused) -> Self {
        match r.err {
            CoreTransferError::NotLeader { leader_hint } => {
                TransferError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
            }
            CoreTransferError::ToSelf(_) => TransferError::ToSelf(r.node),
            CoreTransferError::NotVoter(_) => TransferError::NotVoter(r.node),
            CoreTransferError::NotMember(_) => TransferError::NotMember(r.node),
            CoreTransferError::ConfChangePending => TransferError::ConfChangePending,
        }
    }
}

impl Abandoned for Result<(), TransferError> {
    fn abandoned() -> Self {
        Err(TransferError::Shutdown)
    }
}
/// Why a membership change did not (or may not) take effect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
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

impl MembershipError {
    /// How to treat this error: `Redirect` (not the leader, group not here), `Retry`
    /// (busy, another change pending, the leader not ready, a transfer in progress, the
    /// learner not caught up, or `Dropped`: provably never applied), `Outcome`
    /// (`Indeterminate`), `Invalid` (the change is invalid), `Fatal` (storage failed,
    /// shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            MembershipError::NotLeader { .. } | MembershipError::GroupNotFound(_) => ErrorClass::Redirect,
            MembershipError::ChangePending
            | MembershipError::LeaderNotReady
            | MembershipError::TransferInProgress
            | MembershipError::LearnerNotCaughtUp { .. }
            | MembershipError::Busy
            | MembershipError::Dropped => ErrorClass::Retry,
            MembershipError::Indeterminate => ErrorClass::Outcome,
            MembershipError::Invalid { .. } | MembershipError::Conf(_) => ErrorClass::Invalid,
            MembershipError::StorageFailed | MembershipError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The node to try instead, if the error names one.
    pub fn leader_hint(&self) -> Option<NodeId> {
        match self {
            MembershipError::NotLeader { leader_hint } => *leader_hint,
            _ => None,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            MembershipError::NotLeader { leader_hint } => Unavailable::NotLeader { leader_hint },
            MembershipError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            MembershipError::Busy => Unavailable::Busy(BusyReason::Mailbox),
            MembershipError::StorageFailed => Unavailable::StorageFailed,
            MembershipError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
}

impl From<Unavailable> for MembershipError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::NotLeader { leader_hint } => MembershipError::NotLeader { leader_hint },
            Unavailable::GroupNotFound(g) => MembershipError::GroupNotFound(g),
            // Only the mailbox bounds a membership change.
            Unavailable::Busy(_) => MembershipError::Busy,
            Unavailable::StorageFailed => MembershipError::StorageFailed,
            Unavailable::Shutdown => MembershipError::Shutdown,
        }
    }
}

impl From<CoreProposeError> for MembershipError {
    fn from(e: CoreProposeError) -> Self {
        match e {
            CoreProposeError::NotLeader { leader_hint } => {
                MembershipError::NotLeader { leader_hint: leader_hint.map(|r| r.node) }
            }
            CoreProposeError::TransferInProgress { .. } => MembershipError::TransferInProgress,
            CoreProposeError::ConfChangePending => MembershipError::ChangePending,
            CoreProposeError::LeaderNotReady => MembershipError::LeaderNotReady,
            CoreProposeError::InvalidConfChange(c) => MembershipError::Conf(c),
            // Data proposals only; a membership change never gets it.
            CoreProposeError::UncommittedFull { .. } => MembershipError::Busy,
        }
    }
}

impl Abandoned for Result<(), MembershipError> {
    fn abandoned() -> Self {
        Err(MembershipError::Indeterminate)
    }
}

/// Why a group could not be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
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

impl CreateGroupError {
    /// How to treat this error: `Retry` (busy), `Invalid` (the member list is wrong, the
    /// group was removed here or exists with another replica id), `Fatal` (storage
    /// failed, shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            CreateGroupError::Busy => ErrorClass::Retry,
            CreateGroupError::NoMembers
            | CreateGroupError::DuplicateMember(_)
            | CreateGroupError::NotAMember
            | CreateGroupError::Tombstoned(_)
            | CreateGroupError::Conflict { .. } => ErrorClass::Invalid,
            CreateGroupError::StorageFailed | CreateGroupError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The shared answer this error is, if it is one (a group being created has no
    /// leader to name and is not "not found", so only busy, storage failed and shut
    /// down are).
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            CreateGroupError::Busy => Unavailable::Busy(BusyReason::Mailbox),
            CreateGroupError::StorageFailed => Unavailable::StorageFailed,
            CreateGroupError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
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
#[non_exhaustive]
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
    /// Another process, or another open [`crate::api::Engine`] in this process, holds the
    /// data directory (its `LOCK` file). Nothing in it was read or changed.
    #[error("data dir {dir} is in use by another process or engine{}", holder.map(|p| format!(" (process {p})")).unwrap_or_default())]
    Locked {
        /// The data directory.
        dir: std::path::PathBuf,
        /// The process id the holder wrote in the lock file, if it could be read.
        holder: Option<u32>,
    },
}

impl OpenError {
    /// How to treat this error: `Invalid` (the configuration broke a rule, or names
    /// another node than the transport), `Fatal` (the data directory, the WAL or a
    /// group's durable state could not be opened).
    pub fn class(&self) -> ErrorClass {
        match self {
            OpenError::Config(_) | OpenError::NodeMismatch { .. } => ErrorClass::Invalid,
            OpenError::Io(_)
            | OpenError::Locked { .. }
            | OpenError::Wal(_)
            | OpenError::AppliedPastLog { .. }
            | OpenError::Recovery { .. } => ErrorClass::Fatal,
        }
    }
}

impl ConfigError {
    /// How to treat this error: always `Invalid` (fix the configuration).
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Invalid
    }
}

/// Why the group's session table refused a session entry (it was applied without
/// effect, on every replica alike). Delivered as [`ProposeError::Session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionRefusal {
    /// The session expired (unused for longer than `session_ttl` by the replicated
    /// clock), was evicted (past `max_sessions`, least recently used first), closed, or
    /// never registered. Open a new session; the proposal was not applied.
    #[error("session unknown: expired, evicted, closed or never registered")]
    Unknown,
    /// The sequence number is below the session's floor: the caller said it had this
    /// proposal's answer, and the table forgot it. Not applied again.
    #[error("sequence number below the session's floor: its answer is gone")]
    Acked,
    /// The group's state machine keeps its own storage and cannot hold sessions
    /// ([`super::StateMachine::supports_sessions`]).
    #[error("the group's state machine does not support sessions")]
    NotSupported,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Replica;
    use ErrorClass::*;

    /// Every `Unavailable`, with a non-mailbox busy reason too.
    fn every_unavailable() -> Vec<Unavailable> {
        vec![
            Unavailable::NotLeader { leader_hint: Some(2) },
            Unavailable::NotLeader { leader_hint: None },
            Unavailable::GroupNotFound(7),
            Unavailable::Busy(BusyReason::Mailbox),
            Unavailable::Busy(BusyReason::WalPending),
            Unavailable::Busy(BusyReason::PendingReads),
            Unavailable::StorageFailed,
            Unavailable::Shutdown,
        ]
    }

    #[test]
    fn unavailable_classes() {
        let table = [
            (Unavailable::NotLeader { leader_hint: Some(2) }, Redirect),
            (Unavailable::GroupNotFound(7), Redirect),
            (Unavailable::Busy(BusyReason::Mailbox), Retry),
            (Unavailable::StorageFailed, Fatal),
            (Unavailable::Shutdown, Fatal),
        ];
        // Fails to compile when a variant is added without a row above.
        let _ = |u: &Unavailable| match u {
            Unavailable::NotLeader { .. }
            | Unavailable::GroupNotFound(_)
            | Unavailable::Busy(_)
            | Unavailable::StorageFailed
            | Unavailable::Shutdown => (),
        };
        for (u, class) in table {
            assert_eq!(u.class(), class, "{u:?}");
        }
        assert_eq!(Unavailable::NotLeader { leader_hint: Some(2) }.leader_hint(), Some(2));
        assert_eq!(Unavailable::GroupNotFound(2).leader_hint(), None);
    }

    #[test]
    fn propose_error_classes() {
        let table = [
            (ProposeError::NotLeader { leader_hint: Some(2) }, Redirect),
            (ProposeError::NotLeader { leader_hint: None }, Redirect),
            (ProposeError::GroupNotFound(7), Redirect),
            (ProposeError::TransferInProgress { to: Some(3) }, Retry),
            (ProposeError::Busy(BusyReason::Mailbox), Retry),
            (ProposeError::Busy(BusyReason::GroupUncommitted), Retry),
            (ProposeError::Busy(BusyReason::WorkerPending), Retry),
            (ProposeError::Busy(BusyReason::ApplyBacklog), Retry),
            (ProposeError::Busy(BusyReason::WalPending), Retry),
            (ProposeError::Dropped, Retry),
            (ProposeError::Indeterminate, Outcome),
            (ProposeError::TooLarge { len: 10, max: 5 }, Invalid),
            (ProposeError::StorageFailed, Fatal),
            (ProposeError::Shutdown, Fatal),
            (ProposeError::Session(SessionRefusal::Unknown), Invalid),
            (ProposeError::Session(SessionRefusal::Acked), Invalid),
            (ProposeError::Session(SessionRefusal::NotSupported), Invalid),
        ];
        let _ = |e: &ProposeError| match e {
            ProposeError::NotLeader { .. }
            | ProposeError::TransferInProgress { .. }
            | ProposeError::GroupNotFound(_)
            | ProposeError::Busy(_)
            | ProposeError::TooLarge { .. }
            | ProposeError::Dropped
            | ProposeError::Indeterminate
            | ProposeError::StorageFailed
            | ProposeError::Session(_)
            | ProposeError::Shutdown => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        assert_eq!(ProposeError::NotLeader { leader_hint: Some(2) }.leader_hint(), Some(2));
        assert_eq!(ProposeError::TransferInProgress { to: Some(3) }.leader_hint(), Some(3));
        assert_eq!(ProposeError::Busy(BusyReason::Mailbox).leader_hint(), None);
    }

    #[test]
    fn read_error_classes() {
        let table = [
            (ReadError::NotLeader { leader_hint: Some(2) }, Redirect),
            (ReadError::GroupNotFound(7), Redirect),
            (ReadError::Busy(BusyReason::Mailbox), Retry),
            (ReadError::Busy(BusyReason::PendingReads), Retry),
            (ReadError::Timeout, Retry),
            (ReadError::StorageFailed, Fatal),
            (ReadError::Shutdown, Fatal),
        ];
        let _ = |e: &ReadError| match e {
            ReadError::NotLeader { .. }
            | ReadError::GroupNotFound(_)
            | ReadError::Busy(_)
            | ReadError::Timeout
            | ReadError::StorageFailed
            | ReadError::Shutdown => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        assert_eq!(ReadError::NotLeader { leader_hint: Some(2) }.leader_hint(), Some(2));
        assert_eq!(ReadError::Timeout.unavailable(), None);
    }

    #[test]
    fn transfer_error_classes() {
        let table = [
            (TransferError::NotLeader { leader_hint: Some(2) }, Redirect),
            (TransferError::GroupNotFound(7), Redirect),
            (TransferError::ConfChangePending, Retry),
            (TransferError::Busy, Retry),
            (TransferError::NotMember(4), Invalid),
            (TransferError::NotVoter(4), Invalid),
            (TransferError::ToSelf(1), Invalid),
            (TransferError::StorageFailed, Fatal),
            (TransferError::Shutdown, Fatal),
        ];
        let _ = |e: &TransferError| match e {
            TransferError::NotLeader { .. }
            | TransferError::GroupNotFound(_)
            | TransferError::NotMember(_)
            | TransferError::NotVoter(_)
            | TransferError::ToSelf(_)
            | TransferError::ConfChangePending
            | TransferError::Busy
            | TransferError::StorageFailed
            | TransferError::Shutdown => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        assert_eq!(TransferError::NotLeader { leader_hint: Some(2) }.leader_hint(), Some(2));
    }

    #[test]
    fn membership_error_classes() {
        let table = [
            (MembershipError::NotLeader { leader_hint: Some(2) }, Redirect),
            (MembershipError::GroupNotFound(7), Redirect),
            (MembershipError::ChangePending, Retry),
            (MembershipError::LeaderNotReady, Retry),
            (MembershipError::TransferInProgress, Retry),
            (MembershipError::LearnerNotCaughtUp { node: 4, lag: 100 }, Retry),
            (MembershipError::Busy, Retry),
            (MembershipError::Dropped, Retry),
            (MembershipError::Indeterminate, Outcome),
            (MembershipError::Invalid { node: 4, why: "already a member".into() }, Invalid),
            (MembershipError::Conf(ConfChangeError::InJoint), Invalid),
            (MembershipError::StorageFailed, Fatal),
            (MembershipError::Shutdown, Fatal),
        ];
        let _ = |e: &MembershipError| match e {
            MembershipError::NotLeader { .. }
            | MembershipError::GroupNotFound(_)
            | MembershipError::ChangePending
            | MembershipError::LeaderNotReady
            | MembershipError::TransferInProgress
            | MembershipError::LearnerNotCaughtUp { .. }
            | MembershipError::Invalid { .. }
            | MembershipError::Conf(_)
            | MembershipError::Busy
            | MembershipError::Dropped
            | MembershipError::Indeterminate
            | MembershipError::StorageFailed
            | MembershipError::Shutdown => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        assert_eq!(MembershipError::NotLeader { leader_hint: Some(2) }.leader_hint(), Some(2));
    }

    #[test]
    fn create_group_error_classes() {
        let table = [
            (CreateGroupError::Busy, Retry),
            (CreateGroupError::NoMembers, Invalid),
            (CreateGroupError::DuplicateMember(2), Invalid),
            (CreateGroupError::NotAMember, Invalid),
            (CreateGroupError::Tombstoned(7), Invalid),
            (CreateGroupError::Conflict { group: 7, existing: 2 }, Invalid),
            (CreateGroupError::StorageFailed, Fatal),
            (CreateGroupError::Shutdown, Fatal),
        ];
        let _ = |e: &CreateGroupError| match e {
            CreateGroupError::NoMembers
            | CreateGroupError::DuplicateMember(_)
            | CreateGroupError::NotAMember
            | CreateGroupError::Tombstoned(_)
            | CreateGroupError::Conflict { .. }
            | CreateGroupError::Busy
            | CreateGroupError::StorageFailed
            | CreateGroupError::Shutdown => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        assert_eq!(CreateGroupError::Busy.unavailable(), Some(Unavailable::Busy(BusyReason::Mailbox)));
        assert_eq!(CreateGroupError::StorageFailed.unavailable(), Some(Unavailable::StorageFailed));
        assert_eq!(CreateGroupError::Shutdown.unavailable(), Some(Unavailable::Shutdown));
        assert_eq!(CreateGroupError::NotAMember.unavailable(), None);
    }

    #[test]
    fn open_and_config_error_classes() {
        let wal = flotilla_wal::OpenError::Corrupt { file: "x".into(), offset: 0, reason: "bad".into() };
        let table = [
            (OpenError::Config(ConfigError::ZeroNodeId), Invalid),
            (OpenError::NodeMismatch { config: 1, transport: 2 }, Invalid),
            (OpenError::Io(std::io::ErrorKind::NotFound.into()), Fatal),
            (OpenError::Wal(wal), Fatal),
            (OpenError::AppliedPastLog { group: 7, applied: 10, last: 5 }, Fatal),
            (OpenError::Recovery { group: 7, reason: "bad".into() }, Fatal),
            (OpenError::Locked { dir: "d".into(), holder: None }, Fatal),
        ];
        let _ = |e: &OpenError| match e {
            OpenError::Config(_)
            | OpenError::NodeMismatch { .. }
            | OpenError::Io(_)
            | OpenError::Locked { .. }
            | OpenError::Wal(_)
            | OpenError::AppliedPastLog { .. }
            | OpenError::Recovery { .. } => (),
        };
        for (e, class) in table {
            assert_eq!(e.class(), class, "{e:?}");
        }
        for e in [ConfigError::ZeroNodeId, ConfigError::EmptyDataDir, ConfigError::WorkersOutOfBounds(1000)] {
            assert_eq!(e.class(), Invalid, "{e:?}");
        }
    }

    /// Each shared answer becomes the same-named variant of every group operation's
    /// error, with the same class, and reads back as itself (a busy reason other than the
    /// mailbox only survives in a proposal's and a read's error: the others have none).
    #[test]
    fn every_unavailable_converts_to_its_variant_in_every_operation() {
        for u in every_unavailable() {
            let mailbox = match u {
                Unavailable::Busy(_) => Unavailable::Busy(BusyReason::Mailbox),
                u => u,
            };
            let p = ProposeError::from(u);
            let r = ReadError::from(u);
            let t = TransferError::from(u);
            let m = MembershipError::from(u);
            assert_eq!(
                (p.class(), r.class(), t.class(), m.class()),
                (u.class(), u.class(), u.class(), u.class())
            );
            assert_eq!(p.unavailable(), Some(u), "{u:?}");
            assert_eq!(r.unavailable(), Some(u), "{u:?}");
            assert_eq!(t.unavailable(), Some(mailbox), "{u:?}");
            assert_eq!(m.unavailable(), Some(mailbox), "{u:?}");
            assert_eq!(p.leader_hint(), u.leader_hint());
            assert_eq!(r.leader_hint(), u.leader_hint());
            assert_eq!(t.leader_hint(), u.leader_hint());
            assert_eq!(m.leader_hint(), u.leader_hint());
            // The same message as the operation's own variant.
            if !matches!(u, Unavailable::Busy(_)) {
                assert_eq!(p.to_string(), u.to_string());
            }
        }
        assert_eq!(
            ProposeError::from(Unavailable::Busy(BusyReason::WalPending)),
            ProposeError::Busy(BusyReason::WalPending)
        );
        assert_eq!(ReadError::from(Unavailable::GroupNotFound(7)), ReadError::GroupNotFound(7));
        assert_eq!(TransferError::from(Unavailable::Shutdown), TransferError::Shutdown);
        assert_eq!(MembershipError::from(Unavailable::Busy(BusyReason::WalPending)), MembershipError::Busy);
        assert_eq!(ProposeError::Dropped.unavailable(), None);
        assert_eq!(MembershipError::Indeterminate.unavailable(), None);
        assert_eq!(TransferError::ToSelf(1).unavailable(), None);
    }

    /// Replica 3 is on node 30, the leader on node 10.
    struct Fixed;

    impl Placement for Fixed {
        fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
            (replica == 3).then_some(30)
        }
        fn leader_node(&self) -> Option<NodeId> {
            Some(10)
        }
    }

    #[test]
    fn core_propose_refusals_name_nodes() {
        let conv = |err| ProposeError::from(ProposeRefused { err, group: &Fixed });
        let hint = Some(Replica::new(20, 2));
        assert_eq!(
            conv(CoreProposeError::NotLeader { leader_hint: hint }),
            ProposeError::NotLeader { leader_hint: Some(20) }
        );
        assert_eq!(
            conv(CoreProposeError::NotLeader { leader_hint: None }),
            ProposeError::NotLeader { leader_hint: None }
        );
        assert_eq!(
            conv(CoreProposeError::TransferInProgress { to: 3 }),
            ProposeError::TransferInProgress { to: Some(30) }
        );
        assert_eq!(
            conv(CoreProposeError::TransferInProgress { to: 4 }),
            ProposeError::TransferInProgress { to: None }
        );
        // Membership-only refusals answer "not the leader", naming the group's leader.
        for e in [
            CoreProposeError::ConfChangePending,
            CoreProposeError::LeaderNotReady,
            CoreProposeError::InvalidConfChange(ConfChangeError::InJoint),
        ] {
            assert_eq!(conv(e), ProposeError::NotLeader { leader_hint: Some(10) });
        }
    }

    #[test]
    fn core_membership_refusals_keep_their_meaning() {
        let hint = Some(Replica::new(20, 2));
        let table = [
            (
                CoreProposeError::NotLeader { leader_hint: hint },
                MembershipError::NotLeader { leader_hint: Some(20) },
            ),
            (CoreProposeError::TransferInProgress { to: 3 }, MembershipError::TransferInProgress),
            (CoreProposeError::ConfChangePending, MembershipError::ChangePending),
            (CoreProposeError::LeaderNotReady, MembershipError::LeaderNotReady),
            (
                CoreProposeError::InvalidConfChange(ConfChangeError::InJoint),
                MembershipError::Conf(ConfChangeError::InJoint),
            ),
        ];
        for (core, api) in table {
            assert_eq!(MembershipError::from(core), api);
        }
    }

    #[test]
    fn core_transfer_and_read_refusals_name_nodes() {
        let conv = |err| TransferError::from(TransferRefused { err, node: 30 });
        let hint = Some(Replica::new(20, 2));
        assert_eq!(
            conv(CoreTransferError::NotLeader { leader_hint: hint }),
            TransferError::NotLeader { leader_hint: Some(20) }
        );
        assert_eq!(conv(CoreTransferError::ToSelf(3)), TransferError::ToSelf(30));
        assert_eq!(conv(CoreTransferError::NotVoter(3)), TransferError::NotVoter(30));
        assert_eq!(conv(CoreTransferError::NotMember(3)), TransferError::NotMember(30));
        assert_eq!(conv(CoreTransferError::ConfChangePending), TransferError::ConfChangePending);
        assert_eq!(
            ReadError::from(CoreReadIndexError::NotLeader { leader_hint: hint }),
            ReadError::NotLeader { leader_hint: Some(20) }
        );
        assert_eq!(
            ReadError::from(CoreReadIndexError::NotLeader { leader_hint: None }),
            ReadError::NotLeader { leader_hint: None }
        );
    }
}
