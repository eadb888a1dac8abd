//! Requests parked in the controller until the log catches up with them.
//!
//! A waiting write holds no lock and no slot in the write pipeline: it is one entry
//! in a map keyed by log index, checked when acks, commits or applies move. Reads
//! wait for an applied index (ReadIndex) and, for long polls, for a message at
//! their offset.

use crate::node::api::{ApiError, ReadRequest, ReadResult, WriteResult};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::oneshot;
use tokio::time::Instant;

pub type WriteReply = oneshot::Sender<Result<WriteResult, ApiError>>;
pub type ReadReply = oneshot::Sender<Result<RawRead, ApiError>>;

/// A read as the controller answers it: shared message bytes, no copies. The
/// handler turns it into JSON off the controller's thread.
pub struct RawRead {
    pub messages: Vec<(u64, bytes::Bytes)>,
    pub next_offset: u64,
}

impl RawRead {
    pub fn into_result(self) -> ReadResult {
        let messages = self
            .messages
            .into_iter()
            .map(|(offset, m)| crate::node::api::ReadMessage {
                offset,
                message: String::from_utf8_lossy(&m).into_owned(),
            })
            .collect();
        ReadResult {
            messages,
            next_offset: self.next_offset,
        }
    }
}

/// A write waiting for its write concern.
pub struct WriteWaiter {
    pub term: u64,
    pub w: usize,
    pub deadline: Option<Instant>,
    pub reply: WriteReply,
    /// Answer with `duplicate: true` (a retry joined an in-flight write).
    pub duplicate: bool,
    /// Set once the entry is applied: its offset (the original's for a duplicate).
    pub offset: Option<u64>,
    pub key: Option<String>,
}

/// A read waiting for `applied >= min_index` (and, when long-polling, for data).
pub struct ReadWaiter {
    pub req: ReadRequest,
    pub limit: usize,
    pub min_index: u64,
    pub deadline: Instant,
    pub reply: ReadReply,
}

#[derive(Default)]
pub struct Waiters {
    pub writes: BTreeMap<u64, Vec<WriteWaiter>>,
    /// Idempotency keys of in-flight writes -> `(index, term)`.
    keys: HashMap<String, (u64, u64)>,
    pub reads: Vec<ReadWaiter>,
    /// ReadIndex rounds in flight: ctx -> replies wanting the read index.
    pub read_index: BTreeMap<u64, Vec<oneshot::Sender<Result<u64, ApiError>>>>,
    /// ReadIndex requests collected during this loop turn (one round for all).
    pub read_index_batch: Vec<oneshot::Sender<Result<u64, ApiError>>>,
}

impl Waiters {
    pub fn add_write(&mut self, index: u64, w: WriteWaiter) {
        if let Some(k) = &w.key {
            self.keys.insert(k.clone(), (index, w.term));
        }
        self.writes.entry(index).or_default().push(w);
    }

    /// `(index, term)` of an in-flight write with this idempotency key.
    pub fn index_of_key(&self, key: &str) -> Option<(u64, u64)> {
        self.keys.get(key).copied()
    }

    /// Remove and return the writes waiting on `index`.
    pub fn take_writes(&mut self, index: u64) -> Vec<WriteWaiter> {
        let ws = self.writes.remove(&index).unwrap_or_default();
        for w in &ws {
            if let Some(k) = &w.key {
                if self.keys.get(k).is_some_and(|(i, _)| *i == index) {
                    self.keys.remove(k);
                }
            }
        }
        ws
    }

    /// Fail everything (shutdown).
    pub fn fail_all(&mut self, err: ApiError) {
        self.keys.clear();
        // A parked write was appended: it may still commit elsewhere.
        let unknown = ApiError::OutcomeUnknown(format!("{err}; the write may still commit"));
        for (_, ws) in std::mem::take(&mut self.writes) {
            for w in ws {
                let _ = w.reply.send(Err(unknown.clone()));
            }
        }
        for r in std::mem::take(&mut self.reads) {
            let _ = r.reply.send(Err(err.clone()));
        }
        for (_, rs) in std::mem::take(&mut self.read_index) {
            for r in rs {
                let _ = r.send(Err(err.clone()));
            }
        }
        for r in std::mem::take(&mut self.read_index_batch) {
            let _ = r.send(Err(err.clone()));
        }
    }
}
