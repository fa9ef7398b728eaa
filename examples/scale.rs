//! Scale: 3 engines in one process (QUIC on loopback with mutual TLS, or the in-memory
//! transport), many 3-replica groups, each created with its initial configuration AND a
//! designated first leader (`Engine::create_group_led_by`: one election per group, no
//! election storm) at a throttled rate. Reports creation time, the time until every group
//! is quiesced, bytes per idle replica measured by a counting global allocator, idle CPU
//! with everything quiesced (getrusage over a window) and message frames per second
//! (with every group quiesced: none, whatever the group count).
//!
//! ```text
//! cargo run --release --example scale                      # 10,000 groups per node
//! SCALE_GROUPS=100000 cargo run --release --example scale  # 100,000 groups per node
//! ```
//! Other knobs: `SCALE_RATE` (group creations per second, default 10,000),
//! `SCALE_TRANSPORT` (`quic` or `memory`, default quic), `SCALE_IDLE_SECS` (idle window,
//! default 5), `SCALE_WORKERS` (workers per engine, default 1), `SCALE_DIR` (data
//! directory, default under the temporary directory), `SCALE_GC_PER_TICK`
//! (`EngineConfig::gc_replicas_per_tick`, default 8), `SCALE_IDLE_WAKE_TICKS`
//! (`EngineConfig::idle_wake_ticks`, default 10).

#![allow(clippy::unwrap_used)]

#[path = "../benches/support/cpu.rs"]
mod cpu;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla::engine::api::{Engine, EngineConfig, StateMachine, StateMachineFactory};
use flotilla::engine::transport::{MemoryNetwork, QuicTransport, Transport};
use flotilla::raft::NodeId;

/// Counts the bytes live on the heap (and, by allocation size, the live allocations).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Allocation sizes counted exactly up to this; larger ones by power of two.
const EXACT: usize = 4096;
/// Live allocations by size: `[0, EXACT]` exactly, then one slot per power of two above.
static BY_SIZE: [AtomicIsize; EXACT + 1 + 64] = [const { AtomicIsize::new(0) }; EXACT + 1 + 64];

fn size_slot(size: usize) -> usize {
    if size <= EXACT {
        size
    } else {
        EXACT + 1 + (usize::BITS - size.leading_zeros()) as usize
    }
}

fn count(size: usize, n: isize) {
    LIVE.fetch_add(size as isize * n, Ordering::Relaxed);
    BY_SIZE[size_slot(size)].fetch_add(n, Ordering::Relaxed);
}

fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

// SAFETY: every call forwards to the system allocator with the caller's arguments; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (the caller upholds `alloc`'s contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size(), 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        count(layout.size(), -1);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A state machine that only counts.
struct Counter {
    applied: u64,
}

impl StateMachine for Counter {
    fn apply(&mut self, index: u64, _term: u64, _command: Option<&[u8]>) -> Bytes {
        self.applied = index;
        Bytes::new()
    }
    fn applied_index(&self) -> u64 {
        0
    }
    fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self.applied.to_le_bytes())
    }
    fn restore(&mut self, index: u64, _term: u64, _input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.applied = index;
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The live allocations added since `base`, by size, largest share first: where the bytes
/// of an idle replica go (`SCALE_SIZES=1`).
fn print_sizes(base: &[isize], replicas: u64) {
    let now = by_size();
    let mut rows: Vec<(usize, isize, isize)> = now
        .iter()
        .zip(base)
        .enumerate()
        .map(|(slot, (n, b))| {
            let size = if slot <= EXACT { slot } else { 1usize << (slot - EXACT - 2) };
            (size, n - b, (n - b) * size as isize)
        })
        .filter(|r| r.1 != 0)
        .collect();
    rows.sort_by_key(|r| -r.2.abs());
    println!("live allocations added, by size (size, per replica, bytes per replica; sizes above {EXACT}: at least):");
    for (size, n, bytes) in rows.iter().take(24) {
        println!(
            "  {size:>8} B x {:>8.3} = {:>8.1} B",
            *n as f64 / replicas as f64,
            *bytes as f64 / replicas as f64
        );
    }
}

fn quic_transports(ids: &[NodeId]) -> Vec<Box<dyn Transport>> {
    let ca = flotilla_net::ClusterCa::generate().unwrap();
    let addrs: HashMap<NodeId, std::net::SocketAddr> = ids
        .iter()
        .map(|&id| (id, std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()))
        .collect();
    ids.iter()
        .map(|&id| {
            let pem = ca.issue_node(id).unwrap();
            let ident = flotilla_net::NodeIdentity::from_pem(&ca.pem().cert_pem, &pem.cert_pem, &pem.key_pem)
                .unwrap();
            let mut cfg = flotilla_net::NetConfig::new(id);
            cfg.listen = addrs[&id];
            let (ep, inbox) = flotilla_net::Endpoint::start(cfg.validate().unwrap(), &ident).unwrap();
            for (&n, &a) in &addrs {
                if n != id {
                    ep.set_peer_addr(n, a);
                }
            }
            Box::new(QuicTransport::new(ep, inbox, Default::default())) as Box<dyn Transport>
        })
        .collect()
}

fn main() {
    let groups = env("SCALE_GROUPS", 10_000);
    let rate = env("SCALE_RATE", 10_000).max(1);
    let idle_secs = env("SCALE_IDLE_SECS", 5);
    let workers = env("SCALE_WORKERS", 1) as usize;
    let quic = std::env::var("SCALE_TRANSPORT").map_or(true, |t| t != "memory");
    let dir = std::env::var("SCALE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("flotilla-scale-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "scale: 3 engines x {groups} groups ({} transport), {workers} worker(s) each, {cores} cores, \
         creation throttled to {rate} groups/s",
        if quic { "QUIC loopback, mutual TLS" } else { "in-memory" }
    );

    let ids: [NodeId; 3] = [1, 2, 3];
    let transports: Vec<Box<dyn Transport>> = if quic {
        quic_transports(&ids)
    } else {
        let net = MemoryNetwork::new();
        ids.iter().map(|&id| Box::new(net.join(id, 1 << 16)) as Box<dyn Transport>).collect()
    };
    let factory: StateMachineFactory = Arc::new(|_| Box::new(Counter { applied: 0 }));
    let engines: Vec<Engine> = ids
        .iter()
        .zip(transports)
        .map(|(&id, t)| {
            let mut c = EngineConfig::new(id, dir.join(format!("n{id}")));
            c.workers = workers;
            c.wal.cache_bytes = (env("SCALE_WAL_CACHE_MIB", 8) as usize) << 20;
            c.mailbox_capacity = 1 << 20;
            c.gc_replicas_per_tick = env("SCALE_GC_PER_TICK", u64::from(c.gc_replicas_per_tick)) as u32;
            c.idle_wake_ticks = env("SCALE_IDLE_WAKE_TICKS", u64::from(c.idle_wake_ticks)) as u32;
            Engine::open(c, t, factory.clone()).unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = LIVE.load(Ordering::Relaxed);
    let baseline_sizes = by_size();

    // Create: followers first, then the designated leader (node g % 3 + 1), paced.
    let t0 = Instant::now();
    let next = AtomicU64::new(1);
    let threads = 64;
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (engines, next) = (&engines, &next);
            s.spawn(move || loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g > groups {
                    return;
                }
                let due = Duration::from_secs_f64((g - 1) as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
                let leader = g % 3 + 1;
                for &m in ids.iter().filter(|&&m| m != leader).chain(std::iter::once(&leader)) {
                    let mut tries = 0;
                    let engine = &engines[m as usize - 1];
                    while let Err(e) =
                        engine.create_group_led_by(g, &ids, leader, Box::new(Counter { applied: 0 }))
                    {
                        tries += 1;
                        assert!(tries < 1000, "group {g} on node {m}: {e}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
    });
    let created = t0.elapsed();
    println!(
        "created {groups} groups x 3 replicas in {:.2}s ({:.0} groups/s)",
        created.as_secs_f64(),
        groups as f64 / created.as_secs_f64()
    );

    // Until every group is quiesced on every node.
    let quiet_deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let q: Vec<u64> = engines.iter().map(|e| e.metrics().quiesced_groups).collect();
        if q.iter().all(|&x| x == groups) {
            break;
        }
        assert!(Instant::now() < quiet_deadline, "not all quiesced: {q:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let quiesced = t0.elapsed();
    println!(
        "all quiesced {:.2}s after creation started ({:.2}s after it ended)",
        quiesced.as_secs_f64(),
        (quiesced - created).as_secs_f64()
    );

    std::thread::sleep(Duration::from_secs(1));
    let live = LIVE.load(Ordering::Relaxed);
    let per_replica = (live - baseline) as f64 / (3 * groups) as f64;
    println!(
        "heap: {:.1} MiB over the empty engines for {} replicas: {per_replica:.0} bytes per idle replica \
         (goal <= 2048; includes the WAL's per-group index and every runtime map)",
        (live - baseline) as f64 / (1 << 20) as f64,
        3 * groups
    );

    if std::env::var_os("SCALE_SIZES").is_some() {
        print_sizes(&baseline_sizes, 3 * groups);
    }

    // Idle window: CPU, Raft ticks and frames with every group quiesced.
    let m0: Vec<_> = engines.iter().map(|e| e.metrics()).collect();
    let (c0, w0) = (cpu::cpu_secs(), Instant::now());
    std::thread::sleep(Duration::from_secs(idle_secs));
    let (c1, w1) = (cpu::cpu_secs(), Instant::now());
    let m1: Vec<_> = engines.iter().map(|e| e.metrics()).collect();
    let secs = (w1 - w0).as_secs_f64();
    let cpu = (c1 - c0) / secs * 100.0;
    let frames: u64 = m0.iter().zip(&m1).map(|(a, b)| b.net_batches - a.net_batches).sum();
    let ticks: u64 = m0.iter().zip(&m1).map(|(a, b)| b.raft_ticks - a.raft_ticks).sum();
    let wticks: u64 = m0.iter().zip(&m1).map(|(a, b)| b.worker_ticks - a.worker_ticks).sum();
    let probes: u64 = m0.iter().zip(&m1).map(|(a, b)| b.gc_probes_sent - a.gc_probes_sent).sum();
    let wakes: u64 = m0.iter().zip(&m1).map(|(a, b)| b.worker_tick_wakes - a.worker_tick_wakes).sum();
    println!(
        "idle {secs:.1}s: CPU {cpu:.2}% of one core (goal <= 2%), {:.1} frames/s, {ticks} Raft ticks over \
         {wticks} worker ticks in {wakes} clock wake-ups (idle_wake_ticks), {:.0} stale-peer probes/s \
         (paced: gc_replicas_per_tick)",
        frames as f64 / secs,
        probes as f64 / secs
    );
    for e in engines {
        e.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
