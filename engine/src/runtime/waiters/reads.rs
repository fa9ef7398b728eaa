//! ReadIndex waiters: the linearizable-read barriers of one replica and every way they
//! complete.
//!
//! A read is registered under the context the core echoes in its `ReadState`
//! ([`ReadWaiters::push`]); the core confirming leadership gives it a read index
//! ([`ReadWaiters::confirm`]); it is served once the replica has applied that index
//! ([`ReadWaiters::serve`], answered with the applied index, which the state machine then
//! reflects: Raft thesis §6.4). It fails with [`ReadError::Timeout`] if not served by its
//! deadline ([`ReadWaiters::expire`]), or with the caller's error when the replica can no
//! longer serve it ([`ReadWaiters::fail_all`]: destroyed, shut down, storage failed).
//!
//! Generic over the completion handle ([`ReadDone`]) so the rules are unit-tested by what
//! they complete. Never touches Raft or the state machine: the caller reports confirmed
//! indexes and the applied index.

use crate::api::ReadError;

use super::super::pending::Completer;

/// A read's completion handle: told the result exactly once (consumed).
pub trait ReadDone {
    /// Delivers `result`: the applied index the read is served at, or why it failed.
    fn finish(self, result: Result<u64, ReadError>);
}

impl ReadDone for Completer<Result<u64, ReadError>> {
    fn finish(self, result: Result<u64, ReadError>) {
        self.complete(result);
    }
}

/// One pending read.
#[derive(Debug)]
struct PendingRead<D> {
    /// The context the core echoes when it confirms the read.
    ctx: u64,
    /// The confirmed read index, once known.
    index: Option<u64>,
    /// The tick at which it fails with [`ReadError::Timeout`].
    deadline: u64,
    done: D,
}

/// The pending reads of one replica (see the module documentation for the rules).
#[derive(Debug)]
pub struct ReadWaiters<D> {
    reads: thin_vec::ThinVec<PendingRead<D>>,
}

impl<D> Default for ReadWaiters<D> {
    fn default() -> Self {
        ReadWaiters { reads: thin_vec::ThinVec::new() }
    }
}

impl<D: ReadDone> ReadWaiters<D> {
    /// No reads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no read is pending.
    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// Returns the spare capacity (an idle replica has no read pending).
    pub fn shrink_to_fit(&mut self) {
        self.reads.shrink_to_fit();
    }

    /// Reads pending.
    pub fn len(&self) -> usize {
        self.reads.len()
    }

    /// Registers a read the core was asked to confirm under `ctx`, failing at tick
    /// `deadline`.
    pub fn push(&mut self, ctx: u64, deadline: u64, done: D) {
        self.reads.push(PendingRead { ctx, index: None, deadline, done });
    }

    /// The core confirmed the read of context `ctx` at read index `index`. A context no
    /// read waits for (timed out meanwhile) is ignored.
    pub fn confirm(&mut self, ctx: u64, index: u64) {
        if let Some(r) = self.reads.iter_mut().find(|r| r.ctx == ctx) {
            r.index = Some(index);
        }
    }

    /// Serves every confirmed read whose index is applied (`applied`), answering with
    /// `applied`. Returns how many were served.
    pub fn serve(&mut self, applied: u64) -> usize {
        self.complete_where(|r| r.index.is_some_and(|idx| idx <= applied), || Ok(applied))
    }

    /// Fails every read whose deadline is at or before tick `now` with
    /// [`ReadError::Timeout`], telling `expired` each one's context. Returns how many.
    pub fn expire(&mut self, now: u64, mut expired: impl FnMut(u64)) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].deadline <= now {
                let r = self.reads.swap_remove(i);
                expired(r.ctx);
                r.done.finish(Err(ReadError::Timeout));
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }

    /// The replica can no longer serve reads: every read fails with `err()`.
    pub fn fail_all(&mut self, err: impl Fn() -> ReadError) {
        for r in self.reads.drain(..) {
            r.done.finish(Err(err()));
        }
    }

    fn complete_where(
        &mut self,
        pred: impl Fn(&PendingRead<D>) -> bool,
        result: impl Fn() -> Result<u64, ReadError>,
    ) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.reads.len() {
            if pred(&self.reads[i]) {
                self.reads.swap_remove(i).done.finish(result());
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<(u64, Result<u64, ReadError>)>>>;

    /// Records (ctx, result).
    struct Rec(u64, Log);

    impl ReadDone for Rec {
        fn finish(self, result: Result<u64, ReadError>) {
            self.1.borrow_mut().push((self.0, result));
        }
    }

    fn sorted(log: &Log) -> Vec<(u64, Result<u64, ReadError>)> {
        let mut v = log.borrow_mut().drain(..).collect::<Vec<_>>();
        v.sort_by_key(|(c, _)| *c);
        v
    }

    #[test]
    fn served_only_once_confirmed_and_applied() {
        let log = Log::default();
        let mut w = ReadWaiters::new();
        for ctx in 1..=3 {
            w.push(ctx, 100, Rec(ctx, log.clone()));
        }
        assert_eq!(w.serve(50), 0, "nothing confirmed yet: nothing served");
        w.confirm(1, 10);
        w.confirm(2, 12);
        w.confirm(9, 1); // no such read: ignored
        assert_eq!(w.serve(11), 1);
        assert_eq!(sorted(&log), vec![(1, Ok(11))], "answered with the applied index");
        assert_eq!(w.serve(12), 1);
        assert_eq!(sorted(&log), vec![(2, Ok(12))]);
        assert_eq!(w.len(), 1, "the unconfirmed read waits on");
    }

    #[test]
    fn expire_fails_due_reads_with_timeout_and_fail_all_with_the_given_error() {
        let log = Log::default();
        let mut w = ReadWaiters::new();
        w.push(1, 10, Rec(1, log.clone()));
        w.push(2, 20, Rec(2, log.clone()));
        w.push(3, 30, Rec(3, log.clone()));
        w.confirm(2, 5);
        assert_eq!(w.expire(9, |_| panic!("none expired")), 0);
        let mut gone = Vec::new();
        assert_eq!(w.expire(20, |c| gone.push(c)), 2, "deadline at or before now, confirmed or not");
        assert_eq!(gone.len(), 2);
        assert_eq!(sorted(&log), vec![(1, Err(ReadError::Timeout)), (2, Err(ReadError::Timeout))]);
        w.fail_all(|| ReadError::GroupNotFound(7));
        assert_eq!(sorted(&log), vec![(3, Err(ReadError::GroupNotFound(7)))]);
        assert!(w.is_empty());
        assert_eq!(w.serve(u64::MAX), 0);
    }
}
