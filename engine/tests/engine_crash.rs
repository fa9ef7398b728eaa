//! Process-level crash test: the engine runs in a child process under load and is killed
//! with SIGKILL at random moments; after every kill the next child recovers from the same
//! data directory. At the end every acknowledged proposal is present, in acknowledgement
//! order, and no command was applied twice.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_engine::api::*;
use flotilla_engine::raft::Role;
use flotilla_engine::transport::MemoryNetwork;

const GROUPS: u64 = 4;
const CHILD_ENV: &str = "FLOTILLA_CRASH_CHILD_DIR";

mod list_sm;
use list_sm::{Applied, ListSm};

fn open(dir: &std::path::Path, applied: &Applied) -> Engine {
    let mut c = EngineConfig::new(1, dir);
    c.workers = 2;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = 1 << 20;
    c.wal.max_write_bytes = 256 << 10;
    c.max_uncommitted_bytes = 256 << 10;
    c.max_entry_bytes = 1024;
    c.compact_entries = 300;
    let a = applied.clone();
    let factory: StateMachineFactory = Arc::new(move |group| {
        Box::new(ListSm { group, index: 0, applied: a.clone() }) as Box<dyn StateMachine>
    });
    let net = MemoryNetwork::new();
    Engine::open(c, Box::new(net.join(1, 1024)), factory).unwrap()
}

fn wait_leader(e: &Engine, g: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.group_status(g).is_some_and(|s| s.role == Role::Leader) {
        assert!(Instant::now() < deadline, "group {g}: no leader");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The child: recovers, then proposes distinct values on every group (sequentially per
/// group) and prints `ACK group value` after each acknowledgement, until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let cycle: u64 = std::env::var("FLOTILLA_CRASH_CYCLE").unwrap().parse().unwrap();
    let applied = Applied::default();
    let e = open(std::path::Path::new(&dir), &applied);
    let sm = |g| Box::new(ListSm { group: g, index: 0, applied: applied.clone() }) as Box<dyn StateMachine>;
    for g in 1..=GROUPS {
        e.create_group(g, &[1], sm(g)).unwrap();
    }
    std::thread::scope(|s| {
        for g in 1..=GROUPS {
            let e = &e;
            s.spawn(move || {
                wait_leader(e, g);
                let out = std::io::stdout();
                for i in 0..1_000_000u64 {
                    let v = (cycle << 40) | (g << 32) | i;
                    match e.propose(g, Bytes::copy_from_slice(&v.to_le_bytes())).map(|p| p.wait()) {
                        Ok(Ok(_)) => {
                            let mut o = out.lock();
                            writeln!(o, "ACK {g} {v}").unwrap();
                            o.flush().unwrap();
                        }
                        _ => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            });
        }
    });
}

#[test]
fn sigkill_cycles_lose_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut seed: u64 = 0x5eed_1234;
    let cycles = 12;
    for cycle in 1..=cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, tmp.path())
            .env("FLOTILLA_CRASH_CYCLE", cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut p = line.split_whitespace();
                if p.next() == Some("ACK") {
                    let g: u64 = p.next().unwrap().parse().unwrap();
                    let val: u64 = p.next().unwrap().parse().unwrap();
                    v.push((g, val));
                }
            }
            v
        });
        // Wait for the first acknowledgements, then kill at a random moment.
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(150 + (seed >> 33) % 400);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let got = reader.join().unwrap();
        for (g, v) in got {
            acked.entry(g).or_default().push(v);
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    eprintln!("{cycles} SIGKILL cycles, {total} acknowledged proposals");
    assert!(total > 100, "the children acknowledged too little to prove anything ({total})");
    // Recover in this process and compare.
    let applied = Applied::default();
    let e = open(tmp.path(), &applied);
    for g in 1..=GROUPS {
        wait_leader(&e, g);
        // A barrier so every committed entry is applied.
        e.propose(g, Bytes::copy_from_slice(&u64::MAX.to_le_bytes())).unwrap().wait().unwrap();
    }
    let applied = applied.lock().unwrap();
    for g in 1..=GROUPS {
        let list = applied.get(&g).cloned().unwrap_or_default();
        let mut seen = HashSet::new();
        for v in &list {
            assert!(seen.insert(*v), "group {g}: command {v:#x} applied twice");
        }
        let pos: HashMap<u64, usize> = list.iter().enumerate().map(|(i, v)| (*v, i)).collect();
        let mut last = None;
        for v in acked.get(&g).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(&p) = pos.get(v) else { panic!("group {g}: acknowledged command {v:#x} lost") };
            assert!(last.map_or(true, |l| l < p), "group {g}: acknowledged commands out of order");
            last = Some(p);
        }
    }
    drop(applied);
    e.shutdown();
}
