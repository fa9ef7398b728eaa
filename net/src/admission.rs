//! The caps on inbound connections in admission (from their first packet through the TLS
//! handshake to the hello): at most `max_handshakes` at once, and at most
//! `max_handshakes_per_address` from one source address. A [`Slot`] holds one place and
//! gives it back when dropped; the highest count seen is kept for the stats.
//!
//! Owns these counts. Never decides anything about a connection but whether it may start
//! its admission: `accept.rs` runs it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    total: usize,
    by_addr: HashMap<SocketAddr, usize>,
    peak: usize,
}

/// The in-progress admissions of one endpoint.
#[derive(Debug)]
pub(crate) struct Admissions {
    max: usize,
    max_per_addr: usize,
    state: Mutex<State>,
}

/// One admission's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot {
    owner: Arc<Admissions>,
    addr: SocketAddr,
}

impl Admissions {
    /// Caps of `max` in all and `max_per_addr` per source address.
    pub(crate) fn new(max: usize, max_per_addr: usize) -> Admissions {
        Admissions { max, max_per_addr, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counts updated in single calls: consistent even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for an admission from `addr`, or `None` when a cap is reached.
    pub(crate) fn try_enter(self: &Arc<Self>, addr: SocketAddr) -> Option<Slot> {
        let mut s = self.lock();
        let here = s.by_addr.get(&addr).copied().unwrap_or(0);
        if s.total >= self.max || here >= self.max_per_addr {
            return None;
        }
        s.total += 1;
        s.peak = s.peak.max(s.total);
        s.by_addr.insert(addr, here + 1);
        Some(Slot { owner: self.clone(), addr })
    }

    /// Admissions in progress now.
    pub(crate) fn in_progress(&self) -> usize {
        self.lock().total
    }

    /// The most admissions in progress at once so far.
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.owner.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.by_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                s.by_addr.remove(&self.addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_total_and_per_address_and_slots_free_their_place() {
        let a = Arc::new(Admissions::new(3, 2));
        let x: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let y: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let s1 = a.try_enter(x).unwrap();
        let _s2 = a.try_enter(x).unwrap();
        assert!(a.try_enter(x).is_none(), "per-address cap");
        let _s3 = a.try_enter(y).unwrap();
        assert!(a.try_enter(y).is_none(), "total cap");
        drop(s1);
        assert_eq!(a.in_progress(), 2);
        assert!(a.try_enter(x).is_some());
        assert_eq!(a.peak(), 3);
    }
}
