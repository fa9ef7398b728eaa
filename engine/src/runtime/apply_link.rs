//! The worker's side of its apply thread (`apply`): hands it commands (held while a
//! snapshot's log reset is not durable, `apply_hold`) and takes its answers in the order
//! it did the work: entries applied (Raft learns it, membership waiters complete, effects
//! run, a replica that applied its own removal is destroyed), snapshots written, restores
//! failed.
//!
//! Never calls a state machine itself: the applier does (`apply`), on the apply thread or,
//! for a quick batch while that thread is idle, on this one (`apply_lane`).

use super::apply::{Applied, ApplyCmd, ApplyDone};
use super::apply_lane::Inline;
use super::clock;
use super::shared::{bump, bump_by};
use super::worker::Worker;

impl Worker {
    /// Hands `cmd` to the apply thread, or holds it behind a snapshot's log reset that is
    /// not durable yet (`apply_hold`).
    pub(super) fn send_apply(&mut self, cmd: ApplyCmd) {
        if let Some(cmd) = self.apply_hold.hold(cmd) {
            self.send_apply_now(cmd);
        }
    }

    /// Hands `cmd` to the applier now: run on this thread when it is a quick batch and the
    /// apply thread is idle (`EngineConfig::inline_apply`, `apply_lane`), else sent to the
    /// apply thread.
    pub(super) fn send_apply_now(&mut self, cmd: ApplyCmd) {
        let cmd = if self.sh.cfg.get().inline_apply {
            match self.apply.try_inline(cmd) {
                Inline::Applied => {
                    bump(&self.sh.counters.applied_inline);
                    return;
                }
                Inline::AppliedSlow { group, took } => {
                    bump(&self.sh.counters.applied_inline);
                    bump(&self.sh.counters.applied_inline_slow);
                    tracing::warn!(
                        worker = self.idx,
                        group,
                        ?took,
                        "a batch its state machine called quick took long on the worker; \
                         this group's batches go to the apply thread for a minute"
                    );
                    return;
                }
                Inline::Panicked => {
                    if !self.failed {
                        tracing::error!(worker = self.idx, "a state machine panicked; engine stops");
                        self.storage_failed();
                    }
                    return;
                }
                Inline::No(cmd) => cmd,
            }
        } else {
            cmd
        };
        // The apply thread lives as long as the worker holds its sender; it exits early
        // only if a state machine panicked: nothing can be applied any more, so the
        // engine stops as on a storage failure.
        if self.apply.send(cmd).is_err() && !self.failed {
            tracing::error!(worker = self.idx, "apply thread died; engine stops");
            self.storage_failed();
        }
    }

    /// Takes the apply thread's answers, in the order it did the work; then steps the
    /// groups whose committed entries waited for the backlog to fall, if it has.
    pub(super) fn poll_applied(&mut self) {
        self.take_applied();
        if !self.apply_waiting.is_empty() && !self.apply_budget().is_empty() {
            for gid in std::mem::take(&mut self.apply_waiting) {
                if let Some(g) = self.groups.get_mut(&gid) {
                    Self::touch(&mut self.touched, g);
                }
            }
        }
    }

    fn take_applied(&mut self) {
        while let Ok(done) = self.apply_rx.try_recv() {
            match done {
                ApplyDone::Applied { group, epoch, done } => self.on_applied(group, epoch, done),
                ApplyDone::RestoreFailed { group, index, error } => {
                    tracing::error!(group, index, %error, "snapshot restore failed; engine stops");
                    self.storage_failed();
                }
                ApplyDone::Snapshot { group, epoch, meta, result } => {
                    let failed = result.as_ref().err().cloned();
                    self.on_snapshot(group, epoch, *meta, result);
                    if self.groups.get(&group).is_some_and(|g| g.epoch == epoch) {
                        self.answer_snapshot_requests(group, failed.as_deref());
                    }
                }
            }
        }
    }

    /// Entries of `group` up to `last` were applied: Raft learns it (membership changes
    /// take effect), effects run, waiters complete with the results, reads are served; a
    /// replica whose removal was applied is destroyed; a log past the threshold is
    /// snapshotted.
    pub(super) fn on_applied(&mut self, group: u64, epoch: u64, done: Applied) {
        let Applied { last, count, held_bytes, applied, effects, deferred, bytes, nanos } = done;
        self.apply_backlog = self.apply_backlog.saturating_sub(count);
        self.apply_backlog_bytes = self.apply_backlog_bytes.saturating_sub(held_bytes);
        bump_by(&self.sh.counters.applied_entries, applied);
        if self.failed || self.groups.get(&group).map_or(true, |g| g.epoch != epoch) {
            for (w, o) in deferred {
                w.complete(o);
            }
            return;
        }
        let Some(mut g) = self.groups.remove(&group) else { return };
        self.load.applied(&mut g.load, group, bytes, nanos);
        let me = g.raft.id();
        let was_member = g.raft.conf().contains(me);
        // Lease reads are answered now, under the lease as it stands now.
        g.raft.set_now(clock::now_nanos());
        g.raft.on_applied(last);
        // Membership changes resolve once Raft applied them (status shows the change).
        for (w, o) in deferred {
            w.complete(o);
        }
        self.drive_removal(&mut g);
        g.reads.serve(g.raft.applied());
        if was_member && !g.raft.conf().contains(me) {
            self.destroy(g);
        } else {
            self.maybe_compact(&mut g);
            Self::touch(&mut self.touched, &mut g);
            self.groups.insert(group, g);
        }
        for (index, e) in effects {
            self.run_effect(group, index, e);
        }
    }
}
