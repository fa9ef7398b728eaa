//! What the transport tells its user: inbound frames (message and control lanes), bulk
//! chunks, peer up/down, and reports of frames it dropped. Also the [`Inbox`] they arrive
//! through.
//!
//! Owns the event types and the bounded inbox (its channels and their priority). Never
//! decides when events happen: the peer and connection tasks do; never charges budgets
//! (`budget.rs`, by the readers).

use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::budget::InboundPermit;

/// A node id, as the transport knows it: a non-zero number named by a certificate.
pub type NodeId = u64;

/// Why a peer is considered down.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The connection closed, timed out (no traffic within the idle timeout) or failed.
    ConnectionLost(String),
    /// The peer came back with a new incarnation; the old connection was retired.
    Restarted,
}

/// Why frames were dropped without being handed to a live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The connection was lost with these frames queued or being written.
    ConnectionLost,
    /// No connection could be established (dial failed, timed out or was refused).
    Unreachable,
    /// The peer has no known address.
    NoAddress,
    /// The endpoint is shutting down.
    Shutdown,
    /// The peer is not on the allow-list ([`Endpoint::set_allowed_nodes`](crate::Endpoint::set_allowed_nodes)).
    NotAllowed,
}

/// Something that happened on the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message-lane frame from `from`. Frames from one peer arrive in send order.
    Frame {
        /// The sender.
        from: NodeId,
        /// The payload, as given to `Endpoint::send`.
        payload: Bytes,
        /// The bytes of `from`'s `peer_inbound_bytes` budget this frame holds until every
        /// clone of the permit is dropped: keep it with what is made of the payload until
        /// done with it.
        permit: InboundPermit,
    },
    /// A control-lane frame from `from` (sent with `Endpoint::send_control`). Control
    /// frames from one peer arrive in send order, but in no order with its message-lane
    /// frames. The [`Inbox`] hands them out before anything else.
    Control {
        /// The sender.
        from: NodeId,
        /// The payload, as given to `Endpoint::send_control`.
        payload: Bytes,
        /// The bytes of `from`'s `control_inbound_bytes` budget this frame holds.
        permit: InboundPermit,
    },
    /// A chunk of bulk stream `tag` from `from` (chunks of one stream arrive in order).
    BulkChunk {
        /// The sender.
        from: NodeId,
        /// The sender's tag for the stream.
        tag: u64,
        /// The chunk.
        payload: Bytes,
        /// The bytes of `from`'s `peer_inbound_bytes` budget this chunk holds.
        permit: InboundPermit,
    },
    /// Bulk stream `tag` from `from` is complete (every chunk was delivered before).
    BulkEnd {
        /// The sender.
        from: NodeId,
        /// The sender's tag.
        tag: u64,
    },
    /// Bulk stream `tag` from `from` broke before its end; discard its chunks.
    BulkAborted {
        /// The sender.
        from: NodeId,
        /// The sender's tag.
        tag: u64,
    },
    /// A connection to `node` is up. A different `incarnation` than last time means the
    /// peer restarted.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// The peer's incarnation.
        incarnation: u64,
    },
    /// The connection to `node` (incarnation `incarnation`) is gone. Frames written to it
    /// may have been lost as well: treat every follower on that node as needing a probe.
    PeerDown {
        /// The peer.
        node: NodeId,
        /// The incarnation of the connection that went down.
        incarnation: u64,
        /// Why.
        reason: DownReason,
    },
    /// Frames sent to `to` with these tags were dropped, never handed to a connection.
    Dropped {
        /// The destination.
        to: NodeId,
        /// The tags given to `Endpoint::send`, in send order.
        tags: Vec<u64>,
        /// Why.
        reason: DropReason,
    },
}

/// Why [`Inbox::recv_timeout`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The endpoint is gone.
    #[error("endpoint shut down")]
    Closed,
    /// Called from inside an async runtime, where blocking is not allowed; use
    /// [`Inbox::recv`] instead.
    #[error("blocking receive called from an async context")]
    InAsyncContext,
}

/// The embedder's hook for frames as they are read (see
/// [`Endpoint::set_frame_hook`](crate::Endpoint::set_frame_hook)): returns the event to
/// queue it in the inbox, or `None` when it took it.
pub type FrameHook = std::sync::Arc<dyn Fn(Event) -> Option<Event> + Send + Sync>;

/// The bounded streams of [`Event`]s of one endpoint: control-lane frames in a channel of
/// their own (`inbox_capacity / 16` events, at least 16), message-lane frames and peer
/// events in one channel (`inbox_capacity` events), bulk events (chunks, ends, aborts) in
/// a small one of their own (twice `max_bulk_streams` events). When one is full, its
/// readers stop reading and QUIC flow control pushes back on the senders; the bytes of the
/// frames and chunks are bounded by the per-peer budgets their permits hold. Receiving
/// prefers control frames, then the message channel: a heartbeat never waits behind data,
/// and a frame never waits behind bulk chunks that arrived before it (the kinds are ordered
/// only within their own channel). [`Inbox::split_control`] gives the control channel its
/// own receiver, for a consumer that waits on the two separately.
#[derive(Debug)]
pub struct Inbox {
    control_rx: Option<mpsc::Receiver<Event>>,
    rx: Option<mpsc::Receiver<Event>>,
    bulk_rx: Option<mpsc::Receiver<Event>>,
    /// A thread-less runtime used only to time blocking receives, so they keep working
    /// after the endpoint's runtime has shut down.
    timer: tokio::runtime::Runtime,
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Event>>) -> Option<Event> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// The next event, control channel first, then the message channel; `None` once every
/// channel is closed and empty.
async fn next(
    control_rx: &mut Option<mpsc::Receiver<Event>>,
    rx: &mut Option<mpsc::Receiver<Event>>,
    bulk_rx: &mut Option<mpsc::Receiver<Event>>,
) -> Option<Event> {
    tokio::select! {
        biased;
        Some(e) = recv_opt(control_rx) => Some(e),
        Some(e) = recv_opt(rx) => Some(e),
        Some(e) = recv_opt(bulk_rx) => Some(e),
        else => None,
    }
}

fn try_opt(rx: &mut Option<mpsc::Receiver<Event>>) -> Option<Event> {
    rx.as_mut().and_then(|rx| rx.try_recv().ok())
}

impl Inbox {
    pub(crate) fn new(
        control_rx: mpsc::Receiver<Event>,
        rx: mpsc::Receiver<Event>,
        bulk_rx: mpsc::Receiver<Event>,
    ) -> std::io::Result<Inbox> {
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        Ok(Inbox { control_rx: Some(control_rx), rx: Some(rx), bulk_rx: Some(bulk_rx), timer })
    }

    /// Splits off the control lane: returns an inbox of control frames only, and this
    /// inbox without them (its message, peer and bulk events). For a consumer that forwards
    /// each from its own thread, so a full data queue never holds back a heartbeat.
    pub fn split_control(mut self) -> std::io::Result<(Inbox, Inbox)> {
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let control = Inbox { control_rx: self.control_rx.take(), rx: None, bulk_rx: None, timer };
        Ok((control, self))
    }

    /// Waits for the next event (async).
    pub async fn recv(&mut self) -> Option<Event> {
        next(&mut self.control_rx, &mut self.rx, &mut self.bulk_rx).await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<Event> {
        try_opt(&mut self.control_rx).or_else(|| try_opt(&mut self.rx)).or_else(|| try_opt(&mut self.bulk_rx))
    }

    /// Waits up to `timeout` for the next event, blocking this (non-async) thread.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(RecvError::InAsyncContext);
        }
        // What is queued already needs no timer and no trip through the runtime (the same
        // order: control, message, bulk).
        if let Some(e) = self.try_recv() {
            return Ok(e);
        }
        let (c, rx, bulk_rx) = (&mut self.control_rx, &mut self.rx, &mut self.bulk_rx);
        match self.timer.block_on(async { tokio::time::timeout(timeout, next(c, rx, bulk_rx)).await }) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(RecvError::Closed),
            Err(_) => Err(RecvError::Timeout),
        }
    }
}
