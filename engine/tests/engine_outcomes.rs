//! Outcomes at the runtime level (issue 10, point 1): a deposed leader's waiters never
//! hold the worker's pending limit forever (`propose_timeout_ticks`), and they resolve
//! `Indeterminate`, never `Dropped`, when the leader cannot learn what happened.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;

/// Tick 5 ms: 400 ticks = 2 s.
const PROPOSE_TIMEOUT_TICKS: u32 = 400;
const PENDING: usize = 1_000;

fn tweak(c: &mut EngineConfig) {
    // One worker: the isolated group and the healthy ones share it.
    c.workers = 1;
    // Long elections, so the leader is still leading while the 1,000 are proposed.
    c.raft.election_timeout_min_ticks = 100;
    c.raft.election_timeout_max_ticks = 200;
    c.read_timeout_ticks = 400;
    c.propose_timeout_ticks = PROPOSE_TIMEOUT_TICKS;
    // The 1,000 pending waiters fill most of the worker's budget.
    c.max_pending_proposals = PENDING + 100;
}

/// An isolated leader with 1,000 pending proposals sees every one resolve
/// `Indeterminate` within `propose_timeout_ticks` (not before half of it, not after it
/// plus slack), while the other groups on its worker keep committing proposals; once
/// they resolved, the worker's pending budget is free again.
#[test]
fn isolated_leader_pending_proposals_resolve_within_the_timeout() {
    let c = Cluster::new_tweaked(3, 100_000, tweak);
    c.create_group(1, &[1, 2, 3]);
    c.wait_leader(1, Duration::from_secs(20));
    c.transfer(1, 1, Duration::from_secs(20));
    // Groups 2 and 3 live on node 1 alone: the isolation does not touch them.
    c.create_group(2, &[1]);
    c.create_group(3, &[1]);
    c.wait_leader(2, Duration::from_secs(20));
    c.wait_leader(3, Duration::from_secs(20));
    c.propose(1, b"warm-up!");
    let e = c.engine(1);

    c.fault.isolate(1, &[2, 3]);
    let t0 = Instant::now();
    let pending: Vec<Proposal> = (0..PENDING as u64)
        .map(|i| e.propose(1, Bytes::copy_from_slice(&i.to_le_bytes())).unwrap())
        .collect();
    let timeout = c.tick * PROPOSE_TIMEOUT_TICKS;

    // The healthy groups on the same worker keep committing meanwhile.
    let stop = AtomicBool::new(false);
    let committed = AtomicU64::new(0);
    let results = std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let g = 2 + i % 2;
                let r = e.propose(g, Bytes::copy_from_slice(&i.to_le_bytes())).unwrap();
                match r.wait_timeout(Duration::from_secs(5)) {
                    Ok(Ok(_)) => committed.fetch_add(1, Ordering::Relaxed),
                    other => panic!("healthy group {g} refused a proposal: {other:?}"),
                };
            }
        });
        // Half way through the timeout nothing has resolved: they were pending.
        std::thread::sleep(timeout / 2);
        assert!(
            pending.iter().all(|p| !p.is_ready()),
            "a waiter resolved before its timeout (the leader cannot know the outcome)"
        );
        let during = committed.load(Ordering::Relaxed);
        let deadline = t0 + timeout + Duration::from_millis(1500);
        let mut results = Vec::with_capacity(PENDING);
        for p in pending {
            let left = deadline.saturating_duration_since(Instant::now());
            results.push(p.wait_timeout(left).unwrap_or_else(|_| panic!("a waiter outlived propose_timeout")));
        }
        let resolved_after = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        (results, during, resolved_after)
    });
    let (results, during, resolved_after) = results;
    let indeterminate = results.iter().filter(|r| matches!(r, Err(ProposeError::Indeterminate))).count();
    println!(
        "{PENDING} pending resolved after {resolved_after:?} (timeout {timeout:?}); healthy groups committed \
         {during} proposals in the first half of it, {} in all",
        committed.load(Ordering::Relaxed)
    );
    assert_eq!(indeterminate, PENDING, "every one resolves Indeterminate: {:?}", &results[..3]);
    assert!(during >= 20, "the other groups on the worker stalled: {during} commits");

    // The worker's pending budget is free again: more proposals than the 100 left
    // beside the expired waiters are all accepted.
    let more: Vec<Proposal> =
        (0..PENDING as u64).map(|i| e.propose(2, Bytes::copy_from_slice(&i.to_le_bytes())).unwrap()).collect();
    for p in more {
        let r = p.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(r.is_ok(), "the expired waiters still count against the worker: {r:?}");
    }
}
