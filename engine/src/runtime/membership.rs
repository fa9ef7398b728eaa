//! Membership requests: a change (or a joint change) checked against the leader's
//! configuration, new replicas' ids, the learner catch-up check before a promotion, and a
//! voter's removal in two steps (demote, then remove the learner; `removal`).
//!
//! Never applies a change (Raft does, once committed); completes the caller only through
//! the group's waiters.

use super::group::Group;
use super::pending::{pending, Completer};
use super::removal::{Next as RemovalNext, Removal};
use super::waiters::{Done, Tally};
use super::worker::Worker;
use crate::api::{MembershipChange, MembershipError};
use crate::raft::conf::{ChangeKind, ConfChange, SingleChange, Transition};
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};

impl Worker {
    /// A membership change asked of `group`'s leader; a lone `Remove` of a voter runs in
    /// two steps (`removal`).
    pub(super) fn conf_change(
        &mut self,
        group: u64,
        change: MembershipChange,
        done: Completer<Result<(), MembershipError>>,
    ) {
        if self.failed {
            return done.complete(Err(MembershipError::StorageFailed));
        }
        let lag_max = self.sh.cfg.get().promote_lag_max;
        let timeout = u64::from(self.sh.cfg.get().propose_timeout_ticks);
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(MembershipError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        if g.raft.role() != Role::Leader {
            return done.complete(Err(MembershipError::NotLeader { leader_hint: g.leader_node() }));
        }
        let cc = match change {
            MembershipChange::Joint(changes) => {
                let mut next_id = g.raft.conf().max_replica_id;
                let mut out = Vec::with_capacity(changes.len());
                for ch in &changes {
                    if matches!(ch, MembershipChange::Joint(_)) {
                        return done.complete(Err(MembershipError::Invalid {
                            node: 0,
                            why: "nested joint change".to_string(),
                        }));
                    }
                    match single_change(g, ch, &mut next_id, lag_max) {
                        Ok(c) => out.push(c),
                        Err(e) => return done.complete(Err(e)),
                    }
                }
                ConfChange { transition: Transition::JointAuto, changes: out }
            }
            other => {
                let mut next_id = g.raft.conf().max_replica_id;
                match single_change(g, &other, &mut next_id, lag_max) {
                    Ok(c)
                        if matches!(other, MembershipChange::Remove(_))
                            && c.kind == ChangeKind::AddLearner =>
                    {
                        // A voter: demote it first, then remove the learner (`removal.rs`).
                        if g.removal.is_some() {
                            return done.complete(Err(MembershipError::ChangePending));
                        }
                        let (demoted, step) = pending();
                        if let Err(e) = Self::propose_conf(
                            &mut self.tally,
                            self.ticks + timeout,
                            g,
                            Removal::demotion(c.replica),
                            step,
                        ) {
                            return done.complete(Err(e));
                        }
                        g.removal = Some(Box::new(Removal { replica: c.replica, demoted, done }));
                        self.removing.push(group);
                        Self::touch(&mut self.touched, g);
                        return;
                    }
                    Ok(c) => ConfChange { transition: Transition::Auto, changes: vec![c] },
                    Err(e) => return done.complete(Err(e)),
                }
            }
        };
        // On refusal `propose_conf` completed `done` with the error.
        if Self::propose_conf(&mut self.tally, self.ticks + timeout, g, cc, done).is_ok() {
            Self::touch(&mut self.touched, g);
        }
    }

    /// Proposes `cc` with `done` as its waiter; on refusal completes `done` and returns
    /// the error too.
    fn propose_conf(
        tally: &mut Tally,
        deadline: u64,
        g: &mut Group,
        cc: ConfChange,
        done: Completer<Result<(), MembershipError>>,
    ) -> Result<(), MembershipError> {
        match g.raft.propose_conf_change(cc) {
            Ok((index, term)) => {
                g.waiters.add(tally, index, term, deadline, Done::Conf(done));
                Ok(())
            }
            Err(e) => {
                let e = MembershipError::from(e);
                done.complete(Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Moves a voter removal on (see `removal.rs`): called when the group applied entries
    /// and on every tick while the removal lasts.
    pub(super) fn drive_removal(&mut self, g: &mut Group) {
        let Some(r) = g.removal.take() else { return };
        match (*r).poll(g.raft.role(), g.raft.conf(), g.leader_node()) {
            RemovalNext::Wait(r) => g.removal = Some(Box::new(r)),
            RemovalNext::Done(done, res) => done.complete(res),
            RemovalNext::Propose(cc, done) => {
                let deadline = self.ticks + u64::from(self.sh.cfg.get().propose_timeout_ticks);
                if Self::propose_conf(&mut self.tally, deadline, g, cc, done).is_ok() {
                    Self::touch(&mut self.touched, g);
                }
            }
        }
    }

    /// Ticks the voter removals in progress (usually none).
    pub(super) fn tick_removals(&mut self) {
        let ids = std::mem::take(&mut self.removing);
        for gid in ids {
            let Some(mut g) = self.groups.remove(&gid) else { continue };
            self.drive_removal(&mut g);
            if g.removal.is_some() {
                self.removing.push(gid);
            }
            self.groups.insert(gid, g);
        }
    }
}

/// One change of a membership request, checked against the leader's configuration.
/// New replicas get ids above `next_id` (advanced).
fn single_change(
    g: &Group,
    change: &MembershipChange,
    next_id: &mut ReplicaId,
    lag_max: u64,
) -> Result<SingleChange, MembershipError> {
    let conf = g.raft.conf();
    let on = |node: NodeId| conf.members().into_iter().find(|r| r.node == node);
    let invalid = |node: NodeId, why: &str| MembershipError::Invalid { node, why: why.to_string() };
    Ok(match *change {
        MembershipChange::AddLearner(node) | MembershipChange::AddVoter(node) => {
            if on(node).is_some() {
                return Err(invalid(node, "already a member"));
            }
            let kind = if matches!(change, MembershipChange::AddLearner(_)) {
                ChangeKind::AddLearner
            } else {
                ChangeKind::AddVoter
            };
            *next_id += 1;
            SingleChange { kind, replica: Replica::new(node, *next_id) }
        }
        MembershipChange::Promote { node, force } => {
            let Some(r) = on(node).filter(|r| conf.is_learner(r.id)) else {
                return Err(invalid(node, "not a learner"));
            };
            if !force {
                let last = g.raft.last_index();
                let matched =
                    g.raft.status().followers.iter().find(|f| f.id == r.id).map(|f| f.matched).unwrap_or(0);
                let lag = last.saturating_sub(matched);
                if lag > lag_max {
                    return Err(MembershipError::LearnerNotCaughtUp { node, lag });
                }
            }
            SingleChange { kind: ChangeKind::AddVoter, replica: r }
        }
        MembershipChange::Remove(node) => {
            let Some(r) = on(node) else {
                return Err(invalid(node, "not a member"));
            };
            // A voter is never removed directly: it is demoted (the caller then removes
            // the learner; `conf_change` does both steps for a lone `Remove`).
            let kind = if conf.is_voter(r.id) { ChangeKind::AddLearner } else { ChangeKind::Remove };
            SingleChange { kind, replica: r }
        }
        MembershipChange::Joint(_) => return Err(invalid(0, "nested joint change")),
    })
}
