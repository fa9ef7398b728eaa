//! One segment file of the log: [`Segment`], a fixed-size, preallocated file with its
//! header and a read-only memory map of the whole file.
//!
//! Owns: creating a segment (zero-filled by real writes, header, fdatasync, then an atomic
//! rename into place and a directory fsync), recycling a freed one under a new sequence
//! number, and opening existing ones. Never: truncates a file (a mapped file that shrinks
//! would crash readers with SIGBUS), or writes records (the `SegmentWriter` does).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::Mmap;

use crate::backend::{datasync, pwrite_all};
use crate::codec::{RecordCodec, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::fs::FileSystem;

/// Bytes of zeros written per call while a segment is created.
const ZERO_CHUNK: usize = 1 << 20;
/// Zeros written between data syncs while a segment is created. The disk is shared with
/// the log's own syncs: a whole segment's zeros flushed by one sync (64 MiB by default)
/// sit in the device's queue ahead of every commit's flush for as long as they take to
/// write (measured: WAL syncs of 67–134 ms at 256 B x 4,096 on the cluster bench). Synced
/// in steps, at most this much is ever queued ahead of them.
const ZERO_SYNC_STEP: u64 = 4 << 20;

/// File-name suffix of a live segment.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
/// File-name suffix of a segment being preallocated (deleted by recovery).
pub(crate) const PREALLOC_SUFFIX: &str = ".prealloc";
/// File-name suffix of a segment being recycled (deleted by recovery).
pub(crate) const RECYCLE_SUFFIX: &str = ".recycle";

/// A segment file and its memory map.
pub(crate) struct Segment {
    /// Sequence number (also in the file name and header).
    pub seq: u64,
    /// Salt of this life of the file.
    pub salt: u64,
    /// Checksum seed derived from `seq` and `salt`.
    pub seed: u32,
    /// Id of the log the segment belongs to (in its header).
    pub wal_id: u64,
    /// File size.
    pub size: u64,
    /// Current path.
    pub path: PathBuf,
    /// The open file (read + write).
    pub file: File,
    /// Read-only map of the whole file.
    pub map: Mmap,
}

/// The file name of segment `seq`.
pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// A fresh random-enough salt: time, a counter and the process id, mixed.
fn new_salt() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x = t ^ c.rotate_left(32) ^ (std::process::id() as u64).rotate_left(48);
    // splitmix64 finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A random id for a new log (see [`crate::codec`]): from the operating system's random
/// source, so two logs never share one by accident. Never 0 (kept for "none").
pub(crate) fn new_wal_id() -> io::Result<u64> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).map_err(|e| io::Error::other(format!("random wal id: {e}")))?;
    Ok(u64::from_le_bytes(b).max(1))
}

fn map_file(file: &File) -> io::Result<Mmap> {
    // SAFETY: the WAL never truncates a segment file (see the module comment), so the
    // mapping stays backed; bytes may change under it only in regions the WAL is
    // writing, which readers never look at before the write completed and was indexed
    // (an index entry points only at bytes whose write returned; a region is written once
    // per segment life).
    unsafe { Mmap::map(file) }
}

impl Segment {
    /// Creates segment `seq` of `size` bytes of log `wal_id` in `dir`: writes zeros over the whole file
    /// (so later fdatasyncs do not pay for allocating blocks), syncing every
    /// [`ZERO_SYNC_STEP`] of them, writes the header, syncs the data, renames it into
    /// place and syncs the directory.
    pub(crate) fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        seq: u64,
        size: u64,
        wal_id: u64,
    ) -> io::Result<Segment> {
        let tmp = dir.join(format!("{seq:020}{PREALLOC_SUFFIX}"));
        let file = fs.open(&tmp, true)?;
        fs.set_len(&tmp, &file, size)?;
        // Never a buffer larger than the segment.
        let zeros = vec![0u8; (size as usize).min(ZERO_CHUNK)];
        let mut off = SEGMENT_HEADER_LEN as u64;
        let mut unsynced = 0u64;
        while off < size {
            let n = ((size - off) as usize).min(zeros.len());
            pwrite_all(fs, &tmp, &file, off, &zeros[..n])?;
            off += n as u64;
            unsynced += n as u64;
            if unsynced >= ZERO_SYNC_STEP && off < size {
                datasync(fs, &tmp, &file)?;
                unsynced = 0;
            }
        }
        let salt = new_salt();
        let header = RecordCodec::encode_segment_header(&SegmentHeader { seq, salt, size, wal_id });
        pwrite_all(fs, &tmp, &file, 0, &header)?;
        datasync(fs, &tmp, &file)?;
        let path = dir.join(segment_name(seq));
        fs.rename(&tmp, &path)?;
        fs.sync_dir(dir)?;
        let map = map_file(&file)?;
        Ok(Segment { seq, salt, seed: RecordCodec::seed(seq, salt), wal_id, size, path, file, map })
    }

    /// Gives this (freed, unshared) segment a new life as segment `seq`: renames it out of
    /// the log's name space (and syncs the directory, so its old contents can no longer
    /// come back), writes a new header with a new salt, syncs, renames it to its new name
    /// and syncs the directory. Records of the old life stay in the file but never verify
    /// under the new seed.
    pub(crate) fn recycle(mut self, fs: &dyn FileSystem, dir: &Path, seq: u64) -> io::Result<Segment> {
        let tmp = dir.join(format!("{seq:020}{RECYCLE_SUFFIX}"));
        fs.rename(&self.path, &tmp)?;
        fs.sync_dir(dir)?;
        let salt = new_salt();
        let header = RecordCodec::encode_segment_header(&SegmentHeader {
            seq,
            salt,
            size: self.size,
            wal_id: self.wal_id,
        });
        pwrite_all(fs, &tmp, &self.file, 0, &header)?;
        datasync(fs, &tmp, &self.file)?;
        let path = dir.join(segment_name(seq));
        fs.rename(&tmp, &path)?;
        fs.sync_dir(dir)?;
        self.seq = seq;
        self.salt = salt;
        self.seed = RecordCodec::seed(seq, salt);
        self.path = path;
        Ok(self)
    }

    /// Opens an existing segment file and maps it. The header is decoded by the caller
    /// (recovery), which decides what a bad one means.
    pub(crate) fn open(fs: &dyn FileSystem, path: &Path) -> io::Result<(File, Mmap)> {
        let file = fs.open(path, false)?;
        let map = map_file(&file)?;
        Ok((file, map))
    }

    /// Builds a segment from an opened file whose header decoded as `h`.
    pub(crate) fn from_parts(path: PathBuf, file: File, map: Mmap, h: &SegmentHeader) -> Segment {
        Segment {
            seq: h.seq,
            salt: h.salt,
            seed: RecordCodec::seed(h.seq, h.salt),
            wal_id: h.wal_id,
            size: (map.len() as u64).min(h.size.max(SEGMENT_HEADER_LEN as u64)),
            path,
            file,
            map,
        }
    }

    /// The mapped bytes (the whole file).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultFs;

    /// A new segment's zeros reach the disk in steps of [`ZERO_SYNC_STEP`], never all
    /// in one sync: 16 MiB of zeros take three intermediate syncs and the final one.
    #[test]
    fn a_new_segment_is_zero_filled_in_synced_steps() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new(dir.path().join("trash"), 1).unwrap();
        let size = 4 * ZERO_SYNC_STEP;
        let seg = Segment::create(&fs, dir.path(), 1, size, 7).unwrap();
        assert_eq!(seg.size, size);
        assert_eq!(fs.syncs(), 4, "three syncs while zero-filling, one for the header");
        // A segment no larger than one step is synced once.
        let before = fs.syncs();
        Segment::create(&fs, dir.path(), 2, ZERO_SYNC_STEP, 7).unwrap();
        assert_eq!(fs.syncs() - before, 1);
    }
}
