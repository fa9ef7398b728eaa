//! The embedding API: [`Engine`], the handle of one node. Its configuration
//! ([`EngineConfig`], validated once into a [`ValidEngineConfig`]) is in `config.rs`, the
//! [`StateMachine`] an application plugs in in `state_machine.rs`, the typed answers of
//! every operation in `error.rs` (see [`ErrorClass`]), the requests and handles
//! ([`MembershipChange`], [`Proposal`], ...) in `request.rs`, and the reports ([`Metrics`],
//! [`GroupStatus`]) in `metrics.rs`; all are re-exported here.
//!
//! Owns the public surface. Never runs Raft rules or touches the WAL or the network
//! itself: every operation becomes a command in the mailbox of the worker that owns the
//! group (see [`crate::runtime`]).

mod config;
mod create_policy;
mod error;
mod metrics;
mod read_local;
mod request;
mod snapshot_io;
mod state_machine;

pub use config::*;
pub use create_policy::CreatePolicy;
pub use error::*;
pub use metrics::*;
pub use read_local::*;
pub use request::*;
pub use snapshot_io::*;
pub use state_machine::*;

use std::sync::Arc;

use bytes::Bytes;

use crate::raft::conf::ConfState;
use crate::raft::types::{NodeId, Replica};
use crate::runtime;
use crate::transport::Transport;

/// A node of the multi-raft engine: its workers, its WAL and its transport. Share it by
/// reference across threads. `propose`, `read_index` and `change_membership` return at
/// once with a handle; `create_group` and `transfer_leader` wait for the owning worker's
/// answer (creating a founding replica waits for one WAL write); `status` waits for every
/// worker; `shutdown` waits for the writes in flight.
pub struct Engine {
    rt: runtime::Runtime,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node", &self.rt.node_id()).finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the node: validates `config`, opens (recovering) the WAL in
    /// `data_dir/wal`, recovers every group found there (state machines from `factory`,
    /// replaying the entries after their `applied_index`), and starts the workers and the
    /// network thread over `transport`.
    pub fn open(
        config: EngineConfig,
        transport: Box<dyn Transport>,
        factory: StateMachineFactory,
    ) -> Result<Engine, OpenError> {
        let cfg = config.validate()?;
        if transport.node_id() != cfg.get().node_id {
            return Err(OpenError::NodeMismatch {
                config: cfg.get().node_id,
                transport: transport.node_id(),
            });
        }
        Ok(Engine { rt: runtime::Runtime::start(cfg, transport, factory, None)? })
    }

    /// Like [`Engine::open`], with the WAL's file operations going through `fs` (tests
    /// inject write and sync failures and power loss with [`flotilla_wal::fault::FaultFs`]).
    /// Snapshot files do not go through `fs`.
    pub fn open_with_fs(
        config: EngineConfig,
        transport: Box<dyn Transport>,
        factory: StateMachineFactory,
        fs: Arc<dyn flotilla_wal::FileSystem>,
    ) -> Result<Engine, OpenError> {
        let cfg = config.validate()?;
        if transport.node_id() != cfg.get().node_id {
            return Err(OpenError::NodeMismatch {
                config: cfg.get().node_id,
                transport: transport.node_id(),
            });
        }
        Ok(Engine { rt: runtime::Runtime::start(cfg, transport, factory, Some(fs))? })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.rt.node_id()
    }

    /// Creates this node's replica of a new group whose founding voters are `members`
    /// (given in the same order on every node; replica ids are assigned 1, 2, ... in that
    /// order). The founding configuration is the group's first log entry, so replicas
    /// added later learn it from the log. Every founding node calls this; if the replica
    /// already exists here (recovered, created earlier, or created by its leader's first
    /// message) nothing changes and `Ok` is returned (`state_machine` is then dropped).
    pub fn create_group(
        &self,
        group: u64,
        members: &[NodeId],
        state_machine: Box<dyn StateMachine>,
    ) -> Result<(), CreateGroupError> {
        let (conf, replica) = self.founding(members)?;
        self.rt.create_group(group, replica, conf, state_machine, None).wait()
    }

    /// The founding configuration of a new group (`members` as voters, replica ids 1..)
    /// and this node's replica id in it.
    fn founding(&self, members: &[NodeId]) -> Result<(ConfState, u64), CreateGroupError> {
        if members.is_empty() {
            return Err(CreateGroupError::NoMembers);
        }
        for (i, n) in members.iter().enumerate() {
            if members[..i].contains(n) {
                return Err(CreateGroupError::DuplicateMember(*n));
            }
        }
        let me = self.node_id();
        let Some(pos) = members.iter().position(|&n| n == me) else {
            return Err(CreateGroupError::NotAMember);
        };
        let conf =
            ConfState::with_voters(members.iter().enumerate().map(|(i, &n)| Replica::new(n, i as u64 + 1)));
        Ok((conf, pos as u64 + 1))
    }

    /// Like [`Engine::create_group`], with a designated first leader: the replica on
    /// `first_leader` campaigns as soon as it is created, and the others wait an extra
    /// maximum election timeout before their first campaign, so creating many groups
    /// starts one election each rather than a storm. Create the other replicas first
    /// (a vote request for a replica not created yet is dropped and retried only after an
    /// election timeout). Errors as `create_group`; `NotAMember` also when `first_leader`
    /// is not among `members`.
    pub fn create_group_led_by(
        &self,
        group: u64,
        members: &[NodeId],
        first_leader: NodeId,
        state_machine: Box<dyn StateMachine>,
    ) -> Result<(), CreateGroupError> {
        let (conf, replica) = self.founding(members)?;
        if !members.contains(&first_leader) {
            // The designated leader must be one of the members.
            return Err(CreateGroupError::NotAMember);
        }
        let first = Some(self.node_id() == first_leader);
        self.rt.create_group(group, replica, conf, state_machine, first).wait()
    }

    /// Removes this node's replica of `group` without a membership change (use it when the
    /// whole group is deleted on every node; to move a replica away use
    /// [`Engine::change_membership`]). Its records leave the WAL and a tombstone stays, so
    /// messages from the group never recreate it. Pending proposals resolve
    /// `Indeterminate`.
    pub fn remove_group(&self, group: u64) -> Result<(), ProposeError> {
        self.rt.remove_group(group).wait()
    }

    /// Proposes `data` to `group`. Resolves with the state machine's result once the entry
    /// is applied here (so only a leader accepts proposals).
    pub fn propose(&self, group: u64, data: Bytes) -> Result<Proposal, ProposeError> {
        self.rt.propose(group, data)
    }

    /// A linearizable read barrier on `group` (on a leader, follower or learner): resolves
    /// with the locally applied index once every write acknowledged before the call is
    /// applied here; read the state machine after it resolves.
    pub fn read_index(&self, group: u64) -> Result<ReadBarrier, ReadError> {
        self.rt.read_index(group)
    }

    /// Starts transferring `group`'s leadership to its voter on `node`. Returns once the
    /// transfer started; proposals are refused until it ends (watch [`Engine::status`]).
    pub fn transfer_leader(&self, group: u64, node: NodeId) -> Result<(), TransferError> {
        self.rt.transfer_leader(group, node).wait()
    }

    /// Proposes a membership change; resolves once it is applied here.
    pub fn change_membership(
        &self,
        group: u64,
        change: MembershipChange,
    ) -> Result<MembershipProposal, MembershipError> {
        self.rt.change_membership(group, change)
    }

    /// Takes a snapshot of `group`'s state machine now (on any replica, through the usual
    /// path: the apply thread snapshots between entries, its writer thread writes the file
    /// while apply goes on) and returns its index, at least the applied index at the call,
    /// once the file is durable; the log is compacted there as after any snapshot.
    pub fn request_snapshot(&self, group: u64) -> Result<u64, SnapshotError> {
        Ok(self.rt.take_snapshot(group)?.meta.index)
    }

    /// Takes a snapshot of `group` now (as [`Engine::request_snapshot`]) and writes it to
    /// `path` as a self-describing export file (group, index, term, configuration, data,
    /// CRC32C), crash-atomically, streaming (never the whole snapshot in memory) on the
    /// caller's thread. For a backup at a linearizable point, `read_index` first.
    pub fn export_snapshot(
        &self,
        group: u64,
        path: &std::path::Path,
    ) -> Result<ExportedSnapshot, ExportError> {
        self.rt.export_snapshot(group, path)
    }

    /// Creates this node's replica of `opts.group` from an export file: refused if the
    /// file fails its checksum (`Corrupt`), holds another group (`WrongGroup`), or the
    /// group exists (`GroupExists`) or was removed here. The replica's log starts after
    /// the snapshot's index; its configuration is the file's, or `opts.members` as new
    /// founding voters (see [`ImportOptions::members`] for the replica-id rule). Every
    /// replica of a restored group must be imported from the same file. Durable when it
    /// returns `Ok`: a crash after it keeps the replica.
    pub fn import_snapshot(
        &self,
        path: &std::path::Path,
        opts: ImportOptions,
    ) -> Result<ExportedSnapshot, ImportError> {
        self.rt.import_snapshot(path, opts)
    }

    /// A local read of `group` at this replica (follower, learner or leader), NOT
    /// linearizable: returns the applied index to read the state machine at if the
    /// replica's lag is within `max_lag` (entries behind the highest commit index it heard
    /// from its current leader, and time since it last heard from that leader; on a
    /// leader, since a quorum last answered), else `TooStale`. It may miss writes
    /// acknowledged elsewhere within the bound; use [`Engine::read_index`] for
    /// linearizable reads. A quiesced group's silence counts: a time bound refuses reads
    /// on a replica of an idle group once it passes.
    pub fn read_local(&self, group: u64, max_lag: Staleness) -> Result<u64, ReadLocalError> {
        self.rt.read_local(group, max_lag)
    }

    /// Every replica on this node, by group id.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.rt.status()
    }

    /// One group's replica on this node, if it exists.
    pub fn group_status(&self, group: u64) -> Option<GroupStatus> {
        self.rt.group_status(group)
    }

    /// Engine-wide counters.
    pub fn metrics(&self) -> Metrics {
        self.rt.metrics()
    }

    /// Stops the node gracefully: workers finish the writes in flight (so everything
    /// acknowledged is durable), pending waiters resolve (`Indeterminate` for appended
    /// proposals, `Shutdown` otherwise), then the network thread and the WAL stop.
    pub fn shutdown(self) {
        self.rt.shutdown();
    }
}
