//! The transport endpoint: one QUIC endpoint (one UDP socket) per node on the transport's
//! own tokio runtime, and the synchronous API the engine's workers call (send, open a bulk
//! stream, set a peer's address, shut down) and the embedder's (the node allow-list,
//! certificate reload, stats).
//!
//! Owns the runtime, the accept loop, the checks of `send`'s arguments, and the closing of
//! a removed node's connection; the shared
//! context, the registry of peers and the per-peer send queues' admission live in
//! `shared.rs`. Never interprets payloads, and never blocks a caller: `send` only enqueues.
//! Nothing below it imports it: peers, connections, bulk streams and the acceptor reach
//! each other through `shared.rs`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::admission::Admissions;
use crate::bulk::{self, BulkSender};
use crate::config::ValidNetConfig;
use crate::event::{Inbox, NodeId};
use crate::peer;
use crate::shared::{from_secs, Counters, Ctx, TlsState};
use crate::tls::{NodeIdentity, TlsError};
use crate::verify::Policy;

pub use crate::shared::SendError;

/// Why certificates could not be reloaded ([`Endpoint::reload_certs`]). The endpoint keeps
/// its previous certificates.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The files could not be read or parsed, or the TLS configuration not built.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Why an endpoint could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The runtime could not start or the socket could not be bound.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of one endpoint since it started, and a few gauges (marked so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections installed (dialed or accepted and kept), one per pair unless a
    /// connection was lost and re-established.
    pub connections: u64,
    /// Inbound connections refused after admission started (TLS failure, bad hello,
    /// identity mismatch, node not allowed).
    pub refused: u64,
    /// Stateless Retry packets sent to connection attempts from unvalidated addresses
    /// (`address_validation`).
    pub retries: u64,
    /// Connection attempts refused at once because `max_handshakes` or
    /// `max_handshakes_per_address` admissions were in progress.
    pub handshakes_refused: u64,
    /// Gauge: inbound connections in admission now.
    pub handshakes_in_progress: u64,
    /// Gauge: the most inbound connections in admission at once so far.
    pub handshakes_peak: u64,
    /// Inbound connections refused because another connection claiming the same node
    /// was already waiting to be admitted.
    pub claims_refused: u64,
    /// Handshakes and connections refused or closed by the certificate policy: a peer
    /// certificate without the right key usage, or a node off the allow-list.
    pub policy_refused: u64,
    /// Gauge: when this node's own certificate expires (`None`: unreadable).
    pub cert_not_after: Option<SystemTime>,
    /// Gauge: the earliest expiry among the certificates of the peers connected now.
    pub peer_cert_not_after_min: Option<SystemTime>,
    /// Duplicate connections of a pair closed by the tie-break.
    pub duplicates: u64,
    /// Message-lane frames written to a connection.
    pub frames_sent: u64,
    /// Message-lane bytes written (payload and header).
    pub bytes_sent: u64,
    /// Frames received (message and control lanes).
    pub frames_received: u64,
    /// Frames reported dropped.
    pub frames_dropped: u64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: u64,
    /// Gauge: bytes of message-lane frames and bulk chunks held now, all peers together
    /// (each peer's at most `peer_inbound_bytes`).
    pub inbound_bytes: u64,
    /// Gauge: the most such bytes one peer holds now.
    pub inbound_bytes_peer_max: u64,
    /// Gauge: bytes of control-lane frames held now, all peers together (each peer's at
    /// most `control_inbound_bytes`).
    pub control_inbound_bytes: u64,
    /// Times a reader found its peer's budget (either lane) spent and stopped reading
    /// until bytes were released.
    pub inbound_waits: u64,
}

/// One peer's inbound budgets now ([`Endpoint::peer_inbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerInbound {
    /// Bytes of its message-lane frames and bulk chunks held (at most
    /// `peer_inbound_bytes`).
    pub bytes: u64,
    /// Bytes of its control-lane frames held (at most `control_inbound_bytes`).
    pub control_bytes: u64,
    /// Times its readers waited for budget.
    pub waits: u64,
}

/// A running transport endpoint. Dropping it stops its runtime.
pub struct Endpoint {
    ctx: Arc<Ctx>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("node", &self.ctx.me).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Starts the endpoint: its runtime, its UDP socket on `cfg.listen`, its accept loop.
    /// Returns the handle and the inbox of events.
    pub fn start(cfg: ValidNetConfig, identity: &NodeIdentity) -> Result<(Endpoint, Inbox), StartError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .thread_name(format!("flotilla-net-{}", cfg.node_id))
            .enable_all()
            .build()?;
        let policy = Arc::new(Policy::default());
        let server = identity.server_config(&cfg, &policy)?;
        let client = identity.client_config(&cfg, &policy)?;
        let endpoint = {
            let _guard = rt.enter();
            let mut epc = quinn::EndpointConfig::default();
            // Validation bounds max_udp_payload to quinn's own range, 1200 ..= 65527.
            epc.max_udp_payload_size(cfg.max_udp_payload)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let sock = std::net::UdpSocket::bind(cfg.listen)?;
            let state = quinn::udp::UdpSocketState::new((&sock).into())?;
            // Best effort: the kernel clamps to its maximum, and a smaller buffer only costs
            // throughput under bursts.
            let _ = state.set_recv_buffer_size((&sock).into(), cfg.udp_buffer_bytes);
            let _ = state.set_send_buffer_size((&sock).into(), cfg.udp_buffer_bytes);
            let runtime =
                quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime"))?;
            quinn::Endpoint::new(epc, Some(server), sock, runtime)?
        };
        let incarnation = cfg.incarnation.unwrap_or_else(|| {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
            (nanos as u64).max(1)
        });
        let (events, rx) = mpsc::channel(cfg.inbox_capacity);
        let (control_events, control_rx) = mpsc::channel((cfg.inbox_capacity / 16).max(16));
        // Validation bounds max_bulk_streams to 1 ..= 1024.
        let (bulk_events, bulk_rx) = mpsc::channel(2 * cfg.max_bulk_streams as usize);
        let ctx = Arc::new(Ctx {
            me: cfg.node_id,
            incarnation,
            endpoint,
            tls: RwLock::new(TlsState {
                identity: identity.clone(),
                client,
                not_after: identity.not_after(),
            }),
            policy,
            admissions: Arc::new(Admissions::new(cfg.max_handshakes, cfg.max_handshakes_per_address)),
            events,
            control_events,
            bulk_events,
            stats: Counters::default(),
            peers: Mutex::new(HashMap::new()),
            rt: rt.handle().clone(),
            frame_hook: RwLock::new(None),
            cfg,
        });
        let acceptor = ctx.clone();
        rt.spawn(async move {
            while let Some(incoming) = acceptor.endpoint.accept().await {
                crate::accept::on_incoming(&acceptor, incoming);
            }
        });
        Ok((Endpoint { ctx, rt: Some(rt) }, Inbox::new(control_rx, rx, bulk_rx)?))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.ctx.me
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.ctx.incarnation
    }

    /// The largest bulk chunk [`BulkSender::send_chunk`] accepts (`bulk_chunk_size`).
    pub fn bulk_chunk_size(&self) -> usize {
        self.ctx.cfg.bulk_chunk_size
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.ctx.endpoint.local_addr()
    }

    /// Sets (or changes) where node `node` is reached. Takes effect at the next dial.
    pub fn set_peer_addr(&self, node: NodeId, addr: SocketAddr) {
        if node == 0 || node == self.ctx.me {
            return;
        }
        let p = peer::handle(&self.ctx, node);
        *p.addr.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
    }

    /// Queues `payload` for node `to` on the message lane. Never blocks. `tag` is the
    /// caller's name for the frame: if the frame is later dropped, an [`Event::Dropped`](crate::Event::Dropped)
    /// names it. Frames to one peer are delivered in order.
    pub fn send(&self, to: NodeId, tag: u64, payload: Bytes) -> Result<(), SendError> {
        if to == 0 || to == self.ctx.me {
            return Err(SendError::InvalidPeer { to });
        }
        let max = self.ctx.cfg.max_frame_size;
        if payload.len() > max {
            return Err(SendError::TooLarge { tag, len: payload.len(), max });
        }
        peer::handle(&self.ctx, to).enqueue(&self.ctx.cfg, tag, payload)
    }

    /// Queues `payload` for node `to` on the control lane: a stream of its own at a higher
    /// priority than the message lane, written by its own task, and read at the receiver
    /// within its own budget (`control_inbound_bytes`, exempt from `peer_inbound_bytes`)
    /// and delivered first ([`Event::Control`](crate::Event::Control)). For the small
    /// messages that keep a cluster live (heartbeats, votes, their answers) so a flood
    /// of data cannot delay them. Never blocks. Refused as `send` is, and with `TooLarge`
    /// above `control_inbound_bytes` (or `max_frame_size`): send it on the message lane.
    /// Frames lost with a connection are reported as for `send`.
    pub fn send_control(&self, to: NodeId, tag: u64, payload: Bytes) -> Result<(), SendError> {
        if to == 0 || to == self.ctx.me {
            return Err(SendError::InvalidPeer { to });
        }
        let max = self.ctx.cfg.control_inbound_bytes.min(self.ctx.cfg.max_frame_size);
        if payload.len() > max {
            return Err(SendError::TooLarge { tag, len: payload.len(), max });
        }
        peer::handle(&self.ctx, to).enqueue_control(&self.ctx.cfg, tag, payload)
    }

    /// Node `node`'s inbound budgets now (`None`: no such peer known).
    pub fn peer_inbound(&self, node: NodeId) -> Option<PeerInbound> {
        let peers = self.ctx.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&node).map(|p| PeerInbound {
            bytes: p.inbound.in_use() as u64,
            control_bytes: p.control_inbound.in_use() as u64,
            waits: p.inbound.waits() + p.control_inbound.waits(),
        })
    }

    /// Frames and bytes queued for `to` and not yet written.
    pub fn queued(&self, to: NodeId) -> (usize, usize) {
        peer::handle(&self.ctx, to).queued()
    }

    /// Opens a bulk (snapshot) stream to `to`, on its own QUIC stream at a lower priority
    /// than the message lane. `tag` names it at the receiver and in errors.
    pub fn open_bulk(&self, to: NodeId, tag: u64) -> Result<BulkSender, SendError> {
        if to == 0 || to == self.ctx.me {
            return Err(SendError::InvalidPeer { to });
        }
        let peer = peer::handle(&self.ctx, to);
        Ok(bulk::open(&self.ctx, &self.ctx.rt, peer, tag))
    }

    /// Sets the nodes allowed to connect (both ways): `None` (the default) allows every
    /// node with a certificate of a trusted CA. A node off the list is refused during the
    /// TLS handshake (its certificate, however valid, fails verification), frames queued
    /// for it are dropped ([`DropReason::NotAllowed`](crate::DropReason::NotAllowed)), and
    /// its live connection is closed now. The embedder updates it as membership changes.
    pub fn set_allowed_nodes(&self, nodes: Option<HashSet<NodeId>>) {
        self.ctx.policy.set_allowed(nodes);
        let peers: Vec<_> =
            self.ctx.peers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for p in peers {
            if self.ctx.policy.allows(p.node) {
                continue;
            }
            if let Some(conn) = p.conn.borrow().clone() {
                self.ctx.policy.count_refusal();
                conn.close(crate::conn::CLOSE_NOT_ALLOWED.into(), b"node not allowed");
            }
        }
    }

    /// Sets (or with `None` removes) the hook every message-lane and control-lane frame
    /// is offered to as it is read, on the endpoint's runtime thread, before it is queued
    /// in the [`Inbox`]: a consumer that can take a frame right there (a
    /// non-blocking hand-off to its own queues) saves the hop through the inbox and a
    /// thread of its own. The hook returns the event to queue it as usual, or `None` when
    /// it took it (with its permit: the bytes stay charged until it drops it). It must
    /// not block.
    pub fn set_frame_hook(&self, hook: Option<crate::event::FrameHook>) {
        *self.ctx.frame_hook.write().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Re-reads the certificate files this endpoint's identity was read from
    /// ([`NodeIdentity::from_files`]): the CA bundle, the node certificate and its key.
    /// New connections, both ways, use them; live connections are kept. On error the
    /// previous certificates stay in use.
    pub fn reload_certs(&self) -> Result<(), ReloadError> {
        let identity = self.ctx.tls.read().unwrap_or_else(|e| e.into_inner()).identity.reread()?;
        self.set_identity(&identity)
    }

    /// Replaces this endpoint's identity (trusted CAs, certificate, key) for new connections,
    /// both ways; live connections are kept. On error the previous identity stays in use.
    pub fn set_identity(&self, identity: &NodeIdentity) -> Result<(), ReloadError> {
        let ctx = &self.ctx;
        let server = identity.server_config(&ctx.cfg, &ctx.policy)?;
        let client = identity.client_config(&ctx.cfg, &ctx.policy)?;
        let mut tls = ctx.tls.write().unwrap_or_else(|e| e.into_inner());
        ctx.endpoint.set_server_config(Some(server));
        *tls = TlsState { identity: identity.clone(), client, not_after: identity.not_after() };
        Ok(())
    }

    /// Counters since start, and gauges.
    pub fn stats(&self) -> Stats {
        let s = &self.ctx.stats;
        let (peer_min, inbound) = {
            let peers = self.ctx.peers.lock().unwrap_or_else(|e| e.into_inner());
            let min =
                peers.values().map(|p| p.cert_not_after.load(Ordering::Relaxed)).filter(|s| *s != 0).min();
            let mut inbound = [0u64; 4];
            for p in peers.values() {
                let held = p.inbound.in_use() as u64;
                inbound[0] += held;
                inbound[1] = inbound[1].max(held);
                inbound[2] += p.control_inbound.in_use() as u64;
                inbound[3] += p.inbound.waits() + p.control_inbound.waits();
            }
            (min, inbound)
        };
        Stats {
            connections: s.connections.get(),
            refused: s.refused.get(),
            duplicates: s.duplicates.get(),
            frames_sent: s.frames_sent.get(),
            bytes_sent: s.bytes_sent.get(),
            frames_received: s.frames_received.get(),
            frames_dropped: s.frames_dropped.get(),
            protocol_errors: s.protocol_errors.get(),
            retries: s.retries.get(),
            handshakes_refused: s.handshakes_refused.get(),
            handshakes_in_progress: self.ctx.admissions.in_progress() as u64,
            handshakes_peak: self.ctx.admissions.peak() as u64,
            claims_refused: s.claims_refused.get(),
            policy_refused: self.ctx.policy.refused(),
            cert_not_after: self.ctx.tls.read().unwrap_or_else(|e| e.into_inner()).not_after,
            peer_cert_not_after_min: peer_min.and_then(from_secs),
            inbound_bytes: inbound[0],
            inbound_bytes_peer_max: inbound[1],
            control_inbound_bytes: inbound[2],
            inbound_waits: inbound[3],
        }
    }

    /// Closes every connection and stops the runtime, waiting up to `grace` for the
    /// close to reach peers. Must not be called from inside an async context (it then
    /// stops the runtime in the background instead of waiting).
    pub fn shutdown(mut self, grace: Duration) {
        self.ctx.endpoint.close(crate::conn::CLOSE_NORMAL.into(), b"shutdown");
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                let ep = self.ctx.endpoint.clone();
                rt.block_on(async {
                    let _ = tokio::time::timeout(grace, ep.wait_idle()).await;
                });
                rt.shutdown_timeout(grace);
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            self.ctx.endpoint.close(crate::conn::CLOSE_NORMAL.into(), b"shutdown");
            rt.shutdown_background();
        }
    }
}
