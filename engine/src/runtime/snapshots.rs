//! Snapshots between replicas: installing one received from the leader (its file durable
//! under its final name first, the state machine restored from that file once the log
//! reset is durable) and streaming one to a follower (chunks read lazily from the file,
//! from where the follower reported it got).
//!
//! Never takes a snapshot of a local state machine (`compaction` asks the apply thread),
//! never receives chunks (`snap_receive` writes them to disk).

use std::fs::{self, File};

use bytes::Bytes;

use super::apply::ApplyCmd;
use super::command::NetCmd;
use super::group::Group;
use super::shared::bump;
use super::snapfile;
use super::store::wal_hs;
use super::worker::Worker;
use crate::raft::message::SnapshotMeta;
use crate::raft::types::ReplicaId;
use crate::transport::SnapshotChunks;

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
        let restore = ApplyCmd::Restore { group: g.id, meta: meta.clone(), file };
        self.apply_hold.hold_until(self.writes.next_seq(), restore);
        g.waiters.snapshot_installed(&mut self.tally, meta.index, meta.term);
        g.raft.storage_mut().snap = meta.clone();
        g.log_bytes = 0;
        let gid = g.id;
        self.writes.batch.remove_group(gid);
        self.writes.batch.set_meta(gid, &g.meta().encode());
        self.writes.batch.compact_to(gid, meta.index + 1);
        self.writes.batch.set_hard_state(gid, wal_hs(g.raft.hard_state()));
        g.meta_dirty = false;
        self.writes.prune_after(gid, g.raft.id(), meta.index);
        bump(&self.sh.counters.snapshots_installed);
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
        tracing::info!(group = g.id, index = meta.index, to, node, offset = start, "snapshot stream started");
        tracing::info!("group {}: streaming snapshot {} to replica {to} on node {node}", g.id, meta.index);
        let chunks: SnapshotChunks = Box::new(chunks);
        let _ = self.sh.net.send(NetCmd::Snapshot { to: node, group: g.id, replica: to, chunks });
    }
}
