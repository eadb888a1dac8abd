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
//! [`crate::durable`], which fsyncs its parent before returning.
//!
//! All file writes run on the store's own writer thread (`writer`), never on
//! the caller's (the controller task): appends, segment seals (flush, `.idx`,
//! new file, directory fsyncs) and releases. Why: a slow or stalled disk held
//! up heartbeats and votes while the controller waited for them. The caller
//! caches a message at once and hands it over through a bounded queue
//! ([`MessageStore::hand_over`], never waiting); truncate, reset and install
//! are rare (start-up, a snapshot from the leader) and wait for the writer in
//! queue order.
//!
//! Backpressure: when the queue is full, messages stay in the cache (no copy:
//! the queue holds references to them) and are handed over at the next call
//! (the controller makes one per tick, and one after a loop turn that leaves at
//! least `state_machine::HAND_OVER_BYTES` for the writer: each hand-over wakes
//! its thread, 5-9 % of the CPU per write at one client when it was one per
//! turn). Nothing on the controller waits for the writer: commits, applies,
//! heartbeats and votes go on. The cost is memory: the cache holds everything
//! the writer has not written. Two limits bound it: while the writer is behind
//! by more than [`SNAPSHOT_BACKLOG`] bytes (or its queue is full) no local
//! snapshot is started (it would hold the WAL while waiting for the writer),
//! and past [`REFUSE_BACKLOG`] bytes the node refuses new writes as with a
//! full disk (`storage` error, 503), until the writer catches up. A follower
//! cannot refuse what its leader committed: its backlog is bounded by how long
//! its disk stalls times the cluster's write rate.
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
//! - the cache holds offsets `cache_first..len`: every message the writer has
//!   not written (`cache_first <= written <= handed <= len`), and at least
//!   `cache_limit` bytes when the store has that much. Anything not cached is
//!   in the files, so reads never see a gap and never wait for the writer;
//! - messages reach the writer once each, in offset order, and the writer runs
//!   its queue in order: appends, releases, truncations, resets and installs
//!   happen in the order they were asked for;
//! - after a write error the writer writes nothing more; the cache keeps every
//!   message it lacks until [`MessageStore::repair`] has it rewrite them, and no
//!   sync handle is given out meanwhile;
//! - a [`SyncHandle`] covers every message appended before it was made: it
//!   waits (on its blocking thread) until the writer has written them, then
//!   syncs every segment file written since the last sync;
//! - one store per directory at a time: dropping a store hands the writer what
//!   is left and joins it, so a store opened after the drop never races it;
//! - every record read back is checked against its crc; one that fails is an
//!   error (never other bytes) and drops its segment's `.idx`, so the next open
//!   scans that segment and cuts it there (the node then repairs from its leader
//!   when the cut is below its snapshot: `node::bootstrap`).

use crate::durable;
use bytes::Bytes;
#[cfg(test)]
use segment::read_idx;
use segment::{
    invalid, load_segment, record_crc, remove_segment, seg_path, write_idx, BlockReader, Segment,
    HEADER,
};
pub use segment::{Segments, SEGMENT_EXT, STRIDE};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use writer::{Disk, Op};
pub use writer::{SyncHandle, WriteDelay};

const WRITE_BUFFER: usize = 64 << 10;
/// The cache never shrinks below this, so it always covers the write buffer.
const MIN_CACHE: usize = 1 << 20;
/// A writer behind by more than this many bytes defers local snapshots.
pub const SNAPSHOT_BACKLOG: usize = 8 << 20;
/// A writer behind by more than this many bytes refuses new writes.
pub const REFUSE_BACKLOG: usize = 256 << 20;

/// The store's end of its writer thread (joined when the store is dropped, so
/// no write of an old store races a new one over the same files).
struct WriterHandle {
    shared: Arc<writer::Shared>,
    tx: Option<SyncSender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterHandle {
    fn tx(&self) -> io::Result<SyncSender<Op>> {
        self.tx.clone().ok_or_else(stopped)
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the message store's writer stopped")
}

/// The store (see the module docs). Without a directory it keeps everything in
/// memory (tests).
pub struct MessageStore {
    dir: Option<PathBuf>,
    disk: Option<WriterHandle>,
    /// Offsets below this were handed to the writer (`cache_first <= handed`).
    handed: u64,
    /// The writer's queue had no room for the last hand-over's messages.
    queue_full: bool,
    /// The writer's `written` as last seen, and the bytes of the cached
    /// messages from it on: what the writer still has to write.
    seen_written: u64,
    backlog_bytes: usize,
    cache: VecDeque<Bytes>,
    cache_first: u64,
    cache_bytes: usize,
    cache_limit: usize,
    len: u64,
    /// The first offset readers may see (everything below is trimmed).
    first: u64,
    /// `first` as of the last `sync_handle`: what `synced` may release.
    handed_first: u64,
    /// The writer's first write error, as this side last saw it: cleared only
    /// when a repair (or a reset) succeeded.
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

/// The writer gets what was appended (so a store reopened in the same process
/// finds it), then is joined.
impl Drop for MessageStore {
    fn drop(&mut self) {
        if self.failed.is_none() {
            let _ = self.hand_over_all(self.len);
        }
    }
}

impl Default for MessageStore {
    fn default() -> Self {
        Self::memory()
    }
}

impl MessageStore {
    /// Everything in memory, nothing on disk.
    pub fn memory() -> Self {
        MessageStore {
            dir: None,
            disk: None,
            handed: 0,
            queue_full: false,
            seen_written: 0,
            backlog_bytes: 0,
            cache: VecDeque::new(),
            cache_first: 0,
            cache_bytes: 0,
            cache_limit: usize::MAX,
            len: 0,
            first: 0,
            handed_first: 0,
            failed: None,
        }
    }

    /// Opens (or creates) the store in `dir`: the longest valid prefix on disk.
    /// Starts its writer thread.
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
        let shared = writer::Shared::new(Segments { segs });
        let disk = writer::Disk::new(dir.to_path_buf(), shared.clone(), segment_bytes.max(1))?;
        let (tx, rx) = sync_channel(writer::QUEUE);
        let thread = std::thread::Builder::new()
            .name("msgstore-writer".into())
            .spawn(move || disk.run(rx))?;
        let len = shared.written();
        let first = shared.lock().segs.segs.first().map_or(0, |s| s.first);
        let mut store = Self::memory();
        store.dir = Some(dir.to_path_buf());
        store.disk = Some(WriterHandle {
            shared,
            tx: Some(tx),
            thread: Some(thread),
        });
        store.cache_limit = cache_bytes.max(MIN_CACHE);
        store.start_over(first, len);
        Ok(store)
    }

    /// Fault injection: the writer sleeps this long before each batch.
    pub fn set_write_delay(&self, delay: writer::WriteDelay) {
        if let Some(d) = &self.disk {
            *d.shared.delay.lock().unwrap_or_else(|e| e.into_inner()) = Some(delay);
        }
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
        match &self.disk {
            Some(d) => d
                .shared
                .lock()
                .segs
                .segs
                .first()
                .map_or(self.first, |s| s.first),
            None => self.first,
        }
    }

    /// Bytes held: the segment files (as written so far), or the messages of a
    /// memory store.
    pub fn bytes(&self) -> u64 {
        match &self.disk {
            Some(d) => d.shared.lock().segs.segs.iter().map(|s| s.size).sum(),
            None => self.cache_bytes as u64,
        }
    }

    /// Bytes appended that the writer has not written yet (as of the last
    /// append or hand-over).
    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    /// [`MessageStore::backlog_bytes`] after catching up with what the writer
    /// wrote since the store last looked (for metrics, when nothing is appended).
    pub fn current_backlog_bytes(&mut self) -> usize {
        self.observe();
        self.backlog_bytes
    }

    /// The writer is behind by more than `bytes`, or its queue had no room
    /// for the last messages.
    pub fn behind(&self, bytes: usize) -> bool {
        self.queue_full || self.backlog_bytes > bytes
    }

    /// What the writer has written: every message below it is in the files.
    fn written(&self) -> u64 {
        self.disk.as_ref().map_or(self.len, |d| d.shared.written())
    }

    /// Catches up with the writer's progress: the backlog shrinks by what it wrote.
    fn observe(&mut self) -> u64 {
        let w = self.written();
        if w < self.seen_written {
            self.recount_backlog();
        } else if self.disk.is_some() {
            for off in self.seen_written.max(self.cache_first)..w.min(self.len) {
                self.backlog_bytes -= self.cache[(off - self.cache_first) as usize].len();
            }
            self.seen_written = w;
        }
        w
    }

    fn recount_backlog(&mut self) {
        self.seen_written = self.written();
        let from = self.seen_written.max(self.cache_first).min(self.len);
        let skip = (from - self.cache_first) as usize;
        self.backlog_bytes = match self.disk {
            Some(_) => self.cache.iter().skip(skip).map(Bytes::len).sum(),
            None => 0,
        };
    }

    /// Lets go of cached messages over the limit, never one the writer has not
    /// written (the cache is the only copy of those).
    fn evict(&mut self, below: u64) {
        let written = self.observe();
        while let Some(front) = self.cache.front() {
            if self.cache_first >= written {
                break;
            }
            let front = front.len();
            let over = self.cache.len() > 1 && self.cache_bytes - front >= self.cache_limit;
            if self.cache_first >= below && !over {
                break;
            }
            self.cache.pop_front();
            self.cache_bytes -= front;
            self.cache_first += 1;
        }
    }

    /// Trims (logically) every message below `to` (at most `len`).
    pub fn trim_front(&mut self, to: u64) {
        let to = to.min(self.len);
        if to <= self.first {
            return;
        }
        self.first = to;
        if self.disk.is_none() {
            while self.cache_first < to && !self.cache.is_empty() {
                let m = self.cache.pop_front().expect("non-empty");
                self.cache_bytes -= m.len();
                self.cache_first += 1;
            }
            return;
        }
        self.evict(to);
    }

    /// Removes the sealed segments that hold only messages below `upto` (and
    /// below `first`), in queue order on the writer; each removal is durable
    /// when it is made. When the queue is full it is left to the next call.
    pub fn release(&mut self, upto: u64) -> io::Result<()> {
        let upto = upto.min(self.first);
        let Some(d) = &self.disk else {
            return Ok(());
        };
        match d.tx()?.try_send(Op::Release(upto)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(io::Error::other("the writer's queue is full")),
            Err(TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// The lowest offset to trim below so that at most `max` bytes stay held:
    /// whole sealed segments on disk, single messages in memory.
    pub fn trim_point_for_bytes(&self, max: u64) -> u64 {
        let mut total = self.bytes();
        let Some(d) = &self.disk else {
            let mut to = self.cache_first;
            for m in &self.cache {
                if total <= max {
                    break;
                }
                total -= m.len() as u64;
                to += 1;
            }
            return to.max(self.first);
        };
        let mut to = self.first;
        let st = d.shared.lock();
        let segs = &st.segs.segs;
        for s in &segs[..segs.len().saturating_sub(1)] {
            if total <= max {
                break;
            }
            total -= s.size;
            to = to.max(s.first + s.count);
        }
        to.min(self.len)
    }

    /// Drops everything and starts empty at offset `first` (a full snapshot
    /// from the leader, or a log replayed from its start). Waits for the writer.
    pub fn reset_at(&mut self, first: u64) -> io::Result<()> {
        self.start_over(first, first);
        self.exec(move |d| d.reset_at(first))
    }

    /// The in-memory state of a store holding `first..len`, none of it cached.
    fn start_over(&mut self, first: u64, len: u64) {
        self.cache.clear();
        self.cache_bytes = 0;
        self.cache_first = len;
        self.len = len;
        self.first = first;
        self.handed_first = first;
        self.handed = len;
        self.seen_written = len;
        self.backlog_bytes = 0;
        self.failed = None;
    }

    /// Runs `f` on the writer after everything queued before it, and waits for
    /// it: for the rare operations (reset, truncation, install) whose result
    /// the caller needs. The wait is bounded by the queue.
    fn exec(
        &mut self,
        f: impl FnOnce(&mut Disk) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let Some(d) = &self.disk else {
            return Ok(());
        };
        let (reply, done) = sync_channel(1);
        d.tx()?
            .send(Op::Exec(Box::new(f), reply))
            .map_err(|_| stopped())?;
        let r = done.recv().map_err(|_| stopped())?;
        self.recount_backlog();
        r
    }

    /// The write error the store is failing with, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn poll_failure(&mut self) {
        if let Some(d) = &self.disk {
            if self.failed.is_none() && d.shared.failing.load(Ordering::Acquire) {
                self.failed = d.shared.lock().failed.clone();
            }
        }
    }

    /// After a write error: asks the writer to cut the active segment back to
    /// its valid records and write what only the cache holds. `Ok` once that
    /// succeeded; until then the store stays failed (its messages cached) and
    /// the caller asks again later.
    pub fn repair(&mut self) -> io::Result<()> {
        self.poll_failure();
        if self.failed.is_none() {
            return Ok(());
        }
        let Some(d) = &self.disk else {
            return Ok(());
        };
        let tx = d.tx()?;
        let mut st = d.shared.lock();
        let Some(e) = st.failed.clone() else {
            drop(st);
            self.failed = None;
            self.hand_over();
            return Ok(());
        };
        if !st.repairing {
            let n = (self.handed - self.cache_first) as usize;
            let msgs = self.cache.range(..n).cloned().collect();
            let from = self.cache_first;
            if tx.try_send(Op::Repair { from, msgs }).is_ok() {
                st.repairing = true;
            }
        }
        Err(io::Error::other(e))
    }

    /// Appends one message: cached at once, written by the writer once handed
    /// over ([`MessageStore::hand_over`]).
    pub fn append(&mut self, msg: Bytes) {
        self.len += 1;
        if self.disk.is_some() {
            self.backlog_bytes += msg.len();
        }
        self.cache_bytes += msg.len();
        self.cache.push_back(msg);
        self.evict(0);
    }

    /// Hands the appended messages to the writer, as far as its queue takes
    /// them without waiting; the rest stay cached and go at the next call.
    /// Nothing goes while the store is failed (the repair writes them).
    pub fn hand_over(&mut self) {
        self.poll_failure();
        if self.failed.is_some() {
            return;
        }
        let Some(Ok(tx)) = self.disk.as_ref().map(WriterHandle::tx) else {
            return;
        };
        self.queue_full = false;
        while self.handed < self.len {
            let start = (self.handed - self.cache_first) as usize;
            let n = ((self.len - self.handed) as usize).min(writer::MAX_BATCH);
            let batch = self.cache.range(start..start + n).cloned().collect();
            match tx.try_send(Op::Append(batch)) {
                Ok(()) => self.handed += n as u64,
                Err(TrySendError::Full(_)) => {
                    self.queue_full = true;
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.failed = Some(stopped().to_string());
                    break;
                }
            }
        }
        self.evict(0);
    }

    /// Hands over every message below `upto`, waiting for room in the queue.
    fn hand_over_all(&mut self, upto: u64) -> io::Result<()> {
        let Some(d) = &self.disk else {
            return Ok(());
        };
        let tx = d.tx()?;
        while self.handed < upto {
            let start = (self.handed - self.cache_first) as usize;
            let n = ((upto - self.handed) as usize).min(writer::MAX_BATCH);
            let batch = self.cache.range(start..start + n).cloned().collect();
            tx.send(Op::Append(batch)).map_err(|_| stopped())?;
            self.handed += n as u64;
        }
        self.queue_full &= self.handed < self.len;
        Ok(())
    }

    /// Hands everything over and waits until the writer has written it
    /// (blocking: tests, and callers off the controller).
    pub fn flush(&mut self) -> io::Result<()> {
        self.hand_over_all(self.len)?;
        self.exec(|_| Ok(()))?;
        self.evict(0);
        self.poll_failure();
        match &self.failed {
            Some(e) => Err(io::Error::other(e.clone())),
            None => Ok(()),
        }
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
        self.disk.is_some() && self.failed.is_none() && from.max(self.first) < self.cache_first
    }

    /// The segments as the writer has written them so far.
    fn segments(&self) -> Segments {
        self.disk
            .as_ref()
            .map(|d| d.shared.lock().segs.clone())
            .unwrap_or_default()
    }

    /// Messages `from..` (at most `limit`; nothing below `first`).
    pub fn read(&self, from: u64, limit: usize) -> io::Result<Vec<(u64, Bytes)>> {
        let from = from.max(self.first);
        let end = self.len.min(from.saturating_add(limit as u64));
        if from >= end {
            return Ok(Vec::new());
        }
        let mut out = if from < self.cache_first {
            self.segments()
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

    /// `from..` (at most `limit`, nothing below `first`) as a read that runs
    /// on another thread: the part below the cache from the files (all
    /// written: `cache_first <= written`), the rest copied from the cache now.
    ///
    /// Why not a [`Reader`] alone: its files cover only what the writer has
    /// written so far, and the newest messages may still be only in the cache.
    /// A read that started below the cache then stopped where the writer was,
    /// answering a linearizable read without messages acknowledged before it
    /// (the nemesis caught one: a follower that had just installed a snapshot
    /// returned the snapshot's messages and none of the entries it had
    /// applied since).
    pub fn detached_read(&mut self, from: u64, limit: usize) -> io::Result<DetachedRead> {
        self.poll_failure();
        let from = from.max(self.first);
        let end = self.len.min(from.saturating_add(limit as u64)).max(from);
        let on_disk = self.disk.is_some() && self.failed.is_none();
        let files_end = if on_disk {
            self.cache_first.clamp(from, end)
        } else {
            from
        };
        let tail = self.read(files_end, (end - files_end) as usize)?;
        let files = if files_end > from {
            Some(Reader::Files(self.segments()))
        } else {
            None
        };
        Ok(DetachedRead {
            files,
            from,
            files_end,
            tail,
        })
    }

    /// A view readable from another thread. From the files it covers what the
    /// writer has written: everything below `cache_first`, and everything a
    /// finished [`SyncHandle`] covered (so every snapshot's messages). Memory
    /// stores, and a failed store, answer from a copy of the first `count`.
    pub fn reader(&mut self, count: u64) -> io::Result<Reader> {
        self.poll_failure();
        if self.disk.is_none() || self.failed.is_some() {
            let n = count.min(self.len).saturating_sub(self.first);
            let msgs = self
                .read(self.first, n as usize)?
                .into_iter()
                .map(|(_, m)| m)
                .collect();
            return Ok(Reader::Memory(self.first, msgs));
        }
        Ok(Reader::Files(self.segments()))
    }

    /// What a blocking thread must run so that everything appended so far is
    /// durable: it waits for the writer to have written it, then syncs.
    /// Messages the queue had no room for are handed over first, waiting for
    /// room (the controller calls it only when none are left: `behind`).
    pub fn sync_handle(&mut self) -> io::Result<SyncHandle> {
        self.hand_over();
        if self.failed.is_none() {
            self.hand_over_all(self.len)?;
        }
        if let Some(e) = &self.failed {
            return Err(io::Error::other(format!(
                "message store failed earlier: {e}"
            )));
        }
        self.handed_first = self.first;
        let inner = self
            .disk
            .as_ref()
            .map(|d| (d.shared.clone(), self.len, d.shared.lock().generation));
        Ok(SyncHandle { inner })
    }

    /// The last [`SyncHandle`] ran successfully and the manifest written after
    /// it names `first` as of that handle: sealed segments below it are removed.
    pub fn synced(&mut self) {
        if let Err(e) = self.release(self.handed_first) {
            tracing::warn!(error = %e, "removing trimmed message segments failed (retried at the next snapshot)");
        }
    }

    /// Keeps only the messages below `count` (recovery to a snapshot's count);
    /// below `start` the store is emptied to begin at `count`. Waits for the
    /// writer.
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
        if self.disk.is_none() {
            self.len = count;
            return Ok(());
        }
        // What stays must be in the files before they are cut.
        self.handed = self.handed.max(self.cache_first);
        self.hand_over_all(count)?;
        self.handed = count;
        self.len = count;
        self.exec(move |d| d.truncate(count))?;
        self.failed = None;
        Ok(())
    }

    /// Removes every message (a snapshot from the leader replaces the state).
    pub fn clear(&mut self) -> io::Result<()> {
        self.reset_at(0)
    }
}

/// A read detached from the store ([`MessageStore::detached_read`]).
pub struct DetachedRead {
    /// The files, when the read starts below the cache.
    files: Option<Reader>,
    from: u64,
    /// `from..files_end` comes from the files.
    files_end: u64,
    /// `files_end..`, copied from the cache.
    tail: Vec<(u64, Bytes)>,
}

impl DetachedRead {
    /// Reads the files part (blocking) and returns the whole answer. Files
    /// that end before `files_end` are an error, never a shorter answer.
    pub fn run(&self) -> io::Result<Vec<(u64, Bytes)>> {
        let mut out = match &self.files {
            Some(files) => files.read(self.from, (self.files_end - self.from) as usize)?,
            None => Vec::new(),
        };
        let want = self.files_end - self.from;
        if out.len() as u64 != want || out.first().is_some_and(|(o, _)| *o != self.from) {
            return Err(io::Error::other(format!(
                "message files hold {} of the {want} messages from offset {}",
                out.len(),
                self.from
            )));
        }
        out.extend(self.tail.iter().cloned());
        Ok(out)
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

mod legacy;
mod segment;
mod transfer;
mod writer;
pub use transfer::{seal_received, Span};

#[cfg(test)]
mod tests;
