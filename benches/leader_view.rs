//! `Engine::leader(group)` (the lock-free leader view the workers keep) against its
//! reference in the same run: `Engine::group_status(group)`, the old way to learn a
//! group's leader (a command to the owning worker's mailbox and a reply: a round trip).
//!
//! Setup: one engine (2 workers, in-memory transport, WAL in a temporary directory:
//! `/dev/shm` when there is one) hosting N single-replica groups, created from several
//! threads, each electing itself; measured once every group knows its leader. Each call
//! asks a different group, in a pseudo-random order over all N, so the map lookups are not
//! served from one hot cache line.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench --bench leader_view` (criterion, then the ratio
//! report). `LEADER_VIEW_QUICK=1` prints the report only. `LEADER_VIEW_GROUPS` (default
//! `1000,100000`) lists the group counts.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use flotilla_engine::api::{Engine, EngineConfig, StateMachine, StateMachineFactory};
use flotilla_engine::transport::MemoryNetwork;

struct NullSm;

impl StateMachine for NullSm {
    fn apply(&mut self, _index: u64, _term: u64, _command: Option<&[u8]>) -> Bytes {
        Bytes::new()
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

/// One engine with `n` single-replica groups (ids 1..=n), each with a known leader.
struct Setup {
    engine: Engine,
    n: u64,
    _net: MemoryNetwork,
    _dir: tempfile::TempDir,
}

fn setup(n: u64) -> Setup {
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let net = MemoryNetwork::new();
    let mut cfg = EngineConfig::new(1, dir.path().to_path_buf());
    cfg.workers = 2;
    cfg.tick_interval = Duration::from_millis(10);
    cfg.wal.segment_size = 64 << 20;
    let factory: StateMachineFactory = Arc::new(|_| Box::new(NullSm));
    let engine = Engine::open(cfg, Box::new(net.join(1, 1 << 16)), factory).unwrap();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let threads = 32u64;
        for t in 0..threads {
            let engine = &engine;
            s.spawn(move || {
                for g in (1..=n).filter(|g| g % threads == t) {
                    engine.create_group(g, &[1], Box::new(NullSm)).unwrap();
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    for g in 1..=n {
        while engine.leader(g).is_none() {
            assert!(Instant::now() < deadline, "group {g} elected no leader");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    eprintln!("leader_view: {n} groups created and led in {:.1} s", t0.elapsed().as_secs_f64());
    Setup { engine, n, _net: net, _dir: dir }
}

/// The `i`-th group asked: a full-period walk over 1..=n (an odd stride modulo n).
fn group_at(i: u64, n: u64) -> u64 {
    (i.wrapping_mul(0x9e37_79b9) % n) + 1
}

/// Mean nanoseconds per call of `f` over `calls` calls (or `max` time).
fn per_call(calls: u64, max: Duration, mut f: impl FnMut(u64)) -> f64 {
    let t0 = Instant::now();
    let mut done = 0;
    while done < calls {
        for _ in 0..1_000 {
            f(done);
            done += 1;
        }
        if t0.elapsed() > max {
            break;
        }
    }
    t0.elapsed().as_nanos() as f64 / done as f64
}

fn report(s: &Setup) {
    let (e, n) = (&s.engine, s.n);
    let mut lv = Vec::new();
    let mut gs = Vec::new();
    for _ in 0..3 {
        lv.push(per_call(2_000_000, Duration::from_secs(3), |i| {
            black_box(e.leader(group_at(i, n)).unwrap());
        }));
        gs.push(per_call(20_000, Duration::from_secs(3), |i| {
            black_box(e.group_status(group_at(i, n)).unwrap());
        }));
    }
    lv.sort_by(f64::total_cmp);
    gs.sort_by(f64::total_cmp);
    let (lv, gs) = (lv[1], gs[1]);
    println!(
        "leader_view groups={n}: Engine::leader {lv:.1} ns/call, group_status (reference) {gs:.0} ns/call, \
         ratio {:.0}x",
        gs / lv
    );
}

fn main() {
    let counts: Vec<u64> = std::env::var("LEADER_VIEW_GROUPS")
        .unwrap_or_else(|_| "1000,100000".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let quick = std::env::var("LEADER_VIEW_QUICK").is_ok_and(|v| v == "1");
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for n in counts {
        let s = setup(n);
        if !quick {
            let mut grp = c.benchmark_group(format!("leader_view/{n}"));
            let mut i = 0u64;
            grp.bench_function("leader", |b| {
                b.iter(|| {
                    i += 1;
                    black_box(s.engine.leader(group_at(i, n)))
                })
            });
            let mut j = 0u64;
            grp.bench_function("group_status", |b| {
                b.iter(|| {
                    j += 1;
                    black_box(s.engine.group_status(group_at(j, n)))
                })
            });
            grp.finish();
        }
        report(&s);
        s.engine.shutdown();
    }
    if !quick {
        c.final_summary();
    }
}
