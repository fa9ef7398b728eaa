//! Long-run fuzzing of the engine's message decoder: `cargo +nightly fuzz run wire_batch`
//! in net/. Decoded batches must re-encode to a batch that decodes to the same items.
#![no_main]
use bytes::Bytes;
use flotilla_engine::transport::codec::{decode_batch, encode_batch, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    if let Ok(items) = decode_batch(&input, DecodeLimits::default()) {
        let again = encode_batch(&items).expect("decoded items have a wire form");
        assert_eq!(decode_batch(&again, DecodeLimits::default()).ok(), Some(items));
    }
});
