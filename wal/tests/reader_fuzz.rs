//! The recovery reader fed arbitrary and mutated segment bytes (issue 12, point 10, the
//! WAL's half; `wal/fuzz` runs the same entry point under libFuzzer): it never panics,
//! its allocations stay linear in the bytes it is given, its work (bytes checksummed) too,
//! and it either reads valid batches or stops (an error or a truncation).
//!
//! `reader_never_panics_and_stays_linear` runs 100,000 cases of small segments through
//! [`check_segment`] (the reader alone, in memory: `FLOTILLA_WAL_READER_CASES` changes the
//! count); `recovery_through_the_file_system_never_panics` runs fewer, whole, through
//! `Wal::open_with_fs` on real files (a segment file is mapped, so the bytes the reader
//! sees are the file's).
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use common::*;
use flotilla_wal::codec::{
    RecordCodec, SegmentHeader, BATCH_HEADER_LEN, KIND_COMPACT, KIND_ENTRIES, KIND_HARD_STATE, KIND_META,
    KIND_REMOVE, KIND_REWRITE, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use flotilla_wal::{check_segment, OpenError, Position, StdFs, Wal};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Peak live bytes allocated by this thread while tracking.

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // try_with: the thread-locals may be gone during thread teardown.
    let _ = TRACK.try_with(|t| {
        if t.get() {
            LIVE.with(|l| {
                let v = l.get() + delta;
                l.set(v);
                PEAK.with(|p| p.set(p.get().max(v)));
            });
        }
    });
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        track(l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(-(l.size() as isize));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        track(n as isize - l.size() as isize);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak bytes it had allocated at once.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}

// ---------------------------------------------------------------------------------------
// Genuine segments, then mutations.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A batch of a genuine segment: its offset and its records' offsets.
type Batch = (usize, Vec<usize>);

/// A genuine segment of `size` bytes: header, a few batches of records of every kind,
/// maybe a seal. Returns the bytes, the checksum seed and each batch's (offset, record
/// offsets).
fn genuine(rng: &mut Rng, size: usize) -> (Vec<u8>, u32, Vec<Batch>) {
    let (seq, salt) = (1 + rng.below(5), rng.next());
    let h = SegmentHeader { seq, salt, size: size as u64, wal_id: rng.next() | 1 };
    let seed = RecordCodec::seed(seq, salt);
    let mut buf = RecordCodec::encode_segment_header(&h).to_vec();
    let mut batches = Vec::new();
    let mut index = 1u64;
    for _ in 0..rng.below(6) {
        let mut b = Vec::new();
        let durable = Position { seq, offset: buf.len() as u64 };
        RecordCodec::begin_batch(&mut b, durable);
        let mut recs = Vec::new();
        let n = 1 + rng.below(4) as u32;
        for _ in 0..n {
            let group = rng.below(3);
            let kind = [KIND_ENTRIES, KIND_REWRITE, KIND_HARD_STATE, KIND_META, KIND_COMPACT, KIND_REMOVE]
                [rng.below(6) as usize];
            recs.push(buf.len() + b.len());
            let r = RecordCodec::begin_record(&mut b, group, kind);
            match kind {
                KIND_ENTRIES | KIND_REWRITE => {
                    if kind == KIND_REWRITE {
                        b.extend_from_slice(&(index + 3).to_le_bytes());
                    }
                    let count = 1 + rng.below(3) as u32;
                    b.extend_from_slice(&index.to_le_bytes());
                    b.extend_from_slice(&count.to_le_bytes());
                    for _ in 0..count {
                        let data: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                        RecordCodec::put_entry(&mut b, 1, &data);
                    }
                    index += count as u64;
                }
                KIND_HARD_STATE => {
                    for _ in 0..3 {
                        b.extend_from_slice(&rng.below(10).to_le_bytes());
                    }
                }
                KIND_META => b.extend((0..rng.below(30)).map(|_| rng.next() as u8)),
                KIND_COMPACT => {
                    b.extend_from_slice(&1u64.to_le_bytes());
                    b.extend_from_slice(&index.to_le_bytes());
                }
                _ => {}
            }
            RecordCodec::finish_record(&mut b, r, seed);
        }
        RecordCodec::finish_batch(&mut b, 0, n, seed);
        if buf.len() + b.len() + BATCH_HEADER_LEN > size {
            break;
        }
        batches.push((buf.len(), recs));
        buf.extend_from_slice(&b);
    }
    if rng.below(3) == 0 {
        let durable = Position { seq, offset: buf.len() as u64 };
        buf.extend_from_slice(&RecordCodec::encode_seal(durable, seed));
    }
    buf.resize(size, 0);
    (buf, seed, batches)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Mutates a genuine segment: bit flips, random runs, extreme lengths and counts in batch
/// and record headers, batch-like headers planted in the bytes, truncation; then maybe
/// re-seals the checksums at the original batch (and record) offsets, so the mutated
/// fields get past verification and reach the decoders.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, seed: u32, batches: &[Batch]) {
    let extreme = |rng: &mut Rng, len: usize| -> u32 {
        match rng.below(6) {
            0 => 0,
            1 => u32::MAX,
            2 => rng.next() as u32,
            3 => len as u32,
            4 => (len as u32).wrapping_sub(rng.below(64) as u32),
            _ => rng.below(64) as u32,
        }
    };
    for _ in 0..1 + rng.below(4) {
        let len = bytes.len();
        if len == 0 {
            break;
        }
        match rng.below(7) {
            0 => {
                let at = rng.below(len as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(len as u64) as usize;
                let n = (rng.below(64) as usize).min(len - at);
                for b in &mut bytes[at..at + n] {
                    *b = rng.next() as u8;
                }
            }
            2 if !batches.is_empty() => {
                // A batch header's len (8) or count (12).
                let (off, _) = &batches[rng.below(batches.len() as u64) as usize];
                let field = if rng.below(2) == 0 { 8 } else { 12 };
                let v = extreme(rng, len);
                put_u32(bytes, off + field, v);
            }
            3 if !batches.is_empty() => {
                // A record's len, or an entries record's count.
                let (_, recs) = &batches[rng.below(batches.len() as u64) as usize];
                if let Some(&r) = recs.get(rng.below(recs.len() as u64) as usize) {
                    let at = if rng.below(2) == 0 { r } else { r + RECORD_HEADER_LEN + 8 };
                    let v = extreme(rng, len);
                    put_u32(bytes, at, v);
                }
            }
            4 => {
                // A batch-like header (magic, version, a length) somewhere.
                let mut fake = Vec::new();
                RecordCodec::begin_batch(&mut fake, Position { seq: 1, offset: 64 });
                let v = extreme(rng, len);
                fake[8..12].copy_from_slice(&v.to_le_bytes());
                if rng.below(2) == 0 {
                    RecordCodec::seal_batch_header(&mut fake, seed);
                }
                let at = rng.below(len as u64) as usize;
                let n = fake.len().min(len - at);
                bytes[at..at + n].copy_from_slice(&fake[..n]);
            }
            5 => {
                let keep = rng.below(len as u64 + 1) as usize;
                bytes.truncate(keep);
            }
            _ => {
                let at = rng.below(SEGMENT_HEADER_LEN.min(len) as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
        }
    }
    match rng.below(3) {
        0 => {}
        reseal => {
            for (off, recs) in batches {
                if reseal == 2 {
                    for &r in recs {
                        let Some(h) = bytes.get(r..r + 4) else { continue };
                        let rl = u32::from_le_bytes(h.try_into().unwrap()) as usize;
                        if rl >= 8 && r + rl <= bytes.len() {
                            let crc = crc32c::crc32c_append(seed, &bytes[r + 8..r + rl]);
                            put_u32(bytes, r + 4, crc);
                        }
                    }
                }
                let Some(h) = bytes.get(*off..off + BATCH_HEADER_LEN) else { continue };
                let bl = u32::from_le_bytes(h[8..12].try_into().unwrap()) as usize;
                if bl >= BATCH_HEADER_LEN && off + bl <= bytes.len() {
                    let crc = crc32c::crc32c_append(seed, &bytes[off + BATCH_HEADER_LEN..off + bl]);
                    put_u32(bytes, off + 32, crc);
                }
                RecordCodec::seal_batch_header(&mut bytes[*off..off + BATCH_HEADER_LEN], seed);
            }
        }
    }
}

/// A case: a genuine segment of 1 to 4 KiB, mutated (or, one case in eight, random bytes
/// behind a valid header).
fn case(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let size = 1024 * (1 + rng.below(4) as usize);
    let (mut bytes, cseed, batches) = genuine(&mut rng, size);
    if rng.below(8) == 0 {
        for b in &mut bytes[SEGMENT_HEADER_LEN..] {
            *b = rng.next() as u8;
        }
    } else {
        mutate(&mut rng, &mut bytes, cseed, &batches);
    }
    bytes
}

fn cases(default: u32) -> u32 {
    std::env::var("FLOTILLA_WAL_READER_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Decoded records are larger than encoded ones (a 17-byte record becomes a struct of a
/// few words): the bound is linear, with this factor, plus a constant.
const ALLOC_FACTOR: usize = 8;
const ALLOC_SLACK: usize = 16 * 1024;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(100_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reader_never_panics_and_stays_linear(seed in any::<u64>()) {
        let bytes = case(seed);
        let (res, peak) = peak_alloc(|| check_segment(&bytes));
        prop_assert!(
            peak <= ALLOC_FACTOR * bytes.len() + ALLOC_SLACK,
            "{peak} bytes allocated at once for {} input bytes", bytes.len()
        );
        if let Ok(c) = res {
            prop_assert!(c.end as usize <= bytes.len().max(SEGMENT_HEADER_LEN));
            prop_assert!(
                c.checked_bytes <= 12 * bytes.len() as u64,
                "{} bytes checksummed for {} input bytes", c.checked_bytes, bytes.len()
            );
        }
    }
}

#[test]
fn genuine_segments_read_whole() {
    for seed in 0..2000u64 {
        let mut rng = Rng(seed);
        let (bytes, _, batches) = genuine(&mut rng, 4096);
        let c = check_segment(&bytes).unwrap();
        assert_eq!(c.batches as usize, batches.len() + usize::from(c.sealed), "seed {seed}");
        assert_eq!(c.valid_after_end, 0, "seed {seed}");
    }
}

/// Arbitrary segment files through the whole recovery (`Wal::open_with_fs`, real files):
/// never a panic; a refusal is a typed error.
#[test]
fn recovery_through_the_file_system_never_panics() {
    let n = cases(100_000) / 200;
    let root = scratch();
    let started = std::time::Instant::now();
    let (mut opened, mut refused) = (0, 0);
    for seed in 0..n as u64 {
        let dir = root.path().join(format!("c{seed}"));
        std::fs::create_dir(&dir).unwrap();
        // A segment file is at least as large as its header says (64 KiB at least).
        let mut bytes = case(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let h = RecordCodec::decode_segment_header(&bytes).ok();
        let seq = h.map_or(1, |h| h.seq);
        if let Some(h) = h {
            let mut hdr = h;
            hdr.size = 64 * 1024;
            bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&RecordCodec::encode_segment_header(&hdr));
        }
        bytes.resize(64 * 1024, 0);
        std::fs::write(dir.join(format!("{seq:020}.wal")), &bytes).unwrap();
        match Wal::open_with_fs(config(&dir), Arc::new(StdFs)) {
            Ok(w) => {
                opened += 1;
                drop(w);
            }
            Err(
                OpenError::Corrupt { .. }
                | OpenError::NewerFormat { .. }
                | OpenError::UnsupportedFormat { .. },
            ) => refused += 1,
            Err(e) => panic!("seed {seed}: unexpected error {e}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("{n} whole recoveries in {:?}: {opened} opened, {refused} refused", started.elapsed());
    assert!(opened > 0 && refused > 0, "{opened} opened, {refused} refused: the cases test nothing");
}
