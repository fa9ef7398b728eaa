//! The waiting side of snapshots taken on request: [`SnapshotRequests`] (one worker's
//! requests by group), each [`Request`] with its completer, and the [`TakenSnapshot`] it is
//! answered with. Plain data shared by the command vocabulary and the worker.
//!
//! Owns these types only. Never answers a request: `snap_request.rs` decides when.

use std::collections::HashMap;
use std::fs::File;

use super::pending::Completer;
use crate::api::SnapshotError;
use crate::raft::message::SnapshotMeta;
use crate::runtime::Abandoned;

/// A durable snapshot file of a group, opened for reading.
pub(crate) struct TakenSnapshot {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// The file, opened when the request was answered.
    pub file: File,
}

impl Abandoned for Result<TakenSnapshot, SnapshotError> {
    fn abandoned() -> Self {
        Err(SnapshotError::Shutdown)
    }
}

/// The completer of one request.
pub(crate) type SnapshotDone = Completer<Result<TakenSnapshot, SnapshotError>>;

/// One waiting request.
pub(crate) struct Request {
    /// The replica instance it was made to (`Group::epoch`).
    pub(crate) epoch: u64,
    /// The applied index at its arrival: the answer's index is at least this.
    pub(crate) at_least: u64,
    /// Snapshots taken for it so far.
    pub(crate) attempts: u32,
    pub(crate) done: SnapshotDone,
}

/// The requests of one worker waiting for a snapshot, by group.
#[derive(Default)]
pub(crate) struct SnapshotRequests {
    pub(crate) by_group: HashMap<u64, Vec<Request>>,
}
