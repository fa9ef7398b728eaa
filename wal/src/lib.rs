//! Flotilla's write-ahead log: ONE log per node, shared by every Raft group and every
//! worker thread.
//!
//! - Batches ([`WriteBatch`]) from all submitters are merged into one write and one data
//!   sync (group commit); each submitter learns through its [`Ticket`] when its batch is
//!   durable. A blocking [`Wal::write`] writes and syncs on the caller's thread when the
//!   writer is free; a write may go out while an earlier one's sync is in flight, and is
//!   acknowledged only after a sync of its own. The thread that syncs starts the device's
//!   writeback first and applies the batches to the in-memory index while the device
//!   writes them, so a batch becomes readable when its sync begins, never before.
//! - The log is a sequence of fixed-size segment files, preallocated off the write path
//!   (by writing zeros once, or by recycling freed segments) and memory-mapped for reads.
//!   Writes go through pwrite (the default) or io_uring ([`BackendChoice`]), chosen at
//!   open and logged; both sync with fdatasync (an io_uring fsync would go through a
//!   kernel worker thread).
//! - Records carry CRC32C checksums seeded with their segment's sequence number and salt;
//!   a batch header carries its own, verified before its length is believed, so opening
//!   is linear in the log's size whatever the payloads hold
//!   ([`Wal::recovery_checked_bytes`]). Recovery verifies all of them, truncates a torn
//!   tail and refuses to open on corruption before it ([`OpenError::Corrupt`]); see
//!   `recovery` for the rule, [`codec`] for the format, [`check_segment`] for the reader
//!   alone (fuzzed by `wal/fuzz`).
//! - The log protects itself: its directory is locked by one handle at a time
//!   ([`DirLock`], [`OpenError::Locked`]); its directories are created 0700 and its files
//!   0600; every segment names the log it belongs to (a random id chosen at creation),
//!   and a segment copied from another log is refused ([`OpenError::ForeignSegment`]).
//! - The WAL stores bytes keyed by (group id, log index), a [`HardState`] (three opaque
//!   `u64`s: the engine's term, vote, commit) and an opaque metadata blob (the engine's
//!   membership) per group, and compaction marks. It knows no Raft type.
//! - Compaction: [`WriteBatch::compact_to`]; a segment is freed once no group has a live
//!   record in it; sparse old segments are rewritten; [`Wal::pinning_groups`] names the
//!   groups holding the oldest segments.
//! - Every file operation goes through [`FileSystem`], so tests inject torn and short
//!   writes, failed syncs, lost directory entries and bit flips ([`fault::FaultFs`]).
//!
//! # Tests
//! The suite runs once per backend: `FLOTILLA_WAL_BACKEND=pwrite cargo test -p
//! flotilla-wal` and `FLOTILLA_WAL_BACKEND=io_uring cargo test -p flotilla-wal` (the
//! latter asserts io_uring really is in use). `FLOTILLA_WAL_CRASH_ITERS` (default 1000)
//! sets the iterations of the randomized crash test, `PROPTEST_CASES` (default 256) the
//! cases of the model-based test, `FLOTILLA_WAL_READER_CASES` (default 100,000) the cases
//! of the recovery reader's property test (`tests/reader_fuzz.rs`; `wal/fuzz` is its
//! libFuzzer target, `cargo +nightly fuzz run recovery_reader` in `wal/`).
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
mod latency;
mod lock;
mod prealloc;
mod reader;
mod recovery;
mod segment;
mod shared;
mod state;
mod sync;
mod types;
#[cfg(feature = "serde")]
pub mod units;
mod wal;
mod writer;

pub use backend::BackendKind;
pub use batch::WriteBatch;
pub use config::{BackendChoice, CheckedConfig, ConfigError, WalConfig, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
pub use error::{OpenError, ReadError, WriteError};
pub use fs::{create_private_dir, FileSystem, StdFs, SyncFault, WriteFault, PRIVATE_DIR_MODE};
pub use latency::{LatencyHistogram, LatencySnapshot, LATENCY_BUCKETS};
pub use lock::{DirLock, LockError, LOCK_FILE, PRIVATE_FILE_MODE};
pub use reader::{check_segment, SegmentCheck, SegmentCheckError};
pub use sync::OnDurable;
pub use types::{Entry, HardState, Position};
pub use wal::{SegmentPins, Ticket, Wal, WalStats};
pub use writer::MaintainReport;
