//! Connection-level plumbing shared by the peer, bulk and accept tasks: reading one checked
//! frame from a QUIC stream, refusing a hello, the close codes, and the readers of the
//! message lane and of the control lane, which charge each frame to its peer's budget
//! before reading its payload.
//!
//! Owns [`ReadFrameError`] and [`Lane`]. Never decides which of two connections of a pair
//! survives: `peer.rs` does; never admits an inbound connection: `accept.rs` does.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::budget::charge;
use crate::event::Event;
use crate::frame::{self, Frame, FrameError, FrameKind, HelloReply, RejectReason, HEADER_LEN};
use crate::shared::{Ctx, PeerHandle};

/// QUIC application close code for a normal close.
pub(crate) const CLOSE_NORMAL: u32 = 0;
/// Close code when a connection loses the per-pair tie-break or is replaced.
pub(crate) const CLOSE_REPLACED: u32 = 1;
/// Close code for a protocol violation (malformed frame, unexpected kind).
pub(crate) const CLOSE_PROTOCOL: u32 = 2;
/// Close code of a connection whose node was removed from the allow-list.
pub(crate) const CLOSE_NOT_ALLOWED: u32 = 3;
/// Close codes `CLOSE_REJECT_BASE + reason` tell a dialer why its hello was refused.
pub(crate) const CLOSE_REJECT_BASE: u32 = 0x100;

/// Why a frame could not be read from a stream.
#[derive(Debug, Error)]
pub(crate) enum ReadFrameError {
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The stream ended or failed.
    #[error("stream: {0}")]
    Stream(#[from] quinn::ReadExactError),
}

/// Reads one frame: the header first, checked against `max` before anything is allocated,
/// then exactly the announced payload.
pub(crate) async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Frame, ReadFrameError> {
    let mut h = [0u8; HEADER_LEN];
    recv.read_exact(&mut h).await?;
    let header = frame::parse_header(&h, max)?;
    let mut payload = BytesMut::zeroed(header.len);
    recv.read_exact(&mut payload).await?;
    Ok(Frame { kind: header.kind, payload: payload.freeze() })
}

/// Refuses a hello: writes the reason, then closes with a code that carries it too.
pub(crate) async fn reject(conn: &quinn::Connection, send: &mut quinn::SendStream, reason: RejectReason) {
    let _ = send.write_all(&HelloReply::Reject(reason).encode()).await;
    let _ = send.finish();
    conn.close((CLOSE_REJECT_BASE + reason as u32).into(), b"rejected");
}

/// Which lane of a connection a reader serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The message lane (the connection's first bidirectional stream, after the hello):
    /// charged to `peer_inbound_bytes`, delivered as [`Event::Frame`].
    Message,
    /// The control lane (a unidirectional stream each way): charged to
    /// `control_inbound_bytes`, delivered as [`Event::Control`].
    Control,
}

/// Stream chunks taken from quinn per call: one lock of the connection and one flow-control
/// update for up to this many received STREAM frames (at most one datagram each). A reader
/// whose budget is spent holds at most these, read before it stopped: 16 datagrams beyond
/// the stream window (23 KB at 1452-byte datagrams, 1 MiB at the loopback MTU).
const CHUNKS_PER_READ: usize = 16;

/// A stream's bytes as they arrive: the chunks of the last read, from `next` on, with the
/// unread rest of the current one in `buf`.
struct Source {
    recv: quinn::RecvStream,
    buf: Bytes,
    chunks: Vec<Bytes>,
    next: usize,
    len: usize,
}

impl Source {
    fn new(recv: quinn::RecvStream) -> Source {
        Source { recv, buf: Bytes::new(), chunks: vec![Bytes::new(); CHUNKS_PER_READ], next: 0, len: 0 }
    }

    /// Makes `buf` non-empty; false once the stream ended or failed.
    async fn fill_buf(&mut self) -> bool {
        while self.buf.is_empty() {
            if self.next == self.len {
                match self.recv.read_chunks(&mut self.chunks).await {
                    Ok(Some(n)) => {
                        self.next = 0;
                        self.len = n;
                    }
                    Ok(None) | Err(_) => return false,
                }
            }
            // `next < len <= chunks.len()` here: a read returns at most `chunks.len()`.
            if let Some(c) = self.chunks.get_mut(self.next) {
                self.buf = std::mem::take(c);
            }
            self.next += 1;
        }
        true
    }

    /// Fills `out` completely; false if the stream ended or failed first.
    async fn fill(&mut self, out: &mut [u8]) -> bool {
        let mut have = 0;
        while have < out.len() {
            if !self.fill_buf().await {
                return false;
            }
            let take = (out.len() - have).min(self.buf.len());
            out[have..have + take].copy_from_slice(&self.buf[..take]);
            self.buf.advance(take);
            have += take;
        }
        true
    }
}

/// Reads one lane of peer `peer`'s connection and delivers its frames, in order, until the
/// stream or connection ends. Per frame: the header is read and checked (kind, maximum
/// size), the frame's charge is taken from the lane's budget of the peer, waiting while it
/// is spent (nothing more is read from the stream meanwhile, so QUIC flow control stops
/// the sender once the stream's window is full), then exactly the payload is read into a
/// buffer of its own (a frame never pins a larger receive buffer) and delivered with its
/// permit. A malformed or oversized frame closes the connection.
pub(crate) async fn read_lane(
    ctx: Arc<Ctx>,
    peer: Arc<PeerHandle>,
    conn: quinn::Connection,
    recv: quinn::RecvStream,
    lane: Lane,
) {
    let from = peer.node;
    let (budget, max, events) = match lane {
        Lane::Message => (&peer.inbound, ctx.cfg.max_frame_size, &ctx.events),
        Lane::Control => (
            &peer.control_inbound,
            ctx.cfg.control_inbound_bytes.min(ctx.cfg.max_frame_size),
            &ctx.control_events,
        ),
    };
    let mut src = Source::new(recv);
    loop {
        let mut h = [0u8; HEADER_LEN];
        if !src.fill(&mut h).await {
            return;
        }
        let header = match frame::parse_header(&h, max) {
            Ok(h) if h.kind == FrameKind::Data => h,
            Ok(_) | Err(_) => {
                ctx.stats.protocol_errors.inc();
                let why: &[u8] = match lane {
                    Lane::Message => b"bad frame on message lane",
                    Lane::Control => b"bad frame on control lane",
                };
                conn.close(CLOSE_PROTOCOL.into(), why);
                return;
            }
        };
        // Validation keeps each budget at least one maximal frame, so this waits at worst
        // for the peer's earlier frames to be released; it fails only on shutdown.
        let Ok(permit) = budget.acquire(charge(header.len)).await else {
            ctx.stats.protocol_errors.inc();
            conn.close(CLOSE_PROTOCOL.into(), b"frame exceeds the inbound budget");
            return;
        };
        let mut payload = BytesMut::with_capacity(header.len);
        while payload.len() < header.len {
            if !src.fill_buf().await {
                return;
            }
            let take = (header.len - payload.len()).min(src.buf.len());
            payload.extend_from_slice(&src.buf[..take]);
            src.buf.advance(take);
        }
        ctx.stats.frames_received.inc();
        let payload = payload.freeze();
        let ev = match lane {
            Lane::Message => Event::Frame { from, payload, permit },
            Lane::Control => Event::Control { from, payload, permit },
        };
        let hook = ctx.frame_hook.read().unwrap_or_else(|e| e.into_inner()).clone();
        let ev = match hook {
            Some(hook) => match hook(ev) {
                Some(ev) => ev,
                None => continue,
            },
            None => ev,
        };
        if events.send(ev).await.is_err() {
            return;
        }
    }
}

/// Accepts the control lane the peer opens on `conn` (a unidirectional stream; one at a
/// time, by the transport configuration) and reads it, until the connection closes.
pub(crate) async fn read_control(ctx: Arc<Ctx>, peer: Arc<PeerHandle>, conn: quinn::Connection) {
    while let Ok(recv) = conn.accept_uni().await {
        read_lane(ctx.clone(), peer.clone(), conn.clone(), recv, Lane::Control).await;
    }
}
