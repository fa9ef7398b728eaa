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
