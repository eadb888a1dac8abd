//! Snapshot encodings of the state machine.
//!
//! Two kinds, each in two versions (version 1 is what nodes wrote before the log
//! had a first offset, cursors or timestamps; it still decodes, as first offset 0
//! with nothing else):
//! - a *manifest* (`RLMANIF2`, v1 `RLMANIF1`): applied index, first and next
//!   offset, keys, cursors, time samples; the messages stay in the store;
//! - a *full payload* (`RLFULL02`, v1 had no magic): the same plus every retained
//!   message, what a leader sends a follower.
//!
//! Invariant: decoding checks every length before using it and never panics.

use super::{Landed, Reader};
use bytes::{Buf, BufMut, Bytes, BytesMut};

const MANIFEST_V1: &[u8; 8] = b"RLMANIF1";
const MANIFEST_V2: &[u8; 8] = b"RLMANIF2";
/// A v1 full payload starts with its applied index, which would have to be
/// about 3.5e18 to look like this.
const FULL_V2: &[u8; 8] = b"RLFULL02";

/// Everything but the messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Meta {
    pub applied: u64,
    pub first: u64,
    pub next: u64,
    pub keys: Vec<(String, Landed)>,
    pub cursors: Vec<(String, u64)>,
    pub times: Vec<(u64, u64)>,
}

fn malformed() -> String {
    "malformed snapshot".to_string()
}

fn need(b: &Bytes, n: usize) -> Result<(), String> {
    if b.len() < n {
        Err(malformed())
    } else {
        Ok(())
    }
}

fn get_str(b: &mut Bytes) -> Result<String, String> {
    need(b, 4)?;
    let len = b.get_u32_le() as usize;
    need(b, len)?;
    String::from_utf8(b.split_to(len).to_vec()).map_err(|_| malformed())
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

fn encode_tail(b: &mut BytesMut, m: &Meta) {
    b.put_u64_le(m.keys.len() as u64);
    for (k, l) in &m.keys {
        put_str(b, k);
        b.put_u64_le(l.offset);
        b.put_u64_le(l.index);
        b.put_u64_le(l.term);
        b.put_u64_le(l.count);
        b.put_u8(u8::from(l.conflict));
    }
    b.put_u64_le(m.cursors.len() as u64);
    for (name, off) in &m.cursors {
        put_str(b, name);
        b.put_u64_le(*off);
    }
    b.put_u64_le(m.times.len() as u64);
    for (off, ts) in &m.times {
        b.put_u64_le(*off);
        b.put_u64_le(*ts);
    }
}

/// Keys as version 1 wrote them (each landed one message, none conflicted).
fn decode_keys_v1(b: &mut Bytes) -> Result<Vec<(String, Landed)>, String> {
    need(b, 8)?;
    let n = b.get_u64_le();
    let mut keys = Vec::new();
    for _ in 0..n {
        let key = get_str(b)?;
        need(b, 24)?;
        let (offset, index, term) = (b.get_u64_le(), b.get_u64_le(), b.get_u64_le());
        keys.push((key, Landed::appended(offset, index, term, 1)));
    }
    Ok(keys)
}

fn decode_tail(b: &mut Bytes, m: &mut Meta) -> Result<(), String> {
    need(b, 8)?;
    for _ in 0..b.get_u64_le() {
        let key = get_str(b)?;
        need(b, 33)?;
        let l = Landed {
            offset: b.get_u64_le(),
            index: b.get_u64_le(),
            term: b.get_u64_le(),
            count: b.get_u64_le(),
            conflict: b.get_u8() == 1,
        };
        m.keys.push((key, l));
    }
    need(b, 8)?;
    for _ in 0..b.get_u64_le() {
        let name = get_str(b)?;
        need(b, 8)?;
        m.cursors.push((name, b.get_u64_le()));
    }
    need(b, 8)?;
    for _ in 0..b.get_u64_le() {
        need(b, 16)?;
        m.times.push((b.get_u64_le(), b.get_u64_le()));
    }
    if m.first > m.next {
        return Err(malformed());
    }
    Ok(())
}

/// True for a manifest (a local snapshot), false for a full payload.
pub fn is_manifest(data: &[u8]) -> bool {
    data.starts_with(MANIFEST_V1) || data.starts_with(MANIFEST_V2)
}

pub(super) fn encode_manifest(m: &Meta) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + m.keys.len() * 64 + m.times.len() * 16);
    b.put_slice(MANIFEST_V2);
    b.put_u64_le(m.applied);
    b.put_u64_le(m.first);
    b.put_u64_le(m.next);
    encode_tail(&mut b, m);
    b.freeze()
}

pub(super) fn decode_manifest(mut b: Bytes) -> Result<Meta, String> {
    need(&b, 8)?;
    let v2 = b.starts_with(MANIFEST_V2);
    b.advance(8);
    let mut m = Meta::default();
    if v2 {
        need(&b, 24)?;
        m.applied = b.get_u64_le();
        m.first = b.get_u64_le();
        m.next = b.get_u64_le();
        decode_tail(&mut b, &mut m)?;
    } else {
        need(&b, 16)?;
        m.applied = b.get_u64_le();
        m.next = b.get_u64_le();
        m.keys = decode_keys_v1(&mut b)?;
    }
    Ok(m)
}

/// The full payload for a snapshot whose data is `data`: a full payload is
/// returned as it is; a manifest gets its messages from `reader`. Reads the whole
/// retained log: run it on a blocking thread.
pub fn full_payload(data: &Bytes, reader: &Reader) -> Result<Bytes, String> {
    if !is_manifest(data) {
        return Ok(data.clone());
    }
    let m = decode_manifest(data.clone())?;
    let mut msgs = Vec::with_capacity((m.next - m.first).min(1 << 20) as usize);
    let mut size = 0usize;
    let mut at = m.first;
    while at < m.next {
        let want = (m.next - at).min(8192) as usize;
        let got = reader
            .read(at, want)
            .map_err(|e| format!("reading the message store: {e}"))?;
        if got.is_empty() || got[0].0 != at {
            return Err(format!(
                "the message store has no message {at} (the snapshot holds {}..{})",
                m.first, m.next
            ));
        }
        for (_, msg) in got {
            size += msg.len() + 4;
            msgs.push(msg);
            at += 1;
        }
    }
    let mut b = BytesMut::with_capacity(64 + size + m.keys.len() * 64 + m.times.len() * 16);
    b.put_slice(FULL_V2);
    b.put_u64_le(m.applied);
    b.put_u64_le(m.first);
    b.put_u64_le(m.next);
    for msg in &msgs {
        b.put_u32_le(msg.len() as u32);
        b.put_slice(msg);
    }
    encode_tail(&mut b, &m);
    Ok(b.freeze())
}

/// A full payload's meta and messages (slices of `b`), checked whole.
pub(super) fn decode_full(mut b: Bytes) -> Result<(Meta, Vec<Bytes>), String> {
    let mut m = Meta::default();
    let v2 = b.starts_with(FULL_V2);
    if v2 {
        b.advance(8);
        need(&b, 24)?;
        m.applied = b.get_u64_le();
        m.first = b.get_u64_le();
        m.next = b.get_u64_le();
    } else {
        need(&b, 16)?;
        m.applied = b.get_u64_le();
        m.next = b.get_u64_le();
    }
    let n = m.next.checked_sub(m.first).ok_or_else(malformed)?;
    if n > b.len() as u64 / 4 {
        return Err(malformed());
    }
    let mut msgs = Vec::with_capacity(n as usize);
    for _ in 0..n {
        need(&b, 4)?;
        let len = b.get_u32_le() as usize;
        need(&b, len)?;
        msgs.push(b.split_to(len));
    }
    if v2 {
        decode_tail(&mut b, &mut m)?;
    } else {
        m.keys = decode_keys_v1(&mut b)?;
    }
    Ok((m, msgs))
}
