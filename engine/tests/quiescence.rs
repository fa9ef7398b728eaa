//! Quiescence scenarios of the Raft core (CockroachDB's quiesced ranges, in the style of
//! `scenarios.rs`): when a leader quiesces a group, what it tells its followers, what a
//! quiesced group emits (nothing), what wakes it, and that a woken replica counts the
//! wall ticks it spent quiesced (votes) while a woken leader starts its CheckQuorum
//! period afresh and keeps its lease to its end. Each test names the rule it checks.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use flotilla_engine::raft::*;
use flotilla_engine::transport::Outbox;

fn quiet(c: &mut Config) {
    c.quiesce = true;
}

/// A 3-voter network with quiescence on (configured further by `f`), replica 1 elected.
fn net3(f: impl Fn(&mut Config)) -> Network {
    let mut net = Network::new(&[1, 2, 3], |c| {
        quiet(c);
        f(c)
    });
    net.elect(1);
    net
}

/// Ticks everyone until the leader quiesces; at most `n` ticks. Returns the leader.
fn tick_until_quiesced(net: &mut Network, n: usize) -> ReplicaId {
    for _ in 0..n {
        let l = net.leader();
        if net.raft(l).is_quiesced() {
            return l;
        }
        net.tick_all();
    }
    let l = net.leader();
    assert!(net.raft(l).is_quiesced(), "leader {l} did not quiesce within {n} ticks");
    l
}

fn quiesce_heartbeats(log: &[Message]) -> Vec<(ReplicaId, u64)> {
    log.iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { commit, quiesce: true, .. } => Some((m.to, commit)),
            _ => None,
        })
        .collect()
}

/// Rule: a leader quiesces only after every member echoed a heartbeat round that told it
/// the last index is committed; it then sends each member ONE heartbeat with the quiesce
/// flag (commit = last index), which followers obey and acknowledge (an answer with the
/// quiesce round, which the quiesced leader takes without waking). A quiesced group whose
/// members all acknowledged emits nothing and nobody campaigns, however long it idles.
#[test]
fn leader_quiesces_after_every_member_acked_the_final_commit() {
    let mut net = net3(|_| {});
    let last = net.raft(1).last_index();
    assert_eq!(net.raft(1).committed(), last);
    // The first heartbeat round carries commit == last to everyone: not quiescent yet,
    // the echoes were not in when it was sent.
    net.tick_all();
    assert!(!net.raft(1).is_quiesced(), "quiesced before the members echoed the final commit");
    assert!(quiesce_heartbeats(&net.log).is_empty());
    let before = net.log.len();
    net.tick_all();
    assert!(net.raft(1).is_quiesced(), "every member acked the final commit: the leader quiesces");
    let sent = &net.log[before..];
    let mut q = quiesce_heartbeats(sent);
    q.sort();
    assert_eq!(q, vec![(2, last), (3, last)], "one quiesce heartbeat per member, commit = last index");
    let round = match sent[0].body {
        MessageBody::Heartbeat { round, .. } => round,
        _ => unreachable!("{sent:?}"),
    };
    let mut acks: Vec<(ReplicaId, ReplicaId)> = sent
        .iter()
        .filter(|m| m.body == MessageBody::HeartbeatResponse { round })
        .map(|m| (m.from, m.to))
        .collect();
    acks.sort();
    assert_eq!(acks, vec![(2, 1), (3, 1)], "each follower acknowledges the quiesce round: {sent:?}");
    assert_eq!(sent.len(), 4, "nothing else: {sent:?}");
    assert!(net.raft(1).is_quiesced(), "an acknowledgement does not wake the leader");
    assert!(!net.raft(1).awaiting_quiesce_acks());
    for id in [2, 3] {
        assert!(net.raft(id).is_quiesced(), "replica {id} obeys");
        assert_eq!(net.raft(id).committed(), last);
    }
    let (before, terms_before) = (net.log.len(), net.raft(2).term());
    net.tick_all_n(200);
    assert_eq!(net.log.len(), before, "a quiesced group sends nothing: {:?}", &net.log[before..]);
    assert_eq!(net.raft(2).term(), terms_before);
    assert_eq!(net.leader(), 1);
    for id in [1, 2, 3] {
        assert_eq!(net.raft(id).stats().campaigns, u64::from(id == 1), "replica {id} never campaigns");
    }
}

/// Rule: no quiescence while a member lags (here: cut off, so it never matches nor echoes),
/// while a caught-up member has not echoed a heartbeat round carrying the final commit, or
/// while a joint configuration stands (it must be left first); each resolved, the group
/// quiesces.
#[test]
fn no_quiescence_while_a_member_lags_or_a_joint_configuration_stands() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.isolate(3);
    net.propose(1, data(1));
    net.tick_all_n(40);
    assert!(!net.raft(1).is_quiesced(), "member 3 never acknowledged the final commit");
    assert!(quiesce_heartbeats(&net.log).is_empty());
    net.heal();
    tick_until_quiesced(&mut net, 20);

    // Caught up (matched) but its heartbeat answers are lost: it never acknowledged that
    // the last index is committed, so no quiescence.
    net.propose(1, data(2));
    assert!(!net.raft(1).is_quiesced());
    net.drop_if =
        Some(Box::new(|m: &Message| m.from == 3 && matches!(m.body, MessageBody::HeartbeatResponse { .. })));
    net.tick_all_n(40);
    assert_eq!(net.raft(3).last_index(), net.raft(1).last_index());
    assert!(!net.raft(1).is_quiesced(), "member 3 never echoed a round carrying the final commit");
    net.heal();
    tick_until_quiesced(&mut net, 20);

    // A joint configuration left only explicitly: everyone is caught up, yet no quiescence.
    let demote = ConfChange {
        transition: Transition::JointExplicit,
        changes: vec![SingleChange { kind: ChangeKind::AddLearner, replica: r(3) }],
    };
    net.propose_cc(1, demote);
    net.tick_all_n(40);
    assert!(net.raft(1).conf().is_joint());
    assert!(!net.raft(1).is_quiesced(), "quiesced inside a joint configuration");
    net.propose_cc(1, ConfChange::leave_joint());
    tick_until_quiesced(&mut net, 20);
    assert!(!net.raft(1).conf().is_joint());
}

/// Rule: any proposal wakes the group. The leader wakes on the proposal and appends; the
/// followers wake on the leader's append (no wake-up ping: the leader is awake); then the
/// group quiesces again once idle.
#[test]
fn a_proposal_wakes_the_group_and_it_quiesces_again() {
    let mut net = net3(|_| {});
    tick_until_quiesced(&mut net, 20);
    let before = net.log.len();
    net.raft_mut(1).propose(data(7)).unwrap();
    assert!(!net.raft(1).is_quiesced(), "a proposal wakes the leader");
    net.settle();
    for id in [2, 3] {
        assert!(!net.raft(id).is_quiesced(), "replica {id} woken by the append");
        assert_eq!(net.applied_data(id), vec![data(7)]);
    }
    let pings = net.log[before..]
        .iter()
        .filter(|m| matches!(m.body, MessageBody::HeartbeatResponse { round: 0 }))
        .count();
    assert_eq!(pings, 0, "followers woken by their leader do not ping it");
    tick_until_quiesced(&mut net, 20);
    assert!(net.raft(2).is_quiesced() && net.raft(3).is_quiesced());
}

/// Rule: a follower woken by a local input (here a read) wakes its leader with a ping (a
/// heartbeat answer of round 0) so it heartbeats before the follower could time out; the
/// read is served.
#[test]
fn a_follower_woken_locally_wakes_its_leader() {
    let mut net = net3(|_| {});
    tick_until_quiesced(&mut net, 20);
    net.raft_mut(2).read_index(42).unwrap();
    assert!(!net.raft(2).is_quiesced());
    let out = net.process(2);
    let to_leader: Vec<&str> = out.all().iter().filter(|m| m.to == 1).map(|m| m.body.kind()).collect();
    assert!(to_leader.contains(&"HeartbeatResponse"), "wake-up ping to the leader: {to_leader:?}");
    net.deliver();
    assert!(!net.raft(1).is_quiesced(), "the ping (and the read) wake the leader");
    net.settle();
    net.tick_all_n(2);
    assert!(net.node(2).read_states.iter().any(|r| r.ctx == 42), "the read is served");
    tick_until_quiesced(&mut net, 20);
}

/// Rule: a quiesced follower counts leader contact in wall ticks when node liveness wakes
/// it. Ticks it was not given while quiesced are credited with `advance_idle`; once they
/// reach the minimum election timeout it grants a (pre-)vote after a liveness wake
/// (`wake`), so a group whose leader vanished while everything was quiesced elects a new
/// one. Without the credit its lease would still hold (CheckQuorum) and it would ignore
/// the candidate.
#[test]
fn woken_follower_grants_votes_after_idle_wall_ticks() {
    let setup = || {
        let mut net = net3(|c| {
            c.pre_vote = true;
            c.check_quorum = true;
        });
        tick_until_quiesced(&mut net, 20);
        net.isolate(1);
        net
    };
    // Without credit: replica 2 still believes in its leader and ignores the PreVote.
    let mut net = setup();
    let before = net.log.len();
    net.raft_mut(3).wake();
    tick_until_campaign(net.raft_mut(3));
    net.process(3);
    net.deliver();
    net.process(2);
    assert!(!net.raft(2).is_quiesced(), "the PreVote wakes replica 2");
    let answers = of_kind(&net.log[before..], "PreVoteResponse");
    assert!(answers.is_empty(), "in its lease, replica 2 ignores the PreVote: {answers:?}");

    // With the wall ticks credited (lazily, as the runtime does) and node liveness waking
    // both followers (their leader's node went down): 2 grants the PreVote at once, and 3
    // wins.
    let mut net = setup();
    for id in [2, 3] {
        net.raft_mut(id).advance_idle(10);
    }
    net.raft_mut(2).wake();
    let before = net.log.len();
    net.raft_mut(3).wake();
    tick_until_campaign(net.raft_mut(3));
    net.process(3);
    net.deliver();
    net.process(2);
    let answers: Vec<&Message> = of_kind(&net.log[before..], "PreVoteResponse");
    assert!(
        answers
            .iter()
            .any(|m| m.from == 2 && matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. })),
        "credited with a minimum election timeout, replica 2 grants the PreVote: {answers:?}"
    );
    net.settle();
    for _ in 0..60 {
        if net.raft(2).role() == Role::Leader || net.raft(3).role() == Role::Leader {
            break;
        }
        net.tick_all();
    }
    let leader = net.leader();
    assert_ne!(leader, 1);
    assert!(net.raft(leader).term() > net.raft(1).term());
}

/// Rule: a woken follower times out after a full randomized election timeout from the
/// wake (not at once), so its leader's heartbeat can reach it first; and it does time out
/// if nothing comes.
#[test]
fn woken_follower_times_out_within_one_election_timeout() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    tick_until_quiesced(&mut net, 20);
    net.isolate(1);
    net.raft_mut(2).advance_idle(1000);
    net.raft_mut(2).wake();
    let mut ticks = 0;
    while net.raft(2).role() == Role::Follower {
        net.raft_mut(2).tick();
        ticks += 1;
        assert!(ticks <= 20, "no campaign within the maximum election timeout");
    }
    assert!(ticks >= 10, "campaigned {ticks} ticks after waking: before a minimum election timeout");
}

/// Rule: waking starts the leader's CheckQuorum period afresh (every member counts as
/// heard from, the election-timeout clock restarts), so with nobody answering it steps
/// down exactly two minimum election timeouts after the wake (one period to clear the
/// activity, one to find it missing), not earlier.
#[test]
fn waking_resets_check_quorum_activity() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    net.tick_all();
    tick_until_quiesced(&mut net, 20);
    net.isolate(2);
    net.isolate(3);
    net.raft_mut(1).propose(data(1)).unwrap();
    assert!(!net.raft(1).is_quiesced());
    for t in 1..20 {
        net.raft_mut(1).tick();
        drain(net.raft_mut(1));
        assert_eq!(net.raft(1).role(), Role::Leader, "stepped down {t} ticks after waking");
    }
    net.raft_mut(1).tick();
    assert_eq!(net.raft(1).role(), Role::Follower);
    assert_eq!(net.raft(1).stats().check_quorum_step_downs, 1);
}

/// Rule: waking keeps a lease to its end (thesis §6.4.1). The lease is measured on the
/// clock, which runs on while the group is quiesced, and a follower that confirmed it
/// counts a minimum election timeout from that round before it votes (ticked if awake,
/// credited with its idle ticks only at a liveness wake if quiesced). So a read that wakes
/// the leader within the lease is served at once, with no heartbeat round; once the clock
/// has passed the lease's end, the read waits for a round.
#[test]
fn waking_keeps_the_lease_to_its_end() {
    // Under LeaseBased reads replicas refuse votes for a minimum election timeout after
    // start: let the first election happen by timeouts.
    let mut net = Network::new(&[1, 2, 3], |c| {
        quiet(c);
        c.pre_vote = true;
        c.check_quorum = true;
        c.read_mode = ReadMode::LeaseBased;
    });
    for _ in 0..100 {
        if net.nodes.values().any(|n| n.raft.role() == Role::Leader) {
            break;
        }
        net.tick_all();
    }
    let l = net.leader();
    net.tick_all();
    // Awake and within the lease: served at once.
    net.raft_mut(l).read_index(1).unwrap();
    assert_eq!(net.raft(l).stats().lease_reads, 1, "an awake leader in its lease serves at once");
    assert_eq!(tick_until_quiesced(&mut net, 20), l);

    // Quiesced, within the lease: the read wakes the leader and is served at once.
    let out = {
        net.raft_mut(l).read_index(2).unwrap();
        net.process(l)
    };
    assert!(!net.raft(l).is_quiesced());
    assert!(
        out.read_states.iter().any(|r| r.ctx == 2),
        "the woken leader keeps its lease: {:?}",
        out.read_states
    );
    assert_eq!(net.raft(l).stats().lease_reads, 2);
    assert_eq!(net.raft(l).stats().lease_reads_after_wake, 1);

    // Quiesced again, and the clock (not the ticks: a quiesced group is not ticked) runs
    // past the lease's end: the read waits for a heartbeat round.
    assert_eq!(tick_until_quiesced(&mut net, 20), l);
    net.now += 20 * TICK_NANOS;
    let now = net.now;
    for id in [1, 2, 3] {
        net.raft_mut(id).set_now(now);
    }
    let out = {
        net.raft_mut(l).read_index(3).unwrap();
        net.process(l)
    };
    assert!(out.read_states.is_empty(), "past its end the lease is gone: {:?}", out.read_states);
    assert_eq!(net.raft(l).stats().lease_reads, 2);
    net.settle();
    assert!(net.node(l).read_states.iter().any(|r| r.ctx == 3), "served after a heartbeat round");
}

/// Rule: the heartbeat coalescer sends every heartbeat, also right after an append (a
/// round may confirm a read; the quiesce one is what stops the follower), and carries the
/// quiesce flag through `expand`.
#[test]
fn coalescer_sends_every_heartbeat_and_carries_the_quiesce_flag() {
    let mut ob = Outbox::new();
    let append =
        msg(1, 2, 3, MessageBody::Append { prev_index: 5, prev_term: 3, entries: vec![], commit: 5 });
    ob.push(2, 9, append);
    let hb = |quiesce| msg(1, 2, 3, MessageBody::Heartbeat { commit: 5, round: 4, quiesce });
    ob.push(2, 9, hb(false));
    ob.push(2, 9, hb(true));
    let batches = ob.flush();
    let got: Vec<(u64, Message)> = batches
        .into_iter()
        .flat_map(|(_, items)| flotilla_engine::transport::coalescer::expand(items))
        .collect();
    assert!(got.contains(&(9, hb(false))), "a plain heartbeat after an append is sent: {got:?}");
    assert!(got.contains(&(9, hb(true))), "{got:?}");
}

/// Rule (thesis §4.2.3, §9.6: a follower that heard from its leader within the minimum
/// election timeout ignores campaigns): a follower that merely slept does not count its
/// sleep as silence from its leader. Both followers were quiesced for a long time (100
/// ticks credited with `advance_idle`); replica 3 alone is woken by node liveness and
/// campaigns. Its PreVote wakes replica 2, which still holds its lease and ignores it, and
/// wakes the leader, which heartbeats: no election, same term, same leader. (Crediting the
/// sleep on any message, replica 2 would grant the PreVote and 3 would win.)
#[test]
fn stray_prevote_not_granted_by_a_follower_that_merely_slept() {
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    tick_until_quiesced(&mut net, 20);
    let term = net.raft(1).term();
    for id in [2, 3] {
        net.raft_mut(id).advance_idle(100);
    }
    net.raft_mut(3).wake();
    tick_until_campaign(net.raft_mut(3));
    assert_eq!(net.raft(3).role(), Role::PreCandidate);
    let before = net.log.len();
    net.process(3);
    // As the runtime does before an input: credit the missed ticks, then step.
    net.raft_mut(2).advance_idle(50);
    net.deliver();
    net.process(2);
    assert!(!net.raft(2).is_quiesced(), "the PreVote wakes replica 2");
    let grants: Vec<&Message> = of_kind(&net.log[before..], "PreVoteResponse")
        .into_iter()
        .filter(|m| matches!(m.body, MessageBody::RequestVoteResponse { reject: false, .. }))
        .collect();
    assert!(grants.is_empty(), "a follower that merely slept granted a PreVote: {grants:?}");
    net.settle();
    for _ in 0..60 {
        net.tick_all();
    }
    assert_eq!(net.leader(), 1);
    assert_eq!(net.raft(1).term(), term, "no election");
    assert_eq!(net.raft(2).stats().campaigns, 0);
}

/// Rule: a quiesce heartbeat that is lost is re-sent until acknowledged. The leader's
/// quiesce heartbeat to replica 3 is dropped (and the first re-send too); the leader stays
/// quiesced and re-sends it every tick (from one heartbeat interval on) to the member that
/// did not acknowledge, only to it; once 3 obeys and acknowledges, the group sends nothing
/// more and nobody campaigns, however long it idles. Without re-sends replica 3 would time
/// out and campaign.
#[test]
fn lost_quiesce_heartbeat_is_resent_until_acknowledged() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut net = net3(|c| {
        c.pre_vote = true;
        c.check_quorum = true;
    });
    let lost = Arc::new(AtomicUsize::new(0));
    let l2 = lost.clone();
    net.drop_if = Some(Box::new(move |m: &Message| {
        let q = m.to == 3 && matches!(m.body, MessageBody::Heartbeat { quiesce: true, .. });
        q && l2.fetch_add(1, Ordering::SeqCst) < 2
    }));
    let before = net.log.len();
    tick_until_quiesced(&mut net, 20);
    assert!(net.raft(1).awaiting_quiesce_acks(), "replica 3 did not acknowledge");
    assert!(net.raft(2).is_quiesced() && !net.raft(3).is_quiesced());
    for _ in 0..10 {
        if net.raft(3).is_quiesced() {
            break;
        }
        net.tick_all();
        assert!(net.raft(1).is_quiesced(), "re-sending does not wake the leader");
    }
    assert!(net.raft(3).is_quiesced(), "the re-sent quiesce heartbeat reached replica 3");
    assert!(!net.raft(1).awaiting_quiesce_acks());
    assert_eq!(lost.load(Ordering::SeqCst), 3, "two lost, the third went through");
    let q = quiesce_heartbeats(&net.log[before..]);
    assert_eq!(q.iter().filter(|(to, _)| *to == 2).count(), 1, "2 acknowledged the first: {q:?}");
    assert_eq!(q.iter().filter(|(to, _)| *to == 3).count(), 3, "3 got it on the second re-send: {q:?}");
    assert_eq!(net.raft(1).stats().quiesce_resends, 2);
    let quiet = net.log.len();
    net.tick_all_n(200);
    assert_eq!(net.log.len(), quiet, "a fully acknowledged quiesced group sends nothing");
    for id in [2, 3] {
        assert_eq!(net.raft(id).stats().campaigns, 0, "replica {id} never campaigns");
    }
    assert_eq!(net.leader(), 1);
}

/// Rule: a follower quiesces only once no read it forwarded waits for an answer; a read
/// whose answer never comes (lost, or dropped by a leader holding `max_pending_reads`)
/// holds it awake until its caller gives up (`abandon_read`, on the engine's read
/// timeout), and then it quiesces with the group.
#[test]
fn an_abandoned_forwarded_read_lets_the_follower_quiesce() {
    let run = |abandon: bool| {
        let mut net = net3(|_| {});
        tick_until_quiesced(&mut net, 20);
        // The forwarded read is lost (everything else arrives).
        net.drop_if = Some(Box::new(|m: &Message| matches!(m.body, MessageBody::ReadIndex { .. })));
        net.raft_mut(2).read_index(7).unwrap();
        net.settle();
        if abandon {
            net.raft_mut(2).abandon_read(7);
        }
        for _ in 0..40 {
            net.tick_all();
        }
        net.raft(2).is_quiesced()
    };
    assert!(!run(false), "replica 2 waits for its forwarded read's answer");
    assert!(run(true), "abandoned, the read no longer holds replica 2 awake");
}
