//! The Raft paper's rules (§5.1-§5.4), one test per rule, after etcd/raft's
//! `raft_paper_test.go`: each test drives one replica (or a small in-memory network) and
//! asserts the messages and `Ready` the core emits.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::*;
use flotilla_engine::raft::*;

fn three() -> ConfState {
    voters(&[1, 2, 3])
}

/// A leader of `conf` in term 1 whose no-op (index 1) every follower has acknowledged.
fn leader_with_noop_committed(conf: ConfState) -> Raft<MemStorage> {
    let mut l = new_raft(1, conf.clone(), |_| {});
    elect_alone(&mut l);
    for v in conf.voters.iter().filter(|v| v.id != 1) {
        l.step(append_ok(v.id, 1, l.term(), 1)).unwrap();
    }
    drain(&mut l);
    assert_eq!(l.committed(), 1);
    l
}

// ---------------------------------------------------------------------------------------
// §5.1 Raft basics
// ---------------------------------------------------------------------------------------

/// §5.1: servers start as followers, in term 0 with no vote and no leader.
#[test]
fn start_as_follower() {
    let r = new_raft(1, three(), |_| {});
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.term(), 0);
    assert_eq!(r.hard_state(), hs(0, 0, 0));
    assert_eq!(r.leader(), 0);
}

/// §5.1: "If one server's current term is smaller than the other's, then it updates its
/// current term to the larger value. If a candidate or leader discovers that its term is
/// out of date, it immediately reverts to follower state." (etcd
/// TestFollowerUpdateTermFromMessage, TestCandidateUpdateTermFromMessage,
/// TestLeaderUpdateTermFromMessage)
#[test]
fn update_term_from_message_in_every_role() {
    for role in [Role::Follower, Role::Candidate, Role::Leader] {
        let mut r = new_raft(1, three(), |_| {});
        match role {
            Role::Candidate => {
                tick_until_campaign(&mut r);
                drain(&mut r);
            }
            Role::Leader => {
                elect_alone(&mut r);
            }
            _ => {}
        }
        assert_eq!(r.role(), role);
        let term = r.term() + 1;
        let out = step_drain(&mut r, append(2, 1, term, (0, 0), vec![], 0));
        assert_eq!(r.role(), Role::Follower, "{role:?}");
        assert_eq!(r.term(), term, "{role:?}");
        assert_eq!(r.leader(), 2, "an Append names its sender leader ({role:?})");
        assert_eq!(out.hard_states.last().unwrap().term, term, "the new term is persisted");
    }
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the
/// request." Without CheckQuorum and PreVote the stale Append is ignored outright (etcd
/// TestRejectStaleTermMessage); with them the replica answers so the stale leader learns
/// the new term.
#[test]
fn reject_stale_term_message() {
    let storage = || storage_with_log(three(), &[], hs(2, 0, 0));
    let mut r = raft_with(config(1), storage());
    let out = step_drain(&mut r, append(2, 1, 1, (0, 0), vec![], 0));
    assert!(out.all().is_empty(), "{:?}", out.all());
    assert_eq!(r.term(), 2);
    assert_eq!(r.leader(), 0);

    let mut c = config(1);
    c.check_quorum = true;
    let mut r = raft_with(c, storage());
    let out = step_drain(&mut r, append(2, 1, 1, (0, 0), ents(1, &[1]), 0));
    assert_eq!(r.last_index(), 0, "stale entries are not appended");
    let all = out.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].term, 2);
    assert!(matches!(all[0].body, MessageBody::AppendResponse { reject: true, .. }));
}

/// §5.2: the leader sends heartbeats (AppendEntries without entries) to every follower
/// each heartbeat interval to keep its authority (etcd TestLeaderBcastBeat).
#[test]
fn leader_broadcasts_heartbeats() {
    let mut l = new_raft(1, three(), |_| {});
    elect_alone(&mut l);
    for i in 0..10u8 {
        l.propose(data(i)).unwrap();
    }
    drain(&mut l);
    l.tick();
    let out = drain(&mut l);
    let hb = of_kind(&out.messages, "Heartbeat");
    assert_eq!(hb.len(), 2, "{:?}", kinds(&out.messages));
    let mut targets: Vec<u64> = hb.iter().map(|m| m.to).collect();
    targets.sort();
    assert_eq!(targets, vec![2, 3]);
    for m in hb {
        assert_eq!(m.term, 1);
        // Nothing acknowledged yet: commit clamped to the follower's match (0).
        assert!(matches!(m.body, MessageBody::Heartbeat { commit: 0, .. }));
    }
    assert!(out.persisted_messages.is_empty());
}

// ---------------------------------------------------------------------------------------
// §5.2 Leader election
// ---------------------------------------------------------------------------------------

/// §5.2: "To begin an election, a follower increments its current term and transitions to
/// candidate state. It then votes for itself and issues RequestVote RPCs in parallel to
/// each of the other servers." The vote for itself is persisted before any RequestVote
/// leaves (etcd TestFollowerStartElection).
#[test]
fn follower_starts_election() {
    let mut r = new_raft(1, three(), |_| {});
    tick_until_campaign(&mut r);
    assert_eq!(r.role(), Role::Candidate);
    let rd = r.ready();
    assert_eq!(rd.hard_state, Some(hs(1, 1, 0)));
    assert!(rd.messages.is_empty(), "RequestVote must wait for the term and vote to be durable");
    let mut reqs = rd.persisted_messages.clone();
    reqs.sort_by_key(|m| m.to);
    assert_eq!(reqs, vec![vote_req(1, 2, 1, (0, 0), false), vote_req(1, 3, 1, (0, 0), false)]);
}

/// §5.2: "if many followers become candidates at the same time, votes could be split ...
/// the candidate times out and starts a new election by incrementing its term" (etcd
/// TestCandidateStartNewElection).
#[test]
fn candidate_starts_new_election_on_timeout() {
    let mut r = new_raft(1, three(), |_| {});
    tick_until_campaign(&mut r);
    drain(&mut r);
    assert_eq!(r.term(), 1);
    tick_until_campaign_again(&mut r, 1);
    assert_eq!(r.role(), Role::Candidate);
    assert_eq!(r.term(), 2);
    let out = drain(&mut r);
    assert_eq!(out.hard_states, vec![hs(2, 1, 0)]);
    assert_eq!(of_kind(&out.persisted_messages, "RequestVote").len(), 2);
    assert!(out.persisted_messages.iter().all(|m| m.term == 2));
}

fn tick_until_campaign_again(r: &mut Raft<MemStorage>, term: u64) {
    for _ in 0..100 {
        r.tick();
        if r.term() > term {
            return;
        }
    }
    panic!("no new election");
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the
/// servers in the full cluster for the same term"; it loses when a majority refuses, and
/// waits otherwise (etcd TestLeaderElectionInOneRoundRPC).
#[test]
fn election_in_one_round() {
    // (cluster size, granted by, refused by, outcome)
    let cases: Vec<(u64, Vec<u64>, Vec<u64>, Role)> = vec![
        (1, vec![], vec![], Role::Leader),
        (3, vec![2, 3], vec![], Role::Leader),
        (3, vec![2], vec![], Role::Leader),
        (5, vec![2, 3, 4, 5], vec![], Role::Leader),
        (5, vec![2, 3, 4], vec![], Role::Leader),
        (5, vec![2, 3], vec![], Role::Leader),
        (3, vec![], vec![2, 3], Role::Follower),
        (5, vec![], vec![2, 3, 4], Role::Follower),
        (5, vec![2], vec![3, 4, 5], Role::Follower),
        (3, vec![], vec![], Role::Candidate),
        (5, vec![2], vec![], Role::Candidate),
        (5, vec![2], vec![3], Role::Candidate),
    ];
    for (size, granted, refused, want) in cases {
        let ids: Vec<u64> = (1..=size).collect();
        let mut r = new_raft(1, voters(&ids), |_| {});
        tick_until_campaign(&mut r);
        drain(&mut r);
        for &g in &granted {
            r.step(vote_resp(g, 1, 1, false, false)).unwrap();
        }
        for &f in &refused {
            r.step(vote_resp(f, 1, 1, false, true)).unwrap();
        }
        assert_eq!(r.role(), want, "size {size} granted {granted:?} refused {refused:?}");
        assert_eq!(r.term(), 1);
    }
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a
/// first-come-first-served basis" (etcd TestFollowerVote). A grant is sent only after the
/// vote is durable: it is in `persisted_messages`, with the vote in the hard state.
#[test]
fn follower_votes_once_per_term() {
    // (already voted for, candidate, rejected)
    let cases = [(0, 2, false), (0, 3, false), (2, 2, false), (3, 3, false), (2, 3, true), (3, 2, true)];
    for (vote, cand, reject) in cases {
        let mut r = raft_with(config(1), storage_with_log(three(), &[], hs(1, vote, 0)));
        r.step(vote_req(cand, 1, 1, (0, 0), false)).unwrap();
        let rd = r.ready();
        assert!(rd.messages.is_empty());
        assert_eq!(
            rd.persisted_messages,
            vec![vote_resp(1, cand, 1, false, reject)],
            "vote {vote} cand {cand}"
        );
        if !reject && vote == 0 {
            assert_eq!(rd.hard_state, Some(hs(1, cand, 0)), "the vote is persisted with the grant");
        }
        assert_eq!(r.hard_state().vote, if vote == 0 { cand } else { vote });
    }
}

/// §5.2: "While waiting for votes, a candidate may receive an AppendEntries RPC from
/// another server claiming to be leader. If the leader's term is at least as large as the
/// candidate's current term, then the candidate recognizes the leader as legitimate and
/// returns to follower state" (etcd TestCandidateFallback).
#[test]
fn candidate_falls_back_to_follower() {
    for term in [1, 2] {
        let mut r = new_raft(1, three(), |_| {});
        tick_until_campaign(&mut r);
        drain(&mut r);
        assert_eq!(r.term(), 1);
        step_drain(&mut r, append(2, 1, term, (0, 0), vec![], 0));
        assert_eq!(r.role(), Role::Follower);
        assert_eq!(r.term(), term);
        assert_eq!(r.leader(), 2);
    }
}

/// §5.2: "Raft uses randomized election timeouts": a follower's and a candidate's timeout
/// are drawn from [min, max) and take many values (etcd
/// TestFollowerElectionTimeoutRandomized, TestCandidateElectionTimeoutRandomized).
#[test]
fn election_timeout_randomized() {
    let mut follower_seen = std::collections::BTreeSet::new();
    let mut candidate_seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut r = new_raft(1, three(), |c| c.seed = seed);
        let mut n = 0;
        while r.role() == Role::Follower {
            r.tick();
            n += 1;
        }
        follower_seen.insert(n);
        let mut n = 0;
        while r.term() == 1 {
            r.tick();
            n += 1;
        }
        candidate_seen.insert(n);
    }
    for seen in [&follower_seen, &candidate_seen] {
        assert!(seen.iter().all(|&t| (10..20).contains(&t)), "{seen:?}");
        assert!(seen.len() >= 8, "timeouts are randomized: {seen:?}");
    }
}

/// §5.2: "election timeouts are chosen randomly ... so that in most cases only a single
/// server will time out": among five followers, a tie for the first timeout is rare (etcd
/// TestFollowersElectionTimeoutNonconflict).
#[test]
fn followers_election_timeouts_rarely_conflict() {
    let rounds = 1000;
    let mut conflicts = 0;
    for seed in 0..rounds {
        let ids = [1, 2, 3, 4, 5];
        let mut rs: Vec<_> = ids.iter().map(|&i| new_raft(i, voters(&ids), |c| c.seed = seed)).collect();
        loop {
            for r in rs.iter_mut() {
                r.tick();
            }
            let timed_out = rs.iter().filter(|r| r.role() != Role::Follower).count();
            if timed_out > 0 {
                if timed_out > 1 {
                    conflicts += 1;
                }
                break;
            }
        }
    }
    let p = f64::from(conflicts) / f64::from(rounds as u32);
    assert!(p <= 0.3, "probability of conflicting timeouts {p}");
}

// ---------------------------------------------------------------------------------------
// §5.3 Log replication
// ---------------------------------------------------------------------------------------

/// §5.3: "the leader appends the command to its log as a new entry, then issues
/// AppendEntries RPCs in parallel to each of the other servers to replicate the entry"
/// (etcd TestLeaderStartReplication). The appends go before the leader's own write is
/// durable (thesis §10.2.1).
#[test]
fn leader_starts_replication() {
    let mut l = leader_with_noop_committed(three());
    let (index, term) = l.propose(data(9)).unwrap();
    assert_eq!((index, term), (2, 1));
    let rd = l.ready();
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(rd.entries[0].index, 2);
    assert_eq!(rd.entries[0].payload, EntryPayload::Normal(data(9)));
    let mut apps = rd.messages.clone();
    apps.sort_by_key(|m| m.to);
    let want_ents = rd.entries.clone();
    assert_eq!(
        apps,
        vec![append(1, 2, 1, (1, 1), want_ents.clone(), 1), append(1, 3, 1, (1, 1), want_ents, 1)]
    );
    assert!(rd.persisted_messages.is_empty());
    assert_eq!(l.committed(), 1, "nothing commits before a quorum has it durable");
}

/// §5.3: "A log entry is committed once the leader that created the entry has replicated
/// it on a majority of the servers ... the leader ... includes that index in future
/// AppendEntries RPCs" (etcd TestLeaderCommitEntry). Here a follower that acknowledged the
/// whole log and lacks only the commit index gets it in a `Commit` message, which needs no
/// answer, not in an empty AppendEntries.
#[test]
fn leader_commits_entry() {
    let mut l = leader_with_noop_committed(three());
    l.propose(data(9)).unwrap();
    drain(&mut l);
    l.step(append_ok(2, 1, 1, 2)).unwrap();
    l.step(append_ok(3, 1, 1, 2)).unwrap();
    assert_eq!(l.committed(), 2);
    let out = drain(&mut l);
    assert_eq!(out.committed.len(), 1);
    assert_eq!(out.committed[0].payload, EntryPayload::Normal(data(9)));
    assert!(of_kind(&out.messages, "Append").is_empty(), "{:?}", out.messages);
    let mut notices: Vec<Message> = of_kind(&out.messages, "Commit").into_iter().cloned().collect();
    notices.sort_by_key(|m| m.to);
    let notice = |to| Message { from: 1, to, term: 1, body: MessageBody::Commit { commit: 2 } };
    assert_eq!(notices, vec![notice(2), notice(3)]);
}

/// §5.3 with an append in flight: a follower that has not acknowledged the whole log gets
/// the new commit index in an empty AppendEntries after its last entry, as before: its
/// answer (or refusal) is how the leader finds an append that was lost.
#[test]
fn leader_sends_the_commit_in_an_append_to_a_follower_with_entries_in_flight() {
    let mut l = leader_with_noop_committed(three());
    l.propose(data(9)).unwrap();
    drain(&mut l);
    l.propose(data(10)).unwrap();
    drain(&mut l);
    // 2 acknowledges both entries, 3 only the first: index 2 commits.
    l.step(append_ok(2, 1, 1, 3)).unwrap();
    l.step(append_ok(3, 1, 1, 2)).unwrap();
    assert_eq!(l.committed(), 3);
    let out = drain(&mut l);
    let notices: Vec<Message> = of_kind(&out.messages, "Commit").into_iter().cloned().collect();
    assert_eq!(notices, vec![Message { from: 1, to: 2, term: 1, body: MessageBody::Commit { commit: 3 } }]);
    let apps: Vec<Message> = of_kind(&out.messages, "Append").into_iter().cloned().collect();
    assert_eq!(apps, vec![append(1, 3, 1, (3, 1), vec![], 3)]);
}

/// A follower takes a `Commit` from its leader like the commit of an append: it commits up
/// to it (at most its last index) and answers nothing.
#[test]
fn follower_commits_on_a_commit_notice_without_answering() {
    let mut f = new_raft(2, voters(&[1, 2, 3]), |_| {});
    f.step(append(
        1,
        2,
        1,
        (0, 0),
        vec![
            Entry { index: 1, term: 1, payload: EntryPayload::Normal(data(1)) },
            Entry { index: 2, term: 1, payload: EntryPayload::Normal(data(2)) },
        ],
        0,
    ))
    .unwrap();
    drain(&mut f);
    f.step(Message { from: 1, to: 2, term: 1, body: MessageBody::Commit { commit: 2 } }).unwrap();
    let out = drain(&mut f);
    assert_eq!(f.committed(), 2);
    assert_eq!(out.committed.len(), 2);
    assert!(out.messages.is_empty(), "answered a commit notice: {:?}", out.messages);
}

/// §5.3: the entry commits once a majority (leader included, once durable) has it
/// (etcd TestLeaderAcknowledgeCommit).
#[test]
fn leader_acknowledges_commit_on_majority() {
    // (size, acceptors, committed)
    let cases: Vec<(u64, Vec<u64>, bool)> = vec![
        (1, vec![], true),
        (3, vec![], false),
        (3, vec![2], true),
        (3, vec![2, 3], true),
        (5, vec![], false),
        (5, vec![2], false),
        (5, vec![2, 3], true),
        (5, vec![2, 3, 4], true),
        (5, vec![2, 3, 4, 5], true),
    ];
    for (size, acceptors, want) in cases {
        let ids: Vec<u64> = (1..=size).collect();
        let mut l = new_raft(1, voters(&ids), |_| {});
        elect_alone(&mut l);
        let (index, _) = l.propose(data(1)).unwrap();
        drain(&mut l);
        for &a in &acceptors {
            l.step(append_ok(a, 1, 1, index)).unwrap();
        }
        assert_eq!(l.committed() >= index, want, "size {size} acceptors {acceptors:?}");
    }
}

/// §5.3: "When the leader commits an entry, it also commits all preceding entries in its
/// log, including entries created by previous leaders" (etcd
/// TestLeaderCommitPrecedingEntries).
#[test]
fn leader_commits_preceding_entries() {
    for prior in [vec![], vec![2], vec![1, 1], vec![1, 2]] {
        let mut l = raft_with(config(1), storage_with_log(three(), &prior, hs(2, 0, 0)));
        elect_alone(&mut l);
        assert_eq!(l.term(), 3);
        let (index, _) = l.propose(data(7)).unwrap();
        drain(&mut l);
        l.step(append_ok(2, 1, 3, index)).unwrap();
        l.step(append_ok(3, 1, 3, index)).unwrap();
        let out = drain(&mut l);
        let got: Vec<(u64, u64)> = out.committed.iter().map(|e| (e.index, e.term)).collect();
        let mut want: Vec<(u64, u64)> = prior.iter().enumerate().map(|(i, &t)| (i as u64 + 1, t)).collect();
        want.push((prior.len() as u64 + 1, 3)); // the no-op
        want.push((index, 3));
        assert_eq!(got, want, "prior log {prior:?}");
    }
}

/// §5.3: "Once a follower learns that a log entry is committed, it applies the entry to
/// its local state machine" — only entries it holds durably (etcd TestFollowerCommitEntry).
#[test]
fn follower_commits_entry() {
    for (n, commit) in [(1u64, 1u64), (2, 2), (2, 1), (2, 0)] {
        let mut f = raft_with(config(1), storage_with_log(three(), &[], hs(1, 0, 0)));
        let es = ents(1, &vec![1; n as usize]);
        f.step(append(2, 1, 1, (0, 0), es.clone(), commit)).unwrap();
        assert_eq!(f.committed(), commit);
        let rd = f.ready();
        assert_eq!(rd.entries, es);
        assert!(rd.committed_entries.is_empty(), "nothing applies before it is durable");
        assert!(rd.messages.is_empty(), "the ack waits for the write");
        assert_eq!(rd.persisted_messages, vec![append_ok(1, 2, 1, n)]);
        persist(&mut f, &rd);
        let rd = f.ready();
        assert_eq!(rd.committed_entries, es[..commit as usize].to_vec());
    }
}

/// §5.3: "If the follower does not find an entry in its log with the same index and term,
/// then it refuses the new entries"; the rejection carries a hint for fast backtracking
/// (etcd TestFollowerCheckMsgApp).
#[test]
fn follower_checks_append_consistency() {
    // (prev term, prev index, want: (index, reject, hint, hint_term))
    let cases = [
        (0, 0, (1, false, 0, 0)), // below commit: acknowledge the commit
        (1, 1, (1, false, 0, 0)),
        (2, 2, (2, false, 0, 0)),
        (1, 2, (2, true, 1, 1)),
        (3, 3, (3, true, 2, 2)),
    ];
    for (pt, pi, (index, reject, reject_hint, hint_term)) in cases {
        let mut f = raft_with(config(1), storage_with_log(three(), &[1, 2], hs(2, 0, 1)));
        // A leader's prev_term never exceeds its own term.
        let term = pt.max(2);
        let out = step_drain(&mut f, append(2, 1, term, (pi, pt), vec![], 1));
        assert_eq!(
            out.all(),
            vec![msg(1, 2, term, MessageBody::AppendResponse { index, reject, reject_hint, hint_term })],
            "prev ({pi}, {pt})"
        );
    }
}

/// §5.3: "If an existing entry conflicts with a new one (same index but different terms),
/// delete the existing entry and all that follow it; append any new entries not already
/// in the log" (etcd TestFollowerAppendEntries).
#[test]
fn follower_appends_entries() {
    // (prev, entries (first index, terms), resulting log terms, entries handed out)
    type Case = ((u64, u64), (u64, Vec<u64>), Vec<u64>, Vec<u64>);
    let cases: Vec<Case> = vec![
        ((2, 2), (3, vec![3]), vec![1, 2, 3], vec![3]),
        ((1, 1), (2, vec![3, 4]), vec![1, 3, 4], vec![3, 4]),
        ((0, 0), (1, vec![1]), vec![1, 2], vec![]),
        ((0, 0), (1, vec![3]), vec![3], vec![3]),
    ];
    for (prev, (first, terms), want_log, want_unstable) in cases {
        let mut f = raft_with(config(1), storage_with_log(three(), &[1, 2], hs(2, 0, 0)));
        // A leader's entries never carry a term above its own.
        let term = terms.iter().copied().max().unwrap_or(2).max(2);
        f.step(append(2, 1, term, prev, ents(first, &terms), 0)).unwrap();
        let log: Vec<u64> = f.entries(1, f.last_index() + 1).unwrap().iter().map(|e| e.term).collect();
        assert_eq!(log, want_log, "prev {prev:?}");
        let rd = f.ready();
        assert_eq!(rd.entries.iter().map(|e| e.term).collect::<Vec<_>>(), want_unstable, "prev {prev:?}");
    }
}

/// §5.3, Figure 7: "the leader handles inconsistencies by forcing the followers' logs to
/// duplicate its own" — for each of the follower logs (a)-(f) (etcd
/// TestLeaderSyncFollowerLog).
#[test]
fn leader_syncs_follower_logs_figure_7() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    for (case, flog) in followers.iter().enumerate() {
        let mut net = Network::empty();
        net.add(raft_with(config(1), storage_with_log(three(), &leader_log, hs(8, 0, 0))));
        net.add(raft_with(config(2), storage_with_log(three(), flog, hs(7, 0, 0))));
        net.add(raft_with(config(3), storage_with_log(three(), &[], hs(7, 0, 0))));
        net.elect(1);
        net.propose(1, data(1));
        let want = net.raft(1).entries(1, net.raft(1).last_index() + 1).unwrap();
        for id in [2, 3] {
            let got = net.raft(id).entries(1, net.raft(id).last_index() + 1).unwrap();
            assert_eq!(got, want, "case ({}) replica {id}", (b'a' + case as u8) as char);
            assert_eq!(net.raft(id).storage().all_entries(), &want[..], "durable too");
        }
        assert_eq!(net.raft(1).committed(), want.len() as u64);
    }
}

// ---------------------------------------------------------------------------------------
// §5.4 Safety
// ---------------------------------------------------------------------------------------

/// §5.4.1: a RequestVote carries the candidate's last log index and term (etcd
/// TestVoteRequest).
#[test]
fn vote_request_carries_last_log_position() {
    for terms in [vec![1], vec![1, 2]] {
        let mut r = raft_with(config(1), storage_with_log(three(), &terms, hs(2, 0, 0)));
        tick_until_campaign(&mut r);
        let out = drain(&mut r);
        let last = (terms.len() as u64, *terms.last().unwrap());
        let mut reqs = out.persisted_messages.clone();
        reqs.sort_by_key(|m| m.to);
        assert_eq!(reqs, vec![vote_req(1, 2, 3, last, false), vote_req(1, 3, 3, last, false)]);
    }
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
/// candidate" (etcd TestVoter).
#[test]
fn voter_denies_less_up_to_date_candidate() {
    // (voter's log terms, candidate last term, candidate last index, reject)
    let cases: Vec<(Vec<u64>, u64, u64, bool)> = vec![
        (vec![1], 1, 1, false),
        (vec![1], 1, 2, false),
        (vec![1, 1], 1, 1, true),
        (vec![1], 2, 1, false),
        (vec![1], 2, 2, false),
        (vec![1, 1], 2, 1, false),
        (vec![2], 1, 1, true),
        (vec![2], 1, 2, true),
        (vec![2, 1], 1, 1, true),
    ];
    for (log, lt, li, reject) in cases {
        let mut r = raft_with(config(1), storage_with_log(three(), &log, hs(2, 0, 0)));
        let out = step_drain(&mut r, vote_req(2, 1, 3, (li, lt), false));
        assert_eq!(out.all(), vec![vote_resp(1, 2, 3, false, reject)], "log {log:?} cand ({li}, {lt})");
        assert!(out.messages.is_empty());
    }
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting
/// replicas. Only log entries from the leader's current term are committed by counting
/// replicas" (etcd TestLeaderOnlyCommitsLogFromCurrentTerm).
#[test]
fn leader_only_commits_current_term_by_counting() {
    // Leader log [1, 2] from earlier terms; it wins term 3 and appends its no-op at 3.
    for (acked, want_commit) in [(1u64, 0u64), (2, 0), (3, 3)] {
        let mut l = raft_with(config(1), storage_with_log(three(), &[1, 2], hs(2, 0, 0)));
        elect_alone(&mut l);
        assert_eq!(l.term(), 3);
        l.step(append_ok(2, 1, 3, acked)).unwrap();
        assert_eq!(l.committed(), want_commit, "follower acked {acked}");
    }
}
