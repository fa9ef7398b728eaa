//! Property test of the RESP request parser (issue 12 point 10, the RESP half; the
//! long-running twin is the `request` target in examples/kv/fuzz): on arbitrary bytes and
//! on mutated valid requests, under random limits, the incremental parser fed the whole
//! input or random pieces returns exactly what the one-shot parser returns, never panics,
//! and never holds more memory than the limits allow.
//!
//! Owns this property only; 100,000 cases per run.

#![allow(clippy::unwrap_used)]

use flotilla_kv::resp::{
    encode_command, parse_request, Limits, RequestLimits, RequestParser, RespError, UnauthLimits,
};
use proptest::prelude::*;

/// What a parser made of an input: the requests, then how it ended.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    requests: Vec<Vec<Vec<u8>>>,
    /// `Ok(n)`: waiting for more with `n` bytes of a request held; `Err`: refused.
    end: Result<usize, RespError>,
}

/// The reference: the one-shot parser, from the start of each request.
fn one_shot(buf: &[u8], lim: &RequestLimits) -> Run {
    let (mut requests, mut pos) = (Vec::new(), 0);
    loop {
        match parse_request(&buf[pos..], lim) {
            Ok(Some((args, used))) => {
                assert!(used > 0, "a request uses bytes");
                requests.push(args);
                pos += used;
            }
            Ok(None) => return Run { requests, end: Ok(buf.len() - pos) },
            Err(e) => return Run { requests, end: Err(e) },
        }
    }
}

/// The longest line the parser collects.
fn line_max(lim: &RequestLimits) -> usize {
    lim.max_inline.min(lim.request.max_request).max(32) + 2
}

/// The incremental parser fed `pieces` in turn, checking its memory after every call.
fn incremental(pieces: &[&[u8]], lim: &RequestLimits) -> Run {
    let mut p = RequestParser::new();
    let mut requests = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            let r = p.feed(piece, lim);
            // Line buffer (doubling growth), the argument list (bounded by the declared
            // count, itself by max_args), and argument buffers (never past their declared
            // length, never more than twice the bytes received).
            let bound = 2 * line_max(lim)
                + lim.request.max_args * std::mem::size_of::<Vec<u8>>()
                + 2 * p.held().min(lim.request.max_request);
            assert!(p.allocated() <= bound, "allocated {} > {bound}", p.allocated());
            assert!(p.held() <= lim.request.max_request + line_max(lim), "held {}", p.held());
            match r {
                Ok((used, cmd)) => {
                    assert!(used <= piece.len());
                    piece = &piece[used..];
                    match cmd {
                        Some(args) => requests.push(args),
                        None => assert!(piece.is_empty(), "without a request all input is consumed"),
                    }
                }
                Err(e) => return Run { requests, end: Err(e) },
            }
        }
    }
    Run { requests, end: Ok(p.held()) }
}

fn limits() -> impl Strategy<Value = RequestLimits> {
    (16usize..400, 0usize..8, 1usize..80, prop::option::of((0usize..5, 0usize..24))).prop_map(
        |(max_request, max_args, max_inline, unauth)| RequestLimits {
            request: Limits { max_request, max_args },
            max_inline,
            unauthenticated: unauth.map(|(max_args, max_bulk)| UnauthLimits { max_args, max_bulk }),
        },
    )
}

/// Bytes drawn mostly from RESP's own alphabet, so they often look like requests.
fn resp_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        6 => prop::sample::select(b"*$\r\n0123456789-+: abcPING\t".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..160)
}

/// Valid requests (multibulk or inline), then a few mutations.
fn mutated_requests() -> impl Strategy<Value = Vec<u8>> {
    let arg = prop::collection::vec(prop::sample::select(b"abkv01\r\n $*".to_vec()), 0..24);
    let request = (prop::collection::vec(arg, 0..7), any::<bool>());
    let mutation = (0u8..5, any::<prop::sample::Index>(), any::<u8>(), 0usize..40);
    (prop::collection::vec(request, 1..5), prop::collection::vec(mutation, 0..4)).prop_map(|(reqs, muts)| {
        let mut b = Vec::new();
        for (args, inline) in reqs {
            if inline && args.iter().all(|a| !a.is_empty() && !a.iter().any(|c| b"\r\n \t".contains(c))) {
                b.extend(args.join(&b' '));
                b.extend_from_slice(b"\r\n");
            } else {
                encode_command(&args, &mut b);
            }
        }
        for (kind, at, byte, n) in muts {
            if b.is_empty() {
                break;
            }
            let i = at.index(b.len());
            match kind {
                0 => b[i] = byte,
                1 => b.insert(i, byte),
                2 => {
                    b.remove(i);
                }
                3 => b.truncate(i),
                _ => {
                    let part: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                    b.splice(i..i, part);
                }
            }
        }
        b
    })
}

/// `buf` cut at the given points (sorted, deduplicated).
fn split<'a>(buf: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(buf.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let (mut pieces, mut from) = (Vec::new(), 0);
    for a in at.into_iter().chain([buf.len()]) {
        pieces.push(&buf[from..a]);
        from = a;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whole or in random pieces, the incremental parser agrees with the one-shot parser.
    #[test]
    fn incremental_equals_one_shot(
        buf in prop_oneof![resp_bytes(), mutated_requests()],
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        lim in limits(),
    ) {
        let reference = one_shot(&buf, &lim);
        prop_assert_eq!(&incremental(&[&buf], &lim), &reference, "whole");
        prop_assert_eq!(&incremental(&split(&buf, &cuts), &lim), &reference, "pieces");
        let bytes: Vec<&[u8]> = buf.chunks(1).collect();
        prop_assert_eq!(&incremental(&bytes, &lim), &reference, "byte by byte");
    }
}
