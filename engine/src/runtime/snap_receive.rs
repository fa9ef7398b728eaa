//! Snapshot streams between nodes, on the worker that owns the group: receiving one from
//! a leader to disk, chunk by chunk, and resuming one sent to a follower where it got.
//!
//! Receiving: the worker takes every `SnapshotChunk` out of the message flow (after the
//! sender check, `lifecycle::step`) and hands it here instead of to Raft. Per group one
//! stream is tracked, keyed by (leader replica, leader term, snapshot index, snapshot
//! term); its bytes go to a `.partial` file in the snapshot file format
//! (`snapfile::partial_header`), written and fdatasynced by this worker's snapshot I/O
//! thread ([`SnapshotIo`]), never by the worker and never whole in memory: the queue to
//! that thread is bounded in bytes (`MAX_QUEUED_BYTES`, file creations counted too; a
//! chunk that does not fit is dropped, a gap the leader's next stream fills). The thread reports each durable offset
//! back ([`IoReport`]); the worker tells the leader (`WireItem::SnapshotProgress`), which
//! starts its next stream of the same snapshot there. A chunk that does not continue the
//! stream (a gap, a stream restarted past what this node holds) is dropped and answered
//! with the durable offset. A stream whose chunk would end past `max_snapshot_bytes` is
//! refused: its partial file is deleted and its further chunks dropped; and a worker
//! receives at most `MAX_RECEIVING_STREAMS` streams to files at once, so the disk taken is
//! bounded too (a stream starting past it is dropped; its leader retries), of which one
//! sending node holds at most half (`MAX_RECEIVING_PER_NODE`); only progress (a chunk
//! that writes or ends the file) keeps a stream from expiring. A stream's metadata is its
//! first chunk's (the file header's); chunks naming other metadata are dropped. Once the
//! last chunk is durable, the I/O thread checks what the engine itself reads of the file
//! (the header's metadata, the session section whole and decodable: `check_received`),
//! and a file that fails is deleted and its stream dropped, never installed: a restore
//! that fails after Raft took a snapshot stops the engine. Then ONE synthesized data-less
//! last chunk is stepped into Raft, which runs
//! its term, leader and commit checks as for any snapshot; the runtime then renames the
//! partial file into place (`snapshots::install_snapshot`) or, if Raft did not take the
//! snapshot, deletes it. A crash leaves only a `.partial` file, which open deletes.
//!
//! Sending: the offsets followers report are recorded per (group, follower replica) with
//! the leader term and snapshot they belong to, and `snapshots::send_snapshot` starts a
//! stream of that same snapshot there.
//!
//! The same I/O thread deletes the worker's superseded snapshot files
//! ([`SnapshotReceiver::prune_below`]): unlinking a file of hundreds of MB can take over
//! 100 ms on a busy disk (ext4 frees its extents, and with `discard` trims them), and a
//! worker inside it neither sends heartbeats nor answers them.
//!
//! Owns the stream policy ([`Streams`], pure and unit-tested), the I/O thread and the
//! resume points. Never steps Raft, sends or counts anything itself: the worker does,
//! with what this returns (`snapshots`). Never writes a finished snapshot file (it reads
//! a received one once, to check it).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{unbounded, Receiver, Sender};

use super::snapfile;
use crate::api::SnapshotCheck;
use crate::raft::message::{Message, MessageBody, SnapshotChunk, SnapshotMeta};
use crate::raft::types::{NodeId, ReplicaId};
use crate::transport::WireItem;

/// Data bytes queued to the I/O thread at most (written or not yet): past it, arriving
/// chunks are dropped (the stream has a gap and resumes at the durable offset).
const MAX_QUEUED_BYTES: u64 = 8 << 20;
/// What creating a partial file counts against `MAX_QUEUED_BYTES` while queued (a file
/// system operation, and its header), so streams restarting without end cannot pile up
/// creations either.
const CREATE_COST: u64 = 64 << 10;
/// The least a queued job counts against `MAX_QUEUED_BYTES`, whatever it carries: the
/// queue is then bounded in jobs too (at most `MAX_QUEUED_BYTES / MIN_JOB_COST`), so a
/// stream of tiny chunks cannot pile up job records.
const MIN_JOB_COST: u64 = 256;
/// The I/O thread fdatasyncs (and reports) at the latest after this many bytes written,
/// and whenever its queue is empty.
const SYNC_EVERY_BYTES: u64 = 4 << 20;
/// Streams one worker receives to partial files at once (so the disk they take is at
/// most this many times `max_snapshot_bytes` per worker); a stream starting past it is
/// dropped (its leader retries once one ends).
const MAX_RECEIVING_STREAMS: usize = 32;
/// Of those, the most one sending node may hold: a peer that starts streams in every slot
/// it can (and restarts them as they expire) leaves the other half to other leaders.
const MAX_RECEIVING_PER_NODE: usize = MAX_RECEIVING_STREAMS / 2;
/// Resume points kept at most per worker (one per follower receiving a snapshot from a
/// group led here); past it new ones are not recorded (those streams start at 0).
const MAX_RESUME_POINTS: usize = 4096;

/// Which stream a chunk belongs to: the same key means the same bytes (one leader replica
/// in one term streams one file per snapshot index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamKey {
    /// The leader's replica.
    pub from: ReplicaId,
    /// The leader's term (the term of the chunk messages).
    pub leader_term: u64,
    /// The snapshot's index and term.
    pub index: u64,
    pub term: u64,
}

/// Where a stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// No partial file: waiting for a chunk at offset 0 (the others are reported once).
    Waiting,
    /// Chunks go to partial file `id`; `next` is the data offset expected next (every
    /// byte before it is queued for writing), `durable` what the I/O thread reported
    /// fdatasynced; `total` the data length once the last chunk was queued.
    Receiving { id: u64, next: u64, durable: u64, total: Option<u64> },
    /// Refused at the bound: every further chunk of the key is dropped.
    Refused,
}

#[derive(Debug)]
struct Stream {
    key: StreamKey,
    meta: SnapshotMeta,
    /// The leader's node and this node's replica (the chunks' recipient).
    node: NodeId,
    to: ReplicaId,
    state: State,
    /// The offset last reported to the leader.
    reported: Option<u64>,
    /// The worker tick of the last chunk or report.
    seen: u64,
}

/// What the worker does for one chunk (`Streams::chunk`), in this order.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ChunkStep {
    /// Delete the partial file `id` of a stream replaced or refused.
    pub discard: Option<u64>,
    /// Create partial file `id` (header of the chunk's metadata).
    pub create: Option<u64>,
    /// Write (id, data offset, bytes).
    pub write: Option<(u64, u64, Bytes)>,
    /// Fill in the data length and sync: (id, total).
    pub finish: Option<(u64, u64)>,
    /// Tell the leader this durable offset.
    pub report: Option<u64>,
    /// The stream was refused at the bound now.
    pub refused: bool,
    /// The chunk's bytes were not written (duplicate, gap, refused, queue full).
    pub dropped: bool,
}

/// A received snapshot whose file is complete and durable, handed to Raft.
#[derive(Debug, Clone)]
pub(crate) struct Completed {
    pub meta: SnapshotMeta,
    /// The synthesized last chunk to step into the group.
    pub msg: Message,
    /// The partial file's id (its path is [`Streams::path_of`]).
    pub id: u64,
}

/// The receiving streams of one worker's groups: the policy, with no I/O.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    by_group: HashMap<u64, Stream>,
    /// Streams in `State::Receiving` (with a partial file).
    receiving: usize,
    /// Of those, by the node sending them.
    receiving_from: HashMap<NodeId, usize>,
    /// Partial file paths by id (also of completed streams until installed or dropped).
    paths: HashMap<u64, PathBuf>,
    next_id: u64,
}

impl Streams {
    /// The stream of `group` takes `chunk` (from leader replica `key.from` on `node`, to
    /// this node's replica `to`), which the worker checked for sender and term. `room`:
    /// the bytes the I/O queue can take now; `max`: `max_snapshot_bytes`; `now`: the
    /// worker's tick. Paths are made by `path(group, replica, index)`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn chunk(
        &mut self,
        group: u64,
        key: StreamKey,
        node: NodeId,
        to: ReplicaId,
        chunk: &SnapshotChunk,
        room: u64,
        max: u64,
        now: u64,
        path: impl Fn(u64, u64, u64) -> PathBuf,
    ) -> ChunkStep {
        let mut step = ChunkStep::default();
        if self.by_group.get(&group).is_some_and(|s| s.key != key) {
            if let Some(old) = self.by_group.remove(&group) {
                if let State::Receiving { id, .. } = old.state {
                    step.discard = Some(id);
                    ended(&mut self.receiving, &mut self.receiving_from, old.node);
                }
            }
        }
        let full = self.receiving >= MAX_RECEIVING_STREAMS
            || self.receiving_from.get(&node).is_some_and(|&n| n >= MAX_RECEIVING_PER_NODE);
        let s = self.by_group.entry(group).or_insert_with(|| Stream {
            key,
            meta: chunk.meta.clone(),
            node,
            to,
            state: State::Waiting,
            reported: None,
            seen: now,
        });
        let len = chunk.data.len() as u64;
        let end = chunk.offset.saturating_add(len);
        match &mut s.state {
            State::Refused => step.dropped = true,
            State::Waiting if end > max => {
                s.state = State::Refused;
                step.refused = true;
                step.dropped = true;
            }
            State::Waiting if chunk.offset != 0 => {
                // Nothing held: the leader must start over.
                step.dropped = true;
                if s.reported != Some(0) {
                    s.reported = Some(0);
                    step.report = Some(0);
                }
            }
            State::Waiting if full || len.saturating_add(CREATE_COST) > room => step.dropped = true,
            State::Waiting => {
                // The file's header is written from this chunk's metadata: the stream's.
                s.meta = chunk.meta.clone();
                let id = self.next_id;
                self.next_id += 1;
                self.paths.insert(id, path(group, to, chunk.meta.index));
                step.create = Some(id);
                if len > 0 {
                    step.write = Some((id, 0, chunk.data.clone()));
                }
                let total = chunk.last.then_some(end);
                if let Some(t) = total {
                    step.finish = Some((id, t));
                }
                s.state = State::Receiving { id, next: end, durable: 0, total };
                self.receiving += 1;
                *self.receiving_from.entry(s.node).or_default() += 1;
            }
            State::Receiving { id, .. } if end > max => {
                step.discard = Some(*id);
                s.state = State::Refused;
                ended(&mut self.receiving, &mut self.receiving_from, s.node);
                step.refused = true;
                step.dropped = true;
            }
            State::Receiving { total: Some(_), .. } => step.dropped = true,
            // Another snapshot under the same key (its configuration differs): not this
            // file's.
            State::Receiving { .. } if chunk.meta != s.meta => step.dropped = true,
            State::Receiving { durable, next, .. } if chunk.offset > *next => {
                // A gap: the leader resumes at what is durable here.
                step.dropped = true;
                if s.reported != Some(*durable) {
                    s.reported = Some(*durable);
                    step.report = Some(*durable);
                }
            }
            State::Receiving { next, .. } if end < *next || (end == *next && !chunk.last) => {
                // Held already (a stream restarted behind this node's frontier): skipped
                // until it reaches the frontier.
                step.dropped = true;
            }
            State::Receiving { next, .. } if end - *next > room => {
                // New bytes this node has no room for yet (its disk is behind): the
                // sender is not at fault, and the stream is kept.
                step.dropped = true;
                s.seen = now;
            }
            State::Receiving { id, next, total, .. } => {
                // chunk.offset <= next <= end: write what is new.
                let skip = usize::try_from(*next - chunk.offset).unwrap_or(usize::MAX).min(chunk.data.len());
                if end > *next {
                    step.write = Some((*id, *next, chunk.data.slice(skip..)));
                }
                *next = end;
                if chunk.last {
                    *total = Some(end);
                    step.finish = Some((*id, end));
                }
            }
        }
        // Only progress (or new bytes waiting for room) keeps a stream from expiring: a
        // sender repeating chunks already held cannot keep a stream slot forever.
        if step.create.is_some() || step.write.is_some() || step.finish.is_some() {
            s.seen = now;
        }
        step
    }

    /// The metadata of `group`'s stream (its file's header), if it has one.
    pub(crate) fn meta_of(&self, group: u64) -> Option<&SnapshotMeta> {
        self.by_group.get(&group).map(|s| &s.meta)
    }

    /// The path of partial file `id`, if known.
    pub(crate) fn path_of(&self, id: u64) -> Option<&PathBuf> {
        self.paths.get(&id)
    }

    /// Takes the path of partial file `id` (its file is being deleted or renamed).
    pub(crate) fn take_path(&mut self, id: u64) -> Option<PathBuf> {
        self.paths.remove(&id)
    }

    /// The I/O thread made `offset` of file `id` of `group` durable: returns the progress
    /// item to send the leader, and its node, if the stream is still this one.
    pub(crate) fn durable(
        &mut self,
        group: u64,
        id: u64,
        offset: u64,
        now: u64,
    ) -> Option<(NodeId, WireItem)> {
        let s = self.by_group.get_mut(&group)?;
        let State::Receiving { id: sid, durable, .. } = &mut s.state else { return None };
        if *sid != id || offset <= *durable {
            return None;
        }
        *durable = offset;
        s.seen = now;
        s.reported = Some(offset);
        Some((s.node, progress_item(group, s, offset)))
    }

    /// File `id` of `group` is complete and durable: the stream ends, and what to step
    /// into Raft is returned.
    pub(crate) fn complete(&mut self, group: u64, id: u64) -> Option<Completed> {
        let s = self.by_group.get(&group)?;
        if !matches!(s.state, State::Receiving { id: sid, total: Some(_), .. } if sid == id) {
            return None;
        }
        let s = self.by_group.remove(&group)?;
        ended(&mut self.receiving, &mut self.receiving_from, s.node);
        let msg = Message {
            from: s.key.from,
            to: s.to,
            term: s.key.leader_term,
            body: MessageBody::SnapshotChunk(SnapshotChunk {
                meta: s.meta.clone(),
                seq: 0,
                offset: 0,
                last: true,
                data: Bytes::new(),
            }),
        };
        Some(Completed { meta: s.meta, msg, id })
    }

    /// File `id` of `group` failed to write: the stream ends (its file was deleted).
    /// Returns whether it was the group's stream.
    pub(crate) fn failed(&mut self, group: u64, id: u64) -> bool {
        let ours = self
            .by_group
            .get(&group)
            .is_some_and(|s| matches!(s.state, State::Receiving { id: sid, .. } if sid == id));
        if let Some(s) = ours.then(|| self.by_group.remove(&group)).flatten() {
            ended(&mut self.receiving, &mut self.receiving_from, s.node);
        }
        self.paths.remove(&id);
        ours
    }

    /// Ends the stream of `group` (its replica is gone): the id of its partial file.
    pub(crate) fn remove_group(&mut self, group: u64) -> Option<u64> {
        let s = self.by_group.remove(&group)?;
        match s.state {
            State::Receiving { id, .. } => {
                ended(&mut self.receiving, &mut self.receiving_from, s.node);
                Some(id)
            }
            _ => None,
        }
    }

    /// Ends the streams that saw nothing for `ttl` ticks (a leader that went away): the
    /// ids of their partial files.
    pub(crate) fn expire(&mut self, now: u64, ttl: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        let (receiving, from) = (&mut self.receiving, &mut self.receiving_from);
        self.by_group.retain(|_, s| {
            let keep = now.saturating_sub(s.seen) < ttl;
            if !keep {
                if let State::Receiving { id, .. } = s.state {
                    ids.push(id);
                    ended(receiving, from, s.node);
                }
            }
            keep
        });
        ids
    }

    /// Streams tracked now.
    pub(crate) fn len(&self) -> usize {
        self.by_group.len()
    }
}

/// A stream from `node` left `State::Receiving`: the counts fall.
fn ended(receiving: &mut usize, from: &mut HashMap<NodeId, usize>, node: NodeId) {
    *receiving = receiving.saturating_sub(1);
    if let Some(n) = from.get_mut(&node) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            from.remove(&node);
        }
    }
}

fn progress_item(group: u64, s: &Stream, offset: u64) -> WireItem {
    WireItem::SnapshotProgress {
        group,
        from: s.to,
        to: s.key.from,
        leader_term: s.key.leader_term,
        index: s.key.index,
        term: s.key.term,
        offset,
    }
}

/// What became of one received chunk, for the worker to count and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Received {
    /// Tell the leader this durable offset.
    pub report: Option<u64>,
    /// The stream was refused at the bound now.
    pub refused: bool,
    /// The chunk's bytes were not written.
    pub dropped: bool,
}

/// A report of the I/O thread, taken into the streams ([`SnapshotReceiver::poll`]).
#[derive(Debug)]
pub(crate) enum Polled {
    /// Send `item` (a `WireItem::SnapshotProgress`) to the leader's `node`.
    Progress { node: NodeId, item: WireItem },
    /// A received snapshot of `group` is complete and durable: step `msg` (a data-less
    /// last chunk) into the group.
    Complete { group: u64, msg: Message },
    /// Writing the stream of `group` failed; it was dropped.
    Failed { group: u64, error: String },
}

/// Work for the snapshot I/O thread, done in the order sent.
enum Job {
    /// Create partial file `id` at `path` (mode 0600) with `header`.
    Create { group: u64, id: u64, path: PathBuf, header: Bytes, len_at: u64 },
    /// Write `data` at data offset `at` of file `id`.
    Write { id: u64, at: u64, data: Bytes },
    /// Fill in the data length `total`, fdatasync, close; check what the engine itself
    /// reads of it (the header's metadata is `meta`, the session section is well formed:
    /// [`check_received`]); report it complete, or failed (and delete it) if not.
    Finish { id: u64, total: u64, meta: Box<SnapshotMeta>, check: SnapshotCheck },
    /// Close and delete file `id` (if open) at `path`.
    Discard { id: u64, path: PathBuf },
    /// Delete the snapshot files of `replica` of `group` in `dir` below index `below`.
    Prune { dir: PathBuf, group: u64, replica: ReplicaId, below: u64 },
}

impl Job {
    /// What the job counts against `MAX_QUEUED_BYTES` while queued: charged by
    /// `SnapshotIo::send`, released by the I/O thread once it is done.
    fn cost(&self) -> u64 {
        match self {
            Job::Create { .. } => CREATE_COST,
            Job::Write { data, .. } => (data.len() as u64).max(MIN_JOB_COST),
            Job::Finish { .. } | Job::Discard { .. } | Job::Prune { .. } => MIN_JOB_COST,
        }
    }
}

/// What the snapshot I/O thread reports back, in the order it happened. The channel is
/// not bounded by itself: the thread must never block on it (the worker joins the thread
/// when it stops). Its length is: per job handled, one report, plus one durable offset
/// per open file (at most the stream cap) per sync pass; and the worker takes every report
/// each turn (`poll_snapshot_io`), the same turns in which it queues jobs.
#[derive(Debug)]
pub(crate) enum IoReport {
    /// Data up to `offset` of file `id` of `group` is durable.
    Durable { group: u64, id: u64, offset: u64 },
    /// File `id` of `group` is complete and durable (and closed).
    Complete { group: u64, id: u64 },
    /// Writing file `id` of `group` failed; the file was deleted.
    Failed { group: u64, id: u64, error: String },
}

/// A partial file open on the I/O thread.
struct Open {
    group: u64,
    file: File,
    path: PathBuf,
    data_at: u64,
    len_at: u64,
    /// Data bytes written, and whether some are not yet synced.
    written: u64,
    dirty: bool,
}

/// The snapshot I/O thread: writes and fdatasyncs the partial files, and deletes
/// superseded snapshot files.
fn io_thread(jobs: Receiver<Job>, reports: Sender<IoReport>, queued: Arc<AtomicU64>) {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut unsynced = 0u64;
    while let Ok(job) = jobs.recv() {
        let cost = job.cost();
        match job {
            Job::Create { group, id, path, header, len_at } => {
                let r = snapfile::create_private(&path).and_then(|f| f.write_all_at(&header, 0).map(|()| f));
                match r {
                    Ok(file) => {
                        let data_at = header.len() as u64;
                        open.insert(id, Open { group, file, path, data_at, len_at, written: 0, dirty: true });
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        let _ = reports.send(IoReport::Failed { group, id, error: e.to_string() });
                    }
                }
            }
            Job::Write { id, at, data } => {
                let n = data.len() as u64;
                if let Some(o) = open.get_mut(&id) {
                    match o.file.write_all_at(&data, o.data_at + at) {
                        Ok(()) => {
                            o.written = o.written.max(at + n);
                            o.dirty = true;
                            unsynced += n;
                        }
                        Err(e) => fail(&mut open, id, e, &reports),
                    }
                }
            }
            Job::Finish { id, total, meta, check } => {
                if let Some(o) = open.get_mut(&id) {
                    let r = o
                        .file
                        .write_all_at(&total.to_le_bytes(), o.len_at)
                        .and_then(|()| o.file.set_len(o.data_at + total))
                        .and_then(|()| o.file.sync_data())
                        .and_then(|()| check_received(&o.path, o.group, &meta, &check));
                    match r {
                        Ok(()) => {
                            if let Some(o) = open.remove(&id) {
                                let _ = reports.send(IoReport::Complete { group: o.group, id });
                            }
                        }
                        Err(e) => fail(&mut open, id, e, &reports),
                    }
                }
            }
            Job::Discard { id, path } => {
                open.remove(&id);
                let _ = std::fs::remove_file(&path);
            }
            Job::Prune { dir, group, replica, below } => {
                snapfile::prune(&dir, group, |r, i| r == replica && i < below);
            }
        }
        queued.fetch_sub(cost, Ordering::Relaxed);
        if unsynced >= SYNC_EVERY_BYTES || jobs.is_empty() {
            unsynced = 0;
            let dirty: Vec<u64> = open.iter().filter(|(_, o)| o.dirty).map(|(id, _)| *id).collect();
            for id in dirty {
                let Some(o) = open.get_mut(&id) else { continue };
                o.dirty = false;
                match o.file.sync_data() {
                    Ok(()) => {
                        let _ = reports.send(IoReport::Durable { group: o.group, id, offset: o.written });
                    }
                    Err(e) => fail(&mut open, id, e, &reports),
                }
            }
        }
    }
}

/// Checks a received snapshot file of `group` before it is handed to Raft: its header
/// names `meta`, its session section (the engine's part of every snapshot) is whole and
/// decodes, and the embedder's `check` takes the state machine's part. A file that fails
/// is never installed: the restore of a snapshot Raft took runs after the log's reset is
/// durable, and a failed restore stops the engine (and the next open), so a peer's
/// malformed snapshot must be refused here, as bad input, not found there.
fn check_received(
    path: &Path,
    group: u64,
    meta: &SnapshotMeta,
    check: &SnapshotCheck,
) -> std::io::Result<()> {
    let (m, mut data) = snapfile::read_file(File::open(path)?, meta.index)?;
    if &m != meta {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "snapshot file holds other metadata",
        ));
    }
    crate::session::codec::read_section(&mut data)?;
    check.check(group, &mut data)
}

/// Closes and deletes file `id` after a failed write, and reports it.
fn fail(open: &mut HashMap<u64, Open>, id: u64, e: std::io::Error, reports: &Sender<IoReport>) {
    if let Some(o) = open.remove(&id) {
        drop(o.file);
        let _ = std::fs::remove_file(&o.path);
        let _ = reports.send(IoReport::Failed { group: o.group, id, error: e.to_string() });
    }
}

/// The handle of a worker's snapshot I/O thread: the job queue (bounded in bytes by the
/// worker through `queued`) and the reports.
pub(crate) struct SnapshotIo {
    jobs: Option<Sender<Job>>,
    reports: Receiver<IoReport>,
    queued: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SnapshotIo {
    /// Starts the I/O thread of worker `idx`.
    pub(crate) fn start(idx: usize) -> std::io::Result<SnapshotIo> {
        let (jobs, rx) = unbounded();
        let (tx, reports) = unbounded();
        let queued = Arc::new(AtomicU64::new(0));
        let q = queued.clone();
        let thread = std::thread::Builder::new()
            .name(format!("flotilla-snap-io-{idx}"))
            .spawn(move || io_thread(rx, tx, q))?;
        Ok(SnapshotIo { jobs: Some(jobs), reports, queued, thread: Some(thread) })
    }

    /// The reports' receiver (the worker waits on it with its mailbox).
    pub(crate) fn reports(&self) -> &Receiver<IoReport> {
        &self.reports
    }

    /// Data bytes the queue can take now.
    fn room(&self) -> u64 {
        MAX_QUEUED_BYTES.saturating_sub(self.queued.load(Ordering::Relaxed))
    }

    /// Queues `job`, charging its cost (the queue is bounded by that charge: callers
    /// check `room` first, so it overshoots by one job at most).
    fn send(&self, job: Job) {
        if let Some(j) = &self.jobs {
            self.queued.fetch_add(job.cost(), Ordering::Relaxed);
            let _ = j.send(job);
        }
    }
}

/// The worker exits: the thread finishes the jobs queued and stops (partial files stay
/// for the next open to delete).
impl Drop for SnapshotIo {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The receiving streams, the I/O thread, the completed files waiting for Raft, and the
/// resume points of streams sent from here.
pub(crate) struct SnapshotReceiver {
    streams: Streams,
    io: SnapshotIo,
    /// Complete files stepped into Raft this turn, by group: installed (renamed) by
    /// `install_snapshot`, or deleted after the turn (`drop_uninstalled`).
    completed: HashMap<u64, Completed>,
    /// (group, follower replica) -> (leader term, snapshot index, snapshot term, offset).
    resume: HashMap<(u64, ReplicaId), (u64, u64, u64, u64)>,
    dir: PathBuf,
}

impl SnapshotReceiver {
    /// A receiver writing under `dir`, with worker `idx`'s I/O thread.
    pub(crate) fn new(dir: &Path, idx: usize) -> std::io::Result<SnapshotReceiver> {
        Ok(SnapshotReceiver {
            streams: Streams::default(),
            io: SnapshotIo::start(idx)?,
            completed: HashMap::new(),
            resume: HashMap::new(),
            dir: dir.to_path_buf(),
        })
    }

    fn discard(&mut self, id: u64) {
        if let Some(path) = self.streams.take_path(id) {
            self.io.send(Job::Discard { id, path });
        }
    }

    /// The I/O thread's reports (the worker waits on them with its mailbox).
    pub(crate) fn reports(&self) -> &Receiver<IoReport> {
        self.io.reports()
    }

    /// Has the I/O thread delete the snapshot files of `replica` of `group` below index
    /// `below` (their log compaction is durable, so nothing reads them again; a file left
    /// by a crash before is deleted by the next open). Never waits for it.
    pub(crate) fn prune_below(&self, group: u64, replica: ReplicaId, below: u64) {
        self.io.send(Job::Prune { dir: self.dir.clone(), group, replica, below });
    }

    /// Takes the completed file of `group` for snapshot `meta`, if one was stepped into
    /// Raft: its path (the caller renames it into place).
    pub(crate) fn take_completed(&mut self, group: u64, meta: &SnapshotMeta) -> Option<PathBuf> {
        if self.completed.get(&group).is_some_and(|c| &c.meta == meta) {
            let c = self.completed.remove(&group)?;
            return self.streams.take_path(c.id);
        }
        None
    }

    /// Deletes the completed files Raft did not install (refused, or already covered).
    pub(crate) fn drop_uninstalled(&mut self) {
        if self.completed.is_empty() {
            return;
        }
        let ids: Vec<u64> = self.completed.drain().map(|(_, c)| c.id).collect();
        for id in ids {
            tracing::debug!(id, "received snapshot not installed; its file is deleted");
            self.discard(id);
        }
    }

    /// The data offset to start a stream of `meta` to `to` of `group` in leader term
    /// `term` at: what that follower reported durable for this very snapshot, else 0.
    pub(crate) fn resume_offset(&self, group: u64, to: ReplicaId, term: u64, meta: &SnapshotMeta) -> u64 {
        match self.resume.get(&(group, to)) {
            Some(&(t, i, mt, off)) if (t, i, mt) == (term, meta.index, meta.term) => off,
            _ => 0,
        }
    }

    /// Records a follower's reported offset.
    fn record(&mut self, group: u64, replica: ReplicaId, point: (u64, u64, u64, u64)) {
        if self.resume.len() >= MAX_RESUME_POINTS && !self.resume.contains_key(&(group, replica)) {
            return;
        }
        self.resume.insert((group, replica), point);
    }

    /// Takes chunk `chunk` of `group` from leader replica `key.from` on `node` (to this
    /// node's replica `to`; sender and term checked by the worker) and queues the I/O it
    /// needs. `max`: `max_snapshot_bytes`; `now`: the worker's tick.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &mut self,
        group: u64,
        key: StreamKey,
        node: NodeId,
        to: ReplicaId,
        chunk: &SnapshotChunk,
        max: u64,
        now: u64,
        check: &SnapshotCheck,
    ) -> Received {
        let room = self.io.room();
        let dir = &self.dir;
        let step = self.streams.chunk(group, key, node, to, chunk, room, max, now, |g, r, i| {
            snapfile::partial_path(dir, g, r, i)
        });
        if let Some(id) = step.discard {
            self.discard(id);
        }
        if let Some(id) = step.create {
            let (header, len_at) = snapfile::partial_header(&chunk.meta);
            if let Some(path) = self.streams.path_of(id).cloned() {
                self.io.send(Job::Create { group, id, path, header, len_at });
            }
        }
        if let Some((id, at, data)) = step.write {
            self.io.send(Job::Write { id, at, data });
        }
        if let Some((id, total)) = step.finish {
            let meta = Box::new(self.streams.meta_of(group).cloned().unwrap_or_else(|| chunk.meta.clone()));
            self.io.send(Job::Finish { id, total, meta, check: check.clone() });
        }
        Received { report: step.report, refused: step.refused, dropped: step.dropped }
    }

    /// The next report of the I/O thread, taken into the streams: a durable offset to tell
    /// a leader, a complete file to step into Raft (kept for `take_completed`), or a
    /// failed stream. `None` when there is none now.
    pub(crate) fn poll(&mut self, now: u64) -> Option<Polled> {
        loop {
            match self.io.reports.try_recv().ok()? {
                IoReport::Durable { group, id, offset } => {
                    if let Some((node, item)) = self.streams.durable(group, id, offset, now) {
                        return Some(Polled::Progress { node, item });
                    }
                }
                IoReport::Complete { group, id } => {
                    let Some(c) = self.streams.complete(group, id) else {
                        self.discard(id);
                        continue;
                    };
                    let msg = c.msg.clone();
                    if let Some(old) = self.completed.insert(group, c) {
                        self.discard(old.id);
                    }
                    return Some(Polled::Complete { group, msg });
                }
                IoReport::Failed { group, id, error } => {
                    self.streams.failed(group, id);
                    return Some(Polled::Failed { group, error });
                }
            }
        }
    }

    /// Ends the streams idle for `ttl` ticks (their files deleted); returns how many.
    pub(crate) fn expire(&mut self, now: u64, ttl: u64) -> usize {
        if self.streams.len() == 0 {
            return 0;
        }
        let ids = self.streams.expire(now, ttl);
        for &id in &ids {
            self.discard(id);
        }
        ids.len()
    }

    /// Records what follower replica `replica` of `group` reported: `offset` bytes of
    /// snapshot (`index`, `term`) streamed in `leader_term` are durable there.
    pub(crate) fn record_progress(
        &mut self,
        group: u64,
        replica: ReplicaId,
        leader_term: u64,
        (index, term): (u64, u64),
        offset: u64,
    ) {
        self.record(group, replica, (leader_term, index, term, offset));
    }

    /// Forgets everything about `group` (its replica is gone): its stream's partial file
    /// is deleted.
    pub(crate) fn remove_group(&mut self, group: u64) {
        if let Some(id) = self.streams.remove_group(group) {
            self.discard(id);
        }
        if let Some(c) = self.completed.remove(&group) {
            self.discard(c.id);
        }
        self.resume.retain(|(g, _), _| *g != group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::conf::ConfState;
    use crate::raft::types::Replica;

    const MAX: u64 = 100;
    const ROOM: u64 = CREATE_COST + 1000;

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta { index, term: 2, conf: ConfState::with_voters([Replica::new(1, 1)]) }
    }

    fn key(index: u64) -> StreamKey {
        StreamKey { from: 1, leader_term: 3, index, term: 2 }
    }

    fn chunk(index: u64, offset: u64, len: usize, last: bool) -> SnapshotChunk {
        SnapshotChunk { meta: meta(index), seq: 0, offset, last, data: Bytes::from(vec![7u8; len]) }
    }

    fn feed(s: &mut Streams, k: StreamKey, c: SnapshotChunk, room: u64) -> ChunkStep {
        s.chunk(9, k, 1, 2, &c, room, MAX, 0, |g, r, i| PathBuf::from(format!("{g}-{r}-{i}")))
    }

    #[test]
    fn chunks_in_order_are_written_and_the_last_finishes() {
        let mut s = Streams::default();
        let a = feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        assert_eq!(a.create, Some(0));
        assert_eq!(a.write.as_ref().map(|w| (w.0, w.1, w.2.len())), Some((0, 0, 10)));
        assert_eq!(s.path_of(0), Some(&PathBuf::from("9-2-5")));
        let b = feed(&mut s, key(5), chunk(5, 10, 10, true), ROOM);
        assert_eq!(b.write.as_ref().map(|w| (w.1, w.2.len())), Some((10, 10)));
        assert_eq!(b.finish, Some((0, 20)));
        // Durable reports go to the leader, once per advance.
        let (node, item) = s.durable(9, 0, 20, 1).unwrap();
        assert_eq!(node, 1);
        assert_eq!(
            item,
            WireItem::SnapshotProgress {
                group: 9,
                from: 2,
                to: 1,
                leader_term: 3,
                index: 5,
                term: 2,
                offset: 20
            }
        );
        assert!(s.durable(9, 0, 20, 1).is_none());
        assert!(s.complete(9, 7).is_none(), "another file's completion");
        let c = s.complete(9, 0).unwrap();
        assert_eq!((c.msg.from, c.msg.to, c.msg.term), (1, 2, 3));
        assert!(
            matches!(&c.msg.body, MessageBody::SnapshotChunk(x) if x.last && x.data.is_empty() && x.meta == meta(5))
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_gap_is_dropped_and_answered_with_the_durable_offset_once() {
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        // Nothing durable yet when the gap shows: 0 is reported, once.
        let g = feed(&mut s, key(5), chunk(5, 20, 10, false), ROOM);
        assert!(g.dropped && g.write.is_none());
        assert_eq!(g.report, Some(0));
        assert_eq!(feed(&mut s, key(5), chunk(5, 30, 10, false), ROOM).report, None, "reported once");
        // Durable reports go to the leader as they come; a gap then repeats nothing.
        assert!(s.durable(9, 0, 10, 0).is_some());
        assert_eq!(feed(&mut s, key(5), chunk(5, 40, 10, false), ROOM).report, None);
        // The leader resumes behind the frontier: the held bytes are skipped, the new ones
        // written.
        let r = feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        assert!(r.dropped && r.write.is_none());
        let r = feed(&mut s, key(5), chunk(5, 5, 10, false), ROOM);
        assert_eq!(r.write.as_ref().map(|w| (w.1, w.2.len())), Some((10, 5)), "only what is new");
    }

    #[test]
    fn a_chunk_past_the_bound_refuses_the_stream_and_deletes_its_file() {
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 60, false), ROOM);
        let r = feed(&mut s, key(5), chunk(5, 60, 60, false), ROOM);
        assert!(r.refused && r.dropped);
        assert_eq!(r.discard, Some(0));
        assert!(r.write.is_none());
        // Every later chunk of the stream is dropped, even from 0, and reported nothing.
        for off in [120, 0] {
            let x = feed(&mut s, key(5), chunk(5, off, 10, false), ROOM);
            assert!(x.dropped && !x.refused && x.create.is_none() && x.report.is_none());
        }
        // A first chunk already past the bound: refused with no file.
        let mut s = Streams::default();
        let r = feed(&mut s, key(5), chunk(5, 0, 101, true), ROOM);
        assert!(r.refused && r.create.is_none() && r.discard.is_none());
        // An offset that overflows is past the bound.
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        let r = feed(&mut s, key(5), chunk(5, u64::MAX - 2, 10, false), ROOM);
        assert!(r.refused);
    }

    #[test]
    fn another_stream_replaces_the_partial_and_a_stream_needs_offset_zero() {
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        // A newer snapshot (or a new leader term): the old file goes, the new starts at 0.
        let n = feed(&mut s, key(6), chunk(6, 0, 10, false), ROOM);
        assert_eq!((n.discard, n.create), (Some(0), Some(1)));
        let k = StreamKey { leader_term: 4, ..key(6) };
        // Resumed past what this node holds (it restarted): reported 0, once.
        let r = feed(&mut s, k, chunk(6, 30, 10, false), ROOM);
        assert_eq!((r.discard, r.create, r.report), (Some(1), None, Some(0)));
        assert!(feed(&mut s, k, chunk(6, 40, 10, false), ROOM).report.is_none());
        let z = feed(&mut s, k, chunk(6, 0, 10, false), ROOM);
        assert_eq!(z.create, Some(2));
    }

    #[test]
    fn a_full_queue_drops_the_chunk_without_advancing() {
        let mut s = Streams::default();
        let a = feed(&mut s, key(5), chunk(5, 0, 10, false), CREATE_COST + 5);
        assert!(a.dropped && a.create.is_none(), "a creation counts against the queue too");
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        let b = feed(&mut s, key(5), chunk(5, 10, 10, false), 5);
        assert!(b.dropped && b.write.is_none());
        let c = feed(&mut s, key(5), chunk(5, 10, 10, true), ROOM);
        assert_eq!(c.write.as_ref().map(|w| w.1), Some(10));
        assert_eq!(c.finish, Some((0, 20)));
        // Once the last chunk is queued, nothing more is taken.
        assert!(feed(&mut s, key(5), chunk(5, 10, 10, true), ROOM).dropped);
        // An empty snapshot: one empty last chunk creates and finishes the file.
        let mut s = Streams::default();
        let e = feed(&mut s, key(5), chunk(5, 0, 0, true), ROOM);
        assert_eq!((e.create, e.write.is_none(), e.finish), (Some(0), true, Some((0, 0))));
        // New bytes dropped for want of room keep the stream (the disk is behind, not
        // the sender): it does not expire while they come.
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        let late = s.chunk(9, key(5), 1, 2, &chunk(5, 10, 10, false), 5, MAX, 8, |g, r, i| {
            PathBuf::from(format!("{g}-{r}-{i}"))
        });
        assert!(late.dropped && late.write.is_none());
        assert!(s.expire(12, 10).is_empty(), "kept by the new bytes at tick 8");
        assert_eq!(s.expire(18, 10).len(), 1);
    }

    #[test]
    fn streams_with_files_are_capped_per_worker_and_per_sending_node() {
        let mut s = Streams::default();
        // Group g's stream comes from node 1 + g % 2.
        let feed_group = |s: &mut Streams, g: u64, c: SnapshotChunk| {
            s.chunk(g, key(5), 1 + g % 2, 2, &c, ROOM, MAX, 0, |g, r, i| {
                PathBuf::from(format!("{g}-{r}-{i}"))
            })
        };
        // One node alone takes at most half the slots.
        for g in (0..MAX_RECEIVING_STREAMS as u64).step_by(2) {
            assert!(feed_group(&mut s, g, chunk(5, 0, 10, false)).create.is_some());
        }
        let x = feed_group(&mut s, MAX_RECEIVING_STREAMS as u64 + 2, chunk(5, 0, 10, false));
        assert!(x.dropped && x.create.is_none(), "node 1 holds its half");
        for g in (1..MAX_RECEIVING_STREAMS as u64).step_by(2) {
            assert!(feed_group(&mut s, g, chunk(5, 0, 10, false)).create.is_some(), "node 2 takes the rest");
        }
        let over = MAX_RECEIVING_STREAMS as u64;
        let x = feed_group(&mut s, over, chunk(5, 0, 10, false));
        assert!(x.dropped && x.create.is_none(), "past the cap nothing is created");
        // One ends (completed, failed, refused, removed or expired): another may start.
        feed_group(&mut s, 0, chunk(5, 10, 0, true));
        assert!(s.complete(0, 0).is_some());
        assert!(feed_group(&mut s, over, chunk(5, 0, 10, false)).create.is_some());
        let id_of = |s: &Streams, g: u64| match s.by_group[&g].state {
            State::Receiving { id, .. } => id,
            _ => panic!("group {g} receives nothing"),
        };
        assert!(s.failed(1, id_of(&s, 1)));
        assert!(feed_group(&mut s, 3, chunk(5, 95, 10, false)).refused);
        let two = id_of(&s, 2);
        assert_eq!(s.remove_group(2), Some(two));
        assert_eq!(s.receiving, MAX_RECEIVING_STREAMS - 3);
        assert_eq!(s.expire(100, 10).len(), MAX_RECEIVING_STREAMS - 3);
        assert_eq!(s.receiving, 0);
        assert!(s.receiving_from.is_empty(), "{:?}", s.receiving_from);
    }

    #[test]
    fn idle_streams_expire_and_failed_ones_end() {
        let mut s = Streams::default();
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        // A chunk already held, repeated, is no progress: it does not keep the stream.
        let again = s.chunk(9, key(5), 1, 2, &chunk(5, 0, 10, false), ROOM, MAX, 8, |g, r, i| {
            PathBuf::from(format!("{g}-{r}-{i}"))
        });
        assert!(again.dropped);
        assert!(s.expire(5, 10).is_empty());
        assert_eq!(s.expire(10, 10), vec![0]);
        assert_eq!(s.len(), 0);
        feed(&mut s, key(5), chunk(5, 0, 10, false), ROOM);
        assert!(!s.failed(9, 0), "id 0 is not the group's file now");
        assert!(s.failed(9, 1));
        assert_eq!(s.len(), 0);
    }
}
