//! The request and answer of [`Engine::read_local`](super::Engine::read_local): the
//! caller's staleness bound ([`Staleness`]) and why a local read was refused
//! ([`ReadLocalError`]).
//!
//! Owns this vocabulary only. Never decides whether a read is served: the owning worker
//! compares the replica's view of its own lag (`Raft::local_read_view`) with the bound.

use std::time::Duration;

use thiserror::Error;

use super::error::{BusyReason, ErrorClass, Unavailable};
use crate::runtime::Abandoned;

/// How stale a local read may be: both bounds that are given must hold. A bound left
/// `None` is not checked; with both `None` any replica that knows its current leader
/// serves (still refusing one that knows none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Staleness {
    /// At most this many entries between the replica's applied index and the highest
    /// commit index it heard from the current leader (on a leader: its own commit index).
    pub entries: Option<u64>,
    /// At most this long since the replica last heard from the current leader (on a
    /// leader: an upper bound of the time since a quorum last answered). Measured in
    /// Raft ticks of `tick_interval` each (a worker that falls behind its ticks counts
    /// less time than passed): a replica cut off from its leader cannot learn that the
    /// commit index moved, so this bound is what refuses it. A leader bounds its quorum
    /// contact only with CheckQuorum (`raft.check_quorum`); without it its time only grows.
    pub time: Option<Duration>,
}

impl Staleness {
    /// Both bounds.
    pub fn new(entries: Option<u64>, time: Option<Duration>) -> Staleness {
        Staleness { entries, time }
    }
}

/// Why [`Engine::read_local`](super::Engine::read_local) refused to serve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReadLocalError {
    /// The replica's applied state is further behind than the bound allows.
    #[error("too stale: applied {applied}, known commit {known_commit}, last heard from the leader {since_leader_ms:?} ms ago")]
    TooStale {
        /// The replica's applied index.
        applied: u64,
        /// The highest commit index it knows of (see [`Staleness::entries`]).
        known_commit: u64,
        /// Milliseconds since it last heard from the current leader (a leader: from a
        /// quorum), counted in ticks.
        since_leader_ms: u64,
    },
    /// The replica knows no leader in its current term (an election is under way, or it
    /// was cut off long enough to start one): its lag cannot be bounded.
    #[error("no leader known: the lag cannot be bounded")]
    NoLeader,
    /// This node hosts no replica of the group.
    #[error("group {0} not found")]
    GroupNotFound(u64),
    /// The worker's mailbox is full.
    #[error("busy: {0:?}")]
    Busy(BusyReason),
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl ReadLocalError {
    /// How to treat this error: `Retry` (too stale, no leader, busy: later, or with a
    /// looser bound, or through `read_index`), `Redirect` (not hosted here), `Fatal`.
    pub fn class(&self) -> ErrorClass {
        match self {
            ReadLocalError::TooStale { .. } | ReadLocalError::NoLeader | ReadLocalError::Busy(_) => {
                ErrorClass::Retry
            }
            ReadLocalError::GroupNotFound(_) => ErrorClass::Redirect,
            ReadLocalError::StorageFailed | ReadLocalError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            ReadLocalError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            ReadLocalError::Busy(r) => Unavailable::Busy(r),
            ReadLocalError::StorageFailed => Unavailable::StorageFailed,
            ReadLocalError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
}

impl From<Unavailable> for ReadLocalError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::GroupNotFound(g) => ReadLocalError::GroupNotFound(g),
            Unavailable::Busy(r) => ReadLocalError::Busy(r),
            Unavailable::StorageFailed => ReadLocalError::StorageFailed,
            // A local read needs no leader; `NotLeader` is never answered here.
            Unavailable::NotLeader { .. } => ReadLocalError::NoLeader,
            Unavailable::Shutdown => ReadLocalError::Shutdown,
        }
    }
}

impl Abandoned for Result<u64, ReadLocalError> {
    fn abandoned() -> Self {
        Err(ReadLocalError::Shutdown)
    }
}
