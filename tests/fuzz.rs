//! Fuzz targets for the three places where untrusted bytes become values: the WAL
//! record decoder (`wal::codec`), the protobuf-to-core conversion (`transport`), and
//! the HTTP request parsing into node commands (`http::router`).
//!
//! Why on stable, inside `cargo test`: CI runs each target for a bounded wall-clock
//! budget with no extra tooling; a long run is the same test with a bigger budget:
//!
//! ```text
//! FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! (`fuzz/` holds cargo-fuzz targets over the same property functions, nightly only.)
//!
//! How: a case starts from a VALID input made by the crate's own encoders (WAL
//! frames, protobuf of converted core messages, well-formed HTTP requests), then
//! either mutates its bytes (bit flips, bursts, truncation, splicing, length-field
//! corruption, huge lengths, duplication, a refreshed checksum so a damaged payload
//! reaches the deep decoder) or generates invalid values on purpose, and checks
//! properties stronger than "no panic" (listed at the top of each target's module).
//!
//! Environment:
//! - `FUZZ_SECONDS`: budget per target (default 8);
//! - `FUZZ_SEED`: the run's seed (default: from the clock; always printed);
//! - `FUZZ_CASE`: replay one failing case alone (a failure prints the command).

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

// ==================================================================== harness

#[path = "fuzz/harness.rs"]
pub mod harness;

// ============================================================ allocation meter

#[allow(unexpected_cfgs)] // `fuzzing` is set by cargo-fuzz
#[path = "fuzz/alloc_meter.rs"]
mod alloc_meter;

// ============================================================ shared generators

#[path = "fuzz/gen.rs"]
mod gen;

// ================================================================= WAL target

#[path = "fuzz/wal.rs"]
pub mod wal_target;

// ============================================================ protobuf target

#[path = "fuzz/proto.rs"]
pub mod proto_target;

// ================================================================ HTTP target

#[path = "fuzz/http.rs"]
pub mod http_target;

// ===================================================================== tests

/// The allocation meter must see allocations, or the bounds above check nothing.
#[test]
fn alloc_meter_sees_allocations() {
    let (v, largest) = alloc_meter::largest_during(|| vec![0u8; 1 << 20]);
    assert!(largest >= v.len(), "meter saw {largest} bytes");
    assert!(alloc_meter::bounded("test", 10, 8, 100, || vec![0u8; 1000]).is_err());
}

#[test]
fn fuzz_wal_decoder() {
    harness::fuzz("fuzz_wal_decoder", |rng, stats| {
        if rng.gen_bool(0.2) {
            wal_target::snapshot_case(rng, stats)
        } else {
            wal_target::stream_case(rng, stats)
        }
    });
}

#[test]
fn fuzz_protobuf_conversion() {
    harness::fuzz("fuzz_protobuf_conversion", proto_target::case);
}

#[test]
fn fuzz_http_requests() {
    let rt = http_target::runtime();
    harness::fuzz("fuzz_http_requests", |rng, stats| {
        http_target::case(&rt, rng, stats)
    });
}

/// Seeds for the cargo-fuzz targets in `fuzz/`: valid inputs made as the targets
/// above make them. `cargo test --test fuzz write_fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut rng = SmallRng::seed_from_u64(1);
    let setup = http_target::Setup::fixed();
    for i in 0..64 {
        let inputs = [
            ("wal_decoder", wal_target::stream(&mut rng).bytes),
            (
                "protobuf_conversion",
                proto_target::valid_encoding(&mut rng).unwrap(),
            ),
            ("http_requests", http_target::request(&mut rng, &setup)),
        ];
        for (target, bytes) in inputs {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }
}
