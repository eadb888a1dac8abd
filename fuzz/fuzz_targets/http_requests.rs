//! A request in the text form of `tests/fuzz.rs` (`METHOD TARGET`, headers, an
//! empty line, the body) through the real router with a fake node.
#![no_main]

#[path = "../../tests/fuzz.rs"]
#[allow(dead_code)]
mod props;

use props::http_target::{check, runtime, Setup};
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = RUNTIME.get_or_init(runtime);
    let mut stats = props::harness::Stats::default();
    if let Err(e) = check(rt, &Setup::fixed(), data, &mut stats) {
        panic!("{e}");
    }
});
