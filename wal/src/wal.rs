//! [`Wal`]: the handle to one node's write-ahead log, shared by every worker.
//!
//! Owns: opening (config check, backend choice, recovery, starting the writer and
//! preallocator threads), the submission API (blocking and non-blocking), the read API,
//! compaction requests and reports, and an orderly shutdown on drop. Never: encodes or
//! writes log bytes itself (the `SegmentWriter` does, on the writer thread or on a
//! [`Wal::write`] caller's thread), or blocks a reader on an fsync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::backend::{BackendKind, IoBackend, PwriteBackend};
use crate::batch::WriteBatch;
use crate::codec::{BATCH_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::config::{BackendChoice, WalConfig};
use crate::error::{OpenError, ReadError, WriteError};
use crate::fs::{FileSystem, StdFs};
use crate::prealloc::Preallocator;
use crate::recovery::Recovery;
use crate::segment::Segment;
use crate::shared::Shared;
use crate::sync::{OnDurable, Submission, SyncQueue};
use crate::types::{Entry, HardState};
use crate::writer::{Cmd, MaintainReport, SegmentWriter};

/// Tells a submitter when its batch is durable (or why it is not). Usable blocking
/// ([`Ticket::wait`]), polled ([`Ticket::try_wait`]) or in a `crossbeam_channel::select!`
/// ([`Ticket::receiver`]).
#[derive(Debug)]
pub struct Ticket {
    rx: Receiver<Result<(), WriteError>>,
}

impl Ticket {
    /// Blocks until the batch is durable or failed.
    pub fn wait(self) -> Result<(), WriteError> {
        self.rx.recv().unwrap_or(Err(WriteError::Shutdown))
    }

    /// The outcome, if known yet.
    pub fn try_wait(&self) -> Option<Result<(), WriteError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(WriteError::Shutdown)),
        }
    }

    /// The channel the outcome arrives on (exactly one message).
    pub fn receiver(&self) -> &Receiver<Result<(), WriteError>> {
        &self.rx
    }
}

/// Groups that keep one old segment alive, for the engine to snapshot and compact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPins {
    /// Sequence number of the segment.
    pub seq: u64,
    /// Live bytes in it.
    pub live_bytes: u64,
    /// Groups with live records in it, most live bytes first.
    pub groups: Vec<u64>,
}

/// Counters and sizes of the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Segment files in the log (including retired ones not yet freed, excluding spares).
    pub segments: usize,
    /// Spare segments ready.
    pub spares: usize,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// Bytes written in segment files (excluding spares).
    pub written_bytes: u64,
    /// Bytes of the entry cache.
    pub cache_bytes: usize,
    /// Group-commit writes issued.
    pub writes: u64,
    /// Data syncs issued for group-commit writes (one sync may cover several writes made
    /// while the sync before it was in flight).
    pub syncs: u64,
    /// Nanoseconds spent in successful syncs of group-commit writes, in total: each from
    /// the start of its rounds' writeback, through their index apply (which overlaps the
    /// device's write), to the end of the data sync. Divide by `syncs` for the mean.
    pub sync_nanos_total: u64,
    /// The longest successful sync of group-commit writes (measured as above), in
    /// nanoseconds.
    pub sync_nanos_max: u64,
    /// Batches made durable.
    pub batches: u64,
    /// Groups known.
    pub groups: usize,
    /// Segments created (zero-filled) since open: by the preallocator, or on the write
    /// path when it had no spare ready.
    pub segments_created: u64,
    /// Segments recycled since open.
    pub segments_recycled: u64,
    /// Times the writer waited for more submitters to join a group-commit write.
    pub gather_waits: u64,
    /// Of those, the waits that nobody joined (wasted latency for the waiting batch).
    pub gather_waits_idle: u64,
    /// Entries read since open ([`Wal::entries`] and [`Wal::entry`]).
    pub entries_read: u64,
    /// Of those, the entries copied from the entry cache (the others from the segment
    /// maps).
    pub entries_read_cached: u64,
    /// Compaction passes run by the writer since open: the automatic ones after rounds
    /// and those [`Wal::maintain`] asked for. Their durations are in
    /// [`Wal::compaction_latency`].
    pub compaction_passes: u64,
    /// Bytes of live records those passes copied from sparse segments to the head of the
    /// log.
    pub compaction_bytes_rewritten: u64,
    /// Segments those passes found dead and handed over to be deleted or recycled.
    pub compaction_segments_freed: u64,
}

/// One node's shared write-ahead log. Thread-safe: share it by reference or `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    tx: Option<Sender<Cmd>>,
    /// The writing half, taken by the writer thread or by a [`Wal::write`] caller.
    seg_writer: Arc<Mutex<SegmentWriter>>,
    writer: Option<JoinHandle<()>>,
    prealloc: Option<JoinHandle<()>>,
    backend: BackendKind,
    max_batch: usize,
    recovered_bytes: u64,
    checked_bytes: u64,
    wal_id: u64,
    /// The directory lock, released after the threads stopped (fields drop after
    /// `Drop::drop` ran).
    _lock: crate::lock::DirLock,
}

fn choose_backend(choice: BackendChoice) -> Result<Box<dyn IoBackend>, OpenError> {
    #[cfg(target_os = "linux")]
    {
        use crate::backend::UringBackend;
        match choice {
            BackendChoice::Pwrite => Ok(Box::new(PwriteBackend)),
            BackendChoice::IoUring => UringBackend::new()
                .map(|b| Box::new(b) as Box<dyn IoBackend>)
                .map_err(OpenError::IoUringUnavailable),
            BackendChoice::Auto => Ok(Box::new(PwriteBackend)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        match choice {
            BackendChoice::IoUring => {
                Err(OpenError::IoUringUnavailable(std::io::Error::other("io_uring exists only on Linux")))
            }
            _ => Ok(Box::new(PwriteBackend)),
        }
    }
}

impl Wal {
    /// Opens (recovering) or creates the log described by `config` on the real file
    /// system.
    pub fn open(config: WalConfig) -> Result<Wal, OpenError> {
        Wal::open_with_fs(config, Arc::new(StdFs))
    }

    /// Opens the log through the given file system (tests inject faults this way).
    pub fn open_with_fs(config: WalConfig, fs: Arc<dyn FileSystem>) -> Result<Wal, OpenError> {
        let checked = config.check()?;
        let cfg = checked.get().clone();
        let backend = choose_backend(cfg.backend)?;
        let kind = backend.kind();
        // The sync half has its own backend (a ring of its own for io_uring): a round is
        // written while the previous one's sync is in flight.
        let sync_backend = choose_backend(match kind {
            BackendKind::IoUring => BackendChoice::IoUring,
            _ => BackendChoice::Pwrite,
        })?;
        tracing::info!("opening {} with backend {kind:?}", cfg.dir.display());
        let rec = Recovery::new(&cfg, &*fs).run()?;
        let (tx, rx) = bounded(cfg.queue_len);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            wal_id: rec.wal_id,
            fs,
            state: RwLock::new(rec.state),
            poisoned: AtomicBool::new(false),
            spares: Mutex::new(rec.spares.into_iter().collect()),
            spares_cv: Condvar::new(),
            work_cv: Condvar::new(),
            work: Mutex::new(true),
            next_seq: AtomicU64::new(rec.next_seq),
            stop: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            sync: SyncQueue::new(sync_backend, rec.durable, cfg.group_commit_wait),
            created: AtomicU64::new(0),
            recycled: AtomicU64::new(0),
            gather_waits: AtomicU64::new(0),
            gather_waits_idle: AtomicU64::new(0),
            entries_read: AtomicU64::new(0),
            entries_read_cached: AtomicU64::new(0),
            compaction: Default::default(),
            prealloc_failing: AtomicBool::new(false),
        });
        let seg_writer = Arc::new(Mutex::new(SegmentWriter::new(
            shared.clone(),
            backend,
            rec.active,
            rec.pos,
            rx.clone(),
        )));
        let w = seg_writer.clone();
        let writer = std::thread::Builder::new()
            .name("flotilla-wal-writer".into())
            .spawn(move || SegmentWriter::run(w, rx))
            .map_err(OpenError::Thread)?;
        let pre = Preallocator::new(shared.clone());
        let prealloc = std::thread::Builder::new()
            .name("flotilla-wal-prealloc".into())
            .spawn(move || pre.run())
            .map_err(OpenError::Thread)?;
        Ok(Wal {
            // Room for the batch header, and for the seal that ends every segment.
            max_batch: cfg.segment_size as usize - SEGMENT_HEADER_LEN - 2 * BATCH_HEADER_LEN,
            shared,
            tx: Some(tx),
            seg_writer,
            writer: Some(writer),
            prealloc: Some(prealloc),
            backend: kind,
            recovered_bytes: rec.scanned,
            checked_bytes: rec.checked,
            wal_id: rec.wal_id,
            _lock: rec.lock,
        })
    }

    /// The I/O backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Bytes of valid batches read by recovery at open.
    pub fn recovered_bytes(&self) -> u64 {
        self.recovered_bytes
    }

    /// Bytes recovery fed to checksums at open (batch headers, bodies, records): linear in
    /// the log's size whatever its payloads hold, because a batch header's length is
    /// believed only after the header's own checksum verified.
    pub fn recovery_checked_bytes(&self) -> u64 {
        self.checked_bytes
    }

    /// The log's id: random, chosen when the log was created, written in every segment.
    pub fn wal_id(&self) -> u64 {
        self.wal_id
    }

    fn prepare(&self, batch: WriteBatch) -> Result<(Cmd, Ticket), WriteError> {
        let (sub, ticket) = self.prepare_sub(batch, None)?;
        Ok((Cmd::Write(sub), ticket))
    }

    fn prepare_sub(
        &self,
        batch: WriteBatch,
        on_durable: Option<OnDurable>,
    ) -> Result<(Submission, Ticket), WriteError> {
        if self.shared.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        let len = batch.encoded_len();
        if len > self.max_batch {
            return Err(WriteError::BatchTooLarge { len, max: self.max_batch });
        }
        let (done, rx) = bounded(1);
        Ok((Submission { batch, done: Some(done), on_durable }, Ticket { rx }))
    }

    /// Queues `batch` for the next group commit and returns at once (blocking only while
    /// the queue is full); the [`Ticket`] tells when it is durable. Batches submitted by
    /// one thread are made durable in submission order.
    pub fn submit(&self, batch: WriteBatch) -> Result<Ticket, WriteError> {
        self.submit_then(batch, None)
    }

    /// As [`Wal::submit`], and `on_durable` (if any) runs as soon as the batch is durable,
    /// on the thread that made it so, before the ticket resolves (see [`OnDurable`]).
    pub fn submit_then(
        &self,
        batch: WriteBatch,
        on_durable: Option<OnDurable>,
    ) -> Result<Ticket, WriteError> {
        let (sub, ticket) = self.prepare_sub(batch, on_durable)?;
        let tx = self.tx.as_ref().ok_or(WriteError::Shutdown)?;
        tx.send(Cmd::Write(sub)).map_err(|_| WriteError::Shutdown)?;
        Ok(ticket)
    }

    /// Like [`Wal::submit`] but never blocks: fails with [`WriteError::Busy`] when the
    /// queue is full.
    pub fn try_submit(&self, batch: WriteBatch) -> Result<Ticket, WriteError> {
        let (cmd, ticket) = self.prepare(batch)?;
        let tx = self.tx.as_ref().ok_or(WriteError::Shutdown)?;
        tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => WriteError::Busy,
            TrySendError::Disconnected(_) => WriteError::Shutdown,
        })?;
        Ok(ticket)
    }

    /// Submits `batch` and waits until it is durable. When the writer is free, the
    /// calling thread writes (what was queued before, then its batch) and syncs itself,
    /// with no hand-over to the writer thread; its write may go out while another
    /// thread's sync is in flight, and it is acknowledged only after a sync that started
    /// after it was written.
    pub fn write(&self, batch: WriteBatch) -> Result<(), WriteError> {
        if self.tx.is_none() {
            return Err(WriteError::Shutdown);
        }
        // Counted while inside, also while waiting for the writer to take the batch: a
        // sync about to start may wait a moment for it.
        let _in = InWrite::enter(&self.shared.sync.in_write);
        match self.write_here_or_submit(batch, None, true)? {
            Some(ticket) => ticket.wait(),
            None => Ok(()),
        }
    }

    /// Writes and syncs `batch` on the calling thread when the writer is free, as
    /// [`Wal::write`] does, and returns `Ok(None)` once it is durable; when the writer is
    /// busy (another thread is writing), queues it as [`Wal::submit`] does and returns its
    /// [`Ticket`] without waiting. For a caller with nothing else to do meanwhile: a free
    /// writer costs it no hand-over to the writer thread and back.
    pub fn write_or_submit(&self, batch: WriteBatch) -> Result<Option<Ticket>, WriteError> {
        self.write_here_or_submit(batch, None, false)
    }

    /// As [`Wal::write_or_submit`], with `on_durable` run as [`Wal::submit_then`] runs it
    /// (on this thread when the batch is written here).
    pub fn write_or_submit_then(
        &self,
        batch: WriteBatch,
        on_durable: Option<OnDurable>,
    ) -> Result<Option<Ticket>, WriteError> {
        self.write_here_or_submit(batch, on_durable, false)
    }

    /// The three above; `counted`: the caller is counted in `in_write` already.
    fn write_here_or_submit(
        &self,
        batch: WriteBatch,
        on_durable: Option<OnDurable>,
        counted: bool,
    ) -> Result<Option<Ticket>, WriteError> {
        let tx = self.tx.as_ref().ok_or(WriteError::Shutdown)?;
        let (sub, ticket) = self.prepare_sub(batch, on_durable)?;
        let Some(mut w) = self.seg_writer.try_lock() else {
            tx.send(Cmd::Write(sub)).map_err(|_| WriteError::Shutdown)?;
            return Ok(Some(ticket));
        };
        let _in = (!counted).then(|| InWrite::enter(&self.shared.sync.in_write));
        let round = w.write_now(sub);
        drop(w);
        let cx = crate::sync::SyncCtx {
            fs: &*self.shared.fs,
            state: &self.shared.state,
            poisoned: &self.shared.poisoned,
        };
        self.shared.sync.sync_through(round, &cx);
        ticket.wait().map(|()| None)
    }

    /// How long the last sync took, from its writeback start to the end of its data sync
    /// (zero before the first one).
    pub fn last_sync_duration(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.shared.sync.counters.last_sync_nanos.load(Ordering::Relaxed))
    }

    /// Runs a compaction pass now (rewrite sparse segments, retire dead ones; retired
    /// segments are deleted or recycled in the background).
    pub fn maintain(&self) -> Result<MaintainReport, WriteError> {
        let tx = self.tx.as_ref().ok_or(WriteError::Shutdown)?;
        let (rtx, rrx) = bounded(1);
        tx.send(Cmd::Maintain(rtx)).map_err(|_| WriteError::Shutdown)?;
        rrx.recv().map_err(|_| WriteError::Shutdown)
    }

    /// Asks the writer for a compaction pass (as [`Wal::maintain`]) without waiting for it:
    /// dead segments are otherwise freed only when the writer moves to a new segment, which
    /// an idle log never does.
    pub fn request_maintain(&self) -> Result<(), WriteError> {
        let tx = self.tx.as_ref().ok_or(WriteError::Shutdown)?;
        // The report is dropped: nobody waits for it.
        let (rtx, _) = bounded(1);
        tx.send(Cmd::Maintain(rtx)).map_err(|_| WriteError::Shutdown)
    }

    /// Whether writes are refused after an I/O failure.
    pub fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Entries `[lo, hi)` of `group`, stopping early (but after at least one entry) once
    /// `max_bytes` of payload are gathered. Payloads are copied after the index lock is
    /// released: the reader holds the segments (or cached batches) it copies from, and a
    /// held segment is neither recycled nor deleted until the copy is done.
    pub fn entries(
        &self,
        group: u64,
        lo: u64,
        hi: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, ReadError> {
        enum Src {
            Cached(Arc<Vec<u8>>, usize, usize),
            Mapped(Arc<Segment>, usize, usize),
        }
        let mut plan = Vec::with_capacity(hi.saturating_sub(lo).min(1024) as usize);
        {
            let st = self.shared.state.read();
            let g = st.groups.get(&group).ok_or(ReadError::GroupNotFound(group))?;
            if lo < g.first {
                return Err(ReadError::Compacted { group, index: lo, first: g.first });
            }
            if hi > lo && hi - 1 > g.last() {
                return Err(ReadError::Unavailable { group, index: hi - 1, last: g.last() });
            }
            let mut bytes = 0u64;
            let mut seg: Option<Arc<Segment>> = None;
            let mut hint = None;
            let mut cached = 0u64;
            for index in lo..hi {
                let loc = g.get(index).ok_or(ReadError::Lost { group, index })?;
                if let Some(limit) = max_bytes {
                    if !plan.is_empty() && bytes + loc.len as u64 > limit {
                        break;
                    }
                }
                bytes += loc.len as u64;
                let src = match st.cache.get_shared(loc.seg, loc.off as u64, loc.len as u64, &mut hint) {
                    Some((arena, start, len)) => {
                        cached += 1;
                        Src::Cached(arena, start, len)
                    }
                    None => {
                        if seg.as_ref().map(|s| s.seq) != Some(loc.seg) {
                            seg = st.segs.get(&loc.seg).and_then(|s| s.seg.clone());
                        }
                        let s = seg.clone().ok_or(ReadError::Lost { group, index })?;
                        Src::Mapped(s, loc.off as usize, loc.len as usize)
                    }
                };
                plan.push((index, loc.term, src));
            }
            self.shared.entries_read.fetch_add(plan.len() as u64, Ordering::Relaxed);
            self.shared.entries_read_cached.fetch_add(cached, Ordering::Relaxed);
        }
        plan.into_iter()
            .map(|(index, term, src)| {
                let data = match &src {
                    Src::Cached(a, start, len) => a.get(*start..*start + *len),
                    Src::Mapped(s, off, len) => s.bytes().get(*off..*off + *len),
                }
                .ok_or(ReadError::Lost { group, index })?
                .to_vec();
                Ok(Entry { index, term, data })
            })
            .collect()
    }

    /// Entry `index` of `group`.
    pub fn entry(&self, group: u64, index: u64) -> Result<Entry, ReadError> {
        // In bounds means `index <= last < u64::MAX`, so `index + 1` cannot overflow.
        self.bounds_check(group, index)?;
        let mut v = self.entries(group, index, index.saturating_add(1), None)?;
        v.pop().ok_or(ReadError::Lost { group, index })
    }

    fn bounds_check(&self, group: u64, index: u64) -> Result<u64, ReadError> {
        let st = self.shared.state.read();
        let g = st.groups.get(&group).ok_or(ReadError::GroupNotFound(group))?;
        if index < g.first {
            return Err(ReadError::Compacted { group, index, first: g.first });
        }
        g.get(index).map(|l| l.term).ok_or(ReadError::Unavailable { group, index, last: g.last() })
    }

    /// The term of entry `index` of `group`.
    pub fn term(&self, group: u64, index: u64) -> Result<u64, ReadError> {
        self.bounds_check(group, index)
    }

    /// First index of `group` (its compaction point; `last + 1` when the log is empty).
    pub fn first_index(&self, group: u64) -> Result<u64, ReadError> {
        let st = self.shared.state.read();
        st.groups.get(&group).map(|g| g.first).ok_or(ReadError::GroupNotFound(group))
    }

    /// Last index of `group` (`first - 1` when its log is empty).
    pub fn last_index(&self, group: u64) -> Result<u64, ReadError> {
        let st = self.shared.state.read();
        st.groups.get(&group).map(|g| g.last()).ok_or(ReadError::GroupNotFound(group))
    }

    /// The latest hard state of `group`, if it has one.
    pub fn hard_state(&self, group: u64) -> Result<Option<HardState>, ReadError> {
        let st = self.shared.state.read();
        let g = st.groups.get(&group).ok_or(ReadError::GroupNotFound(group))?;
        Ok(g.hard_state.map(|(hs, _)| hs))
    }

    /// The latest metadata of `group`, if it has any.
    pub fn meta(&self, group: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let st = self.shared.state.read();
        let g = st.groups.get(&group).ok_or(ReadError::GroupNotFound(group))?;
        Ok(g.meta.as_ref().map(|(m, _)| m.to_vec()))
    }

    /// Every group with at least one record, in increasing order.
    pub fn groups(&self) -> Vec<u64> {
        let st = self.shared.state.read();
        let mut v: Vec<u64> = st.groups.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// The oldest `max_segments` segments that are still live, each with the groups that
    /// keep it alive: snapshotting and compacting those groups frees the most disk.
    pub fn pinning_groups(&self, max_segments: usize) -> Vec<SegmentPins> {
        let st = self.shared.state.read();
        st.segs
            .iter()
            .filter(|(seq, s)| **seq != st.active && !s.retired)
            .take(max_segments)
            .map(|(seq, s)| {
                let mut g: Vec<(u64, u64)> = s.groups_live.iter().map(|(g, b)| (*g, *b)).collect();
                g.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                SegmentPins { seq: *seq, live_bytes: s.live, groups: g.into_iter().map(|(g, _)| g).collect() }
            })
            .collect()
    }

    /// Sequence numbers of the log's live segments, oldest first (excluding spares and
    /// retired segments waiting to be deleted or recycled).
    pub fn segment_seqs(&self) -> Vec<u64> {
        let st = self.shared.state.read();
        st.segs.iter().filter(|(_, s)| !s.retired).map(|(k, _)| *k).collect()
    }

    /// The durations of the successful data syncs of group-commit writes (those
    /// `WalStats::sync_nanos_total` adds up), by power-of-two bucket.
    pub fn sync_latency(&self) -> crate::LatencySnapshot {
        self.shared.sync.counters.sync_latency.snapshot()
    }

    /// The wall time of each compaction pass of the writer since open (one per
    /// `WalStats::compaction_passes`), by power-of-two bucket, from the end of the sync
    /// the pass starts with (which the rounds it covers wait for anyway): no group-commit
    /// round is written while a pass runs, so a long one shows as a stall of every writer.
    pub fn compaction_latency(&self) -> crate::LatencySnapshot {
        self.shared.compaction.latency.snapshot()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> WalStats {
        let st = self.shared.state.read();
        WalStats {
            segments: st.segs.len(),
            spares: self.shared.spares.lock().len(),
            live_bytes: st.segs.values().map(|s| s.live).sum(),
            written_bytes: st.segs.values().map(|s| s.written).sum(),
            cache_bytes: st.cache.used(),
            writes: self.shared.writes.load(Ordering::Relaxed),
            syncs: self.shared.sync.counters.syncs.load(Ordering::Relaxed),
            sync_nanos_total: self.shared.sync.counters.sync_nanos_total.load(Ordering::Relaxed),
            sync_nanos_max: self.shared.sync.counters.sync_nanos_max.load(Ordering::Relaxed),
            batches: self.shared.sync.counters.batches.load(Ordering::Relaxed),
            groups: st.groups.len(),
            segments_created: self.shared.created.load(Ordering::Relaxed),
            segments_recycled: self.shared.recycled.load(Ordering::Relaxed),
            gather_waits: self.shared.gather_waits.load(Ordering::Relaxed),
            gather_waits_idle: self.shared.gather_waits_idle.load(Ordering::Relaxed),
            entries_read: self.shared.entries_read.load(Ordering::Relaxed),
            entries_read_cached: self.shared.entries_read_cached.load(Ordering::Relaxed),
            compaction_passes: self.shared.compaction.passes.load(Ordering::Relaxed),
            compaction_bytes_rewritten: self.shared.compaction.bytes_rewritten.load(Ordering::Relaxed),
            compaction_segments_freed: self.shared.compaction.segments_freed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued, then stop.
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.kick();
        if let Some(p) = self.prealloc.take() {
            let _ = p.join();
        }
    }
}

/// A thread inside a blocking write, counted in `in_write` until dropped: a sync about to
/// start may wait a moment for its batch.
struct InWrite<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InWrite<'a> {
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> InWrite<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InWrite(count)
    }
}

impl Drop for InWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
