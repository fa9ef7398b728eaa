//! How a worker stops: on a storage failure (nothing that depended on the write is sent,
//! every waiter fails, the engine refuses further work) and at shutdown (writes in flight
//! finished within a bound, the apply thread joined, every waiter resolved).
//!
//! Never retries a failed write.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::worker::Worker;
use crate::api::{CreateGroupError, ProposeError, ReadError};

/// How long shutdown waits for the writes in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

impl Worker {
    /// A WAL write failed: nothing that depended on it is sent, every waiter fails, the
    /// engine refuses further work.
    pub(super) fn storage_failed(&mut self) {
        self.failed = true;
        self.sh.failed.store(true, Ordering::Release);
        for c in self.writes.fail() {
            c.done.complete(Err(CreateGroupError::StorageFailed));
        }
        for (_, done) in self.removes.drain(..) {
            done.complete(Err(ProposeError::StorageFailed));
        }
        let _ = self.outbox.flush();
        // Appended proposals may still commit elsewhere: their waiters are Indeterminate.
        for g in self.groups.values_mut() {
            g.fail_all(&mut self.tally, || ReadError::StorageFailed);
        }
    }

    /// Shutdown: finish the writes in flight (bounded), then resolve every waiter.
    pub(super) fn finish(&mut self) {
        self.flush_creates();
        self.submit();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.failed {
            let Some(front) = self.writes.oldest_mut() else { break };
            if let Some(t) = front.ticket.take() {
                let left = deadline.saturating_duration_since(Instant::now());
                match t.receiver().recv_timeout(left) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!("wal write failed during shutdown: {e}");
                        self.storage_failed();
                        break;
                    }
                    Err(_) => {
                        tracing::warn!("shutdown gave up waiting for a wal write");
                        break;
                    }
                }
            }
            self.poll_inflight();
        }
        self.flush_outbox();
        // The apply thread finishes what it was handed (a state machine with its own
        // storage sees every entry it was given); waiters of applied entries get results.
        if !self.apply.shut_down() {
            tracing::error!("worker {}: a state machine panicked", self.idx);
        }
        self.poll_applied();
        for g in self.groups.values_mut() {
            g.fail_all(&mut self.tally, || ReadError::Shutdown);
        }
        // Drain commands still queued so their callers learn the engine stopped.
        while let Ok(cmd) = self.rx.try_recv() {
            drop(cmd);
        }
    }
}
