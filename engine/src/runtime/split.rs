//! Splitting a group: the engine's side of [`Effect::Split`].
//!
//! # The protocol
//!
//! 1. **Propose.** The parent's leader proposes an application command meaning "split
//!    off range R into group C, first leader me". Nothing changes until it commits.
//! 2. **Apply (each replica of the parent, at the same index I).** The parent's state
//!    machine checks the command against its current range (a stale or repeated split
//!    is a no-op), moves R's data out of itself into a child state machine it keeps
//!    aside, shrinks its range, and returns `Effect::Split { group: C, members,
//!    first_leader }`. From index I on, the parent refuses writes to R at apply and
//!    reads of R when served (the application's check): a request issued before the
//!    split and applied or served after it gets a redirect, never a wrong answer.
//! 3. **Found the child (same apply thread, before entry I+1).** The engine takes the
//!    child state machine (`StateMachine::take_split`, else the factory), writes it as
//!    the child's founding snapshot file at index [`SPLIT_INDEX`], term [`SPLIT_TERM`]
//!    (crash-atomic, fsynced), and hands the owning worker the creation
//!    (`Cmd::SplitChild`): the child's WAL metadata names that snapshot, its log
//!    starts at `SPLIT_INDEX + 1`. The apply thread waits until that write is durable
//!    before it applies anything after I or takes a snapshot of the parent: so a
//!    snapshot of the parent that reflects I never exists on a node where the child is
//!    not durable. A crash before that point loses nothing: the parent's snapshot
//!    predates I, the log replays I, and the split runs again.
//! 4. **First leader.** The replica on `first_leader` (the parent's leader, which
//!    proposed the split) campaigns as soon as it is created; the others wait an extra
//!    election timeout before their first campaign. The child's first leader is thus the
//!    parent's leader, and no other node's child replica takes a lease over R while the
//!    parent's leader may still hold one.
//! 5. **The uninitialized-peer race (TiKV's).** The child's leader may reach a node
//!    before that node applied I. Its message may create an empty replica of C there (if
//!    the embedder's `CreatePolicy` and the caps admit it, as for any group). Such a
//!    replica holds no log before `SPLIT_INDEX + 1`, so the leader cannot replicate
//!    entries to it: it sends its snapshot (data included), never a log that would lack
//!    R's data. When that node then applies I: a replica of C that is still empty and
//!    unconfirmed (no snapshot, no entry, no vote) is replaced by the founding from the
//!    split-off state; any other replica of C (given a snapshot already, or recovered
//!    from the WAL, or tombstoned, or founded by an earlier run of the same entry) is
//!    kept, neither overwritten nor created twice (`Metrics::split_children_kept`), and
//!    the split-off state is dropped. A node whose `CreatePolicy` refuses C before the
//!    split gets its replica when it applies I.
//! 6. **Lagging replicas.** A replica of the parent that catches up by a snapshot taken
//!    after I never applies I: it gets its replica of C from C's leader (by message,
//!    then snapshot), as in 5.
//!
//! Owns steps 3 and 4 on the apply thread (founding file, the wait); the worker's
//! keep-or-create decision of step 5 is `split_child.rs`. Never
//! decides what is split or checks ranges (the application's state machine does), never
//! writes the WAL outside the worker's create path (`lifecycle::flush_creates`).
//!
//! [`Effect::Split`]: crate::api::Effect::Split

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::SendTimeoutError;

use super::command::Cmd;
use super::pending::pending;
use super::route::route;
use super::shared::Shared;
use super::snapfile;
use crate::api::{CreateGroupError, StateMachine};
use crate::raft::conf::ConfState;
use crate::raft::message::SnapshotMeta;
use crate::raft::types::{NodeId, Replica, ReplicaId};
use crate::session::codec as session_codec;
use crate::session::SessionTable;

/// The index of a split child's founding snapshot: its log starts after it, so a replica
/// created empty by a message (log from index 1) can only be caught up by a snapshot.
pub(super) const SPLIT_INDEX: u64 = 5;
/// The term of a split child's founding snapshot.
pub(super) const SPLIT_TERM: u64 = 5;

/// How often the waiting apply thread checks that the engine still runs.
const POLL: Duration = Duration::from_millis(100);
/// How long the apply thread waits for the child's founding write before it gives up
/// (the parent is then never snapshotted again in this life: a restart replays the
/// split).
const CHILD_WAIT: Duration = Duration::from_secs(120);

/// A split effect, as the apply thread executes it.
pub(super) struct SplitRequest<'a> {
    pub(super) parent: u64,
    pub(super) index: u64,
    pub(super) child: u64,
    pub(super) members: &'a [NodeId],
    pub(super) first_leader: NodeId,
}

/// The apply thread's split state: the engine's shared state (to reach the child's
/// worker) and the parents whose split did not become durable here.
pub(super) struct SplitCtx {
    sh: Arc<Shared>,
    /// Parents with a split whose child is not durable here: never snapshotted in this
    /// life, so a restart replays the split entry.
    unsettled: HashSet<u64>,
}

impl SplitCtx {
    /// The split state of one apply thread.
    pub(super) fn new(sh: Arc<Shared>) -> SplitCtx {
        SplitCtx { sh, unsettled: HashSet::new() }
    }

    /// Whether the parent `group` may be snapshotted (no split of it is unsettled).
    pub(super) fn may_snapshot(&self, group: u64) -> bool {
        !self.unsettled.contains(&group)
    }

    /// Executes split `req` returned by `parent_sm` at `req.index`: founds this node's
    /// replica of the child (step 3 of the protocol) and returns once it is durable, or
    /// kept, or the engine stops. Called on the apply thread before the next entry.
    pub(super) fn run(&mut self, req: &SplitRequest<'_>, parent_sm: &mut dyn StateMachine) {
        let set_aside = parent_sm.take_split(req.child);
        let me = self.sh.node;
        let Some(pos) = req.members.iter().position(|&n| n == me) else { return };
        if req.members.iter().enumerate().any(|(i, n)| req.members[..i].contains(n)) {
            tracing::warn!(
                parent = req.parent,
                index = req.index,
                "split effect lists a node twice; ignored"
            );
            return;
        }
        let mut sm = set_aside.unwrap_or_else(|| (self.sh.factory)(req.child));
        let conf = ConfState::with_voters(
            req.members.iter().enumerate().map(|(i, &n)| Replica::new(n, i as u64 + 1)),
        );
        let replica = pos as u64 + 1;
        let meta = SnapshotMeta { index: SPLIT_INDEX, term: SPLIT_TERM, conf };
        fail::fail_point!("engine::split_applied_before_founding");
        if let Err(e) = write_founding(&self.sh, req.child, replica, &meta, &mut *sm) {
            tracing::error!(
                parent = req.parent,
                child = req.child,
                "split: founding snapshot not written: {e}"
            );
            self.unsettled.insert(req.parent);
            return;
        }
        fail::fail_point!("engine::split_founding_file_written");
        let (answer, done) = pending::<Result<(), CreateGroupError>>();
        let first_leader = req.members.contains(&req.first_leader).then_some(req.first_leader == me);
        let cmd = Cmd::SplitChild { group: req.child, replica, meta: Box::new(meta), sm, first_leader, done };
        tracing::info!(
            parent = req.parent,
            index = req.index,
            child = req.child,
            replica,
            "split: founding child"
        );
        let owner = route(req.child, self.sh.cfg.get().workers);
        if !self.hand_over(owner, cmd) {
            self.unsettled.insert(req.parent);
            return;
        }
        let deadline = Instant::now() + CHILD_WAIT;
        let mut answer = answer;
        loop {
            match answer.wait_timeout(POLL) {
                Ok(Ok(())) => {
                    fail::fail_point!("engine::split_child_durable");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::error!(parent = req.parent, child = req.child, "split: child not founded: {e}");
                    break;
                }
                Err(again) => answer = again,
            }
            if self.stopping() || Instant::now() >= deadline {
                tracing::warn!(
                    parent = req.parent,
                    child = req.child,
                    "split: gave up waiting for the child"
                );
                break;
            }
        }
        self.unsettled.insert(req.parent);
    }

    /// Hands `cmd` to worker `owner`'s mailbox, waiting while it is full unless the
    /// engine stops. Whether it was taken.
    fn hand_over(&self, owner: usize, mut cmd: Cmd) -> bool {
        loop {
            let to = self.sh.routes.lock().unwrap_or_else(|e| e.into_inner()).get(owner).cloned();
            let Some(tx) = to else { return false };
            match tx.send_timeout(cmd, POLL) {
                Ok(()) => return true,
                Err(SendTimeoutError::Timeout(c)) if !self.stopping() => cmd = c,
                Err(_) => return false,
            }
        }
    }

    /// Whether the engine stops (shutdown empties the routes) or failed.
    fn stopping(&self) -> bool {
        self.sh.failed.load(Ordering::Acquire)
            || self.sh.routes.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Writes `sm`'s state as the founding snapshot file of replica `replica` of `child`
/// (an empty session table first, as every snapshot file holds one), crash-atomically.
fn write_founding(
    sh: &Shared,
    child: u64,
    replica: ReplicaId,
    meta: &SnapshotMeta,
    sm: &mut dyn StateMachine,
) -> std::io::Result<()> {
    let mut data = session_codec::section(&SessionTable::new());
    sm.snapshot(&mut data)?;
    snapfile::save(&sh.snap_dir, child, replica, meta, &data)
}
