//! The WAL's typed errors, one enum per API surface: [`OpenError`] (open and recovery),
//! [`WriteError`] (submitting and persisting batches), [`ReadError`] (reads).
//!
//! Owns: error definitions. Never: logs or recovers from them.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::config::ConfigError;

/// Why the WAL could not be opened.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration broke a rule.
    #[error("invalid wal config: {0}")]
    Config(#[from] ConfigError),
    /// An I/O operation on a file or directory failed.
    #[error("wal i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record or header before the log's tail failed verification. The log is refused
    /// rather than silently skipping it.
    #[error("wal corrupt in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the bad header or batch in the file.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// A header was written by a newer format version than this code understands.
    #[error("wal file {file} at offset {offset} has format version {version}, newer than supported")]
    NewerFormat {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the header.
        offset: u64,
        /// The version found.
        version: u32,
    },
    /// A segment header of an older format version, which this code does not read (the
    /// crate had no release with it).
    #[error("wal file {file} has format version {version}, older than supported")]
    UnsupportedFormat {
        /// The segment file.
        file: PathBuf,
        /// The version found.
        version: u32,
    },
    /// Another process, or another open [`crate::Wal`] in this process, holds the log's
    /// directory (its `LOCK` file).
    #[error("wal directory {dir} is in use by another process or handle{}", holder.map(|p| format!(" (process {p})")).unwrap_or_default())]
    Locked {
        /// The log's directory.
        dir: PathBuf,
        /// The process id the holder wrote in the lock file, if it could be read.
        holder: Option<u32>,
    },
    /// A segment's header names another log than the other segments: it was copied from
    /// another WAL. Nothing was changed.
    #[error("wal file {file} belongs to another log (id {wal_id:016x}, this log is {expected:016x})")]
    ForeignSegment {
        /// The segment file.
        file: PathBuf,
        /// The log id in its header.
        wal_id: u64,
        /// This log's id.
        expected: u64,
    },
    /// io_uring was required by the configuration but the kernel refused it.
    #[error("io_uring unavailable: {0}")]
    IoUringUnavailable(io::Error),
    /// A background thread could not be started.
    #[error("cannot start wal thread: {0}")]
    Thread(io::Error),
}

/// Why a write batch was not (or may not have been) made durable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// An earlier write or fsync failed; the WAL refuses every further write (after a
    /// failed fsync the page cache may have dropped the data: retrying would lie).
    #[error("wal refuses writes after an earlier i/o failure")]
    Poisoned,
    /// This batch's write or fsync failed; it may or may not be on disk.
    #[error("wal write failed ({kind:?}): {message}")]
    Io {
        /// The error kind.
        kind: io::ErrorKind,
        /// The error message.
        message: String,
    },
    /// The encoded batch does not fit in one segment.
    #[error("batch of {len} bytes exceeds the maximum of {max}")]
    BatchTooLarge {
        /// Encoded bytes of the batch.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// Entries appended at `index` would leave a hole after, or rewrite before, the
    /// group's log `[first, last]`.
    #[error("group {group}: append at {index} outside {first}..={next}", next = last + 1)]
    NonContiguous {
        /// The group.
        group: u64,
        /// First index of the append.
        index: u64,
        /// The group's first index.
        first: u64,
        /// The group's last index.
        last: u64,
    },
    /// The submission queue is full (only from `try_submit`).
    #[error("wal submission queue full")]
    Busy,
    /// The WAL is shut down.
    #[error("wal is shut down")]
    Shutdown,
}

impl WriteError {
    pub(crate) fn io(e: &io::Error) -> WriteError {
        WriteError::Io { kind: e.kind(), message: e.to_string() }
    }
}

/// Why a read failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No such group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The index is below the group's compaction point.
    #[error("group {group}: index {index} compacted (first index {first})")]
    Compacted {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
        /// The group's first index.
        first: u64,
    },
    /// The index is past the group's last entry.
    #[error("group {group}: index {index} past the last index {last}")]
    Unavailable {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
        /// The group's last index.
        last: u64,
    },
    /// The entry's bytes could not be found where the index says they are (a bug or a
    /// file changed behind the WAL's back).
    #[error("group {group}: entry {index} is missing from its segment")]
    Lost {
        /// The group.
        group: u64,
        /// The index asked for.
        index: u64,
    },
}
