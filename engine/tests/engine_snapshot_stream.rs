//! Received snapshots stream to disk, bounded and resumable (issue 12 point 4): a stream
//! that never ends is refused at `max_snapshot_bytes` with resident memory flat; a stream
//! cut at 60% resumes there (the follower reports its durable offset, the leader starts
//! the next stream at it); a follower that stops mid-stream keeps nothing that recovery
//! takes for a snapshot, and the next full stream installs.
//!
//! The snapshots here are 4 MiB (16 chunks of 256 KiB): the state machine is the harness's
//! counting one with a 4 MiB checked pattern after its state. Node 1's transport is wrapped
//! by [`Cut`], which ends a stream after a given number of chunks, records where each
//! stream started and the offsets followers reported. Every wait is a condition polled
//! until a deadline.

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::*;
use flotilla_engine::api::*;
use flotilla_engine::raft::{
    ConfState, Message, MessageBody, NodeId, Replica, Role, SnapshotChunk, SnapshotMeta,
};
use flotilla_engine::transport::{
    FaultControl, MemoryNetwork, SnapshotChunks, Transport, TransportError, TransportEvent,
    TransportStatsSource, WireItem,
};

const LONG: Duration = Duration::from_secs(30);
const GROUP: u64 = 1;
/// The engine's chunk size.
const CHUNK: u64 = 256 << 10;
/// State-machine bytes after the counting state's 24: a 4 MiB snapshot, 16 chunks.
const PAD: usize = (4 << 20) - 24;
const SNAP_BYTES: u64 = 24 + PAD as u64;
/// Chunks of the first stream let through before it is cut (10 of 16: 62.5%).
const CUT_AFTER: usize = 10;

/// The tests of this file run one at a time: the endless-stream test measures the
/// process's resident memory, which the others' 4 MiB snapshots would blur.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn pad_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// The counting state machine with [`PAD`] pattern bytes after its state in every
/// snapshot; a restore checks every one of them and the length.
struct BigSm(ChainSm);

impl StateMachine for BigSm {
    fn apply(&mut self, index: u64, term: u64, command: Option<&[u8]>) -> Bytes {
        self.0.apply(index, term, command)
    }
    fn applied_index(&self) -> u64 {
        0
    }
    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        self.0.snapshot(out)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < PAD {
            let n = buf.len().min(PAD - at);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pad_byte(at + k);
            }
            out.write_all(&buf[..n])?;
            at += n;
        }
        Ok(())
    }
    fn restore(&mut self, index: u64, term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        self.0.restore(index, term, input)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut at = 0;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if at + n > PAD || buf[..n].iter().enumerate().any(|(k, &b)| b != pad_byte(at + k)) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot pad differs"));
            }
            at += n;
        }
        if at != PAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot pad short"));
        }
        Ok(())
    }
}

/// What [`Cut`] saw and does.
#[derive(Default)]
struct CutState {
    /// Chunks of the next stream that pulls any to let through before ending it with an
    /// error (`None`: streams pass whole).
    cut_after: Mutex<Option<usize>>,
    /// Set when a stream is cut: further streams are refused at once (as a full queue)
    /// until the test clears it, so the leader's retry waits for what the test checks.
    hold: AtomicBool,
    /// The offset of the first chunk of every stream that sent one, in order.
    starts: Mutex<Vec<u64>>,
    /// The offsets followers reported (`WireItem::SnapshotProgress`), in order.
    reported: Mutex<Vec<u64>>,
}

/// Node 1's transport: passes everything through, cuts a stream when armed.
struct Cut<T> {
    inner: T,
    st: Arc<CutState>,
}

impl<T: Transport> Transport for Cut<T> {
    fn node_id(&self) -> NodeId {
        self.inner.node_id()
    }
    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.inner.send(to, tag, items)
    }
    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        mut chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        if self.st.hold.load(Ordering::SeqCst) {
            return Err(TransportError::QueueFull { to, tag });
        }
        let st = self.st.clone();
        let mut sent = 0usize;
        let mut cut: Option<Option<usize>> = None;
        let mut done = false;
        let it = std::iter::from_fn(move || {
            if done {
                return None;
            }
            // Armed on the first pull: a stream the fault layer drops unread keeps it.
            let limit = *cut.get_or_insert_with(|| st.cut_after.lock().unwrap().take());
            if limit == Some(sent) {
                done = true;
                st.hold.store(true, Ordering::SeqCst);
                return Some(Err(std::io::Error::other("stream cut by the test")));
            }
            let m = chunks.next()?;
            if sent == 0 {
                if let Ok(Message { body: MessageBody::SnapshotChunk(c), .. }) = &m {
                    st.starts.lock().unwrap().push(c.offset);
                }
            }
            sent += 1;
            Some(m)
        });
        self.inner.send_snapshot(to, tag, group, Box::new(it))
    }
    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        let ev = self.inner.recv_timeout(timeout)?;
        if let TransportEvent::Items { items, .. } = &ev {
            for it in items {
                if let WireItem::SnapshotProgress { offset, .. } = it {
                    self.st.reported.lock().unwrap().push(*offset);
                }
            }
        }
        Some(ev)
    }
    fn event_signal(&self) -> Option<crossbeam_channel::Receiver<()>> {
        self.inner.event_signal()
    }
    fn stats_source(&self) -> Option<Arc<dyn TransportStatsSource>> {
        self.inner.stats_source()
    }
}

/// Three nodes; node 1 leads and its transport is [`Cut`].
struct Three {
    net: MemoryNetwork,
    fault: FaultControl,
    cut: Arc<CutState>,
    regs: Vec<Registry>,
    dirs: Vec<PathBuf>,
    engines: Vec<Option<Engine>>,
    _tmp: tempfile::TempDir,
}

impl Three {
    fn new() -> Three {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = Three {
            net: MemoryNetwork::new(),
            fault: FaultControl::new(7),
            cut: Arc::new(CutState::default()),
            regs: (0..3).map(|_| Registry::default()).collect(),
            dirs: (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect(),
            engines: vec![None, None, None],
            _tmp: tmp,
        };
        for id in 1..=3 {
            t.open(id);
        }
        for id in [2, 3, 1] {
            let sm = t.sm(id);
            t.e(id).create_group_led_by(GROUP, &[1, 2, 3], 1, sm).unwrap();
        }
        wait_until("node 1 to lead", LONG, || {
            t.e(1).group_status(GROUP).is_some_and(|s| s.role == Role::Leader)
        });
        t
    }

    fn sm(&self, id: NodeId) -> Box<dyn StateMachine> {
        Box::new(BigSm(ChainSm::new(
            self.regs[id as usize - 1].lock().unwrap().entry(GROUP).or_default().clone(),
        )))
    }

    fn open(&mut self, id: NodeId) {
        let i = id as usize - 1;
        let mut cfg = config(id, self.dirs[i].clone(), 20);
        cfg.workers = 1;
        cfg.raft.quiesce = false;
        let inner = self.fault.wrap(self.net.join(id, 1 << 12));
        let t: Box<dyn Transport> =
            if id == 1 { Box::new(Cut { inner, st: self.cut.clone() }) } else { Box::new(inner) };
        // A restart starts from an empty state machine (it keeps nothing on disk).
        self.regs[i] = Registry::default();
        let reg = self.regs[i].clone();
        let factory: StateMachineFactory = Arc::new(move |g| {
            Box::new(BigSm(ChainSm::new(reg.lock().unwrap().entry(g).or_default().clone())))
                as Box<dyn StateMachine>
        });
        self.engines[i] = Some(Engine::open(cfg, t, factory).unwrap());
    }

    fn e(&self, id: NodeId) -> &Engine {
        self.engines[id as usize - 1].as_ref().unwrap()
    }

    fn state(&self, id: NodeId) -> SmState {
        *self.regs[id as usize - 1].lock().unwrap().get(&GROUP).unwrap().lock().unwrap()
    }

    /// Proposes `v` at node 1 until it is applied there.
    fn put(&self, v: u64) {
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "value {v} not applied");
            if let Ok(Ok(Ok(_))) = self
                .e(1)
                .propose(GROUP, Bytes::copy_from_slice(&v.to_le_bytes()))
                .map(|p| p.wait_timeout(LONG))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Node 3 falls behind a compaction of nodes 1 and 2 (it needs a snapshot), and the
    /// first stream to it is armed to be cut at [`CUT_AFTER`] chunks, after which node 1's
    /// further streams are held back until the test releases them.
    fn lag_node_3_and_arm_the_cut(&self) {
        for v in 1..=3 {
            self.put(v);
        }
        let commit = self.e(1).group_status(GROUP).unwrap().commit;
        wait_until("node 3 to apply", LONG, || {
            self.e(3).group_status(GROUP).is_some_and(|s| s.applied >= commit)
        });
        self.fault.isolate(3, &[1, 2]);
        // Until node 1 compacted twice (a snapshot every 20 entries): past node 3's log.
        for v in 4.. {
            assert!(v < 400, "node 1 did not compact twice in {v} entries");
            if self.e(1).metrics().compactions >= 2 {
                break;
            }
            self.put(v);
        }
        *self.cut.cut_after.lock().unwrap() = Some(CUT_AFTER);
        self.fault.heal();
        // The cut stream's chunks are durable at node 3 and reported to node 1.
        let want = CUT_AFTER as u64 * CHUNK;
        wait_until("node 3 to report the cut stream durable", LONG, || {
            self.cut.reported.lock().unwrap().contains(&want)
        });
        assert!(self.cut.hold.load(Ordering::SeqCst), "the stream was cut");
        assert_eq!(self.cut.starts.lock().unwrap().as_slice(), &[0], "one stream so far, from 0");
    }

    /// Node 3 catches up to node 1's commit and their state machines agree.
    fn wait_converged(&self) {
        let commit = self.e(1).group_status(GROUP).unwrap().commit;
        wait_until("node 3 to catch up", LONG, || {
            self.e(3).group_status(GROUP).is_some_and(|s| s.applied >= commit)
        });
        wait_until("node 3 to match node 1", LONG, || self.state(3) == self.state(1));
    }
}

impl Drop for Three {
    fn drop(&mut self) {
        for e in self.engines.iter_mut() {
            if let Some(e) = e.take() {
                e.shutdown();
            }
        }
    }
}

/// The files in `dir` whose name ends with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(ext)).collect()
}

/// The snapshot index in a snapshot file name (`group-replica-index.ext`, hex).
fn index_of(name: &str) -> u64 {
    u64::from_str_radix(name.split(['-', '.']).nth(2).unwrap(), 16).unwrap()
}

/// A stream cut at 10 of 16 chunks (62.5%): node 3 reports its durable offset, and node
/// 1's next stream of the same snapshot starts exactly there (>= 60% of the snapshot), so
/// only the remaining 6 chunks travel again; node 3 installs it and matches node 1.
#[test]
fn a_stream_cut_at_60_percent_resumes_at_60_percent() {
    let _serial = serial();
    let t = Three::new();
    t.lag_node_3_and_arm_the_cut();
    let snap = t.dirs[2].join("snap");
    let partial = files(&snap, ".partial");
    assert_eq!(partial.len(), 1, "node 3 holds the cut stream in one partial file: {partial:?}");
    t.cut.hold.store(false, Ordering::SeqCst);
    t.wait_converged();
    let starts = t.cut.starts.lock().unwrap().clone();
    let resumed = starts[1];
    eprintln!("stream starts {starts:?}, reported {:?}", t.cut.reported.lock().unwrap());
    assert_eq!(resumed, CUT_AFTER as u64 * CHUNK, "the next stream starts at the reported durable offset");
    assert!(resumed * 10 >= SNAP_BYTES * 6, "resumed at {resumed} of {SNAP_BYTES} bytes");
    let m1 = t.e(1).metrics();
    let m3 = t.e(3).metrics();
    assert!(m1.snapshot_streams_resumed >= 1 && m1.snapshot_resumed_bytes >= resumed);
    assert_eq!(m3.snapshots_installed, 1);
    assert_eq!(m3.snapshot_streams_refused, 0);
    assert!(files(&snap, ".partial").is_empty(), "the partial file became the snapshot");
    assert!(files(&snap, ".snap").iter().any(|n| index_of(n) == index_of(&partial[0])));
}

/// Node 3 stops with a stream cut at 62.5% (its partial file on disk). Reopened, it holds
/// no partial file, no snapshot file at that index, and its group is where it was (applied
/// below the snapshot). Node 1 resumes at the offset it was told; node 3, holding nothing
/// now, reports 0, and the next full stream installs: node 3 matches node 1.
#[test]
fn a_crash_mid_stream_leaves_nothing_taken_for_a_snapshot() {
    let _serial = serial();
    let mut t = Three::new();
    t.lag_node_3_and_arm_the_cut();
    let snap = t.dirs[2].join("snap");
    let partial = files(&snap, ".partial");
    assert_eq!(partial.len(), 1, "node 3 holds the cut stream in one partial file: {partial:?}");
    let index = index_of(&partial[0]);
    if let Some(e) = t.engines[2].take() {
        e.shutdown();
    }
    assert_eq!(files(&snap, ".partial").len(), 1, "the partial file is still there after the stop");
    t.open(3);
    assert!(files(&snap, ".partial").is_empty(), "open deleted the partial file");
    assert!(!files(&snap, ".snap").iter().any(|n| index_of(n) == index), "no snapshot file at {index}");
    let st = t.e(3).group_status(GROUP).unwrap();
    assert!(st.applied < index && st.commit < index, "node 3 took no snapshot at {index}: {st:?}");
    t.cut.hold.store(false, Ordering::SeqCst);
    t.wait_converged();
    let starts = t.cut.starts.lock().unwrap().clone();
    eprintln!("stream starts {starts:?}, reported {:?}", t.cut.reported.lock().unwrap());
    assert_eq!(starts[1], CUT_AFTER as u64 * CHUNK, "node 1 resumed where node 3 had been");
    assert!(starts[2..].contains(&0), "after node 3 reported 0, a stream from 0 followed");
    assert!(t.cut.reported.lock().unwrap().contains(&0), "node 3 reported it holds nothing");
    assert_eq!(t.e(3).metrics().snapshots_installed, 1);
    assert!(files(&snap, ".partial").is_empty());
}

/// A fake leader (node 2, raw transport) streams chunks of one snapshot to node 1 without
/// end: 80 MiB, ten times node 1's `max_snapshot_bytes` of 8 MiB. Node 1 refuses the
/// stream at the bound (counted), deletes its partial file, installs nothing, and its
/// resident memory stays flat (well under the bytes streamed).
#[test]
fn an_endless_stream_is_refused_at_the_bound_with_memory_flat() {
    const BOUND: u64 = 8 << 20;
    const STREAMED: u64 = 10 * BOUND;
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let reg = Registry::default();
    let mut cfg = config(1, tmp.path().join("n1"), 10_000);
    cfg.workers = 1;
    cfg.raft.quiesce = false;
    cfg.max_snapshot_bytes = BOUND;
    let r = reg.clone();
    let factory: StateMachineFactory = Arc::new(move |g| ChainSm::boxed(&r, g));
    let e = Engine::open(cfg, Box::new(net.join(1, 16)), factory).unwrap();
    let p2 = net.join(2, 1 << 16);
    e.create_group_led_by(GROUP, &[1, 2], 2, ChainSm::boxed(&reg, GROUP)).unwrap();
    wait_until("the group", LONG, || e.group_status(GROUP).is_some());
    let meta = SnapshotMeta {
        index: 1000,
        term: 4,
        conf: ConfState::with_voters([Replica::new(1, 1), Replica::new(2, 2)]),
    };
    let data = Bytes::from(vec![0xabu8; CHUNK as usize]);
    let before = rss_kib();
    let mut peak = before;
    let deadline = Instant::now() + LONG;
    let mut offset = 0u64;
    let mut seq = 0u32;
    while offset < STREAMED {
        let chunk = SnapshotChunk { meta: meta.clone(), seq, offset, last: false, data: data.clone() };
        let msg = Message { from: 2, to: 1, term: 5, body: MessageBody::SnapshotChunk(chunk) };
        match p2.send(1, 0, &[WireItem::Msg { group: GROUP, msg }]) {
            Ok(()) => {
                offset += CHUNK;
                seq += 1;
                if seq % 8 == 0 {
                    peak = peak.max(rss_kib());
                }
            }
            Err(TransportError::QueueFull { .. }) => {
                assert!(Instant::now() < deadline, "node 1 stopped taking chunks at {offset}");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("{err}"),
        }
        // The fake leader reads nothing back: its queue is large enough for the run.
    }
    wait_until("node 1 to refuse the stream", LONG, || e.metrics().snapshot_streams_refused == 1);
    // Every chunk past the bound is dropped (the last ones may still be on their way).
    let past = (STREAMED - BOUND) / CHUNK;
    wait_until("node 1 to drop the chunks past the bound", LONG, || {
        e.metrics().snapshot_chunks_dropped >= past
    });
    let snap = tmp.path().join("n1").join("snap");
    wait_until("the partial file to be deleted", LONG, || files(&snap, ".partial").is_empty());
    peak = peak.max(rss_kib());
    let m = e.metrics();
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "streamed {} MiB; rss before {} MiB, peak {} MiB (+{grew_mib} MiB); chunks dropped {}",
        STREAMED >> 20,
        before / 1024,
        peak / 1024,
        m.snapshot_chunks_dropped
    );
    assert!(grew_mib < 40, "resident memory grew {grew_mib} MiB while {} MiB streamed", STREAMED >> 20);
    assert_eq!(m.snapshots_installed, 0);
    assert_eq!(m.snapshot_streams_refused, 1);
    assert!(files(&snap, ".snap").is_empty());
    assert!(e.group_status(GROUP).unwrap().commit < meta.index);
    e.shutdown();
}
