//! The safety checker shared by the simulator and the scenarios. Every check panics
//! with a message starting `VIOLATION <property>` so a failing seed names what broke.
//!
//! - election safety: at most one leader per term, over the whole run;
//! - log matching: an `(index, term)` pair names one entry with one predecessor
//!   term, ever (checked on every storage append; by induction two logs holding the
//!   same `(index, term)` are identical up to it), plus a pairwise comparison of
//!   stored logs from time to time;
//! - state machine safety: every applied entry, on every node and across restarts
//!   and snapshots, agrees with one global history (applied sequences are prefixes
//!   of one another); committed entries agree with it too;
//! - leader completeness: a new leader holds every entry of that history committed
//!   in an earlier term, and every write acknowledged in an earlier term;
//! - no acknowledged write lost: a write committed on the leader that proposed it is
//!   in the history, and (checked by the simulator at the end) in every member's
//!   applied sequence;
//! - ReadIndex: a read index covers every write acknowledged before the read began;
//! - the message log (`life.rs`): on every apply, each node's real log state
//!   machine answers what the log-order model answers for that index (so no
//!   conditional write lands whose condition was false in log order, and none is
//!   refused whose condition held) and then holds the model's retained range
//!   (first and next offset), cursors and newly appended messages; after every
//!   snapshot install and restart, the model's range, cursors and every retained
//!   message. Every node is compared with the one model, so all nodes agree.

use super::life::Model;
use super::sm::{Applied, Kind};
use raftlog::core::{Entry, NodeId};
use raftlog::state_machine::{Applied as Outcome, Command, StateMachine as LogSm};
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct Proposal {
    pub cmd: u64,
    pub leader: NodeId,
    pub index: u64,
    pub term: u64,
}

#[derive(Clone, Debug)]
pub struct Acked {
    pub cmd: u64,
    pub index: u64,
    pub term: u64,
}

#[derive(Default)]
pub struct Checker {
    /// term -> the one node that led it.
    pub leaders: BTreeMap<u64, NodeId>,
    /// (index, term) -> (what the entry is, term of the entry before it).
    registry: HashMap<(u64, u64), (Kind, u64)>,
    /// The committed prefix as far as any node has shown it (index i at i - 1).
    pub history: Vec<Applied>,
    /// Per history entry: the lowest term of a node seen holding it committed. The
    /// entry was committed in that term or earlier, so every leader of a higher term
    /// must hold it (a leader of a lower term may still be elected late).
    pub commit_terms: Vec<u64>,
    /// Proposals whose fate is not known yet.
    pub pending: Vec<Proposal>,
    /// Writes committed on the leader that proposed them, in acknowledgement order.
    pub acked: Vec<Acked>,
    pub max_acked_index: u64,
    /// The lifecycle commands proposed, by harness command id.
    pub cmds: HashMap<u64, Command>,
    /// The history replayed in order through the message-log model.
    pub model: Model,
}

impl Checker {
    /// A node appended `entries` to its storage; `prev_term` is the stored term of
    /// the entry just before the first one.
    pub fn on_stored(&mut self, node: &str, entries: &[Entry], mut prev_term: u64) {
        for e in entries {
            let kind = super::sm::kind_of(e);
            match self.registry.get(&(e.index, e.term)) {
                None => {
                    self.registry
                        .insert((e.index, e.term), (kind.clone(), prev_term));
                }
                Some((k, p)) => {
                    assert!(
                        *k == kind && *p == prev_term,
                        "VIOLATION log matching: {node} stored ({}, t{}) = {:?} after t{}, \
                         but elsewhere it is {:?} after t{}",
                        e.index,
                        e.term,
                        kind,
                        prev_term,
                        k,
                        p
                    );
                }
            }
            prev_term = e.term;
        }
    }

    /// `a` is committed (what = "committed") or applied on `node`, whose current
    /// term is `term`.
    pub fn on_history(&mut self, node: &str, a: &Applied, what: &str, term: u64) {
        let len = self.history.len() as u64;
        if a.index <= len {
            let i = (a.index - 1) as usize;
            let h = &self.history[i];
            assert!(
                h == a,
                "VIOLATION state machine safety: {node} {what} {a} but {h} was committed/applied before"
            );
            self.commit_terms[i] = self.commit_terms[i].min(term);
        } else {
            assert_eq!(
                a.index,
                len + 1,
                "harness: {node} {what} {a} beyond the known history (len {len})"
            );
            self.history.push(a.clone());
            self.commit_terms.push(term);
            let cmd = match &a.kind {
                Kind::Cmd(id) => self.cmds.get(id),
                _ => None,
            };
            self.model.apply(a.index, a.term, cmd);
        }
    }

    /// `node`'s log state machine answered `got` for entry `index` and is now
    /// `log`: both as the log-order model says.
    pub fn check_log_apply(&self, node: &str, index: u64, got: &Outcome, log: &LogSm) {
        let want = &self.model.steps[(index - 1) as usize].outcome;
        if got != want {
            let what = match (want, got) {
                (Outcome::Conflict { .. }, Outcome::Appended { .. }) => {
                    "VIOLATION conditional write: it landed though its condition was false in log order"
                }
                (Outcome::Appended { .. }, Outcome::Conflict { .. }) => {
                    "VIOLATION conditional write: it was refused though its condition held in log order"
                }
                _ => "VIOLATION message log: an outcome differs from the log-order model",
            };
            panic!("{what}: {node} applied entry {index} as {got:?}, the model says {want:?}");
        }
        self.check_log_state(node, log, false);
        if let Outcome::Appended { first, count } = got {
            self.check_messages(node, log, *first, first + count);
        }
    }

    /// `node`'s log state machine holds the model's state at its applied index:
    /// retained range and cursors, and (`all`) every retained message.
    pub fn check_log_state(&self, node: &str, log: &LogSm, all: bool) {
        let i = log.applied_index();
        let (first, next, cursors) = match i {
            0 => (0, 0, Vec::new()),
            _ => {
                let s = &self.model.steps[(i - 1) as usize];
                (s.first, s.next, s.cursors.clone())
            }
        };
        let got = (log.first_offset(), log.next_offset());
        assert!(
            got == (first, next),
            "VIOLATION message log: {node} holds offsets {}..{} after entry {i}, the model {first}..{next}",
            got.0,
            got.1
        );
        let got: Vec<(String, u64)> = log.cursors().iter().map(|(n, o)| (n.clone(), *o)).collect();
        assert!(
            got == cursors,
            "VIOLATION message log: {node} has cursors {got:?} after entry {i}, the model {cursors:?}"
        );
        if all {
            self.check_messages(node, log, first, next);
        }
    }

    /// `node` holds the model's messages at offsets `from..to`.
    fn check_messages(&self, node: &str, log: &LogSm, from: u64, to: u64) {
        let got = log
            .read(from, (to - from) as usize)
            .unwrap_or_else(|e| panic!("harness: {node} memory read failed: {e}"));
        let want = &self.model.messages[from as usize..to as usize];
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .enumerate()
                .all(|(k, ((o, m), w))| *o == from + k as u64 && m == w);
        assert!(
            same,
            "VIOLATION message log: {node} holds {:?} at offsets {from}..{to}, the model {want:?}",
            got
        );
    }

    /// A whole applied sequence (after a restart or a snapshot install).
    pub fn on_state_machine(&mut self, node: &str, applied: &[Applied], term: u64) {
        for a in applied {
            self.on_history(node, a, "restored", term);
        }
    }

    /// `node` became leader of `term`.
    pub fn on_leader(&mut self, node: &str, term: u64) {
        if let Some(other) = self.leaders.get(&term) {
            assert!(
                other == node,
                "VIOLATION election safety: {node} and {other} both led term {term}"
            );
        }
        self.leaders.insert(term, node.to_string());
    }

    /// Leader completeness: `lookup(i)` is the new leader's entry `i` (`None` when
    /// missing); `snap` its snapshot index, `sm` its applied sequence.
    pub fn check_leader_log(
        &self,
        node: &str,
        term: u64,
        snap: u64,
        sm: &[Applied],
        lookup: impl Fn(u64) -> Option<Applied>,
    ) {
        let get = |i: u64| {
            if i <= snap {
                sm.get((i - 1) as usize).cloned()
            } else {
                lookup(i)
            }
        };
        let committed_before = self
            .history
            .iter()
            .zip(&self.commit_terms)
            .filter(|(_, t)| **t < term);
        for (h, _) in committed_before {
            let got = get(h.index);
            assert!(
                got.as_ref() == Some(h),
                "VIOLATION leader completeness: {node} leads t{term} without committed {h} (has {})",
                got.map_or("nothing".to_string(), |g| g.to_string())
            );
        }
        for a in self.acked.iter().filter(|a| a.term < term) {
            let got = get(a.index);
            assert!(
                got.as_ref()
                    .is_some_and(|g| g.term == a.term && g.kind == Kind::Cmd(a.cmd)),
                "VIOLATION acknowledged write lost: {node} leads t{term} without cmd{} at {}@t{}",
                a.cmd,
                a.index,
                a.term
            );
        }
    }

    pub fn ack(&mut self, p: &Proposal) {
        let h = self.history.get((p.index - 1) as usize);
        assert!(
            h.is_some_and(|h| h.term == p.term && h.kind == Kind::Cmd(p.cmd)),
            "VIOLATION acknowledged write: cmd{} at {}@t{} acknowledged by {} but history has {:?}",
            p.cmd,
            p.index,
            p.term,
            p.leader,
            h
        );
        self.acked.push(Acked {
            cmd: p.cmd,
            index: p.index,
            term: p.term,
        });
        self.max_acked_index = self.max_acked_index.max(p.index);
    }

    /// Every acknowledged write is in `applied` (a live member's final sequence).
    pub fn check_acked_applied(&self, node: &str, applied: &[Applied]) {
        for a in &self.acked {
            let got = applied.get((a.index - 1) as usize);
            assert!(
                got.is_some_and(|g| g.term == a.term && g.kind == Kind::Cmd(a.cmd)),
                "VIOLATION acknowledged write lost: {node} finally applied {:?} at {}, not cmd{}@t{}",
                got,
                a.index,
                a.cmd,
                a.term
            );
        }
    }
}
