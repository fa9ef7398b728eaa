//! The adapter that implements [`Transport`] over `flotilla-net` (QUIC, mutual TLS).
//!
//! Owns the mapping between the engine's batches and the transport's frames: a batch is
//! encoded into one message-lane frame, a control batch ([`Transport::send_control`]) into
//! one control-lane frame; a snapshot's chunks each become one bulk-lane chunk on their own
//! stream, sent from a helper thread so the caller never blocks; transport events become
//! [`TransportEvent`]s, each received batch with the frame's
//! [`InboundPermit`](flotilla_net::InboundPermit) as its [`InboundHold`], so the bytes stay
//! charged to the sender's budget until the runtime is done with the messages.
//!
//! Two helper threads block on the inbox, one on its control lane and one on the rest, and
//! forward the events into two BOUNDED queues ([`CONTROL_QUEUE`], [`DATA_QUEUE`] events;
//! their bytes are bounded by the permits the events hold), setting the event signal, so
//! the runtime sleeps until something arrives; a full data queue stops its helper, which
//! stops reading the inbox, so the endpoint's readers stop and QUIC flow control pushes
//! back, and never holds back a control event. [`Transport::recv_timeout`] hands out
//! control events first. Once the runtime installs its items sink
//! ([`Transport::set_items_sink`]), each frame is decoded on the endpoint's runtime thread
//! as it is read (`Endpoint::set_frame_hook`) and its items handed straight to the sink
//! (the workers' mailboxes), with no hop through the inbox, its helper threads or the
//! network thread; the workers send through [`Transport::sender`], a handle to the
//! endpoint, likewise. Also passes the embedder's admission controls through to the
//! endpoint (the node allow-list, a certificate reload) and its certificate, admission
//! and inbound-budget figures to the engine's metrics. Never interprets messages beyond
//! the codec.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_net::{Endpoint, Event, Inbox, ReloadError};

use super::codec::{decode_batch, encode_batch, DecodeLimits, WireItem};
use super::{
    InboundHold, ItemsSink, SnapshotChunks, Transport, TransportError, TransportEvent, TransportSender,
    TransportStats, TransportStatsSource,
};
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;

/// Events the control-lane helper queues for the runtime before it stops reading.
pub const CONTROL_QUEUE: usize = 1024;
/// Events the data helper queues for the runtime before it stops reading.
pub const DATA_QUEUE: usize = 1024;

/// [`Transport`] over a running [`flotilla_net::Endpoint`].
pub struct QuicTransport {
    ep: std::sync::Arc<Endpoint>,
    /// The inbox's control frames, forwarded by a helper thread that blocks on the
    /// inbox's control lane and sets `sig` for each (see `Transport::event_signal`).
    control: crossbeam_channel::Receiver<Event>,
    /// The inbox's other events, forwarded likewise by a second helper.
    events: crossbeam_channel::Receiver<Event>,
    sig: crossbeam_channel::Receiver<()>,
    sig_tx: crossbeam_channel::Sender<()>,
    limits: DecodeLimits,
    done_tx: mpsc::Sender<TransportEvent>,
    done_rx: mpsc::Receiver<TransportEvent>,
    /// Whether this transport installed a frame hook on the endpoint (removed on drop).
    hooked: bool,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport").field("node", &self.ep.node_id()).finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Wraps a started endpoint and its inbox.
    pub fn new(ep: Endpoint, inbox: Inbox, limits: DecodeLimits) -> QuicTransport {
        QuicTransport::with_shared_endpoint(std::sync::Arc::new(ep), inbox, limits)
    }

    /// Wraps a started endpoint the caller keeps a handle to (to add peer addresses it
    /// learns while the engine runs, say), and its inbox.
    pub fn with_shared_endpoint(
        ep: std::sync::Arc<Endpoint>,
        inbox: Inbox,
        limits: DecodeLimits,
    ) -> QuicTransport {
        let (done_tx, done_rx) = mpsc::channel();
        let (sig_tx, sig) = crossbeam_channel::bounded(1);
        let (ctl_tx, control) = crossbeam_channel::bounded(CONTROL_QUEUE);
        let (ev_tx, events) = crossbeam_channel::bounded(DATA_QUEUE);

        let (ctl_inbox, inbox) = match inbox.split_control() {
            Ok((c, rest)) => (Some(c), rest),
            Err(e) => {
                // The inbox is gone with the failed split: no events will arrive.
                tracing::error!("cannot split the QUIC inbox: {e}");
                return QuicTransport {
                    ep,
                    control,
                    events,
                    sig,
                    sig_tx,
                    limits,
                    done_tx,
                    done_rx,
                    hooked: false,
                };
            }
        };
        forward("flotilla-quic-inbox", inbox, ev_tx, sig_tx.clone());
        if let Some(c) = ctl_inbox {
            forward("flotilla-quic-control", c, ctl_tx, sig_tx.clone());
        }
        QuicTransport { ep, control, events, sig, sig_tx, limits, done_tx, done_rx, hooked: false }
    }

    /// The endpoint (addresses, stats).
    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// A handle to the endpoint the embedder keeps once the transport is moved into the
    /// engine: to update the allow-list ([`Endpoint::set_allowed_nodes`]) as membership
    /// changes, reload certificates ([`Endpoint::reload_certs`]), add peer addresses.
    pub fn shared_endpoint(&self) -> std::sync::Arc<Endpoint> {
        self.ep.clone()
    }

    /// Sets the nodes allowed to connect (`None`: any node with a certificate of a trusted
    /// CA); a node removed from the list is refused and its connection closed. See
    /// [`Endpoint::set_allowed_nodes`].
    pub fn set_allowed_nodes(&self, nodes: Option<HashSet<NodeId>>) {
        self.ep.set_allowed_nodes(nodes);
    }

    /// Re-reads the certificate files for new connections. See [`Endpoint::reload_certs`].
    pub fn reload_certs(&self) -> Result<(), ReloadError> {
        self.ep.reload_certs()
    }

    fn decode(
        &self,
        from: NodeId,
        bytes: &bytes::Bytes,
        permit: flotilla_net::InboundPermit,
    ) -> TransportEvent {
        match decode_batch(bytes, self.limits) {
            Ok(items) => TransportEvent::Items { from, items, hold: InboundHold::new(permit) },
            Err(error) => TransportEvent::Malformed { from, error },
        }
    }
}

/// Starts a helper thread that blocks on `inbox` and moves its events into the bounded
/// `tx` (waiting while it is full, so the inbox fills and the endpoint's readers stop),
/// setting `signal` after each. Ends when the endpoint shuts down (the inbox closes) or
/// the transport is gone (`tx` disconnected).
fn forward(
    name: &str,
    mut inbox: Inbox,
    tx: crossbeam_channel::Sender<Event>,
    signal: crossbeam_channel::Sender<()>,
) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || loop {
        match inbox.recv_timeout(Duration::from_secs(1)) {
            Ok(ev) => {
                if tx.send(ev).is_err() {
                    return;
                }
                let _ = signal.try_send(());
            }
            Err(flotilla_net::RecvError::Timeout) => {}
            Err(_) => return,
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the QUIC inbox thread {name}: {e}");
    }
}

/// Hands `ev` to `sink` when it is a frame that decodes; returns the event otherwise (a
/// malformed frame is queued, decoded again and reported by `recv_timeout`).
fn to_sink(sink: &ItemsSink, limits: DecodeLimits, ev: Event) -> Option<Event> {
    match ev {
        Event::Frame { from, payload, permit } | Event::Control { from, payload, permit } => {
            match decode_batch(&payload, limits) {
                Ok(items) => {
                    sink(from, items, InboundHold::new(permit));
                    None
                }
                Err(_) => Some(Event::Frame { from, payload, permit }),
            }
        }
        other => Some(other),
    }
}

/// Encodes and sends one batch on the message lane.
fn send_frame(ep: &Endpoint, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
    let bytes = encode_batch(items)?;
    ep.send(to, tag, bytes).map_err(net_err)
}

/// Encodes and sends one batch on the control lane (the message lane when it is larger
/// than the control lane takes).
fn send_control_frame(ep: &Endpoint, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
    let bytes = encode_batch(items)?;
    match ep.send_control(to, tag, bytes.clone()) {
        // Above the control lane's limit (a huge heartbeat round): the data lane.
        Err(flotilla_net::SendError::TooLarge { .. }) => ep.send(to, tag, bytes).map_err(net_err),
        r => r.map_err(net_err),
    }
}

/// The workers' handle to the endpoint ([`Transport::sender`]).
struct QuicSender(std::sync::Arc<Endpoint>);

impl TransportSender for QuicSender {
    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        send_frame(&self.0, to, tag, items)
    }

    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        send_control_frame(&self.0, to, tag, items)
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        // The endpoint (which the embedder may keep) hands frames to the runtime no
        // longer: the sink holds its mailboxes.
        if self.hooked {
            self.ep.set_frame_hook(None);
        }
    }
}

fn unix_secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
}

impl TransportStatsSource for Endpoint {
    fn transport_stats(&self) -> TransportStats {
        let s = self.stats();
        TransportStats {
            cert_not_after_unix: unix_secs(s.cert_not_after),
            peer_cert_not_after_min_unix: unix_secs(s.peer_cert_not_after_min),
            handshakes_refused: s.handshakes_refused,
            policy_refused: s.policy_refused,
            inbound_bytes: s.inbound_bytes,
            inbound_bytes_peer_max: s.inbound_bytes_peer_max,
            control_inbound_bytes: s.control_inbound_bytes,
            inbound_waits: s.inbound_waits,
        }
    }
}

fn net_err(e: flotilla_net::SendError) -> TransportError {
    match e {
        flotilla_net::SendError::QueueFull { to, tag } => TransportError::QueueFull { to, tag },
        flotilla_net::SendError::TooLarge { tag, len, .. } => TransportError::TooLarge { tag, len },
        flotilla_net::SendError::InvalidPeer { to } => TransportError::InvalidPeer { to },
        other => TransportError::Other(other.to_string()),
    }
}

impl Transport for QuicTransport {
    fn node_id(&self) -> NodeId {
        self.ep.node_id()
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        send_frame(&self.ep, to, tag, items)
    }

    fn send_control(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        send_control_frame(&self.ep, to, tag, items)
    }

    fn sender(&self) -> Option<std::sync::Arc<dyn TransportSender>> {
        Some(std::sync::Arc::new(QuicSender(self.ep.clone())))
    }

    fn set_items_sink(&mut self, sink: ItemsSink) -> bool {
        let limits = self.limits;
        self.ep.set_frame_hook(Some(std::sync::Arc::new(move |ev| to_sink(&sink, limits, ev))));
        self.hooked = true;
        true
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        mut chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        let limit = self.ep.bulk_chunk_size();
        let encode = move |msg: Message| -> Result<bytes::Bytes, TransportError> {
            if !matches!(msg.body, MessageBody::SnapshotChunk(_)) {
                return Err(TransportError::NotAChunk);
            }
            let c = encode_batch(&[WireItem::Msg { group, msg }])?;
            if c.len() > limit {
                return Err(TransportError::TooLarge { tag, len: c.len() });
            }
            Ok(c)
        };
        // The first chunk is checked now: refused at once rather than failing the stream
        // later with no cause.
        let first = match chunks.next() {
            Some(Ok(m)) => Some(encode(m)?),
            Some(Err(e)) => {
                tracing::warn!("snapshot for node {to} unreadable: {e}");
                None
            }
            None => None,
        };
        let bulk = self.ep.open_bulk(to, tag).map_err(net_err)?;
        let done = self.done_tx.clone();
        let signal = self.sig_tx.clone();
        std::thread::Builder::new()
            .name("flotilla-snapshot-send".into())
            .spawn(move || {
                let mut ok = first.is_some();
                if let Some(c) = first {
                    ok = bulk.send_chunk(c).is_ok();
                }
                while ok {
                    let Some(next) = chunks.next() else { break };
                    ok = match next
                        .map_err(|e| e.to_string())
                        .and_then(|m| encode(m).map_err(|e| e.to_string()))
                    {
                        Ok(c) => bulk.send_chunk(c).is_ok(),
                        Err(e) => {
                            tracing::warn!("snapshot stream to node {to} failed: {e}");
                            false
                        }
                    };
                }
                let ok = ok && bulk.finish().is_ok();
                let _ = done.send(TransportEvent::SnapshotSent { to, tag, ok });
                let _ = signal.try_send(());
            })
            .map_err(|_| TransportError::InvalidPeer { to })?;
        Ok(())
    }

    fn event_signal(&self) -> Option<crossbeam_channel::Receiver<()>> {
        Some(self.sig.clone())
    }

    fn stats_source(&self) -> Option<std::sync::Arc<dyn TransportStatsSource>> {
        Some(self.ep.clone())
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(e) = self.done_rx.try_recv() {
                return Some(e);
            }
            let ctl = self.control.try_recv();
            let ev = match ctl {
                Ok(ev) => ev,
                Err(c) => match self.events.try_recv() {
                    Ok(ev) => ev,
                    Err(e) => {
                        let (c_open, e_open) = (!c.is_disconnected(), !e.is_disconnected());
                        if timeout.is_zero() || !(c_open || e_open) {
                            return None;
                        }
                        let left = deadline.checked_duration_since(std::time::Instant::now())?;
                        // Short slices so snapshot completions are not held behind a long
                        // wait; a closed queue is not waited on (it would be always ready).
                        let mut sel = crossbeam_channel::Select::new();
                        if c_open {
                            sel.recv(&self.control);
                        }
                        if e_open {
                            sel.recv(&self.events);
                        }
                        let _ = sel.ready_timeout(left.min(Duration::from_millis(20)));
                        continue;
                    }
                },
            };
            match ev {
                Event::Frame { from, payload, permit } | Event::Control { from, payload, permit } => {
                    return Some(self.decode(from, &payload, permit))
                }
                Event::BulkChunk { from, payload, permit, .. } => {
                    return Some(self.decode(from, &payload, permit))
                }
                Event::BulkEnd { .. } | Event::BulkAborted { .. } => {}
                Event::PeerUp { node, incarnation } => {
                    return Some(TransportEvent::PeerUp { node, incarnation })
                }
                Event::PeerDown { node, .. } => return Some(TransportEvent::PeerDown { node }),
                Event::Dropped { to, tags, .. } => return Some(TransportEvent::Dropped { to, tags }),
                // Events of a newer transport this adapter does not know: nothing to do.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_expiry_reaches_the_engine_through_the_stats_source() {
        let ca = flotilla_net::ClusterCa::generate().unwrap();
        let n = ca.issue_node_valid_for(1, Duration::from_secs(86_400)).unwrap();
        let id = flotilla_net::NodeIdentity::from_pem(&ca.pem().cert_pem, &n.cert_pem, &n.key_pem).unwrap();
        let (ep, inbox) = Endpoint::start(flotilla_net::NetConfig::new(1).validate().unwrap(), &id).unwrap();
        let t = QuicTransport::new(ep, inbox, DecodeLimits::default());
        let s = t.stats_source().unwrap().transport_stats();
        let now = unix_secs(Some(SystemTime::now()));
        assert!(s.cert_not_after_unix > now + 86_000 && s.cert_not_after_unix <= now + 86_400, "{s:?}");
        assert_eq!(s.peer_cert_not_after_min_unix, 0, "no peer connected");
    }
}
