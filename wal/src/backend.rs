//! The I/O backends that write a group-commit buffer and make it durable: the portable
//! [`PwriteBackend`] (pwrite, fdatasync) and, on Linux, [`UringBackend`] (io_uring write,
//! fdatasync). Writing and syncing are separate calls so that the next buffer can be
//! written while a sync is in flight (each half has its own backend).
//!
//! Both sync with fdatasync(2) on the calling thread. An io_uring fsync never completes
//! inline: the kernel hands it to an io-wq worker thread and wakes the submitter when it
//! is done, a thread hand-over each way on every commit. Measured on the 3-node cluster
//! bench with one proposal in flight (BENCHMARKS.md, "One proposal in flight"), that
//! cost 0.1 to 0.4 ms of a 0.8 to 1.2 ms commit, and the io-wq threads took 11% of the
//! CPU at 50 in flight.
//!
//! Owns: issuing writes and data syncs, retrying short writes, and calling the
//! [`FileSystem`] fault hooks at submission and completion so injected faults reach both
//! backends alike. Never: decides what or where to write, or hides an error (every
//! failure is returned to the writer, which then refuses further writes).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::fs::{FileSystem, SyncFault, WriteFault};

/// Which backend a WAL runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// io_uring writes, fdatasync.
    IoUring,
    /// pwrite + fdatasync.
    Pwrite,
}

/// Writes buffers at an offset, and makes a file's written data durable.
pub(crate) trait IoBackend: Send {
    /// The backend's kind.
    fn kind(&self) -> BackendKind;
    /// Writes all of `buf` at `offset` of `file` (not yet durable).
    fn write(
        &mut self,
        fs: &dyn FileSystem,
        path: &Path,
        file: &File,
        offset: u64,
        buf: &[u8],
    ) -> io::Result<()>;
    /// Makes every write of `file` completed before this call durable (a data sync).
    fn sync(&mut self, fs: &dyn FileSystem, path: &Path, file: &File) -> io::Result<()>;
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Writes all of `buf` at `offset` with pwrite, through the fault hooks. Each iteration
/// writes at least one byte or returns an error, so the loop ends.
pub(crate) fn pwrite_all(
    fs: &dyn FileSystem,
    path: &Path,
    file: &File,
    mut offset: u64,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        let fault = fs.before_write(path, file, offset, buf.len());
        let res = match fault {
            WriteFault::None => file.write_at(buf, offset),
            WriteFault::Short(n) => file.write_at(&buf[..n.clamp(1, buf.len())], offset),
            WriteFault::Torn(n) => file.write_at(&buf[..n.min(buf.len())], offset).and_then(|_| Err(eio())),
            WriteFault::Eio => Err(eio()),
        };
        let res = match res {
            Ok(0) => Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote 0 bytes")),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other,
        };
        fs.after_write(path, &res);
        let n = res?;
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// fdatasync through the fault hooks.
pub(crate) fn datasync(fs: &dyn FileSystem, path: &Path, file: &File) -> io::Result<()> {
    let res = match fs.before_sync(path) {
        SyncFault::None => file.sync_data(),
        SyncFault::Eio => Err(eio()),
        SyncFault::Canceled => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
    };
    fs.after_sync(path, &res);
    res
}

/// The portable backend: pwrite, then fdatasync.
#[derive(Debug, Default)]
pub(crate) struct PwriteBackend;

impl IoBackend for PwriteBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Pwrite
    }

    fn write(
        &mut self,
        fs: &dyn FileSystem,
        path: &Path,
        file: &File,
        offset: u64,
        buf: &[u8],
    ) -> io::Result<()> {
        pwrite_all(fs, path, file, offset, buf)
    }

    fn sync(&mut self, fs: &dyn FileSystem, path: &Path, file: &File) -> io::Result<()> {
        // Crash tests: batches are written but not yet durable.
        fail::fail_point!("wal::after_write_before_fsync");
        datasync(fs, path, file)
    }
}

#[cfg(target_os = "linux")]
pub(crate) use uring::UringBackend;

#[cfg(target_os = "linux")]
mod uring {
    use super::*;
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::AsRawFd;

    const WRITE_TAG: u64 = 1;
    /// Bound on retries of an interrupted or short submission round.
    const MAX_ROUNDS: usize = 1 << 20;

    /// io_uring backend: writes, each waited for; syncs with fdatasync(2).
    pub(crate) struct UringBackend {
        ring: IoUring,
    }

    impl UringBackend {
        /// Sets up a ring and proves it works with a no-op; the error says why not.
        pub(crate) fn new() -> io::Result<UringBackend> {
            let mut ring = IoUring::new(8)?;
            let nop = opcode::Nop::new().build().user_data(0);
            // SAFETY: a NOP references no memory.
            unsafe { ring.submission().push(&nop) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            ring.submit_and_wait(1)?;
            let cqe = ring
                .completion()
                .next()
                .ok_or_else(|| io::Error::other("io_uring: no completion for NOP"))?;
            if cqe.result() < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.result()));
            }
            Ok(UringBackend { ring })
        }

        /// Submits the prepared entries and waits until `n` completions arrived; returns
        /// the write's result.
        fn run(&mut self, n: usize) -> io::Result<Option<i32>> {
            let mut got = 0;
            let mut write = None;
            let mut rounds = 0;
            while got < n {
                rounds += 1;
                if rounds > MAX_ROUNDS {
                    return Err(io::Error::other("io_uring: completions never arrived"));
                }
                match self.ring.submit_and_wait(n - got) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                for cqe in self.ring.completion() {
                    got += 1;
                    if cqe.user_data() == WRITE_TAG {
                        write = Some(cqe.result());
                    }
                }
            }
            Ok(write)
        }
    }

    impl IoBackend for UringBackend {
        fn kind(&self) -> BackendKind {
            BackendKind::IoUring
        }

        fn write(
            &mut self,
            fs: &dyn FileSystem,
            path: &Path,
            file: &File,
            mut offset: u64,
            mut buf: &[u8],
        ) -> io::Result<()> {
            let fd = types::Fd(file.as_raw_fd());
            for _ in 0..MAX_ROUNDS {
                if buf.is_empty() {
                    return Ok(());
                }
                // Decide this submission's write length and whether it fails by fault.
                let (len, torn) = match fs.before_write(path, file, offset, buf.len()) {
                    WriteFault::None => (buf.len(), false),
                    WriteFault::Short(n) => (n.clamp(1, buf.len()), false),
                    WriteFault::Torn(n) => (n.min(buf.len()), true),
                    WriteFault::Eio => {
                        let res = Err(eio());
                        fs.after_write(path, &res);
                        return res.map(|_: usize| ());
                    }
                };
                let mut n = 0;
                if len > 0 {
                    let w = opcode::Write::new(fd, buf.as_ptr(), len as u32)
                        .offset(offset)
                        .build()
                        .user_data(WRITE_TAG);
                    // SAFETY: `buf` outlives the submission: `run` waits for its completion
                    // before this function returns or touches `buf` again.
                    unsafe { self.ring.submission().push(&w) }
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    n += 1;
                }
                let wres = self.run(n)?;
                let written = match wres {
                    Some(r) if r < 0 => {
                        let res = Err(io::Error::from_raw_os_error(-r));
                        fs.after_write(path, &res);
                        return res.map(|_: usize| ());
                    }
                    Some(0) if len > 0 => {
                        let res = Err(io::Error::new(io::ErrorKind::WriteZero, "wrote 0 bytes"));
                        fs.after_write(path, &res);
                        return res.map(|_: usize| ());
                    }
                    Some(r) => r as usize,
                    None => 0,
                };
                if torn {
                    let res = Err(eio());
                    fs.after_write(path, &res);
                    return res.map(|_: usize| ());
                }
                fs.after_write(path, &Ok(written));
                // A short write (real or injected) goes on with the rest.
                buf = buf.get(written..).unwrap_or(&[]);
                offset += written as u64;
            }
            Err(io::Error::other("io_uring: write made no progress"))
        }

        fn sync(&mut self, fs: &dyn FileSystem, path: &Path, file: &File) -> io::Result<()> {
            // fdatasync(2) here, not an io_uring fsync: that one always goes through an
            // io-wq thread (see the module comment).
            PwriteBackend.sync(fs, path, file)
        }
    }
}
