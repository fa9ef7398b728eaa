//! Flotilla's write-ahead log: ONE log per node, shared by every Raft group and every
//! worker thread.
//!
//! - Batches ([`WriteBatch`]) from all submitters are merged into one write and one data
//!   sync (group commit); each submitter learns through its [`Ticket`] when its batch is
//!   durable.
//! - The log is a sequence of fixed-size segment files, preallocated off the write path
//!   (by writing zeros once, or by recycling freed segments) and memory-mapped for reads.
//!   Writes go through io_uring (write and fsync linked) or pwrite + fdatasync
//!   ([`BackendChoice`]), chosen at open and logged.
//! - Records carry CRC32C checksums seeded with their segment's sequence number and salt;
//!   recovery verifies all of them, truncates a torn tail and refuses to open on
//!   corruption before it ([`OpenError::Corrupt`]); see `recovery` for the rule.
//! - The WAL stores bytes keyed by (group id, log index), a [`HardState`] (three opaque
//!   `u64`s: the engine's term, vote, commit) and an opaque metadata blob (the engine's
//!   membership) per group, and compaction marks. It knows no Raft type.
//! - Compaction: [`WriteBatch::compact_to`]; a segment is freed once no group has a live
//!   record in it; sparse old segments are rewritten; [`Wal::pinning_groups`] names the
//!   groups holding the oldest segments.
//! - Every file operation goes through [`FileSystem`], so tests inject torn and short
//!   writes, failed syncs, lost directory entries and bit flips ([`fault::FaultFs`]).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backend;
mod batch;
mod cache;
pub mod codec;
mod config;
mod error;
pub mod fault;
mod fs;
mod hash;
mod index;
mod prealloc;
mod recovery;
mod segment;
mod shared;
mod state;
mod types;
mod wal;
mod writer;

pub use backend::BackendKind;
pub use batch::WriteBatch;
pub use config::{
    BackendChoice, CheckedConfig, ConfigError, WalConfig, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
pub use error::{OpenError, ReadError, WriteError};
pub use fs::{FileSystem, StdFs, SyncFault, WriteFault};
pub use types::{Entry, HardState, Position};
pub use wal::{SegmentPins, Ticket, Wal, WalStats};
pub use writer::MaintainReport;
