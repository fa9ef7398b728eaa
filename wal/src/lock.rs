//! [`DirLock`]: an exclusive lock on a directory, held for as long as the value lives, so
//! that one process (and, within it, one handle) at a time works in the directory.
//!
//! Owns: the `LOCK` file in the directory (created mode 0600; it holds the holder's
//! process id, for the error message of the next one) and the `flock(2)` on it. `flock`
//! locks belong to the open file description, so a second handle in the same process is
//! refused like another process, and the kernel releases the lock when the holder dies.
//! Never: waits for a lock, or deletes the `LOCK` file (a deleted and recreated file would
//! let two holders lock two different inodes).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use thiserror::Error;

/// The lock file's name in a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// Mode of the files the WAL (and the engine) create: owner read and write only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Why a directory could not be locked.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process, or another handle in this process, holds the directory.
    #[error("{dir} is in use: another process or handle holds its LOCK file{}", holder_text(*.holder))]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The process id the holder wrote in the lock file, if it could be read.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (process {p})")).unwrap_or_default()
}

/// An exclusive lock on a directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// Holds the `flock`; closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Locks the existing directory `dir` (creating its `LOCK` file, mode 0600, if
    /// needed); fails at once with [`LockError::Held`] if it is locked already.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(io)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut s = String::new();
                // Bounded: the holder writes a process id, nothing more.
                let holder = Read::by_ref(&mut file)
                    .take(32)
                    .read_to_string(&mut s)
                    .ok()
                    .and_then(|_| s.trim().parse().ok());
                return Err(LockError::Held { dir: dir.to_path_buf(), holder });
            }
            Err(e) => return Err(io(e.into())),
        }
        // A file left by an older version (or a looser umask) is made private too.
        file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE)).map_err(io)?;
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io)?;
        Ok(DirLock { dir: dir.to_path_buf(), _file: file })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_handle_is_refused_until_the_first_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(d.path()).unwrap();
        match DirLock::acquire(d.path()) {
            Err(LockError::Held { dir, holder }) => {
                assert_eq!(dir, d.path());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(a);
        let _b = DirLock::acquire(d.path()).unwrap();
        let mode = std::fs::metadata(d.path().join(LOCK_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, PRIVATE_FILE_MODE);
    }
}
