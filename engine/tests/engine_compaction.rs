//! The log compaction policy (issue 5): a group is snapshotted and its log compacted when
//! its applied log passes a count (`compact_entries`) or a size (`compact_bytes`)
//! threshold, or when the WAL names it as pinning old segments (`max_wal_segments`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::Duration;

use common_engine::*;
use flotilla_engine::api::*;

const LONG: Duration = Duration::from_secs(30);

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common_engine::wait_until(what, LONG, f);
}

fn size_threshold(c: &mut EngineConfig) {
    c.compact_bytes = 64 << 10;
}

/// 40 entries of 4 KiB pass a 64 KiB size threshold long before the (huge) count
/// threshold; with the default size threshold the same load compacts nothing.
#[test]
fn log_past_the_size_threshold_is_compacted() {
    let c = Cluster::new_tweaked(1, 1_000_000, size_threshold);
    c.create_group(1, &[1]);
    c.wait_leader(1, LONG);
    for i in 0..40u8 {
        c.propose(1, &[i; 4096]);
    }
    wait_until("a compaction by size", || c.engine(1).metrics().compactions >= 1);
    assert_eq!(c.engine(1).metrics().forced_compactions, 0);

    let d = Cluster::new(1, 1_000_000);
    d.create_group(1, &[1]);
    d.wait_leader(1, LONG);
    for i in 0..40u8 {
        d.propose(1, &[i; 4096]);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(d.engine(1).metrics().compactions, 0, "160 KiB is far below the default 64 MiB");
}

fn small_wal(c: &mut EngineConfig) {
    c.wal.segment_size = 64 << 10;
    c.wal.max_write_bytes = 16 << 10;
    c.max_entry_bytes = 4 << 10;
    c.max_uncommitted_bytes = 16 << 10;
    c.max_pending_wal_bytes = 1 << 20;
    c.compact_bytes = 1 << 40;
    c.max_wal_segments = 4;
    c.compact_check_ticks = 5;
}

/// An idle group whose few records sit in the oldest segment would keep it (and every
/// segment after it that another group compacts) alive forever; the WAL names it as
/// pinning, and the engine snapshots and compacts it, so the log shrinks back to
/// `max_wal_segments`.
#[test]
fn groups_pinning_old_segments_are_compacted() {
    let c = Cluster::new_tweaked(1, 1_000_000, small_wal);
    let e = || c.engine(1);
    c.create_group(1, &[1]);
    c.create_group(2, &[1]);
    c.wait_leader(1, LONG);
    c.wait_leader(2, LONG);
    // Group 1 writes a little, then idles.
    for i in 0..3u8 {
        c.propose(1, &[i; 100]);
    }
    // Group 2 writes ~1 MiB: far more than 4 segments of 64 KiB.
    for i in 0..256u32 {
        c.propose(2, &[(i % 251) as u8; 4000]);
    }
    wait_until("forced compactions", || e().metrics().forced_compactions >= 2);
    wait_until("the log back within max_wal_segments (+ the active one)", || e().metrics().wal_segments <= 5);
    // The WAL's compaction passes freed the segments, and each pass is timed.
    let m = e().metrics();
    assert!(m.wal_compaction_passes > 0 && m.wal_compaction_segments_freed > 0, "{m:?}");
    assert!(e().latency_histograms().wal_compaction.count >= m.wal_compaction_passes);
    // ~1 MiB through segments of 64 KiB: every new segment is counted, made new or recycled.
    assert!(m.wal_segments_created + m.wal_segments_recycled >= 8, "{m:?}");
    // Both groups still serve: compaction lost nothing.
    c.propose(1, b"after");
    c.propose(2, b"after");
    assert_eq!(c.state(1, 1).unwrap().commands, 4);
}
