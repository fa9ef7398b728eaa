//! The data directory protects itself (issue 12, point 7): one engine at a time holds it
//! (a second `Engine::open`, in this process or another, gets `OpenError::Locked` naming
//! it), and everything in it is its owner's alone (directories 0700, files 0600: WAL,
//! snapshots, incarnation, lock files).
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flotilla_engine::api::*;
use flotilla_engine::transport::MemoryNetwork;

mod common_engine;
mod list_sm;
use list_sm::{Applied, ListSm};

const CHILD_ENV: &str = "FLOTILLA_DATA_DIR_LOCK_CHILD";

fn open(dir: &Path) -> Result<Engine, OpenError> {
    let c = common_engine::config(1, dir.to_path_buf(), 20);
    let applied = Applied::default();
    let factory: StateMachineFactory = Arc::new(move |group| {
        Box::new(ListSm { group, index: 0, applied: applied.clone() }) as Box<dyn StateMachine>
    });
    Engine::open(c, Box::new(MemoryNetwork::new().join(1, 1024)), factory)
}

fn sm(group: u64) -> Box<dyn StateMachine> {
    Box::new(ListSm { group, index: 0, applied: Applied::default() })
}

/// Every file and directory under `dir` (itself included), with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out =
        vec![(dir.to_path_buf(), std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, true)];
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = e.metadata().unwrap();
        if md.is_dir() {
            out.extend(modes(&e.path()));
        } else {
            out.push((e.path(), md.permissions().mode() & 0o777, false));
        }
    }
    out
}

fn assert_locked(r: Result<Engine, OpenError>, dir: &Path, holder: u32) {
    match r {
        Err(OpenError::Locked { dir: d, holder: h }) => {
            assert_eq!(d, dir);
            assert_eq!(h, Some(holder));
            let msg = OpenError::Locked { dir: d, holder: h }.to_string();
            assert!(msg.contains(&dir.display().to_string()), "{msg}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a second engine opened the same data dir"),
    }
}

#[test]
fn a_second_engine_on_the_data_dir_is_refused_until_the_first_shuts_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let e = open(&dir).unwrap();
    e.create_group(1, &[1], sm(1)).unwrap();
    common_engine::wait_engine_leads(&e, 1, Duration::from_secs(10));
    e.propose(1, Bytes::copy_from_slice(&1u64.to_le_bytes())).unwrap().wait().unwrap();
    assert_locked(open(&dir), &dir, std::process::id());
    // The refused open changed nothing: the first engine goes on.
    e.propose(1, Bytes::copy_from_slice(&2u64.to_le_bytes())).unwrap().wait().unwrap();
    e.shutdown();
    let e = open(&dir).unwrap();
    common_engine::wait_engine_leads(&e, 1, Duration::from_secs(10));
    drop(e);
    // Dropped (not shut down) releases it too.
    drop(open(&dir).unwrap());
}

/// Not a test on its own: the child process of
/// `a_data_dir_held_by_another_process_is_refused` (re-executed with the directory in
/// `FLOTILLA_DATA_DIR_LOCK_CHILD`). Runs an engine until its stdin closes.
#[test]
fn data_dir_holder_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let e = open(Path::new(&dir)).unwrap();
    println!("open");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    // Returns at EOF: when the parent closes our stdin (or dies).
    let _ = std::io::stdin().read_line(&mut line);
    e.shutdown();
}

#[test]
fn a_data_dir_held_by_another_process_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "data_dir_holder_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child says so, with a deadline (a reader thread, since a pipe read
    // cannot time out).
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Reads to the end: the child must be able to print its test result.
        for line in out.lines() {
            // libtest may print the test's name on the same line first.
            if line.is_ok_and(|l| l.trim_end().ends_with("open")) {
                let _ = tx.send(());
            }
        }
    });
    assert!(rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "the child never opened its engine");
    assert_locked(open(&dir), &dir, child.id());
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    drop(open(&dir).unwrap());
}

#[test]
fn files_are_0600_and_directories_0700_wal_snapshots_and_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let e = open(&dir).unwrap();
    e.create_group(1, &[1], sm(1)).unwrap();
    common_engine::wait_engine_leads(&e, 1, Duration::from_secs(10));
    // Past `compact_entries` (20): a snapshot file is written.
    for i in 0..60u64 {
        e.propose(1, Bytes::copy_from_slice(&i.to_le_bytes())).unwrap().wait().unwrap();
    }
    let snaps = || {
        std::fs::read_dir(dir.join("snap"))
            .map(|d| {
                d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "snap")).count()
            })
            .unwrap_or(0)
    };
    common_engine::wait_until("a snapshot file", Duration::from_secs(10), || snaps() > 0);
    let all = modes(&dir);
    e.shutdown();
    for want in ["LOCK", "incarnation", "snap", "wal"] {
        assert!(all.iter().any(|(p, _, _)| p == &dir.join(want)), "no {want} in {all:?}");
    }
    assert!(all.iter().any(|(p, _, _)| p == &dir.join("wal").join("LOCK")));
    assert!(all.iter().any(|(p, _, _)| p.extension().is_some_and(|x| x == "wal")));
    assert!(all.iter().any(|(p, _, _)| p.extension().is_some_and(|x| x == "snap")));
    for (p, mode, is_dir) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:o}", p.display());
    }
}
