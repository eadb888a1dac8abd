//! The WAL record decoder (`codec::read_frame`, `decode_record`) and the snapshot
//! file decoder (`decode_snapshot_file`).
//!
//! Properties:
//! - a valid stream of generated records decodes to exactly those records;
//! - decoding never panics, and no single allocation is larger than a small
//!   multiple of the input (a huge length field must not be trusted);
//! - a frame whose bytes are those of a frame written by the encoder decodes to
//!   exactly that record; a frame hit by a burst of at most 32 bits in its checksum
//!   or payload is rejected; a cut inside a frame is a torn-frame error; the frames
//!   before any damage decode unchanged;
//! - any other frame that decodes (a refreshed checksum over damaged bytes, a
//!   chance collision) is canonical: re-encoding the record gives back the same
//!   payload (up to member order), so nothing was silently skipped or invented;
//! - the same for snapshot files: any damage short of a refreshed checksum is
//!   an error; anything that decodes re-encodes to the same file.
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
