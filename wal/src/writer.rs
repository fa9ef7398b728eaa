//! [`SegmentWriter`]: the one thread that writes the log. It merges every batch queued by
//! every submitter into one write and one data sync (group commit), validates them against
//! the groups' logs, places them in segments, applies them to the in-memory state once
//! durable, and only then tells each submitter. It also runs compaction: rewriting sparse
//! segments and retiring dead ones.
//!
//! Owns: the active segment, the write position, the durable position, the encoding
//! buffer, and the poison rule: after any failed write or sync nothing more is written.
//! Never: reads from disk on the write path, creates segments while a spare is available,
//! or deletes files (the preallocator frees retired segments off the write path).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

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
use crate::state::{Applied, LogState, SegInfo};
use crate::types::Position;

/// A batch waiting for the writer.
pub(crate) struct Submission {
    pub batch: WriteBatch,
    /// Told the outcome (None for the writer's own rewrite batches).
    pub done: Option<Sender<Result<(), WriteError>>>,
}

/// A command to the writer thread.
pub(crate) enum Cmd {
    Write(Submission),
    Maintain(Sender<MaintainReport>),
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

/// Where an encoded operation's records went.
enum Placed {
    Entries {
        group: u64,
        first: u64,
        locs: Vec<EntryLoc>,
        rewrite_last: Option<u64>,
        /// Entries `from..to` of the submission, whose payloads are cached.
        payloads: Option<(usize, usize)>,
    },
    HardState(u64, crate::types::HardState, RecLoc),
    Meta(u64, usize, usize, RecLoc),
    Compact(u64, u64, u64, RecLoc),
    Remove(u64, u64),
}

/// The writer thread's state.
pub(crate) struct SegmentWriter {
    shared: Arc<Shared>,
    backend: Box<dyn IoBackend>,
    active: Arc<Segment>,
    pos: u64,
    durable: Position,
    buf: Vec<u8>,
    rx: Receiver<Cmd>,
    carry: Option<Cmd>,
    maintain_due: bool,
    /// Batches carried by the previous group-commit write.
    last_batches: usize,
    /// Duration of the previous write + sync.
    last_sync: Duration,
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

/// Projected (first, last) of groups touched by the batches of this round.
type View = IdMap<(u64, u64)>;

impl SegmentWriter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        backend: Box<dyn IoBackend>,
        active: Arc<Segment>,
        pos: u64,
        durable: Position,
        rx: Receiver<Cmd>,
    ) -> SegmentWriter {
        SegmentWriter {
            shared,
            backend,
            active,
            pos,
            durable,
            buf: Vec::with_capacity(1 << 20),
            rx,
            carry: None,
            maintain_due: false,
            last_batches: 0,
            last_sync: Duration::ZERO,
            gather_misses: 0,
            gather_skip: 0,
        }
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self) {
        let max = self.shared.cfg.max_write_bytes;
        loop {
            let first = match self.carry.take() {
                Some(c) => c,
                None => match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => return,
                },
            };
            let mut subs = Vec::new();
            let mut maint = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            // Bounded: at most queue_len + 1 commands are taken per round.
            let mut budget = self.shared.cfg.queue_len + 1;
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
                if next.is_none() && subs.len() < self.last_batches {
                    // Submitters of the last write are likely preparing their next
                    // batches: give them a moment to join this one, unless recent waits
                    // gathered nobody (backoff).
                    let wait = self.shared.cfg.group_commit_wait.min(self.last_sync / 2);
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
            if !subs.is_empty() {
                self.write_round(subs, false);
            }
            if self.maintain_due && self.shared.cfg.auto_maintain {
                self.maintain_due = false;
                let _ = self.maintain();
            }
            for tx in maint {
                let r = self.maintain();
                let _ = tx.send(r);
            }
        }
    }

    fn fail_all(subs: Vec<Submission>, err: WriteError) {
        for s in subs {
            if let Some(d) = s.done {
                let _ = d.send(Err(err.clone()));
            }
        }
    }

    fn bounds(st: &LogState, view: &View, group: u64) -> (u64, u64) {
        if let Some(b) = view.get(&group) {
            return *b;
        }
        match st.groups.get(&group) {
            Some(g) => (g.first, g.last()),
            None => (1, 0),
        }
    }

    /// Checks a batch against the projected logs and, when valid, updates the projection
    /// and fills in compaction marks' last index.
    fn validate(&self, batch: &mut WriteBatch, view: &mut View) -> Result<(), WriteError> {
        // The writer is the only thread that changes the state: holding the read lock
        // here blocks nobody but other writers of it (none).
        let st = self.shared.state.read();
        let mut local: View = IdMap::default();
        for op in batch.ops.iter_mut() {
            let group = match op {
                Op::Entries { group, .. }
                | Op::Rewrite { group, .. }
                | Op::HardState { group, .. }
                | Op::Meta { group, .. }
                | Op::Compact { group, .. }
                | Op::Remove { group } => *group,
            };
            let (f, l) = match local.get(&group) {
                Some(b) => *b,
                None => Self::bounds(&st, view, group),
            };
            let nb = match op {
                Op::Entries { first, from, to, .. } => {
                    let end = first.checked_add((*to - *from) as u64 - 1);
                    match end {
                        Some(end) if *first >= f && *first <= l.saturating_add(1) && end < u64::MAX => {
                            (f, end)
                        }
                        _ => {
                            return Err(WriteError::NonContiguous { group, index: *first, first: f, last: l })
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
            local.insert(group, nb);
        }
        view.extend(local);
        Ok(())
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
                    let mut locs = Vec::with_capacity(entries.len());
                    for e in entries {
                        let off = base + buf.len() + ENTRY_HEADER_LEN;
                        RecordCodec::put_entry(buf, e.term, &data[e.start..e.start + e.len]);
                        locs.push(EntryLoc { term: e.term, seg: seq, off: off as u32, len: e.len as u32 });
                    }
                    RecordCodec::finish_record(buf, r, seed);
                    out.push(Placed::Entries {
                        group: *group,
                        first: *first,
                        locs,
                        rewrite_last: last,
                        payloads: if last.is_none() { Some((*from, *to)) } else { None },
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
    /// allow (normally one), each made durable with one sync.
    fn write_round(&mut self, subs: Vec<Submission>, internal: bool) {
        if self.shared.is_poisoned() {
            Self::fail_all(subs, WriteError::Poisoned);
            return;
        }
        let mut view = View::default();
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
                if let Err(e) = self.validate(&mut sub.batch, &mut view) {
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
                    Self::fail_all(rest, WriteError::io(&e));
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
                RecordCodec::begin_batch(&mut self.buf, self.durable);
                begun = true;
            }
            let mut placed = Vec::new();
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

    /// Finishes, writes and syncs the batch in `buf`, applies it, tells the submitters.
    fn flush(&mut self, mut chunk: Vec<(Submission, Vec<Placed>)>, count: u32) -> Result<(), WriteError> {
        RecordCodec::finish_batch(&mut self.buf, 0, count, self.active.seed);
        let started = Instant::now();
        let res = self.backend.write_and_sync(
            &*self.shared.fs,
            &self.active.path,
            &self.active.file,
            self.pos,
            &self.buf,
        );
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = res {
            tracing::error!(
                "write/sync of {} failed, refusing further writes: {e}",
                self.active.path.display()
            );
            self.poison();
            let err = WriteError::io(&e);
            Self::fail_all(chunk.into_iter().map(|(s, _)| s).collect(), err);
            return Err(WriteError::Poisoned);
        }
        self.last_sync = started.elapsed();
        let nanos = u64::try_from(self.last_sync.as_nanos()).unwrap_or(u64::MAX);
        self.shared.sync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.shared.sync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        self.shared.sync_latency.record_nanos(nanos);
        self.last_batches = chunk.iter().filter(|(s, _)| s.done.is_some()).count();
        self.pos += self.buf.len() as u64;
        self.durable = Position { seq: self.active.seq, offset: self.pos };
        {
            let mut st = self.shared.state.write();
            if let Some(info) = st.segs.get_mut(&self.active.seq) {
                info.written = self.pos;
            }
            for (sub, placed) in chunk.iter_mut() {
                let data = &sub.batch.data;
                let erefs = &sub.batch.entries;
                for p in placed.drain(..) {
                    let op = match p {
                        Placed::Entries { group, first, locs, rewrite_last, payloads } => Applied::Entries {
                            group,
                            first,
                            locs,
                            rewrite_last,
                            payloads: payloads.map(|(from, to)| (data, &erefs[from..to])),
                        },
                        Placed::HardState(g, hs, rec) => Applied::HardState { group: g, hs, rec },
                        Placed::Meta(g, s, l, rec) => Applied::Meta { group: g, data: &data[s..s + l], rec },
                        Placed::Compact(g, index, last, rec) => {
                            Applied::Compact { group: g, index, last, rec }
                        }
                        Placed::Remove(g, seg) => Applied::Remove { group: g, seg },
                    };
                    st.apply(op);
                }
            }
        }
        let n = chunk.len() as u64;
        for (sub, _) in chunk {
            if let Some(d) = sub.done {
                let _ = d.send(Ok(()));
            }
        }
        self.shared.batches.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Moves to the next segment: a spare prepared off the write path, or (when the
    /// preallocator is behind for long) one created here.
    fn rotate(&mut self) -> std::io::Result<()> {
        // Seal the segment: recovery goes on into the next existing segment only after a
        // seal, so a segment that ends early without one is a torn tail or corruption.
        let seal = RecordCodec::encode_seal(self.durable, self.active.seed);
        self.backend.write_and_sync(
            &*self.shared.fs,
            &self.active.path,
            &self.active.file,
            self.pos,
            &seal,
        )?;
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
                        Segment::create(fs, &cfg.dir, seq, cfg.segment_size, self.shared.wal_id)?
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
        self.durable = Position { seq: self.active.seq, offset: self.pos };
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
        let mut report = MaintainReport::default();
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
            for seq in candidates {
                let batches = self.rewrite_batches(seq);
                let bytes: usize = batches.iter().map(|b| b.encoded_len()).sum();
                let subs = batches.into_iter().map(|batch| Submission { batch, done: None }).collect();
                self.write_round(subs, true);
                // Crash tests: live records copied to the head, the old segment not retired.
                fail::fail_point!("wal::rewrite_mid");
                if self.shared.is_poisoned() {
                    break;
                }
                report.segments_rewritten += 1;
                report.bytes_rewritten += bytes as u64;
            }
        }
        {
            let mut st = self.shared.state.write();
            let seqs: Vec<u64> = st.segs.keys().copied().collect();
            for seq in seqs {
                let dead = st.is_dead(seq);
                if let Some(s) = st.segs.get_mut(&seq) {
                    if dead && !s.retired {
                        s.retired = true;
                        report.segments_freed += 1;
                    }
                }
            }
        }
        if report.segments_freed > 0 {
            self.shared.kick();
        }
        report
    }

    /// Batches that copy every live record of segment `seq` to the head of the log.
    fn rewrite_batches(&self, seq: u64) -> Vec<WriteBatch> {
        let limit = (self.shared.cfg.max_write_bytes / 2).max(1);
        let st = self.shared.state.read();
        let info = match st.segs.get(&seq) {
            Some(i) => i,
            None => return Vec::new(),
        };
        let map = match &info.seg {
            Some(s) => s.bytes(),
            None => return Vec::new(),
        };
        let mut groups: Vec<u64> = info.groups_live.keys().copied().collect();
        groups.sort_unstable();
        let mut out = Vec::new();
        let mut batch = WriteBatch::new();
        for g in groups {
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
                out.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
        out
    }
}
