//! The compaction policy: when a group's log is snapshotted and compacted. A group is due
//! once `compact_entries` applied entries, or `compact_bytes` of them, are past its
//! compaction point, and the log past it holds `compact_snapshot_percent` of the last
//! snapshot's bytes (so a large state is not rewritten for every small stretch of log;
//! past 16 × `compact_entries` entries, due whatever the size); every `compact_check_ticks`, past `max_wal_segments` live segments,
//! the groups pinning the oldest segments are forced (a bounded number per check) so an
//! idle group cannot hold the log's oldest segments forever. The rules are pure functions
//! ([`due`], [`check_due`]); the worker carries them out and takes the snapshot writer's
//! answer (`on_snapshot`).
//!
//! Never writes the snapshot file (the apply thread does) and never compacts past what
//! the file covers.

use super::apply::ApplyCmd;
use super::group::Group;
use super::shared::bump;
use super::snapfile;
use super::store::WalStore;
use super::worker::Worker;
use crate::api::{EngineConfig, EngineEvent};
use crate::raft::message::SnapshotMeta;

/// Groups one worker snapshots per check because they pin old WAL segments.
const MAX_FORCED_COMPACTIONS: usize = 64;

impl Worker {
    /// The compaction policy: asks the apply thread for a snapshot of the state machine
    /// once the log holds `compact_entries` applied entries, or `compact_bytes` of them,
    /// past the compaction point (answered in `on_snapshot`). `force` (the WAL names the
    /// group as pinning old segments) asks whenever anything applied is not compacted.
    pub(super) fn maybe_compact(&mut self, g: &mut Group) {
        self.compact_if(g, false);
    }

    /// Asks the apply thread for a snapshot of `g` if it is due ([`due`]) and none is
    /// asked already; returns whether it asked.
    fn compact_if(&mut self, g: &mut Group, force: bool) -> bool {
        let cfg = self.sh.cfg.get();
        let log =
            LogPast { applied: g.raft.applied(), snap: g.raft.storage().snap.index, bytes: g.log_bytes };
        let due = due(cfg, log, g.last_snapshot_bytes, force);
        if g.snapshotting || !due {
            return false;
        }
        g.snapshotting = true;
        self.send_apply(ApplyCmd::Snapshot { group: g.id, epoch: g.epoch });
        true
    }

    /// Every `compact_check_ticks`: past `max_wal_segments` live WAL segments, snapshots
    /// and compacts this worker's groups that pin the oldest segments (at most
    /// [`MAX_FORCED_COMPACTIONS`] per check), so an idle group cannot hold the log's
    /// oldest segments forever. Called by a tick turn that counted `counted` ticks.
    pub(super) fn compact_pinning_groups(&mut self, counted: u64) {
        let cfg = self.sh.cfg.get();
        if !check_due(self.ticks.saturating_sub(counted), self.ticks, cfg.compact_check_ticks) {
            return;
        }
        let live = self.sh.wal.segment_seqs().len();
        if live <= cfg.max_wal_segments {
            return;
        }
        let excess = live - cfg.max_wal_segments;
        let mut forced = 0;
        let mut busy = false;
        for pins in self.sh.wal.pinning_groups(excess) {
            for gid in pins.groups {
                if forced >= MAX_FORCED_COMPACTIONS {
                    return;
                }
                let Some(mut g) = self.groups.remove(&gid) else { continue };
                busy |= g.snapshotting;
                if self.compact_if(&mut g, true) {
                    forced += 1;
                    bump(&self.sh.counters.forced_compactions);
                }
                self.groups.insert(gid, g);
            }
        }
        if forced == 0 && !busy {
            // This worker's pinning groups are compacted: what still holds the segments
            // is dead records (freed by a compaction pass, which otherwise runs only when
            // the writer moves to a new segment) or other workers' groups.
            let _ = self.sh.wal.request_maintain();
        }
    }

    /// The snapshot-writer thread wrote (and fsynced) the snapshot file of `group` at
    /// `meta`: the log is compacted there. The file covers the state machine, so
    /// compaction may pass its durable `applied_index`: on open a state machine behind the
    /// compaction point is restored from the file.
    pub(super) fn on_snapshot(
        &mut self,
        group: u64,
        epoch: u64,
        meta: SnapshotMeta,
        result: Result<u64, String>,
    ) {
        if self.failed {
            return;
        }
        let Some(g) = self.groups.get_mut(&group).filter(|g| g.epoch == epoch) else { return };
        g.snapshotting = false;
        let replica = g.raft.id();
        let bytes = match result {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(group, index = meta.index, %e, "snapshot failed");
                return;
            }
        };
        let discard = |why: &str| {
            tracing::warn!("group {group}: snapshot at {} discarded: {why}", meta.index);
            snapfile::prune(&self.sh.snap_dir, group, |r, i| r == replica && i == meta.index);
        };
        if meta.index <= g.raft.storage().snap.index {
            // A snapshot installed meanwhile superseded it.
            return discard("superseded");
        }
        match g.raft.compact_to(meta.index) {
            Ok(m) if m == meta => {}
            Ok(m) => {
                // Raft compacted already; the file does not match what it says: keep the
                // old compaction point durable and drop the file.
                tracing::error!("group {group}: snapshot metadata {meta:?} differs from Raft's {m:?}");
                return discard("metadata mismatch");
            }
            Err(e) => return discard(&e.to_string()),
        }
        g.raft.storage_mut().snap = WalStore::shared_snap(&meta, g.raft.snapshot_shared());
        // Approximate: entries applied while the snapshot was written count as compacted.
        g.log_bytes = 0;
        g.last_snapshot_bytes = bytes;
        self.writes.batch.set_meta(group, &g.meta().encode());
        self.writes.batch.compact_to(group, meta.index + 1);
        self.writes.prune_after(group, replica, meta.index);
        bump(&self.sh.counters.compactions);
        self.publish(EngineEvent::SnapshotTaken { group, index: meta.index });
        tracing::debug!(group, index = meta.index, bytes, "snapshot taken, log compacted");
    }
}

/// A group's log past its compaction point: its state machine applied up to `applied`,
/// the log is compacted up to `snap`, and `bytes` of entries were applied since.
#[derive(Debug, Clone, Copy)]
pub(super) struct LogPast {
    pub(super) applied: u64,
    pub(super) snap: u64,
    pub(super) bytes: u64,
}

/// Entries past the compaction point, in units of `compact_entries`, that make a
/// snapshot due whatever the last snapshot's size.
const ENTRY_CAP_FACTOR: u64 = 16;

/// Whether a group with `log` past its compaction point, whose last snapshot held
/// `last_snapshot` bytes, is due for a snapshot: `compact_entries` entries or
/// `compact_bytes` bytes past the point, and at least `compact_snapshot_percent` of the
/// last snapshot's bytes logged since (or [`ENTRY_CAP_FACTOR`] × `compact_entries`
/// entries). `force` (the group pins old WAL segments): anything applied and not
/// compacted.
pub(super) fn due(cfg: &EngineConfig, log: LogPast, last_snapshot: u64, force: bool) -> bool {
    let LogPast { applied, snap, bytes } = log;
    if force {
        return applied > snap;
    }
    let entries = applied.saturating_sub(snap);
    let threshold = entries >= cfg.compact_entries || (entries > 0 && bytes >= cfg.compact_bytes);
    let worth = last_snapshot.saturating_mul(u64::from(cfg.compact_snapshot_percent)) / 100;
    threshold && (bytes >= worth || entries >= cfg.compact_entries.saturating_mul(ENTRY_CAP_FACTOR))
}

/// Whether the worker's clock, moving from tick `before` to tick `ticks` (several at once
/// when an idle worker slept: `EngineConfig::idle_wake_ticks`), passed a check for groups
/// pinning old WAL segments (every `compact_check_ticks`, at least 1 by validation).
fn check_due(before: u64, ticks: u64, compact_check_ticks: u32) -> bool {
    let every = u64::from(compact_check_ticks.max(1));
    ticks / every != before / every
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: u64, bytes: u64) -> EngineConfig {
        let mut c = EngineConfig::new(1, "/nonexistent");
        c.compact_entries = entries;
        c.compact_bytes = bytes;
        c
    }

    fn log(applied: u64, snap: u64, bytes: u64) -> LogPast {
        LogPast { applied, snap, bytes }
    }

    #[test]
    fn due_after_compact_entries_past_the_compaction_point() {
        let c = cfg(100, u64::MAX);
        assert!(!due(&c, log(99, 0, 0), 0, false));
        assert!(due(&c, log(100, 0, 0), 0, false));
        assert!(!due(&c, log(149, 50, 0), 0, false));
        assert!(due(&c, log(150, 50, 0), 0, false));
        // Saturates: a compaction point near the top never wraps into "due".
        assert!(!due(&c, log(u64::MAX - 1, u64::MAX - 10, 0), 0, false));
    }

    #[test]
    fn due_after_compact_bytes_if_anything_applied_is_not_compacted() {
        let c = cfg(1_000_000, 4096);
        assert!(!due(&c, log(10, 5, 4095), 0, false));
        assert!(due(&c, log(10, 5, 4096), 0, false));
        // Bytes alone never ask for a snapshot that compacts nothing.
        assert!(!due(&c, log(5, 5, 1 << 20), 0, false));
    }

    #[test]
    fn a_large_state_waits_for_as_much_log_as_its_last_snapshot() {
        let mut c = cfg(100, 4096);
        // 64 KiB of log, a last snapshot of 1 MiB: not worth rewriting yet.
        assert!(!due(&c, log(1_000, 0, 64 << 10), 1 << 20, false));
        assert!(!due(&c, log(1_599, 0, (1 << 20) - 1), 1 << 20, false));
        assert!(due(&c, log(1_600, 0, 1 << 20), 1 << 20, false), "as many bytes as the snapshot");
        // Past 16 x compact_entries, due whatever the size.
        assert!(due(&c, log(1_600, 0, 10), 1 << 30, false));
        assert!(!due(&c, log(1_599, 0, 10), 1 << 30, false));
        // Half the snapshot's size at 50 percent; the rule off at 0.
        c.compact_snapshot_percent = 50;
        assert!(due(&c, log(1_000, 0, 1 << 19), 1 << 20, false));
        c.compact_snapshot_percent = 0;
        assert!(due(&c, log(100, 0, 0), 1 << 30, false));
        // The thresholds still come first.
        assert!(!due(&c, log(99, 0, 4095), 0, false));
    }

    #[test]
    fn forced_whenever_anything_applied_is_not_compacted() {
        let c = cfg(1_000_000, u64::MAX);
        assert!(due(&c, log(6, 5, 0), 1 << 40, true));
        assert!(!due(&c, log(5, 5, 1 << 30), 0, true));
    }

    #[test]
    fn pinning_groups_checked_every_compact_check_ticks() {
        let hits: Vec<u64> = (1..=30).filter(|&t| check_due(t - 1, t, 10)).collect();
        assert_eq!(hits, vec![10, 20, 30]);
        assert!((1..=5).all(|t| check_due(t - 1, t, 1)));
        // Ticks counted several at a time: a check is due when the stride passed one.
        let hits: Vec<u64> = (1..=10).map(|w| w * 7).filter(|&t| check_due(t - 7, t, 10)).collect();
        assert_eq!(hits, vec![14, 21, 35, 42, 56, 63, 70], "every multiple of 10 passed once");
        assert!(!check_due(20, 20, 10), "no tick counted, nothing due");
    }
}
