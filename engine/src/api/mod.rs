//! The embedding API: [`Engine`], the handle of one node. Its configuration
//! ([`EngineConfig`], validated once into a [`ValidEngineConfig`]) is in `config.rs`, the
//! [`StateMachine`] an application plugs in in `state_machine.rs`, the typed answers of
//! every operation in `error.rs` (see [`ErrorClass`]), the requests and handles
//! ([`MembershipChange`], [`Proposal`], ...) in `request.rs`, the reports ([`Metrics`],
//! [`GroupStatus`]) in `metrics.rs`, and events and the leader view ([`EngineEvent`],
//! [`EventStream`], [`LeaderInfo`]) in `events.rs`; all are re-exported here.
//!
//! Owns the public surface. Never runs Raft rules or touches the WAL or the network
//! itself: every operation becomes a command in the mailbox of the worker that owns the
//! group (see [`crate::runtime`]), except `leader`, `hosts` and `subscribe`, which read
//! what the workers share.

mod config;
mod create_policy;
mod error;
mod events;
mod latency;
mod load;
mod metrics;
mod read_local;
mod request;
mod session;
mod snapshot_check;
mod snapshot_io;
mod state_machine;

pub use crate::runtime::event_hub::EventStream;
pub use config::*;
pub use create_policy::CreatePolicy;
pub use error::*;
pub use events::*;
pub use latency::*;
pub use load::*;
pub use metrics::*;
pub use read_local::*;
pub use request::*;
pub use session::*;
pub use snapshot_check::SnapshotCheck;
pub use snapshot_io::*;
pub use state_machine::*;

use std::sync::Arc;

use bytes::Bytes;

use crate::raft::conf::ConfState;
use crate::raft::types::{NodeId, Replica};
use crate::runtime;
use crate::session::SessionOp;
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
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use bytes::Bytes;
    /// # use flotilla_engine::api::*;
    /// # use flotilla_engine::raft::types::Role;
    /// # use flotilla_engine::transport::MemoryNetwork;
    /// # struct Log(Vec<u8>);
    /// # impl StateMachine for Log {
    /// #     fn apply(&mut self, _: u64, _: u64, c: Option<&[u8]>) -> Bytes {
    /// #         self.0.extend_from_slice(c.unwrap_or_default());
    /// #         Bytes::copy_from_slice(&self.0)
    /// #     }
    /// #     fn applied_index(&self) -> u64 { 0 }
    /// #     fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> { out.write_all(&self.0) }
    /// #     fn restore(&mut self, _: u64, _: u64, i: &mut dyn std::io::Read) -> std::io::Result<()> {
    /// #         self.0.clear();
    /// #         i.read_to_end(&mut self.0).map(|_| ())
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let net = MemoryNetwork::new();
    /// # let factory: StateMachineFactory = Arc::new(|_| Box::new(Log(Vec::new())));
    /// // One node on an in-memory network (use `transport::QuicTransport` between machines).
    /// let transport = net.join(1, 1024);
    /// let mut config = EngineConfig::new(1, dir.path()); // node id 1, WAL in dir/wal
    /// config.workers = 2;
    /// // Makes the state machines of replicas the engine creates by itself.
    /// let factory: StateMachineFactory = Arc::new(|_group| Box::new(Log(Vec::new())));
    /// let engine = Engine::open(config, Box::new(transport), factory)?;
    /// assert_eq!(engine.node_id(), 1);
    /// # engine.shutdown();
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use bytes::Bytes;
    /// # use flotilla_engine::api::*;
    /// # use flotilla_engine::raft::types::Role;
    /// # use flotilla_engine::transport::MemoryNetwork;
    /// # struct Log(Vec<u8>);
    /// # impl StateMachine for Log {
    /// #     fn apply(&mut self, _: u64, _: u64, c: Option<&[u8]>) -> Bytes {
    /// #         self.0.extend_from_slice(c.unwrap_or_default());
    /// #         Bytes::copy_from_slice(&self.0)
    /// #     }
    /// #     fn applied_index(&self) -> u64 { 0 }
    /// #     fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> { out.write_all(&self.0) }
    /// #     fn restore(&mut self, _: u64, _: u64, i: &mut dyn std::io::Read) -> std::io::Result<()> {
    /// #         self.0.clear();
    /// #         i.read_to_end(&mut self.0).map(|_| ())
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let net = MemoryNetwork::new();
    /// # let factory: StateMachineFactory = Arc::new(|_| Box::new(Log(Vec::new())));
    /// # let engine = Engine::open(EngineConfig::new(1, dir.path()), Box::new(net.join(1, 1024)), factory)?;
    /// // Group 1 with one founding voter (this node); several nodes each call this with
    /// // the same member list.
    /// engine.create_group(1, &[1], Box::new(Log(Vec::new())))?;
    /// assert_eq!(engine.group_status(1).map(|s| s.replica), Some(1));
    /// // Creating it again is a no-op; members must include this node.
    /// engine.create_group(1, &[1], Box::new(Log(Vec::new())))?;
    /// assert!(matches!(
    ///     engine.create_group(2, &[2, 3], Box::new(Log(Vec::new()))),
    ///     Err(CreateGroupError::NotAMember)
    /// ));
    /// # engine.shutdown();
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use bytes::Bytes;
    /// # use flotilla_engine::api::*;
    /// # use flotilla_engine::raft::types::Role;
    /// # use flotilla_engine::transport::MemoryNetwork;
    /// # struct Log(Vec<u8>);
    /// # impl StateMachine for Log {
    /// #     fn apply(&mut self, _: u64, _: u64, c: Option<&[u8]>) -> Bytes {
    /// #         self.0.extend_from_slice(c.unwrap_or_default());
    /// #         Bytes::copy_from_slice(&self.0)
    /// #     }
    /// #     fn applied_index(&self) -> u64 { 0 }
    /// #     fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> { out.write_all(&self.0) }
    /// #     fn restore(&mut self, _: u64, _: u64, i: &mut dyn std::io::Read) -> std::io::Result<()> {
    /// #         self.0.clear();
    /// #         i.read_to_end(&mut self.0).map(|_| ())
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let net = MemoryNetwork::new();
    /// # let factory: StateMachineFactory = Arc::new(|_| Box::new(Log(Vec::new())));
    /// # let engine = Engine::open(EngineConfig::new(1, dir.path()), Box::new(net.join(1, 1024)), factory)?;
    /// # engine.create_group(1, &[1], Box::new(Log(Vec::new())))?;
    /// # for _ in 0..2000 {
    /// #     if engine.group_status(1).is_some_and(|s| s.role == Role::Leader) { break }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// let result = engine.propose(1, Bytes::from_static(b"abc"))?.wait()?; // applied
    /// assert_eq!(&result[..], b"abc"); // the state machine's answer
    /// // No group 9 here: the error's class says to ask another node.
    /// let outcome = engine.propose(9, Bytes::from_static(b"x")).and_then(|p| p.wait());
    /// assert_eq!(outcome.map_err(|e| e.class()), Err(ErrorClass::Redirect));
    /// # engine.shutdown();
    /// # Ok(())
    /// # }
    /// ```
    pub fn propose(&self, group: u64, data: Bytes) -> Result<Proposal, ProposeError> {
        self.rt.propose(group, data)
    }

    /// A linearizable read barrier on `group` (on a leader, follower or learner): resolves
    /// with the locally applied index once every write acknowledged before the call is
    /// applied here; read the state machine after it resolves.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use bytes::Bytes;
    /// # use flotilla_engine::api::*;
    /// # use flotilla_engine::raft::types::Role;
    /// # use flotilla_engine::transport::MemoryNetwork;
    /// # struct Log(Vec<u8>);
    /// # impl StateMachine for Log {
    /// #     fn apply(&mut self, _: u64, _: u64, c: Option<&[u8]>) -> Bytes {
    /// #         self.0.extend_from_slice(c.unwrap_or_default());
    /// #         Bytes::copy_from_slice(&self.0)
    /// #     }
    /// #     fn applied_index(&self) -> u64 { 0 }
    /// #     fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> { out.write_all(&self.0) }
    /// #     fn restore(&mut self, _: u64, _: u64, i: &mut dyn std::io::Read) -> std::io::Result<()> {
    /// #         self.0.clear();
    /// #         i.read_to_end(&mut self.0).map(|_| ())
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let net = MemoryNetwork::new();
    /// # let factory: StateMachineFactory = Arc::new(|_| Box::new(Log(Vec::new())));
    /// # let engine = Engine::open(EngineConfig::new(1, dir.path()), Box::new(net.join(1, 1024)), factory)?;
    /// # engine.create_group(1, &[1], Box::new(Log(Vec::new())))?;
    /// # for _ in 0..2000 {
    /// #     if engine.group_status(1).is_some_and(|s| s.role == Role::Leader) { break }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// engine.propose(1, Bytes::from_static(b"w"))?.wait()?;
    /// // Every write acknowledged before this call is applied here once it resolves.
    /// let applied = engine.read_index(1)?.wait()?;
    /// assert!(applied >= 2); // the leader's no-op and the write
    /// # engine.shutdown();
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_index(&self, group: u64) -> Result<ReadBarrier, ReadError> {
        self.rt.read_index(group)
    }

    /// Starts transferring `group`'s leadership to its voter on `node`. Returns once the
    /// transfer started; proposals are refused until it ends (watch [`Engine::status`]).
    pub fn transfer_leader(&self, group: u64, node: NodeId) -> Result<(), TransferError> {
        self.rt.transfer_leader(group, node).wait()
    }

    /// Proposes a membership change; resolves once it is applied here.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use bytes::Bytes;
    /// # use flotilla_engine::api::*;
    /// # use flotilla_engine::raft::types::Role;
    /// # use flotilla_engine::transport::MemoryNetwork;
    /// # struct Log(Vec<u8>);
    /// # impl StateMachine for Log {
    /// #     fn apply(&mut self, _: u64, _: u64, c: Option<&[u8]>) -> Bytes {
    /// #         self.0.extend_from_slice(c.unwrap_or_default());
    /// #         Bytes::copy_from_slice(&self.0)
    /// #     }
    /// #     fn applied_index(&self) -> u64 { 0 }
    /// #     fn snapshot(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> { out.write_all(&self.0) }
    /// #     fn restore(&mut self, _: u64, _: u64, i: &mut dyn std::io::Read) -> std::io::Result<()> {
    /// #         self.0.clear();
    /// #         i.read_to_end(&mut self.0).map(|_| ())
    /// #     }
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let net = MemoryNetwork::new();
    /// # let factory: StateMachineFactory = Arc::new(|_| Box::new(Log(Vec::new())));
    /// # let engine = Engine::open(EngineConfig::new(1, dir.path()), Box::new(net.join(1, 1024)), factory)?;
    /// # engine.create_group(1, &[1], Box::new(Log(Vec::new())))?;
    /// # for _ in 0..2000 {
    /// #     if engine.group_status(1).is_some_and(|s| s.role == Role::Leader) { break }
    /// #     std::thread::sleep(std::time::Duration::from_millis(5));
    /// # }
    /// // Node 2 joins as a learner (it creates its replica when the leader contacts it),
    /// // and would be promoted with `MembershipChange::Promote` once caught up.
    /// for attempt in 0.. {
    ///     match engine.change_membership(1, MembershipChange::AddLearner(2)).and_then(|p| p.wait()) {
    ///         Ok(()) => break,
    ///         // e.g. `LeaderNotReady`: a new leader has not committed an entry of its term yet.
    ///         Err(e) if e.class() == ErrorClass::Retry && attempt < 500 => {
    ///             std::thread::sleep(std::time::Duration::from_millis(10))
    ///         }
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// }
    /// let members = engine.group_status(1).map(|s| s.members).unwrap_or_default();
    /// assert_eq!(members.learners.iter().map(|r| r.node).collect::<Vec<_>>(), [2]);
    /// # engine.shutdown();
    /// # Ok(())
    /// # }
    /// ```
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

    /// Subscribes to this node's events ([`EngineEvent`]): a stream buffering at most
    /// `capacity` of them. Workers never wait for a subscriber: a full stream loses events
    /// and yields [`EngineEvent::Lagged`] with their number before its next event. At most
    /// [`MAX_SUBSCRIBERS`] streams at once; dropping one unsubscribes.
    pub fn subscribe(&self, capacity: usize) -> Result<EventStream, SubscribeError> {
        self.rt.subscribe(capacity)
    }

    /// The leader this node's replica of `group` knows of (`None` when it knows none or
    /// the group is not hosted here), from a view the workers keep current after each
    /// turn of the group: lock-free, no mailbox round trip (unlike [`Engine::group_status`]).
    pub fn leader(&self, group: u64) -> Option<LeaderInfo> {
        self.rt.leader(group)
    }

    /// Whether this node hosts a replica of `group` (from the same lock-free view as
    /// [`Engine::leader`]).
    pub fn hosts(&self, group: u64) -> bool {
        self.rt.hosts(group)
    }

    /// Engine-wide counters.
    pub fn metrics(&self) -> Metrics {
        self.rt.metrics()
    }

    /// Whether the engine stopped on a storage failure (a failed WAL write or sync): every
    /// request is refused with `StorageFailed` from then on. For health checks.
    pub fn storage_failed(&self) -> bool {
        self.rt.storage_failed()
    }

    /// How long the WAL's syncs and the state machines' applies took, by power-of-two
    /// bucket, since open: lock-free recordings, read without stopping anything.
    pub fn latency_histograms(&self) -> LatencyHistograms {
        self.rt.latency_histograms()
    }

    /// The load of every group led here that has a measured load, by group id (a group
    /// led here and missing has had no event for long enough: zero load). Read from what
    /// the workers publish once per `EngineConfig::load_fold_interval`: lock-free, no
    /// mailbox round trip, cost proportional to the replicas with a measured load here
    /// (not to all replicas); leadership as of the last publication. Empty when
    /// `EngineConfig::measure_load` is off.
    pub fn group_loads(&self) -> Vec<(u64, GroupLoad)> {
        self.rt.group_loads()
    }

    /// Stops the node gracefully: workers finish the writes in flight (so everything
    /// acknowledged is durable), pending waiters resolve (`Indeterminate` for appended
    /// proposals, `Shutdown` otherwise), then the network thread and the WAL stop.
    pub fn shutdown(self) {
        self.rt.shutdown();
    }
}

/// Client sessions (`session.rs`): exactly-once proposals.
impl Engine {
    /// Opens a client session on `group`: registers it through the log (at the leader
    /// only) and waits until it is applied here. Its limits (`session_ttl`,
    /// `max_sessions` of this node's configuration) travel in the entry and become the
    /// group's. Errors as [`Engine::propose`], and [`SessionRefusal::NotSupported`].
    pub fn open_session(&self, group: u64) -> Result<Session, ProposeError> {
        let cfg = self.rt.config();
        let op = SessionOp::Register {
            ttl_ms: u64::try_from(cfg.session_ttl.as_millis()).unwrap_or(u64::MAX),
            max_sessions: cfg.max_sessions,
        };
        let r = self.rt.propose_session(group, op, Bytes::new())?.wait()?;
        // A register entry's result is always its 8-byte id; anything else is not ours.
        let id = session::decode_session_id(&r).ok_or(ProposeError::Indeterminate)?;
        Ok(Session::resume(group, id, 1))
    }

    /// Proposes `data` in `session` with sequence number `seq` (from
    /// [`Session::next_seq`], or the same number again to retry). Resolves with the
    /// state machine's result of the first application, whether it happens now or
    /// happened before; with [`ProposeError::Session`] if the table refused it. Call
    /// [`Session::answered`] once the answer is final.
    pub fn propose_in_session(
        &self,
        session: &Session,
        seq: u64,
        data: Bytes,
    ) -> Result<Proposal, ProposeError> {
        let op = SessionOp::Propose { session: session.id(), seq, floor: session.floor().min(seq) };
        self.rt.propose_session(session.group(), op, data)
    }

    /// Closes `session`: the group forgets it and its answers. Resolves once applied here.
    pub fn close_session(&self, session: &Session) -> Result<Proposal, ProposeError> {
        self.rt.propose_session(session.group(), SessionOp::Close { session: session.id() }, Bytes::new())
    }
}
