//! The adapter that implements [`Transport`] over `flotilla-net` (QUIC, mutual TLS).
//!
//! Owns the mapping between the engine's batches and the transport's frames: a batch is
//! encoded into one message-lane frame; a snapshot's chunks each become one bulk-lane chunk
//! on their own stream, sent from a helper thread so the caller never blocks; transport
//! events become [`TransportEvent`]s. A helper thread blocks on the inbox and forwards its
//! events, setting the event signal, so the runtime sleeps until something arrives. Also
//! passes the embedder's admission controls through to the endpoint (the node allow-list,
//! a certificate reload) and its certificate and admission figures to the engine's
//! metrics. Never interprets messages beyond the codec.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flotilla_net::{Endpoint, Event, Inbox, ReloadError};

use super::codec::{decode_batch, encode_batch, DecodeLimits, WireItem};
use super::{
    SnapshotChunks, Transport, TransportError, TransportEvent, TransportStats, TransportStatsSource,
};
use crate::raft::message::{Message, MessageBody};
use crate::raft::types::NodeId;

/// [`Transport`] over a running [`flotilla_net::Endpoint`].
pub struct QuicTransport {
    ep: std::sync::Arc<Endpoint>,
    /// The inbox's events, forwarded by a helper thread that blocks on the inbox and sets
    /// `sig` for each (see `Transport::event_signal`).
    events: crossbeam_channel::Receiver<Event>,
    sig: crossbeam_channel::Receiver<()>,
    sig_tx: crossbeam_channel::Sender<()>,
    limits: DecodeLimits,
    done_tx: mpsc::Sender<TransportEvent>,
    done_rx: mpsc::Receiver<TransportEvent>,
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
        let (ev_tx, events) = crossbeam_channel::unbounded();
        let signal = sig_tx.clone();
        let mut inbox = inbox;
        // Ends when the endpoint shuts down (the inbox closes) or this transport is gone.
        let spawned = std::thread::Builder::new().name("flotilla-quic-inbox".into()).spawn(move || loop {
            match inbox.recv_timeout(Duration::from_secs(1)) {
                Ok(ev) => {
                    if ev_tx.send(ev).is_err() {
                        return;
                    }
                    let _ = signal.try_send(());
                }
                Err(flotilla_net::RecvError::Timeout) => {}
                Err(_) => return,
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the QUIC inbox thread: {e}");
        }
        QuicTransport { ep, events, sig, sig_tx, limits, done_tx, done_rx }
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

    fn decode(&self, from: NodeId, bytes: &bytes::Bytes) -> TransportEvent {
        match decode_batch(bytes, self.limits) {
            Ok(items) => TransportEvent::Items { from, items },
            Err(error) => TransportEvent::Malformed { from, error },
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
        }
    }
}

fn net_err(e: flotilla_net::SendError) -> TransportError {
    match e {
        flotilla_net::SendError::QueueFull { to, tag } => TransportError::QueueFull { to, tag },
        flotilla_net::SendError::TooLarge { tag, len, .. } => TransportError::TooLarge { tag, len },
        flotilla_net::SendError::InvalidPeer { to } => TransportError::InvalidPeer { to },
    }
}

impl Transport for QuicTransport {
    fn node_id(&self) -> NodeId {
        self.ep.node_id()
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        let bytes = encode_batch(items)?;
        self.ep.send(to, tag, bytes).map_err(net_err)
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
            let ev = if timeout.is_zero() {
                self.events.try_recv().ok()?
            } else {
                let left = deadline.checked_duration_since(std::time::Instant::now())?;
                // Short slices so snapshot completions are not held behind a long wait.
                match self.events.recv_timeout(left.min(Duration::from_millis(20))) {
                    Ok(ev) => ev,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return None,
                }
            };
            match ev {
                Event::Frame { from, payload } => return Some(self.decode(from, &payload)),
                Event::BulkChunk { from, payload, .. } => return Some(self.decode(from, &payload)),
                Event::BulkEnd { .. } | Event::BulkAborted { .. } => {}
                Event::PeerUp { node, incarnation } => {
                    return Some(TransportEvent::PeerUp { node, incarnation })
                }
                Event::PeerDown { node, .. } => return Some(TransportEvent::PeerDown { node }),
                Event::Dropped { to, tags, .. } => return Some(TransportEvent::Dropped { to, tags }),
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
