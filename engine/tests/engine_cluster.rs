//! Engines in one process over the in-memory transport: many groups replicated
//! identically, failover, restart from disk with catch-up (by log and by snapshot),
//! leadership transfer, membership changes, and the typed answers of the API.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;

const LONG: Duration = Duration::from_secs(30);

/// 3 engines, 120 groups: every group elects a leader and applies the same commands in
/// the same order on every replica.
#[test]
fn many_groups_replicate_identically() {
    let c = Cluster::new(3, 10_000);
    let groups: Vec<u64> = (1..=120).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
    }
    for &g in &groups {
        c.wait_leader(g, LONG);
    }
    // Proposals in flight on many groups at once, from several threads.
    std::thread::scope(|s| {
        for chunk in groups.chunks(30) {
            let c = &c;
            s.spawn(move || {
                for round in 0..4u8 {
                    for &g in chunk {
                        c.propose(g, &[round, g as u8, 7]);
                    }
                }
            });
        }
    });
    for &g in &groups {
        let st = c.wait_converged(g, &[1, 2, 3], 4, LONG);
        assert_eq!(st.commands, 4, "group {g}: exactly the acknowledged commands applied");
    }
    let m = c.engine(1).metrics();
    assert!(m.wal_batches > 0 && m.applied_entries > 0);
    // One WAL batch carries several groups on average (the ready loop batches a turn).
    assert!(m.wal_batch_groups > m.wal_batches, "batches {} groups {}", m.wal_batches, m.wal_batch_groups);
}

/// Stop one engine: the groups it led re-elect and keep committing. Restart it from disk:
/// it catches up, by log for some groups and by snapshot for groups whose leaders
/// compacted past it meanwhile.
#[test]
fn failover_restart_and_catch_up() {
    let mut c = Cluster::new(3, 20);
    let groups: Vec<u64> = (1..=24).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
    }
    for &g in &groups {
        c.wait_leader(g, LONG);
        c.propose(g, b"before");
    }
    // Make node 3 lead some groups so that stopping it forces re-elections.
    let led_by_3: Vec<u64> = groups.iter().take(8).copied().collect();
    for &g in &led_by_3 {
        c.transfer(g, 3, LONG);
    }
    c.stop(3);
    for &g in &led_by_3 {
        let l = c.wait_leader(g, LONG);
        assert_ne!(l, 3);
    }
    // Enough commands on half of the groups that their leaders compact past node 3.
    for &g in &groups {
        let n = if g % 2 == 0 { 45 } else { 3 };
        for i in 0..n {
            c.propose(g, format!("while-down-{i}").as_bytes());
        }
    }
    for &g in &groups {
        let n = if g % 2 == 0 { 46 } else { 4 };
        c.wait_converged(g, &[1, 2], n, LONG);
    }
    c.start(3);
    for &g in &groups {
        c.propose(g, b"after");
        let n = if g % 2 == 0 { 47 } else { 5 };
        let st = c.wait_converged(g, &[1, 2, 3], n, LONG);
        assert_eq!(st.commands, n, "group {g}");
    }
    let m1 = c.engine(1).metrics();
    let m2 = c.engine(2).metrics();
    let m3 = c.engine(3).metrics();
    assert!(m1.compactions + m2.compactions > 0, "leaders compacted");
    assert!(m1.snapshots_sent + m2.snapshots_sent > 0, "snapshots streamed to node 3");
    assert!(m3.snapshots_installed > 0, "node 3 caught up by snapshot");
}

/// Leadership moves to a chosen node for every group; proposals keep working there.
#[test]
fn leadership_transfer_to_chosen_node() {
    let c = Cluster::new(3, 10_000);
    let groups: Vec<u64> = (100..130).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
    }
    for &g in &groups {
        let l = c.wait_leader(g, LONG);
        if l != 2 {
            // The first attempt is counted: it must start (typed Ok) at the leader.
            c.engine(l).transfer_leader(g, 2).unwrap();
        }
    }
    for &g in &groups {
        c.transfer(g, 2, LONG);
    }
    for &g in &groups {
        c.propose(g, b"x");
    }
    // Typed refusals: a follower names the leader; a non-member target is refused.
    let g = groups[0];
    match c.engine(1).transfer_leader(g, 3) {
        Err(TransferError::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(2)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(c.engine(2).transfer_leader(g, 9), Err(TransferError::NotMember(9)));
    match c.engine(1).propose(g, Bytes::from_static(b"y")).unwrap().wait() {
        Err(ProposeError::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(2)),
        other => panic!("unexpected {other:?}"),
    }
}

/// A 4th node joins as a learner (its replica is created by the leader's first message),
/// catches up, is promoted; an old member is removed and its replica destroyed.
#[test]
fn add_learner_promote_and_remove() {
    let mut c = Cluster::new(3, 10_000);
    let groups: Vec<u64> = (200..210).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
        c.wait_leader(g, LONG);
        for i in 0..5u8 {
            c.propose(g, &[i]);
        }
    }
    c.add_node(4);
    for &g in &groups {
        change(&c, g, MembershipChange::AddLearner(4));
    }
    for &g in &groups {
        c.wait_converged(g, &[1, 2, 3, 4], 5, LONG);
        wait_until(&format!("group {g}: node 4 applies its addition"), LONG, || {
            c.engine(4).group_status(g).is_some_and(|s| s.members.is_learner(s.replica))
        });
        change(&c, g, MembershipChange::Promote { node: 4, force: false });
        // Removing the leader's own node: move leadership away first.
        if c.leader(g) == Some(1) {
            c.transfer(g, 2, LONG);
        }
        change(&c, g, MembershipChange::Remove(1));
        c.propose(g, b"after-remove");
        c.wait_converged(g, &[2, 3, 4], 6, LONG);
    }
    let deadline = Instant::now() + LONG;
    for &g in &groups {
        while c.engine(1).group_status(g).is_some() {
            assert!(Instant::now() < deadline, "group {g}: removed replica not destroyed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Node 4's status view is updated after it applies: wait for it, never read once.
        wait_until(&format!("group {g}: node 4's view drops node 1"), LONG, || {
            let s = c.engine(4).group_status(g).unwrap();
            assert!(s.members.is_voter(s.replica), "node 4 votes in group {g}");
            !s.members.members().iter().any(|r| r.node == 1)
        });
    }
    // The destroyed replica stays destroyed across a restart (tombstone).
    c.stop(1);
    c.start(1);
    std::thread::sleep(Duration::from_millis(200));
    for &g in &groups {
        assert!(c.engine(1).group_status(g).is_none());
    }
    // Removing a non-member is refused before anything is appended.
    let g = groups[0];
    let l = c.wait_leader(g, LONG);
    match c.engine(l).change_membership(g, MembershipChange::Remove(1)).unwrap().wait() {
        Err(MembershipError::Invalid { node: 1, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
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

/// Reads on leaders and followers resolve once the replica applied every write
/// acknowledged before them.
#[test]
fn read_index_on_leader_and_followers() {
    let c = Cluster::new(3, 10_000);
    let g = 7;
    c.create_group(g, &[1, 2, 3]);
    c.wait_leader(g, LONG);
    for i in 0..10u8 {
        let idx = c.propose(g, &[i]);
        for n in 1..=3 {
            let applied = loop {
                match c.engine(n).read_index(g).unwrap().wait() {
                    Ok(a) => break a,
                    Err(ReadError::NotLeader { .. }) | Err(ReadError::Timeout) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert!(applied >= idx, "node {n}: read at applied {applied} before acknowledged write {idx}");
            assert!(c.state(n, g).unwrap().index >= idx);
        }
    }
    assert_eq!(c.engine(1).read_index(999).unwrap().wait(), Err(ReadError::GroupNotFound(999)));
}

/// Graceful shutdown loses nothing acknowledged: every engine restarted from its
/// directory replays the same state; the API answers typed errors.
#[test]
fn restart_all_preserves_acknowledged_state() {
    let mut c = Cluster::new(3, 15);
    let groups: Vec<u64> = (300..310).collect();
    for &g in &groups {
        c.create_group(g, &[1, 2, 3]);
    }
    let mut acked = Vec::new();
    // compact_entries = 15 with 25 commands: recovery restores a snapshot file, then
    // replays the log after it.
    for &g in &groups {
        c.wait_leader(g, LONG);
        for i in 0..25u8 {
            c.propose(g, &[i]);
        }
        acked.push(c.wait_converged(g, &[1, 2, 3], 25, LONG));
    }
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.start(id);
    }
    for (i, &g) in groups.iter().enumerate() {
        // State machines are in memory: recovery restored the snapshot and replayed the
        // log after it, before any new leader was needed.
        let st = c.wait_converged(g, &[1, 2, 3], 25, LONG);
        assert_eq!((st.commands, st.chain), (acked[i].commands, acked[i].chain), "group {g}");
    }
    let e = c.engine(1);
    assert_eq!(
        e.propose(4242, Bytes::from_static(b"x")).unwrap().wait(),
        Err(ProposeError::GroupNotFound(4242))
    );
    assert!(matches!(
        e.propose(groups[0], Bytes::from(vec![0u8; 100 << 10])),
        Err(ProposeError::TooLarge { .. })
    ));
    assert_eq!(
        e.create_group(1, &[], ChainSm::boxed(&Registry::default(), 1)),
        Err(CreateGroupError::NoMembers)
    );
    assert_eq!(
        e.create_group(1, &[2, 3], ChainSm::boxed(&Registry::default(), 1)),
        Err(CreateGroupError::NotAMember)
    );
    // The restarted cluster keeps committing.
    for &g in &groups {
        c.propose(g, b"after-restart");
        c.wait_converged(g, &[1, 2, 3], 26, LONG);
    }
}

/// A leader cut off from its followers: proposals it appends pile up until `Busy`
/// (bounded memory); after the partition heals, the entries another leader committed at
/// those indexes win and every waiter of the old leader resolves `Dropped`, never `Ok`.
#[test]
fn partitioned_leader_answers_busy_then_dropped() {
    let c = Cluster::new(3, 10_000);
    let g = 11;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"first");
    c.net.cut(1, 2);
    c.net.cut(1, 3);
    // Flood the isolated leader with 3 MiB of 1 KiB proposals (the bound is 1 MiB of
    // unapplied bytes per group): the excess is refused with Busy by the worker.
    let waiters: Vec<Proposal> =
        (0..3000u32).map(|i| c.engine(1).propose(g, Bytes::from(vec![i as u8; 1024])).unwrap()).collect();
    // Nodes 2 and 3 elect a leader and commit other entries.
    let deadline = Instant::now() + LONG;
    let new_leader = loop {
        assert!(Instant::now() < deadline, "no new leader");
        if let Some(l) = [2, 3].into_iter().find(|&n| {
            c.engine(n).group_status(g).is_some_and(|s| s.role == flotilla_engine::raft::Role::Leader)
        }) {
            break l;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    for i in 0..3u8 {
        let p = c.engine(new_leader).propose(g, Bytes::from(vec![b'n', i])).unwrap();
        assert!(p.wait_timeout(LONG).unwrap().is_ok());
    }
    c.net.heal(1, 2);
    c.net.heal(1, 3);
    let mut outcomes = std::collections::HashMap::new();
    for p in waiters {
        let r = p.wait_timeout(LONG).unwrap_or_else(|_| panic!("a waiter of the old leader never resolved"));
        let key = match r {
            Ok(_) => panic!("an overwritten entry reported success"),
            Err(ProposeError::Dropped) => "dropped",
            Err(ProposeError::Busy(BusyReason::GroupUncommitted)) => "busy",
            Err(e) => panic!("unexpected outcome {e}"),
        };
        *outcomes.entry(key).or_insert(0u32) += 1;
    }
    assert!(outcomes.get("dropped").copied().unwrap_or(0) > 0, "{outcomes:?}");
    assert!(outcomes.get("busy").copied().unwrap_or(0) > 0, "flood never hit the bound: {outcomes:?}");
    c.wait_converged(g, &[1, 2, 3], 4, LONG);
}

/// `remove_group` on every node deletes the group; its tombstone keeps stale messages
/// from recreating it, across restarts too.
#[test]
fn remove_group_everywhere() {
    let mut c = Cluster::new(3, 10_000);
    for g in [41, 42] {
        c.create_group(g, &[1, 2, 3]);
        c.wait_leader(g, LONG);
        c.propose(g, b"x");
    }
    for n in 1..=3 {
        c.engine(n).remove_group(41).unwrap();
    }
    assert_eq!(c.engine(1).remove_group(41), Err(ProposeError::GroupNotFound(41)));
    std::thread::sleep(Duration::from_millis(200));
    for n in 1..=3 {
        assert!(c.engine(n).group_status(41).is_none(), "node {n} recreated the removed group");
    }
    c.stop(2);
    c.start(2);
    assert!(c.engine(2).group_status(41).is_none());
    assert!(matches!(
        c.engine(2).create_group(41, &[1, 2, 3], ChainSm::boxed(&Registry::default(), 41)),
        Err(CreateGroupError::Tombstoned(41))
    ));
    // The other group is untouched and keeps committing.
    c.propose(42, b"y");
    c.wait_converged(42, &[1, 2, 3], 2, LONG);
}

/// A joint change replaces a member in one step: node 4 in, node 3 out.
#[test]
fn joint_change_replaces_a_member() {
    let c = Cluster::new(4, 10_000);
    let g = 51;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    change(&c, g, MembershipChange::Joint(vec![MembershipChange::AddVoter(4), MembershipChange::Remove(3)]));
    let deadline = Instant::now() + LONG;
    loop {
        let s = c.engine(1).group_status(g).unwrap();
        let mut nodes: Vec<u64> = s.members.voters.iter().map(|r| r.node).collect();
        nodes.sort_unstable();
        if !s.members.is_joint() && nodes == [1, 2, 4] {
            break;
        }
        assert!(Instant::now() < deadline, "joint configuration not left: {:?}", s.members);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Inside a joint change, `Remove` of a voter demotes it; the learner is removed next.
    let s = c.engine(1).group_status(g).unwrap();
    assert!(s.members.members().iter().any(|r| r.node == 3 && s.members.is_learner(r.id)), "{:?}", s.members);
    change(&c, g, MembershipChange::Remove(3));
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2, 4], 2, LONG);
    let deadline = Instant::now() + LONG;
    while c.engine(3).group_status(g).is_some() {
        assert!(Instant::now() < deadline, "node 3's replica not destroyed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `Remove` of a voter demotes it through a joint configuration left automatically, then
/// removes the learner, and resolves once both are applied (issue 10 point 3: the core
/// refuses a direct voter removal). The leader's own node is refused: transfer first.
#[test]
fn remove_voter_demotes_then_removes() {
    let c = Cluster::new(3, 10_000);
    let g = 61;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    c.wait_converged(g, &[1, 2, 3], 1, LONG);
    match c.engine(1).change_membership(g, MembershipChange::Remove(1)).unwrap().wait() {
        Err(MembershipError::Conf(flotilla_engine::raft::ConfChangeError::RemovesLeader { .. })) => {}
        other => panic!("removing the leader's own node: {other:?}"),
    }
    let res = c.engine(1).change_membership(g, MembershipChange::Remove(3)).unwrap().wait_timeout(LONG);
    assert!(matches!(res, Ok(Ok(()))), "{res:?}");
    let s = c.engine(1).group_status(g).unwrap();
    assert!(!s.members.is_joint(), "{:?}", s.members);
    assert!(!s.members.members().iter().any(|r| r.node == 3), "{:?}", s.members);
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2], 2, LONG);
    let deadline = Instant::now() + LONG;
    while c.engine(3).group_status(g).is_some() {
        assert!(Instant::now() < deadline, "node 3's replica not destroyed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 5 engines, 100 groups placed on rotating sets of 3 nodes: each group replicates on
/// exactly its members; stopping one node moves the leadership of its groups.
#[test]
fn five_engines_sharded_placement() {
    let mut c = Cluster::new(5, 10_000);
    let members = |g: u64| -> Vec<u64> { (0..3).map(|k| (g + k) % 5 + 1).collect() };
    let groups: Vec<u64> = (1000..1100).collect();
    for &g in &groups {
        c.create_group(g, &members(g));
    }
    std::thread::scope(|s| {
        for chunk in groups.chunks(25) {
            let c = &c;
            s.spawn(move || {
                for &g in chunk {
                    c.propose(g, &[1, g as u8]);
                    c.propose(g, &[2, g as u8]);
                }
            });
        }
    });
    for &g in &groups {
        let m = members(g);
        c.wait_converged(g, &m, 2, LONG);
        for n in 1..=5u64 {
            assert_eq!(c.engine(n).group_status(g).is_some(), m.contains(&n), "group {g} on node {n}");
        }
    }
    c.stop(5);
    for &g in &groups {
        let live: Vec<u64> = members(g).into_iter().filter(|&n| n != 5).collect();
        c.propose(g, b"3");
        let st = c.wait_converged(g, &live, 3, LONG);
        assert_eq!(st.commands, 3);
    }
}

/// Promoting a learner that lags more than `promote_lag_max` (1,000) entries is refused
/// with `LearnerNotCaughtUp` unless forced; once it caught up, promotion succeeds.
#[test]
fn promotion_waits_for_the_learner_to_catch_up() {
    let mut c = Cluster::new(4, 100_000);
    let g = 61;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.stop(4);
    change(&c, g, MembershipChange::AddLearner(4));
    // 1,100 entries the stopped learner does not have (pipelined, then awaited).
    let waiters: Vec<Proposal> = (0..1100u32)
        .map(|i| c.engine(1).propose(g, Bytes::copy_from_slice(&i.to_le_bytes())).unwrap())
        .collect();
    for p in waiters {
        p.wait_timeout(LONG).unwrap().unwrap();
    }
    match c
        .engine(1)
        .change_membership(g, MembershipChange::Promote { node: 4, force: false })
        .unwrap()
        .wait()
    {
        Err(MembershipError::LearnerNotCaughtUp { node: 4, lag }) => assert!(lag > 1000, "lag {lag}"),
        other => panic!("unexpected {other:?}"),
    }
    c.start(4);
    c.wait_converged(g, &[1, 2, 3, 4], 1100, LONG);
    change(&c, g, MembershipChange::Promote { node: 4, force: false });
    let deadline = Instant::now() + LONG;
    while !c.engine(4).group_status(g).is_some_and(|s| s.members.is_voter(s.replica)) {
        assert!(Instant::now() < deadline, "node 4 never applied its promotion");
        std::thread::sleep(Duration::from_millis(5));
    }
}
