//! Recovery at open: every group in the WAL becomes a live replica (its state machine
//! restored from its snapshot file when behind the compaction point) or a tombstone, and
//! the recovered groups are split among the workers by route.
//!
//! Owns the reading of metadata records and the checks that refuse to open (a state
//! machine ahead of the log). Never writes to the WAL, never starts a thread.

use std::collections::HashMap;
use std::sync::Arc;

use super::group::{new_group, Group};
use super::route::route;
use super::shared::Shared;
use super::snapfile;
use super::store::GroupMeta;
use crate::api::{OpenError, StateMachine};
use crate::raft::types::ReplicaId;
use crate::session::codec as session_codec;
use crate::session::SessionTable;

/// Groups recovered at open, to be handed to their workers.
pub(crate) struct Recovered {
    /// Groups boxed as they will live in the worker's map (moved there without copying).
    pub(super) groups: Vec<(Box<Group>, Box<dyn StateMachine>)>,
    pub(super) tombstones: HashMap<u64, ReplicaId>,
    /// Session tables read from the snapshot files state machines were restored from.
    pub(super) sessions: HashMap<u64, SessionTable>,
}

impl Recovered {
    /// The groups and tombstones of worker `i` of `n`.
    pub(crate) fn take_for(&mut self, i: usize, n: usize) -> Recovered {
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.groups).into_iter().partition(|(g, _)| route(g.id, n) == i);
        self.groups = rest;
        let tombstones =
            self.tombstones.iter().filter(|(g, _)| route(**g, n) == i).map(|(g, r)| (*g, *r)).collect();
        let (sessions, rest): (HashMap<_, _>, HashMap<_, _>) =
            std::mem::take(&mut self.sessions).into_iter().partition(|(g, _)| route(*g, n) == i);
        self.sessions = rest;
        Recovered { groups: mine, tombstones, sessions }
    }
}

/// Recovers every group in the WAL: its metadata, its state machine (restored from the
/// snapshot file when it is behind the compaction point) and its Raft state.
pub(crate) fn recover(sh: &Arc<Shared>) -> Result<Recovered, OpenError> {
    let mut out = Recovered { groups: Vec::new(), tombstones: HashMap::new(), sessions: HashMap::new() };
    for group in sh.wal.groups() {
        let err = |reason: String| OpenError::Recovery { group, reason };
        let Some(meta) = sh.wal.meta(group).map_err(|e| err(e.to_string()))? else {
            // Records without metadata: a group whose creation never completed.
            continue;
        };
        match GroupMeta::decode(&meta).map_err(err)? {
            GroupMeta::Tombstone { replica } => {
                out.tombstones.insert(group, replica);
            }
            GroupMeta::Live { replica, snapshot } => {
                let mut sm = (sh.factory)(group);
                if snapshot.index > 0 && sm.applied_index() < snapshot.index {
                    let (_, mut data) = snapfile::open(&sh.snap_dir, group, replica, snapshot.index)
                        .map_err(|e| err(format!("snapshot file at {}: {e}", snapshot.index)))?;
                    let table = session_codec::read_section(&mut data)
                        .map_err(|e| err(format!("session section: {e}")))?;
                    sm.restore(snapshot.index, snapshot.term, &mut data)
                        .map_err(|e| err(format!("restore: {e}")))?;
                    out.sessions.insert(group, table);
                }
                snapfile::prune(&sh.snap_dir, group, |r, i| (r, i) != (replica, snapshot.index));
                // Applied entries were durable in the log first (a snapshot's reset before
                // its restore): a state machine past the log's end ran ahead of the WAL,
                // and clamping its index would take the stale log tail as committed.
                let last = match sh.wal.last_index(group) {
                    Ok(l) => l.max(snapshot.index),
                    Err(flotilla_wal::ReadError::GroupNotFound(_)) => snapshot.index,
                    Err(e) => return Err(err(e.to_string())),
                };
                let applied = sm.applied_index();
                if applied > last {
                    return Err(OpenError::AppliedPastLog { group, applied, last });
                }
                let g = new_group(sh, group, replica, snapshot, applied).map_err(err)?;
                out.groups.push((g, sm));
            }
        }
    }
    tracing::info!("node {} recovered {} groups", sh.node, out.groups.len());
    Ok(out)
}
