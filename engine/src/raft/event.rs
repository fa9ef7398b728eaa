//! [`Event`]: what happened to a replica's role, leadership and membership since the last
//! `Ready`, handed out in [`crate::raft::Ready::events`] so a runtime reports metrics and
//! events without diffing counters.
//!
//! Owns the vocabulary only; `raft.rs` records the events where they happen. Never carries
//! log data, and never a decision for the runtime to take (a `Ready`'s other fields do that).

use super::types::ReplicaId;

/// One thing that happened to a replica, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A campaign started: a PreVote round (`pre_vote`, asking about `term` without
    /// taking it) or an election in `term`.
    ElectionStarted {
        /// The term asked for.
        term: u64,
        /// Whether this is a PreVote round (the term is not taken).
        pre_vote: bool,
    },
    /// This replica became leader of `term`.
    BecameLeader {
        /// The term it leads.
        term: u64,
        /// Whether it won a transfer campaign (TimeoutNow).
        by_transfer: bool,
    },
    /// This leader stopped leading (a newer term, CheckQuorum, or a transfer completed).
    SteppedDown {
        /// The term it led.
        term: u64,
    },
    /// This leader started handing leadership to `to`.
    TransferStarted {
        /// The transferee.
        to: ReplicaId,
    },
    /// A transfer this leader started ended without `to` taking over (timeout, `to`
    /// left the configuration, or another transfer superseded it).
    TransferAborted {
        /// The transferee it gave up on.
        to: ReplicaId,
    },
    /// A membership change was applied (the configuration is now `Raft::conf`).
    MembershipApplied {
        /// The index of the change's entry.
        index: u64,
        /// What the change did to the joint state.
        step: MembershipStep,
    },
}

/// How a membership change moved the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipStep {
    /// A single-step change (or a removal record forgotten).
    Simple,
    /// Entered a joint configuration.
    EnteredJoint,
    /// Left a joint configuration.
    LeftJoint,
}
