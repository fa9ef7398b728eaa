//! Event subscriptions and the leader view, over engines in one process (in-memory
//! transport): one leader-changed event per group per node for every leadership transfer
//! of 1,000 groups, `Engine::leader` agreeing on every node, a slow subscriber told
//! exactly how many events it lost while the workers went on, and the lifecycle,
//! membership, snapshot and quiescence events. Waits are on conditions with generous
//! deadlines; every loop is bounded.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common_engine::*;
use flotilla_engine::api::{EngineEvent, EventStream, MembershipChange, MembershipError, RecvError};
use flotilla_engine::raft::NodeId;

const LONG: Duration = Duration::from_secs(120);
const GROUPS: u64 = 1_000;

/// Long election timeouts: on a busy 2-core machine a worker may wait for a core longer
/// than a short timeout, and a spurious election would be a true (but unwanted) event.
fn calm(c: &mut flotilla_engine::api::EngineConfig) {
    c.raft.election_timeout_min_ticks = 100;
    c.raft.election_timeout_max_ticks = 200;
    c.read_timeout_ticks = 2_000;
}

/// Everything `s` holds now (bounded: a stream holds at most its capacity, plus one
/// `Lagged` report per event).
fn drain(s: &mut EventStream) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        match s.try_recv() {
            Ok(ev) => out.push(ev),
            Err(RecvError::Empty) => return out,
            Err(e) => panic!("stream: {e}"),
        }
    }
    panic!("stream never emptied");
}

/// Receives from `s` until `f` holds for an event, within `timeout`; returns the events
/// received, that one last.
fn recv_until(s: &mut EventStream, timeout: Duration, f: impl Fn(&EngineEvent) -> bool) -> Vec<EngineEvent> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match s.recv_timeout(Duration::from_millis(100)) {
            Ok(ev) => {
                seen.push(ev);
                if f(&ev) {
                    return seen;
                }
            }
            Err(RecvError::Empty) => {}
            Err(e) => panic!("stream: {e}"),
        }
    }
    panic!("event not received in {timeout:?}; received {seen:?}");
}

/// The leader-changed events in `evs`, by group.
fn leader_changes(evs: &[EngineEvent]) -> HashMap<u64, Vec<(NodeId, u64)>> {
    let mut m: HashMap<u64, Vec<(NodeId, u64)>> = HashMap::new();
    for ev in evs {
        if let EngineEvent::LeaderChanged { group, leader, term } = *ev {
            m.entry(group).or_default().push((leader.node, term));
        }
    }
    m
}

/// Counts events of each group for which `f` holds.
fn count_by_group(evs: &[EngineEvent], f: impl Fn(&EngineEvent) -> bool) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for ev in evs.iter().filter(|e| f(e)) {
        *m.entry(ev.group().unwrap()).or_insert(0) += 1;
    }
    m
}

/// "Every leadership transfer in a 1,000-group test produces exactly one leader-changed
/// event per group on each node", with the new leader and the new term, and
/// `Engine::leader` agrees on every node. A slow subscriber (capacity 16, never read)
/// meanwhile loses events, is told exactly how many, and the workers kept going.
#[test]
fn every_transfer_gives_one_leader_changed_event_per_group_on_each_node() {
    const SLOW_CAPACITY: usize = 16;
    let c = Cluster::new_tweaked(3, 10_000, calm);
    let mut slow = c.engine(1).subscribe(SLOW_CAPACITY).unwrap();
    let mut streams: Vec<EventStream> = (1..=3).map(|id| c.engine(id).subscribe(200_000).unwrap()).collect();
    let groups: Vec<u64> = (1..=GROUPS).collect();
    create_led(&c, &groups, |g| g % 3 + 1);
    // Every node knows a leader of every group, the same one.
    wait_until("every node knows every group's leader", LONG, || {
        groups.iter().all(|&g| {
            let l = c.engine(1).leader(g);
            l.is_some() && (2..=3).all(|id| c.engine(id).leader(g) == l)
        })
    });
    wait_all_quiesced(&c, GROUPS, LONG);
    let mut all_node1 = Vec::new();
    let before: HashMap<u64, (NodeId, u64)> = groups
        .iter()
        .map(|&g| {
            let l = c.engine(1).leader(g).unwrap();
            (g, (l.node, l.term))
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let evs = drain(s);
        assert!(!evs.iter().any(|e| matches!(e, EngineEvent::Lagged { .. })), "node {}: lagged", i + 1);
        let created = count_by_group(&evs, |e| matches!(e, EngineEvent::ReplicaCreated { .. }));
        assert_eq!(created.len() as u64, GROUPS, "node {}: a creation event per group", i + 1);
        assert!(created.values().all(|&n| n == 1));
        // The last leader each node announced is the one its view holds.
        let changes = leader_changes(&evs);
        for &g in &groups {
            assert_eq!(
                changes.get(&g).and_then(|v| v.last()),
                Some(&before[&g]),
                "node {}, group {g}",
                i + 1
            );
        }
        if i == 0 {
            all_node1.extend(evs);
        }
    }

    // Move every group's leadership to the next node.
    let target = |g: u64| before[&g].0 % 3 + 1;
    let moved = |g: u64| (1..=3).all(|id| c.engine(id).leader(g).is_some_and(|l| l.node == target(g)));
    let deadline = Instant::now() + LONG;
    let mut asked: HashMap<u64, Instant> = HashMap::new();
    loop {
        let left: Vec<u64> = groups.iter().copied().filter(|&g| !moved(g)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} groups did not move, e.g. {:?}", left.len(), &left[..1]);
        for g in left {
            // (Re)tried at the leader: a transfer aborts after an election timeout.
            if asked.get(&g).is_some_and(|t| t.elapsed() < Duration::from_secs(3)) {
                continue;
            }
            if let Some(l) = c.engine(1).leader(g) {
                if l.node != target(g) && c.engine(l.node).transfer_leader(g, target(g)).is_ok() {
                    asked.insert(g, Instant::now());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_all_quiesced(&c, GROUPS, LONG);
    for (i, s) in streams.iter_mut().enumerate() {
        let node = i as u64 + 1;
        let evs = drain(s);
        assert!(!evs.iter().any(|e| matches!(e, EngineEvent::Lagged { .. })), "node {node}: lagged");
        let changes = leader_changes(&evs);
        for &g in &groups {
            let now = c.engine(node).leader(g).unwrap();
            let seen = changes.get(&g).map(Vec::as_slice).unwrap_or(&[]);
            assert_eq!(seen, &[(target(g), now.term)], "node {node}, group {g}: one event, the new leader");
            assert!(now.term > before[&g].1, "group {g}: a new term");
            assert_eq!(now.node, target(g));
            for other in 1..=3 {
                assert_eq!(c.engine(other).leader(g), Some(now), "group {g}: views agree");
            }
        }
        // Every replica woke for the transfer and quiesced again.
        let woken = count_by_group(&evs, |e| matches!(e, EngineEvent::GroupWoken { .. }));
        let quiesced = count_by_group(&evs, |e| matches!(e, EngineEvent::GroupQuiesced { .. }));
        assert_eq!(woken.len() as u64, GROUPS, "node {node}: every group woke");
        assert_eq!(woken, quiesced, "node {node}: each wake followed by a quiescence");
        if node == 1 {
            all_node1.extend(evs);
        }
    }

    // The slow subscriber: its first SLOW_CAPACITY events, then the exact count of
    // what it lost (all quiet now: nothing is published meanwhile).
    eprintln!(
        "{GROUPS} groups: node 1 published {} events, transfers moved every group (terms {:?} -> {:?} for group 1)",
        all_node1.len(),
        before[&1].1,
        c.engine(1).leader(1).map(|l| l.term)
    );
    let got = drain(&mut slow);
    assert_eq!(got.len(), SLOW_CAPACITY + 1, "{got:?}");
    assert!(got[..SLOW_CAPACITY].iter().all(|e| !matches!(e, EngineEvent::Lagged { .. })));
    let lost = (all_node1.len() - SLOW_CAPACITY) as u64;
    assert_eq!(got[SLOW_CAPACITY], EngineEvent::Lagged { missed: lost });
    // It receives again once something happens: a proposal wakes its group on node 1.
    let g = groups[0];
    c.propose(g, b"wake");
    let evs = recv_until(&mut slow, LONG, |e| e.group() == Some(g));
    assert!(!evs.iter().any(|e| matches!(e, EngineEvent::Lagged { .. })), "{evs:?}");
}

/// Membership, snapshot and lifecycle events: a learner added to a compacted group is
/// created on its node from the leader's message and caught up by a snapshot (taken and
/// sent by the leader, installed by the learner); its removal destroys it, and it leaves
/// the leader view.
#[test]
fn membership_snapshot_and_lifecycle_events() {
    let c = Cluster::new(3, 10);
    let mut s: HashMap<NodeId, EventStream> =
        (1..=3).map(|id| (id, c.engine(id).subscribe(100_000).unwrap())).collect();
    let g = 42;
    c.create_group(g, &[1, 2]);
    let l = c.wait_leader(g, LONG);
    for i in 0..40u8 {
        c.propose(g, &[i]);
    }
    recv_until(
        s.get_mut(&l).unwrap(),
        LONG,
        |e| matches!(e, EngineEvent::SnapshotTaken { group, .. } if *group == g),
    );
    change(&c, g, MembershipChange::AddLearner(3));
    let on3 = s.get_mut(&3).unwrap();
    let evs =
        recv_until(on3, LONG, |e| matches!(e, EngineEvent::SnapshotInstalled { group, .. } if *group == g));
    assert!(
        evs.iter().any(|e| matches!(e, EngineEvent::ReplicaCreated { group, .. } if *group == g)),
        "{evs:?}"
    );
    let on_leader = s.get_mut(&l).unwrap();
    let evs = recv_until(
        on_leader,
        LONG,
        |e| matches!(e, EngineEvent::SnapshotSent { group, to, .. } if *group == g && to.node == 3),
    );
    assert!(
        evs.iter().any(|e| matches!(e, EngineEvent::MembershipApplied { group, .. } if *group == g)),
        "the leader applied the learner's addition: {evs:?}"
    );
    wait_until("node 3 knows the leader", LONG, || c.engine(3).leader(g).is_some_and(|x| x.node == l));
    assert!(c.engine(3).hosts(g));
    // Removed only once it applied its own addition: a replica that applies its addition
    // and its removal in one apply batch is not destroyed by the apply path (it was not a
    // member when the batch started), and no tombstone is newer than its configuration.
    wait_until("node 3 applies its addition", LONG, || {
        c.engine(3).group_status(g).is_some_and(|s| s.members.is_learner(s.replica))
    });
    change(&c, g, MembershipChange::Remove(3));
    recv_until(s.get_mut(&3).unwrap(), LONG, |e| *e == EngineEvent::ReplicaDestroyed { group: g });
    assert!(!c.engine(3).hosts(g), "a destroyed replica leaves the view");
    assert_eq!(c.engine(3).leader(g), None);
    assert!(c.engine(l).leader(g).is_some(), "the leader's own view stays");
    // `remove_group` destroys too.
    c.engine(1).remove_group(g).unwrap();
    recv_until(s.get_mut(&1).unwrap(), LONG, |e| *e == EngineEvent::ReplicaDestroyed { group: g });
    assert_eq!(c.engine(1).leader(g), None);
}

fn change(c: &Cluster, g: u64, ch: MembershipChange) {
    c.change(g, ch, LONG, |e| {
        matches!(
            e,
            MembershipError::LeaderNotReady
                | MembershipError::ChangePending
                | MembershipError::LearnerNotCaughtUp { .. }
                | MembershipError::NotLeader { .. }
        )
    });
}
