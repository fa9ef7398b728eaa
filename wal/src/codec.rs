//! The on-disk format: segment headers, batch headers and records, and the
//! [`RecordCodec`] that encodes and verifies them.
//!
//! Owns: every byte layout and checksum rule of the log. Never: performs I/O, holds
//! state, or panics on malformed input (every decoder returns an error instead).
//!
//! # Format (version 2, all integers little endian)
//!
//! Segment header, [`SEGMENT_HEADER_LEN`] bytes at offset 0 of every segment file:
//! `magic "FLOTSEG\0" | version u32 | reserved u32 | seq u64 | salt u64 | size u64 |
//! wal_id u64 | crc u32 (CRC32C of the preceding 48 bytes) | zero padding`.
//! The `salt` is random per segment life: together with `seq` it seeds every checksum
//! in the segment, so records left from a recycled segment's previous life (or forged
//! inside user payloads) never verify. `wal_id` is random per log, chosen when the log is
//! created and written in every segment it ever makes: recovery refuses a segment of
//! another log ([`crate::OpenError::ForeignSegment`]). `magic` and `version` stay where
//! they are in every version; the version is checked before the checksum, so a newer
//! format may lay out the rest differently.
//!
//! Batch header, [`BATCH_HEADER_LEN`] bytes, then the batch's records:
//! `magic u32 | version u16 | flags u16 | len u32 (header + records) | count u32 |
//! durable_seq u64 | durable_offset u64 | body_crc u32 | header_crc u32`.
//! `header_crc` is CRC32C seeded with the segment seed over header bytes 0..36, and is
//! verified BEFORE anything in the header is believed: a corrupt `len` (or a batch-like
//! byte pattern inside a payload, which cannot carry a valid checksum without the
//! segment's random seed) is rejected after reading 40 bytes, so recovery never reads,
//! skips or allocates by an unverified length, and its work is linear in the log's size
//! whatever the payloads contain. `body_crc` is CRC32C seeded with the segment seed over
//! every record byte: a batch is valid as a whole or not at all. `magic`, `version` and
//! `header_crc` stay where they are in every version (the version is read only once the
//! header checksum verified, so a payload cannot fake a newer version). `durable_*` is
//! the log position known durable when the batch was written (see `recovery` for the
//! rule it serves). Flag bit 0 marks a *seal*: a batch without records that ends its
//! segment (the writer seals a segment before moving to the next one; recovery goes on
//! in the next existing segment only after a seal). Other flag bits are invalid in
//! version 2.
//!
//! Version 1 (no `wal_id`, one checksum over header and records together, so a corrupt
//! length made recovery checksum up to the rest of the segment at every batch-like
//! offset) was never released; its logs are refused with
//! [`crate::OpenError::UnsupportedFormat`], not converted.
//!
//! Record, [`RECORD_HEADER_LEN`] bytes then body:
//! `len u32 (header + body) | crc u32 (segment seed, then bytes 8..len) | group u64 |
//! kind u8`. Kinds and bodies:
//! - `1` entries: `first u64 | count u32 | count x (term u64 | len u32 | data)`; replaces
//!   the group's log from `first` on (a later index is dropped).
//! - `2` rewritten entries: `last u64 | first u64 | count u32 | entries as above`; puts
//!   the entries back where they were and drops indexes above `last`.
//! - `3` hard state: `term u64 | vote u64 | commit u64`.
//! - `4` metadata: opaque bytes (the engine's membership).
//! - `5` compaction mark: `index u64 | last u64`: entries below `index` and above `last`
//!   are gone.
//! - `6` group removed: empty body.

use thiserror::Error;

use crate::types::{HardState, Position};

/// Current on-disk format version, written in every segment and batch header.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of a batch header.
pub const BATCH_HEADER_LEN: usize = 40;
/// Offset of a batch header's own checksum (it covers the bytes before it).
pub const BATCH_HEADER_CRC_AT: usize = 36;
/// Offset of a segment header's checksum (it covers the bytes before it).
const SEGMENT_HEADER_CRC_AT: usize = 48;
/// Batch flag: the batch seals its segment.
pub const BATCH_FLAG_SEAL: u16 = 1;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 17;
/// Bytes of an entry's header inside an entries record.
pub const ENTRY_HEADER_LEN: usize = 12;
/// Bytes before the first entry of an entries record's body.
pub const ENTRIES_BODY_PREFIX: usize = 12;
/// Bytes before the first entry of a rewritten-entries record's body.
pub const REWRITE_BODY_PREFIX: usize = 20;

const SEGMENT_MAGIC: &[u8; 8] = b"FLOTSEG\0";
const BATCH_MAGIC: u32 = 0x5442_4c46; // "FLBT"

/// Record kind: entries that replace the log from their first index.
pub const KIND_ENTRIES: u8 = 1;
/// Record kind: entries copied by a segment rewrite.
pub const KIND_REWRITE: u8 = 2;
/// Record kind: hard state.
pub const KIND_HARD_STATE: u8 = 3;
/// Record kind: opaque group metadata.
pub const KIND_META: u8 = 4;
/// Record kind: compaction mark.
pub const KIND_COMPACT: u8 = 5;
/// Record kind: group removed.
pub const KIND_REMOVE: u8 = 6;

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of the segment.
    pub seq: u64,
    /// Random salt of this life of the segment.
    pub salt: u64,
    /// Size of the segment file when it was created.
    pub size: u64,
    /// Id of the log the segment belongs to (random, chosen when the log was created).
    pub wal_id: u64,
}

/// Why a header did not decode.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// The bytes are too short to hold the header.
    #[error("truncated header")]
    Truncated,
    /// The magic number is wrong (includes an all-zero, never-written header).
    #[error("bad magic")]
    BadMagic,
    /// The checksum does not match.
    #[error("bad checksum")]
    BadChecksum,
    /// A batch header's own checksum does not match: nothing in it (its length above
    /// all) is believed.
    #[error("bad batch header checksum")]
    BadHeaderChecksum,
    /// A valid header written by a newer format version.
    #[error("format version {0} is newer than supported {FORMAT_VERSION}")]
    NewerVersion(u32),
    /// A segment header of an older, unsupported format version.
    #[error("format version {0} is older than supported {FORMAT_VERSION}")]
    OlderVersion(u32),
    /// The lengths inside the header or its records are inconsistent.
    #[error("inconsistent lengths")]
    BadLength,
}

/// A decoded, verified batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Total bytes of the batch, header included.
    pub len: usize,
    /// Number of records.
    pub count: u32,
    /// Position known durable when the batch was written.
    pub durable: Position,
    /// Whether the batch seals its segment.
    pub sealed: bool,
}

/// A record's decoded body. Offsets are relative to the start of the slice given to
/// [`RecordCodec::decode_records`] plus `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordBody {
    /// Entries replacing the log from `first`.
    Entries {
        /// Index of the first entry.
        first: u64,
        /// (term, data offset, data length) of each entry.
        entries: Vec<(u64, u32, u32)>,
    },
    /// Entries copied by a rewrite, with the group's last index at the time.
    Rewrite {
        /// The group's last index when the rewrite was written.
        last: u64,
        /// Index of the first entry.
        first: u64,
        /// (term, data offset, data length) of each entry.
        entries: Vec<(u64, u32, u32)>,
    },
    /// A hard state.
    HardState(HardState),
    /// Metadata at (offset, length).
    Meta(u32, u32),
    /// A compaction mark.
    Compact {
        /// First index kept.
        index: u64,
        /// Last index kept (entries above are gone).
        last: u64,
    },
    /// The group was removed.
    Remove,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owning group.
    pub group: u64,
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Total record length.
    pub len: u32,
    /// The body.
    pub body: RecordBody,
}

/// Encoder and verifier of the format described in this module's documentation.
pub struct RecordCodec;

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

impl RecordCodec {
    /// The checksum seed of a segment life: CRC32C of `seq` and `salt`.
    pub fn seed(seq: u64, salt: u64) -> u32 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&seq.to_le_bytes());
        b[8..].copy_from_slice(&salt.to_le_bytes());
        crc32c::crc32c(&b)
    }

    /// Encodes a segment header.
    pub fn encode_segment_header(h: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&h.seq.to_le_bytes());
        b[24..32].copy_from_slice(&h.salt.to_le_bytes());
        b[32..40].copy_from_slice(&h.size.to_le_bytes());
        b[40..48].copy_from_slice(&h.wal_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..SEGMENT_HEADER_CRC_AT]);
        b[SEGMENT_HEADER_CRC_AT..SEGMENT_HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a segment header: magic, then version (before the checksum,
    /// whose place a newer version may move), then checksum.
    pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, HeaderError> {
        let b = b.get(..SEGMENT_HEADER_LEN).ok_or(HeaderError::Truncated)?;
        if &b[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = le_u32(b, 8).ok_or(HeaderError::Truncated)?;
        if version > FORMAT_VERSION {
            return Err(HeaderError::NewerVersion(version));
        }
        if version < FORMAT_VERSION {
            return Err(HeaderError::OlderVersion(version));
        }
        let crc = le_u32(b, SEGMENT_HEADER_CRC_AT).ok_or(HeaderError::Truncated)?;
        if crc != crc32c::crc32c(&b[0..SEGMENT_HEADER_CRC_AT]) {
            return Err(HeaderError::BadChecksum);
        }
        Ok(SegmentHeader {
            seq: le_u64(b, 16).ok_or(HeaderError::Truncated)?,
            salt: le_u64(b, 24).ok_or(HeaderError::Truncated)?,
            size: le_u64(b, 32).ok_or(HeaderError::Truncated)?,
            wal_id: le_u64(b, 40).ok_or(HeaderError::Truncated)?,
        })
    }

    /// Writes a batch header (with a zero checksum) at the end of `buf`; returns its
    /// offset in `buf`. Finish it with [`RecordCodec::finish_batch`].
    pub fn begin_batch(buf: &mut Vec<u8>, durable: Position) -> usize {
        Self::begin_batch_flags(buf, durable, 0)
    }

    /// A complete seal batch (no records) for a segment with checksum seed `seed`.
    pub fn encode_seal(durable: Position, seed: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN);
        Self::begin_batch_flags(&mut buf, durable, BATCH_FLAG_SEAL);
        Self::finish_batch(&mut buf, 0, 0, seed);
        buf
    }

    fn begin_batch_flags(buf: &mut Vec<u8>, durable: Position, flags: u16) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
        buf.extend_from_slice(&(FORMAT_VERSION as u16).to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes()); // len
        buf.extend_from_slice(&0u32.to_le_bytes()); // count
        buf.extend_from_slice(&durable.seq.to_le_bytes());
        buf.extend_from_slice(&durable.offset.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes()); // body crc
        buf.extend_from_slice(&0u32.to_le_bytes()); // header crc
        start
    }

    /// Fills in length, record count and both checksums of the batch begun at `start`,
    /// whose records are everything after its header to the end of `buf`.
    pub fn finish_batch(buf: &mut [u8], start: usize, count: u32, seed: u32) {
        let len = (buf.len() - start) as u32;
        buf[start + 8..start + 12].copy_from_slice(&len.to_le_bytes());
        buf[start + 12..start + 16].copy_from_slice(&count.to_le_bytes());
        let body = crc32c::crc32c_append(seed, &buf[start + BATCH_HEADER_LEN..]);
        buf[start + 32..start + 36].copy_from_slice(&body.to_le_bytes());
        Self::seal_batch_header(&mut buf[start..start + BATCH_HEADER_LEN], seed);
    }

    /// Recomputes the header checksum of the batch header `h` (its first
    /// [`BATCH_HEADER_LEN`] bytes) after its fields were set.
    pub fn seal_batch_header(h: &mut [u8], seed: u32) {
        if h.len() < BATCH_HEADER_LEN {
            return;
        }
        let crc = crc32c::crc32c_append(seed, &h[0..BATCH_HEADER_CRC_AT]);
        h[BATCH_HEADER_CRC_AT..BATCH_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    /// Whether `b` starts with the batch magic number (a cheap pre-check for scans).
    pub fn has_batch_magic(b: &[u8]) -> bool {
        b.first() == Some(&(BATCH_MAGIC as u8)) && le_u32(b, 0) == Some(BATCH_MAGIC)
    }

    /// Decodes and verifies the header of the batch starting at `b[0]` (`b` runs to the
    /// end of the segment): its own checksum first, over [`BATCH_HEADER_LEN`] bytes, and
    /// only then its fields, the length checked against `b`. Reads nothing past the
    /// header. The records are verified by [`RecordCodec::verify_batch_body`].
    pub fn decode_batch_header(b: &[u8], seed: u32) -> Result<BatchHeader, HeaderError> {
        let h = b.get(..BATCH_HEADER_LEN).ok_or(HeaderError::Truncated)?;
        if le_u32(h, 0) != Some(BATCH_MAGIC) {
            return Err(HeaderError::BadMagic);
        }
        let crc = le_u32(h, BATCH_HEADER_CRC_AT).ok_or(HeaderError::Truncated)?;
        if crc != crc32c::crc32c_append(seed, &h[0..BATCH_HEADER_CRC_AT]) {
            return Err(HeaderError::BadHeaderChecksum);
        }
        // The header is genuine from here on.
        let version = u16::from_le_bytes([h[4], h[5]]) as u32;
        if version > FORMAT_VERSION {
            return Err(HeaderError::NewerVersion(version));
        }
        if version < FORMAT_VERSION {
            return Err(HeaderError::OlderVersion(version));
        }
        let flags = u16::from_le_bytes([h[6], h[7]]);
        if flags & !BATCH_FLAG_SEAL != 0 {
            return Err(HeaderError::BadLength);
        }
        let len = le_u32(h, 8).ok_or(HeaderError::Truncated)? as usize;
        if len < BATCH_HEADER_LEN || len > b.len() {
            return Err(HeaderError::BadLength);
        }
        let count = le_u32(h, 12).ok_or(HeaderError::Truncated)?;
        let sealed = flags & BATCH_FLAG_SEAL != 0;
        if sealed && (count != 0 || len != BATCH_HEADER_LEN) {
            return Err(HeaderError::BadLength);
        }
        Ok(BatchHeader {
            sealed,
            len,
            count,
            durable: Position {
                seq: le_u64(h, 16).ok_or(HeaderError::Truncated)?,
                offset: le_u64(h, 24).ok_or(HeaderError::Truncated)?,
            },
        })
    }

    /// Verifies the body checksum of the batch at `b[0]` whose header decoded as `h`.
    pub fn verify_batch_body(b: &[u8], h: &BatchHeader, seed: u32) -> Result<(), HeaderError> {
        let body = b.get(BATCH_HEADER_LEN..h.len).ok_or(HeaderError::BadLength)?;
        let crc = le_u32(b, 32).ok_or(HeaderError::Truncated)?;
        if crc != crc32c::crc32c_append(seed, body) {
            return Err(HeaderError::BadChecksum);
        }
        Ok(())
    }

    /// Decodes and verifies the batch starting at `b[0]`: header checksum, then fields,
    /// then body checksum. Record checksums are verified by
    /// [`RecordCodec::decode_records`].
    pub fn decode_batch(b: &[u8], seed: u32) -> Result<BatchHeader, HeaderError> {
        let h = Self::decode_batch_header(b, seed)?;
        Self::verify_batch_body(b, &h, seed)?;
        Ok(h)
    }

    /// Starts a record of `kind` for `group` at the end of `buf`; returns its offset in
    /// `buf`. Append the body, then call [`RecordCodec::finish_record`].
    pub fn begin_record(buf: &mut Vec<u8>, group: u64, kind: u8) -> usize {
        let start = buf.len();
        buf.extend_from_slice(&[0u8; 8]);
        buf.extend_from_slice(&group.to_le_bytes());
        buf.push(kind);
        start
    }

    /// Fills in length and checksum of the record begun at `start` (ending at the end
    /// of `buf`).
    pub fn finish_record(buf: &mut [u8], start: usize, seed: u32) {
        let len = (buf.len() - start) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(seed, &buf[start + 8..]);
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Appends an entry (header and data) to an entries record body.
    pub fn put_entry(buf: &mut Vec<u8>, term: u64, data: &[u8]) {
        buf.extend_from_slice(&term.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(data);
    }

    /// Decodes and verifies the `count` records of a batch body `b`, which starts at
    /// segment offset `base`.
    pub fn decode_records(b: &[u8], base: usize, count: u32, seed: u32) -> Result<Vec<Record>, HeaderError> {
        // A count from a verified header, yet never room for more records than fit.
        let mut out = Vec::with_capacity((count as usize).min(b.len() / RECORD_HEADER_LEN));
        let mut at = 0usize;
        for _ in 0..count {
            let len = le_u32(b, at).ok_or(HeaderError::BadLength)? as usize;
            if len < RECORD_HEADER_LEN || at + len > b.len() {
                return Err(HeaderError::BadLength);
            }
            let rec = &b[at..at + len];
            let crc = le_u32(rec, 4).ok_or(HeaderError::BadLength)?;
            if crc != crc32c::crc32c_append(seed, &rec[8..]) {
                return Err(HeaderError::BadChecksum);
            }
            let group = le_u64(rec, 8).ok_or(HeaderError::BadLength)?;
            let kind = rec[16];
            let body_base = base + at + RECORD_HEADER_LEN;
            let body = Self::decode_body(kind, &rec[RECORD_HEADER_LEN..], body_base)?;
            out.push(Record { group, offset: (base + at) as u32, len: len as u32, body });
            at += len;
        }
        if at != b.len() {
            return Err(HeaderError::BadLength);
        }
        Ok(out)
    }

    fn decode_entries(b: &[u8], base: usize) -> Result<Vec<(u64, u32, u32)>, HeaderError> {
        let count = le_u32(b, 0).ok_or(HeaderError::BadLength)? as usize;
        let mut at = 4usize;
        let mut out = Vec::with_capacity(count.min(b.len() / ENTRY_HEADER_LEN));
        for _ in 0..count {
            let term = le_u64(b, at).ok_or(HeaderError::BadLength)?;
            let len = le_u32(b, at + 8).ok_or(HeaderError::BadLength)? as usize;
            let data_at = at + ENTRY_HEADER_LEN;
            if data_at + len > b.len() {
                return Err(HeaderError::BadLength);
            }
            out.push((term, (base + data_at) as u32, len as u32));
            at = data_at + len;
        }
        if at != b.len() {
            return Err(HeaderError::BadLength);
        }
        Ok(out)
    }

    /// Whether entries `first..first + count` stay below `u64::MAX` (the writer never
    /// accepts more: see `SegmentWriter::validate`), so applying them cannot overflow.
    fn index_range_ok(first: u64, count: usize) -> bool {
        first >= 1 && first.checked_add(count as u64).is_some()
    }

    fn decode_body(kind: u8, b: &[u8], base: usize) -> Result<RecordBody, HeaderError> {
        let bad = HeaderError::BadLength;
        Ok(match kind {
            KIND_ENTRIES => {
                let first = le_u64(b, 0).ok_or(bad)?;
                let entries = Self::decode_entries(b.get(8..).ok_or(bad)?, base + 8)?;
                if !Self::index_range_ok(first, entries.len()) {
                    return Err(bad);
                }
                RecordBody::Entries { first, entries }
            }
            KIND_REWRITE => {
                let last = le_u64(b, 0).ok_or(bad)?;
                let first = le_u64(b, 8).ok_or(bad)?;
                let entries = Self::decode_entries(b.get(16..).ok_or(bad)?, base + 16)?;
                if !Self::index_range_ok(first, entries.len()) || last == u64::MAX {
                    return Err(bad);
                }
                RecordBody::Rewrite { last, first, entries }
            }
            KIND_HARD_STATE => {
                if b.len() != 24 {
                    return Err(bad);
                }
                RecordBody::HardState(HardState {
                    term: le_u64(b, 0).ok_or(bad)?,
                    vote: le_u64(b, 8).ok_or(bad)?,
                    commit: le_u64(b, 16).ok_or(bad)?,
                })
            }
            KIND_META => RecordBody::Meta(base as u32, b.len() as u32),
            KIND_COMPACT => {
                if b.len() != 16 {
                    return Err(bad);
                }
                let (index, last) = (le_u64(b, 0).ok_or(bad)?, le_u64(b, 8).ok_or(bad)?);
                if index == u64::MAX || last == u64::MAX {
                    return Err(bad);
                }
                RecordBody::Compact { index, last }
            }
            KIND_REMOVE => {
                if !b.is_empty() {
                    return Err(bad);
                }
                RecordBody::Remove
            }
            _ => return Err(bad),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_roundtrip_and_newer_version_refused() {
        let h = SegmentHeader { seq: 7, salt: 99, size: 1 << 20, wal_id: 0xabcd };
        let mut b = RecordCodec::encode_segment_header(&h);
        assert_eq!(RecordCodec::decode_segment_header(&b), Ok(h));
        let mut c = b;
        c[41] ^= 1;
        assert_eq!(RecordCodec::decode_segment_header(&c), Err(HeaderError::BadChecksum), "wal id covered");
        b[8] = 3;
        assert_eq!(RecordCodec::decode_segment_header(&b), Err(HeaderError::NewerVersion(3)));
        b[8] = 1;
        assert_eq!(RecordCodec::decode_segment_header(&b), Err(HeaderError::OlderVersion(1)));
        b[8] = 2;
        b[17] ^= 1;
        assert_eq!(RecordCodec::decode_segment_header(&b), Err(HeaderError::BadChecksum));
    }

    #[test]
    fn batch_checksum_depends_on_segment_seed_and_every_byte() {
        let mut buf = Vec::new();
        let start = RecordCodec::begin_batch(&mut buf, Position { seq: 1, offset: 64 });
        let r = RecordCodec::begin_record(&mut buf, 5, KIND_ENTRIES);
        buf.extend_from_slice(&3u64.to_le_bytes());
        buf.extend_from_slice(&1u32.to_le_bytes());
        RecordCodec::put_entry(&mut buf, 2, b"hello");
        RecordCodec::finish_record(&mut buf, r, 11);
        RecordCodec::finish_batch(&mut buf, start, 1, 11);
        let h = RecordCodec::decode_batch(&buf, 11).expect("valid");
        assert_eq!(h.len, buf.len());
        let recs = RecordCodec::decode_records(&buf[BATCH_HEADER_LEN..], 1000, 1, 11).expect("records");
        assert_eq!(recs[0].group, 5);
        match &recs[0].body {
            RecordBody::Entries { first, entries } => {
                assert_eq!(*first, 3);
                assert_eq!(entries.len(), 1);
                let (term, off, len) = entries[0];
                assert_eq!(term, 2);
                assert_eq!(len, 5);
                let rel = off as usize - 1000 + BATCH_HEADER_LEN;
                assert_eq!(&buf[rel..rel + 5], b"hello");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(RecordCodec::decode_batch(&buf, 12).is_err(), "other seed");
        for i in 0..buf.len() {
            let mut c = buf.clone();
            c[i] ^= 0x10;
            assert!(RecordCodec::decode_batch(&c, 11).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn records_whose_indexes_would_overflow_are_refused() {
        for (first, ok) in [(1u64, true), (u64::MAX - 1, true), (u64::MAX, false), (0, false)] {
            let mut buf = Vec::new();
            let r = RecordCodec::begin_record(&mut buf, 5, KIND_ENTRIES);
            buf.extend_from_slice(&first.to_le_bytes());
            buf.extend_from_slice(&1u32.to_le_bytes());
            RecordCodec::put_entry(&mut buf, 2, b"x");
            RecordCodec::finish_record(&mut buf, r, 3);
            assert_eq!(RecordCodec::decode_records(&buf, 0, 1, 3).is_ok(), ok, "first {first}");
        }
        let mut buf = Vec::new();
        let r = RecordCodec::begin_record(&mut buf, 5, KIND_COMPACT);
        buf.extend_from_slice(&u64::MAX.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        RecordCodec::finish_record(&mut buf, r, 3);
        assert_eq!(RecordCodec::decode_records(&buf, 0, 1, 3), Err(HeaderError::BadLength));
    }
}
