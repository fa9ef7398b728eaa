//! [`Ctx`]: the state the endpoint handle and its tasks (peers, connections, bulk
//! streams, the acceptor) share: configuration, identity and its TLS configurations (both
//! replaced by a reload), the admission policy and caps, the QUIC endpoint, the event
//! channels, the counters and the registry of peers; and [`PeerHandle`], the shared half of
//! one peer (its address, its bounded send queues of the message and control lanes, its
//! inbound byte budgets, its live connection), with [`Incoming`], what the accept path
//! hands to a peer, and [`SendError`], what the queue answers.
//!
//! Owns these shared values and the send queue's admission (bounded; a full queue is
//! reported, never grown). Never runs a task, dials, reads or writes a connection: the
//! files that do (`peer.rs`, `conn.rs`, `bulk.rs`, `accept.rs`) reach each other only
//! through these values, and none of them imports the [`Endpoint`](crate::Endpoint).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::{mpsc, watch, Notify};

use crate::admission::Admissions;
use crate::budget::Budget;
use crate::config::ValidNetConfig;
use crate::event::{Event, NodeId};
use crate::frame::Hello;
use crate::tls::NodeIdentity;
use crate::verify::Policy;

/// Most bytes written to the message lane in one write.
const BATCH_BYTES: usize = 1 << 20;
/// Most frames written to the message lane in one write.
const BATCH_FRAMES: usize = 1024;

/// Why a frame or bulk stream was not accepted for sending. Each carries the caller's tag.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The peer's queue is at its frame or byte limit: back off, or treat the frame as
    /// dropped.
    #[error("send queue to node {to} is full (frame {tag} not queued)")]
    QueueFull {
        /// The destination.
        to: NodeId,
        /// The refused frame's tag.
        tag: u64,
    },
    /// The payload exceeds `max_frame_size`.
    #[error("frame {tag} of {len} bytes exceeds max_frame_size {max}")]
    TooLarge {
        /// The refused frame's tag.
        tag: u64,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Node id 0 or this node's own id.
    #[error("invalid destination node {to}")]
    InvalidPeer {
        /// The destination given.
        to: NodeId,
    },
}

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: Counter,
    pub refused: Counter,
    pub duplicates: Counter,
    pub frames_sent: Counter,
    pub bytes_sent: Counter,
    pub frames_received: Counter,
    pub frames_dropped: Counter,
    pub protocol_errors: Counter,
    pub retries: Counter,
    pub handshakes_refused: Counter,
    pub claims_refused: Counter,
}

/// A time as whole seconds since the Unix epoch, 0 for none (for an atomic).
pub(crate) fn to_secs(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs().max(1)).unwrap_or(0)
}

/// The inverse of [`to_secs`].
pub(crate) fn from_secs(s: u64) -> Option<SystemTime> {
    (s != 0).then(|| UNIX_EPOCH + Duration::from_secs(s))
}

/// The TLS state a reload replaces: the identity (with the files it came from), the client
/// configuration new dials use (the server one lives in the quinn endpoint), and the own
/// certificate's expiry.
pub(crate) struct TlsState {
    pub identity: NodeIdentity,
    pub client: quinn::ClientConfig,
    pub not_after: Option<SystemTime>,
}

/// State shared by the endpoint handle and its tasks.
pub(crate) struct Ctx {
    pub cfg: ValidNetConfig,
    pub me: NodeId,
    pub incarnation: u64,
    pub endpoint: quinn::Endpoint,
    /// The identity and client configuration, replaced whole by a reload.
    pub tls: RwLock<TlsState>,
    /// The allow-list and certificate profile, shared by every TLS configuration.
    pub policy: Arc<Policy>,
    /// The caps on inbound connections in admission.
    pub admissions: Arc<Admissions>,
    pub events: mpsc::Sender<Event>,
    /// Control-lane frames: a separate channel the inbox reads first.
    pub control_events: mpsc::Sender<Event>,
    /// Bulk-lane events: a separate small channel (see [`Inbox`](crate::Inbox)).
    pub bulk_events: mpsc::Sender<Event>,
    pub stats: Counters,
    /// The registry of peers (see `peer::handle`).
    pub peers: Mutex<HashMap<NodeId, Arc<PeerHandle>>>,
    /// The transport's runtime, where peer tasks and bulk streams are spawned.
    pub rt: tokio::runtime::Handle,
    /// The embedder's frame hook, if set (`Endpoint::set_frame_hook`).
    pub frame_hook: RwLock<Option<crate::event::FrameHook>>,
}

/// An inbound connection whose TLS identity and hello were checked, waiting for the peer
/// task to keep or refuse it.
pub(crate) struct Incoming {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub hello: Hello,
    /// When the peer's certificate expires ([`to_secs`]).
    pub cert_not_after: u64,
}

#[derive(Default)]
struct SendQueue {
    items: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// The shared half of a peer: its address, its send queue, and its live connection.
pub(crate) struct PeerHandle {
    pub node: NodeId,
    pub addr: Mutex<Option<SocketAddr>>,
    queue: Mutex<SendQueue>,
    /// The control lane's send queue (same bounds as the message lane's).
    control: Mutex<SendQueue>,
    /// Wakes the peer task (work was queued).
    pub wake: Notify,
    /// Wakes the control lane's writer (control frames were queued).
    pub control_wake: Notify,
    /// Bytes of this peer's message-lane frames and bulk chunks held here
    /// (`peer_inbound_bytes`). Kept across connections: a new connection does not get a
    /// fresh budget while the old one's frames are still held.
    pub inbound: Budget,
    /// Bytes of this peer's control-lane frames held here (`control_inbound_bytes`).
    pub control_inbound: Budget,
    /// Inbound connections claiming this node, handed over by the accept path.
    pub incoming: mpsc::Sender<Incoming>,
    /// The live connection, if any, for bulk streams.
    pub conn: watch::Sender<Option<quinn::Connection>>,
    /// Bulk streams waiting for a connection (makes the task dial with an empty queue).
    pub bulk_waiters: AtomicUsize,
    /// When the certificate of the live connection's peer expires ([`to_secs`]; 0: none).
    pub cert_not_after: AtomicU64,
}

/// Appends a frame to a send queue within its bounds.
fn push(
    q: &mut SendQueue,
    cfg: &ValidNetConfig,
    to: NodeId,
    tag: u64,
    payload: Bytes,
) -> Result<(), SendError> {
    if q.items.len() >= cfg.queue_frames || q.bytes + payload.len() > cfg.queue_bytes {
        return Err(SendError::QueueFull { to, tag });
    }
    q.bytes += payload.len();
    q.items.push_back((tag, payload));
    Ok(())
}

/// Takes up to one batch (`BATCH_FRAMES`, `BATCH_BYTES`) from the front of a send queue.
fn take(q: &mut SendQueue) -> Vec<(u64, Bytes)> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some((_, p)) = q.items.front() {
        if !out.is_empty() && (out.len() >= BATCH_FRAMES || bytes + p.len() > BATCH_BYTES) {
            break;
        }
        bytes += p.len();
        if let Some(item) = q.items.pop_front() {
            out.push(item);
        }
    }
    q.bytes -= bytes;
    out
}

impl Ctx {
    /// The client configuration new dials use.
    pub(crate) fn client_config(&self) -> quinn::ClientConfig {
        // Replaced whole by a reload: consistent even after a panic elsewhere.
        self.tls.read().unwrap_or_else(|e| e.into_inner()).client.clone()
    }
}

impl PeerHandle {
    pub(crate) fn new(node: NodeId, cfg: &ValidNetConfig) -> (PeerHandle, mpsc::Receiver<Incoming>) {
        // One inbound connection waits for the task at most: the accept path refuses further
        // claims of this node while one waits (see `accept.rs`).
        let (tx, rx) = mpsc::channel(1);
        let (conn, _) = watch::channel(None);
        let h = PeerHandle {
            node,
            addr: Mutex::new(None),
            queue: Mutex::new(SendQueue::default()),
            control: Mutex::new(SendQueue::default()),
            wake: Notify::new(),
            control_wake: Notify::new(),
            inbound: Budget::new(cfg.peer_inbound_bytes),
            control_inbound: Budget::new(cfg.control_inbound_bytes),
            incoming: tx,
            conn,
            bulk_waiters: AtomicUsize::new(0),
            cert_not_after: AtomicU64::new(0),
        };
        (h, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendQueue> {
        // The queue is a plain VecDeque updated in single calls: still consistent after a
        // panic elsewhere.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_control(&self) -> std::sync::MutexGuard<'_, SendQueue> {
        // As `lock`.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enqueue(&self, cfg: &ValidNetConfig, tag: u64, payload: Bytes) -> Result<(), SendError> {
        push(&mut self.lock(), cfg, self.node, tag, payload)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a control-lane frame; wakes the control writer, and the peer task (to dial).
    pub(crate) fn enqueue_control(
        &self,
        cfg: &ValidNetConfig,
        tag: u64,
        payload: Bytes,
    ) -> Result<(), SendError> {
        push(&mut self.lock_control(), cfg, self.node, tag, payload)?;
        self.control_wake.notify_one();
        self.wake.notify_one();
        Ok(())
    }

    /// Takes up to one batch from the control queue.
    pub(crate) fn take_control_batch(&self) -> Vec<(u64, Bytes)> {
        take(&mut self.lock_control())
    }

    /// Empties the control queue; the tags of what it held.
    pub(crate) fn drain_control(&self) -> Vec<u64> {
        let mut q = self.lock_control();
        q.bytes = 0;
        q.items.drain(..).map(|(t, _)| t).collect()
    }

    pub(crate) fn queued(&self) -> (usize, usize) {
        let q = self.lock();
        (q.items.len(), q.bytes)
    }

    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) fn has_work(&self) -> bool {
        !self.lock().items.is_empty()
            || !self.lock_control().items.is_empty()
            || self.bulk_waiters.load(Ordering::Acquire) > 0
    }

    /// Takes up to one batch from the queue.
    pub(crate) fn take_batch(&self) -> Vec<(u64, Bytes)> {
        take(&mut self.lock())
    }

    pub(crate) fn drain(&self) -> Vec<u64> {
        let mut q = self.lock();
        q.bytes = 0;
        q.items.drain(..).map(|(t, _)| t).collect()
    }
}
