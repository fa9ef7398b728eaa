//! [`SyncQueue`]: the durability half of writing. Rounds of batches the writer has written
//! wait here for a data sync. The thread that syncs them first starts the device's
//! writeback of their bytes and applies them to the in-memory state while the device
//! writes, then syncs, then tells their submitters, in the order they were written.
//!
//! Owns: the queue of written rounds, the backend that syncs, the durable position, the
//! sync counters, and the rules: one data sync at a time (two syncs of one file in flight
//! could report one's error to the other, and the failed range would go unnoticed); a
//! round is acknowledged only after a sync that started after its write completed has
//! succeeded, and after every round written before it; a round is readable (applied)
//! once the sync that covers it has begun, in write order, and never before: a write
//! queued behind a sync in flight is neither readable nor acknowledged until a sync of
//! its own begins and ends; after a failed sync every round not yet acknowledged fails
//! (the log is poisoned and the engine stops), and what the failed rounds wrote stays
//! readable until the log is reopened, when recovery reads what reached the disk, as it
//! does after any crash. Never: writes log bytes (the `SegmentWriter` does, possibly
//! while a sync is in flight), or acknowledges anything when the log is poisoned.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::backend::IoBackend;
use crate::batch::WriteBatch;
use crate::error::WriteError;
use crate::fs::FileSystem;
use crate::index::{EntryLoc, RecLoc};
use crate::segment::Segment;
use crate::state::{Applied, LogState};
use crate::types::Position;

/// Run by the thread that made a submitted batch durable, before the batch's
/// [`Ticket`](crate::Ticket) resolves; never run when the write fails (dropped instead).
/// For what must happen as soon as the bytes are durable and cannot wait for the
/// submitter to wake up (a follower's acknowledgement). It runs on the WAL's writer
/// thread or on a thread inside [`Wal::write`](crate::Wal::write), so it must be quick
/// and must not block or write to the log.
pub type OnDurable = Box<dyn FnOnce() + Send>;

/// A batch waiting for the writer.
pub(crate) struct Submission {
    pub batch: WriteBatch,
    /// Told the outcome (None for the writer's own rewrite batches).
    pub done: Option<Sender<Result<(), WriteError>>>,
    /// Run once the batch is durable, before `done` is told.
    pub on_durable: Option<OnDurable>,
}

impl Submission {
    /// Tells the submitter (if any) the outcome, after running its [`OnDurable`] when the
    /// batch is durable.
    pub(crate) fn tell(self, r: Result<(), WriteError>) {
        let Submission { done, on_durable, .. } = self;
        if r.is_ok() {
            if let Some(f) = on_durable {
                f();
            }
        }
        if let Some(d) = done {
            let _ = d.send(r);
        }
    }
}

/// Where an encoded operation's records went.
pub(crate) enum Placed {
    Entries {
        group: u64,
        first: u64,
        /// Range of the round's entry locations ([`Round::locs`]).
        locs: (usize, usize),
        rewrite_last: Option<u64>,
    },
    HardState(u64, crate::types::HardState, RecLoc),
    Meta(u64, usize, usize, RecLoc),
    Compact(u64, u64, u64, RecLoc),
    Remove(u64, u64),
}

/// One write: its submissions with where their records went, written at the end of
/// `seg` up to `end`.
pub(crate) struct Round {
    /// Number of the round (1, 2, ... in write order).
    pub seq: u64,
    pub seg: Arc<Segment>,
    pub end: u64,
    pub subs: Vec<(Submission, Vec<Placed>)>,
    /// Locations of the round's entries.
    pub locs: Vec<EntryLoc>,
    /// The bytes written (they end at `end`), for the entry cache; None when it is off.
    pub written: Option<Arc<Vec<u8>>>,
}

/// What the sync side needs of the rest of the log.
pub(crate) struct SyncCtx<'a> {
    pub fs: &'a dyn FileSystem,
    pub state: &'a RwLock<LogState>,
    pub poisoned: &'a AtomicBool,
}

/// Counters of the sync side.
#[derive(Default)]
pub(crate) struct SyncCounters {
    /// Data syncs of group-commit writes.
    pub syncs: AtomicU64,
    /// Nanoseconds spent in successful syncs of group-commit writes, in total: each from
    /// the start of its writeback through the index apply to the end of the data sync.
    pub sync_nanos_total: AtomicU64,
    /// The longest of them, in nanoseconds.
    pub sync_nanos_max: AtomicU64,
    /// Their durations, by power-of-two bucket.
    pub sync_latency: crate::latency::LatencyHistogram,
    /// Batches made durable.
    pub batches: AtomicU64,
    /// Duration of the last sync, in nanoseconds (the writer's gather heuristic).
    pub last_sync_nanos: AtomicU64,
}

/// The sync backend and the gather heuristic's memory.
struct SyncSide {
    backend: Box<dyn IoBackend>,
    /// Rounds the last sync covered.
    last_rounds: usize,
    /// Gather waits in a row that nobody joined, and syncs that will skip the wait.
    misses: u32,
    skip: u32,
}

/// After `k` gather waits in a row that nobody joined, the next `2^k - 1` syncs that
/// would wait do not (k capped here), as the writer thread's gather does.
const MAX_GATHER_BACKOFF: u32 = 6;

/// Written rounds waiting for their sync; see the module documentation.
pub(crate) struct SyncQueue {
    pending: Mutex<VecDeque<Round>>,
    /// Signalled when a round is queued (a sync about to start may wait for more).
    queued: Condvar,
    /// The sync side; held for the whole of a sync (one at a time).
    backend: Mutex<SyncSide>,
    /// Most a sync waits for more rounds (`WalConfig::group_commit_wait`).
    gather_wait: Duration,
    /// Guards waiting for the sync in flight to end.
    flight: Mutex<()>,
    flight_cv: Condvar,
    /// Threads inside [`crate::Wal::write`]: each will queue a batch.
    pub in_write: AtomicUsize,
    /// Rounds written (the last round number given).
    written: AtomicU64,
    /// Rounds resolved (acknowledged or failed), in order.
    done: AtomicU64,
    /// The log position known durable.
    durable: Mutex<Position>,
    pub counters: SyncCounters,
}

impl SyncQueue {
    pub(crate) fn new(backend: Box<dyn IoBackend>, durable: Position, gather_wait: Duration) -> SyncQueue {
        SyncQueue {
            pending: Mutex::new(VecDeque::new()),
            queued: Condvar::new(),
            backend: Mutex::new(SyncSide { backend, last_rounds: 0, misses: 0, skip: 0 }),
            gather_wait,
            flight: Mutex::new(()),
            flight_cv: Condvar::new(),
            in_write: AtomicUsize::new(0),
            written: AtomicU64::new(0),
            done: AtomicU64::new(0),
            durable: Mutex::new(durable),
            counters: SyncCounters::default(),
        }
    }

    /// The log position known durable (what a batch header records).
    pub(crate) fn durable(&self) -> Position {
        *self.durable.lock()
    }

    /// Whether every written round is resolved.
    pub(crate) fn idle(&self) -> bool {
        self.done.load(Ordering::Acquire) >= self.written.load(Ordering::Acquire)
    }

    /// Queues a round whose write completed; returns its number. Called by the writer
    /// only (rounds are queued in write order).
    pub(crate) fn push(
        &self,
        seg: Arc<Segment>,
        end: u64,
        subs: Vec<(Submission, Vec<Placed>)>,
        locs: Vec<EntryLoc>,
        written: Option<Arc<Vec<u8>>>,
    ) -> u64 {
        let mut q = self.pending.lock();
        let seq = self.written.load(Ordering::Relaxed) + 1;
        q.push_back(Round { seq, seg, end, subs, locs, written });
        self.written.store(seq, Ordering::Release);
        drop(q);
        self.queued.notify_all();
        seq
    }

    /// Returns once round `round` (and every round before it) is resolved: syncs what is
    /// written unless a sync in flight or done meanwhile covered it.
    pub(crate) fn sync_through(&self, round: u64, cx: &SyncCtx<'_>) {
        // While a sync is in flight, wait for it to end rather than queue for the sync
        // side: the rounds it covers are resolved without taking it, and the others then
        // race for it once, the winner syncing all of them (group commit).
        let mut backend = loop {
            if self.done.load(Ordering::Acquire) >= round {
                return;
            }
            if let Some(b) = self.backend.try_lock() {
                break b;
            }
            let mut g = self.flight.lock();
            if self.done.load(Ordering::Acquire) < round && self.backend.is_locked() {
                // Woken when the sync ends; the timeout only bounds a missed wake-up.
                let _ = self.flight_cv.wait_for(&mut g, Duration::from_millis(10));
            }
        };
        if self.done.load(Ordering::Acquire) >= round {
            return;
        }
        // Group commit: when this sync would cover fewer rounds than the last one, or
        // than the threads inside a blocking write, the others are likely writing their
        // next: wait a moment for them (at most the last sync's duration), unless
        // recent waits gathered nobody.
        let side = &mut *backend;
        let last_sync = Duration::from_nanos(self.counters.last_sync_nanos.load(Ordering::Relaxed));
        let wait = self.gather_wait.min(last_sync);
        let mut q = self.pending.lock();
        let want = side.last_rounds.max(self.in_write.load(Ordering::Relaxed));
        if !q.is_empty() && q.len() < want && !wait.is_zero() {
            if side.skip > 0 {
                side.skip -= 1;
            } else {
                let had = q.len();
                let deadline = Instant::now() + wait;
                // Bounded by the deadline.
                while q.len() < want && !self.queued.wait_until(&mut q, deadline).timed_out() {}
                if q.len() > had {
                    side.misses = 0;
                } else {
                    side.misses = (side.misses + 1).min(MAX_GATHER_BACKOFF);
                    side.skip = (1 << side.misses) - 1;
                }
            }
        }
        // Every queued round's write completed before it was queued, so the sync below
        // (which starts after this) covers all of them.
        let rounds: Vec<Round> = q.drain(..).collect();
        drop(q);
        side.last_rounds = rounds.len();
        let Some(last) = rounds.last() else { return };
        let last_seq = last.seq;
        let seg = last.seg.clone();
        let end = last.end;
        if cx.poisoned.load(Ordering::Acquire) {
            Self::fail(rounds, WriteError::Poisoned);
            self.finish(last_seq);
            return;
        }
        // All rounds queued together are in one segment: the writer syncs what it wrote
        // before it moves to the next segment.
        debug_assert!(rounds.iter().all(|r| r.seg.seq == seg.seq));
        // Start the device writing these rounds' bytes, and apply the rounds to the state
        // while it does: the data sync below then waits only for the rest of the write and
        // the device's cache flush (about 45 against 110 us per 43 KB round on the
        // benchmark's disk), instead of following the apply.
        let from = match self.durable() {
            Position { seq, offset } if seq == seg.seq => offset.min(end),
            _ => 0,
        };
        // A sync's duration runs from here: the device's time for the rounds, which the
        // gather waits are measured against, apply included.
        let started = Instant::now();
        cx.fs.start_writeback(&seg.path, &seg.file, from, end - from);
        {
            let mut st = cx.state.write();
            for r in rounds.iter() {
                Self::apply(&mut st, r);
            }
        }
        let res = backend.backend.sync(cx.fs, &seg.path, &seg.file);
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = res {
            tracing::error!("sync of {} failed, refusing further writes: {e}", seg.path.display());
            cx.poisoned.store(true, Ordering::Release);
            Self::fail(rounds, WriteError::io(&e));
            self.finish(last_seq);
            return;
        }
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let c = &self.counters;
        c.sync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        c.sync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        c.sync_latency.record_nanos(nanos);
        c.last_sync_nanos.store(nanos, Ordering::Relaxed);
        *self.durable.lock() = Position { seq: seg.seq, offset: end };
        // Resolved before the next sync may start, so rounds resolve in order.
        self.finish(last_seq);
        drop(backend);
        let mut n = 0u64;
        for r in rounds {
            n += r.subs.len() as u64;
            for (sub, _) in r.subs {
                sub.tell(Ok(()));
            }
        }
        c.batches.fetch_add(n, Ordering::Relaxed);
    }

    /// Rounds up to `last` are resolved: tell the threads waiting for a sync to end.
    fn finish(&self, last: u64) {
        self.done.store(last, Ordering::Release);
        let _g = self.flight.lock();
        self.flight_cv.notify_all();
    }

    /// Syncs `seg` (a seal written after every queued round was resolved), one sync at a
    /// time with the others.
    pub(crate) fn sync_seal(&self, cx: &SyncCtx<'_>, seg: &Segment) -> std::io::Result<()> {
        self.backend.lock().backend.sync(cx.fs, &seg.path, &seg.file)
    }

    /// Sets the durable position (the writer, after moving to a new segment).
    pub(crate) fn set_durable(&self, p: Position) {
        *self.durable.lock() = p;
    }

    fn fail(rounds: Vec<Round>, err: WriteError) {
        for r in rounds {
            for (sub, _) in r.subs {
                sub.tell(Err(err.clone()));
            }
        }
    }

    /// Applies a durable round to the state.
    fn apply(st: &mut LogState, r: &Round) {
        if let Some(info) = st.segs.get_mut(&r.seg.seq) {
            info.written = info.written.max(r.end);
        }
        st.applied_to = st.applied_to.max(Position { seq: r.seg.seq, offset: r.end });
        if let Some(w) = &r.written {
            st.cache.push(r.seg.seq, r.end - w.len() as u64, w.clone());
        }
        for (sub, placed) in r.subs.iter() {
            let data = &sub.batch.data;
            for p in placed {
                let op = match *p {
                    Placed::Entries { group, first, locs, rewrite_last } => Applied::Entries {
                        group,
                        first,
                        locs: std::borrow::Cow::Borrowed(r.locs.get(locs.0..locs.1).unwrap_or(&[])),
                        rewrite_last,
                    },
                    Placed::HardState(g, hs, rec) => Applied::HardState { group: g, hs, rec },
                    Placed::Meta(g, s, l, rec) => {
                        Applied::Meta { group: g, data: data.get(s..s + l).unwrap_or(&[]), rec }
                    }
                    Placed::Compact(g, index, last, rec) => Applied::Compact { group: g, index, last, rec },
                    Placed::Remove(g, seg) => Applied::Remove { group: g, seg },
                };
                st.apply(op);
            }
        }
    }
}
