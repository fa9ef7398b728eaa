//! Group membership: the configuration ([`ConfState`]), the changes that move between
//! configurations ([`ConfChange`]), and the rules for applying them (joint consensus,
//! Raft thesis §4.3; single-step changes, thesis §4.1).
//!
//! Owns the pure function "configuration + change -> new configuration or typed error",
//! including the removal rule: a voter is never removed directly, in a single step or in
//! a joint change; it is demoted to learner first (in a joint change through
//! `learners_next`), and only the learner is removed. A removed replica destroys itself
//! when it applies its removal, possibly before the other members know the removal
//! committed; a learner's vote is still granted when asked but no quorum counts on it, so
//! destroying a learner never costs a quorum a vote it needs.
//! Never touches progress, logs or messages: `raft.rs` decides when a change applies.

use thiserror::Error;

use super::types::{Replica, ReplicaId};

/// A group's configuration. In a joint configuration (`voters_outgoing` non-empty) a
/// decision needs a majority of `voters` AND a majority of `voters_outgoing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// The (incoming) voters.
    pub voters: Vec<Replica>,
    /// The outgoing voters of a joint configuration; empty when not joint.
    pub voters_outgoing: Vec<Replica>,
    /// Non-voting members.
    pub learners: Vec<Replica>,
    /// Voters being demoted: still outgoing voters now, learners once the joint
    /// configuration is left.
    pub learners_next: Vec<Replica>,
    /// Leave the joint configuration automatically once it is applied.
    pub auto_leave: bool,
    /// The highest replica id ever admitted; a new replica must have a higher id, so ids
    /// are never reused.
    pub max_replica_id: ReplicaId,
    /// Replicas removed from the group that have not yet confirmed their destruction
    /// (TiKV raftstore-v2's `removed_records`): recorded when a removal applies, dropped
    /// by a replicated [`ChangeKind::Forget`] once the removed replica's node confirmed,
    /// so every leader, including one elected later, knows whom to keep telling. At most
    /// [`MAX_REMOVED_RECORDS`], oldest first (a node that is gone for good never
    /// confirms; past the bound the oldest record is dropped, and that replica is left to
    /// the stale-peer check of its own node).
    pub removed: Vec<Replica>,
}

/// The most removal records a configuration keeps ([`ConfState::removed`]).
pub const MAX_REMOVED_RECORDS: usize = 32;

impl ConfState {
    /// A configuration of the given voters.
    pub fn with_voters(voters: impl IntoIterator<Item = Replica>) -> Self {
        let voters: Vec<Replica> = voters.into_iter().collect();
        let max_replica_id = voters.iter().map(|r| r.id).max().unwrap_or(0);
        ConfState { voters, max_replica_id, ..Default::default() }
    }

    /// The change that creates this configuration from an empty one (voters, then
    /// learners, in ascending replica id): the first entry of a bootstrapped group's log.
    pub fn bootstrap_change(&self) -> ConfChange {
        let mut changes: Vec<SingleChange> = self
            .voters
            .iter()
            .map(|&replica| SingleChange { kind: ChangeKind::AddVoter, replica })
            .chain(
                self.learners.iter().map(|&replica| SingleChange { kind: ChangeKind::AddLearner, replica }),
            )
            .collect();
        changes.sort_by_key(|c| c.replica.id);
        ConfChange { transition: Transition::Auto, changes }
    }

    /// Returns the spare capacity of its lists (a configuration built by applying changes
    /// one member at a time has room for more; one kept for long need not).
    pub fn shrink_to_fit(&mut self) {
        for v in [
            &mut self.voters,
            &mut self.voters_outgoing,
            &mut self.learners,
            &mut self.learners_next,
            &mut self.removed,
        ] {
            v.shrink_to_fit();
        }
    }

    /// Whether this is a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: ReplicaId) -> bool {
        contains(&self.voters, id) || contains(&self.voters_outgoing, id)
    }

    /// Whether a replica other than `id` votes in either half of the configuration (else
    /// `id`'s own vote, or its own durable log, is a quorum by itself).
    pub fn has_voter_other_than(&self, id: ReplicaId) -> bool {
        self.voters.iter().chain(&self.voters_outgoing).any(|r| r.id != id)
    }

    /// Whether `id` is an incoming voter.
    pub fn is_incoming_voter(&self, id: ReplicaId) -> bool {
        contains(&self.voters, id)
    }

    /// Whether `id` is a learner (now or after leaving the joint configuration).
    pub fn is_learner(&self, id: ReplicaId) -> bool {
        contains(&self.learners, id)
    }

    /// Whether `id` is a member in any role.
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.find(id).is_some()
    }

    /// The member with replica id `id`, if any.
    pub fn find(&self, id: ReplicaId) -> Option<Replica> {
        self.voters
            .iter()
            .chain(&self.voters_outgoing)
            .chain(&self.learners)
            .chain(&self.learners_next)
            .find(|r| r.id == id)
            .copied()
    }

    /// Every member once (voters, outgoing voters, learners), in that order.
    pub fn members(&self) -> Vec<Replica> {
        let mut out: Vec<Replica> = Vec::with_capacity(self.voters.len() + self.learners.len());
        for r in self.voters.iter().chain(&self.voters_outgoing).chain(&self.learners) {
            if !out.iter().any(|o| o.id == r.id) {
                out.push(*r);
            }
        }
        out
    }

    /// Applies `cc` and returns the resulting configuration.
    pub fn apply(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if cc.changes.is_empty() {
            return self.leave_joint();
        }
        if cc.changes.iter().any(|ch| ch.kind == ChangeKind::Forget) {
            return self.forget(cc);
        }
        // The removal rule: only a non-voter may be removed.
        if let Some(ch) =
            cc.changes.iter().find(|ch| ch.kind == ChangeKind::Remove && self.is_voter(ch.replica.id))
        {
            return Err(ConfChangeError::VoterRemoval { replica: ch.replica.id });
        }
        let joint = match cc.transition {
            // Bootstrapping (no voters yet): one step, whatever its size.
            Transition::Auto => !self.voters.is_empty() && cc.changes.len() > 1 && self.voter_changes(cc) > 1,
            Transition::JointAuto | Transition::JointExplicit => true,
        };
        if joint {
            self.enter_joint(cc.transition != Transition::JointExplicit, cc)
        } else {
            self.simple(cc)
        }
    }

    /// How many incoming voters `cc` would add or remove (promotions and demotions count).
    fn voter_changes(&self, cc: &ConfChange) -> usize {
        let mut n = 0;
        for ch in &cc.changes {
            let is_voter = self.is_incoming_voter(ch.replica.id);
            match ch.kind {
                ChangeKind::AddVoter if !is_voter => n += 1,
                ChangeKind::AddLearner | ChangeKind::Remove if is_voter => n += 1,
                _ => {}
            }
        }
        n
    }

    fn simple(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::InJoint);
        }
        let mut next = self.clone();
        next.apply_changes(cc)?;
        let diff = symmetric_difference(&self.voters, &next.voters);
        if diff > 1 && !self.voters.is_empty() {
            return Err(ConfChangeError::TooManyVoterChanges);
        }
        Ok(next)
    }

    fn enter_joint(&self, auto_leave: bool, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if self.is_joint() {
            return Err(ConfChangeError::InJoint);
        }
        if self.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        let mut next = self.clone();
        next.voters_outgoing = self.voters.clone();
        next.apply_changes(cc)?;
        next.auto_leave = auto_leave;
        Ok(next)
    }

    /// Drops the removal records of `cc` (only `Forget` changes, each naming a record).
    /// Membership is unchanged, so this is allowed in a joint configuration too.
    fn forget(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        let mut next = self.clone();
        for ch in &cc.changes {
            if ch.kind != ChangeKind::Forget {
                return Err(ConfChangeError::ForgetMixed);
            }
            let before = next.removed.len();
            next.removed.retain(|r| *r != ch.replica);
            if next.removed.len() == before {
                return Err(ConfChangeError::NotRemoved { replica: ch.replica.id });
            }
        }
        Ok(next)
    }

    fn leave_joint(&self) -> Result<ConfState, ConfChangeError> {
        if !self.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        // The removal rule when leaving: every outgoing voter stays a voter or was demoted
        // through `learners_next` (never dropped), so it keeps answering votes.
        if let Some(r) = self
            .voters_outgoing
            .iter()
            .find(|r| !contains(&self.voters, r.id) && !contains(&self.learners_next, r.id))
        {
            return Err(ConfChangeError::VoterRemoval { replica: r.id });
        }
        let mut next = self.clone();
        let promoted = std::mem::take(&mut next.learners_next);
        next.learners.extend(promoted);
        next.voters_outgoing.clear();
        next.auto_leave = false;
        Ok(next)
    }

    fn apply_changes(&mut self, cc: &ConfChange) -> Result<(), ConfChangeError> {
        for ch in &cc.changes {
            let r = ch.replica;
            if r.id == 0 || r.node == 0 {
                return Err(ConfChangeError::ZeroId);
            }
            match self.find(r.id) {
                Some(existing) if existing.node != r.node => {
                    return Err(ConfChangeError::NodeMismatch { replica: r.id, node: existing.node });
                }
                Some(_) => {}
                None => {
                    if ch.kind == ChangeKind::Remove {
                        continue;
                    }
                    if r.id <= self.max_replica_id {
                        return Err(ConfChangeError::ReplicaIdReused {
                            replica: r.id,
                            max: self.max_replica_id,
                        });
                    }
                    // One pass over the lists, no allocation: an entry may carry thousands of
                    // changes.
                    let mut on_node = self.voters.iter().chain(&self.voters_outgoing).chain(&self.learners);
                    if let Some(other) = on_node.find(|m| m.node == r.node) {
                        return Err(ConfChangeError::NodeAlreadyMember { node: r.node, replica: other.id });
                    }
                    self.max_replica_id = r.id;
                }
            }
            match ch.kind {
                ChangeKind::AddVoter => self.make_voter(r),
                ChangeKind::AddLearner => self.make_learner(r),
                ChangeKind::Remove => self.remove(r),
                // `apply` sends every change list holding a `Forget` to `forget`.
                ChangeKind::Forget => return Err(ConfChangeError::ForgetMixed),
            }
            if self.voters.len() + self.learners.len() + self.learners_next.len() > MAX_MEMBERS {
                return Err(ConfChangeError::TooManyMembers { max: MAX_MEMBERS });
            }
        }
        if self.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        Ok(())
    }

    fn make_voter(&mut self, r: Replica) {
        if self.is_incoming_voter(r.id) {
            return;
        }
        self.learners.retain(|x| x.id != r.id);
        self.learners_next.retain(|x| x.id != r.id);
        self.voters.push(r);
    }

    fn make_learner(&mut self, r: Replica) {
        if self.is_learner(r.id) || contains(&self.learners_next, r.id) {
            return;
        }
        self.voters.retain(|x| x.id != r.id);
        if contains(&self.voters_outgoing, r.id) {
            self.learners_next.push(r);
        } else {
            self.learners.push(r);
        }
    }

    fn remove(&mut self, r: Replica) {
        let id = r.id;
        self.voters.retain(|x| x.id != id);
        self.learners.retain(|x| x.id != id);
        self.learners_next.retain(|x| x.id != id);
        if !self.removed.contains(&r) {
            if self.removed.len() >= MAX_REMOVED_RECORDS {
                self.removed.remove(0);
            }
            self.removed.push(r);
        }
    }
}

fn contains(set: &[Replica], id: ReplicaId) -> bool {
    set.iter().any(|r| r.id == id)
}

fn symmetric_difference(a: &[Replica], b: &[Replica]) -> usize {
    a.iter().filter(|x| !contains(b, x.id)).count() + b.iter().filter(|x| !contains(a, x.id)).count()
}

/// What a single change does to one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// Add as a voter, or promote a learner.
    AddVoter,
    /// Add as a learner, or demote a voter.
    AddLearner,
    /// Remove from the group (a learner: voters are demoted first). The replica is
    /// recorded in [`ConfState::removed`] until it confirms its destruction.
    Remove,
    /// The removed replica confirmed its destruction: drop its removal record. Changes
    /// no membership; never mixed with other kinds.
    Forget,
}

/// One change to one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SingleChange {
    /// What to do.
    pub kind: ChangeKind,
    /// To whom.
    pub replica: Replica,
}

/// How a change moves between configurations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transition {
    /// Single step when at most one voter changes, otherwise a joint configuration left
    /// automatically.
    #[default]
    Auto,
    /// Always through a joint configuration, left automatically once applied.
    JointAuto,
    /// Always through a joint configuration, left only by an explicit empty change.
    JointExplicit,
}

/// A membership change. An empty `changes` leaves the current joint configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// How to move between configurations.
    pub transition: Transition,
    /// The changes; empty means "leave the joint configuration".
    pub changes: Vec<SingleChange>,
}

impl ConfChange {
    /// A change of one replica, single step.
    pub fn single(kind: ChangeKind, replica: Replica) -> Self {
        ConfChange { transition: Transition::Auto, changes: vec![SingleChange { kind, replica }] }
    }

    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> Self {
        ConfChange::default()
    }

    /// Whether this change leaves a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Most replicas (voters and learners) one configuration may hold: the codec's default
/// limit on a member list (a larger configuration could not travel in a snapshot), and a
/// bound on the work a membership entry makes every replica do when it applies it (a
/// hostile or buggy leader's entry of thousands of changes to an ever larger group).
pub const MAX_MEMBERS: usize = 4096;

/// Why a membership change cannot be applied to a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfChangeError {
    /// A replica or node id of 0.
    #[error("replica and node ids must be non-zero")]
    ZeroId,
    /// A voter cannot be removed directly: demote it to learner first (`AddLearner`,
    /// in a joint change with auto-leave), then remove the learner.
    #[error("replica {replica} is a voter: demote it to learner first, then remove the learner")]
    VoterRemoval {
        /// The voter named for removal.
        replica: ReplicaId,
    },
    /// The leader cannot remove or demote itself: transfer leadership first.
    #[error("replica {replica} leads the group: transfer leadership before removing or demoting it")]
    RemovesLeader {
        /// The leader.
        replica: ReplicaId,
    },
    /// The configuration is joint; leave it first.
    #[error("the configuration is joint; leave it before another change")]
    InJoint,
    /// Leaving a joint configuration that is not joint.
    #[error("the configuration is not joint; there is nothing to leave")]
    NotJoint,
    /// A single-step change may add or remove at most one voter.
    #[error("a single-step change may change at most one voter; use a joint change")]
    TooManyVoterChanges,
    /// The change would leave no voter.
    #[error("the change would leave the group without voters")]
    NoVoters,
    /// A new replica must have an id above every id ever used in the group.
    #[error("replica id {replica} was used before (highest admitted id is {max}); ids are never reused")]
    ReplicaIdReused {
        /// The id refused.
        replica: ReplicaId,
        /// The highest id ever admitted.
        max: ReplicaId,
    },
    /// The replica exists on a different node.
    #[error("replica {replica} lives on node {node}, not the node named")]
    NodeMismatch {
        /// The replica.
        replica: ReplicaId,
        /// Its real node.
        node: u64,
    },
    /// A `Forget` change mixed with membership changes.
    #[error("a change that forgets removal records cannot change membership too")]
    ForgetMixed,
    /// `Forget` of a replica the configuration holds no removal record of.
    #[error("replica {replica} has no removal record to forget")]
    NotRemoved {
        /// The replica named.
        replica: ReplicaId,
    },
    /// The node already hosts a replica of this group.
    #[error("node {node} already hosts replica {replica} of this group")]
    NodeAlreadyMember {
        /// The node.
        node: u64,
        /// Its existing replica.
        replica: ReplicaId,
    },
    /// The configuration would hold more than [`MAX_MEMBERS`] replicas.
    #[error("a configuration holds at most {max} replicas")]
    TooManyMembers {
        /// [`MAX_MEMBERS`].
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(i: u64) -> Replica {
        Replica::new(i, i)
    }

    /// A configuration holds at most `MAX_MEMBERS` replicas: a change that would pass it is
    /// refused whole (so every replica applying the entry keeps the same configuration).
    #[test]
    fn a_configuration_holds_at_most_max_members() {
        let base = ConfState::with_voters([r(1), r(2), r(3)]);
        let learners = |n: u64| ConfChange {
            changes: (4..4 + n)
                .map(|i| SingleChange { kind: ChangeKind::AddLearner, replica: r(i) })
                .collect(),
            ..Default::default()
        };
        let full = base.apply(&learners(MAX_MEMBERS as u64 - 3)).unwrap();
        assert_eq!(full.members().len(), MAX_MEMBERS);
        assert_eq!(
            base.apply(&learners(MAX_MEMBERS as u64 - 2)),
            Err(ConfChangeError::TooManyMembers { max: MAX_MEMBERS })
        );
        let one_more = ConfChange {
            changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(10_000) }],
            ..Default::default()
        };
        assert_eq!(full.apply(&one_more), Err(ConfChangeError::TooManyMembers { max: MAX_MEMBERS }));
    }

    #[test]
    fn bootstrap_from_empty_is_one_step() {
        let want = ConfState::with_voters([r(1), r(2), r(3)]);
        let got = ConfState::default().apply(&want.bootstrap_change()).unwrap();
        assert_eq!(got.voters, want.voters);
        assert!(!got.is_joint());
        assert_eq!(got.max_replica_id, 3);
        // From a non-empty configuration two voter additions need a joint configuration.
        let cc = ConfChange {
            transition: Transition::Auto,
            changes: vec![
                SingleChange { kind: ChangeKind::AddVoter, replica: r(4) },
                SingleChange { kind: ChangeKind::AddVoter, replica: r(5) },
            ],
        };
        let joint = got.apply(&cc).unwrap();
        assert!(joint.is_joint() && joint.auto_leave);
        assert_eq!(joint.voters_outgoing, want.voters);
    }

    #[test]
    fn single_step_refuses_two_voter_changes() {
        let c = ConfState::with_voters([r(1), r(2), r(3)]);
        let cc = ConfChange {
            transition: Transition::Auto,
            changes: vec![
                SingleChange { kind: ChangeKind::AddLearner, replica: r(1) },
                SingleChange { kind: ChangeKind::AddLearner, replica: r(2) },
            ],
        };
        // Auto picks joint for two voter changes; a forced simple path would refuse.
        assert!(c.apply(&cc).unwrap().is_joint());
        assert_eq!(c.simple(&cc), Err(ConfChangeError::TooManyVoterChanges));
    }

    #[test]
    fn demotion_in_joint_goes_through_learners_next() {
        let c = ConfState::with_voters([r(1), r(2), r(3)]);
        let cc = ConfChange {
            transition: Transition::JointExplicit,
            changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(3) }],
        };
        let j = c.apply(&cc).unwrap();
        assert_eq!(j.learners_next, vec![r(3)]);
        assert!(j.is_voter(3) && !j.is_incoming_voter(3) && !j.auto_leave);
        let left = j.apply(&ConfChange::leave_joint()).unwrap();
        assert_eq!(left.learners, vec![r(3)]);
        assert!(!left.is_voter(3) && !left.is_joint());
        assert_eq!(left.apply(&ConfChange::leave_joint()), Err(ConfChangeError::NotJoint));
    }

    /// The removal rule (issue 10 point 3; Raft thesis §4.1/§4.3 decide when a changed
    /// configuration counts, this rule decides who may disappear): a voter is never removed
    /// directly, neither in a single step nor in a joint change, and leaving a joint
    /// configuration never drops an outgoing voter that was not demoted to learner.
    #[test]
    fn a_voter_is_never_removed_directly() {
        let c = ConfState::with_voters([r(1), r(2), r(3), r(4)]);
        let refused = Err(ConfChangeError::VoterRemoval { replica: 4 });
        assert_eq!(c.apply(&ConfChange::single(ChangeKind::Remove, r(4))), refused);
        // Demote-then-remove inside one simple change is still a direct removal.
        let both = ConfChange {
            transition: Transition::Auto,
            changes: vec![
                SingleChange { kind: ChangeKind::AddLearner, replica: r(4) },
                SingleChange { kind: ChangeKind::Remove, replica: r(4) },
            ],
        };
        assert_eq!(c.apply(&both), refused);
        for transition in [Transition::Auto, Transition::JointAuto, Transition::JointExplicit] {
            let replace = ConfChange {
                transition,
                changes: vec![
                    SingleChange { kind: ChangeKind::AddVoter, replica: r(5) },
                    SingleChange { kind: ChangeKind::Remove, replica: r(4) },
                ],
            };
            assert_eq!(c.apply(&replace), refused, "{transition:?}");
        }
        // The rule's path: demote in a joint change, leave, remove the learner.
        let demote = ConfChange {
            transition: Transition::JointAuto,
            changes: vec![
                SingleChange { kind: ChangeKind::AddVoter, replica: r(5) },
                SingleChange { kind: ChangeKind::AddLearner, replica: r(4) },
            ],
        };
        let joint = c.apply(&demote).unwrap();
        assert_eq!(joint.learners_next, vec![r(4)]);
        // While joint, the outgoing voter 4 is still a voter: not removable.
        assert_eq!(joint.apply(&ConfChange::single(ChangeKind::Remove, r(4))), refused);
        let left = joint.apply(&ConfChange::leave_joint()).unwrap();
        assert!(left.is_learner(4) && !left.is_voter(4));
        let removed = left.apply(&ConfChange::single(ChangeKind::Remove, r(4))).unwrap();
        assert!(!removed.contains(4));
        assert_eq!(removed.voters, vec![r(1), r(2), r(3), r(5)]);
        // A joint configuration that dropped an outgoing voter (never produced under the
        // rule) cannot be left.
        let mut dropped = joint.clone();
        dropped.learners_next.clear();
        assert_eq!(dropped.apply(&ConfChange::leave_joint()), refused);
    }

    /// Removal records (issue 10 point 4): a removal records the replica, a `Forget`
    /// drops exactly that record and nothing else, records are bounded, and a `Forget`
    /// never rides along with a membership change.
    #[test]
    fn removals_are_recorded_until_forgotten() {
        let c = ConfState::with_voters([r(1), r(2), r(3)]);
        let c = c.apply(&ConfChange::single(ChangeKind::AddLearner, r(3))).unwrap();
        assert!(c.removed.is_empty(), "a demotion removes nobody");
        let c = c.apply(&ConfChange::single(ChangeKind::Remove, r(3))).unwrap();
        assert_eq!(c.removed, vec![r(3)]);
        // Removing a non-member records nothing.
        let same = c.apply(&ConfChange::single(ChangeKind::Remove, r(3))).unwrap();
        assert_eq!(same.removed, vec![r(3)]);
        let mixed = ConfChange {
            transition: Transition::Auto,
            changes: vec![
                SingleChange { kind: ChangeKind::Forget, replica: r(3) },
                SingleChange { kind: ChangeKind::AddLearner, replica: r(4) },
            ],
        };
        assert_eq!(c.apply(&mixed), Err(ConfChangeError::ForgetMixed));
        assert_eq!(
            c.apply(&ConfChange::single(ChangeKind::Forget, Replica::new(9, 3))),
            Err(ConfChangeError::NotRemoved { replica: 3 }),
            "the record names the node too"
        );
        let f = c.apply(&ConfChange::single(ChangeKind::Forget, r(3))).unwrap();
        assert!(f.removed.is_empty());
        assert_eq!(
            (f.voters.clone(), f.learners.clone(), f.max_replica_id),
            (c.voters.clone(), c.learners.clone(), 3)
        );
        // Allowed while joint: membership is untouched.
        let j = c
            .apply(&ConfChange {
                transition: Transition::JointExplicit,
                changes: vec![SingleChange { kind: ChangeKind::AddVoter, replica: r(5) }],
            })
            .unwrap();
        let jf = j.apply(&ConfChange::single(ChangeKind::Forget, r(3))).unwrap();
        assert!(jf.is_joint() && jf.removed.is_empty());
        // Bounded: the oldest record goes first.
        let mut b = ConfState::with_voters([r(1)]);
        for i in 2..(MAX_REMOVED_RECORDS as u64 + 4) {
            b = b.apply(&ConfChange::single(ChangeKind::AddLearner, r(i))).unwrap();
            b = b.apply(&ConfChange::single(ChangeKind::Remove, r(i))).unwrap();
        }
        assert_eq!(b.removed.len(), MAX_REMOVED_RECORDS);
        assert_eq!(b.removed[0], r(4), "records of replicas 2 and 3 dropped");
        assert_eq!(b.removed.last(), Some(&r(MAX_REMOVED_RECORDS as u64 + 3)));
    }

    #[test]
    fn replica_ids_are_never_reused() {
        let c = ConfState::with_voters([r(1), r(2), r(3)]);
        let c = c.apply(&ConfChange::single(ChangeKind::AddLearner, r(3))).unwrap();
        let c = c.apply(&ConfChange::single(ChangeKind::Remove, r(3))).unwrap();
        assert_eq!(
            c.apply(&ConfChange::single(ChangeKind::AddVoter, Replica::new(3, 3))),
            Err(ConfChangeError::ReplicaIdReused { replica: 3, max: 3 })
        );
        let c = c.apply(&ConfChange::single(ChangeKind::AddVoter, Replica::new(3, 4))).unwrap();
        assert!(c.is_incoming_voter(4));
        assert!(matches!(
            c.apply(&ConfChange::single(ChangeKind::AddLearner, Replica::new(1, 9))),
            Err(ConfChangeError::NodeAlreadyMember { node: 1, replica: 1 })
        ));
    }
}
