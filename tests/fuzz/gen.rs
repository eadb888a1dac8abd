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
