//! The file-system seam: every file and directory operation of the WAL goes through the
//! [`FileSystem`] trait, so tests can inject faults ([`crate::fault::FaultFs`]).
//!
//! Owns: the trait, the fault hooks both I/O backends call at submission and completion,
//! and [`StdFs`], the real implementation. Never: decides what to write, or retries.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::lock::PRIVATE_FILE_MODE;

/// Mode of the directories the WAL (and the engine) create: owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents with mode 0700, and takes the group and other
/// permission bits off `dir` itself if it existed with them (a directory of durable
/// state is its owner's alone).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)?;
    let perm = std::fs::metadata(dir)?.permissions();
    if perm.mode() & 0o077 != 0 {
        tracing::info!("{}: mode {:o} tightened to {PRIVATE_DIR_MODE:o}", dir.display(), perm.mode() & 0o777);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(perm.mode() & !0o077))?;
    }
    Ok(())
}

/// What a write submission should suffer (decided by [`FileSystem::before_write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteFault {
    /// Write normally.
    None,
    /// Write only the first `n` bytes and report a short write of `n` (the writer must
    /// go on with the rest).
    Short(usize),
    /// Write only the first `n` bytes, then fail with EIO (a torn write).
    Torn(usize),
    /// Write nothing and fail with EIO.
    Eio,
}

/// What a sync should suffer (decided by [`FileSystem::before_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncFault {
    /// Sync normally.
    None,
    /// Do not sync; fail with EIO.
    Eio,
    /// Do not sync; fail with ECANCELED (a linked io_uring fsync cancelled).
    Canceled,
}

/// Every file-system operation the WAL performs. Implementations must be cheap to call
/// from the writer thread. The `before_*`/`after_*` hooks are called by both I/O backends
/// around each write and data sync; the default hooks inject nothing.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates `dir` and its parents (owner-only: mode 0700 in [`StdFs`]).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir` (file names only).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing; creates it (empty) when `create` (owner-only:
    /// mode 0600 in [`StdFs`]).
    fn open(&self, path: &Path, create: bool) -> io::Result<File>;
    /// Sets the length of a file that is not mapped (used only while creating one).
    fn set_len(&self, path: &Path, file: &File, len: u64) -> io::Result<()>;
    /// Renames a file.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, deletions) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Called before `len` bytes at `offset` of `path` are submitted for writing.
    fn before_write(&self, path: &Path, file: &File, offset: u64, len: usize) -> WriteFault {
        let _ = (path, file, offset, len);
        WriteFault::None
    }
    /// Called after a write of `path` completed (successfully or not).
    fn after_write(&self, path: &Path, result: &io::Result<usize>) {
        let _ = (path, result);
    }
    /// Called before a data sync of `path` is submitted.
    fn before_sync(&self, path: &Path) -> SyncFault {
        let _ = path;
        SyncFault::None
    }
    /// Called after a data sync of `path` completed.
    fn after_sync(&self, path: &Path, result: &io::Result<()>) {
        let _ = (path, result);
    }
    /// Starts the writeback of `len` written bytes at `offset` of `path` without waiting
    /// for it, ahead of a data sync (`sync_file_range(SYNC_FILE_RANGE_WRITE)` on Linux,
    /// nothing elsewhere). A hint only: it makes nothing durable (the data sync that
    /// follows does), and its errors are ignored (that sync reports them).
    fn start_writeback(&self, path: &Path, file: &File, offset: u64, len: u64) {
        let _ = path;
        start_writeback(file, offset, len);
    }
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` of `len` bytes at `offset`: the kernel starts
/// writing those dirty pages to the device and returns. Nothing on other systems.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: the descriptor is open for the whole call (borrowed from `file`), and the
    // call reads no memory of this process.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_private_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(path)
    }

    fn set_len(&self, _path: &Path, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
