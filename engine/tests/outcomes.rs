//! Outcomes reported to proposers, on the Raft core driven by the scenario harness
//! (`common`), through the runtime's own waiter code (`runtime::waiters`): issue 10's
//! schedule where a deposed leader's locally truncated entry still commits.
//!
//! Raft paper §5.3 (log matching: a follower's conflicting suffix is overwritten) and
//! §5.4.1 (leader completeness: an entry is lost only once another is committed at its
//! index): a truncation of one replica's log proves nothing about the entry's fate.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use common::*;
use flotilla_engine::raft::*;
use flotilla_engine::runtime::waiters::{Complete, Outcome, Tally, Waiters};

type Log = Rc<RefCell<Vec<((u64, u64), Outcome)>>>;

/// Records the outcome of the entry (index, term).
struct Rec {
    at: (u64, u64),
    log: Log,
}

impl Complete for Rec {
    fn complete(self, o: Outcome) {
        self.log.borrow_mut().push((self.at, o));
    }
}

/// Replica 1's waiters, fed what it applies (as the runtime's worker and apply thread do).
struct Proposer {
    w: Waiters<Rec>,
    tally: Tally,
    log: Log,
    /// Entries of replica 1's `applied` already reported.
    seen: usize,
}

impl Proposer {
    fn new() -> Proposer {
        Proposer { w: Waiters::new(), tally: Tally::default(), log: Log::default(), seen: 0 }
    }

    fn wait(&mut self, at: (u64, u64)) {
        let h = Rec { at, log: self.log.clone() };
        self.w.add(&mut self.tally, at.0, at.1, u64::MAX, h);
    }

    /// Reports what replica 1 applied since the last call: the matched waiters complete
    /// with the applied payload.
    fn feed(&mut self, net: &Network) {
        let applied = &net.node(1).applied;
        let new = &applied[self.seen..];
        self.seen = applied.len();
        for w in self.w.committed(&mut self.tally, new) {
            let e = new.iter().find(|e| e.index == w.index).unwrap();
            assert_eq!(e.term, w.term, "a waiter handed out with another term's entry");
            let r = match &e.payload {
                EntryPayload::Normal(d) => d.clone(),
                _ => Bytes::new(),
            };
            w.complete(Outcome::Applied(r));
        }
    }

    fn outcome(&self, at: (u64, u64)) -> Option<Outcome> {
        self.log.borrow().iter().find(|(a, _)| *a == at).map(|(_, o)| o.clone())
    }
}

/// Drops the appends and heartbeats `from` sends to anyone outside `to` (votes pass).
fn appends_only(from: ReplicaId, to: &'static [ReplicaId]) -> impl Fn(&Message) -> bool {
    move |m: &Message| {
        m.from == from
            && matches!(m.body, MessageBody::Append { .. } | MessageBody::Heartbeat { .. })
            && !to.contains(&m.to)
    }
}

/// Ticks `id` alone until its term reaches `term` (bounded), then settles.
fn campaign_to(net: &mut Network, id: ReplicaId, term: u64) {
    for _ in 0..200 {
        if net.raft(id).term() >= term {
            break;
        }
        net.raft_mut(id).tick();
        net.settle();
    }
    assert_eq!(net.raft(id).term(), term, "replica {id} did not reach term {term}");
}

/// Issue 10, point 1, with 5 voters A..E = replicas 1..5 (Raft §5.3, §5.4.1):
/// A leads term 2 and appends (4,2), (5,2), (6,2) on A and B only, a waiter at (6,2);
/// C wins term 3 with C, D, E and its append (4,3) reaches only A, truncating A; A wins
/// term 5 with A, D, E and appends its no-op (5,5) and a client proposal (6,5); A is
/// partitioned; B (last term 2) wins term 6 with D and E (last term 1) and commits (6,2).
/// The old worker completed (6,2) `Dropped` when A appended at 6 again; the entry applied.
/// Here the waiter is still waiting then, and once A learns the commit it is `Ok`, and
/// (6,5) is the one `Dropped`.
#[test]
fn truncated_entry_that_commits_elsewhere_is_never_dropped() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], |_| {});
    // Term 1: B leads; (1,1)..(3,1) committed everywhere.
    net.elect(2);
    net.propose(2, data(2));
    net.propose(2, data(3));
    for id in 1..=5 {
        assert_eq!(net.raft(id).committed(), 3, "replica {id}");
    }
    let mut a = Proposer::new();

    // Term 2: A leads; its entries reach B only.
    net.drop_if = Some(Box::new(appends_only(1, &[2])));
    net.campaign(1);
    assert_eq!((net.raft(1).role(), net.raft(1).term()), (Role::Leader, 2));
    let p5 = net.propose(1, data(5));
    let p6 = net.propose(1, data(6));
    assert_eq!((p5, p6), ((5, 2), (6, 2)));
    a.wait(p5);
    a.wait(p6);
    assert_eq!(net.raft(2).last_index(), 6);
    assert_eq!(net.raft(3).last_index(), 3);
    assert_eq!(net.raft(1).committed(), 3, "(4,2)..(6,2) are on A and B only");

    // Term 3: C wins with C, D, E; its no-op (4,3) reaches A only and truncates it.
    let a_rule = appends_only(1, &[2]);
    let c_rule = appends_only(3, &[1]);
    net.drop_if = Some(Box::new(move |m| a_rule(m) || c_rule(m)));
    net.campaign(3);
    assert_eq!((net.raft(3).role(), net.raft(3).term()), (Role::Leader, 3));
    assert_eq!((net.raft(1).last_index(), net.raft(1).term_at(4).unwrap()), (4, 3), "A truncated");
    assert_eq!(net.raft(2).term_at(6).unwrap(), 2, "B still holds (6,2)");
    a.feed(&net);
    assert_eq!(a.outcome(p6), None);

    // Term 5: A (cut off from B and C) fails a campaign at term 4, wins term 5 with D and
    // E; its appends reach nobody. It proposes at index 6 again.
    net.isolate(1);
    campaign_to(&mut net, 1, 4);
    net.isolated.remove(&1);
    net.cut_both(1, 2);
    net.cut_both(1, 3);
    let c_rule = appends_only(3, &[1]);
    net.drop_if = Some(Box::new(move |m| c_rule(m) || m.from == 1 && m.body.kind() == "Append"));
    campaign_to(&mut net, 1, 5);
    assert_eq!(net.raft(1).role(), Role::Leader);
    let q6 = net.propose(1, data(66));
    assert_eq!(q6, (6, 5));
    a.wait(q6);
    assert_eq!(net.raft(1).term_at(5).unwrap(), 5);
    assert_eq!(net.raft(4).last_index(), 3, "A's term-5 entries reached nobody");
    a.feed(&net);
    assert_eq!(a.outcome(p6), None, "appending (6,5) over a truncated (6,2) proves nothing");
    assert_eq!(a.outcome(p5), None);
    assert_eq!(a.w.len(), 3);

    // Term 6: A is partitioned; B (last term 2) wins with D and E (last term 1), commits
    // (6,2) with its no-op.
    net.isolate(1);
    net.isolate(3);
    net.drop_if = None;
    campaign_to(&mut net, 2, 6);
    assert_eq!(net.raft(2).role(), Role::Leader);
    net.tick(2);
    assert!(net.raft(2).committed() >= 7, "B commits through its no-op");
    assert_eq!(net.raft(2).term_at(6).unwrap(), 2);
    assert_eq!(net.raft(4).term_at(6).unwrap(), 2);
    a.feed(&net);
    assert_eq!(a.outcome(p6), None, "A has not learnt anything yet");

    // A rejoins: it learns the commit; its waiters are decided by what committed.
    net.heal();
    for _ in 0..5 {
        net.tick(2);
    }
    assert!(net.raft(1).committed() >= 7);
    a.feed(&net);
    let ok6 = Outcome::Applied(data(6));
    assert_eq!(a.outcome(p6), Some(ok6), "(6,2) committed: the proposer hears Ok, not Dropped");
    assert_eq!(a.outcome(p5), Some(Outcome::Applied(data(5))));
    assert_eq!(a.outcome(q6), Some(Outcome::Dropped), "(6,5) lost its index to (6,2)");
    assert!(a.w.is_empty());
    assert_eq!(a.tally.waiting(), 0);
    assert!(net.applied_data(1).contains(&data(6)));
    assert!(!net.applied_data(1).contains(&data(66)));
}
