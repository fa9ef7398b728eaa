//! [`Recovery`]: rebuilds the log state from the segment files at open.
//!
//! Owns: locking the directory (before anything in it is read), checking that every
//! segment belongs to this log (its header's WAL id), the scan order, the torn-tail rule,
//! and cleaning up what a crash left (half-made spares, skipped spares, a torn tail,
//! unacknowledged batches written past it). Verification of headers and records is the
//! `reader`'s. Never: skips a bad record silently; writes anything but that cleanup.
//!
//! # The torn-tail rule
//! Segments are read in sequence order, batches one after another from each segment's
//! header. The writer may write a batch while the ones before it are being synced (each
//! is acknowledged only after a sync that started after its write succeeded), and before
//! moving to a new segment it syncs everything written in the old one, then writes and
//! syncs a *seal* batch at its end. A seal ends a segment cleanly and the scan goes on in
//! the next existing segment (segments between may have been freed). Each batch header
//! records the log position known durable when it was written (its own start, or the
//! end of the last synced batch when batches before it were still being synced). The
//! scan stops at the first position `X`
//! where no valid batch starts, before any seal. `X` is the end of the log, unless a
//! valid batch found later (at any byte offset of the rest of that segment, or anywhere
//! in later segments) claims a durable position past `X`:
//! - if one does, the data at `X` had been synced before it went bad: the open fails
//!   with [`OpenError::Corrupt`] naming the file and offset;
//! - otherwise `X` is a torn tail (a batch is all or nothing): valid batches after it were
//!   never acknowledged; those in `X`'s segment are zeroed and later segments holding any
//!   are deleted, so none can come back once new batches are written from `X`.
//!
//! When every segment is sealed, the log continues in a new segment.
//! A corrupt final batch with nothing after it is therefore a torn tail.
//!
//! # Skipped spares
//! The writer moves to a segment only after sealing the one before, so a valid batch
//! claiming a durable position in a later segment proves every earlier segment the writer
//! used was sealed. An unsealed segment with no valid batch anywhere, followed by a
//! segment holding such a batch, was therefore never used: it is a spare the writer
//! skipped (it created a later segment itself while the preallocator was slow or failing,
//! and the spare landed afterwards, or a crash hit before the preallocator deleted it). It
//! is deleted (then the directory synced) and the scan goes on with the next segment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{datasync, pwrite_all};
use crate::codec::{HeaderError, Record, RecordBody, RecordCodec, SEGMENT_HEADER_LEN};
use crate::config::WalConfig;
use crate::error::OpenError;
use crate::fs::FileSystem;
use crate::index::{EntryLoc, RecLoc};
use crate::lock::{DirLock, LockError};
use crate::reader::{Found, SegmentReader};
use crate::segment::{new_wal_id, parse_segment_name, Segment, PREALLOC_SUFFIX, RECYCLE_SUFFIX};
use crate::state::{Applied, LogState, SegInfo};
use crate::types::Position;

/// The result of recovery.
pub(crate) struct Recovered {
    pub state: LogState,
    pub active: Arc<Segment>,
    pub pos: u64,
    pub durable: Position,
    pub spares: Vec<Segment>,
    pub next_seq: u64,
    /// Bytes of valid batches scanned.
    pub scanned: u64,
    /// Bytes fed to checksums (linear in the log's size: see `reader`).
    pub checked: u64,
    /// The log's id.
    pub wal_id: u64,
    /// The lock on the directory, held for the log's life.
    pub lock: DirLock,
}

/// Recovery of a log directory.
pub(crate) struct Recovery<'a> {
    cfg: &'a WalConfig,
    fs: &'a dyn FileSystem,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// Every valid batch starting at any offset in `[from, size)` of `seg`; the bytes fed to
/// checksums are added to `work`.
fn scan_valid(seg: &Segment, from: u64, work: &mut u64) -> Result<Vec<Found>, OpenError> {
    let r = SegmentReader::new(seg.bytes(), seg.size, seg.seed);
    let found = r.scan_valid(from);
    *work += r.work();
    found.map_err(|(offset, version)| OpenError::NewerFormat { file: seg.path.clone(), offset, version })
}

/// Converts a verified record of segment `seg` into the operation it applies.
pub(crate) fn to_applied<'a>(seg: &'a Segment, r: &Record) -> Option<Applied<'a>> {
    let seq = seg.seq;
    let locs = |entries: &[(u64, u32, u32)]| {
        std::borrow::Cow::Owned(
            entries.iter().map(|&(term, off, len)| EntryLoc { term, seg: seq, off, len }).collect::<Vec<_>>(),
        )
    };
    let rec = RecLoc { seg: seq, len: r.len };
    Some(match &r.body {
        RecordBody::Entries { first, entries } => {
            Applied::Entries { group: r.group, first: *first, locs: locs(entries), rewrite_last: None }
        }
        RecordBody::Rewrite { last, first, entries } => {
            Applied::Entries { group: r.group, first: *first, locs: locs(entries), rewrite_last: Some(*last) }
        }
        RecordBody::HardState(hs) => Applied::HardState { group: r.group, hs: *hs, rec },
        RecordBody::Meta(off, len) => Applied::Meta {
            group: r.group,
            data: seg.bytes().get(*off as usize..(*off as usize + *len as usize))?,
            rec,
        },
        RecordBody::Compact { index, last } => {
            Applied::Compact { group: r.group, index: *index, last: *last, rec }
        }
        RecordBody::Remove => Applied::Remove { group: r.group, seg: seq },
    })
}

impl<'a> Recovery<'a> {
    pub(crate) fn new(cfg: &'a WalConfig, fs: &'a dyn FileSystem) -> Recovery<'a> {
        Recovery { cfg, fs }
    }

    fn corrupt(file: &Path, offset: u64, reason: impl Into<String>) -> OpenError {
        OpenError::Corrupt { file: file.to_path_buf(), offset, reason: reason.into() }
    }

    /// The log's id: the one most segments carry (the lowest-numbered segment's on a tie).
    /// A segment carrying another is refused, naming the first such file: it was copied
    /// from another log, and reading it would mix two logs' records.
    fn check_wal_id(segs: &[Arc<Segment>]) -> Result<u64, OpenError> {
        let mut counts: Vec<(u64, usize)> = Vec::new();
        for s in segs {
            match counts.iter_mut().find(|(id, _)| *id == s.wal_id) {
                Some(c) => c.1 += 1,
                None => counts.push((s.wal_id, 1)),
            }
        }
        // First-seen order is segment order, and only a strictly larger count replaces
        // the best: a tie keeps the lowest-numbered segment's id.
        let mut best = (0u64, 0usize);
        for &(id, n) in &counts {
            if n > best.1 {
                best = (id, n);
            }
        }
        match segs.iter().find(|s| s.wal_id != best.0) {
            Some(s) => {
                Err(OpenError::ForeignSegment { file: s.path.clone(), wal_id: s.wal_id, expected: best.0 })
            }
            None => Ok(best.0),
        }
    }

    /// Whether segment `i`, unsealed with no valid batch at its header, is a skipped spare:
    /// no valid batch anywhere in it, and one in a later segment claiming a durable
    /// position past it (see the module documentation). `valid` caches each segment's
    /// valid batches.
    fn skipped_spare(
        segs: &[Arc<Segment>],
        valid: &mut [Option<Vec<Found>>],
        i: usize,
        work: &mut u64,
    ) -> Result<bool, OpenError> {
        let seq = segs[i].seq;
        let mut found = |j: usize, pred: &dyn Fn(&Found) -> bool| -> Result<bool, OpenError> {
            if valid[j].is_none() {
                valid[j] = Some(scan_valid(&segs[j], SEGMENT_HEADER_LEN as u64, work)?);
            }
            Ok(valid[j].as_ref().is_some_and(|f| f.iter().any(pred)))
        };
        if found(i, &|_| true)? {
            return Ok(false);
        }
        for j in i + 1..segs.len() {
            if found(j, &|&(_, _, durable)| durable.seq > seq)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Recovers the log in the configured directory (creating an empty one if needed).
    pub(crate) fn run(&self) -> Result<Recovered, OpenError> {
        let dir = &self.cfg.dir;
        let fs = self.fs;
        // Directories about to be created: each one's entry in its parent is synced, so
        // that a crash cannot lose the log directory itself after writes were acknowledged.
        let created: Vec<&Path> =
            dir.ancestors().take_while(|p| !p.as_os_str().is_empty() && !p.exists()).collect();
        fs.create_dir_all(dir).map_err(io_err(dir))?;
        for d in &created {
            let parent = d.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            fs.sync_dir(parent).map_err(io_err(parent))?;
        }
        // Before anything in the directory is read or cleaned up: one holder at a time.
        let lock = DirLock::acquire(dir).map_err(|e| match e {
            LockError::Held { dir, holder } => OpenError::Locked { dir, holder },
            LockError::Io { dir, source } => OpenError::Io { path: dir, source },
        })?;
        let names = fs.list(dir).map_err(io_err(dir))?;
        let mut seqs = Vec::new();
        let mut strays = false;
        for n in &names {
            if n.ends_with(PREALLOC_SUFFIX) || n.ends_with(RECYCLE_SUFFIX) {
                let p = dir.join(n);
                fs.remove(&p).map_err(io_err(&p))?;
                strays = true;
            } else if let Some(seq) = parse_segment_name(n) {
                // The WAL never gets near such numbers; they would overflow `next_seq`.
                if seq > u64::MAX / 2 {
                    return Err(Self::corrupt(&dir.join(n), 0, "segment sequence number out of range"));
                }
                seqs.push(seq);
            }
        }
        if strays {
            fs.sync_dir(dir).map_err(io_err(dir))?;
        }
        seqs.sort_unstable();
        let mut state = LogState::new(self.cfg.cache_bytes);
        if seqs.is_empty() {
            let wal_id = new_wal_id().map_err(io_err(dir))?;
            let seg = Segment::create(fs, dir, 1, self.cfg.segment_size, wal_id).map_err(io_err(dir))?;
            let seg = Arc::new(seg);
            state.active = 1;
            state.segs.insert(1, SegInfo::new(seg.clone(), SEGMENT_HEADER_LEN as u64));
            return Ok(Recovered {
                state,
                active: seg,
                pos: SEGMENT_HEADER_LEN as u64,
                durable: Position { seq: 1, offset: SEGMENT_HEADER_LEN as u64 },
                spares: Vec::new(),
                next_seq: 2,
                scanned: 0,
                checked: 0,
                wal_id,
                lock,
            });
        }
        let mut segs: Vec<Arc<Segment>> = Vec::with_capacity(seqs.len());
        for &seq in &seqs {
            let path: PathBuf = dir.join(crate::segment::segment_name(seq));
            let (file, map) = Segment::open(fs, &path).map_err(io_err(&path))?;
            let h = match RecordCodec::decode_segment_header(&map) {
                Ok(h) => h,
                Err(HeaderError::NewerVersion(version)) => {
                    return Err(OpenError::NewerFormat { file: path, offset: 0, version })
                }
                Err(HeaderError::OlderVersion(version)) => {
                    return Err(OpenError::UnsupportedFormat { file: path, version })
                }
                Err(e) => return Err(Self::corrupt(&path, 0, format!("segment header: {e}"))),
            };
            if h.seq != seq {
                return Err(Self::corrupt(
                    &path,
                    0,
                    format!("header names segment {} in file of segment {seq}", h.seq),
                ));
            }
            segs.push(Arc::new(Segment::from_parts(path, file, map, &h)));
        }
        // Before anything is scanned or cleaned up: every segment must be this log's.
        let wal_id = Self::check_wal_id(&segs)?;
        // Sequential scan: batches in order; a seal ends a segment cleanly.
        let mut scanned = 0u64;
        let mut work = 0u64;
        let mut tail = None;
        // Valid batches anywhere after the header, per segment, once looked for.
        let mut valid: Vec<Option<Vec<Found>>> = vec![None; segs.len()];
        let mut skipped = Vec::new();
        let mut i = 0;
        // Bounded: each turn moves on (`i += 1`), removes a segment, or breaks.
        while i < segs.len() {
            let seg = segs[i].clone();
            state.segs.insert(seg.seq, SegInfo::new(seg.clone(), SEGMENT_HEADER_LEN as u64));
            let mut off = SEGMENT_HEADER_LEN as u64;
            let mut sealed = false;
            let reader = SegmentReader::new(seg.bytes(), seg.size, seg.seed);
            // Bounded: each turn moves `off` forward by a batch, or breaks.
            loop {
                match reader.batch(off) {
                    Ok(b) => {
                        let (len, recs, seal) = (b.len, b.records, b.sealed);
                        for r in &recs {
                            if let Some(op) = to_applied(&seg, r) {
                                state.apply(op);
                            }
                        }
                        off += len;
                        scanned += len;
                        if let Some(s) = state.segs.get_mut(&seg.seq) {
                            s.written = off;
                        }
                        if seal {
                            sealed = true;
                            break;
                        }
                    }
                    Err(HeaderError::NewerVersion(version)) => {
                        return Err(OpenError::NewerFormat { file: seg.path.clone(), offset: off, version })
                    }
                    Err(_) => break,
                }
            }
            work += reader.work();
            if !sealed {
                if off == SEGMENT_HEADER_LEN as u64 && Self::skipped_spare(&segs, &mut valid, i, &mut work)? {
                    tracing::warn!("deleting {} (a spare the writer skipped)", seg.path.display());
                    state.segs.remove(&seg.seq);
                    seqs.retain(|s| *s != seg.seq);
                    skipped.push(seg.path.clone());
                    segs.remove(i);
                    valid.remove(i);
                    continue;
                }
                tail = Some((i, off));
                break;
            }
            i += 1;
        }
        if !skipped.is_empty() {
            for p in &skipped {
                fs.remove(p).map_err(io_err(p))?;
            }
            fs.sync_dir(dir).map_err(io_err(dir))?;
        }
        let tail = match tail {
            Some(t) => t,
            None => {
                // Every segment is sealed: the log continues in a new one.
                let seq = seqs.last().copied().unwrap_or(0) + 1;
                let seg = Arc::new(
                    Segment::create(fs, dir, seq, self.cfg.segment_size, wal_id).map_err(io_err(dir))?,
                );
                state.segs.insert(seq, SegInfo::new(seg.clone(), SEGMENT_HEADER_LEN as u64));
                seqs.push(seq);
                segs.push(seg);
                (segs.len() - 1, SEGMENT_HEADER_LEN as u64)
            }
        };
        let (ti, toff) = tail;
        let x = Position { seq: segs[ti].seq, offset: toff };
        // The torn-tail rule: look at every valid batch after X.
        let mut zero_to = toff;
        let mut doomed = Vec::new();
        for (j, seg) in segs.iter().enumerate().skip(ti) {
            // Where the sequential scan found no batch at the header, a valid batch
            // starting there is impossible: the scan from there is the scan from `toff + 1`.
            let found = match valid.get_mut(j).and_then(Option::take) {
                Some(f) if j > ti || toff == SEGMENT_HEADER_LEN as u64 => f,
                _ => scan_valid(seg, if j == ti { toff + 1 } else { SEGMENT_HEADER_LEN as u64 }, &mut work)?,
            };
            for &(o, len, durable) in &found {
                if durable > x {
                    return Err(Self::corrupt(
                        &segs[ti].path,
                        toff,
                        format!(
                            "invalid batch, but a later valid batch (segment {} offset {o}) \
                             was written after it was durable",
                            seg.seq
                        ),
                    ));
                }
                if j == ti {
                    zero_to = zero_to.max(o + len);
                }
            }
            if j > ti && !found.is_empty() {
                doomed.push(j);
            }
        }
        let active = segs[ti].clone();
        if zero_to > toff {
            tracing::warn!(
                "zeroing {} bytes of unacknowledged batches after the torn tail of {}",
                zero_to - toff,
                active.path.display()
            );
            let zeros = vec![0u8; (zero_to - toff) as usize];
            pwrite_all(fs, &active.path, &active.file, toff, &zeros)
                .and_then(|_| datasync(fs, &active.path, &active.file))
                .map_err(io_err(&active.path))?;
        }
        if toff > SEGMENT_HEADER_LEN as u64 || ti > 0 {
            tracing::info!("recovered {} segments, log ends at segment {} offset {toff}", ti + 1, x.seq);
        }
        for (g, gi) in &state.groups {
            if let Some(index) = gi.first_hole() {
                return Err(Self::corrupt(
                    dir,
                    0,
                    format!("group {g}: no record of entry {index} was found"),
                ));
            }
        }
        let next_seq = seqs.last().copied().unwrap_or(0) + 1;
        let mut spares = Vec::new();
        let later: Vec<Arc<Segment>> = segs.drain(ti + 1..).collect();
        drop(segs);
        for (k, seg) in later.into_iter().enumerate() {
            let j = ti + 1 + k;
            state.segs.remove(&seg.seq);
            if doomed.contains(&j) {
                tracing::warn!(
                    "deleting {} (unacknowledged batches after the torn tail)",
                    seg.path.display()
                );
                let path = seg.path.clone();
                drop(seg);
                fs.remove(&path).map_err(io_err(&path))?;
                fs.sync_dir(dir).map_err(io_err(dir))?;
            } else {
                match Arc::try_unwrap(seg) {
                    Ok(s) => spares.push(s),
                    Err(_) => return Err(Self::corrupt(dir, 0, "internal: spare segment still shared")),
                }
            }
        }
        state.active = x.seq;
        Ok(Recovered {
            state,
            active,
            pos: toff,
            durable: x,
            spares,
            next_seq,
            scanned,
            checked: work,
            wal_id,
            lock,
        })
    }
}
