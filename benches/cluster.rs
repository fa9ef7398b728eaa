//! End to end: 3 engines in one process over loopback QUIC (mutual TLS) with fsync on, 64
//! groups, 16-byte and 256-byte proposals with thousands in flight. Reports committed
//! writes/s and per-proposal p50/p99 latency (propose to completion), and beside them, from
//! the same run: the raw fsync limit of the data directory's disk (pwrite + fdatasync into
//! an already-written file, at the engine's observed batch size), the QUIC loopback rate of
//! two `flotilla-net` endpoints (frames of the engine's observed size, and one-message
//! frames), and the machine's core count.
//!
//! Load: `CLUSTER_CLIENTS` client threads (default 4, at most one per group), each owning
//! an equal share of the groups and keeping `CLUSTER_INFLIGHT / CLUSTER_CLIENTS` proposals
//! outstanding (default 4,096 in all, 64 per group), each sent to the engine whose replica
//! leads the group. A proposal's completion time is taken inside the waker the engine's
//! worker calls when it resolves the proposal, so client scheduling does not inflate the
//! latency.
//!
//! Run: `CARGO_TARGET_DIR=... cargo bench --bench cluster` (criterion's unloaded round
//! trip, then the report). `CLUSTER_QUICK=1` skips criterion. Knobs: `CLUSTER_SECS`
//! (measurement seconds per payload, default 4), `CLUSTER_WORKERS` (workers per engine;
//! default the machine's cores shared by the three engines, `cores / 3` and at least 1,
//! thread-per-core for the cluster as one machine per node would give each node its own;
//! 0: the engine's own default, one per core for each engine, so 3 x cores workers),
//! `CLUSTER_GROUPS` (default 64),
//! `FLOTILLA_WAL_BACKEND` (`io_uring` | `pwrite`; default auto), `CLUSTER_DIRECT=0` and
//! `CLUSTER_INLINE=0` (the engine's `direct_network` and `inline_wal_writes` off), `CLUSTER_INLINE_APPLY=0` (`inline_apply` off), `CLUSTER_DURABLE_ACKS=0` (`acks_when_durable` off), `CLUSTER_DIR` (default `$CARGO_TARGET_DIR/cluster-bench`, on disk), `CLUSTER_LOAD`
//! (`on`, the default: the engines measure per-group load; `off`; `both`: only the
//! load-measuring comparison, see [`load_on_off`]), `CLUSTER_LOAD_ROUNDS` (default 4),
//! `CLUSTER_SWEEP` (extra 16-byte points' in-flight counts, comma-separated; default
//! `CLUSTER_CLIENTS`, `CLUSTER_INFLIGHT`/64 and /4; `0` for none).
//!
//! Pictures (benches/support/plot.rs), written at the end to `target/flotilla-plots/`
//! (see [`plot::out_dir`]): `cluster-latency.svg`, each point's commit latency by
//! percentile beside the raw pwrite + fdatasync latency; `cluster-throughput.svg`, writes/s
//! against in-flight count beside the raw fsync limit at each point's observed batch.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/plot.rs"]
mod plot;

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use crossbeam_channel::{unbounded, Sender};
use flotilla_engine::api::{
    Engine, EngineConfig, ErrorClass, Metrics, ProposeError, StateMachine, StateMachineFactory,
};
use flotilla_engine::raft::{NodeId, Role};
use flotilla_engine::transport::{
    ItemsSink, QuicTransport, SnapshotChunks, Transport, TransportError, TransportEvent, TransportSender,
    WireItem,
};
use flotilla_net::{ClusterCa, Endpoint, Event, Inbox, NetConfig, NodeIdentity, SendError};

const NODES: u64 = 3;
/// WAL bytes per entry beyond its payload (record, entry and batch headers; the WAL bench
/// measured 41 bytes per entry with one entry per group per record: an upper bound).
const WAL_OVERHEAD: usize = 41;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// State machine: counts and hashes what it applies.

struct CountSm {
    applied: u64,
    hash: u64,
}

impl StateMachine for CountSm {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        self.applied = index;
        if let Some(c) = command {
            for b in c.iter().take(8) {
                self.hash = (self.hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        Bytes::new()
    }

    /// A hash of 8 bytes: quick (the engine may apply it on the worker).
    fn is_quick(&self, _command: &[u8]) -> bool {
        true
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.applied.to_le_bytes())?;
        out.write_all(&self.hash.to_le_bytes())
    }

    fn restore(&mut self, index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut b = [0u8; 16];
        input.read_exact(&mut b)?;
        self.applied = index;
        self.hash = u64::from_le_bytes(b[8..].try_into().unwrap());
        Ok(())
    }
}

fn new_sm() -> Box<dyn StateMachine> {
    Box::new(CountSm { applied: 0, hash: 0 })
}

// ---------------------------------------------------------------------------------------
// A transport wrapper that counts what the engine sends.

#[derive(Default)]
struct NetCounters {
    sends: AtomicU64,
    items: AtomicU64,
    /// The endpoint, for its frame and byte counts.
    ep: std::sync::OnceLock<Arc<Endpoint>>,
}

impl NetCounters {
    fn count(&self, items: &[WireItem]) {
        self.sends.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items.len() as u64, Ordering::Relaxed);
    }
}

struct CountingTransport {
    inner: QuicTransport,
    c: Arc<NetCounters>,
}

/// The workers' sending handle (the engine's `direct_network`), counted likewise.
struct CountingSender {
    inner: Arc<dyn TransportSender>,
    c: Arc<NetCounters>,
}

impl TransportSender for CountingSender {
    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.c.count(items);
        self.inner.send(to, tag, items)
    }

    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.c.count(items);
        self.inner.send_control(to, tag, items)
    }
}

impl Transport for CountingTransport {
    fn node_id(&self) -> NodeId {
        self.inner.node_id()
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.c.count(items);
        self.inner.send(to, tag, items)
    }

    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.c.count(items);
        self.inner.send_control(to, tag, items)
    }

    fn sender(&self) -> Option<Arc<dyn TransportSender>> {
        let inner = self.inner.sender()?;
        Some(Arc::new(CountingSender { inner, c: self.c.clone() }))
    }

    fn set_items_sink(&mut self, sink: ItemsSink) -> bool {
        self.inner.set_items_sink(sink)
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        self.inner.send_snapshot(to, tag, group, chunks)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        self.inner.recv_timeout(timeout)
    }

    fn event_signal(&self) -> Option<crossbeam_channel::Receiver<()>> {
        self.inner.event_signal()
    }
}

// ---------------------------------------------------------------------------------------
// The cluster

fn identity(ca: &ClusterCa, id: NodeId) -> NodeIdentity {
    let pem = ca.issue_node(id).unwrap();
    NodeIdentity::from_pem(&ca.pem().cert_pem, &pem.cert_pem, &pem.key_pem).unwrap()
}

fn free_addr() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

struct Cluster {
    engines: Vec<Engine>,
    net: Vec<Arc<NetCounters>>,
    groups: Vec<u64>,
    /// Node hosting each group's leader, as last learned (index: group id).
    leaders: Vec<AtomicU64>,
}

impl Cluster {
    fn start(dir: &Path, groups: u64, workers: usize, measure_load: bool) -> Cluster {
        let ca = ClusterCa::generate().unwrap();
        let addrs: HashMap<NodeId, _> = (1..=NODES).map(|id| (id, free_addr())).collect();
        let mut engines = Vec::new();
        let mut net = Vec::new();
        for id in 1..=NODES {
            let mut cfg = NetConfig::new(id);
            cfg.listen = addrs[&id];
            let (ep, inbox) = Endpoint::start(cfg.validate().unwrap(), &identity(&ca, id)).unwrap();
            for (&n, &a) in &addrs {
                if n != id {
                    ep.set_peer_addr(n, a);
                }
            }
            let c = Arc::new(NetCounters::default());
            let inner = QuicTransport::new(ep, inbox, Default::default());
            let _ = c.ep.set(inner.shared_endpoint());
            let t = CountingTransport { inner, c: c.clone() };
            let mut ec = EngineConfig::new(id, dir.join(format!("n{id}")));
            ec.workers = workers;
            ec.measure_load = measure_load;
            ec.wal.backend = flotilla_wal::BackendChoice::from_env();
            ec.direct_network = std::env::var("CLUSTER_DIRECT").map_or(true, |v| v != "0");
            ec.inline_wal_writes = std::env::var("CLUSTER_INLINE").map_or(true, |v| v != "0");
            ec.inline_apply = std::env::var("CLUSTER_INLINE_APPLY").map_or(true, |v| v != "0");
            ec.acks_when_durable = std::env::var("CLUSTER_DURABLE_ACKS").map_or(true, |v| v != "0");
            let factory: StateMachineFactory = Arc::new(|_| new_sm());
            engines.push(Engine::open(ec, Box::new(t), factory).unwrap());
            net.push(c);
        }
        let groups: Vec<u64> = (1..=groups).collect();
        let members: Vec<NodeId> = (1..=NODES).collect();
        for &g in &groups {
            for e in &engines {
                e.create_group(g, &members, new_sm()).unwrap();
            }
        }
        let leaders = (0..=groups.len()).map(|_| AtomicU64::new(0)).collect();
        let c = Cluster { engines, net, groups, leaders };
        c.wait_leaders(Duration::from_secs(30));
        c.balance(Duration::from_secs(10));
        c
    }

    fn engine(&self, node: NodeId) -> &Engine {
        &self.engines[node as usize - 1]
    }

    fn find_leader(&self, g: u64) -> Option<NodeId> {
        (1..=NODES).find(|&n| self.engine(n).group_status(g).is_some_and(|s| s.role == Role::Leader))
    }

    fn wait_leaders(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for &g in &self.groups {
            loop {
                if let Some(l) = self.find_leader(g) {
                    self.leaders[g as usize].store(l, Ordering::Relaxed);
                    break;
                }
                assert!(Instant::now() < deadline, "group {g}: no leader");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Spreads leadership evenly (group g led by node g % 3 + 1), best effort.
    fn balance(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut moved = 0;
            for &g in &self.groups {
                let want = g % NODES + 1;
                match self.find_leader(g) {
                    Some(l) if l == want => {}
                    Some(l) => {
                        let _ = self.engine(l).transfer_leader(g, want);
                        moved += 1;
                    }
                    None => moved += 1,
                }
            }
            if moved == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_leaders(Duration::from_secs(30));
    }

    fn leader_counts(&self) -> Vec<usize> {
        (1..=NODES)
            .map(|n| {
                self.groups.iter().filter(|&&g| self.leaders[g as usize].load(Ordering::Relaxed) == n).count()
            })
            .collect()
    }

    fn metrics(&self) -> Vec<Metrics> {
        self.engines.iter().map(|e| e.metrics()).collect()
    }

    /// Every node's WAL sync latencies so far, then its WAL compaction pass durations,
    /// bucket by bucket, summed over the nodes.
    fn wal_syncs(&self) -> (Vec<u64>, Vec<u64>) {
        let mut syncs = vec![0u64; flotilla_wal::LATENCY_BUCKETS];
        let mut passes = vec![0u64; flotilla_wal::LATENCY_BUCKETS];
        for e in &self.engines {
            let h = e.latency_histograms();
            for (s, b) in syncs.iter_mut().zip(h.wal_sync.buckets) {
                *s += b;
            }
            for (s, b) in passes.iter_mut().zip(h.wal_compaction.buckets) {
                *s += b;
            }
        }
        (syncs, passes)
    }

    fn net_totals(&self) -> [u64; 4] {
        let mut t = [0; 4];
        for c in &self.net {
            t[0] += c.sends.load(Ordering::Relaxed);
            t[1] += c.items.load(Ordering::Relaxed);
            let s = c.ep.get().map(|e| e.stats()).unwrap_or_default();
            t[2] += s.frames_sent;
            t[3] += s.bytes_sent;
        }
        t
    }

    /// Each group's highest term over the nodes (index: position in `groups`).
    fn terms(&self) -> Vec<u64> {
        self.groups
            .iter()
            .map(|&g| {
                (1..=NODES).filter_map(|n| self.engine(n).group_status(g).map(|s| s.term)).max().unwrap_or(0)
            })
            .collect()
    }

    /// Sum over groups of the applied index on `node`.
    fn applied_sum(&self, node: NodeId) -> u64 {
        self.groups.iter().map(|&g| self.engine(node).group_status(g).map_or(0, |s| s.applied)).sum()
    }

    /// Waits until every node applied the same entries; returns that sum of applied indexes.
    fn wait_replicated(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let sums: Vec<u64> = (1..=NODES).map(|n| self.applied_sum(n)).collect();
            if sums.iter().all(|&x| x == sums[0]) {
                return sums[0];
            }
            assert!(Instant::now() < deadline, "replicas did not converge: applied sums {sums:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(self) {
        for e in self.engines {
            e.shutdown();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Load

/// The waker of one client slot: records when the worker resolved the proposal.
struct SlotWake {
    slot: usize,
    tx: Sender<(usize, Instant)>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.tx.send((self.slot, Instant::now()));
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Default)]
struct ClientResult {
    done: u64,
    /// Proposals applied in every phase (for the cross-check against applied indexes).
    ok_total: u64,
    lat_us: Vec<u32>,
    errors: HashMap<String, u64>,
    busy: u64,
    redirects: u64,
    left_outstanding: usize,
}

type Pend = flotilla_engine::api::Proposal;

fn client(c: &Cluster, groups: &[u64], window: usize, payload: usize, phase: &AtomicU8) -> ClientResult {
    let (tx, rx) = unbounded::<(usize, Instant)>();
    let wakers: Vec<Waker> =
        (0..window).map(|slot| Waker::from(Arc::new(SlotWake { slot, tx: tx.clone() }))).collect();
    let mut slots: Vec<Option<(Pend, Instant)>> = (0..window).map(|_| None).collect();
    let mut free: Vec<usize> = (0..window).rev().collect();
    let mut outstanding = 0usize;
    let mut next_group = 0usize;
    let mut seq = 0u64;
    let mut r = ClientResult::default();
    let mut data = vec![0u8; payload];
    let finish =
        |r: &mut ClientResult, res: Result<Bytes, ProposeError>, start: Instant, at: Instant, ph: u8| {
            match res {
                Ok(_) => {
                    r.ok_total += 1;
                    if ph == MEASURE {
                        r.done += 1;
                        r.lat_us.push(at.duration_since(start).as_micros().min(u32::MAX as u128) as u32);
                    }
                }
                Err(e) => *r.errors.entry(format!("{e:?}")).or_default() += 1,
            }
        };
    loop {
        let ph = phase.load(Ordering::Relaxed);
        if ph == STOP {
            break;
        }
        // Refill free slots.
        let mut stalled = false;
        while let Some(slot) = free.pop() {
            let g = groups[next_group % groups.len()];
            let leader = c.leaders[g as usize].load(Ordering::Relaxed);
            seq += 1;
            data[..8.min(payload)].copy_from_slice(&seq.to_le_bytes()[..8.min(payload)]);
            let start = Instant::now();
            match c.engine(leader).propose(g, Bytes::copy_from_slice(&data)) {
                Ok(mut p) => {
                    next_group += 1;
                    let mut cx = Context::from_waker(&wakers[slot]);
                    match Pin::new(&mut p).poll(&mut cx) {
                        Poll::Ready(res) => {
                            finish(&mut r, res, start, Instant::now(), ph);
                            free.push(slot);
                        }
                        Poll::Pending => {
                            slots[slot] = Some((p, start));
                            outstanding += 1;
                        }
                    }
                }
                Err(e) => {
                    free.push(slot);
                    match e {
                        ProposeError::NotLeader { leader_hint } => {
                            r.redirects += 1;
                            let l = leader_hint.or_else(|| c.find_leader(g)).unwrap_or(leader);
                            c.leaders[g as usize].store(l, Ordering::Relaxed);
                            next_group += 1;
                        }
                        ProposeError::Busy(_) => r.busy += 1,
                        e if matches!(e.class(), ErrorClass::Fatal | ErrorClass::Invalid) => {
                            panic!("group {g}: {e}")
                        }
                        e => *r.errors.entry(format!("{e:?}")).or_default() += 1,
                    }
                    stalled = true;
                    break;
                }
            }
        }
        if stalled && outstanding == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        // Collect completions.
        let first = if stalled {
            rx.recv_timeout(Duration::from_micros(500)).ok()
        } else {
            rx.recv_timeout(Duration::from_millis(50)).ok()
        };
        for (slot, at) in first.into_iter().chain(rx.try_iter()) {
            let Some((mut p, start)) = slots[slot].take() else { continue };
            let mut cx = Context::from_waker(&wakers[slot]);
            match Pin::new(&mut p).poll(&mut cx) {
                Poll::Ready(res) => {
                    outstanding -= 1;
                    finish(&mut r, res, start, at, phase.load(Ordering::Relaxed));
                    free.push(slot);
                }
                Poll::Pending => slots[slot] = Some((p, start)),
            }
        }
    }
    // Drain what is still in flight (not counted), so the next measurement starts clean.
    let deadline = Instant::now() + Duration::from_secs(15);
    for s in slots.iter_mut() {
        if let Some((p, _)) = s.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            if p.wait_timeout(left).is_err() {
                r.left_outstanding += 1;
            }
        }
    }
    r
}

struct LoadResult {
    payload: usize,
    inflight: usize,
    secs: f64,
    writes: u64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    max_us: u32,
    /// Every measured proposal's latency, ascending (for the latency picture).
    lat_us: Vec<u32>,
    /// Entries written per WAL batch submitted by a worker (mean over nodes).
    entries_per_batch: f64,
    /// Group writes per WAL batch.
    groups_per_batch: f64,
    wal_batches_per_s: f64,
    frames_per_s: f64,
    items_per_frame: f64,
    bytes_per_frame: f64,
    /// CPU time (user + system) of the whole process during the measurement, per committed
    /// write: the 3 engines and the client threads, summed over all threads. Steadier than
    /// writes/s on a shared machine, where the cores' share this process gets varies.
    cpu_us_per_write: f64,
    busy: u64,
    redirects: u64,
    errors: HashMap<String, u64>,
    dropped_msgs: u64,
    left_outstanding: usize,
    ok_total: u64,
    /// Leaderships won during the measurement, over all nodes (`Metrics::leaders_elected`).
    leaders_elected: u64,
    /// Campaigns (PreVote rounds included) started during it (`Metrics::elections`).
    elections: u64,
    /// Groups whose term changed between the start of the warm-up and the end of the drain.
    term_changes: u64,
    /// The nodes' WAL syncs during the measurement: how many, and the power-of-two upper
    /// bounds (ms) under which 99%, 99.9% and all of them ended. A commit waits for a
    /// quorum's syncs, so their tail is a floor under the commit tail when the disk
    /// stalls for every node at once.
    wal_syncs: u64,
    sync_p99_ms: f64,
    sync_p999_ms: f64,
    sync_max_ms: f64,
    /// The nodes' WAL compaction passes during the measurement (the writer makes no
    /// group-commit write while one runs), the upper bound (ms) under which all of them
    /// ended, and the bytes they copied.
    compaction_passes: u64,
    compaction_max_ms: f64,
    compaction_bytes: u64,
    /// WAL segments the nodes made during the measurement: zero-filled new ones, recycled
    /// ones.
    segments_created: u64,
    segments_recycled: u64,
    /// WAL batches the nodes' workers wrote, and of those the ones a worker wrote and
    /// synced on its own thread (`inline_wal_writes`); entries applied, and the batches
    /// applied on a worker (`inline_apply`).
    wal_batches: u64,
    wal_inline: u64,
    applied_entries: u64,
    applied_inline: u64,
    /// Append acknowledgements sent by the thread that made their write durable
    /// (`acks_when_durable`).
    acks_when_durable: u64,
}

/// The upper bound (ms) of the power-of-two bucket holding quantile `q` of `buckets`.
fn bucket_quantile_ms(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, b) in buckets.iter().enumerate() {
        seen += b;
        if seen >= want {
            return flotilla_wal::LatencySnapshot::upper_bound_nanos(i) as f64 / 1e6;
        }
    }
    0.0
}

impl LoadResult {
    /// `NotLeader` answers: refusals at propose time (`redirects`) and proposals that
    /// ended `NotLeader` (their leader stepped down before committing them).
    fn not_leader(&self) -> u64 {
        self.redirects
            + self.errors.iter().filter(|(k, _)| k.starts_with("NotLeader")).map(|(_, v)| v).sum::<u64>()
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The sum over the nodes of how much a counter of their `Metrics` grew from `m0` to `m1`.
fn delta(m0: &[Metrics], m1: &[Metrics], f: fn(&Metrics) -> u64) -> u64 {
    m0.iter().zip(m1).map(|(a, b)| f(b) - f(a)).sum()
}

fn run_load(c: &Cluster, payload: usize, clients: usize, inflight: usize, secs: f64) -> LoadResult {
    let phase = AtomicU8::new(WARMUP);
    let window = (inflight / clients).max(1);
    let shares: Vec<Vec<u64>> = (0..clients)
        .map(|t| c.groups.iter().copied().filter(|g| (*g as usize) % clients == t).collect())
        .collect();
    let terms0 = c.terms();
    let cpu = std::cell::Cell::new(0.0);
    let (results, m0, m1, n0, n1, elapsed, (syncs, passes)) = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|share| {
                let phase = &phase;
                s.spawn(move || client(c, share, window, payload, phase))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let m0 = c.metrics();
        let s0 = c.wal_syncs();
        let n0 = c.net_totals();
        let t0 = Instant::now();
        let cpu0 = cpu::cpu_secs();
        phase.store(MEASURE, Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(secs));
        phase.store(STOP, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        cpu.set(cpu::cpu_secs() - cpu0);
        let m1 = c.metrics();
        let s1 = c.wal_syncs();
        std::thread::sleep(Duration::from_millis(30));
        let n1 = c.net_totals();
        let results: Vec<ClientResult> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let syncs: Vec<u64> = s0.0.iter().zip(&s1.0).map(|(a, b)| b - a).collect();
        let passes: Vec<u64> = s0.1.iter().zip(&s1.1).map(|(a, b)| b - a).collect();
        (results, m0, m1, n0, n1, elapsed, (syncs, passes))
    });
    let mut lat: Vec<u32> = Vec::new();
    let mut r = LoadResult {
        payload,
        inflight: window * clients,
        secs: elapsed,
        writes: 0,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        max_us: 0,
        lat_us: Vec::new(),
        entries_per_batch: 0.0,
        groups_per_batch: 0.0,
        wal_batches_per_s: 0.0,
        frames_per_s: 0.0,
        items_per_frame: 0.0,
        bytes_per_frame: 0.0,
        cpu_us_per_write: 0.0,
        busy: 0,
        redirects: 0,
        errors: HashMap::new(),
        dropped_msgs: 0,
        left_outstanding: 0,
        ok_total: 0,
        leaders_elected: 0,
        elections: 0,
        term_changes: 0,
        wal_syncs: syncs.iter().sum(),
        sync_p99_ms: bucket_quantile_ms(&syncs, 0.99),
        sync_p999_ms: bucket_quantile_ms(&syncs, 0.999),
        sync_max_ms: bucket_quantile_ms(&syncs, 1.0),
        compaction_passes: passes.iter().sum(),
        compaction_max_ms: bucket_quantile_ms(&passes, 1.0),
        compaction_bytes: delta(&m0, &m1, |m| m.wal_compaction_bytes_rewritten),
        segments_created: delta(&m0, &m1, |m| m.wal_segments_created),
        segments_recycled: delta(&m0, &m1, |m| m.wal_segments_recycled),
        wal_batches: delta(&m0, &m1, |m| m.wal_batches),
        wal_inline: delta(&m0, &m1, |m| m.wal_inline_writes),
        applied_entries: delta(&m0, &m1, |m| m.applied_entries),
        applied_inline: delta(&m0, &m1, |m| m.applied_inline),
        acks_when_durable: delta(&m0, &m1, |m| m.acks_sent_when_durable),
    };
    r.term_changes = c.terms().iter().zip(&terms0).filter(|(a, b)| a != b).count() as u64;
    for cr in results {
        r.writes += cr.done;
        r.ok_total += cr.ok_total;
        lat.extend(cr.lat_us);
        r.busy += cr.busy;
        r.redirects += cr.redirects;
        r.left_outstanding += cr.left_outstanding;
        for (k, v) in cr.errors {
            *r.errors.entry(k).or_default() += v;
        }
    }
    lat.sort_unstable();
    r.p50_us = pct(&lat, 0.50);
    r.p99_us = pct(&lat, 0.99);
    r.p999_us = pct(&lat, 0.999);
    r.max_us = lat.last().copied().unwrap_or(0);
    r.lat_us = lat;
    let batches: u64 = delta(&m0, &m1, |m| m.wal_batches);
    let bgroups: u64 = delta(&m0, &m1, |m| m.wal_batch_groups);
    let applied: u64 = delta(&m0, &m1, |m| m.applied_entries);
    r.dropped_msgs = delta(&m0, &m1, |m| m.messages_dropped);
    r.leaders_elected = delta(&m0, &m1, |m| m.leaders_elected);
    r.elections = delta(&m0, &m1, |m| m.elections);
    // Every node writes every entry once (as leader or follower): entries written across
    // the nodes ~= entries applied across them.
    r.entries_per_batch = applied as f64 / batches.max(1) as f64;
    r.groups_per_batch = bgroups as f64 / batches.max(1) as f64;
    r.wal_batches_per_s = batches as f64 / NODES as f64 / elapsed;
    let frames = n1[2] - n0[2];
    r.frames_per_s = frames as f64 / elapsed;
    r.items_per_frame = (n1[1] - n0[1]) as f64 / (n1[0] - n0[0]).max(1) as f64;
    r.bytes_per_frame = (n1[3] - n0[3]) as f64 / frames.max(1) as f64;
    r.cpu_us_per_write = cpu.get() * 1e6 / r.writes.max(1) as f64;
    r
}

// ---------------------------------------------------------------------------------------
// Raw fsync limit

/// `streams` threads, each doing pwrite(`batch` bytes) + fdatasync into its own
/// already-written file in `dir`, for `secs`. Returns fsyncs/s per stream and every
/// pwrite + fdatasync's latency in microseconds, ascending. The files stay for the next
/// call (written once; `dir` is removed at the end of the run).
fn raw_fsync(dir: &Path, batch: usize, streams: usize, secs: f64) -> (f64, Vec<u32>) {
    const FILE: usize = 64 << 20;
    let files: Vec<PathBuf> = (0..streams).map(|i| dir.join(format!("raw-fsync-{i}"))).collect();
    for p in &files {
        if std::fs::metadata(p).is_ok_and(|m| m.len() == FILE as u64) {
            continue;
        }
        let f = File::create(p).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for i in 0..FILE / chunk.len() {
            f.write_all_at(&chunk, (i * chunk.len()) as u64).unwrap();
        }
        f.sync_all().unwrap();
    }
    let buf: Vec<u8> = (0..batch).map(|i| (i * 31 % 251) as u8).collect();
    let per_stream: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = files
            .iter()
            .map(|p| {
                let buf = &buf;
                s.spawn(move || {
                    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                    let t0 = Instant::now();
                    let mut off = 0usize;
                    let mut lat = Vec::new();
                    while t0.elapsed().as_secs_f64() < secs {
                        if off + buf.len() > FILE {
                            off = 0;
                        }
                        let t = Instant::now();
                        f.write_all_at(buf, off as u64).unwrap();
                        f.sync_data().unwrap();
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        off += buf.len().next_multiple_of(4096);
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut lat: Vec<u32> = per_stream.into_iter().flatten().collect();
    lat.sort_unstable();
    (lat.len() as f64 / streams as f64 / secs, lat)
}

// ---------------------------------------------------------------------------------------
// QUIC loopback rate

struct NetPair {
    a: Endpoint,
    b_inbox: Option<Inbox>,
    _b: Endpoint,
    _a_inbox: Inbox,
}

fn net_pair() -> NetPair {
    let ca = ClusterCa::generate().unwrap();
    let (aa, ba) = (free_addr(), free_addr());
    let mut ca_cfg = NetConfig::new(11);
    ca_cfg.listen = aa;
    let mut cb_cfg = NetConfig::new(12);
    cb_cfg.listen = ba;
    let (a, a_inbox) = Endpoint::start(ca_cfg.validate().unwrap(), &identity(&ca, 11)).unwrap();
    let (b, b_inbox) = Endpoint::start(cb_cfg.validate().unwrap(), &identity(&ca, 12)).unwrap();
    a.set_peer_addr(12, ba);
    b.set_peer_addr(11, aa);
    NetPair { a, b_inbox: Some(b_inbox), _b: b, _a_inbox: a_inbox }
}

/// Frames/s of `frame` bytes from endpoint 11 to 12 over `secs` (counted at the receiver).
fn quic_rate(pair: &mut NetPair, frame: usize, secs: f64) -> f64 {
    let mut inbox = pair.b_inbox.take().unwrap();
    let payload = Bytes::from(vec![0xa5u8; frame.max(1)]);
    let stop = AtomicBool::new(false);
    let (count, elapsed, inbox) = std::thread::scope(|s| {
        let stop = &stop;
        let rx = s.spawn(move || {
            let mut n = 0u64;
            let mut t0 = None;
            let mut t_end = Instant::now();
            loop {
                match inbox.recv_timeout(Duration::from_millis(20)) {
                    Ok(Event::Frame { .. }) => {
                        let now = Instant::now();
                        let start = *t0.get_or_insert(now);
                        if now.duration_since(start).as_secs_f64() < secs {
                            n += 1;
                            t_end = now;
                        } else {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                }
            }
            let el = t0.map_or(secs, |t: Instant| t_end.duration_since(t).as_secs_f64());
            (n, el, inbox)
        });
        let deadline = Instant::now() + Duration::from_secs_f64(secs + 10.0);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match pair.a.send(12, 0, payload.clone()) {
                Ok(()) => {}
                Err(SendError::QueueFull { .. }) => std::thread::sleep(Duration::from_micros(50)),
                Err(e) => panic!("{e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        rx.join().unwrap()
    });
    // Let the queue drain before the next measurement.
    let mut inbox = inbox;
    while inbox.recv_timeout(Duration::from_millis(200)).is_ok() {}
    pair.b_inbox = Some(inbox);
    count as f64 / elapsed.max(1e-9)
}

// ---------------------------------------------------------------------------------------
// Main

fn data_root() -> PathBuf {
    if let Ok(d) = std::env::var("CLUSTER_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("cluster-bench")
}

fn criterion_round_trip(c: &Cluster) {
    let mut cr = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let g = c.groups[0];
    let mut group = cr.benchmark_group("cluster");
    group.bench_function("round_trip_16B_one_in_flight", |b| {
        b.iter(|| loop {
            let l = c.leaders[g as usize].load(Ordering::Relaxed);
            match c.engine(l).propose(g, Bytes::from_static(&[7u8; 16])) {
                Ok(p) => {
                    if p.wait().is_ok() {
                        break;
                    }
                }
                Err(ProposeError::NotLeader { .. }) => {
                    c.leaders[g as usize].store(c.find_leader(g).unwrap_or(l), Ordering::Relaxed)
                }
                Err(_) => std::thread::sleep(Duration::from_micros(100)),
            }
        })
    });
    group.finish();
    // Writes criterion's HTML index (target/criterion/report/index.html).
    cr.final_summary();
}

fn main() {
    let t_start = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let secs: f64 = env_or("CLUSTER_SECS", 4.0);
    let inflight: usize = env_or("CLUSTER_INFLIGHT", 4096);
    // Three engines share the machine's cores: thread-per-core across the cluster.
    let workers: usize = env_or("CLUSTER_WORKERS", (cores / 3).max(1));
    let ngroups: u64 = env_or("CLUSTER_GROUPS", 64).max(1);
    // Each client owns a share of the groups: no more clients than groups.
    let clients: usize = env_or("CLUSTER_CLIENTS", 4).clamp(1, ngroups as usize);
    let quick = std::env::var("CLUSTER_QUICK").is_ok_and(|v| v != "0");
    let root = data_root();
    std::fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::Builder::new().prefix("run-").tempdir_in(&root).unwrap();

    let t_setup = Instant::now();
    if std::env::var("CLUSTER_LOAD").is_ok_and(|v| v == "both") {
        return load_on_off(tmp.path(), ngroups, workers, clients, inflight, secs);
    }
    let measure = std::env::var("CLUSTER_LOAD").map_or(true, |v| v != "off");
    let cluster = Cluster::start(tmp.path(), ngroups, workers, measure);
    let setup_s = t_setup.elapsed().as_secs_f64();
    let leaders = cluster.leader_counts();

    if !quick {
        criterion_round_trip(&cluster);
    }

    let mut loads = Vec::new();
    let mut runs = vec![(16usize, inflight), (256, inflight), (16, (inflight / 16).max(clients))];
    // More 16-byte points for the throughput picture (after the table's three).
    let sweep: Vec<usize> = match std::env::var("CLUSTER_SWEEP") {
        Ok(v) => v.split(',').filter_map(|x| x.trim().parse().ok()).filter(|&x| x > 0).collect(),
        Err(_) => vec![clients, inflight / 64, inflight / 4],
    };
    for n in sweep {
        let n = n.max(clients);
        if !runs.contains(&(16, n)) {
            runs.push((16, n));
        }
    }
    for (payload, n) in runs {
        let before = cluster.wait_replicated(Duration::from_secs(20));
        let r = run_load(&cluster, payload, clients, n, secs);
        let after = cluster.wait_replicated(Duration::from_secs(20));
        // Every acknowledged proposal is an applied entry on all three nodes (the rest of
        // the difference: leaders' no-ops and proposals resolved after the drain timeout).
        assert!(after - before >= r.ok_total, "applied {} < acknowledged {}", after - before, r.ok_total);
        eprintln!(
            "  {payload} B x {n}: {:.0} writes/s, p99.9 {:.1} ms, {} NotLeader, {} leaderships won, {} terms changed; applied on all 3 nodes: {} entries for {} acknowledged",
            r.writes as f64 / r.secs,
            r.p999_us as f64 / 1e3,
            r.not_leader(),
            r.leaders_elected,
            r.term_changes,
            after - before,
            r.ok_total
        );
        loads.push(r);
    }
    let leaders_after = {
        cluster.wait_leaders(Duration::from_secs(10));
        cluster.leader_counts()
    };
    cluster.shutdown();

    // Raw references, measured after the cluster stopped (same disk, same process).
    let mut fsync_rows = Vec::new();
    let mut fsync_lat = Vec::new();
    for r in &loads[..2] {
        let (entries, batch) = batch_of(r);
        let (one, one_lat) = raw_fsync(tmp.path(), batch, 1, 2.0);
        let (three, three_lat) = raw_fsync(tmp.path(), batch, NODES as usize, 2.0);
        fsync_rows.push((r.payload, entries, batch, one, three));
        fsync_lat.push((one_lat, three_lat));
    }
    // The fsync limit at every 16-byte point's batch (three streams, as the nodes do), for
    // the throughput picture; the table's first row already has it.
    let mut limit16 = Vec::new();
    for r in loads.iter().filter(|r| r.payload == 16) {
        let (entries, batch) = batch_of(r);
        let per_stream = if r.inflight == loads[0].inflight {
            fsync_rows[0].4
        } else {
            raw_fsync(tmp.path(), batch, NODES as usize, 1.0).0
        };
        limit16.push((r.inflight as f64, per_stream * entries));
    }
    let mut pair = net_pair();
    // Wait for the connection (first frames may queue behind the handshake).
    let _ = quic_rate(&mut pair, 64, 0.3);
    let mut net_rows = Vec::new();
    for r in &loads[..2] {
        let frame = r.bytes_per_frame.max(1.0) as usize;
        let big = quic_rate(&mut pair, frame, 2.0);
        let small_size = r.payload + 64;
        let small = quic_rate(&mut pair, small_size, 2.0);
        net_rows.push((r.payload, frame, big, small_size, small));
    }

    // Report
    println!();
    println!("== Cluster end to end: 3 engines, loopback QUIC (mTLS), fsync on ==");
    println!(
        "cores (available_parallelism): {cores}; groups: {ngroups}; workers/engine: {}; \
         client threads: {clients}; setup {setup_s:.1} s",
        if workers == 0 { cores } else { workers }
    );
    println!("leaders per node at start: {leaders:?}; after: {leaders_after:?}");
    println!(
        "| payload | in flight | writes/s | p50 ms | p99 ms | p99.9 ms | max ms | entries/WAL batch | \
         WAL batches/s/node | frames/s (all) | items/frame | bytes/frame | CPU us/write |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &loads {
        println!(
            "| {} B | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} |",
            r.payload,
            r.inflight,
            r.writes as f64 / r.secs,
            r.p50_us as f64 / 1e3,
            r.p99_us as f64 / 1e3,
            r.p999_us as f64 / 1e3,
            r.max_us as f64 / 1e3,
            r.entries_per_batch,
            r.wal_batches_per_s,
            r.frames_per_s,
            r.items_per_frame,
            r.bytes_per_frame,
            r.cpu_us_per_write,
        );
    }
    for r in &loads {
        println!(
            "  {} B x {}: NotLeader answers {}, leaderships won {}, campaigns {}, groups whose term changed {}; \
             busy refusals {}, redirects {}, errors {:?}, messages dropped {}, groups/WAL batch {:.1}, \
             left outstanding {}; WAL syncs {} (all nodes), p99 < {:.1} ms, p99.9 < {:.1} ms, max < {:.1} ms; \
             WAL compaction passes {}, longest < {:.1} ms, {:.1} MB copied; WAL segments zero-filled {}, recycled {}; \
             worker WAL batches {}, written inline {}; entries applied {}, batches applied on a worker {}; \
             acknowledgements sent when durable {}",
            r.payload,
            r.inflight,
            r.not_leader(),
            r.leaders_elected,
            r.elections,
            r.term_changes,
            r.busy,
            r.redirects,
            r.errors,
            r.dropped_msgs,
            r.groups_per_batch,
            r.left_outstanding,
            r.wal_syncs,
            r.sync_p99_ms,
            r.sync_p999_ms,
            r.sync_max_ms,
            r.compaction_passes,
            r.compaction_max_ms,
            r.compaction_bytes as f64 / 1e6,
            r.segments_created,
            r.segments_recycled,
            r.wal_batches,
            r.wal_inline,
            r.applied_entries,
            r.applied_inline,
            r.acks_when_durable
        );
    }
    println!();
    println!("raw fsync limit (pwrite + fdatasync, already-written file, same dir):");
    println!(
        "| payload | entries/batch | batch bytes | fsyncs/s (1 stream) | implied writes/s | \
         fsyncs/s per stream (3 streams) | implied writes/s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (p, e, b, one, three) in &fsync_rows {
        println!("| {p} B | {e:.1} | {b} | {one:.0} | {:.0} | {three:.0} | {:.0} |", one * e, three * e);
    }
    // Issue 16 point 5: commit p50 against the fdatasync p50 of the same run (pwrite +
    // fdatasync of the first point's observed batch, one stream).
    let median_ms = |v: &[u32]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).map_or(0.0, |&u| f64::from(u) / 1e3)
    };
    let fsync_p50 = median_ms(&fsync_lat[0].0);
    let commit_p50 = loads[0].p50_us as f64 / 1e3;
    println!(
        "fdatasync p50 at the {} B x {} point's batch: {fsync_p50:.3} ms (one stream), {:.3} ms (three); \
         that point's commit p50 {commit_p50:.3} ms = fdatasync p50 {:+.3} ms",
        loads[0].payload,
        loads[0].inflight,
        median_ms(&fsync_lat[0].1),
        commit_p50 - fsync_p50
    );
    println!();
    println!("QUIC loopback (two flotilla-net endpoints, one direction, one runtime thread each):");
    println!("| payload | engine-size frame | frames/s | MB/s | one-message frame | frames/s | MB/s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (p, f, big, s, small) in &net_rows {
        println!(
            "| {p} B | {f} B | {big:.0} | {:.1} | {s} B | {small:.0} | {:.1} |",
            big * *f as f64 / 1e6,
            small * *s as f64 / 1e6
        );
    }
    let w16 = loads[0].writes as f64 / loads[0].secs;
    println!();
    println!(
        "verdict (16 B): {w16:.0} writes/s on {cores} cores; bar 100,000: {}; goal 300,000: {}",
        if w16 >= 100_000.0 { "met" } else { "NOT met" },
        if w16 >= 300_000.0 { "met" } else { "NOT met" }
    );
    let limits: Vec<String> = limit16.iter().map(|(n, w)| format!("{n:.0} in flight: {w:.0}")).collect();
    println!(
        "raw fsync limit, 3 streams, at each 16 B point's batch (implied writes/s): {}",
        limits.join("; ")
    );
    write_plots(&loads, &fsync_lat[0], &limit16);
    println!("total bench time {:.1} s", t_start.elapsed().as_secs_f64());
    drop(pair);
}

/// The two pictures (see the module comment), from the points measured above: every
/// point's latency beside the raw pwrite + fdatasync latency at the first point's batch
/// (one stream and three), and writes/s per payload against in-flight count beside the
/// three-stream fsync limit at each 16-byte point's batch.
fn write_plots(loads: &[LoadResult], fsync_lat: &(Vec<u32>, Vec<u32>), limit16: &[(f64, f64)]) {
    let dir = match plot::out_dir() {
        Ok(d) => d,
        Err(e) => return eprintln!("plots not written: {e}"),
    };
    let names: Vec<String> =
        loads.iter().map(|r| format!("flotilla {} B x {}", r.payload, r.inflight)).collect();
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by_key(|&i| (loads[i].payload, loads[i].inflight));
    let mut lat: Vec<plot::LatencySeries> = order
        .iter()
        .map(|&i| plot::LatencySeries { name: &names[i], sorted_us: &loads[i].lat_us, reference: false })
        .collect();
    let b = batch_name(&loads[0]);
    let (one_name, three_name) =
        (format!("raw pwrite+fdatasync {b}, 1 stream"), format!("raw pwrite+fdatasync {b}, 3 streams"));
    lat.push(plot::LatencySeries { name: &one_name, sorted_us: &fsync_lat.0, reference: true });
    lat.push(plot::LatencySeries { name: &three_name, sorted_us: &fsync_lat.1, reference: true });
    let mut per_payload: Vec<(usize, Vec<(f64, f64)>)> = Vec::new();
    for &i in &order {
        let r = &loads[i];
        let point = (r.inflight as f64, r.writes as f64 / r.secs);
        match per_payload.iter_mut().find(|(p, _)| *p == r.payload) {
            Some((_, v)) => v.push(point),
            None => per_payload.push((r.payload, vec![point])),
        }
    }
    let tnames: Vec<String> = per_payload.iter().map(|(p, _)| format!("flotilla {p} B")).collect();
    let mut tput: Vec<plot::ThroughputSeries> = per_payload
        .iter()
        .zip(&tnames)
        .map(|((_, v), name)| plot::ThroughputSeries { name, points: v, reference: false })
        .collect();
    tput.push(plot::ThroughputSeries {
        name: "raw fsync limit, 3 streams, at each 16 B point's batch",
        points: limit16,
        reference: true,
    });
    let files = [
        (
            "cluster-latency.svg",
            plot::latency_svg(
                &dir.join("cluster-latency.svg"),
                "Cluster commit latency (3 nodes, fsync on)",
                &lat,
            ),
        ),
        (
            "cluster-throughput.svg",
            plot::throughput_svg(
                &dir.join("cluster-throughput.svg"),
                "Cluster throughput against in-flight proposals (3 nodes, fsync on)",
                "proposals in flight (log scale)",
                "committed writes/s",
                &tput,
            ),
        ),
    ];
    for (f, res) in files {
        match res {
            Ok(()) => println!("plot: {}", dir.join(f).display()),
            Err(e) => eprintln!("plot {f} not written: {e}"),
        }
    }
}

/// A point's observed entries per WAL batch and the bytes of such a batch (what the raw
/// fsync reference writes at once).
fn batch_of(r: &LoadResult) -> (f64, usize) {
    let entries = r.entries_per_batch.max(1.0);
    (entries, (entries * (r.payload + WAL_OVERHEAD) as f64) as usize)
}

/// "(7679 B batch)": the batch the raw reference wrote.
fn batch_name(r: &LoadResult) -> String {
    format!("({} B batch)", batch_of(r).1)
}

// ---------------------------------------------------------------------------------------
// Load measuring on and off (`CLUSTER_LOAD=both`)

/// Two clusters side by side, one measuring per-group load and one not, both started
/// before measuring; `CLUSTER_LOAD_ROUNDS` rounds of 16-byte proposals alternate between
/// them (which goes first alternates too), so both see the same machine over the run.
/// Reports each one's writes/s and p99 per round, their mean, min..max and spread, and
/// whether the difference of the means is within the run-to-run spread.
fn load_on_off(dir: &Path, ngroups: u64, workers: usize, clients: usize, inflight: usize, secs: f64) {
    let rounds: usize = env_or("CLUSTER_LOAD_ROUNDS", 4);
    let on = Cluster::start(&dir.join("on"), ngroups, workers, true);
    let off = Cluster::start(&dir.join("off"), ngroups, workers, false);
    let mut rows: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let c = if which == 0 { &on } else { &off };
            c.wait_replicated(Duration::from_secs(20));
            let r = run_load(c, 16, clients, inflight, secs);
            let w = r.writes as f64 / r.secs;
            eprintln!("  round {round} measuring {}: {w:.0} writes/s", ["on", "off"][which]);
            rows[which].push((w, r.p99_us as f64 / 1e3));
        }
    }
    let total: u64 = (1..=NODES).map(|n| on.engine(n).metrics().load_proposals_per_sec).sum();
    on.shutdown();
    off.shutdown();
    println!();
    println!("== Load measuring on vs off: 3 engines each, loopback QUIC, fsync on, 16 B x {inflight} ==");
    println!("groups: {ngroups}; rounds: {rounds} x {secs} s each, alternating");
    println!(
        "| measuring | writes/s per round | mean | min..max | spread (max-min)/mean | p99 ms per round |"
    );
    println!("|---|---|---:|---:|---:|---|");
    let mut stats = Vec::new();
    for (name, v) in ["on", "off"].iter().zip(&rows) {
        let w: Vec<f64> = v.iter().map(|r| r.0).collect();
        let mean = w.iter().sum::<f64>() / w.len().max(1) as f64;
        let (min, max) = w.iter().fold((f64::MAX, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let list = |f: &dyn Fn(&(f64, f64)) -> String| v.iter().map(f).collect::<Vec<_>>().join(", ");
        println!(
            "| {name} | {} | {mean:.0} | {min:.0}..{max:.0} | {:.1}% | {} |",
            list(&|r| format!("{:.0}", r.0)),
            (max - min) / mean.max(1e-9) * 100.0,
            list(&|r| format!("{:.2}", r.1)),
        );
        stats.push((mean, max - min));
    }
    let diff = stats[0].0 - stats[1].0;
    let spread = stats[0].1.max(stats[1].1);
    println!(
        "on - off: {diff:.0} writes/s ({:.1}% of off); largest run-to-run spread {spread:.0}: {}",
        diff / stats[1].0.max(1e-9) * 100.0,
        if diff.abs() <= spread { "within the spread" } else { "OUTSIDE the spread" }
    );
    println!("measured at the end (sum of load_proposals_per_sec over the 'on' nodes, decaying): {total}");
}
