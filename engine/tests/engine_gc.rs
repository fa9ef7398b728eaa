//! Clean-up of removed replicas in the runtime (issue 10 point 4): engines in one process
//! over the in-memory transport with the fault wrapper. Counted in worker ticks
//! (`Metrics::worker_ticks`), every wait also bounded by a generous deadline.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::{Duration, Instant};

use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::NodeId;

const LONG: Duration = Duration::from_secs(60);

/// Workers per engine in `common_engine::config`.
const WORKERS: u64 = 2;

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Worker ticks of node `id` so far, per worker.
fn ticks(c: &Cluster, id: NodeId) -> u64 {
    c.engine(id).metrics().worker_ticks / WORKERS
}

fn quiesced(c: &Cluster, id: NodeId) -> u64 {
    c.engine(id).metrics().quiesced_groups
}

fn change(c: &Cluster, g: u64, ch: MembershipChange) {
    let deadline = Instant::now() + LONG;
    loop {
        assert!(Instant::now() < deadline, "group {g}: change {ch:?} not applied");
        let Some(l) = c.leader(g) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        match c.engine(l).change_membership(g, ch.clone()).map(|p| p.wait_timeout(Duration::from_secs(5))) {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(
                MembershipError::LeaderNotReady
                | MembershipError::ChangePending
                | MembershipError::NotLeader { .. }
                | MembershipError::Dropped
                | MembershipError::Indeterminate,
            ))) => {}
            Ok(Ok(Err(e))) => panic!("group {g}: {ch:?}: {e}"),
            Ok(Err(_)) | Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A quiesced follower whose path from the members loses all replication traffic
/// (appends, heartbeats, snapshots: it hears nothing, and no connection drops, so no
/// liveness event wakes it) misses its own removal and stays quiesced, believing it is a
/// member; leadership then moves to another member. A quiesced replica sends nothing and
/// the leader no longer addresses it, so only the stale-peer check (its probes, answered
/// with a tombstone by any member whose configuration removed it) can find it: it is
/// destroyed within three probe intervals of its worker's ticks after the path heals,
/// with no liveness wake on its node.
#[test]
fn quiesced_follower_removed_while_cut_off_is_destroyed_after_leader_change() {
    let c = Cluster::new(3, 10_000);
    let g = 31;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    c.wait_converged(g, &[1, 2, 3], 1, LONG);
    wait_until("the group quiesced on every node", || (1..=3).all(|id| quiesced(&c, id) == 1));

    // Node 3 hears no replication traffic from then on.
    c.fault.block_replication(1, 3);
    c.fault.block_replication(2, 3);
    change(&c, g, MembershipChange::Remove(3));
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2], 2, LONG);
    let s1 = c.engine(1).group_status(g).unwrap();
    assert!(!s1.members.members().iter().any(|r| r.node == 3), "the removal applied on node 1");
    // A leader change in between: node 1, which removed the replica, leads no more.
    c.transfer(g, 2, LONG);
    c.propose(g, b"c");
    c.wait_converged(g, &[1, 2], 3, LONG);
    wait_until("the group quiesced again on nodes 1 and 2", || (1..=2).all(|id| quiesced(&c, id) == 1));

    let wakes_before = c.engine(3).metrics().liveness_wakes;
    c.fault.heal();
    let t0 = ticks(&c, 3);
    // Three probe intervals: 10 maximum election timeouts (20 ticks) each.
    let bound = 3 * 10 * 20;
    let deadline = Instant::now() + LONG;
    while c.engine(3).group_status(g).is_some() {
        let t = ticks(&c, 3) - t0;
        assert!(t <= bound, "after {t} ticks since healing, node 3's removed replica lives on");
        assert!(Instant::now() < deadline, "node 3's workers stopped ticking");
        std::thread::sleep(Duration::from_millis(5));
    }
    let m3 = c.engine(3).metrics();
    assert_eq!(m3.replicas_destroyed, 1);
    assert_eq!(m3.liveness_wakes, wakes_before, "a liveness event woke the replica");
    assert!(m3.gc_probes_sent >= 1, "destroyed by its stale-peer probe");
    let sent: u64 = [1, 2].iter().map(|&n| c.engine(n).metrics().tombstones_sent).sum();
    assert!(sent >= 1, "a member answered with a tombstone");
    // The remaining members are unaffected.
    c.propose(g, b"d");
    c.wait_converged(g, &[1, 2], 4, LONG);
}
