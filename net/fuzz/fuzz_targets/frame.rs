//! Long-run fuzzing of the frame decoder: `cargo +nightly fuzz run frame` in net/.
#![no_main]
use bytes::Bytes;
use flotilla_net::frame::{decode_bulk_start, decode_frame, Hello, HelloReply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = Bytes::copy_from_slice(data);
    while let Ok((f, used)) = decode_frame(&rest, 1 << 20) {
        let _ = Hello::decode(&f.payload);
        let _ = HelloReply::decode(&f);
        let _ = decode_bulk_start(&f.payload);
        rest = rest.slice(used..);
    }
});
