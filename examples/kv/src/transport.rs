//! The node's QUIC transport: the engine's [`Transport`] over a `flotilla-net` endpoint
//! that the node keeps a handle to, so addresses learnt from the meta group's log reach
//! the endpoint while the engine runs.
//!
//! Same mapping as the engine's `QuicTransport` (whose endpoint cannot be reached once the
//! engine owns it); owns nothing else. Never interprets messages beyond the codec.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use flotilla_engine::raft::{Message, MessageBody};
use flotilla_engine::transport::codec::{decode_batch, encode_batch};
use flotilla_engine::transport::{DecodeLimits, Transport, TransportError, TransportEvent, WireItem};
use flotilla_net::{Endpoint, Event, Inbox};

/// [`Transport`] over a shared endpoint.
pub struct SharedQuic {
    ep: Arc<Endpoint>,
    inbox: Inbox,
    limits: DecodeLimits,
    done_tx: mpsc::Sender<TransportEvent>,
    done_rx: mpsc::Receiver<TransportEvent>,
}

impl SharedQuic {
    /// Wraps a started endpoint (shared with the caller) and its inbox.
    pub fn new(ep: Arc<Endpoint>, inbox: Inbox) -> SharedQuic {
        let (done_tx, done_rx) = mpsc::channel();
        SharedQuic { ep, inbox, limits: DecodeLimits::default(), done_tx, done_rx }
    }

    fn decode(&self, from: u64, bytes: &bytes::Bytes) -> TransportEvent {
        match decode_batch(bytes, self.limits) {
            Ok(items) => TransportEvent::Items { from, items },
            Err(error) => TransportEvent::Malformed { from, error },
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

impl Transport for SharedQuic {
    fn node_id(&self) -> u64 {
        self.ep.node_id()
    }

    fn send(&self, to: u64, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        let bytes = encode_batch(items)?;
        self.ep.send(to, tag, bytes).map_err(net_err)
    }

    fn send_snapshot(
        &self,
        to: u64,
        tag: u64,
        group: u64,
        chunks: Vec<Message>,
    ) -> Result<(), TransportError> {
        if chunks.iter().any(|m| !matches!(m.body, MessageBody::SnapshotChunk(_))) {
            return Err(TransportError::NotAChunk);
        }
        let encoded: Vec<bytes::Bytes> = chunks
            .into_iter()
            .map(|msg| encode_batch(&[WireItem::Msg { group, msg }]))
            .collect::<Result<_, _>>()?;
        if let Some(c) = encoded.iter().find(|c| c.len() > self.ep.bulk_chunk_size()) {
            return Err(TransportError::TooLarge { tag, len: c.len() });
        }
        let bulk = self.ep.open_bulk(to, tag).map_err(net_err)?;
        let done = self.done_tx.clone();
        std::thread::Builder::new()
            .name("kv-snapshot-send".into())
            .spawn(move || {
                let ok = encoded.into_iter().all(|c| bulk.send_chunk(c).is_ok()) && bulk.finish().is_ok();
                let _ = done.send(TransportEvent::SnapshotSent { to, tag, ok });
            })
            .map_err(|_| TransportError::InvalidPeer { to })?;
        Ok(())
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(e) = self.done_rx.try_recv() {
                return Some(e);
            }
            let ev = if timeout.is_zero() {
                self.inbox.try_recv()?
            } else {
                let left = deadline.checked_duration_since(std::time::Instant::now())?;
                match self.inbox.recv_timeout(left.min(Duration::from_millis(20))) {
                    Ok(ev) => ev,
                    Err(flotilla_net::RecvError::Timeout) => continue,
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
