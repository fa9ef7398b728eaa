//! Group commit (many writers, few fsyncs), the non-blocking submission path, and the
//! fsyncgate rule: after a failed write or sync the WAL refuses every further write.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flotilla_wal::fault::FaultFs;
use flotilla_wal::{SyncFault, Wal, WriteBatch, WriteError, WriteFault};

/// On the real disk (fsyncs take milliseconds, so writers pile up behind each one).
fn open_disk(dir: &std::path::Path) -> (Arc<FaultFs>, Wal) {
    let fs = Arc::new(FaultFs::new(dir.join("trash"), 1).unwrap());
    let mut c = config(&dir.join("wal"));
    c.segment_size = 8 << 20;
    c.max_write_bytes = 1 << 20;
    let wal = Wal::open_with_fs(c, fs.clone()).unwrap();
    assert_backend(&wal);
    (fs, wal)
}

fn one(group: u64, index: u64, tag: u8) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.add_entry(group, index, 1, &[tag; 100]);
    b
}

#[test]
fn concurrent_writers_are_merged_into_far_fewer_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, wal) = open_disk(dir.path());
    let wal = Arc::new(wal);
    let before = fs.segment_syncs();
    const WRITERS: u64 = 8;
    const PER: u64 = 40;
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    wal.write(one(w, i + 1, w as u8)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let syncs = fs.segment_syncs() - before;
    let total = WRITERS * PER;
    eprintln!("{total} blocking batches from {WRITERS} threads: {syncs} fsyncs");
    assert!(syncs > 0);
    assert!(syncs <= total / 2, "{syncs} fsyncs for {total} batches: no group commit");
    assert_eq!(wal.stats().syncs, syncs);
    drop(wal);
    let (_, wal) = open_disk(dir.path());
    for w in 0..WRITERS {
        assert_eq!(wal.last_index(w), Ok(PER));
        assert_eq!(wal.entry(w, PER).unwrap().data, vec![w as u8; 100]);
    }
}

#[test]
fn nonblocking_submission_reports_durability() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, wal) = open_disk(dir.path());
    let before = fs.segment_syncs();
    let mut tickets = Vec::new();
    for i in 0..300u64 {
        // try_submit never blocks; on a full queue fall back to the blocking submit.
        let t = match wal.try_submit(one(1, i + 1, 9)) {
            Ok(t) => t,
            Err(WriteError::Busy) => wal.submit(one(1, i + 1, 9)).unwrap(),
            Err(e) => panic!("{e}"),
        };
        tickets.push(t);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = tickets;
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "tickets never resolved");
        pending.retain(|t| match t.try_wait() {
            Some(r) => {
                r.unwrap();
                false
            }
            None => true,
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(wal.last_index(1), Ok(300));
    let syncs = fs.segment_syncs() - before;
    assert!(syncs < 150, "{syncs} fsyncs for 300 pipelined batches");
}

fn poison_case(fault: impl FnOnce(&FaultFs)) {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 3);
    wal.write(one(1, 1, 1)).unwrap();
    fault(&fs);
    match wal.write(one(1, 2, 2)) {
        Err(WriteError::Io { .. }) => {}
        other => panic!("failed i/o not reported: {other:?}"),
    }
    assert!(wal.is_poisoned());
    // Every further write is refused, even though the next fsync would succeed.
    assert_eq!(wal.write(one(1, 2, 3)), Err(WriteError::Poisoned));
    assert_eq!(wal.write(one(2, 1, 3)), Err(WriteError::Poisoned));
    // Reads of durable data still work.
    assert_eq!(wal.entry(1, 1).unwrap().data, vec![1; 100]);
    drop(wal);
    let wal = Wal::open(config(&dir.path().join("wal"))).unwrap();
    assert_eq!(wal.entry(1, 1).unwrap().data, vec![1; 100]);
    assert!(wal.last_index(1).unwrap() <= 2);
    wal.write(one(3, 1, 4)).unwrap();
}

#[test]
fn failed_fsync_refuses_further_writes() {
    poison_case(|fs| fs.fail_next_sync(SyncFault::Eio));
}

#[test]
fn cancelled_linked_fsync_refuses_further_writes() {
    poison_case(|fs| fs.fail_next_sync(SyncFault::Canceled));
}

#[test]
fn eio_write_refuses_further_writes() {
    poison_case(|fs| fs.fail_next_write(WriteFault::Eio));
}

#[test]
fn torn_write_refuses_further_writes_and_is_dropped_at_recovery() {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 4);
    wal.write(one(1, 1, 1)).unwrap();
    fs.fail_next_write(WriteFault::Torn(50));
    assert!(matches!(wal.write(one(1, 2, 2)), Err(WriteError::Io { .. })));
    assert_eq!(wal.write(one(1, 2, 2)), Err(WriteError::Poisoned));
    drop(wal);
    let wal = Wal::open(config(&dir.path().join("wal"))).unwrap();
    assert_eq!(wal.last_index(1), Ok(1));
}

#[test]
fn short_writes_are_completed() {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 5);
    fs.fail_next_write(WriteFault::Short(7));
    fs.fail_next_write(WriteFault::Short(30));
    let mut b = WriteBatch::new();
    for i in 0..5 {
        b.add_entry(1, i + 1, 1, &[i as u8; 300]);
    }
    wal.write(b).unwrap();
    assert!(!wal.is_poisoned());
    wal.write(one(1, 6, 6)).unwrap();
    drop(wal);
    let wal = Wal::open(config(&dir.path().join("wal"))).unwrap();
    assert_eq!(wal.last_index(1), Ok(6));
    assert_eq!(wal.entry(1, 3).unwrap().data, vec![2; 300]);
}

/// A lone submitter whose rounds alternate with two-batch rounds (one proposal in flight:
/// its entry, then its commit's hard state beside the next entry) does not pay the
/// gather wait every time: after waits that nobody joined the writer backs off.
/// Counted through `WalStats`, not timed.
#[test]
fn lone_writer_backs_off_idle_gather_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (_fs, wal) = open_disk(dir.path());
    const ROUNDS: u64 = 40;
    let mut merged = 0;
    for r in 0..ROUNDS {
        // Three batches in quick succession: the first syncs alone, the other two queue
        // behind its fsync and share the next write (`last_batches` = 2) ...
        let before = wal.stats().writes;
        let a = wal.submit(one(1, 3 * r + 1, 1)).unwrap();
        let b = wal.submit(one(2, 2 * r + 1, 2)).unwrap();
        let c = wal.submit(one(2, 2 * r + 2, 3)).unwrap();
        a.wait().unwrap();
        b.wait().unwrap();
        c.wait().unwrap();
        if wal.stats().writes - before <= 2 {
            merged += 1;
        }
        // ... then a lone batch, which the old rule made wait for a second submitter.
        wal.write(one(1, 3 * r + 2, 4)).unwrap();
        wal.write(one(1, 3 * r + 3, 5)).unwrap();
    }
    let s = wal.stats();
    eprintln!(
        "{merged} of {ROUNDS} rounds merged two batches; gather waits {}, idle {}",
        s.gather_waits, s.gather_waits_idle
    );
    assert!(merged >= ROUNDS / 2, "too few merged rounds ({merged}) to exercise the rule");
    assert!(
        s.gather_waits_idle <= 12,
        "{} idle gather waits for {merged} lone writes after merged rounds: no backoff",
        s.gather_waits_idle
    );
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A blocking write made while another write's sync is in flight is written at once
/// (pipelined), but readable and acknowledged only once a sync of its own begins and ends:
/// the sync in flight started before it was written, so it does not cover it. The batch
/// whose sync is in flight is readable (applied while the device writes it) but not
/// acknowledged.
#[test]
fn write_pipelined_behind_a_sync_waits_for_its_own_sync() {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 11);
    let wal = Arc::new(wal);
    wal.write(one(1, 1, 1)).unwrap();
    let syncs0 = fs.segment_syncs();
    fs.hold_next_sync();
    let a = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.write(one(1, 2, 2)))
    };
    wait_until("the first sync to be held", || fs.sync_held());
    let writes0 = fs.writes();
    let (btx, brx) = crossbeam_channel::bounded(1);
    let b = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            let r = wal.write(one(2, 1, 3));
            let _ = btx.send(r.clone());
            r
        })
    };
    // The second batch is written while the first sync is held ...
    wait_until("the pipelined write", || fs.writes() > writes0);
    // ... and neither acknowledged nor visible before a sync covers it.
    std::thread::sleep(Duration::from_millis(50));
    assert!(brx.try_recv().is_err(), "acknowledged before any sync covering it");
    assert!(wal.last_index(2).is_err(), "readable before a sync covering it began");
    assert_eq!(wal.last_index(1), Ok(2), "the batch whose sync began is readable");
    assert!(!a.is_finished(), "acknowledged before its sync ended");
    fs.release_sync();
    a.join().unwrap().unwrap();
    b.join().unwrap().unwrap();
    assert_eq!(fs.segment_syncs() - syncs0, 2, "the pipelined write needs a sync of its own");
    assert_eq!(wal.last_index(1), Ok(2));
    assert_eq!(wal.entry(2, 1).unwrap().data, vec![3; 100]);
}

/// Each group-commit sync first starts the device's writeback of every byte it will
/// cover (so the index is applied while the device writes, and the sync waits for less).
#[test]
fn each_sync_first_starts_the_writeback_of_the_bytes_it_covers() {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 13);
    let starts0 = fs.writeback_starts();
    let syncs0 = fs.segment_syncs();
    for i in 1..=40u64 {
        wal.write(one(1 + i % 3, 1 + (i - 1) / 3, i as u8)).unwrap();
    }
    let syncs = fs.segment_syncs() - syncs0;
    assert!(syncs >= 40, "one sync per blocking write here, got {syncs}");
    assert_eq!(fs.writeback_starts() - starts0, syncs, "a sync without its writeback started");
    assert_eq!(fs.writeback_uncovered_bytes(), 0, "a writeback left written bytes out");
    assert_eq!(wal.entry(2, 14).unwrap().data, vec![40; 100]);
}

/// A failed sync fails the writes it covers with the I/O error; a write pipelined behind
/// it (written while it was in flight, so not covered) fails as refused, since nothing is
/// synced after a failed sync, and is never readable; writes acknowledged before stay.
#[test]
fn failed_sync_fails_the_writes_it_covers_and_refuses_those_behind_it() {
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 12);
    let wal = Arc::new(wal);
    wal.write(one(1, 1, 1)).unwrap();
    fs.hold_next_sync();
    let a = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.write(one(1, 2, 2)))
    };
    wait_until("the sync to be held", || fs.sync_held());
    let writes0 = fs.writes();
    let b = {
        let wal = wal.clone();
        std::thread::spawn(move || wal.write(one(2, 1, 3)))
    };
    wait_until("the pipelined write", || fs.writes() > writes0);
    // The held sync, once released, fails.
    fs.fail_next_sync(SyncFault::Eio);
    let failed0 = fs.failed_syncs();
    fs.release_sync();
    assert!(
        matches!(a.join().unwrap(), Err(WriteError::Io { .. })),
        "the covered write must fail with the I/O error"
    );
    assert_eq!(
        b.join().unwrap(),
        Err(WriteError::Poisoned),
        "the write behind the failed sync must be refused"
    );
    assert_eq!(fs.failed_syncs() - failed0, 1, "no sync may follow a failed one");
    assert!(wal.is_poisoned());
    assert_eq!(wal.entry(1, 1).unwrap().data, vec![1; 100]);
    // The failed write was applied when its sync began; after a failed sync nobody knows
    // whether it reached the disk (a reopened log may hold it too), and it is never
    // acknowledged. The refused write was never applied.
    assert_eq!(wal.last_index(1), Ok(2));
    assert!(wal.last_index(2).is_err(), "a refused write must never be readable");
    let wal = Arc::try_unwrap(wal).ok().unwrap();
    drop(wal);
    let wal = Wal::open(config(&dir.path().join("wal"))).unwrap();
    assert_eq!(wal.entry(1, 1).unwrap().data, vec![1; 100]);
}

/// `write` may write on the calling thread, but never ahead of batches the same thread
/// queued before with `submit`: each write here extends the entry submitted just before
/// it, which fails as non-contiguous if the order broke.
#[test]
fn write_after_submit_keeps_the_threads_order() {
    let dir = scratch();
    let (_fs, wal) = open_fault(dir.path(), 13);
    let mut tickets = Vec::new();
    for i in 0..200u64 {
        tickets.push(wal.submit(one(1, 2 * i + 1, 1)).unwrap());
        wal.write(one(1, 2 * i + 2, 2)).unwrap();
    }
    for t in tickets {
        t.wait().unwrap();
    }
    assert_eq!(wal.last_index(1), Ok(400));
}

/// `submit_then` / `write_or_submit_then`: the hook runs once, only after the batch's sync
/// (a held sync holds it back), on the thread that made the batch durable, before the
/// ticket resolves; a failed sync drops it unrun.
#[test]
fn a_durability_hook_runs_once_after_the_sync_and_never_for_a_failed_write() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = scratch();
    let (fs, wal) = open_fault(dir.path(), 14);
    let runs = Arc::new(AtomicU64::new(0));
    let hook = |seen: &Arc<AtomicU64>| -> Option<flotilla_wal::OnDurable> {
        let seen = seen.clone();
        Some(Box::new(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        }))
    };
    wal.write(one(1, 1, 1)).unwrap();

    // Through the writer thread: not while the sync is held; once, before the ticket.
    fs.hold_next_sync();
    let t = wal.submit_then(one(1, 2, 2), hook(&runs)).unwrap();
    wait_until("the sync to be held", || fs.sync_held());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the hook ran before the batch was durable");
    assert!(t.try_wait().is_none());
    fs.release_sync();
    t.wait().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the hook runs before the ticket resolves");

    // On the calling thread (the writer is free): durable and run on return.
    let caller = std::thread::current().id();
    let on = Arc::new(parking_lot::Mutex::new(None));
    let o = on.clone();
    let r = wal
        .write_or_submit_then(
            one(1, 3, 3),
            Some(Box::new(move || {
                *o.lock() = Some(std::thread::current().id());
            })),
        )
        .unwrap();
    match r {
        None => assert_eq!(*on.lock(), Some(caller), "written here: the hook ran here"),
        Some(t) => {
            // The writer was busy after all: it ran the hook on its thread.
            t.wait().unwrap();
            assert!(on.lock().is_some());
        }
    }

    // A failed sync: the write fails and the hook never runs.
    fs.fail_next_sync(SyncFault::Eio);
    let t = wal.submit_then(one(1, 4, 4), hook(&runs)).unwrap();
    assert!(matches!(t.wait(), Err(WriteError::Io { .. })));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a hook ran for a failed write");
    // Refused writes never run theirs either.
    assert!(wal.submit_then(one(2, 1, 5), hook(&runs)).is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
