//! The two-step removal of a voter for `MembershipChange::Remove` (issue 10 point 3).
//!
//! The core never removes a voter directly (`ConfChangeError::VoterRemoval`): a voter is
//! first demoted to learner by a joint change (`learners_next`, left automatically), and
//! only the learner is then removed. This module owns the driver that does both steps for
//! one caller: it holds the caller's completer while the demotion is pending, and once the
//! joint configuration was entered and left here it asks the worker to propose the
//! learner's removal with the caller's completer as that entry's waiter, so the call
//! resolves when both are done. If leadership moved between the steps the call completes
//! `NotLeader` (the demotion took effect; removing a learner is direct, so a retry at the
//! new leader finishes the job).
//!
//! Never proposes anything itself and never touches waiter bookkeeping: the worker does
//! (`Worker::drive_removal`).

use crate::api::{MembershipError, MembershipProposal};
use crate::raft::conf::{ChangeKind, ConfChange, ConfState};
use crate::raft::types::{NodeId, Replica, Role};

use super::pending::Completer;

/// One voter removal in progress: its demotion is proposed, the removal of the learner
/// not yet.
pub(crate) struct Removal {
    /// The voter being removed.
    pub(crate) replica: Replica,
    /// The demotion's own outcome (its waiter completes this).
    pub(crate) demoted: MembershipProposal,
    /// The caller's completer.
    pub(crate) done: Completer<Result<(), MembershipError>>,
}

/// What the worker does next with a removal.
pub(crate) enum Next {
    /// Nothing yet: keep the removal.
    Wait(Removal),
    /// Propose `ConfChange` with the completer as its waiter (the last step).
    Propose(ConfChange, Completer<Result<(), MembershipError>>),
    /// The call is over with this result.
    Done(Completer<Result<(), MembershipError>>, Result<(), MembershipError>),
}

impl Removal {
    /// The change that demotes `replica` (step one): a joint change left automatically.
    pub(crate) fn demotion(replica: Replica) -> ConfChange {
        ConfChange {
            transition: crate::raft::conf::Transition::JointAuto,
            changes: vec![crate::raft::conf::SingleChange { kind: ChangeKind::AddLearner, replica }],
        }
    }

    /// Decides the next step from the demotion's outcome and this replica's state.
    pub(crate) fn poll(self, role: Role, conf: &ConfState, leader_hint: Option<NodeId>) -> Next {
        if !self.demoted.is_ready() {
            if role != Role::Leader {
                // Deposed with the demotion pending: its outcome is unknown here.
                return Next::Done(self.done, Err(MembershipError::Indeterminate));
            }
            return Next::Wait(self);
        }
        // Ready: `wait` returns at once.
        if let Err(e) = self.demoted.wait() {
            return Next::Done(self.done, Err(e));
        }
        let id = self.replica.id;
        if !conf.contains(id) {
            // Removed meanwhile (another leader finished the job).
            return Next::Done(self.done, Ok(()));
        }
        if conf.is_joint() {
            // Demotion applied; the automatic leave is not yet applied here.
            if role != Role::Leader {
                return Next::Done(self.done, Err(MembershipError::NotLeader { leader_hint }));
            }
            return Next::Wait(Removal { demoted: MembershipProposal::ready(Ok(())), ..self });
        }
        if role != Role::Leader {
            return Next::Done(self.done, Err(MembershipError::NotLeader { leader_hint }));
        }
        if !conf.is_learner(id) {
            return Next::Done(
                self.done,
                Err(MembershipError::Invalid {
                    node: self.replica.node,
                    why: "promoted again before its removal".to_string(),
                }),
            );
        }
        Next::Propose(ConfChange::single(ChangeKind::Remove, self.replica), self.done)
    }
}
