//! What operations take beyond plain values and what they hand back: a
//! [`MembershipChange`], and the handles [`Proposal`], [`ReadBarrier`] and
//! [`MembershipProposal`] that resolve later.
//!
//! Owns these types. Never completes a handle: the worker that owns the group does.

use bytes::Bytes;

use super::error::{MembershipError, ProposeError, ReadError};
use crate::raft::types::NodeId;
use crate::runtime::Pending;

/// A membership change of one group, by node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Adds `node` as a learner under a new replica id. The node creates its replica when
    /// the leader first contacts it.
    AddLearner(NodeId),
    /// Promotes the learner on `node` to voter. Refused with
    /// [`MembershipError::LearnerNotCaughtUp`] unless its match is within
    /// `promote_lag_max` of the leader's last index, or `force` is set.
    Promote {
        /// The learner's node.
        node: NodeId,
        /// Skip the catch-up check.
        force: bool,
    },
    /// Adds `node` directly as a voter under a new replica id.
    AddVoter(NodeId),
    /// Removes the member on `node`; its replica destroys itself when it applies the
    /// change. A voter is never removed directly (a destroyed voter could take a vote
    /// that members not yet aware of its removal still need): it is first demoted to
    /// learner by a joint change left automatically, then the learner is removed; the call
    /// resolves when both are applied here. If leadership moves between the two steps the
    /// call completes `NotLeader` (or `Indeterminate` if the demotion's outcome is
    /// unknown); removing a learner is direct, so a retry finishes the job. The leader
    /// cannot remove itself ([`ConfChangeError::RemovesLeader`]): transfer leadership
    /// first.
    ///
    /// [`ConfChangeError::RemovesLeader`]: crate::raft::conf::ConfChangeError::RemovesLeader
    Remove(NodeId),
    /// Several of the changes above at once through a joint configuration (Raft thesis
    /// §4.3), left automatically once applied. Resolves when the joint configuration is
    /// entered; the leader then proposes leaving it. Inside a joint change, `Remove` of a
    /// voter demotes it to learner (remove the learner afterwards); `Remove` of a learner
    /// removes it.
    Joint(Vec<MembershipChange>),
}

/// A proposal's outcome: the state machine's result once applied. Wait with
/// [`Pending::wait`] or `.await` it.
pub type Proposal = Pending<Result<Bytes, ProposeError>>;
/// A read barrier: resolves with the index applied locally once the read is linearizable.
pub type ReadBarrier = Pending<Result<u64, ReadError>>;
/// A membership change's outcome: resolves once the change is applied here.
pub type MembershipProposal = Pending<Result<(), MembershipError>>;
