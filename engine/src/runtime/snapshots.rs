//! Snapshots between replicas: installing one received from the leader (its file durable
//! under its final name first, the state machine restored from that file once the log
//! reset is durable) and streaming one to a follower (chunks read lazily from the file,
//! from where the follower reported it got).
//!
//! Also the worker's side of received streams (`snap_receive` keeps them and writes them
//! to disk): chunks taken out of the message flow, progress reports sent to leaders and
//! recorded from followers, the complete file stepped into Raft as one data-less chunk.
//!
//! Never takes a snapshot of a local state machine (`compaction` asks the apply thread),
//! never writes a received chunk itself (the snapshot I/O thread does).

use std::fs::{self, File};

use bytes::Bytes;

use super::apply::ApplyCmd;
use super::command::NetCmd;
use super::group::Group;
use super::shared::{bump, bump_by};
use super::snap_receive::{Polled, StreamKey};
use super::snapfile;
use super::store::{wal_hs, WalStore};
use super::worker::Worker;
use crate::api::EngineEvent;
use crate::raft::message::{Message, MessageBody, SnapshotChunk, SnapshotMeta};
use crate::raft::types::{NodeId, Replica, ReplicaId, Role};
use crate::transport::{SnapshotChunks, WireItem};

/// Bytes of state-machine data per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 256 << 10;

impl Worker {
    /// Installs a snapshot received from the leader: the file durable under its final
    /// name first (the stream's complete partial file renamed into place, or, for a
    /// snapshot Raft assembled itself, `data` written), then the state machine (restored
    /// from that file), then the WAL reset (in this turn's batch).
    pub(super) fn install_snapshot(
        &mut self,
        g: &mut Group,
        meta: &SnapshotMeta,
        data: &Bytes,
    ) -> std::io::Result<()> {
        let dir = &self.sh.snap_dir;
        let path = snapfile::path(dir, g.id, g.raft.id(), meta.index);
        match self.snap.take_completed(g.id, meta) {
            Some(partial) => {
                // Complete and fdatasynced by the snapshot I/O thread: only the name moves.
                fs::rename(&partial, &path)?;
                File::open(dir)?.sync_all()?;
            }
            None => snapfile::save(dir, g.id, g.raft.id(), meta, data)?,
        }
        // Crash tests: the file is durable, the WAL reset record not written.
        fail::fail_point!("engine::snapshot_file_before_reset");
        // Opened now: the restore reads this file even if a later snapshot prunes the name.
        let file = File::open(&path)?;
        // Persist, then apply: the restore (and every apply command after it) waits until
        // the write carrying the reset below is durable (`poll_inflight`), so a state
        // machine that persists its applied index is never ahead of the log.
        let restore = ApplyCmd::Restore { group: g.id, meta: Box::new(meta.clone()), file };
        self.apply_hold.hold_until(self.writes.next_seq(), restore);
        g.waiters.snapshot_installed(&mut self.tally, meta.index, meta.term);
        g.raft.storage_mut().snap = WalStore::shared_snap(meta, g.raft.snapshot_shared());
        g.log_bytes = 0;
        let gid = g.id;
        self.writes.batch.remove_group(gid);
        self.writes.batch.set_meta(gid, &g.meta().encode());
        self.writes.batch.compact_to(gid, meta.index + 1);
        self.writes.batch.set_hard_state(gid, wal_hs(g.raft.hard_state()));
        g.meta_dirty = false;
        self.writes.prune_after(gid, g.raft.id(), meta.index);
        bump(&self.sh.counters.snapshots_installed);
        self.publish(EngineEvent::SnapshotInstalled { group: gid, index: meta.index });
        tracing::info!(group = gid, index = meta.index, term = meta.term, "snapshot installed");
        tracing::info!("group {gid}: installed snapshot at {}", meta.index);
        Ok(())
    }

    /// Streams the snapshot file at `meta` to replica `to`: the chunks are read from the
    /// file lazily as the transport sends them (the file is opened now, so pruning it
    /// meanwhile does not cut the stream).
    pub(super) fn send_snapshot(&mut self, g: &mut Group, to: ReplicaId, meta: SnapshotMeta) {
        let ids = (g.raft.id(), to, g.raft.term());
        let start = self.snapshot_start(g.id, to, g.raft.term(), &meta);
        let (Some(node), Ok(chunks)) =
            (g.node_of(to), snapfile::chunks(&self.sh.snap_dir, g.id, ids, &meta, start, SNAPSHOT_CHUNK))
        else {
            g.raft.report_snapshot(to, false);
            return;
        };
        bump(&self.sh.counters.snapshots_sent);
        self.publish(EngineEvent::SnapshotSent {
            group: g.id,
            to: Replica::new(node, to),
            index: meta.index,
        });
        tracing::info!(group = g.id, index = meta.index, to, node, offset = start, "snapshot stream started");
        tracing::info!("group {}: streaming snapshot {} to replica {to} on node {node}", g.id, meta.index);
        let chunks: SnapshotChunks = Box::new(chunks);
        let _ = self.sh.net.send(NetCmd::Snapshot { to: node, group: g.id, replica: to, chunks });
    }

    /// A `SnapshotChunk` from node `from` for `group` (its sender checked): to the group's
    /// received stream (`snap_receive`), never into Raft.
    pub(super) fn receive_chunk(&mut self, from: NodeId, group: u64, m: Message) {
        let Some(g) = self.groups.get(&group) else { return };
        let MessageBody::SnapshotChunk(chunk) = &m.body else { return };
        if m.to != g.raft.id() || m.term < g.raft.term() {
            // Not for this replica, or from a deposed leader.
            bump(&self.sh.counters.snapshot_chunks_dropped);
            return;
        }
        if chunk.meta.index <= g.raft.committed() {
            // Nothing new: the last chunk goes to Raft (data-less), which answers so the
            // leader moves on.
            bump(&self.sh.counters.snapshot_chunks_dropped);
            if chunk.last {
                let body = MessageBody::SnapshotChunk(SnapshotChunk {
                    data: Bytes::new(),
                    seq: 0,
                    offset: 0,
                    ..chunk.clone()
                });
                self.step_synthesized(group, Message { body, ..m.clone() });
            }
            return;
        }
        let key =
            StreamKey { from: m.from, leader_term: m.term, index: chunk.meta.index, term: chunk.meta.term };
        let cfg = self.sh.cfg.get();
        let r = self.snap.receive(
            group,
            key,
            from,
            m.to,
            chunk,
            cfg.max_snapshot_bytes,
            self.ticks,
            &cfg.snapshot_check,
        );
        if r.refused {
            bump(&self.sh.counters.snapshot_streams_refused);
            tracing::warn!(
                group,
                index = chunk.meta.index,
                node = from,
                offset = chunk.offset,
                max = cfg.max_snapshot_bytes,
                "snapshot stream refused: it exceeds max_snapshot_bytes"
            );
        }
        if r.dropped {
            bump(&self.sh.counters.snapshot_chunks_dropped);
        }
        if let Some(offset) = r.report {
            let item = WireItem::SnapshotProgress {
                group,
                from: m.to,
                to: m.from,
                leader_term: m.term,
                index: chunk.meta.index,
                term: chunk.meta.term,
                offset,
            };
            self.send_progress(from, item);
        }
    }

    fn send_progress(&self, node: NodeId, item: WireItem) {
        bump(&self.sh.counters.snapshot_progress_sent);
        let _ = self.sh.net.send(NetCmd::Send { to: node, items: vec![item] });
    }

    /// Steps a synthesized data-less last chunk into `group`: Raft runs its term, leader
    /// and commit checks as for any chunk.
    fn step_synthesized(&mut self, group: u64, msg: Message) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        Self::credit_idle(g, self.ticks);
        if let Err(e) = g.raft.step(msg) {
            tracing::debug!("group {group}: received snapshot refused: {e}");
        }
        Self::touch(&mut self.touched, g);
    }

    /// Takes the snapshot I/O thread's reports: durable offsets go to the leaders,
    /// complete files to Raft, failed streams are counted.
    pub(super) fn poll_snapshot_io(&mut self) {
        while let Some(p) = self.snap.poll(self.ticks) {
            match p {
                Polled::Progress { node, item } => self.send_progress(node, item),
                Polled::Complete { group, msg } => {
                    tracing::debug!(group, "received snapshot complete and durable");
                    self.step_synthesized(group, msg);
                }
                Polled::Failed { group, error } => {
                    bump(&self.sh.counters.snapshot_streams_failed);
                    tracing::warn!(group, %error, "a received snapshot failed (written or checked); the stream is dropped");
                }
            }
        }
    }

    /// Once a tick: received streams idle for ten maximum election timeouts are dropped
    /// (their leader went away; the next one starts over).
    pub(super) fn expire_snapshot_streams(&mut self) {
        let ttl = 10 * u64::from(self.sh.cfg.get().raft.election_timeout_max_ticks);
        let n = self.snap.expire(self.ticks, ttl);
        bump_by(&self.sh.counters.snapshot_streams_failed, n as u64);
    }

    /// A follower's report (`WireItem::SnapshotProgress`) from node `from`: recorded if
    /// this replica leads `group` in `leader_term` and the follower lives on `from`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot_progress(
        &mut self,
        from: NodeId,
        group: u64,
        replica: ReplicaId,
        to: ReplicaId,
        leader_term: u64,
        index: u64,
        term: u64,
        offset: u64,
    ) {
        let Some(g) = self.groups.get(&group) else { return };
        if g.raft.id() != to || g.raft.term() != leader_term || g.raft.role() != Role::Leader {
            return;
        }
        if g.node_of(replica) != Some(from) {
            bump(&self.sh.counters.dropped_wrong_sender);
            return;
        }
        bump(&self.sh.counters.snapshot_progress_received);
        self.snap.record_progress(group, replica, leader_term, (index, term), offset);
    }

    /// The offset to start a stream of `meta` to `to` at: where that follower reported
    /// it got with this very snapshot in this term, else 0 (a resumed stream is counted).
    fn snapshot_start(&self, group: u64, to: ReplicaId, term: u64, meta: &SnapshotMeta) -> u64 {
        let at = self.snap.resume_offset(group, to, term, meta);
        if at > 0 {
            bump(&self.sh.counters.snapshot_streams_resumed);
            bump_by(&self.sh.counters.snapshot_resumed_bytes, at);
        }
        at
    }
}
