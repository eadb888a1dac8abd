//! The message store's file format: records, segment files and their `.idx`
//! files (see the module docs of `msgstore` for the layout). Reading and
//! checking only; writing is the writer's (`writer`).
//!
//! Invariants:
//! - every record read back is checked against its crc; one that fails is an
//!   error, never other bytes;
//! - an `.idx` that does not match its segment is ignored and the segment scanned.

use crate::durable;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One sparse index entry per this many records.
pub const STRIDE: u64 = 64;
/// The extension of segment files (tests and tools find them by it).
pub const SEGMENT_EXT: &str = "seg";
pub(super) const HEADER: usize = 8;
pub(super) const IDX_MAGIC: &[u8; 4] = b"RLX1";

pub(super) fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_EXT}"))
}

/// A record's checksum: crc32c over its length (4 bytes, little endian) then its
/// message. Covering the length makes eight zero bytes invalid (crc32c of four
/// zero bytes is not zero), where crc32c of the message alone is 0 for an empty one.
pub(super) fn record_crc(msg: &[u8]) -> u32 {
    let len = (msg.len() as u32).to_le_bytes();
    crc32c::crc32c_append(crc32c::crc32c(&len), msg)
}

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One segment file as far as reading is concerned.
#[derive(Clone)]
pub(super) struct Segment {
    pub(super) first: u64,
    pub(super) count: u64,
    /// Bytes of its whole records.
    pub(super) size: u64,
    /// `sparse[k]` = position of record `first + k * STRIDE`.
    pub(super) sparse: Vec<u64>,
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
}

impl Segment {
    pub(super) fn push(&mut self, len: usize) {
        if self.count.is_multiple_of(STRIDE) {
            self.sparse.push(self.size);
        }
        self.count += 1;
        self.size += (HEADER + len) as u64;
    }
}

/// The segments, readable from any thread (`MessageStore::reader`).
#[derive(Clone, Default)]
pub struct Segments {
    pub(super) segs: Vec<Segment>,
}

impl Segments {
    pub(super) fn len(&self) -> u64 {
        self.segs.last().map_or(0, |s| s.first + s.count)
    }

    /// Messages `from..` (at most `limit`) from the files.
    pub fn read(&self, from: u64, limit: usize) -> io::Result<Vec<(u64, Bytes)>> {
        let mut out = Vec::new();
        let from = from.max(self.segs.first().map_or(0, |s| s.first));
        let end = self.len().min(from.saturating_add(limit as u64));
        let mut next = from;
        let i = self.segs.partition_point(|s| s.first + s.count <= from);
        for seg in &self.segs[i..] {
            if next >= end {
                break;
            }
            let k = (next - seg.first) / STRIDE;
            let mut pos = seg.sparse[k as usize];
            let mut at = seg.first + k * STRIDE;
            let stop = end.min(seg.first + seg.count);
            let mut buf = BlockReader::new(&seg.file, seg.size);
            while at < stop {
                let msg = buf
                    .record(pos)
                    .map_err(|e| damaged_record(seg, at, pos, e))?;
                pos += (HEADER + msg.len()) as u64;
                if at >= next {
                    out.push((at, msg));
                }
                at += 1;
            }
            next = stop;
        }
        Ok(out)
    }
}

/// A record read back failed: the error for the reader. The segment's `.idx`
/// is removed (durably), so the next open scans the segment, cuts it at the bad
/// record and, when that is below the snapshot, the node repairs itself from the
/// leader (`node::bootstrap`). Until then reads of it fail; none returns other
/// bytes.
fn damaged_record(seg: &Segment, at: u64, pos: u64, e: io::Error) -> io::Error {
    let idx = seg.path.with_extension("idx");
    if idx.exists() {
        tracing::error!(path = %seg.path.display(), record = at, byte = pos, error = %e,
            "message store: damaged record; its segment is scanned (and the node repaired) at the next restart");
        if let Err(e) = durable::remove_durable(&idx) {
            tracing::warn!(path = %idx.display(), error = %e, "cannot remove the index file");
        }
    }
    invalid(format!(
        "{}: record {at} at byte {pos}: {e}",
        seg.path.display()
    ))
}

/// Reads records through a block buffer (one `pread` per 256 KiB, not per record).
pub(super) struct BlockReader<'a> {
    file: &'a File,
    limit: u64,
    block: Bytes,
    block_at: u64,
    /// Checks records with the checksum of `.msg` files (`legacy`).
    pub(super) legacy: bool,
}

impl<'a> BlockReader<'a> {
    pub(super) fn new(file: &'a File, limit: u64) -> Self {
        BlockReader {
            file,
            limit,
            block: Bytes::new(),
            block_at: 0,
            legacy: false,
        }
    }

    pub(super) fn bytes(&mut self, pos: u64, n: usize) -> io::Result<Bytes> {
        let have =
            pos >= self.block_at && pos + n as u64 <= self.block_at + self.block.len() as u64;
        if !have {
            if pos + n as u64 > self.limit {
                return Err(invalid("record runs past the end of the segment".into()));
            }
            // Read ahead, but the end of the active segment may still be in the
            // write buffer: take what the file has, as long as it covers `n`.
            let want = n.max(256 << 10).min((self.limit - pos) as usize);
            let mut v = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                match self.file.read_at(&mut v[filled..], pos + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled < n {
                return Err(invalid("segment file shorter than its records".into()));
            }
            v.truncate(filled);
            self.block = Bytes::from(v);
            self.block_at = pos;
        }
        let start = (pos - self.block_at) as usize;
        Ok(self.block.slice(start..start + n))
    }

    pub(super) fn record(&mut self, pos: u64) -> io::Result<Bytes> {
        let mut h = self.bytes(pos, HEADER)?;
        let len = h.get_u32_le() as usize;
        let crc = h.get_u32_le();
        let msg = self.bytes(pos + HEADER as u64, len)?;
        let want = if self.legacy {
            crc32c::crc32c(&msg)
        } else {
            record_crc(&msg)
        };
        if want != crc {
            return Err(invalid("checksum mismatch".into()));
        }
        Ok(msg)
    }
}

/// Removes a segment and its index, durably: a removed segment that came back
/// after a power cut would be read as messages the store no longer holds.
pub(super) fn remove_segment(path: &Path) -> io::Result<()> {
    durable::remove_durable(&path.with_extension("idx"))?;
    durable::remove_durable(path)
}

/// Loads one segment from its index file when that matches, else by scanning.
/// The bool is false when the scan stopped early (torn or corrupt record): the
/// file is cut there and nothing after it can be trusted.
pub(super) fn load_segment(path: PathBuf, first: u64, last: bool) -> io::Result<(Segment, bool)> {
    let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
    let file_len = file.metadata()?.len();
    if !last {
        let idx = read_idx(&path.with_extension("idx"), first);
        if idx.is_none() && path.with_extension("idx").exists() {
            tracing::warn!(path = %path.with_extension("idx").display(),
                "message store: index file damaged or stale; scanning its segment instead");
        }
        if let Some((count, size, sparse)) = idx {
            if size == file_len {
                let seg = Segment {
                    first,
                    count,
                    size,
                    sparse,
                    file,
                    path,
                };
                return Ok((seg, true));
            }
        }
    }
    let mut seg = Segment {
        first,
        count: 0,
        size: 0,
        sparse: Vec::new(),
        file: file.clone(),
        path,
    };
    let mut reader = BlockReader::new(&file, file_len);
    while seg.size < file_len {
        match reader.record(seg.size) {
            Ok(msg) => seg.push(msg.len()),
            Err(e) => {
                tracing::warn!(path = %seg.path.display(), at = seg.size, error = %e,
                    "message store: cutting a torn or corrupt tail (re-applied from the log)");
                break;
            }
        }
    }
    let complete = seg.size == file_len;
    if !complete {
        file.set_len(seg.size)?;
        durable::remove_durable(&seg.path.with_extension("idx"))?;
    }
    Ok((seg, complete))
}

pub(super) fn write_idx(seg: &Segment) -> io::Result<()> {
    let mut b = BytesMut::with_capacity(28 + seg.sparse.len() * 8);
    b.put_slice(IDX_MAGIC);
    b.put_u64_le(seg.first);
    b.put_u64_le(seg.count);
    b.put_u64_le(seg.size);
    for p in &seg.sparse {
        b.put_u64_le(*p);
    }
    let crc = crc32c::crc32c(&b);
    b.put_u32_le(crc);
    let path = seg.path.with_extension("idx");
    durable::write_file_durable(&path, &b)
}

pub(super) fn read_idx(path: &Path, first: u64) -> Option<(u64, u64, Vec<u64>)> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 32 || &data[..4] != IDX_MAGIC {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut b = &body[4..];
    if b.get_u64_le() != first {
        return None;
    }
    let count = b.get_u64_le();
    let size = b.get_u64_le();
    if b.len() % 8 != 0 || (b.len() / 8) as u64 != count.div_ceil(STRIDE) {
        return None;
    }
    let sparse = (0..b.len() / 8).map(|_| b.get_u64_le()).collect();
    Some((count, size, sparse))
}
