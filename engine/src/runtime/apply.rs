//! The applier of one worker ([`Applier`]): it owns the state machines of the worker's
//! groups and applies their committed entries. It runs on the worker's apply thread
//! (`apply_lane`), so a slow state machine never stalls stepping, WAL batching or
//! heartbeats on the worker; a batch whose every command its state machine calls quick
//! may be run by the worker itself while the thread is idle (`EngineConfig::inline_apply`).
//!
//! Owns the state machines and the order of everything done to them: commands arrive in
//! one FIFO channel from the worker (register, apply, restore, snapshot, remove) and are
//! executed in that order, so a restore or a snapshot sits exactly between the entries the
//! worker handed out before and after it. With the entries, the worker hands over exactly
//! the waiters whose (index, term) it matched against them (`Waiters::committed`): a
//! proposal's waiter is completed here as soon as its entry is applied, with the state
//! machine's result (`Indeterminate` if the entry is not applied here: already in a state
//! machine that keeps its own storage, or the group is gone); a membership change's goes
//! back to the worker, which completes it once Raft applied the change. Reports go back in
//! one FIFO channel. Never touches Raft state or the WAL: the worker reports the applied
//! index to Raft and writes the WAL records.
//!
//! Client sessions: a session entry goes through the group's `SessionTable` (see
//! `sessions.rs`): applied and recorded, answered with its first result, or refused,
//! alike on every replica. The table is replicated state: every snapshot stream starts
//! with its section (`session::codec`), and a restore reads it back.
//!
//! Snapshots: the apply thread knows the exact (index, term, configuration) its state
//! machines reflect (it applies membership changes to its own copy of the configuration
//! with the same pure `ConfState::apply` Raft uses), takes a point-in-time
//! [`SnapshotSource`] (or, for state machines without one, the bytes of
//! `StateMachine::snapshot`) and hands it to its snapshot-writer thread, which writes the
//! file (fsynced) while apply goes on, then reports it to the worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::sessions::{session_step, SessionStep};
use super::snapfile;
use super::split::{SplitCtx, SplitRequest};
use super::waiters::{Done, Outcome, Waiter};
use crate::api::{Effect, SnapshotSource, StateMachine};
use crate::raft::conf::ConfState;
use crate::raft::message::{Entry, EntryPayload, SnapshotMeta};
use crate::raft::types::ReplicaId;
use crate::session::codec as session_codec;
use crate::session::SessionTable;

/// Bytes read from a snapshot source per read.
const SOURCE_CHUNK: usize = 256 << 10;

/// Work for the apply thread, executed in the order sent.
pub(crate) enum ApplyCmd {
    /// Takes over the state machine of `group` (created or recovered), whose replica
    /// `replica` applied up to `applied` = (index, term) with configuration `conf`.
    Add {
        group: u64,
        replica: ReplicaId,
        applied: (u64, u64),
        conf: Arc<ConfState>,
        sm: Box<dyn StateMachine>,
    },
    /// Raft applied a membership change: its configuration, to keep instead of the
    /// apply thread's equal copy (ignored unless equal: the two may be at different
    /// indexes when it arrives).
    ShareConf { group: u64, conf: Arc<ConfState> },
    /// Applies these committed entries of `group`, in order, and completes the waiters of
    /// these very entries (matched by (index, term), in index order). `epoch` names the replica instance (echoed back, so
    /// answers for a destroyed replica never reach a new one).
    Apply { group: u64, epoch: u64, entries: Vec<Entry>, waiters: Vec<Waiter<Done>> },
    /// Replaces the state of `group` with the snapshot in `file` (durable, opened by the
    /// worker; read as a stream, never whole in memory).
    /// (`meta` boxed, as in `ApplyDone::Snapshot`: a channel slot is as large as the
    /// largest command, and every `Apply` is copied into one and out again.)
    Restore { group: u64, meta: Box<SnapshotMeta>, file: std::fs::File },
    /// Snapshots the state of `group` as of every entry handed out before this command.
    Snapshot { group: u64, epoch: u64 },
    /// Replaces the session table of `group` (recovered from its snapshot file at open,
    /// sent right after its `Add`).
    Sessions { group: u64, table: SessionTable },
    /// Drops the state machine of `group` (the replica was destroyed).
    Remove { group: u64 },
}

/// What the apply thread reports back, in the order it did the work.
pub(crate) enum ApplyDone {
    /// Entries of `group` were applied (see [`Applied`]).
    Applied { group: u64, epoch: u64, done: Applied },
    /// The restore of `group` at `index` failed: the engine cannot go on with this state.
    RestoreFailed { group: u64, index: u64, error: String },
    /// The snapshot file of `group` at `meta` is written and durable (its data length),
    /// or why it failed.
    Snapshot { group: u64, epoch: u64, meta: Box<SnapshotMeta>, result: Result<u64, String> },
}

/// What applying one `Apply` command did.
pub(crate) struct Applied {
    /// The last index handed out (Raft's applied index after this).
    pub last: u64,
    /// Entries handed out (the worker's apply backlog shrinks by this many).
    pub count: u64,
    /// Their bytes (`Entry::size`; the backlog's bytes shrink by this much).
    pub held_bytes: u64,
    /// Entries actually applied (not skipped as already in the state machine).
    pub applied: u64,
    /// Effects returned by the state machine, with the index of their entry.
    pub effects: Vec<(u64, Effect)>,
    /// Waiters of membership changes and their outcome: completed by the worker once
    /// Raft applied the change. (Proposal waiters were completed here, at once.)
    pub deferred: Vec<(Waiter<Done>, Outcome)>,
    /// Payload bytes of the commands handed to the state machine (load measuring).
    pub bytes: u64,
    /// Nanoseconds spent on these entries, if measuring is on and a command was applied.
    pub nanos: u64,
}

/// Completes `w` (its entry was handed out with it): with `outcome` if its entry was
/// applied here, else `Indeterminate`. A membership waiter is deferred to the worker.
fn decide(
    w: Waiter<Done>,
    applied: Option<(u64, u64, &Outcome)>,
    deferred: &mut Vec<(Waiter<Done>, Outcome)>,
) {
    let o = match applied {
        Some((index, term, outcome)) if index == w.index && term == w.term => outcome.clone(),
        _ => Outcome::Indeterminate,
    };
    match w.handle {
        Done::Propose(_) => w.complete(o),
        Done::Conf(_) => deferred.push((w, o)),
    }
}

struct Slot {
    sm: Box<dyn StateMachine>,
    /// The group's client sessions: replicated state, snapshotted with the state machine.
    /// `None` stands for an empty `SessionTable::new()` until a session entry or a restored
    /// table arrives (most groups of an embedder that does not use sessions never have
    /// one; boxed, a group without sessions pays a pointer).
    sessions: Option<Box<SessionTable>>,
    /// `StateMachine::supports_sessions`, asked once.
    sessions_ok: bool,
    replica: ReplicaId,
    /// The last index applied (or restored) here, its term, and the configuration there
    /// (shared with the replica's Raft state until a change applies here first).
    applied: u64,
    term: u64,
    conf: Arc<ConfState>,
}

/// A snapshot for the writer thread.
struct Job {
    group: u64,
    epoch: u64,
    replica: ReplicaId,
    meta: SnapshotMeta,
    source: Box<dyn SnapshotSource>,
}

/// The bytes of `StateMachine::snapshot`, as a source.
struct BytesSource {
    data: Vec<u8>,
    at: (u64, u64),
}

impl SnapshotSource for BytesSource {
    fn reflects(&self) -> (u64, u64) {
        self.at
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = usize::try_from(offset).unwrap_or(usize::MAX).min(self.data.len());
        let n = buf.len().min(self.data.len() - at);
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        Ok(n)
    }
}

/// A source whose stream is `prefix` (the session section), then `inner`'s bytes.
struct PrefixedSource {
    prefix: Vec<u8>,
    inner: Box<dyn SnapshotSource>,
}

impl SnapshotSource for PrefixedSource {
    fn reflects(&self) -> (u64, u64) {
        self.inner.reflects()
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = self.prefix.len() as u64;
        if offset < len {
            // offset < prefix length, a usize.
            let at = offset as usize;
            let n = buf.len().min(self.prefix.len() - at);
            buf[..n].copy_from_slice(&self.prefix[at..at + n]);
            return Ok(n);
        }
        self.inner.read_at(offset - len, buf)
    }
}

/// The snapshot-writer thread: writes each job's file and reports it.
fn write_snapshots(dir: PathBuf, jobs: Receiver<Job>, tx: Sender<ApplyDone>) {
    while let Ok(mut job) = jobs.recv() {
        let result =
            snapfile::save_from(&dir, job.group, job.replica, &job.meta, &mut *job.source, SOURCE_CHUNK)
                .map_err(|e| e.to_string());
        let _ = tx.send(ApplyDone::Snapshot {
            group: job.group,
            epoch: job.epoch,
            meta: Box::new(job.meta),
            result,
        });
    }
}

/// Whether `e` carries a command for the state machine (a proposal or a session entry).
fn is_command(e: &Entry) -> bool {
    matches!(e.payload, EntryPayload::Normal(_) | EntryPayload::Session { .. })
}

/// The state machines of one worker's groups and everything applying needs. The apply
/// thread owns it (`apply_lane`) and lends it to the worker for a quick batch while the
/// thread is idle; either way commands are executed one at a time, in the order sent.
pub(crate) struct Applier {
    /// Boxed: the map's spare capacity (up to half of its slots) costs a pointer a slot,
    /// not a whole `Slot`.
    sms: HashMap<u64, Box<Slot>>,
    /// Reports to the worker.
    tx: Sender<ApplyDone>,
    /// Snapshots to write, for the snapshot-writer thread.
    job_tx: Sender<Job>,
    /// Each entry's apply is timed into it.
    timing: Arc<flotilla_wal::LatencyHistogram>,
    /// `EngineConfig::measure_load`: time each batch that applies a command.
    measure: bool,
    split: SplitCtx,
}

impl Applier {
    /// An applier without state machines, reporting into `tx`; starts its snapshot-writer
    /// thread (writing into `snap_dir`), which ends once the applier is dropped.
    pub(crate) fn new(
        tx: Sender<ApplyDone>,
        snap_dir: PathBuf,
        timing: Arc<flotilla_wal::LatencyHistogram>,
        measure: bool,
        split: SplitCtx,
    ) -> (Applier, Option<std::thread::JoinHandle<()>>) {
        // Unbounded, as before: a job is a snapshot asked by `ApplyCmd::Snapshot`, of which a
        // group has at most one in flight (`Group::snapshotting`, set by `compaction.rs` and
        // `snap_request.rs`): at most one job per group.
        let (job_tx, jobs) = unbounded();
        let done = tx.clone();
        let writer = std::thread::Builder::new()
            .name("flotilla-snapshot-writer".into())
            .spawn(move || write_snapshots(snap_dir, jobs, done));
        let writer = match writer {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!("cannot start the snapshot writer, snapshots fail: {e}");
                None
            }
        };
        (Applier { sms: HashMap::new(), tx, job_tx, timing, measure, split }, writer)
    }

    /// Whether `cmd` is an `Apply` whose every command its group's state machine calls
    /// quick (`StateMachine::is_quick`): one the worker may run itself. Entries without a
    /// command (no-ops, membership changes) are quick; a group not here is not (the
    /// thread decides its waiters).
    pub(crate) fn is_quick(&self, cmd: &ApplyCmd) -> bool {
        let ApplyCmd::Apply { group, entries, .. } = cmd else { return false };
        let Some(slot) = self.sms.get(group) else { return false };
        entries.iter().all(|e| match &e.payload {
            EntryPayload::Normal(d) => slot.sm.is_quick(d),
            EntryPayload::Session { data, .. } => slot.sm.is_quick(data),
            EntryPayload::Noop | EntryPayload::ConfChange(_) => true,
        })
    }

    /// Executes `cmd`.
    pub(crate) fn handle(&mut self, cmd: ApplyCmd) {
        match cmd {
            ApplyCmd::Add { group, replica, applied, conf, sm } => {
                let (applied, term) = applied;
                let sessions_ok = sm.supports_sessions();
                let sessions = None;
                self.sms.insert(
                    group,
                    Box::new(Slot { sm, sessions, sessions_ok, replica, applied, term, conf }),
                );
            }
            ApplyCmd::ShareConf { group, conf } => {
                if let Some(slot) = self.sms.get_mut(&group) {
                    if *slot.conf == *conf {
                        slot.conf = conf;
                    }
                }
            }
            ApplyCmd::Sessions { group, table } => {
                if let Some(slot) = self.sms.get_mut(&group) {
                    slot.sessions = Some(Box::new(table));
                }
            }
            ApplyCmd::Apply { group, epoch, entries, waiters } => self.apply(group, epoch, entries, waiters),
            ApplyCmd::Restore { group, meta, file } => self.restore(group, *meta, file),
            ApplyCmd::Snapshot { group, epoch } => self.snapshot(group, epoch),
            ApplyCmd::Remove { group } => {
                self.sms.remove(&group);
            }
        }
    }

    /// Applies `entries` of `group` and completes `waiters` (see `ApplyCmd::Apply`).
    fn apply(&mut self, group: u64, epoch: u64, entries: Vec<Entry>, waiters: Vec<Waiter<Done>>) {
        let count = entries.len() as u64;
        let held_bytes = entries.iter().map(|e| e.size() as u64).sum();
        let last = entries.last().map_or(0, |e| e.index);
        let started = self.measure.then(std::time::Instant::now);
        let mut done = Applied {
            last,
            count,
            held_bytes,
            applied: 0,
            effects: Vec::new(),
            deferred: Vec::new(),
            bytes: 0,
            nanos: 0,
        };
        let mut waiters = waiters.into_iter().peekable();
        if let Some(slot) = self.sms.get_mut(&group) {
            for e in &entries {
                // Waiters of indexes passed without being applied here.
                while let Some(w) = waiters.next_if(|w| w.index < e.index) {
                    decide(w, None, &mut done.deferred);
                }
                if e.index <= slot.applied {
                    // Already in the state machine (it keeps its own storage and
                    // applied this before a restart): never applied twice.
                    continue;
                }
                let started = Instant::now();
                // A session entry's answer when the table decides it.
                let mut answer = None;
                let mut record = None;
                let cmd = match &e.payload {
                    EntryPayload::Normal(d) => Some(&d[..]),
                    EntryPayload::Session { header, data } => {
                        match session_step(
                            slot.sessions.get_or_insert_with(Box::default),
                            slot.sessions_ok,
                            e.index,
                            header,
                        ) {
                            SessionStep::Apply { session, seq } => {
                                record = Some((session, seq));
                                Some(&data[..])
                            }
                            // Not applied (a duplicate, a refusal, a register or
                            // close): the state machine sees an entry without a
                            // command, so its applied index still advances.
                            SessionStep::Answer(o) => {
                                answer = Some(o);
                                None
                            }
                        }
                    }
                    EntryPayload::Noop => None,
                    EntryPayload::ConfChange(cc) => {
                        // As Raft does: a change that no longer applies is a no-op.
                        if let Ok(next) = slot.conf.apply(cc) {
                            slot.conf = Arc::new(next);
                        }
                        None
                    }
                };
                done.bytes += cmd.map_or(0, |c| c.len() as u64);
                let result = slot.sm.apply(e.index, e.term, cmd);
                if let Some((session, seq)) = record {
                    slot.sessions.get_or_insert_with(Box::default).record(session, seq, result.clone());
                }
                let outcome = answer.unwrap_or(Outcome::Applied(result));
                for f in slot.sm.take_effects() {
                    if let Effect::Split { group: child, members, first_leader } = &f {
                        // Durable (or kept) before the next entry (`split`).
                        let req = SplitRequest {
                            parent: group,
                            index: e.index,
                            child: *child,
                            members,
                            first_leader: *first_leader,
                        };
                        self.split.run(&req, &mut *slot.sm);
                    }
                    done.effects.push((e.index, f));
                }
                slot.applied = e.index;
                slot.term = e.term;
                done.applied += 1;
                self.timing.record(started.elapsed());
                while let Some(w) = waiters.next_if(|w| w.index == e.index) {
                    decide(w, Some((e.index, e.term, &outcome)), &mut done.deferred);
                }
            }
        }
        // Destroyed meanwhile, or skipped: their outcome cannot be known here.
        for w in waiters {
            decide(w, None, &mut done.deferred);
        }
        if let Some(t) = started.filter(|_| done.bytes > 0 || entries.iter().any(is_command)) {
            done.nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        }
        let _ = self.tx.send(ApplyDone::Applied { group, epoch, done });
    }

    /// Replaces the state of `group` with the snapshot in `file` (see `ApplyCmd::Restore`).
    fn restore(&mut self, group: u64, meta: SnapshotMeta, file: std::fs::File) {
        let Some(slot) = self.sms.get_mut(&group) else { return };
        let restored = snapfile::read_file(file, meta.index).and_then(|(m, mut data)| {
            if m != meta {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "snapshot file holds other metadata",
                ));
            }
            let table = session_codec::read_section(&mut data)?;
            slot.sm.restore(meta.index, meta.term, &mut data)?;
            Ok(table)
        });
        match restored {
            Ok(table) => {
                slot.sessions = Some(Box::new(table));
                slot.applied = meta.index;
                slot.term = meta.term;
                slot.conf = crate::raft::conf_pool::intern(meta.conf);
            }
            Err(e) => {
                let error = e.to_string();
                let _ = self.tx.send(ApplyDone::RestoreFailed { group, index: meta.index, error });
            }
        }
    }

    /// Snapshots the state of `group` (see `ApplyCmd::Snapshot`).
    fn snapshot(&mut self, group: u64, epoch: u64) {
        let Some(slot) = self.sms.get_mut(&group) else { return };
        let at = (slot.applied, slot.term);
        let meta = SnapshotMeta { index: at.0, term: at.1, conf: ConfState::clone(&slot.conf) };
        if !self.split.may_snapshot(group) {
            let e = "a split of this group is not durable here; a restart replays it".to_string();
            let _ = self.tx.send(ApplyDone::Snapshot { group, epoch, meta: Box::new(meta), result: Err(e) });
            return;
        }
        let source = match slot.sm.snapshot_source() {
            Some(s) if s.reflects() == at => Ok(s),
            Some(s) => Err(format!("snapshot source reflects {:?}, applied is {at:?}", s.reflects())),
            None => {
                let mut data = Vec::new();
                slot.sm
                    .snapshot(&mut data)
                    .map(|()| Box::new(BytesSource { data, at }) as Box<dyn SnapshotSource>)
                    .map_err(|e| e.to_string())
            }
        };
        // The session table goes first in the stream, as of the same index.
        let prefix = match &slot.sessions {
            Some(t) => session_codec::section(t),
            None => session_codec::section(&SessionTable::new()),
        };
        let job = source.map(|inner| Job {
            group,
            epoch,
            replica: slot.replica,
            meta: meta.clone(),
            source: Box::new(PrefixedSource { prefix, inner }),
        });
        let sent = match job {
            Ok(job) => self.job_tx.send(job).map_err(|_| "the snapshot writer is gone".to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            let _ = self.tx.send(ApplyDone::Snapshot { group, epoch, meta: Box::new(meta), result: Err(e) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As the worker's mailbox commands (`command::tests`): every apply batch is copied
    /// into a channel slot and out again, so the rare commands keep their snapshot
    /// metadata boxed (unboxed, `ApplyCmd` was 168 bytes and `ApplyDone` 192; an
    /// `Applied` report is 104 by itself).
    #[test]
    fn apply_commands_and_reports_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<ApplyCmd>() <= 96, "ApplyCmd is {} bytes", size_of::<ApplyCmd>());
        assert!(size_of::<ApplyDone>() <= 112, "ApplyDone is {} bytes", size_of::<ApplyDone>());
    }
}
