//! Engines in one process over real QUIC (mutual TLS) on 127.0.0.1: groups replicate
//! identically; one engine stops, the groups it led re-elect and keep committing; it
//! restarts from disk on the same address and catches up (by snapshot where its peers
//! compacted past it).
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::Duration;

use common_engine::*;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn quic_cluster_replicates_fails_over_and_catches_up() {
    let mut c = Cluster::new_quic(3, 25);
    let groups: Vec<u64> = (1..=60).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
    }
    std::thread::scope(|s| {
        for chunk in groups.chunks(15) {
            let c = &c;
            s.spawn(move || {
                for &g in chunk {
                    c.wait_leader(g, LONG);
                    for i in 0..3u8 {
                        c.propose(g, &[i, g as u8]);
                    }
                }
            });
        }
    });
    for &g in &groups {
        c.wait_converged(g, &[1, 2, 3], 3, LONG);
    }
    let led: Vec<u64> = groups.iter().copied().take(5).collect();
    for &g in &led {
        c.transfer(g, 3, LONG);
    }
    c.stop(3);
    for &g in &groups {
        let n = if led.contains(&g) { 30 } else { 2 };
        for i in 0..n {
            c.propose(g, format!("down-{i}").as_bytes());
        }
        assert_ne!(c.wait_leader(g, LONG), 3);
    }
    c.start(3);
    for &g in &groups {
        let n = if led.contains(&g) { 33 } else { 5 };
        let st = c.wait_converged(g, &[1, 2, 3], n, LONG);
        assert_eq!(st.commands, n, "group {g}");
    }
    let m3 = c.engine(3).metrics();
    assert!(m3.snapshots_installed > 0, "node 3 caught up by snapshot over the bulk lane: {m3:?}");
}

/// Proposes `n` entries one at a time to `group` through its leader and returns the
/// summed metrics of every node, after all three applied them.
fn one_at_a_time(c: &Cluster, group: u64, n: u64) -> Vec<flotilla_engine::api::Metrics> {
    for i in 0..n {
        c.propose(group, format!("one-{i}").as_bytes());
    }
    c.wait_converged(group, &[1, 2, 3], n, LONG);
    (1..=3).map(|id| c.engine(id).metrics()).collect()
}

#[test]
fn workers_send_receive_and_sync_without_the_network_and_wal_threads() {
    // The defaults: `direct_network` and `inline_wal_writes` on. One proposal at a time
    // leaves each worker idle at the end of its turns, so it writes and syncs inline,
    // and every message is sent by a worker and handed to one by the receiving thread.
    // The WAL's last sync never rules inline writes out here (`inline_sync_max` at its
    // bound): that rule is `engine_slow_disk`'s, and a slow disk must not fail this test.
    let c = Cluster::new_quic_plain(
        3,
        10_000,
        Some(|cfg| {
            cfg.max_entry_bytes = 256 << 10;
            cfg.inline_sync_max = flotilla_engine::api::MAX_INLINE_SYNC_MAX;
        }),
    );
    c.create_group(1, &[1, 2, 3]);
    c.wait_leader(1, LONG);
    let m = one_at_a_time(&c, 1, 40);
    for (i, m) in m.iter().enumerate() {
        assert!(m.net_direct_sends > 0, "node {}: {m:?}", i + 1);
        assert_eq!(m.net_direct_sends, m.net_batches, "node {}: every batch sent by a worker", i + 1);
        assert!(m.net_direct_receives > 0, "node {}: {m:?}", i + 1);
        assert!(m.wal_inline_writes > 0, "node {}: {m:?}", i + 1);
    }
    let inline: u64 = m.iter().map(|m| m.wal_inline_writes).sum();
    let batches: u64 = m.iter().map(|m| m.wal_batches).sum();
    assert!(inline * 2 > batches, "most writes inline when idle: {inline} of {batches}");
    // Entries of 96 KiB, one at a time: their batches are larger than a worker writes
    // inline (64 KiB), so they go to the WAL's writer (20 to 21 of 24 batches per node
    // went inline without that rule; with it none of the entries' batches do).
    let before = m;
    for i in 0..20u8 {
        c.propose(1, &vec![i; 96 << 10]);
    }
    c.wait_converged(1, &[1, 2, 3], 60, LONG);
    for (id, b) in (1..=3).zip(&before) {
        let m = c.engine(id).metrics();
        let (inline, batches) = (m.wal_inline_writes - b.wal_inline_writes, m.wal_batches - b.wal_batches);
        let bytes = m.wal_batch_bytes - b.wal_batch_bytes;
        assert!(bytes >= 20 * (96 << 10), "node {id}: {bytes} bytes written");
        assert!(inline * 4 <= batches, "node {id}: {inline} of {batches} batches inline");
    }
    drop(c);

    // Both off: everything through the network thread and the WAL's writer.
    let c = Cluster::new_quic_plain(
        3,
        10_000,
        Some(|cfg| {
            cfg.direct_network = false;
            cfg.inline_wal_writes = false;
        }),
    );
    c.create_group(1, &[1, 2, 3]);
    c.wait_leader(1, LONG);
    for m in one_at_a_time(&c, 1, 40) {
        assert_eq!((m.net_direct_sends, m.net_direct_receives, m.wal_inline_writes), (0, 0, 0), "{m:?}");
        assert!(m.net_batches > 0 && m.wal_batches > 0);
    }
}
