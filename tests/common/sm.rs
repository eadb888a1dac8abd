//! The test state machine: it remembers every applied entry, in order, so that the
//! checker can compare whole applied sequences across nodes, restarts and snapshots.
//! Its snapshot data is a real byte encoding of that sequence (the leader's driver
//! attaches it to `Message::Snapshot`; a follower rebuilds its state from it).
//!
//! Beside it runs the node's real message-log state machine (`log`), fed the
//! lifecycle commands of the workload (appends, batches, conditional appends,
//! trims, cursors): a command entry's payload is the harness's 8-byte command id,
//! [`LIFE_MAGIC`], then the real `Command` encoding. A payload without the magic
//! (a plain harness write) reaches `log` as an empty command, which it applies as
//! a no-op. The snapshot carries `log`'s full payload too, so restarts, snapshot
//! installs and new members restore the real retained range and cursors.

use bytes::{BufMut, Bytes, BytesMut};
use raftlog::core::{Entry, EntryPayload, Membership};
use raftlog::state_machine::{Applied as Outcome, Command, StateMachine as LogSm};

/// Marks a payload that carries a real lifecycle `Command` after the command id.
pub const LIFE_MAGIC: &[u8; 4] = b"LIFE";
/// The idempotency window of every node's log state machine (small, so that the
/// workload's key reuse also sees keys evicted).
pub const IDEMPOTENCY_WINDOW: usize = 8;

/// What an entry did, in a form that is cheap to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Noop,
    /// A client command: the harness numbers commands uniquely.
    Cmd(u64),
    /// A membership entry, as "v:n1,n2 l:n4".
    Conf(String),
}

/// One applied (or committed) entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    pub kind: Kind,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Noop => write!(f, "{}@t{}:noop", self.index, self.term),
            Kind::Cmd(c) => write!(f, "{}@t{}:cmd{}", self.index, self.term, c),
            Kind::Conf(c) => write!(f, "{}@t{}:conf({})", self.index, self.term, c),
        }
    }
}

pub fn conf_digest(m: &Membership) -> String {
    let pick = |voter: bool| {
        m.members
            .iter()
            .filter(|(_, mm)| mm.voter == voter)
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("v:{} l:{}", pick(true), pick(false))
}

pub fn kind_of(e: &Entry) -> Kind {
    match &e.payload {
        EntryPayload::Noop => Kind::Noop,
        EntryPayload::Command(b) => {
            let mut a = [0u8; 8];
            let n = b.len().min(8);
            a[..n].copy_from_slice(&b[..n]);
            Kind::Cmd(u64::from_le_bytes(a))
        }
        EntryPayload::Membership(m) => Kind::Conf(conf_digest(m)),
    }
}

pub fn applied_of(e: &Entry) -> Applied {
    Applied {
        index: e.index,
        term: e.term,
        kind: kind_of(e),
    }
}

pub fn cmd_bytes(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_le_bytes())
}

/// The payload of lifecycle command `c`, numbered `id` by the harness.
pub fn life_bytes(id: u64, c: &Command) -> Bytes {
    let enc = c.encode();
    let mut b = BytesMut::with_capacity(12 + enc.len());
    b.put_u64_le(id);
    b.put_slice(LIFE_MAGIC);
    b.put_slice(&enc);
    b.freeze()
}

/// A short text of a lifecycle command, for traces.
pub fn describe(c: &Command) -> String {
    match c {
        Command::Append(a) => {
            let mut s = format!("append {} message(s)", a.messages.len());
            if let Some(n) = a.if_next_offset {
                s += &format!(" if next offset {n}");
            }
            if let Some(k) = &a.key {
                s += &format!(" key {k}");
            }
            s
        }
        Command::Trim { before, by_policy } => {
            format!(
                "trim before {before}{}",
                if *by_policy { " (policy)" } else { "" }
            )
        }
        Command::SetCursor {
            name,
            offset,
            force,
            max_cursors,
        } => format!(
            "cursor {name} to {offset}{} (max {max_cursors})",
            if *force { " force" } else { "" }
        ),
        Command::DeleteCursor { name } => format!("delete cursor {name}"),
        Command::Keyed { key, op } => format!("{} key {key}", describe(op)),
    }
}

/// The entry as the log state machine sees it: a command entry carries its real
/// command (empty when it has none); other entries are unchanged.
pub fn log_entry(e: &Entry) -> Entry {
    let payload = match &e.payload {
        EntryPayload::Command(b) if b.len() >= 12 && &b[8..12] == LIFE_MAGIC => {
            EntryPayload::Command(b.slice(12..))
        }
        EntryPayload::Command(_) => EntryPayload::Command(Bytes::new()),
        other => other.clone(),
    };
    Entry {
        index: e.index,
        term: e.term,
        payload,
    }
}

/// Applied entries 1..=len, dense, plus the membership in force, and the real
/// log state machine after the same entries.
#[derive(Debug)]
pub struct StateMachine {
    pub applied: Vec<Applied>,
    pub membership: Membership,
    pub log: LogSm,
}

impl Default for StateMachine {
    fn default() -> Self {
        StateMachine {
            applied: Vec::new(),
            membership: Membership::default(),
            log: LogSm::new(IDEMPOTENCY_WINDOW),
        }
    }
}

impl StateMachine {
    pub fn applied_index(&self) -> u64 {
        self.applied.len() as u64
    }

    /// Apply the next committed entry; also what the log state machine made of
    /// it. Panics (a violation) on a gap or a repeat.
    pub fn apply(&mut self, e: &Entry) -> (Applied, Outcome) {
        assert_eq!(
            e.index,
            self.applied_index() + 1,
            "VIOLATION apply order: entry {} applied after {}",
            e.index,
            self.applied_index()
        );
        if let EntryPayload::Membership(m) = &e.payload {
            self.membership = m.clone();
        }
        let a = applied_of(e);
        self.applied.push(a.clone());
        let outcome = self.log.apply(&log_entry(e));
        (a, outcome)
    }

    pub fn last_term(&self) -> u64 {
        self.applied.last().map_or(0, |a| a.term)
    }

    /// Snapshot bytes: `u32` length of the applied sequence, which is per entry
    /// `term u64 | tag u8 | value` (value: u64 for a command, u32 length + utf8
    /// for a membership digest), then the log state machine's full payload.
    pub fn encode(&mut self) -> Bytes {
        let mut out = vec![0u8; 4];
        for a in &self.applied {
            out.extend_from_slice(&a.term.to_le_bytes());
            match &a.kind {
                Kind::Noop => out.push(0),
                Kind::Cmd(c) => {
                    out.push(1);
                    out.extend_from_slice(&c.to_le_bytes());
                }
                Kind::Conf(s) => {
                    out.push(2);
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
        let n = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&self.log.snapshot());
        Bytes::from(out)
    }

    pub fn decode(all: &Bytes, membership: Membership) -> StateMachine {
        let n = u32::from_le_bytes(all[..4].try_into().unwrap()) as usize;
        let data = &all[4..4 + n];
        let mut log = LogSm::new(IDEMPOTENCY_WINDOW);
        log.restore(all.slice(4 + n..))
            .unwrap_or_else(|e| panic!("VIOLATION snapshot: the log state machine: {e}"));
        let mut applied = Vec::new();
        let mut p = 0;
        let u64_at = |p: usize| u64::from_le_bytes(data[p..p + 8].try_into().unwrap());
        while p < data.len() {
            let term = u64_at(p);
            let tag = data[p + 8];
            p += 9;
            let kind = match tag {
                0 => Kind::Noop,
                1 => {
                    p += 8;
                    Kind::Cmd(u64_at(p - 8))
                }
                _ => {
                    let n = u32::from_le_bytes(data[p..p + 4].try_into().unwrap()) as usize;
                    p += 4 + n;
                    Kind::Conf(String::from_utf8(data[p - n..p].to_vec()).unwrap())
                }
            };
            applied.push(Applied {
                index: applied.len() as u64 + 1,
                term,
                kind,
            });
        }
        StateMachine {
            applied,
            membership,
            log,
        }
    }
}
