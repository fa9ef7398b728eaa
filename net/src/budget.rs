//! Inbound byte budgets: how many bytes of one peer's frames this node holds at once,
//! from the moment a frame's header is read until its consumer drops the frame's
//! [`InboundPermit`].
//!
//! A lane reader acquires a frame's charge (`charge`) from its peer's `Budget` before it
//! allocates or reads the payload; while the budget is spent it waits, so it stops reading
//! the QUIC stream and QUIC flow control pushes back on the sender. The permit travels
//! with the frame (in its [`Event`](crate::Event)) through every queue to whoever consumes
//! it, and gives the bytes back when the last clone of it is dropped.
//!
//! Owns `Budget`, [`InboundPermit`] and [`BudgetError`]. Never reads a stream and never
//! decides which budget a frame is charged to (the readers in `conn.rs` and `bulk.rs` do).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Least bytes one frame is charged, whatever its payload: the cost of the event, its
/// queue slot and its permit, so a flood of empty frames is bounded as well.
pub const MIN_CHARGE: usize = 256;

/// The bytes a frame with a payload of `len` bytes is charged: `len`, at least
/// [`MIN_CHARGE`].
pub fn charge(len: usize) -> usize {
    len.max(MIN_CHARGE)
}

/// Why bytes could not be taken from a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// More bytes than the whole budget: they could never be granted.
    #[error("{bytes} bytes exceed the whole budget of {capacity}")]
    TooLarge {
        /// The bytes asked for.
        bytes: usize,
        /// The budget.
        capacity: usize,
    },
    /// The budget was closed (its endpoint shut down).
    #[error("budget closed")]
    Closed,
}

/// One peer's inbound byte budget on one lane: a semaphore counted in bytes.
#[derive(Debug)]
pub(crate) struct Budget {
    sem: Arc<Semaphore>,
    capacity: usize,
    /// Times a reader found the budget spent and waited.
    waits: AtomicU64,
}

impl Budget {
    /// A budget of `capacity` bytes (at most `u32::MAX`, as configuration bounds ensure;
    /// larger values are clamped).
    pub(crate) fn new(capacity: usize) -> Budget {
        let capacity = capacity.min(u32::MAX as usize).min(Semaphore::MAX_PERMITS);
        Budget { sem: Arc::new(Semaphore::new(capacity)), capacity, waits: AtomicU64::new(0) }
    }

    fn check(&self, bytes: usize) -> Result<u32, BudgetError> {
        if bytes > self.capacity {
            return Err(BudgetError::TooLarge { bytes, capacity: self.capacity });
        }
        // capacity <= u32::MAX (see `new`).
        Ok(bytes as u32)
    }

    /// Takes `bytes` now if they are free: `Ok(None)` if not.
    pub(crate) fn try_acquire(&self, bytes: usize) -> Result<Option<InboundPermit>, BudgetError> {
        let n = self.check(bytes)?;
        match self.sem.clone().try_acquire_many_owned(n) {
            Ok(p) => Ok(Some(InboundPermit::held(p, bytes))),
            Err(tokio::sync::TryAcquireError::NoPermits) => Ok(None),
            Err(tokio::sync::TryAcquireError::Closed) => Err(BudgetError::Closed),
        }
    }

    /// Takes `bytes`, waiting (counted in [`Budget::waits`]) while they are not free.
    pub(crate) async fn acquire(&self, bytes: usize) -> Result<InboundPermit, BudgetError> {
        if let Some(p) = self.try_acquire(bytes)? {
            return Ok(p);
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let n = self.check(bytes)?;
        match self.sem.clone().acquire_many_owned(n).await {
            Ok(p) => Ok(InboundPermit::held(p, bytes)),
            Err(_) => Err(BudgetError::Closed),
        }
    }

    /// Bytes held now (granted and not yet given back).
    pub(crate) fn in_use(&self) -> usize {
        self.capacity.saturating_sub(self.sem.available_permits())
    }

    /// Times a reader waited for this budget.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: usize,
}

/// Bytes of a peer's inbound budget held by one received frame. Clones share the hold: the
/// bytes go back to the budget when the last clone is dropped, so a consumer keeps one
/// with whatever it made of the frame (decoded messages) until it is done with it. A
/// default permit holds nothing. Permits compare equal whatever they hold, so events
/// compare by their content.
#[derive(Clone, Default)]
pub struct InboundPermit(Option<Arc<Held>>);

impl InboundPermit {
    fn held(permit: OwnedSemaphorePermit, bytes: usize) -> InboundPermit {
        InboundPermit(Some(Arc::new(Held { _permit: permit, bytes })))
    }

    /// The bytes this permit holds (0 for a default permit).
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |h| h.bytes)
    }
}

impl std::fmt::Debug for InboundPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InboundPermit({} B)", self.bytes())
    }
}

impl PartialEq for InboundPermit {
    fn eq(&self, _: &InboundPermit) -> bool {
        true
    }
}

impl Eq for InboundPermit {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_release_on_drop_and_clones_share_the_hold() {
        let b = Budget::new(1000);
        let p = b.try_acquire(600).unwrap().unwrap();
        assert_eq!((p.bytes(), b.in_use()), (600, 600));
        assert!(b.try_acquire(500).unwrap().is_none(), "only 400 left");
        let q = b.try_acquire(400).unwrap().unwrap();
        assert_eq!(b.in_use(), 1000);
        let p2 = p.clone();
        drop(p);
        assert_eq!(b.in_use(), 1000, "a clone still holds the bytes");
        drop(p2);
        assert_eq!(b.in_use(), 400);
        drop(q);
        assert_eq!(b.in_use(), 0);
        assert_eq!(InboundPermit::default().bytes(), 0);
    }

    #[test]
    fn more_than_the_whole_budget_is_refused_at_once() {
        let b = Budget::new(1000);
        assert_eq!(b.try_acquire(1001).unwrap_err(), BudgetError::TooLarge { bytes: 1001, capacity: 1000 });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let r = rt.block_on(b.acquire(1001));
        assert_eq!(r.unwrap_err(), BudgetError::TooLarge { bytes: 1001, capacity: 1000 });
        assert_eq!(b.in_use(), 0);
        assert_eq!(charge(0), MIN_CHARGE);
        assert_eq!(charge(10_000), 10_000);
    }

    #[test]
    fn a_waiting_acquire_is_counted_and_granted_on_release() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let b = Arc::new(Budget::new(1000));
            let p = b.acquire(900).await.unwrap();
            let b2 = b.clone();
            let waiter = tokio::spawn(async move { b2.acquire(500).await.map(|p| p.bytes()) });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!waiter.is_finished(), "granted while the budget was spent");
            assert_eq!(b.waits(), 1);
            drop(p);
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert_eq!(got.unwrap().unwrap(), Ok(500));
            assert_eq!(b.in_use(), 0, "the waiter's permit was dropped with its result");
        });
    }
}
