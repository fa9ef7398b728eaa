//! The worker's side of a split (step 5 of the protocol in `split.rs`): founds this
//! node's replica of a split child from its durable founding snapshot, or keeps the
//! replica already here (TiKV's uninitialized-peer race).
//!
//! Owns the keep-or-create decision. Never writes the founding file (the apply thread
//! does, `split.rs`) and never writes the WAL outside the create path
//! (`lifecycle::flush_creates`).

use super::group::PendingCreate;
use super::lifecycle::promised_nothing;
use super::pending::Completer;
use super::shared::bump;
use super::snapfile;
use super::worker::Worker;
use crate::api::{CreateGroupError, StateMachine};
use crate::raft::message::SnapshotMeta;
use crate::raft::types::ReplicaId;
use crate::session::SessionTable;

impl Worker {
    /// Founds this node's replica of split child `group` from its durable founding
    /// snapshot `meta` (`Cmd::SplitChild`), or keeps the replica already here (step 5 of
    /// the protocol). Resolves once the founding is durable, or at once when kept.
    pub(super) fn split_child(
        &mut self,
        group: u64,
        replica: ReplicaId,
        meta: SnapshotMeta,
        sm: Box<dyn StateMachine>,
        first_leader: Option<bool>,
        done: Completer<Result<(), CreateGroupError>>,
    ) {
        if self.failed {
            return done.complete(Err(CreateGroupError::StorageFailed));
        }
        let empty_claim = self.admission.is_unconfirmed(group)
            && self.groups.get(&group).is_some_and(|g| promised_nothing(g));
        let existing = self
            .groups
            .get(&group)
            .filter(|_| !empty_claim)
            .map(|g| (g.raft.id(), g.raft.snapshot_meta().index));
        if existing.is_some() || self.creating(group) || self.tombstones.contains_key(&group) {
            // Kept: a replica that may have promised something is never overwritten; a
            // tombstoned one never comes back; one being founded is not founded twice.
            // The founding file goes unless the kept replica's snapshot is that file.
            if existing != Some((replica, meta.index)) && !self.creating(group) {
                let _ = std::fs::remove_file(snapfile::path(&self.sh.snap_dir, group, replica, meta.index));
            }
            bump(&self.sh.counters.split_children_kept);
            tracing::info!(group, ?existing, "split: the child's replica is already here; kept");
            return done.complete(Ok(()));
        }
        bump(&self.sh.counters.split_children_created);
        let conf = meta.conf.clone();
        // `flush_creates` replaces an empty unconfirmed claim and writes the founding.
        self.creates.push(PendingCreate {
            group,
            replica,
            conf,
            sm,
            first_leader,
            snapshot: Some(meta),
            sessions: Some(SessionTable::new()),
            done,
        });
    }
}
