//! The engine over a fault-injecting file system ([`FaultFs`]): a failed fsync stops the
//! engine (typed `StorageFailed`, nothing acknowledged after it), and power losses at
//! random moments (unsynced writes torn, lost or bit-flipped) lose nothing acknowledged.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_engine::api::*;
use flotilla_engine::transport::MemoryNetwork;
use flotilla_wal::fault::FaultFs;
use flotilla_wal::SyncFault;

const GROUPS: u64 = 4;

mod common_engine;
mod list_sm;
use list_sm::{Applied, ListSm};

fn open(dir: &Path, applied: &Applied, fs: Option<Arc<FaultFs>>) -> Engine {
    let mut c = EngineConfig::new(1, dir);
    c.workers = 2;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = 1 << 20;
    c.wal.max_write_bytes = 256 << 10;
    c.wal.backend = flotilla_wal::BackendChoice::Pwrite;
    c.max_uncommitted_bytes = 256 << 10;
    c.max_entry_bytes = 1024;
    c.compact_entries = 200;
    let a = applied.clone();
    let factory: StateMachineFactory = Arc::new(move |group| {
        Box::new(ListSm { group, index: 0, applied: a.clone() }) as Box<dyn StateMachine>
    });
    let t = Box::new(MemoryNetwork::new().join(1, 1024));
    match fs {
        Some(fs) => Engine::open_with_fs(c, t, factory, fs).unwrap(),
        None => Engine::open(c, t, factory).unwrap(),
    }
}

fn wait_leader(e: &Engine, g: u64) {
    common_engine::wait_engine_leads(e, g, Duration::from_secs(20));
}

fn create_all(e: &Engine, applied: &Applied) {
    for g in 1..=GROUPS {
        e.create_group(g, &[1], Box::new(ListSm { group: g, index: 0, applied: applied.clone() })).unwrap();
        wait_leader(e, g);
    }
}

/// Proposes distinct values on every group until the engine stops with
/// `StorageFailed` (or `stop_after` passes); returns the acknowledged values per group.
fn load(e: &Engine, cycle: u64, stop_after: Duration) -> (HashMap<u64, Vec<u64>>, bool) {
    let acked = Mutex::new(HashMap::<u64, Vec<u64>>::new());
    let failed = Mutex::new(false);
    let deadline = Instant::now() + stop_after;
    std::thread::scope(|s| {
        for g in 1..=GROUPS {
            let (acked, failed) = (&acked, &failed);
            s.spawn(move || {
                for i in 0..1_000_000u64 {
                    if Instant::now() > deadline {
                        return;
                    }
                    let v = (cycle << 40) | (g << 32) | i;
                    let r = e.propose(g, Bytes::copy_from_slice(&v.to_le_bytes())).map(|p| {
                        p.wait_timeout(Duration::from_secs(10))
                            .unwrap_or_else(|_| panic!("proposal never resolved"))
                    });
                    match r {
                        Ok(Ok(_)) => acked.lock().unwrap().entry(g).or_default().push(v),
                        Err(ProposeError::StorageFailed) | Ok(Err(ProposeError::StorageFailed)) => {
                            *failed.lock().unwrap() = true;
                            return;
                        }
                        Ok(Err(ProposeError::Indeterminate)) => {}
                        other => panic!("unexpected {other:?}"),
                    }
                }
            });
        }
    });
    (acked.into_inner().unwrap(), failed.into_inner().unwrap())
}

fn check(applied: &Applied, acked: &HashMap<u64, Vec<u64>>) {
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
}

/// A failed fsync stops the engine: waiters and later calls answer `StorageFailed`.
#[test]
fn failed_fsync_stops_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultFs::new(tmp.path().join("trash"), 7).unwrap());
    let applied = Applied::default();
    let e = open(&tmp.path().join("data"), &applied, Some(fs.clone()));
    create_all(&e, &applied);
    let (acked, failed) = load(&e, 1, Duration::from_millis(100));
    assert!(!failed && acked.values().map(Vec::len).sum::<usize>() > 0);
    assert!(!e.storage_failed());
    fs.fail_next_sync(SyncFault::Eio);
    let (_, failed) = load(&e, 2, Duration::from_secs(20));
    assert!(failed, "the engine kept acknowledging after a failed fsync");
    assert_eq!(e.propose(1, Bytes::from_static(b"12345678")).err(), Some(ProposeError::StorageFailed));
    assert_eq!(e.read_index(1).err(), Some(ReadError::StorageFailed));
    assert!(e.storage_failed(), "health checks see the stop");
    e.shutdown();
}

/// Power losses at random moments under load; after each, the node reopens from what
/// reached the disk: every acknowledged proposal is there, in order, applied once.
#[test]
fn power_loss_cycles_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut acked: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut seed = 0x9e37_79b9_u64;
    for cycle in 1..=6u64 {
        let fs = Arc::new(FaultFs::new(tmp.path().join(format!("trash{cycle}")), seed).unwrap());
        let applied = Applied::default();
        let e = open(&data, &applied, Some(fs.clone()));
        create_all(&e, &applied);
        if cycle > 1 {
            // Recovery of the previous cycle's disk state already holds every ack.
            for g in 1..=GROUPS {
                let barrier = u64::MAX - (cycle << 8) - g;
                e.propose(g, Bytes::copy_from_slice(&barrier.to_le_bytes())).unwrap().wait().unwrap();
            }
            check(&applied, &acked);
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (got, _) = load(&e, cycle, Duration::from_millis(50 + (seed >> 33) % 150));
        fs.power_off_after((seed >> 20) % 40);
        let (got2, failed) = load(&e, cycle + 100, Duration::from_secs(20));
        assert!(failed, "the engine did not stop after the power went off");
        for (g, v) in got.into_iter().chain(got2) {
            acked.entry(g).or_default().extend(v);
        }
        e.shutdown();
        fs.crash().unwrap();
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total > 100, "too few acknowledgements to prove anything ({total})");
    let applied = Applied::default();
    let e = open(&data, &applied, None);
    create_all(&e, &applied);
    for g in 1..=GROUPS {
        e.propose(g, Bytes::copy_from_slice(&(u64::MAX - g).to_le_bytes())).unwrap().wait().unwrap();
    }
    check(&applied, &acked);
    e.shutdown();
}

/// A worker never waits on the disk to create a group (issue 10, point 6): while the
/// founding write of a new group is not durable (its fsync held), the worker that owns it
/// (the only one) keeps serving its other groups, and the creation completes once the
/// write is durable.
#[test]
fn group_creation_does_not_block_the_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(FaultFs::new(tmp.path().join("trash"), 11).unwrap());
    let applied = Applied::default();
    let mut c = EngineConfig::new(1, tmp.path().join("data"));
    c.workers = 1;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = 1 << 20;
    c.wal.max_write_bytes = 256 << 10;
    c.wal.backend = flotilla_wal::BackendChoice::Pwrite;
    c.max_uncommitted_bytes = 256 << 10;
    c.max_entry_bytes = 1024;
    let a = applied.clone();
    let factory: StateMachineFactory = Arc::new(move |group| {
        Box::new(ListSm { group, index: 0, applied: a.clone() }) as Box<dyn StateMachine>
    });
    let t = Box::new(MemoryNetwork::new().join(1, 1024));
    let e = Engine::open_with_fs(c, t, factory, fs.clone()).unwrap();
    e.create_group(1, &[1], Box::new(ListSm { group: 1, index: 0, applied: applied.clone() })).unwrap();
    wait_leader(&e, 1);
    e.propose(1, Bytes::from_static(b"12345678")).unwrap().wait().unwrap();

    fs.hold_next_sync();
    std::thread::scope(|s| {
        let creating = s.spawn(|| {
            e.create_group(2, &[1], Box::new(ListSm { group: 2, index: 0, applied: applied.clone() }))
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fs.sync_held() {
            assert!(Instant::now() < deadline, "the founding write was never synced");
            std::thread::sleep(Duration::from_millis(1));
        }
        // The founding write waits for the disk; the worker does not.
        for _ in 0..3 {
            let r = e.read_index(1).unwrap().wait_timeout(Duration::from_secs(5));
            let served = matches!(r, Ok(Ok(_)));
            if !served {
                fs.release_sync();
            }
            assert!(served, "the worker stalled on the founding write of another group");
        }
        assert!(!creating.is_finished(), "group 2 was created before its founding write was durable");
        assert!(e.group_status(2).is_none());
        fs.release_sync();
        assert_eq!(creating.join().unwrap(), Ok(()));
    });
    wait_leader(&e, 2);
    e.propose(2, Bytes::from_static(b"87654321")).unwrap().wait().unwrap();
    e.shutdown();
}
