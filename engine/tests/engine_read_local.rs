//! Local, not linearizable reads (issue 13 point 5): `read_local` at a follower serves
//! its applied index while within the bound, refuses once the entries bound is exceeded
//! (its apply lags while it still hears the leader) and once the time bound is exceeded
//! (it is partitioned: it cannot learn that the commit moved), and serves again after it
//! catches up.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;

const WAIT: Duration = Duration::from_secs(60);

fn tweak(c: &mut EngineConfig) {
    // Elections take 1-2 s (5 ms ticks): a partitioned follower keeps knowing its leader
    // (no PreVote round yet) well past the 100 ms time bound below.
    c.raft.election_timeout_min_ticks = 200;
    c.raft.election_timeout_max_ticks = 400;
    c.read_timeout_ticks = 800;
}

/// Proposes at node 1 (the leader) until stopped; bounded in count and time.
fn load(c: &Cluster, stop: &AtomicBool, done: &AtomicU64) {
    let deadline = Instant::now() + WAIT;
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) && i < 100_000 && Instant::now() < deadline {
        i += 1;
        match c.engine(1).propose(1, Bytes::copy_from_slice(&i.to_le_bytes())) {
            Ok(p) => {
                if let Ok(Ok(_)) = p.wait_timeout(Duration::from_secs(5)) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

#[test]
fn read_local_refuses_past_its_bounds_and_serves_again_after_catching_up() {
    let c = Cluster::new_tweaked(3, 1_000_000, tweak);
    // Node 3's state machine holds up the command "block" while the gate is closed.
    let gate = Arc::new(AtomicBool::new(true));
    for m in [1, 2, 3] {
        let st = c.node(m).reg.lock().unwrap().entry(1).or_default().clone();
        let sm = ChainSm::new(st);
        let sm: Box<dyn StateMachine> = if m == 3 { Box::new(sm.gated(gate.clone())) } else { Box::new(sm) };
        c.engine(m).create_group(1, &[1, 2, 3], sm).unwrap();
    }
    c.wait_leader(1, WAIT);
    c.transfer(1, 1, WAIT);
    let follower = c.engine(3);
    let loose = Staleness::new(Some(1_000), Some(Duration::from_secs(5)));
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| load(&c, &stop, &done));
        wait_until("load running", WAIT, || done.load(Ordering::Relaxed) >= 20);

        // 1. Within the bounds: served, at the follower's applied index.
        wait_until("read_local served", WAIT, || follower.read_local(1, loose).is_ok());
        let at = follower.read_local(1, loose).unwrap();
        assert!(at > 0 && at <= follower.group_status(1).unwrap().applied);

        // 2. Entries bound: node 3's apply is held up while it keeps hearing the leader.
        gate.store(false, Ordering::Release);
        // Applied at once on nodes 1 and 2 (no gate there): its answer is not needed.
        drop(c.engine(1).propose(1, Bytes::from_static(b"block")).unwrap());
        let held = done.load(Ordering::Relaxed);
        wait_until("load goes on past the held apply", WAIT, || done.load(Ordering::Relaxed) >= held + 50);
        let entries = Staleness::new(Some(10), None);
        let mut refused = None;
        wait_until("entries bound refuses", WAIT, || match follower.read_local(1, entries) {
            Err(e @ ReadLocalError::TooStale { .. }) => {
                refused = Some(e);
                true
            }
            _ => false,
        });
        let Some(ReadLocalError::TooStale { applied, known_commit, since_leader_ms }) = refused else {
            unreachable!()
        };
        assert!(known_commit > applied + 10, "applied {applied}, known commit {known_commit}");
        assert!(since_leader_ms < 5_000, "it still hears the leader: {since_leader_ms} ms");
        // The time bound alone still serves it: it hears the leader.
        assert!(follower.read_local(1, Staleness::new(None, Some(Duration::from_secs(5)))).is_ok());
        gate.store(true, Ordering::Release);
        wait_until("caught up: entries bound serves again", WAIT, || follower.read_local(1, entries).is_ok());

        // 3. Time bound: node 3 cut off; the leader's commit moves on without it.
        let time = Staleness::new(Some(1_000), Some(Duration::from_millis(100)));
        assert!(follower.read_local(1, time).is_ok() || wait_ok(follower, time));
        c.fault.isolate(3, &[1, 2]);
        let cut = done.load(Ordering::Relaxed);
        let mut refused = None;
        wait_until("time bound refuses the partitioned follower", WAIT, || {
            match follower.read_local(1, time) {
                Ok(_) => false,
                Err(e) => {
                    refused = Some(e);
                    true
                }
            }
        });
        match refused {
            Some(ReadLocalError::TooStale { since_leader_ms, .. }) => assert!(since_leader_ms > 100),
            other => panic!("expected TooStale, got {other:?}"),
        }
        wait_until("writes go on without node 3", WAIT, || done.load(Ordering::Relaxed) >= cut + 20);
        let leader_commit = c.engine(1).group_status(1).unwrap().commit;
        assert!(follower.group_status(1).unwrap().applied < leader_commit, "node 3 is behind");
        // Linearizable reads are a different path: read_index at the leader still works.
        assert!(c.engine(1).read_index(1).unwrap().wait_timeout(WAIT).is_ok());

        // 4. Healed: it hears the leader again, catches up, and serves.
        c.fault.heal();
        wait_until("healed follower serves again", WAIT, || {
            follower.read_local(1, time).is_ok_and(|at| at >= leader_commit)
        });
        stop.store(true, Ordering::Relaxed);
    });
    // Not hosted: refused.
    assert!(matches!(follower.read_local(77, loose), Err(ReadLocalError::GroupNotFound(77))));
}

/// Waits until `read_local` serves within `bound` (a tight time bound can miss one
/// heartbeat interval on a busy machine).
fn wait_ok(e: &Engine, bound: Staleness) -> bool {
    wait_until("read_local serves within the time bound", WAIT, || e.read_local(1, bound).is_ok());
    true
}
