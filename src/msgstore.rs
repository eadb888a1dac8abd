//! The message store: the state machine's messages in append-only segment files,
//! with a bounded in-memory cache of the newest ones.
//!
//! Why: keeping every message in memory made a node's RSS grow with the log (850
//! MiB for a 512 MiB log) and made every snapshot copy and write the whole log
//! (110–150 ms at 420,000 messages, every 10,000 entries). Here a snapshot is the
//! store synced up to a count plus a small manifest (`state_machine`), restart
//! reads segment indexes instead of the log, and memory holds the cache and one
//! sparse index entry per [`STRIDE`] messages.
//!
//! The store is derived state, not the source of truth: the WAL and the latest
//! snapshot are. Appends are not synced one by one; a local snapshot syncs the
//! store (see [`MessageStore::sync_handle`]) before its manifest is written, and
//! recovery cuts the store back to the manifest's count and re-applies the WAL.
//!
//! Every file and directory the store creates, renames or removes goes through
//! [`crate::durable`], which fsyncs its parent before returning (a segment seal
//! costs a few fsyncs on the controller thread, once per `segment_bytes`).
//!
//! Layout: `<dir>/<first offset, 20 digits>.seg`, records `[len u32][crc u32]
//! [message]` (little endian) where crc is crc32c over the length bytes and the
//! message ([`record_crc`]): a run of zero bytes (a zeroed page) is never a valid
//! record. (The `.msg` files of earlier versions checksummed the message alone,
//! so eight zero bytes read as an empty message; `open` converts them: `legacy`.)
//! A segment is sealed at `segment_bytes`; its
//! `.idx` file (count, size, sparse positions, crc) lets a restart skip scanning
//! it. An `.idx` that does not match its segment is ignored and the segment
//! scanned.
//!
//! Trimming (`trim_front`) is logical at once (reads start at `first`, the
//! cache lets go) and physical later: whole segments below the trim point are
//! removed by [`MessageStore::release`], which the state machine calls once a
//! manifest naming the new first offset is durable (so a restart never finds
//! the store starting after its snapshot's first offset).
//!
//! Invariants:
//! - the store holds offsets `start..len` with no hole, `start <= first <= len`;
//!   on open, it is the longest valid run of segments on disk from the oldest
//!   (a torn or corrupt record ends it; later files are removed);
//! - the cache holds offsets `cache_first..len` and at least `cache_limit` bytes of
//!   them when the store has that much, which is more than the write buffer:
//!   anything not cached is already in the files, so reads never flush;
//! - every record read back is checked against its crc; one that fails is an
//!   error (never other bytes) and drops its segment's `.idx`, so the next open
//!   scans that segment and cuts it there (the node then repairs from its leader
//!   when the cut is below its snapshot: `node::bootstrap`).

use crate::durable;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The extension of segment files (tests and tools find them by it).
pub const SEGMENT_EXT: &str = "seg";
/// One sparse index entry per this many records.
pub const STRIDE: u64 = 64;
const HEADER: usize = 8;
const WRITE_BUFFER: usize = 64 << 10;
/// The cache never shrinks below this, so it always covers the write buffer.
const MIN_CACHE: usize = 1 << 20;
const IDX_MAGIC: &[u8; 4] = b"RLX1";

/// A record's checksum: crc32c over its length (4 bytes, little endian) then its
/// message. Covering the length makes eight zero bytes invalid (crc32c of four
/// zero bytes is not zero), where crc32c of the message alone is 0 for an empty one.
fn record_crc(msg: &[u8]) -> u32 {
    let len = (msg.len() as u32).to_le_bytes();
    crc32c::crc32c_append(crc32c::crc32c(&len), msg)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One segment file as far as reading is concerned.
#[derive(Clone)]
struct Segment {
    first: u64,
    count: u64,
    /// Bytes of whole records (including any still in the write buffer).
    size: u64,
    /// `sparse[k]` = position of record `first + k * STRIDE`.
    sparse: Vec<u64>,
    file: Arc<File>,
    path: PathBuf,
}

impl Segment {
    fn push(&mut self, len: usize) {
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
    segs: Vec<Segment>,
}

impl Segments {
    fn len(&self) -> u64 {
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
struct BlockReader<'a> {
    file: &'a File,
    limit: u64,
    block: Bytes,
    block_at: u64,
    /// Checks records with the checksum of `.msg` files (`legacy`).
    legacy: bool,
}

impl<'a> BlockReader<'a> {
    fn new(file: &'a File, limit: u64) -> Self {
        BlockReader {
            file,
            limit,
            block: Bytes::new(),
            block_at: 0,
            legacy: false,
        }
    }

    fn bytes(&mut self, pos: u64, n: usize) -> io::Result<Bytes> {
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

    fn record(&mut self, pos: u64) -> io::Result<Bytes> {
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

/// Syncs what was appended so far; runs on a blocking thread. (Directory
/// entries need no sync here: each was made durable when it was made.)
pub struct SyncHandle {
    files: Vec<Arc<File>>,
}

impl SyncHandle {
    pub fn run(self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// The store (see the module docs). Without a directory it keeps everything in
/// memory (tests).
pub struct MessageStore {
    dir: Option<PathBuf>,
    segments: Segments,
    writer: Option<BufWriter<Arc<File>>>,
    /// Segment files written since the last confirmed sync (see `synced`).
    unsynced: Vec<Arc<File>>,
    /// How many of `unsynced` the last `sync_handle` covered.
    handed: usize,
    segment_bytes: u64,
    cache: VecDeque<Bytes>,
    cache_first: u64,
    cache_bytes: usize,
    cache_limit: usize,
    /// `cache_limit` as configured (it is lifted while writes fail).
    configured_limit: usize,
    len: u64,
    /// The first offset readers may see (everything below is trimmed).
    first: u64,
    /// `first` as of the last `sync_handle`: what `synced` may release.
    handed_first: u64,
    /// The first write error since the store last worked. Messages appended
    /// meanwhile stay in the cache until [`MessageStore::repair`] writes them.
    failed: Option<String>,
}

impl std::fmt::Debug for MessageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStore")
            .field("dir", &self.dir)
            .field("len", &self.len)
            .field("cache_first", &self.cache_first)
            .finish_non_exhaustive()
    }
}

impl Default for MessageStore {
    fn default() -> Self {
        Self::memory()
    }
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.{SEGMENT_EXT}"))
}

impl MessageStore {
    /// Everything in memory, nothing on disk.
    pub fn memory() -> Self {
        MessageStore {
            dir: None,
            segments: Segments::default(),
            writer: None,
            unsynced: Vec::new(),
            handed: 0,
            segment_bytes: u64::MAX,
            cache: VecDeque::new(),
            cache_first: 0,
            cache_bytes: 0,
            cache_limit: usize::MAX,
            configured_limit: usize::MAX,
            len: 0,
            first: 0,
            handed_first: 0,
            failed: None,
        }
    }

    /// Opens (or creates) the store in `dir`: the longest valid prefix on disk.
    pub fn open(dir: &Path, segment_bytes: u64, cache_bytes: usize) -> io::Result<Self> {
        durable::create_dir_durable(dir)?;
        // Entries a crash left unsynced become durable before they are relied on.
        durable::sync_dir(dir)?;
        legacy::convert_all(dir)?;
        let mut firsts: Vec<u64> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Some(first) = name
                .strip_suffix(&format!(".{SEGMENT_EXT}"))
                .and_then(|n| n.parse().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segs: Vec<Segment> = Vec::new();
        let mut cut = false;
        for (i, &first) in firsts.iter().enumerate() {
            let path = seg_path(dir, first);
            let expected = segs.last().map_or(first, |s: &Segment| s.first + s.count);
            if cut || first != expected {
                // After a torn record or a gap nothing later can be trusted.
                remove_segment(&path)?;
                cut = true;
                continue;
            }
            let last = i + 1 == firsts.len();
            let (seg, complete) = load_segment(path, first, last)?;
            cut = !complete;
            segs.push(seg);
        }
        let mut store = MessageStore {
            dir: Some(dir.to_path_buf()),
            segments: Segments { segs },
            segment_bytes: segment_bytes.max(1),
            cache_limit: cache_bytes.max(MIN_CACHE),
            configured_limit: cache_bytes.max(MIN_CACHE),
            ..Self::memory()
        };
        store.len = store.segments.len();
        store.cache_first = store.len;
        store.first = store.segments.segs.first().map_or(0, |s| s.first);
        if store.segments.segs.is_empty() {
            store.new_segment(0)?;
        }
        store.open_writer()?;
        Ok(store)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == self.first
    }

    /// The first offset held (everything below was trimmed).
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The first offset the files hold (at most `first`: trimmed segments stay
    /// until released).
    pub fn start(&self) -> u64 {
        match self.segments.segs.first() {
            Some(s) if self.dir.is_some() => s.first,
            _ => self.first,
        }
    }

    /// Bytes held: the segment files, or the messages of a memory store.
    pub fn bytes(&self) -> u64 {
        if self.dir.is_none() {
            return self.cache_bytes as u64;
        }
        self.segments.segs.iter().map(|s| s.size).sum()
    }

    /// Trims (logically) every message below `to` (at most `len`).
    pub fn trim_front(&mut self, to: u64) {
        let to = to.min(self.len);
        if to <= self.first {
            return;
        }
        self.first = to;
        while self.cache_first < to && !self.cache.is_empty() {
            if self.failed.is_some() {
                // `repair` may still need to write it from here.
                break;
            }
            let m = self.cache.pop_front().expect("non-empty");
            self.cache_bytes -= m.len();
            self.cache_first += 1;
        }
    }

    /// Removes the sealed segments that hold only messages below `upto` (and
    /// below `first`), oldest first; each removal is durable when it returns.
    pub fn release(&mut self, upto: u64) -> io::Result<()> {
        let upto = upto.min(self.first);
        let segs = &mut self.segments.segs;
        while segs.len() > 1 && segs[0].first + segs[0].count <= upto {
            remove_segment(&segs[0].path)?;
            segs.remove(0);
        }
        Ok(())
    }

    /// The lowest offset to trim below so that at most `max` bytes stay held:
    /// whole sealed segments on disk, single messages in memory.
    pub fn trim_point_for_bytes(&self, max: u64) -> u64 {
        let mut total = self.bytes();
        if self.dir.is_none() {
            let mut to = self.cache_first;
            for m in &self.cache {
                if total <= max {
                    break;
                }
                total -= m.len() as u64;
                to += 1;
            }
            return to.max(self.first);
        }
        let mut to = self.first;
        let segs = &self.segments.segs;
        for s in &segs[..segs.len() - 1] {
            if total <= max {
                break;
            }
            total -= s.size;
            to = to.max(s.first + s.count);
        }
        to
    }

    /// Drops everything and starts empty at offset `first` (a full snapshot
    /// from the leader, or a log replayed from its start).
    pub fn reset_at(&mut self, first: u64) -> io::Result<()> {
        self.start_over(first, first);
        if self.dir.is_none() {
            return Ok(());
        }
        self.remove_files()?;
        self.new_segment(first)?;
        self.open_writer()
    }

    /// The in-memory state of a store holding `first..len`, none of it cached.
    fn start_over(&mut self, first: u64, len: u64) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.cache_first = len;
        self.len = len;
        self.first = first;
        self.handed_first = first;
        self.failed = None;
        self.cache_limit = self.configured_limit;
    }

    /// Closes the writer and removes every segment file (each durably).
    fn remove_files(&mut self) -> io::Result<()> {
        self.writer = None;
        self.unsynced.clear();
        self.handed = 0;
        for seg in std::mem::take(&mut self.segments.segs) {
            remove_segment(&seg.path)?;
        }
        Ok(())
    }

    /// The write error the store is failing with, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// After a write error: cuts the active segment back to its valid records,
    /// writes what only the cache holds, and resumes. On error the store stays
    /// failed (and its messages cached); the caller retries later.
    pub fn repair(&mut self) -> io::Result<()> {
        if self.failed.is_none() {
            return Ok(());
        }
        // What the buffer held may be half written: drop it, trust the file only.
        if let Some(w) = self.writer.take() {
            let _ = w.into_parts();
        }
        let active = self.segments.segs.pop().expect("an active segment");
        let (seg, _) = match load_segment(active.path.clone(), active.first, true) {
            Ok(loaded) => loaded,
            Err(e) => {
                self.segments.segs.push(active);
                return Err(e);
            }
        };
        self.segments.segs.push(seg);
        self.open_writer()?;
        let from = self.segments.len();
        if from < self.cache_first {
            // Cannot happen (the cache keeps everything once a write failed);
            // a restart rebuilds the store from the snapshot and the log.
            return Err(io::Error::other("messages to rewrite are no longer cached"));
        }
        for off in from..self.len {
            let msg = self.cache[(off - self.cache_first) as usize].clone();
            self.write(&msg)?;
        }
        self.writer.as_mut().expect("writer").flush()?;
        self.failed = None;
        self.cache_limit = self.configured_limit;
        Ok(())
    }

    pub fn append(&mut self, msg: Bytes) {
        if self.dir.is_some() && self.failed.is_none() {
            if let Err(e) = self.write(&msg) {
                tracing::error!(error = %e, "message store write failed");
                self.failed = Some(e.to_string());
                // Nothing may leave the cache from now on: it is the only copy.
                self.cache_limit = usize::MAX;
            }
        }
        self.len += 1;
        self.cache_bytes += msg.len();
        self.cache.push_back(msg);
        while self.cache.len() > 1 {
            let front = self.cache[0].len();
            if self.cache_bytes - front < self.cache_limit {
                break;
            }
            self.cache.pop_front();
            self.cache_bytes -= front;
            self.cache_first += 1;
        }
    }

    fn write(&mut self, msg: &[u8]) -> io::Result<()> {
        let len = u32::try_from(msg.len()).map_err(|_| invalid("message over 4 GiB".into()))?;
        let active = self.segments.segs.last().expect("an active segment");
        if active.count > 0 && active.size + (HEADER + msg.len()) as u64 > self.segment_bytes {
            self.seal()?;
        }
        let w = self.writer.as_mut().expect("writer");
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&record_crc(msg).to_le_bytes());
        w.write_all(&h)?;
        w.write_all(msg)?;
        let active = self.segments.segs.last_mut().expect("an active segment");
        active.push(msg.len());
        Ok(())
    }

    /// Ends the active segment (its index file written, its sync left to the next
    /// `sync_handle`) and starts the next.
    fn seal(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        let active = self.segments.segs.last().expect("an active segment");
        write_idx(active)?;
        self.new_segment(self.segments.len())?;
        self.open_writer()
    }

    fn new_segment(&mut self, first: u64) -> io::Result<()> {
        let dir = self.dir.clone().expect("disk store");
        let path = seg_path(&dir, first);
        let opts = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .clone();
        let file = Arc::new(durable::create_file_durable(&path, &opts)?);
        self.segments.segs.push(Segment {
            first,
            count: 0,
            size: 0,
            sparse: Vec::new(),
            file,
            path,
        });
        Ok(())
    }

    fn open_writer(&mut self) -> io::Result<()> {
        let active = self.segments.segs.last().expect("an active segment");
        let file = active.file.clone();
        file.set_len(active.size)?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file.clone());
        io::Seek::seek(&mut w, io::SeekFrom::Start(active.size))?;
        self.writer = Some(w);
        self.unsynced.push(file);
        Ok(())
    }

    /// Copies the cached messages into buffers of their own (after appending
    /// slices of one large buffer, which they would otherwise keep alive).
    pub fn own_cache(&mut self) {
        for m in self.cache.iter_mut() {
            *m = Bytes::copy_from_slice(m);
        }
    }

    /// Whether a read from `from` needs the files (its first message left the
    /// cache) and a [`MessageStore::reader`] can serve it from them (the store
    /// has files and has not failed).
    pub fn reads_files(&self, from: u64) -> bool {
        self.dir.is_some() && self.failed.is_none() && from.max(self.first) < self.cache_first
    }

    /// Messages `from..` (at most `limit`; nothing below `first`).
    pub fn read(&self, from: u64, limit: usize) -> io::Result<Vec<(u64, Bytes)>> {
        let from = from.max(self.first);
        let end = self.len.min(from.saturating_add(limit as u64));
        if from >= end {
            return Ok(Vec::new());
        }
        let mut out = if from < self.cache_first {
            self.segments
                .read(from, (self.cache_first.min(end) - from) as usize)?
        } else {
            Vec::new()
        };
        let start = from.max(self.cache_first);
        for off in start..end {
            out.push((off, self.cache[(off - self.cache_first) as usize].clone()));
        }
        Ok(out)
    }

    /// A view of the files readable from another thread, covering at least the
    /// first `count` messages (flushes the write buffer). Memory stores answer
    /// from a copy of the cache.
    pub fn reader(&mut self, count: u64) -> io::Result<Reader> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        if self.dir.is_none() || self.failed.is_some() {
            let n = count.min(self.len).saturating_sub(self.first);
            let msgs = self
                .read(self.first, n as usize)?
                .into_iter()
                .map(|(_, m)| m)
                .collect();
            return Ok(Reader::Memory(self.first, msgs));
        }
        Ok(Reader::Files(self.segments.clone()))
    }

    /// Flushes, and returns what a blocking thread must sync so that everything
    /// appended so far is durable.
    pub fn sync_handle(&mut self) -> io::Result<SyncHandle> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(format!(
                "message store failed earlier: {e}"
            )));
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        // Cleared only by `synced`: a sync that failed is repeated by the next.
        self.handed = self.unsynced.len();
        self.handed_first = self.first;
        Ok(SyncHandle {
            files: self.unsynced.clone(),
        })
    }

    /// The last [`SyncHandle`] ran successfully: its files need no sync again,
    /// except the active segment, which has grown since.
    /// The manifest written after it names `first` as of that handle: sealed
    /// segments below it are removed.
    pub fn synced(&mut self) {
        if let Err(e) = self.release(self.handed_first) {
            tracing::warn!(error = %e, "removing trimmed message segments failed (retried at the next snapshot)");
        }
        let done = self.handed.min(self.unsynced.len());
        self.unsynced.drain(..done);
        self.handed = 0;
        if let Some(active) = self.segments.segs.last() {
            if !self.unsynced.iter().any(|f| Arc::ptr_eq(f, &active.file)) {
                self.unsynced.insert(0, active.file.clone());
            }
        }
    }

    /// Keeps only the messages below `count` (recovery to a snapshot's count);
    /// below `start` the store is emptied to begin at `count`.
    pub fn truncate(&mut self, count: u64) -> io::Result<()> {
        if count >= self.len {
            return Ok(());
        }
        if count < self.start() {
            return self.reset_at(count);
        }
        self.first = self.first.min(count);
        if count < self.cache_first {
            self.cache.clear();
            self.cache_bytes = 0;
            self.cache_first = count;
        } else {
            while self.cache_first + self.cache.len() as u64 > count {
                let m = self.cache.pop_back().expect("non-empty");
                self.cache_bytes -= m.len();
            }
        }
        self.len = count;
        if self.dir.is_none() {
            return Ok(());
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
        }
        self.writer = None;
        let segs = &mut self.segments.segs;
        while segs.len() > 1 && segs.last().expect("non-empty").first >= count {
            let seg = segs.pop().expect("non-empty");
            remove_segment(&seg.path)?;
        }
        let seg = segs.last_mut().expect("the first segment stays");
        let keep = count - seg.first;
        let mut pos = seg.size;
        if keep < seg.count {
            // Walk from the sparse entry at or before `keep` to the cut position.
            let k = keep / STRIDE;
            pos = seg.sparse[k as usize];
            let mut reader = BlockReader::new(&seg.file, seg.size);
            for _ in k * STRIDE..keep {
                pos += (HEADER + reader.record(pos)?.len()) as u64;
            }
        }
        seg.count = keep;
        seg.size = pos;
        seg.sparse.truncate(keep.div_ceil(STRIDE) as usize);
        durable::remove_durable(&seg.path.with_extension("idx"))?;
        self.open_writer()
    }

    /// Removes every message (a snapshot from the leader replaces the state).
    pub fn clear(&mut self) -> io::Result<()> {
        self.reset_at(0)
    }
}

/// A cloneable view for reading the first messages off the controller thread.
#[derive(Clone)]
pub enum Reader {
    Files(Segments),
    /// The messages from an offset on.
    Memory(u64, Vec<Bytes>),
}

impl Reader {
    pub fn read(&self, from: u64, limit: usize) -> io::Result<Vec<(u64, Bytes)>> {
        match self {
            Reader::Files(s) => s.read(from, limit),
            Reader::Memory(first, v) => {
                let start = (from.saturating_sub(*first) as usize).min(v.len());
                let end = start.saturating_add(limit).min(v.len());
                Ok((start..end)
                    .map(|i| (first + i as u64, v[i].clone()))
                    .collect())
            }
        }
    }
}

/// Removes a segment and its index, durably: a removed segment that came back
/// after a power cut would be read as messages the store no longer holds.
fn remove_segment(path: &Path) -> io::Result<()> {
    durable::remove_durable(&path.with_extension("idx"))?;
    durable::remove_durable(path)
}

/// Loads one segment from its index file when that matches, else by scanning.
/// The bool is false when the scan stopped early (torn or corrupt record): the
/// file is cut there and nothing after it can be trusted.
fn load_segment(path: PathBuf, first: u64, last: bool) -> io::Result<(Segment, bool)> {
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

fn write_idx(seg: &Segment) -> io::Result<()> {
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

fn read_idx(path: &Path, first: u64) -> Option<(u64, u64, Vec<u64>)> {
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

mod legacy;
mod transfer;
pub use transfer::{seal_received, Span};

#[cfg(test)]
mod tests;
