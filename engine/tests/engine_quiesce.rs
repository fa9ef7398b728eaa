//! Quiescence in the runtime: engines in one process over the in-memory transport.
//! Counted, not timed: the tests read the engine's tick counters (`Metrics::raft_ticks`,
//! `Metrics::worker_ticks`) and bound every wait by worker ticks and a generous deadline.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::{Duration, Instant};

use common_engine::*;
use flotilla_engine::raft::{NodeId, Role};

const LONG: Duration = Duration::from_secs(120);

/// Worker ticks of node `id` so far, per worker.
fn ticks(c: &Cluster, id: NodeId) -> u64 {
    c.engine(id).metrics().worker_ticks / 2
}

/// "10,000 quiesced groups cost zero ticks per worker turn": once every group quiesced,
/// the workers keep ticking (their clock runs) but give no Raft tick to any group. A
/// proposal wakes its group, which is ticked again (so the counter does count), and
/// quiesces again.
#[test]
fn ten_thousand_quiesced_groups_cost_zero_ticks() {
    let c = Cluster::new(3, 10_000);
    let groups: Vec<u64> = (1..=10_000).collect();
    create_led(&c, &groups, |g| g % 3 + 1);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    for id in 1..=3 {
        let m = c.engine(id).metrics();
        assert_eq!(m.quiesced_groups, 10_000);
    }
    let before: Vec<u64> = (1..=3).map(|id| c.engine(id).metrics().raft_ticks).collect();
    let t0 = ticks(&c, 1);
    let deadline = Instant::now() + LONG;
    while ticks(&c, 1) < t0 + 50 {
        assert!(Instant::now() < deadline, "workers stopped ticking");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after: Vec<u64> = (1..=3).map(|id| c.engine(id).metrics().raft_ticks).collect();
    assert_eq!(after, before, "50 worker ticks with every group quiesced gave Raft ticks");
    // Everything every node led was elected by design: one election per group.
    let leaders: usize = groups.iter().filter(|&&g| c.leader(g) == Some(g % 3 + 1)).take(300).count();
    assert_eq!(leaders, 300, "the designated first leaders lead");

    // A proposal wakes one group: ticks resume (for it), then it quiesces again.
    let idx = c.propose(7, b"wake");
    assert!(idx > 1);
    c.wait_converged(7, &[1, 2, 3], 1, LONG);
    assert!((1..=3).any(|id| c.engine(id).metrics().raft_ticks > before[id as usize - 1]));
    wait_all_quiesced(&c, groups.len() as u64, LONG);
}

/// "A node restarted faster than the idle timeout while all groups are quiesced: every
/// group it led has a leader again within a bounded number of ticks." The followers'
/// replicas were quiesced, believing in node 1's leaders; node 1 comes back at once with
/// no memory of leading. The new incarnation (liveness) and the returning replicas'
/// campaigns wake them; their idle ticks are credited so they vote.
///
/// The election timeout is 100-200 ticks, as in `lost_quiesce_heartbeats_cause_no_election`
/// and for the same reason: with 10-20 ticks (50-100 ms), a machine whose cores are busy
/// with other work (issue 11 point 10) starves a leader's thread past it before the
/// groups quiesce, and a rightful election moves a leadership the test sets up. The bound
/// is in maximum election timeouts, so it scales with it.
#[test]
fn restart_faster_than_idle_timeout_re_elects_every_group() {
    const MAX_ELECTION: u32 = 200;
    let mut c = Cluster::new_tweaked(3, 10_000, |c| {
        c.raft.election_timeout_min_ticks = MAX_ELECTION / 2;
        c.raft.election_timeout_max_ticks = MAX_ELECTION;
        c.read_timeout_ticks = 10 * MAX_ELECTION;
    });
    let groups: Vec<u64> = (1..=300).collect();
    create_led(&c, &groups, |_| 1);
    for &g in &groups {
        assert_eq!(c.wait_leader(g, LONG), 1);
    }
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    let t0 = [ticks(&c, 2), ticks(&c, 3)];
    c.stop(1);
    c.start(1);
    // Bound: a handful of maximum election timeouts of the survivors'
    // workers, counted on the one that ran less (a worker ticks only when its thread runs,
    // so on a busy machine a starved node holds the count back instead of letting the
    // other's ticks run out the bound while it cannot answer).
    let bound = 10 * u64::from(MAX_ELECTION);
    let deadline = Instant::now() + LONG;
    let mut missing: Vec<u64> = groups.clone();
    while !missing.is_empty() {
        missing.retain(|&g| c.leader(g).is_none());
        let t = (ticks(&c, 2) - t0[0]).min(ticks(&c, 3) - t0[1]);
        assert!(
            t <= bound,
            "after {t} ticks, {} groups have no leader (e.g. {:?})",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let woken = c.engine(2).metrics().liveness_wakes + c.engine(3).metrics().liveness_wakes;
    assert!(woken > 0, "node 1's new incarnation woke quiesced followers");
    for &g in groups.iter().step_by(30) {
        c.propose(g, b"after restart");
        c.wait_converged(g, &[1, 2, 3], 1, LONG);
    }
    assert!(groups.iter().all(|&g| c
        .leader(g)
        .is_some_and(|l| { c.engine(l).group_status(g).is_some_and(|s| s.role == Role::Leader) })));
}

/// Liveness wake-ups are rate-limited: when the node that led every group stops, each
/// worker of a surviving node wakes at most `max_wakes_per_tick` (here 2) quiesced groups
/// per tick, so 300 groups are woken over many ticks rather than at once; the groups still
/// all elect new leaders.
#[test]
fn liveness_wakes_are_rate_limited() {
    let mut c = Cluster::new_tweaked(3, 10_000, |cfg| cfg.max_wakes_per_tick = 2);
    let groups: Vec<u64> = (1..=300).collect();
    create_led(&c, &groups, |_| 1);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    let m0 = c.engine(2).metrics();
    c.stop(1);
    let deadline = Instant::now() + LONG;
    let mut max_seen = 0;
    loop {
        let m = c.engine(2).metrics();
        let (wakes, ticks) = (m.liveness_wakes - m0.liveness_wakes, m.worker_ticks - m0.worker_ticks);
        // Each tick of each worker (worker_ticks sums them) wakes at most 2.
        assert!(wakes <= 2 * (ticks + 2), "{wakes} liveness wakes in {ticks} worker ticks");
        max_seen = max_seen.max(wakes);
        if groups.iter().all(|&g| c.leader(g).is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "groups without a leader after node 1 stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(max_seen > 2, "node liveness woke quiesced groups ({max_seen})");
}

/// Quiescence without spurious elections: 1,000 groups go through 20 quiesce/wake cycles
/// (a read at each leader wakes its group, which then quiesces again) while 10% of quiesce
/// heartbeats are lost. A follower that missed its quiesce heartbeat gets it re-sent
/// until it acknowledges, instead of timing out and campaigning; and followers that merely
/// slept do not count their sleep as silence from their leader (only a liveness wake
/// does), so no PreVote would be granted anyway. Zero campaigns, zero new leaders.
///
/// The election timeout is 100-200 ticks (0.5-1 s), not the default 10-20: on a busy
/// machine (issue 11 point 10: the suites run while other processes keep both cores
/// busy) a worker thread can wait longer than 50 ms for a core, and a follower whose
/// leader's thread did not run for a whole election timeout campaigns rightly. The
/// rule under test does not depend on the timeout's length: the leader re-sends for up
/// to one maximum election timeout, and a follower that never gets its quiesce heartbeat
/// never quiesces, so `wait_all_quiesced` (every replica on every node) still fails.
#[test]
fn lost_quiesce_heartbeats_cause_no_election() {
    const GROUPS: u64 = 1_000;
    const CYCLES: usize = 20;
    let c = Cluster::new_tweaked(3, 10_000, |c| {
        c.raft.election_timeout_min_ticks = 100;
        c.raft.election_timeout_max_ticks = 200;
        c.read_timeout_ticks = 2_000;
    });
    let groups: Vec<u64> = (1..=GROUPS).collect();
    create_led(&c, &groups, |g| g % 3 + 1);
    wait_all_quiesced(&c, GROUPS, LONG);
    let elections = || (1..=3).map(|id| c.engine(id).metrics().elections).sum::<u64>();
    let leaders = || (1..=3).map(|id| c.engine(id).metrics().leaders_elected).sum::<u64>();
    let (e0, l0) = (elections(), leaders());
    let (seen0, dropped0) = c.fault.quiesce_heartbeats();
    assert_eq!(dropped0, 0);
    c.fault.set_quiesce_drop_ppm(100_000);
    for cycle in 0..CYCLES {
        let reads: Vec<_> = groups
            .iter()
            .map(|&g| {
                let l = c.leader(g).unwrap_or_else(|| panic!("cycle {cycle}: group {g} has no leader"));
                (g, c.engine(l).read_index(g).unwrap())
            })
            .collect();
        for (g, r) in reads {
            match r.wait_timeout(LONG) {
                Ok(Ok(_)) => {}
                other => panic!("cycle {cycle}: read on group {g}: {:?}", other.map_err(|_| "no answer")),
            }
        }
        wait_all_quiesced(&c, GROUPS, LONG);
        assert_eq!(elections(), e0, "cycle {cycle}: a campaign started");
    }
    let (seen, dropped) = c.fault.quiesce_heartbeats();
    let (seen, dropped) = (seen - seen0, dropped - dropped0);
    eprintln!("{CYCLES} cycles of {GROUPS} groups: {seen} quiesce heartbeats, {dropped} dropped");
    assert!(seen >= 2 * GROUPS * CYCLES as u64, "every cycle quiesced every follower: {seen}");
    assert!(dropped * 20 >= seen, "about 10% were dropped: {dropped} of {seen}");
    assert_eq!(elections(), e0, "campaigns after quiescence");
    assert_eq!(leaders(), l0, "leaders elected after quiescence");
}

/// The stale-peer check of idle groups is paced (`gc_replicas_per_tick`, issue 16 point
/// 7): 300 quiesced groups, a pass due every 20 ticks (`gc_interval_elections = 1`), at
/// most one replica examined per worker tick. Unpaced, each of node 1's two workers would
/// go over its ~150 replicas every 20 ticks (about 10 probes a tick); paced, node 1 sends
/// at most 2 probes (one per other node) per worker tick, plus what its workers held
/// before the window (at most 2 per replica), and still probes: a pass completes within
/// the window.
#[test]
fn stale_peer_probes_of_idle_groups_are_paced_per_tick() {
    let c = Cluster::new_tweaked(3, 10_000, |cfg| {
        cfg.gc_interval_elections = 1;
        cfg.gc_replicas_per_tick = 1;
    });
    let groups: Vec<u64> = (1..=300).collect();
    create_led(&c, &groups, |g| g % 3 + 1);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    let m0 = c.engine(1).metrics();
    let deadline = Instant::now() + LONG;
    while ticks(&c, 1) < m0.worker_ticks / 2 + 300 {
        assert!(Instant::now() < deadline, "workers stopped ticking");
        std::thread::sleep(Duration::from_millis(10));
    }
    let m1 = c.engine(1).metrics();
    let probes = m1.gc_probes_sent - m0.gc_probes_sent;
    let worker_ticks = m1.worker_ticks - m0.worker_ticks;
    let bound = 2 * worker_ticks + 2 * groups.len() as u64;
    eprintln!("{probes} probes over {worker_ticks} worker ticks (bound {bound})");
    assert!(probes <= bound, "{probes} probes over {worker_ticks} worker ticks: not paced (bound {bound})");
    assert!(probes >= 100, "only {probes} probes: the check stopped");
    assert_eq!(m1.raft_ticks, m0.raft_ticks, "probes wake no group");
}

/// An idle worker sleeps `idle_wake_ticks` ticks at a time (issue 16 point 7): with
/// every group quiesced, its clock wakes it about once per 10 ticks (the default), and it
/// counts the ticks it slept (never more than the wall clock holds: at most one interval
/// per 5 ms tick, plus a stride). A proposal after the sleep wakes its group at once,
/// commits, and the group quiesces again. With `idle_wake_ticks = 1` the clock wakes the
/// worker for every tick, as before.
#[test]
fn an_idle_worker_sleeps_several_ticks_at_a_time() {
    fn window(c: &Cluster) -> (u64, u64, Duration) {
        let m0 = c.engine(1).metrics();
        let t0 = Instant::now();
        let deadline = t0 + LONG;
        while ticks(c, 1) < m0.worker_ticks / 2 + 400 {
            assert!(Instant::now() < deadline, "workers stopped ticking");
            std::thread::sleep(Duration::from_millis(10));
        }
        let m1 = c.engine(1).metrics();
        assert_eq!(m1.raft_ticks, m0.raft_ticks, "no group ticked while idle");
        (m1.worker_ticks - m0.worker_ticks, m1.worker_tick_wakes - m0.worker_tick_wakes, t0.elapsed())
    }
    let groups: Vec<u64> = (1..=60).collect();

    let c = Cluster::new(3, 10_000);
    create_led(&c, &groups, |g| g % 3 + 1);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    let (worker_ticks, wakes, wall) = window(&c);
    eprintln!("idle_wake_ticks 10: {worker_ticks} ticks in {wakes} wake-ups over {wall:?}");
    assert!(
        wakes * 4 <= worker_ticks,
        "{wakes} clock wake-ups for {worker_ticks} ticks: the idle worker did not sleep"
    );
    // Two workers, one tick per 5 ms each at most, plus a stride each.
    let wall_max = 2 * (wall.as_millis() as u64 / 5 + 10);
    assert!(worker_ticks <= wall_max, "{worker_ticks} ticks in {wall:?}: more than the wall clock held");
    let idx = c.propose(7, b"after sleeping");
    assert!(idx > 1);
    c.wait_converged(7, &[1, 2, 3], 1, LONG);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    drop(c);

    let c = Cluster::new_tweaked(3, 10_000, |cfg| cfg.idle_wake_ticks = 1);
    create_led(&c, &groups, |g| g % 3 + 1);
    wait_all_quiesced(&c, groups.len() as u64, LONG);
    let (worker_ticks, wakes, wall) = window(&c);
    eprintln!("idle_wake_ticks 1: {worker_ticks} ticks in {wakes} wake-ups over {wall:?}");
    assert_eq!(wakes, worker_ticks, "one wake-up per tick");
}
