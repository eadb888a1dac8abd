//! An in-memory [`LogStore`] for the deterministic simulator.
//!
//! Why: the simulator needs crashes that are exact and reproducible. The store keeps
//! the *durable* state (what survived the last `sync`) apart from the operations
//! made since (`pending`). [`MemStore::crash`] restarts from the durable state;
//! [`MemStore::crash_keep`] also keeps the first `n` pending operations, modelling a
//! disk that happened to persist some unsynced writes, in order.
//!
//! Invariants:
//! - `current` == `durable` with every op in `pending` applied, in order;
//! - `sync` moves `pending` into `durable`; snapshot installs sync first and are
//!   durable immediately, like [`super::DiskStore`]; one at or below the current
//!   snapshot index is ignored;
//! - a crash yields the state after a prefix of the calls: every call up to the last
//!   `sync` plus the first `n` later ones.

use super::{validate_append, LogStore, Recovered, WalError};
use crate::core::types::{Entry, HardState, Snapshot};

/// One buffered (not yet durable) call.
#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    HardState(HardState),
}

/// A full store state: hard state, snapshot and the entries after it.
#[derive(Clone, Debug, Default)]
struct State {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
}

impl State {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_index(), |e| e.index)
    }

    /// Applies an op that was validated against this very state.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::HardState(hs) => self.hard_state = hs.clone(),
            Op::Append(entries) => {
                let keep = (entries[0].index - self.snapshot_index() - 1) as usize;
                self.entries.truncate(keep);
                self.entries.extend_from_slice(entries);
            }
        }
    }

    /// The snapshot rule of the contract: keep the entries after `meta.index` only
    /// if the log holds `(meta.index, meta.term)`.
    fn install(&mut self, snap: &Snapshot) {
        let (index, term) = (snap.meta.index, snap.meta.term);
        let pos = self.entries.iter().position(|e| e.index == index);
        match pos {
            Some(p) if self.entries[p].term == term => drop(self.entries.drain(..=p)),
            _ => self.entries.clear(),
        }
        self.snapshot = Some(snap.clone());
    }

    fn to_recovered(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }

    fn from_recovered(r: &Recovered) -> State {
        State {
            hard_state: r.hard_state.clone(),
            snapshot: r.snapshot.clone(),
            entries: r.entries.clone(),
        }
    }
}

/// In-memory store with explicit durable/pending split. See the module docs.
#[derive(Debug, Default)]
pub struct MemStore {
    durable: State,
    current: State,
    pending: Vec<Op>,
    recovered: Recovered,
}

impl MemStore {
    /// An empty store (a brand-new node).
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// A store restarted from `recovered`, as if it had been read from disk.
    pub fn from_recovered(recovered: Recovered) -> MemStore {
        let state = State::from_recovered(&recovered);
        MemStore {
            durable: state.clone(),
            current: state,
            pending: Vec::new(),
            recovered,
        }
    }

    /// Number of calls (`append`, `set_hard_state`) made since the last `sync`.
    pub fn pending_ops(&self) -> usize {
        self.pending.len()
    }

    /// The store after a crash and restart: only the durable state survives.
    pub fn crash(&self) -> MemStore {
        self.crash_keep(0)
    }

    /// The store after a crash that happened to persist the first `n` pending calls
    /// (clamped to [`Self::pending_ops`]).
    pub fn crash_keep(&self, n: usize) -> MemStore {
        let mut state = self.durable.clone();
        for op in self.pending.iter().take(n) {
            state.apply(op);
        }
        MemStore::from_recovered(state.to_recovered())
    }

    fn push(&mut self, op: Op) {
        self.current.apply(&op);
        self.pending.push(op);
    }
}

impl LogStore for MemStore {
    fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    fn take_recovered(&mut self) -> Recovered {
        std::mem::take(&mut self.recovered)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        validate_append(
            entries,
            self.current.snapshot_index(),
            self.current.last_index(),
        )?;
        if !entries.is_empty() {
            self.push(Op::Append(entries.to_vec()));
        }
        Ok(())
    }

    fn set_hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.push(Op::HardState(hs.clone()));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), WalError> {
        for op in self.pending.drain(..) {
            self.durable.apply(&op);
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        if snapshot.meta.index <= self.current.snapshot_index() {
            return Ok(());
        }
        self.sync()?;
        self.current.install(snapshot);
        self.durable.install(snapshot);
        Ok(())
    }

    fn snapshot(&self) -> Option<Snapshot> {
        self.current.snapshot.clone()
    }

    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError> {
        let first = self.current.snapshot_index() + 1;
        if lo < first || lo > hi || hi > self.current.last_index() + 1 {
            return Err(WalError::Invalid(format!(
                "entries({lo}, {hi}) outside the stored log {first}..{}",
                self.current.last_index() + 1
            )));
        }
        Ok(self.current.entries[(lo - first) as usize..(hi - first) as usize].to_vec())
    }

    fn last_index(&self) -> u64 {
        self.current.last_index()
    }
}
