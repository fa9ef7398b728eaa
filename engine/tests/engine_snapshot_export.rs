//! Snapshots on request, export and import (issue 13 point 3): `request_snapshot` reports
//! an index at least the applied one and the log is compacted there; a snapshot exported
//! from a leader under load, imported into fresh engines (one node, and three nodes with
//! other node ids) as a new group, gives state machines equal to the source's state at
//! the exported index, and the new group serves proposals; a corrupt file, a file of
//! another group and an import over an existing group are refused.
#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_engine::{config, wait_engine_leads, wait_until};
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, Role};
use flotilla_engine::transport::MemoryNetwork;

const WAIT: Duration = Duration::from_secs(60);
/// Filler bytes in every snapshot (derived from the state), so a snapshot is streamed in
/// several chunks and a flipped byte anywhere in it is caught.
const FILLER: usize = 300 << 10;

/// A state: applied index, commands applied, hash chain over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct St {
    index: u64,
    commands: u64,
    chain: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn filler(s: &St) -> Vec<u8> {
    let mut x = s.chain ^ s.index;
    (0..FILLER)
        .map(|_| {
            x = mix(x.wrapping_add(1));
            x as u8
        })
        .collect()
}

/// What a test reads of one replica: its current state and its state after every index
/// it applied (the history of digests by index).
#[derive(Default)]
struct Record {
    now: St,
    history: BTreeMap<u64, St>,
    restored: Option<St>,
}

type Shared = Arc<Mutex<Record>>;

/// A hash-chain state machine that records its state at every index.
struct HistSm(Shared);

impl StateMachine for HistSm {
    fn apply(&mut self, index: u64, _term: u64, command: Option<&[u8]>) -> Bytes {
        let mut r = self.0.lock().unwrap();
        assert_eq!(index, r.now.index + 1, "applied out of order or twice");
        r.now.index = index;
        if let Some(c) = command {
            let mut h = r.now.chain;
            for b in c {
                h = mix(h ^ u64::from(*b));
            }
            r.now.chain = mix(h ^ index);
            r.now.commands += 1;
        }
        let now = r.now;
        r.history.insert(index, now);
        Bytes::copy_from_slice(&index.to_le_bytes())
    }

    fn applied_index(&self) -> u64 {
        0
    }

    fn snapshot(&mut self, out: &mut dyn Write) -> std::io::Result<()> {
        let s = self.0.lock().unwrap().now;
        for v in [s.index, s.commands, s.chain] {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&filler(&s))
    }

    fn restore(&mut self, index: u64, _term: u64, input: &mut dyn Read) -> std::io::Result<()> {
        let mut b = [0u8; 24];
        input.read_exact(&mut b)?;
        let v = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let s = St { index: v(0), commands: v(1), chain: v(2) };
        let mut rest = Vec::new();
        input.read_to_end(&mut rest)?;
        if s.index != index || rest != filler(&s) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot does not match"));
        }
        let mut r = self.0.lock().unwrap();
        r.now = s;
        r.history.insert(index, s);
        r.restored = Some(s);
        Ok(())
    }
}

/// One engine over `net` in `dir`, its state machines recorded by group in `reg`.
struct Node {
    id: NodeId,
    engine: Engine,
    reg: Arc<Mutex<BTreeMap<u64, Shared>>>,
}

impl Node {
    fn open(net: &MemoryNetwork, id: NodeId, dir: &Path, compact_entries: u64) -> Node {
        let reg: Arc<Mutex<BTreeMap<u64, Shared>>> = Arc::default();
        let r = reg.clone();
        let factory: StateMachineFactory = Arc::new(move |g| {
            let s = r.lock().unwrap().entry(g).or_default().clone();
            Box::new(HistSm(s)) as Box<dyn StateMachine>
        });
        let engine = Engine::open(
            config(id, dir.join(format!("n{id}")), compact_entries),
            Box::new(net.join(id, 1 << 16)),
            factory,
        )
        .unwrap();
        Node { id, engine, reg }
    }

    fn record(&self, group: u64) -> Shared {
        self.reg.lock().unwrap().entry(group).or_default().clone()
    }

    fn sm(&self, group: u64) -> Box<dyn StateMachine> {
        Box::new(HistSm(self.record(group)))
    }

    fn state(&self, group: u64) -> St {
        self.record(group).lock().unwrap().now
    }
}

/// Proposes `data` at whichever of `nodes` leads `group` until it is applied (bounded).
fn propose(nodes: &[&Node], group: u64, data: &[u8]) -> u64 {
    let deadline = Instant::now() + WAIT;
    for _ in 0..10_000 {
        assert!(Instant::now() < deadline, "group {group}: proposal not applied in time");
        let leader =
            nodes.iter().find(|n| n.engine.group_status(group).is_some_and(|s| s.role == Role::Leader));
        if let Some(l) = leader {
            if let Ok(p) = l.engine.propose(group, Bytes::copy_from_slice(data)) {
                if let Ok(Ok(b)) = p.wait_timeout(Duration::from_secs(5)) {
                    return u64::from_le_bytes(b[..8].try_into().unwrap());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("group {group}: proposal never applied");
}

/// Export from the leader of a 3-node group while a thread keeps proposing; import into
/// a fresh single-node engine and a fresh 3-node cluster with other node ids.
#[test]
fn export_under_load_imports_into_fresh_engines_at_the_exported_state() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let src: Vec<Node> = (1..=3).map(|id| Node::open(&net, id, tmp.path(), 1_000_000)).collect();
    for n in &src {
        n.engine.create_group(1, &[1, 2, 3], n.sm(1)).unwrap();
    }
    let refs: Vec<&Node> = src.iter().collect();
    for i in 0..50u32 {
        propose(&refs, 1, &i.to_le_bytes());
    }
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let path = tmp.path().join("g1.export");
    let (exported, applied_at_call, done_at_export) = std::thread::scope(|s| {
        s.spawn(|| {
            // The load: bounded in count and time.
            let deadline = Instant::now() + WAIT;
            let mut i = 1_000u32;
            while !stop.load(Ordering::Relaxed) && i < 200_000 && Instant::now() < deadline {
                propose(&refs, 1, &i.to_le_bytes());
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        wait_until("load running", WAIT, || done.load(Ordering::Relaxed) >= 20);
        let leader = src
            .iter()
            .find(|n| n.engine.group_status(1).is_some_and(|s| s.role == Role::Leader))
            .expect("a leader");
        let applied_at_call = leader.engine.group_status(1).unwrap().applied;
        let exported = leader.engine.export_snapshot(1, &path).unwrap();
        let done_at_export = done.load(Ordering::Relaxed);
        // The group goes on after the export.
        wait_until("proposals after the export", WAIT, || {
            done.load(Ordering::Relaxed) >= done_at_export + 20
        });
        stop.store(true, Ordering::Relaxed);
        (exported, applied_at_call, (leader.id, done_at_export))
    });
    let (leader, _) = done_at_export;
    assert_eq!(exported.group, 1);
    assert!(exported.index >= applied_at_call, "{exported:?} below the applied index {applied_at_call}");
    assert_eq!(exported.conf.voters.len(), 3);
    assert!(exported.bytes >= FILLER as u64);
    let file_len = std::fs::metadata(&path).unwrap().len();
    assert!(file_len > exported.bytes, "the file holds the data and its header");
    // The source's state at the exported index, as its leader applied it.
    let expected =
        *src[(leader - 1) as usize].record(1).lock().unwrap().history.get(&exported.index).unwrap();
    assert_eq!(expected.index, exported.index);
    assert!(expected.commands >= 70, "{expected:?}");
    let later = src[(leader - 1) as usize].state(1);
    assert!(later.index > exported.index, "the source moved on past the export");

    // A fresh single-node engine, seeded as a new one-member cluster.
    let net1 = MemoryNetwork::new();
    let one = Node::open(&net1, 1, &tmp.path().join("one"), 1_000_000);
    let imp = one.engine.import_snapshot(&path, ImportOptions::new(1).with_members(vec![1])).unwrap();
    assert_eq!((imp.index, imp.term, imp.checksum), (exported.index, exported.term, exported.checksum));
    assert_eq!(one.record(1).lock().unwrap().restored, Some(expected));
    let me = imp.conf.voters[0];
    assert_eq!(me.node, 1);
    assert!(me.id > exported.conf.max_replica_id, "replica id {} reuses one of the source's", me.id);
    wait_engine_leads(&one.engine, 1, WAIT);
    let idx = propose(&[&one], 1, b"after import");
    assert!(idx > exported.index);
    let s = one.state(1);
    assert_eq!(s.commands, expected.commands + 1, "{s:?} continues {expected:?}");

    // A fresh 3-node cluster with other node ids.
    let net3 = MemoryNetwork::new();
    let three: Vec<Node> =
        (11..=13).map(|id| Node::open(&net3, id, &tmp.path().join("three"), 1_000_000)).collect();
    for n in &three {
        let imp =
            n.engine.import_snapshot(&path, ImportOptions::new(1).with_members(vec![11, 12, 13])).unwrap();
        assert_eq!(imp.index, exported.index);
        assert_eq!(n.record(1).lock().unwrap().restored, Some(expected), "node {}", n.id);
    }
    let refs3: Vec<&Node> = three.iter().collect();
    for i in 0..10u32 {
        propose(&refs3, 1, &i.to_le_bytes());
    }
    wait_until("the new cluster converges", WAIT, || {
        let states: Vec<St> = three.iter().map(|n| n.state(1)).collect();
        states.iter().all(|s| *s == states[0] && s.commands == expected.commands + 10)
    });
    for n in src.into_iter().chain([one]).chain(three) {
        n.engine.shutdown();
    }
}

/// A flipped byte is refused as `Corrupt`, a file of another group as `WrongGroup`, an
/// import over an existing group as `GroupExists`; none of them creates anything, and a
/// valid import afterwards succeeds and survives a restart.
#[test]
fn corrupt_foreign_and_duplicate_imports_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let src = Node::open(&net, 1, tmp.path(), 1_000_000);
    src.engine.create_group(5, &[1], src.sm(5)).unwrap();
    wait_engine_leads(&src.engine, 5, WAIT);
    for i in 0..30u32 {
        propose(&[&src], 5, &i.to_le_bytes());
    }
    let path = tmp.path().join("g5.export");
    let exported = src.engine.export_snapshot(5, &path).unwrap();
    let expected = src.state(5);
    assert_eq!(expected.index, exported.index, "nothing applied after the export");

    let net2 = MemoryNetwork::new();
    let dir2 = tmp.path().join("fresh");
    let fresh = Node::open(&net2, 1, &dir2, 1_000_000);
    let good = std::fs::read(&path).unwrap();
    // A byte flipped in the header, in the data, and in the checksum.
    for at in [20, good.len() / 2, good.len() - 2] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        let p = tmp.path().join(format!("flipped-{at}"));
        std::fs::write(&p, &bad).unwrap();
        match fresh.engine.import_snapshot(&p, ImportOptions::new(5).with_members(vec![1])) {
            Err(e @ ImportError::Corrupt { .. }) => assert_eq!(e.class(), ErrorClass::Invalid),
            other => panic!("byte {at} flipped: {other:?}"),
        }
        assert!(fresh.engine.group_status(5).is_none());
    }
    // Truncated.
    let p = tmp.path().join("short");
    std::fs::write(&p, &good[..good.len() - 100]).unwrap();
    assert!(matches!(
        fresh.engine.import_snapshot(&p, ImportOptions::new(5).with_members(vec![1])),
        Err(ImportError::Corrupt { .. })
    ));
    // The file of group 5 imported as group 6.
    match fresh.engine.import_snapshot(&path, ImportOptions::new(6).with_members(vec![1])) {
        Err(ImportError::WrongGroup { expected: 6, found: 5 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(fresh.engine.group_status(6).is_none());
    // Over the group the source engine hosts.
    assert!(matches!(
        src.engine.import_snapshot(&path, ImportOptions::new(5).with_members(vec![1])),
        Err(ImportError::GroupExists(5))
    ));
    assert_eq!(src.state(5), expected, "the source is untouched");
    // Without a member list the file's configuration must hold this node: node 1 is.
    let imp = fresh.engine.import_snapshot(&path, ImportOptions::new(5)).unwrap();
    assert_eq!(imp.conf, exported.conf);
    assert_eq!(fresh.record(5).lock().unwrap().restored, Some(expected));
    // Twice: refused.
    assert!(matches!(
        fresh.engine.import_snapshot(&path, ImportOptions::new(5)),
        Err(ImportError::GroupExists(5))
    ));
    // A node outside the file's configuration, without a member list: refused.
    let net3 = MemoryNetwork::new();
    let other = Node::open(&net3, 9, &tmp.path().join("other"), 1_000_000);
    assert!(matches!(
        other.engine.import_snapshot(&path, ImportOptions::new(5)),
        Err(ImportError::NotAMember)
    ));
    other.engine.shutdown();
    // Durable: after a restart the replica is there, restored from its snapshot file.
    wait_engine_leads(&fresh.engine, 5, WAIT);
    propose(&[&fresh], 5, b"x");
    fresh.engine.shutdown();
    let again = Node::open(&net2, 1, &dir2, 1_000_000);
    wait_engine_leads(&again.engine, 5, WAIT);
    wait_until("recovered state", WAIT, || again.state(5).commands == expected.commands + 1);
    assert_eq!(
        again.record(5).lock().unwrap().restored,
        Some(expected),
        "restored from the imported snapshot"
    );
    again.engine.shutdown();
    src.engine.shutdown();
}

/// `request_snapshot` answers an index at least the applied index at the call, the log is
/// compacted there (a compaction counted), and a later request after more writes answers
/// a later index; unknown groups are refused.
#[test]
fn request_snapshot_reports_at_least_the_applied_index_and_compacts() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let n = Node::open(&net, 1, tmp.path(), 1_000_000);
    n.engine.create_group(3, &[1], n.sm(3)).unwrap();
    wait_engine_leads(&n.engine, 3, WAIT);
    for i in 0..40u32 {
        propose(&[&n], 3, &i.to_le_bytes());
    }
    let before = n.engine.metrics().compactions;
    let applied = n.engine.group_status(3).unwrap().applied;
    let idx = n.engine.request_snapshot(3).unwrap();
    assert!(idx >= applied, "snapshot at {idx}, applied {applied}");
    wait_until("compaction counted", WAIT, || n.engine.metrics().compactions > before);
    let snap_dir = tmp.path().join("n1").join("snap");
    let names: Vec<String> = std::fs::read_dir(&snap_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|f| f.ends_with(&format!("{idx:016x}.snap"))), "{names:?}");
    // Nothing applied since: the same snapshot answers.
    assert_eq!(n.engine.request_snapshot(3).unwrap(), idx);
    for i in 0..10u32 {
        propose(&[&n], 3, &i.to_le_bytes());
    }
    let applied = n.engine.group_status(3).unwrap().applied;
    let idx2 = n.engine.request_snapshot(3).unwrap();
    assert!(idx2 >= applied && idx2 > idx, "{idx2} vs applied {applied}, first {idx}");
    assert!(matches!(n.engine.request_snapshot(99), Err(SnapshotError::GroupNotFound(99))));
    n.engine.shutdown();
}

/// Client sessions are replicated state (issue 13 points 3 and 4): an exported snapshot
/// carries the group's session table, so a retry of a session write after the import is
/// answered with its first result and not applied again.
#[test]
fn an_imported_group_keeps_its_client_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let net = MemoryNetwork::new();
    let src = Node::open(&net, 1, tmp.path(), 1_000_000);
    src.engine.create_group(1, &[1], src.sm(1)).unwrap();
    wait_engine_leads(&src.engine, 1, WAIT);
    let mut session = src.engine.open_session(1).unwrap();
    let seq = session.next_seq();
    let first =
        src.engine.propose_in_session(&session, seq, Bytes::from_static(b"once")).unwrap().wait().unwrap();
    let first_index = u64::from_le_bytes(first[..8].try_into().unwrap());
    let path = tmp.path().join("sessions.export");
    src.engine.export_snapshot(1, &path).unwrap();
    src.engine.shutdown();

    // Another network, another node id: the group as restored from the file.
    let net2 = MemoryNetwork::new();
    let dst = Node::open(&net2, 7, tmp.path(), 1_000_000);
    dst.engine.import_snapshot(&path, ImportOptions::new(1).with_members(vec![7])).unwrap();
    wait_engine_leads(&dst.engine, 1, WAIT);
    let commands = dst.state(1).commands;
    let again =
        dst.engine.propose_in_session(&session, seq, Bytes::from_static(b"once")).unwrap().wait().unwrap();
    assert_eq!(
        &again[..],
        &first[..],
        "the retry is answered with the first application's result ({first_index})"
    );
    // A new write of the same session applies; the retried one did not.
    let seq2 = session.next_seq();
    dst.engine.propose_in_session(&session, seq2, Bytes::from_static(b"new")).unwrap().wait().unwrap();
    assert_eq!(dst.state(1).commands, commands + 1, "only the new write was applied after the import");
    dst.engine.shutdown();
}
