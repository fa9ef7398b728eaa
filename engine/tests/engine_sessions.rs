//! Client sessions at the engine level (issue 13, point 4): a proposal in a session whose
//! answer was lost (its leader isolated: `Indeterminate`) and that is retried at the new
//! leader is applied once, and the retry is answered with the first application's result;
//! the session table survives a restart (snapshot + replay) and a snapshot install; a
//! session expires by the replicated clock; registering past the bound evicts the least
//! recently used session.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::NodeId;

const G: u64 = 1;
const WAIT: Duration = Duration::from_secs(30);

fn tweak(c: &mut EngineConfig) {
    // An isolated leader's waiters resolve Indeterminate after 2 s (5 ms ticks).
    c.propose_timeout_ticks = 400;
    c.max_sessions = 3;
}

fn tweak_short_ttl(c: &mut EngineConfig) {
    tweak(c);
    c.session_ttl = Duration::from_secs(1);
}

/// The 8-byte index the counting state machine answers with.
fn index_of(b: &Bytes) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Opens a session at the group's leader, retrying refusals (bounded).
fn open(c: &Cluster) -> Session {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no session opened in time");
        let l = c.wait_leader(G, WAIT);
        match c.engine(l).open_session(G) {
            Ok(s) => return s,
            Err(e) if e.class() == ErrorClass::Fatal || e.class() == ErrorClass::Invalid => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Proposes (`session`, `seq`) at whichever node leads until an answer that is not a
/// retryable refusal or a lost outcome arrives (bounded): the session makes every retry
/// safe. Returns that answer.
fn propose_until_answered(c: &Cluster, s: &Session, seq: u64, data: &[u8]) -> Result<Bytes, ProposeError> {
    let deadline = Instant::now() + WAIT;
    for _ in 0..2000 {
        assert!(Instant::now() < deadline, "({}, {seq}) never answered", s.id());
        let Some(l) = c.leader(G) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let r = c
            .engine(l)
            .propose_in_session(s, seq, Bytes::copy_from_slice(data))
            .and_then(|p| p.wait_timeout(Duration::from_secs(5)).unwrap_or(Err(ProposeError::Indeterminate)));
        match r {
            Ok(b) => return Ok(b),
            Err(ProposeError::Session(r)) => return Err(ProposeError::Session(r)),
            Err(e) if e.class() == ErrorClass::Fatal => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    panic!("({}, {seq}) never answered", s.id());
}

fn commands(c: &Cluster, node: NodeId) -> u64 {
    c.state(node, G).map_or(0, |s| s.commands)
}

/// Leader 1 appends (session, 1) and replicates it, but no answer reaches it; then it is
/// cut off, 2 and 3 elect a leader which commits the entry, and node 1's caller sees
/// `Indeterminate`. The retry at the new leader is answered with the first result (the
/// index of the first entry) and the state machines applied the command once. A second
/// proposal whose entry never left the isolated leader is applied by its retry, once.
/// After heal, restart and a snapshot install, a retry of the first is still a duplicate.
#[test]
fn a_retried_proposal_is_applied_once_across_leader_change_restart_and_snapshot() {
    let mut c = Cluster::new_tweaked(3, 20, tweak);
    c.create_group(G, &[1, 2, 3]);
    c.wait_leader(G, WAIT);
    c.transfer(G, 1, WAIT);
    let mut s = open(&c);
    let before = c.propose(G, b"plain");
    c.wait_converged(G, &[1, 2, 3], 1, WAIT);

    // 1. Replicated, not acknowledged: the followers hold the entry, the leader never
    //    learns it committed.
    c.fault.block(2, 1);
    c.fault.block(3, 1);
    let seq1 = s.next_seq();
    let first = c.engine(1).propose_in_session(&s, seq1, Bytes::from_static(b"incr-1")).unwrap();
    wait_until("the followers hold the entry", WAIT, || {
        [2, 3].iter().all(|&n| c.engine(n).group_status(G).is_some_and(|st| st.last_index > before))
    });
    c.fault.isolate(1, &[2, 3]);
    let lost = first.wait_timeout(WAIT).unwrap_or_else(|_| panic!("the first attempt never resolved"));
    assert_eq!(lost, Err(ProposeError::Indeterminate), "the isolated leader cannot know the outcome");
    wait_until("a new leader among 2 and 3", WAIT, || c.leader(G).is_some_and(|l| l != 1));
    let retried = propose_until_answered(&c, &s, seq1, b"incr-1").unwrap();
    // The first attempt's entry was committed by the new leader: its index is the answer.
    let first_index = index_of(&retried);
    assert_eq!(first_index, before + 1, "answered with the first application's result");
    let l = c.leader(G).unwrap();
    assert_eq!(commands(&c, l), 2, "applied once: the plain proposal and incr-1");

    // 2. Never replicated: the retry applies it now, once.
    c.fault.heal();
    c.transfer(G, 1, WAIT);
    c.wait_converged(G, &[1, 2, 3], 2, WAIT);
    c.fault.isolate(1, &[2, 3]);
    let seq2 = s.next_seq();
    let second = c.engine(1).propose_in_session(&s, seq2, Bytes::from_static(b"incr-2"));
    if let Ok(p) = second {
        let r = p.wait_timeout(WAIT).unwrap_or_else(|_| panic!("the second attempt never resolved"));
        assert!(r.is_err(), "an isolated leader cannot apply: {r:?}");
    }
    wait_until("a new leader among 2 and 3", WAIT, || c.leader(G).is_some_and(|l| l != 1));
    let applied_now = propose_until_answered(&c, &s, seq2, b"incr-2").unwrap();
    assert_eq!(propose_until_answered(&c, &s, seq2, b"incr-2").unwrap(), applied_now, "a duplicate");
    c.fault.heal();
    let st = c.wait_converged(G, &[1, 2, 3], 3, WAIT);
    assert_eq!(st.commands, 3, "every command applied exactly once on every replica");

    // 3. A restart (snapshots every 20 entries, then replay): the table is the same.
    for i in 0..45u64 {
        c.propose(G, &i.to_le_bytes());
    }
    c.wait_converged(G, &[1, 2, 3], 48, WAIT);
    for n in [1, 2, 3] {
        c.stop(n);
        c.start(n);
    }
    c.wait_leader(G, WAIT);
    assert_eq!(
        propose_until_answered(&c, &s, seq1, b"incr-1").unwrap(),
        retried,
        "deduplicated after restart"
    );
    c.wait_converged(G, &[1, 2, 3], 48, WAIT);

    // 4. Node 3 misses 60 entries (compacted away), installs a snapshot, then leads.
    c.stop(3);
    for i in 0..60u64 {
        c.propose(G, &(1000 + i).to_le_bytes());
    }
    let installed =
        |c: &Cluster| c.live().map(|n| n.engine.as_ref().unwrap().metrics().snapshots_installed).sum::<u64>();
    let installed_before = installed(&c);
    c.start(3);
    wait_until("node 3 installed a snapshot", WAIT, || installed(&c) > installed_before);
    let st = c.wait_converged(G, &[1, 2, 3], 108, WAIT);
    c.transfer(G, 3, WAIT);
    assert_eq!(
        propose_until_answered(&c, &s, seq1, b"incr-1").unwrap(),
        retried,
        "deduplicated after install"
    );
    assert_eq!(propose_until_answered(&c, &s, seq2, b"incr-2").unwrap(), applied_now);
    assert_eq!(commands(&c, 3), st.commands, "no retry was applied again");

    // The floor: once the caller holds both answers, the group forgets them.
    s.answered(seq1);
    s.answered(seq2);
    let seq3 = s.next_seq();
    propose_until_answered(&c, &s, seq3, b"incr-3").unwrap();
    assert_eq!(
        propose_until_answered(&c, &s, seq1, b"incr-1"),
        Err(ProposeError::Session(SessionRefusal::Acked)),
        "below the floor: refused, not applied"
    );
    c.wait_converged(G, &[1, 2, 3], st.commands + 1, WAIT);
    assert_eq!(commands(&c, 3), st.commands + 1);
}

/// A session unused for longer than `session_ttl` (1 s) by the replicated clock (the
/// leaders' stamps in the entries, its own proposal's included) is refused, and its
/// proposal is not applied; a session used within it is not.
#[test]
fn a_session_expires_by_the_replicated_clock() {
    let c = Cluster::new_tweaked(3, 100_000, tweak_short_ttl);
    c.create_group(G, &[1, 2, 3]);
    c.wait_leader(G, WAIT);
    let mut idle = open(&c);
    for _ in 0..2 {
        let seq = idle.next_seq();
        propose_until_answered(&c, &idle, seq, b"a").unwrap();
        idle.answered(seq);
    }
    // Its last use was stamped before this point.
    let idle_at = Instant::now();
    wait_until("1.5 s passed", WAIT, || idle_at.elapsed() >= Duration::from_millis(1500));
    let before = commands(&c, c.wait_leader(G, WAIT));
    assert_eq!(before, 2);
    let seq = idle.next_seq();
    assert_eq!(
        propose_until_answered(&c, &idle, seq, b"a"),
        Err(ProposeError::Session(SessionRefusal::Unknown)),
        "the idle session expired"
    );
    let l = c.wait_leader(G, WAIT);
    c.propose(G, b"after");
    assert_eq!(commands(&c, l), before + 1, "an expired session's proposal is not applied");
}

/// Registering past `max_sessions` (3) evicts the least recently used session; a closed
/// session is refused.
#[test]
fn registering_past_the_bound_evicts_the_least_recently_used_session() {
    let c = Cluster::new_tweaked(3, 100_000, tweak);
    c.create_group(G, &[1, 2, 3]);
    c.wait_leader(G, WAIT);
    let mut first = open(&c);
    let mut second = open(&c);
    let mut third = open(&c);
    // Activity is stamped in milliseconds by the leader's clock, ties going to the oldest
    // session: the uses below must be stamped after `second`'s registration (quick
    // batches are applied on the worker, and all of this can fit in one millisecond).
    let opened = Instant::now();
    wait_until("the stamps move on", WAIT, || opened.elapsed() >= Duration::from_millis(5));
    // `first` and `third` are used after `second` registered: `second` is the least
    // recently used when a fourth registers.
    for s in [&mut first, &mut third] {
        let seq = s.next_seq();
        propose_until_answered(&c, s, seq, b"c").unwrap();
        s.answered(seq);
    }
    let mut fourth = open(&c);
    let seq = second.next_seq();
    assert_eq!(
        propose_until_answered(&c, &second, seq, b"d"),
        Err(ProposeError::Session(SessionRefusal::Unknown)),
        "the least recently used session was evicted"
    );
    for s in [&mut first, &mut third, &mut fourth] {
        let seq = s.next_seq();
        assert!(propose_until_answered(&c, s, seq, b"e").is_ok(), "session {} still lives", s.id());
    }
    // Closing forgets a session.
    c.engine(c.wait_leader(G, WAIT)).close_session(&fourth).unwrap().wait().unwrap();
    let seq = fourth.next_seq();
    assert_eq!(
        propose_until_answered(&c, &fourth, seq, b"f"),
        Err(ProposeError::Session(SessionRefusal::Unknown))
    );
}

/// A state machine that keeps its own storage and says so.
struct OwnStorage(ChainSm);

impl StateMachine for OwnStorage {
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes {
        self.0.apply(index, term, command)
    }
    fn applied_index(&self) -> u64 {
        self.0.applied_index()
    }
    fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.0.snapshot(out)
    }
    fn restore(&mut self, index: u64, term: u64, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.0.restore(index, term, input)
    }
    fn supports_sessions(&self) -> bool {
        false
    }
}

/// A group whose state machine does not support sessions refuses to open one, typed,
/// and its other proposals go on.
#[test]
fn a_state_machine_without_session_support_refuses_sessions() {
    let c = Cluster::new_tweaked(1, 100_000, tweak);
    let st = std::sync::Arc::new(std::sync::Mutex::new(SmState::default()));
    c.engine(1).create_group(7, &[1], Box::new(OwnStorage(ChainSm::new(st.clone())))).unwrap();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        assert!(Instant::now() < deadline, "no answer in time");
        match c.engine(1).open_session(7) {
            Err(e) if e.class() == ErrorClass::Invalid => break e,
            Err(e) if e.class() == ErrorClass::Fatal => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
            Ok(s) => panic!("opened session {} on a state machine without session support", s.id()),
        }
    };
    assert_eq!(refused, ProposeError::Session(SessionRefusal::NotSupported));
    let r = c.engine(1).propose(7, Bytes::from_static(b"x")).unwrap().wait();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(st.lock().unwrap().commands, 1);
}
