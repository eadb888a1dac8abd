//! The on-disk [`LogStore`]: a segmented, checksummed, append-only WAL plus
//! snapshot files.
//!
//! Layout under the data directory:
//! - `wal/<name:020>.seg`: segments, read in name order. A new segment is named
//!   `max(last_index + 1, previous name + 1)`: the first index it was started for,
//!   forced strictly increasing so that name order is write order.
//! - `snap/<index:020>-<term:020>.snap`: the latest snapshot (see `codec.rs`).
//!
//! Why append-only with *logical* truncation: every write is an append, so a crash
//! can only tear the tail, and recovery is "replay the records in order". A record
//! carries one whole `append` call (so calls are atomic); an entries record whose
//! first index is at or below the last index replaces that suffix when replayed,
//! exactly as `append` did at run time. Truncating files in place instead would
//! need several ordered fsyncs and could lose synced records in between.
//!
//! Group commit: `append`/`set_hard_state` encode into an in-memory buffer; `sync`
//! writes the buffer with one `pwrite` and one `fdatasync`. `entries()` reads
//! records back from the files (or the buffer), guided by an in-memory index of one
//! small `Slot` per entry, so memory does not grow with payload sizes.
//!
//! Preallocation: the active segment's file is extended to `segment_bytes` when
//! it is created or reopened (sparse: `ftruncate`, one fsync), so an append
//! writes inside the file's size and its `fdatasync` has no size change to commit
//! to the file system's journal. On this machine's ext4 that takes 15-30 % off an
//! fdatasync of a 180-byte append (`bench/fsync-append.py`, three writers at once
//! as three nodes on one disk: p50 0.21-0.28 ms growing the file, 0.18-0.20 ms
//! inside it; `fallocate` did no better than the sparse size, which also works
//! on file systems without it, such as the power-loss tests' FUSE). A segment is
//! trimmed to its records, and that trim synced, before the next one is
//! created, so only the last segment ever has a zero tail (as etcd's WAL does).
//!
//! Recovery rules (`open`):
//! - load the newest snapshot file that decodes (stray `*.tmp` files are removed);
//! - replay every segment in order; hard state = the last hard-state record;
//! - in the last segment, nothing but zero bytes after the last valid record is
//!   its preallocated space: the end of the stream, kept for the next appends;
//! - a bad record in the *last* segment with no valid record anywhere after it is
//!   a torn tail: the file is truncated there, fsynced, and a warning logged;
//! - a bad record followed by a valid one, a bad record in an earlier segment, or a
//!   record that would leave a hole, fails with [`WalError::Corrupt`];
//! - entries at or below the snapshot index are dropped; if the stream has no mark
//!   for the loaded snapshot (crash between the snapshot file and its mark) the
//!   snapshot rule is applied at the end; the remaining log must start right after
//!   the snapshot, or open fails with `Corrupt`.
//!
//! Invariants:
//! - every file and directory is created, renamed and removed through
//!   [`crate::durable`] (parent fsynced before the call returns);
//! - only the last segment is ever written; earlier ones are synced, trimmed to
//!   their records and sealed (a zero tail in a sealed segment is corruption);
//! - every segment begins with a hard-state record (the hard state in force when it
//!   was started), so deleting older segments never loses term or vote;
//! - `install_snapshot` syncs pending records, makes the snapshot file durable
//!   (temp + fsync + rename + dir fsync), appends a snapshot mark and syncs, and only
//!   then deletes segments holding no live entry (oldest first, dir fsync after
//!   each, so the survivors are always a suffix of the stream) and older snapshots;
//!   `install_snapshot_leaving_garbage` forgets them and returns them, in that
//!   order, for the node to delete on a thread of its own;
//! - after an fsync error the store refuses every write (the page cache may have
//!   dropped the data); reads go on;
//! - a snapshot at or below the current snapshot index is ignored.

use super::codec::{self, Record, SnapshotMark};
use super::{validate_append, LogStore, Recovered, WalError};
use crate::core::types::{Entry, HardState, Snapshot};
use crate::durable;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Segment size used in production: roll over once a segment reaches this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

const WAL_DIR: &str = "wal";
const SNAP_DIR: &str = "snap";

/// Where one live entry is stored: the record (segment, offset, framed length)
/// and its position inside that record's batch.
#[derive(Clone, Copy, Debug)]
struct Slot {
    term: u64,
    seg: u64,
    offset: u64,
    len: u32,
    pos: u32,
}

/// One segment file. `written` is the length of its valid, written content.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    written: u64,
}

/// The on-disk store. See the module docs for format and recovery rules.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// Name of the last segment, the only one written.
    active: u64,
    /// Encoded records not yet written, logically at `active.written..`.
    buf: Vec<u8>,
    /// One slot per entry after the snapshot, from `snapshot_index() + 1` on.
    slots: VecDeque<Slot>,
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    recovered: Recovered,
    /// Set after an fsync failure: writes are refused from then on.
    failed: Option<String>,
}

// ---------------------------------------------------------------- I/O helpers

fn io_err(path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.display().to_string(),
        offset,
        reason: reason.into(),
    }
}

trait Ctx<T> {
    fn ctx(self, path: &Path) -> Result<T, WalError>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, path: &Path) -> Result<T, WalError> {
        self.map_err(|e| io_err(path, e))
    }
}

fn read_all(file: &mut File, path: &Path) -> Result<Bytes, WalError> {
    let mut data = Vec::new();
    file.read_to_end(&mut data).ctx(path)?;
    Ok(Bytes::from(data))
}

/// Files in `dir` whose name parses with `parse`, sorted by the parsed key.
fn list<K: Ord>(
    dir: &Path,
    parse: impl Fn(&str) -> Option<K>,
) -> Result<Vec<(K, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).ctx(dir)? {
        let entry = entry.ctx(dir)?;
        if let Some(key) = entry.file_name().to_str().and_then(&parse) {
            out.push((key, entry.path()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let (index, term) = name.strip_suffix(".snap")?.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

fn segment_path(dir: &Path, name: u64) -> PathBuf {
    dir.join(WAL_DIR).join(format!("{name:020}.seg"))
}

/// What the WAL's segment files take on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Segment files.
    pub segments: usize,
    /// Their total size in bytes (the active one's whole preallocated size,
    /// most of it sparse).
    pub segment_bytes: u64,
}

/// The WAL's files, for observers that must not know its layout (the health
/// manager): from [`DiskStore::files`], cloneable, and usable on any thread
/// while the store is busy (it reads the directory only, never the store).
#[derive(Clone, Debug)]
pub struct WalFiles {
    dir: PathBuf,
}

impl WalFiles {
    /// What the segment files take now (blocking: a directory read).
    pub fn usage(&self) -> io::Result<DiskUsage> {
        disk_usage(&self.dir)
    }
}

impl DiskStore {
    /// A handle on this WAL's files for observers (see [`WalFiles`]).
    pub fn files(&self) -> WalFiles {
        WalFiles {
            dir: self.dir.clone(),
        }
    }
}

/// The segment files of the WAL in `dir` (the directory given to
/// [`DiskStore::open`]); a file removed meanwhile is simply not counted.
fn disk_usage(dir: &Path) -> io::Result<DiskUsage> {
    let mut usage = DiskUsage::default();
    for entry in fs::read_dir(dir.join(WAL_DIR))? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().and_then(parse_segment_name).is_none() {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            usage.segments += 1;
            usage.segment_bytes += meta.len();
        }
    }
    Ok(usage)
}

// ---------------------------------------------------------------- snapshots

/// Writes `snap` durably: temp file, fsync, rename, directory fsync.
fn write_snapshot_file(snap_dir: &Path, snap: &Snapshot) -> Result<PathBuf, WalError> {
    let name = format!("{:020}-{:020}.snap", snap.meta.index, snap.meta.term);
    let path = snap_dir.join(&name);
    let tmp = snap_dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).ctx(&tmp)?;
    file.write_all(&codec::encode_snapshot_file(snap))
        .ctx(&tmp)?;
    file.sync_all().ctx(&tmp)?;
    durable::rename_durable(&tmp, &path).ctx(&path)?;
    Ok(path)
}

/// Snapshot and temp files in `snap_dir` other than `keep`.
fn other_snapshots(snap_dir: &Path, keep: &Path) -> Result<Vec<PathBuf>, WalError> {
    let files = list(snap_dir, |n| {
        (n.ends_with(".snap") || n.ends_with(".tmp")).then_some(())
    })?;
    Ok(files
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p != keep)
        .collect())
}

fn read_snapshot(path: &Path, index: u64, term: u64) -> Result<Snapshot, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let data = read_all(&mut file, path).map_err(|e| e.to_string())?;
    let snap = codec::decode_snapshot_file(&data).map_err(|e| e.to_string())?;
    if (snap.meta.index, snap.meta.term) != (index, term) {
        return Err(format!("holds {}-{}", snap.meta.index, snap.meta.term));
    }
    Ok(snap)
}

/// The newest snapshot file that decodes; removes leftover temp files first.
fn load_snapshot(snap_dir: &Path) -> Result<Option<Snapshot>, WalError> {
    let tmps = list(snap_dir, |n| n.ends_with(".tmp").then_some(()))?;
    for (_, path) in &tmps {
        durable::remove_durable(path).ctx(path)?;
    }
    for ((index, term), path) in list(snap_dir, parse_snapshot_name)?.into_iter().rev() {
        match read_snapshot(&path, index, term) {
            Ok(snap) => return Ok(Some(snap)),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "skipping unreadable snapshot")
            }
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------- replay

/// Where a record sits: segment name, offset and framed length.
#[derive(Clone, Copy)]
struct Loc {
    seg: u64,
    offset: u64,
    len: u32,
}

/// Replays the record stream. Segments removed by compaction are not seen, so the
/// log is known only from `first` on ("anchored" once any entry or a dropping
/// snapshot mark was seen); the module docs explain why that is enough.
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    anchored: bool,
    first: u64,
    log: VecDeque<(Slot, Entry)>,
    last_mark: Option<SnapshotMark>,
}

impl Replay {
    fn last(&self) -> u64 {
        self.first + self.log.len() as u64 - 1
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        let i = index.checked_sub(self.first)?;
        self.log.get(usize::try_from(i).ok()?).map(|(s, _)| s.term)
    }

    fn apply(&mut self, rec: Record, loc: Loc) -> Result<(), String> {
        match rec {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Entries(entries) => self.append(entries, loc)?,
            Record::SnapshotMark(mark) => self.mark(mark),
        }
        Ok(())
    }

    fn append(&mut self, entries: Vec<Entry>, loc: Loc) -> Result<(), String> {
        let first = entries[0].index;
        if !self.anchored || first < self.first {
            self.reset(first);
        } else if first > self.last() + 1 {
            return Err(format!(
                "entries start at {first}, the log ends at {}",
                self.last()
            ));
        }
        self.log.truncate((first - self.first) as usize);
        for (pos, e) in entries.into_iter().enumerate() {
            let slot = Slot {
                term: e.term,
                seg: loc.seg,
                offset: loc.offset,
                len: loc.len,
                pos: pos as u32,
            };
            self.log.push_back((slot, e));
        }
        Ok(())
    }

    fn mark(&mut self, mark: SnapshotMark) {
        if mark.keep {
            self.drop_through(mark.index);
        } else {
            self.reset(mark.index.saturating_add(1));
        }
        self.last_mark = Some(mark);
    }

    fn reset(&mut self, first: u64) {
        self.anchored = true;
        self.first = first;
        self.log.clear();
    }

    /// Drops known entries at or below `index`.
    fn drop_through(&mut self, index: u64) {
        if !self.anchored {
            return;
        }
        let n = index
            .saturating_add(1)
            .saturating_sub(self.first)
            .min(self.log.len() as u64);
        self.log.drain(..n as usize);
        self.first += n;
        if self.log.is_empty() {
            self.first = self.first.max(index.saturating_add(1));
        }
    }

    /// Applies the loaded snapshot and checks the log resumes right after it.
    fn finish(mut self, snap: Option<&Snapshot>) -> Result<Self, String> {
        let (index, term) = snap.map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let next = index.saturating_add(1);
        let marked = self
            .last_mark
            .is_some_and(|m| (m.index, m.term) == (index, term));
        if snap.is_some() && !marked && self.term_at(index) != Some(term) {
            self.reset(next);
        }
        self.drop_through(index);
        if !self.anchored || self.log.is_empty() {
            self.reset(next);
        }
        if self.first != next {
            return Err(format!(
                "log resumes at index {} but the snapshot covers only up to {index}",
                self.first
            ));
        }
        Ok(self)
    }
}

// ---------------------------------------------------------------- recovery

/// Reads one segment, feeding its records to `replay`; cuts a torn tail of the last.
fn recover_segment(
    path: PathBuf,
    name: u64,
    is_last: bool,
    replay: &mut Replay,
) -> Result<Segment, WalError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .ctx(&path)?;
    let data = if is_last {
        // Its preallocated space is left unread: the records end at its end.
        read_last_segment(&mut file, &path, READ_CHUNK)?
    } else {
        read_all(&mut file, &path)?
    };
    let mut at = 0;
    loop {
        match codec::read_frame(&data, at) {
            Ok(None) => break,
            Ok(Some((rec, next))) => {
                let loc = Loc {
                    seg: name,
                    offset: at as u64,
                    len: (next - at) as u32,
                };
                replay
                    .apply(rec, loc)
                    .map_err(|r| corrupt(&path, at as u64, r))?;
                at = next;
            }
            Err(e) => {
                cut_tail(&path, &file, &data, at, is_last, &e.0)?;
                break;
            }
        }
    }
    Ok(Segment {
        path,
        file,
        written: at as u64,
    })
}

/// How much of the last segment is read at a time.
const READ_CHUNK: usize = 1 << 20;

/// The last segment's records without its preallocated space (nothing but zero
/// bytes after its chain of frames), read `chunk` bytes at a time and kept in a
/// buffer of their own size: the entries recovered from it are slices that keep
/// the buffer alive until they are compacted, and a preallocated segment is
/// `segment_bytes` long however little it holds. Reading it whole held 64 MiB
/// for a moment at every restart, and for the node's life before the buffer
/// was copied. The chain is followed by the frames' lengths
/// ([`codec::frames_end`]), never cut at trailing zeros alone (a record may end
/// in zero bytes); its zero tail is read through one chunk and checked. Anything
/// else after the frames (a torn record) returns the whole file for the
/// torn-tail rules.
fn read_last_segment(file: &mut File, path: &Path, chunk: usize) -> Result<Bytes, WalError> {
    let mut data = Vec::new();
    let mut end = 0;
    loop {
        let got = read_more(file, path, &mut data, chunk)?;
        end += codec::frames_end(&data[end..]);
        if got == 0 || chain_ended(&data[end..]) {
            break;
        }
    }
    if data[end..].iter().all(|&b| b == 0) && rest_is_zero(file, path, chunk)? {
        data.truncate(end);
        data.shrink_to_fit();
        return Ok(Bytes::from(data));
    }
    // Not a zero tail: the rest of the file joins what was read.
    file.seek(SeekFrom::Start(data.len() as u64)).ctx(path)?;
    file.read_to_end(&mut data).ctx(path)?;
    Ok(Bytes::from(data))
}

/// Appends up to `chunk` bytes of `file` to `data`; how many (0 at its end).
fn read_more(
    file: &mut File,
    path: &Path,
    data: &mut Vec<u8>,
    chunk: usize,
) -> Result<usize, WalError> {
    let start = data.len();
    data.resize(start + chunk, 0);
    let got = loop {
        match file.read(&mut data[start..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r.ctx(path)?,
        }
    };
    data.truncate(start + got);
    Ok(got)
}

/// Does the chain of frames end at the start of `rest` whatever follows it (a
/// zero or impossible length), rather than only for want of bytes read?
fn chain_ended(rest: &[u8]) -> bool {
    codec::declared_length(rest).is_some_and(|len| !codec::possible_length(len))
}

/// Is the rest of `file`, from its read position, zero bytes? Read one chunk at
/// a time into one buffer.
fn rest_is_zero(file: &mut File, path: &Path, chunk: usize) -> Result<bool, WalError> {
    let mut buf = Vec::new();
    while read_more(file, path, &mut buf, chunk)? > 0 {
        if buf.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        buf.clear();
    }
    Ok(true)
}

/// A bad record at `at`: a torn tail (cut it) or corruption (fail).
fn cut_tail(
    path: &Path,
    file: &File,
    data: &Bytes,
    at: usize,
    is_last: bool,
    reason: &str,
) -> Result<(), WalError> {
    if !is_last {
        return Err(corrupt(
            path,
            at as u64,
            format!("{reason} (in a sealed segment)"),
        ));
    }
    // A valid frame starts with a non-zero length, so none starts in the zero
    // bytes of the preallocated tail: the search ends at the last non-zero byte.
    let end = data.iter().rposition(|&b| b != 0).map_or(at, |p| p + 1);
    if let Some(p) = (at + 1..end).find(|&p| matches!(codec::read_frame(data, p), Ok(Some(_)))) {
        return Err(corrupt(
            path,
            at as u64,
            format!("{reason}; a valid record follows at offset {p}"),
        ));
    }
    tracing::warn!(
        path = %path.display(), offset = at, cut_bytes = end.max(at) - at, %reason,
        "cutting torn WAL tail"
    );
    file.set_len(at as u64).ctx(path)?;
    file.sync_all().ctx(path)
}

/// Creates `dir`, `dir/wal` and `dir/snap` (and missing ancestors) durably, and
/// syncs all three: entries a crash left unsynced (by an older version, or
/// before any sync here) are durable before recovery relies on them.
fn create_dirs(dir: &Path) -> Result<(), WalError> {
    for sub in [WAL_DIR, SNAP_DIR] {
        let path = dir.join(sub);
        durable::create_dir_durable(&path).ctx(&path)?;
        durable::sync_dir(&path).ctx(&path)?;
    }
    durable::sync_dir(dir).ctx(dir)
}

/// Creates segment `name`, preallocated to `size` bytes; its directory entry is
/// durable before any record in it is synced (and so before any of them is
/// reported durable).
fn create_segment(dir: &Path, name: u64, size: u64) -> Result<Segment, WalError> {
    let path = segment_path(dir, name);
    let opts = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .clone();
    let file = durable::create_file_durable(&path, &opts).ctx(&path)?;
    let seg = Segment {
        path,
        file,
        written: 0,
    };
    seg.preallocate(size)?;
    Ok(seg)
}

impl Segment {
    /// Grows the file to at least `size` bytes (zeros past `written`, see the
    /// module docs); a file already that long is left as it is.
    fn preallocate(&self, size: u64) -> Result<(), WalError> {
        self.resize_if(size, |len| len < size)
    }

    /// Cuts the file back to its records (the sealing trim).
    fn trim(&self) -> Result<(), WalError> {
        self.resize_if(self.written, |len| len != self.written)
    }

    /// Sets the file's size to `size` when `needed(current size)`, and syncs
    /// it, so that the size is durable before any record written inside it is
    /// reported durable (and a trim before the next segment exists).
    fn resize_if(&self, size: u64, needed: impl Fn(u64) -> bool) -> Result<(), WalError> {
        if !needed(self.file.metadata().ctx(&self.path)?.len()) {
            return Ok(());
        }
        debug_assert!(size >= self.written, "never cut into records");
        self.file.set_len(size).ctx(&self.path)?;
        self.file.sync_all().ctx(&self.path)
    }
}

/// Writes `buf` at the end of `seg` and fdatasyncs. On error also says whether the
/// store must stop (the file may now hold unknown content). A failed write (a
/// full disk) is undone and the segment preallocated to `size` again, so the
/// appends after it do not each grow the file until the next roll.
fn write_and_sync(seg: &mut Segment, buf: &[u8], size: u64) -> Result<(), (WalError, bool)> {
    if let Err(e) = seg.file.write_all_at(buf, seg.written) {
        // Undo a partial write so no torn record sits before later ones.
        let fatal = seg.file.set_len(seg.written).is_err();
        if !fatal {
            if let Err(p) = seg.preallocate(size) {
                tracing::warn!(error = %p, "WAL segment left unpreallocated after a failed write");
            }
        }
        return Err((io_err(&seg.path, e), fatal));
    }
    seg.file
        .sync_data()
        .map_err(|e| (io_err(&seg.path, e), true))?;
    seg.written += buf.len() as u64;
    Ok(())
}

impl DiskStore {
    /// Opens (or creates) the store in `dir`, recovering as the module docs say.
    /// Segments roll over once they reach `segment_bytes`
    /// ([`DEFAULT_SEGMENT_BYTES`] in production).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<DiskStore, WalError> {
        if segment_bytes == 0 {
            return Err(WalError::Invalid("segment_bytes must be positive".into()));
        }
        create_dirs(dir)?;
        let snapshot = load_snapshot(&dir.join(SNAP_DIR))?;
        let names = list(&dir.join(WAL_DIR), parse_segment_name)?;
        let mut replay = Replay::default();
        let count = names.len();
        let mut segments = BTreeMap::new();
        for (i, (name, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            segments.insert(name, recover_segment(path, name, is_last, &mut replay)?);
        }
        let replay = replay
            .finish(snapshot.as_ref())
            .map_err(|r| corrupt(&dir.join(WAL_DIR), 0, r))?;
        Self::assemble(dir, segment_bytes, segments, replay, snapshot)
    }

    fn assemble(
        dir: &Path,
        segment_bytes: u64,
        segments: BTreeMap<u64, Segment>,
        replay: Replay,
        snapshot: Option<Snapshot>,
    ) -> Result<DiskStore, WalError> {
        let (slots, entries) = replay.log.into_iter().unzip();
        let recovered = Recovered {
            hard_state: replay.hard_state.clone(),
            snapshot: snapshot.clone(),
            entries,
        };
        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            segment_bytes,
            active: segments.keys().next_back().copied().unwrap_or(0),
            segments,
            buf: Vec::new(),
            slots,
            hard_state: replay.hard_state,
            snapshot,
            recovered,
            failed: None,
        };
        match store.segments.get(&store.active) {
            None => store.start_segment(store.last_index() + 1)?,
            Some(seg) => {
                // Preallocated again (a torn tail was cut, or an older build
                // wrote it); a full one is left as it is, the next append rolls.
                seg.preallocate(segment_bytes)?;
                if seg.written == 0 {
                    codec::encode_hard_state(&mut store.buf, &store.hard_state)
                }
            }
        }
        Ok(store)
    }

    /// The data directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        let i = index.checked_sub(self.snapshot_index() + 1)?;
        self.slots.get(usize::try_from(i).ok()?).map(|s| s.term)
    }

    fn check_failed(&self) -> Result<(), WalError> {
        match &self.failed {
            None => Ok(()),
            Some(msg) => Err(io_err(
                &self.dir,
                io::Error::other(format!("store failed earlier: {msg}")),
            )),
        }
    }

    /// Creates segment `name`, makes it active and starts it with the hard state.
    fn start_segment(&mut self, name: u64) -> Result<(), WalError> {
        if let Some(sealed) = self.segments.get(&self.active) {
            // Trimmed (and synced) first: a sealed segment has no zero tail.
            sealed.trim()?;
        }
        let seg = create_segment(&self.dir, name, self.segment_bytes)?;
        self.segments.insert(name, seg);
        self.active = name;
        codec::encode_hard_state(&mut self.buf, &self.hard_state);
        Ok(())
    }

    /// Seals the active segment and starts a new one once it is full.
    fn maybe_roll(&mut self) -> Result<(), WalError> {
        let written = self.segments[&self.active].written;
        if written + (self.buf.len() as u64) < self.segment_bytes {
            return Ok(());
        }
        self.sync()?;
        let name = (self.last_index() + 1).max(self.active + 1);
        self.start_segment(name)
    }

    /// Offset at which the next buffered record will land in the active segment.
    fn next_offset(&self) -> u64 {
        self.segments[&self.active].written + self.buf.len() as u64
    }

    /// Drops every entry at or below `index` (`keep`) or every entry (`!keep`).
    fn compact(&mut self, index: u64, keep: bool) {
        if keep {
            let n = index + 1 - (self.snapshot_index() + 1);
            self.slots.drain(..n as usize);
        } else {
            self.slots.clear();
        }
    }

    /// Forgets the segments before the one holding the first live entry and
    /// returns their paths, oldest first (for the caller to delete in that
    /// order, so the survivors are always a suffix of the stream).
    fn take_dead_segments(&mut self) -> Vec<PathBuf> {
        let live_from = self.slots.front().map_or(self.active, |s| s.seg);
        let dead: Vec<u64> = self.segments.range(..live_from).map(|(k, _)| *k).collect();
        dead.into_iter()
            .map(|name| self.segments.remove(&name).expect("listed segment").path)
            .collect()
    }

    /// Reads and decodes the entries record a slot points into.
    fn read_batch(&self, slot: &Slot) -> Result<Vec<Entry>, WalError> {
        let seg = self.segments.get(&slot.seg).ok_or_else(|| {
            corrupt(
                &segment_path(&self.dir, slot.seg),
                slot.offset,
                "segment missing",
            )
        })?;
        let len = slot.len as usize;
        let bytes = if slot.seg == self.active && slot.offset >= seg.written {
            let start = (slot.offset - seg.written) as usize;
            Bytes::copy_from_slice(&self.buf[start..start + len])
        } else {
            let mut data = vec![0; len];
            seg.file
                .read_exact_at(&mut data, slot.offset)
                .ctx(&seg.path)?;
            Bytes::from(data)
        };
        match codec::read_frame(&bytes, 0) {
            Ok(Some((Record::Entries(entries), _))) => Ok(entries),
            Ok(_) => Err(corrupt(&seg.path, slot.offset, "not an entries record")),
            Err(e) => Err(corrupt(&seg.path, slot.offset, e.0)),
        }
    }
}

impl LogStore for DiskStore {
    fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    fn take_recovered(&mut self) -> Recovered {
        std::mem::take(&mut self.recovered)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_failed()?;
        validate_append(entries, self.snapshot_index(), self.last_index())?;
        if entries.is_empty() {
            return Ok(());
        }
        self.maybe_roll()?;
        let (offset, start) = (self.next_offset(), self.buf.len());
        codec::encode_entries(&mut self.buf, entries).map_err(|e| WalError::Invalid(e.0))?;
        let len = (self.buf.len() - start) as u32;
        self.slots
            .truncate((entries[0].index - self.snapshot_index() - 1) as usize);
        for (pos, e) in entries.iter().enumerate() {
            let slot = Slot {
                term: e.term,
                seg: self.active,
                offset,
                len,
                pos: pos as u32,
            };
            self.slots.push_back(slot);
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.check_failed()?;
        if *hs == self.hard_state {
            return Ok(());
        }
        self.maybe_roll()?;
        codec::encode_hard_state(&mut self.buf, hs);
        self.hard_state = hs.clone();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        self.check_failed()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let seg = self.segments.get_mut(&self.active).expect("active segment");
        match write_and_sync(seg, &self.buf, self.segment_bytes) {
            Ok(()) => {
                self.buf.clear();
                Ok(())
            }
            Err((e, fatal)) => {
                if fatal {
                    self.failed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        for path in self.install_snapshot_leaving_garbage(snapshot)? {
            durable::remove_durable(&path).ctx(&path)?;
        }
        Ok(())
    }

    fn install_snapshot_leaving_garbage(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<Vec<PathBuf>, WalError> {
        self.check_failed()?;
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.snapshot_index() {
            return Ok(Vec::new());
        }
        self.sync()?;
        let path = write_snapshot_file(&self.dir.join(SNAP_DIR), snapshot)?;
        let keep = self.term_at(index) == Some(term);
        self.compact(index, keep);
        self.snapshot = Some(snapshot.clone());
        self.maybe_roll()?;
        codec::encode_snapshot_mark(&mut self.buf, &SnapshotMark { index, term, keep });
        self.sync()?;
        let mut garbage = self.take_dead_segments();
        garbage.extend(other_snapshots(&self.dir.join(SNAP_DIR), &path)?);
        Ok(garbage)
    }

    fn snapshot(&self) -> Option<Snapshot> {
        self.snapshot.clone()
    }

    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError> {
        let first = self.snapshot_index() + 1;
        if lo < first || lo > hi || hi > self.last_index() + 1 {
            return Err(WalError::Invalid(format!(
                "entries({lo}, {hi}) outside the stored log {first}..{}",
                self.last_index() + 1
            )));
        }
        let mut out = Vec::with_capacity((hi - lo) as usize);
        let mut batch: Option<((u64, u64), Vec<Entry>)> = None;
        for index in lo..hi {
            let slot = self.slots[(index - first) as usize];
            let key = (slot.seg, slot.offset);
            if batch.as_ref().map(|b| b.0) != Some(key) {
                batch = Some((key, self.read_batch(&slot)?));
            }
            let entries = &batch.as_ref().expect("just read").1;
            let entry = entries.get(slot.pos as usize).filter(|e| e.index == index);
            let entry = entry.ok_or_else(|| {
                corrupt(
                    &segment_path(&self.dir, slot.seg),
                    slot.offset,
                    "entry not in record",
                )
            })?;
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn last_index(&self) -> u64 {
        self.snapshot_index() + self.slots.len() as u64
    }
}

#[cfg(test)]
mod durability_tests {
    use super::*;
    use crate::durable::record::{assert_durable, undurable_under};
    use crate::wal::conformance::{entry, snapshot};

    /// Rolls, snapshots (removing segments and older snapshot files) and a
    /// reopen: after every call that reports records durable, every directory
    /// entry made so far has had its parent synced.
    #[test]
    fn every_entry_is_durable_before_a_sync_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/wal");
        let mut s = DiskStore::open(&dir, 256).unwrap();
        assert_durable(tmp.path());
        for i in 1..=40 {
            s.append(&[entry(i, 1)]).unwrap();
            s.sync().unwrap();
            assert_eq!(undurable_under(tmp.path()), Vec::<String>::new(), "at {i}");
            if i % 15 == 0 {
                s.install_snapshot(&snapshot(i - 2, 1)).unwrap();
                assert_eq!(undurable_under(tmp.path()), Vec::<String>::new(), "at {i}");
            }
        }
        assert!(list(&dir.join(WAL_DIR), parse_segment_name).unwrap().len() > 1);
        drop(s);
        // A stray temp snapshot file is removed durably on open.
        fs::write(dir.join(SNAP_DIR).join("x.snap.tmp"), b"").unwrap();
        crate::durable::record::note_test_entry(&dir.join(SNAP_DIR).join("x.snap.tmp"));
        let s = DiskStore::open(&dir, 256).unwrap();
        assert_eq!(s.last_index(), 40);
        assert_durable(tmp.path());
    }
}

#[cfg(test)]
mod garbage_tests {
    use super::*;
    use crate::wal::conformance::{entry, snapshot};

    fn store_with_two_snapshots(dir: &Path) -> (DiskStore, Vec<PathBuf>) {
        let mut s = DiskStore::open(dir, 256).unwrap();
        for i in 1..=30 {
            s.append(&[entry(i, 1)]).unwrap();
            s.sync().unwrap();
        }
        s.install_snapshot(&snapshot(10, 1)).unwrap();
        for i in 31..=60 {
            s.append(&[entry(i, 1)]).unwrap();
            s.sync().unwrap();
        }
        let garbage = s
            .install_snapshot_leaving_garbage(&snapshot(55, 1))
            .unwrap();
        (s, garbage)
    }

    /// The dead files are returned oldest segment first, then the older
    /// snapshot; they are still on disk, forgotten by the store; deleting
    /// them in that order, or a crash before any of it, reopens the same log.
    #[test]
    fn an_install_leaves_its_dead_files_in_order_and_either_way_reopens_the_same() {
        for delete in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("wal");
            let (s, garbage) = store_with_two_snapshots(&dir);
            let segs: Vec<&PathBuf> = garbage
                .iter()
                .filter(|p| p.starts_with(dir.join(WAL_DIR)))
                .collect();
            assert!(segs.len() >= 2, "several dead segments: {garbage:?}");
            let mut sorted = segs.clone();
            sorted.sort();
            assert_eq!(segs, sorted, "oldest first");
            let snap_of_10 = garbage.last().unwrap();
            assert!(snap_of_10.starts_with(dir.join(SNAP_DIR)), "{garbage:?}");
            assert!(garbage.iter().all(|p| p.exists()), "left for the caller");
            let known: Vec<&PathBuf> = s.segments.values().map(|seg| &seg.path).collect();
            assert!(
                segs.iter().all(|p| !known.contains(p)),
                "forgotten by the store"
            );
            drop(s);
            if delete {
                for p in &garbage {
                    crate::durable::remove_durable(p).unwrap();
                }
            }
            let s = DiskStore::open(&dir, 256).unwrap();
            assert_eq!((s.snapshot_index(), s.last_index()), (55, 60));
            assert_eq!(s.entries(56, 61).unwrap().len(), 5);
        }
    }
}

#[cfg(test)]
mod zero_tail_tests {
    use super::*;
    use crate::core::types::EntryPayload;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let entries: Vec<Entry> = (1..=payloads.len() as u64)
            .map(|i| Entry {
                index: i,
                term: 1,
                payload: EntryPayload::Command(Bytes::copy_from_slice(payloads[i as usize - 1])),
            })
            .collect();
        let mut out = Vec::new();
        for e in &entries {
            codec::encode_entries(&mut out, std::slice::from_ref(e)).unwrap();
        }
        out
    }

    /// What the last segment's reader must give for the file `data`: the
    /// whole file read, then the zero tail after the frames dropped (the code
    /// before the chunked reader).
    fn oracle(data: &[u8]) -> Vec<u8> {
        let end = codec::frames_end(data);
        if end == data.len() || data[end..].iter().any(|&b| b != 0) {
            return data.to_vec();
        }
        data[..end].to_vec()
    }

    fn read_chunked(data: &[u8], chunk: usize) -> Bytes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        fs::write(&path, data).unwrap();
        let mut file = File::open(&path).unwrap();
        read_last_segment(&mut file, &path, chunk).unwrap()
    }

    fn check(data: &[u8]) -> Bytes {
        let want = oracle(data);
        for chunk in [1, 3, 7, 8, 9, 64, 4096, READ_CHUNK] {
            assert_eq!(read_chunked(data, chunk), want, "chunk {chunk}");
        }
        Bytes::from(want)
    }

    /// The preallocated space is cut where the frames end, not at the last
    /// non-zero byte: a record ending in zero bytes keeps them. Every chunk
    /// size reads what the whole file would.
    #[test]
    fn the_zero_tail_is_cut_where_the_frames_end() {
        let records = framed(&[b"a", b"ends in zeros\0\0\0\0\0\0\0\0"]);
        let mut data = records.clone();
        data.resize(records.len() + 4096, 0);
        assert_eq!(check(&data), records, "both records whole, no zero tail");
        assert_eq!(check(&records), records);
        assert_eq!(check(&[]), Bytes::new());
        assert_eq!(check(&[0; 100]), Bytes::new());
        // A torn record after them (its header whole, its length reaching into
        // the zeros): only zeros are ever dropped, the torn bytes stay for the
        // torn-tail rules.
        let mut torn = records.clone();
        torn.extend_from_slice(&records[..10]);
        let torn_end = torn.len();
        torn.resize(torn_end + 4096, 0);
        let kept = check(&torn);
        assert!(kept.len() >= torn_end && kept.len() < torn.len());
        // A torn header whose length runs past the file, and one cut short.
        let mut past = records.clone();
        past.extend_from_slice(&(1u32 << 20).to_le_bytes());
        past.extend_from_slice(&[9; 20]);
        assert_eq!(check(&past), past);
        let short = [&records[..], &[5, 0, 0]].concat();
        assert_eq!(check(&short), short);
        // Garbage after the frames, at once or far into the zeros: nothing is
        // dropped.
        let mut junk = records.clone();
        junk.extend_from_slice(&[0, 0, 0, 0, 7]);
        junk.resize(junk.len() + 4096, 0);
        assert_eq!(check(&junk), junk);
        let mut late = data.clone();
        late.push(1);
        late.resize(late.len() + 100, 0);
        assert_eq!(check(&late), late);
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;
    use crate::wal::conformance::{entry, snapshot};

    /// `disk_usage` counts exactly the segment files and their bytes, ignores
    /// anything else in the directory, and follows rolls and compaction.
    #[test]
    fn disk_usage_counts_the_segment_files_and_their_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let mut s = DiskStore::open(&dir, 256).unwrap();
        for i in 1..=30 {
            s.append(&[entry(i, 1)]).unwrap();
            s.sync().unwrap();
        }
        fs::write(dir.join(WAL_DIR).join("notes.txt"), b"not a segment").unwrap();
        let segs = list(&dir.join(WAL_DIR), parse_segment_name).unwrap();
        let bytes: u64 = segs
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        let used = disk_usage(&dir).unwrap();
        assert!(segs.len() > 1, "256-byte segments must have rolled");
        assert_eq!(
            used,
            DiskUsage {
                segments: segs.len(),
                segment_bytes: bytes
            }
        );
        assert!(bytes > 0);
        s.install_snapshot(&snapshot(28, 1)).unwrap();
        let after = disk_usage(&dir).unwrap();
        assert!(
            after.segments < used.segments,
            "compaction removes segments: {used:?} -> {after:?}"
        );
        assert!(disk_usage(&tmp.path().join("missing")).is_err());
    }
}
