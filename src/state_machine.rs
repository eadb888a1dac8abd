//! The state machine: the message log itself.
//!
//! Committed `Command` entries become messages with dense 0-based offsets, in log
//! order, identical on every node. Idempotency keys are part of the replicated state:
//! a command whose key was already applied takes no offset and maps to the original
//! write. Keys are remembered for the last `idempotency_window` keyed writes
//! (deterministic eviction, so every node agrees).
//!
//! The messages themselves live in a [`MessageStore`] (segment files on a node,
//! memory in tests). A snapshot comes in two encodings:
//! - a *manifest* (local snapshots): applied index, message count and keys. The
//!   messages stay in the store, which is synced before the manifest is written;
//!   restoring cuts the store back to the count.
//! - a *full payload* (what a leader sends): applied index, every message, keys.
//!   [`full_payload`] builds it from a manifest and a store [`Reader`].
//!
//! Invariants:
//! - `apply` is called with dense, increasing indexes (asserted);
//! - offsets are never reused or skipped;
//! - a snapshot restores exactly the state after applying up to its index;
//! - the store always holds a prefix of the one message sequence every node
//!   agrees on, so cutting it back to a count gives that count's exact state.

use crate::core::{Entry, EntryPayload};
use crate::msgstore::{MessageStore, Reader, SyncHandle};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};

/// First bytes of a manifest. A full payload starts with its applied index, which
/// would have to be about 3.5e18 to look the same.
const MANIFEST_MAGIC: &[u8; 8] = b"RLMANIF1";

/// A client write as carried inside a `Command` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub key: Option<String>,
    pub message: Bytes,
}

impl Command {
    pub fn encode(&self) -> Bytes {
        let key = self.key.as_deref().unwrap_or("");
        let mut b = BytesMut::with_capacity(5 + key.len() + self.message.len());
        b.put_u8(u8::from(self.key.is_some()));
        b.put_u32_le(key.len() as u32);
        b.put_slice(key.as_bytes());
        b.put_slice(&self.message);
        b.freeze()
    }

    /// Decode; `None` for bytes that are not a command (never panics).
    pub fn decode(mut b: Bytes) -> Option<Command> {
        if b.len() < 5 {
            return None;
        }
        let has_key = b.get_u8() == 1;
        let klen = b.get_u32_le() as usize;
        if b.len() < klen {
            return None;
        }
        let key = String::from_utf8(b.split_to(klen).to_vec()).ok()?;
        Some(Command {
            key: has_key.then_some(key),
            message: b,
        })
    }
}

/// Where a keyed write landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landed {
    pub offset: u64,
    pub index: u64,
    pub term: u64,
}

/// What applying one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A new message at this offset.
    Message { offset: u64 },
    /// The key was seen before: the original write.
    Duplicate(Landed),
    /// Not a message (no-op, membership, undecodable).
    Other,
}

fn encode_keys(b: &mut BytesMut, keys: &[(String, Landed)]) {
    b.put_u64_le(keys.len() as u64);
    for (k, l) in keys {
        b.put_u32_le(k.len() as u32);
        b.put_slice(k.as_bytes());
        b.put_u64_le(l.offset);
        b.put_u64_le(l.index);
        b.put_u64_le(l.term);
    }
}

fn malformed() -> String {
    "malformed snapshot".to_string()
}

fn need(b: &Bytes, n: usize) -> Result<(), String> {
    if b.len() < n {
        Err(malformed())
    } else {
        Ok(())
    }
}

fn decode_keys(b: &mut Bytes) -> Result<Vec<(String, Landed)>, String> {
    need(b, 8)?;
    let k = b.get_u64_le();
    let mut keys = Vec::new();
    for _ in 0..k {
        need(b, 4)?;
        let len = b.get_u32_le() as usize;
        need(b, len + 24)?;
        let key = String::from_utf8(b.split_to(len).to_vec()).map_err(|_| malformed())?;
        let l = Landed {
            offset: b.get_u64_le(),
            index: b.get_u64_le(),
            term: b.get_u64_le(),
        };
        keys.push((key, l));
    }
    Ok(keys)
}

/// A decoded manifest.
struct Manifest {
    applied: u64,
    count: u64,
    keys: Vec<(String, Landed)>,
}

fn decode_manifest(mut b: Bytes) -> Result<Manifest, String> {
    need(&b, 24)?;
    b.advance(8);
    let applied = b.get_u64_le();
    let count = b.get_u64_le();
    let keys = decode_keys(&mut b)?;
    Ok(Manifest {
        applied,
        count,
        keys,
    })
}

/// True for a manifest (a local snapshot), false for a full payload.
pub fn is_manifest(data: &[u8]) -> bool {
    data.starts_with(MANIFEST_MAGIC)
}

/// The full payload for a snapshot whose data is `data`: a full payload is
/// returned as it is; a manifest gets its messages from `reader`. Reads the whole
/// log: run it on a blocking thread.
pub fn full_payload(data: &Bytes, reader: &Reader) -> Result<Bytes, String> {
    if !is_manifest(data) {
        return Ok(data.clone());
    }
    let m = decode_manifest(data.clone())?;
    let mut msgs = Vec::with_capacity(m.count.min(1 << 20) as usize);
    let mut size = 0usize;
    while (msgs.len() as u64) < m.count {
        let want = (m.count - msgs.len() as u64).min(8192) as usize;
        let got = reader
            .read(msgs.len() as u64, want)
            .map_err(|e| format!("reading the message store: {e}"))?;
        if got.is_empty() {
            return Err(format!(
                "the message store ends at {} of {} messages",
                msgs.len(),
                m.count
            ));
        }
        for (_, msg) in got {
            size += msg.len() + 4;
            msgs.push(msg);
        }
    }
    let mut b = BytesMut::with_capacity(24 + size + m.keys.len() * 64);
    b.put_u64_le(m.applied);
    b.put_u64_le(m.count);
    for msg in &msgs {
        b.put_u32_le(msg.len() as u32);
        b.put_slice(msg);
    }
    encode_keys(&mut b, &m.keys);
    Ok(b.freeze())
}

#[derive(Debug, Default)]
pub struct StateMachine {
    messages: MessageStore,
    keys: HashMap<String, Landed>,
    key_order: VecDeque<String>,
    window: usize,
    applied: u64,
}

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

    /// Retry the message store's failed writes.
    pub fn repair(&mut self) -> std::io::Result<()> {
        self.messages.repair()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Offset the next new message will get.
    pub fn next_offset(&self) -> u64 {
        self.messages.len()
    }

    pub fn lookup_key(&self, key: &str) -> Option<Landed> {
        self.keys.get(key).copied()
    }

    /// Messages from `from`, at most `limit`.
    pub fn read(&self, from: u64, limit: usize) -> std::io::Result<Vec<(u64, Bytes)>> {
        self.messages.read(from, limit)
    }

    pub fn apply(&mut self, e: &Entry) -> Applied {
        assert_eq!(e.index, self.applied + 1, "apply out of order");
        self.applied = e.index;
        let EntryPayload::Command(data) = &e.payload else {
            return Applied::Other;
        };
        let Some(cmd) = Command::decode(data.clone()) else {
            return Applied::Other;
        };
        if let Some(k) = &cmd.key {
            if let Some(l) = self.keys.get(k) {
                return Applied::Duplicate(*l);
            }
        }
        let offset = self.messages.len();
        self.messages.append(cmd.message);
        if let Some(k) = cmd.key {
            self.remember(
                k,
                Landed {
                    offset,
                    index: e.index,
                    term: e.term,
                },
            );
        }
        Applied::Message { offset }
    }

    fn remember(&mut self, key: String, l: Landed) {
        self.keys.insert(key.clone(), l);
        self.key_order.push_back(key);
        while self.key_order.len() > self.window {
            let old = self.key_order.pop_front().expect("non-empty");
            self.keys.remove(&old);
        }
    }

    fn keys(&self) -> Vec<(String, Landed)> {
        self.key_order
            .iter()
            .map(|k| (k.clone(), self.keys[k]))
            .collect()
    }

    /// A local snapshot: the manifest of the current state, and what must be
    /// synced (on a blocking thread) before the manifest may be written.
    pub fn manifest(&mut self) -> std::io::Result<(Bytes, SyncHandle)> {
        let sync = self.messages.sync_handle()?;
        Ok((self.encode_manifest(), sync))
    }

    /// The sync of the last [`StateMachine::manifest`] succeeded.
    pub fn synced(&mut self) {
        self.messages.synced();
    }

    /// The manifest of the current state, with no durability implied.
    pub fn encode_manifest(&self) -> Bytes {
        let keys = self.keys();
        let mut b = BytesMut::with_capacity(32 + keys.len() * 64);
        b.put_slice(MANIFEST_MAGIC);
        b.put_u64_le(self.applied);
        b.put_u64_le(self.messages.len());
        encode_keys(&mut b, &keys);
        b.freeze()
    }

    /// A reader of the first `count` messages, usable from another thread.
    pub fn reader(&mut self, count: u64) -> std::io::Result<Reader> {
        self.messages.reader(count)
    }

    /// The full payload of the current state (tests; nodes use [`full_payload`]
    /// off their controller thread).
    pub fn snapshot(&mut self) -> Bytes {
        let (manifest, _) = self.manifest().expect("memory store");
        let reader = self.reader(self.next_offset()).expect("memory store");
        full_payload(&manifest, &reader).expect("memory store")
    }

    /// Replace the state with a snapshot's (a manifest of ours, or a full
    /// payload). Errors on malformed data and on a store too short for a manifest.
    pub fn restore(&mut self, b: Bytes) -> Result<(), String> {
        let (applied, keys) = if is_manifest(&b) {
            let m = decode_manifest(b)?;
            if self.messages.len() < m.count {
                return Err(format!(
                    "the message store holds {} messages but the snapshot at index {} needs {}: \
                     the messages directory is damaged; remove this node from the cluster \
                     through a membership change (DELETE /v1/cluster/members/<id> on the \
                     leader), then add it back with an empty data directory (deleting the \
                     data and rejoining under the same id could let it vote twice in a term)",
                    self.messages.len(),
                    m.applied,
                    m.count
                ));
            }
            self.messages
                .truncate(m.count)
                .map_err(|e| format!("message store: {e}"))?;
            (m.applied, m.keys)
        } else {
            self.restore_full(b)?
        };
        self.applied = applied;
        self.keys.clear();
        self.key_order.clear();
        for (k, l) in keys {
            self.remember(k, l);
        }
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
            .clear()
            .map_err(|e| format!("message store: {e}"))?;
        self.applied = 0;
        self.keys.clear();
        self.key_order.clear();
        Ok(())
    }

    /// Rebuilds the store from a full payload; returns its applied index and keys.
    fn restore_full(&mut self, mut b: Bytes) -> Result<(u64, Vec<(String, Landed)>), String> {
        need(&b, 16)?;
        let applied = b.get_u64_le();
        let n = b.get_u64_le();
        // Check the whole payload before touching the store.
        let mut probe = b.clone();
        for _ in 0..n {
            need(&probe, 4)?;
            let len = probe.get_u32_le() as usize;
            need(&probe, len)?;
            probe.advance(len);
        }
        let keys = decode_keys(&mut probe)?;
        self.messages
            .clear()
            .map_err(|e| format!("message store: {e}"))?;
        for _ in 0..n {
            let len = b.get_u32_le() as usize;
            self.messages.append(b.split_to(len));
        }
        // Slices of the payload in the cache would keep all of it alive.
        self.messages.own_cache();
        if let Some(e) = self.messages.failure() {
            return Err(format!("message store: {e}"));
        }
        Ok((applied, keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(index: u64, key: Option<&str>, msg: &str) -> Entry {
        let c = Command {
            key: key.map(String::from),
            message: Bytes::from(msg.to_string()),
        };
        Entry {
            index,
            term: 1,
            payload: EntryPayload::Command(c.encode()),
        }
    }

    #[test]
    fn offsets_are_dense_and_keys_dedupe() {
        let mut sm = StateMachine::new(10);
        assert_eq!(
            sm.apply(&cmd(1, Some("a"), "x")),
            Applied::Message { offset: 0 }
        );
        assert_eq!(
            sm.apply(&Entry {
                index: 2,
                term: 1,
                payload: EntryPayload::Noop
            }),
            Applied::Other
        );
        let dup = sm.apply(&cmd(3, Some("a"), "x"));
        assert_eq!(
            dup,
            Applied::Duplicate(Landed {
                offset: 0,
                index: 1,
                term: 1
            })
        );
        assert_eq!(sm.apply(&cmd(4, None, "y")), Applied::Message { offset: 1 });
        let got: Vec<_> = sm.read(0, 10).unwrap();
        assert_eq!(got, vec![(0, Bytes::from("x")), (1, Bytes::from("y"))]);
    }

    #[test]
    fn window_evicts_oldest_key() {
        let mut sm = StateMachine::new(1);
        sm.apply(&cmd(1, Some("a"), "x"));
        sm.apply(&cmd(2, Some("b"), "y"));
        assert!(sm.lookup_key("a").is_none());
        assert!(matches!(
            sm.apply(&cmd(3, Some("a"), "z")),
            Applied::Message { offset: 2 }
        ));
    }

    #[test]
    fn snapshot_round_trip_and_garbage() {
        let mut sm = StateMachine::new(10);
        sm.apply(&cmd(1, Some("a"), "x"));
        sm.apply(&cmd(2, None, "y"));
        let mut other = StateMachine::new(10);
        other.restore(sm.snapshot()).unwrap();
        assert_eq!(other.read(0, 10).unwrap(), sm.read(0, 10).unwrap());
        assert_eq!(other.lookup_key("a"), sm.lookup_key("a"));
        assert_eq!(other.applied_index(), 2);
        assert!(other.restore(Bytes::from_static(b"\x01\x02")).is_err());
        assert!(Command::decode(Bytes::from_static(b"\x01\xff\xff\xff\xff")).is_none());
    }

    #[test]
    fn a_manifest_cuts_the_store_back_to_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let open = || MessageStore::open(dir.path(), 1 << 20, 0).unwrap();
        let mut sm = StateMachine::with_store(10, open());
        sm.apply(&cmd(1, Some("a"), "x"));
        sm.apply(&cmd(2, None, "y"));
        let (manifest, sync) = sm.manifest().unwrap();
        sync.run().unwrap();
        let full = sm.snapshot();
        sm.apply(&cmd(3, Some("b"), "z"));
        drop(sm);
        // A restart: the store holds 3 messages, the manifest says 2.
        let mut sm = StateMachine::with_store(10, open());
        sm.restore(manifest.clone()).unwrap();
        assert_eq!(sm.applied_index(), 2);
        assert_eq!(sm.next_offset(), 2);
        assert!(sm.lookup_key("b").is_none());
        assert!(sm.lookup_key("a").is_some());
        assert_eq!(
            sm.apply(&cmd(3, Some("b"), "z")),
            Applied::Message { offset: 2 }
        );
        assert!(StateMachine::new(10)
            .restore_received(manifest.clone())
            .is_err());
        // The full payload a leader would send equals the in-memory encoding.
        let reader = sm.reader(2).unwrap();
        assert_eq!(full_payload(&manifest, &reader).unwrap(), full);
        // A store shorter than the manifest is an error, not a silent loss.
        let mut empty = StateMachine::new(10);
        let err = empty.restore(manifest).unwrap_err();
        assert!(err.contains("holds 0 messages"), "{err}");
        // A full payload rebuilds a store from scratch.
        let dir2 = tempfile::tempdir().unwrap();
        let mut store2 = MessageStore::open(dir2.path(), 1 << 20, 0).unwrap();
        store2.append(Bytes::from_static(b"stale"));
        let mut other = StateMachine::with_store(10, store2);
        other.restore(full).unwrap();
        assert_eq!(other.read(0, 10).unwrap(), sm.read(0, 2).unwrap());
        assert!(other.restore(Bytes::from_static(b"RLMANIF1\x01")).is_err());
    }
}
