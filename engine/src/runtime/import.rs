//! `Engine::import_snapshot`: a new replica of a group seeded from an export file (a
//! whole group restored from a backup, or a new cluster seeded from another's data).
//!
//! On the caller's thread: the file is validated whole first (magic, version, lengths,
//! CRC32C) without writing anything; the replica's configuration and id are decided (the
//! file's, or a founding member list with fresh replica ids); the data is copied into
//! this node's snapshot file (crash-atomic, and checksummed again as it is copied) and the
//! state machine restored from that file. Then the owning worker creates the replica in
//! one WAL batch (its metadata naming the snapshot, the compaction mark, the hard state
//! at the snapshot's term and index) and answers once that batch is durable: a crash after
//! `Ok` recovers the replica from the WAL and the snapshot file.
//!
//! Owns that sequence and the replica-id rule. Never reads the export format itself
//! (`export_file`) and never writes the WAL outside the worker's create path
//! (`lifecycle::flush_creates`).

use std::fs;
use std::io;
use std::path::Path;

use super::command::Cmd;
use super::export_file::{self, ReadError};
use super::group::PendingCreate;
use super::pending::Completer;
use super::worker::Worker;
use super::{snapfile, Runtime};
use crate::api::{
    CreateGroupError, ExportedSnapshot, ImportError, ImportOptions, SnapshotSource, StateMachine, Unavailable,
};
use crate::raft::conf::ConfState;
use crate::raft::message::SnapshotMeta;
use crate::raft::types::{NodeId, Replica, ReplicaId};
use crate::session::codec as session_codec;
use crate::session::SessionTable;

/// Bytes copied per read.
const CHUNK: usize = 256 << 10;

impl Runtime {
    /// Creates this node's replica of `opts.group` from the export file at `path`.
    pub(crate) fn import_snapshot(
        &self,
        path: &Path,
        opts: ImportOptions,
    ) -> Result<ExportedSnapshot, ImportError> {
        self.live().map_err(unavailable)?;
        let read_err = |e: ReadError| match e {
            ReadError::Corrupt { offset, why } => {
                ImportError::Corrupt { path: path.to_path_buf(), offset, why }
            }
            ReadError::Version(version) => {
                ImportError::UnsupportedVersion { path: path.to_path_buf(), version }
            }
            ReadError::Io(source) => ImportError::Io { path: path.to_path_buf(), source },
        };
        // Pass 1: the whole file is intact before anything is written.
        let mut r = export_file::Reader::open(path).map_err(read_err)?;
        let header = r.header().clone();
        if header.group != opts.group {
            return Err(ImportError::WrongGroup { expected: opts.group, found: header.group });
        }
        if header.meta.index == 0 {
            return Err(read_err(ReadError::Corrupt { offset: 0, why: "snapshot at index 0".into() }));
        }
        io::copy(r.data(), &mut io::sink())
            .map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
        let checksum = r.finish().map_err(read_err)?;
        let (conf, replica) = replica_conf(&header.meta.conf, opts.members.as_deref(), self.node_id())?;
        let group = opts.group;
        // A replica here refuses the import, except one its leader's first message created
        // under the same replica id that holds no configuration yet (a peer imported first
        // and leads already): the worker replaces it if it promised nothing, else it
        // stands and catches up from that leader. Checked before this node's snapshot file
        // of the group is written; the worker checks again.
        let stands = |s: &crate::api::GroupStatus| s.replica != replica || s.members.contains(replica);
        if self.group_status(group).is_some_and(|s| stands(&s)) {
            return Err(ImportError::GroupExists(group));
        }
        let meta = SnapshotMeta { index: header.meta.index, term: header.meta.term, conf: conf.clone() };
        // Pass 2: copied into this node's snapshot file, checksummed again on the way.
        let dir = &self.shared.snap_dir;
        let snap_path = snapfile::path(dir, group, replica, meta.index);
        let r = export_file::Reader::open(path).map_err(read_err)?;
        let mut src = ReadSource { r, at: 0 };
        let copied = snapfile::save_from(dir, group, replica, &meta, &mut src, CHUNK);
        let copied = copied.map_err(|source| ImportError::Io { path: snap_path.clone(), source });
        let checked = copied.and_then(|_| src.r.finish().map_err(read_err));
        let discard = |e: ImportError| {
            let _ = fs::remove_file(&snap_path);
            e
        };
        checked.map_err(discard)?;
        let mut sm = opts.state_machine.unwrap_or_else(|| (self.shared.factory)(group));
        let sessions = restore(dir, group, replica, &meta, &mut *sm).map_err(discard)?;
        match self.import_group(group, replica, meta.clone(), sm, sessions).wait() {
            Ok(()) => {}
            // Another replica of the group (perhaps this very import, racing) holds it.
            Err(e @ CreateGroupError::Conflict { .. }) => return Err(e.into()),
            Err(e) => return Err(discard(e.into())),
        }
        tracing::info!(group, replica, index = meta.index, path = %path.display(), "snapshot imported");
        Ok(ExportedSnapshot {
            group,
            index: meta.index,
            term: meta.term,
            conf,
            bytes: header.data_len,
            checksum,
        })
    }

    fn import_group(
        &self,
        group: u64,
        replica: ReplicaId,
        meta: SnapshotMeta,
        sm: Box<dyn StateMachine>,
        sessions: SessionTable,
    ) -> super::Pending<Result<(), CreateGroupError>> {
        self.request(group, |done| Cmd::Import {
            group,
            replica,
            meta: Box::new(meta),
            sm,
            sessions: Box::new(sessions),
            done,
        })
        .unwrap_or_else(|e| {
            super::Pending::ready(Err(match e {
                Unavailable::Busy(_) => CreateGroupError::Busy,
                Unavailable::StorageFailed => CreateGroupError::StorageFailed,
                _ => CreateGroupError::Shutdown,
            }))
        })
    }
}

fn unavailable(u: Unavailable) -> ImportError {
    match u {
        Unavailable::Busy(_) => ImportError::Busy,
        Unavailable::StorageFailed => ImportError::StorageFailed,
        _ => ImportError::Shutdown,
    }
}

/// The configuration and this node's replica id for an import on node `me` of a snapshot
/// whose configuration is `file`. With `members`: a new founding configuration whose
/// voters are `members` in order, with replica ids above every id `file` ever admitted
/// (`max_replica_id`), so no replica id is ever reused in the group, whatever cluster
/// the file came from. Without: the file's configuration, in which `me` must be a member.
pub(super) fn replica_conf(
    file: &ConfState,
    members: Option<&[NodeId]>,
    me: NodeId,
) -> Result<(ConfState, ReplicaId), ImportError> {
    let Some(members) = members else {
        let mine = file.members().into_iter().find(|r| r.node == me).ok_or(ImportError::NotAMember)?;
        return Ok((file.clone(), mine.id));
    };
    if members.is_empty() {
        return Err(ImportError::BadMembers("no members".into()));
    }
    for (i, n) in members.iter().enumerate() {
        if members[..i].contains(n) {
            return Err(ImportError::BadMembers(format!("node {n} listed twice")));
        }
    }
    let base = file.max_replica_id;
    let pos = members.iter().position(|&n| n == me).ok_or(ImportError::NotAMember)?;
    let conf = ConfState::with_voters(
        members.iter().enumerate().map(|(i, &n)| Replica::new(n, base + 1 + i as u64)),
    );
    Ok((conf, base + 1 + pos as u64))
}

/// Restores `sm` from this node's snapshot file of `group` at `meta`; returns the client
/// sessions of the snapshot's session section (which precedes the state machine's bytes).
fn restore(
    dir: &Path,
    group: u64,
    replica: ReplicaId,
    meta: &SnapshotMeta,
    sm: &mut dyn StateMachine,
) -> Result<SessionTable, ImportError> {
    let path = snapfile::path(dir, group, replica, meta.index);
    let (_, mut data) =
        snapfile::open(dir, group, replica, meta.index).map_err(|source| ImportError::Io { path, source })?;
    let sessions = session_codec::read_section(&mut data)
        .map_err(|e| ImportError::Restore(format!("session section: {e}")))?;
    sm.restore(meta.index, meta.term, &mut data).map_err(|e| ImportError::Restore(e.to_string()))?;
    Ok(sessions)
}

/// The export's data as a [`SnapshotSource`] for the snapshot-file writer (read in
/// order: an offset other than the next one is an error, which the writer retries and
/// then gives up).
struct ReadSource {
    r: export_file::Reader,
    at: u64,
}

impl SnapshotSource for ReadSource {
    fn reflects(&self) -> (u64, u64) {
        let m = &self.r.header().meta;
        (m.index, m.term)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset != self.at {
            return Err(io::Error::other("export data is read in order"));
        }
        let n = self.r.data().read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl Worker {
    /// Creates the imported replica (`Cmd::Import`): refused if the group has a replica
    /// here or one is being created; otherwise founded like `create_group`, from the
    /// snapshot instead of a founding entry (`flush_creates`), answered once durable. A
    /// replica created from a leader's message (unconfirmed) is replaced if it promised
    /// nothing; one of the same id that did stands (`Ok`: it catches up from that leader,
    /// which holds the same snapshot), as for a founding `create_group`.
    pub(super) fn import_group(
        &mut self,
        group: u64,
        replica: ReplicaId,
        meta: SnapshotMeta,
        sm: Box<dyn StateMachine>,
        sessions: SessionTable,
        done: Completer<Result<(), CreateGroupError>>,
    ) {
        let existing = self.creating_replica(group).or_else(|| {
            // A claim from a message that promised nothing yields, as to a founder.
            self.groups.get(&group).filter(|_| !self.admission.is_unconfirmed(group)).map(|g| g.raft.id())
        });
        if let Some(existing) = existing {
            return done.complete(Err(CreateGroupError::Conflict { group, existing }));
        }
        let conf = meta.conf.clone();
        self.creates.push(PendingCreate {
            group,
            replica,
            conf,
            sm,
            first_leader: None,
            snapshot: Some(meta),
            sessions: Some(sessions),
            done,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_cluster_replica_ids_never_reuse_the_files() {
        let mut file = ConfState::with_voters((1..=3).map(|i| Replica::new(i, i)));
        file.max_replica_id = 7;
        let (conf, me) = replica_conf(&file, Some(&[20, 10, 30]), 10).unwrap();
        assert_eq!(me, 9);
        assert_eq!(conf.voters, vec![Replica::new(20, 8), Replica::new(10, 9), Replica::new(30, 10)]);
        assert_eq!(conf.max_replica_id, 10);
        assert!(conf.learners.is_empty() && conf.removed.is_empty());
        assert!(matches!(replica_conf(&file, Some(&[20, 30]), 10), Err(ImportError::NotAMember)));
        assert!(matches!(replica_conf(&file, Some(&[10, 10]), 10), Err(ImportError::BadMembers(_))));
        assert!(matches!(replica_conf(&file, Some(&[]), 10), Err(ImportError::BadMembers(_))));
        // The file's configuration: this node's replica in it.
        let (conf, me) = replica_conf(&file, None, 2).unwrap();
        assert_eq!((conf, me), (file.clone(), 2));
        assert!(matches!(replica_conf(&file, None, 4), Err(ImportError::NotAMember)));
    }
}
