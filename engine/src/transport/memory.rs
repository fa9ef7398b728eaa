//! An in-memory [`Transport`] for tests and the simulator: nodes of one [`MemoryNetwork`]
//! exchange encoded batches through bounded channels.
//!
//! Owns the network's links (cut/heal), its bounded per-node queues and per-pair frame
//! counters. Batches go through the real codec (encoded on send, decoded on receive) so
//! tests exercise it. Never touches sockets or threads.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::codec::{decode_batch, encode_batch, DecodeLimits, WireItem};
use super::{SnapshotChunks, Transport, TransportError, TransportEvent};
use crate::raft::message::MessageBody;
use crate::raft::types::NodeId;

enum Delivery {
    Frame { from: NodeId, bytes: Bytes },
    Event(TransportEvent),
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<NodeId, SyncSender<Delivery>>,
    cut: HashSet<(NodeId, NodeId)>,
    frames: HashMap<(NodeId, NodeId), u64>,
    /// Joins of each node so far: its incarnation.
    incarnations: HashMap<NodeId, u64>,
    /// Nodes whose transport was dropped (already reported down).
    gone: HashSet<NodeId>,
    /// Each node's event signal (see `Transport::event_signal`).
    signals: HashMap<NodeId, crossbeam_channel::Sender<()>>,
}

impl Inner {
    /// Sets node `to`'s event signal (something was queued for it).
    fn signal(&self, to: NodeId) {
        if let Some(s) = self.signals.get(&to) {
            let _ = s.try_send(());
        }
    }
}
/// A set of in-memory nodes.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryNetwork").finish_non_exhaustive()
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> MemoryNetwork {
        MemoryNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a single map operation: consistent even after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds node `id` with an inbound queue of `capacity` batches (at least 1); replaces a
    /// node of the same id (a restart: the others see it down, then up with a new
    /// incarnation).
    pub fn join(&self, id: NodeId, capacity: usize) -> MemoryTransport {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let mut inner = self.lock();
        let reported = inner.gone.remove(&id);
        let restarted = inner.nodes.insert(id, tx).is_some() && !reported;
        let incarnation = {
            let n = inner.incarnations.entry(id).or_default();
            *n += 1;
            *n
        };
        let (sig_tx, sig) = crossbeam_channel::bounded(1);
        inner.signals.insert(id, sig_tx);
        for (&other, q) in inner.nodes.iter() {
            if other != id {
                if restarted {
                    let _ = q.try_send(Delivery::Event(TransportEvent::PeerDown { node: id }));
                }
                let _ = q.try_send(Delivery::Event(TransportEvent::PeerUp { node: id, incarnation }));
                inner.signal(other);
            }
        }
        MemoryTransport { id, incarnation, net: self.clone(), rx, sig, limits: DecodeLimits::default() }
    }

    /// Cuts the link between `a` and `b`: batches between them are dropped and reported.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.lock().cut.insert(pair(a, b));
    }

    /// Heals the link between `a` and `b`.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        self.lock().cut.remove(&pair(a, b));
    }

    /// Batches sent from `from` to `to` so far (each is one frame on a real transport).
    pub fn frames(&self, from: NodeId, to: NodeId) -> u64 {
        self.lock().frames.get(&(from, to)).copied().unwrap_or(0)
    }
}

/// One node's end of a [`MemoryNetwork`].
pub struct MemoryTransport {
    id: NodeId,
    incarnation: u64,
    net: MemoryNetwork,
    rx: Receiver<Delivery>,
    sig: crossbeam_channel::Receiver<()>,
    limits: DecodeLimits,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport").field("id", &self.id).finish_non_exhaustive()
    }
}

impl MemoryTransport {
    fn deliver(&self, to: NodeId, tag: u64, bytes: Bytes) -> Result<(), TransportError> {
        let mut inner = self.net.lock();
        let own = inner.nodes.get(&self.id).cloned();
        let me = self.id;
        let report = |inner: &Inner, own: Option<SyncSender<Delivery>>| {
            if let Some(own) = own {
                let _ = own.try_send(Delivery::Event(TransportEvent::Dropped { to, tags: vec![tag] }));
                inner.signal(me);
            }
        };
        if inner.cut.contains(&pair(self.id, to)) {
            report(&inner, own);
            return Ok(());
        }
        let Some(q) = inner.nodes.get(&to).cloned() else {
            return Err(TransportError::InvalidPeer { to });
        };
        match q.try_send(Delivery::Frame { from: self.id, bytes }) {
            Ok(()) => {
                inner.signal(to);
                *inner.frames.entry((self.id, to)).or_default() += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(TransportError::QueueFull { to, tag }),
            Err(TrySendError::Disconnected(_)) => {
                report(&inner, own);
                Ok(())
            }
        }
    }
}

/// A node that leaves (its engine stopped) is reported down to the others, as a real
/// transport reports a lost connection, unless it already rejoined as a new incarnation.
impl Drop for MemoryTransport {
    fn drop(&mut self) {
        let mut inner = self.net.lock();
        if inner.incarnations.get(&self.id) != Some(&self.incarnation) {
            return;
        }
        inner.gone.insert(self.id);
        for (&other, q) in inner.nodes.iter() {
            if other != self.id {
                let _ = q.try_send(Delivery::Event(TransportEvent::PeerDown { node: self.id }));
                inner.signal(other);
            }
        }
    }
}

impl Transport for MemoryTransport {
    fn node_id(&self) -> NodeId {
        self.id
    }

    fn send(&self, to: NodeId, tag: u64, items: &[WireItem]) -> Result<(), TransportError> {
        if to == 0 || to == self.id {
            return Err(TransportError::InvalidPeer { to });
        }
        let bytes = encode_batch(items)?;
        self.deliver(to, tag, bytes)
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        tag: u64,
        group: u64,
        mut chunks: SnapshotChunks,
    ) -> Result<(), TransportError> {
        let mut first = chunks.next();
        if let Some(Ok(m)) = &first {
            if !matches!(m.body, MessageBody::SnapshotChunk(_)) {
                return Err(TransportError::NotAChunk);
            }
        }
        let mut ok = true;
        while let Some(next) = first.take().or_else(|| chunks.next()) {
            let sent = match next {
                Ok(msg) if matches!(msg.body, MessageBody::SnapshotChunk(_)) => {
                    encode_batch(&[WireItem::Msg { group, msg }]).map_err(TransportError::from)
                }
                Ok(_) => Err(TransportError::NotAChunk),
                Err(e) => {
                    tracing::warn!("snapshot chunk for node {to} unreadable: {e}");
                    Err(TransportError::NotAChunk)
                }
            }
            .and_then(|bytes| self.deliver(to, tag, bytes));
            if sent.is_err() {
                ok = false;
                break;
            }
        }
        let inner = self.net.lock();
        if let Some(own) = inner.nodes.get(&self.id) {
            let _ = own.try_send(Delivery::Event(TransportEvent::SnapshotSent { to, tag, ok }));
            inner.signal(self.id);
        }
        Ok(())
    }

    fn event_signal(&self) -> Option<crossbeam_channel::Receiver<()>> {
        Some(self.sig.clone())
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Option<TransportEvent> {
        match self.rx.recv_timeout(timeout).ok()? {
            Delivery::Event(e) => Some(e),
            Delivery::Frame { from, bytes } => Some(match decode_batch(&bytes, self.limits) {
                Ok(items) => TransportEvent::Items { from, items, hold: Default::default() },
                Err(error) => TransportEvent::Malformed { from, error },
            }),
        }
    }
}
