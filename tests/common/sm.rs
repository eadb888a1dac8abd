//! The test state machine: it remembers every applied entry, in order, so that the
//! checker can compare whole applied sequences across nodes, restarts and snapshots.
//! Its snapshot data is a real byte encoding of that sequence (the leader's driver
//! attaches it to `Message::Snapshot`; a follower rebuilds its state from it).

use bytes::Bytes;
use raftlog::core::{Entry, EntryPayload, Membership};

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

/// Applied entries 1..=len, dense, plus the membership in force.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    pub applied: Vec<Applied>,
    pub membership: Membership,
}

impl StateMachine {
    pub fn applied_index(&self) -> u64 {
        self.applied.len() as u64
    }

    /// Apply the next committed entry. Panics (a violation) on a gap or a repeat.
    pub fn apply(&mut self, e: &Entry) -> Applied {
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
        a
    }

    pub fn last_term(&self) -> u64 {
        self.applied.last().map_or(0, |a| a.term)
    }

    /// Snapshot bytes: per entry `term u64 | tag u8 | value` (value: u64 for a
    /// command, u32 length + utf8 for a membership digest).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.applied.len() * 17);
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
        Bytes::from(out)
    }

    pub fn decode(data: &[u8], membership: Membership) -> StateMachine {
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
        }
    }
}
