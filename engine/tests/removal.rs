//! Removing a voter never removes a vote that someone still needs (issue 10 point 3):
//! scripted schedules of the Raft core, in the style of `scenarios.rs`.
//!
//! A removed replica is destroyed when it applies its removal, which can happen before the
//! other members of the old configuration know the removal committed; they may still need
//! its vote (Raft thesis §4.1: a configuration takes effect here when applied; §4.3: a
//! joint configuration needs a majority of both halves). The core therefore never removes
//! a voter directly: it is demoted to learner first, a learner keeps granting votes until
//! it is destroyed (etcd: learners must be allowed to cast votes when asked), and only the
//! learner is removed.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use flotilla_engine::raft::*;

fn single(kind: ChangeKind, replica: Replica) -> SingleChange {
    SingleChange { kind, replica }
}

/// Whether `from` granted a real vote in `term`.
fn granted(net: &Network, from: ReplicaId, term: u64) -> bool {
    net.logged("RequestVoteResponse").iter().any(|m| {
        m.from == from
            && m.term == term
            && matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. })
    })
}

/// Drops what leader `from` tells `to` about commits at or past `index` (the commit of an
/// entry reaches some members and not others).
fn hide_commit(from: ReplicaId, to: ReplicaId, index: u64) -> DropFn {
    Box::new(move |m: &Message| {
        m.from == from
            && m.to == to
            && match m.body {
                MessageBody::Append { commit, .. }
                | MessageBody::Commit { commit }
                | MessageBody::Heartbeat { commit, .. } => commit >= index,
                _ => false,
            }
    })
}

/// The core refuses every direct removal of a voter, and a leader's removal or demotion of
/// itself, with typed errors; nothing is appended.
#[test]
fn direct_voter_removal_and_leader_self_removal_are_refused() {
    let mut net = Network::new(&[1, 2, 3, 4], |_| {});
    net.add(new_raft(5, voters(&[1, 2, 3, 4]), |_| {}));
    net.elect(1);
    net.propose(1, data(1));
    let last = net.raft(1).last_index();
    let refused = |replica| Err(ProposeError::InvalidConfChange(ConfChangeError::VoterRemoval { replica }));
    let l = net.raft_mut(1);
    assert_eq!(l.propose_conf_change(ConfChange::single(ChangeKind::Remove, r(4))), refused(4));
    for transition in [Transition::Auto, Transition::JointAuto, Transition::JointExplicit] {
        let cc = ConfChange {
            transition,
            changes: vec![single(ChangeKind::AddVoter, r(5)), single(ChangeKind::Remove, r(4))],
        };
        assert_eq!(l.propose_conf_change(cc), refused(4), "{transition:?}");
    }
    let me = |_| Err(ProposeError::InvalidConfChange(ConfChangeError::RemovesLeader { replica: 1 }));
    assert_eq!(l.propose_conf_change(ConfChange::single(ChangeKind::Remove, r(1))), refused(1));
    assert_eq!(l.propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(1))), me(()));
    let cc = ConfChange {
        transition: Transition::JointAuto,
        changes: vec![single(ChangeKind::AddVoter, r(5)), single(ChangeKind::AddLearner, r(1))],
    };
    assert_eq!(l.propose_conf_change(cc), me(()));
    assert_eq!(l.last_index(), last, "nothing was appended");
}

/// The joint schedule, {1,2,7} -> {1,2,8} with 2 partitioned, under the rule.
/// Replacing 7 by 8 demotes 7 (`learners_next`). The leave commits via 1, 7 and 8 with 2
/// cut off; 7 learns the commit and is a learner now; 1 crashes before 8 learns it. 2 and
/// 8, still joint, need a majority of {1,2,7}: 8 wins with the votes of 2 and the learner
/// 7, then removes the learner, which is destroyed; the group {1,2,8} keeps committing with
/// 1 down. Before the rule 7 was removed by the leave and destroyed when it applied it:
/// 2 and 8 could never elect a leader.
#[test]
fn joint_replacement_with_member_partitioned_keeps_the_needed_vote() {
    let ids = [1, 2, 7, 8];
    let mut net = Network::empty();
    for id in ids {
        net.add(new_raft(id, voters(&[1, 2, 7]), |_| {}));
    }
    net.elect(1);
    net.propose(1, data(1));
    net.cut_both(1, 2);
    net.cut_both(2, 7);
    net.cut_both(2, 8);
    // Direct removal is refused; the rule's change demotes 7.
    let direct = ConfChange {
        transition: Transition::Auto,
        changes: vec![single(ChangeKind::AddVoter, r(8)), single(ChangeKind::Remove, r(7))],
    };
    assert!(net.raft_mut(1).propose_conf_change(direct).is_err());
    let demote = ConfChange {
        transition: Transition::Auto,
        changes: vec![single(ChangeKind::AddVoter, r(8)), single(ChangeKind::AddLearner, r(7))],
    };
    let joint_index = net.raft_mut(1).propose_conf_change(demote).unwrap().0;
    let leave = joint_index + 1;
    // The leave's commit reaches 7 and not 8.
    net.drop_if = Some(hide_commit(1, 8, leave));
    net.settle();
    assert!(net.raft(1).committed() >= leave, "the leave committed via 1, 7 and 8");
    assert_eq!(net.raft(8).last_index(), leave, "8 holds the leave");
    assert!(net.raft(8).committed() < leave && net.raft(8).conf().is_joint(), "8 does not know it committed");
    let c7 = net.raft(7).conf().clone();
    assert!(!c7.is_joint() && c7.is_learner(7), "7 applied the leave: a learner now, {c7:?}");
    assert!(net.raft(2).conf().is_joint() || net.raft(2).last_index() < joint_index);
    // 1 crashes before proposing the learner's removal; the partition heals.
    net.heal();
    net.isolate(1);
    net.campaign(8);
    assert_eq!(net.raft(8).role(), Role::Leader, "2 and 8 elect a leader with the learner's vote");
    let term = net.raft(8).term();
    assert!(granted(&net, 7, term), "the learner 7 granted its vote");
    assert!(!net.raft(8).conf().is_joint());
    // Now the learner is removed (directly) and destroyed; {2, 8} of {1, 2, 8} commit.
    net.propose_cc(8, ConfChange::single(ChangeKind::Remove, r(7)));
    assert!(!net.raft(7).conf().contains(7), "7 applied its removal: destroyed by the runtime");
    net.nodes.remove(&7);
    net.propose(8, data(2));
    assert_eq!(net.applied_data(2).last(), Some(&data(2)));
}

/// The single-step schedule, 4 -> 3, under the rule: demoting 4 (one step) commits
/// via 1, 2 and 4 with 3 cut off; 4 learns the commit and is a learner; 1 crashes before 2
/// learns it. 2, whose configuration is still {1,2,3,4}, needs three votes: 3's and the
/// learner 4's. Before the rule 4 was removed outright and destroyed on applying it, and 2
/// and 3 could never elect a leader.
#[test]
fn single_step_removal_with_member_partitioned_keeps_the_needed_vote() {
    let mut net = Network::new(&[1, 2, 3, 4], |_| {});
    net.elect(1);
    net.propose(1, data(1));
    net.cut_both(1, 3);
    net.cut_both(3, 2);
    net.cut_both(3, 4);
    assert!(net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::Remove, r(4))).is_err());
    let demote =
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(4))).unwrap().0;
    net.drop_if = Some(hide_commit(1, 2, demote));
    net.settle();
    assert!(net.raft(1).committed() >= demote);
    assert!(net.raft(4).conf().is_learner(4), "4 applied its demotion");
    assert!(net.raft(2).committed() < demote && net.raft(2).conf().is_voter(4));
    net.heal();
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.raft(2).role(), Role::Leader, "2 and 3 elect a leader with the learner's vote");
    let term = net.raft(2).term();
    assert!(granted(&net, 4, term), "the learner 4 granted its vote");
    net.propose_cc(2, ConfChange::single(ChangeKind::Remove, r(4)));
    net.nodes.remove(&4);
    net.propose(2, data(2));
    assert_eq!(net.applied_data(3).last(), Some(&data(2)));
}

/// Learners keep granting votes until they are destroyed (etcd: learners must be allowed
/// to cast votes when asked), and a leader-elect may need one: voter 4 of {1,2,3,4} is
/// demoted through a joint configuration; the leave commits via 1, 3 and 4 with 2 cut
/// off; only 4 learns the commit. 1 crashes. 3 holds the leave but does not know it
/// committed, so it is still joint and needs 3 of {1,2,3,4}: 2, 3 and the learner 4.
#[test]
fn learner_keeps_voting_until_destroyed() {
    let mut net = Network::new(&[1, 2, 3, 4], |_| {});
    net.elect(1);
    net.propose(1, data(1));
    net.cut_both(1, 2);
    net.cut_both(2, 3);
    net.cut_both(2, 4);
    let cc =
        ConfChange { transition: Transition::JointAuto, changes: vec![single(ChangeKind::AddLearner, r(4))] };
    let joint = net.raft_mut(1).propose_conf_change(cc).unwrap().0;
    let leave = joint + 1;
    net.drop_if = Some(hide_commit(1, 3, leave));
    net.settle();
    assert!(net.raft(1).committed() >= leave);
    let c4 = net.raft(4).conf().clone();
    assert!(!c4.is_joint() && c4.is_learner(4), "4 is a learner: {c4:?}");
    assert!(net.raft(3).conf().is_joint() && net.raft(3).last_index() >= leave);
    net.heal();
    net.isolate(1);
    net.campaign(3);
    assert_eq!(net.raft(3).role(), Role::Leader, "3 needs the learner's vote and gets it");
    assert!(granted(&net, 4, net.raft(3).term()));
    // The learner is then removed and the group goes on with 2 and 3 of {1, 2, 3}.
    net.propose_cc(3, ConfChange::single(ChangeKind::Remove, r(4)));
    net.nodes.remove(&4);
    net.propose(3, data(2));
    assert_eq!(net.applied_data(2).last(), Some(&data(2)));
}

/// From the simulator's traces of seed 7000176 (`SIM_SEED_BASE=7000000` range) and seed
/// 31042259 (a fresh 50,000-seed range), both liveness failures with no safety violation: a removed replica that never learnt its removal (replica 12 in both)
/// campaigns without PreVote and keeps raising the term of a member whose vote the
/// remaining candidates need (replica 8 of {8, 14}; replica 14 of a joint configuration).
/// The candidates' terms trail that member's, and it ignored stale RequestVotes, so they
/// never learnt the higher term: no leader for the rest of the run (term 516 vs 493).
/// Scripted: group {1, 2} (3 removed, cut off from 1, its log behind); 3 raises 2's term
/// before each of 1's campaigns. Now 2 refuses the stale RequestVote with its term (thesis
/// §3.3), 1 adopts it, and its next campaign wins.
#[test]
fn stale_candidate_learns_the_term_a_removed_replica_pumps() {
    let mut conf = voters(&[1, 2]);
    conf.max_replica_id = 3;
    let mut net = Network::empty();
    net.add(new_raft(1, conf.clone(), |_| {}));
    net.add(new_raft(2, conf, |_| {}));
    net.add(new_raft(3, voters(&[1, 2, 3]), |_| {}));
    net.isolate(3);
    net.elect(1);
    net.propose(1, data(1));
    // 3, cut off, raised its term far ahead; 1 and 2 restart (no leader, term 1).
    for _ in 0..100 {
        net.raft_mut(3).tick();
    }
    net.settle();
    let pumped = net.raft(3).term();
    assert!(pumped > 3, "3 campaigned alone: term {pumped}");
    for id in [1, 2] {
        let cfg = config(id);
        let st = net.raft(id).storage().clone();
        net.add(raft_with(cfg, st));
    }
    net.heal();
    net.cut_both(1, 3);
    let mut rounds = None;
    for round in 0..10 {
        // 3 times out again (it stays a candidate): a new term, as in the traces.
        let t = net.raft(3).term();
        for _ in 0..100 {
            net.raft_mut(3).tick();
            if net.raft(3).term() > t {
                break;
            }
        }
        net.settle();
        assert_ne!(net.raft(3).role(), Role::Leader, "3's log is behind");
        net.campaign(1);
        if net.raft(1).role() == Role::Leader {
            rounds = Some(round);
            break;
        }
    }
    assert!(net.raft(2).term() >= pumped);
    assert_eq!(rounds, Some(1), "1 learns 2's term from the refusal and wins its next campaign");
    net.propose(1, data(2));
    assert_eq!(net.applied_data(2).last(), Some(&data(2)));
}
