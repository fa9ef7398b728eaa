//! Bulk (snapshot) lanes: each bulk transfer is its own QUIC bidirectional stream at a
//! lower priority than the message lane, sent in chunks under QUIC flow control, and
//! acknowledged by the receiver at its end so the sender learns success or failure.
//!
//! Owns [`BulkSender`], [`BulkError`], the sending task and the receiving side. Never
//! touches the message lane or the connection's lifecycle (`peer.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{charge, InboundPermit};
use crate::conn::{read_frame, ReadFrameError};
use crate::event::{Event, NodeId};
use crate::frame::{
    decode_bulk_start, encode_bulk_start, encode_frame, encode_header, parse_header, Frame, FrameError,
    FrameKind, HEADER_LEN,
};
use crate::shared::{Ctx, PeerHandle};

/// Chunks buffered between a [`BulkSender`] and its stream.
const CHUNK_QUEUE: usize = 4;

/// Stream error code: the sender abandoned the stream before finishing it.
const CODE_ABANDONED: u32 = 1;
/// Stream error code: the receiver refused a malformed or unexpected frame.
const CODE_PROTOCOL: u32 = 2;
/// Stream error code: the receiver refused a chunk larger than its `bulk_chunk_size`.
const CODE_CHUNK_TOO_LARGE: u32 = 3;
/// Largest payload of a bulk control frame (start: the 8-byte tag; end: empty).
const CONTROL_MAX: usize = 64;

/// Why a bulk transfer failed, or a chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BulkError {
    /// No connection to the peer could be had within the connect timeout.
    #[error("bulk stream {tag}: peer {to} unreachable")]
    Unreachable {
        /// The destination.
        to: NodeId,
        /// The stream's tag.
        tag: u64,
    },
    /// The connection or stream failed before the receiver acknowledged the end.
    #[error("bulk stream {tag} to {to} failed: {detail}")]
    Failed {
        /// The destination.
        to: NodeId,
        /// The stream's tag.
        tag: u64,
        /// What failed.
        detail: String,
    },
    /// The receiver refused the stream: a chunk exceeded the receiver's own
    /// `bulk_chunk_size` (the two nodes are configured differently).
    #[error("bulk stream {tag} to {to} refused: a chunk exceeds the receiver's bulk_chunk_size")]
    Refused {
        /// The destination.
        to: NodeId,
        /// The stream's tag.
        tag: u64,
    },
    /// A chunk is larger than `bulk_chunk_size`.
    #[error("bulk chunk of {len} bytes exceeds bulk_chunk_size {max}")]
    ChunkTooLarge {
        /// The chunk's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A blocking method was called from inside an async runtime; use the `_async` one.
    #[error("blocking bulk call from an async context")]
    InAsyncContext,
}

enum Cmd {
    Chunk(Bytes),
    Finish,
}

/// The sending end of one bulk stream. Push chunks with [`BulkSender::send_chunk`] (which
/// waits while the stream is flow-controlled), then [`BulkSender::finish`] to learn whether
/// the receiver got everything. Dropping it without finishing aborts the stream.
#[derive(Debug)]
pub struct BulkSender {
    to: NodeId,
    tag: u64,
    max_chunk: usize,
    tx: mpsc::Sender<Cmd>,
    done: oneshot::Receiver<Result<(), BulkError>>,
}

pub(crate) fn open(
    ctx: &Arc<Ctx>,
    rt: &tokio::runtime::Handle,
    peer: Arc<PeerHandle>,
    tag: u64,
) -> BulkSender {
    let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
    let (done_tx, done) = oneshot::channel();
    let to = peer.node;
    let ctx2 = ctx.clone();
    rt.spawn(async move {
        let r = run_send(ctx2, peer, tag, rx).await;
        let _ = done_tx.send(r);
    });
    BulkSender { to, tag, max_chunk: ctx.cfg.bulk_chunk_size, tx, done }
}

impl BulkSender {
    fn failed(&self, detail: &str) -> BulkError {
        BulkError::Failed { to: self.to, tag: self.tag, detail: detail.to_owned() }
    }

    fn check(&self, chunk: &Bytes) -> Result<(), BulkError> {
        if chunk.len() > self.max_chunk {
            return Err(BulkError::ChunkTooLarge { len: chunk.len(), max: self.max_chunk });
        }
        Ok(())
    }

    /// Queues one chunk, blocking this (non-async) thread while the stream is behind.
    pub fn send_chunk(&self, chunk: Bytes) -> Result<(), BulkError> {
        self.check(&chunk)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BulkError::InAsyncContext);
        }
        self.tx.blocking_send(Cmd::Chunk(chunk)).map_err(|_| self.failed("stream task ended"))
    }

    /// Queues one chunk (async).
    pub async fn send_chunk_async(&self, chunk: Bytes) -> Result<(), BulkError> {
        self.check(&chunk)?;
        self.tx.send(Cmd::Chunk(chunk)).await.map_err(|_| self.failed("stream task ended"))
    }

    /// Ends the stream and blocks until the receiver acknowledged it (or it failed).
    pub fn finish(self) -> Result<(), BulkError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BulkError::InAsyncContext);
        }
        let _ = self.tx.blocking_send(Cmd::Finish);
        let err = self.failed("stream task ended");
        self.done.blocking_recv().unwrap_or(Err(err))
    }

    /// Ends the stream and waits for the receiver's acknowledgement (async).
    pub async fn finish_async(self) -> Result<(), BulkError> {
        let _ = self.tx.send(Cmd::Finish).await;
        let err = self.failed("stream task ended");
        self.done.await.unwrap_or(Err(err))
    }
}

/// Decrements the peer's bulk-waiter count when dropped.
struct Waiting<'a>(&'a PeerHandle);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.bulk_waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The error for a write that failed: [`BulkError::Refused`] if the receiver stopped the
/// stream for an oversized chunk.
fn write_failed(to: NodeId, tag: u64, e: quinn::WriteError) -> BulkError {
    match e {
        quinn::WriteError::Stopped(code) if code == CODE_CHUNK_TOO_LARGE.into() => {
            BulkError::Refused { to, tag }
        }
        e => BulkError::Failed { to, tag, detail: e.to_string() },
    }
}

/// The error for an acknowledgement that could not be read: [`BulkError::Refused`] if the
/// receiver reset the stream for an oversized chunk.
fn ack_failed(to: NodeId, tag: u64, e: ReadFrameError) -> BulkError {
    match e {
        ReadFrameError::Stream(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code)))
            if code == CODE_CHUNK_TOO_LARGE.into() =>
        {
            BulkError::Refused { to, tag }
        }
        e => BulkError::Failed { to, tag, detail: e.to_string() },
    }
}

async fn run_send(
    ctx: Arc<Ctx>,
    peer: Arc<PeerHandle>,
    tag: u64,
    mut rx: mpsc::Receiver<Cmd>,
) -> Result<(), BulkError> {
    let to = peer.node;
    let fail = |detail: String| BulkError::Failed { to, tag, detail };
    let conn = {
        peer.bulk_waiters.fetch_add(1, Ordering::AcqRel);
        let _w = Waiting(&peer);
        peer.wake();
        let mut watch = peer.conn.subscribe();
        let got = tokio::time::timeout(ctx.cfg.connect_timeout, watch.wait_for(|c| c.is_some())).await;
        match got {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        }
    };
    let conn = conn.ok_or(BulkError::Unreachable { to, tag })?;
    // Every wait on the receiver (a stream granted, flow-control credit) is bounded: a
    // peer that lets nothing through ends the stream, and the thread feeding it.
    let stall = ctx.cfg.bulk_stall_timeout;
    let stalled = || fail(format!("the receiver let nothing through for {stall:?}"));
    let (mut send, mut recv) = tokio::time::timeout(stall, conn.open_bi())
        .await
        .map_err(|_| stalled())?
        .map_err(|e| fail(e.to_string()))?;
    let _ = send.set_priority(0);
    let written = tokio::time::timeout(stall, send.write_all(&encode_bulk_start(tag))).await;
    written.map_err(|_| stalled())?.map_err(|e| write_failed(to, tag, e))?;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Chunk(b) => {
                let mut h = BytesMut::with_capacity(HEADER_LEN);
                h.put_slice(&encode_header(FrameKind::BulkChunk, b.len()));
                let mut parts = [h.freeze(), b];
                let mut at = 0;
                // Progress, not the whole chunk, is what the deadline waits for.
                while at < parts.len() {
                    let w = tokio::time::timeout(stall, send.write_chunks(&mut parts[at..])).await;
                    match w {
                        Err(_) => {
                            let _ = send.reset(CODE_ABANDONED.into());
                            return Err(stalled());
                        }
                        Ok(Err(e)) => return Err(write_failed(to, tag, e)),
                        Ok(Ok(n)) => at += n.chunks,
                    }
                }
            }
            Cmd::Finish => {
                let w =
                    tokio::time::timeout(stall, send.write_all(&encode_frame(FrameKind::BulkEnd, &[]))).await;
                w.map_err(|_| stalled())?.map_err(|e| write_failed(to, tag, e))?;
                let _ = send.finish();
                let wait = ctx.cfg.idle_timeout.max(ctx.cfg.connect_timeout);
                return match tokio::time::timeout(wait, read_frame(&mut recv, CONTROL_MAX)).await {
                    Ok(Ok(f)) if f.kind == FrameKind::BulkAck => Ok(()),
                    Ok(Ok(_)) => Err(fail("unexpected frame instead of the acknowledgement".into())),
                    Ok(Err(e)) => Err(ack_failed(to, tag, e)),
                    Err(_) => Err(fail("no acknowledgement in time".into())),
                };
            }
        }
    }
    let _ = send.reset(CODE_ABANDONED.into());
    Err(fail("abandoned before finish".into()))
}

/// Accepts the bulk streams a peer opens on connection `conn` until it closes.
pub(crate) async fn accept_streams(ctx: Arc<Ctx>, peer: Arc<PeerHandle>, conn: quinn::Connection) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(receive(ctx.clone(), peer.clone(), send, recv));
    }
}

/// Reads one frame of a bulk stream as `read_frame` does, but takes its charge from the
/// peer's inbound budget between the header and the payload.
async fn read_charged(
    recv: &mut quinn::RecvStream,
    max: usize,
    peer: &PeerHandle,
) -> Result<(Frame, InboundPermit), ReadFrameError> {
    let mut h = [0u8; HEADER_LEN];
    recv.read_exact(&mut h).await?;
    let header = parse_header(&h, max)?;
    // `max` is `bulk_chunk_size`, at most `max_frame_size`, itself at most the budget:
    // this fails only on shutdown, which then ends the stream like a broken one.
    let permit = peer
        .inbound
        .acquire(charge(header.len))
        .await
        .map_err(|_| ReadFrameError::Stream(quinn::ReadExactError::FinishedEarly(0)))?;
    let mut payload = BytesMut::zeroed(header.len);
    recv.read_exact(&mut payload).await?;
    Ok((Frame { kind: header.kind, payload: payload.freeze() }, permit))
}

/// Refuses a bulk stream: stops its incoming half and resets the acknowledgement half,
/// both with `code`, so the sender learns why from either.
fn refuse(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream, code: u32) {
    let _ = recv.stop(code.into());
    let _ = send.reset(code.into());
}

/// Receives one bulk stream. Control frames are read with a limit of [`CONTROL_MAX`] and
/// chunks with `bulk_chunk_size`, each checked from its header before anything is
/// allocated: a stream buffers at most one chunk of the configured size, whatever a peer
/// announces. Each chunk is charged to the peer's `peer_inbound_bytes` budget before its
/// payload is read (waiting while it is spent, so flow control stops the sender) and
/// carries the permit in its event. An oversized or malformed frame refuses the stream
/// (the sender gets [`BulkError::Refused`] or [`BulkError::Failed`]) and counts as a
/// protocol error.
async fn receive(
    ctx: Arc<Ctx>,
    peer: Arc<PeerHandle>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let from = peer.node;
    let tag = match read_frame(&mut recv, CONTROL_MAX).await {
        Ok(first) => match (first.kind, decode_bulk_start(&first.payload)) {
            (FrameKind::BulkStart, Ok(tag)) => tag,
            _ => {
                ctx.stats.protocol_errors.inc();
                refuse(&mut send, &mut recv, CODE_PROTOCOL);
                return;
            }
        },
        Err(ReadFrameError::Frame(_)) => {
            ctx.stats.protocol_errors.inc();
            refuse(&mut send, &mut recv, CODE_PROTOCOL);
            return;
        }
        Err(ReadFrameError::Stream(_)) => return,
    };
    let max_chunk = ctx.cfg.bulk_chunk_size;
    loop {
        let code = match read_charged(&mut recv, max_chunk, &peer).await {
            Ok((f, permit)) if f.kind == FrameKind::BulkChunk => {
                let ev = Event::BulkChunk { from, tag, payload: f.payload, permit };
                if ctx.bulk_events.send(ev).await.is_err() {
                    return;
                }
                continue;
            }
            Ok((f, _)) if f.kind == FrameKind::BulkEnd => {
                let _ = ctx.bulk_events.send(Event::BulkEnd { from, tag }).await;
                let _ = send.write_all(&encode_frame(FrameKind::BulkAck, &[])).await;
                let _ = send.finish();
                // Let the acknowledgement leave before the stream is dropped.
                let _ = tokio::time::timeout(ctx.cfg.connect_timeout, send.stopped()).await;
                return;
            }
            Err(ReadFrameError::Frame(FrameError::Oversized { .. })) => {
                ctx.stats.protocol_errors.inc();
                CODE_CHUNK_TOO_LARGE
            }
            Ok(_) | Err(ReadFrameError::Frame(_)) => {
                ctx.stats.protocol_errors.inc();
                CODE_PROTOCOL
            }
            Err(ReadFrameError::Stream(_)) => CODE_PROTOCOL,
        };
        refuse(&mut send, &mut recv, code);
        let _ = ctx.bulk_events.send(Event::BulkAborted { from, tag }).await;
        return;
    }
}
