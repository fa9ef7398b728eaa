//! Crash safety: randomized power losses, torn tails, corruption before the tail, format
//! versions, recycled segments.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use flotilla_wal::codec::{RecordCodec, KIND_ENTRIES, SEGMENT_HEADER_LEN};
use flotilla_wal::{OpenError, Position, Wal, WriteBatch};

/// Every model state the log may legally recover to: the state after each prefix of the
/// submitted batches that includes every acknowledged one.
fn check_recovered(got: &Model, before: &Model, after: &[Model], acked: usize, ctx: &str) -> Model {
    let mut candidates = vec![before];
    candidates.extend(after.iter());
    for (k, m) in candidates.iter().enumerate().skip(acked) {
        if got == *m {
            return (*m).clone();
        }
        let _ = k;
    }
    panic!(
        "{ctx}: recovered state matches no prefix with all {acked} acknowledged batches \
         (of {} submitted); diff against the last acknowledged state:\n{}",
        after.len(),
        diff(got, candidates[acked])
    );
}

fn iterations() -> u64 {
    std::env::var("FLOTILLA_WAL_CRASH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

#[test]
fn randomized_crashes_recover_exactly_the_acknowledged_batches() {
    let started = Instant::now();
    let iters = iterations();
    let mut crashed_with_loss = 0u64;
    for it in 0..iters {
        assert!(started.elapsed() < Duration::from_secs(300), "time bound at {it}");
        let dir = scratch();
        let mut rng = Rng(it.wrapping_mul(0x1234_5678_9abc_def1) ^ 0x55);
        let mut model = Model::default();
        for cycle in 0..3 {
            let ctx = format!("iteration {it} cycle {cycle}");
            let (fs, wal) = open_fault(dir.path(), rng.next());
            assert_eq!(Model::read(&wal), model, "{ctx}: reopen changed the state");
            let n = 4 + rng.below(24) as usize;
            let mut m = model.clone();
            let mut batches = Vec::new();
            let mut states = Vec::new();
            for _ in 0..n {
                let ops = random_ops(&mut rng, &mut m, 6, 900);
                batches.push(Model::batch(&ops));
                states.push(m.clone());
            }
            fs.power_off_after(rng.below(n as u64 / 2 + 6));
            let mut tickets = Vec::new();
            for b in batches {
                tickets.push(wal.submit(b));
            }
            let mut acked = 0;
            let mut failed = false;
            for (i, t) in tickets.into_iter().enumerate() {
                match t.and_then(|t| t.wait()) {
                    Ok(()) => {
                        assert!(!failed, "{ctx}: batch {i} acknowledged after a failure");
                        acked = i + 1;
                    }
                    Err(_) => failed = true,
                }
            }
            if acked == n {
                let live = Model::read(&wal);
                assert!(
                    live == states[n - 1],
                    "{ctx}: in-memory state wrong before crash:\n{}",
                    diff(&live, &states[n - 1])
                );
            }
            drop(wal);
            let unsynced = fs.unsynced_bytes();
            fs.crash().unwrap();
            if unsynced > 0 {
                crashed_with_loss += 1;
            }
            let fs2 = std::sync::Arc::new(
                flotilla_wal::fault::FaultFs::new(dir.path().join("trash"), rng.next()).unwrap(),
            );
            let wal = match Wal::open_with_fs(config(&dir.path().join("wal")), fs2) {
                Ok(w) => w,
                Err(e) => panic!("{ctx}: reopen after crash failed: {e}"),
            };
            let got = Model::read(&wal);
            model = check_recovered(&got, &model, &states, acked, &ctx);
        }
    }
    eprintln!("{iters} iterations, {crashed_with_loss} crashes lost unsynced bytes");
    assert!(
        crashed_with_loss > iters / 4,
        "too few crashes lost unsynced data ({crashed_with_loss}): the test is not testing"
    );
}

fn write_some(wal: &Wal, group: u64, from: u64, n: u64, len: usize) {
    for i in 0..n {
        let mut b = WriteBatch::new();
        b.add_entry(group, from + i, 1, &vec![(i % 251) as u8; len]);
        wal.write(b).unwrap();
    }
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x04;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn corruption_in_a_synced_segment_refuses_open_naming_file_and_offset() {
    let dir = scratch();
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        write_some(&wal, 1, 1, 60, 2000); // ~2 segments
        assert!(wal.segment_seqs().len() >= 2);
    }
    let first = seg_path(dir.path(), 1);
    flip(&first, 20_000);
    match Wal::open(config(dir.path())) {
        Err(OpenError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, first);
            assert!(offset > SEGMENT_HEADER_LEN as u64 && offset <= 20_000, "offset {offset}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("corrupt log opened"),
    }
}

#[test]
fn corruption_before_later_batches_of_the_same_segment_refuses_open() {
    let dir = scratch();
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        write_some(&wal, 1, 1, 10, 1000);
    }
    let p = seg_path(dir.path(), 1);
    flip(&p, 3000);
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(OpenError::Corrupt { offset, .. }) if offset <= 3000
    ));
}

#[test]
fn corrupt_final_batch_is_a_torn_tail() {
    let dir = scratch();
    let end;
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        write_some(&wal, 1, 1, 10, 1000);
        end = wal.stats().written_bytes;
    }
    flip(&seg_path(dir.path(), 1), end - 10);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.last_index(1), Ok(9));
    // Writing continues over the torn tail, and survives another restart.
    write_some(&wal, 1, 10, 2, 1000);
    drop(wal);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.last_index(1), Ok(11));
    assert_eq!(wal.entry(1, 10).unwrap().data, vec![0u8; 1000]);
}

/// Builds a valid one-entry batch for segment (`seq`, `salt`) claiming `durable`.
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

fn craft_after_torn(dir: &Path, claim_past: bool) -> u64 {
    use std::os::unix::fs::FileExt;
    let pos;
    {
        let wal = Wal::open(config(dir)).unwrap();
        write_some(&wal, 1, 1, 1, 100);
        pos = wal.stats().written_bytes;
    }
    let p = seg_path(dir, 1);
    let bytes = std::fs::read(&p).unwrap();
    let h = RecordCodec::decode_segment_header(&bytes).unwrap();
    // B: a torn batch exactly as long as a 1-entry batch of 100 bytes (magic kept, so it
    // looks like a batch start, but its checksum is wrong).
    let mut b = craft_batch(h.seq, h.salt, Position { seq: 1, offset: pos }, 1, 2, &[5u8; 100]);
    let l = b.len();
    b[l - 1] ^= 0xff;
    // C: valid, written after B while B was not yet durable (pipelined), or claiming B
    // durable.
    let claim = if claim_past { pos + 1 } else { pos };
    let c = craft_batch(h.seq, h.salt, Position { seq: 1, offset: claim }, 1, 3, &[6u8; 100]);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&b, pos).unwrap();
    f.write_all_at(&c, pos + b.len() as u64).unwrap();
    pos
}

#[test]
fn torn_batch_followed_by_an_unsynced_valid_batch_is_a_torn_tail_that_never_comes_back() {
    let dir = scratch();
    craft_after_torn(dir.path(), false);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.last_index(1), Ok(1), "C must not be applied");
    // D has exactly B's length, so it ends where C starts: C must have been erased.
    write_some(&wal, 1, 2, 1, 100);
    drop(wal);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.last_index(1), Ok(2), "a batch from before the torn tail came back");
    assert_eq!(wal.entry(1, 2).unwrap().data, vec![0u8; 100]);
}

#[test]
fn bad_batch_followed_by_a_batch_claiming_it_durable_is_corruption() {
    let dir = scratch();
    let pos = craft_after_torn(dir.path(), true);
    match Wal::open(config(dir.path())) {
        Err(OpenError::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg_path(dir.path(), 1));
            assert_eq!(offset, pos);
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn newer_format_versions_are_refused() {
    use std::os::unix::fs::FileExt;
    let dir = scratch();
    let pos;
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        write_some(&wal, 1, 1, 2, 100);
        pos = wal.stats().written_bytes;
    }
    let p = seg_path(dir.path(), 1);
    let bytes = std::fs::read(&p).unwrap();
    let h = RecordCodec::decode_segment_header(&bytes).unwrap();
    // A batch of format version 3 (valid header checksum) at the tail.
    let mut b = craft_batch(h.seq, h.salt, Position { seq: 1, offset: pos }, 1, 3, b"v3");
    b[4] = 3;
    RecordCodec::seal_batch_header(&mut b, RecordCodec::seed(h.seq, h.salt));
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&b, pos).unwrap();
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(OpenError::NewerFormat { version: 3, offset, .. }) if offset == pos
    ));
    // A segment header of version 3 (checked before its checksum, whose place a newer
    // version may move).
    let mut hdr = bytes[..64].to_vec();
    hdr[8] = 3;
    f.write_all_at(&hdr, 0).unwrap();
    assert!(matches!(
        Wal::open(config(dir.path())),
        Err(OpenError::NewerFormat { version: 3, offset: 0, .. })
    ));
    // A segment header of version 1 (never released): refused, not misread.
    hdr[8] = 1;
    f.write_all_at(&hdr, 0).unwrap();
    match Wal::open(config(dir.path())) {
        Err(OpenError::UnsupportedFormat { version: 1, file }) => assert_eq!(file, p),
        other => panic!("version 1: {:?}", other.err()),
    }
}

#[test]
fn recycled_segment_crash_mid_batch_brings_nothing_back_from_its_previous_life() {
    for seed in 0..12u64 {
        let dir = scratch();
        let (fs, wal) = open_fault(dir.path(), seed);
        // Previous life: group 1 fills three segments, then is compacted away.
        write_some(&wal, 1, 1, 90, 1800);
        let mut b = WriteBatch::new();
        b.compact_to(1, 91);
        wal.write(b).unwrap();
        write_some(&wal, 2, 1, 40, 1800); // rotate: auto compaction frees group 1's segments
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.stats().segments_recycled == 0 {
            assert!(Instant::now() < deadline, "no segment was recycled");
            wal.maintain().unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        // New life: write through the recycled spares, crashing at a random point. Its
        // batches have exactly the old life's layout (one 1800-byte entry each, written
        // one at a time), so they start where old batches started: only the checksum
        // seed (sequence number and salt) tells an old batch from a new one.
        let mut model = Model::read(&wal);
        let mut rng = Rng(seed + 100);
        let mut m = model.clone();
        let mut states = Vec::new();
        // Each blocking write costs two i/o operations (write, sync).
        fs.power_off_after(40 + rng.below(120));
        let mut acked = 0;
        for i in 0..120u64 {
            // Group 1 again, continuing after its compaction point: an old batch taken for
            // a new one would truncate the group's new entries (or bring old ones back).
            let ops = vec![MOp::Append(1, 91 + i, vec![(2, vec![0x33; 1800])])];
            m.apply(&ops[0]);
            states.push(m.clone());
            if wal.write(Model::batch(&ops)).is_err() {
                break;
            }
            acked = i as usize + 1;
        }
        assert!(acked > 10, "seed {seed}: too little written ({acked})");
        drop(wal);
        fs.crash().unwrap();
        let wal = Wal::open(config(&dir.path().join("wal"))).unwrap();
        let got = Model::read(&wal);
        model = check_recovered(&got, &model, &states, acked, &format!("seed {seed}"));
        let g1 = model.groups.get(&1).unwrap();
        assert_eq!(g1.first, 91);
        assert!(g1.entries.iter().all(|e| e.0 == 2), "seed {seed}: an old-life entry came back");
    }
}
