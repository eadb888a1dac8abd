//! The state machine: the message log itself.
//!
//! Committed `Command` entries (see [`command`]) become messages with dense
//! 0-based offsets, in log order, identical on every node. An entry may append
//! several messages (a batch: consecutive offsets, nothing between them), may be
//! conditional (`if_next_offset`: it lands only if the next offset is exactly
//! that when applied, else nothing is appended), may trim the front of the log,
//! or may set or delete a named consumer cursor. Everything is decided here, at
//! apply time and in log order, so every node decides alike.
//!
//! Idempotency keys are part of the replicated state: a command whose key was
//! already applied changes nothing and answers the first outcome (where it
//! landed, or that its condition failed; for a trim or cursor command, only
//! one that changed the log is remembered). Keys are remembered for the last
//! `idempotency_window` keyed commands (deterministic eviction).
//!
//! The messages live in a [`MessageStore`]. Snapshots (see [`snapshot`]) carry
//! the first and next offset, keys, cursors and the time samples used by
//! retention by age; a follower gets one streamed with its messages and
//! installs it by rename (see [`stream`]).
//!
//! Invariants:
//! - `apply` is called with dense, increasing indexes (asserted);
//! - offsets are never reused or skipped; trims only raise the first offset, and
//!   never past the next one;
//! - a snapshot restores exactly the state after applying up to its index;
//! - the store always holds a prefix of the one message sequence every node
//!   agrees on (from its first offset), so cutting it back to a count gives that
//!   count's exact state.

mod command;
mod snapshot;
mod stream;

pub use command::{encode_append_parts as encode_append, Append, Command};
pub use snapshot::{full_payload, is_manifest};
pub use stream::{stage_received, SnapshotStream};

use crate::core::{Entry, EntryPayload};
use crate::msgstore::{self, MessageStore, Reader, SyncHandle};
use bytes::Bytes;
use snapshot::Meta;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Time samples kept for retention by age; beyond it every other one is dropped.
const MAX_TIME_SAMPLES: usize = 1 << 16;
/// A new time sample once the leader's clock moved on by this much.
const TIME_SAMPLE_MS: u64 = 1000;

/// The remembered outcome of a keyed write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    /// First offset of what it appended; for a conflict, the next offset then.
    pub offset: u64,
    pub index: u64,
    pub term: u64,
    /// Messages appended (0 for a conflict).
    pub count: u64,
    /// Its condition failed: nothing was appended.
    pub conflict: bool,
}

impl Landed {
    pub fn appended(offset: u64, index: u64, term: u64, count: u64) -> Self {
        Landed {
            offset,
            index,
            term,
            count,
            conflict: false,
        }
    }
}

/// Why a cursor command was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorRefusal {
    /// It would move back (without `force`); the cursor's offset now.
    Regression { current: u64 },
    /// A new cursor beyond the limit.
    TooMany { max: u64 },
    /// Delete of a cursor that does not exist.
    NotFound,
}

/// What applying one entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// New messages at `first..first + count`.
    Appended { first: u64, count: u64 },
    /// The key was seen before: the original outcome.
    Duplicate(Landed),
    /// The condition failed; nothing appended.
    Conflict { next_offset: u64 },
    /// A trim: the first offset now, and the cursors it passed (explicit trims).
    Trimmed {
        first_offset: u64,
        passed_cursors: Vec<String>,
    },
    /// A cursor set (its offset now) or delete (`Ok(0)`), or why not.
    Cursor(Result<u64, CursorRefusal>),
    /// Not a command (no-op, membership, undecodable).
    Other,
}

#[derive(Debug, Default)]
pub struct StateMachine {
    messages: MessageStore,
    keys: HashMap<String, Landed>,
    key_order: VecDeque<String>,
    window: usize,
    applied: u64,
    cursors: BTreeMap<String, u64>,
    /// `(offset, leader clock ms)`: the message at `offset` and every later one
    /// up to the next sample were proposed at or after this time, and every
    /// earlier one at or before it.
    times: VecDeque<(u64, u64)>,
    /// Where received snapshots wait to be installed (see [`stream`]).
    install_dir: Option<std::path::PathBuf>,
}

/// Bytes waiting for the message store's writer at which a loop turn hands
/// them over rather than leaving them to the next tick. Each hand-over wakes
/// the writer's thread: at one client (a turn per write) that was 5-9 % of the
/// CPU per write (README, Performance); a tick is 50 ms by default.
pub const HAND_OVER_BYTES: usize = 64 << 10;

impl StateMachine {
    /// A state machine keeping its messages in memory (tests).
    pub fn new(idempotency_window: usize) -> Self {
        Self::with_store(idempotency_window, MessageStore::memory())
    }

    /// A state machine over `store`, which must be restored from a snapshot (or
    /// be empty) before the first `apply`.
    pub fn with_store(idempotency_window: usize, store: MessageStore) -> Self {
        StateMachine {
            messages: store,
            window: idempotency_window.max(1),
            ..Default::default()
        }
    }

    /// A write to the message store failed (its messages are kept in memory
    /// meanwhile, and no snapshot is taken, so the WAL keeps them too).
    pub fn failure(&self) -> Option<&str> {
        self.messages.failure()
    }

    /// Retry the message store's failed writes (`Ok` once they succeeded;
    /// the retry runs on the store's writer).
    pub fn repair(&mut self) -> std::io::Result<()> {
        self.messages.repair()
    }

    /// Hands what was appended since the last call to the message store's
    /// writer, as far as its queue takes it (see `msgstore` on backpressure).
    /// Applying does not: the controller calls this every tick, and
    /// [`StateMachine::hand_over_if_due`] after each loop turn, so the writer
    /// thread is woken once for many entries, not once per entry.
    pub fn hand_over(&mut self) {
        self.messages.hand_over();
    }

    /// [`StateMachine::hand_over`] once at least [`HAND_OVER_BYTES`] wait for
    /// the writer; the tick hands over the rest. Nothing waits for the writer
    /// (reads come from the cache until it has written; a snapshot's manifest
    /// hands everything over itself), so a small write does not have to wake it.
    pub fn hand_over_if_due(&mut self) {
        if self.messages.backlog_bytes() >= HAND_OVER_BYTES {
            self.messages.hand_over();
        }
    }

    /// The message store's writer is behind (by more than
    /// [`msgstore::SNAPSHOT_BACKLOG`], or its queue is full): a local snapshot
    /// would hold the WAL while it waits for the writer, so none is started.
    pub fn store_behind(&self) -> bool {
        self.messages.behind(msgstore::SNAPSHOT_BACKLOG)
    }

    /// Why new writes are refused, while the message store's writer is behind
    /// by more than [`msgstore::REFUSE_BACKLOG`] (bounds the memory its cache
    /// holds for it).
    pub fn store_refusal(&self) -> Option<String> {
        let b = self.messages.backlog_bytes();
        (b > msgstore::REFUSE_BACKLOG).then(|| {
            format!(
                "the message store's disk is {} MiB behind; retry when it catches up",
                b >> 20
            )
        })
    }

    /// Fault injection: the message store's writer sleeps this long per batch.
    pub fn set_write_delay(&self, delay: msgstore::WriteDelay) {
        self.messages.set_write_delay(delay);
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Offset the next new message will get.
    pub fn next_offset(&self) -> u64 {
        self.messages.len()
    }

    /// The lowest offset still held (everything below was trimmed).
    pub fn first_offset(&self) -> u64 {
        self.messages.first()
    }

    /// Bytes the message store occupies (files on disk, or memory).
    pub fn log_bytes(&self) -> u64 {
        self.messages.bytes()
    }

    /// Bytes applied but not yet in the message store's files (held in memory
    /// meanwhile; a leader refuses writes past [`msgstore::REFUSE_BACKLOG`]),
    /// as of the writer's progress now.
    pub fn store_backlog_bytes(&mut self) -> usize {
        self.messages.current_backlog_bytes()
    }

    pub fn lookup_key(&self, key: &str) -> Option<Landed> {
        self.keys.get(key).copied()
    }

    pub fn cursor(&self, name: &str) -> Option<u64> {
        self.cursors.get(name).copied()
    }

    /// Every cursor, by name.
    pub fn cursors(&self) -> &BTreeMap<String, u64> {
        &self.cursors
    }

    /// Messages from `from` (at least the first offset), at most `limit`.
    /// Whether reading from `from` goes to the message files (see
    /// [`MessageStore::reads_files`]): such a read runs off the controller task.
    pub fn reads_files(&self, from: u64) -> bool {
        self.messages.reads_files(from.max(self.first_offset()))
    }

    pub fn read(&self, from: u64, limit: usize) -> std::io::Result<Vec<(u64, Bytes)>> {
        self.messages.read(from.max(self.first_offset()), limit)
    }

    pub fn apply(&mut self, e: &Entry) -> Applied {
        assert_eq!(e.index, self.applied + 1, "apply out of order");
        self.applied = e.index;
        let EntryPayload::Command(data) = &e.payload else {
            return Applied::Other;
        };
        match Command::decode(data.clone()) {
            Some(c) => self.apply_command(c, e),
            None => Applied::Other,
        }
    }

    fn apply_command(&mut self, c: Command, e: &Entry) -> Applied {
        match c {
            Command::Append(a) => self.apply_append(a, e),
            Command::Trim { before, by_policy } => self.apply_trim(before, by_policy),
            Command::SetCursor {
                name,
                offset,
                force,
                max_cursors,
            } => Applied::Cursor(self.set_cursor(name, offset, force, max_cursors)),
            Command::DeleteCursor { name } => match self.cursors.remove(&name) {
                Some(_) => Applied::Cursor(Ok(0)),
                None => Applied::Cursor(Err(CursorRefusal::NotFound)),
            },
            Command::Keyed { key, op } => self.apply_keyed(key, *op, e),
        }
    }

    /// A keyed trim or cursor command: a key remembered answers its first
    /// outcome and changes nothing; one that changed the log (a trim, a cursor
    /// set or delete) is remembered, its `offset` the first offset after the
    /// trim or the cursor's. A refusal changed nothing and is not remembered: a
    /// re-send of it is decided afresh, and still lands at most once.
    fn apply_keyed(&mut self, key: String, op: Command, e: &Entry) -> Applied {
        if let Some(l) = self.keys.get(&key) {
            return Applied::Duplicate(*l);
        }
        let applied = self.apply_command(op, e);
        let landed = match &applied {
            Applied::Trimmed { first_offset, .. } => Some(*first_offset),
            Applied::Cursor(Ok(offset)) => Some(*offset),
            _ => None,
        };
        if let Some(offset) = landed {
            self.remember(key, Landed::appended(offset, e.index, e.term, 0));
        }
        applied
    }

    fn apply_append(&mut self, a: Append, e: &Entry) -> Applied {
        if let Some(k) = &a.key {
            if let Some(l) = self.keys.get(k) {
                return Applied::Duplicate(*l);
            }
        }
        let next = self.messages.len();
        if a.if_next_offset.is_some_and(|n| n != next) {
            if let Some(k) = a.key {
                let l = Landed {
                    offset: next,
                    index: e.index,
                    term: e.term,
                    count: 0,
                    conflict: true,
                };
                self.remember(k, l);
            }
            return Applied::Conflict { next_offset: next };
        }
        let count = a.messages.len() as u64;
        self.sample_time(next, a.ts_ms);
        for m in a.messages {
            self.messages.append(m);
        }
        if let Some(k) = a.key {
            self.remember(k, Landed::appended(next, e.index, e.term, count));
        }
        Applied::Appended { first: next, count }
    }

    fn sample_time(&mut self, offset: u64, ts_ms: u64) {
        if ts_ms == 0 {
            return;
        }
        let last = self.times.back().map(|t| t.1);
        let ts = ts_ms.max(last.unwrap_or(0));
        if last.is_none_or(|l| ts >= l + TIME_SAMPLE_MS) {
            self.times.push_back((offset, ts));
        }
        if self.times.len() > MAX_TIME_SAMPLES {
            // Coarser, still true: every earlier message is at or before a sample.
            let kept = self.times.iter().copied().skip(1).step_by(2).collect();
            self.times = kept;
        }
    }

    fn apply_trim(&mut self, before: u64, by_policy: bool) -> Applied {
        let mut to = before.min(self.messages.len());
        if by_policy {
            if let Some(low) = self.cursors.values().min() {
                to = to.min(*low);
            }
        }
        let passed_cursors = if by_policy {
            Vec::new()
        } else {
            let passed = self.cursors.iter().filter(|(_, o)| **o < to);
            passed.map(|(n, _)| n.clone()).collect()
        };
        if to > self.first_offset() {
            self.messages.trim_front(to);
            while self.times.len() > 1 && self.times[1].0 <= to {
                self.times.pop_front();
            }
        }
        Applied::Trimmed {
            first_offset: self.first_offset(),
            passed_cursors,
        }
    }

    fn set_cursor(
        &mut self,
        name: String,
        offset: u64,
        force: bool,
        max: u64,
    ) -> Result<u64, CursorRefusal> {
        match self.cursors.get(&name) {
            Some(&current) if offset < current && !force => {
                Err(CursorRefusal::Regression { current })
            }
            None if self.cursors.len() as u64 >= max => Err(CursorRefusal::TooMany { max }),
            _ => {
                self.cursors.insert(name, offset);
                Ok(offset)
            }
        }
    }

    /// Where the next unapplied entries would put a write, if that is certain
    /// before they are applied: `pending` holds the command payloads of the
    /// unapplied entries in log order, the write's own last. Certain unless one
    /// of them is a conditional append (decided only when applied) or a keyed
    /// append that may turn out a duplicate (its key applied already, or twice
    /// among them). A write answered before it is applied (`w` below a
    /// majority) names this offset, so it must be right.
    pub fn certain_offset(&self, pending: &[&[u8]]) -> Option<u64> {
        let mut next = self.next_offset();
        let mut seen = std::collections::HashSet::new();
        for (i, data) in pending.iter().enumerate() {
            let Some((key, conditional, count)) = command::append_shape(data) else {
                continue;
            };
            if conditional {
                return None;
            }
            if let Some(k) = key {
                if self.keys.contains_key(k) || !seen.insert(k) {
                    return None;
                }
            }
            if i + 1 < pending.len() {
                next += count;
            }
        }
        Some(next)
    }

    /// The offset retention would trim below now (the leader's view): the
    /// highest of what `max_messages`, `max_bytes` and `max_age_s` (against
    /// `now_ms`, the leader's clock) allow, never past the lowest cursor. 0 in
    /// a limit means no limit.
    pub fn retention_point(&self, r: &Retention, now_ms: u64) -> u64 {
        let next = self.next_offset();
        let mut to = self.first_offset();
        if r.max_messages > 0 {
            to = to.max(next.saturating_sub(r.max_messages));
        }
        if r.max_bytes > 0 {
            to = to.max(self.messages.trim_point_for_bytes(r.max_bytes));
        }
        if r.max_age_s > 0 {
            let cutoff = now_ms.saturating_sub(r.max_age_s.saturating_mul(1000));
            let old = self.times.iter().take_while(|(_, ts)| *ts <= cutoff);
            if let Some((off, _)) = old.last() {
                to = to.max(*off);
            }
        }
        if let Some(low) = self.cursors.values().min() {
            to = to.min(*low);
        }
        to.min(next)
    }

    fn remember(&mut self, key: String, l: Landed) {
        self.keys.insert(key.clone(), l);
        self.key_order.push_back(key);
        while self.key_order.len() > self.window {
            let old = self.key_order.pop_front().expect("non-empty");
            self.keys.remove(&old);
        }
    }

    fn meta(&self) -> Meta {
        Meta {
            applied: self.applied,
            first: self.first_offset(),
            next: self.next_offset(),
            keys: self
                .key_order
                .iter()
                .map(|k| (k.clone(), self.keys[k]))
                .collect(),
            cursors: self.cursors.iter().map(|(n, o)| (n.clone(), *o)).collect(),
            times: self.times.iter().copied().collect(),
        }
    }

    fn set_meta(&mut self, m: Meta) {
        self.applied = m.applied;
        self.keys.clear();
        self.key_order.clear();
        for (k, l) in m.keys {
            self.remember(k, l);
        }
        self.cursors = m.cursors.into_iter().collect();
        self.times = m.times.into_iter().collect();
    }

    /// A local snapshot: the manifest of the current state, and what must be
    /// synced (on a blocking thread) before the manifest may be written.
    pub fn manifest(&mut self) -> std::io::Result<(Bytes, SyncHandle)> {
        let sync = self.messages.sync_handle()?;
        Ok((self.encode_manifest(), sync))
    }

    /// The sync of the last [`StateMachine::manifest`] succeeded and that
    /// manifest is durable: trimmed segments it no longer needs are removed.
    pub fn synced(&mut self) {
        self.messages.synced();
    }

    /// The manifest of the current state, with no durability implied.
    pub fn encode_manifest(&self) -> Bytes {
        snapshot::encode_manifest(&self.meta())
    }

    /// A read of `from..` (at most `limit`) to run on another thread (see
    /// [`crate::msgstore::MessageStore::detached_read`]).
    pub fn detached_read(
        &mut self,
        from: u64,
        limit: usize,
    ) -> std::io::Result<crate::msgstore::DetachedRead> {
        self.messages
            .detached_read(from.max(self.first_offset()), limit)
    }

    /// A reader of the messages below `count`, usable from another thread.
    pub fn reader(&mut self, count: u64) -> std::io::Result<Reader> {
        self.messages.reader(count)
    }

    /// The full payload of the current state (tests; nodes use [`full_payload`]
    /// off their controller thread).
    pub fn snapshot(&mut self) -> Bytes {
        self.messages.flush().expect("message store");
        let (manifest, _) = self.manifest().expect("memory store");
        let reader = self.reader(self.next_offset()).expect("memory store");
        full_payload(&manifest, &reader).expect("memory store")
    }

    /// Replace the state with a snapshot's (a manifest of ours, or a full
    /// payload). Errors on malformed data and on a store that does not hold
    /// what a manifest names.
    pub fn restore(&mut self, b: Bytes) -> Result<(), String> {
        let m = if is_manifest(&b) {
            let m = snapshot::decode_manifest(b)?;
            // A received snapshot the WAL holds but whose staged messages were not
            // moved in yet (a crash in between) is finished first.
            self.redo_install(&m)?;
            store_covers(&self.messages, &m)?;
            let store = &mut self.messages;
            store
                .truncate(m.next)
                .map_err(|e| format!("message store: {e}"))?;
            store.trim_front(m.first);
            // The manifest is durable: what it trimmed may go (else at the next).
            if let Err(e) = store.release(m.first) {
                tracing::warn!(error = %e, "removing trimmed message segments failed");
            }
            m
        } else {
            self.restore_full(b)?
        };
        self.set_meta(m);
        Ok(())
    }

    /// Replace the state with a snapshot received from a leader: only a full
    /// payload is accepted (a manifest names messages only its author holds).
    pub fn restore_received(&mut self, b: Bytes) -> Result<(), String> {
        if is_manifest(&b) {
            return Err("a snapshot from another node must carry its messages".into());
        }
        self.restore(b)
    }

    /// Back to the empty state (the log will be applied from its start).
    pub fn reset(&mut self) -> Result<(), String> {
        self.messages
            .reset_at(0)
            .map_err(|e| format!("message store: {e}"))?;
        self.set_meta(Meta::default());
        Ok(())
    }

    /// Rebuilds the store from a full payload; returns its meta.
    fn restore_full(&mut self, b: Bytes) -> Result<Meta, String> {
        let (m, msgs) = snapshot::decode_full(b)?;
        self.messages
            .reset_at(m.first)
            .map_err(|e| format!("message store: {e}"))?;
        for msg in msgs {
            self.messages.append(msg);
        }
        self.messages.hand_over();
        // Slices of the payload in the cache would keep all of it alive.
        self.messages.own_cache();
        if let Some(e) = self.messages.failure() {
            return Err(format!("message store: {e}"));
        }
        Ok(m)
    }
}

/// Does `store` hold what the manifest `b` names? `Err(why)` if not. A received
/// snapshot whose staged messages still wait in `install_dir` (a crash before
/// they were moved in) counts as held: restoring it finishes the install. The
/// error says what is missing (the node repairs itself: see `node::bootstrap`).
pub fn store_covers_manifest(
    store: &MessageStore,
    b: &Bytes,
    install_dir: &std::path::Path,
) -> Result<(), String> {
    let m = snapshot::decode_manifest(b.clone())?;
    if stream::is_staged(install_dir, &m) {
        return Ok(());
    }
    store_covers(store, &m)
}

fn store_covers(store: &MessageStore, m: &Meta) -> Result<(), String> {
    let (first, len) = (store.start(), store.len());
    if len < m.next || first > m.first {
        return Err(format!(
            "the message store holds messages {first}..{len} but the snapshot at index {} \
             needs {}..{}: the messages directory is damaged",
            m.applied, m.first, m.next
        ));
    }
    Ok(())
}

/// Retention limits (`[retention]`); 0 = no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_messages: u64,
    pub max_bytes: u64,
    pub max_age_s: u64,
}

impl Retention {
    pub fn is_unlimited(&self) -> bool {
        *self == Retention::default()
    }
}

#[cfg(test)]
mod tests;
