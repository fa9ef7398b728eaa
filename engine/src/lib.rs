//! Flotilla's engine.
//!
//! - [`raft`]: the Raft state machine of one group. Sans-IO and deterministic: no clock,
//!   socket, file or thread; time is ticks, randomness is a seeded RNG.
//! - [`runtime`]: thread-per-core workers that own groups, the ready loop over the shared
//!   WAL, apply and waiters.
//! - [`api`]: the embedding API ([`api::Engine`], [`api::StateMachine`], configuration).
//! - [`transport`]: the engine's network trait, wire codec and adapters.
//! - [`session`]: client sessions (exactly-once proposals): the pure session table.
//!
//! # Failpoints (cargo feature `failpoints`, test-only)
//! Named points where a crash test (`engine/tests/engine_crash.rs`) kills the process,
//! configured with `fail::cfg_callback` or the `FAILPOINTS` variable; inactive unless
//! configured, compiled out without the feature:
//! - `wal::after_write_before_fsync`: a WAL batch is written (pwrite backend), not synced;
//! - `wal::rewrite_mid`: WAL compaction copied a sparse segment's live records to the head
//!   of the log but has not retired the segment;
//! - `engine::after_fsync_before_send`: a worker's batch is durable; nothing that waited
//!   for it (acknowledgements, persisted messages, applies) has happened;
//! - `engine::vote_durable_before_reply`: a granted vote is durable, its reply not sent;
//! - `engine::snapshot_file_before_reset`: a received snapshot's file is durable, the WAL
//!   record that resets the group to it is not written.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod raft;
pub mod runtime;
pub mod session;
pub mod transport;
