//! The commands between threads: [`Cmd`] in a worker's mailbox (from the API handle, the
//! network thread and other workers) and [`NetCmd`] in the network thread's queue.
//!
//! Owns only the vocabulary. Never decides anything: who sends a command is in `mod.rs`
//! (the handle), `net_loop` (received items) and the workers; who handles it is
//! `worker::Worker::handle` and `net_loop::run`.

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::pending::Completer;
use crate::api::{
    CreateGroupError, GroupStatus, MembershipChange, MembershipError, ProposeError, ReadError, StateMachine,
    TransferError,
};
use crate::raft::conf::ConfState;
use crate::raft::message::Message;
use crate::raft::types::{NodeId, ReplicaId};
use crate::transport::{HeartbeatAck, HeartbeatEntry, InboundHold, WireItem};

/// A command in a worker's mailbox (or, for received control items, its control mailbox).
pub(crate) enum Cmd {
    /// Messages from node `from`, by group. `hold` keeps the bytes of the batch they came
    /// in charged to `from`'s inbound budget until the command is dropped, after the
    /// worker stepped them.
    Msgs { from: NodeId, msgs: Vec<(u64, Message)>, hold: InboundHold },
    /// Coalesced heartbeats and heartbeat answers from node `from` (the groups of this
    /// worker's share of a received `WireItem::Heartbeats` / `WireItem::HeartbeatAcks`),
    /// stepped one by one without building a `Message` each; `hold` as in `Msgs`.
    Heartbeats { from: NodeId, heartbeats: Vec<HeartbeatEntry>, acks: Vec<HeartbeatAck>, hold: InboundHold },
    /// A client proposal (`Engine::propose`); resolves once applied here.
    Propose { group: u64, data: Bytes, done: Completer<Result<Bytes, ProposeError>> },
    /// A client-session entry (`Engine::open_session`, `propose_in_session`,
    /// `close_session`); resolves once applied here.
    ProposeSession {
        group: u64,
        op: crate::session::SessionOp,
        data: Bytes,
        done: Completer<Result<Bytes, ProposeError>>,
    },
    /// A membership change (`Engine::change_membership`).
    Conf { group: u64, change: MembershipChange, done: Completer<Result<(), MembershipError>> },
    /// A read barrier (`Engine::read_index`); resolves with the applied index.
    Read { group: u64, done: Completer<Result<u64, ReadError>> },
    /// A leadership transfer (`Engine::transfer_leader`); resolves once started.
    Transfer { group: u64, node: NodeId, done: Completer<Result<(), TransferError>> },
    /// Creates this node's replica (`Engine::create_group`); resolves once its founding
    /// write is durable.
    Create {
        group: u64,
        replica: ReplicaId,
        /// Boxed, as the other large fields of rare commands: every mailbox slot is as
        /// large as the largest command, and a proposal is copied in and out of one.
        conf: Box<ConfState>,
        sm: Box<dyn StateMachine>,
        /// `Some(true)`: this replica is the designated first leader and campaigns at
        /// once; `Some(false)`: another one is, wait longer before a first campaign.
        first_leader: Option<bool>,
        done: Completer<Result<(), CreateGroupError>>,
    },
    /// The status of one group, or of every group of the worker.
    Status { group: Option<u64>, done: Sender<Vec<GroupStatus>> },
    /// The transport finished streaming a snapshot to `replica` (`ok`: delivered).
    SnapshotSent { group: u64, replica: ReplicaId, ok: bool },
    /// Removes this node's replica without a membership change (`Engine::remove_group`).
    Remove { group: u64, done: Completer<Result<(), ProposeError>> },
    /// Messages to `node` were lost (its connection went down, or batches to it were
    /// dropped): leaders move their followers there from Replicate back to Probe.
    PeerUnreachable { node: NodeId },
    /// Node liveness: `node` went down, or reconnected as a new incarnation
    /// (`restarted`): wake the quiesced groups it concerns (rate-limited).
    Liveness { node: NodeId, restarted: bool },
    /// A member of `group` says replica `replica` was removed by its configuration at
    /// `conf_index` (see [`WireItem::Tombstone`]).
    Tombstone { from: NodeId, group: u64, replica: ReplicaId, conf_index: u64 },
    /// Node `from` confirms that replica `replica` of `group` is destroyed there (see
    /// [`WireItem::TombstoneAck`]).
    TombstoneAck { from: NodeId, group: u64, replica: ReplicaId },
    /// Replica `replica` of `group` on node `from` asks whether it still belongs to the
    /// group (see [`WireItem::GcProbe`]).
    GcProbe { from: NodeId, group: u64, replica: ReplicaId },
    /// Follower replica `replica` of `group` on node `from` holds `offset` bytes of the
    /// snapshot at (`index`, `term`) that leader replica `to` streams in `leader_term`
    /// durably (see [`WireItem::SnapshotProgress`]).
    SnapshotProgress {
        from: NodeId,
        group: u64,
        replica: ReplicaId,
        to: ReplicaId,
        leader_term: u64,
        index: u64,
        term: u64,
        offset: u64,
    },
    /// Stop: finish the writes in flight, resolve every waiter, exit.
    Shutdown,
    /// A snapshot now (`Engine::request_snapshot`); resolves with its durable file.
    RequestSnapshot { group: u64, done: super::snapshot_waiters::SnapshotDone },
    /// Creates this node's replica from an imported snapshot (`Engine::import_snapshot`;
    /// the snapshot file is durable and the state machine restored); resolves once durable.
    Import {
        group: u64,
        replica: ReplicaId,
        meta: Box<crate::raft::message::SnapshotMeta>,
        sm: Box<dyn StateMachine>,
        /// The client sessions read from the snapshot's session section.
        sessions: Box<crate::session::SessionTable>,
        done: Completer<Result<(), CreateGroupError>>,
    },
    /// Founds this node's replica of a split child from its durable founding snapshot, or
    /// keeps the one here (`split`); resolves once durable or kept.
    SplitChild {
        group: u64,
        replica: ReplicaId,
        meta: Box<crate::raft::message::SnapshotMeta>,
        sm: Box<dyn StateMachine>,
        first_leader: Option<bool>,
        done: Completer<Result<(), CreateGroupError>>,
    },
    /// A local, not linearizable read (`Engine::read_local`): the applied index if the
    /// replica's lag is within `bound`.
    ReadLocal {
        group: u64,
        bound: crate::api::Staleness,
        done: Completer<Result<u64, crate::api::ReadLocalError>>,
    },
}

/// A request to the network thread.
pub(crate) enum NetCmd {
    Send { to: NodeId, items: Vec<WireItem> },
    Snapshot { to: NodeId, group: u64, replica: ReplicaId, chunks: crate::transport::SnapshotChunks },
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel's slot is as large as the largest command it carries, and every
    /// proposal and received batch is copied into one and out again: the rare commands
    /// keep their large fields boxed (unboxed, `Cmd` was 264 bytes). The apply thread's
    /// commands are checked beside them (`apply::tests`).
    #[test]
    fn commands_between_threads_stay_small() {
        use std::mem::size_of;
        assert!(size_of::<Cmd>() <= 96, "Cmd is {} bytes", size_of::<Cmd>());
        assert!(size_of::<NetCmd>() <= 64, "NetCmd is {} bytes", size_of::<NetCmd>());
    }
}
