//! One group's `Ready` on its worker: the messages go out at once (through the outbox),
//! the write (a received snapshot's reset, metadata, entries, hard state) joins the turn's
//! batch with what waits for it, committed entries go to the apply thread with their
//! waiters, confirmed reads are served; and peers found unreachable.
//!
//! Never waits for the write: what must follow durability is handed on in `persisted`.

use super::apply::ApplyCmd;
use super::durable_acks;
use super::group::Group;
use super::observe::observe;
use super::store::{add_entry, wal_hs};
use super::worker::Worker;
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::{NodeId, ReplicaId, Role};

impl Worker {
    /// Handles one `Ready` of `g`. (A removal of this replica is seen once the apply
    /// thread reports it, in `on_applied`, never here.)
    pub(super) fn handle_ready(&mut self, g: &mut Group) {
        let gid = g.id;
        let span = tracing::trace_span!("ready", group = gid);
        let _ready = span.enter();
        let rd = g.raft.ready_within(self.apply_budget());
        // 1. Messages now.
        for m in rd.messages {
            self.send(g, m);
        }
        // 2. The write: metadata, a received snapshot, entries, hard state.
        let wrote_before = self.writes.batch.encoded_len();
        if let Some(snap) = &rd.snapshot {
            if let Err(e) = self.install_snapshot(g, &snap.meta, &snap.data) {
                tracing::error!("group {gid}: installing snapshot {} failed: {e}", snap.meta.index);
                self.storage_failed();
                return;
            }
        }
        if g.meta_dirty {
            g.meta_dirty = false;
            self.writes.batch.set_meta(gid, &g.meta().encode());
        }
        let last = rd.entries.last().map(|e| (e.index, e.term));
        let split_at = self.sh.cfg.get().wal.max_write_bytes / 2;
        for e in &rd.entries {
            add_entry(&mut self.writes.batch, gid, e);
            if self.writes.batch.encoded_len() >= split_at {
                // More entries than one WAL write takes (a follower handed a turn's worth
                // of appends; a peer's single frame can carry millions of tiny entries):
                // written in several batches, each within the WAL's size. The group's
                // acknowledgements wait for the last (one thread's batches are durable in
                // order); what completes meanwhile is seen at the turn's end.
                if let Err(e) = self.writes.submit(&self.sh.wal, &self.sh.counters) {
                    tracing::error!(%e, "wal submit failed; engine stops");
                    self.storage_failed();
                    return;
                }
            }
        }
        if let Some(hs) = rd.hard_state {
            if rd.hard_state_commit_only && rd.entries.is_empty() && rd.snapshot.is_none() {
                // Only the commit index moved: written with a later write (`persisted`).
                self.lazy_commits.insert(gid);
            } else {
                self.writes.batch.set_hard_state(gid, wal_hs(hs));
                self.lazy_commits.remove(&gid);
            }
        }
        if self.writes.batch.encoded_len() != wrote_before {
            self.writes.count_group();
        }
        if last.is_some() || !rd.persisted_messages.is_empty() {
            let mut msgs = rd.persisted_messages;
            if self.writes.acks_when_durable() {
                // Acknowledgements go from the thread that makes the write durable
                // (`durable_acks`); the group still waits for the write (`after_write`).
                let me = self.sh.node;
                let mut kept = Vec::new();
                for m in msgs {
                    let to = durable_acks::goes_when_durable(&m).then(|| g.node_of(m.to)).flatten();
                    match to.filter(|&n| n != me) {
                        Some(to) => self.writes.send_when_durable(to, gid, m),
                        None => kept.push(m),
                    }
                }
                msgs = kept;
            }
            match g.raft.role() {
                // Its entries become appliable only with a commit index past what is
                // durable, whose arrival marks the write urgent (`Worker::step`).
                Role::Follower => self.writes.lazy_group(gid),
                // Its own write completes a quorum only with an acknowledgement, whose
                // arrival marks the write urgent (`Worker::step`).
                Role::Leader if g.raft.conf().has_voter_other_than(g.raft.id()) => {
                    self.writes.lazy_group(gid)
                }
                _ => self.writes.wake_when_durable(),
            }
            self.writes.after_write(gid, last, msgs);
        }
        // 3. Apply, on the apply thread (or here, for a small quick batch while that
        // thread is idle: `apply_lane`), with the waiters of these entries: it completes
        // proposals as it applies them (one hop to the caller); membership changes come
        // back to complete here once Raft applied them (`poll_applied`).
        if !rd.committed_entries.is_empty() {
            let waiters = g.waiters.committed(&mut self.tally, &rd.committed_entries);
            let bytes = rd.committed_entries.iter().map(|e| e.size() as u64).sum::<u64>();
            self.apply_backlog += rd.committed_entries.len() as u64;
            self.apply_backlog_bytes += bytes;
            g.log_bytes += bytes;
            let entries = rd.committed_entries;
            self.send_apply(ApplyCmd::Apply { group: gid, epoch: g.epoch, entries, waiters });
        }
        // 4. Reads.
        for rs in rd.read_states {
            g.reads.confirm(rs.ctx, rs.index);
        }
        g.reads.serve(g.raft.applied());
        // 5. What happened (metrics, tracing).
        if !rd.events.is_empty() {
            observe(&self.sh, g, &rd.events);
            if rd.events.iter().any(|e| matches!(e, crate::raft::Event::MembershipApplied { .. })) {
                if g.raft.role() == Role::Leader && !g.raft.conf().has_voter_other_than(g.raft.id()) {
                    // The only voter now: its own writes in flight commit alone.
                    self.writes.needed(gid);
                }
                // The apply thread applied the same change to its own copy: it keeps
                // Raft's instead (one membership per replica, not two).
                let conf = std::sync::Arc::clone(g.raft.conf_shared());
                self.send_apply(ApplyCmd::ShareConf { group: gid, conf });
            }
        }
    }

    /// Queues `m` of `g` for its replica's node (a snapshot to send is streamed instead).
    pub(super) fn send(&mut self, g: &mut Group, m: Message) {
        if let MessageBody::SendSnapshot { meta } = &m.body {
            self.send_snapshot(g, m.to, meta.clone());
            return;
        }
        let Some(node) = g.node_of(m.to) else {
            tracing::debug!("group {}: no node for replica {}", g.id, m.to);
            return;
        };
        if node == self.sh.node {
            return;
        }
        // Heartbeats are never skipped: a pending ReadIndex (ours or a follower's) may
        // wait on the round.
        self.outbox.push(node, g.id, m);
    }

    /// Messages to `node` were lost (its connection went down, or batches to it were
    /// dropped): the groups led here move their followers there from Replicate back to
    /// Probe.
    pub(super) fn peer_unreachable(&mut self, node: NodeId) {
        for g in self.groups.values_mut() {
            if g.raft.role() != Role::Leader {
                continue;
            }
            let me = g.raft.id();
            let lost: Vec<ReplicaId> = g
                .raft
                .conf()
                .members()
                .iter()
                .filter(|r| r.node == node && r.id != me)
                .map(|r| r.id)
                .collect();
            for r in lost {
                g.raft.report_unreachable(r);
            }
        }
    }
}
