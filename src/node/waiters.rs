//! Requests parked in the controller until the log catches up with them.
//!
//! A waiting write holds no lock and no slot in the write pipeline: it is one entry
//! in a map keyed by log index. It is looked at only when something its answer
//! depends on changed (it was parked or applied, its deadline passed, or enough
//! voters now match its index), never by a scan of every waiting write. Reads
//! wait for an applied index (ReadIndex) and, for long polls, for a message at
//! their offset.

use crate::api::{ApiError, ReadRequest, ReadResult, WriteResult};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
            .map(|(offset, m)| crate::api::ReadMessage {
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
    /// Cursors an explicit trim passed (reported in its answer).
    pub passed_cursors: Vec<String>,
}

impl WriteWaiter {
    /// Can a change of acks alone answer this write (with the quorum it was
    /// classified under)? Unapplied writes with `w < quorum` may finish on acks
    /// (if their offset is certain before apply); applied ones with `w > quorum`
    /// still need acks; all others finish only on apply.
    fn waits_for_acks(&self, quorum: usize) -> bool {
        match self.offset {
            Some(_) => self.w > quorum,
            None => self.w < quorum,
        }
    }
}

/// A read waiting for `applied >= min_index` (and, when long-polling, for data).
pub struct ReadWaiter {
    pub req: ReadRequest,
    pub limit: usize,
    pub min_index: u64,
    pub deadline: Instant,
    pub reply: ReadReply,
}

/// How often every waiting write is looked at regardless of events: drops writes
/// whose client went away (otherwise only noticed when the write is looked at
/// for another reason). Answers never depend on it.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A parked write with the sequence number its deadline entry is keyed by.
struct Parked {
    seq: u64,
    waiter: WriteWaiter,
}

#[derive(Default)]
pub struct Waiters {
    /// Waiting writes by log index.
    writes: BTreeMap<u64, Vec<Parked>>,
    /// Idempotency keys of in-flight writes -> `(index, term)`.
    keys: HashMap<String, (u64, u64)>,
    /// `(deadline, seq) -> index` of every waiting write with a deadline, so
    /// expiry looks only at what expired.
    deadlines: BTreeMap<(Instant, u64), u64>,
    /// `w -> indexes` of writes an ack change alone can answer (see
    /// `WriteWaiter::waits_for_acks`); only these are looked at when acks move.
    ack_watch: BTreeMap<usize, BTreeSet<u64>>,
    /// Indexes that got a write (new, or just applied) since the last check.
    dirty: BTreeSet<u64>,
    /// The quorum `ack_watch` was built with; a change rebuilds it.
    quorum: usize,
    /// `(term, voters' match indexes, highest first)` at the last check: acks
    /// cannot have changed while this is the same.
    acks_view: Option<(u64, Vec<u64>)>,
    next_seq: u64,
    next_sweep: Option<Instant>,
    reads: Vec<ReadWaiter>,
    /// ReadIndex rounds in flight: ctx -> replies wanting the read index.
    read_index: BTreeMap<u64, Vec<ReadIndexReply>>,
    /// ReadIndex requests collected during this loop turn (one round for all).
    read_index_batch: Vec<ReadIndexReply>,
}

/// Where a linearizable read learns its read index.
pub type ReadIndexReply = oneshot::Sender<Result<u64, ApiError>>;

impl Waiters {
    /// Park a read until its index is applied (or its long poll has data).
    pub fn park_read(&mut self, r: ReadWaiter) {
        self.reads.push(r);
    }

    /// Every parked read, to be looked at (those not answered are parked again).
    pub fn take_reads(&mut self) -> Vec<ReadWaiter> {
        std::mem::take(&mut self.reads)
    }

    /// A linearizable read wants the read index: it joins this turn's round.
    pub fn queue_read_index(&mut self, reply: ReadIndexReply) {
        self.read_index_batch.push(reply);
    }

    /// The reads that asked for a read index this turn (one round for all).
    pub fn take_read_index_batch(&mut self) -> Vec<ReadIndexReply> {
        std::mem::take(&mut self.read_index_batch)
    }

    /// A ReadIndex round `ctx` started for `batch`.
    pub fn read_index_round(&mut self, ctx: u64, batch: Vec<ReadIndexReply>) {
        self.read_index.insert(ctx, batch);
    }

    /// The rounds up to `ctx` are answered (rounds are answered in order):
    /// their readers.
    pub fn read_index_done(&mut self, ctx: u64) -> Vec<ReadIndexReply> {
        let later = self.read_index.split_off(&ctx.saturating_add(1));
        let done = std::mem::replace(&mut self.read_index, later);
        done.into_values().flatten().collect()
    }

    /// Every reader of a round still in flight (leadership was lost).
    pub fn take_read_index_rounds(&mut self) -> Vec<ReadIndexReply> {
        std::mem::take(&mut self.read_index)
            .into_values()
            .flatten()
            .collect()
    }

    /// Park a write (new, or re-parked after apply); it is looked at in the next
    /// check, since its answer may already be due.
    pub fn add_write(&mut self, index: u64, w: WriteWaiter) {
        self.dirty.insert(index);
        self.park(index, w);
    }

    /// Re-park a write that was just looked at and is not due, under `quorum`.
    /// Not marked dirty: it is looked at again only when something it waits
    /// for changes (acks, apply, its deadline) or at the periodic sweep.
    pub fn keep_write(&mut self, index: u64, w: WriteWaiter, quorum: usize) {
        if w.waits_for_acks(quorum) {
            self.ack_watch.entry(w.w).or_default().insert(index);
        }
        self.park(index, w);
    }

    fn park(&mut self, index: u64, w: WriteWaiter) {
        if let Some(k) = &w.key {
            self.keys.insert(k.clone(), (index, w.term));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(d) = w.deadline {
            self.deadlines.insert((d, seq), index);
        }
        let parked = Parked { seq, waiter: w };
        self.writes.entry(index).or_default().push(parked);
    }

    /// Is any write waiting?
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    /// `(index, term)` of an in-flight write with this idempotency key.
    pub fn index_of_key(&self, key: &str) -> Option<(u64, u64)> {
        self.keys.get(key).copied()
    }

    /// Remove and return the writes waiting on `index` (and every trace of them).
    pub fn take_writes(&mut self, index: u64) -> Vec<WriteWaiter> {
        let Some(ps) = self.writes.remove(&index) else {
            return Vec::new();
        };
        let mut ws = Vec::with_capacity(ps.len());
        for Parked { seq, waiter: w } in ps {
            if let Some(k) = &w.key {
                if self.keys.get(k).is_some_and(|(i, _)| *i == index) {
                    self.keys.remove(k);
                }
            }
            if let Some(d) = w.deadline {
                self.deadlines.remove(&(d, seq));
            }
            self.unwatch(w.w, index);
            ws.push(w);
        }
        ws
    }

    fn unwatch(&mut self, w: usize, index: u64) {
        if let Some(set) = self.ack_watch.get_mut(&w) {
            set.remove(&index);
            if set.is_empty() {
                self.ack_watch.remove(&w);
            }
        }
    }

    /// Indexes (ascending, no repeats) whose writes may have an answer now; every
    /// other waiting write provably has none. `term` and `matches` (voters' match
    /// indexes, highest first; empty when not leader) are what `acks` counts from.
    ///
    /// Due: writes parked since the last check; writes past their deadline; when
    /// acks moved, ack-watched writes with `w` voters matching them (`index <=
    /// matches[w - 1]`: fewer means acks < w). Everything on a quorum change
    /// (the classes change) and every `SWEEP_EVERY`.
    pub fn due(&mut self, now: Instant, quorum: usize, term: u64, matches: Vec<u64>) -> Vec<u64> {
        let view = Some((term, matches));
        let acks_moved = self.acks_view != view;
        self.acks_view = view;
        if quorum != self.quorum || self.next_sweep.is_none_or(|t| now >= t) {
            self.quorum = quorum;
            self.next_sweep = Some(now + SWEEP_EVERY);
            self.dirty.clear();
            return self.writes.keys().copied().collect();
        }
        let mut due = std::mem::take(&mut self.dirty);
        let expired = self.deadlines.range(..=(now, u64::MAX));
        due.extend(expired.map(|(_, i)| *i));
        if acks_moved {
            let matches = self.acks_view.as_ref().map_or(&[][..], |(_, m)| &m[..]);
            for (w, set) in &self.ack_watch {
                if let Some(&m) = w.checked_sub(1).and_then(|i| matches.get(i)) {
                    due.extend(set.range(..=m));
                }
            }
        }
        due.into_iter().collect()
    }

    /// Remove and return every waiting write with its index (leadership lost).
    pub fn take_all_writes(&mut self) -> Vec<(u64, WriteWaiter)> {
        let indexes: Vec<u64> = self.writes.keys().copied().collect();
        let mut all = Vec::new();
        for index in indexes {
            all.extend(self.take_writes(index).into_iter().map(|w| (index, w)));
        }
        self.dirty.clear();
        all
    }

    /// Fail everything (shutdown).
    pub fn fail_all(&mut self, err: ApiError) {
        self.keys.clear();
        self.deadlines.clear();
        self.ack_watch.clear();
        self.dirty.clear();
        // A parked write was appended: it may still commit elsewhere.
        let unknown = ApiError::OutcomeUnknown(format!("{err}; the write may still commit"));
        for (_, ps) in std::mem::take(&mut self.writes) {
            for p in ps {
                let _ = p.waiter.reply.send(Err(unknown.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Rx = oneshot::Receiver<Result<WriteResult, ApiError>>;

    #[test]
    fn read_index_rounds_are_answered_in_order_and_the_rest_on_a_leader_loss() {
        let mut ws = Waiters::default();
        let mut rxs = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = oneshot::channel();
            ws.queue_read_index(tx);
            rxs.push(rx);
        }
        let batch = ws.take_read_index_batch();
        assert_eq!(batch.len(), 4);
        assert!(ws.take_read_index_batch().is_empty(), "taken once");
        let mut batch = batch.into_iter();
        for ctx in 1..=3 {
            let n = if ctx == 3 { 2 } else { 1 };
            ws.read_index_round(ctx, batch.by_ref().take(n).collect());
        }
        // Round 2's answer answers round 1 too; round 3 stays.
        let done = ws.read_index_done(2);
        assert_eq!(done.len(), 2);
        for r in done {
            r.send(Ok(7)).unwrap();
        }
        assert_eq!(rxs[0].try_recv().unwrap().unwrap(), 7);
        assert_eq!(rxs[1].try_recv().unwrap().unwrap(), 7);
        assert!(rxs[2].try_recv().is_err(), "round 3 still waits");
        assert!(ws.read_index_done(2).is_empty(), "answered once");
        assert_eq!(
            ws.take_read_index_rounds().len(),
            2,
            "round 3's two readers"
        );
        assert!(ws.take_read_index_rounds().is_empty());
    }

    fn waiter(w: usize, offset: Option<u64>, deadline: Option<Instant>) -> (WriteWaiter, Rx) {
        let (reply, rx) = oneshot::channel();
        let ww = WriteWaiter {
            term: 1,
            w,
            deadline,
            reply,
            duplicate: false,
            offset,
            key: None,
            passed_cursors: Vec::new(),
        };
        (ww, rx)
    }

    /// Waiters past their first (full) check, with one write kept at `index`.
    fn settled(index: u64, ww: WriteWaiter, now: Instant) -> Waiters {
        let mut ws = Waiters::default();
        ws.add_write(index, ww);
        assert_eq!(ws.due(now, 2, 1, vec![0, 0, 0]), vec![index]);
        let ww = ws.take_writes(index).pop().unwrap();
        ws.keep_write(index, ww, 2);
        ws
    }

    #[test]
    fn nothing_is_due_while_nothing_changed() {
        let now = Instant::now();
        let (ww, _rx) = waiter(1, None, None);
        let mut ws = settled(5, ww, now);
        assert!(ws.due(now, 2, 1, vec![0, 0, 0]).is_empty());
    }

    #[test]
    fn a_parked_write_is_due_at_the_next_check() {
        let now = Instant::now();
        let (ww, _rx) = waiter(2, None, None);
        let mut ws = settled(5, ww, now);
        let (ww, _rx2) = waiter(2, Some(0), None);
        ws.add_write(7, ww);
        assert_eq!(ws.due(now, 2, 1, vec![0, 0, 0]), vec![7]);
    }

    #[test]
    fn an_ack_watched_write_is_due_once_w_voters_match_it() {
        let now = Instant::now();
        let (ww, _rx) = waiter(1, None, None);
        let mut ws = settled(5, ww, now);
        assert!(ws.due(now, 2, 1, vec![4, 3, 0]).is_empty());
        assert_eq!(ws.due(now, 2, 1, vec![5, 3, 0]), vec![5]);
    }

    #[test]
    fn an_applied_w_all_write_waits_for_every_voter() {
        let now = Instant::now();
        let (ww, _rx) = waiter(3, Some(0), None);
        let mut ws = settled(5, ww, now);
        assert!(ws.due(now, 2, 1, vec![9, 9, 4]).is_empty());
        assert_eq!(ws.due(now, 2, 1, vec![9, 9, 5]), vec![5]);
    }

    #[test]
    fn an_unapplied_majority_write_ignores_acks() {
        let now = Instant::now();
        let (ww, _rx) = waiter(2, None, None);
        let mut ws = settled(5, ww, now);
        assert!(ws.due(now, 2, 1, vec![9, 9, 9]).is_empty());
    }

    #[test]
    fn a_quorum_change_looks_at_everything() {
        let now = Instant::now();
        let (ww, _rx) = waiter(2, None, None);
        let mut ws = settled(5, ww, now);
        assert_eq!(ws.due(now, 3, 1, vec![0, 0, 0, 0]), vec![5]);
    }

    #[test]
    fn an_expired_write_is_due_and_a_taken_one_is_forgotten() {
        let now = Instant::now();
        let d = now + Duration::from_millis(10);
        let (ww, _rx) = waiter(2, None, Some(d));
        let mut ws = settled(5, ww, now);
        assert!(ws
            .due(d - Duration::from_millis(1), 2, 1, vec![0])
            .is_empty());
        assert_eq!(ws.due(d, 2, 1, vec![0]), vec![5]);
        ws.take_writes(5);
        assert!(ws.due(d, 2, 1, vec![5]).is_empty());
        assert!(!ws.has_writes());
    }

    #[test]
    fn the_periodic_sweep_looks_at_everything() {
        let now = Instant::now();
        let (ww, _rx) = waiter(2, None, None);
        let mut ws = settled(5, ww, now);
        assert_eq!(ws.due(now + SWEEP_EVERY, 2, 1, vec![0, 0, 0]), vec![5]);
    }

    #[test]
    fn fail_all_answers_outcome_unknown() {
        let now = Instant::now();
        let (ww, mut rx) = waiter(2, None, Some(now));
        let mut ws = settled(5, ww, now);
        ws.fail_all(ApiError::ShuttingDown);
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(ApiError::OutcomeUnknown(_)))
        ));
        assert!(!ws.has_writes() && ws.deadlines.is_empty());
    }
}
