//! Connection-level plumbing shared by the peer, bulk and accept tasks: reading one checked
//! frame from a QUIC stream, refusing a hello, the close codes, and the message-lane
//! reader.
//!
//! Owns [`ReadFrameError`]. Never decides which of two connections of a pair survives:
//! `peer.rs` does; never admits an inbound connection: `accept.rs` does.

use std::sync::Arc;

use bytes::BytesMut;
use thiserror::Error;

use crate::event::Event;
use crate::frame::{self, Frame, FrameError, FrameKind, FrameReader, HelloReply, RejectReason, HEADER_LEN};
use crate::shared::Ctx;

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

/// Reads the peer's message lane and delivers its frames, in order, until the stream or
/// connection ends. Reads whole stream chunks and cuts them into frames with a
/// [`FrameReader`] (one read per chunk rather than two per frame). A malformed frame closes
/// the connection.
pub(crate) async fn read_lane(
    ctx: Arc<Ctx>,
    from: u64,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::new(ctx.cfg.max_frame_size);
    loop {
        let chunk = match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(c)) => c.bytes,
            Ok(None) | Err(_) => return,
        };
        let mut input = &chunk[..];
        while !input.is_empty() {
            match reader.feed(&mut input) {
                Ok(None) => {}
                Ok(Some(Frame { kind: FrameKind::Data, payload })) => {
                    ctx.stats.frames_received.inc();
                    if ctx.events.send(Event::Frame { from, payload }).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) | Err(_) => {
                    ctx.stats.protocol_errors.inc();
                    conn.close(CLOSE_PROTOCOL.into(), b"bad frame on message lane");
                    return;
                }
            }
        }
    }
}
