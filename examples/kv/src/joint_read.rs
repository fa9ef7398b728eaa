//! Reads of different connections from one shard, started in the same turn of the client
//! port's loop, confirmed by ONE read barrier (a ReadIndex request, or the leader's lease):
//! with many clients each sending one read at a time, the engine gets one barrier per
//! shard per turn instead of one per read, as etcd's server sends one ReadIndex for every
//! linearizable read queued behind the one in flight.
//!
//! Linearizable as a barrier of each read's own would be: the barrier is requested when
//! the turn ends, after every member's read arrived, so its read index is at least the
//! commit index at each read's arrival; each member reads the shard's data once applied
//! has reached it (the barrier's completion).
//!
//! Owns a shared barrier from its first member to its outcome: the members' wakers while
//! the turn builds it ([`ReadJoiner`]), the engine's barrier, and the outcome. Never
//! blocks the loop (polling is a lock and a check) and never reads the data itself: each
//! member does, as with a barrier of its own (`commands::finish_read`). A barrier
//! refused (not the leader, no leader) fails every member, which the executors retry one
//! by one on the slow path, as they do a refused barrier of their own.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use flotilla_engine::api::ReadError;

use crate::joint::{Members, WakeAll};
use crate::node::Node;

/// A requested barrier: the engine's [`flotilla_engine::api::ReadBarrier`] (boxed, so
/// that tests can stand in for it).
type Barrier = Pin<Box<dyn Future<Output = Result<u64, ReadError>> + Send>>;

enum St {
    /// The turn is still adding members.
    Building,
    /// Requested: the engine's barrier.
    Waiting(Barrier),
    /// Confirmed (true), or refused or failed (false).
    Done(bool),
}

struct Inner {
    st: St,
    /// The members' wakers (woken when the outcome is known).
    members: Vec<Waker>,
}

/// One read barrier shared by the reads of several connections from one shard.
pub struct JointRead {
    group: u64,
    inner: Mutex<Inner>,
}

impl JointRead {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The barrier's outcome once known: whether the reads are confirmed (every member's
    /// waker, given when it joined, is woken then).
    pub fn poll(self: &Arc<Self>) -> Option<bool> {
        let mut g = self.lock();
        let ok = match &mut g.st {
            St::Done(ok) => return Some(*ok),
            St::Building => return None,
            St::Waiting(b) => match b.as_mut().poll(&mut Context::from_waker(&WakeAll::waker(self))) {
                Poll::Ready(r) => r.is_ok(),
                Poll::Pending => return None,
            },
        };
        g.st = St::Done(ok);
        drop(g);
        // Found here rather than woken (the barrier may complete before any waker is
        // registered): the members look again.
        self.wake_members();
        Some(ok)
    }
}

impl Members for JointRead {
    fn wake_members(&self) {
        let members: Vec<Waker> = self.lock().members.clone();
        for w in members {
            w.wake();
        }
    }
}

/// The shared barriers a turn of the loop builds, one per shard.
#[derive(Default)]
pub struct ReadJoiner {
    open: Vec<Arc<JointRead>>,
}

impl ReadJoiner {
    /// Adds a read of `group` with its connection's `waker`; the barrier it shares.
    pub fn join(&mut self, group: u64, waker: &Waker) -> Arc<JointRead> {
        let j = match self.open.iter().find(|j| j.group == group) {
            Some(j) => j.clone(),
            None => {
                let j = Arc::new(JointRead {
                    group,
                    inner: Mutex::new(Inner { st: St::Building, members: Vec::new() }),
                });
                self.open.push(j.clone());
                j
            }
        };
        j.lock().members.push(waker.clone());
        j
    }

    /// Requests the barrier of every shard read this turn, and polls each once so its
    /// completion wakes the members (a refused request wakes them at once).
    pub fn flush(&mut self, node: &Node) {
        self.flush_with(|group| node.engine().read_index(group).map(|b| Box::pin(b) as Barrier));
    }

    /// [`ReadJoiner::flush`] with `request` asking for each shard's barrier.
    fn flush_with(&mut self, mut request: impl FnMut(u64) -> Result<Barrier, ReadError>) {
        for j in self.open.drain(..) {
            let st = match request(j.group) {
                Ok(b) => St::Waiting(b),
                Err(_) => St::Done(false),
            };
            let refused = matches!(st, St::Done(_));
            j.lock().st = st;
            if refused {
                j.wake_members();
            } else {
                let _ = j.poll();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    /// A barrier that completes when `fire` is called.
    struct Later(Arc<Mutex<(Option<u64>, Option<Waker>)>>);

    impl Future for Later {
        type Output = Result<u64, ReadError>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let mut g = self.0.lock().unwrap();
            match g.0 {
                Some(i) => Poll::Ready(Ok(i)),
                None => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    #[test]
    fn reads_of_one_shard_in_a_turn_share_one_barrier_requested_when_the_turn_ends() {
        let mut rj = ReadJoiner::default();
        let ((ca, wa), (cb, wb), (cc, wc)) = (counter(), counter(), counter());
        let a = rj.join(7, &wa);
        let b = rj.join(7, &wb);
        let other = rj.join(8, &wc);
        assert!(Arc::ptr_eq(&a, &b), "one barrier for the shard's reads of the turn");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(a.poll(), None, "not requested before the turn ends");
        let slot = Arc::new(Mutex::new((None, None)));
        let mut asked = Vec::new();
        rj.flush_with(|g| {
            asked.push(g);
            match g {
                7 => Ok(Box::pin(Later(slot.clone())) as Barrier),
                _ => Err(ReadError::GroupNotFound(g)),
            }
        });
        assert_eq!(asked, vec![7, 8], "one request per shard");
        assert_eq!(a.poll(), None);
        // Shard 8's request was refused: its member is woken and sees it unconfirmed.
        assert_eq!(cc.0.load(Ordering::SeqCst), 1);
        assert_eq!(other.poll(), Some(false));
        // Shard 7's barrier completes: both members are woken and confirmed.
        let w = {
            let mut g = slot.lock().unwrap();
            g.0 = Some(12);
            g.1.take().expect("the barrier's waker was registered at the flush")
        };
        w.wake();
        assert_eq!((ca.0.load(Ordering::SeqCst), cb.0.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(a.poll(), Some(true));
        assert_eq!(b.poll(), Some(true));
        assert!(rj.open.is_empty(), "the next turn starts new barriers");
    }

    /// A barrier may be complete before any waker is registered (a lease read answered at
    /// once): the flush finds it so and must wake the members itself, or they wait for
    /// a wake-up that never comes.
    #[test]
    fn a_barrier_complete_when_the_turn_ends_wakes_its_members() {
        let mut rj = ReadJoiner::default();
        let ((ca, wa), (cb, wb)) = (counter(), counter());
        let a = rj.join(3, &wa);
        let _ = rj.join(3, &wb);
        rj.flush_with(|_| Ok(Box::pin(std::future::ready(Ok::<u64, ReadError>(5))) as Barrier));
        assert_eq!((ca.0.load(Ordering::SeqCst), cb.0.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(a.poll(), Some(true));
    }
}
