//! Engines in one process over the in-memory transport: replica lifecycle (a removed
//! replica is destroyed even if it missed its removal; stale messages never recreate it),
//! apply off the worker thread (a slow state machine does not stop other groups), the
//! apply-backlog bound, create-group effects, and the metrics set.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::message::{Message, MessageBody};
use flotilla_engine::raft::{NodeId, Role};
use flotilla_engine::transport::{MemoryNetwork, Transport, WireItem};

const LONG: Duration = Duration::from_secs(30);

fn wait_until(what: &str, f: impl FnMut() -> bool) {
    common_engine::wait_until(what, LONG, f);
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

/// A stale append naming a destroyed replica (from a node that still thinks it leads)
/// creates nothing; a tombstone message that does not prove the removal (another replica
/// id, or a configuration not newer than the replica's) destroys nothing.
#[test]
fn stale_append_after_removal_creates_no_replica() {
    let c = Cluster::new(3, 10_000);
    let g = 21;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    c.wait_converged(g, &[1, 2, 3], 1, LONG);
    let me3 = c.engine(3).group_status(g).unwrap();
    let fake = c.net.join(9, 64);

    // Tombstones that prove nothing are ignored.
    let conf_index = 1; // the founding configuration: not newer than node 3's
    for item in [
        WireItem::Tombstone { group: g, replica: me3.replica + 1, conf_index: 1 << 40 },
        WireItem::Tombstone { group: g, replica: me3.replica, conf_index },
    ] {
        fake.send(3, 0, &[item]).unwrap();
    }
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2, 3], 2, LONG);
    assert!(c.engine(3).group_status(g).is_some(), "an unproven tombstone destroyed a replica");
    assert_eq!(c.engine(3).metrics().replicas_destroyed, 0);

    change(&c, g, MembershipChange::Remove(3));
    wait_until("node 3's replica destroyed", || c.engine(3).group_status(g).is_none());
    let created = c.engine(3).metrics().replicas_created;
    // A delayed append of the old configuration's leader, naming replica 3.
    let stale = Message {
        from: 1,
        to: me3.replica,
        term: me3.term,
        body: MessageBody::Append { prev_index: 0, prev_term: 0, entries: Vec::new(), commit: 0 },
    };
    let hb =
        Message { body: MessageBody::Heartbeat { commit: 0, round: 1, quiesce: false }, ..stale.clone() };
    for m in [stale, hb] {
        fake.send(3, 0, &[WireItem::Msg { group: g, msg: m }]).unwrap();
    }
    // The group keeps committing meanwhile; the stale messages were handled before.
    c.propose(g, b"c");
    c.wait_converged(g, &[1, 2], 3, LONG);
    std::thread::sleep(Duration::from_millis(50));
    assert!(c.engine(3).group_status(g).is_none(), "a stale append recreated a removed replica");
    assert_eq!(c.engine(3).metrics().replicas_created, created);
}

/// A replica cut off while its removal commits never learns it; once the partition heals
/// its messages reach the remaining members, which answer with a tombstone, and it
/// destroys itself (durably: it stays gone after a restart).
#[test]
fn replica_partitioned_during_removal_is_destroyed_after_healing() {
    let mut c = Cluster::new(3, 10_000);
    let g = 22;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"a");
    c.wait_converged(g, &[1, 2, 3], 1, LONG);
    let changes_before = c.engine(1).metrics().membership_changes;
    c.net.cut(3, 1);
    c.net.cut(3, 2);
    change(&c, g, MembershipChange::Remove(3));
    c.propose(g, b"b");
    c.wait_converged(g, &[1, 2], 2, LONG);
    assert!(c.engine(1).metrics().membership_changes > changes_before);
    // Cut off, node 3 cannot know: its replica lives on (and campaigns in vain).
    std::thread::sleep(Duration::from_millis(100));
    let s3 = c.engine(3).group_status(g).expect("node 3 cannot have learnt its removal");
    assert!(s3.members.members().iter().any(|r| r.node == 3));
    assert_eq!(c.engine(3).metrics().replicas_destroyed, 0);
    c.net.heal(3, 1);
    c.net.heal(3, 2);
    wait_until("the removed replica destroyed after healing", || c.engine(3).group_status(g).is_none());
    assert_eq!(c.engine(3).metrics().replicas_destroyed, 1);
    // Two correct paths race here: a member answers the replica's next message with a
    // tombstone (`tombstones_sent`), or the leader's periodic re-send to removed replicas
    // that have not confirmed reaches it first (`tombstones_resent`). Either proves it.
    let sent: u64 = [1, 2]
        .iter()
        .map(|&n| {
            let m = c.engine(n).metrics();
            m.tombstones_sent + m.tombstones_resent
        })
        .sum();
    assert!(sent >= 1, "the members sent the removed replica a tombstone");
    // The remaining members are unaffected.
    c.propose(g, b"c");
    c.wait_converged(g, &[1, 2], 3, LONG);
    c.stop(3);
    c.start(3);
    std::thread::sleep(Duration::from_millis(100));
    assert!(c.engine(3).group_status(g).is_none(), "the tombstone is durable");
}

// ---------------------------------------------------------------------------------------
// Single-node engines whose state machines (the shared `ChainSm`, gated) the test can
// hold up.

fn single_node(dir: &std::path::Path, workers: usize, f: impl Fn(&mut EngineConfig)) -> (Engine, SmMap) {
    let net = MemoryNetwork::new();
    let mut cfg = config(1, dir.to_path_buf(), 10_000);
    cfg.workers = workers;
    f(&mut cfg);
    let sms: SmMap = Arc::default();
    let s = sms.clone();
    let factory: StateMachineFactory = Arc::new(move |g| {
        let (st, gate) = s.lock().unwrap().entry(g).or_default().clone();
        Box::new(ChainSm::new(st).gated(gate))
    });
    (Engine::open(cfg, Box::new(net.join(1, 1 << 12)), factory).unwrap(), sms)
}

/// Each group's state (commands counted by the shared `ChainSm`) and gate.
type SmMap = Arc<Mutex<HashMap<u64, (Arc<Mutex<SmState>>, Arc<AtomicBool>)>>>;

fn sm_for(sms: &SmMap, g: u64) -> (Arc<Mutex<SmState>>, Arc<AtomicBool>) {
    sms.lock().unwrap().entry(g).or_default().clone()
}

fn create_single(e: &Engine, sms: &SmMap, g: u64) {
    let (st, gate) = sm_for(sms, g);
    e.create_group(g, &[1], Box::new(ChainSm::new(st).gated(gate))).unwrap();
    wait_until("single-node leader", || e.group_status(g).is_some_and(|s| s.role == Role::Leader));
}

/// One worker, two groups: while group 1's state machine is stuck in `apply`, group 2
/// still appends, persists and commits (its commit index advances by every proposal),
/// and the worker still answers; once group 1 is released, every waiter resolves with
/// its own entry's result, in order.
#[test]
fn slow_state_machine_does_not_stop_other_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (e, sms) = single_node(dir.path(), 1, |_| {});
    create_single(&e, &sms, 1);
    create_single(&e, &sms, 2);
    let (_, gate1) = sm_for(&sms, 1);
    let (applied2, _) = sm_for(&sms, 2);
    let stuck = e.propose(1, Bytes::from_static(b"block")).unwrap();
    wait_until("group 1's apply stuck", || e.metrics().apply_lag >= 1);
    let commit0 = e.group_status(2).unwrap().commit;
    let n = 200u64;
    let waiters: Vec<Proposal> =
        (0..n).map(|i| e.propose(2, Bytes::from(i.to_le_bytes().to_vec())).unwrap()).collect();
    wait_until("group 2 commits while group 1's apply is stuck", || {
        e.group_status(2).is_some_and(|s| s.commit >= commit0 + n)
    });
    assert!(!gate1.load(Ordering::Acquire));
    assert!(e.metrics().apply_lag > 0, "the stuck apply shows as apply lag");
    gate1.store(true, Ordering::Release);
    assert!(stuck.wait_timeout(LONG).unwrap().is_ok());
    let mut last = 0;
    for w in waiters {
        let idx = u64::from_le_bytes(w.wait_timeout(LONG).unwrap().unwrap()[..8].try_into().unwrap());
        assert!(idx > last, "results in log order");
        last = idx;
    }
    assert_eq!(applied2.lock().unwrap().commands, n);
    wait_until("apply lag back to 0", || e.metrics().apply_lag == 0);
    e.shutdown();
}

/// The apply-backlog bound: with the apply thread stuck, proposals to another group of
/// the same worker are refused with `Busy(ApplyBacklog)` once the backlog reaches
/// `max_apply_backlog`, so memory stays bounded; accepted ones all apply after release.
#[test]
fn apply_backlog_bound_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let (e, sms) = single_node(dir.path(), 1, |c| c.max_apply_backlog = 64);
    create_single(&e, &sms, 1);
    create_single(&e, &sms, 2);
    let (_, gate1) = sm_for(&sms, 1);
    let stuck = e.propose(1, Bytes::from_static(b"block")).unwrap();
    // The stuck entry is in the backlog (handed out, its apply waiting on the gate).
    wait_until("group 1's apply stuck", || e.metrics().apply_lag >= 1);
    let mut accepted = Vec::new();
    let mut busy = 0;
    let commit0 = e.group_status(2).unwrap().commit;
    // One proposal at a time: each either is refused, or commits (and so joins the
    // backlog) before the next is made.
    for i in 0..200u32 {
        let mut p = e.propose(2, Bytes::from(i.to_le_bytes().to_vec())).unwrap();
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "proposal {i} neither refused nor committed");
            match p.wait_timeout(Duration::from_millis(1)) {
                Ok(Err(ProposeError::Busy(BusyReason::ApplyBacklog))) => {
                    busy += 1;
                    break;
                }
                Ok(r) => panic!("unexpected outcome {r:?}"),
                Err(still) => p = still,
            }
            if e.group_status(2).unwrap().commit > commit0 + accepted.len() as u64 {
                accepted.push(p);
                break;
            }
        }
        if busy > 10 {
            break;
        }
    }
    assert!(busy > 0, "the backlog bound never answered Busy");
    // Each accepted entry joined the backlog (as did group 1's stuck one): the bound held.
    assert!(accepted.len() < 64, "{} proposals accepted past a bound of 64", accepted.len());
    assert!(e.metrics().apply_lag >= 64);
    assert!(e.metrics().refused_busy_apply_backlog >= busy);
    gate1.store(true, Ordering::Release);
    assert!(stuck.wait_timeout(LONG).unwrap().is_ok());
    for p in accepted {
        assert!(p.wait_timeout(LONG).unwrap().is_ok());
    }
    e.shutdown();
}

/// Node 3's state machine for `g`: its state counted in `counts`, held up by `gate`.
fn gated_on_3(counts: &Counts, gate: &Arc<AtomicBool>, id: NodeId, g: u64) -> Box<dyn StateMachine> {
    let st = counts.lock().unwrap().entry((id, g)).or_default().clone();
    let m = ChainSm::new(st);
    Box::new(if id == 3 { m.gated(gate.clone()) } else { m })
}

/// The apply-backlog bound holds on a follower too, where refusing proposals cannot
/// enforce it (its leader commits at the other members' pace): with node 3's state
/// machine stuck, node 3 hands at most `max_apply_backlog` committed entries to its apply
/// thread and keeps the rest in its log, while the group commits hundreds more on nodes 1
/// and 2; once released, node 3 applies every entry, in order, to the leader's state.
#[test]
fn a_slow_follower_holds_at_most_its_apply_backlog() {
    const BOUND: u64 = 64;
    let most = slow_follower(|cfg| cfg.max_apply_backlog = BOUND, 8, 400, |m| m.apply_lag, BOUND);
    assert_eq!(most, BOUND, "node 3 handed {most} entries to its stuck apply thread, past {BOUND}");
}

/// The same in bytes (`max_apply_backlog_bytes`): entries of 4 KiB, a bound of 64 KiB;
/// node 3 holds at most the bound plus one entry (a `Ready` hands out at most the bytes
/// left, and at least one entry while any are left).
#[test]
fn a_slow_follower_holds_at_most_its_apply_backlog_bytes() {
    const BOUND: u64 = 64 << 10;
    const PAYLOAD: usize = 4 << 10;
    let most =
        slow_follower(|cfg| cfg.max_apply_backlog_bytes = BOUND, PAYLOAD, 100, |m| m.apply_lag_bytes, BOUND);
    assert!(
        most < BOUND + PAYLOAD as u64 + 64,
        "node 3 handed {most} bytes to its stuck apply thread, past {BOUND} and one entry"
    );
}

/// Runs the slow-follower scenario: node 3 (one worker, configured by `tweak`) has its
/// state machine stuck while `n` proposals of `payload` bytes commit on nodes 1 and 2.
/// Returns the most `lag` (a metric of node 3) seen, after waiting for it to reach `bound`;
/// checks that node 3 then applies everything, as node 1 did.
fn slow_follower(
    tweak: fn(&mut EngineConfig),
    payload: usize,
    n: u64,
    lag: fn(&Metrics) -> u64,
    bound: u64,
) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let counts: Counts = Arc::default();
    let gate = Arc::new(AtomicBool::new(false));
    let engines: Vec<Engine> = (1..=3u64)
        .map(|id| {
            let (counts, gate) = (counts.clone(), gate.clone());
            let factory: StateMachineFactory = Arc::new(move |g| gated_on_3(&counts, &gate, id, g));
            let mut cfg = config(id, dir.path().join(format!("n{id}")), 10_000);
            if id == 3 {
                cfg.workers = 1;
                tweak(&mut cfg);
            }
            Engine::open(cfg, Box::new(net.join(id, 1 << 14)), factory).unwrap()
        })
        .collect();
    for (i, e) in engines.iter().enumerate() {
        e.create_group(1, &[1, 2, 3], gated_on_3(&counts, &gate, i as u64 + 1, 1)).unwrap();
    }
    // A leader on node 1 or 2 (node 3's own proposals would meet its backlog bound).
    let leader = |engines: &[Engine]| {
        engines.iter().position(|e| e.group_status(1).is_some_and(|s| s.role == Role::Leader))
    };
    wait_until("a leader", || leader(&engines).is_some());
    if leader(&engines) == Some(2) {
        let _ = engines[2].transfer_leader(1, 1);
        wait_until("leadership off node 3", || leader(&engines).is_some_and(|l| l != 2));
    }
    let propose = |data: Vec<u8>| {
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "proposal not applied");
            if let Some(l) = leader(&engines).filter(|&l| l != 2) {
                if let Ok(p) = engines[l].propose(1, Bytes::from(data.clone())) {
                    if let Ok(Ok(_)) = p.wait_timeout(Duration::from_secs(5)) {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let lag3 = || lag(&engines[2].metrics());
    propose(b"block".to_vec());
    wait_until("node 3's apply stuck", || engines[2].metrics().apply_lag >= 1);
    let mut most = 0;
    for i in 0..n {
        let mut data = i.to_le_bytes().to_vec();
        data.resize(payload.max(8), i as u8);
        propose(data);
        most = most.max(lag3());
    }
    let commit = engines.iter().map(|e| e.group_status(1).unwrap().commit).max().unwrap();
    wait_until("node 3 has every entry committed", || engines[2].group_status(1).unwrap().commit >= commit);
    wait_until("node 3's backlog at its bound", || lag3() >= bound);
    for _ in 0..20 {
        most = most.max(lag3());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Released before the caller's check, so a failing run does not wait out the gate's
    // guard.
    gate.store(true, Ordering::Release);
    let state = |node: NodeId| *counts.lock().unwrap()[&(node, 1)].lock().unwrap();
    wait_until("node 3 applied everything", || state(3).commands == n + 1);
    wait_until("nodes 1 and 2 applied everything", || {
        state(1).commands == n + 1 && state(2).commands == n + 1
    });
    assert_eq!(state(3), state(1), "node 3 applied another sequence than node 1");
    wait_until("node 3's backlog empty", || engines[2].metrics().apply_lag == 0);
    assert_eq!(engines[2].metrics().apply_lag_bytes, 0);
    for e in engines {
        e.shutdown();
    }
    most
}

// ---------------------------------------------------------------------------------------
// Effects

/// Commands applied, by (node, group).
type Counts = Arc<Mutex<HashMap<(NodeId, u64), Arc<Mutex<SmState>>>>>;

/// A create-group effect returned by `apply` creates the group on every replica at that
/// index: the new group elects a leader and replicates to all three nodes.
#[test]
fn create_group_effect_runs_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let counts: Counts = Arc::default();
    let engines: Vec<Engine> = (1..=3u64)
        .map(|id| {
            let counts = counts.clone();
            let factory: StateMachineFactory = Arc::new(move |g| {
                let st = counts.lock().unwrap().entry((id, g)).or_default().clone();
                Box::new(ChainSm::new(st).splitting(vec![1, 2, 3]))
            });
            let cfg = config(id, dir.path().join(format!("n{id}")), 10_000);
            Engine::open(cfg, Box::new(net.join(id, 1 << 14)), factory).unwrap()
        })
        .collect();
    let count = |node: NodeId, g: u64| {
        let st = counts.lock().unwrap().entry((node, g)).or_default().clone();
        let commands = st.lock().unwrap().commands;
        commands
    };
    for (i, e) in engines.iter().enumerate() {
        let st = counts.lock().unwrap().entry((i as u64 + 1, 1)).or_default().clone();
        e.create_group(1, &[1, 2, 3], Box::new(ChainSm::new(st).splitting(vec![1, 2, 3]))).unwrap();
    }
    let leader = |g: u64| {
        let mut found = None;
        wait_until("a leader", || {
            found = engines.iter().find(|e| e.group_status(g).is_some_and(|s| s.role == Role::Leader));
            found.is_some()
        });
        found.unwrap()
    };
    let propose = |g: u64, data: &'static [u8]| {
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "group {g}: proposal not applied");
            if let Ok(p) = leader(g).propose(g, Bytes::from_static(data)) {
                if let Ok(Ok(_)) = p.wait_timeout(Duration::from_secs(5)) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // Group 77 belongs to the same worker as group 1 (2 workers), group 78 to the other:
    // both paths of the effect.
    propose(1, b"split:77");
    propose(1, b"split:78");
    // (A node may first create its replica from the new group's leader's message, empty,
    // before it applies the split itself; it then learns the configuration from the log.)
    for g in [77, 78] {
        wait_until("the new group with its 3 voters on every node", || {
            engines.iter().all(|e| e.group_status(g).is_some_and(|s| s.members.voters.len() == 3))
        });
    }
    wait_until("the effect ran on every replica", || {
        engines.iter().all(|e| e.metrics().effects_create_group == 2)
    });
    propose(77, b"hello");
    propose(78, b"world");
    wait_until("the new groups applied everywhere", || {
        (1..=3).all(|n| count(n, 77) == 1 && count(n, 78) == 1)
    });
    assert!((1..=3).all(|n| count(n, 1) == 2));
    for e in engines {
        e.shutdown();
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// The metrics move when their events happen: elections and leaders on creation, WAL
/// batches, syncs and their latency on writes, transfers, membership changes, and
/// snapshots sent, installed and taken when a node that was down catches up by snapshot.
#[test]
fn metrics_move_with_their_events() {
    let mut c = Cluster::new(3, 40);
    let g = 31;
    let total = |c: &Cluster, f: fn(&Metrics) -> u64| -> u64 {
        c.live().map(|n| f(&n.engine.as_ref().unwrap().metrics())).sum()
    };
    assert_eq!(total(&c, |m| m.elections), 0);
    c.create_group(g, &[1, 2, 3]);
    c.wait_leader(g, LONG);
    assert!(total(&c, |m| m.elections) >= 1);
    assert!(total(&c, |m| m.leaders_elected) >= 1);
    assert!(total(&c, |m| m.membership_changes) >= 3, "the founding configuration, applied on each");
    c.propose(g, b"x");
    let m = c.engine(c.leader(g).unwrap()).metrics();
    assert!(m.wal_batches > 0 && m.wal_batch_bytes > 0 && m.wal_batch_groups > 0);
    assert!(m.wal_syncs > 0 && m.wal_sync_nanos_total > 0 && m.wal_sync_nanos_max > 0);
    assert!(m.wal_sync_nanos_max <= m.wal_sync_nanos_total);
    assert!(m.applied_entries >= 2);
    let from = c.leader(g).unwrap();
    let to = if from == 1 { 2 } else { 1 };
    c.transfer(g, to, LONG);
    assert!(c.engine(from).metrics().transfers_started >= 1);
    c.stop(3);
    for i in 0..100u8 {
        c.propose(g, &[i]);
    }
    // Snapshots are written in the background: the compaction follows. Both live nodes
    // must have compacted (whichever leads when node 3 returns): with only the follower
    // compacted, a leader whose snapshot was still being written (a busy machine) would
    // catch node 3 up from its log, and no snapshot would be installed.
    wait_until("a compaction on both live nodes", || {
        [1, 2].iter().all(|&n| c.engine(n).metrics().compactions >= 1)
    });
    c.start(3);
    c.wait_converged(g, &[1, 2, 3], 101, LONG);
    assert!(c.engine(3).metrics().snapshots_installed >= 1);
    assert!(total(&c, |m| m.snapshots_sent) >= 1);
    wait_until("no apply lag once converged", || c.engine(3).metrics().apply_lag == 0);
}

// ---------------------------------------------------------------------------------------
// Snapshots from a point-in-time source

/// Keeps every command's first byte; snapshots through a `SnapshotSource` (a copy of the
/// bytes at that point) whose reads wait for a gate.
struct SourceSm {
    log: Arc<Mutex<Vec<u8>>>,
    index: u64,
    term: u64,
    gate: Arc<AtomicBool>,
    restored_at: Arc<AtomicU64>,
}

struct GatedSource {
    data: Vec<u8>,
    at: (u64, u64),
    gate: Arc<AtomicBool>,
}

impl SnapshotSource for GatedSource {
    fn reflects(&self) -> (u64, u64) {
        self.at
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.gate.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = (offset as usize).min(self.data.len());
        let n = buf.len().min(self.data.len() - at);
        buf[..n].copy_from_slice(&self.data[at..at + n]);
        Ok(n)
    }
}

impl StateMachine for SourceSm {
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes {
        assert_eq!(index, self.index + 1, "applied out of order or twice");
        (self.index, self.term) = (index, term);
        if let Some(c) = command {
            self.log.lock().unwrap().push(c[0]);
        }
        Bytes::new()
    }
    fn applied_index(&self) -> u64 {
        0
    }
    fn snapshot(&mut self, _out: &mut dyn Write) -> std::io::Result<()> {
        panic!("the engine must use snapshot_source when a state machine has one")
    }
    fn snapshot_source(&mut self) -> Option<Box<dyn SnapshotSource>> {
        let data = self.log.lock().unwrap().clone();
        Some(Box::new(GatedSource { data, at: (self.index, self.term), gate: self.gate.clone() }))
    }
    fn restore(&mut self, index: u64, term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut data = Vec::new();
        input.read_to_end(&mut data)?;
        *self.log.lock().unwrap() = data;
        (self.index, self.term) = (index, term);
        self.restored_at.store(index, Ordering::Release);
        Ok(())
    }
}

/// A state machine with a snapshot source keeps applying while its snapshot is read
/// (the source is stuck: the group still commits and applies), the log is compacted only
/// once the file is written, and a restart restores exactly the state the source gave,
/// at the (index, term) it stated, then replays the rest.
#[test]
fn snapshot_source_is_written_while_apply_continues() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let open = |log: Arc<Mutex<Vec<u8>>>, restored_at: Arc<AtomicU64>| {
        let mut cfg = config(1, dir.path().to_path_buf(), 20);
        cfg.workers = 1;
        let gate = gate.clone();
        let factory: StateMachineFactory = Arc::new(move |_| {
            Box::new(SourceSm {
                log: log.clone(),
                index: 0,
                term: 0,
                gate: gate.clone(),
                restored_at: restored_at.clone(),
            })
        });
        Engine::open(cfg, Box::new(MemoryNetwork::new().join(1, 1 << 12)), factory).unwrap()
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let restored = Arc::new(AtomicU64::new(0));
    let e = open(log.clone(), restored.clone());
    let sm =
        SourceSm { log: log.clone(), index: 0, term: 0, gate: gate.clone(), restored_at: restored.clone() };
    e.create_group(5, &[1], Box::new(sm)).unwrap();
    wait_until("leader", || e.group_status(5).is_some_and(|s| s.role == Role::Leader));
    let put = |b: u8| e.propose(5, Bytes::from(vec![b])).unwrap().wait_timeout(LONG).unwrap().unwrap();
    for b in 0..30u8 {
        put(b);
    }
    // A snapshot was asked for at 20 applied entries; its source is stuck, apply is not.
    for b in 30..80u8 {
        put(b);
    }
    assert_eq!(log.lock().unwrap().len(), 80);
    assert_eq!(e.metrics().compactions, 0, "compacted before the snapshot file was written");
    gate.store(true, Ordering::Release);
    wait_until("compaction after the file is written", || e.metrics().compactions >= 1);
    let snap_index = e.group_status(5).unwrap().applied;
    e.shutdown();

    // Restart: the state machine is restored from the file, then the tail is replayed.
    let log2 = Arc::new(Mutex::new(Vec::new()));
    let restored2 = Arc::new(AtomicU64::new(0));
    let e = open(log2.clone(), restored2.clone());
    let at = restored2.load(Ordering::Acquire);
    assert!(at >= 20 && at <= snap_index, "restored at {at}");
    wait_until("replayed to the end", || log2.lock().unwrap().len() == 80);
    assert_eq!(*log2.lock().unwrap(), (0..80u8).collect::<Vec<u8>>());
    e.shutdown();
}

/// A group whose quorum is down takes a flood of proposals with bounded memory: the
/// leader accepts at most `max_uncommitted_bytes` of them (1 MiB here) and answers the
/// rest `Busy(GroupUncommitted)` (or `NotLeader` once CheckQuorum made it step down),
/// and the refusals are counted by reason.
#[test]
fn quorum_down_flood_is_bounded_and_answers_busy() {
    let mut c = Cluster::new(3, 10_000);
    let g = 41;
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"first");
    c.stop(2);
    c.stop(3);
    let e = c.engine(1);
    let (mut accepted, mut busy, mut not_leader) = (0u64, 0u64, 0u64);
    let mut pending = Vec::new();
    for i in 0..4000u32 {
        match e.propose(g, Bytes::from(vec![i as u8; 1024])) {
            Ok(p) => pending.push(p),
            Err(ProposeError::Busy(_)) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // Refusals are answered by the worker at once; give it time to reach them all.
    wait_until("the flood handled", || e.metrics().mailbox_depth == 0);
    std::thread::sleep(Duration::from_millis(100));
    for p in pending {
        match p.wait_timeout(Duration::ZERO) {
            Ok(Err(ProposeError::Busy(BusyReason::GroupUncommitted))) => busy += 1,
            Ok(Err(ProposeError::NotLeader { .. })) => not_leader += 1,
            Ok(Err(ProposeError::Busy(BusyReason::Mailbox))) => busy += 1,
            Ok(r) => panic!("nothing can commit without a quorum: {r:?}"),
            // Appended and waiting for a quorum that is down.
            Err(_) => accepted += 1,
        }
    }
    assert!(busy > 0, "the flood never hit the bound");
    assert!(accepted <= (1 << 20) / 1024 + 1, "{accepted} KiB held past the 1 MiB bound");
    assert!(accepted + busy + not_leader == 4000);
    let m = e.metrics();
    assert!(m.refused_busy_group_uncommitted > 0);
    assert_eq!(m.refused_busy, busy);
    c.stop(1);
}

/// Three nodes configured by `tweak`, group `g` led by node 1 with one entry committed,
/// then nodes 2 and 3 stopped: a leader that cannot commit or confirm anything.
fn leader_without_quorum(g: u64, tweak: fn(&mut EngineConfig)) -> Cluster {
    let mut c = Cluster::new_tweaked(3, 10_000, tweak);
    c.create_group(g, &[1, 2, 3]);
    c.transfer(g, 1, LONG);
    c.propose(g, b"first");
    c.stop(2);
    c.stop(3);
    c
}

/// The bound counts the leader's log, not its waiters: proposals whose callers timed out
/// (`Indeterminate`) stay in a leader's log until they commit or the leadership ends, so
/// they keep counting. Without CheckQuorum the leader of a group whose quorum is down
/// keeps leading; once its first flood timed out, a second flood is refused whole (it was
/// taken again, another `max_uncommitted_bytes`, when the waiters were counted).
#[test]
fn timed_out_proposals_keep_counting_against_the_bound() {
    let g = 42;
    let mut c = leader_without_quorum(g, |cfg| {
        cfg.raft.check_quorum = false;
        cfg.propose_timeout_ticks = cfg.raft.election_timeout_max_ticks;
    });
    let e = c.engine(1);
    let flood = |e: &Engine| {
        let mut pending = Vec::new();
        let mut busy = 0u64;
        for i in 0..2000u32 {
            match e.propose(g, Bytes::from(vec![i as u8; 1024])) {
                Ok(p) => pending.push(p),
                Err(ProposeError::Busy(_)) => busy += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let mut accepted = 0u64;
        for p in pending {
            match p.wait_timeout(Duration::from_secs(20)) {
                Ok(Err(ProposeError::Busy(BusyReason::GroupUncommitted))) => busy += 1,
                Ok(Err(ProposeError::Indeterminate)) => accepted += 1,
                other => panic!("without a quorum: accepted and timed out, or busy: {other:?}"),
            }
        }
        (accepted, busy)
    };
    let (first, _) = flood(e);
    assert!(first > 0 && first <= (1 << 20) / 1024 + 1, "first flood: {first} KiB held");
    let (second, busy) = flood(e);
    assert_eq!(second, 0, "the timed-out proposals are still in the log: {second} KiB more taken");
    assert_eq!(busy, 2000);
    c.stop(1);
}

/// Reads are bounded the same way (`max_pending_reads`): a leader that cannot confirm
/// reads (its quorum down, no CheckQuorum) holds at most the bound, answering the rest
/// `Busy`; once the held ones timed out here (`Timeout`), its core still holds them waiting
/// for a round, so a second flood is refused whole (it was taken again when only the
/// engine's waiters were counted).
#[test]
fn reads_a_leader_cannot_confirm_are_bounded() {
    const BOUND: u64 = 300;
    let g = 43;
    let mut c = leader_without_quorum(g, |cfg| {
        cfg.raft.check_quorum = false;
        cfg.read_timeout_ticks = cfg.raft.election_timeout_max_ticks;
        cfg.max_pending_reads = BOUND as usize;
    });
    let e = c.engine(1);
    let flood = |e: &Engine| {
        let (mut timed_out, mut busy) = (0u64, 0u64);
        let reads: Vec<_> = (0..1000).map(|_| e.read_index(g)).collect();
        for r in reads {
            match r.map(|p| p.wait_timeout(Duration::from_secs(20))) {
                Err(ReadError::Busy(_)) | Ok(Ok(Err(ReadError::Busy(BusyReason::PendingReads)))) => busy += 1,
                Ok(Ok(Err(ReadError::Timeout))) => timed_out += 1,
                other => panic!("without a quorum: timed out or busy: {other:?}"),
            }
        }
        (timed_out, busy)
    };
    let (first, _) = flood(e);
    assert!(first > 0 && first <= BOUND, "first flood: {first} reads held");
    let (second, busy) = flood(e);
    assert_eq!(second, 0, "the timed-out reads still wait in the core: {second} more taken");
    assert_eq!(busy, 1000);
    assert!(e.metrics().reads_refused_busy >= 1000, "{:?}", e.metrics().reads_refused_busy);
    c.stop(1);
}

/// Groups `groups` on nodes `1..=n`, each led by node 1 with one entry committed; then
/// every node but `keep` stopped: a leader (node 1) that cannot commit or confirm
/// anything in any of them.
fn leaders_without_quorum(n: u64, groups: &[u64], keep: &[NodeId], tweak: fn(&mut EngineConfig)) -> Cluster {
    let mut c = Cluster::new_tweaked(n, 10_000, tweak);
    let members: Vec<NodeId> = (1..=n).collect();
    for &g in groups {
        for &m in members.iter().rev() {
            let sm = ChainSm::boxed(&c.node(m).reg, g);
            c.engine(m).create_group_led_by(g, &members, 1, sm).unwrap();
        }
    }
    for &g in groups {
        wait_engine_leads(c.engine(1), g, LONG);
        c.propose(g, b"first");
    }
    for m in 2..=n {
        if !keep.contains(&m) {
            c.stop(m);
        }
    }
    c
}

const WORKER_GROUPS: [u64; 8] = [60, 61, 62, 63, 64, 65, 66, 67];

/// The worker's bound on the sum (`max_worker_uncommitted_bytes`), which a client
/// reaching many groups meets where each group's own bound would let it hold `groups ×
/// max_uncommitted_bytes`: eight groups of one worker whose leader cannot commit, each
/// bounded at 128 KiB, take 512 KiB between them (not 1 MiB) and answer the rest
/// `Busy(WorkerUncommitted)`; once the quorum is back the held entries commit, the sum
/// falls to nothing and every group takes proposals again.
#[test]
fn a_worker_bounds_the_sum_of_its_groups_uncommitted_bytes() {
    let mut c = leaders_without_quorum(3, &WORKER_GROUPS, &[], |cfg| {
        cfg.workers = 1;
        cfg.raft.check_quorum = false;
        cfg.max_uncommitted_bytes = 128 << 10;
        cfg.max_worker_uncommitted_bytes = 512 << 10;
        cfg.propose_timeout_ticks = cfg.raft.election_timeout_max_ticks;
    });
    let e = c.engine(1);
    let mut pending = Vec::new();
    let mut busy: HashMap<BusyReason, u64> = HashMap::new();
    for g in WORKER_GROUPS {
        for i in 0..200u32 {
            match e.propose(g, Bytes::from(vec![i as u8; 1024])) {
                Ok(p) => pending.push(p),
                Err(ProposeError::Busy(r)) => *busy.entry(r).or_default() += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    wait_until("the flood handled", || e.metrics().mailbox_depth == 0);
    let gauge = e.metrics().uncommitted_bytes;
    let mut held = 0u64;
    for p in pending {
        match p.wait_timeout(Duration::from_secs(20)) {
            Ok(Err(ProposeError::Busy(r))) => *busy.entry(r).or_default() += 1,
            Ok(Err(ProposeError::Indeterminate)) => held += 1,
            other => panic!("without a quorum: accepted and timed out, or busy: {other:?}"),
        }
    }
    assert!(held > 256 && held <= 512, "{held} KiB held by the worker (bound 512 KiB)");
    assert!(busy.get(&BusyReason::WorkerUncommitted).is_some_and(|&n| n > 0), "{busy:?}");
    assert_eq!(held + busy.values().sum::<u64>(), 1600);
    assert!(gauge > 256 << 10 && gauge <= 512 << 10, "uncommitted_bytes gauge {gauge}");
    assert!(e.metrics().refused_busy_worker_uncommitted > 0);
    c.start(2);
    c.start(3);
    let e = c.engine(1);
    wait_until("the held entries commit", || e.metrics().uncommitted_bytes == 0);
    for g in WORKER_GROUPS {
        c.propose(g, &[7u8; 1024]);
    }
    c.stop(1);
}

/// Reads likewise (`max_worker_pending_reads`): eight groups of one worker whose
/// leader cannot confirm reads, each bounded at 100, hold 300 read records between them
/// (a leader's own read is two: the engine's waiter and the core's queue entry, so 150
/// reads), not 800, and answer the rest `Busy(WorkerReads)`.
#[test]
fn a_worker_bounds_the_reads_all_its_groups_hold() {
    let mut c = leaders_without_quorum(3, &WORKER_GROUPS, &[], |cfg| {
        cfg.workers = 1;
        cfg.raft.check_quorum = false;
        // Long enough that no waiter here expires while the flood is taken and the
        // gauge read, even on a loaded machine (an expiry would free room).
        cfg.read_timeout_ticks = cfg.raft.election_timeout_max_ticks * 20;
        cfg.max_pending_reads = 100;
        cfg.max_worker_pending_reads = 300;
    });
    let e = c.engine(1);
    let mut reads = Vec::new();
    let mut busy: HashMap<BusyReason, u64> = HashMap::new();
    for g in WORKER_GROUPS {
        for _ in 0..150 {
            match e.read_index(g) {
                Ok(r) => reads.push(r),
                Err(ReadError::Busy(r)) => *busy.entry(r).or_default() += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    wait_until("the flood handled", || e.metrics().mailbox_depth == 0);
    let gauge = e.metrics().reads_held;
    let mut held = 0u64;
    for r in reads {
        match r.wait_timeout(Duration::from_secs(20)) {
            Ok(Err(ReadError::Busy(r))) => *busy.entry(r).or_default() += 1,
            Ok(Err(ReadError::Timeout)) => held += 1,
            other => panic!("without a quorum: timed out or busy: {other:?}"),
        }
    }
    assert!(held > 100 && held <= 150, "{held} reads held by the worker (bound 300 records)");
    assert!(busy.get(&BusyReason::WorkerReads).is_some_and(|&n| n > 0), "{busy:?}");
    assert_eq!(held + busy.values().sum::<u64>(), 1200);
    assert!(gauge > 200 && gauge <= 300, "reads_held gauge {gauge}");
    c.stop(1);
}

/// Reads forwarded by followers count too: node 2 (larger bounds of its own) forwards
/// 1,200 reads of eight groups to their leader on node 1, which cannot confirm them
/// (three of five members down) and holds at most its worker's 300, dropping the rest.
#[test]
fn a_leader_drops_forwarded_reads_past_its_workers_bound() {
    let mut c = leaders_without_quorum(5, &WORKER_GROUPS, &[2], |cfg| {
        cfg.workers = 1;
        cfg.raft.check_quorum = false;
        cfg.read_timeout_ticks = cfg.raft.election_timeout_max_ticks;
        if cfg.node_id == 1 {
            cfg.max_pending_reads = 100;
            cfg.max_worker_pending_reads = 300;
        }
    });
    let follower = c.engine(2);
    let mut reads = Vec::new();
    for g in WORKER_GROUPS {
        for _ in 0..150 {
            reads.push(follower.read_index(g).expect("node 2 takes every read"));
        }
    }
    let leader = c.engine(1);
    wait_until("node 1 holds reads", || leader.metrics().reads_held > 0);
    wait_until("the forwarded reads handled", || {
        follower.metrics().mailbox_depth == 0 && leader.metrics().mailbox_depth == 0
    });
    std::thread::sleep(Duration::from_millis(50));
    let m = leader.metrics();
    assert!(m.reads_held > 200 && m.reads_held <= 300, "node 1 holds {} reads", m.reads_held);
    assert!(m.reads_refused_busy > 0, "node 1 dropped no forwarded read");
    for r in reads {
        match r.wait_timeout(Duration::from_secs(20)) {
            Ok(Err(ReadError::Timeout)) => {}
            other => panic!("unconfirmed: timed out: {other:?}"),
        }
    }
    assert!(leader.metrics().reads_held <= 300);
    c.stop(1);
    c.stop(2);
}

/// The real file system, whose data syncs wait while `slow` is set (at most 20 s).
struct SlowSyncFs {
    slow: Arc<AtomicBool>,
}

impl flotilla_wal::FileSystem for SlowSyncFs {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        flotilla_wal::StdFs.list(dir)
    }
    fn open(&self, path: &std::path::Path, create: bool) -> std::io::Result<std::fs::File> {
        flotilla_wal::StdFs.open(path, create)
    }
    fn set_len(&self, path: &std::path::Path, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        flotilla_wal::StdFs.set_len(path, file, len)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.sync_dir(dir)
    }
    fn before_sync(&self, _path: &std::path::Path) -> flotilla_wal::SyncFault {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.slow.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        flotilla_wal::SyncFault::None
    }
}

/// The pending-WAL-bytes bound: while the disk does not finish a sync, proposals (to two
/// groups, each well under its own bound) are accepted until the worker holds
/// `max_pending_wal_bytes` of unsynced batches, then refused with `Busy(WalPending)`;
/// once the disk catches up every accepted one applies.
#[test]
fn pending_wal_bytes_bound_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(false));
    let mut cfg = config(1, dir.path().to_path_buf(), 10_000);
    cfg.workers = 1;
    cfg.max_pending_wal_bytes = cfg.wal.max_write_bytes as u64; // 1 MiB
                                                                // The bound is on batches handed to the WAL's writer; a worker that syncs inline
                                                                // would wait on the stalled disk itself (its full mailbox answering `Busy`).
    cfg.inline_wal_writes = false;
    let bound = cfg.max_pending_wal_bytes;
    let sms: SmMap = Arc::default();
    let s = sms.clone();
    let factory: StateMachineFactory = Arc::new(move |g| {
        let (st, gate) = s.lock().unwrap().entry(g).or_default().clone();
        Box::new(ChainSm::new(st).gated(gate))
    });
    let fs = Arc::new(SlowSyncFs { slow: slow.clone() });
    let e = Engine::open_with_fs(cfg, Box::new(MemoryNetwork::new().join(1, 1 << 12)), factory, fs).unwrap();
    create_single(&e, &sms, 1);
    create_single(&e, &sms, 2);
    slow.store(true, Ordering::Release);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..64u64 {
        let g = 1 + i % 2;
        let mut p = e.propose(g, Bytes::from(vec![i as u8; 60 << 10])).unwrap();
        // Each proposal is either refused, or submitted in a batch of its own (the
        // pending bytes grow past it) before the next is made.
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "proposal {i} neither refused nor submitted");
            match p.wait_timeout(Duration::from_millis(1)) {
                Ok(Err(ProposeError::Busy(BusyReason::WalPending))) => {
                    refused += 1;
                    break;
                }
                Ok(r) => panic!("nothing is durable yet: {r:?}"),
                Err(still) => p = still,
            }
            if e.metrics().wal_pending_bytes >= (accepted.len() as u64 + 1) * (60 << 10) {
                accepted.push(p);
                break;
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert_eq!(refused, 1, "the pending WAL bytes never hit the bound");
    let held = accepted.len() as u64 * (60 << 10);
    assert!(held <= bound + (60 << 10), "{held} bytes accepted past a bound of {bound}");
    let m = e.metrics();
    assert_eq!(m.refused_busy_wal_pending, 1);
    assert!(m.wal_pending_bytes >= bound - (60 << 10));
    slow.store(false, Ordering::Release);
    for p in accepted {
        assert!(p.wait_timeout(LONG).unwrap().is_ok());
    }
    wait_until("nothing pending", || e.metrics().wal_pending_bytes == 0);
    e.shutdown();
}

/// The worker owning `group` among `n` (a copy of the engine's routing, so the test can
/// place groups on chosen workers).
fn route(group: u64, n: usize) -> usize {
    let mut z = group.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % n.max(1) as u64) as usize
}

/// A worker never blocks handing an effect-created group to another worker (issue 10,
/// point 6): with worker 1 stalled and its mailbox full, worker 0 applies a create-group
/// effect for a group owned by worker 1 and keeps serving its own groups at once; the
/// group is created once worker 1 drains its mailbox.
#[test]
fn effect_for_a_full_worker_does_not_block_the_worker() {
    const N: usize = 2;
    let pick = |worker: usize, from: u64| (from..).find(|&g| route(g, N) == worker).unwrap();
    let ga = pick(0, 1); // on worker 0: applies the effect
    let gb = pick(1, 1); // on worker 1: stalls it
    let stall = pick(1, 1000); // created by gb's effect; its factory blocks worker 1
    let target = pick(1, stall + 1); // created by ga's effect, owned by worker 1
    let dir = tempfile::tempdir().unwrap();
    let released = Arc::new(AtomicBool::new(false));
    let stalled = Arc::new(AtomicBool::new(false));
    let (rel, st) = (released.clone(), stalled.clone());
    let factory: StateMachineFactory = Arc::new(move |g| {
        if g == stall {
            st.store(true, Ordering::Release);
            let deadline = Instant::now() + LONG;
            while !rel.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Box::new(ChainSm::new(Arc::default()).splitting(vec![1]))
    });
    let mut cfg = config(1, dir.path().join("n1"), 10_000);
    cfg.workers = N;
    cfg.mailbox_capacity = 64;
    let e = Engine::open(cfg, Box::new(MemoryNetwork::new().join(1, 1 << 14)), factory).unwrap();
    for g in [ga, gb] {
        e.create_group(g, &[1], Box::new(ChainSm::new(Arc::default()).splitting(vec![1]))).unwrap();
        wait_until("a leader", || e.group_status(g).is_some_and(|s| s.role == Role::Leader));
    }
    // Stall worker 1, then fill its mailbox.
    e.propose(gb, Bytes::from(format!("split:{stall}"))).unwrap().wait().unwrap();
    wait_until("worker 1 stalls", || stalled.load(Ordering::Acquire));
    let mut full = false;
    for _ in 0..10_000 {
        if matches!(e.propose(gb, Bytes::from_static(b"x")), Err(ProposeError::Busy(_))) {
            full = true;
            break;
        }
    }
    assert!(full, "worker 1's mailbox never filled");
    // Worker 0 applies an effect for worker 1, then serves its own group at once.
    e.propose(ga, Bytes::from(format!("split:{target}"))).unwrap().wait().unwrap();
    let t = Instant::now();
    let r = e.read_index(ga).unwrap().wait_timeout(Duration::from_secs(2));
    let served = matches!(r, Ok(Ok(_)));
    released.store(true, Ordering::Release);
    assert!(served, "worker 0 blocked handing the effect to a full worker ({:?})", t.elapsed());
    wait_until("the effect's group", || e.group_status(target).is_some_and(|s| s.role == Role::Leader));
    e.shutdown();
}
