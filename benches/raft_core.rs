//! The Raft core against raft-rs, on one workload: a 3-replica group driven in memory.
//!
//! The harness owns the "network" (a queue of messages) and the "disk" (each core's
//! in-memory storage). Each iteration submits a burst of 16-byte proposals at the leader,
//! then processes Readys on all three replicas and delivers every message until the group
//! is quiet: every proposal of the burst is committed and applied on the leader, and the
//! followers have applied it too. Per Ready, both harnesses do the same work: persist
//! entries and hard state to memory and report them durable, send messages, apply
//! committed entries (counting the proposals among them); flotilla's goes through its
//! `ReadyDriver`, as the tests and the simulator do. Logs are compacted the same way
//! in both (every 10,000 applied entries) so long runs stay bounded.
//!
//! Implementations, in one criterion group `raft_core`: `flotilla`, `raft-rs` (raft 0.7
//! defaults: max_inflight_msgs = 256, max_size_per_msg = 0, i.e. one entry per append) and
//! `raft-rs-batch` (`batch_append = true`). Bursts of 1, 64 and 1,000; throughput is
//! committed proposals per second. Each proposal is a freshly allocated 16-byte buffer in
//! both (raft-rs takes a `Vec<u8>`, flotilla `Bytes::from(Vec<u8>)`).
//!
//! `RAFT_CORE_QUICK=1 cargo bench --bench raft_core` skips criterion and runs the report:
//! 1,000,000 proposals per configuration (`RAFT_CORE_PROPOSALS`; at most
//! `RAFT_CORE_MAX_SECS`, 5, seconds per measurement), median of `RAFT_CORE_ROUNDS` (3)
//! interleaved rounds, with the ratio of flotilla to the better raft-rs setting per burst
//! size, and raft-rs with `max_size_per_msg` = 1 MiB for context. `cargo bench` prints the
//! report after the criterion benchmarks (unless `RAFT_CORE_REPORT=0`).
//! `RAFT_CORE_PROFILE=<flotilla|raft-rs|raft-rs-batch>` runs one implementation alone, for
//! a profiler (`RAFT_CORE_BURST=<n>` picks one burst size).

#![allow(missing_docs)]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

const PAYLOAD: usize = 16;
const BURSTS: [usize; 3] = [1, 64, 1000];
const COMPACT_EVERY: u64 = 10_000;
const REPLICAS: u64 = 3;

/// One implementation driven by the harness.
trait Group {
    const NAME: &'static str;
    /// A settled group with an elected leader (replica 1).
    fn new() -> Self;
    /// Submits `n` proposals at the leader and runs the group until it is quiet.
    fn run_burst(&mut self, n: usize);
    /// Proposals submitted so far.
    fn submitted(&self) -> u64;
    /// Proposals applied so far by each replica.
    fn applied(&self) -> [u64; REPLICAS as usize];

    /// Every replica applied exactly what was submitted.
    fn check(&self) {
        for (i, a) in self.applied().iter().enumerate() {
            assert_eq!(
                *a,
                self.submitted(),
                "{}: replica {} applied {a} of {}",
                Self::NAME,
                i + 1,
                self.submitted()
            );
        }
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut v = vec![0u8; PAYLOAD];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

// --------------------------------------------------------------------------------------
// flotilla
// --------------------------------------------------------------------------------------

mod flotilla_harness {
    use super::*;
    use flotilla_engine::raft::{
        ConfState, Config, EntryPayload, MemStorage, Message, Raft, ReadyDriver, Replica, Role,
    };

    struct Node {
        raft: Raft<MemStorage>,
        applied_props: u64,
        compacted: u64,
    }

    pub struct Flotilla {
        nodes: Vec<Node>,
        queue: Vec<Message>,
        submitted: u64,
    }

    impl Flotilla {
        fn handle_readies(&mut self) {
            for n in &mut self.nodes {
                while let Some(mut d) = ReadyDriver::next(&mut n.raft) {
                    self.queue.extend(d.take_messages());
                    self.queue.extend(d.take_write().persist_now(&mut n.raft));
                    let committed = d.take_committed();
                    for e in &committed {
                        if let EntryPayload::Normal(data) = &e.payload {
                            if data.len() == PAYLOAD {
                                n.applied_props += 1;
                            }
                        }
                    }
                    ReadyDriver::applied(&mut n.raft, &committed);
                }
            }
        }

        /// Processes Readys and delivers messages until nothing is left to do.
        fn pump(&mut self) {
            loop {
                self.handle_readies();
                if self.queue.is_empty() {
                    return;
                }
                let mut q = std::mem::take(&mut self.queue);
                for m in q.drain(..) {
                    let to = m.to as usize - 1;
                    self.nodes[to].raft.step(m).unwrap();
                }
                // Keep the allocation.
                if self.queue.is_empty() {
                    self.queue = q;
                }
            }
        }

        fn maybe_compact(&mut self) {
            for n in &mut self.nodes {
                let applied = n.raft.applied();
                if applied >= n.compacted + COMPACT_EVERY {
                    let meta = n.raft.compact_to(applied).unwrap();
                    n.raft.storage_mut().compact(&meta, Bytes::new());
                    n.compacted = applied;
                }
            }
        }
    }

    impl Group for Flotilla {
        const NAME: &'static str = "flotilla";

        fn new() -> Self {
            let conf = ConfState::with_voters((1..=REPLICAS).map(|i| Replica::new(i, i)));
            let nodes = (1..=REPLICAS)
                .map(|i| {
                    let mut c = Config::new(i);
                    c.seed = 7;
                    let raft =
                        Raft::new(c.validate().unwrap(), MemStorage::new_with_conf(conf.clone())).unwrap();
                    Node { raft, applied_props: 0, compacted: 0 }
                })
                .collect();
            let mut g = Flotilla { nodes, queue: Vec::new(), submitted: 0 };
            // Only replica 1 ticks, so it times out first and wins.
            for _ in 0..1000 {
                if g.nodes[0].raft.role() == Role::Leader {
                    break;
                }
                g.nodes[0].raft.tick();
                g.pump();
            }
            assert_eq!(g.nodes[0].raft.role(), Role::Leader);
            g.pump();
            let commit = g.nodes[0].raft.committed();
            assert!(g.nodes.iter().all(|n| n.raft.applied() == commit), "election did not settle");
            g
        }

        fn run_burst(&mut self, n: usize) {
            for _ in 0..n {
                self.submitted += 1;
                self.nodes[0].raft.propose(Bytes::from(payload(self.submitted))).unwrap();
            }
            self.pump();
            assert_eq!(self.nodes[0].applied_props, self.submitted, "flotilla: burst not applied");
            self.maybe_compact();
        }

        fn submitted(&self) -> u64 {
            self.submitted
        }

        fn applied(&self) -> [u64; REPLICAS as usize] {
            [self.nodes[0].applied_props, self.nodes[1].applied_props, self.nodes[2].applied_props]
        }
    }
}

// --------------------------------------------------------------------------------------
// raft-rs
// --------------------------------------------------------------------------------------

mod raftrs_harness {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, Message};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};

    struct Node {
        node: RawNode<MemStorage>,
        applied_props: u64,
        compacted: u64,
    }

    pub struct RaftRs<const BATCH: bool, const BIG_MSGS: bool = false> {
        nodes: Vec<Node>,
        queue: Vec<Message>,
        submitted: u64,
    }

    fn apply(n: &mut Node, ents: &[Entry]) {
        for e in ents {
            if e.data.len() == PAYLOAD {
                n.applied_props += 1;
            }
        }
    }

    impl<const BATCH: bool, const BIG_MSGS: bool> RaftRs<BATCH, BIG_MSGS> {
        fn handle_readies(&mut self) {
            for n in &mut self.nodes {
                while n.node.has_ready() {
                    let mut rd = n.node.ready();
                    self.queue.extend(rd.take_messages());
                    if !rd.snapshot().is_empty() {
                        n.node.mut_store().wl().apply_snapshot(rd.snapshot().clone()).unwrap();
                    }
                    if !rd.entries().is_empty() {
                        n.node.mut_store().wl().append(rd.entries()).unwrap();
                    }
                    if let Some(hs) = rd.hs() {
                        n.node.mut_store().wl().set_hardstate(hs.clone());
                    }
                    self.queue.extend(rd.take_persisted_messages());
                    let committed = rd.take_committed_entries();
                    apply(n, &committed);
                    let mut light = n.node.advance(rd);
                    if let Some(commit) = light.commit_index() {
                        n.node.mut_store().wl().mut_hard_state().commit = commit;
                    }
                    self.queue.extend(light.take_messages());
                    let committed = light.take_committed_entries();
                    apply(n, &committed);
                    n.node.advance_apply();
                }
            }
        }

        fn pump(&mut self) {
            loop {
                self.handle_readies();
                if self.queue.is_empty() {
                    return;
                }
                let mut q = std::mem::take(&mut self.queue);
                for m in q.drain(..) {
                    let to = m.to as usize - 1;
                    self.nodes[to].node.step(m).unwrap();
                }
                if self.queue.is_empty() {
                    self.queue = q;
                }
            }
        }

        fn maybe_compact(&mut self) {
            for n in &mut self.nodes {
                let applied = n.node.raft.raft_log.applied;
                if applied >= n.compacted + COMPACT_EVERY {
                    n.node.mut_store().wl().compact(applied).unwrap();
                    n.compacted = applied;
                }
            }
        }
    }

    impl<const BATCH: bool, const BIG_MSGS: bool> Group for RaftRs<BATCH, BIG_MSGS> {
        const NAME: &'static str = match (BATCH, BIG_MSGS) {
            (false, false) => "raft-rs",
            (true, false) => "raft-rs-batch",
            (false, true) => "raft-rs-1MiB",
            (true, true) => "raft-rs-batch-1MiB",
        };

        fn new() -> Self {
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let voters: Vec<u64> = (1..=REPLICAS).collect();
            let nodes = (1..=REPLICAS)
                .map(|id| {
                    let mut cfg = Config { id, batch_append: BATCH, ..Config::default() };
                    if BIG_MSGS {
                        // Not a default: what TiKV configures (raft-rs defaults to one entry
                        // per append message). Report only, for context.
                        cfg.max_size_per_msg = 1 << 20;
                    }
                    cfg.validate().unwrap();
                    let store = MemStorage::new_with_conf_state(ConfState::from((voters.clone(), vec![])));
                    Node { node: RawNode::new(&cfg, store, &logger).unwrap(), applied_props: 0, compacted: 0 }
                })
                .collect();
            let mut g = RaftRs { nodes, queue: Vec::new(), submitted: 0 };
            g.nodes[0].node.campaign().unwrap();
            g.pump();
            assert_eq!(g.nodes[0].node.raft.state, StateRole::Leader);
            let commit = g.nodes[0].node.raft.raft_log.committed;
            assert!(
                g.nodes.iter().all(|n| n.node.raft.raft_log.applied == commit),
                "election did not settle"
            );
            g
        }

        fn run_burst(&mut self, n: usize) {
            for _ in 0..n {
                self.submitted += 1;
                self.nodes[0].node.propose(vec![], payload(self.submitted)).unwrap();
            }
            self.pump();
            assert_eq!(self.nodes[0].applied_props, self.submitted, "raft-rs: burst not applied");
            self.maybe_compact();
        }

        fn submitted(&self) -> u64 {
            self.submitted
        }

        fn applied(&self) -> [u64; REPLICAS as usize] {
            [self.nodes[0].applied_props, self.nodes[1].applied_props, self.nodes[2].applied_props]
        }
    }
}

use flotilla_harness::Flotilla;
use raftrs_harness::RaftRs;

// --------------------------------------------------------------------------------------
// criterion
// --------------------------------------------------------------------------------------

fn bench_one<G: Group>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    burst: usize,
) {
    let mut g = G::new();
    c.bench_with_input(BenchmarkId::new(G::NAME, burst), &burst, |b, &burst| {
        b.iter(|| g.run_burst(burst));
        g.check();
    });
    g.check();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_core");
    for burst in BURSTS {
        group.throughput(Throughput::Elements(burst as u64));
        // raft-rs takes tens of milliseconds per burst of 1,000: flat sampling keeps the
        // run short.
        group.sampling_mode(if burst >= 1000 { SamplingMode::Flat } else { SamplingMode::Auto });
        bench_one::<Flotilla>(&mut group, burst);
        bench_one::<RaftRs<false>>(&mut group, burst);
        bench_one::<RaftRs<true>>(&mut group, burst);
    }
    group.finish();
}

// --------------------------------------------------------------------------------------
// report: proposals/s and ratios
// --------------------------------------------------------------------------------------

/// Runs `total` proposals in bursts of `burst` (after a warm-up of a twentieth of that),
/// or as many as fit in `max_secs`, and returns (proposals measured, proposals per second).
fn measure<G: Group>(burst: usize, total: u64, max_secs: f64) -> (u64, f64) {
    let mut g = G::new();
    let bursts = total.div_ceil(burst as u64).max(1);
    let run = |g: &mut G, n: u64, max_secs: f64| {
        let start = Instant::now();
        for i in 0..n {
            g.run_burst(burst);
            if i % 64 == 63 && start.elapsed().as_secs_f64() > max_secs {
                break;
            }
        }
        start.elapsed().as_secs_f64()
    };
    run(&mut g, (bursts / 20).max(1), max_secs / 20.0);
    let before = g.submitted();
    let secs = run(&mut g, bursts, max_secs);
    g.check();
    let n = g.submitted() - before;
    (n, n as f64 / secs)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(total: u64, rounds: u64, max_secs: f64) {
    println!(
        "\nraft_core report: 3 replicas in memory, {PAYLOAD}-byte proposals, {total} proposals per \
         configuration (or {max_secs} s), median of {rounds} interleaved round(s), proposals/s"
    );
    println!(
        "{:>6} {:>13} {:>13} {:>14} {:>9} | {:>19} {:>9}",
        "burst", "flotilla", "raft-rs", "raft-rs-batch", "vs best", "raft-rs-batch-1MiB", "vs it"
    );
    let mut capped = false;
    for burst in BURSTS {
        let mut runs: [Vec<(u64, f64)>; 4] = Default::default();
        for _ in 0..rounds.max(1) {
            runs[0].push(measure::<Flotilla>(burst, total, max_secs));
            runs[1].push(measure::<RaftRs<false>>(burst, total, max_secs));
            runs[2].push(measure::<RaftRs<true>>(burst, total, max_secs));
            runs[3].push(measure::<RaftRs<true, true>>(burst, total, max_secs));
        }
        let cell = |v: &[(u64, f64)]| {
            let short = v.iter().any(|&(n, _)| n < total);
            let rate = median(v.iter().map(|&(_, r)| r).collect());
            (rate, format!("{rate:.0}{}", if short { "*" } else { "" }), short)
        };
        let [f, r, rb, rbig] = runs.map(|v| cell(&v));
        capped |= f.2 || r.2 || rb.2 || rbig.2;
        println!(
            "{burst:>6} {:>13} {:>13} {:>14} {:>8.2}x | {:>19} {:>8.2}x",
            f.1,
            r.1,
            rb.1,
            f.0 / r.0.max(rb.0),
            rbig.1,
            f.0 / rbig.0
        );
    }
    println!(
        "Every run checked: each replica applied exactly the proposals submitted.\n\
         vs best: flotilla / the better of raft-rs defaults and batch_append (the bar: >= 1.0x).\n\
         raft-rs-batch-1MiB (batch_append, max_size_per_msg = 1 MiB) is not a default; shown for context."
    );
    if capped {
        println!("*: stopped by the time limit (RAFT_CORE_MAX_SECS) before {total} proposals.");
    }
}

fn main() {
    let total = env_u64("RAFT_CORE_PROPOSALS", 1_000_000);
    let rounds = env_u64("RAFT_CORE_ROUNDS", 3);
    let max_secs = env_u64("RAFT_CORE_MAX_SECS", 5) as f64;
    if let Ok(name) = std::env::var("RAFT_CORE_PROFILE") {
        // One implementation alone, for a profiler.
        let only = env_u64("RAFT_CORE_BURST", 0) as usize;
        for burst in BURSTS.into_iter().filter(|&b| only == 0 || b == only) {
            let rate = match name.as_str() {
                "flotilla" => measure::<Flotilla>(burst, total, f64::INFINITY).1,
                "raft-rs" => measure::<RaftRs<false>>(burst, total, f64::INFINITY).1,
                "raft-rs-batch" => measure::<RaftRs<true>>(burst, total, f64::INFINITY).1,
                _ => panic!("RAFT_CORE_PROFILE: flotilla, raft-rs or raft-rs-batch"),
            };
            println!("{name} burst {burst}: {rate:.0} proposals/s");
        }
        return;
    }
    if std::env::var("RAFT_CORE_QUICK").is_ok_and(|v| v == "1") {
        report(total, rounds, max_secs);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    // A benchmark run (not `cargo test --benches`, not `--list`) also prints the ratios,
    // which criterion cannot; `RAFT_CORE_REPORT=0` skips them.
    let full = args.iter().any(|a| a == "--bench")
        && !args.iter().any(|a| a == "--list")
        && std::env::var("RAFT_CORE_REPORT").map_or(true, |v| v != "0");
    if full {
        report(total, rounds, max_secs);
    }
}
