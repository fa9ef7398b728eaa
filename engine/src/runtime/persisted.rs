//! The worker's side of its WAL write pipeline (`write_pipeline`): submits the turn's
//! batch, and once a write is durable (in submission order) hands on what waited for it:
//! `Raft::on_persisted` and the persisted messages of each group, apply commands held
//! until a snapshot's log reset is durable, tombstone records now durable, snapshot files
//! to prune, founding replicas to start.
//!
//! Never waits for a write (the worker's loop selects on the oldest ticket), never builds
//! the batch (each concern adds its records: `ready`, `snapshots`, `compaction`,
//! `lifecycle`, `tombstones`). A failed write stops the engine (`stop`).

use super::clock;
use super::store::wal_hs;

/// A worker writes and syncs inline only a batch of at most this many bytes. Inline
/// writes save two thread hand-overs (about 0.1 ms) for a small write; a larger one takes
/// long enough that they do not show, and its sync can take tens of ms on a busy disk
/// (40 to 68 ms seen for batches of MBs in the kv server's 16 KiB run), during which the
/// worker steps nothing.
const INLINE_BATCH_MAX: usize = 64 << 10;
use super::worker::Worker;
use crate::raft::message::{Message, MessageBody};

impl Worker {
    /// Submits this turn's batch (if any) and records what waits for it.
    pub(super) fn submit(&mut self) {
        self.submit_as(false);
    }

    /// Submits the batch at the end of a turn: written and synced on this thread
    /// (`EngineConfig::inline_wal_writes`) when nothing else waits for the worker (its
    /// mailboxes are empty, no write of its own in flight, and no active group other
    /// than those waiting for this batch: a sync can stall for 100 ms on a busy disk, and
    /// a worker inside it neither sends heartbeats nor answers them) and the WAL's last
    /// sync was quick (at most `EngineConfig::inline_sync_max`: on a slow or stalling disk
    /// it hands its batches over and keeps stepping its groups) and the batch is small ([`INLINE_BATCH_MAX`]),
    /// after the turn's messages
    /// went out (a leader's appends leave before its own write is durable, thesis
    /// §10.2.1); otherwise handed to the WAL's writer.
    pub(super) fn submit_turn(&mut self) {
        let (enabled, sync_max) = {
            let cfg = self.sh.cfg.get();
            (cfg.inline_wal_writes, cfg.inline_sync_max)
        };
        let quiet = self.rx.is_empty() && self.ctl_rx.as_ref().map_or(true, |c| c.is_empty());
        let inline = !self.failed
            && !self.writes.batch.is_empty()
            && enabled
            && self.sh.wal.last_sync_duration() <= sync_max
            && self.writes.batch.encoded_len() <= INLINE_BATCH_MAX
            && quiet
            && self.writes.holds_all(self.active.iter());
        self.writes.set_quiet(quiet);
        if inline || quiet {
            // Before the write: a quiet worker's batch may carry its acknowledgements in
            // the durability hook, which must not overtake the messages of this turn and
            // of the writes completed before it (one order per peer).
            self.flush_outbox();
        }
        self.submit_as(inline);
    }

    fn submit_as(&mut self, inline: bool) {
        if self.failed {
            self.writes.discard();
            return;
        }
        if !self.writes.batch.is_empty() {
            self.write_lazy_commits();
        }
        let res = if inline {
            self.writes.write_inline(&self.sh.wal, &self.sh.counters)
        } else {
            self.writes.submit(&self.sh.wal, &self.sh.counters)
        };
        if let Err(e) = res {
            tracing::error!(%e, "wal submit failed; engine stops");
            self.storage_failed();
            return;
        }
        // Writes that need nothing durable complete at once (in order).
        self.poll_inflight();
    }

    /// Adds the hard states deferred in `lazy_commits` to the batch: each group's current
    /// one, which is at least as new as any it handed out (a vote or term written early
    /// is harmless; a commit index past the durable log is clamped at recovery). A group
    /// no longer here (destroyed, or out of the map mid-turn) is dropped: losing a commit
    /// index only means recovery learns it again from the leader.
    pub(super) fn write_lazy_commits(&mut self) {
        for gid in self.lazy_commits.drain() {
            if let Some(g) = self.groups.get(&gid) {
                self.writes.batch.set_hard_state(gid, wal_hs(g.raft.hard_state()));
                self.writes.count_group();
            }
        }
    }

    /// At a tick: deferred commit indexes are written once no write is in flight (an
    /// idle worker's commit indexes reach the disk within a tick, off any entry's path).
    pub(super) fn flush_lazy_commits_when_idle(&mut self) {
        if !self.lazy_commits.is_empty() && self.writes.is_idle() && !self.failed {
            self.write_lazy_commits();
        }
    }

    /// Completes the writes that are durable, oldest first.
    pub(super) fn poll_inflight(&mut self) {
        while let Some(res) = self.writes.poll_durable() {
            let done = match res {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(%e, "wal write failed; engine stops");
                    self.storage_failed();
                    return;
                }
            };
            if let Some(cmds) = self.apply_hold.durable(done.seq) {
                // Crash tests: a snapshot's log reset is durable, the state machine not
                // restored yet (recovery restores it from the snapshot file).
                fail::fail_point!("engine::snapshot_reset_durable_before_restore");
                for cmd in cmds {
                    self.send_apply_now(cmd);
                }
            }
            if !self.tombstones_unsynced.is_empty() {
                self.tombstones_unsynced.retain(|_, seq| *seq > done.seq);
            }
            for (gid, replica, keep) in done.prune {
                self.snap.prune_below(gid, replica, keep);
            }
            if !done.creates.is_empty() {
                self.start_created(done.creates);
            }
            for (gid, last, msgs) in done.after {
                let Some(g) = self.groups.get_mut(&gid) else { continue };
                if let Some((i, t)) = last {
                    g.raft.set_now(clock::now_nanos());
                    g.raft.on_persisted(i, t);
                }
                // Crash tests: a granted vote is durable, its reply not sent.
                fail::fail_point!(
                    "engine::vote_durable_before_reply",
                    msgs.iter().any(is_vote_grant),
                    |_| {}
                );
                for m in msgs {
                    // Split borrow: `send` needs the worker and the group.
                    let node = g.node_of(m.to);
                    if let Some(node) = node.filter(|&n| n != self.sh.node) {
                        self.outbox.push(node, gid, m);
                    }
                }
                Self::touch(&mut self.touched, g);
            }
        }
    }
}

/// A granted (non-PreVote) vote: its hard state carries a new vote.
#[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
fn is_vote_grant(m: &Message) -> bool {
    matches!(m.body, MessageBody::RequestVoteResponse { pre_vote: false, reject: false, .. })
}
