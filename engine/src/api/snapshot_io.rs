//! The vocabulary of snapshots taken on request and moved between engines:
//! [`Engine::request_snapshot`], [`Engine::export_snapshot`] and
//! [`Engine::import_snapshot`] (their errors [`SnapshotError`], [`ExportError`],
//! [`ImportError`], the export's description [`ExportedSnapshot`] and the import's
//! [`ImportOptions`]).
//!
//! Owns these types only. Never takes, writes or reads a snapshot: the runtime does
//! (`runtime/snap_request.rs`, `runtime/export_file.rs`, `runtime/import.rs`).
//!
//! [`Engine::request_snapshot`]: super::Engine::request_snapshot
//! [`Engine::export_snapshot`]: super::Engine::export_snapshot
//! [`Engine::import_snapshot`]: super::Engine::import_snapshot

use std::path::PathBuf;

use thiserror::Error;

use super::error::{BusyReason, CreateGroupError, ErrorClass, Unavailable};
use super::state_machine::StateMachine;
use crate::raft::conf::ConfState;
use crate::raft::types::NodeId;

/// Why [`Engine::request_snapshot`](super::Engine::request_snapshot) failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The state machine's snapshot, or writing its file, failed (the reason as text).
    #[error("snapshot failed: {0}")]
    Failed(String),
    /// This node hosts no replica of the group (or it was destroyed meanwhile).
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

impl SnapshotError {
    /// How to treat this error: `Retry` (failed, busy), `Redirect` (not hosted here),
    /// `Fatal` (storage failed, shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            SnapshotError::Failed(_) | SnapshotError::Busy(_) => ErrorClass::Retry,
            SnapshotError::GroupNotFound(_) => ErrorClass::Redirect,
            SnapshotError::StorageFailed | SnapshotError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match *self {
            SnapshotError::GroupNotFound(g) => Unavailable::GroupNotFound(g),
            SnapshotError::Busy(r) => Unavailable::Busy(r),
            SnapshotError::StorageFailed => Unavailable::StorageFailed,
            SnapshotError::Shutdown => Unavailable::Shutdown,
            SnapshotError::Failed(_) => return None,
        })
    }
}

impl From<Unavailable> for SnapshotError {
    fn from(u: Unavailable) -> Self {
        match u {
            Unavailable::GroupNotFound(g) => SnapshotError::GroupNotFound(g),
            Unavailable::Busy(r) => SnapshotError::Busy(r),
            Unavailable::StorageFailed => SnapshotError::StorageFailed,
            // Any replica snapshots; `NotLeader` is never answered here.
            Unavailable::NotLeader { .. } | Unavailable::Shutdown => SnapshotError::Shutdown,
        }
    }
}

/// What [`Engine::export_snapshot`](super::Engine::export_snapshot) wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedSnapshot {
    /// The group.
    pub group: u64,
    /// The log index the snapshot reflects (every entry up to it applied).
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// The group's configuration at `index`.
    pub conf: ConfState,
    /// Bytes of state-machine data in the file.
    pub bytes: u64,
    /// The file's CRC32C (Castagnoli), stored as its last 4 bytes.
    pub checksum: u32,
}

/// Why [`Engine::export_snapshot`](super::Engine::export_snapshot) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Taking the snapshot failed.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// Reading the snapshot or writing the export file failed.
    #[error("export to {path}: {source}")]
    Io {
        /// The file written (or read).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ExportError {
    /// How to treat this error: the snapshot's class, or `Retry` for I/O (a full disk, a
    /// directory missing: fix it and retry).
    pub fn class(&self) -> ErrorClass {
        match self {
            ExportError::Snapshot(e) => e.class(),
            ExportError::Io { .. } => ErrorClass::Retry,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            ExportError::Snapshot(e) => e.unavailable(),
            ExportError::Io { .. } => None,
        }
    }
}

/// How [`Engine::import_snapshot`](super::Engine::import_snapshot) creates the replica.
pub struct ImportOptions {
    /// The group the file must hold (else [`ImportError::WrongGroup`]).
    pub group: u64,
    /// `None`: keep the configuration in the file; this node must be one of its
    /// members (restoring every replica of the group, each node from the same file, with
    /// the same node ids). Not for replacing one lost replica of a group whose other
    /// replicas run on: under its old replica id it may have acknowledged entries past
    /// the file's index, which Raft counted; add a new replica with
    /// `Engine::change_membership` instead.
    /// `Some(nodes)`: seed a new cluster whose founding voters are `nodes`, in the same
    /// order on every node (possibly other node ids than the source's). Their replica
    /// ids are `max + 1, max + 2, ...` in that order, where `max` is the highest replica
    /// id the file's configuration ever admitted: a replica id is never reused in a
    /// group, even across the restore.
    pub members: Option<Vec<NodeId>>,
    /// The state machine to restore into; `None`: one from the engine's factory.
    pub state_machine: Option<Box<dyn StateMachine>>,
}

impl ImportOptions {
    /// Import `group` with the file's configuration and a state machine from the
    /// factory.
    pub fn new(group: u64) -> ImportOptions {
        ImportOptions { group, members: None, state_machine: None }
    }

    /// Seed a new cluster with these founding voters (see [`ImportOptions::members`]).
    pub fn with_members(mut self, members: Vec<NodeId>) -> ImportOptions {
        self.members = Some(members);
        self
    }

    /// Restore into this state machine instead of one from the factory.
    pub fn with_state_machine(mut self, sm: Box<dyn StateMachine>) -> ImportOptions {
        self.state_machine = Some(sm);
        self
    }
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("group", &self.group)
            .field("members", &self.members)
            .field("state_machine", &self.state_machine.is_some())
            .finish()
    }
}

/// Why [`Engine::import_snapshot`](super::Engine::import_snapshot) refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The file is not an intact export: bad magic, a truncated or overlong part, or a
    /// checksum mismatch. Nothing was created.
    #[error("{path}: corrupt at byte {offset}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the problem was found (the checksum's offset for a mismatch).
        offset: u64,
        /// What is wrong.
        why: String,
    },
    /// The file's format version is not one this engine reads.
    #[error("{path}: format version {version} is not supported")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// The file holds another group than the one asked for.
    #[error("the file holds group {found}, not {expected}")]
    WrongGroup {
        /// [`ImportOptions::group`].
        expected: u64,
        /// The group in the file.
        found: u64,
    },
    /// The group already has a replica here (or one is being created).
    #[error("group {0} already exists here")]
    GroupExists(u64),
    /// The group was removed from this node; its tombstone forbids recreating it here.
    #[error("group {0} was removed from this node")]
    Tombstoned(u64),
    /// This node is not a member of the configuration the replica would have.
    #[error("this node is not a member of the configuration")]
    NotAMember,
    /// [`ImportOptions::members`] is empty or lists a node twice.
    #[error("bad member list: {0}")]
    BadMembers(String),
    /// The state machine refused the snapshot's data.
    #[error("restore: {0}")]
    Restore(String),
    /// Reading the file or writing this node's snapshot file failed.
    #[error("import from {path}: {source}")]
    Io {
        /// The file read (or written).
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The worker's mailbox is full.
    #[error("busy")]
    Busy,
    /// The WAL failed; the engine stopped.
    #[error("storage failed; the engine stopped")]
    StorageFailed,
    /// The engine is shut down.
    #[error("engine shut down")]
    Shutdown,
}

impl ImportError {
    /// How to treat this error: `Invalid` (a corrupt, foreign or unsupported file, a group
    /// that exists or was removed here, a bad member list, a state machine refusing the
    /// data), `Retry` (I/O, busy), `Fatal` (storage failed, shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            ImportError::Corrupt { .. }
            | ImportError::UnsupportedVersion { .. }
            | ImportError::WrongGroup { .. }
            | ImportError::GroupExists(_)
            | ImportError::Tombstoned(_)
            | ImportError::NotAMember
            | ImportError::BadMembers(_)
            | ImportError::Restore(_) => ErrorClass::Invalid,
            ImportError::Io { .. } | ImportError::Busy => ErrorClass::Retry,
            ImportError::StorageFailed | ImportError::Shutdown => ErrorClass::Fatal,
        }
    }

    /// The shared answer this error is, if it is one.
    pub fn unavailable(&self) -> Option<Unavailable> {
        Some(match self {
            ImportError::Busy => Unavailable::Busy(BusyReason::Mailbox),
            ImportError::StorageFailed => Unavailable::StorageFailed,
            ImportError::Shutdown => Unavailable::Shutdown,
            _ => return None,
        })
    }
}

impl From<CreateGroupError> for ImportError {
    fn from(e: CreateGroupError) -> Self {
        match e {
            CreateGroupError::Conflict { group, .. } => ImportError::GroupExists(group),
            CreateGroupError::Tombstoned(g) => ImportError::Tombstoned(g),
            CreateGroupError::NotAMember => ImportError::NotAMember,
            CreateGroupError::NoMembers => ImportError::BadMembers("no members".into()),
            CreateGroupError::DuplicateMember(n) => ImportError::BadMembers(format!("node {n} listed twice")),
            CreateGroupError::Busy => ImportError::Busy,
            CreateGroupError::StorageFailed => ImportError::StorageFailed,
            CreateGroupError::Shutdown => ImportError::Shutdown,
        }
    }
}
