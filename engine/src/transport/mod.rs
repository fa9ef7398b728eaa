//! How the engine reaches other nodes: the [`Transport`] trait it defines, the wire codec
//! of its messages, the per-tick heartbeat coalescer, an in-memory transport for tests and
//! the simulator, the adapter over `flotilla-net` (QUIC), and a fault-injecting wrapper for
//! tests (partitions, loss).
//!
//! Owns the engine's view of the network (batches of [`WireItem`]s between node ids, peer
//! up/down, drop reports), the choice of lane for each item ([`is_control`]: liveness
//! traffic on the control lane, everything else on the data lane) and the
//! [`InboundHold`] a received batch carries until it is consumed. Never runs Raft rules:
//! the runtime steps groups with what arrives here.

pub mod coalescer;
pub mod codec;
pub mod fault;
pub mod memory;
pub mod quic;

use std::time::Duration;

use thiserror::Error;

pub use coalescer::Outbox;
pub use codec::{DecodeError, DecodeLimits, EncodeError, HeartbeatAck, HeartbeatEntry, WireItem};
pub use fault::{FaultControl, FaultTransport};
pub use memory::{MemoryNetwork, MemoryTransport};
pub use quic::QuicTransport;

use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;

/// The chunks of one snapshot stream, produced lazily (read from the snapshot file as the
/// transport sends them).
pub type SnapshotChunks = Box<dyn Iterator<Item = std::io::Result<Message>> + Send>;

/// What a received batch holds of its sender's inbound byte budget (the transport's, e.g.
/// [`flotilla_net::InboundPermit`]): the budget gets the bytes back when the last clone is
/// dropped, so whoever consumes the batch keeps one with its decoded messages until they
/// have been handled. Empty for a transport without budgets. Holds compare equal whatever
/// they hold.
#[derive(Clone, Default)]
pub struct InboundHold(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl InboundHold {
    /// A hold of `what` (dropped, and so released, with the last clone).
    pub fn new(what: impl std::any::Any + Send + Sync) -> InboundHold {
        InboundHold(Some(std::sync::Arc::new(what)))
    }

    /// Whether this hold holds anything.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl std::fmt::Debug for InboundHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "InboundHold(held)" } else { "InboundHold(empty)" })
    }
}

impl PartialEq for InboundHold {
    fn eq(&self, _: &InboundHold) -> bool {
        true
    }
}

impl Eq for InboundHold {}

/// Whether `item` belongs on the control lane: heartbeats, votes (and pre-votes), their
/// answers, `TimeoutNow`, and the removal items (tombstones, their acknowledgements, GC
/// probes). These keep a cluster live and are small; a flood of data must not delay
/// them, so a transport that has lanes carries them apart and the receiving runtime
/// handles them first. Everything else (appends and their answers, read-index traffic,
/// snapshots) is data.
pub fn is_control(item: &WireItem) -> bool {
    match item {
        WireItem::Heartbeats(_)
        | WireItem::HeartbeatAcks(_)
        | WireItem::Tombstone { .. }
        | WireItem::GcProbe { .. }
        | WireItem::TombstoneAck { .. } => true,
        WireItem::Msg { msg, .. } => matches!(
            msg.body,
            MessageBody::Heartbeat { .. }
                | MessageBody::HeartbeatResponse { .. }
                | MessageBody::RequestVote { .. }
                | MessageBody::RequestVoteResponse { .. }
                | MessageBody::TimeoutNow
        ),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Something that arrived from, or happened on, the network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A decoded batch from `from` (batches from one node arrive in send order).
    Items {
        /// The sending node.
        from: NodeId,
        /// The batch.
        items: Vec<WireItem>,
        /// The sender's inbound budget this batch holds: keep it until the items have
        /// been handled.
        hold: InboundHold,
    },
    /// A batch from `from` failed to decode and was discarded.
    Malformed {
        /// The sending node.
        from: NodeId,
        /// Why.
        error: DecodeError,
    },
    /// The connection to `node` is up; a new `incarnation` means the node restarted.
    PeerUp {
        /// The node.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The connection to `node` is lost: move followers on it to Probe, wake groups led
    /// there.
    PeerDown {
        /// The node.
        node: NodeId,
    },
    /// Batches sent to `to` with these tags were dropped (move the followers they were for
    /// from Replicate back to Probe).
    Dropped {
        /// The destination.
        to: NodeId,
        /// The tags given to [`Transport::send`].
        tags: Vec<u64>,
    },
    /// A snapshot stream finished: the leader reports it to Raft (`report_snapshot`).
    SnapshotSent {
        /// The destination.
        to: NodeId,
        /// The tag given to [`Transport::send_snapshot`].
        tag: u64,
        /// Whether the receiver acknowledged every chunk.
        ok: bool,
    },
}

/// Why a send was refused at once. Each carries what the caller needs to react.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The destination's queue is full (backpressure): the batch was not queued.
    #[error("queue to node {to} full; batch {tag} not sent")]
    QueueFull {
        /// The destination.
        to: NodeId,
        /// The batch's tag.
        tag: u64,
    },
    /// The encoded batch exceeds the transport's frame limit, or an encoded snapshot chunk
    /// its bulk chunk limit.
    #[error("batch {tag} of {len} bytes exceeds the frame limit")]
    TooLarge {
        /// The batch's tag.
        tag: u64,
        /// Encoded length.
        len: usize,
    },
    /// Node id 0, this node, or a node the transport cannot name.
    #[error("invalid destination node {to}")]
    InvalidPeer {
        /// The destination.
        to: NodeId,
    },
    /// A message has no wire form.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A snapshot message list held something other than `SnapshotChunk`s.
    #[error("snapshot stream may only carry SnapshotChunk messages")]
    NotAChunk,
    /// The transport refused the batch for a reason this version does not name (the
    /// underlying error, as text). Treated like a drop: Raft retransmits.
    #[error("transport refused the batch: {0}")]
    Other(String),
}

/// Figures of a transport that the engine folds into its [`Metrics`](crate::api::Metrics):
/// certificate expiry and refused admissions. Zero where a transport has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// When this node's own certificate expires, in seconds since the Unix epoch.
    pub cert_not_after_unix: u64,
    /// The earliest expiry among the certificates of the peers connected now, in seconds
    /// since the Unix epoch.
    pub peer_cert_not_after_min_unix: u64,
    /// Inbound connection attempts refused at the handshake caps.
    pub handshakes_refused: u64,
    /// Handshakes and connections refused by the certificate policy (key usage, node not
    /// on the allow-list).
    pub policy_refused: u64,
    /// Gauge: bytes of received data-lane frames and snapshot chunks held now (by the
    /// transport's queues, the runtime's queues and the workers until they handled
    /// them), all peers together; each peer's at most the transport's per-peer budget.
    pub inbound_bytes: u64,
    /// Gauge: the most such bytes one peer holds now.
    pub inbound_bytes_peer_max: u64,
    /// Gauge: bytes of received control-lane frames held now, all peers together.
    pub control_inbound_bytes: u64,
    /// Times the transport stopped reading a peer whose budget was spent.
    pub inbound_waits: u64,
}

/// Reads a transport's [`TransportStats`] from any thread (the runtime keeps one while the
/// network thread owns the transport).
pub trait TransportStatsSource: Send + Sync {
    /// The figures now.
    fn transport_stats(&self) -> TransportStats;
}

/// The engine's network: batches of wire items between node ids, snapshot streams, and
/// events. Implemented over QUIC by [`QuicTransport`] and in memory by [`MemoryTransport`].
pub trait Transport: Send {
    /// This node's id.
    fn node_id(&self) -> NodeId;

    /// Sends one batch to `to` on the message lane, without blocking. `tag` names it in
    /// [`TransportEvent::Dropped`].
    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError>;

    /// Sends one batch of control items ([`is_control`]) to `to` on the control lane,
    /// which data never delays; as [`Transport::send`] otherwise. The default: the message
    /// lane (`send`), for transports with one lane.
    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.send(to, tag, items)
    }

    /// Streams the `SnapshotChunk` messages of one snapshot of `group` to `to` on a bulk
    /// lane, never delaying the message lane; completion arrives as
    /// [`TransportEvent::SnapshotSent`]. The chunks are pulled from `chunks` as they are
    /// sent (the engine reads them from the snapshot file), so the snapshot is never
    /// whole in memory; a chunk that fails to read ends the stream unsuccessfully. The
    /// first chunk is checked at once ([`TransportError::NotAChunk`],
    /// [`TransportError::TooLarge`]); a later bad chunk fails the stream.
    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        chunks: SnapshotChunks,
    ) -> Result<(), TransportError>;

    /// The next event, waiting up to `timeout`.
    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent>;

    /// A signal that becomes ready (holds a `()`) whenever an event may have arrived, so
    /// the runtime's network thread can sleep on it together with its own queue instead of
    /// polling (an idle node then uses ~no CPU). Drain it before polling
    /// [`Transport::recv_timeout`]; an event that arrives after that sets it again.
    /// `None` (the default): no signal, the caller polls.
    fn event_signal(&self) -> Option<crossbeam_channel::Receiver<()>> {
        None
    }

    /// A handle that reads this transport's [`TransportStats`] from any thread. `None`
    /// (the default): the transport has none to report.
    fn stats_source(&self) -> Option<std::sync::Arc<dyn TransportStatsSource>> {
        None
    }

    /// A handle that sends message and control batches from any thread, so a worker can
    /// send its own turn's batches without handing them to the network thread (a thread
    /// hand-over less on every message's path). `None` (the default): every send goes
    /// through the thread that owns the transport.
    fn sender(&self) -> Option<std::sync::Arc<dyn TransportSender>> {
        None
    }

    /// Hands every received batch of Raft items (decoded, with its [`InboundHold`]) to
    /// `sink` on the transport's own receiving thread as it arrives, instead of queueing
    /// it as a [`TransportEvent::Items`] for [`Transport::recv_timeout`]; malformed
    /// batches, snapshot streams, peer events and drop reports still come as events.
    /// Returns whether the transport does so; `false` (the default): every batch comes
    /// as an event. The sink is dropped with the transport.
    fn set_items_sink(&mut self, sink: ItemsSink) -> bool {
        let _ = sink;
        false
    }
}

/// Sends batches to other nodes from any thread (see [`Transport::sender`]); each call
/// as [`Transport::send`] and [`Transport::send_control`].
pub trait TransportSender: Send + Sync {
    /// As [`Transport::send`].
    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError>;

    /// As [`Transport::send_control`].
    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        self.send(to, tag, items)
    }
}

/// Where a transport hands received batches on its own thread (see
/// [`Transport::set_items_sink`]): the sender, the decoded items, and the hold of their
/// bytes. It must not block.
pub type ItemsSink = std::sync::Arc<dyn Fn(NodeId, Vec<WireItem>, InboundHold) + Send + Sync>;

#[cfg(test)]
mod tests;
