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

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common_engine::wait_until(what, LONG, f);
}

/// Worker ticks of node `id` so far, per worker.
fn ticks(c: &Cluster, id: NodeId) -> u64 {
    c.engine(id).metrics().worker_ticks / WORKERS
}

fn quiesced(c: &Cluster, id: NodeId) -> u64 {
    c.engine(id).metrics().quiesced_groups
}

fn change(c: &Cluster, g: u64, ch: MembershipChange) {
    c.change(g, ch, LONG, |e| {
        matches!(
            e,
            MembershipError::LeaderNotReady
                | MembershipError::ChangePending
                | MembershipError::NotLeader { .. }
                | MembershipError::Dropped
                | MembershipError::Indeterminate
        )
    });
}

/// A quiesced follower whose path from the members loses all replication traffic
/// (appends, heartbeats, snapshots, tombstones: it hears nothing, and no connection drops,
/// so no liveness event wakes it) misses its own removal and stays quiesced, believing it
/// is a member; leadership then moves to another member. A quiesced replica sends nothing
/// and the leader no longer addresses it except by re-sent tombstones, which stay lost
/// here (node 2, the new leader, is cut off from node 3 for good), so only the stale-peer
/// check (its probes, answered with a tombstone by node 1, a member whose configuration
/// removed it, though no longer the leader) can find it: it is destroyed within three
/// probe intervals of its worker's ticks after node 1's path heals, with no liveness wake
/// of the replica on its node.
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
    assert!(c.engine(3).group_status(g).is_some(), "node 3 heard nothing yet");

    let wakes_before = c.engine(3).metrics().liveness_wakes;
    // Node 2 (the leader, which re-sends tombstones) stays cut off from node 3; node 1's
    // path heals.
    c.fault.block(2, 3);
    c.fault.unblock_replication(2, 3);
    c.fault.unblock_replication(1, 3);
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
    eprintln!("node 3's replica destroyed {} ticks after the heal (bound {bound})", ticks(&c, 3) - t0);
    let m3 = c.engine(3).metrics();
    assert_eq!(m3.replicas_destroyed, 1);
    assert_eq!(m3.liveness_wakes, wakes_before, "a liveness event woke the replica");
    assert!(m3.gc_probes_sent >= 1, "destroyed by its stale-peer probe");
    assert!(c.engine(1).metrics().tombstones_sent >= 1, "node 1 answered with a tombstone");
    // The remaining members are unaffected.
    c.fault.heal();
    c.propose(g, b"d");
    c.wait_converged(g, &[1, 2], 4, LONG);
}

fn removed(c: &Cluster, id: NodeId, g: u64) -> Vec<flotilla_engine::raft::Replica> {
    c.engine(id).group_status(g).map(|s| s.members.removed).unwrap_or_default()
}

/// The leader's side (TiKV raftstore-v2's removed records): every member records the
/// removal in its applied configuration; a replica that can tell nobody anything (node 3
/// sends nothing at all, so its probes, campaigns and answers are lost) is still
/// destroyed, by the tombstone the leader re-sends every GC interval, and a leader change
/// in between does not stop it: the new leader's configuration carries the record. The
/// record stays until the removed replica's node confirms its destruction (its answers
/// are lost while node 3 sends nothing); once they pass, a replicated `Forget` drops it
/// on every member.
#[test]
fn leader_resends_tombstones_until_the_removed_replica_confirms() {
    let c = Cluster::new_tweaked(3, 10_000, |cfg| cfg.gc_interval_elections = 2);
    let g = 32;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    c.wait_converged(g, &[1, 2, 3], 1, LONG);
    let id3 = c.engine(3).group_status(g).unwrap().replica;

    // Node 3 hears no replication traffic and everything it sends is lost.
    c.fault.block_replication(1, 3);
    c.fault.block_replication(2, 3);
    c.fault.block(3, 1);
    c.fault.block(3, 2);
    change(&c, g, MembershipChange::Remove(3));
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2], 2, LONG);
    for n in [1, 2] {
        assert_eq!(
            removed(&c, n, g),
            vec![flotilla_engine::raft::Replica::new(3, id3)],
            "node {n} records the removal"
        );
    }
    c.transfer(g, 2, LONG);
    assert!(c.engine(3).group_status(g).is_some(), "node 3 heard nothing yet");
    // Tombstones pass to node 3 again (nothing else is addressed to it any more); what it
    // sends is still lost.
    c.fault.unblock_replication(1, 3);
    c.fault.unblock_replication(2, 3);

    // Two GC intervals of 2 maximum election timeouts (20 ticks) each, twice over.
    let bound = 2 * 2 * 2 * 20;
    let t0 = ticks(&c, 3);
    let deadline = Instant::now() + LONG;
    while c.engine(3).group_status(g).is_some() {
        let t = ticks(&c, 3) - t0;
        assert!(t <= bound, "after {t} ticks node 3's removed replica lives on");
        assert!(Instant::now() < deadline, "node 3's workers stopped ticking");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("node 3's replica destroyed {} ticks after tombstones pass (bound {bound})", ticks(&c, 3) - t0);
    assert_eq!(c.engine(3).metrics().replicas_destroyed, 1);
    assert!(c.engine(2).metrics().tombstones_resent >= 1, "the new leader re-sent the tombstone");
    // Node 3's confirmations are lost: the record stays, and leaders keep re-sending.
    let resent = c.engine(2).metrics().tombstones_resent;
    wait_until("another re-send", || c.engine(2).metrics().tombstones_resent > resent);
    for n in [1, 2] {
        assert_eq!(removed(&c, n, g).len(), 1, "node {n} forgot an unconfirmed removal");
        assert_eq!(c.engine(n).metrics().removals_confirmed, 0);
    }

    c.fault.heal();
    let t_heal = ticks(&c, 2);
    wait_until("the removal record forgotten on nodes 1 and 2", || {
        [1, 2].iter().all(|&n| removed(&c, n, g).is_empty())
    });
    assert_eq!(c.engine(2).metrics().removals_confirmed, 1);
    eprintln!("removal record forgotten {} ticks after the heal", ticks(&c, 2) - t_heal);
    assert!(c.engine(3).group_status(g).is_none(), "node 3 never recreates the replica");
    c.propose(g, b"c");
    c.wait_converged(g, &[1, 2], 3, LONG);
}
