//! The WAL protects itself (issue 12, point 7): one handle at a time on its directory,
//! owner-only files and directories, batch lengths believed only under their header's own
//! checksum (so opening is linear in the log's size whatever the payloads hold), and
//! segments that name the log they belong to.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use flotilla_wal::codec::{RecordCodec, BATCH_HEADER_LEN, SEGMENT_HEADER_LEN};
use flotilla_wal::{DirLock, OpenError, Wal, WriteBatch, LOCK_FILE};

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn write_some(wal: &Wal, group: u64, from: u64, n: u64, len: usize) {
    for i in 0..n {
        let mut b = WriteBatch::new();
        b.add_entry(group, from + i, 1, &vec![(i % 251) as u8; len]);
        wal.write(b).unwrap();
    }
}

/// Offsets of the batches of a segment file, read one after another from its header.
fn batch_offsets(bytes: &[u8]) -> Vec<u64> {
    let h = RecordCodec::decode_segment_header(bytes).unwrap();
    let seed = RecordCodec::seed(h.seq, h.salt);
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while let Ok(b) = RecordCodec::decode_batch_header(&bytes[off..], seed) {
        out.push(off as u64);
        off += b.len;
        if b.sealed {
            break;
        }
    }
    out
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

#[test]
fn a_second_open_of_the_directory_is_refused_until_the_first_is_dropped() {
    let dir = scratch();
    let a = Wal::open(config(dir.path())).unwrap();
    write_some(&a, 1, 1, 3, 100);
    match Wal::open(config(dir.path())) {
        Err(OpenError::Locked { dir: d, holder }) => {
            assert_eq!(d, dir.path());
            assert_eq!(holder, Some(std::process::id()));
            let msg = OpenError::Locked { dir: d, holder }.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("a second handle opened the same log"),
    }
    // The refused open changed nothing: the first handle goes on.
    write_some(&a, 1, 4, 1, 100);
    drop(a);
    let b = Wal::open(config(dir.path())).unwrap();
    assert_eq!(b.last_index(1), Ok(4));
}

/// Not a test on its own: the child process of
/// `a_lock_held_by_another_process_refuses_open` (re-executed with the directory in
/// `FLOTILLA_WAL_LOCK_CHILD`). Holds the lock until its stdin closes.
#[test]
fn lock_holder_child() {
    let Ok(dir) = std::env::var("FLOTILLA_WAL_LOCK_CHILD") else { return };
    let _lock = DirLock::acquire(Path::new(&dir)).unwrap();
    println!("locked");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    // Returns at EOF: when the parent closes our stdin (or dies).
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_lock_held_by_another_process_refuses_open() {
    let dir = scratch();
    drop(Wal::open(config(dir.path())).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_holder_child", "--nocapture", "--test-threads=1"])
        .env("FLOTILLA_WAL_LOCK_CHILD", dir.path())
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
            if line.is_ok_and(|l| l.trim_end().ends_with("locked")) {
                let _ = tx.send(());
            }
        }
    });
    assert!(rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok(), "the child never took the lock");
    match Wal::open(config(dir.path())) {
        Err(OpenError::Locked { dir: d, holder }) => {
            assert_eq!(d, dir.path());
            assert_eq!(holder, Some(child.id()));
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened a log another process holds"),
    }
    // The child lets go when its stdin closes; then the log opens.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    Wal::open(config(dir.path())).unwrap();
}

#[test]
fn files_are_0600_and_directories_0700() {
    let root = scratch();
    // A directory that exists with loose permissions, and one the WAL creates in it.
    let loose = root.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = loose.join("a").join("wal");
    {
        let wal = Wal::open(config(&dir)).unwrap();
        // Several segments: spares made, segments sealed and recycled.
        write_some(&wal, 1, 1, 80, 2000);
        let mut b = WriteBatch::new();
        b.compact_to(1, 70);
        wal.write(b).unwrap();
        wal.maintain().unwrap();
        wait_until("spares ready", || wal.stats().spares >= 1);
    }
    let all = modes(&dir);
    assert!(all.iter().any(|(p, _, _)| p.ends_with(LOCK_FILE)));
    assert!(all.iter().filter(|(p, _, _)| p.extension().is_some_and(|e| e == "wal")).count() >= 3);
    for (p, mode, is_dir) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:o}", p.display());
    }
    // The WAL created `a` (0700); an existing directory of the log itself is tightened.
    let a_mode = std::fs::metadata(loose.join("a")).unwrap().permissions().mode() & 0o777;
    assert_eq!(a_mode, 0o700);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(Wal::open(config(&dir)).unwrap());
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Sets the `len` field of the batch at `off` of `path` to `len` (its header checksum is
/// not recomputed: a corrupted length).
fn set_len_field(path: &Path, off: u64, len: u32) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&len.to_le_bytes(), off + 8).unwrap();
}

#[test]
fn a_huge_length_in_a_sealed_segment_is_corruption_naming_file_and_offset() {
    let dir = scratch();
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        write_some(&wal, 1, 1, 60, 2000); // ~2 segments
        assert!(wal.segment_seqs().len() >= 2);
    }
    let first = seg_path(dir.path(), 1);
    let offs = batch_offsets(&std::fs::read(&first).unwrap());
    assert!(offs.len() > 10);
    let victim = offs[5];
    for len in [u32::MAX, (64 * 1024 - victim) as u32, BATCH_HEADER_LEN as u32] {
        set_len_field(&first, victim, len);
        match Wal::open(config(dir.path())) {
            Err(OpenError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, first, "len {len}");
                assert_eq!(offset, victim, "len {len}");
            }
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a corrupt log opened (len {len})"),
        }
    }
}

/// Opens `cfg`'s log, retrying (bounded) while it is `Locked`: a test of this binary
/// spawns a child process, and a child forked while a log was open holds a copy of its
/// lock's file descriptor until it executes, so the lock outlives the dropped handle
/// for that moment.
fn open_past_forks(cfg: &flotilla_wal::WalConfig) -> Wal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Wal::open(cfg.clone()) {
            Err(OpenError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            r => return r.unwrap(),
        }
    }
}

#[test]
fn a_huge_length_at_the_tail_is_a_torn_tail_read_without_following_the_length() {
    let dir = scratch();
    // Large segments, little written: following a corrupt length to the end of the
    // segment would checksum far more than the log holds.
    let mut cfg = config(dir.path());
    cfg.segment_size = 4 << 20;
    let written;
    {
        let wal = Wal::open(cfg.clone()).unwrap();
        write_some(&wal, 1, 1, 10, 1000);
        written = wal.stats().written_bytes;
    }
    let p = seg_path(dir.path(), 1);
    let offs = batch_offsets(&std::fs::read(&p).unwrap());
    let last = *offs.last().unwrap();
    set_len_field(&p, last, (cfg.segment_size - last) as u32);
    let wal = open_past_forks(&cfg);
    assert_eq!(wal.last_index(1), Ok(9), "the batch with the corrupt length is the torn tail");
    let checked = wal.recovery_checked_bytes();
    assert!(checked <= 3 * written, "recovery checksummed {checked} bytes of a {written}-byte log");
    write_some(&wal, 1, 10, 1, 1000);
    drop(wal);
    assert_eq!(open_past_forks(&cfg).last_index(1), Ok(10));
}

/// A payload made of batch-like headers: the batch magic, this format's version and a
/// length reaching `reach` bytes further, repeated.
fn hostile_payload(n: usize, reach: u32) -> Vec<u8> {
    let mut one = Vec::new();
    RecordCodec::begin_batch(&mut one, flotilla_wal::Position { seq: 1, offset: 64 });
    one[8..12].copy_from_slice(&reach.to_le_bytes());
    one.iter().copied().cycle().take(n).collect()
}

#[test]
fn recovery_work_is_linear_whatever_the_payloads_hold() {
    let dir = scratch();
    let mut cfg = config(dir.path());
    cfg.segment_size = 2 << 20;
    cfg.max_write_bytes = 1 << 20;
    let payload = hostile_payload(96 * 1024, 1 << 20);
    let written;
    {
        let wal = Wal::open(cfg.clone()).unwrap();
        write_some(&wal, 1, 1, 3, 100);
        let mut b = WriteBatch::new();
        b.add_entry(1, 4, 1, &payload);
        wal.write(b).unwrap();
        written = wal.stats().written_bytes;
    }
    let p = seg_path(dir.path(), 1);
    let offs = batch_offsets(&std::fs::read(&p).unwrap());
    let last = *offs.last().unwrap();
    // A crash tore the last batch (its header does not verify): recovery scans everything
    // after it for valid batches, the hostile payload included.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xff], last + 33).unwrap();
    let wal = Wal::open(cfg).unwrap();
    assert_eq!(wal.last_index(1), Ok(3));
    let checked = wal.recovery_checked_bytes();
    eprintln!(
        "log of {written} bytes, {} batch-like headers: recovery checksummed {checked} bytes",
        payload.len() / 40
    );
    // 36 bytes per batch-like header (one every 40 bytes), plus the valid batches twice.
    assert!(checked <= 3 * written, "recovery checksummed {checked} bytes of a {written}-byte log");
}

#[test]
fn a_segment_copied_from_another_wal_is_refused_and_nothing_changes() {
    let root = scratch();
    let (a_dir, b_dir) = (root.path().join("a"), root.path().join("b"));
    let (a_id, b_id);
    {
        let a = Wal::open(config(&a_dir)).unwrap();
        write_some(&a, 1, 1, 150, 2000); // ~5 segments
        a_id = a.wal_id();
        let b = Wal::open(config(&b_dir)).unwrap();
        write_some(&b, 1, 1, 5, 100);
        b_id = b.wal_id();
        assert_ne!(a_id, b_id);
    }
    let snapshot = |d: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    // A's segment with the next number B has no file for (its header names that number).
    let taken: Vec<u64> = std::fs::read_dir(&b_dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().unwrap().strip_suffix(".wal")?.parse().ok())
        .collect();
    let seq = taken.iter().max().unwrap() + 1;
    assert!(seg_path(&a_dir, seq).exists(), "A has no segment {seq}");
    let foreign = seg_path(&b_dir, seq);
    std::fs::copy(seg_path(&a_dir, seq), &foreign).unwrap();
    let before = snapshot(&b_dir);
    match Wal::open(config(&b_dir)) {
        Err(OpenError::ForeignSegment { file, wal_id, expected }) => {
            assert_eq!(file, foreign);
            assert_eq!((wal_id, expected), (a_id, b_id));
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened with a segment of another log"),
    }
    assert!(snapshot(&b_dir) == before, "the refused open changed B's directory");
    // Without the stray file, B is intact.
    std::fs::remove_file(&foreign).unwrap();
    let b = Wal::open(config(&b_dir)).unwrap();
    assert_eq!(b.wal_id(), b_id);
    assert_eq!(b.last_index(1), Ok(5));
}
