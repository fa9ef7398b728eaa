//! 1,000 groups on 3 and on 5 engines in one process over real QUIC (mutual TLS) on
//! 127.0.0.1: proposals apply identically on every replica; every group's leadership moves
//! to a chosen node; the engine leading every group stops, the groups re-elect and keep
//! committing, and it restarts from disk and catches up (by snapshot where its peers
//! compacted past it); a partition (the transport's fault wrapper) isolates a leader's
//! node: its groups move, nothing acknowledged is lost, and the entries its old leaders
//! appended after the cut never report success; on 5 engines a new member joins every
//! group as a learner, is promoted, and an old member is removed.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, Role};

const GROUPS: u64 = 1000;
const LONG: Duration = Duration::from_secs(60);
/// Ticks are coarser than the other tests' so 3,000 ticking replicas fit on 2 cores.
const TICK: Duration = Duration::from_millis(20);
const THREADS: usize = 25;

/// Runs `f` for every group on `THREADS` threads.
fn par(groups: &[u64], f: impl Fn(u64) + Sync) {
    let f = &f;
    std::thread::scope(|s| {
        for chunk in groups.chunks(groups.len().div_ceil(THREADS).max(1)) {
            s.spawn(move || chunk.iter().for_each(|&g| f(g)));
        }
    });
}

/// The node among `nodes` that leads `group` (bounded wait).
fn leader_among(c: &Cluster, group: u64, nodes: &[NodeId]) -> NodeId {
    let deadline = Instant::now() + LONG;
    loop {
        for &n in nodes {
            if c.engine(n).group_status(group).is_some_and(|s| s.role == Role::Leader) {
                return n;
            }
        }
        assert!(Instant::now() < deadline, "group {group}: no leader among {nodes:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Proposes through whichever of `nodes` leads (bounded retries), counting the
/// acknowledgement in `acked`.
fn propose_via(c: &Cluster, group: u64, nodes: &[NodeId], data: &[u8], acked: &Acked) {
    let deadline = Instant::now() + LONG;
    loop {
        assert!(Instant::now() < deadline, "group {group}: proposal never acknowledged");
        let l = leader_among(c, group, nodes);
        match c
            .engine(l)
            .propose(group, Bytes::copy_from_slice(data))
            .map(|p| p.wait_timeout(Duration::from_secs(10)))
        {
            Ok(Ok(Ok(_))) => {
                acked.add(group);
                return;
            }
            Ok(Ok(Err(e))) | Err(e) if matches!(e.class(), ErrorClass::Fatal | ErrorClass::Invalid) => {
                panic!("group {group}: {e}")
            }
            // Not appended (NotLeader, Busy, transfer) or overwritten: retry.
            Ok(Ok(Err(ProposeError::Dropped))) | Err(_) => {}
            // Appended with an unknown outcome (or none yet): it may still apply.
            Ok(Ok(Err(_))) | Ok(Err(_)) => acked.maybe(group),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Per group: commands acknowledged, and commands appended whose outcome the test could
/// not learn (they may or may not apply).
#[derive(Default)]
struct Acked(Mutex<HashMap<u64, (u64, u64)>>);

impl Acked {
    fn add(&self, g: u64) {
        self.0.lock().unwrap().entry(g).or_default().0 += 1;
    }
    fn maybe(&self, g: u64) {
        self.0.lock().unwrap().entry(g).or_default().1 += 1;
    }
    fn get(&self, g: u64) -> (u64, u64) {
        self.0.lock().unwrap().get(&g).copied().unwrap_or_default()
    }
}

/// Every replica of `group` on `nodes` applied the same commands in the same order (hash
/// chain): every acknowledged one, and of the rest at most those with unknown outcomes.
fn converged(c: &Cluster, group: u64, nodes: &[NodeId], acked: &Acked) {
    let (n, maybe) = acked.get(group);
    let st = c.wait_converged(group, nodes, n, LONG);
    assert!(
        (n..=n + maybe).contains(&st.commands),
        "group {group}: {} commands applied, {n} acknowledged (+{maybe} unknown)",
        st.commands
    );
}

#[test]
fn three_engines_1000_groups_transfer_failover_snapshot_catch_up_and_partition() {
    let started = Instant::now();
    let mut c = Cluster::new_quic_tick(3, 30, TICK);
    let all = [1, 2, 3];
    let groups: Vec<u64> = (1..=GROUPS).collect();
    for &g in &groups {
        c.create_group(g, &all);
    }
    let acked = Acked::default();
    par(&groups, |g| propose_via(&c, g, &all, &[1, g as u8], &acked));
    par(&groups, |g| converged(&c, g, &all, &acked));
    eprintln!("{GROUPS} groups created and replicated in {:?}", started.elapsed());

    // Every group's leadership to node 1.
    let t = Instant::now();
    par(&groups, |g| c.transfer(g, 1, LONG));
    let led_by_1 = groups.iter().filter(|&&g| c.leader(g) == Some(1)).count();
    assert!(led_by_1 as u64 >= GROUPS * 99 / 100, "only {led_by_1} groups led by node 1 after the transfers");
    eprintln!("leadership of {GROUPS} groups moved to node 1 in {:?}", t.elapsed());

    // Node 1 stops: every group re-elects on 2 and 3 and keeps committing; 50 groups
    // commit past their compaction threshold meanwhile.
    let t = Instant::now();
    c.stop(1);
    let heavy: Vec<u64> = groups.iter().copied().filter(|g| g % 20 == 0).collect();
    par(&groups, |g| {
        let n = if g % 20 == 0 { 40 } else { 1 };
        for i in 0..n {
            propose_via(&c, g, &[2, 3], format!("down-{i}").as_bytes(), &acked);
        }
    });
    eprintln!("{GROUPS} groups re-elected and committed without node 1 in {:?}", t.elapsed());
    let t = Instant::now();
    c.start(1);
    par(&groups, |g| converged(&c, g, &all, &acked));
    let m1 = c.engine(1).metrics();
    assert!(
        m1.snapshots_installed >= heavy.len() as u64,
        "node 1 caught up the {} compacted groups by snapshot: {m1:?}",
        heavy.len()
    );
    eprintln!("node 1 restarted and caught up in {:?}", t.elapsed());

    // Isolate node 2 while it leads: its groups move to 1 and 3; what its old leaders
    // append after the cut never succeeds.
    let t = Instant::now();
    par(&groups, |g| c.transfer(g, if g % 2 == 0 { 2 } else { 3 }, LONG));
    let led_by_2: Vec<u64> = groups.iter().copied().filter(|&g| c.leader(g) == Some(2)).collect();
    assert!(led_by_2.len() as u64 >= GROUPS / 3, "node 2 leads only {} groups", led_by_2.len());
    c.fault.isolate(2, &all);
    let stale: Vec<_> =
        led_by_2.iter().filter_map(|&g| c.engine(2).propose(g, Bytes::from_static(b"stale")).ok()).collect();
    assert!(!stale.is_empty(), "the isolated leaders appended nothing");
    par(&led_by_2, |g| propose_via(&c, g, &[1, 3], b"during", &acked));
    c.fault.heal();
    let (dropped, indeterminate) = (AtomicU64::new(0), AtomicU64::new(0));
    for p in stale {
        match p.wait_timeout(LONG) {
            Ok(Err(ProposeError::Dropped)) => dropped.fetch_add(1, Ordering::Relaxed),
            Ok(Err(ProposeError::Indeterminate)) => indeterminate.fetch_add(1, Ordering::Relaxed),
            other => panic!("an entry appended by an isolated old leader resolved {other:?}"),
        };
    }
    par(&groups, |g| converged(&c, g, &all, &acked));
    eprintln!(
        "partition of node 2 ({} groups moved; stale entries: {} dropped, {} indeterminate) healed in {:?}",
        led_by_2.len(),
        dropped.load(Ordering::Relaxed),
        indeterminate.load(Ordering::Relaxed),
        t.elapsed()
    );
    eprintln!("3-engine test: {:?}", started.elapsed());
}

#[test]
fn five_engines_1000_groups_add_learner_promote_remove() {
    let started = Instant::now();
    let c = Cluster::new_quic_tick(5, 10_000, TICK);
    let groups: Vec<u64> = (1..=GROUPS).collect();
    // Group g on three consecutive nodes of five.
    let members = |g: u64| -> Vec<NodeId> { (0..3).map(|k| (g + k) % 5 + 1).collect() };
    for &g in &groups {
        c.create_group(g, &members(g));
    }
    let acked = Acked::default();
    par(&groups, |g| propose_via(&c, g, &members(g), &[7, g as u8], &acked));
    par(&groups, |g| converged(&c, g, &members(g), &acked));
    eprintln!("{GROUPS} groups on 5 engines created and replicated in {:?}", started.elapsed());

    // A 4th node joins every group as a learner, is promoted, and the first member leaves.
    let t = Instant::now();
    par(&groups, |g| {
        let old = members(g);
        let new = (g + 3) % 5 + 1;
        change(&c, g, &old, MembershipChange::AddLearner(new));
        let with_new: Vec<NodeId> = old.iter().copied().chain([new]).collect();
        converged(&c, g, &with_new, &acked);
        wait_until(&format!("group {g}: node {new} applies its addition"), LONG, || {
            c.engine(new).group_status(g).is_some_and(|s| s.members.is_learner(s.replica))
        });
        change(&c, g, &old, MembershipChange::Promote { node: new, force: false });
        if c.leader(g) == Some(old[0]) {
            c.transfer(g, old[1], LONG);
        }
        change(&c, g, &with_new, MembershipChange::Remove(old[0]));
        let now: Vec<NodeId> = with_new[1..].to_vec();
        propose_via(&c, g, &now, b"after", &acked);
        converged(&c, g, &now, &acked);
        // Converged counts commands, and an earlier proposal of unknown outcome that
        // applied can make the count before `new` applied the removal: wait for it.
        wait_until(&format!("group {g}: node {} leaves node {new}'s view", old[0]), LONG, || {
            let s = c.engine(new).group_status(g).unwrap();
            assert!(s.members.is_voter(s.replica), "group {g}: node {new} votes");
            !s.members.members().iter().any(|r| r.node == old[0])
        });
    });
    // Every removed replica destroys itself: by applying its removal, or, if it missed
    // that entry, by the members' tombstone answer to its next message.
    par(&groups, |g| {
        let gone = members(g)[0];
        let deadline = Instant::now() + LONG;
        while c.engine(gone).group_status(g).is_some() {
            assert!(Instant::now() < deadline, "group {g}: removed replica on node {gone} never destroyed");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    eprintln!("learner added, promoted, old member removed in {GROUPS} groups in {:?}", t.elapsed());
    eprintln!("5-engine test: {:?}", started.elapsed());
}

/// Whether `ch` is in effect in the configuration the leader of `g` has applied.
fn in_effect(c: &Cluster, g: u64, nodes: &[NodeId], ch: &MembershipChange) -> bool {
    let l = leader_among(c, g, nodes);
    let Some(s) = c.engine(l).group_status(g) else { return false };
    let on = |node: NodeId| s.members.members().iter().find(|r| r.node == node).map(|r| r.id);
    match *ch {
        MembershipChange::AddLearner(n) => on(n).is_some(),
        MembershipChange::AddVoter(n) | MembershipChange::Promote { node: n, .. } => {
            on(n).is_some_and(|id| s.members.is_voter(id))
        }
        MembershipChange::Remove(n) => on(n).is_none(),
        _ => false,
    }
}

/// Applies `ch` to `g` through its leader among `nodes`, retrying what may be retried. An
/// outcome the engine cannot know (`Indeterminate`: on a loaded machine a leader change or
/// the propose timeout between the two steps of a removal) is settled the way an embedder
/// must: by reading the applied configuration, retrying only if the change is not in it.
fn change(c: &Cluster, g: u64, nodes: &[NodeId], ch: MembershipChange) {
    let deadline = Instant::now() + LONG;
    loop {
        assert!(Instant::now() < deadline, "group {g}: change {ch:?} not applied");
        let l = leader_among(c, g, nodes);
        match c.engine(l).change_membership(g, ch.clone()).map(|p| p.wait_timeout(Duration::from_secs(10))) {
            Ok(Ok(Ok(()))) => return,
            Ok(Ok(Err(MembershipError::Indeterminate))) => {
                let settle = Instant::now() + Duration::from_secs(5);
                while Instant::now() < settle {
                    if in_effect(c, g, nodes, &ch) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Ok(Ok(Err(
                MembershipError::LeaderNotReady
                | MembershipError::Dropped
                | MembershipError::ChangePending
                // A leader that handed off to `old[1]` and has not heard its new term yet
                // still leads, with the transfer pending, and is found first among `nodes`.
                | MembershipError::TransferInProgress
                | MembershipError::Busy
                | MembershipError::LearnerNotCaughtUp { .. }
                | MembershipError::NotLeader { .. },
            ))) => {}
            Ok(Ok(Err(e))) => panic!("group {g}: {ch:?}: {e}"),
            Ok(Err(_)) | Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
