//! Replica lifecycle on a worker: creation (by the API, founding writes submitted in one
//! batch and started once durable; by a leader's message for an unknown group, when the
//! embedder's `CreatePolicy` and the caps allow it (`admission`); by a state machine's
//! `Effect::CreateGroup`, handed to the owning worker without blocking; split children are
//! founded by `split`), removal at the
//! caller's request, destruction (a durable tombstone record, waiters failed, the state
//! machine dropped), and the dropping of unconfirmed replicas (created from a message,
//! never joined a configuration, promised nothing: expired, or replaced by the group's
//! founding `create_group`).
//!
//! Every message is stepped only if its sender replica lives on the node it came from
//! (`Group::check_sender`); others are dropped and counted (`dropped_wrong_sender`).
//! Snapshot chunks that pass go to the group's received stream (`snap_receive`), not
//! into Raft.
//!
//! A replica that applies its own removal is destroyed (`apply_link`); one told by a
//! member that it was removed is destroyed in `tombstones`. Never steps Raft for another
//! purpose than delivering a message (`step`), never calls a state machine.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;
use flotilla_wal::WriteBatch;

use super::apply::ApplyCmd;
use super::command::Cmd;
use super::group::{add_cmd, new_group, Group, PendingCreate, SenderCheck};
use super::pending::{pending, Completer};
use super::route::route;
use super::shared::bump;
use super::store::{add_entry, wal_hs, GroupMeta, WalStore};
use super::worker::Worker;
use super::write_pipeline::WritePipeline;
use crate::api::{CreateGroupError, Effect, EngineEvent, ProposeError, ReadError};
use crate::raft::conf::ConfState;
use crate::raft::message::{Entry, EntryPayload, HardState, Message, MessageBody, SnapshotMeta};
use crate::raft::types::{NodeId, Replica, ReplicaId};
use crate::raft::Raft;

/// How long a worker keeps retrying (once a turn, never blocking) to hand another worker
/// a group created by an effect while that worker's mailbox is full.
const EFFECT_SEND_WAIT: Duration = Duration::from_secs(5);

impl Worker {
    /// Writes the founding replicas requested this turn in ONE batch submitted to the WAL
    /// without waiting: the founding entry and hard state must be durable before the
    /// replica reads them, so the replicas start when the write is (`start_created`, from
    /// `poll_inflight`). Meanwhile messages for these groups are dropped (their senders
    /// retry), and a request for a group whose creation is in flight waits for it.
    pub(super) fn flush_creates(&mut self) {
        if self.creates.is_empty() {
            return;
        }
        let creates = std::mem::take(&mut self.creates);
        let mut batch = WriteBatch::new();
        let mut todo = Vec::new();
        let mut later = Vec::new();
        for c in creates {
            if self.failed {
                c.done.complete(Err(CreateGroupError::StorageFailed));
                continue;
            }
            if let Some(existing) = self.creating_replica(c.group) {
                if existing == c.replica {
                    later.push(c);
                } else {
                    c.done.complete(Err(CreateGroupError::Conflict { group: c.group, existing }));
                }
                continue;
            }
            // A replica created from a message that never joined a configuration and
            // promised nothing is only a claim (perhaps a hostile or stray peer's): the
            // founding replaces it. Any other replica of the group stands.
            if self.admission.is_unconfirmed(c.group)
                && self.groups.get(&c.group).is_some_and(|g| promised_nothing(g))
            {
                if let Some(g) = self.groups.remove(&c.group) {
                    tracing::info!(group = c.group, "founding replaces an unconfirmed replica");
                    self.drop_unconfirmed(g);
                }
            }
            if let Some(g) = self.groups.get(&c.group) {
                let r = if g.raft.id() == c.replica {
                    Ok(())
                } else {
                    Err(CreateGroupError::Conflict { group: c.group, existing: g.raft.id() })
                };
                c.done.complete(r);
                continue;
            }
            if self.tombstones.contains_key(&c.group)
                || todo.iter().any(|t: &PendingCreate| t.group == c.group)
            {
                c.done.complete(Err(CreateGroupError::Tombstoned(c.group)));
                continue;
            }
            if let Some(snap) = &c.snapshot {
                // Imported: the log starts after the snapshot (`import`).
                let meta = GroupMeta::Live { replica: c.replica, snapshot: snap.clone() };
                batch.set_meta(c.group, &meta.encode());
                batch.compact_to(c.group, snap.index + 1);
                let hs = HardState { term: snap.term, vote: 0, commit: snap.index };
                batch.set_hard_state(c.group, wal_hs(hs));
                todo.push(c);
                continue;
            }
            let meta = GroupMeta::Live { replica: c.replica, snapshot: SnapshotMeta::default() };
            batch.set_meta(c.group, &meta.encode());
            let first =
                Entry { index: 1, term: 1, payload: EntryPayload::ConfChange(c.conf.bootstrap_change()) };
            add_entry(&mut batch, c.group, &first);
            batch.set_hard_state(c.group, wal_hs(HardState { term: 1, vote: 0, commit: 1 }));
            todo.push(c);
        }
        self.creates = later;
        if todo.is_empty() {
            return;
        }
        if let Err((e, todo)) = self.writes.submit_creates(&self.sh.wal, &self.sh.counters, batch, todo) {
            tracing::error!("wal write creating groups failed: {e}");
            self.storage_failed();
            for c in todo {
                c.done.complete(Err(CreateGroupError::StorageFailed));
            }
        }
    }

    /// The replica of `group` whose founding write is in flight, if any.
    pub(super) fn creating_replica(&self, group: u64) -> Option<ReplicaId> {
        self.writes.creating_replica(group)
    }

    /// Whether the founding write of `group` is in flight.
    pub(super) fn creating(&self, group: u64) -> bool {
        self.creating_replica(group).is_some()
    }

    /// Starts the founding replicas whose write is durable, then carries out removals
    /// that waited for them.
    pub(super) fn start_created(&mut self, creates: Vec<PendingCreate>) {
        for c in creates {
            let snap = c.snapshot.clone().unwrap_or_default();
            match new_group(&self.sh, c.group, c.replica, snap, c.sm.applied_index()) {
                Ok(mut g) => {
                    match c.first_leader {
                        Some(true) => g.first_campaign = true,
                        Some(false) => g.raft.defer_first_election(),
                        None => {}
                    }
                    self.send_apply(add_cmd(&g, c.sm));
                    if let Some(table) = c.sessions {
                        self.send_apply(ApplyCmd::Sessions { group: c.group, table });
                    }
                    g.touched = false;
                    Self::touch(&mut self.touched, &mut g);
                    self.groups.insert(c.group, g);
                    self.publish(EngineEvent::ReplicaCreated { group: c.group, replica: c.replica });
                    c.done.complete(Ok(()));
                }
                Err(e) => {
                    tracing::error!("group {} could not start: {e}", c.group);
                    c.done.complete(Err(CreateGroupError::StorageFailed));
                }
            }
        }
        if self.removes.is_empty() {
            return;
        }
        for (group, done) in std::mem::take(&mut self.removes) {
            if self.creating(group) {
                self.removes.push((group, done));
            } else if let Some(g) = self.groups.remove(&group) {
                self.active.remove(&group);
                self.destroy(g);
                done.complete(Ok(()));
            } else {
                done.complete(Err(ProposeError::GroupNotFound(group)));
            }
        }
    }

    /// A message for a group not hosted here creates an empty replica if it comes from
    /// a leader (append, heartbeat or snapshot), names a replica id newer than any
    /// tombstone of the group here, and the admission allows it (the embedder's
    /// `CreatePolicy`, the per-tick caps, the caps on unconfirmed replicas). The replica
    /// is unconfirmed until it applies a configuration that holds it.
    fn maybe_create(&mut self, from: NodeId, group: u64, m: &Message) -> bool {
        let tombstone = self.tombstones.get(&group).copied();
        if self.failed || self.stopping || !creates_replica(m, tombstone) {
            return false;
        }
        let cfg = self.sh.cfg.get();
        if let Err(why) = self.admission.admit(cfg, &cfg.create_policy, group, from, true) {
            bump(&self.sh.counters.creates_refused);
            tracing::debug!(group, node = from, ?why, "replica creation from a message refused");
            return false;
        }
        let sm = (self.sh.factory)(group);
        match new_group(&self.sh, group, m.to, SnapshotMeta::default(), sm.applied_index()) {
            Ok(mut g) => {
                self.send_apply(add_cmd(&g, sm));
                tracing::info!(
                    "node {} creates replica {} of group {group} (leader on node {from})",
                    self.sh.node,
                    m.to
                );
                g.meta_dirty = true;
                g.touched = false;
                Self::touch(&mut self.touched, &mut g);
                self.tombstones.remove(&group);
                self.groups.insert(group, g);
                self.publish(EngineEvent::ReplicaCreated { group, replica: m.to });
                self.forget_unconfirmed(group);
                self.admission.created(group, from, self.ticks, tombstone);
                self.sh.counters.unconfirmed_replicas.fetch_add(1, Ordering::Relaxed);
                bump(&self.sh.counters.replicas_created);
                true
            }
            Err(e) => {
                tracing::warn!("cannot create replica of group {group}: {e}");
                false
            }
        }
    }

    /// Forgets `group` as unconfirmed (it confirmed, or its replica is gone).
    fn forget_unconfirmed(&mut self, group: u64) {
        if self.admission.forget(group).is_some() {
            self.sh.counters.unconfirmed_replicas.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Once a tick: unconfirmed replicas that applied a configuration holding them are
    /// confirmed; those older than `unconfirmed_replica_ticks` that promised nothing are
    /// dropped. At most `max_unconfirmed_replicas` visited.
    pub(super) fn sweep_unconfirmed(&mut self, now: u64) {
        if self.admission.len() == 0 {
            return;
        }
        let ttl = u64::from(self.sh.cfg.get().unconfirmed_replica_ticks);
        let mut settled = Vec::new();
        let mut expired = Vec::new();
        for (gid, created) in self.admission.unconfirmed() {
            match self.groups.get(&gid) {
                None => settled.push(gid),
                Some(g) if g.raft.conf().contains(g.raft.id()) => settled.push(gid),
                Some(g) if now.saturating_sub(created) >= ttl && promised_nothing(g) => expired.push(gid),
                Some(_) => {}
            }
        }
        for gid in settled {
            self.forget_unconfirmed(gid);
        }
        for gid in expired {
            if let Some(g) = self.groups.remove(&gid) {
                tracing::info!(group = gid, "unconfirmed replica expired");
                self.drop_unconfirmed(g);
            }
        }
    }

    /// Drops unconfirmed replica `g` (removed from the worker's map by the caller): its
    /// records leave the WAL and the tombstone record it replaced, if any, is restored
    /// (so a replica destroyed here is still never recreated); waiters fail; its state
    /// machine is dropped.
    fn drop_unconfirmed(&mut self, mut g: Box<Group>) {
        let gid = g.id;
        let prior = match self.admission.forget(gid) {
            Some(prior) => {
                self.sh.counters.unconfirmed_replicas.fetch_sub(1, Ordering::Relaxed);
                prior
            }
            None => None,
        };
        g.fail_all(&mut self.tally, || ReadError::GroupNotFound(gid));
        self.writes.batch.remove_group(gid);
        if let Some(t) = prior {
            self.writes.batch.set_meta(gid, &GroupMeta::Tombstone { replica: t }.encode());
            self.tombstones.insert(gid, t);
            self.tombstones_unsynced.insert(gid, self.writes.next_seq());
        }
        self.writes.prune_after(gid, g.raft.id(), u64::MAX);
        self.active.remove(&gid);
        if g.quiesced_counted {
            self.sh.counters.quiesced_groups.fetch_sub(1, Ordering::Relaxed);
        }
        self.send_apply(ApplyCmd::Remove { group: gid });
        self.snap.remove_group(gid);
        self.forget_leader(&g);
        self.holdings.forget(gid);
        bump(&self.sh.counters.unconfirmed_dropped);
    }

    /// Steps message `m` from node `from` into its group, creating the replica if a
    /// leader's message asks for one (`maybe_create`); a message from a removed replica is
    /// answered with a tombstone instead (`answer_removed`); a message whose sender
    /// replica lives on another node than `from` is dropped (`Group::check_sender`).
    pub(super) fn step(&mut self, from: NodeId, group: u64, m: Message) {
        if self.failed {
            return;
        }
        // A group whose founding write is in flight takes no message yet (senders retry).
        let unknown = !self.groups.contains_key(&group);
        if unknown && (self.creating(group) || !self.maybe_create(from, group, &m)) {
            return;
        }
        // Answered before the sender check (which learns unknown senders): the answer
        // goes to the sending node, whoever it is, and removed replicas are not learnt.
        if self.answer_removed(from, group, m.from) {
            return;
        }
        let max_peers = self.sh.cfg.get().max_learned_peers;
        let Some(g) = self.groups.get_mut(&group) else { return };
        let check = g.check_sender(m.from, from, max_peers);
        if check != SenderCheck::Ok {
            bump(&self.sh.counters.dropped_wrong_sender);
            tracing::debug!(
                group,
                replica = m.from,
                node = from,
                ?check,
                kind = m.body.kind(),
                "message dropped: its sender replica is not on the sending node"
            );
            return;
        }
        if matches!(m.body, MessageBody::SnapshotChunk(_)) {
            // To disk, off the worker thread; Raft gets one data-less chunk once the file
            // is complete and durable (`snap_receive`).
            Self::credit_idle(g, self.ticks);
            return self.receive_chunk(from, group, m);
        }
        Self::credit_idle(g, self.ticks);
        if matches!(m.body, MessageBody::ReadIndex { .. }) && self.worker_reads_full(group) {
            // A follower's read past `max_worker_pending_reads`: dropped, as the core
            // drops one past the group's bound (its caller times out).
            self.sh.counters.refused(crate::api::BusyReason::WorkerReads);
            return;
        }
        let Some(g) = self.groups.get_mut(&group) else { return };
        if matches!(m.body, MessageBody::AppendResponse { .. }) {
            // The leader's own write may now complete a quorum: wake for it.
            self.writes.needed(group);
        }
        let read = matches!(m.body, MessageBody::ReadIndex { .. });
        if let Err(e) = g.raft.step(m) {
            tracing::debug!("group {group}: message refused: {e}");
        }
        if read {
            // Counted at once: later requests of this turn see it.
            g.report_held(&mut self.holdings);
        }
        Self::wake_if_commit_waits(&mut self.writes, group, &g.raft);
        Self::touch(&mut self.touched, g);
    }

    /// After a step: committed entries that wait for a write of this replica's in flight
    /// (a follower that learnt the commit index before its own write was durable) make
    /// that write wake the worker.
    pub(super) fn wake_if_commit_waits(writes: &mut WritePipeline, group: u64, raft: &Raft<WalStore>) {
        if raft.committed() > raft.stable_index() {
            writes.needed(group);
        }
    }

    /// Executes an effect returned by the state machine of `parent` at `index`.
    pub(super) fn run_effect(&mut self, parent: u64, index: u64, effect: Effect) {
        match effect {
            Effect::CreateGroup { group, members } => {
                let me = self.sh.node;
                let Some(pos) = members.iter().position(|&n| n == me) else { return };
                if members.iter().enumerate().any(|(i, n)| members[..i].contains(n)) {
                    tracing::warn!("group {parent} at {index}: create-group effect lists a node twice");
                    return;
                }
                let conf = ConfState::with_voters(
                    members.iter().enumerate().map(|(i, &n)| Replica::new(n, i as u64 + 1)),
                );
                let replica = pos as u64 + 1;
                let sm = (self.sh.factory)(group);
                let (_answer, done) = pending::<Result<(), CreateGroupError>>();
                tracing::info!(parent, index, group, replica, "create-group effect");
                bump(&self.sh.counters.effects_create_group);
                let n = self.sh.cfg.get().workers;
                let owner = route(group, n);
                if owner == self.idx {
                    self.creates.push(PendingCreate {
                        group,
                        replica,
                        conf,
                        sm,
                        done,
                        first_leader: None,
                        snapshot: None,
                        sessions: None,
                    });
                    return;
                }
                let cmd = Cmd::Create { group, replica, conf: Box::new(conf), sm, done, first_leader: None };
                // A create-group effect must not be lost to a momentarily full mailbox, nor
                // block this worker: retried each turn (bounded in time).
                let deadline = Instant::now() + EFFECT_SEND_WAIT;
                self.effect_creates.push_back((owner, group, cmd, deadline));
                self.send_effect_creates();
            }
            // Executed on the apply thread before the parent applies on (`split`).
            Effect::Split { .. } => {}
        }
    }

    /// Hands the groups created by effects to their workers without blocking; a full
    /// mailbox is retried next turn, until the command's deadline.
    pub(super) fn send_effect_creates(&mut self) {
        if self.effect_creates.is_empty() {
            return;
        }
        let now = Instant::now();
        for _ in 0..self.effect_creates.len() {
            let Some((owner, group, cmd, deadline)) = self.effect_creates.pop_front() else { break };
            let to = self.sh.routes.lock().unwrap_or_else(|e| e.into_inner()).get(owner).cloned();
            let res = match to {
                Some(tx) => tx.try_send(cmd),
                None => Err(TrySendError::Disconnected(cmd)),
            };
            match res {
                Ok(()) => {}
                Err(TrySendError::Full(cmd)) if now < deadline => {
                    self.effect_creates.push_back((owner, group, cmd, deadline));
                }
                Err(_) => tracing::error!("worker {owner} did not take the creation of group {group}"),
            }
        }
    }

    /// Destroys replica `g` (removed from the worker's map by the caller): waiters fail,
    /// a tombstone record replaces its state in the batch, its snapshot files are pruned
    /// once that is durable, its state machine is dropped.
    pub(super) fn destroy(&mut self, mut g: Box<Group>) {
        let gid = g.id;
        tracing::info!(
            "node {}: replica {} of group {gid} removed; destroying it",
            self.sh.node,
            g.raft.id()
        );
        g.fail_all(&mut self.tally, || ReadError::GroupNotFound(gid));
        self.writes.batch.remove_group(gid);
        self.writes.batch.set_meta(gid, &GroupMeta::Tombstone { replica: g.raft.id() }.encode());
        self.tombstones.insert(gid, g.raft.id());
        self.tombstones_unsynced.insert(gid, self.writes.next_seq());
        self.writes.prune_after(gid, g.raft.id(), u64::MAX);
        self.active.remove(&gid);
        if g.quiesced_counted {
            self.sh.counters.quiesced_groups.fetch_sub(1, Ordering::Relaxed);
        }
        self.send_apply(ApplyCmd::Remove { group: gid });
        self.snap.remove_group(gid);
        self.forget_leader(&g);
        self.holdings.forget(gid);
        bump(&self.sh.counters.replicas_destroyed);
        tracing::info!(group = gid, replica = g.raft.id(), "replica destroyed after its removal");
    }

    /// Destroys the replica of `group` at the caller's request (`Engine::remove_group`);
    /// a group whose founding write is in flight is removed once it is durable.
    pub(super) fn remove(&mut self, group: u64, done: Completer<Result<(), ProposeError>>) {
        if self.failed {
            return done.complete(Err(ProposeError::StorageFailed));
        }
        if !self.creates.is_empty() {
            self.flush_creates();
        }
        if self.creating(group) {
            return self.removes.push((group, done));
        }
        match self.groups.remove(&group) {
            Some(g) => {
                self.active.remove(&group);
                self.destroy(g);
                done.complete(Ok(()));
            }
            None => done.complete(Err(ProposeError::GroupNotFound(group))),
        }
    }
}

/// Whether replica `g` promised nothing to anyone: no log entry, no snapshot, no vote
/// (dropping it loses nothing a quorum may count on).
pub(super) fn promised_nothing(g: &Group) -> bool {
    g.raft.last_index() == 0 && g.raft.snapshot_meta().index == 0 && g.raft.hard_state().vote == 0
}

/// Whether message `m` for a group not hosted here creates a replica: it comes from a
/// leader (append, heartbeat or snapshot) and names a replica id newer than the group's
/// `tombstone` here, if any (a destroyed replica is never recreated).
fn creates_replica(m: &Message, tombstone: Option<ReplicaId>) -> bool {
    let from_leader = matches!(
        m.body,
        MessageBody::Append { .. } | MessageBody::Heartbeat { .. } | MessageBody::SnapshotChunk(_)
    );
    from_leader && m.to != 0 && !tombstone.is_some_and(|t| m.to <= t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(to: ReplicaId, body: MessageBody) -> Message {
        Message { from: 1, to, term: 3, body }
    }

    fn heartbeat(to: ReplicaId) -> Message {
        msg(to, MessageBody::Heartbeat { commit: 0, round: 1, quiesce: false })
    }

    #[test]
    fn a_leaders_message_creates_the_replica_it_names() {
        let append = MessageBody::Append { prev_index: 0, prev_term: 0, entries: Vec::new(), commit: 0 };
        assert!(creates_replica(&msg(4, append), None));
        assert!(creates_replica(&heartbeat(4), None));
    }

    #[test]
    fn other_messages_and_unnamed_replicas_create_nothing() {
        let vote = MessageBody::RequestVote {
            pre_vote: true,
            last_index: 9,
            last_term: 2,
            transfer: false,
            commit: 0,
            commit_term: 0,
        };
        assert!(!creates_replica(&msg(4, vote), None));
        assert!(!creates_replica(&heartbeat(0), None));
    }

    #[test]
    fn a_destroyed_replica_is_never_recreated() {
        assert!(!creates_replica(&heartbeat(4), Some(4)));
        assert!(!creates_replica(&heartbeat(3), Some(4)));
        assert!(creates_replica(&heartbeat(5), Some(4)));
    }
}
