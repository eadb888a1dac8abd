//! The state machine: the message log itself.
//!
//! Committed `Command` entries become messages with dense 0-based offsets, in log
//! order, identical on every node. Idempotency keys are part of the replicated state:
//! a command whose key was already applied takes no offset and maps to the original
//! write. Keys are remembered for the last `idempotency_window` keyed writes
//! (deterministic eviction, so every node agrees).
//!
//! Invariants:
//! - `apply` is called with dense, increasing indexes (asserted);
//! - offsets are never reused or skipped;
//! - a snapshot restores exactly the state after applying up to its index.

use crate::core::{Entry, EntryPayload};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};

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

/// The state machine's content at one applied index (see `snapshot_source`).
pub struct SnapshotSource {
    applied: u64,
    messages: Vec<Bytes>,
    keys: Vec<(String, Landed)>,
}

impl SnapshotSource {
    /// The snapshot payload.
    pub fn encode(self) -> Bytes {
        let size: usize = self.messages.iter().map(|m| m.len() + 4).sum();
        let mut b = BytesMut::with_capacity(24 + size + self.keys.len() * 64);
        b.put_u64_le(self.applied);
        b.put_u64_le(self.messages.len() as u64);
        for m in &self.messages {
            b.put_u32_le(m.len() as u32);
            b.put_slice(m);
        }
        b.put_u64_le(self.keys.len() as u64);
        for (k, l) in &self.keys {
            b.put_u32_le(k.len() as u32);
            b.put_slice(k.as_bytes());
            b.put_u64_le(l.offset);
            b.put_u64_le(l.index);
            b.put_u64_le(l.term);
        }
        b.freeze()
    }
}

#[derive(Debug, Default)]
pub struct StateMachine {
    messages: Vec<Bytes>,
    keys: HashMap<String, Landed>,
    key_order: VecDeque<String>,
    window: usize,
    applied: u64,
}

impl StateMachine {
    pub fn new(idempotency_window: usize) -> Self {
        StateMachine {
            window: idempotency_window.max(1),
            ..Default::default()
        }
    }

    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Offset the next new message will get.
    pub fn next_offset(&self) -> u64 {
        self.messages.len() as u64
    }

    pub fn lookup_key(&self, key: &str) -> Option<Landed> {
        self.keys.get(key).copied()
    }

    /// Messages from `from`, at most `limit`.
    pub fn read(&self, from: u64, limit: usize) -> Vec<(u64, Bytes)> {
        let start = (from as usize).min(self.messages.len());
        let end = start.saturating_add(limit).min(self.messages.len());
        (start..end)
            .map(|i| (i as u64, self.messages[i].clone()))
            .collect()
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
        let offset = self.messages.len() as u64;
        self.messages.push(cmd.message);
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

    /// Serialize the whole state (the snapshot payload).
    pub fn snapshot(&self) -> Bytes {
        self.snapshot_source().encode()
    }

    /// A cheap copy of the state (shared message bytes) that can be encoded on
    /// another thread while this one goes on applying.
    pub fn snapshot_source(&self) -> SnapshotSource {
        let keys = self
            .key_order
            .iter()
            .map(|k| (k.clone(), self.keys[k]))
            .collect();
        SnapshotSource {
            applied: self.applied,
            messages: self.messages.clone(),
            keys,
        }
    }

    /// Replace the state with a snapshot's. Errors on malformed data.
    pub fn restore(&mut self, mut b: Bytes) -> Result<(), String> {
        let mut sm = StateMachine::new(self.window);
        let bad = || "malformed snapshot".to_string();
        let need = |b: &Bytes, n: usize| if b.len() < n { Err(bad()) } else { Ok(()) };
        need(&b, 16)?;
        sm.applied = b.get_u64_le();
        let n = b.get_u64_le();
        for _ in 0..n {
            need(&b, 4)?;
            let len = b.get_u32_le() as usize;
            need(&b, len)?;
            sm.messages.push(b.split_to(len));
        }
        need(&b, 8)?;
        let k = b.get_u64_le();
        for _ in 0..k {
            need(&b, 4)?;
            let len = b.get_u32_le() as usize;
            need(&b, len + 24)?;
            let key = String::from_utf8(b.split_to(len).to_vec()).map_err(|_| bad())?;
            let l = Landed {
                offset: b.get_u64_le(),
                index: b.get_u64_le(),
                term: b.get_u64_le(),
            };
            sm.remember(key, l);
        }
        *self = sm;
        Ok(())
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
        let got: Vec<_> = sm.read(0, 10).into_iter().collect();
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
        assert_eq!(other.read(0, 10), sm.read(0, 10));
        assert_eq!(other.lookup_key("a"), sm.lookup_key("a"));
        assert_eq!(other.applied_index(), 2);
        assert!(other.restore(Bytes::from_static(b"\x01\x02")).is_err());
        assert!(Command::decode(Bytes::from_static(b"\x01\xff\xff\xff\xff")).is_none());
    }
}
