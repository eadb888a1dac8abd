//! Binary encoding of WAL records and snapshot files.
//!
//! Why a hand-written format: it is small, has no schema evolution needs beyond a
//! type byte, and lets the decoder be total (every input yields a value or an error).
//!
//! A WAL record is framed as `[u32 len][u32 crc32c(payload)][payload]`, little
//! endian, where `payload[0]` is the record type:
//! - [`TYPE_ENTRIES`]: one `append` call: `first: u64, count: u32`, then per entry
//!   `term: u64, kind: u8, body`. Indexes are implied (`first + i`), so a decoded
//!   batch is dense by construction. One record per call makes each call atomic.
//! - [`TYPE_HARD_STATE`]: `term: u64, vote: opt-str, commit: u64`.
//! - [`TYPE_SNAPSHOT_MARK`]: a snapshot was installed: `index: u64, term: u64,
//!   keep: u8` (whether the entries after `index` were kept).
//!
//! A snapshot file is `[8-byte magic][u64 len][u32 crc32c(payload)][payload]` with
//! payload `meta, data: u64-length bytes`.
//!
//! Invariants:
//! - decoding never panics and never allocates more than the input's length;
//! - a frame decodes only if its checksum matches and its payload is consumed exactly;
//! - `encode_*` followed by the matching decode returns the original value.

use crate::core::types::{
    Entry, EntryPayload, HardState, Member, Membership, Snapshot, SnapshotMeta,
};
use bytes::Bytes;

/// Bytes of frame header before the payload (`len` and `crc`).
pub const FRAME_HEADER: usize = 8;
/// Largest accepted payload; larger lengths are treated as garbage.
pub const MAX_PAYLOAD: usize = 256 << 20;

pub const TYPE_ENTRIES: u8 = 1;
pub const TYPE_HARD_STATE: u8 = 2;
pub const TYPE_SNAPSHOT_MARK: u8 = 3;

const KIND_NOOP: u8 = 0;
const KIND_COMMAND: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;

const SNAPSHOT_MAGIC: &[u8; 8] = b"RLSNAP01";
const SNAPSHOT_HEADER: usize = 8 + 8 + 4;

/// Why bytes did not decode. Carries a human-readable reason only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

fn err<T>(reason: impl Into<String>) -> Result<T, CodecError> {
    Err(CodecError(reason.into()))
}

/// A snapshot was installed at `index`/`term`; `keep` records whether the log held
/// that entry (entries after it were kept) or not (every entry was dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMark {
    pub index: u64,
    pub term: u64,
    pub keep: bool,
}

/// One decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    SnapshotMark(SnapshotMark),
}

// ---------------------------------------------------------------- encoding

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(
        out,
        u32::try_from(b.len()).expect("field longer than 4 GiB"),
    );
    out.extend_from_slice(b);
}

fn put_membership(out: &mut Vec<u8>, m: &Membership) {
    put_u32(
        out,
        u32::try_from(m.members.len()).expect("too many members"),
    );
    for (id, member) in &m.members {
        put_bytes(out, id.as_bytes());
        put_bytes(out, member.grpc_addr.as_bytes());
        put_bytes(out, member.http_addr.as_bytes());
        put_u8(out, u8::from(member.voter));
    }
}

fn put_entry_body(out: &mut Vec<u8>, e: &Entry) {
    put_u64(out, e.term);
    match &e.payload {
        EntryPayload::Noop => put_u8(out, KIND_NOOP),
        EntryPayload::Command(b) => {
            put_u8(out, KIND_COMMAND);
            put_bytes(out, b);
        }
        EntryPayload::Membership(m) => {
            put_u8(out, KIND_MEMBERSHIP);
            put_membership(out, m);
        }
    }
}

/// Appends a frame around the payload written by `body` (which starts with the type).
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    body(out);
    let len = out.len() - start - FRAME_HEADER;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return err(format!("record of {len} bytes exceeds {MAX_PAYLOAD}"));
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Appends one framed entries record. `entries` must be non-empty and dense.
pub fn encode_entries(out: &mut Vec<u8>, entries: &[Entry]) -> Result<(), CodecError> {
    assert!(!entries.is_empty(), "empty entries record");
    let first = entries[0].index;
    assert!(
        entries
            .iter()
            .enumerate()
            .all(|(i, e)| e.index == first + i as u64),
        "entries record must be dense"
    );
    let count = u32::try_from(entries.len()).map_err(|_| CodecError("too many entries".into()))?;
    frame(out, |out| {
        put_u8(out, TYPE_ENTRIES);
        put_u64(out, first);
        put_u32(out, count);
        entries.iter().for_each(|e| put_entry_body(out, e));
    })
}

/// Appends one framed hard-state record.
pub fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    frame(out, |out| {
        put_u8(out, TYPE_HARD_STATE);
        put_u64(out, hs.term);
        match &hs.vote {
            None => put_u8(out, 0),
            Some(v) => {
                put_u8(out, 1);
                put_bytes(out, v.as_bytes());
            }
        }
        put_u64(out, hs.commit);
    })
    .expect("hard state fits in a record");
}

/// Appends one framed snapshot-mark record.
pub fn encode_snapshot_mark(out: &mut Vec<u8>, mark: &SnapshotMark) {
    frame(out, |out| {
        put_u8(out, TYPE_SNAPSHOT_MARK);
        put_u64(out, mark.index);
        put_u64(out, mark.term);
        put_u8(out, u8::from(mark.keep));
    })
    .expect("snapshot mark fits in a record");
}

/// The full contents of a snapshot file.
pub fn encode_snapshot_file(snap: &Snapshot) -> Vec<u8> {
    let mut payload = Vec::with_capacity(snap.data.len() + 64);
    put_u64(&mut payload, snap.meta.index);
    put_u64(&mut payload, snap.meta.term);
    put_membership(&mut payload, &snap.meta.membership);
    put_u64(&mut payload, snap.data.len() as u64);
    payload.extend_from_slice(&snap.data);
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    put_u64(&mut out, payload.len() as u64);
    put_u32(&mut out, crc32c::crc32c(&payload));
    out.extend_from_slice(&payload);
    out
}

// ---------------------------------------------------------------- decoding

/// A bounds-checked cursor over a payload; slices share the underlying `Bytes`.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &str) -> Result<Bytes, CodecError> {
        if n > self.remaining() {
            return err(format!("{what}: need {n} bytes, {} left", self.remaining()));
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CodecError> {
        let b = self.take(N, what)?;
        let mut out = [0; N];
        out.copy_from_slice(&b);
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn bool(&mut self, what: &str) -> Result<bool, CodecError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => err(format!("{what}: bad flag {v}")),
        }
    }
    fn bytes(&mut self, what: &str) -> Result<Bytes, CodecError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn string(&mut self, what: &str) -> Result<String, CodecError> {
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec()).or_else(|_| err(format!("{what}: not UTF-8")))
    }
    fn finish(&self, what: &str) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            n => err(format!("{what}: {n} trailing bytes")),
        }
    }
}

fn get_membership(r: &mut Reader) -> Result<Membership, CodecError> {
    let count = r.u32("member count")?;
    let mut m = Membership::default();
    for _ in 0..count {
        let id = r.string("member id")?;
        let member = Member {
            grpc_addr: r.string("grpc addr")?,
            http_addr: r.string("http addr")?,
            voter: r.bool("voter flag")?,
        };
        if m.members.insert(id.clone(), member).is_some() {
            return err(format!("duplicate member {id:?}"));
        }
    }
    Ok(m)
}

fn get_entry(r: &mut Reader, index: u64) -> Result<Entry, CodecError> {
    let term = r.u64("entry term")?;
    let payload = match r.u8("entry kind")? {
        KIND_NOOP => EntryPayload::Noop,
        KIND_COMMAND => EntryPayload::Command(r.bytes("command")?),
        KIND_MEMBERSHIP => EntryPayload::Membership(get_membership(r)?),
        k => return err(format!("unknown entry kind {k}")),
    };
    Ok(Entry {
        index,
        term,
        payload,
    })
}

fn get_entries(r: &mut Reader) -> Result<Vec<Entry>, CodecError> {
    let first = r.u64("first index")?;
    let count = r.u32("entry count")? as u64;
    if count == 0 {
        return err("empty entries record");
    }
    if first == 0 || first.checked_add(count).is_none() {
        return err(format!("bad index range {first}+{count}"));
    }
    // Each entry takes at least 9 bytes: bound the allocation by the input.
    let mut out = Vec::with_capacity((count as usize).min(r.remaining() / 9));
    for i in 0..count {
        out.push(get_entry(r, first + i)?);
    }
    Ok(out)
}

fn get_hard_state(r: &mut Reader) -> Result<HardState, CodecError> {
    let term = r.u64("term")?;
    let vote = if r.bool("vote flag")? {
        Some(r.string("vote")?)
    } else {
        None
    };
    let commit = r.u64("commit")?;
    Ok(HardState { term, vote, commit })
}

fn get_mark(r: &mut Reader) -> Result<SnapshotMark, CodecError> {
    Ok(SnapshotMark {
        index: r.u64("mark index")?,
        term: r.u64("mark term")?,
        keep: r.bool("mark keep")?,
    })
}

/// Decodes a record payload (type byte first). The payload must be consumed exactly.
pub fn decode_record(payload: &Bytes) -> Result<Record, CodecError> {
    let mut r = Reader::new(payload);
    let rec = match r.u8("record type")? {
        TYPE_ENTRIES => Record::Entries(get_entries(&mut r)?),
        TYPE_HARD_STATE => Record::HardState(get_hard_state(&mut r)?),
        TYPE_SNAPSHOT_MARK => Record::SnapshotMark(get_mark(&mut r)?),
        t => return err(format!("unknown record type {t}")),
    };
    r.finish("record")?;
    Ok(rec)
}

/// The payload length a frame starting at `buf[0]` declares, when its whole
/// header is there.
pub fn declared_length(buf: &[u8]) -> Option<usize> {
    let header = buf.get(..FRAME_HEADER)?;
    Some(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize)
}

/// May a frame declare this payload length? Never zero (a zeroed page is no
/// record), never over [`MAX_PAYLOAD`].
pub fn possible_length(len: usize) -> bool {
    len != 0 && len <= MAX_PAYLOAD
}

/// Where the chain of frames from offset 0 ends, judged by their lengths alone
/// (no checksum, no decoding): at the first frame whose header is torn, whose
/// length is zero or too large, or that runs past the end of `buf`. Every
/// valid record of a segment lies before it.
pub fn frames_end(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Some(len) = declared_length(&buf[at..]) {
        if !possible_length(len) || len > buf.len() - at - FRAME_HEADER {
            break;
        }
        at += FRAME_HEADER + len;
    }
    at
}

/// Reads the frame starting at `at`. `Ok(None)` means `at` is exactly the end of
/// `buf`; `Ok(Some((record, next)))` gives the record and the offset after it.
pub fn read_frame(buf: &Bytes, at: usize) -> Result<Option<(Record, usize)>, CodecError> {
    if at >= buf.len() {
        return if at == buf.len() {
            Ok(None)
        } else {
            err("offset past end")
        };
    }
    let left = buf.len() - at;
    if left < FRAME_HEADER {
        return err(format!("torn frame header ({left} bytes)"));
    }
    let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
    if !possible_length(len) {
        return err(format!("bad record length {len}"));
    }
    if len > left - FRAME_HEADER {
        return err(format!(
            "torn record: length {len}, {} bytes left",
            left - FRAME_HEADER
        ));
    }
    let payload = buf.slice(at + FRAME_HEADER..at + FRAME_HEADER + len);
    if crc32c::crc32c(&payload) != crc {
        return err("checksum mismatch");
    }
    let rec = decode_record(&payload).map_err(|e| CodecError(format!("bad payload: {e}")))?;
    Ok(Some((rec, at + FRAME_HEADER + len)))
}

/// Decodes a whole snapshot file, verifying magic, length and checksum.
pub fn decode_snapshot_file(buf: &Bytes) -> Result<Snapshot, CodecError> {
    if buf.len() < SNAPSHOT_HEADER || &buf[..8] != SNAPSHOT_MAGIC {
        return err("not a snapshot file (bad magic or too short)");
    }
    let mut r = Reader::new(buf);
    r.take(8, "magic")?;
    let len = r.u64("snapshot length")?;
    let crc = r.u32("snapshot crc")?;
    if len != r.remaining() as u64 {
        return err(format!(
            "snapshot length {len}, file holds {}",
            r.remaining()
        ));
    }
    let payload = r.take(r.remaining(), "snapshot payload")?;
    if crc32c::crc32c(&payload) != crc {
        return err("snapshot checksum mismatch");
    }
    let mut r = Reader::new(&payload);
    let meta = SnapshotMeta {
        index: r.u64("snapshot index")?,
        term: r.u64("snapshot term")?,
        membership: get_membership(&mut r)?,
    };
    let data_len = r.u64("data length")?;
    let data = r.take(usize::try_from(data_len).unwrap_or(usize::MAX), "data")?;
    r.finish("snapshot")?;
    Ok(Snapshot { meta, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sample_entries() -> Vec<Entry> {
        let mut m = Membership::default();
        m.members.insert(
            "n1".into(),
            Member {
                grpc_addr: "127.0.0.1:1".into(),
                http_addr: "h".into(),
                voter: true,
            },
        );
        vec![
            Entry {
                index: 7,
                term: 2,
                payload: EntryPayload::Noop,
            },
            Entry {
                index: 8,
                term: 2,
                payload: EntryPayload::Command(Bytes::from_static(b"hi")),
            },
            Entry {
                index: 9,
                term: 3,
                payload: EntryPayload::Membership(m),
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        let hs = HardState {
            term: 5,
            vote: Some("n2".into()),
            commit: 4,
        };
        let mark = SnapshotMark {
            index: 3,
            term: 1,
            keep: true,
        };
        let mut buf = Vec::new();
        encode_entries(&mut buf, &sample_entries()).unwrap();
        encode_hard_state(&mut buf, &hs);
        encode_snapshot_mark(&mut buf, &mark);
        let buf = Bytes::from(buf);
        let (r1, at) = read_frame(&buf, 0).unwrap().unwrap();
        let (r2, at) = read_frame(&buf, at).unwrap().unwrap();
        let (r3, at) = read_frame(&buf, at).unwrap().unwrap();
        assert_eq!(r1, Record::Entries(sample_entries()));
        assert_eq!(r2, Record::HardState(hs));
        assert_eq!(r3, Record::SnapshotMark(mark));
        assert_eq!(read_frame(&buf, at).unwrap(), None);
    }

    #[test]
    fn snapshot_file_round_trip() {
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 3,
                membership: Membership::default(),
            },
            data: Bytes::from_static(b"state"),
        };
        let file = Bytes::from(encode_snapshot_file(&snap));
        assert_eq!(decode_snapshot_file(&file).unwrap(), snap);
        for cut in 0..file.len() {
            assert!(decode_snapshot_file(&file.slice(..cut)).is_err());
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_entries(&mut buf, &sample_entries()).unwrap();
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                read_frame(&Bytes::from(bad), 0).is_err(),
                "bit {bit} not detected"
            );
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut valid = Vec::new();
        encode_entries(&mut valid, &sample_entries()).unwrap();
        for _ in 0..20_000 {
            let mut buf = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..buf.len());
                buf[i] = rng.gen();
            }
            buf.truncate(rng.gen_range(0..=buf.len()));
            let b = Bytes::from(buf);
            let _ = read_frame(&b, 0);
            let _ = decode_record(&b.slice(FRAME_HEADER.min(b.len())..));
            let _ = decode_snapshot_file(&b);
        }
    }
}
