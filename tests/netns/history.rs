//! The recorded history: every client operation with its invoke and completion
//! times and its outcome, and every fault the nemesis injected.
//!
//! Times are offsets from the run's start on one monotonic clock, so "completed
//! before the other was invoked" is a plain comparison.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Write concern of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum W {
    Majority,
    One,
}

impl W {
    pub fn json(self) -> &'static str {
        match self {
            W::Majority => "\"majority\"",
            W::One => "1",
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (writes) or answered (reads).
    Ok,
    /// Definitely had no effect: 4xx, 503 no_leader/no_quorum, or never sent.
    Fail,
    /// May or may not have taken effect: timeout, 504, connection lost.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct Write {
    /// The message (a batch's first); unique per logical write (the same on
    /// every retry).
    pub value: String,
    /// A batch's further messages, in order (empty for a single write).
    pub more: Vec<String>,
    /// The `If-Next-Offset` condition, if any.
    pub if_next: Option<u64>,
    /// From a 409 `offset_conflict` answer: the next offset it reported.
    pub conflict_next: Option<u64>,
    pub key: Option<String>,
    pub w: W,
    /// 1 for the first try, 2.. for retries of the same logical write.
    pub attempt: u32,
    /// From a 201/200 answer (a batch's `first_offset`).
    pub offset: Option<u64>,
    pub committed: Option<bool>,
    pub duplicate: bool,
}

impl Write {
    /// Every message of the write, in order.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.value.as_str()).chain(self.more.iter().map(String::as_str))
    }

    pub fn is_batch(&self) -> bool {
        !self.more.is_empty()
    }
}

#[derive(Clone, Debug)]
pub struct Read {
    pub linearizable: bool,
    pub from: u64,
    pub limit: u64,
    /// Messages from `from` on, in offset order (offsets checked dense on receipt).
    pub messages: Vec<String>,
    pub next_offset: u64,
}

impl Read {
    /// A read that filled its page may have stopped before the end of the log.
    pub fn truncated(&self) -> bool {
        self.messages.len() as u64 >= self.limit
    }

    /// One past the last offset returned.
    pub fn returned_end(&self) -> u64 {
        self.from + self.messages.len() as u64
    }

    /// The log length this read observed is at least this (an empty page says
    /// nothing but that the log ends at or before `from`).
    pub fn lower(&self) -> u64 {
        if self.messages.is_empty() {
            0
        } else {
            self.returned_end()
        }
    }

    /// The log length this read observed is at most this.
    pub fn upper(&self) -> u64 {
        if self.truncated() {
            u64::MAX
        } else {
            self.returned_end()
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    Write(Write),
    Read(Read),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub client: usize,
    /// Host (1-based) the request went to.
    pub host: usize,
    pub invoke: Duration,
    pub complete: Duration,
    pub outcome: Outcome,
    /// Status and error code, or the transport error.
    pub info: String,
    pub kind: Kind,
}

impl Op {
    pub fn write(&self) -> Option<&Write> {
        match &self.kind {
            Kind::Write(w) => Some(w),
            Kind::Read(_) => None,
        }
    }

    pub fn read(&self) -> Option<&Read> {
        match &self.kind {
            Kind::Read(r) => Some(r),
            Kind::Write(_) => None,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op#{} client {} host {} [{} .. {}] {:?}",
            self.id,
            self.client,
            self.host,
            secs(self.invoke),
            secs(self.complete),
            self.outcome
        )?;
        match &self.kind {
            Kind::Write(w) => {
                write!(f, " WRITE {:?} w={:?} try {}", w.value, w.w, w.attempt)?;
                if w.is_batch() {
                    write!(f, " batch of {}", w.more.len() + 1)?;
                }
                if let Some(n) = w.if_next {
                    write!(f, " if-next-offset {n}")?;
                }
                if let Some(n) = w.conflict_next {
                    write!(f, " -> conflict, next offset {n}")?;
                }
                if let Some(k) = &w.key {
                    write!(f, " key={k}")?;
                }
                if let Some(o) = w.offset {
                    write!(f, " -> offset {o}")?;
                }
                if let Some(c) = w.committed {
                    write!(f, " committed={c}")?;
                }
                if w.duplicate {
                    write!(f, " duplicate")?;
                }
            }
            Kind::Read(r) => {
                write!(
                    f,
                    " READ {} from {} limit {}",
                    if r.linearizable {
                        "linearizable"
                    } else {
                        "local"
                    },
                    r.from,
                    r.limit
                )?;
                if self.outcome == Outcome::Ok {
                    write!(
                        f,
                        " -> {} messages, up to offset {}",
                        r.messages.len(),
                        r.returned_end() as i64 - 1
                    )?;
                    if let (Some(a), Some(b)) = (r.messages.first(), r.messages.last()) {
                        write!(f, " ({a:?}..{b:?})")?;
                    }
                }
            }
        }
        if !self.info.is_empty() {
            write!(f, " ({})", self.info)?;
        }
        Ok(())
    }
}

/// The shared recorder.
pub struct History {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<(Duration, String)>>,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            ops: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
        }
    }

    /// Time since the run started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Notes a nemesis event (also printed as it happens).
    pub fn fault(&self, what: String) {
        let t = self.now();
        eprintln!("nemesis {:>8}  {what}", secs(t));
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, what));
    }

    pub fn ops(&self) -> Vec<Op> {
        let mut v = self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|o| o.id);
        v
    }

    pub fn faults(&self) -> Vec<(Duration, String)> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
