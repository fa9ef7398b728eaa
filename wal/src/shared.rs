//! [`Shared`]: the state the API handle, the writer, the sync queue and the preallocator
//! thread share: configuration, file system, the in-memory log state, the spare
//! segments, the sync queue and the poison flag.
//!
//! Owns: nothing but these shared values and the signalling between threads. Never:
//! performs I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::WalConfig;
use crate::fs::FileSystem;
use crate::segment::Segment;
use crate::state::LogState;
use crate::sync::SyncQueue;

/// Values shared by the WAL's threads.
pub(crate) struct Shared {
    pub cfg: WalConfig,
    /// Id of the log, written in every segment it makes.
    pub wal_id: u64,
    pub fs: Arc<dyn FileSystem>,
    pub state: RwLock<LogState>,
    /// Set after a failed write or fsync: no further write is accepted.
    pub poisoned: AtomicBool,
    /// Preallocated segments, in increasing sequence order.
    pub spares: Mutex<VecDeque<Segment>>,
    /// Signalled when a spare is added (writer waits) or needed / a segment retired
    /// (preallocator waits).
    pub spares_cv: Condvar,
    pub work_cv: Condvar,
    pub work: Mutex<bool>,
    /// Next sequence number to give a new or recycled segment.
    pub next_seq: AtomicU64,
    /// Asks the preallocator to stop.
    pub stop: AtomicBool,
    /// Group-commit writes.
    pub writes: AtomicU64,
    /// Written rounds waiting for their sync; the sync counters.
    pub sync: SyncQueue,
    /// Segments created by zero-filling (by the preallocator, or on the write path).
    pub created: AtomicU64,
    /// Segments recycled.
    pub recycled: AtomicU64,
    /// Group-commit gather waits, and those that nobody joined.
    pub gather_waits: AtomicU64,
    pub gather_waits_idle: AtomicU64,
    /// Entries read, and those of them copied from the entry cache.
    pub entries_read: AtomicU64,
    pub entries_read_cached: AtomicU64,
    /// Compaction passes run by the writer, and their counts and durations.
    pub compaction: CompactionCounters,
    /// Set while the preallocator's last attempt failed (the writer then stops waiting
    /// for it).
    pub prealloc_failing: AtomicBool,
}

/// What the writer's compaction passes did, since open.
#[derive(Default)]
pub(crate) struct CompactionCounters {
    /// Passes run (automatic after rounds, and explicit `Wal::maintain` calls).
    pub passes: AtomicU64,
    /// Bytes of live records they copied to the head of the log.
    pub bytes_rewritten: AtomicU64,
    /// Segments they found dead and handed over to be deleted or recycled.
    pub segments_freed: AtomicU64,
    /// Each pass's wall time on the writer after its leading sync (which the rounds it
    /// covers wait for anyway): no round is written meanwhile.
    pub latency: crate::latency::LatencyHistogram,
}

impl Shared {
    /// Wakes the preallocator.
    pub(crate) fn kick(&self) {
        let mut w = self.work.lock();
        *w = true;
        self.work_cv.notify_all();
    }

    /// Waits (at most `d`) for a kick; returns whether one came.
    pub(crate) fn wait_kick(&self, d: Duration) -> bool {
        let mut w = self.work.lock();
        if !*w {
            let _ = self.work_cv.wait_for(&mut w, d);
        }
        std::mem::replace(&mut *w, false)
    }

    /// Whether writes are refused.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }
}
