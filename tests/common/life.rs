//! The checker's model of the message log (SPEC section 7): the committed log
//! replayed in order, one entry at a time, by rules written here independently of
//! `raftlog::state_machine`. For every log index it keeps what applying that
//! entry must answer and the state after it (retained range, cursors), plus every
//! message ever appended, so that each node's real state machine can be compared
//! with it after every apply, snapshot install and restart.
//!
//! Rules modelled: an append lands all its messages at consecutive offsets, or
//! (its `if_next_offset` differing from the next offset in log order) nothing; a
//! keyed command whose key is remembered changes nothing and answers the first
//! outcome, keys being remembered for the last `window` keyed outcomes; a trim
//! raises the first offset to `before` (at most the next offset), a policy trim
//! never past the lowest cursor, and an explicit trim names the cursors below
//! its point; a cursor moves back only with `force`, a new one beyond
//! `max_cursors` is refused, deleting a missing one says so; a keyed trim or
//! cursor command (a forwarded one, maybe re-sent) whose key is remembered
//! changes nothing and answers its first outcome, and its key is remembered only
//! if it changed the log.
//!
//! Invariant: `steps[i - 1]` describes log index `i`; `messages[o]` is the
//! message at offset `o` (trimmed ones included: offsets never change).

use bytes::Bytes;
use raftlog::state_machine::{Applied as Outcome, Command, CursorRefusal, Landed};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Log index `i`'s entry applied: its outcome and the state after it.
#[derive(Clone, Debug)]
pub struct Step {
    pub outcome: Outcome,
    pub first: u64,
    pub next: u64,
    pub cursors: Vec<(String, u64)>,
}

/// How often each kind of outcome happened (does the workload test anything?).
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub appended: u64,
    pub batches: u64,
    pub conditional_landed: u64,
    pub conditional_refused: u64,
    pub duplicates: u64,
    pub keyed_op_duplicates: u64,
    pub trims: u64,
    pub trims_passing_cursors: u64,
    pub cursor_sets: u64,
    pub cursor_forced_back: u64,
    pub cursor_regressions: u64,
    pub cursor_too_many: u64,
    pub cursor_deletes: u64,
}

pub struct Model {
    window: usize,
    first: u64,
    pub messages: Vec<Bytes>,
    cursors: BTreeMap<String, u64>,
    keys: HashMap<String, Landed>,
    key_order: VecDeque<String>,
    pub steps: Vec<Step>,
    pub counts: Counts,
}

impl Default for Model {
    fn default() -> Self {
        Model::new(super::sm::IDEMPOTENCY_WINDOW)
    }
}

impl Model {
    pub fn new(window: usize) -> Model {
        Model {
            window,
            first: 0,
            messages: Vec::new(),
            cursors: BTreeMap::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            steps: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Apply log index `steps.len() + 1` (of `term`), which carries `cmd`
    /// (`None`: not a lifecycle command).
    pub fn apply(&mut self, index: u64, term: u64, cmd: Option<&Command>) {
        assert_eq!(index, self.steps.len() as u64 + 1, "harness: model order");
        let outcome = match cmd {
            None => Outcome::Other,
            Some(c) => self.command(index, term, c),
        };
        self.steps.push(Step {
            outcome,
            first: self.first,
            next: self.next(),
            cursors: self.cursors.iter().map(|(n, o)| (n.clone(), *o)).collect(),
        });
    }

    fn command(&mut self, index: u64, term: u64, c: &Command) -> Outcome {
        match c {
            Command::Append(a) => self.append(index, term, a),
            Command::Trim { before, by_policy } => self.trim(*before, *by_policy),
            Command::SetCursor {
                name,
                offset,
                force,
                max_cursors,
            } => Outcome::Cursor(self.set_cursor(name, *offset, *force, *max_cursors)),
            Command::DeleteCursor { name } => {
                self.counts.cursor_deletes += 1;
                match self.cursors.remove(name) {
                    Some(_) => Outcome::Cursor(Ok(0)),
                    None => Outcome::Cursor(Err(CursorRefusal::NotFound)),
                }
            }
            Command::Keyed { key, op } => {
                if let Some(l) = self.keys.get(key) {
                    self.counts.keyed_op_duplicates += 1;
                    return Outcome::Duplicate(*l);
                }
                let outcome = self.command(index, term, op);
                let landed = match &outcome {
                    Outcome::Trimmed { first_offset, .. } => Some(*first_offset),
                    Outcome::Cursor(Ok(offset)) => Some(*offset),
                    _ => None,
                };
                if let Some(offset) = landed {
                    self.remember(key, Landed::appended(offset, index, term, 0));
                }
                outcome
            }
        }
    }

    pub fn next(&self) -> u64 {
        self.messages.len() as u64
    }

    fn append(&mut self, index: u64, term: u64, a: &raftlog::state_machine::Append) -> Outcome {
        if let Some(l) = a.key.as_ref().and_then(|k| self.keys.get(k)) {
            self.counts.duplicates += 1;
            return Outcome::Duplicate(*l);
        }
        let next = self.next();
        if a.if_next_offset.is_some_and(|n| n != next) {
            self.counts.conditional_refused += 1;
            if let Some(k) = &a.key {
                let l = Landed {
                    offset: next,
                    index,
                    term,
                    count: 0,
                    conflict: true,
                };
                self.remember(k, l);
            }
            return Outcome::Conflict { next_offset: next };
        }
        let count = a.messages.len() as u64;
        self.counts.appended += count;
        self.counts.batches += u64::from(count > 1);
        self.counts.conditional_landed += u64::from(a.if_next_offset.is_some());
        self.messages.extend(a.messages.iter().cloned());
        if let Some(k) = &a.key {
            self.remember(k, Landed::appended(next, index, term, count));
        }
        Outcome::Appended { first: next, count }
    }

    fn remember(&mut self, key: &str, l: Landed) {
        self.keys.insert(key.to_string(), l);
        self.key_order.push_back(key.to_string());
        if self.key_order.len() > self.window {
            let old = self.key_order.pop_front().expect("non-empty");
            self.keys.remove(&old);
        }
    }

    fn trim(&mut self, before: u64, by_policy: bool) -> Outcome {
        self.counts.trims += 1;
        let mut to = before.min(self.next());
        let low = self.cursors.values().min().copied();
        if by_policy {
            to = to.min(low.unwrap_or(u64::MAX));
        }
        let passed_cursors: Vec<String> = if by_policy {
            Vec::new()
        } else {
            let passed = self.cursors.iter().filter(|(_, o)| **o < to);
            passed.map(|(n, _)| n.clone()).collect()
        };
        self.counts.trims_passing_cursors += u64::from(!passed_cursors.is_empty());
        self.first = self.first.max(to);
        Outcome::Trimmed {
            first_offset: self.first,
            passed_cursors,
        }
    }

    fn set_cursor(
        &mut self,
        name: &str,
        offset: u64,
        force: bool,
        max: u64,
    ) -> Result<u64, CursorRefusal> {
        match self.cursors.get(name) {
            Some(&current) if offset < current && !force => {
                self.counts.cursor_regressions += 1;
                Err(CursorRefusal::Regression { current })
            }
            None if self.cursors.len() as u64 >= max => {
                self.counts.cursor_too_many += 1;
                Err(CursorRefusal::TooMany { max })
            }
            Some(&current) => {
                self.counts.cursor_forced_back += u64::from(offset < current);
                self.counts.cursor_sets += 1;
                self.cursors.insert(name.to_string(), offset);
                Ok(offset)
            }
            None => {
                self.counts.cursor_sets += 1;
                self.cursors.insert(name.to_string(), offset);
                Ok(offset)
            }
        }
    }
}
