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
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
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
        slot: Mutex::new(Slot { value: None, taken: false, waker: None }),
        cv: Condvar::new(),
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
    let waker = {
        let mut s = inner.lock();
        s.value = Some(v);
        s.waker.take()
    };
    inner.cv.notify_all();
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
            s = self.inner.cv.wait(s).unwrap_or_else(|e| e.into_inner());
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
                s = self.inner.cv.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
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
