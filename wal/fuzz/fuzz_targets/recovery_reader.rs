//! Long-run fuzzing of the WAL's recovery reader: `cargo +nightly fuzz run recovery_reader`
//! in wal/. The input is one segment file's bytes; the reader must never panic, and its
//! work (bytes checksummed) stays linear in the input. `wal/tests/reader_fuzz.rs` runs the
//! same entry point in `cargo test` (100,000 cases, allocation checked too).
#![no_main]
use flotilla_wal::check_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = check_segment(data) {
        assert!(c.checked_bytes <= 12 * data.len() as u64);
        assert!(c.end as usize <= data.len().max(64));
    }
});
