//! The deterministic cluster simulator for the Raft core (issue 2, "How it is proven").
//!
//! Owns three things, all driven by one seeded RNG ([`Rng`], SplitMix64) so that a seed
//! replays exactly (no wall clock, no threads, no `HashMap` iteration):
//!
//! - the harness: nodes hosting one replica each of a single group, an in-memory durable
//!   store per node ([`MemStorage`]) that receives each `Ready`'s write only when the
//!   scheduler makes it durable (FIFO per node, or never if the node crashes first), a
//!   hash-chain state machine, snapshot streaming in chunks, and restarts that rebuild a
//!   replica from durable storage only;
//! - the fault scheduler: message drops, duplicates, delays and reordering, partitions
//!   (symmetric, one-way, leader isolated, ring), crashes that lose unsynced writes,
//!   slow disks, failing snapshot streams, stalled nodes (a paused process: it misses
//!   ticks and messages while the clock it measures leases with runs on; reads sent to it
//!   wait for it), and a client mix of proposals, ReadIndex and lease reads,
//!   membership changes (single step and joint, auto and explicit leave, new replicas on
//!   new or wiped nodes), leadership transfers and compaction;
//! - the checker: election safety, log matching, leader completeness, state machine
//!   safety, monotonic commit/apply, applied <= committed, configuration consistency,
//!   linearizable reads (lease reads included), and (after a liveness phase) that every acknowledged proposal is
//!   applied by every member. Every outcome reported to a proposer comes from the
//!   runtime's own waiter code ([`Waiters`], fed what each replica commits, installs and
//!   its ticks, failed when the replica crashes): a proposal reported `Dropped` (or
//!   refused by `propose`) must never be applied by any replica, and an `Ok` one must be
//!   applied by every live member at the end. Client sessions (a third of the seeds, their
//!   own RNG): proposers register sessions through the log, propose in them and retry every
//!   attempt whose answer they lack (lost, `Dropped`, `Indeterminate`, or still in
//!   flight), at whichever node leads; each replica runs the engine's `SessionTable` in
//!   its state machine (and snapshots). The checker keeps its own record, not the
//!   table's: a (session, seq) is applied by the entry at one index only on every
//!   replica, and every answer to any attempt is that application's result. Violations are returned as [`Violation`], never panics, so
//!   mutant tests can assert on them.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use bytes::Bytes;
use flotilla::engine::api::SessionRefusal;
use flotilla::engine::runtime::waiters::{Complete, Outcome, Tally, Waiters};
use flotilla::engine::session::codec as session_codec;
use flotilla::engine::session::{Decision, SessionHeader, SessionLimits, SessionOp, SessionTable};
use flotilla::raft::*;

// ----------------------------------------------------------------------------------------
// Randomness
// ----------------------------------------------------------------------------------------

/// SplitMix64: the simulator's only source of randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5eed_f107_111a_0001)
    }
    /// 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) < p * (1u64 << 53) as f64
    }
    /// A random element index of a slice of length `n` (n > 0).
    pub fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn entry_hash(e: &Entry) -> u64 {
    let body = match &e.payload {
        EntryPayload::Noop => 1,
        EntryPayload::Normal(d) => {
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for b in d.iter() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
            h ^ 2
        }
        EntryPayload::ConfChange(cc) => {
            let mut h = DefaultHasher::new();
            cc.hash(&mut h);
            h.finish() ^ 3
        }
        EntryPayload::Session { header, data } => {
            let mut h = DefaultHasher::new();
            format!("{header:?}").hash(&mut h);
            data.hash(&mut h);
            h.finish() ^ 4
        }
        // A payload kind this checker does not know yet: hash its debug form, so log
        // matching still compares it exactly.
        other => {
            let mut h = DefaultHasher::new();
            format!("{other:?}").hash(&mut h);
            h.finish() ^ 5
        }
    };
    mix64(body ^ mix64(e.index ^ mix64(e.term)))
}

fn chain(prev: u64, eh: u64) -> u64 {
    mix64(prev.rotate_left(23) ^ eh) | 1
}

const GENESIS_CHAIN: u64 = 1;

// ----------------------------------------------------------------------------------------
// Options, profile, counters, violations
// ----------------------------------------------------------------------------------------

/// What one run of the simulator does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Fault steps (one tick each) before the liveness phase.
    pub steps: u64,
    /// Bound on the liveness phase, in ticks.
    pub liveness_ticks: u64,
    /// Print a trace of events to stderr.
    pub trace: bool,
    /// A deliberately broken rule to run on every replica.
    #[cfg(feature = "mutants")]
    pub mutant: Option<Mutant>,
}

impl Options {
    /// The CI options: `SIM_STEPS` overrides the step count, `SIM_TRACE=1` traces.
    pub fn from_env(default_steps: u64) -> Self {
        Options {
            steps: env_u64("SIM_STEPS").unwrap_or(default_steps),
            liveness_ticks: 3000,
            trace: std::env::var("SIM_TRACE").is_ok_and(|v| v == "1"),
            #[cfg(feature = "mutants")]
            mutant: None,
        }
    }
}

/// Salts the seed of the session proposers' RNG and the draw of `Profile::sessions`.
const SESSION_SALT: u64 = 0x5e55_1025;
/// Salt of the draw of `Profile::max_uncommitted` (off `rng`, like the sessions').
const UNCOMMITTED_SALT: u64 = 0x0c0a_b1e5;
/// Salt of the draw of `Profile::max_pending_reads`.
const READS_SALT: u64 = 0x4ead_5a17;
/// Salts the seed of the RNG of callers that give up on their reads (`Raft::abandon_read`).
const ABANDON_SALT: u64 = 0xab4d_0e4d;

/// An environment variable parsed as a number.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The fault and workload mix of one seed (drawn from the seed).
#[derive(Debug, Clone)]
struct Profile {
    nodes: usize,
    max_nodes: usize,
    drop: f64,
    dup: f64,
    max_delay: u64,
    long_delay: f64,
    partition: f64,
    crash: f64,
    crash_leader: f64,
    down_max: u64,
    disk_max: u64,
    disk_stall: f64,
    propose: f64,
    read: f64,
    conf: f64,
    transfer: f64,
    compact: f64,
    compact_every: u64,
    snapshot_fail: f64,
    eager_ready: f64,
    elect_min: u32,
    elect_span: u32,
    heartbeat: u32,
    inflight: usize,
    append_bytes: u64,
    apply_bytes: u64,
    pre_vote: bool,
    check_quorum: bool,
    /// Quiescence on (`Config::quiesce`): idle replicas are not ticked, the ticks they
    /// missed are credited lazily, node liveness wakes them.
    quiesce: bool,
    /// Ticks a broken link or a down node goes unnoticed before liveness reports it.
    detect: u64,
    /// `ReadMode::LeaseBased` (only with CheckQuorum).
    lease: bool,
    /// Chance per step that a node stalls (mostly the leader).
    stall: f64,
    /// Ticks after which a waiter completes `Indeterminate` (the engine's
    /// `propose_timeout_ticks`).
    propose_timeout: u64,
    /// Client sessions: some proposers propose in sessions and retry every attempt
    /// whose answer they lack (drawn from their own RNG, so the other draws are as
    /// before).
    sessions: bool,
    /// `Config::max_uncommitted_bytes`: the engine bounds a leader's uncommitted
    /// proposals; without it a leader that cannot commit builds a tail its followers
    /// take longer than the liveness phase to receive (1 to 2 entries per round trip with
    /// one append in flight of 100 bytes).
    max_uncommitted: u64,
    /// `Config::max_pending_reads`: small bounds make leaders refuse reads and drop
    /// forwarded ones, which must never be answered.
    max_pending_reads: usize,
}

impl Profile {
    fn draw(rng: &mut Rng, seed: u64) -> Self {
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let (pre_vote, check_quorum) = match rng.below(6) {
            0 => (true, false),
            1 => (false, true),
            _ => (true, true),
        };
        let heartbeat = rng.range(1, 2) as u32;
        Profile {
            nodes,
            max_nodes: nodes + 2,
            drop: [0.0, 0.02, 0.05, 0.15][rng.pick(4)],
            dup: [0.0, 0.02, 0.08][rng.pick(3)],
            max_delay: rng.range(1, 3),
            long_delay: [0.0, 0.02, 0.08][rng.pick(3)],
            partition: [0.002, 0.01, 0.03][rng.pick(3)],
            crash: [0.002, 0.006, 0.015][rng.pick(3)],
            crash_leader: [0.2, 0.5, 0.8][rng.pick(3)],
            down_max: [5, 20, 80][rng.pick(3)],
            disk_max: rng.range(0, 4),
            disk_stall: [0.0, 0.01, 0.05][rng.pick(3)],
            propose: [0.1, 0.3, 0.6][rng.pick(3)],
            read: [0.05, 0.2][rng.pick(2)],
            conf: [0.005, 0.02, 0.05][rng.pick(3)],
            transfer: [0.002, 0.01, 0.03][rng.pick(3)],
            compact: [0.01, 0.05, 0.2][rng.pick(3)],
            compact_every: rng.range(1, 40),
            snapshot_fail: [0.0, 0.2, 0.5][rng.pick(3)],
            eager_ready: [0.0, 0.3, 0.9][rng.pick(3)],
            elect_min: heartbeat * 5 + rng.range(0, 8) as u32,
            elect_span: rng.range(5, 12) as u32,
            heartbeat,
            inflight: rng.range(1, 8) as usize,
            append_bytes: [100, 400, 1 << 20][rng.pick(3)],
            apply_bytes: [1, 100, 1 << 20][rng.pick(3)],
            pre_vote,
            check_quorum,
            quiesce: rng.chance(0.5),
            detect: rng.range(1, 20),
            lease: check_quorum && rng.chance(0.5),
            stall: [0.0, 0.003, 0.01][rng.pick(3)],
            // Not drawn from `rng`: adding it left every seed's other draws as they were.
            propose_timeout: [60, 400, 5000][(mix64(seed) % 3) as usize],
            sessions: mix64(seed ^ SESSION_SALT) % 3 == 0,
            max_uncommitted: [1 << 10, 4 << 10, 16 << 10][(mix64(seed ^ UNCOMMITTED_SALT) % 3) as usize],
            max_pending_reads: [2, 8, 16_384][(mix64(seed ^ READS_SALT) % 3) as usize],
        }
    }
}

/// What a run exercised (the simulator's own counters plus the replicas' [`Stats`],
/// accumulated across incarnations).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Seeds run.
    pub seeds: u64,
    /// Fault steps run.
    pub steps: u64,
    /// Leaderships won (stats).
    pub elections: u64,
    /// Leaderships won through a transfer: transfers completed (stats).
    pub transfers_completed: u64,
    /// Transfers started (stats).
    pub transfers_started: u64,
    /// Transfers aborted (stats).
    pub transfers_aborted: u64,
    /// Snapshots installed (stats).
    pub snapshots_installed: u64,
    /// Snapshots received at or below the commit (stats).
    pub snapshots_skipped: u64,
    /// Joint configurations entered (stats, per replica).
    pub joint_entered: u64,
    /// Joint configurations left (stats, per replica).
    pub joint_left: u64,
    /// Single-step changes applied (stats, per replica).
    pub simple_changes: u64,
    /// Reads released by leaders (stats).
    pub reads_released: u64,
    /// Lost appends reported to their sender (`report_unreachable`).
    pub unreachable_reports: u64,
    /// Reads followers forwarded to their leader (stats).
    pub reads_forwarded: u64,
    /// Reads served by the harness (applied reached the read index).
    pub reads_served: u64,
    /// CheckQuorum step-downs (stats).
    pub check_quorum_step_downs: u64,
    /// Crashes.
    pub crashes: u64,
    /// Crashes that lost writes not yet durable.
    pub crashes_lost_writes: u64,
    /// Proposals accepted by a leader.
    pub proposals: u64,
    /// Proposals acknowledged (applied at the proposing leader).
    pub acked: u64,
    /// Proposals and membership changes whose waiter completed `Dropped`.
    pub outcomes_dropped: u64,
    /// Proposals and membership changes whose waiter completed `Indeterminate`.
    pub outcomes_indeterminate: u64,
    /// Membership changes accepted by a leader.
    pub conf_changes: u64,
    /// `Forget` changes of removal records proposed.
    pub forgets_proposed: u64,
    /// Replicas destroyed after applying their own removal.
    pub destructions: u64,
    /// Members crashed (a minority of the final configuration) in the liveness phase.
    pub liveness_crashes: u64,
    /// Joint changes (entering) accepted by a leader.
    pub joint_proposed: u64,
    /// Explicit leaves accepted by a leader.
    pub explicit_leaves: u64,
    /// New replicas created (on new or wiped nodes).
    pub replicas_added: u64,
    /// New replicas created while the leader had compacted its log.
    pub replicas_added_after_compaction: u64,
    /// Leaders crashed right after applying a joint configuration.
    pub leader_crash_after_joint: u64,
    /// Leaders crashed right after proposing a single-step change.
    pub leader_crash_uncommitted_change: u64,
    /// Compactions.
    pub compactions: u64,
    /// Compactions past a joint configuration entry (or while joint).
    pub compactions_past_joint: u64,
    /// Snapshot streams started.
    pub snapshot_streams: u64,
    /// Snapshot streams failed midway.
    pub snapshot_streams_failed: u64,
    /// Snapshot requests for a snapshot already replaced by a later compaction.
    pub snapshot_requests_superseded: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped by the scheduler or partitions.
    pub dropped: u64,
    /// Replicas that quiesced (stats).
    pub quiesces: u64,
    /// Replicas woken from quiescence (stats).
    pub wakes: u64,
    /// Quiesced replicas woken by node liveness (their leader's node down, cut off or
    /// restarted).
    pub liveness_wakes: u64,
    /// Client quiet periods (no proposals, reads or changes) in which groups may quiesce.
    pub quiet_periods: u64,
    /// Reads served from a leader's lease (stats).
    pub lease_reads: u64,
    /// Lease reads whose lease ran out before apply reached them (stats).
    pub lease_reads_expired: u64,
    /// Lease reads served under a lease kept through a wake from quiescence (stats).
    pub lease_reads_after_wake: u64,
    /// Proposals a leader refused holding `Config::max_uncommitted_bytes` (stats).
    pub proposals_refused_uncommitted: u64,
    /// Reads a leader refused or dropped holding `Config::max_pending_reads` (stats).
    pub reads_refused_full: u64,
    /// Heartbeat rounds sent only to a quorum to confirm reads (stats).
    pub quorum_read_rounds: u64,
    /// Reads whose caller gave up while a follower waited for its leader's answer
    /// (`Raft::abandon_read`, as the engine's read timeout does).
    pub reads_abandoned: u64,
    /// Node stalls (missed ticks and messages while the clock ran on).
    pub stalls: u64,
    /// Reads that reached a stalled node (handled when it resumed).
    pub reads_during_stall: u64,
    /// Sessions registered (their register entry answered).
    pub sessions_registered: u64,
    /// Attempts of session writes appended by a leader (first tries and retries).
    pub session_attempts: u64,
    /// Of those, retries of a (session, seq) already attempted.
    pub session_retries: u64,
    /// Session writes applied (once each, checked).
    pub session_writes_applied: u64,
    /// Session writes applied from an attempt older than a retry made before that
    /// application: the first attempt committed after it was retried.
    pub session_first_won_after_retry: u64,
    /// Answers to an attempt that were the result of an earlier attempt's application
    /// (a duplicate answered with the first result).
    pub session_duplicate_answers: u64,
    /// Session entries refused because the session was evicted.
    pub session_unknown: u64,
}

impl Counters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Counters) {
        macro_rules! add { ($($f:ident),*) => { $( self.$f += o.$f; )* } }
        add!(
            seeds,
            steps,
            elections,
            transfers_completed,
            transfers_started,
            transfers_aborted,
            snapshots_installed,
            snapshots_skipped,
            joint_entered,
            joint_left,
            simple_changes,
            reads_released,
            reads_forwarded,
            unreachable_reports,
            reads_served,
            check_quorum_step_downs,
            crashes,
            crashes_lost_writes,
            proposals,
            acked,
            outcomes_dropped,
            outcomes_indeterminate,
            conf_changes,
            forgets_proposed,
            destructions,
            liveness_crashes,
            joint_proposed,
            explicit_leaves,
            replicas_added,
            replicas_added_after_compaction,
            leader_crash_after_joint,
            leader_crash_uncommitted_change,
            compactions,
            compactions_past_joint,
            snapshot_streams,
            snapshot_streams_failed,
            snapshot_requests_superseded,
            partitions,
            delivered,
            dropped,
            quiesces,
            wakes,
            liveness_wakes,
            quiet_periods,
            lease_reads,
            lease_reads_expired,
            lease_reads_after_wake,
            proposals_refused_uncommitted,
            reads_refused_full,
            quorum_read_rounds,
            reads_abandoned,
            stalls,
            reads_during_stall,
            sessions_registered,
            session_attempts,
            session_retries,
            session_writes_applied,
            session_first_won_after_retry,
            session_duplicate_answers,
            session_unknown
        );
    }

    fn add_stats(&mut self, s: &Stats) {
        self.elections += s.leaderships;
        self.transfers_completed += s.leaderships_by_transfer;
        self.transfers_started += s.transfers_started;
        self.transfers_aborted += s.transfers_aborted;
        self.snapshots_installed += s.snapshots_installed;
        self.snapshots_skipped += s.snapshots_skipped;
        self.joint_entered += s.joint_entered;
        self.joint_left += s.joint_left;
        self.simple_changes += s.simple_changes;
        self.reads_released += s.reads_served;
        self.reads_forwarded += s.reads_forwarded;
        self.check_quorum_step_downs += s.check_quorum_step_downs;
        self.quiesces += s.quiesces;
        self.wakes += s.wakes;
        self.lease_reads += s.lease_reads;
        self.lease_reads_expired += s.lease_reads_expired;
        self.lease_reads_after_wake += s.lease_reads_after_wake;
        self.proposals_refused_uncommitted += s.proposals_refused_uncommitted;
        self.reads_refused_full += s.reads_refused_full;
        self.quorum_read_rounds += s.quorum_read_rounds;
    }
}

/// A broken invariant, with where it happened.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The seed.
    pub seed: u64,
    /// The step (tick) at which it was detected.
    pub step: u64,
    /// What broke.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} step {}: {}\n  replay: SIM_SEED={} cargo test --test simulation -- --nocapture \
             (SIM_TRACE=1 for a trace)",
            self.seed, self.step, self.what, self.seed
        )
    }
}

type R = Result<(), String>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*)) };
}

// ----------------------------------------------------------------------------------------
// The cluster
// ----------------------------------------------------------------------------------------

/// One write handed out by a `Ready` (its driver's persist step), durable at step `due`.
struct Write {
    due: u64,
    write: ReadyWrite,
}

/// The hash-chain state machine: the index applied and the chain hash of every entry up
/// to it, and the group's client-session table (replicated state, as in the engine). Its
/// snapshot data is the two numbers, then the table's encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sm {
    index: u64,
    chain: u64,
    sessions: SessionTable,
}

impl Sm {
    fn genesis() -> Sm {
        Sm { index: 0, chain: GENESIS_CHAIN, sessions: SessionTable::new() }
    }
    fn encode(&self) -> Bytes {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&self.index.to_le_bytes());
        v.extend_from_slice(&self.chain.to_le_bytes());
        session_codec::encode(&self.sessions, &mut v);
        Bytes::from(v)
    }
    fn decode(b: &[u8]) -> Option<Sm> {
        if b.is_empty() {
            return Some(Sm::genesis());
        }
        if b.len() < 16 {
            return None;
        }
        let index = u64::from_le_bytes(b[..8].try_into().ok()?);
        let chain = u64::from_le_bytes(b[8..16].try_into().ok()?);
        let sessions = session_codec::decode(&b[16..]).ok()?;
        Some(Sm { index, chain, sessions })
    }
}

struct Node {
    /// The replica hosted here (0: none yet).
    replica: ReplicaId,
    raft: Option<Raft<MemStorage>>,
    /// Durable storage while the node is down.
    stored: MemStorage,
    writes: VecDeque<Write>,
    last_due: u64,
    sm: Sm,
    /// Waiters of the proposals and membership changes made by this incarnation.
    waiters: Waiters<Rec>,
    tally: Tally,
    /// Reads released, waiting for apply: (ctx, index).
    reads: Vec<(u64, u64)>,
    incarnation: u64,
    /// Crashed: restart at this step.
    down_until: Option<u64>,
    last_commit: u64,
    last_applied: u64,
    /// The term in which this incarnation was last seen leading.
    led_term: u64,
    slow_disk: bool,
    /// The step up to which idle ticks were credited (quiesced replicas are not ticked).
    idle_from: u64,
    /// While quiesced as a follower: the leader's node and incarnation when first seen
    /// quiesced, and since when liveness has found it unreachable.
    quiesced_leader: Option<(usize, u64)>,
    suspect_since: Option<u64>,
    /// This node's clock at step 0 (each node's clock has its own origin).
    clock_origin: u64,
    /// While stalled: the replica (out of `raft`, so nothing reaches it), the step it
    /// resumes at, and the reads sent to it meanwhile.
    stall: Option<Stall>,
}

/// A stalled node's state (see `Node::stall`).
struct Stall {
    raft: Raft<MemStorage>,
    until: u64,
    reads: Vec<u64>,
}

impl Node {
    fn empty() -> Self {
        Node {
            replica: 0,
            raft: None,
            stored: MemStorage::default(),
            writes: VecDeque::new(),
            last_due: 0,
            sm: Sm::genesis(),
            waiters: Waiters::new(),
            tally: Tally::default(),
            reads: Vec::new(),
            incarnation: 0,
            down_until: None,
            last_commit: 0,
            last_applied: 0,
            led_term: 0,
            slow_disk: false,
            idle_from: 0,
            quiesced_leader: None,
            suspect_since: None,
            clock_origin: 0,
            stall: None,
        }
    }
}

/// The length of a tick on the simulated clocks (`Config::tick_nanos`).
const SIM_TICK_NANOS: u64 = 1_000_000;

struct Flight {
    at: u64,
    from: usize,
    to: usize,
    msg: Message,
}

struct Stream {
    from: usize,
    from_inc: u64,
    leader: ReplicaId,
    to: usize,
    to_replica: ReplicaId,
    chunks: Vec<Message>,
    next: usize,
    next_at: u64,
    fail_at: Option<usize>,
}

/// Where a read came from and what it must see.
struct ReadStart {
    node: usize,
    incarnation: u64,
    /// The highest index of a write acknowledged before the read began.
    required: u64,
}

/// One outcome reported to a proposer: (proposal id, or `None` for a membership change or
/// a session entry; entry index; entry term; outcome; the session entry's kind).
type Reported = (Option<u64>, u64, u64, Outcome, Option<SessionRec>);

/// The simulator's completion handle for the runtime's waiter code: records the outcome.
struct Rec {
    id: Option<u64>,
    /// A session entry's waiter: what it was.
    session: Option<SessionRec>,
    index: u64,
    term: u64,
    out: Rc<RefCell<Vec<Reported>>>,
}

impl Complete for Rec {
    fn complete(self, outcome: Outcome) {
        self.out.borrow_mut().push((self.id, self.index, self.term, outcome, self.session));
    }
}

/// What a session waiter waits for.
#[derive(Debug, Clone, Copy)]
enum SessionRec {
    /// A register entry.
    Register,
    /// An attempt of (session, seq).
    Propose(u64, u64),
}

/// A client session of the simulated proposers: sequence numbers handed out and not
/// answered yet (each retried until answered), and the next one.
#[derive(Debug, Clone)]
struct SimSession {
    id: u64,
    next_seq: u64,
    unanswered: BTreeMap<u64, Bytes>,
}

/// The checker's record of session writes.
#[derive(Default)]
struct SessionCheck {
    /// (session, seq) -> the index of the entry whose application applied it.
    applied_at: HashMap<(u64, u64), u64>,
    /// (session, seq) -> the (index, term) of each attempt, in proposal order.
    attempts: HashMap<(u64, u64), Vec<(u64, u64)>>,
}

/// The checker's record of the outcomes reported to proposers.
#[derive(Default)]
struct Outcomes {
    /// Reported by the waiters, not yet checked.
    log: Rc<RefCell<Vec<Reported>>>,
    /// Entries (index, term) whose waiter was told `Dropped`.
    dropped: HashSet<(u64, u64)>,
    /// Proposal ids `propose` refused.
    refused: HashSet<u64>,
    /// Proposal ids told `Ok`, with their index.
    ok: Vec<(u64, u64)>,
    /// Proposal id -> index where a replica first applied it.
    applied_at: HashMap<u64, u64>,
}

/// The proposal id a data entry carries (its first 8 bytes).
fn proposal_id(e: &Entry) -> Option<u64> {
    match &e.payload {
        EntryPayload::Normal(d) if d.len() >= 8 => d[..8].try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

/// The simulated cluster and its checker.
pub struct Sim {
    seed: u64,
    rng: Rng,
    p: Profile,
    opts: Options,
    now: u64,
    faults: bool,
    nodes: Vec<Node>,
    /// Replica id -> node index.
    replica_node: Vec<Option<usize>>,
    next_replica: u64,
    genesis: ConfState,
    net: Vec<Flight>,
    streams: Vec<Stream>,
    blocked: Vec<Vec<bool>>,
    /// While a narrowed-replication partition lasts: which peers each node's appends and
    /// heartbeats reach (drawn anew at each leadership; votes and answers always pass).
    narrowed: Option<Vec<Vec<bool>>>,
    heal_at: u64,
    // --- checker state ---
    leaders: HashMap<u64, ReplicaId>,
    /// (index, term) -> (entry hash, term at index - 1): log matching.
    seen: HashMap<(u64, u64), (u64, u64)>,
    /// index -> term of the committed entry (0: unknown).
    committed_terms: Vec<u64>,
    /// observed term -> highest commit index first observed at a replica in that term.
    commit_marks: BTreeMap<u64, u64>,
    global_commit: u64,
    /// index -> chain hash of the state machine after applying it.
    chains: Vec<u64>,
    /// (index, configuration after applying it), from the genesis configuration.
    confs: Vec<(u64, ConfState)>,
    acked_max: u64,
    read_starts: HashMap<u64, ReadStart>,
    next_ctx: u64,
    next_proposal: u64,
    /// Nodes that just became leader and get a read at once.
    fresh_leaders: Vec<usize>,
    /// Membership changes accepted by a leader and not yet resolved (nobody applied their
    /// index yet): (index, replicas they name). Their replicas' nodes are not reused.
    pending_changes: Vec<(u64, Vec<ReplicaId>)>,
    /// The client is quiet until this step (groups may quiesce).
    quiet_until: u64,
    /// Outcomes reported to proposers.
    outcomes: Outcomes,
    /// The session proposers' own randomness.
    srng: Rng,
    /// The randomness of callers that give up on reads (its own, so the other draws of a
    /// seed's schedule stay as they were).
    arng: Rng,
    /// Reads whose caller will give up: (step, node, incarnation, ctx).
    abandons: Vec<(u64, usize, u64, u64)>,
    /// Reads given up at a follower: if released after all (the answer was already in
    /// the follower's Ready), checked but not served.
    abandoned: HashSet<u64>,
    /// The proposers' sessions.
    sim_sessions: Vec<SimSession>,
    /// The checker's record of session writes.
    scheck: SessionCheck,
    /// Counters of this run.
    pub c: Counters,
}

impl Sim {
    /// A cluster for `seed`.
    pub fn new(seed: u64, opts: Options) -> Self {
        let mut rng = Rng::new(seed);
        let p = Profile::draw(&mut rng, seed);
        let genesis = ConfState::with_voters((1..=p.nodes as u64).map(|i| Replica::new(i, i)));
        let max_nodes = p.max_nodes;
        let mut sim = Sim {
            seed,
            rng,
            opts,
            now: 0,
            faults: true,
            nodes: (0..max_nodes).map(|_| Node::empty()).collect(),
            replica_node: vec![None; p.nodes + 1],
            next_replica: p.nodes as u64 + 1,
            genesis: genesis.clone(),
            net: Vec::new(),
            streams: Vec::new(),
            blocked: vec![vec![false; max_nodes]; max_nodes],
            narrowed: None,
            heal_at: 0,
            leaders: HashMap::new(),
            seen: HashMap::new(),
            committed_terms: vec![0],
            commit_marks: BTreeMap::new(),
            global_commit: 0,
            chains: vec![GENESIS_CHAIN],
            confs: vec![(0, genesis.clone())],
            acked_max: 0,
            read_starts: HashMap::new(),
            next_ctx: 1,
            next_proposal: 1,
            fresh_leaders: Vec::new(),
            pending_changes: Vec::new(),
            quiet_until: 0,
            outcomes: Outcomes::default(),
            srng: Rng::new(seed ^ SESSION_SALT),
            arng: Rng::new(seed ^ ABANDON_SALT),
            abandons: Vec::new(),
            abandoned: HashSet::new(),
            sim_sessions: Vec::new(),
            scheck: SessionCheck::default(),
            c: Counters::default(),
            p,
        };
        for n in 0..sim.p.nodes {
            let id = n as u64 + 1;
            sim.nodes[n].replica = id;
            sim.nodes[n].stored = MemStorage::new_with_conf(genesis.clone());
            sim.replica_node[id as usize] = Some(n);
            sim.nodes[n].slow_disk = sim.rng.chance(0.2);
        }
        for n in 0..max_nodes {
            sim.nodes[n].clock_origin = sim.rng.below(1 << 40);
        }
        for n in 0..sim.p.nodes {
            sim.start(n).expect("a fresh replica starts");
        }
        sim
    }

    fn trace(&self, f: impl FnOnce() -> String) {
        if self.opts.trace {
            eprintln!("[{:5}] {}", self.now, f());
        }
    }

    /// Runs the fault phase and the liveness phase; returns the first violation.
    pub fn run(&mut self) -> Result<(), Violation> {
        self.c.seeds = 1;
        let res = self.run_inner();
        for n in 0..self.nodes.len() {
            let stalled = self.nodes[n].stall.as_ref().map(|s| &s.raft);
            if let Some(r) = self.nodes[n].raft.as_ref().or(stalled) {
                let s = *r.stats();
                self.c.add_stats(&s);
            }
        }
        res.map_err(|what| Violation { seed: self.seed, step: self.now, what })
    }

    fn run_inner(&mut self) -> R {
        for _ in 0..self.opts.steps {
            self.step()?;
            self.c.steps += 1;
        }
        self.liveness()
    }

    // ------------------------------------------------------------------------------------
    // Node lifecycle
    // ------------------------------------------------------------------------------------

    fn config(&mut self, id: ReplicaId, applied: u64) -> Result<ValidConfig, String> {
        let mut c = Config::new(id);
        c.election_timeout_min_ticks = self.p.elect_min;
        c.election_timeout_max_ticks = self.p.elect_min + self.p.elect_span;
        c.heartbeat_interval_ticks = self.p.heartbeat;
        c.max_inflight_msgs = self.p.inflight;
        c.max_append_bytes = self.p.append_bytes;
        c.max_apply_bytes = self.p.apply_bytes;
        c.max_uncommitted_bytes = self.p.max_uncommitted;
        c.max_pending_reads = self.p.max_pending_reads;
        c.pre_vote = self.p.pre_vote;
        c.check_quorum = self.p.check_quorum;
        c.quiesce = self.p.quiesce;
        if self.p.lease {
            c.read_mode = ReadMode::LeaseBased;
        }
        c.tick_nanos = SIM_TICK_NANOS;
        c.applied = applied;
        c.seed = self.rng.next();
        #[cfg(feature = "mutants")]
        {
            c.mutant = self.opts.mutant;
        }
        c.validate().map_err(|e| format!("config: {e}"))
    }

    /// Starts (or restarts) the replica of node `n` from its durable storage only.
    fn start(&mut self, n: usize) -> R {
        let storage = std::mem::take(&mut self.nodes[n].stored);
        let snap = storage.snapshot();
        let hs = storage.hard_state();
        let Some(sm) = Sm::decode(&snap.data) else { bail!("node {n}: undecodable snapshot data") };
        if sm.index != snap.meta.index {
            bail!("node {n}: snapshot data at {} for meta index {}", sm.index, snap.meta.index);
        }
        if self.chains.get(sm.index as usize).is_some_and(|&c| c != sm.chain) {
            bail!("node {n}: durable snapshot at {} has a different state", sm.index);
        }
        let replica = self.nodes[n].replica;
        let cfg = self.config(replica, snap.meta.index)?;
        let mut raft = Raft::new(cfg, storage).map_err(|e| format!("node {n}: Raft::new: {e}"))?;
        raft.set_now(self.clock(n));
        if raft.committed() < hs.commit {
            bail!(
                "node {n} (replica {replica}): commit went back across restart: durable {} now {}",
                hs.commit,
                raft.committed()
            );
        }
        if raft.applied() != sm.index {
            bail!("node {n}: restarted applied {} but state machine at {}", raft.applied(), sm.index);
        }
        let want = self.conf_at(sm.index);
        if raft.conf() != &want {
            bail!(
                "node {n}: restarted configuration {:?} differs from the one at {}: {:?}",
                raft.conf(),
                sm.index,
                want
            );
        }
        let node = &mut self.nodes[n];
        node.incarnation += 1;
        node.sm = sm;
        node.last_commit = raft.committed();
        node.last_applied = raft.applied();
        node.led_term = 0;
        node.down_until = None;
        node.writes.clear();
        node.last_due = self.now;
        node.reads.clear();
        node.idle_from = self.now;
        node.quiesced_leader = None;
        node.suspect_since = None;
        node.raft = Some(raft);
        // Peers see this node back as a new incarnation: quiesced leaders with a replica
        // here wake (the runtime does the same), so it learns its leader at once.
        let me = self.nodes[n].replica;
        for m in 0..self.nodes.len() {
            let wake = self.nodes[m].raft.as_ref().is_some_and(|r| {
                m != n && r.is_quiesced() && r.role() == Role::Leader && r.conf().contains(me)
            });
            if wake {
                self.wake(m);
            }
        }
        self.trace(|| format!("node {n} (replica {replica}) starts: hs {hs:?} snap {}", snap.meta.index));
        self.observe(n)
    }

    fn stop(&mut self, n: usize) -> bool {
        let node = &mut self.nodes[n];
        let Some(mut raft) = node.raft.take() else { return false };
        let lost = node.writes.iter().any(|w| w.write.must_persist());
        node.stored = std::mem::take(raft.storage_mut());
        node.writes.clear();
        // This incarnation can no longer learn its entries' outcomes.
        node.waiters.fail_all(&mut node.tally);
        node.reads.clear();
        let s = *raft.stats();
        self.c.add_stats(&s);
        // Streams from this node end; streams to it fail at their next chunk.
        self.streams.retain(|s| s.from != n);
        lost
    }

    fn crash(&mut self, n: usize) {
        if self.nodes[n].raft.is_none() {
            return;
        }
        let lost = self.stop(n);
        self.c.crashes += 1;
        if lost {
            self.c.crashes_lost_writes += 1;
        }
        let down = self.rng.range(1, self.p.down_max);
        self.nodes[n].down_until = Some(self.now + down);
        self.trace(|| format!("node {n} CRASHES (lost unsynced writes: {lost}), down for {down}"));
    }

    /// Destroys the replica of node `n`, which applied its own removal (as the runtime
    /// does): its state is wiped and it never runs again (the node may later host a new
    /// replica). The removal rule's check: the members that decide the group's future
    /// know the replica is no longer a voter, so nobody who may still count its vote
    /// exists without being able to learn it no longer needs it. A member knows when it
    /// holds a durable commit index at or past the entry that made the replica a
    /// non-voter, or was admitted after it, or never campaigns with a configuration that
    /// counts its vote. "The members that decide" is either of:
    /// - a majority (of each half) of the newest committed configuration; or
    /// - a majority (of each half) of every committed configuration from the one that made
    ///   the replica a non-voter to the one that removed it: the configurations its
    ///   demotion and removal were decided under. A later configuration was proposed by
    ///   a leader that had applied the removal, and a member of it that does not know the
    ///   demotion can only campaign with a configuration from before it (found by seed
    ///   80098661 in a fresh range: a later joint configuration whose incoming half is
    ///   one lagging member and one that knows).
    ///
    /// The check still finds a voter removed directly: with `conf.rs`'s rule disabled and
    /// the simulator proposing `Remove` of a voter, the first 2,000 seeds report 611
    /// violations (none with the rule in place).
    fn destroy(&mut self, n: usize) -> R {
        let rep = self.nodes[n].replica;
        if let Some(k) = self.confs.iter().rposition(|(_, c)| c.is_voter(rep)) {
            let Some(&(made_non_voter, _)) = self.confs.get(k + 1) else {
                bail!("node {n}: replica {rep} destroyed while a voter of the newest configuration")
            };
            // The configurations the demotion and the removal were decided under: from the
            // one that made it a non-voter to the first that no longer names it at all.
            let removed_at = self.confs[k + 1..]
                .iter()
                .position(|(_, c)| !c.contains(rep))
                .map_or(self.confs.len() - 1, |p| k + 1 + p);
            let durable = |id: ReplicaId| -> u64 {
                let Some(m) = self.replica_node.get(id as usize).copied().flatten() else { return 0 };
                let node = &self.nodes[m];
                // A stalled replica keeps its storage in its `Stall`.
                let raft = node.raft.as_ref().or(node.stall.as_ref().map(|s| &s.raft));
                let st = raft.map_or(&node.stored, |r| r.storage());
                st.hard_state().commit.max(st.snapshot().meta.index)
            };
            // A replica admitted after the demotion (its id is above every id admitted
            // there) starts with no configuration that makes it a voter and learns the
            // log in order: it never holds a configuration in which it may campaign and
            // that counts the destroyed replica's vote, so it counts as knowing.
            let admitted_before = self.confs[k + 1].1.max_replica_id;
            // A member that is a voter in no configuration it may hold until it applies
            // the demotion (from its durable commit on: a learner then) never campaigns,
            // so it never counts the destroyed replica's vote (found by seeds 60034022,
            // 60055927 and 60067403 in a fresh range: a member demoted to learner earlier
            // and promoted again after the removal).
            let confs = &self.confs;
            let harmless = |id: ReplicaId| {
                let c = durable(id);
                let start = confs.partition_point(|(ix, _)| *ix <= c).saturating_sub(1);
                confs[start..]
                    .iter()
                    .take_while(|(ix, _)| *ix < made_non_voter)
                    .all(|(_, conf)| !conf.is_voter(id))
            };
            let knows = |id: ReplicaId| id > admitted_before || durable(id) >= made_non_voter || harmless(id);
            let majority = |set: &[Replica]| {
                set.is_empty() || set.iter().filter(|r| knows(r.id)).count() > set.len() / 2
            };
            let known = |conf: &ConfState| majority(&conf.voters) && majority(&conf.voters_outgoing);
            let newest = &self.confs.last().expect("genesis").1;
            let deciding = &self.confs[k + 1..=removed_at];
            if !known(newest) {
                if let Some((at, conf)) = deciding.iter().find(|(_, c)| !known(c)) {
                    let held = |conf: &ConfState| -> Vec<(ReplicaId, u64)> {
                        conf.voters
                            .iter()
                            .chain(&conf.voters_outgoing)
                            .map(|r| (r.id, durable(r.id)))
                            .collect()
                    };
                    bail!(
                        "removal safety: replica {rep} (node {n}) destroyed, but no majority of the newest \
                         configuration {newest:?} holds a durable commit at or past {made_non_voter} (the entry \
                         that made it a non-voter; durable commits: {:?}), nor of the configuration at {at} \
                         that decided it {conf:?} (durable commits: {:?})",
                        held(newest),
                        held(conf)
                    );
                }
            }
        }
        self.stop(n);
        self.nodes[n].stored = MemStorage::default();
        self.nodes[n].down_until = None;
        self.c.destructions += 1;
        self.trace(|| format!("node {n}: replica {rep} applied its removal: DESTROYED"));
        Ok(())
    }

    /// Wipes node `n` and starts a brand-new replica `id` there (genesis configuration,
    /// empty log: it learns the group from the leader's log or snapshot).
    fn host_new_replica(&mut self, n: usize, id: ReplicaId) -> R {
        if let Some(st) = self.nodes[n].stall.take() {
            // A stalled replica that was removed: wiped as it is.
            self.nodes[n].raft = Some(st.raft);
        }
        self.stop(n);
        let old = self.nodes[n].replica;
        if old != 0 {
            self.replica_node[old as usize] = None;
        }
        if self.replica_node.len() <= id as usize {
            self.replica_node.resize(id as usize + 1, None);
        }
        self.replica_node[id as usize] = Some(n);
        self.nodes[n].replica = id;
        self.nodes[n].stored = MemStorage::new_with_conf(self.genesis.clone());
        self.nodes[n].slow_disk = self.rng.chance(0.2);
        self.c.replicas_added += 1;
        self.trace(|| format!("node {n}: wiped, now hosts new replica {id} (was {old})"));
        self.start(n)
    }

    /// Node `n`'s clock now (`Raft::set_now`): it keeps running while the node stalls.
    fn clock(&self, n: usize) -> u64 {
        self.nodes[n].clock_origin + self.now * SIM_TICK_NANOS
    }

    /// Stalls node `n` for `steps` steps: it takes no tick, message or input meanwhile
    /// (messages to it are lost, reads to it wait), as a paused process.
    fn stall(&mut self, n: usize, steps: u64) {
        let Some(raft) = self.nodes[n].raft.take() else { return };
        let until = self.now + steps;
        self.nodes[n].stall = Some(Stall { raft, until, reads: Vec::new() });
        self.c.stalls += 1;
        self.trace(|| format!("node {n} STALLS until {until}"));
    }

    /// A node that was leading when it stalled and still is stalled.
    fn stalled_leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.stall.as_ref().is_some_and(|s| s.raft.role() == Role::Leader))
    }

    /// Resumes node `n` if stalled: the clock moved on, the missed ticks are not run;
    /// the reads sent to it meanwhile arrive now.
    fn resume(&mut self, n: usize) -> R {
        let Some(st) = self.nodes[n].stall.take() else { return Ok(()) };
        let now = self.clock(n);
        let mut raft = st.raft;
        raft.set_now(now);
        self.nodes[n].raft = Some(raft);
        self.trace(|| format!("node {n} resumes ({} reads waiting)", st.reads.len()));
        for ctx in st.reads {
            self.read_ctx(n, ctx)?;
        }
        self.observe(n)
    }

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(r) = &node.raft {
                if r.role() == Role::Leader && best.map_or(true, |(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    fn conf_at(&self, index: u64) -> ConfState {
        let i = self.confs.partition_point(|(ix, _)| *ix <= index);
        self.confs[i.saturating_sub(1)].1.clone()
    }

    // ------------------------------------------------------------------------------------
    // The step
    // ------------------------------------------------------------------------------------

    fn step(&mut self) -> R {
        self.now += 1;
        for n in 0..self.nodes.len() {
            if self.nodes[n].stall.as_ref().is_some_and(|s| s.until <= self.now) {
                self.resume(n)?;
            }
            let now = self.clock(n);
            if let Some(r) = self.nodes[n].raft.as_mut() {
                r.set_now(now);
            }
        }
        if self.faults {
            self.fault_actions()?;
        }
        self.deliver()?;
        self.progress_streams()?;
        self.detect_liveness();
        let now = self.now;
        for n in 0..self.nodes.len() {
            let node = &mut self.nodes[n];
            if let Some(r) = node.raft.as_mut() {
                // Quiesced replicas are not ticked (the runtime keeps them out of its tick
                // loop); the ticks they miss are credited before their next input (and at
                // every step, in `client_actions`: a leader awaiting quiesce acks re-sends
                // on them, as the runtime keeps ticking it). A follower counts them on its
                // election timer only when node liveness wakes it (`wake`).
                if !r.is_quiesced() {
                    r.tick();
                    node.idle_from = now;
                }
                node.waiters.expire(&mut node.tally, now);
                self.observe(n)?;
            }
        }
        self.client_actions()?;
        for n in 0..self.nodes.len() {
            self.process_ready(n)?;
        }
        for n in 0..self.nodes.len() {
            self.flush(n)?;
        }
        for n in 0..self.nodes.len() {
            self.process_ready(n)?;
        }
        self.check_outcomes()
    }

    /// Checks the outcomes reported since the last call: a `Dropped` entry must not be
    /// committed (it is then never applied, which `apply` and `observe` check for later
    /// commits and applies); an `Ok` one must carry its proposal's result.
    fn check_outcomes(&mut self) -> R {
        let reported = std::mem::take(&mut *self.outcomes.log.borrow_mut());
        for (id, index, term, o, session) in reported {
            if let Some(s) = session {
                self.check_session_outcome(s, index, term, o)?;
                continue;
            }
            match o {
                Outcome::Applied(result) => {
                    if let Some(id) = id {
                        let carried = result.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                        if carried != Some(id) {
                            bail!("outcome: proposal {id} at ({index}, {term}) told Ok with another entry's result");
                        }
                        self.outcomes.ok.push((id, index));
                        self.acked_max = self.acked_max.max(index);
                        self.c.acked += 1;
                    }
                }
                Outcome::Dropped => {
                    self.c.outcomes_dropped += 1;
                    if self.committed_terms.get(index as usize) == Some(&term) {
                        bail!("outcome: entry ({index}, {term}) told Dropped but it is committed");
                    }
                    self.outcomes.dropped.insert((index, term));
                }
                Outcome::Indeterminate => self.c.outcomes_indeterminate += 1,
                Outcome::Refused(r) => bail!("outcome: entry ({index}, {term}) refused by sessions: {r}"),
                other => bail!("outcome of a kind the checker does not know: {other:?}"),
            }
        }
        Ok(())
    }

    /// A session entry's outcome at its proposer: an answered attempt carries the result
    /// of its (session, seq)'s one application, whichever attempt that was; a lost one is
    /// retried later.
    fn check_session_outcome(&mut self, s: SessionRec, index: u64, term: u64, o: Outcome) -> R {
        match (s, o) {
            (SessionRec::Register, Outcome::Applied(r)) => {
                if r[..] != index.to_le_bytes() {
                    bail!("sessions: register at ({index}, {term}) answered with another id");
                }
                self.c.sessions_registered += 1;
                self.sim_sessions.push(SimSession { id: index, next_seq: 1, unanswered: BTreeMap::new() });
            }
            (SessionRec::Register, _) => {}
            (SessionRec::Propose(sid, seq), Outcome::Applied(r)) => {
                let at = r.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                let applied = self.scheck.applied_at.get(&(sid, seq)).copied();
                if at.is_none() || at != applied {
                    bail!(
                        "exactly-once: attempt ({index}, {term}) of ({sid}, {seq}) answered {at:?}, \
                         but it was applied at {applied:?}"
                    );
                }
                if at != Some(index) {
                    self.c.session_duplicate_answers += 1;
                }
                if let Some(ss) = self.sim_sessions.iter_mut().find(|x| x.id == sid) {
                    ss.unanswered.remove(&seq);
                }
            }
            (SessionRec::Propose(sid, seq), Outcome::Refused(SessionRefusal::Acked)) => {
                // Only an attempt of a write already answered (another attempt's answer
                // moved the floor past it) may meet the floor.
                if self.sim_sessions.iter().any(|x| x.id == sid && x.unanswered.contains_key(&seq)) {
                    bail!("sessions: ({sid}, {seq}) refused below the floor before it was answered");
                }
            }
            (SessionRec::Propose(sid, _), Outcome::Refused(_)) => {
                // Evicted (the table's bound): the proposers forget the session.
                self.c.session_unknown += 1;
                self.sim_sessions.retain(|x| x.id != sid);
            }
            // Dropped, Indeterminate: the attempt stays unanswered and is retried.
            (SessionRec::Propose(..), _) => {}
        }
        Ok(())
    }

    /// A session client action at node `n` (mostly the leader): register a session, or
    /// propose in one a new write or a retry of an unanswered one (lost, or still in
    /// flight: its first attempt may commit after the retry).
    fn session_action(&mut self, n: usize) -> R {
        let Some(r) = self.nodes[n].raft.as_mut() else { return Ok(()) };
        let stamp_ms = self.now;
        if self.sim_sessions.is_empty() || (self.sim_sessions.len() < 4 && self.srng.chance(0.02)) {
            let op = SessionOp::Register { ttl_ms: u64::MAX / 4, max_sessions: 4 };
            if let Ok((index, term)) = r.propose_session(SessionHeader { op, stamp_ms }, Bytes::new()) {
                let h = Rec {
                    id: None,
                    session: Some(SessionRec::Register),
                    index,
                    term,
                    out: self.outcomes.log.clone(),
                };
                let deadline = self.now + self.p.propose_timeout;
                let node = &mut self.nodes[n];
                node.waiters.add(&mut node.tally, index, term, deadline, h);
            }
            return self.observe(n);
        }
        let k = self.srng.pick(self.sim_sessions.len());
        let retry = !self.sim_sessions[k].unanswered.is_empty() && self.srng.chance(0.4);
        let ss = &mut self.sim_sessions[k];
        let (seq, data) = if retry {
            let i = self.srng.pick(ss.unanswered.len());
            let (&seq, data) = ss.unanswered.iter().nth(i).expect("i < len");
            (seq, data.clone())
        } else {
            let seq = ss.next_seq;
            ss.next_seq += 1;
            let mut d = ss.id.to_le_bytes().to_vec();
            d.extend_from_slice(&seq.to_le_bytes());
            let data = Bytes::from(d);
            ss.unanswered.insert(seq, data.clone());
            (seq, data)
        };
        let floor = ss.unanswered.keys().next().copied().unwrap_or(ss.next_seq);
        let sid = ss.id;
        let op = SessionOp::Propose { session: sid, seq, floor };
        if let Ok((index, term)) = r.propose_session(SessionHeader { op, stamp_ms }, data) {
            self.c.session_attempts += 1;
            let attempts = self.scheck.attempts.entry((sid, seq)).or_default();
            if !attempts.is_empty() {
                self.c.session_retries += 1;
            }
            attempts.push((index, term));
            let h = Rec {
                id: None,
                session: Some(SessionRec::Propose(sid, seq)),
                index,
                term,
                out: self.outcomes.log.clone(),
            };
            let deadline = self.now + self.p.propose_timeout;
            let node = &mut self.nodes[n];
            node.waiters.add(&mut node.tally, index, term, deadline, h);
        }
        self.observe(n)
    }

    /// Sends a message emitted by node `from` (or starts a snapshot stream).
    fn send(&mut self, from: usize, msg: Message) -> R {
        if let MessageBody::SendSnapshot { meta } = &msg.body {
            return self.start_stream(from, msg.to, meta.clone());
        }
        let Some(to) = self.replica_node.get(msg.to as usize).copied().flatten() else {
            self.c.dropped += 1;
            return Ok(());
        };
        let replication = matches!(
            msg.body,
            MessageBody::Append { .. } | MessageBody::Commit { .. } | MessageBody::Heartbeat { .. }
        );
        if replication && self.narrowed.as_ref().is_some_and(|rows| !rows[from][to]) {
            self.c.dropped += 1;
            return Ok(());
        }
        if self.faults && self.rng.chance(self.p.drop) {
            self.c.dropped += 1;
            // Sometimes the transport notices the loss and tells the sender.
            if matches!(msg.body, MessageBody::Append { .. }) && self.rng.chance(0.5) {
                if let Some(r) = self.nodes[from].raft.as_mut() {
                    r.report_unreachable(msg.to);
                    self.c.unreachable_reports += 1;
                }
            }
            return Ok(());
        }
        if self.faults && self.rng.chance(self.p.dup) {
            let at = self.now + self.delay();
            self.net.push(Flight { at, from, to, msg: msg.clone() });
        }
        let at = self.now + self.delay();
        self.net.push(Flight { at, from, to, msg });
        Ok(())
    }

    fn delay(&mut self) -> u64 {
        if !self.faults {
            // The healed network of the liveness phase: one tick, in order.
            return 1;
        }
        if self.rng.chance(self.p.long_delay) {
            self.rng.range(4, 25)
        } else {
            self.rng.range(1, self.p.max_delay)
        }
    }

    fn deliver(&mut self) -> R {
        let now = self.now;
        let (mut due, rest): (Vec<Flight>, Vec<Flight>) =
            std::mem::take(&mut self.net).into_iter().partition(|f| f.at <= now);
        self.net = rest;
        // Reorder the messages due now.
        for i in (1..due.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            due.swap(i, j);
        }
        for f in due {
            if self.blocked[f.from][f.to] {
                self.c.dropped += 1;
                continue;
            }
            let node = &mut self.nodes[f.to];
            if node.replica != f.msg.to {
                self.c.dropped += 1;
                continue;
            }
            let Some(r) = node.raft.as_mut() else {
                self.c.dropped += 1;
                continue;
            };
            if r.is_quiesced() {
                r.advance_idle(now - node.idle_from);
                node.idle_from = now;
            }
            self.c.delivered += 1;
            if self.opts.trace {
                eprintln!(
                    "[{:5}] deliver {} -> {} t{} {:?}",
                    now, f.msg.from, f.msg.to, f.msg.term, f.msg.body
                );
            }
            if let Err(e) = r.step(f.msg) {
                bail!("node {}: step refused a routed message: {e}", f.to);
            }
            self.observe(f.to)?;
            if self.rng.chance(self.p.eager_ready) {
                self.process_ready(f.to)?;
            }
        }
        Ok(())
    }

    fn start_stream(&mut self, from: usize, to_replica: ReplicaId, meta: SnapshotMeta) -> R {
        let Some(r) = self.nodes[from].raft.as_ref() else { return Ok(()) };
        let snap = r.storage().snapshot();
        if snap.meta.index > meta.index {
            // Compacted again since the request was made: that snapshot is gone. Report the
            // send failed; the leader asks again with its latest compaction point.
            self.c.snapshot_requests_superseded += 1;
            if let Some(r) = self.nodes[from].raft.as_mut() {
                r.report_snapshot(to_replica, false);
            }
            return self.observe(from);
        }
        if snap.meta != meta {
            bail!(
                "node {from}: SendSnapshot for {:?} but the stored snapshot is {:?}",
                (meta.index, meta.term),
                (snap.meta.index, snap.meta.term)
            );
        }
        let (leader, term) = (r.id(), r.term());
        self.c.snapshot_streams += 1;
        let Some(to) = self.replica_node.get(to_replica as usize).copied().flatten() else {
            // Nobody hosts it: the stream fails at once.
            if let Some(r) = self.nodes[from].raft.as_mut() {
                r.report_snapshot(to_replica, false);
            }
            return Ok(());
        };
        let k = self.rng.range(1, 4) as usize;
        let data = snap.data.clone();
        let mut cuts: Vec<usize> =
            (0..k - 1).map(|_| self.rng.below(data.len() as u64 + 1) as usize).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        let mut chunks = Vec::with_capacity(k);
        let mut lo = 0;
        for (seq, &hi) in cuts.iter().enumerate() {
            chunks.push(Message {
                from: leader,
                to: to_replica,
                term,
                body: MessageBody::SnapshotChunk(SnapshotChunk {
                    meta: meta.clone(),
                    seq: seq as u32,
                    offset: lo as u64,
                    last: seq + 1 == k,
                    data: data.slice(lo..hi),
                }),
            });
            lo = hi;
        }
        let fail_at =
            if self.faults && self.rng.chance(self.p.snapshot_fail) { Some(self.rng.pick(k)) } else { None };
        let next_at = self.now + self.rng.range(1, self.p.max_delay + 2);
        let from_inc = self.nodes[from].incarnation;
        self.trace(|| {
            format!(
                "stream snapshot {} from node {from} to replica {to_replica} ({k} chunks, fail {fail_at:?})",
                meta.index
            )
        });
        self.streams.push(Stream {
            from,
            from_inc,
            leader,
            to,
            to_replica,
            chunks,
            next: 0,
            next_at,
            fail_at,
        });
        Ok(())
    }

    fn progress_streams(&mut self) -> R {
        let mut i = 0;
        for _ in 0..1000 {
            if i >= self.streams.len() {
                break;
            }
            if self.nodes[self.streams[i].from].stall.is_some() {
                // The sender stalled: its stream waits (so its outcome is reported to it).
                i += 1;
                continue;
            }
            let mut outcome: Option<bool> = None;
            for _ in 0..16 {
                let s = &self.streams[i];
                if s.next >= s.chunks.len() {
                    outcome = Some(true);
                    break;
                }
                if s.next_at > self.now {
                    break;
                }
                let (to, next) = (s.to, s.next);
                let alive = self.nodes[to].raft.is_some() && self.nodes[to].replica == s.to_replica;
                if s.fail_at == Some(next) || self.blocked[s.from][to] || !alive {
                    outcome = Some(false);
                    break;
                }
                let msg = self.streams[i].chunks[next].clone();
                self.streams[i].next += 1;
                let gap = self.rng.below(2);
                self.streams[i].next_at = self.now + gap;
                if let Some(r) = self.nodes[to].raft.as_mut() {
                    if let Err(e) = r.step(msg) {
                        bail!("node {to}: step refused a snapshot chunk: {e}");
                    }
                }
                self.c.delivered += 1;
                self.observe(to)?;
            }
            match outcome {
                None => i += 1,
                Some(ok) => {
                    let s = self.streams.swap_remove(i);
                    if !ok {
                        self.c.snapshot_streams_failed += 1;
                    }
                    self.trace(|| format!("snapshot stream to replica {} done: ok={ok}", s.to_replica));
                    let node = &mut self.nodes[s.from];
                    if node.incarnation == s.from_inc {
                        if let Some(r) = node.raft.as_mut() {
                            if r.id() == s.leader {
                                r.report_snapshot(s.to_replica, ok);
                                self.observe(s.from)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Ready processing, durability, apply
    // ------------------------------------------------------------------------------------

    fn process_ready(&mut self, n: usize) -> R {
        for _ in 0..8 {
            let Some(r) = self.nodes[n].raft.as_mut() else { return Ok(()) };
            // The Ready's steps: send, persist (queued here, durable at a later step, lost
            // if the node crashes first), apply; the write's advance comes in `flush`.
            let Some(mut d) = ReadyDriver::next(r) else { break };
            // Log matching: every entry that enters any log passes through a Ready.
            if let Some(first) = d.write().entries().first() {
                let mut prev_term = match r.term_at(first.index - 1) {
                    Ok(t) => t,
                    Err(e) => bail!("node {n}: no term before its new entries at {}: {e}", first.index),
                };
                for e in d.write().entries() {
                    let h = entry_hash(e);
                    match self.seen.get(&(e.index, e.term)) {
                        Some(&(h0, p0)) => {
                            if h0 != h {
                                bail!(
                                    "log matching: two different entries at index {} term {}",
                                    e.index,
                                    e.term
                                );
                            }
                            if p0 != prev_term {
                                bail!(
                                    "log matching: entry ({}, {}) follows term {} in one log and {} in another",
                                    e.index,
                                    e.term,
                                    p0,
                                    prev_term
                                );
                            }
                        }
                        None => {
                            self.seen.insert((e.index, e.term), (h, prev_term));
                        }
                    }
                    prev_term = e.term;
                }
            }
            if self.opts.trace {
                let r = self.nodes[n].raft.as_ref().expect("live");
                eprintln!(
                    "[{:5}] node {n} ready: role {:?} t{} commit {} hs {:?} ents {:?} snap {:?} msgs {} pmsgs {} apply {:?} reads {}",
                    self.now,
                    r.role(),
                    r.term(),
                    r.committed(),
                    d.write().hard_state(),
                    d.write().entries().iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
                    d.write().snapshot().map(|s| s.meta.index),
                    d.messages().len(),
                    d.write().waiting_messages().len(),
                    d.committed_entries().iter().map(|e| e.index).collect::<Vec<_>>(),
                    d.read_states().len()
                );
            }
            // 1. Messages go now.
            for m in d.take_messages() {
                self.send(n, m)?;
            }
            // 2. A received snapshot is installed into the state machine now; it reaches
            //    storage with its write.
            let w = d.take_write();
            let had_snapshot = w.snapshot().is_some();
            if let Some(s) = w.snapshot() {
                let Some(sm) = Sm::decode(&s.data) else { bail!("node {n}: undecodable snapshot") };
                if sm.index != s.meta.index {
                    bail!("node {n}: snapshot data at {} for meta {}", sm.index, s.meta.index);
                }
                match self.chains.get(sm.index as usize) {
                    Some(&c) if c == sm.chain => {}
                    Some(_) => bail!("node {n}: installed a snapshot at {} with a different state", sm.index),
                    None => bail!("node {n}: installed a snapshot at {} nobody applied", sm.index),
                }
                let want = self.conf_at(s.meta.index);
                if s.meta.conf != want {
                    bail!(
                        "node {n}: snapshot at {} carries configuration {:?}, expected {:?}",
                        s.meta.index,
                        s.meta.conf,
                        want
                    );
                }
                if sm.index <= self.nodes[n].sm.index {
                    bail!(
                        "node {n}: installed snapshot at {} at or below applied {}",
                        sm.index,
                        self.nodes[n].sm.index
                    );
                }
                self.nodes[n].sm = sm;
                // Waiters at or below the snapshot resolve as the snapshot says.
                let node = &mut self.nodes[n];
                node.waiters.snapshot_installed(&mut node.tally, s.meta.index, s.meta.term);
            }
            // 3. The write (and the messages that must wait for it).
            if !w.is_empty() {
                let delay = if self.faults && self.rng.chance(self.p.disk_stall) {
                    self.rng.range(5, 30)
                } else if self.nodes[n].slow_disk && self.faults {
                    self.rng.range(0, self.p.disk_max * 2 + 2)
                } else if self.faults {
                    self.rng.range(0, self.p.disk_max)
                } else {
                    self.rng.range(0, 1)
                };
                let due = (self.now + delay).max(self.nodes[n].last_due);
                self.nodes[n].last_due = due;
                self.nodes[n].writes.push_back(Write { due, write: w });
            }
            // 4. Apply.
            let me = self.nodes[n].replica;
            let was_member = self.nodes[n].raft.as_ref().is_some_and(|r| r.conf().contains(me));
            let mut conf_changed = had_snapshot;
            let mut entered_joint = false;
            let committed = d.take_committed();
            if let Some(last) = committed.last().map(|e| e.index) {
                let node = &mut self.nodes[n];
                let mut matched = node.waiters.committed(&mut node.tally, &committed).into_iter().peekable();
                for e in &committed {
                    if let EntryPayload::ConfChange(cc) = &e.payload {
                        conf_changed = true;
                        entered_joint |= !cc.is_leave_joint();
                    }
                    let answer = self.apply(n, e)?;
                    // The waiter of this very entry learns the state machine's result.
                    let result = match &e.payload {
                        EntryPayload::Normal(d) => Outcome::Applied(d.clone()),
                        _ => answer.unwrap_or(Outcome::Applied(Bytes::new())),
                    };
                    while let Some(w) = matched.next_if(|w| w.index <= e.index) {
                        if (w.index, w.term) != (e.index, e.term) {
                            bail!(
                                "node {n}: waiter ({}, {}) handed out with entry ({}, {})",
                                w.index,
                                w.term,
                                e.index,
                                e.term
                            );
                        }
                        w.complete(result.clone());
                    }
                }
                if let Some(w) = matched.peek() {
                    bail!("node {n}: waiter ({}, {}) handed out for no committed entry", w.index, w.term);
                }
                self.check_outcomes()?;
                let r = self.nodes[n].raft.as_mut().expect("live");
                ReadyDriver::applied(r, &committed);
                if r.applied() != last {
                    bail!("node {n}: on_applied({last}) left applied at {}", r.applied());
                }
            }
            if conf_changed {
                let r = self.nodes[n].raft.as_ref().expect("live");
                let want = self.conf_at(r.applied());
                if r.conf() != &want {
                    bail!(
                        "node {n}: configuration {:?} at applied {} differs from the log's {:?}",
                        r.conf(),
                        r.applied(),
                        want
                    );
                }
                if was_member && !r.conf().contains(me) {
                    // Like the runtime: a replica that applies its own removal is destroyed.
                    return self.destroy(n);
                }
            }
            // 5. Reads.
            for rs in d.take_read_states() {
                let Some(start) = self.read_starts.get(&rs.ctx) else {
                    bail!("node {n}: released unknown read {}", rs.ctx)
                };
                if start.node != n || start.incarnation != self.nodes[n].incarnation {
                    bail!("node {n}: released read {} it never accepted", rs.ctx);
                }
                if rs.index < start.required {
                    bail!(
                        "linearizability: read {} released at index {} but a write at {} was acknowledged \
                         before it began",
                        rs.ctx,
                        rs.index,
                        start.required
                    );
                }
                if self.abandoned.contains(&rs.ctx) {
                    // Its caller gave up (the answer was on its way): nobody serves it, as
                    // the engine finds no waiter for it.
                    continue;
                }
                self.nodes[n].reads.push((rs.ctx, rs.index));
            }
            self.serve_reads(n);
            self.observe(n)?;
            let is_leader = self.nodes[n].raft.as_ref().is_some_and(|r| r.role() == Role::Leader);
            if entered_joint && is_leader && self.faults {
                let joint = self.nodes[n].raft.as_ref().is_some_and(|r| r.conf().is_joint());
                if joint && self.rng.chance(0.3) {
                    self.c.leader_crash_after_joint += 1;
                    self.trace(|| format!("node {n}: leader crashes right after entering a joint config"));
                    self.crash(n);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, n: usize) {
        let applied = self.nodes[n].sm.index;
        let mut served = 0;
        let node = &mut self.nodes[n];
        node.reads.retain(|&(ctx, index)| {
            if index <= applied {
                served += 1;
                let _ = ctx;
                false
            } else {
                true
            }
        });
        self.c.reads_served += served;
    }

    /// Applies `e` at node `n`; for a session entry, returns its outcome (as the
    /// engine's apply thread decides it with the same table).
    fn apply(&mut self, n: usize, e: &Entry) -> Result<Option<Outcome>, String> {
        let node = &mut self.nodes[n];
        if e.index != node.sm.index + 1 {
            bail!("node {n}: applies index {} after {}", e.index, node.sm.index);
        }
        let c = chain(node.sm.chain, entry_hash(e));
        node.sm.index = e.index;
        node.sm.chain = c;
        let answer = match &e.payload {
            EntryPayload::Session { header, .. } => Some(self.apply_session(n, e, header)?),
            _ => None,
        };
        // Promises made to proposers: nothing reported Dropped (or refused) is applied.
        if self.outcomes.dropped.contains(&(e.index, e.term)) {
            bail!("outcome: node {n} applied entry ({}, {}), whose waiter was told Dropped", e.index, e.term);
        }
        if let Some(id) = proposal_id(e) {
            if self.outcomes.refused.contains(&id) {
                bail!("outcome: node {n} applied proposal {id}, which propose refused");
            }
            self.outcomes.applied_at.entry(id).or_insert(e.index);
        }
        let i = e.index as usize;
        if i < self.chains.len() {
            if self.chains[i] != c {
                bail!(
                    "state machine safety: node {n} applied a different entry (or history) at index {}",
                    e.index
                );
            }
        } else if i == self.chains.len() {
            self.chains.push(c);
            if let EntryPayload::ConfChange(cc) = &e.payload {
                let prev = self.conf_at(e.index);
                if let Ok(next) = prev.apply(cc) {
                    self.confs.push((e.index, next));
                }
            }
        } else {
            bail!("node {n}: applied index {} before anyone applied {}", e.index, self.chains.len());
        }
        Ok(answer)
    }

    /// A session entry through node `n`'s table. The checker's own record (not the
    /// table): a (session, seq) is applied by the entry at one index only, whichever
    /// replica applies it.
    fn apply_session(&mut self, n: usize, e: &Entry, h: &SessionHeader) -> Result<Outcome, String> {
        let table = &mut self.nodes[n].sm.sessions;
        Ok(match h.op {
            SessionOp::Register { ttl_ms, max_sessions } => {
                table.register(e.index, h.stamp_ms, SessionLimits { ttl_ms, max_sessions });
                Outcome::Applied(Bytes::copy_from_slice(&e.index.to_le_bytes()))
            }
            SessionOp::Close { session } => {
                table.close(session, h.stamp_ms);
                Outcome::Applied(Bytes::new())
            }
            SessionOp::Propose { session, seq, floor } => {
                match table.apply(session, seq, floor, h.stamp_ms) {
                    Decision::Apply => {
                        let result = Bytes::copy_from_slice(&e.index.to_le_bytes());
                        table.record(session, seq, result.clone());
                        match self.scheck.applied_at.get(&(session, seq)) {
                            Some(&at) if at != e.index => bail!(
                                "exactly-once: node {n} applied session write ({session}, {seq}) at {} \
                             after it was applied at {at}",
                                e.index
                            ),
                            Some(_) => {}
                            None => {
                                self.scheck.applied_at.insert((session, seq), e.index);
                                self.c.session_writes_applied += 1;
                                let attempts = self.scheck.attempts.get(&(session, seq));
                                let pos =
                                    attempts.and_then(|a| a.iter().position(|&x| x == (e.index, e.term)));
                                if let (Some(a), Some(p)) = (attempts, pos) {
                                    if p + 1 < a.len() {
                                        self.c.session_first_won_after_retry += 1;
                                    }
                                }
                            }
                        }
                        Outcome::Applied(result)
                    }
                    Decision::Duplicate(r) => Outcome::Applied(r),
                    Decision::Acked => Outcome::Refused(SessionRefusal::Acked),
                    _ => Outcome::Refused(SessionRefusal::Unknown),
                }
            }
            _ => bail!("node {n}: unknown session op at {}", e.index),
        })
    }

    /// Makes node `n`'s writes due by now durable, in order.
    fn flush(&mut self, n: usize) -> R {
        for _ in 0..10_000 {
            let node = &mut self.nodes[n];
            let Some(raft) = node.raft.as_mut() else { return Ok(()) };
            if !node.writes.front().is_some_and(|w| w.due <= self.now) {
                break;
            }
            let w = node.writes.pop_front().expect("front").write;
            w.persist(raft.storage_mut());
            for m in w.persisted(raft) {
                self.send(n, m)?;
            }
            self.observe(n)?;
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // The checker (runs after every input to a replica)
    // ------------------------------------------------------------------------------------

    fn observe(&mut self, n: usize) -> R {
        self.check_outcomes()?;
        let node = &self.nodes[n];
        let Some(r) = node.raft.as_ref() else { return Ok(()) };
        // Configuration agreement: the applied configuration, removal records included, is
        // the one the committed history gives at its index.
        let want = self.conf_at(r.conf_index());
        if r.conf() != &want {
            bail!(
                "configuration: node {n} holds {:?} as of index {}, the history gives {want:?}",
                r.conf(),
                r.conf_index()
            );
        }
        if let Some(rep) = want.removed.iter().find(|x| want.contains(x.id)) {
            bail!("configuration: removal record of {rep:?}, a member");
        }
        let (role, term, commit, applied) = (r.role(), r.term(), r.committed(), r.applied());
        if applied > commit {
            bail!("node {n}: applied {applied} > committed {commit}");
        }
        if commit < node.last_commit {
            bail!("node {n}: commit moved back from {} to {commit}", node.last_commit);
        }
        if applied < node.last_applied {
            bail!("node {n}: applied moved back from {} to {applied}", node.last_applied);
        }
        if role == Role::Leader {
            let id = r.id();
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    bail!("election safety: replicas {other} and {id} both led term {term}")
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, id);
                }
            }
            if node.led_term != term {
                // A new leadership: leader completeness against everything committed in
                // an earlier term.
                let c = self.commit_marks.range(..term).map(|(_, &i)| i).max().unwrap_or(0);
                if c > 0 && !self.holds(r, c) {
                    bail!(
                        "leader completeness: replica {id} leads term {term} without committed entry {c} \
                         (term {}); its last index is {}",
                        self.committed_terms[c as usize],
                        r.last_index()
                    );
                }
                self.nodes[n].led_term = term;
                self.fresh_leaders.push(n);
                if self.narrowed.is_some() {
                    self.narrow_row(n);
                }
                self.trace(|| format!("node {n} (replica {id}) LEADS term {term}"));
            }
        }
        let node = &self.nodes[n];
        let r = node.raft.as_ref().expect("live");
        if commit > node.last_commit {
            let from = node.last_commit + 1;
            if self.committed_terms.len() <= commit as usize {
                self.committed_terms.resize(commit as usize + 1, 0);
            }
            for i in from..=commit {
                if let Ok(t) = r.term_at(i) {
                    if self.outcomes.dropped.contains(&(i, t)) {
                        bail!("outcome: node {n} committed entry ({i}, {t}), whose waiter was told Dropped");
                    }
                    let known = self.committed_terms[i as usize];
                    if known == 0 {
                        self.committed_terms[i as usize] = t;
                    } else if known != t {
                        bail!("node {n}: committed index {i} with term {t}, but term {known} was committed there");
                    }
                }
            }
            if commit > self.global_commit {
                self.global_commit = commit;
                let m = self.commit_marks.entry(term).or_insert(0);
                *m = (*m).max(commit);
                // Every leader of a later term must hold it.
                for (k, other) in self.nodes.iter().enumerate() {
                    if let Some(o) = other.raft.as_ref() {
                        if o.role() == Role::Leader && o.term() > term && !self.holds(o, commit) {
                            bail!(
                                "leader completeness: node {k} leads term {} without entry {commit} committed \
                                 in term {term}",
                                o.term()
                            );
                        }
                    }
                }
            }
            self.nodes[n].last_commit = commit;
        }
        self.nodes[n].last_applied = applied;
        Ok(())
    }

    /// Whether `r`'s log holds the committed entry at `index`.
    fn holds(&self, r: &Raft<MemStorage>, index: u64) -> bool {
        let want = self.committed_terms.get(index as usize).copied().unwrap_or(0);
        if want == 0 || index <= r.snapshot_meta().index {
            return true;
        }
        r.term_at(index) == Ok(want)
    }

    // ------------------------------------------------------------------------------------
    // Scheduler: faults and the client
    // ------------------------------------------------------------------------------------

    fn fault_actions(&mut self) -> R {
        // Restarts.
        for n in 0..self.nodes.len() {
            if self.nodes[n].down_until.is_some_and(|t| t <= self.now) {
                self.start(n)?;
            }
        }
        // Partitions.
        if self.heal_at != 0 && self.now >= self.heal_at {
            self.heal();
        } else if self.heal_at == 0 && self.rng.chance(self.p.partition) {
            self.partition();
        }
        // Crashes.
        if self.rng.chance(self.p.crash) {
            let target = match self.leader() {
                Some(l) if self.rng.chance(self.p.crash_leader) => Some(l),
                _ => {
                    let live: Vec<usize> =
                        (0..self.nodes.len()).filter(|&n| self.nodes[n].raft.is_some()).collect();
                    if live.is_empty() {
                        None
                    } else {
                        Some(live[self.rng.pick(live.len())])
                    }
                }
            };
            if let Some(n) = target {
                self.crash(n);
            }
        }
        // Stalls (longer than an election timeout, mostly of the leader).
        if self.rng.chance(self.p.stall) {
            let target = match self.leader() {
                Some(l) if self.rng.chance(0.7) => Some(l),
                _ => Some(self.rng.pick(self.nodes.len())),
            };
            let steps = self.rng.range(1, 3 * u64::from(self.p.elect_min + self.p.elect_span));
            if let Some(n) = target {
                self.stall(n, steps);
            }
        }
        Ok(())
    }

    /// Draws which peers node `n`'s appends and heartbeats reach while replication is
    /// narrowed: one random peer (half the time), else each peer with probability 1/2.
    fn narrow_row(&mut self, n: usize) {
        let m = self.nodes.len();
        let one = self.rng.chance(0.5);
        let pick = self.rng.pick(m);
        let row: Vec<bool> = (0..m).map(|k| if one { k == pick } else { self.rng.chance(0.5) }).collect();
        if let Some(rows) = self.narrowed.as_mut() {
            rows[n] = row;
        }
    }

    fn heal(&mut self) {
        self.narrowed = None;
        for row in &mut self.blocked {
            row.iter_mut().for_each(|b| *b = false);
        }
        self.heal_at = 0;
        self.trace(|| "partition healed".to_string());
    }

    fn partition(&mut self) {
        let m = self.nodes.len();
        let hosted: Vec<usize> = (0..m).filter(|&n| self.nodes[n].replica != 0).collect();
        if hosted.len() < 2 {
            return;
        }
        self.c.partitions += 1;
        let kind = self.rng.below(5);
        match kind {
            0 => {
                // Symmetric: a random side against the rest.
                let side: Vec<bool> = (0..m).map(|_| self.rng.chance(0.5)).collect();
                for a in 0..m {
                    for b in 0..m {
                        self.blocked[a][b] = side[a] != side[b];
                    }
                }
            }
            1 => {
                // One-way: some links drop in one direction only.
                for _ in 0..self.rng.range(1, 4) {
                    let a = hosted[self.rng.pick(hosted.len())];
                    let b = hosted[self.rng.pick(hosted.len())];
                    if a != b {
                        self.blocked[a][b] = true;
                    }
                }
            }
            2 => {
                // The leader isolated.
                let l = self.leader().unwrap_or(hosted[self.rng.pick(hosted.len())]);
                for b in 0..m {
                    if b != l {
                        self.blocked[l][b] = true;
                        self.blocked[b][l] = true;
                    }
                }
            }
            4 => {
                // Narrowed replication: each leader's appends and heartbeats reach only a
                // few peers while votes pass, so leaders come and go with entries on
                // minorities only (issue 10's schedule: a deposed leader's entry is
                // overwritten locally yet commits through another replica).
                self.narrowed = Some(vec![vec![true; m]; m]);
                for n in 0..m {
                    self.narrow_row(n);
                }
            }
            _ => {
                // Ring: each node reaches only its two neighbours.
                let mut order = hosted.clone();
                for i in (1..order.len()).rev() {
                    let j = self.rng.below(i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                for a in 0..m {
                    for b in 0..m {
                        self.blocked[a][b] = a != b;
                    }
                }
                let k = order.len();
                for i in 0..k {
                    let (a, b) = (order[i], order[(i + 1) % k]);
                    self.blocked[a][b] = false;
                    self.blocked[b][a] = false;
                }
            }
        }
        self.heal_at = self.now + self.rng.range(10, 150);
        self.trace(|| format!("partition kind {kind} until {}", self.heal_at));
    }

    /// Credits the ticks a quiesced replica of node `n` missed (before an input). The core
    /// keeps a follower's as silence, counted on its election timer only by a liveness
    /// wake (`wake`); any other input that wakes it drops them (a follower that merely
    /// slept keeps its CheckQuorum lease and ignores a stray PreVote).
    fn credit(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        if let Some(r) = node.raft.as_mut() {
            if r.is_quiesced() {
                r.advance_idle(now - node.idle_from);
                node.idle_from = now;
            }
        }
    }

    /// Node liveness as a transport reports it: wakes the quiesced replica of node `n`, its
    /// missed ticks credited first (the only wake that counts them as silence).
    fn wake(&mut self, n: usize) {
        self.credit(n);
        if let Some(r) = self.nodes[n].raft.as_mut() {
            if r.is_quiesced() {
                r.wake();
                self.c.liveness_wakes += 1;
                self.trace(|| format!("node {n}: woken by node liveness"));
            }
        }
    }

    /// A quiesced follower whose leader's node is down, cut off (either direction) or
    /// restarted (a new incarnation) for `detect` steps is woken, as the runtime wakes it
    /// on the transport's peer-down or peer-up-with-new-incarnation events.
    fn detect_liveness(&mut self) {
        for n in 0..self.nodes.len() {
            let Some(r) = self.nodes[n].raft.as_ref() else { continue };
            if !r.is_quiesced() || r.role() == Role::Leader {
                self.nodes[n].quiesced_leader = None;
                self.nodes[n].suspect_since = None;
                continue;
            }
            let ln = self.replica_node.get(r.leader() as usize).copied().flatten();
            let Some(ln) = ln else {
                self.wake(n);
                continue;
            };
            let inc = self.nodes[ln].incarnation;
            let seen = *self.nodes[n].quiesced_leader.get_or_insert((ln, inc));
            let unreachable = seen != (ln, inc)
                || self.nodes[ln].raft.is_none()
                || self.blocked[n][ln]
                || self.blocked[ln][n];
            if !unreachable {
                self.nodes[n].suspect_since = None;
                continue;
            }
            let since = *self.nodes[n].suspect_since.get_or_insert(self.now);
            if self.now >= since + self.p.detect {
                self.nodes[n].quiesced_leader = None;
                self.nodes[n].suspect_since = None;
                self.wake(n);
            }
        }
    }

    fn client_actions(&mut self) -> R {
        for n in 0..self.nodes.len() {
            self.credit(n);
        }
        if !self.abandons.is_empty() {
            self.abandon_due_reads();
        }
        if self.p.quiesce && self.faults {
            // Quiet periods let groups go idle and quiesce.
            if self.now < self.quiet_until {
                return Ok(());
            }
            if self.rng.chance(0.01) {
                self.quiet_until = self.now + self.rng.range(20, 200);
                self.c.quiet_periods += 1;
                return Ok(());
            }
        }
        // Reads at fresh leaders, before their term's first commit.
        let fresh = std::mem::take(&mut self.fresh_leaders);
        for n in fresh {
            if self.rng.chance(0.7) {
                self.read(n)?;
            }
        }
        let Some(l) = self.leader() else { return Ok(()) };
        let propose = if self.faults { self.p.propose } else { 0.05 };
        if self.rng.chance(propose) {
            let burst = if self.rng.chance(0.2) { self.rng.range(2, 6) } else { 1 };
            let target = if self.rng.chance(0.1) { self.rng.pick(self.nodes.len()) } else { l };
            for _ in 0..burst {
                self.propose(target)?;
            }
        }
        // In the fault phase only: the liveness phase measures plain proposals.
        if self.p.sessions && self.faults && self.srng.chance(propose / 2.0) {
            let at = if self.srng.chance(0.1) { self.srng.pick(self.nodes.len()) } else { l };
            self.session_action(at)?;
        }
        if self.rng.chance(self.p.read) {
            // Mostly at the leader; sometimes at a follower or learner, which forwards it;
            // often at a leader that stalled (its clients do not know it stalled).
            let at = match self.stalled_leader() {
                Some(s) if self.rng.chance(0.5) => s,
                _ if self.rng.chance(0.3) => self.rng.pick(self.nodes.len()),
                _ => l,
            };
            self.read(at)?;
        }
        if self.faults {
            if self.rng.chance(self.p.conf) {
                self.conf_change(l)?;
            }
            if self.rng.chance(self.p.transfer) {
                self.transfer(l)?;
            }
        }
        if self.rng.chance(self.p.compact) {
            let n = self.rng.pick(self.nodes.len());
            self.compact(n)?;
        }
        Ok(())
    }

    fn propose(&mut self, n: usize) -> R {
        let Some(r) = self.nodes[n].raft.as_mut() else { return Ok(()) };
        let id = self.next_proposal;
        self.next_proposal += 1;
        let mut data = id.to_le_bytes().to_vec();
        let pad = self.rng.below(40) as usize;
        data.resize(8 + pad, 0xab);
        match r.propose(Bytes::from(data)) {
            Ok((index, term)) => {
                self.c.proposals += 1;
                let h = Rec { id: Some(id), session: None, index, term, out: self.outcomes.log.clone() };
                let deadline = self.now + self.p.propose_timeout;
                let node = &mut self.nodes[n];
                node.waiters.add(&mut node.tally, index, term, deadline, h);
            }
            Err(_) => {
                self.outcomes.refused.insert(id);
            }
        }
        self.observe(n)
    }

    fn read(&mut self, n: usize) -> R {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        // The read begins now: whatever was acknowledged so far must be seen.
        let start = ReadStart { node: n, incarnation: self.nodes[n].incarnation, required: self.acked_max };
        if let Some(st) = self.nodes[n].stall.as_mut() {
            // Waits in the stalled node's mailbox.
            st.reads.push(ctx);
            self.c.reads_during_stall += 1;
            self.read_starts.insert(ctx, start);
            return Ok(());
        }
        if self.nodes[n].raft.is_none() {
            return Ok(());
        }
        self.read_starts.insert(ctx, start);
        let follower = self.nodes[n].raft.as_ref().is_some_and(|r| r.role() == Role::Follower);
        if follower && self.arng.chance(0.2) {
            // Its caller gives up before or after the leader's answer (the engine's read
            // timeout calls `abandon_read`).
            let at = self.now + self.arng.range(1, 40);
            self.abandons.push((at, n, self.nodes[n].incarnation, ctx));
        }
        self.read_ctx(n, ctx)
    }

    /// Callers whose time is up give up on their reads: a follower forgets them.
    fn abandon_due_reads(&mut self) {
        let now = self.now;
        let due: Vec<_> = self.abandons.iter().copied().filter(|a| a.0 <= now).collect();
        self.abandons.retain(|a| a.0 > now);
        for (_, n, incarnation, ctx) in due {
            let node = &mut self.nodes[n];
            let Some(r) = node.raft.as_mut().filter(|_| node.incarnation == incarnation) else { continue };
            let follower = r.role() == Role::Follower;
            r.abandon_read(ctx);
            if follower {
                self.abandoned.insert(ctx);
                self.c.reads_abandoned += 1;
                self.trace(|| format!("node {n}: the caller of read {ctx} gives up"));
            }
        }
    }

    /// Node `n` takes read `ctx` (its start already recorded).
    fn read_ctx(&mut self, n: usize, ctx: u64) -> R {
        let Some(r) = self.nodes[n].raft.as_mut() else { return Ok(()) };
        if r.read_index(ctx).is_err() {
            self.read_starts.remove(&ctx);
        }
        self.observe(n)
    }

    fn transfer(&mut self, l: usize) -> R {
        let Some(r) = self.nodes[l].raft.as_mut() else { return Ok(()) };
        let members = r.conf().members();
        if members.is_empty() {
            return Ok(());
        }
        let to = members[self.rng.pick(members.len())].id;
        let res = r.transfer_leader(to);
        self.trace(|| format!("node {l}: transfer to {to}: {res:?}"));
        self.observe(l)
    }

    fn compact(&mut self, n: usize) -> R {
        let Some(r) = self.nodes[n].raft.as_mut() else { return Ok(()) };
        let applied = r.applied();
        let snap = r.snapshot_meta().index;
        if applied < snap + self.p.compact_every {
            return Ok(());
        }
        let meta = match r.compact_to(applied) {
            Ok(m) => m,
            Err(e) => bail!("node {n}: compact_to({applied}) refused: {e}"),
        };
        let sm = self.nodes[n].sm.clone();
        if meta.index != applied || sm.index != applied {
            bail!(
                "node {n}: compaction meta {} / state machine {} / applied {applied}",
                meta.index,
                sm.index
            );
        }
        let want = self.conf_at(applied);
        if meta.conf != want {
            bail!(
                "node {n}: compaction at {applied} records configuration {:?}, expected {:?}",
                meta.conf,
                want
            );
        }
        let past_joint =
            self.confs.iter().any(|(i, c)| *i > snap && *i <= applied && c.is_joint()) || want.is_joint();
        self.c.compactions += 1;
        if past_joint {
            self.c.compactions_past_joint += 1;
        }
        let r = self.nodes[n].raft.as_mut().expect("live");
        r.storage_mut().compact(&meta, sm.encode());
        self.trace(|| format!("node {n}: compacted to {applied}"));
        self.observe(n)
    }

    /// A free node for a new replica: never used, or hosting a replica that is not a member.
    fn free_node(&mut self, conf: &ConfState) -> Option<usize> {
        // A node may be wiped only if its replica is in neither the leader's configuration
        // nor the latest committed one, nor named by a change that may still commit.
        let applied = self.chains.len() as u64;
        self.pending_changes.retain(|(i, _)| *i >= applied);
        // And, like an operator, only once every member of the latest configuration has
        // applied the replica's removal: members that do not know the removal committed may
        // still need its vote.
        let committed = &self.confs.last().expect("genesis").1;
        let members_applied = committed
            .members()
            .iter()
            .map(|m| match self.replica_node.get(m.id as usize).copied().flatten() {
                Some(n) if self.nodes[n].raft.is_some() => self.nodes[n].sm.index,
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        let removed_at = |rep: ReplicaId| {
            let last_with = self.confs.iter().rposition(|(_, c)| c.contains(rep));
            match last_with {
                Some(k) => self.confs.get(k + 1).map(|(i, _)| *i).unwrap_or(u64::MAX),
                None => 0,
            }
        };
        let free: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| {
                let rep = self.nodes[n].replica;
                rep == 0
                    || (!conf.contains(rep)
                        && !committed.contains(rep)
                        && removed_at(rep) <= members_applied
                        && !self.pending_changes.iter().any(|(_, reps)| reps.contains(&rep)))
            })
            .collect();
        if free.is_empty() {
            None
        } else {
            Some(free[self.rng.pick(free.len())])
        }
    }

    fn conf_change(&mut self, l: usize) -> R {
        let Some(r) = self.nodes[l].raft.as_ref() else { return Ok(()) };
        let conf = r.conf().clone();
        let compacted = r.snapshot_meta().index > 0;
        let me = r.id();
        if conf.is_joint() {
            if !conf.auto_leave {
                let res =
                    self.nodes[l].raft.as_mut().expect("live").propose_conf_change(ConfChange::leave_joint());
                if res.is_ok() {
                    self.c.conf_changes += 1;
                    self.c.explicit_leaves += 1;
                }
                self.trace(|| format!("node {l}: explicit leave: {res:?}"));
                return self.observe(l);
            }
            return Ok(());
        }
        // The removal rule: a voter is demoted (never removed) and never the leader itself.
        let voters: Vec<Replica> = conf.voters.clone();
        let others: Vec<Replica> = voters.iter().copied().filter(|v| v.id != me).collect();
        let learners = conf.learners.clone();
        let mut new_replica: Option<(usize, Replica)> = None;
        let mut fresh = |sim: &mut Sim| -> Option<Replica> {
            let n = sim.free_node(&conf)?;
            let id = sim.next_replica.max(conf.max_replica_id + 1);
            let rep = Replica::new(n as u64 + 1, id);
            new_replica = Some((n, rep));
            Some(rep)
        };
        let single = |kind, replica| SingleChange { kind, replica };
        let kind = self.rng.below(9);
        let cc = match kind {
            // The runtime forgets a removal record once the removed replica confirmed its
            // destruction; here any record, at any time (the core must not care).
            8 if !conf.removed.is_empty() => {
                self.c.forgets_proposed += 1;
                Some(ConfChange::single(ChangeKind::Forget, conf.removed[self.rng.pick(conf.removed.len())]))
            }
            0 => fresh(self).map(|r| ConfChange::single(ChangeKind::AddLearner, r)),
            1 => fresh(self).map(|r| ConfChange::single(ChangeKind::AddVoter, r)),
            2 if !learners.is_empty() => {
                Some(ConfChange::single(ChangeKind::AddVoter, learners[self.rng.pick(learners.len())]))
            }
            3 if voters.len() >= 3 => {
                Some(ConfChange::single(ChangeKind::AddLearner, others[self.rng.pick(others.len())]))
            }
            4 if voters.len() >= 3 => {
                // Step one of a voter's removal: a joint demotion (step two is kind 5).
                let transition =
                    if self.rng.chance(0.7) { Transition::JointAuto } else { Transition::JointExplicit };
                Some(ConfChange {
                    transition,
                    changes: vec![single(ChangeKind::AddLearner, others[self.rng.pick(others.len())])],
                })
            }
            5 if !learners.is_empty() => {
                Some(ConfChange::single(ChangeKind::Remove, learners[self.rng.pick(learners.len())]))
            }
            _ => {
                // Joint: replace a voter (demoted) by a learner or a new replica.
                if others.is_empty() {
                    return Ok(());
                }
                let out = others[self.rng.pick(others.len())];
                let incoming = if !learners.is_empty() && self.rng.chance(0.5) {
                    Some(learners[self.rng.pick(learners.len())])
                } else {
                    fresh(self)
                };
                incoming.map(|inc| {
                    let out_kind = ChangeKind::AddLearner;
                    let transition = match self.rng.below(3) {
                        0 => Transition::Auto,
                        1 => Transition::JointAuto,
                        _ => Transition::JointExplicit,
                    };
                    ConfChange {
                        transition,
                        changes: vec![single(out_kind, out), single(ChangeKind::AddVoter, inc)],
                    }
                })
            }
        };
        let Some(cc) = cc else { return Ok(()) };
        let res = self.nodes[l].raft.as_mut().expect("live").propose_conf_change(cc.clone());
        self.trace(|| format!("node {l}: conf change {cc:?}: {res:?}"));
        let Ok((index, term)) = res else { return self.observe(l) };
        let h = Rec { id: None, session: None, index, term, out: self.outcomes.log.clone() };
        let deadline = self.now + self.p.propose_timeout;
        let node = &mut self.nodes[l];
        node.waiters.add(&mut node.tally, index, term, deadline, h);
        self.pending_changes.push((index, cc.changes.iter().map(|c| c.replica.id).collect()));
        self.c.conf_changes += 1;
        let joint = conf.apply(&cc).is_ok_and(|c| c.is_joint());
        if joint {
            self.c.joint_proposed += 1;
        }
        if let Some((n, rep)) = new_replica {
            self.next_replica = rep.id + 1;
            if compacted {
                self.c.replicas_added_after_compaction += 1;
            }
            if n == l {
                bail!("harness: picked the leader's node for a new replica");
            }
            self.host_new_replica(n, rep.id)?;
        }
        self.observe(l)?;
        if !joint && self.rng.chance(0.15) && self.nodes[l].raft.as_ref().is_some_and(|r| r.id() == me) {
            // The leader crashes with its single-step change uncommitted.
            self.c.leader_crash_uncommitted_change += 1;
            self.trace(|| format!("node {l}: leader crashes with an uncommitted single-step change"));
            self.crash(l);
        }
        Ok(())
    }

    // ------------------------------------------------------------------------------------
    // Liveness
    // ------------------------------------------------------------------------------------

    fn liveness(&mut self) -> R {
        self.faults = false;
        self.heal();
        for n in 0..self.nodes.len() {
            self.resume(n)?;
        }
        // In-flight snapshot streams keep going; everything down comes back.
        for n in 0..self.nodes.len() {
            if self.nodes[n].down_until.is_some() {
                self.start(n)?;
            }
        }
        let l = self.settle_phase("after faults stopped", true)?;
        // Then a random minority of the final configuration's voters crashes for good
        // (the leader perhaps among them): the others still elect a leader and commit.
        let voters = self.nodes[l].raft.as_ref().expect("live").conf().voters.clone();
        let k = (voters.len() as u64).saturating_sub(1) / 2;
        if k > 0 {
            let k = self.rng.range(1, k) as usize;
            let mut pool = voters;
            for _ in 0..k {
                let v = pool.swap_remove(self.rng.pick(pool.len()));
                if let Some(n) = self.replica_node.get(v.id as usize).copied().flatten() {
                    self.trace(|| format!("liveness: member {} (node {n}) crashes for good", v.id));
                    self.crash(n);
                    self.c.liveness_crashes += 1;
                }
            }
            self.settle_phase("after a minority of the final configuration crashed", false)?;
        }
        self.check_ok_applied_everywhere()
    }

    /// At the end: every proposal told `Ok` was applied at its index, and every live
    /// member of the leader's configuration has applied it.
    fn check_ok_applied_everywhere(&self) -> R {
        let Some(l) = self.leader() else { bail!("liveness: no leader at the end") };
        let conf = self.nodes[l].raft.as_ref().map(|r| r.conf().clone()).unwrap_or_default();
        let applied: Vec<(ReplicaId, u64)> = conf
            .members()
            .iter()
            .filter_map(|m| {
                let n = self.replica_node.get(m.id as usize).copied().flatten()?;
                self.nodes[n].raft.as_ref().map(|_| (m.id, self.nodes[n].sm.index))
            })
            .collect();
        for &(id, index) in &self.outcomes.ok {
            if self.outcomes.applied_at.get(&id) != Some(&index) {
                bail!(
                    "outcome: proposal {id} told Ok at index {index} but applied at {:?}",
                    self.outcomes.applied_at.get(&id)
                );
            }
            if let Some((m, at)) = applied.iter().find(|(_, at)| *at < index) {
                bail!("outcome: proposal {id} told Ok at index {index} is missing from member {m} (applied {at})");
            }
        }
        Ok(())
    }

    /// Runs the healed cluster until a leader committed 3 more proposals that every live
    /// member of its configuration applied; returns the leader's node. With `stable`, also
    /// until its configuration is final (not joint, no membership change unapplied).
    ///
    /// The window is `liveness_ticks`; a member still catching up at its end (a replica
    /// far behind, with the small append sizes and in-flight windows some seeds draw,
    /// gains about one entry a tick) extends it by a quarter while the lagging members'
    /// lowest applied index keeps rising, up to four windows in all (found by seed
    /// 60045019: 2,000 entries behind when the faults stopped, never stuck).
    fn settle_phase(&mut self, phase: &str, stable: bool) -> Result<usize, String> {
        let acked_before = self.c.acked;
        let mut window = self.opts.liveness_ticks;
        let mut laggard_applied = self.lowest_laggard().unwrap_or(0);
        let mut t = 0;
        while t < window || self.laggards_progress(&mut laggard_applied, &mut window) {
            t += 1;
            self.step()?;
            let Some(l) = self.leader() else { continue };
            let r = self.nodes[l].raft.as_ref().expect("live");
            let conf = r.conf().clone();
            if conf.is_joint() && !conf.auto_leave {
                // Nobody else leaves an explicit joint configuration.
                let res =
                    self.nodes[l].raft.as_mut().expect("live").propose_conf_change(ConfChange::leave_joint());
                if res.is_ok() {
                    self.c.explicit_leaves += 1;
                }
                continue;
            }
            if self.c.acked < acked_before + 3 {
                continue;
            }
            if stable {
                let pending = r
                    .entries(r.applied() + 1, r.last_index() + 1)
                    .map_or(true, |es| es.iter().any(|e| matches!(e.payload, EntryPayload::ConfChange(_))));
                if conf.is_joint() || pending {
                    continue;
                }
            }
            // Every live member of the leader's configuration must apply every
            // acknowledged proposal.
            let all = conf.members().iter().all(|m| {
                self.replica_node.get(m.id as usize).copied().flatten().is_some_and(|n| {
                    let node = &self.nodes[n];
                    node.sm.index >= self.acked_max || (node.raft.is_none() && node.down_until.is_some())
                })
            });
            if all {
                return Ok(l);
            }
        }
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = &n.raft {
                let st = r.status();
                s += &format!(
                    "\n    node {i} replica {} {:?} t{} leader {} commit {} applied {} last {} stable {} \
                     first {} conf {:?} followers {:?} writes {}",
                    st.id,
                    st.role,
                    st.term,
                    st.leader,
                    st.commit,
                    st.applied,
                    st.last_index,
                    r.stable_index(),
                    st.first_index,
                    st.conf,
                    st.followers,
                    n.writes.len()
                );
            } else if n.replica != 0 {
                s += &format!("\n    node {i} replica {} down", n.replica);
            }
        }
        Err(format!(
            "liveness: within {window} ticks {phase}, no leader committed 3 proposals that every live member \
             applied (acked {} -> {}, acked max {}){s}",
            acked_before, self.c.acked, self.acked_max
        ))
    }

    /// At the end of a settle window: whether the lowest applied index among the live
    /// members of the leader's configuration that lag the acknowledged proposals rose
    /// since the last call (`last`); if so, extends `window` by a quarter of the base, up
    /// to four base windows.
    fn laggards_progress(&self, last: &mut u64, window: &mut u64) -> bool {
        if *window >= 4 * self.opts.liveness_ticks {
            return false;
        }
        let lowest = self.lowest_laggard();
        match lowest {
            Some(a) if a > *last => {
                *last = a;
                *window += self.opts.liveness_ticks / 4;
                true
            }
            _ => false,
        }
    }

    /// The lowest applied index among the live members of the leader's configuration
    /// that have not applied every acknowledged proposal.
    fn lowest_laggard(&self) -> Option<u64> {
        let l = self.leader()?;
        let conf = self.nodes[l].raft.as_ref().map(|r| r.conf().clone()).unwrap_or_default();
        conf.members()
            .iter()
            .filter_map(|m| {
                let n = self.replica_node.get(m.id as usize).copied().flatten()?;
                let node = &self.nodes[n];
                node.raft.as_ref()?;
                (node.sm.index < self.acked_max).then_some(node.sm.index)
            })
            .min()
    }
}

/// Runs `seeds` on `threads` threads; returns the totals and the first violation (lowest
/// seed index among those found; a thread stops at its first).
pub fn run_seeds(
    all: &[u64],
    threads: usize,
    opts: &Options,
    stop_at_first: bool,
) -> (Counters, Option<Violation>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<(Counters, Option<Violation>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut total = Counters::default();
                    let mut first: Option<Violation> = None;
                    for (k, &seed) in all.iter().enumerate() {
                        if k % threads != t {
                            continue;
                        }
                        if stop_at_first && stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let (c, v) = run_one(seed, opts);
                        total.add(&c);
                        if let Some(v) = v {
                            if !stop_at_first {
                                let line = v.to_string();
                                eprintln!("VIOLATION {}", line.lines().next().unwrap_or_default());
                            }
                            if first.is_none() {
                                first = Some(v);
                            }
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                            if stop_at_first {
                                break;
                            }
                        }
                    }
                    (total, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("simulator thread")).collect()
    });
    let mut total = Counters::default();
    let mut first: Option<Violation> = None;
    for (c, v) in results {
        total.add(&c);
        if let Some(v) = v {
            if first.as_ref().map_or(true, |f| v.seed < f.seed) {
                first = Some(v);
            }
        }
    }
    (total, first)
}

/// Runs one seed, turning a panic in the core into a violation.
pub fn run_one(seed: u64, opts: &Options) -> (Counters, Option<Violation>) {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, opts.clone());
        let v = sim.run().err();
        (sim.c, v)
    }));
    match res {
        Ok(r) => r,
        Err(e) => {
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (
                Counters { seeds: 1, ..Default::default() },
                Some(Violation { seed, step: 0, what: format!("panic: {what}") }),
            )
        }
    }
}
