//! Long-run fuzzing of the frame decoder: `cargo +nightly fuzz run frame` in net/.
#![no_main]
use bytes::Bytes;
use flotilla_net::frame::{decode_bulk_start, decode_frame, FrameReader, Hello, HelloReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    let mut frames = 0;
    while let Ok((f, used)) = decode_frame(&rest, 1 << 20) {
        frames += 1;
        let _ = Hello::decode(&f.payload);
        let _ = HelloReply::decode(&f);
        let _ = decode_bulk_start(&f.payload);
        rest = rest.slice(used..);
    }
    // The message lane's incremental reader, fed in small pieces, sees the same frames.
    let mut r = FrameReader::new(1 << 20);
    let mut read = 0;
    'outer: for piece in data.chunks(7) {
        let mut piece = piece;
        while !piece.is_empty() {
            match r.feed(&mut piece) {
                Ok(Some(f)) => {
                    assert!(f.payload.len() <= 1 << 20);
                    read += 1;
                }
                Ok(None) => {}
                Err(_) => break 'outer,
            }
        }
    }
    assert_eq!(read, frames);
});
