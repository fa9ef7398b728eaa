//! Lease reads in the runtime (issue 10, point 6): the lease is measured with a clock that
//! keeps running (CLOCK_BOOTTIME), not with ticks, so a leader whose worker stalled past
//! its lease, while the others elected a new leader and accepted a write, serves no stale
//! read when it resumes (thesis §6.4.1: the lease must end before any other replica can
//! be elected).
//!
//! The stall is made with the public API only: node 1's state-machine factory, which the
//! worker calls when a leader's message creates a replica there, blocks for one group until
//! the test releases it (bounded), with every group on one worker.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::{ChainSm, Registry};
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, ReadMode, Role};
use flotilla_engine::transport::{FaultControl, MemoryNetwork};

/// The group whose lease is tested.
const G: u64 = 1;
/// A group whose creation on node 1 stalls node 1's only worker.
const STALLER: u64 = 99;
/// The longest any wait of the test lasts.
const WAIT: Duration = Duration::from_secs(20);

/// A gate the factory blocks on: `entered` once blocked, open once `released`.
#[derive(Default)]
struct Gate {
    st: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Gate {
    /// Blocks the calling (worker) thread until released, at most `WAIT`.
    fn block(&self) {
        let deadline = Instant::now() + WAIT;
        let mut st = self.st.lock().unwrap();
        st.0 = true;
        self.cv.notify_all();
        while !st.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self.cv.wait_timeout(st, left).unwrap().0;
        }
    }

    fn wait_entered(&self) {
        let deadline = Instant::now() + WAIT;
        let mut st = self.st.lock().unwrap();
        while !st.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the worker never stalled");
            st = self.cv.wait_timeout(st, left).unwrap().0;
        }
    }

    fn release(&self) {
        self.st.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

fn open(
    id: NodeId,
    dir: &Path,
    net: &MemoryNetwork,
    fault: &FaultControl,
    reg: &Registry,
    gate: &Arc<Gate>,
) -> Engine {
    let mut c = common_engine::config(id, dir.join(format!("n{id}")), 100_000);
    c.workers = 1;
    c.tick_interval = Duration::from_millis(5);
    c.raft.read_mode = ReadMode::LeaseBased;
    c.raft.check_quorum = true;
    // A quiesced leader holds no lease: keep the group awake.
    c.raft.quiesce = false;
    let (reg, gate) = (reg.clone(), gate.clone());
    let factory: StateMachineFactory = Arc::new(move |g| {
        if g == STALLER && id == 1 {
            gate.block();
        }
        ChainSm::boxed(&reg, g)
    });
    Engine::open(c, Box::new(fault.wrap(net.join(id, 1 << 16))), factory).unwrap()
}

fn leader_of(engines: &[Engine], among: &[NodeId]) -> Option<NodeId> {
    among
        .iter()
        .copied()
        .find(|&n| engines[n as usize - 1].group_status(G).is_some_and(|s| s.role == Role::Leader))
}

fn wait_leader(engines: &[Engine], among: &[NodeId]) -> NodeId {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(l) = leader_of(engines, among) {
            return l;
        }
        assert!(Instant::now() < deadline, "no leader among {among:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Proposes `data` at node `at` (which leads), returning the applied index.
fn write(e: &Engine, data: &'static [u8]) -> u64 {
    let r = e.propose(G, Bytes::from_static(data)).unwrap().wait().unwrap();
    u64::from_le_bytes(r[..8].try_into().unwrap())
}

/// Rule (thesis §6.4.1, with time measured by a clock that runs while the process does
/// not): the leader's worker stalls longer than the election timeout while it is cut off;
/// the others elect a new leader and acknowledge a write; a read sent to the old leader
/// during the stall is not served from its lease when the worker resumes (it times out or
/// is refused), so no read misses the acknowledged write.
#[test]
fn stalled_leader_serves_no_stale_lease_read() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let fault = FaultControl::default();
    let gate = Arc::new(Gate::default());
    let regs: Vec<Registry> = (0..3).map(|_| Registry::default()).collect();
    let engines: Vec<Engine> =
        (1..=3).map(|id| open(id, tmp.path(), &net, &fault, &regs[id as usize - 1], &gate)).collect();
    for id in [2u64, 3, 1] {
        let sm = ChainSm::boxed(&regs[id as usize - 1], G);
        engines[id as usize - 1].create_group_led_by(G, &[1, 2, 3], 1, sm).unwrap();
    }
    let e1 = &engines[0];
    // Node 1 leads (or is made to), has applied a write, and serves reads.
    let deadline = Instant::now() + WAIT;
    while leader_of(&engines, &[1]).is_none() {
        assert!(Instant::now() < deadline, "node 1 never led");
        if let Some(l) = leader_of(&engines, &[2, 3]) {
            let _ = engines[l as usize - 1].transfer_leader(G, 1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = write(e1, b"first");
    for _ in 0..5 {
        assert!(e1.read_index(G).unwrap().wait().unwrap() >= first);
    }

    // Stall node 1's worker: a leader of STALLER on node 2 creates its replica there.
    for id in [2u64, 3] {
        let sm = ChainSm::boxed(&regs[id as usize - 1], STALLER);
        engines[id as usize - 1].create_group_led_by(STALLER, &[2, 3, 1], 2, sm).unwrap();
    }
    gate.wait_entered();
    let stalled_at = Instant::now();
    fault.isolate(1, &[2, 3]);

    // The others elect a leader and acknowledge a write.
    let l = wait_leader(&engines, &[2, 3]);
    let acked = write(&engines[l as usize - 1], b"second");
    assert!(acked > first);
    // A read begins at node 1 after that write was acknowledged; its worker resumes.
    let read = e1.read_index(G).unwrap();
    let stall = stalled_at.elapsed();
    gate.release();
    let res = read.wait_timeout(WAIT).unwrap_or_else(|_| panic!("the read never resolved"));
    let state = regs[0].lock().unwrap().get(&G).map(|s| *s.lock().unwrap()).unwrap_or_default();
    match res {
        Ok(index) => assert!(
            state.commands >= 2 && index >= acked,
            "stale read: node 1 answered at applied index {index} (state {state:?}) after a stall of \
             {stall:?}, but the write at {acked} acknowledged by node {l} before the read began is not there"
        ),
        Err(e) => assert!(
            matches!(e, ReadError::Timeout | ReadError::NotLeader { .. }),
            "unexpected read error {e:?}"
        ),
    }
    for e in engines {
        e.shutdown();
    }
}
