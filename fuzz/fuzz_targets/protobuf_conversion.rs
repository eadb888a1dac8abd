//! Raw bytes decoded by prost as each converted type, then converted to core values.
#![no_main]

#[path = "../../tests/fuzz.rs"]
#[allow(dead_code)]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut stats = props::harness::Stats::default();
    if let Err(e) = props::proto_target::check_bytes(data, &mut stats) {
        panic!("{e}");
    }
});
