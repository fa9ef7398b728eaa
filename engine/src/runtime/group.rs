//! One replica owned by a worker ([`Group`]): its Raft state, waiters, reads and the
//! worker's bookkeeping about it, with its small queries (nodes of replicas, status,
//! metadata record); how one is built (`new_group`), handed to the apply thread
//! (`add_cmd`), and a replica being founded ([`PendingCreate`]).
//!
//! Owns the per-replica state. Never decides when a group is created, stepped or
//! destroyed (`lifecycle`, `tombstones`), never writes to the WAL and never calls a state
//! machine.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::apply::ApplyCmd;
use super::holdings::{Held, Holdings};
use super::leader_view::LeaderCell;
use super::pending::Completer;
use super::removal::Removal;
use super::shared::Shared;
use super::store::{GroupMeta, WalStore};
use super::waiters::{Done, ReadWaiters, Tally, Waiters};
use crate::api::{CreateGroupError, GroupStatus, PeerStatus, ReadError, StateMachine};
use crate::raft::conf::ConfState;
use crate::raft::message::SnapshotMeta;
use crate::raft::types::{NodeId, ReplicaId};
use crate::raft::Raft;

/// What [`Group::check_sender`] makes of a message's claimed sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SenderCheck {
    /// The sender replica lives on the sending node (or was learnt from it now).
    Ok,
    /// The sender replica lives on another node: the message is forged or stray.
    WrongNode,
    /// An unknown replica, and the table of learnt peers is full.
    TableFull,
}

/// Source of `Group::epoch`.
static EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One replica owned by this worker.
pub(crate) struct Group {
    pub(super) id: u64,
    pub(super) raft: Raft<WalStore>,
    /// Bytes (`Entry::size`) of entries handed to apply since the last compaction: with
    /// `compact_bytes`, the size threshold of the compaction policy.
    pub(super) log_bytes: u64,
    /// Bytes of the last snapshot file this replica wrote (0 before the first): with
    /// `compact_snapshot_percent`, how much log the next snapshot waits for.
    pub(super) last_snapshot_bytes: u64,
    /// Nodes of replicas learnt from received messages (for replicas not in the applied
    /// configuration yet, e.g. while a new replica has not applied the founding entry):
    /// the first node a replica id came from keeps it (`check_sender`).
    pub(super) peers: thin_vec::ThinVec<(ReplicaId, NodeId)>,
    pub(super) waiters: Waiters<Done>,
    pub(super) reads: ReadWaiters<Completer<Result<u64, ReadError>>>,
    pub(super) touched: bool,
    /// The group's metadata record must be (re)written with the next batch.
    pub(super) meta_dirty: bool,
    /// The worker tick up to which idle (quiesced) ticks were credited to `raft`.
    pub(super) idle_since: u64,
    /// Counted in the engine's quiesced-groups gauge.
    pub(super) quiesced_counted: bool,
    /// The designated first leader of a new group: campaign once the founding
    /// configuration is applied.
    pub(super) first_campaign: bool,
    /// A snapshot of the state machine was asked of the apply thread and not answered.
    pub(super) snapshotting: bool,
    /// The worker's `Holdings` has figures of this replica (it held something when last
    /// reported): a replica holding nothing, as most do, is reported without a lookup.
    pub(super) holding: bool,
    /// This replica instance, unique in the process: answers of the apply thread for a
    /// destroyed replica of the same group are recognised and ignored.
    pub(super) epoch: u64,
    /// A voter removal between its two steps (demote, then remove the learner). Boxed
    /// (rare): an idle replica pays a pointer for it.
    pub(super) removal: Option<Box<Removal>>,
    /// This replica's cell in the shared leader view (read back by its writer, this
    /// worker, to see whether the leader changed), and the (term, leader) last announced
    /// as an event (`announce`).
    pub(super) leader_cell: Arc<LeaderCell>,
    pub(super) leader_announced: (u64, ReplicaId),
    /// The replica's load meter, only while it has events (`load_book`).
    pub(super) load: super::load_book::MeterSlot,
}

impl Group {
    /// What this replica holds for its callers now (`holdings`).
    pub(super) fn held(&self) -> Held {
        Held {
            bytes: self.raft.uncommitted_bytes(),
            reads: (self.reads.len() + self.raft.reads_held()) as u64,
        }
    }

    /// Reports what this replica holds now to the worker's `holdings`, skipping the
    /// lookup when it held nothing before and holds nothing now. (Only this and
    /// `Holdings::forget` add or drop a replica's entry, so an entry implies `holding`.)
    pub(super) fn report_held(&mut self, holdings: &mut Holdings) {
        let now = self.held();
        let holds = now != Held::default();
        if holds || self.holding {
            holdings.set(self.id, now);
            self.holding = holds;
        }
    }

    /// The node of `replica`: from the applied configuration, else from messages.
    pub(super) fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        self.raft
            .conf()
            .find(replica)
            .map(|r| r.node)
            .or_else(|| self.peers.iter().find(|(r, _)| *r == replica).map(|(_, n)| *n))
    }

    /// Whether a message from replica `replica` may have come from node `node`, the node
    /// the transport says sent it (issue 12 point 1, TiKV's `check_msg`): by the applied
    /// configuration (members and removal records) when it names the replica, else by the
    /// node the replica was first learnt from. An unknown replica is learnt from this
    /// message (a replica not in the configuration yet: a new learner, or the leader of a
    /// replica that has not applied its first configuration); at most `max` are kept.
    ///
    /// A replica's node never changes (ids are never reused and a replica never moves),
    /// so a learnt entry is never re-pointed and never pushed out by newer ones: a hostile
    /// node can claim only replica ids nobody used here before, and it cannot take over a
    /// member's or a learnt replica's traffic.
    pub(super) fn check_sender(&mut self, replica: ReplicaId, node: NodeId, max: usize) -> SenderCheck {
        if replica == 0 {
            return SenderCheck::WrongNode;
        }
        let conf = self.raft.conf();
        let known = conf.find(replica).or_else(|| conf.removed.iter().find(|r| r.id == replica).copied());
        if let Some(r) = known {
            return if r.node == node { SenderCheck::Ok } else { SenderCheck::WrongNode };
        }
        if let Some(&(_, n)) = self.peers.iter().find(|(r, _)| *r == replica) {
            return if n == node { SenderCheck::Ok } else { SenderCheck::WrongNode };
        }
        if self.peers.len() >= max {
            // Entries whose replica joined the configuration are known from it now.
            let conf = self.raft.conf();
            self.peers.retain(|(r, _)| !conf.contains(*r));
            if self.peers.len() >= max {
                return SenderCheck::TableFull;
            }
        }
        self.peers.push((replica, node));
        SenderCheck::Ok
    }

    /// Returns what a quiesced replica does not need: the learnt peers that the applied
    /// configuration names now (it answers for them first, `check_sender`), and spare
    /// capacity. Followers learn their leader from its first message, before they apply
    /// the founding configuration: without this, each kept that entry for life.
    pub(super) fn shed_idle_memory(&mut self) {
        let conf = self.raft.conf();
        self.peers.retain(|(r, _)| !conf.contains(*r));
        self.peers.shrink_to_fit();
        self.reads.shrink_to_fit();
    }

    /// The node of the leader this replica knows of.
    pub(super) fn leader_node(&self) -> Option<NodeId> {
        self.raft.leader_hint().map(|r| r.node)
    }

    /// The group's metadata record (replica id and compaction point).
    pub(super) fn meta(&self) -> GroupMeta {
        GroupMeta::Live { replica: self.raft.id(), snapshot: SnapshotMeta::clone(&self.raft.storage().snap) }
    }

    /// The group's status as the API reports it.
    pub(super) fn status(&self) -> GroupStatus {
        let s = self.raft.status();
        let last = s.last_index;
        let conf = &s.conf;
        GroupStatus {
            group: self.id,
            replica: s.id,
            role: s.role,
            term: s.term,
            leader: self.raft.leader_hint(),
            commit: s.commit,
            applied: s.applied,
            last_index: last,
            peers: s
                .followers
                .iter()
                .filter_map(|f| {
                    conf.find(f.id).map(|replica| PeerStatus {
                        replica,
                        matched: f.matched,
                        lag: last.saturating_sub(f.matched),
                    })
                })
                .collect(),
            members: s.conf,
            load: Default::default(),
        }
    }

    /// This replica can no longer learn outcomes: every waiter completes `Indeterminate`,
    /// every read fails with `read`.
    pub(super) fn fail_all(&mut self, tally: &mut Tally, read: impl Fn() -> ReadError) {
        self.waiters.fail_all(tally);
        self.reads.fail_all(read);
    }
}

/// The seed of a replica's election-timeout randomness.
fn seed(sh: &Shared, group: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    sh.node.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ group.rotate_left(17) ^ t
}

/// A replica of `group` over the WAL, at the compaction point `snap`, its state machine
/// at `sm_applied`.
pub(super) fn new_group(
    sh: &Shared,
    group: u64,
    replica: ReplicaId,
    snap: SnapshotMeta,
    sm_applied: u64,
) -> Result<Box<Group>, String> {
    let applied = sm_applied.max(snap.index);
    let cfg = Arc::clone(sh.cfg.raft_shared());
    let store = WalStore::new(sh.wal.clone(), group, snap);
    let mut raft =
        Raft::with_shared_config(cfg, replica, applied, seed(sh, group), store).map_err(|e| e.to_string())?;
    // One copy of the compaction point, shared by the log and the store.
    let snap = WalStore::shared_snap(&raft.storage().snap, raft.snapshot_shared());
    raft.storage_mut().snap = snap;
    Ok(Box::new(Group {
        id: group,
        raft,
        peers: thin_vec::ThinVec::new(),
        waiters: Waiters::new(),
        reads: ReadWaiters::new(),
        touched: true,
        meta_dirty: false,
        idle_since: 0,
        quiesced_counted: false,
        first_campaign: false,
        snapshotting: false,
        holding: false,
        log_bytes: 0,
        last_snapshot_bytes: 0,
        epoch: EPOCH.fetch_add(1, Ordering::Relaxed),
        removal: None,
        leader_cell: sh.leaders.insert(group),
        leader_announced: (0, 0),
        load: None,
    }))
}

/// A replica to found (`Engine::create_group` or a create-group effect): it starts once its
/// founding write is durable.
pub(super) struct PendingCreate {
    pub(super) first_leader: Option<bool>,
    pub(super) group: u64,
    pub(super) replica: ReplicaId,
    pub(super) conf: ConfState,
    pub(super) sm: Box<dyn StateMachine>,
    /// An imported replica: starts from this snapshot (its file durable, the state
    /// machine restored) instead of a founding entry.
    pub(super) snapshot: Option<SnapshotMeta>,
    /// An imported replica's client sessions (from the snapshot's session section),
    /// handed to the apply thread with its state machine.
    pub(super) sessions: Option<crate::session::SessionTable>,
    pub(super) done: Completer<Result<(), CreateGroupError>>,
}

/// Hands the state machine of `g` to the apply thread, with the position Raft has it at.
pub(super) fn add_cmd(g: &Group, sm: Box<dyn StateMachine>) -> ApplyCmd {
    let index = g.raft.applied();
    let snap = g.raft.snapshot_meta();
    let term = if index == snap.index { snap.term } else { g.raft.term_at(index).unwrap_or(0) };
    ApplyCmd::Add {
        group: g.id,
        replica: g.raft.id(),
        applied: (index, term),
        conf: Arc::clone(g.raft.conf_shared()),
        sm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The replica a worker keeps for every group it holds, boxed: at 100,000 groups per
    /// node, the largest part of an idle replica's memory (BENCHMARKS.md, "Scale"). The
    /// bound is the size measured when it was set (536 bytes, 2026-12-05; 672 before the
    /// lists an idle replica keeps empty became `ThinVec`s, 1,360 before that), rounded
    /// up to 64 bytes. Anything a replica needs only while busy belongs behind a pointer
    /// (or in a map of the busy ones); each of these would break the bound again: a
    /// `Stats` kept inline (176 bytes), a per-replica copy of the Raft configuration
    /// (about 100 bytes) or of the membership (`ConfState`, 136 bytes), a second inline
    /// `SnapshotMeta` (152 bytes), the seven lists of `Raft` as `Vec`s (112 bytes more).
    const IDLE_GROUP_BYTES: usize = 576;

    #[test]
    fn an_idle_replica_stays_small() {
        eprintln!(
            "Group {} (Raft {}, log {}, store {}, waiters {}, reads {})",
            size_of::<Group>(),
            size_of::<Raft<WalStore>>(),
            size_of::<crate::raft::log::RaftLog<WalStore>>(),
            size_of::<WalStore>(),
            size_of::<Waiters<Done>>(),
            size_of::<ReadWaiters<Completer<Result<u64, ReadError>>>>(),
        );
        assert!(size_of::<Group>() <= IDLE_GROUP_BYTES, "Group grew to {} bytes", size_of::<Group>());
    }
}
