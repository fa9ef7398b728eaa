//! Behaviour scenarios of the Raft core, after etcd/raft's `testdata` scripts and
//! `raft_test.go` (and the raft-rs equivalents): elections, replication flow control,
//! snapshots, membership changes, leadership transfer, learners, reads, and the
//! durability protocol. Each test names the scenario it follows and asserts the messages
//! and `Ready` the core emits.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use bytes::Bytes;
use common::*;
use flotilla_engine::raft::*;

fn three() -> ConfState {
    voters(&[1, 2, 3])
}

/// A settled 3-voter network (configured by `f`) with replica 1 elected.
fn net3(f: impl Fn(&mut Config)) -> Network {
    let mut net = Network::new(&[1, 2, 3], f);
    net.elect(1);
    net
}

fn follower(l: &Raft<MemStorage>, id: ReplicaId) -> FollowerStatus {
    l.status().followers.into_iter().find(|f| f.id == id).unwrap()
}

fn terms(net: &Network) -> Vec<u64> {
    net.nodes.values().map(|n| n.raft.term()).collect()
}

// =======================================================================================
// Elections
// =======================================================================================

/// etcd testdata `campaign.txt`: a follower times out, persists its term and self-vote,
/// only then asks for votes; voters persist their vote before granting it; the winner
/// appends its no-op, replicates it and commits it once a quorum (itself included, once
/// durable) holds it.
#[test]
fn campaign() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    tick_until_campaign(net.raft_mut(1));
    let out = net.process(1);
    assert_eq!(out.hard_states, vec![hs(1, 1, 0)]);
    assert!(out.messages.is_empty());
    assert_eq!(kinds(&out.persisted_messages), vec!["RequestVote", "RequestVote"]);
    net.deliver();
    for id in [2, 3] {
        let out = net.process(id);
        assert_eq!(out.hard_states, vec![hs(1, 1, 0)], "replica {id} persists its vote");
        assert!(out.messages.is_empty());
        assert_eq!(out.persisted_messages, vec![vote_resp(id, 1, 1, false, false)]);
    }
    net.deliver();
    assert_eq!(net.raft(1).role(), Role::Leader);
    let rd = net.raft_mut(1).ready();
    assert_eq!(rd.entries, vec![Entry { term: 1, index: 1, payload: EntryPayload::Noop }]);
    let mut apps = rd.messages.clone();
    apps.sort_by_key(|m| m.to);
    assert_eq!(
        apps,
        vec![append(1, 2, 1, (0, 0), rd.entries.clone(), 0), append(1, 3, 1, (0, 0), rd.entries.clone(), 0)],
        "a leader elected by others' votes sends its appends before its own write"
    );
    persist(net.raft_mut(1), &rd);
    net.send(rd.messages);
    net.settle();
    for id in [1, 2, 3] {
        assert_eq!(net.raft(id).committed(), 1, "replica {id}");
        assert_eq!(net.node(id).applied.len(), 1);
        assert_eq!(net.raft(id).leader(), 1);
    }
}

/// etcd testdata `prevote.txt`: a PreVote round does not raise the term or record a vote;
/// only after winning it does the replica campaign for real.
#[test]
fn prevote_then_vote() {
    let mut net = Network::new(&[1, 2, 3], |c| c.pre_vote = true);
    tick_until_campaign(net.raft_mut(1));
    assert_eq!(net.raft(1).role(), Role::PreCandidate);
    assert_eq!(net.raft(1).term(), 0);
    let out = net.process(1);
    assert!(out.hard_states.is_empty(), "a PreVote changes no durable state");
    let reqs = of_kind(&out.persisted_messages, "PreVote");
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|m| m.term == 1), "a PreVote asks about the next term");
    net.deliver();
    for id in [2, 3] {
        let out = net.process(id);
        assert!(out.hard_states.is_empty(), "granting a PreVote changes nothing");
        assert_eq!(out.all(), vec![vote_resp(id, 1, 1, true, false)]);
        assert_eq!(net.raft(id).term(), 0);
    }
    net.deliver();
    assert_eq!(net.raft(1).role(), Role::Candidate);
    assert_eq!(net.raft(1).term(), 1);
    net.settle();
    assert_eq!(net.raft(1).role(), Role::Leader);
    assert_eq!(terms(&net), vec![1, 1, 1]);
}

/// etcd testdata `prevote.txt` (partition part), thesis §9.6: a replica cut off from the
/// group keeps failing PreVote without raising its term; when it rejoins, its PreVotes are
/// refused (its log is behind) and the group's term does not grow. Without PreVote the same
/// replica comes back with a higher term and deposes the leader.
#[test]
fn prevote_rejoining_node_does_not_disrupt() {
    for pre_vote in [true, false] {
        let mut net = net3(|c| c.pre_vote = pre_vote);
        net.isolate(3);
        net.propose(1, data(1));
        for _ in 0..100 {
            net.tick(3);
        }
        if pre_vote {
            assert_eq!(net.raft(3).term(), 1, "an isolated pre-candidate never raises its term");
            assert!(net.raft(3).stats().campaigns >= 3);
        } else {
            assert!(net.raft(3).term() > 1);
        }
        net.heal();
        for _ in 0..30 {
            net.tick_all();
        }
        if pre_vote {
            assert_eq!(terms(&net), vec![1, 1, 1], "the group's term did not grow");
            assert_eq!(net.leader(), 1);
            assert_eq!(net.raft(3).leader(), 1);
            assert_eq!(net.raft(3).committed(), net.raft(1).committed());
        } else {
            assert!(net.raft(1).term() > 1, "without PreVote the leader is deposed");
        }
    }
}

/// etcd testdata `checkquorum.txt` / TestLeaderStepdownWhenQuorumLost: a leader that has not
/// heard from a quorum within an election timeout steps down.
#[test]
fn checkquorum_leader_steps_down_without_quorum() {
    let mut net = net3(|c| c.check_quorum = true);
    net.isolate(2);
    net.isolate(3);
    for _ in 0..9 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).role(), Role::Leader, "still within the first period");
    for _ in 0..11 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).role(), Role::Follower);
    assert_eq!(net.raft(1).term(), 1, "stepping down does not raise the term");
    assert_eq!(net.raft(1).stats().check_quorum_step_downs, 1);
    assert!(net.raft_mut(1).propose(data(1)).is_err());

    // With a quorum reachable, the leader stays.
    let mut net = net3(|c| c.check_quorum = true);
    net.isolate(3);
    for _ in 0..50 {
        net.tick_all();
    }
    assert_eq!(net.raft(1).role(), Role::Leader);
}

/// etcd TestLeaderElectionWithCheckQuorum / TestFreeStuckCandidateWithCheckQuorum
/// (thesis §4.2.3): a follower that heard from its leader within the minimum election
/// timeout ignores RequestVote of a higher term (no answer, no term change); once the lease
/// has passed, it votes.
#[test]
fn checkquorum_followers_with_live_leader_refuse_votes() {
    let mut net = net3(|c| c.check_quorum = true);
    // Replica 3's log is as good as anyone's: only the lease refuses it.
    let last = (net.raft(3).last_index(), net.raft(3).term_at(net.raft(3).last_index()).unwrap());
    let out = step_drain(net.raft_mut(2), vote_req(3, 2, 2, last, false));
    assert!(out.all().is_empty(), "{:?}", out.all());
    assert_eq!(net.raft(2).term(), 1);
    assert_eq!(net.raft(2).hard_state().vote, 1);

    // The leader goes silent: once the lease (the minimum election timeout) has passed,
    // the follower votes. (Its randomized timeout is drawn from [10, 1000): it has not
    // campaigned itself yet.)
    let mut f = new_raft(2, three(), |c| {
        c.check_quorum = true;
        c.election_timeout_max_ticks = 1000;
    });
    step_drain(&mut f, append(1, 2, 1, (0, 0), vec![], 0));
    for _ in 0..9 {
        f.tick();
    }
    let out = step_drain(&mut f, vote_req(3, 2, 2, (0, 0), false));
    assert!(out.all().is_empty(), "still in the lease after 9 ticks");
    f.tick();
    assert_eq!(f.role(), Role::Follower);
    let out = step_drain(&mut f, vote_req(3, 2, 2, (0, 0), false));
    assert_eq!(out.all(), vec![vote_resp(2, 3, 2, false, false)]);
    assert_eq!(f.hard_state(), hs(2, 3, 0));
}

/// etcd testdata `prevote_checkquorum.txt` / TestPreVoteWithCheckQuorum: with both on, a
/// replica cut off with an up-to-date log cannot disrupt the group when it rejoins (the
/// followers are in their leader's lease and ignore its PreVotes); when the leader really
/// goes away, the others elect a new one after the lease expires.
#[test]
fn prevote_with_checkquorum() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.isolate(3);
    for _ in 0..60 {
        net.tick(3);
    }
    assert_eq!(net.raft(3).term(), 1);
    net.heal();
    let before = net.log.len();
    for _ in 0..40 {
        net.tick_all();
    }
    assert!(!net.log[before..].iter().any(|m| m.body.kind() == "PreVoteResponse"
        && m.from != 3
        && matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. })));
    assert_eq!(terms(&net), vec![1, 1, 1]);
    assert_eq!(net.leader(), 1);

    // The leader is lost for good: 2 and 3 elect a new one in term 2.
    net.isolate(1);
    for _ in 0..60 {
        net.tick_all();
    }
    let l = net.leader();
    assert!(l == 2 || l == 3);
    assert_eq!(net.raft(l).term(), 2);
    // The old leader stepped down on its own (CheckQuorum) and, cut off, cannot raise its
    // term (PreVote).
    assert_ne!(net.raft(1).role(), Role::Leader);
    assert_eq!(net.raft(1).stats().check_quorum_step_downs, 1);
    assert_eq!(net.raft(1).term(), 1);
}

/// etcd TestLearnerElectionTimeout / TestLearnerPromotion (learner part): learners never
/// campaign, are never asked for votes and never count toward commit.
#[test]
fn learners_replicate_but_never_vote_or_count() {
    let conf = voters_learners(&[1, 2], &[3]);
    let mut net = Network::with_conf(&[1, 2, 3], conf, |_| {});
    for _ in 0..100 {
        net.tick(3);
    }
    assert_eq!(net.raft(3).role(), Role::Follower, "a learner never campaigns");
    assert_eq!(net.raft(3).term(), 0);
    net.campaign(1);
    assert_eq!(net.raft(1).role(), Role::Leader);
    assert!(net.logged("RequestVote").iter().all(|m| m.to != 3), "learners are not asked to vote");
    net.propose(1, data(1));
    assert_eq!(net.applied_data(3), vec![data(1)], "a learner replicates");

    // With voter 2 gone, the learner's acknowledgement commits nothing.
    net.isolate(2);
    let (index, _) = net.propose(1, data(2));
    assert_eq!(net.raft(3).last_index(), index, "the learner holds the entry");
    assert!(net.raft(1).committed() < index, "a learner does not count");

    // A learner told to campaign (TimeoutNow) does nothing.
    let t = net.raft(3).term();
    let out = step_drain(net.raft_mut(3), msg(1, 3, t, MessageBody::TimeoutNow));
    assert!(out.all().is_empty());
    assert_eq!(net.raft(3).role(), Role::Follower);
}

/// etcd TestLearnerCanVote (and testdata `confchange_v2_replace_leader` /
/// joint demotion): a replica that believes it is a learner still grants its vote when
/// asked; a learner-next of a joint configuration is an outgoing voter whose vote a
/// candidate needs.
#[test]
fn learner_next_in_joint_config_votes_when_asked() {
    // A replica whose configuration says it is a learner grants a vote when asked.
    let mut lr = new_raft(3, voters_learners(&[1, 2], &[3]), |_| {});
    let out = step_drain(&mut lr, vote_req(2, 3, 2, (0, 0), false));
    assert_eq!(out.all(), vec![vote_resp(3, 2, 2, false, false)]);

    // Joint configuration: demote 3 and add 4. Outgoing {1,2,3}, incoming {1,2,4},
    // learners_next {3}. With 1 gone, 2 can only win with 3's vote.
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.add(new_raft(4, three(), |_| {}));
    net.elect(1);
    net.propose_cc(
        1,
        ConfChange {
            transition: Transition::JointExplicit,
            changes: vec![
                SingleChange { kind: ChangeKind::AddLearner, replica: r(3) },
                SingleChange { kind: ChangeKind::AddVoter, replica: r(4) },
            ],
        },
    );
    net.tick(1); // the commit reaches everyone
    for id in [1, 2, 3, 4] {
        let c = net.raft(id).conf();
        assert!(c.is_joint(), "replica {id}: {c:?}");
        assert_eq!(c.learners_next, vec![r(3)]);
    }
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.raft(2).role(), Role::Leader);
    let term = net.raft(2).term();
    assert!(net.logged("RequestVoteResponse").iter().any(|m| m.from == 3
        && m.term == term
        && matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. })));
}

// =======================================================================================
// Durability protocol
// =======================================================================================

/// Votes are durable before they are granted: in every case the grant is in
/// `Ready::persisted_messages` together with the hard state recording it, never in
/// `Ready::messages`.
#[test]
fn votes_persisted_before_granted() {
    // Fresh follower, follower of a lower term, PreVote.
    let cases: Vec<(HardState, Message, bool)> = vec![
        (hs(0, 0, 0), vote_req(2, 1, 1, (0, 0), false), true),
        (hs(3, 0, 0), vote_req(2, 1, 5, (0, 0), false), true),
        (hs(3, 0, 0), vote_req(2, 1, 4, (0, 0), true), false),
    ];
    for (h, m, changes_state) in cases {
        let mut r = raft_with(config(1), storage_with_log(three(), &[], h));
        let (term, pre) = (m.term, matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. }));
        r.step(m).unwrap();
        let rd = r.ready();
        assert!(rd.messages.is_empty(), "{rd:?}");
        assert_eq!(rd.persisted_messages, vec![vote_resp(1, 2, term, pre, false)]);
        if changes_state {
            assert_eq!(rd.hard_state, Some(hs(term, 2, 0)));
        }
    }

    // A vote lost before it was durable (crash) was never granted: after restart the
    // replica may vote for someone else, and nobody holds its grant.
    let mut r = raft_with(config(1), storage_with_log(three(), &[], hs(1, 0, 0)));
    r.step(vote_req(2, 1, 2, (0, 0), false)).unwrap();
    let rd = r.ready();
    assert!(rd.messages.is_empty());
    drop(rd); // crash before the write
    let mut r = raft_with(config(1), r.storage().clone());
    assert_eq!(r.hard_state(), hs(1, 0, 0));
    let out = step_drain(&mut r, vote_req(3, 1, 2, (0, 0), false));
    assert_eq!(out.persisted_messages, vec![vote_resp(1, 3, 2, false, false)]);
}

/// A candidate sends RequestVote only after its new term and self-vote are durable, also
/// when campaigning on TimeoutNow (and the transfer flag is set then).
#[test]
fn candidate_requests_votes_only_after_persist() {
    let mut r = new_raft(2, three(), |_| {});
    r.step(append(1, 2, 1, (0, 0), vec![], 0)).unwrap();
    drain(&mut r);
    r.step(msg(1, 2, 1, MessageBody::TimeoutNow)).unwrap();
    assert_eq!(r.role(), Role::Candidate);
    let rd = r.ready();
    assert_eq!(rd.hard_state, Some(hs(2, 2, 0)));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
    for m in &rd.persisted_messages {
        assert_eq!(
            m.body,
            MessageBody::RequestVote {
                pre_vote: false,
                last_index: 0,
                last_term: 0,
                transfer: true,
                commit: 0,
                commit_term: 0
            }
        );
    }
}

/// The leader's own match advances only when its entries are durable (`on_persisted`),
/// never at append: a single-voter group commits only after `on_persisted`, and in a
/// 3-voter group one follower's ack is not a quorum while the leader's write is pending.
#[test]
fn leader_match_advances_only_on_persisted() {
    let mut r = new_raft(1, voters(&[1]), |_| {});
    tick_until_campaign(&mut r);
    assert_eq!(r.role(), Role::Leader);
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    assert_eq!(r.committed(), 0, "not durable yet");
    r.storage_mut().append(&rd.entries);
    r.storage_mut().set_hard_state(rd.hard_state.unwrap());
    assert_eq!(r.committed(), 0);
    r.on_persisted(1, 1);
    assert_eq!(r.committed(), 1);
    let rd = r.ready();
    assert_eq!(rd.committed_entries.len(), 1);
    assert_eq!(rd.hard_state, Some(hs(1, 1, 1)));

    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    l.propose(data(1)).unwrap();
    let rd = l.ready();
    assert_eq!(rd.entries.len(), 1);
    l.step(append_ok(2, 1, 1, 2)).unwrap();
    assert_eq!(l.committed(), 1, "the follower and a non-durable leader are not a quorum for 2");
    l.storage_mut().append(&rd.entries);
    l.on_persisted(2, 1);
    assert_eq!(l.committed(), 2);
}

/// etcd's stableTo rule: a durability notice for (index, term) is ignored when the log no
/// longer holds that term at that index (the entries were replaced meanwhile); the
/// replacement is handed out again and counts only once its own write is durable.
#[test]
fn stale_durability_notice_ignored() {
    // Follower: entries 1..3 of term 1 are handed out, then a term-2 leader replaces 2..3.
    let mut f = new_raft(1, three(), |_| {});
    f.step(append(2, 1, 1, (0, 0), ents(1, &[1, 1, 1]), 0)).unwrap();
    let rd1 = f.ready();
    assert_eq!(rd1.entries.len(), 3);
    f.step(append(3, 1, 2, (1, 1), ents(2, &[2, 2]), 3)).unwrap();
    assert_eq!(f.committed(), 3);
    f.storage_mut().append(&rd1.entries);
    f.on_persisted(3, 1); // stale: index 3 now holds term 2
    assert_eq!(f.stable_index(), 0, "stale notice ignored");
    let rd2 = f.ready();
    assert_eq!(rd2.entries, ents(2, &[2, 2]), "the replacement is handed out again");
    assert!(rd2.committed_entries.is_empty(), "nothing applies before it is durable");
    persist(&mut f, &rd2);
    assert_eq!(f.stable_index(), 3);
    let rd3 = f.ready();
    assert_eq!(
        rd3.committed_entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 2)]
    );

    // Leader: its entry at 2 (term 1) is replaced by a new leader before its write is
    // durable; the late notice must not count toward any commit.
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    l.propose(data(1)).unwrap();
    let rd = l.ready();
    assert_eq!(rd.entries.last().map(|e| (e.index, e.term)), Some((2, 1)));
    l.step(append(2, 1, 2, (1, 1), ents(2, &[2]), 1)).unwrap();
    assert_eq!(l.role(), Role::Follower);
    l.on_persisted(2, 1);
    assert_eq!(l.stable_index(), 1);
    assert_eq!(l.term_at(2), Ok(2));
}

/// etcd TestRestoreFromSnapMsg / restart scenarios: a replica restarted from its durable
/// state recovers term, vote, log and commit; it re-applies only what the state machine had
/// not applied; it does not vote twice in a term.
#[test]
fn restart_from_persisted_state() {
    let mut net = net3(|_| {});
    for i in 0..5 {
        net.propose(1, data(i));
    }
    net.tick_all();
    let before = net.raft(2).hard_state();
    let last = net.raft(2).last_index();
    assert_eq!(before.commit, 6);
    let storage = net.raft(2).storage().clone();

    let r = raft_with(config(2), storage.clone());
    assert_eq!(r.hard_state(), before);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.last_index(), last);
    assert_eq!(r.committed(), 6);
    assert_eq!(r.entries(1, last + 1).unwrap(), net.raft(1).entries(1, last + 1).unwrap());
    assert_eq!(r.conf(), &three());

    // The state machine had applied nothing: everything committed is handed out again.
    let mut r = raft_with(config(2), storage.clone());
    let out = drain(&mut r);
    assert_eq!(out.committed.len(), 6);
    // It had applied 4: only 5 and 6 come out.
    let mut c = config(2);
    c.applied = 4;
    let mut r = raft_with(c, storage.clone());
    let out = drain(&mut r);
    assert_eq!(out.committed.iter().map(|e| e.index).collect::<Vec<_>>(), vec![5, 6]);

    // Vote not granted twice in a term across a restart.
    let mut v = raft_with(config(1), storage_with_log(three(), &[], hs(4, 0, 0)));
    let out = step_drain(&mut v, vote_req(2, 1, 5, (0, 0), false));
    assert_eq!(out.persisted_messages, vec![vote_resp(1, 2, 5, false, false)]);
    let mut v = raft_with(config(1), v.storage().clone());
    assert_eq!(v.hard_state(), hs(5, 2, 0));
    let out = step_drain(&mut v, vote_req(3, 1, 5, (0, 0), false));
    assert_eq!(out.all(), vec![vote_resp(1, 3, 5, false, true)]);
    let out = step_drain(&mut v, vote_req(2, 1, 5, (0, 0), false));
    assert_eq!(out.all(), vec![vote_resp(1, 2, 5, false, false)], "a repeated request gets the same answer");
}

// =======================================================================================
// Replication
// =======================================================================================

/// etcd testdata `probe_and_replicate.txt`: a follower of unknown match is probed one
/// append at a time; once an append is accepted it moves to Replicate and appends are
/// pipelined without waiting; a rejection in Replicate moves it back to Probe.
#[test]
fn probe_and_replicate() {
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    assert_eq!(follower(&l, 2).state, ProgressState::Probe);
    // Probe: the election probe is outstanding, so new entries do not go out.
    l.propose(data(1)).unwrap();
    let out = drain(&mut l);
    assert!(of_kind(&out.messages, "Append").is_empty(), "{:?}", out.messages);

    // 2 accepts the probe: Replicate, and it gets what is missing at once.
    let out = step_drain(&mut l, append_ok(2, 1, 1, 1));
    assert_eq!(follower(&l, 2).state, ProgressState::Replicate);
    assert_eq!(follower(&l, 3).state, ProgressState::Probe);
    let apps = of_kind(&out.messages, "Append");
    assert!(apps.iter().all(|m| m.to == 2), "nothing to the follower still probing");
    let with_entries: Vec<_> = apps
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .collect();
    assert_eq!(with_entries.len(), 1, "{apps:?}");
    assert!(matches!(&with_entries[0].body,
        MessageBody::Append { prev_index: 1, entries, commit: 1, .. } if entries.len() == 1));

    // Replicate: each proposal is sent at once, without waiting for acks.
    for i in 2..5 {
        l.propose(data(i)).unwrap();
        let out = drain(&mut l);
        let apps = of_kind(&out.messages, "Append");
        assert_eq!(apps.len(), 1, "only the replicating follower gets it");
        assert_eq!(apps[0].to, 2);
    }
    assert_eq!(follower(&l, 2).next, l.last_index() + 1);

    // A rejection in Replicate: back to Probe from after the match.
    let out = step_drain(
        &mut l,
        msg(2, 1, 1, MessageBody::AppendResponse { index: 3, reject: true, reject_hint: 2, hint_term: 1 }),
    );
    let f = follower(&l, 2);
    assert_eq!(f.state, ProgressState::Probe);
    assert_eq!(f.matched, 1);
    let apps = of_kind(&out.messages, "Append");
    assert_eq!(apps.len(), 1);
    assert!(matches!(apps[0].body, MessageBody::Append { prev_index: 1, prev_term: 1, .. }));
}

/// etcd testdata `replicate_pause.txt` / TestMsgAppFlowControlFull: in Replicate the
/// appends in flight are bounded by count (`max_inflight_msgs`) and by bytes
/// (`max_inflight_bytes`); an acknowledgement frees the window and the rest goes out.
#[test]
fn replicate_pause_inflight_count_and_bytes() {
    // Each entry counts 24 + 16 bytes.
    for (max_msgs, max_bytes, window) in [(3usize, u64::MAX, 3usize), (256, 100, 3), (256, 80, 2)] {
        let mut l = new_raft(1, three(), |c| {
            c.max_inflight_msgs = max_msgs;
            c.max_inflight_bytes = max_bytes;
        });
        elect_alone(&mut l);
        step_drain(&mut l, append_ok(2, 1, 1, 1));
        assert_eq!(follower(&l, 2).state, ProgressState::Replicate);
        let mut sent = Vec::new();
        for i in 0..10 {
            l.propose(data(i)).unwrap();
            let out = drain(&mut l);
            sent.extend(to(&out.messages, 2).into_iter().filter(|m| m.body.kind() == "Append").cloned());
        }
        assert_eq!(sent.len(), window, "max_msgs {max_msgs} max_bytes {max_bytes}");
        // A heartbeat still goes out while paused.
        l.tick();
        let out = drain(&mut l);
        assert_eq!(
            of_kind(&to(&out.messages, 2).into_iter().cloned().collect::<Vec<_>>(), "Heartbeat").len(),
            1
        );
        assert!(of_kind(&to(&out.messages, 2).into_iter().cloned().collect::<Vec<_>>(), "Append").is_empty());
        // Acknowledging the first append frees room: what is pending goes out.
        let first_last = match &sent[0].body {
            MessageBody::Append { entries, .. } => entries.last().unwrap().index,
            _ => unreachable!(),
        };
        let out = step_drain(&mut l, append_ok(2, 1, 1, first_last));
        let apps = of_kind(&out.messages, "Append");
        assert!(!apps.is_empty(), "an ack reopens the window");
        assert!(apps.iter().all(|m| m.to == 2));
    }
}

/// Batching: many proposals before `ready()` go out as one append per follower.
#[test]
fn proposals_batched_into_one_append_per_follower() {
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 1));
    step_drain(&mut l, append_ok(3, 1, 1, 1));
    for i in 0..100u8 {
        l.propose(data(i)).unwrap();
    }
    let rd = l.ready();
    assert_eq!(rd.entries.len(), 100, "one write for the whole burst");
    let apps = of_kind(&rd.messages, "Append");
    assert_eq!(apps.len(), 2, "{:?}", kinds(&rd.messages));
    for m in apps {
        let MessageBody::Append { entries, prev_index, .. } = &m.body else { unreachable!() };
        assert_eq!(*prev_index, 1);
        assert_eq!(entries.len(), 100);
    }
}

/// etcd TestFastLogRejection (thesis §5.3 optimisation): a follower whose log diverged over
/// a long run of entries is brought back in a few round trips, not one per entry.
#[test]
fn fast_backtracking_of_diverged_follower() {
    let mut leader_log = vec![1; 10];
    leader_log.extend(vec![3; 50]);
    let mut follower_log = vec![1; 10];
    follower_log.extend(vec![2; 60]);
    let mut net = Network::empty();
    net.add(raft_with(config(1), storage_with_log(three(), &leader_log, hs(3, 0, 10))));
    net.add(raft_with(config(2), storage_with_log(three(), &follower_log, hs(3, 0, 10))));
    net.add(raft_with(config(3), storage_with_log(three(), &leader_log, hs(3, 0, 10))));
    net.elect(1);
    let rejects = net
        .log
        .iter()
        .filter(|m| m.from == 2 && matches!(m.body, MessageBody::AppendResponse { reject: true, .. }))
        .count();
    assert!(rejects <= 2, "{rejects} rejections");
    let want = net.raft(1).entries(1, net.raft(1).last_index() + 1).unwrap();
    assert_eq!(net.raft(2).entries(1, net.raft(2).last_index() + 1).unwrap(), want);
}

/// Heartbeats carry min(leader commit, follower's match): a follower with a diverged,
/// uncommitted tail never commits it from a heartbeat.
#[test]
fn heartbeat_commit_clamped_to_follower_match() {
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 1));
    for i in 0..3 {
        l.propose(data(i)).unwrap();
    }
    drain(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 4));
    assert_eq!(l.committed(), 4);
    l.tick();
    let out = drain(&mut l);
    let hb: Vec<(u64, u64)> = of_kind(&out.messages, "Heartbeat")
        .iter()
        .map(|m| match m.body {
            MessageBody::Heartbeat { commit, .. } => (m.to, commit),
            _ => unreachable!(),
        })
        .collect();
    let mut hb = hb;
    hb.sort();
    assert_eq!(hb, vec![(2, 4), (3, 0)]);

    // End to end: follower 3 holds a diverged tail (term 1 at 2..3) under a term-2 leader
    // whose log has term 2 there; heartbeats never make it commit its own tail.
    let mut net = Network::empty();
    net.add(raft_with(config(1), storage_with_log(three(), &[1, 2, 2], hs(2, 0, 1))));
    net.add(raft_with(config(2), storage_with_log(three(), &[1, 2, 2], hs(2, 0, 1))));
    net.add(raft_with(config(3), storage_with_log(three(), &[1, 1, 1], hs(2, 0, 1))));
    net.drop_if = Some(Box::new(|m| m.to == 3 && m.body.kind() == "Append"));
    net.elect(1);
    for _ in 0..5 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).committed(), 4);
    assert_eq!(net.raft(3).committed(), 1, "follower 3 never commits its diverged tail");
    assert!(net.node(3).applied.iter().all(|e| e.index <= 1));
}

/// Raft paper Figure 8 (§5.4.2), end to end: S1 (term 4) re-replicates its term-2 entry
/// to a majority but must not commit it by counting; S5 then wins term 5 and overwrites
/// that entry everywhere. No replica ever applies the overwritten entry.
#[test]
fn figure_8_current_term_commit_rule() {
    let conf = voters(&[1, 2, 3, 4, 5]);
    let mut net = Network::empty();
    let logs: [&[u64]; 5] = [&[1, 2], &[1], &[1], &[1], &[1, 3]];
    for (i, log) in logs.iter().enumerate() {
        let id = i as u64 + 1;
        net.add(raft_with(config(id), storage_with_log(conf.clone(), log, hs(3, 0, 1))));
    }
    // S1 wins term 4 (votes from S2..S4) but none of its own-term entries get out.
    net.drop_if = Some(Box::new(|m| m.from == 1 && m.body.kind() == "Append"));
    net.elect(1);
    assert_eq!(net.raft(1).term(), 4);
    // S1 gets its term-2 entry onto S2 and S3 (an append it may legally send).
    let e2 = net.raft(1).entries(2, 3).unwrap();
    for id in [2, 3] {
        net.raft_mut(id).step(append(1, id, 4, (1, 1), e2.clone(), 1)).unwrap();
    }
    net.settle();
    assert_eq!(net.raft(2).term_at(2), Ok(2));
    assert_eq!(net.raft(3).term_at(2), Ok(2));
    assert_eq!(net.raft(1).committed(), 1, "a majority holds (2, term 2) but it is not committed");

    // S1 crashes; S5 (last term 3) is elected by S2, S3, S4 and overwrites index 2.
    net.isolate(1);
    net.drop_if = None;
    net.elect(5);
    net.propose(5, data(5));
    for id in [2, 3, 4, 5] {
        assert_eq!(net.raft(id).term_at(2), Ok(3), "replica {id}");
    }
    net.heal();
    for _ in 0..3 {
        net.tick(5);
    }
    assert_eq!(net.raft(1).term_at(2), Ok(3));
    for id in 1..=5 {
        assert!(
            !net.node(id).applied.iter().any(|e| e.index == 2 && e.term == 2),
            "replica {id} applied the overwritten entry"
        );
    }
}

// =======================================================================================
// Snapshots
// =======================================================================================

/// etcd testdata `slow_follower_after_compaction.txt`: a follower that was away while the
/// leader compacted its log gets a `SendSnapshot` instruction, installs the streamed
/// snapshot and catches up from it.
#[test]
fn slow_follower_after_compaction_gets_snapshot() {
    let mut net = net3(|_| {});
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, data(i));
    }
    let applied = net.raft(1).applied();
    assert_eq!(applied, 11);
    let meta = net.compact(1, applied);
    assert_eq!(meta.index, 11);
    assert_eq!(meta.conf, three());
    net.heal();
    for _ in 0..3 {
        net.tick(1);
    }
    let sends = net.logged("SendSnapshot");
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].to, 3);
    assert!(matches!(&sends[0].body, MessageBody::SendSnapshot { meta: m } if *m == meta));
    assert_eq!(net.node(3).snapshots.len(), 1);
    assert_eq!(net.node(3).snapshots[0].meta, meta);
    assert_eq!(net.raft(3).stats().snapshots_installed, 1);
    net.propose(1, data(99));
    assert_eq!(net.raft(3).committed(), 12);
    assert_eq!(net.applied_data(3), vec![data(99)]);
    assert_eq!(follower(net.raft(1), 3).state, ProgressState::Replicate);
}

/// A leader of term 2 whose log is [1..=5 of term 1, no-op 6 of term 2], committed and
/// compacted to 6; follower 3 (fresh) is moved to Snapshot state and 2 is in Replicate.
fn leader_with_follower_in_snapshot() -> Raft<MemStorage> {
    let mut l = raft_with(config(1), storage_with_log(three(), &[1, 1, 1, 1, 1], hs(1, 0, 5)));
    elect_alone(&mut l);
    assert_eq!(l.term(), 2);
    step_drain(&mut l, append_ok(2, 1, 2, 6));
    assert_eq!(l.applied(), 6);
    let meta = l.compact_to(6).unwrap();
    l.storage_mut().compact(&meta, Bytes::from_static(b"sm"));
    // 3 rejects the election probe (prev 5) with no useful hint.
    let out = step_drain(
        &mut l,
        msg(3, 1, 2, MessageBody::AppendResponse { index: 5, reject: true, reject_hint: 0, hint_term: 0 }),
    );
    let sends = of_kind(&out.messages, "SendSnapshot");
    assert_eq!(sends.len(), 1);
    assert!(matches!(&sends[0].body, MessageBody::SendSnapshot { meta: m } if *m == meta));
    assert_eq!(follower(&l, 3).state, ProgressState::Snapshot);
    l
}

/// etcd testdata `snapshot_succeed_via_app_resp.txt`: a follower in Snapshot state whose
/// AppendResponse shows it reached the snapshot moves to Replicate (via Probe) and gets the
/// entries after it, without waiting for the runtime's report.
#[test]
fn snapshot_succeeds_via_append_response() {
    let mut l = leader_with_follower_in_snapshot();
    l.propose(data(1)).unwrap();
    let out = drain(&mut l);
    assert!(to(&out.messages, 3).is_empty(), "nothing goes to a follower in Snapshot state");
    let out = step_drain(&mut l, append_ok(3, 1, 2, 6));
    let f = follower(&l, 3);
    assert_eq!(f.state, ProgressState::Replicate);
    assert_eq!(f.matched, 6);
    let apps = to(&out.messages, 3);
    assert_eq!(apps.len(), 1);
    assert!(
        matches!(&apps[0].body, MessageBody::Append { prev_index: 6, prev_term: 2, entries, .. } if entries.len() == 1)
    );
}

/// `report_snapshot(false)` (the runtime failed to stream it) moves the follower out of
/// Snapshot state into Probe; the next heartbeat response makes the leader try again.
#[test]
fn failed_snapshot_report_moves_follower_to_probe() {
    let mut l = leader_with_follower_in_snapshot();
    l.report_snapshot(3, false);
    let f = follower(&l, 3);
    assert_eq!(f.state, ProgressState::Probe);
    let out = drain(&mut l);
    assert!(to(&out.messages, 3).is_empty(), "paused until the follower is heard from");
    // The answer to the next heartbeat round (a repeated answer says nothing new).
    let round = (0..100)
        .find_map(|_| {
            l.tick();
            drain(&mut l).messages.iter().find_map(|m| match m.body {
                MessageBody::Heartbeat { round, .. } if m.to == 3 => Some(round),
                _ => None,
            })
        })
        .expect("a heartbeat round within 100 ticks");
    let out = step_drain(&mut l, msg(3, 1, 2, MessageBody::HeartbeatResponse { round }));
    let sends = of_kind(&out.messages, "SendSnapshot");
    assert_eq!(sends.len(), 1, "{:?}", kinds(&out.messages));
    assert_eq!(follower(&l, 3).state, ProgressState::Snapshot);

    // A successful report also leaves Snapshot state, expecting the snapshot's index next.
    l.report_snapshot(3, true);
    let f = follower(&l, 3);
    assert_eq!(f.state, ProgressState::Probe);
    assert_eq!(f.next, 7);
}

fn snapshot(index: u64, term: u64, conf: ConfState, d: &'static [u8]) -> Snapshot {
    Snapshot { meta: SnapshotMeta { index, term, conf }, data: Bytes::from_static(d) }
}

fn chunk_msgs(from: ReplicaId, to: ReplicaId, term: u64, s: &Snapshot, size: usize) -> Vec<Message> {
    chunk_snapshot(s, size).into_iter().map(|c| msg(from, to, term, MessageBody::SnapshotChunk(c))).collect()
}

/// etcd ReportUnreachable: when the runtime reports that messages to a follower were lost,
/// a follower in Replicate goes back to Probe and the next answer resumes replication from
/// its match instead of after a window of lost appends.
#[test]
fn report_unreachable_moves_replicating_follower_to_probe() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.elect(1);
    net.propose(1, data(1));
    net.settle();
    let state = |net: &Network| net.raft(1).status().followers.iter().find(|f| f.id == 2).cloned().unwrap();
    assert_eq!(state(&net).state, ProgressState::Replicate);
    // Appends to 2 are lost on the way.
    net.cut_both(1, 2);
    net.propose(1, data(2));
    net.propose(1, data(3));
    net.deliver();
    let before = state(&net);
    assert!(before.next > before.matched + 1, "optimistic next ran ahead of the match: {before:?}");
    net.raft_mut(1).report_unreachable(2);
    let after = state(&net);
    assert_eq!(after.state, ProgressState::Probe);
    assert_eq!(after.next, after.matched + 1);
    // Reporting a follower that is not replicating, or on a non-leader, changes nothing.
    net.raft_mut(1).report_unreachable(2);
    assert_eq!(state(&net), after);
    net.raft_mut(2).report_unreachable(1);
    net.heal();
    net.tick_all_n(3);
    net.settle();
    assert_eq!(net.raft(2).committed(), net.raft(1).committed());
}

/// Snapshot chunks carry (term, snapshot index, sequence); a follower restores the
/// snapshot once the last chunk arrives in order, acknowledges it only once it is durable,
/// and a chunk of another snapshot discards the partial one.
#[test]
fn snapshot_chunks_partial_discarded_by_another_snapshot() {
    let a = snapshot(10, 1, three(), b"aaaaaaaaaa");
    let b = snapshot(12, 1, three(), b"bbbbbbbbbbbb");
    let mut f = new_raft(2, three(), |_| {});
    let ca = chunk_msgs(1, 2, 1, &a, 4);
    let cb = chunk_msgs(1, 2, 1, &b, 4);
    assert_eq!(ca.len(), 3);
    f.step(ca[0].clone()).unwrap();
    f.step(ca[1].clone()).unwrap();
    let out = drain(&mut f);
    assert!(out.snapshots.is_empty());
    assert!(out.all().is_empty(), "no answer to a partial snapshot");
    // A chunk of another snapshot: A is discarded, B starts.
    f.step(cb[0].clone()).unwrap();
    assert_eq!(f.stats().snapshot_streams_discarded, 1);
    // The rest of A is ignored.
    f.step(ca[2].clone()).unwrap();
    assert!(drain(&mut f).snapshots.is_empty());
    assert_eq!(f.stats().snapshot_streams_discarded, 2);
    // B restarted from seq 0 and completed.
    for m in &cb {
        f.step(m.clone()).unwrap();
    }
    let rd = f.ready();
    assert_eq!(rd.snapshot.as_deref(), Some(&b));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages, vec![append_ok(2, 1, 1, 12)]);
    assert_eq!(f.committed(), 12);
    assert_eq!(f.stats().snapshots_installed, 1);
}

/// A chunk out of order discards the partial snapshot; nothing is installed or answered.
#[test]
fn snapshot_chunk_out_of_order_discards() {
    let a = snapshot(10, 1, three(), b"0123456789ab");
    let ca = chunk_msgs(1, 2, 1, &a, 4);
    let mut f = new_raft(2, three(), |_| {});
    f.step(ca[0].clone()).unwrap();
    f.step(ca[2].clone()).unwrap();
    assert_eq!(f.stats().snapshot_streams_discarded, 1);
    f.step(ca[1].clone()).unwrap();
    let out = drain(&mut f);
    assert!(out.snapshots.is_empty());
    assert!(out.all().is_empty());
    assert_eq!(f.committed(), 0);
    // Resent from the start, it installs.
    for m in &ca {
        f.step(m.clone()).unwrap();
    }
    assert_eq!(drain(&mut f).snapshots.len(), 1);
}

/// Two streams of the same snapshot (a retry racing the stream it replaces) cut at
/// different boundaries never splice: chunks carry their byte offset, and a chunk that does
/// not continue the partial snapshot discards it (simulator seeds 313668, 314072).
#[test]
fn snapshot_retry_streams_never_splice() {
    let a = snapshot(10, 1, three(), b"0123456789ab");
    let first = chunk_msgs(1, 2, 1, &a, 4); // 0123 4567 89ab
    let retry = chunk_msgs(1, 2, 1, &a, 5); // 01234 56789 ab
    let mut f = new_raft(2, three(), |_| {});
    f.step(first[0].clone()).unwrap();
    f.step(retry[0].clone()).unwrap(); // the retry restarts the snapshot
    f.step(first[1].clone()).unwrap(); // seq 1 of the old stream: offset 4, not 5
    f.step(first[2].clone()).unwrap();
    assert!(drain(&mut f).snapshots.is_empty(), "spliced chunks must not install");
    assert_eq!(f.committed(), 0);
    for m in &retry {
        f.step(m.clone()).unwrap();
    }
    let out = drain(&mut f);
    assert_eq!(out.snapshots, vec![a.clone()], "the retry alone installs, byte for byte");
}

/// A snapshot at or below the commit index is acknowledged (with the commit index) but
/// not installed.
#[test]
fn snapshot_at_or_below_commit_acknowledged_not_installed() {
    let mut f = raft_with(config(2), storage_with_log(three(), &[1, 1, 1, 1, 1], hs(1, 0, 5)));
    for index in [3, 5] {
        let s = snapshot(index, 1, three(), b"x");
        let mut out = Out::default();
        for m in chunk_msgs(1, 2, 1, &s, 4) {
            out = step_drain(&mut f, m);
        }
        assert!(out.snapshots.is_empty(), "index {index}");
        assert_eq!(out.all(), vec![append_ok(2, 1, 1, 5)]);
    }
    assert_eq!(f.stats().snapshots_skipped, 2);
    assert_eq!(f.stats().snapshots_installed, 0);
    assert_eq!(f.last_index(), 5);
}

/// Restoring a snapshot replaces the configuration with the one it carries, including a
/// joint configuration's outgoing voters, learners next, auto-leave and removal records.
#[test]
fn snapshot_restore_replaces_configuration() {
    let conf = ConfState {
        voters: vec![r(1), r(2), r(4)],
        voters_outgoing: vec![r(1), r(2), r(3)],
        learners: vec![r(5)],
        learners_next: vec![r(3)],
        auto_leave: true,
        max_replica_id: 6,
        removed: vec![r(6)],
    };
    let s = snapshot(20, 3, conf.clone(), b"state");
    let mut f = new_raft(2, three(), |_| {});
    for m in chunk_msgs(1, 2, 3, &s, 2) {
        f.step(m).unwrap();
    }
    let out = drain(&mut f);
    assert_eq!(out.snapshots, vec![s.clone()]);
    assert_eq!(f.conf(), &conf);
    assert_eq!(f.snapshot_meta(), &s.meta);
    assert_eq!(f.committed(), 20);
    assert_eq!(f.term(), 3);
    assert_eq!(f.leader(), 1);
    // And it survives a restart (the storage holds the snapshot's configuration).
    let r2 = raft_with(config(2), f.storage().clone());
    assert_eq!(r2.conf(), &conf);
    assert_eq!(r2.last_index(), 20);
}

// =======================================================================================
// Membership changes
// =======================================================================================

/// etcd testdata `confchange_v1_add_single.txt`: a single voter adds a second one; the new
/// replica (started empty) catches up from the log, and from then on commits need it.
#[test]
fn confchange_v1_add_single() {
    let mut net = Network::new(&[1], |_| {});
    net.add(new_raft(2, voters(&[1]), |_| {}));
    net.elect(1);
    assert!(matches!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddVoter, r(2))),
        Ok((2, 1))
    ));
    net.settle();
    assert_eq!(net.raft(1).conf(), &voters(&[1, 2]));
    for _ in 0..3 {
        net.tick(1);
    }
    assert_eq!(net.raft(2).conf(), &voters(&[1, 2]), "the new replica applied its own addition");
    assert_eq!(net.raft(2).committed(), 2);
    assert_eq!(net.raft(1).stats().simple_changes, 1);

    net.isolate(2);
    let (i, _) = net.propose(1, data(1));
    assert!(net.raft(1).committed() < i, "two voters: 1 alone is no quorum");
    net.heal();
    net.tick(1);
    assert_eq!(net.raft(1).committed(), i);
}

/// Five voters; 1 leads and demotes 5 through an explicit joint configuration; 1 is cut
/// off and 5, still an outgoing voter, wins the election; the leave 5 proposes demotes 5
/// itself. (A leader never removes or demotes itself, issue 10 point 3, but it can apply
/// a demotion its predecessor proposed.) Returns the network and the leave's index.
fn leader_demoted_by_predecessor(f: impl Fn(&mut Config)) -> (Network, u64) {
    let mut net = Network::new(&[1, 2, 3, 4, 5], f);
    net.elect(1);
    net.propose(1, data(1));
    let cc = ConfChange {
        transition: Transition::JointExplicit,
        changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(5) }],
    };
    net.propose_cc(1, cc);
    net.tick_all();
    assert!(net.raft(5).conf().is_joint());
    net.isolate(1);
    net.campaign(5);
    assert_eq!(net.raft(5).role(), Role::Leader, "an outgoing voter may lead");
    let (leave, _) = net.raft_mut(5).propose_conf_change(ConfChange::leave_joint()).unwrap();
    net.settle();
    assert!(net.raft(5).conf().is_learner(5));
    (net, leave)
}

/// The leader refuses to remove or demote itself (it must transfer leadership first).
/// etcd testdata `confchange_v1_remove_leader.txt` with StepDownOnRemoval, reached the
/// only way left: a leader that applies a demotion of itself proposed by its predecessor
/// hands leadership to a caught-up voter, steps down, never campaigns again, and the
/// others elect a leader.
#[test]
fn confchange_v1_remove_leader_steps_down() {
    let mut net = net3(|_| {});
    for kind in [ChangeKind::Remove, ChangeKind::AddLearner] {
        assert!(net.raft_mut(1).propose_conf_change(ConfChange::single(kind, r(1))).is_err());
    }
    let (mut net, _) = leader_demoted_by_predecessor(|_| {});
    assert_eq!(net.raft(5).role(), Role::Follower, "the demoted leader steps down");
    for _ in 0..40 {
        net.tick_all();
    }
    let l = net.leader();
    assert!([2, 3, 4].contains(&l));
    assert_eq!(net.raft(5).stats().campaigns, 1, "the demoted replica never campaigns again");
    net.propose(l, data(2));
    assert_eq!(net.applied_data(2), vec![data(1), data(2)]);
}

/// etcd testdata `confchange_v1_remove_leader.txt` without StepDownOnRemoval (documented:
/// the demoted leader keeps leading without counting itself, refuses proposals, and can
/// hand over with a leadership transfer).
#[test]
fn confchange_v1_remove_leader_without_step_down() {
    let (mut net, cc_index) = leader_demoted_by_predecessor(|c| {
        c.step_down_on_removal = false;
        c.check_quorum = c.id == 5;
    });
    assert_eq!(net.raft(5).role(), Role::Leader);
    // Refused, and without naming itself as the leader to try.
    assert_eq!(net.raft_mut(5).propose(data(1)), Err(ProposeError::NotLeader { leader_hint: None }));
    // It still propagates the commit of its demotion to the voters, and keeps leading past
    // CheckQuorum (2, 3 and 4 answer it).
    for _ in 0..30 {
        net.tick_all();
    }
    assert_eq!(net.raft(5).role(), Role::Leader);
    for id in [2, 3, 4] {
        assert!(net.raft(id).committed() >= cc_index);
        assert!(net.raft(id).conf().is_learner(5));
    }
    // It hands over with a leadership transfer, and learns the new term from the answers
    // to its next heartbeat.
    let term = net.raft(5).term();
    net.raft_mut(5).transfer_leader(2).unwrap();
    net.settle();
    assert_eq!(net.raft(2).role(), Role::Leader);
    assert_eq!(net.raft(2).term(), term + 1);
    net.tick(5);
    assert_eq!(net.raft(5).role(), Role::Follower);
    assert_eq!(net.raft(5).term(), term + 1);
    net.propose(2, data(2));
    assert_eq!(net.applied_data(3), vec![data(1), data(2)]);
}

/// etcd testdata `confchange_v2_add_double_auto.txt`: adding two voters at once goes
/// through a joint configuration that the leader leaves on its own once applied.
#[test]
fn confchange_v2_add_double_auto_leave() {
    let mut net = Network::new(&[1], |_| {});
    net.add(new_raft(2, voters(&[1]), |_| {}));
    net.add(new_raft(3, voters(&[1]), |_| {}));
    net.elect(1);
    let cc = ConfChange {
        transition: Transition::Auto,
        changes: vec![
            SingleChange { kind: ChangeKind::AddVoter, replica: r(2) },
            SingleChange { kind: ChangeKind::AddVoter, replica: r(3) },
        ],
    };
    let (i, _) = net.raft_mut(1).propose_conf_change(cc).unwrap();
    // Drive until the joint configuration is applied, then check the leave is proposed.
    net.settle();
    for _ in 0..3 {
        net.tick_all();
    }
    let l = net.raft(1);
    assert_eq!(l.stats().joint_entered, 1);
    assert_eq!(l.stats().joint_left, 1);
    let leave = l.entries(i + 1, i + 2).unwrap();
    assert_eq!(leave[0].payload, EntryPayload::ConfChange(ConfChange::leave_joint()));
    for id in [1, 2, 3] {
        let c = net.raft(id).conf();
        assert!(!c.is_joint(), "replica {id}: {c:?}");
        assert_eq!(c.voters, vec![r(1), r(2), r(3)]);
        assert!(!c.auto_leave);
    }
}

/// etcd testdata `confchange_v2_add_double_implicit.txt` / explicit variant: with
/// `JointExplicit` the leader stays in the joint configuration until the application
/// proposes the (empty) leave change.
#[test]
fn confchange_v2_add_double_explicit_leave() {
    let mut net = Network::new(&[1], |_| {});
    net.add(new_raft(2, voters(&[1]), |_| {}));
    net.add(new_raft(3, voters(&[1]), |_| {}));
    net.elect(1);
    let cc = ConfChange {
        transition: Transition::JointExplicit,
        changes: vec![
            SingleChange { kind: ChangeKind::AddVoter, replica: r(2) },
            SingleChange { kind: ChangeKind::AddVoter, replica: r(3) },
        ],
    };
    net.propose_cc(1, cc);
    for _ in 0..5 {
        net.tick_all();
    }
    let c = net.raft(1).conf().clone();
    assert!(c.is_joint());
    assert!(!c.auto_leave);
    assert_eq!(c.voters_outgoing, vec![r(1)]);
    assert_eq!(net.raft(1).stats().joint_left, 0, "no automatic leave");
    // Another change while joint is refused by the configuration rules.
    assert!(matches!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, Replica::new(9, 9))),
        Err(ProposeError::InvalidConfChange(ConfChangeError::InJoint))
    ));
    net.propose_cc(1, ConfChange::leave_joint());
    net.tick_all();
    for id in [1, 2, 3] {
        let c = net.raft(id).conf();
        assert!(!c.is_joint(), "replica {id}");
        assert_eq!(c.voters, vec![r(1), r(2), r(3)]);
    }
}

/// etcd testdata `confchange_v2_replace_leader.txt`, under the removal rule: replacing
/// the leader (add 4, remove or demote 1) is refused at the leader; it transfers
/// leadership, the new leader demotes 1 and adds 4 through a joint configuration left on
/// its own, then removes the learner 1, and the new voters commit.
#[test]
fn confchange_v2_replace_leader() {
    let mut net = net3(|_| {});
    net.add(new_raft(4, three(), |_| {}));
    let replace = |out| ConfChange {
        transition: Transition::Auto,
        changes: vec![
            SingleChange { kind: ChangeKind::AddVoter, replica: r(4) },
            SingleChange { kind: out, replica: r(1) },
        ],
    };
    assert_eq!(
        net.raft_mut(1).propose_conf_change(replace(ChangeKind::Remove)),
        Err(ProposeError::InvalidConfChange(ConfChangeError::VoterRemoval { replica: 1 }))
    );
    assert_eq!(
        net.raft_mut(1).propose_conf_change(replace(ChangeKind::AddLearner)),
        Err(ProposeError::InvalidConfChange(ConfChangeError::RemovesLeader { replica: 1 }))
    );
    net.raft_mut(1).transfer_leader(2).unwrap();
    net.settle();
    assert_eq!(net.leader(), 2);
    net.propose(2, data(1));
    net.propose_cc(2, replace(ChangeKind::AddLearner));
    for _ in 0..3 {
        net.tick_all();
    }
    assert_eq!(net.raft(2).stats().joint_entered, 1);
    assert_eq!(net.raft(2).stats().joint_left, 1);
    assert!(net.raft(1).conf().is_learner(1));
    net.propose_cc(2, ConfChange::single(ChangeKind::Remove, r(1)));
    for id in [2, 3, 4] {
        assert_eq!(
            net.raft(id).conf(),
            &ConfState {
                voters: vec![r(2), r(3), r(4)],
                max_replica_id: 4,
                removed: vec![r(1)],
                ..Default::default()
            }
        );
    }
    net.nodes.remove(&1);
    net.propose(2, data(2));
    assert_eq!(net.applied_data(4), vec![data(1), data(2)]);
}

/// One membership change at a time: a second is refused with `ConfChangePending` until
/// the first is applied.
#[test]
fn one_conf_change_at_a_time() {
    let mut net = Network::new(&[1, 2, 3], |_| {});
    net.add(new_raft(4, three(), |_| {}));
    net.add(new_raft(5, three(), |_| {}));
    net.elect(1);
    net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(4))).unwrap();
    assert_eq!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(5))),
        Err(ProposeError::ConfChangePending)
    );
    net.settle();
    assert!(net.raft(1).conf().is_learner(4));
    net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(5))).unwrap();
}

/// A new leader accepts no membership change until an entry of its own term has
/// committed (`LeaderNotReady`), nor while a change from an earlier term in its log is not
/// applied (`ConfChangePending`).
#[test]
fn new_leader_refuses_conf_change_until_ready() {
    let cc = ConfChange::single(ChangeKind::AddLearner, r(4));
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    assert_eq!(l.propose_conf_change(cc.clone()), Err(ProposeError::LeaderNotReady));
    step_drain(&mut l, append_ok(2, 1, 1, 1));
    assert_eq!(l.committed(), 1);
    assert!(l.propose_conf_change(cc.clone()).is_ok());

    // A change from term 1 in the log, not yet committed: pending until applied.
    let mut s = storage_with_log(three(), &[1], hs(1, 0, 0));
    s.append(&[Entry { term: 1, index: 2, payload: EntryPayload::ConfChange(cc.clone()) }]);
    let mut l = raft_with(config(1), s);
    elect_alone(&mut l);
    let cc5 = ConfChange::single(ChangeKind::AddLearner, r(5));
    assert_eq!(l.propose_conf_change(cc5.clone()), Err(ProposeError::ConfChangePending));
    step_drain(&mut l, append_ok(2, 1, 2, 3));
    assert_eq!(l.applied(), 3);
    assert!(l.conf().is_learner(4));
    assert!(l.propose_conf_change(cc5).is_ok());
}

/// A new leader that finds an auto-leave joint configuration proposes the leave itself.
#[test]
fn new_leader_finishes_auto_leave_joint_config() {
    let mut net = net3(|_| {});
    // Drop the old leader's appends that carry the leave, then lose the old leader.
    net.drop_if = Some(Box::new(|m| {
        m.from == 1
            && matches!(&m.body, MessageBody::Append { entries, .. }
                if entries.iter().any(|e| e.payload == EntryPayload::ConfChange(ConfChange::leave_joint())))
    }));
    let joint = ConfChange {
        transition: Transition::JointAuto,
        changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(4) }],
    };
    net.propose_cc(1, joint);
    for id in [2, 3] {
        let c = net.raft(id).conf();
        assert!(c.is_joint() && c.auto_leave, "replica {id}: {c:?}");
    }
    net.isolate(1);
    net.drop_if = None;
    net.elect(2);
    net.settle();
    let l = net.raft(2);
    let leave = (1..=l.last_index())
        .filter_map(|i| l.entries(i, i + 1).ok())
        .flatten()
        .find(|e| e.payload == EntryPayload::ConfChange(ConfChange::leave_joint()))
        .expect("the new leader proposed the leave");
    assert_eq!(leave.term, l.term());
    for id in [2, 3] {
        assert!(!net.raft(id).conf().is_joint(), "replica {id}");
        assert!(net.raft(id).conf().is_learner(4));
    }
}

/// A replica id is never reused within a group: a removed replica's id cannot come back
/// (`ReplicaIdReused`); the node can rejoin under a new replica id.
#[test]
fn replica_id_never_reused() {
    let mut net = net3(|_| {});
    net.propose_cc(1, ConfChange::single(ChangeKind::AddLearner, r(3)));
    net.propose_cc(1, ConfChange::single(ChangeKind::Remove, r(3)));
    assert_eq!(net.raft(1).conf().max_replica_id, 3);
    assert_eq!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddVoter, r(3))),
        Err(ProposeError::InvalidConfChange(ConfChangeError::ReplicaIdReused { replica: 3, max: 3 }))
    );
    assert_eq!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, Replica::new(9, 2))),
        Err(ProposeError::InvalidConfChange(ConfChangeError::NodeMismatch { replica: 2, node: 2 }))
    );
    net.propose_cc(1, ConfChange::single(ChangeKind::AddLearner, Replica::new(3, 4)));
    assert!(net.raft(1).conf().is_learner(4));
    assert_eq!(net.raft(1).conf().max_replica_id, 4);
}

/// etcd TestLearnerPromotion: a learner promoted to voter counts toward commit and can
/// campaign.
#[test]
fn learner_promotion() {
    let mut net = Network::with_conf(&[1, 2, 3], voters_learners(&[1, 2], &[3]), |_| {});
    net.elect(1);
    net.propose_cc(1, ConfChange::single(ChangeKind::AddVoter, r(3)));
    net.tick_all();
    for id in [1, 2, 3] {
        assert_eq!(net.raft(id).conf().voters, vec![r(1), r(2), r(3)], "replica {id}");
        assert!(net.raft(id).conf().learners.is_empty());
    }
    net.isolate(2);
    let (i, _) = net.propose(1, data(1));
    assert_eq!(net.raft(1).committed(), i, "the promoted replica counts");
    net.heal();
    net.isolate(1);
    net.campaign(3);
    assert_eq!(net.raft(3).role(), Role::Leader, "the promoted replica campaigns and wins");
}

/// Demotion: a voter made a learner (single step) stops counting and stops campaigning.
#[test]
fn learner_demotion() {
    let mut net = net3(|_| {});
    net.propose_cc(1, ConfChange::single(ChangeKind::AddLearner, r(3)));
    net.tick_all();
    for id in [1, 2, 3] {
        assert_eq!(net.raft(id).conf(), &voters_learners(&[1, 2], &[3]), "replica {id}");
    }
    net.isolate(2);
    let (i, _) = net.propose(1, data(1));
    assert_eq!(net.raft(3).last_index(), i);
    assert!(net.raft(1).committed() < i, "a demoted replica does not count");
    for _ in 0..100 {
        net.tick(3);
    }
    assert_eq!(net.raft(3).stats().campaigns, 0);
}

// =======================================================================================
// Leadership transfer
// =======================================================================================

/// etcd TestLeaderTransferToUpToDateNode (thesis §3.10): TimeoutNow goes at once to an
/// up-to-date target, which campaigns without PreVote (transfer flag set) and wins; with
/// CheckQuorum the voters honour it despite their leader lease.
#[test]
fn transfer_to_up_to_date_follower() {
    let mut net = net3(|c| {
        c.check_quorum = true;
        c.pre_vote = true;
    });
    net.raft_mut(1).transfer_leader(2).unwrap();
    let out = net.process(1);
    assert_eq!(out.messages, vec![msg(1, 2, 1, MessageBody::TimeoutNow)]);
    net.settle();
    assert_eq!(net.leader(), 2);
    assert_eq!(net.raft(2).term(), 2);
    assert_eq!(net.raft(2).stats().leaderships_by_transfer, 1);
    assert!(net.logged("PreVote").iter().all(|m| m.from != 2), "no PreVote on TimeoutNow");
    assert_eq!(net.raft(1).status().transferee, 0);
    let st = net.raft(1).stats();
    assert_eq!((st.transfers_started, st.timeout_now_sent), (1, 1));
    assert_eq!(st.transfers_aborted, 0, "a transfer that succeeded was not aborted");
}

/// etcd TestLeaderTransferToSlowFollower: the leader first catches the target up, then
/// sends TimeoutNow.
#[test]
fn transfer_to_slow_follower() {
    let mut net = net3(|_| {});
    net.isolate(3);
    for i in 0..3 {
        net.propose(1, data(i));
    }
    net.heal();
    net.raft_mut(1).transfer_leader(3).unwrap();
    let out = net.process(1);
    assert!(of_kind(&out.messages, "TimeoutNow").is_empty(), "not before the target caught up");
    assert!(!of_kind(&out.messages, "Append").is_empty());
    net.settle();
    assert_eq!(net.leader(), 3);
    assert_eq!(net.raft(3).committed(), net.raft(3).last_index());
}

/// etcd TestLeaderTransferAfterSnapshot: a target behind the compaction point gets the
/// snapshot first, then TimeoutNow.
#[test]
fn transfer_after_snapshot() {
    let mut net = net3(|_| {});
    net.isolate(3);
    for i in 0..3 {
        net.propose(1, data(i));
    }
    let a = net.raft(1).applied();
    net.compact(1, a);
    net.heal();
    net.raft_mut(1).transfer_leader(3).unwrap();
    net.settle();
    for _ in 0..3 {
        if net.raft(3).role() == Role::Leader {
            break;
        }
        net.tick(1);
    }
    assert_eq!(net.node(3).snapshots.len(), 1);
    assert_eq!(net.leader(), 3);
}

/// etcd TestLeaderTransferToSelf / ToNonExistingNode / learner: refused with typed errors,
/// and a follower refuses with a leader hint.
#[test]
fn transfer_refused_to_self_non_member_learner() {
    let mut net = Network::with_conf(&[1, 2, 3, 4], voters_learners(&[1, 2, 3], &[4]), |_| {});
    net.elect(1);
    assert_eq!(net.raft_mut(1).transfer_leader(1), Err(TransferError::ToSelf(1)));
    assert_eq!(net.raft_mut(1).transfer_leader(9), Err(TransferError::NotMember(9)));
    assert_eq!(net.raft_mut(1).transfer_leader(4), Err(TransferError::NotVoter(4)));
    // An outgoing-only voter (being demoted in a joint configuration) cannot lead either.
    net.raft_mut(1).step(append_ok(2, 1, 1, 1)).unwrap();
    net.settle();
    net.propose_cc(
        1,
        ConfChange {
            transition: Transition::JointExplicit,
            changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(3) }],
        },
    );
    assert_eq!(net.raft(1).conf().learners_next, vec![r(3)]);
    assert_eq!(net.raft_mut(1).transfer_leader(3), Err(TransferError::NotVoter(3)));
    assert_eq!(net.raft_mut(2).transfer_leader(3), Err(TransferError::NotLeader { leader_hint: Some(r(1)) }));
    assert_eq!(net.raft(1).status().transferee, 0);
    assert!(net.raft_mut(1).propose(data(1)).is_ok(), "nothing was started");
}

/// etcd TestLeaderTransferTimeout / TestLeaderTransferIgnoreProposal: while a transfer is
/// in progress proposals (data and membership) are refused with `TransferInProgress`; the
/// transfer aborts after an election timeout and proposals are accepted again.
#[test]
fn transfer_timeout_aborts_and_proposals_refused_meanwhile() {
    let mut net = net3(|_| {});
    net.isolate(3);
    net.propose(1, data(1));
    net.raft_mut(1).transfer_leader(3).unwrap();
    assert_eq!(net.raft_mut(1).propose(data(2)), Err(ProposeError::TransferInProgress { to: 3 }));
    assert_eq!(
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(4))),
        Err(ProposeError::TransferInProgress { to: 3 })
    );
    for _ in 0..9 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).status().transferee, 3);
    net.tick(1);
    assert_eq!(net.raft(1).status().transferee, 0, "aborted after an election timeout");
    assert_eq!(net.raft(1).stats().transfers_aborted, 1);
    assert_eq!(net.raft(1).role(), Role::Leader);
    assert!(net.raft_mut(1).propose(data(3)).is_ok());
}

/// etcd TestLeaderTransferSecondTransferToSameNode: a second request for the same target
/// neither restarts the transfer nor extends its timeout.
#[test]
fn second_transfer_same_target() {
    let mut net = net3(|_| {});
    net.isolate(3);
    net.propose(1, data(1));
    net.raft_mut(1).transfer_leader(3).unwrap();
    for _ in 0..5 {
        net.tick(1);
    }
    net.raft_mut(1).transfer_leader(3).unwrap();
    assert_eq!(net.raft(1).stats().transfers_started, 1);
    for _ in 0..5 {
        net.tick(1);
    }
    assert_eq!(net.raft(1).status().transferee, 0, "the timeout was not extended");
}

/// etcd TestLeaderTransferSecondTransferToAnotherNode: a transfer to another target aborts
/// the first and proceeds to the new one.
#[test]
fn second_transfer_different_target() {
    let mut net = net3(|_| {});
    net.isolate(3);
    net.propose(1, data(1));
    net.raft_mut(1).transfer_leader(3).unwrap();
    net.raft_mut(1).transfer_leader(2).unwrap();
    assert_eq!(net.raft(1).stats().transfers_aborted, 1);
    assert_eq!(net.raft(1).stats().transfers_started, 2);
    net.settle();
    assert_eq!(net.leader(), 2);
}

/// etcd TestLeaderTransferRemoveNode, under TiKV's `pre_transfer_leader` rule: a
/// transfer to a replica whose demotion (the first step of its removal) is pending is
/// refused (`ConfChangePending`) rather than started and aborted when the demotion
/// applies; once applied, the target is no longer a voter.
#[test]
fn transfer_to_target_being_removed_refused() {
    let mut net = net3(|_| {});
    net.isolate(3);
    net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddLearner, r(3))).unwrap();
    assert_eq!(net.raft_mut(1).transfer_leader(3), Err(TransferError::ConfChangePending));
    assert_eq!(net.raft(1).status().transferee, 0);
    net.settle();
    assert_eq!(net.raft(1).conf().voters, vec![r(1), r(2)]);
    assert_eq!(net.raft_mut(1).transfer_leader(3), Err(TransferError::NotVoter(3)));
    assert_eq!(net.raft(1).stats().transfers_started, 0);
    assert_eq!(net.raft(1).role(), Role::Leader);
    assert!(net.logged("TimeoutNow").is_empty());
}

/// Leadership transfer (thesis §3.10) is refused with `ConfChangePending` while a
/// membership change (§4.1, one at a time; §4.3 joint consensus) is pending: a change in
/// the log not yet applied, or a joint configuration not yet left. Before the rule, the
/// transfer started, the transferee (which does not campaign with a committed change
/// unapplied) ignored TimeoutNow, and proposals were refused for an election timeout. The
/// refusal changes nothing: no transferee, no message, proposals still accepted. A new
/// leader whose log holds no unapplied change may transfer before its no-op applies.
#[test]
fn transfer_refused_while_conf_change_pending() {
    let mut net = Network::with_conf(&[1, 2, 3, 4], voters_learners(&[1, 2, 3], &[4]), |_| {});
    net.elect(1);
    // A change proposed, not yet applied.
    let (cc_index, _) =
        net.raft_mut(1).propose_conf_change(ConfChange::single(ChangeKind::AddVoter, r(4))).unwrap();
    assert!(net.raft(1).conf_change_pending());
    assert_eq!(net.raft_mut(1).transfer_leader(2), Err(TransferError::ConfChangePending));
    assert_eq!(net.raft(1).status().transferee, 0);
    let out = net.process(1);
    assert!(of_kind(&out.messages, "TimeoutNow").is_empty(), "no transfer started");
    assert_eq!(net.raft(1).stats().transfers_started, 0);
    assert!(net.raft_mut(1).propose(data(1)).is_ok(), "proposals are not blocked");
    net.settle();
    assert!(net.raft(1).applied() >= cc_index);
    assert!(net.raft(1).conf().is_voter(4));
    assert!(!net.raft(1).conf_change_pending());

    // A joint configuration (explicit leave) stays pending until it is left.
    net.propose_cc(
        1,
        ConfChange {
            transition: Transition::JointExplicit,
            changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(4) }],
        },
    );
    assert!(net.raft(1).conf().is_joint());
    assert!(net.raft(1).applied() >= net.raft(1).last_index(), "the joint entry is applied");
    assert_eq!(net.raft_mut(1).transfer_leader(2), Err(TransferError::ConfChangePending));
    net.propose_cc(1, ConfChange::leave_joint());
    assert!(!net.raft(1).conf().is_joint());
    net.raft_mut(1).transfer_leader(2).unwrap();
    net.settle();
    assert_eq!(net.leader(), 2);
    assert_eq!(net.raft(2).stats().leaderships_by_transfer, 1);

    // A new leader with no change in its log may transfer before its no-op applies.
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    assert_eq!(l.applied(), 0);
    assert!(l.transfer_leader(2).is_ok());

    // A new leader with an earlier term's change in its log, not applied: refused.
    let cc = ConfChange::single(ChangeKind::AddLearner, r(4));
    let mut s = storage_with_log(three(), &[1], hs(1, 0, 0));
    s.append(&[Entry { term: 1, index: 2, payload: EntryPayload::ConfChange(cc) }]);
    let mut l = raft_with(config(1), s);
    elect_alone(&mut l);
    assert_eq!(l.transfer_leader(2), Err(TransferError::ConfChangePending));
    step_drain(&mut l, append_ok(2, 1, 2, 3));
    assert_eq!(l.applied(), 3);
    assert!(l.transfer_leader(2).is_ok());
}

// =======================================================================================
// Reads
// =======================================================================================

/// A leader (3 voters) whose no-op has committed, with both followers replicating.
fn ready_leader(f: impl Fn(&mut Config)) -> Raft<MemStorage> {
    let mut l = new_raft(1, three(), f);
    elect_alone(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 1));
    step_drain(&mut l, append_ok(3, 1, 1, 1));
    assert_eq!(l.committed(), 1);
    l
}

fn hb_round(out: &Out) -> u64 {
    let rounds: Vec<u64> = of_kind(&out.messages, "Heartbeat")
        .iter()
        .map(|m| match m.body {
            MessageBody::Heartbeat { round, .. } => round,
            _ => unreachable!(),
        })
        .collect();
    assert!(!rounds.is_empty(), "no heartbeat round: {:?}", kinds(&out.messages));
    assert!(rounds.iter().all(|&r| r == rounds[0]));
    rounds[0]
}

fn hb_resp(from: ReplicaId, term: u64, round: u64) -> Message {
    msg(from, 1, term, MessageBody::HeartbeatResponse { round })
}

/// Thesis §6.4 ReadIndex: a read starts a heartbeat round and is released at the commit
/// index once a quorum has answered that round.
#[test]
fn read_index_served_after_heartbeat_quorum() {
    let mut l = ready_leader(|_| {});
    l.read_index(7).unwrap();
    let out = drain(&mut l);
    assert!(out.read_states.is_empty());
    let round = hb_round(&out);
    let out = step_drain(&mut l, hb_resp(2, 1, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 7, index: 1 }]);
    assert_eq!(l.stats().reads_served, 1);
    // A follower forwards the read to its leader at once (it promises nothing on disk,
    // so it does not wait for the follower's writes, as its append answers do); one that
    // knows no leader refuses.
    let mut f = new_raft(2, three(), |_| {});
    assert_eq!(f.read_index(1), Err(ReadIndexError::NotLeader { leader_hint: None }));
    f.step(append(1, 2, 1, (0, 0), vec![], 0)).unwrap();
    drain(&mut f);
    f.read_index(1).unwrap();
    let out = drain(&mut f);
    assert!(out.persisted_messages.is_empty());
    assert_eq!(out.messages, vec![msg(2, 1, 1, MessageBody::ReadIndex { ctx: 1 })]);
    // A single voter serves at once.
    let mut s = new_raft(1, voters(&[1]), |_| {});
    tick_until_campaign(&mut s);
    drain(&mut s);
    s.read_index(3).unwrap();
    assert_eq!(drain(&mut s).read_states, vec![ReadState { ctx: 3, index: 1 }]);
}

/// ReadIndex on a follower (etcd's MsgReadIndex forwarding): the leader confirms the read
/// with a heartbeat round sent after the forwarded request arrived, and answers the
/// follower with its commit index; the read then comes out of the follower's Ready, to be
/// served once the follower has applied that index. A read forwarded to a leader that has
/// not committed an entry of its term waits for it (thesis §6.4).
#[test]
fn read_index_forwarded_from_follower() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], |_| {});
    net.elect(1);
    let (index, _) = net.propose(1, data(1));
    net.settle();
    net.raft_mut(3).read_index(42).unwrap();
    net.settle();
    assert_eq!(net.node(3).read_states, vec![ReadState { ctx: 42, index }]);
    assert!(net.node(1).read_states.is_empty(), "the leader answered by message, not locally");
    assert_eq!(net.raft(1).stats().reads_served, 1);
    assert_eq!(net.raft(3).stats().reads_forwarded, 1);
    assert!(net.raft(3).applied() >= index);
    // A leader that only the asking follower still reaches never confirms the read (2 of 5
    // answer its round); once the others answer again, it does.
    for other in [2, 4, 5] {
        net.cut_both(1, other);
    }
    net.raft_mut(3).read_index(43).unwrap();
    net.settle();
    assert_eq!(net.node(3).read_states.len(), 1, "no quorum answered the round: read 43 is not served");
    net.heal();
    net.tick_all_n(2);
    net.settle();
    assert_eq!(net.node(3).read_states.len(), 2, "a later round confirmed read 43");
}

/// A follower releases only answers to reads it forwarded in this life: after a restart an
/// answer meant for its previous incarnation is ignored.
#[test]
fn read_index_answer_for_unknown_read_is_ignored() {
    let mut f = new_raft(2, three(), |_| {});
    f.step(append(1, 2, 1, (0, 0), vec![], 0)).unwrap();
    drain(&mut f);
    let answer = |ctx| msg(1, 2, 1, MessageBody::ReadIndexResponse { ctx, index: 0 });
    assert!(step_drain(&mut f, answer(9)).read_states.is_empty());
    f.read_index(9).unwrap();
    drain(&mut f);
    assert_eq!(step_drain(&mut f, answer(9)).read_states, vec![ReadState { ctx: 9, index: 0 }]);
    assert!(step_drain(&mut f, answer(9)).read_states.is_empty(), "answered once only");
}

/// Only replies to a heartbeat round sent after the read arrived confirm it.
#[test]
fn read_index_only_confirmed_by_later_round() {
    let mut l = ready_leader(|_| {});
    l.tick();
    let early = hb_round(&drain(&mut l));
    l.read_index(1).unwrap();
    let out = drain(&mut l);
    let late = hb_round(&out);
    assert!(late > early);
    let out = step_drain(&mut l, hb_resp(2, 1, early));
    assert!(out.read_states.is_empty(), "an answer to an earlier round proves nothing");
    let out = step_drain(&mut l, hb_resp(3, 1, early));
    assert!(out.read_states.is_empty());
    let out = step_drain(&mut l, hb_resp(3, 1, late));
    assert_eq!(out.read_states, vec![ReadState { ctx: 1, index: 1 }]);
}

/// Thesis §6.4: a new leader serves reads only after an entry of its term has committed;
/// earlier reads wait, then are confirmed at the new commit index.
#[test]
fn read_index_waits_for_own_term_commit() {
    let mut l = raft_with(config(1), storage_with_log(three(), &[1, 1], hs(1, 0, 1)));
    elect_alone(&mut l);
    assert_eq!(l.committed(), 1);
    l.read_index(5).unwrap();
    let out = drain(&mut l);
    assert!(of_kind(&out.messages, "Heartbeat").is_empty(), "the read waits: no round yet");
    // A heartbeat round answered now does not release it.
    l.tick();
    let round = hb_round(&drain(&mut l));
    assert!(step_drain(&mut l, hb_resp(2, 2, round)).read_states.is_empty());
    // The no-op (index 3) commits: the read starts its round at commit 3.
    let out = step_drain(&mut l, append_ok(2, 1, 2, 3));
    assert_eq!(l.committed(), 3);
    assert!(out.read_states.is_empty());
    let round = hb_round(&out);
    let out = step_drain(&mut l, hb_resp(3, 2, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 5, index: 3 }]);
}

/// Thesis §6.4.1 lease reads: `LeaseBased` requires CheckQuorum; while the lease (measured
/// on the `set_now` clock from when a quorum-confirmed round was sent) holds, reads are
/// served without a round; after it, a round is needed again; the lease ends when
/// TimeoutNow is sent.
#[test]
fn lease_reads() {
    let mut c = config(1);
    c.read_mode = ReadMode::LeaseBased;
    assert_eq!(c.clone().validate().unwrap_err(), ConfigError::LeaseWithoutCheckQuorum);

    let mut l = ready_leader(lease);
    let t0 = 1_000 * TICK_NANOS;
    l.set_now(t0);
    // No lease yet: the first read needs a round, whose confirmation starts the lease.
    l.read_index(1).unwrap();
    let round = hb_round(&drain(&mut l)); // sent at t0
    let out = step_drain(&mut l, hb_resp(2, 1, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 1, index: 1 }]);
    // Within the lease (10 - 2 = 8 ticks from the round): served at once, no round.
    for t in 1..8 {
        l.set_now(t0 + t * TICK_NANOS);
        l.tick(); // heartbeats go out, nobody answers
        drain(&mut l);
        l.read_index(100 + t).unwrap();
        let out = drain(&mut l);
        assert_eq!(out.read_states, vec![ReadState { ctx: 100 + t, index: 1 }], "tick {t}");
    }
    assert_eq!(l.stats().lease_reads, 7);
    l.set_now(t0 + 8 * TICK_NANOS);
    l.tick();
    drain(&mut l);
    l.read_index(200).unwrap();
    let out = drain(&mut l);
    assert!(out.read_states.is_empty(), "the lease ran out");
    let round = hb_round(&out);
    let out = step_drain(&mut l, hb_resp(3, 1, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 200, index: 1 }]);

    // Lease valid again; TimeoutNow ends it.
    l.read_index(300).unwrap();
    assert_eq!(drain(&mut l).read_states.len(), 1, "lease renewed");
    l.transfer_leader(2).unwrap();
    let out = drain(&mut l);
    assert_eq!(of_kind(&out.messages, "TimeoutNow").len(), 1);
    l.read_index(301).unwrap();
    let out = drain(&mut l);
    assert!(out.read_states.is_empty(), "no lease read after TimeoutNow");
    // A round confirmed during the transfer does not restore the lease.
    let round = hb_round(&out);
    let out = step_drain(&mut l, hb_resp(3, 1, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 301, index: 1 }]);
    l.read_index(302).unwrap();
    assert!(drain(&mut l).read_states.is_empty());
}

fn lease(c: &mut Config) {
    c.read_mode = ReadMode::LeaseBased;
    c.check_quorum = true;
    c.lease_clock_drift_ticks = 2;
}

/// A leader whose lease was started by a round sent at `t0` (confirmed by replica 2).
fn leased_leader(t0: u64) -> Raft<MemStorage> {
    let mut l = ready_leader(lease);
    l.set_now(t0);
    l.read_index(1).unwrap();
    let round = hb_round(&drain(&mut l));
    let out = step_drain(&mut l, hb_resp(2, 1, round));
    assert_eq!(out.read_states, vec![ReadState { ctx: 1, index: 1 }]);
    l
}

/// Thesis §6.4.1 (the lease is bounded by the election timeout of the others, measured in
/// time): a leader stalled past its lease (it missed every tick while the clock ran on,
/// as a paused process or a suspended machine does) holds no lease when it resumes: the
/// read waits for a heartbeat round. Counting ticks, it would still believe it holds one.
#[test]
fn lease_expires_with_the_clock_though_no_tick_ran() {
    let t0 = 1_000 * TICK_NANOS;
    let mut l = leased_leader(t0);
    l.set_now(t0 + 7 * TICK_NANOS);
    l.read_index(2).unwrap();
    assert_eq!(drain(&mut l).read_states, vec![ReadState { ctx: 2, index: 1 }], "within the lease");
    // The stall: no tick for 30 ticks' time.
    l.set_now(t0 + 30 * TICK_NANOS);
    l.read_index(3).unwrap();
    let out = drain(&mut l);
    assert!(out.read_states.is_empty(), "a stalled leader served a read past its lease");
    let round = hb_round(&out);
    assert_eq!(step_drain(&mut l, hb_resp(3, 1, round)).read_states, vec![ReadState { ctx: 3, index: 1 }]);
    assert_eq!(l.stats().lease_reads, 1);
}

/// Without a clock (`set_now` never called) a `LeaseBased` leader never holds a lease:
/// every read is confirmed by a round.
#[test]
fn no_lease_without_a_clock() {
    let mut l = ready_leader(lease);
    for ctx in 1..4 {
        l.read_index(ctx).unwrap();
        let out = drain(&mut l);
        assert!(out.read_states.is_empty(), "read {ctx} served without a round");
        let round = hb_round(&out);
        assert_eq!(step_drain(&mut l, hb_resp(2, 1, round)).read_states, vec![ReadState { ctx, index: 1 }]);
    }
    assert_eq!(l.stats().lease_reads, 0);
}

/// Thesis §6.4.1: the lease is checked when the read is answered, once applied reached its
/// index, not when it was queued: a read accepted within the lease whose entries are
/// applied only after the lease ran out is confirmed by a heartbeat round instead (and one
/// applied within the lease is served then).
#[test]
fn lease_read_is_checked_when_answered() {
    let t0 = 1_000 * TICK_NANOS;
    let mut l = leased_leader(t0);
    // Commit index 2 without applying it.
    let (index, _) = l.propose(data(1)).unwrap();
    let rd = l.ready();
    persist(&mut l, &rd);
    l.step(append_ok(2, 1, 1, index)).unwrap();
    assert_eq!(l.committed(), 2);
    let rd = l.ready();
    persist(&mut l, &rd);
    assert_eq!(rd.committed_entries.len(), 1);
    assert_eq!(l.applied(), 1);
    // Two reads within the lease at index 2: not answered before applied reaches 2.
    l.set_now(t0 + TICK_NANOS);
    l.read_index(10).unwrap();
    l.read_index(11).unwrap();
    assert!(!l.has_ready() || l.ready().read_states.is_empty());
    // Applied within the lease: served then.
    l.set_now(t0 + 7 * TICK_NANOS);
    l.on_applied(2);
    let out = drain(&mut l);
    assert_eq!(out.read_states, vec![ReadState { ctx: 10, index: 2 }, ReadState { ctx: 11, index: 2 }]);

    // Commit index 3 without applying it; a read within the lease waits for it.
    let (index, _) = l.propose(data(2)).unwrap();
    let rd = l.ready();
    persist(&mut l, &rd);
    l.step(append_ok(2, 1, 1, index)).unwrap();
    let rd = l.ready();
    persist(&mut l, &rd);
    assert_eq!((l.committed(), l.applied()), (3, 2));
    l.read_index(12).unwrap();
    // Apply catches up only after the lease ran out: a round confirms the read.
    l.set_now(t0 + 9 * TICK_NANOS);
    l.on_applied(3);
    let out = drain(&mut l);
    assert!(out.read_states.is_empty(), "answered under an expired lease");
    assert_eq!(l.stats().lease_reads_expired, 1);
    let round = hb_round(&out);
    assert_eq!(step_drain(&mut l, hb_resp(3, 1, round)).read_states, vec![ReadState { ctx: 12, index: 3 }]);
}

// =======================================================================================
// API errors
// =======================================================================================

/// `step` refuses a message addressed to another replica, and a `SendSnapshot`
/// instruction (for the runtime, never stepped), with typed errors and no effect.
#[test]
fn step_errors() {
    let mut r = new_raft(1, three(), |_| {});
    assert_eq!(r.step(append(2, 5, 3, (0, 0), vec![], 0)), Err(StepError::WrongRecipient { to: 5, me: 1 }));
    assert_eq!(r.term(), 0);
    assert_eq!(
        r.step(msg(2, 1, 3, MessageBody::SendSnapshot { meta: SnapshotMeta::default() })),
        Err(StepError::NotAWireMessage)
    );
    assert_eq!(r.term(), 0);
    assert!(!r.has_ready());
}

/// etcd TestMsgAppFlowControlRecvHeartbeat: a follower in Replicate whose whole in-flight
/// window was lost (a partition while proposals kept coming) must not stay paused forever:
/// once it answers heartbeats again, replication resumes and it catches up.
#[test]
fn replicate_full_window_of_lost_appends_recovers() {
    let mut net = net3(|c| c.max_inflight_msgs = 3);
    assert_eq!(follower(net.raft(1), 3).state, ProgressState::Replicate);
    net.isolate(3);
    for i in 0..10 {
        net.propose(1, data(i));
    }
    let f = follower(net.raft(1), 3);
    assert_eq!((f.state, f.matched), (ProgressState::Replicate, 1));
    net.heal();
    for _ in 0..10 {
        net.tick_all();
    }
    assert_eq!(net.raft(3).committed(), net.raft(1).committed(), "{:?}", follower(net.raft(1), 3));
    assert_eq!(net.applied_data(3).len(), 10);
}

/// Thesis §4.2.3: a replica removed from the group while cut off does not learn of its
/// removal; when it comes back it campaigns, but with PreVote and CheckQuorum it cannot
/// disrupt the group (its PreVotes are ignored by followers in their leader's lease).
#[test]
fn removed_replica_cannot_disrupt() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.isolate(3);
    net.propose_cc(1, ConfChange::single(ChangeKind::AddLearner, r(3)));
    net.propose_cc(1, ConfChange::single(ChangeKind::Remove, r(3)));
    net.tick_all();
    assert_eq!(net.raft(1).conf().voters, vec![r(1), r(2)]);
    assert_eq!(net.raft(3).conf(), &three(), "replica 3 does not know it was removed");
    for _ in 0..50 {
        net.tick(3);
    }
    net.heal();
    for _ in 0..50 {
        net.tick_all();
    }
    assert_eq!(net.leader(), 1);
    assert_eq!(net.raft(1).term(), 1);
    assert_eq!(net.raft(2).term(), 1);
    net.propose(1, data(1));
    assert_eq!(net.applied_data(2), vec![data(1)]);
}

/// Compaction past a joint configuration: a replica that needs a snapshot taken while the
/// group was joint restores the joint configuration (outgoing voters included) from it,
/// then leaves it with everyone when the explicit leave commits.
#[test]
fn snapshot_taken_in_joint_config_restores_it() {
    let mut net = net3(|_| {});
    net.add(new_raft(4, three(), |_| {}));
    net.isolate(4);
    let cc = ConfChange {
        transition: Transition::JointExplicit,
        changes: vec![SingleChange { kind: ChangeKind::AddVoter, replica: r(4) }],
    };
    net.propose_cc(1, cc);
    net.propose(1, data(1));
    let joint = net.raft(1).conf().clone();
    assert!(joint.is_joint());
    let a = net.raft(1).applied();
    let meta = net.compact(1, a);
    assert_eq!(meta.conf, joint, "the snapshot carries the joint configuration");
    net.heal();
    for _ in 0..3 {
        net.tick(1);
    }
    assert_eq!(net.node(4).snapshots.len(), 1);
    assert_eq!(net.raft(4).conf(), &joint);
    net.propose_cc(1, ConfChange::leave_joint());
    net.tick(1);
    for id in [1, 2, 3, 4] {
        let c = net.raft(id).conf();
        assert!(!c.is_joint(), "replica {id}");
        assert_eq!(c.voters, vec![r(1), r(2), r(3), r(4)]);
    }
}

/// Duplicated and reordered answers change nothing: a stale acceptance does not move the
/// match back, a stale rejection does not move `next` back.
#[test]
fn stale_and_duplicate_append_responses_ignored() {
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 1));
    for i in 0..3 {
        l.propose(data(i)).unwrap();
    }
    drain(&mut l);
    step_drain(&mut l, append_ok(2, 1, 1, 4));
    let before = follower(&l, 2);
    assert_eq!((before.matched, before.next, before.state), (4, 5, ProgressState::Replicate));
    let out = step_drain(&mut l, append_ok(2, 1, 1, 2));
    assert!(out.all().is_empty());
    assert_eq!(follower(&l, 2), before);
    let out = step_drain(
        &mut l,
        msg(2, 1, 1, MessageBody::AppendResponse { index: 1, reject: true, reject_hint: 0, hint_term: 0 }),
    );
    assert!(out.all().is_empty());
    assert_eq!(follower(&l, 2), before);
    assert_eq!(l.committed(), 4);
}

/// Lease reads across a restart: under `LeaseBased` a replica that restarts refuses votes
/// for one minimum election timeout, as if it had just heard from a leader (a leader's
/// lease may have counted it before the restart; the restart lost that memory).
#[test]
fn lease_reads_restarted_replica_refuses_votes_for_a_timeout() {
    let lease = |c: &mut Config| {
        c.read_mode = ReadMode::LeaseBased;
        c.check_quorum = true;
        c.election_timeout_max_ticks = 1000; // it does not campaign itself meanwhile
    };
    let mut f = new_raft(2, three(), lease);
    step_drain(&mut f, append(1, 2, 1, (0, 0), vec![], 0));
    assert_eq!(f.term(), 1);
    // Restart: the replica no longer knows a leader.
    let mut c = config(2);
    lease(&mut c);
    let mut f = raft_with(c, f.storage().clone());
    assert_eq!(f.leader(), 0);
    for _ in 0..9 {
        f.tick();
    }
    let out = step_drain(&mut f, vote_req(3, 2, 2, (0, 0), false));
    assert!(out.all().is_empty(), "within the start-up lease: ignored");
    f.tick();
    let out = step_drain(&mut f, vote_req(3, 2, 2, (0, 0), false));
    assert_eq!(kinds(&out.all()), vec!["RequestVoteResponse"]);
    assert_eq!(f.hard_state().vote, 3);
}

/// etcd's hup() check: a replica whose committed membership changes are not applied yet
/// does not campaign (it would count votes in a stale configuration); once they are
/// applied it does.
#[test]
fn no_campaign_with_unapplied_committed_conf_change() {
    let mut s = storage_with_log(three(), &[1], hs(1, 0, 2));
    let cc = ConfChange::single(ChangeKind::AddLearner, r(4));
    s.append(&[Entry { term: 1, index: 2, payload: EntryPayload::ConfChange(cc) }]);
    let mut f = raft_with(config(1), s);
    for _ in 0..100 {
        f.tick();
    }
    assert_eq!(f.role(), Role::Follower);
    assert_eq!(f.term(), 1);
    let out = drain(&mut f);
    assert_eq!(out.committed.len(), 2);
    assert!(f.conf().is_learner(4));
    tick_until_campaign(&mut f);
    assert_eq!(f.role(), Role::Candidate);
}

/// Raft paper Figure 2: commitIndex is volatile state. A `Ready` says when its hard state
/// changed only that (the runtime may then write it with a later write), and never when the
/// term or vote changed (those are durable before anything is said).
#[test]
fn a_ready_marks_a_hard_state_that_changed_only_its_commit_index() {
    let mut f = new_raft(2, three(), |_| {});
    f.step(append(1, 2, 1, (0, 0), ents(1, &[1, 1]), 0)).unwrap();
    let rd = ready_raw(&mut f);
    assert_eq!(rd.hard_state, Some(hs(1, 0, 0)));
    assert!(!rd.hard_state_commit_only, "a new term is not commit-only");
    persist(&mut f, &rd);
    drain(&mut f);

    // The commit advance only (an empty append carrying the leader's commit).
    f.step(append(1, 2, 1, (2, 1), vec![], 2)).unwrap();
    let rd = ready_raw(&mut f);
    assert_eq!(rd.hard_state, Some(hs(1, 0, 2)));
    assert!(rd.hard_state_commit_only);
    assert!(rd.entries.is_empty());
    persist(&mut f, &rd);
    drain(&mut f);

    // Nothing changed: no hard state, and not marked.
    f.step(append(1, 2, 1, (2, 1), vec![], 2)).unwrap();
    let rd = ready_raw(&mut f);
    assert_eq!((rd.hard_state, rd.hard_state_commit_only), (None, false));
    persist(&mut f, &rd);
    drain(&mut f);

    // A vote at a higher term (the lease is off by default): never commit-only.
    f.step(vote_req(3, 2, 2, (2, 1), false)).unwrap();
    let rd = ready_raw(&mut f);
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((2, 3)));
    assert!(!rd.hard_state_commit_only);
}

/// etcd/raft's `TestUncommittedEntryLimit`: a leader holds at most
/// `max_uncommitted_bytes` of proposal payload appended in its term and not yet handed
/// out for apply. With its followers cut off it takes proposals up to the limit (one of
/// any size when it holds none) and refuses the next with `UncommittedFull`; once they
/// commit and are handed out it takes more; a new leader starts from none. (Membership
/// changes are not counted.)
#[test]
fn uncommitted_entry_limit() {
    let mut net = net3(|c| c.max_uncommitted_bytes = 100);
    net.isolate(2);
    net.isolate(3);
    let l = net.raft_mut(1);
    assert_eq!(l.uncommitted_bytes(), 0, "the election's no-op does not count");
    l.propose(Bytes::from(vec![1; 60])).unwrap();
    l.propose(Bytes::from(vec![2; 40])).unwrap();
    assert_eq!(l.uncommitted_bytes(), 100);
    assert_eq!(
        l.propose(Bytes::from(vec![3; 1])),
        Err(ProposeError::UncommittedFull { held: 100, max: 100 })
    );
    assert_eq!(l.stats().proposals_refused_uncommitted, 1);

    // Reconnected: the proposals commit and are handed out for apply, the limit frees.
    net.heal();
    net.tick_all_n(4);
    assert_eq!(net.raft(1).uncommitted_bytes(), 0);
    net.raft_mut(1).propose(Bytes::from(vec![4; 100])).unwrap();

    // A leader holding none takes one proposal past the limit, then refuses.
    net.tick_all_n(4);
    net.isolate(2);
    net.isolate(3);
    let l = net.raft_mut(1);
    l.propose(Bytes::from(vec![5; 500])).unwrap();
    assert!(matches!(
        l.propose(Bytes::from(vec![6; 1])),
        Err(ProposeError::UncommittedFull { held: 500, .. })
    ));

    // A new leader starts from none (the old leader's tail is not its proposals).
    net.heal();
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.raft(2).role(), Role::Leader);
    assert_eq!(net.raft(2).uncommitted_bytes(), 0);
    assert_eq!(net.raft(1).uncommitted_bytes(), 500, "replica 1 never heard it lost the lead");
}

/// A leader holds at most `max_pending_reads` reads waiting for confirmation: past it
/// `read_index` answers `Busy` (nothing is queued); once a round confirms the held ones,
/// it takes reads again.
#[test]
fn pending_read_limit() {
    let mut net = net3(|c| c.max_pending_reads = 2);
    net.isolate(2);
    net.isolate(3);
    let l = net.raft_mut(1);
    l.read_index(1).unwrap();
    l.read_index(2).unwrap();
    assert_eq!(l.read_index(3), Err(ReadIndexError::Busy { held: 2 }));
    assert_eq!(l.stats().reads_refused_full, 1);
    net.process(1);
    net.heal();
    net.tick_all_n(4);
    let served: Vec<u64> = net.node(1).read_states.iter().map(|r| r.ctx).collect();
    assert_eq!(served, [1, 2], "the held reads are served, the refused one never");
    net.raft_mut(1).read_index(4).unwrap();
}
