//! The frame decoders never panic on any input: `decode_frame` and the control-payload
//! decoders allocate at most a constant (payloads are zero-copy slices), the message lane's
//! incremental `FrameReader` at most the input plus one frame within the limit. Checked by
//! a seeded mutation loop over valid frames (1,000,000 inputs, bounded to 60 s) and
//! proptest cases. Longer runs: the cargo-fuzz target in net/fuzz.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_net::frame::*;
use proptest::prelude::*;

/// Counts the bytes allocated by the current thread while its `ON` flag is set.
struct Counting;
thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; the accounting is two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // try_with: the thread-locals may be gone during thread teardown.
        let _ = ON.try_with(|on| {
            if on.get() {
                ALLOCATED.with(|a| a.set(a.get() + l.size()));
            }
        });
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const MAX: usize = 64 * 1024;

/// Payloads are zero-copy slices of the input; the only allocation allowed is the one
/// shared-buffer header `bytes` creates when a `Vec`-backed buffer is first sliced
/// (24 bytes), whatever lengths the input announces.
const SHARE_HEADER: usize = 64;

/// Decodes every frame in `input` (as a stream reader would) and each control payload.
/// Returns the number of frames decoded.
fn decode_all(input: &Bytes) -> usize {
    let mut rest = input.clone();
    let mut n = 0;
    while !rest.is_empty() {
        match decode_frame(&rest, MAX) {
            Ok((f, used)) => {
                assert!(f.payload.len() <= MAX && used <= rest.len());
                let _ = Hello::decode(&f.payload);
                let _ = HelloReply::decode(&f);
                let _ = decode_bulk_start(&f.payload);
                rest = rest.slice(used..);
                n += 1;
            }
            Err(_) => break,
        }
    }
    if let Some(h) = input.get(..HEADER_LEN) {
        let _ = parse_header(&h.try_into().unwrap(), MAX);
    }
    n
}

fn measured(input: &Bytes) -> (usize, usize) {
    ALLOCATED.with(|a| a.set(0));
    ON.with(|on| on.set(true));
    let n = decode_all(input);
    ON.with(|on| on.set(false));
    (n, ALLOCATED.with(|a| a.get()))
}

/// Feeds `input` to the message lane's incremental [`FrameReader`] in pieces of `step`
/// bytes, as QUIC stream chunks arrive, until it errs or the input ends. Returns the
/// frames read and the bytes allocated: at most each complete frame's payload (within the
/// input) plus one pending payload (within `MAX`), plus a small constant per frame.
fn read_all(input: &[u8], step: usize) -> (usize, usize) {
    ALLOCATED.with(|a| a.set(0));
    ON.with(|on| on.set(true));
    let mut r = FrameReader::new(MAX);
    let mut n = 0;
    'outer: for piece in input.chunks(step.max(1)) {
        let mut piece = piece;
        while !piece.is_empty() {
            match r.feed(&mut piece) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= MAX);
                    n += 1;
                }
                Ok(None) => {}
                Err(_) => break 'outer,
            }
        }
    }
    ON.with(|on| on.set(false));
    (n, ALLOCATED.with(|a| a.get()))
}

fn reader_bound(input_len: usize, frames: usize) -> usize {
    input_len + MAX + SHARE_HEADER * (frames + 1)
}

fn seeds() -> Vec<Vec<u8>> {
    let mut s = vec![
        Hello { from: 3, incarnation: 99, to: 1 }.encode().to_vec(),
        HelloReply::Ack { incarnation: 5 }.encode().to_vec(),
        HelloReply::Reject(RejectReason::IdentityMismatch).encode().to_vec(),
        encode_bulk_start(77).to_vec(),
        encode_frame(FrameKind::BulkChunk, &[9u8; 300]).to_vec(),
        encode_frame(FrameKind::BulkEnd, &[]).to_vec(),
        encode_frame(FrameKind::Data, b"a message-lane payload").to_vec(),
    ];
    let all: Vec<u8> = s.concat();
    s.push(all);
    s
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            // Overwrite a length field with something large.
            2 if len >= HEADER_LEN => {
                let at = rng.below(len - 3);
                let l = (rng.next() as u32).to_le_bytes();
                v[at..at + 4].copy_from_slice(&l);
            }
            3 => v.truncate(rng.below(len + 1)),
            4 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
            _ => v.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
        }
    }
}

#[test]
fn seeded_mutation_loop_over_frames() {
    const INPUTS: usize = 1_000_000;
    let seeds = seeds();
    let mut rng = Rng(0xF4A3_E5EE_D000_0001);
    let start = Instant::now();
    let mut decoded = 0;
    for i in 0..INPUTS {
        let mut v = seeds[i % seeds.len()].clone();
        mutate(&mut rng, &mut v);
        let input = Bytes::from(v);
        let (n, alloc) = measured(&input);
        assert!(alloc <= SHARE_HEADER, "the frame decoder allocated {alloc} bytes on input {i}");
        let (m, alloc) = read_all(&input, 1 + rng.below(64));
        assert_eq!(m, n, "the frame reader and decode_frame disagree on input {i}");
        assert!(
            alloc <= reader_bound(input.len(), m),
            "the frame reader allocated {alloc} bytes on input {i}"
        );
        decoded += n;
        assert!(start.elapsed() < Duration::from_secs(60), "loop exceeded 60 s");
    }
    eprintln!("frame mutation loop: {INPUTS} inputs, {decoded} frames decoded, {:?}", start.elapsed());
}

#[test]
fn typed_errors_for_each_kind_of_bad_input() {
    let f = encode_frame(FrameKind::Data, &[1, 2, 3]);
    assert!(matches!(decode_frame(&f.slice(..2), MAX), Err(FrameError::Truncated { .. })));
    let mut v = f.to_vec();
    v[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_frame(&Bytes::from(v), MAX), Err(FrameError::Oversized { .. })));
    let mut v = f.to_vec();
    v[0] = 0;
    assert_eq!(decode_frame(&Bytes::from(v), MAX), Err(FrameError::ZeroVersion));
    let mut v = f.to_vec();
    v[0] = 2;
    assert_eq!(decode_frame(&Bytes::from(v), MAX), Err(FrameError::UnsupportedVersion { version: 2 }));
    assert!(matches!(Hello::decode(&[0; 24]), Err(FrameError::Malformed { .. })));
    let data = decode_frame(&f, MAX).unwrap().0;
    assert!(matches!(HelloReply::decode(&data), Err(FrameError::Unexpected { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]
    #[test]
    fn proptest_arbitrary_bytes(v in proptest::collection::vec(any::<u8>(), 0..256), version in 0u8..3) {
            let mut v = v;
        if let Some(b) = v.first_mut() { *b = version; }
        let (n, alloc) = measured(&Bytes::from(v.clone()));
        prop_assert!(alloc <= SHARE_HEADER);
        let (m, alloc) = read_all(&v, 7);
        prop_assert_eq!(m, n);
        prop_assert!(alloc <= reader_bound(v.len(), m));
    }

    #[test]
    fn proptest_frames_roundtrip(kind in 1u8..=8, payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let kind = FrameKind::from_u8(kind).unwrap();
        let b = encode_frame(kind, &payload);
        let (f, used) = decode_frame(&b, MAX).unwrap();
        prop_assert_eq!(used, b.len());
        prop_assert_eq!(f.kind, kind);
        prop_assert_eq!(&f.payload[..], &payload[..]);
    }
}
