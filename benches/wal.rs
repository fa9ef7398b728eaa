//! The shared WAL against its references, in the same run (issue 3):
//! 1,000 groups, 128-byte incompressible entries, batches of 256 entries spread across
//! groups (one entry per group per batch), an fsync per batch; one writer and two writers
//! (group commit). References: raft-engine 0.4 (default config) on the identical workload
//! and sync setting, and the raw limit: the same bytes per batch written with pwrite +
//! fdatasync into an already-written file (and, for reference, with io_uring write linked
//! to fsync, as flotilla-wal's io_uring backend does). Also the recovery speed of a large log as a
//! fraction of sequential read bandwidth.
//!
//! Criterion measures each variant; a summary pass then runs the variants interleaved in
//! short turns (to share the machine's noise fairly), each variant's writers on long-lived
//! threads, and prints entries/s, MB/s and the ratios.
//! Environment: `FLOTILLA_WAL_BENCH_DIR` (default: a temp dir under the target dir's
//! disk), `FLOTILLA_WAL_BENCH_SECS` (length of the summary pass, default 30),
//! `FLOTILLA_WAL_BENCH_TURN_MS` (length of one variant's turn in the summary, default 50;
//! 0 for turns of 4 batches, as before 2026-12-05: with eight variants taking turns every
//! millisecond or so, each turn starts with caches the other variants filled),
//! `FLOTILLA_WAL_BENCH_STEADY=1` (the logs compacted as they go, so their files are
//! recycled: see [`steady`]), `FLOTILLA_WAL_BENCH_RECOVERY_MB` (log size for the recovery
//! figure, default 1024; 0 skips it).
//! Pictures: the summary also writes `wal-latency.svg` and `wal-throughput.svg` to
//! `target/flotilla-plots/` (benches/support/wal_plots.rs).
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "support/plot.rs"]
mod plot;
#[path = "support/wal_plots.rs"]
mod wal_plots;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla_wal::{BackendChoice, Wal, WalConfig, WriteBatch};
use raft::eraftpb::Entry as RaftEntry;

const GROUPS: u64 = 1000;
const ENTRY: usize = 128;
const PER_BATCH: usize = 256;
/// With `FLOTILLA_WAL_BENCH_STEADY=1`: every this many batches a writer compacts each of
/// its groups to all but its last [`KEEP`] entries (as an engine does once entries are
/// applied and snapshotted), so the logs free and recycle their files instead of growing.
const COMPACT_EVERY: u64 = 64;
/// Entries a group keeps past a compaction (steady state).
const KEEP: u64 = 32;

/// Whether the summary runs the logs in steady state (`FLOTILLA_WAL_BENCH_STEADY=1`):
/// compacted as they go, so old files are recycled (flotilla-wal's freed segments,
/// raft-engine's purged files) and writes land in already-written files, as the raw
/// reference's do. Default off: a fresh, growing log (every new segment zero-filled).
fn steady() -> bool {
    std::env::var("FLOTILLA_WAL_BENCH_STEADY").is_ok_and(|v| v != "0")
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("FLOTILLA_WAL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        let t = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        PathBuf::from(t).join("wal-bench")
    });
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// Incompressible payloads (xorshift bytes), reused round-robin.
fn payloads() -> Arc<Vec<Vec<u8>>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    Arc::new(
        (0..4096)
            .map(|_| {
                (0..ENTRY)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect(),
    )
}

/// One writer's stream of batches: round-robin over its share of the groups.
struct Stream {
    groups: Vec<u64>,
    next: Vec<u64>,
    cursor: usize,
    p: usize,
    payloads: Arc<Vec<Vec<u8>>>,
    batches: u64,
    steady: bool,
}

impl Stream {
    fn new(writer: u64, writers: u64, payloads: Arc<Vec<Vec<u8>>>) -> Stream {
        let groups: Vec<u64> = (0..GROUPS).filter(|g| g % writers == writer).collect();
        Stream {
            next: vec![1; groups.len()],
            groups,
            cursor: 0,
            p: writer as usize * 997,
            payloads,
            batches: 0,
            steady: steady(),
        }
    }

    /// In steady state, every [`COMPACT_EVERY`] batches: (group, first index to keep) for
    /// each group of this stream, keeping its last [`KEEP`] entries.
    fn compactions(&self) -> Vec<(u64, u64)> {
        if !self.steady || self.batches % COMPACT_EVERY != 0 {
            return Vec::new();
        }
        self.groups
            .iter()
            .zip(&self.next)
            .filter(|(_, &n)| n > KEEP + 1)
            .map(|(&g, &n)| (g, n - KEEP))
            .collect()
    }

    /// Calls `f(group, index, payload)` for the 256 entries of the next batch.
    fn batch(&mut self, mut f: impl FnMut(u64, u64, &[u8])) {
        for _ in 0..PER_BATCH {
            let i = self.cursor % self.groups.len();
            self.cursor += 1;
            self.p = (self.p + 1) % self.payloads.len();
            f(self.groups[i], self.next[i], &self.payloads[self.p]);
            self.next[i] += 1;
        }
        self.batches += 1;
    }
}

trait Target: Sync {
    fn write(&self, s: &mut Stream);
    /// For flotilla-wal: (data syncs, batches made durable, nanoseconds in syncs) so far.
    fn sync_counts(&self) -> Option<(u64, u64, u64)> {
        None
    }
}

struct Flotilla(Wal);

impl Target for Flotilla {
    fn write(&self, s: &mut Stream) {
        let mut b = WriteBatch::new();
        s.batch(|g, i, d| b.add_entry(g, i, 1, d));
        for (g, i) in s.compactions() {
            b.compact_to(g, i);
        }
        self.0.write(b).unwrap();
    }

    fn sync_counts(&self) -> Option<(u64, u64, u64)> {
        let st = self.0.stats();
        Some((st.syncs, st.batches, st.sync_nanos_total))
    }
}

#[derive(Clone)]
struct Ext;
impl raft_engine::MessageExt for Ext {
    type Entry = RaftEntry;
    fn index(e: &RaftEntry) -> u64 {
        e.index
    }
}

struct RaftEngine(raft_engine::Engine);

impl Target for RaftEngine {
    fn write(&self, s: &mut Stream) {
        let mut lb = raft_engine::LogBatch::default();
        // raft-engine takes entries per region: one add per (group, entry).
        s.batch(|g, i, d| {
            let e = RaftEntry { index: i, term: 1, data: d.to_vec().into(), ..Default::default() };
            lb.add_entries::<Ext>(g, &[e]).unwrap();
        });
        self.0.write(&mut lb, true).unwrap();
        let compactions = s.compactions();
        if !compactions.is_empty() {
            for (g, i) in compactions {
                self.0.compact_to(g, i);
            }
            self.0.purge_expired_files().unwrap();
        }
    }
}

/// The raw limit: `bytes` per batch, pwrite + fdatasync, into an already-written file.
struct Raw {
    file: File,
    size: u64,
    bytes: Vec<u8>,
    off: parking_lot::Mutex<u64>,
}

impl Raw {
    fn new(dir: &Path, bytes: usize) -> Raw {
        let size = 256u64 << 20;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("raw"))
            .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for i in 0..(size >> 20) {
            file.write_all_at(&zeros, i << 20).unwrap();
        }
        file.sync_all().unwrap();
        let p = payloads();
        let data = (0..bytes).map(|i| p[i / ENTRY % p.len()][i % ENTRY]).collect();
        Raw { file, size, bytes: data, off: parking_lot::Mutex::new(0) }
    }
}

impl Target for Raw {
    fn write(&self, _s: &mut Stream) {
        let mut off = self.off.lock();
        if *off + self.bytes.len() as u64 > self.size {
            *off = 0;
        }
        self.file.write_all_at(&self.bytes, *off).unwrap();
        self.file.sync_data().unwrap();
        *off += self.bytes.len() as u64;
    }
}

/// A second raw reference: the same bytes with io_uring, write linked to
/// fsync(DATASYNC), submitted from one long-lived thread like flotilla-wal's writer (a
/// ring used from short-lived threads would pay for new io-wq workers each time).
struct RawUring {
    tx: parking_lot::Mutex<crossbeam_channel::Sender<crossbeam_channel::Sender<()>>>,
}

impl RawUring {
    fn new(raw: Raw) -> RawUring {
        let (tx, rx) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<()>>();
        std::thread::spawn(move || {
            use io_uring::{opcode, squeue, types};
            use std::os::fd::AsRawFd;
            let mut ring = io_uring::IoUring::new(8).unwrap();
            let fd = types::Fd(raw.file.as_raw_fd());
            let mut off = 0u64;
            for done in rx {
                if off + raw.bytes.len() as u64 > raw.size {
                    off = 0;
                }
                let w = opcode::Write::new(fd, raw.bytes.as_ptr(), raw.bytes.len() as u32)
                    .offset(off)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(1);
                let f = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(2);
                // SAFETY: the buffer outlives the submission; we wait for both completions.
                unsafe {
                    ring.submission().push(&w).unwrap();
                    ring.submission().push(&f).unwrap();
                }
                ring.submit_and_wait(2).unwrap();
                let res: Vec<i32> = ring.completion().map(|c| c.result()).collect();
                assert_eq!(res.len(), 2);
                assert!(res.iter().all(|r| *r >= 0), "{res:?}");
                off += raw.bytes.len() as u64;
                let _ = done.send(());
            }
        });
        RawUring { tx: parking_lot::Mutex::new(tx) }
    }
}

impl Target for RawUring {
    fn write(&self, _s: &mut Stream) {
        let (dtx, drx) = crossbeam_channel::bounded(1);
        self.tx.lock().send(dtx).unwrap();
        drx.recv().unwrap();
    }
}

/// Runs `batches_per_writer` batches on each of `writers` threads; returns elapsed time.
fn run(t: &dyn Target, streams: &mut [Stream], batches_per_writer: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|sc| {
        for s in streams.iter_mut() {
            sc.spawn(move || {
                for _ in 0..batches_per_writer {
                    t.write(s);
                }
            });
        }
    });
    start.elapsed()
}

/// How long one variant's turn lasts in the summary.
#[derive(Clone, Copy)]
enum Turn {
    /// A fixed number of batches per writer (`FLOTILLA_WAL_BENCH_TURN_MS=0`).
    Batches(u64),
    /// Batches until this much time passed, per writer (the default: 50 ms).
    For(Duration),
}

/// A long-lived writer thread of one variant's stream, for the summary's turns: an
/// embedder writes from long-lived threads, so the turns do not pay for starting
/// threads (or for their cold caches and allocator state).
struct Writer {
    go: crossbeam_channel::Sender<Turn>,
    done: crossbeam_channel::Receiver<(u64, Instant, Instant, Vec<u32>)>,
}

impl Writer {
    fn spawn<'s>(sc: &'s std::thread::Scope<'s, '_>, target: &'s dyn Target, s: &'s mut Stream) -> Writer {
        let (go, go_rx) = crossbeam_channel::bounded::<Turn>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        sc.spawn(move || {
            for turn in go_rx {
                let first = Instant::now();
                let mut lat = Vec::new();
                loop {
                    let t0 = Instant::now();
                    target.write(s);
                    lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    let more = match turn {
                        Turn::Batches(n) => (lat.len() as u64) < n,
                        Turn::For(d) => first.elapsed() < d,
                    };
                    if !more {
                        break;
                    }
                }
                if done_tx.send((lat.len() as u64, first, Instant::now(), lat)).is_err() {
                    return;
                }
            }
        });
        Writer { go, done }
    }

    /// One turn on each of `ws` at once; returns the batches written and the time from
    /// the first batch's start to the last one's end (the threads' wake-ups not counted),
    /// and records each batch's latency in `lat`.
    fn turn(ws: &[Writer], turn: Turn, lat: &mut Vec<u32>) -> (u64, Duration) {
        for w in ws {
            w.go.send(turn).unwrap();
        }
        let mut batches = 0;
        let mut span: Option<(Instant, Instant)> = None;
        for w in ws {
            let (n, a, b, l) = w.done.recv().unwrap();
            batches += n;
            lat.extend(l);
            span = Some(span.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        (batches, span.map_or(Duration::ZERO, |(a, b)| b - a))
    }
}

struct Variant {
    name: String,
    target: Box<dyn Target>,
    streams: Vec<Stream>,
    _dir: tempfile::TempDir,
}

fn flotilla_config(dir: &Path) -> WalConfig {
    let mut c = WalConfig::new(dir);
    c.backend = BackendChoice::from_env();
    c
}

fn variants(bytes_per_batch: usize) -> Vec<Variant> {
    let p = payloads();
    let mut out = Vec::new();
    for writers in [1u64, 2] {
        let streams = |p: &Arc<Vec<Vec<u8>>>| {
            (0..writers).map(|w| Stream::new(w, writers, p.clone())).collect::<Vec<_>>()
        };
        let dir = bench_dir();
        let wal = Wal::open(flotilla_config(dir.path())).unwrap();
        let name = format!("flotilla-wal ({:?}) x{writers}", wal.backend());
        out.push(Variant { name, target: Box::new(Flotilla(wal)), streams: streams(&p), _dir: dir });
        let dir = bench_dir();
        let cfg =
            raft_engine::Config { dir: dir.path().to_string_lossy().into_owned(), ..Default::default() };
        out.push(Variant {
            name: format!("raft-engine 0.4 x{writers}"),
            target: Box::new(RaftEngine(raft_engine::Engine::open(cfg).unwrap())),
            streams: streams(&p),
            _dir: dir,
        });
        let dir = bench_dir();
        out.push(Variant {
            name: format!("raw pwrite+fdatasync x{writers}"),
            target: Box::new(Raw::new(dir.path(), bytes_per_batch)),
            streams: streams(&p),
            _dir: dir,
        });
        let dir = bench_dir();
        out.push(Variant {
            name: format!("raw io_uring write+fsync x{writers}"),
            target: Box::new(RawUring::new(Raw::new(dir.path(), bytes_per_batch))),
            streams: streams(&p),
            _dir: dir,
        });
    }
    out
}

/// Bytes flotilla-wal writes per batch on this workload.
fn flotilla_bytes_per_batch() -> usize {
    let dir = bench_dir();
    let wal = Wal::open(flotilla_config(dir.path())).unwrap();
    let mut s = Stream::new(0, 1, payloads());
    let t = Flotilla(wal);
    for _ in 0..64 {
        t.write(&mut s);
    }
    let st = t.0.stats();
    ((st.written_bytes - 64) / st.batches) as usize
}

fn bench(c: &mut Criterion) {
    let bytes = flotilla_bytes_per_batch();
    eprintln!(
        "flotilla-wal writes {bytes} bytes per batch of {PER_BATCH} entries ({} per entry)",
        bytes / PER_BATCH
    );
    let mut vs = variants(bytes);
    {
        let mut g = c.benchmark_group("wal_1000_groups_256x128B_fsync_per_batch");
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(4));
        for v in vs.iter_mut() {
            let writers = v.streams.len() as u64;
            g.throughput(Throughput::Elements(PER_BATCH as u64 * writers));
            let target = &*v.target;
            let streams = &mut v.streams;
            g.bench_function(v.name.as_str(), |b| b.iter_custom(|iters| run(target, streams, iters)));
        }
        g.finish();
    }
    summary(&mut vs, bytes);
    recovery();
}

/// The variants take turns a few batches at a time for the whole duration, so that the
/// shared disk's speed, which drifts by a factor of ten within seconds here, weighs on
/// all of them alike; prints entries/s, MB/s and ratios of the totals.
fn summary(vs: &mut [Variant], bytes: usize) {
    let secs: f64 =
        std::env::var("FLOTILLA_WAL_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30.0);
    if secs <= 0.0 {
        return;
    }
    let mut totals = vec![(0u64, Duration::ZERO); vs.len()];
    let mut lats = vec![Vec::new(); vs.len()];
    let turn_ms: u64 =
        std::env::var("FLOTILLA_WAL_BENCH_TURN_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let syncs_before: Vec<_> = vs.iter().map(|v| v.target.sync_counts()).collect();
    let start = Instant::now();
    let turn = if turn_ms == 0 { Turn::Batches(4) } else { Turn::For(Duration::from_millis(turn_ms)) };
    std::thread::scope(|sc| {
        let writers: Vec<Vec<Writer>> = vs
            .iter_mut()
            .map(|v| {
                let target = &*v.target;
                v.streams.iter_mut().map(|s| Writer::spawn(sc, target, s)).collect()
            })
            .collect();
        while start.elapsed().as_secs_f64() < secs {
            for (i, ws) in writers.iter().enumerate() {
                let (batches, took) = Writer::turn(ws, turn, &mut lats[i]);
                totals[i].0 += batches;
                totals[i].1 += took;
            }
        }
    });
    let rate = |i: usize| totals[i].0 as f64 * PER_BATCH as f64 / totals[i].1.as_secs_f64();
    println!(
        "\n## WAL summary ({bytes} bytes per batch; variants interleaved {} for {secs}s)\n",
        if turn_ms == 0 { "4 batches at a time".to_string() } else { format!("in turns of {turn_ms} ms") }
    );
    println!("| variant | entries/s | MB/s (payload) | MB/s (written) | vs raft-engine | vs raw pwrite | vs raw io_uring |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, v) in vs.iter().enumerate() {
        let base = i - i % 4;
        let e = rate(i);
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.2}x | {:.0}% | {:.0}% |",
            v.name,
            e,
            e * ENTRY as f64 / 1e6,
            e / PER_BATCH as f64 * bytes as f64 / 1e6,
            e / rate(base + 1),
            100.0 * e / rate(base + 2),
            100.0 * e / rate(base + 3)
        );
    }
    // How the group commit went: batches per data sync and the sync's mean duration
    // (two writers whose batches share a sync wait for it together).
    for (v, before) in vs.iter().zip(syncs_before) {
        if let (Some((s0, b0, n0)), Some((s1, b1, n1))) = (before, v.target.sync_counts()) {
            let syncs = (s1 - s0).max(1);
            println!(
                "{}: {:.2} batches per data sync, mean sync {:.1} us",
                v.name,
                (b1 - b0) as f64 / syncs as f64,
                (n1 - n0) as f64 / 1e3 / syncs as f64
            );
        }
    }
    let rows = vs.iter().zip(lats).enumerate().map(|(i, (v, lat_us))| wal_plots::Row {
        name: &v.name,
        writers: v.streams.len(),
        entries_per_s: rate(i),
        lat_us,
    });
    wal_plots::write(rows.collect(), bytes);
}

/// Recovery of a large log, as a fraction of sequential read bandwidth (page cache warm
/// for both; and cold for both when the page cache can be dropped).
fn recovery() {
    let mb: u64 =
        std::env::var("FLOTILLA_WAL_BENCH_RECOVERY_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    if mb == 0 {
        return;
    }
    let dir = bench_dir();
    {
        let wal = Wal::open(flotilla_config(dir.path())).unwrap();
        let mut streams = [Stream::new(0, 1, payloads())];
        let t = Flotilla(wal);
        let mut pending = Vec::new();
        while t.0.stats().written_bytes < mb << 20 {
            // Pipelined submissions: group commit makes the setup fast.
            let mut b = WriteBatch::new();
            streams[0].batch(|g, i, d| b.add_entry(g, i, 1, d));
            pending.push(t.0.submit(b).unwrap());
            if pending.len() >= 64 {
                for p in pending.drain(..) {
                    p.wait().unwrap();
                }
            }
        }
        for p in pending.drain(..) {
            p.wait().unwrap();
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    let read_all = || {
        let mut buf = vec![0u8; 8 << 20];
        let mut n = 0u64;
        for f in &files {
            let file = File::open(f).unwrap();
            let mut off = 0;
            loop {
                let r = file.read_at(&mut buf, off).unwrap();
                if r == 0 {
                    break;
                }
                off += r as u64;
                n += r as u64;
            }
        }
        n
    };
    let drop_caches = || std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    for cold in [false, true] {
        if cold && !drop_caches() {
            println!("(cannot drop the page cache here: cold figures skipped)");
            break;
        }
        let t = Instant::now();
        let n = read_all();
        let read_s = t.elapsed().as_secs_f64();
        if cold {
            drop_caches();
        }
        let t = Instant::now();
        let wal = Wal::open(flotilla_config(dir.path())).unwrap();
        let open_s = t.elapsed().as_secs_f64();
        let rec = wal.recovered_bytes();
        drop(wal);
        println!(
            "recovery ({}): {:.0} MiB of log in {:.2}s = {:.0} MB/s; sequential read of the {} files ({:.0} MiB) {:.0} MB/s; recovery = {:.0}% of read bandwidth",
            if cold { "cold cache" } else { "warm cache" },
            rec as f64 / 1048576.0,
            open_s,
            rec as f64 / open_s / 1e6,
            files.len(),
            n as f64 / 1048576.0,
            n as f64 / read_s / 1e6,
            100.0 * (rec as f64 / open_s) / (n as f64 / read_s)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
