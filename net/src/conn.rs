//! Connection-level plumbing shared by the peer and bulk tasks: reading one checked frame
//! from a QUIC stream, admitting an inbound connection (TLS identity + hello), and the
//! message-lane reader.
//!
//! Owns [`ReadFrameError`] and the acceptor's admission checks. Never decides which of two
//! connections of a pair survives: `peer.rs` does.

use std::sync::Arc;

use bytes::BytesMut;
use rustls::pki_types::CertificateDer;
use thiserror::Error;

use crate::endpoint::Ctx;
use crate::event::Event;
use crate::frame::{
    self, Frame, FrameError, FrameKind, FrameReader, Hello, HelloReply, RejectReason, HEADER_LEN,
};
use crate::tls::cert_names_node;

/// QUIC application close code for a normal close.
pub(crate) const CLOSE_NORMAL: u32 = 0;
/// Close code when a connection loses the per-pair tie-break or is replaced.
pub(crate) const CLOSE_REPLACED: u32 = 1;
/// Close code for a protocol violation (malformed frame, unexpected kind).
pub(crate) const CLOSE_PROTOCOL: u32 = 2;
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

/// An inbound connection whose TLS identity and hello were checked, waiting for the peer
/// task to keep or refuse it.
pub(crate) struct Incoming {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub hello: Hello,
}

/// Refuses a hello: writes the reason, then closes with a code that carries it too.
pub(crate) async fn reject(conn: &quinn::Connection, send: &mut quinn::SendStream, reason: RejectReason) {
    let _ = send.write_all(&HelloReply::Reject(reason).encode()).await;
    let _ = send.finish();
    conn.close((CLOSE_REJECT_BASE + reason as u32).into(), b"rejected");
}

/// Runs the acceptor side of a new connection up to the hello, then hands it to the peer
/// task of the claimed node.
pub(crate) async fn accept(ctx: Arc<Ctx>, incoming: quinn::Incoming) {
    let timeout = ctx.cfg.connect_timeout;
    let Ok(Ok(conn)) = tokio::time::timeout(timeout, incoming).await else {
        ctx.stats.refused.inc();
        return;
    };
    let admitted = tokio::time::timeout(timeout, async {
        let (mut send, mut recv) = conn.accept_bi().await.ok()?;
        let f = read_frame(&mut recv, 64).await.ok()?;
        let hello = match f.kind {
            FrameKind::Hello => Hello::decode(&f.payload).ok()?,
            _ => return None,
        };
        let chain = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|b| *b)
            .unwrap_or_default();
        if hello.to != ctx.me {
            reject(&conn, &mut send, RejectReason::WrongTarget).await;
            return None;
        }
        if !cert_names_node(&chain, hello.from) {
            reject(&conn, &mut send, RejectReason::IdentityMismatch).await;
            return None;
        }
        Some(Incoming { conn: conn.clone(), send, recv, hello })
    })
    .await;
    match admitted {
        Ok(Some(inc)) => {
            let peer = ctx.peer(inc.hello.from);
            if let Err(e) = peer.incoming.send(inc).await {
                e.0.conn.close(CLOSE_NORMAL.into(), b"shutting down");
            }
        }
        _ => {
            ctx.stats.refused.inc();
            conn.close(CLOSE_PROTOCOL.into(), b"bad hello");
        }
    }
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
