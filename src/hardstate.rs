//! The hard-state file: term and vote kept apart from the files damage can take.
//!
//! Why: a node whose WAL is damaged must not lose its term and vote (voting twice
//! in a term can elect two leaders), yet should repair itself instead of waiting
//! for an operator. `<data_dir>/hardstate` holds the term, the vote, whether the
//! node is repairing (see `core::repair`), and the peer addresses known when it
//! was written (a node that lost its log still needs them to answer its leader).
//!
//! Format: `RLHS0001`, term u64, repairing u8, vote (u16 length + bytes), peer
//! count u16, each peer (u16 + id, u16 + address), crc32c u32 of all before
//! (little endian).
//!
//! Invariants:
//! - written through [`crate::durable::write_file_durable`] (temp, fsync, rename,
//!   directory fsync): a crash leaves the old or the new record, never a mix;
//! - written after the WAL sync that made a new term or vote durable and before
//!   any message that depends on it leaves (the persistence job does both);
//! - a record that fails its checksum or does not decode is an error, never a
//!   default: the caller decides whether the WAL can stand in for it.

use bytes::{Buf, BufMut};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RLHS0001";

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub term: u64,
    pub vote: Option<String>,
    pub repairing: bool,
    /// Peer id -> gRPC address.
    pub peers: BTreeMap<String, String>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("hardstate")
}

/// Write `rec` durably (see the module invariants).
pub fn write(data_dir: &Path, rec: &Record) -> io::Result<()> {
    crate::durable::write_file_durable(&path(data_dir), &encode(rec))
}

/// `Ok(None)` when there is no file; `Err` when it is damaged or unreadable.
pub fn read(data_dir: &Path) -> Result<Option<Record>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(b) => decode(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16_le(s.len() as u16);
    b.put_slice(s);
}

pub fn encode(rec: &Record) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.put_slice(MAGIC);
    b.put_u64_le(rec.term);
    b.put_u8(rec.repairing as u8);
    put_str(&mut b, rec.vote.as_deref().unwrap_or(""));
    let peers: Vec<_> = rec.peers.iter().take(u16::MAX as usize).collect();
    b.put_u16_le(peers.len() as u16);
    for (id, addr) in peers {
        put_str(&mut b, id);
        put_str(&mut b, addr);
    }
    let crc = crc32c::crc32c(&b);
    b.put_u32_le(crc);
    b
}

fn get_str(b: &mut &[u8]) -> Result<String, String> {
    if b.remaining() < 2 {
        return Err("truncated".into());
    }
    let n = b.get_u16_le() as usize;
    if b.remaining() < n {
        return Err("truncated".into());
    }
    let s = String::from_utf8(b[..n].to_vec()).map_err(|_| "not UTF-8".to_string())?;
    b.advance(n);
    Ok(s)
}

pub fn decode(all: &[u8]) -> Result<Record, String> {
    if all.len() < MAGIC.len() + 4 || &all[..MAGIC.len()] != MAGIC {
        return Err("not a hard-state file (bad magic or truncated)".into());
    }
    let (body, crc) = all.split_at(all.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut b = &body[MAGIC.len()..];
    if b.remaining() < 9 {
        return Err("truncated".into());
    }
    let term = b.get_u64_le();
    let repairing = b.get_u8() != 0;
    let vote = Some(get_str(&mut b)?).filter(|v| !v.is_empty());
    if b.remaining() < 2 {
        return Err("truncated".into());
    }
    let mut peers = BTreeMap::new();
    for _ in 0..b.get_u16_le() {
        let id = get_str(&mut b)?;
        peers.insert(id, get_str(&mut b)?);
    }
    if b.has_remaining() {
        return Err("trailing bytes".into());
    }
    Ok(Record {
        term,
        vote,
        repairing,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            term: 7,
            vote: Some("n2".into()),
            repairing: true,
            peers: [("n1".into(), "127.0.0.1:1".into())].into(),
        }
    }

    #[test]
    fn a_record_round_trips_through_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path()), Ok(None));
        write(tmp.path(), &sample()).unwrap();
        assert_eq!(read(tmp.path()), Ok(Some(sample())));
        let none = Record::default();
        write(tmp.path(), &none).unwrap();
        assert_eq!(read(tmp.path()), Ok(Some(none)));
        crate::durable::record::assert_durable(tmp.path());
    }

    #[test]
    fn every_bit_flip_and_every_truncation_is_detected() {
        let good = encode(&sample());
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "flip of bit {i} undetected");
        }
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncation to {n} undetected");
        }
        assert!(decode(&[0u8; 64]).is_err(), "a zeroed page");
    }
}
