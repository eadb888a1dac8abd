//! The message store's side of a streamed snapshot transfer.
//!
//! Why: a follower that needs a snapshot must get the messages it names, and a
//! log may be far larger than memory. So the leader sends the records exactly as
//! its segment files hold them (`[len][crc][message]`, read in bounded pieces
//! through a [`Span`] of open file handles), and the follower's received bytes are
//! already a segment file: it is checked record by record and indexed
//! ([`seal_received`]) off the controller thread, then moved into place by rename
//! ([`MessageStore::install`]).
//!
//! Invariants:
//! - a [`Span`] holds the files it reads open, so a segment released (unlinked)
//!   meanwhile stays readable: what is sent stays what was pinned;
//! - a sealed received segment holds exactly the declared count of records, each
//!   with a valid crc, and its `.idx` beside it; it is synced before it is
//!   renamed;
//! - `install` removes the old segments before the new one is renamed in, and the
//!   rename of the `.seg` is its commit point: until then the staged file is still
//!   there to redo the install from (see `state_machine::stream`).

use super::{
    durable, invalid, load_segment, record_crc, write_idx, BlockReader, MessageStore, Reader,
    Segment, Segments, HEADER, STRIDE,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The bytes of the records `first..next`, readable at any offset from any thread.
pub enum Span {
    /// `(file, from, to)` byte ranges, in order.
    Files(Vec<(Arc<File>, u64, u64)>),
    Memory(Bytes),
}

impl Span {
    pub fn len(&self) -> u64 {
        match self {
            Span::Files(p) => p.iter().map(|(_, from, to)| to - from).sum(),
            Span::Memory(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from byte `offset` of the span (blocking).
    pub fn read_at(&self, mut offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.len() {
            return Err(invalid("read past the end of the snapshot span".into()));
        }
        let pieces = match self {
            Span::Memory(b) => {
                let at = offset as usize;
                buf.copy_from_slice(&b[at..at + buf.len()]);
                return Ok(());
            }
            Span::Files(p) => p,
        };
        let mut filled = 0;
        for (file, from, to) in pieces {
            let n = to - from;
            if offset >= n {
                offset -= n;
                continue;
            }
            let take = ((n - offset) as usize).min(buf.len() - filled);
            file.read_exact_at(&mut buf[filled..filled + take], from + offset)?;
            filled += take;
            offset = 0;
            if filled == buf.len() {
                break;
            }
        }
        Ok(())
    }
}

/// Byte position of record `off` in `seg` (its size for the end).
fn position(seg: &Segment, off: u64) -> io::Result<u64> {
    if off >= seg.first + seg.count {
        return Ok(seg.size);
    }
    let k = (off - seg.first) / STRIDE;
    let mut pos = seg.sparse[k as usize];
    let mut reader = BlockReader::new(&seg.file, seg.size);
    for _ in seg.first + k * STRIDE..off {
        let mut h = reader.bytes(pos, HEADER)?;
        pos += (HEADER + h.get_u32_le() as usize) as u64;
    }
    Ok(pos)
}

impl Segments {
    /// The span of the records `first..next`, which the files must hold.
    pub fn span(&self, first: u64, next: u64) -> io::Result<Span> {
        let start = self.segs.first().map_or(0, |s| s.first);
        if first < start || next > self.len() || first > next {
            return Err(invalid(format!(
                "the message store holds {start}..{} but a snapshot needs {first}..{next}",
                self.len()
            )));
        }
        let mut pieces = Vec::new();
        for seg in &self.segs {
            let end = seg.first + seg.count;
            if end <= first || seg.first >= next {
                continue;
            }
            let from = position(seg, first.max(seg.first))?;
            let to = position(seg, next.min(end))?;
            pieces.push((seg.file.clone(), from, to));
        }
        Ok(Span::Files(pieces))
    }
}

impl Reader {
    /// The span of the records `first..next` (see [`Segments::span`]).
    pub fn span(&self, first: u64, next: u64) -> io::Result<Span> {
        match self {
            Reader::Files(s) => s.span(first, next),
            Reader::Memory(..) => {
                let mut b = BytesMut::new();
                let mut at = first;
                while at < next {
                    let got = self.read(at, (next - at).min(4096) as usize)?;
                    if got.first().is_none_or(|(o, _)| *o != at) {
                        return Err(invalid(format!("no message {at} for a snapshot")));
                    }
                    for (_, m) in got {
                        b.put_u32_le(m.len() as u32);
                        b.put_u32_le(record_crc(&m));
                        b.put_slice(&m);
                        at += 1;
                    }
                }
                Ok(Span::Memory(b.freeze()))
            }
        }
    }
}

/// Makes the received file at `path` a sealed segment of the `count` records
/// from `first`: cut to `len` bytes (what follows is not records), every record
/// checked, synced, its `.idx` written beside it. Reads the file once in bounded
/// blocks: call it on a blocking thread.
pub fn seal_received(path: &Path, first: u64, count: u64, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()?;
    drop(file);
    let (seg, complete) = load_segment(path.to_path_buf(), first, true)?;
    if !complete || seg.count != count || seg.size != len {
        return Err(invalid(format!(
            "received snapshot: {} valid records in {} of {len} bytes, {count} declared",
            seg.count, seg.size
        )));
    }
    write_idx(&seg)
}

impl MessageStore {
    /// Replaces every message with the sealed segment `staged` (from
    /// [`seal_received`], its `.idx` beside it, if still there) holding
    /// `first..next`: old segments removed, then the staged one renamed in, each
    /// step durable.
    pub fn install(&mut self, staged: &Path, first: u64, next: u64) -> io::Result<()> {
        if self.dir.is_none() {
            return self.install_in_memory(staged, first, next);
        }
        if next == first {
            self.reset_at(first)?;
            durable::remove_durable(&staged.with_extension("idx"))?;
            return durable::remove_durable(staged);
        }
        self.start_over(first, next);
        let staged = staged.to_path_buf();
        self.exec(move |d| d.install(&staged, first, next))
    }

    /// [`MessageStore::install`] for a memory store (tests): the records are read in.
    fn install_in_memory(&mut self, staged: &Path, first: u64, next: u64) -> io::Result<()> {
        let (seg, _) = load_segment(staged.to_path_buf(), first, true)?;
        let segs = Segments { segs: vec![seg] };
        self.reset_at(first)?;
        while self.len < next {
            let got = segs.read(self.len, 4096)?;
            if got.is_empty() {
                return Err(invalid(format!("staged snapshot ends at {}", self.len)));
            }
            for (_, m) in got {
                self.append(Bytes::copy_from_slice(&m));
            }
        }
        durable::remove_durable(&staged.with_extension("idx"))?;
        durable::remove_durable(staged)
    }
}
