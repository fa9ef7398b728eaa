//! Long-run fuzzing of the RESP request parser: `cargo +nightly fuzz run request` in
//! examples/kv. The first 4 bytes choose the limits and the piece size; the rest is the
//! input. The incremental parser, fed in pieces, must return what the one-shot parser
//! returns, and hold no more memory than the limits allow; nothing may panic. The same
//! property runs 100,000 cases under `cargo test` (examples/kv/tests/resp_props.rs).
#![no_main]
use flotilla_kv::resp::{parse_request, Limits, RequestLimits, RequestParser, UnauthLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((cfg, input)) = data.split_first_chunk::<4>() else { return };
    let lim = RequestLimits {
        request: Limits { max_request: 16 + usize::from(cfg[0]) * 64, max_args: usize::from(cfg[1] % 64) },
        max_inline: 1 + usize::from(cfg[2]),
        unauthenticated: (cfg[3] & 1 == 1)
            .then(|| UnauthLimits { max_args: usize::from(cfg[1] % 11), max_bulk: usize::from(cfg[2]) * 4 }),
    };
    let piece = 1 + usize::from(cfg[3] >> 1);

    // The one-shot reference.
    let mut want = Vec::new();
    let mut pos = 0;
    let want_end = loop {
        match parse_request(&input[pos..], &lim) {
            Ok(Some((args, used))) => {
                want.push(args);
                pos += used;
            }
            Ok(None) => break Ok(input.len() - pos),
            Err(e) => break Err(e),
        }
    };

    let mut p = RequestParser::new();
    let mut got = Vec::new();
    let mut got_end = None;
    'feed: for mut chunk in input.chunks(piece) {
        while !chunk.is_empty() {
            let r = p.feed(chunk, &lim);
            assert!(p.allocated() <= 2 * (lim.max_inline.max(32) + 2) + lim.request.max_args * 24 + 2 * p.held());
            match r {
                Ok((used, cmd)) => {
                    chunk = &chunk[used..];
                    if let Some(args) = cmd {
                        got.push(args);
                    }
                }
                Err(e) => {
                    got_end = Some(Err(e));
                    break 'feed;
                }
            }
        }
    }
    let got_end = got_end.unwrap_or(Ok(p.held()));
    assert_eq!(got, want);
    assert_eq!(got_end, want_end);
});
