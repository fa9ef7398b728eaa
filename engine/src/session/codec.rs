//! The snapshot form of a [`SessionTable`]: [`encode`]/[`decode`] of the table, and the
//! framed section ([`write_section`]/[`read_section`]) the apply thread writes before a
//! state machine's bytes in every snapshot stream.
//!
//! Owns the byte layout and its validation: decoding never panics and never allocates
//! more than the input holds, and rejects corrupt input with a typed error. Never decides
//! what goes into a snapshot (the apply thread does).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use bytes::Bytes;
use thiserror::Error;

use super::table::{SessionLimits, SessionState, SessionTable, MAX_RESPONSES_PER_SESSION};

/// The table encoding's version.
const VERSION: u8 = 1;
/// The first bytes of a session section in a snapshot stream.
const SECTION_MAGIC: [u8; 4] = *b"FSES";
/// The largest session section read back (4 GiB): a length past it is corrupt.
pub const MAX_SECTION_BYTES: u64 = 4 << 30;

/// Why bytes are not a session table.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionDecodeError {
    /// The input ends inside a field.
    #[error("session table truncated at byte {0}")]
    Truncated(usize),
    /// An encoding version this build does not know.
    #[error("unknown session table version {0}")]
    Version(u8),
    /// A count larger than its bound or than the input can hold.
    #[error("session table: {what} count {count} out of bounds")]
    Count {
        /// What was counted.
        what: &'static str,
        /// The count read.
        count: u64,
    },
    /// Ids or sequences out of order, or an answer below its session's floor.
    #[error("session table: {0} out of order")]
    Order(&'static str),
    /// Bytes left after the table.
    #[error("session table: {0} trailing bytes")]
    Trailing(usize),
    /// The section does not start with the session section's magic.
    #[error("snapshot has no session section")]
    NoSection,
    /// The section's length is past [`MAX_SECTION_BYTES`].
    #[error("session section of {0} bytes is too large")]
    SectionTooLarge(u64),
}

fn put(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends the encoding of `t` to `out`.
pub fn encode(t: &SessionTable, out: &mut Vec<u8>) {
    out.push(VERSION);
    put(out, t.clock_ms);
    put(out, t.limits.ttl_ms);
    put(out, t.limits.max_sessions);
    put(out, t.sessions.len() as u64);
    for (&id, s) in &t.sessions {
        put(out, id);
        put(out, s.last_active);
        put(out, s.floor);
        put(out, s.responses.len() as u64);
        for (&seq, r) in &s.responses {
            put(out, seq);
            put(out, r.len() as u64);
            out.extend_from_slice(r);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn u64(&mut self) -> Result<u64, SessionDecodeError> {
        let Some(b) = self.buf.get(self.pos..self.pos + 8) else {
            return Err(SessionDecodeError::Truncated(self.pos));
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        self.pos += 8;
        Ok(u64::from_le_bytes(a))
    }

    /// A count of elements of at least `min_size` bytes each, at most `limit`.
    fn count(
        &mut self,
        what: &'static str,
        limit: u64,
        min_size: usize,
    ) -> Result<usize, SessionDecodeError> {
        let n = self.u64()?;
        if n > limit || n.saturating_mul(min_size as u64) > self.left() as u64 {
            return Err(SessionDecodeError::Count { what, count: n });
        }
        // In bounds of the input's length, which is a usize.
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<Bytes, SessionDecodeError> {
        let at = self.pos;
        let n = self.u64()?;
        if n > self.left() as u64 {
            return Err(SessionDecodeError::Truncated(at));
        }
        let n = n as usize;
        let out = Bytes::copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(out)
    }
}

/// Decodes a table written by [`encode`] (the whole of `buf`).
pub fn decode(buf: &[u8]) -> Result<SessionTable, SessionDecodeError> {
    let Some(&version) = buf.first() else { return Err(SessionDecodeError::Truncated(0)) };
    if version != VERSION {
        return Err(SessionDecodeError::Version(version));
    }
    let mut r = Reader { buf, pos: 1 };
    let clock_ms = r.u64()?;
    let limits = SessionLimits { ttl_ms: r.u64()?, max_sessions: r.u64()? };
    let n = r.count("session", limits.max_sessions.max(1), 32)?;
    let mut sessions = BTreeMap::new();
    let mut by_activity = BTreeSet::new();
    let mut prev_id = None;
    for _ in 0..n {
        let id = r.u64()?;
        if prev_id.is_some_and(|p| p >= id) {
            return Err(SessionDecodeError::Order("session ids"));
        }
        prev_id = Some(id);
        let last_active = r.u64()?;
        let floor = r.u64()?;
        let m = r.count("answer", MAX_RESPONSES_PER_SESSION as u64, 16)?;
        let mut responses = BTreeMap::new();
        let mut prev_seq = None;
        for _ in 0..m {
            let seq = r.u64()?;
            if seq < floor || prev_seq.is_some_and(|p| p >= seq) {
                return Err(SessionDecodeError::Order("answer sequences"));
            }
            prev_seq = Some(seq);
            responses.insert(seq, r.bytes()?);
        }
        by_activity.insert((last_active, id));
        sessions.insert(id, SessionState { last_active, floor, responses });
    }
    if r.left() != 0 {
        return Err(SessionDecodeError::Trailing(r.left()));
    }
    Ok(SessionTable { sessions, by_activity, clock_ms, limits })
}

/// The framed section of `t`: magic, length (u64 LE), then [`encode`]'s bytes.
pub fn section(t: &SessionTable) -> Vec<u8> {
    let mut body = Vec::new();
    encode(t, &mut body);
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(&SECTION_MAGIC);
    put(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// Writes the framed section of `t` to `out`.
pub fn write_section(t: &SessionTable, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(&section(t))
}

/// Reads a section written by [`write_section`] from the start of `input`, leaving
/// `input` at the first byte after it. Memory grows only with the bytes actually read.
pub fn read_section(input: &mut dyn Read) -> std::io::Result<SessionTable> {
    let invalid = |e: SessionDecodeError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut head = [0u8; 12];
    input.read_exact(&mut head)?;
    if head[..4] != SECTION_MAGIC {
        return Err(invalid(SessionDecodeError::NoSection));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[4..]);
    let len = u64::from_le_bytes(len);
    if len > MAX_SECTION_BYTES {
        return Err(invalid(SessionDecodeError::SectionTooLarge(len)));
    }
    let mut body = Vec::new();
    input.take(len).read_to_end(&mut body)?;
    if body.len() as u64 != len {
        return Err(invalid(SessionDecodeError::Truncated(body.len())));
    }
    decode(&body).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionTable {
        let lim = SessionLimits { ttl_ms: 500, max_sessions: 8 };
        let mut t = SessionTable::new();
        t.register(3, 10, lim);
        t.register(7, 20, lim);
        assert_eq!(t.apply(3, 1, 1, 30), super::super::Decision::Apply);
        t.record(3, 1, Bytes::from_static(b"first"));
        assert_eq!(t.apply(3, 2, 1, 30), super::super::Decision::Apply);
        t.record(3, 2, Bytes::new());
        t
    }

    proptest::proptest! {
        /// Tables built by random registers, applications, records and closes (with
        /// expiry and eviction) encode and decode to themselves.
        #[test]
        fn random_tables_round_trip(
            ops in proptest::collection::vec((0u8..4, 1u64..12, 1u64..6, 0u64..50), 1..150)
        ) {
            let lim = SessionLimits { ttl_ms: 200, max_sessions: 5 };
            let mut t = SessionTable::new();
            let mut clock = 0u64;
            for (i, &(kind, session, seq, dt)) in ops.iter().enumerate() {
                clock += dt;
                match kind {
                    0 => {
                        t.register(session, clock, lim);
                    }
                    1 | 2 => {
                        if t.apply(session, seq, 1, clock) == super::super::Decision::Apply {
                            t.record(session, seq, Bytes::from(format!("r{i}")));
                        }
                    }
                    _ => {
                        t.close(session, clock);
                    }
                }
            }
            let mut buf = Vec::new();
            encode(&t, &mut buf);
            proptest::prop_assert_eq!(decode(&buf).expect("own encoding decodes"), t);
        }
    }

    #[test]
    fn a_table_round_trips_through_a_section_and_the_rest_of_the_stream_stays() {
        let t = sample();
        let mut stream = section(&t);
        stream.extend_from_slice(b"state machine bytes");
        let mut input = &stream[..];
        let back = read_section(&mut input).unwrap();
        assert_eq!(back, t);
        assert_eq!(input, b"state machine bytes");
    }

    #[test]
    fn every_truncation_and_corruption_is_a_typed_error() {
        let mut buf = Vec::new();
        encode(&sample(), &mut buf);
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "truncated to {n} decoded");
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(SessionDecodeError::Trailing(1)));
        let mut v = buf.clone();
        v[0] = 9;
        assert_eq!(decode(&v), Err(SessionDecodeError::Version(9)));
        // A session count far past the input: refused before allocating.
        let mut huge = buf.clone();
        huge[25..33].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(SessionDecodeError::Count { .. })));
        // Flipping any byte never panics.
        for i in 0..buf.len() {
            let mut f = buf.clone();
            f[i] ^= 0xff;
            let _ = decode(&f);
        }
        let mut no_magic = section(&sample());
        no_magic[0] = b'X';
        assert!(read_section(&mut &no_magic[..]).is_err());
        let mut short = section(&sample());
        short.truncate(short.len() - 1);
        assert!(read_section(&mut &short[..]).is_err());
    }
}
