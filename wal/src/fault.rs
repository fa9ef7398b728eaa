//! [`FaultFs`]: a [`FileSystem`] for tests that runs on the real file system but remembers
//! what is not yet durable, injects faults, and simulates a power loss.
//!
//! Owns: the record of unsynced writes (the bytes they overwrote) and unsynced directory
//! operations (per directory: a directory sync makes only its own entries durable),
//! scripted faults (one-shot write/sync faults, faults and a hold on the writes that make
//! spares, a "power off after N operations" switch), counters of syncs, and
//! [`FaultFs::crash`], which rolls back a random part of what was not durable. Never: used
//! by production code; it is public so the integration tests (and the engine's) can use
//! it.
//!
//! Faults are decided in the `before_*` hooks that both I/O backends call at submission
//! and completion, so they reach io_uring and pwrite alike.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};

use crate::fs::{FileSystem, StdFs, SyncFault, WriteFault};

/// A directory operation not yet made durable by a directory sync.
#[derive(Debug, Clone)]
enum DirOp {
    Created(PathBuf),
    Renamed(PathBuf, PathBuf),
    Removed(PathBuf, PathBuf),
}

/// What [`FaultFs::crash`] did to one file's unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashMode {
    /// Everything written reached the disk.
    KeepAll,
    /// Nothing unsynced reached the disk.
    RevertAll,
    /// The unsynced part was cut at a random offset: bytes before it kept, after it lost.
    Cut,
    /// Unsynced writes kept, with random bits flipped in them.
    FlipBits,
}

#[derive(Debug, Default)]
struct State {
    /// Unsynced writes per file, oldest first: (offset, bytes before the write).
    undo: HashMap<PathBuf, Vec<(u64, Vec<u8>)>>,
    /// Per file, how many of its unsynced writes the sync in flight covers.
    sync_marks: HashMap<PathBuf, usize>,
    dir_ops: Vec<DirOp>,
    next_write_faults: VecDeque<WriteFault>,
    /// Faults for the next writes to spares being made (`*.prealloc`, `*.recycle`).
    next_spare_write_faults: VecDeque<WriteFault>,
    /// The next write to a spare being made that no queued fault applies to is held.
    hold_next_spare_write: bool,
    /// The next data sync of a live segment file is held.
    hold_next_sync: bool,
    next_sync_faults: VecDeque<SyncFault>,
    /// Operations (writes and syncs) left before the power goes off.
    power_budget: Option<u64>,
    power_off: bool,
    syncs: u64,
    segment_syncs: u64,
    failed_syncs: u64,
    writes: u64,
    /// Writebacks started on live segment files, and the unsynced bytes written to them
    /// that such a start did not cover.
    writeback_starts: u64,
    writeback_uncovered: u64,
    trash_seq: u64,
    rng: u64,
}

impl State {
    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rand() % n
        }
    }

    /// Counts one operation against the power budget; true when the power is (now) off.
    fn spend(&mut self) -> bool {
        if self.power_off {
            return true;
        }
        if let Some(b) = self.power_budget.as_mut() {
            if *b == 0 {
                self.power_off = true;
                return true;
            }
            *b -= 1;
        }
        false
    }
}

/// The fault-injecting file system (see the module documentation).
#[derive(Debug)]
pub struct FaultFs {
    inner: StdFs,
    trash: PathBuf,
    st: Mutex<State>,
    /// Whether a held spare write is waiting (true) for [`FaultFs::release_spare_write`].
    held: Mutex<bool>,
    held_cv: Condvar,
    /// Whether a held segment sync is waiting (true) for [`FaultFs::release_sync`].
    sync_held: Mutex<bool>,
    sync_cv: Condvar,
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wal")
}

/// A spare being made: preallocated (`*.prealloc`) or recycled (`*.recycle`).
fn is_spare_in_making(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "prealloc" || e == "recycle")
}

/// The directory whose sync makes an operation on `path` durable.
fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl FaultFs {
    /// A fault file system whose deleted-but-unsynced files are kept in `trash` (a
    /// directory outside the WAL's, created if missing), with a seeded random source.
    pub fn new(trash: impl Into<PathBuf>, seed: u64) -> io::Result<FaultFs> {
        let trash = trash.into();
        std::fs::create_dir_all(&trash)?;
        Ok(FaultFs {
            inner: StdFs,
            trash,
            st: Mutex::new(State { rng: seed | 1, ..State::default() }),
            held: Mutex::new(false),
            held_cv: Condvar::new(),
            sync_held: Mutex::new(false),
            sync_cv: Condvar::new(),
        })
    }

    /// The next write to a spare being made (`*.prealloc`, `*.recycle`: the
    /// preallocator's files, or a segment the writer creates itself) suffers `f` (queued:
    /// one fault per write).
    pub fn fail_next_spare_write(&self, f: WriteFault) {
        self.st.lock().next_spare_write_faults.push_back(f);
    }

    /// The next write to a spare being made that no queued fault applies to blocks until
    /// [`FaultFs::release_spare_write`] (a slow preallocation); [`FaultFs::spare_write_held`]
    /// tells when it is waiting. The write then goes on normally (it fails if the power
    /// went off meanwhile).
    pub fn hold_next_spare_write(&self) {
        self.st.lock().hold_next_spare_write = true;
    }

    /// Whether a spare write is held, waiting for [`FaultFs::release_spare_write`].
    pub fn spare_write_held(&self) -> bool {
        *self.held.lock()
    }

    /// Lets a held spare write go on (and disarms a hold not reached yet).
    pub fn release_spare_write(&self) {
        self.st.lock().hold_next_spare_write = false;
        *self.held.lock() = false;
        self.held_cv.notify_all();
    }

    /// The next data sync of a live segment file (`*.wal`) blocks until
    /// [`FaultFs::release_sync`] (a slow disk); [`FaultFs::sync_held`] tells when it is
    /// waiting. The sync then goes on normally.
    pub fn hold_next_sync(&self) {
        self.st.lock().hold_next_sync = true;
    }

    /// Whether a segment sync is held, waiting for [`FaultFs::release_sync`].
    pub fn sync_held(&self) -> bool {
        *self.sync_held.lock()
    }

    /// Lets a held segment sync go on (and disarms a hold not reached yet).
    pub fn release_sync(&self) {
        self.st.lock().hold_next_sync = false;
        *self.sync_held.lock() = false;
        self.sync_cv.notify_all();
    }

    /// The next write submission to a live segment file (`*.wal`, where group commits
    /// go; not the preallocator's files) suffers `f` (queued: one fault per write).
    pub fn fail_next_write(&self, f: WriteFault) {
        self.st.lock().next_write_faults.push_back(f);
    }

    /// The next data sync of a live segment file (`*.wal`) suffers `f` (queued: one
    /// fault per sync).
    pub fn fail_next_sync(&self, f: SyncFault) {
        self.st.lock().next_sync_faults.push_back(f);
    }

    /// After `ops` more writes and syncs the power goes off: the write that hits the limit
    /// is torn at a random length, and every later write or sync fails with EIO without
    /// effect (as do directory operations).
    pub fn power_off_after(&self, ops: u64) {
        self.st.lock().power_budget = Some(ops);
    }

    /// Whether the power is off.
    pub fn is_power_off(&self) -> bool {
        self.st.lock().power_off
    }

    /// Successful data syncs so far.
    pub fn syncs(&self) -> u64 {
        self.st.lock().syncs
    }

    /// Successful data syncs of live segment files (`*.wal`): the group-commit syncs
    /// (preallocation and recycling sync other names).
    pub fn segment_syncs(&self) -> u64 {
        self.st.lock().segment_syncs
    }

    /// Failed data syncs so far.
    pub fn failed_syncs(&self) -> u64 {
        self.st.lock().failed_syncs
    }

    /// Write submissions so far.
    pub fn writes(&self) -> u64 {
        self.st.lock().writes
    }

    /// Writebacks started ([`FileSystem::start_writeback`]) on live segment files.
    pub fn writeback_starts(&self) -> u64 {
        self.st.lock().writeback_starts
    }

    /// Bytes written to a live segment file and not yet synced that lay outside the
    /// range of a writeback started on that file, summed over the starts.
    pub fn writeback_uncovered_bytes(&self) -> u64 {
        self.st.lock().writeback_uncovered
    }

    /// Bytes written but not yet synced, over all files.
    pub fn unsynced_bytes(&self) -> u64 {
        self.st.lock().undo.values().flat_map(|v| v.iter().map(|(_, b)| b.len() as u64)).sum()
    }

    /// Simulates a power loss and reboot: unsynced directory operations are lost (a random
    /// prefix of them survives), and each file's unsynced writes suffer a random
    /// [`CrashMode`]; returns the modes used. Call only while no WAL uses the files. The
    /// power is back on afterwards and no fault is pending.
    pub fn crash(&self) -> io::Result<Vec<CrashMode>> {
        let mut st = self.st.lock();
        // Directory operations: keep a random prefix, undo the rest newest first.
        let ops = std::mem::take(&mut st.dir_ops);
        let keep = st.below(ops.len() as u64 + 1) as usize;
        for op in ops[keep..].iter().rev() {
            match op {
                DirOp::Created(p) => {
                    let _ = std::fs::remove_file(p);
                    st.undo.remove(p);
                }
                DirOp::Renamed(from, to) => {
                    std::fs::rename(to, from)?;
                    if let Some(u) = st.undo.remove(to) {
                        st.undo.insert(from.clone(), u);
                    }
                }
                DirOp::Removed(orig, trash) => {
                    std::fs::rename(trash, orig)?;
                }
            }
        }
        let mut modes = Vec::new();
        let undo = std::mem::take(&mut st.undo);
        for (path, writes) in undo {
            if writes.is_empty() {
                continue;
            }
            let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(_) => continue,
            };
            let mode = match st.below(4) {
                0 => CrashMode::KeepAll,
                1 => CrashMode::RevertAll,
                2 => CrashMode::Cut,
                _ => CrashMode::FlipBits,
            };
            modes.push(mode);
            let lo = writes.iter().map(|(o, _)| *o).min().unwrap_or(0);
            let hi = writes.iter().map(|(o, b)| o + b.len() as u64).max().unwrap_or(0);
            match mode {
                CrashMode::KeepAll => {}
                CrashMode::RevertAll | CrashMode::Cut => {
                    let cut = if mode == CrashMode::Cut { lo + st.below(hi - lo + 1) } else { 0 };
                    for (off, old) in writes.iter().rev() {
                        let end = off + old.len() as u64;
                        if end <= cut {
                            continue;
                        }
                        let start = (*off).max(cut);
                        file.write_all_at(&old[(start - off) as usize..], start)?;
                    }
                }
                CrashMode::FlipBits => {
                    let flips = 1 + st.below(3);
                    for _ in 0..flips {
                        let w = st.below(writes.len() as u64) as usize;
                        let (off, old) = &writes[w];
                        if old.is_empty() {
                            continue;
                        }
                        let at = off + st.below(old.len() as u64);
                        let mut b = [0u8; 1];
                        file.read_exact_at(&mut b, at)?;
                        b[0] ^= 1 << st.below(8);
                        file.write_all_at(&b, at)?;
                    }
                }
            }
            file.sync_all()?;
        }
        st.power_off = false;
        st.power_budget = None;
        st.next_sync_faults.clear();
        st.next_write_faults.clear();
        st.next_spare_write_faults.clear();
        st.hold_next_spare_write = false;
        st.hold_next_sync = false;
        Ok(modes)
    }

    fn dir_op_allowed(&self) -> io::Result<()> {
        if self.st.lock().power_off {
            Err(eio())
        } else {
            Ok(())
        }
    }
}

impl FileSystem for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<File> {
        if create {
            self.dir_op_allowed()?;
        }
        let existed = path.exists();
        let f = self.inner.open(path, create)?;
        if create && !existed {
            self.st.lock().dir_ops.push(DirOp::Created(path.to_path_buf()));
        }
        Ok(f)
    }

    fn set_len(&self, path: &Path, file: &File, len: u64) -> io::Result<()> {
        self.dir_op_allowed()?;
        self.inner.set_len(path, file, len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.dir_op_allowed()?;
        self.inner.rename(from, to)?;
        let mut st = self.st.lock();
        st.dir_ops.push(DirOp::Renamed(from.to_path_buf(), to.to_path_buf()));
        if let Some(u) = st.undo.remove(from) {
            st.undo.insert(to.to_path_buf(), u);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.dir_op_allowed()?;
        let mut st = self.st.lock();
        st.trash_seq += 1;
        let trash = self.trash.join(format!("{}", st.trash_seq));
        std::fs::rename(path, &trash)?;
        st.dir_ops.push(DirOp::Removed(path.to_path_buf(), trash));
        // Writes to a removed file no longer matter... unless the removal is undone, in
        // which case they are rolled back with it below.
        if let Some(u) = st.undo.remove(path) {
            // Apply the rollback now to the trashed copy: a removed file that comes back
            // after a crash comes back with only its durable content.
            if let Ok(f) =
                std::fs::OpenOptions::new().write(true).open(self.trash.join(format!("{}", st.trash_seq)))
            {
                for (off, old) in u.iter().rev() {
                    f.write_all_at(old, *off)?;
                }
            }
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.dir_op_allowed()?;
        self.inner.sync_dir(dir)?;
        // Only operations on entries of `dir` become durable.
        let mut st = self.st.lock();
        let mut pending = Vec::new();
        for op in std::mem::take(&mut st.dir_ops) {
            match op {
                DirOp::Created(p) if dir_of(&p) == dir => {}
                DirOp::Removed(orig, trash) if dir_of(&orig) == dir => {
                    let _ = std::fs::remove_file(trash);
                }
                // (A rename across directories counts as durable once either is synced.)
                DirOp::Renamed(from, to) if dir_of(&from) == dir || dir_of(&to) == dir => {}
                op => pending.push(op),
            }
        }
        st.dir_ops = pending;
        Ok(())
    }

    fn before_write(&self, path: &Path, file: &File, offset: u64, len: usize) -> WriteFault {
        let mut st = self.st.lock();
        let mut spare_fault = None;
        if is_spare_in_making(path) && !st.power_off {
            spare_fault = st.next_spare_write_faults.pop_front();
            if spare_fault.is_none() && std::mem::take(&mut st.hold_next_spare_write) {
                drop(st);
                let mut held = self.held.lock();
                *held = true;
                self.held_cv.notify_all();
                // Bounded by the test: it releases the write.
                while *held {
                    self.held_cv.wait(&mut held);
                }
                drop(held);
                st = self.st.lock();
            }
        }
        st.writes += 1;
        let fault = if st.power_off {
            WriteFault::Eio
        } else if st.power_budget == Some(0) {
            // The write that meets the power loss is torn at a random length.
            st.power_off = true;
            st.power_budget = None;
            let n = st.below(len as u64 + 1) as usize;
            if n == 0 {
                WriteFault::Eio
            } else {
                WriteFault::Torn(n)
            }
        } else {
            st.spend();
            if is_segment(path) {
                st.next_write_faults.pop_front().unwrap_or(WriteFault::None)
            } else {
                spare_fault.unwrap_or(WriteFault::None)
            }
        };
        let n = match fault {
            WriteFault::None => len,
            WriteFault::Short(n) => n.clamp(1, len.max(1)).min(len),
            WriteFault::Torn(n) => n.min(len),
            WriteFault::Eio => 0,
        };
        if n > 0 {
            let flen = file.metadata().map(|m| m.len()).unwrap_or(0);
            let avail = flen.saturating_sub(offset).min(n as u64) as usize;
            let mut old = vec![0u8; avail];
            if avail > 0 && file.read_exact_at(&mut old, offset).is_err() {
                old.clear();
            }
            st.undo.entry(path.to_path_buf()).or_default().push((offset, old));
        }
        fault
    }

    fn before_sync(&self, path: &Path) -> SyncFault {
        let mut st = self.st.lock();
        // A sync covers only the writes completed before it started (the writer may
        // write the next batch while it is in flight, also while it is held).
        let covered = st.undo.get(path).map_or(0, Vec::len);
        st.sync_marks.insert(path.to_path_buf(), covered);
        if is_segment(path) && !st.power_off && std::mem::take(&mut st.hold_next_sync) {
            drop(st);
            let mut held = self.sync_held.lock();
            *held = true;
            self.sync_cv.notify_all();
            // Bounded by the test: it releases the sync.
            while *held {
                self.sync_cv.wait(&mut held);
            }
            drop(held);
            st = self.st.lock();
        }
        if st.spend() {
            return SyncFault::Eio;
        }
        if is_segment(path) {
            st.next_sync_faults.pop_front().unwrap_or(SyncFault::None)
        } else {
            SyncFault::None
        }
    }

    fn start_writeback(&self, path: &Path, file: &File, offset: u64, len: u64) {
        let mut st = self.st.lock();
        if is_segment(path) {
            st.writeback_starts += 1;
            let end = offset.saturating_add(len);
            let uncovered: u64 = st.undo.get(path).map_or(0, |u| {
                u.iter()
                    .filter(|(o, b)| *o < offset || o.saturating_add(b.len() as u64) > end)
                    .map(|(_, b)| b.len() as u64)
                    .sum()
            });
            st.writeback_uncovered += uncovered;
        }
        drop(st);
        self.inner.start_writeback(path, file, offset, len);
    }

    fn after_sync(&self, path: &Path, result: &io::Result<()>) {
        let mut st = self.st.lock();
        match result {
            Ok(()) => {
                st.syncs += 1;
                if is_segment(path) {
                    st.segment_syncs += 1;
                }
                let covered = st.sync_marks.remove(path).unwrap_or(usize::MAX);
                if let Some(u) = st.undo.get_mut(path) {
                    u.drain(..covered.min(u.len()));
                    if u.is_empty() {
                        st.undo.remove(path);
                    }
                }
            }
            Err(_) => {
                st.sync_marks.remove(path);
                st.failed_syncs += 1
            }
        }
    }
}
