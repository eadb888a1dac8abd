//! The message store's writer thread: every write to the segment files.
//!
//! Why: an append, and once per `segment_bytes` a seal (flush, `.idx` file, a
//! new segment and the fsyncs of their directory entries), used to run on the
//! controller task, so a slow or stalled disk held up heartbeats and votes. Now
//! the store hands its messages to this thread through a bounded queue and
//! never waits for it on the hot path (see the module docs of `msgstore` for
//! backpressure).
//!
//! Invariants:
//! - the writer executes the queue's operations in the order they were sent, so
//!   appends, releases, truncations, resets and installs keep their order;
//! - [`State::segs`] describes only what is in the files (flushed to the
//!   kernel): a record still in the write buffer is not in it, so any reader of
//!   a clone of it reads whole records; [`Shared::written`] is its length;
//! - after a write error the writer writes nothing (appends are dropped: the
//!   store's cache keeps them, as `written` does not pass them) until a
//!   [`Op::Repair`] rewrites them from the copies it carries;
//! - every file and directory entry made, renamed or removed here goes through
//!   [`crate::durable`], as before.

use super::{
    invalid, load_segment, record_crc, remove_segment, seg_path, write_idx, Segment, Segments,
    HEADER, WRITE_BUFFER,
};
use crate::durable;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Operations the queue holds at most (each an append of up to [`MAX_BATCH`]
/// messages, or one of the rare others).
pub(super) const QUEUE: usize = 64;
/// Messages per append operation at most.
pub(super) const MAX_BATCH: usize = 1024;
/// Operations the writer takes in one go before it flushes and publishes.
const TAKE: usize = 64;
/// The writer starts the kernel's write-back of the active segment each time
/// this much more of it is in the page cache (`sync_file_range`, not waiting),
/// so that a snapshot's sync finds at most about this much left to write
/// instead of everything since the last snapshot (64 MiB by default): that
/// burst stalled the WAL's fsyncs beside it.
const WRITEBACK_BYTES: u64 = 1 << 20;

/// A fault-injection hook: how long the writer sleeps before each batch.
pub type WriteDelay = Arc<dyn Fn() -> Duration + Send + Sync>;

/// A rare operation run on the writer in queue order; the store waits for it.
pub(super) type Exec = Box<dyn FnOnce(&mut Disk) -> io::Result<()> + Send>;

pub(super) enum Op {
    /// The next messages, in offset order.
    Append(Vec<Bytes>),
    /// Remove the sealed segments wholly below this offset.
    Release(u64),
    /// After a write error: rewrite what the files lack from these messages
    /// (offsets `from..`).
    Repair {
        from: u64,
        msgs: Vec<Bytes>,
    },
    Exec(Exec, std::sync::mpsc::SyncSender<io::Result<()>>),
}

/// What the writer publishes for the store and for readers on other threads.
pub(super) struct State {
    /// The segments as far as they are in the files.
    pub segs: Segments,
    /// The first write error since the writer last worked, and its OS error
    /// code (so a full disk stays a full disk for whoever waits: `SyncHandle`).
    pub failed: Option<String>,
    pub failed_os: Option<i32>,
    /// A repair was sent and has not finished.
    pub repairing: bool,
    /// Segment files written since they were last synced.
    pub unsynced: Vec<Arc<File>>,
    /// Counts resets, truncations and installs: a sync handle from before one
    /// of them no longer means anything.
    pub generation: u64,
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Signalled whenever `written` or `failed` changes.
    pub cond: Condvar,
    /// `state.segs.len()`: every message below it is in the files.
    pub written: AtomicU64,
    /// `state.failed.is_some()`, readable without the lock.
    pub failing: AtomicBool,
    /// The writer thread has ended (its queue closed, or it panicked).
    pub stopped: AtomicBool,
    pub delay: Mutex<Option<WriteDelay>>,
}

impl Shared {
    pub fn new(segs: Segments) -> Arc<Self> {
        let written = segs.len();
        Arc::new(Shared {
            state: Mutex::new(State {
                segs,
                failed: None,
                failed_os: None,
                repairing: false,
                unsynced: Vec::new(),
                generation: 0,
            }),
            cond: Condvar::new(),
            written: AtomicU64::new(written),
            failing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            delay: Mutex::new(None),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Publishes `st.segs.len()` as written and wakes waiters.
    fn publish(&self, st: &State) {
        self.written.store(st.segs.len(), Ordering::Release);
        self.failing.store(st.failed.is_some(), Ordering::Release);
        self.cond.notify_all();
    }
}

/// The writer's side: the open segment and its write buffer.
pub(super) struct Disk {
    pub dir: PathBuf,
    pub shared: Arc<Shared>,
    pub segment_bytes: u64,
    pub writer: Option<BufWriter<Arc<File>>>,
    /// Lengths of the records in the write buffer (not yet in `State::segs`).
    pending: Vec<usize>,
    /// The active segment's record count and size, buffered records included.
    active_count: u64,
    active_size: u64,
    /// Bytes of the active segment whose write-back was started.
    written_back: u64,
    failed: bool,
}

impl Disk {
    /// The writer over `shared.segs` in `dir` (which holds at least one segment).
    pub fn new(dir: PathBuf, shared: Arc<Shared>, segment_bytes: u64) -> io::Result<Self> {
        let mut d = Disk {
            dir,
            shared,
            segment_bytes,
            writer: None,
            pending: Vec::new(),
            active_count: 0,
            active_size: 0,
            written_back: 0,
            failed: false,
        };
        if d.shared.lock().segs.segs.is_empty() {
            d.new_segment(0)?;
        }
        d.open_writer()?;
        Ok(d)
    }

    /// Runs until the store drops its end of the queue.
    pub fn run(mut self, rx: std::sync::mpsc::Receiver<Op>) {
        let _stopped = Stopped(self.shared.clone());
        while let Ok(op) = rx.recv() {
            self.injected_delay();
            self.handle(op);
            for _ in 1..TAKE {
                match rx.try_recv() {
                    Ok(op) => self.handle(op),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.flush() {
                self.fail(e);
            }
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "message store: final flush failed (re-applied from the log)");
        }
    }

    fn injected_delay(&self) {
        let delay = self.shared.delay.lock().unwrap_or_else(|e| e.into_inner());
        let d = delay.as_ref().map_or(Duration::ZERO, |f| f());
        drop(delay);
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Append(msgs) => {
                if self.failed {
                    return;
                }
                for m in &msgs {
                    if let Err(e) = self.write(m) {
                        self.fail(e);
                        return;
                    }
                }
            }
            Op::Release(upto) => {
                if let Err(e) = self.release(upto) {
                    tracing::warn!(error = %e, "removing trimmed message segments failed (retried at the next snapshot)");
                }
            }
            Op::Repair { from, msgs } => {
                let r = self.repair(from, &msgs);
                let mut st = self.shared.lock();
                st.repairing = false;
                if let Err(e) = r {
                    tracing::debug!(error = %e, "message store still failing");
                } else {
                    st.failed = None;
                }
                self.shared.publish(&st);
            }
            Op::Exec(f, reply) => {
                if let Err(e) = self.flush() {
                    self.fail(e);
                }
                let _ = reply.send(f(self));
            }
        }
    }

    /// A write failed: nothing more is written until a repair.
    fn fail(&mut self, e: io::Error) {
        tracing::error!(error = %e, "message store write failed");
        self.failed = true;
        // What the buffer held may be half written: drop it, trust the file only.
        if let Some(w) = self.writer.take() {
            let _ = w.into_parts();
        }
        self.pending.clear();
        let mut st = self.shared.lock();
        if st.failed.is_none() {
            st.failed = Some(e.to_string());
            st.failed_os = e.raw_os_error();
        }
        self.shared.publish(&st);
    }

    fn write(&mut self, msg: &[u8]) -> io::Result<()> {
        let len = u32::try_from(msg.len()).map_err(|_| invalid("message over 4 GiB".into()))?;
        let rec = (HEADER + msg.len()) as u64;
        if self.active_count > 0 && self.active_size + rec > self.segment_bytes {
            self.seal()?;
        }
        let w = self.writer.as_mut().ok_or_else(no_writer)?;
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&record_crc(msg).to_le_bytes());
        w.write_all(&h)?;
        w.write_all(msg)?;
        self.pending.push(msg.len());
        self.active_count += 1;
        self.active_size += rec;
        Ok(())
    }

    /// Flushes the write buffer and publishes its records.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        if let Some(w) = self.writer.as_mut() {
            w.flush()?;
            if self.active_size >= self.written_back + WRITEBACK_BYTES {
                start_writeback(w.get_ref(), self.written_back, self.active_size);
                self.written_back = self.active_size;
            }
        }
        let mut st = self.shared.lock();
        if let Some(active) = st.segs.segs.last_mut() {
            for len in self.pending.drain(..) {
                active.push(len);
            }
        }
        self.shared.publish(&st);
        Ok(())
    }

    /// The active (last) segment as published.
    fn active(&self) -> io::Result<Segment> {
        let st = self.shared.lock();
        st.segs.segs.last().cloned().ok_or_else(no_writer)
    }

    /// Ends the active segment (its index file written, its sync left to the next
    /// sync handle) and starts the next.
    fn seal(&mut self) -> io::Result<()> {
        self.flush()?;
        let active = self.active()?;
        write_idx(&active)?;
        self.new_segment(active.first + active.count)?;
        self.open_writer()
    }

    fn new_segment(&mut self, first: u64) -> io::Result<()> {
        let path = seg_path(&self.dir, first);
        let opts = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .clone();
        let file = Arc::new(durable::create_file_durable(&path, &opts)?);
        let mut st = self.shared.lock();
        st.segs.segs.push(Segment {
            first,
            count: 0,
            size: 0,
            sparse: Vec::new(),
            file,
            path,
        });
        self.shared.publish(&st);
        Ok(())
    }

    fn open_writer(&mut self) -> io::Result<()> {
        let (file, count, size) = {
            let st = self.shared.lock();
            let active = st.segs.segs.last().ok_or_else(no_writer)?;
            (active.file.clone(), active.count, active.size)
        };
        file.set_len(size)?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, file.clone());
        io::Seek::seek(&mut w, io::SeekFrom::Start(size))?;
        self.writer = Some(w);
        self.pending.clear();
        self.active_count = count;
        self.active_size = size;
        self.written_back = size;
        let mut st = self.shared.lock();
        if !st.unsynced.iter().any(|f| Arc::ptr_eq(f, &file)) {
            st.unsynced.push(file);
        }
        Ok(())
    }

    /// Removes the sealed segments that hold only messages below `upto`, oldest
    /// first; each removal is durable when it returns.
    fn release(&mut self, upto: u64) -> io::Result<()> {
        loop {
            let path = {
                let st = self.shared.lock();
                let segs = &st.segs.segs;
                match segs.first() {
                    Some(s) if segs.len() > 1 && s.first + s.count <= upto => s.path.clone(),
                    _ => return Ok(()),
                }
            };
            remove_segment(&path)?;
            let mut st = self.shared.lock();
            st.segs.segs.remove(0);
            self.shared.publish(&st);
        }
    }

    /// Cuts the active segment back to its valid records and writes the
    /// messages (offsets `from..`) the files lack.
    fn repair(&mut self, from: u64, msgs: &[Bytes]) -> io::Result<()> {
        if !self.failed {
            return Ok(());
        }
        let active = self.active()?;
        let (seg, _) = load_segment(active.path.clone(), active.first, true)?;
        let on_disk = seg.first + seg.count;
        {
            let mut st = self.shared.lock();
            *st.segs.segs.last_mut().expect("an active segment") = seg;
        }
        self.open_writer()?;
        if on_disk < from {
            // Cannot happen (the store caches everything the files lack); a
            // restart rebuilds the store from the snapshot and the log.
            return Err(io::Error::other("messages to rewrite are no longer cached"));
        }
        let skip = ((on_disk - from) as usize).min(msgs.len());
        for m in &msgs[skip..] {
            self.write(m)?;
        }
        self.failed = false;
        self.flush()
    }

    /// Closes the writer and removes every segment file (each durably).
    fn remove_files(&mut self) -> io::Result<()> {
        self.writer = None;
        self.pending.clear();
        let mut st = self.shared.lock();
        st.unsynced.clear();
        st.generation += 1;
        for seg in std::mem::take(&mut st.segs.segs) {
            remove_segment(&seg.path)?;
        }
        self.shared.publish(&st);
        Ok(())
    }

    /// A working writer again (after a reset, install or truncation).
    fn restart(&mut self) -> io::Result<()> {
        self.failed = false;
        self.open_writer()?;
        let mut st = self.shared.lock();
        st.failed = None;
        self.shared.publish(&st);
        Ok(())
    }

    /// Drops everything and starts empty at offset `first`.
    pub fn reset_at(&mut self, first: u64) -> io::Result<()> {
        self.remove_files()?;
        self.new_segment(first)?;
        self.restart()
    }

    /// Keeps only the messages below `count` (at least the first segment's
    /// first, at most what the files hold: a count they do not reach would
    /// leave a hole).
    pub fn truncate(&mut self, count: u64) -> io::Result<()> {
        let held = self.shared.lock().segs.len();
        if count > held {
            return Err(io::Error::other(format!(
                "cannot cut the message store to {count}: its files hold {held}"
            )));
        }
        self.writer = None;
        self.pending.clear();
        {
            let mut st = self.shared.lock();
            st.generation += 1;
            let segs = &mut st.segs.segs;
            while segs.len() > 1 && segs.last().expect("non-empty").first >= count {
                let seg = segs.pop().expect("non-empty");
                remove_segment(&seg.path)?;
            }
            let seg = segs.last_mut().ok_or_else(no_writer)?;
            let keep = count.saturating_sub(seg.first);
            if keep < seg.count {
                let k = keep / super::STRIDE;
                let mut pos = seg.sparse[k as usize];
                let mut reader = super::BlockReader::new(&seg.file, seg.size);
                for _ in k * super::STRIDE..keep {
                    pos += (HEADER + reader.record(pos)?.len()) as u64;
                }
                seg.count = keep;
                seg.size = pos;
                seg.sparse.truncate(keep.div_ceil(super::STRIDE) as usize);
            }
            durable::remove_durable(&seg.path.with_extension("idx"))?;
        }
        self.restart()
    }

    /// Replaces every message with the sealed segment `staged` holding
    /// `first..next` (see `transfer`).
    pub fn install(&mut self, staged: &Path, first: u64, next: u64) -> io::Result<()> {
        self.remove_files()?;
        let target = seg_path(&self.dir, first);
        durable::rename_durable(staged, &target)?;
        let idx = staged.with_extension("idx");
        if idx.exists() {
            durable::rename_durable(&idx, &target.with_extension("idx"))?;
        }
        let (seg, complete) = load_segment(target, first, false)?;
        if !complete || seg.first + seg.count != next {
            return Err(invalid(format!(
                "installed snapshot segment holds {first}..{} not ..{next}",
                seg.first + seg.count
            )));
        }
        {
            let mut st = self.shared.lock();
            st.segs.segs.push(seg);
            self.shared.publish(&st);
        }
        self.new_segment(next)?;
        self.restart()
    }
}

/// Marks the writer stopped when its thread ends, however it ends, so that
/// nobody waits for it forever.
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _st = self.0.lock();
        self.0.stopped.store(true, Ordering::Release);
        self.0.cond.notify_all();
    }
}

/// Starts the kernel's write-back of bytes `from..to` of `file` without
/// waiting for it. Only a hint for speed: durability still comes from the
/// sync handle's fsync, so a failure here is ignored (that fsync reports it).
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

fn no_writer() -> io::Error {
    io::Error::other("the message store has no active segment")
}

/// Syncs what was appended before it was made; runs on a blocking thread.
/// (Directory entries need no sync here: each was made durable when it was made.)
pub struct SyncHandle {
    pub(super) inner: Option<(Arc<Shared>, u64, u64)>,
}

/// How long [`SyncHandle::run`] waits for the writer between checks.
const SYNC_WAIT: Duration = Duration::from_millis(100);

impl SyncHandle {
    /// Waits until the writer has written every message appended before the
    /// handle was made (or failed), then syncs every segment file written
    /// since the last sync. A synced file that is no longer the active one
    /// needs no sync again.
    pub fn run(self) -> io::Result<()> {
        let Some((shared, target, generation)) = self.inner else {
            return Ok(());
        };
        let (files, active) = {
            let mut st = shared.lock();
            loop {
                if let Some(e) = &st.failed {
                    // A full disk is reported as one (the snapshot is retried
                    // once space returns); any other failure as itself.
                    return Err(match st.failed_os {
                        Some(code) => io::Error::from_raw_os_error(code),
                        None => io::Error::other(format!("message store failed: {e}")),
                    });
                }
                if st.generation != generation {
                    return Err(io::Error::other("message store was reset meanwhile"));
                }
                if st.segs.len() >= target {
                    break;
                }
                if shared.stopped.load(Ordering::Acquire) {
                    return Err(io::Error::other("the message store's writer stopped"));
                }
                st = shared
                    .cond
                    .wait_timeout(st, SYNC_WAIT)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let active = st.segs.segs.last().map(|s| s.file.clone());
            (st.unsynced.clone(), active)
        };
        for f in &files {
            f.sync_data()?;
        }
        let mut st = shared.lock();
        for f in &files {
            if active.as_ref().is_some_and(|a| Arc::ptr_eq(a, f)) {
                continue;
            }
            if let Some(i) = st.unsynced.iter().position(|u| Arc::ptr_eq(u, f)) {
                st.unsynced.remove(i);
            }
        }
        Ok(())
    }

    /// The files the next run would sync (tests).
    #[cfg(test)]
    pub(super) fn files(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |(s, ..)| s.lock().unsynced.len())
    }
}
