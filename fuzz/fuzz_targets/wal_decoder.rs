//! Raw bytes into the WAL frame, record and snapshot-file decoders.
#![no_main]

#[path = "../../tests/fuzz.rs"]
#[allow(dead_code)]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = props::wal_target::check_raw(data) {
        panic!("{e}");
    }
});
