//! The wire frame: a 6-byte header (format version, kind, payload length) and a payload.
//!
//! Owns the frame layout, its encoder and its decoder, and the small control payloads
//! (hello, ack, reject, bulk start/ack). The decoder rejects malformed, truncated, oversized
//! or newer-version input with a typed [`FrameError`]; it never panics and never allocates
//! more than the configured maximum frame size. Never does I/O: the stream readers in
//! `conn.rs` read a header, check it here, then read exactly the announced payload.
//!
//! Layout (little endian):
//! ```text
//! +---------+------+----------------+----------------------+
//! | version | kind | length (u32)   | payload (length B)   |
//! +---------+------+----------------+----------------------+
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The frame format this build writes and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 6;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// Dialer -> acceptor, first frame of a connection: who I am, whom I want.
    Hello = 1,
    /// Acceptor -> dialer: the connection is admitted; carries the acceptor's incarnation.
    HelloAck = 2,
    /// Acceptor -> dialer: the connection is refused; carries a [`RejectReason`].
    Reject = 3,
    /// A message-lane payload, opaque to the transport.
    Data = 4,
    /// First frame of a bulk (snapshot) stream: the sender's tag.
    BulkStart = 5,
    /// One chunk of a bulk stream.
    BulkChunk = 6,
    /// Last frame of a bulk stream.
    BulkEnd = 7,
    /// Receiver -> sender at the end of a bulk stream: everything arrived.
    BulkAck = 8,
}

impl FrameKind {
    /// The kind for a wire byte, if it names one.
    pub fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Hello,
            2 => FrameKind::HelloAck,
            3 => FrameKind::Reject,
            4 => FrameKind::Data,
            5 => FrameKind::BulkStart,
            6 => FrameKind::BulkChunk,
            7 => FrameKind::BulkEnd,
            8 => FrameKind::BulkAck,
            _ => return None,
        })
    }
}

/// Why a frame or a control payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header or the announced payload need.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes needed to make progress.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame was written by a newer format than this build reads.
    #[error("unsupported frame format version {version} (this build reads up to {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// Version 0 is never written.
    #[error("invalid frame format version 0")]
    ZeroVersion,
    /// The kind byte names no frame kind.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The kind byte found.
        kind: u8,
    },
    /// The announced payload is longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// Announced payload length.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// A control frame's payload does not have the layout its kind requires.
    #[error("malformed {kind:?} payload: {reason}")]
    Malformed {
        /// The frame kind.
        kind: FrameKind,
        /// What is wrong.
        reason: &'static str,
    },
    /// A frame of this kind is not allowed at this point of the stream.
    #[error("unexpected {got:?} frame, expected {expected}")]
    Unexpected {
        /// The kind received.
        got: FrameKind,
        /// What the stream expected.
        expected: &'static str,
    },
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame kind.
    pub kind: FrameKind,
    /// Payload length in bytes, at most the decoder's maximum.
    pub len: usize,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame kind.
    pub kind: FrameKind,
    /// The payload.
    pub payload: Bytes,
}

/// Checks a header against the format version and the maximum payload size. Allocates
/// nothing.
pub fn parse_header(h: &[u8; HEADER_LEN], max_payload: usize) -> Result<Header, FrameError> {
    let version = h[0];
    if version == 0 {
        return Err(FrameError::ZeroVersion);
    }
    if version > FORMAT_VERSION {
        return Err(FrameError::UnsupportedVersion { version });
    }
    let kind = FrameKind::from_u8(h[1]).ok_or(FrameError::UnknownKind { kind: h[1] })?;
    let len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]) as usize;
    if len > max_payload {
        return Err(FrameError::Oversized { len, max: max_payload });
    }
    Ok(Header { kind, len })
}

/// Encodes a header for a payload of `len` bytes. The caller guarantees `len` fits the
/// configured maximum (itself at most `u32::MAX`).
pub fn encode_header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let l = (len.min(u32::MAX as usize) as u32).to_le_bytes();
    [FORMAT_VERSION, kind as u8, l[0], l[1], l[2], l[3]]
}

/// Encodes a whole frame into one buffer.
pub fn encode_frame(kind: FrameKind, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + payload.len());
    b.put_slice(&encode_header(kind, payload.len()));
    b.put_slice(payload);
    b.freeze()
}

/// Decodes one frame from the front of `buf`. Returns the frame and the bytes consumed.
/// The payload is a zero-copy slice of `buf`, so nothing beyond the input is allocated.
pub fn decode_frame(buf: &Bytes, max_payload: usize) -> Result<(Frame, usize), FrameError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Err(FrameError::Truncated { needed: HEADER_LEN, have: buf.len() });
    };
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(h);
    let header = parse_header(&hdr, max_payload)?;
    let total = HEADER_LEN + header.len;
    if buf.len() < total {
        return Err(FrameError::Truncated { needed: total, have: buf.len() });
    }
    Ok((Frame { kind: header.kind, payload: buf.slice(HEADER_LEN..total) }, total))
}

/// An incremental frame decoder for a byte stream that arrives in chunks of any size (the
/// message lane reads whole QUIC stream chunks, not one header and payload at a time).
/// Same checks as [`parse_header`]; a frame's payload buffer is allocated once, at its
/// announced length, only after the header passed the maximum, and filled without
/// zeroing. Never panics.
#[derive(Debug)]
pub struct FrameReader {
    max_payload: usize,
    header: [u8; HEADER_LEN],
    header_have: usize,
    /// The frame being filled: its kind, its payload so far, its announced length.
    current: Option<(FrameKind, BytesMut, usize)>,
}

impl FrameReader {
    /// A reader accepting payloads up to `max_payload` bytes.
    pub fn new(max_payload: usize) -> FrameReader {
        FrameReader { max_payload, header: [0; HEADER_LEN], header_have: 0, current: None }
    }

    /// Consumes bytes from the front of `input` until a frame completes (returned) or
    /// `input` is exhausted (`Ok(None)`). Call again while `input` is not empty. After an
    /// error the stream is unusable.
    pub fn feed(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        if self.current.is_none() {
            let take = (HEADER_LEN - self.header_have).min(input.len());
            self.header[self.header_have..self.header_have + take].copy_from_slice(&input[..take]);
            self.header_have += take;
            *input = &input[take..];
            if self.header_have < HEADER_LEN {
                return Ok(None);
            }
            self.header_have = 0;
            let h = parse_header(&self.header, self.max_payload)?;
            self.current = Some((h.kind, BytesMut::with_capacity(h.len), h.len));
        }
        let Some((kind, buf, len)) = &mut self.current else { return Ok(None) };
        let take = (*len - buf.len()).min(input.len());
        buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if buf.len() < *len {
            return Ok(None);
        }
        let kind = *kind;
        let payload = std::mem::take(buf).freeze();
        self.current = None;
        Ok(Some(Frame { kind, payload }))
    }

    /// Whether the reader is between frames (a stream ending now ends cleanly).
    pub fn is_idle(&self) -> bool {
        self.header_have == 0 && self.current.is_none()
    }
}

/// Why an acceptor refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum RejectReason {
    /// A connection for this pair already exists and wins the tie-break; use it.
    Duplicate = 1,
    /// The certificate does not name the node id claimed in the hello.
    IdentityMismatch = 2,
    /// The hello was meant for another node id.
    WrongTarget = 3,
    /// The acceptor is shutting down.
    ShuttingDown = 4,
    /// The claimed node is not on the acceptor's allow-list.
    NotAllowed = 5,
}

impl RejectReason {
    fn from_u8(b: u8) -> Option<RejectReason> {
        Some(match b {
            1 => RejectReason::Duplicate,
            2 => RejectReason::IdentityMismatch,
            3 => RejectReason::WrongTarget,
            4 => RejectReason::ShuttingDown,
            5 => RejectReason::NotAllowed,
            _ => return None,
        })
    }
}

/// The first frame a dialer sends: its node id, its incarnation, and the node it meant
/// to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's node id (must be named by its certificate).
    pub from: u64,
    /// The dialer's incarnation (changes on every restart).
    pub incarnation: u64,
    /// The node id the dialer meant to reach.
    pub to: u64,
}

fn fixed_u64s<const N: usize>(kind: FrameKind, p: &[u8]) -> Result<[u64; N], FrameError> {
    if p.len() != 8 * N {
        return Err(FrameError::Malformed { kind, reason: "wrong payload length" });
    }
    let mut out = [0u64; N];
    let mut rd = p;
    for v in out.iter_mut() {
        *v = rd.get_u64_le();
    }
    Ok(out)
}

impl Hello {
    /// Encodes as a [`FrameKind::Hello`] frame.
    pub fn encode(&self) -> Bytes {
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&self.from.to_le_bytes());
        p[8..16].copy_from_slice(&self.incarnation.to_le_bytes());
        p[16..].copy_from_slice(&self.to.to_le_bytes());
        encode_frame(FrameKind::Hello, &p)
    }

    /// Decodes a hello payload.
    pub fn decode(p: &[u8]) -> Result<Hello, FrameError> {
        let [from, incarnation, to] = fixed_u64s::<3>(FrameKind::Hello, p)?;
        if from == 0 || to == 0 {
            return Err(FrameError::Malformed { kind: FrameKind::Hello, reason: "node id 0" });
        }
        Ok(Hello { from, incarnation, to })
    }
}

/// The acceptor's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HelloReply {
    /// Admitted; the acceptor's incarnation.
    Ack {
        /// The acceptor's incarnation.
        incarnation: u64,
    },
    /// Refused.
    Reject(RejectReason),
}

impl HelloReply {
    /// Encodes as a [`FrameKind::HelloAck`] or [`FrameKind::Reject`] frame.
    pub fn encode(&self) -> Bytes {
        match self {
            HelloReply::Ack { incarnation } => encode_frame(FrameKind::HelloAck, &incarnation.to_le_bytes()),
            HelloReply::Reject(r) => encode_frame(FrameKind::Reject, &[*r as u8]),
        }
    }

    /// Decodes a reply frame.
    pub fn decode(f: &Frame) -> Result<HelloReply, FrameError> {
        match f.kind {
            FrameKind::HelloAck => {
                let [incarnation] = fixed_u64s::<1>(f.kind, &f.payload)?;
                Ok(HelloReply::Ack { incarnation })
            }
            FrameKind::Reject => match f.payload.as_ref() {
                [b] => RejectReason::from_u8(*b)
                    .map(HelloReply::Reject)
                    .ok_or(FrameError::Malformed { kind: f.kind, reason: "unknown reject reason" }),
                _ => Err(FrameError::Malformed { kind: f.kind, reason: "wrong payload length" }),
            },
            got => Err(FrameError::Unexpected { got, expected: "HelloAck or Reject" }),
        }
    }
}

/// Encodes the first frame of a bulk stream.
pub fn encode_bulk_start(tag: u64) -> Bytes {
    encode_frame(FrameKind::BulkStart, &tag.to_le_bytes())
}

/// Decodes a bulk-start payload: the sender's tag.
pub fn decode_bulk_start(p: &[u8]) -> Result<u64, FrameError> {
    let [tag] = fixed_u64s::<1>(FrameKind::BulkStart, p)?;
    Ok(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let f = encode_frame(FrameKind::Data, b"hello");
        let (d, n) = decode_frame(&f, 16).unwrap();
        assert_eq!(n, f.len());
        assert_eq!(d, Frame { kind: FrameKind::Data, payload: Bytes::from_static(b"hello") });
        assert_eq!(decode_frame(&f.slice(..3), 16), Err(FrameError::Truncated { needed: 6, have: 3 }));
        assert_eq!(decode_frame(&f.slice(..8), 16), Err(FrameError::Truncated { needed: 11, have: 8 }));
        assert_eq!(decode_frame(&f, 4), Err(FrameError::Oversized { len: 5, max: 4 }));
        let mut newer = f.to_vec();
        newer[0] = FORMAT_VERSION + 1;
        assert_eq!(
            decode_frame(&Bytes::from(newer), 16),
            Err(FrameError::UnsupportedVersion { version: FORMAT_VERSION + 1 })
        );
        let mut bad = f.to_vec();
        bad[1] = 200;
        assert_eq!(decode_frame(&Bytes::from(bad), 16), Err(FrameError::UnknownKind { kind: 200 }));
    }

    #[test]
    fn frame_reader_matches_decode_frame_for_any_split() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (i, len) in [0usize, 1, 5, 6, 7, 100, 3000, 16].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
            stream.extend_from_slice(&encode_frame(FrameKind::Data, &payload));
            want.push(Frame { kind: FrameKind::Data, payload: Bytes::from(payload) });
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..500 {
            let mut r = FrameReader::new(4096);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = ((seed % 64) as usize + 1).min(rest.len());
                let mut chunk = &rest[..n];
                rest = &rest[n..];
                while !chunk.is_empty() {
                    if let Some(f) = r.feed(&mut chunk).unwrap() {
                        got.push(f);
                    }
                }
            }
            assert!(r.is_idle());
            assert_eq!(got, want);
        }
        // Errors as parse_header reports them; nothing is allocated for an oversized frame.
        let mut r = FrameReader::new(10);
        let f = encode_frame(FrameKind::Data, &[0; 11]);
        assert_eq!(r.feed(&mut &f[..]), Err(FrameError::Oversized { len: 11, max: 10 }));
        let mut r = FrameReader::new(10);
        assert_eq!(r.feed(&mut &[0u8, 4, 0, 0, 0, 0][..]), Err(FrameError::ZeroVersion));
        let mut r = FrameReader::new(10);
        assert_eq!(r.feed(&mut &f[..3]), Ok(None));
        assert!(!r.is_idle());
    }

    #[test]
    fn control_payloads() {
        let h = Hello { from: 3, incarnation: 99, to: 1 };
        let (f, _) = decode_frame(&h.encode(), 64).unwrap();
        assert_eq!(Hello::decode(&f.payload), Ok(h));
        assert!(Hello::decode(&f.payload[..10]).is_err());
        for r in [HelloReply::Ack { incarnation: 7 }, HelloReply::Reject(RejectReason::Duplicate)] {
            let (f, _) = decode_frame(&r.encode(), 64).unwrap();
            assert_eq!(HelloReply::decode(&f), Ok(r));
        }
        assert_eq!(decode_bulk_start(&5u64.to_le_bytes()), Ok(5));
    }
}
