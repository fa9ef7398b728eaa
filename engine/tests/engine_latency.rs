//! `Engine::latency_histograms`: the WAL's group-commit syncs and the state machines'
//! applies are timed, one recording per sync and per applied entry, so the histograms'
//! counts follow `Metrics::wal_syncs` and `Metrics::applied_entries`.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::Duration;

use common_engine::*;

#[test]
fn syncs_and_applies_are_timed() {
    let c = Cluster::new(1, 1_000_000);
    c.create_group(1, &[1]);
    c.wait_leader(1, Duration::from_secs(60));
    let e = c.engine(1);
    let before = e.latency_histograms();
    for i in 0..50u32 {
        c.propose(1, &i.to_le_bytes());
    }
    let after = e.latency_histograms();
    let m = e.metrics();
    // 50 applied writes, each timed (the leader's no-op and the founding entry too).
    assert!(after.apply.count >= before.apply.count + 50, "{before:?} -> {after:?}");
    assert_eq!(after.apply.buckets.iter().sum::<u64>(), after.apply.count);
    // The sync counters are bumped before the histogram records (read first here).
    // Every write was made durable: at least one sync per acknowledged proposal batch.
    assert!(after.wal_sync.count > before.wal_sync.count, "{before:?} -> {after:?}");
    assert!(after.wal_sync.count <= m.wal_syncs);
    assert_eq!(after.wal_sync.buckets.iter().sum::<u64>(), after.wal_sync.count);
    // The sum matches the engine's own total of the same calls.
    assert!(after.wal_sync.sum_nanos <= m.wal_sync_nanos_total);
    assert!(after.wal_sync.sum_nanos > 0);
}
