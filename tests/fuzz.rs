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

pub mod harness {
    use super::*;
    use std::collections::BTreeMap;
    use std::panic::{self, AssertUnwindSafe};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    const DEFAULT_SECONDS: f64 = 8.0;

    /// Counts what the cases ran into (outcome kinds, decoder error kinds), so a run
    /// shows which paths it reached.
    #[derive(Default)]
    pub struct Stats(BTreeMap<String, u64>);

    impl Stats {
        pub fn note(&mut self, what: impl Into<String>) {
            *self.0.entry(what.into()).or_default() += 1;
        }

        /// Notes an error message by its kind (numbers dropped, cut short).
        pub fn note_error(&mut self, prefix: &str, error: impl std::fmt::Display) {
            self.note(format!("{prefix}: {}", shape(&error.to_string())));
        }
    }

    /// An error message's first words without numbers, quoted values or odd
    /// characters: one key per error kind.
    fn shape(s: &str) -> String {
        let mut quoted = false;
        let kept: String = s
            .chars()
            .filter(|&c| {
                quoted ^= c == '"';
                !quoted && c != '"' && (c == ' ' || c.is_ascii_graphic() && !c.is_ascii_digit())
            })
            .collect();
        kept.split_whitespace()
            .take(5)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
        let v = std::env::var(name).ok()?;
        Some(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        )
    }

    fn clock_seed() -> u64 {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        t.as_nanos() as u64 ^ u64::from(std::process::id())
    }

    /// A well-mixed case seed from the run seed and the case number.
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
        match (p.downcast_ref::<&str>(), p.downcast_ref::<String>()) {
            (Some(s), _) => format!("panicked: {s}"),
            (_, Some(s)) => format!("panicked: {s}"),
            _ => "panicked".into(),
        }
    }

    /// Runs `case` with fresh case seeds until the budget is spent (or once, for
    /// `FUZZ_CASE`). A case returns `Err` (or panics) when a property fails; the
    /// test then fails naming the case seed that reproduces it.
    pub fn fuzz(name: &str, mut case: impl FnMut(&mut SmallRng, &mut Stats) -> Result<(), String>) {
        let seconds = env("FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
        let seed = env("FUZZ_SEED").unwrap_or_else(clock_seed);
        let only: Option<u64> = env("FUZZ_CASE");
        eprintln!("fuzz {name}: FUZZ_SEED={seed} FUZZ_SECONDS={seconds}");
        let budget = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut stats = Stats::default();
        let mut cases = 0u64;
        loop {
            let case_seed = only.unwrap_or_else(|| splitmix(seed.wrapping_add(cases)));
            let mut rng = SmallRng::seed_from_u64(case_seed);
            let failure = match panic::catch_unwind(AssertUnwindSafe(|| case(&mut rng, &mut stats)))
            {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(p) => Some(panic_text(p)),
            };
            if let Some(e) = failure {
                panic!(
                    "fuzz {name}: case {cases} failed: {e}\n  replay: FUZZ_CASE={case_seed} \
                     cargo test --test fuzz {name} -- --nocapture   (run FUZZ_SEED={seed})"
                );
            }
            cases += 1;
            if only.is_some() || start.elapsed() >= budget {
                break;
            }
        }
        report(name, cases, start.elapsed(), &stats);
    }

    fn report(name: &str, cases: u64, took: Duration, stats: &Stats) {
        let rate = cases as f64 / took.as_secs_f64().max(1e-9);
        eprintln!("fuzz {name}: {cases} cases in {took:.1?} ({rate:.0}/s); outcomes:");
        for (what, n) in &stats.0 {
            eprintln!("  {n:>9}  {what}");
        }
    }

    /// The first bytes of an input in hex, for failure messages.
    pub fn hex(b: &[u8]) -> String {
        let shown: String = b.iter().take(256).map(|x| format!("{x:02x}")).collect();
        let more = if b.len() > 256 { "..." } else { "" };
        format!("{} bytes: {shown}{more}", b.len())
    }
}

// ============================================================ allocation meter

/// The largest single allocation made by this thread while a closure runs: a
/// decoder that trusts a length field shows up as one huge allocation. Off under
/// cargo-fuzz (`cfg(fuzzing)`), where libFuzzer's `-malloc_limit_mb` does this job.
#[allow(unexpected_cfgs)] // `fuzzing` is set by cargo-fuzz
mod alloc_meter {
    #[cfg(not(fuzzing))]
    mod imp {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static METERING: Cell<bool> = const { Cell::new(false) };
            static LARGEST: Cell<usize> = const { Cell::new(0) };
        }

        struct Metered;

        fn note(size: usize) {
            let _ = METERING.try_with(|on| {
                if on.get() {
                    LARGEST.with(|l| l.set(l.get().max(size)));
                }
            });
        }

        unsafe impl GlobalAlloc for Metered {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                System.alloc(layout)
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                System.alloc_zeroed(layout)
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                System.dealloc(ptr, layout)
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                System.realloc(ptr, layout, new_size)
            }
        }

        #[global_allocator]
        static GLOBAL: Metered = Metered;

        pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
            LARGEST.with(|l| l.set(0));
            METERING.with(|m| m.set(true));
            let out = f();
            METERING.with(|m| m.set(false));
            (out, LARGEST.with(|l| l.get()))
        }
    }

    #[cfg(fuzzing)]
    mod imp {
        pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
            (f(), 0)
        }
    }

    pub use imp::largest_during;

    /// Runs `f` (a decoder over `input_len` bytes) and fails if any single
    /// allocation exceeded `per_byte * input_len + slack`.
    pub fn bounded<R>(
        what: &str,
        input_len: usize,
        per_byte: usize,
        slack: usize,
        f: impl FnOnce() -> R,
    ) -> Result<R, String> {
        let (out, largest) = largest_during(f);
        let limit = per_byte * input_len + slack;
        if largest > limit {
            return Err(format!(
                "{what}: allocated {largest} bytes at once for a {input_len}-byte input (limit {limit})"
            ));
        }
        Ok(out)
    }
}

// ============================================================ shared generators

mod gen {
    use super::*;
    use raftlog::core::{EntryPayload, Member, Membership};

    /// Integers near the edges the decoders care about, or anything.
    pub fn u64_edge(rng: &mut SmallRng) -> u64 {
        const EDGES: [u64; 9] = [
            0,
            1,
            2,
            255,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            i64::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ];
        match rng.gen_range(0..4) {
            0 => *EDGES.choose(rng).unwrap(),
            1 => rng.gen(),
            _ => rng.gen_range(0..1000),
        }
    }

    /// A string: empty, ASCII, multi-byte, or with control characters.
    pub fn string(rng: &mut SmallRng) -> String {
        const SAMPLES: [&str; 8] = ["", "n1", "node-2", "ñ", "✓ok", "😀", "a\u{0}b", "\"\\/"];
        match rng.gen_range(0..3) {
            0 => SAMPLES.choose(rng).unwrap().to_string(),
            1 => (0..rng.gen_range(0..24))
                .map(|_| rng.gen_range(b' '..=b'~') as char)
                .collect(),
            _ => (0..rng.gen_range(0..8))
                .map(|_| rng.gen::<char>())
                .collect(),
        }
    }

    /// A non-empty string (node ids must not be empty on the wire).
    pub fn id(rng: &mut SmallRng) -> String {
        let s = string(rng);
        if s.is_empty() {
            format!("n{}", rng.gen_range(0..9))
        } else {
            s
        }
    }

    pub fn bytes(rng: &mut SmallRng, max: usize) -> Bytes {
        let len = match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(0..8),
            _ => rng.gen_range(0..=max),
        };
        let mut v = vec![0u8; len];
        rng.fill(&mut v[..]);
        Bytes::from(v)
    }

    pub fn membership(rng: &mut SmallRng) -> Membership {
        let mut m = Membership::default();
        for _ in 0..rng.gen_range(0..5) {
            let member = Member {
                grpc_addr: string(rng),
                http_addr: string(rng),
                voter: rng.gen(),
            };
            m.members.insert(id(rng), member);
        }
        m
    }

    pub fn payload(rng: &mut SmallRng) -> EntryPayload {
        match rng.gen_range(0..3) {
            0 => EntryPayload::Noop,
            1 => EntryPayload::Command(bytes(rng, 300)),
            _ => EntryPayload::Membership(membership(rng)),
        }
    }

    /// Applies one generic byte-level mutation; `donor` is another valid input to
    /// splice from. Returns what it did, for the stats.
    pub fn mutate(rng: &mut SmallRng, buf: &mut Vec<u8>, donor: &[u8]) -> &'static str {
        let len = buf.len();
        let at = rng.gen_range(0..=len);
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                for _ in 0..rng.gen_range(1..4) {
                    let bit = rng.gen_range(0..len * 8);
                    buf[bit / 8] ^= 1 << (bit % 8);
                }
                "bit flips"
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                buf[i] = *[0, 0x7f, 0x80, 0xff, rng.gen()].choose(rng).unwrap();
                "byte overwrite"
            }
            2 => {
                buf.truncate(at);
                "truncation"
            }
            3 => {
                let mut extra = vec![0u8; rng.gen_range(1..16)];
                rng.fill(&mut extra[..]);
                buf.splice(at..at, extra);
                "random insert"
            }
            4 => {
                let end = rng.gen_range(at..=len.min(at + 64));
                buf.drain(at..end);
                "range delete"
            }
            5 => {
                let end = rng.gen_range(at..=len);
                let copy = buf[at..end].to_vec();
                let to = rng.gen_range(0..=len);
                buf.splice(to..to, copy);
                "range duplicate"
            }
            6 => {
                let from = rng.gen_range(0..=donor.len());
                buf.truncate(at);
                buf.extend_from_slice(&donor[from..]);
                "splice"
            }
            7 => {
                let huge: [u8; 4] = *[[0xff; 4], [0xff, 0xff, 0xff, 0x7f], [0, 0, 0, 0x10]]
                    .choose(rng)
                    .unwrap();
                let end = (at + 4).min(len);
                buf.splice(at..end, huge);
                "huge u32 written"
            }
            _ => {
                let mut v = vec![0u8; rng.gen_range(0..64)];
                rng.fill(&mut v[..]);
                *buf = v;
                "random bytes"
            }
        }
    }
}

// ================================================================= WAL target

/// The WAL record decoder (`codec::read_frame`, `decode_record`) and the snapshot
/// file decoder (`decode_snapshot_file`).
///
/// Properties:
/// - a valid stream of generated records decodes to exactly those records;
/// - decoding never panics, and no single allocation is larger than a small
///   multiple of the input (a huge length field must not be trusted);
/// - a frame whose bytes are those of a frame written by the encoder decodes to
///   exactly that record; a frame hit by a burst of at most 32 bits in its checksum
///   or payload is rejected; a cut inside a frame is a torn-frame error; the frames
///   before any damage decode unchanged;
/// - any other frame that decodes (a refreshed checksum over damaged bytes, a
///   chance collision) is canonical: re-encoding the record gives back the same
///   payload (up to member order), so nothing was silently skipped or invented;
/// - the same for snapshot files: any damage short of a refreshed checksum is
///   an error; anything that decodes re-encodes to the same file.
pub mod wal_target {
    use super::alloc_meter::bounded;
    use super::harness::{hex, Stats};
    use super::*;
    use raftlog::core::{Entry, EntryPayload, HardState, Snapshot, SnapshotMeta};
    use raftlog::wal::codec::{self, Record, SnapshotMark, FRAME_HEADER};
    use std::collections::HashMap;
    use std::ops::Range;

    /// Decoded allocations may be this many times the input: a `Vec<Entry>` is
    /// sized by a count bounded by the input (each entry takes 9 bytes or more).
    const ALLOC_PER_BYTE: usize = 8;
    const ALLOC_SLACK: usize = 4096;

    // ---------------------------------------------------------------- generation

    fn entries(rng: &mut SmallRng) -> Vec<Entry> {
        let count = if rng.gen_bool(0.1) {
            rng.gen_range(1..64)
        } else {
            rng.gen_range(1..5)
        };
        let first = match rng.gen_range(0..4) {
            0 => 1,
            // The last index is u64::MAX - 1 at most: `first + count` must not overflow.
            1 => u64::MAX - count - rng.gen_range(0..3),
            _ => rng.gen_range(1..1 << 40),
        };
        (0..count)
            .map(|i| Entry {
                index: first + i,
                term: gen::u64_edge(rng),
                payload: gen::payload(rng),
            })
            .collect()
    }

    fn record(rng: &mut SmallRng) -> Record {
        match rng.gen_range(0..4) {
            0 | 1 => Record::Entries(entries(rng)),
            2 => Record::HardState(HardState {
                term: gen::u64_edge(rng),
                vote: rng.gen_bool(0.6).then(|| gen::string(rng)),
                commit: gen::u64_edge(rng),
            }),
            _ => Record::SnapshotMark(SnapshotMark {
                index: gen::u64_edge(rng),
                term: gen::u64_edge(rng),
                keep: rng.gen(),
            }),
        }
    }

    /// Appends the frame of `rec` with the crate's own encoder.
    pub fn encode(out: &mut Vec<u8>, rec: &Record) {
        match rec {
            Record::Entries(e) => codec::encode_entries(out, e).expect("encodable"),
            Record::HardState(hs) => codec::encode_hard_state(out, hs),
            Record::SnapshotMark(m) => codec::encode_snapshot_mark(out, m),
        }
    }

    /// A valid WAL stream: its bytes and each frame's range and record.
    pub struct Stream {
        pub bytes: Vec<u8>,
        pub frames: Vec<(Range<usize>, Record)>,
    }

    pub fn stream(rng: &mut SmallRng) -> Stream {
        let mut bytes = Vec::new();
        let mut frames = Vec::new();
        for _ in 0..rng.gen_range(1..6) {
            let start = bytes.len();
            let rec = record(rng);
            encode(&mut bytes, &rec);
            frames.push((start..bytes.len(), rec));
        }
        Stream { bytes, frames }
    }

    // ---------------------------------------------------------------- mutation

    /// What the decoder must produce for a mutated stream: exactly `prefix`, and
    /// then `then`.
    struct Expect {
        prefix: Vec<Record>,
        then: Then,
    }

    enum Then {
        /// The end of the input, nothing more.
        End,
        /// An error, nothing more.
        Error,
        /// Anything that satisfies the weak properties.
        Anything,
    }

    fn records_before(s: &Stream, at: usize) -> Vec<Record> {
        let whole = s.frames.iter().take_while(|(r, _)| r.end <= at);
        whole.map(|(_, rec)| rec.clone()).collect()
    }

    /// Damages one frame with a burst of 1 to 4 bytes inside its checksum or inside
    /// its payload: CRC32C detects every burst of up to 32 bits.
    fn burst(rng: &mut SmallRng, s: &Stream, buf: &mut [u8]) -> Expect {
        let k = rng.gen_range(0..s.frames.len());
        let frame = &s.frames[k].0;
        let region = if rng.gen_bool(0.2) {
            frame.start + 4..frame.start + FRAME_HEADER
        } else {
            frame.start + FRAME_HEADER..frame.end
        };
        let at = rng.gen_range(region.clone());
        let len = rng.gen_range(1..=4).min(region.end - at);
        for b in &mut buf[at..at + len] {
            *b ^= rng.gen_range(1..=255u8);
        }
        Expect {
            prefix: records_before(s, frame.start),
            then: Then::Error,
        }
    }

    fn cut(rng: &mut SmallRng, s: &Stream, buf: &mut Vec<u8>) -> Expect {
        let at = rng.gen_range(0..buf.len());
        buf.truncate(at);
        let boundary = s.frames.iter().any(|(r, _)| r.end == at) || at == 0;
        Expect {
            prefix: records_before(s, at),
            then: if boundary { Then::End } else { Then::Error },
        }
    }

    /// Rewrites one frame's length field with an unlikely value.
    fn bad_length(rng: &mut SmallRng, s: &Stream, buf: &mut [u8]) -> Expect {
        let (frame, _) = &s.frames[rng.gen_range(0..s.frames.len())];
        let len = (frame.len() - FRAME_HEADER) as u32;
        let bad = *[
            0,
            1,
            len.wrapping_sub(1),
            len + 1,
            len + rng.gen_range(2..64),
            codec::MAX_PAYLOAD as u32,
            codec::MAX_PAYLOAD as u32 + 1,
            u32::MAX,
            rng.gen(),
        ]
        .choose(rng)
        .unwrap();
        buf[frame.start..frame.start + 4].copy_from_slice(&bad.to_le_bytes());
        Expect {
            prefix: records_before(s, frame.start),
            then: Then::Anything,
        }
    }

    /// Damages one frame's payload, then writes a correct length and checksum: the
    /// damaged bytes reach `decode_record`.
    fn refreshed(rng: &mut SmallRng, s: &Stream, buf: &mut Vec<u8>) -> Expect {
        let (frame, _) = &s.frames[rng.gen_range(0..s.frames.len())];
        let mut payload = buf[frame.start + FRAME_HEADER..frame.end].to_vec();
        let donor = &s.bytes[s.frames[0].0.start + FRAME_HEADER..s.frames[0].0.end];
        for _ in 0..rng.gen_range(1..3) {
            if rng.gen_bool(0.3) && payload.len() > 9 {
                // A huge count or length exactly where the decoder reads one.
                let at = *[5, 9, 10, rng.gen_range(0..payload.len() - 4)]
                    .choose(rng)
                    .unwrap();
                let at = at.min(payload.len() - 4);
                let huge = *[u32::MAX, 0x7fff_ffff, 1 << 20, payload.len() as u32]
                    .choose(rng)
                    .unwrap();
                payload[at..at + 4].copy_from_slice(&huge.to_le_bytes());
            } else {
                gen::mutate(rng, &mut payload, donor);
            }
        }
        let mut framed = Vec::with_capacity(payload.len() + FRAME_HEADER);
        framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        framed.extend_from_slice(&payload);
        buf.splice(frame.clone(), framed);
        Expect {
            prefix: records_before(s, frame.start),
            then: Then::Anything,
        }
    }

    /// Copies one whole frame to a frame boundary: still a valid stream.
    fn duplicate_frame(rng: &mut SmallRng, s: &Stream, buf: &mut Vec<u8>) -> Expect {
        let copy = rng.gen_range(0..s.frames.len());
        let to = rng.gen_range(0..=s.frames.len());
        let at = s.frames.get(to).map_or(buf.len(), |(r, _)| r.start);
        let (range, rec) = s.frames[copy].clone();
        buf.splice(at..at, s.bytes[range].to_vec());
        let mut prefix: Vec<Record> = s.frames.iter().map(|(_, r)| r.clone()).collect();
        prefix.insert(to, rec);
        Expect {
            prefix,
            then: Then::End,
        }
    }

    /// Any generic mutation: only the frames wholly before the first changed
    /// byte are known.
    fn generic(rng: &mut SmallRng, s: &Stream, donor: &Stream, buf: &mut Vec<u8>) -> Expect {
        gen::mutate(rng, buf, &donor.bytes);
        let same = buf.iter().zip(&s.bytes).take_while(|(a, b)| a == b).count();
        Expect {
            prefix: records_before(s, same),
            then: if *buf == s.bytes {
                Then::End
            } else {
                Then::Anything
            },
        }
    }

    // ---------------------------------------------------------------- checking

    /// The record re-encoded; it must give back `payload` (members may come in
    /// another order: the decoder accepts any order, the encoder sorts).
    fn check_canonical(rec: &Record, payload: &[u8]) -> Result<(), String> {
        let mut out = Vec::new();
        encode(&mut out, rec);
        let again = &out[FRAME_HEADER..];
        let back = codec::decode_record(&Bytes::copy_from_slice(again));
        if back.as_ref() != Ok(rec) {
            return Err(format!("{rec:?} re-encodes to bytes decoding as {back:?}"));
        }
        let reordered = again.len() == payload.len() && has_big_membership(rec);
        if again != payload && !reordered {
            return Err(format!(
                "decoded {rec:?} from a payload it does not re-encode to: {} vs {}",
                hex(payload),
                hex(again)
            ));
        }
        Ok(())
    }

    fn has_big_membership(rec: &Record) -> bool {
        let Record::Entries(es) = rec else {
            return false;
        };
        es.iter()
            .any(|e| matches!(&e.payload, EntryPayload::Membership(m) if m.members.len() > 1))
    }

    /// Decodes `buf` frame by frame, as WAL recovery does, checking the weak
    /// properties; returns the records and whether it stopped at an error.
    pub fn decode_stream(
        buf: &Bytes,
        known: &HashMap<Vec<u8>, Record>,
        stats: &mut Stats,
    ) -> Result<(Vec<Record>, bool), String> {
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            let res = bounded("read_frame", buf.len(), ALLOC_PER_BYTE, ALLOC_SLACK, || {
                codec::read_frame(buf, at)
            })?;
            match res {
                Ok(None) => return Ok((out, false)),
                Ok(Some((rec, next))) => {
                    if next <= at || next > buf.len() {
                        return Err(format!("frame at {at} ends at {next}"));
                    }
                    match known.get(&buf[at..next]) {
                        Some(orig) if *orig != rec => {
                            return Err(format!("frame decodes to {rec:?}, was {orig:?}"))
                        }
                        Some(_) => {}
                        None => {
                            stats.note("wal: new frame decoded (refreshed crc)");
                            check_canonical(&rec, &buf[at + FRAME_HEADER..next])?;
                        }
                    }
                    out.push(rec);
                    at = next;
                }
                Err(e) => {
                    stats.note_error("wal error", e);
                    return Ok((out, true));
                }
            }
        }
    }

    fn check_expect(got: &[Record], error: bool, want: &Expect) -> Result<(), String> {
        let p = want.prefix.len();
        if got.len() < p || got[..p] != want.prefix[..] {
            return Err(format!(
                "undamaged frames decode differently: got {got:?}, want prefix {:?}",
                want.prefix
            ));
        }
        let ok = match want.then {
            Then::End => got.len() == p && !error,
            Then::Error => got.len() == p && error,
            Then::Anything => true,
        };
        if !ok {
            return Err(format!(
                "after {p} good frames: got {} more records and error={error}",
                got.len() - p
            ));
        }
        Ok(())
    }

    /// One WAL stream case: generate, check the round trip, damage, check.
    pub fn stream_case(rng: &mut SmallRng, stats: &mut Stats) -> Result<(), String> {
        let s = stream(rng);
        let donor = stream(rng);
        let mut known = HashMap::new();
        for st in [&s, &donor] {
            for (r, rec) in &st.frames {
                known.insert(st.bytes[r.clone()].to_vec(), rec.clone());
            }
        }
        let valid = Bytes::from(s.bytes.clone());
        let (got, error) = decode_stream(&valid, &known, stats)?;
        let all: Vec<Record> = s.frames.iter().map(|(_, r)| r.clone()).collect();
        if error || got != all {
            return Err(format!("valid stream does not round-trip: {}", hex(&valid)));
        }
        let mut buf = s.bytes.clone();
        let (kind, want) = match rng.gen_range(0..7) {
            0 => ("burst", burst(rng, &s, &mut buf)),
            1 => ("cut", cut(rng, &s, &mut buf)),
            2 => ("bad length", bad_length(rng, &s, &mut buf)),
            3 | 4 => ("refreshed crc", refreshed(rng, &s, &mut buf)),
            5 => ("duplicate frame", duplicate_frame(rng, &s, &mut buf)),
            _ => ("generic", generic(rng, &s, &donor, &mut buf)),
        };
        stats.note(format!("wal mutation: {kind}"));
        let buf = Bytes::from(buf);
        let (got, error) = decode_stream(&buf, &known, stats)?;
        check_expect(&got, error, &want).map_err(|e| {
            format!(
                "{kind}: {e}; original {}; damaged {}",
                hex(&valid),
                hex(&buf)
            )
        })
    }

    // ---------------------------------------------------------------- snapshots

    fn snapshot(rng: &mut SmallRng) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: gen::u64_edge(rng),
                term: gen::u64_edge(rng),
                membership: gen::membership(rng),
            },
            data: gen::bytes(rng, 400),
        }
    }

    const SNAP_HEADER: usize = 20;

    /// Decodes a snapshot file; anything that decodes must re-encode to the same
    /// bytes (up to member order). Returns the snapshot, if any.
    pub fn decode_snapshot(buf: &[u8], stats: &mut Stats) -> Result<Option<Snapshot>, String> {
        let bytes = Bytes::copy_from_slice(buf);
        let res = bounded(
            "decode_snapshot_file",
            buf.len(),
            ALLOC_PER_BYTE,
            ALLOC_SLACK,
            || codec::decode_snapshot_file(&bytes),
        )?;
        let snap = match res {
            Ok(s) => s,
            Err(e) => {
                stats.note_error("snapshot error", e);
                return Ok(None);
            }
        };
        let again = codec::encode_snapshot_file(&snap);
        let reordered = again.len() == buf.len() && snap.meta.membership.members.len() > 1;
        if again != buf && !reordered {
            return Err(format!(
                "snapshot {snap:?} does not re-encode to {}",
                hex(buf)
            ));
        }
        Ok(Some(snap))
    }

    fn refresh_snapshot(buf: &mut [u8]) {
        let len = (buf.len() - SNAP_HEADER) as u64;
        let crc = crc32c::crc32c(&buf[SNAP_HEADER..]);
        buf[8..16].copy_from_slice(&len.to_le_bytes());
        buf[16..20].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn snapshot_case(rng: &mut SmallRng, stats: &mut Stats) -> Result<(), String> {
        let snap = snapshot(rng);
        let file = codec::encode_snapshot_file(&snap);
        if decode_snapshot(&file, stats)?.as_ref() != Some(&snap) {
            return Err(format!("snapshot does not round-trip: {snap:?}"));
        }
        let mut buf = file.clone();
        let must_fail = match rng.gen_range(0..4) {
            0 => {
                // Any burst of up to 4 bytes anywhere: magic, length, crc or payload.
                let at = rng.gen_range(0..buf.len());
                let end = (at + rng.gen_range(1..=4)).min(buf.len());
                buf[at..end]
                    .iter_mut()
                    .for_each(|b| *b ^= rng.gen_range(1..=255u8));
                true
            }
            1 => {
                buf.truncate(rng.gen_range(0..buf.len()));
                true
            }
            2 => {
                let mut payload = buf.split_off(SNAP_HEADER);
                gen::mutate(rng, &mut payload, &file);
                buf.extend_from_slice(&payload);
                refresh_snapshot(&mut buf);
                false
            }
            _ => {
                gen::mutate(rng, &mut buf, &file);
                false
            }
        };
        let got = decode_snapshot(&buf, stats)?;
        if must_fail && got.is_some() {
            return Err(format!("damaged snapshot file decoded: {}", hex(&buf)));
        }
        if got.is_some() && buf == file && got.as_ref() != Some(&snap) {
            return Err("snapshot decodes to another value".into());
        }
        Ok(())
    }

    /// Raw bytes (cargo-fuzz): the weak properties only.
    pub fn check_raw(data: &[u8]) -> Result<(), String> {
        let mut stats = Stats::default();
        decode_stream(&Bytes::copy_from_slice(data), &HashMap::new(), &mut stats)?;
        decode_snapshot(data, &mut stats)?;
        let payload = Bytes::copy_from_slice(data);
        if let Ok(rec) = codec::decode_record(&payload) {
            check_canonical(&rec, data)?;
        }
        Ok(())
    }
}

// ============================================================ protobuf target

/// Protobuf bytes decoded by prost, then converted to core values (`TryFrom`).
///
/// Properties:
/// - a valid core value converted to protobuf, encoded, decoded and converted back
///   is the same value (and the protobuf round trip is the identity);
/// - for any bytes prost accepts, the conversion never panics; it fails exactly
///   when an independent validity check (written here, from the proto's comments
///   and the core's invariants) says the message is invalid;
/// - when it succeeds, converting the value back gives the same protobuf message
///   (members sorted): nothing dropped, nothing invented;
/// - decoding never allocates more than a small multiple of the input.
pub mod proto_target {
    use super::alloc_meter::bounded;
    use super::harness::{hex, Stats};
    use super::*;
    use prost::Message as _;
    use raftlog::core::{Entry, Envelope, Message, Snapshot, SnapshotMeta};
    use raftlog::node::api::{ApiError, WriteConcern, WriteRequest, WriteResult};
    use raftlog::transport::pb::{self, envelope::Msg};
    use raftlog::transport::{JoinOutcome, JoinRequest};

    /// prost grows repeated fields by doubling; an element is under 128 bytes and
    /// takes 2 bytes of input or more.
    const ALLOC_PER_BYTE: usize = 128;
    const ALLOC_SLACK: usize = 64 * 1024;

    // ---------------------------------------------------------------- generation

    fn message(rng: &mut SmallRng) -> Message {
        let u = gen::u64_edge;
        match rng.gen_range(0..10) {
            0 => Message::PreVote {
                last_log_index: u(rng),
                last_log_term: u(rng),
            },
            1 => Message::PreVoteResp { granted: rng.gen() },
            2 => Message::Vote {
                last_log_index: u(rng),
                last_log_term: u(rng),
                transfer: rng.gen(),
            },
            3 => Message::VoteResp { granted: rng.gen() },
            4 | 5 => append(rng),
            6 => Message::AppendResp {
                success: rng.gen(),
                index: u(rng),
                hint_index: u(rng),
                hint_term: u(rng),
            },
            7 => Message::Heartbeat {
                commit: u(rng),
                ctx: u(rng),
            },
            8 => Message::HeartbeatResp { ctx: u(rng) },
            _ if rng.gen() => Message::TimeoutNow,
            _ => Message::Snapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: u(rng),
                        term: u(rng),
                        membership: gen::membership(rng),
                    },
                    data: gen::bytes(rng, 200),
                },
            },
        }
    }

    fn append(rng: &mut SmallRng) -> Message {
        let count = rng.gen_range(0..5u64);
        let prev_index = gen::u64_edge(rng).min(u64::MAX - count);
        let entries = (0..count)
            .map(|i| Entry {
                index: prev_index + 1 + i,
                term: gen::u64_edge(rng),
                payload: gen::payload(rng),
            })
            .collect();
        Message::Append {
            prev_index,
            prev_term: gen::u64_edge(rng),
            entries,
            commit: gen::u64_edge(rng),
        }
    }

    fn envelope(rng: &mut SmallRng) -> Envelope {
        Envelope {
            from: gen::id(rng),
            to: gen::id(rng),
            term: gen::u64_edge(rng),
            msg: message(rng),
        }
    }

    fn write_request(rng: &mut SmallRng) -> WriteRequest {
        let w = match rng.gen_range(0..4) {
            0 => None,
            1 => Some(WriteConcern::Majority),
            2 => Some(WriteConcern::All),
            _ => Some(WriteConcern::Count(gen::u64_edge(rng) as usize)),
        };
        WriteRequest {
            message: gen::string(rng),
            w,
            timeout_ms: rng.gen_bool(0.5).then(|| gen::u64_edge(rng)),
            idempotency_key: rng.gen_bool(0.5).then(|| gen::string(rng)),
        }
    }

    fn api_error(rng: &mut SmallRng) -> ApiError {
        let s = gen::string(rng);
        let n = gen::u64_edge(rng);
        match rng.gen_range(0..11) {
            0 => ApiError::InvalidRequest(s),
            1 => ApiError::PayloadTooLarge { limit: n as usize },
            2 => ApiError::NoQuorum(s),
            3 => ApiError::NoLeader {
                leader_hint: rng.gen_bool(0.5).then_some(s),
            },
            4 => ApiError::WriteTimeout {
                offset: n,
                index: gen::u64_edge(rng),
                acks: gen::u64_edge(rng) as usize,
                w: gen::u64_edge(rng) as usize,
            },
            5 => ApiError::Storage(s),
            6 => ApiError::OutcomeUnknown(s),
            7 => ApiError::NotFound(s),
            8 => ApiError::ShuttingDown,
            _ => ApiError::Internal(s),
        }
    }

    /// A valid value of one of the converted types, encoded with prost from the
    /// crate's own conversion, after checking its round trip.
    pub fn valid_encoding(rng: &mut SmallRng) -> Result<Vec<u8>, String> {
        match rng.gen_range(0..8) {
            0..=3 => {
                let env = envelope(rng);
                let bytes = pb::Envelope::from(&env).encode_to_vec();
                let back = pb::Envelope::decode(&bytes[..]).map_err(|e| e.to_string())?;
                same(Envelope::try_from(back), Ok(env), "envelope round trip")?;
                Ok(bytes)
            }
            4 => {
                let req = write_request(rng);
                let bytes = pb::WriteRequestPb::from(&req).encode_to_vec();
                let back = pb::WriteRequestPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
                same(
                    WriteRequest::try_from(back),
                    Ok(req),
                    "write request round trip",
                )?;
                Ok(bytes)
            }
            5 => {
                let e = api_error(rng);
                let bytes = pb::ApiErrorPb::from(&e).encode_to_vec();
                let back = pb::ApiErrorPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
                same(ApiError::from(back), e, "api error round trip")?;
                Ok(bytes)
            }
            6 => {
                let r = WriteResult {
                    offset: gen::u64_edge(rng),
                    index: gen::u64_edge(rng),
                    term: gen::u64_edge(rng),
                    acks: gen::u64_edge(rng) as usize,
                    committed: rng.gen(),
                    duplicate: rng.gen(),
                };
                let bytes = pb::WriteResultPb::from(&r).encode_to_vec();
                let back = pb::WriteResultPb::decode(&bytes[..]).map_err(|e| e.to_string())?;
                same(
                    WriteResult::try_from(back),
                    Ok(r),
                    "write result round trip",
                )?;
                Ok(bytes)
            }
            _ => {
                let j = JoinRequest {
                    node_id: gen::id(rng),
                    grpc_addr: gen::id(rng),
                    http_addr: gen::string(rng),
                };
                let bytes = pb::JoinRequest::from(&j).encode_to_vec();
                let back = pb::JoinRequest::decode(&bytes[..]).map_err(|e| e.to_string())?;
                same(
                    JoinRequest::try_from(back),
                    Ok(j),
                    "join request round trip",
                )?;
                Ok(bytes)
            }
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
        if got != want {
            return Err(format!("{what}: got {got:?}, want {want:?}"));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- mutation

    fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// The length prefixes (start, end, value) of every length-delimited field of
    /// `buf`, recursing into values that parse as messages. False if `buf` is not a
    /// well-formed message.
    fn length_prefixes(buf: &[u8], base: usize, out: &mut Vec<(usize, usize, u64)>) -> bool {
        let mut pos = 0;
        while pos < buf.len() {
            let Some(key) = read_varint(buf, &mut pos) else {
                return false;
            };
            let skip = match key & 7 {
                0 => read_varint(buf, &mut pos).map(|_| 0),
                1 => Some(8),
                5 => Some(4),
                2 => {
                    let start = pos;
                    let Some(len) = read_varint(buf, &mut pos) else {
                        return false;
                    };
                    if len > (buf.len() - pos) as u64 {
                        return false;
                    }
                    out.push((base + start, base + pos, len));
                    let value = &buf[pos..pos + len as usize];
                    let mut inner = Vec::new();
                    if length_prefixes(value, base + pos, &mut inner) {
                        out.extend(inner);
                    }
                    Some(len as usize)
                }
                _ => None,
            };
            match skip {
                Some(n) if n <= buf.len() - pos => pos += n,
                _ => return false,
            }
        }
        true
    }

    /// Rewrites one length prefix with a wrong or huge value.
    fn corrupt_length(rng: &mut SmallRng, buf: &mut Vec<u8>) -> bool {
        let mut prefixes = Vec::new();
        length_prefixes(buf, 0, &mut prefixes);
        let Some(&(start, end, len)) = prefixes.choose(rng) else {
            return false;
        };
        let bad = *[
            0,
            len.wrapping_sub(1),
            len + 1,
            len * 2 + 1,
            (buf.len() - end) as u64 + 1,
            u32::MAX as u64,
            1 << 31,
            u64::MAX,
            rng.gen(),
        ]
        .choose(rng)
        .unwrap();
        let mut varint = Vec::new();
        put_varint(&mut varint, bad);
        buf.splice(start..end, varint);
        true
    }

    /// Appends a field with a random number and wire type (unknown fields, wrong
    /// wire types for known numbers, a repeated singular field).
    fn extra_field(rng: &mut SmallRng, buf: &mut Vec<u8>) {
        let field = *[1u64, 2, 3, 4, 5, 10, 14, 18, 19, 20, 536_870_911]
            .choose(rng)
            .unwrap();
        let wire = *[0u64, 1, 2, 5, 3, 4, 7].choose(rng).unwrap();
        put_varint(buf, field << 3 | wire);
        match wire {
            0 => put_varint(buf, gen::u64_edge(rng)),
            1 => buf.extend_from_slice(&rng.gen::<u64>().to_le_bytes()),
            5 => buf.extend_from_slice(&rng.gen::<u32>().to_le_bytes()),
            2 => {
                let value = gen::bytes(rng, 40);
                put_varint(buf, value.len() as u64);
                buf.extend_from_slice(&value);
            }
            _ => {}
        }
    }

    /// Byte-level damage to a valid encoding; returns the kind, for the stats.
    fn damage(rng: &mut SmallRng, buf: &mut Vec<u8>, donor: &[u8]) -> &'static str {
        match rng.gen_range(0..5) {
            0 if corrupt_length(rng, buf) => "length prefix",
            1 => {
                extra_field(rng, buf);
                "extra field"
            }
            _ => gen::mutate(rng, buf, donor),
        }
    }

    /// Semantic damage to a valid envelope: values prost accepts but the core
    /// must not (or, for some, may) see.
    fn invalid_envelope(rng: &mut SmallRng) -> pb::Envelope {
        let mut env = pb::Envelope::from(&envelope(rng));
        match rng.gen_range(0..6) {
            0 => env.from.clear(),
            1 => env.to.clear(),
            2 => env.msg = None,
            _ => {}
        }
        match &mut env.msg {
            Some(Msg::Append(a)) => damage_append(rng, a),
            Some(Msg::Snapshot(s)) => match rng.gen_range(0..3) {
                0 => s.meta = None,
                1 => s.meta.as_mut().unwrap().membership = None,
                _ => damage_members(rng, s.meta.as_mut().unwrap().membership.as_mut().unwrap()),
            },
            _ => {}
        }
        env
    }

    fn damage_append(rng: &mut SmallRng, a: &mut pb::envelope::Append) {
        if a.entries.is_empty() || rng.gen_bool(0.2) {
            a.prev_index = u64::MAX - rng.gen_range(0..2);
            a.entries.push(pb::Entry::from(&Entry {
                index: a.prev_index.wrapping_add(1),
                term: 1,
                payload: raftlog::core::EntryPayload::Noop,
            }));
            return;
        }
        let i = rng.gen_range(0..a.entries.len());
        let e = &mut a.entries[i];
        match rng.gen_range(0..4) {
            0 => e.payload = None,
            1 => e.index = e.index.wrapping_add(*[1, 2, u64::MAX].choose(rng).unwrap()),
            2 => {
                let dup = e.clone();
                a.entries.insert(i, dup);
            }
            _ => match &mut e.payload {
                Some(pb::entry::Payload::Membership(m)) => damage_members(rng, m),
                _ => e.payload = None,
            },
        }
    }

    fn damage_members(rng: &mut SmallRng, m: &mut pb::Membership) {
        match m.members.first().cloned() {
            Some(first) if rng.gen() => m.members.push(first),
            Some(_) => m.members[0].node_id.clear(),
            None => m.members.push(pb::Member::default()),
        }
    }

    // ---------------------------------------------------------------- oracles

    fn members_problem(m: &pb::Membership) -> Option<String> {
        let mut seen = std::collections::BTreeSet::new();
        for pm in &m.members {
            if pm.node_id.is_empty() {
                return Some("member without id".into());
            }
            if !seen.insert(&pm.node_id) {
                return Some(format!("duplicate member {}", pm.node_id));
            }
        }
        None
    }

    fn entry_problem(e: &pb::Entry) -> Option<String> {
        match &e.payload {
            None => Some("entry without payload".into()),
            Some(pb::entry::Payload::Membership(m)) => members_problem(m),
            Some(_) => None,
        }
    }

    fn meta_problem(meta: Option<&pb::SnapshotMeta>) -> Option<String> {
        match meta.map(|m| &m.membership) {
            None => Some("snapshot without meta".into()),
            Some(None) => Some("meta without membership".into()),
            Some(Some(m)) => members_problem(m),
        }
    }

    /// Why this envelope must not reach the core, if it must not.
    pub fn envelope_problem(env: &pb::Envelope) -> Option<String> {
        if env.from.is_empty() || env.to.is_empty() {
            return Some("no from or to".into());
        }
        let Some(msg) = &env.msg else {
            return Some("no message".into());
        };
        match msg {
            Msg::Append(a) => a.entries.iter().enumerate().find_map(|(i, e)| {
                let want = a.prev_index.checked_add(i as u64 + 1);
                if want != Some(e.index) {
                    return Some(format!("entry {i} has index {}", e.index));
                }
                entry_problem(e)
            }),
            Msg::Snapshot(s) => meta_problem(s.meta.as_ref()),
            _ => None,
        }
    }

    fn sort_members(m: &mut pb::Membership) {
        m.members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    }

    /// `env` as the crate would produce it from the core value: members sorted.
    fn normalized(mut env: pb::Envelope) -> pb::Envelope {
        match &mut env.msg {
            Some(Msg::Append(a)) => {
                for e in &mut a.entries {
                    if let Some(pb::entry::Payload::Membership(m)) = &mut e.payload {
                        sort_members(m);
                    }
                }
            }
            Some(Msg::Snapshot(s)) => {
                if let Some(m) = s.meta.as_mut().and_then(|m| m.membership.as_mut()) {
                    sort_members(m);
                }
            }
            _ => {}
        }
        env
    }

    fn check_envelope(env: pb::Envelope, stats: &mut Stats) -> Result<(), String> {
        let problem = envelope_problem(&env);
        match (Envelope::try_from(env.clone()), problem) {
            (Ok(core), None) => {
                stats.note("envelope: converted");
                same(
                    pb::Envelope::from(&core),
                    normalized(env),
                    "envelope back to protobuf",
                )
            }
            (Err(e), Some(_)) => {
                stats.note_error("envelope rejected", e);
                Ok(())
            }
            (Ok(core), Some(p)) => Err(format!("invalid envelope ({p}) converted to {core:?}")),
            (Err(e), None) => Err(format!("valid envelope {env:?} rejected: {e}")),
        }
    }

    fn check_write_request(r: pb::WriteRequestPb) -> Result<(), String> {
        let invalid = r.w.as_ref().is_some_and(|w| w.kind.is_none());
        match WriteRequest::try_from(r.clone()) {
            Ok(req) if !invalid => same(pb::WriteRequestPb::from(&req), r, "write request back"),
            Err(_) if invalid => Ok(()),
            other => Err(format!("write request {r:?} converted to {other:?}")),
        }
    }

    const KNOWN_CODES: [&str; 10] = [
        "invalid_request",
        "payload_too_large",
        "no_quorum",
        "no_leader",
        "write_timeout",
        "storage_error",
        "not_found",
        "shutting_down",
        "internal",
        "outcome_unknown",
    ];

    fn check_api_error(p: pb::ApiErrorPb) -> Result<(), String> {
        let e = ApiError::from(p.clone());
        let code_ok = match p.code.as_str() {
            "outcome_unknown" => matches!(e, ApiError::OutcomeUnknown(_)),
            c if KNOWN_CODES.contains(&c) => e.code() == c,
            c => matches!(&e, ApiError::Internal(m) if m.contains(c)),
        };
        if !code_ok {
            return Err(format!("error code {:?} became {e:?}", p.code));
        }
        same(
            ApiError::from(pb::ApiErrorPb::from(&e)),
            e,
            "api error back",
        )
    }

    fn check_join(r: pb::JoinRequest) -> Result<(), String> {
        let invalid = r.node_id.is_empty() || r.grpc_addr.is_empty();
        match JoinRequest::try_from(r.clone()) {
            Ok(j) if !invalid => same(pb::JoinRequest::from(&j), r, "join request back"),
            Err(_) if invalid => Ok(()),
            other => Err(format!("join request {r:?} converted to {other:?}")),
        }
    }

    fn check_join_reply(r: pb::JoinReply) -> Result<(), String> {
        same(
            pb::JoinReply::from(JoinOutcome::from(r.clone())),
            r,
            "join reply back",
        )
    }

    fn check_write_result(r: pb::WriteResultPb) -> Result<(), String> {
        let back = WriteResult::try_from(r).map(|w| pb::WriteResultPb::from(&w));
        same(back, Ok(r), "write result back")
    }

    /// Decodes `buf` with prost as type `T` within the allocation bound.
    fn decode<T: prost::Message + Default>(
        buf: &[u8],
        stats: &mut Stats,
    ) -> Result<Option<T>, String> {
        let res = bounded(
            "prost decode",
            buf.len(),
            ALLOC_PER_BYTE,
            ALLOC_SLACK,
            || T::decode(buf),
        )?;
        match res {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                stats.note("prost: rejected");
                Ok(None)
            }
        }
    }

    /// Every property that holds for any bytes: decode as each converted type,
    /// convert, compare with the oracles.
    pub fn check_bytes(buf: &[u8], stats: &mut Stats) -> Result<(), String> {
        if let Some(env) = decode::<pb::Envelope>(buf, stats)? {
            check_envelope(env, stats)?;
        }
        if let Some(r) = decode::<pb::WriteRequestPb>(buf, stats)? {
            check_write_request(r)?;
        }
        if let Some(e) = decode::<pb::ApiErrorPb>(buf, stats)? {
            check_api_error(e)?;
        }
        if let Some(j) = decode::<pb::JoinRequest>(buf, stats)? {
            check_join(j)?;
        }
        if let Some(r) = decode::<pb::JoinReply>(buf, stats)? {
            check_join_reply(r)?;
        }
        if let Some(r) = decode::<pb::WriteResultPb>(buf, stats)? {
            check_write_result(r)?;
        }
        Ok(())
    }

    pub fn case(rng: &mut SmallRng, stats: &mut Stats) -> Result<(), String> {
        let mut buf = valid_encoding(rng)?;
        let donor = valid_encoding(rng)?;
        if rng.gen_bool(0.25) {
            stats.note("proto: invalid values");
            let env = invalid_envelope(rng);
            let bytes = env.encode_to_vec();
            let back = pb::Envelope::decode(&bytes[..]).map_err(|e| e.to_string())?;
            same(&back, &env, "protobuf round trip")?;
            return check_envelope(back, stats).map_err(|e| format!("{e}; input {}", hex(&bytes)));
        }
        for _ in 0..rng.gen_range(1..4) {
            let kind = damage(rng, &mut buf, &donor);
            stats.note(format!("proto mutation: {kind}"));
        }
        check_bytes(&buf, stats).map_err(|e| format!("{e}; input {}", hex(&buf)))
    }
}

// ================================================================ HTTP target

/// The client API router with a fake node, on generated and mutated requests.
///
/// A request is kept as bytes in a small text form (so it can be mutated, and
/// replayed by cargo-fuzz): `METHOD TARGET`, then `name: value` header lines, an
/// empty line, and the body. Two pseudo headers shape the body: `x-fuzz-chunk: N`
/// streams it in N-byte chunks, `x-fuzz-fail: 1` ends the stream with an error.
///
/// Properties:
/// - the router never panics; every status is 2xx, or 4xx (the fake node never
///   fails, so a 5xx means the router failed on client input);
/// - every response body is JSON (HEAD: empty), and every non-2xx body is
///   `{"error": {"code": <non-empty string>, "message": <string>, ...}}`;
/// - a rejected request reached no node method: validation precedes the call;
/// - every call the node saw satisfies the documented limits: a write's message
///   fits `max_message_bytes` and is the body's `message`, `w` is 1..=voters,
///   `majority` or `all`, the idempotency key is 1..=256 visible ASCII bytes, the
///   body and its declared length fit `max_body_bytes`, the body stream did not
///   fail; a read's limit is 1..=`max_read_limit`, its wait at most `max_wait_ms`;
///   an added member has a non-blank id and a dialable `grpc_addr`; and each call
///   came from its own route and method.
pub mod http_target {
    use super::harness::{hex, Stats};
    use super::*;
    use axum::body::Body;
    use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
    use raftlog::http::HttpLimits;
    use raftlog::node::api::{
        ApiError, MemberSpec, NodeApi, ReadMessage, ReadRequest, ReadResult, Status, WriteConcern,
        WriteRequest, WriteResult,
    };
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    // ---------------------------------------------------------------- fake node

    #[derive(Clone, Debug)]
    enum Call {
        Write(WriteRequest),
        Read(ReadRequest),
        Status,
        Member(String, Option<MemberSpec>),
        Transfer(Option<String>),
    }

    /// A node that records every call and always succeeds.
    struct FakeNode {
        voters: usize,
        calls: Mutex<Vec<Call>>,
    }

    impl FakeNode {
        fn record(&self, c: Call) {
            self.calls.lock().unwrap().push(c);
        }
    }

    impl NodeApi for FakeNode {
        async fn write(&self, req: WriteRequest) -> Result<WriteResult, ApiError> {
            self.record(Call::Write(req));
            Ok(WriteResult {
                offset: 7,
                index: 9,
                term: 2,
                acks: 1,
                committed: true,
                duplicate: false,
            })
        }

        async fn read(&self, req: ReadRequest) -> Result<ReadResult, ApiError> {
            self.record(Call::Read(req.clone()));
            // Three messages in all, so the compatibility route's paging ends.
            let messages: Vec<ReadMessage> = (req.from..3)
                .take(req.limit.unwrap_or(1))
                .map(|o| ReadMessage {
                    offset: o,
                    message: format!("m{o}"),
                })
                .collect();
            let next_offset = req.from + messages.len() as u64;
            Ok(ReadResult {
                messages,
                next_offset,
            })
        }

        async fn status(&self) -> Result<Status, ApiError> {
            self.record(Call::Status);
            Ok(Status {
                node_id: "n1".into(),
                role: "leader".into(),
                term: 2,
                leader_id: Some("n1".into()),
                phase: "run".into(),
                commit_index: 3,
                applied_index: 3,
                last_log_index: 3,
                members: vec![],
                health: json!({}),
            })
        }

        fn voter_count(&self) -> usize {
            self.voters
        }

        async fn change_member(
            &self,
            node_id: String,
            member: Option<MemberSpec>,
        ) -> Result<u64, ApiError> {
            self.record(Call::Member(node_id, member));
            Ok(4)
        }

        async fn transfer_leadership(&self, to: Option<String>) -> Result<String, ApiError> {
            self.record(Call::Transfer(to.clone()));
            Ok(to.unwrap_or_else(|| "n2".into()))
        }
    }

    // ---------------------------------------------------------------- setup

    /// The node's shape and the limits for one case.
    #[derive(Clone, Copy, Debug)]
    pub struct Setup {
        pub limits: HttpLimits,
        pub voters: usize,
    }

    impl Setup {
        pub fn random(rng: &mut SmallRng) -> Setup {
            let max_read_limit = *[1, 2, 20, 10_000].choose(rng).unwrap();
            Setup {
                limits: HttpLimits {
                    max_message_bytes: *[1, 7, 100, 4096].choose(rng).unwrap(),
                    default_read_limit: rng.gen_range(1..=max_read_limit),
                    max_read_limit,
                    max_wait_ms: *[0, 1, 1000].choose(rng).unwrap(),
                    ..HttpLimits::default()
                },
                voters: rng.gen_range(1..=5),
            }
        }

        /// The fixed setup of the cargo-fuzz target.
        pub fn fixed() -> Setup {
            Setup {
                limits: HttpLimits {
                    max_message_bytes: 100,
                    default_read_limit: 10,
                    max_read_limit: 20,
                    max_wait_ms: 1000,
                    ..HttpLimits::default()
                },
                voters: 3,
            }
        }
    }

    // ---------------------------------------------------------------- generation

    const ROUTES: [(&str, &str); 14] = [
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages"),
        ("POST", "/api/v1/append"),
        ("GET", "/v1/messages"),
        ("GET", "/api/v1/messages"),
        ("GET", "/v1/status"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/v1/cluster/members"),
        ("POST", "/v1/cluster/members"),
        ("DELETE", "/v1/cluster/members/n2"),
        ("POST", "/v1/cluster/transfer-leadership"),
        ("GET", "/v1/nope"),
        ("PUT", "/v1/messages"),
    ];

    const ODD_PATHS: [&str; 8] = [
        "/v1/messages/",
        "//v1/messages",
        "/v1/%6Dessages",
        "/V1/MESSAGES",
        "/v1/cluster/members/%FF%00",
        "/v1/cluster/members/%20",
        "*",
        "http://example.com/v1/messages",
    ];

    const METHODS: [&str; 6] = ["HEAD", "OPTIONS", "PATCH", "DELETE", "TRACE", "BREW"];

    const QUERY_NAMES: [&str; 7] = [
        "w",
        "timeout_ms",
        "from",
        "limit",
        "consistency",
        "wait_ms",
        "x",
    ];

    const QUERY_VALUES: [&str; 22] = [
        "1",
        "2",
        "3",
        "0",
        "-1",
        "majority",
        "ALL",
        "+2",
        "%202%20",
        "18446744073709551615",
        "18446744073709551616",
        "1e3",
        "",
        "%FF",
        "%",
        "%zz",
        "a+b",
        "2%00",
        "local",
        "linearizable",
        "LOCAL",
        "99999999999999999999999",
    ];

    const W_JSON: [&str; 24] = [
        "1",
        "2",
        "3",
        "0",
        "-1",
        "5",
        "99",
        "18446744073709551615",
        "18446744073709551616",
        "1.0",
        "1e2",
        "1e400",
        "\"majority\"",
        "\"MAJORITY\"",
        "\" all \"",
        "\"2\"",
        "\"\"",
        "null",
        "true",
        "[]",
        "{}",
        "\"-0\"",
        "\"+2\"",
        "-0",
    ];

    const CONTENT_TYPES: [&str; 6] = [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin1",
        "jsön",
    ];

    fn query(rng: &mut SmallRng) -> String {
        let pairs: Vec<String> = (0..rng.gen_range(0..4))
            .map(|_| {
                let name = QUERY_NAMES.choose(rng).unwrap();
                let value = QUERY_VALUES.choose(rng).unwrap();
                format!("{name}={value}")
            })
            .collect();
        match pairs.len() {
            0 if rng.gen() => String::new(),
            _ => format!("?{}", pairs.join("&")),
        }
    }

    /// A JSON string literal of about `len` bytes of text, possibly multi-byte or
    /// written with `\u` escapes (so its JSON size and its text size differ).
    fn json_string(rng: &mut SmallRng, len: usize) -> String {
        let unit = *[
            "a",
            "é",
            "😀",
            "\\u0000",
            "\\u00e9",
            "\\ud83d\\ude00",
            "\\\"",
            "\\ud800",
        ]
        .choose(rng)
        .unwrap();
        let text_len = match unit {
            "é" | "\\u00e9" => 2,
            "😀" | "\\ud83d\\ude00" => 4,
            "\\ud800" => 3,
            _ => 1,
        };
        format!("\"{}\"", unit.repeat(len.div_ceil(text_len)))
    }

    /// A JSON value of any type, nested up to `depth`.
    fn json_value(rng: &mut SmallRng, depth: u32) -> String {
        match rng.gen_range(0..if depth == 0 { 4 } else { 6 }) {
            0 => W_JSON.choose(rng).unwrap().to_string(),
            1 => {
                let len = rng.gen_range(0..10);
                json_string(rng, len)
            }
            2 => "null".into(),
            3 => "-1.5e-7".into(),
            4 => format!("[{}]", json_value(rng, depth - 1)),
            _ => format!("{{\"k\":{}}}", json_value(rng, depth - 1)),
        }
    }

    fn message_len(rng: &mut SmallRng, setup: &Setup) -> usize {
        let max = setup.limits.max_message_bytes;
        match rng.gen_range(0..6) {
            0 => max,
            1 => max + 1,
            2 => max.saturating_sub(1),
            3 => 0,
            4 if rng.gen_bool(0.05) => setup.limits.max_body_bytes() + 1,
            _ => rng.gen_range(0..=max.min(300)),
        }
    }

    fn write_body(rng: &mut SmallRng, setup: &Setup) -> String {
        let len = message_len(rng, setup);
        let message = json_string(rng, len);
        let mut fields = vec![format!("\"message\":{message}")];
        if rng.gen_bool(0.3) {
            fields.push(format!("\"w\":{}", W_JSON.choose(rng).unwrap()));
        }
        if rng.gen_bool(0.2) {
            fields.push(format!("\"extra\":{}", json_value(rng, 3)));
        }
        if rng.gen_bool(0.1) {
            fields.push(format!("\"message\":{}", json_value(rng, 1)));
        }
        fields.shuffle(rng);
        format!("{{{}}}", fields.join(","))
    }

    fn member_body(rng: &mut SmallRng) -> String {
        let addr = [
            "\"n2:7001\"",
            "\"127.0.0.1:7001\"",
            "\"[::1]:1\"",
            "\"h:0\"",
            "\"http://h:1\"",
            "\"h\"",
            "\"\"",
            "\" \"",
            "7001",
            "null",
        ];
        let mut fields = Vec::new();
        for (key, values) in [
            (
                "node_id",
                &["\"n4\"", "\"\"", "\"  \"", "4", "null", "\"😀\""][..],
            ),
            ("grpc_addr", &addr[..]),
            ("http_addr", &addr[..]),
            ("voter", &["true", "false", "null", "\"true\"", "1"][..]),
        ] {
            if rng.gen_bool(0.85) {
                fields.push(format!("\"{key}\":{}", values.choose(rng).unwrap()));
            }
        }
        format!("{{{}}}", fields.join(","))
    }

    fn body(rng: &mut SmallRng, setup: &Setup, path: &str) -> String {
        match rng.gen_range(0..20) {
            0 => json_value(rng, 4),
            1 => format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            2 => String::new(),
            3 => "   ".into(),
            4 => "{\"to\":\"n3\"}".into(),
            _ if path.contains("members") => member_body(rng),
            _ => write_body(rng, setup),
        }
    }

    fn headers(rng: &mut SmallRng, body_len: usize) -> Vec<String> {
        let mut h = Vec::new();
        if rng.gen_bool(0.8) {
            h.push(format!(
                "content-type: {}",
                CONTENT_TYPES.choose(rng).unwrap()
            ));
        }
        match rng.gen_range(0..6) {
            0 => h.push(format!("content-length: {body_len}")),
            1 => h.push(format!(
                "content-length: {}",
                *["0", "1", "-1", "abc", "18446744073709551616", "99999999"]
                    .choose(rng)
                    .unwrap()
            )),
            _ => {}
        }
        let keys = *[0, 0, 0, 0, 0, 1, 1, 1, 2].choose(rng).unwrap();
        for _ in 0..keys {
            let key = *["k1", "", "  padded  ", "tab\tkey", "é", "x"]
                .choose(rng)
                .unwrap();
            let key = if rng.gen_bool(0.05) {
                "k".repeat(257)
            } else {
                key.to_string()
            };
            h.push(format!("idempotency-key: {key}"));
        }
        if rng.gen_bool(0.3) {
            h.push(format!("x-fuzz-chunk: {}", rng.gen_range(1..64)));
        }
        if rng.gen_bool(0.05) {
            h.push("x-fuzz-fail: 1".into());
        }
        h
    }

    /// A well-formed request in the text form.
    pub fn request(rng: &mut SmallRng, setup: &Setup) -> Vec<u8> {
        let (mut method, mut path) = *ROUTES.choose(rng).unwrap();
        if rng.gen_bool(0.1) {
            method = METHODS.choose(rng).unwrap();
        }
        if rng.gen_bool(0.1) {
            path = ODD_PATHS.choose(rng).unwrap();
        }
        let body = body(rng, setup, path);
        let mut out = format!("{method} {path}{}\n", query(rng));
        for h in headers(rng, body.len()) {
            out.push_str(&h);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&body);
        out.into_bytes()
    }

    // ---------------------------------------------------------------- parsing

    /// A request parsed back from the text form, with the body as sent.
    struct Parsed {
        request: Request<Body>,
        body: Vec<u8>,
        body_fails: bool,
    }

    fn split_line(buf: &[u8]) -> (&[u8], &[u8]) {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], &buf[i + 1..]),
            None => (buf, &[]),
        }
    }

    /// Parses the text form; `None` when it is no HTTP request at all (hyper would
    /// refuse it before the router).
    fn parse(wire: &[u8]) -> Option<Parsed> {
        let (first, mut rest) = split_line(wire);
        let space = first.iter().position(|&b| b == b' ')?;
        let method = Method::from_bytes(&first[..space]).ok()?;
        let mut builder = Request::builder()
            .method(method)
            .uri(first[space + 1..].to_vec());
        let (mut chunk, mut body_fails) = (None, false);
        loop {
            let (line, next) = split_line(rest);
            rest = next;
            if line.is_empty() {
                break;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii_start()).ok()?;
            match name.as_str() {
                "x-fuzz-chunk" => {
                    chunk = value
                        .to_str()
                        .ok()?
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                }
                "x-fuzz-fail" => body_fails = true,
                _ => builder = builder.header(name, value),
            }
        }
        let body = rest.to_vec();
        let stream_body = chunk.is_some() || body_fails;
        let request = builder
            .body(if stream_body {
                streamed(&body, chunk.unwrap_or(body.len().max(1)), body_fails)
            } else {
                Body::from(body.clone())
            })
            .ok()?;
        Some(Parsed {
            request,
            body,
            body_fails,
        })
    }

    fn streamed(body: &[u8], chunk: usize, fail: bool) -> Body {
        let mut items: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if fail {
            items.push(Err(std::io::Error::other("client went away")));
        }
        Body::from_stream(futures::stream::iter(items))
    }

    // ---------------------------------------------------------------- checking

    /// What the case needs to judge the node's calls.
    struct Sent {
        method: Method,
        path: String,
        body: Vec<u8>,
        body_fails: bool,
        declared_len: Option<String>,
    }

    /// Violations already reported, matched narrowly and tolerated (counted and
    /// printed in the outcomes) so that every other property still gates CI.
    /// Delete an entry once its fix lands: the target then enforces it again.
    fn known_issue(sent: &Sent, status: StatusCode, body: &[u8]) -> Option<&'static str> {
        let plain_400 = status == StatusCode::BAD_REQUEST
            && serde_json::from_slice::<Value>(body).is_err()
            && !body.is_empty();
        let delete = sent.method == Method::DELETE;
        let post = sent.method == Method::POST;
        if plain_400 && delete && sent.path.starts_with("/v1/cluster/members/") {
            return Some(
                "DELETE member: axum's Path rejection (bad percent-encoding) is plain text",
            );
        }
        if plain_400 && post && sent.path == "/v1/cluster/transfer-leadership" && sent.body_fails {
            return Some("transfer-leadership: axum's Bytes rejection (body error) is plain text");
        }
        None
    }

    fn check_status_and_body(
        sent: &Sent,
        status: StatusCode,
        body: &[u8],
        stats: &mut Stats,
    ) -> Result<(), String> {
        if let Some(issue) = known_issue(sent, status, body) {
            stats.note(format!("KNOWN ISSUE: {issue}"));
            return Ok(());
        }
        if !(status.is_success() || status.is_client_error()) {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(body)
            ));
        }
        if sent.method == Method::HEAD && body.is_empty() {
            return Ok(());
        }
        let json: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{status} body is not JSON ({e}): {}", hex(body)))?;
        if status.is_success() {
            return Ok(());
        }
        let code = json["error"]["code"].as_str().unwrap_or("");
        if code.is_empty() || !json["error"]["message"].is_string() {
            return Err(format!("{status} body lacks error.code/message: {json}"));
        }
        Ok(())
    }

    fn check_w(w: Option<WriteConcern>, voters: usize) -> Result<(), String> {
        match w {
            Some(WriteConcern::Count(n)) if n < 1 || n > voters => {
                Err(format!("w={n} reached a node with {voters} voters"))
            }
            _ => Ok(()),
        }
    }

    fn check_key(key: &Option<String>) -> Result<(), String> {
        let Some(k) = key else { return Ok(()) };
        let visible = k.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if k.is_empty() || k.len() > 256 || !visible || k.trim() != k {
            return Err(format!("idempotency key {k:?} reached the node"));
        }
        Ok(())
    }

    fn check_write(req: &WriteRequest, sent: &Sent, setup: &Setup) -> Result<(), String> {
        let limits = &setup.limits;
        if req.message.len() > limits.max_message_bytes {
            return Err(format!(
                "a {}-byte message reached the node",
                req.message.len()
            ));
        }
        check_w(req.w, setup.voters)?;
        check_key(&req.idempotency_key)?;
        let max_body = limits.max_body_bytes();
        let declared = sent
            .declared_len
            .as_deref()
            .and_then(|v| v.parse::<usize>().ok());
        if sent.body.len() > max_body || declared.is_some_and(|d| d > max_body) || sent.body_fails {
            return Err("an oversized or failed body reached the node".into());
        }
        let parsed: Option<Value> = serde_json::from_slice(&sent.body).ok();
        let message = parsed.as_ref().and_then(|v| v.get("message")?.as_str());
        if message != Some(req.message.as_str()) {
            return Err(format!(
                "node got message {:?}, body says {message:?}",
                req.message
            ));
        }
        Ok(())
    }

    fn check_read(req: &ReadRequest, setup: &Setup) -> Result<(), String> {
        let l = &setup.limits;
        let limit_ok = req
            .limit
            .is_some_and(|n| (1..=l.max_read_limit).contains(&n));
        if !limit_ok || req.wait_ms.is_some_and(|w| w > l.max_wait_ms) {
            return Err(format!("read {req:?} exceeds {l:?}"));
        }
        Ok(())
    }

    fn check_member(id: &str, spec: &Option<MemberSpec>) -> Result<(), String> {
        if id.is_empty() {
            return Err("member change for an empty id".into());
        }
        if let Some(s) = spec {
            if id.trim().is_empty() {
                return Err(format!("member {id:?} added"));
            }
            raftlog::config::parse_host_port(&s.grpc_addr, false)
                .map_err(|e| format!("member {id} with grpc_addr {:?}: {e}", s.grpc_addr))?;
            if !s.http_addr.is_empty() && s.http_addr.trim().is_empty() {
                return Err(format!("member {id} with blank http_addr"));
            }
        }
        Ok(())
    }

    /// A transfer target must be the body's `to` (the body must be JSON then).
    fn check_transfer(to: Option<&str>, sent: &Sent) -> Result<(), String> {
        let parsed: Option<Value> = serde_json::from_slice(&sent.body).ok();
        let want = parsed.as_ref().and_then(|v| v.get("to")?.as_str());
        if to.is_some() && to != want {
            return Err(format!("transfer to {to:?}, body says {want:?}"));
        }
        Ok(())
    }

    /// The routes and methods each call may come from.
    fn call_allowed(call: &Call, method: &Method, path: &str) -> bool {
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        match call {
            Call::Write(_) => post && (path == "/v1/messages" || path == "/api/v1/append"),
            Call::Read(_) => get && (path == "/v1/messages" || path == "/api/v1/messages"),
            Call::Status => get && ["/v1/status", "/ready", "/v1/cluster/members"].contains(&path),
            Call::Member(_, Some(_)) => post && path == "/v1/cluster/members",
            Call::Member(_, None) => {
                *method == Method::DELETE && path.starts_with("/v1/cluster/members/")
            }
            Call::Transfer(_) => post && path == "/v1/cluster/transfer-leadership",
        }
    }

    fn check_call(call: &Call, sent: &Sent, setup: &Setup) -> Result<(), String> {
        if !call_allowed(call, &sent.method, &sent.path) {
            return Err(format!(
                "{} {} made the call {call:?}",
                sent.method, sent.path
            ));
        }
        match call {
            Call::Write(req) => check_write(req, sent, setup),
            Call::Read(req) => check_read(req, setup),
            Call::Member(id, spec) => check_member(id, spec),
            Call::Transfer(to) => check_transfer(to.as_deref(), sent),
            Call::Status => Ok(()),
        }
    }

    /// Sends one request (in the text form) through the real router and checks
    /// every property. Returns the status, or `None` if it was no request at all.
    pub fn check(
        rt: &tokio::runtime::Runtime,
        setup: &Setup,
        wire: &[u8],
        stats: &mut Stats,
    ) -> Result<Option<StatusCode>, String> {
        let Some(parsed) = parse(wire) else {
            return Ok(None);
        };
        let sent = Sent {
            method: parsed.request.method().clone(),
            path: parsed.request.uri().path().to_string(),
            declared_len: parsed
                .request
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok().map(String::from)),
            body: parsed.body,
            body_fails: parsed.body_fails,
        };
        let node = Arc::new(FakeNode {
            voters: setup.voters,
            calls: Mutex::default(),
        });
        let app = raftlog::http::router(Arc::clone(&node), setup.limits);
        let (status, body) = rt.block_on(async {
            let resp = app.oneshot(parsed.request).await.expect("infallible");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
            (status, body.map_err(|e| format!("response body: {e}")))
        });
        let body = body?;
        check_status_and_body(&sent, status, &body, stats)?;
        let calls = node.calls.lock().unwrap().clone();
        if !status.is_success() && !calls.is_empty() {
            return Err(format!("{status}, yet the node saw {calls:?}"));
        }
        for call in &calls {
            check_call(call, &sent, setup)?;
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = status.as_u16();
        match json["error"]["message"].as_str() {
            Some(m) if code == 400 => stats.note_error("http 400", m),
            _ => stats.note(format!("http {code} {}", json["error"]["code"])),
        }
        Ok(Some(status))
    }

    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn case(
        rt: &tokio::runtime::Runtime,
        rng: &mut SmallRng,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let setup = Setup::random(rng);
        let mut wire = request(rng, &setup);
        if rng.gen_bool(0.5) {
            let donor = request(rng, &setup);
            for _ in 0..rng.gen_range(1..3) {
                let kind = gen::mutate(rng, &mut wire, &donor);
                stats.note(format!("http mutation: {kind}"));
            }
        }
        match check(rt, &setup, &wire, stats) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                stats.note("http: not a request");
                Ok(())
            }
            Err(e) => Err(format!(
                "{e}\n  setup {setup:?}\n  request {:?}",
                String::from_utf8_lossy(&wire)
            )),
        }
    }
}

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
