//! The WAL's API: reads, bounds, typed errors, overwrite, hard state, metadata,
//! compaction marks, group removal, recovery of all of it.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use flotilla_wal::{HardState, ReadError, Wal, WriteBatch, WriteError};

fn entries(g: u64, first: u64, n: u64, term: u64, tag: u8) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in 0..n {
        b.add_entry(g, first + i, term, &[tag, i as u8, 7, 7]);
    }
    b
}

/// The default backend (`BackendChoice::Auto`) is pwrite + fdatasync: measured faster than
/// io_uring for how this log writes (see `BackendChoice::Auto`); io_uring only when asked.
#[test]
fn the_default_backend_is_pwrite() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(flotilla_wal::WalConfig::new(dir.path())).unwrap();
    assert_eq!(wal.backend(), flotilla_wal::BackendKind::Pwrite);
}

#[test]
fn append_read_term_bounds_and_typed_errors() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_backend(&wal);
    wal.write(entries(1, 1, 10, 2, 0xaa)).unwrap();
    assert_eq!(wal.first_index(1), Ok(1));
    assert_eq!(wal.last_index(1), Ok(10));
    assert_eq!(wal.term(1, 5), Ok(2));
    let es = wal.entries(1, 3, 6, None).unwrap();
    assert_eq!(es.len(), 3);
    assert_eq!(es[0].index, 3);
    assert_eq!(es[0].data, vec![0xaa, 2, 7, 7]);
    // max_bytes stops early but returns at least one entry.
    assert_eq!(wal.entries(1, 1, 11, Some(5)).unwrap().len(), 1);
    assert_eq!(wal.entries(1, 1, 11, Some(8)).unwrap().len(), 2);
    assert_eq!(wal.entries(1, 5, 12, None), Err(ReadError::Unavailable { group: 1, index: 11, last: 10 }));
    assert_eq!(wal.entries(2, 1, 2, None), Err(ReadError::GroupNotFound(2)));
    let mut b = WriteBatch::new();
    b.compact_to(1, 4);
    wal.write(b).unwrap();
    assert_eq!(wal.entries(1, 3, 5, None), Err(ReadError::Compacted { group: 1, index: 3, first: 4 }));
    assert_eq!(wal.term(1, 3), Err(ReadError::Compacted { group: 1, index: 3, first: 4 }));
    assert_eq!(wal.first_index(1), Ok(4));
    // A hole is refused with a typed error, and the WAL keeps working.
    assert_eq!(
        wal.write(entries(1, 12, 1, 2, 0)),
        Err(WriteError::NonContiguous { group: 1, index: 12, first: 4, last: 10 })
    );
    assert!(matches!(wal.write(entries(1, 2, 1, 2, 0)), Err(WriteError::NonContiguous { .. })));
    wal.write(entries(1, 11, 1, 2, 0)).unwrap();
    assert_eq!(wal.last_index(1), Ok(11));
}

#[test]
fn overwrite_tail_is_never_returned_again_also_after_restart() {
    let dir = scratch();
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        wal.write(entries(7, 1, 20, 1, 1)).unwrap();
        // A new leader truncates the follower's log at 15 with 2 entries of term 3.
        wal.write(entries(7, 15, 2, 3, 3)).unwrap();
        assert_eq!(wal.last_index(7), Ok(16));
        assert_eq!(wal.term(7, 15), Ok(3));
        assert_eq!(wal.entry(7, 16).unwrap().data, vec![3, 1, 7, 7]);
        assert!(wal.entry(7, 17).is_err());
        assert_eq!(wal.entry(7, 14).unwrap().data, vec![1, 13, 7, 7]);
    }
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.last_index(7), Ok(16));
    assert_eq!(wal.term(7, 15), Ok(3));
    assert_eq!(wal.term(7, 14), Ok(1));
    assert_eq!(wal.entry(7, 16).unwrap().data, vec![3, 1, 7, 7]);
    assert!(matches!(wal.entry(7, 17), Err(ReadError::Unavailable { .. })));
}

#[test]
fn hard_state_meta_compaction_and_removal_recover() {
    let dir = scratch();
    let hs = HardState { term: 5, vote: 2, commit: 9 };
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        let mut b = entries(1, 1, 10, 5, 1);
        b.set_hard_state(1, hs);
        b.set_meta(1, b"members:1,2,3");
        b.add_entry(2, 1, 1, b"two");
        b.set_hard_state(2, HardState::default());
        wal.write(b).unwrap();
        let mut b = WriteBatch::new();
        b.compact_to(1, 6);
        b.remove_group(2);
        // Compacting past the end leaves an empty log continuing there.
        b.compact_to(3, 100);
        wal.write(b).unwrap();
        assert_eq!(wal.groups(), vec![1, 3]);
    }
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.groups(), vec![1, 3]);
    assert_eq!(wal.hard_state(1), Ok(Some(hs)));
    assert_eq!(wal.meta(1), Ok(Some(b"members:1,2,3".to_vec())));
    assert_eq!(wal.first_index(1), Ok(6));
    assert_eq!(wal.last_index(1), Ok(10));
    assert_eq!(wal.first_index(3), Ok(100));
    assert_eq!(wal.last_index(3), Ok(99));
    assert_eq!(wal.hard_state(2), Err(ReadError::GroupNotFound(2)));
    // Appending to the compacted-past-the-end group continues at its first index.
    wal.write(entries(3, 100, 1, 1, 0)).unwrap();
    assert_eq!(wal.last_index(3), Ok(100));
}

#[test]
fn recreated_group_sees_none_of_the_old_groups_records() {
    let dir = scratch();
    {
        let wal = Wal::open(config(dir.path())).unwrap();
        let mut b = entries(4, 1, 5, 1, 1);
        b.set_hard_state(4, HardState { term: 1, vote: 1, commit: 5 });
        b.set_meta(4, b"old");
        wal.write(b).unwrap();
        // Fill a couple of segments with another group so the old records are in an
        // older segment than the removal.
        for i in 0..40u64 {
            let mut b = WriteBatch::new();
            b.add_entry(9, i + 1, 1, &[0u8; 3000]);
            wal.write(b).unwrap();
        }
        let mut b = WriteBatch::new();
        b.remove_group(4);
        wal.write(b).unwrap();
        wal.write(entries(4, 1, 2, 7, 2)).unwrap();
        assert_eq!(wal.hard_state(4), Ok(None));
        assert_eq!(wal.meta(4), Ok(None));
        assert_eq!(wal.last_index(4), Ok(2));
    }
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.hard_state(4), Ok(None));
    assert_eq!(wal.meta(4), Ok(None));
    assert_eq!(wal.last_index(4), Ok(2));
    assert_eq!(wal.term(4, 1), Ok(7));
    assert_eq!(wal.entry(4, 1).unwrap().data, vec![2, 0, 7, 7]);
}

#[test]
fn batch_larger_than_a_segment_is_refused() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    let mut b = WriteBatch::new();
    b.add_entry(1, 1, 1, &vec![0u8; 70 * 1024]);
    assert!(matches!(wal.write(b), Err(WriteError::BatchTooLarge { .. })));
    wal.write(entries(1, 1, 1, 1, 1)).unwrap();
}

#[test]
fn cache_memory_is_bounded_with_100k_groups() {
    let dir = scratch();
    let mut c = config(dir.path());
    c.segment_size = 16 << 20;
    c.max_write_bytes = 4 << 20;
    c.cache_bytes = 256 * 1024;
    let wal = Wal::open(c).unwrap();
    let mut b = WriteBatch::new();
    for g in 0..100_000u64 {
        b.add_entry(g, 1, 1, &[g as u8; 32]);
        if b.encoded_len() > 32 << 10 {
            wal.write(std::mem::take(&mut b)).unwrap();
        }
    }
    wal.write(b).unwrap();
    let s = wal.stats();
    assert_eq!(s.groups, 100_000);
    assert!(s.cache_bytes <= 256 * 1024, "cache {} over budget", s.cache_bytes);
    assert!(s.cache_bytes > 128 * 1024, "cache unused: {}", s.cache_bytes);
    // The newest entries come from the cache; evicted ones still read from the maps.
    assert_eq!(wal.entry(99_999, 1).unwrap().data, vec![99_999u64 as u8; 32]);
    assert_eq!((wal.stats().entries_read, wal.stats().entries_read_cached), (1, 1));
    assert_eq!(wal.entry(0, 1).unwrap().data, vec![0u8; 32]);
    assert_eq!((wal.stats().entries_read, wal.stats().entries_read_cached), (2, 1));
}

/// The cache serves entries at their log location: after a group's tail is overwritten,
/// compacted or the group removed and recreated, reads return the latest payloads (from
/// the cache), never the bytes of a superseded write that the cache still holds.
#[test]
fn cached_reads_follow_overwrites_compactions_and_removals() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    let put = |g: u64, from: u64, n: u64, tag: u8| {
        let mut b = WriteBatch::new();
        for i in from..from + n {
            b.add_entry(g, i, tag as u64, &[tag, i as u8, g as u8]);
        }
        wal.write(b).unwrap();
    };
    let read = |g: u64, lo: u64, hi: u64| -> Vec<(u64, Vec<u8>)> {
        wal.entries(g, lo, hi, None).unwrap().into_iter().map(|e| (e.term, e.data)).collect()
    };
    put(1, 1, 10, 1);
    put(2, 1, 10, 1);
    // Overwrite group 1 from index 4 with a new term.
    put(1, 4, 3, 2);
    let mut want: Vec<(u64, Vec<u8>)> = (1..4).map(|i| (1, vec![1, i as u8, 1])).collect();
    want.extend((4..7).map(|i| (2, vec![2, i as u8, 1])));
    assert_eq!(read(1, 1, 7), want);
    assert!(matches!(wal.entry(1, 7), Err(ReadError::Unavailable { .. })));
    // Compaction, then the log restarts above it.
    let mut b = WriteBatch::new();
    b.compact_to(2, 20);
    wal.write(b).unwrap();
    put(2, 20, 2, 3);
    assert_eq!(read(2, 20, 22), vec![(3, vec![3, 20, 2]), (3, vec![3, 21, 2])]);
    // Removed and created again: the old group's cached bytes never answer.
    let mut b = WriteBatch::new();
    b.remove_group(1);
    wal.write(b).unwrap();
    put(1, 1, 2, 4);
    assert_eq!(read(1, 1, 3), vec![(4, vec![4, 1, 1]), (4, vec![4, 2, 1])]);
    let s = wal.stats();
    assert_eq!(s.entries_read, s.entries_read_cached, "every read above came from the cache");
    // The same answers from the maps after a restart (the cache starts empty).
    drop(wal);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.entries(1, 1, 3, None).unwrap().len(), 2);
    assert_eq!(wal.entry(2, 21).unwrap().data, vec![3, 21, 2]);
    assert_eq!(wal.stats().entries_read_cached, 0);
}

#[test]
fn extreme_indexes_are_refused_or_served_without_panicking() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    let mut b = WriteBatch::new();
    b.compact_to(1, u64::MAX);
    wal.write(b).unwrap();
    assert_eq!(wal.first_index(1), Ok(u64::MAX - 1));
    assert!(matches!(wal.write(entries(1, u64::MAX - 1, 2, 1, 1)), Err(WriteError::NonContiguous { .. })));
    assert!(matches!(wal.write(entries(1, u64::MAX, 1, 1, 1)), Err(WriteError::NonContiguous { .. })));
    assert!(matches!(wal.entry(1, u64::MAX), Err(ReadError::Unavailable { .. })));
    assert!(matches!(wal.term(1, 0), Err(ReadError::Compacted { .. })));
    assert!(matches!(wal.write(entries(2, 0, 1, 1, 1)), Err(WriteError::NonContiguous { .. })));
    drop(wal);
    let wal = Wal::open(config(dir.path())).unwrap();
    assert_eq!(wal.first_index(1), Ok(u64::MAX - 1));
}

#[test]
fn indexes_near_u64_max_in_a_batch_do_not_panic() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    let mut b = WriteBatch::new();
    b.add_entry(1, u64::MAX, 1, b"a");
    b.add_entry(1, 5, 1, b"b");
    assert!(matches!(wal.write(b), Err(WriteError::NonContiguous { .. })));
    let mut b = WriteBatch::new();
    b.add_entries(1, u64::MAX, [(1, &b"a"[..]), (1, &b"b"[..])]);
    assert!(matches!(wal.write(b), Err(WriteError::NonContiguous { .. })));
    wal.write(entries(1, 1, 1, 1, 1)).unwrap();
}

#[test]
fn a_segment_number_out_of_range_is_refused_not_overflowed() {
    let dir = scratch();
    // A well-formed (empty) segment numbered u64::MAX.
    use flotilla_wal::codec::{RecordCodec, SegmentHeader};
    let wal_id = Wal::open(config(dir.path())).unwrap().wal_id();
    let h = SegmentHeader { seq: u64::MAX, salt: 1, size: 64 * 1024, wal_id };
    let mut bytes = vec![0u8; 64 * 1024];
    bytes[..64].copy_from_slice(&RecordCodec::encode_segment_header(&h));
    let bad = dir.path().join(format!("{:020}.wal", u64::MAX));
    std::fs::write(&bad, bytes).unwrap();
    match Wal::open(config(dir.path())) {
        Err(flotilla_wal::OpenError::Corrupt { file, .. }) => assert_eq!(file, bad),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("opened"),
    }
}

/// Records the directories synced, on the real file system.
#[derive(Default)]
struct DirSyncs(std::sync::Mutex<Vec<std::path::PathBuf>>);

impl flotilla_wal::FileSystem for DirSyncs {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        flotilla_wal::StdFs.list(dir)
    }
    fn open(&self, path: &std::path::Path, create: bool) -> std::io::Result<std::fs::File> {
        flotilla_wal::StdFs.open(path, create)
    }
    fn set_len(&self, path: &std::path::Path, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        flotilla_wal::StdFs.set_len(path, file, len)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        flotilla_wal::StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.0.lock().unwrap().push(dir.to_path_buf());
        flotilla_wal::StdFs.sync_dir(dir)
    }
}

#[test]
fn creating_the_log_directory_syncs_each_new_directory_in_its_parent() {
    let dir = scratch();
    let fs = std::sync::Arc::new(DirSyncs::default());
    let wal_dir = dir.path().join("a").join("b");
    let wal = Wal::open_with_fs(config(&wal_dir), fs.clone()).unwrap();
    wal.write(entries(1, 1, 1, 1, 1)).unwrap();
    let synced = fs.0.lock().unwrap().clone();
    for d in [dir.path().to_path_buf(), dir.path().join("a"), wal_dir.clone()] {
        assert!(synced.contains(&d), "{} never synced: {synced:?}", d.display());
    }
}

/// An entry whose payload is written straight into the batch is the same record as one
/// added from a slice; a writer that shortens the batch's payloads (against the contract)
/// makes the whole batch refused, not a corrupt record.
#[test]
fn entries_written_into_the_batch_match_entries_added_and_a_shortening_writer_is_refused() {
    let dir = scratch();
    let wal = Wal::open(config(dir.path())).unwrap();
    let mut b = WriteBatch::new();
    b.add_entry(1, 1, 1, b"one");
    b.add_entry_with(1, 2, 1, |d| d.extend_from_slice(b"two"));
    b.add_entry_with(1, 3, 1, |d| d.extend_from_slice(b""));
    let mut same = WriteBatch::new();
    same.add_entry(1, 1, 1, b"one");
    same.add_entry(1, 2, 1, b"two");
    same.add_entry(1, 3, 1, b"");
    assert_eq!(b.encoded_len(), same.encoded_len());
    wal.write(b).unwrap();
    let es = wal.entries(1, 1, 4, None).unwrap();
    let datas: Vec<&[u8]> = es.iter().map(|e| &e.data[..]).collect();
    assert_eq!(datas, [&b"one"[..], b"two", b""]);

    let mut bad = WriteBatch::new();
    bad.add_entry(2, 1, 1, b"kept");
    bad.add_entry_with(2, 2, 1, |d| d.truncate(1));
    assert_eq!(bad.encoded_len(), usize::MAX);
    assert!(matches!(wal.write(bad), Err(WriteError::BatchTooLarge { .. })), "refused");
    assert_eq!(wal.last_index(2), Err(ReadError::GroupNotFound(2)));
}
