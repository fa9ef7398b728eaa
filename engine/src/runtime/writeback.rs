//! [`WritebackPacer`]: paces the page-cache writeback of a large file being written (a
//! snapshot file: hundreds of MiB), so its bytes reach the disk a few MiB at a time while
//! it is written instead of all at once at its final fsync.
//!
//! Why: the final `fsync` of a file written whole flushes everything the page cache held
//! for it in one burst, and every other write of the node's disk queues behind that burst,
//! the WAL's group-commit syncs included: with 16 KiB values, three replicas each writing a
//! 136 MB shard snapshot at once held WAL syncs for up to 146 ms. As RocksDB's
//! `bytes_per_sync` does, every [`WRITEBACK_STEP`] bytes the pacer starts the writeback of
//! the step just written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: no device flush, no
//! metadata) and waits for the step before it to be written back, so at most two steps
//! are in flight and the writer goes at the disk's pace, leaving room between its steps
//! for the WAL's syncs. The final fsync then has little left to write.
//!
//! Owns only that pacing; durability is still the caller's final fsync (a range sync
//! promises nothing). Never fails a write: a range sync that errors (unsupported file
//! system, other platforms: a no-op) is ignored, and the final fsync reports real errors.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes written between two writeback steps.
pub(crate) const WRITEBACK_STEP: u64 = 4 << 20;

/// Steps whose writeback a pacer started, in this process (tests check that a writer is
/// paced).
pub(crate) static STEPS_STARTED: AtomicU64 = AtomicU64::new(0);

/// Starts (`wait` false) or waits for (`wait` true) the writeback of `len` bytes of a file
/// from `offset`.
pub(crate) type RangeSync = fn(&File, u64, u64, bool);

/// The pacer of one file; see the module documentation.
pub(crate) struct WritebackPacer {
    /// The file's bytes below this are handed to writeback.
    started_to: u64,
    /// The step handed over last, not yet waited for: (offset, len).
    in_flight: Option<(u64, u64)>,
    step: u64,
    sync: RangeSync,
}

impl WritebackPacer {
    /// A pacer for a file written from offset `from` on.
    pub(crate) fn new(from: u64) -> WritebackPacer {
        WritebackPacer::with(from, WRITEBACK_STEP, range_sync)
    }

    /// A pacer with its own step and range sync (tests).
    pub(crate) fn with(from: u64, step: u64, sync: RangeSync) -> WritebackPacer {
        WritebackPacer { started_to: from, in_flight: None, step: step.max(1), sync }
    }

    /// Whether a file written up to `end` has a step to hand over ([`Self::written_to`]
    /// would do something): a caller buffering its writes flushes them first.
    pub(crate) fn due(&self, end: u64) -> bool {
        end >= self.started_to + self.step
    }

    /// The file now holds its bytes up to `end` in the page cache (written, and flushed
    /// from any user-space buffer): starts a step's writeback once a step is complete, and
    /// waits for the step before it.
    pub(crate) fn written_to(&mut self, file: &File, end: u64) {
        if !self.due(end) {
            return;
        }
        let step = (self.started_to, end - self.started_to);
        (self.sync)(file, step.0, step.1, false);
        STEPS_STARTED.fetch_add(1, Ordering::Relaxed);
        if let Some((off, len)) = self.in_flight.replace(step) {
            (self.sync)(file, off, len, true);
        }
        self.started_to = end;
    }
}

/// `sync_file_range(2)` on Linux; nothing elsewhere.
#[cfg(target_os = "linux")]
fn range_sync(file: &File, offset: u64, len: u64, wait: bool) {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    let (Ok(off), Ok(n)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else { return };
    // SAFETY: a plain system call on a descriptor `file` keeps open for the call; it
    // touches no memory of this process. Its result is ignored (see the module comment).
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
}

#[cfg(not(target_os = "linux"))]
fn range_sync(_file: &File, _offset: u64, _len: u64, _wait: bool) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static CALLS: Mutex<Vec<(u64, u64, bool)>> = Mutex::new(Vec::new());

    fn record(_f: &File, off: u64, len: u64, wait: bool) {
        CALLS.lock().unwrap_or_else(|e| e.into_inner()).push((off, len, wait));
    }

    #[test]
    fn each_step_is_started_and_the_one_before_it_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        let mut p = WritebackPacer::with(10, 100, record);
        for end in [50, 109, 110, 150, 230, 400, 405] {
            p.written_to(&f, end);
        }
        let calls = CALLS.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![(10, 100, false), (110, 120, false), (10, 100, true), (230, 170, false), (110, 120, true),]
        );
    }
}
