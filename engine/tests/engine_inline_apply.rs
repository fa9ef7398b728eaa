//! Quick batches applied on the worker (`EngineConfig::inline_apply`, `runtime/apply_lane.rs`):
//! with few proposals in flight, every node applies its committed batches of quick
//! commands on the worker itself, with the same results, in the same order, as the apply
//! thread gives; with the option off, none is; a state machine that panics there stops the
//! engine as one that panics on the apply thread does, and the worker lives on to shut
//! down.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::Role;
use flotilla_engine::transport::MemoryNetwork;

const LONG: Duration = Duration::from_secs(30);

/// Three nodes, one proposal at a time: every node applied most batches on its worker,
/// and the replicas agree on every command (the hash chain), each proposer got its own
/// entry's index, in order. With `inline_apply` off no batch is applied on a worker.
#[test]
fn quick_batches_are_applied_on_every_worker_with_the_same_results() {
    for inline in [true, false] {
        let c = if inline {
            Cluster::new(3, 10_000)
        } else {
            Cluster::new_tweaked(3, 10_000, |c| c.inline_apply = false)
        };
        c.create_group(1, &[1, 2, 3]);
        c.wait_leader(1, LONG);
        let before: Vec<u64> = (1..=3).map(|n| c.engine(n).metrics().applied_inline).collect();
        let n = 40u64;
        let mut last = 0;
        for i in 0..n {
            let index = c.propose(1, format!("cmd-{i}").as_bytes());
            assert!(index > last, "results in log order");
            last = index;
        }
        let st = c.wait_converged(1, &[1, 2, 3], n, LONG);
        assert_eq!(st.commands, n);
        for (i, node) in (1..=3).enumerate() {
            let inlined = c.engine(node).metrics().applied_inline - before[i];
            if inline {
                // One batch per commit at one proposal in flight (a follower may see two
                // commits in one batch): most of them on the worker.
                assert!(inlined >= n / 2, "node {node} applied only {inlined} of {n} batches on its worker");
            } else {
                assert_eq!(inlined, 0, "node {node} applied on its worker with inline_apply off");
            }
        }
    }
}

/// One engine, node 1 with one worker, storing under `dir`, its configuration adjusted by
/// `tweak`.
fn single_node(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut EngineConfig),
    factory: StateMachineFactory,
) -> Engine {
    let mut cfg = config(1, dir.to_path_buf(), 10_000);
    cfg.workers = 1;
    tweak(&mut cfg);
    Engine::open(cfg, Box::new(MemoryNetwork::new().join(1, 1 << 12)), factory).unwrap()
}

/// A state machine that calls every command quick, panics on "boom" and sleeps a second on
/// "slow".
struct Boom;

impl StateMachine for Boom {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        assert_ne!(command, Some(&b"boom"[..]), "the state machine panics");
        if command == Some(&b"slow"[..]) {
            std::thread::sleep(Duration::from_secs(1));
        }
        Bytes::copy_from_slice(&index.to_le_bytes())
    }

    fn is_quick(&self, _command: &[u8]) -> bool {
        true
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, _out: &mut dyn Write) -> std::io::Result<()> {
        Ok(())
    }

    fn restore(&mut self, _index: u64, _term: u64, _input: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A state machine that panics while the worker applies for it: the engine stops (as
/// when it panics on the apply thread: nothing can be applied any more), the proposal
/// gets no result, later proposals are refused as fatal, and the engine still shuts down
/// (the worker thread survived the panic).
#[test]
fn a_panic_on_the_worker_stops_the_engine_and_the_worker_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let e = single_node(dir.path(), |_| {}, std::sync::Arc::new(|_| Box::new(Boom)));
    e.create_group(1, &[1], Box::new(Boom)).unwrap();
    wait_until("leader", LONG, || e.group_status(1).is_some_and(|s| s.role == Role::Leader));
    let ok = e.propose(1, Bytes::from_static(b"fine")).unwrap().wait_timeout(LONG).unwrap();
    assert!(ok.is_ok(), "{ok:?}");
    assert!(e.metrics().applied_inline > 0, "the quick batch was applied on the worker");
    let boom = e.propose(1, Bytes::from_static(b"boom")).unwrap().wait_timeout(LONG).unwrap();
    assert!(boom.is_err(), "a panicked apply gives no result: {boom:?}");
    // At once, with nothing else proposed: on the apply thread the panic would show only
    // when the next command is sent to it (and without the catch the worker would die).
    wait_until("the engine stops", LONG, || e.storage_failed());
    let after = e.propose(1, Bytes::from_static(b"later")).map(|p| p.wait_timeout(LONG));
    let refused = match after {
        Err(err) => err.class() == ErrorClass::Fatal,
        Ok(Ok(Err(err))) => err.class() == ErrorClass::Fatal,
        _ => false,
    };
    assert!(refused, "a proposal after the panic is refused as fatal");
    e.shutdown();
}

/// Order across the two paths, within one group: while a command that is not quick
/// ("block", held at its gate) is applied on the apply thread, the group's quick batches
/// after it are not applied on the worker ahead of it (the counting state machine panics on
/// an entry applied out of order, and the engine would stop); once it is released every
/// proposal gets its own entry's index, in log order, and the worker applies quick
/// batches itself again.
#[test]
fn quick_batches_never_overtake_a_batch_on_the_apply_thread() {
    let dir = tempfile::tempdir().unwrap();
    let st = std::sync::Arc::new(std::sync::Mutex::new(SmState::default()));
    let gate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, g) = (st.clone(), gate.clone());
    let factory: StateMachineFactory =
        std::sync::Arc::new(move |_| Box::new(ChainSm::new(s.clone()).gated(g.clone())));
    let e = single_node(dir.path(), |_| {}, factory);
    e.create_group(1, &[1], Box::new(ChainSm::new(st.clone()).gated(gate.clone()))).unwrap();
    wait_until("leader", LONG, || e.group_status(1).is_some_and(|s| s.role == Role::Leader));
    let stuck = e.propose(1, Bytes::from_static(b"block")).unwrap();
    wait_until("the blocked apply", LONG, || e.metrics().apply_lag >= 1);
    let inline_before = e.metrics().applied_inline;
    let n = 30u64;
    let commit0 = e.group_status(1).unwrap().commit;
    let waiters: Vec<Proposal> =
        (0..n).map(|i| e.propose(1, Bytes::from(format!("after-{i}"))).unwrap()).collect();
    wait_until("the later proposals commit", LONG, || {
        e.group_status(1).is_some_and(|s| s.commit >= commit0 + n)
    });
    assert_eq!(e.metrics().applied_inline, inline_before, "a quick batch overtook the blocked one");
    gate.store(true, std::sync::atomic::Ordering::Release);
    let block_index = u64::from_le_bytes(stuck.wait_timeout(LONG).unwrap().unwrap()[..8].try_into().unwrap());
    let mut last = block_index;
    for w in waiters {
        let index = u64::from_le_bytes(w.wait_timeout(LONG).unwrap().unwrap()[..8].try_into().unwrap());
        assert!(index > last, "results in log order");
        last = index;
    }
    assert!(!e.storage_failed());
    for i in 0..5 {
        let r = e.propose(1, Bytes::from(format!("later-{i}"))).unwrap().wait_timeout(LONG).unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(
        e.metrics().applied_inline > inline_before,
        "quick batches on the worker again once the thread is idle"
    );
    assert_eq!(st.lock().unwrap().commands, n + 6);
    e.shutdown();
}

/// A state machine that calls quick a command that is not stalls its worker once: the
/// batch is counted in `applied_inline_slow`, and the group's later batches go to the
/// apply thread (no more `applied_inline`; for a minute), while another group on the same
/// worker still has its batches applied there. Every proposal is answered.
#[test]
fn a_group_slow_on_the_worker_once_is_applied_on_the_apply_thread_for_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    // Past any preemption of a worker on a loaded machine, below the "slow" command.
    let slow_after = |cfg: &mut EngineConfig| cfg.inline_apply_slow = Duration::from_millis(500);
    let e = single_node(dir.path(), slow_after, std::sync::Arc::new(|_| Box::new(Boom)));
    for g in [1, 2] {
        e.create_group(g, &[1], Box::new(Boom)).unwrap();
        wait_until("leader", LONG, || e.group_status(g).is_some_and(|s| s.role == Role::Leader));
    }
    let propose = |g: u64, data: &'static [u8]| {
        let r = e.propose(g, Bytes::from_static(data)).unwrap().wait_timeout(LONG).unwrap();
        assert!(r.is_ok(), "{r:?}");
    };
    propose(1, b"fine");
    let m0 = e.metrics();
    assert!(m0.applied_inline > 0 && m0.applied_inline_slow == 0, "{m0:?}");
    propose(1, b"slow");
    // The proposer is answered while the batch is applied; the worker counts it after.
    wait_until("the slow batch counted", LONG, || e.metrics().applied_inline_slow > 0);
    let m1 = e.metrics();
    assert_eq!(m1.applied_inline_slow, 1, "the slow batch was applied on the worker and reported");
    for _ in 0..10 {
        propose(1, b"fine again");
    }
    let m2 = e.metrics();
    assert_eq!(m2.applied_inline, m1.applied_inline, "group 1's batches went to the apply thread");
    assert_eq!(m2.applied_inline_slow, 1);
    for _ in 0..10 {
        propose(2, b"another group");
    }
    assert!(e.metrics().applied_inline > m2.applied_inline, "group 2's batches still on the worker");
    assert!(!e.storage_failed());
    e.shutdown();
}
