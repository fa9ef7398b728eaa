//! What a node tells its embedder as it happens: [`EngineEvent`]s delivered through an
//! [`EventStream`](super::EventStream) (from [`Engine::subscribe`](super::Engine::subscribe)), and the answer
//! of the lock-free leader view, [`LeaderInfo`] (from
//! [`Engine::leader`](super::Engine::leader)).
//!
//! Owns the public vocabulary of events, the subscriber's end of a subscription and the
//! errors of subscribing and receiving. Never blocks a worker: workers publish through the
//! runtime's hub (`runtime::event_hub`) with a non-blocking try-send; a full stream loses
//! events, counts them, and yields [`EngineEvent::Lagged`] before its next event.

use thiserror::Error;

use super::error::ErrorClass;
use crate::raft::types::{NodeId, Replica, ReplicaId};

/// The most subscriptions a node holds at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// The largest capacity (events buffered) of one subscription.
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

/// One thing that happened on this node, as an embedder sees it (dragonboat's
/// `RaftEventListener` and `SystemEventListener`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// This node's replica of `group` learnt of a new leader: a (term, leader) pair it
    /// had not reported before. Never "no leader": a leadership transfer gives exactly
    /// one such event per group on every node hosting a replica (the old leader, the new
    /// one and every follower).
    LeaderChanged {
        /// The group.
        group: u64,
        /// The leader: its node and replica id.
        leader: Replica,
        /// The term it leads.
        term: u64,
    },
    /// This node's replica of `group` applied a membership change (its entry at `index`).
    MembershipApplied {
        /// The group.
        group: u64,
        /// The index of the change's entry.
        index: u64,
        /// Whether the configuration is joint after it (a joint change entered; left by
        /// a later change).
        joint: bool,
    },
    /// This node's replica of `group` (leading it) started streaming the snapshot at
    /// `index` to replica `to`.
    SnapshotSent {
        /// The group.
        group: u64,
        /// The replica it goes to.
        to: Replica,
        /// The snapshot's last included index.
        index: u64,
    },
    /// This node's replica of `group` installed a snapshot received from its leader.
    SnapshotInstalled {
        /// The group.
        group: u64,
        /// The snapshot's last included index.
        index: u64,
    },
    /// This node's replica of `group` took a snapshot of its state machine and compacted
    /// its log up to `index`.
    SnapshotTaken {
        /// The group.
        group: u64,
        /// The snapshot's last included index.
        index: u64,
    },
    /// A replica of `group` was created on this node (by `create_group`, or from a
    /// leader's message). Replicas recovered at open are not reported.
    ReplicaCreated {
        /// The group.
        group: u64,
        /// Its replica id.
        replica: ReplicaId,
    },
    /// This node's replica of `group` was destroyed (removed from the group, or by
    /// `remove_group`, or an unconfirmed replica dropped).
    ReplicaDestroyed {
        /// The group.
        group: u64,
    },
    /// This node's replica of `group` quiesced: it stopped ticking.
    GroupQuiesced {
        /// The group.
        group: u64,
    },
    /// This node's replica of `group` woke from quiescence.
    GroupWoken {
        /// The group.
        group: u64,
    },
    /// Delivered by the stream only: `missed` events were lost because this stream was
    /// full (a slow subscriber). It comes before the first event published after them.
    Lagged {
        /// How many events this stream lost.
        missed: u64,
    },
}

impl EngineEvent {
    /// The group the event is about (`None` for [`EngineEvent::Lagged`]).
    pub fn group(&self) -> Option<u64> {
        match *self {
            EngineEvent::LeaderChanged { group, .. }
            | EngineEvent::MembershipApplied { group, .. }
            | EngineEvent::SnapshotSent { group, .. }
            | EngineEvent::SnapshotInstalled { group, .. }
            | EngineEvent::SnapshotTaken { group, .. }
            | EngineEvent::ReplicaCreated { group, .. }
            | EngineEvent::ReplicaDestroyed { group }
            | EngineEvent::GroupQuiesced { group }
            | EngineEvent::GroupWoken { group } => Some(group),
            EngineEvent::Lagged { .. } => None,
        }
    }
}

/// The leader this node's replica of a group knows of ([`Engine::leader`]).
///
/// [`Engine::leader`]: super::Engine::leader
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaderInfo {
    /// The node hosting the leader.
    pub node: NodeId,
    /// The leader's replica id.
    pub replica: ReplicaId,
    /// The term it leads.
    pub term: u64,
}

/// Why [`Engine::subscribe`](super::Engine::subscribe) refused. Subscribing reaches no
/// group and no worker, so none of the shared answers ([`super::Unavailable`]) applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The capacity is 0 or above [`MAX_EVENT_CAPACITY`].
    #[error("event capacity {capacity} outside 1..={max}")]
    InvalidCapacity {
        /// The capacity asked for.
        capacity: usize,
        /// The largest allowed.
        max: usize,
    },
    /// [`MAX_SUBSCRIBERS`] subscriptions are open; drop one first.
    #[error("{max} event subscriptions are open already")]
    TooManySubscribers {
        /// The bound.
        max: usize,
    },
}

impl SubscribeError {
    /// How to treat this error: `Invalid` (a capacity out of range), `Retry` (too many
    /// subscriptions: one may be dropped meanwhile).
    pub fn class(&self) -> ErrorClass {
        match self {
            SubscribeError::InvalidCapacity { .. } => ErrorClass::Invalid,
            SubscribeError::TooManySubscribers { .. } => ErrorClass::Retry,
        }
    }
}

/// Why [`EventStream::try_recv`](super::EventStream::try_recv) or [`EventStream::recv_timeout`](super::EventStream::recv_timeout) returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No event now (or within the timeout).
    #[error("no event")]
    Empty,
    /// The engine shut down and every event was received.
    #[error("engine shut down")]
    Closed,
}

impl RecvError {
    /// How to treat this error: `Retry` (no event yet), `Fatal` (shut down).
    pub fn class(&self) -> ErrorClass {
        match self {
            RecvError::Empty => ErrorClass::Retry,
            RecvError::Closed => ErrorClass::Fatal,
        }
    }
}
