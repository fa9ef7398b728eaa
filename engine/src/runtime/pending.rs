//! [`Pending`]: a one-shot result the runtime completes later, usable both with a blocking
//! [`Pending::wait`] and as a `Future`.
//!
//! Owns the hand-off of one value from a worker thread to the caller. Never decides what
//! the value is: the worker completes it through a [`Completer`]; a completer dropped
//! without completing (its worker exited) delivers [`Abandoned::abandoned`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The value a result takes when its worker went away without answering.
pub trait Abandoned {
    /// The value delivered when the completer is dropped unanswered.
    fn abandoned() -> Self;
}

struct Slot<T> {
    value: Option<T>,
    taken: bool,
    waker: Option<Waker>,
    /// Threads blocked in `wait`/`wait_timeout`: only then does a delivery notify the
    /// condition variable (a notify is a system call even with no thread waiting, and
    /// most results are awaited as futures, or taken once already there).
    blocked: u32,
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
    /// Tests: how many deliveries notified the condition variable.
    #[cfg(test)]
    notified: std::sync::atomic::AtomicU32,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // Every critical section is a plain field update: consistent even after a panic.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A result that arrives later: [`Pending::wait`] blocks for it, `.await` polls for it.
pub struct Pending<T> {
    inner: Arc<Inner<T>>,
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

/// The runtime's end of a [`Pending`].
pub(crate) struct Completer<T: Abandoned> {
    inner: Option<Arc<Inner<T>>>,
}

/// A new pending result and the completer that resolves it.
pub(crate) fn pending<T: Abandoned>() -> (Pending<T>, Completer<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot { value: None, taken: false, waker: None, blocked: 0 }),
        cv: Condvar::new(),
        #[cfg(test)]
        notified: std::sync::atomic::AtomicU32::new(0),
    });
    (Pending { inner: inner.clone() }, Completer { inner: Some(inner) })
}

impl<T: Abandoned> Completer<T> {
    /// Delivers the result.
    pub(crate) fn complete(mut self, v: T) {
        if let Some(inner) = self.inner.take() {
            deliver(&inner, v);
        }
    }
}

fn deliver<T>(inner: &Inner<T>, v: T) {
    let (waker, blocked) = {
        let mut s = inner.lock();
        s.value = Some(v);
        (s.waker.take(), s.blocked > 0)
    };
    // A thread that blocks later finds the value under the lock before it waits.
    if blocked {
        #[cfg(test)]
        inner.notified.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        inner.cv.notify_all();
    }
    if let Some(w) = waker {
        w.wake();
    }
}

impl<T: Abandoned> Drop for Completer<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            deliver(&inner, T::abandoned());
        }
    }
}

impl<T: Abandoned> Pending<T> {
    /// An already resolved result.
    pub(crate) fn ready(v: T) -> Pending<T> {
        let (p, c) = pending();
        c.complete(v);
        p
    }

    /// Blocks until the result arrives.
    pub fn wait(self) -> T {
        let mut s = self.inner.lock();
        loop {
            if let Some(v) = s.value.take() {
                s.taken = true;
                return v;
            }
            s.blocked += 1;
            s = self.inner.cv.wait(s).unwrap_or_else(|e| e.into_inner());
            s.blocked -= 1;
        }
    }

    /// Blocks up to `timeout`; gives the handle back if the result has not arrived.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, Pending<T>> {
        let deadline = Instant::now() + timeout;
        {
            let mut s = self.inner.lock();
            loop {
                if let Some(v) = s.value.take() {
                    s.taken = true;
                    return Ok(v);
                }
                let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
                s.blocked += 1;
                s = self.inner.cv.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
                s.blocked -= 1;
            }
        }
        Err(self)
    }

    /// Whether the result has arrived.
    pub fn is_ready(&self) -> bool {
        self.inner.lock().value.is_some()
    }
}

impl<T: Abandoned> Future for Pending<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut s = self.inner.lock();
        if let Some(v) = s.value.take() {
            s.taken = true;
            return Poll::Ready(v);
        }
        if s.taken {
            // Polled again after completion: the value is gone; behave as abandoned.
            return Poll::Ready(T::abandoned());
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Abandoned for u32 {
        fn abandoned() -> u32 {
            0
        }
    }

    #[test]
    fn completes_across_threads_and_on_drop() {
        let (p, c) = pending::<u32>();
        std::thread::spawn(move || c.complete(7));
        assert_eq!(p.wait(), 7);
        let (p, c) = pending::<u32>();
        drop(c);
        assert_eq!(p.wait(), 0);
        let (p, _c) = pending::<u32>();
        assert!(p.wait_timeout(Duration::from_millis(5)).is_err());
    }

    /// A delivery notifies the condition variable only when a thread is blocked on it;
    /// the blocked thread still wakes, with or without a timeout.
    #[test]
    fn a_delivery_notifies_only_a_blocked_thread() {
        use std::sync::atomic::Ordering::Relaxed;
        let (p, c) = pending::<u32>();
        let inner = p.inner.clone();
        c.complete(5);
        assert_eq!(p.wait(), 5);
        assert_eq!(inner.notified.load(Relaxed), 0, "nobody was blocked");
        for timed in [false, true] {
            let (p, c) = pending::<u32>();
            let inner = p.inner.clone();
            let t = std::thread::spawn(move || {
                if timed {
                    p.wait_timeout(Duration::from_secs(30)).ok()
                } else {
                    Some(p.wait())
                }
            });
            // Bounded: the waiter blocks within 10 s.
            let start = Instant::now();
            while inner.lock().blocked == 0 && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            c.complete(9);
            assert_eq!(t.join().unwrap(), Some(9));
            assert_eq!(inner.notified.load(Relaxed), 1, "the blocked thread was notified (timed: {timed})");
            assert_eq!(inner.lock().blocked, 0);
        }
    }

    #[test]
    fn works_as_a_future() {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let (mut p, c) = pending::<u32>();
        assert!(Pin::new(&mut p).poll(&mut cx).is_pending());
        c.complete(3);
        assert_eq!(Pin::new(&mut p).poll(&mut cx), Poll::Ready(3));
    }
}
