//! Leadership while the followers' disks stall (issue 16 point 2): three engines over the
//! in-memory network, each on its own fault-injecting file system ([`FaultFs`]). Node 1
//! leads two groups that share one worker everywhere: group A takes writes, group B only
//! stays awake. Then both followers' fsyncs are held for several election timeouts while
//! A has a write in flight on them.
//!
//! Both groups must keep their leader and term throughout:
//! - a follower answers A's heartbeats at once, not after its stalled write (an answer
//!   held behind the write never reaches the leader, whose CheckQuorum then finds no
//!   quorum and steps down with both followers alive);
//! - a follower's worker does not sync inline while B is active beside A (a worker inside
//!   a stalled fsync neither answers B's heartbeats nor steps anything else).
//!
//! Once the syncs are released, A's write commits. Each fails without its rule; with
//! both, neither group changes term.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, Role};
use flotilla_engine::transport::MemoryNetwork;
use flotilla_wal::fault::FaultFs;

const A: u64 = 1;
const B: u64 = 2;
/// How long the followers' syncs stay held: many CheckQuorum windows (50 ms each at the
/// 5 ms tick) and several maximum election timeouts (100 ms).
const STALL: Duration = Duration::from_millis(600);

struct Node {
    engine: Engine,
    fs: Arc<FaultFs>,
    reg: Registry,
}

/// Node `id` on its own fault-injecting file system, its configuration adjusted by `tweak`.
fn open(
    net: &MemoryNetwork,
    id: NodeId,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut EngineConfig),
) -> Node {
    let mut cfg = config(id, dir.join(format!("n{id}")), 10_000);
    // One worker: A and B share it on every node.
    cfg.workers = 1;
    // B stays awake although it takes no writes (a quiesced group needs no heartbeats).
    cfg.raft.quiesce = false;
    cfg.wal.backend = flotilla_wal::BackendChoice::Pwrite;
    tweak(&mut cfg);
    let fs = Arc::new(FaultFs::new(dir.join(format!("trash{id}")), id).unwrap());
    let reg = Registry::default();
    let r = reg.clone();
    let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&r, g));
    let engine = Engine::open_with_fs(cfg, Box::new(net.join(id, 1 << 16)), factory, fs.clone()).unwrap();
    Node { engine, fs, reg }
}

/// Three nodes with A and B led by node 1, and ten writes to A committed.
fn three_with_ten_writes(net: &MemoryNetwork, dir: &std::path::Path) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=3).map(|id| open(net, id, dir, |_| {})).collect();
    let pairs: Vec<(&Engine, &Registry)> = nodes.iter().map(|n| (&n.engine, &n.reg)).collect();
    create_led_by_node1(&pairs, &[A, B]);
    for i in 0..10u8 {
        let p = nodes[0].engine.propose(A, Bytes::from(vec![i; 64])).unwrap();
        assert!(matches!(p.wait_timeout(Duration::from_secs(20)), Ok(Ok(_))));
    }
    nodes
}

/// Stalls both followers' next sync, then gives them a write to make (A's next entry);
/// returns once both syncs are held.
fn write_while_the_followers_stall(nodes: &[Node]) -> Proposal {
    for n in &nodes[1..] {
        n.fs.hold_next_sync();
    }
    let pending = nodes[0].engine.propose(A, Bytes::from_static(b"written during the stall")).unwrap();
    wait_until("both followers' syncs held", Duration::from_secs(10), || {
        nodes[1..].iter().all(|n| n.fs.sync_held())
    });
    pending
}

#[test]
fn leaders_hold_while_the_followers_disks_stall() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let nodes = three_with_ten_writes(&net, tmp.path());
    let before = [role_term(&nodes[0].engine, A), role_term(&nodes[0].engine, B)];
    assert_eq!((before[0].0, before[1].0), (Role::Leader, Role::Leader));

    let pending = write_while_the_followers_stall(&nodes);
    // Watch without asserting: the held syncs must be released before anything panics
    // (an engine shut down with a sync held waits for it).
    let mut lost = None;
    let until = Instant::now() + STALL;
    while Instant::now() < until && lost.is_none() {
        for (g, was) in [A, B].into_iter().zip(before) {
            let now = role_term(&nodes[0].engine, g);
            if now != was && lost.is_none() {
                lost = Some((g, now));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for n in &nodes[1..] {
        n.fs.release_sync();
    }
    assert_eq!(
        lost, None,
        "a group lost its leader while the followers' disks stalled (group, (role, term))"
    );
    assert!(
        matches!(pending.wait_timeout(Duration::from_secs(20)), Ok(Ok(_))),
        "A's write commits after the stall"
    );
    for (g, was) in [A, B].into_iter().zip(before) {
        assert_eq!(role_term(&nodes[0].engine, g), was, "group {g}: leader and term after the stall");
    }
    for n in nodes {
        n.engine.shutdown();
    }
}

/// Proposes to a one-replica group on `e` and waits for the answer.
fn commit(e: &Engine, data: &'static [u8]) {
    let p = e.propose(A, Bytes::from_static(data)).unwrap();
    assert!(matches!(p.wait_timeout(Duration::from_secs(20)), Ok(Ok(_))), "{data:?} committed");
}

/// `EngineConfig::inline_sync_max`: after a sync held for 150 ms, an idle worker hands its
/// next batch to the WAL's writer when the bound is 20 ms, and still writes it inline when
/// the bound is past that sync (`MAX_INLINE_SYNC_MAX`). One replica, one worker, a tick of
/// a second (so no tick's deferred commit index is written between the held sync and
/// the write that follows it, which would make the WAL's last sync a quick one).
#[test]
fn a_worker_syncs_inline_only_while_the_last_sync_was_within_its_bound() {
    for (bound, inline_after) in [(Duration::from_millis(20), false), (MAX_INLINE_SYNC_MAX, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new();
        let Node { engine: e, fs, reg } = open(&net, 1, tmp.path(), |cfg| {
            cfg.tick_interval = Duration::from_secs(1);
            cfg.inline_sync_max = bound;
        });
        e.create_group_led_by(A, &[1], 1, ChainSm::boxed(&reg, A)).unwrap();
        wait_until("leader", Duration::from_secs(20), || {
            e.group_status(A).is_some_and(|s| s.role == Role::Leader)
        });
        commit(&e, b"warm up");
        // Up to three attempts: one where a tick's write of the commit index came between
        // (a sync of its own, not held or quick) shows nothing and is run again.
        let mut seen = None;
        for _ in 0..3 {
            let syncs = fs.segment_syncs();
            fs.hold_next_sync();
            let slow = e.propose(A, Bytes::from_static(b"written with a slow sync")).unwrap();
            wait_until("the sync held", Duration::from_secs(20), || fs.sync_held());
            std::thread::sleep(Duration::from_millis(150));
            fs.release_sync();
            assert!(matches!(slow.wait_timeout(Duration::from_secs(20)), Ok(Ok(_))));
            let before = e.metrics().wal_inline_writes;
            let alone = fs.segment_syncs() == syncs + 1;
            commit(&e, b"right after it");
            if alone && fs.segment_syncs() == syncs + 2 {
                seen = Some(e.metrics().wal_inline_writes - before);
                break;
            }
        }
        let inline = seen.expect("in three attempts, a tick's write came between every time");
        assert_eq!(inline > 0, inline_after, "bound {bound:?}: {inline} inline writes after a 150 ms sync");
        e.shutdown();
    }
}

/// `EngineConfig::acks_when_durable`: a follower's acknowledgements of appends leave from
/// the thread that made their write durable, and never before it is. Both followers'
/// syncs are held while the leader has a write on them: the write must not commit
/// (nobody acknowledged it; an acknowledgement sent before the sync would commit it),
/// and commits once they are released. The followers count the acknowledgements sent so.
#[test]
fn a_follower_acknowledges_when_its_write_is_durable_and_never_before() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let nodes = three_with_ten_writes(&net, tmp.path());
    for n in &nodes[1..] {
        assert!(n.engine.metrics().acks_sent_when_durable > 0, "a follower acknowledged from its worker");
    }
    assert_eq!(nodes[0].engine.metrics().acks_sent_when_durable, 0, "the leader acknowledges nothing");

    let pending = write_while_the_followers_stall(&nodes);
    // Bounded: 40 polls of 5 ms while the syncs are held.
    let mut answered = false;
    for _ in 0..40 {
        answered |= pending.is_ready();
        std::thread::sleep(Duration::from_millis(5));
    }
    let acks_held: Vec<u64> = nodes[1..].iter().map(|n| n.engine.metrics().acks_sent_when_durable).collect();
    for n in &nodes[1..] {
        n.fs.release_sync();
    }
    assert!(!answered, "the write committed while no follower had it durable");
    assert!(
        matches!(pending.wait_timeout(Duration::from_secs(20)), Ok(Ok(_))),
        "the write commits once the followers' syncs return"
    );
    wait_until("the followers acknowledged it once durable", Duration::from_secs(10), || {
        nodes[1..].iter().zip(&acks_held).any(|(n, held)| n.engine.metrics().acks_sent_when_durable > *held)
    });
    for n in nodes {
        n.engine.shutdown();
    }
}
