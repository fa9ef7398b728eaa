//! Client requests on one group: proposals (with backpressure), read barriers and
//! leadership transfers; the core's refusals become the API's errors by the `From`
//! impls of `api/error.rs`.
//!
//! Backpressure: `propose` answers `Busy` past the group's unapplied bytes, the worker's
//! pending proposals, its apply backlog (entries handed to the apply thread and not
//! reported applied) or its pending WAL bytes (submitted, not durable); the rule is
//! [`busy_reason`]. Never waits: every request is answered through its completer, now or
//! when its outcome is known (`waiters`).

use bytes::Bytes;

use super::group::Group;
use super::holdings::Held;
use super::pending::Completer;
use super::sessions::session_stamp_ms;
use super::shared::bump;
use super::waiters::Done;
use super::worker::Worker;
use crate::api::EngineConfig;
use crate::api::{BusyReason, ProposeError, ReadError, TransferError};
use crate::api::{Placement, ProposeRefused, TransferRefused};
use crate::raft::types::{NodeId, ReplicaId};
use crate::session::{SessionHeader, SessionOp};

impl Worker {
    /// A proposal to `group`: refused when busy ([`busy_reason`]) or not leader, else
    /// appended with its waiter.
    pub(super) fn propose(&mut self, group: u64, data: Bytes, done: Completer<Result<Bytes, ProposeError>>) {
        self.propose_entry(group, None, data, done);
    }

    /// A proposal (`session`: `None`) or a client-session entry (stamped with
    /// [`session_stamp_ms`]), refused or appended as [`Worker::propose`] says.
    pub(super) fn propose_entry(
        &mut self,
        group: u64,
        session: Option<SessionOp>,
        data: Bytes,
        done: Completer<Result<Bytes, ProposeError>>,
    ) {
        if self.failed {
            return done.complete(Err(ProposeError::StorageFailed));
        }
        if self.stopping {
            return done.complete(Err(ProposeError::Shutdown));
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ProposeError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        let size = data.len() as u64;
        let max = self.sh.cfg.get().max_worker_uncommitted_bytes;
        let worker = self.worker_held(group, |t| t.bytes > 0 && t.bytes + size > max).bytes;
        let cfg = self.sh.cfg.get();
        // (`worker_held` found the group.)
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ProposeError::GroupNotFound(group)));
        };
        // Counted by the core over its log (not over the waiters: one that timed out
        // leaves its entry in the log): this leadership's proposals not yet applied.
        let load = Load {
            uncommitted: g.raft.uncommitted_bytes(),
            worker_uncommitted: worker,
            waiting: self.tally.waiting(),
            apply_backlog: self.apply_backlog,
            apply_backlog_bytes: self.apply_backlog_bytes,
            wal_bytes: self.writes.pending_bytes() + self.writes.batch.encoded_len() as u64,
        };
        let busy = busy_reason(cfg, &load, size);
        if let Some(reason) = busy {
            self.sh.counters.refused(reason);
            return done.complete(Err(ProposeError::Busy(reason)));
        }
        let appended = match session {
            None => g.raft.propose(data),
            Some(op) => g.raft.propose_session(SessionHeader { op, stamp_ms: session_stamp_ms() }, data),
        };
        match appended {
            Ok((index, term)) => {
                let deadline = self.ticks + u64::from(cfg.propose_timeout_ticks);
                g.waiters.add(&mut self.tally, index, term, deadline, Done::Propose(done));
                // Counted at once: later requests of this turn see it.
                g.report_held(&mut self.holdings);
                self.load.proposal(&mut g.load, group);
                Self::touch(&mut self.touched, g);
            }
            Err(e) => {
                if matches!(e, crate::raft::ProposeError::UncommittedFull { .. }) {
                    // (The check above refuses first; the core's is the same bound.)
                    self.sh.counters.refused(BusyReason::GroupUncommitted);
                } else {
                    bump(&self.sh.counters.refused_not_leader);
                }
                done.complete(Err(ProposeRefused { err: e, group: &**g }.into()));
            }
        }
    }

    /// A read barrier on `group` (ReadIndex, or the leader's lease): served once the
    /// index is confirmed and applied.
    pub(super) fn read(&mut self, group: u64, done: Completer<Result<u64, ReadError>>) {
        if self.failed {
            return done.complete(Err(ReadError::StorageFailed));
        }
        let cfg = self.sh.cfg.get();
        let timeout = u64::from(cfg.read_timeout_ticks);
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ReadError::GroupNotFound(group)));
        };
        if g.reads.len() >= cfg.max_pending_reads {
            self.sh.counters.refused(BusyReason::PendingReads);
            return done.complete(Err(ReadError::Busy(BusyReason::PendingReads)));
        }
        if self.worker_reads_full(group) {
            self.sh.counters.refused(BusyReason::WorkerReads);
            return done.complete(Err(ReadError::Busy(BusyReason::WorkerReads)));
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return done.complete(Err(ReadError::GroupNotFound(group)));
        };
        Self::credit_idle(g, self.ticks);
        let ctx = self.read_ctx.next();
        match g.raft.read_index(ctx) {
            Ok(()) => {
                g.reads.push(ctx, self.ticks + timeout, done);
                g.report_held(&mut self.holdings);
                self.load.read(&mut g.load, group);
                Self::touch(&mut self.touched, g);
            }
            Err(e) => {
                if matches!(e, crate::raft::ReadIndexError::Busy { .. }) {
                    self.sh.counters.refused(BusyReason::PendingReads);
                }
                done.complete(Err(e.into()))
            }
        }
    }

    /// Starts a leadership transfer of `group` to its member on `node`.
    pub(super) fn transfer(&mut self, group: u64, node: NodeId) -> Result<(), TransferError> {
        if self.failed {
            return Err(TransferError::StorageFailed);
        }
        let Some(g) = self.groups.get_mut(&group) else {
            return Err(TransferError::GroupNotFound(group));
        };
        let Some(to) = g.raft.conf().members().into_iter().find(|r| r.node == node) else {
            return Err(TransferError::NotMember(node));
        };
        Self::credit_idle(g, self.ticks);
        let r = g.raft.transfer_leader(to.id).map_err(|err| TransferRefused { err, node }.into());
        Self::touch(&mut self.touched, g);
        r
    }
}

impl Worker {
    /// The worker's holdings with `group`'s own figures taken now; when `over` says they
    /// pass a bound, re-read first (`Holdings::refresh`, at most once per tick). Nothing
    /// held if the group is not here.
    pub(super) fn worker_held(&mut self, group: u64, over: impl Fn(Held) -> bool) -> Held {
        let Some(now) = self.groups.get(&group).map(|g| g.held()) else { return Held::default() };
        let total = self.holdings.total_with(group, now);
        if !over(total) {
            return total;
        }
        let groups = &self.groups;
        self.holdings.refresh(self.ticks, |gid| groups.get(&gid).map(|g| g.held()));
        self.holdings.total_with(group, now)
    }

    /// Whether the worker holds `max_worker_pending_reads` reads, `group`'s counted now.
    pub(super) fn worker_reads_full(&mut self, group: u64) -> bool {
        let max = self.sh.cfg.get().max_worker_pending_reads as u64;
        self.worker_held(group, |t| t.reads >= max).reads >= max
    }
}

/// How a group names its replicas' nodes, for the core's refusals ([`ProposeRefused`]).
impl Placement for Group {
    fn node_of(&self, replica: ReplicaId) -> Option<NodeId> {
        Group::node_of(self, replica)
    }

    fn leader_node(&self) -> Option<NodeId> {
        Group::leader_node(self)
    }
}

/// What a proposal meets on its worker (the inputs of backpressure).
pub(super) struct Load {
    /// Payload bytes of this leadership's proposals in the group not yet handed out for
    /// apply (`Raft::uncommitted_bytes`).
    pub(super) uncommitted: u64,
    /// The same summed over the worker's groups (`holdings`).
    pub(super) worker_uncommitted: u64,
    /// Proposals waiting for their outcome on the worker.
    pub(super) waiting: usize,
    /// Entries handed to the apply thread and not reported applied.
    pub(super) apply_backlog: u64,
    /// Their bytes.
    pub(super) apply_backlog_bytes: u64,
    /// WAL bytes submitted and not durable, plus the turn's batch.
    pub(super) wal_bytes: u64,
}

/// Why a proposal of `size` bytes is refused, if it is: the group's uncommitted bytes
/// (a group with none takes one proposal of any size), the worker's (a worker with none
/// likewise), the worker's pending proposals, its apply backlog, its pending WAL bytes,
/// checked in that order.
fn busy_reason(cfg: &EngineConfig, load: &Load, size: u64) -> Option<BusyReason> {
    if load.uncommitted + size > cfg.max_uncommitted_bytes && load.uncommitted > 0 {
        Some(BusyReason::GroupUncommitted)
    } else if load.worker_uncommitted + size > cfg.max_worker_uncommitted_bytes && load.worker_uncommitted > 0
    {
        Some(BusyReason::WorkerUncommitted)
    } else if load.waiting >= cfg.max_pending_proposals {
        Some(BusyReason::WorkerPending)
    } else if load.apply_backlog >= cfg.max_apply_backlog
        || load.apply_backlog_bytes >= cfg.max_apply_backlog_bytes
    {
        Some(BusyReason::ApplyBacklog)
    } else if load.wal_bytes >= cfg.max_pending_wal_bytes {
        Some(BusyReason::WalPending)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        let mut c = EngineConfig::new(1, "/nonexistent");
        c.max_uncommitted_bytes = 1000;
        c.max_worker_uncommitted_bytes = 2000;
        c.max_pending_proposals = 10;
        c.max_apply_backlog = 100;
        c.max_apply_backlog_bytes = 3000;
        c.max_pending_wal_bytes = 5000;
        c
    }

    const IDLE: Load = Load {
        uncommitted: 0,
        worker_uncommitted: 0,
        waiting: 0,
        apply_backlog: 0,
        apply_backlog_bytes: 0,
        wal_bytes: 0,
    };

    #[test]
    fn an_idle_worker_takes_a_proposal_of_any_size() {
        assert_eq!(busy_reason(&cfg(), &IDLE, 0), None);
        assert_eq!(busy_reason(&cfg(), &IDLE, 1 << 30), None);
    }

    #[test]
    fn group_uncommitted_bytes_refuse_past_the_limit_only_with_something_uncommitted() {
        let c = cfg();
        let l = Load { uncommitted: 600, ..IDLE };
        assert_eq!(busy_reason(&c, &l, 400), None);
        assert_eq!(busy_reason(&c, &l, 401), Some(BusyReason::GroupUncommitted));
    }

    #[test]
    fn worker_uncommitted_bytes_refuse_past_the_limit_only_with_something_uncommitted() {
        let c = cfg();
        // The group holds nothing, the worker (its other groups) 1,600 bytes.
        let l = Load { worker_uncommitted: 1600, ..IDLE };
        assert_eq!(busy_reason(&c, &l, 400), None);
        assert_eq!(busy_reason(&c, &l, 401), Some(BusyReason::WorkerUncommitted));
        assert_eq!(busy_reason(&c, &Load { worker_uncommitted: 0, ..IDLE }, 1 << 30), None);
    }

    #[test]
    fn each_worker_limit_refuses_at_its_bound() {
        let c = cfg();
        let at = |l: Load| busy_reason(&c, &l, 1);
        assert_eq!(at(Load { waiting: 9, ..IDLE }), None);
        assert_eq!(at(Load { waiting: 10, ..IDLE }), Some(BusyReason::WorkerPending));
        assert_eq!(at(Load { apply_backlog: 99, ..IDLE }), None);
        assert_eq!(at(Load { apply_backlog: 100, ..IDLE }), Some(BusyReason::ApplyBacklog));
        assert_eq!(at(Load { apply_backlog_bytes: 2999, ..IDLE }), None);
        assert_eq!(at(Load { apply_backlog_bytes: 3000, ..IDLE }), Some(BusyReason::ApplyBacklog));
        assert_eq!(at(Load { wal_bytes: 4999, ..IDLE }), None);
        assert_eq!(at(Load { wal_bytes: 5000, ..IDLE }), Some(BusyReason::WalPending));
    }

    #[test]
    fn the_first_reason_in_order_is_reported() {
        let c = cfg();
        let all = Load {
            uncommitted: 1000,
            worker_uncommitted: 2000,
            waiting: 10,
            apply_backlog: 100,
            apply_backlog_bytes: 0,
            wal_bytes: 5000,
        };
        assert_eq!(busy_reason(&c, &all, 1), Some(BusyReason::GroupUncommitted));
        let l = Load { uncommitted: 0, ..all };
        assert_eq!(busy_reason(&c, &l, 1), Some(BusyReason::WorkerUncommitted));
        assert_eq!(busy_reason(&c, &Load { worker_uncommitted: 0, ..l }, 1), Some(BusyReason::WorkerPending));
        let l = Load { uncommitted: 0, worker_uncommitted: 0, waiting: 0, ..all };
        assert_eq!(busy_reason(&c, &l, 1), Some(BusyReason::ApplyBacklog));
        let l = Load { apply_backlog: 0, ..l };
        assert_eq!(busy_reason(&c, &l, 1), Some(BusyReason::WalPending));
    }
}
