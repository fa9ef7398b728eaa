//! Spares and the directory: a spare the writer overtook (it created the next segment
//! itself while the preallocator was slow or failing), and the directory syncs that make
//! deletions and renames of segment files durable.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use flotilla_wal::codec::{RecordCodec, SegmentHeader, KIND_ENTRIES, SEGMENT_HEADER_LEN};
use flotilla_wal::fault::FaultFs;
use flotilla_wal::{Position, Wal, WalConfig, WriteBatch, WriteFault};

const ENTRY: usize = 2000;

/// One spare, no recycling: the preallocator's sequence numbers are predictable.
fn one_spare(dir: &Path) -> WalConfig {
    let mut c = config(dir);
    c.spare_segments = 1;
    c.recycle_pool = 0;
    c
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn data(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; ENTRY]
}

fn append(wal: &Wal, i: u64) {
    append_to(wal, 1, i);
}

fn active(wal: &Wal) -> u64 {
    *wal.segment_seqs().last().unwrap()
}

/// Every acknowledged entry `1..=n` of group 1 is there, with its data.
fn assert_all_there(wal: &Wal, n: u64) {
    assert_eq!(wal.first_index(1), Ok(1));
    assert_eq!(wal.last_index(1), Ok(n));
    for i in 1..=n {
        assert_eq!(wal.entry(1, i).unwrap().data, data(i), "entry {i}");
    }
}

/// Runs the skipped-spare schedule in `dir` (the WAL's directory) and returns how many
/// entries of group 1 were acknowledged. Segment 1 is written at open, the preallocator
/// makes spare 2; then it fails to make 3 and, on its retry, is slow making 4. Meanwhile
/// the writer fills 2, gives up on the (failing) preallocator and creates 5 itself, and
/// writes into it. Only then does spare 4 get finished: it lands below the active segment.
fn overtake_a_spare(fs: &Arc<FaultFs>, dir: &Path) -> u64 {
    let wal = Wal::open_with_fs(one_spare(dir), fs.clone()).unwrap();
    assert_backend(&wal);
    wait_until("spare 2 is ready", || wal.stats().spares == 1);
    fs.fail_next_spare_write(WriteFault::Eio);
    fs.hold_next_spare_write();
    let mut n = 0;
    while active(&wal) < 2 {
        n += 1;
        append(&wal, n);
    }
    wait_until("the preallocator is making 4, slowly", || fs.spare_write_held());
    while active(&wal) < 5 {
        n += 1;
        append(&wal, n);
    }
    assert_eq!(wal.segment_seqs(), vec![1, 2, 5], "the writer did not create 5 itself");
    for _ in 0..3 {
        n += 1;
        append(&wal, n);
    }
    fs.release_spare_write();
    let prealloc = dir.join(format!("{:020}.prealloc", 4));
    wait_until("spare 4 is finished", || !prealloc.exists());
    wait_until("the preallocator is idle", || wal.stats().spares == 1);
    n += 1;
    append(&wal, n);
    assert_all_there(&wal, n);
    n
}

#[test]
fn a_spare_finished_after_the_writer_created_the_next_segment_does_not_stop_reopening() {
    let root = scratch();
    let dir = root.path().join("wal");
    let fs = Arc::new(FaultFs::new(root.path().join("trash"), 1).unwrap());
    let n = overtake_a_spare(&fs, &dir);
    let left_below = seg_path(&dir, 4).exists();
    // A clean shutdown, then a restart.
    let wal = Wal::open_with_fs(one_spare(&dir), fs.clone()).unwrap();
    assert_all_there(&wal, n);
    assert!(!left_below, "the overtaken spare 4 was left below segment 5");
    // And writing goes on.
    append(&wal, n + 1);
    drop(wal);
    let wal = Wal::open(one_spare(&dir)).unwrap();
    assert_all_there(&wal, n + 1);
}

/// The log id in the header of the lowest-numbered segment of `dir`.
fn wal_id_of(dir: &Path) -> u64 {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    let bytes = std::fs::read(dir.join(&names[0])).unwrap();
    RecordCodec::decode_segment_header(&bytes).unwrap().wal_id
}

/// Writes segment `seq` as the preallocator would have left it: zero-filled, or (recycled)
/// holding an old life's bytes, under a fresh header.
fn plant_spare(dir: &Path, seq: u64, old_life: Option<&Path>) {
    let size = one_spare(dir).segment_size;
    let mut bytes = match old_life {
        Some(p) => std::fs::read(p).unwrap(),
        None => vec![0u8; size as usize],
    };
    let wal_id = wal_id_of(dir);
    let header =
        RecordCodec::encode_segment_header(&SegmentHeader { seq, salt: 0x5eed_0000 + seq, size, wal_id });
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header);
    std::fs::write(seg_path(dir, seq), &bytes).unwrap();
}

#[test]
fn recovery_deletes_a_skipped_spare_left_below_the_active_segment_durably() {
    let root = scratch();
    let dir = root.path().join("wal");
    let fs = Arc::new(FaultFs::new(root.path().join("trash"), 1).unwrap());
    let n = overtake_a_spare(&fs, &dir);
    let old_life = root.path().join("old-life");
    std::fs::copy(seg_path(&dir, 1), &old_life).unwrap();
    for seed in 0..12u64 {
        // A crash right after the spare was renamed into place, before the preallocator
        // saw it had been overtaken: it is still there at the restart.
        plant_spare(&dir, 4, if seed % 2 == 0 { None } else { Some(&old_life) });
        let fs = Arc::new(FaultFs::new(root.path().join("trash"), seed).unwrap());
        let wal = Wal::open_with_fs(one_spare(&dir), fs.clone()).unwrap();
        assert_all_there(&wal, n);
        assert_eq!(wal.segment_seqs(), vec![1, 2, 5], "seed {seed}");
        drop(wal);
        // The deletion is durable: a power loss does not bring the spare back.
        fs.crash().unwrap();
        assert!(!seg_path(&dir, 4).exists(), "seed {seed}: the skipped spare came back");
        let wal = Wal::open(one_spare(&dir)).unwrap();
        assert_all_there(&wal, n);
    }
}

/// A valid batch for segment (`seq`, `salt`) holding entry `index` of `group`.
fn craft_batch(seq: u64, salt: u64, durable: Position, group: u64, index: u64, data: &[u8]) -> Vec<u8> {
    let seed = RecordCodec::seed(seq, salt);
    let mut buf = Vec::new();
    RecordCodec::begin_batch(&mut buf, durable);
    let r = RecordCodec::begin_record(&mut buf, group, KIND_ENTRIES);
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(&1u32.to_le_bytes());
    RecordCodec::put_entry(&mut buf, 9, data);
    RecordCodec::finish_record(&mut buf, r, seed);
    RecordCodec::finish_batch(&mut buf, 0, 1, seed);
    buf
}

#[test]
fn deleting_a_segment_of_unacknowledged_batches_at_recovery_is_durable() {
    let root = scratch();
    let dir = root.path().join("wal");
    let n = {
        let mut c = one_spare(&dir);
        c.spare_segments = 2;
        let wal = Wal::open(c).unwrap();
        for i in 1..=3 {
            append(&wal, i);
        }
        wait_until("spares 2 and 3 are ready", || wal.stats().spares == 2);
        3
    };
    let size = one_spare(&dir).segment_size;
    for seed in 0..12u64 {
        // Spare 3 holds a valid batch the log never acknowledged (it claims nothing past
        // the log's end): recovery deletes the file.
        let salt = 77 + seed;
        let mut bytes = vec![0u8; size as usize];
        bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&RecordCodec::encode_segment_header(&SegmentHeader {
            seq: 3,
            salt,
            size,
            wal_id: wal_id_of(&dir),
        }));
        let durable = Position { seq: 1, offset: SEGMENT_HEADER_LEN as u64 };
        let b = craft_batch(3, salt, durable, 1, n + 1, b"never acknowledged");
        bytes[SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN + b.len()].copy_from_slice(&b);
        std::fs::write(seg_path(&dir, 3), &bytes).unwrap();
        let fs = Arc::new(FaultFs::new(root.path().join("trash"), seed).unwrap());
        // One spare (2) is left: the preallocator has nothing to do, and syncs nothing.
        let wal = Wal::open_with_fs(one_spare(&dir), fs.clone()).unwrap();
        assert_all_there(&wal, n);
        drop(wal);
        assert!(!seg_path(&dir, 3).exists());
        fs.crash().unwrap();
        assert!(!seg_path(&dir, 3).exists(), "seed {seed}: the deleted segment came back");
    }
}

#[test]
fn a_recycled_spare_keeps_its_new_name_across_a_power_loss() {
    // Without the directory sync after the final rename, a crash undoes it for about a
    // third of the seeds.
    for seed in 0..24u64 {
        let root = scratch();
        let dir = root.path().join("wal");
        let fs = Arc::new(FaultFs::new(root.path().join("trash"), seed).unwrap());
        let mut c = one_spare(&dir);
        c.recycle_pool = 1;
        c.auto_maintain = false;
        c.rewrite_ratio = 0.0;
        let wal = Wal::open_with_fs(c.clone(), fs.clone()).unwrap();
        assert_backend(&wal);
        // Group 1 fills segment 1, then is compacted away: segment 1 is freed.
        let mut g1 = 0;
        while active(&wal) < 2 {
            g1 += 1;
            append_to(&wal, 1, g1);
        }
        let mut b = WriteBatch::new();
        b.compact_to(1, g1 + 1);
        wal.write(b).unwrap();
        wait_until("spare 3 is ready", || wal.stats().spares == 1);
        assert_eq!(wal.maintain().unwrap().segments_freed, 1);
        // It becomes spare 4 (after 3); then the preallocator has nothing to do.
        wait_until("segment 1 is recycled", || wal.stats().segments_recycled == 1);
        assert_eq!(wal.stats().spares, 2);
        // The writer moves into 3, then into the recycled 4, and is acknowledged there;
        // the preallocator, making 5, gets no further than its first write before the
        // power goes off (so it syncs the directory no more).
        fs.hold_next_spare_write();
        let mut n = 0;
        while active(&wal) < 4 {
            n += 1;
            append_to(&wal, 2, n);
        }
        for _ in 0..3 {
            n += 1;
            append_to(&wal, 2, n);
        }
        wait_until("the preallocator is making 5", || fs.spare_write_held());
        fs.power_off_after(0);
        fs.release_spare_write();
        drop(wal);
        fs.crash().unwrap();
        let wal = Wal::open(c).unwrap();
        assert_eq!(wal.first_index(1), Ok(g1 + 1), "seed {seed}");
        assert_eq!(wal.last_index(2), Ok(n), "seed {seed}: acknowledged entries lost");
        for i in 1..=n {
            assert_eq!(wal.entry(2, i).unwrap().data, data(i), "seed {seed}: entry {i}");
        }
    }
}

fn append_to(wal: &Wal, group: u64, i: u64) {
    let mut b = WriteBatch::new();
    b.add_entry(group, i, 1, &data(i));
    wal.write(b).unwrap();
}
