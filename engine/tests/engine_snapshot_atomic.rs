//! Snapshot install is crash-atomic for a state machine that persists its applied index
//! (the file state machine of the crash tests): the state machine is restored only after
//! the WAL records resetting the log are durable (persist, then apply), and a node whose
//! state machine is past its log's end refuses to open instead of clamping the index
//! (which would take the stale log tail as committed).

#![allow(clippy::unwrap_used, missing_docs)]

mod common_engine;
mod file_sm;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "failpoints")]
use std::time::Instant;

use bytes::Bytes;
use file_sm::FileSm;
use flotilla_engine::api::*;
use flotilla_engine::raft::{NodeId, Role};
#[cfg(feature = "failpoints")]
use flotilla_engine::transport::FaultControl;
use flotilla_engine::transport::MemoryNetwork;

const LONG: Duration = Duration::from_secs(60);
const GROUP: u64 = 1;

fn config(id: NodeId, dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(id, dir);
    c.workers = 1;
    c.tick_interval = Duration::from_millis(5);
    c.wal.segment_size = flotilla_wal::MIN_SEGMENT_SIZE;
    c.wal.max_write_bytes = 32 << 10;
    c.max_uncommitted_bytes = 16 << 10;
    c.max_entry_bytes = 1024;
    c.compact_entries = 20;
    c
}

fn factory(dir: &Path) -> StateMachineFactory {
    let sm_dir = dir.join("sm");
    Arc::new(move |g| FileSm::boxed(&sm_dir, g))
}

fn wait_for(what: &str, f: impl FnMut() -> bool) {
    common_engine::wait_until(what, LONG, f);
}

fn value(v: u64) -> Bytes {
    Bytes::copy_from_slice(&v.to_le_bytes())
}

/// A single-node group applies three entries; then its state machine file is made to
/// claim five more (as if a restore had run ahead of the log). Reopening is refused with
/// `OpenError::AppliedPastLog` naming the group and both indexes, rather than clamping the
/// applied index to the log's end.
#[test]
fn open_refuses_state_machine_past_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let e = Engine::open(config(1, &dir), Box::new(MemoryNetwork::new().join(1, 64)), factory(&dir)).unwrap();
    e.create_group(GROUP, &[1], FileSm::boxed(&dir.join("sm"), GROUP)).unwrap();
    wait_for("a leader", || e.group_status(GROUP).is_some_and(|s| s.role == Role::Leader));
    for v in 1..=3 {
        e.propose(GROUP, value(v)).unwrap().wait().unwrap();
    }
    let last = e.group_status(GROUP).unwrap().last_index;
    e.shutdown();
    let recs = file_sm::read(&dir.join("sm"), GROUP);
    assert_eq!(recs.last().unwrap().0, last, "the state machine applied the whole log");
    let mut sm = FileSm::open(&dir.join("sm"), GROUP);
    for i in 1..=5 {
        flotilla_engine::api::StateMachine::apply(&mut sm, last + i, 1, Some(&(100 + i).to_le_bytes()));
    }
    drop(sm);
    match Engine::open(config(1, &dir), Box::new(MemoryNetwork::new().join(1, 64)), factory(&dir)) {
        Err(OpenError::AppliedPastLog { group, applied, last: l }) => {
            assert_eq!((group, applied, l), (GROUP, last + 5, last));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a node whose state machine is past its log"),
    }
}

/// Node 3 (file state machine, WAL over a fault file system) is cut off while nodes 1 and
/// 2 commit and compact past it; when it rejoins it receives a snapshot, and the WAL write
/// carrying the log reset fails (EIO, nothing written: armed by the failpoint between the
/// snapshot file and the reset). The engine stops; its state machine must not have been
/// restored (the reset never became durable). After a power loss the node reopens (it
/// would be refused with `AppliedPastLog` had the restore run first), catches up, and its
/// state machine holds every index exactly once, agreeing with the others.
#[cfg(feature = "failpoints")]
#[test]
fn restore_waits_for_the_durable_log_reset() {
    use flotilla_wal::fault::FaultFs;
    use flotilla_wal::WriteFault;

    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let net = MemoryNetwork::new();
    let fault = FaultControl::new(1);
    let fs = Arc::new(FaultFs::new(tmp.path().join("trash"), 3).unwrap());
    let open = |id: NodeId, fs: Option<Arc<FaultFs>>| {
        let d = &dirs[id as usize - 1];
        let t = Box::new(fault.wrap(net.join(id, 1 << 12)));
        match fs {
            Some(fs) => Engine::open_with_fs(config(id, d), t, factory(d), fs).unwrap(),
            None => Engine::open(config(id, d), t, factory(d)).unwrap(),
        }
    };
    let e1 = open(1, None);
    let e2 = open(2, None);
    let e3 = open(3, Some(fs.clone()));
    for (id, e) in [(2, &e2), (3, &e3), (1, &e1)] {
        e.create_group_led_by(GROUP, &[1, 2, 3], 1, FileSm::boxed(&dirs[id - 1].join("sm"), GROUP)).unwrap();
    }
    wait_for("node 1 to lead", || e1.group_status(GROUP).is_some_and(|s| s.role == Role::Leader));
    let leader = |v: u64| {
        let deadline = Instant::now() + LONG;
        loop {
            assert!(Instant::now() < deadline, "value {v} not committed");
            let l = [&e1, &e2]
                .into_iter()
                .find(|e| e.group_status(GROUP).is_some_and(|s| s.role == Role::Leader));
            if let Some(Ok(Ok(_))) =
                l.map(|e| e.propose(GROUP, value(v)).map(|p| p.wait_timeout(LONG).ok().unwrap()))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for v in 1..=3 {
        leader(v);
    }
    let applied = |e: &Engine| e.group_status(GROUP).map_or(0, |s| s.applied);
    let caught_up = e1.group_status(GROUP).unwrap().commit;
    wait_for("node 3 to apply", || applied(&e3) >= caught_up);

    fault.isolate(3, &[1, 2]);
    for v in 4..=80 {
        leader(v);
    }
    // Compaction every 20 applied entries: the first is already past node 3's log.
    wait_for("nodes 1 and 2 to compact past node 3", || {
        e1.metrics().compactions >= 2 && e2.metrics().compactions >= 2
    });
    let before = file_sm::read(&dirs[2].join("sm"), GROUP);
    assert_eq!(before.last().unwrap().0, caught_up);

    let armed = fs.clone();
    fail::cfg_callback("engine::snapshot_file_before_reset", move || armed.fail_next_write(WriteFault::Eio))
        .unwrap();
    fault.heal();
    wait_for("node 3 to stop on the failed write", || {
        e3.read_index(GROUP).err() == Some(ReadError::StorageFailed)
    });
    fail::remove("engine::snapshot_file_before_reset");
    // Whatever the apply thread was handed, it finishes before shutdown returns.
    e3.shutdown();
    fs.crash().unwrap();
    let after = file_sm::read(&dirs[2].join("sm"), GROUP);
    assert_eq!(
        after.last().map(|r| r.0),
        Some(caught_up),
        "the state machine was restored before the log reset was durable"
    );

    let e3 = open(3, None);
    let target = e1.group_status(GROUP).unwrap().commit.max(e2.group_status(GROUP).unwrap().commit);
    wait_for("node 3 to catch up", || applied(&e3) >= target);
    for v in 81..=85 {
        leader(v);
    }
    let target = e1.group_status(GROUP).unwrap().commit.max(e2.group_status(GROUP).unwrap().commit);
    wait_for("node 3 to catch up again", || applied(&e3) >= target);
    for e in [e1, e2, e3] {
        e.shutdown();
    }
    let seqs: Vec<Vec<u64>> = dirs
        .iter()
        .map(|d| file_sm::check(&file_sm::read(&d.join("sm"), GROUP)).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let k = seqs.iter().map(Vec::len).min().unwrap();
    assert!(k as u64 >= target, "every node applied up to {target}");
    for s in &seqs[1..] {
        assert_eq!(s[..k], seqs[0][..k], "the nodes applied the same entries");
    }
    for v in 1..=85 {
        assert!(seqs[2].contains(&v), "value {v} missing on node 3");
    }
}
