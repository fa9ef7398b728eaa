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
use super::snapfile;
use super::worker::Worker;
use crate::raft::message::{Message, MessageBody};

impl Worker {
    /// Submits this turn's batch (if any) and records what waits for it.
    pub(super) fn submit(&mut self) {
        if self.failed {
            self.writes.discard();
            return;
        }
        if let Err(e) = self.writes.submit(&self.sh.wal, &self.sh.counters) {
            tracing::error!(%e, "wal submit failed; engine stops");
            self.storage_failed();
            return;
        }
        // Writes that need nothing durable complete at once (in order).
        self.poll_inflight();
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
                snapfile::prune(&self.sh.snap_dir, gid, |r, i| r == replica && i < keep);
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
