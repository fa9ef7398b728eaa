//! [`SegmentWriter`]: the writing half of the log. It merges the batches queued by every
//! submitter into one write (group commit), validates them against the groups' logs,
//! places them in segments and writes them; the [`SyncQueue`] then applies them to the
//! in-memory state while the device writes them, makes them durable and tells each
//! submitter. It also runs
//! compaction: rewriting sparse segments and retiring dead ones.
//!
//! The writer lives behind a mutex. The writer thread takes it for batches queued by
//! [`crate::Wal::submit`]; a thread calling [`crate::Wal::write`] takes it itself when it
//! is free (no hand-over to the writer thread and back), writes what is queued and its
//! own batch, and syncs. A round is written while the previous round's sync is in flight
//! (by another thread); the sync queue keeps one sync at a time and acknowledges in order.
//!
//! Owns: the active segment, the write position, the encoding buffer, the projection of
//! the groups' logs over written but not yet applied rounds, and the poison rule: after
//! any failed write or sync nothing more is written. Never: reads from disk on the write
//! path, creates segments while a spare is available, deletes files (the preallocator
//! frees retired segments off the write path), or moves to a new segment before what it
//! wrote in the old one is durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::Mutex;

use crate::backend::IoBackend;
use crate::batch::{Op, WriteBatch};
use crate::codec::{
    RecordCodec, BATCH_HEADER_LEN, ENTRY_HEADER_LEN, KIND_COMPACT, KIND_ENTRIES, KIND_HARD_STATE, KIND_META,
    KIND_REMOVE, KIND_REWRITE, SEGMENT_HEADER_LEN,
};
use crate::error::WriteError;
use crate::hash::IdMap;
use crate::index::{EntryLoc, RecLoc};
use crate::segment::Segment;
use crate::shared::Shared;
use crate::state::SegInfo;
use crate::sync::{Placed, Submission, SyncCtx};
use crate::types::Position;

/// Most bytes of records one automatic compaction pass copies (see
/// `SegmentWriter::after_round`): copying a sparse segment whole took the writer 50 ms
/// per 4 to 16 MiB in the cluster bench, and every round waited behind it; passes of
/// 1 MiB still held it 1 to 20 ms (building the copies, writing them under the page
/// cache's dirty-page throttling), passes of 256 KiB 0.7 to 5.5 ms. An explicit
/// [`crate::Wal::maintain`] still copies whole segments.
const AUTO_REWRITE_BYTES: usize = 256 << 10;

/// A command to the writer thread.
pub(crate) enum Cmd {
    Write(Submission),
    Maintain(crossbeam_channel::Sender<MaintainReport>),
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintainReport {
    /// Segments found dead and handed over to be deleted or recycled.
    pub segments_freed: usize,
    /// Sparse segments whose live records were rewritten to the head of the log.
    pub segments_rewritten: usize,
    /// Bytes of records rewritten.
    pub bytes_rewritten: u64,
}

/// The writing half's state.
pub(crate) struct SegmentWriter {
    shared: Arc<Shared>,
    backend: Box<dyn IoBackend>,
    active: Arc<Segment>,
    pos: u64,
    buf: Vec<u8>,
    /// Locations of the entries encoded in `buf`, for every record of the chunk.
    locs: Vec<EntryLoc>,
    /// Undo log of one batch's validation (reused).
    undo: Vec<(u64, (u64, u64))>,
    /// Projected (first, last) of the groups touched by rounds not yet applied (cleared
    /// when every round is applied).
    view: View,
    /// The last round queued for its sync.
    last_round: u64,
    rx: Receiver<Cmd>,
    carry: Option<Cmd>,
    maintain_due: bool,
    /// Batches carried by the previous group-commit write.
    last_batches: usize,
    /// Gather waits in a row that nobody joined (capped at `MAX_GATHER_BACKOFF`).
    gather_misses: u32,
    /// Rounds that will still skip the gather wait after those misses.
    gather_skip: u32,
}

/// After `k` gather waits in a row that nobody joined, the next `2^k - 1` rounds that
/// would wait do not (k capped here): a lone submitter, e.g. one proposal in flight whose
/// rounds alternate with its commit's hard-state write, stops paying the wait each time,
/// while a wait that gathers a batch resets the backoff.
const MAX_GATHER_BACKOFF: u32 = 6;

/// Projected (first, last) of groups touched by written rounds.
type View = IdMap<(u64, u64)>;

/// Commands taken from the queue for one round.
enum Taken {
    Cmds(Vec<Submission>, Vec<crossbeam_channel::Sender<MaintainReport>>),
    Empty,
    Disconnected,
}

impl SegmentWriter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        backend: Box<dyn IoBackend>,
        active: Arc<Segment>,
        pos: u64,
        rx: Receiver<Cmd>,
    ) -> SegmentWriter {
        SegmentWriter {
            shared,
            backend,
            active,
            pos,
            buf: Vec::with_capacity(1 << 20),
            locs: Vec::new(),
            undo: Vec::new(),
            view: View::default(),
            last_round: 0,
            rx,
            carry: None,
            maintain_due: false,
            last_batches: 0,
            gather_misses: 0,
            gather_skip: 0,
        }
    }

    fn cx(shared: &Shared) -> SyncCtx<'_> {
        SyncCtx { fs: &*shared.fs, state: &shared.state, poisoned: &shared.poisoned }
    }

    /// The writer thread: runs until every sender is gone. It waits for a queued
    /// command without taking it, then takes the writer; a [`crate::Wal::write`] that
    /// took the writer first may have written the command already.
    pub(crate) fn run(writer: Arc<Mutex<SegmentWriter>>, rx: Receiver<Cmd>) {
        loop {
            let mut w = writer.lock();
            let limit = w.shared.cfg.queue_len + 1;
            let (round, took) = match w.take(limit, true) {
                Taken::Cmds(subs, maint) => (w.handle((subs, maint)), true),
                Taken::Empty => (w.last_round, false),
                Taken::Disconnected => return,
            };
            let shared = w.shared.clone();
            drop(w);
            shared.sync.sync_through(round, &Self::cx(&shared));
            if !took {
                // Nothing queued: wait (without the writer) until something is.
                let mut sel = crossbeam_channel::Select::new();
                sel.recv(&rx);
                let _ = sel.ready();
            }
        }
    }

    /// [`crate::Wal::write`] holding the writer: writes what was queued before (in
    /// order: the caller's own earlier submissions are among it), then `own`; returns the
    /// round to sync through.
    pub(crate) fn write_now(&mut self, own: Submission) -> u64 {
        // Commands queued now were queued before this call; later ones may wait.
        let mut left = self.rx.len() + usize::from(self.carry.is_some());
        while left > 0 {
            match self.take(left, false) {
                Taken::Cmds(subs, maint) => {
                    left = left.saturating_sub(subs.len() + maint.len());
                    self.handle((subs, maint));
                }
                _ => break,
            }
        }
        self.write_round(vec![own], false);
        self.after_round();
        self.last_round
    }

    /// Takes the carried command and up to `limit` queued ones (bounded by the write
    /// size); with `gather`, waits a moment for more when the last round carried more.
    fn take(&mut self, limit: usize, gather: bool) -> Taken {
        let max = self.shared.cfg.max_write_bytes;
        let first = match self.carry.take() {
            Some(c) => c,
            None => match self.rx.try_recv() {
                Ok(c) => c,
                Err(TryRecvError::Empty) => return Taken::Empty,
                Err(TryRecvError::Disconnected) => return Taken::Disconnected,
            },
        };
        let mut subs = Vec::new();
        let mut maint = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        // Bounded: at most `limit` commands are taken per round.
        let mut budget = limit.max(1);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Write(s) => {
                    let len = s.batch.encoded_len();
                    if !subs.is_empty() && bytes.saturating_add(len) > max {
                        self.carry = Some(Cmd::Write(s));
                        break;
                    }
                    bytes = bytes.saturating_add(len);
                    subs.push(s);
                }
                Cmd::Maintain(tx) => maint.push(tx),
            }
            budget -= 1;
            if budget == 0 || bytes >= max {
                break;
            }
            next = self.rx.try_recv().ok();
            if gather && next.is_none() && subs.len() < self.last_batches {
                // Submitters of the last write are likely preparing their next
                // batches: give them a moment to join this one, unless recent waits
                // gathered nobody (backoff).
                let last_sync =
                    Duration::from_nanos(self.shared.sync.counters.last_sync_nanos.load(Ordering::Relaxed));
                let wait = self.shared.cfg.group_commit_wait.min(last_sync / 2);
                if self.gather_skip > 0 {
                    self.gather_skip -= 1;
                } else if !wait.is_zero() {
                    self.shared.gather_waits.fetch_add(1, Ordering::Relaxed);
                    next = self.rx.recv_timeout(wait).ok();
                    if next.is_some() {
                        self.gather_misses = 0;
                    } else {
                        self.shared.gather_waits_idle.fetch_add(1, Ordering::Relaxed);
                        self.gather_misses = (self.gather_misses + 1).min(MAX_GATHER_BACKOFF);
                        self.gather_skip = (1 << self.gather_misses) - 1;
                    }
                }
            }
        }
        Taken::Cmds(subs, maint)
    }

    /// Writes the taken submissions and runs the taken compaction requests; returns the
    /// round to sync through.
    fn handle(
        &mut self,
        (subs, maint): (Vec<Submission>, Vec<crossbeam_channel::Sender<MaintainReport>>),
    ) -> u64 {
        if !subs.is_empty() {
            self.last_batches = subs.iter().filter(|s| s.done.is_some()).count();
            self.write_round(subs, false);
        }
        self.after_round();
        for tx in maint {
            let r = self.maintain();
            let _ = tx.send(r);
        }
        self.last_round
    }

    /// Runs the compaction pass a segment change asked for. It copies at most
    /// [`AUTO_REWRITE_BYTES`] and goes on after the next round while a sparse segment is
    /// left (or copies await their sync), so no round waits long behind it.
    fn after_round(&mut self) {
        if self.maintain_due && self.shared.cfg.auto_maintain {
            let (_, more) = self.maintain_pass(Some(AUTO_REWRITE_BYTES));
            self.maintain_due = more;
        }
    }

    /// Makes every written round durable (and applied) before going on.
    fn sync_all(&self) {
        self.shared.sync.sync_through(self.last_round, &Self::cx(&self.shared));
    }

    fn fail_all(subs: Vec<Submission>, err: WriteError) {
        for s in subs {
            if let Some(d) = s.done {
                let _ = d.send(Err(err.clone()));
            }
        }
    }

    /// Checks a batch against the projected logs and, when valid, updates the projection
    /// and fills in compaction marks' last index. One projection lookup per operation:
    /// a group met for the first time is projected from the state (which is what it
    /// would be anyway), and a batch that fails is undone from the undo log.
    fn validate(&mut self, batch: &mut WriteBatch) -> Result<(), WriteError> {
        // Only the sync side changes the state, applying rounds this view already
        // projects: groups not in the view are as the state says.
        let st = self.shared.state.read();
        let view = &mut self.view;
        let undo = &mut self.undo;
        undo.clear();
        let mut failed = None;
        for op in batch.ops.iter_mut() {
            let group = match op {
                Op::Entries { group, .. }
                | Op::Rewrite { group, .. }
                | Op::HardState { group, .. }
                | Op::Meta { group, .. }
                | Op::Compact { group, .. }
                | Op::Remove { group } => *group,
            };
            let slot = view.entry(group).or_insert_with(|| match st.groups.get(&group) {
                Some(g) => (g.first, g.last()),
                None => (1, 0),
            });
            let (f, l) = *slot;
            let nb = match op {
                Op::Entries { first, from, to, .. } => {
                    let end = first.checked_add((*to - *from) as u64 - 1);
                    match end {
                        Some(end) if *first >= f && *first <= l.saturating_add(1) && end < u64::MAX => {
                            (f, end)
                        }
                        _ => {
                            failed =
                                Some(WriteError::NonContiguous { group, index: *first, first: f, last: l });
                            break;
                        }
                    }
                }
                Op::Rewrite { .. } | Op::HardState { .. } | Op::Meta { .. } => (f, l),
                Op::Compact { index, last, .. } => {
                    // The last index must stay representable.
                    *index = (*index).min(u64::MAX - 1);
                    let nf = f.max(*index);
                    let nl = if nf > l.saturating_add(1) { nf - 1 } else { l };
                    if last.is_none() {
                        *last = Some(nl);
                    }
                    (nf, nl)
                }
                Op::Remove { .. } => (1, 0),
            };
            undo.push((group, *slot));
            *slot = nb;
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                // Back to the projection before this batch (entries projected from the
                // state stay: they equal the state).
                for (group, old) in undo.drain(..).rev() {
                    if let Some(b) = view.get_mut(&group) {
                        *b = old;
                    }
                }
                Err(e)
            }
        }
    }

    /// Encodes one submission's operations at the end of `buf`; returns where each went.
    fn encode(&mut self, sub: &Submission, out: &mut Vec<Placed>) -> u32 {
        let seed = self.active.seed;
        let seq = self.active.seq;
        let base = self.pos as usize;
        let data = &sub.batch.data;
        let buf = &mut self.buf;
        let mut count = 0u32;
        for op in &sub.batch.ops {
            count += 1;
            match op {
                Op::Entries { group, first, from, to } | Op::Rewrite { group, first, from, to, .. } => {
                    let (kind, last) = match op {
                        Op::Rewrite { last, .. } => (KIND_REWRITE, Some(*last)),
                        _ => (KIND_ENTRIES, None),
                    };
                    let entries = &sub.batch.entries[*from..*to];
                    let r = RecordCodec::begin_record(buf, *group, kind);
                    if let Some(l) = last {
                        buf.extend_from_slice(&l.to_le_bytes());
                    }
                    buf.extend_from_slice(&first.to_le_bytes());
                    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                    let from_loc = self.locs.len();
                    for e in entries {
                        let off = base + buf.len() + ENTRY_HEADER_LEN;
                        RecordCodec::put_entry(buf, e.term, &data[e.start..e.start + e.len]);
                        self.locs.push(EntryLoc {
                            term: e.term,
                            seg: seq,
                            off: off as u32,
                            len: e.len as u32,
                        });
                    }
                    RecordCodec::finish_record(buf, r, seed);
                    out.push(Placed::Entries {
                        group: *group,
                        first: *first,
                        locs: (from_loc, self.locs.len()),
                        rewrite_last: last,
                    });
                }
                Op::HardState { group, hs } => {
                    let r = RecordCodec::begin_record(buf, *group, KIND_HARD_STATE);
                    buf.extend_from_slice(&hs.term.to_le_bytes());
                    buf.extend_from_slice(&hs.vote.to_le_bytes());
                    buf.extend_from_slice(&hs.commit.to_le_bytes());
                    RecordCodec::finish_record(buf, r, seed);
                    let rec = RecLoc { seg: seq, len: (buf.len() - r) as u32 };
                    out.push(Placed::HardState(*group, *hs, rec));
                }
                Op::Meta { group, start, len } => {
                    let r = RecordCodec::begin_record(buf, *group, KIND_META);
                    buf.extend_from_slice(&data[*start..*start + *len]);
                    RecordCodec::finish_record(buf, r, seed);
                    let rec = RecLoc { seg: seq, len: (buf.len() - r) as u32 };
                    out.push(Placed::Meta(*group, *start, *len, rec));
                }
                Op::Compact { group, index, last } => {
                    // `last` was filled in by `validate` (or given by a rewrite).
                    let last = last.unwrap_or(index.saturating_sub(1));
                    let r = RecordCodec::begin_record(buf, *group, KIND_COMPACT);
                    buf.extend_from_slice(&index.to_le_bytes());
                    buf.extend_from_slice(&last.to_le_bytes());
                    RecordCodec::finish_record(buf, r, seed);
                    let rec = RecLoc { seg: seq, len: (buf.len() - r) as u32 };
                    out.push(Placed::Compact(*group, *index, last, rec));
                }
                Op::Remove { group } => {
                    let r = RecordCodec::begin_record(buf, *group, KIND_REMOVE);
                    RecordCodec::finish_record(buf, r, seed);
                    out.push(Placed::Remove(*group, seq));
                }
            }
        }
        count
    }

    /// Writes a round of submissions: validated, packed into as few writes as segments
    /// allow (normally one), each queued for its sync.
    fn write_round(&mut self, subs: Vec<Submission>, internal: bool) {
        if self.shared.is_poisoned() {
            Self::fail_all(subs, WriteError::Poisoned);
            return;
        }
        if self.shared.sync.idle() {
            // Every written round is applied: the state is the projection.
            self.view.clear();
        }
        let mut chunk: Vec<(Submission, Vec<Placed>)> = Vec::new();
        let mut count = 0u32;
        self.buf.clear();
        let mut begun = false;
        let mut iter = subs.into_iter();
        // Largest batch any segment can take (header, batch header, seal).
        let fits_fresh = (self.active.size as usize)
            .saturating_sub(crate::codec::SEGMENT_HEADER_LEN + 2 * BATCH_HEADER_LEN);
        while let Some(mut sub) = iter.next() {
            let len = sub.batch.encoded_len();
            if len > fits_fresh {
                // Checked before validation, so the projection never includes it.
                if let Some(d) = sub.done.take() {
                    let _ = d.send(Err(WriteError::BatchTooLarge { len, max: fits_fresh }));
                }
                continue;
            }
            if !internal {
                if let Err(e) = self.validate(&mut sub.batch) {
                    if let Some(d) = sub.done.take() {
                        let _ = d.send(Err(e));
                    }
                    continue;
                }
            }
            // Keep room for the seal that ends the segment.
            let room = self.active.size.saturating_sub(self.pos + BATCH_HEADER_LEN as u64) as usize;
            let need = if begun { self.buf.len() } else { BATCH_HEADER_LEN } + len;
            if need > room {
                if begun {
                    if let Err(e) = self.flush(std::mem::take(&mut chunk), count) {
                        let mut rest: Vec<Submission> = vec![sub];
                        rest.extend(iter);
                        Self::fail_all(rest, e);
                        return;
                    }
                    begun = false;
                    count = 0;
                }
                if let Err(e) = self.rotate() {
                    self.poison();
                    let mut rest: Vec<Submission> = vec![sub];
                    rest.extend(iter);
                    Self::fail_all(rest, e);
                    return;
                }
            }
            // Keep room for the seal that ends the segment.
            let room = self.active.size.saturating_sub(self.pos + BATCH_HEADER_LEN as u64) as usize;
            if !begun && BATCH_HEADER_LEN + len > room {
                if let Some(d) = sub.done.take() {
                    let _ = d.send(Err(WriteError::BatchTooLarge {
                        len,
                        max: room.saturating_sub(BATCH_HEADER_LEN),
                    }));
                }
                continue;
            }
            if !begun {
                self.buf.clear();
                self.locs.clear();
                // The position known durable now (an earlier round may be in its sync).
                RecordCodec::begin_batch(&mut self.buf, self.shared.sync.durable());
                begun = true;
            }
            let mut placed = Vec::with_capacity(sub.batch.ops.len());
            count += self.encode(&sub, &mut placed);
            chunk.push((sub, placed));
        }
        if begun && !chunk.is_empty() {
            let _ = self.flush(chunk, count);
        }
    }

    fn poison(&self) {
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// Finishes and writes the batch in `buf`, and queues it for its sync.
    fn flush(&mut self, chunk: Vec<(Submission, Vec<Placed>)>, count: u32) -> Result<(), WriteError> {
        RecordCodec::finish_batch(&mut self.buf, 0, count, self.active.seed);
        let res =
            self.backend.write(&*self.shared.fs, &self.active.path, &self.active.file, self.pos, &self.buf);
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = res {
            tracing::error!("write of {} failed, refusing further writes: {e}", self.active.path.display());
            self.poison();
            let err = WriteError::io(&e);
            Self::fail_all(chunk.into_iter().map(|(s, _)| s).collect(), err);
            return Err(WriteError::Poisoned);
        }
        self.pos += self.buf.len() as u64;
        let locs = std::mem::take(&mut self.locs);
        // The entry cache keeps the written bytes themselves: the buffer goes with the
        // round (trimmed to its length, which glibc does in place) and a new one, sized
        // for a round like this one, takes its place. A round larger than the whole cache
        // would not be kept: the buffer stays.
        let len = self.buf.len();
        let written = (len <= self.shared.cfg.cache_bytes).then(|| {
            let mut w = std::mem::replace(&mut self.buf, Vec::with_capacity(len));
            w.shrink_to_fit();
            Arc::new(w)
        });
        self.last_round = self.shared.sync.push(self.active.clone(), self.pos, chunk, locs, written);
        Ok(())
    }

    /// Moves to the next segment: a spare prepared off the write path, or (when the
    /// preallocator is behind for long) one created here.
    fn rotate(&mut self) -> Result<(), WriteError> {
        // What was written in this segment becomes durable (and acknowledged) first.
        self.sync_all();
        if self.shared.is_poisoned() {
            return Err(WriteError::Poisoned);
        }
        // Seal the segment: recovery goes on into the next existing segment only after a
        // seal, so a segment that ends early without one is a torn tail or corruption.
        let seal = RecordCodec::encode_seal(self.shared.sync.durable(), self.active.seed);
        let fs = &*self.shared.fs;
        self.backend
            .write(fs, &self.active.path, &self.active.file, self.pos, &seal)
            .and_then(|_| self.shared.sync.sync_seal(&Self::cx(&self.shared), &self.active))
            .map_err(|e| WriteError::io(&e))?;
        self.pos += seal.len() as u64;
        if let Some(info) = self.shared.state.write().segs.get_mut(&self.active.seq) {
            info.written = self.pos;
        }
        let mut spare = None;
        // Bounded wait: 200 x 50 ms.
        for _ in 0..200 {
            spare = self.pop_spare(&mut self.shared.spares.lock());
            if spare.is_some() {
                break;
            }
            if self.shared.prealloc_failing.load(Ordering::Acquire) {
                break;
            }
            self.shared.kick();
            let mut q = self.shared.spares.lock();
            if q.is_empty() {
                let _ = self.shared.spares_cv.wait_for(&mut q, Duration::from_millis(50));
            }
        }
        let seg = match spare {
            Some(s) => s,
            None => {
                // A last look at the queue and the new number under one lock: the
                // preallocator publishes a spare under it only while no number was taken
                // after the spare's, so none it finishes later can land below this segment.
                let taken = {
                    let mut q = self.shared.spares.lock();
                    self.pop_spare(&mut q).ok_or_else(|| self.shared.next_seq.fetch_add(1, Ordering::SeqCst))
                };
                match taken {
                    Ok(s) => s,
                    Err(seq) => {
                        tracing::warn!("no spare segment ready, creating one on the write path");
                        let (fs, cfg) = (&*self.shared.fs, &self.shared.cfg);
                        let seg = Segment::create(fs, &cfg.dir, seq, cfg.segment_size, self.shared.wal_id)
                            .map_err(|e| WriteError::io(&e))?;
                        self.shared.created.fetch_add(1, Ordering::Relaxed);
                        seg
                    }
                }
            }
        };
        let seg = Arc::new(seg);
        {
            let mut st = self.shared.state.write();
            st.active = seg.seq;
            st.segs.insert(seg.seq, SegInfo::new(seg.clone(), SEGMENT_HEADER_LEN as u64));
        }
        self.active = seg;
        self.pos = SEGMENT_HEADER_LEN as u64;
        self.shared.sync.set_durable(Position { seq: self.active.seq, offset: self.pos });
        self.maintain_due = true;
        self.shared.kick();
        Ok(())
    }

    /// The first spare of the queue that comes after the active segment; spares overtaken
    /// by a segment created here while the preallocator was behind (which would break the
    /// log's order) are deleted. Bounded by the queue's length.
    fn pop_spare(&self, q: &mut std::collections::VecDeque<Segment>) -> Option<Segment> {
        while let Some(s) = q.pop_front() {
            if s.seq > self.active.seq {
                return Some(s);
            }
            let fs = &*self.shared.fs;
            let _ = fs.remove(&s.path).and_then(|_| fs.sync_dir(&self.shared.cfg.dir));
        }
        None
    }

    /// One compaction pass: rewrite sparse old segments, then retire dead ones.
    pub(crate) fn maintain(&mut self) -> MaintainReport {
        self.maintain_pass(None).0
    }

    /// A compaction pass copying at most about `budget` bytes (whole groups: at least
    /// one); with the second value true when a sparse segment is left to copy.
    fn maintain_pass(&mut self, budget: Option<usize>) -> (MaintainReport, bool) {
        let mut report = MaintainReport::default();
        let mut more = false;
        // The state must hold every written round before it is read. (The rounds' own
        // sync: their submitters would wait for it all the same, so it is not timed as
        // the pass's.)
        self.sync_all();
        let started = std::time::Instant::now();
        let ratio = self.shared.cfg.rewrite_ratio;
        if ratio > 0.0 && !self.shared.is_poisoned() {
            let candidates: Vec<u64> = {
                let st = self.shared.state.read();
                st.segs
                    .iter()
                    .filter(|(seq, s)| {
                        **seq != st.active
                            && !s.retired
                            && s.live > 0
                            && (s.live as f64)
                                < ratio * (s.written.saturating_sub(SEGMENT_HEADER_LEN as u64)) as f64
                            && !st.has_live_tombstone(**seq)
                    })
                    .map(|(seq, _)| *seq)
                    .take(4)
                    .collect()
            };
            let mut left = budget;
            for seq in candidates {
                if left == Some(0) {
                    more = true;
                    break;
                }
                let (batches, whole) = self.rewrite_batches(seq, left);
                let bytes: usize = batches.iter().map(|b| b.encoded_len()).sum();
                if let Some(l) = left.as_mut() {
                    *l = l.saturating_sub(bytes);
                }
                let subs = batches
                    .into_iter()
                    .map(|batch| Submission { batch, done: None, on_durable: None })
                    .collect();
                self.write_round(subs, true);
                if budget.is_some() {
                    // The copies become durable with the next round's sync, which the
                    // next pass waits for before it retires the segment: no sync of
                    // their own here. (Nothing copied: nothing to wait for.)
                    more |= bytes > 0;
                } else {
                    self.sync_all();
                }
                // Crash tests: live records copied to the head, the old segment not retired.
                fail::fail_point!("wal::rewrite_mid");
                if self.shared.is_poisoned() {
                    break;
                }
                report.bytes_rewritten += bytes as u64;
                if !whole {
                    // Its other groups are copied by the next passes.
                    more = true;
                    break;
                }
                report.segments_rewritten += 1;
            }
        }
        // Nothing is retired once the log is poisoned: the rounds applied to the state
        // may not be durable (a failed sync), so a segment they made dead may hold the
        // only durable copy of its records. (The preallocator checks it again, and frees
        // a segment only once the log is durable past its retirement.)
        if !self.shared.is_poisoned() {
            let mut st = self.shared.state.write();
            let applied_to = st.applied_to;
            let seqs: Vec<u64> = st.segs.keys().copied().collect();
            for seq in seqs {
                let dead = st.is_dead(seq);
                if let Some(s) = st.segs.get_mut(&seq) {
                    if dead && !s.retired {
                        s.retired = true;
                        s.retired_at = applied_to;
                        report.segments_freed += 1;
                    }
                }
            }
        }
        if report.segments_freed > 0 {
            self.shared.kick();
        }
        let c = &self.shared.compaction;
        c.passes.fetch_add(1, Ordering::Relaxed);
        c.bytes_rewritten.fetch_add(report.bytes_rewritten, Ordering::Relaxed);
        c.segments_freed.fetch_add(report.segments_freed as u64, Ordering::Relaxed);
        c.latency.record(started.elapsed());
        (report, more)
    }

    /// Batches that copy the live records of segment `seq` to the head of the log, group
    /// by group, stopping after the group that reaches `budget` bytes; with whether they
    /// cover every group live there.
    fn rewrite_batches(&self, seq: u64, budget: Option<usize>) -> (Vec<WriteBatch>, bool) {
        let limit = (self.shared.cfg.max_write_bytes / 2).max(1);
        let st = self.shared.state.read();
        let info = match st.segs.get(&seq) {
            Some(i) => i,
            None => return (Vec::new(), true),
        };
        let map = match &info.seg {
            Some(s) => s.bytes(),
            None => return (Vec::new(), true),
        };
        let mut groups: Vec<u64> = info.groups_live.keys().copied().collect();
        groups.sort_unstable();
        let mut out = Vec::new();
        let mut batch = WriteBatch::new();
        // Bytes of the batches already full.
        let mut pushed = 0usize;
        let mut whole = true;
        for g in groups {
            if budget.is_some_and(|b| pushed + batch.encoded_len() >= b) {
                whole = false;
                break;
            }
            let gi = match st.groups.get(&g) {
                Some(gi) => gi,
                None => continue,
            };
            let last = gi.last();
            let mut run: Vec<(u64, &[u8])> = Vec::new();
            let mut run_first = 0u64;
            let mut run_bytes = 0usize;
            for (i, loc) in gi.entries.iter().enumerate() {
                let index = gi.first + i as u64;
                let here = loc.seg == seq;
                let data =
                    if here { map.get(loc.off as usize..loc.off as usize + loc.len as usize) } else { None };
                match data {
                    Some(d) if run_bytes + d.len() <= limit || run.is_empty() => {
                        if run.is_empty() {
                            run_first = index;
                        }
                        run_bytes += d.len() + ENTRY_HEADER_LEN;
                        run.push((loc.term, d));
                    }
                    other => {
                        if !run.is_empty() {
                            batch.add_rewrite(g, last, run_first, std::mem::take(&mut run));
                            run_bytes = 0;
                            if batch.encoded_len() >= limit {
                                pushed += batch.encoded_len();
                                out.push(std::mem::take(&mut batch));
                            }
                        }
                        if let Some(d) = other {
                            run_first = index;
                            run_bytes = d.len() + ENTRY_HEADER_LEN;
                            run.push((loc.term, d));
                        }
                    }
                }
            }
            if !run.is_empty() {
                batch.add_rewrite(g, last, run_first, run);
            }
            if let Some((hs, rec)) = &gi.hard_state {
                if rec.seg == seq {
                    batch.set_hard_state(g, *hs);
                }
            }
            if let Some((m, rec)) = &gi.meta {
                if rec.seg == seq {
                    batch.set_meta(g, m);
                }
            }
            if let Some(rec) = &gi.compact {
                if rec.seg == seq {
                    batch.add_compact_with_last(g, gi.first, last);
                }
            }
            if batch.encoded_len() >= limit {
                pushed += batch.encoded_len();
                out.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
        (out, whole)
    }
}
