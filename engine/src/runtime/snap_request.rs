//! Snapshots taken on request (`Engine::request_snapshot`, and `Engine::export_snapshot`
//! on top of it): the worker's side. A request names the applied index at its arrival;
//! it is answered by the first durable snapshot file of the group at or past that index,
//! with the file opened (so a later compaction pruning the name does not matter to an
//! export reading it). The snapshot is taken through the usual path: the apply thread
//! takes it between the entries handed out before and after, its writer thread writes and
//! fsyncs the file, and the worker compacts the log at it (`compaction::on_snapshot`).
//!
//! Owns when the waiting requests (`snapshot_waiters.rs`) are answered. Never
//! writes a snapshot file or compacts itself (the apply thread and `compaction` do).

use std::fs::File;

use super::apply::ApplyCmd;
use super::snapfile;
use super::snapshot_waiters::{Request, SnapshotDone, TakenSnapshot};
use super::worker::Worker;
use crate::api::SnapshotError;
use crate::raft::message::SnapshotMeta;

/// Snapshots taken for one request before it fails (each attempt's file was discarded,
/// e.g. superseded by one installed from the leader below the index asked for).
const MAX_ATTEMPTS: u32 = 3;

impl Worker {
    /// `Engine::request_snapshot`: answered at once if the group's current snapshot covers
    /// its applied index, else once a snapshot taken now is durable.
    pub(super) fn request_snapshot(&mut self, group: u64, done: SnapshotDone) {
        if self.failed {
            return done.complete(Err(SnapshotError::StorageFailed));
        }
        let Some(g) = self.groups.get(&group) else {
            return done.complete(Err(SnapshotError::GroupNotFound(group)));
        };
        let (epoch, at_least) = (g.epoch, g.raft.applied());
        if at_least == 0 {
            return done.complete(Err(SnapshotError::Failed("nothing applied yet".into())));
        }
        self.snap_requests.by_group.entry(group).or_default().push(Request {
            epoch,
            at_least,
            attempts: 0,
            done,
        });
        self.answer_snapshot_requests(group, None);
    }

    /// Answers the requests of `group` that its current snapshot covers; fails them all if
    /// the snapshot just taken failed (`failed`); takes another snapshot for the rest.
    pub(super) fn answer_snapshot_requests(&mut self, group: u64, failed: Option<&str>) {
        let Some(reqs) = self.snap_requests.by_group.remove(&group) else { return };
        let Some(g) = self.groups.get_mut(&group) else {
            for r in reqs {
                r.done.complete(Err(SnapshotError::GroupNotFound(group)));
            }
            return;
        };
        let snap = std::sync::Arc::clone(&g.raft.storage().snap);
        let mut waiting = Vec::new();
        for r in reqs {
            if r.epoch != g.epoch {
                r.done.complete(Err(SnapshotError::GroupNotFound(group)));
            } else if snap.index > 0 && snap.index >= r.at_least {
                let path = snapfile::path(&self.sh.snap_dir, group, g.raft.id(), snap.index);
                let answer = File::open(&path)
                    .map(|file| TakenSnapshot { meta: SnapshotMeta::clone(&snap), file })
                    .map_err(|e| SnapshotError::Failed(format!("opening {}: {e}", path.display())));
                r.done.complete(answer);
            } else if let Some(why) = failed.filter(|_| r.attempts > 0) {
                // The snapshot taken for it failed (one taken for compaction before it
                // arrived, failing, is retried for it below).
                r.done.complete(Err(SnapshotError::Failed(why.to_string())));
            } else if r.attempts >= MAX_ATTEMPTS {
                r.done.complete(Err(SnapshotError::Failed(format!(
                    "{MAX_ATTEMPTS} snapshots were discarded before reaching index {}",
                    r.at_least
                ))));
            } else {
                waiting.push(r);
            }
        }
        if waiting.is_empty() {
            return;
        }
        let take = !g.snapshotting;
        let epoch = g.epoch;
        if take {
            g.snapshotting = true;
            for r in &mut waiting {
                r.attempts += 1;
            }
            self.send_apply(ApplyCmd::Snapshot { group, epoch });
        }
        self.snap_requests.by_group.insert(group, waiting);
    }

    /// Once a tick: requests whose replica is gone (destroyed, removed) fail, since its
    /// apply thread will never answer for it.
    pub(super) fn sweep_snapshot_requests(&mut self) {
        if self.snap_requests.by_group.is_empty() {
            return;
        }
        let gone: Vec<u64> = self
            .snap_requests
            .by_group
            .iter()
            .filter(|(gid, reqs)| match self.groups.get(gid) {
                None => true,
                Some(g) => reqs.iter().any(|r| r.epoch != g.epoch),
            })
            .map(|(gid, _)| *gid)
            .collect();
        for gid in gone {
            self.answer_snapshot_requests(gid, None);
        }
    }
}
