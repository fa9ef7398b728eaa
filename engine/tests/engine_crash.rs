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

mod common_engine;
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
    common_engine::wait_engine_leads(e, g, Duration::from_secs(20));
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

// ---------------------------------------------------------------------------------------
// A three-node cluster over QUIC with one node in a child process.

mod file_sm;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use file_sm::FileSm;
use flotilla_engine::raft::NodeId;

/// Groups under load (1..=LOAD_GROUPS), all with replicas on nodes 1 (the child), 2 and 3.
const LOAD_GROUPS: u64 = 6;
/// A group that gets a few entries and then stays idle: its live records keep old WAL
/// segments sparse, so WAL compaction rewrites them.
const IDLE_GROUP: u64 = LOAD_GROUPS + 1;
const CLUSTER_ENV: &str = "FLOTILLA_CLUSTER_CHILD_DIR";
/// Bytes of each proposal: the value (8 bytes, little-endian), then padding so the WAL
/// fills segments quickly.
const PAYLOAD: usize = 64;
/// Every random SIGKILL cycle and every failpoint cycle (the feature `failpoints`).
const RANDOM_KILLS: usize = 20;
const CHILD: NodeId = 1;
const PEERS: [NodeId; 2] = [2, 3];
const MEMBERS: [NodeId; 3] = [1, 2, 3];
const BARRIER: u64 = 1 << 63;

fn payload(v: u64) -> Bytes {
    let mut b = vec![0u8; PAYLOAD];
    b[..8].copy_from_slice(&v.to_le_bytes());
    Bytes::from(b)
}

fn cluster_config(id: NodeId, dir: &Path, pwrite: bool) -> EngineConfig {
    let mut c = EngineConfig::new(id, dir);
    c.workers = 2;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = flotilla_wal::MIN_SEGMENT_SIZE;
    c.wal.max_write_bytes = 32 << 10;
    c.max_uncommitted_bytes = 16 << 10;
    c.max_entry_bytes = 1024;
    c.compact_entries = 100;
    if pwrite {
        c.wal.backend = flotilla_wal::BackendChoice::Pwrite;
    }
    c
}

/// The files a node needs to join: the CA, its certificate and key, and every address.
fn write_identity(tmp: &Path, ca: &flotilla_net::ClusterCa, addrs: &BTreeMap<NodeId, std::net::SocketAddr>) {
    std::fs::write(tmp.join("ca.pem"), &ca.pem().cert_pem).unwrap();
    for &id in addrs.keys() {
        let p = ca.issue_node(id).unwrap();
        std::fs::write(tmp.join(format!("n{id}.cert")), &p.cert_pem).unwrap();
        std::fs::write(tmp.join(format!("n{id}.key")), &p.key_pem).unwrap();
    }
    let list: String = addrs.iter().map(|(id, a)| format!("{id} {a}\n")).collect();
    std::fs::write(tmp.join("addrs"), list).unwrap();
}

fn quic(tmp: &Path, id: NodeId) -> flotilla_engine::transport::QuicTransport {
    let rd = |n: String| std::fs::read_to_string(tmp.join(n)).unwrap();
    let ident = flotilla_net::NodeIdentity::from_pem(
        &rd("ca.pem".into()),
        &rd(format!("n{id}.cert")),
        &rd(format!("n{id}.key")),
    )
    .unwrap();
    let addrs: BTreeMap<NodeId, std::net::SocketAddr> = rd("addrs".into())
        .lines()
        .map(|l| {
            let (n, a) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), a.parse().unwrap())
        })
        .collect();
    let mut cfg = flotilla_net::NetConfig::new(id);
    cfg.listen = addrs[&id];
    let deadline = Instant::now() + Duration::from_secs(10);
    // A restarted node binds its old port, which its previous life may still hold briefly.
    let (ep, inbox) = loop {
        match flotilla_net::Endpoint::start(cfg.clone().validate().unwrap(), &ident) {
            Ok(x) => break x,
            Err(e) => {
                assert!(Instant::now() < deadline, "node {id}: cannot bind {}: {e}", cfg.listen);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    for (&n, &a) in &addrs {
        if n != id {
            ep.set_peer_addr(n, a);
        }
    }
    flotilla_engine::transport::QuicTransport::new(ep, inbox, Default::default())
}

fn open_node(tmp: &Path, id: NodeId, pwrite: bool) -> Engine {
    let dir = tmp.join(format!("n{id}"));
    let sm_dir = dir.join("sm");
    let factory: StateMachineFactory = Arc::new(move |g| FileSm::boxed(&sm_dir, g));
    let e = Engine::open(cluster_config(id, &dir, pwrite), Box::new(quic(tmp, id)), factory).unwrap();
    for g in 1..=IDLE_GROUP {
        e.create_group(g, &MEMBERS, FileSm::boxed(&dir.join("sm"), g)).unwrap();
    }
    e
}

fn is_leader(e: &Engine, g: u64) -> bool {
    e.group_status(g).is_some_and(|s| s.role == Role::Leader)
}

/// The child: node 1 of the cluster. Optionally arms one failpoint to SIGKILL the process
/// at its Nth hit (printing `FAILPOINT name` first); proposes on the groups it leads and
/// prints `ACK group value` after each acknowledgement, until killed.
#[test]
fn cluster_child() {
    let Ok(tmp) = std::env::var(CLUSTER_ENV) else { return };
    let tmp = PathBuf::from(tmp);
    let cycle: u64 = std::env::var("FLOTILLA_CRASH_CYCLE").unwrap().parse().unwrap();
    let load = std::env::var("FLOTILLA_CHILD_LOAD").is_ok_and(|v| v == "1");
    let pwrite = std::env::var("FLOTILLA_CHILD_PWRITE").is_ok_and(|v| v == "1");
    #[cfg(feature = "failpoints")]
    if let Ok(fp) = std::env::var("FLOTILLA_FAILPOINT") {
        let (name, nth) = fp.rsplit_once(':').unwrap();
        let nth: u64 = nth.parse().unwrap();
        let hits = std::sync::atomic::AtomicU64::new(0);
        let name_owned = name.to_string();
        fail::cfg_callback(name, move || {
            if hits.fetch_add(1, Ordering::SeqCst) + 1 == nth {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "FAILPOINT {name_owned}");
                let _ = o.flush();
                // SAFETY: kill(2) on our own pid with a valid signal number.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        })
        .unwrap();
    }
    let e = open_node(&tmp, CHILD, pwrite);
    {
        let mut o = std::io::stdout().lock();
        // The test harness printed "test cluster_child ... " without a line end.
        writeln!(o, "\nREADY").unwrap();
        o.flush().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    std::thread::scope(|s| {
        for g in 1..=LOAD_GROUPS {
            let e = &e;
            s.spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    if !load || !is_leader(e, g) {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    i += 1;
                    let v = (1 << 62) | (cycle << 40) | (g << 32) | i;
                    if let Ok(Ok(Ok(_))) =
                        e.propose(g, payload(v)).map(|p| p.wait_timeout(Duration::from_secs(5)))
                    {
                        let mut o = std::io::stdout().lock();
                        writeln!(o, "ACK {g} {v}").unwrap();
                        o.flush().unwrap();
                    }
                }
            });
        }
    });
}

/// What one child life printed.
#[derive(Default)]
struct ChildOutput {
    ready: AtomicBool,
    acks: Mutex<Vec<(u64, u64)>>,
    failpoints: Mutex<Vec<String>>,
}

struct ChildRun {
    child: std::process::Child,
    out: Arc<ChildOutput>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ChildRun {
    /// A failed assertion leaves no child running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_child(tmp: &Path, cycle: u64, load: bool, pwrite: bool, failpoint: Option<(&str, u64)>) -> ChildRun {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "cluster_child", "--nocapture", "--test-threads=1"])
        .env(CLUSTER_ENV, tmp)
        .env("FLOTILLA_CRASH_CYCLE", cycle.to_string())
        .env("FLOTILLA_CHILD_LOAD", if load { "1" } else { "0" })
        .env("FLOTILLA_CHILD_PWRITE", if pwrite { "1" } else { "0" })
        .env_remove("FLOTILLA_FAILPOINT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.join(format!("child-{cycle}.stderr"))).unwrap());
    if let Some((name, nth)) = failpoint {
        cmd.env("FLOTILLA_FAILPOINT", format!("{name}:{nth}"));
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let out = Arc::new(ChildOutput::default());
    let o = out.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness's "test cluster_child ... " may precede the first line.
            let line = line.rsplit("... ").next().unwrap_or_default();
            let mut p = line.split_whitespace();
            match p.next() {
                Some("READY") => o.ready.store(true, Ordering::SeqCst),
                Some("ACK") => {
                    let g: u64 = p.next().unwrap().parse().unwrap();
                    let v: u64 = p.next().unwrap().parse().unwrap();
                    o.acks.lock().unwrap().push((g, v));
                }
                Some("FAILPOINT") => o.failpoints.lock().unwrap().push(p.next().unwrap().to_string()),
                _ => {}
            }
        }
    });
    ChildRun { child, out, reader: Some(reader) }
}

/// Waits (bounded) until the child exits; kills it at the deadline. Returns its status and
/// whether it exited by itself.
fn wait_exit(run: &mut ChildRun, timeout: Duration) -> (std::process::ExitStatus, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = run.child.try_wait().unwrap() {
            return (st, true);
        }
        if Instant::now() > deadline {
            run.child.kill().unwrap();
            return (run.child.wait().unwrap(), false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Checks every node's state machine file of every group: each applies every index once
/// from 1, and the nodes agree on the indexes they share.
fn check_files(tmp: &Path) -> BTreeMap<(NodeId, u64), Vec<u64>> {
    let mut all = BTreeMap::new();
    for g in 1..=IDLE_GROUP {
        let mut seqs: Vec<(NodeId, Vec<u64>)> = Vec::new();
        for n in MEMBERS {
            let recs = file_sm::read(&tmp.join(format!("n{n}/sm")), g);
            let vals = file_sm::check(&recs).unwrap_or_else(|e| panic!("node {n} group {g}: {e}"));
            seqs.push((n, vals));
        }
        for (n, s) in &seqs {
            for (m, t) in &seqs {
                let k = s.len().min(t.len());
                if let Some(i) = (0..k).find(|&i| s[i] != t[i]) {
                    panic!("group {g}: nodes {n} and {m} applied different entries at index {}", i + 1);
                }
            }
        }
        for (n, s) in seqs {
            all.insert((n, g), s);
        }
    }
    all
}

/// Proposes `count` values on each of `groups` through nodes 2 and 3 (whichever leads),
/// returning the acknowledged (group, value)s.
fn propose_through_peers(peers: &[Engine], groups: &[u64], count: u64, base: u64) -> Vec<(u64, u64)> {
    let acks = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for &g in groups {
            let acks = &acks;
            s.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut i = 0;
                while i < count {
                    assert!(Instant::now() < deadline, "group {g}: peers did not commit {count} values");
                    let Some(e) = peers.iter().find(|e| is_leader(e, g)) else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let v = base | (g << 32) | i;
                    if let Ok(Ok(Ok(_))) =
                        e.propose(g, payload(v)).map(|p| p.wait_timeout(Duration::from_secs(5)))
                    {
                        acks.lock().unwrap().push((g, v));
                        i += 1;
                    } else {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
        }
    });
    acks.into_inner().unwrap()
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy)]
enum Cycle {
    /// SIGKILL at a random moment after the child is ready.
    Random,
    /// The named failpoint kills the child at its Nth hit.
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    Failpoint(&'static str, u64),
}

/// Node 1 runs in a child process that is SIGKILLed at random moments and by every named
/// failpoint while it and the in-process nodes 2 and 3 (over QUIC on loopback) take
/// proposals, leadership moves and snapshots. After every kill each node's persistent
/// state machine has applied every index exactly once and the nodes agree; at the end
/// every acknowledged proposal is applied on all three nodes.
#[test]
fn cluster_sigkill_and_failpoint_cycles() {
    if std::env::var(CLUSTER_ENV).is_ok() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let addrs: BTreeMap<NodeId, std::net::SocketAddr> = MEMBERS
        .iter()
        .map(|&id| (id, std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()))
        .collect();
    write_identity(tmp, &flotilla_net::ClusterCa::generate().unwrap(), &addrs);
    let peers: Vec<Engine> = PEERS.iter().map(|&id| open_node(tmp, id, false)).collect();

    #[cfg_attr(not(feature = "failpoints"), allow(unused_mut))]
    let mut plan = vec![Cycle::Random; RANDOM_KILLS];
    #[cfg(feature = "failpoints")]
    {
        let fps = [
            Cycle::Failpoint("wal::after_write_before_fsync", 20),
            Cycle::Failpoint("engine::after_fsync_before_send", 30),
            Cycle::Failpoint("engine::vote_durable_before_reply", 1),
            Cycle::Failpoint("engine::snapshot_file_before_reset", 1),
            Cycle::Failpoint("wal::rewrite_mid", 1),
            // The log reset is durable, the file state machine not restored yet: recovery
            // restores it from the snapshot file (persist, then apply).
            Cycle::Failpoint("engine::snapshot_reset_durable_before_restore", 1),
        ];
        for (i, fp) in fps.into_iter().enumerate() {
            plan.insert(2 + i * 4, fp);
        }
    }

    let stop = AtomicBool::new(false);
    let peer_acks: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let mut child_acks: Vec<(u64, u64)> = Vec::new();
    // Acknowledged by the setup proposals (sequential per group, apart from the load).
    let mut prep_acks: Vec<(u64, u64)> = Vec::new();
    let mut hit: Vec<String> = Vec::new();
    let mut seed: u64 = 0x00c0_ffee;
    let mut rand = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    std::thread::scope(|s| {
        // A failed assertion below stops the load threads before the scope joins them.
        let _stop = StopOnDrop(&stop);
        // Load through the peers, and leadership moves between all three nodes (so the
        // child campaigns, and grants votes to transfers between the peers).
        for g in 1..=LOAD_GROUPS {
            let (peers, stop, peer_acks) = (&peers, &stop, &peer_acks);
            s.spawn(move || {
                let mut i = 0u64;
                let deadline = Instant::now() + Duration::from_secs(400);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let Some(e) = peers.iter().find(|e| is_leader(e, g)) else {
                        std::thread::sleep(Duration::from_millis(3));
                        continue;
                    };
                    i += 1;
                    let v = (2 << 56) | (g << 32) | i;
                    if let Ok(Ok(Ok(_))) =
                        e.propose(g, payload(v)).map(|p| p.wait_timeout(Duration::from_secs(5)))
                    {
                        peer_acks.lock().unwrap().push((g, v));
                    }
                }
            });
        }
        {
            let (peers, stop) = (&peers, &stop);
            s.spawn(move || {
                let mut x: u64 = 99;
                let deadline = Instant::now() + Duration::from_secs(400);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(60));
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let g = 1 + (x >> 33) % LOAD_GROUPS;
                    let to = MEMBERS[((x >> 40) % 3) as usize];
                    if let Some(l) = peers.iter().find(|e| is_leader(e, g)) {
                        let _ = l.transfer_leader(g, to);
                    }
                }
            });
        }
        // A few entries on the idle group, then nothing more.
        let idle = propose_through_peers(&peers, &[IDLE_GROUP], 5, 4 << 56);
        prep_acks.extend(idle);

        for (n, cycle) in plan.iter().enumerate() {
            let cycle_no = n as u64 + 1;
            let pwrite = rand(2) == 0;
            match *cycle {
                Cycle::Random => {
                    let mut run = spawn_child(tmp, cycle_no, true, pwrite, None);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !run.out.ready.load(Ordering::SeqCst) {
                        assert!(Instant::now() < deadline, "cycle {cycle_no}: child never ready");
                        assert!(run.child.try_wait().unwrap().is_none(), "cycle {cycle_no}: child exited");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::thread::sleep(Duration::from_millis(150 + rand(600)));
                    run.child.kill().unwrap(); // SIGKILL
                    let st = run.child.wait().unwrap();
                    assert_eq!(st.signal(), Some(libc::SIGKILL), "cycle {cycle_no}: {st:?}");
                    run.reader.take().unwrap().join().unwrap();
                    child_acks.extend(run.out.acks.lock().unwrap().iter().copied());
                }
                Cycle::Failpoint(name, nth) => {
                    if name.starts_with("engine::snapshot_") {
                        // The child is down: the peers commit and compact past it, so it
                        // catches up by snapshot.
                        let groups: Vec<u64> = (1..=LOAD_GROUPS).collect();
                        prep_acks.extend(propose_through_peers(
                            &peers,
                            &groups,
                            250,
                            3 << 56 | cycle_no << 48,
                        ));
                    }
                    let pwrite = pwrite || name == "wal::after_write_before_fsync";
                    let mut run = spawn_child(tmp, cycle_no, true, pwrite, Some((name, nth)));
                    let (st, by_itself) = wait_exit(&mut run, Duration::from_secs(60));
                    run.reader.take().unwrap().join().unwrap();
                    child_acks.extend(run.out.acks.lock().unwrap().iter().copied());
                    let fired = run.out.failpoints.lock().unwrap().clone();
                    let err = std::fs::read_to_string(tmp.join(format!("child-{cycle_no}.stderr")));
                    assert!(by_itself, "cycle {cycle_no}: failpoint {name} never killed the child");
                    assert_eq!(
                        fired,
                        vec![name.to_string()],
                        "cycle {cycle_no}: {st:?}; child's stderr: {err:?}"
                    );
                    assert_eq!(st.signal(), Some(libc::SIGKILL), "cycle {cycle_no}: {st:?}");
                    hit.push(name.to_string());
                }
            }
            check_files(tmp);
        }
        stop.store(true, Ordering::SeqCst);
    });

    // Final: a barrier through the peers (the child is down, so they lead), then the child
    // recovers without load and must apply up to it.
    let groups: Vec<u64> = (1..=IDLE_GROUP).collect();
    let barrier: Vec<(u64, u64)> = propose_through_peers(&peers, &groups, 1, BARRIER);
    let mut run = spawn_child(tmp, plan.len() as u64 + 1, false, false, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in MEMBERS {
        for &(g, v) in &barrier {
            while !file_sm::read(&tmp.join(format!("n{n}/sm")), g).iter().any(|r| r.1 == v) {
                assert!(Instant::now() < deadline, "node {n} group {g}: barrier not applied");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    run.child.kill().unwrap();
    let _ = run.child.wait();
    run.reader.take().unwrap().join().unwrap();
    for e in peers {
        e.shutdown();
    }
    let all = check_files(tmp);
    let peer_acks = peer_acks.into_inner().unwrap();
    let mut per_group: HashMap<u64, Vec<(&str, u64)>> = HashMap::new();
    for &(g, v) in &child_acks {
        per_group.entry(g).or_default().push(("child", v));
    }
    for &(g, v) in &peer_acks {
        per_group.entry(g).or_default().push(("peers", v));
    }
    for &(g, v) in &prep_acks {
        per_group.entry(g).or_default().push(("setup", v));
    }
    for g in 1..=IDLE_GROUP {
        let b = barrier.iter().find(|x| x.0 == g).unwrap().1;
        for n in MEMBERS {
            let seq = &all[&(n, g)];
            let end = seq.iter().position(|&v| v == b).unwrap();
            let pos: HashMap<u64, usize> = seq[..end].iter().enumerate().map(|(i, v)| (*v, i)).collect();
            let mut seen = HashSet::new();
            for v in seq[..end].iter().filter(|&&v| v != file_sm::NO_COMMAND) {
                assert!(seen.insert(*v), "node {n} group {g}: command {v:#x} applied twice");
            }
            let mut last: HashMap<&str, usize> = HashMap::new();
            for &(src, v) in per_group.get(&g).map(Vec::as_slice).unwrap_or(&[]) {
                let Some(&p) = pos.get(&v) else {
                    panic!("node {n} group {g}: acknowledged {v:#x} ({src}) lost")
                };
                if let Some(&l) = last.get(src) {
                    assert!(l < p, "node {n} group {g}: {src}'s acknowledged commands out of order");
                }
                last.insert(src, p);
            }
        }
    }
    eprintln!(
        "{} cycles ({RANDOM_KILLS} random SIGKILLs, failpoints hit: {hit:?}); acknowledged: {} by the child, {} by the peers, {} in setup",
        plan.len(),
        child_acks.len(),
        peer_acks.len(),
        prep_acks.len()
    );
    assert!(child_acks.len() > 50, "the child acknowledged too little to prove anything");
    #[cfg(feature = "failpoints")]
    assert_eq!(hit.len(), 6, "every failpoint killed the child: {hit:?}");
}
