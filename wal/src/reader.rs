//! [`SegmentReader`]: reads and verifies the batches of one segment's bytes, the way
//! recovery does: a batch at a given offset, or every valid batch at any offset of a range
//! (the scan the torn-tail rule needs). [`check_segment`] runs both over arbitrary bytes
//! (the entry point of the fuzz target and of the reader's property test).
//!
//! Owns: the order of verification (a batch header's own checksum before its length is
//! believed, then the body checksum, then each record's) and the count of bytes it fed to
//! checksums, which proves the reading linear in the segment's size whatever the bytes
//! hold. Never: touches a file, applies a record, or allocates more than the bytes it is
//! given (record lists are bounded by the records that can fit in the batch).

use std::cell::Cell;

use crate::codec::{
    HeaderError, Record, RecordCodec, SegmentHeader, BATCH_HEADER_CRC_AT, BATCH_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::types::Position;

/// A valid batch found by a scan: (offset, length, durable claim).
pub(crate) type Found = (u64, u64, Position);

/// A verified batch.
pub(crate) struct ReadBatch {
    /// Total bytes, header included.
    pub len: u64,
    /// The durable position it claims.
    pub durable: Position,
    /// Its verified records.
    pub records: Vec<Record>,
    /// Whether it seals the segment.
    pub sealed: bool,
}

/// Reader of one segment's bytes.
pub(crate) struct SegmentReader<'a> {
    /// The segment's bytes, cut to its size.
    bytes: &'a [u8],
    seed: u32,
    /// Bytes fed to checksums so far.
    work: Cell<u64>,
}

impl<'a> SegmentReader<'a> {
    /// A reader of `bytes` (the segment's first `size` bytes at most) with checksum seed
    /// `seed`.
    pub(crate) fn new(bytes: &'a [u8], size: u64, seed: u32) -> SegmentReader<'a> {
        let end = usize::try_from(size).unwrap_or(usize::MAX).min(bytes.len());
        SegmentReader { bytes: &bytes[..end], seed, work: Cell::new(0) }
    }

    /// Bytes fed to checksums so far.
    pub(crate) fn work(&self) -> u64 {
        self.work.get()
    }

    fn add_work(&self, n: usize) {
        self.work.set(self.work.get() + n as u64);
    }

    /// Decodes and verifies the batch at `off`: its header's own checksum (40 bytes read),
    /// then, the header believed, the body checksum and every record.
    pub(crate) fn batch(&self, off: u64) -> Result<ReadBatch, HeaderError> {
        let start = usize::try_from(off).map_err(|_| HeaderError::Truncated)?;
        let b = self.bytes.get(start..).ok_or(HeaderError::Truncated)?;
        if b.len() >= BATCH_HEADER_LEN {
            self.add_work(BATCH_HEADER_CRC_AT);
        }
        let h = RecordCodec::decode_batch_header(b, self.seed)?;
        self.add_work(h.len - BATCH_HEADER_LEN);
        RecordCodec::verify_batch_body(b, &h, self.seed)?;
        self.add_work(h.len - BATCH_HEADER_LEN);
        let records = RecordCodec::decode_records(
            &b[BATCH_HEADER_LEN..h.len],
            start + BATCH_HEADER_LEN,
            h.count,
            self.seed,
        )?;
        Ok(ReadBatch { len: h.len as u64, durable: h.durable, records, sealed: h.sealed })
    }

    /// Every valid batch starting at any offset in `[from, end)`. A valid batch of a newer
    /// format version is an error: `(offset, version)`.
    pub(crate) fn scan_valid(&self, from: u64) -> Result<Vec<Found>, (u64, u32)> {
        let mut out = Vec::new();
        let mut o = usize::try_from(from).unwrap_or(usize::MAX);
        // Bounded: `o` grows by one each turn up to the end of the bytes.
        while o.saturating_add(BATCH_HEADER_LEN) <= self.bytes.len() {
            if RecordCodec::has_batch_magic(&self.bytes[o..]) {
                match self.batch(o as u64) {
                    Ok(b) => out.push((o as u64, b.len, b.durable)),
                    Err(HeaderError::NewerVersion(v)) => return Err((o as u64, v)),
                    Err(_) => {}
                }
            }
            o += 1;
        }
        Ok(out)
    }
}

/// What [`check_segment`] found in a segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCheck {
    /// The segment header.
    pub header: SegmentHeader,
    /// Valid batches read one after another from the header.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Where that sequential read stopped (the end of the log if this were the last
    /// segment).
    pub end: u64,
    /// Whether it stopped at a seal.
    pub sealed: bool,
    /// Valid batches found at any offset after `end` (recovery's torn-tail scan).
    pub valid_after_end: u64,
    /// Bytes fed to checksums: linear in the segment's size whatever the bytes hold (at
    /// most 36 per batch magic number, which fits at most every 4 bytes, plus twice the
    /// bytes of valid batches: under 12 times the size).
    pub checked_bytes: u64,
}

/// Why [`check_segment`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentCheckError {
    /// The segment header did not decode.
    #[error("segment header: {0}")]
    Header(HeaderError),
    /// A valid batch of a newer format version.
    #[error("batch at offset {offset} has newer format version {version}")]
    NewerFormat {
        /// Offset of the batch.
        offset: u64,
        /// Its version.
        version: u32,
    },
}

/// Reads `bytes` as one segment file the way recovery does (header, batches one after
/// another with their records, then the scan for valid batches past where that stopped),
/// without applying anything. For fuzzing and inspection tools: it never panics, and
/// allocates no buffer larger than `bytes`.
pub fn check_segment(bytes: &[u8]) -> Result<SegmentCheck, SegmentCheckError> {
    let header = RecordCodec::decode_segment_header(bytes).map_err(SegmentCheckError::Header)?;
    let seed = RecordCodec::seed(header.seq, header.salt);
    let size = header.size.max(SEGMENT_HEADER_LEN as u64);
    let r = SegmentReader::new(bytes, size, seed);
    let (mut off, mut batches, mut records, mut sealed) = (SEGMENT_HEADER_LEN as u64, 0, 0, false);
    // Bounded: each turn moves `off` forward by a batch's length (at least its header).
    loop {
        match r.batch(off) {
            Ok(b) => {
                off += b.len;
                batches += 1;
                records += b.records.len() as u64;
                if b.sealed {
                    sealed = true;
                    break;
                }
            }
            Err(HeaderError::NewerVersion(version)) => {
                return Err(SegmentCheckError::NewerFormat { offset: off, version })
            }
            Err(_) => break,
        }
    }
    let valid = r
        .scan_valid(off + 1)
        .map_err(|(offset, version)| SegmentCheckError::NewerFormat { offset, version })?;
    Ok(SegmentCheck {
        header,
        batches,
        records,
        end: off,
        sealed,
        valid_after_end: valid.len() as u64,
        checked_bytes: r.work(),
    })
}
