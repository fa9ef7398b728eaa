//! The Raft state machine of one group: sans-IO and deterministic.
//!
//! Inputs: [`Raft::tick`], [`Raft::step`], [`Raft::propose`], [`Raft::propose_conf_change`],
//! [`Raft::transfer_leader`], [`Raft::read_index`], [`Raft::report_snapshot`],
//! [`Raft::compact_to`], and the runtime's notices [`Raft::on_persisted`] and
//! [`Raft::on_applied`]. Output: a [`Ready`] (state to persist, messages, entries to
//! apply, a snapshot to install, reads to serve). No clock, socket, file or thread lives
//! here: time is ticks, randomness is a seeded RNG, storage is read through [`LogStore`].

pub mod conf;
pub(crate) mod conf_pool;
pub mod config;
pub mod driver;
pub mod error;
pub mod event;
pub mod inflights;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
#[allow(clippy::module_inception)]
mod raft;
mod read_queue;
pub mod ready;
pub mod rng;
pub mod status;
pub mod storage;
pub mod types;

pub use conf::{ChangeKind, ConfChange, ConfChangeError, ConfState, SingleChange, Transition, MAX_MEMBERS};
#[cfg(feature = "mutants")]
pub use config::Mutant;
pub use config::{Config, ConfigError, ReadMode, ValidConfig};
pub use driver::{LogWriter, ReadyDriver, ReadyWrite};
pub use error::{CompactError, NewRaftError, ProposeError, ReadIndexError, StepError, TransferError};
pub use event::{Event, MembershipStep};
pub use message::{
    Entry, EntryPayload, HardState, Message, MessageBody, ReadState, Snapshot, SnapshotChunk, SnapshotMeta,
};
pub use progress::ProgressState;
pub use raft::{LocalReadView, Raft};
pub use ready::{ApplyBudget, Ready};
pub use status::{FollowerStatus, Stats, Status};
pub use storage::{InitialState, LogStore, MemStorage, StorageError};
pub use types::{NodeId, Replica, ReplicaId, Role, NO_REPLICA};
