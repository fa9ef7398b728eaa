//! Compaction: dead segments are freed, disk use stays bounded, sparse segments are
//! rewritten (records read back identical, also after a restart or a crash mid-rewrite),
//! rewritten records never override newer operations, pinning groups are reported.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use flotilla_wal::{HardState, Wal, WalConfig};

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".wal"))
        .count()
}

fn apply(wal: &Wal, model: &mut Model, ops: Vec<MOp>) {
    for op in &ops {
        model.apply(op);
    }
    wal.write(Model::batch(&ops)).unwrap();
}

#[test]
fn steady_append_and_compact_keeps_disk_use_bounded() {
    let dir = scratch();
    let c = config(dir.path());
    let wal = Wal::open(c.clone()).unwrap();
    let mut model = Model::default();
    let mut max_files = 0;
    for round in 0..400u64 {
        let mut ops = Vec::new();
        for g in 0..4u64 {
            let idx = round + 1;
            ops.push(MOp::Append(g, idx, vec![(1, vec![(round % 256) as u8; 1000])]));
            if idx > 10 {
                ops.push(MOp::Compact(g, idx - 10));
            }
        }
        apply(&wal, &mut model, ops);
        max_files = max_files.max(segment_files(dir.path()));
    }
    // 1.6 MB went through 64 KiB segments; live data is ~40 KB.
    let s = wal.stats();
    eprintln!("max segment files {max_files}, stats {s:?}");
    assert!(s.segments_recycled > 0, "no segment was recycled");
    assert!(max_files <= 10, "disk use not bounded: {max_files} segment files");
    assert_eq!(Model::read(&wal), model);
    drop(wal);
    let wal = Wal::open(c).unwrap();
    assert_eq!(Model::read(&wal), model);
}

/// A cold group leaves a few records in each segment while a hot group fills and
/// compacts them.
fn sparse_workload(wal: &Wal, model: &mut Model, rounds: u64) {
    for r in 0..rounds {
        let mut ops = vec![MOp::Append(2, r + 1, vec![(1, vec![7u8; 3000])])];
        if r > 0 {
            ops.push(MOp::Compact(2, r + 1));
        }
        if r % 20 == 0 {
            let i = r / 20 + 1;
            ops.push(MOp::Append(1, i, vec![(3, vec![i as u8; 200])]));
            ops.push(MOp::Hs(1, HardState { term: 3, vote: 1, commit: i }));
        }
        apply(wal, model, ops);
    }
}

fn no_rewrite(c: &mut WalConfig) {
    c.rewrite_ratio = 0.0;
}

#[test]
fn sparse_segments_are_rewritten_and_read_back_identical_after_restart() {
    let dir = scratch();
    let mut c = config(dir.path());
    no_rewrite(&mut c);
    let mut model = Model::default();
    {
        let wal = Wal::open(c.clone()).unwrap();
        sparse_workload(&wal, &mut model, 100);
        // Without rewriting, the cold group pins the old segments.
        assert!(wal.segment_seqs().len() >= 4);
        assert_eq!(wal.pinning_groups(1)[0].groups, vec![1]);
    }
    c.rewrite_ratio = 0.5;
    let wal = Wal::open(c.clone()).unwrap();
    let before = wal.segment_seqs();
    let stats_before = wal.stats();
    let report = wal.maintain().unwrap();
    assert!(report.segments_rewritten >= 3, "{report:?}");
    assert!(report.segments_freed >= 3, "{report:?}");
    // The pass is counted with what it did (passes after rounds may add to it).
    let stats = wal.stats();
    assert!(stats.compaction_passes > stats_before.compaction_passes);
    assert!(
        stats.compaction_bytes_rewritten - stats_before.compaction_bytes_rewritten >= report.bytes_rewritten,
        "{stats:?} {report:?}"
    );
    assert!(
        stats.compaction_segments_freed - stats_before.compaction_segments_freed
            >= report.segments_freed as u64
    );
    assert_eq!(wal.compaction_latency().count, stats.compaction_passes);
    let after = wal.segment_seqs();
    assert!(after[0] > before[0], "oldest segment not freed: {before:?} -> {after:?}");
    assert_eq!(Model::read(&wal), model, "rewritten records differ");
    drop(wal);
    let wal = Wal::open(c).unwrap();
    assert_eq!(Model::read(&wal), model, "rewritten records differ after restart");
}

#[test]
fn a_crash_in_the_middle_of_a_rewrite_loses_nothing() {
    for k in 0..24u64 {
        let dir = scratch();
        let (fs, wal) = open_fault(dir.path(), k);
        drop(wal);
        let mut c = config(&dir.path().join("wal"));
        no_rewrite(&mut c);
        let wal = Wal::open_with_fs(c.clone(), fs.clone()).unwrap();
        let mut model = Model::default();
        sparse_workload(&wal, &mut model, 80);
        drop(wal);
        c.rewrite_ratio = 0.5;
        let wal = Wal::open_with_fs(c.clone(), fs.clone()).unwrap();
        fs.power_off_after(k);
        let _ = wal.maintain();
        drop(wal);
        fs.crash().unwrap();
        let wal = Wal::open(c.clone()).unwrap();
        assert_eq!(Model::read(&wal), model, "crash after {k} i/o operations of a rewrite");
        // And the interrupted compaction can run again.
        wal.maintain().unwrap();
        assert_eq!(Model::read(&wal), model);
    }
}

/// A failed fsync of a rewrite's copies poisons the log, and then nothing is freed: the
/// old segments still hold the only durable copies of the live records. (Rounds are
/// applied to the log's state before their sync, so the copies made the old segments look
/// dead, and the retire step and the preallocator went on after the poison and deleted
/// them: after a crash, 11 of 16 seeds lost acknowledged entries and the log would not
/// open.) Found by a review; the scenario is the reviewer's.
#[test]
fn a_failed_sync_of_rewritten_copies_frees_no_segment() {
    let mut lost = Vec::new();
    for seed in 1..=16u64 {
        let dir = scratch();
        let wdir = dir.path().join("wal");
        let mut c = config(&wdir);
        no_rewrite(&mut c);
        let mut model = Model::default();
        {
            let wal = Wal::open(c.clone()).unwrap();
            sparse_workload(&wal, &mut model, 100);
        }
        c.rewrite_ratio = 0.5;
        let fs =
            std::sync::Arc::new(flotilla_wal::fault::FaultFs::new(dir.path().join("trash"), seed).unwrap());
        let wal = Wal::open_with_fs(c.clone(), fs.clone()).unwrap();
        assert_eq!(Model::read(&wal), model);
        fs.fail_next_sync(flotilla_wal::SyncFault::Eio);
        let report = wal.maintain().unwrap();
        assert!(wal.is_poisoned());
        assert_eq!(report.segments_freed, 0, "seed {seed}: nothing is retired once poisoned");
        // The preallocator works in the background: give it time to (wrongly) free.
        std::thread::sleep(Duration::from_millis(300));
        drop(wal);
        fs.crash().unwrap();
        match Wal::open(c.clone()) {
            Ok(wal) if Model::read(&wal) == model => {}
            Ok(_) => lost.push(format!("seed {seed}: entries differ ({report:?})")),
            Err(e) => lost.push(format!("seed {seed}: {e} ({report:?})")),
        }
    }
    assert!(lost.is_empty(), "acknowledged data lost after a failed fsync: {lost:?}");
}

#[test]
fn pinning_groups_names_the_holders_of_the_oldest_segments() {
    let dir = scratch();
    let mut c = config(dir.path());
    no_rewrite(&mut c);
    let wal = Wal::open(c).unwrap();
    let mut model = Model::default();
    apply(&wal, &mut model, vec![MOp::Append(7, 1, vec![(1, vec![1; 100])])]);
    apply(&wal, &mut model, vec![MOp::Hs(8, HardState { term: 1, vote: 0, commit: 0 })]);
    for r in 0..60u64 {
        let mut ops = vec![MOp::Append(9, r + 1, vec![(1, vec![0; 3000])])];
        if r > 0 {
            ops.push(MOp::Compact(9, r + 1));
        }
        apply(&wal, &mut model, ops);
    }
    let pins = wal.pinning_groups(2);
    assert!(!pins.is_empty());
    assert_eq!(pins[0].seq, wal.segment_seqs()[0]);
    assert_eq!(pins[0].groups, vec![7, 8], "{pins:?}");
    // Snapshot-and-compact the named groups: the segment is then freed.
    apply(&wal, &mut model, vec![MOp::Compact(7, 2), MOp::Compact(8, 1), MOp::Remove(8)]);
    let oldest = pins[0].seq;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        wal.maintain().unwrap();
        if !wal.segment_seqs().contains(&oldest) {
            break;
        }
        assert!(Instant::now() < deadline, "segment {oldest} never freed: {:?}", wal.pinning_groups(3));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(Model::read(&wal), model);
}

#[test]
fn rewritten_records_never_override_newer_operations() {
    let dir = scratch();
    let mut c = config(dir.path());
    c.rewrite_ratio = 1.0;
    let wal = Wal::open(c.clone()).unwrap();
    let mut model = Model::default();
    let e = |t: u64, b: u8| (t, vec![b; 500]);
    // Old records of groups 1 and 2 in the first segment.
    apply(&wal, &mut model, vec![MOp::Append(1, 1, (0..20).map(|i| e(1, i)).collect())]);
    apply(&wal, &mut model, vec![MOp::Append(2, 1, (0..5).map(|i| e(1, i)).collect())]);
    apply(
        &wal,
        &mut model,
        vec![MOp::Meta(2, b"old".to_vec()), MOp::Hs(1, HardState { term: 1, vote: 1, commit: 3 })],
    );
    // Newer operations in later segments: overwrite, compaction, removal and re-creation.
    for r in 0..30u64 {
        apply(&wal, &mut model, vec![MOp::Append(3, 4 * r + 1, vec![e(1, 0), e(1, 1), e(1, 2), e(1, 3)])]);
        if r == 5 {
            apply(&wal, &mut model, vec![MOp::Append(1, 15, vec![e(2, 99)])]);
        }
        if r == 10 {
            apply(&wal, &mut model, vec![MOp::Compact(1, 4), MOp::Remove(2)]);
        }
        if r == 12 {
            apply(&wal, &mut model, vec![MOp::Append(2, 1, vec![e(5, 55)])]);
        }
        if r % 7 == 0 {
            wal.maintain().unwrap();
        }
        apply(&wal, &mut model, vec![MOp::Compact(3, 4 * r + 1)]);
    }
    wal.maintain().unwrap();
    wal.maintain().unwrap();
    assert_eq!(Model::read(&wal), model);
    drop(wal);
    let wal = Wal::open(c).unwrap();
    assert_eq!(Model::read(&wal), model, "{}", diff(&Model::read(&wal), &model));
}

#[test]
fn a_rewritten_overwrite_still_truncates_the_old_tail_after_restart() {
    let dir = scratch();
    let mut c = config(dir.path());
    c.auto_maintain = false;
    let mut model = Model::default();
    {
        let wal = Wal::open(c.clone()).unwrap();
        // Segment A: group 1 entries 1..=20 and dense, never compacted group 2 data.
        apply(&wal, &mut model, vec![MOp::Append(1, 1, (0..20).map(|i| (1, vec![i; 100])).collect())]);
        for i in 0..16u64 {
            apply(&wal, &mut model, vec![MOp::Append(2, i + 1, vec![(1, vec![2; 3900])])]);
        }
        assert_eq!(wal.segment_seqs().len(), 2, "the 16th entry starts segment B");
        // Segment B: the overwrite of group 1 at 15 (dropping 16..=20), then filler that
        // is compacted away, so B is sparse while A stays dense.
        apply(&wal, &mut model, vec![MOp::Append(1, 15, vec![(2, vec![15; 100])])]);
        for i in 0..40u64 {
            apply(
                &wal,
                &mut model,
                vec![MOp::Append(3, i + 1, vec![(1, vec![3; 3000])]), MOp::Compact(3, i + 2)],
            );
        }
        let report = wal.maintain().unwrap();
        assert!(report.segments_rewritten >= 1, "{report:?}");
        assert_eq!(Model::read(&wal), model);
    }
    let wal = Wal::open(c).unwrap();
    assert_eq!(wal.last_index(1), Ok(15));
    assert_eq!(Model::read(&wal), model, "{}", diff(&Model::read(&wal), &model));
}

fn payload(g: u64, i: u64) -> Vec<u8> {
    let mut v = vec![g as u8; 700];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

#[test]
fn readers_never_see_a_freed_or_recycled_segment() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let dir = scratch();
    let mut c = config(dir.path());
    c.rewrite_ratio = 0.5;
    // Every read goes to the segment maps.
    c.cache_bytes = 0;
    let wal = Arc::new(Wal::open(c).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (wal, stop, reads) = (wal.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut g = r;
                while !stop.load(Ordering::Relaxed) {
                    g = (g + 1) % 4;
                    let (Ok(first), Ok(last)) = (wal.first_index(g), wal.last_index(g)) else {
                        continue;
                    };
                    match wal.entries(g, first, last + 1, None) {
                        Ok(es) => {
                            for e in es {
                                assert_eq!(e.data, payload(g, e.index), "group {g} entry {}", e.index);
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        // Compaction may overtake the reader between the two calls.
                        Err(flotilla_wal::ReadError::Compacted { .. }) => {}
                        Err(e) => panic!("read failed: {e}"),
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(2) && i < 20_000 {
        i += 1;
        let mut b = flotilla_wal::WriteBatch::new();
        for g in 0..4u64 {
            b.add_entry(g, i, 1, &payload(g, i));
            // Group 3 keeps a long tail (sparse old segments get rewritten for it).
            let keep = if g == 3 { 400 } else { 20 };
            if i > keep {
                b.compact_to(g, i - keep);
            }
        }
        wal.write(b).unwrap();
        if i % 100 == 0 {
            wal.maintain().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let s = wal.stats();
    eprintln!("{i} batches, {} reads, {s:?}", reads.load(Ordering::Relaxed));
    assert!(s.segments_recycled > 0, "no segment was recycled under the readers");
    assert!(reads.load(Ordering::Relaxed) > 10);
}

/// The automatic pass after a rotation copies about 256 KiB of a sparse segment's live
/// records per round (whole groups), not the whole segment at once: in the cluster bench a
/// whole-segment copy held the writer, and every round behind it, for 50 to 220 ms. The
/// segment is copied over the next rounds and then freed, and nothing is lost.
#[test]
fn an_automatic_rewrite_copies_a_bounded_share_per_round() {
    let dir = scratch();
    let mut c = config(dir.path());
    c.segment_size = 4 << 20;
    c.max_write_bytes = 1 << 20;
    c.rewrite_ratio = 0.9;
    let wal = Wal::open(c.clone()).unwrap();
    let mut model = Model::default();
    // 2.4 MB of cold records, 300 groups of 8,000 bytes, stay live in segment 1.
    for chunk in 0..6u64 {
        let ops = (0..50u64)
            .map(|i| MOp::Append(100 + chunk * 50 + i, 1, vec![(1, vec![i as u8; 8000])]))
            .collect();
        apply(&wal, &mut model, ops);
    }
    // A hot group fills the rest and compacts as it goes, until its writes rotate.
    let mut hot = 0u64;
    let (before, after) = loop {
        assert!(hot < 40, "no rotation after {hot} writes of 100 KB");
        let written = wal.stats().written_bytes;
        hot += 1;
        let mut ops = vec![MOp::Append(1, hot, vec![(1, vec![hot as u8; 100_000])])];
        if hot > 1 {
            ops.push(MOp::Compact(1, hot));
        }
        apply(&wal, &mut model, ops);
        if wal.segment_seqs().last().is_some_and(|&s| s > 1) {
            break (written, wal.stats().written_bytes);
        }
    };
    assert_eq!(wal.segment_seqs()[0], 1, "segment 1 was copied whole in the rotation's round");
    let copied = after - before - 100_000;
    assert!(copied > 200_000, "the rotation's pass copied {copied} bytes");
    assert!(copied < (256 << 10) + 64 * 1024, "the rotation's pass copied {copied} bytes at once");
    // The stats count the pass and the bytes it copied, and time it.
    let stats = wal.stats();
    assert!(stats.compaction_passes >= 1, "{stats:?}");
    assert!((200_000..(256 << 10) + 64 * 1024).contains(&stats.compaction_bytes_rewritten), "{stats:?}");
    assert_eq!(wal.compaction_latency().count, stats.compaction_passes);
    assert!(wal.compaction_latency().sum_nanos > 0);
    // The next rounds copy the rest; then segment 1 goes.
    for _ in 0..24 {
        hot += 1;
        apply(&wal, &mut model, vec![MOp::Append(1, hot, vec![(1, vec![1; 100])]), MOp::Compact(1, hot)]);
        if wal.segment_seqs()[0] > 1 {
            break;
        }
    }
    assert!(wal.segment_seqs()[0] > 1, "segment 1 still kept: {:?}", wal.segment_seqs());
    // Every live byte of segment 1 was copied, over several passes, and it was freed.
    let stats = wal.stats();
    assert!(stats.compaction_bytes_rewritten >= 2_400_000, "{stats:?}");
    assert!(stats.compaction_passes >= 3, "{stats:?}");
    assert!(stats.compaction_segments_freed >= 1, "{stats:?}");
    assert_eq!(Model::read(&wal), model);
    drop(wal);
    let wal = Wal::open(c).unwrap();
    assert_eq!(Model::read(&wal), model, "after a restart");
}
