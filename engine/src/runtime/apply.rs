//! The apply thread of one worker: it owns the state machines of the worker's groups and
//! applies their committed entries, so a slow state machine never stalls stepping, WAL
//! batching or heartbeats on the worker.
//!
//! Owns the state machines and the order of everything done to them: commands arrive in
//! one FIFO channel from the worker (register, apply, restore, snapshot, remove) and are
//! executed in that order, so a restore or a snapshot sits exactly between the entries the
//! worker handed out before and after it. Results go back in one FIFO channel. Never
//! touches Raft state, waiters or the WAL: the worker completes waiters with the results,
//! reports the applied index to Raft, and writes snapshot files and WAL records.

use std::collections::HashMap;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::api::{Effect, StateMachine};
use crate::raft::message::{Entry, EntryPayload, SnapshotMeta};

/// Work for the apply thread, executed in the order sent.
pub(crate) enum ApplyCmd {
    /// Takes over the state machine of `group` (created or recovered).
    Add { group: u64, sm: Box<dyn StateMachine> },
    /// Applies these committed entries of `group`, in order.
    Apply { group: u64, entries: Vec<Entry> },
    /// Replaces the state of `group` with a snapshot (already durable in its file).
    Restore { group: u64, meta: SnapshotMeta, data: Bytes },
    /// Snapshots the state of `group` as of every entry handed out before this command.
    Snapshot { group: u64 },
    /// Drops the state machine of `group` (the replica was destroyed).
    Remove { group: u64 },
}

/// What the apply thread reports back, in the order it did the work.
pub(crate) enum ApplyDone {
    /// Entries of `group` applied up to `last`: the state machine's result and effects of
    /// each, by (index, term).
    Applied { group: u64, last: u64, count: u64, results: Vec<AppliedEntry> },
    /// The restore of `group` at `index` failed: the engine cannot go on with this state.
    RestoreFailed { group: u64, index: u64, error: String },
    /// A snapshot of `group` reflecting the log up to `index` (or why it failed).
    Snapshot { group: u64, index: u64, data: Result<Vec<u8>, String> },
}

/// One applied entry.
pub(crate) struct AppliedEntry {
    pub index: u64,
    pub term: u64,
    pub result: Bytes,
    pub effects: Vec<Effect>,
}

struct Slot {
    sm: Box<dyn StateMachine>,
    /// The last index applied (or restored) here.
    applied: u64,
}

/// Runs until the worker drops its sender; then returns (after finishing what was
/// queued, so a state machine with its own storage sees every entry handed out).
pub(crate) fn run(rx: Receiver<ApplyCmd>, tx: Sender<ApplyDone>) {
    let mut sms: HashMap<u64, Slot> = HashMap::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            ApplyCmd::Add { group, sm } => {
                let applied = sm.applied_index();
                sms.insert(group, Slot { sm, applied });
            }
            ApplyCmd::Apply { group, entries } => {
                let count = entries.len() as u64;
                let last = entries.last().map_or(0, |e| e.index);
                let Some(slot) = sms.get_mut(&group) else {
                    // Destroyed meanwhile: the worker still counts the entries off.
                    let _ = tx.send(ApplyDone::Applied { group, last, count, results: Vec::new() });
                    continue;
                };
                let mut results = Vec::with_capacity(entries.len());
                for e in &entries {
                    if e.index <= slot.applied {
                        // Already in the state machine (it keeps its own storage and
                        // applied this before a restart): never applied twice.
                        continue;
                    }
                    let cmd = match &e.payload {
                        EntryPayload::Normal(d) => Some(&d[..]),
                        EntryPayload::Noop | EntryPayload::ConfChange(_) => None,
                    };
                    let result = slot.sm.apply(e.index, e.term, cmd);
                    let effects = slot.sm.take_effects();
                    slot.applied = e.index;
                    results.push(AppliedEntry { index: e.index, term: e.term, result, effects });
                }
                let _ = tx.send(ApplyDone::Applied { group, last, count, results });
            }
            ApplyCmd::Restore { group, meta, data } => {
                let Some(slot) = sms.get_mut(&group) else { continue };
                match slot.sm.restore(meta.index, meta.term, &mut &data[..]) {
                    Ok(()) => slot.applied = meta.index,
                    Err(e) => {
                        let error = e.to_string();
                        let _ = tx.send(ApplyDone::RestoreFailed { group, index: meta.index, error });
                    }
                }
            }
            ApplyCmd::Snapshot { group } => {
                let Some(slot) = sms.get_mut(&group) else { continue };
                let mut data = Vec::new();
                let data = slot.sm.snapshot(&mut data).map(|()| data).map_err(|e| e.to_string());
                let _ = tx.send(ApplyDone::Snapshot { group, index: slot.applied, data });
            }
            ApplyCmd::Remove { group } => {
                sms.remove(&group);
            }
        }
    }
}
