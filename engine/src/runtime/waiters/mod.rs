//! Proposal and membership waiters: who waits for which log entry, what they count against
//! the worker's limits, and every way they complete.
//!
//! Owns the waiters of one replica ([`Waiters`]), keyed by the (index, term) their entry
//! got when the leader appended it, the bookkeeping they weigh on (the waiting count in a
//! [`Tally`] shared by a worker's replicas), and the rules that decide them. An outcome is a promise:
//!
//! - [`Outcome::Applied`]: the entry of the waiter's (index, term) is committed; the caller
//!   completes it with the state machine's result once applied ([`Waiters::committed`]
//!   hands such waiters out).
//! - [`Outcome::Dropped`]: only when the entry provably never applies anywhere: an entry of
//!   another term is committed at its index, or an entry of a newer term is committed
//!   before its index, or an entry of an older term after it (terms never decrease along a
//!   log, and every committed entry is in every later leader's log: Raft paper §5.3 Log
//!   Matching, §5.4.1 Leader Completeness). A truncation of this replica's log proves
//!   nothing: another replica may still hold the entry and commit it as a later leader.
//! - [`Outcome::Indeterminate`]: this replica can no longer learn the outcome (removed,
//!   shut down, storage failed after the append: [`Waiters::fail_all`]), a snapshot was
//!   installed past the waiter and its term does not decide it
//!   ([`Waiters::snapshot_installed`]), or the waiter timed out ([`Waiters::expire`]).
//!
//! Because a deposed leader keeps its old-term waiters while, leading again, it appends
//! new ones at the same indexes, the queue is not ordered by index: waiters are grouped by
//! term, and within one term by index (a leader appends each index once per term, in
//! order, so within a term index order is also proposal order, hence deadline order).
//! (The group's bound on uncommitted bytes is counted by the core over its log,
//! `Raft::uncommitted_bytes`: a waiter that timed out leaves its entry there.)
//!
//! Read barriers (ReadIndex) wait in [`reads::ReadWaiters`], by the same design.
//!
//! Generic over the completion handle ([`Complete`]): the runtime completes its callers'
//! pending results through it, the core simulator records outcomes with the same code.
//! Never touches Raft, the log or a state machine: the caller reports what committed.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::api::{MembershipError, ProposeError};
use crate::raft::message::Entry;

use super::pending::Completer;

mod index_queue;
pub mod reads;
use index_queue::{IndexQueue, Indexed};
pub use reads::{ReadDone, ReadWaiters};

/// What a waiter learns about its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The entry was applied; the state machine's result.
    Applied(Bytes),
    /// The entry provably never applies (safe to retry).
    Dropped,
    /// Unknown: the entry may or may not apply (never retried blindly).
    Indeterminate,
    /// A session entry applied without effect: the session table refused it.
    Refused(crate::api::SessionRefusal),
}

/// A completion handle: told the outcome exactly once (consumed).
pub trait Complete {
    /// Delivers `outcome`.
    fn complete(self, outcome: Outcome);
}

/// One waiter: the entry it waits for and its handle.
#[derive(Debug)]
pub struct Waiter<H> {
    /// Index of the entry.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// Tick at which it completes `Indeterminate` if still waiting.
    deadline: u64,
    /// Who learns the outcome.
    pub handle: H,
}

impl<H> Indexed for Waiter<H> {
    fn index(&self) -> u64 {
        self.index
    }
}

impl<H: Complete> Waiter<H> {
    /// Completes the waiter with `outcome`.
    pub fn complete(self, outcome: Outcome) {
        self.handle.complete(outcome);
    }
}

/// Waiters counted across several [`Waiters`] (a worker's groups): every waiter added
/// counts until it completes or is handed out by [`Waiters::committed`].
#[derive(Debug, Default)]
pub struct Tally {
    waiting: usize,
}

impl Tally {
    /// Waiters counted now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    fn sub(&mut self, n: usize) {
        self.waiting = self.waiting.saturating_sub(n);
    }
}

/// The waiters of one term, by index.
#[derive(Debug)]
struct Term<H> {
    by_index: IndexQueue<Waiter<H>>,
}

/// The waiters of one replica (see the module documentation for the rules).
#[derive(Debug)]
pub struct Waiters<H> {
    terms: BTreeMap<u64, Term<H>>,
    len: usize,
}

impl<H> Default for Waiters<H> {
    fn default() -> Self {
        Waiters { terms: BTreeMap::new(), len: 0 }
    }
}

impl<H: Complete> Waiters<H> {
    /// No waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waiters in the queue (not counting those handed out by [`Waiters::committed`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a waiter for the entry at (`index`, `term`), which times out
    /// at tick `deadline`. A second waiter for the same entry (never made by a leader,
    /// which appends an index once per term) replaces the first, which completes
    /// `Indeterminate`.
    pub fn add(&mut self, tally: &mut Tally, index: u64, term: u64, deadline: u64, handle: H) {
        let t = self.terms.entry(term).or_insert_with(|| Term { by_index: IndexQueue::default() });
        self.len += 1;
        tally.waiting += 1;
        if let Some(old) = t.by_index.insert(Waiter { index, term, deadline, handle }) {
            self.len -= 1;
            tally.sub(1);
            old.complete(Outcome::Indeterminate);
        }
    }

    /// `entries` (consecutive, in index order) are committed. Returns the waiters whose
    /// (index, term) is one of them, in index order: the caller completes each with the
    /// state machine's result once applied (or `Indeterminate` if it cannot). Waiters at
    /// those indexes with another term, and waiters of an older term than the last entry
    /// past it, complete `Dropped` now. A waiter below the first entry (its index was
    /// passed without being reported) completes `Dropped` if its term is newer than that
    /// entry's, else `Indeterminate`.
    pub fn committed(&mut self, tally: &mut Tally, entries: &[Entry]) -> Vec<Waiter<H>> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Vec::new() };
        let (lo, hi, last_term) = (first.index, last.index, last.term);
        let term_at = |i: u64| -> Option<u64> {
            let k = usize::try_from(i.checked_sub(lo)?).ok()?;
            match entries.get(k) {
                Some(e) if e.index == i => Some(e.term),
                _ => entries.binary_search_by_key(&i, |e| e.index).ok().map(|k| entries[k].term),
            }
        };
        // At most one waiter per entry matches (and no more than there are waiters).
        let mut matched = Vec::with_capacity(entries.len().min(self.len));
        let mut done = Vec::new();
        let mut emptied = Vec::new();
        for (&term, t) in self.terms.range_mut(..) {
            while let Some(w) = t.by_index.pop_upto(hi) {
                let o = match term_at(w.index) {
                    Some(et) if et == term => {
                        matched.push(w);
                        continue;
                    }
                    Some(_) => Outcome::Dropped,
                    None if w.index < lo && term > first.term => Outcome::Dropped,
                    None => Outcome::Indeterminate,
                };
                done.push((w, o));
            }
            if term < last_term {
                // An entry of a newer term is committed before all of them.
                for w in t.by_index.drain() {
                    done.push((w, Outcome::Dropped));
                }
            }
            if t.by_index.is_empty() {
                emptied.push(term);
            }
        }
        for term in emptied {
            self.terms.remove(&term);
        }
        let n = matched.len() + done.len();
        self.len -= n;
        tally.sub(n);
        for (w, o) in done {
            w.complete(o);
        }
        matched.sort_by_key(|w| w.index);
        matched
    }

    /// A snapshot at (`index`, `term`) was installed: it is committed, and the entries
    /// at or below it will never be reported to this replica. A waiter at its index
    /// completes `Dropped` if its term differs, else `Indeterminate` (applied, but its
    /// result is not known here); below it, `Dropped` if its term is newer than the
    /// snapshot's (an older entry after it is committed), else `Indeterminate`; past it,
    /// waiters of an older term than the snapshot's complete `Dropped`.
    pub fn snapshot_installed(&mut self, tally: &mut Tally, index: u64, term: u64) {
        let mut done = Vec::new();
        let mut emptied = Vec::new();
        for (&wt, t) in self.terms.range_mut(..) {
            while let Some(w) = t.by_index.pop_upto(index) {
                let o = if (w.index == index && wt != term) || (w.index < index && wt > term) {
                    Outcome::Dropped
                } else {
                    Outcome::Indeterminate
                };
                done.push((w, o));
            }
            if wt < term {
                for w in t.by_index.drain() {
                    done.push((w, Outcome::Dropped));
                }
            }
            if t.by_index.is_empty() {
                emptied.push(wt);
            }
        }
        for wt in emptied {
            self.terms.remove(&wt);
        }
        self.len -= done.len();
        tally.sub(done.len());
        for (w, o) in done {
            w.complete(o);
        }
    }

    /// Completes `Indeterminate` every waiter whose deadline is at or before tick `now`.
    /// Returns how many.
    pub fn expire(&mut self, tally: &mut Tally, now: u64) -> usize {
        let mut done = Vec::new();
        let mut emptied = Vec::new();
        for (&wt, t) in self.terms.range_mut(..) {
            // Within a term, index order is proposal order: the oldest come first.
            while let Some(w) = t.by_index.pop_front_if(|w| w.deadline <= now) {
                done.push(w);
            }
            if t.by_index.is_empty() {
                emptied.push(wt);
            }
        }
        for wt in emptied {
            self.terms.remove(&wt);
        }
        let n = done.len();
        self.len -= n;
        tally.sub(n);
        for w in done {
            w.complete(Outcome::Indeterminate);
        }
        n
    }

    /// This replica can no longer learn what happens to its entries (removed, shut down,
    /// storage failed): every waiter completes `Indeterminate`.
    pub fn fail_all(&mut self, tally: &mut Tally) {
        let terms = std::mem::take(&mut self.terms);
        tally.sub(self.len);
        self.len = 0;
        for (_, t) in terms {
            for w in t.by_index.into_waiters() {
                w.complete(Outcome::Indeterminate);
            }
        }
    }
}

/// The runtime's completion handle: a caller's pending proposal or membership change.
pub(crate) enum Done {
    /// A proposal (`Engine::propose`).
    Propose(Completer<Result<Bytes, ProposeError>>),
    /// A membership change (`Engine::change_membership`): completed by the worker once
    /// Raft applied it, so the group's status shows it.
    Conf(Completer<Result<(), MembershipError>>),
}

impl Complete for Done {
    fn complete(self, o: Outcome) {
        match self {
            Done::Propose(c) => c.complete(match o {
                Outcome::Applied(b) => Ok(b),
                Outcome::Dropped => Err(ProposeError::Dropped),
                Outcome::Indeterminate => Err(ProposeError::Indeterminate),
                Outcome::Refused(r) => Err(ProposeError::Session(r)),
            }),
            Done::Conf(c) => c.complete(match o {
                Outcome::Applied(_) => Ok(()),
                Outcome::Dropped => Err(MembershipError::Dropped),
                // A membership change is never a session entry.
                Outcome::Indeterminate | Outcome::Refused(_) => Err(MembershipError::Indeterminate),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::EntryPayload;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<(u64, u64, Outcome)>>>;

    /// Records (index, term, outcome).
    struct Rec {
        index: u64,
        term: u64,
        log: Log,
    }

    impl Complete for Rec {
        fn complete(self, o: Outcome) {
            self.log.borrow_mut().push((self.index, self.term, o));
        }
    }

    fn ents(list: &[(u64, u64)]) -> Vec<Entry> {
        list.iter().map(|&(index, term)| Entry { index, term, payload: EntryPayload::Noop }).collect()
    }

    struct Fx {
        w: Waiters<Rec>,
        tally: Tally,
        log: Log,
    }

    impl Fx {
        fn new() -> Fx {
            Fx { w: Waiters::new(), tally: Tally::default(), log: Log::default() }
        }
        fn add(&mut self, index: u64, term: u64, deadline: u64) {
            let h = Rec { index, term, log: self.log.clone() };
            self.w.add(&mut self.tally, index, term, deadline, h);
        }
        /// Commits `list`, completing the matched waiters `Applied` with their index.
        fn commit(&mut self, list: &[(u64, u64)]) -> Vec<(u64, u64)> {
            let m = self.w.committed(&mut self.tally, &ents(list));
            let out = m.iter().map(|w| (w.index, w.term)).collect();
            for w in m {
                let r = Bytes::copy_from_slice(&w.index.to_le_bytes());
                w.complete(Outcome::Applied(r));
            }
            out
        }
        fn outcome(&self, index: u64, term: u64) -> Option<Outcome> {
            self.log.borrow().iter().find(|(i, t, _)| (*i, *t) == (index, term)).map(|(_, _, o)| o.clone())
        }
        fn applied(index: u64) -> Outcome {
            Outcome::Applied(Bytes::copy_from_slice(&index.to_le_bytes()))
        }
    }

    /// Issue 10's example: a deposed leader holds (5,2), (6,2); leading again it waits for
    /// (5,5), (6,5); (4,3), (5,5), (6,5) commit. (5,2) and (6,2) lost their index to
    /// another term's entry: Dropped; (5,5), (6,5) applied: Ok. Raft paper §5.3, §5.4.
    #[test]
    fn issue_example_resolves_dropped_dropped_ok_ok() {
        let mut f = Fx::new();
        f.add(5, 2, 100);
        f.add(6, 2, 100);
        f.add(5, 5, 100);
        f.add(6, 5, 100);
        assert_eq!(f.w.len(), 4);
        assert_eq!(f.tally.waiting(), 4);
        let matched = f.commit(&[(4, 3), (5, 5), (6, 5)]);
        assert_eq!(matched, vec![(5, 5), (6, 5)]);
        assert_eq!(f.outcome(5, 2), Some(Outcome::Dropped));
        assert_eq!(f.outcome(6, 2), Some(Outcome::Dropped));
        assert_eq!(f.outcome(5, 5), Some(Fx::applied(5)));
        assert_eq!(f.outcome(6, 5), Some(Fx::applied(6)));
        assert!(f.w.is_empty());
        assert_eq!(f.tally.waiting(), 0);
    }

    /// A local truncation proves nothing: the same four waiters, but the old entries are
    /// the ones that commit (a later leader held them): (5,2), (6,2) Ok; (5,5), (6,5)
    /// Dropped. Nothing completes before its index commits.
    #[test]
    fn old_term_entries_that_commit_are_ok() {
        let mut f = Fx::new();
        for (i, t) in [(5, 2), (6, 2), (5, 5), (6, 5)] {
            f.add(i, t, 100);
        }
        assert!(f.commit(&[(4, 2)]).is_empty());
        assert!(f.log.borrow().is_empty(), "an entry of the waiters' own older term decides nothing");
        let matched = f.commit(&[(5, 2), (6, 2), (7, 6)]);
        assert_eq!(matched, vec![(5, 2), (6, 2)]);
        assert_eq!(f.outcome(5, 5), Some(Outcome::Dropped));
        assert_eq!(f.outcome(6, 5), Some(Outcome::Dropped));
        assert_eq!(f.outcome(5, 2), Some(Fx::applied(5)));
        assert_eq!(f.outcome(6, 2), Some(Fx::applied(6)));
        assert_eq!(f.tally.waiting(), 0);
    }

    /// Raft §5.4.1: once an entry of term T commits at index i, no entry of a term below T
    /// past i ever commits: those waiters are Dropped at once; same-term or newer ones
    /// past i keep waiting.
    #[test]
    fn newer_term_committed_before_drops_older_waiters_past_it() {
        let mut f = Fx::new();
        f.add(8, 2, 100);
        f.add(9, 3, 100);
        f.add(10, 4, 100);
        assert!(f.commit(&[(6, 2), (7, 3)]).is_empty());
        assert_eq!(f.outcome(8, 2), Some(Outcome::Dropped));
        assert_eq!(f.outcome(9, 3), None, "same term past the commit: still possible");
        assert_eq!(f.outcome(10, 4), None);
        assert_eq!(f.w.len(), 2);
        assert_eq!(f.tally.waiting(), 2);
    }

    /// A waiter whose index was passed unreported (below the first committed entry):
    /// Dropped if the committed entry's term is older than the waiter's (terms never
    /// decrease along a log), else Indeterminate.
    #[test]
    fn waiter_below_the_commit_batch() {
        let mut f = Fx::new();
        f.add(3, 4, 100);
        f.add(2, 1, 100);
        f.commit(&[(5, 3)]);
        assert_eq!(f.outcome(3, 4), Some(Outcome::Dropped));
        assert_eq!(f.outcome(2, 1), Some(Outcome::Indeterminate));
    }

    /// Snapshot installed past waiters: at its index, another term decides Dropped and the
    /// same term Indeterminate (applied, result unknown); below it, a newer term than the
    /// snapshot's is Dropped, others Indeterminate; past it, older terms are Dropped and
    /// the rest keep waiting.
    #[test]
    fn snapshot_installed_past_waiters() {
        let mut f = Fx::new();
        f.add(10, 3, 100); // at, other term
        f.add(10, 4, 100); // at, same term
        f.add(7, 5, 100); // below, newer term
        f.add(8, 4, 100); // below, same term
        f.add(9, 2, 100); // below, older term
        f.add(11, 3, 100); // past, older term
        f.add(11, 4, 100); // past, same term
        f.add(12, 6, 100); // past, newer term
        f.w.snapshot_installed(&mut f.tally, 10, 4);
        assert_eq!(f.outcome(10, 3), Some(Outcome::Dropped));
        assert_eq!(f.outcome(10, 4), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(7, 5), Some(Outcome::Dropped));
        assert_eq!(f.outcome(8, 4), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(9, 2), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(11, 3), Some(Outcome::Dropped));
        assert_eq!(f.outcome(11, 4), None);
        assert_eq!(f.outcome(12, 6), None);
        assert_eq!(f.w.len(), 2);
        assert_eq!(f.tally.waiting(), 2);
    }

    /// A waiter still waiting at its deadline completes Indeterminate, oldest first per
    /// term; later ones wait on.
    #[test]
    fn expire_completes_indeterminate_at_the_deadline() {
        let mut f = Fx::new();
        f.add(5, 2, 10);
        f.add(6, 2, 20);
        f.add(5, 3, 15);
        assert_eq!(f.w.expire(&mut f.tally, 9), 0);
        assert_eq!(f.w.expire(&mut f.tally, 15), 2);
        assert_eq!(f.outcome(5, 2), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(5, 3), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(6, 2), None);
        assert_eq!(f.tally.waiting(), 1);
        assert_eq!(f.w.expire(&mut f.tally, 20), 1);
        assert!(f.w.is_empty());
    }

    /// Removal, shutdown or a storage failure after the append: Indeterminate for all.
    #[test]
    fn fail_all_is_indeterminate() {
        let mut f = Fx::new();
        f.add(5, 2, 10);
        f.add(5, 3, 10);
        f.w.fail_all(&mut f.tally);
        assert_eq!(f.outcome(5, 2), Some(Outcome::Indeterminate));
        assert_eq!(f.outcome(5, 3), Some(Outcome::Indeterminate));
        assert_eq!(f.tally.waiting(), 0);
        assert!(f.w.is_empty());
    }

    /// Two waiters for one entry (never made by a leader): the first completes
    /// Indeterminate, the count stays exact.
    #[test]
    fn duplicate_entry_replaces_the_first() {
        let mut f = Fx::new();
        f.add(5, 2, 10);
        f.add(5, 2, 10);
        assert_eq!(f.outcome(5, 2), Some(Outcome::Indeterminate));
        assert_eq!(f.w.len(), 1);
        assert_eq!(f.tally.waiting(), 1);
    }
}
