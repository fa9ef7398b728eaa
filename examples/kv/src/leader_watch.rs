//! Waiting for a leader change without polling: a [`LeaderWatch`] holds one engine event
//! subscription, read by its own thread, and counts leader changes per group; a request
//! parked while its shard has no usable leader waits on it ([`LeaderWatch::wait_change`])
//! and wakes as soon as a new leader is known (or its wait ends), instead of sleeping and
//! asking the engine again.
//!
//! Owns the subscription and the per-group change counts. Never decides where a request
//! goes (the node reads `Engine::leader` for that) and never blocks the engine: a slow
//! watch loses events, which wakes every waiter (`Lagged`).

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use flotilla_engine::api::{Engine, EngineEvent, EventStream, RecvError, SubscribeError};

/// Events the watch's subscription buffers.
const CAPACITY: usize = 65_536;
/// How often the watch's thread checks that its node still exists.
const POLL: Duration = Duration::from_millis(200);

/// Leader changes per group, from the engine's events.
#[derive(Default)]
struct Counts {
    /// Leader changes seen, by group.
    by_group: HashMap<u64, u64>,
    /// Bumped on every lost-events report and at shutdown: every waiter re-checks.
    epoch: u64,
}

struct Inner {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A token naming the leader-change state of one group at some moment
/// ([`LeaderWatch::seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen(u64, u64);

/// One subscription to the engine's events, counting leader changes per group.
pub struct LeaderWatch {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeaderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderWatch").finish_non_exhaustive()
    }
}

impl LeaderWatch {
    /// Subscribes to `engine`'s events and starts the thread that reads them; it ends
    /// when the engine shuts down or the watch is dropped.
    pub fn start(engine: &Engine) -> Result<LeaderWatch, StartWatchError> {
        let stream = engine.subscribe(CAPACITY)?;
        let inner = Arc::new(Inner { counts: Mutex::default(), changed: Condvar::new() });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("kv-leader-watch".into())
            .spawn(move || run(stream, weak))
            .map_err(StartWatchError::Thread)?;
        Ok(LeaderWatch { inner })
    }

    /// The state of `group` now: take it before looking at the leader, then wait with it.
    pub fn seen(&self, group: u64) -> Seen {
        let c = self.inner.lock();
        Seen(c.by_group.get(&group).copied().unwrap_or(0), c.epoch)
    }

    /// Waits until `group`'s leader changed after `seen` was taken (or events were lost),
    /// at most `timeout`. Returns whether it changed.
    pub fn wait_change(&self, group: u64, seen: Seen, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = self.inner.lock();
        loop {
            let now = Seen(c.by_group.get(&group).copied().unwrap_or(0), c.epoch);
            if now != seen {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self.inner.changed.wait_timeout(c, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartWatchError {
    /// The engine refused the subscription.
    #[error("event subscription: {0}")]
    Subscribe(#[from] SubscribeError),
    /// Its thread could not be started.
    #[error("watch thread: {0}")]
    Thread(std::io::Error),
}

/// The watch's thread: counts leader changes until the engine shuts down or the watch is
/// gone.
fn run(mut stream: EventStream, inner: Weak<Inner>) {
    loop {
        let ev = stream.recv_timeout(POLL);
        let Some(inner) = inner.upgrade() else { return };
        match ev {
            Ok(EngineEvent::LeaderChanged { group, .. }) => {
                *inner.lock().by_group.entry(group).or_insert(0) += 1;
                inner.changed.notify_all();
            }
            Ok(EngineEvent::ReplicaDestroyed { group }) => {
                inner.lock().by_group.remove(&group);
                inner.changed.notify_all();
            }
            Ok(EngineEvent::Lagged { .. }) => {
                inner.lock().epoch += 1;
                inner.changed.notify_all();
            }
            Ok(_) | Err(RecvError::Empty) => {}
            Err(_) => {
                inner.lock().epoch += 1;
                inner.changed.notify_all();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use bytes::Bytes;
    use flotilla_engine::api::{EngineConfig, StateMachine, StateMachineFactory};
    use flotilla_engine::transport::MemoryNetwork;

    use super::*;

    struct Nop;

    impl StateMachine for Nop {
        fn apply(&mut self, _: u64, _: u64, _: Option<&[u8]>) -> Bytes {
            Bytes::new()
        }
        fn applied_index(&self) -> u64 {
            0
        }
        fn snapshot(&mut self, _: &mut dyn Write) -> std::io::Result<()> {
            Ok(())
        }
        fn restore(&mut self, _: u64, _: u64, _: &mut dyn Read) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_parked_wait_wakes_when_its_group_gets_a_leader() {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new();
        let mut cfg = EngineConfig::new(1, dir.path().to_path_buf());
        cfg.workers = 1;
        let factory: StateMachineFactory = Arc::new(|_| Box::new(Nop));
        let engine = Engine::open(cfg, Box::new(net.join(1, 1024)), factory).unwrap();
        let watch = LeaderWatch::start(&engine).unwrap();
        let seen = watch.seen(7);
        // Nothing happens to group 7 yet: the wait runs out.
        assert!(!watch.wait_change(7, seen, Duration::from_millis(20)));
        engine.create_group(7, &[1], Box::new(Nop)).unwrap();
        // Its election wakes the wait.
        assert!(watch.wait_change(7, seen, Duration::from_secs(60)), "no leader change seen");
        assert_eq!(engine.leader(7).map(|l| l.node), Some(1), "the view holds the leader once woken");
        // Another group's changes do not count for group 8.
        let seen8 = watch.seen(8);
        assert!(!watch.wait_change(8, seen8, Duration::from_millis(20)));
        engine.shutdown();
    }
}
